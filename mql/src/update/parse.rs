//! Parsing of update specifications: modifier documents (with the update tree's conflict
//! checks and order), replacements and pipelines.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::{bad, failed, Kind, Mod, PullCond, Push, PushSort, Update};
use crate::compare::as_f64;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt;
use crate::matcher::Matcher;

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
        ErrorCode::ConflictingUpdateOperators,
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
            ErrorCode::EmptyFieldName,
            "An empty update path is not valid.",
        ));
    }
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    for p in &parts {
        if p.is_empty() {
            return Err(CommandError::from_code(
                ErrorCode::EmptyFieldName,
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
    pub fn parse(spec: &Bson, array_filters: Option<&[Document]>) -> CmdResult<Update> {
        Self::parse_versioned(spec, array_filters, false)
    }

    /// [`Update::parse`] for a given server generation: `legacy_44` selects 4.4 behaviour
    /// (an empty modifier document is error 9, paths are applied in plain string order;
    /// 5.0+ accepts `{$set: {}}` as a no-op and orders numeric field names numerically,
    /// SRV `pathsupport::cmpPathsAndArrayIndexes`).
    pub fn parse_versioned(
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
                let p = crate::pipeline::Pipeline::parse(&docs)?;
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
                            ErrorCode::InvalidOptions,
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
                ErrorCode::DollarPrefixedFieldName,
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
