//! Catalog commands: `create`, `drop`, `dropDatabase`, `renameCollection`,
//! `createIndexes`, `dropIndexes`, `listIndexes`, `listCollections`, `listDatabases`,
//! `collMod`, `collStats` (reference §4.8, §7.1–7.4).

use super::args::{cursor_batch_size, missing_field, opt_bool, opt_doc, req_array};
use super::reply::{open_cursor, raw_reply};
use super::{Ctx, Request};
use crate::engine::catalog::{id_index_spec, Collection, NsKind};
use crate::engine::cursor::VecCursor;
use crate::engine::{names, Engine};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::query::matcher::Matcher;
use crate::ServerVersion;
use bson::{doc, Bson, DateTime, Document, RawDocumentBuf};

fn encode(d: &Document) -> CmdResult<RawDocumentBuf> {
    RawDocumentBuf::from_document(d)
        .map_err(|e| CommandError::from_code(ErrorCode::InternalError, e.to_string()))
}

/// Logs DDL ops and records the optime as the reply's `operationTime`.
fn log_ddl(ctx: &mut Ctx<'_>, engine: &mut Engine, ops: Vec<Document>) {
    let ts = engine.log(ops.into_iter().map(Into::into).collect(), None);
    ctx.operation_time = Some(ts.unwrap_or_else(|| engine.last_applied()));
}

fn require_admin(req: &Request) -> CmdResult<()> {
    if req.db == "admin" {
        Ok(())
    } else {
        Err(CommandError::from_code(
            ErrorCode::Unauthorized,
            format!("{} may only be run against the admin database.", req.name),
        ))
    }
}

fn ns_exists_error(version: ServerVersion, ns: &str) -> CommandError {
    match version {
        ServerVersion::V4_4 => CommandError::from_code(
            ErrorCode::NamespaceExists,
            format!("Collection already exists. NS: {ns}"),
        ),
        _ => CommandError::from_code(
            ErrorCode::NamespaceExists,
            format!("Collection {ns} already exists."),
        ),
    }
}

// ---------------------------------------------------------------- create / drop

/// `create` (collections, capped collections, views).
pub(crate) async fn create(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    names::check_create_ns(db, coll)?;
    if db == "local" && coll == "oplog.rs" && ctx.shared.is_repl_set() {
        return Err(ns_exists_error(ctx.shared.opts.version, "local.oplog.rs"));
    }
    let options = create_options(&req.body)?;
    // SIMFIX (validation.rs): validator / validationLevel / validationAction checked at create
    crate::engine::validation::check_options(&options, "create")?;
    let view_on = match options.get("viewOn") {
        None => None,
        Some(Bson::String(s)) => Some(s.clone()),
        Some(other) => return Err(super::wrong_type("create.viewOn", other, "string")),
    };
    let pipeline = match options.get("pipeline") {
        None => None,
        Some(Bson::Array(a)) => Some(a.clone()),
        Some(other) => return Err(super::wrong_type("create.pipeline", other, "array")),
    };
    let capped = opt_bool(&options, "create", "capped")?.unwrap_or(false);
    if capped {
        check_capped_size(&options)?;
    }
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    let ns = format!("{db}.{coll}");
    if !matches!(engine.catalog.kind(db, coll), NsKind::Missing) {
        return Err(ns_exists_error(engine.version, &ns));
    }
    let ops = if let Some(view_on) = view_on {
        if capped {
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                "Cannot specify both 'viewOn' and 'capped'",
            ));
        }
        let pipeline = pipeline.unwrap_or_default();
        create_view(engine, (db, coll), &view_on, pipeline, &options)?
    } else {
        if pipeline.is_some() {
            return Err(CommandError::bad_value(
                "'pipeline' requires 'viewOn' to also be specified",
            ));
        }
        engine.catalog.create_collection(db, coll, &options)?
    };
    log_ddl(ctx, engine, ops);
    Ok(Document::new())
}

