//! [`ClusterControl`]: the per-shard positions of a cluster stream, pause / resume, seek.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bson::Timestamp;
use futures::task::AtomicWaker;

use crate::checkpoint::OplogProgress;

/// What a stream shares with its controls.
#[derive(Default)]
pub(super) struct Shared {
    positions: Mutex<BTreeMap<String, OplogProgress>>,
    paused: AtomicBool,
    /// A seek request not applied yet.
    seek: Mutex<Option<Timestamp>>,
    pub(super) waker: AtomicWaker,
}

impl Shared {
    pub(super) fn publish(&self, positions: BTreeMap<String, OplogProgress>) {
        let old = std::mem::replace(
            &mut *self
                .positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            positions,
        );
        drop(old); // outside the lock
    }

    pub(super) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// The seek request, if any (taken: applied once).
    pub(super) fn take_seek(&self) -> Option<Timestamp> {
        self.seek
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A cloneable remote control of a [`ClusterStream`](super::ClusterStream): its
/// per-shard positions (for checkpoints), pause, resume and seek.
#[derive(Clone)]
pub struct ClusterControl {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for ClusterControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterControl")
            .field("positions", &self.positions())
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl ClusterControl {
    /// A control for a stream built later ([`ClusterStream::with_control`](super::ClusterStream::with_control)).
    pub(crate) fn detached() -> ClusterControl {
        ClusterControl {
            shared: Arc::new(Shared::default()),
        }
    }

    /// Per shard id, the `ts` of the last oplog entry all of whose ops the stream has
    /// yielded (entries that make no op, such as no-ops, filtered entries and chunk
    /// migrations, included): if every op yielded so far was handled, resuming from these
    /// positions ([`ClusterOptions::resume_from`](super::ClusterOptions::resume_from))
    /// loses and repeats nothing. A shard appears once its start point is resolved; a
    /// removed shard disappears once its tail has ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = mongosim::Cluster::start(
    /// #     mongosim::ClusterOptions::new().noop_interval(std::time::Duration::from_millis(100)),
    /// # )?;
    /// # let router = mongodb::Client::with_uri_str(cluster.uri()).await?;
    /// use futures::TryStreamExt;
    /// use mongotail::{cluster_time, ClusterOptions, ClusterStream, StartAt};
    ///
    /// let now = cluster_time(&router).await?;
    /// let mut ops = ClusterStream::new(&router, ClusterOptions::new().start(StartAt::After(now)));
    /// let control = ops.control();
    /// router.database("shop").collection::<bson::Document>("orders")
    ///     .insert_one(bson::doc! {"_id": 1}).await?;
    /// let op = ops.try_next().await?.expect("the insert");
    /// // Save these after handling `op`; restart with `ClusterOptions::resume_from(saved)`.
    /// let saved = control.positions();
    /// assert!(saved.values().all(|p| p.ts >= now));
    /// assert!(saved.values().any(|p| p.ts >= op.timestamp));
    /// # Ok(()) }
    /// ```
    pub fn positions(&self) -> BTreeMap<String, OplogProgress> {
        self.shared
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the stream from reading until [`ClusterControl::resume`]: its next poll is
    /// pending (the shards' cursors stay open; if the servers time them out, they are
    /// re-opened from their positions).
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::Release);
    }

    /// Resumes after [`ClusterControl::pause`].
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::Release);
        self.shared.waker.wake();
    }

    /// Whether the stream is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.is_paused()
    }

    /// Makes every shard's tail continue after `ts` (gtm's `Since`, one cluster time for
    /// all shards): on the next poll the shards' cursors are re-opened there, and the ops
    /// read but not yet yielded are discarded.
    pub fn seek(&self, ts: Timestamp) {
        *self
            .shared
            .seek
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ts);
        self.shared.waker.wake();
    }
}
