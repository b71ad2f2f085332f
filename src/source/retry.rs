//! How sources retry transient errors: [`RetryPolicy`] and the count of consecutive
//! failures it is applied to.

use std::future::Future;
use std::time::Duration;

use crate::error::{DisplayChain, Result};

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
    /// How long a source keeps retrying before it has reached the server once: an
    /// unreachable server, a wrong replica-set name (server selection), a refused
    /// connection end the source with [`Error::FirstContact`](crate::Error::FirstContact)
    /// after this long, so a misconfigured deployment is reported at once rather than after
    /// the whole retry budget. Once a source has read from the server, transient errors
    /// are retried as above. Default 30 s.
    pub first_contact: Duration,
    /// How long a live source's open cursor may give nothing at all (no op, no periodic
    /// no-op, no empty batch) before the connection is taken as stalled: a warning, and
    /// the cursor is re-opened from the position. MongoDB writes a no-op every 10 s on an
    /// idle replica set (`periodicNoopIntervalSecs`), so silence for three of those
    /// intervals means the cursor is stuck. Zero disables it. Default 30 s.
    pub stall_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_retries: 10,
            first_contact: Duration::from_secs(30),
            stall_after: Duration::from_secs(30),
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
            ..RetryPolicy::default()
        }
    }

    /// Sets [`RetryPolicy::stall_after`].
    pub fn stall_after(mut self, silence: Duration) -> Self {
        self.stall_after = silence;
        self
    }

    /// Sets [`RetryPolicy::first_contact`].
    pub fn first_contact(mut self, within: Duration) -> Self {
        self.first_contact = within;
        self
    }

    /// Never retry: the first transient error is yielded and ends the stream.
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `attempt` (1-based), jittered.
    fn backoff(&self, attempt: u32) -> Duration {
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

/// Consecutive failed attempts under a [`RetryPolicy`].
#[derive(Debug)]
pub(crate) struct Attempts {
    policy: RetryPolicy,
    failures: u32,
}

impl Attempts {
    pub(crate) fn new(policy: RetryPolicy) -> Attempts {
        Attempts {
            policy,
            failures: 0,
        }
    }

    /// After a transient failure: the wait before trying again, or `None` when the budget
    /// is spent.
    pub(crate) fn next_backoff(&mut self) -> Option<Duration> {
        if self.failures >= self.policy.max_retries {
            return None;
        }
        self.failures += 1;
        Some(self.policy.backoff(self.failures))
    }

    /// The policy applied.
    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The server answered: the next failure is the first again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not
/// [resumable](crate::Error::is_resumable), or `policy`'s budget is spent (for the
/// one-shot commands a source starts with: plans, discovery; cursors are retried by the
/// source engine). A refusal for want of a privilege is an
/// [`Error::FirstContact`](crate::Error::FirstContact) saying so.
pub(crate) async fn retry_transient<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempts = Attempts::new(policy.clone());
    let began = std::time::Instant::now();
    loop {
        match attempt().await {
            Err(e) if e.is_resumable() => match attempts.next_backoff() {
                // A one-shot command that has failed for this long is reported as such.
                Some(wait) if began.elapsed() + wait >= policy.first_contact => {
                    return Err(crate::Error::first_contact(policy.first_contact, e))
                }
                Some(wait) => {
                    tracing::warn!(error = %DisplayChain(&e), attempt = attempts.failures(), "{what}: retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(crate::Error::refused_at_first_contact(began.elapsed(), e)),
            ok => return ok,
        }
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
    fn attempts_spend_the_budget_and_reset() {
        let mut a = Attempts::new(RetryPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(40),
            2,
        ));
        assert!(a
            .next_backoff()
            .is_some_and(|d| d <= Duration::from_millis(10)));
        assert!(a
            .next_backoff()
            .is_some_and(|d| d <= Duration::from_millis(20)));
        assert_eq!((a.next_backoff(), a.failures()), (None, 2));
        a.reset();
        assert!(a.next_backoff().is_some());
        assert_eq!(Attempts::new(RetryPolicy::never()).next_backoff(), None);
    }
}
