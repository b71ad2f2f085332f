//! Multi-document transactions (reference §6): `startTransaction` / `autocommit: false` /
//! `txnNumber` / `lsid`, `commitTransaction`, `abortTransaction`.
//!
//! Each transaction runs its statements against a private engine: snapshot clones of the
//! databases it touches (each taken when a statement first names it), with its own empty
//! oplog that collects the operations the statements produce. The ordinary command handlers
//! serve those statements unchanged (the dispatcher hands them a `Shared` around the private
//! engine), so reads inside the transaction see its own writes and nobody else sees them. At
//! commit the final state of every touched document is applied to the live catalog and the
//! collected operations are logged as ONE `admin.$cmd` `applyOps` entry with `lsid`,
//! `txnNumber` and a null `prevOpTime`; inner operations carry no `ts`/`t`/`v`/`wall`. Over
//! 16 MB of operations become a `partialTxn` chain (`Engine::log_transaction_chain`).
//! Aborted transactions write nothing.
//!
//! Followed sources: SRV `src/mongo/db/initialize_operation_session_info.cpp` (argument
//! checks), SRV `src/mongo/db/transaction/transaction_participant.cpp` (`beginOrContinue`,
//! 225 / 251 / 256 errors), SRV `service_entry_point_common.cpp` (263 for commands and
//! databases not allowed in transactions, readConcern / writeConcern rules), the transactions
//! spec tests (`abort ignores TransactionAborted`: a failed statement aborts the transaction;
//! `write conflict commit`: a second transaction writing the same document gets 112
//! WriteConflict with `TransientTransactionError`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bson::{doc, Bson, Document, Timestamp};
use parking_lot::Mutex;

use super::state::Shared;
use super::{Ctx, Request};
use crate::engine::oplog::Oplog;
use crate::engine::Engine;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// Commands that may run inside a transaction (SRV `commands.cpp`
/// `kAllowedTransactionCommands`, 7.0).
const ALLOWED_IN_TXN: &[&str] = &[
    "abortTransaction",
    "aggregate",
    "commitTransaction",
    "coordinateCommitTransaction",
    "create",
    "createIndexes",
    "delete",
    "distinct",
    "find",
    "findandmodify",
    "findAndModify",
    "getMore",
    "insert",
    "killCursors",
    "prepareTransaction",
    "update",
    "bulkWrite",
];

/// Transaction commands only a shard server answers (a router's two-phase commit and
/// recovery).
pub(crate) const SHARD_COMMANDS: &[&str] = &["coordinateCommitTransaction", "prepareTransaction"];

/// Runs one of [`SHARD_COMMANDS`].
pub(crate) async fn run_shard_command(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    if req.name == "prepareTransaction" {
        prepare(ctx, req).await
    } else {
        coordinate_commit(ctx, req).await
    }
}

/// A document a transaction wrote: `(db, coll, _id)`; `_id` rendered as extended JSON so it
/// can be hashed.
type DocKey = (String, String, String);

enum State {
    InProgress {
        shared: Arc<Shared>,
        /// Oplog sequence number where the transaction's own operations start.
        first_seq: u64,
        /// Documents written so far (for write conflicts with other transactions).
        writes: HashSet<DocKey>,
        /// Sequence number up to which `writes` has been computed.
        scanned_seq: u64,
        /// Databases copied into the private catalog so far: each is snapshotted when a
        /// statement first touches it, so a transaction never copies the whole server.
        snapshotted: HashSet<String>,
    },
    /// Prepared by a router's two-phase commit (shard servers only): its `applyOps`
    /// entry with `prepare: true` is in the oplog; the writes are applied at commit.
    Prepared {
        shared: Arc<Shared>,
        first_seq: u64,
        /// `prepareTimestamp`: the optime of the prepare entry.
        prepare_ts: Timestamp,
    },
    Committed {
        /// Optime of the `applyOps` entry (None for a read-only transaction).
        ts: Option<Timestamp>,
    },
    Aborted,
}

struct Session {
    txn_number: i64,
    state: State,
}

