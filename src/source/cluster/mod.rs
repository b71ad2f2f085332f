//! Tailing a sharded cluster: one oplog tail per shard, merged into one stream in cluster
//! time order, following shards as they are added and removed (gtm's `StartMulti` and
//! `AddShardListener`, without their limits: reference sharded-clusters.md §7.3).
//!
//! - **Discovery** ([`ClusterStream::new`], given a client of a router): `listShards` gives
//!   the shards, `getShardMap` the config server; each replica set is connected with every
//!   host its `config.shards` entry lists, so a shard's elections are followed. Or the
//!   shards are given ([`ClusterStream::from_shards`], gtm's `StartMulti`).
//! - **Decoding** is the oplog source's, per shard, with every [`OplogOptions`] option:
//!   transactions, including the two-phase commits of cross-shard transactions (a prepared
//!   `applyOps` becomes ops when its `commitTransaction` arrives, never when aborted);
//!   `fromMigrate` entries of chunk migrations and no-ops never become ops.
//! - **Order:** an op from one shard is released only when every other shard's tail (and the
//!   config server's, see below) has read past its `ts`; each shard's last entry or no-op is
//!   its watermark. An idle shard therefore holds the stream back until its next periodic
//!   no-op (`periodicNoopIntervalSecs`, 10 s by default on a real server), as it holds back a
//!   change stream through a router. Ops of different shards with the same `ts` go by their
//!   index inside a transaction, then by shard. Buffering is bounded by
//!   [`ClusterOptions::max_buffered_ops`] per shard.
//! - **New and removed shards:** the config server's oplog is followed (inserts into and
//!   deletes from `config.shards`); a new shard is tailed from the time it was added, and the
//!   merged stream waits for the config server's tail to pass an op's `ts` before releasing
//!   it, so no shard is discovered too late. A removed shard's tail ends after its entries up
//!   to the removal (or after [`ClusterOptions::removed_shard_grace`] if the shard went away
//!   first). When the config server cannot be reached, `listShards` is asked through
//!   the router every [`ClusterOptions::shard_poll_interval`] instead (existing shards go on;
//!   new ones start from their `topologyTime`).
//! - **Faults:** an unreachable shard is retried with backoff (forever by default) and the
//!   merged stream waits for it; a shard whose position is gone ends the stream with
//!   [`Error::PositionLost`] at a
//!   [`Position::Shard`](crate::Position::Shard) naming it.
//! - **Positions:** every op carries [`Position::Shard`](crate::Position::Shard);
//!   [`ClusterControl::positions`] gives the per-shard positions to checkpoint, and
//!   [`ClusterOptions::resume_from`] resumes every shard from them, including shards added
//!   while the process was down.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let cluster = mongosim::Cluster::start(
//! #     mongosim::ClusterOptions::new().shards(2).noop_interval(std::time::Duration::from_millis(100)),
//! # )?;
//! # let uri = cluster.uri();
//! use bson::doc;
//! use futures::TryStreamExt;
//! use mongotail::{cluster_time, ClusterOptions, ClusterStream, Namespace, Position, StartAt};
//!
//! let router = mongodb::Client::with_uri_str(&uri).await?; // a mongos
//! let admin = router.database("admin");
//! admin.run_command(doc! {"shardCollection": "shop.orders", "key": {"_id": "hashed"}}).await?;
//!
//! let options = ClusterOptions::new()
//!     .namespace(Namespace::parse("shop.orders")?)
//!     .start(StartAt::After(cluster_time(&router).await?));
//! let mut ops = ClusterStream::new(&router, options);
//! let orders = router.database("shop").collection::<bson::Document>("orders");
//! for i in 0..4 {
//!     orders.insert_one(doc! {"_id": i}).await?; // hashed: both shards get some
//! }
//! let mut times = Vec::new();
//! for _ in 0..4 {
//!     let op = ops.try_next().await?.expect("an insert");
//!     assert!(matches!(op.position, Position::Shard { .. }));
//!     times.push(op.timestamp);
//! }
//! assert!(times.windows(2).all(|w| w[0] < w[1]), "in cluster time order");
//! let positions = ops.control().positions(); // checkpoint these
//! assert_eq!(positions.len(), 2);
//! # Ok(()) }
//! ```

