//! Chunk administration: `split`, `moveChunk`, `removeShard` (reference
//! sharded-clusters.md §2.4, §2.6, §4.2).
//!
//! `moveChunk` follows the migration protocol's observable steps (SRV
//! `migration_source_manager.cpp`, `migration_destination_manager.cpp`,
//! `migration_util.cpp`, `range_deletion_util.cpp`): the recipient gets the collection (same
//! UUID, `fromMigrate` create/createIndexes) and the range's documents as `fromMigrate:
//! true` inserts while it does not yet own the range; if it owned no chunk of the collection
//! the donor logs the `migrateChunkToNewShard` no-op; the commit moves the chunk in
//! `config.chunks` (major version bumped, `history` prepended); the donor keeps the range's
//! documents as orphans, hidden from routed commands, until its range deleter removes them
//! with `fromMigrate: true` deletes — before the reply with `_waitForDelete`, after
//! `orphanCleanupDelaySecs` otherwise.

use std::time::Instant;

use bson::{doc, oid::ObjectId, Bson, Document, Timestamp};

use super::admin::{changelog, chunk_doc, local_collection, require_admin, split_ns};
use super::meta::{self, version, Chunk, Sharded};
use super::shard_key::cmp_keys;
use super::Router;
use crate::commands::{Ctx, Request};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::ServerVersion;

/// Documents per clone batch sent to the recipient.
const CLONE_BATCH: usize = 1000;

fn ns_target(req: &Request) -> CmdResult<String> {
    match req.target() {
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified for {}",
            req.name
        ))),
    }
}

async fn load(r: &Router, ctx: &mut Ctx<'_>, ns: &str) -> CmdResult<Sharded> {
    meta::sharded(r, ctx, ns).await?.ok_or_else(|| {
        CommandError::from_code(
            ErrorCode::NamespaceNotSharded,
            format!("{ns} is not sharded"),
        )
    })
}

/// The chunk a `find` (shard-key equality, hashed when the key is) or `bounds` names.
fn chunk_named(coll: &Sharded, req: &Request) -> CmdResult<Chunk> {
    if let Ok(find) = req.body.get_document("find") {
        let key = coll.key.key_of_query(find).ok_or_else(|| {
            CommandError::from_code(
                ErrorCode::ShardKeyNotFound,
                format!("no shard key found in chunk query {find}"),
            )
        })?;
        return coll
            .chunk_for(&key)
            .cloned()
            .ok_or_else(|| CommandError::bad_value("no chunk found"));
    }
    if let Ok(bounds) = req.body.get_array("bounds") {
        if let [Bson::Document(min), Bson::Document(max)] = bounds.as_slice() {
            if let Some(c) = coll
                .chunks
                .iter()
                .find(|c| cmp_keys(&c.min, min).is_eq() && cmp_keys(&c.max, max).is_eq())
            {
                return Ok(c.clone());
            }
            return Err(CommandError::bad_value(format!(
                "no chunk found with the shard key bounds [{min}, {max})"
            )));
        }
    }
    Err(CommandError::from_code(
        ErrorCode::InvalidOptions,
        "need to specify find or bounds",
    ))
}

/// `split: ns, middle | find | bounds` (SRV `cluster_split_cmd.cpp`,
/// `ShardingCatalogManager::commitChunkSplit`: the lower half keeps the chunk, both halves
/// get the next minor versions of the collection's major).
pub(crate) async fn split(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let ns = ns_target(&req)?;
    let coll = load(r, ctx, &ns).await?;
    let (chunk, middle) = match req.body.get_document("middle") {
        Ok(m) => {
            let key = coll.key.key_of_doc(m);
            let Some(c) = coll.chunk_for(&key).cloned() else {
                return Err(CommandError::bad_value("no chunk found"));
            };
            (c, key)
        }
        Err(_) => {
            let c = chunk_named(&coll, &req)?;
            let mid = median_key(r, ctx, &coll, &c).await?;
            (c, mid)
        }
    };
    if cmp_keys(&middle, &chunk.min).is_le() || cmp_keys(&middle, &chunk.max).is_ge() {
        // SRV split_chunk.cpp
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            format!(
                "split key {middle} must be strictly inside the chunk [{}, {})",
                chunk.min, chunk.max
            ),
        ));
    }
    let top = coll.max_version();
    let lower_version = version(top.time, top.increment + 1);
    let upper_version = version(top.time, top.increment + 2);
    meta::config_write(
        r,
        ctx,
        doc! {"update": "chunks", "updates": [{
            "q": {"_id": chunk.id.clone()},
            "u": {"$set": {"max": middle.clone(), "lastmod": lower_version}},
        }]},
    )
    .await?;
    let mut upper = chunk.doc.clone();
    upper.insert("min", middle.clone());
    upper.insert("lastmod", upper_version);
    upper.insert(
        "_id",
        match r.version {
            ServerVersion::V4_4 => Bson::String(chunk_id_44(&ns, &middle)),
            _ => Bson::ObjectId(ObjectId::new()),
        },
    );
    meta::config_write(r, ctx, doc! {"insert": "chunks", "documents": [upper]}).await?;
    changelog(r, ctx, "split", &ns, doc! {"before": {"min": chunk.min, "max": chunk.max}, "left": {"max": middle.clone()}, "right": {"min": middle}}).await?;
    Ok(Document::new())
}

