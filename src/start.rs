//! [`start`]: the oplog, change streams and direct reads from one [`TailOptions`] value,
//! merged into one [`OpStream`], plus a cloneable [`Handle`] (gtm's `Start`).
//!
//! Everything is pull-based: no task is spawned, the sources read from the server only
//! while the [`OpStream`] is polled, so a stalled consumer stalls the reads and memory
//! stays bounded by the cursors' current batches (each source holds at most one batch;
//! direct reads hold one per range being read). Dropping the stream (or
//! [`Handle::stop`]) drops every source, which closes its server cursors.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bson::Timestamp;
use futures::stream::{BoxStream, FusedStream, SelectAll, Stream, StreamExt};
use mongodb::change_stream::event::ResumeToken;
use mongodb::Client;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::op::{Namespace, Op};
use crate::source::change_stream::{ChangeStreamControl, ChangeStreamOptions, ChangeStreamSource};
use crate::source::direct::{DirectOptions, DirectReads};
use crate::source::oplog::{OplogControl, OplogOptions, OplogStream};
use crate::source::start_at::StartAt;

/// What [`start`] reads: the oplog (on by default), any number of change streams, and
/// direct reads.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TailOptions {
    /// The oplog source. Default `Some(OplogOptions::default())`: tail everything from
    /// now. `None` disables it.
    pub oplog: Option<OplogOptions>,
    /// Change streams, one per scope. Default empty.
    pub change_streams: Vec<ChangeStreamOptions>,
    /// Direct reads. Default `None`.
    pub direct: Option<DirectOptions>,
    /// Where every live source starts unless it sets its own
    /// ([`OplogOptions::start`], [`ChangeStreamOptions::start`], a change stream's resume
    /// token); exclusive for all of them (see [`StartAt`]). Default [`StartAt::Latest`].
    pub start: StartAt,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            oplog: Some(OplogOptions::default()),
            change_streams: Vec::new(),
            direct: None,
            start: StartAt::Latest,
        }
    }
}

impl TailOptions {
    /// The defaults: tail the whole oplog from now.
    pub fn new() -> Self {
        TailOptions::default()
    }

    /// Sets the oplog source's options (and enables it).
    pub fn oplog(mut self, options: OplogOptions) -> Self {
        self.oplog = Some(options);
        self
    }

    /// Disables the oplog source.
    pub fn disable_oplog(mut self) -> Self {
        self.oplog = None;
        self
    }

    /// Adds a change stream with the given options.
    pub fn change_stream(mut self, options: ChangeStreamOptions) -> Self {
        self.change_streams.push(options);
        self
    }

    /// Watches `ns` (a collection `db.coll` or a database `db`) with a change stream of
    /// default options, and disables the oplog source, as setting gtm's `ChangeStreamNs`
    /// does (call [`TailOptions::oplog`] afterwards to keep both).
    pub fn watch(self, ns: Namespace) -> Self {
        self.disable_oplog()
            .change_stream(ChangeStreamOptions::new().namespace(ns))
    }

    /// Watches the whole deployment with a change stream and disables the oplog source.
    pub fn watch_deployment(self) -> Self {
        self.disable_oplog()
            .change_stream(ChangeStreamOptions::new())
    }

    /// Sets [`TailOptions::start`]: where the oplog and the change streams start unless
    /// they set their own (gtm's `After`, which applies to both).
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Sets the direct-read options.
    pub fn direct(mut self, options: DirectOptions) -> Self {
        self.direct = Some(options);
        self
    }

    /// Adds a collection or view to read directly (with default direct-read options
    /// otherwise).
    pub fn direct_read(mut self, ns: Namespace) -> Self {
        let direct = self.direct.take().unwrap_or_default();
        self.direct = Some(direct.namespace(ns));
        self
    }
}

struct State {
    sources: Option<SelectAll<BoxStream<'static, Result<Op>>>>,
    paused: bool,
    waker: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the sources (outside the lock) and wakes the consumer.
    fn stop(&self) {
        let (sources, waker) = {
            let mut st = self.lock();
            (st.sources.take(), st.waker.take())
        };
        drop(sources);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The merged stream of every source [`start`] started. Ends when every source ended, or
/// after [`Handle::stop`]. Dropping it releases everything.
#[must_use = "streams do nothing unless polled"]
pub struct OpStream {
    shared: Arc<Shared>,
}

impl fmt::Debug for OpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("OpStream")
            .field("sources", &st.sources.as_ref().map(|s| s.len()))
            .field("paused", &st.paused)
            .finish()
    }
}

