//! Command dispatch: one `match` on the command name, one file per command family.
//!
//! Every handler is an `async fn(&mut Ctx<'_>, Request) -> CmdResult<Document>` returning the
//! reply body without `ok`/`$clusterTime`/`operationTime`; the server layer decorates it
//! (reference §2.7, §8.1). A handler may put `ok` into its body itself; the server then leaves
//! it alone.

pub(crate) mod admin;
pub(crate) mod agg_write;
pub(crate) mod args;
pub(crate) mod catalog;
pub(crate) mod change_stream;
pub(crate) mod crud;
pub(crate) mod cursor;
pub(crate) mod failpoint;
pub(crate) mod hello;
pub(crate) mod reply;
pub(crate) mod sessions;
pub(crate) mod shardsvr;
pub(crate) mod state;
pub(crate) mod txn;

use std::net::SocketAddr;
use std::sync::Arc;

use bson::{Bson, Document, Timestamp};

use crate::error::{CmdResult, CommandError};
use args::{expect_bool, expect_doc, expect_long, parse_max_time_ms};
pub(crate) use args::{type_name, wrong_type, GENERIC_ARGS};
use state::Shared;

/// One command as received: the kind-0 body with every kind-1 document sequence merged in as
/// an array field (reference §1.2); `$db` stays in the body.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// First key of the body (SPEC-OPMSG: "The command name MUST continue to be the first key").
    pub(crate) name: String,
    /// The `$db` argument.
    pub(crate) db: String,
    /// The whole body.
    pub(crate) body: Document,
}

impl Request {
    /// The value of the first field (`{find: "coll"}` -> `"coll"`).
    pub(crate) fn target(&self) -> Option<&Bson> {
        self.body.get(&self.name)
    }
}

/// Per-connection state, owned by the connection task and lent to each command.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Server-assigned connection id (`connectionId` in hello, reference §2.2).
    pub(crate) id: i64,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The address the client connected to (what `hosts`/`me`/`primary` report, §2.5).
    pub(crate) local: SocketAddr,
    /// `client.application.name` from the handshake.
    pub(crate) app_name: Option<String>,
    /// The client metadata document of the handshake (`client`), once received.
    pub(crate) client_metadata: Option<Document>,
    /// The client sent `helloOk: true` (it understands `hello`, §2.1).
    pub(crate) hello_ok: bool,
}

/// Everything a command handler may need besides the request itself.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// Server-wide state (options, engine).
    pub(crate) shared: Arc<Shared>,
    /// The connection the command arrived on.
    pub(crate) conn: &'a mut Conn,
    /// `lsid` (generic argument, reference §1.6).
    pub(crate) lsid: Option<Document>,
    /// `txnNumber`.
    pub(crate) txn_number: Option<i64>,
    /// `autocommit` (only ever `false` when sent, §6).
    pub(crate) autocommit: Option<bool>,
    /// `startTransaction: true`.
    pub(crate) start_transaction: bool,
    /// `readConcern`.
    pub(crate) read_concern: Option<Document>,
    /// `writeConcern`.
    pub(crate) write_concern: Option<Document>,
    /// `maxTimeMS` (0 = none, as on the server).
    pub(crate) max_time_ms: Option<i64>,
    /// `$readPreference`.
    pub(crate) read_preference: Option<Document>,
    /// `apiVersion` (Stable API); accepted, no behaviour change.
    pub(crate) api_version: Option<String>,
    /// `comment`.
    pub(crate) comment: Option<Bson>,
    /// The client's gossiped `$clusterTime` (accepted with any signature: no auth, §2.7).
    pub(crate) client_cluster_time: Option<Timestamp>,
    /// Set by a handler to the optime of the write it made; the reply's `operationTime`
    /// (reference §2.7). `None`: the server uses the last applied optime.
    pub(crate) operation_time: Option<Timestamp>,
    /// Set by a handler (e.g. a `closeConnection` fail point) to drop the connection instead
    /// of replying.
    pub(crate) close_connection: bool,
    /// Set by a handler that built its reply body as raw BSON (e.g. a batch of raw oplog
    /// entries, so nothing is decoded and re-encoded): on success the server sends it instead
    /// of the returned `Document` (return an empty one), appending `ok: 1.0` unless present,
    /// then `$clusterTime`/`operationTime`. Ignored when the handler returns `Err`.
    pub(crate) raw_reply: Option<bson::RawDocumentBuf>,
}

