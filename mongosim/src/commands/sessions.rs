//! Logical sessions: `startSession`, `refreshSessions`, `endSessions`, `killSessions`,
//! `killAllSessions`, `killAllSessionsByPattern`, and the two background jobs of a mongod that
//! act on sessions: the logical session cache refresh and the expired-transaction reaper.
//!
//! Followed sources (SRV = mongodb/mongo):
//! - `src/mongo/db/commands/kill_sessions_command.cpp`, `kill_all_sessions_command.cpp`,
//!   `kill_all_sessions_by_pattern_command.cpp`: reply `{ok: 1}`; an empty list kills every
//!   session (no auth: every session belongs to the unauthenticated user); the commands ignore
//!   their own `lsid` (`attachLogicalSessionsToOpCtx() == false`).
//! - `src/mongo/db/session/kill_sessions_local.cpp` `killSessionsLocal`: killing a session
//!   aborts its unprepared in-progress transaction, kills its running operations and kills the
//!   cursors opened under it (`CursorManager::killCursorsWithMatchingSessions`).
//! - `src/mongo/db/session/kill_sessions.idl`: `KillAllSessionsUser {user, db}`,
//!   `KillAllSessionsByPattern {lsid?, uid?, users?, roles?}` (strict).
//! - `src/mongo/db/commands/end_sessions_command.cpp` +
//!   `src/mongo/db/session/logical_session_cache_impl.cpp`: `endSessions` only queues the
//!   sessions (`_endingSessions`); the next cache refresh (every `logicalSessionRefreshMillis`,
//!   default 5 minutes) removes their records and kills their cursors. It does NOT abort an
//!   open transaction: that one ends when the client aborts it or when it outlives
//!   `transactionLifetimeLimitSeconds` (60 s, `killAllExpiredTransactions`).
//! - Sessions' `uid` on a server without authentication is SHA-256 of the empty user name
//!   (`logical_session_id_helpers.cpp`), as in `engine::oplog_lsid`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use parking_lot::Mutex;

use super::state::Shared;
use super::{Ctx, Request};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// SRV `logical_session_cache.idl` `logicalSessionRefreshMillis` default.
pub(crate) const LOGICAL_SESSION_REFRESH: Duration = Duration::from_secs(300);

/// How often the expired-transaction reaper looks (SRV `periodic_runner_job_abort_expired_
/// transactions.cpp`: at most every second).
const REAPER_PERIOD: Duration = Duration::from_secs(1);

/// `endSessions` queues at most this many sessions before the refresh runs early (keeps
/// memory bounded; a real server bounds the cache by `maxSessions`).
const MAX_ENDING: usize = 10_000;

/// `lsid.id` bytes: the key sessions are known by (same as `txn.rs` and the engine).
pub(crate) fn lsid_key(lsid: &Document) -> Vec<u8> {
    match lsid.get("id") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(other) => other.to_string().into_bytes(),
        None => Vec::new(),
    }
}

/// The `uid` of every session on a server without authentication.
fn no_auth_uid() -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b"").to_vec()
}

/// Server-side session bookkeeping (`Shared::sessions`).
#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Sessions used since the last refresh: `lsid key -> ({id, uid}, lastUse)` (SRV
    /// `LogicalSessionCacheImpl::_activeSessions`, what `$listLocalSessions` lists).
    active: HashMap<Vec<u8>, (Document, bson::DateTime)>,
    /// Sessions `endSessions` named, handled at the next refresh.
    ending: HashSet<Vec<u8>>,
    /// Start of the session's latest transaction: `lsid key -> (txnNumber, started)`.
    txn_started: HashMap<Vec<u8>, (i64, Instant)>,
}

/// SRV `logical_session_cache.idl` `maxSessions` default.
const MAX_SESSIONS: usize = 1_000_000;

impl SessionCache {
    /// Marks a session as used now (SRV `LogicalSessionCacheImpl::vivify`, called for every
    /// command that carries an `lsid`); 261 TooManyLogicalSessions when the cache is full.
    pub(crate) fn vivify(&self, lsid: &Document) -> CmdResult<()> {
        let key = lsid_key(lsid);
        let now = bson::DateTime::now();
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.active.get_mut(&key) {
            entry.1 = now;
            return Ok(());
        }
        if inner.active.len() >= MAX_SESSIONS {
            return Err(CommandError::from_code(ErrorCode::TooManyLogicalSessions,
                format!(
                    "Unable to add session ID {} into the cache because the number of active sessions is too high",
                    crate::engine::oplog_lsid(lsid)
                ),
            ));
        }
        inner
            .active
            .insert(key, (crate::engine::oplog_lsid(lsid), now));
        Ok(())
    }

