//! Parsing of aggregation expressions (SRV `Expression::parseOperand`, `parseExpression`).

use bson::{Bson, Document};

use super::{Expr, KNOWN_OPS};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// Parses a `$a.b` field path or a `$$NAME.a.b` variable reference (`$$CURRENT` is `$`).
fn parse_field_path(s: &str) -> CmdResult<Expr> {
    if let Some(rest) = s.strip_prefix("$$") {
        let mut parts = rest.split('.').map(str::to_string);
        let name = parts.next().unwrap_or_default();
        if name.is_empty() {
            return Err(CommandError::from_code(
                ErrorCode::EmptyVariableName,
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
            ErrorCode::FieldPathEmpty,
            "FieldPath cannot be constructed with empty string",
        ));
    }
    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(CommandError::from_code(
            ErrorCode::FieldPathEmptyComponent,
            "FieldPath field names may not be empty strings.",
        ));
    }
    Ok(Expr::Field(parts))
}

impl Expr {
    /// Parses an expression operand (SRV `Expression::parseOperand`).
    pub fn parse(v: &Bson) -> CmdResult<Expr> {
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
    pub fn parse_object(d: &Document) -> CmdResult<Expr> {
        let Some((first, _)) = d.iter().next() else {
            return Ok(Expr::Object(Vec::new()));
        };
        if first.starts_with('$') {
            if d.len() != 1 {
                // SRV expression.cpp parseExpression: 15983
                return Err(CommandError::from_code(
                    ErrorCode::ExpressionObjectNotSingleField,
                    format!(
                        "An object representing an expression must have exactly one field: {}",
                        crate::fmt::doc(d)
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
                    ErrorCode::FieldPathDollarPrefix,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
                ));
            }
            fields.push((k.clone(), Expr::parse(v)?));
        }
        Ok(Expr::Object(fields))
    }

    /// Parses `{name: arg}` for an operator `name`, by operator form.
    fn parse_op(name: &str, arg: &Bson) -> CmdResult<Expr> {
        match name {
            "$literal" | "$const" => Ok(Expr::Literal(arg.clone())),
            "$let" | "$map" | "$filter" => Self::parse_scoped(name, arg),
            "$rand" => parse_rand(arg),
            "$cond" => parse_cond(arg),
            "$getField" | "$setField" | "$unsetField" => parse_field_op(name, arg),
            _ => parse_positional(name, arg),
        }
    }

    /// `$let`, `$map`, `$filter`: named-argument forms that bind variables
    /// (SRV expression.cpp `ExpressionLet/Map/Filter::parse`).
    fn parse_scoped(name: &str, arg: &Bson) -> CmdResult<Expr> {
        let Bson::Document(d) = arg else {
            let code = match name {
                "$let" => ErrorCode::LetArgNotObject,
                "$map" => ErrorCode::MapArgNotObject,
                _ => ErrorCode::FilterArgNotObject,
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
                    "$let" => ErrorCode::LetUnknownParameter,
                    "$map" => ErrorCode::MapUnknownParameter,
                    _ => ErrorCode::FilterUnknownParameter,
                };
                return Err(CommandError::from_code(
                    code,
                    format!("Unrecognized parameter to {name}: {k}"),
                ));
            }
        }
        let req = |k: &str, code: ErrorCode| -> CmdResult<Expr> {
            match d.get(k) {
                Some(v) => Expr::parse(v),
                None => Err(CommandError::from_code(
                    code,
                    format!("Missing '{k}' parameter to {name}"),
                )),
            }
        };
        let var_name = |code: ErrorCode| -> CmdResult<String> {
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
                        ErrorCode::LetMissingVars,
                        "Missing 'vars' parameter to $let",
                    ));
                };
                let mut bound = Vec::new();
                for (k, v) in vars {
                    bound.push((k.clone(), Expr::parse(v)?));
                }
                Expr::Let(bound, Box::new(req("in", ErrorCode::LetMissingIn)?))
            }
            "$map" => Expr::Map(
                Box::new(req("input", ErrorCode::MapMissingInput)?),
                var_name(ErrorCode::MapInvalidAsVariable)?,
                Box::new(req("in", ErrorCode::MapMissingIn)?),
            ),
            _ => Expr::Filter(
                Box::new(req("input", ErrorCode::FilterMissingInput)?),
                var_name(ErrorCode::FilterInvalidAsVariable)?,
                Box::new(req("cond", ErrorCode::FilterMissingCond)?),
                match d.get("limit") {
                    Some(v) => Some(Box::new(Expr::parse(v)?)),
                    None => None,
                },
            ),
        })
    }
}

/// `$rand`: only `{}` is accepted (SRV expression.cpp `ExpressionRandom::parse`:
/// "$rand does not currently accept arguments", 3040500).
fn parse_rand(arg: &Bson) -> CmdResult<Expr> {
    match arg {
        Bson::Document(d) if d.is_empty() => Ok(Expr::Op("$rand".to_string(), Vec::new())),
        _ => Err(CommandError::from_code(
            ErrorCode::RandTakesNoArgs,
            "$rand does not currently accept arguments",
        )),
    }
}

/// `$cond`: `[if, then, else]` or `{if, then, else}` (SRV `ExpressionCond::parse`).
fn parse_cond(arg: &Bson) -> CmdResult<Expr> {
    let (i, t, e) = match arg {
        Bson::Array(a) if a.len() == 3 => (&a[0], &a[1], &a[2]),
        Bson::Array(a) => {
            return Err(arity("$cond", 3, a.len()));
        }
        Bson::Document(d) => cond_named_args(d)?,
        _ => return Err(arity("$cond", 3, 1)),
    };
    Ok(Expr::Cond(
        Box::new(Expr::parse(i)?),
        Box::new(Expr::parse(t)?),
        Box::new(Expr::parse(e)?),
    ))
}

