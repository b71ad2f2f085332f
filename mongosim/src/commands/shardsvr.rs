//! The commands a router sends to a shard (`--shardsvr` only): the simulator's stand-ins for
//! the server's internal sharding protocol. None is reachable through a router, and a
//! replica set that is not a shard server does not know them (59 CommandNotFound).
//!
//! - `_shardsvrCreateCollectionParticipant` (SRV
//!   `src/mongo/db/s/shardsvr_create_collection_participant_command.cpp`, same fields:
//!   `collectionUUID`, `options`, `indexes`, `idIndex`): creates the collection with the
//!   sharded collection's UUID and indexes, its `create`/`createIndexes` entries marked
//!   `fromMigrate: true` as `MigrationDestinationManager::cloneCollectionIndexesAndOptions`
//!   does. The simulator adds `shardKey`: the shard's filtering metadata (a real shard
//!   refreshes it from the config server), which puts the shard-key fields into the
//!   document keys this shard logs.
//! - `_shardsvrDropCollectionParticipant` / `_shardsvrDropDatabaseParticipant` (SRV
//!   `shardsvr_drop_collection_participant_command.cpp`,
//!   `shardsvr_drop_database_participant_command.cpp`, field `fromMigrate`): the local drop,
//!   its entries `fromMigrate: true` on every shard but the one whose drop users see
//!   (reference §4.4).
//! - `_mongosimMigrate`: documents copied in by a chunk migration (inserted) or removed by
//!   the range deleter (deleted), every entry `fromMigrate: true` (SRV
//!   `migration_destination_manager.cpp` clone inserts, `range_deletion_util.cpp`
//!   `deleteNextBatch`; reference sharded-clusters.md §4.2).
//! - `_mongosimRangeOwnership: <coll>, min, max, owned, cleanupAfterMs?`: the shard stops
//!   (`owned: false`) or starts (`owned: true`) owning a shard-key range. Documents of a
//!   range it holds without owning it are orphans, hidden from the router's versioned
//!   commands; with `cleanupAfterMs` the shard's range deleter removes them after that delay
//!   (0: before replying, as `_waitForDelete`), each delete `fromMigrate: true` (SRV
//!   `range_deleter_service.cpp`, `range_deletion_util.cpp`; the delay is
//!   `orphanCleanupDelaySecs`, 900 s by default).
//! - `_mongosimNoop`: a sharding no-op entry (`op: "n"` with `ns`, `ui`, `o`, `o2`), e.g.
//!   `migrateChunkToNewShard` on a donor and `shardCollection` on the primary shard (SRV
//!   `migration_util.cpp` `notifyChangeStreamsOnRecipientFirstChunk`,
//!   `notifyChangeStreamsOnShardCollection`; reference §4.3).

use bson::{doc, Bson, Document, Uuid};

use super::{Ctx, Request};
use crate::engine::PendingOp;
use crate::error::{CmdResult, CommandError, ErrorCode};

/// The internal commands (only on shard servers).
pub(crate) const COMMANDS: &[&str] = &[
    "_mongosimMigrate",
    "_mongosimNoop",
    "_mongosimRangeOwnership",
    "_shardsvrCreateCollectionParticipant",
    "_shardsvrDropCollectionParticipant",
    "_shardsvrDropDatabaseParticipant",
];

/// Runs one of [`COMMANDS`].
pub(crate) async fn run(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    match req.name.as_str() {
        "_mongosimMigrate" => migrate(ctx, req).await,
        "_mongosimNoop" => noop(ctx, req).await,
        "_mongosimRangeOwnership" => range_ownership(ctx, req).await,
        "_shardsvrCreateCollectionParticipant" => create_collection_participant(ctx, req).await,
        "_shardsvrDropCollectionParticipant" | "_shardsvrDropDatabaseParticipant" => {
            drop_participant(ctx, req).await
        }
        other => Err(CommandError::command_not_found(other)),
    }
}

fn coll_name(req: &Request) -> CmdResult<String> {
    match req.target() {
        Some(Bson::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified '{}.'",
            req.db
        ))),
    }
}

fn uuid_arg(body: &Document, field: &str) -> CmdResult<Uuid> {
    match body.get(field) {
        Some(Bson::Binary(b)) if b.subtype == bson::spec::BinarySubtype::Uuid => {
            Uuid::from_bytes_slice(&b.bytes)
        }
        _ => Err(CommandError::from_code(
            ErrorCode::IdlNotUuid,
            format!("BSON field '{field}' is not a UUID"),
        )),
    }
}

trait UuidFromSlice {
    fn from_bytes_slice(b: &[u8]) -> CmdResult<Uuid>;
}

