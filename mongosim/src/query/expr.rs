//! Aggregation expressions (`$a.b`, `$$ROOT`, `{$add: [...]}`, `{a: <expr>}`), evaluated
//! against one document (SRV `src/mongo/db/pipeline/expression.cpp`).
//!
//! Missing values are `None` and stay distinct from `null` (an agg `$eq` of a missing field
//! and `null` is false; missing sorts before null, SRV `Value::compare`).

use std::cmp::Ordering;

use bson::{Bson, DateTime, Document};

use super::compare::{as_f64, canonical_type, cmp_bson};
use super::fmt::type_name;
use crate::error::{CmdResult, CommandError};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
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
pub(crate) struct Vars<'a> {
    /// `$$ROOT` (and `$$CURRENT`).
    pub(crate) root: &'a Document,
    /// `$$NOW` (and `$$CLUSTER_TIME` is not modelled).
    pub(crate) now: DateTime,
    /// User variables (`$let`, `$map`'s `as`, `$filter`'s `as`), innermost last.
    pub(crate) user: Vec<(String, Bson)>,
    /// `$$CLUSTER_TIME` (unset outside a replica set: using it is then an error).
    pub(crate) cluster_time: Option<bson::Timestamp>,
}

impl<'a> Vars<'a> {
    /// Variables for evaluating against `root`.
    pub(crate) fn new(root: &'a Document) -> Self {
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

fn parse_field_path(s: &str) -> CmdResult<Expr> {
    if let Some(rest) = s.strip_prefix("$$") {
        let mut parts = rest.split('.').map(str::to_string);
        let name = parts.next().unwrap_or_default();
        if name.is_empty() {
            return Err(CommandError::from_code(
                16869,
                "empty variable name".to_string(),
            ));
        }
        let parts: Vec<String> = parts.collect();
        if name == "CURRENT" {
            return Ok(Expr::Field(parts));
        }
        return Ok(Expr::Var(name, parts));
    }
    let rest = &s[1..];
    if rest.is_empty() {
        // SRV field_path.cpp: "FieldPath cannot be constructed with empty string"
        return Err(CommandError::from_code(
            40352,
            "FieldPath cannot be constructed with empty string",
        ));
    }
    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(CommandError::from_code(
            15998,
            "FieldPath field names may not be empty strings.",
        ));
    }
    Ok(Expr::Field(parts))
}

impl Expr {
    /// Parses an expression operand (SRV `Expression::parseOperand`).
    pub(crate) fn parse(v: &Bson) -> CmdResult<Expr> {
        match v {
            Bson::String(s) if s.starts_with('$') => parse_field_path(s),
            Bson::Document(d) => Self::parse_object(d),
            Bson::Array(a) => Ok(Expr::Array(
                a.iter().map(Expr::parse).collect::<CmdResult<_>>()?,
            )),
            other => Ok(Expr::Literal(other.clone())),
        }
    }

    /// Parses a document: an operator expression `{$op: ...}` or an object expression.
    pub(crate) fn parse_object(d: &Document) -> CmdResult<Expr> {
        let Some((first, _)) = d.iter().next() else {
            return Ok(Expr::Object(Vec::new()));
        };
        if first.starts_with('$') {
            if d.len() != 1 {
                // SRV expression.cpp parseExpression: 15983
                return Err(CommandError::from_code(
                    15983,
                    format!(
                        "An object representing an expression must have exactly one field: {}",
                        super::fmt::doc(d)
                    ),
                ));
            }
            let (name, arg) = d
                .iter()
                .next()
                .map(|(k, v)| (k.as_str(), v))
                .unwrap_or(("", &Bson::Null));
            return Self::parse_op(name, arg);
        }
        let mut fields = Vec::new();
        for (k, v) in d {
            if k.starts_with('$') {
                // SRV field_path.cpp uassertValidFieldName
                return Err(CommandError::from_code(
                    16410,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
                ));
            }
            fields.push((k.clone(), Expr::parse(v)?));
        }
        Ok(Expr::Object(fields))
    }

