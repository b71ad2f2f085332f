//! Aggregation expressions (`$a.b`, `$$ROOT`, `{$add: [...]}`, `{a: <expr>}`), evaluated
//! against one document (SRV `src/mongo/db/pipeline/expression.cpp`).
//!
//! Missing values are `None` and stay distinct from `null` (an agg `$eq` of a missing field
//! and `null` is false; missing sorts before null, SRV `Value::compare`).

use std::cmp::Ordering;

use bson::{Bson, DateTime, Document};

use super::compare::{as_f64, canonical_type, cmp_bson};
use super::fmt::type_name;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Bson),
    /// `$a.b` = `$$CURRENT.a.b`.
    Field(Vec<String>),
    /// `$$NAME.a.b`.
    Var(String, Vec<String>),
    /// `{a: <expr>, b: <expr>}`.
    Object(Vec<(String, Expr)>),
    /// `[<expr>, ...]`.
    Array(Vec<Expr>),
    /// `{$op: args}`.
    Op(String, Vec<Expr>),
    /// `{$cond: ...}` kept separately for laziness.
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `{$let: {vars: {...}, in: ...}}`.
    Let(Vec<(String, Expr)>, Box<Expr>),
    /// `{$map: {input, as, in}}`.
    Map(Box<Expr>, String, Box<Expr>),
    /// `{$filter: {input, as, cond, limit}}`.
    Filter(Box<Expr>, String, Box<Expr>, Option<Box<Expr>>),
}

/// Variables visible to an expression.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    /// `$$ROOT` (and `$$CURRENT`).
    pub root: &'a Document,
    /// `$$NOW` (and `$$CLUSTER_TIME` is not modelled).
    pub now: DateTime,
    /// User variables (`$let`, `$map`'s `as`, `$filter`'s `as`), innermost last.
    pub user: Vec<(String, Bson)>,
    /// `$$CLUSTER_TIME` (unset outside a replica set: using it is then an error).
    pub cluster_time: Option<bson::Timestamp>,
}

impl<'a> Vars<'a> {
    /// Variables for evaluating against `root`.
    pub fn new(root: &'a Document) -> Self {
        Vars {
            root,
            now: DateTime::now(),
            user: Vec::new(),
            cluster_time: None,
        }
    }
}

/// Expression operators this implementation understands (others answer 168).
const KNOWN_OPS: &[&str] = &[
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$cmp",
    "$and",
    "$or",
    "$not",
    "$ifNull",
    "$concat",
    "$add",
    "$subtract",
    "$multiply",
    "$divide",
    "$mod",
    "$toString",
    "$in",
    "$size",
    "$mergeObjects",
    "$arrayElemAt",
    "$type",
    "$isArray",
    "$toLower",
    "$toUpper",
    "$abs",
    "$max",
    "$min",
    "$sum",
    "$avg",
    "$first",
    "$last",
    "$concatArrays",
    "$strLenBytes",
    "$toInt",
    "$toLong",
    "$toDouble",
    "$toBool",
    "$objectToArray",
    "$setUnion",
    "$slice",
    "$reverseArray",
    "$getField",
    "$setField",
    "$unsetField",
];

mod arith;
mod array;
mod convert;
mod logic;
mod object;
mod parse;
mod string;

impl Expr {
    /// Evaluates against `vars`; `None` is "missing".
    pub fn eval(&self, vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
        match self {
            Expr::Literal(v) => Ok(Some(v.clone())),
            Expr::Field(parts) => Ok(walk_doc(vars.root, parts)),
            Expr::Var(name, parts) => eval_var(name, parts, vars),
            Expr::Object(fields) => eval_object(fields, vars),
            Expr::Array(items) => eval_array(items, vars),
            Expr::Cond(i, t, e) => {
                if truthy(i.eval(vars)?.as_ref()) {
                    t.eval(vars)
                } else {
                    e.eval(vars)
                }
            }
            Expr::Op(name, args) => eval_op(name, args, vars),
            Expr::Let(bound, body) => eval_let(bound, body, vars),
            Expr::Map(input, name, body) | Expr::Filter(input, name, body, _) => {
                self.eval_map_or_filter(input, name, body, vars)
            }
        }
    }

