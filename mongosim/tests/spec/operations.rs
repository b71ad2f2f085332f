//! Execution of entity and special (`testRunner`) operations.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use mongodb::{
    bson::{doc, oid::ObjectId, to_bson, Bson, Document},
    change_stream::{event::ChangeStreamEvent, ChangeStream},
    error::{Error, ErrorKind, WriteFailure},
    options::{
        AggregateOptions, ChangeStreamOptions, CreateCollectionOptions, ListCollectionsOptions,
        SelectionCriteria, UpdateModifications, WriteConcern, WriteModel,
    },
    ClientSession, Collection, Database,
};
use serde::de::DeserializeOwned;
use tokio::sync::OwnedMutexGuard;

use crate::{
    entities::{self, Entities, Entity, SessionEntity},
    matcher,
};

/// Per-test state the operations work on.
pub struct TestState {
    /// On a sharded cluster, a client per mongos (`host:port`, client).
    pub routers: Vec<(String, mongodb::Client)>,
    pub uri: String,
    /// Server version (for options the driver lacks, e.g. `rawData` before 8.2).
    pub version: (u64, u64, u64),
    pub internal: mongodb::Client,
    pub ents: Entities,
    /// Fail points to disable after the test (name).
    pub failpoints: Vec<String>,
    pub started_txn: bool,
    /// `assertSessionPinned` on a sharded cluster, checked at the end of the test:
    /// `(client id, lsid, pinned mongos, first event index after the assertion)`.
    pub pinned: Vec<(String, Document, String, usize)>,
}

/// An operation's error: from the driver, a client-side error the runner raises on the
/// driver's behalf (e.g. use of an ended session), or an emulated bulk-write error.
#[derive(Debug)]
pub enum OpErr {
    Driver(Error),
    Client(String),
    Bulk(Box<BulkErr>),
}

/// Error of the runner-emulated collection `bulkWrite` (BulkWriteException).
#[derive(Debug, Default)]
pub struct BulkErr {
    pub write_errors: Vec<Document>,
    pub wc_errors: Vec<Document>,
    pub labels: HashSet<String>,
    pub partial: Document,
}

/// A successful operation's result.
pub enum Res {
    None,
    /// A value; `true` when documents in it are root-level documents (iterable results).
    Value(Bson, bool),
    Entity(Entity),
}

type OpResult = Result<Res, OpErr>;

impl From<Error> for OpErr {
    fn from(e: Error) -> Self {
        OpErr::Driver(e)
    }
}

/// Flattened view of an error for `expectError` assertions.
pub struct ErrInfo {
    pub client: bool,
    /// (code, codeName, message) of the error and every aggregated error.
    pub codes: Vec<(i32, Option<String>, String)>,
    pub labels: HashSet<String>,
    pub response: Option<Document>,
    pub partial: Option<Bson>,
    pub display: String,
}

fn collect_driver(e: &Error, info: &mut ErrInfo) {
    info.labels.extend(e.labels().iter().cloned());
    if info.response.is_none() {
        if let Some(r) = e.server_response() {
            info.response = r.to_document().ok();
        }
    }
    match e.kind.as_ref() {
        ErrorKind::Command(c) => {
            info.client = false;
            info.codes
                .push((c.code, Some(c.code_name.clone()), c.message.clone()));
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            info.client = false;
            info.codes
                .push((w.code, w.code_name.clone(), w.message.clone()));
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            info.client = false;
            info.codes
                .push((w.code, Some(w.code_name.clone()), w.message.clone()));
        }
        ErrorKind::InsertMany(im) => {
            info.client = false;
            for w in im.write_errors.iter().flatten() {
                info.codes
                    .push((w.code, w.code_name.clone(), w.message.clone()));
            }
            if let Some(w) = &im.write_concern_error {
                info.codes
                    .push((w.code, Some(w.code_name.clone()), w.message.clone()));
            }
        }
        ErrorKind::BulkWrite(bw) => {
            info.client = false;
            for w in bw.write_errors.values() {
                info.codes
                    .push((w.code, w.code_name.clone(), w.message.clone()));
            }
            for w in &bw.write_concern_errors {
                info.codes
                    .push((w.code, Some(w.code_name.clone()), w.message.clone()));
            }
        }
        ErrorKind::Authentication { .. } => info.client = false,
        _ => {}
    }
    if let Some(src) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<Error>()) {
        collect_driver(src, info);
    }
}

/// The driver's Display includes the raw server response as hex; keep messages readable.
fn short_error(e: &Error, info: &ErrInfo) -> String {
    let kind = match e.kind.as_ref() {
        ErrorKind::Command(_) => "command error",
        ErrorKind::Write(_) => "write error",
        ErrorKind::InsertMany(_) => "insertMany error",
        ErrorKind::BulkWrite(_) => "bulkWrite error",
        _ => {
            let s = e.to_string();
            return s
                .split(", server response")
                .next()
                .unwrap_or(&s)
                .to_string();
        }
    };
    let codes: Vec<String> = info
        .codes
        .iter()
        .map(|(c, n, m)| format!("{c} ({}): {m}", n.as_deref().unwrap_or("?")))
        .collect();
    format!("{kind} [{}] labels {:?}", codes.join("; "), info.labels)
}