    fn parse_op(name: &str, arg: &Bson) -> CmdResult<Expr> {
        if name == "$literal" || name == "$const" {
            return Ok(Expr::Literal(arg.clone()));
        }
        if matches!(name, "$let" | "$map" | "$filter") {
            return Self::parse_scoped(name, arg);
        }
        if name == "$rand" {
            // SRV expression.cpp ExpressionRandom::parse: only `{}` is accepted
            // ("$rand does not currently accept arguments", 3040500).
            return match arg {
                Bson::Document(d) if d.is_empty() => Ok(Expr::Op(name.to_string(), Vec::new())),
                _ => Err(CommandError::from_code(
                    3040500,
                    "$rand does not currently accept arguments",
                )),
            };
        }
        if name == "$cond" {
            let (i, t, e) = match arg {
                Bson::Array(a) if a.len() == 3 => (&a[0], &a[1], &a[2]),
                Bson::Array(a) => {
                    return Err(arity("$cond", 3, a.len()));
                }
                Bson::Document(d) => {
                    for k in d.keys() {
                        if !matches!(k.as_str(), "if" | "then" | "else") {
                            return Err(CommandError::from_code(
                                17083,
                                format!("Unrecognized parameter to $cond: {k}"),
                            ));
                        }
                    }
                    let get = |k: &str, code: i32| {
                        d.get(k).ok_or_else(|| {
                            CommandError::from_code(
                                code,
                                format!("Missing '{k}' parameter to $cond"),
                            )
                        })
                    };
                    (get("if", 17080)?, get("then", 17081)?, get("else", 17082)?)
                }
                _ => return Err(arity("$cond", 3, 1)),
            };
            return Ok(Expr::Cond(
                Box::new(Expr::parse(i)?),
                Box::new(Expr::parse(t)?),
                Box::new(Expr::parse(e)?),
            ));
        }
        if matches!(name, "$getField" | "$setField" | "$unsetField") {
            // named arguments: field, input (default $$CURRENT), value
            let (field, input, value) = match arg {
                Bson::Document(d) if !d.keys().next().is_some_and(|k| k.starts_with('$')) => (
                    d.get("field").cloned().ok_or_else(|| {
                        CommandError::from_code(
                            3041702,
                            format!("{name} requires 'field' to be specified"),
                        )
                    })?,
                    d.get("input")
                        .cloned()
                        .unwrap_or(Bson::String("$$CURRENT".into())),
                    d.get("value").cloned(),
                ),
                other if name == "$getField" => {
                    (other.clone(), Bson::String("$$CURRENT".into()), None)
                }
                _ => {
                    return Err(CommandError::from_code(
                        4161100,
                        format!("{name} only supports an object as its argument"),
                    ))
                }
            };
            // 'field' must be a constant string: a plain string or {$literal: <string>}
            // (SRV expression.cpp ExpressionGetField/SetField::parse).
            let field = match field {
                Bson::Document(d) if d.len() == 1 && d.contains_key("$literal") => {
                    d.get("$literal").cloned().unwrap_or(Bson::Null)
                }
                Bson::String(s) if s.starts_with('$') => {
                    return Err(CommandError::from_code(
                        5654602,
                        format!("{name} requires 'field' to evaluate to a constant, but got a non-constant argument"),
                    ));
                }
                other => other,
            };
            let Bson::String(_) = field else {
                return Err(CommandError::from_code(
                    3041704,
                    format!("{name} requires 'field' to evaluate to type String"),
                ));
            };
            let mut args = vec![Expr::Literal(field), Expr::parse(&input)?];
            if name == "$setField" {
                let Some(v) = value else {
                    return Err(CommandError::from_code(
                        4161105,
                        "$setField requires 'value' to be specified",
                    ));
                };
                args.push(Expr::parse(&v)?);
            }
            return Ok(Expr::Op(name.to_string(), args));
        }
        if !KNOWN_OPS.contains(&name) {
            // SRV expression.cpp Expression::parseExpression: 168 InvalidPipelineOperator
            return Err(CommandError::from_code(
                168,
                format!("Unrecognized expression '{name}'"),
            ));
        }
        let args: Vec<Expr> = match arg {
            Bson::Array(a) => a.iter().map(Expr::parse).collect::<CmdResult<_>>()?,
            other => vec![Expr::parse(other)?],
        };
        let fixed = match name {
            "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" | "$in" | "$subtract"
            | "$divide" | "$mod" | "$arrayElemAt" => Some(2),
            "$not" | "$toString" | "$size" | "$type" | "$isArray" | "$toLower" | "$toUpper"
            | "$abs" | "$strLenBytes" | "$toInt" | "$toLong" | "$toDouble" | "$toBool"
            | "$objectToArray" | "$first" | "$last" | "$reverseArray" => Some(1),
            _ => None,
        };
        if let Some(n) = fixed {
            if args.len() != n {
                return Err(arity(name, n, args.len()));
            }
        }
        if name == "$ifNull" && args.len() < 2 {
            return Err(CommandError::from_code(
                1257300,
                "$ifNull needs at least two arguments, had: ".to_string() + &args.len().to_string(),
            ));
        }
        Ok(Expr::Op(name.to_string(), args))
    }

