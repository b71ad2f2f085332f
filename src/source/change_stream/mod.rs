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
//!
//! [`Source::ChangeStream`]: crate::Source::ChangeStream

pub(crate) mod event;
mod split;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bson::{Document, RawDocumentBuf, Timestamp};
use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
pub use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use mongodb::Client;
use tokio_util::sync::ReusableBoxFuture;

use self::event::{decode_event, Event, TxnCounter};
use self::split::{Piece, Reassembly};
use super::engine::{Control, Decoded, Engine, Opened, Read, Resumable, Then, Verdict};
use super::retry::RetryPolicy;
use super::start_at::{first_op_timestamp, just_after, just_before, StartAt};
use crate::error::{Error, Result};
use crate::op::{Namespace, Op, Position};

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
    /// Ask the server to split events larger than 16 MB, and put them back together.
    /// Default `false`. See [`ChangeStreamOptions::split_large_events`].
    pub split_large_events: bool,
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
            split_large_events: false,
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

    /// Events larger than 16 MB (a large document with its pre- and post-image, say) fail
    /// a change stream with error 10334 `BSONObjectTooLarge`. With `on`, the stream ends its
    /// pipeline with `$changeStreamSplitLargeEvent` (MongoDB 7.0, 6.0.9): the server sends
    /// such an event as fragments, each with its own resume token, and this source puts
    /// them back together into one [`Op`], whose position is the last fragment's token.
    /// Fragments are never positions: a checkpoint or a resume never stands inside an
    /// event, and a stream interrupted between fragments (the driver resumes from a
    /// fragment's token) still delivers the event whole. A stream told to start from a
    /// fragment's token re-reads the event from its first fragment.
    ///
    /// Off by default, as servers before 6.0.9 refuse the stage. A `pipeline` that ends
    /// with `$changeStreamSplitLargeEvent` itself is reassembled the same way.
    ///
    /// ```
    /// use mongotail::source::change_stream::ChangeStreamOptions;
    ///
    /// let options = ChangeStreamOptions::new().split_large_events(true);
    /// assert!(options.split_large_events);
    /// ```
    pub fn split_large_events(mut self, on: bool) -> Self {
        self.split_large_events = on;
        self
    }

    /// Whether the stream's events may come split: the option, or a pipeline ending with
    /// the stage.
    fn splits(&self) -> bool {
        self.split_large_events || self.pipeline.last().is_some_and(is_split_stage)
    }
}

/// The stage that splits large events.
const SPLIT_STAGE: &str = "$changeStreamSplitLargeEvent";

fn is_split_stage(stage: &Document) -> bool {
    stage.keys().next().is_some_and(|k| k == SPLIT_STAGE)
}

/// Where a change stream resumes.
#[derive(Debug, Clone)]
enum Resume {
    /// After this token: the last event delivered, a post-batch token, or the token the
    /// stream was told to start from; with `startAfter` when it is an invalidate token.
    Token {
        token: ResumeToken,
        start_after: bool,
    },
    /// At this cluster time (inclusive, as `startAtOperationTime`), before any token.
    Time(Timestamp),
}

/// A cloneable remote control of a [`ChangeStreamSource`]: read its position, seek, pause.
#[derive(Debug, Clone)]
pub struct ChangeStreamControl {
    control: Arc<Control<Resume>>,
}

impl ChangeStreamControl {
    /// A control for a stream built later.
    pub(crate) fn detached() -> ChangeStreamControl {
        ChangeStreamControl {
            control: Arc::new(Control::new(None)),
        }
    }

    /// The resume token of the last event delivered, refreshed on empty batches
    /// (post-batch resume token); before the first event, the token the stream was told
    /// to start from, or, when started from a time or from now, `None` until the stream
    /// opened.
    pub fn position(&self) -> Option<ResumeToken> {
        match self.control.position()? {
            Resume::Token { token, .. } => Some(token),
            Resume::Time(_) => None,
        }
    }

    /// The source's figures under `name`; `server`: the server's cluster time, for the lag.
    pub(crate) fn stats(&self, name: String, server: Option<Timestamp>) -> crate::SourceStats {
        let newest = self.position().as_ref().and_then(super::stats::token_time);
        self.control
            .stats
            .snapshot(name, self.is_paused(), newest, server)
    }

