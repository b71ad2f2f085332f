//! A simulated sharded cluster: a config server replica set, shard replica sets (one node
//! each, own port, own oplog) and routers, all on 127.0.0.1 in this process.
//!
//! ```no_run
//! let cluster = mongosim::Cluster::start(mongosim::ClusterOptions::new().shards(2)).unwrap();
//! println!("{}", cluster.uri()); // mongodb://127.0.0.1:<router port>/
//! println!("{}", cluster.shard_uri(0)); // mongodb://127.0.0.1:<port>/?replicaSet=shard01
//! ```
//!
//! The routers reach the config server and the shards only over TCP, and every shard joins
//! through the router's `addShard` (reference sharded-clusters.md §2.6), exactly as a shard
//! started by `mongosim --shardsvr` in another process would.

use std::io;
use std::time::Duration;

use bson::{doc, Document};

use crate::router::client::Remote;
use crate::{ClusterRole, MongoSim, Options, ServerVersion};

/// Options for [`Cluster::start`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Number of shards (default 2).
    pub shards: usize,
    /// Number of routers (default 1).
    pub routers: usize,
    /// Port of the first router (0, the default, picks free ports; later routers take the
    /// next ports when it is not 0). Config server and shards always take free ports.
    pub port: u16,
    /// Imitated release (default 7.0).
    pub version: ServerVersion,
    /// Periodic no-op interval of every replica set (default 10 s, as a real server).
    pub noop_interval: Duration,
    /// Capped size of each oplog in bytes (default 192 MiB).
    pub oplog_size_bytes: u64,
    /// Test commands (`configureFailPoint`) on every node (default true).
    pub enable_test_commands: bool,
    /// How long a chunk migration's donor keeps the moved documents before its range
    /// deleter removes them, unless `moveChunk` asks `_waitForDelete` (default 900 s, the
    /// server's `orphanCleanupDelaySecs`).
    pub orphan_cleanup_delay: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            shards: 2,
            routers: 1,
            port: 0,
            version: ServerVersion::V7_0,
            noop_interval: Duration::from_secs(10),
            oplog_size_bytes: 192 * 1024 * 1024,
            enable_test_commands: true,
            orphan_cleanup_delay: Duration::from_secs(900),
        }
    }
}

impl ClusterOptions {
    /// Defaults: two shards, one router, 7.0.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the number of shards (at least 1).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }
    /// Sets the number of routers (at least 1).
    pub fn routers(mut self, n: usize) -> Self {
        self.routers = n.max(1);
        self
    }
    /// Sets the first router's port (0 = free ports).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Sets the imitated release.
    pub fn version(mut self, version: ServerVersion) -> Self {
        self.version = version;
        self
    }
    /// Sets the periodic no-op interval of every replica set.
    pub fn noop_interval(mut self, interval: Duration) -> Self {
        self.noop_interval = interval;
        self
    }
    /// Sets the oplog size of every replica set.
    pub fn oplog_size_bytes(mut self, bytes: u64) -> Self {
        self.oplog_size_bytes = bytes;
        self
    }
    /// Sets how long donors keep migrated orphans.
    pub fn orphan_cleanup_delay(mut self, delay: Duration) -> Self {
        self.orphan_cleanup_delay = delay;
        self
    }
    /// Turns test commands on or off on every node.
    pub fn enable_test_commands(mut self, on: bool) -> Self {
        self.enable_test_commands = on;
        self
    }

    fn node(&self, set: &str, role: ClusterRole) -> Options {
        Options::new()
            .repl_set(set)
            .version(self.version)
            .noop_interval(self.noop_interval)
            .oplog_size_bytes(self.oplog_size_bytes)
            .enable_test_commands(self.enable_test_commands)
            .cluster_role(role)
    }
}

/// A running cluster; every node stops when it is dropped.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    config: MongoSim,
    shards: Vec<MongoSim>,
    routers: Vec<MongoSim>,
}

/// The replica-set name of the `i`-th shard (0-based): `shard01`, `shard02`, …
pub fn shard_name(i: usize) -> String {
    format!("shard{:02}", i + 1)
}