    /// `$let`, `$map`, `$filter`: named-argument forms that bind variables
    /// (SRV expression.cpp `ExpressionLet/Map/Filter::parse`).
    fn parse_scoped(name: &str, arg: &Bson) -> CmdResult<Expr> {
        let Bson::Document(d) = arg else {
            let code = match name {
                "$let" => 16874,
                "$map" => 16878,
                _ => 28646,
            };
            return Err(CommandError::from_code(
                code,
                format!("{name} only supports an object as its argument"),
            ));
        };
        let allowed: &[&str] = match name {
            "$let" => &["vars", "in"],
            "$map" => &["input", "as", "in"],
            _ => &["input", "as", "cond", "limit"],
        };
        for k in d.keys() {
            if !allowed.contains(&k.as_str()) {
                let code = match name {
                    "$let" => 16875,
                    "$map" => 16879,
                    _ => 28647,
                };
                return Err(CommandError::from_code(
                    code,
                    format!("Unrecognized parameter to {name}: {k}"),
                ));
            }
        }
        let req = |k: &str, code: i32| -> CmdResult<Expr> {
            match d.get(k) {
                Some(v) => Expr::parse(v),
                None => Err(CommandError::from_code(
                    code,
                    format!("Missing '{k}' parameter to {name}"),
                )),
            }
        };
        let var_name = |code: i32| -> CmdResult<String> {
            match d.get("as") {
                None => Ok("this".to_string()),
                Some(Bson::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(_) => Err(CommandError::from_code(
                    code,
                    format!("'as' must be a valid variable name in {name}"),
                )),
            }
        };
        Ok(match name {
            "$let" => {
                let Some(Bson::Document(vars)) = d.get("vars") else {
                    return Err(CommandError::from_code(
                        16876,
                        "Missing 'vars' parameter to $let",
                    ));
                };
                let mut bound = Vec::new();
                for (k, v) in vars {
                    bound.push((k.clone(), Expr::parse(v)?));
                }
                Expr::Let(bound, Box::new(req("in", 16877)?))
            }
            "$map" => Expr::Map(
                Box::new(req("input", 16880)?),
                var_name(16866)?,
                Box::new(req("in", 16882)?),
            ),
            _ => Expr::Filter(
                Box::new(req("input", 28648)?),
                var_name(28649)?,
                Box::new(req("cond", 28650)?),
                match d.get("limit") {
                    Some(v) => Some(Box::new(Expr::parse(v)?)),
                    None => None,
                },
            ),
        })
    }

    /// Evaluates against `vars`; `None` is "missing".
    pub(crate) fn eval(&self, vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
        match self {
            Expr::Literal(v) => Ok(Some(v.clone())),
            Expr::Field(parts) => Ok(walk_doc(vars.root, parts)),
            Expr::Var(name, parts) => {
                let base = match name.as_str() {
                    "ROOT" => return Ok(walk_doc(vars.root, parts)),
                    "REMOVE" => return Ok(None),
                    "NOW" => Bson::DateTime(vars.now),
                    "CLUSTER_TIME" => match vars.cluster_time {
                        Some(ts) => Bson::Timestamp(ts),
                        None => {
                            // SRV variables.cpp: 10071 on a standalone
                            return Err(CommandError::from_code(
                                10071,
                                "$$CLUSTER_TIME is unavailable in this context",
                            ));
                        }
                    },
                    _ => match vars.user.iter().rev().find(|(n, _)| n == name) {
                        Some((_, v)) => v.clone(),
                        None => {
                            // SRV variables.cpp: 17276
                            return Err(CommandError::from_code(
                                17276,
                                format!("Use of undefined variable: {name}"),
                            ));
                        }
                    },
                };
                Ok(walk(&base, parts))
            }
            Expr::Object(fields) => {
                let mut out = Document::new();
                for (k, e) in fields {
                    if let Some(v) = e.eval(vars)? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Bson::Document(out)))
            }
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for e in items {
                    // missing array elements become null (SRV ExpressionArray)
                    out.push(e.eval(vars)?.unwrap_or(Bson::Null));
                }
                Ok(Some(Bson::Array(out)))
            }
            Expr::Cond(i, t, e) => {
                if truthy(i.eval(vars)?.as_ref()) {
                    t.eval(vars)
                } else {
                    e.eval(vars)
                }
            }
            Expr::Op(name, args) => eval_op(name, args, vars),
            Expr::Let(bound, body) => {
                let mut inner = vars.clone();
                for (k, ex) in bound {
                    let v = ex.eval(vars)?.unwrap_or(Bson::Null);
                    inner.user.push((k.clone(), v));
                }
                body.eval(&inner)
            }
            Expr::Map(input, name, body) | Expr::Filter(input, name, body, _) => {
                let arr = match input.eval(vars)? {
                    None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::Array(a)) => a,
                    Some(other) => {
                        let (code, op) = if matches!(self, Expr::Map(..)) {
                            (16883, "$map")
                        } else {
                            (28651, "$filter")
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
                inner.user.push((name.clone(), Bson::Null));
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
        }
    }

    /// Whether this is a constant.
    pub(crate) fn is_literal(&self) -> bool {
        matches!(self, Expr::Literal(_))
    }
}

fn arity(name: &str, n: usize, got: usize) -> CommandError {
    // SRV expression.h ExpressionFixedArity::validateArguments: 16020
    CommandError::from_code(
        16020,
        format!("Expression {name} takes exactly {n} arguments. {got} were passed in."),
    )
}

/// [`walk`] starting at a document, without copying it.
fn walk_doc(root: &Document, parts: &[String]) -> Option<Bson> {
    match parts.split_first() {
        None => Some(Bson::Document(root.clone())),
        Some((first, rest)) => root.get(first).and_then(|v| walk(v, rest)),
    }
}

/// Field path walk with implicit array traversal (SRV `ExpressionFieldPath::evaluatePath`).
pub(crate) fn walk(base: &Bson, parts: &[String]) -> Option<Bson> {
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
pub(crate) fn truthy(v: Option<&Bson>) -> bool {
    match v {
        None | Some(Bson::Null) | Some(Bson::Undefined) | Some(Bson::Boolean(false)) => false,
        Some(Bson::Int32(0)) | Some(Bson::Int64(0)) => false,
        Some(Bson::Double(f)) => *f != 0.0,
        Some(Bson::Decimal128(_)) => as_f64(v.unwrap_or(&Bson::Null)) != Some(0.0),
        Some(_) => true,
    }
}

/// Aggregation value order: missing < everything (SRV `Value::compare`: EOO ranks below null).
pub(crate) fn cmp_values(a: Option<&Bson>, b: Option<&Bson>) -> Ordering {
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
pub(crate) fn add_nums(a: &Bson, b: &Bson) -> Option<Bson> {
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
pub(crate) fn mul_nums(a: &Bson, b: &Bson) -> Option<Bson> {
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

/// `$toString` conversion (SRV `ExpressionConvert`).
fn to_string(v: &Bson) -> CmdResult<Bson> {
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
                241,
                format!(
                    "Unsupported conversion from {} to string in $convert with no onError value",
                    type_name(other)
                ),
            ))
        }
    }))
}

fn format_double(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f}")
    }
}

