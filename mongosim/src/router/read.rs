//! Reads through a router: `find`, `count`, `distinct`, `aggregate` (reference
//! sharded-clusters.md §3.1–3.2; SRV `src/mongo/s/query/cluster_find.cpp`,
//! `cluster_count_cmd.cpp`, `cluster_distinct_cmd.cpp`, `cluster_aggregate.cpp`).
//!
//! A read that one shard can answer (unsharded collection, or a sharded one whose filter
//! targets one shard) is forwarded whole and its cursor passed through. Otherwise the shard
//! part runs on every targeted shard and the router merges: `find` sorts, skips, limits and
//! projects the gathered documents; `count` sums (skip and limit applied to the sum);
//! `distinct` unites and sorts the values; `aggregate` runs the leading per-document stages
//! (`$match`, `$project`, `$addFields`/`$set`, `$unset`, `$unwind`, `$replaceRoot`/
//! `$replaceWith`) on the shards and the rest of the pipeline on the merged documents.

use std::collections::VecDeque;

use bson::{doc, Bson, Document};

use super::cursor::{adopt_shard_cursor, cursor_reply, take_batch, Source};
use super::meta::{self, Placement, Sharded};
use super::shard_key::shards_for_query;
use super::{forwardable, Router};
use crate::commands::{Ctx, Request};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::query::compare::cmp_bson;

/// The shards a read of `db.coll` with `filter` goes to, or `None` when the database does
/// not exist. A sharded collection comes back too.
async fn read_targets(
    r: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    coll: &str,
    filter: &Document,
) -> CmdResult<Option<(Vec<String>, Option<Box<Sharded>>)>> {
    Ok(match meta::placement(r, ctx, db, coll).await? {
        Placement::NoDatabase => None,
        Placement::Unsharded { primary } => Some((vec![primary], None)),
        Placement::Sharded { coll, .. } => Some((shards_for_query(&coll, filter), Some(coll))),
    })
}

fn coll_name(req: &Request) -> CmdResult<String> {
    match req.target() {
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified '{}.'",
            req.db
        ))),
    }
}

/// The client's body to forward, versioned when the collection is sharded.
fn body_for(r: &Router, req: &Request, coll: Option<&Sharded>) -> Document {
    let body = forwardable(&req.body);
    match coll {
        Some(c) => c.versioned(r.version, body),
        None => body,
    }
}

/// Forwards a read to its only shard and adopts the cursor.
async fn single(
    r: &Router,
    ctx: &mut Ctx<'_>,
    shard: &str,
    req: &Request,
    coll: Option<&Sharded>,
) -> CmdResult<Document> {
    let reply = r
        .forward(ctx, shard, &req.db, body_for(r, req, coll))
        .await?;
    let version = coll.map(|c| c.shard_version(r.version));
    Ok(adopt_shard_cursor(r, ctx, shard, reply, version))
}

/// Appends the documents of a cursor reply's `cursor` (its `firstBatch` or `nextBatch`) to
/// `out`; returns the cursor id (0: exhausted).
pub(crate) fn batch_into(cursor: &Document, out: &mut Vec<Document>) -> i64 {
    let batch = cursor
        .get_array("firstBatch")
        .or_else(|_| cursor.get_array("nextBatch"))
        .map(|b| b.as_slice())
        .unwrap_or_default();
    out.extend(batch.iter().filter_map(|d| d.as_document().cloned()));
    cursor.get_i64("id").unwrap_or(0)
}

