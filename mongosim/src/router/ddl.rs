//! Catalog commands through a router: `create`, `collMod`, `createIndexes`, `dropIndexes`,
//! `drop`, `dropDatabase`, `listCollections`, `listIndexes`, `listDatabases`, and the
//! session-killing commands (reference sharded-clusters.md §4.4).
//!
//! Unsharded collections live on their database's primary shard, which answers. A sharded
//! collection's indexes are built on every shard holding it (the reply is mongos's
//! `{raw: {<shard host>: <reply>}}`). Dropping a sharded collection drops it on the other
//! shards with `fromMigrate: true` first and on the primary shard last, so its oplog holds
//! the one user-visible `drop` (SRV `drop_collection_coordinator.cpp`, 5.0+), then removes
//! its `config.collections` and `config.chunks` entries.

use bson::{doc, Bson, Document};

use super::cursor::adopt_shard_cursor;
use super::meta::{self, Placement};
use super::write::write_placement;
use super::{forwardable, Router};
use crate::commands::{self, Ctx, Request};
use crate::error::CmdResult;

fn coll_name(req: &Request) -> String {
    req.target()
        .and_then(Bson::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `create`, `collMod`: the database's primary shard (database created if needed).
pub(crate) async fn to_primary(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req);
    let placement = write_placement(r, ctx, &req.db, &coll).await?;
    let primary = placement.primary().unwrap_or_default().to_string();
    r.forward(ctx, &primary, &req.db, forwardable(&req.body))
        .await
}

/// `renameCollection: "db.a", to: "db.b"` on `admin`: run by the source database's primary
/// shard (an unsharded collection lives there; SRV `cluster_rename_collection_cmd.cpp`).
pub(crate) async fn rename_collection(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let source = coll_name(&req);
    let (db, coll) = super::admin::split_ns(&source)?;
    let placement = meta::placement(r, ctx, db, coll).await?;
    if let Placement::Sharded { .. } = placement {
        return Err(crate::error::CommandError::from_code(
            crate::error::ErrorCode::CommandNotSupported,
            "renaming a sharded collection is not supported by this simulator's router",
        ));
    }
    let Some(primary) = placement.primary().map(str::to_string) else {
        return Err(crate::error::CommandError::namespace_not_found(format!(
            "Source collection {source} does not exist"
        )));
    };
    r.forward(ctx, &primary, &req.db, forwardable(&req.body))
        .await
}

/// `collStats` (SRV `cluster_coll_stats_cmd.cpp`): an unsharded collection's stats come
/// from its primary shard with `sharded: false, primary`; a sharded one's are summed over
/// the shards holding it (`count`, `size`, `storageSize`, `totalIndexSize`, `nindexes` of
/// the first), `avgObjSize` recomputed, each shard's reply under `shards`, `nchunks`.
pub(crate) async fn coll_stats(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req);
    let ns = format!("{}.{coll}", req.db);
    let placement = meta::placement(r, ctx, &req.db, &coll).await?;
    let body = forwardable(&req.body);
    let sharded = match &placement {
        Placement::NoDatabase => {
            return Err(crate::error::CommandError::namespace_not_found(format!(
                "Collection [{ns}] not found."
            )))
        }
        Placement::Unsharded { primary } => {
            let mut reply = r.forward(ctx, primary, &req.db, body).await?;
            reply.insert("sharded", false);
            reply.insert("primary", primary.clone());
            return Ok(reply);
        }
        Placement::Sharded { coll, .. } => coll,
    };
    let targets = sharded.shards();
    let sends = targets.iter().map(|t| (t.clone(), body.clone())).collect();
    let replies = r.forward_all(ctx, &req.db, sends).await?;
    let mut per_shard = Document::new();
    let (mut count, mut size, mut storage, mut index_size, mut nindexes) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    let num = |d: &Document, k: &str| match d.get(k) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    };
    for (t, reply) in targets.iter().zip(replies) {
        let reply = reply?;
        count += num(&reply, "count");
        size += num(&reply, "size");
        storage += num(&reply, "storageSize");
        index_size += num(&reply, "totalIndexSize");
        nindexes = nindexes.max(num(&reply, "nindexes"));
        per_shard.insert(t.clone(), reply);
    }
    let avg = if count > 0 { size / count } else { 0 };
    Ok(doc! {
        "sharded": true, "ns": ns, "count": count, "size": size, "avgObjSize": avg,
        "storageSize": storage, "nindexes": nindexes, "totalIndexSize": index_size,
        "shards": per_shard, "nchunks": sharded.chunks.len() as i32,
    })
}