    /// `$map` / `$filter` (`self` tells which): binds `name` to each element of `input`.
    fn eval_map_or_filter(
        &self,
        input: &Expr,
        name: &str,
        body: &Expr,
        vars: &Vars<'_>,
    ) -> CmdResult<Option<Bson>> {
        let arr = match input.eval(vars)? {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(Bson::Array(a)) => a,
            Some(other) => {
                let (code, op) = if matches!(self, Expr::Map(..)) {
                    (ErrorCode::MapInputNotArray, "$map")
                } else {
                    (ErrorCode::FilterInputNotArray, "$filter")
                };
                return Err(CommandError::from_code(
                    code,
                    format!("input to {op} must be an array not {}", type_name(&other)),
                ));
            }
        };
        let limit = match self {
            Expr::Filter(_, _, _, Some(l)) => match l.eval(vars)? {
                Some(v) => as_f64(&v).map(|f| f as i64),
                None => None,
            },
            _ => None,
        };
        let mut out = Vec::new();
        let mut inner = vars.clone();
        inner.user.push((name.to_string(), Bson::Null));
        for item in arr {
            if let Some(last) = inner.user.last_mut() {
                last.1 = item.clone();
            }
            if matches!(self, Expr::Map(..)) {
                out.push(body.eval(&inner)?.unwrap_or(Bson::Null));
            } else {
                if limit.is_some_and(|l| out.len() as i64 >= l) {
                    break;
                }
                if truthy(body.eval(&inner)?.as_ref()) {
                    out.push(item);
                }
            }
        }
        Ok(Some(Bson::Array(out)))
    }

    /// Whether this is a constant.
    pub fn is_literal(&self) -> bool {
        matches!(self, Expr::Literal(_))
    }
}

/// `$$NAME.a.b`: system variables, then user variables (innermost first).
fn eval_var(name: &str, parts: &[String], vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
    let base = match name {
        "ROOT" => return Ok(walk_doc(vars.root, parts)),
        "REMOVE" => return Ok(None),
        "NOW" => Bson::DateTime(vars.now),
        "CLUSTER_TIME" => match vars.cluster_time {
            Some(ts) => Bson::Timestamp(ts),
            None => {
                // SRV variables.cpp: 10071 on a standalone
                return Err(CommandError::from_code(
                    ErrorCode::ClusterTimeUnavailable,
                    "$$CLUSTER_TIME is unavailable in this context",
                ));
            }
        },
        _ => match vars.user.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v.clone(),
            None => {
                // SRV variables.cpp: 17276
                return Err(CommandError::from_code(
                    ErrorCode::UndefinedVariable,
                    format!("Use of undefined variable: {name}"),
                ));
            }
        },
    };
    Ok(walk(&base, parts))
}

/// `{a: <expr>, ..}`: fields whose value is missing are left out.
fn eval_object(fields: &[(String, Expr)], vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
    let mut out = Document::new();
    for (k, e) in fields {
        if let Some(v) = e.eval(vars)? {
            out.insert(k.clone(), v);
        }
    }
    Ok(Some(Bson::Document(out)))
}

/// `[<expr>, ..]`: missing elements become null (SRV `ExpressionArray`).
fn eval_array(items: &[Expr], vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
    let mut out = Vec::with_capacity(items.len());
    for e in items {
        out.push(e.eval(vars)?.unwrap_or(Bson::Null));
    }
    Ok(Some(Bson::Array(out)))
}

/// `$let`: binds each variable (evaluated in the outer scope), then evaluates `body`.
fn eval_let(bound: &[(String, Expr)], body: &Expr, vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
    let mut inner = vars.clone();
    for (k, ex) in bound {
        let v = ex.eval(vars)?.unwrap_or(Bson::Null);
        inner.user.push((k.clone(), v));
    }
    body.eval(&inner)
}

/// [`walk`] starting at a document, without copying it.
fn walk_doc(root: &Document, parts: &[String]) -> Option<Bson> {
    match parts.split_first() {
        None => Some(Bson::Document(root.clone())),
        Some((first, rest)) => root.get(first).and_then(|v| walk(v, rest)),
    }
}

