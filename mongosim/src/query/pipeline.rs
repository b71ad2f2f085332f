//! Aggregation pipelines over in-memory documents
//! (SRV `src/mongo/db/pipeline/document_source_*.cpp`).
//!
//! Stages: `$match $sort $skip $limit $project $addFields/$set $unset $replaceRoot/$replaceWith
//! $count $group $sample $unwind $facet $sortByCount $bucket $bucketAuto`, plus a final
//! `$out`/`$merge` that is parsed and handed to the caller ([`Pipeline::output_stage`]).
//! Unknown stages answer 40324; a stage document with more than one field 40323.

use bson::{Bson, DateTime, Document};
use rand::seq::SliceRandom;

use super::compare::cmp_bson;
use super::expr::{accumulate, Expr, Vars};
use super::fmt;
use super::matcher::Matcher;
use super::projection::Projection;
use super::sort::SortSpec;
use crate::error::{CmdResult, CommandError};

#[derive(Debug, Clone)]
enum Stage {
    Match(Matcher),
    Sort(SortSpec),
    Skip(u64),
    Limit(u64),
    Project(Projection),
    AddFields(Vec<(String, Expr)>),
    ReplaceRoot(Expr),
    Count(String),
    Group(Expr, Vec<(String, String, Expr)>),
    Sample(usize),
    /// `$unwind`: path (without `$`), includeArrayIndex, preserveNullAndEmptyArrays.
    Unwind(String, Option<String>, bool),
    /// `$facet`: named sub-pipelines over the same input.
    Facet(Vec<(String, Pipeline)>),
    /// `$bucket`: groupBy, boundaries, default, output accumulators.
    Bucket(Expr, Vec<Bson>, Option<Bson>, Vec<(String, String, Expr)>),
    /// `$bucketAuto`: groupBy, bucket count, output accumulators.
    BucketAuto(Expr, usize, Vec<(String, String, Expr)>),
}

/// A parsed pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    stages: Vec<(String, Stage)>,
    /// A final `$out` / `$merge`: the caller (the engine) performs the write with the
    /// documents [`Pipeline::run`] returns.
    output: Option<OutputStage>,
}

/// A final writing stage (SRV `document_source_out.cpp`, `document_source_merge.cpp`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OutputStage {
    /// `$out`: replace the target collection with the results.
    Out {
        /// Target database (`None`: the aggregate's database).
        db: Option<String>,
        /// Target collection.
        coll: String,
    },
    /// `$merge`: upsert the results into the target collection.
    Merge {
        /// Target database (`None`: the aggregate's database).
        db: Option<String>,
        /// Target collection.
        coll: String,
        /// `on` fields (default `["_id"]`).
        on: Vec<String>,
        /// `whenMatched`: "merge" (default), "replace", "keepExisting", "fail", or a pipeline.
        when_matched: MergeWhenMatched,
        /// `whenNotMatched`: "insert" (default), "discard", "fail".
        when_not_matched: String,
    },
}

/// `$merge`'s `whenMatched`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MergeWhenMatched {
    /// One of "merge", "replace", "keepExisting", "fail".
    Mode(String),
    /// An update pipeline applied to the existing document (`$$new` = the result document).
    Pipeline(Vec<Document>),
}

/// `$merge` `whenMatched: "merge"`: the existing document with the result's top-level fields
/// set over it (SRV document_source_merge.cpp `makeMergeStrategy`).
pub(crate) fn merge_documents(existing: &Document, incoming: &Document) -> Document {
    let mut out = existing.clone();
    for (k, v) in incoming {
        out.insert(k.clone(), v.clone());
    }
    out
}

fn parse_target(stage: &str, d: &Document) -> CmdResult<(Option<String>, String)> {
    let db = match d.get("db") {
        None => None,
        Some(Bson::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(CommandError::type_mismatch(format!(
                "BSON field '{stage}.db' is the wrong type '{}', expected type 'string'",
                fmt::type_name(other)
            )))
        }
    };
    let key = "coll";
    match d.get(key) {
        Some(Bson::String(s)) => Ok((db, s.clone())),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "BSON field '{stage}.{key}' is the wrong type '{}', expected type 'string'",
            fmt::type_name(other)
        ))),
        None => Err(CommandError::from_code(
            40414,
            format!("BSON field '{stage}.{key}' is missing but a required field"),
        )),
    }
}

fn parse_output(name: &str, arg: &Bson) -> CmdResult<OutputStage> {
    if name == "$out" {
        return match arg {
            Bson::String(s) => Ok(OutputStage::Out {
                db: None,
                coll: s.clone(),
            }),
            Bson::Document(d) => {
                let (db, coll) = parse_target("$out", d)?;
                Ok(OutputStage::Out { db, coll })
            }
            other => Err(err(
                16990,
                format!(
                    "$out only supports a string or object argument, not {}",
                    fmt::type_name(other)
                ),
            )),
        };
    }
    let (db, coll, spec) = match arg {
        Bson::String(s) => (None, s.clone(), Document::new()),
        Bson::Document(d) => {
            let (db, coll) = match d.get("into") {
                Some(Bson::String(s)) => (None, s.clone()),
                Some(Bson::Document(t)) => parse_target("$merge.into", t)?,
                Some(other) => {
                    return Err(err(
                        51178,
                        format!(
                        "$merge 'into' field  must be either a string or an object, but found {}",
                        fmt::type_name(other)
                    ),
                    ))
                }
                None => {
                    return Err(CommandError::from_code(
                        40414,
                        "BSON field '$merge.into' is missing but a required field",
                    ))
                }
            };
            (db, coll, d.clone())
        }
        other => {
            return Err(err(
                51182,
                format!(
                    "$merge only supports a string or object argument, but found {}",
                    fmt::type_name(other)
                ),
            ))
        }
    };
    let on = match spec.get("on") {
        None => vec!["_id".to_string()],
        Some(Bson::String(s)) => vec![s.clone()],
        Some(Bson::Array(a)) => a
            .iter()
            .map(|x| match x {
                Bson::String(s) => Ok(s.clone()),
                _ => Err(err(51134, "$merge 'on' array elements must be strings")),
            })
            .collect::<CmdResult<_>>()?,
        Some(_) => {
            return Err(err(
                51186,
                "$merge 'on' field  must be either a string or an array of strings",
            ))
        }
    };
    let when_matched = match spec.get("whenMatched") {
        None => MergeWhenMatched::Mode("merge".into()),
        Some(Bson::String(s))
            if matches!(s.as_str(), "merge" | "replace" | "keepExisting" | "fail") =>
        {
            MergeWhenMatched::Mode(s.clone())
        }
        Some(Bson::Array(stages)) => MergeWhenMatched::Pipeline(
            stages
                .iter()
                .filter_map(|s| s.as_document().cloned())
                .collect(),
        ),
        Some(other) => {
            return Err(CommandError::bad_value(format!(
                "Enumeration value '{}' for field '$merge.whenMatched' is not a valid value.",
                fmt::value(other).trim_matches('"')
            )))
        }
    };
    let when_not_matched = match spec.get("whenNotMatched") {
        None => "insert".to_string(),
        Some(Bson::String(s)) if matches!(s.as_str(), "insert" | "discard" | "fail") => s.clone(),
        Some(other) => {
            return Err(CommandError::bad_value(format!(
                "Enumeration value '{}' for field '$merge.whenNotMatched' is not a valid value.",
                fmt::value(other).trim_matches('"')
            )))
        }
    };
    Ok(OutputStage::Merge {
        db,
        coll,
        on,
        when_matched,
        when_not_matched,
    })
}

