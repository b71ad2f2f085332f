//! Cluster administration through a router: `addShard`, `listShards`, `getShardMap`,
//! `enableSharding`, `shardCollection`, `balancerStart` / `balancerStop` /
//! `balancerStatus`, `flushRouterConfig` (reference sharded-clusters.md §2.6).
//!
//! The router plays the config server's and the DDL coordinators' parts itself: it checks
//! the request, writes the `config.*` documents on the config server with ordinary commands,
//! and tells the shards what they must do (`commands/shardsvr.rs`).

use std::sync::Arc;

use bson::{doc, oid::ObjectId, Bson, DateTime, Document, Timestamp};

use super::client::Remote;
use super::meta::{self, version};
use super::shard_key::ShardKey;
use super::Router;
use crate::commands::{Ctx, Request};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::ServerVersion;

/// `adminOnly()` commands (SRV `commands.cpp`): 13 Unauthorized elsewhere.
pub(crate) fn require_admin(req: &Request) -> CmdResult<()> {
    if req.db == "admin" {
        Ok(())
    } else {
        Err(CommandError::from_code(
            ErrorCode::Unauthorized,
            format!("{} may only be run against the admin database.", req.name),
        ))
    }
}

fn string_target(req: &Request) -> CmdResult<&str> {
    match req.target() {
        Some(Bson::String(s)) => Ok(s),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "BSON field '{}.{}' is the wrong type '{}', expected type 'string'",
            req.name,
            req.name,
            crate::commands::type_name(other)
        ))),
        None => Err(CommandError::type_mismatch(format!(
            "BSON field '{}' is missing",
            req.name
        ))),
    }
}

/// Splits `db.coll` (73 InvalidNamespace otherwise).
pub(crate) fn split_ns(ns: &str) -> CmdResult<(&str, &str)> {
    match ns.split_once('.') {
        Some((db, coll)) if !db.is_empty() && !coll.is_empty() => Ok((db, coll)),
        _ => Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified '{ns}'"
        ))),
    }
}

fn operation_failed(msg: String) -> CommandError {
    CommandError::from_code(ErrorCode::OperationFailed, msg)
}

/// A fresh tick of the router's clock (a config server stamps `topologyTime` and collection
/// `timestamp` from its vector clock).
fn tick(ctx: &Ctx<'_>) -> Timestamp {
    ctx.shared.engine.lock().clock.tick()
}

/// `addShard: "set/host:port,..."` (SRV `sharding_catalog_manager_shard_operations.cpp`
/// `_validateHostAsShard`, `addShard`): the host must be a replica set that is neither a
/// router nor a config server; the shard name defaults to the set name; the stored `host`
/// is rebuilt from the set's own `hosts`; databases already on the shard are imported with
/// it as their primary.
pub(crate) async fn add_shard(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let spec = string_target(&req)?.to_string();
    let (given_set, hosts) = match spec.split_once('/') {
        Some((set, hosts)) => (Some(set.to_string()), hosts.to_string()),
        None => (None, spec.clone()),
    };
    let first = hosts.split(',').next().unwrap_or_default().to_string();
    let remote = Remote::new(first.clone());
    let hello = r
        .send(ctx, &remote, "admin", doc! {"hello": 1})
        .await
        .map_err(|e| {
            operation_failed(format!(
                "failed to run command {{ hello: 1 }} when attempting to add shard {spec} :: caused by :: {}",
                e.errmsg
            ))
        })?;
    let set_name = validate_shard_hello(&hello, &spec, &first, given_set.as_deref())?;
    let name = match req.body.get_str("name") {
        Ok(n) if !n.is_empty() => n.to_string(),
        _ => set_name.clone(),
    };
    if name == "config" {
        return Err(CommandError::bad_value(
            "use of shard replica set with name 'config' is not allowed",
        ));
    }
    let members: Vec<String> = hello
        .get_array("hosts")
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_else(|_| vec![first.clone()]);
    let host = format!("{set_name}/{}", members.join(","));
    for s in meta::shards(r, ctx).await? {
        if s.id == name && s.host == host {
            // Idempotent (SRV `_checkIfShardExists`).
            return Ok(doc! {"shardAdded": name});
        }
        if s.id == name || s.host == host {
            return Err(CommandError::from_code(
                ErrorCode::IllegalOperation,
                format!(
                    "'{spec}' is already a member of the cluster or conflicts with shard '{}' ({})",
                    s.id, s.host
                ),
            ));
        }
    }
    let dbs = shard_databases(r, ctx, &remote).await?;
    for db in &dbs {
        if let Some(existing) = meta::database(r, ctx, db).await? {
            return Err(operation_failed(format!(
                "can't add shard '{spec}' because a local database '{db}' exists in another {}",
                existing.get_str("primary").unwrap_or_default()
            )));
        }
    }
    let mut shard_doc = doc! {"_id": name.clone(), "host": host.clone(), "state": 1};
    if r.version != ServerVersion::V4_4 {
        shard_doc.insert("topologyTime", tick(ctx));
    }
    meta::config_write(
        r,
        ctx,
        doc! {"insert": "shards", "documents": [shard_doc], "writeConcern": {"w": "majority"}},
    )
    .await?;
    for db in &dbs {
        insert_database(r, ctx, db, &name).await?;
    }
    changelog(
        r,
        ctx,
        "addShard",
        "",
        doc! {"name": name.clone(), "host": host},
    )
    .await?;
    Ok(doc! {"shardAdded": name})
}

