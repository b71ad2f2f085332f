//! Change streams (`watch`) on a collection, a database or the whole deployment.
//!
//! Each event becomes an [`Op`] with [`Source::ChangeStream`] and its resume token as
//! [`Position::ResumeToken`]. After an `invalidate` (drop or rename of a watched
//! collection, drop of a watched database) the drop/rename op is emitted and the stream
//! continues with `startAfter` the invalidate token, as gtm does; the `invalidate` event
//! itself is not emitted.
//!
//! Errors: the driver resumes once on resumable errors; beyond that this source retries
//! with backoff from the last token ([`ChangeStreamOptions::retry`]). Capped position lost
//! (136: the stream fell off the oplog), history lost (286), token not found (280) and
//! invalid token (260) end the stream with
//! [`Error::PositionLost`]; a deployment that is not a replica set (40573) ends it with
//! [`Error::NotReplicaSet`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
//! # let uri = sim.uri();
//! use bson::doc;
//! use futures::TryStreamExt;
//! use mongotail::source::change_stream::{ChangeStreamOptions, ChangeStreamSource};
//! use mongotail::{Namespace, Position, StartAt};
//!
//! let client = mongodb::Client::with_uri_str(&uri).await?;
//! let orders = client.database("shop").collection::<bson::Document>("orders");
//! let before = mongotail::cluster_time(&client).await?;
//! orders.insert_one(doc! {"_id": 1}).await?;
//!
//! let options = ChangeStreamOptions::new()
//!     .namespace(Namespace::parse("shop.orders")?)
//!     .start(StartAt::After(before));
//! let mut ops = ChangeStreamSource::new(&client, options);
//! let op = ops.try_next().await?.expect("the insert");
//! assert!(op.is_insert() && op.data == Some(doc! {"_id": 1}));
//! assert!(matches!(op.position, Position::ResumeToken(_))); // checkpoint this
//! # Ok(()) }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bson::raw::{RawBsonRef, RawDocument};
use bson::{Bson, DateTime, Document, RawDocumentBuf, Timestamp};
use futures::stream::{BoxStream, Fuse, FusedStream, Stream, StreamExt};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
pub use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use mongodb::Client;
use tokio::sync::Notify;

use crate::error::{DisplayChain, Error, Result, POSITION_LOST_CODES};
use crate::op::{
    Namespace, Op, OpKind, Position, Source, TruncatedArray, TxnInfo, UpdateDescription,
};
use crate::source::start_at::{first_op_timestamp, just_after, just_before, StartAt};
use crate::source::RetryPolicy;

/// Options of one change stream. Build with [`ChangeStreamOptions::new`] and the builder
/// methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChangeStreamOptions {
    /// What to watch: a collection (`db.coll`), a database (`db`), or, when `None`, the
    /// whole deployment. Default `None`.
    pub namespace: Option<Namespace>,
    /// Stages appended after `$changeStream` (gtm's `Pipe`). Default empty.
    pub pipeline: Vec<Document>,
    /// `fullDocument` mode. Default `Some(UpdateLookup)` (as gtm); `None` is the server's
    /// `"default"` (no document on updates).
    pub full_document: Option<FullDocumentType>,
    /// `fullDocumentBeforeChange` mode. Default `None` (`"off"`).
    pub full_document_before_change: Option<FullDocumentBeforeChangeType>,
    /// Where to start when no token is set (exclusive, see [`StartAt`]). Default `None`:
    /// the [`TailOptions::start`](crate::TailOptions::start) of [`start`](crate::start),
    /// or [`StartAt::Latest`] (now) for a stream built alone.
    pub start: Option<StartAt>,
    /// Resume after this token (e.g. a saved [`Position::ResumeToken`]); wins over
    /// `start`. Default `None`.
    pub resume_after: Option<ResumeToken>,
    /// Start after this token; unlike `resume_after` it may be an invalidate token. Wins
    /// over `resume_after` and `start`. Default `None`.
    pub start_after: Option<ResumeToken>,
    /// Cursor batch size. Default `None`: the server's default.
    pub batch_size: Option<u32>,
    /// How long the server waits for events before answering an empty batch. Default 1 s.
    pub max_await_time: Option<Duration>,
    /// `showExpandedEvents` (6.0+): also report `create`, `createIndexes`, `dropIndexes`,
    /// `modify` and the expanded `rename` events. Default `false`.
    pub show_expanded_events: bool,
    /// Retry of transient errors beyond the driver's single automatic resume. Default
    /// [`RetryPolicy::default`].
    pub retry: RetryPolicy,
}