fn err(code: i32, msg: impl Into<String>) -> CommandError {
    CommandError::from_code(code, msg)
}

fn non_neg_int(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

/// Accumulators `$group` understands (SRV `accumulator_*.cpp`).
const ACCUMULATORS: &[&str] = &[
    "$sum",
    "$avg",
    "$min",
    "$max",
    "$first",
    "$last",
    "$push",
    "$addToSet",
    "$count",
];

impl Pipeline {
    /// Parses the stages.
    pub(crate) fn parse(stages: &[Document]) -> CmdResult<Pipeline> {
        let mut out = Vec::with_capacity(stages.len());
        let mut output = None;
        for (i, s) in stages.iter().enumerate() {
            if s.len() != 1 {
                // SRV document_source.cpp: 40323
                return Err(err(
                    40323,
                    "A pipeline stage specification object must contain exactly one field.",
                ));
            }
            let Some((name, arg)) = s.iter().next() else {
                continue;
            };
            if name == "$out" || name == "$merge" {
                if i + 1 != stages.len() {
                    // SRV pipeline.cpp validateCommon: 40601
                    return Err(err(
                        40601,
                        format!("{name} can only be the final stage in the pipeline"),
                    ));
                }
                output = Some((name.clone(), parse_output(name, arg)?));
                continue;
            }
            let stage = parse_stage(name, arg)?;
            out.push((name.clone(), stage));
        }
        Ok(Pipeline {
            stages: out,
            output: output.map(|(_, o)| o),
        })
    }

    /// Parses the stages of a command with a `let` document: `$match` stages' `$expr` and
    /// [`Pipeline::run_with_vars`] callers see the variables.
    pub(crate) fn parse_with_let(
        stages: &[Document],
        lets: Option<&Document>,
    ) -> CmdResult<Pipeline> {
        let vars = super::matcher::eval_lets(lets)?;
        let mut p = Pipeline::parse(stages)?;
        for (_, st) in &mut p.stages {
            if let Stage::Match(m) = st {
                m.set_lets(vars.clone());
            }
        }
        Ok(p)
    }

    /// Applies the command's collation to `$match` and `$sort` stages.
    pub(crate) fn set_collation(&mut self, coll: Option<super::compare::Collation>) {
        for (_, st) in &mut self.stages {
            match st {
                Stage::Match(m) => m.set_collation(coll.clone()),
                Stage::Sort(s) => s.set_collation(coll.clone()),
                Stage::Facet(subs) => {
                    for (_, sub) in subs {
                        sub.set_collation(coll.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// Stage names in order (e.g. for change-stream stage validation).
    pub(crate) fn stage_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.stages.iter().map(|(n, _)| n.as_str()).collect();
        match &self.output {
            Some(OutputStage::Out { .. }) => names.push("$out"),
            Some(OutputStage::Merge { .. }) => names.push("$merge"),
            None => {}
        }
        names
    }

    /// The final `$out`/`$merge`, if any: [`Pipeline::run`] returns the documents to write.
    pub(crate) fn output_stage(&self) -> Option<&OutputStage> {
        self.output.as_ref()
    }

    /// Runs the pipeline over `docs`.
    pub(crate) fn run(&self, docs: Vec<Document>) -> CmdResult<Vec<Document>> {
        self.run_with_now(docs, DateTime::now())
    }

    /// Runs with a fixed `$$NOW`.
    pub(crate) fn run_with_now(
        &self,
        docs: Vec<Document>,
        now: DateTime,
    ) -> CmdResult<Vec<Document>> {
        self.run_with_vars(docs, now, None, &[])
    }

    /// Runs with a fixed `$$NOW`, `$$CLUSTER_TIME` and `let` variables (see
    /// [`super::matcher::eval_lets`]); `$match` stages see the variables given to
    /// [`Pipeline::parse_with_let`].
    pub(crate) fn run_with_vars(
        &self,
        docs: Vec<Document>,
        now: DateTime,
        cluster_time: Option<bson::Timestamp>,
        lets: &[(String, Bson)],
    ) -> CmdResult<Vec<Document>> {
        if let Some(o) = &self.output {
            // Callers that can write use `run_for_output`; everyone else must not return
            // the documents as if they were the result.
            let name = match o {
                OutputStage::Out { .. } => "$out",
                OutputStage::Merge { .. } => "$merge",
            };
            return Err(err(
                40324,
                format!("Unrecognized pipeline stage name: '{name}'"),
            ));
        }
        self.run_for_output(docs, now, cluster_time, lets)
    }

    /// Runs every stage before a final `$out`/`$merge` (see [`Pipeline::output_stage`]) and
    /// returns the documents that stage must write; same as [`Pipeline::run_with_vars`] when
    /// there is no output stage.
    pub(crate) fn run_for_output(
        &self,
        mut docs: Vec<Document>,
        now: DateTime,
        cluster_time: Option<bson::Timestamp>,
        lets: &[(String, Bson)],
    ) -> CmdResult<Vec<Document>> {
        let env = Env {
            now,
            cluster_time,
            lets,
        };
        for (_, st) in &self.stages {
            docs = run_stage(st, docs, &env)?;
        }
        Ok(docs)
    }

    /// Runs the pipeline on one document (for per-event stages such as change streams'
    /// `$match`/`$project`): `None` when it was filtered out.
    pub(crate) fn run_one(&self, doc: Document) -> CmdResult<Option<Document>> {
        Ok(self.run(vec![doc])?.into_iter().next())
    }

    /// Whether the pipeline is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

fn parse_stage(name: &str, arg: &Bson) -> CmdResult<Stage> {
    Ok(match name {
        "$match" => match arg {
            Bson::Document(d) => Stage::Match(Matcher::parse(d)?),
            _ => return Err(err(15959, "the match filter must be an expression in an object")),
        },
        "$sort" => match arg {
            Bson::Document(d) => {
                let s = SortSpec::parse(d)?;
                if s.is_empty() && s.natural().is_none() {
                    return Err(err(15976, "$sort stage must have at least one sort key"));
                }
                Stage::Sort(s)
            }
            _ => return Err(err(15973, "the $sort key specification must be an object")),
        },
        "$skip" => match non_neg_int(arg) {
            Some(n) if n >= 0 => Stage::Skip(n as u64),
            Some(n) => return Err(err(15956, format!("invalid argument to $skip stage: Expected a non-negative number in: $skip: {n}"))),
            None => return Err(err(15972, format!("invalid argument to $skip stage: Expected a number in: $skip: {}", fmt::value(arg)))),
        },
        "$limit" => match non_neg_int(arg) {
            Some(n) if n > 0 => Stage::Limit(n as u64),
            Some(_) => return Err(err(15958, "the limit must be positive")),
            None => return Err(err(15957, format!("invalid argument to $limit stage: Expected a number in: $limit: {}", fmt::value(arg)))),
        },
        "$project" => match arg {
            Bson::Document(d) => {
                if d.is_empty() {
                    return Err(err(51272, "Invalid $project :: caused by :: projection specification must have at least one field"));
                }
                Stage::Project(Projection::parse(d).map_err(|e| {
                    CommandError::from_code(e.code, format!("Invalid $project :: caused by :: {}", e.errmsg))
                })?)
            }
            _ => return Err(err(15969, "$project specification must be an object")),
        },
        "$unset" => {
            let fields: Vec<String> = match arg {
                Bson::String(s) => vec![s.clone()],
                Bson::Array(a) if !a.is_empty() => a
                    .iter()
                    .map(|x| match x {
                        Bson::String(s) => Ok(s.clone()),
                        _ => Err(err(31120, "$unset specification must be a string or an array containing only string values")),
                    })
                    .collect::<CmdResult<_>>()?,
                Bson::Array(_) => return Err(err(31119, "$unset specification must be a string or an array with at least one field")),
                _ => return Err(err(31002, "$unset specification must be a string or an array")),
            };
            let mut spec = Document::new();
            for f in fields {
                spec.insert(f, 0);
            }
            Stage::Project(Projection::parse(&spec)?)
        }
        "$addFields" | "$set" => match arg {
            Bson::Document(d) if d.is_empty() => {
                // SRV document_source_add_fields.cpp: 40177
                return Err(err(
                    40177,
                    format!("Invalid {name} :: caused by :: specification must have at least one field"),
                ));
            }
            Bson::Document(d) => {
                let mut fields = Vec::new();
                flatten_add_fields(d, "", &mut fields)?;
                Stage::AddFields(fields)
            }
            _ => return Err(err(40272, format!("{name} specification stage must be an object, got {}", fmt::type_name(arg)))),
        },
        "$replaceRoot" => match arg {
            Bson::Document(d) => match d.get("newRoot") {
                Some(v) if d.len() == 1 => Stage::ReplaceRoot(Expr::parse(v)?),
                _ => {
                    return Err(err(40231, "no newRoot specified for the $replaceRoot stage"));
                }
            },
            _ => return Err(err(40229, format!("expected an object as specification for $replaceRoot stage, got {}", fmt::type_name(arg)))),
        },
        "$replaceWith" => Stage::ReplaceRoot(Expr::parse(arg)?),
        "$count" => match arg {
            Bson::String(s) if !s.is_empty() => {
                if s.starts_with('$') {
                    return Err(err(40158, "the count field cannot be a $-prefixed path"));
                }
                if s.contains('.') {
                    return Err(err(40160, "the count field cannot contain '.'"));
                }
                Stage::Count(s.clone())
            }
            Bson::String(_) => return Err(err(40157, "the count field must be a non-empty string")),
            _ => return Err(err(40156, "the count field must be a non-empty string")),
        },
        "$group" => {
            let Bson::Document(d) = arg else {
                return Err(err(15947, "a group's fields must be specified in an object"));
            };
            let Some(id) = d.get("_id") else {
                return Err(err(15955, "a group specification must include an _id"));
            };
            let id = Expr::parse(id)?;
            let mut accs = Vec::new();
            for (k, v) in d {
                if k == "_id" {
                    continue;
                }
                if k.contains('.') {
                    return Err(err(40235, format!("The field name '{k}' cannot contain '.'")));
                }
                let Bson::Document(ad) = v else {
                    return Err(err(40234, format!("The field '{k}' must be an accumulator object")));
                };
                if ad.len() != 1 {
                    return Err(err(40238, format!("The field '{k}' must specify one accumulator")));
                }
                let (op, e) = ad.iter().next().map(|(a, b)| (a.clone(), b.clone())).unwrap_or_default();
                if !ACCUMULATORS.contains(&op.as_str()) {
                    return Err(err(15952, format!("unknown group operator '{op}'")));
                }
                let expr = if op == "$count" {
                    Expr::Literal(Bson::Int32(1))
                } else {
                    Expr::parse(&e)?
                };
                accs.push((k.clone(), op, expr));
            }
            Stage::Group(id, accs)
        }
        "$unwind" => {
            let (path, idx, preserve) = match arg {
                Bson::String(s) => (s.clone(), None, false),
                Bson::Document(d) => {
                    for k in d.keys() {
                        if !matches!(k.as_str(), "path" | "includeArrayIndex" | "preserveNullAndEmptyArrays") {
                            // SRV document_source_unwind.cpp: 28811
                            return Err(err(28811, format!("unrecognized option to $unwind stage: {k}")));
                        }
                    }
                    let path = match d.get("path") {
                        Some(Bson::String(s)) => s.clone(),
                        Some(other) => {
                            return Err(err(28808, format!("expected a string as the path for $unwind stage, got {}", fmt::type_name(other))))
                        }
                        None => return Err(err(28812, "no path specified to $unwind stage")),
                    };
                    let idx = match d.get("includeArrayIndex") {
                        None => None,
                        Some(Bson::String(s)) if !s.is_empty() && !s.starts_with('$') => Some(s.clone()),
                        Some(other) => {
                            return Err(err(28810, format!("expected a non-empty string for the includeArrayIndex option to $unwind stage, got {}", fmt::type_name(other))))
                        }
                    };
                    let preserve = match d.get("preserveNullAndEmptyArrays") {
                        None => false,
                        Some(Bson::Boolean(b)) => *b,
                        Some(other) => {
                            return Err(err(28809, format!("expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage, got {}", fmt::type_name(other))))
                        }
                    };
                    (path, idx, preserve)
                }
                other => {
                    return Err(err(15981, format!("expected either a string or an object as specification for $unwind stage, got {}", fmt::type_name(other))))
                }
            };
            let Some(p) = path.strip_prefix('$') else {
                return Err(err(28818, format!("path option to $unwind stage should be prefixed with a '$': {path}")));
            };
            Stage::Unwind(p.to_string(), idx, preserve)
        }
        "$sortByCount" => {
            // SRV document_source_sort_by_count.cpp: {$group: {_id: <expr>, count: {$sum: 1}}},
            // {$sort: {count: -1}}
            let ok = match arg {
                Bson::String(s) => s.starts_with('$'),
                Bson::Document(d) => d.len() == 1 && d.keys().all(|k| k.starts_with('$')),
                _ => false,
            };
            if !ok {
                return Err(err(
                    40148,
                    "the sortByCount field must be defined as a $-prefixed path or an expression",
                ));
            }
            let group = Stage::Group(
                Expr::parse(arg)?,
                vec![("count".to_string(), "$sum".to_string(), Expr::Literal(Bson::Int32(1)))],
            );
            let sort = Stage::Sort(SortSpec::parse(&bson::doc! {"count": -1})?);
            Stage::Facet(vec![(
                String::new(),
                Pipeline {
                    stages: vec![("$group".into(), group), ("$sort".into(), sort)],
                    output: None,
                },
            )])
        }
        "$bucket" => {
            // SRV document_source_bucket.cpp
            let Bson::Document(d) = arg else {
                return Err(err(40201, format!("Argument to $bucket stage must be an object, but found type: {}", fmt::type_name(arg))));
            };
            for k in d.keys() {
                if !matches!(k.as_str(), "groupBy" | "boundaries" | "default" | "output") {
                    return Err(err(40197, format!("Unrecognized option to $bucket: {k}.")));
                }
            }
            let group_by = match d.get("groupBy") {
                Some(v @ Bson::String(s)) if s.starts_with('$') => Expr::parse(v)?,
                Some(v @ Bson::Document(_)) => Expr::parse(v)?,
                Some(other) => {
                    return Err(err(40202, format!("The $bucket 'groupBy' field must be defined as a $-prefixed path or an expression, but found: {}.", fmt::value(other))));
                }
                None => return Err(err(40198, "$bucket requires 'groupBy' and 'boundaries' to be specified.")),
            };
            let boundaries = match d.get("boundaries") {
                Some(Bson::Array(a)) => a.clone(),
                Some(other) => {
                    return Err(err(40200, format!("The $bucket 'boundaries' field must be an array, but found type: {}.", fmt::type_name(other))));
                }
                None => return Err(err(40198, "$bucket requires 'groupBy' and 'boundaries' to be specified.")),
            };
            if boundaries.len() < 2 {
                return Err(err(40192, format!("The $bucket 'boundaries' field must have at least 2 values, but found {} value(s).", boundaries.len())));
            }
            for w in boundaries.windows(2) {
                if super::compare::canonical_type(&w[0]) != super::compare::canonical_type(&w[1]) {
                    return Err(err(40193, format!("All values in the the 'boundaries' option to $bucket must have the same type. Found conflicting types {} and {}.", fmt::type_name(&w[0]), fmt::type_name(&w[1]))));
                }
                if cmp_bson(&w[0], &w[1]) != std::cmp::Ordering::Less {
                    return Err(err(40194, format!("The 'boundaries' option to $bucket must be sorted, but elements {} and {} are not in ascending order ({} is not less than {}).", 0, 1, fmt::value(&w[0]), fmt::value(&w[1]))));
                }
            }
            let default = d.get("default").cloned();
            if let Some(def) = &default {
                let lo = &boundaries[0];
                let hi = &boundaries[boundaries.len() - 1];
                let inside = super::compare::canonical_type(def) == super::compare::canonical_type(lo)
                    && cmp_bson(def, lo) != std::cmp::Ordering::Less
                    && cmp_bson(def, hi) == std::cmp::Ordering::Less;
                if inside {
                    return Err(err(40199, "The $bucket 'default' field must be less than the lowest boundary or greater than or equal to the highest boundary."));
                }
            }
            Stage::Bucket(group_by, boundaries, default, parse_output_accs("$bucket", d)?)
        }
        "$bucketAuto" => {
            // SRV document_source_bucket_auto.cpp
            let Bson::Document(d) = arg else {
                return Err(err(40240, format!("The argument to $bucketAuto must be an object, but found type: {}.", fmt::type_name(arg))));
            };
            for k in d.keys() {
                if !matches!(k.as_str(), "groupBy" | "buckets" | "output" | "granularity") {
                    return Err(err(40245, format!("Unrecognized option to $bucketAuto: {k}.")));
                }
            }
            if d.contains_key("granularity") {
                // preferred-number granularities are not modelled
                return Err(err(40257, "mongosim does not support $bucketAuto granularity"));
            }
            let group_by = match d.get("groupBy") {
                Some(v @ Bson::String(s)) if s.starts_with('$') => Expr::parse(v)?,
                Some(v @ Bson::Document(_)) => Expr::parse(v)?,
                Some(other) => {
                    return Err(err(40239, format!("The $bucketAuto 'groupBy' field must be defined as a $-prefixed path or an expression object, but found: {}.", fmt::value(other))));
                }
                None => return Err(err(40246, "$bucketAuto requires 'groupBy' and 'buckets' to be specified")),
            };
            let n = match d.get("buckets") {
                Some(v) => match non_neg_int(v) {
                    Some(n) if n > 0 && n <= i64::from(i32::MAX) => n as usize,
                    _ => return Err(err(40243, format!("The $bucketAuto 'buckets' field must be greater than 0, but found: {}", fmt::value(v)))),
                },
                None => return Err(err(40246, "$bucketAuto requires 'groupBy' and 'buckets' to be specified")),
            };
            Stage::BucketAuto(group_by, n, parse_output_accs("$bucketAuto", d)?)
        }
        "$facet" => {
            let Bson::Document(d) = arg else {
                return Err(err(15947, "the $facet specification must be a non-empty object"));
            };
            if d.is_empty() {
                return Err(err(40169, "the $facet specification must be a non-empty object"));
            }
            let mut facets = Vec::new();
            for (k, v) in d {
                let Bson::Array(stages) = v else {
                    return Err(err(
                        40170,
                        format!("arguments to $facet must be arrays, {k} is type {}", fmt::type_name(v)),
                    ));
                };
                let mut docs = Vec::new();
                for s in stages {
                    match s {
                        Bson::Document(sd) => docs.push(sd.clone()),
                        _ => {
                            return Err(err(
                                40171,
                                format!("subpipeline of $facet stage must contain only objects, {k} contains {}", fmt::type_name(s)),
                            ))
                        }
                    }
                }
                let sub = Pipeline::parse(&docs)?;
                for n in sub.stage_names() {
                    if matches!(n, "$facet" | "$out" | "$merge" | "$collStats" | "$indexStats" | "$changeStream") {
                        return Err(err(40600, format!("{n} is not allowed to be used within a $facet stage")));
                    }
                }
                facets.push((k.clone(), sub));
            }
            Stage::Facet(facets)
        }
        "$sample" => {
            let size = match arg {
                Bson::Document(d) => d.get("size").and_then(non_neg_int),
                _ => None,
            };
            match size {
                Some(n) if n >= 0 => Stage::Sample(n as usize),
                _ => return Err(err(28745, "$sample stage must specify a size")),
            }
        }
        _ => {
            // SRV document_source.cpp DocumentSource::parse: 40324
            return Err(err(40324, format!("Unrecognized pipeline stage name: '{name}'")));
        }
    })
}

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

/// Sets `path` in `doc` the way `$addFields` does: creates/overwrites embedded documents
/// (a non-document in the way is replaced); arrays of documents get the field in each element.
fn add_field(doc: &mut Document, parts: &[&str], v: Option<Bson>) {
    if parts.len() == 1 {
        match v {
            Some(v) => {
                doc.insert(parts[0], v);
            }
            None => {
                doc.remove(parts[0]);
            }
        }
        return;
    }
    match doc.get_mut(parts[0]) {
        Some(Bson::Document(sub)) => add_field(sub, &parts[1..], v),
        Some(Bson::Array(arr)) => {
            for e in arr.iter_mut() {
                if let Bson::Document(sub) = e {
                    add_field(sub, &parts[1..], v.clone());
                }
            }
        }
        _ => {
            if v.is_some() {
                let mut sub = Document::new();
                add_field(&mut sub, &parts[1..], v);
                doc.insert(parts[0], sub);
            }
        }
    }
}

/// System and `let` variables for one run.
struct Env<'l> {
    now: DateTime,
    cluster_time: Option<bson::Timestamp>,
    lets: &'l [(String, Bson)],
}

impl Env<'_> {
    fn vars<'a>(&self, d: &'a Document) -> Vars<'a> {
        let mut v = Vars::new(d);
        v.now = self.now;
        v.cluster_time = self.cluster_time;
        v.user = self.lets.to_vec();
        v
    }
}

fn run_stage(st: &Stage, docs: Vec<Document>, env: &Env<'_>) -> CmdResult<Vec<Document>> {
    Ok(match st {
        Stage::Match(m) => {
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                if m.try_matches(&d)? {
                    out.push(d);
                }
            }
            out
        }
        Stage::Sort(s) => {
            let mut docs = docs;
            s.sort(&mut docs);
            if s.natural() == Some(-1) && s.is_empty() {
                docs.reverse();
            }
            docs
        }
        Stage::Skip(n) => docs.into_iter().skip(*n as usize).collect(),
        Stage::Limit(n) => docs.into_iter().take(*n as usize).collect(),
        Stage::Project(p) => docs
            .iter()
            .map(|d| p.apply_vars(&env.vars(d), None))
            .collect::<CmdResult<_>>()?,
        Stage::AddFields(fields) => {
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                let vars = env.vars(&d);
                let mut vals = Vec::with_capacity(fields.len());
                for (_, e) in fields {
                    vals.push(e.eval(&vars)?);
                }
                let mut nd = d.clone();
                for ((path, _), v) in fields.iter().zip(vals) {
                    let parts: Vec<&str> = path.split('.').collect();
                    add_field(&mut nd, &parts, v);
                }
                out.push(nd);
            }
            out
        }
        Stage::ReplaceRoot(e) => {
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                let vars = env.vars(&d);
                match e.eval(&vars)? {
                    Some(Bson::Document(nd)) => out.push(nd),
                    other => {
                        // SRV document_source_replace_root.cpp: 40228
                        let v = other.unwrap_or(Bson::Null);
                        return Err(err(
                            40228,
                            format!(
                                "'replacement document' must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {}",
                                fmt::value(&v),
                                fmt::type_name(&v),
                                fmt::doc(&d)
                            ),
                        ));
                    }
                }
            }
            out
        }
        Stage::Count(name) => {
            if docs.is_empty() {
                Vec::new()
            } else {
                let mut d = Document::new();
                d.insert(name.clone(), docs.len() as i32);
                vec![d]
            }
        }
        Stage::Group(id, accs) => group(docs, id, accs, env)?,
        Stage::Unwind(path, idx, preserve) => {
            // SRV document_source_unwind.cpp
            let parts: Vec<&str> = path.split('.').collect();
            let mut out = Vec::new();
            for d in docs {
                let v = super::path::get_path(&d, path).cloned();
                match v {
                    Some(Bson::Array(items)) if !items.is_empty() => {
                        for (i, item) in items.into_iter().enumerate() {
                            let mut nd = d.clone();
                            add_field(&mut nd, &parts, Some(item));
                            if let Some(f) = idx {
                                nd.insert(f.clone(), i as i64);
                            }
                            out.push(nd);
                        }
                    }
                    Some(Bson::Array(_)) | None | Some(Bson::Null) => {
                        if *preserve {
                            let mut nd = d.clone();
                            if matches!(v, Some(Bson::Array(_))) {
                                add_field(&mut nd, &parts, None);
                            }
                            if let Some(f) = idx {
                                nd.insert(f.clone(), Bson::Null);
                            }
                            out.push(nd);
                        }
                    }
                    Some(_) => {
                        let mut nd = d;
                        if let Some(f) = idx {
                            nd.insert(f.clone(), Bson::Null);
                        }
                        out.push(nd);
                    }
                }
            }
            out
        }
        Stage::Bucket(group_by, boundaries, default, accs) => {
            let mut keys = Vec::with_capacity(docs.len());
            for d in &docs {
                let v = group_by.eval(&env.vars(d))?.unwrap_or(Bson::Null);
                let same = super::compare::canonical_type(&v)
                    == super::compare::canonical_type(&boundaries[0]);
                let slot = if same {
                    boundaries.windows(2).find(|w| {
                        cmp_bson(&v, &w[0]) != std::cmp::Ordering::Less
                            && cmp_bson(&v, &w[1]) == std::cmp::Ordering::Less
                    })
                } else {
                    None
                };
                match (slot, default) {
                    (Some(w), _) => keys.push(w[0].clone()),
                    (None, Some(def)) => keys.push(def.clone()),
                    (None, None) => {
                        // SRV: $bucket is a $group over a $switch
                        return Err(err(40066, "$switch could not find a matching branch for an input, and no default was specified."));
                    }
                }
            }
            let mut out = group_by_keys(&docs, keys, accs, env)?;
            // boundaries order, the default bucket last
            let rank = |d: &Document| {
                let id = d.get("_id").unwrap_or(&Bson::Null);
                boundaries
                    .iter()
                    .position(|b| cmp_bson(b, id) == std::cmp::Ordering::Equal)
                    .unwrap_or(usize::MAX)
            };
            out.sort_by_key(rank);
            out
        }
        Stage::BucketAuto(group_by, n, accs) => {
            let mut keyed = Vec::with_capacity(docs.len());
            for d in docs {
                let k = group_by.eval(&env.vars(&d))?.unwrap_or(Bson::Null);
                keyed.push((k, d));
            }
            keyed.sort_by(|a, b| cmp_bson(&a.0, &b.0));
            let approx = ((keyed.len() as f64 / *n as f64).round() as usize).max(1);
            let mut buckets: Vec<Vec<(Bson, Document)>> = Vec::new();
            for (k, d) in keyed {
                let start_new = match buckets.last() {
                    None => true,
                    Some(cur) => {
                        cur.len() >= approx
                            && buckets.len() < *n
                            && cur.last().is_some_and(|(lk, _)| {
                                cmp_bson(lk, &k) != std::cmp::Ordering::Equal
                            })
                    }
                };
                if start_new {
                    buckets.push(Vec::new());
                }
                if let Some(cur) = buckets.last_mut() {
                    cur.push((k, d));
                }
            }
            let mins: Vec<Bson> = buckets.iter().map(|b| b[0].0.clone()).collect();
            let mut out = Vec::with_capacity(buckets.len());
            for (i, b) in buckets.into_iter().enumerate() {
                let max = match mins.get(i + 1) {
                    Some(m) => m.clone(),
                    None => b.last().map(|(k, _)| k.clone()).unwrap_or(Bson::Null),
                };
                let id = Bson::Document(bson::doc! {"min": mins[i].clone(), "max": max});
                let (keys, docs): (Vec<Bson>, Vec<Document>) =
                    b.into_iter().map(|(_, d)| (id.clone(), d)).unzip();
                out.extend(group_by_keys(&docs, keys, accs, env)?);
            }
            out
        }
        Stage::Facet(facets) => {
            if facets.len() == 1 && facets[0].0.is_empty() {
                // internal form used by $sortByCount: just the sub-pipeline
                let mut docs = docs;
                for (_, st) in &facets[0].1.stages {
                    docs = run_stage(st, docs, env)?;
                }
                return Ok(docs);
            }
            let mut out = Document::new();
            for (name, sub) in facets {
                let mut part = docs.clone();
                for (_, st) in &sub.stages {
                    part = run_stage(st, part, env)?;
                }
                out.insert(
                    name.clone(),
                    part.into_iter().map(Bson::Document).collect::<Vec<_>>(),
                );
            }
            vec![out]
        }
        Stage::Sample(n) => {
            let mut docs = docs;
            docs.shuffle(&mut rand::rng());
            docs.truncate(*n);
            docs
        }
    })
}

