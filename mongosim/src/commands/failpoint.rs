//! Test-only fail points: `configureFailPoint` and the `failCommand` hook around every command
//! (reference §7.10), plus the server's error-label rules (reference §5.10, §6).
//!
//! Followed sources: SRV `src/mongo/db/commands/fail_point_cmd.cpp` (admin-only test command,
//! reply `{count}`), SRV `src/mongo/util/fail_point.cpp` (`parseBSON` modes and messages,
//! 266 FailPointSetFailed "<name> not found"), SRV `src/mongo/db/commands.cpp`
//! (`shouldActivateFailCommandFailPoint` / `evaluateFailCommandFailPoint`: the predicate is
//! checked before the mode is consulted, so commands that do not match never consume
//! `{times: n}`; order of effects errorLabels -> block -> close -> error), and SRV
//! `src/mongo/db/error_labels.cpp` (`ErrorLabelBuilder::build`).
//!
//! Supported fail points: `failCommand` and `failGetMoreAfterCursorCheckout` (the latter fires
//! inside change-stream getMores after the cursor is checked out, so the server's
//! `ResumableChangeStreamError` label applies; it is what the change-stream spec tests use).
//! Every client of mongosim is an external client, so `failInternalCommands` /
//! `failLocalClients` never change the outcome.

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
use parking_lot::Mutex;

use super::{Ctx, Request};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// The fail points this simulator knows (SRV registers each with `MONGO_FAIL_POINT_DEFINE`).
const KNOWN: &[&str] = &["failCommand", "failGetMoreAfterCursorCheckout"];

/// Commands that are never failed by `failCommand` (SRV commands.cpp: "Banned commands are
/// never allowed to fail").
const NEVER_FAILED: &[&str] = &["configureFailPoint", "waitForFailPoint"];

/// Commands that take a write concern (for `data.writeConcernError`).
const WRITE_CONCERN_COMMANDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
    "create",
    "drop",
    "dropDatabase",
    "createIndexes",
    "dropIndexes",
    "collMod",
    "renameCollection",
    "commitTransaction",
    "abortTransaction",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Off,
    AlwaysOn,
    Times(i64),
    Skip(i64),
    Probability(f64),
}

#[derive(Debug)]
struct FailPoint {
    name: &'static str,
    mode: Mode,
    data: Document,
    times_entered: i64,
}

impl FailPoint {
    /// SRV `FailPoint::_evaluateByMode` plus the entry counter.
    fn fire(&mut self) -> bool {
        let fired = match &mut self.mode {
            Mode::Off => false,
            Mode::AlwaysOn => true,
            Mode::Times(n) => {
                if *n > 0 {
                    *n -= 1;
                    if *n == 0 {
                        self.mode = Mode::Off;
                    }
                    true
                } else {
                    false
                }
            }
            Mode::Skip(n) => {
                if *n > 0 {
                    *n -= 1;
                    false
                } else {
                    true
                }
            }
            Mode::Probability(p) => rand::random::<f64>() < *p,
        };
        if fired {
            self.times_entered += 1;
        }
        fired
    }
}

/// The server's fail point registry (`Shared::failpoints`).
#[derive(Debug)]
pub(crate) struct FailPoints {
    points: Mutex<Vec<FailPoint>>,
}

impl Default for FailPoints {
    fn default() -> Self {
        Self {
            points: Mutex::new(
                KNOWN
                    .iter()
                    .map(|name| FailPoint {
                        name,
                        mode: Mode::Off,
                        data: Document::new(),
                        times_entered: 0,
                    })
                    .collect(),
            ),
        }
    }
}

/// What the pre-command `failCommand` evaluation decided.
#[derive(Debug, Default)]
pub(crate) struct Activation {
    /// `data.errorLabels`, replacing the labels the server would compute.
    pub(crate) labels_override: Option<Vec<String>>,
}

/// Facts about the command the label rules need.
#[derive(Debug, Clone)]
pub(crate) struct CommandFacts {
    name: String,
    namespace: String,
    change_stream_aggregate: bool,
}

impl CommandFacts {
    /// Facts of `req`.
    pub(crate) fn of(req: &Request) -> Self {
        // The command's namespace as the server resolves it (`getMore` names the collection
        // in `collection`; `aggregate: 1` is `<db>.$cmd.aggregate`).
        let namespace = match (req.name.as_str(), req.target()) {
            ("getMore", _) => match req.body.get("collection") {
                Some(Bson::String(c)) => format!("{}.{}", req.db, c),
                _ => req.db.clone(),
            },
            (_, Some(Bson::String(c))) => format!("{}.{}", req.db, c),
            ("aggregate", Some(_)) => format!("{}.$cmd.aggregate", req.db),
            _ => format!("{}.$cmd", req.db),
        };
        let change_stream_aggregate = req.name == "aggregate"
            && matches!(req.body.get("pipeline"), Some(Bson::Array(p))
                if matches!(p.first(), Some(Bson::Document(s)) if s.contains_key("$changeStream")));
        Self {
            name: req.name.clone(),
            namespace,
            change_stream_aggregate,
        }
    }
}