    /// Records that `txn_number` started on the session now (called by the dispatcher for a
    /// successful `startTransaction` statement).
    pub(crate) fn transaction_started(&self, lsid: &Document, txn_number: i64) {
        self.inner
            .lock()
            .txn_started
            .insert(lsid_key(lsid), (txn_number, Instant::now()));
    }
}

/// Which sessions a kill applies to (SRV `SessionKiller::Matcher`).
#[derive(Debug, Clone)]
enum Pattern {
    /// Every session.
    All,
    /// One session by `id` (a pattern naming another user's `uid` is `Nothing`).
    Lsid(Vec<u8>),
    /// Sessions of a user that has none here (a `uid` other than the unauthenticated one).
    Nothing,
}

#[derive(Debug, Clone)]
struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    fn all() -> Self {
        Matcher {
            patterns: vec![Pattern::All],
        }
    }

    fn matches(&self, key: &[u8]) -> bool {
        self.patterns.iter().any(|p| match p {
            Pattern::All => true,
            Pattern::Lsid(k) => k.as_slice() == key,
            Pattern::Nothing => false,
        })
    }

    fn is_empty(&self) -> bool {
        self.patterns.iter().all(|p| matches!(p, Pattern::Nothing))
    }
}

/// SRV `killSessionsLocal`: abort the matching sessions' in-progress transactions and kill
/// their cursors. (Operations of these sessions that are running right now are not
/// interrupted, unlike on a real server: e.g. a waiting awaitData getMore returns its batch
/// normally, and its cursor is gone afterwards.)
fn kill_local(shared: &Shared, matcher: &Matcher) {
    if matcher.is_empty() {
        return;
    }
    super::txn::abort_in_progress(shared, |key, _| matcher.matches(key));
    shared
        .engine
        .lock()
        .cursors
        .kill_sessions(|lsid| matcher.matches(&lsid_key(lsid)));
}

/// The elements of an array-of-documents command argument (`<cmd>: [ {...}, … ]`). `ctx` is
/// the IDL parser context the server names in its errors: the struct parsed
/// (`KillSessionsCmd`, …) or, for IDL commands, the command name.
fn docs_arg<'r>(req: &'r Request, ctx: &str) -> CmdResult<Vec<&'r Document>> {
    let field = format!("{ctx}.{}", req.name);
    match req.target() {
        Some(Bson::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Bson::Document(d) => Ok(d),
                other => Err(super::wrong_type(&format!("{field}.{i}"), other, "object")),
            })
            .collect(),
        Some(other) => Err(super::wrong_type(&field, other, "array")),
        None => Err(CommandError::from_code(
            ErrorCode::IdlFailedToParse,
            format!("BSON field '{field}' is missing but a required field"),
        )),
    }
}

/// A `LogicalSessionFromClient` (`{id: UUID, uid?, txnNumber?, txnUUID?, txnRetryCounter?}`,
/// SRV `logical_session_id.idl`, strict). Returns the session's key and whether it is one of
/// the unauthenticated user's sessions (a `uid` naming somebody else matches nothing).
fn session_from_client(ctx: &str, lsid: &Document) -> CmdResult<(Vec<u8>, bool)> {
    for (k, _) in lsid {
        if !matches!(
            k.as_str(),
            "id" | "uid" | "txnNumber" | "txnUUID" | "txnRetryCounter"
        ) {
            return Err(CommandError::unknown_field(k, ctx));
        }
    }
    match lsid.get("id") {
        Some(Bson::Binary(b))
            if b.subtype == bson::spec::BinarySubtype::Uuid && b.bytes.len() == 16 => {}
        Some(other) => {
            return Err(CommandError::from_code(
                ErrorCode::IdlNotUuid,
                format!(
                    "BSON field '{ctx}.id' is the wrong type '{}', expected type 'uuid'",
                    super::type_name(other)
                ),
            ))
        }
        None => {
            return Err(CommandError::from_code(
                ErrorCode::IdlFailedToParse,
                format!("BSON field '{ctx}.id' is missing but a required field"),
            ))
        }
    }
    // SRV logical_session_cache_impl.cpp `endSessions` / kill_sessions.cpp `validateLsid`:
    // only parent sessions can be named.
    if lsid.contains_key("txnUUID") {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            format!("Cannot specify a child session id {lsid}"),
        ));
    }
    let own = match lsid.get("uid") {
        None => true,
        Some(Bson::Binary(b)) => b.bytes == no_auth_uid(),
        Some(other) => {
            return Err(super::wrong_type(&format!("{ctx}.uid"), other, "binData"));
        }
    };
    Ok((lsid_key(lsid), own))
}

