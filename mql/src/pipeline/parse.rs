//! Parsing of the in-memory stages (SRV `document_source_*.cpp` `createFromBson`): one
//! function per stage, dispatched by [`parse_stage`].

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::{err, non_neg_int, Pipeline, Stage, ACCUMULATORS};
use crate::compare::{canonical_type, cmp_bson};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::expr::Expr;
use crate::fmt;
use crate::matcher::Matcher;
use crate::projection::Projection;
use crate::sort::SortSpec;

/// Parses one stage other than `$out`/`$merge`: the table from stage name to its parser.
pub(super) fn parse_stage(name: &str, arg: &Bson) -> CmdResult<Stage> {
    match name {
        "$match" => parse_match(arg),
        "$sort" => parse_sort(arg),
        "$skip" => parse_skip(arg),
        "$limit" => parse_limit(arg),
        "$project" => parse_project(arg),
        "$unset" => parse_unset(arg),
        "$addFields" | "$set" => parse_add_fields(name, arg),
        "$replaceRoot" => parse_replace_root(arg),
        "$replaceWith" => Ok(Stage::ReplaceRoot(Expr::parse(arg)?)),
        "$redact" => Ok(Stage::Redact(Expr::parse(arg)?)),
        "$count" => parse_count(arg),
        "$group" => parse_group(arg),
        "$unwind" => parse_unwind(arg),
        "$sortByCount" => parse_sort_by_count(arg),
        "$bucket" => parse_bucket(arg),
        "$bucketAuto" => parse_bucket_auto(arg),
        "$facet" => parse_facet(arg),
        "$sample" => parse_sample(arg),
        _ => {
            // SRV document_source.cpp DocumentSource::parse: 40324
            Err(err(
                ErrorCode::UnrecognizedPipelineStage,
                format!("Unrecognized pipeline stage name: '{name}'"),
            ))
        }
    }
}

/// `$match: <filter>`.
fn parse_match(arg: &Bson) -> CmdResult<Stage> {
    match arg {
        Bson::Document(d) => Ok(Stage::Match(Matcher::parse(d)?)),
        _ => Err(err(
            ErrorCode::MatchSpecNotObject,
            "the match filter must be an expression in an object",
        )),
    }
}

/// `$sort: <sort spec>` (at least one key, or `$natural`).
fn parse_sort(arg: &Bson) -> CmdResult<Stage> {
    match arg {
        Bson::Document(d) => {
            let s = SortSpec::parse(d)?;
            if s.is_empty() && s.natural().is_none() {
                return Err(err(
                    ErrorCode::SortSpecEmpty,
                    "$sort stage must have at least one sort key",
                ));
            }
            Ok(Stage::Sort(s))
        }
        _ => Err(err(
            ErrorCode::SortSpecNotObject,
            "the $sort key specification must be an object",
        )),
    }
}

/// `$skip: <non-negative integer>`.
fn parse_skip(arg: &Bson) -> CmdResult<Stage> {
    match non_neg_int(arg) {
        Some(n) if n >= 0 => Ok(Stage::Skip(n as u64)),
        Some(n) => Err(err(
            ErrorCode::SkipNegative,
            format!(
                "invalid argument to $skip stage: Expected a non-negative number in: $skip: {n}"
            ),
        )),
        None => Err(err(
            ErrorCode::SkipNotNumber,
            format!(
                "invalid argument to $skip stage: Expected a number in: $skip: {}",
                fmt::value(arg)
            ),
        )),
    }
}

/// `$limit: <positive integer>`.
fn parse_limit(arg: &Bson) -> CmdResult<Stage> {
    match non_neg_int(arg) {
        Some(n) if n > 0 => Ok(Stage::Limit(n as u64)),
        Some(_) => Err(err(
            ErrorCode::LimitNotPositive,
            "the limit must be positive",
        )),
        None => Err(err(
            ErrorCode::LimitNotNumber,
            format!(
                "invalid argument to $limit stage: Expected a number in: $limit: {}",
                fmt::value(arg)
            ),
        )),
    }
}