/// All sessions' transactions (`Shared::txns`).
#[derive(Default)]
pub(crate) struct Transactions {
    sessions: Mutex<HashMap<Vec<u8>, Session>>,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions")
            .field("sessions", &self.sessions.lock().len())
            .finish()
    }
}

fn session_key(lsid: &Document) -> Vec<u8> {
    match lsid.get("id") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(other) => other.to_string().into_bytes(),
        None => Vec::new(),
    }
}

fn lsid_display(lsid: &Document) -> String {
    match lsid.get("id") {
        Some(Bson::Binary(b)) => format!("{} - ", bson::Uuid::from_bytes(to16(&b.bytes))),
        _ => String::new(),
    }
}

fn to16(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    for (i, x) in b.iter().take(16).enumerate() {
        a[i] = *x;
    }
    a
}

fn no_such_transaction(msg: impl Into<String>) -> CommandError {
    CommandError::from_code(ErrorCode::NoSuchTransaction, msg)
}

/// Where a command runs: `None` = the live engine (not in a transaction).
pub(crate) struct Statement {
    key: Vec<u8>,
    txn_number: i64,
    shared: Arc<Shared>,
}

/// Checks the session arguments of a command and, for a statement of a multi-document
/// transaction, starts or continues the transaction and returns the `Shared` whose engine
/// the statement must run against. Called by the dispatcher before every command.
pub(crate) fn before_command(ctx: &Ctx<'_>, req: &Request) -> CmdResult<Option<Statement>> {
    let Some((lsid, txn_number)) = transaction_args(ctx, req)? else {
        return Ok(None);
    };
    check_allowed_in_txn(ctx, req)?;
    let key = session_key(lsid);
    let txns = ctx.shared.txns.clone();
    let mut sessions = txns.sessions.lock();
    if ctx.start_transaction {
        return start_transaction(ctx, req, &mut sessions, key, lsid, txn_number).map(Some);
    }
    continue_transaction(ctx, req, &mut sessions, key, lsid, txn_number)
}

/// The session arguments of a statement of a transaction, `(lsid, txnNumber)`; `None` for a
/// command outside transactions (SRV initialize_operation_session_info.cpp).
fn transaction_args<'c>(ctx: &'c Ctx<'_>, req: &Request) -> CmdResult<Option<(&'c Document, i64)>> {
    if ctx.txn_number.is_some() && ctx.lsid.is_none() {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "Transaction number requires a session ID to also be specified",
        ));
    }
    if ctx.autocommit.is_none() {
        if ctx.start_transaction {
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                "'startTransaction' field requires 'autocommit' field to also be specified",
            ));
        }
        if matches!(req.name.as_str(), "commitTransaction" | "abortTransaction") {
            // SRV: these commands only exist inside transactions.
            return Err(CommandError::from_code(
                ErrorCode::NotARetryableWriteCommand,
                format!("{} must be run within a transaction", req.name),
            ));
        }
        return Ok(None);
    }
    if ctx.autocommit == Some(true) {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "Specifying autocommit=true is not allowed.",
        ));
    }
    let (Some(lsid), Some(txn_number)) = (ctx.lsid.as_ref(), ctx.txn_number) else {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "'autocommit' field requires a transaction number to also be specified",
        ));
    };
    Ok(Some((lsid, txn_number)))
}

/// Whether the command may run in a transaction: on a replica set, an allowed command, not
/// on an internal database, no write concern on a statement.
fn check_allowed_in_txn(ctx: &Ctx<'_>, req: &Request) -> CmdResult<()> {
    if !ctx.shared.is_repl_set() {
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "Transaction numbers are only allowed on a replica set member or mongos",
        ));
    }
    if !ALLOWED_IN_TXN.contains(&req.name.as_str()) {
        return Err(CommandError::from_code(
            ErrorCode::OperationNotSupportedInTransaction,
            format!("Cannot run '{}' in a multi-document transaction.", req.name),
        ));
    }
    let txn_cmd = matches!(
        req.name.as_str(),
        "commitTransaction"
            | "abortTransaction"
            | "prepareTransaction"
            | "coordinateCommitTransaction"
    );
    if !txn_cmd && matches!(req.db.as_str(), "admin" | "config" | "local") {
        return Err(CommandError::from_code(
            ErrorCode::OperationNotSupportedInTransaction,
            format!(
                "Cannot run command against the '{}' database in a transaction.",
                req.db
            ),
        ));
    }
    if !txn_cmd && ctx.write_concern.is_some() {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "Cannot set write concern after starting a transaction.",
        ));
    }
    Ok(())
}

