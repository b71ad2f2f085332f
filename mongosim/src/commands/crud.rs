//! Write and simple read commands: `insert`, `update`, `delete`, `findAndModify`, `count`,
//! `distinct` (reference §7.5, §8.2, §8.5, §8.7).
//!
//! Every write runs against a [`Catalog`] and yields oplog operations; the handler then
//! logs them through [`Engine::log`] (contract §4). The `apply_*` functions are usable on
//! a transaction's catalog snapshot as well.

use super::args::{
    collation_of, matcher_for, missing_field, opt_bool, opt_doc, opt_i64, reject_let_on_44,
    req_array,
};
use super::reply::append_repl_fields;
use super::{Ctx, Request};
use crate::engine::catalog::NsKind;
use crate::engine::docs::{fix_document_for_insert, matching_rids_with, source_docs};
use crate::engine::names;
use crate::engine::{Engine, PendingOp, RetryCtx};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::query::matcher::Matcher;
use bson::{doc, Bson, Document, Timestamp};

/// The retryable-write context: `lsid` + `txnNumber` outside a transaction.
pub(crate) fn retry_ctx(ctx: &Ctx<'_>) -> Option<RetryCtx> {
    if ctx.autocommit.is_some() {
        return None;
    }
    Some(RetryCtx {
        lsid: ctx.lsid.clone()?,
        txn_number: ctx.txn_number?,
    })
}

/// `txnNumber` on a standalone: 20 IllegalOperation (reference §6).
pub(crate) fn check_txn_allowed(ctx: &Ctx<'_>) -> CmdResult<()> {
    if ctx.txn_number.is_some() && !ctx.shared.is_repl_set() {
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "Transaction numbers are only allowed on a replica set member or mongos",
        ));
    }
    Ok(())
}

/// 166 CommandNotSupportedOnView for writes on a view.
pub(crate) fn view_write_error(db: &str, coll: &str) -> CommandError {
    CommandError::from_code(
        ErrorCode::CommandNotSupportedOnView,
        format!("Namespace {db}.{coll} is a view, not a collection"),
    )
}

// ---------------------------------------------------------------- insert

/// The statement id of statement `i`: `stmtIds[i]` when a router split the client's batch
/// and kept its numbering (SRV `write_ops.idl` `stmtIds`), else `i`.
fn stmt_id_of(body: &Document, i: usize) -> i32 {
    match body.get("stmtIds") {
        Some(Bson::Array(ids)) => ids.get(i).and_then(Bson::as_i32).unwrap_or(i as i32),
        _ => i as i32,
    }
}

