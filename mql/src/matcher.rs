//! Query filters (`find` filters, `$match`, update/delete selection)
//! (SRV `src/mongo/db/matcher/expression_parser.cpp`, `expression_leaf.cpp`,
//! `expression_array.cpp`, `path.cpp`).
//!
//! Path semantics follow the server's `ElementPath` traversal: a non-numeric component
//! fans out over the elements of an array; a numeric component indexes the array *and*
//! looks the field up in embedded documents of the array; a leaf array is matched both as a
//! whole and element by element. Negations (`$ne`, `$nin`, `$not`, `$nor`) are the
//! complement of the positive match over the whole path.

use std::cmp::Ordering;

use bson::{Bson, Document, Regex as BsonRegex};

use super::compare::{as_f64, canonical_type, cmp_coll, Collation};
use super::expr::{truthy, Expr, Vars};
use super::fmt;
use super::path::array_index;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// A parsed filter.
#[derive(Debug, Clone)]
pub struct Matcher {
    root: Node,
    /// `let` variables visible to `$expr` (`$$name`).
    lets: Vec<(String, Bson)>,
    /// The command's collation (string equality and ranges).
    coll: Option<Collation>,
}

/// Evaluation context: the document `$expr` sees as `$$ROOT` and the `let` variables.
#[derive(Clone, Copy)]
struct Cx<'a> {
    root: &'a Document,
    lets: &'a [(String, Bson)],
    coll: Option<&'a Collation>,
}

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Nor(Vec<Node>),
    Path(String, Pred),
    Expr(Expr),
    Const(bool),
}

#[derive(Debug, Clone)]
enum Pred {
    Eq(Bson),
    Cmp(Ordering, bool, Bson), // (direction, or-equal, value)
    In(Vec<Bson>, Vec<Re>),
    Exists(bool),
    Type(Vec<TypeSel>),
    Regex(Re),
    Size(i64),
    ElemMatchObj(Box<Node>),
    ElemMatchVal(Vec<Pred>),
    All(Vec<Bson>, Vec<Node>),
    Mod(i64, i64),
    Not(Vec<Pred>),
    And(Vec<Pred>),
}

#[derive(Debug, Clone)]
struct Re {
    source: BsonRegex,
    re: regex::Regex,
}

impl Re {
    fn new(pattern: &str, options: &str) -> CmdResult<Re> {
        let mut flags = String::new();
        for c in options.chars() {
            match c {
                'i' | 'm' | 's' | 'x' => flags.push(c),
                'u' | 'l' => {}
                _ => {
                    // SRV expression_leaf.cpp RegexMatchExpression: 51108
                    return Err(CommandError::from_code(
                        ErrorCode::RegexInvalidFlag,
                        format!("invalid flag in regex options: {c}"),
                    ));
                }
            }
        }
        let full = if flags.is_empty() {
            pattern.to_string()
        } else {
            format!("(?{flags}){pattern}")
        };
        let re = regex::Regex::new(&full).map_err(|e| {
            // SRV: 51091 "Regular expression is invalid: ..."
            CommandError::from_code(
                ErrorCode::RegexInvalid,
                format!("Regular expression is invalid: {e}"),
            )
        })?;
        let mut opts: Vec<char> = options.chars().collect();
        opts.sort_unstable();
        Ok(Re {
            source: BsonRegex {
                pattern: pattern.to_string(),
                options: opts.into_iter().collect(),
            },
            re,
        })
    }

