//! Update specifications: replacement documents, modifier documents (`$set`, `$inc`, …) and
//! pipeline updates, applied to one document, producing the new document and the oplog `o`
//! in both formats:
//! - 7.0: `{$v: 2, diff: {...}}` built exactly like the server's `V2LogBuilder`
//!   (SRV `src/mongo/db/update/v2_log_builder.cpp` `addNodeAtPath`/`createInternalNode`,
//!   serialized by `document_diff_serialization.cpp`: per document `d`, `u`, `i`, `b`, then
//!   `s<field>` sub-diffs in creation order; arrays `a: true`, `l`, then `u<idx>`/`s<idx>` in
//!   index order). Pipeline updates use the diff calculator (`document_diff_calculator.cpp`).
//! - 4.4: `{$v: 1, $set: {<full dotted path>: value}, $unset: {<path>: true}}`
//!   (reference §4.4; SRV 4.4 `log_builder.cpp`: sections appear in first-use order).
//!
//! Modifiers are applied in the order of the server's update tree: paths sorted component by
//! component (`UpdateObjectNode` children live in a `std::map`), so new fields are appended in
//! lexicographic order (SRV `update_oplog_entry_version.h` on `kUpdateNodeV1`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{doc, Bson, DateTime, Document, Timestamp};

use super::compare::{as_f64, binary_eq, bson_eq, cmp_bson};
use super::fmt;
use super::matcher::Matcher;
use super::path::array_index;
use crate::error::{CmdResult, CommandError};

/// Per-application context.
#[derive(Debug, Clone)]
pub(crate) struct UpdateCtx<'a> {
    /// The document is being inserted by an upsert (`$setOnInsert` applies, `_id` may be set).
    pub(crate) is_upsert_insert: bool,
    /// Wall-clock time for `$currentDate` / `$$NOW`.
    pub(crate) now: DateTime,
    /// Timestamp for `$currentDate: {$type: "timestamp"}`.
    pub(crate) now_ts: Timestamp,
    /// The query that selected the document (for the positional `$` operator).
    pub(crate) query: Option<&'a Document>,
    /// The command's `let` document (pipeline updates see `$$name`).
    pub(crate) lets: Option<&'a Document>,
}

impl<'a> UpdateCtx<'a> {
    /// A context for a plain update at `now`.
    pub(crate) fn new(now: DateTime) -> Self {
        let secs = (now.timestamp_millis() / 1000).clamp(0, i64::from(u32::MAX)) as u32;
        UpdateCtx {
            is_upsert_insert: false,
            now,
            now_ts: Timestamp {
                time: secs,
                increment: 1,
            },
            query: None,
            lets: None,
        }
    }
}

/// Result of applying an update to one document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpdateOutcome {
    /// The document after the update.
    pub(crate) new_doc: Document,
    /// Whether anything changed (a no-op update writes no oplog entry).
    pub(crate) modified: bool,
    /// The 7.0 oplog `o`: `{$v: 2, diff}`; for replacements the new document.
    pub(crate) v2_diff: Document,
    /// The 4.4 oplog `o`: `{$v: 1, $set, $unset}`; for replacements (and 4.4 pipeline
    /// updates) the new document.
    pub(crate) v1: Document,
    /// The oplog entry is a full replacement (`o` has no `$v`).
    pub(crate) is_replacement: bool,
}

/// A parsed update.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    kind: Kind,
    /// `arrayFilters` by identifier.
    filters: Vec<(String, Matcher)>,
}

#[derive(Debug, Clone)]
enum Kind {
    Replacement(Document),
    Modifiers(Vec<(Vec<String>, Mod)>),
    Pipeline(super::pipeline::Pipeline),
}

#[derive(Debug, Clone)]
enum Mod {
    Set(Bson),
    SetOnInsert(Bson),
    Unset,
    Inc(Bson),
    Mul(Bson),
    Min(Bson),
    Max(Bson),
    CurrentDate(bool),
    Push(Push),
    AddToSet(Vec<Bson>),
    Pop(bool),
    Pull(Box<PullCond>),
    PullAll(Vec<Bson>),
    /// `$bit`: ("and" | "or" | "xor", Int32/Int64 operand) in order.
    Bit(Vec<(String, Bson)>),
    Rename(Vec<String>),
    /// The destination of a `$rename` (kept for conflict detection only).
    Placeholder,
}

#[derive(Debug, Clone)]
struct Push {
    each: Vec<Bson>,
    slice: Option<i64>,
    sort: Option<PushSort>,
    position: Option<i64>,
}

#[derive(Debug, Clone)]
enum PushSort {
    Whole(i32),
    Fields(Vec<(String, i32)>),
}

#[derive(Debug, Clone)]
enum PullCond {
    Equal(Bson),
    Query(Matcher),
    Value(Matcher),
}

fn failed(msg: impl Into<String>) -> CommandError {
    CommandError::failed_to_parse(msg)
}

fn bad(msg: impl Into<String>) -> CommandError {
    CommandError::bad_value(msg)
}

/// Update tree used only to detect conflicting paths the way `UpdateObjectNode::parseAndMerge`
/// does (40 ConflictingUpdateOperators).
#[derive(Default)]
struct ConflictTree {
    children: BTreeMap<String, ConflictTree>,
    leaf: bool,
}

impl ConflictTree {
    fn insert(&mut self, parts: &[String]) -> CmdResult<()> {
        let mut node = self;
        for (i, p) in parts.iter().enumerate() {
            if node.leaf {
                return Err(conflict(parts, i));
            }
            node = node.children.entry(p.clone()).or_default();
        }
        if node.leaf || !node.children.is_empty() {
            return Err(conflict(parts, parts.len()));
        }
        node.leaf = true;
        Ok(())
    }
}

fn conflict(parts: &[String], upto: usize) -> CommandError {
    // SRV update_object_node.cpp: "Updating the path '...' would create a conflict at '...'"
    let at = if upto == 0 {
        parts[..1].join(".")
    } else {
        parts[..upto.min(parts.len())].join(".")
    };
    CommandError::from_code(
        40,
        format!(
            "Updating the path '{}' would create a conflict at '{}'",
            parts.join("."),
            at
        ),
    )
}

fn validate_path(path: &str) -> CmdResult<Vec<String>> {
    if path.is_empty() {
        // SRV update_object_node.cpp / field_checker: 56 EmptyFieldName
        return Err(CommandError::from_code(
            56,
            "An empty update path is not valid.",
        ));
    }
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    for p in &parts {
        if p.is_empty() {
            return Err(CommandError::from_code(
                56,
                format!(
                    "The update path '{path}' contains an empty field name, which is not allowed."
                ),
            ));
        }
    }
    Ok(parts)
}

impl Update {
    /// Parses an update specification: a replacement document, a modifier document or a
    /// pipeline (array of stages). `array_filters` are the `arrayFilters` of the statement.
    pub(crate) fn parse(spec: &Bson, array_filters: Option<&[Document]>) -> CmdResult<Update> {
        Self::parse_versioned(spec, array_filters, false)
    }

    /// [`Update::parse`] for a given server generation: `legacy_44` selects 4.4 behaviour
    /// (an empty modifier document is error 9, paths are applied in plain string order;
    /// 5.0+ accepts `{$set: {}}` as a no-op and orders numeric field names numerically,
    /// SRV `pathsupport::cmpPathsAndArrayIndexes`).
    pub(crate) fn parse_versioned(
        spec: &Bson,
        array_filters: Option<&[Document]>,
        legacy_44: bool,
    ) -> CmdResult<Update> {
        match spec {
            Bson::Array(stages) => {
                if array_filters.is_some_and(|a| !a.is_empty()) {
                    return Err(failed(
                        "arrayFilters may not be specified for pipeline-style updates",
                    ));
                }
                let mut docs = Vec::with_capacity(stages.len());
                for s in stages {
                    match s {
                        Bson::Document(d) => docs.push(d.clone()),
                        _ => {
                            return Err(CommandError::type_mismatch(
                                "Each element of the 'pipeline' array must be an object",
                            ))
                        }
                    }
                }
                let p = super::pipeline::Pipeline::parse(&docs)?;
                for name in p.stage_names() {
                    if !matches!(
                        name,
                        "$addFields"
                            | "$set"
                            | "$project"
                            | "$unset"
                            | "$replaceRoot"
                            | "$replaceWith"
                    ) {
                        // SRV pipeline_executor.cpp (update pipelines): 72 InvalidOptions
                        return Err(CommandError::from_code(
                            72,
                            format!("{name} is not allowed to be used within an update"),
                        ));
                    }
                }
                Ok(Update {
                    kind: Kind::Pipeline(p),
                    filters: Vec::new(),
                })
            }
            Bson::Document(d) => Self::parse_doc(d, array_filters.unwrap_or(&[]), legacy_44),
            other => Err(CommandError::type_mismatch(format!(
                "Update argument must be either an object or an array, not {}",
                fmt::type_name(other)
            ))),
        }
    }