impl FailPoints {
    /// Evaluates `name` for a command: `Some(data)` when it fires.
    fn evaluate(&self, name: &str, pred: impl Fn(&Document) -> bool) -> Option<Document> {
        let mut points = self.points.lock();
        let fp = points.iter_mut().find(|p| p.name == name)?;
        if fp.mode == Mode::Off || !pred(&fp.data) {
            return None;
        }
        fp.fire().then(|| fp.data.clone())
    }

    /// `failGetMoreAfterCursorCheckout` (SRV `getmore_cmd.cpp`): checked by cursors after
    /// they were checked out for a getMore. The error carries the labels the server computes
    /// for a change-stream getMore (or `data.errorLabels`).
    pub(crate) fn get_more_after_checkout(&self) -> CmdResult<()> {
        let Some(data) = self.evaluate("failGetMoreAfterCursorCheckout", |d| {
            int_field(d, "errorCode").is_some()
        }) else {
            return Ok(());
        };
        let code = int_field(&data, "errorCode").unwrap_or(1) as i32;
        let mut err = CommandError::from_number(
            code,
            "Failing command via 'failGetMoreAfterCursorCheckout' failpoint",
        );
        match labels_field(&data) {
            Some(labels) => err.labels = labels,
            None => {
                if is_resumable_change_stream_code(code) {
                    err = err.with_label("ResumableChangeStreamError");
                }
            }
        }
        Err(err)
    }
}