/// `$project: <projection>` (non-empty; errors are prefixed "Invalid $project").
fn parse_project(arg: &Bson) -> CmdResult<Stage> {
    match arg {
        Bson::Document(d) => {
            if d.is_empty() {
                return Err(err(ErrorCode::ProjectSpecEmpty, "Invalid $project :: caused by :: projection specification must have at least one field"));
            }
            Ok(Stage::Project(Projection::parse(d).map_err(|mut e| {
                e.errmsg = format!("Invalid $project :: caused by :: {}", e.errmsg);
                e
            })?))
        }
        _ => Err(err(
            ErrorCode::ProjectSpecNotObject,
            "$project specification must be an object",
        )),
    }
}

/// `$unset: "field"` or `["field", ...]`: an exclusion projection.
fn parse_unset(arg: &Bson) -> CmdResult<Stage> {
    let fields: Vec<String> = match arg {
        Bson::String(s) => vec![s.clone()],
        Bson::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                Bson::String(s) => Ok(s.clone()),
                _ => Err(err(ErrorCode::UnsetSpecNonString, "$unset specification must be a string or an array containing only string values")),
            })
            .collect::<CmdResult<_>>()?,
        Bson::Array(_) => return Err(err(ErrorCode::UnsetSpecEmpty, "$unset specification must be a string or an array with at least one field")),
        _ => return Err(err(ErrorCode::UnsetSpecWrongType, "$unset specification must be a string or an array")),
    };
    let mut spec = Document::new();
    for f in fields {
        spec.insert(f, 0);
    }
    Ok(Stage::Project(Projection::parse(&spec)?))
}

/// `$addFields` / `$set` (`name`): `{path: <expr>, ...}`, nested documents flattened to paths.
fn parse_add_fields(name: &str, arg: &Bson) -> CmdResult<Stage> {
    match arg {
        Bson::Document(d) if d.is_empty() => {
            // SRV document_source_add_fields.cpp: 40177
            Err(err(
                ErrorCode::AddFieldsSpecEmpty,
                format!(
                    "Invalid {name} :: caused by :: specification must have at least one field"
                ),
            ))
        }
        Bson::Document(d) => {
            let mut fields = Vec::new();
            flatten_add_fields(d, "", &mut fields)?;
            Ok(Stage::AddFields(fields))
        }
        _ => Err(err(
            ErrorCode::AddFieldsSpecNotObject,
            format!(
                "{name} specification stage must be an object, got {}",
                fmt::type_name(arg)
            ),
        )),
    }
}

/// The `(dotted path, expression)` pairs of an `$addFields` spec under `prefix`.
fn flatten_add_fields(d: &Document, prefix: &str, out: &mut Vec<(String, Expr)>) -> CmdResult<()> {
    for (k, v) in d {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Bson::Document(sub)
                if !sub.is_empty() && !sub.keys().next().is_some_and(|f| f.starts_with('$')) =>
            {
                flatten_add_fields(sub, &path, out)?;
            }
            other => out.push((path, Expr::parse(other)?)),
        }
    }
    Ok(())
}

/// `$replaceRoot: {newRoot: <expr>}`.
fn parse_replace_root(arg: &Bson) -> CmdResult<Stage> {
    match arg {
        Bson::Document(d) => match d.get("newRoot") {
            Some(v) if d.len() == 1 => Ok(Stage::ReplaceRoot(Expr::parse(v)?)),
            _ => Err(err(
                ErrorCode::ReplaceRootMissingNewRoot,
                "no newRoot specified for the $replaceRoot stage",
            )),
        },
        _ => Err(err(
            ErrorCode::ReplaceRootSpecNotObject,
            format!(
                "expected an object as specification for $replaceRoot stage, got {}",
                fmt::type_name(arg)
            ),
        )),
    }
}