/// All documents of a cursor reply, with getMores until it is exhausted.
pub(crate) async fn drain(
    r: &Router,
    ctx: &mut Ctx<'_>,
    shard: &str,
    db: &str,
    mut reply: Document,
    version: Option<Bson>,
) -> CmdResult<Vec<Document>> {
    let mut out = Vec::new();
    loop {
        let cursor = reply.get_document("cursor").cloned().unwrap_or_default();
        let id = batch_into(&cursor, &mut out);
        if id == 0 {
            return Ok(out);
        }
        let coll = cursor
            .get_str("ns")
            .ok()
            .and_then(|ns| ns.split_once('.'))
            .map(|(_, c)| c.to_string())
            .unwrap_or_default();
        let mut body = doc! {"getMore": id, "collection": coll};
        if let Some(v) = &version {
            body.insert("shardVersion", v.clone());
        }
        reply = r.forward(ctx, shard, db, body).await?;
    }
}

/// Sends `body` to every shard and gathers all their documents.
async fn gather(
    r: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    shards: &[String],
    body: Document,
) -> CmdResult<Vec<Document>> {
    let version = body.get("shardVersion").cloned();
    let sends = shards.iter().map(|s| (s.clone(), body.clone())).collect();
    let replies = r.forward_all(ctx, db, sends).await?;
    let mut out = Vec::new();
    for (shard, reply) in shards.iter().zip(replies) {
        out.extend(drain(r, ctx, shard, db, reply?, version.clone()).await?);
    }
    Ok(out)
}

/// Serves merged documents: the first batch now, the rest from a router cursor.
fn serve(
    r: &Router,
    ctx: &Ctx<'_>,
    ns: &str,
    docs: Vec<Document>,
    batch_size: Option<usize>,
    single_batch: bool,
) -> Document {
    let mut docs: VecDeque<Document> = docs.into();
    let batch = take_batch(&mut docs, batch_size.unwrap_or(101));
    let id = if docs.is_empty() || single_batch {
        0
    } else {
        r.cursors
            .register(ns, Source::Buffered(docs), ctx.lsid.clone())
    };
    cursor_reply(ns, id, batch, true)
}

fn opt_i64(body: &Document, key: &str) -> Option<i64> {
    match body.get(key)? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) => Some(*d as i64),
        _ => None,
    }
}

/// `find`.
pub(crate) async fn find(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req)?;
    let ns = format!("{}.{coll}", req.db);
    let filter = req.body.get_document("filter").cloned().unwrap_or_default();
    let Some((shards, sharded)) = read_targets(r, ctx, &req.db, &coll, &filter).await? else {
        return Ok(cursor_reply(&ns, 0, Vec::new(), true));
    };
    if shards.len() <= 1 {
        let Some(shard) = shards.first() else {
            return Ok(cursor_reply(&ns, 0, Vec::new(), true));
        };
        return single(r, ctx, shard, &req, sharded.as_deref()).await;
    }
    let sort = req.body.get_document("sort").ok().cloned();
    let projection = req.body.get_document("projection").ok().cloned();
    let skip = opt_i64(&req.body, "skip").unwrap_or(0).max(0);
    let limit = opt_i64(&req.body, "limit").unwrap_or(0).max(0);
    let mut body = body_for(r, &req, sharded.as_deref());
    for k in ["skip", "limit", "batchSize", "singleBatch"] {
        body.remove(k);
    }
    if limit > 0 {
        body.insert("limit", limit + skip);
    }
    if sort.is_some() {
        // The sort keys must survive until the router has merged (SRV asks the shards for
        // `$sortKey`); the router projects afterwards.
        body.remove("projection");
    }
    let mut docs = gather(r, ctx, &req.db, &shards, body).await?;
    if let Some(sort) = &sort {
        let mut spec = crate::query::sort::SortSpec::parse(sort)?;
        spec.set_collation(crate::query::compare::collation_of(
            req.body.get("collation"),
        )?);
        spec.sort(&mut docs);
    }
    let mut docs: Vec<Document> = docs.into_iter().skip(skip as usize).collect();
    if limit > 0 {
        docs.truncate(limit as usize);
    }
    if let (Some(_), Some(p)) = (&sort, &projection) {
        let proj = crate::query::projection::Projection::parse(p)?;
        let m = crate::commands::args::matcher_for(&filter, None, None)?;
        docs = docs
            .iter()
            .map(|d| proj.apply_with_query(d, Some(&m)))
            .collect::<CmdResult<_>>()?;
    }
    let batch_size = opt_i64(&req.body, "batchSize").map(|n| n.max(0) as usize);
    let single_batch = req.body.get_bool("singleBatch").unwrap_or(false);
    Ok(serve(r, ctx, &ns, docs, batch_size, single_batch))
}