/// The checks of `_validateHostAsShard` on the candidate's `hello`; returns its set name.
fn validate_shard_hello(
    hello: &Document,
    spec: &str,
    first: &str,
    given_set: Option<&str>,
) -> CmdResult<String> {
    if hello.get_str("msg") == Ok("isdbgrid") {
        return Err(operation_failed(format!(
            "Cannot add {spec} as a shard since it is a mongos"
        )));
    }
    if hello.contains_key("configsvr") {
        return Err(operation_failed(format!(
            "Cannot add {spec} as a shard since it is part of a config server replica set"
        )));
    }
    let Ok(actual) = hello.get_str("setName") else {
        return Err(operation_failed(format!(
            "host did not return a set name; is the replica set still initializing? {spec}"
        )));
    };
    match given_set {
        Some(set) if set == actual => Ok(actual.to_string()),
        Some(set) => Err(operation_failed(format!(
            "the provided connection string ({spec}) does not match the actual set name {actual} (given {set})"
        ))),
        None => Err(operation_failed(format!(
            "host is part of set {actual}; use replica set url format {actual}/{first}"
        ))),
    }
}

/// Databases a new shard already holds (not `admin`, `config`, `local`).
async fn shard_databases(r: &Router, ctx: &mut Ctx<'_>, remote: &Remote) -> CmdResult<Vec<String>> {
    let reply = r
        .send(
            ctx,
            remote,
            "admin",
            doc! {"listDatabases": 1, "nameOnly": true},
        )
        .await?;
    Ok(reply
        .get_array("databases")
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_document()?.get_str("name").ok().map(String::from))
                .filter(|n| !matches!(n.as_str(), "admin" | "config" | "local"))
                .collect()
        })
        .unwrap_or_default())
}

/// Inserts the `config.databases` entry of `db` with primary `primary`.
async fn insert_database(r: &Router, ctx: &mut Ctx<'_>, db: &str, primary: &str) -> CmdResult<()> {
    let uuid = bson::Uuid::new();
    let entry = match r.version {
        ServerVersion::V4_4 => doc! {
            "_id": db, "primary": primary, "partitioned": false,
            "version": {"uuid": uuid, "lastMod": 1},
        },
        _ => doc! {
            "_id": db, "primary": primary,
            "version": {"uuid": uuid, "timestamp": tick(ctx), "lastMod": 1},
        },
    };
    meta::config_write(
        r,
        ctx,
        doc! {"insert": "databases", "documents": [entry], "writeConcern": {"w": "majority"}},
    )
    .await?;
    Ok(())
}