    /// Parses a document: a replacement, or modifiers filed in update-tree order.
    fn parse_doc(d: &Document, array_filters: &[Document], legacy_44: bool) -> CmdResult<Update> {
        let is_mod = d.keys().next().is_some_and(|k| k.starts_with('$'));
        if !is_mod {
            return parse_replacement(d, array_filters);
        }
        let filters = parse_array_filters(array_filters)?;
        let mut used_ids: Vec<String> = Vec::new();
        let mut tree = ConflictTree::default();
        let mut leaves: Vec<(Vec<String>, Mod)> = Vec::new();
        for (op, arg) in d {
            for (path, v) in modifier_fields(op, arg, legacy_44)? {
                let parts = validate_path(path)?;
                note_filter_ids(&parts, path, &filters, &mut used_ids)?;
                let m = parse_mod(op, path, v)?;
                add_leaf(path, parts, m, &mut tree, &mut leaves)?;
            }
        }
        for (id, _) in &filters {
            if !used_ids.iter().any(|u| u == id) {
                // SRV update_driver.cpp parseUpdateExpression
                return Err(failed(format!(
                    "The array filter for identifier '{id}' was not used in the update {}",
                    fmt::doc(d)
                )));
            }
        }
        // Tree order: the children of each `UpdateObjectNode` live in a std::map.
        if legacy_44 {
            leaves.sort_by(|a, b| a.0.cmp(&b.0));
        } else {
            leaves.sort_by(|a, b| cmp_paths(&a.0, &b.0));
        }
        Ok(Update {
            kind: Kind::Modifiers(leaves),
            filters,
        })
    }
}

/// A replacement document (no `$`-prefixed field, no `arrayFilters`).
fn parse_replacement(d: &Document, array_filters: &[Document]) -> CmdResult<Update> {
    if !array_filters.is_empty() {
        return Err(failed(
            "arrayFilters may not be specified for replacement-style updates",
        ));
    }
    for k in d.keys() {
        if k.starts_with('$') {
            // SRV storage_validation.cpp (5.0+): 52 DollarPrefixedFieldName
            return Err(CommandError::from_code(
                52,
                format!("The dollar ($) prefixed field '{k}' in '{k}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."),
            ));
        }
    }
    Ok(Update {
        kind: Kind::Replacement(d.clone()),
        filters: Vec::new(),
    })
}

/// The `{path: arg}` document of modifier `op` (a known modifier; empty only since 5.0).
fn modifier_fields<'a>(op: &str, arg: &'a Bson, legacy_44: bool) -> CmdResult<&'a Document> {
    let known = matches!(
        op,
        "$set"
            | "$setOnInsert"
            | "$unset"
            | "$inc"
            | "$mul"
            | "$min"
            | "$max"
            | "$currentDate"
            | "$push"
            | "$addToSet"
            | "$pop"
            | "$pull"
            | "$pullAll"
            | "$rename"
            | "$bit"
    );
    if !known {
        // SRV update_driver.cpp validateMod: 9 FailedToParse
        return Err(failed(format!("Unknown modifier: {op}. Expected a valid update modifier or pipeline-style update specified as an array")));
    }
    let Bson::Document(fields) = arg else {
        return Err(failed(format!(
            "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{op}: {}}}",
            fmt::type_name(arg),
            fmt::value(arg)
        )));
    };
    // An empty modifier document is accepted as a no-op since 5.0; 4.4 rejected it
    // (SRV 4.4 update_driver.cpp).
    if fields.is_empty() && legacy_44 {
        return Err(failed(format!(
            "'{op}' is empty. You must specify a field like so: {{{op}: {{<field>: ...}}}}"
        )));
    }
    Ok(fields)
}

/// Checks that every `$[id]` of `path` has an array filter and records it as used.
fn note_filter_ids(
    parts: &[String],
    path: &str,
    filters: &[(String, Matcher)],
    used_ids: &mut Vec<String>,
) -> CmdResult<()> {
    for p in parts {
        if let Some(id) = p.strip_prefix("$[").and_then(|r| r.strip_suffix(']')) {
            if !id.is_empty() {
                if !filters.iter().any(|(n, _)| n == id) {
                    // SRV update_array_node.cpp / parsed_update: 2 BadValue
                    return Err(bad(format!(
                        "No array filter found for identifier '{id}' in path '{path}'"
                    )));
                }
                if !used_ids.iter().any(|u| u == id) {
                    used_ids.push(id.to_string());
                }
            }
        }
    }
    Ok(())
}

/// Files modifier `m` of `path` (`parts`) in the update tree, checking for conflicts.
fn add_leaf(
    path: &str,
    parts: Vec<String>,
    m: Mod,
    tree: &mut ConflictTree,
    leaves: &mut Vec<(Vec<String>, Mod)>,
) -> CmdResult<()> {
    if let Mod::Rename(to) = m {
        // SRV update_object_node.cpp parseAndMerge: a ConflictPlaceholderNode at the
        // source, the RenameNode at the destination (so the rename runs in the
        // destination's tree position). Checks from rename_node.cpp init().
        let shown = format!("{path}: \"{}\"", to.join("."));
        if to == parts {
            return Err(bad(format!(
                "The source and target field for $rename must differ: {shown}"
            )));
        }
        if to.starts_with(&parts) || parts.starts_with(&to) {
            return Err(bad(format!(
                "The source and target field for $rename must not be on the same path: {shown}"
            )));
        }
        tree.insert(&parts)?;
        tree.insert(&to)?;
        leaves.push((parts.clone(), Mod::Placeholder));
        leaves.push((to, Mod::Rename(parts)));
        return Ok(());
    }
    tree.insert(&parts)?;
    leaves.push((parts, m));
    Ok(())
}

/// SRV `pathsupport::cmpPathsAndArrayIndexes` (5.0+): numeric field names compare by length
/// then digits, everything else as strings.
fn cmp_component(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let plain = ab.is_empty()
        || bb.is_empty()
        || !ab[0].is_ascii_digit()
        || !bb[0].is_ascii_digit()
        || (ab[0] == b'0' && ab.len() > 1)
        || (bb[0] == b'0' && bb.len() > 1);
    if plain {
        return ab.cmp(bb);
    }
    if ab.len() != bb.len() {
        return ab.len().cmp(&bb.len());
    }
    for (x, y) in ab.iter().zip(bb.iter()) {
        if !x.is_ascii_digit() || !y.is_ascii_digit() {
            return ab.cmp(bb);
        }
        if x != y {
            return x.cmp(y);
        }
    }
    ab.cmp(bb)
}