fn chunk_id_44(ns: &str, min: &Document) -> String {
    let c = chunk_doc(
        ServerVersion::V4_4,
        ns,
        &Bson::Null,
        min,
        min,
        "",
        version(1, 0),
        Timestamp {
            time: 0,
            increment: 0,
        },
        ObjectId::new(),
    );
    c.get_str("_id").unwrap_or_default().to_string()
}

/// The median shard-key value of a chunk's documents (SRV `splitVector` at the midpoint).
async fn median_key(
    r: &Router,
    ctx: &mut Ctx<'_>,
    coll: &Sharded,
    chunk: &Chunk,
) -> CmdResult<Document> {
    let (db, name) = split_ns(&coll.ns)?;
    let body = coll.versioned(r.version, doc! {"find": name, "batchSize": i32::MAX});
    let reply = r.forward(ctx, &chunk.shard, db, body).await?;
    let docs = super::read::drain(r, ctx, &chunk.shard, db, reply, None).await?;
    let mut keys: Vec<Document> = docs
        .iter()
        .map(|d| coll.key.key_of_doc(d))
        .filter(|k| cmp_keys(k, &chunk.min).is_ge() && cmp_keys(k, &chunk.max).is_lt())
        .collect();
    keys.sort_by(cmp_keys);
    keys.dedup_by(|a, b| cmp_keys(a, b).is_eq());
    if keys.len() < 2 {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "cannot find median in empty chunk, possibly because of invalid chunk bounds",
        ));
    }
    Ok(keys[keys.len() / 2].clone())
}

/// `moveChunk: ns, find | bounds, to, _waitForDelete?` (SRV `cluster_move_chunk_cmd.cpp`:
/// reply `{millis}`).
pub(crate) async fn move_chunk(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let started = Instant::now();
    let ns = ns_target(&req)?;
    let coll = load(r, ctx, &ns).await?;
    let Ok(to) = req.body.get_str("to") else {
        return Err(CommandError::from_code(
            ErrorCode::IdlFailedToParse,
            "BSON field 'moveChunk.to' is missing but a required field",
        ));
    };
    let to = to.to_string();
    let shards = meta::shards(r, ctx).await?;
    if !shards.iter().any(|s| s.id == to) {
        return Err(CommandError::from_code(
            ErrorCode::ShardNotFound,
            format!("Could not find shard {to}"),
        ));
    }
    let chunk = chunk_named(&coll, &req)?;
    if chunk.shard != to {
        let wait = req.body.get_bool("_waitForDelete").unwrap_or(false);
        migrate(r, ctx, &coll, &chunk, &to, wait).await?;
    }
    Ok(doc! {"millis": started.elapsed().as_millis() as i64})
}