impl ErrInfo {
    pub fn of(e: &OpErr) -> ErrInfo {
        let mut info = ErrInfo {
            client: true,
            codes: Vec::new(),
            labels: HashSet::new(),
            response: None,
            partial: None,
            display: String::new(),
        };
        match e {
            OpErr::Driver(d) => {
                collect_driver(d, &mut info);
                info.display = short_error(d, &info);
            }
            OpErr::Client(s) => info.display = s.clone(),
            OpErr::Bulk(b) => {
                let b = &**b;
                info.client = false;
                info.labels = b.labels.clone();
                for w in b.write_errors.iter().chain(&b.wc_errors) {
                    let code = w.get("code").and_then(matcher::as_f64).unwrap_or(-1.0) as i32;
                    let name = w.get_str("codeName").ok().map(str::to_string);
                    let msg = w.get_str("errmsg").unwrap_or_default().to_string();
                    info.codes.push((code, name, msg));
                }
                info.partial = Some(Bson::Document(b.partial.clone()));
                info.display = format!("bulk write error {:?} {:?}", b.write_errors, b.wc_errors);
            }
        }
        info
    }
}

// ---------------------------------------------------------------------------------------
// argument helpers

fn take_doc(args: &mut Document, k: &str) -> Result<Document, String> {
    match args.remove(k) {
        Some(Bson::Document(d)) => Ok(d),
        Some(other) => Err(format!("argument {k} must be a document, got {other}")),
        None => Err(format!("missing argument {k}")),
    }
}

fn take_docs(args: &mut Document, k: &str) -> Result<Vec<Document>, String> {
    match args.remove(k) {
        Some(Bson::Array(a)) => a
            .into_iter()
            .map(|b| match b {
                Bson::Document(d) => Ok(d),
                other => Err(format!("{k} element must be a document, got {other}")),
            })
            .collect(),
        Some(other) => Err(format!("argument {k} must be an array, got {other}")),
        None => Err(format!("missing argument {k}")),
    }
}

fn take_str(args: &mut Document, k: &str) -> Result<String, String> {
    match args.remove(k) {
        Some(Bson::String(s)) => Ok(s),
        other => Err(format!("argument {k} must be a string, got {other:?}")),
    }
}

/// Fails when arguments remain that the operation does not take.
fn no_extra_args(args: &Document) -> Result<(), String> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(format!("unsupported arguments {args}"))
    }
}

/// Checks that only `allowed` keys remain and deserializes them into the options type.
fn opts<T: DeserializeOwned + Default>(args: &Document, allowed: &[&str]) -> Result<T, String> {
    for k in args.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("unsupported argument `{k}`"));
        }
    }
    if args.is_empty() {
        return Ok(T::default());
    }
    mongodb::bson::from_document(args.clone()).map_err(|e| format!("bad options {args}: {e}"))
}

/// `maxTimeMS` for option types whose serde mapping of `max_time` does not read milliseconds
/// (FindOptions, FindOneAnd*Options, CountOptions).
fn take_max_time(args: &mut Document) -> Result<Option<Duration>, String> {
    match args.remove("maxTimeMS") {
        None => Ok(None),
        Some(v) => matcher::as_f64(&v)
            .map(|ms| Some(Duration::from_millis(ms as u64)))
            .ok_or_else(|| format!("bad maxTimeMS {v}")),
    }
}

fn update_mods(b: Bson) -> Result<UpdateModifications, String> {
    match b {
        Bson::Document(d) => Ok(UpdateModifications::Document(d)),
        Bson::Array(a) => Ok(UpdateModifications::Pipeline(
            a.into_iter()
                .map(|s| match s {
                    Bson::Document(d) => Ok(d),
                    o => Err(format!("bad pipeline stage {o}")),
                })
                .collect::<Result<_, _>>()?,
        )),
        o => Err(format!("bad update {o}")),
    }
}

fn usize_doc(m: &std::collections::HashMap<usize, Bson>) -> Document {
    let mut keys: Vec<_> = m.keys().copied().collect();
    keys.sort_unstable();
    let mut d = Document::new();
    for k in keys {
        d.insert(k.to_string(), m[&k].clone());
    }
    d
}

fn update_result(r: mongodb::results::UpdateResult) -> Bson {
    let mut d = doc! {
        "matchedCount": r.matched_count as i64,
        "modifiedCount": r.modified_count as i64,
        "upsertedCount": if r.upserted_id.is_some() { 1_i64 } else { 0 },
    };
    if let Some(id) = r.upserted_id {
        d.insert("upsertedId", id);
    }
    Bson::Document(d)
}

fn docs_value(v: Vec<Document>) -> Res {
    Res::Value(
        Bson::Array(v.into_iter().map(Bson::Document).collect()),
        true,
    )
}

