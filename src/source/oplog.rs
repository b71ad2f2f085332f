//! Tailing the oplog (`local.oplog.rs`) with a tailable, awaitData cursor.
//!
//! Every entry kind of the oplog is decoded (reference §4): inserts, updates in the
//! `$v: 1` and `$v: 2` formats (converted to an [`UpdateDescription`] the way the server
//! builds a change event's `updateDescription`), replacements, deletes, commands, and
//! `applyOps` unwound into its inner ops: transactions (with their `lsid`, `txnNumber`
//! and the index of each op within the transaction), batched deletes without a session,
//! nested `applyOps`, large transactions written as several `partialTxn` entries, and
//! prepared transactions, emitted only when their `commitTransaction` entry arrives and
//! never when aborted. `fromMigrate` and no-op (`n`) entries are skipped (no-ops still
//! advance the position).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
//! # let uri = sim.uri();
//! use bson::doc;
//! use futures::TryStreamExt;
//! use mongotail::source::oplog::{OplogOptions, OplogStream};
//! use mongotail::{Namespace, OpKind, StartAt};
//!
//! let client = mongodb::Client::with_uri_str(&uri).await?;
//! let orders = client.database("shop").collection::<bson::Document>("orders");
//! orders.insert_one(doc! {"_id": 1}).await?;
//!
//! let options = OplogOptions::new()
//!     .start(StartAt::Earliest)
//!     .namespace(Namespace::parse("shop.orders")?);
//! let mut ops = OplogStream::new(&client, options);
//! let create = ops.try_next().await?.expect("implicit create");
//! let insert = ops.try_next().await?.expect("insert");
//! assert_eq!((create.kind, insert.kind), (OpKind::Create, OpKind::Insert));
//! assert_eq!(ops.position(), Some(insert.timestamp)); // checkpoint this
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use futures::stream::{BoxStream, Fuse, FusedStream, Stream, StreamExt};
use mongodb::options::{CursorType, FindOptions};
use mongodb::{Client, Collection, Cursor};
use tokio::sync::Notify;

use crate::error::{DisplayChain, Error, Result};
use crate::op::{
    Namespace, Op, OpKind, Position, Source, TruncatedArray, TxnInfo, UpdateDescription,
};
use crate::source::start_at::{oplog_edge, StartAt};
use crate::source::{ns_selected, op_selected, RetryPolicy};

/// Options of the oplog source. Build with [`OplogOptions::new`] and the builder methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OplogOptions {
    /// Database of the oplog. Default `"local"`.
    pub database: String,
    /// Collection of the oplog. Default `"oplog.rs"`.
    pub collection: String,
    /// Where to start (exclusive, see [`StartAt`]). Default `None`: the
    /// [`TailOptions::start`](crate::TailOptions::start) of [`start`](crate::start), or
    /// [`StartAt::Latest`] for a stream built alone.
    pub start: Option<StartAt>,
    /// Only ops in these namespaces (a database namespace selects all its collections);
    /// the filter is pushed into the server query. Default empty: everything.
    pub namespaces: Vec<Namespace>,
    /// Put the raw update (`o`) of update entries in [`Op::data`] and [`Op::delta`], as
    /// gtm's `UpdateDataAsDelta`. Default `false`: updates carry no document until
    /// `batch_fetch` adds it.
    pub update_data_as_delta: bool,
    /// How long the server waits for new entries before answering an empty batch
    /// (getMore `maxTimeMS`). Default 1 s.
    pub max_await_time: Duration,
    /// Cursor batch size. Default `None`: the server's default.
    pub batch_size: Option<u32>,
    /// Upper bound on inner ops buffered for transactions that are not committed yet
    /// (`partialTxn` and prepared entries). Exceeding it yields
    /// [`Error::TransactionTooLarge`] and ends the stream. Default 100,000.
    pub max_pending_txn_ops: usize,
    /// Retry of transient errors. Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
}

impl Default for OplogOptions {
    fn default() -> Self {
        OplogOptions {
            database: "local".to_owned(),
            collection: "oplog.rs".to_owned(),
            start: None,
            namespaces: Vec::new(),
            update_data_as_delta: false,
            max_await_time: Duration::from_secs(1),
            batch_size: None,
            max_pending_txn_ops: 100_000,
            retry: RetryPolicy::default(),
        }
    }
}

impl OplogOptions {
    /// The defaults.
    pub fn new() -> Self {
        OplogOptions::default()
    }

    /// Sets [`OplogOptions::database`] and [`OplogOptions::collection`].
    pub fn oplog_namespace(
        mut self,
        database: impl Into<String>,
        collection: impl Into<String>,
    ) -> Self {
        self.database = database.into();
        self.collection = collection.into();
        self
    }

    /// Sets [`OplogOptions::start`].
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = Some(start);
        self
    }

    /// Starts after `ts` (shorthand for `start(StartAt::After(ts))`).
    pub fn start_after(self, ts: Timestamp) -> Self {
        self.start(StartAt::After(ts))
    }

    /// Adds a namespace to [`OplogOptions::namespaces`].
    pub fn namespace(mut self, ns: Namespace) -> Self {
        self.namespaces.push(ns);
        self
    }

    /// Replaces [`OplogOptions::namespaces`].
    pub fn namespaces(mut self, ns: impl IntoIterator<Item = Namespace>) -> Self {
        self.namespaces = ns.into_iter().collect();
        self
    }

    /// Sets [`OplogOptions::update_data_as_delta`].
    pub fn update_data_as_delta(mut self, on: bool) -> Self {
        self.update_data_as_delta = on;
        self
    }

    /// Sets [`OplogOptions::max_await_time`].
    pub fn max_await_time(mut self, d: Duration) -> Self {
        self.max_await_time = d;
        self
    }

    /// Sets [`OplogOptions::batch_size`].
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// Sets [`OplogOptions::max_pending_txn_ops`].
    pub fn max_pending_txn_ops(mut self, n: usize) -> Self {
        self.max_pending_txn_ops = n;
        self
    }

    /// Sets [`OplogOptions::retry`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// State shared between a stream and its [`OplogControl`]s. No lock is held across `.await`.
#[derive(Debug, Default)]
struct Shared {
    position: Mutex<Option<Timestamp>>,
    seek: Mutex<Option<Timestamp>>,
    /// Set with `seek` so the stream checks it per entry without taking the lock.
    seek_pending: AtomicBool,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cloneable remote control of an [`OplogStream`]: read its position, seek it.
#[derive(Debug, Clone)]
pub struct OplogControl {
    shared: Arc<Shared>,
}

impl OplogControl {
    /// The `ts` of the last entry the stream has fully delivered (including skipped
    /// no-op and filtered entries); `None` before the start point is resolved.
    pub fn position(&self) -> Option<Timestamp> {
        *lock(&self.shared.position)
    }