/// `insert` (reference §8.2): `{n, writeErrors?}` inside `ok: 1`.
pub(crate) async fn insert(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    check_txn_allowed(ctx)?;
    let docs = req_array(&req.body, "insert", "documents")?;
    let ordered = opt_bool(&req.body, "insert", "ordered")?.unwrap_or(true);
    names::check_write_ns(db, coll, ctx.shared.is_repl_set())?;
    let retry = retry_ctx(ctx);
    let mut stmt_ids: Vec<i32> = Vec::new();
    if let Some(Bson::Array(ids)) = req.body.get("stmtIds") {
        stmt_ids = ids.iter().filter_map(|b| b.as_i32()).collect();
    }

    let mut n = 0i32;
    let mut write_errors = Vec::new();
    let mut pending: Vec<PendingOp> = Vec::new();
    let mut last_ts = None;
    {
        let shared = ctx.shared.clone();
        let mut guard = shared.engine.lock();
        let engine = &mut *guard;
        if let NsKind::View(_) = engine.catalog.kind(db, coll) {
            return Err(view_write_error(db, coll));
        }
        for (i, d) in docs.iter().enumerate() {
            let stmt = stmt_ids.get(i).copied().unwrap_or(i as i32);
            if let Some(r) = &retry {
                if let Some(ts) = engine.retry_executed(r, stmt)? {
                    n += 1;
                    last_ts = Some(ts);
                    continue;
                }
            }
            let result = match d {
                Bson::Document(d) => fix_document_for_insert(engine, d).and_then(|d| {
                    let mut ops = engine.catalog.ensure_collection(db, coll)?;
                    if !crate::engine::validation::bypass(&req.body) {
                        crate::engine::validation::check(engine, db, coll, &d, None)?;
                    }
                    let (_, op) = engine.catalog.insert_doc(db, coll, d)?;
                    ops.push(op);
                    Ok(ops)
                }),
                other => Err(super::wrong_type("insert.documents.0", other, "object")),
            };
            match result {
                Ok(ops) => {
                    n += 1;
                    let len = ops.len();
                    for (j, op) in ops.into_iter().enumerate() {
                        pending.push(PendingOp::stmt(op, (j + 1 == len).then_some(stmt)));
                    }
                }
                Err(e) => {
                    write_errors.push(e.to_write_error(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        if let Some(ts) = engine.log(pending, retry.as_ref()) {
            last_ts = Some(ts);
        }
        if last_ts.is_none() {
            last_ts = Some(engine.last_applied());
        }
    }
    Ok(write_reply(ctx, doc! {"n": n}, write_errors, last_ts))
}

// ---------------------------------------------------------------- delete

/// `delete` (reference §8.2).
pub(crate) async fn delete(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    check_txn_allowed(ctx)?;
    reject_let_on_44(ctx, &req)?;
    let deletes = req_array(&req.body, "delete", "deletes")?;
    let lets = opt_doc(&req.body, "delete", "let")?.cloned();
    let ordered = opt_bool(&req.body, "delete", "ordered")?.unwrap_or(true);
    names::check_write_ns(db, coll, ctx.shared.is_repl_set())?;
    let retry = retry_ctx(ctx);
    // a multi-document delete is one batched applyOps entry, retryable writes excepted
    let may_batch = ctx.shared.opts.batched_deletes && retry.is_none();
    let mut n = 0i32;
    let mut write_errors = Vec::new();
    let mut last_ts = None;
    {
        let shared = ctx.shared.clone();
        let mut guard = shared.engine.lock();
        let engine = &mut *guard;
        if let NsKind::View(_) = engine.catalog.kind(db, coll) {
            return Err(view_write_error(db, coll));
        }
        for (i, spec) in deletes.iter().enumerate() {
            let stmt = stmt_id_of(&req.body, i);
            if let Some(r) = &retry {
                if let Some(ts) = engine.retry_executed(r, stmt)? {
                    last_ts = Some(ts);
                    continue;
                }
            }
            let target = (db, coll, lets.as_ref());
            match delete_statement(engine, target, spec, stmt, may_batch) {
                Ok((k, ops, as_batch)) => {
                    n += k;
                    let ts = if as_batch {
                        engine.log_apply_ops(ops.into_iter().map(|p| p.op).collect(), None)
                    } else {
                        engine.log(ops, retry.as_ref())
                    };
                    if ts.is_some() {
                        last_ts = ts;
                    }
                }
                Err(e) => {
                    write_errors.push(e.to_write_error(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        if last_ts.is_none() {
            last_ts = Some(engine.last_applied());
        }
    }
    Ok(write_reply(ctx, doc! {"n": n}, write_errors, last_ts))
}

/// One statement of `deletes` (number `stmt`) on `(db, coll, let)`: the number of
/// documents deleted, their oplog ops, and whether they are logged as one batch.
fn delete_statement(
    engine: &mut Engine,
    (db, coll, lets): (&str, &str, Option<&Document>),
    spec: &Bson,
    stmt: i32,
    may_batch: bool,
) -> CmdResult<(i32, Vec<PendingOp>, bool)> {
    let Bson::Document(spec) = spec else {
        return Err(super::wrong_type("delete.deletes.0", spec, "object"));
    };
    let q = match spec.get("q") {
        Some(Bson::Document(q)) => q,
        Some(other) => return Err(super::wrong_type("delete.deletes.q", other, "object")),
        None => return Err(missing_field("delete.deletes", "q")),
    };
    let limit = match spec.get("limit") {
        Some(v) => match crate::query::compare::as_f64(v) {
            Some(l) => l,
            None => return Err(super::wrong_type("delete.deletes.limit", v, "long")),
        },
        None => return Err(missing_field("delete.deletes", "limit")),
    };
    if limit != 0.0 && limit != 1.0 {
        // SRV write_ops.cpp
        return Err(CommandError::failed_to_parse(format!(
            "The limit field in delete objects must be 0 or 1. Got {limit}"
        )));
    }
    let m = matcher_for(q, lets, spec.get("collation"))?;
    let simple = matches!(spec.get("collation"), None | Some(Bson::Null));
    let mut rids = matching_rids_with(&engine.catalog, db, coll, q, &m, simple);
    if limit == 1.0 {
        rids.truncate(1);
    }
    let mut ops = Vec::new();
    for rid in &rids {
        ops.push(PendingOp::stmt(
            engine.catalog.delete_doc(db, coll, *rid)?,
            Some(stmt),
        ));
    }
    let as_batch = may_batch && limit == 0.0 && ops.len() > 1;
    Ok((rids.len() as i32, ops, as_batch))
}

/// The reply of `insert`, `update` and `delete`: `reply` (`n`, …) with the `writeErrors`
/// and the replication fields; `last_ts` becomes the operation time.
fn write_reply(
    ctx: &mut Ctx<'_>,
    mut reply: Document,
    write_errors: Vec<Document>,
    last_ts: Option<Timestamp>,
) -> Document {
    if !write_errors.is_empty() {
        reply.insert("writeErrors", write_errors);
    }
    if let Some(ts) = last_ts {
        ctx.operation_time = Some(ts);
        append_repl_fields(ctx, &mut reply, ts);
    }
    reply
}

// ---------------------------------------------------------------- count / distinct

/// `count` (reference §7.5): `{n}`; a missing collection counts 0.
pub(crate) async fn count(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let query = opt_doc(&req.body, "count", "query")?
        .cloned()
        .unwrap_or_default();
    let skip = opt_i64(&req.body, "count", "skip")?.unwrap_or(0);
    let limit = opt_i64(&req.body, "count", "limit")?.unwrap_or(0);
    if skip < 0 {
        return Err(CommandError::bad_value(
            "skip value is negative in count query",
        ));
    }
    let lets = opt_doc(&req.body, "count", "let")?.cloned();
    let m = matcher_for(&query, lets.as_ref(), req.body.get("collation"))?;
    // a collection is counted in place (no query: the metadata count, reference §7.5)
    let in_place = {
        let engine = ctx.shared.engine.lock();
        let is_oplog = db == "local" && coll == "oplog.rs" && engine.oplog.is_some();
        match engine.catalog.kind(db, coll) {
            NsKind::Collection(c) if !is_oplog && query.is_empty() => Some(c.count() as i64),
            NsKind::Collection(_) if !is_oplog => {
                let simple = matches!(req.body.get("collation"), None | Some(Bson::Null));
                Some(matching_rids_with(&engine.catalog, db, coll, &query, &m, simple).len() as i64)
            }
            _ => None,
        }
    };
    let mut n = match in_place {
        Some(n) => n,
        None => {
            let docs = source_docs(&ctx.shared.engine.lock(), db, coll, &query)?;
            docs.iter().filter(|d| m.matches(d)).count() as i64
        }
    };
    n = (n - skip).max(0);
    if limit != 0 {
        n = n.min(limit.abs());
    }
    Ok(doc! {"n": n as i32})
}

/// `distinct`: `{values: [...]}` (array values are unwound one level, as the server does).
pub(crate) async fn distinct(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    let key = match req.body.get("key") {
        Some(Bson::String(k)) => k.clone(),
        Some(other) => return Err(super::wrong_type("distinct.key", other, "string")),
        None => return Err(missing_field("distinct", "key")),
    };
    let query = opt_doc(&req.body, "distinct", "query")?
        .cloned()
        .unwrap_or_default();
    let collation = collation_of(req.body.get("collation"))?;
    let m = matcher_for(&query, None, req.body.get("collation"))?;
    let docs = source_docs(&ctx.shared.engine.lock(), db, coll, &query)?;
    let mut values: Vec<Bson> = Vec::new();
    for d in docs.iter().filter(|d| m.matches(d)) {
        for it in crate::query::path::collect_values(d, &key, true) {
            {
                if !values.iter().any(|x| {
                    crate::query::compare::cmp_coll(x, it, collation.as_ref())
                        == std::cmp::Ordering::Equal
                }) {
                    values.push(it.clone());
                }
            }
        }
    }
    values.sort_by(|a, b| crate::query::compare::cmp_coll(a, b, collation.as_ref()));
    Ok(doc! {"values": values})
}

// ---------------------------------------------------------------- update

use crate::query::update::{Update, UpdateCtx, UpdateOutcome};

/// The oplog `o` of an update outcome in the engine's version (reference §4.4–4.6).
fn update_o(engine: &Engine, out: &UpdateOutcome) -> Document {
    if out.is_replacement {
        return out.new_doc.clone();
    }
    match engine.version {
        crate::ServerVersion::V4_4 => out.v1.clone(),
        _ => out.v2_diff.clone(),
    }
}

/// 4.4 storage validation: no `$`-prefixed field names anywhere in a stored replacement
/// (SRV 4.4 `storage_validation.cpp`; allowed from 5.0).
fn check_storage_dollars(d: &Document, prefix: &str) -> CmdResult<()> {
    for (k, v) in d {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if k.starts_with('$') {
            return Err(CommandError::from_code(
                ErrorCode::DollarPrefixedFieldName,
                format!(
                    "The dollar ($) prefixed field '{k}' in '{path}' is not valid for storage."
                ),
            ));
        }
        let mut stack: Vec<(&Bson, String)> = vec![(v, path)];
        while let Some((v, path)) = stack.pop() {
            match v {
                Bson::Document(inner) => check_storage_dollars(inner, &path)?,
                Bson::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        stack.push((x, format!("{path}.{i}")));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// 66 ImmutableField when an update changed `_id` (SRV `update_stage.cpp`).
fn check_id_unchanged(old: &Document, new: &Document) -> CmdResult<()> {
    let (a, b) = (old.get("_id"), new.get("_id"));
    let same = match (a, b) {
        (Some(x), Some(y)) => crate::query::compare::binary_eq(x, y),
        (None, None) => true,
        _ => false,
    };
    if !same {
        return Err(CommandError::from_code(
            ErrorCode::ImmutableField,
            format!(
                "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {}",
                b.map(crate::query::fmt::value).unwrap_or_else(|| "null".into())
            ),
        ));
    }
    Ok(())
}

/// Result of one update statement.
#[derive(Debug, Default)]
pub(crate) struct UpdateResult {
    /// Matched documents (1 for an upsert).
    pub(crate) n: i32,
    /// Modified documents.
    pub(crate) n_modified: i32,
    /// `_id` of an upserted document.
    pub(crate) upserted: Option<Bson>,
    /// Pre-image of the first matched document (findAndModify).
    pub(crate) pre_image: Option<Document>,
    /// Post-image of the first matched/upserted document (findAndModify).
    pub(crate) post_image: Option<Document>,
    /// `bypassDocumentValidation: true`: the collection validator is not applied (validation.rs).
    pub(crate) bypass_validation: bool,
}

/// One update statement against `db.coll`: selects (optionally sorted for findAndModify),
/// applies, logs nothing — fills in the result and the oplog ops. On an error the writes
/// already made (earlier documents of a multi-update, an implicit create) stay in `ops` and
/// must still be logged.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_update(
    engine: &mut Engine,
    db: &str,
    coll: &str,
    query: &Document,
    update: &Update,
    multi: bool,
    upsert: bool,
    sort: Option<&crate::query::sort::SortSpec>,
    (m, lets, simple): (&Matcher, Option<&Document>, bool),
    res: &mut UpdateResult,
    ops: &mut Vec<Document>,
) -> CmdResult<()> {
    let mut rids = matching_rids_with(&engine.catalog, db, coll, query, m, simple);
    if let (Some(s), Some(c)) = (sort, engine.catalog.coll(db, coll)) {
        rids.sort_by(|a, b| match (c.get(*a), c.get(*b)) {
            (Some(x), Some(y)) => s.compare(&x.doc, &y.doc),
            _ => std::cmp::Ordering::Equal,
        });
    }
    if !multi {
        rids.truncate(1);
    }
    let now = bson::DateTime::now();
    for rid in rids {
        let Some(old) = engine
            .catalog
            .coll(db, coll)
            .and_then(|c| c.get(rid))
            .map(|s| s.doc.clone())
        else {
            continue;
        };
        let mut uctx = UpdateCtx::new(now);
        uctx.now_ts = engine.cluster_time();
        uctx.query = Some(query);
        uctx.lets = lets;
        let out = update.apply(&old, &uctx)?;
        res.n += 1;
        if res.pre_image.is_none() {
            res.pre_image = Some(old.clone());
            res.post_image = Some(out.new_doc.clone());
        }
        if out.modified {
            check_id_unchanged(&old, &out.new_doc)?;
            if out.is_replacement && engine.version == crate::ServerVersion::V4_4 {
                check_storage_dollars(&out.new_doc, "")?;
            }
            let o = update_o(engine, &out);
            if !res.bypass_validation {
                crate::engine::validation::check(engine, db, coll, &out.new_doc, Some(&old))?;
            }
            ops.push(engine.catalog.update_doc(db, coll, rid, out.new_doc, o)?);
            res.n_modified += 1;
        }
    }
    if res.n == 0 && upsert {
        let seed = crate::query::update::upsert_seed(query)?;
        let mut uctx = UpdateCtx::new(now);
        uctx.now_ts = engine.cluster_time();
        uctx.is_upsert_insert = true;
        uctx.query = Some(query);
        uctx.lets = lets;
        let out = update.apply(&seed, &uctx)?;
        if let (Some(a), Some(b)) = (seed.get("_id"), out.new_doc.get("_id")) {
            if !crate::query::compare::binary_eq(a, b) {
                check_id_unchanged(&seed, &out.new_doc)?;
            }
        }
        let doc = fix_document_for_insert(engine, &out.new_doc)?;
        names::check_write_ns(db, coll, engine.repl)?;
        ops.extend(engine.catalog.ensure_collection(db, coll)?);
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        // upserts are logged as inserts (reference §4.1)
        if !res.bypass_validation {
            crate::engine::validation::check(engine, db, coll, &doc, None)?;
        }
        let (_, op) = engine.catalog.insert_doc(db, coll, doc.clone())?;
        ops.push(op);
        res.n = 1;
        res.upserted = Some(id);
        res.post_image = Some(doc);
    }
    Ok(())
}

/// `update` (reference §8.2): `{n, nModified, upserted?, writeErrors?}`.
pub(crate) async fn update(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    check_txn_allowed(ctx)?;
    reject_let_on_44(ctx, &req)?;
    let updates = req_array(&req.body, "update", "updates")?;
    let lets = opt_doc(&req.body, "update", "let")?.cloned();
    check_update_fields(updates)?;
    let ordered = opt_bool(&req.body, "update", "ordered")?.unwrap_or(true);
    names::check_write_ns(db, coll, ctx.shared.is_repl_set())?;
    let retry = retry_ctx(ctx);
    let mut n = 0i32;
    let mut n_modified = 0i32;
    let mut upserted = Vec::new();
    let mut write_errors = Vec::new();
    let mut last_ts = None;
    {
        let shared = ctx.shared.clone();
        let mut guard = shared.engine.lock();
        let engine = &mut *guard;
        if let NsKind::View(_) = engine.catalog.kind(db, coll) {
            return Err(view_write_error(db, coll));
        }
        for (i, spec) in updates.iter().enumerate() {
            let stmt = stmt_id_of(&req.body, i);
            if let Some(r) = &retry {
                if let Some(ts) = engine.retry_executed(r, stmt)? {
                    n += 1;
                    last_ts = Some(ts);
                    continue;
                }
            }
            let mut r = UpdateResult {
                bypass_validation: crate::engine::validation::bypass(&req.body),
                ..Default::default()
            };
            let mut ops: Vec<Document> = Vec::new();
            let res = update_statement(engine, (db, coll, lets.as_ref()), spec, &mut r, &mut ops);
            // writes made before an error (earlier documents of a multi-update, an implicit
            // create) are logged either way
            if let Some(ts) = log_statement(engine, ops, stmt, retry.as_ref()) {
                last_ts = Some(ts);
            }
            match res {
                Ok(()) => {
                    n += r.n;
                    n_modified += r.n_modified;
                    if let Some(id) = r.upserted {
                        upserted.push(doc! {"index": i as i32, "_id": id});
                    }
                }
                Err(e) => {
                    // a failed statement counts nothing, even if it changed documents
                    // before failing (SRV write_ops_exec.cpp performUpdates)
                    write_errors.push(e.to_write_error(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        if last_ts.is_none() {
            last_ts = Some(engine.last_applied());
        }
    }
    let mut reply = doc! {"n": n, "nModified": n_modified};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    Ok(write_reply(ctx, reply, write_errors, last_ts))
}

/// The statements are parsed (IDL) before anything runs: an unknown field in one of them
/// fails the command.
fn check_update_fields(updates: &[Bson]) -> CmdResult<()> {
    for spec in updates {
        if let Bson::Document(spec) = spec {
            for k in spec.keys() {
                // UpdateOpEntry IDL fields of 7.0 (`sort` is 8.0+)
                let known = matches!(
                    k.as_str(),
                    "q" | "u"
                        | "c"
                        | "multi"
                        | "upsert"
                        | "arrayFilters"
                        | "collation"
                        | "hint"
                        | "upsertSupplied"
                        | "sampleId"
                        | "$_allowShardKeyUpdatesWithoutFullShardKeyInQuery"
                );
                if !known {
                    return Err(CommandError::unknown_field(k, "update.updates"));
                }
            }
        }
    }
    Ok(())
}

/// One statement of `updates` on `(db, coll, let)`: fills in `r` and `ops` (see
/// [`apply_update`]).
fn update_statement(
    engine: &mut Engine,
    (db, coll, lets): (&str, &str, Option<&Document>),
    spec: &Bson,
    r: &mut UpdateResult,
    ops: &mut Vec<Document>,
) -> CmdResult<()> {
    let Bson::Document(spec) = spec else {
        return Err(super::wrong_type("update.updates.0", spec, "object"));
    };
    let q = match spec.get("q") {
        Some(Bson::Document(q)) => q.clone(),
        Some(other) => return Err(super::wrong_type("update.updates.q", other, "object")),
        None => return Err(missing_field("update.updates", "q")),
    };
    let u = spec
        .get("u")
        .ok_or_else(|| missing_field("update.updates", "u"))?;
    let multi = opt_bool(spec, "update.updates", "multi")?.unwrap_or(false);
    let upsert = opt_bool(spec, "update.updates", "upsert")?.unwrap_or(false);
    let filters = array_filters(spec)?;
    let legacy = engine.version == crate::ServerVersion::V4_4;
    let parsed = Update::parse_versioned(u, filters.as_deref(), legacy)?;
    let m = matcher_for(&q, lets, spec.get("collation"))?;
    if multi
        && matches!(u, Bson::Document(d) if d.keys().next().is_some_and(|k| !k.starts_with('$')))
    {
        // SRV write_ops_parsers.cpp
        return Err(CommandError::failed_to_parse(
            "multi update is not supported for replacement-style update",
        ));
    }
    let simple = matches!(spec.get("collation"), None | Some(Bson::Null));
    apply_update(
        engine,
        db,
        coll,
        &q,
        &parsed,
        multi,
        upsert,
        None,
        (&m, lets, simple),
        r,
        ops,
    )
}

/// `arrayFilters` of an update statement: documents only.
fn array_filters(spec: &Document) -> CmdResult<Option<Vec<Document>>> {
    match spec.get("arrayFilters") {
        None => Ok(None),
        Some(Bson::Array(a)) => a
            .iter()
            .map(|f| match f {
                Bson::Document(d) => Ok(d.clone()),
                other => Err(super::wrong_type(
                    "update.updates.arrayFilters",
                    other,
                    "object",
                )),
            })
            .collect::<CmdResult<_>>()
            .map(Some),
        Some(other) => Err(super::wrong_type(
            "update.updates.arrayFilters",
            other,
            "array",
        )),
    }
}

/// Logs the ops of update statement `stmt`, its CRUD ops tagged with the statement.
fn log_statement(
    engine: &mut Engine,
    ops: Vec<Document>,
    stmt: i32,
    retry: Option<&RetryCtx>,
) -> Option<Timestamp> {
    let pending: Vec<PendingOp> = ops
        .into_iter()
        .map(|op| {
            let session = op.get_str("op").is_ok_and(|o| o != "c");
            PendingOp::stmt(op, session.then_some(stmt))
        })
        .collect();
    engine.log(pending, retry)
}

// ---------------------------------------------------------------- findAndModify

/// `findAndModify`: `{lastErrorObject, value}`.
pub(crate) async fn find_and_modify(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    names::check_db(db)?;
    let coll = names::coll_arg(db, req.target())?;
    check_txn_allowed(ctx)?;
    reject_let_on_44(ctx, &req)?;
    let fam = parse_find_and_modify(req.name.as_str(), &req.body)?;
    names::check_write_ns(db, coll, ctx.shared.is_repl_set())?;
    let retry = retry_ctx(ctx);
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    if let NsKind::View(_) = engine.catalog.kind(db, coll) {
        return Err(view_write_error(db, coll));
    }
    let done = if fam.remove {
        fam_remove(engine, db, coll, &fam)?
    } else {
        let bypass = crate::engine::validation::bypass(&req.body);
        fam_update(engine, db, coll, &fam, bypass)?
    };
    let returns_pre_image = fam.remove || !fam.new;
    let image = if returns_pre_image {
        done.pre_image
    } else {
        done.value.clone()
    };
    let pending = pending_with_image(engine, done.ops, image, returns_pre_image, retry.is_some());
    let ts = engine
        .log(pending, retry.as_ref())
        .unwrap_or_else(|| engine.last_applied());
    drop(guard);
    ctx.operation_time = Some(ts);
    let value = match (done.value, &fam.projection) {
        (Some(v), Some(p)) => Bson::Document(p.apply(&v)?),
        (Some(v), None) => Bson::Document(v),
        (None, _) => Bson::Null,
    };
    Ok(doc! {"lastErrorObject": done.last_error, "value": value})
}

/// A parsed `findAndModify`.
struct FindAndModify {
    query: Document,
    remove: bool,
    new: bool,
    upsert: bool,
    update: Option<Bson>,
    filters: Option<Vec<Document>>,
    projection: Option<crate::query::projection::Projection>,
    sort: Option<crate::query::sort::SortSpec>,
    lets: Option<Document>,
    matcher: Matcher,
    /// `collation` is absent or null.
    simple_collation: bool,
}

/// Parses the arguments of `findAndModify` (command name `cmd`), in the server's order.
fn parse_find_and_modify(cmd: &str, body: &Document) -> CmdResult<FindAndModify> {
    let query = opt_doc(body, cmd, "query")?.cloned().unwrap_or_default();
    let sort = opt_doc(body, cmd, "sort")?.cloned();
    let fields = opt_doc(body, cmd, "fields")?.cloned();
    let remove = opt_bool(body, cmd, "remove")?.unwrap_or(false);
    let new = opt_bool(body, cmd, "new")?.unwrap_or(false);
    let upsert = opt_bool(body, cmd, "upsert")?.unwrap_or(false);
    let update = body.get("update").cloned();
    check_remove_or_update(remove, update.is_some(), upsert, new)?;
    let filters: Option<Vec<Document>> = match body.get("arrayFilters") {
        Some(Bson::Array(a)) => Some(a.iter().filter_map(|f| f.as_document().cloned()).collect()),
        _ => None,
    };
    let projection = match &fields {
        Some(f) if !f.is_empty() => Some(crate::query::projection::Projection::parse(f)?),
        _ => None,
    };
    let collation = collation_of(body.get("collation"))?;
    let sort = match &sort {
        Some(s) if !s.is_empty() => {
            let mut spec = crate::query::sort::SortSpec::parse(s)?;
            spec.set_collation(collation.clone());
            Some(spec)
        }
        _ => None,
    };
    let lets = opt_doc(body, cmd, "let")?.cloned();
    let matcher = matcher_for(&query, lets.as_ref(), body.get("collation"))?;
    Ok(FindAndModify {
        query,
        remove,
        new,
        upsert,
        update,
        filters,
        projection,
        sort,
        lets,
        matcher,
        simple_collation: matches!(body.get("collation"), None | Some(Bson::Null)),
    })
}

/// SRV find_and_modify.cpp validate(): either an update or `remove: true`, the latter
/// without `upsert` or `new`.
fn check_remove_or_update(
    remove: bool,
    has_update: bool,
    upsert: bool,
    new: bool,
) -> CmdResult<()> {
    if remove {
        if has_update {
            return Err(CommandError::failed_to_parse(
                "Cannot specify both an update and remove=true",
            ));
        }
        if upsert {
            return Err(CommandError::failed_to_parse(
                "Cannot specify both upsert=true and remove=true ",
            ));
        }
        if new {
            return Err(CommandError::failed_to_parse(
                "Cannot specify both new=true and remove=true; 'remove' always returns the deleted document",
            ));
        }
    } else if !has_update {
        return Err(CommandError::failed_to_parse(
            "Either an update or remove=true must be specified",
        ));
    }
    Ok(())
}

/// What a `findAndModify` did, before it is logged.
struct FamDone {
    last_error: Document,
    /// The document returned as `value` (before projection).
    value: Option<Document>,
    /// The document before the write.
    pre_image: Option<Document>,
    ops: Vec<Document>,
}

/// `remove: true`: deletes the first matching document in `sort` order.
fn fam_remove(
    engine: &mut Engine,
    db: &str,
    coll: &str,
    fam: &FindAndModify,
) -> CmdResult<FamDone> {
    let mut rids = matching_rids_with(
        &engine.catalog,
        db,
        coll,
        &fam.query,
        &fam.matcher,
        fam.simple_collation,
    );
    if let (Some(s), Some(c)) = (&fam.sort, engine.catalog.coll(db, coll)) {
        rids.sort_by(|a, b| match (c.get(*a), c.get(*b)) {
            (Some(x), Some(y)) => s.compare(&x.doc, &y.doc),
            _ => std::cmp::Ordering::Equal,
        });
    }
    let Some(rid) = rids.first() else {
        return Ok(FamDone {
            last_error: doc! {"n": 0},
            value: None,
            pre_image: None,
            ops: Vec::new(),
        });
    };
    let old = engine
        .catalog
        .coll(db, coll)
        .and_then(|c| c.get(*rid))
        .map(|s| s.doc.clone());
    let op = engine.catalog.delete_doc(db, coll, *rid)?;
    Ok(FamDone {
        last_error: doc! {"n": 1},
        value: old.clone(),
        pre_image: old,
        ops: vec![op],
    })
}

/// An update (or upsert) of the first matching document in `sort` order.
fn fam_update(
    engine: &mut Engine,
    db: &str,
    coll: &str,
    fam: &FindAndModify,
    bypass_validation: bool,
) -> CmdResult<FamDone> {
    let u = fam.update.clone().unwrap_or(Bson::Null);
    let legacy = engine.version == crate::ServerVersion::V4_4;
    let parsed = Update::parse_versioned(&u, fam.filters.as_deref(), legacy)?;
    let mut r = UpdateResult {
        bypass_validation,
        ..Default::default()
    };
    let mut ops = Vec::new();
    let res = apply_update(
        engine,
        db,
        coll,
        &fam.query,
        &parsed,
        false,
        fam.upsert,
        fam.sort.as_ref(),
        (&fam.matcher, fam.lets.as_ref(), fam.simple_collation),
        &mut r,
        &mut ops,
    );
    if let Err(e) = res {
        // an implicit create made before the failure is still logged
        engine.log(ops.into_iter().map(Into::into).collect(), None);
        return Err(e);
    }
    let mut le = doc! {"n": r.n, "updatedExisting": r.n > 0 && r.upserted.is_none()};
    if let Some(id) = &r.upserted {
        le.insert("upserted", id.clone());
    }
    let pre_image = r.pre_image.clone();
    let value = if fam.new {
        r.post_image
    } else if r.upserted.is_some() {
        None
    } else {
        r.pre_image
    };
    Ok(FamDone {
        last_error: le,
        value,
        pre_image,
        ops,
    })
}

/// The ops of a `findAndModify` to log; a retryable write keeps the returned pre- or
/// post-`image` for a retry: 4.4 as a no-op entry the write links to (reference §4.1),
/// 6.0+ in config.image_collection (`needsRetryImage`).
fn pending_with_image(
    engine: &Engine,
    ops: Vec<Document>,
    image: Option<Document>,
    pre_image: bool,
    retryable: bool,
) -> Vec<PendingOp> {
    let image_kind = if pre_image { "preImage" } else { "postImage" };
    let mut pending: Vec<PendingOp> = Vec::new();
    for mut op in ops {
        let crud = op.get_str("op").is_ok_and(|o| o != "c");
        let is_insert = op.get_str("op") == Ok("i");
        if crud && !is_insert && retryable {
            match engine.version {
                crate::ServerVersion::V4_4 => {
                    if let Some(img) = &image {
                        let mut noop =
                            doc! {"op": "n", "ns": op.get("ns").cloned().unwrap_or(Bson::Null)};
                        if let Some(ui) = op.get("ui") {
                            noop.insert("ui", ui.clone());
                        }
                        noop.insert("o", img.clone());
                        pending.push(PendingOp::stmt(noop, Some(0)));
                        let mut p = PendingOp::stmt(op, Some(0));
                        p.image_link = Some(if pre_image {
                            "preImageOpTime"
                        } else {
                            "postImageOpTime"
                        });
                        pending.push(p);
                        continue;
                    }
                }
                _ => {
                    op.insert("needsRetryImage", image_kind);
                }
            }
        }
        pending.push(PendingOp::stmt(op, crud.then_some(0)));
    }
    pending
}