/// Locks the session named in `args.session` (if any).
async fn lock_session(
    st: &TestState,
    args: &mut Document,
) -> Result<Option<OwnedMutexGuard<SessionEntity>>, String> {
    match args.remove("session") {
        None => Ok(None),
        Some(Bson::String(id)) => Ok(Some(st.ents.session(&id)?.lock_owned().await)),
        Some(o) => Err(format!("bad session argument {o}")),
    }
}

/// `&mut ClientSession` of a locked session; an ended session is a client error.
fn sess_mut(
    g: &mut Option<OwnedMutexGuard<SessionEntity>>,
) -> Result<Option<&mut ClientSession>, OpErr> {
    match g {
        None => Ok(None),
        Some(g) => match g.session.as_mut() {
            Some(s) => Ok(Some(s)),
            None => Err(OpErr::Client("session used after endSession".into())),
        },
    }
}

macro_rules! run {
    ($sess:expr, $action:expr) => {
        match $sess {
            Some(s) => $action.session(s).await,
            None => $action.await,
        }
    };
}

fn wc_doc(wc: &WriteConcern) -> Document {
    let mut d = Document::new();
    if let Some(w) = &wc.w {
        match w {
            mongodb::options::Acknowledgment::Nodes(n) => d.insert("w", *n as i32),
            mongodb::options::Acknowledgment::Majority => d.insert("w", "majority"),
            mongodb::options::Acknowledgment::Custom(s) => d.insert("w", s.clone()),
            _ => None,
        };
    }
    if let Some(j) = wc.journal {
        d.insert("j", j);
    }
    if let Some(t) = wc.w_timeout {
        d.insert("wtimeout", t.as_millis() as i64);
    }
    d
}

// ---------------------------------------------------------------------------------------
// entity operations

/// Runs an entity operation. `Err(String)` is a runner-level failure (bad test or unsupported
/// feature), independent of the operation's expectations.
pub async fn entity_op(
    st: &mut TestState,
    object: &str,
    name: &str,
    args: Document,
) -> Result<OpResult, String> {
    let ent = st.ents.get(object)?.clone();
    let mut args = args;
    // The driver has no `rawData` option; servers before 8.2 ignore it, which is what these
    // tests expect there (they are "rawData ... on less than 8.2.0 - ignore argument").
    if st.version < (8, 2, 0) {
        args.remove("rawData");
    }
    match ent {
        Entity::Collection(c) => collection_op(st, &c, name, &mut args).await,
        Entity::Database(d) => database_op(st, &d, name, &mut args).await,
        Entity::Client(c) => client_op(&c, name, &mut args).await,
        Entity::Session(s) => {
            let mut g = s.lock_owned().await;
            session_op(st, &mut g, name, &mut args).await
        }
        Entity::ChangeStream(cs) => {
            no_extra_args(&args)?;
            let mut cs = cs.lock().await;
            match name {
                "iterateUntilDocumentOrError" => Ok(match cs.next().await {
                    Some(Ok(d)) => Ok(Res::Value(Bson::Document(d), true)),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(OpErr::Client("change stream ended".into())),
                }),
                "iterateOnce" => Ok(match cs.next_if_any().await {
                    Ok(Some(d)) => Ok(Res::Value(Bson::Document(d), true)),
                    Ok(None) => Ok(Res::None),
                    Err(e) => Err(e.into()),
                }),
                "close" => {
                    drop(cs);
                    st.ents.map.remove(object);
                    Ok(Ok(Res::None))
                }
                other => Err(format!("unsupported change stream operation {other}")),
            }
        }
        Entity::Cursor(cur) => {
            no_extra_args(&args)?;
            let mut cur = cur.lock().await;
            match name {
                "iterateUntilDocumentOrError" => Ok(match cur.next().await {
                    Some(Ok(d)) => Ok(Res::Value(Bson::Document(d), true)),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(OpErr::Client("cursor exhausted".into())),
                }),
                "iterateOnce" => Ok(match cur.advance().await {
                    Ok(true) => match cur.deserialize_current() {
                        Ok(d) => Ok(Res::Value(Bson::Document(d), true)),
                        Err(e) => Err(e.into()),
                    },
                    Ok(false) => Ok(Res::None),
                    Err(e) => Err(e.into()),
                }),
                "close" => {
                    drop(cur);
                    st.ents.map.remove(object);
                    Ok(Ok(Res::None))
                }
                other => Err(format!("unsupported cursor operation {other}")),
            }
        }
        Entity::Bson(_) => Err(format!("operation {name} on a BSON entity")),
    }
}

