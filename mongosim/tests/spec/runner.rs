//! Loading test files and executing tests (unified test format, "Test Runner Implementation").

use std::{path::Path, time::Duration};

use futures::TryStreamExt;
use mongodb::{
    bson::{doc, Bson, Document},
    options::{ReadConcern, WriteConcern},
    Client,
};

use crate::{
    entities::{self, Entities, Entity, Ev},
    matcher::{self, matches},
    operations::{self, ErrInfo, OpErr, Res, TestState},
};

/// The newest schema version this runner implements.
const SCHEMA: (u64, u64, u64) = (1, 28, 0);
const OP_TIMEOUT: Duration = Duration::from_secs(30);
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// What the runner knows about the deployment.
pub struct Env {
    pub uri: String,
    pub internal: Client,
    pub version: (u64, u64, u64),
    /// `replicaset`, `sharded` (the server answers as a mongos) or `single`.
    pub topology: &'static str,
    pub auth: bool,
    /// On a sharded cluster: one client per mongos of the URI, `(host:port, client)`, for
    /// fail points aimed at one of them and the per-mongos preparations of the test format.
    pub routers: Vec<(String, Client)>,
}

impl Env {
    pub async fn new(uri: &str) -> Result<Env, String> {
        let internal = Client::with_uri_str(uri)
            .await
            .map_err(|e| format!("connect {uri}: {}", es(&e)))?;
        let admin = internal.database("admin");
        let bi = admin
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(|e| format!("buildInfo: {}", es(&e)))?;
        let va = bi
            .get_array("versionArray")
            .map_err(|_| "buildInfo without versionArray")?;
        let part = |i: usize| va.get(i).and_then(matcher::as_f64).unwrap_or(0.0) as u64;
        let hello = admin
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| format!("hello: {}", es(&e)))?;
        let topology = if hello.get_str("msg") == Ok("isdbgrid") {
            "sharded"
        } else if hello.contains_key("setName") {
            "replicaset"
        } else {
            "single"
        };
        let mut routers = Vec::new();
        if topology == "sharded" {
            for host in hosts_of(uri) {
                let direct = format!("mongodb://{host}/?directConnection=true");
                let c = Client::with_uri_str(&direct)
                    .await
                    .map_err(|e| format!("connect {direct}: {}", es(&e)))?;
                routers.push((host, c));
            }
        }
        Ok(Env {
            uri: uri.to_string(),
            internal,
            version: (part(0), part(1), part(2)),
            topology,
            auth: uri.contains('@'),
            routers,
        })
    }
}

/// The `host:port` list of a `mongodb://` URI.
fn hosts_of(uri: &str) -> Vec<String> {
    let rest = uri.strip_prefix("mongodb://").unwrap_or(uri);
    let hosts = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    hosts.split(',').map(str::to_string).collect()
}

/// Result of one test.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed,
    Failed(String),
    NotApplicable,
    Skipped(String),
}

pub struct FileReport {
    pub tests: Vec<(String, Verdict)>,
}