/// Moves one chunk from its owner to `to`.
pub(crate) async fn migrate(
    r: &Router,
    ctx: &mut Ctx<'_>,
    coll: &Sharded,
    chunk: &Chunk,
    to: &str,
    wait_for_delete: bool,
) -> CmdResult<()> {
    let (db, name) = split_ns(&coll.ns)?;
    let from = chunk.shard.clone();
    changelog(
        r,
        ctx,
        "moveChunk.start",
        &coll.ns,
        doc! {"min": chunk.min.clone(), "max": chunk.max.clone(), "from": from.clone(), "to": to},
    )
    .await?;
    let donor = r.shard(ctx, &from).await?;
    let recipient = r.shard(ctx, to).await?;
    let Some(local) = local_collection(r, ctx, &donor, db, name, false).await? else {
        return Err(CommandError::namespace_not_found(format!(
            "{} not found on {from}",
            coll.ns
        )));
    };
    super::admin::create_participant(r, ctx, &recipient, db, name, &local, &coll.key.pattern)
        .await?;
    let range =
        doc! {"_mongosimRangeOwnership": name, "min": chunk.min.clone(), "max": chunk.max.clone()};
    let mut pending = range.clone();
    pending.insert("owned", false);
    r.send(ctx, &recipient, db, pending).await?;
    let cloned = clone_range(r, ctx, coll, chunk, &donor, &recipient).await?;
    if !coll.chunks.iter().any(|c| c.shard == to) {
        let o2 = match r.version {
            ServerVersion::V4_4 => {
                doc! {"type": "migrateChunkToNewShard", "from": from.clone(), "to": to}
            }
            _ => {
                doc! {"migrateChunkToNewShard": coll.ns.clone(), "fromShardId": from.clone(), "toShardId": to}
            }
        };
        let noop = doc! {
            "_mongosimNoop": coll.ns.clone(), "ui": local.uuid.clone(),
            "o": {"msg": format!("Migrating chunk from shard {from} to shard {to} with no chunks for this collection")},
            "o2": o2,
        };
        r.send(ctx, &donor, db, noop).await?;
    }
    commit(r, ctx, coll, chunk, to).await?;
    let mut owned = range.clone();
    owned.insert("owned", true);
    r.send(ctx, &recipient, db, owned).await?;
    let mut orphaned = range;
    orphaned.insert("owned", false);
    r.send(ctx, &donor, db, orphaned.clone()).await?;
    catch_up(r, ctx, coll, chunk, &donor, &recipient, cloned).await?;
    let delay = if wait_for_delete {
        0
    } else {
        r.orphan_cleanup_delay.as_millis().max(1) as i64
    };
    orphaned.insert("cleanupAfterMs", delay);
    r.send(ctx, &donor, db, orphaned).await?;
    changelog(
        r,
        ctx,
        "moveChunk.commit",
        &coll.ns,
        doc! {"min": chunk.min.clone(), "max": chunk.max.clone(), "from": from, "to": to},
    )
    .await?;
    Ok(())
}

/// The donor's documents of the chunk's range (all of them, orphans included).
async fn range_docs(
    r: &Router,
    ctx: &mut Ctx<'_>,
    coll: &Sharded,
    chunk: &Chunk,
    donor: &super::client::Remote,
) -> CmdResult<Vec<Document>> {
    let (db, name) = split_ns(&coll.ns)?;
    let reply = r
        .send(ctx, donor, db, doc! {"find": name, "batchSize": i32::MAX})
        .await?;
    let docs = super::read::drain(r, ctx, &chunk.shard, db, reply, None).await?;
    let range = [(chunk.min.clone(), chunk.max.clone())];
    Ok(docs
        .into_iter()
        .filter(|d| crate::engine::catalog::in_ranges(&range, &coll.key.key_of_doc(d)))
        .collect())
}

/// Copies the range's documents from the donor to the recipient (the initial clone);
/// returns what it copied.
async fn clone_range(
    r: &Router,
    ctx: &mut Ctx<'_>,
    coll: &Sharded,
    chunk: &Chunk,
    donor: &super::client::Remote,
    recipient: &super::client::Remote,
) -> CmdResult<Vec<Document>> {
    let (db, name) = split_ns(&coll.ns)?;
    let moving = range_docs(r, ctx, coll, chunk, donor).await?;
    let docs: Vec<Bson> = moving.iter().cloned().map(Bson::Document).collect();
    for batch in docs.chunks(CLONE_BATCH) {
        r.send(
            ctx,
            recipient,
            db,
            doc! {"_mongosimMigrate": name, "insert": batch.to_vec()},
        )
        .await?;
    }
    Ok(moving)
}

/// The catch-up (SRV `_transferMods`): writes that reached the donor's range during the
/// clone are replayed on the recipient once the donor no longer owns the range — changed
/// or new documents re-sent as upserts, vanished ones deleted — all `fromMigrate: true`.
async fn catch_up(
    r: &Router,
    ctx: &mut Ctx<'_>,
    coll: &Sharded,
    chunk: &Chunk,
    donor: &super::client::Remote,
    recipient: &super::client::Remote,
    cloned: Vec<Document>,
) -> CmdResult<()> {
    let (db, name) = split_ns(&coll.ns)?;
    let now = range_docs(r, ctx, coll, chunk, donor).await?;
    let id_of = |d: &Document| d.get("_id").cloned().unwrap_or(Bson::Null);
    let upserts: Vec<Bson> = now
        .iter()
        .filter(|d| !cloned.contains(d))
        .cloned()
        .map(Bson::Document)
        .collect();
    let now_ids: Vec<Bson> = now.iter().map(id_of).collect();
    let deletes: Vec<Bson> = cloned
        .iter()
        .map(id_of)
        .filter(|id| !now_ids.contains(id))
        .collect();
    if upserts.is_empty() && deletes.is_empty() {
        return Ok(());
    }
    r.send(
        ctx,
        recipient,
        db,
        doc! {"_mongosimMigrate": name, "upsert": upserts, "delete": deletes},
    )
    .await?;
    Ok(())
}