    /// Makes the stream continue with the changes after `ts` (gtm's `Since`): the stream
    /// is re-opened with `startAtOperationTime` just after `ts` on the next poll.
    pub fn seek(&self, ts: Timestamp) {
        self.control.seek(ts);
    }

    delegate_pause!(ChangeStreamControl);
}

/// One change stream as a `Stream<Item = Result<Op>>`. Dropping it closes its cursor.
#[must_use = "streams do nothing unless polled"]
pub struct ChangeStreamSource {
    engine: Engine<Watch>,
}

impl fmt::Debug for ChangeStreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeStreamSource")
            .field("engine", &self.engine)
            .finish()
    }
}

impl ChangeStreamSource {
    /// Builds the stream; nothing is sent to the server before the first poll.
    pub fn new(client: &Client, options: ChangeStreamOptions) -> ChangeStreamSource {
        ChangeStreamSource::with_control(client, options, &ChangeStreamControl::detached())
    }

    /// The stream, driven through `control` (made before it, see
    /// [`ChangeStreamControl::detached`]).
    pub(crate) fn with_control(
        client: &Client,
        options: ChangeStreamOptions,
        control: &ChangeStreamControl,
    ) -> ChangeStreamSource {
        let token = match (&options.start_after, &options.resume_after) {
            (Some(token), _) => Some((token, true)),
            (None, Some(token)) => Some((token, false)),
            (None, None) => None,
        };
        let initial = token.map(|(token, start_after)| Resume::Token {
            token: token.clone(),
            start_after,
        });
        let retry = options.retry.clone();
        let watch = Watch {
            client: client.clone(),
            initial: initial.clone(),
            options: Arc::new(options),
            opened_after: None,
            txn: TxnCounter::default(),
            last_data: None,
            split: Reassembly::default(),
            reread: None,
        };
        if let Some(initial) = initial {
            control.control.reset(initial);
        }
        ChangeStreamSource {
            engine: Engine::new(watch, retry, control.control.clone()),
        }
    }

    /// See [`ChangeStreamControl::position`].
    pub fn position(&self) -> Option<ResumeToken> {
        self.control().position()
    }

    /// A remote control for this stream.
    pub fn control(&self) -> ChangeStreamControl {
        ChangeStreamControl {
            control: self.engine.control().clone(),
        }
    }
}

delegate_stream!(ChangeStreamSource, engine);

/// Events are read raw and only the fields an [`Op`] carries are decoded.
type RawStream = ChangeStream<RawDocumentBuf>;
type NextEvent = (RawStream, mongodb::error::Result<Option<RawDocumentBuf>>);

/// An open change stream. Each read owns the stream, as the driver's `PollState` does,
/// so a read pending on the server (and the driver's own resume inside it) survives
/// between polls; every read reuses one allocation.
struct Events {
    read: ReusableBoxFuture<'static, NextEvent>,
}

/// The next event, or `None` after an empty batch (`next_if_any`).
async fn next_event(mut stream: RawStream) -> NextEvent {
    let next = stream.next_if_any().await;
    (stream, next)
}

/// How a change stream opens, decodes and classifies; the [`Engine`] does the rest.
struct Watch {
    client: Client,
    options: Arc<ChangeStreamOptions>,
    /// The token the options start from.
    initial: Option<Resume>,
    /// The invalidate token the open stream started after: a post-batch token equal to it
    /// must be used with `startAfter` again.
    opened_after: Option<ResumeToken>,
    txn: TxnCounter,
    /// `_data` of the last event's resume token: an event at or before it is one this
    /// source delivered already (see [`Watch::delivered_before`]).
    last_data: Option<String>,
    /// The fragments of a split event read so far.
    split: Reassembly,
    /// The token of a fragment read without the fragments before it, which made the stream
    /// re-read from the event's cluster time: events before it are skipped until one
    /// reaches it (see [`Watch::reread_split_event`]).
    reread: Option<String>,
}

