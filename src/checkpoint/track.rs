//! Acknowledgement tracking: which delivered ops the application has finished with, and
//! from that the low watermark of every source, the position a checkpoint may store.
//!
//! Every source [`start`](crate::start) runs is one or more *lanes*: the oplog, each change
//! stream, each `_id` range of a direct read, each shard of a cluster. A lane keeps its
//! delivered ops in delivery order with an acknowledged flag; acknowledging the oldest ones
//! moves the lane's *base* (the position just after them) forward. The stored position of a
//! lane is its base: everything before it was acknowledged, the op after it was not. When
//! every op of a lane is acknowledged and the source has gone idle, the position the source
//! itself reports (moved by no-ops and filtered entries) is used instead, so a quiet tail's
//! checkpoint keeps moving and never falls off the oplog.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;

use bson::{Bson, Document, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use parking_lot::Mutex;

use super::{Checkpoint, DirectProgress, OplogProgress, RangeProgress};
use crate::op::{Op, Position};

/// What a lane is, and so where its position goes in a [`Checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LaneKey {
    /// The oplog source: [`Checkpoint::oplog`].
    Oplog,
    /// A change stream, by scope: [`Checkpoint::change_streams`].
    ChangeStream(String),
    /// Range `index` of the direct read of `ns`: [`Checkpoint::direct`].
    Range { ns: String, index: usize },
    /// One shard of a cluster: [`Checkpoint::shards`].
    Shard(String),
    /// A cluster stream before its shards have lanes: its start time,
    /// [`Checkpoint::cluster_start`].
    Cluster,
    /// A lane whose progress was forgotten (a direct read started over): in no checkpoint.
    Retired,
}

impl LaneKey {
    /// Whether the lane is a live source, whose position a checkpoint must hold before it
    /// may be saved (a direct read alone must never be saved without the live position it
    /// pairs with).
    fn is_live(&self) -> bool {
        !matches!(self, LaneKey::Range { .. } | LaneKey::Retired)
    }
}

/// A lane's position after an op.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mark {
    Oplog(OplogProgress),
    Token(ResumeToken),
    /// A change stream's start time, before it has a token.
    Time(Timestamp),
    /// The `_id` of a document read directly (ranges are read in `_id` order).
    Id(Bson),
}

impl Mark {
    /// The mark of `op` for a lane of kind `key`; `None` when the op carries none (it then
    /// moves nothing when acknowledged).
    pub(crate) fn of(op: &Op, key: &LaneKey) -> Option<Mark> {
        let index = op.txn.as_ref().map(|t| t.index);
        match (&op.position, key) {
            (Position::Oplog(ts), _) | (Position::Shard { ts, .. }, _) => {
                Some(Mark::Oplog(OplogProgress { ts: *ts, index }))
            }
            (Position::ResumeToken(token), _) => Some(Mark::Token(token.clone())),
            (Position::Direct, LaneKey::Range { .. }) => op.id.clone().map(Mark::Id),
            _ => None,
        }
    }
}

struct Entry {
    mark: Option<Mark>,
    acked: bool,
    /// Not an op: where the source stood when it went idle after the ops before it.
    idle: bool,
}

/// One lane: its outstanding ops in delivery order and its positions.
struct Lane {
    key: LaneKey,
    /// Ops delivered and not yet folded into `base`; `entries[0]` has sequence `front`.
    entries: VecDeque<Entry>,
    front: u64,
    /// The position just after every op before `entries[0]` (or where the lane started,
    /// or where its source last went idle).
    base: Option<Mark>,
    /// The source will deliver no more ops (a direct-read range read to its end).
    ended: bool,
}

impl Lane {
    fn watermark(&self) -> Option<&Mark> {
        self.base.as_ref()
    }

    /// The newest position known: of the last op delivered, else the base.
    fn newest(&self) -> Option<&Mark> {
        match self.entries.back() {
            Some(entry) => entry.mark.as_ref(),
            None => self.base.as_ref(),
        }
    }

