//! Change streams through a router (reference sharded-clusters.md §5).
//!
//! The `$changeStream` aggregate goes to every shard (SRV `sharded_agg_helpers.cpp`
//! `mustRunOnAllShards`) with `needsMerge: true`, the same start point (without one, the
//! router's cluster time plus one tick, SRV-DOC-CS "Change Stream Start Time") and the
//! user's stages, which run on the shards. The router merges the shard cursors as
//! `AsyncResultsMerger` does for a tailable sort on the resume token (SRV
//! `async_results_merger.cpp` `_readySortedTailable`): the smallest buffered event is
//! returned only when it sorts at or before every other shard's promise (its next buffered
//! event, else the `postBatchResumeToken` of its last batch), so an idle shard holds the
//! stream back until its periodic no-op advances its token (§5.3). The router's
//! `postBatchResumeToken` is the last returned event's token, or, when nothing more is
//! ready, the smallest promise (`getHighWaterMark`, §5.6). When resuming from an event
//! token, the router checks that the merged stream starts with that event and drops it
//! (`$_internalChangeStreamEnsureResumeTokenPresent`, 280 otherwise). Shards added later
//! are picked up from `config.shards` and joined from their `topologyTime` (§5.4).
//! Migrations never show: shards hide `fromMigrate` entries (§5.5).

use std::collections::VecDeque;

use bson::{doc, Bson, Document, Timestamp};

use super::cursor::Source;
use super::meta;
use super::{forwardable, Router};
use crate::commands::{Ctx, Request};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::resume_token::ResumeToken;

/// One shard's change stream cursor inside a merged stream.
#[derive(Debug)]
struct ShardStream {
    shard: String,
    id: i64,
    buffer: VecDeque<Document>,
    /// `_data` of the last `postBatchResumeToken`.
    promise: Option<String>,
    promise_doc: Option<Document>,
}

/// A merged change stream (a router cursor's source).
#[derive(Debug)]
pub(crate) struct Merged {
    db: String,
    /// `collection` of the shard getMores (`coll` or `$cmd.aggregate`).
    coll: String,
    /// The shards' aggregate body, `$changeStream` spec without start point.
    template: Document,
    streams: Vec<ShardStream>,
    /// The router's `postBatchResumeToken`.
    pbrt: Option<Document>,
    /// `_data` of an event token the stream must start with (resumeAfter / startAfter).
    resume: Option<String>,
    invalidated: bool,
}

fn token_data(d: &Document) -> Option<String> {
    d.get_str("_data").ok().map(str::to_string)
}

fn event_token(ev: &Document) -> Option<String> {
    ev.get_document("_id").ok().and_then(token_data)
}

/// `aggregate` with `$changeStream` on a router.
pub(crate) async fn aggregate(r: &Router, ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    if super::txn::in_transaction(ctx) {
        return Err(CommandError::from_code(
            ErrorCode::OperationNotSupportedInTransaction,
            "$changeStream cannot run within a multi-document transaction",
        ));
    }
    let mut body = forwardable(&req.body);
    let Some(Bson::Array(mut pipeline)) = body.remove("pipeline") else {
        return Err(CommandError::type_mismatch("'pipeline' must be an array"));
    };
    let Some(Bson::Document(stage)) = pipeline.first().cloned() else {
        return Err(CommandError::type_mismatch(
            "pipeline stages must be objects",
        ));
    };
    let Ok(spec) = stage.get_document("$changeStream").cloned() else {
        return Err(CommandError::from_code(
            ErrorCode::ChangeStreamSpecNotObject,
            "the $changeStream stage must be specified as an object",
        ));
    };
    let mut start = Document::new();
    let mut base_spec = spec.clone();
    for k in ["resumeAfter", "startAfter", "startAtOperationTime"] {
        if let Some(v) = base_spec.remove(k) {
            start.insert(k, v);
        }
    }
    let shards: Vec<String> = meta::shards(r, ctx)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    if start.is_empty() {
        // The router's clock first takes in every shard's time (a real mongos hears it
        // constantly from its replica set monitors), so the stream starts after every write
        // that completed before it was opened.
        let pings = shards
            .iter()
            .map(|s| (s.clone(), doc! {"ping": 1}))
            .collect();
        for reply in r.forward_all(ctx, "admin", pings).await? {
            reply?;
        }
        let now = ctx.shared.engine.lock().cluster_time();
        start.insert("startAtOperationTime", add_tick(now));
    }
    let resume = ["resumeAfter", "startAfter"]
        .iter()
        .find_map(|k| start.get_document(k).ok())
        .and_then(|t| {
            let parsed = ResumeToken::parse(t).ok()?;
            let decoded = parsed.decode().ok()?;
            // A high-water mark names no event; an invalidate token (startAfter) names one
            // the shards do not send again.
            (!decoded.is_high_water_mark() && !decoded.from_invalidate).then_some(parsed.data)
        });
    pipeline[0] = Bson::Document(doc! {"$changeStream": base_spec});
    body.insert("pipeline", pipeline);
    body.insert("needsMerge", true);
    body.insert("fromMongos", true);
    let coll = match req.target() {
        Some(Bson::String(c)) => c.clone(),
        _ => "$cmd.aggregate".to_string(),
    };
    let ns = format!("{}.{coll}", req.db);
    let mut merged = Merged {
        db: req.db.clone(),
        coll,
        template: body,
        streams: Vec::new(),
        pbrt: None,
        resume,
        invalidated: false,
    };
    let shards: Vec<String> = meta::shards(r, ctx)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    merged.open(r, ctx, &shards, &start).await?;
    let batch_size = req
        .body
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get("batchSize"))
        .and_then(Bson::as_i64_lossy)
        .map_or(0, |n| n.max(0) as usize);
    let batch = merged.ready(batch_size)?;
    let done = merged.invalidated && merged.streams.iter().all(|s| s.buffer.is_empty());
    let pbrt = merged.pbrt.clone().unwrap_or_default();
    let id = if done {
        merged.kill(r, ctx).await;
        0
    } else {
        r.cursors.register(
            &ns,
            Source::ChangeStream(Box::new(merged)),
            ctx.lsid.clone(),
        )
    };
    Ok(reply(&ns, id, batch, pbrt, true))
}