/// Field path walk with implicit array traversal (SRV `ExpressionFieldPath::evaluatePath`).
pub fn walk(base: &Bson, parts: &[String]) -> Option<Bson> {
    if parts.is_empty() {
        return Some(base.clone());
    }
    match base {
        Bson::Document(d) => d.get(&parts[0]).and_then(|v| walk(v, &parts[1..])),
        Bson::Array(a) => {
            let out: Vec<Bson> = a
                .iter()
                .filter_map(|e| match e {
                    Bson::Array(_) | Bson::Document(_) => walk(e, parts),
                    _ => None,
                })
                .collect();
            Some(Bson::Array(out))
        }
        _ => None,
    }
}

/// Aggregation truthiness (SRV `Value::coerceToBool`).
pub fn truthy(v: Option<&Bson>) -> bool {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) | Some(Bson::Boolean(false)) => false,
        Some(Bson::Int32(0)) | Some(Bson::Int64(0)) => false,
        Some(Bson::Double(f)) => *f != 0.0,
        Some(Bson::Decimal128(_)) => as_f64(v.unwrap_or(&Bson::Null)) != Some(0.0),
        Some(_) => true,
    }
}

/// Aggregation value order: missing < everything (SRV `Value::compare`: EOO ranks below null).
pub fn cmp_values(a: Option<&Bson>, b: Option<&Bson>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(Bson::MinKey)) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (Some(Bson::MinKey), None) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        // Undefined sorts with missing, below null, in agg.
        (Some(Bson::Undefined), Some(Bson::Null)) => Ordering::Less,
        (Some(Bson::Null), Some(Bson::Undefined)) => Ordering::Greater,
        (Some(x), Some(y)) => cmp_bson(x, y),
    }
}

fn is_nullish(v: &Option<Bson>) -> bool {
    matches!(v, None | Some(Bson::Null) | Some(Bson::Undefined))
}

/// Numeric addition with the server's type widening (int -> long -> double).
pub fn add_nums(a: &Bson, b: &Bson) -> Option<Bson> {
    Some(match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => match x.checked_add(*y) {
            Some(r) => Bson::Int32(r),
            None => Bson::Int64(i64::from(*x) + i64::from(*y)),
        },
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let (x, y) = (as_i64(a)?, as_i64(b)?);
            match x.checked_add(y) {
                Some(r) => Bson::Int64(r),
                None => Bson::Double(x as f64 + y as f64),
            }
        }
        (Bson::Decimal128(_), _) | (_, Bson::Decimal128(_)) => {
            let r = as_f64(a)? + as_f64(b)?;
            Bson::Decimal128(format!("{r}").parse().ok()?)
        }
        _ => Bson::Double(as_f64(a)? + as_f64(b)?),
    })
}

/// Numeric multiplication with the same widening.
pub fn mul_nums(a: &Bson, b: &Bson) -> Option<Bson> {
    Some(match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => match x.checked_mul(*y) {
            Some(r) => Bson::Int32(r),
            None => Bson::Int64(i64::from(*x) * i64::from(*y)),
        },
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let (x, y) = (as_i64(a)?, as_i64(b)?);
            match x.checked_mul(y) {
                Some(r) => Bson::Int64(r),
                None => Bson::Double(x as f64 * y as f64),
            }
        }
        (Bson::Decimal128(_), _) | (_, Bson::Decimal128(_)) => {
            let r = as_f64(a)? * as_f64(b)?;
            Bson::Decimal128(format!("{r}").parse().ok()?)
        }
        _ => Bson::Double(as_f64(a)? * as_f64(b)?),
    })
}

fn as_i64(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        _ => None,
    }
}

fn is_num(v: &Bson) -> bool {
    matches!(
        v,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_)
    )
}

fn tname(v: &Option<Bson>) -> &'static str {
    match v {
        None => "missing",
        Some(b) => type_name(b),
    }
}

/// One operator call: the operator, its unevaluated arguments and the variables in scope.
struct OpCall<'e, 'v> {
    /// The operator, e.g. `$add`.
    name: &'e str,
    /// Its arguments (fixed arities are checked when parsing).
    args: &'e [Expr],
    /// The variables the arguments see.
    vars: &'e Vars<'v>,
}

