//! [`start`]: the oplog, change streams and direct reads from one [`TailOptions`] value,
//! merged into one [`OpStream`], plus a cloneable [`Handle`] (gtm's `Start`).
//!
//! Everything is pull-based: no task is spawned, the sources read from the server only
//! while the [`OpStream`] is polled, so a stalled consumer stalls the reads and memory
//! stays bounded by the cursors' current batches (each source holds at most one batch;
//! direct reads hold one per range being read). Dropping the stream (or
//! [`Handle::stop`]) drops every source, which closes its server cursors.
//!
//! The stream owns its sources and shares only flags with its [`Handle`]s (and each live
//! source its own position, seek and pause requests): a handle never waits for a poll, not
//! even one stuck on the server or decoding a large batch.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bson::Timestamp;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{BoxStream, FusedStream, SelectAll, Stream, StreamExt};
use futures::task::AtomicWaker;
use mongodb::change_stream::event::ResumeToken;
use mongodb::Client;
use tokio::sync::watch;

mod checkpointed;
mod reread;

use crate::checkpoint::{CheckpointOptions, CheckpointStore, Saver};
use crate::error::{Error, Result};
use crate::op::{Namespace, Op};
use crate::source::change_stream::{ChangeStreamControl, ChangeStreamOptions, ChangeStreamSource};
use crate::source::cluster::{ClusterControl, ClusterOptions, ClusterStream};
use crate::source::direct::{DirectOptions, DirectReads};
use crate::source::oplog::{OplogControl, OplogOptions, OplogStream};
use crate::source::start_at::{cluster_time, StartAt};
use crate::source::stats::{DirectCounters, SourceState, SourceStats, Stats};

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
    /// Per-shard oplog tailing of a sharded cluster, through a router client (see
    /// [`ClusterStream`]). Default `None`.
    pub cluster: Option<ClusterOptions>,
    /// Where every live source starts unless it sets its own
    /// ([`OplogOptions::start`], [`ChangeStreamOptions::start`], a change stream's resume
    /// token); exclusive for all of them (see [`StartAt`]). Default [`StartAt::Latest`].
    pub start: StartAt,
    /// Durable progress: ops carry acknowledgements, the low watermark of every source is
    /// saved in a store, and a restart resumes from it (see [`TailOptions::checkpoint`]).
    /// Default `None`.
    pub checkpoint: Option<CheckpointOptions>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            oplog: Some(OplogOptions::default()),
            change_streams: Vec::new(),
            direct: None,
            cluster: None,
            start: StartAt::Latest,
            checkpoint: None,
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

    /// Tails every shard of the sharded cluster `start`'s client routes for (a mongos) with
    /// these options, merged in cluster time order ([`ClusterStream`]), and disables the
    /// oplog source (a router has no oplog). Unless the options set a start point or
    /// resume positions, [`TailOptions::start`] applies, [`StartAt::Latest`] meaning the
    /// router's current cluster time for every shard. For a change stream through the
    /// router instead, use [`TailOptions::watch`] or [`TailOptions::watch_deployment`].
    /// [`Handle::since`] seeks every shard; [`Handle::cluster`] gives its positions.
    pub fn cluster(mut self, options: ClusterOptions) -> Self {
        self.cluster = Some(options);
        self.disable_oplog()
    }

    /// Sets the direct-read options.
    pub fn direct(mut self, options: DirectOptions) -> Self {
        self.direct = Some(options);
        self
    }

    /// Keeps durable progress in `store` under `name` (default save and back-pressure
    /// limits; see [`CheckpointOptions`] and [`TailOptions::checkpoint_options`]).
    ///
    /// Every op then carries an acknowledgement ([`Op::ack`]): call it when the application
    /// has finished with the op, from any task and in any order. Per source, the stored
    /// position is the low watermark: just before the oldest op not yet acknowledged. A
    /// later [`start`] with the same store and name resumes every source from there: the
    /// oplog after its timestamp (inside a transaction, after the last acknowledged op of
    /// it), each change stream from its token, and direct reads in their unfinished `_id`
    /// ranges, skipping finished collections.
    ///
    /// **The guarantee: at least once.** Every change is delivered at least once across
    /// restarts. An acknowledged op is delivered again only if the process died before its
    /// acknowledgement was saved (at most [`CheckpointOptions::save_every`] acknowledgements
    /// or [`CheckpointOptions::save_interval`] of them; [`Handle::flush`] saves now), or if
    /// an older op of its source was not acknowledged then. For exactly-once output, save
    /// your output and the checkpoint together: implement
    /// [`CheckpointStore`](crate::checkpoint::CheckpointStore) on your own database and write
    /// the checkpoint in the transaction that writes the output.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
    /// # let client = mongodb::Client::with_uri_str(sim.uri()).await?;
    /// use futures::TryStreamExt;
    /// use mongotail::checkpoint::{CheckpointStore, MemoryStore};
    /// use mongotail::{start, Namespace, OplogOptions, StartAt, TailOptions};
    ///
    /// let orders = client.database("shop").collection::<bson::Document>("orders");
    /// orders.insert_many((0..3).map(|i| bson::doc! {"_id": i})).await?;
    /// let oplog = OplogOptions::new()
    ///     .start(StartAt::Earliest)
    ///     .namespace(Namespace::parse("shop.orders")?);
    /// let store = MemoryStore::new();
    /// let options = TailOptions::new().oplog(oplog).checkpoint(store.clone(), "indexer");
    ///
    /// let (mut ops, handle) = start(&client, options.clone());
    /// let mut first = ops.try_next().await?.expect("the implicit create");
    /// first.ack(); // done with it
    /// handle.flush().await?; // saved: a restart continues after it
    /// handle.stop();
    ///
    /// let (mut ops, handle) = start(&client, options);
    /// let next = ops.try_next().await?.expect("an insert");
    /// assert!(next.is_insert(), "the acknowledged create is not delivered again");
    /// # handle.stop();
    /// # Ok(()) }
    /// ```
    pub fn checkpoint(
        self,
        store: impl CheckpointStore + 'static,
        name: impl Into<String>,
    ) -> Self {
        self.checkpoint_options(CheckpointOptions::new(store, name))
    }

    /// Sets [`TailOptions::checkpoint`] with its limits.
    pub fn checkpoint_options(mut self, options: CheckpointOptions) -> Self {
        self.checkpoint = Some(options);
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

/// What an [`OpStream`] shares with its handles: flags the stream reads between polls and
/// the waker of a pending poll. No lock: a handle never waits for a poll.
#[derive(Default)]
struct Shared {
    /// [`Handle::pause`]: the stream polls no source.
    paused: AtomicBool,
    /// [`Handle::stop`], a drop, or every source ended.
    stopped: AtomicBool,
    waker: AtomicWaker,
}

/// The merged stream of every source [`start`] started. Ends when every source ended, or
/// after [`Handle::stop`]. Dropping it releases everything.
///
/// The stream owns its sources: nothing a [`Handle`] does waits for a poll, and a poll
/// never waits for a handle.
#[must_use = "streams do nothing unless polled"]
pub struct OpStream {
    /// `None` once stopped or ended: dropping the sources closes their cursors.
    sources: Option<SelectAll<BoxStream<'static, Result<Op>>>>,
    /// The sources of a checkpointed start, built once the checkpoint is loaded.
    loading: Option<BoxFuture<'static, Vec<BoxStream<'static, Result<Op>>>>>,
    shared: Arc<Shared>,
    /// The checkpoint's saver, and whether its task was spawned (at the first poll, inside
    /// the caller's Tokio runtime).
    saver: Option<(Arc<Saver>, bool)>,
}

impl OpStream {
    /// Spawns the saving task on the first poll; a stream polled outside a Tokio runtime
    /// saves only on [`Handle::flush`].
    fn spawn_saver(&mut self) {
        let Some((saver, spawned @ false)) = &mut self.saver else {
            return;
        };
        *spawned = true;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(saver.clone().run())),
            Err(_) => tracing::warn!(
                checkpoint = %saver.options().name,
                "polled outside a Tokio runtime: the checkpoint is saved only by Handle::flush"
            ),
        }
    }

    /// The stream ended: the saving task saves once more and ends.
    fn stop_saver(&self) {
        if let Some((saver, _)) = &self.saver {
            saver.stop();
        }
    }
}