/// The primary shard of `db`, creating the database entry first when it does not exist
/// (SRV `ShardingCatalogManager::createDatabase`: the requested primary, else the shard
/// holding the least data).
pub(crate) async fn ensure_database(
    r: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    requested: Option<&str>,
) -> CmdResult<String> {
    if db == "admin" || db == "config" {
        return Ok("config".to_string());
    }
    crate::engine::names::check_db(db)?;
    if let Some(existing) = meta::database(r, ctx, db).await? {
        let primary = existing.get_str("primary").unwrap_or_default().to_string();
        if let Some(req) = requested {
            if req != primary {
                return Err(CommandError::from_code(
                    ErrorCode::NamespaceExists,
                    format!(
                        "database {db} already exists with a different primary shard {primary}"
                    ),
                ));
            }
        }
        return Ok(primary);
    }
    let shards = meta::shards(r, ctx).await?;
    let primary = match requested {
        Some(p) => {
            if !shards.iter().any(|s| s.id == p) {
                return Err(CommandError::from_code(
                    ErrorCode::ShardNotFound,
                    format!("Shard {p} not found"),
                ));
            }
            p.to_string()
        }
        None => least_loaded_shard(r, ctx, &shards).await?,
    };
    insert_database(r, ctx, db, &primary).await?;
    Ok(primary)
}

async fn least_loaded_shard(
    r: &Router,
    ctx: &mut Ctx<'_>,
    shards: &[meta::ShardEntry],
) -> CmdResult<String> {
    let mut best: Option<(i64, String)> = None;
    for s in shards.iter().filter(|s| !s.draining) {
        let remote = r.shard(ctx, &s.id).await?;
        let reply = r
            .send(ctx, &remote, "admin", doc! {"listDatabases": 1})
            .await?;
        let size = match reply.get("totalSize") {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Double(n)) => *n as i64,
            _ => 0,
        };
        if best.as_ref().is_none_or(|(b, _)| size < *b) {
            best = Some((size, s.id.clone()));
        }
    }
    best.map(|(_, id)| id).ok_or_else(|| {
        CommandError::from_code(
            ErrorCode::ShardNotFound,
            "Database could not be created: no shards found",
        )
    })
}

/// `config.changelog` entry (reference §2.5).
pub(crate) async fn changelog(
    r: &Router,
    ctx: &mut Ctx<'_>,
    what: &str,
    ns: &str,
    details: Document,
) -> CmdResult<()> {
    let server = ctx.conn.local.to_string();
    let now = DateTime::now();
    let entry = doc! {
        "_id": format!("{server}-{}-{}", now.try_to_rfc3339_string().unwrap_or_default(), ObjectId::new()),
        "server": server,
        "shard": "config",
        "clientAddr": ctx.conn.peer.to_string(),
        "time": now,
        "what": what,
        "ns": ns,
        "details": details,
    };
    meta::config_write(r, ctx, doc! {"insert": "changelog", "documents": [entry]}).await?;
    Ok(())
}

/// `listShards` (SRV `cluster_list_shards_cmd.cpp`): `{shards: [config.shards docs]}`.
pub(crate) async fn list_shards(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    require_admin(&req)?;
    let shards = meta::find_all(r, ctx, "shards", doc! {}, doc! {"_id": 1}).await?;
    Ok(doc! {"shards": shards})
}

