//! `local.oplog.rs`: a capped ring of raw BSON entries (reference §4, contract §5).
//!
//! Entries are kept encoded (`RawDocumentBuf`) with their `ts` so tailing cursors can serve
//! them without re-encoding. Every entry has a sequence number (its record id); a reader
//! whose last returned record has been truncated away gets 136 CappedPositionLost.

use super::clock::{ts_from_key, ts_key};
use bson::{RawDocumentBuf, Timestamp};
use std::collections::VecDeque;
use tokio::sync::watch;

/// One stored entry.
#[derive(Debug, Clone)]
pub(crate) struct OplogEntry {
    /// `ts` as a `u64` key (seconds high, increment low).
    pub(crate) ts: u64,
    /// The encoded entry.
    pub(crate) raw: RawDocumentBuf,
}

impl OplogEntry {
    /// The entry's `ts`.
    pub(crate) fn timestamp(&self) -> Timestamp {
        ts_from_key(self.ts)
    }
}

/// The capped oplog ring.
#[derive(Debug)]
pub(crate) struct Oplog {
    entries: VecDeque<OplogEntry>,
    /// Sequence number (record id) of `entries[0]`.
    first_seq: u64,
    bytes: u64,
    cap_bytes: u64,
    tx: watch::Sender<Timestamp>,
}

impl Oplog {
    /// An empty oplog capped at `cap_bytes`.
    pub(crate) fn new(cap_bytes: u64) -> Self {
        let (tx, _rx) = watch::channel(Timestamp {
            time: 0,
            increment: 0,
        });
        Self {
            entries: VecDeque::new(),
            first_seq: 1,
            bytes: 0,
            cap_bytes,
            tx,
        }
    }

    /// Appends an entry (its `ts` must be greater than the last one) and truncates the
    /// oldest entries beyond the byte cap; the newest entry is always kept.
    pub(crate) fn append(&mut self, ts: Timestamp, raw: RawDocumentBuf) {
        self.bytes += raw.as_bytes().len() as u64;
        self.entries.push_back(OplogEntry {
            ts: ts_key(ts),
            raw,
        });
        while self.bytes > self.cap_bytes && self.entries.len() > 1 {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.raw.as_bytes().len() as u64;
                self.first_seq += 1;
            }
        }
    }

    /// Wakes the waiters (call once after a group of appends).
    pub(crate) fn notify(&self) {
        if let Some(last) = self.entries.back() {
            self.tx.send_replace(ts_from_key(last.ts));
        }
    }

    /// A receiver that changes whenever entries are appended.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Timestamp> {
        self.tx.subscribe()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of the stored entries.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The byte cap.
    pub(crate) fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    /// Sequence number of the oldest stored entry.
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number the next appended entry gets.
    pub(crate) fn end_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    /// Entry by sequence number.
    pub(crate) fn get(&self, seq: u64) -> Option<&OplogEntry> {
        if seq < self.first_seq {
            return None;
        }
        self.entries.get((seq - self.first_seq) as usize)
    }

    /// `ts` of the oldest entry.
    pub(crate) fn first_ts(&self) -> Option<Timestamp> {
        self.entries.front().map(|e| e.timestamp())
    }

    /// `ts` of the newest entry.
    #[allow(dead_code)]
    pub(crate) fn last_ts(&self) -> Option<Timestamp> {
        self.entries.back().map(|e| e.timestamp())
    }

    /// Sequence number of the first entry with `ts > after` (or `>=` when `inclusive`);
    /// binary search on `ts`.
    pub(crate) fn seek(&self, after: Timestamp, inclusive: bool) -> u64 {
        let k = ts_key(after);
        let idx = self
            .entries
            .partition_point(|e| if inclusive { e.ts < k } else { e.ts <= k });
        self.first_seq + idx as u64
    }

    /// Entries from sequence number `seq` on (clamped to the oldest stored entry).
    pub(crate) fn iter_from(&self, seq: u64) -> impl Iterator<Item = (u64, &OplogEntry)> + '_ {
        let start = seq.max(self.first_seq);
        let skip = (start - self.first_seq) as usize;
        self.entries
            .iter()
            .skip(skip)
            .enumerate()
            .map(move |(i, e)| (start + i as u64, e))
    }

    /// Entries newest first, starting at sequence number `seq` (inclusive) going back.
    pub(crate) fn iter_back_from(&self, seq: u64) -> impl Iterator<Item = (u64, &OplogEntry)> + '_ {
        let end = seq.saturating_add(1).min(self.end_seq());
        let n = end.saturating_sub(self.first_seq) as usize;
        let first = self.first_seq;
        self.entries
            .iter()
            .take(n)
            .enumerate()
            .rev()
            .map(move |(i, e)| (first + i as u64, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 100,
            increment: i,
        }
    }

    #[test]
    fn ring_truncates_and_seeks() {
        let one = rawdoc! {"x": 1i32};
        let len = one.as_bytes().len() as u64;
        let mut o = Oplog::new(len * 3);
        for i in 1..=5 {
            o.append(ts(i), rawdoc! {"x": i as i32});
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.first_seq(), 3);
        assert_eq!(o.first_ts(), Some(ts(3)));
        assert_eq!(o.seek(ts(3), false), 4);
        assert_eq!(o.seek(ts(3), true), 3);
        assert_eq!(o.seek(ts(1), false), 3);
        assert_eq!(o.seek(ts(9), false), 6);
        let seqs: Vec<u64> = o.iter_from(4).map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![4, 5]);
        let back: Vec<u64> = o.iter_back_from(100).map(|(s, _)| s).collect();
        assert_eq!(back, vec![5, 4, 3]);
        assert!(o.get(2).is_none());
    }
}