impl Cluster {
    /// Starts the config server, the shards and the routers, then adds every shard through
    /// the first router. Returns once all of them accept connections.
    pub fn start(opts: ClusterOptions) -> io::Result<Cluster> {
        let config = MongoSim::start(opts.node("configRepl", ClusterRole::ConfigServer))?;
        let config_addr = config.addr().to_string();
        let mut routers = Vec::with_capacity(opts.routers);
        for i in 0..opts.routers.max(1) {
            let port = match opts.port {
                0 => 0,
                p => p.saturating_add(i as u16),
            };
            let ropts = Options::new()
                .port(port)
                .version(opts.version)
                .enable_test_commands(opts.enable_test_commands);
            routers.push(MongoSim::start_router(
                ropts,
                &config_addr,
                opts.orphan_cleanup_delay,
            )?);
        }
        let mut cluster = Cluster {
            opts,
            config,
            shards: Vec::new(),
            routers,
        };
        for _ in 0..cluster.opts.shards.max(1) {
            cluster.add_shard()?;
        }
        Ok(cluster)
    }

    /// Starts one more shard replica set and adds it to the cluster (`addShard` through the
    /// first router). Returns its name.
    pub fn add_shard(&mut self) -> io::Result<String> {
        let name = shard_name(self.shards.len());
        let shard = MongoSim::start(self.opts.node(&name, ClusterRole::ShardServer))?;
        let host = format!("{name}/{}", shard.addr());
        self.shards.push(shard);
        let reply = self.admin_command(doc! {"addShard": host})?;
        match reply.get_str("shardAdded") {
            Ok(added) => Ok(added.to_string()),
            Err(_) => Err(io::Error::other(format!("addShard failed: {reply}"))),
        }
    }

    /// Runs one command on `admin` through the first router, from a helper thread (so it
    /// works from sync code and from inside any runtime).
    pub fn admin_command(&self, body: Document) -> io::Result<Document> {
        let addr = self.routers[0].addr().to_string();
        let run = move || -> io::Result<Document> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let remote = Remote::new(addr);
                remote
                    .run_raw("admin", body)
                    .await
                    .map_err(|e| io::Error::other(format!("{}: {}", e.code_name, e.errmsg)))
            })
        };
        std::thread::spawn(run)
            .join()
            .map_err(|_| io::Error::other("admin command thread panicked"))?
    }

    /// Connection string listing every router: `mongodb://127.0.0.1:<p1>,127.0.0.1:<p2>/`.
    pub fn uri(&self) -> String {
        let hosts: Vec<String> = self.routers.iter().map(|r| r.addr().to_string()).collect();
        format!("mongodb://{}/", hosts.join(","))
    }

    /// Connection string of router `i` alone.
    pub fn router_uri(&self, i: usize) -> String {
        format!("mongodb://{}/", self.routers[i].addr())
    }

    /// The routers.
    pub fn routers(&self) -> &[MongoSim] {
        &self.routers
    }

    /// The shards' replica sets, in the order they were added.
    pub fn shards(&self) -> &[MongoSim] {
        &self.shards
    }

    /// Replica-set connection string of shard `i`: `mongodb://127.0.0.1:<port>/?replicaSet=shard0N`.
    pub fn shard_uri(&self, i: usize) -> String {
        self.shards[i].uri()
    }

    /// The name of shard `i` (its replica-set name and `config.shards` `_id`).
    pub fn shard_name(&self, i: usize) -> String {
        shard_name(i)
    }

    /// The config server replica set.
    pub fn config_server(&self) -> &MongoSim {
        &self.config
    }

    /// Replica-set connection string of the config server (`replicaSet=configRepl`).
    pub fn config_uri(&self) -> String {
        self.config.uri()
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// Stops every router, shard and the config server. Idempotent.
    pub fn shutdown(&mut self) {
        for r in &mut self.routers {
            r.shutdown();
        }
        for s in &mut self.shards {
            s.shutdown();
        }
        self.config.shutdown();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