impl<'a> Ctx<'a> {
    /// A context for one command on `conn`, with the generic arguments parsed from `body`.
    pub(crate) fn new(shared: Arc<Shared>, conn: &'a mut Conn, body: &Document) -> CmdResult<Self> {
        let mut ctx = Ctx {
            shared,
            conn,
            lsid: None,
            txn_number: None,
            autocommit: None,
            start_transaction: false,
            read_concern: None,
            write_concern: None,
            max_time_ms: None,
            read_preference: None,
            api_version: None,
            comment: None,
            client_cluster_time: None,
            operation_time: None,
            close_connection: false,
            raw_reply: None,
        };
        ctx.parse_generic_args(body)?;
        Ok(ctx)
    }

    /// Parses the generic arguments (reference §1.6). Type errors follow the server's IDL
    /// wording ("BSON field '…' is the wrong type '…', expected type '…'", §8.3).
    fn parse_generic_args(&mut self, body: &Document) -> CmdResult<()> {
        for (key, value) in body {
            match key.as_str() {
                "lsid" => self.lsid = Some(expect_doc(key, value)?.clone()),
                "txnNumber" => self.txn_number = Some(expect_long(key, value)?),
                "autocommit" => self.autocommit = Some(expect_bool(key, value)?),
                "startTransaction" => self.start_transaction = expect_bool(key, value)?,
                "readConcern" => self.read_concern = Some(expect_doc(key, value)?.clone()),
                "writeConcern" => self.write_concern = Some(expect_doc(key, value)?.clone()),
                "maxTimeMS" => self.max_time_ms = parse_max_time_ms(key, value)?,
                "$readPreference" => self.read_preference = Some(expect_doc(key, value)?.clone()),
                "apiVersion" => {
                    if let Bson::String(s) = value {
                        self.api_version = Some(s.clone());
                    }
                }
                "comment" => self.comment = Some(value.clone()),
                "$clusterTime" => {
                    if let Bson::Document(d) = value {
                        if let Ok(ts) = d.get_timestamp("clusterTime") {
                            self.client_cluster_time = Some(ts);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The entry point's database-name check, done before any command runs (SRV
/// service_entry_point_common.cpp: 73 "Invalid database name: '<db>'" unless
/// `NamespaceString::validDBName(db, DollarInDbNameBehavior::Allow)`): non-empty, at most 63
/// bytes, no `/`, backslash, `.`, `"`, space or NUL; `$` is allowed here (`$external`).
pub(crate) fn check_request_db(db: &str) -> CmdResult<()> {
    let valid = !db.is_empty()
        && db.len() <= 63
        && !db
            .bytes()
            .any(|b| matches!(b, b'/' | b'\\' | b'.' | b'"' | b' ' | 0));
    if valid {
        Ok(())
    } else {
        Err(CommandError::invalid_namespace(format!(
            "Invalid database name: '{db}'"
        )))
    }
}

/// Runs one command with the `failCommand` fail point evaluated before it and the server's
/// error labels / fail-point `writeConcernError` applied after it (`failpoint.rs`, reference
/// §7.10, §5.10, §6).
///
/// Order of the checks as in SRV service_entry_point_common.cpp (7.0): the command lookup
/// (`CommandHelpers::findCommand`, 59) comes first, in `receivedCommands`; then
/// `ExecCommandDatabase::_initiateCommand` evaluates the `failCommand` fail point and only
/// then validates the database name (73), then the session/transaction options.
pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    if !is_command(&req.name, &ctx.shared) {
        return Err(CommandError::command_not_found(&req.name));
    }
    if IGNORE_SESSION.contains(&req.name.as_str()) {
        // SRV `attachLogicalSessionsToOpCtx() == false`: the command does not run in the
        // session it names (so killing sessions never kills itself).
        ctx.lsid = None;
        ctx.txn_number = None;
        ctx.autocommit = None;
        ctx.start_transaction = false;
    }
    if let Some(lsid) = &ctx.lsid {
        // SRV initializeOperationSessionInfo: the session becomes (or stays) active.
        ctx.shared.sessions.vivify(lsid)?;
    }
    let facts = failpoint::CommandFacts::of(&req);
    let activation = failpoint::before_command(ctx, &facts).await?;
    if let Err(e) = check_request_db(&req.db) {
        return failpoint::after_command(ctx, &facts, &activation, Err(e));
    }
    if req.body.contains_key("shardVersion")
        && ctx.shared.opts.cluster_role == crate::ClusterRole::ShardServer
    {
        // A router's versioned command: orphans are filtered (engine::versioned).
        let result = crate::engine::with_versioned(run_statement(ctx, req)).await;
        return failpoint::after_command(ctx, &facts, &activation, result);
    }
    let result = run_statement(ctx, req).await;
    failpoint::after_command(ctx, &facts, &activation, result)
}

/// Runs a command, inside its transaction when it is a statement of one.
async fn run_statement(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    match txn::before_command(ctx, &req) {
        Err(e) => Err(e),
        Ok(None) => run(ctx, req).await,
        Ok(Some(stmt)) => {
            if ctx.start_transaction {
                if let (Some(lsid), Some(txn)) = (&ctx.lsid, ctx.txn_number) {
                    // For the transaction lifetime limit (sessions.rs).
                    ctx.shared.sessions.transaction_started(lsid, txn);
                }
            }
            // A statement of a multi-document transaction runs against the transaction's
            // private engine (txn.rs).
            let live = std::mem::replace(&mut ctx.shared, stmt.shared());
            let r = run(ctx, req).await;
            ctx.shared = live;
            ctx.operation_time = None;
            stmt.after(&ctx.shared, r)
        }
    }
}

/// Commands whose session arguments the server ignores (SRV kill_sessions_command.cpp,
/// kill_all_sessions_command.cpp, kill_all_sessions_by_pattern_command.cpp).
const IGNORE_SESSION: &[&str] = &[
    "killAllSessions",
    "killAllSessionsByPattern",
    "killSessions",
];

/// Every command name `run` routes (keep in step with its arms: a name missing here is
/// answered with 59 CommandNotFound before anything else is checked).
const COMMANDS: &[&str] = &[
    "abortTransaction",
    "aggregate",
    "buildInfo",
    "buildinfo",
    "collMod",
    "collStats",
    "commitTransaction",
    "connectionStatus",
    "count",
    "create",
    "createIndexes",
    "dbStats",
    "dbstats",
    "delete",
    "deleteIndexes",
    "distinct",
    "drop",
    "dropDatabase",
    "dropIndexes",
    "endSessions",
    "find",
    "findAndModify",
    "findandmodify",
    "getCmdLineOpts",
    "getMore",
    "getParameter",
    "hello",
    "hostInfo",
    "insert",
    "isMaster",
    "ismaster",
    "killAllSessions",
    "killAllSessionsByPattern",
    "killCursors",
    "killSessions",
    "listCollections",
    "listDatabases",
    "listIndexes",
    "ping",
    "refreshSessions",
    "renameCollection",
    "replSetGetStatus",
    "serverStatus",
    "startSession",
    "update",
    "whatsmyuri",
];

/// `true` when the server has a command of this name (test commands only with
/// `enableTestCommands`, SRV `TestingProctor`).
fn is_command(name: &str, shared: &Shared) -> bool {
    COMMANDS.contains(&name)
        || (matches!(name, "configureFailPoint" | "refreshLogicalSessionCacheNow")
            && shared.opts.enable_test_commands)
        || ((shardsvr::COMMANDS.contains(&name) || txn::SHARD_COMMANDS.contains(&name))
            && shared.opts.cluster_role == crate::ClusterRole::ShardServer)
}

/// Runs one command. Helpers add their arms here (small edits, keep alphabetical within a family)
/// and the name to `COMMANDS`.
async fn run(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let name = req.name.clone();
    match name.as_str() {
        // change streams (change_stream.rs): aggregate with a $changeStream stage
        "aggregate" if change_stream::is_change_stream(&req) => {
            change_stream::aggregate(ctx, req).await
        }
        // the router's internal commands to a shard (shardsvr.rs; shard servers only)
        n if shardsvr::COMMANDS.contains(&n) => shardsvr::run(ctx, req).await,
        n if txn::SHARD_COMMANDS.contains(&n) => txn::run_shard_command(ctx, req).await,
        // transactions (txn.rs)
        "abortTransaction" => txn::abort(ctx, req).await,
        "commitTransaction" => txn::commit(ctx, req).await,
        // fail points (failpoint.rs); a test command: absent unless enableTestCommands
        "configureFailPoint" if ctx.shared.opts.enable_test_commands => {
            failpoint::configure(ctx, req).await
        }
        // handshake / topology (hello.rs)
        "hello" | "isMaster" | "ismaster" => hello::hello(ctx, req).await,
        // admin.rs
        "buildInfo" | "buildinfo" => admin::build_info(ctx, req).await,
        "connectionStatus" => admin::connection_status(ctx, req).await,
        "getCmdLineOpts" => admin::get_cmd_line_opts(ctx, req).await,
        "getParameter" => admin::get_parameter(ctx, req).await,
        "hostInfo" => admin::host_info(ctx, req).await,
        "ping" => admin::ping(ctx, req).await,
        "replSetGetStatus" => admin::repl_set_get_status(ctx, req).await,
        "serverStatus" => admin::server_status(ctx, req).await,
        "whatsmyuri" => admin::whatsmyuri(ctx, req).await,
        // sessions (sessions.rs)
        "endSessions" => sessions::end_sessions(ctx, req).await,
        "killAllSessions" => sessions::kill_all_sessions(ctx, req).await,
        "killAllSessionsByPattern" => sessions::kill_all_sessions_by_pattern(ctx, req).await,
        "killSessions" => sessions::kill_sessions(ctx, req).await,
        "refreshLogicalSessionCacheNow" if ctx.shared.opts.enable_test_commands => {
            sessions::refresh_now(ctx, req).await
        }
        "refreshSessions" => sessions::refresh_sessions(ctx, req).await,
        "startSession" => sessions::start_session(ctx, req).await,
        // crud.rs
        "count" => crud::count(ctx, req).await,
        "delete" => crud::delete(ctx, req).await,
        "distinct" => crud::distinct(ctx, req).await,
        "findAndModify" | "findandmodify" => crud::find_and_modify(ctx, req).await,
        "insert" => crud::insert(ctx, req).await,
        "update" => crud::update(ctx, req).await,
        // cursor.rs
        "aggregate" => cursor::aggregate(ctx, req).await,
        "find" => cursor::find(ctx, req).await,
        "getMore" => cursor::get_more(ctx, req).await,
        "killCursors" => cursor::kill_cursors(ctx, req).await,
        // catalog.rs
        "collMod" => catalog::coll_mod(ctx, req).await,
        "collStats" => catalog::coll_stats(ctx, req).await,
        "dbStats" | "dbstats" => catalog::db_stats(ctx, req).await,
        "create" => catalog::create(ctx, req).await,
        "createIndexes" => catalog::create_indexes(ctx, req).await,
        "drop" => catalog::drop(ctx, req).await,
        "dropDatabase" => catalog::drop_database(ctx, req).await,
        "dropIndexes" | "deleteIndexes" => catalog::drop_indexes(ctx, req).await,
        "listCollections" => catalog::list_collections(ctx, req).await,
        "listDatabases" => catalog::list_databases(ctx, req).await,
        "listIndexes" => catalog::list_indexes(ctx, req).await,
        "renameCollection" => catalog::rename_collection(ctx, req).await,
        // SRV src/mongo/db/service_entry_point_common.cpp: "no such command: '<name>'"
        _ => Err(CommandError::command_not_found(&name)),
    }
}

#[cfg(test)]
mod tests {
    use super::COMMANDS;

    /// Every name `run` routes is known to `is_command` (otherwise it would answer 59 before
    /// reaching its handler): a guard for helpers adding arms.
    #[test]
    fn every_routed_command_is_listed() {
        let src = include_str!("mod.rs");
        let body = &src[src.find("async fn run(").expect("run")..];
        let arm = regex::Regex::new(r#"(?m)^\s+((?:"[A-Za-z$]+"\s*\|?\s*)+)(?:if [^=]*)?=>"#)
            .expect("regex");
        let name = regex::Regex::new(r#""([A-Za-z$]+)""#).expect("regex");
        let mut routed = Vec::new();
        for caps in arm.captures_iter(body) {
            for n in name.captures_iter(&caps[1]) {
                routed.push(n[1].to_string());
            }
        }
        assert!(routed.len() > 40, "{routed:?}");
        for n in routed {
            let test_only = matches!(
                n.as_str(),
                "configureFailPoint" | "refreshLogicalSessionCacheNow"
            );
            assert!(
                test_only || COMMANDS.contains(&n.as_str()),
                "`{n}` is routed by run() but missing from COMMANDS"
            );
        }
    }
}