/// A group key ordered like `cmp_bson` (so `1` and `1.0` are one group).
#[derive(Debug, Clone)]
struct GroupKey(Bson);

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        cmp_bson(&self.0, &other.0) == std::cmp::Ordering::Equal
    }
}
impl Eq for GroupKey {}
impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_bson(&self.0, &other.0)
    }
}

fn group(
    docs: Vec<Document>,
    id: &Expr,
    accs: &[(String, String, Expr)],
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    let keys = docs
        .iter()
        .map(|d| Ok(id.eval(&env.vars(d))?.unwrap_or(Bson::Null)))
        .collect::<CmdResult<Vec<Bson>>>()?;
    group_by_keys(&docs, keys, accs, env)
}

/// Groups `docs` by the given per-document keys (first-seen order) and evaluates the
/// accumulators (SRV `document_source_group.cpp`, `accumulator_*.cpp`).
fn group_by_keys(
    docs: &[Document],
    keys: Vec<Bson>,
    accs: &[(String, String, Expr)],
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    let mut index: std::collections::BTreeMap<GroupKey, usize> = std::collections::BTreeMap::new();
    let mut order: Vec<Bson> = Vec::new();
    let mut vals: Vec<Vec<Vec<Option<Bson>>>> = Vec::new();
    for (d, key) in docs.iter().zip(keys) {
        let vars = env.vars(d);
        let gi = match index.get(&GroupKey(key.clone())) {
            Some(i) => *i,
            None => {
                index.insert(GroupKey(key.clone()), order.len());
                order.push(key);
                vals.push(vec![Vec::new(); accs.len()]);
                order.len() - 1
            }
        };
        for (ai, (_, _, e)) in accs.iter().enumerate() {
            vals[gi][ai].push(e.eval(&vars)?);
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for (key, gvals) in order.into_iter().zip(vals) {
        let mut d = Document::new();
        d.insert("_id", key);
        for ((name, op, _), items) in accs.iter().zip(gvals) {
            let v = match op.as_str() {
                "$sum" | "$count" => {
                    let present: Vec<Bson> = items.into_iter().flatten().collect();
                    accumulate("$sum", &present)
                }
                "$avg" | "$min" | "$max" => {
                    let present: Vec<Bson> = items.into_iter().flatten().collect();
                    accumulate(op, &present)
                }
                "$first" => items.into_iter().next().flatten().unwrap_or(Bson::Null),
                "$last" => items.into_iter().last().flatten().unwrap_or(Bson::Null),
                "$push" => Bson::Array(items.into_iter().flatten().collect()),
                "$addToSet" => {
                    let mut seen: std::collections::BTreeSet<GroupKey> =
                        std::collections::BTreeSet::new();
                    let mut set: Vec<Bson> = Vec::new();
                    for v in items.into_iter().flatten() {
                        if seen.insert(GroupKey(v.clone())) {
                            set.push(v);
                        }
                    }
                    Bson::Array(set)
                }
                _ => Bson::Null,
            };
            d.insert(name.clone(), v);
        }
        out.push(d);
    }
    Ok(out)
}

/// Accumulator fields of `$bucket`/`$bucketAuto` `output` (default `{count: {$sum: 1}}`).
fn parse_output_accs(stage: &str, d: &Document) -> CmdResult<Vec<(String, String, Expr)>> {
    match d.get("output") {
        None => Ok(vec![(
            "count".to_string(),
            "$sum".to_string(),
            Expr::Literal(Bson::Int32(1)),
        )]),
        Some(Bson::Document(o)) => {
            let mut accs = Vec::new();
            for (k, v) in o {
                let Bson::Document(ad) = v else {
                    return Err(err(
                        40234,
                        format!("The field '{k}' must be an accumulator object"),
                    ));
                };
                let Some((op, e)) = ad.iter().next() else {
                    return Err(err(
                        40238,
                        format!("The field '{k}' must specify one accumulator"),
                    ));
                };
                if ad.len() != 1 {
                    return Err(err(
                        40238,
                        format!("The field '{k}' must specify one accumulator"),
                    ));
                }
                if !ACCUMULATORS.contains(&op.as_str()) {
                    return Err(err(15952, format!("unknown group operator '{op}'")));
                }
                let expr = if op == "$count" {
                    Expr::Literal(Bson::Int32(1))
                } else {
                    Expr::parse(e)?
                };
                accs.push((k.clone(), op.clone(), expr));
            }
            Ok(accs)
        }
        Some(other) => Err(err(
            40196,
            format!(
                "The $bucket 'output' field must be an object, but found type: {}",
                fmt::type_name(other)
            ),
        ))
        .map_err(|e| CommandError::from_code(e.code, e.errmsg.replace("$bucket", stage))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc};

    fn run(stages: Vec<Document>, docs: Vec<Document>) -> CmdResult<Vec<Document>> {
        Pipeline::parse(&stages)?.run(docs)
    }

    fn sample() -> Vec<Document> {
        vec![
            doc! {"_id": 1, "k": "a", "n": 1},
            doc! {"_id": 2, "k": "b", "n": 2},
            doc! {"_id": 3, "k": "a", "n": 3},
        ]
    }

    #[test]
    fn match_sort_skip_limit() {
        let out = run(
            vec![
                doc! {"$match": {"n": {"$gte": 2}}},
                doc! {"$sort": {"n": -1}},
                doc! {"$skip": 1},
                doc! {"$limit": 5},
            ],
            sample(),
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"_id": 2, "k": "b", "n": 2}]);
    }

    #[test]
    fn group_and_count() {
        let out = run(
            vec![
                doc! {"$group": {"_id": "$k", "total": {"$sum": "$n"}, "c": {"$sum": 1}, "avg": {"$avg": "$n"},
                    "mx": {"$max": "$n"}, "f": {"$first": "$_id"}, "all": {"$push": "$n"}}},
                doc! {"$sort": {"_id": 1}},
            ],
            sample(),
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                doc! {"_id": "a", "total": 4, "c": 2, "avg": 2.0, "mx": 3, "f": 1, "all": [1, 3]},
                doc! {"_id": "b", "total": 2, "c": 1, "avg": 2.0, "mx": 2, "f": 2, "all": [2]},
            ]
        );
        let out = run(vec![doc! {"$count": "n"}], sample()).unwrap();
        assert_eq!(out, vec![doc! {"n": 3}]);
        assert!(run(vec![doc! {"$count": "n"}], vec![]).unwrap().is_empty());
        let out = run(
            vec![doc! {"$group": {"_id": null, "s": {"$sum": "$n"}}}],
            sample(),
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"_id": null, "s": 6}]);
    }

    #[test]
    fn project_add_fields_unset_replace_root() {
        let docs = vec![doc! {"_id": 1, "a": {"b": 1, "c": 2}, "x": 5}];
        let out = run(vec![doc! {"$project": {"a.b": 1}}], docs.clone()).unwrap();
        assert_eq!(out, vec![doc! {"_id": 1, "a": {"b": 1}}]);
        let out = run(
            vec![doc! {"$addFields": {"a.d": "$x", "y": {"$add": ["$x", 1]}}}],
            docs.clone(),
        )
        .unwrap();
        assert_eq!(
            out,
            vec![doc! {"_id": 1, "a": {"b": 1, "c": 2, "d": 5}, "x": 5, "y": 6}]
        );
        let out = run(vec![doc! {"$set": {"x": "$$REMOVE"}}], docs.clone()).unwrap();
        assert_eq!(out, vec![doc! {"_id": 1, "a": {"b": 1, "c": 2}}]);
        let out = run(vec![doc! {"$unset": ["x", "a.c"]}], docs.clone()).unwrap();
        assert_eq!(out, vec![doc! {"_id": 1, "a": {"b": 1}}]);
        let out = run(vec![doc! {"$replaceRoot": {"newRoot": "$a"}}], docs.clone()).unwrap();
        assert_eq!(out, vec![doc! {"b": 1, "c": 2}]);
        let out = run(
            vec![doc! {"$replaceWith": {"$mergeObjects": ["$a", {"z": 1}]}}],
            docs.clone(),
        )
        .unwrap();
        assert_eq!(out, vec![doc! {"b": 1, "c": 2, "z": 1}]);
        let e = run(vec![doc! {"$replaceWith": "$x"}], docs).unwrap_err();
        assert_eq!(e.code, 40228);
    }

    #[test]
    fn unwind() {
        let docs = vec![
            doc! {"_id": 1, "a": [1, 2]},
            doc! {"_id": 2, "a": []},
            doc! {"_id": 3, "a": 7},
            doc! {"_id": 4},
        ];
        let out = run(vec![doc! {"$unwind": "$a"}], docs.clone()).unwrap();
        assert_eq!(
            out,
            vec![
                doc! {"_id": 1, "a": 1},
                doc! {"_id": 1, "a": 2},
                doc! {"_id": 3, "a": 7}
            ]
        );
        let out = run(
            vec![doc! {"$unwind": {"path": "$a", "includeArrayIndex": "i", "preserveNullAndEmptyArrays": true}}],
            docs,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                doc! {"_id": 1, "a": 1, "i": 0i64},
                doc! {"_id": 1, "a": 2, "i": 1i64},
                doc! {"_id": 2, "i": null},
                doc! {"_id": 3, "a": 7, "i": null},
                doc! {"_id": 4, "i": null},
            ]
        );
        assert_eq!(
            Pipeline::parse(&[doc! {"$unwind": "a"}]).unwrap_err().code,
            28818
        );
    }

    #[test]
    fn facet_and_sort_by_count() {
        let out = run(
            vec![doc! {"$facet": {"n": [{"$count": "c"}], "top": [{"$sort": {"n": -1}}, {"$limit": 1}]}}],
            sample(),
        )
        .unwrap();
        assert_eq!(
            out,
            vec![doc! {"n": [{"c": 3}], "top": [{"_id": 3, "k": "a", "n": 3}]}]
        );
        let out = run(vec![doc! {"$sortByCount": "$k"}], sample()).unwrap();
        assert_eq!(
            out,
            vec![doc! {"_id": "a", "count": 2}, doc! {"_id": "b", "count": 1}]
        );
        assert_eq!(
            Pipeline::parse(&[doc! {"$addFields": {}}])
                .unwrap_err()
                .code,
            40177
        );
    }

    #[test]
    fn bucket_and_bucket_auto() {
        let docs: Vec<Document> = (1..=10).map(|i| doc! {"_id": i, "v": i * 10}).collect();
        let out = run(
            vec![
                doc! {"$bucket": {"groupBy": "$v", "boundaries": [0, 50, 80], "default": "other",
                "output": {"n": {"$sum": 1}, "ids": {"$push": "$_id"}}}},
            ],
            docs.clone(),
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                doc! {"_id": 0, "n": 4, "ids": [1, 2, 3, 4]},
                doc! {"_id": 50, "n": 3, "ids": [5, 6, 7]},
                doc! {"_id": "other", "n": 3, "ids": [8, 9, 10]},
            ]
        );
        let e = run(
            vec![doc! {"$bucket": {"groupBy": "$v", "boundaries": [0, 50]}}],
            docs.clone(),
        )
        .unwrap_err();
        assert_eq!(e.code, 40066);
        let e = Pipeline::parse(&[doc! {"$bucket": {"groupBy": "$v", "boundaries": [5, 1]}}])
            .unwrap_err();
        assert_eq!(e.code, 40194);
        let out = run(
            vec![doc! {"$bucketAuto": {"groupBy": "$v", "buckets": 3}}],
            docs,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                doc! {"_id": {"min": 10, "max": 40}, "count": 3},
                doc! {"_id": {"min": 40, "max": 70}, "count": 3},
                doc! {"_id": {"min": 70, "max": 100}, "count": 4},
            ]
        );
    }

    #[test]
    fn sample_stage() {
        let out = run(vec![doc! {"$sample": {"size": 2}}], sample()).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn errors() {
        let e = Pipeline::parse(&[doc! {"$foo": 1}]).unwrap_err();
        assert_eq!(
            (e.code, e.errmsg.as_str()),
            (40324, "Unrecognized pipeline stage name: '$foo'")
        );
        let e = Pipeline::parse(&[doc! {"$match": {}, "$sort": {"a": 1}}]).unwrap_err();
        assert_eq!(e.code, 40323);
        let e = Pipeline::parse(&[doc! {"$project": {"x": {"$nope": 1}}}]).unwrap_err();
        assert_eq!(e.code, 168);
        let e = Pipeline::parse(&[doc! {"$limit": 0}]).unwrap_err();
        assert_eq!(e.code, 15958);
        let e = Pipeline::parse(&[doc! {"$project": {"a": 1, "b": 0}}]).unwrap_err();
        assert_eq!(e.code, 31254);
        assert!(e.errmsg.starts_with("Invalid $project :: caused by :: "));
        let p = Pipeline::parse(&[doc! {"$match": {"a": 1}}, doc! {"$project": {"a": 1}}]).unwrap();
        assert_eq!(p.stage_names(), vec!["$match", "$project"]);
        let _ = bson!(1);
    }

    #[test]
    fn let_variables() {
        let lets = doc! {"want": "a"};
        let p = Pipeline::parse_with_let(
            &[
                doc! {"$match": {"$expr": {"$eq": ["$k", "$$want"]}}},
                doc! {"$project": {"_id": 1, "w": "$$want"}},
            ],
            Some(&lets),
        )
        .unwrap();
        let vars = crate::query::matcher::eval_lets(Some(&lets)).unwrap();
        let out = p
            .run_with_vars(sample(), DateTime::now(), None, &vars)
            .unwrap();
        assert_eq!(
            out,
            vec![doc! {"_id": 1, "w": "a"}, doc! {"_id": 3, "w": "a"}]
        );
    }

    #[test]
    fn out_and_merge_are_final_stages_reported_to_the_caller() {
        let p =
            Pipeline::parse(&[doc! {"$match": {"n": {"$gt": 1}}}, doc! {"$out": "other"}]).unwrap();
        assert_eq!(p.stage_names(), vec!["$match", "$out"]);
        assert_eq!(
            p.output_stage(),
            Some(&OutputStage::Out {
                db: None,
                coll: "other".into()
            })
        );
        assert_eq!(p.run(sample()).unwrap_err().code, 40324);
        assert_eq!(
            p.run_for_output(sample(), DateTime::now(), None, &[])
                .unwrap()
                .len(),
            2
        );
        let p = Pipeline::parse(&[
            doc! {"$merge": {"into": {"db": "d", "coll": "c"}, "whenMatched": "replace"}},
        ])
        .unwrap();
        assert_eq!(
            p.output_stage(),
            Some(&OutputStage::Merge {
                db: Some("d".into()),
                coll: "c".into(),
                on: vec!["_id".into()],
                when_matched: MergeWhenMatched::Mode("replace".into()),
                when_not_matched: "insert".into(),
            })
        );
        let e = Pipeline::parse(&[doc! {"$out": "x"}, doc! {"$match": {}}]).unwrap_err();
        assert_eq!(
            (e.code, e.errmsg.as_str()),
            (40601, "$out can only be the final stage in the pipeline")
        );
        assert_eq!(
            merge_documents(
                &doc! {"_id": 1, "a": 1, "b": 1},
                &doc! {"_id": 1, "b": 2, "c": 3}
            ),
            doc! {"_id": 1, "a": 1, "b": 2, "c": 3}
        );
    }

    #[test]
    fn run_one_filters() {
        let p = Pipeline::parse(&[doc! {"$match": {"operationType": "insert"}}]).unwrap();
        assert!(p
            .run_one(doc! {"operationType": "insert"})
            .unwrap()
            .is_some());
        assert!(p
            .run_one(doc! {"operationType": "delete"})
            .unwrap()
            .is_none());
    }
}