/// Generic command arguments `create` ignores.
const CREATE_GENERIC_ARGS: &[&str] = &[
    "create",
    "$db",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "$clusterTime",
    "$readPreference",
    "writeConcern",
    "readConcern",
    "comment",
    "maxTimeMS",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
];

/// The collection / view options `create` accepts.
const CREATE_OPTIONS: &[&str] = &[
    "capped",
    "autoIndexId",
    "size",
    "max",
    "viewOn",
    "pipeline",
    "collation",
    "validator",
    "validationLevel",
    "validationAction",
    "storageEngine",
    "indexOptionDefaults",
    "changeStreamPreAndPostImages",
    "timeseries",
    "expireAfterSeconds",
    "clusteredIndex",
    "recordPreImages",
    "flags",
    "temp",
    "idIndex",
    "encryptedFields",
];

/// The options of a `create` command: every field but the generic arguments; an unknown
/// one fails.
fn create_options(body: &Document) -> CmdResult<Document> {
    let mut options = Document::new();
    for (k, v) in body {
        if CREATE_GENERIC_ARGS.contains(&k.as_str()) {
            continue;
        }
        if !CREATE_OPTIONS.contains(&k.as_str()) {
            return Err(CommandError::unknown_field(k, "create"));
        }
        options.insert(k.clone(), v.clone());
    }
    Ok(options)
}

/// The `size` a capped collection requires: a number from 0 to 1 PB.
fn check_capped_size(options: &Document) -> CmdResult<()> {
    let Some(v) = options.get("size") else {
        // SRV collection_options.cpp
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "the 'size' field is required when 'capped' is true",
        ));
    };
    let n = crate::query::compare::as_f64(v)
        .ok_or_else(|| super::wrong_type("create.size", v, "long"))?;
    if n < 0.0 {
        return Err(CommandError::bad_value("size has to be >= 0"));
    }
    if n > 1024f64.powi(5) {
        return Err(CommandError::bad_value("size cannot exceed 1 PB"));
    }
    Ok(())
}

/// Creates view `db.coll` on `view_on` with `pipeline` (stages must be documents).
fn create_view(
    engine: &mut Engine,
    (db, coll): (&str, &str),
    view_on: &str,
    pipeline: Vec<Bson>,
    options: &Document,
) -> CmdResult<Vec<Document>> {
    names::check_coll(db, view_on)?;
    for st in &pipeline {
        if !matches!(st, Bson::Document(_)) {
            return Err(CommandError::from_code(
                ErrorCode::TypeMismatch,
                "Each element of the 'pipeline' array must be an object",
            ));
        }
    }
    let collation = options.get_document("collation").ok().cloned();
    engine
        .catalog
        .create_view(db, coll, view_on, pipeline, collation)
}

/// `drop`.
pub(crate) async fn drop(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let ns = format!("{db}.{coll}");
    if db == "local" && coll == "oplog.rs" && ctx.shared.is_repl_set() {
        // SRV drop_collection.cpp
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "can't drop live oplog while replicating",
        ));
    }
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    let n_indexes = engine
        .catalog
        .coll(db, coll)
        .map(|c| c.indexes.len() as i32);
    match engine.catalog.drop_ns(db, coll)? {
        Some(ops) => {
            engine.cursors.kill_where(|c| c == ns);
            log_ddl(ctx, engine, ops);
            let mut reply = Document::new();
            if let Some(n) = n_indexes {
                reply.insert("nIndexesWas", n);
            }
            reply.insert("ns", ns);
            Ok(reply)
        }
        None => match engine.version {
            // 4.4: NamespaceNotFound; 7.0 treats a missing collection as already dropped
            ServerVersion::V4_4 => Err(CommandError::namespace_not_found("ns not found")),
            _ => Ok(Document::new()),
        },
    }
}

/// `dropDatabase`: `{dropped: <db>}` when it existed.
pub(crate) async fn drop_database(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    if db == "local" && ctx.shared.is_repl_set() {
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "Cannot drop 'local' database while replication is active",
        ));
    }
    if db == "admin" || db == "config" {
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            format!("Dropping the '{db}' database is prohibited."),
        ));
    }
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    match engine.catalog.drop_database(db)? {
        Some(ops) => {
            let prefix = format!("{db}.");
            engine.cursors.kill_where(|c| c.starts_with(&prefix));
            log_ddl(ctx, engine, ops);
            Ok(doc! {"dropped": db})
        }
        None => Ok(Document::new()),
    }
}