    /// Folds acknowledged ops at the front into `base`.
    fn advance(&mut self) {
        while self.entries.front().is_some_and(|e| e.acked) {
            if let Some(mark) = self.entries.pop_front().and_then(|e| e.mark) {
                self.base = Some(mark);
            }
            self.front += 1;
        }
    }
}

/// A lane's state as a checkpoint sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LaneState {
    pub(crate) key: LaneKey,
    pub(crate) position: Option<Mark>,
    /// Ended and every op acknowledged.
    pub(crate) finished: bool,
}

/// The acknowledgement tracker of one [`start`](crate::start): every lane, the count of
/// outstanding ops (bounded: sources wait while it is at the limit) and the count of
/// acknowledgements since the last save.
pub(crate) struct Tracker {
    /// The checkpoint loaded at start, with the direct-read plans made since: positions of
    /// sources not running now are kept as they were.
    base: Mutex<Checkpoint>,
    /// The base was loaded (or found missing): before that nothing may be saved.
    loaded: AtomicBool,
    lanes: Mutex<Vec<Lane>>,
    outstanding: AtomicUsize,
    max_outstanding: usize,
    acked: AtomicU64,
    /// Sources waiting for room (`blocked` says whether any does, to keep acks lock-free
    /// of this list when none waits).
    waiting: Mutex<Vec<Waker>>,
    blocked: AtomicBool,
    /// Woken every `save_every` acknowledgements.
    pub(crate) save_due: tokio::sync::Notify,
    save_every: u64,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("lanes", &self.lanes.lock().len())
            .field("outstanding", &self.outstanding())
            .field("max_outstanding", &self.max_outstanding)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    pub(crate) fn new(base: Checkpoint, max_outstanding: usize, save_every: u64) -> Tracker {
        Tracker {
            base: Mutex::new(base),
            loaded: AtomicBool::new(false),
            lanes: Mutex::new(Vec::new()),
            outstanding: AtomicUsize::new(0),
            max_outstanding: max_outstanding.max(1),
            acked: AtomicU64::new(0),
            waiting: Mutex::new(Vec::new()),
            blocked: AtomicBool::new(false),
            save_due: tokio::sync::Notify::new(),
            save_every: save_every.max(1),
        }
    }

    /// Adds a lane starting at `base` (the stored position it resumes from, if any).
    pub(crate) fn lane(&self, key: LaneKey, base: Option<Mark>) -> usize {
        let mut lanes = self.lanes.lock();
        lanes.push(Lane {
            key,
            entries: VecDeque::new(),
            front: 0,
            base,
            ended: false,
        });
        lanes.len() - 1
    }

    /// The lane with `key`, added (starting nowhere) when missing.
    pub(crate) fn lane_for(&self, key: &LaneKey) -> usize {
        let found = self.lanes.lock().iter().position(|l| &l.key == key);
        found.unwrap_or_else(|| self.lane(key.clone(), None))
    }

    /// Records a delivered op of `lane`; returns its sequence number for [`Ack`].
    pub(crate) fn register(&self, lane: usize, mark: Option<Mark>) -> u64 {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        let mut lanes = self.lanes.lock();
        let lane = &mut lanes[lane];
        lane.entries.push_back(Entry {
            mark,
            acked: false,
            idle: false,
        });
        lane.front + lane.entries.len() as u64 - 1
    }

    /// The source of `lane` is idle with every op delivered, standing at `mark`.
    pub(crate) fn idle(&self, lane: usize, mark: Mark) {
        let mut lanes = self.lanes.lock();
        let lane = &mut lanes[lane];
        // A source re-opened inside a transaction reports the entry before it until that
        // transaction is read again: never let the idle position go behind.
        if let (Some(Mark::Oplog(newest)), Mark::Oplog(idle)) = (lane.newest(), &mark) {
            if idle.ts < newest.ts {
                return;
            }
        }
        // It stands after every op delivered: once they are acknowledged, it is the base.
        match lane.entries.back_mut() {
            None => lane.base = Some(mark),
            Some(last) if last.idle => last.mark = Some(mark),
            Some(_) => lane.entries.push_back(Entry {
                mark: Some(mark),
                acked: true,
                idle: true,
            }),
        }
    }