/// `count`: the sum of the shards' counts, then skip and limit.
pub(crate) async fn count(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req)?;
    let query = req.body.get_document("query").cloned().unwrap_or_default();
    let Some((shards, sharded)) = read_targets(r, ctx, &req.db, &coll, &query).await? else {
        return Ok(doc! {"n": 0});
    };
    let body = body_for(r, &req, sharded.as_deref());
    if shards.len() <= 1 {
        let Some(shard) = shards.first() else {
            return Ok(doc! {"n": 0});
        };
        return r.forward(ctx, shard, &req.db, body).await;
    }
    let skip = opt_i64(&req.body, "skip").unwrap_or(0).max(0);
    let limit = opt_i64(&req.body, "limit").unwrap_or(0).abs();
    let mut body = body;
    body.remove("skip");
    if limit > 0 {
        body.insert("limit", limit + skip);
    }
    let sends = shards.iter().map(|s| (s.clone(), body.clone())).collect();
    let mut total = 0i64;
    for reply in r.forward_all(ctx, &req.db, sends).await? {
        total += opt_i64(&reply?, "n").unwrap_or(0);
    }
    let mut n = (total - skip).max(0);
    if limit > 0 {
        n = n.min(limit);
    }
    Ok(doc! {"n": i32::try_from(n).map_or(Bson::Int64(n), Bson::Int32)})
}

/// `distinct`: the union of the shards' values, sorted (SRV `cluster_distinct_cmd.cpp`
/// merges into an ordered set).
pub(crate) async fn distinct(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req)?;
    let query = req.body.get_document("query").cloned().unwrap_or_default();
    let Some((shards, sharded)) = read_targets(r, ctx, &req.db, &coll, &query).await? else {
        return Ok(doc! {"values": []});
    };
    let body = body_for(r, &req, sharded.as_deref());
    if shards.len() <= 1 {
        let Some(shard) = shards.first() else {
            return Ok(doc! {"values": []});
        };
        return r.forward(ctx, shard, &req.db, body).await;
    }
    let sends = shards.iter().map(|s| (s.clone(), body.clone())).collect();
    let mut values: Vec<Bson> = Vec::new();
    for reply in r.forward_all(ctx, &req.db, sends).await? {
        values.extend(reply?.get_array("values").cloned().unwrap_or_default());
    }
    values.sort_by(cmp_bson);
    values.dedup_by(|a, b| cmp_bson(a, b) == std::cmp::Ordering::Equal);
    Ok(doc! {"values": values})
}

/// Stages that work document by document and may run on the shards.
const SHARD_STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$unwind",
    "$replaceRoot",
    "$replaceWith",
];

/// Stages the router cannot run over merged documents (they read other collections or
/// write).
const UNMERGEABLE: &[&str] = &[
    "$lookup",
    "$graphLookup",
    "$unionWith",
    "$out",
    "$merge",
    "$changeStream",
    "$collStats",
    "$indexStats",
    "$sample",
];

