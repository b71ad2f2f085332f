//! The state every command may reach: options, the engine, fail points, transactions and
//! sessions, and the server's counters. The server layer creates it and hands it to each
//! command through `Ctx`; nothing here knows about sockets or framing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bson::{doc, Binary, Document, Timestamp};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::Options;

/// State shared by every connection of one simulator.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Start-up options.
    pub(crate) opts: Options,
    /// Catalog, oplog, clock, cursors. Never hold this lock across an `.await`.
    pub(crate) engine: parking_lot::Mutex<Engine>,
    /// When the server started (uptime).
    pub(crate) started: Instant,
    /// Wall-clock start time (`replSetGetStatus` election dates).
    pub(crate) started_wall: SystemTime,
    /// Counters for tests and `serverStatus`.
    pub(crate) stats: Stats,
    /// Test fail points (`commands/failpoint.rs`).
    pub(crate) failpoints: Arc<super::failpoint::FailPoints>,
    /// Multi-document transactions by session (`commands/txn.rs`).
    pub(crate) txns: Arc<super::txn::Transactions>,
    /// Logical sessions: ended sessions, transaction start times (`commands/sessions.rs`).
    pub(crate) sessions: Arc<super::sessions::SessionCache>,
    /// The next connection id (`connectionId` in hello).
    pub(crate) next_conn_id: AtomicI64,
    /// Turns `true` when the server shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The same server state around another engine: the private engine the statements of a
    /// multi-document transaction run against (`commands/txn.rs`).
    pub(crate) fn with_engine(&self, engine: Engine) -> Shared {
        Shared {
            opts: self.opts.clone(),
            engine: parking_lot::Mutex::new(engine),
            started: self.started,
            started_wall: self.started_wall,
            stats: Stats::default(),
            failpoints: self.failpoints.clone(),
            txns: self.txns.clone(),
            sessions: self.sessions.clone(),
            next_conn_id: AtomicI64::new(0),
            shutdown: self.shutdown.clone(),
        }
    }

    /// `true` in replica-set mode (`--replSet`), `false` when standalone.
    pub(crate) fn is_repl_set(&self) -> bool {
        self.opts.repl_set.is_some()
    }

    /// A receiver that turns `true` when the server shuts down (for long waits such as
    /// awaitData getMores).
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// `$clusterTime` as every replica-set member appends it (reference §2.7): no auth, so the
    /// signature is 20 zero bytes with keyId 0.
    pub(crate) fn cluster_time_doc(ts: Timestamp) -> Document {
        doc! {
            "clusterTime": ts,
            "signature": {
                "hash": Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0u8; 20] },
                "keyId": 0i64,
            },
        }
    }
}

/// Server-side counters, exposed for tests (e.g. proving the driver's monitor does not spin).
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) hello: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) open: AtomicU64,
}

impl Stats {
    /// Number of `hello`/`isMaster`/`ismaster` commands served (OP_MSG and OP_QUERY).
    pub fn hello_count(&self) -> u64 {
        self.hello.load(Ordering::Relaxed)
    }
    /// Number of commands served (including hellos).
    pub fn command_count(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }
    /// Number of connections accepted.
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
    /// Number of connections currently open.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}
