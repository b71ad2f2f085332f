//! The router (mongos): answers clients as a mongos does and runs their commands on the
//! shards and the config server through its wire-protocol client.
//!
//! Layer: between `server` and `commands`. The server hands a router node's requests to
//! [`dispatch`]; the router parses generic arguments, evaluates its own fail points and
//! answers its own `hello` through the `commands` helpers, and reaches every piece of data
//! over TCP (`client.rs`): metadata in the config server's `config.*` collections
//! (`meta.rs`), documents on the shards. Nothing here touches a shard's engine directly, so
//! a shard in another process works the same.
//!
//! Files: `client.rs` (connections), `meta.rs` (config metadata), `shard_key.rs` (key
//! patterns, hashing, chunk lookup), `admin.rs` (cluster administration commands),
//! `write.rs` (insert/update/delete/findAndModify routing), `read.rs` (find, count, distinct,
//! aggregate), `cursor.rs` (router-owned cursors), `ddl.rs` (create/drop/indexes/listings),
//! `hello.rs`.

pub(crate) mod admin;
pub(crate) mod change_stream;
pub(crate) mod client;
pub(crate) mod cursor;
pub(crate) mod ddl;
pub(crate) mod hello;
pub(crate) mod meta;
pub(crate) mod migrate;
pub(crate) mod owning_shard;
pub(crate) mod read;
pub(crate) mod shard_key;
pub(crate) mod txn;
pub(crate) mod write;

use std::collections::HashMap;
use std::sync::Arc;

use bson::{Bson, Document, Timestamp};
use futures::future::join_all;

use crate::commands::{self, failpoint, Ctx, Request};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::ServerVersion;
use client::Remote;

/// One router's state: its clients and its cursors. The cluster time lives in the router
/// node's engine clock (`Shared::engine`), which the server layer gossips.
#[derive(Debug)]
pub(crate) struct Router {
    /// The config server replica set's primary (shard id `config`).
    pub(crate) config: Arc<Remote>,
    /// Clients of the shards, by shard id, made from `config.shards` hosts on first use.
    shards: parking_lot::Mutex<HashMap<String, Arc<Remote>>>,
    /// Router-owned cursors (`cursor.rs`).
    pub(crate) cursors: cursor::Cursors,
    /// Transactions by session (`txn.rs`).
    pub(crate) txns: txn::Txns,
    /// Imitated release.
    pub(crate) version: ServerVersion,
    /// How long a donor keeps a migrated range's orphans (`orphanCleanupDelaySecs`).
    pub(crate) orphan_cleanup_delay: std::time::Duration,
}

impl Router {
    /// A router whose metadata lives on the config server at `config_addr`.
    pub(crate) fn new(
        config_addr: &str,
        version: ServerVersion,
        orphan_cleanup_delay: std::time::Duration,
    ) -> Self {
        Self {
            config: Arc::new(Remote::new(config_addr)),
            shards: parking_lot::Mutex::new(HashMap::new()),
            cursors: cursor::Cursors::default(),
            txns: txn::Txns::default(),
            version,
            orphan_cleanup_delay,
        }
    }

    /// The client of shard `id` (its `config.shards` host: `set/host:port,...`; the first
    /// host is the primary of a one-node set).
    pub(crate) async fn shard(&self, ctx: &mut Ctx<'_>, id: &str) -> CmdResult<Arc<Remote>> {
        if id == "config" {
            return Ok(self.config.clone());
        }
        if let Some(r) = self.shards.lock().get(id) {
            return Ok(r.clone());
        }
        let shards = meta::shards(self, ctx).await?;
        let Some(s) = shards.iter().find(|s| s.id == id) else {
            // SRV shard_registry.cpp: "Shard <id> not found"
            return Err(CommandError::from_code(
                ErrorCode::ShardNotFound,
                format!("Shard {id} not found"),
            ));
        };
        let remote = Arc::new(Remote::new(s.first_host()));
        self.shards.lock().insert(id.to_string(), remote.clone());
        Ok(remote)
    }

    /// Sends `body` to `remote` with the router's `$clusterTime` and folds the reply's
    /// cluster time and operation time back (SRV `strategy.cpp`
    /// `appendRequiredFieldsToResponse`: the reply's `operationTime` is the largest the
    /// contacted shards returned). An `ok: 0` reply is an `Err`.
    pub(crate) async fn send(
        &self,
        ctx: &mut Ctx<'_>,
        remote: &Remote,
        db: &str,
        body: Document,
    ) -> CmdResult<Document> {
        let body = with_cluster_time(ctx, body);
        let reply = remote.run_raw(db, body).await;
        absorb(ctx, reply)
    }

    /// [`Router::send`] to several servers at once; replies in the order of `targets`.
    pub(crate) async fn send_all(
        &self,
        ctx: &mut Ctx<'_>,
        db: &str,
        targets: Vec<(Arc<Remote>, Document)>,
    ) -> Vec<CmdResult<Document>> {
        let futures = targets.into_iter().map(|(remote, body)| {
            let body = with_cluster_time(ctx, body);
            let db = db.to_string();
            async move { remote.run_raw(&db, body).await }
        });
        let replies = join_all(futures).await;
        replies.into_iter().map(|r| absorb(ctx, r)).collect()
    }