    fn matches(&self, v: &Bson) -> bool {
        match v {
            Bson::String(s) | Bson::Symbol(s) => self.re.is_match(s),
            Bson::RegularExpression(r) => {
                r.pattern == self.source.pattern && r.options == self.source.options
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TypeSel {
    Number,
    Code(i32),
}

fn type_code(v: &Bson) -> i32 {
    match v {
        Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::Undefined => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Null => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::Symbol(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::Int32(_) => 16,
        Bson::Timestamp(_) => 17,
        Bson::Int64(_) => 18,
        Bson::Decimal128(_) => 19,
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
    }
}

/// `$type` aliases (SRV `src/mongo/bson/bsontypes.cpp` `kTypeAliasMap`).
fn type_alias(name: &str) -> Option<TypeSel> {
    Some(TypeSel::Code(match name {
        "number" => return Some(TypeSel::Number),
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "undefined" => 6,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "dbPointer" => 12,
        "javascript" => 13,
        "symbol" => 14,
        "javascriptWithScope" => 15,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        "minKey" => -1,
        "maxKey" => 127,
        _ => return None,
    }))
}

fn bad(msg: impl Into<String>) -> CommandError {
    CommandError::bad_value(msg)
}

impl Matcher {
    /// Parses a filter document.
    pub fn parse(filter: &Document) -> CmdResult<Matcher> {
        Ok(Matcher {
            root: parse_doc(filter, true)?,
            lets: Vec::new(),
            coll: None,
        })
    }

    /// Parses a filter whose `$expr` may use the command's `let` variables (`$$name`);
    /// the `let` values are expressions evaluated once, without a document.
    pub fn parse_with_let(filter: &Document, lets: Option<&Document>) -> CmdResult<Matcher> {
        let mut m = Matcher::parse(filter)?;
        m.lets = eval_lets(lets)?;
        Ok(m)
    }

    /// Applies the command's collation (`None`: simple binary comparison).
    pub fn set_collation(&mut self, coll: Option<Collation>) {
        self.coll = coll;
    }

    /// Replaces the `let` variables visible to `$expr`.
    pub fn set_lets(&mut self, lets: Vec<(String, Bson)>) {
        self.lets = lets;
    }

    /// A matcher that matches every document.
    pub fn all() -> Matcher {
        Matcher {
            root: Node::Const(true),
            lets: Vec::new(),
            coll: None,
        }
    }

    /// Whether `doc` matches; an `$expr` evaluation error (e.g. `$add` of a string) is an
    /// error, as the server fails the query with it.
    pub fn try_matches(&self, doc: &Document) -> CmdResult<bool> {
        try_eval_node(
            &self.root,
            doc,
            Cx {
                root: doc,
                lets: &self.lets,
                coll: self.coll.as_ref(),
            },
        )
    }

    /// Whether `doc` matches (an `$expr` evaluation error counts as no match; see
    /// [`Matcher::try_matches`]).
    pub fn matches(&self, doc: &Document) -> bool {
        eval_node(
            &self.root,
            doc,
            Cx {
                root: doc,
                lets: &self.lets,
                coll: self.coll.as_ref(),
            },
        )
    }

    /// The top-level fields the filter reads, in first-use order; `None` when it reads the
    /// whole document (an `$expr` sees `$$ROOT`). Every path is resolved from its first
    /// component (SRV `ElementPath`), so a document cut down to these fields matches
    /// exactly as the whole document does: the oplog scan decodes only them.
    pub fn top_level_fields(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        collect_top_level_fields(&self.root, &mut out).then_some(out)
    }

    /// Index of the first element of the array at `array_path` that made the filter match
    /// (for the positional `$` update operator and projection). `None` when the filter
    /// does not constrain that array.
    pub fn matched_array_index(&self, doc: &Document, array_path: &str) -> Option<usize> {
        let Some(Bson::Array(arr)) = super::path::get_path(doc, array_path) else {
            return None;
        };
        let preds = collect_preds_under(&self.root, array_path);
        if preds.is_empty() {
            return None;
        }
        arr.iter().position(|e| {
            preds.iter().all(|(rest, p)| {
                if rest.is_empty() {
                    // `{arr: {$elemMatch: ...}}` constrains the element itself.
                    match p {
                        Pred::ElemMatchObj(node) => {
                            return matches!(e, Bson::Document(d) if eval_node(node, d, Cx { root: doc, lets: &self.lets, coll: self.coll.as_ref() }));
                        }
                        Pred::ElemMatchVal(ps) => {
                            let c = [Cand::Val(e)];
                            return ps.iter().all(|p| pred_matches(&c, p, Cx { root: doc, lets: &self.lets, coll: self.coll.as_ref() }));
                        }
                        _ => {}
                    }
                }
                let mut one = Document::new();
                one.insert("e", e.clone());
                let path = if rest.is_empty() {
                    "e".to_string()
                } else {
                    format!("e.{rest}")
                };
                path_matches(&one, &path, p, Cx { root: &one, lets: &self.lets, coll: self.coll.as_ref() })
            })
        })
    }
}

/// Evaluates a command's `let` document (SRV `Variables::seedVariablesWithLetParameters`).
pub fn eval_lets(lets: Option<&Document>) -> CmdResult<Vec<(String, Bson)>> {
    let mut out = Vec::new();
    let Some(lets) = lets else {
        return Ok(out);
    };
    let empty = Document::new();
    for (k, v) in lets {
        if !k.starts_with(|c: char| c.is_ascii_lowercase() || !c.is_ascii()) {
            // SRV variable_validation.cpp: 16870
            return Err(CommandError::from_code(
                ErrorCode::InvalidUserVariableName,
                format!("'{k}' starts with an invalid character for a user variable name"),
            ));
        }
        let e = Expr::parse(v)?;
        let val = e.eval(&Vars::new(&empty))?.unwrap_or(Bson::Null);
        out.push((k.clone(), val));
    }
    Ok(out)
}

/// Adds the first components of `n`'s paths to `out`; false when `n` holds an `$expr`.
fn collect_top_level_fields(n: &Node, out: &mut Vec<String>) -> bool {
    match n {
        Node::And(ns) | Node::Or(ns) | Node::Nor(ns) => {
            ns.iter().all(|c| collect_top_level_fields(c, out))
        }
        Node::Path(p, pred) => {
            let first = p.split('.').next().unwrap_or_default();
            if !out.iter().any(|f| f == first) {
                out.push(first.to_string());
            }
            pred_without_expr(pred)
        }
        Node::Expr(_) => false,
        Node::Const(_) => true,
    }
}

/// Whether `p` (and the filters nested in it) holds no `$expr`.
fn pred_without_expr(p: &Pred) -> bool {
    match p {
        Pred::ElemMatchObj(n) => collect_top_level_fields(n, &mut Vec::new()),
        Pred::All(_, ns) => ns
            .iter()
            .all(|n| collect_top_level_fields(n, &mut Vec::new())),
        Pred::ElemMatchVal(ps) | Pred::Not(ps) | Pred::And(ps) => ps.iter().all(pred_without_expr),
        _ => true,
    }
}

fn collect_preds_under<'a>(n: &'a Node, array_path: &str) -> Vec<(String, &'a Pred)> {
    let mut out = Vec::new();
    match n {
        Node::And(ns) => {
            for c in ns {
                out.extend(collect_preds_under(c, array_path));
            }
        }
        Node::Path(p, pred) => {
            if p == array_path {
                out.push((String::new(), pred));
            } else if let Some(rest) = p.strip_prefix(array_path).and_then(|r| r.strip_prefix('.'))
            {
                out.push((rest.to_string(), pred));
            }
        }
        _ => {}
    }
    out
}

fn parse_doc(filter: &Document, top: bool) -> CmdResult<Node> {
    let mut nodes = Vec::new();
    for (k, v) in filter {
        if let Some(op) = k.strip_prefix('$') {
            let list = |name: &str| -> CmdResult<Vec<Node>> {
                // SRV expression_parser.cpp parseTreeTopLevel
                let Bson::Array(a) = v else {
                    return Err(bad(format!("{name} must be an array")));
                };
                if a.is_empty() {
                    return Err(bad("$and/$or/$nor must be a nonempty array"));
                }
                a.iter()
                    .map(|e| match e {
                        Bson::Document(d) => parse_doc(d, false),
                        _ => Err(bad("$or/$and/$nor entries need to be full objects")),
                    })
                    .collect()
            };
            match op {
                "and" => nodes.push(Node::And(list(k)?)),
                "or" => nodes.push(Node::Or(list(k)?)),
                "nor" => nodes.push(Node::Nor(list(k)?)),
                "comment" => {}
                "alwaysTrue" => nodes.push(Node::Const(true)),
                "alwaysFalse" => nodes.push(Node::Const(false)),
                "expr" => nodes.push(Node::Expr(Expr::parse(v)?)),
                "text" => {
                    // SRV: a $text query needs a text index, which mongosim never has.
                    return Err(CommandError::from_code(
                        ErrorCode::IndexNotFound,
                        "text index required for $text query",
                    ));
                }
                "where" => {
                    // mongosim has no JavaScript engine: answer like a mongod started with
                    // --noscripting (SRV expression_where.cpp).
                    return Err(CommandError::from_code(
                        ErrorCode::BadValue,
                        "no globalScriptEngine in $where parsing",
                    ));
                }
                "not" => {
                    // SRV expression_parser.cpp parseTopLevel
                    return Err(bad("unknown top level operator: $not. If you are trying to negate an entire expression, use $nor."));
                }
                _ => {
                    // SRV expression_parser.cpp: "unknown top level operator: "
                    let _ = top;
                    return Err(bad(format!("unknown top level operator: {k}. If you have a field name that starts with a '$' symbol, consider using $getField or $setField.")));
                }
            }
            continue;
        }
        nodes.push(parse_path(k, v)?);
    }
    Ok(if nodes.len() == 1 {
        nodes.pop().unwrap_or(Node::Const(true))
    } else {
        Node::And(nodes)
    })
}

fn is_operator_doc(d: &Document) -> bool {
    d.keys().next().is_some_and(|k| k.starts_with('$'))
}

fn parse_path(path: &str, v: &Bson) -> CmdResult<Node> {
    let pred = match v {
        Bson::Document(d) if is_operator_doc(d) => parse_ops(d)?,
        Bson::RegularExpression(r) => Pred::Regex(Re::new(&r.pattern, &r.options)?),
        other => Pred::Eq(other.clone()),
    };
    Ok(Node::Path(path.to_string(), pred))
}

/// Parses the operators of one path (`{$gt: 1, $lt: 5}`): one predicate, or an `And` of them.
fn parse_ops(d: &Document) -> CmdResult<Pred> {
    let mut preds = Vec::new();
    let regex_opts = d.get("$options");
    if regex_opts.is_some() && !d.contains_key("$regex") {
        // SRV expression_parser.cpp: "$options needs a $regex"
        return Err(bad("$options needs a $regex"));
    }
    for (op, arg) in d {
        if let Some(p) = parse_op(op, arg, regex_opts)? {
            preds.push(p);
        }
    }
    Ok(if preds.len() == 1 {
        preds.pop().unwrap_or(Pred::And(Vec::new()))
    } else {
        Pred::And(preds)
    })
}

/// One path operator: the table from operator to its predicate (`None` for `$options` and
/// `$comment`, which add none).
fn parse_op(op: &str, arg: &Bson, regex_opts: Option<&Bson>) -> CmdResult<Option<Pred>> {
    Ok(Some(match op {
        "$eq" => Pred::Eq(arg.clone()),
        "$ne" => Pred::Not(vec![Pred::Eq(arg.clone())]),
        "$gt" => Pred::Cmp(Ordering::Greater, false, arg.clone()),
        "$gte" => Pred::Cmp(Ordering::Greater, true, arg.clone()),
        "$lt" => Pred::Cmp(Ordering::Less, false, arg.clone()),
        "$lte" => Pred::Cmp(Ordering::Less, true, arg.clone()),
        "$in" | "$nin" => parse_in(op, arg)?,
        "$exists" => Pred::Exists(truthy(Some(arg))),
        "$type" => parse_type(arg)?,
        "$regex" => parse_regex(arg, regex_opts)?,
        "$options" | "$comment" => return Ok(None),
        "$size" => parse_size(arg)?,
        "$elemMatch" => parse_elem_match(arg)?,
        "$all" => parse_all(arg)?,
        "$mod" => parse_mod(arg)?,
        "$not" => parse_not(arg)?,
        other => {
            // SRV expression_parser.cpp parseSub: "unknown operator: "
            return Err(bad(format!("unknown operator: {other}")));
        }
    }))
}

/// `$in` / `$nin` (`op`): values and regexes (no operator documents).
fn parse_in(op: &str, arg: &Bson) -> CmdResult<Pred> {
    let Bson::Array(a) = arg else {
        return Err(bad(format!("{op} needs an array")));
    };
    let mut vals = Vec::new();
    let mut res = Vec::new();
    for e in a {
        match e {
            Bson::RegularExpression(r) => res.push(Re::new(&r.pattern, &r.options)?),
            Bson::Document(x) if is_operator_doc(x) => return Err(bad("cannot nest $ under $in")),
            other => vals.push(other.clone()),
        }
    }
    let p = Pred::In(vals, res);
    Ok(if op == "$nin" { Pred::Not(vec![p]) } else { p })
}

/// `$type`: one type (alias or numeric code) or an array of them.
fn parse_type(arg: &Bson) -> CmdResult<Pred> {
    let items: Vec<&Bson> = match arg {
        Bson::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut sels = Vec::new();
    for t in items {
        sels.push(parse_type_sel(t)?);
    }
    Ok(Pred::Type(sels))
}

/// One `$type` selector: an alias such as `"number"` or a numeric type code.
fn parse_type_sel(t: &Bson) -> CmdResult<TypeSel> {
    Ok(match t {
        Bson::String(s) => {
            type_alias(s).ok_or_else(|| bad(format!("Unknown type name alias: {s}")))?
        }
        n if as_f64(n).is_some() => {
            let f = as_f64(n).unwrap_or(0.0);
            let c = f as i32;
            if f64::from(c) != f || type_alias_code_valid(c).is_none() {
                return Err(bad(format!(
                    "Invalid numerical type code: {}",
                    fmt::value(n)
                )));
            }
            TypeSel::Code(c)
        }
        other => {
            return Err(CommandError::type_mismatch(format!(
                "type must be represented as a number or a string, not {}",
                fmt::type_name(other)
            )))
        }
    })
}

/// `$regex` (a string or a regex) with the path's `$options`.
fn parse_regex(arg: &Bson, regex_opts: Option<&Bson>) -> CmdResult<Pred> {
    let opts = match regex_opts {
        None => String::new(),
        Some(Bson::String(s)) => s.clone(),
        Some(_) => return Err(bad("$options has to be a string")),
    };
    match arg {
        Bson::String(s) => Ok(Pred::Regex(Re::new(s, &opts)?)),
        Bson::RegularExpression(r) => {
            if !opts.is_empty() && !r.options.is_empty() {
                return Err(bad("options set in both $regex and $options"));
            }
            let o = if opts.is_empty() {
                r.options.clone()
            } else {
                opts
            };
            Ok(Pred::Regex(Re::new(&r.pattern, &o)?))
        }
        _ => Err(bad("$regex has to be a string")),
    }
}

/// `$size`: a non-negative integer.
fn parse_size(arg: &Bson) -> CmdResult<Pred> {
    let n = match arg {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        Bson::Double(f) if f.fract() == 0.0 => *f as i64,
        Bson::Double(_) | Bson::Decimal128(_) => {
            return Err(bad(format!(
                "Failed to parse $size. Expected an integer in: $size: {}",
                fmt::value(arg)
            )))
        }
        _ => {
            return Err(bad(format!(
                "Failed to parse $size. Expected a number in: $size: {}",
                fmt::value(arg)
            )))
        }
    };
    if n < 0 {
        return Err(bad(format!(
            "Failed to parse $size. Expected a non-negative number in: $size: {}",
            fmt::value(arg)
        )));
    }
    Ok(Pred::Size(n))
}

/// `$elemMatch`: the value form when every key is a non-logical operator (SRV
/// parseElemMatch), else the object form (a filter over embedded documents).
fn parse_elem_match(arg: &Bson) -> CmdResult<Pred> {
    let Bson::Document(inner) = arg else {
        return Err(bad("$elemMatch needs an Object"));
    };
    let value_form = !inner.is_empty()
        && inner.keys().all(|k| {
            k.starts_with('$')
                && !matches!(k.as_str(), "$and" | "$or" | "$nor" | "$expr" | "$where")
        });
    Ok(if value_form {
        match parse_ops(inner)? {
            Pred::And(ps) => Pred::ElemMatchVal(ps),
            p => Pred::ElemMatchVal(vec![p]),
        }
    } else {
        Pred::ElemMatchObj(Box::new(parse_doc(inner, false)?))
    })
}

/// `$all`: values, or `$elemMatch` documents (not both).
fn parse_all(arg: &Bson) -> CmdResult<Pred> {
    let Bson::Array(a) = arg else {
        return Err(bad("$all needs an array"));
    };
    let mut vals = Vec::new();
    let mut ems = Vec::new();
    for e in a {
        match e {
            Bson::Document(x) if x.keys().next().map(String::as_str) == Some("$elemMatch") => {
                ems.push(parse_path("", e)?);
            }
            Bson::Document(x) if is_operator_doc(x) => return Err(bad("no $ expressions in $all")),
            other => vals.push(other.clone()),
        }
    }
    if !ems.is_empty() && !vals.is_empty() {
        return Err(bad("$all/$elemMatch has to be consistent"));
    }
    Ok(Pred::All(vals, ems))
}

/// `$mod: [divisor, remainder]` (truncated to integers; the divisor not 0).
fn parse_mod(arg: &Bson) -> CmdResult<Pred> {
    let Bson::Array(a) = arg else {
        return Err(bad("malformed mod, needs to be an array"));
    };
    if a.len() < 2 {
        return Err(bad("malformed mod, not enough elements"));
    }
    if a.len() > 2 {
        return Err(bad("malformed mod, too many elements"));
    }
    let (Some(dv), Some(rv)) = (as_f64(&a[0]), as_f64(&a[1])) else {
        return Err(bad("malformed mod, divisor not a number"));
    };
    let dv = dv.trunc() as i64;
    if dv == 0 {
        return Err(bad("divisor cannot be 0"));
    }
    Ok(Pred::Mod(dv, rv.trunc() as i64))
}

/// `$not`: a regex or a non-empty operator document, negated.
fn parse_not(arg: &Bson) -> CmdResult<Pred> {
    match arg {
        Bson::RegularExpression(r) => Ok(Pred::Not(vec![Pred::Regex(Re::new(
            &r.pattern, &r.options,
        )?)])),
        Bson::Document(x) => {
            if x.is_empty() {
                return Err(bad("$not cannot be empty"));
            }
            if !is_operator_doc(x) {
                // SRV: "$not needs a regex or a document"? (document of operators)
                return Err(bad(format!(
                    "unknown operator: {}",
                    x.keys().next().map(String::as_str).unwrap_or("")
                )));
            }
            Ok(match parse_ops(x)? {
                Pred::And(ps) => Pred::Not(ps),
                p => Pred::Not(vec![p]),
            })
        }
        _ => Err(bad("$not needs a regex or a document")),
    }
}

fn type_alias_code_valid(c: i32) -> Option<()> {
    matches!(c, -1 | 1..=19 | 127).then_some(())
}

fn eval_node(n: &Node, doc: &Document, cx: Cx<'_>) -> bool {
    try_eval_node(n, doc, cx).unwrap_or(false)
}

/// Like [`eval_node`], but an `$expr` evaluation error is returned (the server fails the
/// whole query with it).
fn try_eval_node(n: &Node, doc: &Document, cx: Cx<'_>) -> CmdResult<bool> {
    Ok(match n {
        Node::And(ns) => {
            for c in ns {
                if !try_eval_node(c, doc, cx)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Or(ns) => {
            for c in ns {
                if try_eval_node(c, doc, cx)? {
                    return Ok(true);
                }
            }
            false
        }
        Node::Nor(ns) => {
            for c in ns {
                if try_eval_node(c, doc, cx)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Const(b) => *b,
        Node::Expr(e) => {
            let mut vars = Vars::new(cx.root);
            vars.user = cx.lets.to_vec();
            truthy(e.eval(&vars)?.as_ref())
        }
        Node::Path(path, pred) => path_matches(doc, path, pred, cx),
    })
}

/// A value reached by walking a path: `Missing`, a value, or an element of a leaf array.
#[derive(Debug, Clone, Copy)]
enum Cand<'a> {
    Missing,
    Val(&'a Bson),
    Elem(&'a Bson),
}

fn candidates<'a>(doc: &'a Document, path: &str) -> Vec<Cand<'a>> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    match doc.get(parts[0]) {
        Some(v) => walk(v, &parts[1..], &mut out),
        None => out.push(Cand::Missing),
    }
    out
}

fn walk<'a>(v: &'a Bson, rest: &[&str], out: &mut Vec<Cand<'a>>) {
    if rest.is_empty() {
        out.push(Cand::Val(v));
        if let Bson::Array(a) = v {
            out.extend(a.iter().map(Cand::Elem));
        }
        return;
    }
    match v {
        Bson::Document(d) => match d.get(rest[0]) {
            Some(c) => walk(c, &rest[1..], out),
            None => out.push(Cand::Missing),
        },
        Bson::Array(a) => {
            let before = out.len();
            if let Some(i) = array_index(rest[0]) {
                if let Some(c) = a.get(i) {
                    walk(c, &rest[1..], out);
                }
            }
            for e in a {
                if let Bson::Document(d) = e {
                    match d.get(rest[0]) {
                        Some(c) => walk(c, &rest[1..], out),
                        None => out.push(Cand::Missing),
                    }
                }
            }
            if out.len() == before {
                // nothing reachable: the path is missing (so `null` and `$exists: false`
                // match, e.g. `{"a.0": {$exists: false}}` on `{a: []}`)
                out.push(Cand::Missing);
            }
        }
        _ => out.push(Cand::Missing),
    }
}

fn path_matches(doc: &Document, path: &str, pred: &Pred, cx: Cx<'_>) -> bool {
    if path.is_empty() {
        // `$all` with `$elemMatch` entries: the "" path is the array itself.
        return false;
    }
    let cands = candidates(doc, path);
    pred_matches(&cands, pred, cx)
}

fn eq_value(c: Cand<'_>, v: &Bson, coll: Option<&Collation>) -> bool {
    match c {
        Cand::Missing => matches!(v, Bson::Null),
        Cand::Val(x) | Cand::Elem(x) => {
            if matches!(v, Bson::Null) {
                matches!(x, Bson::Null | Bson::Undefined)
            } else {
                cmp_coll(x, v, coll) == Ordering::Equal
            }
        }
    }
}

fn pred_matches(cands: &[Cand<'_>], pred: &Pred, cx: Cx<'_>) -> bool {
    match pred {
        Pred::Eq(v) => cands.iter().any(|c| eq_value(*c, v, cx.coll)),
        Pred::Cmp(dir, or_eq, v) => cands.iter().any(|c| match c {
            Cand::Missing => *or_eq && matches!(v, Bson::Null),
            Cand::Val(x) | Cand::Elem(x) => {
                // $gt/$lt MinKey/MaxKey compare across all types.
                let bracket = canonical_type(x) == canonical_type(v)
                    || matches!(v, Bson::MinKey | Bson::MaxKey);
                if !bracket {
                    return false;
                }
                let o = cmp_coll(x, v, cx.coll);
                o == *dir || (*or_eq && o == Ordering::Equal)
            }
        }),
        Pred::In(vals, res) => cands.iter().any(|c| {
            vals.iter().any(|v| eq_value(*c, v, cx.coll))
                || match c {
                    Cand::Val(x) | Cand::Elem(x) => res.iter().any(|r| r.matches(x)),
                    Cand::Missing => false,
                }
        }),
        Pred::Exists(want) => {
            let exists = cands.iter().any(|c| matches!(c, Cand::Val(_)));
            exists == *want
        }
        Pred::Type(sels) => cands.iter().any(|c| match c {
            Cand::Missing => false,
            Cand::Val(x) | Cand::Elem(x) => sels.iter().any(|s| match s {
                TypeSel::Number => matches!(
                    x,
                    Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_)
                ),
                TypeSel::Code(code) => type_code(x) == *code,
            }),
        }),
        Pred::Regex(r) => cands.iter().any(|c| match c {
            Cand::Val(x) | Cand::Elem(x) => r.matches(x),
            Cand::Missing => false,
        }),
        Pred::Size(n) => cands.iter().any(|c| match c {
            Cand::Val(Bson::Array(a)) => a.len() as i64 == *n,
            _ => false,
        }),
        Pred::ElemMatchObj(node) => cands.iter().any(|c| match c {
            Cand::Val(Bson::Array(a)) => a.iter().any(|e| match e {
                Bson::Document(d) => eval_node(node, d, cx),
                _ => false,
            }),
            _ => false,
        }),
        Pred::ElemMatchVal(ps) => cands.iter().any(|c| match c {
            Cand::Val(Bson::Array(a)) => a.iter().any(|e| {
                let one = [Cand::Val(e)];
                // element-level predicates see the element itself (and, for arrays,
                // its members) as in the server's ElemMatchValue.
                let mut with_elems: Vec<Cand<'_>> = one.to_vec();
                if let Bson::Array(inner) = e {
                    with_elems.extend(inner.iter().map(Cand::Elem));
                }
                ps.iter().all(|p| pred_matches(&with_elems, p, cx))
            }),
            _ => false,
        }),
        Pred::All(vals, ems) => {
            if vals.is_empty() && ems.is_empty() {
                return false;
            }
            vals.iter().all(|v| match v {
                Bson::RegularExpression(r) => Re::new(&r.pattern, &r.options)
                    .map(|re| pred_matches(cands, &Pred::Regex(re), cx))
                    .unwrap_or(false),
                _ => cands.iter().any(|c| eq_value(*c, v, cx.coll)),
            }) && ems.iter().all(|n| match n {
                Node::Path(_, p) => pred_matches(cands, p, cx),
                _ => false,
            })
        }
        Pred::Mod(d, r) => cands.iter().any(|c| match c {
            Cand::Val(x) | Cand::Elem(x) => match as_f64(x) {
                Some(f) if f.is_finite() => {
                    let i = match x {
                        Bson::Int64(i) => *i,
                        _ => f.trunc() as i64,
                    };
                    i.wrapping_rem(*d) == *r
                }
                _ => false,
            },
            Cand::Missing => false,
        }),
        Pred::Not(ps) => !ps.iter().all(|p| pred_matches(cands, p, cx)),
        Pred::And(ps) => ps.iter().all(|p| pred_matches(cands, p, cx)),
    }
}

#[cfg(test)]
mod tests;
