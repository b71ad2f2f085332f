//! Projections (`find`'s `projection`, `$project`, `$unset`)
//! (SRV `src/mongo/db/query/projection_parser.cpp`, `projection_executor`).
//!
//! Inclusion keeps the listed paths (in document order; computed fields follow), exclusion
//! drops them; `_id` is included unless excluded explicitly. Paths descend through arrays of
//! documents. `$slice`, `$elemMatch` and positional `a.$` work in find projections.

use bson::{Bson, Document};

use super::compare::as_f64;
use super::expr::{Expr, Vars};
use super::matcher::Matcher;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

#[derive(Debug, Clone)]
enum PNode {
    Include,
    Exclude,
    Sub(Vec<(String, PNode)>),
    Expr(Expr),
    Slice(i64, Option<i64>),
    ElemMatch(Matcher),
    Positional,
}

/// A parsed projection.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Vec<(String, PNode)>,
    inclusion: bool,
    include_id: bool,
}

fn is_true(v: &Bson) -> Option<bool> {
    match v {
        Bson::Boolean(b) => Some(*b),
        n => as_f64(n).map(|f| f != 0.0),
    }
}

fn insert_path(
    tree: &mut Vec<(String, PNode)>,
    parts: &[&str],
    node: PNode,
    full: &str,
) -> CmdResult<()> {
    let head = parts[0];
    if parts.len() == 1 {
        if tree.iter().any(|(k, _)| k == head) {
            // SRV projection_parser.cpp: 31250 path collision
            return Err(CommandError::from_code(
                ErrorCode::ProjectionPathCollision,
                format!("Path collision at {full}"),
            ));
        }
        tree.push((head.to_string(), node));
        return Ok(());
    }
    match tree.iter_mut().find(|(k, _)| k == head) {
        Some((_, PNode::Sub(sub))) => insert_path(sub, &parts[1..], node, full),
        Some(_) => Err(CommandError::from_code(
            ErrorCode::ProjectionPathCollisionRemaining,
            format!(
                "Path collision at {full} remaining portion {}",
                parts[1..].join(".")
            ),
        )),
        None => {
            let mut sub = Vec::new();
            insert_path(&mut sub, &parts[1..], node, full)?;
            tree.push((head.to_string(), PNode::Sub(sub)));
            Ok(())
        }
    }
}

/// Whether a projection being parsed includes (`Some(true)`) or excludes; `None` until a
/// field decides.
struct Mode(Option<bool>);

impl Mode {
    /// Records that `field` includes (`incl`) or excludes; mixing both is an error.
    fn set(&mut self, incl: bool, field: &str) -> CmdResult<()> {
        match self.0 {
            Some(m) if m != incl => {
                // SRV projection_parser.cpp: 31253 / 31254
                if m {
                    Err(CommandError::from_code(
                        ErrorCode::ExclusionInInclusionProjection,
                        format!("Cannot do exclusion on field {field} in inclusion projection"),
                    ))
                } else {
                    Err(CommandError::from_code(
                        ErrorCode::InclusionInExclusionProjection,
                        format!("Cannot do inclusion on field {field} in exclusion projection"),
                    ))
                }
            }
            _ => {
                self.0 = Some(incl);
                Ok(())
            }
        }
    }
}

/// The components of projection key `k` and whether it ends with the positional `.$`.
fn projection_path(k: &str) -> CmdResult<(Vec<&str>, bool)> {
    if k.starts_with('$') {
        // SRV projection_parser.cpp: FieldPath validation
        return Err(CommandError::from_code(
            ErrorCode::FieldPathDollarPrefix,
            "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
        ));
    }
    let (path, positional) = match k.strip_suffix(".$") {
        Some(p) => (p, true),
        None => (k, false),
    };
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(CommandError::from_code(
            ErrorCode::FieldPathEmptyComponent,
            "FieldPath field names may not be empty strings.",
        ));
    }
    Ok((parts, positional))
}

