//! [`ClusterOptions`]: what a [`ClusterStream`](super::ClusterStream) tails and how.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::options::ClientOptions;

use crate::checkpoint::OplogProgress;
use crate::op::Namespace;
use crate::source::oplog::OplogOptions;
use crate::source::start_at::StartAt;
use crate::source::RetryPolicy;

/// Options of a [`ClusterStream`](super::ClusterStream). Build with
/// [`ClusterOptions::new`] and the builder methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// The options of every shard's oplog tail: namespaces, `update_data_as_delta`,
    /// batch size, retry, … and the start point (used when [`ClusterOptions::resume_from`]
    /// is empty; `None` means now: the router's cluster time, one cut for every shard).
    /// Default: [`OplogOptions::default`] with a retry policy that never gives up
    /// (`max_retries: u32::MAX`, backoff 100 ms to 10 s), because the merged stream waits
    /// for an unreachable shard rather than skip it.
    pub oplog: OplogOptions,
    /// Per-shard positions to resume from (a checkpoint's `shards`, or
    /// [`ClusterControl::positions`](super::ClusterControl::positions)). When not empty,
    /// each listed shard resumes after its position and every other shard from the time
    /// it was added to the cluster (it was added while the process was down, so none of
    /// its writes is missed). Default empty.
    pub resume_from: BTreeMap<String, OplogProgress>,
    /// Follow shards added to and removed from the cluster (only for
    /// [`ClusterStream::new`](super::ClusterStream::new)). Default `true`.
    pub follow_shards: bool,
    /// How often `listShards` is asked through the router when the config server cannot be
    /// reached (its oplog is followed otherwise). Default 10 s.
    pub shard_poll_interval: Duration,
    /// Upper bound of ops read from one shard and not yet released (waiting for the other
    /// shards to pass their time): a shard with a full buffer is not read until the merge
    /// releases its ops. Default 1,000. At most `shards × max_buffered_ops` ops are held,
    /// plus one cursor batch per shard in the driver and the ops of one transaction per
    /// shard in its oplog tail.
    pub max_buffered_ops: usize,
    /// Options for the connections to the shards and the config server (credentials, TLS,
    /// timeouts); their hosts and replica-set name are replaced by those `listShards` and
    /// `getShardMap` give. Default `None`: the driver's defaults.
    pub client_options: Option<ClientOptions>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            oplog: OplogOptions::new().retry(RetryPolicy::new(
                Duration::from_millis(100),
                Duration::from_secs(10),
                u32::MAX,
            )),
            resume_from: BTreeMap::new(),
            follow_shards: true,
            shard_poll_interval: Duration::from_secs(10),
            max_buffered_ops: 1_000,
            client_options: None,
        }
    }
}

impl ClusterOptions {
    /// The defaults.
    pub fn new() -> Self {
        ClusterOptions::default()
    }

    /// Sets [`ClusterOptions::oplog`], the options of every shard's tail.
    pub fn oplog(mut self, options: OplogOptions) -> Self {
        self.oplog = options;
        self
    }

    /// Adds a namespace to the shards' [`OplogOptions::namespaces`].
    pub fn namespace(mut self, ns: Namespace) -> Self {
        self.oplog.namespaces.push(ns);
        self
    }

    /// Sets the shards' start point ([`OplogOptions::start`]).
    pub fn start(mut self, start: StartAt) -> Self {
        self.oplog.start = Some(start);
        self
    }

    /// Sets [`ClusterOptions::resume_from`].
    pub fn resume_from(mut self, positions: BTreeMap<String, OplogProgress>) -> Self {
        self.resume_from = positions;
        self
    }

    /// Sets [`ClusterOptions::follow_shards`].
    pub fn follow_shards(mut self, on: bool) -> Self {
        self.follow_shards = on;
        self
    }

    /// Sets [`ClusterOptions::shard_poll_interval`].
    pub fn shard_poll_interval(mut self, interval: Duration) -> Self {
        self.shard_poll_interval = interval;
        self
    }

    /// Sets [`ClusterOptions::max_buffered_ops`] (at least 1).
    pub fn max_buffered_ops(mut self, n: usize) -> Self {
        self.max_buffered_ops = n.max(1);
        self
    }

    /// Sets [`ClusterOptions::client_options`].
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.client_options = Some(options);
        self
    }

    /// Where shard `id` starts: after its resume position; for a shard missing from a
    /// non-empty `resume_from`, after the time it was added (`added`); otherwise the
    /// oplog options' start, or after `now`.
    pub(super) fn shard_start(
        &self,
        id: &str,
        added: Option<bson::Timestamp>,
        now: Option<bson::Timestamp>,
    ) -> StartAt {
        if !self.resume_from.is_empty() {
            // TODO(#16): resume inside a transaction (`progress.index`) with
            // `OplogOptions::resume_from` once it lands on main; until then the whole
            // entry at `progress.ts` counts as handled.
            return match self.resume_from.get(id) {
                Some(progress) => StartAt::After(progress.ts),
                None => added.map_or(StartAt::Earliest, StartAt::After),
            };
        }
        match (&self.oplog.start, now) {
            (Some(start), _) => start.clone(),
            (None, Some(now)) => StartAt::After(now),
            (None, None) => StartAt::Latest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Timestamp;

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 3,
            increment: i,
        }
    }

    fn after(s: StartAt) -> Option<Timestamp> {
        match s {
            StartAt::After(t) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn shards_start_after_their_position_or_when_they_were_added() {
        let o = ClusterOptions::new();
        assert_eq!(
            after(o.shard_start("a", Some(ts(1)), Some(ts(9)))),
            Some(ts(9))
        );
        assert!(matches!(o.shard_start("a", None, None), StartAt::Latest));
        let o = o.resume_from([("a".to_string(), OplogProgress::new(ts(5)))].into());
        assert_eq!(
            after(o.shard_start("a", Some(ts(1)), Some(ts(9)))),
            Some(ts(5))
        );
        assert_eq!(
            after(o.shard_start("b", Some(ts(7)), Some(ts(9)))),
            Some(ts(7))
        );
        assert!(matches!(o.shard_start("c", None, None), StartAt::Earliest));
        let o = ClusterOptions::new().start(StartAt::Earliest);
        assert!(matches!(
            o.shard_start("a", None, Some(ts(9))),
            StartAt::Earliest
        ));
    }
}