/// `startTransaction`: a newer transaction number than the session's, a readConcern level a
/// transaction allows; the transaction gets a private engine with a snapshot of `req.db`.
fn start_transaction(
    ctx: &Ctx<'_>,
    req: &Request,
    sessions: &mut HashMap<Vec<u8>, Session>,
    key: Vec<u8>,
    lsid: &Document,
    txn_number: i64,
) -> CmdResult<Statement> {
    if let Some(s) = sessions.get(&key) {
        if s.txn_number > txn_number {
            // SRV transaction_participant.cpp
            return Err(CommandError::from_code(
                ErrorCode::TransactionTooOld,
                format!(
                    "Cannot start transaction {txn_number} on session {}because a newer transaction {} has already started.",
                    lsid_display(lsid),
                    s.txn_number
                ),
            ));
        }
        if s.txn_number == txn_number {
            return Err(CommandError::from_code(
                ErrorCode::ConflictingOperationInProgress,
                "Only servers in a sharded cluster can start a new transaction at the active transaction number",
            ));
        }
    }
    if let Some(level) = ctx
        .read_concern
        .as_ref()
        .and_then(|rc| rc.get_str("level").ok())
    {
        if !matches!(level, "local" | "majority" | "snapshot") {
            // SRV service_entry_point_common.cpp
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                format!("The readConcern level must be either 'local' (default), 'majority' or 'snapshot' in order to run in a transaction, but found '{level}'"),
            ));
        }
    }
    let shared = private_shared(ctx, &req.db);
    let first_seq = 1;
    sessions.insert(
        key.clone(),
        Session {
            txn_number,
            state: State::InProgress {
                shared: shared.clone(),
                first_seq,
                writes: HashSet::new(),
                scanned_seq: first_seq,
                snapshotted: HashSet::from([req.db.clone()]),
            },
        },
    );
    Ok(Statement {
        key,
        txn_number,
        shared,
    })
}

/// A `Shared` around a new transaction's private engine: a snapshot of database `db`, the
/// live clock and an empty oplog.
fn private_shared(ctx: &Ctx<'_>, db: &str) -> Arc<Shared> {
    let live = ctx.shared.engine.lock();
    let mut private = Engine::new(&ctx.shared.opts);
    private.catalog = crate::engine::catalog::Catalog::new(ctx.shared.opts.version);
    snapshot_db(&mut private, &live, db);
    private.clock = live.clock.clone();
    private.oplog = Some(Oplog::new(u64::MAX));
    Arc::new(ctx.shared.with_engine(private))
}