/// The node for a (non-positional) projection field `k: v`.
fn parse_value(k: &str, v: &Bson, mode: &mut Mode, include_id: &mut bool) -> CmdResult<PNode> {
    Ok(match v {
        Bson::Document(d) if d.keys().next().is_some_and(|f| f.starts_with('$')) => {
            parse_operator(k, d, v, mode)?
        }
        Bson::Document(d) => {
            if d.is_empty() {
                return Err(CommandError::from_code(
                    ErrorCode::EmptySubProjection,
                    format!("An empty sub-projection is not a valid value. Found empty object at path {k}"),
                ));
            }
            let sub = Projection::parse(d)?;
            if k != "_id" {
                mode.set(sub.inclusion, k)?;
            }
            PNode::Sub(sub.root)
        }
        b if is_true(b).is_some() => {
            let incl = is_true(b).unwrap_or(false);
            if k == "_id" {
                *include_id = incl;
            } else {
                mode.set(incl, k)?;
            }
            if incl {
                PNode::Include
            } else {
                PNode::Exclude
            }
        }
        other => {
            mode.set(true, k)?;
            PNode::Expr(Expr::parse(other)?)
        }
    })
}

/// `k: {$slice: ..}`, `k: {$elemMatch: ..}` or an expression `k: {$op: ..}` (`v` is `d`).
fn parse_operator(k: &str, d: &Document, v: &Bson, mode: &mut Mode) -> CmdResult<PNode> {
    let op = d.keys().next().map(String::as_str).unwrap_or("");
    Ok(match op {
        "$slice" => parse_slice(d.get("$slice").unwrap_or(&Bson::Null))?,
        "$elemMatch" => match d.get("$elemMatch") {
            Some(Bson::Document(q)) => {
                mode.set(true, k).ok();
                PNode::ElemMatch(Matcher::parse(q)?)
            }
            _ => {
                return Err(CommandError::bad_value(
                    "elemMatch: Invalid argument, object required.",
                ))
            }
        },
        _ => {
            mode.set(true, k)?;
            PNode::Expr(Expr::parse(v)?)
        }
    })
}

/// `$slice: n` or `$slice: [skip, limit]` (limit positive).
fn parse_slice(arg: &Bson) -> CmdResult<PNode> {
    match arg {
        Bson::Array(a) if a.len() == 2 => {
            let (Some(s), Some(l)) = (as_f64(&a[0]), as_f64(&a[1])) else {
                return Err(CommandError::from_code(
                    ErrorCode::SliceInvalidArgument,
                    "First argument to $slice must be an array",
                ));
            };
            if l <= 0.0 {
                return Err(CommandError::from_code(
                    ErrorCode::SliceInvalidArgument,
                    format!("Invalid $slice syntax. The limit must be positive: {}", l),
                ));
            }
            Ok(PNode::Slice(s as i64, Some(l as i64)))
        }
        n if as_f64(n).is_some() => Ok(PNode::Slice(as_f64(n).unwrap_or(0.0) as i64, None)),
        _ => Err(CommandError::from_code(
            ErrorCode::SliceWrongArgCount,
            "Invalid $slice syntax. Must be a number or an array of two numbers",
        )),
    }
}

impl Projection {
    /// Parses a projection document.
    pub fn parse(spec: &Document) -> CmdResult<Projection> {
        let mut root = Vec::new();
        let mut mode = Mode(None);
        let mut include_id = true;
        for (k, v) in spec {
            let (parts, positional) = projection_path(k)?;
            let node = if positional {
                mode.set(true, k)?;
                PNode::Positional
            } else {
                parse_value(k, v, &mut mode, &mut include_id)?
            };
            insert_path(&mut root, &parts, node, k)?;
        }
        let inclusion = match mode.0 {
            Some(m) => m,
            // only _id (or only $slice/$elemMatch): `{_id: 1}` includes, otherwise exclusion
            None => spec.get("_id").and_then(is_true) == Some(true) && spec.len() == 1,
        };
        Ok(Projection {
            root,
            inclusion,
            include_id,
        })
    }

