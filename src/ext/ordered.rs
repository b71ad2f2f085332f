//! [`Ordering`]: the order an adapter that works concurrently keeps, and the release
//! queue that enforces it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bson::Document;

use crate::op::Op;
use crate::ring::id_key_bytes;

/// The ordering guarantee a stream keeps while work runs concurrently (gtm's
/// `OrderingGuarantee`), set with [`BatchFetch::ordered`](crate::ext::BatchFetch::ordered) or
/// [`ThenConcurrent::ordered`](crate::ext::ThenConcurrent::ordered).
///
/// Input order is the order the ops came out of the wrapped stream. Whatever the
/// ordering:
///
/// 1. every op is delivered exactly once;
/// 2. an `Err` item from the input is a barrier: it comes after every op received before
///    it and before every op received after it (so the ops buffered when a source fails
///    are delivered before its error);
/// 3. when several ops may go out, they go out in input order.
///
/// Beyond that, an op may overtake ops received before it only as the variant allows:
///
/// ```
/// use mongotail::Ordering;
/// assert_eq!(Ordering::default(), Ordering::Oplog);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Ordering {
    /// Total order: ops come out exactly in input order (the default).
    #[default]
    Oplog,
    /// Order within each namespace: an op waits only for earlier ops of its own
    /// namespace. Ops without a document id (commands: drop, rename, create index…) are
    /// barriers, as errors are.
    Namespace,
    /// Order per document (namespace + `_id`): an op waits only for earlier ops on the
    /// same document, so a slow fetch of one document does not hold back ops on others.
    /// Ops without a document id (commands) are barriers, as errors are.
    Document,
    /// No order: each op goes out as soon as it is ready (errors are still barriers).
    Any,
}

/// Which queue an item waits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Released in order with the other items of the same chain.
    Chain(Vec<u8>),
    /// Released only when everything before it is out; holds back everything after it.
    Barrier,
    /// Released as soon as ready (and not behind a barrier).
    Free,
}

impl Ordering {
    /// The lane `op` waits in under this ordering.
    pub(crate) fn lane(self, op: &Op<Document>) -> Lane {
        match (self, &op.id) {
            (Ordering::Oplog, _) => Lane::Chain(Vec::new()),
            (Ordering::Any, _) => Lane::Free,
            (Ordering::Namespace | Ordering::Document, None) => Lane::Barrier,
            (Ordering::Namespace, Some(_)) => Lane::Chain(op.namespace.to_string().into_bytes()),
            (Ordering::Document, Some(id)) => {
                let mut key = op.namespace.to_string().into_bytes();
                // 0xFF never occurs in UTF-8: the namespace/id split is unambiguous.
                key.push(0xFF);
                key.extend_from_slice(&id_key_bytes(id));
                Lane::Chain(key)
            }
        }
    }
}

#[derive(Debug)]
struct Slot<P> {
    lane: Lane,
    ready: bool,
    payload: P,
}

/// Holds items until the ordering lets them out.
///
/// Items are numbered in arrival order. An item is *releasable* when it is ready and:
/// a barrier: every earlier item is out; a chain item: it is the oldest item of its chain
/// still held and no earlier barrier is held; a free item: no earlier barrier is held.
/// Releasability never goes away once reached (later arrivals have larger numbers), so
/// the releasable set only grows until popped.
#[derive(Debug)]
pub(crate) struct Sequencer<P> {
    next: u64,
    slots: BTreeMap<u64, Slot<P>>,
    chains: HashMap<Vec<u8>, VecDeque<u64>>,
    barriers: VecDeque<u64>,
    releasable: BTreeSet<u64>,
}

impl<P> Default for Sequencer<P> {
    fn default() -> Self {
        Sequencer {
            next: 0,
            slots: BTreeMap::new(),
            chains: HashMap::new(),
            barriers: VecDeque::new(),
            releasable: BTreeSet::new(),
        }
    }
}

impl<P> Sequencer<P> {
    /// Items held (not yet popped).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds an item; returns its number.
    pub(crate) fn push(&mut self, lane: Lane, ready: bool, payload: P) -> u64 {
        let seq = self.next;
        self.next += 1;
        match &lane {
            Lane::Chain(key) => self.chains.entry(key.clone()).or_default().push_back(seq),
            Lane::Barrier => self.barriers.push_back(seq),
            Lane::Free => {}
        }
        self.slots.insert(
            seq,
            Slot {
                lane,
                ready,
                payload,
            },
        );
        self.check(seq);
        seq
    }

    /// The payload of a held item.
    pub(crate) fn payload_mut(&mut self, seq: u64) -> Option<&mut P> {
        self.slots.get_mut(&seq).map(|s| &mut s.payload)
    }

