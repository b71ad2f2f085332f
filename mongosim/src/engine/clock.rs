//! The logical clock: the single source of oplog `ts`, `$clusterTime` and `operationTime`.
//!
//! Reference §4.2 (SRV `logical_clock.cpp` `reserveTicks`): when the clock's seconds are behind
//! the wall clock it jumps to `(wallSecs, 0)`; every reserved tick then bumps the increment, so
//! the first tick in a new second is `(S, 1)`. The clock never goes back; on increment overflow
//! it moves to the next second.

use bson::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest increment before the clock moves to the next second (SRV `LogicalTime`).
const MAX_INCREMENT: u32 = i32::MAX as u32;

/// A monotonic hybrid logical clock.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    secs: u32,
    inc: u32,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock at `(0, 0)`; the first reservation jumps to the wall clock.
    pub(crate) fn new() -> Self {
        Self { secs: 0, inc: 0 }
    }

    fn wall_secs() -> u32 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    }

    /// The current cluster time (the last reserved tick).
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp {
            time: self.secs,
            increment: self.inc,
        }
    }

    /// Reserves `n` (>= 1) consecutive ticks and returns the first one.
    pub(crate) fn reserve(&mut self, n: u32) -> Timestamp {
        let n = n.max(1);
        let wall = Self::wall_secs();
        if wall > self.secs {
            self.secs = wall;
            self.inc = 0;
        }
        if self.inc as u64 + n as u64 > MAX_INCREMENT as u64 {
            self.secs += 1;
            self.inc = 0;
        }
        let first = Timestamp {
            time: self.secs,
            increment: self.inc + 1,
        };
        self.inc += n;
        first
    }

    /// Reserves one tick.
    pub(crate) fn tick(&mut self) -> Timestamp {
        self.reserve(1)
    }

    /// Advances the clock to at least `ts` (gossiped `$clusterTime`); never moves back.
    pub(crate) fn advance_to(&mut self, ts: Timestamp) {
        if (ts.time, ts.increment) > (self.secs, self.inc) {
            self.secs = ts.time;
            self.inc = ts.increment;
        }
    }
}

/// The `u64` ordering key of a timestamp (seconds high, increment low).
pub(crate) fn ts_key(ts: Timestamp) -> u64 {
    ((ts.time as u64) << 32) | ts.increment as u64
}

/// Inverse of [`ts_key`].
pub(crate) fn ts_from_key(k: u64) -> Timestamp {
    Timestamp {
        time: (k >> 32) as u32,
        increment: k as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_tick_in_a_second_is_one_and_consecutive() {
        let mut c = Clock::new();
        let a = c.tick();
        assert_eq!(a.increment, 1);
        let b = c.reserve(3);
        assert_eq!(b.time, a.time);
        assert_eq!(b.increment, 2);
        assert_eq!(c.now().increment, 4);
    }

    #[test]
    fn never_goes_back() {
        let mut c = Clock::new();
        c.advance_to(Timestamp {
            time: u32::MAX - 10,
            increment: 5,
        });
        let t = c.tick();
        assert_eq!(t.time, u32::MAX - 10);
        assert_eq!(t.increment, 6);
    }

    #[test]
    fn increment_overflow_moves_to_next_second() {
        let mut c = Clock::new();
        c.advance_to(Timestamp {
            time: u32::MAX - 10,
            increment: MAX_INCREMENT,
        });
        let t = c.tick();
        assert_eq!((t.time, t.increment), (u32::MAX - 9, 1));
    }

    #[test]
    fn ts_key_orders() {
        let a = ts_key(Timestamp {
            time: 1,
            increment: 9,
        });
        let b = ts_key(Timestamp {
            time: 2,
            increment: 1,
        });
        assert!(a < b);
        assert_eq!(
            ts_from_key(b),
            Timestamp {
                time: 2,
                increment: 1
            }
        );
    }
}