pub fn parse_version(s: &str) -> (u64, u64, u64) {
    let mut it = s.split('.').map(|p| {
        p.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse::<u64>()
            .unwrap_or(0)
    });
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

async fn requirement_met(env: &Env, r: &Document) -> bool {
    for (k, v) in r {
        let ok = match k.as_str() {
            "minServerVersion" => v.as_str().is_some_and(|s| env.version >= parse_version(s)),
            "maxServerVersion" => v.as_str().is_some_and(|s| env.version <= parse_version(s)),
            "topologies" => v.as_array().is_some_and(|a| {
                a.iter().any(|t| {
                    t.as_str() == Some(env.topology)
                        || (env.topology == "sharded" && t.as_str() == Some("sharded-replicaset"))
                })
            }),
            "serverless" => v.as_str() != Some("require"),
            "auth" => v.as_bool() == Some(env.auth),
            // The driver is built without in-use encryption.
            "csfle" => v.as_bool() == Some(false),
            "authMechanism" => false,
            "serverParameters" => {
                let Some(params) = v.as_document() else {
                    return false;
                };
                let mut all = true;
                for (p, want) in params {
                    let got = env
                        .internal
                        .database("admin")
                        .run_command(doc! { "getParameter": 1, p.as_str(): 1 })
                        .await
                        .ok()
                        .and_then(|d| d.get(p).cloned());
                    all &= got.is_some_and(|g| {
                        matches(want, Some(&g), false, &Entities::default()).is_ok()
                    });
                }
                all
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

async fn requirements_met(env: &Env, reqs: Option<&Vec<Bson>>) -> bool {
    let Some(reqs) = reqs else { return true };
    for r in reqs {
        if let Bson::Document(r) = r {
            if requirement_met(env, r).await {
                return true;
            }
        }
    }
    false
}

/// Loads a JSON test file as extended JSON.
pub fn load(path: &Path) -> Result<Document, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
    match Bson::try_from(json) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err("test file is not an object".into()),
        Err(e) => Err(format!("extended JSON {}: {e}", path.display())),
    }
}

pub async fn run_file(env: &Env, path: &Path) -> FileReport {
    let mut report = FileReport { tests: Vec::new() };
    let file = match load(path) {
        Ok(f) => f,
        Err(e) => {
            report.tests.push(("<file>".into(), Verdict::Failed(e)));
            return report;
        }
    };
    let tests: Vec<Document> = file
        .get_array("tests")
        .map(|a| a.iter().filter_map(|t| t.as_document().cloned()).collect())
        .unwrap_or_default();
    let schema = parse_version(file.get_str("schemaVersion").unwrap_or("0"));
    if schema.0 != SCHEMA.0 || schema > SCHEMA {
        for t in &tests {
            let d = t.get_str("description").unwrap_or("?").to_string();
            report.tests.push((
                d,
                Verdict::Failed(format!("unsupported schemaVersion {schema:?}")),
            ));
        }
        return report;
    }
    let file_ok = requirements_met(env, file.get_array("runOnRequirements").ok()).await;
    for t in &tests {
        let desc = t.get_str("description").unwrap_or("?").to_string();
        let verdict = if let Ok(r) = t.get_str("skipReason") {
            Verdict::Skipped(r.to_string())
        } else if let Ok(r) = file.get_str("skipReason") {
            Verdict::Skipped(r.to_string())
        } else if !file_ok || !requirements_met(env, t.get_array("runOnRequirements").ok()).await {
            Verdict::NotApplicable
        } else {
            match tokio::time::timeout(TEST_TIMEOUT, run_test(env, &file, t)).await {
                Ok(Ok(())) => Verdict::Passed,
                Ok(Err(e)) => Verdict::Failed(e),
                Err(_) => Verdict::Failed(format!("test timed out after {TEST_TIMEOUT:?}")),
            }
        };
        if matches!(verdict, Verdict::Failed(_)) {
            kill_all_sessions(env).await;
        }
        report.tests.push((desc, verdict));
    }
    report
}

pub async fn kill_all_sessions(env: &Env) {
    let clients: Vec<&Client> = if env.routers.is_empty() {
        vec![&env.internal]
    } else {
        // Test format: killAllSessions on every mongos.
        env.routers.iter().map(|(_, c)| c).collect()
    };
    for c in clients {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            c.database("admin")
                .run_command(doc! { "killAllSessions": [] }),
        )
        .await;
    }
}

/// Turns fail point `fp` off everywhere it may be on (every mongos on a sharded cluster).
async fn disable_fail_point(env: &Env, fp: &str) {
    let clients: Vec<&Client> = if env.routers.is_empty() {
        vec![&env.internal]
    } else {
        env.routers.iter().map(|(_, c)| c).collect()
    };
    for c in clients {
        let _ = c
            .database("admin")
            .run_command(doc! { "configureFailPoint": fp, "mode": "off" })
            .await;
    }
}

async fn initial_data(env: &Env, data: &[Bson]) -> Result<(), String> {
    let wc = WriteConcern::majority();
    for cd in data {
        let Bson::Document(cd) = cd else {
            return Err("bad initialData".into());
        };
        let dbn = cd
            .get_str("databaseName")
            .map_err(|_| "initialData without databaseName")?;
        let cn = cd
            .get_str("collectionName")
            .map_err(|_| "initialData without collectionName")?;
        let db = env.internal.database(dbn);
        let coll = db.collection::<Document>(cn);
        coll.drop()
            .write_concern(wc.clone())
            .await
            .map_err(|e| format!("drop {dbn}.{cn}: {}", es(&e)))?;
        let docs: Vec<Document> = cd
            .get_array("documents")
            .map(|a| a.iter().filter_map(|d| d.as_document().cloned()).collect())
            .unwrap_or_default();
        if let Ok(co) = cd.get_document("createOptions") {
            let mut cmd = doc! { "create": cn };
            cmd.extend(co.clone());
            cmd.insert("writeConcern", doc! { "w": "majority" });
            db.run_command(cmd)
                .await
                .map_err(|e| format!("create {dbn}.{cn}: {}", es(&e)))?;
        } else if docs.is_empty() {
            db.create_collection(cn)
                .write_concern(wc.clone())
                .await
                .map_err(|e| format!("create {dbn}.{cn}: {}", es(&e)))?;
        }
        if !docs.is_empty() {
            coll.insert_many(docs)
                .write_concern(wc.clone())
                .await
                .map_err(|e| format!("insert into {dbn}.{cn}: {}", es(&e)))?;
        }
    }
    Ok(())
}

async fn run_test(env: &Env, file: &Document, test: &Document) -> Result<(), String> {
    if let Ok(data) = file.get_array("initialData") {
        initial_data(env, data).await?;
    }
    let mut st = TestState {
        routers: env.routers.clone(),
        uri: env.uri.clone(),
        version: env.version,
        internal: env.internal.clone(),
        ents: Entities::default(),
        failpoints: Vec::new(),
        started_txn: false,
        pinned: Vec::new(),
    };
    let mut result = run_test_body(env, file, test, &mut st).await;
    if let (Err(e), true) = (
        &mut result,
        std::env::var_os("MONGOSIM_SPEC_VERBOSE").is_some(),
    ) {
        for (id, ent) in &st.ents.map {
            if let Entity::Client(c) = ent {
                e.push_str(&format!("\n    commands sent by {id}:"));
                for cmd in c.started_commands() {
                    e.push_str(&format!("\n      {cmd}"));
                }
            }
        }
    }
    // Clean up whatever happened.
    for fp in std::mem::take(&mut st.failpoints) {
        disable_fail_point(env, &fp).await;
    }
    st.ents.clear().await;
    if st.started_txn {
        kill_all_sessions(env).await;
    }
    result
}

async fn run_test_body(
    env: &Env,
    file: &Document,
    test: &Document,
    st: &mut TestState,
) -> Result<(), String> {
    if let Ok(list) = file.get_array("createEntities") {
        for e in list {
            let Bson::Document(e) = e else {
                return Err("bad entity".into());
            };
            entities::create_entity(&mut st.ents, &env.uri, e).await?;
        }
    }
    let ops = test
        .get_array("operations")
        .map_err(|_| "test without operations")?;
    for (i, op) in ops.iter().enumerate() {
        let Bson::Document(op) = op else {
            return Err("bad operation".into());
        };
        let name = op.get_str("name").unwrap_or("?");
        let object = op.get_str("object").unwrap_or("?");
        run_operation(st, op)
            .await
            .map_err(|e| format!("operation #{i} {object}.{name}: {e}"))?;
    }
    // Disable fail points before looking at events and outcome.
    for fp in std::mem::take(&mut st.failpoints) {
        disable_fail_point(env, &fp).await;
    }
    operations::check_pinned(st)?;
    if let Ok(expect) = test.get_array("expectEvents") {
        for e in expect {
            let Bson::Document(e) = e else {
                return Err("bad expectEvents".into());
            };
            check_events(st, e).map_err(|m| format!("expectEvents: {m}"))?;
        }
    }
    if let Ok(outcome) = test.get_array("outcome") {
        check_outcome(env, outcome)
            .await
            .map_err(|m| format!("outcome: {m}"))?;
    }
    Ok(())
}

pub async fn run_operation(st: &mut TestState, op: &Document) -> Result<(), String> {
    let name = op.get_str("name").map_err(|_| "operation without name")?;
    let object = op
        .get_str("object")
        .map_err(|_| "operation without object")?;
    let args = op.get_document("arguments").cloned().unwrap_or_default();
    if object == "testRunner" {
        return operations::runner_op(st, name, &args).await;
    }
    let r = match tokio::time::timeout(OP_TIMEOUT, operations::entity_op(st, object, name, args))
        .await
    {
        Ok(r) => r?,
        Err(_) => return Err(format!("timed out after {OP_TIMEOUT:?}")),
    };
    if op.get_bool("ignoreResultAndError").unwrap_or(false) {
        return Ok(());
    }
    if let Ok(ee) = op.get_document("expectError") {
        return match r {
            Ok(res) => Err(format!(
                "expected an error {ee}, got success {}",
                show_res(&res)
            )),
            Err(e) => check_error(st, ee, &e),
        };
    }
    let res = r.map_err(|e| format!("unexpected error: {}", ErrInfo::of(&e).display))?;
    if let Some(expected) = op.get("expectResult") {
        // A document result is the root document; an array's elements are root documents
        // only for iterable results (find, aggregate, ...), not for values (distinct).
        let (actual, root) = match &res {
            Res::Value(v @ Bson::Document(_), _) => (Some(v.clone()), true),
            Res::Value(v, root) => (Some(v.clone()), *root),
            Res::None => (None, false),
            Res::Entity(_) => return Err("expectResult on an entity result".into()),
        };
        matches(expected, actual.as_ref(), root, &st.ents)
            .map_err(|m| format!("result mismatch: {m}"))?;
    }
    if let Ok(id) = op.get_str("saveResultAsEntity") {
        let e = match res {
            Res::Value(v, _) => Entity::Bson(v),
            Res::Entity(e) => e,
            Res::None => return Err("saveResultAsEntity: operation returned nothing".into()),
        };
        st.ents.insert(id, e)?;
    }
    Ok(())
}

/// Short description of a driver error.
fn es(e: &mongodb::error::Error) -> String {
    ErrInfo::of(&OpErr::Driver(e.clone())).display
}

fn show_res(r: &Res) -> String {
    match r {
        Res::None => "(no result)".into(),
        Res::Value(v, _) => v.to_string(),
        Res::Entity(e) => format!("({} entity)", e.kind()),
    }
}

/// Code numbers of the code names the suites use (for write errors without `codeName`).
fn code_for_name(name: &str) -> Option<i32> {
    Some(match name {
        "Interrupted" => 11601,
        "NoSuchTransaction" => 251,
        "WriteConflict" => 112,
        "OperationNotSupportedInTransaction" => 263,
        "ChangeStreamFatalError" => 280,
        "DuplicateKey" => 11000,
        "DocumentValidationFailure" => 121,
        "NamespaceNotFound" => 26,
        "TransactionTooOld" => 225,
        "TransactionCommitted" => 256,
        "ExceededTimeLimit" => 262,
        "MaxTimeMSExpired" => 50,
        "UnknownReplWriteConcern" => 79,
        "UnsatisfiableWriteConcern" => 100,
        "WriteConcernFailed" => 64,
        "FailedToParse" => 9,
        "BadValue" => 2,
        "InvalidOptions" => 72,
        "CommandNotFound" => 59,
        _ => return None,
    })
}

/// Checks an operation's error against `expectError`, field by field.
fn check_error(st: &TestState, ee: &Document, e: &OpErr) -> Result<(), String> {
    let info = ErrInfo::of(e);
    for (k, v) in ee {
        check_error_field(st, k, v, e, &info)?;
    }
    Ok(())
}

/// The error, for the end of a failure message.
fn ctx(info: &ErrInfo) -> String {
    format!(" (error: {})", info.display)
}

/// Checks one field of `expectError`.
fn check_error_field(
    st: &TestState,
    k: &str,
    v: &Bson,
    e: &OpErr,
    info: &ErrInfo,
) -> Result<(), String> {
    match k {
        "isError" => Ok(()),
        "isClientError" => {
            if v.as_bool() != Some(info.client) {
                return Err(format!(
                    "isClientError: expected {v}, client = {}{}",
                    info.client,
                    ctx(info)
                ));
            }
            Ok(())
        }
        "isTimeoutError" => {
            if v.as_bool() == Some(true) {
                return Err("isTimeoutError: timeoutMS is not implemented by the driver".into());
            }
            Ok(())
        }
        "errorContains" => check_error_contains(v, info),
        "errorCode" => check_error_code(v, info),
        "errorCodeName" => check_error_code_name(v, info),
        "errorLabelsContain" | "errorLabelsOmit" => check_error_labels(k, v, e, info),
        "errorResponse" => {
            let actual = info.response.clone().map(Bson::Document);
            matches(v, actual.as_ref(), true, &st.ents)
                .map_err(|m| format!("errorResponse: {m}{}", ctx(info)))
        }
        "expectResult" => matches(v, info.partial.as_ref(), true, &st.ents)
            .map_err(|m| format!("expectError.expectResult: {m}{}", ctx(info))),
        "writeErrors" | "writeConcernErrors" => Err(format!(
            "{k}: only used with clientBulkWrite, which needs MongoDB 8.0"
        )),
        other => Err(format!("unsupported expectError field {other}")),
    }
}

/// `errorContains`: the message of the error (or of an aggregated error) contains the text,
/// ignoring case.
fn check_error_contains(v: &Bson, info: &ErrInfo) -> Result<(), String> {
    let want = v.as_str().unwrap_or_default().to_lowercase();
    let found = info.display.to_lowercase().contains(&want)
        || info
            .codes
            .iter()
            .any(|c| c.2.to_lowercase().contains(&want));
    if !found {
        return Err(format!("errorContains {want:?} not found{}", ctx(info)));
    }
    Ok(())
}

/// `errorCode`: a server error with that code.
fn check_error_code(v: &Bson, info: &ErrInfo) -> Result<(), String> {
    let want = matcher::as_f64(v).unwrap_or(-1.0) as i32;
    if info.client || !info.codes.iter().any(|c| c.0 == want) {
        return Err(format!(
            "errorCode: expected {want}, got {:?}{}",
            info.codes,
            ctx(info)
        ));
    }
    Ok(())
}

/// `errorCodeName`: an error with that code name (or the code of that name when the error
/// has no name).
fn check_error_code_name(v: &Bson, info: &ErrInfo) -> Result<(), String> {
    let want = v.as_str().unwrap_or_default();
    let ok = info.codes.iter().any(|c| match &c.1 {
        Some(n) => n.eq_ignore_ascii_case(want),
        None => code_for_name(want) == Some(c.0),
    });
    if !ok {
        return Err(format!(
            "errorCodeName: expected {want}, got {:?}{}",
            info.codes,
            ctx(info)
        ));
    }
    Ok(())
}

/// `errorLabelsContain` / `errorLabelsOmit`: each listed label is present (absent).
fn check_error_labels(k: &str, v: &Bson, e: &OpErr, info: &ErrInfo) -> Result<(), String> {
    for l in v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
    {
        let has = info.labels.contains(l) || matches!(e, OpErr::Driver(d) if d.contains_label(l));
        if k == "errorLabelsContain" && !has {
            return Err(format!(
                "missing error label {l}; labels {:?}{}",
                info.labels,
                ctx(info)
            ));
        }
        if k == "errorLabelsOmit" && has {
            return Err(format!("unexpected error label {l}{}", ctx(info)));
        }
    }
    Ok(())
}

fn check_events(st: &TestState, e: &Document) -> Result<(), String> {
    let cid = e
        .get_str("client")
        .map_err(|_| "expectEvents without client")?;
    let client = st.ents.client(cid)?;
    let expected = e
        .get_array("events")
        .map_err(|_| "expectEvents without events")?;
    let ignore_extra = e.get_bool("ignoreExtraEvents").unwrap_or(false);
    let kind = e.get_str("eventType").unwrap_or("command");
    if kind == "cmap" {
        let actual = client.cmap_events();
        let want: Vec<String> = expected
            .iter()
            .filter_map(|x| x.as_document().and_then(|d| d.keys().next().cloned()))
            .collect();
        let ok = if ignore_extra {
            actual.len() >= want.len() && want.iter().zip(&actual).all(|(w, a)| w == a)
        } else {
            actual.len() == want.len() && want.iter().zip(&actual).all(|(w, a)| w == a)
        };
        return if ok {
            Ok(())
        } else {
            Err(format!("cmap events: expected {want:?}, got {actual:?}"))
        };
    }
    if kind != "command" {
        return Err(format!("unsupported eventType {kind}"));
    }
    let actual = client.command_events();
    let summary = || {
        actual
            .iter()
            .map(|a| match a {
                Ev::Started { name, .. } => format!("started:{name}"),
                Ev::Succeeded { name, .. } => format!("succeeded:{name}"),
                Ev::Failed { name } => format!("failed:{name}"),
                Ev::Cmap(n) => n.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if actual.len() < expected.len() || (!ignore_extra && actual.len() != expected.len()) {
        return Err(format!(
            "expected {} events, got {}: [{}]",
            expected.len(),
            actual.len(),
            summary()
        ));
    }
    for (i, (x, a)) in expected.iter().zip(&actual).enumerate() {
        let Some(x) = x.as_document() else {
            return Err("bad expected event".into());
        };
        let (xk, xv) = x.iter().next().ok_or("empty expected event")?;
        let xv = xv.as_document().cloned().unwrap_or_default();
        let r = match (xk.as_str(), a) {
            (
                "commandStartedEvent",
                Ev::Started {
                    name, db, command, ..
                },
            ) => check_common(&xv, name, Some(db)).and_then(|_| match xv.get("command") {
                Some(c) => matches(c, Some(&Bson::Document(command.clone())), true, &st.ents),
                None => Ok(()),
            }),
            ("commandSucceededEvent", Ev::Succeeded { name, reply }) => {
                check_common(&xv, name, None).and_then(|_| match xv.get("reply") {
                    Some(c) => matches(c, Some(&Bson::Document(reply.clone())), true, &st.ents),
                    None => Ok(()),
                })
            }
            ("commandFailedEvent", Ev::Failed { name }) => check_common(&xv, name, None),
            (k, _) => Err(format!("expected {k}")),
        };
        r.map_err(|m| format!("event #{i}: {m}; events: [{}]", summary()))?;
    }
    Ok(())
}

fn check_common(x: &Document, name: &str, db: Option<&String>) -> Result<(), String> {
    if let Ok(n) = x.get_str("commandName") {
        if n != name {
            return Err(format!("commandName: expected {n}, got {name}"));
        }
    }
    if let (Ok(want), Some(db)) = (x.get_str("databaseName"), db) {
        if want != db {
            return Err(format!("databaseName: expected {want}, got {db}"));
        }
    }
    Ok(())
}

async fn check_outcome(env: &Env, outcome: &[Bson]) -> Result<(), String> {
    for cd in outcome {
        let Bson::Document(cd) = cd else {
            return Err("bad outcome".into());
        };
        let dbn = cd
            .get_str("databaseName")
            .map_err(|_| "outcome without databaseName")?;
        let cn = cd
            .get_str("collectionName")
            .map_err(|_| "outcome without collectionName")?;
        let want: Vec<Bson> = cd.get_array("documents").cloned().unwrap_or_default();
        let coll = env.internal.database(dbn).collection::<Document>(cn);
        let got: Vec<Document> = coll
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .read_concern(ReadConcern::local())
            .await
            .map_err(|e| format!("find {dbn}.{cn}: {}", es(&e)))?
            .try_collect()
            .await
            .map_err(|e| format!("find {dbn}.{cn}: {}", es(&e)))?;
        let got: Vec<Bson> = got.into_iter().map(Bson::Document).collect();
        let same =
            want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| matcher::exact_eq(w, g));
        if !same {
            return Err(format!(
                "{dbn}.{cn}: expected {}, got {}",
                Bson::Array(want),
                Bson::Array(got)
            ));
        }
    }
    Ok(())
}
