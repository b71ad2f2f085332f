//! Pure query machinery over `bson` values: no I/O, no engine access.
//!
//! Public (crate) API — stable; later additions only add items:
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

// The API is consumed by the engine and change streams as they grow; not every helper has a
// caller yet.
#![allow(dead_code)]

pub(crate) mod compare;
pub(crate) mod expr;
pub(crate) mod fmt;
pub(crate) mod matcher;
pub(crate) mod path;
pub(crate) mod pipeline;
pub(crate) mod projection;
pub(crate) mod sort;
pub(crate) mod update;
pub(crate) mod update_description;