fn split_ns<'a>(v: Option<&'a Bson>, field: &str) -> CmdResult<(&'a str, &'a str)> {
    match v {
        Some(Bson::String(s)) => match s.split_once('.') {
            Some((d, c)) => {
                names::check_coll(d, c)?;
                Ok((d, c))
            }
            None => Err(CommandError::invalid_namespace(format!(
                "Invalid {field} namespace: {s}"
            ))),
        },
        Some(other) => Err(super::wrong_type(
            &format!("renameCollection.{field}"),
            other,
            "string",
        )),
        None => Err(missing_field("renameCollection", field)),
    }
}

/// `renameCollection` (admin), with `dropTarget`.
pub(crate) async fn rename_collection(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let from = split_ns(req.target(), "source")?;
    let to = split_ns(req.body.get("to"), "target")?;
    let drop_target = match req.body.get("dropTarget") {
        Some(Bson::Boolean(b)) => *b,
        Some(Bson::Binary(_)) => true,
        _ => false,
    };
    names::check_create_ns(to.0, to.1)?;
    if from == to {
        // SRV rename_collection.cpp
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "Can't rename a collection to itself",
        ));
    }
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    let (fns, tns) = (
        format!("{}.{}", from.0, from.1),
        format!("{}.{}", to.0, to.1),
    );
    match engine.catalog.kind(from.0, from.1) {
        NsKind::Missing => {
            return Err(CommandError::namespace_not_found(format!(
                "Source collection {fns} does not exist"
            )))
        }
        NsKind::View(_) => {
            return Err(CommandError::from_code(
                ErrorCode::CommandNotSupportedOnView,
                format!("cannot rename view: {fns}"),
            ))
        }
        NsKind::Collection(_) => {}
    }
    if !matches!(engine.catalog.kind(to.0, to.1), NsKind::Missing) && !drop_target {
        return Err(CommandError::from_code(
            ErrorCode::NamespaceExists,
            "target namespace exists",
        ));
    }
    let ops = engine.catalog.rename(from, to, drop_target)?;
    engine.cursors.kill_where(|c| c == fns || c == tns);
    log_ddl(ctx, engine, ops);
    Ok(Document::new())
}

// ---------------------------------------------------------------- indexes