/// `startSession`: a new server-generated session id (SRV `start_session_command.cpp`).
pub(crate) async fn start_session(ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    let id = doc! { "id": bson::Uuid::new() };
    // SRV start_session_command.cpp: `LogicalSessionCache::startSession` caches the record.
    ctx.shared.sessions.vivify(&id)?;
    Ok(doc! {
        "id": id,
        // SRV logical_session_id.idl `localLogicalSessionTimeoutMinutes` default, as in hello.
        "timeoutMinutes": 30,
    })
}

/// `refreshSessions: [lsid…]`: marks the caller's sessions as active (SRV
/// refresh_sessions_command.cpp → `LogicalSessionCache::vivify`).
pub(crate) async fn refresh_sessions(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let mut own = Vec::new();
    let idl = format!("{0}.{0}", req.name);
    for lsid in docs_arg(&req, &req.name)? {
        if session_from_client(&idl, lsid)?.1 {
            own.push(lsid);
        }
    }
    for lsid in own {
        ctx.shared.sessions.vivify(lsid)?;
    }
    Ok(Document::new())
}

/// `endSessions: [lsid…]`: drivers send it at shutdown and ignore errors (SPEC-SESS). The
/// sessions are queued; the next logical-session-cache refresh kills their cursors and
/// forgets them (SRV `LogicalSessionCacheImpl::endSessions` / `_refresh`). An open
/// transaction of an ended session is not aborted here (see the module docs).
pub(crate) async fn end_sessions(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let mut keys = Vec::new();
    let idl = format!("{0}.{0}", req.name);
    for lsid in docs_arg(&req, &req.name)? {
        let (key, own) = session_from_client(&idl, lsid)?;
        if own {
            keys.push(key);
        }
    }
    let overflow = {
        let mut inner = ctx.shared.sessions.inner.lock();
        inner.ending.extend(keys);
        inner.ending.len() > MAX_ENDING
    };
    if overflow {
        refresh(&ctx.shared);
    }
    Ok(Document::new())
}

/// `killSessions: [lsid…]`; an empty list kills all sessions of the caller (without auth:
/// every session).
pub(crate) async fn kill_sessions(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let items = docs_arg(&req, "KillSessionsCmd")?;
    let matcher = if items.is_empty() {
        Matcher::all()
    } else {
        let mut patterns = Vec::new();
        for lsid in items {
            let (key, own) = session_from_client("KillSessionsCmd.killSessions", lsid)?;
            patterns.push(if own {
                Pattern::Lsid(key)
            } else {
                Pattern::Nothing
            });
        }
        Matcher { patterns }
    };
    kill_local(&ctx.shared, &matcher);
    Ok(Document::new())
}

/// `killAllSessions: [{user, db}…]`; an empty list kills every session. Naming users needs
/// them to exist: this server has no users, so that fails like a mongod without such a user
/// (SRV `makeKillAllSessionsByPattern(opCtx, KillAllSessionsUser)` → `acquireUser`).
pub(crate) async fn kill_all_sessions(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let users = docs_arg(&req, "KillAllSessionsCmd")?
        .into_iter()
        .map(|d| user_and_db("KillAllSessionsCmd.killAllSessions", d))
        .collect::<CmdResult<Vec<_>>>()?;
    if let Some((user, db)) = users.first() {
        return Err(CommandError::from_code(
            ErrorCode::UserNotFound,
            format!("Could not find user \"{user}\" for db \"{db}\""),
        ));
    }
    kill_local(&ctx.shared, &Matcher::all());
    Ok(Document::new())
}

/// `{user: string, db: string}` (strict IDL struct).
fn user_and_db(ctx: &str, d: &Document) -> CmdResult<(String, String)> {
    for (k, _) in d {
        if !matches!(k.as_str(), "user" | "db") {
            return Err(CommandError::unknown_field(k, ctx));
        }
    }
    let field = |name: &str| match d.get(name) {
        Some(Bson::String(s)) => Ok(s.clone()),
        Some(other) => Err(super::wrong_type(&format!("{ctx}.{name}"), other, "string")),
        None => Err(CommandError::from_code(
            ErrorCode::IdlFailedToParse,
            format!("BSON field '{ctx}.{name}' is missing but a required field"),
        )),
    };
    Ok((field("user")?, field("db")?))
}

