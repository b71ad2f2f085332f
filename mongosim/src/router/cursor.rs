//! Router-owned cursors (reference sharded-clusters.md §3.2; SRV
//! `src/mongo/s/query/cluster_cursor_manager.cpp`): the id a client sees is the router's,
//! unrelated to any shard cursor id, and lives only on this router (another router answers
//! 43 CursorNotFound). A cursor either passes one shard cursor through (a command that went
//! to one shard) or serves results the router gathered and merged itself.

use std::collections::{HashMap, VecDeque};

use bson::{doc, Bson, Document, RawDocumentBuf};

use super::Router;
use crate::commands::{Ctx, Request};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::limits::MAX_BSON_OBJECT_SIZE;

/// Where a router cursor's documents come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A shard's cursor, passed through.
    Shard {
        /// Shard id (`config` for the config server).
        shard: String,
        /// The shard's cursor id.
        id: i64,
        /// `shardVersion` for its getMores (a sharded collection's cursor).
        version: Option<Bson>,
    },
    /// Documents the router already merged.
    Buffered(VecDeque<Document>),
    /// A merged change stream (`change_stream.rs`).
    ChangeStream(Box<super::change_stream::Merged>),
}

#[derive(Debug)]
struct Entry {
    ns: String,
    source: Option<Source>,
    lsid: Option<Document>,
    last_used: std::time::Instant,
}

/// Idle router cursors are reaped after `cursorTimeoutMillis` (10 minutes, as on mongos;
/// SRV `cluster_cursor_manager.cpp` `killMortalCursorsInactiveSince`).
const CURSOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The cursors of one router.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    map: parking_lot::Mutex<HashMap<i64, Entry>>,
}

impl Cursors {
    /// Registers a cursor; returns its id (a random positive Int64).
    pub(crate) fn register(&self, ns: &str, source: Source, lsid: Option<Document>) -> i64 {
        let mut map = self.map.lock();
        let now = std::time::Instant::now();
        map.retain(|_, e| e.source.is_none() || now.duration_since(e.last_used) < CURSOR_TIMEOUT);
        loop {
            let id = rand::random::<i64>() & i64::MAX;
            if id != 0 && !map.contains_key(&id) {
                map.insert(
                    id,
                    Entry {
                        ns: ns.to_string(),
                        source: Some(source),
                        lsid,
                        last_used: now,
                    },
                );
                return id;
            }
        }
    }

    fn check_out(&self, id: i64, ns: &str) -> CmdResult<Source> {
        let mut map = self.map.lock();
        let Some(entry) = map.get_mut(&id) else {
            return Err(not_found(ns, id));
        };
        if entry.ns != ns {
            // SRV cluster_getmore_cmd / cluster_cursor_manager.cpp
            return Err(CommandError::from_code(
                ErrorCode::Unauthorized,
                format!(
                    "Requested getMore on namespace '{ns}', but cursor belongs to a different namespace {}",
                    entry.ns
                ),
            ));
        }
        entry.source.take().ok_or_else(|| {
            CommandError::from_code(
                ErrorCode::CursorInUse,
                format!("cursor id {id} is already in use"),
            )
        })
    }

    fn check_in(&self, id: i64, source: Source) {
        if let Some(entry) = self.map.lock().get_mut(&id) {
            entry.source = Some(source);
            entry.last_used = std::time::Instant::now();
        }
    }

    fn remove(&self, id: i64) -> Option<Source> {
        self.map.lock().remove(&id).and_then(|e| e.source)
    }

    /// Kills the cursors opened under sessions `select` picks (killSessions & co.).
    pub(crate) fn kill_sessions(&self, select: impl Fn(&Document) -> bool) {
        self.map
            .lock()
            .retain(|_, e| !e.lsid.as_ref().is_some_and(&select));
    }
}

/// SRV `cluster_cursor_manager.cpp`: "Cursor not found (namespace: '<ns>', id: <id>)."
fn not_found(ns: &str, id: i64) -> CommandError {
    CommandError::from_code(
        ErrorCode::CursorNotFound,
        format!("Cursor not found (namespace: '{ns}', id: {id})."),
    )
}

/// The reply to a cursor-opening command: `{cursor: {firstBatch, id, ns}}`.
pub(crate) fn cursor_reply(ns: &str, id: i64, batch: Vec<Document>, first: bool) -> Document {
    let field = if first { "firstBatch" } else { "nextBatch" };
    doc! {"cursor": {field: batch, "id": id, "ns": ns}}
}

/// Takes up to `batch_size` documents (0 = no count limit) within the reply size limit.
pub(crate) fn take_batch(docs: &mut VecDeque<Document>, batch_size: usize) -> Vec<Document> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(d) = docs.front() {
        if batch_size > 0 && out.len() >= batch_size {
            break;
        }
        let len = RawDocumentBuf::from_document(d).map_or(0, |r| r.as_bytes().len());
        if !out.is_empty() && bytes + len > MAX_BSON_OBJECT_SIZE {
            break;
        }
        bytes += len;
        if let Some(d) = docs.pop_front() {
            out.push(d);
        }
    }
    out
}

/// Registers the cursor of a reply that one shard produced (its id replaced by a router id)
/// and returns the reply for the client.
pub(crate) fn adopt_shard_cursor(
    r: &Router,
    ctx: &Ctx<'_>,
    shard: &str,
    mut reply: Document,
    version: Option<Bson>,
) -> Document {
    let Ok(cursor) = reply.get_document_mut("cursor") else {
        return reply;
    };
    let id = cursor.get_i64("id").unwrap_or(0);
    if id != 0 {
        let ns = cursor.get_str("ns").unwrap_or_default().to_string();
        let rid = r.cursors.register(
            &ns,
            Source::Shard {
                shard: shard.to_string(),
                id,
                version,
            },
            ctx.lsid.clone(),
        );
        cursor.insert("id", rid);
    }
    reply
}

