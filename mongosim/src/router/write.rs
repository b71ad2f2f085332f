//! Writes through a router: `insert`, `update`, `delete`, `findAndModify` (reference
//! sharded-clusters.md §3.1; SRV `src/mongo/s/write_ops/batch_write_exec.cpp`,
//! `chunk_manager_targeter.cpp`).
//!
//! Unsharded collections: the whole command goes to the database's primary shard (created
//! on first write). Sharded collections: each document or statement is targeted by its
//! shard key; consecutive statements for the same single shard travel as one batch, others
//! alone; an ordered batch stops at its first write error. `writeErrors` and `upserted`
//! indexes are the client's. Single-document updates/deletes and findAndModify without the
//! full shard key: on 7.0 the first matching document across the shards is found and the
//! write is sent to its shard with its `_id` added (the "write without shard key" protocol,
//! `_clusterQueryWithoutShardKey` / `_clusterWriteWithoutShardKey`); 4.4 accepts only an
//! exact `_id` (sent to every shard) and otherwise answers 61 ShardKeyNotFound.

use bson::{doc, Bson, Document};

use super::meta::{self, Placement, Sharded};
use super::shard_key::{not_targetable, shards_for_query};
use super::{admin, forwardable, Router};
use crate::commands::{Ctx, Request};
use crate::error::{CmdResult, CommandError};
use crate::ServerVersion;

fn coll_of(req: &Request) -> CmdResult<String> {
    match req.target() {
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified '{}.'",
            req.db
        ))),
    }
}

/// The placement of a written namespace; a missing database is created first.
pub(crate) async fn write_placement(
    r: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    coll: &str,
) -> CmdResult<Placement> {
    match meta::placement(r, ctx, db, coll).await? {
        Placement::NoDatabase => {
            let primary = admin::ensure_database(r, ctx, db, None).await?;
            Ok(Placement::Unsharded { primary })
        }
        p => Ok(p),
    }
}

/// Forwards the client's command unchanged to `shard`.
async fn whole(r: &Router, ctx: &mut Ctx<'_>, shard: &str, req: &Request) -> CmdResult<Document> {
    let reply = r
        .forward(ctx, shard, &req.db, forwardable(&req.body))
        .await?;
    if matches!(
        req.name.as_str(),
        "insert" | "update" | "delete" | "findAndModify" | "findandmodify"
    ) {
        r.txns.wrote(ctx, shard);
    }
    Ok(reply)
}

/// `insert`.
pub(crate) async fn insert(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_of(&req)?;
    let coll_meta = match write_placement(r, ctx, &req.db, &coll).await? {
        Placement::Sharded { coll, .. } => coll,
        p => return whole(r, ctx, p.primary().unwrap_or_default(), &req).await,
    };
    let docs = match req.body.get("documents") {
        Some(Bson::Array(a)) => a.clone(),
        _ => return whole(r, ctx, &coll_meta.shards()[0], &req).await,
    };
    let stmts: Vec<Stmt> = docs
        .into_iter()
        .enumerate()
        .map(|(index, d)| {
            let shard = match &d {
                Bson::Document(doc) => coll_meta
                    .chunk_for(&coll_meta.key.key_of_doc(doc))
                    .map(|c| c.shard.clone()),
                _ => None,
            };
            let targets = shard.map(|s| vec![s]).unwrap_or_else(|| coll_meta.shards());
            Stmt {
                index,
                doc: d,
                targets,
            }
        })
        .collect();
    run_batches(r, ctx, &req, "documents", &coll_meta, stmts).await
}

/// One statement of a write command and the shards it goes to.
struct Stmt {
    index: usize,
    doc: Bson,
    targets: Vec<String>,
}

/// The merged reply of a split write command.
#[derive(Default)]
struct Merged {
    n: i64,
    n_modified: i64,
    upserted: Vec<Bson>,
    write_errors: Vec<Document>,
    wce: Option<Bson>,
}