async fn session_op(
    st: &mut TestState,
    g: &mut SessionEntity,
    name: &str,
    args: &mut Document,
) -> Result<OpResult, String> {
    if name == "endSession" {
        // Ending a session aborts its transaction (the driver does it when the session is
        // dropped, in the background; the runner does it in line so the events are ordered).
        if let Some(mut s) = g.session.take() {
            if g.state == "in_progress" {
                let _ = s.abort_transaction().await;
                g.state = "aborted";
            }
        }
        return Ok(Ok(Res::None));
    }
    let Some(s) = g.session.as_mut() else {
        return Ok(Err(OpErr::Client("session used after endSession".into())));
    };
    match name {
        "startTransaction" => {
            let o = entities::parse_transaction_options(args)?;
            st.started_txn = true;
            let r = if args.is_empty() {
                s.start_transaction().await
            } else {
                s.start_transaction().with_options(o).await
            };
            if r.is_ok() {
                g.state = "starting";
            }
            Ok(r.map(|_| Res::None).map_err(OpErr::from))
        }
        "commitTransaction" => {
            no_extra_args(args)?;
            let r = s.commit_transaction().await;
            if g.state != "none" {
                g.state = "committed";
            }
            Ok(r.map(|_| Res::None).map_err(OpErr::from))
        }
        "abortTransaction" => {
            no_extra_args(args)?;
            let r = s.abort_transaction().await;
            if g.state != "none" {
                g.state = "aborted";
            }
            Ok(r.map(|_| Res::None).map_err(OpErr::from))
        }
        other => Err(format!("unsupported session operation {other}")),
    }
}

/// Runs a client entity operation.
async fn client_op(
    c: &entities::ClientEntity,
    name: &str,
    args: &mut Document,
) -> Result<OpResult, String> {
    match name {
        "createChangeStream" => {
            let (pipeline, o) = change_stream_args(args)?;
            Ok(change_stream_entity(
                c.client.watch().pipeline(pipeline).with_options(o).await,
            ))
        }
        "listDatabases" => {
            let filter = args.remove("filter").and_then(|b| b.as_document().cloned());
            let mut a = c.client.list_databases();
            if let Some(f) = filter {
                a = a.filter(f);
            }
            no_extra_args(args)?;
            Ok(match a.await {
                Ok(v) => Ok(Res::Value(
                    Bson::Array(v.iter().filter_map(|d| to_bson(d).ok()).collect()),
                    true,
                )),
                Err(e) => Err(e.into()),
            })
        }
        "clientBulkWrite" => client_bulk_write(c, args).await,
        other => Err(format!("unsupported client operation {other}")),
    }
}

/// `clientBulkWrite` with the driver's `Client::bulk_write` (MongoDB 8.0+; on older servers
/// only its client-side validation tests apply).
async fn client_bulk_write(
    c: &entities::ClientEntity,
    args: &mut Document,
) -> Result<OpResult, String> {
    let models = take_docs(args, "models")?;
    let verbose = matches!(args.remove("verboseResults"), Some(Bson::Boolean(true)));
    let ordered = args.remove("ordered").and_then(|b| b.as_bool());
    no_extra_args(args)?;
    let out = models
        .iter()
        .map(write_model)
        .collect::<Result<Vec<_>, String>>()?;
    let mut a = c.client.bulk_write(out);
    if let Some(o) = ordered {
        a = a.ordered(o);
    }
    let r = if verbose {
        a.verbose_results().await.map(|r| verbose_bulk_result(&r))
    } else {
        a.await.map(|r| bulk_summary(&r))
    };
    Ok(r.map(|d| Res::Value(Bson::Document(d), false))
        .map_err(OpErr::from))
}

/// One `clientBulkWrite` model as the driver's write model.
fn write_model(m: &Document) -> Result<WriteModel, String> {
    use mongodb::{
        options::{DeleteManyModel, DeleteOneModel, InsertOneModel, ReplaceOneModel, WriteModel},
        Namespace,
    };
    let (kind, body) = m.iter().next().ok_or("empty model")?;
    let Bson::Document(b) = body else {
        return Err(format!("bad model {m}"));
    };
    let mut b = b.clone();
    let ns: Namespace = take_str(&mut b, "namespace")?
        .parse()
        .map_err(|e| format!("bad namespace: {e}"))?;
    let model: WriteModel = match kind.as_str() {
        "insertOne" => InsertOneModel::builder()
            .namespace(ns)
            .document(take_doc(&mut b, "document")?)
            .build()
            .into(),
        "updateOne" | "updateMany" => update_model(kind, ns, &mut b)?,
        "replaceOne" => ReplaceOneModel::builder()
            .namespace(ns)
            .filter(take_doc(&mut b, "filter")?)
            .replacement(take_doc(&mut b, "replacement")?)
            .build()
            .into(),
        "deleteOne" => DeleteOneModel::builder()
            .namespace(ns)
            .filter(take_doc(&mut b, "filter")?)
            .build()
            .into(),
        "deleteMany" => DeleteManyModel::builder()
            .namespace(ns)
            .filter(take_doc(&mut b, "filter")?)
            .build()
            .into(),
        other => return Err(format!("unknown write model {other}")),
    };
    if !b.is_empty() {
        return Err(format!("unsupported write model fields {b}"));
    }
    Ok(model)
}

/// An `updateOne` / `updateMany` write model from its fields in `b`.
fn update_model(
    kind: &str,
    ns: mongodb::Namespace,
    b: &mut Document,
) -> Result<WriteModel, String> {
    use mongodb::options::{UpdateManyModel, UpdateOneModel};
    let f = take_doc(b, "filter")?;
    let u = update_mods(b.remove("update").ok_or("missing update")?)?;
    Ok(if kind == "updateOne" {
        UpdateOneModel::builder()
            .namespace(ns)
            .filter(f)
            .update(u)
            .build()
            .into()
    } else {
        UpdateManyModel::builder()
            .namespace(ns)
            .filter(f)
            .update(u)
            .build()
            .into()
    })
}

