//! Type operators and conversions: `$type`, `$isArray`, `$toString`, `$toInt`, `$toLong`,
//! `$toDouble`, `$toBool` (SRV `ExpressionConvert`).

use bson::Bson;

use super::{is_nullish, tname, truthy, OpCall};
use crate::compare::as_f64;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt::type_name;

/// `$type`: the type name of its argument (`"missing"` when missing).
pub(super) fn type_of(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(Bson::String(tname(&c.arg(0)?).to_string())))
}

/// `$isArray`: whether its argument is an array.
pub(super) fn is_array(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(Bson::Boolean(matches!(
        c.arg(0)?,
        Some(Bson::Array(_))
    ))))
}

/// `$toString`: null or missing gives null.
pub(super) fn to_string_op(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(match c.arg(0)? {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Bson::Null,
        Some(v) => to_string(&v)?,
    }))
}

/// `$toInt`, `$toLong`, `$toDouble` (from numbers, booleans and numeric strings) and
/// `$toBool` (truthiness); null or missing gives null.
pub(super) fn to_scalar(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let name = c.name;
    let v = c.arg(0)?;
    if is_nullish(&v) {
        return Ok(Some(Bson::Null));
    }
    let v = v.unwrap_or(Bson::Null);
    let f = as_f64(&v);
    Ok(Some(match (name, f, &v) {
        ("$toBool", _, _) => Bson::Boolean(truthy(Some(&v))),
        ("$toInt", Some(f), _) => Bson::Int32(f.trunc() as i32),
        ("$toLong", Some(f), _) => Bson::Int64(f.trunc() as i64),
        ("$toDouble", Some(f), _) => Bson::Double(f),
        (_, _, Bson::Boolean(b)) => match name {
            "$toInt" => Bson::Int32(i32::from(*b)),
            "$toLong" => Bson::Int64(i64::from(*b)),
            _ => Bson::Double(f64::from(u8::from(*b))),
        },
        (_, _, Bson::String(s)) => parse_number(name, s)?,
        (_, _, other) => {
            return Err(CommandError::from_code(
                ErrorCode::ConversionFailure,
                format!(
                    "Unsupported conversion from {} to {} in $convert with no onError value",
                    type_name(other),
                    match name {
                        "$toInt" => "int",
                        "$toLong" => "long",
                        _ => "double",
                    }
                ),
            ))
        }
    }))
}

/// A numeric string converted by `$toInt`, `$toLong` or `$toDouble` (`name`).
fn parse_number(name: &str, s: &str) -> CmdResult<Bson> {
    let bad = || {
        CommandError::from_code(
            ErrorCode::ConversionFailure,
            format!("Failed to parse number '{s}' in $convert with no onError value: Did not consume whole string."),
        )
    };
    Ok(match name {
        "$toInt" => Bson::Int32(s.trim().parse().map_err(|_| bad())?),
        "$toLong" => Bson::Int64(s.trim().parse().map_err(|_| bad())?),
        _ => Bson::Double(s.trim().parse().map_err(|_| bad())?),
    })
}

/// `$toString` conversion (SRV `ExpressionConvert`).
pub(super) fn to_string(v: &Bson) -> CmdResult<Bson> {
    Ok(Bson::String(match v {
        Bson::String(s) => s.clone(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(f) => format_double(*f),
        Bson::Decimal128(d) => d.to_string(),
        Bson::Boolean(b) => b.to_string(),
        Bson::ObjectId(o) => o.to_hex(),
        Bson::DateTime(d) => d
            .try_to_rfc3339_string()
            .unwrap_or_else(|_| d.timestamp_millis().to_string()),
        Bson::Symbol(s) => s.clone(),
        other => {
            return Err(CommandError::from_code(
                ErrorCode::ConversionFailure,
                format!(
                    "Unsupported conversion from {} to string in $convert with no onError value",
                    type_name(other)
                ),
            ))
        }
    }))
}

/// A double as `$toString` renders it (`NaN`, `Infinity`, `-Infinity`).
fn format_double(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f}")
    }
}