    /// The source of `lane` will deliver nothing more.
    pub(crate) fn end(&self, lane: usize) {
        self.lanes.lock()[lane].ended = true;
    }

    fn ack(&self, lane: usize, seq: u64) {
        {
            let mut lanes = self.lanes.lock();
            let lane = &mut lanes[lane];
            let Some(at) = seq.checked_sub(lane.front) else {
                return; // acknowledged before (a clone of the ack)
            };
            match lane.entries.get_mut(at as usize) {
                Some(entry) if !entry.acked && !entry.idle => entry.acked = true,
                _ => return,
            }
            if at == 0 {
                lane.advance();
            }
        }
        let before = self.outstanding.fetch_sub(1, Ordering::AcqRel);
        if before >= self.max_outstanding && self.blocked.load(Ordering::Acquire) {
            self.wake_waiting();
        }
        // Once per `save_every` acknowledgements (the saver resets the count).
        if self.acked.fetch_add(1, Ordering::AcqRel) + 1 == self.save_every {
            self.save_due.notify_one();
        }
    }

    fn wake_waiting(&self) {
        let wakers = std::mem::take(&mut *self.waiting.lock());
        self.blocked.store(false, Ordering::Release);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ops delivered and not yet acknowledged.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Whether a source may deliver another op; when not, `waker` is woken once there is
    /// room again.
    pub(crate) fn has_room(&self, waker: &Waker) -> bool {
        if self.outstanding() < self.max_outstanding {
            return true;
        }
        let mut waiting = self.waiting.lock();
        self.blocked.store(true, Ordering::Release);
        if self.outstanding() < self.max_outstanding {
            return true; // an ack came in between
        }
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
        false
    }

    /// Acknowledgements since the last [`Tracker::take_acked`].
    pub(crate) fn take_acked(&self) -> u64 {
        self.acked.swap(0, Ordering::AcqRel)
    }

    /// Puts back acknowledgements taken for a save that failed.
    pub(crate) fn add_acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::AcqRel);
    }

    /// Sets the checkpoint the sources resumed from; saving may begin.
    pub(crate) fn set_base(&self, base: Checkpoint) {
        *self.base.lock() = base;
        self.loaded.store(true, Ordering::Release);
    }

    /// Every lane's stored position and whether it finished; `None` while a live lane has
    /// no position yet (a checkpoint saved then could lose changes on restart).
    pub(crate) fn lanes(&self) -> Option<Vec<LaneState>> {
        let lanes = self.lanes.lock();
        let mut out = Vec::with_capacity(lanes.len());
        for lane in lanes.iter() {
            let position = lane.watermark().cloned();
            if position.is_none() && lane.key.is_live() {
                return None;
            }
            out.push(LaneState {
                key: lane.key.clone(),
                position,
                finished: lane.ended && lane.entries.is_empty(),
            });
        }
        Some(out)
    }

    /// Moves `lane` to `mark`, dropping its outstanding ops (their acknowledgements then
    /// do nothing): the source starts over from there.
    pub(crate) fn reset(&self, lane: usize, mark: Mark) {
        let dropped = {
            let mut lanes = self.lanes.lock();
            let lane = &mut lanes[lane];
            let unacked = lane.entries.iter().filter(|e| !e.acked).count();
            lane.front += lane.entries.len() as u64;
            lane.entries.clear();
            lane.base = Some(mark);
            unacked
        };
        if dropped > 0 {
            self.outstanding.fetch_sub(dropped, Ordering::AcqRel);
            if self.blocked.load(Ordering::Acquire) {
                self.wake_waiting();
            }
        }
    }

    /// Forgets the direct-read progress of `ns` (it is read again from the start).
    pub(crate) fn forget_direct(&self, ns: &str) {
        self.base.lock().direct.remove(ns);
        for lane in self.lanes.lock().iter_mut() {
            if matches!(&lane.key, LaneKey::Range { ns: n, .. } if n == ns) {
                lane.key = LaneKey::Retired; // lane numbers stay: acks refer to them
            }
        }
    }

    /// The direct-read progress of `ns` in the loaded checkpoint.
    pub(crate) fn direct_progress(&self, ns: &str) -> Option<DirectProgress> {
        self.base.lock().direct.get(ns).cloned()
    }

    /// Records the `_id` ranges planned for the direct read of `ns` (none: nothing to read,
    /// finished) and returns a lane for each.
    pub(crate) fn plan_direct(&self, ns: &str, filters: &[Document]) -> Vec<usize> {
        let progress = DirectProgress {
            finished: filters.is_empty(),
            ranges: filters.iter().cloned().map(RangeProgress::new).collect(),
        };
        self.base.lock().direct.insert(ns.to_owned(), progress);
        (0..filters.len())
            .map(|index| {
                let key = LaneKey::Range {
                    ns: ns.to_owned(),
                    index,
                };
                self.lane(key, None)
            })
            .collect()
    }

    /// The checkpoint to save now: what was loaded, updated with every lane's position;
    /// `None` while a live lane has no position yet.
    pub(crate) fn snapshot(&self) -> Option<Checkpoint> {
        if !self.loaded.load(Ordering::Acquire) {
            return None;
        }
        let lanes = self.lanes()?;
        let mut cp = self.base.lock().clone();
        apply(&mut cp, &lanes);
        Some(cp)
    }

    /// The lane holding the most ops not yet acknowledged, and how many.
    pub(crate) fn most_waiting(&self) -> Option<(LaneKey, usize)> {
        let lanes = self.lanes.lock();
        lanes
            .iter()
            .filter(|l| !l.entries.is_empty())
            .max_by_key(|l| l.entries.len())
            .map(|l| (l.key.clone(), l.entries.len()))
    }
}

