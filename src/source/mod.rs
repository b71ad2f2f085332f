//! The three sources: [`oplog`], [`change_stream`] and [`direct`] reads.
//!
//! Each is a `Stream<Item = Result<Op>>` built from an options value (`Default` + builder
//! methods). Live sources expose their position for checkpointing and retry transient
//! errors themselves with [`RetryPolicy`]; see [`crate::error`] for what ends a stream.

use std::time::Duration;

use crate::op::{Namespace, Op, OpKind};

pub mod change_stream;
pub mod direct;
pub mod oplog;
mod raw;
pub mod start_at;

/// How a live source retries transient errors: exponential backoff with jitter, from the
/// last delivered position.
///
/// The `n`-th consecutive retry waits a random duration between half and all of
/// `min(initial_backoff * 2^(n-1), max_backoff)`. The counter resets as soon as the
/// server answers again. After `max_retries` consecutive failures the last error is
/// yielded and the stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// First wait. Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest wait. Default 10 s.
    pub max_backoff: Duration,
    /// Consecutive failed attempts before giving up. Default 10.
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_retries: 10,
        }
    }
}

impl RetryPolicy {
    /// A policy with the given first wait, longest wait and retry budget.
    pub fn new(initial_backoff: Duration, max_backoff: Duration, max_retries: u32) -> Self {
        RetryPolicy {
            initial_backoff,
            max_backoff,
            max_retries,
        }
    }

    /// Never retry: the first transient error is yielded and ends the stream.
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `attempt` (1-based), jittered.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = full / 2;
        let jitter_ns = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter_ns == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ns)
        };
        half + Duration::from_nanos(extra)
    }
}

/// Whether `ns` (an op's namespace) is selected by `filter` (database namespaces select
/// every collection of the database). An empty filter selects everything.
pub(crate) fn ns_selected(filter: &[Namespace], ns: &Namespace) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| {
            f.db() == ns.db() && (f.is_database() || ns.is_database() || f.coll() == ns.coll())
        })
}

/// Whether `op` is selected by `filter`: its namespace, or the target of a rename.
pub(crate) fn op_selected<T>(filter: &[Namespace], op: &Op<T>) -> bool {
    if ns_selected(filter, &op.namespace) {
        return true;
    }
    match &op.kind {
        OpKind::Rename { to } => ns_selected(filter, to),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 5);
        for attempt in 1..30 {
            let d = p.backoff(attempt);
            let full = (Duration::from_millis(100) * 2u32.pow((attempt - 1).min(20)))
                .min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn namespace_selection() {
        let f = vec![
            Namespace::parse("a.x").unwrap(),
            Namespace::database("b").unwrap(),
        ];
        let sel = |s: &str| ns_selected(&f, &Namespace::parse(s).unwrap());
        assert!(sel("a.x") && sel("b.anything") && sel("a") && sel("b"));
        assert!(!sel("a.y") && !sel("c.x") && !sel("c"));
        let rename: Op = Op::new(
            OpKind::Rename {
                to: Namespace::parse("a.x").unwrap(),
            },
            Namespace::parse("a.tmp").unwrap(),
            None,
        );
        assert!(op_selected(&f, &rename));
        let other_db: Op = Op::new(
            OpKind::DropDatabase,
            Namespace::database("c").unwrap(),
            None,
        );
        assert!(!op_selected(&f, &other_db));
        assert!(op_selected(&[], &other_db));
    }
}