impl UuidFromSlice for Uuid {
    fn from_bytes_slice(b: &[u8]) -> CmdResult<Uuid> {
        let arr: [u8; 16] = b
            .try_into()
            .map_err(|_| CommandError::bad_value("a UUID has 16 bytes"))?;
        Ok(Uuid::from_bytes(arr))
    }
}

fn from_migrate(mut op: Document) -> PendingOp {
    op.insert("fromMigrate", true);
    op.into()
}

/// `_shardsvrCreateCollectionParticipant`.
pub(crate) async fn create_collection_participant(
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let coll = coll_name(&req)?;
    let db = req.db.as_str();
    let uuid = uuid_arg(&req.body, "collectionUUID")?;
    let options = req
        .body
        .get_document("options")
        .cloned()
        .unwrap_or_default();
    let indexes: Vec<Document> = match req.body.get("indexes") {
        Some(Bson::Array(a)) => a
            .iter()
            .filter_map(|i| i.as_document().cloned())
            .filter(|i| i.get_str("name") != Ok("_id_"))
            .collect(),
        _ => Vec::new(),
    };
    let shard_key = req.body.get_document("shardKey").ok().cloned();
    let mut engine = ctx.shared.engine.lock();
    let mut ops = Vec::new();
    match engine.catalog.coll(db, &coll) {
        Some(c) if c.uuid != uuid => {
            // SRV shardsvr_create_collection_participant_command.cpp: the collection must be
            // the sharded collection's incarnation.
            return Err(CommandError::from_code(
                ErrorCode::NamespaceExists,
                format!(
                    "Collection {db}.{coll} exists with UUID {} which differs from the sharded collection's UUID {uuid}",
                    c.uuid
                ),
            ));
        }
        Some(_) => {}
        None => {
            ops.extend(
                engine
                    .catalog
                    .create_collection_with_uuid(db, &coll, &options, uuid)?,
            );
            if !indexes.is_empty() {
                ops.extend(engine.catalog.create_indexes(db, &coll, indexes)?);
            }
        }
    }
    if let Some(c) = engine.catalog.coll_mut(db, &coll) {
        c.shard_key = shard_key;
    }
    engine.log(ops.into_iter().map(from_migrate).collect(), None);
    Ok(Document::new())
}

/// `_mongosimMigrate: <coll>, insert: [docs], upsert: [docs], delete: [_id values]`: the
/// clone's inserts, and the catch-up's re-sent documents (replaced, or inserted when absent;
/// SRV `Helpers::upsert(…, fromMigrate)`) and deletes.
pub(crate) async fn migrate(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req)?;
    let db = req.db.as_str();
    let docs = array_of(&req.body, "insert");
    let upserts = array_of(&req.body, "upsert");
    let ids = array_of(&req.body, "delete");
    let mut engine = ctx.shared.engine.lock();
    let mut ops = Vec::new();
    for d in docs {
        let Bson::Document(d) = d else { continue };
        let (_, op) = engine.catalog.insert_doc(db, &coll, d)?;
        ops.push(op);
    }
    for d in upserts {
        let Bson::Document(d) = d else { continue };
        let id = d.get("_id").cloned().unwrap_or(Bson::Null);
        let rid = engine
            .catalog
            .coll(db, &coll)
            .and_then(|c| c.rid_by_id(&id));
        let op = match rid {
            Some(rid) => engine.catalog.update_doc(db, &coll, rid, d.clone(), d)?,
            None => engine.catalog.insert_doc(db, &coll, d)?.1,
        };
        ops.push(op);
    }
    let mut deleted = 0i32;
    for id in ids {
        let rid = engine
            .catalog
            .coll(db, &coll)
            .and_then(|c| c.rid_by_id(&id));
        if let Some(rid) = rid {
            ops.push(engine.catalog.delete_doc(db, &coll, rid)?);
            deleted += 1;
        }
    }
    let inserted = ops.len() as i32 - deleted;
    let last = engine.log(ops.into_iter().map(from_migrate).collect(), None);
    drop(engine);
    if let Some(ts) = last {
        ctx.operation_time = Some(ts);
    }
    Ok(doc! {"inserted": inserted, "deleted": deleted})
}