/// `getMore` on a router cursor.
pub(crate) async fn get_more(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let id = match req.target() {
        Some(Bson::Int64(i)) => *i,
        Some(other) => {
            return Err(CommandError::type_mismatch(format!(
                "BSON field 'getMore.getMore' is the wrong type '{}', expected type 'long'",
                crate::commands::type_name(other)
            )))
        }
        None => 0,
    };
    let coll = req.body.get_str("collection").unwrap_or_default();
    let ns = format!("{}.{coll}", req.db);
    let batch_size = match req.body.get("batchSize") {
        Some(Bson::Int32(n)) => (*n).max(0) as usize,
        Some(Bson::Int64(n)) => (*n).max(0) as usize,
        Some(Bson::Double(n)) => n.max(0.0) as usize,
        _ => 0,
    };
    match r.cursors.check_out(id, &ns)? {
        Source::Shard {
            shard,
            id: shard_id,
            version,
        } => shard_get_more(r, ctx, &req, id, shard, shard_id, version).await,
        Source::ChangeStream(merged) => {
            change_stream_get_more(r, ctx, &req, id, &ns, batch_size, merged).await
        }
        Source::Buffered(mut docs) => {
            let batch = take_batch(&mut docs, batch_size);
            let rid = if docs.is_empty() {
                r.cursors.remove(id);
                0
            } else {
                r.cursors.check_in(id, Source::Buffered(docs));
                id
            };
            Ok(cursor_reply(&ns, rid, batch, false))
        }
    }
}

/// A getMore passed through to the shard cursor behind router cursor `id`.
async fn shard_get_more(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: &Request,
    id: i64,
    shard: String,
    shard_id: i64,
    version: Option<Bson>,
) -> CmdResult<Document> {
    let mut body = super::forwardable(&req.body);
    body.insert("getMore", shard_id);
    if let Some(v) = &version {
        body.insert("shardVersion", v.clone());
    }
    let mut reply = match r.forward(ctx, &shard, &req.db, body).await {
        Ok(reply) => reply,
        Err(e) => {
            r.cursors.remove(id);
            return Err(e);
        }
    };
    let exhausted = reply
        .get_document("cursor")
        .map(|c| c.get_i64("id").unwrap_or(0) == 0)
        .unwrap_or(true);
    if exhausted {
        r.cursors.remove(id);
    } else {
        let source = Source::Shard {
            shard,
            id: shard_id,
            version,
        };
        r.cursors.check_in(id, source);
        if let Ok(c) = reply.get_document_mut("cursor") {
            c.insert("id", id);
        }
    }
    Ok(reply)
}

/// A getMore on a merged change stream.
async fn change_stream_get_more(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: &Request,
    id: i64,
    ns: &str,
    batch_size: usize,
    mut merged: Box<super::change_stream::Merged>,
) -> CmdResult<Document> {
    // SRV cluster_getmore_cmd.cpp evaluates the fail point after the checkout; the error
    // carries the router's change-stream labels (reference §5.10).
    if let Err(e) = ctx.shared.failpoints.get_more_after_checkout() {
        r.cursors.check_in(id, Source::ChangeStream(merged));
        return Err(e);
    }
    let max_time = match req.body.get("maxTimeMS") {
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Double(n)) => Some(*n as i64),
        _ => None,
    };
    match merged.get_more(r, ctx, batch_size, max_time).await {
        Ok((batch, pbrt, done)) => {
            let rid = if done {
                merged.kill(r, ctx).await;
                r.cursors.remove(id);
                0
            } else {
                r.cursors.check_in(id, Source::ChangeStream(merged));
                id
            };
            Ok(super::change_stream::reply(ns, rid, batch, pbrt, false))
        }
        Err(e) => {
            merged.kill(r, ctx).await;
            r.cursors.remove(id);
            Err(e)
        }
    }
}

/// `killCursors` (shard cursors behind router cursors are killed too).
pub(crate) async fn kill_cursors(
    r: &Router,
    ctx: &mut Ctx<'_>,
    req: Request,
) -> CmdResult<Document> {
    let coll = req.target().and_then(Bson::as_str).unwrap_or_default();
    let ns = format!("{}.{coll}", req.db);
    let ids: Vec<i64> = req
        .body
        .get_array("cursors")
        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default();
    let mut killed = Vec::new();
    let mut not_found = Vec::new();
    for id in ids {
        let ok = r.cursors.map.lock().get(&id).is_some_and(|e| e.ns == ns);
        if !ok {
            not_found.push(id);
            continue;
        }
        match r.cursors.remove(id) {
            Some(Source::Shard { shard, id: sid, .. }) => {
                let body = doc! {"killCursors": coll, "cursors": [sid]};
                let _ = r.forward(ctx, &shard, &req.db, body).await;
            }
            Some(Source::ChangeStream(m)) => m.kill(r, ctx).await,
            _ => {}
        }
        killed.push(id);
    }
    Ok(doc! {
        "cursorsKilled": killed,
        "cursorsNotFound": not_found,
        "cursorsAlive": Vec::<i64>::new(),
        "cursorsUnknown": Vec::<i64>::new(),
    })
}