/// A later statement of transaction `txn_number`: it must be the session's transaction and
/// still in progress; its database is snapshotted when first named.
fn continue_transaction(
    ctx: &Ctx<'_>,
    req: &Request,
    sessions: &mut HashMap<Vec<u8>, Session>,
    key: Vec<u8>,
    lsid: &Document,
    txn_number: i64,
) -> CmdResult<Option<Statement>> {
    if ctx.read_concern.is_some() {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "Only the first command in a transaction may specify a readConcern",
        ));
    }
    let Some(s) = sessions.get_mut(&key) else {
        return Err(no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions."
        )));
    };
    if s.txn_number != txn_number {
        if s.txn_number > txn_number {
            return Err(CommandError::from_code(
                ErrorCode::TransactionTooOld,
                format!(
                    "Cannot continue transaction {txn_number} on session {}because a newer transaction {} has already started.",
                    lsid_display(lsid),
                    s.txn_number
                ),
            ));
        }
        return Err(no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions. The active transaction number is {}",
            s.txn_number
        )));
    }
    if matches!(
        req.name.as_str(),
        "commitTransaction"
            | "abortTransaction"
            | "prepareTransaction"
            | "coordinateCommitTransaction"
    ) {
        // commitTransaction / abortTransaction / prepareTransaction check the state
        // themselves.
        return Ok(None);
    }
    match &mut s.state {
        State::InProgress {
            shared,
            snapshotted,
            ..
        } => {
            if snapshotted.insert(req.db.clone()) {
                let live = ctx.shared.engine.lock();
                snapshot_db(&mut shared.engine.lock(), &live, &req.db);
            }
            Ok(Some(Statement {
                key,
                txn_number,
                shared: shared.clone(),
            }))
        }
        State::Committed { .. } => Err(CommandError::from_code(
            ErrorCode::TransactionCommitted,
            format!("Transaction {txn_number} has been committed."),
        )),
        // SRV transaction_participant.cpp: no statements after prepare
        State::Prepared { .. } => Err(CommandError::from_code(
            ErrorCode::PreparedTransactionInProgress,
            "Cannot call continue on a prepared transaction",
        )),
        State::Aborted => Err(no_such_transaction(format!(
            "Transaction {txn_number} has been aborted."
        ))),
    }
}

impl Statement {
    /// The engine the statement runs against.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// After the statement: a failed statement (command error or write errors) aborts the
    /// transaction; new writes are checked for conflicts with other open transactions.
    pub(crate) fn after(&self, live: &Shared, result: CmdResult<Document>) -> CmdResult<Document> {
        let failed = match &result {
            Err(_) => true,
            Ok(body) => body.contains_key("writeErrors"),
        };
        let mut sessions = live.txns.sessions.lock();
        if failed {
            if let Some(s) = sessions.get_mut(&self.key) {
                if s.txn_number == self.txn_number && matches!(s.state, State::InProgress { .. }) {
                    s.state = State::Aborted;
                }
            }
            return result;
        }
        // Collect the documents written by this statement.
        let new_keys = {
            let Some(s) = sessions.get(&self.key) else {
                return result;
            };
            let State::InProgress { scanned_seq, .. } = &s.state else {
                return result;
            };
            let engine = self.shared.engine.lock();
            let mut keys = Vec::new();
            let mut end = *scanned_seq;
            if let Some(oplog) = &engine.oplog {
                for (seq, e) in oplog.iter_from(*scanned_seq) {
                    end = seq + 1;
                    if let Ok(d) = e.raw.to_document() {
                        if let Some(k) = doc_key(&d) {
                            keys.push(k);
                        }
                    }
                }
            }
            (keys, end)
        };
        let (keys, end) = new_keys;
        let conflict = sessions.iter().any(|(k, s)| {
            *k != self.key
                && matches!(&s.state, State::InProgress { writes, .. } if keys.iter().any(|x| writes.contains(x)))
        });
        if let Some(s) = sessions.get_mut(&self.key) {
            if conflict {
                s.state = State::Aborted;
                // SRV write_conflict_exception.cpp
                return Err(CommandError::from_code(
                    ErrorCode::WriteConflict,
                    "WriteConflict error: this operation conflicted with another operation. Please retry your operation or multi-document transaction.",
                ));
            }
            if let State::InProgress {
                writes,
                scanned_seq,
                ..
            } = &mut s.state
            {
                writes.extend(keys);
                *scanned_seq = end;
            }
        }
        result
    }
}

/// Copies database `db` of the live catalog into a transaction's private catalog (its
/// snapshot of that database).
fn snapshot_db(private: &mut Engine, live: &Engine, db: &str) {
    if let Some(d) = live.catalog.dbs.get(db) {
        private.catalog.dbs.insert(db.to_string(), d.clone());
    }
}

/// `(db, coll, _id)` of a CRUD oplog op.
fn doc_key(op: &Document) -> Option<DocKey> {
    let kind = op.get_str("op").ok()?;
    let ns = op.get_str("ns").ok()?;
    let (db, coll) = ns.split_once('.')?;
    let id = match kind {
        "i" | "d" => op.get_document("o").ok()?.get("_id")?,
        "u" => op.get_document("o2").ok()?.get("_id")?,
        _ => return None,
    };
    Some((db.to_string(), coll.to_string(), id_repr(id)))
}