/// The counts of a client bulk write result.
fn bulk_summary(s: &mongodb::results::SummaryBulkWriteResult) -> Document {
    doc! {
        "insertedCount": s.inserted_count,
        "matchedCount": s.matched_count,
        "modifiedCount": s.modified_count,
        "upsertedCount": s.upserted_count,
        "deletedCount": s.deleted_count,
    }
}

/// The counts and the per-model results of a verbose client bulk write result.
fn verbose_bulk_result(r: &mongodb::results::VerboseBulkWriteResult) -> Document {
    let mut d = bulk_summary(&r.summary);
    let mut ins = Document::new();
    for (i, x) in &r.insert_results {
        ins.insert(i.to_string(), doc! { "insertedId": x.inserted_id.clone() });
    }
    let mut upd = Document::new();
    for (i, x) in &r.update_results {
        if let Bson::Document(u) = update_result(x.clone()) {
            let mut u = u;
            u.remove("upsertedCount");
            upd.insert(i.to_string(), u);
        }
    }
    let mut del = Document::new();
    for (i, x) in &r.delete_results {
        del.insert(
            i.to_string(),
            doc! { "deletedCount": x.deleted_count as i64 },
        );
    }
    d.insert("insertResults", ins);
    d.insert("updateResults", upd);
    d.insert("deleteResults", del);
    d
}

/// The pipeline and options of `createChangeStream` (client, database or collection).
fn change_stream_args(args: &mut Document) -> Result<(Vec<Document>, ChangeStreamOptions), String> {
    let pipeline = take_docs(args, "pipeline").unwrap_or_default();
    let o = change_stream_opts(args)?;
    Ok((pipeline, o))
}

/// A new change stream as an entity (of raw documents), or the driver's error.
fn change_stream_entity(
    r: mongodb::error::Result<ChangeStream<ChangeStreamEvent<Document>>>,
) -> OpResult {
    r.map(|cs| {
        Res::Entity(Entity::ChangeStream(Arc::new(tokio::sync::Mutex::new(
            cs.with_type::<Document>(),
        ))))
    })
    .map_err(OpErr::from)
}

fn change_stream_opts(args: &Document) -> Result<ChangeStreamOptions, String> {
    opts(
        args,
        &[
            "fullDocument",
            "fullDocumentBeforeChange",
            "resumeAfter",
            "startAfter",
            "startAtOperationTime",
            "showExpandedEvents",
            "comment",
            "batchSize",
            "collation",
        ],
    )
}

/// After an operation on a session in state `starting`: the transaction is `in_progress`
/// once a command was sent (a client-side error before sending leaves it `starting`).
fn note_sent(g: &mut Option<OwnedMutexGuard<SessionEntity>>, r: &OpResult) {
    if let Some(g) = g {
        let sent = match r {
            Ok(_) => true,
            Err(e) => {
                !ErrInfo::of(e).client
                    || matches!(e, OpErr::Driver(d) if matches!(*d.kind, ErrorKind::Io(_)))
            }
        };
        if g.state == "starting" && sent {
            g.state = "in_progress";
        }
    }
}

async fn database_op(
    st: &mut TestState,
    db: &Database,
    name: &str,
    args: &mut Document,
) -> Result<OpResult, String> {
    let mut g = lock_session(st, args).await?;
    let r = match sess_mut(&mut g) {
        Ok(sess) => database_op_inner(db, name, args, sess).await?,
        Err(e) => return Ok(Err(e)),
    };
    note_sent(&mut g, &r);
    Ok(r)
}

/// Dispatches a database operation by name.
async fn database_op_inner(
    db: &Database,
    name: &str,
    args: &mut Document,
    sess: Option<&mut ClientSession>,
) -> Result<OpResult, String> {
    match name {
        "runCommand" => run_command(db, args, sess).await,
        "aggregate" => {
            let pipeline = take_docs(args, "pipeline")?;
            let o: AggregateOptions = opts(args, AGGREGATE_OPTIONS)?;
            Ok(aggregate(db.aggregate(pipeline).with_options(o), sess).await)
        }
        "createCollection" => create_collection(db, args, sess).await,
        "dropCollection" => {
            let coll = take_str(args, "collection")?;
            no_extra_args(args)?;
            Ok(run!(sess, db.collection::<Document>(&coll).drop())
                .map(|_| Res::None)
                .map_err(OpErr::from))
        }
        "listCollections" => list_collections(db, args, sess).await,
        "modifyCollection" => {
            // Emulated: the driver has no collMod helper; the CRUD/collection-management specs
            // define it as the `collMod` command.
            let coll = take_str(args, "collection")?;
            let mut cmd = doc! { "collMod": coll };
            cmd.extend(std::mem::take(args));
            Ok(run!(sess, db.run_command(cmd))
                .map(|_| Res::None)
                .map_err(OpErr::from))
        }
        "createChangeStream" => {
            let (pipeline, o) = change_stream_args(args)?;
            Ok(change_stream_entity(
                db.watch().pipeline(pipeline).with_options(o).await,
            ))
        }
        other => Err(format!("unsupported database operation {other}")),
    }
}