impl Merged {
    fn absorb(&mut self, reply: &Document, indexes: &[usize]) {
        self.n += num(reply.get("n"));
        self.n_modified += num(reply.get("nModified"));
        let remap = |d: &Document| -> Document {
            let mut d = d.clone();
            let i = num(d.get("index")) as usize;
            d.insert("index", indexes.get(i).copied().unwrap_or(i) as i32);
            d
        };
        for (field, out) in [
            ("upserted", &mut self.upserted),
            ("writeErrors", &mut Vec::new()),
        ] {
            if let Ok(a) = reply.get_array(field) {
                for e in a.iter().filter_map(Bson::as_document) {
                    if field == "upserted" {
                        out.push(Bson::Document(remap(e)));
                    } else {
                        self.write_errors.push(remap(e));
                    }
                }
            }
        }
        if self.wce.is_none() {
            self.wce = reply.get("writeConcernError").cloned();
        }
    }

    fn reply(mut self, with_modified: bool) -> Document {
        let mut out = doc! {"n": int(self.n)};
        if with_modified {
            out.insert("nModified", int(self.n_modified));
        }
        if !self.upserted.is_empty() {
            out.insert("upserted", self.upserted);
        }
        if !self.write_errors.is_empty() {
            self.write_errors.sort_by_key(|e| num(e.get("index")));
            out.insert("writeErrors", self.write_errors);
        }
        if let Some(wce) = self.wce {
            out.insert("writeConcernError", wce);
        }
        out
    }
}

fn num(v: Option<&Bson>) -> i64 {
    match v {
        Some(Bson::Int32(i)) => i64::from(*i),
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Double(d)) => *d as i64,
        _ => 0,
    }
}

fn int(n: i64) -> Bson {
    i32::try_from(n).map_or(Bson::Int64(n), Bson::Int32)
}

/// Sends the statements in batches (consecutive statements for one same shard together,
/// broadcast statements alone) and merges the replies.
async fn run_batches(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: &Request,
    field: &str,
    coll: &Sharded,
    stmts: Vec<Stmt>,
) -> CmdResult<Document> {
    let ordered = req.body.get_bool("ordered").unwrap_or(true);
    let mut batches: Vec<(Vec<String>, Vec<Stmt>)> = Vec::new();
    for s in stmts {
        match batches.last_mut() {
            Some((t, b)) if t.len() == 1 && *t == s.targets => b.push(s),
            _ => batches.push((s.targets.clone(), vec![s])),
        }
    }
    if !ordered {
        // Unordered: one batch per single shard, in first-statement order.
        batches = regroup(batches);
    }
    let mut merged = Merged::default();
    let base = coll.versioned(r.version, forwardable(&req.body));
    for (targets, batch) in batches {
        let indexes: Vec<usize> = batch.iter().map(|s| s.index).collect();
        let docs: Vec<Bson> = batch.into_iter().map(|s| s.doc).collect();
        let mut body = base.clone();
        body.insert(field, docs);
        if body.contains_key("txnNumber") && !super::txn::in_transaction(ctx) {
            // A retryable write keeps the client's statement numbering on every shard.
            let ids: Vec<i32> = indexes.iter().map(|i| *i as i32).collect();
            body.insert("stmtIds", ids);
        }
        let sends: Vec<(String, Document)> =
            targets.iter().map(|t| (t.clone(), body.clone())).collect();
        for (target, reply) in targets
            .iter()
            .zip(r.forward_all(ctx, &req.db, sends).await?)
        {
            let reply = reply?;
            if num(reply.get("n")) > 0 {
                r.txns.wrote(ctx, target);
            }
            merged.absorb(&reply, &indexes);
        }
        if ordered && !merged.write_errors.is_empty() {
            break;
        }
    }
    Ok(merged.reply(req.name == "update"))
}

/// Unordered writes: all single-shard statements of a shard in one batch.
fn regroup(batches: Vec<(Vec<String>, Vec<Stmt>)>) -> Vec<(Vec<String>, Vec<Stmt>)> {
    let mut out: Vec<(Vec<String>, Vec<Stmt>)> = Vec::new();
    for (targets, stmts) in batches {
        match out.iter_mut().find(|(t, _)| t.len() == 1 && *t == targets) {
            Some((_, b)) if targets.len() == 1 => b.extend(stmts),
            _ => out.push((targets, stmts)),
        }
    }
    out
}