/// Commits the move in `config.chunks` (SRV `commitChunkMigration`): owner changed, the
/// collection's major version bumped, the new owner first in `history`.
async fn commit(
    r: &Router,
    ctx: &mut Ctx<'_>,
    coll: &Sharded,
    chunk: &Chunk,
    to: &str,
) -> CmdResult<()> {
    let now = ctx.shared.engine.lock().clock.tick();
    let top = coll.max_version();
    let mut history = vec![Bson::Document(doc! {"validAfter": now, "shard": to})];
    if let Ok(old) = chunk.doc.get_array("history") {
        history.extend(old.iter().cloned());
    }
    let mut set = doc! {"shard": to, "lastmod": version(top.time + 1, 0), "history": history};
    if r.version != ServerVersion::V4_4 {
        set.insert("onCurrentShardSince", now);
    }
    meta::config_write(
        r,
        ctx,
        doc! {"update": "chunks", "updates": [{"q": {"_id": chunk.id.clone()}, "u": {"$set": set}}]},
    )
    .await?;
    Ok(())
}

/// `removeShard` (SRV `ShardingCatalogManager::removeShard`): the first call marks the shard
/// draining ("started"); later calls move its chunks away (the work a balancer round would
/// do) and report "ongoing" while it is still some database's primary, "completed" once it
/// owns nothing and its `config.shards` entry is gone.
pub(crate) async fn remove_shard(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    require_admin(&req)?;
    let Some(Bson::String(id)) = req.target().cloned() else {
        return Err(CommandError::type_mismatch(
            "removeShard takes a shard name",
        ));
    };
    let shards = meta::shards(r, ctx).await?;
    let Some(shard) = shards.iter().find(|s| s.id == id) else {
        return Err(CommandError::from_code(
            ErrorCode::ShardNotFound,
            format!("Shard {id} not found"),
        ));
    };
    let others: Vec<String> = shards
        .iter()
        .filter(|s| s.id != id && !s.draining)
        .map(|s| s.id.clone())
        .collect();
    if others.is_empty() {
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            "Operation not allowed because it would remove the last shard",
        ));
    }
    let dbs: Vec<Bson> = meta::find_all(
        r,
        ctx,
        "databases",
        doc! {"primary": id.clone()},
        doc! {"_id": 1},
    )
    .await?
    .into_iter()
    .filter_map(|d| d.get("_id").cloned())
    .collect();
    if !shard.draining {
        meta::config_write(
            r,
            ctx,
            doc! {"update": "shards", "updates": [{"q": {"_id": id.clone()}, "u": {"$set": {"draining": true}}}]},
        )
        .await?;
        let mut reply =
            doc! {"msg": "draining started successfully", "state": "started", "shard": id.clone()};
        if !dbs.is_empty() {
            reply.insert("note", "you need to call movePrimary for these databases");
        }
        reply.insert("dbsToMove", dbs);
        return Ok(reply);
    }
    let moved = drain_chunks(r, ctx, &id, &others).await?;
    if !dbs.is_empty() {
        return Ok(doc! {
            "msg": "draining ongoing", "state": "ongoing",
            "remaining": {"chunks": 0i64, "dbs": dbs.len() as i64, "jumboChunks": 0i64},
            "note": "you need to call movePrimary for these databases",
            "dbsToMove": dbs, "movedChunks": moved as i64,
        });
    }
    meta::config_write(
        r,
        ctx,
        doc! {"delete": "shards", "deletes": [{"q": {"_id": id.clone()}, "limit": 1}]},
    )
    .await?;
    changelog(r, ctx, "removeShard", "", doc! {"shard": id.clone()}).await?;
    Ok(doc! {"msg": "removeshard completed successfully", "state": "completed", "shard": id})
}

