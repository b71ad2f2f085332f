//! Writing aggregation stages, `$out` and `$merge`, and the `$documents` source stage of
//! database-level aggregates (`aggregate: 1`).
//!
//! `$out` follows SRV `src/mongo/db/pipeline/document_source_out.cpp`: the results go into a
//! temporary collection `<db>.tmp.agg_out.<UUID>` created with `temp: true` and the target's
//! options and indexes, which is then renamed over the target with `dropTarget: true`. The
//! oplog therefore shows `create` (temp), `createIndexes`, the inserts into the temporary
//! collection and one `renameCollection` — exactly the entries a 7.0 primary writes.
//! `$merge` follows SRV `document_source_merge.cpp` / `merge_processor.cpp`: per result
//! document an update (`{$set: doc}` for `merge`, the document for `replace`,
//! `{$setOnInsert: doc}` for `keepExisting`, the pipeline for a pipeline `whenMatched`) with
//! `upsert` when `whenNotMatched: "insert"`, or a plain insert for `whenMatched: "fail"`;
//! these log ordinary `i`/`u` entries.

use bson::{doc, Bson, Document, RawDocumentBuf};

use super::reply::cursor_reply;
use super::Ctx;
use crate::engine::catalog::NsKind;
use crate::engine::{Engine, PendingOp};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::query::matcher::Matcher;
use crate::query::update::{Update, UpdateCtx, UpdateOutcome};

/// The final writing stage of a pipeline.
#[derive(Debug)]
enum WriteStage {
    Out { db: String, coll: String },
    Merge(Box<MergeSpec>),
}

