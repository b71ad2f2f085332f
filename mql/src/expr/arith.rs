//! Arithmetic operators: `$add`, `$subtract`, `$multiply`, `$divide`, `$mod`, `$abs`, and
//! the accumulators used as expressions: `$sum`, `$avg`, `$min`, `$max`.

use bson::{Bson, DateTime};

use super::{accumulate, add_nums, as_i64, is_nullish, is_num, mul_nums, tname, OpCall};
use crate::compare::as_f64;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt::type_name;

/// `$add`: numbers with type widening, plus at most one date.
pub(super) fn add(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let mut acc = Bson::Int32(0);
    let mut date: Option<i64> = None;
    for v in c.all()? {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(Bson::DateTime(d)) => {
                if date.is_some() {
                    // SRV ExpressionAdd: 16612
                    return Err(CommandError::from_code(
                        ErrorCode::AddMultipleDates,
                        "only one date allowed in an $add expression",
                    ));
                }
                date = Some(d.timestamp_millis());
            }
            Some(x) if is_num(&x) => acc = add_nums(&acc, &x).unwrap_or(Bson::Null),
            Some(other) => {
                // SRV ExpressionAdd: 16554
                return Err(CommandError::from_code(
                    ErrorCode::AddNonNumeric,
                    format!(
                        "$add only supports numeric or date types, not {}",
                        type_name(&other)
                    ),
                ));
            }
        }
    }
    Ok(Some(match date {
        Some(ms) => {
            let add = as_f64(&acc).unwrap_or(0.0).round() as i64;
            Bson::DateTime(DateTime::from_millis(ms.saturating_add(add)))
        }
        None => acc,
    }))
}

/// `$subtract`: numbers, a number from a date, or a date from a date (milliseconds).
pub(super) fn subtract(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let (a, b) = (c.arg(0)?, c.arg(1)?);
    Ok(Some(match (&a, &b) {
        _ if is_nullish(&a) || is_nullish(&b) => Bson::Null,
        (Some(Bson::DateTime(x)), Some(Bson::DateTime(y))) => {
            Bson::Int64(x.timestamp_millis().saturating_sub(y.timestamp_millis()))
        }
        (Some(Bson::DateTime(x)), Some(y)) if is_num(y) => Bson::DateTime(DateTime::from_millis(
            x.timestamp_millis()
                .saturating_sub(as_f64(y).unwrap_or(0.0) as i64),
        )),
        (Some(x), Some(y)) if is_num(x) && is_num(y) => {
            let neg = mul_nums(y, &Bson::Int32(-1)).unwrap_or(Bson::Null);
            add_nums(x, &neg).unwrap_or(Bson::Null)
        }
        _ => {
            // SRV ExpressionSubtract: 16556
            return Err(CommandError::from_code(
                ErrorCode::SubtractBadTypes,
                format!("can't $subtract {} from {}", tname(&b), tname(&a)),
            ));
        }
    }))
}

/// `$multiply`: numbers with type widening.
pub(super) fn multiply(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let mut acc = Bson::Int32(1);
    for v in c.all()? {
        match v {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(x) if is_num(&x) => acc = mul_nums(&acc, &x).unwrap_or(Bson::Null),
            Some(other) => {
                return Err(CommandError::from_code(
                    ErrorCode::MultiplyNonNumeric,
                    format!(
                        "$multiply only supports numeric types, not {}",
                        type_name(&other)
                    ),
                ))
            }
        }
    }
    Ok(Some(acc))
}

/// `$divide` (a double) and `$mod` (integral when both operands are integers).
pub(super) fn divide_or_mod(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let name = c.name;
    let (a, b) = (c.arg(0)?, c.arg(1)?);
    if is_nullish(&a) || is_nullish(&b) {
        return Ok(Some(Bson::Null));
    }
    let (Some(x), Some(y)) = (a.as_ref().and_then(as_f64), b.as_ref().and_then(as_f64)) else {
        let code = if name == "$divide" {
            ErrorCode::DivideNonNumeric
        } else {
            ErrorCode::ModNonNumeric
        };
        return Err(CommandError::from_code(
            code,
            format!(
                "{name} only supports numeric types, not {} and {}",
                tname(&a),
                tname(&b)
            ),
        ));
    };
    if y == 0.0 {
        return Err(if name == "$divide" {
            CommandError::from_code(ErrorCode::BadValue, "can't $divide by zero")
        } else {
            CommandError::from_code(ErrorCode::ModByZero, "can't $mod by zero")
        });
    }
    if name == "$divide" {
        return Ok(Some(Bson::Double(x / y)));
    }
    Ok(Some(
        match (a.as_ref().and_then(as_i64), b.as_ref().and_then(as_i64)) {
            (Some(p), Some(q)) => {
                let r = p.wrapping_rem(q);
                if matches!((&a, &b), (Some(Bson::Int32(_)), Some(Bson::Int32(_)))) {
                    Bson::Int32(r as i32)
                } else {
                    Bson::Int64(r)
                }
            }
            _ => Bson::Double(x % y),
        },
    ))
}

/// `$abs`: the absolute value (an int's overflow widens to long).
pub(super) fn abs(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(match c.arg(0)? {
        v if is_nullish(&v) => Bson::Null,
        Some(Bson::Int32(i)) => match i.checked_abs() {
            Some(r) => Bson::Int32(r),
            None => Bson::Int64(-i64::from(i)),
        },
        Some(Bson::Int64(i)) => Bson::Int64(i.saturating_abs()),
        Some(Bson::Double(f)) => Bson::Double(f.abs()),
        other => {
            return Err(CommandError::from_code(
                ErrorCode::AbsNonNumeric,
                format!("$abs only supports numeric types, not {}", tname(&other)),
            ))
        }
    }))
}

/// `$sum`, `$avg`, `$min`, `$max`: over the elements of a single array argument, else over
/// the (present) arguments.
pub(super) fn accumulator(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let vals = c.all()?;
    let items: Vec<Bson> = if vals.len() == 1 {
        match &vals[0] {
            Some(Bson::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
            None => vec![],
        }
    } else {
        vals.into_iter().flatten().collect()
    };
    Ok(Some(accumulate(c.name, &items)))
}
