//! Saving checkpoints: [`CheckpointOptions`] and the task that saves the low watermark
//! every N acknowledgements, every T, at stop and on [`Handle::flush`](crate::Handle::flush).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::track::Tracker;
use super::{Checkpoint, CheckpointStore};
use crate::error::Result;

/// How [`start`](crate::start) keeps its checkpoint: where, under which name, how often it
/// saves, and how many ops may wait for their acknowledgement. Set with
/// [`TailOptions::checkpoint`](crate::TailOptions::checkpoint).
///
/// ```
/// use std::time::Duration;
/// use mongotail::checkpoint::{CheckpointOptions, MemoryStore, PositionLostPolicy};
/// use mongotail::TailOptions;
///
/// let checkpoint = CheckpointOptions::new(MemoryStore::new(), "indexer")
///     .save_every(500)
///     .save_interval(Duration::from_secs(5))
///     .max_outstanding(2_000)
///     .on_position_lost(PositionLostPolicy::Reread);
/// let options = TailOptions::new().checkpoint_options(checkpoint);
/// assert_eq!(options.checkpoint.map(|c| c.save_every), Some(500));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct CheckpointOptions {
    /// Where the checkpoint is kept.
    pub store: Arc<dyn CheckpointStore>,
    /// Its name in the store (one per tailing application).
    pub name: String,
    /// Save after this many acknowledgements. Default 1,000.
    pub save_every: u64,
    /// Save at least this often while acknowledgements come in (and to record an idle
    /// source's progress). Default 1 s.
    pub save_interval: Duration,
    /// Most ops delivered and not yet acknowledged; at the limit the sources wait (the
    /// stream returns `Pending`) until acknowledgements make room. Default 10,000.
    pub max_outstanding: usize,
    /// Warn when the stream has waited this long at [`CheckpointOptions::max_outstanding`]
    /// (an op that is never acknowledged holds its source's checkpoint, and with it the
    /// stream, forever). Default 60 s.
    pub stall_warning: Duration,
    /// What a live source does when its stored position is gone from the server.
    /// Default [`PositionLostPolicy::Fail`].
    pub on_position_lost: PositionLostPolicy,
}

impl fmt::Debug for CheckpointOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointOptions")
            .field("name", &self.name)
            .field("save_every", &self.save_every)
            .field("save_interval", &self.save_interval)
            .field("max_outstanding", &self.max_outstanding)
            .field("stall_warning", &self.stall_warning)
            .field("on_position_lost", &self.on_position_lost)
            .finish_non_exhaustive()
    }
}

impl CheckpointOptions {
    /// The checkpoint `name` in `store`, with the default limits.
    pub fn new(store: impl CheckpointStore + 'static, name: impl Into<String>) -> Self {
        CheckpointOptions::shared(Arc::new(store), name)
    }

    /// The same, with a store shared with other code.
    pub fn shared(store: Arc<dyn CheckpointStore>, name: impl Into<String>) -> Self {
        CheckpointOptions {
            store,
            name: name.into(),
            save_every: 1_000,
            save_interval: Duration::from_secs(1),
            max_outstanding: 10_000,
            stall_warning: Duration::from_secs(60),
            on_position_lost: PositionLostPolicy::Fail,
        }
    }

    /// Sets [`CheckpointOptions::save_every`] (at least 1).
    pub fn save_every(mut self, n: u64) -> Self {
        self.save_every = n.max(1);
        self
    }

    /// Sets [`CheckpointOptions::save_interval`].
    pub fn save_interval(mut self, every: Duration) -> Self {
        self.save_interval = every;
        self
    }

    /// Sets [`CheckpointOptions::max_outstanding`] (at least 1).
    pub fn max_outstanding(mut self, n: usize) -> Self {
        self.max_outstanding = n.max(1);
        self
    }

    /// Sets [`CheckpointOptions::on_position_lost`].
    pub fn on_position_lost(mut self, policy: PositionLostPolicy) -> Self {
        self.on_position_lost = policy;
        self
    }