/// `aggregate` on a collection.
pub(crate) async fn aggregate(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let pipeline: Vec<Document> = req
        .body
        .get_array("pipeline")
        .map(|a| a.iter().filter_map(|s| s.as_document().cloned()).collect())
        .unwrap_or_default();
    if pipeline
        .first()
        .is_some_and(|s| s.contains_key("$changeStream"))
    {
        return super::change_stream::aggregate(r, ctx, req).await;
    }
    let first_stage = pipeline
        .first()
        .and_then(|s| s.keys().next())
        .map(String::as_str);
    if matches!(first_stage, Some("$listLocalSessions" | "$documents"))
        && !matches!(req.target(), Some(Bson::String(_)))
    {
        // Stages a router runs itself: its own session cache, literal documents.
        return crate::commands::cursor::aggregate(ctx, req).await;
    }
    let writes = pipeline
        .last()
        .is_some_and(|s| s.contains_key("$out") || s.contains_key("$merge"));
    let coll = match req.target() {
        Some(Bson::String(s)) => s.clone(),
        // `aggregate: 1`: database-level stages, run by the primary shard.
        _ => {
            let primary = meta::placement(r, ctx, &req.db, "$cmd.aggregate")
                .await?
                .primary()
                .map(str::to_string);
            return match primary {
                Some(p) => single(r, ctx, &p, &req, None).await,
                None => Ok(cursor_reply(
                    &format!("{}.$cmd.aggregate", req.db),
                    0,
                    vec![],
                    true,
                )),
            };
        }
    };
    let ns = format!("{}.{coll}", req.db);
    let first_match = pipeline
        .first()
        .and_then(|s| s.get_document("$match").ok().cloned())
        .unwrap_or_default();
    if writes {
        // $out / $merge write: the database must exist (its primary runs the stage).
        super::write::write_placement(r, ctx, &req.db, &coll).await?;
    }
    let Some((shards, sharded)) = read_targets(r, ctx, &req.db, &coll, &first_match).await? else {
        return Ok(cursor_reply(&ns, 0, Vec::new(), true));
    };
    if shards.len() <= 1 {
        let Some(shard) = shards.first() else {
            return Ok(cursor_reply(&ns, 0, Vec::new(), true));
        };
        return single(r, ctx, shard, &req, sharded.as_deref()).await;
    }
    let split = pipeline
        .iter()
        .position(|s| {
            !s.keys()
                .next()
                .is_some_and(|k| SHARD_STAGES.contains(&k.as_str()))
        })
        .unwrap_or(pipeline.len());
    let (shard_part, merge_part) = pipeline.split_at(split);
    if let Some(stage) = merge_part
        .iter()
        .filter_map(|s| s.keys().next())
        .find(|k| UNMERGEABLE.contains(&k.as_str()))
    {
        return Err(CommandError::from_code(
            ErrorCode::CommandNotSupported,
            format!("{stage} over a collection spread across several shards is not supported by this simulator's router"),
        ));
    }
    let mut body = body_for(r, &req, sharded.as_deref());
    body.insert("pipeline", shard_part.to_vec());
    body.insert("cursor", doc! {});
    let docs = gather(r, ctx, &req.db, &shards, body).await?;
    let docs = run_merge(ctx, &req, merge_part, docs)?;
    let batch_size = req
        .body
        .get_document("cursor")
        .ok()
        .and_then(|c| opt_i64(c, "batchSize"))
        .map(|n| n.max(0) as usize);
    Ok(serve(r, ctx, &ns, docs, batch_size, false))
}

/// Runs the merging half of a pipeline over the gathered documents.
fn run_merge(
    ctx: &Ctx<'_>,
    req: &Request,
    stages: &[Document],
    docs: Vec<Document>,
) -> CmdResult<Vec<Document>> {
    if stages.is_empty() {
        return Ok(docs);
    }
    let lets = req.body.get_document("let").ok();
    let mut p = crate::query::pipeline::Pipeline::parse_with_let(stages, lets)?;
    p.set_collation(crate::query::compare::collation_of(
        req.body.get("collation"),
    )?);
    let vars = crate::query::matcher::eval_lets(lets)?;
    let now = ctx.shared.engine.lock().cluster_time();
    p.run_with_vars(docs, bson::DateTime::now(), Some(now), &vars)
}