impl Stream for OpStream {
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.shared.lock();
        if st.paused && st.sources.is_some() {
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        st.waker = Some(cx.waker().clone());
        let Some(sources) = st.sources.as_mut() else {
            return Poll::Ready(None);
        };
        match sources.poll_next_unpin(cx) {
            Poll::Ready(None) => {
                let done = st.sources.take();
                drop(st);
                drop(done);
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.shared.lock().sources {
            Some(sources) => (0, sources.size_hint().1),
            None => (0, Some(0)),
        }
    }
}

impl FusedStream for OpStream {
    fn is_terminated(&self) -> bool {
        self.shared.lock().sources.is_none()
    }
}

impl Drop for OpStream {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// Controls an [`OpStream`]: pause, resume, seek, stop, and wait for direct reads. Clone
/// it freely; it keeps nothing alive after the stream is dropped except itself.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    oplog: Option<OplogControl>,
    change_streams: Vec<ChangeStreamControl>,
    direct_done: watch::Receiver<bool>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("oplog", &self.oplog)
            .field("change_streams", &self.change_streams.len())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Stops reading until [`Handle::resume`]: the stream returns `Pending` and no source
    /// is polled (server cursors stay open; if they time out they are re-opened from the
    /// last position on resume).
    pub fn pause(&self) {
        self.shared.lock().paused = true;
    }

    /// Resumes after [`Handle::pause`].
    pub fn resume(&self) {
        let waker = {
            let mut st = self.shared.lock();
            st.paused = false;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the stream is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.lock().paused
    }

    /// Seeks the live sources (oplog and change streams) to the changes after `ts`
    /// (gtm's `Since`). Ops already read but not yet delivered are discarded.
    ///
    /// # Errors
    /// [`Error::Stopped`] after [`Handle::stop`] or once the stream is dropped.
    pub fn since(&self, ts: Timestamp) -> Result<()> {
        if self.is_stopped() {
            return Err(Error::Stopped);
        }
        if let Some(o) = &self.oplog {
            o.seek(ts);
        }
        for c in &self.change_streams {
            c.seek(ts);
        }
        Ok(())
    }

    /// Ends the stream: it yields `None` on its next poll, and every source is dropped
    /// now, closing its server cursors. Idempotent.
    ///
    /// Call it (and drop the stream) inside a Tokio runtime: the driver closes cursors
    /// with a task it spawns on the current runtime.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Whether the stream has stopped (by [`Handle::stop`], drop, or because every source
    /// ended).
    pub fn is_stopped(&self) -> bool {
        self.shared.lock().sources.is_none()
    }

    /// The `ts` of the last oplog entry delivered, when the oplog source runs.
    pub fn oplog_position(&self) -> Option<Timestamp> {
        self.oplog.as_ref().and_then(|o| o.position())
    }

    /// The cached resume token of each change stream, in the order of
    /// [`TailOptions::change_streams`] (`None` until that stream has opened). Refreshed on
    /// empty batches, so an idle stream's token keeps moving forward.
    pub fn resume_tokens(&self) -> Vec<Option<ResumeToken>> {
        self.change_streams.iter().map(|c| c.position()).collect()
    }

    /// Resolves when every direct read has completed (gtm's `DirectReadWg`), immediately
    /// when there are none. The stream must be polled for the reads to progress.
    ///
    /// # Errors
    /// [`Error::Stopped`] when the stream was stopped or dropped before the direct reads
    /// completed.
    pub async fn direct_reads_done(&self) -> Result<()> {
        let mut rx = self.direct_done.clone();
        let done = rx.wait_for(|done| *done).await.map(|_| ());
        done.map_err(|_| Error::Stopped)
    }
}

/// Marks direct reads done when the wrapped stream ends.
struct DoneOnEnd {
    inner: DirectReads,
    done: Option<watch::Sender<bool>>,
}

impl Stream for DoneOnEnd {
    type Item = Result<Op>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = poll {
            if let Some(tx) = self.done.take() {
                tx.send_replace(true);
            }
        }
        poll
    }
}

/// Starts every source of `options` and merges them (gtm's `Start`).
///
/// Nothing is sent to the server before the stream is first polled.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
/// # let uri = sim.uri();
/// use futures::TryStreamExt;
/// use mongotail::{start, Namespace, TailOptions};
///
/// let client = mongodb::Client::with_uri_str(&uri).await?;
/// let orders = client.database("shop").collection::<bson::Document>("orders");
/// orders.insert_many((0..3).map(|i| bson::doc! {"_id": i})).await?;
///
/// // Copy the collection once; no oplog: the stream ends after the copy.
/// let options = TailOptions::new()
///     .disable_oplog()
///     .direct_read(Namespace::parse("shop.orders")?);
/// let (ops, handle) = start(&client, options);
/// let (copied, done) = tokio::join!(ops.try_collect::<Vec<_>>(), handle.direct_reads_done());
/// assert_eq!(copied?.len(), 3);
/// done?;
/// # Ok(()) }
/// ```
pub fn start(client: &Client, options: TailOptions) -> (OpStream, Handle) {
    let mut sources: SelectAll<BoxStream<'static, Result<Op>>> = SelectAll::new();
    let mut oplog = None;
    if let Some(mut o) = options.oplog {
        o.start.get_or_insert_with(|| options.start.clone());
        let s = OplogStream::new(client, o);
        oplog = Some(s.control());
        sources.push(s.boxed());
    }
    let mut change_streams = Vec::new();
    for mut cs in options.change_streams {
        cs.start.get_or_insert_with(|| options.start.clone());
        let s = ChangeStreamSource::new(client, cs);
        change_streams.push(s.control());
        sources.push(s.boxed());
    }
    let (tx, rx) = watch::channel(false);
    match options.direct {
        Some(d) if !d.namespaces.is_empty() => {
            let s = DoneOnEnd {
                inner: DirectReads::new(client, d),
                done: Some(tx),
            };
            sources.push(s.boxed());
        }
        _ => {
            tx.send_replace(true);
        }
    }
    assemble(sources, oplog, change_streams, rx)
}

fn assemble(
    sources: SelectAll<BoxStream<'static, Result<Op>>>,
    oplog: Option<OplogControl>,
    change_streams: Vec<ChangeStreamControl>,
    direct_done: watch::Receiver<bool>,
) -> (OpStream, Handle) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            sources: Some(sources),
            paused: false,
            waker: None,
        }),
    });
    let handle = Handle {
        shared: shared.clone(),
        oplog,
        change_streams,
        direct_done,
    };
    (OpStream { shared }, handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use tokio_test::{assert_pending, assert_ready, task};

    fn ops(n: i32) -> BoxStream<'static, Result<Op>> {
        let ns = Namespace::parse("a.b").unwrap();
        stream::iter((0..n).map(move |i| {
            Ok(Op::new(
                crate::OpKind::Insert,
                ns.clone(),
                Some(bson::Bson::Int32(i)),
            ))
        }))
        .boxed()
    }

    fn pair(sources: Vec<BoxStream<'static, Result<Op>>>) -> (OpStream, Handle) {
        let (tx, rx) = watch::channel(true);
        drop(tx);
        assemble(sources.into_iter().collect(), None, Vec::new(), rx)
    }

    #[test]
    fn pause_returns_pending_and_resume_wakes() {
        let (s, handle) = pair(vec![ops(2)]);
        let mut s = task::spawn(s);
        assert!(assert_ready!(s.poll_next()).is_some());
        handle.pause();
        assert_pending!(s.poll_next());
        assert!(!s.is_woken());
        handle.resume();
        assert!(s.is_woken());
        assert!(assert_ready!(s.poll_next()).is_some());
        assert!(assert_ready!(s.poll_next()).is_none());
        assert!(handle.is_stopped());
        assert!(s.is_terminated());
        assert_eq!(s.size_hint(), (0, Some(0)));
    }

    #[test]
    fn stop_wakes_a_pending_consumer_and_is_idempotent() {
        let (s, handle) = pair(vec![stream::pending().boxed()]);
        let mut s = task::spawn(s);
        assert_pending!(s.poll_next());
        handle.stop();
        assert!(s.is_woken());
        assert!(assert_ready!(s.poll_next()).is_none());
        handle.stop();
        assert!(matches!(
            handle.since(bson::Timestamp {
                time: 1,
                increment: 1
            }),
            Err(Error::Stopped)
        ));
    }

    #[test]
    fn merges_every_source_and_drop_stops() {
        let (s, handle) = pair(vec![ops(3), ops(4)]);
        let all: Vec<_> = futures::executor::block_on(s.collect::<Vec<_>>());
        assert_eq!(all.len(), 7);
        assert!(handle.is_stopped());
        let (s, handle) = pair(vec![stream::pending().boxed()]);
        assert!(!handle.is_stopped());
        drop(s);
        assert!(handle.is_stopped());
    }
}