#[derive(Debug, Clone, PartialEq)]
enum WhenMatched {
    Replace,
    KeepExisting,
    Merge,
    Fail,
    Pipeline(Vec<Bson>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum WhenNotMatched {
    Insert,
    Discard,
    Fail,
}

#[derive(Debug)]
struct MergeSpec {
    db: String,
    coll: String,
    on: Vec<String>,
    lets: Option<Document>,
    when_matched: WhenMatched,
    when_not_matched: WhenNotMatched,
}

fn type_name(v: &Bson) -> &'static str {
    crate::query::fmt::type_name(v)
}

/// Whether `pipeline` ends with `$out`/`$merge`; either anywhere else is an error
/// (SRV `pipeline.cpp` `validateCommon`: 40601 "... can only be the final stage in the pipeline").
pub(crate) fn has_write_stage(pipeline: &[Bson]) -> CmdResult<bool> {
    let n = pipeline.len();
    for (i, st) in pipeline.iter().enumerate() {
        let Bson::Document(d) = st else { continue };
        for name in ["$out", "$merge"] {
            if d.contains_key(name) && i + 1 != n {
                return Err(CommandError::from_code(
                    ErrorCode::StageMustBeLast,
                    format!("{name} can only be the final stage in the pipeline"),
                ));
            }
        }
    }
    Ok(
        matches!(pipeline.last(), Some(Bson::Document(d)) if d.contains_key("$out") || d.contains_key("$merge")),
    )
}

/// `{$documents: [...]}` as the first stage of `aggregate: 1`: its documents are the input
/// (SRV `document_source_documents.cpp`; the value must evaluate to an array of objects).
pub(crate) fn documents_stage(
    version: crate::ServerVersion,
    stage: &Document,
) -> CmdResult<Vec<Document>> {
    if version == crate::ServerVersion::V4_4 {
        // `$documents` arrived in 5.1 (SRV document_source_documents.cpp, REGISTER_DOCUMENT_SOURCE)
        return Err(CommandError::from_code(
            ErrorCode::UnrecognizedPipelineStage,
            "Unrecognized pipeline stage name: '$documents'",
        ));
    }
    match stage.get("$documents") {
        Some(Bson::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    Bson::Document(d) => out.push(d.clone()),
                    other => {
                        // SRV document_source_queue / $documents: objects only
                        return Err(CommandError::type_mismatch(format!(
                            "$documents: all elements of the array must be objects, found {}",
                            type_name(other)
                        )));
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(CommandError::from_code(
            ErrorCode::DocumentsNotArray,
            format!(
                "error during $documents evaluation: an array is expected, found {}",
                type_name(other)
            ),
        )),
        None => Ok(Vec::new()),
    }
}

/// `$documents` in a collection-level aggregate: 73 InvalidNamespace (7.0; 8.3 rewords it
/// "... can only be run with database or cluster-level aggregation").
pub(crate) fn documents_on_collection() -> CommandError {
    CommandError::invalid_namespace("'$documents' can only be run with {aggregate: 1}")
}

fn parse_target(v: &Bson, src_db: &str, stage: &str) -> CmdResult<(String, String)> {
    match v {
        Bson::String(s) => Ok((src_db.to_string(), s.clone())),
        Bson::Document(d) => {
            let coll = match d.get("coll") {
                Some(Bson::String(s)) => s.clone(),
                Some(other) => {
                    return Err(super::wrong_type(&format!("{stage}.coll"), other, "string"))
                }
                None => {
                    return Err(CommandError::from_code(
                        ErrorCode::IdlFailedToParse,
                        format!("BSON field '{stage}.coll' is missing but a required field"),
                    ))
                }
            };
            let db = match d.get("db") {
                Some(Bson::String(s)) => s.clone(),
                Some(other) => {
                    return Err(super::wrong_type(&format!("{stage}.db"), other, "string"))
                }
                None if stage == "$merge.into" => src_db.to_string(),
                None => {
                    return Err(CommandError::from_code(
                        ErrorCode::IdlFailedToParse,
                        format!("BSON field '{stage}.db' is missing but a required field"),
                    ))
                }
            };
            for k in d.keys() {
                if k != "db" && k != "coll" {
                    return Err(CommandError::unknown_field(k, stage));
                }
            }
            Ok((db, coll))
        }
        // SRV document_source_out.cpp (7.0): 16990
        other => Err(CommandError::from_code(
            ErrorCode::OutSpecWrongType,
            format!(
                "{} only supports a string or object argument, but found {}",
                stage.trim_end_matches(".into"),
                type_name(other)
            ),
        )),
    }
}

/// Target checks shared by `$out` and `$merge` (SRV `document_source_out.cpp`
/// `createAndAllowDifferentDB`, `document_source_merge.cpp`).
fn check_target(stage: &str, db: &str, coll: &str) -> CmdResult<()> {
    let merge = stage == "$merge";
    if db.is_empty() || coll.is_empty() || coll.starts_with('.') || coll.contains('$') {
        return Err(CommandError::invalid_namespace(if merge {
            format!("Invalid {stage} target namespace: '{db}.{coll}'")
        } else {
            format!("Invalid {stage} target namespace, {db}.{coll}")
        }));
    }
    // $out: 17385 / 31321 "Can't ..."; $merge: 31319 / 31320 "Cannot ..."
    if coll.starts_with("system.") {
        return Err(if merge {
            CommandError::from_code(
                ErrorCode::MergeToSpecialCollection,
                format!("Cannot {stage} to special collection: {coll}"),
            )
        } else {
            CommandError::from_code(
                ErrorCode::OutToSpecialCollection,
                format!("Can't {stage} to special collection: {coll}"),
            )
        });
    }
    if matches!(db, "admin" | "local" | "config") {
        return Err(if merge {
            CommandError::from_code(
                ErrorCode::MergeToInternalDatabase,
                format!("Cannot {stage} to internal database: {db}"),
            )
        } else {
            CommandError::from_code(
                ErrorCode::OutToInternalDatabase,
                format!("Can't {stage} to internal database: {db}"),
            )
        });
    }
    Ok(())
}

/// The final `$out` or `$merge` stage `st` of a pipeline run on `src_db`, parsed and checked.
fn parse_write_stage(st: &Document, src_db: &str) -> CmdResult<WriteStage> {
    if let Some(v) = st.get("$out") {
        let (db, coll) = parse_target(v, src_db, "$out")?;
        check_target("$out", &db, &coll)?;
        return Ok(WriteStage::Out { db, coll });
    }
    let v = st.get("$merge").cloned().unwrap_or(Bson::Null);
    let mut spec = MergeSpec {
        db: src_db.to_string(),
        coll: String::new(),
        on: vec!["_id".to_string()],
        lets: None,
        when_matched: WhenMatched::Merge,
        when_not_matched: WhenNotMatched::Insert,
    };
    match &v {
        Bson::String(s) => spec.coll = s.clone(),
        Bson::Document(d) => parse_merge_fields(d, src_db, &mut spec)?,
        other => {
            // SRV document_source_merge.cpp: 51182
            return Err(CommandError::from_code(
                ErrorCode::MergeSpecWrongType,
                format!(
                    "$merge only supports a string or object argument, not {}",
                    type_name(other)
                ),
            ));
        }
    }
    check_target("$merge", &spec.db, &spec.coll)?;
    check_merge_modes(&spec)?;
    Ok(WriteStage::Merge(Box::new(spec)))
}

/// The fields of a `$merge` document, in their order, into `spec`; `into` is required.
fn parse_merge_fields(d: &Document, src_db: &str, spec: &mut MergeSpec) -> CmdResult<()> {
    let mut into = None;
    for (k, val) in d {
        match k.as_str() {
            "into" => into = Some(parse_target(val, src_db, "$merge.into")?),
            "on" => spec.on = parse_merge_on(val)?,
            "let" => match val {
                Bson::Document(l) => spec.lets = Some(l.clone()),
                other => return Err(super::wrong_type("$merge.let", other, "object")),
            },
            "whenMatched" => spec.when_matched = parse_when_matched(val)?,
            "whenNotMatched" => spec.when_not_matched = parse_when_not_matched(val)?,
            "targetCollectionVersion" => {}
            other => return Err(CommandError::unknown_field(other, "$merge")),
        }
    }
    let Some((db, coll)) = into else {
        return Err(CommandError::from_code(
            ErrorCode::IdlFailedToParse,
            "BSON field '$merge.into' is missing but a required field",
        ));
    };
    spec.db = db;
    spec.coll = coll;
    Ok(())
}

/// `$merge.on`: a field name or a non-empty array of them (SRV document_source_merge_spec.cpp).
fn parse_merge_on(val: &Bson) -> CmdResult<Vec<String>> {
    let a = match val {
        Bson::String(s) => return Ok(vec![s.clone()]),
        Bson::Array(a) => a,
        other => {
            return Err(CommandError::from_code(
                ErrorCode::MergeOnWrongType,
                format!(
                "$merge 'on' field  must be either a string or an array of strings, but found {}",
                type_name(other)
            ),
            ))
        }
    };
    let mut fields = Vec::new();
    for f in a {
        match f {
            Bson::String(s) => fields.push(s.clone()),
            // SRV document_source_merge_spec.cpp: 51134
            _ => {
                return Err(CommandError::from_code(
                    ErrorCode::MergeOnElementNotString,
                    format!(
                        "Array elements of the 'on' field must be strings, but found {}",
                        type_name(f)
                    ),
                ))
            }
        }
    }
    if fields.is_empty() {
        // SRV document_source_merge_spec.cpp: 51187
        return Err(CommandError::from_code(
            ErrorCode::MergeOnEmpty,
            "If explicitly specifying $merge 'on', must include at least one field",
        ));
    }
    Ok(fields)
}

/// `$merge.whenMatched`: a mode name or a pipeline.
fn parse_when_matched(val: &Bson) -> CmdResult<WhenMatched> {
    match val {
        Bson::String(s) => match s.as_str() {
            "replace" => Ok(WhenMatched::Replace),
            "keepExisting" => Ok(WhenMatched::KeepExisting),
            "merge" => Ok(WhenMatched::Merge),
            "fail" => Ok(WhenMatched::Fail),
            other => Err(CommandError::bad_value(format!(
                "Enumeration value '{other}' for field '$merge.whenMatched' is not a valid value."
            ))),
        },
        Bson::Array(p) => Ok(WhenMatched::Pipeline(p.clone())),
        other => Err(CommandError::from_code(
            ErrorCode::MergeWhenMatchedWrongType,
            format!(
                "$merge 'whenMatched' field  must be either a string or an array, but found {}",
                type_name(other)
            ),
        )),
    }
}

/// `$merge.whenNotMatched`: a mode name.
fn parse_when_not_matched(val: &Bson) -> CmdResult<WhenNotMatched> {
    match val {
        Bson::String(s) => match s.as_str() {
            "insert" => Ok(WhenNotMatched::Insert),
            "discard" => Ok(WhenNotMatched::Discard),
            "fail" => Ok(WhenNotMatched::Fail),
            other => Err(CommandError::bad_value(format!(
                "Enumeration value '{other}' for field '$merge.whenNotMatched' is not a valid value."
            ))),
        },
        other => Err(super::wrong_type("$merge.whenNotMatched", other, "string")),
    }
}

/// SRV document_source_merge.cpp DocumentSourceMerge::create: supported mode combinations
/// (51189), `let` only with a pipeline (51199), `new` reserved (51273).
fn check_merge_modes(spec: &MergeSpec) -> CmdResult<()> {
    let supported = match (&spec.when_matched, spec.when_not_matched) {
        (WhenMatched::KeepExisting, WhenNotMatched::Insert) => true,
        (WhenMatched::KeepExisting, _) => false,
        (WhenMatched::Fail, WhenNotMatched::Insert) => true,
        (WhenMatched::Fail, _) => false,
        _ => true,
    };
    let wm = match &spec.when_matched {
        WhenMatched::Replace => "replace",
        WhenMatched::KeepExisting => "keepExisting",
        WhenMatched::Merge => "merge",
        WhenMatched::Fail => "fail",
        WhenMatched::Pipeline(_) => "pipeline",
    };
    if !supported {
        let wnm = match spec.when_not_matched {
            WhenNotMatched::Insert => "insert",
            WhenNotMatched::Discard => "discard",
            WhenNotMatched::Fail => "fail",
        };
        return Err(CommandError::from_code(
            ErrorCode::MergeModeCombinationUnsupported,
            format!(
                "Combination of $merge modes 'whenMatched: {wm}' and 'whenNotMatched: {wnm}' is not supported"
            ),
        ));
    }
    match (&spec.when_matched, &spec.lets) {
        (WhenMatched::Pipeline(_), Some(l)) => {
            if matches!(l.get("new"), Some(v) if v.as_str() != Some("$$ROOT")) {
                return Err(CommandError::from_code(
                    ErrorCode::MergeLetRedefinesNew,
                    "'let' may not define a value for the reserved 'new' variable other than '$$ROOT'",
                ));
            }
        }
        (WhenMatched::Pipeline(_), None) => {}
        (_, Some(_)) => {
            return Err(CommandError::from_code(
                ErrorCode::MergeLetWithoutPipeline,
                format!("Cannot use 'let' variables with 'whenMatched: {wm}' mode"),
            ));
        }
        (_, None) => {}
    }
    Ok(())
}

/// Runs `pipeline` (whose last stage is `$out` or `$merge`) over `input` and writes the
/// result; returns the raw reply: an empty `firstBatch` and cursor id 0 (SRV
/// `run_aggregate.cpp`: a pipeline ending in a writing stage is drained before replying).
pub(crate) fn run(
    ctx: &mut Ctx<'_>,
    engine: &mut Engine,
    src_db: &str,
    ns: &str,
    input: Vec<Document>,
    pipeline: &[Bson],
    body: &Document,
) -> CmdResult<RawDocumentBuf> {
    let Some((Bson::Document(last), head)) = pipeline.split_last() else {
        return Err(CommandError::from_code(
            ErrorCode::InternalError,
            "pipeline without a writing stage",
        ));
    };
    let stage = parse_write_stage(last, src_db)?;
    let stage_name = match stage {
        WriteStage::Out { .. } => "$out",
        WriteStage::Merge(_) => "$merge",
    };
    if ctx.autocommit == Some(false) {
        // SRV document_source_out.cpp / document_source_merge.cpp
        return Err(CommandError::from_code(
            ErrorCode::OperationNotSupportedInTransaction,
            format!("{stage_name} cannot be used in a transaction"),
        ));
    }
    if let Some(Bson::Document(rc)) = body.get("readConcern") {
        if rc.get_str("level").ok() == Some("linearizable") {
            // SRV pipeline.cpp / lite_parsed_document_source: writing stages forbid linearizable
            return Err(CommandError::from_code(
                ErrorCode::InvalidOptions,
                format!("{stage_name} cannot be used with a 'linearizable' read concern level"),
            ));
        }
    }
    let bypass = matches!(
        body.get("bypassDocumentValidation"),
        Some(Bson::Boolean(true))
    );
    let mut stages = Vec::with_capacity(head.len());
    for st in head {
        match st {
            Bson::Document(d) => stages.push(d.clone()),
            _ => {
                return Err(CommandError::type_mismatch(
                    "Each element of the 'pipeline' array must be an object",
                ))
            }
        }
    }
    // the command's `let` and `collation` apply to the stages before the write
    let lets = match body.get("let") {
        Some(Bson::Document(l)) => Some(l.clone()),
        None | Some(Bson::Null) => None,
        Some(other) => return Err(super::wrong_type("aggregate.let", other, "object")),
    };
    let mut p = crate::query::pipeline::Pipeline::parse_with_let(&stages, lets.as_ref())?;
    if let Some(Bson::Document(c)) = body.get("collation") {
        p.set_collation(crate::query::compare::Collation::parse(c)?);
    }
    let vars = crate::query::matcher::eval_lets(lets.as_ref())?;
    let docs = p.run_with_vars(
        input,
        bson::DateTime::now(),
        Some(engine.cluster_time()),
        &vars,
    )?;
    let mut ops: Vec<Document> = Vec::new();
    let result = match &stage {
        WriteStage::Out { db, coll } => write_out(engine, db, coll, docs, bypass, &mut ops),
        WriteStage::Merge(spec) => write_merge(engine, spec, docs, bypass, &mut ops),
    };
    // writes made before an error stay and are logged, as on the server
    let pending: Vec<PendingOp> = ops.into_iter().map(PendingOp::from).collect();
    let ts = engine
        .log(pending, None)
        .unwrap_or_else(|| engine.last_applied());
    ctx.operation_time = Some(ts);
    result?;
    cursor_reply(true, Vec::new(), Document::new(), 0, ns)
}

// ---------------------------------------------------------------- $out

fn write_out(
    engine: &mut Engine,
    db: &str,
    coll: &str,
    docs: Vec<Document>,
    bypass: bool,
    ops: &mut Vec<Document>,
) -> CmdResult<()> {
    let (mut options, indexes) = match engine.catalog.kind(db, coll) {
        NsKind::View(_) => {
            // SRV document_source_out.cpp: the target cannot be a view
            return Err(CommandError::from_code(
                ErrorCode::CommandNotSupportedOnView,
                format!("Namespace {db}.{coll} is a view, not a collection"),
            ));
        }
        NsKind::Collection(c) => {
            if c.is_capped() {
                return Err(CommandError::from_code(
                    ErrorCode::OutToCappedCollection,
                    format!("namespace '{db}.{coll}' is capped so it can't be used for $out"),
                ));
            }
            let ix: Vec<Document> = c
                .indexes
                .iter()
                .filter(|i| i.name() != "_id_")
                .map(|i| i.spec.clone())
                .collect();
            (c.options.clone(), ix)
        }
        NsKind::Missing => (Document::new(), Vec::new()),
    };
    options.remove("uuid");
    // SRV document_source_out.cpp initialize(): create <db>.tmp.agg_out.<UUID> {temp: true, ...}
    let tmp = format!("tmp.agg_out.{}", bson::Uuid::new());
    let mut create_opts = doc! {"temp": true};
    for (k, v) in &options {
        if k != "temp" {
            create_opts.insert(k.clone(), v.clone());
        }
    }
    ops.extend(engine.catalog.create_collection(db, &tmp, &create_opts)?);
    let filled = (|| -> CmdResult<()> {
        for ix in indexes {
            ops.extend(engine.catalog.create_indexes(db, &tmp, vec![ix])?);
        }
        for d in &docs {
            let d = crate::engine::docs::fix_document_for_insert(engine, d)?;
            if !bypass {
                crate::engine::validation::check(engine, db, &tmp, &d, None)?;
            }
            let (_, op) = engine.catalog.insert_doc(db, &tmp, d)?;
            ops.push(op);
        }
        // SRV document_source_out.cpp finalize(): renameCollection ... dropTarget: true
        ops.extend(engine.catalog.rename((db, &tmp), (db, coll), true)?);
        Ok(())
    })();
    match filled {
        Ok(()) => {
            if let Some(c) = engine
                .catalog
                .dbs
                .get_mut(db)
                .and_then(|d| d.colls.get_mut(coll))
            {
                // stayTemp: false
                c.options.remove("temp");
            }
            Ok(())
        }
        Err(e) => {
            // SRV document_source_out.cpp: the temporary collection is dropped on failure
            if let Ok(Some(mut d)) = engine.catalog.drop_ns(db, &tmp) {
                ops.append(&mut d);
            }
            Err(e)
        }
    }
}

// ---------------------------------------------------------------- $merge

/// 51183 unless `on` is `_id` or the target has a unique index on exactly the `on` fields
/// (SRV `document_source_merge.cpp` / `mongo_process_interface` `ensureFieldsUniqueOrResolveDocumentKey`).
fn check_on_fields(engine: &Engine, spec: &MergeSpec) -> CmdResult<()> {
    if spec.on.len() == 1 && spec.on[0] == "_id" {
        return Ok(());
    }
    let mut want: Vec<&str> = spec.on.iter().map(String::as_str).collect();
    want.sort_unstable();
    want.dedup();
    let ok = engine.catalog.coll(&spec.db, &spec.coll).is_some_and(|c| {
        c.indexes.iter().any(|ix| {
            let mut have: Vec<&str> = ix.fields.iter().map(String::as_str).collect();
            have.sort_unstable();
            ix.unique
                && !ix.sparse
                && !ix.spec.contains_key("partialFilterExpression")
                && have == want
        })
    });
    if ok {
        Ok(())
    } else {
        Err(CommandError::from_code(
            ErrorCode::MergeOnNoUniqueIndex,
            "Cannot find index to verify that join fields will be unique",
        ))
    }
}

/// The context SRV `document_source_merge.cpp` `spill()` adds to a DuplicateKey error:
/// "... :: caused by :: E11000 ..." (keyPattern/keyValue kept).
fn dup_key_context(e: CommandError, spec: &MergeSpec, insert_only: bool) -> CommandError {
    if e.code != 11000 {
        return e;
    }
    let pattern = e
        .extra
        .get_document("keyPattern")
        .map(|p| p.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let on_fields = pattern.len() == spec.on.len() && spec.on.iter().all(|f| pattern.contains(f));
    let context = if insert_only && on_fields {
        "$merge with whenMatched: fail found an existing document with the same values for the 'on' fields"
    } else {
        "$merge failed due to a DuplicateKey error"
    };
    let mut out = e;
    out.errmsg = format!("{context} :: caused by :: {}", out.errmsg);
    out
}

/// The oplog `o` of an update outcome (7.0 `$v:2` diff, 4.4 `$v:1`, or the replacement).
fn update_o(engine: &Engine, out: &UpdateOutcome) -> Document {
    if out.is_replacement {
        return out.new_doc.clone();
    }
    match engine.version {
        crate::ServerVersion::V4_4 => out.v1.clone(),
        _ => out.v2_diff.clone(),
    }
}

/// `$merge` of the pipeline results `docs` into its target (SRV document_source_merge.cpp).
fn write_merge(
    engine: &mut Engine,
    spec: &MergeSpec,
    docs: Vec<Document>,
    bypass: bool,
    ops: &mut Vec<Document>,
) -> CmdResult<()> {
    let (db, coll) = (spec.db.as_str(), spec.coll.as_str());
    if let NsKind::View(_) = engine.catalog.kind(db, coll) {
        return Err(CommandError::from_code(
            ErrorCode::CommandNotSupportedOnView,
            format!("Namespace {db}.{coll} is a view, not a collection"),
        ));
    }
    check_on_fields(engine, spec)?;
    let mut writer = MergeWriter {
        spec,
        bypass,
        ops,
        now: bson::DateTime::now(),
    };
    for mut d in docs {
        if !d.contains_key("_id") {
            // SRV document_source_merge.cpp: a missing _id is generated before the write
            let mut with_id = doc! {"_id": bson::oid::ObjectId::new()};
            with_id.extend(d);
            d = with_id;
        }
        let query = merge_on_query(&d, &spec.on)?;
        if spec.when_matched == WhenMatched::Fail {
            // insert-only mode: a plain insert, whose duplicate key error is the stage's error
            writer.insert(engine, &d, true)?;
            continue;
        }
        writer.merge(engine, &d, &query)?;
    }
    Ok(())
}

/// The `on` fields of result document `d`: the query selecting its match in the target.
fn merge_on_query(d: &Document, on: &[String]) -> CmdResult<Document> {
    let mut query = Document::new();
    for f in on {
        match crate::query::path::get_path(d, f) {
            None | Some(Bson::Null) | Some(Bson::Undefined) | Some(Bson::Array(_)) => {
                // SRV document_source_merge.cpp extractMergeOnFieldsFromDoc
                return Err(CommandError::from_code(
                    ErrorCode::MergeOnFieldMissing,
                    "$merge write error: 'on' field cannot be missing, null, undefined or an array",
                ));
            }
            Some(v) => {
                query.insert(f.clone(), v.clone());
            }
        }
    }
    Ok(query)
}

/// The update `whenMatched` applies for result document `d` (`None` for `fail`).
fn merge_update(when_matched: &WhenMatched, d: &Document) -> CmdResult<Option<Update>> {
    let spec = match when_matched {
        WhenMatched::Replace => Bson::Document(d.clone()),
        WhenMatched::Merge => Bson::Document(doc! {"$set": d.clone()}),
        WhenMatched::KeepExisting => Bson::Document(doc! {"$setOnInsert": d.clone()}),
        WhenMatched::Pipeline(p) => Bson::Array(p.clone()),
        WhenMatched::Fail => return Ok(None),
    };
    Update::parse(&spec, None).map(Some)
}

/// `let` (default `{new: "$$ROOT"}`) is evaluated against the result document `d` (SRV
/// document_source_merge.cpp resolveLetVariablesIfNeeded); the values reach the update as
/// literals. Only a pipeline `whenMatched` has variables.
fn merge_lets(spec: &MergeSpec, d: &Document) -> CmdResult<Document> {
    let mut lets = Document::new();
    if let WhenMatched::Pipeline(_) = spec.when_matched {
        let given = spec.lets.clone().unwrap_or_default();
        if !given.contains_key("new") {
            lets.insert("new", doc! {"$literal": d.clone()});
        }
        for (k, v) in &given {
            let e = crate::query::expr::Expr::parse(v)?;
            let val = e
                .eval(&crate::query::expr::Vars::new(d))?
                .unwrap_or(Bson::Null);
            lets.insert(k.clone(), doc! {"$literal": val});
        }
    }
    Ok(lets)
}

/// Writes the results of one `$merge` into its target, collecting the oplog ops.
struct MergeWriter<'a> {
    spec: &'a MergeSpec,
    /// `bypassDocumentValidation`.
    bypass: bool,
    ops: &'a mut Vec<Document>,
    /// `$$NOW` of the updates.
    now: bson::DateTime,
}

impl MergeWriter<'_> {
    /// Merges result document `d`, whose match in the target `query` selects, as
    /// `whenMatched` / `whenNotMatched` say.
    fn merge(&mut self, engine: &mut Engine, d: &Document, query: &Document) -> CmdResult<()> {
        let spec = self.spec;
        let Some(update) = merge_update(&spec.when_matched, d)? else {
            return Ok(());
        };
        let lets = merge_lets(spec, d)?;
        let m = Matcher::parse(query)?;
        let rid =
            crate::engine::docs::matching_rids(&engine.catalog, &spec.db, &spec.coll, query, &m)
                .into_iter()
                .next();
        let mut uctx = UpdateCtx::new(self.now);
        uctx.now_ts = engine.cluster_time();
        uctx.query = Some(query);
        uctx.lets = Some(&lets);
        match rid {
            Some(rid) => self.update_matched(engine, rid, &update, &uctx),
            None => match spec.when_not_matched {
                WhenNotMatched::Discard => Ok(()),
                WhenNotMatched::Fail => {
                    // SRV document_source_merge.cpp: 13113 MergeStageNoMatchingDocument
                    Err(CommandError::from_code(
                        ErrorCode::MergeStageNoMatchingDocument,
                        "$merge could not find a matching document in the target collection for at least one document in the source collection",
                    ))
                }
                WhenNotMatched::Insert => {
                    // upsert: a pipeline whenMatched inserts the document itself
                    // (SRV merge_processor.cpp: upsert supplied document)
                    let new_doc = match &spec.when_matched {
                        WhenMatched::Pipeline(_) => d.clone(),
                        _ => {
                            uctx.is_upsert_insert = true;
                            let seed = crate::query::update::upsert_seed(query)?;
                            update.apply(&seed, &uctx)?.new_doc
                        }
                    };
                    self.insert(engine, &new_doc, false)
                }
            },
        }
    }

    /// Applies `update` to the target's document `rid`; `_id` may not change.
    fn update_matched(
        &mut self,
        engine: &mut Engine,
        rid: u64,
        update: &Update,
        uctx: &UpdateCtx<'_>,
    ) -> CmdResult<()> {
        let (db, coll) = (self.spec.db.as_str(), self.spec.coll.as_str());
        let Some(old) = engine
            .catalog
            .coll(db, coll)
            .and_then(|c| c.get(rid))
            .map(|s| s.doc.clone())
        else {
            return Ok(());
        };
        let out = update.apply(&old, uctx)?;
        if !out.modified {
            return Ok(());
        }
        if !crate::query::compare::binary_eq(
            old.get("_id").unwrap_or(&Bson::Null),
            out.new_doc.get("_id").unwrap_or(&Bson::Null),
        ) {
            // SRV update_stage.cpp 66 ImmutableField, with the context
            // document_source_merge.cpp spill() adds
            let id = out.new_doc.get("_id").unwrap_or(&Bson::Null);
            return Err(CommandError::from_code(
                ErrorCode::ImmutableField,
                format!(
                    "$merge failed to update the matching document, did you attempt to modify the _id or the shard key? :: caused by :: After applying the update, the (immutable) field '_id' was found to have been altered to _id: {}",
                    crate::query::fmt::value(id)
                ),
            ));
        }
        if !self.bypass {
            crate::engine::validation::check(engine, db, coll, &out.new_doc, Some(&old))?;
        }
        let o = update_o(engine, &out);
        let op = engine
            .catalog
            .update_doc(db, coll, rid, out.new_doc, o)
            .map_err(|e| dup_key_context(e, self.spec, false))?;
        self.ops.push(op);
        Ok(())
    }

    /// Inserts `d` into the target (created if needed); `insert_only`: `whenMatched: fail`.
    fn insert(&mut self, engine: &mut Engine, d: &Document, insert_only: bool) -> CmdResult<()> {
        let (db, coll) = (self.spec.db.as_str(), self.spec.coll.as_str());
        let d = crate::engine::docs::fix_document_for_insert(engine, d)?;
        if !self.bypass {
            crate::engine::validation::check(engine, db, coll, &d, None)?;
        }
        self.ops.extend(engine.catalog.ensure_collection(db, coll)?);
        let (_, op) = engine
            .catalog
            .insert_doc(db, coll, d)
            .map_err(|e| dup_key_context(e, self.spec, insert_only))?;
        self.ops.push(op);
        Ok(())
    }
}