fn int_field(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn bool_field(d: &Document, key: &str) -> bool {
    matches!(d.get(key), Some(Bson::Boolean(true)))
}

fn labels_field(d: &Document) -> Option<Vec<String>> {
    match d.get("errorLabels")? {
        Bson::Array(a) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// SRV commands.cpp `shouldActivateFailCommandFailPoint`.
fn matches_command(data: &Document, ctx: &Ctx<'_>, facts: &CommandFacts) -> bool {
    if NEVER_FAILED.contains(&facts.name.as_str()) {
        return false;
    }
    if let Some(Bson::String(ns)) = data.get("namespace") {
        if *ns != facts.namespace {
            return false;
        }
    }
    if let Some(Bson::String(app)) = data.get("appName") {
        if ctx.conn.app_name.as_deref() != Some(app.as_str()) {
            return false;
        }
    }
    if bool_field(data, "failAllCommands") {
        return true;
    }
    let aliases = command_aliases(&facts.name);
    match data.get("failCommands") {
        Some(Bson::Array(cmds)) => cmds
            .iter()
            .filter_map(Bson::as_str)
            .any(|c| aliases.contains(&c)),
        _ => false,
    }
}

/// A command's name and its aliases (SRV registers e.g. `isMaster` with alias `ismaster`).
fn command_aliases(name: &str) -> Vec<&str> {
    match name {
        "hello" => vec!["hello"],
        "isMaster" | "ismaster" => vec!["isMaster", "ismaster"],
        "findAndModify" | "findandmodify" => vec!["findAndModify", "findandmodify"],
        "buildInfo" | "buildinfo" => vec!["buildInfo", "buildinfo"],
        other => vec![other],
    }
}

/// `configureFailPoint` (admin only, test commands only; reference §7.10).
pub(crate) async fn configure(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    if req.db != "admin" {
        // SRV commands.cpp: adminOnly commands on another database.
        return Err(CommandError::from_code(
            ErrorCode::Unauthorized,
            "configureFailPoint may only be run against the admin database.",
        ));
    }
    let name = match req.target() {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let (mode, data) = parse_mode(&req.body)?;
    let mut points = ctx.shared.failpoints.points.lock();
    let Some(fp) = points.iter_mut().find(|p| p.name == name) else {
        return Err(CommandError::from_code(
            ErrorCode::FailPointSetFailed,
            format!("{name} not found"),
        ));
    };
    let count = fp.times_entered;
    fp.mode = mode;
    fp.data = if mode == Mode::Off {
        Document::new()
    } else {
        data
    };
    drop(points);
    // `result.appendNumber("count", timesEntered)`: Int32 when small (SRV bsonobjbuilder.h).
    let count = if count.unsigned_abs() < (1 << 30) {
        Bson::Int32(count as i32)
    } else {
        Bson::Int64(count)
    };
    Ok(doc! {"count": count})
}

/// SRV `FailPoint::parseBSON`.
fn parse_mode(cmd: &Document) -> CmdResult<(Mode, Document)> {
    let mode = match cmd.get("mode") {
        None => {
            return Err(CommandError::from_code(
                ErrorCode::IllegalOperation,
                "When setting a failpoint, you must supply a 'mode'",
            ))
        }
        Some(Bson::String(s)) => match s.as_str() {
            "off" => Mode::Off,
            "alwaysOn" => Mode::AlwaysOn,
            other => return Err(CommandError::bad_value(format!("unknown mode: {other}"))),
        },
        Some(Bson::Document(m)) => {
            if m.contains_key("times") || m.contains_key("skip") {
                let key = if m.contains_key("times") {
                    "times"
                } else {
                    "skip"
                };
                let Some(n) = int_field(m, key) else {
                    return Err(CommandError::type_mismatch(format!(
                        "Expected field \"{key}\" to have numeric type, but found {}",
                        m.get(key)
                            .map(|v| format!("{:?}", v.element_type()))
                            .unwrap_or_default()
                    )));
                };
                if n < 0 {
                    return Err(CommandError::bad_value(format!(
                        "'{key}' option to 'mode' must be positive"
                    )));
                }
                if n > i64::from(i32::MAX) {
                    return Err(CommandError::bad_value(format!(
                        "'{key}' option to 'mode' is too large"
                    )));
                }
                if key == "times" {
                    Mode::Times(n)
                } else {
                    Mode::Skip(n)
                }
            } else if let Some(p) = m.get("activationProbability") {
                let p = match p {
                    Bson::Double(d) => *d,
                    Bson::Int32(i) => f64::from(*i),
                    Bson::Int64(i) => *i as f64,
                    _ => {
                        return Err(CommandError::type_mismatch(
                            "the 'activationProbability' option to 'mode' must be a double between 0 and 1",
                        ))
                    }
                };
                if !(0.0..=1.0).contains(&p) {
                    return Err(CommandError::bad_value(format!(
                        "activationProbability must be between 0.0 and 1.0; found {p}"
                    )));
                }
                Mode::Probability(p)
            } else {
                return Err(CommandError::bad_value(
                    "'mode' must be one of 'off', 'alwaysOn', '{times:n}', '{skip:n}' or '{activationProbability:p}'",
                ));
            }
        }
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "'mode' must be a string or JSON object",
            ))
        }
    };
    let data = match cmd.get("data") {
        None => Document::new(),
        Some(Bson::Document(d)) => d.clone(),
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "the 'data' option must be a JSON object",
            ))
        }
    };
    Ok((mode, data))
}

/// Blocks the command for `d`, as the server's `sleepmillis(blockTimeMS)` does (SRV
/// `commands.cpp` `evaluateFailCommandFailPoint`): an OS sleep of that length. tokio's
/// timer rounds a deadline up to its next 1 ms tick, which made a 1 ms block last ~2 ms;
/// short blocks sleep on a blocking-pool thread instead, to the OS timer's precision.
async fn block(d: Duration) {
    const PRECISE_BELOW: Duration = Duration::from_millis(50);
    if d < PRECISE_BELOW
        && tokio::task::spawn_blocking(move || std::thread::sleep(d))
            .await
            .is_ok()
    {
        return;
    }
    tokio::time::sleep(d).await;
}

/// The `failCommand` check that runs before a command (SRV `evaluateFailCommandFailPoint`).
/// `Err` means the command must not run: either the error to reply with, or (with
/// `ctx.close_connection` set) a closed connection.
pub(crate) async fn before_command(
    ctx: &mut Ctx<'_>,
    facts: &CommandFacts,
) -> Result<Activation, CommandError> {
    let failpoints: Arc<FailPoints> = ctx.shared.failpoints.clone();
    let fired = failpoints.evaluate("failCommand", |data| {
        matches_command(data, ctx, facts)
            && (bool_field(data, "closeConnection")
                || bool_field(data, "blockConnection")
                || int_field(data, "errorCode").is_some())
    });
    let Some(data) = fired else {
        return Ok(Activation::default());
    };
    let activation = Activation {
        labels_override: labels_field(&data),
    };
    if bool_field(&data, "blockConnection") {
        let ms = int_field(&data, "blockTimeMS").unwrap_or(-1);
        if ms < 0 {
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                "must specify 'blockTimeMS' when 'blockConnection' is true",
            ));
        }
        block(Duration::from_millis(ms as u64)).await;
    }
    if bool_field(&data, "closeConnection") {
        ctx.close_connection = true;
        return Err(CommandError::from_code(
            ErrorCode::FailCommandCloseConnection,
            "Failing command due to 'failCommand' failpoint",
        ));
    }
    if let Some(code) = int_field(&data, "errorCode") {
        let mut err =
            CommandError::from_number(code as i32, "Failing command via 'failCommand' failpoint");
        if let Some(Bson::Document(extra)) = data.get("errorExtraInfo") {
            for (k, v) in extra {
                err.extra.insert(k.clone(), v.clone());
            }
        }
        err.labels = finish_labels(ctx, facts, err.code, None, &activation);
        return Err(err);
    }
    Ok(activation)
}

