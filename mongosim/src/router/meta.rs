//! Cluster metadata, kept where a real cluster keeps it: the config server's `config.*`
//! collections, read and written with ordinary commands (so its oplog shows every change, as
//! a real config server's does, and gtm's shard listener sees `config.shards` inserts).
//!
//! Shapes (reference sharded-clusters.md §2.1–2.5; SRV `type_shard.cpp`,
//! `type_database.idl`, `type_collection.idl`, `type_chunk.cpp`):
//! - `config.shards`: `{_id, host: "set/host:port", state: 1, topologyTime}` (4.4: no
//!   `topologyTime`; `draining: true` while being removed).
//! - `config.databases`: `{_id, primary, version: {uuid, timestamp, lastMod}}` (4.4:
//!   `partitioned` and no `version.timestamp`).
//! - `config.collections`: `{_id: ns, lastmodEpoch, lastmod, timestamp, uuid, key, unique,
//!   noBalance}` (4.4: `lastmodEpoch, lastmod, dropped: false, key, unique, uuid`).
//! - `config.chunks`: 7.0 `{_id: ObjectId, uuid, min, max, shard, lastmod, onCurrentShardSince,
//!   history: [{validAfter, shard}]}`; 4.4 `{_id: "<ns>-<key>", ns, min, max, shard, lastmod,
//!   lastmodEpoch, history}`.
//!
//! Every routed command reads the metadata it needs afresh, so routers never disagree: no
//! routing cache, hence no StaleConfig protocol (reference §3.3).

use std::cmp::Ordering;

use bson::{doc, oid::ObjectId, Bson, Document, Timestamp};

use super::read::batch_into;
use super::shard_key::{cmp_keys, ShardKey};
use super::Router;
use crate::commands::Ctx;
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::ServerVersion;

/// A `config.shards` entry.
#[derive(Debug, Clone)]
pub(crate) struct ShardEntry {
    /// Shard name (`_id`).
    pub(crate) id: String,
    /// `set/host:port,...`.
    pub(crate) host: String,
    /// Being removed (`draining: true`).
    pub(crate) draining: bool,
}

impl ShardEntry {
    /// The first `host:port` of the connection string.
    pub(crate) fn first_host(&self) -> String {
        let hosts = self
            .host
            .split_once('/')
            .map_or(self.host.as_str(), |(_, h)| h);
        hosts.split(',').next().unwrap_or(hosts).to_string()
    }
}

/// A sharded collection: its `config.collections` entry and its chunks, sorted by `min`.
#[derive(Debug, Clone)]
pub(crate) struct Sharded {
    /// `db.coll`.
    pub(crate) ns: String,
    /// The collection's UUID (the same on every shard).
    pub(crate) uuid: Bson,
    /// `lastmodEpoch`.
    pub(crate) epoch: ObjectId,
    /// `timestamp` (7.0; `None` on 4.4).
    pub(crate) timestamp: Option<Timestamp>,
    /// The shard key.
    pub(crate) key: ShardKey,
    /// `unique`.
    pub(crate) unique: bool,
    /// Chunks in key order.
    pub(crate) chunks: Vec<Chunk>,
}

/// One `config.chunks` entry.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// `_id`.
    pub(crate) id: Bson,
    /// Chunk version (major in the high 32 bits, minor in the low).
    pub(crate) lastmod: Timestamp,
    /// The stored document.
    pub(crate) doc: Document,
    /// Inclusive lower bound.
    pub(crate) min: Document,
    /// Exclusive upper bound.
    pub(crate) max: Document,
    /// Owning shard.
    pub(crate) shard: String,
}

/// Where a namespace's documents live.
#[derive(Debug, Clone)]
pub(crate) enum Placement {
    /// The database does not exist in the cluster yet.
    NoDatabase,
    /// Unsharded: everything on the database's primary shard.
    Unsharded {
        /// The primary shard.
        primary: String,
    },
    /// Sharded: by chunk.
    Sharded {
        /// The database's primary shard.
        primary: String,
        /// Collection metadata and chunks.
        coll: Box<Sharded>,
    },
}