/// The `if`, `then` and `else` of `{$cond: {..}}`: unknown keys answer 17083 first.
fn cond_named_args(d: &Document) -> CmdResult<(&Bson, &Bson, &Bson)> {
    for k in d.keys() {
        if !matches!(k.as_str(), "if" | "then" | "else") {
            return Err(CommandError::from_code(
                ErrorCode::CondUnknownParameter,
                format!("Unrecognized parameter to $cond: {k}"),
            ));
        }
    }
    let get = |k: &str, code: ErrorCode| {
        d.get(k).ok_or_else(|| {
            CommandError::from_code(code, format!("Missing '{k}' parameter to $cond"))
        })
    };
    Ok((
        get("if", ErrorCode::CondMissingIf)?,
        get("then", ErrorCode::CondMissingThen)?,
        get("else", ErrorCode::CondMissingElse)?,
    ))
}

/// `$getField`, `$setField`, `$unsetField`: parsed to `[field, input]` (+ `value` for
/// `$setField`), `field` being a constant string.
fn parse_field_op(name: &str, arg: &Bson) -> CmdResult<Expr> {
    let (field, input, value) = field_op_args(name, arg)?;
    let field = constant_field_name(name, field)?;
    let mut args = vec![Expr::Literal(field), Expr::parse(&input)?];
    if name == "$setField" {
        let Some(v) = value else {
            return Err(CommandError::from_code(
                ErrorCode::SetFieldMissingValue,
                "$setField requires 'value' to be specified",
            ));
        };
        args.push(Expr::parse(&v)?);
    }
    Ok(Expr::Op(name.to_string(), args))
}

/// The named arguments of a field operator: `field`, `input` (default `$$CURRENT`),
/// `value`; `$getField` also takes a bare field name.
fn field_op_args(name: &str, arg: &Bson) -> CmdResult<(Bson, Bson, Option<Bson>)> {
    Ok(match arg {
        Bson::Document(d) if !d.keys().next().is_some_and(|k| k.starts_with('$')) => (
            d.get("field").cloned().ok_or_else(|| {
                CommandError::from_code(
                    ErrorCode::GetFieldMissingField,
                    format!("{name} requires 'field' to be specified"),
                )
            })?,
            d.get("input")
                .cloned()
                .unwrap_or(Bson::String("$$CURRENT".into())),
            d.get("value").cloned(),
        ),
        other if name == "$getField" => (other.clone(), Bson::String("$$CURRENT".into()), None),
        _ => {
            return Err(CommandError::from_code(
                ErrorCode::SetFieldArgNotObject,
                format!("{name} only supports an object as its argument"),
            ))
        }
    })
}

/// Checks that 'field' is a constant string: a plain string or {$literal: <string>}
/// (SRV expression.cpp ExpressionGetField/SetField::parse).
fn constant_field_name(name: &str, field: Bson) -> CmdResult<Bson> {
    let field = match field {
        Bson::Document(d) if d.len() == 1 && d.contains_key("$literal") => {
            d.get("$literal").cloned().unwrap_or(Bson::Null)
        }
        Bson::String(s) if s.starts_with('$') => {
            return Err(CommandError::from_code(
                ErrorCode::GetFieldFieldNotConstant,
                format!("{name} requires 'field' to evaluate to a constant, but got a non-constant argument"),
            ));
        }
        other => other,
    };
    let Bson::String(_) = field else {
        return Err(CommandError::from_code(
            ErrorCode::GetFieldFieldNotString,
            format!("{name} requires 'field' to evaluate to type String"),
        ));
    };
    Ok(field)
}

/// Any other operator: unknown ones answer 168; the argument is a list (a non-array is
/// a list of one), checked against the operator's arity.
fn parse_positional(name: &str, arg: &Bson) -> CmdResult<Expr> {
    if !KNOWN_OPS.contains(&name) {
        // SRV expression.cpp Expression::parseExpression: 168 InvalidPipelineOperator
        return Err(CommandError::from_code(
            ErrorCode::InvalidPipelineOperator,
            format!("Unrecognized expression '{name}'"),
        ));
    }
    let args: Vec<Expr> = match arg {
        Bson::Array(a) => a.iter().map(Expr::parse).collect::<CmdResult<_>>()?,
        other => vec![Expr::parse(other)?],
    };
    if let Some(n) = fixed_arity(name) {
        if args.len() != n {
            return Err(arity(name, n, args.len()));
        }
    }
    if name == "$ifNull" && args.len() < 2 {
        return Err(CommandError::from_code(
            ErrorCode::IfNullTooFewArgs,
            "$ifNull needs at least two arguments, had: ".to_string() + &args.len().to_string(),
        ));
    }
    Ok(Expr::Op(name.to_string(), args))
}

/// The argument count of a fixed-arity operator (`None`: variadic).
fn fixed_arity(name: &str) -> Option<usize> {
    match name {
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" | "$in" | "$subtract"
        | "$divide" | "$mod" | "$arrayElemAt" => Some(2),
        "$not" | "$toString" | "$size" | "$type" | "$isArray" | "$toLower" | "$toUpper"
        | "$abs" | "$strLenBytes" | "$toInt" | "$toLong" | "$toDouble" | "$toBool"
        | "$objectToArray" | "$first" | "$last" | "$reverseArray" => Some(1),
        _ => None,
    }
}

/// The wrong-argument-count error of a fixed-arity operator.
fn arity(name: &str, n: usize, got: usize) -> CommandError {
    // SRV expression.h ExpressionFixedArity::validateArguments: 16020
    CommandError::from_code(
        ErrorCode::ExpressionWrongArgCount,
        format!("Expression {name} takes exactly {n} arguments. {got} were passed in."),
    )
}
