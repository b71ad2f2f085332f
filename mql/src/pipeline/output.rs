//! The final writing stages `$out` and `$merge` (SRV `document_source_out.cpp`,
//! `document_source_merge.cpp`): parsed here, performed by the caller.

use bson::{Bson, Document};

use super::{err, MergeWhenMatched, OutputStage};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt;

/// Parses a final `$out` or `$merge` stage (`name`).
pub(super) fn parse_output(name: &str, arg: &Bson) -> CmdResult<OutputStage> {
    if name == "$out" {
        return parse_out(arg);
    }
    parse_merge(arg)
}

/// The `{db, coll}` target document of `$out` or `$merge.into` (`stage` names it in errors).
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
            ErrorCode::IdlFailedToParse,
            format!("BSON field '{stage}.{key}' is missing but a required field"),
        )),
    }
}

/// `$out: "coll"` or `$out: {db, coll}`.
fn parse_out(arg: &Bson) -> CmdResult<OutputStage> {
    match arg {
        Bson::String(s) => Ok(OutputStage::Out {
            db: None,
            coll: s.clone(),
        }),
        Bson::Document(d) => {
            let (db, coll) = parse_target("$out", d)?;
            Ok(OutputStage::Out { db, coll })
        }
        other => Err(err(
            ErrorCode::OutSpecWrongType,
            format!(
                "$out only supports a string or object argument, not {}",
                fmt::type_name(other)
            ),
        )),
    }
}

/// `$merge: "coll"` or `$merge: {into, on, whenMatched, whenNotMatched}`.
fn parse_merge(arg: &Bson) -> CmdResult<OutputStage> {
    let (db, coll, spec) = match arg {
        Bson::String(s) => (None, s.clone(), Document::new()),
        Bson::Document(d) => {
            let (db, coll) = merge_into(d)?;
            (db, coll, d.clone())
        }
        other => {
            return Err(err(
                ErrorCode::MergeSpecWrongType,
                format!(
                    "$merge only supports a string or object argument, but found {}",
                    fmt::type_name(other)
                ),
            ))
        }
    };
    Ok(OutputStage::Merge {
        db,
        coll,
        on: merge_on(&spec)?,
        when_matched: merge_when_matched(&spec)?,
        when_not_matched: merge_when_not_matched(&spec)?,
    })
}

/// `$merge.into`: a collection name or a `{db, coll}` document.
fn merge_into(d: &Document) -> CmdResult<(Option<String>, String)> {
    match d.get("into") {
        Some(Bson::String(s)) => Ok((None, s.clone())),
        Some(Bson::Document(t)) => parse_target("$merge.into", t),
        Some(other) => Err(err(
            ErrorCode::MergeIntoWrongType,
            format!(
                "$merge 'into' field  must be either a string or an object, but found {}",
                fmt::type_name(other)
            ),
        )),
        None => Err(CommandError::from_code(
            ErrorCode::IdlFailedToParse,
            "BSON field '$merge.into' is missing but a required field",
        )),
    }
}

/// `$merge.on`: a field name or an array of them (default `["_id"]`).
fn merge_on(spec: &Document) -> CmdResult<Vec<String>> {
    match spec.get("on") {
        None => Ok(vec!["_id".to_string()]),
        Some(Bson::String(s)) => Ok(vec![s.clone()]),
        Some(Bson::Array(a)) => a
            .iter()
            .map(|x| match x {
                Bson::String(s) => Ok(s.clone()),
                _ => Err(err(
                    ErrorCode::MergeOnElementNotString,
                    "$merge 'on' array elements must be strings",
                )),
            })
            .collect::<CmdResult<_>>(),
        Some(_) => Err(err(
            ErrorCode::MergeOnWrongType,
            "$merge 'on' field  must be either a string or an array of strings",
        )),
    }
}

/// `$merge.whenMatched`: a mode (default "merge") or an update pipeline.
fn merge_when_matched(spec: &Document) -> CmdResult<MergeWhenMatched> {
    match spec.get("whenMatched") {
        None => Ok(MergeWhenMatched::Mode("merge".into())),
        Some(Bson::String(s))
            if matches!(s.as_str(), "merge" | "replace" | "keepExisting" | "fail") =>
        {
            Ok(MergeWhenMatched::Mode(s.clone()))
        }
        Some(Bson::Array(stages)) => Ok(MergeWhenMatched::Pipeline(
            stages
                .iter()
                .filter_map(|s| s.as_document().cloned())
                .collect(),
        )),
        Some(other) => Err(CommandError::bad_value(format!(
            "Enumeration value '{}' for field '$merge.whenMatched' is not a valid value.",
            fmt::value(other).trim_matches('"')
        ))),
    }
}

/// `$merge.whenNotMatched`: "insert" (default), "discard" or "fail".
fn merge_when_not_matched(spec: &Document) -> CmdResult<String> {
    match spec.get("whenNotMatched") {
        None => Ok("insert".to_string()),
        Some(Bson::String(s)) if matches!(s.as_str(), "insert" | "discard" | "fail") => {
            Ok(s.clone())
        }
        Some(other) => Err(CommandError::bad_value(format!(
            "Enumeration value '{}' for field '$merge.whenNotMatched' is not a valid value.",
            fmt::value(other).trim_matches('"')
        ))),
    }
}