impl Placement {
    /// The database's primary shard, if the database exists.
    pub(crate) fn primary(&self) -> Option<&str> {
        match self {
            Placement::NoDatabase => None,
            Placement::Unsharded { primary } | Placement::Sharded { primary, .. } => Some(primary),
        }
    }
}

impl Sharded {
    /// The chunk holding shard-key value `key` (upper-bound search on `min`, SRV
    /// `chunk_manager.cpp` `findIntersectingChunk`).
    pub(crate) fn chunk_for(&self, key: &Document) -> Option<&Chunk> {
        let i = self
            .chunks
            .partition_point(|c| cmp_keys(&c.min, key) != Ordering::Greater);
        i.checked_sub(1).map(|i| &self.chunks[i])
    }

    /// The distinct shards owning at least one chunk, in first-chunk order.
    pub(crate) fn shards(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.chunks {
            if !out.contains(&c.shard) {
                out.push(c.shard.clone());
            }
        }
        out
    }

    /// The largest chunk version.
    pub(crate) fn max_version(&self) -> Timestamp {
        self.chunks
            .iter()
            .map(|c| c.lastmod)
            .max_by_key(|t| (t.time, t.increment))
            .unwrap_or(version(1, 0))
    }

    /// The `shardVersion` a router attaches to the commands it sends for this collection
    /// (7.0 `{e: epoch, t: timestamp, v: version}`, SRV `chunk_version.cpp`
    /// `ChunkVersion::serialize`; 4.4 `[version, epoch]`).
    pub(crate) fn shard_version(&self, version: ServerVersion) -> Bson {
        let v = self.max_version();
        match (version, self.timestamp) {
            (ServerVersion::V4_4, _) | (_, None) => {
                Bson::Array(vec![Bson::Timestamp(v), Bson::ObjectId(self.epoch)])
            }
            (_, Some(t)) => Bson::Document(doc! {"e": self.epoch, "t": t, "v": v}),
        }
    }

    /// `body` as a versioned command for this collection.
    pub(crate) fn versioned(&self, version: ServerVersion, mut body: Document) -> Document {
        body.insert("shardVersion", self.shard_version(version));
        body
    }

    /// The `config.chunks` filter selecting this collection's chunks (by `uuid` from 5.0,
    /// by `ns` on 4.4).
    pub(crate) fn chunks_filter(&self, version: ServerVersion) -> Document {
        match version {
            ServerVersion::V4_4 => doc! {"ns": self.ns.clone()},
            _ => doc! {"uuid": self.uuid.clone()},
        }
    }
}

/// All documents of `config.<coll>` matching `filter`, in `sort` order.
pub(crate) async fn find_all(
    router: &Router,
    ctx: &mut Ctx<'_>,
    coll: &str,
    filter: Document,
    sort: Document,
) -> CmdResult<Vec<Document>> {
    let reply = router
        .config_cmd(
            ctx,
            "config",
            doc! {"find": coll, "filter": filter, "sort": sort, "batchSize": i32::MAX},
        )
        .await?;
    let mut out = Vec::new();
    let mut cursor = reply.get_document("cursor").cloned().unwrap_or_default();
    loop {
        let id = batch_into(&cursor, &mut out);
        if id == 0 {
            return Ok(out);
        }
        let reply = router
            .config_cmd(ctx, "config", doc! {"getMore": id, "collection": coll})
            .await?;
        cursor = reply.get_document("cursor").cloned().unwrap_or_default();
    }
}

/// A write on the config server (`insert`/`update`/`delete` body); write errors fail it.
pub(crate) async fn config_write(
    router: &Router,
    ctx: &mut Ctx<'_>,
    body: Document,
) -> CmdResult<Document> {
    let reply = router.config_cmd(ctx, "config", body).await?;
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(Bson::Document(e)) = errors.first() {
            return Err(CommandError::from_number(
                e.get_i32("code").unwrap_or(8),
                e.get_str("errmsg").unwrap_or_default(),
            ));
        }
    }
    Ok(reply)
}

