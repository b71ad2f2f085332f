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

use bson::{Bson, DateTime, Document, Timestamp};

use super::matcher::Matcher;
use crate::error::CommandError;

/// Per-application context.
#[derive(Debug, Clone)]
pub struct UpdateCtx<'a> {
    /// The document is being inserted by an upsert (`$setOnInsert` applies, `_id` may be set).
    pub is_upsert_insert: bool,
    /// Wall-clock time for `$currentDate` / `$$NOW`.
    pub now: DateTime,
    /// Timestamp for `$currentDate: {$type: "timestamp"}`.
    pub now_ts: Timestamp,
    /// The query that selected the document (for the positional `$` operator).
    pub query: Option<&'a Document>,
    /// The command's `let` document (pipeline updates see `$$name`).
    pub lets: Option<&'a Document>,
}

impl<'a> UpdateCtx<'a> {
    /// A context for a plain update at `now`.
    pub fn new(now: DateTime) -> Self {
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
pub struct UpdateOutcome {
    /// The document after the update.
    pub new_doc: Document,
    /// Whether anything changed (a no-op update writes no oplog entry).
    pub modified: bool,
    /// The 7.0 oplog `o`: `{$v: 2, diff}`; for replacements the new document.
    pub v2_diff: Document,
    /// The 4.4 oplog `o`: `{$v: 1, $set, $unset}`; for replacements (and 4.4 pipeline
    /// updates) the new document.
    pub v1: Document,
    /// The oplog entry is a full replacement (`o` has no `$v`).
    pub is_replacement: bool,
}

/// A parsed update.
#[derive(Debug, Clone)]
pub struct Update {
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

mod applier;
mod apply;
mod diff;
mod log;
mod parse;
mod seed;

// The module's crate API (see `query/mod.rs`): not every item has a caller yet.
#[allow(unused_imports)]
pub use diff::compute_oplog_diff;
#[allow(unused_imports)]
pub use seed::{upsert_seed, upsert_seed_for};

#[cfg(test)]
mod tests;

/// SRV src/mongo/db/update/v2_log_builder_test.cpp, ported against the log -> diff builder.
#[cfg(test)]
mod v2_log_builder_tests;