/// Everything after the command ran: error labels on failures (SRV `getErrorLabels`), and a
/// `failCommand` `writeConcernError` on successful write-concern commands (applied after the
/// command, so the write happened).
pub(crate) fn after_command(
    ctx: &mut Ctx<'_>,
    facts: &CommandFacts,
    activation: &Activation,
    result: CmdResult<Document>,
) -> CmdResult<Document> {
    match result {
        Err(mut err) => {
            let mut labels = finish_labels(ctx, facts, err.code, None, activation);
            if activation.labels_override.is_none() {
                // Labels a handler attached itself (e.g. a change-stream cursor) are kept.
                for l in std::mem::take(&mut err.labels) {
                    if !labels.contains(&l) {
                        labels.push(l);
                    }
                }
            }
            err.labels = labels;
            Err(err)
        }
        Ok(mut body) => {
            if WRITE_CONCERN_COMMANDS.contains(&facts.name.as_str()) && ctx.shared.is_repl_set() {
                if let Some(wce) = ctx.write_concern.as_ref().and_then(unsatisfiable) {
                    body.insert("writeConcernError", wce);
                }
            }
            if WRITE_CONCERN_COMMANDS.contains(&facts.name.as_str()) {
                let failpoints = ctx.shared.failpoints.clone();
                let fired = failpoints.evaluate("failCommand", |data| {
                    data.contains_key("writeConcernError") && matches_command(data, ctx, facts)
                });
                if let Some(data) = fired {
                    if let Some(Bson::Document(wce)) = data.get("writeConcernError") {
                        let wc_code = int_field(wce, "code").map(|c| c as i32);
                        body.insert("writeConcernError", wce.clone());
                        let act = Activation {
                            labels_override: labels_field(&data)
                                .or_else(|| activation.labels_override.clone()),
                        };
                        let labels = finish_labels(ctx, facts, 0, wc_code, &act);
                        if !labels.is_empty() {
                            body.insert("errorLabels", labels);
                        }
                    }
                }
            }
            Ok(body)
        }
    }
}

/// The write-concern error a one-node replica set reports after the write for a `w` it can
/// never satisfy (SRV `write_concern.cpp` `waitForWriteConcern` / `repl_set_config.cpp`):
/// a number above 1 -> 100 UnsatisfiableWriteConcern "Not enough data-bearing nodes"; a tag
/// other than `majority` -> 79 UnknownReplWriteConcern.
fn unsatisfiable(wc: &Document) -> Option<Document> {
    let mut resolved = wc.clone();
    resolved.remove("provenance");
    if !resolved.contains_key("wtimeout") {
        resolved.insert("wtimeout", 0);
    }
    resolved.insert("provenance", "clientSupplied");
    let (code, name, msg) = match wc.get("w")? {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => {
            let n = int_field(wc, "w").unwrap_or(1);
            if n <= 1 {
                return None;
            }
            (
                100,
                "UnsatisfiableWriteConcern",
                "Not enough data-bearing nodes".to_string(),
            )
        }
        Bson::String(tag) if tag != "majority" => (
            79,
            "UnknownReplWriteConcern",
            format!("No write concern mode named '{tag}' found in replica set configuration"),
        ),
        _ => return None,
    };
    Some(doc! {
        "code": code,
        "codeName": name,
        "errmsg": msg,
        "errInfo": {"writeConcern": resolved},
    })
}

