//! The server: `MongoSim` (start/stop on its own thread and runtime), the accept loop, one task
//! per connection, the shared state, reply decoration, and the periodic no-op task.
//!
//! A request travels: socket -> `wire` (framing) -> `handle_message` -> `commands::dispatch`
//! -> handler -> `decorate` (`ok`, `$clusterTime`, `operationTime`) -> `wire` -> socket.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use bson::{Bson, Document, Timestamp};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::commands::state::{Shared, Stats};
use crate::commands::{self, Conn, Ctx, Request};
use crate::engine::Engine;
use crate::error::ErrorCode;
use crate::router::{self, Router};
use crate::wire::{self, Incoming, WireError};
use crate::{ClusterRole, Options};

/// A running simulator; stops when dropped.
#[derive(Debug)]
pub struct MongoSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// What a connection serves: a mongod (`router: None`) or a router.
#[derive(Debug, Clone)]
struct Node {
    shared: Arc<Shared>,
    router: Option<Arc<Router>>,
}

impl MongoSim {
    /// Starts a server on 127.0.0.1 (`opts.port`, 0 = a free port) on its own thread with its
    /// own tokio runtime, so it works from sync code and from inside any runtime. Returns once
    /// the socket accepts connections.
    pub fn start(mut opts: Options) -> io::Result<MongoSim> {
        if opts.cluster_role == ClusterRole::Router {
            // A router needs a config server: `Cluster::start` starts routers.
            opts.cluster_role = ClusterRole::None;
        }
        Self::start_node(opts, None)
    }

    /// Starts a router (mongos) whose metadata lives on the config server at `config_addr`.
    pub(crate) fn start_router(
        opts: Options,
        config_addr: &str,
        orphan_cleanup_delay: std::time::Duration,
    ) -> io::Result<MongoSim> {
        let mut opts = opts.standalone();
        opts.cluster_role = ClusterRole::Router;
        let router = Arc::new(Router::new(config_addr, opts.version, orphan_cleanup_delay));
        Self::start_node(opts, Some(router))
    }

    fn start_node(opts: Options, router: Option<Arc<Router>>) -> io::Result<MongoSim> {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, opts.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut engine = Engine::new(&opts);
        if opts.cluster_role == ClusterRole::ConfigServer {
            engine.init_config_server();
        }
        let shared = Arc::new(Shared {
            opts,
            engine: parking_lot::Mutex::new(engine),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            stats: Stats::default(),
            failpoints: Arc::default(),
            txns: Arc::default(),
            sessions: Arc::default(),
            next_conn_id: AtomicI64::new(1),
            shutdown: shutdown_rx,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mongosim")
            .enable_all()
            .build()?;
        let node = Node {
            shared: shared.clone(),
            router,
        };
        let thread = std::thread::Builder::new()
            .name(format!("mongosim-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(node, listener));
                // Drops every connection task (closing its socket) and the no-op task.
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })?;
        Ok(MongoSim {
            shared,
            addr,
            shutdown_tx,
            thread: Some(thread),
        })
    }

    /// Connection string: `mongodb://127.0.0.1:<port>/?replicaSet=rs0` (no `replicaSet` when
    /// standalone or a router).
    pub fn uri(&self) -> String {
        match &self.shared.opts.repl_set {
            Some(rs) => format!("mongodb://{}/?replicaSet={rs}", self.addr),
            None => format!("mongodb://{}/", self.addr),
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The socket address the server listens on (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The options the server was started with.
    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// Server-side counters.
    #[doc(hidden)]
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Stops accepting, closes every connection and joins the server thread. Idempotent.
    pub fn shutdown(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MongoSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Accept loop; returns when shutdown is signalled.
async fn serve(node: Node, listener: StdTcpListener) {
    let shared = node.shared.clone();
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("mongosim: cannot register listener: {e}");
            return;
        }
    };
    let mut shutdown = shared.shutdown_signal();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(periodic_noop(shared.clone()));
    tasks.spawn(commands::sessions::background_jobs(shared.clone()));
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    tasks.spawn(connection(node.clone(), stream, peer));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("mongosim: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            // Reap finished connection tasks so the set stays bounded.
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("mongosim: a server task panicked: {}", panic_message(&e.into_panic()));
                    }
                }
            }
        }
    }
    drop(listener);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Writes `{msg: "periodic noop"}` when nothing was written for `noop_interval`
/// (reference §4.9, §9.1). Standalone servers have no oplog.
async fn periodic_noop(shared: Arc<Shared>) {
    if !shared.is_repl_set() {
        return;
    }
    let period = shared
        .opts
        .noop_interval
        .max(std::time::Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        shared.engine.lock().write_periodic_noop_if_idle();
    }
}

/// One connection: read a message, answer it, repeat. Any framing error closes only this
/// connection.
async fn connection(node: Node, stream: TcpStream, peer: SocketAddr) {
    node.shared.stats.open.fetch_add(1, Ordering::Relaxed);
    serve_connection(&node, stream, peer).await;
    node.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_connection(node: &Node, mut stream: TcpStream, peer: SocketAddr) {
    let shared = &node.shared;
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let mut conn = Conn {
        id: shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
        peer,
        local,
        app_name: None,
        client_metadata: None,
        hello_ok: false,
    };
    let mut shutdown = shared.shutdown_signal();
    loop {
        let message = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            m = wire::read_message(&mut stream) => m,
        };
        let message = match message {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("mongosim: closing connection {}: {e}", conn.id);
                return;
            }
        };
        let handled = AssertUnwindSafe(handle_message(node, &mut conn, &message))
            .catch_unwind()
            .await;
        let reply = match handled {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                tracing::debug!("mongosim: closing connection {}: {e}", conn.id);
                return;
            }
            Err(panic) => {
                // A bug, never expected: say where, close only this connection.
                tracing::error!(
                    peer = %peer,
                    op_code = wire::op_code(&message),
                    "mongosim: connection {} panicked handling a message: {}",
                    conn.id,
                    panic_message(&panic)
                );
                return;
            }
        };
        if let Some(bytes) = reply {
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}

/// The message of a caught panic (`panic!` with a string literal or a formatted message).
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Why a connection must be closed instead of answered.
#[derive(Debug)]
pub(crate) enum Close {
    /// Connection-fatal parse error (223, 233, 288) or bad framing.
    Wire(WireError),
    /// A handler asked for it (`closeConnection` fail point).
    Requested,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Wire(e) => write!(f, "{e}"),
            Close::Requested => f.write_str("closed on request"),
        }
    }
}