/// `$count: "field"`.
fn parse_count(arg: &Bson) -> CmdResult<Stage> {
    match arg {
        Bson::String(s) if !s.is_empty() => {
            if s.starts_with('$') {
                return Err(err(
                    ErrorCode::CountFieldDollarPrefix,
                    "the count field cannot be a $-prefixed path",
                ));
            }
            if s.contains('.') {
                return Err(err(
                    ErrorCode::CountFieldContainsDot,
                    "the count field cannot contain '.'",
                ));
            }
            Ok(Stage::Count(s.clone()))
        }
        Bson::String(_) => Err(err(
            ErrorCode::CountFieldEmpty,
            "the count field must be a non-empty string",
        )),
        _ => Err(err(
            ErrorCode::CountFieldNotString,
            "the count field must be a non-empty string",
        )),
    }
}

/// `$group: {_id: <expr>, field: {$acc: <expr>}, ...}`.
fn parse_group(arg: &Bson) -> CmdResult<Stage> {
    let Bson::Document(d) = arg else {
        return Err(err(
            ErrorCode::GroupOrFacetSpecNotObject,
            "a group's fields must be specified in an object",
        ));
    };
    let Some(id) = d.get("_id") else {
        return Err(err(
            ErrorCode::GroupMissingId,
            "a group specification must include an _id",
        ));
    };
    let id = Expr::parse(id)?;
    let mut accs = Vec::new();
    for (k, v) in d {
        if k == "_id" {
            continue;
        }
        if k.contains('.') {
            return Err(err(
                ErrorCode::GroupFieldNameContainsDot,
                format!("The field name '{k}' cannot contain '.'"),
            ));
        }
        accs.push(parse_accumulator(k, v)?);
    }
    Ok(Stage::Group(id, accs))
}

/// One accumulator field `k: {$acc: <expr>}` of `$group` or of a bucket stage's `output`.
fn parse_accumulator(k: &str, v: &Bson) -> CmdResult<(String, String, Expr)> {
    let Bson::Document(ad) = v else {
        return Err(err(
            ErrorCode::GroupFieldNotAccumulator,
            format!("The field '{k}' must be an accumulator object"),
        ));
    };
    let Some((op, e)) = ad.iter().next().filter(|_| ad.len() == 1) else {
        return Err(err(
            ErrorCode::GroupFieldMultipleAccumulators,
            format!("The field '{k}' must specify one accumulator"),
        ));
    };
    if !ACCUMULATORS.contains(&op.as_str()) {
        return Err(err(
            ErrorCode::UnknownGroupOperator,
            format!("unknown group operator '{op}'"),
        ));
    }
    let expr = if op == "$count" {
        Expr::Literal(Bson::Int32(1))
    } else {
        Expr::parse(e)?
    };
    Ok((k.to_string(), op.clone(), expr))
}

/// Accumulator fields of `$bucket`/`$bucketAuto` `output` (default `{count: {$sum: 1}}`).
fn parse_output_accs(stage: &str, d: &Document) -> CmdResult<Vec<(String, String, Expr)>> {
    match d.get("output") {
        None => Ok(vec![(
            "count".to_string(),
            "$sum".to_string(),
            Expr::Literal(Bson::Int32(1)),
        )]),
        Some(Bson::Document(o)) => o.iter().map(|(k, v)| parse_accumulator(k, v)).collect(),
        Some(other) => Err(err(
            ErrorCode::BucketOutputNotObject,
            format!(
                "The $bucket 'output' field must be an object, but found type: {}",
                fmt::type_name(other)
            ),
        ))
        .map_err(|mut e| {
            e.errmsg = e.errmsg.replace("$bucket", stage);
            e
        }),
    }
}

/// `$unwind: "$path"` or `{path, includeArrayIndex, preserveNullAndEmptyArrays}`.
fn parse_unwind(arg: &Bson) -> CmdResult<Stage> {
    let (path, idx, preserve) = match arg {
        Bson::String(s) => (s.clone(), None, false),
        Bson::Document(d) => unwind_options(d)?,
        other => {
            return Err(err(
                ErrorCode::UnwindSpecWrongType,
                format!(
                "expected either a string or an object as specification for $unwind stage, got {}",
                fmt::type_name(other)
            ),
            ))
        }
    };
    let Some(p) = path.strip_prefix('$') else {
        return Err(err(
            ErrorCode::UnwindPathNoDollar,
            format!("path option to $unwind stage should be prefixed with a '$': {path}"),
        ));
    };
    Ok(Stage::Unwind(p.to_string(), idx, preserve))
}