impl Watch {
    /// Whether `event` sorts at or before the last event delivered, and so was delivered
    /// already. The driver resumes a change stream by itself once after a resumable
    /// `getMore` error, from the token it cached; under fault storms that cache was seen
    /// to lag (a resumed stream repeated a first batch of events), so events are checked
    /// here. Resume tokens of one stream compare as their `_data` strings: hex of a
    /// KeyString, whose byte order is the events' order (server
    /// `src/mongo/db/pipeline/resume_token.h`: tokens compare by their `_data` bytes).
    fn delivered_before(&mut self, event: &RawDocumentBuf) -> bool {
        let data = event
            .get_document("_id")
            .ok()
            .and_then(|id| id.get_str("_data").ok());
        let Some(data) = data else {
            return false; // the decoder reports a missing token
        };
        if let Some(reread) = &self.reread {
            if data < reread.as_str() {
                return true;
            }
            self.reread = None;
        }
        if self.last_data.as_deref().is_some_and(|last| data <= last) {
            tracing::debug!(token = data, "skipping an event delivered before a resume");
            return true;
        }
        match &mut self.last_data {
            Some(last) => {
                last.clear();
                last.push_str(data);
            }
            None => self.last_data = Some(data.to_owned()),
        }
        false
    }

    /// A fragment whose earlier fragments were never read (the stream started from a
    /// fragment's token): re-open at the event's cluster time and deliver the events after
    /// that fragment's token, the split event among them, whole. Events at that time
    /// before it came before the token the stream started from and are skipped (the split
    /// event ends at or after the fragment, every earlier event before it).
    fn reread_split_event(&mut self, data: String) -> Decoded<Resume> {
        let ts = super::stats::data_time(&data);
        match ts {
            Some(ts) if self.reread.is_none() => {
                tracing::debug!(
                    token = data,
                    "started inside a split event: reading it again from its first fragment"
                );
                self.reread = Some(data);
                Decoded {
                    pos: Some(Resume::Time(ts)),
                    then: Then::Reopen,
                }
            }
            _ => Decoded::fail(
                None,
                event::malformed(format!(
                    "a fragment of a split event without the fragments before it (token \
                     {data}), and re-reading from the event's cluster time did not find them"
                )),
            ),
        }
    }

    fn token_pos(&self, token: ResumeToken) -> Resume {
        let start_after = self.opened_after.as_ref() == Some(&token);
        Resume::Token { token, start_after }
    }
}

impl Resumable for Watch {
    type Pos = Resume;
    type Cursor = Events;
    type Doc = RawDocumentBuf;

    const NAME: &'static str = "change stream";

    fn scope(&self) -> String {
        let ns = self.options.namespace.as_ref().map(ToString::to_string);
        ns.unwrap_or_else(|| "*".to_owned())
    }

