//! Array operators: `$in`, `$size`, `$arrayElemAt`, `$first`, `$last`, `$concatArrays`,
//! `$setUnion`, `$slice`, `$reverseArray`.

use std::cmp::Ordering;

use bson::Bson;

use super::{cmp_values, is_nullish, tname, OpCall};
use crate::compare::{as_f64, cmp_bson};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt::type_name;

/// `$in`: whether the first argument equals an element of the second, an array.
pub(super) fn in_array(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let (x, arr) = (c.arg(0)?, c.arg(1)?);
    Ok(Some(match arr {
        Some(Bson::Array(a)) => Bson::Boolean(
            a.iter()
                .any(|e| cmp_values(x.as_ref(), Some(e)) == Ordering::Equal),
        ),
        other => {
            // SRV ExpressionIn: 40081
            return Err(CommandError::from_code(
                ErrorCode::InSecondArgNotArray,
                format!(
                    "$in requires an array as a second argument, found: {}",
                    tname(&other)
                ),
            ));
        }
    }))
}

/// `$size`: the length of an array.
pub(super) fn size(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(match c.arg(0)? {
        Some(Bson::Array(a)) => Bson::Int32(a.len() as i32),
        other => {
            // SRV ExpressionSize: 17124
            return Err(CommandError::from_code(
                ErrorCode::SizeArgNotArray,
                format!(
                    "The argument to $size must be an array. Type of argument is: {}",
                    tname(&other)
                ),
            ));
        }
    }))
}

/// `$arrayElemAt`: the element at an index (negative from the end); missing when out
/// of bounds.
pub(super) fn array_elem_at(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let (a, i) = (c.arg(0)?, c.arg(1)?);
    if is_nullish(&a) || is_nullish(&i) {
        return Ok(Some(Bson::Null));
    }
    match (a, i.as_ref().and_then(as_f64)) {
        (Some(Bson::Array(arr)), Some(idx)) => {
            let idx = idx as i64;
            let n = arr.len() as i64;
            let real = if idx < 0 { n.saturating_add(idx) } else { idx };
            if real < 0 || real >= n {
                return Ok(None);
            }
            Ok(Some(arr[real as usize].clone()))
        }
        (a, _) => Err(CommandError::from_code(
            ErrorCode::ArrayElemAtNotArray,
            format!(
                "$arrayElemAt's first argument must be an array, but is {}",
                tname(&a)
            ),
        )),
    }
}

/// `$first` / `$last`: an array's first or last element (missing for an empty array).
pub(super) fn first_or_last(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let name = c.name;
    match c.arg(0)? {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(Some(Bson::Null)),
        Some(Bson::Array(a)) => {
            let e = if name == "$first" {
                a.first()
            } else {
                a.last()
            };
            Ok(e.cloned())
        }
        Some(other) => Err(CommandError::from_code(
            ErrorCode::ArrayElemAtNotArray,
            format!(
                "{name}'s argument must be an array, but is {}",
                type_name(&other)
            ),
        )),
    }
}

/// `$concatArrays`: the arrays' elements in order; null if any argument is nullish.
pub(super) fn concat_arrays(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let mut out = Vec::new();
    for v in c.all()? {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(Bson::Array(a)) => out.extend(a),
            Some(other) => {
                return Err(CommandError::from_code(
                    ErrorCode::ConcatArraysNonArray,
                    format!(
                        "$concatArrays only supports arrays, not {}",
                        type_name(&other)
                    ),
                ))
            }
        }
    }
    Ok(Some(Bson::Array(out)))
}

/// `$setUnion`: the distinct elements of the arrays, in BSON order.
pub(super) fn set_union(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let mut out: Vec<Bson> = Vec::new();
    for v in c.all()? {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(Bson::Array(a)) => {
                for e in a {
                    if !out.iter().any(|x| cmp_bson(x, &e) == Ordering::Equal) {
                        out.push(e);
                    }
                }
            }
            Some(other) => {
                return Err(CommandError::from_code(
                    ErrorCode::SetUnionNonArray,
                    format!(
                        "All operands of $setUnion must be arrays. One argument is of type: {}",
                        type_name(&other)
                    ),
                ))
            }
        }
    }
    out.sort_by(cmp_bson);
    Ok(Some(Bson::Array(out)))
}

/// `$slice`: `[array, n]` (first or last `n`) or `[array, position, n]`.
pub(super) fn slice(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    if c.args.len() != 2 && c.args.len() != 3 {
        // SRV ExpressionSlice: 28667
        return Err(CommandError::from_code(
            ErrorCode::SliceWrongArgCount,
            format!("Expression $slice takes at least 2 arguments, and at most 3, but {} were passed in.", c.args.len()),
        ));
    }
    let vals = c.all()?;
    if vals.iter().any(is_nullish) {
        return Ok(Some(Bson::Null));
    }
    let Some(Bson::Array(arr)) = &vals[0] else {
        return Err(CommandError::from_code(
            ErrorCode::SliceInvalidArgument,
            format!(
                "First argument to $slice must be an array, but is of type: {}",
                tname(&vals[0])
            ),
        ));
    };
    let (start, count) = slice_bounds(arr.len() as i64, &vals)?;
    Ok(Some(Bson::Array(
        arr[start as usize..(start + count) as usize].to_vec(),
    )))
}

/// The `(start, count)` that `$slice`'s numeric arguments select from `n` elements.
fn slice_bounds(n: i64, vals: &[Option<Bson>]) -> CmdResult<(i64, i64)> {
    let num = |v: &Option<Bson>| v.as_ref().and_then(as_f64).map(|f| f as i64);
    if vals.len() == 2 {
        let k = num(&vals[1]).unwrap_or(0);
        return Ok(if k >= 0 {
            (0, k.min(n))
        } else {
            (n.saturating_add(k).max(0), k.saturating_neg().min(n))
        });
    }
    let p = num(&vals[1]).unwrap_or(0);
    let c = num(&vals[2]).unwrap_or(0);
    if c <= 0 {
        return Err(CommandError::from_code(
            ErrorCode::SliceThirdArgNotPositive,
            format!("Third argument to $slice must be positive: {c}"),
        ));
    }
    let start = if p >= 0 {
        p.min(n)
    } else {
        n.saturating_add(p).max(0)
    };
    Ok((start, c.min(n - start)))
}

/// `$reverseArray`: the array's elements in reverse order.
pub(super) fn reverse_array(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(match c.arg(0)? {
        v if is_nullish(&v) => Bson::Null,
        Some(Bson::Array(mut a)) => {
            a.reverse();
            Bson::Array(a)
        }
        other => {
            return Err(CommandError::from_code(
                ErrorCode::ReverseArrayNotArray,
                format!(
                    "The argument to $reverseArray must be an array, but was of type: {}",
                    tname(&other)
                ),
            ))
        }
    }))
}