/// Moves every chunk off `id`, round-robin over `to`; returns how many moved.
async fn drain_chunks(r: &Router, ctx: &mut Ctx<'_>, id: &str, to: &[String]) -> CmdResult<usize> {
    let colls = meta::find_all(r, ctx, "collections", doc! {}, doc! {"_id": 1}).await?;
    let mut moved = 0;
    for c in colls {
        let ns = c.get_str("_id").unwrap_or_default().to_string();
        loop {
            let Some(coll) = meta::sharded(r, ctx, &ns).await? else {
                break;
            };
            let Some(chunk) = coll.chunks.iter().find(|c| c.shard == id).cloned() else {
                break;
            };
            let target = &to[moved % to.len()];
            migrate(r, ctx, &coll, &chunk, target, true).await?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// `movePrimary: "db", to` (SRV `move_primary_coordinator.cpp`, reference §4.3): the
/// database's unsharded collections are copied to the new primary (same UUID and indexes,
/// every entry `fromMigrate: true`), the old primary logs the `movePrimary` no-op and drops
/// its copies hidden from change streams, and `config.databases` names the new primary.
pub(crate) async fn move_primary(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    require_admin(&req)?;
    let db = ns_target(&req)?;
    let Ok(to) = req.body.get_str("to").map(str::to_string) else {
        return Err(CommandError::from_code(
            ErrorCode::IdlFailedToParse,
            "BSON field 'movePrimary.to' is missing but a required field",
        ));
    };
    let Some(entry) = meta::database(r, ctx, &db).await? else {
        return Err(CommandError::namespace_not_found(format!(
            "Database {db} not found"
        )));
    };
    let from = entry.get_str("primary").unwrap_or_default().to_string();
    if !meta::shards(r, ctx).await?.iter().any(|s| s.id == to) {
        return Err(CommandError::from_code(
            ErrorCode::ShardNotFound,
            format!("Could not find shard {to}"),
        ));
    }
    if from == to {
        return Ok(Document::new());
    }
    let donor = r.shard(ctx, &from).await?;
    let recipient = r.shard(ctx, &to).await?;
    let moved = copy_unsharded(r, ctx, &db, (&from, &donor), &recipient).await?;
    let last_mod = entry
        .get_document("version")
        .ok()
        .and_then(|v| v.get_i32("lastMod").ok())
        .unwrap_or(1);
    meta::config_write(
        r,
        ctx,
        doc! {"update": "databases", "updates": [{
            "q": {"_id": db.clone()},
            "u": {"$set": {"primary": to.clone(), "version.lastMod": last_mod + 1}},
        }]},
    )
    .await?;
    let noop = doc! {
        "_mongosimNoop": db.clone(),
        "o": {"msg": {"movePrimary": db.clone()}},
        "o2": {"movePrimary": db.clone(), "from": from.clone(), "to": to.clone()},
    };
    r.send(ctx, &donor, &db, noop).await?;
    for coll in moved {
        let body = doc! {"_shardsvrDropCollectionParticipant": coll, "fromMigrate": true};
        r.send(ctx, &donor, &db, body).await?;
    }
    changelog(
        r,
        ctx,
        "movePrimary.commit",
        &db,
        doc! {"from": from, "to": to},
    )
    .await?;
    Ok(Document::new())
}

/// Copies every unsharded collection of `db` from `donor` to `recipient`; returns their
/// names.
async fn copy_unsharded(
    r: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    (from, donor): (&str, &super::client::Remote),
    recipient: &super::client::Remote,
) -> CmdResult<Vec<String>> {
    let listed = super::admin::first_batch(
        r.send(
            ctx,
            donor,
            db,
            doc! {"listCollections": 1, "filter": {"type": "collection"}},
        )
        .await?,
    );
    let mut moved = Vec::new();
    for info in listed.iter().filter_map(Bson::as_document) {
        let name = info.get_str("name").unwrap_or_default().to_string();
        if name.starts_with("system.")
            || meta::sharded(r, ctx, &format!("{db}.{name}"))
                .await?
                .is_some()
        {
            continue;
        }
        let Some(local) = local_collection(r, ctx, donor, db, &name, false).await? else {
            continue;
        };
        r.send(
            ctx,
            recipient,
            db,
            doc! {
                "_shardsvrCreateCollectionParticipant": name.clone(),
                "collectionUUID": local.uuid.clone(),
                "options": local.options.clone(),
                "indexes": local.indexes.clone(),
                "idIndex": crate::engine::catalog::id_index_spec(),
            },
        )
        .await?;
        let reply = r
            .send(
                ctx,
                donor,
                db,
                doc! {"find": name.clone(), "batchSize": i32::MAX},
            )
            .await?;
        let docs: Vec<Bson> = super::read::drain(r, ctx, from, db, reply, None)
            .await?
            .into_iter()
            .map(Bson::Document)
            .collect();
        for batch in docs.chunks(CLONE_BATCH) {
            let body = doc! {"_mongosimMigrate": name.clone(), "insert": batch.to_vec()};
            r.send(ctx, recipient, db, body).await?;
        }
        moved.push(name);
    }
    Ok(moved)
}