/// `update`.
pub(crate) async fn update(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    modify(r, ctx, req, "updates").await
}

/// `delete`.
pub(crate) async fn delete(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    modify(r, ctx, req, "deletes").await
}

async fn modify(r: &Router, ctx: &mut Ctx<'_>, req: Request, field: &str) -> CmdResult<Document> {
    let coll = coll_of(&req)?;
    let coll_meta = match write_placement(r, ctx, &req.db, &coll).await? {
        Placement::Sharded { coll, .. } => coll,
        p => return whole(r, ctx, p.primary().unwrap_or_default(), &req).await,
    };
    let Ok(list) = req.body.get_array(field) else {
        return whole(r, ctx, &coll_meta.shards()[0], &req).await;
    };
    let mut stmts = Vec::new();
    let single = list.len() == 1;
    for (index, s) in list.clone().into_iter().enumerate() {
        let Bson::Document(mut s) = s else {
            return whole(r, ctx, &coll_meta.shards()[0], &req).await;
        };
        let targets = target_statement(r, ctx, &req, &coll_meta, &mut s).await?;
        if let ([shard], true, "update") = (targets.as_slice(), single, req.name.as_str()) {
            let moved =
                super::owning_shard::update_moving_document(r, ctx, &req, &coll_meta, &s, shard)
                    .await?;
            if let Some(reply) = moved {
                return Ok(reply);
            }
        }
        stmts.push(Stmt {
            index,
            doc: Bson::Document(s),
            targets,
        });
    }
    run_batches(r, ctx, &req, field, &coll_meta, stmts).await
}

/// The shards an update/delete statement goes to; may narrow `stmt.q` to one `_id` (7.0
/// write without shard key).
async fn target_statement(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: &Request,
    coll: &Sharded,
    stmt: &mut Document,
) -> CmdResult<Vec<String>> {
    let q = stmt.get_document("q").cloned().unwrap_or_default();
    let multi = if req.name == "update" {
        stmt.get_bool("multi").unwrap_or(false)
    } else {
        num(stmt.get("limit")) == 0
    };
    if multi {
        return Ok(shards_for_query(coll, &q));
    }
    if let Some(key) = coll.key.key_of_query(&q) {
        return Ok(coll
            .chunk_for(&key)
            .map(|c| vec![c.shard.clone()])
            .unwrap_or_default());
    }
    if let Ok(u) = stmt.get_document("u") {
        // A replacement document carrying the whole shard key targets its owner.
        if !u.keys().any(|k| k.starts_with('$'))
            && coll.key.field_names().all(|f| u.contains_key(f))
        {
            let key = coll.key.key_of_doc(u);
            if let Some(c) = coll.chunk_for(&key) {
                return Ok(vec![c.shard.clone()]);
            }
        }
    }
    let what = if req.name == "update" {
        "A single update"
    } else {
        "A single delete"
    };
    if stmt.get_bool("upsert").unwrap_or(false) {
        return Err(not_targetable(what, &coll.key));
    }
    if r.version == ServerVersion::V4_4 {
        return match q.get("_id") {
            Some(v) if !matches!(v, Bson::Document(_) | Bson::Array(_)) => Ok(coll.shards()),
            _ => Err(not_targetable(what, &coll.key)),
        };
    }
    match first_match(r, ctx, &req.db, coll, &q, stmt.get_document("sort").ok()).await? {
        Some((shard, id)) => {
            stmt.insert("q", doc! {"$and": [q, {"_id": id}]});
            Ok(vec![shard])
        }
        // Nothing matches anywhere: any one shard answers n: 0.
        None => Ok(coll.shards().into_iter().take(1).collect()),
    }
}