    /// Makes the stream continue after `ts` (gtm's `Since`): the cursor is closed and
    /// re-opened on the next poll; ops not yet delivered are discarded.
    pub fn seek(&self, ts: Timestamp) {
        *lock(&self.shared.seek) = Some(ts);
        self.shared.seek_pending.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// The oplog source: a `Stream<Item = Result<Op>>`.
///
/// Transient errors are retried from the last delivered entry (`ts > last`) as
/// [`OplogOptions::retry`] says; a lost position ends the stream with
/// [`Error::PositionLost`]. Dropping the stream closes its server cursor.
#[must_use = "streams do nothing unless polled"]
pub struct OplogStream {
    inner: Fuse<BoxStream<'static, Result<Op>>>,
    control: OplogControl,
}

impl fmt::Debug for OplogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OplogStream")
            .field("position", &self.control.position())
            .finish_non_exhaustive()
    }
}

impl OplogStream {
    /// Builds the stream; nothing is sent to the server before the first poll.
    pub fn new(client: &Client, options: OplogOptions) -> OplogStream {
        let shared = Arc::new(Shared::default());
        let coll = client
            .database(&options.database)
            .collection::<Document>(&options.collection);
        let tail = Tail {
            client: client.clone(),
            decoder: Decoder::new(
                options.namespaces.clone(),
                options.update_data_as_delta,
                options.max_pending_txn_ops,
            ),
            lookup: CollectionLookup { coll: coll.clone() },
            coll,
            options,
            cursor: None,
            started: false,
            last: None,
            out: VecDeque::new(),
            failures: 0,
            done: false,
            shared: shared.clone(),
        };
        // Boxed so that each item moves a pointer in and out of `unfold`, not the state.
        let inner = futures::stream::unfold(Box::new(tail), |mut tail| async move {
            let item = tail.next_item().await?;
            Some((item, tail))
        })
        .boxed()
        .fuse();
        OplogStream {
            inner,
            control: OplogControl { shared },
        }
    }

    /// See [`OplogControl::position`].
    pub fn position(&self) -> Option<Timestamp> {
        self.control.position()
    }

