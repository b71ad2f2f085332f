//! String operators: `$concat`, `$toLower`, `$toUpper`, `$strLenBytes`.

use bson::Bson;

use super::convert::to_string;
use super::{tname, OpCall};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt::type_name;

/// `$concat`: strings only; null if any argument is null or missing.
pub(super) fn concat(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let mut s = String::new();
    for v in c.all()? {
        match v {
            Some(Bson::String(x)) => s.push_str(&x),
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(other) => {
                // SRV ExpressionConcat: 16702
                return Err(CommandError::from_code(
                    ErrorCode::ConcatNonString,
                    format!("$concat only supports strings, not {}", type_name(&other)),
                ));
            }
        }
    }
    Ok(Some(Bson::String(s)))
}

/// `$toLower` / `$toUpper` (ASCII): other values are converted as by `$toString` first;
/// null or missing gives `""`.
pub(super) fn change_case(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let convert = |s: String| {
        Bson::String(if c.name == "$toLower" {
            s.to_ascii_lowercase()
        } else {
            s.to_ascii_uppercase()
        })
    };
    Ok(Some(match c.arg(0)? {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Bson::String(String::new()),
        Some(Bson::String(s)) => convert(s),
        Some(other) => match to_string(&other)? {
            Bson::String(s) => convert(s),
            o => o,
        },
    }))
}

/// `$strLenBytes`: the UTF-8 length of a string.
pub(super) fn str_len_bytes(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(match c.arg(0)? {
        Some(Bson::String(s)) => Bson::Int32(s.len() as i32),
        other => {
            return Err(CommandError::from_code(
                ErrorCode::StrLenBytesNotString,
                format!(
                    "$strLenBytes requires a string argument, found: {}",
                    tname(&other)
                ),
            ))
        }
    }))
}
