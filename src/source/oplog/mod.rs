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
//!
//! [`UpdateDescription`]: crate::UpdateDescription

pub(crate) mod decode;
mod diff;
mod entry;
mod txn;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use futures::future::BoxFuture;
use futures::stream::StreamExt;
use futures::FutureExt;
use mongodb::options::{CursorType, FindOptions};
use mongodb::{Client, Collection, Cursor};

use self::decode::{Decoder, RawCrud};
use self::txn::Lookup;
use super::engine::{Control, Decoded, Engine, Opened, Read, Resumable, Then, Verdict};
use super::retry::RetryPolicy;
use super::start_at::{oplog_edge, StartAt};
use crate::error::{Error, Result};
use crate::op::{Namespace, Op, Position};

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
    /// Set by [`OplogOptions::resume_from`] with an index: the ops of the transaction
    /// committed at `ts` up to `index` were handled.
    resume_inside: Option<(Timestamp, u32)>,
    /// Whether [`OplogOptions::namespaces`] is pushed into the server query (default) or
    /// applied in the client only, so that every entry moves the position (the cluster
    /// source's watermarks: a shard busy with other namespaces writes no no-ops).
    filter_on_server: bool,
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
            resume_inside: None,
            filter_on_server: true,
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

    /// Resumes from a checkpointed position: after the entry at `progress.ts`, or, inside
    /// the transaction committed at `progress.ts`, after its op `progress.index` (the
    /// transaction's later ops are delivered, its earlier ones are not).
    ///
    /// ```
    /// use bson::Timestamp;
    /// use mongotail::checkpoint::OplogProgress;
    /// use mongotail::{OplogOptions, StartAt};
    ///
    /// let ts = Timestamp { time: 1_700_000_000, increment: 4 };
    /// let options = OplogOptions::new().resume_from(OplogProgress::new(ts));
    /// assert!(matches!(options.start, Some(StartAt::After(t)) if t == ts));
    /// ```
    pub fn resume_from(mut self, progress: crate::checkpoint::OplogProgress) -> Self {
        match progress.index {
            None => {
                self.resume_inside = None;
                self.start_after(progress.ts)
            }
            Some(index) => {
                self.resume_inside = Some((progress.ts, index));
                self.start_after(just_before(progress.ts))
            }
        }
    }

    /// Sets whether the namespaces are filtered in the server query (see the field).
    pub(crate) fn filter_on_server(mut self, on: bool) -> Self {
        self.filter_on_server = on;
        self
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

/// A cloneable remote control of an [`OplogStream`]: read its position, seek, pause.
#[derive(Debug, Clone)]
pub struct OplogControl {
    control: Arc<Control<Timestamp>>,
}

impl OplogControl {
    /// A control for a stream built later.
    pub(crate) fn detached() -> OplogControl {
        OplogControl {
            control: Arc::new(Control::new(None)),
        }
    }

    /// The `ts` of the last entry the stream has fully delivered (including skipped
    /// no-op and filtered entries); `None` before the start point is resolved.
    pub fn position(&self) -> Option<Timestamp> {
        self.control.position()
    }

    /// The source's figures; `server`: the server's cluster time, for the lag.
    pub(crate) fn stats(&self, server: Option<Timestamp>) -> crate::SourceStats {
        let counters = &self.control.stats;
        counters.snapshot("oplog".into(), self.is_paused(), self.position(), server)
    }

    /// Makes the stream continue after `ts` (gtm's `Since`): the cursor is closed and
    /// re-opened on the next poll; ops not yet delivered are discarded.
    pub fn seek(&self, ts: Timestamp) {
        self.control.seek(ts);
    }

    delegate_pause!(OplogControl);
}

/// The oplog source: a `Stream<Item = Result<Op>>`.
///
/// Transient errors are retried from the last delivered entry (`ts > last`) as
/// [`OplogOptions::retry`] says; a lost position ends the stream with
/// [`Error::PositionLost`]. Dropping the stream closes its server cursor.
#[must_use = "streams do nothing unless polled"]
pub struct OplogStream {
    engine: Engine<OplogTail>,
}

impl fmt::Debug for OplogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OplogStream")
            .field("engine", &self.engine)
            .finish()
    }
}