/// Writes `lanes` into `cp` (which holds what was loaded: positions of sources not running
/// now are kept).
pub(crate) fn apply(cp: &mut Checkpoint, lanes: &[LaneState]) {
    for lane in lanes {
        match (&lane.key, &lane.position) {
            (LaneKey::Oplog, Some(Mark::Oplog(p))) => cp.oplog = Some(*p),
            (LaneKey::ChangeStream(scope), Some(Mark::Token(t))) => {
                cp.change_stream_times.remove(scope);
                cp.change_streams.insert(scope.clone(), t.clone());
            }
            (LaneKey::ChangeStream(scope), Some(Mark::Time(ts))) => {
                cp.change_stream_times.insert(scope.clone(), *ts);
            }
            (LaneKey::Cluster, Some(Mark::Time(ts))) => cp.cluster_start = Some(*ts),
            (LaneKey::Shard(id), Some(Mark::Oplog(p))) => {
                cp.shards.insert(id.clone(), *p);
            }
            (LaneKey::Range { ns, index }, position) => {
                let Some(range) = cp.direct.get_mut(ns).and_then(|d| d.ranges.get_mut(*index))
                else {
                    continue;
                };
                if let Some(Mark::Id(id)) = position {
                    range.last_id = Some(id.clone());
                }
                range.finished |= lane.finished;
            }
            _ => {}
        }
    }
    for direct in cp.direct.values_mut() {
        direct.finished |= !direct.ranges.is_empty() && direct.ranges.iter().all(|r| r.finished);
    }
}

/// An op's acknowledgement: call [`Ack::ack`] when the application has finished with the
/// op (from any task, in any order). Until then the op's source keeps its checkpoint
/// before the op, so a restart delivers it again.
///
/// Clones acknowledge the same op: the first call counts, later ones do nothing.
#[derive(Clone)]
pub struct Ack {
    tracker: Arc<Tracker>,
    lane: usize,
    seq: u64,
}