trait AsI64Lossy {
    fn as_i64_lossy(&self) -> Option<i64>;
}

impl AsI64Lossy for Bson {
    fn as_i64_lossy(&self) -> Option<i64> {
        match self {
            Bson::Int32(i) => Some(i64::from(*i)),
            Bson::Int64(i) => Some(*i),
            Bson::Double(d) => Some(*d as i64),
            _ => None,
        }
    }
}

fn add_tick(ts: Timestamp) -> Timestamp {
    Timestamp {
        time: ts.time,
        increment: ts.increment.saturating_add(1),
    }
}

/// A change-stream cursor reply: `{cursor: {firstBatch|nextBatch, postBatchResumeToken, id,
/// ns}}`.
pub(crate) fn reply(
    ns: &str,
    id: i64,
    batch: Vec<Document>,
    pbrt: Document,
    first: bool,
) -> Document {
    let field = if first { "firstBatch" } else { "nextBatch" };
    doc! {"cursor": {field: batch, "postBatchResumeToken": pbrt, "id": id, "ns": ns}}
}

impl Merged {
    /// Opens the stream on `shards` from `start` (`resumeAfter` / `startAfter` /
    /// `startAtOperationTime`).
    async fn open(
        &mut self,
        r: &Router,
        ctx: &mut Ctx<'_>,
        shards: &[String],
        start: &Document,
    ) -> CmdResult<()> {
        let mut sends = Vec::new();
        for shard in shards {
            let mut body = self.template.clone();
            if let Ok(pipeline) = body.get_array_mut("pipeline") {
                if let Some(Bson::Document(stage)) = pipeline.first_mut() {
                    if let Ok(spec) = stage.get_document_mut("$changeStream") {
                        for (k, v) in start {
                            spec.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            sends.push((shard.clone(), body));
        }
        let replies = r.forward_all(ctx, &self.db, sends).await?;
        let mut first_err = None;
        for (shard, reply) in shards.iter().zip(replies) {
            match reply {
                Ok(reply) => self.absorb_batch(shard, &reply, true),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            self.kill(r, ctx).await;
            return Err(e);
        }
        Ok(())
    }

    /// Takes a shard's batch and promise.
    fn absorb_batch(&mut self, shard: &str, reply: &Document, first: bool) {
        let cursor = reply.get_document("cursor").cloned().unwrap_or_default();
        let field = if first { "firstBatch" } else { "nextBatch" };
        let docs: Vec<Document> = cursor
            .get_array(field)
            .map(|a| a.iter().filter_map(|d| d.as_document().cloned()).collect())
            .unwrap_or_default();
        let pbrt = cursor.get_document("postBatchResumeToken").ok().cloned();
        let id = cursor.get_i64("id").unwrap_or(0);
        let stream = match self.streams.iter_mut().find(|s| s.shard == shard) {
            Some(s) => s,
            None => {
                self.streams.push(ShardStream {
                    shard: shard.to_string(),
                    id,
                    buffer: VecDeque::new(),
                    promise: None,
                    promise_doc: None,
                });
                self.streams.last_mut().expect("just pushed")
            }
        };
        stream.id = id;
        stream.buffer.extend(docs);
        if let Some(p) = pbrt {
            stream.promise = token_data(&p);
            stream.promise_doc = Some(p);
        }
    }

    /// The smallest promise over the streams other than `skip`: a stream's next buffered
    /// event, else its last `postBatchResumeToken` (`None`: some stream has promised nothing
    /// yet). The flag tells whether the minimum is a buffered event.
    fn min_promise(&self, skip: Option<usize>) -> Option<(String, Document, bool)> {
        let mut min: Option<(String, Document, bool)> = None;
        for (i, s) in self.streams.iter().enumerate() {
            if Some(i) == skip || (s.id == 0 && s.buffer.is_empty()) {
                continue;
            }
            let p = match s.buffer.front() {
                Some(ev) => event_token(ev)
                    .zip(ev.get_document("_id").ok().cloned())
                    .map(|(t, d)| (t, d, true)),
                None => s
                    .promise
                    .clone()
                    .zip(s.promise_doc.clone())
                    .map(|(t, d)| (t, d, false)),
            };
            let p = p?;
            if min.as_ref().is_none_or(|(m, _, _)| p.0 < *m) {
                min = Some(p);
            }
        }
        min
    }

    /// The events ready to return (at most `limit`, 0 = no limit), and the router's new
    /// `postBatchResumeToken`.
    fn ready(&mut self, limit: usize) -> CmdResult<Vec<Document>> {
        let mut out = Vec::new();
        while !self.invalidated && (limit == 0 || out.len() < limit) {
            let Some((i, head)) = self
                .streams
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.buffer.front().and_then(event_token).map(|t| (i, t)))
                .min_by(|a, b| a.1.cmp(&b.1))
            else {
                break;
            };
            let others_ok = match self.min_promise(Some(i)) {
                Some((p, _, _)) => head <= p,
                None => self
                    .streams
                    .iter()
                    .enumerate()
                    .all(|(j, s)| j == i || (s.id == 0 && s.buffer.is_empty())),
            };
            if !others_ok {
                break;
            }
            let Some(ev) = self.streams[i].buffer.pop_front() else {
                break;
            };
            if let Some(want) = self.resume.take() {
                if head == want {
                    continue;
                }
                return Err(CommandError::from_code(
                    ErrorCode::ChangeStreamFatalError,
                    format!("cannot resume stream; the resume token was not found. {{_data: \"{want}\"}}"),
                ));
            }
            if ev.get_str("operationType") == Ok("invalidate") {
                self.invalidated = true;
            }
            self.pbrt = ev.get_document("_id").ok().cloned();
            out.push(ev);
        }
        if !self.invalidated {
            // Nothing more is ready: the high-water mark advances to the smallest promise,
            // unless that is an event still to be returned.
            if let Some((p, doc, false)) = self.min_promise(None) {
                let current = self.pbrt.as_ref().and_then(token_data);
                if current.is_none_or(|c| p > c) {
                    self.pbrt = Some(doc);
                }
            }
        }
        Ok(out)
    }

    /// A getMore on the merged stream.
    pub(crate) async fn get_more(
        &mut self,
        r: &Router,
        ctx: &mut Ctx<'_>,
        batch_size: usize,
        max_time_ms: Option<i64>,
    ) -> CmdResult<(Vec<Document>, Document, bool)> {
        if !self.invalidated {
            self.join_new_shards(r, ctx).await?;
            let mut sends = Vec::new();
            for s in self
                .streams
                .iter()
                .filter(|s| s.buffer.is_empty() && s.id != 0)
            {
                let mut body = doc! {"getMore": s.id, "collection": self.coll.clone()};
                if let Some(ms) = max_time_ms {
                    body.insert("maxTimeMS", ms);
                }
                sends.push((s.shard.clone(), body));
            }
            let shards: Vec<String> = sends.iter().map(|(s, _)| s.clone()).collect();
            let replies = r.forward_all(ctx, &self.db, sends).await?;
            for (shard, reply) in shards.iter().zip(replies) {
                self.absorb_batch(shard, &reply?, false);
            }
        }
        let batch = self.ready(batch_size)?;
        let done = self.invalidated;
        Ok((batch, self.pbrt.clone().unwrap_or_default(), done))
    }

    /// Opens the stream on shards that joined the cluster since (SRV
    /// `document_source_change_stream_handle_topology_change.cpp`: from the shard's
    /// addition on).
    async fn join_new_shards(&mut self, r: &Router, ctx: &mut Ctx<'_>) -> CmdResult<()> {
        let shards = meta::find_all(r, ctx, "shards", doc! {}, doc! {"_id": 1}).await?;
        for s in shards {
            let id = s.get_str("_id").unwrap_or_default().to_string();
            if self.streams.iter().any(|st| st.shard == id) {
                continue;
            }
            let from = match s.get_timestamp("topologyTime") {
                Ok(t) => t,
                Err(_) => ctx.shared.engine.lock().cluster_time(),
            };
            let start = doc! {"startAtOperationTime": from};
            self.open(r, ctx, std::slice::from_ref(&id), &start).await?;
        }
        Ok(())
    }

    /// Kills every shard cursor.
    pub(crate) async fn kill(&self, r: &Router, ctx: &mut Ctx<'_>) {
        for s in self.streams.iter().filter(|s| s.id != 0) {
            let body = doc! {"killCursors": self.coll.clone(), "cursors": [s.id]};
            let _ = r.forward(ctx, &s.shard, &self.db, body).await;
        }
    }
}