    /// Whether this is an inclusion projection.
    pub fn is_inclusion(&self) -> bool {
        self.inclusion
    }

    /// Applies the projection.
    pub fn apply(&self, doc: &Document) -> CmdResult<Document> {
        self.apply_with_query(doc, None)
    }

    /// Applies the projection; `query` resolves the positional `a.$` form.
    pub fn apply_with_query(&self, doc: &Document, query: Option<&Matcher>) -> CmdResult<Document> {
        self.apply_vars(&Vars::new(doc), query)
    }

    /// Applies the projection to `vars.root` with the given variables (`$$NOW`, `let`).
    pub fn apply_vars(&self, vars: &Vars<'_>, query: Option<&Matcher>) -> CmdResult<Document> {
        let doc = vars.root;
        if self.inclusion {
            let mut out = include(doc, &self.root, vars, query, "", true, self.include_id)?;
            // computed fields appended in spec order
            add_computed(&mut out, &self.root, vars)?;
            Ok(out)
        } else {
            exclude(doc, &self.root, query, "")
        }
    }
}

fn add_computed(out: &mut Document, tree: &[(String, PNode)], vars: &Vars<'_>) -> CmdResult<()> {
    for (k, n) in tree {
        match n {
            PNode::Expr(e) => {
                if let Some(v) = e.eval(vars)? {
                    out.insert(k.clone(), v);
                }
            }
            PNode::Sub(sub) if sub.iter().any(|(_, c)| has_expr(c)) => {
                let mut inner = match out.get(k) {
                    Some(Bson::Document(d)) => d.clone(),
                    _ => Document::new(),
                };
                add_computed(&mut inner, sub, vars)?;
                out.insert(k.clone(), inner);
            }
            _ => {}
        }
    }
    Ok(())
}

