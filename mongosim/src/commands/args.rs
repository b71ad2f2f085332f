//! Argument helpers every command family shares: the generic arguments, typed optional and
//! required fields with the server's IDL errors (reference §1.6, §8.3), `let` and collation.

use bson::{Bson, Document};

use super::{Ctx, Request};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
pub(crate) use crate::query::compare::collation_of;
use crate::query::matcher::Matcher;

/// Generic arguments every command accepts besides its own fields (reference §1.6).
pub(crate) const GENERIC_ARGS: &[&str] = &[
    "$db",
    "$readPreference",
    "$clusterTime",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "readConcern",
    "writeConcern",
    "maxTimeMS",
    "comment",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "shardVersion",
    "databaseVersion",
];

/// BSON type name as the server spells it in messages (one table: `query::fmt`).
pub(crate) use crate::query::fmt::type_name;

/// The server's IDL type-mismatch error (reference §8.3).
pub(crate) fn wrong_type(field: &str, value: &Bson, expected: &str) -> CommandError {
    CommandError::wrong_type(field, value, expected)
}

/// SRV src/mongo/db/query/max_time_ms_parser.cpp `parseMaxTimeMS`: a number in
/// `0..=i32::MAX`, integral; 0 means no limit.
pub(crate) fn parse_max_time_ms(field: &str, value: &Bson) -> CmdResult<Option<i64>> {
    let ms = match value {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        Bson::Double(d) => {
            if d.is_nan() || *d < 0.0 || *d > f64::from(i32::MAX) {
                return Err(CommandError::bad_value(format!("{field} is out of range")));
            }
            if d.fract() != 0.0 {
                return Err(CommandError::bad_value(format!(
                    "{field} has non-integral value"
                )));
            }
            *d as i64
        }
        Bson::Decimal128(_) => {
            return Err(CommandError::bad_value(format!("{field} is out of range")))
        }
        _ => return Err(CommandError::bad_value(format!("{field} must be a number"))),
    };
    if !(0..=i64::from(i32::MAX)).contains(&ms) {
        return Err(CommandError::bad_value(format!("{field} is out of range")));
    }
    Ok((ms > 0).then_some(ms))
}

pub(crate) fn expect_doc<'v>(field: &str, value: &'v Bson) -> CmdResult<&'v Document> {
    match value {
        Bson::Document(d) => Ok(d),
        other => Err(wrong_type(field, other, "object")),
    }
}

pub(crate) fn expect_bool(field: &str, value: &Bson) -> CmdResult<bool> {
    match value {
        Bson::Boolean(b) => Ok(*b),
        other => Err(wrong_type(field, other, "bool")),
    }
}

/// Integral numbers of any width (a double only when it has no fraction), as the server's
/// `safeNumberLong`-style parsers accept.
pub(crate) fn expect_long(field: &str, value: &Bson) -> CmdResult<i64> {
    match value {
        Bson::Int32(i) => Ok(i64::from(*i)),
        Bson::Int64(i) => Ok(*i),
        Bson::Double(d) if d.fract() == 0.0 && d.abs() < 9.2e18 => Ok(*d as i64),
        other => Err(wrong_type(field, other, "long")),
    }
}

/// The server's IDL error for a missing required field (reference §8.3).
pub(crate) fn missing_field(cmd: &str, field: &str) -> CommandError {
    CommandError::from_code(
        ErrorCode::IdlFailedToParse,
        format!("BSON field '{cmd}.{field}' is missing but a required field"),
    )
}

/// An optional document field (14 TypeMismatch if present with another type).
pub(crate) fn opt_doc<'a>(
    body: &'a Document,
    cmd: &str,
    field: &str,
) -> CmdResult<Option<&'a Document>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d)),
        Some(other) => Err(wrong_type(&format!("{cmd}.{field}"), other, "object")),
    }
}

/// An optional boolean field (numbers are accepted as truthiness, as the IDL does).
pub(crate) fn opt_bool(body: &Document, cmd: &str, field: &str) -> CmdResult<Option<bool>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Boolean(b)) => Ok(Some(*b)),
        Some(Bson::Int32(i)) => Ok(Some(*i != 0)),
        Some(Bson::Int64(i)) => Ok(Some(*i != 0)),
        Some(Bson::Double(d)) => Ok(Some(*d != 0.0)),
        Some(other) => Err(wrong_type(&format!("{cmd}.{field}"), other, "bool")),
    }
}

/// An optional integral field.
pub(crate) fn opt_i64(body: &Document, cmd: &str, field: &str) -> CmdResult<Option<i64>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(i)) => Ok(Some(*i as i64)),
        Some(Bson::Int64(i)) => Ok(Some(*i)),
        Some(Bson::Double(d)) if d.is_finite() => Ok(Some(*d as i64)),
        Some(other) => Err(wrong_type(&format!("{cmd}.{field}"), other, "long")),
    }
}

/// A required array field.
pub(crate) fn req_array<'a>(
    body: &'a Document,
    cmd: &str,
    field: &str,
) -> CmdResult<&'a Vec<Bson>> {
    match body.get(field) {
        None => Err(missing_field(cmd, field)),
        Some(Bson::Array(a)) => Ok(a),
        Some(other) => Err(wrong_type(&format!("{cmd}.{field}"), other, "array")),
    }
}

/// 4.4 has no command-level `let` (added in 5.0): its parsers reject the field
/// (IDL 40415 for write commands; find/aggregate parsers 9 FailedToParse).
pub(crate) fn reject_let_on_44(ctx: &Ctx<'_>, req: &Request) -> CmdResult<()> {
    if ctx.shared.opts.version != crate::ServerVersion::V4_4 || !req.body.contains_key("let") {
        return Ok(());
    }
    Err(match req.name.as_str() {
        "find" => CommandError::failed_to_parse(format!(
            "Failed to parse: {}. Unrecognized field 'let'.",
            crate::query::fmt::doc(&req.body)
        )),
        "aggregate" => CommandError::failed_to_parse("unrecognized field 'let'"),
        // 4.4 findAndModify names the bare field
        "findAndModify" | "findandmodify" => CommandError::from_code(
            ErrorCode::IdlUnknownField,
            "BSON field 'let' is an unknown field.",
        ),
        name => CommandError::unknown_field("let", name),
    })
}

/// A matcher for `filter` with the command's `let` variables and a collation document
/// (`None`/simple: binary comparison).
pub(crate) fn matcher_for(
    filter: &Document,
    lets: Option<&Document>,
    collation: Option<&Bson>,
) -> CmdResult<Matcher> {
    let mut m = Matcher::parse_with_let(filter, lets)?;
    m.set_collation(collation_of(collation)?);
    Ok(m)
}

/// The `cursor.batchSize` of an `aggregate`/`listCollections`-style request.
pub(crate) fn cursor_batch_size(body: &Document, cmd: &str) -> CmdResult<Option<usize>> {
    match body.get("cursor") {
        None => Ok(None),
        Some(Bson::Document(c)) => match opt_i64(c, &format!("{cmd}.cursor"), "batchSize")? {
            Some(n) if n < 0 => Err(CommandError::from_code(
                ErrorCode::IdlValueBelowMinimum,
                format!("BSON field 'batchSize' value must be >= 0, actual value '{n}'"),
            )),
            Some(n) => Ok(Some(n as usize)),
            None => Ok(None),
        },
        Some(other) => Err(wrong_type(&format!("{cmd}.cursor"), other, "object")),
    }
}