fn id_repr(id: &Bson) -> String {
    id.clone().into_relaxed_extjson().to_string()
}

/// `commitTransaction` (admin; reference §6).
pub(crate) async fn commit(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    if req.db != "admin" {
        return Err(CommandError::from_code(
            ErrorCode::Unauthorized,
            "commitTransaction may only be run against the admin database.",
        ));
    }
    let (Some(lsid), Some(txn_number)) = (ctx.lsid.clone(), ctx.txn_number) else {
        return Err(no_such_transaction("no transaction in progress"));
    };
    let key = session_key(&lsid);
    let txns = ctx.shared.txns.clone();
    let mut sessions = txns.sessions.lock();
    let Some(s) = sessions.get_mut(&key) else {
        return Err(no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions."
        )));
    };
    if s.txn_number != txn_number {
        return Err(no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions. The active transaction number is {}",
            s.txn_number
        )));
    }
    let commit_ts = req.body.get_timestamp("commitTimestamp").ok();
    let (private, first_seq) = match &s.state {
        // Committing again is idempotent (reference §6).
        State::Committed { ts } => {
            ctx.operation_time = *ts;
            return Ok(Document::new());
        }
        State::Aborted => {
            return Err(no_such_transaction(format!(
                "Transaction {txn_number} has been aborted."
            )))
        }
        State::Prepared {
            shared,
            first_seq,
            prepare_ts,
        } => {
            let Some(commit_ts) = commit_ts else {
                // SRV txn_cmds.cpp
                return Err(CommandError::from_code(
                    ErrorCode::InvalidOptions,
                    "'commitTimestamp' is required to commit a prepared transaction",
                ));
            };
            let ts = {
                let private = shared.engine.lock();
                let mut live = ctx.shared.engine.lock();
                apply_writes(&private, &mut live, *first_seq)?;
                live.catalog.images.clear();
                live.log_transaction_decision(
                    doc! {"commitTransaction": 1, "commitTimestamp": commit_ts},
                    &lsid,
                    txn_number,
                    *prepare_ts,
                )
            };
            s.state = State::Committed { ts: Some(ts) };
            ctx.operation_time = Some(ts);
            return Ok(Document::new());
        }
        State::InProgress { .. } if commit_ts.is_some() => {
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                "commitTimestamp cannot be provided for an unprepared transaction",
            ))
        }
        State::InProgress {
            shared, first_seq, ..
        } => (shared.clone(), *first_seq),
    };
    let ts = {
        let private = private.engine.lock();
        let mut live = ctx.shared.engine.lock();
        apply_commit(&private, &mut live, first_seq, &lsid, txn_number)?
    };
    s.state = State::Committed { ts };
    if ts.is_some() {
        ctx.operation_time = ts;
    }
    Ok(Document::new())
}

/// Applies a transaction's writes to the live engine and logs them as one `applyOps`.
fn apply_commit(
    private: &Engine,
    live: &mut Engine,
    first_seq: u64,
    lsid: &Document,
    txn_number: i64,
) -> CmdResult<Option<Timestamp>> {
    if private.oplog.is_none() {
        return Ok(None);
    }
    let (inner, images) = apply_writes(private, live, first_seq)?;
    // The live catalog's own images of this final-state application are not the
    // transaction's: the statements' images (above) are.
    live.catalog.images.clear();
    let chunks = split_apply_ops(inner);
    // Where each op lands: (entry number, index within that entry), for the image keys.
    let mut place = Vec::new();
    for (c, chunk) in chunks.iter().enumerate() {
        for i in 0..chunk.len() {
            place.push((c, i as u32));
        }
    }
    let stamps = live.log_transaction_chain(chunks, lsid, txn_number);
    for (op_index, ui, img) in images {
        if let Some(&(c, i)) = place.get(op_index as usize) {
            if let Some(ts) = stamps.get(c) {
                live.pre_images.insert(*ts, i, &ui, img);
            }
        }
    }
    Ok(stamps.last().copied())
}