/// `getShardMap` (SRV `cluster_get_shard_map_cmd.cpp`): `map` (host and set name ->
/// connection string), `hosts` (host -> shard), `connStrings` (connection string -> shard),
/// the config server included as `config`.
pub(crate) async fn get_shard_map(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    require_admin(&req)?;
    let mut entries: Vec<(String, String)> = meta::shards(r, ctx)
        .await?
        .into_iter()
        .map(|s| (s.id, s.host))
        .collect();
    let hello = r
        .config_cmd(ctx, "admin", doc! {"hello": 1})
        .await
        .unwrap_or_default();
    if let Ok(set) = hello.get_str("setName") {
        entries.push(("config".into(), format!("{set}/{}", r.config.addr())));
    }
    let mut map = Document::new();
    let mut hosts = Document::new();
    let mut conn_strings = Document::new();
    for (id, host) in entries {
        map.insert(id.clone(), host.clone());
        let members = host.split_once('/').map_or(host.as_str(), |(_, h)| h);
        for m in members.split(',') {
            hosts.insert(m, id.clone());
        }
        conn_strings.insert(host, id);
    }
    Ok(doc! {"map": map, "hosts": hosts, "connStrings": conn_strings})
}

/// `enableSharding: "db"` (+ `primaryShard`): creates the database entry (4.4 also marks it
/// `partitioned: true`).
pub(crate) async fn enable_sharding(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    require_admin(&req)?;
    let db = string_target(&req)?.to_string();
    if matches!(db.as_str(), "admin" | "local") {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            format!("Cannot enable sharding on the {db} database"),
        ));
    }
    let requested = req.body.get_str("primaryShard").ok();
    ensure_database(r, ctx, &db, requested).await?;
    if r.version == ServerVersion::V4_4 {
        meta::config_write(
            r,
            ctx,
            doc! {"update": "databases", "updates": [{"q": {"_id": db}, "u": {"$set": {"partitioned": true}}}]},
        )
        .await?;
    }
    Ok(Document::new())
}

/// `balancerStart` / `balancerStop` / `balancerStatus` (SRV `cluster_balancer_*`,
/// `config.settings` `{_id: "balancer", mode, stopped}`). This balancer never moves chunks on
/// its own; its state is kept as a real one keeps it.
pub(crate) async fn balancer(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let set = match req.name.as_str() {
        "balancerStart" => Some(("full", false)),
        "balancerStop" => Some(("off", true)),
        _ => None,
    };
    if let Some((mode, stopped)) = set {
        meta::config_write(
            r,
            ctx,
            doc! {"update": "settings", "updates": [{
                "q": {"_id": "balancer"},
                "u": {"$set": {"mode": mode, "stopped": stopped}},
                "upsert": true,
            }]},
        )
        .await?;
        return Ok(Document::new());
    }
    let settings = meta::find_all(r, ctx, "settings", doc! {"_id": "balancer"}, doc! {}).await?;
    let mode = settings
        .first()
        .and_then(|d| d.get_str("mode").ok())
        .unwrap_or("full")
        .to_string();
    Ok(doc! {"mode": mode, "inBalancerRound": false, "numBalancerRounds": 0i64})
}

/// `flushRouterConfig`: nothing is cached, so there is nothing to flush.
pub(crate) async fn flush_router_config(
    _r: &Router,
    _ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    require_admin(&req)?;
    Ok(doc! {"flushed": true})
}

/// The default name of an index on `key` (`a_1_h_hashed`).
pub(crate) fn index_name(key: &Document) -> String {
    key.iter()
        .map(|(k, v)| match v {
            Bson::String(s) => format!("{k}_{s}"),
            Bson::Double(d) => format!("{k}_{d}"),
            other => format!("{k}_{other}"),
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// What `shardCollection` asks.
struct ShardRequest {
    ns: String,
    db: String,
    coll: String,
    key: ShardKey,
    unique: bool,
    num_initial_chunks: i64,
}

fn parse_shard_request(req: &Request) -> CmdResult<ShardRequest> {
    let ns = string_target(req)?.to_string();
    let (db, coll) = split_ns(&ns)?;
    let Ok(key_doc) = req.body.get_document("key") else {
        return Err(CommandError::from_code(
            ErrorCode::IdlFailedToParse,
            "BSON field 'shardCollection.key' is missing but a required field",
        ));
    };
    let key = ShardKey::parse(key_doc)?;
    let unique = req.body.get_bool("unique").unwrap_or(false);
    if unique && key.is_hashed() {
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "Hashed shard keys cannot be declared unique. It's possible to ensure uniqueness on the hashed field by declaring an additional (non-hashed) unique index on the field.",
        ));
    }
    if matches!(db, "admin" | "local" | "config") {
        return Err(CommandError::from_code(
            ErrorCode::IllegalOperation,
            format!("can't shard {db} database"),
        ));
    }
    let num_initial_chunks = match req.body.get("numInitialChunks") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    };
    Ok(ShardRequest {
        db: db.to_string(),
        coll: coll.to_string(),
        ns,
        key,
        unique,
        num_initial_chunks,
    })
}