/// The `(path, includeArrayIndex, preserveNullAndEmptyArrays)` of the document form of `$unwind`.
fn unwind_options(d: &Document) -> CmdResult<(String, Option<String>, bool)> {
    for k in d.keys() {
        if !matches!(
            k.as_str(),
            "path" | "includeArrayIndex" | "preserveNullAndEmptyArrays"
        ) {
            // SRV document_source_unwind.cpp: 28811
            return Err(err(
                ErrorCode::UnwindUnknownOption,
                format!("unrecognized option to $unwind stage: {k}"),
            ));
        }
    }
    let path = match d.get("path") {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => {
            return Err(err(
                ErrorCode::UnwindPathNotString,
                format!(
                    "expected a string as the path for $unwind stage, got {}",
                    fmt::type_name(other)
                ),
            ))
        }
        None => {
            return Err(err(
                ErrorCode::UnwindMissingPath,
                "no path specified to $unwind stage",
            ))
        }
    };
    let idx = match d.get("includeArrayIndex") {
        None => None,
        Some(Bson::String(s)) if !s.is_empty() && !s.starts_with('$') => Some(s.clone()),
        Some(other) => {
            return Err(err(ErrorCode::UnwindIncludeArrayIndexInvalid, format!("expected a non-empty string for the includeArrayIndex option to $unwind stage, got {}", fmt::type_name(other))))
        }
    };
    let preserve = match d.get("preserveNullAndEmptyArrays") {
        None => false,
        Some(Bson::Boolean(b)) => *b,
        Some(other) => {
            return Err(err(ErrorCode::UnwindPreserveNotBool, format!("expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage, got {}", fmt::type_name(other))))
        }
    };
    Ok((path, idx, preserve))
}

/// `$sortByCount: <expr>`: `{$group: {_id: <expr>, count: {$sum: 1}}}, {$sort: {count: -1}}`
/// (SRV document_source_sort_by_count.cpp), kept as an unnamed one-pipeline facet.
fn parse_sort_by_count(arg: &Bson) -> CmdResult<Stage> {
    let ok = match arg {
        Bson::String(s) => s.starts_with('$'),
        Bson::Document(d) => d.len() == 1 && d.keys().all(|k| k.starts_with('$')),
        _ => false,
    };
    if !ok {
        return Err(err(
            ErrorCode::SortByCountBadSpec,
            "the sortByCount field must be defined as a $-prefixed path or an expression",
        ));
    }
    let group = Stage::Group(
        Expr::parse(arg)?,
        vec![(
            "count".to_string(),
            "$sum".to_string(),
            Expr::Literal(Bson::Int32(1)),
        )],
    );
    let sort = Stage::Sort(SortSpec::parse(&bson::doc! {"count": -1})?);
    Ok(Stage::Facet(vec![(
        String::new(),
        Pipeline {
            stages: vec![("$group".into(), group), ("$sort".into(), sort)],
            output: None,
        },
    )]))
}

/// The `groupBy` of a bucket stage: a `$`-path or an expression object; `invalid` is the
/// error for any other value, `missing` the one when it is absent.
fn parse_group_by(
    d: &Document,
    invalid: impl FnOnce(&Bson) -> CommandError,
    missing: impl FnOnce() -> CommandError,
) -> CmdResult<Expr> {
    match d.get("groupBy") {
        Some(v @ Bson::String(s)) if s.starts_with('$') => Expr::parse(v),
        Some(v @ Bson::Document(_)) => Expr::parse(v),
        Some(other) => Err(invalid(other)),
        None => Err(missing()),
    }
}