fn index_name(key: &Document) -> String {
    key.iter()
        .map(|(k, v)| {
            let v = match v {
                Bson::Int32(i) => i.to_string(),
                Bson::Int64(i) => i.to_string(),
                Bson::Double(d) if d.fract() == 0.0 => format!("{}", *d as i64),
                Bson::Double(d) => d.to_string(),
                Bson::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}_{v}")
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// `createIndexes` (reference §4.8: single-phase `createIndexes` entries on an empty
/// collection, `startIndexBuild`/`commitIndexBuild` otherwise).
pub(crate) async fn create_indexes(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let indexes = req_array(&req.body, "createIndexes", "indexes")?;
    if indexes.is_empty() {
        return Err(CommandError::bad_value(
            "Must specify at least one index to create",
        ));
    }
    let specs = indexes
        .iter()
        .map(index_spec)
        .collect::<CmdResult<Vec<_>>>()?;
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    if let NsKind::View(_) = engine.catalog.kind(db, coll) {
        return Err(CommandError::from_code(
            ErrorCode::CommandNotSupportedOnView,
            format!("Namespace {db}.{coll} is a view, not a collection"),
        ));
    }
    let created_automatically = engine.catalog.coll(db, coll).is_none();
    let mut ops = Vec::new();
    if created_automatically {
        names::check_write_ns(db, coll, engine.repl)?;
        ops.extend(engine.catalog.ensure_collection(db, coll)?);
    }
    let index_count = |engine: &Engine| {
        engine
            .catalog
            .coll(db, coll)
            .map(|c| c.indexes.len())
            .unwrap_or(0)
    };
    let before = index_count(engine);
    let res = engine.catalog.create_indexes(db, coll, specs);
    let new_ops = match res {
        Ok(o) => o,
        Err(e) => {
            log_ddl(ctx, engine, ops);
            return Err(e);
        }
    };
    ops.extend(new_ops);
    let after = index_count(engine);
    log_ddl(ctx, engine, ops);
    let mut reply = doc! {
        "numIndexesBefore": before as i32,
        "numIndexesAfter": after as i32,
        "createdCollectionAutomatically": created_automatically,
    };
    if before == after {
        reply.insert("note", "all indexes already exist");
    }
    Ok(reply)
}

/// One element of `createIndexes.indexes`, checked: `{key, name, …options}` (the name
/// derived from the key when missing; `v` and `ns` dropped).
fn index_spec(ix: &Bson) -> CmdResult<Document> {
    let Bson::Document(spec) = ix else {
        return Err(super::wrong_type("createIndexes.indexes", ix, "object"));
    };
    let key = match spec.get("key") {
        Some(Bson::Document(k)) if !k.is_empty() => k.clone(),
        Some(Bson::Document(_)) => {
            return Err(CommandError::from_code(ErrorCode::CannotCreateIndex, "Index keys cannot be empty."))
        }
        Some(other) => return Err(super::wrong_type("createIndexes.indexes.key", other, "object")),
        None => {
            return Err(CommandError::failed_to_parse(format!(
                "Error in specification {} :: caused by :: The 'key' field is a required property of an index specification",
                crate::query::fmt::doc(spec)
            )))
        }
    };
    check_key_pattern(&key, spec)?;
    let name = match spec.get("name") {
        Some(Bson::String(n)) => n.clone(),
        Some(other) => {
            return Err(super::wrong_type(
                "createIndexes.indexes.name",
                other,
                "string",
            ))
        }
        None => index_name(&key),
    };
    let mut full = doc! {"key": key, "name": name};
    for (k, v) in spec {
        if !matches!(k.as_str(), "key" | "name" | "v" | "ns") {
            full.insert(k.clone(), v.clone());
        }
    }
    Ok(full)
}

/// The values of an index key pattern: non-zero numbers or index type names (67).
fn check_key_pattern(key: &Document, spec: &Document) -> CmdResult<()> {
    for (_, v) in key {
        let ok = match v {
            Bson::String(s) => matches!(
                s.as_str(),
                "text" | "2d" | "2dsphere" | "hashed" | "geoHaystack" | "wildcard"
            ),
            other => {
                crate::query::compare::as_f64(other).is_some_and(|f| f != 0.0 && f.is_finite())
            }
        };
        if !ok {
            return Err(CommandError::from_code(
                ErrorCode::CannotCreateIndex,
                format!(
                    "Error in specification {} :: caused by :: Values in the index key pattern can contain only non-zero numbers or the field names of index types",
                    crate::query::fmt::doc(spec)
                ),
            ));
        }
    }
    Ok(())
}

/// `dropIndexes`: by name, list of names, key pattern, or `"*"`.
pub(crate) async fn drop_indexes(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let index = req
        .body
        .get("index")
        .cloned()
        .ok_or_else(|| missing_field("dropIndexes", "index"))?;
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    let ns = format!("{db}.{coll}");
    let Some(c) = engine.catalog.coll(db, coll) else {
        return Err(CommandError::namespace_not_found(format!(
            "ns not found {ns}"
        )));
    };
    let was = c.indexes.len() as i32;
    let names_to_drop: Vec<String> = match &index {
        Bson::String(s) if s == "*" => c
            .indexes
            .iter()
            .map(|i| i.name().to_string())
            .filter(|n| n != "_id_")
            .collect(),
        Bson::String(s) => vec![s.clone()],
        Bson::Array(a) => a
            .iter()
            .filter_map(|b| b.as_str().map(String::from))
            .collect(),
        Bson::Document(key) => match c.indexes.iter().find(|i| &i.key_pattern() == key) {
            Some(i) => vec![i.name().to_string()],
            None => {
                return Err(CommandError::from_code(
                    ErrorCode::IndexNotFound,
                    format!("can't find index with key: {}", crate::query::fmt::doc(key)),
                ))
            }
        },
        other => return Err(super::wrong_type("dropIndexes.index", other, "string")),
    };
    for n in &names_to_drop {
        if n == "_id_" {
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                "cannot drop _id index",
            ));
        }
        if c.index(n).is_none() {
            return Err(CommandError::from_code(
                ErrorCode::IndexNotFound,
                format!("index not found with name [{n}]"),
            ));
        }
    }
    let ops = engine.catalog.drop_indexes(db, coll, &names_to_drop)?;
    log_ddl(ctx, engine, ops);
    Ok(doc! {"nIndexesWas": was})
}

/// `listIndexes` (reference §7.2).
pub(crate) async fn list_indexes(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let batch_size = cursor_batch_size(&req.body, "listIndexes")?;
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    ctx.operation_time = Some(engine.last_applied());
    let docs: Vec<Document> = match engine.catalog.kind(db, coll) {
        NsKind::Collection(c) => c.indexes.iter().map(|i| i.spec.clone()).collect(),
        NsKind::View(_) => {
            return Err(CommandError::from_code(
                ErrorCode::CommandNotSupportedOnView,
                format!("Namespace {db}.{coll} is a view, not a collection"),
            ))
        }
        NsKind::Missing if db == "local" && coll == "oplog.rs" && engine.oplog.is_some() => {
            Vec::new()
        }
        NsKind::Missing => {
            return Err(CommandError::namespace_not_found(format!(
                "ns does not exist: {db}.{coll}"
            )))
        }
    };
    let raws = docs.iter().map(encode).collect::<CmdResult<Vec<_>>>()?;
    raw_reply(
        ctx,
        open_cursor(
            ctx,
            engine,
            format!("{db}.$cmd.listIndexes.{coll}"),
            Box::new(VecCursor::new(raws)),
            batch_size,
            false,
            false,
        )?,
    )
}

// ---------------------------------------------------------------- listCollections / listDatabases

fn collection_info(name: &str, c: &Collection) -> Document {
    let mut d = doc! {
        "name": name,
        "type": "collection",
        "options": c.options.clone(),
        "info": {"readOnly": false, "uuid": c.uuid},
    };
    if c.index("_id_").is_some() {
        d.insert("idIndex", id_index_spec());
    }
    d
}

/// `listCollections` (reference §7.1): collections and views, `filter`, `nameOnly`.
pub(crate) async fn list_collections(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let filter = opt_doc(&req.body, "listCollections", "filter")?
        .cloned()
        .unwrap_or_default();
    let name_only = opt_bool(&req.body, "listCollections", "nameOnly")?.unwrap_or(false);
    let batch_size = cursor_batch_size(&req.body, "listCollections")?;
    let m = Matcher::parse(&filter)?;
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    ctx.operation_time = Some(engine.last_applied());
    let mut all: Vec<Document> = Vec::new();
    if db == "local" && engine.oplog.is_some() {
        all.push(doc! {
            "name": "oplog.rs",
            "type": "collection",
            "options": engine.oplog_options(),
            "info": {"readOnly": false, "uuid": engine.oplog_uuid},
        });
    }
    if let Some(d) = engine.catalog.dbs.get(db) {
        for (name, c) in &d.colls {
            all.push(collection_info(name, c));
        }
    }
    for (name, v) in engine.catalog.views(db) {
        let mut options = doc! {"viewOn": v.view_on, "pipeline": v.pipeline};
        if let Some(c) = v.collation {
            options.insert("collation", c);
        }
        all.push(
            doc! {"name": name, "type": "view", "options": options, "info": {"readOnly": true}},
        );
    }
    all.sort_by(|a, b| {
        a.get_str("name")
            .unwrap_or("")
            .cmp(b.get_str("name").unwrap_or(""))
    });
    let mut raws = Vec::new();
    for d in all.into_iter().filter(|d| m.matches(d)) {
        let d = if name_only {
            doc! {"name": d.get("name").cloned().unwrap_or(Bson::Null), "type": d.get("type").cloned().unwrap_or(Bson::Null)}
        } else {
            d
        };
        raws.push(encode(&d)?);
    }
    raw_reply(
        ctx,
        open_cursor(
            ctx,
            engine,
            format!("{db}.$cmd.listCollections"),
            Box::new(VecCursor::new(raws)),
            batch_size,
            false,
            false,
        )?,
    )
}

fn round4k(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

/// Simulated on-disk size of a collection: a file per collection and per index.
fn coll_disk_size(c: &Collection) -> u64 {
    4096 + round4k(c.data_size()) + 4096 * c.indexes.len() as u64
}

/// `listDatabases` (admin, reference §7.3).
pub(crate) async fn list_databases(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let filter = opt_doc(&req.body, "listDatabases", "filter")?
        .cloned()
        .unwrap_or_default();
    let name_only = opt_bool(&req.body, "listDatabases", "nameOnly")?.unwrap_or(false);
    let m = Matcher::parse(&filter)?;
    let shared = ctx.shared.clone();
    let engine = shared.engine.lock();
    let mut dbs: Vec<(String, u64, bool)> = Vec::new();
    for (name, d) in &engine.catalog.dbs {
        let size: u64 = d.colls.values().map(coll_disk_size).sum();
        let empty = d.colls.values().all(|c| c.count() == 0);
        dbs.push((name.clone(), size, empty));
    }
    // Databases every mongod has (SIMFIX): `admin` (system.version, plus system.keys on a
    // replica set), `config` (system.sessions, transactions, image_collection) and `local`
    // (startup_log, plus oplog.rs and the replset.* collections on a replica set). A fresh
    // 7.0 single-node set lists exactly these three; sizes are those of nearly empty
    // WiredTiger files (4 KiB per collection / index file).
    let local_size = 4096 * 2
        + engine
            .oplog
            .as_ref()
            .map_or(0, |o| 4096 + round4k(o.bytes()));
    for (name, size) in [
        ("admin", 4096 * 10),
        ("config", 4096 * 3),
        ("local", local_size),
    ] {
        match dbs.iter_mut().find(|d| d.0 == name) {
            Some(d) => {
                d.1 += size;
                d.2 = false;
            }
            None => dbs.push((name.to_string(), size, false)),
        }
    }
    dbs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    let mut total = 0u64;
    for (name, size, empty) in dbs {
        let full = doc! {"name": name.clone(), "sizeOnDisk": size as i64, "empty": empty};
        if !m.matches(&full) {
            continue;
        }
        total += size;
        out.push(Bson::Document(if name_only {
            doc! {"name": name}
        } else {
            full
        }));
    }
    let mut reply = doc! {"databases": out};
    if !name_only {
        reply.insert("totalSize", total as i64);
        reply.insert("totalSizeMb", (total / (1024 * 1024)) as i64);
    }
    Ok(reply)
}

// ---------------------------------------------------------------- collMod / stats

/// `collMod`: stores option changes (e.g. `changeStreamPreAndPostImages`).
pub(crate) async fn coll_mod(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let generic = [
        "collMod",
        "$db",
        "lsid",
        "txnNumber",
        "$clusterTime",
        "$readPreference",
        "writeConcern",
        "comment",
        "maxTimeMS",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
    ];
    let mut changes = Document::new();
    for (k, v) in &req.body {
        if generic.contains(&k.as_str()) {
            continue;
        }
        match k.as_str() {
            "changeStreamPreAndPostImages" => {
                let ok = matches!(v, Bson::Document(d) if matches!(d.get("enabled"), Some(Bson::Boolean(_))));
                if !ok {
                    return Err(super::wrong_type(
                        "collMod.changeStreamPreAndPostImages",
                        v,
                        "object",
                    ));
                }
                changes.insert(k.clone(), v.clone());
            }
            "validator" | "validationLevel" | "validationAction" | "expireAfterSeconds"
            | "recordPreImages" | "viewOn" | "pipeline" | "index" | "cappedSize" | "cappedMax" => {
                changes.insert(k.clone(), v.clone());
            }
            other => return Err(CommandError::unknown_field(other, "collMod")),
        }
    }
    // SIMFIX (validation.rs): validator / validationLevel / validationAction checked at collMod
    crate::engine::validation::check_options(&changes, "collMod")?;
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    if let NsKind::View(_) = engine.catalog.kind(db, coll) {
        return Err(CommandError::from_code(
            ErrorCode::CommandNotSupportedOnView,
            format!("Namespace {db}.{coll} is a view, not a collection"),
        ));
    }
    let ops = engine.catalog.coll_mod(db, coll, &changes)?;
    log_ddl(ctx, engine, ops);
    Ok(Document::new())
}

/// Storage statistics of a collection (reference §7.4).
fn storage_stats(ns: &str, c: Option<&Collection>, scale: i64) -> Document {
    let scale = scale.max(1);
    let (count, size, nindexes, capped) = match c {
        Some(c) => (
            c.count() as i64,
            c.data_size() as i64,
            c.indexes.len() as i64,
            c.capped,
        ),
        None => (0, 0, 0, None),
    };
    let storage = c.map(|c| 4096 + round4k(c.data_size()) as i64).unwrap_or(0);
    let index_size = 4096 * nindexes;
    let mut d = doc! {"ns": ns, "size": size / scale, "count": count};
    if count > 0 {
        d.insert("avgObjSize", size / count);
    }
    d.insert("numOrphanDocs", 0);
    d.insert("storageSize", storage / scale);
    d.insert("freeStorageSize", 0);
    d.insert("capped", capped.is_some());
    if let Some(cap) = capped {
        if let Some(m) = cap.max {
            d.insert("max", m);
        }
        d.insert("maxSize", cap.size / scale);
    }
    d.insert("nindexes", nindexes as i32);
    let mut sizes = Document::new();
    if let Some(c) = c {
        for ix in &c.indexes {
            sizes.insert(ix.name(), 4096 / scale);
        }
    }
    d.insert("indexBuilds", Vec::<Bson>::new());
    d.insert("totalIndexSize", index_size / scale);
    d.insert("totalSize", (storage + index_size) / scale);
    d.insert("indexSizes", sizes);
    d.insert("scaleFactor", scale as i32);
    d
}

/// `collStats` (deprecated since 6.2 but served): zeroed stats for a missing collection.
pub(crate) async fn coll_stats(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let scale = super::args::opt_i64(&req.body, "collStats", "scale")?.unwrap_or(1);
    if scale < 1 {
        return Err(CommandError::bad_value("scale has to be >= 1"));
    }
    let shared = ctx.shared.clone();
    let engine = shared.engine.lock();
    let ns = format!("{db}.{coll}");
    if db == "local" && coll == "oplog.rs" {
        if let Some(o) = &engine.oplog {
            return Ok(doc! {
                "ns": ns, "size": o.bytes() as i64 / scale, "count": o.len() as i64,
                "avgObjSize": (o.bytes() / o.len().max(1) as u64) as i64,
                "storageSize": round4k(o.bytes()) as i64 / scale, "capped": true,
                "maxSize": o.cap_bytes() as i64 / scale, "nindexes": 0,
                "totalIndexSize": 0, "indexSizes": {}, "scaleFactor": scale as i32,
            });
        }
    }
    if let NsKind::View(_) = engine.catalog.kind(db, coll) {
        return Err(CommandError::from_code(
            ErrorCode::CommandNotSupportedOnView,
            format!("Namespace {ns} is a view, not a collection"),
        ));
    }
    Ok(storage_stats(&ns, engine.catalog.coll(db, coll), scale))
}

/// The document a `$collStats` first stage produces (reference §7.4).
pub(crate) fn coll_stats_stage(
    engine: &Engine,
    db: &str,
    coll: &str,
    spec: &Document,
    host: &str,
) -> CmdResult<Document> {
    let ns = format!("{db}.{coll}");
    let c = engine.catalog.coll(db, coll);
    let mut out = doc! {"ns": ns.clone(), "host": host, "localTime": DateTime::now()};
    for (k, v) in spec {
        match k.as_str() {
            "latencyStats" => {
                out.insert(
                    "latencyStats",
                    doc! {
                        "reads": {"latency": 0i64, "ops": 0i64},
                        "writes": {"latency": 0i64, "ops": 0i64},
                        "commands": {"latency": 0i64, "ops": 0i64},
                        "transactions": {"latency": 0i64, "ops": 0i64},
                    },
                );
            }
            "storageStats" => {
                let Some(c) = c else {
                    return Err(CommandError::namespace_not_found(format!(
                        "Unable to retrieve storageStats in $collStats stage :: caused by :: Collection [{ns}] not found."
                    )));
                };
                let scale = match v {
                    Bson::Document(d) => d
                        .get("scale")
                        .and_then(crate::query::compare::as_f64)
                        .unwrap_or(1.0) as i64,
                    _ => 1,
                };
                let mut s = storage_stats(&ns, Some(c), scale);
                s.remove("ns");
                out.insert("storageStats", s);
            }
            "count" => {
                let Some(c) = c else {
                    return Err(CommandError::namespace_not_found(format!(
                        "Unable to retrieve count in $collStats stage :: caused by :: Collection [{ns}] not found."
                    )));
                };
                out.insert("count", c.count() as i64);
            }
            "queryExecStats" => {
                if c.is_none() {
                    return Err(CommandError::namespace_not_found(format!(
                        "Unable to retrieve queryExecStats in $collStats stage :: caused by :: Collection [{ns}] not found."
                    )));
                }
                out.insert(
                    "queryExecStats",
                    doc! {"collectionScans": {"total": 0i64, "nonTailable": 0i64}},
                );
            }
            other => {
                return Err(CommandError::from_code(
                    ErrorCode::IdlUnknownField,
                    format!("BSON field '$collStats.{other}' is an unknown field."),
                ))
            }
        }
    }
    Ok(out)
}

/// `dbStats` (reference §7.4: `avgObjSize: 0` for an empty database).
pub(crate) async fn db_stats(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let scale = super::args::opt_i64(&req.body, "dbStats", "scale")?.unwrap_or(1);
    if scale < 1 {
        return Err(CommandError::bad_value(
            "Scale factor must be greater than zero",
        ));
    }
    let shared = ctx.shared.clone();
    let engine = shared.engine.lock();
    let views = engine.catalog.views(db).len() as i64;
    let (mut colls, mut objects, mut data, mut storage, mut indexes) =
        (0i64, 0i64, 0u64, 0u64, 0i64);
    if let Some(d) = engine.catalog.dbs.get(db) {
        for c in d.colls.values() {
            colls += 1;
            objects += c.count() as i64;
            data += c.data_size();
            storage += 4096 + round4k(c.data_size());
            indexes += c.indexes.len() as i64;
        }
    }
    if db == "local" {
        if let Some(o) = &engine.oplog {
            colls += 1;
            objects += o.len() as i64;
            data += o.bytes();
            storage += round4k(o.bytes());
        }
    }
    let index_size = 4096.0 * indexes as f64;
    let s = scale as f64;
    let avg = if objects > 0 {
        data as f64 / objects as f64
    } else {
        0.0
    };
    Ok(doc! {
        "db": db,
        "collections": colls,
        "views": views,
        "objects": objects,
        "avgObjSize": avg,
        "dataSize": data as f64 / s,
        "storageSize": storage as f64 / s,
        "indexes": indexes,
        "indexSize": index_size / s,
        "totalSize": (storage as f64 + index_size) / s,
        "scaleFactor": scale,
        "fsUsedSize": 0.0,
        "fsTotalSize": 0.0,
    })
}
