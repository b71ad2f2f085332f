//! `$changeStream`: change events derived from the oplog (reference §5).
//!
//! The cursor reads `local.oplog.rs` from its start position and runs the same stages a real
//! server runs (SRV `document_source_change_stream.cpp` `buildPipeline`):
//! oplog filter -> unwind `applyOps` (SRV `document_source_change_stream_unwind_transaction.cpp`)
//! -> transform (SRV `change_stream_event_transform.cpp`) -> check invalidate
//! (SRV `document_source_change_stream_check_invalidate.cpp`) -> resume-token checks
//! (SRV `document_source_change_stream_ensure_resume_token_present.cpp`,
//! `..._check_resumability.cpp`) -> pre/post-image lookup -> the user's stages ->
//! `$changeStreamSplitLargeEvent` (SRV `change_stream_split_event_helpers.cpp`).
//! Nothing is taken from a side channel: what the oplog says is what the stream says.
//! Large transactions (`partialTxn` chains) are unwound at their last entry by following
//! `prevOpTime`. A live cursor whose next entry rolled off fails with 136
//! CappedPositionLost (the tailable oplog scan), a resume point older than the oplog with
//! 286 ChangeStreamHistoryLost.
//!
//! Pre- and post-images (`fullDocumentBeforeChange`, `fullDocument: whenAvailable|required`):
//! a collection with `changeStreamPreAndPostImages: {enabled: true}` (set by `create` or
//! `collMod`) records, for each update/replace/delete, the document before (and after) the
//! write, keyed like SRV `config.system.preimages` by `(ts, applyOpsIndex, nsUUID)`
//! (`engine::images`); images expire with the oplog window. The server computes post-images
//! from the pre-image plus the update; storing the result is observably the same.

use std::collections::VecDeque;
use std::sync::Arc;

use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};

use super::failpoint::FailPoints;
use super::{wrong_type, Ctx, Request};
use crate::engine::clock::{ts_from_key, ts_key};
use crate::engine::cursor::{Batch, BatchBuilder, CursorEntry, CursorSource, DEFAULT_FIRST_BATCH};
use crate::engine::images::{ImageKey, StoredImage};
use crate::engine::oplog::Oplog;
use crate::engine::Engine;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::query::change_event::{self, ALLOWED_STAGES};
use crate::query::pipeline::Pipeline;
use crate::query::update_description;
use crate::resume_token::{ResumeToken, ResumeTokenData};
use crate::ServerVersion;

mod raw_insert;

/// Largest event without `$changeStreamSplitLargeEvent` (SRV `BSONObjMaxInternalSize`, the
/// limit the 10334 message names, reference §8.5): bigger ones fail with 10334.
const MAX_EVENT_BYTES: usize = 16_793_600;

/// The stage that splits events over 16 MB into fragments (7.0; reference §5.10).
const SPLIT_STAGE: &str = "$changeStreamSplitLargeEvent";

/// SRV `DocumentSourceChangeStreamSplitLargeEvent::kBSONObjMaxChangeEventSize`
/// (`BSONObjMaxInternalSize - 8 KiB`): larger events are split.
const MAX_CHANGE_EVENT_SIZE: usize = 16_793_600 - 8 * 1024;

/// Operation types a stream without `showExpandedEvents` reports
/// (SRV `change_stream_helpers_legacy.h` `kClassicOperationTypes`).
const CLASSIC_TYPES: &[&str] = &[
    "insert",
    "update",
    "replace",
    "delete",
    "drop",
    "rename",
    "dropDatabase",
    "invalidate",
];

/// Whether the request is an aggregate with a `$changeStream` stage anywhere (the first-stage
/// rule is checked by [`aggregate`]).
pub(crate) fn is_change_stream(req: &Request) -> bool {
    req.name == "aggregate"
        && matches!(req.body.get("pipeline"), Some(Bson::Array(p))
            if p.iter().any(|s| matches!(s, Bson::Document(d) if d.contains_key("$changeStream"))))
}

/// What the stream watches.
#[derive(Debug, Clone, PartialEq)]
enum Level {
    Collection { db: String, coll: String },
    Database { db: String },
    Cluster,
}