/// `runCommand`: the command's reply.
async fn run_command(
    db: &Database,
    args: &mut Document,
    sess: Option<&mut ClientSession>,
) -> Result<OpResult, String> {
    let cmd = take_doc(args, "command")?;
    let _ = args.remove("commandName");
    let rp = match args.remove("readPreference") {
        Some(Bson::Document(d)) => Some(entities::parse_read_preference(&d)?),
        _ => None,
    };
    no_extra_args(args)?;
    let mut a = db.run_command(cmd);
    if let Some(rp) = rp {
        a = a.selection_criteria(rp);
    }
    Ok(run!(sess, a)
        .map(|d| Res::Value(Bson::Document(d), true))
        .map_err(OpErr::from))
}

/// `createCollection`.
async fn create_collection(
    db: &Database,
    args: &mut Document,
    sess: Option<&mut ClientSession>,
) -> Result<OpResult, String> {
    let coll = take_str(args, "collection")?;
    let o: CreateCollectionOptions = opts(
        args,
        &[
            "viewOn",
            "pipeline",
            "capped",
            "size",
            "max",
            "validator",
            "validationLevel",
            "validationAction",
            "collation",
            "changeStreamPreAndPostImages",
            "clusteredIndex",
            "expireAfterSeconds",
            "timeseries",
            "comment",
            "indexOptionDefaults",
            "storageEngine",
        ],
    )?;
    Ok(run!(sess, db.create_collection(coll).with_options(o))
        .map(|_| Res::None)
        .map_err(OpErr::from))
}

/// `listCollections`: the collection specifications.
async fn list_collections(
    db: &Database,
    args: &mut Document,
    sess: Option<&mut ClientSession>,
) -> Result<OpResult, String> {
    let o: ListCollectionsOptions = opts(args, &["filter", "batchSize", "comment"])?;
    let r = match sess {
        Some(s) => match db.list_collections().with_options(o).session(&mut *s).await {
            Ok(mut c) => c.stream(s).try_collect::<Vec<_>>().await,
            Err(e) => Err(e),
        },
        None => match db.list_collections().with_options(o).await {
            Ok(c) => c.try_collect::<Vec<_>>().await,
            Err(e) => Err(e),
        },
    };
    Ok(r.map(|v| {
        Res::Value(
            Bson::Array(v.iter().filter_map(|c| to_bson(c).ok()).collect()),
            true,
        )
    })
    .map_err(OpErr::from))
}

/// Options `aggregate` accepts (database and collection).
const AGGREGATE_OPTIONS: &[&str] = &[
    "allowDiskUse",
    "batchSize",
    "bypassDocumentValidation",
    "collation",
    "comment",
    "hint",
    "maxTimeMS",
    "let",
];

/// Runs an aggregation and collects all its documents.
async fn aggregate(
    a: mongodb::action::Aggregate<'_>,
    sess: Option<&mut ClientSession>,
) -> OpResult {
    match sess {
        Some(s) => match a.session(&mut *s).await {
            Ok(mut c) => c
                .stream(s)
                .try_collect::<Vec<Document>>()
                .await
                .map(docs_value)
                .map_err(OpErr::from),
            Err(e) => Err(e.into()),
        },
        None => match a.await {
            Ok(c) => c
                .try_collect::<Vec<Document>>()
                .await
                .map(docs_value)
                .map_err(OpErr::from),
            Err(e) => Err(e.into()),
        },
    }
}

#[path = "operations/collection.rs"]
mod collection;

use collection::collection_op;

// ---------------------------------------------------------------------------------------
// testRunner operations

/// Runs a special `testRunner` operation.
pub async fn runner_op(st: &mut TestState, name: &str, args: &Document) -> Result<(), String> {
    match name {
        "failPoint" | "targetedFailPoint" => fail_point(st, args).await,
        "assertSessionTransactionState" => {
            let s = st.ents.session(args.get_str("session").map_err(|_| "session missing")?)?;
            let want = args.get_str("state").map_err(|_| "state missing")?;
            let got = s.lock().await.state;
            if got == want {
                Ok(())
            } else {
                Err(format!("session transaction state: expected {want}, got {got}"))
            }
        }
        "assertSessionPinned" if st.routers.is_empty() => {
            Err("assertSessionPinned: sessions are only pinned to mongos (sharded); this is a replica set".into())
        }
        "assertSessionUnpinned" if st.routers.is_empty() => Ok(()),
        "assertSessionPinned" => {
            expect_pin(st, args, true).await?;
            assert_pinned(st, args).await
        }
        "assertSessionUnpinned" => expect_pin(st, args, false).await,
        "assertCollectionExists" | "assertCollectionNotExists" => {
            assert_collection_exists(st, name, args).await
        }
        "assertIndexExists" | "assertIndexNotExists" => assert_index_exists(st, name, args).await,
        "assertSameLsidOnLastTwoCommands" | "assertDifferentLsidOnLastTwoCommands" => {
            assert_lsids_of_last_two(st, name, args)
        }
        "createEntities" => {
            let list = args.get_array("entities").map_err(|_| "entities missing")?;
            for e in list {
                let Bson::Document(e) = e else { return Err(format!("bad entity {e}")) };
                entities::create_entity(&mut st.ents, &st.uri, e).await?;
            }
            Ok(())
        }
        "wait" => {
            let ms = args.get("ms").and_then(matcher::as_f64).unwrap_or(0.0);
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
            Ok(())
        }
        other => Err(format!("unsupported testRunner operation {other} (driver API lacks it)")),
    }
}