/// SRV `error_labels.cpp` `getErrorLabels` / `ErrorLabelBuilder::build`. `code` 0 = no
/// command error (only a write-concern error `wc_code`).
fn finish_labels(
    ctx: &Ctx<'_>,
    facts: &CommandFacts,
    code: i32,
    wc_code: Option<i32>,
    activation: &Activation,
) -> Vec<String> {
    if let Some(labels) = &activation.labels_override {
        return labels.clone();
    }
    let code = (code != 0).then_some(code);
    let in_txn = ctx.txn_number.is_some() && ctx.autocommit.is_some();
    let commit_or_abort = matches!(
        facts.name.as_str(),
        "commitTransaction" | "abortTransaction"
    );
    let mut labels = Vec::new();
    let transient = in_txn
        && code
            .is_some_and(|c| is_transient_transaction_error(c, wc_code.is_some(), commit_or_abort));
    if transient {
        labels.push("TransientTransactionError".to_string());
        return labels;
    }
    let retryable_write = ctx.txn_number.is_some() && ctx.autocommit.is_none();
    if retryable_write || (in_txn && commit_or_abort) {
        let retriable = |c: i32| is_retriable(c) || is_shutdown(c);
        if code.is_some_and(retriable) || wc_code.is_some_and(retriable) {
            labels.push("RetryableWriteError".to_string());
        }
    }
    if let Some(c) = code {
        if facts.change_stream_aggregate && is_resumable_change_stream_code(c) {
            labels.push("ResumableChangeStreamError".to_string());
        }
        if c == 280 || c == 286 {
            labels.push("NonResumableChangeStreamError".to_string());
        }
    }
    labels
}

/// SRV error_codes.yml category `RetriableError`.
fn is_retriable(code: i32) -> bool {
    matches!(
        code,
        6 | 7 | 89 | 91 | 134 | 189 | 262 | 384 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436
    )
}

/// SRV error_codes.yml category `ShutdownError`.
fn is_shutdown(code: i32) -> bool {
    matches!(code, 91 | 11600)
}

/// SRV `isResumableChangeStreamError`: RetriableError, NetworkError, NeedRetargettingError,
/// RetryChangeStream (234), FailedToSatisfyReadPreference (133).
pub(crate) fn is_resumable_change_stream_code(code: i32) -> bool {
    is_retriable(code) || matches!(code, 6 | 89 | 9001 | 63 | 150 | 13388 | 234 | 133)
}

/// SRV `isTransientTransactionError`.
fn is_transient_transaction_error(code: i32, has_wce: bool, commit_or_abort: bool) -> bool {
    // WriteConflict, LockTimeout, PreparedTransactionInProgress, StaleDbVersion 249, the
    // SnapshotError category of error_codes.yml (SnapshotTooOld 239, SnapshotUnavailable 246,
    // StaleChunkHistory 250, MigrationConflict 272) and NeedRetargettingError (63, 150, 13388).
    let mut transient = matches!(
        code,
        112 | 24 | 267 | 249 | 239 | 246 | 250 | 272 | 63 | 150 | 13388
    );
    if commit_or_abort {
        transient |= code == 251 && !has_wce;
    } else {
        transient |= is_retriable(code) || code == 251;
    }
    transient
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_mode_turns_itself_off() {
        let mut fp = FailPoint {
            name: "failCommand",
            mode: Mode::Times(2),
            data: Document::new(),
            times_entered: 0,
        };
        assert!(fp.fire());
        assert!(fp.fire());
        assert!(!fp.fire());
        assert_eq!(fp.mode, Mode::Off);
        assert_eq!(fp.times_entered, 2);
    }

    #[test]
    fn skip_mode_passes_then_fires() {
        let mut fp = FailPoint {
            name: "failCommand",
            mode: Mode::Skip(1),
            data: Document::new(),
            times_entered: 0,
        };
        assert!(!fp.fire());
        assert!(fp.fire());
        assert!(fp.fire());
    }

    #[test]
    fn mode_parsing_follows_server_messages() {
        assert_eq!(
            parse_mode(&doc! {"mode": "sometimes"}).unwrap_err().errmsg,
            "unknown mode: sometimes"
        );
        assert_eq!(
            parse_mode(&doc! {"mode": {"times": -1}}).unwrap_err().code,
            2
        );
        assert_eq!(parse_mode(&doc! {"mode": 5}).unwrap_err().code, 14);
        let (m, d) = parse_mode(&doc! {"mode": {"times": 1}, "data": {"x": 1}}).unwrap();
        assert_eq!(m, Mode::Times(1));
        assert_eq!(d, doc! {"x": 1});
    }

    #[test]
    fn transient_rules() {
        assert!(is_transient_transaction_error(251, false, false));
        assert!(is_transient_transaction_error(251, false, true));
        assert!(!is_transient_transaction_error(251, true, true));
        assert!(is_transient_transaction_error(91, false, false));
        assert!(!is_transient_transaction_error(91, false, true));
        assert!(is_resumable_change_stream_code(133));
        assert!(!is_resumable_change_stream_code(216));
    }
}