/// The shards holding `db.coll`: the primary, then the owners of its chunks.
fn holders(placement: &Placement) -> Vec<String> {
    let mut out: Vec<String> = placement
        .primary()
        .map(str::to_string)
        .into_iter()
        .collect();
    if let Placement::Sharded { coll, .. } = placement {
        for s in coll.shards() {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// `createIndexes`, `dropIndexes`: every shard holding the collection; mongos's `raw` reply.
pub(crate) async fn indexes(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req);
    let placement = write_placement(r, ctx, &req.db, &coll).await?;
    let targets = holders(&placement);
    let body = forwardable(&req.body);
    let sends: Vec<(String, Document)> =
        targets.iter().map(|t| (t.clone(), body.clone())).collect();
    let replies = r.forward_all(ctx, &req.db, sends).await?;
    let shards = meta::shards(r, ctx).await?;
    let mut raw = Document::new();
    for (target, reply) in targets.iter().zip(replies) {
        let mut reply = reply?;
        reply.insert("ok", 1.0);
        let host = shards
            .iter()
            .find(|s| &s.id == target)
            .map_or_else(|| target.clone(), |s| s.host.clone());
        raw.insert(host, reply);
    }
    Ok(doc! {"raw": raw})
}

/// `drop`.
pub(crate) async fn drop(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let coll = coll_name(&req);
    match meta::placement(r, ctx, &req.db, &coll).await? {
        Placement::NoDatabase => Ok(Document::new()),
        Placement::Unsharded { primary } => {
            r.forward(ctx, &primary, &req.db, forwardable(&req.body))
                .await
        }
        Placement::Sharded {
            primary,
            coll: sharded,
        } => {
            let reply = drop_sharded(r, ctx, &req.db, &coll, &primary, &sharded).await?;
            Ok(reply)
        }
    }
}

/// Drops a sharded collection everywhere; returns the primary shard's reply.
async fn drop_sharded(
    r: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    coll: &str,
    primary: &str,
    sharded: &meta::Sharded,
) -> CmdResult<Document> {
    for shard in meta::shards(r, ctx).await? {
        if shard.id == primary {
            continue;
        }
        let body = doc! {"_shardsvrDropCollectionParticipant": coll, "fromMigrate": true};
        r.forward(ctx, &shard.id, db, body).await?;
    }
    let body = doc! {"_shardsvrDropCollectionParticipant": coll, "fromMigrate": false};
    let reply = r.forward(ctx, primary, db, body).await?;
    let filter = sharded.chunks_filter(r.version);
    meta::config_write(
        r,
        ctx,
        doc! {"delete": "chunks", "deletes": [{"q": filter, "limit": 0}]},
    )
    .await?;
    meta::config_write(
        r,
        ctx,
        doc! {"delete": "collections", "deletes": [{"q": {"_id": sharded.ns.clone()}, "limit": 0}]},
    )
    .await?;
    super::admin::changelog(r, ctx, "dropCollection", &sharded.ns, Document::new()).await?;
    Ok(reply)
}

/// `dropDatabase`: sharded collections first, then the database on the primary shard and
/// (as `fromMigrate`) on the others; the `config.databases` entry goes last.
pub(crate) async fn drop_database(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let db = req.db.clone();
    let Some(entry) = meta::database(r, ctx, &db).await? else {
        return Ok(Document::new());
    };
    let primary = entry.get_str("primary").unwrap_or_default().to_string();
    let sharded = meta::find_all(
        r,
        ctx,
        "collections",
        doc! {"_id": {"$regex": format!("^{}\\.", regex::escape(&db))}},
        doc! {},
    )
    .await?;
    for c in sharded {
        let ns = c.get_str("_id").unwrap_or_default().to_string();
        if let Some(s) = meta::sharded(r, ctx, &ns).await? {
            let coll = ns
                .split_once('.')
                .map(|(_, c)| c.to_string())
                .unwrap_or_default();
            drop_sharded(r, ctx, &db, &coll, &primary, &s).await?;
        }
    }
    for shard in meta::shards(r, ctx).await? {
        if shard.id != primary {
            let body = doc! {"_shardsvrDropDatabaseParticipant": 1, "fromMigrate": true};
            r.forward(ctx, &shard.id, &db, body).await?;
        }
    }
    let reply = r
        .forward(ctx, &primary, &db, forwardable(&req.body))
        .await?;
    meta::config_write(
        r,
        ctx,
        doc! {"delete": "databases", "deletes": [{"q": {"_id": db.clone()}, "limit": 1}]},
    )
    .await?;
    super::admin::changelog(r, ctx, "dropDatabase", &db, Document::new()).await?;
    Ok(reply)
}

/// `listCollections`, `listIndexes`: the primary shard's answer.
pub(crate) async fn list_on_primary(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let coll = coll_name(&req);
    let placement = meta::placement(r, ctx, &req.db, &coll).await?;
    let Some(primary) = placement.primary().map(str::to_string) else {
        if req.name == "listIndexes" {
            return Err(crate::error::CommandError::namespace_not_found(format!(
                "ns does not exist: {}.{coll}",
                req.db
            )));
        }
        return Ok(super::cursor::cursor_reply(
            &format!("{}.$cmd.listCollections", req.db),
            0,
            Vec::new(),
            true,
        ));
    };
    let reply = r
        .forward(ctx, &primary, &req.db, forwardable(&req.body))
        .await?;
    Ok(adopt_shard_cursor(r, ctx, &primary, reply, None))
}

/// `listDatabases` (SRV `cluster_list_databases_cmd.cpp`): every shard's databases merged by
/// name, sizes summed, with the per-shard sizes under `shards`; `admin` and `config` from the
/// config server.
pub(crate) async fn list_databases(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let name_only = req.body.get_bool("nameOnly").unwrap_or(false);
    let mut body = forwardable(&req.body);
    body.insert("nameOnly", false);
    let mut sources: Vec<String> = meta::shards(r, ctx)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    sources.push("config".into());
    let sends = sources.iter().map(|s| (s.clone(), body.clone())).collect();
    let replies = r.forward_all(ctx, "admin", sends).await?;
    let mut merged: Vec<(String, i64, Document)> = Vec::new();
    for (source, reply) in sources.iter().zip(replies) {
        for d in reply?.get_array("databases").cloned().unwrap_or_default() {
            let Bson::Document(d) = d else { continue };
            let name = d.get_str("name").unwrap_or_default().to_string();
            let on_config = matches!(name.as_str(), "admin" | "config");
            if (source == "config") != on_config || name == "local" {
                continue;
            }
            let size = match d.get("sizeOnDisk") {
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Int32(n)) => i64::from(*n),
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            match merged.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, total, shards)) => {
                    *total += size;
                    shards.insert(source.clone(), size);
                }
                None => merged.push((name, size, doc! {source.clone(): size})),
            }
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let total: i64 = merged.iter().map(|(_, s, _)| *s).sum();
    let databases: Vec<Document> = merged
        .into_iter()
        .map(|(name, size, shards)| {
            if name_only {
                doc! {"name": name}
            } else {
                doc! {"name": name, "sizeOnDisk": size, "empty": size == 0, "shards": shards}
            }
        })
        .collect();
    if name_only {
        return Ok(doc! {"databases": databases});
    }
    Ok(doc! {"databases": databases, "totalSize": total, "totalSizeMb": total / (1024 * 1024)})
}

/// `killSessions`, `killAllSessions`, `killAllSessionsByPattern`: on every shard (their
/// transactions and cursors), then on the router (its session cache and cursors).
pub(crate) async fn kill_sessions(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let body = forwardable(&req.body);
    let shards: Vec<String> = meta::shards(r, ctx)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let sends = shards.iter().map(|s| (s.clone(), body.clone())).collect();
    for reply in r.forward_all(ctx, &req.db, sends).await? {
        // 11601 Interrupted is the killing of the command's own session: tolerated.
        if let Err(e) = reply {
            if e.code != 11601 {
                return Err(e);
            }
        }
    }
    let ids: Vec<Bson> = match (req.name.as_str(), req.target()) {
        ("killSessions", Some(Bson::Array(a))) => a
            .iter()
            .filter_map(|l| l.as_document()?.get("id").cloned())
            .collect(),
        _ => Vec::new(),
    };
    let all = req.name != "killSessions";
    r.cursors
        .kill_sessions(|lsid| all || lsid.get("id").is_some_and(|id| ids.contains(id)));
    match req.name.as_str() {
        "killAllSessions" => commands::sessions::kill_all_sessions(ctx, req).await,
        "killAllSessionsByPattern" => {
            commands::sessions::kill_all_sessions_by_pattern(ctx, req).await
        }
        _ => commands::sessions::kill_sessions(ctx, req).await,
    }
}