/// `killAllSessionsByPattern: [{lsid?, uid?, users?, roles?}…]`; an empty list or an empty
/// pattern kills every session.
pub(crate) async fn kill_all_sessions_by_pattern(
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let items = docs_arg(&req, "KillAllSessionsByPatternCmd")?;
    let cx = "KillAllSessionsByPatternCmd.killAllSessionsByPattern";
    let mut patterns = Vec::new();
    for p in &items {
        let mut pattern = Pattern::All;
        for (k, v) in *p {
            match k.as_str() {
                "lsid" => {
                    let Bson::Document(l) = v else {
                        return Err(super::wrong_type(&format!("{cx}.lsid"), v, "object"));
                    };
                    // A full LogicalSessionId: `id` and `uid` are both required.
                    if !l.contains_key("uid") {
                        return Err(CommandError::from_code(
                            ErrorCode::IdlFailedToParse,
                            format!("BSON field '{cx}.lsid.uid' is missing but a required field"),
                        ));
                    }
                    let (key, own) = session_from_client(&format!("{cx}.lsid"), l)?;
                    pattern = match pattern {
                        Pattern::Nothing => Pattern::Nothing,
                        _ if !own => Pattern::Nothing,
                        _ => Pattern::Lsid(key),
                    };
                }
                "uid" => match v {
                    Bson::Binary(b) => {
                        if b.bytes != no_auth_uid() {
                            pattern = Pattern::Nothing;
                        }
                    }
                    other => return Err(super::wrong_type(&format!("{cx}.uid"), other, "binData")),
                },
                // Impersonation data: who the kill acts for, not which sessions it matches.
                "users" | "roles" => {
                    let Bson::Array(list) = v else {
                        return Err(super::wrong_type(&format!("{cx}.{k}"), v, "array"));
                    };
                    for item in list {
                        let Bson::Document(d) = item else {
                            return Err(super::wrong_type(&format!("{cx}.{k}"), item, "object"));
                        };
                        if k == "users" {
                            user_and_db(&format!("{cx}.users"), d)?;
                        }
                    }
                }
                other => return Err(CommandError::unknown_field(other, cx)),
            }
        }
        patterns.push(pattern);
    }
    let matcher = if patterns.is_empty() {
        Matcher::all()
    } else {
        Matcher { patterns }
    };
    kill_local(&ctx.shared, &matcher);
    Ok(Document::new())
}

/// `refreshLogicalSessionCacheNow` (test command, SRV refresh_logical_session_cache_now.cpp):
/// runs the logical session cache refresh at once.
pub(crate) async fn refresh_now(ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    refresh(&ctx.shared);
    Ok(Document::new())
}

/// The logical session cache refresh: sessions queued by `endSessions` lose their cursors and
/// their (finished) transaction state.
pub(crate) fn refresh(shared: &Shared) {
    let ending: HashSet<Vec<u8>> = {
        let mut inner = shared.sessions.inner.lock();
        // The cache's records go to config.system.sessions; the local cache starts empty.
        inner.active.clear();
        std::mem::take(&mut inner.ending)
    };
    if ending.is_empty() {
        return;
    }
    shared
        .engine
        .lock()
        .cursors
        .kill_sessions(|lsid| ending.contains(&lsid_key(lsid)));
    super::txn::forget_finished(shared, |key| ending.contains(key));
}