/// `config.shards`, by `_id`.
pub(crate) async fn shards(router: &Router, ctx: &mut Ctx<'_>) -> CmdResult<Vec<ShardEntry>> {
    let docs = find_all(router, ctx, "shards", doc! {}, doc! {"_id": 1}).await?;
    Ok(docs
        .into_iter()
        .map(|d| ShardEntry {
            id: d.get_str("_id").unwrap_or_default().to_string(),
            host: d.get_str("host").unwrap_or_default().to_string(),
            draining: d.get_bool("draining").unwrap_or(false),
        })
        .collect())
}

/// The `config.databases` entry of `db`.
pub(crate) async fn database(
    router: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
) -> CmdResult<Option<Document>> {
    let docs = find_all(router, ctx, "databases", doc! {"_id": db}, doc! {}).await?;
    Ok(docs.into_iter().next())
}

/// Where `db.coll` lives.
pub(crate) async fn placement(
    router: &Router,
    ctx: &mut Ctx<'_>,
    db: &str,
    coll: &str,
) -> CmdResult<Placement> {
    let Some(dbdoc) = database(router, ctx, db).await? else {
        return Ok(Placement::NoDatabase);
    };
    let primary = dbdoc.get_str("primary").unwrap_or_default().to_string();
    match sharded(router, ctx, &format!("{db}.{coll}")).await? {
        Some(coll) => Ok(Placement::Sharded {
            primary,
            coll: Box::new(coll),
        }),
        None => Ok(Placement::Unsharded { primary }),
    }
}

/// The sharded collection `ns` with its chunks, if it is sharded.
pub(crate) async fn sharded(
    router: &Router,
    ctx: &mut Ctx<'_>,
    ns: &str,
) -> CmdResult<Option<Sharded>> {
    let docs = find_all(router, ctx, "collections", doc! {"_id": ns}, doc! {}).await?;
    let Some(c) = docs.into_iter().next() else {
        return Ok(None);
    };
    if c.get_bool("dropped").unwrap_or(false) {
        return Ok(None);
    }
    let key = ShardKey::parse(c.get_document("key").map_err(|_| corrupt(ns))?)?;
    let mut s = Sharded {
        ns: ns.to_string(),
        uuid: c.get("uuid").cloned().unwrap_or(Bson::Null),
        epoch: c
            .get_object_id("lastmodEpoch")
            .unwrap_or_else(|_| ObjectId::new()),
        timestamp: c.get_timestamp("timestamp").ok(),
        key,
        unique: c.get_bool("unique").unwrap_or(false),
        chunks: Vec::new(),
    };
    let filter = s.chunks_filter(router.version);
    let chunks = find_all(router, ctx, "chunks", filter, doc! {}).await?;
    let mut chunks: Vec<Chunk> = chunks.into_iter().filter_map(chunk_of).collect();
    chunks.sort_by(|a, b| cmp_keys(&a.min, &b.min));
    s.chunks = chunks;
    Ok(Some(s))
}

fn corrupt(ns: &str) -> CommandError {
    CommandError::from_code(
        ErrorCode::InternalError,
        format!("corrupt config.collections entry for {ns}"),
    )
}

fn chunk_of(d: Document) -> Option<Chunk> {
    Some(Chunk {
        id: d.get("_id")?.clone(),
        lastmod: d.get_timestamp("lastmod").ok()?,
        min: d.get_document("min").ok()?.clone(),
        max: d.get_document("max").ok()?.clone(),
        shard: d.get_str("shard").ok()?.to_string(),
        doc: d,
    })
}

/// A chunk version as `lastmod` stores it: `Timestamp(major, minor)`.
pub(crate) fn version(major: u32, minor: u32) -> Timestamp {
    Timestamp {
        time: major,
        increment: minor,
    }
}