    /// A remote control for this stream (position, seek).
    pub fn control(&self) -> OplogControl {
        self.control.clone()
    }
}

impl Stream for OplogStream {
    type Item = Result<Op>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl FusedStream for OplogStream {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

/// Looks up an oplog entry by `ts` (to walk a transaction's `prevOpTime` chain).
pub(crate) trait Lookup: Sync {
    fn entry_at(&self, ts: Timestamp) -> impl Future<Output = Result<Option<Document>>> + Send;
}

struct CollectionLookup {
    coll: Collection<Document>,
}

impl Lookup for CollectionLookup {
    async fn entry_at(&self, ts: Timestamp) -> Result<Option<Document>> {
        Ok(self.coll.find_one(doc! {"ts": ts}).await?)
    }
}

/// The owned state of a running oplog tail.
struct Tail {
    client: Client,
    coll: Collection<Document>,
    lookup: CollectionLookup,
    options: OplogOptions,
    decoder: Decoder,
    /// Read raw: [`entry_doc`] decodes only what the decoder reads.
    cursor: Option<Cursor<RawDocumentBuf>>,
    started: bool,
    /// `ts` of the last entry processed: the next query asks for `ts > last`.
    last: Option<Timestamp>,
    out: VecDeque<Op>,
    failures: u32,
    done: bool,
    shared: Arc<Shared>,
}

/// What to do after an error.
enum Recovery {
    Retry,
    Fail(Error),
}

impl Tail {
    async fn next_item(&mut self) -> Option<Result<Op>> {
        loop {
            if self.done {
                return None;
            }
            let seek = if self.shared.seek_pending.swap(false, Ordering::AcqRel) {
                lock(&self.shared.seek).take()
            } else {
                None
            };
            if let Some(ts) = seek {
                self.cursor = None;
                self.out.clear();
                self.decoder.clear();
                self.started = true;
                self.last = Some(ts);
                self.set_position(ts);
                continue;
            }
            if let Some(op) = self.out.pop_front() {
                if self.out.is_empty() {
                    self.set_position(op.timestamp);
                }
                return Some(Ok(op));
            }
            if self.cursor.is_none() {
                match self.open().await {
                    Ok(cursor) => self.cursor = Some(cursor),
                    Err(e) => match self.recover(e) {
                        Recovery::Retry => {
                            self.backoff().await;
                            continue;
                        }
                        Recovery::Fail(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    },
                }
            }
            let Some(cursor) = self.cursor.as_mut() else {
                continue;
            };
            // The cursor is polled first, so the `Notify` only registers a waiter when no
            // entry is ready; a seek made meanwhile is seen through `seek_pending` above
            // (and its stored `notify_one` permit wakes the next wait at once).
            let next = tokio::select! {
                biased;
                next = cursor.next() => next,
                _ = self.shared.wake.notified() => continue,
            };
            match next {
                Some(Ok(raw)) => {
                    self.failures = 0;
                    let entry = match entry_doc(raw) {
                        Ok(entry) => entry,
                        Err(e) => {
                            return Some(Err(Error::Malformed {
                                what: "oplog entry".into(),
                                message: e.to_string(),
                            }))
                        }
                    };
                    let ts = match entry.get_timestamp("ts") {
                        Ok(ts) => ts,
                        Err(_) => {
                            return Some(Err(Error::Malformed {
                                what: "oplog entry".into(),
                                message: "missing `ts`".into(),
                            }))
                        }
                    };
                    let before = self.out.len();
                    let decoded = self
                        .decoder
                        .process_into(entry, &self.lookup, &mut self.out)
                        .await;
                    self.last = Some(ts);
                    match decoded {
                        Ok(()) => {
                            if self.out.len() == before {
                                self.set_position(ts);
                            }
                        }
                        Err(e @ Error::Malformed { .. }) => {
                            self.set_position(ts);
                            return Some(Err(e));
                        }
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                Some(Err(e)) => {
                    self.cursor = None;
                    match self.recover(Error::Driver(e)) {
                        Recovery::Retry => self.backoff().await,
                        Recovery::Fail(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                None => {
                    // The server closed the tailable cursor (e.g. it returned nothing at
                    // open): re-query from the last entry after a short pause.
                    self.cursor = None;
                    tokio::time::sleep(self.options.max_await_time.min(Duration::from_millis(200)))
                        .await;
                }
            }
        }
    }

    fn set_position(&self, ts: Timestamp) {
        *lock(&self.shared.position) = Some(ts);
    }

    fn recover(&mut self, e: Error) -> Recovery {
        let code = e.code();
        if let (Error::Driver(driver), Some(136)) = (&e, code) {
            return Recovery::Fail(Error::PositionLost {
                position: self.position(),
                code: 136,
                message: driver.to_string(),
            });
        }
        if e.is_resumable() && self.failures < self.options.retry.max_retries {
            self.failures += 1;
            tracing::warn!(error = %DisplayChain(&e), attempt = self.failures, "oplog tail: retrying after transient error");
            return Recovery::Retry;
        }
        Recovery::Fail(e)
    }

    fn position(&self) -> Position {
        match self.last {
            Some(ts) => Position::Oplog(ts),
            None => Position::Oplog(Timestamp {
                time: 0,
                increment: 0,
            }),
        }
    }

    fn backoff(&self) -> tokio::time::Sleep {
        tokio::time::sleep(self.options.retry.backoff(self.failures))
    }

    async fn open(&mut self) -> Result<Cursor<RawDocumentBuf>> {
        if !self.started {
            let start = match self.options.start.clone().unwrap_or_default() {
                StartAt::Latest => Some(oplog_edge(&self.coll, -1).await?.ok_or_else(|| {
                    Error::NotReplicaSet(format!(
                        "{}.{} is empty or missing",
                        self.options.database, self.options.collection
                    ))
                })?),
                StartAt::Earliest => None,
                StartAt::After(ts) => Some(ts),
                StartAt::Func(f) => Some(f(self.client.clone()).await?),
            };
            self.started = true;
            self.last = start;
            if let Some(ts) = start {
                self.set_position(ts);
            }
        }
        let mut opts = FindOptions::builder()
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(self.options.max_await_time)
            .build();
        opts.batch_size = self.options.batch_size;
        let filter = server_filter(self.last, &self.options.namespaces);
        let cursor = self
            .coll
            .clone_with_type::<RawDocumentBuf>()
            .find(filter)
            .with_options(opts)
            .await?;
        if let Some(last) = self.last {
            // Capped collections lose their oldest entries first: if the oldest entry is
            // newer than `last`, something after `last` may be gone (reference §3.3).
            if let Some(oldest) = oplog_edge(&self.coll, 1).await? {
                if oldest > last {
                    return Err(Error::PositionLost {
                        position: Position::Oplog(last),
                        code: 0,
                        message: format!(
                            "the oldest oplog entry {oldest} is newer than the resume point {last}"
                        ),
                    });
                }
            }
        }
        Ok(cursor)
    }
}

/// The query for `ts > after` restricted to `namespaces` (reference §3.3): CRUD entries of
/// the selected collections, commands of their databases (filtered client-side), every
/// `admin.$cmd` entry (transactions: `applyOps`, `commitTransaction`, `abortTransaction`;
/// their inner ops are filtered client-side) and no-ops (to advance the position).
pub(crate) fn server_filter(after: Option<Timestamp>, namespaces: &[Namespace]) -> Document {
    // `ts` stays a top-level predicate so the server can seek the oplog to it.
    let mut filter = Document::new();
    if let Some(ts) = after {
        filter.insert("ts", doc! {"$gt": ts});
    }
    if !namespaces.is_empty() {
        let mut exact: Vec<String> = vec!["admin.$cmd".to_owned()];
        let mut or: Vec<Bson> = Vec::new();
        for ns in namespaces {
            let cmd = format!("{}.$cmd", ns.db());
            if !exact.contains(&cmd) {
                exact.push(cmd);
            }
            if ns.is_database() {
                let pattern = format!("^{}\\.", regex_escape(ns.db()));
                or.push(doc! {"ns": {"$regex": pattern}}.into());
            } else {
                exact.push(ns.to_string());
            }
        }
        or.insert(0, doc! {"ns": {"$in": exact}}.into());
        or.push(doc! {"op": "n"}.into());
        filter.insert("$or", or);
    }
    filter
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if !c.is_alphanumeric() && c != '_' && c != '-' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Transaction key: the session id bytes and the transaction number.
type TxnKey = (Vec<u8>, i64);

/// Entries of a transaction that is not committed yet, by `ts`.
#[derive(Debug, Default)]
struct PendingTxn {
    entries: BTreeMap<Timestamp, Document>,
    ops: usize,
}

/// Turns oplog entries into ops; keeps the entries of uncommitted transactions.
#[derive(Debug)]
pub(crate) struct Decoder {
    namespaces: Vec<Namespace>,
    as_delta: bool,
    max_pending: usize,
    pending: HashMap<TxnKey, PendingTxn>,
    pending_ops: usize,
}

/// Context an op inherits from its (outer) entry.
struct Ctx {
    ts: Timestamp,
    wall: Option<bson::DateTime>,
    lsid: Option<Document>,
    txn_number: Option<i64>,
    in_txn: bool,
}

fn malformed(ts: Timestamp, message: impl Into<String>) -> Error {
    Error::Malformed {
        what: format!("oplog entry {ts}"),
        message: message.into(),
    }
}

fn null_ts(ts: Timestamp) -> bool {
    ts.time == 0 && ts.increment == 0
}

fn prev_op_time(entry: &Document) -> Option<Timestamp> {
    let ts = entry
        .get_document("prevOpTime")
        .ok()?
        .get_timestamp("ts")
        .ok()?;
    (!null_ts(ts)).then_some(ts)
}

fn txn_key(entry: &Document) -> Option<TxnKey> {
    let lsid = entry.get_document("lsid").ok()?;
    let id = lsid.get("id").cloned().unwrap_or(Bson::Null);
    let txn = entry.get_i64("txnNumber").ok()?;
    let bytes = bson::to_vec(&doc! {"id": id}).ok()?;
    Some((bytes, txn))
}

fn as_u32(v: &Bson) -> Option<u32> {
    match v {
        Bson::Int32(n) => u32::try_from(*n).ok(),
        Bson::Int64(n) => u32::try_from(*n).ok(),
        Bson::Double(f) if *f >= 0.0 && f.fract() == 0.0 && *f <= f64::from(u32::MAX) => {
            Some(*f as u32)
        }
        _ => None,
    }
}

fn apply_ops_len(entry: &Document) -> usize {
    entry
        .get_document("o")
        .and_then(|o| o.get_array("applyOps"))
        .map_or(0, |a| a.len())
}

impl Decoder {
    pub(crate) fn new(namespaces: Vec<Namespace>, as_delta: bool, max_pending: usize) -> Self {
        Decoder {
            namespaces,
            as_delta,
            max_pending,
            pending: HashMap::new(),
            pending_ops: 0,
        }
    }

    /// Forgets buffered transaction entries (after a seek).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.pending_ops = 0;
    }

    /// Decodes one oplog entry into the ops it makes visible now.
    #[cfg(test)]
    pub(crate) async fn process<L: Lookup>(
        &mut self,
        entry: Document,
        lookup: &L,
    ) -> Result<Vec<Op>> {
        let mut out = VecDeque::new();
        self.process_into(entry, lookup, &mut out).await?;
        Ok(out.into())
    }

    /// Decodes one oplog entry and appends the ops it makes visible now to `out`;
    /// on error nothing is appended.
    pub(crate) async fn process_into<L: Lookup>(
        &mut self,
        entry: Document,
        lookup: &L,
        out: &mut VecDeque<Op>,
    ) -> Result<()> {
        let ts = entry.get_timestamp("ts").map_err(|_| {
            malformed(
                Timestamp {
                    time: 0,
                    increment: 0,
                },
                "missing `ts`",
            )
        })?;
        if entry.get_bool("fromMigrate").unwrap_or(false) {
            return Ok(());
        }
        let op = entry
            .get_str("op")
            .map_err(|_| malformed(ts, "missing `op`"))?;
        let o = entry
            .get_document("o")
            .map_err(|_| malformed(ts, "missing `o`"))?;
        if op == "c" {
            if o.contains_key("applyOps") {
                let partial = o.get_bool("partialTxn").unwrap_or(false);
                let prepare = o.get_bool("prepare").unwrap_or(false);
                if partial || prepare {
                    self.buffer(ts, entry)?;
                    return Ok(());
                }
                let ctx = txn_ctx(&entry, ts);
                let chain = if prev_op_time(&entry).is_some() {
                    self.collect_chain(entry, ts, lookup).await?
                } else {
                    vec![entry]
                };
                out.extend(self.emit_txn(chain, &ctx)?);
                return Ok(());
            }
            if o.contains_key("commitTransaction") {
                let ctx = txn_ctx(&entry, ts);
                let chain = self.collect_chain(entry, ts, lookup).await?;
                out.extend(self.emit_txn(chain, &ctx)?);
                return Ok(());
            }
            if o.contains_key("abortTransaction") {
                if let Some(key) = txn_key(&entry) {
                    if let Some(p) = self.pending.remove(&key) {
                        self.pending_ops -= p.ops;
                    }
                }
                return Ok(());
            }
        }
        let ctx = Ctx {
            ts,
            wall: entry.get_datetime("wall").ok().copied(),
            lsid: None,
            txn_number: None,
            in_txn: false,
        };
        if self.namespaces.is_empty() {
            // Everything is selected: no namespace check, the namespace is built once.
            out.extend(self.decode_leaf(entry, &ctx, 0)?);
            return Ok(());
        }
        // Skip filtered-out CRUD entries before building anything.
        if matches!(op, "i" | "u" | "d")
            && !ns_selected(
                &self.namespaces,
                &Namespace::from_server_ns(entry.get_str("ns").unwrap_or("")),
            )
        {
            return Ok(());
        }
        out.extend(
            self.decode_leaf(entry, &ctx, 0)?
                .filter(|op| op_selected(&self.namespaces, op)),
        );
        Ok(())
    }

    fn buffer(&mut self, ts: Timestamp, entry: Document) -> Result<()> {
        let key = txn_key(&entry)
            .ok_or_else(|| malformed(ts, "partialTxn/prepare applyOps without lsid/txnNumber"))?;
        let n = apply_ops_len(&entry);
        if self.pending_ops + n > self.max_pending {
            return Err(Error::TransactionTooLarge {
                limit: self.max_pending,
            });
        }
        let p = self.pending.entry(key).or_default();
        if p.entries.insert(ts, entry).is_none() {
            p.ops += n;
            self.pending_ops += n;
        }
        Ok(())
    }

    /// The `applyOps` entries of the transaction `entry` commits, oldest first: the entry
    /// itself (if it is an `applyOps`) and every entry its `prevOpTime` chain reaches,
    /// from the buffer or, when the stream started in the middle of the transaction, from
    /// the oplog.
    async fn collect_chain<L: Lookup>(
        &mut self,
        entry: Document,
        ts: Timestamp,
        lookup: &L,
    ) -> Result<Vec<Document>> {
        let key = txn_key(&entry);
        let mut pending = match &key {
            Some(k) => self.pending.remove(k).unwrap_or_default(),
            None => PendingTxn::default(),
        };
        self.pending_ops -= pending.ops;
        let mut chain = Vec::new();
        let mut ops = 0usize;
        let mut prev = prev_op_time(&entry);
        if entry
            .get_document("o")
            .is_ok_and(|o| o.contains_key("applyOps"))
        {
            ops += apply_ops_len(&entry);
            chain.push(entry);
        }
        while let Some(p) = prev {
            let e = match pending.entries.remove(&p) {
                Some(e) => e,
                None => lookup
                    .entry_at(p)
                    .await?
                    .ok_or_else(|| Error::PositionLost {
                        position: Position::Oplog(ts),
                        code: 0,
                        message: format!(
                        "entry {p} of the transaction committed at {ts} is no longer in the oplog"
                    ),
                    })?,
            };
            ops += apply_ops_len(&e);
            if ops > self.max_pending {
                return Err(Error::TransactionTooLarge {
                    limit: self.max_pending,
                });
            }
            prev = prev_op_time(&e);
            chain.push(e);
        }
        chain.reverse();
        Ok(chain)
    }

    /// The ops of the committed transaction made of `chain`, all at the commit time.
    fn emit_txn(&self, chain: Vec<Document>, ctx: &Ctx) -> Result<Vec<Op>> {
        let mut out = Vec::new();
        let mut index = 0u32;
        for mut entry in chain {
            let o = match entry.remove("o") {
                Some(Bson::Document(o)) => o,
                _ => return Err(malformed(ctx.ts, "applyOps entry without `o`")),
            };
            self.unwind(o, ctx, &mut index, &mut out, 0)?;
        }
        Ok(out)
    }

    fn unwind(
        &self,
        mut o: Document,
        ctx: &Ctx,
        index: &mut u32,
        out: &mut Vec<Op>,
        depth: usize,
    ) -> Result<()> {
        if depth > 16 {
            return Err(malformed(ctx.ts, "applyOps nested too deeply"));
        }
        let Some(Bson::Array(inner)) = o.remove("applyOps") else {
            return Err(malformed(ctx.ts, "`applyOps` is not an array"));
        };
        for op in inner {
            let Bson::Document(mut op) = op else {
                return Err(malformed(ctx.ts, "applyOps element is not a document"));
            };
            let nested = op.get_str("op") == Ok("c")
                && op
                    .get_document("o")
                    .is_ok_and(|o| o.contains_key("applyOps"));
            if nested {
                let Some(Bson::Document(o)) = op.remove("o") else {
                    return Err(malformed(ctx.ts, "nested applyOps without `o`"));
                };
                self.unwind(o, ctx, index, out, depth + 1)?;
                continue;
            }
            let this = *index;
            *index += 1;
            if op.get_bool("fromMigrate").unwrap_or(false) {
                continue;
            }
            if let Some(op) = self.decode_leaf(op, ctx, this)? {
                if op_selected(&self.namespaces, &op) {
                    out.push(op);
                }
            }
        }
        Ok(())
    }

    /// Decodes a CRUD or command entry (top level or inside `applyOps`).
    fn decode_leaf(&self, mut entry: Document, ctx: &Ctx, index: u32) -> Result<Option<Op>> {
        let ts = ctx.ts;
        let namespace = Namespace::from_server_ns(entry.get_str("ns").unwrap_or(""));
        let o = match entry.remove("o") {
            Some(Bson::Document(o)) => o,
            _ => return Err(malformed(ts, "missing `o`")),
        };
        let mut out = match entry.get_str("op") {
            Err(_) => return Err(malformed(ts, "missing `op`")),
            Ok("n") => return Ok(None),
            Ok("i") => {
                let id = o.get("_id").cloned();
                let mut op = Op::new(OpKind::Insert, namespace, id);
                if let Some(Bson::Document(key)) = entry.remove("o2") {
                    op.document_key = Some(key);
                }
                op.with_data(o)
            }
            Ok("u") => {
                let Some(Bson::Document(o2)) = entry.remove("o2") else {
                    return Err(malformed(ts, "update without `o2`"));
                };
                let id = o2.get("_id").cloned();
                let replacement = !o.contains_key("$v") && !o.keys().any(|k| k.starts_with('$'));
                if replacement {
                    Op::new(OpKind::Replace, namespace, id)
                        .with_document_key(o2)
                        .with_data(o)
                } else {
                    let update = update_description(&o).map_err(|m| malformed(ts, m))?;
                    let mut op = Op::new(OpKind::Update, namespace, id)
                        .with_document_key(o2)
                        .with_update(update);
                    if self.as_delta {
                        op.delta = Some(o.clone());
                        op.data = Some(o);
                    }
                    op
                }
            }
            Ok("d") => {
                let id = o.get("_id").cloned();
                Op::new(OpKind::Delete, namespace, id).with_document_key(o)
            }
            Ok("c") => decode_command(namespace.db(), o),
            Ok(other) => Op::new(OpKind::Other(other.to_owned()), namespace, None).with_data(o),
        };
        out.timestamp = ts;
        out.wall_time = ctx.wall;
        out.source = Source::Oplog;
        out.position = Position::Oplog(ts);
        if ctx.in_txn {
            out.txn = Some(TxnInfo::new(ctx.lsid.clone(), ctx.txn_number, index));
        }
        Ok(Some(out))
    }
}

/// The fields of a non-command entry that [`Decoder::process_into`] reads (`decode_leaf`
/// included); command entries (transactions, DDL) are decoded whole.
const CRUD_FIELDS: [&str; 7] = ["ts", "op", "ns", "o", "o2", "wall", "fromMigrate"];

/// Decodes an oplog entry read raw into the `Document` the decoder needs: a non-command
/// entry keeps only [`CRUD_FIELDS`], so `ui`, `v`, `t`, … are never decoded.
fn entry_doc(raw: RawDocumentBuf) -> std::result::Result<Document, bson::raw::Error> {
    if !matches!(raw.get_str("op"), Ok(op) if op != "c") {
        return super::raw::document(&raw);
    }
    let mut entry = Document::new();
    for field in raw.iter() {
        let (key, value) = field?;
        if CRUD_FIELDS.contains(&key) {
            entry.insert(key, super::raw::bson(value)?);
        }
    }
    Ok(entry)
}

/// Session fields of the entry that commits a transaction.
fn txn_ctx(commit: &Document, ts: Timestamp) -> Ctx {
    Ctx {
        ts,
        wall: commit.get_datetime("wall").ok().copied(),
        lsid: commit.get_document("lsid").ok().cloned(),
        txn_number: commit.get_i64("txnNumber").ok(),
        in_txn: true,
    }
}

/// A command entry (`o` of an `op: "c"` entry on `<db>.$cmd`, reference §4.8).
fn decode_command(db: &str, o: Document) -> Op {
    let Some((name, value)) = o.iter().next() else {
        return Op::new(
            OpKind::Other("c".into()),
            Namespace::from_server(db, ""),
            None,
        );
    };
    let coll_ns = |v: &Bson| match v {
        Bson::String(c) => Namespace::from_server(db, c),
        _ => Namespace::from_server(db, ""),
    };
    let op = match name.as_str() {
        "create" => Op::new(OpKind::Create, coll_ns(value), None),
        "drop" => Op::new(OpKind::DropCollection, coll_ns(value), None),
        "dropDatabase" => Op::new(OpKind::DropDatabase, Namespace::from_server(db, ""), None),
        "renameCollection" => {
            let from = value.as_str().unwrap_or_default();
            let to = o.get_str("to").unwrap_or_default();
            Op::new(
                OpKind::Rename {
                    to: Namespace::from_server_ns(to),
                },
                Namespace::from_server_ns(from),
                None,
            )
        }
        other => Op::new(OpKind::Command(other.to_owned()), coll_ns(value), None),
    };
    op.with_data(o)
}

/// The [`UpdateDescription`] of an update `o` (reference §4.4, §4.5): `$v: 2` diffs as
/// the server's change-stream diff parser renders them, `$v: 1` (and older, unversioned)
/// modifier documents from `$set`/`$unset`.
pub(crate) fn update_description(o: &Document) -> std::result::Result<UpdateDescription, String> {
    let version = o.get("$v").and_then(as_u32);
    let mut out = UpdateDescription::default();
    if version == Some(2) {
        let diff = o
            .get_document("diff")
            .map_err(|_| "`$v: 2` update without `diff`".to_owned())?;
        parse_diff(diff, "", &mut out)?;
    } else if version.is_none() || version == Some(1) {
        if let Ok(set) = o.get_document("$set") {
            out.updated_fields = set.clone();
        }
        if let Ok(unset) = o.get_document("$unset") {
            out.removed_fields = unset.keys().cloned().collect();
        }
    } else {
        return Err(format!("unsupported update version {:?}", o.get("$v")));
    }
    Ok(out)
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn sub_diff<'a>(v: &'a Bson, key: &str) -> std::result::Result<&'a Document, String> {
    v.as_document()
        .ok_or_else(|| format!("diff entry `{key}` is not a document"))
}

/// An object diff: `d`, `u`, `i`, `b`, `s<field>` (reference §4.5).
fn parse_diff(
    diff: &Document,
    prefix: &str,
    out: &mut UpdateDescription,
) -> std::result::Result<(), String> {
    for (k, v) in diff {
        match k.as_str() {
            "d" => {
                for (field, _) in sub_diff(v, k)? {
                    out.removed_fields.push(join(prefix, field));
                }
            }
            // Binary deltas (`b`) are reported as updated fields holding the delta.
            "u" | "i" | "b" => {
                for (field, value) in sub_diff(v, k)? {
                    out.updated_fields
                        .insert(join(prefix, field), value.clone());
                }
            }
            _ => match k.strip_prefix('s') {
                Some(field) if !field.is_empty() => {
                    let path = join(prefix, field);
                    parse_sub(sub_diff(v, k)?, &path, out)?;
                }
                _ => return Err(format!("unknown diff entry `{k}`")),
            },
        }
    }
    Ok(())
}

fn parse_sub(
    sub: &Document,
    path: &str,
    out: &mut UpdateDescription,
) -> std::result::Result<(), String> {
    if sub.get_bool("a") == Ok(true) {
        parse_array_diff(sub, path, out)
    } else {
        parse_diff(sub, path, out)
    }
}

/// An array diff: `a: true`, `l`, `u<idx>`, `s<idx>` (reference §4.5).
fn parse_array_diff(
    diff: &Document,
    path: &str,
    out: &mut UpdateDescription,
) -> std::result::Result<(), String> {
    for (k, v) in diff {
        if k == "a" {
            continue;
        }
        if k == "l" {
            let n = as_u32(v).ok_or_else(|| format!("array length `{v}` at {path}"))?;
            out.truncated_arrays.push(TruncatedArray::new(path, n));
            continue;
        }
        let (kind, idx) = k.split_at(1.min(k.len()));
        if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("unknown array diff entry `{k}` at {path}"));
        }
        let elem = join(path, idx);
        match kind {
            "u" => {
                out.updated_fields.insert(elem, v.clone());
            }
            "s" => parse_sub(sub_diff(v, k)?, &elem, out)?,
            _ => return Err(format!("unknown array diff entry `{k}` at {path}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{spec::BinarySubtype, Binary};

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 1_700_000_000,
            increment: i,
        }
    }

    fn ud(o: Document) -> UpdateDescription {
        update_description(&o).unwrap()
    }

    /// A lookup over a fixed set of entries (the rest of the oplog).
    struct Entries(Vec<Document>);

    impl Lookup for Entries {
        async fn entry_at(&self, t: Timestamp) -> Result<Option<Document>> {
            Ok(self
                .0
                .iter()
                .find(|e| e.get_timestamp("ts").ok() == Some(t))
                .cloned())
        }
    }

    fn decode_all(entries: &[Document]) -> Vec<Op> {
        decode_with(Decoder::new(vec![], false, 1000), entries, &[])
    }

    fn decode_with(mut d: Decoder, entries: &[Document], rest: &[Document]) -> Vec<Op> {
        let lookup = Entries(rest.to_vec());
        let mut out = Vec::new();
        for e in entries {
            out.extend(futures::executor::block_on(d.process(e.clone(), &lookup)).unwrap());
        }
        out
    }

    fn lsid() -> Document {
        doc! {
            "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
            "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xe3; 32] },
        }
    }

    #[test]
    fn v1_update() {
        // reference §4.4
        let u = ud(doc! {"$v": 1, "$set": {"a": 2, "sub.b": "x"}, "$unset": {"c": true}});
        assert_eq!(u.updated_fields, doc! {"a": 2, "sub.b": "x"});
        assert_eq!(u.removed_fields, vec!["c".to_owned()]);
        assert!(u.truncated_arrays.is_empty());
        // pre-4.x entries have no `$v`
        let u = ud(doc! {"$set": {"a": 1}});
        assert_eq!(u.updated_fields, doc! {"a": 1});
    }

    #[test]
    fn v2_top_level_d_u_i() {
        // reference §4.5 first example
        let u = ud(doc! {"$v": 2, "diff": {"d": {"c": false}, "u": {"a": 2}, "i": {"newf": 1}}});
        assert_eq!(u.updated_fields, doc! {"a": 2, "newf": 1});
        assert_eq!(u.removed_fields, vec!["c".to_owned()]);
        assert!(u.truncated_arrays.is_empty());
    }

    #[test]
    fn v2_nested_object() {
        let u = ud(
            doc! {"$v": 2, "diff": {"ssub": {"u": {"b": "x"}, "d": {"gone": false}, "sdeep": {"i": {"z": 1}}}}},
        );
        assert_eq!(u.updated_fields, doc! {"sub.b": "x", "sub.deep.z": 1});
        assert_eq!(u.removed_fields, vec!["sub.gone".to_owned()]);
    }

    #[test]
    fn v2_array_update_element() {
        let u = ud(doc! {"$v": 2, "diff": {"sarr": {"a": true, "u1": 5}}});
        assert_eq!(u.updated_fields, doc! {"arr.1": 5});
    }

    #[test]
    fn v2_array_truncate() {
        let u = ud(doc! {"$v": 2, "diff": {"sarr": {"a": true, "l": 2}}});
        assert_eq!(u.truncated_arrays, vec![TruncatedArray::new("arr", 2)]);
        assert!(u.updated_fields.is_empty());
    }

    #[test]
    fn v2_array_resize_and_append_and_subdiff() {
        let u = ud(doc! {"$v": 2, "diff": {"sarr": {
            "a": true, "l": 4, "u2": {"x": 1}, "u3": "new",
            "s0": {"u": {"name": "n"}},
            "s1": {"a": true, "u0": 9, "l": 1}
        }}});
        assert_eq!(
            u.updated_fields,
            doc! {"arr.2": {"x": 1}, "arr.3": "new", "arr.0.name": "n", "arr.1.0": 9}
        );
        assert_eq!(
            u.truncated_arrays,
            vec![
                TruncatedArray::new("arr", 4),
                TruncatedArray::new("arr.1", 1)
            ]
        );
    }

    #[test]
    fn v2_binary_delta_and_errors() {
        let u = ud(
            doc! {"$v": 2, "diff": {"b": {"bin": {"o": 0, "d": Binary { subtype: BinarySubtype::Generic, bytes: vec![1] }}}}},
        );
        assert!(u.updated_fields.contains_key("bin"));
        assert!(update_description(&doc! {"$v": 2}).is_err());
        assert!(update_description(&doc! {"$v": 2, "diff": {"x": {}}}).is_err());
        assert!(
            update_description(&doc! {"$v": 2, "diff": {"sarr": {"a": true, "zz": 1}}}).is_err()
        );
        assert!(update_description(&doc! {"$v": 3, "diff": {}}).is_err());
    }

    #[test]
    fn crud_entries() {
        let entries = [
            // 6.0+ insert with o2 (reference §4.3)
            doc! {"op": "i", "ns": "test.coll", "o": {"_id": 1, "a": 1}, "o2": {"_id": 1}, "ts": ts(1), "t": 1i64, "v": 2i64, "wall": bson::DateTime::from_millis(5)},
            doc! {"op": "u", "ns": "test.coll", "o": {"$v": 2, "diff": {"u": {"a": 2}}}, "o2": {"_id": 1}, "ts": ts(2)},
            doc! {"op": "u", "ns": "test.coll", "o": {"_id": 1, "x": "new"}, "o2": {"_id": 1}, "ts": ts(3)},
            doc! {"op": "d", "ns": "test.coll", "o": {"_id": 1}, "ts": ts(4)},
            doc! {"op": "n", "ns": "", "o": {"msg": "periodic noop"}, "ts": ts(5)},
            doc! {"op": "i", "ns": "test.coll", "o": {"_id": 2}, "ts": ts(6), "fromMigrate": true},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops.len(), 4);
        assert!(ops[0].is_insert() && ops[0].data == Some(doc! {"_id": 1, "a": 1}));
        assert_eq!(ops[0].wall_time, Some(bson::DateTime::from_millis(5)));
        assert!(ops[1].is_update() && ops[1].needs_fetch() && ops[1].data.is_none());
        assert_eq!(
            ops[1].update.as_ref().unwrap().updated_fields,
            doc! {"a": 2}
        );
        assert!(ops[2].is_replace() && ops[2].data == Some(doc! {"_id": 1, "x": "new"}));
        assert!(ops[3].is_delete() && ops[3].id == Some(Bson::Int32(1)));
        assert_eq!(ops[3].position, Position::Oplog(ts(4)));
        assert!(ops.iter().all(|o| o.is_source_oplog() && o.txn.is_none()));
    }

    #[test]
    fn four_four_format_entries() {
        // reference §4.3/§4.4: no `o2` on inserts, `$v: 1` updates, legacy `h`, Int32 `v`.
        let entries = [
            doc! {"op": "i", "ns": "test.coll", "o": {"_id": 1, "a": 1}, "ts": ts(1), "t": 1i64, "h": 0i64, "v": 2, "wall": bson::DateTime::from_millis(1)},
            doc! {"op": "u", "ns": "test.coll", "o": {"$v": 1, "$set": {"a": 2}}, "o2": {"_id": 1}, "ts": ts(2), "t": 1i64, "v": 2},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops[0].document_key, Some(doc! {"_id": 1}));
        assert_eq!(
            ops[1].update.as_ref().unwrap().updated_fields,
            doc! {"a": 2}
        );
    }

    #[test]
    fn other_commands_and_unknown_ops() {
        let entries = [
            doc! {"op": "c", "ns": "test.$cmd", "o": {"dropIndexes": "c", "index": "a_1"}, "o2": {"v": 2, "key": {"a": 1}, "name": "a_1"}, "ts": ts(1)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"collMod": "c", "validator": {}}, "ts": ts(2)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"startIndexBuild": "c", "indexBuildUUID": 1, "indexes": []}, "ts": ts(3)},
            doc! {"op": "xi", "ns": "test.c", "o": {"k": 1}, "ts": ts(4)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"create": "v", "viewOn": "c", "pipeline": []}, "ts": ts(5)},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops[0].kind, OpKind::Command("dropIndexes".into()));
        assert_eq!(ops[0].namespace.to_string(), "test.c");
        assert_eq!(ops[1].kind, OpKind::Command("collMod".into()));
        assert_eq!(ops[2].kind, OpKind::Command("startIndexBuild".into()));
        assert_eq!(ops[3].kind, OpKind::Other("xi".into()));
        assert_eq!(ops[4].kind, OpKind::Create);
        assert_eq!(
            ops[4].data.as_ref().unwrap().get_str("viewOn").unwrap(),
            "c"
        );
    }

    #[test]
    fn update_as_delta() {
        let o = doc! {"$v": 1, "$set": {"a": 1}};
        let e = doc! {"op": "u", "ns": "a.b", "o": o.clone(), "o2": {"_id": 1}, "ts": ts(1)};
        let ops = decode_with(Decoder::new(vec![], true, 10), &[e], &[]);
        assert_eq!(ops[0].data, Some(o.clone()));
        assert_eq!(ops[0].delta, Some(o));
        assert!(!ops[0].needs_fetch());
    }

    #[test]
    fn commands() {
        let entries = [
            doc! {"op": "c", "ns": "test.$cmd", "o": {"create": "c", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}, "ts": ts(1)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1"}, "ts": ts(2)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"renameCollection": "test.c", "to": "test.d", "stayTemp": false}, "ts": ts(3)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"drop": "d"}, "o2": {"numRecords": 3}, "ts": ts(4)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"dropDatabase": 1}, "ts": ts(5)},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops[0].kind, OpKind::Create);
        assert_eq!(ops[0].namespace.to_string(), "test.c");
        assert_eq!(ops[1].kind, OpKind::Command("createIndexes".into()));
        assert_eq!(
            ops[2].kind,
            OpKind::Rename {
                to: Namespace::parse("test.d").unwrap()
            }
        );
        assert_eq!(ops[2].namespace.to_string(), "test.c");
        assert!(ops[3].is_drop_collection() && ops[3].collection() == "d");
        assert!(ops[4].is_drop_database() && ops[4].namespace.to_string() == "test");
    }

    #[test]
    fn single_entry_transaction() {
        // reference §6
        let e = doc! {
            "lsid": lsid(), "txnNumber": 1i64, "op": "c", "ns": "admin.$cmd",
            "o": {"applyOps": [
                {"op": "i", "ns": "test.c", "o": {"_id": 1}},
                {"op": "u", "ns": "test.c", "o": {"$v": 2, "diff": {"u": {"a": 1}}}, "o2": {"_id": 2}},
                {"op": "i", "ns": "other.x", "o": {"_id": 3}},
            ]},
            "ts": ts(9), "t": 1i64, "v": 2i64, "wall": bson::DateTime::from_millis(1),
            "prevOpTime": {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64},
        };
        let ops = decode_with(
            Decoder::new(vec![Namespace::parse("test.c").unwrap()], false, 100),
            &[e],
            &[],
        );
        assert_eq!(ops.len(), 2);
        for (i, op) in ops.iter().enumerate() {
            let txn = op.txn.as_ref().unwrap();
            assert_eq!(txn.index, i as u32);
            assert_eq!(txn.txn_number, Some(1));
            assert_eq!(txn.lsid, Some(lsid()));
            assert_eq!(op.timestamp, ts(9));
        }
        assert!(ops[1].is_update());
    }

    #[test]
    fn batched_deletes_and_nested_apply_ops() {
        let e = doc! {
            "op": "c", "ns": "admin.$cmd",
            "o": {"applyOps": [
                {"op": "d", "ns": "t.c", "o": {"_id": 1}},
                {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [
                    {"op": "d", "ns": "t.c", "o": {"_id": 2}},
                ]}},
                {"op": "d", "ns": "t.c", "o": {"_id": 3}},
            ]},
            "ts": ts(4),
        };
        let ops = decode_all(&[e]);
        let ids: Vec<_> = ops.iter().map(|o| o.id.clone().unwrap()).collect();
        assert_eq!(ids, vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]);
        let txn = ops[2].txn.as_ref().unwrap();
        assert_eq!(
            (txn.lsid.is_none(), txn.txn_number, txn.index),
            (true, None, 2)
        );
    }

    fn partial(i: u32, prev: u32, ids: &[i32]) -> Document {
        let ops: Vec<Bson> = ids
            .iter()
            .map(|id| Bson::Document(doc! {"op": "i", "ns": "t.c", "o": {"_id": *id}}))
            .collect();
        doc! {
            "lsid": lsid(), "txnNumber": 5i64, "op": "c", "ns": "admin.$cmd",
            "o": {"applyOps": ops, "partialTxn": true},
            "ts": ts(i), "prevOpTime": {"ts": Timestamp { time: if prev == 0 { 0 } else { 1_700_000_000 }, increment: prev }, "t": 1i64},
        }
    }

    fn commit_entry(i: u32, prev: u32, ids: &[i32], total: i32) -> Document {
        let mut e = partial(i, prev, ids);
        let o = e.get_document_mut("o").unwrap();
        o.remove("partialTxn");
        o.insert("count", total);
        e
    }

    #[test]
    fn large_transaction() {
        let interleaved = doc! {"op": "i", "ns": "t.c", "o": {"_id": 100}, "ts": ts(2)};
        let entries = [
            partial(1, 0, &[1, 2]),
            interleaved,
            partial(3, 1, &[3]),
            commit_entry(4, 3, &[4], 4),
        ];
        let ops = decode_all(&entries);
        let ids: Vec<_> = ops.iter().map(|o| o.id.clone().unwrap()).collect();
        let want: Vec<Bson> = [100, 1, 2, 3, 4].into_iter().map(Bson::Int32).collect();
        assert_eq!(ids, want);
        assert!(ops[1..].iter().all(|o| o.timestamp == ts(4)));
        let idx: Vec<u32> = ops[1..]
            .iter()
            .map(|o| o.txn.as_ref().unwrap().index)
            .collect();
        assert_eq!(idx, vec![0, 1, 2, 3]);
    }

    #[test]
    fn large_transaction_started_mid_chain_fetches_earlier_entries() {
        let first = partial(1, 0, &[1]);
        let ops = decode_with(
            Decoder::new(vec![], false, 100),
            &[partial(2, 1, &[2]), commit_entry(3, 2, &[3], 3)],
            &[first],
        );
        let ids: Vec<_> = ops.iter().map(|o| o.id.clone().unwrap()).collect();
        assert_eq!(ids, vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]);
    }

    #[test]
    fn lost_transaction_entry_is_position_lost() {
        let mut d = Decoder::new(vec![], false, 100);
        let r =
            futures::executor::block_on(d.process(commit_entry(3, 2, &[3], 3), &Entries(vec![])));
        assert!(matches!(r, Err(Error::PositionLost { .. })));
    }

    fn prepare(i: u32, ids: &[i32]) -> Document {
        let mut e = partial(i, 0, ids);
        let o = e.get_document_mut("o").unwrap();
        o.remove("partialTxn");
        o.insert("prepare", true);
        e
    }

    #[test]
    fn prepared_transactions_commit_and_abort() {
        let commit = doc! {
            "lsid": lsid(), "txnNumber": 5i64, "op": "c", "ns": "admin.$cmd",
            "o": {"commitTransaction": 1, "commitTimestamp": ts(6)},
            "ts": ts(7), "prevOpTime": {"ts": ts(5), "t": 1i64},
        };
        let abort = doc! {
            "lsid": lsid(), "txnNumber": 5i64, "op": "c", "ns": "admin.$cmd",
            "o": {"abortTransaction": 1}, "ts": ts(7), "prevOpTime": {"ts": ts(5), "t": 1i64},
        };
        let mut d = Decoder::new(vec![], false, 100);
        let lookup = Entries(vec![]);
        let buffered =
            futures::executor::block_on(d.process(prepare(5, &[1, 2]), &lookup)).unwrap();
        assert!(buffered.is_empty());
        let ops = futures::executor::block_on(d.process(commit, &lookup)).unwrap();
        assert_eq!(ops.len(), 2);
        assert!(ops.iter().all(|o| o.timestamp == ts(7)));
        assert_eq!(d.pending_ops, 0);

        let ops = decode_with(
            Decoder::new(vec![], false, 100),
            &[prepare(5, &[1]), abort],
            &[],
        );
        assert!(ops.is_empty());
    }

    #[test]
    fn pending_buffer_is_bounded() {
        let mut d = Decoder::new(vec![], false, 2);
        let r = futures::executor::block_on(d.process(partial(1, 0, &[1, 2, 3]), &Entries(vec![])));
        assert!(matches!(r, Err(Error::TransactionTooLarge { limit: 2 })));
    }

    #[test]
    fn entry_doc_keeps_what_the_decoder_reads() {
        let crud = doc! {"op": "i", "ns": "t.c", "ui": bson::Uuid::new(), "o": {"_id": 1},
        "ts": ts(1), "t": 1_i64, "v": 2_i64, "wall": bson::DateTime::from_millis(5)};
        let slim = entry_doc(RawDocumentBuf::from_document(&crud).unwrap()).unwrap();
        assert_eq!(
            slim,
            doc! {"op": "i", "ns": "t.c", "o": {"_id": 1}, "ts": ts(1),
            "wall": bson::DateTime::from_millis(5)}
        );
        assert_eq!(decode_all(&[slim]), decode_all(&[crud]));
        let cmd = doc! {"op": "c", "ns": "t.$cmd", "o": {"applyOps": []}, "ts": ts(2),
        "lsid": lsid(), "txnNumber": 1_i64};
        let whole = entry_doc(RawDocumentBuf::from_document(&cmd).unwrap()).unwrap();
        assert_eq!(whole, cmd);
    }

    #[test]
    fn server_filter_shapes() {
        assert_eq!(server_filter(None, &[]), doc! {});
        assert_eq!(server_filter(Some(ts(1)), &[]), doc! {"ts": {"$gt": ts(1)}});
        let f = server_filter(
            Some(ts(1)),
            &[
                Namespace::parse("a.b").unwrap(),
                Namespace::database("c+d").unwrap(),
            ],
        );
        assert_eq!(
            f,
            doc! {
                "ts": {"$gt": ts(1)},
                "$or": [
                    {"ns": {"$in": ["admin.$cmd", "a.$cmd", "a.b", "c+d.$cmd"]}},
                    {"ns": {"$regex": "^c\\+d\\."}},
                    {"op": "n"},
                ],
            }
        );
    }

    #[test]
    fn malformed_entries_are_errors() {
        let mut d = Decoder::new(vec![], false, 2);
        let lookup = Entries(vec![]);
        for e in [
            doc! {"op": "i", "ns": "a.b"},
            doc! {"op": "u", "ns": "a.b", "o": {"$v": 2, "diff": {}}, "ts": ts(1)},
            doc! {"ns": "a.b", "o": {}, "ts": ts(1)},
        ] {
            let r = futures::executor::block_on(d.process(e.clone(), &lookup));
            assert!(matches!(r, Err(Error::Malformed { .. })), "{e}");
        }
    }
}