/// `shardCollection` (SRV `cluster_shard_collection_cmd.cpp`,
/// `create_collection_coordinator.cpp`, `initial_split_policy.cpp`): creates the collection
/// and the shard-key index on the primary shard if needed, writes `config.chunks` and
/// `config.collections`, creates the collection (same UUID) on the shards that got chunks,
/// and logs the `shardCollection` no-op on the primary shard. Reply
/// `{collectionsharded, collectionUUID}`.
pub(crate) async fn shard_collection(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    require_admin(&req)?;
    let sr = parse_shard_request(&req)?;
    let primary = shard_collection_primary(r, ctx, &sr.db).await?;
    if let Some(existing) = meta::sharded(r, ctx, &sr.ns).await? {
        if existing.key.pattern == sr.key.pattern && existing.unique == sr.unique {
            return Ok(doc! {"collectionsharded": sr.ns, "collectionUUID": existing.uuid});
        }
        return Err(CommandError::from_code(
            ErrorCode::AlreadyInitialized,
            format!(
                "sharding already enabled for collection {} with options {{ _id: \"{}\", key: {}, unique: {} }}",
                sr.ns, sr.ns, existing.key.pattern, existing.unique
            ),
        ));
    }
    let primary_remote = r.shard(ctx, &primary).await?;
    let local = prepare_primary(r, ctx, &primary_remote, &sr).await?;
    let shards: Vec<String> = meta::shards(r, ctx)
        .await?
        .into_iter()
        .filter(|s| !s.draining)
        .map(|s| s.id)
        .collect();
    let timestamp = tick(ctx);
    let epoch = ObjectId::new();
    let chunks = initial_chunks(r.version, &sr, &local, &primary, &shards, timestamp, epoch);
    let mut owners: Vec<String> = vec![primary.clone()];
    for c in &chunks {
        let s = c.get_str("shard").unwrap_or_default().to_string();
        if !owners.contains(&s) {
            owners.push(s);
        }
    }
    meta::config_write(r, ctx, doc! {"insert": "chunks", "documents": chunks}).await?;
    let coll_doc = collection_doc(r.version, &sr, &local.uuid, epoch, timestamp);
    meta::config_write(
        r,
        ctx,
        doc! {"insert": "collections", "documents": [coll_doc]},
    )
    .await?;
    for owner in &owners {
        let remote = r.shard(ctx, owner).await?;
        create_participant(r, ctx, &remote, &sr.db, &sr.coll, &local, &sr.key.pattern).await?;
    }
    let o2 = doc! {
        "shardCollection": sr.ns.clone(),
        "shardKey": sr.key.pattern.clone(),
        "unique": sr.unique,
        "numInitialChunks": sr.num_initial_chunks,
        "presplitHashedZones": false,
    };
    r.send(
        ctx,
        &primary_remote,
        &sr.db,
        doc! {
            "_mongosimNoop": sr.ns.clone(), "ui": local.uuid.clone(),
            "o": {"msg": {"shardCollection": sr.ns.clone()}}, "o2": o2,
        },
    )
    .await?;
    changelog(
        r,
        ctx,
        "shardCollection.end",
        &sr.ns,
        doc! {"version": version(1, 0)},
    )
    .await?;
    let mut reply = doc! {"collectionsharded": sr.ns};
    if r.version != ServerVersion::V4_4 {
        reply.insert("collectionUUID", local.uuid);
    }
    Ok(reply)
}