fn cmp_paths(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let o = cmp_component(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn parse_array_filters(filters: &[Document]) -> CmdResult<Vec<(String, Matcher)>> {
    let mut out: Vec<(String, Matcher)> = Vec::new();
    for f in filters {
        let mut id: Option<String> = None;
        for k in f.keys() {
            let first = k.split('.').next().unwrap_or("");
            if k.starts_with('$') {
                continue;
            }
            match &id {
                None => id = Some(first.to_string()),
                Some(prev) if prev != first => {
                    // SRV parsed_update_array_filters.cpp: 9 FailedToParse
                    return Err(failed(format!(
                        "Error parsing array filter :: caused by :: Expected a single top-level field name, found '{prev}' and '{first}'"
                    )));
                }
                Some(_) => {}
            }
        }
        let Some(id) = id else {
            return Err(failed(
                "Cannot use an expression without a top-level field name in arrayFilters",
            ));
        };
        if out.iter().any(|(n, _)| *n == id) {
            return Err(failed(format!(
                "Found multiple array filters with the same top-level field name {id}"
            )));
        }
        let m = Matcher::parse(f)?;
        out.push((id, m));
    }
    Ok(out)
}

fn num_arg(op: &str, path: &str, v: &Bson) -> CmdResult<Bson> {
    if as_f64(v).is_none() {
        let verb = if op == "$inc" {
            "increment"
        } else {
            "multiply"
        };
        // SRV arithmetic_node.cpp: 14 TypeMismatch
        return Err(CommandError::type_mismatch(format!(
            "Cannot {verb} with non-numeric argument: {{{path}: {}}}",
            fmt::value(v)
        )));
    }
    Ok(v.clone())
}

/// Parses modifier `op`'s argument `v` for `path`: the table from modifier to its parser.
fn parse_mod(op: &str, path: &str, v: &Bson) -> CmdResult<Mod> {
    Ok(match op {
        "$set" => Mod::Set(v.clone()),
        "$setOnInsert" => Mod::SetOnInsert(v.clone()),
        "$unset" => Mod::Unset,
        "$inc" => Mod::Inc(num_arg(op, path, v)?),
        "$mul" => Mod::Mul(num_arg(op, path, v)?),
        "$min" => Mod::Min(v.clone()),
        "$max" => Mod::Max(v.clone()),
        "$currentDate" => parse_current_date(v)?,
        "$push" => Mod::Push(parse_push(v)?),
        "$addToSet" => parse_add_to_set(v)?,
        "$pop" => parse_pop(path, v)?,
        "$pull" => Mod::Pull(Box::new(parse_pull(v)?)),
        "$pullAll" => match v {
            Bson::Array(a) => Mod::PullAll(a.clone()),
            other => {
                // SRV pullall_node.cpp
                return Err(bad(format!(
                    "$pullAll requires an array argument but was given a {}",
                    fmt::type_name(other)
                )));
            }
        },
        "$rename" => parse_rename(path, v)?,
        "$bit" => parse_bit(v)?,
        _ => return Err(failed(format!("Unknown modifier: {op}"))),
    })
}

/// `$currentDate`: `true` or `{$type: "date" | "timestamp"}`.
fn parse_current_date(v: &Bson) -> CmdResult<Mod> {
    let ts = match v {
        Bson::Boolean(_) => false,
        Bson::Document(d) if d.len() == 1 => match d.get("$type") {
            Some(Bson::String(t)) if t == "date" => false,
            Some(Bson::String(t)) if t == "timestamp" => true,
            _ => {
                return Err(bad(
                    "The '$type' string field is required to be 'date' or 'timestamp': {$currentDate: {field : {$type: 'date'}}}",
                ))
            }
        },
        _ => {
            // SRV current_date_node.cpp
            return Err(bad(format!(
                "{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).",
                fmt::type_name(v)
            )));
        }
    };
    Ok(Mod::CurrentDate(ts))
}

/// `$addToSet`: one value or `{$each: [values]}`.
fn parse_add_to_set(v: &Bson) -> CmdResult<Mod> {
    let vals = match v {
        Bson::Document(d) if d.keys().next().map(String::as_str) == Some("$each") => {
            match d.get("$each") {
                Some(Bson::Array(a)) => a.clone(),
                Some(other) => {
                    return Err(bad(format!(
                        "The argument to $each in $addToSet must be an array but it was of type {}",
                        fmt::type_name(other)
                    )))
                }
                None => Vec::new(),
            }
        }
        other => vec![other.clone()],
    };
    Ok(Mod::AddToSet(vals))
}

/// `$pop`: 1 (last element) or -1 (first).
fn parse_pop(path: &str, v: &Bson) -> CmdResult<Mod> {
    let n = as_f64(v)
        .ok_or_else(|| failed(format!("Expected a number in: {path}: {}", fmt::value(v))))?;
    if n != 1.0 && n != -1.0 {
        // SRV pop_node.cpp: 9 FailedToParse
        return Err(failed(format!(
            "$pop expects 1 or -1, found: {}",
            fmt::value(v)
        )));
    }
    Ok(Mod::Pop(n < 0.0))
}

/// `$pull`: a value, a regex, operators on the elements, or a query on embedded documents.
fn parse_pull(v: &Bson) -> CmdResult<PullCond> {
    Ok(match v {
        Bson::Document(d) => {
            let first = d.keys().next().map(String::as_str).unwrap_or("");
            if first.starts_with('$')
                && !matches!(first, "$and" | "$or" | "$nor" | "$expr" | "$where")
            {
                let mut wrapped = Document::new();
                wrapped.insert("v", Bson::Document(d.clone()));
                PullCond::Value(Matcher::parse(&wrapped)?)
            } else {
                PullCond::Query(Matcher::parse(d)?)
            }
        }
        Bson::RegularExpression(_) => {
            let mut wrapped = Document::new();
            wrapped.insert("v", v.clone());
            PullCond::Value(Matcher::parse(&wrapped)?)
        }
        other => PullCond::Equal(other.clone()),
    })
}

/// `$rename: {path: "to"}`: a non-empty, non-dynamic destination.
fn parse_rename(path: &str, v: &Bson) -> CmdResult<Mod> {
    let Bson::String(to) = v else {
        // SRV rename_node.cpp
        return Err(bad(format!(
            "The 'to' field for $rename must be a string: {path}: {}",
            fmt::value(v)
        )));
    };
    if to.is_empty() {
        return Err(bad(format!(
            "The 'to' field for $rename cannot be empty: {path}: \"\""
        )));
    }
    let parts = validate_path(to)?;
    if path.split('.').any(|p| p.starts_with('$')) {
        return Err(bad(format!(
            "The source field for $rename may not be dynamic: {path}"
        )));
    }
    if parts.iter().any(|p| p.starts_with('$')) {
        return Err(bad(format!(
            "The destination field for $rename may not be dynamic: {to}"
        )));
    }
    // Carries the destination here; `parse_doc` re-files it under the destination
    // path with the source as payload.
    Ok(Mod::Rename(parts))
}

/// `$bit: {and|or|xor: <int>, ...}` (SRV bit_node.cpp BitNode::init).
fn parse_bit(v: &Bson) -> CmdResult<Mod> {
    let Bson::Document(ops) = v else {
        return Err(bad(format!(
            "The $bit modifier is not compatible with a {}. You must pass in an embedded document: {{$bit: {{field: {{and/or/xor: #}}}}",
            fmt::type_name(v)
        )));
    };
    let mut list = Vec::new();
    for (k, operand) in ops {
        if !matches!(k.as_str(), "and" | "or" | "xor") {
            return Err(bad(format!(
                "The $bit modifier only supports 'and', 'or', and 'xor', not '{k}' which is an unknown operator: {{{k}: {}}}",
                fmt::value(operand)
            )));
        }
        if !matches!(operand, Bson::Int32(_) | Bson::Int64(_)) {
            return Err(bad(format!(
                "The $bit modifier field must be an Integer(32/64 bit); a '{}' is not supported here: {{{k}: {}}}",
                fmt::type_name(operand),
                fmt::value(operand)
            )));
        }
        list.push((k.clone(), operand.clone()));
    }
    if list.is_empty() {
        return Err(bad(
            "You must pass in at least one bitwise operation. The format is: {$bit: {field: {and/or/xor: #}}",
        ));
    }
    Ok(Mod::Bit(list))
}

/// SafeNum bit operations: Int32 op Int32 stays Int32, anything with Int64 is Int64.
fn apply_bits(start: &Bson, ops: &[(String, Bson)]) -> Bson {
    let mut cur = start.clone();
    for (op, operand) in ops {
        cur = match (&cur, operand) {
            (Bson::Int32(a), Bson::Int32(b)) => Bson::Int32(match op.as_str() {
                "and" => a & b,
                "or" => a | b,
                _ => a ^ b,
            }),
            _ => {
                let a = match cur {
                    Bson::Int32(i) => i64::from(i),
                    Bson::Int64(i) => i,
                    _ => 0,
                };
                let b = match operand {
                    Bson::Int32(i) => i64::from(*i),
                    Bson::Int64(i) => *i,
                    _ => 0,
                };
                Bson::Int64(match op.as_str() {
                    "and" => a & b,
                    "or" => a | b,
                    _ => a ^ b,
                })
            }
        };
    }
    cur
}

fn parse_push(v: &Bson) -> CmdResult<Push> {
    let d = match v {
        Bson::Document(d) if d.keys().next().map(String::as_str) == Some("$each") => d,
        other => {
            return Ok(Push {
                each: vec![other.clone()],
                slice: None,
                sort: None,
                position: None,
            })
        }
    };
    let mut p = Push {
        each: Vec::new(),
        slice: None,
        sort: None,
        position: None,
    };
    for (k, val) in d {
        match k.as_str() {
            "$each" => match val {
                Bson::Array(a) => p.each = a.clone(),
                other => {
                    // SRV push_node.cpp
                    return Err(bad(format!(
                        "The argument to $each in $push must be an array but it was of type: {}",
                        fmt::type_name(other)
                    )));
                }
            },
            "$slice" => {
                let n = int_value(val).ok_or_else(|| {
                    bad(format!(
                        "The value for $slice must be an integer value but was given type: {}",
                        fmt::type_name(val)
                    ))
                })?;
                p.slice = Some(n);
            }
            "$position" => {
                let n = int_value(val).ok_or_else(|| {
                    bad(format!(
                        "The value for $position must be an integer value, not of type: {}",
                        fmt::type_name(val)
                    ))
                })?;
                p.position = Some(n);
            }
            "$sort" => {
                p.sort = Some(match val {
                    Bson::Document(sd) => {
                        if sd.is_empty() {
                            return Err(bad("The $sort pattern is empty when it should be a set of fields."));
                        }
                        let mut fields = Vec::new();
                        for (f, dir) in sd {
                            let dir = as_f64(dir).unwrap_or(0.0);
                            if dir != 1.0 && dir != -1.0 {
                                return Err(bad("The $sort element value must be either 1 or -1"));
                            }
                            fields.push((f.clone(), dir as i32));
                        }
                        PushSort::Fields(fields)
                    }
                    n if as_f64(n).is_some() => {
                        let dir = as_f64(n).unwrap_or(0.0);
                        if dir != 1.0 && dir != -1.0 {
                            return Err(bad("The $sort element value must be either 1 or -1"));
                        }
                        PushSort::Whole(dir as i32)
                    }
                    _ => {
                        return Err(bad("The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields"))
                    }
                });
            }
            other => {
                return Err(bad(format!("Unrecognized clause in $push: {other}")));
            }
        }
    }
    Ok(p)
}

fn int_value(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Log entries (what `LogBuilderInterface` receives) and the two serializations.

#[derive(Debug, Clone)]
enum LogKind {
    Update(Bson),
    /// `$unset` of an array element: the element became `null`. 7.0 logs an update to null
    /// (SRV unset_node.cpp `logUpdate`); 4.4's `LogBuilder` logged it under `$unset`.
    NullElement,
    Create(Bson, usize),
    Delete,
}

#[derive(Debug, Clone)]
struct LogEntry {
    /// Path components with "is an array index" flags (SRV `RuntimeUpdatePath`).
    path: Vec<(String, bool)>,
    kind: LogKind,
}

/// The server's diff tree (SRV `document_diff_serialization.h` `diff_tree`).
#[derive(Debug, Clone)]
enum DNode {
    Sub(Vec<(String, DNode)>),
    Ins(Vec<(String, DNode)>),
    Arr(BTreeMap<usize, DNode>, Option<usize>),
    Update(Bson),
    Insert(Bson),
    Delete,
}

impl DNode {
    fn child_mut(&mut self, name: &str) -> Option<&mut DNode> {
        match self {
            DNode::Sub(c) | DNode::Ins(c) => c.iter_mut().find(|(n, _)| n == name).map(|(_, n)| n),
            DNode::Arr(c, _) => array_index(name).and_then(|i| c.get_mut(&i)),
            _ => None,
        }
    }

    fn add_child(&mut self, name: &str, node: DNode) -> Option<&mut DNode> {
        match self {
            DNode::Sub(c) | DNode::Ins(c) => {
                c.push((name.to_string(), node));
                c.last_mut().map(|(_, n)| n)
            }
            DNode::Arr(c, _) => {
                let i = array_index(name)?;
                c.insert(i, node);
                c.get_mut(&i)
            }
            _ => None,
        }
    }

    /// SRV `V2LogBuilder::addNodeAtPathHelper`.
    fn add_at_path(
        &mut self,
        path: &[(String, bool)],
        idx: usize,
        leaf: DNode,
        first_new: Option<usize>,
    ) {
        let part = &path[idx].0;
        if idx == path.len() - 1 {
            self.add_child(part, leaf);
            return;
        }
        let is_new = first_new.is_some_and(|f| idx >= f);
        if self.child_mut(part).is_none() {
            // SRV createInternalNode
            let node = if path[idx + 1].1 {
                DNode::Arr(BTreeMap::new(), None)
            } else if is_new {
                DNode::Ins(Vec::new())
            } else {
                DNode::Sub(Vec::new())
            };
            self.add_child(part, node);
        }
        if let Some(child) = self.child_mut(part) {
            child.add_at_path(path, idx + 1, leaf, first_new);
        }
    }

    /// Serializes a document-level node (SRV `DocumentSubDiffFrame`).
    fn serialize(&self) -> Document {
        let mut out = Document::new();
        match self {
            DNode::Sub(children) => {
                let mut d = Document::new();
                let mut u = Document::new();
                let mut i = Document::new();
                let mut subs: Vec<(String, Document)> = Vec::new();
                for (name, c) in children {
                    match c {
                        DNode::Delete => {
                            d.insert(name.clone(), false);
                        }
                        DNode::Update(v) => {
                            u.insert(name.clone(), v.clone());
                        }
                        DNode::Insert(v) => {
                            i.insert(name.clone(), v.clone());
                        }
                        DNode::Ins(_) => {
                            i.insert(name.clone(), c.serialize_insert());
                        }
                        DNode::Sub(_) | DNode::Arr(..) => {
                            subs.push((format!("s{name}"), c.serialize()));
                        }
                    }
                }
                if !d.is_empty() {
                    out.insert("d", d);
                }
                if !u.is_empty() {
                    out.insert("u", u);
                }
                if !i.is_empty() {
                    out.insert("i", i);
                }
                for (k, v) in subs {
                    out.insert(k, v);
                }
            }
            DNode::Arr(children, resize) => {
                // SRV ArrayFrame: header, resize, then children in index order.
                out.insert("a", true);
                if let Some(l) = resize {
                    out.insert("l", *l as i32);
                }
                for (idx, c) in children {
                    match c {
                        DNode::Update(v) | DNode::Insert(v) => {
                            out.insert(format!("u{idx}"), v.clone());
                        }
                        DNode::Ins(_) => {
                            out.insert(format!("u{idx}"), c.serialize_insert());
                        }
                        DNode::Sub(_) | DNode::Arr(..) => {
                            out.insert(format!("s{idx}"), c.serialize());
                        }
                        DNode::Delete => {}
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn serialize_insert(&self) -> Bson {
        match self {
            DNode::Ins(children) => {
                let mut d = Document::new();
                for (n, c) in children {
                    match c {
                        DNode::Insert(v) | DNode::Update(v) => {
                            d.insert(n.clone(), v.clone());
                        }
                        DNode::Ins(_) => {
                            d.insert(n.clone(), c.serialize_insert());
                        }
                        _ => {}
                    }
                }
                Bson::Document(d)
            }
            DNode::Insert(v) | DNode::Update(v) => v.clone(),
            _ => Bson::Null,
        }
    }
}

fn v2_from_log(log: &[LogEntry]) -> Document {
    let mut root = DNode::Sub(Vec::new());
    for e in log {
        let (leaf, first_new) = match &e.kind {
            LogKind::Update(v) => (DNode::Update(v.clone()), None),
            LogKind::NullElement => (DNode::Update(Bson::Null), None),
            LogKind::Create(v, f) => (DNode::Insert(v.clone()), Some(*f)),
            LogKind::Delete => (DNode::Delete, None),
        };
        root.add_at_path(&e.path, 0, leaf, first_new);
    }
    doc! {"$v": 2, "diff": root.serialize()}
}

fn v1_from_log(log: &[LogEntry]) -> Document {
    // 4.4 LogBuilder: `$v: 1` then `$set`/`$unset` sections in first-use order.
    let mut out = doc! {"$v": 1};
    let mut set = Document::new();
    let mut unset = Document::new();
    let mut order: Vec<&str> = Vec::new();
    for e in log {
        let path: Vec<&str> = e.path.iter().map(|(p, _)| p.as_str()).collect();
        let dotted = path.join(".");
        match &e.kind {
            LogKind::Update(v) | LogKind::Create(v, _) => {
                if !order.contains(&"$set") {
                    order.push("$set");
                }
                set.insert(dotted, v.clone());
            }
            LogKind::Delete | LogKind::NullElement => {
                if !order.contains(&"$unset") {
                    order.push("$unset");
                }
                unset.insert(dotted, true);
            }
        }
    }
    for s in order {
        if s == "$set" {
            out.insert("$set", std::mem::take(&mut set));
        } else {
            out.insert("$unset", std::mem::take(&mut unset));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Application.

impl Update {
    /// Whether this is a replacement-style update.
    pub(crate) fn is_replacement(&self) -> bool {
        matches!(self.kind, Kind::Replacement(_))
    }

    /// Whether this is a pipeline-style update.
    pub(crate) fn is_pipeline(&self) -> bool {
        matches!(self.kind, Kind::Pipeline(_))
    }

    /// Whether the update uses the positional `$` operator (needs `ctx.query`).
    pub(crate) fn is_positional(&self) -> bool {
        match &self.kind {
            Kind::Modifiers(l) => l.iter().any(|(p, _)| p.iter().any(|c| c == "$")),
            _ => false,
        }
    }

    /// Applies the update to `doc`.
    pub(crate) fn apply(&self, doc: &Document, ctx: &UpdateCtx<'_>) -> CmdResult<UpdateOutcome> {
        match &self.kind {
            Kind::Replacement(r) => apply_replacement(doc, r, ctx),
            Kind::Modifiers(leaves) => self.apply_modifiers(leaves, doc, ctx),
            Kind::Pipeline(p) => apply_pipeline(p, doc, ctx),
        }
    }

    fn apply_modifiers(
        &self,
        leaves: &[(Vec<String>, Mod)],
        doc: &Document,
        ctx: &UpdateCtx<'_>,
    ) -> CmdResult<UpdateOutcome> {
        let mut new_doc = doc.clone();
        let mut log: Vec<LogEntry> = Vec::new();
        for (tpl, m) in leaves {
            match m {
                Mod::Placeholder => continue,
                Mod::SetOnInsert(_) if !ctx.is_upsert_insert => continue,
                _ => {}
            }
            let id = doc.get("_id").cloned();
            if let Mod::Rename(from) = m {
                apply_rename(&mut new_doc, from, tpl, ctx, &mut log, id.as_ref())?;
                continue;
            }
            for path in self.expand(tpl, doc, &new_doc, ctx)? {
                let mut taken = Vec::new();
                let mut a = Applier {
                    m,
                    ctx,
                    log: &mut log,
                    id: id.as_ref(),
                    path: &path,
                };
                a.apply_in_doc(&mut new_doc, 0, &mut taken)?;
            }
        }
        if !ctx.is_upsert_insert {
            // SRV modifier_node.cpp checkImmutablePathsNotModified: 66 ImmutableField, naming
            // the modifier's path.
            if let Some(e) = log
                .iter()
                .find(|e| e.path.first().is_some_and(|(p, _)| p == "_id"))
            {
                let dotted: Vec<&str> = e.path.iter().map(|(p, _)| p.as_str()).collect();
                return Err(CommandError::from_code(
                    66,
                    format!(
                        "Performing an update on the path '{}' would modify the immutable field '_id'",
                        dotted.join(".")
                    ),
                ));
            }
            check_id_unchanged(doc, &new_doc)?;
        }
        let modified = !log.is_empty();
        Ok(UpdateOutcome {
            v2_diff: v2_from_log(&log),
            v1: v1_from_log(&log),
            new_doc,
            modified,
            is_replacement: false,
        })
    }

    /// Resolves `$`, `$[]` and `$[id]` into concrete paths.
    fn expand(
        &self,
        tpl: &[String],
        original: &Document,
        current: &Document,
        ctx: &UpdateCtx<'_>,
    ) -> CmdResult<Vec<Vec<String>>> {
        if !tpl.iter().any(|c| c.starts_with('$')) {
            return Ok(vec![tpl.to_vec()]);
        }
        let mut out: Vec<Vec<String>> = vec![Vec::new()];
        for comp in tpl {
            if comp == "$" {
                let mut next = Vec::new();
                for prefix in out {
                    let prefix_path = prefix.join(".");
                    let idx = ctx
                        .query
                        .and_then(|q| Matcher::parse(q).ok())
                        .and_then(|m| m.matched_array_index(original, &prefix_path));
                    let Some(i) = idx else {
                        // SRV update_positional_node / update_array_node: 2 BadValue
                        return Err(bad(
                            "The positional operator did not find the match needed from the query.",
                        ));
                    };
                    let mut p = prefix;
                    p.push(i.to_string());
                    next.push(p);
                }
                out = next;
            } else if let Some(id) = comp.strip_prefix("$[").and_then(|r| r.strip_suffix(']')) {
                let mut next = Vec::new();
                for prefix in out {
                    let prefix_path = prefix.join(".");
                    let arr = match super::path::get_path(current, &prefix_path) {
                        Some(Bson::Array(a)) => a.clone(),
                        Some(other) => {
                            return Err(bad(format!(
                                "Cannot apply array updates to non-array element {}: {}",
                                prefix.last().map(String::as_str).unwrap_or(""),
                                fmt::value(other)
                            )))
                        }
                        None if ctx.is_upsert_insert => {
                            return Err(bad(format!(
                                "The path '{prefix_path}' must exist in the document in order to apply array updates."
                            )))
                        }
                        None => {
                            return Err(bad(format!(
                                "The path '{prefix_path}' must exist in the document in order to apply array updates."
                            )))
                        }
                    };
                    let filter = if id.is_empty() {
                        None
                    } else {
                        self.filters.iter().find(|(n, _)| n == id).map(|(_, m)| m)
                    };
                    for (i, e) in arr.iter().enumerate() {
                        let ok = match filter {
                            None => true,
                            Some(m) => {
                                let mut one = Document::new();
                                one.insert(id, e.clone());
                                m.matches(&one)
                            }
                        };
                        if ok {
                            let mut p = prefix.clone();
                            p.push(i.to_string());
                            next.push(p);
                        }
                    }
                }
                out = next;
            } else {
                for p in &mut out {
                    p.push(comp.clone());
                }
            }
        }
        Ok(out)
    }
}

/// SRV rename_node.cpp `RenameNode::apply`: `$set` of the source's value at the destination,
/// then removal of the source (logged as a delete).
fn apply_rename(
    doc: &mut Document,
    from: &[String],
    to: &[String],
    ctx: &UpdateCtx<'_>,
    log: &mut Vec<LogEntry>,
    id: Option<&Bson>,
) -> CmdResult<()> {
    let id_shown = match id {
        Some(v) => format!("_id: {}", fmt::value(v)),
        None => "no id".to_string(),
    };
    let from_dotted = from.join(".");
    let mut cur: Option<&Bson> = doc.get(&from[0]);
    let mut array_field: Option<&str> = None;
    for (i, p) in from.iter().enumerate().skip(1) {
        cur = match cur {
            None => return Ok(()),
            Some(Bson::Document(d)) => d.get(p),
            Some(Bson::Array(a)) => {
                array_field = Some(from[i - 1].as_str());
                array_index(p).and_then(|k| a.get(k))
            }
            Some(other) => {
                // SRV path_support.cpp findLongestPrefix: 28 PathNotViable
                return Err(CommandError::from_code(
                    28,
                    format!(
                        "Cannot use the part ({p}) of ({from_dotted}) to traverse the element ({{{}: {}}})",
                        from[i - 1],
                        fmt::value(other)
                    ),
                ));
            }
        };
    }
    let Some(value) = cur.cloned() else {
        return Ok(());
    };
    if let Some(af) = array_field {
        return Err(bad(format!(
            "The source field cannot be an array element, '{from_dotted}' in doc with {id_shown} has an array field called '{af}'"
        )));
    }
    let mut walk: Option<&Bson> = doc.get(&to[0]);
    for i in 0..to.len() - 1 {
        match walk {
            Some(Bson::Document(d)) => walk = d.get(&to[i + 1]),
            Some(Bson::Array(_)) => {
                return Err(bad(format!(
                    "The destination field cannot be an array element, '{}' in doc with {id_shown} has an array field called '{}'",
                    to.join("."),
                    to[i]
                )));
            }
            _ => break,
        }
    }
    let set = Mod::Set(value);
    let mut a = Applier {
        m: &set,
        ctx,
        log,
        id,
        path: to,
    };
    a.apply_in_doc(doc, 0, &mut Vec::new())?;
    remove_path(doc, from);
    log.push(LogEntry {
        path: from.iter().map(|p| (p.clone(), false)).collect(),
        kind: LogKind::Delete,
    });
    Ok(())
}

fn check_id_unchanged(old: &Document, new: &Document) -> CmdResult<()> {
    let same = match (old.get("_id"), new.get("_id")) {
        (Some(a), Some(b)) => binary_eq(a, b),
        (None, None) => true,
        (None, Some(_)) => true,
        _ => false,
    };
    if !same {
        // SRV update/update_util / object_replace_executor: 66 ImmutableField
        return Err(CommandError::from_code(
            66,
            "Performing an update on the path '_id' would modify the immutable field '_id'",
        ));
    }
    Ok(())
}

fn remove_path(doc: &mut Document, path: &[String]) {
    if path.len() == 1 {
        doc.remove(&path[0]);
        return;
    }
    let mut cur: Option<&mut Bson> = doc.get_mut(&path[0]);
    for p in &path[1..path.len() - 1] {
        cur = match cur {
            Some(Bson::Document(d)) => d.get_mut(p),
            Some(Bson::Array(a)) => array_index(p).and_then(move |i| a.get_mut(i)),
            _ => None,
        };
    }
    if let Some(Bson::Document(d)) = cur {
        d.remove(&path[path.len() - 1]);
    }
}

/// SRV `pathsupport::kMaxPaddingAllowed`.
const MAX_PADDING: usize = 1_500_000;

struct Applier<'x, 'c> {
    m: &'x Mod,
    ctx: &'x UpdateCtx<'c>,
    log: &'x mut Vec<LogEntry>,
    id: Option<&'x Bson>,
    path: &'x [String],
}

/// What a modifier did to an existing element.
enum Outcome {
    Noop,
    Updated,
    /// `$push` appended `n` elements at the end of a non-empty array.
    Appended(usize),
    /// `$unset` of a document field: remove it.
    Remove,
}

impl Applier<'_, '_> {
    fn creates(&self) -> bool {
        !matches!(
            self.m,
            Mod::Unset
                | Mod::Pop(_)
                | Mod::Pull(_)
                | Mod::PullAll(_)
                | Mod::Rename(_)
                | Mod::Placeholder
        )
    }

    fn id_string(&self) -> String {
        match self.id {
            Some(v) => format!("_id: {}", fmt::value(v)),
            None => "no id".to_string(),
        }
    }

    /// Applies at `self.path[i..]` inside document `d`. Returns the `$rename` source value
    /// (and its path) when the modifier is a rename whose source exists.
    fn apply_in_doc(
        &mut self,
        d: &mut Document,
        i: usize,
        taken: &mut Vec<(String, bool)>,
    ) -> CmdResult<()> {
        let part = self.path[i].clone();
        let last = i == self.path.len() - 1;
        taken.push((part.clone(), false));
        match d.get_mut(&part) {
            Some(child) => {
                if last {
                    let o = self.apply_existing_leaf(child, taken)?;
                    self.finish_doc_leaf(o, d, &part, taken)
                } else {
                    self.descend(child, i, taken)
                }
            }
            None => {
                if self.creates() {
                    let value = self.new_value_for_missing()?;
                    let Some(value) = value else { return Ok(()) };
                    let nested = nest(&self.path[i + 1..], value.clone());
                    d.insert(part, nested);
                    let mut full = taken.clone();
                    full.extend(self.path[i + 1..].iter().map(|p| (p.clone(), false)));
                    self.log.push(LogEntry {
                        path: full,
                        kind: LogKind::Create(value, i),
                    });
                }
                Ok(())
            }
        }
    }

    fn finish_doc_leaf(
        &mut self,
        o: Outcome,
        d: &mut Document,
        part: &str,
        taken: &[(String, bool)],
    ) -> CmdResult<()> {
        match o {
            Outcome::Remove => {
                d.remove(part);
                self.log.push(LogEntry {
                    path: taken.to_vec(),
                    kind: LogKind::Delete,
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn descend(
        &mut self,
        child: &mut Bson,
        i: usize,
        taken: &mut Vec<(String, bool)>,
    ) -> CmdResult<()> {
        match child {
            Bson::Document(sub) => self.apply_in_doc(sub, i + 1, taken),
            Bson::Array(arr) => self.apply_in_array(arr, i + 1, taken),
            other => {
                if self.creates() {
                    // SRV path_support.cpp / modifier_node.cpp: 28 PathNotViable
                    return Err(CommandError::from_code(
                        28,
                        format!(
                            "Cannot create field '{}' in element {{{}: {}}}",
                            self.path[i + 1],
                            self.path[i],
                            fmt::value(other)
                        ),
                    ));
                }
                self.check_viability(&self.path[i], other, i + 1)
            }
        }
    }

    /// SRV `UpdateLeafNode::checkViability`: non-creating modifiers other than `$unset` fail
    /// on a path that could never exist (28 PathNotViable).
    fn check_viability(&self, name: &str, element: &Bson, next: usize) -> CmdResult<()> {
        if matches!(self.m, Mod::Unset) {
            return Ok(());
        }
        Err(CommandError::from_code(
            28,
            format!(
                "Cannot use the part ({}) of ({}) to traverse the element ({{{name}: {}}})",
                self.path[next],
                self.path.join("."),
                fmt::value(element)
            ),
        ))
    }

    fn apply_in_array(
        &mut self,
        arr: &mut Vec<Bson>,
        i: usize,
        taken: &mut Vec<(String, bool)>,
    ) -> CmdResult<()> {
        let part = self.path[i].clone();
        let last = i == self.path.len() - 1;
        let Some(idx) = array_index(&part) else {
            if self.creates() {
                return Err(CommandError::from_code(
                    28,
                    format!(
                        "Cannot create field '{part}' in element {{{}: {}}}",
                        self.path[i - 1],
                        fmt::value(&Bson::Array(arr.clone()))
                    ),
                ));
            }
            return self.check_viability(&self.path[i - 1], &Bson::Array(arr.clone()), i);
        };
        taken.push((part.clone(), true));
        if idx < arr.len() {
            let child = &mut arr[idx];
            if last {
                let o = self.apply_existing_leaf(child, taken)?;
                if let Outcome::Remove = o {
                    // $unset of an array element sets it to null (SRV unset_node.cpp).
                    *child = Bson::Null;
                    self.log.push(LogEntry {
                        path: taken.clone(),
                        kind: LogKind::NullElement,
                    });
                }
                Ok(())
            } else {
                self.descend(child, i, taken)
            }
        } else {
            if self.creates() {
                let Some(value) = self.new_value_for_missing()? else {
                    return Ok(());
                };
                if idx - arr.len() > MAX_PADDING {
                    // SRV path_support.cpp: 34 CannotBackfillArray
                    return Err(CommandError::new(
                        34,
                        "CannotBackfillArray",
                        format!("can't backfill more than {MAX_PADDING} elements"),
                    ));
                }
                while arr.len() < idx {
                    arr.push(Bson::Null);
                }
                arr.push(nest(&self.path[i + 1..], value.clone()));
                let mut full = taken.clone();
                full.extend(self.path[i + 1..].iter().map(|p| (p.clone(), false)));
                self.log.push(LogEntry {
                    path: full,
                    kind: LogKind::Create(value, i),
                });
            }
            Ok(())
        }
    }

    /// Value a creating modifier stores when its path is missing (`None`: nothing to do).
    fn new_value_for_missing(&self) -> CmdResult<Option<Bson>> {
        Ok(Some(match self.m {
            Mod::Set(v) | Mod::SetOnInsert(v) | Mod::Min(v) | Mod::Max(v) | Mod::Inc(v) => {
                v.clone()
            }
            Mod::Mul(v) => match v {
                Bson::Int32(_) => Bson::Int32(0),
                Bson::Int64(_) => Bson::Int64(0),
                Bson::Decimal128(_) => Bson::Decimal128("0".parse().map_err(|_| bad("decimal"))?),
                _ => Bson::Double(0.0),
            },
            Mod::CurrentDate(ts) => self.current_date(*ts),
            Mod::Bit(ops) => apply_bits(&Bson::Int32(0), ops),
            Mod::Push(p) => {
                let mut arr = Vec::new();
                push_into(&mut arr, p);
                Bson::Array(arr)
            }
            Mod::AddToSet(vals) => {
                let mut arr: Vec<Bson> = Vec::new();
                for v in vals {
                    if !arr.iter().any(|x| bson_eq(x, v)) {
                        arr.push(v.clone());
                    }
                }
                Bson::Array(arr)
            }
            _ => return Ok(None),
        }))
    }

    fn current_date(&self, ts: bool) -> Bson {
        if ts {
            Bson::Timestamp(self.ctx.now_ts)
        } else {
            Bson::DateTime(self.ctx.now)
        }
    }

    /// Applies the modifier to the existing element `cur` (at `taken`) and logs the change.
    fn apply_existing_leaf(
        &mut self,
        cur: &mut Bson,
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        let outcome = self.modify_existing(cur, taken)?;
        self.log_outcome(&outcome, cur, taken);
        Ok(outcome)
    }

    /// What the modifier does to the existing element `cur`: the table from modifier to
    /// its function.
    fn modify_existing(&self, cur: &mut Bson, taken: &[(String, bool)]) -> CmdResult<Outcome> {
        Ok(match self.m {
            Mod::Placeholder => Outcome::Noop,
            Mod::Unset => Outcome::Remove,
            Mod::Rename(_) => Outcome::Noop,
            Mod::Set(v) | Mod::SetOnInsert(v) => set_if_different(cur, v.clone()),
            Mod::CurrentDate(ts) => set_if_different(cur, self.current_date(*ts)),
            Mod::Bit(ops) => self.bit_existing(cur, ops, taken)?,
            Mod::Inc(v) | Mod::Mul(v) => self.arith_existing(cur, v, taken)?,
            Mod::Min(v) | Mod::Max(v) => self.min_max_existing(cur, v),
            Mod::Push(p) => self.push_existing(cur, p, taken)?,
            Mod::AddToSet(vals) => add_to_set_existing(cur, vals, taken)?,
            Mod::Pop(first) => pop_existing(cur, *first, taken)?,
            Mod::Pull(_) | Mod::PullAll(_) => self.pull_existing(cur)?,
        })
    }

    /// `$bit` on an existing integer.
    fn bit_existing(
        &self,
        cur: &mut Bson,
        ops: &[(String, Bson)],
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        if !matches!(cur, Bson::Int32(_) | Bson::Int64(_)) {
            // SRV bit_node.cpp updateExistingElement
            return Err(bad(format!(
                "Cannot apply $bit to a value of non-integral type.{} has the field {} of non-integer type {}",
                self.id_string(),
                leaf_name(taken),
                fmt::type_name(cur)
            )));
        }
        let r = apply_bits(cur, ops);
        Ok(set_if_different(cur, r))
    }

    /// `$inc` / `$mul` by `v` on an existing number.
    fn arith_existing(
        &self,
        cur: &mut Bson,
        v: &Bson,
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        let inc = matches!(self.m, Mod::Inc(_));
        if as_f64(cur).is_none() {
            let op = if inc { "$inc" } else { "$mul" };
            // SRV arithmetic_node.cpp: 14 TypeMismatch
            return Err(CommandError::type_mismatch(format!(
                "Cannot apply {op} to a value of non-numeric type. {{{}}} has the field '{}' of non-numeric type {}",
                self.id_string(),
                leaf_name(taken),
                fmt::type_name(cur)
            )));
        }
        let r = if inc {
            super::expr::add_nums(cur, v)
        } else {
            super::expr::mul_nums(cur, v)
        };
        Ok(match r {
            Some(r) => set_if_different(cur, r),
            None => Outcome::Noop,
        })
    }

    /// `$min` / `$max`: `v` replaces `cur` when it is lower / higher.
    fn min_max_existing(&self, cur: &mut Bson, v: &Bson) -> Outcome {
        let o = cmp_bson(v, cur);
        let want = if matches!(self.m, Mod::Min(_)) {
            Ordering::Less
        } else {
            Ordering::Greater
        };
        if o == want {
            set_if_different(cur, v.clone())
        } else {
            Outcome::Noop
        }
    }

    /// `$push` into an existing array.
    fn push_existing(
        &self,
        cur: &mut Bson,
        p: &Push,
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        let Bson::Array(arr) = cur else {
            // SRV push_node.cpp performPush
            return Err(bad(format!(
                "The field '{}' must be an array but is of type {} in document {{{}}}",
                dotted(taken),
                fmt::type_name(cur),
                self.id_string()
            )));
        };
        let before = arr.len();
        Ok(match push_into(arr, p) {
            PushResult::Noop => Outcome::Noop,
            PushResult::Normal => Outcome::Updated,
            PushResult::Append => Outcome::Appended(arr.len() - before),
        })
    }

    /// `$pull` / `$pullAll` from an existing array.
    fn pull_existing(&self, cur: &mut Bson) -> CmdResult<Outcome> {
        let Bson::Array(arr) = cur else {
            // SRV array_culling_node.cpp
            return Err(bad("Cannot apply $pull to a non-array value"));
        };
        let before = arr.len();
        match self.m {
            Mod::Pull(c) => arr.retain(|e| !pull_matches(c, e)),
            Mod::PullAll(vals) => arr.retain(|e| !vals.iter().any(|v| bson_eq(e, v))),
            _ => {}
        }
        Ok(if arr.len() == before {
            Outcome::Noop
        } else {
            Outcome::Updated
        })
    }

    /// Logs an updated element, or each element appended to the array `cur`.
    fn log_outcome(&mut self, outcome: &Outcome, cur: &Bson, taken: &[(String, bool)]) {
        match outcome {
            Outcome::Updated => self.log.push(LogEntry {
                path: taken.to_vec(),
                kind: LogKind::Update(cur.clone()),
            }),
            Outcome::Appended(n) => {
                if let Bson::Array(arr) = cur {
                    let start = arr.len() - n;
                    for (k, v) in arr[start..].iter().enumerate() {
                        let mut p = taken.to_vec();
                        p.push(((start + k).to_string(), true));
                        let idx = p.len() - 1;
                        self.log.push(LogEntry {
                            path: p,
                            kind: LogKind::Create(v.clone(), idx),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// The dotted path of `taken`.
fn dotted(taken: &[(String, bool)]) -> String {
    taken
        .iter()
        .map(|(p, _)| p.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// The last component of `taken` (the field being modified).
fn leaf_name(taken: &[(String, bool)]) -> &str {
    taken.last().map(|(p, _)| p.as_str()).unwrap_or("")
}

/// `$addToSet` into an existing array: the values it does not contain yet.
fn add_to_set_existing(
    cur: &mut Bson,
    vals: &[Bson],
    taken: &[(String, bool)],
) -> CmdResult<Outcome> {
    let Bson::Array(arr) = cur else {
        // SRV addtoset_node.cpp
        return Err(bad(format!(
            "Cannot apply $addToSet to non-array field. Field named '{}' has non-array type {}",
            leaf_name(taken),
            fmt::type_name(cur)
        )));
    };
    let mut added = false;
    for v in vals {
        if !arr.iter().any(|x| bson_eq(x, v)) {
            arr.push(v.clone());
            added = true;
        }
    }
    Ok(if added {
        Outcome::Updated
    } else {
        Outcome::Noop
    })
}

/// `$pop` of the first (`first`) or last element of an existing array.
fn pop_existing(cur: &mut Bson, first: bool, taken: &[(String, bool)]) -> CmdResult<Outcome> {
    let Bson::Array(arr) = cur else {
        // SRV pop_node.cpp: 14 TypeMismatch
        return Err(CommandError::type_mismatch(format!(
            "Path '{}' contains an element of non-array type '{}'",
            dotted(taken),
            fmt::type_name(cur)
        )));
    };
    if arr.is_empty() {
        return Ok(Outcome::Noop);
    }
    if first {
        arr.remove(0);
    } else {
        arr.pop();
    }
    Ok(Outcome::Updated)
}

fn set_if_different(cur: &mut Bson, v: Bson) -> Outcome {
    if binary_eq(cur, &v) {
        Outcome::Noop
    } else {
        *cur = v;
        Outcome::Updated
    }
}

fn nest(rest: &[String], value: Bson) -> Bson {
    let mut v = value;
    for p in rest.iter().rev() {
        let mut d = Document::new();
        d.insert(p.clone(), v);
        v = Bson::Document(d);
    }
    v
}

fn pull_matches(c: &PullCond, e: &Bson) -> bool {
    match c {
        PullCond::Equal(v) => bson_eq(e, v),
        PullCond::Value(m) => {
            let mut d = Document::new();
            d.insert("v", e.clone());
            m.matches(&d)
        }
        PullCond::Query(m) => match e {
            Bson::Document(d) => m.matches(d),
            _ => false,
        },
    }
}

enum PushResult {
    Noop,
    Normal,
    Append,
}

/// SRV push_node.cpp `insertElementsWithPosition` + `performPush`.
fn push_into(arr: &mut Vec<Bson>, p: &Push) -> PushResult {
    let mut result = if p.each.is_empty() {
        PushResult::Noop
    } else {
        let size = arr.len() as i64;
        let position = p.position.unwrap_or(i64::MAX);
        if size == 0 {
            arr.extend(p.each.iter().cloned());
            PushResult::Normal
        } else if position > size {
            arr.extend(p.each.iter().cloned());
            PushResult::Append
        } else {
            let at = if position >= 0 {
                position as usize
            } else if position.saturating_neg() < size {
                (size + position) as usize
            } else {
                0
            };
            let tail = arr.split_off(at);
            arr.extend(p.each.iter().cloned());
            arr.extend(tail);
            PushResult::Normal
        }
    };
    if let Some(sort) = &p.sort {
        result = PushResult::Normal;
        arr.sort_by(|a, b| push_cmp(sort, a, b));
    }
    if let Some(slice) = p.slice {
        let keep = slice.unsigned_abs().min(usize::MAX as u64) as usize;
        while arr.len() > keep {
            result = PushResult::Normal;
            if slice >= 0 {
                arr.pop();
            } else {
                arr.remove(0);
            }
        }
    }
    result
}

fn push_cmp(sort: &PushSort, a: &Bson, b: &Bson) -> Ordering {
    match sort {
        PushSort::Whole(dir) => {
            let o = cmp_bson(a, b);
            if *dir < 0 {
                o.reverse()
            } else {
                o
            }
        }
        PushSort::Fields(fields) => {
            for (f, dir) in fields {
                let get = |v: &Bson| -> Bson {
                    match v {
                        Bson::Document(d) => {
                            super::path::get_path(d, f).cloned().unwrap_or(Bson::Null)
                        }
                        _ => Bson::Null,
                    }
                };
                let o = cmp_bson(&get(a), &get(b));
                let o = if *dir < 0 { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
    }
}

fn apply_replacement(
    doc: &Document,
    repl: &Document,
    ctx: &UpdateCtx<'_>,
) -> CmdResult<UpdateOutcome> {
    // SRV object_replace_executor.cpp: keep the original _id (first) when the replacement
    // has none; a different _id is an error.
    let mut new_doc = Document::new();
    match (doc.get("_id"), repl.get("_id")) {
        (Some(old), Some(new)) => {
            if !binary_eq(old, new) && !ctx.is_upsert_insert {
                return Err(CommandError::from_code(
                    66,
                    format!(
                        "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {}",
                        fmt::value(new)
                    ),
                ));
            }
            new_doc = repl.clone();
        }
        (Some(old), None) => {
            new_doc.insert("_id", old.clone());
            for (k, v) in repl {
                new_doc.insert(k.clone(), v.clone());
            }
        }
        (None, _) => new_doc = repl.clone(),
    }
    let modified = !binary_eq(
        &Bson::Document(doc.clone()),
        &Bson::Document(new_doc.clone()),
    );
    Ok(UpdateOutcome {
        v2_diff: new_doc.clone(),
        v1: new_doc.clone(),
        new_doc,
        modified,
        is_replacement: true,
    })
}

fn apply_pipeline(
    p: &super::pipeline::Pipeline,
    doc: &Document,
    ctx: &UpdateCtx<'_>,
) -> CmdResult<UpdateOutcome> {
    let out = p.run_with_vars(
        vec![doc.clone()],
        ctx.now,
        Some(ctx.now_ts),
        &super::matcher::eval_lets(ctx.lets)?,
    )?;
    let mut new_doc = out.into_iter().next().unwrap_or_default();
    // SRV pipeline_executor.cpp: the _id may not change; it is put back first if removed.
    match (doc.get("_id"), new_doc.get("_id")) {
        (Some(old), Some(new)) if !binary_eq(old, new) && !ctx.is_upsert_insert => {
            return Err(CommandError::from_code(
                66,
                "Performing an update on the path '_id' would modify the immutable field '_id'",
            ));
        }
        (Some(old), None) => {
            let mut d = doc! {"_id": old.clone()};
            for (k, v) in new_doc {
                d.insert(k, v);
            }
            new_doc = d;
        }
        _ => {}
    }
    let modified = !binary_eq(
        &Bson::Document(doc.clone()),
        &Bson::Document(new_doc.clone()),
    );
    // 7.0: delta if it is smaller than the post-image, else a replacement
    // (SRV document_diff_calculator.cpp computeOplogDiff).
    let diff = compute_oplog_diff(doc, &new_doc, DELTA_PADDING);
    let (v2, is_repl) = match diff {
        Some(d) => (doc! {"$v": 2, "diff": d}, false),
        None => (new_doc.clone(), true),
    };
    Ok(UpdateOutcome {
        v2_diff: v2,
        // 4.4 logs pipeline updates as replacements (reference §4.5).
        v1: new_doc.clone(),
        new_doc,
        modified,
        is_replacement: is_repl,
    })
}

/// Size of the `{$v: 2, diff: ...}` wrapper counted against a delta
/// (SRV pipeline_executor.cpp `kSizeOfDeltaOplogEntryMetadata`).
const DELTA_PADDING: usize = 15;

fn bson_size(d: &Document) -> usize {
    bson::to_vec(d).map(|v| v.len()).unwrap_or(usize::MAX)
}

fn value_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => bson_size(d),
        Bson::Array(a) => {
            let mut d = Document::new();
            for (i, e) in a.iter().enumerate() {
                d.insert(i.to_string(), e.clone());
            }
            bson_size(&d)
        }
        other => {
            let mut d = Document::new();
            d.insert("", other.clone());
            bson_size(&d).saturating_sub(7)
        }
    }
}

/// SRV `doc_diff::computeOplogDiff`: a `$v:2` diff of `pre` -> `post`, or `None` when a
/// replacement is smaller. Sizes are the server's approximations
/// (`diff_tree::InternalNode::ApproxBSONSizeTracker`: empty document diff 5 bytes, empty
/// array diff 9, each entry name + 2 + value size, +8 for each new `d`/`u`/`i` section, +1
/// for an `s` prefix, +7 for `l`).
pub(crate) fn compute_oplog_diff(
    pre: &Document,
    post: &Document,
    padding: usize,
) -> Option<Document> {
    let (node, _) = compute_doc_diff(pre, post, padding)?;
    let diff = node.serialize();
    (bson_size(&diff) < bson_size(post)).then_some(diff)
}

/// A document diff under construction with its approximate size.
struct DocDiff {
    children: Vec<(String, DNode)>,
    size: usize,
    has_u: bool,
    has_i: bool,
    has_d: bool,
}

impl DocDiff {
    fn new(padding: usize) -> Self {
        DocDiff {
            children: Vec::new(),
            size: padding + 5,
            has_u: false,
            has_i: false,
            has_d: false,
        }
    }

    fn add(&mut self, name: &str, node: DNode, child_size: usize) {
        self.size += name.len() + 2;
        match &node {
            DNode::Sub(_) | DNode::Arr(..) => self.size += child_size + 1,
            DNode::Ins(_) => self.size += child_size,
            DNode::Update(v) => {
                self.size += value_size(v);
                if !self.has_u {
                    self.has_u = true;
                    self.size += 8;
                }
            }
            DNode::Insert(v) => {
                self.size += value_size(v);
                if !self.has_i {
                    self.has_i = true;
                    self.size += 8;
                }
            }
            DNode::Delete => {
                self.size += 1;
                if !self.has_d {
                    self.has_d = true;
                    self.size += 8;
                }
            }
        }
        self.children.push((name.to_string(), node));
    }
}

fn compute_doc_diff(pre: &Document, post: &Document, padding: usize) -> Option<(DNode, usize)> {
    let post_size = bson_size(post);
    let mut diff = DocDiff::new(padding);
    let mut deletes: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let pre_v: Vec<(&String, &Bson)> = pre.iter().collect();
    let post_v: Vec<(&String, &Bson)> = post.iter().collect();
    let (mut i, mut j) = (0, 0);
    while i < pre_v.len() && j < post_v.len() {
        if post_size < diff.size {
            return None;
        }
        let (pk, pv) = pre_v[i];
        let (qk, qv) = post_v[j];
        if pk == qk && binary_eq(pv, qv) && same_type(pv, qv) {
            i += 1;
            j += 1;
            continue;
        }
        if pk == qk {
            let (node, size) = sub_diff(pv, qv);
            diff.add(pk, node, size);
            i += 1;
            j += 1;
        } else {
            deletes.insert(pk.clone());
            i += 1;
        }
    }
    while i < pre_v.len() {
        diff.add(pre_v[i].0, DNode::Delete, 0);
        i += 1;
    }
    while j < post_v.len() {
        let (k, v) = post_v[j];
        diff.add(k, DNode::Insert(v.clone()), 0);
        deletes.remove(k);
        j += 1;
    }
    for k in deletes {
        diff.add(&k, DNode::Delete, 0);
    }
    (post_size > diff.size).then(|| (DNode::Sub(diff.children), diff.size))
}

fn same_type(a: &Bson, b: &Bson) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// SRV `calculateSubDiffHelper`: a sub-diff, or an update of the whole value when the
/// sub-diff would not be smaller. Returns the node and its approximate size.
fn sub_diff(pre: &Bson, post: &Bson) -> (DNode, usize) {
    let sub = match (pre, post) {
        (Bson::Document(a), Bson::Document(b)) => compute_doc_diff(a, b, 0),
        (Bson::Array(a), Bson::Array(b)) => compute_array_diff(a, b),
        _ => None,
    };
    sub.unwrap_or_else(|| (DNode::Update(post.clone()), 0))
}

fn compute_array_diff(pre: &[Bson], post: &[Bson]) -> Option<(DNode, usize)> {
    let post_size = value_size(&Bson::Array(post.to_vec()));
    let mut children = BTreeMap::new();
    let mut size = 9;
    let add = |children: &mut BTreeMap<usize, DNode>,
               size: &mut usize,
               k: usize,
               node: DNode,
               child_size: usize| {
        *size += 1 + k.to_string().len() + 2;
        *size += match &node {
            DNode::Update(v) | DNode::Insert(v) => value_size(v),
            _ => child_size,
        };
        children.insert(k, node);
    };
    let n = pre.len().min(post.len());
    for k in 0..n {
        if post_size < size {
            return None;
        }
        if !(binary_eq(&pre[k], &post[k]) && same_type(&pre[k], &post[k])) {
            let (node, child_size) = sub_diff(&pre[k], &post[k]);
            add(&mut children, &mut size, k, node, child_size);
        }
    }
    for (k, v) in post.iter().enumerate().skip(n) {
        add(&mut children, &mut size, k, DNode::Update(v.clone()), 0);
    }
    let resize = (pre.len() > post.len()).then_some(post.len());
    if resize.is_some() {
        size += 7;
    }
    (post_size > size).then(|| (DNode::Arr(children, resize), size))
}

/// The document an upsert starts from: the equality predicates of its query
/// (SRV `UpdateDriver::populateDocumentWithQueryFields`, `pathsupport::extractEqualityMatches`).
/// For replacement updates only `_id` is taken.
pub(crate) fn upsert_seed(query: &Document) -> CmdResult<Document> {
    upsert_seed_for(query, false)
}

/// [`upsert_seed`] for a replacement update (`replacement = true`: only `_id` is taken).
pub(crate) fn upsert_seed_for(query: &Document, replacement: bool) -> CmdResult<Document> {
    let mut eqs: Vec<(String, Bson)> = Vec::new();
    collect_equalities(query, &mut eqs);
    let mut out = Document::new();
    for (path, v) in eqs {
        if replacement && path != "_id" {
            continue;
        }
        if super::path::get_path(&out, &path).is_some() {
            // SRV path_support.cpp: 54 NotSingleValueField
            return Err(CommandError::from_code(
                54,
                format!("cannot infer query fields to set, path '{path}' is matched twice"),
            ));
        }
        super::path::set_path(&mut out, &path, v)?;
    }
    // _id first.
    if let Some(id) = out.remove("_id") {
        let mut d = doc! {"_id": id};
        for (k, v) in out {
            d.insert(k, v);
        }
        out = d;
    }
    Ok(out)
}

fn collect_equalities(q: &Document, out: &mut Vec<(String, Bson)>) {
    for (k, v) in q {
        // A one-clause `$or` is canonicalized into its clause (SRV canonical_query.cpp).
        if k == "$or" {
            if let Bson::Array(items) = v {
                if let [Bson::Document(d)] = items.as_slice() {
                    collect_equalities(d, out);
                }
            }
            continue;
        }
        if k == "$and" {
            if let Bson::Array(items) = v {
                for it in items {
                    if let Bson::Document(d) = it {
                        collect_equalities(d, out);
                    }
                }
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Bson::Document(d) if d.keys().next().is_some_and(|f| f.starts_with('$')) => {
                if let Some(e) = d.get("$eq") {
                    out.push((k.clone(), e.clone()));
                } else if let Some(Bson::Array(items)) = d.get("$in") {
                    // a one-element $in is canonicalized to $eq
                    if let [single] = items.as_slice() {
                        if !matches!(single, Bson::RegularExpression(_)) {
                            out.push((k.clone(), single.clone()));
                        }
                    }
                }
            }
            Bson::RegularExpression(_) => {}
            other => out.push((k.clone(), other.clone())),
        }
    }
}

#[cfg(test)]
mod tests;

/// SRV src/mongo/db/update/v2_log_builder_test.cpp, ported against the log -> diff builder.
#[cfg(test)]
mod v2_log_builder_tests;