/// The shard and `_id` of the first document matching `q` (in shard order, or by `sort`
/// across the shards) — SRV `_clusterQueryWithoutShardKey`.
async fn first_match(
    r: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    coll: &Sharded,
    q: &Document,
    sort: Option<&Document>,
) -> CmdResult<Option<(String, Bson)>> {
    let (_, name) = admin::split_ns(&coll.ns)?;
    let mut find = coll.versioned(
        r.version,
        super::txn::in_client_transaction(
            ctx,
            doc! {"find": name, "filter": q.clone(), "limit": 1i64, "singleBatch": true},
        ),
    );
    if let Some(s) = sort {
        find.insert("sort", s.clone());
    }
    let mut best: Option<(String, Document)> = None;
    for shard in shards_for_query(coll, q) {
        let reply = r.forward(ctx, &shard, db, find.clone()).await?;
        let Some(d) = admin::first_batch(reply)
            .into_iter()
            .find_map(|d| d.as_document().cloned())
        else {
            continue;
        };
        let better = match (&best, sort) {
            (None, _) => true,
            (Some((_, b)), Some(s)) => {
                let spec = crate::query::sort::SortSpec::parse(s)?;
                spec.compare(&d, b) == std::cmp::Ordering::Less
            }
            (Some(_), None) => false,
        };
        if better {
            best = Some((shard, d));
        }
        if sort.is_none() && best.is_some() {
            break;
        }
    }
    Ok(best.map(|(s, d)| (s, d.get("_id").cloned().unwrap_or(Bson::Null))))
}

/// `findAndModify`.
pub(crate) async fn find_and_modify(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let coll = coll_of(&req)?;
    let coll_meta = match write_placement(r, ctx, &req.db, &coll).await? {
        Placement::Sharded { coll, .. } => coll,
        p => return whole(r, ctx, p.primary().unwrap_or_default(), &req).await,
    };
    let q = req.body.get_document("query").cloned().unwrap_or_default();
    if let Some(key) = coll_meta.key.key_of_query(&q) {
        let shard = coll_meta
            .chunk_for(&key)
            .map(|c| c.shard.clone())
            .unwrap_or_default();
        let body = coll_meta.versioned(r.version, forwardable(&req.body));
        let reply = r.forward(ctx, &shard, &req.db, body).await?;
        r.txns.wrote(ctx, &shard);
        return Ok(reply);
    }
    let upsert = req.body.get_bool("upsert").unwrap_or(false);
    if upsert || r.version == ServerVersion::V4_4 {
        // SRV 4.4 cluster_find_and_modify_cmd.cpp: "Query for sharded findAndModify must
        // contain the shard key"
        return Err(CommandError::from_code(
            crate::error::ErrorCode::ShardKeyNotFound,
            "Query for sharded findAndModify must contain the shard key",
        ));
    }
    let sort = req.body.get_document("sort").ok().cloned();
    match first_match(r, ctx, &req.db, &coll_meta, &q, sort.as_ref()).await? {
        Some((shard, id)) => {
            let mut body = coll_meta.versioned(r.version, forwardable(&req.body));
            body.insert("query", doc! {"$and": [q, {"_id": id}]});
            let reply = r.forward(ctx, &shard, &req.db, body).await?;
            r.txns.wrote(ctx, &shard);
            Ok(reply)
        }
        None => {
            let shard = coll_meta.shards()[0].clone();
            whole(r, ctx, &shard, &req).await
        }
    }
}