/// The database's primary shard: 4.4 requires `enableSharding` first (SRV 4.4
/// `cluster_shard_collection_cmd.cpp`: IllegalOperation "sharding not enabled for db"); 7.0
/// creates the database when needed.
async fn shard_collection_primary(r: &Router, ctx: &mut Ctx<'_>, db: &str) -> CmdResult<String> {
    if r.version == ServerVersion::V4_4 {
        let entry = meta::database(r, ctx, db).await?;
        match entry {
            Some(d) if d.get_bool("partitioned").unwrap_or(false) => {
                return Ok(d.get_str("primary").unwrap_or_default().to_string())
            }
            _ => {
                return Err(CommandError::from_code(
                    ErrorCode::IllegalOperation,
                    format!("sharding not enabled for db {db}"),
                ))
            }
        }
    }
    ensure_database(r, ctx, db, None).await
}

/// The collection as the primary shard holds it.
pub(crate) struct LocalCollection {
    pub(crate) uuid: Bson,
    pub(crate) options: Document,
    pub(crate) indexes: Vec<Bson>,
    pub(crate) count: i64,
}

/// Reads (creating it when missing) the collection on its primary shard.
pub(crate) async fn local_collection(
    r: &Router,
    ctx: &mut Ctx<'_>,
    remote: &Remote,
    db: &str,
    coll: &str,
    create: bool,
) -> CmdResult<Option<LocalCollection>> {
    let mut info = list_collection(r, ctx, remote, db, coll).await?;
    if info.is_none() && create {
        r.send(ctx, remote, db, doc! {"create": coll}).await?;
        info = list_collection(r, ctx, remote, db, coll).await?;
    }
    let Some(info) = info else { return Ok(None) };
    if info.get_str("type") == Ok("view") {
        return Err(CommandError::from_code(
            ErrorCode::CommandNotSupportedOnView,
            format!("Namespace {db}.{coll} is a view, not a collection"),
        ));
    }
    let uuid = info
        .get_document("info")
        .ok()
        .and_then(|i| i.get("uuid").cloned())
        .unwrap_or(Bson::Null);
    let options = info.get_document("options").cloned().unwrap_or_default();
    let count = r
        .send(ctx, remote, db, doc! {"count": coll})
        .await?
        .get("n")
        .and_then(|n| match n {
            Bson::Int32(i) => Some(i64::from(*i)),
            Bson::Int64(i) => Some(*i),
            Bson::Double(d) => Some(*d as i64),
            _ => None,
        })
        .unwrap_or(0);
    let indexes = first_batch(r.send(ctx, remote, db, doc! {"listIndexes": coll}).await?);
    Ok(Some(LocalCollection {
        uuid,
        options,
        indexes,
        count,
    }))
}

async fn list_collection(
    r: &Router,
    ctx: &mut Ctx<'_>,
    remote: &Remote,
    db: &str,
    coll: &str,
) -> CmdResult<Option<Document>> {
    let reply = r
        .send(
            ctx,
            remote,
            db,
            doc! {"listCollections": 1, "filter": {"name": coll}},
        )
        .await?;
    Ok(first_batch(reply)
        .into_iter()
        .find_map(|d| d.as_document().cloned()))
}

/// `cursor.firstBatch` of a cursor reply.
pub(crate) fn first_batch(reply: Document) -> Vec<Bson> {
    reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok().cloned())
        .unwrap_or_default()
}

