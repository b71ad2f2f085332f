//! Comparison and logic operators: `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$cmp`,
//! `$and`, `$or`, `$not`, `$ifNull`.

use std::cmp::Ordering;

use bson::Bson;

use super::{cmp_values, is_nullish, truthy, OpCall};
use crate::error::CmdResult;

/// `$eq` .. `$lte` (a boolean) and `$cmp` (-1, 0 or 1), in agg value order.
pub(super) fn compare(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let (a, b) = (c.arg(0)?, c.arg(1)?);
    let o = cmp_values(a.as_ref(), b.as_ref());
    let r = match c.name {
        "$eq" => o == Ordering::Equal,
        "$ne" => o != Ordering::Equal,
        "$gt" => o == Ordering::Greater,
        "$gte" => o != Ordering::Less,
        "$lt" => o == Ordering::Less,
        "$lte" => o != Ordering::Greater,
        _ => {
            return Ok(Some(Bson::Int32(match o {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            })))
        }
    };
    Ok(Some(Bson::Boolean(r)))
}

/// `$and`: false at the first falsy argument (the rest are not evaluated).
pub(super) fn and(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    for a in c.args {
        if !truthy(a.eval(c.vars)?.as_ref()) {
            return Ok(Some(Bson::Boolean(false)));
        }
    }
    Ok(Some(Bson::Boolean(true)))
}

/// `$or`: true at the first truthy argument (the rest are not evaluated).
pub(super) fn or(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    for a in c.args {
        if truthy(a.eval(c.vars)?.as_ref()) {
            return Ok(Some(Bson::Boolean(true)));
        }
    }
    Ok(Some(Bson::Boolean(false)))
}

/// `$not`: the negated truthiness of its argument.
pub(super) fn not(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(Bson::Boolean(!truthy(c.arg(0)?.as_ref()))))
}

/// `$ifNull`: the first argument that is neither null nor missing, else the last one.
pub(super) fn if_null(c: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    let n = c.args.len();
    for a in &c.args[..n - 1] {
        let v = a.eval(c.vars)?;
        if !is_nullish(&v) {
            return Ok(v);
        }
    }
    c.args[n - 1].eval(c.vars)
}