/// Parses one framed message, runs it, and encodes the reply (`None`: send nothing).
async fn handle_message(
    node: &Node,
    conn: &mut Conn,
    message: &[u8],
) -> Result<Option<Vec<u8>>, Close> {
    let shared = &node.shared;
    let request_id = wire::request_id(message);
    match wire::parse(message, shared.opts.version) {
        Err(WireError::Fatal(e)) => Err(Close::Wire(WireError::Fatal(e))),
        Err(other) => Err(Close::Wire(other)),
        Ok(Incoming::Msg {
            more_to_come,
            command,
        }) => {
            let body = match command {
                Ok(cmd) => run_command(node, conn, request(cmd)).await?,
                // Non-fatal parse errors (40430, 40571, …) are answered (SRV
                // service_entry_point_common.cpp `parseCommand`).
                Err(e) => error_body(shared, &e),
            };
            if more_to_come {
                // SPEC-OPMSG "moreToCome On Requests": nothing is sent back.
                return Ok(None);
            }
            Ok(Some(wire::encode_op_msg(
                next_response_id(),
                request_id,
                &body,
            )))
        }
        Ok(Incoming::QueryCommand { command }) => {
            let body = match command {
                Ok(cmd) => run_command(node, conn, request(cmd)).await?,
                Err(e) => error_body(shared, &e),
            };
            Ok(Some(wire::encode_op_reply(
                next_response_id(),
                request_id,
                0,
                &body,
            )))
        }
        Ok(Incoming::Ignored) => Ok(None),
        Ok(Incoming::QueryFailure { error }) => Ok(Some(wire::encode_op_reply(
            next_response_id(),
            request_id,
            wire::REPLY_QUERY_FAILURE,
            &to_bytes(&error),
        ))),
    }
}

/// The commands' request for a command the wire layer parsed.
fn request(cmd: wire::Command) -> Request {
    Request {
        name: cmd.name,
        db: cmd.db,
        body: cmd.body,
    }
}

fn next_response_id() -> i32 {
    static NEXT: AtomicI64 = AtomicI64::new(1);
    (NEXT.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff) as i32
}

