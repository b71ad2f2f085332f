//! Start-up options of a simulated server.

use std::time::Duration;

/// Which MongoDB release the simulator imitates (wire version, oplog formats, change events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ServerVersion {
    /// MongoDB 4.4: maxWireVersion 9, `$v: 1` updates, resume tokens v1, no `wallTime` in events.
    V4_4,
    /// MongoDB 7.0 (default): maxWireVersion 21, `$v: 2` deltas, resume tokens v2.
    #[default]
    V7_0,
}

impl ServerVersion {
    /// The version string `buildInfo` reports.
    pub fn version_string(self) -> &'static str {
        match self {
            ServerVersion::V4_4 => "4.4.29",
            ServerVersion::V7_0 => "7.0.14",
        }
    }

    /// `maxWireVersion` in `hello` (reference §2.3).
    pub fn max_wire_version(self) -> i32 {
        match self {
            ServerVersion::V4_4 => 9,
            ServerVersion::V7_0 => 21,
        }
    }

    /// Parses `"7.0"` / `"4.4"` (also accepts full versions such as `"7.0.14"`).
    pub fn parse(s: &str) -> Option<Self> {
        if s == "7.0" || s.starts_with("7.0.") {
            Some(ServerVersion::V7_0)
        } else if s == "4.4" || s.starts_with("4.4.") {
            Some(ServerVersion::V4_4)
        } else {
            None
        }
    }
}

/// The part a server plays in a sharded cluster (`--shardsvr`, `--configsvr`, mongos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ClusterRole {
    /// A plain replica set or standalone server (default).
    #[default]
    None,
    /// A shard's replica set (`--shardsvr`): accepts the router's internal sharding commands,
    /// logs shard-key fields in document keys, hides migration entries from change streams.
    ShardServer,
    /// The config server replica set (`--configsvr`): holds the `config.*` metadata.
    ConfigServer,
    /// A router (mongos); started by [`Cluster`](crate::Cluster), never by `MongoSim::start`.
    Router,
}

/// Options for [`MongoSim::start`](crate::MongoSim::start).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Port on 127.0.0.1; 0 (default) picks a free one.
    pub port: u16,
    /// Replica set name (default `rs0`); `None` runs a standalone server (no oplog, no `setName`).
    pub repl_set: Option<String>,
    /// Imitated release (default 7.0).
    pub version: ServerVersion,
    /// Capped size of `local.oplog.rs` in bytes (default 192 MiB).
    pub oplog_size_bytes: u64,
    /// Interval of the periodic no-op oplog entry when idle (default 10 s, as a real server).
    pub noop_interval: Duration,
    /// Accept test-only commands such as `configureFailPoint` (default true, like
    /// `--setParameter enableTestCommands=1`).
    pub enable_test_commands: bool,
    /// Log multi-document deletes as batched-delete `applyOps` entries, as 6.1+ servers do
    /// with `featureFlagBatchMultiDeletes` (default false).
    pub batched_deletes: bool,
    /// Open transactions older than this are aborted (default 60 s, like
    /// `--setParameter transactionLifetimeLimitSeconds=60`).
    pub transaction_lifetime_limit: Duration,
    /// Role in a sharded cluster (default [`ClusterRole::None`]).
    pub cluster_role: ClusterRole,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: 0,
            repl_set: Some("rs0".to_string()),
            version: ServerVersion::V7_0,
            oplog_size_bytes: 192 * 1024 * 1024,
            noop_interval: Duration::from_secs(10),
            enable_test_commands: true,
            batched_deletes: false,
            transaction_lifetime_limit: Duration::from_secs(60),
            cluster_role: ClusterRole::None,
        }
    }
}

impl Options {
    /// Defaults: a 7.0 replica set `rs0` on a free port.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the port (0 = free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Sets the replica set name.
    pub fn repl_set(mut self, name: impl Into<String>) -> Self {
        self.repl_set = Some(name.into());
        self
    }
    /// Standalone mode: no replica set, no oplog.
    pub fn standalone(mut self) -> Self {
        self.repl_set = None;
        self
    }
    /// Sets the imitated server version.
    pub fn version(mut self, version: ServerVersion) -> Self {
        self.version = version;
        self
    }
    /// Sets the oplog size in bytes.
    pub fn oplog_size_bytes(mut self, bytes: u64) -> Self {
        self.oplog_size_bytes = bytes;
        self
    }
    /// Sets the periodic no-op interval.
    pub fn noop_interval(mut self, interval: Duration) -> Self {
        self.noop_interval = interval;
        self
    }
    /// Turns test commands (`configureFailPoint`) on or off.
    pub fn enable_test_commands(mut self, on: bool) -> Self {
        self.enable_test_commands = on;
        self
    }
    /// Logs multi-deletes as batched `applyOps`.
    pub fn batched_deletes(mut self, on: bool) -> Self {
        self.batched_deletes = on;
        self
    }
    /// Runs as a shard's replica set (`--shardsvr`), ready to be added to a cluster with
    /// `addShard: "<set>/127.0.0.1:<port>"`.
    pub fn shard_server(mut self) -> Self {
        self.cluster_role = ClusterRole::ShardServer;
        self
    }
    /// Sets the cluster role.
    pub fn cluster_role(mut self, role: ClusterRole) -> Self {
        self.cluster_role = role;
        self
    }
    /// Sets `transactionLifetimeLimitSeconds` (whole seconds on a real server; at least 1 s).
    pub fn transaction_lifetime_limit(mut self, limit: Duration) -> Self {
        self.transaction_lifetime_limit = limit;
        self
    }
}