/// The change-stream images a transaction's statements recorded: `(op index, ui, image)`.
type TxnImages = Vec<(u32, Vec<u8>, crate::engine::images::StoredImage)>;

/// Applies the final state of every document a transaction wrote to the live engine
/// (collections it created come over whole) and returns its operations as `applyOps`
/// holds them, with their images.
fn apply_writes(
    private: &Engine,
    live: &mut Engine,
    first_seq: u64,
) -> CmdResult<(Vec<Document>, TxnImages)> {
    let (inner, images) = transaction_ops(private, first_seq);
    let mut created: HashSet<(String, String)> = HashSet::new();
    for d in &inner {
        let kind = d.get_str("op").unwrap_or("").to_string();
        let ns = d.get_str("ns").unwrap_or("").to_string();
        let db = ns.split_once('.').map(|(d, _)| d).unwrap_or(ns.as_str());
        if kind == "c" {
            // A collection created inside the transaction (4.4+) comes over whole: nobody
            // else could see it before the commit.
            if let Some(Bson::String(c)) = d.get_document("o").ok().and_then(|o| o.get("create")) {
                if let Some(pc) = private.catalog.coll(db, c) {
                    if live.catalog.coll(db, c).is_none() {
                        live.catalog
                            .dbs
                            .entry(db.to_string())
                            .or_default()
                            .colls
                            .insert(c.clone(), pc.clone());
                    }
                }
                created.insert((db.to_string(), c.clone()));
            }
        } else if let Some((kdb, kcoll, _)) = doc_key(d) {
            if !created.contains(&(kdb.clone(), kcoll.clone())) {
                let id = match kind.as_str() {
                    "u" => d
                        .get_document("o2")
                        .ok()
                        .and_then(|o| o.get("_id"))
                        .cloned(),
                    _ => d.get_document("o").ok().and_then(|o| o.get("_id")).cloned(),
                };
                if let Some(id) = id {
                    apply_final_state(private, live, &kdb, &kcoll, &id)?;
                }
            }
        }
    }
    Ok((inner, images))
}

/// A transaction's operations from its private oplog, as `applyOps` holds them (op, ns, ui,
/// o, o2), and the images its statements recorded.
fn transaction_ops(private: &Engine, first_seq: u64) -> (Vec<Document>, TxnImages) {
    let mut inner = Vec::new();
    let mut images = Vec::new();
    let Some(oplog) = &private.oplog else {
        return (inner, images);
    };
    for (_, e) in oplog.iter_from(first_seq) {
        let Ok(mut d) = e.raw.to_document() else {
            continue;
        };
        // Change-stream images of the statement's write move to the commit entry.
        if let Some(Bson::Binary(ui)) = d.get("ui") {
            if let Some(img) = private.pre_images.get_at(e.timestamp(), &ui.bytes) {
                images.push((inner.len() as u32, ui.bytes.clone(), img.clone()));
            }
        }
        // Inner operations keep op, ns, ui, o, o2 (reference §4.8).
        for f in [
            "ts",
            "t",
            "v",
            "wall",
            "lsid",
            "txnNumber",
            "stmtId",
            "prevOpTime",
        ] {
            d.remove(f);
        }
        inner.push(d);
    }
    (inner, images)
}