impl Level {
    /// The `ns` of the stream's cursor.
    fn cursor_ns(&self) -> String {
        match self {
            Level::Collection { db, coll } => format!("{db}.{coll}"),
            Level::Database { db } => format!("{db}.$cmd.aggregate"),
            Level::Cluster => "admin.$cmd.aggregate".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FullDocument {
    Default,
    UpdateLookup,
    WhenAvailable,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BeforeChange {
    Off,
    WhenAvailable,
    Required,
}

/// The parsed `$changeStream` stage (SRV IDL `DocumentSourceChangeStreamSpec`).
#[derive(Debug, Clone)]
struct Spec {
    full_document: FullDocument,
    before_change: BeforeChange,
    resume_after: Option<ResumeToken>,
    start_after: Option<ResumeToken>,
    start_at: Option<Timestamp>,
    all_changes_for_cluster: bool,
    show_expanded: bool,
    show_raw_update_description: bool,
    /// The pipeline ends with `$changeStreamSplitLargeEvent` (7.0).
    split_large: bool,
}

fn parse_spec(stage: &Bson, version: ServerVersion) -> CmdResult<Spec> {
    let Bson::Document(d) = stage else {
        // SRV document_source_change_stream.cpp
        return Err(CommandError::from_code(
            ErrorCode::ChangeStreamSpecNotObject,
            "$changeStream stage expects a document as argument",
        ));
    };
    let mut spec = Spec {
        full_document: FullDocument::Default,
        before_change: BeforeChange::Off,
        resume_after: None,
        start_after: None,
        start_at: None,
        all_changes_for_cluster: false,
        show_expanded: false,
        show_raw_update_description: false,
        split_large: false,
    };
    let modern = version != ServerVersion::V4_4;
    for (key, value) in d {
        let field = format!("$changeStream.{key}");
        match key.as_str() {
            "fullDocument" => {
                let Bson::String(s) = value else {
                    return Err(wrong_type(&field, value, "string"));
                };
                spec.full_document = match s.as_str() {
                    "default" => FullDocument::Default,
                    "updateLookup" => FullDocument::UpdateLookup,
                    "whenAvailable" if modern => FullDocument::WhenAvailable,
                    "required" if modern => FullDocument::Required,
                    other => return Err(bad_enum(other, &field)),
                };
            }
            "fullDocumentBeforeChange" if modern => {
                let Bson::String(s) = value else {
                    return Err(wrong_type(&field, value, "string"));
                };
                spec.before_change = match s.as_str() {
                    "off" => BeforeChange::Off,
                    "whenAvailable" => BeforeChange::WhenAvailable,
                    "required" => BeforeChange::Required,
                    other => return Err(bad_enum(other, &field)),
                };
            }
            "resumeAfter" | "startAfter" => {
                let Bson::Document(t) = value else {
                    return Err(wrong_type(&field, value, "object"));
                };
                let tok = ResumeToken::parse(t)?;
                if key == "resumeAfter" {
                    spec.resume_after = Some(tok);
                } else {
                    spec.start_after = Some(tok);
                }
            }
            "startAtOperationTime" => match value {
                Bson::Timestamp(ts) => spec.start_at = Some(*ts),
                other => return Err(wrong_type(&field, other, "timestamp")),
            },
            "allChangesForCluster" => spec.all_changes_for_cluster = bool_arg(&field, value)?,
            "showExpandedEvents" if modern => spec.show_expanded = bool_arg(&field, value)?,
            "showRawUpdateDescription" if modern => {
                spec.show_raw_update_description = bool_arg(&field, value)?
            }
            "showMigrationEvents" | "allowToRunOnConfigDB" => {
                bool_arg(&field, value)?;
            }
            "showSystemEvents" | "allowToRunOnSystemNS" | "matchCollectionUUIDForUpdateLookup"
                if modern =>
            {
                bool_arg(&field, value)?;
            }
            _ => return Err(CommandError::unknown_field(key, "$changeStream")),
        }
    }
    if spec.resume_after.is_some() && spec.start_after.is_some() {
        return Err(CommandError::from_code(
            ErrorCode::ChangeStreamResumeAfterAndStartAfter,
            "Do not specify both 'resumeAfter' and 'startAfter' in a $changeStream stage",
        ));
    }
    if spec.start_at.is_some() && (spec.resume_after.is_some() || spec.start_after.is_some()) {
        return Err(CommandError::from_code(
            ErrorCode::ChangeStreamMultipleResumeOptions,
            "Only one type of resume option is allowed, but multiple were found.",
        ));
    }
    Ok(spec)
}

fn bool_arg(field: &str, value: &Bson) -> CmdResult<bool> {
    match value {
        Bson::Boolean(b) => Ok(*b),
        other => Err(wrong_type(field, other, "bool")),
    }
}

/// IDL enum parse failure (SRV idl_parser: 2 BadValue).
fn bad_enum(value: &str, field: &str) -> CommandError {
    CommandError::bad_value(format!(
        "Enumeration value '{value}' for field '{field}' is not a valid value."
    ))
}

/// `aggregate` whose pipeline starts with `$changeStream` (reference §5.1–§5.3).
pub(crate) async fn aggregate(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let shared = ctx.shared.clone();
    let version = shared.opts.version;
    let docs = stage_documents(&req)?;
    let batch_size = first_batch_size(&req)?;
    let stage0 = docs[0].get("$changeStream").cloned().unwrap_or(Bson::Null);
    let mut spec = parse_spec(&stage0, version)?;
    if ctx.autocommit.is_some() {
        // SRV document_source_change_stream.cpp
        return Err(CommandError::from_code(
            ErrorCode::OperationNotSupportedInTransaction,
            "$changeStream cannot run within a multi-document transaction",
        ));
    }

    // SRV document_source_change_stream.cpp assertIsLegalSpecification
    if !shared.is_repl_set() {
        return Err(CommandError::from_code(
            ErrorCode::ChangeStreamNotReplicaSet,
            "The $changeStream stage is only supported on replica sets",
        ));
    }
    let level = watched_level(&req, &spec)?;
    let needs_merge = shared.opts.cluster_role == crate::ClusterRole::ShardServer
        && req.body.get_bool("needsMerge").unwrap_or(false);
    let user_pipeline = Pipeline::parse(user_stages(&docs, &mut spec, version)?)?;

    check_resume_after(&spec)?;
    let default_version = new_token_version(&req, &spec, version);
    let failpoints = shared.failpoints.clone();
    let ns = level.cursor_ns();

    let (batch, extras, cursor_id) = {
        let mut engine = shared.engine.lock();
        if let Level::Collection { db, coll } = &level {
            if engine.catalog.view(db, coll).is_some() {
                return Err(CommandError::from_code(
                    ErrorCode::CommandNotSupportedOnView,
                    format!("Namespace {db}.{coll} is a view, not a collection"),
                ));
            }
        }
        let mut cursor = ChangeStreamCursor::new(
            &engine,
            level,
            spec,
            user_pipeline,
            version,
            default_version,
            failpoints,
        )?;
        cursor.needs_merge = needs_merge;
        let batch = if batch_size == 0 {
            Batch::default()
        } else {
            cursor.produce(&mut engine, Some(batch_size))?
        };
        cursor.first_batch_served = true;
        let extras = cursor.cursor_extras();
        let id = if batch.exhausted {
            0
        } else {
            let mut entry = CursorEntry::new(ns.clone(), Box::new(cursor));
            entry.lsid = ctx.lsid.clone();
            engine.cursors.register(entry)
        };
        (batch, extras, id)
    };
    Ok(first_batch_reply(batch, extras, cursor_id, ns))
}

/// `resumeAfter` may not name an invalidate event (`startAfter` may).
fn check_resume_after(spec: &Spec) -> CmdResult<()> {
    if let Some(tok) = &spec.resume_after {
        let data = tok.decode()?;
        if data.from_invalidate {
            return Err(CommandError::from_code(
                ErrorCode::InvalidResumeToken,
                "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification.",
            ));
        }
    }
    Ok(())
}

/// The resume-token version of new events: 2 on 7.0 unless `$_generateV2ResumeTokens: false`.
fn new_token_version(req: &Request, spec: &Spec, version: ServerVersion) -> i32 {
    match (version, req.body.get("$_generateV2ResumeTokens")) {
        (ServerVersion::V4_4, _) => 1,
        // Split events need v2 tokens (fragmentNum).
        _ if spec.split_large => 2,
        (_, Some(Bson::Boolean(false))) => 1,
        _ => 2,
    }
}

/// The pipeline's stages, each a one-field document, `$changeStream` first only.
fn stage_documents(req: &Request) -> CmdResult<Vec<Document>> {
    let Some(Bson::Array(stages)) = req.body.get("pipeline") else {
        return Err(CommandError::type_mismatch(
            "BSON field 'aggregate.pipeline' is the wrong type, expected type 'array'",
        ));
    };
    let mut docs = Vec::with_capacity(stages.len());
    for s in stages {
        match s {
            Bson::Document(d) if d.len() == 1 => docs.push(d.clone()),
            // SRV document_source.cpp
            _ => {
                return Err(CommandError::from_code(
                    ErrorCode::StageSpecNotSingleField,
                    "A pipeline stage specification object must contain exactly one field.",
                ))
            }
        }
    }
    if docs.iter().skip(1).any(|d| d.contains_key("$changeStream")) {
        return Err(CommandError::from_code(
            ErrorCode::ChangeStreamNotFirstStage,
            "$changeStream is only valid as the first stage in a pipeline.",
        ));
    }
    Ok(docs)
}

/// `cursor.batchSize` of the first batch (the `cursor` option is required).
fn first_batch_size(req: &Request) -> CmdResult<usize> {
    let cursor_opts = match req.body.get("cursor") {
        Some(Bson::Document(c)) => c,
        Some(other) => return Err(wrong_type("aggregate.cursor", other, "object")),
        None => {
            // SRV aggregation_request_helper.cpp
            return Err(CommandError::failed_to_parse(
                "The 'cursor' option is required, except for aggregate with the explain argument",
            ));
        }
    };
    match cursor_opts.get("batchSize") {
        None => Ok(DEFAULT_FIRST_BATCH),
        Some(Bson::Int32(n)) if *n >= 0 => Ok(*n as usize),
        Some(Bson::Int64(n)) if *n >= 0 => Ok(*n as usize),
        Some(Bson::Double(n)) if *n >= 0.0 && n.fract() == 0.0 => Ok(*n as usize),
        Some(_) => Err(CommandError::bad_value(
            "BSON field 'batchSize' value must be >= 0, actual value '-1'",
        )),
    }
}

/// What the stream watches: `aggregate: <coll>`, or `aggregate: 1` on a database (on
/// `admin` with `allChangesForCluster`, the cluster).
fn watched_level(req: &Request, spec: &Spec) -> CmdResult<Level> {
    match req.target() {
        Some(Bson::String(coll)) => collection_level(&req.db, coll, spec),
        Some(Bson::Int32(1)) | Some(Bson::Int64(1)) | Some(Bson::Double(_)) => {
            database_level(&req.db, spec)
        }
        Some(other) => Err(CommandError::invalid_namespace(format!(
            "collection name has invalid type {}",
            crate::query::fmt::type_name(other)
        ))),
        None => Err(CommandError::invalid_namespace(
            "Invalid namespace specified",
        )),
    }
}

/// A stream on collection `db.coll` (not an internal one).
fn collection_level(db: &str, coll: &str, spec: &Spec) -> CmdResult<Level> {
    if spec.all_changes_for_cluster {
        return Err(cluster_stream_misplaced());
    }
    if db == "admin" || db == "config" || db == "local" {
        return Err(internal_database(db));
    }
    if coll.starts_with("system.") {
        return Err(CommandError::invalid_namespace(format!(
            "$changeStream may not be opened on the internal {db}.{coll} collection"
        )));
    }
    Ok(Level::Collection {
        db: db.to_string(),
        coll: coll.to_string(),
    })
}

/// A stream on database `db`, or on the cluster when `db` is `admin`.
fn database_level(db: &str, spec: &Spec) -> CmdResult<Level> {
    if db == "admin" {
        if !spec.all_changes_for_cluster {
            return Err(internal_database(db));
        }
        return Ok(Level::Cluster);
    }
    if spec.all_changes_for_cluster {
        return Err(cluster_stream_misplaced());
    }
    if db == "config" || db == "local" {
        return Err(internal_database(db));
    }
    Ok(Level::Database { db: db.to_string() })
}

/// 72: `allChangesForCluster` outside `aggregate: 1` on `admin`.
fn cluster_stream_misplaced() -> CommandError {
    CommandError::from_code(
        ErrorCode::InvalidOptions,
        "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database, and with no collection name",
    )
}

/// InvalidNamespace: a stream on the internal database `db`.
fn internal_database(db: &str) -> CommandError {
    CommandError::invalid_namespace(format!(
        "$changeStream may not be opened on the internal {db} database"
    ))
}

/// The user's stages after `$changeStream` (reference §5.1), allowed ones only; a last
/// `$changeStreamSplitLargeEvent` (7.0) is not among them but sets `spec.split_large`.
fn user_stages<'a>(
    docs: &'a [Document],
    spec: &mut Spec,
    version: ServerVersion,
) -> CmdResult<&'a [Document]> {
    let mut user_stages: &[Document] = &docs[1..];
    for (i, d) in docs.iter().enumerate().skip(1) {
        let name = d.keys().next().map(String::as_str).unwrap_or("");
        if ALLOWED_STAGES.contains(&name) {
            continue;
        }
        if name == SPLIT_STAGE && version != ServerVersion::V4_4 {
            // SRV document_source_change_stream_split_large_event.cpp
            if !matches!(d.get(SPLIT_STAGE), Some(Bson::Document(s)) if s.is_empty()) {
                return Err(CommandError::from_code(
                    ErrorCode::SplitLargeEventSpecNotEmpty,
                    "$changeStreamSplitLargeEvent spec should be an empty object",
                ));
            }
            if i + 1 != docs.len() {
                return Err(CommandError::from_code(
                    ErrorCode::SplitLargeEventNotLast,
                    "$changeStreamSplitLargeEvent must be the last stage in the pipeline",
                ));
            }
            spec.split_large = true;
            user_stages = &docs[1..i];
            continue;
        }
        // SRV document_source_change_stream.cpp (stage constraints), document_source.cpp
        // parse (40324): the rule the client-side pipeline applies too.
        change_event::check_stage(name)?;
    }
    Ok(user_stages)
}

/// The reply to the `aggregate`: `{cursor: {firstBatch, postBatchResumeToken, id, ns}}`.
fn first_batch_reply(batch: Batch, extras: Document, cursor_id: i64, ns: String) -> Document {
    let first_batch: Vec<Bson> = batch
        .docs
        .into_iter()
        .filter_map(|raw| raw.to_document().ok().map(Bson::Document))
        .collect();
    let mut cursor = doc! {"firstBatch": first_batch};
    for (k, v) in extras {
        cursor.insert(k, v);
    }
    cursor.insert("id", cursor_id);
    cursor.insert("ns", ns);
    doc! {"cursor": cursor}
}

/// Where the resume point is, and whether it has been found yet.
#[derive(Debug)]
struct ResumePoint {
    token: ResumeTokenData,
    /// The exact event was seen (event tokens) — or the token is a high-water mark.
    found: bool,
}

/// A change event as built: a document, or the encoded event of a plain insert
/// (`raw_insert`), decoded only when a stage of the user's reads it.
#[derive(Debug)]
enum EventBody {
    Doc(Document),
    Raw(RawDocumentBuf),
}

/// One change event before the user's stages, with its token.
#[derive(Debug)]
struct Candidate {
    token: ResumeTokenData,
    event: EventBody,
    /// `ns` of the event's collection (for updateLookup): `(db, coll)`.
    lookup: Option<(String, String, Bson)>,
    /// The event is an `invalidate`: the stream closes after it.
    invalidate: bool,
    /// `(ts, applyOpsIndex, ui)` of its pre-/post-image (update, replace, delete).
    image: Option<ImageKey>,
}

/// A change-stream cursor: registered in the engine's cursor registry, served by the normal
/// `getMore` / `killCursors`.
pub(crate) struct ChangeStreamCursor {
    level: Level,
    spec: Spec,
    user_pipeline: Pipeline,
    version: ServerVersion,
    /// Token version of new events (2 on 7.0, 1 on 4.4 or with `$_generateV2ResumeTokens: false`).
    token_version: i32,
    /// Oplog sequence number of the next entry to read.
    next_seq: u64,
    /// `ts` of the last oplog entry read.
    last_scanned: Option<Timestamp>,
    /// Events produced from entries already read but not yet returned.
    pending: VecDeque<Candidate>,
    /// Admitted events (or fragments of a split event) not yet returned.
    ready: VecDeque<(RawDocumentBuf, ResumeTokenData, bool)>,
    /// Resuming from fragment `k` of a split event: the fragments up to `k` are skipped.
    resume_split: Option<usize>,
    resume: Option<ResumePoint>,
    /// The current `postBatchResumeToken`.
    pbrt: Document,
    pbrt_ts: Timestamp,
    /// The token of the last event put in the batch being built: it becomes `pbrt` when
    /// the batch is finished (encoded once per batch, not once per event).
    pbrt_event: Option<ResumeTokenData>,
    invalidated: bool,
    first_batch_served: bool,
    failpoints: Arc<FailPoints>,
    /// A router merges this stream with other shards' (`needsMerge: true` from a router): the
    /// resumed event is returned for the router to check and drop, and a stream that never
    /// saw the resume token is no error here (SRV change streams: the
    /// `$_internalChangeStreamEnsureResumeTokenPresent` stage runs on mongos only).
    needs_merge: bool,
}

impl std::fmt::Debug for ChangeStreamCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStreamCursor")
            .field("level", &self.level)
            .field("next_seq", &self.next_seq)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn add_tick(ts: Timestamp) -> Timestamp {
    ts_from_key(ts_key(ts).saturating_add(1))
}

impl ChangeStreamCursor {
    fn new(
        engine: &Engine,
        level: Level,
        spec: Spec,
        user_pipeline: Pipeline,
        version: ServerVersion,
        token_version: i32,
        failpoints: Arc<FailPoints>,
    ) -> CmdResult<Self> {
        let token = spec.start_after.as_ref().or(spec.resume_after.as_ref());
        let (start_ts, resume, pbrt) = if let Some(tok) = token {
            let data = tok.decode()?;
            let is_hwm = data.is_high_water_mark();
            let start = data.cluster_time;
            (
                start,
                Some(ResumePoint {
                    found: is_hwm,
                    token: data,
                }),
                tok.to_document(),
            )
        } else {
            // SRV change_stream_helpers getStartTimeForNewStream: last applied + 1 tick.
            let start = spec
                .start_at
                .unwrap_or_else(|| add_tick(engine.last_applied()));
            let pbrt = ResumeTokenData::high_water_mark(start, token_version).to_document();
            (start, None, pbrt)
        };
        let Some(oplog) = engine.oplog.as_ref() else {
            return Err(CommandError::from_code(
                ErrorCode::ChangeStreamNotReplicaSet,
                "The $changeStream stage is only supported on replica sets",
            ));
        };
        check_history(oplog.first_ts(), start_ts)?;
        let next_seq = oplog.seek(start_ts, true);
        Ok(Self {
            level,
            spec,
            user_pipeline,
            version,
            token_version,
            next_seq,
            last_scanned: None,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            resume_split: None,
            resume,
            pbrt,
            pbrt_ts: start_ts,
            pbrt_event: None,
            invalidated: false,
            first_batch_served: false,
            failpoints,
            needs_merge: false,
        })
    }

    /// Produces the next batch: events in oplog order, at most `batch_size`.
    fn produce(&mut self, engine: &mut Engine, batch_size: Option<usize>) -> CmdResult<Batch> {
        let batch = self.produce_events(engine, batch_size);
        if let Some(token) = self.pbrt_event.take() {
            self.pbrt = token.to_document();
        }
        batch
    }

    fn produce_events(
        &mut self,
        engine: &mut Engine,
        batch_size: Option<usize>,
    ) -> CmdResult<Batch> {
        let mut out = BatchBuilder::new(batch_size.unwrap_or(0));
        if self.invalidated {
            return Ok(out.finish(true));
        }
        loop {
            // 1. Drain events already produced.
            loop {
                if out.full() {
                    return Ok(out.finish(false));
                }
                let admitted = match self.ready.pop_front() {
                    Some(r) => Some(r),
                    None => match self.pending.pop_front() {
                        Some(c) => match self.admit(engine, c)? {
                            Some((raw, token, inv)) if self.spec.split_large => {
                                self.split_if_large(raw, token, inv)?;
                                continue;
                            }
                            other => other,
                        },
                        None => break,
                    },
                };
                let Some((raw, token, invalidate)) = admitted else {
                    continue;
                };
                if !out.fits(raw.as_bytes().len()) {
                    // Kept for the next batch (16 MiB reply limit).
                    self.ready.push_front((raw, token, invalidate));
                    return Ok(out.finish(false));
                }
                self.set_pbrt_event(token);
                out.push(raw);
                if invalidate {
                    self.invalidated = true;
                    self.pending.clear();
                    return Ok(out.finish(true));
                }
            }
            // 2. Read the next oplog entry.
            let Some(oplog) = engine.oplog.as_ref() else {
                return Ok(out.finish(true));
            };
            if self.next_seq < oplog.first_seq() {
                return Err(self.position_lost());
            }
            let Some(entry) = oplog.get(self.next_seq) else {
                // End of the oplog: advance the high-water mark (reference §5.7).
                if let Some(last) = self.last_scanned {
                    if ts_key(last) > ts_key(self.pbrt_ts) {
                        self.pbrt = ResumeTokenData::high_water_mark(last, self.token_version)
                            .to_document();
                        self.pbrt_ts = last;
                        self.pbrt_event = None;
                    }
                }
                return Ok(out.finish(false));
            };
            let ts = entry.timestamp();
            self.next_seq += 1;
            self.last_scanned = Some(ts);
            let op = entry.raw.get_str("op").unwrap_or("");
            let ns = entry.raw.get_str("ns").unwrap_or("");
            if !self.may_produce_events(&entry.raw, op, ns) {
                continue;
            }
            if let Some(candidate) = self.raw_insert(&entry.raw, op, ns)? {
                self.pending.push_back(candidate);
                continue;
            }
            let mut doc = entry.raw.to_document().map_err(|e| {
                CommandError::from_code(
                    ErrorCode::InternalError,
                    format!("corrupt oplog entry: {e}"),
                )
            })?;
            if self.version == ServerVersion::V4_4 {
                sharded_insert_key_44(&engine.catalog, &mut doc);
            }
            self.events_from_entry(&doc, oplog)?;
        }
    }

    /// Cheap look at the raw entry (SRV builds the same oplog filter on `op`/`ns`): no-ops
    /// and CRUD entries on namespaces the stream does not watch are skipped unparsed.
    fn may_produce_events(&self, raw: &bson::RawDocument, op: &str, ns: &str) -> bool {
        match op {
            // Sharding no-ops become events with showExpandedEvents (reference
            // sharded-clusters.md §5.7).
            "n" => {
                self.spec.show_expanded
                    && raw
                        .get_document("o2")
                        .ok()
                        .is_some_and(|o2| o2.get_str("shardCollection").is_ok())
                    && {
                        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
                        self.watches(db, coll)
                    }
            }
            "i" | "u" | "d" => {
                let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
                if coll == "system.views" {
                    return self.spec.show_expanded
                        && !matches!(self.level, Level::Collection { .. });
                }
                self.watches(db, coll)
            }
            _ => true,
        }
    }

    fn position_lost(&self) -> CommandError {
        match self.last_scanned {
            // SRV collection_scan.cpp
            Some(last) => CommandError::from_code(
                ErrorCode::CappedPositionLost,
                format!(
                    "CollectionScan died due to position in capped collection being deleted. Last seen record id: RecordId({})",
                    ts_key(last)
                ),
            ),
            None => history_lost(),
        }
    }

    fn set_pbrt_event(&mut self, token: ResumeTokenData) {
        self.pbrt_ts = token.cluster_time;
        self.pbrt_event = Some(token);
    }

    /// Resume checks, post-image lookup, user stages, `_id` check. `None`: not returned.
    fn admit(
        &mut self,
        engine: &Engine,
        c: Candidate,
    ) -> CmdResult<Option<(RawDocumentBuf, ResumeTokenData, bool)>> {
        let Candidate {
            token,
            event,
            lookup,
            invalidate,
            image,
        } = c;
        let stored = image.and_then(|k| engine.pre_images.get(&k));
        if !self.past_resume_point(&token)? {
            return Ok(None);
        }
        let mut event = match event {
            // An insert takes no images: with no stage of the user's, it goes out as built.
            EventBody::Raw(raw) if self.user_pipeline.is_empty() => {
                check_event_size(&raw, self.spec.split_large)?;
                return Ok(Some((raw, token, invalidate)));
            }
            EventBody::Raw(raw) => raw.to_document().map_err(|e| {
                CommandError::from_code(
                    ErrorCode::InternalError,
                    format!("cannot decode change event: {e}"),
                )
            })?,
            EventBody::Doc(event) => event,
        };
        // Post-image (updateLookup) for updates; reference §5.2.
        let op_type = event.get_str("operationType").unwrap_or("").to_string();
        if op_type == "update" {
            self.add_post_image(engine, &mut event, lookup.as_ref(), stored)?;
        }
        if matches!(op_type.as_str(), "update" | "replace" | "delete") {
            self.add_pre_image(&mut event, stored)?;
        }
        let id = event.get("_id").cloned();
        let Some(event) = self.user_pipeline.run_one(event)? else {
            // Filtered by the user's stages.
            return Ok(None);
        };
        change_event::check_id_unchanged(&event, id.as_ref())?;
        let raw = encode_event(&event, self.spec.split_large)?;
        Ok(Some((raw, token, invalidate)))
    }

    /// The resume-token checks: whether the event comes after the resume point (events up
    /// to it are not returned); 280 when the stream passes a resume token it never saw.
    fn past_resume_point(&mut self, token: &ResumeTokenData) -> CmdResult<bool> {
        let Some(rp) = &mut self.resume else {
            return Ok(true);
        };
        if self.needs_merge && !rp.found {
            let cmp = compare_to_resume(token, &rp.token);
            if matches!(cmp, ResumeCmp::Before) {
                return Ok(false);
            }
            rp.found = true;
            // The resumed event goes to the router, which checks and drops it; an
            // invalidate (startAfter) is not sent again.
            let found = matches!(cmp, ResumeCmp::Found);
            return Ok(!(found && (rp.token.is_high_water_mark() || rp.token.from_invalidate)));
        }
        if rp.found {
            // Events at or before a high-water-mark / found resume point.
            return Ok(!token_le(token, &rp.token));
        }
        match compare_to_resume(token, &rp.token) {
            ResumeCmp::Before => Ok(false),
            ResumeCmp::Found => {
                rp.found = true;
                match rp.token.fragment_num {
                    // A fragment of this event: split it again (split_if_large) and skip
                    // the fragments up to the resume point.
                    Some(k) if self.spec.split_large => {
                        self.resume_split = Some(k.max(0) as usize);
                        Ok(true)
                    }
                    Some(_) => Err(CommandError::from_code(
                        ErrorCode::ChangeStreamFatalError,
                        "Attempted to resume from a split event fragment, but the event in the resumed stream was not large enough to be split",
                    )),
                    None => Ok(false),
                }
            }
            ResumeCmp::After => {
                // SRV ensure_resume_token_present: 280
                Err(CommandError::from_code(
                    ErrorCode::ChangeStreamFatalError,
                    format!(
                        "cannot resume stream; the resume token was not found. {}",
                        token_display(&rp.token)
                    ),
                ))
            }
        }
    }

    /// `fullDocument` of an update event as the stream's `fullDocument` option asks.
    fn add_post_image(
        &self,
        engine: &Engine,
        event: &mut Document,
        lookup: Option<&(String, String, Bson)>,
        stored: Option<&StoredImage>,
    ) -> CmdResult<()> {
        match self.spec.full_document {
            FullDocument::Default => {}
            FullDocument::UpdateLookup => {
                let current = lookup.and_then(|(db, coll, id)| {
                    let c = engine.catalog.coll(db, coll)?;
                    let rid = c.rid_by_id(id)?;
                    c.get(rid).map(|d| d.doc.clone())
                });
                event.insert(
                    "fullDocument",
                    current.map(Bson::Document).unwrap_or(Bson::Null),
                );
            }
            FullDocument::WhenAvailable | FullDocument::Required
                if stored.is_some_and(|s| s.post.is_some()) =>
            {
                let post = stored.and_then(|s| s.post.clone());
                event.insert(
                    "fullDocument",
                    post.map(Bson::Document).unwrap_or(Bson::Null),
                );
            }
            FullDocument::WhenAvailable => {
                event.insert("fullDocument", Bson::Null);
            }
            FullDocument::Required => {
                // SRV document_source_change_stream_add_post_image.cpp
                return Err(CommandError::from_code(
                    ErrorCode::NoMatchingDocument,
                    format!(
                        "Change stream was configured to require a post-image for all update events, but the post-image was not found for event: {}",
                        crate::query::fmt::doc(event)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `fullDocumentBeforeChange` of an update, replace or delete event as the stream's
    /// `fullDocumentBeforeChange` option asks.
    fn add_pre_image(&self, event: &mut Document, stored: Option<&StoredImage>) -> CmdResult<()> {
        match self.spec.before_change {
            BeforeChange::Off => {}
            BeforeChange::WhenAvailable | BeforeChange::Required if stored.is_some() => {
                let pre = stored.map(|s| s.pre.clone()).unwrap_or_default();
                event.insert("fullDocumentBeforeChange", pre);
            }
            BeforeChange::WhenAvailable => {
                event.insert("fullDocumentBeforeChange", Bson::Null);
            }
            BeforeChange::Required => {
                // SRV document_source_change_stream_add_pre_image.cpp
                return Err(CommandError::from_code(
                    ErrorCode::NoMatchingDocument,
                    format!(
                        "Change stream was configured to require a pre-image for all update, delete and replace events, but the pre-image was not found for event: {}",
                        crate::query::fmt::doc(event)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The events of a committed transaction's operations (`chain`: each `applyOps`
    /// entry's optime and operations, in order), all at `ts`.
    fn unwind(
        &mut self,
        entry: &Document,
        chain: &[(Timestamp, Vec<Bson>)],
        ts: Timestamp,
        wall: Option<Bson>,
    ) -> CmdResult<()> {
        let txn = TxnFields {
            lsid: entry.get("lsid").cloned(),
            txn_number: entry.get("txnNumber").cloned(),
        };
        let mut txn_op_index = 0i32;
        for (apply_ts, ops) in chain {
            for (i, inner_op) in ops.iter().enumerate() {
                if let Bson::Document(inner_op) = inner_op {
                    if !matches!(inner_op.get("fromMigrate"), Some(Bson::Boolean(true))) {
                        let ctx = TxnCtx {
                            txn_op_index,
                            fields: &txn,
                            apply_ts: *apply_ts,
                            apply_index: i as u32,
                        };
                        self.transform(inner_op, ts, wall.clone(), Some(ctx))?;
                    }
                }
                // Counts every op visited, also filtered ones (reference §5.6).
                txn_op_index += 1;
            }
        }
        Ok(())
    }

    /// Turns one oplog entry into candidate events (unwinding `applyOps`).
    fn events_from_entry(&mut self, entry: &Document, oplog: &Oplog) -> CmdResult<()> {
        if matches!(entry.get("fromMigrate"), Some(Bson::Boolean(true))) {
            return Ok(());
        }
        let ts = entry.get_timestamp("ts").unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
        let wall = entry.get("wall").cloned();
        let op = entry.get_str("op").unwrap_or("");
        let o = entry.get_document("o").ok();
        if op == "c" && entry.get_str("ns") == Ok("admin.$cmd") {
            if let Some(o) = o.filter(|o| o.contains_key("applyOps")) {
                if matches!(o.get("partialTxn"), Some(Bson::Boolean(true)))
                    || matches!(o.get("prepare"), Some(Bson::Boolean(true)))
                {
                    // A large transaction is unwound at its last entry (reference §6).
                    return Ok(());
                }
                let chain = transaction_chain(entry, ts, oplog)?;
                return self.unwind(entry, &chain, ts, wall);
            }
            if o.is_some_and(|o| o.contains_key("commitTransaction")) {
                // A prepared transaction commits: its events are the prepare entry's
                // operations at the commit entry's time (SRV
                // change_stream_unwind_transaction / transaction_history_iterator).
                let chain = prepared_chain(entry, oplog)?;
                return self.unwind(entry, &chain, ts, wall);
            }
        }
        self.transform(entry, ts, wall, None)
    }

    /// Whether the namespace `db.coll` is watched.
    fn watches(&self, db: &str, coll: &str) -> bool {
        if coll.starts_with("system.") {
            return false;
        }
        match &self.level {
            Level::Collection { db: d, coll: c } => d == db && c == coll,
            Level::Database { db: d } => d == db,
            Level::Cluster => !matches!(db, "admin" | "config" | "local"),
        }
    }

    fn watches_db(&self, db: &str) -> bool {
        match &self.level {
            Level::Collection { db: d, .. } | Level::Database { db: d } => d == db,
            Level::Cluster => !matches!(db, "admin" | "config" | "local"),
        }
    }

    /// SRV `ChangeStreamDefaultEventTransformation::applyTransformation` for one (possibly
    /// unwound) oplog operation, plus the invalidate the check-invalidate stage adds.
    fn transform(
        &mut self,
        e: &Document,
        ts: Timestamp,
        wall: Option<Bson>,
        txn: Option<TxnCtx<'_>>,
    ) -> CmdResult<()> {
        let ns = e.get_str("ns").unwrap_or("");
        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
        let no_o = Document::new();
        let o = e.get_document("o").unwrap_or(&no_o);
        if coll == "system.views" && !matches!(self.level, Level::Collection { .. }) {
            return self.view_event(e, o, ts, wall, txn);
        }
        let Some(parts) = self.event_parts(e, o, db, coll)? else {
            return Ok(());
        };
        if !self.spec.show_expanded && !CLASSIC_TYPES.contains(&parts.operation_type) {
            return Ok(());
        }
        let uuid = op_uuid(e);
        let image = image_key(parts.operation_type, uuid, ts, txn);
        let txn_op_index = txn.map(|t| t.txn_op_index).unwrap_or(0);
        let token = self.event_token(
            parts.operation_type,
            parts.document_key.as_ref(),
            parts.operation_description.as_ref(),
            ts,
            uuid,
            txn_op_index,
        );
        let lookup = parts.update_lookup();
        let invalidate_token = parts.invalidates.then(|| {
            let mut t = token.clone();
            t.from_invalidate = true;
            t
        });
        let event = self.event_document(e, parts, &token, ts, wall.as_ref(), txn);
        self.pending.push_back(Candidate {
            token,
            event: EventBody::Doc(event),
            lookup,
            invalidate: false,
            image,
        });
        if let Some(t) = invalidate_token {
            self.push_invalidate(t, ts, wall.as_ref());
        }
        Ok(())
    }

    /// The kind-specific fields of the event of one oplog operation, by op family; `None`
    /// when the operation produces no event on this stream.
    fn event_parts(
        &self,
        e: &Document,
        o: &Document,
        db: &str,
        coll: &str,
    ) -> CmdResult<Option<EventParts>> {
        let ns = doc! {"db": db, "coll": coll};
        Ok(match e.get_str("op").unwrap_or("") {
            "i" | "d" | "u" if !self.watches(db, coll) => None,
            "i" => Some(insert_parts(e, o, ns)),
            "d" => Some(EventParts {
                document_key: Some(o.clone()),
                ..EventParts::new("delete", ns)
            }),
            "u" => Some(self.update_parts(e, o, ns)?),
            "c" => self.command_parts(e, o, db),
            "n" => shard_collection_parts(e, db, coll),
            // Other no-ops (periodic, migration markers) produce no events.
            _ => None,
        })
    }

    /// An update entry: a `$v: 2` delta, a 4.4-era `$v: 1` update or a replacement.
    fn update_parts(&self, e: &Document, o: &Document, ns: Document) -> CmdResult<EventParts> {
        let modern = self.version != ServerVersion::V4_4;
        let mut parts = match o.get("$v") {
            Some(v) if num(v) == Some(2) => EventParts {
                update_description: Some(self.delta_update_description(o)?),
                ..EventParts::new("update", ns)
            },
            Some(v) if modern => {
                // SRV change_stream_event_transform.cpp
                return Err(CommandError::from_code(
                    ErrorCode::UnsupportedOplogVersion,
                    format!(
                        "Unsupported or missing oplog version, $v: {}",
                        crate::query::fmt::value(v)
                    ),
                ));
            }
            _ if o.contains_key("_id") && !o.contains_key("$set") && !o.contains_key("$unset") => {
                EventParts {
                    full_document: Some(Bson::Document(o.clone())),
                    ..EventParts::new("replace", ns)
                }
            }
            _ => EventParts {
                update_description: Some(update_description::from_v1(o)),
                ..EventParts::new("update", ns)
            },
        };
        parts.document_key = e.get_document("o2").ok().cloned();
        Ok(parts)
    }

    /// The `updateDescription` (or `rawUpdateDescription`) of a `$v: 2` delta entry `o`.
    fn delta_update_description(&self, o: &Document) -> CmdResult<Document> {
        let diff = o.get_document("diff").cloned().unwrap_or_default();
        Ok(if self.spec.show_raw_update_description {
            o.clone()
        } else if self.version != ServerVersion::V4_4 {
            update_description::from_v2_diff(&diff, self.spec.show_expanded)?
        } else {
            // 4.4-era transform: no truncatedArrays for delta entries either.
            let mut d = update_description::from_v2_diff(&diff, false)?;
            d.remove("truncatedArrays");
            d
        })
    }

    /// A command entry (`op: "c"`): the first command field recognised decides the event.
    fn command_parts(&self, e: &Document, o: &Document, db: &str) -> Option<EventParts> {
        if let Some(Bson::String(c)) = o.get("drop") {
            if !self.watches(db, c) {
                return None;
            }
            return Some(EventParts {
                invalidates: matches!(self.level, Level::Collection { .. }),
                ..EventParts::new("drop", doc! {"db": db, "coll": c.clone()})
            });
        }
        if let Some(Bson::String(from)) = o.get("renameCollection") {
            return self.rename_parts(o, from);
        }
        if o.contains_key("dropDatabase") {
            if !self.watches_db(db) {
                return None;
            }
            return Some(EventParts {
                invalidates: !matches!(self.level, Level::Cluster),
                ..EventParts::new("dropDatabase", doc! {"db": db})
            });
        }
        self.ddl_parts(e, o, db)
    }

    /// `renameCollection` of `from`: seen by streams watching its source or its target.
    fn rename_parts(&self, o: &Document, from: &str) -> Option<EventParts> {
        let target = o.get_str("to").unwrap_or("");
        let (fdb, fcoll) = from.split_once('.').unwrap_or((from, ""));
        let (tdb, tcoll) = target.split_once('.').unwrap_or((target, ""));
        if !self.watches(fdb, fcoll) && !self.watches(tdb, tcoll) {
            return None;
        }
        let to_doc = doc! {"db": tdb, "coll": tcoll};
        let mut desc = Document::new();
        for (k, v) in o {
            match k.as_str() {
                "renameCollection" | "stayTemp" => {}
                "to" => {
                    desc.insert("to", to_doc.clone());
                }
                _ => {
                    desc.insert(k.clone(), v.clone());
                }
            }
        }
        Some(EventParts {
            operation_description: Some(desc),
            to: Some(to_doc),
            invalidates: matches!(self.level, Level::Collection { .. }),
            ..EventParts::new("rename", doc! {"db": fdb, "coll": fcoll})
        })
    }

    /// The DDL events only `showExpandedEvents` streams report ([`DDL_EVENTS`]).
    fn ddl_parts(&self, e: &Document, o: &Document, db: &str) -> Option<EventParts> {
        for (field, operation_type, describe) in DDL_EVENTS {
            let Some(Bson::String(c)) = o.get(*field) else {
                continue;
            };
            if !self.spec.show_expanded || !self.watches(db, c) {
                return None;
            }
            let mut parts = EventParts::new(operation_type, doc! {"db": db, "coll": c.clone()});
            describe(e, o, &mut parts);
            return Some(parts);
        }
        // startIndexBuild, abortIndexBuild, nested applyOps, …: no event.
        None
    }

    /// The event's resume token; SRV makeResumeToken keeps the resumed token's version
    /// until the stream is past the resume point.
    fn event_token(
        &self,
        operation_type: &str,
        document_key: Option<&Document>,
        operation_description: Option<&Document>,
        ts: Timestamp,
        uuid: Option<[u8; 16]>,
        txn_op_index: i32,
    ) -> ResumeTokenData {
        let version = match &self.resume {
            Some(rp)
                if !(ts_key(ts) > ts_key(rp.token.cluster_time)
                    || txn_op_index > rp.token.txn_op_index) =>
            {
                rp.token.version
            }
            _ => self.token_version,
        };
        ResumeTokenData::event(
            ts,
            version,
            txn_op_index,
            uuid,
            operation_type,
            document_key,
            operation_description,
        )
    }

    /// The change event document, its fields in the order a server emits them.
    fn event_document(
        &self,
        e: &Document,
        parts: EventParts,
        token: &ResumeTokenData,
        ts: Timestamp,
        wall: Option<&Bson>,
        txn: Option<TxnCtx<'_>>,
    ) -> Document {
        let expanded = self.version != ServerVersion::V4_4 && self.spec.show_expanded;
        let mut ev = Document::new();
        if let Some(t) = txn {
            if let Some(n) = &t.fields.txn_number {
                ev.insert("txnNumber", n.clone());
            }
            if let Some(l) = &t.fields.lsid {
                ev.insert("lsid", l.clone());
            }
        }
        ev.insert("_id", token.to_document());
        ev.insert("operationType", parts.operation_type);
        ev.insert("clusterTime", ts);
        if expanded && parts.operation_type != "dropDatabase" {
            if let Some(ui) = e.get("ui") {
                ev.insert("collectionUUID", ui.clone());
            }
        }
        self.add_wall_time(&mut ev, wall);
        if let Some(fd) = parts.full_document {
            ev.insert("fullDocument", fd);
        }
        ev.insert("ns", parts.ns);
        if let Some(t) = parts.to {
            ev.insert("to", t);
        }
        if let Some(k) = parts.document_key {
            ev.insert("documentKey", k);
        }
        if expanded {
            if let Some(d) = parts.operation_description {
                ev.insert("operationDescription", d);
            }
        }
        if let Some(u) = parts.update_description {
            let name = if self.spec.show_raw_update_description {
                "rawUpdateDescription"
            } else {
                "updateDescription"
            };
            ev.insert(name, u);
        }
        if let Some(s) = parts.state_before_change {
            ev.insert("stateBeforeChange", s);
        }
        ev
    }

    /// Adds the entry's `wallTime` (not reported by 4.4).
    fn add_wall_time(&self, ev: &mut Document, wall: Option<&Bson>) {
        if self.version != ServerVersion::V4_4 {
            if let Some(w) = wall {
                ev.insert("wallTime", w.clone());
            }
        }
    }

    /// Queues the `invalidate` that follows an invalidating event
    /// (SRV document_source_change_stream_check_invalidate.cpp).
    fn push_invalidate(&mut self, token: ResumeTokenData, ts: Timestamp, wall: Option<&Bson>) {
        let mut inv = doc! {
            "_id": token.to_document(),
            "operationType": "invalidate",
            "clusterTime": ts,
        };
        self.add_wall_time(&mut inv, wall);
        self.pending.push_back(Candidate {
            token,
            event: EventBody::Doc(inv),
            lookup: None,
            invalidate: true,
            image: None,
        });
    }
}

/// The fields of a change event that depend on its kind, filled per op family.
#[derive(Debug)]
struct EventParts {
    operation_type: &'static str,
    full_document: Option<Bson>,
    document_key: Option<Document>,
    update_description: Option<Document>,
    operation_description: Option<Document>,
    state_before_change: Option<Document>,
    ns: Document,
    to: Option<Document>,
    /// A collection or database stream closes after this event.
    invalidates: bool,
}

impl EventParts {
    /// An event of `operation_type` on `ns` with no other fields.
    fn new(operation_type: &'static str, ns: Document) -> Self {
        Self {
            operation_type,
            full_document: None,
            document_key: None,
            update_description: None,
            operation_description: None,
            state_before_change: None,
            ns,
            to: None,
            invalidates: false,
        }
    }

    /// `(db, coll, _id)` that `fullDocument: updateLookup` reads, for update events.
    fn update_lookup(&self) -> Option<(String, String, Bson)> {
        (self.operation_type == "update").then(|| {
            let id = self
                .document_key
                .as_ref()
                .and_then(|k| k.get("_id").cloned())
                .unwrap_or(Bson::Null);
            (
                self.ns.get_str("db").unwrap_or("").to_string(),
                self.ns.get_str("coll").unwrap_or("").to_string(),
                id,
            )
        })
    }
}

/// An insert: the document, and its key (`o2`; `{_id}` in 4.4-format entries without one).
/// The `shardCollection` event of the primary shard's no-op (SRV
/// `change_stream_event_transform.cpp`: `operationDescription` is `o2` without its
/// `shardCollection` field; reference sharded-clusters.md §4.3, §5.7).
fn shard_collection_parts(e: &Document, db: &str, coll: &str) -> Option<EventParts> {
    let o2 = e.get_document("o2").ok()?;
    o2.get_str("shardCollection").ok()?;
    let mut description = o2.clone();
    description.remove("shardCollection");
    Some(EventParts {
        operation_description: Some(description),
        ..EventParts::new("shardCollection", doc! {"db": db, "coll": coll})
    })
}

/// 4.4 inserts carry no `o2`: on a shard, the stream takes the document key's shard-key
/// fields from the collection's sharding metadata (SRV 4.4
/// `document_source_change_stream_transform.cpp` `_documentKeyFields`, reference
/// sharded-clusters.md §4.1); elsewhere the key stays `{_id}`.
fn sharded_insert_key_44(catalog: &crate::engine::catalog::Catalog, entry: &mut Document) {
    if entry.get_str("op") != Ok("i") || entry.contains_key("o2") {
        return;
    }
    let ns = entry.get_str("ns").unwrap_or_default();
    let Some((db, coll)) = ns.split_once('.') else {
        return;
    };
    let Some(pattern) = catalog.coll(db, coll).and_then(|c| c.shard_key.clone()) else {
        return;
    };
    if let Ok(o) = entry.get_document("o") {
        let key = crate::engine::catalog::document_key(&pattern, o);
        entry.insert("o2", key);
    }
}

fn insert_parts(e: &Document, o: &Document, ns: Document) -> EventParts {
    let document_key = match e.get_document("o2") {
        Ok(k) => k.clone(),
        Err(_) => doc! {"_id": o.get("_id").cloned().unwrap_or(Bson::Null)},
    };
    EventParts {
        full_document: Some(Bson::Document(o.clone())),
        document_key: Some(document_key),
        ..EventParts::new("insert", ns)
    }
}

/// Fills in the description of a DDL event from its oplog entry `e` (command object `o`).
type DescribeDdl = fn(e: &Document, o: &Document, parts: &mut EventParts);

/// Expanded DDL events: command field, event type and description, recognised in this order.
const DDL_EVENTS: &[(&str, &str, DescribeDdl)] = &[
    ("create", "create", describe_create),
    ("createIndexes", "createIndexes", describe_create_indexes),
    (
        "commitIndexBuild",
        "createIndexes",
        describe_commit_index_build,
    ),
    ("dropIndexes", "dropIndexes", describe_drop_indexes),
    ("collMod", "modify", describe_coll_mod),
];

/// `d` without its field `key`.
fn without(mut d: Document, key: &str) -> Document {
    d.remove(key);
    d
}

/// `create`: the collection options.
fn describe_create(_: &Document, o: &Document, parts: &mut EventParts) {
    parts.operation_description = Some(without(o.clone(), "create"));
}

/// `createIndexes`: the spec of the index.
fn describe_create_indexes(_: &Document, o: &Document, parts: &mut EventParts) {
    parts.operation_description = Some(doc! {"indexes": [without(o.clone(), "createIndexes")]});
}

/// `commitIndexBuild`: the specs of the built indexes.
fn describe_commit_index_build(_: &Document, o: &Document, parts: &mut EventParts) {
    parts.operation_description =
        Some(doc! {"indexes": o.get("indexes").cloned().unwrap_or(Bson::Null)});
}

/// `dropIndexes`: the spec of the dropped index (kept in `o2`).
fn describe_drop_indexes(e: &Document, _: &Document, parts: &mut EventParts) {
    let spec = e.get_document("o2").cloned().unwrap_or_default();
    parts.operation_description = Some(doc! {"indexes": [without(spec, "dropIndexes")]});
}

/// `collMod`: the changed options, and their old values as `stateBeforeChange`.
fn describe_coll_mod(e: &Document, o: &Document, parts: &mut EventParts) {
    parts.operation_description = Some(without(o.clone(), "collMod"));
    let mut before = Document::new();
    if let Ok(o2) = e.get_document("o2") {
        for (old, name) in [
            ("collectionOptions_old", "collectionOptions"),
            ("indexOptions_old", "indexOptions"),
        ] {
            if let Some(v) = o2.get(old) {
                before.insert(name, v.clone());
            }
        }
    }
    parts.state_before_change = Some(before);
}

/// The collection UUID (`ui`) of an oplog operation.
fn op_uuid(e: &Document) -> Option<[u8; 16]> {
    match e.get("ui") {
        Some(Bson::Binary(b)) if b.bytes.len() == 16 => {
            let mut u = [0u8; 16];
            u.copy_from_slice(&b.bytes);
            Some(u)
        }
        _ => None,
    }
}

/// The key of the images stored for an update, replace or delete on collection `uuid`.
fn image_key(
    operation_type: &str,
    uuid: Option<[u8; 16]>,
    ts: Timestamp,
    txn: Option<TxnCtx<'_>>,
) -> Option<ImageKey> {
    match (operation_type, uuid) {
        ("update" | "replace" | "delete", Some(u)) => Some(ImageKey {
            ts: ts_key(txn.map(|t| t.apply_ts).unwrap_or(ts)),
            apply_ops_index: txn.map(|t| t.apply_index).unwrap_or(0),
            uuid: u,
        }),
        _ => None,
    }
}

impl ChangeStreamCursor {
    /// SRV `ChangeStreamViewDefinitionEventTransformation`: on database and cluster streams
    /// with `showExpandedEvents`, an insert / replacement / delete in `<db>.system.views` is
    /// the `create` / `modify` / `drop` of a view (`nsType` is 8.1+, not emitted here).
    fn view_event(
        &mut self,
        e: &Document,
        o: &Document,
        ts: Timestamp,
        wall: Option<Bson>,
        txn: Option<TxnCtx<'_>>,
    ) -> CmdResult<()> {
        if !self.spec.show_expanded {
            return Ok(());
        }
        let Ok(view_ns) = o.get_str("_id") else {
            return Ok(());
        };
        let (vdb, vcoll) = view_ns.split_once('.').unwrap_or((view_ns, ""));
        if !self.watches(vdb, vcoll) {
            return Ok(());
        }
        let mut desc = o.clone();
        desc.remove("_id");
        let (operation_type, operation_description) = match e.get_str("op").unwrap_or("") {
            "i" => ("create", Some(desc)),
            "u" if o.contains_key("_id") => ("modify", Some(desc)),
            "d" => ("drop", None),
            _ => return Ok(()),
        };
        let uuid = op_uuid(e);
        let txn_op_index = txn.as_ref().map(|t| t.txn_op_index).unwrap_or(0);
        let token = ResumeTokenData::event(
            ts,
            self.token_version,
            txn_op_index,
            uuid,
            operation_type,
            None,
            operation_description.as_ref(),
        );
        let mut ev = doc! {
            "_id": token.to_document(),
            "operationType": operation_type,
            "clusterTime": ts,
        };
        if let Some(w) = wall {
            ev.insert("wallTime", w);
        }
        ev.insert("ns", doc! {"db": vdb, "coll": vcoll});
        if let Some(d) = operation_description {
            ev.insert("operationDescription", d);
        }
        self.pending.push_back(Candidate {
            token,
            event: EventBody::Doc(ev),
            lookup: None,
            invalidate: false,
            image: None,
        });
        Ok(())
    }
}

/// Where an unwound transaction op comes from.
#[derive(Debug, Clone, Copy)]
struct TxnCtx<'a> {
    /// Index of the op within the whole transaction (resume token `txnOpIndex`).
    txn_op_index: i32,
    fields: &'a TxnFields,
    /// `ts` of the `applyOps` entry holding the op and its index there (pre-image key).
    apply_ts: Timestamp,
    apply_index: u32,
}

/// The `applyOps` entries of a transaction ending at `last` (at `ts`), oldest first: a
/// single entry, or a large transaction's chain followed back through `prevOpTime`
/// (SRV `document_source_change_stream_unwind_transaction.cpp`, reference §6).
fn transaction_chain(
    last: &Document,
    ts: Timestamp,
    oplog: &Oplog,
) -> CmdResult<Vec<(Timestamp, Vec<Bson>)>> {
    let ops = |e: &Document| -> Vec<Bson> {
        e.get_document("o")
            .ok()
            .and_then(|o| o.get_array("applyOps").ok())
            .cloned()
            .unwrap_or_default()
    };
    let prev_ts = |e: &Document| -> Option<Timestamp> {
        let p = e
            .get_document("prevOpTime")
            .ok()?
            .get_timestamp("ts")
            .ok()?;
        (p.time != 0 || p.increment != 0).then_some(p)
    };
    let mut chain = vec![(ts, ops(last))];
    if last.get("lsid").is_none() {
        return Ok(chain);
    }
    let mut prev = prev_ts(last);
    while let Some(p) = prev {
        let doc = earlier_entry(oplog, p)?;
        chain.push((p, ops(&doc)));
        prev = prev_ts(&doc);
    }
    chain.reverse();
    Ok(chain)
}

/// The earlier entry of a transaction at `p` (through `prevOpTime`). When it rolled off the
/// oplog: 286 (SRV change_stream_unwind_transaction: IncompleteTransactionHistory -> 286).
fn earlier_entry(oplog: &Oplog, p: Timestamp) -> CmdResult<Document> {
    let seq = oplog.seek(p, true);
    let Some(e) = oplog
        .get(seq)
        .filter(|e| ts_key(e.timestamp()) == ts_key(p))
    else {
        return Err(CommandError::from_code(
            ErrorCode::ChangeStreamHistoryLost,
            format!(
                "Oplog no longer has history necessary for $changeStream to observe operations from a committed transaction. :: caused by :: oplog no longer contains the complete write history of this transaction, log with opTime {{ ts: Timestamp({}, {}), t: 1 }} cannot be found",
                p.time, p.increment
            ),
        ));
    };
    e.raw.to_document().map_err(|e| {
        CommandError::from_code(
            ErrorCode::InternalError,
            format!("corrupt oplog entry: {e}"),
        )
    })
}

/// The operations of the prepare entry a `commitTransaction` entry links to through
/// `prevOpTime`.
fn prepared_chain(commit: &Document, oplog: &Oplog) -> CmdResult<Vec<(Timestamp, Vec<Bson>)>> {
    let Some(p) = commit
        .get_document("prevOpTime")
        .ok()
        .and_then(|p| p.get_timestamp("ts").ok())
    else {
        return Ok(Vec::new());
    };
    let doc = earlier_entry(oplog, p)?;
    let ops = doc
        .get_document("o")
        .ok()
        .and_then(|o| o.get_array("applyOps").ok())
        .cloned()
        .unwrap_or_default();
    Ok(vec![(p, ops)])
}

/// Session fields of an `applyOps` entry.
#[derive(Debug)]
struct TxnFields {
    lsid: Option<Bson>,
    txn_number: Option<Bson>,
}

fn num(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) => Some(*d as i64),
        _ => None,
    }
}

fn encode_event(event: &Document, splittable: bool) -> CmdResult<RawDocumentBuf> {
    let raw = RawDocumentBuf::from_document(event).map_err(|e| {
        CommandError::from_code(
            ErrorCode::InternalError,
            format!("cannot encode change event: {e}"),
        )
    })?;
    check_event_size(&raw, splittable)?;
    Ok(raw)
}

/// 10334 for an event over 16 MB unless it may be split.
fn check_event_size(raw: &bson::RawDocument, splittable: bool) -> CmdResult<()> {
    let n = raw.as_bytes().len();
    if n > MAX_EVENT_BYTES && !splittable {
        let id = raw
            .get("_id")
            .ok()
            .flatten()
            .and_then(|v| Bson::try_from(v.to_raw_bson()).ok())
            .unwrap_or(Bson::Null);
        // SRV bsonobj.cpp _assertInvalid (reference §8.5)
        return Err(CommandError::from_code(
            ErrorCode::BSONObjectTooLarge,
            format!(
                "BSONObj size: {n} (0x{n:X}) is invalid. Size must be between 0 and 16793600(16MB) First element: _id: {}",
                crate::query::fmt::value(&id)
            ),
        ));
    }
    Ok(())
}

impl ChangeStreamCursor {
    /// `$changeStreamSplitLargeEvent`: queues the event as is, or split into fragments when
    /// it is larger than [`MAX_CHANGE_EVENT_SIZE`] (SRV
    /// `document_source_change_stream_split_large_event.cpp` `doGetNext`).
    fn split_if_large(
        &mut self,
        raw: RawDocumentBuf,
        token: ResumeTokenData,
        invalidate: bool,
    ) -> CmdResult<()> {
        let resume_from = self.resume_split.take();
        if raw.as_bytes().len() <= MAX_CHANGE_EVENT_SIZE {
            if resume_from.is_some() {
                return Err(CommandError::from_code(
                    ErrorCode::ChangeStreamFatalError,
                    "Attempted to resume from a split event fragment, but the event in the resumed stream was not large enough to be split",
                ));
            }
            self.ready.push_back((raw, token, invalidate));
            return Ok(());
        }
        let event = raw.to_document().map_err(|e| {
            CommandError::from_code(
                ErrorCode::InternalError,
                format!("cannot decode change event: {e}"),
            )
        })?;
        // Fragment k was returned before the resume: skip it too (the resume-token check
        // after the split stage swallows it on a real server).
        let skip = resume_from.map(|k| k + 1).unwrap_or(0);
        let fragments = split_event(&event, &token, skip)?;
        if skip > 0 && fragments.is_empty() {
            return Err(CommandError::from_code(
                ErrorCode::ChangeStreamFatalError,
                "Attempted to resume from a split event, but the resumed stream produced a different split. Ensure that the pipeline used to resume is the same as the original",
            ));
        }
        for (raw, t) in fragments {
            self.ready.push_back((raw, t, false));
        }
        Ok(())
    }
}

/// BSON size of one element `key: value`.
fn element_size(key: &str, value: &Bson) -> usize {
    let mut d = Document::new();
    d.insert(key, value.clone());
    bson::to_vec(&d)
        .map(|v| v.len().saturating_sub(5))
        .unwrap_or(0)
}

/// SRV `change_stream_split_event_helpers.cpp` `splitChangeEvent`: the fields except `_id`,
/// ordered by (size, name), are packed greedily into fragments
/// `{_id: <token with fragmentNum>, splitEvent: {fragment, of}, …fields}`.
fn split_event(
    event: &Document,
    token: &ResumeTokenData,
    skip: usize,
) -> CmdResult<Vec<(RawDocumentBuf, ResumeTokenData)>> {
    let token_size = event
        .get_document("_id")
        .ok()
        .and_then(|t| bson::to_vec(t).ok())
        .map(|v| v.len())
        .unwrap_or(0);
    let max = MAX_CHANGE_EVENT_SIZE.saturating_sub(token_size);
    let mut fields: Vec<(usize, String, Bson)> = event
        .iter()
        .filter(|(k, _)| k.as_str() != "_id")
        .map(|(k, v)| (element_size(k, v), k.clone(), v.clone()))
        .collect();
    if fields.is_empty() {
        return Err(CommandError::from_code(
            ErrorCode::SplitEventNothingToSplit,
            "Cannot split an empty event or an event containing solely '_id' field",
        ));
    }
    fields.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut fragments: Vec<(Document, ResumeTokenData)> = Vec::new();
    let mut it = fields.into_iter().peekable();
    while it.peek().is_some() {
        let mut t = token.clone();
        t.fragment_num = Some(fragments.len() as i32);
        let mut frag = doc! {
            "_id": t.to_document(),
            "splitEvent": {"fragment": fragments.len() as i32 + 1, "of": 0},
        };
        let mut size = bson::to_vec(&frag).map(|v| v.len()).unwrap_or(0);
        while let Some((s, k, v)) = it.next() {
            frag.insert(k, v);
            size += s;
            match it.peek() {
                Some((next, _, _)) if size + next <= max => {}
                _ => break,
            }
        }
        if size > max {
            return Err(CommandError::from_code(
                ErrorCode::SplitEventFragmentTooLarge,
                format!(
                    "Splitting change event failed: fragment size {size} is greater than maximum allowed fragment size {max}"
                ),
            ));
        }
        fragments.push((frag, t));
    }
    let total = fragments.len() as i32;
    let mut out = Vec::new();
    for (i, (mut frag, t)) in fragments.into_iter().enumerate() {
        if i < skip {
            continue;
        }
        frag.insert("splitEvent", doc! {"fragment": i as i32 + 1, "of": total});
        let raw = RawDocumentBuf::from_document(&frag).map_err(|e| {
            CommandError::from_code(
                ErrorCode::InternalError,
                format!("cannot encode fragment: {e}"),
            )
        })?;
        out.push((raw, t));
    }
    Ok(out)
}

/// 286 ChangeStreamHistoryLost (reference §5.10).
fn history_lost() -> CommandError {
    CommandError::from_code(
        ErrorCode::ChangeStreamHistoryLost,
        "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
    )
}

/// SRV `DocumentSourceChangeStreamCheckResumability` `_assertOplogHasEnoughHistory`: the
/// oldest oplog entry must not be newer than the start point.
fn check_history(first: Option<Timestamp>, start: Timestamp) -> CmdResult<()> {
    match first {
        Some(first) if ts_key(first) > ts_key(start) => Err(history_lost()),
        _ => Ok(()),
    }
}

#[derive(Debug, PartialEq)]
enum ResumeCmp {
    Before,
    Found,
    After,
}

/// SRV `compareAgainstClientResumeToken` (simplified to the fields a single replica set
/// produces): order by clusterTime, then txnOpIndex, then the event identity.
fn compare_to_resume(event: &ResumeTokenData, client: &ResumeTokenData) -> ResumeCmp {
    let (a, b) = (ts_key(event.cluster_time), ts_key(client.cluster_time));
    if a != b {
        return if a < b {
            ResumeCmp::Before
        } else {
            ResumeCmp::After
        };
    }
    if event.txn_op_index != client.txn_op_index {
        return if event.txn_op_index < client.txn_op_index {
            ResumeCmp::Before
        } else {
            ResumeCmp::After
        };
    }
    if event.uuid == client.uuid && event.event_identifier == client.event_identifier {
        return match (event.from_invalidate, client.from_invalidate) {
            (a, b) if a == b => ResumeCmp::Found,
            // The invalidating event precedes the invalidate the token came from.
            (false, true) => ResumeCmp::Before,
            _ => ResumeCmp::After,
        };
    }
    // Same time and index, different event: a db/cluster stream's other namespace at the
    // same optime cannot exist on one node; compare encoded identities.
    let (ea, cb) = (event.encode().data, client.encode().data);
    if ea < cb {
        ResumeCmp::Before
    } else {
        ResumeCmp::After
    }
}

/// Whether `event` sorts at or before the resume point `client` (after it was found).
fn token_le(event: &ResumeTokenData, client: &ResumeTokenData) -> bool {
    match compare_to_resume(event, client) {
        ResumeCmp::Before | ResumeCmp::Found => {
            // A high-water mark at T precedes every event at T.
            !(client.is_high_water_mark()
                && ts_key(event.cluster_time) >= ts_key(client.cluster_time))
        }
        ResumeCmp::After => false,
    }
}

fn token_display(t: &ResumeTokenData) -> String {
    let uuid = t
        .uuid
        .map(|u| bson::Uuid::from_bytes(u).to_string())
        .unwrap_or_else(|| "none".into());
    let id = t
        .event_identifier
        .as_ref()
        .map(crate::query::fmt::doc)
        .unwrap_or_else(|| "missing".into());
    format!(
        "{{clusterTime: Timestamp({}, {}), version: {}, tokenType: {}, txnOpIndex: {}, fromInvalidate: {}, uuid: {uuid}, eventIdentifier: {id}}}",
        t.cluster_time.time,
        t.cluster_time.increment,
        t.version,
        t.token_type,
        t.txn_op_index,
        t.from_invalidate
    )
}

impl CursorSource for ChangeStreamCursor {
    fn next_batch(&mut self, engine: &mut Engine, batch_size: Option<usize>) -> CmdResult<Batch> {
        if self.first_batch_served {
            self.failpoints.get_more_after_checkout()?;
        }
        let r = self.produce(engine, batch_size);
        if let Err(e) = &r {
            if e.code == 286 || e.code == 280 {
                return Err(e.clone().with_label("NonResumableChangeStreamError"));
            }
        }
        r
    }

    fn awaits_data(&self) -> bool {
        true
    }

    fn is_change_stream(&self) -> bool {
        true
    }

    fn cursor_extras(&self) -> Document {
        doc! {"postBatchResumeToken": self.pbrt.clone()}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 100,
            increment: i,
        }
    }

    #[test]
    fn resume_comparison() {
        let u = Some([1u8; 16]);
        let client = ResumeTokenData::event(ts(5), 2, 1, u, "insert", Some(&doc! {"_id": 1}), None);
        let same = client.clone();
        let before = ResumeTokenData::event(ts(5), 2, 0, u, "insert", Some(&doc! {"_id": 0}), None);
        let after = ResumeTokenData::event(ts(6), 2, 0, u, "insert", Some(&doc! {"_id": 0}), None);
        assert_eq!(compare_to_resume(&same, &client), ResumeCmp::Found);
        assert_eq!(compare_to_resume(&before, &client), ResumeCmp::Before);
        assert_eq!(compare_to_resume(&after, &client), ResumeCmp::After);
        let hwm = ResumeTokenData::high_water_mark(ts(5), 2);
        assert!(!token_le(&same, &hwm));
        assert!(token_le(&before, &client));
    }

    /// The insert events `raw_insert` builds from bytes are those of the general path, to
    /// the byte, with and without `showExpandedEvents`, `wall` and `ui`.
    #[test]
    fn raw_insert_matches_the_general_path() {
        let engine = Engine::new(&crate::Options::new());
        let oplog = engine.oplog.as_ref().expect("a replica set has an oplog");
        let full = doc! {
            "op": "i", "ns": "app.users", "ui": bson::Uuid::from_bytes([7; 16]),
            "o": {"_id": 5i64, "name": "x", "tags": ["a"]}, "o2": {"_id": 5i64},
            "ts": ts(9), "t": 1i64, "v": 2i64, "wall": bson::DateTime::from_millis(1_000),
        };
        let entries = [
            full.clone(),
            without(full.clone(), "wall"),
            without(full.clone(), "ui"),
        ];
        for expanded in [false, true] {
            for entry in &entries {
                let spec = doc! {"showExpandedEvents": expanded};
                let mut c = ChangeStreamCursor::new(
                    &engine,
                    Level::Cluster,
                    parse_spec(&Bson::Document(spec), ServerVersion::V7_0).unwrap(),
                    Pipeline::parse(&[]).unwrap(),
                    ServerVersion::V7_0,
                    2,
                    Arc::default(),
                )
                .unwrap();
                let raw = RawDocumentBuf::from_document(entry).unwrap();
                let fast = c
                    .raw_insert(&raw, "i", "app.users")
                    .unwrap()
                    .expect("a plain insert");
                c.events_from_entry(entry, oplog).unwrap();
                let general = c.pending.pop_front().expect("the general path's event");
                let (EventBody::Raw(fast_event), EventBody::Doc(event)) =
                    (fast.event, general.event)
                else {
                    panic!("raw_insert builds raw events, the general path documents");
                };
                assert_eq!(fast_event, RawDocumentBuf::from_document(&event).unwrap());
                assert_eq!(fast.token, general.token);
            }
        }
    }

    #[test]
    fn history_check() {
        assert!(check_history(Some(ts(5)), ts(5)).is_ok());
        assert_eq!(check_history(Some(ts(6)), ts(5)).unwrap_err().code, 286);
    }

    #[test]
    fn spec_validation() {
        let v = ServerVersion::V7_0;
        assert_eq!(parse_spec(&Bson::Int32(1), v).unwrap_err().code, 50808);
        assert_eq!(
            parse_spec(&Bson::Document(doc! {"foo": 1}), v)
                .unwrap_err()
                .code,
            40415
        );
        assert_eq!(
            parse_spec(&Bson::Document(doc! {"fullDocument": "nope"}), v)
                .unwrap_err()
                .code,
            2
        );
        assert_eq!(
            parse_spec(
                &Bson::Document(doc! {"showExpandedEvents": true}),
                ServerVersion::V4_4
            )
            .unwrap_err()
            .code,
            40415
        );
        let t = ResumeTokenData::high_water_mark(ts(1), 2).to_document();
        assert_eq!(
            parse_spec(
                &Bson::Document(doc! {"resumeAfter": t.clone(), "startAfter": t.clone()}),
                v
            )
            .unwrap_err()
            .code,
            50865
        );
        assert_eq!(
            parse_spec(
                &Bson::Document(doc! {"resumeAfter": t, "startAtOperationTime": ts(1)}),
                v
            )
            .unwrap_err()
            .code,
            40674
        );
    }
}
