//! [`Tracked`]: a source whose ops carry acknowledgements, registered with a [`Tracker`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};

use super::track::{Ack, LaneKey, Mark, Tracker};
use crate::error::Result;
use crate::op::{Op, Position};

/// Where a source stands when idle, by lane (the positions its control reports).
pub(crate) type IdleFn = Box<dyn Fn() -> Vec<(LaneKey, Mark)> + Send>;

/// Which lane an op goes to.
enum Route {
    /// Every op of the source: one lane.
    One(usize, LaneKey),
    /// By the shard in the op's [`Position::Shard`], lanes added as shards appear.
    #[allow(dead_code)] // the cluster source (sharded tailing) is wired in next
    Shards(Vec<(String, usize)>),
}

/// A source whose ops are registered with a [`Tracker`] and carry an [`Ack`]: it waits
/// (returns `Pending`) while the tracker holds as many outstanding ops as it allows, and
/// reports its idle position when it has nothing to deliver.
pub(crate) struct Tracked {
    inner: BoxStream<'static, Result<Op>>,
    tracker: Arc<Tracker>,
    route: Route,
    idle: Option<IdleFn>,
}

impl Tracked {
    /// A source of one lane.
    pub(crate) fn one(
        inner: BoxStream<'static, Result<Op>>,
        tracker: Arc<Tracker>,
        lane: usize,
        key: LaneKey,
        idle: Option<IdleFn>,
    ) -> Tracked {
        Tracked {
            inner,
            tracker,
            route: Route::One(lane, key),
            idle,
        }
    }

    /// A cluster source: one lane per shard.
    #[allow(dead_code)] // the cluster source (sharded tailing) is wired in next
    pub(crate) fn shards(
        inner: BoxStream<'static, Result<Op>>,
        tracker: Arc<Tracker>,
        idle: Option<IdleFn>,
    ) -> Tracked {
        Tracked {
            inner,
            tracker,
            route: Route::Shards(Vec::new()),
            idle,
        }
    }

    fn lane_of(&mut self, op: &Op) -> (usize, Option<Mark>) {
        match &mut self.route {
            Route::One(lane, key) => (*lane, Mark::of(op, key)),
            Route::Shards(known) => {
                let Position::Shard { shard, .. } = &op.position else {
                    // Not a shard op (never produced by a cluster source): no lane moves.
                    let lane = self.tracker.lane_for(&LaneKey::Shard(String::new()));
                    return (lane, None);
                };
                let key = LaneKey::Shard(shard.clone());
                let lane = match known.iter().find(|(s, _)| s == shard) {
                    Some((_, lane)) => *lane,
                    None => {
                        let lane = self.tracker.lane_for(&key);
                        known.push((shard.clone(), lane));
                        lane
                    }
                };
                (lane, Mark::of(op, &key))
            }
        }
    }

    fn report_idle(&self) {
        let Some(idle) = &self.idle else { return };
        for (key, mark) in idle() {
            let lane = match &self.route {
                Route::One(lane, own) if *own == key => *lane,
                _ => self.tracker.lane_for(&key),
            };
            self.tracker.idle(lane, mark);
        }
    }
}

impl Stream for Tracked {
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.tracker.has_room(cx.waker()) {
            return Poll::Pending;
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(mut op))) => {
                let (lane, mark) = this.lane_of(&op);
                let seq = this.tracker.register(lane, mark);
                op.ack = Some(Ack::new(this.tracker.clone(), lane, seq));
                Poll::Ready(Some(Ok(op)))
            }
            Poll::Ready(None) => {
                if let Route::One(lane, _) = this.route {
                    this.tracker.end(lane);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Nothing is queued in the source: what it reports covers every op it
                // delivered.
                this.report_idle();
                Poll::Pending
            }
            other => other,
        }
    }
}
