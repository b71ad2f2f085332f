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
    /// for an unreachable shard rather than skip it. A shard never reached at all ends the
    /// stream with [`Error::FirstContact`](crate::Error::FirstContact) after
    /// [`RetryPolicy::first_contact`] (30 s; e.g. `config.shards` names hosts this process
    /// cannot resolve).
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
    /// Push the namespace filter ([`OplogOptions::namespaces`]) into each shard's oplog
    /// query. Default `false`: the shards' tails read every entry and filter in the
    /// client, because a tail's watermark moves only with the entries it reads, and a shard
    /// busy with writes to other namespaces writes no periodic no-op (the server writes one
    /// only when nothing else was written), so with the filter on the server such a shard
    /// would hold the merged stream back until its next matching write. Turn it on to save
    /// network traffic when every shard gets matching writes or idles often.
    pub server_filter: bool,
    /// How often `listShards` is asked through the router when the config server cannot be
    /// reached (its oplog is followed otherwise). Default 10 s.
    pub shard_poll_interval: Duration,
    /// How long the tail of a shard removed from the cluster may take to read up to its
    /// removal before it ends anyway (the shard was shut down right after `removeShard`;
    /// what it logged after the tail's position is then not delivered, and a warning is
    /// logged). Default 60 s.
    pub removed_shard_grace: Duration,
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
            server_filter: false,
            shard_poll_interval: Duration::from_secs(10),
            removed_shard_grace: Duration::from_secs(60),
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

    /// Sets [`ClusterOptions::server_filter`].
    pub fn server_filter(mut self, on: bool) -> Self {
        self.server_filter = on;
        self
    }

    /// Sets [`ClusterOptions::shard_poll_interval`].
    pub fn shard_poll_interval(mut self, interval: Duration) -> Self {
        self.shard_poll_interval = interval;
        self
    }

    /// Sets [`ClusterOptions::removed_shard_grace`].
    pub fn removed_shard_grace(mut self, grace: Duration) -> Self {
        self.removed_shard_grace = grace;
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

    /// The oplog options of shard `id`: resuming from its position; for a shard missing
    /// from a non-empty `resume_from`, starting after the time it was added (`added`);
    /// otherwise from the oplog options' start, or after `now`.
    pub(super) fn shard_oplog(
        &self,
        id: &str,
        added: Option<bson::Timestamp>,
        now: Option<bson::Timestamp>,
    ) -> OplogOptions {
        let oplog = self.oplog.clone().filter_on_server(self.server_filter);
        if !self.resume_from.is_empty() {
            return match self.resume_from.get(id) {
                Some(progress) => oplog.resume_from(*progress),
                None => oplog.start(added.map_or(StartAt::Earliest, StartAt::After)),
            };
        }
        match (&self.oplog.start, now) {
            (Some(_), _) => oplog,
            (None, Some(now)) => oplog.start_after(now),
            (None, None) => oplog.start(StartAt::Latest),
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

    fn after(o: OplogOptions) -> Option<Timestamp> {
        match o.start {
            Some(StartAt::After(t)) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn shards_start_after_their_position_or_when_they_were_added() {
        let o = ClusterOptions::new();
        let now = Some(ts(9));
        assert_eq!(after(o.shard_oplog("a", Some(ts(1)), now)), Some(ts(9)));
        let latest = o.shard_oplog("a", None, None);
        assert!(matches!(latest.start, Some(StartAt::Latest)));
        let o = o.resume_from([("a".to_string(), OplogProgress::new(ts(5)))].into());
        assert_eq!(after(o.shard_oplog("a", Some(ts(1)), now)), Some(ts(5)));
        assert_eq!(after(o.shard_oplog("b", Some(ts(7)), now)), Some(ts(7)));
        let unknown = o.shard_oplog("c", None, None);
        assert!(matches!(unknown.start, Some(StartAt::Earliest)));
        let o = ClusterOptions::new().start(StartAt::Earliest);
        let given = o.shard_oplog("a", None, now);
        assert!(matches!(given.start, Some(StartAt::Earliest)));
    }

    #[test]
    fn a_position_inside_a_transaction_resumes_inside_it() {
        let inside = OplogProgress::inside(ts(5), 2);
        let o = ClusterOptions::new().resume_from([("a".to_string(), inside)].into());
        let resumed = o.shard_oplog("a", None, None);
        // The shard's options are the oplog source's own resume inside a transaction.
        let plain = o.oplog.clone().filter_on_server(false).resume_from(inside);
        assert_eq!(format!("{resumed:?}"), format!("{plain:?}"));
        let after = o
            .oplog
            .clone()
            .filter_on_server(false)
            .start_after(inside.ts);
        assert_ne!(format!("{resumed:?}"), format!("{after:?}"));
    }
}