impl Default for ChangeStreamOptions {
    fn default() -> Self {
        ChangeStreamOptions {
            namespace: None,
            pipeline: Vec::new(),
            full_document: Some(FullDocumentType::UpdateLookup),
            full_document_before_change: None,
            start: None,
            resume_after: None,
            start_after: None,
            batch_size: None,
            max_await_time: Some(Duration::from_secs(1)),
            show_expanded_events: false,
            retry: RetryPolicy::default(),
        }
    }
}

impl ChangeStreamOptions {
    /// The defaults: the whole deployment, `updateLookup`, from now.
    pub fn new() -> Self {
        ChangeStreamOptions::default()
    }

    /// Sets [`ChangeStreamOptions::namespace`].
    pub fn namespace(mut self, ns: Namespace) -> Self {
        self.namespace = Some(ns);
        self
    }

    /// Sets [`ChangeStreamOptions::pipeline`].
    pub fn pipeline(mut self, stages: impl IntoIterator<Item = Document>) -> Self {
        self.pipeline = stages.into_iter().collect();
        self
    }

    /// Sets [`ChangeStreamOptions::full_document`].
    pub fn full_document(mut self, mode: Option<FullDocumentType>) -> Self {
        self.full_document = mode;
        self
    }

    /// Sets [`ChangeStreamOptions::full_document_before_change`].
    pub fn full_document_before_change(
        mut self,
        mode: Option<FullDocumentBeforeChangeType>,
    ) -> Self {
        self.full_document_before_change = mode;
        self
    }

    /// Sets [`ChangeStreamOptions::start`].
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = Some(start);
        self
    }

    /// Starts at the cluster time `ts`, **inclusive** like the server's
    /// `startAtOperationTime`: shorthand for `start(StartAt::After(ts - 1))`, where `ts - 1`
    /// is the timestamp just before `ts`.
    pub fn start_at_operation_time(self, ts: Timestamp) -> Self {
        self.start(StartAt::After(just_before(ts)))
    }

    /// Sets [`ChangeStreamOptions::resume_after`].
    pub fn resume_after(mut self, token: ResumeToken) -> Self {
        self.resume_after = Some(token);
        self
    }

    /// Sets [`ChangeStreamOptions::start_after`].
    pub fn start_after(mut self, token: ResumeToken) -> Self {
        self.start_after = Some(token);
        self
    }

    /// Sets [`ChangeStreamOptions::batch_size`].
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// Sets [`ChangeStreamOptions::max_await_time`].
    pub fn max_await_time(mut self, d: Duration) -> Self {
        self.max_await_time = Some(d);
        self
    }

    /// Sets [`ChangeStreamOptions::show_expanded_events`].
    pub fn show_expanded_events(mut self, on: bool) -> Self {
        self.show_expanded_events = on;
        self
    }

    /// Sets [`ChangeStreamOptions::retry`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Where the stream resumes from: the token of the last event delivered (or a
    /// post-batch token), and whether it must be used with `startAfter` (an invalidate
    /// token).
    token: Mutex<Option<(ResumeToken, bool)>>,
    seek: Mutex<Option<Timestamp>>,
    /// Set with `seek` so the stream checks it per event without taking the lock.
    seek_pending: AtomicBool,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cloneable remote control of a [`ChangeStreamSource`]: read its position, seek it.
#[derive(Debug, Clone)]
pub struct ChangeStreamControl {
    shared: Arc<Shared>,
}

impl ChangeStreamControl {
    /// The resume token of the last event delivered, refreshed on empty batches
    /// (post-batch resume token); before the first event, the token the stream was told
    /// to start from, or, when started from a time or from now, `None` until the stream
    /// opened.
    pub fn position(&self) -> Option<ResumeToken> {
        let token = lock(&self.shared.token);
        token.as_ref().map(|(token, _)| token.clone())
    }