/// `$bucket: {groupBy, boundaries, default, output}` (SRV document_source_bucket.cpp).
fn parse_bucket(arg: &Bson) -> CmdResult<Stage> {
    let Bson::Document(d) = arg else {
        return Err(err(
            ErrorCode::BucketSpecNotObject,
            format!(
                "Argument to $bucket stage must be an object, but found type: {}",
                fmt::type_name(arg)
            ),
        ));
    };
    for k in d.keys() {
        if !matches!(k.as_str(), "groupBy" | "boundaries" | "default" | "output") {
            return Err(err(
                ErrorCode::BucketUnknownOption,
                format!("Unrecognized option to $bucket: {k}."),
            ));
        }
    }
    let missing = || {
        err(
            ErrorCode::BucketMissingGroupByOrBoundaries,
            "$bucket requires 'groupBy' and 'boundaries' to be specified.",
        )
    };
    let group_by = parse_group_by(
        d,
        |other| {
            err(ErrorCode::BucketGroupByInvalid, format!("The $bucket 'groupBy' field must be defined as a $-prefixed path or an expression, but found: {}.", fmt::value(other)))
        },
        missing,
    )?;
    let boundaries = match d.get("boundaries") {
        Some(Bson::Array(a)) => a.clone(),
        Some(other) => {
            return Err(err(
                ErrorCode::BucketBoundariesNotArray,
                format!(
                    "The $bucket 'boundaries' field must be an array, but found type: {}.",
                    fmt::type_name(other)
                ),
            ));
        }
        None => return Err(missing()),
    };
    check_boundaries(&boundaries)?;
    let default = d.get("default").cloned();
    if let Some(def) = &default {
        check_bucket_default(def, &boundaries)?;
    }
    Ok(Stage::Bucket(
        group_by,
        boundaries,
        default,
        parse_output_accs("$bucket", d)?,
    ))
}

/// `$bucket` boundaries: at least two, all of one type, strictly ascending.
fn check_boundaries(boundaries: &[Bson]) -> CmdResult<()> {
    if boundaries.len() < 2 {
        return Err(err(ErrorCode::BucketTooFewBoundaries, format!("The $bucket 'boundaries' field must have at least 2 values, but found {} value(s).", boundaries.len())));
    }
    for w in boundaries.windows(2) {
        if canonical_type(&w[0]) != canonical_type(&w[1]) {
            return Err(err(ErrorCode::BucketBoundaryTypesDiffer, format!("All values in the the 'boundaries' option to $bucket must have the same type. Found conflicting types {} and {}.", fmt::type_name(&w[0]), fmt::type_name(&w[1]))));
        }
        if cmp_bson(&w[0], &w[1]) != Ordering::Less {
            return Err(err(ErrorCode::BucketBoundariesNotSorted, format!("The 'boundaries' option to $bucket must be sorted, but elements {} and {} are not in ascending order ({} is not less than {}).", 0, 1, fmt::value(&w[0]), fmt::value(&w[1]))));
        }
    }
    Ok(())
}

/// `$bucket` default: must fall outside `[lowest, highest)` of the boundaries.
fn check_bucket_default(def: &Bson, boundaries: &[Bson]) -> CmdResult<()> {
    let lo = &boundaries[0];
    let hi = &boundaries[boundaries.len() - 1];
    let inside = canonical_type(def) == canonical_type(lo)
        && cmp_bson(def, lo) != Ordering::Less
        && cmp_bson(def, hi) == Ordering::Less;
    if inside {
        return Err(err(ErrorCode::BucketDefaultInsideRange, "The $bucket 'default' field must be less than the lowest boundary or greater than or equal to the highest boundary."));
    }
    Ok(())
}