/// `_shardsvrDropCollectionParticipant: <coll>` / `_shardsvrDropDatabaseParticipant: 1`.
pub(crate) async fn drop_participant(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    let hidden = req.body.get_bool("fromMigrate").unwrap_or(false);
    let whole_db = req.name == "_shardsvrDropDatabaseParticipant";
    let coll = if whole_db {
        String::new()
    } else {
        coll_name(&req)?
    };
    let mut engine = ctx.shared.engine.lock();
    let n_indexes = engine
        .catalog
        .coll(db, &coll)
        .map(|c| c.indexes.len() as i32);
    let ops = if whole_db {
        engine.catalog.drop_database(db)?
    } else {
        engine.catalog.drop_ns(db, &coll)?
    };
    let Some(ops) = ops else {
        return Ok(Document::new());
    };
    let ns = format!("{db}.{coll}");
    let prefix = format!("{db}.");
    engine.cursors.kill_where(|c| {
        if whole_db {
            c.starts_with(&prefix)
        } else {
            c == ns
        }
    });
    let pending: Vec<PendingOp> = ops
        .into_iter()
        .map(|op| if hidden { from_migrate(op) } else { op.into() })
        .collect();
    let ts = engine.log(pending, None);
    drop(engine);
    if let Some(ts) = ts {
        ctx.operation_time = Some(ts);
    }
    let mut reply = Document::new();
    if let Some(n) = n_indexes {
        reply.insert("nIndexesWas", n);
    }
    if !whole_db {
        reply.insert("ns", ns);
    }
    Ok(reply)
}

/// `_mongosimRangeOwnership`.
pub(crate) async fn range_ownership(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req)?;
    let db = req.db.clone();
    let min = req.body.get_document("min").cloned().unwrap_or_default();
    let max = req.body.get_document("max").cloned().unwrap_or_default();
    let owned = req.body.get_bool("owned").unwrap_or(true);
    {
        let mut engine = ctx.shared.engine.lock();
        let Some(c) = engine.catalog.coll_mut(&db, &coll) else {
            return Ok(Document::new());
        };
        c.orphans.retain(|(a, b)| !(a == &min && b == &max));
        if !owned {
            c.orphans.push((min.clone(), max.clone()));
        }
    }
    let cleanup = match req.body.get("cleanupAfterMs") {
        Some(Bson::Int64(ms)) => Some(*ms),
        Some(Bson::Int32(ms)) => Some(i64::from(*ms)),
        _ => None,
    };
    match cleanup {
        Some(ms) if ms <= 0 => {
            let deleted = delete_range(&ctx.shared, &db, &coll, &min, &max)?;
            Ok(doc! {"deleted": deleted})
        }
        Some(ms) => {
            let shared = ctx.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(ms as u64)).await;
                if let Err(e) = delete_range(&shared, &db, &coll, &min, &max) {
                    tracing::warn!("mongosim: range deletion on {db}.{coll} failed: {e:?}");
                }
            });
            Ok(Document::new())
        }
        None => Ok(Document::new()),
    }
}

/// The range deleter: removes the documents of `[min, max)` (still an orphan range) with
/// `fromMigrate: true` entries, then forgets the range. Returns how many it deleted.
fn delete_range(
    shared: &super::state::Shared,
    db: &str,
    coll: &str,
    min: &Document,
    max: &Document,
) -> CmdResult<i32> {
    let mut engine = shared.engine.lock();
    let Some(c) = engine.catalog.coll(db, coll) else {
        return Ok(0);
    };
    let still_orphaned = c.orphans.iter().any(|(a, b)| a == min && b == max);
    let Some(pattern) = c.shard_key.clone().filter(|_| still_orphaned) else {
        return Ok(0);
    };
    let range = [(min.clone(), max.clone())];
    let rids: Vec<u64> = c
        .iter()
        .filter(|(_, d)| {
            crate::engine::catalog::in_ranges(
                &range,
                &crate::engine::catalog::shard_key_value(&pattern, &d.doc),
            )
        })
        .map(|(rid, _)| rid)
        .collect();
    let mut ops = Vec::with_capacity(rids.len());
    for rid in rids {
        ops.push(from_migrate(engine.catalog.delete_doc(db, coll, rid)?));
    }
    let n = ops.len() as i32;
    engine.log(ops, None);
    if let Some(c) = engine.catalog.coll_mut(db, coll) {
        c.orphans.retain(|(a, b)| !(a == min && b == max));
    }
    Ok(n)
}

fn array_of(body: &Document, field: &str) -> Vec<Bson> {
    match body.get(field) {
        Some(Bson::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// `_mongosimNoop: <ns>, ui?, o, o2`.
pub(crate) async fn noop(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let ns = match req.target() {
        Some(Bson::String(s)) => s.clone(),
        _ => String::new(),
    };
    let mut op = doc! {"op": "n", "ns": ns};
    if let Some(ui) = req.body.get("ui") {
        op.insert("ui", ui.clone());
    }
    op.insert("o", req.body.get_document("o").cloned().unwrap_or_default());
    if let Ok(o2) = req.body.get_document("o2") {
        op.insert("o2", o2.clone());
    }
    let ts = ctx.shared.engine.lock().log(vec![op.into()], None);
    if let Some(ts) = ts {
        ctx.operation_time = Some(ts);
    }
    Ok(Document::new())
}