impl fmt::Debug for OpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpStream")
            .field("sources", &self.sources.as_ref().map(SelectAll::len))
            .field("paused", &self.shared.paused.load(Ordering::Relaxed))
            .field("stopped", &self.shared.stopped.load(Ordering::Relaxed))
            .finish()
    }
}

impl Stream for OpStream {
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.spawn_saver();
        loop {
            if this.shared.stopped.load(Ordering::Acquire) {
                if this.sources.take().is_some() {
                    this.stop_saver();
                }
                return Poll::Ready(None);
            }
            let Some(sources) = this.sources.as_mut() else {
                return Poll::Ready(None);
            };
            let paused = this.shared.paused.load(Ordering::Acquire);
            if let Some(loading) = this.loading.as_mut().filter(|_| !paused) {
                if let Poll::Ready(loaded) = loading.poll_unpin(cx) {
                    this.loading = None;
                    sources.extend(loaded);
                }
            }
            if !paused && this.loading.is_none() {
                match sources.poll_next_unpin(cx) {
                    Poll::Ready(None) => {
                        this.shared.stopped.store(true, Ordering::Release);
                        continue;
                    }
                    Poll::Ready(item) => return Poll::Ready(item),
                    Poll::Pending => {}
                }
            }
            // Handles wake this waker; what they did before it was registered is seen by
            // looking again.
            this.shared.waker.register(cx.waker());
            let resumed = paused && !this.shared.paused.load(Ordering::Acquire);
            if !resumed && !this.shared.stopped.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.sources {
            Some(sources) => (0, sources.size_hint().1),
            None => (0, Some(0)),
        }
    }
}