    /// Sets [`CheckpointOptions::stall_warning`].
    pub fn stall_warning(mut self, after: Duration) -> Self {
        self.stall_warning = after;
        self
    }
}

/// What to do when a live source's stored position is no longer on the server (the oplog
/// rolled over it, the change-stream history is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PositionLostPolicy {
    /// Yield [`Error::PositionLost`](crate::Error::PositionLost) and end that source (the default): nothing is skipped
    /// silently, the application decides.
    #[default]
    Fail,
    /// Re-read every collection the source covers directly and continue live from a
    /// cluster time taken before the read: changes made while the position was lost arrive
    /// as the documents' current state (`Source::Direct`), later ones as ops. A warning is
    /// logged; the error is not yielded.
    Reread,
}

/// Saves a [`Tracker`]'s checkpoint: one save at a time, each newer than the last.
pub(crate) struct Saver {
    pub(crate) tracker: Arc<Tracker>,
    options: CheckpointOptions,
    /// The last checkpoint saved (unchanged ones are not saved again).
    last: tokio::sync::Mutex<Option<Checkpoint>>,
    /// Set (with a wake-up) when the stream stops: the task saves once more and ends.
    stopping: AtomicBool,
    stop: tokio::sync::Notify,
}

impl fmt::Debug for Saver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saver")
            .field("options", &self.options)
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl Saver {
    pub(crate) fn new(options: CheckpointOptions) -> Saver {
        let tracker = Tracker::new(
            Checkpoint::new(),
            options.max_outstanding,
            options.save_every,
        );
        Saver {
            tracker: Arc::new(tracker),
            options,
            last: tokio::sync::Mutex::new(None),
            stopping: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn options(&self) -> &CheckpointOptions {
        &self.options
    }

    /// The checkpoint in the store (`None`: a first start).
    pub(crate) async fn load(&self) -> Result<Option<Checkpoint>> {
        self.options.store.load(&self.options.name).await
    }

    /// Saves the current low watermark now. `false` when there is nothing to save yet
    /// (before the checkpoint was loaded, or while a live source has no position).
    pub(crate) async fn save_now(&self) -> Result<bool> {
        let mut last = self.last.lock().await;
        let acked = self.tracker.take_acked();
        let Some(cp) = self.tracker.snapshot() else {
            return Ok(false);
        };
        if last.as_ref() != Some(&cp) {
            if let Err(e) = self.options.store.save(&self.options.name, &cp).await {
                self.tracker.add_acked(acked); // still due
                return Err(e);
            }
            *last = Some(cp);
        }
        Ok(true)
    }

    /// Tells the saving task to save once more and end.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_one();
    }

    /// The saving task: every `save_every` acknowledgements or `save_interval`, and once
    /// more at stop.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut waiting_since: Option<Instant> = None;
        let mut warned = false;
        loop {
            tokio::select! {
                () = self.tracker.save_due.notified() => {}
                () = tokio::time::sleep(self.options.save_interval) => {}
                () = self.stop.notified() => {}
            }
            let stopping = self.stopping.load(Ordering::Acquire);
            if let Err(e) = self.save_now().await {
                tracing::warn!(checkpoint = %self.options.name, error = %e, "checkpoint not saved");
            }
            if stopping {
                return;
            }
            self.watch_stall(&mut waiting_since, &mut warned);
        }
    }

    /// Warns once when the stream has waited at the outstanding limit for `stall_warning`.
    fn watch_stall(&self, since: &mut Option<Instant>, warned: &mut bool) {
        if self.tracker.outstanding() < self.options.max_outstanding {
            (*since, *warned) = (None, false);
            return;
        }
        let since = *since.get_or_insert_with(Instant::now);
        if !*warned && since.elapsed() >= self.options.stall_warning {
            *warned = true;
            let (lane, waiting) = self.tracker.most_waiting().unzip();
            tracing::warn!(
                checkpoint = %self.options.name,
                outstanding = self.tracker.outstanding(),
                lane = ?lane,
                waiting = ?waiting,
                "the stream waits for acknowledgements: is an op never acknowledged?"
            );
        }
    }
}
