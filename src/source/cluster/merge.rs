//! The release rule of the merged stream, apart from any I/O so it can be tested alone.
//!
//! Each shard is a lane: the op at the head of its buffer (if any) and its watermark, the
//! `ts` up to which its oplog has been read (every op of an entry at or before it is in the
//! buffer already). The smallest head, by `(ts, index in its transaction, lane)`, may go
//! out only when every other lane's watermark has reached its `ts` and so has the bound
//! (the config server's tail, which must have seen every shard added up to then): no op
//! with a smaller `ts` can still arrive from anywhere. This is the rule a router's
//! `AsyncResultsMerger` applies to change streams (reference sharded-clusters.md §5.3).

use bson::Timestamp;

/// How far a lane (or the bound) has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watermark {
    /// Everything up to this `ts`; `None` before the start point is resolved.
    At(Option<Timestamp>),
    /// The lane's tail has ended (or there is no bound): it holds nothing back.
    Ended,
}

impl Watermark {
    fn reaches(self, ts: Timestamp) -> bool {
        match self {
            Watermark::Ended => true,
            Watermark::At(at) => at.is_some_and(|at| at >= ts),
        }
    }
}

/// The order of heads: `ts`, then the index inside a transaction, then the lane.
pub(super) type Key = (Timestamp, u32);

/// One lane as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lane {
    pub(super) head: Option<Key>,
    pub(super) watermark: Watermark,
}

/// The lane whose head may go out now, if any.
pub(super) fn pick<I>(lanes: I, bound: Watermark) -> Option<usize>
where
    I: Iterator<Item = Lane> + Clone,
{
    let (i, key) = lanes
        .clone()
        .enumerate()
        .filter_map(|(i, l)| l.head.map(|k| (i, k)))
        .min_by_key(|&(i, k)| (k, i))?;
    let others = lanes
        .enumerate()
        .all(|(j, l)| j == i || l.watermark.reaches(key.0));
    (others && bound.reaches(key.0)).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 100,
            increment: i,
        }
    }

    fn lane(head: Option<u32>, at: Option<u32>) -> Lane {
        Lane {
            head: head.map(|h| (ts(h), 0)),
            watermark: Watermark::At(at.map(ts)),
        }
    }

    #[test]
    fn the_smallest_head_waits_for_every_other_lane() {
        let lanes = [lane(Some(5), Some(9)), lane(None, Some(4))];
        assert_eq!(
            pick(lanes.iter().copied(), Watermark::Ended),
            None,
            "lane 1 may still log 4 < t < 5"
        );
        let lanes = [lane(Some(5), Some(9)), lane(None, Some(5))];
        assert_eq!(pick(lanes.iter().copied(), Watermark::Ended), Some(0));
        let lanes = [lane(Some(5), Some(9)), lane(Some(3), Some(3))];
        assert_eq!(pick(lanes.iter().copied(), Watermark::Ended), Some(1));
        let unstarted = [lane(Some(5), Some(9)), lane(None, None)];
        assert_eq!(pick(unstarted.iter().copied(), Watermark::Ended), None);
    }

    #[test]
    fn ended_lanes_hold_nothing_back_and_the_bound_does() {
        let mut lanes = [lane(Some(5), Some(5)), lane(None, Some(1))];
        lanes[1].watermark = Watermark::Ended;
        assert_eq!(pick(lanes.iter().copied(), Watermark::Ended), Some(0));
        assert_eq!(
            pick(lanes.iter().copied(), Watermark::At(Some(ts(4)))),
            None
        );
        assert_eq!(pick(lanes.iter().copied(), Watermark::At(None)), None);
        assert_eq!(
            pick(lanes.iter().copied(), Watermark::At(Some(ts(5)))),
            Some(0)
        );
        assert_eq!(pick([].into_iter(), Watermark::Ended), None);
    }

    #[test]
    fn equal_times_go_by_transaction_index_then_lane() {
        let mut lanes = [lane(Some(5), Some(5)), lane(Some(5), Some(5))];
        assert_eq!(pick(lanes.iter().copied(), Watermark::Ended), Some(0));
        lanes[0].head = Some((ts(5), 2));
        lanes[1].head = Some((ts(5), 1));
        assert_eq!(pick(lanes.iter().copied(), Watermark::Ended), Some(1));
    }
}