    /// Makes the stream continue with the changes after `ts` (gtm's `Since`): the stream
    /// is re-opened with `startAtOperationTime` just after `ts` on the next poll.
    pub fn seek(&self, ts: Timestamp) {
        *lock(&self.shared.seek) = Some(ts);
        self.shared.seek_pending.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// One change stream as a `Stream<Item = Result<Op>>`. Dropping it closes its cursor.
#[must_use = "streams do nothing unless polled"]
pub struct ChangeStreamSource {
    inner: Fuse<BoxStream<'static, Result<Op>>>,
    control: ChangeStreamControl,
}

impl fmt::Debug for ChangeStreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeStreamSource")
            .field("position", &self.control.position())
            .finish_non_exhaustive()
    }
}

impl ChangeStreamSource {
    /// Builds the stream; nothing is sent to the server before the first poll.
    pub fn new(client: &Client, options: ChangeStreamOptions) -> ChangeStreamSource {
        let shared = Arc::new(Shared::default());
        let resume = match (&options.start_after, &options.resume_after) {
            (Some(t), _) => Some((t, true)),
            (None, Some(t)) => Some((t, false)),
            (None, None) => None,
        };
        *lock(&shared.token) = resume.map(|(t, start_after)| (t.clone(), start_after));
        let watcher = Watcher {
            client: client.clone(),
            start_at: None,
            started: false,
            options,
            stream: None,
            failures: 0,
            done: false,
            txn: TxnCounter::default(),
            shared: shared.clone(),
        };
        // Boxed so that each item moves a pointer in and out of `unfold`, not the state.
        let inner = futures::stream::unfold(Box::new(watcher), |mut w| async move {
            let item = w.next_item().await?;
            Some((item, w))
        })
        .boxed()
        .fuse();
        ChangeStreamSource {
            inner,
            control: ChangeStreamControl { shared },
        }
    }

    /// See [`ChangeStreamControl::position`].
    pub fn position(&self) -> Option<ResumeToken> {
        self.control.position()
    }

    /// A remote control for this stream.
    pub fn control(&self) -> ChangeStreamControl {
        self.control.clone()
    }
}