/// `prepareTransaction` (shard servers; SRV `txn_cmds.cpp` `CmdPrepareTxn`,
/// `transaction_participant.cpp` `prepareTransaction`): logs the transaction's operations
/// as one `applyOps` entry with `prepare: true` (null `prevOpTime`) and replies its optime
/// as `prepareTimestamp`; the writes wait for `commitTransaction` with a `commitTimestamp`.
/// Preparing again answers the same timestamp.
pub(crate) async fn prepare(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let _ = req;
    let (Some(lsid), Some(txn_number)) = (ctx.lsid.clone(), ctx.txn_number) else {
        return Err(no_such_transaction("no transaction in progress"));
    };
    let key = session_key(&lsid);
    let txns = ctx.shared.txns.clone();
    let mut sessions = txns.sessions.lock();
    let Some(s) = sessions
        .get_mut(&key)
        .filter(|s| s.txn_number == txn_number)
    else {
        return Err(no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions."
        )));
    };
    let (shared, first_seq) = match &s.state {
        State::Prepared { prepare_ts, .. } => {
            return Ok(doc! {"prepareTimestamp": *prepare_ts});
        }
        State::InProgress {
            shared, first_seq, ..
        } => (shared.clone(), *first_seq),
        State::Committed { .. } => {
            return Err(CommandError::from_code(
                ErrorCode::TransactionCommitted,
                format!("Transaction {txn_number} has been committed."),
            ))
        }
        State::Aborted => {
            return Err(no_such_transaction(format!(
                "Transaction {txn_number} has been aborted."
            )))
        }
    };
    let prepare_ts = {
        let private = shared.engine.lock();
        let (inner, _) = transaction_ops(&private, first_seq);
        ctx.shared
            .engine
            .lock()
            .log_prepare(inner, &lsid, txn_number)
    };
    s.state = State::Prepared {
        shared,
        first_seq,
        prepare_ts,
    };
    ctx.operation_time = Some(prepare_ts);
    Ok(doc! {"prepareTimestamp": prepare_ts})
}

/// `coordinateCommitTransaction` with no participants (SRV
/// `txn_two_phase_commit_cmds.cpp`): the outcome a router without the transaction's state
/// asks the recovery shard for — committed answers ok; a transaction still in progress is
/// aborted and, like an aborted one, answers 251 NoSuchTransaction.
pub(crate) async fn coordinate_commit(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let _ = req;
    let (Some(lsid), Some(txn_number)) = (ctx.lsid.clone(), ctx.txn_number) else {
        return Err(no_such_transaction("no transaction in progress"));
    };
    let txns = ctx.shared.txns.clone();
    let mut sessions = txns.sessions.lock();
    let Some(s) = sessions
        .get_mut(&session_key(&lsid))
        .filter(|s| s.txn_number == txn_number)
    else {
        return Err(no_such_transaction(format!(
            "Transaction {txn_number} has been aborted."
        )));
    };
    match s.state {
        State::Committed { ts } => {
            ctx.operation_time = ts;
            Ok(Document::new())
        }
        State::InProgress { .. } => {
            s.state = State::Aborted;
            Err(no_such_transaction(format!(
                "Transaction {txn_number} has been aborted."
            )))
        }
        _ => Err(no_such_transaction(format!(
            "Transaction {txn_number} has been aborted."
        ))),
    }
}

/// `BSONObjMaxUserSize`: an `applyOps` entry of a transaction stays under it.
const MAX_APPLY_OPS_BYTES: usize = 16 * 1024 * 1024;

/// Per-op allowance for the array index key and entry framing (SRV
/// `transaction_operations.cpp` packs ops while the entry stays under the limit).
const APPLY_OPS_ENTRY_PADDING: usize = 64;