/// Creates the collection and the shard-key index on the primary shard when needed (SRV
/// `shardkeyutil::validateShardKeyIndexExistsOrCreateIfPossible`: created on an empty
/// collection, required on a non-empty one).
async fn prepare_primary(
    r: &Router,
    ctx: &mut Ctx<'_>,
    remote: &Arc<Remote>,
    sr: &ShardRequest,
) -> CmdResult<LocalCollection> {
    let Some(mut local) = local_collection(r, ctx, remote, &sr.db, &sr.coll, true).await? else {
        return Err(CommandError::namespace_not_found(format!(
            "{} not found",
            sr.ns
        )));
    };
    let has_index = local.indexes.iter().any(|ix| {
        ix.as_document()
            .and_then(|d| d.get_document("key").ok())
            .is_some_and(|k| {
                k.keys()
                    .take(sr.key.pattern.len())
                    .eq(sr.key.pattern.keys())
            })
    });
    if !has_index {
        if local.count > 0 {
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                "Please create an index that starts with the proposed shard key before sharding the collection",
            ));
        }
        let mut spec = doc! {"key": sr.key.pattern.clone(), "name": index_name(&sr.key.pattern)};
        if sr.unique {
            spec.insert("unique", true);
        }
        r.send(
            ctx,
            remote,
            &sr.db,
            doc! {"createIndexes": sr.coll.clone(), "indexes": [spec]},
        )
        .await?;
        local.indexes = first_batch(
            r.send(ctx, remote, &sr.db, doc! {"listIndexes": sr.coll.clone()})
                .await?,
        );
    }
    Ok(local)
}

/// `_shardsvrCreateCollectionParticipant` on one shard.
pub(crate) async fn create_participant(
    r: &Router,
    ctx: &mut Ctx<'_>,
    remote: &Remote,
    db: &str,
    coll: &str,
    local: &LocalCollection,
    key: &Document,
) -> CmdResult<()> {
    r.send(
        ctx,
        remote,
        db,
        doc! {
            "_shardsvrCreateCollectionParticipant": coll,
            "collectionUUID": local.uuid.clone(),
            "options": local.options.clone(),
            "indexes": local.indexes.clone(),
            "idIndex": crate::engine::catalog::id_index_spec(),
            "shardKey": key.clone(),
        },
    )
    .await?;
    Ok(())
}

/// `config.collections` entry.
fn collection_doc(
    version: ServerVersion,
    sr: &ShardRequest,
    uuid: &Bson,
    epoch: ObjectId,
    timestamp: Timestamp,
) -> Document {
    match version {
        ServerVersion::V4_4 => doc! {
            "_id": sr.ns.clone(), "lastmodEpoch": epoch, "lastmod": DateTime::now(),
            "dropped": false, "key": sr.key.pattern.clone(), "unique": sr.unique,
            "uuid": uuid.clone(),
        },
        _ => doc! {
            "_id": sr.ns.clone(), "lastmodEpoch": epoch, "lastmod": DateTime::now(),
            "timestamp": timestamp, "uuid": uuid.clone(), "key": sr.key.pattern.clone(),
            "unique": sr.unique, "noBalance": false,
        },
    }
}

/// Initial chunks (SRV `initial_split_policy.cpp`): an empty collection with a hashed prefix
/// is pre-split into `numInitialChunks` (default 2 per shard before 7.2, reference §2.6)
/// chunks symmetric around 0 (`calculateHashedSplitPoints`), assigned round-robin
/// (`generateShardCollectionInitialChunks`); anything else is one chunk on the primary
/// shard. Versions `(1, 0)`, `(1, 1)`, … (`appendChunk` bumps the minor).
fn initial_chunks(
    version: ServerVersion,
    sr: &ShardRequest,
    local: &LocalCollection,
    primary: &str,
    shards: &[String],
    timestamp: Timestamp,
    epoch: ObjectId,
) -> Vec<Document> {
    let presplit = sr.key.hashed_prefix() && local.count == 0 && !shards.is_empty();
    let mut bounds: Vec<Document> = vec![sr.key.global_min()];
    if presplit {
        let n = match sr.num_initial_chunks {
            n if n > 0 => n,
            _ => 2 * shards.len() as i64,
        };
        for p in hashed_split_points(n) {
            let mut b = sr.key.global_min();
            if let Some(first) = sr.key.field_names().next() {
                b.insert(first, p);
            }
            bounds.push(b);
        }
    }
    bounds.push(sr.key.global_max());
    let mut out = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let shard = if presplit {
            shards[i % shards.len()].clone()
        } else {
            primary.to_string()
        };
        out.push(chunk_doc(
            version,
            sr,
            &local.uuid,
            &w[0],
            &w[1],
            &shard,
            version_of(i),
            timestamp,
            epoch,
        ));
    }
    out
}

