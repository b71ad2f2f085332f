//! MongoDB's query language on BSON documents, evaluated as MongoDB 7.0 evaluates it: query
//! filters (`$eq` … `$expr`, `$jsonSchema` aside), aggregation expressions, projections,
//! update operators and aggregation pipeline stages, with the error codes a server gives for
//! the same input. Pure: no I/O, no server.
//!
//! The documented API is small: [`Matcher`] (does a document match a filter?), [`Projection`],
//! [`Pipeline`] (run stages over documents; [`Pipeline::run_one`] for one document at a time),
//! and [`change_event::EventPipeline`] (a pipeline applied to change events the way a server
//! applies the stages after `$changeStream`), with [`Error`] and [`ErrorCode`].
//!
//! ```
//! use bson::doc;
//! use mql::{Matcher, Pipeline};
//!
//! let m = Matcher::parse(&doc! {"qty": {"$gte": 10}, "tags": "red"})?;
//! assert!(m.matches(&doc! {"qty": 12, "tags": ["red", "blue"]}));
//!
//! let p = Pipeline::parse(&[
//!     doc! {"$match": {"status": "A"}},
//!     doc! {"$project": {"_id": 0, "total": {"$multiply": ["$price", "$qty"]}}},
//! ])?;
//! let out = p.run_one(doc! {"_id": 1, "status": "A", "price": 2.5, "qty": 4})?;
//! assert_eq!(out, Some(doc! {"total": 10.0}));
//! assert_eq!(p.run_one(doc! {"_id": 2, "status": "B"})?, None);
//! # Ok::<(), mql::Error>(())
//! ```
//!
//! An invalid filter or pipeline is an [`Error`] carrying the server's code:
//!
//! ```
//! let e = mql::Pipeline::parse(&[bson::doc! {"$bogus": {}}]).unwrap_err();
//! assert_eq!(e.code, 40324); // Unrecognized pipeline stage name
//! ```
//!
//! ## The engine modules
//!
//! Hidden from the documentation and not covered by semver: the full machinery the server
//! simulator (mongosim) runs on; later additions only add items:
//! - [`compare`]: `cmp_bson(&Bson, &Bson) -> Ordering` (BSON order across types),
//!   `bson_eq` (query equality, `1 == 1.0`), `binary_eq` (type-exact), `canonical_type`,
//!   `as_f64`; collations: `Collation::parse(&collation_doc) -> CmdResult<Option<Collation>>`
//!   (`None` = simple), `cmp_coll`, and `set_collation(..)` on `Matcher`, `SortSpec`,
//!   `Pipeline`.
//! - [`path`]: `get_path`, `set_path`, `unset_path` (strict dotted paths, numeric components
//!   index arrays), `collect_values` (fan-out through arrays), `array_index`.
//! - [`matcher`]: `Matcher::parse(&Document) -> CmdResult<Matcher>`, `matcher.matches(&doc)`,
//!   `matcher.try_matches(&doc) -> CmdResult<bool>` (`$expr` evaluation errors),
//!   `Matcher::all()`, `matcher.matched_array_index(&doc, "arr")` (positional `$`),
//!   `Matcher::parse_with_let(&filter, Some(&let_doc))`, `matcher::eval_lets`.
//! - [`expr`]: aggregation expressions `Expr::parse(&Bson)`, `expr.eval(&Vars::new(&doc))`
//!   (`None` = missing).
//! - [`update`]: `Update::parse(&Bson /* doc or pipeline array */, array_filters: Option<&[Document]>)`
//!   (7.0 rules) / `Update::parse_versioned(.., legacy_44)`,
//!   `update.apply(&doc, &UpdateCtx::new(now)) -> CmdResult<UpdateOutcome>` (`UpdateCtx` fields:
//!   `is_upsert_insert`, `now`, `now_ts`, `query` for positional `$`, `lets`) with
//!   `UpdateOutcome { new_doc, modified, v2_diff /* full 7.0 `o` */, v1 /* full 4.4 `o` */,
//!   is_replacement }`; `is_replacement()`, `is_pipeline()`, `is_positional()`;
//!   `update::upsert_seed(&query)` / `upsert_seed_for(&query, replacement)` (equality fields
//!   of an upsert's query); `update::compute_oplog_diff(&pre, &post, padding)`.
//! - [`update_description`]: `from_v2_diff(&diff, with_disambiguated_paths) -> CmdResult<Document>`
//!   and `from_v1(&o) -> Document`: the change event `updateDescription`.
//! - [`projection`]: `Projection::parse(&Document) -> CmdResult<Projection>`, `apply(&doc)`,
//!   `apply_with_query(&doc, Some(&matcher))` (positional `a.$`), `is_inclusion()`.
//! - [`sort`]: `SortSpec::parse(&Document) -> CmdResult<SortSpec>`, `compare(&a, &b)`,
//!   `sort(&mut [Document])`, `natural() -> Option<i32>` when the spec contains `$natural`,
//!   `is_empty()`.
//! - [`pipeline`]: `Pipeline::parse(&[Document]) -> CmdResult<Pipeline>`, `run(Vec<Document>)`,
//!   `run_with_now(docs, now)`, `run_one(Document) -> CmdResult<Option<Document>>` (per-event
//!   use: change streams), `stage_names()`, `is_empty()`; `let` support:
//!   `Pipeline::parse_with_let(&stages, lets)` + `run_with_vars(docs, now, cluster_time, &vars)`;
//!   a final `$out`/`$merge` is parsed and reported by `output_stage() -> Option<&OutputStage>`:
//!   the engine writes what `run_for_output(..)` returns (`merge_documents` for
//!   `whenMatched: "merge"`); plain `run*` answer 40324 for such pipelines, as before.
//! - [`fmt`]: server-style BSON rendering for errmsgs (`doc`, `value`, `type_name`).

#![warn(missing_debug_implementations, rust_2018_idioms)]
// Every fallible function returns `Result<T, Error>`; the error carries the server reply's
// code, codeName, errmsg, labels and extra fields by value and is the cold path.
#![allow(clippy::result_large_err)]
// The engine API is consumed by the server simulator as it grows; not every helper has a
// caller yet.
#![allow(dead_code)]

pub mod change_event;
pub mod error;
mod error_codes;

#[doc(hidden)]
pub mod compare;
#[doc(hidden)]
pub mod expr;
#[doc(hidden)]
pub mod fmt;
#[doc(hidden)]
pub mod matcher;
#[doc(hidden)]
pub mod path;
#[doc(hidden)]
pub mod pipeline;
#[doc(hidden)]
pub mod projection;
#[doc(hidden)]
pub mod sort;
#[doc(hidden)]
pub mod update;
#[doc(hidden)]
pub mod update_description;

pub use error::{code_name, Error, ErrorCode, Result};
pub use matcher::Matcher;
pub use pipeline::Pipeline;
pub use projection::Projection;