/// `failPoint` / `targetedFailPoint`: configures a fail point through the client (or the
/// session's client) and remembers it to disable after the test.
async fn fail_point(st: &mut TestState, args: &Document) -> Result<(), String> {
    let fp = args
        .get_document("failPoint")
        .map_err(|_| "failPoint missing")?
        .clone();
    let client = match args.get_str("client") {
        Ok(id) => st.ents.client(id)?.client,
        Err(_) => {
            // targetedFailPoint: the server the session is pinned to — its only server on a
            // replica set; on a sharded cluster the mongos its last command went to.
            let sid = args.get_str("session").map_err(|_| "no client/session")?;
            let s = st.ents.session(sid)?;
            let cid = s.lock().await.client.clone();
            let entity = st.ents.client(&cid)?;
            match pinned_router(st, &entity, sid) {
                Some(c) => c,
                None => entity.client,
            }
        }
    };
    let fp_name = fp
        .get_str("configureFailPoint")
        .map_err(|_| "bad failPoint")?
        .to_string();
    client
        .database("admin")
        .run_command(fp)
        .selection_criteria(SelectionCriteria::ReadPreference(
            mongodb::options::ReadPreference::Primary,
        ))
        .await
        .map_err(|e| format!("configureFailPoint failed: {e}"))?;
    st.failpoints.push(fp_name);
    Ok(())
}

/// Whether the driver holds session `sid` pinned to a mongos. The driver keeps the pin
/// `pub(crate)` (`Transaction::pinned`, mongodb 3.9 `client/session.rs`), but its derived
/// `Debug` prints it: `pinned: None` or `pinned: Some(Mongos(…))`. A `Debug` without the
/// field (another driver version) is an error, never a guess.
fn driver_pin(session: &ClientSession) -> Result<bool, String> {
    let text = format!("{session:?}");
    if text.contains("pinned: None") {
        Ok(false)
    } else if text.contains("pinned: Some(") {
        Ok(true)
    } else {
        Err("the driver's session Debug output no longer shows its mongos pin".into())
    }
}

/// `assertSessionPinned` / `assertSessionUnpinned` on a sharded cluster: the driver's own
/// pin state of the session ([`driver_pin`]).
async fn expect_pin(st: &mut TestState, args: &Document, pinned: bool) -> Result<(), String> {
    let sid = args.get_str("session").map_err(|_| "session missing")?;
    let entity = st.ents.session(sid)?;
    let guard = entity.lock().await;
    let session = guard.session.as_ref().ok_or("the session has ended")?;
    match driver_pin(session)? {
        got if got == pinned => Ok(()),
        true => {
            Err("assertSessionUnpinned: the driver holds the session pinned to a mongos".into())
        }
        false => Err("assertSessionPinned: the driver holds the session unpinned".into()),
    }
}

/// `assertSessionPinned` on a sharded cluster, judged on the wire (the driver keeps its pin
/// private): every command of the session's current transaction so far went to one mongos,
/// and (checked by [`check_pinned`] when the test ends) so do the ones after the assertion
/// up to the transaction's commit or abort.
async fn assert_pinned(st: &mut TestState, args: &Document) -> Result<(), String> {
    let sid = args.get_str("session").map_err(|_| "session missing")?;
    let lsid = st.ents.lsids.get(sid).cloned().ok_or("unknown session")?;
    let cid = st.ents.session(sid)?.lock().await.client.clone();
    let entity = st.ents.client(&cid)?;
    let events = entity.events.lock().map_err(|_| "events poisoned")?;
    let mut addresses: Vec<&str> = Vec::new();
    for e in events.iter() {
        if let entities::Ev::Started {
            command, address, ..
        } = e
        {
            if command.get_document("lsid").ok() != Some(&lsid) {
                continue;
            }
            if command.get_bool("startTransaction") == Ok(true) {
                addresses.clear();
            }
            addresses.push(address);
        }
    }
    let Some(first) = addresses.first().map(|a| a.to_string()) else {
        return Err("assertSessionPinned: the session sent no transaction command".into());
    };
    if let Some(other) = addresses.iter().find(|a| **a != first) {
        return Err(format!(
            "assertSessionPinned: the transaction's commands went to {first} and {other}"
        ));
    }
    let from = events.len();
    drop(events);
    st.pinned.push((cid, lsid, first, from));
    Ok(())
}