    fn start(&mut self) -> BoxFuture<'static, Result<Option<Resume>>> {
        if let Some(token) = &self.initial {
            return std::future::ready(Ok(Some(token.clone()))).boxed();
        }
        let (client, start) = (self.client.clone(), self.options.start.clone());
        async move { Ok(resolve_start(client, start).await?.map(Resume::Time)) }.boxed()
    }

    fn open(&mut self, from: Option<Resume>) -> BoxFuture<'static, Result<Opened<Self>>> {
        self.opened_after = match &from {
            Some(Resume::Token {
                token,
                start_after: true,
            }) => Some(token.clone()),
            _ => None,
        };
        let (client, options) = (self.client.clone(), self.options.clone());
        let opened_after = self.opened_after.clone();
        async move {
            let stream = watch(&client, &options, from).await?;
            let pos = stream.resume_token().map(|token| Resume::Token {
                start_after: opened_after.as_ref() == Some(&token),
                token,
            });
            let events = Events {
                read: ReusableBoxFuture::new(next_event(stream)),
            };
            Ok((events, pos))
        }
        .boxed()
    }

    fn poll_read(
        &mut self,
        events: &mut Events,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Read<RawDocumentBuf, Resume>>> {
        let (stream, next) = ready!(events.read.poll(cx));
        let read = match next {
            Ok(Some(event)) => Ok(Read::Doc(event)),
            // An empty batch: the post-batch token moves the position, unless it stands
            // inside a split event.
            Ok(None) => {
                let pos = match self.split.is_partial() {
                    true => None,
                    false => stream.resume_token().map(|token| self.token_pos(token)),
                };
                if stream.is_alive() {
                    Ok(Read::Idle(pos))
                } else {
                    Ok(Read::Reopen {
                        pos,
                        after: Duration::ZERO,
                    })
                }
            }
            Err(e) => Err(Error::Driver(e)),
        };
        events.read.set(next_event(stream));
        Poll::Ready(read)
    }

    fn decode(&mut self, event: RawDocumentBuf, out: &mut VecDeque<Op>) -> Decoded<Resume> {
        let event = match self.options.splits() {
            false => event,
            true => match self.split.push(event) {
                Ok(Piece::Whole(event)) => event,
                Ok(Piece::Kept) => return Decoded::deliver(None),
                Ok(Piece::Orphan(data)) => return self.reread_split_event(data),
                Err(e) => return Decoded::fail(None, e),
            },
        };
        if self.delivered_before(&event) {
            return Decoded::deliver(None);
        }
        match decode_event(&event, &mut self.txn) {
            Ok(Event::Op(op)) => {
                // The event's `_id` is the position to resume after; the post-batch token
                // is read only when a batch runs out.
                let pos = match &op.position {
                    Position::ResumeToken(token) => Some(Resume::Token {
                        token: token.clone(),
                        start_after: false,
                    }),
                    _ => None,
                };
                out.push_back(op);
                Decoded::deliver(pos)
            }
            Ok(Event::Invalidate(token)) => {
                tracing::debug!("change stream invalidated; continuing with startAfter");
                Decoded {
                    pos: Some(Resume::Token {
                        token,
                        start_after: true,
                    }),
                    then: Then::Reopen,
                }
            }
            Err(e) => Decoded::fail(None, e),
        }
    }

    fn classify(&self, e: Error, at: Option<&Resume>) -> Verdict {
        let e = e.for_position(|| match at {
            Some(Resume::Token { token, .. }) => Position::ResumeToken(token.clone()),
            Some(Resume::Time(ts)) => Position::Oplog(*ts),
            None => Position::Oplog(Timestamp {
                time: 0,
                increment: 0,
            }),
        });
        // Only transient errors are retried (a bad pipeline fails at once); unlike the
        // driver, transient errors of the initial aggregate are retried too.
        Verdict::by_resumable(e)
    }

    fn seek(&mut self, ts: Timestamp) -> Option<Resume> {
        self.last_data = None; // a seek may go back: events before are wanted again
        self.split.clear();
        self.reread = None;
        Some(Resume::Time(just_after(ts)))
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

/// Opens the change stream `options` describe, from `from`.
async fn watch(
    client: &Client,
    o: &ChangeStreamOptions,
    from: Option<Resume>,
) -> Result<RawStream> {
    let db;
    let coll;
    let watch = match &o.namespace {
        None => client.watch(),
        Some(ns) if ns.is_database() => {
            db = client.database(ns.db());
            db.watch()
        }
        Some(ns) => {
            coll = client.database(ns.db()).collection::<Document>(ns.coll());
            coll.watch()
        }
    };
    let mut pipeline = o.pipeline.clone();
    if o.split_large_events && !pipeline.last().is_some_and(is_split_stage) {
        // The server wants it last (reference §5.1).
        pipeline.push(bson::doc! {SPLIT_STAGE: {}});
    }
    let mut watch = watch.pipeline(pipeline);
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
    watch = match from {
        Some(Resume::Token {
            token,
            start_after: true,
        }) => watch.start_after(token),
        Some(Resume::Token { token, .. }) => watch.resume_after(token),
        Some(Resume::Time(ts)) => watch.start_at_operation_time(ts),
        None => watch,
    };
    Ok(watch.await?.with_type::<RawDocumentBuf>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    const INSERT_TOKEN: &str =
        "82612E8513000000012B022C0100296E5A1004A5093ABB38FE4B9EA67F01BB1A96D812463C5F6964003C5F5F5F78000004";

    fn token(t: Document) -> ResumeToken {
        bson::from_document(t).unwrap()
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
}