    /// Marks a held item ready.
    pub(crate) fn set_ready(&mut self, seq: u64) {
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.ready = true;
            self.check(seq);
        }
    }

    /// Takes the oldest releasable item.
    pub(crate) fn pop(&mut self) -> Option<P> {
        let seq = self.releasable.pop_first()?;
        let slot = self.slots.remove(&seq)?;
        match &slot.lane {
            Lane::Chain(key) => {
                let next = match self.chains.get_mut(key) {
                    Some(queue) => {
                        queue.pop_front();
                        queue.front().copied()
                    }
                    None => None,
                };
                match next {
                    Some(next) => self.check(next),
                    None => {
                        self.chains.remove(key);
                    }
                }
            }
            Lane::Barrier => {
                self.barriers.pop_front();
                let end = self.barriers.front().copied().unwrap_or(u64::MAX);
                let behind: Vec<u64> = self.slots.range(seq + 1..end).map(|(s, _)| *s).collect();
                for s in behind {
                    self.check(s);
                }
            }
            Lane::Free => {}
        }
        if let Some(&barrier) = self.barriers.front() {
            self.check(barrier);
        }
        Some(slot.payload)
    }

    fn check(&mut self, seq: u64) {
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        if !slot.ready {
            return;
        }
        let before_barrier = self.barriers.front().is_none_or(|&b| seq < b);
        let releasable = match &slot.lane {
            Lane::Barrier => self.slots.first_key_value().map(|(s, _)| *s) == Some(seq),
            Lane::Chain(key) => {
                before_barrier && self.chains.get(key).and_then(|q| q.front()).copied() == Some(seq)
            }
            Lane::Free => before_barrier,
        };
        if releasable {
            self.releasable.insert(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Sequencer<u32>) -> Vec<u32> {
        std::iter::from_fn(|| s.pop()).collect()
    }

    #[test]
    fn chain_waits_for_its_head() {
        let mut s = Sequencer::default();
        let a = s.push(Lane::Chain(b"x".to_vec()), false, 0);
        s.push(Lane::Chain(b"x".to_vec()), true, 1);
        s.push(Lane::Chain(b"y".to_vec()), true, 2);
        assert_eq!(drain(&mut s), [2]);
        s.set_ready(a);
        assert_eq!(drain(&mut s), [0, 1]);
        assert!(s.is_empty());
    }

    #[test]
    fn barrier_holds_both_ways() {
        let mut s = Sequencer::default();
        let a = s.push(Lane::Free, false, 0);
        s.push(Lane::Barrier, true, 1);
        s.push(Lane::Free, true, 2);
        s.push(Lane::Chain(vec![]), true, 3);
        assert_eq!(drain(&mut s), Vec::<u32>::new());
        s.set_ready(a);
        assert_eq!(drain(&mut s), [0, 1, 2, 3]);
    }

    #[test]
    fn lanes() {
        use crate::op::{Namespace, OpKind};
        use bson::Bson;
        let ns = |s: &str| Namespace::parse(s).unwrap();
        let op = |n: &str, id: Option<i32>| -> Op {
            Op::new(OpKind::Update, ns(n), id.map(Bson::Int32))
        };
        let (a1, a2, b1, cmd) = (
            op("d.a", Some(1)),
            op("d.a", Some(2)),
            op("d.b", Some(1)),
            op("d.a", None),
        );
        assert_eq!(Ordering::Oplog.lane(&a1), Ordering::Oplog.lane(&b1));
        assert_eq!(Ordering::Oplog.lane(&cmd), Lane::Chain(Vec::new()));
        assert_eq!(Ordering::Namespace.lane(&a1), Ordering::Namespace.lane(&a2));
        assert_ne!(Ordering::Namespace.lane(&a1), Ordering::Namespace.lane(&b1));
        assert_eq!(Ordering::Namespace.lane(&cmd), Lane::Barrier);
        assert_ne!(Ordering::Document.lane(&a1), Ordering::Document.lane(&a2));
        assert_ne!(Ordering::Document.lane(&a1), Ordering::Document.lane(&b1));
        assert_eq!(
            Ordering::Document.lane(&a1),
            Ordering::Document.lane(&a1.clone())
        );
        assert_eq!(Ordering::Document.lane(&cmd), Lane::Barrier);
        assert_eq!(Ordering::Any.lane(&a1), Lane::Free);
        assert_eq!(Ordering::Any.lane(&cmd), Lane::Free);
    }

    #[test]
    fn consecutive_barriers() {
        let mut s = Sequencer::default();
        s.push(Lane::Barrier, true, 0);
        s.push(Lane::Barrier, true, 1);
        let c = s.push(Lane::Free, false, 2);
        s.push(Lane::Barrier, true, 3);
        assert_eq!(drain(&mut s), [0, 1]);
        s.set_ready(c);
        assert_eq!(drain(&mut s), [2, 3]);
        assert_eq!(s.len(), 0);
    }
}