/// The deferred half of [`assert_pinned`]: the session's transaction commands after the
/// assertion, up to its commit or abort.
pub fn check_pinned(st: &TestState) -> Result<(), String> {
    for (cid, lsid, pinned, from) in &st.pinned {
        let entity = st.ents.client(cid)?;
        let events = entity.events.lock().map_err(|_| "events poisoned")?;
        for e in events.iter().skip(*from) {
            let entities::Ev::Started {
                name,
                command,
                address,
                ..
            } = e
            else {
                continue;
            };
            if command.get_document("lsid").ok() != Some(lsid) {
                continue;
            }
            // A new transaction, or a command outside transactions (no `autocommit:
            // false`), which the driver sends unpinned.
            if command.get_bool("startTransaction") == Ok(true)
                || command.get_bool("autocommit") != Ok(false)
            {
                break;
            }
            if address != pinned {
                return Err(format!(
                    "assertSessionPinned: `{name}` of the pinned transaction went to {address}, not {pinned}"
                ));
            }
            if matches!(name.as_str(), "commitTransaction" | "abortTransaction") {
                break;
            }
        }
    }
    Ok(())
}

/// On a sharded cluster, a direct client to the mongos the last command of session `sid`
/// went to.
fn pinned_router(
    st: &TestState,
    entity: &entities::ClientEntity,
    sid: &str,
) -> Option<mongodb::Client> {
    let lsid = st.ents.lsids.get(sid)?;
    let events = entity.events.lock().ok()?;
    let address = events.iter().rev().find_map(|e| match e {
        entities::Ev::Started {
            command, address, ..
        } if command.get_document("lsid").ok() == Some(lsid) => Some(address.clone()),
        _ => None,
    })?;
    st.routers
        .iter()
        .find(|(host, _)| *host == address)
        .map(|(_, c)| c.clone())
}

/// `assertCollectionExists` / `assertCollectionNotExists`.
async fn assert_collection_exists(
    st: &TestState,
    name: &str,
    args: &Document,
) -> Result<(), String> {
    let db = args
        .get_str("databaseName")
        .map_err(|_| "databaseName missing")?;
    let coll = args
        .get_str("collectionName")
        .map_err(|_| "collectionName missing")?;
    let names = st
        .internal
        .database(db)
        .list_collection_names()
        .await
        .map_err(|e| format!("listCollections: {e}"))?;
    let exists = names.iter().any(|n| n == coll);
    if exists == (name == "assertCollectionExists") {
        Ok(())
    } else {
        Err(format!("{name}: {db}.{coll} exists = {exists}"))
    }
}

/// `assertIndexExists` / `assertIndexNotExists` (a missing collection has no index).
async fn assert_index_exists(st: &TestState, name: &str, args: &Document) -> Result<(), String> {
    let db = args
        .get_str("databaseName")
        .map_err(|_| "databaseName missing")?;
    let coll = args
        .get_str("collectionName")
        .map_err(|_| "collectionName missing")?;
    let idx = args.get_str("indexName").map_err(|_| "indexName missing")?;
    let names = st
        .internal
        .database(db)
        .collection::<Document>(coll)
        .list_index_names()
        .await;
    let exists = match names {
        Ok(n) => n.iter().any(|n| n == idx),
        Err(e)
            if e.to_string().contains("NamespaceNotFound")
                || e.to_string().contains("ns does not exist") =>
        {
            false
        }
        Err(e) => return Err(format!("listIndexes: {e}")),
    };
    if exists == (name == "assertIndexExists") {
        Ok(())
    } else {
        Err(format!(
            "{name}: index {idx} on {db}.{coll} exists = {exists}"
        ))
    }
}

/// `assertSameLsidOnLastTwoCommands` / `assertDifferentLsidOnLastTwoCommands`.
fn assert_lsids_of_last_two(st: &TestState, name: &str, args: &Document) -> Result<(), String> {
    let c = st
        .ents
        .client(args.get_str("client").map_err(|_| "client missing")?)?;
    let cmds = c.started_commands();
    if cmds.len() < 2 {
        return Err(format!("{name}: fewer than two commands observed"));
    }
    let a = cmds[cmds.len() - 2].get_document("lsid").ok().cloned();
    let b = cmds[cmds.len() - 1].get_document("lsid").ok().cloned();
    let same = a.is_some() && a == b;
    if same == (name == "assertSameLsidOnLastTwoCommands") {
        Ok(())
    } else {
        Err(format!("{name}: {a:?} vs {b:?}"))
    }
}

/// A new `_id` for documents a driver would give one.
pub fn ensure_id(d: &mut Document) -> Bson {
    if let Some(id) = d.get("_id") {
        return id.clone();
    }
    let id = Bson::ObjectId(ObjectId::new());
    let mut nd = doc! { "_id": id.clone() };
    nd.extend(std::mem::take(d));
    *d = nd;
    id
}

pub fn wc_of(c: &Collection<Document>) -> Option<Document> {
    c.write_concern().map(wc_doc).filter(|d| !d.is_empty())
}