/// Runs one command and returns the encoded, decorated reply body.
async fn run_command(node: &Node, conn: &mut Conn, req: Request) -> Result<Vec<u8>, Close> {
    let shared = &node.shared;
    shared.stats.commands.fetch_add(1, Ordering::Relaxed);
    if matches!(req.name.as_str(), "hello" | "isMaster" | "ismaster") {
        shared.stats.hello.fetch_add(1, Ordering::Relaxed);
    }
    let mut ctx = match Ctx::new(shared.clone(), conn, &req.body) {
        Ok(ctx) => ctx,
        Err(e) => return Ok(error_body(shared, &e)),
    };
    if shared.opts.cluster_role != ClusterRole::None {
        // Cluster members advance their clock to the gossiped cluster time (SRV
        // `vector_clock.cpp` `gossipIn`), so a write on any shard is ordered after
        // everything its sender has seen.
        if let Some(ts) = ctx.client_cluster_time {
            shared.engine.lock().clock.advance_to(ts);
        }
    }
    let result = match &node.router {
        Some(r) => router::dispatch(r, &mut ctx, req).await,
        None => commands::dispatch(&mut ctx, req).await,
    };
    if ctx.close_connection {
        return Err(Close::Requested);
    }
    let operation_time = ctx.operation_time;
    let body = match result {
        Ok(body) => match ctx.raw_reply.take() {
            // A handler that built its body as raw BSON (e.g. batches of raw oplog entries).
            Some(mut raw) => {
                if raw.get("ok").ok().flatten().is_none() {
                    raw.append("ok", 1.0);
                }
                if let Some((cluster_time, operation_time)) = cluster_fields(shared, operation_time)
                {
                    match bson::RawDocumentBuf::from_document(&cluster_time) {
                        Ok(ct) => raw.append("$clusterTime", ct),
                        Err(_) => return Ok(error_body(shared, &internal_error())),
                    }
                    raw.append("operationTime", operation_time);
                }
                return Ok(raw.into_bytes());
            }
            None => with_ok(body),
        },
        Err(e) => e.to_reply(),
    };
    Ok(to_bytes(&decorate(shared, body, operation_time)))
}

fn with_ok(mut body: Document) -> Document {
    if !body.contains_key("ok") {
        body.insert("ok", 1.0);
    }
    body
}

fn internal_error() -> crate::CommandError {
    crate::CommandError::from_code(ErrorCode::InternalError, "failed to encode reply")
}

/// A decorated error reply, encoded.
fn error_body(shared: &Shared, e: &crate::CommandError) -> Vec<u8> {
    to_bytes(&decorate(shared, e.to_reply(), None))
}

/// Encodes a reply body. Encoding a `Document` only fails for keys containing NUL, which no
/// handler produces; fall back to an InternalError reply rather than panic.
fn to_bytes(body: &Document) -> Vec<u8> {
    let mut buf = Vec::new();
    if body.to_writer(&mut buf).is_err() {
        buf.clear();
        let _ = internal_error().to_reply().to_writer(&mut buf);
    }
    buf
}

/// `$clusterTime` and `operationTime` in replica-set mode; standalone replies carry neither
/// (reference §2.7, SPEC-CC). Reads report the last applied optime.
fn cluster_fields(
    shared: &Shared,
    operation_time: Option<Timestamp>,
) -> Option<(Document, Timestamp)> {
    if shared.opts.cluster_role == ClusterRole::Router {
        // A router's clock is its vector clock; its operationTime is set by the command
        // (reference sharded-clusters.md §1.3).
        let now = shared.engine.lock().cluster_time();
        return Some((Shared::cluster_time_doc(now), operation_time.unwrap_or(now)));
    }
    if !shared.is_repl_set() {
        return None;
    }
    let (cluster_time, last_applied) = {
        let engine = shared.engine.lock();
        (engine.cluster_time(), engine.last_applied())
    };
    Some((
        Shared::cluster_time_doc(cluster_time),
        operation_time.unwrap_or(last_applied),
    ))
}

/// Appends `$clusterTime` and `operationTime` (replica-set mode), to successes and errors
/// alike.
fn decorate(shared: &Shared, mut body: Document, operation_time: Option<Timestamp>) -> Document {
    if let Some((cluster_time, operation_time)) = cluster_fields(shared, operation_time) {
        body.insert("$clusterTime", Bson::Document(cluster_time));
        body.insert("operationTime", operation_time);
    }
    body
}