/// `commitTransaction` / `abortTransaction` on `admin` (SRV `transaction_router.cpp`
/// `commitTransaction`, `abortTransaction`): abort and a commit that wrote on at most one
/// shard go to every participant; a commit that wrote on several shards runs the two-phase
/// commit (`prepareTransaction` everywhere, then `commitTransaction` with the largest
/// `prepareTimestamp`; any failed prepare aborts everywhere: 251 NoSuchTransaction). A
/// router that never saw the transaction asks the shard the `recoveryToken` names
/// (`coordinateCommitTransaction`, reference sharded-clusters.md §6.1).
pub(crate) async fn end_transaction(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let state = r.txns.state(ctx).filter(|s| !s.participants.is_empty());
    let Some(state) = state else {
        return recover(r, ctx, &req).await;
    };
    let mut body = forwardable(&req.body);
    body.remove("recoveryToken");
    if req.name == "commitTransaction" && state.writers.len() > 1 {
        return two_phase_commit(r, ctx, &body, &state.participants).await;
    }
    let sends = state
        .participants
        .iter()
        .map(|p| (p.clone(), body.clone()))
        .collect();
    let mut first_err = None;
    let mut out = Document::new();
    for reply in r.forward_all(ctx, "admin", sends).await? {
        match reply {
            Ok(reply) => {
                // A participant's write-concern error reaches the client (SRV
                // transaction_router.cpp returns the participants' response).
                if let (Some(wce), false) = (
                    reply.get("writeConcernError"),
                    out.contains_key("writeConcernError"),
                ) {
                    out.insert("writeConcernError", wce.clone());
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `body` (a `commitTransaction`) renamed to the command `name` with `value` first, its
/// session fields kept.
fn renamed(body: &Document, name: &str, value: Bson) -> Document {
    let mut out = doc! {name: value};
    for (k, v) in body {
        if !matches!(
            k.as_str(),
            "commitTransaction" | "abortTransaction" | "commitTimestamp"
        ) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

async fn two_phase_commit(
    r: &Router,
    ctx: &mut Ctx<'_>,
    body: &Document,
    participants: &[String],
) -> CmdResult<Document> {
    let prepare = renamed(body, "prepareTransaction", Bson::Int32(1));
    let sends = participants
        .iter()
        .map(|p| (p.clone(), prepare.clone()))
        .collect();
    let mut commit_ts: Option<bson::Timestamp> = None;
    let mut failure = None;
    for reply in r.forward_all(ctx, "admin", sends).await? {
        match reply.and_then(|d| {
            d.get_timestamp("prepareTimestamp").map_err(|_| {
                CommandError::bad_value("prepareTransaction without a prepareTimestamp")
            })
        }) {
            Ok(ts) => {
                if commit_ts.is_none_or(|c| (ts.time, ts.increment) > (c.time, c.increment)) {
                    commit_ts = Some(ts);
                }
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        let abort = renamed(body, "abortTransaction", Bson::Int32(1));
        let sends = participants
            .iter()
            .map(|p| (p.clone(), abort.clone()))
            .collect();
        let _ = r.forward_all(ctx, "admin", sends).await?;
        return Err(CommandError::from_code(
            crate::error::ErrorCode::NoSuchTransaction,
            format!("Transaction was aborted :: caused by :: {}", e.errmsg),
        ));
    }
    let mut commit = renamed(body, "commitTransaction", Bson::Int32(1));
    if let Some(ts) = commit_ts {
        commit.insert("commitTimestamp", ts);
    }
    let sends = participants
        .iter()
        .map(|p| (p.clone(), commit.clone()))
        .collect();
    for reply in r.forward_all(ctx, "admin", sends).await? {
        reply?;
    }
    Ok(Document::new())
}

/// Commit or abort on a router without the transaction's state.
async fn recover(r: &Router, ctx: &mut Ctx<'_>, req: &Request) -> CmdResult<Document> {
    let shard = req
        .body
        .get_document("recoveryToken")
        .ok()
        .and_then(|t| t.get_str("recoveryShardId").ok())
        .map(str::to_string);
    match (req.name.as_str(), shard) {
        ("commitTransaction", Some(shard)) => {
            let mut body = renamed(
                &forwardable(&req.body),
                "coordinateCommitTransaction",
                Bson::Int32(1),
            );
            body.remove("recoveryToken");
            body.insert("participants", Vec::<Bson>::new());
            // Not as a participant's statement: this router never started the transaction.
            let remote = r.shard(ctx, &shard).await?;
            r.send(ctx, &remote, "admin", body).await?;
            Ok(Document::new())
        }
        _ => Err(CommandError::from_code(
            crate::error::ErrorCode::NoSuchTransaction,
            format!(
                "Transaction with {{ txnNumber: {} }} has been aborted.",
                ctx.txn_number.unwrap_or(0)
            ),
        )),
    }
}