impl OplogStream {
    /// Builds the stream; nothing is sent to the server before the first poll.
    pub fn new(client: &Client, options: OplogOptions) -> OplogStream {
        OplogStream::with_control(client, options, &OplogControl::detached())
    }

    /// The stream, driven through `control` (made before it, see
    /// [`OplogControl::detached`]).
    pub(crate) fn with_control(
        client: &Client,
        options: OplogOptions,
        control: &OplogControl,
    ) -> OplogStream {
        let oplog = client
            .database(&options.database)
            .collection::<Document>(&options.collection);
        let tail = OplogTail {
            client: client.clone(),
            decoder: Decoder::new(
                options.namespaces.clone(),
                options.update_data_as_delta,
                options.max_pending_txn_ops,
            ),
            oplog,
            skip: options.resume_inside,
            options,
        };
        let retry = tail.options.retry.clone();
        OplogStream {
            engine: Engine::new(tail, retry, control.control.clone()),
        }
    }

    /// See [`OplogControl::position`].
    pub fn position(&self) -> Option<Timestamp> {
        self.engine.control().position()
    }

    /// A remote control for this stream (position, seek, pause).
    pub fn control(&self) -> OplogControl {
        OplogControl {
            control: self.engine.control().clone(),
        }
    }
}

delegate_stream!(OplogStream, engine);

impl Lookup for Collection<Document> {
    async fn entry_at(&self, ts: Timestamp) -> Result<Option<Document>> {
        Ok(self.find_one(doc! {"ts": ts}).await?)
    }
}

/// `namespaces` for logs: comma-separated, `*` for everything.
fn scope_of(namespaces: &[Namespace]) -> String {
    if namespaces.is_empty() {
        return "*".to_owned();
    }
    let names: Vec<String> = namespaces.iter().map(ToString::to_string).collect();
    names.join(",")
}

/// The timestamp just before `ts` in the oplog's order (the zero timestamp stays zero).
fn just_before(ts: Timestamp) -> Timestamp {
    match (ts.time, ts.increment) {
        (0, 0) => ts,
        (time, 0) => Timestamp {
            time: time - 1,
            increment: u32::MAX,
        },
        (time, increment) => Timestamp {
            time,
            increment: increment - 1,
        },
    }
}

/// How the oplog source opens, decodes and classifies; the [`Engine`] does the rest.
struct OplogTail {
    client: Client,
    oplog: Collection<Document>,
    options: OplogOptions,
    decoder: Decoder,
    /// Until the entry at this `ts` is read: its ops up to this index were handled.
    skip: Option<(Timestamp, u32)>,
}

impl OplogTail {
    /// Where a cursor opened after `from` resumes: after `from`, or at the transaction
    /// whose first ops are skipped.
    fn resume_point(&self, from: Timestamp) -> Timestamp {
        match self.skip {
            Some((ts, _)) if from == just_before(ts) => ts,
            _ => from,
        }
    }

    /// Drops the ops of the entry at `ts` already handled before a restart (appended to
    /// `out` from `first` on).
    fn skip_handled(&mut self, ts: Timestamp, out: &mut VecDeque<Op>, first: usize) {
        let Some((at, index)) = self.skip else { return };
        if ts < at {
            return;
        }
        self.skip = None;
        if ts == at {
            let keep: Vec<Op> = out
                .drain(first..)
                .filter(|op| !handled(op, index))
                .collect();
            out.extend(keep);
        }
    }
}

/// Whether `op` is among a transaction's ops up to `index`.
fn handled(op: &Op, index: u32) -> bool {
    op.txn.as_ref().is_some_and(|t| t.index <= index)
}

impl Resumable for OplogTail {
    /// The `ts` of the last entry processed: a cursor re-opens with `ts > pos`.
    type Pos = Timestamp;
    /// Read raw: [`entry_doc`] decodes only what the decoder reads.
    type Cursor = Cursor<RawDocumentBuf>;
    type Doc = RawDocumentBuf;

