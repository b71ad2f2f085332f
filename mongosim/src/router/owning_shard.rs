//! Single-document updates that change a document's shard key so that it belongs to another
//! shard (SRV `WouldChangeOwningShard`, `documents_update_shard_key` handling in
//! `cluster_write_cmd.cpp`; DOCS "Change a Document's Shard Key Value"; reference
//! sharded-clusters.md §3.1).
//!
//! The router computes the updated document from the current one; when its shard key falls
//! in another shard's chunk, the update becomes a delete on the old shard and an insert on the
//! new one — allowed only inside a transaction or as a retryable write, otherwise 20
//! IllegalOperation "Must run update to shard key field in a multi-statement transaction or
//! with retryWrites: true.". (A real router runs the retryable case as an internal
//! transaction; here the two writes carry the client's session and statement id.)

use bson::{doc, Bson, DateTime, Document};

use super::meta::Sharded;
use super::{admin, forwardable, Router};
use crate::commands::{Ctx, Request};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::query::update::{Update, UpdateCtx};

/// Whether update `u` may touch a shard-key field (replacement documents and pipelines may;
/// modifiers when a path is a key field, its prefix or inside it).
fn may_change_key(coll: &Sharded, u: &Bson) -> bool {
    let Bson::Document(u) = u else {
        return true;
    };
    if !u.keys().any(|k| k.starts_with('$')) {
        return true;
    }
    u.values().filter_map(Bson::as_document).any(|paths| {
        paths.keys().any(|p| {
            coll.key.field_names().any(|f| {
                f == p || f.starts_with(&format!("{p}.")) || p.starts_with(&format!("{f}."))
            })
        })
    })
}

/// Runs a one-statement `update` whose document moves to another shard; `None` when the
/// statement is not such an update (the caller routes it as usual).
pub(crate) async fn update_moving_document(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: &Request,
    coll: &Sharded,
    stmt: &Document,
    shard: &str,
) -> CmdResult<Option<Document>> {
    let u = stmt.get("u").cloned().unwrap_or(Bson::Null);
    if stmt.get_bool("multi").unwrap_or(false) || !may_change_key(coll, &u) {
        return Ok(None);
    }
    let q = stmt.get_document("q").cloned().unwrap_or_default();
    let (_, name) = admin::split_ns(&coll.ns)?;
    let find = coll.versioned(
        r.version,
        super::txn::in_client_transaction(
            ctx,
            doc! {"find": name, "filter": q.clone(), "limit": 1i64, "singleBatch": true},
        ),
    );
    let reply = r.forward(ctx, shard, &req.db, find).await?;
    let Some(pre) = admin::first_batch(reply)
        .into_iter()
        .find_map(|d| d.as_document().cloned())
    else {
        return Ok(None);
    };
    let filters: Option<Vec<Document>> = stmt
        .get_array("arrayFilters")
        .ok()
        .map(|a| a.iter().filter_map(|f| f.as_document().cloned()).collect());
    let update = Update::parse(&u, filters.as_deref())?;
    let mut uctx = UpdateCtx::new(DateTime::now());
    uctx.query = Some(&q);
    let post = update.apply(&pre, &uctx)?.new_doc;
    let Some(new_owner) = coll
        .chunk_for(&coll.key.key_of_doc(&post))
        .map(|c| c.shard.clone())
    else {
        return Ok(None);
    };
    if new_owner == shard {
        return Ok(None);
    }
    if ctx.txn_number.is_none() {
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "Must run update to shard key field in a multi-statement transaction or with retryWrites: true.",
        ));
    }
    move_document(r, ctx, req, coll, (shard, &pre), (&new_owner, post)).await?;
    Ok(Some(doc! {"n": 1, "nModified": 1}))
}

/// The delete on the old owner and the insert on the new one.
async fn move_document(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: &Request,
    coll: &Sharded,
    (from, pre): (&str, &Document),
    (to, post): (&str, Document),
) -> CmdResult<()> {
    let (_, name) = admin::split_ns(&coll.ns)?;
    let mut base = forwardable(&req.body);
    for k in [
        req.name.as_str(),
        "updates",
        "ordered",
        "bypassDocumentValidation",
    ] {
        base.remove(k);
    }
    let retryable = !super::txn::in_transaction(ctx);
    let mut delete = doc! {
        "delete": name,
        "deletes": [{"q": {"_id": pre.get("_id").cloned().unwrap_or(Bson::Null)}, "limit": 1}],
    };
    let mut insert = doc! {"insert": name, "documents": [post]};
    for (k, v) in &base {
        delete.insert(k.clone(), v.clone());
        insert.insert(k.clone(), v.clone());
    }
    if retryable {
        delete.insert("stmtIds", vec![0]);
        insert.insert("stmtIds", vec![0]);
    }
    let delete = coll.versioned(r.version, delete);
    let insert = coll.versioned(r.version, insert);
    r.forward(ctx, from, &req.db, delete).await?;
    r.txns.wrote(ctx, from);
    let reply = r.forward(ctx, to, &req.db, insert).await?;
    r.txns.wrote(ctx, to);
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(Bson::Document(e)) = errors.first() {
            return Err(CommandError::from_number(
                e.get_i32("code").unwrap_or(8),
                e.get_str("errmsg").unwrap_or_default(),
            ));
        }
    }
    Ok(())
}
