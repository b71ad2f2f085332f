//! Aggregation pipelines over in-memory documents
//! (SRV `src/mongo/db/pipeline/document_source_*.cpp`).
//!
//! Stages: `$match $sort $skip $limit $project $addFields/$set $unset $replaceRoot/$replaceWith
//! $count $group $sample $unwind $facet $sortByCount $bucket $bucketAuto`, plus a final
//! `$out`/`$merge` that is parsed and handed to the caller ([`Pipeline::output_stage`]).
//! Unknown stages answer 40324; a stage document with more than one field 40323.

use bson::{Bson, DateTime, Document};

use super::expr::{Expr, Vars};
use super::matcher::Matcher;
use super::projection::Projection;
use super::sort::SortSpec;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

mod output;
mod parse;
mod run;

/// A parsed in-memory stage.
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
    /// `$redact`: the expression deciding `$$DESCEND` / `$$PRUNE` / `$$KEEP` per level.
    Redact(Expr),
}

/// A parsed pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    stages: Vec<(String, Stage)>,
    /// A final `$out` / `$merge`: the caller (the engine) performs the write with the
    /// documents [`Pipeline::run`] returns.
    output: Option<OutputStage>,
}

/// A final writing stage (SRV `document_source_out.cpp`, `document_source_merge.cpp`).
#[derive(Debug, Clone, PartialEq)]
pub enum OutputStage {
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
pub enum MergeWhenMatched {
    /// One of "merge", "replace", "keepExisting", "fail".
    Mode(String),
    /// An update pipeline applied to the existing document (`$$new` = the result document).
    Pipeline(Vec<Document>),
}

/// `$merge` `whenMatched: "merge"`: the existing document with the result's top-level fields
/// set over it (SRV document_source_merge.cpp `makeMergeStrategy`).
pub fn merge_documents(existing: &Document, incoming: &Document) -> Document {
    let mut out = existing.clone();
    for (k, v) in incoming {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// A [`CommandError`] with `code` and `msg`.
fn err(code: ErrorCode, msg: impl Into<String>) -> CommandError {
    CommandError::from_code(code, msg)
}

/// An integral number (`Double`s without a fraction included), possibly negative.
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
    pub fn parse(stages: &[Document]) -> CmdResult<Pipeline> {
        let mut out = Vec::with_capacity(stages.len());
        let mut output = None;
        for (i, s) in stages.iter().enumerate() {
            if s.len() != 1 {
                // SRV document_source.cpp: 40323
                return Err(err(
                    ErrorCode::StageSpecNotSingleField,
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
                        ErrorCode::StageMustBeLast,
                        format!("{name} can only be the final stage in the pipeline"),
                    ));
                }
                output = Some((name.clone(), output::parse_output(name, arg)?));
                continue;
            }
            let stage = parse::parse_stage(name, arg)?;
            out.push((name.clone(), stage));
        }
        Ok(Pipeline {
            stages: out,
            output: output.map(|(_, o)| o),
        })
    }

    /// Parses the stages of a command with a `let` document: `$match` stages' `$expr` and
    /// [`Pipeline::run_with_vars`] callers see the variables.
    pub fn parse_with_let(stages: &[Document], lets: Option<&Document>) -> CmdResult<Pipeline> {
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
    pub fn set_collation(&mut self, coll: Option<super::compare::Collation>) {
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
    pub fn stage_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.stages.iter().map(|(n, _)| n.as_str()).collect();
        match &self.output {
            Some(OutputStage::Out { .. }) => names.push("$out"),
            Some(OutputStage::Merge { .. }) => names.push("$merge"),
            None => {}
        }
        names
    }

    /// The final `$out`/`$merge`, if any: [`Pipeline::run`] returns the documents to write.
    pub fn output_stage(&self) -> Option<&OutputStage> {
        self.output.as_ref()
    }

    /// Runs the pipeline over `docs`.
    pub fn run(&self, docs: Vec<Document>) -> CmdResult<Vec<Document>> {
        self.run_with_now(docs, DateTime::now())
    }

    /// Runs with a fixed `$$NOW`.
    pub fn run_with_now(&self, docs: Vec<Document>, now: DateTime) -> CmdResult<Vec<Document>> {
        self.run_with_vars(docs, now, None, &[])
    }

    /// Runs with a fixed `$$NOW`, `$$CLUSTER_TIME` and `let` variables (see
    /// [`super::matcher::eval_lets`]); `$match` stages see the variables given to
    /// [`Pipeline::parse_with_let`].
    pub fn run_with_vars(
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
                ErrorCode::UnrecognizedPipelineStage,
                format!("Unrecognized pipeline stage name: '{name}'"),
            ));
        }
        self.run_for_output(docs, now, cluster_time, lets)
    }

    /// Runs every stage before a final `$out`/`$merge` (see [`Pipeline::output_stage`]) and
    /// returns the documents that stage must write; same as [`Pipeline::run_with_vars`] when
    /// there is no output stage.
    pub fn run_for_output(
        &self,
        docs: Vec<Document>,
        now: DateTime,
        cluster_time: Option<bson::Timestamp>,
        lets: &[(String, Bson)],
    ) -> CmdResult<Vec<Document>> {
        let env = Env {
            now,
            cluster_time,
            lets,
        };
        run::run_stages(&self.stages, docs, &env)
    }

    /// Runs the pipeline on one document (for per-event stages such as change streams'
    /// `$match`/`$project`): `None` when it was filtered out.
    pub fn run_one(&self, doc: Document) -> CmdResult<Option<Document>> {
        Ok(self.run(vec![doc])?.into_iter().next())
    }

    /// Whether the pipeline is empty.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

/// System and `let` variables for one run.
struct Env<'l> {
    /// `$$NOW`.
    now: DateTime,
    /// `$$CLUSTER_TIME`.
    cluster_time: Option<bson::Timestamp>,
    /// The command's `let` variables.
    lets: &'l [(String, Bson)],
}

impl Env<'_> {
    /// The variables an expression over `d` sees.
    fn vars<'a>(&self, d: &'a Document) -> Vars<'a> {
        let mut v = Vars::new(d);
        v.now = self.now;
        v.cluster_time = self.cluster_time;
        v.user = self.lets.to_vec();
        v
    }
}

#[cfg(test)]
mod tests;