/// The source documents of `$listLocalSessions` (SRV document_source_list_local_sessions.cpp):
/// `{_id: {id, uid}, lastUse}` for each session in the local cache that belongs to the listed
/// users (default: the caller; without auth every session is the unauthenticated user's).
pub(crate) fn list_local_sessions(shared: &Shared, spec: &Bson) -> CmdResult<Vec<Document>> {
    const STAGE: &str = "$listLocalSessions";
    let Bson::Document(spec) = spec else {
        return Err(CommandError::type_mismatch(format!(
            "{STAGE} options must be specified in an object, but found: {}",
            super::type_name(spec)
        )));
    };
    let mut all_users = false;
    let mut users: Option<Vec<(String, String)>> = None;
    for (k, v) in spec {
        match k.as_str() {
            "allUsers" => match v {
                Bson::Boolean(b) => all_users = *b,
                other => {
                    return Err(super::wrong_type(
                        &format!("{STAGE}.allUsers"),
                        other,
                        "bool",
                    ))
                }
            },
            "users" => {
                let Bson::Array(list) = v else {
                    return Err(super::wrong_type(&format!("{STAGE}.users"), v, "array"));
                };
                let mut out = Vec::new();
                for item in list {
                    let Bson::Document(d) = item else {
                        return Err(super::wrong_type(&format!("{STAGE}.users"), item, "object"));
                    };
                    out.push(user_and_db(&format!("{STAGE}.users"), d)?);
                }
                users = Some(out);
            }
            "$_internalPredicate" => {}
            other => return Err(CommandError::unknown_field(other, STAGE)),
        }
    }
    let users = users.unwrap_or_default();
    if all_users && !users.is_empty() {
        return Err(CommandError::from_code(
            ErrorCode::UnsupportedFormat,
            format!(
                "{STAGE} may not specify {{allUsers:true}} and {{users:[...]}} at the same time"
            ),
        ));
    }
    // Every session here has the unauthenticated user's uid; `users` naming anybody but the
    // unauthenticated user ("" @ "") selects none of them.
    let anyone =
        all_users || users.is_empty() || users.iter().any(|(u, d)| u.is_empty() && d.is_empty());
    if !anyone {
        return Ok(Vec::new());
    }
    let inner = shared.sessions.inner.lock();
    Ok(inner
        .active
        .values()
        .map(|(id, last_use)| doc! {"_id": id.clone(), "lastUse": *last_use})
        .collect())
}

/// The expired-transaction reaper: aborts transactions older than
/// `transactionLifetimeLimitSeconds` (SRV `killAllExpiredTransactions`).
pub(crate) fn abort_expired(shared: &Shared, limit: Duration) {
    let now = Instant::now();
    let expired: HashMap<Vec<u8>, i64> = {
        let mut inner = shared.sessions.inner.lock();
        let mut out = HashMap::new();
        inner.txn_started.retain(|key, (txn, started)| {
            if now.duration_since(*started) >= limit {
                out.insert(key.clone(), *txn);
                false
            } else {
                true
            }
        });
        out
    };
    if !expired.is_empty() {
        super::txn::abort_in_progress(shared, |key, txn| expired.get(key) == Some(&txn));
    }
}

/// Runs the refresh and the reaper until shutdown (spawned by the server).
pub(crate) async fn background_jobs(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(REAPER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_refresh = Instant::now();
    loop {
        tick.tick().await;
        // SRV transaction_participant.idl `transactionLifetimeLimitSeconds` (default 60).
        abort_expired(&shared, shared.opts.transaction_lifetime_limit);
        if last_refresh.elapsed() >= LOGICAL_SESSION_REFRESH {
            refresh(&shared);
            last_refresh = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_patterns() {
        let all = Matcher::all();
        assert!(all.matches(b"x"));
        let one = Matcher {
            patterns: vec![Pattern::Lsid(b"a".to_vec()), Pattern::Nothing],
        };
        assert!(one.matches(b"a"));
        assert!(!one.matches(b"b"));
        let none = Matcher {
            patterns: vec![Pattern::Nothing],
        };
        assert!(none.is_empty());
        assert!(!none.matches(b"a"));
    }

    #[test]
    fn lsid_from_client_checks() {
        let id = bson::Uuid::new();
        let ok = doc! {"id": id};
        let (key, own) = session_from_client("KillSessionsCmd.killSessions", &ok).unwrap();
        assert_eq!(key, id.bytes().to_vec());
        assert!(own);
        let other_user = doc! {"id": id, "uid": bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1u8; 32] }};
        assert!(
            !session_from_client("KillSessionsCmd.killSessions", &other_user)
                .unwrap()
                .1
        );
        let err = session_from_client("KillSessionsCmd.killSessions", &doc! {"id": 1}).unwrap_err();
        assert_eq!(err.code, 40423);
        let err = session_from_client("KillSessionsCmd.killSessions", &doc! {"x": 1}).unwrap_err();
        assert_eq!(err.code, 40415);
        let err = session_from_client("KillSessionsCmd.killSessions", &doc! {}).unwrap_err();
        assert_eq!(err.code, 40414);
    }
}