mod control;
mod discover;
mod merge;
mod options;
mod shard;
mod topology;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{FusedStream, Stream};
use futures::FutureExt;
use mongodb::Client;

use self::control::Shared;
use self::discover::{connect, discover, Discovered, ShardDoc};
use self::merge::pick;
use self::shard::ShardTail;
use self::topology::{Change, Topology};
use crate::checkpoint::OplogProgress;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::source::oplog::OplogOptions;
use crate::source::start_at::StartAt;

pub use self::control::ClusterControl;
pub use self::options::ClusterOptions;

enum Phase {
    /// Finding the shards through the router.
    Discovering(BoxFuture<'static, Result<Discovered>>),
    Running,
    Done,
}

/// The per-shard oplog tails of a sharded cluster as one `Stream<Item = Result<Op>>` in
/// cluster time order (see the [module docs](self)). Ops have
/// [`Source::Oplog`](crate::Source::Oplog) and a [`Position::Shard`](crate::Position::Shard).
///
/// Pull-based like every source: nothing is read while the stream is not polled, and
/// dropping it closes every cursor.
#[must_use = "streams do nothing unless polled"]
pub struct ClusterStream {
    phase: Phase,
    tails: Vec<ShardTail>,
    topology: Topology,
    options: ClusterOptions,
    shared: Arc<Shared>,
}

impl fmt::Debug for ClusterStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Discovering(_) => "discovering",
            Phase::Running => "running",
            Phase::Done => "done",
        };
        f.debug_struct("ClusterStream")
            .field("phase", &phase)
            .field("shards", &self.tails)
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl ClusterStream {
    /// Tails every shard of the cluster `router` (a client of one or more mongos) routes
    /// for; the shards and the config server are found on the first poll.
    ///
    /// The shards and the config server are connected with
    /// [`ClusterOptions::client_options`]: set it (credentials, TLS) when the cluster needs
    /// them, since the driver does not hand the router client's own options back.
    pub fn new(router: &Client, options: ClusterOptions) -> ClusterStream {
        ClusterStream::with_control(router, options, &ClusterControl::detached())
    }

    /// [`ClusterStream::new`] driven through an existing control (made before the stream).
    pub(crate) fn with_control(
        router: &Client,
        options: ClusterOptions,
        control: &ClusterControl,
    ) -> ClusterStream {
        let retry = options.oplog.retry.clone();
        let discovery = discover(
            router.clone(),
            options.follow_shards,
            options.client_options.clone(),
            retry,
        );
        let mut stream = ClusterStream::with_options(options, control);
        stream.phase = Phase::Discovering(discovery.boxed());
        stream
    }

    /// Tails the given shards, each a client of its replica set with its shard id
    /// (gtm's `StartMulti`), for deployments where no router is reachable. The shard list
    /// is fixed unless [`ClusterStream::follow_config_server`] is called
    /// ([`ClusterOptions::follow_shards`] does not apply).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = mongosim::Cluster::start(
    /// #     mongosim::ClusterOptions::new().noop_interval(std::time::Duration::from_millis(100)),
    /// # )?;
    /// # let (router_uri, uri0, uri1) = (cluster.uri(), cluster.shard_uri(0), cluster.shard_uri(1));
    /// use futures::TryStreamExt;
    /// use mongodb::Client;
    /// use mongotail::{cluster_time, ClusterOptions, ClusterStream, Position, StartAt};
    ///
    /// // Each shard's replica set, e.g. "mongodb://h1,h2/?replicaSet=shard01".
    /// let shards = [
    ///     ("shard01", Client::with_uri_str(&uri0).await?),
    ///     ("shard02", Client::with_uri_str(&uri1).await?),
    /// ];
    /// # let router = Client::with_uri_str(&router_uri).await?;
    /// # let start = StartAt::After(cluster_time(&router).await?);
    /// let mut ops = ClusterStream::from_shards(shards, ClusterOptions::new().start(start));
    /// # router.database("shop").collection::<bson::Document>("orders")
    /// #     .insert_one(bson::doc! {"_id": 1}).await?;
    /// let op = ops.try_next().await?.expect("an op");
    /// assert!(matches!(op.position, Position::Shard { .. }));
    /// # Ok(()) }
    /// ```
    pub fn from_shards<I, S>(shards: I, options: ClusterOptions) -> ClusterStream
    where
        I: IntoIterator<Item = (S, Client)>,
        S: Into<String>,
    {
        let shards: Vec<(String, Client)> =
            shards.into_iter().map(|(id, c)| (id.into(), c)).collect();
        let mut stream = ClusterStream::with_options(options, &ClusterControl::detached());
        for (id, client) in shards {
            let oplog = stream.options.shard_oplog(&id, None, None);
            stream.add_tail(id, &client, oplog);
        }
        stream
    }

    /// Follows shards added to and removed from the cluster through its config server
    /// (`config`: a client of the config server's replica set), gtm's `AddShardListener`,
    /// for a stream built with [`ClusterStream::from_shards`]: a shard added later is tailed
    /// from the time it was added (connected with [`ClusterOptions::client_options`]), and
    /// the merged stream waits for the config server's tail as it does for
    /// [`ClusterStream::new`]. The config server is followed from the shards' start when
    /// that is [`StartAt::After`], else from its newest entry; a stream from
    /// [`ClusterStream::new`] follows it already.
    pub fn follow_config_server(mut self, config: &Client) -> ClusterStream {
        let start = match self.options.oplog.start {
            Some(StartAt::After(ts)) if self.options.resume_from.is_empty() => StartAt::After(ts),
            _ => StartAt::Latest,
        };
        self.topology = Topology::follow(
            config,
            start,
            None,
            self.options.shard_poll_interval,
            self.options.oplog.max_await_time,
        );
        self
    }

    fn with_options(options: ClusterOptions, control: &ClusterControl) -> ClusterStream {
        ClusterStream {
            phase: Phase::Running,
            tails: Vec::new(),
            topology: Topology::Fixed,
            options,
            shared: control.shared.clone(),
        }
    }

    /// A remote control: per-shard positions, pause, resume.
    pub fn control(&self) -> ClusterControl {
        ClusterControl {
            shared: self.shared.clone(),
        }
    }

    /// See [`ClusterControl::positions`].
    pub fn positions(&self) -> BTreeMap<String, OplogProgress> {
        self.control().positions()
    }

    /// The ids of the shards being tailed.
    pub fn shards(&self) -> Vec<String> {
        self.tails.iter().map(|t| t.id.clone()).collect()
    }

    fn add_tail(&mut self, id: String, client: &Client, oplog: OplogOptions) {
        tracing::debug!(shard = %id, "tailing shard");
        self.tails.push(ShardTail::new(id, client, oplog));
    }

    /// Connects to a shard found by discovery or by the topology and tails it.
    fn add_shard(&mut self, doc: ShardDoc, oplog: OplogOptions) -> Result<()> {
        if self.tails.iter().any(|t| t.id == doc.id) {
            return Ok(());
        }
        let client = connect(&doc.host, self.options.client_options.as_ref())?;
        self.add_tail(doc.id, &client, oplog);
        Ok(())
    }

    /// The shards are known: tail them, and follow the config server or the router.
    fn begin(&mut self, d: Discovered) -> Result<()> {
        let interval = self.options.shard_poll_interval;
        self.topology = match (d.config, d.router) {
            (Some((config, from)), router) => Topology::follow(
                &config,
                StartAt::After(from),
                router,
                interval,
                self.options.oplog.max_await_time,
            ),
            (None, Some(router)) if self.options.follow_shards => {
                Topology::poll(router, interval, interval)
            }
            _ => Topology::Fixed,
        };
        for doc in d.shards {
            let oplog = self.options.shard_oplog(&doc.id, doc.added, Some(d.now));
            self.add_shard(doc, oplog)?;
        }
        self.phase = Phase::Running;
        Ok(())
    }

    /// Applies shard list changes.
    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        for change in changes {
            match change {
                Change::Added(doc) => {
                    tracing::info!(shard = %doc.id, added = ?doc.added, "new shard");
                    let start = doc.added.map_or(StartAt::Latest, StartAt::After);
                    let oplog = self.options.oplog.clone().start(start);
                    let oplog = oplog.filter_on_server(self.options.server_filter);
                    self.add_shard(doc, oplog)?;
                }
                Change::Removed { id, at } => {
                    tracing::info!(shard = %id, removed = ?at, "shard removed");
                    if let Some(t) = self.tails.iter_mut().find(|t| t.id == id) {
                        t.end_after(at, self.options.removed_shard_grace);
                    }
                }
            }
        }
        Ok(())
    }

    /// The next op that may go out, if any; releases position marks on the way.
    fn release(&mut self) -> (Option<Op>, bool) {
        let mut moved = false;
        for t in &mut self.tails {
            moved |= t.release_marks();
        }
        let lanes = self.tails.iter().map(ShardTail::lane);
        let op = pick(lanes, self.topology.bound()).and_then(|i| {
            let tail = &mut self.tails[i];
            let op = tail.pop();
            moved |= tail.release_marks();
            op
        });
        (op, moved)
    }

    /// Publishes the positions for the controls, once a removed shard's tail is gone.
    fn publish(&mut self) {
        let gone = |t: &ShardTail| t.is_finished() && t.is_removed();
        if self.tails.iter().any(gone) {
            self.tails.retain(|t| !gone(t));
        }
        let positions = self
            .tails
            .iter()
            .filter_map(|t| Some((t.id.clone(), OplogProgress::new(t.position()?))))
            .collect();
        self.shared.publish(positions);
    }

    /// One poll while running: follow the topology, read every shard, release an op.
    fn poll_running(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Op>>> {
        if let Some(ts) = self.shared.take_seek() {
            self.tails.iter_mut().for_each(|t| t.seek(ts));
        }
        let known: BTreeSet<String> = match self.topology {
            Topology::Poll { .. } => self.tails.iter().map(|t| t.id.clone()).collect(),
            _ => BTreeSet::new(), // only a listShards answer is compared with them
        };
        let mut changes = Vec::new();
        self.topology.poll_changes(cx, &known, &mut changes);
        if let Err(e) = self.apply(changes) {
            // A new shard that cannot be tailed: going on would skip its writes.
            self.phase = Phase::Done;
            return Poll::Ready(Some(Err(e)));
        }
        let cap = self.options.max_buffered_ops;
        for t in &mut self.tails {
            if let Some(e) = t.fill(cx, cap) {
                if !matches!(e, Error::Malformed { .. }) {
                    // The shard's tail has ended: going on would skip past it.
                    self.phase = Phase::Done;
                }
                return Poll::Ready(Some(Err(e)));
            }
        }
        let (op, moved) = self.release();
        if moved || self.tails.iter().any(ShardTail::is_finished) {
            self.publish();
        }
        if let Some(op) = op {
            return Poll::Ready(Some(Ok(op)));
        }
        if matches!(self.topology, Topology::Fixed) && self.tails.iter().all(ShardTail::is_finished)
        {
            self.phase = Phase::Done;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Stream for ClusterStream {
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.shared.is_paused() {
            this.shared.waker.register(cx.waker());
            if this.shared.is_paused() {
                return Poll::Pending;
            }
        }
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Discovering(f) => {
                    let found = futures::ready!(f.as_mut().poll(cx));
                    if let Err(e) = found.and_then(|d| this.begin(d)) {
                        this.phase = Phase::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Phase::Running => {
                    let poll = this.poll_running(cx);
                    if poll.is_pending() {
                        // Resume wakes this waker.
                        this.shared.waker.register(cx.waker());
                    }
                    return poll;
                }
            }
        }
    }
}

impl FusedStream for ClusterStream {
    fn is_terminated(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready, task};

    #[test]
    fn pause_holds_the_stream_and_resume_wakes_it() {
        let no_shards: Vec<(String, Client)> = Vec::new();
        let stream = ClusterStream::from_shards(no_shards, ClusterOptions::new());
        let control = stream.control();
        let mut stream = task::spawn(stream);
        control.pause();
        assert!(control.is_paused());
        assert_pending!(stream.poll_next());
        control.resume();
        assert!(stream.is_woken());
        // No shard at all: the stream ends.
        assert!(assert_ready!(stream.poll_next()).is_none());
        assert!(stream.is_terminated());
        assert!(control.positions().is_empty());
    }
}