    /// Forwards one statement of the client's command to shard `shard` (transaction fields
    /// as that participant needs them, `txn.rs`).
    pub(crate) async fn forward(
        &self,
        ctx: &mut Ctx<'_>,
        shard: &str,
        db: &str,
        mut body: Document,
    ) -> CmdResult<Document> {
        self.txns.for_participant(ctx, shard, &mut body);
        let remote = self.shard(ctx, shard).await?;
        self.send(ctx, &remote, db, body).await
    }

    /// [`Router::forward`] to several shards at once; replies in the order of `targets`.
    pub(crate) async fn forward_all(
        &self,
        ctx: &mut Ctx<'_>,
        db: &str,
        targets: Vec<(String, Document)>,
    ) -> CmdResult<Vec<CmdResult<Document>>> {
        let mut prepared = Vec::with_capacity(targets.len());
        for (shard, mut body) in targets {
            self.txns.for_participant(ctx, &shard, &mut body);
            prepared.push((self.shard(ctx, &shard).await?, body));
        }
        Ok(self.send_all(ctx, db, prepared).await)
    }

    /// A command to the config server.
    pub(crate) async fn config_cmd(
        &self,
        ctx: &mut Ctx<'_>,
        db: &str,
        body: Document,
    ) -> CmdResult<Document> {
        let body = with_cluster_time(ctx, body);
        let reply = self.config.run_raw(db, body).await;
        absorb(ctx, reply)
    }
}

/// `body` with the router's current `$clusterTime` (no auth: zero signature).
fn with_cluster_time(ctx: &Ctx<'_>, mut body: Document) -> Document {
    let now = ctx.shared.engine.lock().cluster_time();
    body.insert(
        "$clusterTime",
        commands::state::Shared::cluster_time_doc(now),
    );
    body
}

/// Folds a reply's `$clusterTime` into the router's clock and its `operationTime` into the
/// command's, strips both, and turns `ok: 0` into an error.
fn absorb(ctx: &mut Ctx<'_>, reply: CmdResult<Document>) -> CmdResult<Document> {
    let mut reply = reply?;
    if let Some(Bson::Document(ct)) = reply.remove("$clusterTime") {
        if let Ok(ts) = ct.get_timestamp("clusterTime") {
            ctx.shared.engine.lock().clock.advance_to(ts);
        }
    }
    if let Some(Bson::Timestamp(op)) = reply.remove("operationTime") {
        note_operation_time(ctx, op);
    }
    client::check_ok(reply)
}

/// Keeps the largest operation time seen by the command.
pub(crate) fn note_operation_time(ctx: &mut Ctx<'_>, ts: Timestamp) {
    let newer = match ctx.operation_time {
        Some(cur) => (ts.time, ts.increment) > (cur.time, cur.increment),
        None => true,
    };
    if newer {
        ctx.operation_time = Some(ts);
    }
}

/// The body a client sent, ready to forward: without `$db` (the client adds it) and the
/// client's `$clusterTime` / `$readPreference` (the router sends its own).
pub(crate) fn forwardable(body: &Document) -> Document {
    let mut out = body.clone();
    for k in ["$db", "$clusterTime", "$readPreference"] {
        out.remove(k);
    }
    out
}

/// Runs one command on a router: command lookup, `failCommand` before and error labels after
/// (the same fail-point machinery as a mongod, one registry per router), the `local` check,
/// then the handler.
pub(crate) async fn dispatch(
    router: &Arc<Router>,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    if !is_command(&req.name, ctx) {
        return Err(CommandError::command_not_found(&req.name));
    }
    if let Some(lsid) = &ctx.lsid {
        ctx.shared.sessions.vivify(lsid)?;
    }
    let facts = failpoint::CommandFacts::of(&req);
    let activation = failpoint::before_command(ctx, &facts).await?;
    let mut result = commands::check_request_db(&req.db);
    if result.is_ok() && req.db == "local" {
        // SRV strategy.cpp `ExecCommandClient::_prologue` (reference §3.1)
        result = Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "Can't use 'local' database through mongos",
        ));
    }
    let in_txn = txn::in_transaction(ctx);
    if in_txn {
        router.txns.begin_statement(ctx);
    }
    let mut result = match result {
        Ok(()) => run(router, ctx, req).await,
        Err(e) => Err(e),
    };
    if in_txn {
        // SRV `TransactionRouter::Router::appendRecoveryToken`: every ok reply in a
        // transaction (reference §6.1).
        if let Ok(body) = &mut result {
            body.insert("recoveryToken", router.txns.recovery_token(ctx));
        }
    }
    if ctx.operation_time.is_none() {
        // No shard answered: the router's own cluster time (reference §1.3).
        let now = ctx.shared.engine.lock().cluster_time();
        ctx.operation_time = Some(now);
    }
    failpoint::after_command(ctx, &facts, &activation, result)
}