impl OpCall<'_, '_> {
    /// Evaluates argument `i`.
    fn arg(&self, i: usize) -> CmdResult<Option<Bson>> {
        self.args[i].eval(self.vars)
    }

    /// Evaluates every argument, in order.
    fn all(&self) -> CmdResult<Vec<Option<Bson>>> {
        self.args.iter().map(|a| a.eval(self.vars)).collect()
    }
}

/// An operator's evaluation.
type OpFn = fn(&OpCall<'_, '_>) -> CmdResult<Option<Bson>>;

/// Evaluates `{name: args}`: the table from each operator to its function, by family.
fn eval_op(name: &str, args: &[Expr], vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
    let op: OpFn = match name {
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => logic::compare,
        "$and" => logic::and,
        "$or" => logic::or,
        "$not" => logic::not,
        "$ifNull" => logic::if_null,
        "$rand" => random,
        "$add" => arith::add,
        "$subtract" => arith::subtract,
        "$multiply" => arith::multiply,
        "$divide" | "$mod" => arith::divide_or_mod,
        "$abs" => arith::abs,
        "$max" | "$min" | "$sum" | "$avg" => arith::accumulator,
        "$concat" => string::concat,
        "$toLower" | "$toUpper" => string::change_case,
        "$strLenBytes" => string::str_len_bytes,
        "$type" => convert::type_of,
        "$isArray" => convert::is_array,
        "$toString" => convert::to_string_op,
        "$toInt" | "$toLong" | "$toDouble" | "$toBool" => convert::to_scalar,
        "$in" => array::in_array,
        "$size" => array::size,
        "$arrayElemAt" => array::array_elem_at,
        "$first" | "$last" => array::first_or_last,
        "$concatArrays" => array::concat_arrays,
        "$setUnion" => array::set_union,
        "$slice" => array::slice,
        "$reverseArray" => array::reverse_array,
        "$mergeObjects" => object::merge_objects,
        "$getField" => object::get_field,
        "$setField" | "$unsetField" => object::set_or_unset_field,
        "$objectToArray" => object::object_to_array,
        _ => {
            return Err(CommandError::from_code(
                ErrorCode::InvalidPipelineOperator,
                format!("Unrecognized expression '{name}'"),
            ))
        }
    };
    op(&OpCall { name, args, vars })
}

/// `$rand`: a double uniformly drawn from [0, 1) (SRV `ExpressionRandom::evaluate`).
fn random(_: &OpCall<'_, '_>) -> CmdResult<Option<Bson>> {
    Ok(Some(Bson::Double(rand::random::<f64>())))
}

/// `$sum`/`$avg`/`$min`/`$max` over values (non-numbers ignored by `$sum`/`$avg`;
/// null/missing ignored by `$min`/`$max`; SRV `accumulator_*.cpp`).
pub fn accumulate(name: &str, items: &[Bson]) -> Bson {
    match name {
        "$sum" => {
            let mut acc = Bson::Int32(0);
            for v in items.iter().filter(|v| is_num(v)) {
                acc = add_nums(&acc, v).unwrap_or(Bson::Null);
            }
            acc
        }
        "$avg" => {
            let nums: Vec<f64> = items
                .iter()
                .filter(|v| is_num(v))
                .filter_map(as_f64)
                .collect();
            if nums.is_empty() {
                Bson::Null
            } else {
                Bson::Double(nums.iter().sum::<f64>() / nums.len() as f64)
            }
        }
        _ => {
            let mut best: Option<&Bson> = None;
            for v in items
                .iter()
                .filter(|v| !matches!(v, Bson::Null | Bson::Undefined))
            {
                best = match best {
                    None => Some(v),
                    Some(b) => {
                        let o = cmp_bson(v, b);
                        if (name == "$max" && o == Ordering::Greater)
                            || (name == "$min" && o == Ordering::Less)
                        {
                            Some(v)
                        } else {
                            Some(b)
                        }
                    }
                };
            }
            best.cloned().unwrap_or(Bson::Null)
        }
    }
}

/// Canonical-type aware equality for agg values.
pub fn values_equal(a: Option<&Bson>, b: Option<&Bson>) -> bool {
    cmp_values(a, b) == Ordering::Equal && a.map(canonical_type) == b.map(canonical_type)
}
#[cfg(test)]
mod tests;