impl Stream for ChangeStreamSource {
    type Item = Result<Op>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl FusedStream for ChangeStreamSource {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

struct Watcher {
    client: Client,
    options: ChangeStreamOptions,
    /// The `startAtOperationTime` when there is no token, once `started`.
    start_at: Option<Timestamp>,
    started: bool,
    /// Events are read raw and only the fields an [`Op`] carries are decoded
    /// ([`decode_event`]).
    stream: Option<ChangeStream<RawDocumentBuf>>,
    failures: u32,
    done: bool,
    txn: TxnCounter,
    shared: Arc<Shared>,
}

enum Recovery {
    Retry,
    Fail(Error),
}

impl Watcher {
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
                self.stream = None;
                *lock(&self.shared.token) = None;
                self.start_at = Some(just_after(ts));
                self.started = true;
                continue;
            }
            if self.stream.is_none() {
                match self.open().await {
                    Ok(s) => {
                        self.stream = Some(s);
                        self.refresh_token();
                    }
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
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            // The stream is polled first, so the `Notify` only registers a waiter when no
            // event is ready; a seek made meanwhile is seen through `seek_pending` above
            // (and its stored `notify_one` permit wakes the next wait at once).
            let next = tokio::select! {
                biased;
                next = stream.next_if_any() => next,
                _ = self.shared.wake.notified() => continue,
            };
            match next {
                Ok(Some(event)) => {
                    self.failures = 0;
                    match decode_event(&event, &mut self.txn) {
                        Ok(Decoded::Op(op)) => {
                            // The event's `_id` is the position to resume after; the
                            // post-batch token is read only when a batch runs out.
                            if let Position::ResumeToken(token) = &op.position {
                                self.set_token(token.clone(), false);
                            }
                            return Some(Ok(*op));
                        }
                        Ok(Decoded::Invalidate(token)) => {
                            tracing::debug!(
                                "change stream invalidated; continuing with startAfter"
                            );
                            self.stream = None;
                            self.set_token(token, true);
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                Ok(None) => {
                    self.failures = 0;
                    let alive = stream.is_alive();
                    self.refresh_token();
                    if !alive {
                        self.stream = None;
                    }
                }
                Err(e) => {
                    self.stream = None;
                    match self.recover(Error::Driver(e)) {
                        Recovery::Retry => self.backoff().await,
                        Recovery::Fail(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Caches the stream's current resume token: the post-batch token after a batch ran
    /// out, or the token the stream opened with. A token equal to the `startAfter` token
    /// the stream was opened with (an invalidate token) must be used with `startAfter`
    /// again.
    fn refresh_token(&mut self) {
        let Some(token) = self.stream.as_ref().and_then(|s| s.resume_token()) else {
            return;
        };
        let start_after = matches!(&*lock(&self.shared.token), Some((t, true)) if *t == token);
        self.set_token(token, start_after);
    }

    /// Records `token` as the position to resume from (seen by the control too).
    fn set_token(&self, token: ResumeToken, start_after: bool) {
        *lock(&self.shared.token) = Some((token, start_after));
    }

    /// The token to resume from and whether it is a `startAfter` token.
    fn resume_token(&self) -> Option<(ResumeToken, bool)> {
        lock(&self.shared.token).clone()
    }

    /// The position to report as lost: the token, else the start time, else (started from
    /// now, nothing read yet) the zero timestamp.
    fn position(&self) -> Position {
        match (self.resume_token(), self.start_at) {
            (Some((t, _)), _) => Position::ResumeToken(t),
            (None, Some(ts)) => Position::Oplog(ts),
            (None, None) => Position::Oplog(Timestamp {
                time: 0,
                increment: 0,
            }),
        }
    }

    fn recover(&mut self, e: Error) -> Recovery {
        if let (Error::Driver(driver), Some(code)) = (&e, e.code()) {
            if code == 40573 {
                return Recovery::Fail(Error::NotReplicaSet(driver.to_string()));
            }
            if POSITION_LOST_CODES.contains(&code) {
                return Recovery::Fail(Error::PositionLost {
                    position: self.position(),
                    code,
                    message: driver.to_string(),
                });
            }
        }
        // Only transient errors are retried (a bad pipeline fails at once); unlike the
        // driver, transient errors of the initial aggregate are retried too.
        if e.is_resumable() && self.failures < self.options.retry.max_retries {
            self.failures += 1;
            tracing::warn!(error = %DisplayChain(&e), attempt = self.failures, "change stream: retrying after transient error");
            return Recovery::Retry;
        }
        Recovery::Fail(e)
    }

    fn backoff(&self) -> tokio::time::Sleep {
        tokio::time::sleep(self.options.retry.backoff(self.failures))
    }

    async fn open(&mut self) -> Result<ChangeStream<RawDocumentBuf>> {
        if !self.started && self.resume_token().is_none() {
            self.start_at = resolve_start(self.client.clone(), self.options.start.clone()).await?;
            self.started = true;
        }
        let o = &self.options;
        let db;
        let coll;
        let watch = match &o.namespace {
            None => self.client.watch(),
            Some(ns) if ns.is_database() => {
                db = self.client.database(ns.db());
                db.watch()
            }
            Some(ns) => {
                coll = self
                    .client
                    .database(ns.db())
                    .collection::<Document>(ns.coll());
                coll.watch()
            }
        };
        let mut watch = watch.pipeline(o.pipeline.clone());
        if let Some(fd) = &o.full_document {
            watch = watch.full_document(fd.clone());
        }
        if let Some(fd) = &o.full_document_before_change {
            watch = watch.full_document_before_change(fd.clone());
        }
        if let Some(n) = o.batch_size {
            watch = watch.batch_size(n);
        }
        if let Some(d) = o.max_await_time {
            watch = watch.max_await_time(d);
        }
        if o.show_expanded_events {
            watch = watch.show_expanded_events(true);
        }
        match self.resume_token() {
            Some((token, start_after)) => {
                watch = if start_after {
                    watch.start_after(token)
                } else {
                    watch.resume_after(token)
                };
            }
            None => {
                if let Some(ts) = self.start_at {
                    watch = watch.start_at_operation_time(ts);
                }
            }
        }
        Ok(watch.await?.with_type::<RawDocumentBuf>())
    }
}

/// Resolves [`ChangeStreamOptions::start`] into a start time (`None`: now).
async fn resolve_start(client: Client, start: Option<StartAt>) -> Result<Option<Timestamp>> {
    Ok(match start.unwrap_or_default() {
        StartAt::Latest => None,
        StartAt::Earliest => Some(
            first_op_timestamp(&client)
                .await?
                .ok_or_else(|| Error::NotReplicaSet("local.oplog.rs is empty or missing".into()))?,
        ),
        StartAt::After(ts) => Some(just_after(ts)),
        StartAt::Func(f) => Some(just_after(f(client).await?)),
    })
}

/// What one change event turns into.
pub(crate) enum Decoded {
    Op(Box<Op>),
    Invalidate(ResumeToken),
}

/// Numbers the events of one transaction when the token does not carry `txnOpIndex`.
#[derive(Debug, Default)]
pub(crate) struct TxnCounter {
    last: Option<(Timestamp, i64)>,
    next: u32,
}

fn malformed(message: impl Into<String>) -> Error {
    Error::Malformed {
        what: "change event".into(),
        message: message.into(),
    }
}

/// Decodes a KeyString-encoded non-negative integer (reference §5.8) at `bytes[0..]`,
/// returning the value and the number of bytes used.
fn keystring_uint(bytes: &[u8]) -> Option<(u64, usize)> {
    let ctype = *bytes.first()?;
    if ctype == 0x29 {
        return Some((0, 1));
    }
    let n = usize::from(ctype.checked_sub(0x2A)?);
    if !(1..=8).contains(&n) || bytes.len() < 1 + n {
        return None;
    }
    let mut v: u64 = 0;
    for b in &bytes[1..=n] {
        v = (v << 8) | u64::from(*b);
    }
    if v & 1 != 0 {
        return None; // fractional part: not an integer
    }
    Some((v >> 1, 1 + n))
}

/// `txnOpIndex` from a resume token's `_data` (reference §5.8): clusterTime, version,
/// [tokenType (v1+)], txnOpIndex.
pub(crate) fn txn_op_index(token: &RawDocument) -> Option<u32> {
    let hex = token.get_str("_data").ok()?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if bytes.first() != Some(&0x82) || bytes.len() < 9 {
        return None;
    }
    let mut at = 9;
    let (version, used) = keystring_uint(&bytes[at..])?;
    at += used;
    if version >= 1 {
        let (_token_type, used) = keystring_uint(&bytes[at..])?;
        at += used;
    }
    let (index, _) = keystring_uint(&bytes[at..])?;
    u32::try_from(index).ok()
}

fn update_description(d: &Document) -> Result<UpdateDescription> {
    let updated = d.get_document("updatedFields").cloned().unwrap_or_default();
    let removed = match d.get_array("removedFields") {
        Ok(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed("removedFields"))
            })
            .collect::<Result<Vec<_>>>()?,
        Err(_) => Vec::new(),
    };
    let mut truncated = Vec::new();
    if let Ok(arr) = d.get_array("truncatedArrays") {
        for t in arr {
            let t = t
                .as_document()
                .ok_or_else(|| malformed("truncatedArrays"))?;
            let field = t
                .get_str("field")
                .map_err(|_| malformed("truncatedArrays.field"))?;
            let size = match t.get("newSize") {
                Some(Bson::Int32(n)) => u32::try_from(*n).ok(),
                Some(Bson::Int64(n)) => u32::try_from(*n).ok(),
                _ => None,
            }
            .ok_or_else(|| malformed("truncatedArrays.newSize"))?;
            truncated.push(TruncatedArray::new(field, size));
        }
    }
    Ok(UpdateDescription::new(updated, removed, truncated))
}

/// The fields of a change event (reference §5.4) an [`Op`] is made of, borrowed from the
/// raw event: nothing else is decoded.
#[derive(Default)]
struct EventFields<'a> {
    id: Option<RawBsonRef<'a>>,
    operation_type: Option<&'a str>,
    ns: Option<&'a RawDocument>,
    to: Option<&'a RawDocument>,
    document_key: Option<&'a RawDocument>,
    full_document: Option<RawBsonRef<'a>>,
    operation_description: Option<&'a RawDocument>,
    update_description: Option<&'a RawDocument>,
    cluster_time: Option<Timestamp>,
    wall_time: Option<DateTime>,
    lsid: Option<RawBsonRef<'a>>,
    txn_number: Option<RawBsonRef<'a>>,
}

impl<'a> EventFields<'a> {
    fn read(ev: &'a RawDocument) -> Result<EventFields<'a>> {
        let mut f = EventFields::default();
        for element in ev.iter() {
            let (key, value) = element.map_err(|e| malformed(e.to_string()))?;
            match key {
                "_id" => f.id = Some(value),
                "operationType" => f.operation_type = value.as_str(),
                "ns" => f.ns = value.as_document(),
                "to" => f.to = value.as_document(),
                "documentKey" => f.document_key = value.as_document(),
                "fullDocument" => f.full_document = Some(value),
                "operationDescription" => f.operation_description = value.as_document(),
                "updateDescription" => f.update_description = value.as_document(),
                "clusterTime" => f.cluster_time = value.as_timestamp(),
                "wallTime" => f.wall_time = value.as_datetime(),
                "lsid" => f.lsid = Some(value),
                "txnNumber" => f.txn_number = Some(value),
                _ => {}
            }
        }
        Ok(f)
    }
}

fn raw_doc(d: &RawDocument, what: &str) -> Result<Document> {
    super::raw::document(d).map_err(|e| malformed(format!("{what}: {e}")))
}

/// `ns` / `to` of an event: `{db, coll}`, `coll` absent for database-level events. One
/// pass over the fields (two `get_str` calls would walk the document twice).
fn raw_ns(d: Option<&RawDocument>) -> Option<Namespace> {
    let (mut db, mut coll) = (None, "");
    for element in d? {
        match element.ok()? {
            ("db", value) => db = value.as_str(),
            ("coll", value) => coll = value.as_str().unwrap_or(""),
            _ => {}
        }
    }
    Some(Namespace::from_server(db?, coll))
}

/// Turns one change event (reference §5.4), read raw, into an op.
pub(crate) fn decode_event(ev: &RawDocument, txn: &mut TxnCounter) -> Result<Decoded> {
    let f = EventFields::read(ev)?;
    let Some(raw_token) = f.id.and_then(RawBsonRef::as_document) else {
        return Err(malformed("missing `_id` (resume token)"));
    };
    // One copy of the token's bytes.
    let token: ResumeToken =
        bson::from_slice(raw_token.as_bytes()).map_err(|e| malformed(format!("_id: {e}")))?;
    let op_type = f
        .operation_type
        .ok_or_else(|| malformed("missing `operationType`"))?;
    if op_type == "invalidate" {
        return Ok(Decoded::Invalidate(token));
    }
    let ns = raw_ns(f.ns).ok_or_else(|| malformed(format!("{op_type} event without `ns`")))?;
    let kind = match op_type {
        "insert" => OpKind::Insert,
        "update" => OpKind::Update,
        "replace" => OpKind::Replace,
        "delete" => OpKind::Delete,
        "drop" => OpKind::DropCollection,
        "dropDatabase" => OpKind::DropDatabase,
        "rename" => OpKind::Rename {
            to: raw_ns(f.to).ok_or_else(|| malformed("rename event without `to`"))?,
        },
        "create" => OpKind::Create,
        "createIndexes"
        | "dropIndexes"
        | "modify"
        | "shardCollection"
        | "reshardCollection"
        | "refineCollectionShardKey" => OpKind::Command(op_type.to_owned()),
        other => OpKind::Other(other.to_owned()),
    };
    let document_key = f
        .document_key
        .map(|k| raw_doc(k, "documentKey"))
        .transpose()?;
    let id = document_key.as_ref().and_then(|k| k.get("_id").cloned());
    let mut op = Op::new(kind, ns, id);
    op.document_key = document_key;
    match f.full_document {
        Some(RawBsonRef::Document(d)) => op.data = Some(raw_doc(d, "fullDocument")?),
        Some(RawBsonRef::Null) if op.is_update() => op.document_missing = true,
        _ => {}
    }
    if op.data.is_none() && op.is_command() {
        if let Some(d) = f.operation_description {
            op.data = Some(raw_doc(d, "operationDescription")?);
        }
    }
    if let Some(u) = f.update_description {
        op.update = Some(update_description(&raw_doc(u, "updateDescription")?)?);
    }
    op.timestamp = f.cluster_time.unwrap_or(Timestamp {
        time: 0,
        increment: 0,
    });
    op.wall_time = f.wall_time;
    op.source = Source::ChangeStream;
    if f.lsid.is_some() || f.txn_number.is_some() {
        let lsid = match f.lsid {
            Some(RawBsonRef::Document(d)) => Some(raw_doc(d, "lsid")?),
            _ => None,
        };
        let txn_number = f.txn_number.and_then(RawBsonRef::as_i64);
        let index = match txn_op_index(raw_token) {
            Some(i) => i,
            None => {
                let key = (op.timestamp, txn_number.unwrap_or(-1));
                if txn.last != Some(key) {
                    txn.last = Some(key);
                    txn.next = 0;
                }
                let i = txn.next;
                txn.next += 1;
                i
            }
        };
        op.txn = Some(TxnInfo::new(lsid, txn_number, index));
    }
    op.position = Position::ResumeToken(token);
    Ok(Decoded::Op(Box::new(op)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    const INSERT_TOKEN: &str =
        "82612E8513000000012B022C0100296E5A1004A5093ABB38FE4B9EA67F01BB1A96D812463C5F6964003C5F5F5F78000004";

    fn raw(ev: Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&ev).unwrap()
    }

    fn token(t: Document) -> ResumeToken {
        bson::from_document(t).unwrap()
    }

    #[test]
    fn tokens_are_read_from_the_raw_id() {
        let id = doc! {"_data": INSERT_TOKEN};
        let Decoded::Op(op) = decode_event(
            &raw(
                doc! {"_id": id.clone(), "operationType": "delete", "ns": {"db": "t", "coll": "c"}},
            ),
            &mut TxnCounter::default(),
        )
        .unwrap() else {
            panic!("not an op")
        };
        let Position::ResumeToken(t) = op.position else {
            panic!("no token")
        };
        assert_eq!(bson::to_document(&t).unwrap(), id);
        assert_eq!(t, token(id));
    }

    fn decode(ev: Document) -> Op {
        match decode_event(&raw(ev), &mut TxnCounter::default()).unwrap() {
            Decoded::Op(op) => *op,
            _ => panic!("not an op"),
        }
    }

    #[test]
    fn txn_op_index_from_tokens() {
        // reference §5.8 worked example: txnOpIndex 0
        assert_eq!(txn_op_index(&raw(doc! {"_data": INSERT_TOKEN})), Some(0));
        // same token with txnOpIndex 3: `2B 06`
        let t3 = INSERT_TOKEN.replacen("2C0100296E", "2C01002B066E", 1);
        assert_eq!(txn_op_index(&raw(doc! {"_data": t3})), Some(3));
        // v2 HWM token
        assert_eq!(
            txn_op_index(&raw(doc! {"_data": "82612E8513000000012B0429296E1404"})),
            Some(0)
        );
        assert_eq!(txn_op_index(&raw(doc! {"_data": "zz"})), None);
        assert_eq!(txn_op_index(&raw(doc! {})), None);
    }

    #[test]
    fn crud_events() {
        let ts = Timestamp {
            time: 5,
            increment: 1,
        };
        let insert = decode(doc! {
            "_id": {"_data": INSERT_TOKEN}, "operationType": "insert", "clusterTime": ts,
            "wallTime": bson::DateTime::from_millis(9),
            "fullDocument": {"_id": 1, "a": 1}, "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
        });
        assert!(insert.is_insert() && insert.is_source_change_stream());
        assert_eq!(insert.data, Some(doc! {"_id": 1, "a": 1}));
        assert_eq!(insert.id, Some(Bson::Int32(1)));
        assert_eq!(insert.timestamp, ts);
        assert_eq!(insert.wall_time, Some(bson::DateTime::from_millis(9)));
        assert_eq!(
            insert.position,
            Position::ResumeToken(token(doc! {"_data": INSERT_TOKEN}))
        );
        assert!(insert.txn.is_none());

        let update = decode(doc! {
            "_id": {"_data": "82"}, "operationType": "update", "clusterTime": ts,
            "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
            "updateDescription": {"updatedFields": {"a": 2}, "removedFields": ["b"], "truncatedArrays": [{"field": "arr", "newSize": 2}]},
            "fullDocument": null,
        });
        assert!(update.is_update() && update.document_missing && update.data.is_none());
        assert_eq!(
            update.update,
            Some(UpdateDescription::new(
                doc! {"a": 2},
                vec!["b".into()],
                vec![TruncatedArray::new("arr", 2)]
            ))
        );

        let replace = decode(doc! {
            "_id": {"_data": "82"}, "operationType": "replace", "clusterTime": ts,
            "fullDocument": {"_id": 1, "x": "new"}, "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
        });
        assert!(replace.is_replace() && replace.data.is_some());
        let delete = decode(doc! {
            "_id": {"_data": "82"}, "operationType": "delete", "clusterTime": ts,
            "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
        });
        assert!(delete.is_delete() && delete.data.is_none());
    }

    #[test]
    fn ddl_and_invalidate_events() {
        let ts = Timestamp {
            time: 5,
            increment: 1,
        };
        let drop = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "drop", "clusterTime": ts, "ns": {"db": "test", "coll": "c"}},
        );
        assert!(drop.is_drop_collection() && drop.collection() == "c");
        let rename = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "rename", "clusterTime": ts,
            "ns": {"db": "test", "coll": "a"}, "to": {"db": "test", "coll": "b"}},
        );
        assert_eq!(
            rename.kind,
            OpKind::Rename {
                to: Namespace::parse("test.b").unwrap()
            }
        );
        let dropdb = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "dropDatabase", "clusterTime": ts, "ns": {"db": "test"}},
        );
        assert!(dropdb.is_drop_database() && dropdb.namespace.is_database());
        let created = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "createIndexes", "clusterTime": ts,
            "ns": {"db": "test", "coll": "a"}, "operationDescription": {"indexes": []}},
        );
        assert_eq!(created.kind, OpKind::Command("createIndexes".into()));
        assert_eq!(created.data, Some(doc! {"indexes": []}));
        let other = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "somethingNew", "clusterTime": ts, "ns": {"db": "test"}},
        );
        assert_eq!(other.kind, OpKind::Other("somethingNew".into()));
        let inv = decode_event(
            &raw(doc! {"_id": {"_data": "83"}, "operationType": "invalidate", "clusterTime": ts}),
            &mut TxnCounter::default(),
        )
        .unwrap();
        assert!(matches!(inv, Decoded::Invalidate(t) if t == token(doc! {"_data": "83"})));
        assert!(decode_event(
            &raw(doc! {"operationType": "insert"}),
            &mut TxnCounter::default()
        )
        .is_err());
    }

    #[tokio::test]
    async fn position_before_the_first_event() {
        // Building a client or a source sends nothing, so no server is needed here.
        let client = Client::with_uri_str("mongodb://127.0.0.1:9/?directConnection=true")
            .await
            .unwrap();
        let token = token(doc! {"_data": INSERT_TOKEN});
        let after = ChangeStreamSource::new(
            &client,
            ChangeStreamOptions::new().resume_after(token.clone()),
        );
        assert_eq!(after.position(), Some(token.clone()));
        let control = after.control();
        control.seek(Timestamp {
            time: 5,
            increment: 0,
        });
        // the seek is applied by the stream on its next poll
        assert_eq!(control.position(), Some(token.clone()));
        let now = ChangeStreamSource::new(&client, ChangeStreamOptions::new());
        assert_eq!(now.position(), None);
    }

    #[test]
    fn transaction_events() {
        let ts = Timestamp {
            time: 5,
            increment: 1,
        };
        let mut counter = TxnCounter::default();
        let lsid = doc! {"id": 1};
        let mut idx = Vec::new();
        for (i, data) in ["82", "82", INSERT_TOKEN].iter().enumerate() {
            let ev = doc! {"_id": {"_data": *data}, "operationType": "insert", "clusterTime": ts,
            "ns": {"db": "t", "coll": "c"}, "documentKey": {"_id": i as i32}, "fullDocument": {"_id": i as i32},
            "lsid": lsid.clone(), "txnNumber": 3i64};
            let Decoded::Op(op) = decode_event(&raw(ev), &mut counter).unwrap() else {
                panic!()
            };
            let txn = op.txn.unwrap();
            assert_eq!((txn.lsid.as_ref(), txn.txn_number), (Some(&lsid), Some(3)));
            idx.push(txn.index);
        }
        // first two from the counter (tokens too short), the last from the token
        assert_eq!(idx, vec![0, 1, 0]);
    }
}