/// Every command a router answers (keep in step with `run`).
const COMMANDS: &[&str] = &[
    "abortTransaction",
    "addShard",
    "aggregate",
    "balancerStart",
    "balancerStatus",
    "balancerStop",
    "buildInfo",
    "buildinfo",
    "collMod",
    "collStats",
    "commitTransaction",
    "connectionStatus",
    "count",
    "create",
    "createIndexes",
    "delete",
    "deleteIndexes",
    "distinct",
    "drop",
    "dropDatabase",
    "dropIndexes",
    "enableSharding",
    "endSessions",
    "find",
    "findAndModify",
    "findandmodify",
    "flushRouterConfig",
    "getMore",
    "getParameter",
    "getShardMap",
    "hello",
    "hostInfo",
    "insert",
    "isMaster",
    "isdbgrid",
    "ismaster",
    "killAllSessions",
    "killAllSessionsByPattern",
    "killCursors",
    "killSessions",
    "listCollections",
    "listDatabases",
    "listIndexes",
    "listShards",
    "moveChunk",
    "movePrimary",
    "ping",
    "refreshSessions",
    "removeShard",
    "renameCollection",
    "shardCollection",
    "split",
    "startSession",
    "update",
    "whatsmyuri",
];

fn is_command(name: &str, ctx: &Ctx<'_>) -> bool {
    COMMANDS.contains(&name)
        || (name == "configureFailPoint" && ctx.shared.opts.enable_test_commands)
}

async fn run(router: &Arc<Router>, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let r = router.as_ref();
    let name = req.name.clone();
    match name.as_str() {
        "hello" | "isMaster" | "ismaster" => hello::hello(ctx, req).await,
        "isdbgrid" => hello::isdbgrid(ctx, req).await,
        "configureFailPoint" if ctx.shared.opts.enable_test_commands => {
            failpoint::configure(ctx, req).await
        }
        "ping" => commands::admin::ping(ctx, req).await,
        "buildInfo" | "buildinfo" => commands::admin::build_info(ctx, req).await,
        "connectionStatus" => commands::admin::connection_status(ctx, req).await,
        "whatsmyuri" => commands::admin::whatsmyuri(ctx, req).await,
        "getParameter" => commands::admin::get_parameter(ctx, req).await,
        "hostInfo" => commands::admin::host_info(ctx, req).await,
        "endSessions" => commands::sessions::end_sessions(ctx, req).await,
        "refreshSessions" => commands::sessions::refresh_sessions(ctx, req).await,
        "startSession" => commands::sessions::start_session(ctx, req).await,
        "killAllSessions" | "killAllSessionsByPattern" | "killSessions" => {
            ddl::kill_sessions(r, ctx, req).await
        }
        // cluster administration (admin.rs)
        "addShard" => admin::add_shard(r, ctx, req).await,
        "balancerStart" | "balancerStop" | "balancerStatus" => admin::balancer(r, ctx, req).await,
        "enableSharding" => admin::enable_sharding(r, ctx, req).await,
        "flushRouterConfig" => admin::flush_router_config(r, ctx, req).await,
        "getShardMap" => admin::get_shard_map(r, ctx, req).await,
        "listShards" => admin::list_shards(r, ctx, req).await,
        "shardCollection" => admin::shard_collection(r, ctx, req).await,
        "moveChunk" => migrate::move_chunk(r, ctx, req).await,
        "movePrimary" => migrate::move_primary(r, ctx, req).await,
        "removeShard" => migrate::remove_shard(r, ctx, req).await,
        "split" => migrate::split(r, ctx, req).await,
        // writes (write.rs)
        "insert" => write::insert(r, ctx, req).await,
        "update" => write::update(r, ctx, req).await,
        "delete" => write::delete(r, ctx, req).await,
        "findAndModify" | "findandmodify" => write::find_and_modify(r, ctx, req).await,
        // reads (read.rs) and cursors (cursor.rs)
        "find" => read::find(r, ctx, req).await,
        "aggregate" => read::aggregate(r, ctx, req).await,
        "count" => read::count(r, ctx, req).await,
        "distinct" => read::distinct(r, ctx, req).await,
        "getMore" => cursor::get_more(r, ctx, req).await,
        "killCursors" => cursor::kill_cursors(r, ctx, req).await,
        // catalog (ddl.rs)
        "create" | "collMod" => ddl::to_primary(r, ctx, req).await,
        "createIndexes" | "dropIndexes" | "deleteIndexes" => ddl::indexes(r, ctx, req).await,
        "drop" => ddl::drop(r, ctx, req).await,
        "dropDatabase" => ddl::drop_database(r, ctx, req).await,
        "listCollections" | "listIndexes" => ddl::list_on_primary(r, ctx, req).await,
        "listDatabases" => ddl::list_databases(r, ctx, req).await,
        "collStats" => ddl::coll_stats(r, ctx, req).await,
        "renameCollection" => ddl::rename_collection(r, ctx, req).await,
        // transactions
        "commitTransaction" | "abortTransaction" => write::end_transaction(r, ctx, req).await,
        _ => Err(CommandError::command_not_found(&name)),
    }
}