    const NAME: &'static str = "oplog";

    fn start(&mut self) -> BoxFuture<'static, Result<Option<Timestamp>>> {
        let (client, oplog) = (self.client.clone(), self.oplog.clone());
        let start = self.options.start.clone().unwrap_or_default();
        async move {
            Ok(match start {
                StartAt::Latest => Some(oplog_edge(&oplog, -1).await?.ok_or_else(|| {
                    Error::NotReplicaSet(format!("{} is empty or missing", oplog.namespace()))
                })?),
                StartAt::Earliest => None,
                StartAt::After(ts) => Some(ts),
                StartAt::Func(f) => Some(f(client).await?),
            })
        }
        .boxed()
    }

    fn open(&mut self, from: Option<Timestamp>) -> BoxFuture<'static, Result<Opened<Self>>> {
        let mut find = FindOptions::builder()
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(self.options.max_await_time)
            .build();
        find.batch_size = self.options.batch_size;
        let namespaces: &[Namespace] = match self.options.filter_on_server {
            true => &self.options.namespaces,
            false => &[],
        };
        let filter = server_filter(from, namespaces);
        let oplog = self.oplog.clone();
        let resume = from.map(|from| self.resume_point(from));
        async move {
            let cursor = oplog
                .clone_with_type::<RawDocumentBuf>()
                .find(filter)
                .with_options(find)
                .await?;
            if let Some(last) = resume {
                // Capped collections lose their oldest entries first: if the oldest entry is
                // newer than `last`, something after `last` may be gone (reference §3.3).
                if let Some(oldest) = oplog_edge(&oplog, 1).await? {
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
            Ok((cursor, None))
        }
        .boxed()
    }

    fn poll_read(
        &mut self,
        cursor: &mut Cursor<RawDocumentBuf>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Read<RawDocumentBuf, Timestamp>>> {
        Poll::Ready(match ready!(cursor.poll_next_unpin(cx)) {
            Some(Ok(raw)) => Ok(Read::Doc(raw)),
            Some(Err(e)) => Err(e.into()),
            // The server closed the tailable cursor (e.g. it returned nothing at open):
            // re-query from the last entry after a short pause.
            None => Ok(Read::Reopen {
                pos: None,
                after: self.options.max_await_time.min(Duration::from_millis(200)),
            }),
        })
    }

    fn decode(&mut self, raw: RawDocumentBuf, out: &mut VecDeque<Op>) -> Decoded<Timestamp> {
        if let Some(crud) = RawCrud::read(&raw) {
            let (ts, first) = (crud.ts, out.len());
            let decoded = self.decoder.process_crud(crud, out);
            self.skip_handled(ts, out, first);
            return match decoded {
                Ok(()) => Decoded::deliver(Some(ts)),
                Err(e) => Decoded::fail(Some(ts), e),
            };
        }
        let malformed = |message: String| Error::Malformed {
            what: "oplog entry".into(),
            message,
        };
        let entry = match entry_doc(raw) {
            Ok(entry) => entry,
            Err(e) => return Decoded::fail(None, malformed(e.to_string())),
        };
        let Ok(ts) = entry.get_timestamp("ts") else {
            return Decoded::fail(None, malformed("missing `ts`".into()));
        };
        let first = out.len();
        let decoded = self.decoder.process_into(entry, out);
        let skip = self
            .skip
            .filter(|(at, _)| *at == ts)
            .map(|(_, index)| index);
        self.skip_handled(ts, out, first);
        match decoded {
            // No-ops and filtered entries move the position too.
            Ok(None) => Decoded::deliver(Some(ts)),
            Ok(Some(chain)) => {
                let (oplog, rules) = (self.oplog.clone(), self.decoder.rules());
                let lookup = async move {
                    let mut ops = chain.walk_oplog(&oplog).await?.into_ops(&rules)?;
                    if let Some(index) = skip {
                        ops.retain(|op| !handled(op, index));
                    }
                    Ok(ops)
                };
                Decoded {
                    pos: Some(ts),
                    then: Then::Lookup(lookup.boxed()),
                }
            }
            Err(e) => Decoded::fail(Some(ts), e),
        }
    }

    fn classify(&self, e: Error, at: Option<&Timestamp>) -> Verdict {
        // 136 CappedPositionLost: the cursor's position rolled off the capped oplog.
        let zero = Timestamp {
            time: 0,
            increment: 0,
        };
        Verdict::by_resumable(e.for_position(|| Position::Oplog(at.copied().unwrap_or(zero))))
    }

    fn scope(&self) -> String {
        scope_of(&self.options.namespaces)
    }

    /// Without a namespace filter the cursor reads every entry, and an idle server's
    /// periodic no-ops; with one, a server busy with other namespaces writes no no-op and
    /// the cursor legitimately sees nothing (empty batches do not surface): no stall watch.
    fn watches_stalls(&self) -> bool {
        self.options.namespaces.is_empty() || !self.options.filter_on_server
    }

    fn seek(&mut self, ts: Timestamp) -> Option<Timestamp> {
        self.decoder.clear();
        Some(ts)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::Binary;

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 1_700_000_000,
            increment: i,
        }
    }

    fn decode_all(entries: &[Document]) -> Vec<Op> {
        let mut decoder = Decoder::new(vec![], false, 1000);
        let mut out = VecDeque::new();
        for e in entries {
            assert!(decoder.process_into(e.clone(), &mut out).unwrap().is_none());
        }
        out.into()
    }

    fn lsid() -> Document {
        doc! {
            "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
            "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xe3; 32] },
        }
    }

    #[test]
    fn crud_entries_read_raw_decode_as_read_whole() {
        let u = bson::Uuid::new();
        let wall = bson::DateTime::from_millis(5);
        let entries = [
            doc! {"op": "i", "ns": "t.c", "ui": u, "o": {"_id": 1, "a": [1, {"b": 2}]}, "ts": ts(1), "wall": wall},
            doc! {"op": "i", "ns": "t.c", "o": {"_id": 2, "k": 3}, "o2": {"k": 3, "_id": 2}, "ts": ts(2)},
            doc! {"op": "u", "ns": "t.c", "o": {"$v": 2, "diff": {"u": {"a": 1}, "d": {"b": false}}}, "o2": {"_id": 1}, "ts": ts(3), "wall": wall},
            doc! {"op": "u", "ns": "t.c", "o": {"_id": 1, "x": 1}, "o2": {"_id": 1}, "ts": ts(4)},
            doc! {"op": "u", "ns": "t.c", "o": {"$set": {"x": 1}}, "ts": ts(5)},
            doc! {"op": "d", "ns": "t.c", "o": {"_id": 1}, "ts": ts(6), "lsid": lsid(), "txnNumber": 3_i64},
            doc! {"op": "i", "ns": "t.c", "o": {"_id": 9}, "ts": ts(7), "fromMigrate": true},
            doc! {"op": "d", "ns": "other.c", "o": {"_id": 1}, "ts": ts(8)},
        ];
        for filter in [vec![], vec![Namespace::parse("t.c").unwrap()]] {
            for as_delta in [false, true] {
                let mut whole = Decoder::new(filter.clone(), as_delta, 1000);
                let raw_decoder = Decoder::new(filter.clone(), as_delta, 1000);
                for e in &entries {
                    let raw = RawDocumentBuf::from_document(e).unwrap();
                    let crud = RawCrud::read(&raw).expect("a CRUD entry");
                    let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
                    let by_raw = raw_decoder
                        .process_crud(crud, &mut a)
                        .map_err(|e| e.to_string());
                    let by_doc = whole
                        .process_into(e.clone(), &mut b)
                        .map_err(|e| e.to_string());
                    assert_eq!(by_raw, by_doc.map(|chain| assert!(chain.is_none())), "{e}");
                    assert_eq!(a, b, "{e}");
                }
            }
        }
        let command = doc! {"op": "c", "ns": "t.$cmd", "o": {"drop": "c"}, "ts": ts(9)};
        let raw = RawDocumentBuf::from_document(&command).unwrap();
        assert!(RawCrud::read(&raw).is_none(), "commands go the general way");
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
}