fn eval_op(name: &str, args: &[Expr], vars: &Vars<'_>) -> CmdResult<Option<Bson>> {
    let ev = |i: usize| -> CmdResult<Option<Bson>> { args[i].eval(vars) };
    let all = || -> CmdResult<Vec<Option<Bson>>> { args.iter().map(|a| a.eval(vars)).collect() };
    let r = match name {
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => {
            let (a, b) = (ev(0)?, ev(1)?);
            let o = cmp_values(a.as_ref(), b.as_ref());
            let r = match name {
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
            Bson::Boolean(r)
        }
        "$and" => {
            for a in args {
                if !truthy(a.eval(vars)?.as_ref()) {
                    return Ok(Some(Bson::Boolean(false)));
                }
            }
            Bson::Boolean(true)
        }
        "$or" => {
            for a in args {
                if truthy(a.eval(vars)?.as_ref()) {
                    return Ok(Some(Bson::Boolean(true)));
                }
            }
            Bson::Boolean(false)
        }
        "$not" => Bson::Boolean(!truthy(ev(0)?.as_ref())),
        // SRV ExpressionRandom::evaluate: a double uniformly drawn from [0, 1).
        "$rand" => Bson::Double(rand::random::<f64>()),
        "$ifNull" => {
            let n = args.len();
            for a in &args[..n - 1] {
                let v = a.eval(vars)?;
                if !is_nullish(&v) {
                    return Ok(v);
                }
            }
            return args[n - 1].eval(vars);
        }
        "$concat" => {
            let mut s = String::new();
            for v in all()? {
                match v {
                    Some(Bson::String(x)) => s.push_str(&x),
                    None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(other) => {
                        // SRV ExpressionConcat: 16702
                        return Err(CommandError::from_code(
                            16702,
                            format!("$concat only supports strings, not {}", type_name(&other)),
                        ));
                    }
                }
            }
            Bson::String(s)
        }
        "$add" => {
            let mut acc = Bson::Int32(0);
            let mut date: Option<i64> = None;
            for v in all()? {
                match v {
                    None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::DateTime(d)) => {
                        if date.is_some() {
                            // SRV ExpressionAdd: 16612
                            return Err(CommandError::from_code(
                                16612,
                                "only one date allowed in an $add expression",
                            ));
                        }
                        date = Some(d.timestamp_millis());
                    }
                    Some(x) if is_num(&x) => acc = add_nums(&acc, &x).unwrap_or(Bson::Null),
                    Some(other) => {
                        // SRV ExpressionAdd: 16554
                        return Err(CommandError::from_code(
                            16554,
                            format!(
                                "$add only supports numeric or date types, not {}",
                                type_name(&other)
                            ),
                        ));
                    }
                }
            }
            match date {
                Some(ms) => {
                    let add = as_f64(&acc).unwrap_or(0.0).round() as i64;
                    Bson::DateTime(DateTime::from_millis(ms.saturating_add(add)))
                }
                None => acc,
            }
        }
        "$subtract" => {
            let (a, b) = (ev(0)?, ev(1)?);
            match (&a, &b) {
                _ if is_nullish(&a) || is_nullish(&b) => Bson::Null,
                (Some(Bson::DateTime(x)), Some(Bson::DateTime(y))) => {
                    Bson::Int64(x.timestamp_millis().saturating_sub(y.timestamp_millis()))
                }
                (Some(Bson::DateTime(x)), Some(y)) if is_num(y) => {
                    Bson::DateTime(DateTime::from_millis(
                        x.timestamp_millis()
                            .saturating_sub(as_f64(y).unwrap_or(0.0) as i64),
                    ))
                }
                (Some(x), Some(y)) if is_num(x) && is_num(y) => {
                    let neg = mul_nums(y, &Bson::Int32(-1)).unwrap_or(Bson::Null);
                    add_nums(x, &neg).unwrap_or(Bson::Null)
                }
                _ => {
                    // SRV ExpressionSubtract: 16556
                    return Err(CommandError::from_code(
                        16556,
                        format!("can't $subtract {} from {}", tname(&b), tname(&a)),
                    ));
                }
            }
        }
        "$multiply" => {
            let mut acc = Bson::Int32(1);
            for v in all()? {
                match v {
                    None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(x) if is_num(&x) => acc = mul_nums(&acc, &x).unwrap_or(Bson::Null),
                    Some(other) => {
                        return Err(CommandError::from_code(
                            16555,
                            format!(
                                "$multiply only supports numeric types, not {}",
                                type_name(&other)
                            ),
                        ))
                    }
                }
            }
            acc
        }
        "$divide" | "$mod" => {
            let (a, b) = (ev(0)?, ev(1)?);
            if is_nullish(&a) || is_nullish(&b) {
                return Ok(Some(Bson::Null));
            }
            let (Some(x), Some(y)) = (a.as_ref().and_then(as_f64), b.as_ref().and_then(as_f64))
            else {
                let code = if name == "$divide" { 16609 } else { 16611 };
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
                    CommandError::from_code(2, "can't $divide by zero")
                } else {
                    CommandError::from_code(16610, "can't $mod by zero")
                });
            }
            if name == "$divide" {
                Bson::Double(x / y)
            } else {
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
                }
            }
        }
        "$toString" => match ev(0)? {
            None | Some(Bson::Null) | Some(Bson::Undefined) => Bson::Null,
            Some(v) => to_string(&v)?,
        },
        "$in" => {
            let (x, arr) = (ev(0)?, ev(1)?);
            match arr {
                Some(Bson::Array(a)) => Bson::Boolean(
                    a.iter()
                        .any(|e| cmp_values(x.as_ref(), Some(e)) == Ordering::Equal),
                ),
                other => {
                    // SRV ExpressionIn: 40081
                    return Err(CommandError::from_code(
                        40081,
                        format!(
                            "$in requires an array as a second argument, found: {}",
                            tname(&other)
                        ),
                    ));
                }
            }
        }
        "$size" => match ev(0)? {
            Some(Bson::Array(a)) => Bson::Int32(a.len() as i32),
            other => {
                // SRV ExpressionSize: 17124
                return Err(CommandError::from_code(
                    17124,
                    format!(
                        "The argument to $size must be an array. Type of argument is: {}",
                        tname(&other)
                    ),
                ));
            }
        },
        "$mergeObjects" => {
            let mut out = Document::new();
            for v in all()? {
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
                            40400,
                            format!(
                                "$mergeObjects requires object inputs, but input {} is of type {}",
                                super::fmt::value(&other),
                                type_name(&other)
                            ),
                        ));
                    }
                }
            }
            Bson::Document(out)
        }
        "$arrayElemAt" => {
            let (a, i) = (ev(0)?, ev(1)?);
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
                    arr[real as usize].clone()
                }
                (a, _) => {
                    return Err(CommandError::from_code(
                        28689,
                        format!(
                            "$arrayElemAt's first argument must be an array, but is {}",
                            tname(&a)
                        ),
                    ))
                }
            }
        }
        "$first" | "$last" => match ev(0)? {
            None | Some(Bson::Null) | Some(Bson::Undefined) => Bson::Null,
            Some(Bson::Array(a)) => {
                let e = if name == "$first" {
                    a.first()
                } else {
                    a.last()
                };
                return Ok(e.cloned());
            }
            Some(other) => {
                return Err(CommandError::from_code(
                    28689,
                    format!(
                        "{name}'s argument must be an array, but is {}",
                        type_name(&other)
                    ),
                ))
            }
        },
        "$type" => Bson::String(tname(&ev(0)?).to_string()),
        "$isArray" => Bson::Boolean(matches!(ev(0)?, Some(Bson::Array(_)))),
        "$toLower" | "$toUpper" => match ev(0)? {
            None | Some(Bson::Null) | Some(Bson::Undefined) => Bson::String(String::new()),
            Some(Bson::String(s)) => Bson::String(if name == "$toLower" {
                s.to_ascii_lowercase()
            } else {
                s.to_ascii_uppercase()
            }),
            Some(other) => match to_string(&other)? {
                Bson::String(s) => Bson::String(if name == "$toLower" {
                    s.to_ascii_lowercase()
                } else {
                    s.to_ascii_uppercase()
                }),
                o => o,
            },
        },
        "$strLenBytes" => match ev(0)? {
            Some(Bson::String(s)) => Bson::Int32(s.len() as i32),
            other => {
                return Err(CommandError::from_code(
                    34473,
                    format!(
                        "$strLenBytes requires a string argument, found: {}",
                        tname(&other)
                    ),
                ))
            }
        },
        "$abs" => match ev(0)? {
            v if is_nullish(&v) => Bson::Null,
            Some(Bson::Int32(i)) => match i.checked_abs() {
                Some(r) => Bson::Int32(r),
                None => Bson::Int64(-i64::from(i)),
            },
            Some(Bson::Int64(i)) => Bson::Int64(i.saturating_abs()),
            Some(Bson::Double(f)) => Bson::Double(f.abs()),
            other => {
                return Err(CommandError::from_code(
                    28765,
                    format!("$abs only supports numeric types, not {}", tname(&other)),
                ))
            }
        },
        "$max" | "$min" | "$sum" | "$avg" => {
            let vals = all()?;
            let items: Vec<Bson> = if vals.len() == 1 {
                match &vals[0] {
                    Some(Bson::Array(a)) => a.clone(),
                    Some(v) => vec![v.clone()],
                    None => vec![],
                }
            } else {
                vals.into_iter().flatten().collect()
            };
            accumulate(name, &items)
        }
        "$concatArrays" => {
            let mut out = Vec::new();
            for v in all()? {
                match v {
                    None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::Array(a)) => out.extend(a),
                    Some(other) => {
                        return Err(CommandError::from_code(
                            28664,
                            format!(
                                "$concatArrays only supports arrays, not {}",
                                type_name(&other)
                            ),
                        ))
                    }
                }
            }
            Bson::Array(out)
        }
        "$setUnion" => {
            let mut out: Vec<Bson> = Vec::new();
            for v in all()? {
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
                            17043,
                            format!(
                            "All operands of $setUnion must be arrays. One argument is of type: {}",
                            type_name(&other)
                        ),
                        ))
                    }
                }
            }
            out.sort_by(cmp_bson);
            Bson::Array(out)
        }
        "$toInt" | "$toLong" | "$toDouble" | "$toBool" => {
            let v = ev(0)?;
            if is_nullish(&v) {
                return Ok(Some(Bson::Null));
            }
            let v = v.unwrap_or(Bson::Null);
            let f = as_f64(&v);
            match (name, f, &v) {
                ("$toBool", _, _) => Bson::Boolean(truthy(Some(&v))),
                ("$toInt", Some(f), _) => Bson::Int32(f.trunc() as i32),
                ("$toLong", Some(f), _) => Bson::Int64(f.trunc() as i64),
                ("$toDouble", Some(f), _) => Bson::Double(f),
                (_, _, Bson::Boolean(b)) => match name {
                    "$toInt" => Bson::Int32(i32::from(*b)),
                    "$toLong" => Bson::Int64(i64::from(*b)),
                    _ => Bson::Double(f64::from(u8::from(*b))),
                },
                (_, _, Bson::String(s)) => {
                    let bad = || {
                        CommandError::from_code(
                            241,
                            format!("Failed to parse number '{s}' in $convert with no onError value: Did not consume whole string."),
                        )
                    };
                    match name {
                        "$toInt" => Bson::Int32(s.trim().parse().map_err(|_| bad())?),
                        "$toLong" => Bson::Int64(s.trim().parse().map_err(|_| bad())?),
                        _ => Bson::Double(s.trim().parse().map_err(|_| bad())?),
                    }
                }
                (_, _, other) => {
                    return Err(CommandError::from_code(
                        241,
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
            }
        }
        "$slice" => {
            if args.len() != 2 && args.len() != 3 {
                // SRV ExpressionSlice: 28667
                return Err(CommandError::from_code(
                    28667,
                    format!("Expression $slice takes at least 2 arguments, and at most 3, but {} were passed in.", args.len()),
                ));
            }
            let vals = all()?;
            if vals.iter().any(is_nullish) {
                return Ok(Some(Bson::Null));
            }
            let Some(Bson::Array(arr)) = &vals[0] else {
                return Err(CommandError::from_code(
                    28724,
                    format!(
                        "First argument to $slice must be an array, but is of type: {}",
                        tname(&vals[0])
                    ),
                ));
            };
            let n = arr.len() as i64;
            let num = |v: &Option<Bson>| v.as_ref().and_then(as_f64).map(|f| f as i64);
            let (start, count) = if vals.len() == 2 {
                let k = num(&vals[1]).unwrap_or(0);
                if k >= 0 {
                    (0, k.min(n))
                } else {
                    (n.saturating_add(k).max(0), k.saturating_neg().min(n))
                }
            } else {
                let p = num(&vals[1]).unwrap_or(0);
                let c = num(&vals[2]).unwrap_or(0);
                if c <= 0 {
                    return Err(CommandError::from_code(
                        28729,
                        format!("Third argument to $slice must be positive: {c}"),
                    ));
                }
                let start = if p >= 0 {
                    p.min(n)
                } else {
                    n.saturating_add(p).max(0)
                };
                (start, c.min(n - start))
            };
            Bson::Array(arr[start as usize..(start + count) as usize].to_vec())
        }
        "$reverseArray" => match ev(0)? {
            v if is_nullish(&v) => Bson::Null,
            Some(Bson::Array(mut a)) => {
                a.reverse();
                Bson::Array(a)
            }
            other => {
                return Err(CommandError::from_code(
                    34435,
                    format!(
                        "The argument to $reverseArray must be an array, but was of type: {}",
                        tname(&other)
                    ),
                ))
            }
        },
        "$getField" | "$setField" | "$unsetField" => {
            let field = match &args[0] {
                Expr::Literal(Bson::String(s)) => s.clone(),
                _ => String::new(),
            };
            let input = ev(1)?;
            match (name, input) {
                ("$getField", Some(Bson::Document(d))) => return Ok(d.get(&field).cloned()),
                ("$getField", None | Some(Bson::Null) | Some(Bson::Undefined)) => return Ok(None),
                ("$getField", Some(other)) => {
                    return Err(CommandError::from_code(
                        3041705,
                        format!(
                            "$getField requires 'input' to evaluate to type Object, but got {}",
                            type_name(&other)
                        ),
                    ))
                }
                (_, None | Some(Bson::Null) | Some(Bson::Undefined)) => Bson::Null,
                (_, Some(Bson::Document(mut d))) => {
                    let v = if name == "$setField" { ev(2)? } else { None };
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
                (_, Some(other)) => {
                    return Err(CommandError::from_code(
                        4161101,
                        format!(
                            "{name} requires 'input' to evaluate to type Object, but got {}",
                            type_name(&other)
                        ),
                    ))
                }
            }
        }
        "$objectToArray" => match ev(0)? {
            v if is_nullish(&v) => Bson::Null,
            Some(Bson::Document(d)) => Bson::Array(
                d.into_iter()
                    .map(|(k, v)| Bson::Document(bson::doc! {"k": k, "v": v}))
                    .collect(),
            ),
            other => {
                return Err(CommandError::from_code(
                    40390,
                    format!(
                        "$objectToArray requires a document input, found: {}",
                        tname(&other)
                    ),
                ))
            }
        },
        _ => {
            return Err(CommandError::from_code(
                168,
                format!("Unrecognized expression '{name}'"),
            ))
        }
    };
    Ok(Some(r))
}

/// `$sum`/`$avg`/`$min`/`$max` over values (non-numbers ignored by `$sum`/`$avg`;
/// null/missing ignored by `$min`/`$max`; SRV `accumulator_*.cpp`).
pub(crate) fn accumulate(name: &str, items: &[Bson]) -> Bson {
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
pub(crate) fn values_equal(a: Option<&Bson>, b: Option<&Bson>) -> bool {
    cmp_values(a, b) == Ordering::Equal && a.map(canonical_type) == b.map(canonical_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc};

    fn ev(e: Bson, d: &Document) -> CmdResult<Option<Bson>> {
        Expr::parse(&e)?.eval(&Vars::new(d))
    }

    #[test]
    fn rand_is_a_double_in_unit_interval_and_takes_no_arguments() {
        let d = doc! {};
        for _ in 0..100 {
            match ev(bson!({"$rand": {}}), &d).unwrap() {
                Some(Bson::Double(x)) => assert!((0.0..1.0).contains(&x), "{x}"),
                other => panic!("not a double: {other:?}"),
            }
        }
        let e = Expr::parse(&bson!({"$rand": {"seed": 1}})).unwrap_err();
        assert_eq!(e.code, 3040500);
    }

    #[test]
    fn field_paths_and_vars() {
        let d = doc! {"a": {"b": 1}, "arr": [{"x": 1}, {"y": 2}, {"x": [3]}, 4]};
        assert_eq!(ev(bson!("$a.b"), &d).unwrap(), Some(bson!(1)));
        assert_eq!(ev(bson!("$nope"), &d).unwrap(), None);
        assert_eq!(ev(bson!("$arr.x"), &d).unwrap(), Some(bson!([1, [3]])));
        assert_eq!(ev(bson!("$$ROOT.a"), &d).unwrap(), Some(bson!({"b": 1})));
        assert_eq!(ev(bson!("$$CURRENT.a.b"), &d).unwrap(), Some(bson!(1)));
        assert_eq!(ev(bson!("$$REMOVE"), &d).unwrap(), None);
        assert_eq!(ev(bson!("$$nope"), &d).unwrap_err().code, 17276);
        assert_eq!(ev(bson!("plain"), &d).unwrap(), Some(bson!("plain")));
        assert_eq!(
            ev(bson!({"$literal": "$a"}), &d).unwrap(),
            Some(bson!("$a"))
        );
    }

    #[test]
    fn comparisons_treat_missing_below_null() {
        let d = doc! {"n": null, "a": 1};
        assert_eq!(
            ev(bson!({"$eq": ["$missing", null]}), &d).unwrap(),
            Some(bson!(false))
        );
        assert_eq!(
            ev(bson!({"$eq": ["$n", null]}), &d).unwrap(),
            Some(bson!(true))
        );
        assert_eq!(
            ev(bson!({"$lt": ["$missing", null]}), &d).unwrap(),
            Some(bson!(true))
        );
        assert_eq!(
            ev(bson!({"$gt": ["$a", 0.5]}), &d).unwrap(),
            Some(bson!(true))
        );
        assert_eq!(ev(bson!({"$cmp": ["$a", 2]}), &d).unwrap(), Some(bson!(-1)));
        assert_eq!(ev(bson!({"$eq": ["$a"]}), &d).unwrap_err().code, 16020);
    }

    #[test]
    fn arithmetic_and_strings() {
        let d = doc! {"a": 2, "b": 2.5, "s": "x", "big": i32::MAX};
        assert_eq!(ev(bson!({"$add": ["$a", 3]}), &d).unwrap(), Some(bson!(5)));
        assert_eq!(
            ev(bson!({"$add": ["$a", "$b"]}), &d).unwrap(),
            Some(bson!(4.5))
        );
        assert_eq!(
            ev(bson!({"$add": ["$big", 1]}), &d).unwrap(),
            Some(Bson::Int64(i64::from(i32::MAX) + 1))
        );
        assert_eq!(
            ev(bson!({"$add": ["$a", "$missing"]}), &d).unwrap(),
            Some(Bson::Null)
        );
        assert_eq!(
            ev(bson!({"$subtract": ["$a", 5]}), &d).unwrap(),
            Some(bson!(-3))
        );
        assert_eq!(ev(bson!({"$add": ["$s", 1]}), &d).unwrap_err().code, 16554);
        assert_eq!(
            ev(bson!({"$concat": ["$s", "y"]}), &d).unwrap(),
            Some(bson!("xy"))
        );
        assert_eq!(
            ev(bson!({"$concat": ["$s", "$zz"]}), &d).unwrap(),
            Some(Bson::Null)
        );
        assert_eq!(
            ev(bson!({"$concat": ["$s", 1]}), &d).unwrap_err().code,
            16702
        );
        assert_eq!(
            ev(bson!({"$toString": "$a"}), &d).unwrap(),
            Some(bson!("2"))
        );
        assert_eq!(ev(bson!({"$divide": [1, 0]}), &d).unwrap_err().code, 2);
    }

    #[test]
    fn logic_cond_ifnull_in_size_merge() {
        let d = doc! {"a": [1, 2], "o": {"x": 1}, "z": 0};
        assert_eq!(
            ev(
                bson!({"$cond": [{"$gt": [{"$size": "$a"}, 1]}, "big", "small"]}),
                &d
            )
            .unwrap(),
            Some(bson!("big"))
        );
        assert_eq!(
            ev(bson!({"$cond": {"if": "$z", "then": 1, "else": 2}}), &d).unwrap(),
            Some(bson!(2))
        );
        assert_eq!(
            ev(bson!({"$ifNull": ["$m", "$z"]}), &d).unwrap(),
            Some(bson!(0))
        );
        assert_eq!(
            ev(bson!({"$in": [2, "$a"]}), &d).unwrap(),
            Some(bson!(true))
        );
        assert_eq!(ev(bson!({"$in": [2, "$o"]}), &d).unwrap_err().code, 40081);
        assert_eq!(ev(bson!({"$size": "$o"}), &d).unwrap_err().code, 17124);
        assert_eq!(
            ev(bson!({"$mergeObjects": ["$o", {"y": 2}, null]}), &d).unwrap(),
            Some(bson!({"x": 1, "y": 2}))
        );
        assert_eq!(
            ev(bson!({"$and": [1, "$a"]}), &d).unwrap(),
            Some(bson!(true))
        );
        assert_eq!(
            ev(bson!({"$or": [0, "$m"]}), &d).unwrap(),
            Some(bson!(false))
        );
        assert_eq!(ev(bson!({"$not": [[]]}), &d).unwrap(), Some(bson!(false)));
    }

    #[test]
    fn scoped_variables() {
        let d = doc! {"a": [1, 2, 3], "o": {"x.y": 5}};
        assert_eq!(
            ev(
                bson!({"$map": {"input": "$a", "as": "n", "in": {"$add": ["$$n", 1]}}}),
                &d
            )
            .unwrap(),
            Some(bson!([2, 3, 4]))
        );
        assert_eq!(
            ev(
                bson!({"$filter": {"input": "$a", "cond": {"$gte": ["$$this", 2]}, "limit": 1}}),
                &d
            )
            .unwrap(),
            Some(bson!([2]))
        );
        assert_eq!(
            ev(
                bson!({"$let": {"vars": {"k": 10}, "in": {"$multiply": ["$$k", 2]}}}),
                &d
            )
            .unwrap(),
            Some(bson!(20))
        );
        assert_eq!(
            ev(bson!({"$getField": {"field": "x.y", "input": "$o"}}), &d).unwrap(),
            Some(bson!(5))
        );
        assert_eq!(
            ev(
                bson!({"$setField": {"field": "n.m", "input": "$o", "value": 1}}),
                &d
            )
            .unwrap(),
            Some(bson!({"x.y": 5, "n.m": 1}))
        );
        assert_eq!(
            ev(bson!({"$unsetField": {"field": "x.y", "input": "$o"}}), &d).unwrap(),
            Some(bson!({}))
        );
        // crud spec updateOne-dots_and_dollars.json
        assert_eq!(
            ev(
                bson!({"$setField": {"field": {"$literal": "$a"}, "value": 1, "input": "$$ROOT"}}),
                &d
            )
            .unwrap(),
            Some(bson!({"a": [1, 2, 3], "o": {"x.y": 5}, "$a": 1}))
        );
        assert_eq!(
            ev(bson!({"$map": {"input": "$a", "in": 1, "bad": 1}}), &d)
                .unwrap_err()
                .code,
            16879
        );
    }

    #[test]
    fn extreme_arguments_do_not_panic() {
        let d = doc! {"a": [1, 2, 3], "t": bson::DateTime::from_millis(i64::MIN)};
        assert_eq!(
            ev(bson!({"$slice": ["$a", i64::MIN]}), &d).unwrap(),
            Some(bson!([1, 2, 3]))
        );
        assert_eq!(
            ev(bson!({"$slice": ["$a", i64::MIN, 2]}), &d).unwrap(),
            Some(bson!([1, 2]))
        );
        assert_eq!(
            ev(bson!({"$arrayElemAt": ["$a", i64::MIN]}), &d).unwrap(),
            None
        );
        assert!(ev(bson!({"$subtract": ["$t", i64::MAX]}), &d).is_ok());
        assert_eq!(
            ev(bson!({"$abs": i32::MIN}), &d).unwrap(),
            Some(Bson::Int64(2147483648))
        );
        assert_eq!(
            ev(bson!({"$multiply": [i64::MAX, 2]}), &d).unwrap(),
            Some(Bson::Double(i64::MAX as f64 * 2.0))
        );
    }

    #[test]
    fn no_operator_panics_on_odd_arguments() {
        let d = doc! {"a": [1], "s": "x", "o": {"k": 1}};
        let odd = [
            bson!([]),
            bson!([null]),
            bson!("x"),
            bson!(["$a", "$s", "$o", 1.5, null]),
            bson!({"x": 1}),
            bson!([[], {}]),
        ];
        for op in KNOWN_OPS
            .iter()
            .chain(["$let", "$map", "$filter", "$cond", "$literal"].iter())
        {
            for arg in &odd {
                let mut spec = Document::new();
                spec.insert(*op, arg.clone());
                if let Ok(e) = Expr::parse(&Bson::Document(spec)) {
                    let _ = e.eval(&Vars::new(&d));
                }
            }
        }
    }

    #[test]
    fn unknown_operator_is_168() {
        let e = Expr::parse(&bson!({"$frobnicate": 1})).unwrap_err();
        assert_eq!(e.code, 168);
        assert_eq!(e.code_name, "InvalidPipelineOperator");
        assert_eq!(e.errmsg, "Unrecognized expression '$frobnicate'");
        assert_eq!(
            Expr::parse(&bson!({"$add": [1], "x": 1})).unwrap_err().code,
            15983
        );
    }

    #[test]
    fn object_expression_drops_missing() {
        let d = doc! {"a": 1};
        assert_eq!(
            ev(bson!({"x": "$a", "y": "$nope", "z": ["$nope"]}), &d).unwrap(),
            Some(bson!({"x": 1, "z": [null]}))
        );
    }
}