/// `$bucketAuto: {groupBy, buckets, output}` (SRV document_source_bucket_auto.cpp).
fn parse_bucket_auto(arg: &Bson) -> CmdResult<Stage> {
    let Bson::Document(d) = arg else {
        return Err(err(
            ErrorCode::BucketAutoSpecNotObject,
            format!(
                "The argument to $bucketAuto must be an object, but found type: {}.",
                fmt::type_name(arg)
            ),
        ));
    };
    for k in d.keys() {
        if !matches!(k.as_str(), "groupBy" | "buckets" | "output" | "granularity") {
            return Err(err(
                ErrorCode::BucketAutoUnknownOption,
                format!("Unrecognized option to $bucketAuto: {k}."),
            ));
        }
    }
    if d.contains_key("granularity") {
        // preferred-number granularities are not modelled
        return Err(err(
            ErrorCode::BucketAutoGranularityUnsupported,
            "mongosim does not support $bucketAuto granularity",
        ));
    }
    let missing = || {
        err(
            ErrorCode::BucketAutoMissingGroupByOrBuckets,
            "$bucketAuto requires 'groupBy' and 'buckets' to be specified",
        )
    };
    let group_by = parse_group_by(
        d,
        |other| {
            err(ErrorCode::BucketAutoGroupByInvalid, format!("The $bucketAuto 'groupBy' field must be defined as a $-prefixed path or an expression object, but found: {}.", fmt::value(other)))
        },
        missing,
    )?;
    let n = match d.get("buckets") {
        Some(v) => match non_neg_int(v) {
            Some(n) if n > 0 && n <= i64::from(i32::MAX) => n as usize,
            _ => {
                return Err(err(
                    ErrorCode::BucketAutoBucketsNotPositive,
                    format!(
                        "The $bucketAuto 'buckets' field must be greater than 0, but found: {}",
                        fmt::value(v)
                    ),
                ))
            }
        },
        None => return Err(missing()),
    };
    Ok(Stage::BucketAuto(
        group_by,
        n,
        parse_output_accs("$bucketAuto", d)?,
    ))
}

/// `$facet: {name: [stages], ...}`.
fn parse_facet(arg: &Bson) -> CmdResult<Stage> {
    let Bson::Document(d) = arg else {
        return Err(err(
            ErrorCode::GroupOrFacetSpecNotObject,
            "the $facet specification must be a non-empty object",
        ));
    };
    if d.is_empty() {
        return Err(err(
            ErrorCode::FacetSpecEmpty,
            "the $facet specification must be a non-empty object",
        ));
    }
    let mut facets = Vec::new();
    for (k, v) in d {
        facets.push((k.clone(), parse_facet_pipeline(k, v)?));
    }
    Ok(Stage::Facet(facets))
}

/// One `$facet` sub-pipeline `k: [stages]` (no nested `$facet`, no output or source stages).
fn parse_facet_pipeline(k: &str, v: &Bson) -> CmdResult<Pipeline> {
    let Bson::Array(stages) = v else {
        return Err(err(
            ErrorCode::FacetArgNotArray,
            format!(
                "arguments to $facet must be arrays, {k} is type {}",
                fmt::type_name(v)
            ),
        ));
    };
    let mut docs = Vec::new();
    for s in stages {
        match s {
            Bson::Document(sd) => docs.push(sd.clone()),
            _ => {
                return Err(err(
                    ErrorCode::FacetStageNotObject,
                    format!(
                        "subpipeline of $facet stage must contain only objects, {k} contains {}",
                        fmt::type_name(s)
                    ),
                ))
            }
        }
    }
    let sub = Pipeline::parse(&docs)?;
    for n in sub.stage_names() {
        if matches!(
            n,
            "$facet" | "$out" | "$merge" | "$collStats" | "$indexStats" | "$changeStream"
        ) {
            return Err(err(
                ErrorCode::StageNotAllowedInFacet,
                format!("{n} is not allowed to be used within a $facet stage"),
            ));
        }
    }
    Ok(sub)
}

/// `$sample: {size: <non-negative integer>}`.
fn parse_sample(arg: &Bson) -> CmdResult<Stage> {
    let size = match arg {
        Bson::Document(d) => d.get("size").and_then(non_neg_int),
        _ => None,
    };
    match size {
        Some(n) if n >= 0 => Ok(Stage::Sample(n as usize)),
        _ => Err(err(
            ErrorCode::SampleMissingSize,
            "$sample stage must specify a size",
        )),
    }
}