fn has_expr(n: &PNode) -> bool {
    match n {
        PNode::Expr(_) => true,
        PNode::Sub(s) => s.iter().any(|(_, c)| has_expr(c)),
        _ => false,
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

fn include(
    doc: &Document,
    tree: &[(String, PNode)],
    vars: &Vars<'_>,
    query: Option<&Matcher>,
    prefix: &str,
    top: bool,
    include_id: bool,
) -> CmdResult<Document> {
    let mut out = Document::new();
    for (k, v) in doc {
        let node = tree.iter().find(|(n, _)| n == k).map(|(_, n)| n);
        match node {
            None => {
                if top && k == "_id" && include_id {
                    out.insert(k.clone(), v.clone());
                }
            }
            Some(PNode::Include) => {
                out.insert(k.clone(), v.clone());
            }
            Some(PNode::Exclude) | Some(PNode::Expr(_)) => {}
            Some(PNode::Sub(sub)) => {
                if let Some(x) = include_value(v, sub, vars, query, &join(prefix, k))? {
                    out.insert(k.clone(), x);
                }
            }
            Some(PNode::Slice(s, l)) => {
                out.insert(k.clone(), slice(v, *s, *l));
            }
            Some(PNode::ElemMatch(m)) => {
                if let Some(x) = elem_match(v, m) {
                    out.insert(k.clone(), x);
                }
            }
            Some(PNode::Positional) => {
                if let Some(x) = positional(doc, v, query, &join(prefix, k))? {
                    out.insert(k.clone(), x);
                }
            }
        }
    }
    Ok(out)
}

fn include_value(
    v: &Bson,
    sub: &[(String, PNode)],
    vars: &Vars<'_>,
    query: Option<&Matcher>,
    prefix: &str,
) -> CmdResult<Option<Bson>> {
    Ok(match v {
        Bson::Document(d) => Some(Bson::Document(include(
            d, sub, vars, query, prefix, false, false,
        )?)),
        Bson::Array(a) => {
            let mut out = Vec::new();
            for e in a {
                if let Some(x) = include_value(e, sub, vars, query, prefix)? {
                    out.push(x);
                }
            }
            Some(Bson::Array(out))
        }
        _ => None,
    })
}

fn exclude(
    doc: &Document,
    tree: &[(String, PNode)],
    query: Option<&Matcher>,
    prefix: &str,
) -> CmdResult<Document> {
    let mut out = Document::new();
    for (k, v) in doc {
        match tree.iter().find(|(n, _)| n == k).map(|(_, n)| n) {
            Some(PNode::Exclude) => {}
            Some(PNode::Sub(sub)) => {
                out.insert(k.clone(), exclude_value(v, sub, query, &join(prefix, k))?);
            }
            Some(PNode::Slice(s, l)) => {
                out.insert(k.clone(), slice(v, *s, *l));
            }
            Some(PNode::ElemMatch(m)) => {
                if let Some(x) = elem_match(v, m) {
                    out.insert(k.clone(), x);
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

fn exclude_value(
    v: &Bson,
    sub: &[(String, PNode)],
    query: Option<&Matcher>,
    prefix: &str,
) -> CmdResult<Bson> {
    Ok(match v {
        Bson::Document(d) => Bson::Document(exclude(d, sub, query, prefix)?),
        Bson::Array(a) => Bson::Array(
            a.iter()
                .map(|e| exclude_value(e, sub, query, prefix))
                .collect::<CmdResult<_>>()?,
        ),
        other => other.clone(),
    })
}

/// `$slice` (SRV projection_executor_utils.cpp `applySliceProjection`).
fn slice(v: &Bson, skip: i64, limit: Option<i64>) -> Bson {
    let Bson::Array(a) = v else {
        return v.clone();
    };
    let n = a.len() as i64;
    let (start, count) = match limit {
        None => {
            if skip >= 0 {
                (0, skip.min(n))
            } else {
                (n.saturating_add(skip).max(0), skip.saturating_neg().min(n))
            }
        }
        Some(l) => {
            let start = if skip >= 0 {
                skip.min(n)
            } else {
                n.saturating_add(skip).max(0)
            };
            (start, l.min(n - start))
        }
    };
    Bson::Array(a[start as usize..(start + count) as usize].to_vec())
}

fn elem_match(v: &Bson, m: &Matcher) -> Option<Bson> {
    let Bson::Array(a) = v else { return None };
    a.iter()
        .find(|e| match e {
            Bson::Document(d) => m.matches(d),
            _ => false,
        })
        .map(|e| Bson::Array(vec![e.clone()]))
}

fn positional(
    doc: &Document,
    v: &Bson,
    query: Option<&Matcher>,
    path: &str,
) -> CmdResult<Option<Bson>> {
    let Bson::Array(a) = v else {
        return Ok(Some(v.clone()));
    };
    let idx = query.and_then(|q| q.matched_array_index(doc, path));
    match idx {
        Some(i) => Ok(a.get(i).map(|e| Bson::Array(vec![e.clone()]))),
        // SRV projection_executor_utils.cpp: 51246
        None => Err(CommandError::from_code(
            ErrorCode::PositionalProjectionNoMatch,
            "Executor error during find command :: caused by :: positional operator '.$' couldn't find a matching element in the array",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn p(spec: Document, d: Document) -> Document {
        Projection::parse(&spec).unwrap().apply(&d).unwrap()
    }

    #[test]
    fn inclusion_keeps_id_and_document_order() {
        let d = doc! {"_id": 1, "a": 1, "b": {"c": 1, "d": 2}, "e": 3};
        assert_eq!(
            p(doc! {"e": 1, "a": 1}, d.clone()),
            doc! {"_id": 1, "a": 1, "e": 3}
        );
        assert_eq!(
            p(doc! {"b.d": 1, "_id": 0}, d.clone()),
            doc! {"b": {"d": 2}}
        );
        assert_eq!(
            p(doc! {"b": {"c": 1}}, d.clone()),
            doc! {"_id": 1, "b": {"c": 1}}
        );
        assert_eq!(p(doc! {"_id": 1}, d), doc! {"_id": 1});
    }

    #[test]
    fn exclusion() {
        let d = doc! {"_id": 1, "a": 1, "b": {"c": 1, "d": 2}, "arr": [{"x": 1, "y": 2}, 5]};
        assert_eq!(
            p(doc! {"a": 0, "b.c": 0, "arr.x": 0}, d.clone()),
            doc! {"_id": 1, "b": {"d": 2}, "arr": [{"y": 2}, 5]}
        );
        assert_eq!(
            p(doc! {"_id": 0}, d.clone()),
            doc! {"a": 1, "b": {"c": 1, "d": 2}, "arr": [{"x": 1, "y": 2}, 5]}
        );
    }

    #[test]
    fn through_arrays_and_computed() {
        let d = doc! {"_id": 1, "arr": [{"x": 1, "y": 2}, 5, {"y": 3}], "n": 2};
        assert_eq!(
            p(doc! {"arr.y": 1}, d.clone()),
            doc! {"_id": 1, "arr": [{"y": 2}, {"y": 3}]}
        );
        assert_eq!(
            p(doc! {"n": 1, "twice": {"$multiply": ["$n", 2]}}, d.clone()),
            doc! {"_id": 1, "n": 2, "twice": 4}
        );
        assert_eq!(p(doc! {"lit": "x"}, d), doc! {"_id": 1, "lit": "x"});
    }

    #[test]
    fn slice_and_elem_match() {
        let d = doc! {"_id": 1, "a": [1, 2, 3, 4], "o": [{"k": 1}, {"k": 2}]};
        assert_eq!(
            p(doc! {"a": {"$slice": 2}}, d.clone()),
            doc! {"_id": 1, "a": [1, 2], "o": [{"k": 1}, {"k": 2}]}
        );
        assert_eq!(
            p(doc! {"a": {"$slice": -1}, "o": 0}, d.clone()),
            doc! {"_id": 1, "a": [4]}
        );
        assert_eq!(
            p(doc! {"a": {"$slice": [1, 2]}, "o": 0}, d.clone()),
            doc! {"_id": 1, "a": [2, 3]}
        );
        assert_eq!(
            p(doc! {"o": {"$elemMatch": {"k": 2}}}, d),
            doc! {"_id": 1, "o": [{"k": 2}]}
        );
    }

    #[test]
    fn positional_projection() {
        let d = doc! {"_id": 1, "a": [1, 7, 9]};
        let q = Matcher::parse(&doc! {"a": {"$gt": 5}}).unwrap();
        let pr = Projection::parse(&doc! {"a.$": 1}).unwrap();
        assert_eq!(
            pr.apply_with_query(&d, Some(&q)).unwrap(),
            doc! {"_id": 1, "a": [7]}
        );
    }

    #[test]
    fn mixing_is_an_error() {
        let e = Projection::parse(&doc! {"a": 1, "b": 0}).unwrap_err();
        assert_eq!(
            (e.code, e.errmsg.as_str()),
            (
                31254,
                "Cannot do exclusion on field b in inclusion projection"
            )
        );
        let e = Projection::parse(&doc! {"a": 0, "b": 1}).unwrap_err();
        assert_eq!(
            (e.code, e.errmsg.as_str()),
            (
                31253,
                "Cannot do inclusion on field b in exclusion projection"
            )
        );
        assert_eq!(
            Projection::parse(&doc! {"a": 1, "a.b": 1})
                .unwrap_err()
                .code,
            31249
        );
    }
}
