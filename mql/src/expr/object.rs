//! Object operators: `$mergeObjects`, `$getField`, `$setField`, `$unsetField`,
//! `$objectToArray`.

use bson::{Bson, Document};

use super::{is_nullish, tname, Expr, OpCall};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt::type_name;

/// `$mergeObjects`: later documents' fields win; null and missing arguments are skipped.
pub(super) fn merge_objects(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let mut out = Document::new();
    for v in c.all()? {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => {}
            Some(Bson::Document(d)) => {
                for (k, v) in d {
                    out.insert(k, v);
                }
            }
            Some(other) => {
                // SRV ExpressionMergeObjects: 40400
                return Err(CommandError::from_code(
                    ErrorCode::MergeObjectsNonObject,
                    format!(
                        "$mergeObjects requires object inputs, but input {} is of type {}",
                        crate::fmt::value(&other),
                        type_name(&other)
                    ),
                ));
            }
        }
    }
    Ok(Some(Bson::Document(out)))
}

/// The constant field name of a field operator (its first argument, checked at parse time).
fn field_name(c: &OpCall<'_, '_>) -> String {
    match &c.args[0] {
        Expr::Literal(Bson::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// `$getField`: a field of `input`, which may contain dots or start with `$`.
pub(super) fn get_field(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let field = field_name(c);
    match c.arg(1)? {
        Some(Bson::Document(d)) => Ok(d.get(&field).cloned()),
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(other) => Err(CommandError::from_code(
            ErrorCode::GetFieldInputNotObject,
            format!(
                "$getField requires 'input' to evaluate to type Object, but got {}",
                type_name(&other)
            ),
        )),
    }
}

/// `$setField` / `$unsetField`: `input` with one field set to `value` or removed (a
/// missing `value` removes it too).
pub(super) fn set_or_unset_field(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let name = c.name;
    let field = field_name(c);
    Ok(Some(match c.arg(1)? {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Bson::Null,
        Some(Bson::Document(mut d)) => {
            let v = if name == "$setField" { c.arg(2)? } else { None };
            match v {
                Some(v) => {
                    d.insert(field, v);
                }
                None => {
                    d.remove(&field);
                }
            }
            Bson::Document(d)
        }
        Some(other) => {
            return Err(CommandError::from_code(
                ErrorCode::SetFieldInputNotObject,
                format!(
                    "{name} requires 'input' to evaluate to type Object, but got {}",
                    type_name(&other)
                ),
            ))
        }
    }))
}

/// `$objectToArray`: a document as `[{k, v}, ..]`.
pub(super) fn object_to_array(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(match c.arg(0)? {
        v if is_nullish(&v) => Bson::Null,
        Some(Bson::Document(d)) => Bson::Array(
            d.into_iter()
                .map(|(k, v)| Bson::Document(bson::doc! {"k": k, "v": v}))
                .collect(),
        ),
        other => {
            return Err(CommandError::from_code(
                ErrorCode::ObjectToArrayNotObject,
                format!(
                    "$objectToArray requires a document input, found: {}",
                    tname(&other)
                ),
            ))
        }
    }))
}