impl Ack {
    pub(crate) fn new(tracker: Arc<Tracker>, lane: usize, seq: u64) -> Ack {
        Ack { tracker, lane, seq }
    }

    /// Acknowledges the op: the application has finished with it.
    pub fn ack(self) {
        self.tracker.ack(self.lane, self.seq);
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack")
            .field("lane", &self.lane)
            .field("seq", &self.seq)
            .finish()
    }
}

impl PartialEq for Ack {
    fn eq(&self, other: &Ack) -> bool {
        Arc::ptr_eq(&self.tracker, &other.tracker)
            && self.lane == other.lane
            && self.seq == other.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: u32) -> Mark {
        Mark::Oplog(OplogProgress::new(Timestamp {
            time: n,
            increment: 0,
        }))
    }

    #[test]
    fn the_watermark_stops_before_the_oldest_unacked_op() {
        let t = Arc::new(Tracker::new(Checkpoint::new(), 100, 1_000));
        let lane = t.lane(LaneKey::Oplog, Some(ts(1)));
        let acks: Vec<Ack> = (2..=5)
            .map(|n| Ack::new(t.clone(), lane, t.register(lane, Some(ts(n)))))
            .collect();
        let pos = |t: &Tracker| t.lanes().unwrap()[0].position.clone();
        acks[1].clone().ack();
        acks[3].clone().ack();
        assert_eq!(pos(&t), Some(ts(1)), "op 2 is not acknowledged");
        acks[0].clone().ack();
        assert_eq!(pos(&t), Some(ts(3)));
        acks[0].clone().ack(); // a second ack of the same op changes nothing
        assert_eq!(t.outstanding(), 1);
        t.idle(lane, ts(9));
        assert_eq!(
            pos(&t),
            Some(ts(3)),
            "idle counts only with nothing outstanding"
        );
        acks[2].clone().ack();
        assert_eq!(pos(&t), Some(ts(9)));
        let seq = t.register(lane, Some(ts(10)));
        assert_eq!(pos(&t), Some(ts(9)), "the idle position became the base");
        Ack::new(t.clone(), lane, seq).ack();
        assert_eq!(pos(&t), Some(ts(10)));
        assert_eq!(t.take_acked(), 5);
    }

    #[test]
    fn no_checkpoint_before_every_live_lane_has_a_position() {
        let t = Tracker::new(Checkpoint::new(), 10, 10);
        let range = t.lane(
            LaneKey::Range {
                ns: "a.b".into(),
                index: 0,
            },
            None,
        );
        assert!(t.lanes().is_some(), "ranges may lack a position");
        let oplog = t.lane(LaneKey::Oplog, None);
        assert!(t.lanes().is_none(), "the oplog has no position yet");
        t.idle(oplog, ts(1));
        assert!(t.lanes().is_some());
        t.register(range, Some(Mark::Id(Bson::Int32(1))));
        t.register(oplog, Some(ts(2)));
        let oplog_at = |t: &Tracker| t.lanes().unwrap()[1].position.clone();
        assert_eq!(
            oplog_at(&t),
            Some(ts(1)),
            "the idle position became the base"
        );
        t.end(range);
        assert_eq!(t.most_waiting().map(|(_, n)| n), Some(1));
    }

    #[test]
    fn sources_wait_for_room_and_acks_wake_them() {
        let t = Arc::new(Tracker::new(Checkpoint::new(), 2, 1_000));
        let lane = t.lane(LaneKey::Oplog, None);
        let waker = futures::task::noop_waker();
        let a = t.register(lane, Some(ts(1)));
        assert!(t.has_room(&waker));
        t.register(lane, Some(ts(2)));
        assert!(!t.has_room(&waker));
        Ack::new(t.clone(), lane, a).ack();
        assert!(t.has_room(&waker));
        assert!(!t.blocked.load(Ordering::Acquire));
    }
}