fn version_of(i: usize) -> Timestamp {
    version(1, i as u32)
}

/// `InitialSplitPolicy::calculateHashedSplitPoints` for a hashed-prefix key, sorted.
pub(crate) fn hashed_split_points(n: i64) -> Vec<i64> {
    let mut points = Vec::new();
    if n <= 1 {
        return points;
    }
    let interval = (i64::MAX / n) * 2;
    let mut current: i64 = 0;
    if n % 2 == 0 {
        points.push(0);
        current += interval;
    } else {
        current += interval / 2;
    }
    for _ in 0..(n - 1) / 2 {
        points.push(current);
        points.push(-current);
        current = current.wrapping_add(interval);
    }
    points.sort_unstable();
    points
}

/// One `config.chunks` document.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunk_doc(
    version: ServerVersion,
    sr_ns: &(impl ChunkNs + ?Sized),
    uuid: &Bson,
    min: &Document,
    max: &Document,
    shard: &str,
    lastmod: Timestamp,
    valid_after: Timestamp,
    epoch: ObjectId,
) -> Document {
    let history = vec![Bson::Document(
        doc! {"validAfter": valid_after, "shard": shard},
    )];
    match version {
        ServerVersion::V4_4 => doc! {
            "_id": chunk_id_44(sr_ns.ns(), min),
            "ns": sr_ns.ns(), "min": min.clone(), "max": max.clone(), "shard": shard,
            "lastmod": lastmod, "lastmodEpoch": epoch, "history": history,
        },
        _ => doc! {
            "_id": ObjectId::new(), "uuid": uuid.clone(), "min": min.clone(), "max": max.clone(),
            "shard": shard, "lastmod": lastmod, "onCurrentShardSince": valid_after,
            "history": history,
        },
    }
}

/// Something that names a collection.
pub(crate) trait ChunkNs {
    /// `db.coll`.
    fn ns(&self) -> &str;
}

impl ChunkNs for ShardRequest {
    fn ns(&self) -> &str {
        &self.ns
    }
}

impl ChunkNs for str {
    fn ns(&self) -> &str {
        self
    }
}

/// 4.4 chunk `_id`: `<ns>-<field>_<value>...` (SRV 4.4 `ChunkType::genID`).
fn chunk_id_44(ns: &str, min: &Document) -> String {
    let mut s = format!("{ns}-");
    for (k, v) in min {
        let v = match v {
            Bson::MinKey => "MinKey".to_string(),
            Bson::MaxKey => "MaxKey".to_string(),
            Bson::String(x) => format!("\"{x}\""),
            other => other.to_string(),
        };
        s.push_str(&format!("{k}_{v}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SRV `initial_split_policy_test.cpp` `CalculateHashedSplitPointsTest`.
    #[test]
    fn hashed_split_points_match_the_server() {
        assert_eq!(
            hashed_split_points(4),
            vec![-4611686018427387902, 0, 4611686018427387902]
        );
        assert_eq!(hashed_split_points(1), Vec::<i64>::new());
        let five = hashed_split_points(5);
        assert_eq!(five.len(), 4);
        assert_eq!(five[3], 5534023222112865483);
        assert!(five.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn chunk_ids_and_index_names() {
        assert_eq!(index_name(&doc! {"a": 1, "h": "hashed"}), "a_1_h_hashed");
        assert_eq!(chunk_id_44("db.c", &doc! {"a": "cat"}), "db.c-a_\"cat\"");
    }
}