impl FusedStream for OpStream {
    fn is_terminated(&self) -> bool {
        self.sources.is_none()
    }
}

impl Drop for OpStream {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.stop_saver();
    }
}

/// Controls an [`OpStream`]: pause, resume, seek, stop, and wait for direct reads. Clone
/// it freely; it keeps nothing alive after the stream is dropped except itself.
///
/// No method waits for the stream: each sets what the stream (and its sources) read at
/// their next poll and wakes a pending poll, so a handle may be used from any thread, while
/// a poll is stuck on the server, and from inside a [`StartAt::Func`] function.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    /// The sources' controls, their names and the client.
    controls: Controls,
    direct_done: watch::Receiver<bool>,
    saver: Option<Arc<Saver>>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("oplog", &self.controls.oplog)
            .field("change_streams", &self.controls.change_streams.len())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Stops reading every source, direct reads included, until [`Handle::resume`]: the
    /// stream returns `Pending` and no source is polled (server cursors stay open; if they
    /// time out they are re-opened from the last position on resume). For gtm's `Pause`,
    /// which lets direct reads go on, see [`Handle::pause_live`].
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::Release);
    }

    /// Stops reading the live sources (the oplog and the change streams) until
    /// [`Handle::resume`], while direct reads go on: gtm's `Pause`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
    /// # let client = mongodb::Client::with_uri_str(sim.uri()).await?;
    /// use futures::TryStreamExt;
    /// use mongotail::{start, Namespace, OplogOptions, TailOptions};
    ///
    /// let orders = client.database("shop").collection::<bson::Document>("orders");
    /// orders.insert_many((0..3).map(|i| bson::doc! {"_id": i})).await?;
    /// let ns = Namespace::parse("shop.orders")?;
    /// let (mut ops, handle) = start(
    ///     &client,
    ///     TailOptions::new().oplog(OplogOptions::new().namespace(ns.clone())).direct_read(ns),
    /// );
    /// handle.pause_live();
    /// for _ in 0..3 {
    ///     let op = ops.try_next().await?.expect("a copied document");
    ///     assert!(op.is_source_direct()); // the copy goes on, the oplog waits
    /// }
    /// handle.resume();
    /// # Ok(()) }
    /// ```
    pub fn pause_live(&self) {
        self.live(OplogControl::pause, ChangeStreamControl::pause);
        self.controls.cluster.iter().for_each(ClusterControl::pause);
    }

    /// Resumes after [`Handle::pause`] or [`Handle::pause_live`].
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::Release);
        self.live(OplogControl::resume, ChangeStreamControl::resume);
        self.controls
            .cluster
            .iter()
            .for_each(ClusterControl::resume);
        self.shared.waker.wake();
    }

    /// Whether the stream is paused, by [`Handle::pause`] or [`Handle::pause_live`].
    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Ordering::Acquire)
            || self
                .controls
                .oplog
                .as_ref()
                .is_some_and(OplogControl::is_paused)
            || self
                .controls
                .cluster
                .as_ref()
                .is_some_and(ClusterControl::is_paused)
            || self
                .controls
                .change_streams
                .iter()
                .any(ChangeStreamControl::is_paused)
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
        self.live(|o| o.seek(ts), |c| c.seek(ts));
        self.controls.cluster.iter().for_each(|c| c.seek(ts));
        Ok(())
    }

    /// Ends the stream: its next poll (woken now, even if it waits on the server) yields
    /// `None` and drops every source, which closes its server cursors; so does dropping
    /// the stream. Idempotent.
    ///
    /// Poll or drop the stream inside a Tokio runtime: the driver closes cursors with a
    /// task it spawns on the current runtime.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.waker.wake();
        if let Some(saver) = &self.saver {
            saver.stop();
        }
    }

    /// Saves the checkpoint now ([`TailOptions::checkpoint`]): every source's low
    /// watermark, as far as the ops delivered so far were acknowledged. Works after
    /// [`Handle::stop`] too: acknowledge what you finished, then flush before exiting.
    ///
    /// Nothing is saved before the checkpoint was loaded at the first poll, nor while a
    /// live source has no position yet (it has not opened): a checkpoint saved then could
    /// skip changes on restart.
    ///
    /// # Errors
    /// [`Error::Config`] when the stream keeps no checkpoint; the store's error when the
    /// save fails.
    pub async fn flush(&self) -> Result<()> {
        let Some(saver) = &self.saver else {
            return Err(Error::Config(
                "no checkpoint to flush: set TailOptions::checkpoint".into(),
            ));
        };
        saver.save_now().await.map(drop)
    }

    /// What every source is doing: state, last op's cluster and wall time, lag, ops
    /// delivered, retries and last error; direct-read progress per collection; ops waiting
    /// for their acknowledgement. The lag needs the server's cluster time: this asks the
    /// server for it (`ping`), waiting at most 2 s (else the lag is `None`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
    /// # let client = mongodb::Client::with_uri_str(sim.uri()).await?;
    /// use futures::TryStreamExt;
    /// use mongotail::{cluster_time, start, Namespace, OplogOptions, StartAt, TailOptions};
    ///
    /// let ns = Namespace::parse("shop.orders")?;
    /// // From a time taken now (not "from now": that start point is taken at the first
    /// // poll, which may come after the insert below).
    /// let oplog = OplogOptions::new().namespace(ns).start(StartAt::After(cluster_time(&client).await?));
    /// let (mut ops, handle) = start(&client, TailOptions::new().oplog(oplog));
    /// let orders = client.database("shop").collection::<bson::Document>("orders");
    /// let reader = tokio::spawn(async move { ops.try_next().await });
    /// orders.insert_one(bson::doc! {"_id": 1}).await?;
    /// reader.await??;
    /// let stats = handle.stats().await;
    /// let oplog = &stats.sources[0];
    /// assert_eq!((oplog.source.as_str(), oplog.ops), ("oplog", 1));
    /// assert!(oplog.lag.is_some() && oplog.last_op_time.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Stats {
        let server = match &self.controls.client {
            Some(client) => {
                let ask = tokio::time::timeout(Duration::from_secs(2), cluster_time(client));
                ask.await.ok().and_then(Result::ok)
            }
            None => None,
        };
        let mut sources: Vec<SourceStats> = self
            .controls
            .oplog
            .iter()
            .map(|o| o.stats(server))
            .collect();
        let streams = self
            .controls
            .change_streams
            .iter()
            .zip(&self.controls.names);
        sources.extend(streams.map(|(c, name)| c.stats(name.clone(), server)));
        if self.is_stopped() {
            sources
                .iter_mut()
                .for_each(|s| s.state = SourceState::Stopped);
        }
        Stats::new(sources, self.controls.direct.snapshot(), self.outstanding())
    }

    /// Resolves once every live source (oplog, change streams, cluster shards) has
    /// delivered everything written before the call: it takes the server's cluster time,
    /// then waits until each source has read up to it (ops, or the no-ops and filtered
    /// entries that move its position). The stream must be polled meanwhile. An idle source
    /// may wait for the server's next periodic no-op (10 s by default on MongoDB).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
    /// # let client = mongodb::Client::with_uri_str(sim.uri()).await?;
    /// use futures::StreamExt;
    /// use mongotail::{cluster_time, start, StartAt, TailOptions};
    ///
    /// // From a time taken now: a stream started "from now" takes its start point when
    /// // first polled, which may come after the insert below.
    /// let now = cluster_time(&client).await?;
    /// let (mut ops, handle) = start(&client, TailOptions::new().start(StartAt::After(now)));
    /// let reader = tokio::spawn(async move { while let Some(Ok(_)) = ops.next().await {} });
    /// let orders = client.database("shop").collection::<bson::Document>("orders");
    /// orders.insert_one(bson::doc! {"_id": 1}).await?;
    /// handle.caught_up().await?; // the insert has been delivered
    /// assert!(handle.stats().await.sources[0].ops >= 1);
    /// handle.stop();
    /// reader.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Stopped`] if the stream stops first; the driver's error if the cluster time
    /// cannot be read; [`Error::Config`] for a handle without a client (none here).
    pub async fn caught_up(&self) -> Result<()> {
        let Some(client) = &self.controls.client else {
            return Err(Error::Config("caught_up needs the stream's client".into()));
        };
        let target = cluster_time(client).await?;
        loop {
            if self.is_stopped() {
                return Err(Error::Stopped);
            }
            let oplog = self
                .controls
                .oplog
                .iter()
                .all(|o| o.position() >= Some(target));
            let streams = self.controls.change_streams.iter().all(|c| {
                let at = c.position();
                at.as_ref().and_then(crate::source::stats::token_time) >= Some(target)
            });
            let cluster = self.controls.cluster.iter().all(|c| {
                let positions = c.positions();
                !positions.is_empty() && positions.values().all(|p| p.ts >= target)
            });
            if oplog && streams && cluster {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ops delivered and not yet acknowledged (0 without a checkpoint).
    pub fn outstanding(&self) -> usize {
        self.saver.as_ref().map_or(0, |s| s.tracker.outstanding())
    }

    /// Whether the stream has stopped (by [`Handle::stop`], drop, or because every source
    /// ended).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// The `ts` of the last oplog entry delivered, when the oplog source runs.
    pub fn oplog_position(&self) -> Option<Timestamp> {
        self.controls.oplog.as_ref().and_then(|o| o.position())
    }

    /// The control of the sharded-cluster source ([`TailOptions::cluster`]), for its
    /// per-shard positions.
    pub fn cluster(&self) -> Option<&ClusterControl> {
        self.controls.cluster.as_ref()
    }

    /// The cached resume token of each change stream, in the order of
    /// [`TailOptions::change_streams`] (`None` until that stream has opened). Refreshed on
    /// empty batches, so an idle stream's token keeps moving forward.
    pub fn resume_tokens(&self) -> Vec<Option<ResumeToken>> {
        self.controls
            .change_streams
            .iter()
            .map(|c| c.position())
            .collect()
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

    /// Applies `oplog` and `change_stream` to the control of every live source.
    fn live(&self, oplog: impl Fn(&OplogControl), change_stream: impl Fn(&ChangeStreamControl)) {
        self.controls.oplog.iter().for_each(oplog);
        self.controls.change_streams.iter().for_each(change_stream);
    }
}

/// Marks direct reads done when the wrapped stream ends.
struct DoneOnEnd {
    inner: BoxStream<'static, Result<Op>>,
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
/// **Snapshot, then live, with no gap.** When direct reads run with live sources that start
/// from now (no [`TailOptions::start`] or per-source start set), the live sources start just
/// after one cluster time taken before the first direct read, so every change made while the
/// collections are read arrives as an op. A document changed during the read can therefore
/// arrive twice: once as read (`op.source == Source::Direct`, in whatever state the read
/// found it) and once per change (`Source::Oplog` / `Source::ChangeStream`); the live ops
/// come in order and the last one tells the final state.
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
pub fn start(client: &Client, mut options: TailOptions) -> (OpStream, Handle) {
    let snapshot = snapshot_start(client, &mut options);
    let controls = Controls::for_options(client, &options);
    let (tx, rx) = watch::channel(false);
    let saver = options.checkpoint.take().map(|c| Arc::new(Saver::new(c)));
    let (sources, loading) = match &saver {
        None => (build(client, options, snapshot, &controls, None, tx), None),
        Some(saver) => {
            let resumed = checkpointed::resume(
                client.clone(),
                options,
                snapshot,
                controls.clone(),
                saver.clone(),
                tx,
            );
            (Vec::new(), Some(resumed))
        }
    };
    let (mut stream, handle) = assemble(sources.into_iter().collect(), controls, rx, saver);
    stream.loading = loading;
    (stream, handle)
}

/// The controls of the live sources, made before the sources (which a checkpoint delays
/// until it is loaded) so that a [`Handle`] has them at once.
#[derive(Clone)]
struct Controls {
    oplog: Option<OplogControl>,
    change_streams: Vec<ChangeStreamControl>,
    /// What [`Handle::stats`] calls each change stream.
    names: Vec<String>,
    direct: Arc<DirectCounters>,
    client: Option<Client>,
    cluster: Option<ClusterControl>,
}

impl Controls {
    fn for_options(client: &Client, options: &TailOptions) -> Controls {
        let scopes = checkpointed::scopes(&options.change_streams);
        Controls {
            oplog: options.oplog.as_ref().map(|_| OplogControl::detached()),
            change_streams: options
                .change_streams
                .iter()
                .map(|_| ChangeStreamControl::detached())
                .collect(),
            names: scopes
                .into_iter()
                .map(|s| match s.as_str() {
                    "" => "change stream deployment".to_owned(),
                    scope => format!("change stream {scope}"),
                })
                .collect(),
            direct: Arc::default(),
            client: Some(client.clone()),
            cluster: options.cluster.as_ref().map(|_| ClusterControl::detached()),
        }
    }
}

/// Every source of `options`, driven through `controls`; with `tracking`, their ops carry
/// acknowledgements and each source resumes where the checkpoint says.
fn build(
    client: &Client,
    options: TailOptions,
    snapshot: Option<Arc<SnapshotStart>>,
    controls: &Controls,
    tracking: Option<&checkpointed::Tracking>,
    direct_done: watch::Sender<bool>,
) -> Vec<BoxStream<'static, Result<Op>>> {
    let mut sources = Vec::new();
    if let (Some(mut o), Some(control)) = (options.oplog, &controls.oplog) {
        o.start.get_or_insert_with(|| options.start.clone());
        let s = OplogStream::with_control(client, o.clone(), control).boxed();
        sources.push(match tracking {
            Some(t) => t.oplog(s, control, o),
            None => s,
        });
    }
    if let (Some(mut c), Some(control)) = (options.cluster, &controls.cluster) {
        if c.oplog.start.is_none() && !matches!(options.start, StartAt::Latest) {
            c.oplog.start = Some(options.start.clone());
        }
        let s = ClusterStream::with_control(client, c, control).boxed();
        sources.push(match tracking {
            Some(t) => t.cluster(s, control),
            None => s,
        });
    }
    let scopes = checkpointed::scopes(&options.change_streams);
    let streams = options
        .change_streams
        .into_iter()
        .zip(&controls.change_streams);
    for (index, ((mut cs, control), scope)) in streams.zip(scopes).enumerate() {
        cs.start.get_or_insert_with(|| options.start.clone());
        let s = ChangeStreamSource::with_control(client, cs.clone(), control).boxed();
        sources.push(match tracking {
            Some(t) => t.change_stream(s, control, index, scope, cs),
            None => s,
        });
    }
    match options.direct {
        Some(d) if !d.namespaces.is_empty() => {
            let tracker = tracking.map(checkpointed::Tracking::tracker);
            let direct = DirectReads::counted(client, d, tracker, controls.direct.clone());
            let s = DoneOnEnd {
                inner: match snapshot {
                    Some(snapshot) => after_snapshot_start(snapshot, direct),
                    None => direct.boxed(),
                },
                done: Some(direct_done),
            };
            sources.push(s.boxed());
        }
        _ => {
            direct_done.send_replace(true);
        }
    }
    sources
}

/// The start point live sources share with direct reads (snapshot, then live, with no
/// gap): a cluster time taken once, by whichever source is polled first, before the first
/// direct read.
struct SnapshotStart {
    client: Client,
    taken: tokio::sync::OnceCell<std::result::Result<Timestamp, String>>,
}

impl SnapshotStart {
    /// The shared start (concurrent callers wait for the one request).
    pub(super) async fn take(&self) -> Result<Timestamp> {
        self.taken
            .get_or_init(|| async { cluster_time(&self.client).await.map_err(|e| e.to_string()) })
            .await
            .clone()
            .map_err(Error::Config)
    }
}

/// When direct reads run with live sources that start from now (no start set), makes every
/// live source start just after one cluster time taken before the first direct read, so
/// that each change made while the collections are read arrives as an op. Returns the
/// shared start for the direct reads to wait on.
fn snapshot_start(client: &Client, options: &mut TailOptions) -> Option<Arc<SnapshotStart>> {
    let direct = options
        .direct
        .as_ref()
        .is_some_and(|d| !d.namespaces.is_empty());
    let live =
        options.oplog.is_some() || !options.change_streams.is_empty() || options.cluster.is_some();
    // With a checkpoint, live sources starting from now share the start too: it is saved
    // before the first op, so a restart never skips what came after it.
    let shared = direct || options.checkpoint.is_some();
    if !shared || !live || !matches!(options.start, StartAt::Latest) {
        return None;
    }
    let snapshot = Arc::new(SnapshotStart {
        client: client.clone(),
        taken: tokio::sync::OnceCell::new(),
    });
    let shared = snapshot.clone();
    options.start = StartAt::func(move |_| {
        let shared = shared.clone();
        async move { shared.take().await }
    });
    Some(snapshot)
}

/// `direct`, started once the live sources' start point is taken. If it cannot be taken the
/// live sources report why and the reads go on.
fn after_snapshot_start(
    snapshot: Arc<SnapshotStart>,
    direct: DirectReads,
) -> BoxStream<'static, Result<Op>> {
    futures::stream::once(async move {
        let _ = snapshot.take().await;
        direct
    })
    .flatten()
    .boxed()
}

fn assemble(
    sources: SelectAll<BoxStream<'static, Result<Op>>>,
    controls: Controls,
    direct_done: watch::Receiver<bool>,
    saver: Option<Arc<Saver>>,
) -> (OpStream, Handle) {
    let shared = Arc::new(Shared::default());
    let handle = Handle {
        shared: shared.clone(),
        controls,
        direct_done,
        saver: saver.clone(),
    };
    let stream = OpStream {
        sources: Some(sources),
        loading: None,
        shared,
        saver: saver.map(|s| (s, false)),
    };
    (stream, handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use std::sync::mpsc;
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
        let controls = Controls {
            oplog: None,
            change_streams: Vec::new(),
            names: Vec::new(),
            direct: Arc::default(),
            client: None,
            cluster: None,
        };
        assemble(sources.into_iter().collect(), controls, rx, None)
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
    fn pause_live_leaves_the_merged_stream_running() {
        let (s, handle) = pair(vec![ops(2)]);
        let mut s = task::spawn(s);
        handle.pause_live(); // no live source here: everything keeps flowing
        assert!(!handle.is_paused());
        assert!(assert_ready!(s.poll_next()).is_some());
        handle.pause();
        assert!(handle.is_paused());
        assert_pending!(s.poll_next());
        handle.stop();
        assert!(s.is_woken(), "stop wakes a paused stream");
        assert!(assert_ready!(s.poll_next()).is_none());
    }

    /// A source whose poll holds on inside the poll until told to go on.
    fn held_poll() -> (
        BoxStream<'static, Result<Op>>,
        mpsc::Receiver<()>,
        mpsc::Sender<()>,
    ) {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let source = stream::poll_fn(move |_| {
            let _ = entered_tx.send(());
            let _ = release_rx.recv();
            Poll::Ready(None)
        });
        (source.boxed(), entered, release)
    }

    #[test]
    fn handle_calls_do_not_wait_for_a_poll_in_progress() {
        let (source, entered, release) = held_poll();
        let (s, handle) = pair(vec![source]);
        let poller = std::thread::spawn(move || futures::executor::block_on(s.into_future()).0);
        entered.recv().unwrap(); // the poll is now inside the source
        let (done_tx, done) = mpsc::channel();
        let caller = std::thread::spawn(move || {
            let ts = bson::Timestamp {
                time: 1,
                increment: 1,
            };
            handle.pause();
            assert!(handle.is_paused());
            handle.pause_live();
            handle.resume();
            assert!(!handle.is_paused());
            handle.since(ts).unwrap();
            assert_eq!(handle.oplog_position(), None);
            assert!(handle.resume_tokens().is_empty());
            assert!(!handle.is_stopped());
            futures::executor::block_on(handle.direct_reads_done()).unwrap();
            handle.stop();
            assert!(handle.is_stopped());
            let _ = done_tx.send(());
        });
        // Generous: the calls take microseconds; a call waiting for the poll never returns.
        let answered = done.recv_timeout(std::time::Duration::from_secs(10));
        release.send(()).unwrap();
        caller.join().unwrap();
        assert!(answered.is_ok(), "a handle call waited for the poll");
        assert!(poller.join().unwrap().is_none());
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