/// Packs a transaction's ops into `applyOps` entries of at most 16 MB each, in order.
fn split_apply_ops(ops: Vec<Document>) -> Vec<Vec<Document>> {
    let mut chunks: Vec<Vec<Document>> = Vec::new();
    let mut current: Vec<Document> = Vec::new();
    let mut size = 0usize;
    for op in ops {
        let n = bson::to_vec(&op).map(|v| v.len()).unwrap_or(0) + APPLY_OPS_ENTRY_PADDING;
        if !current.is_empty() && size + n > MAX_APPLY_OPS_BYTES {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += n;
        current.push(op);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Makes the live document `(db, coll, _id)` equal to its final state in the transaction.
fn apply_final_state(
    private: &Engine,
    live: &mut Engine,
    db: &str,
    coll: &str,
    id: &Bson,
) -> CmdResult<()> {
    let fin = private
        .catalog
        .coll(db, coll)
        .and_then(|c| c.rid_by_id(id).and_then(|rid| c.get(rid)))
        .map(|d| d.doc.clone());
    let live_rid = live.catalog.coll(db, coll).and_then(|c| c.rid_by_id(id));
    match (fin, live_rid) {
        (Some(doc), Some(rid)) => {
            live.catalog
                .update_doc(db, coll, rid, doc, Document::new())?;
        }
        (Some(doc), None) => {
            live.catalog.ensure_collection(db, coll)?;
            live.catalog.insert_doc(db, coll, doc)?;
        }
        (None, Some(rid)) => {
            live.catalog.delete_doc(db, coll, rid)?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// `abortTransaction` (admin; reference §6). Writes nothing.
pub(crate) async fn abort(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    if req.db != "admin" {
        return Err(CommandError::from_code(
            ErrorCode::Unauthorized,
            "abortTransaction may only be run against the admin database.",
        ));
    }
    let (Some(lsid), Some(txn_number)) = (ctx.lsid.clone(), ctx.txn_number) else {
        return Err(no_such_transaction("no transaction in progress"));
    };
    let key = session_key(&lsid);
    let txns = ctx.shared.txns.clone();
    let mut sessions = txns.sessions.lock();
    let Some(s) = sessions.get_mut(&key) else {
        return Err(no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions."
        )));
    };
    if s.txn_number != txn_number {
        return Err(no_such_transaction(format!(
            "Given transaction number {txn_number} does not match any in-progress transactions. The active transaction number is {}",
            s.txn_number
        )));
    }
    match s.state {
        State::InProgress { .. } => {
            s.state = State::Aborted;
            Ok(Document::new())
        }
        State::Prepared { prepare_ts, .. } => {
            let ts = ctx.shared.engine.lock().log_transaction_decision(
                doc! {"abortTransaction": 1},
                &lsid,
                txn_number,
                prepare_ts,
            );
            s.state = State::Aborted;
            ctx.operation_time = Some(ts);
            Ok(Document::new())
        }
        State::Aborted => Err(no_such_transaction(format!(
            "Transaction {txn_number} has been aborted."
        ))),
        State::Committed { .. } => Err(CommandError::from_code(
            ErrorCode::TransactionCommitted,
            format!("Transaction {txn_number} has been committed."),
        )),
    }
}

/// Aborts the in-progress transactions of the sessions `select` picks by `lsid.id` bytes
/// and active transaction number; returns how many it aborted. For `killSessions` & co. and
/// the transaction lifetime reaper (`sessions.rs`; SRV kill_sessions_local.cpp
/// `killSessionsAbortUnpreparedTransactions`).
pub(crate) fn abort_in_progress(shared: &Shared, select: impl Fn(&[u8], i64) -> bool) -> usize {
    let mut sessions = shared.txns.sessions.lock();
    let mut aborted = 0;
    for (key, s) in sessions.iter_mut() {
        if matches!(s.state, State::InProgress { .. }) && select(key, s.txn_number) {
            s.state = State::Aborted;
            aborted += 1;
        }
    }
    aborted
}

/// Forgets the transaction state of the sessions `select` picks unless a transaction is
/// still in progress (ended sessions at the logical session cache refresh, `sessions.rs`).
pub(crate) fn forget_finished(shared: &Shared, select: impl Fn(&[u8]) -> bool) {
    shared
        .txns
        .sessions
        .lock()
        .retain(|key, s| matches!(s.state, State::InProgress { .. }) || !select(key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn doc_keys_of_crud_ops() {
        let i = doc! {"op": "i", "ns": "d.c", "o": {"_id": 1, "a": 2}};
        let u = doc! {"op": "u", "ns": "d.c", "o": {"$v": 2, "diff": {}}, "o2": {"_id": 1}};
        let d = doc! {"op": "d", "ns": "d.c", "o": {"_id": 1}};
        let c = doc! {"op": "c", "ns": "d.$cmd", "o": {"create": "c"}};
        assert_eq!(doc_key(&i), doc_key(&u));
        assert_eq!(doc_key(&u), doc_key(&d));
        assert!(doc_key(&c).is_none());
    }
}
