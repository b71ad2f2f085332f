//! Matching of expected values against actual values (unified test format, "Evaluating Matches").

use std::collections::HashMap;

use bson::{Bson, Document};

/// What the matcher needs to resolve `$$matchesEntity` and `$$sessionLsid`.
pub trait EntityLookup {
    /// A BSON entity saved with `saveResultAsEntity`.
    fn bson_entity(&self, id: &str) -> Option<Bson>;
    /// The logical session id of a session entity.
    fn session_lsid(&self, id: &str) -> Option<Document>;
}

impl EntityLookup for HashMap<String, Bson> {
    fn bson_entity(&self, id: &str) -> Option<Bson> {
        self.get(id).cloned()
    }
    fn session_lsid(&self, _id: &str) -> Option<Document> {
        None
    }
}

/// Matches `expected` against `actual` (`None` = the key is absent). `root` permits extra
/// fields in `actual` at the top level. Returns a description of the first mismatch.
pub fn matches(
    expected: &Bson,
    actual: Option<&Bson>,
    root: bool,
    ents: &dyn EntityLookup,
) -> Result<(), String> {
    match_at(expected, actual, root, ents, "")
}

/// Whether `d` is a special operator document (one key starting with `$$`).
fn special_op(d: &Document) -> Option<(&str, &Bson)> {
    if d.len() == 1 {
        let (k, v) = d.iter().next()?;
        if k.starts_with("$$") {
            return Some((k.as_str(), v));
        }
    }
    None
}

fn show(b: Option<&Bson>) -> String {
    match b {
        None => "<absent>".to_string(),
        Some(b) => {
            let s = format!("{b}");
            if s.len() > 400 {
                format!(
                    "{}…",
                    &s[..s.char_indices().nth(400).map_or(s.len(), |(i, _)| i)]
                )
            } else {
                s
            }
        }
    }
}

fn match_at(
    expected: &Bson,
    actual: Option<&Bson>,
    root: bool,
    ents: &dyn EntityLookup,
    path: &str,
) -> Result<(), String> {
    let at = if path.is_empty() { "<root>" } else { path };
    if let Bson::Document(ed) = expected {
        if let Some((op, arg)) = special_op(ed) {
            return special(op, arg, actual, root, ents, path);
        }
        let ad = match actual {
            Some(Bson::Document(ad)) => ad,
            other => {
                return Err(format!(
                    "{at}: expected a document {expected}, got {}",
                    show(other)
                ))
            }
        };
        for (k, ev) in ed {
            let sub = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            let av = ad.get(k);
            if let Bson::Document(evd) = ev {
                if let Some((op, arg)) = special_op(evd) {
                    special(op, arg, av, false, ents, &sub)?;
                    continue;
                }
            }
            if av.is_none() {
                return Err(format!(
                    "{sub}: expected {ev}, key absent in {}",
                    show(actual)
                ));
            }
            match_at(ev, av, false, ents, &sub)?;
        }
        if !root {
            for k in ad.keys() {
                if !ed.contains_key(k) {
                    return Err(format!(
                        "{at}: unexpected extra key `{k}` in {}",
                        show(actual)
                    ));
                }
            }
        }
        return Ok(());
    }
    if let Bson::Array(ea) = expected {
        let aa = match actual {
            Some(Bson::Array(aa)) => aa,
            other => {
                return Err(format!(
                    "{at}: expected an array {expected}, got {}",
                    show(other)
                ))
            }
        };
        if aa.len() != ea.len() {
            return Err(format!(
                "{at}: expected {} elements {expected}, got {} {}",
                ea.len(),
                aa.len(),
                show(actual)
            ));
        }
        // Elements of an iterable result (`root` array) are root-level documents.
        for (i, (e, a)) in ea.iter().zip(aa).enumerate() {
            match_at(e, Some(a), root, ents, &format!("{path}[{i}]"))?;
        }
        return Ok(());
    }
    let Some(a) = actual else {
        return Err(format!("{at}: expected {expected}, value absent"));
    };
    if scalar_eq(expected, a) {
        Ok(())
    } else {
        Err(format!(
            "{at}: expected {expected} ({:?}), got {a} ({:?})",
            expected.element_type(),
            a.element_type()
        ))
    }
}

/// Numeric value of int32/int64/double.
pub fn as_f64(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(*i as f64),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

fn scalar_eq(e: &Bson, a: &Bson) -> bool {
    match (e, a) {
        (Bson::Int32(x), Bson::Int64(y)) | (Bson::Int64(y), Bson::Int32(x)) => *x as i64 == *y,
        (Bson::Double(_), Bson::Int32(_) | Bson::Int64(_))
        | (Bson::Int32(_) | Bson::Int64(_), Bson::Double(_)) => as_f64(e) == as_f64(a),
        (Bson::Double(x), Bson::Double(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => exact_eq(e, a),
    }
}

/// Exact equality that ignores key order in documents (used for `outcome` and nested
/// documents of types such as CodeWithScope).
pub fn exact_eq(e: &Bson, a: &Bson) -> bool {
    match (e, a) {
        (Bson::Document(x), Bson::Document(y)) => doc_exact_eq(x, y),
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| exact_eq(p, q))
        }
        (Bson::Double(x), Bson::Double(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => {
            x.code == y.code && doc_exact_eq(&x.scope, &y.scope)
        }
        _ => e == a,
    }
}

/// Key-order-insensitive exact document equality.
pub fn doc_exact_eq(x: &Document, y: &Document) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| exact_eq(v, w)))
}

fn type_name(b: &Bson) -> &'static str {
    match b {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

fn type_matches(name: &str, a: &Bson) -> bool {
    let t = type_name(a);
    name == t
        || (name == "number" && matches!(t, "int" | "long" | "double" | "decimal"))
        || (name == "boolean" && t == "bool")
}

/// Evaluates a special operator (`$$exists`, `$$type`, ...) against `actual`.
fn special(
    op: &str,
    arg: &Bson,
    actual: Option<&Bson>,
    root: bool,
    ents: &dyn EntityLookup,
    path: &str,
) -> Result<(), String> {
    let at = if path.is_empty() { "<root>" } else { path };
    match op {
        "$$exists" => exists(arg, actual, at),
        "$$type" => has_type(arg, actual, at),
        "$$unsetOrMatches" => match actual {
            None => Ok(()),
            Some(_) => match_at(arg, actual, root, ents, path),
        },
        "$$matchesEntity" => {
            let id = arg
                .as_str()
                .ok_or_else(|| format!("{at}: malformed $$matchesEntity"))?;
            let e = ents
                .bson_entity(id)
                .ok_or_else(|| format!("{at}: no BSON entity `{id}`"))?;
            match_at(&e, actual, root, ents, path)
        }
        "$$matchesHexBytes" => matches_hex_bytes(arg, actual, at),
        "$$sessionLsid" => session_lsid(arg, actual, ents, at),
        "$$lte" => lte(arg, actual, at),
        "$$matchAsDocument" => match_as_document(arg, actual, ents, path, at),
        "$$matchAsRoot" => match_at(arg, actual, true, ents, path),
        other => Err(format!("{at}: unsupported special operator {other}")),
    }
}

/// `$$exists`: the key is present (or absent).
fn exists(arg: &Bson, actual: Option<&Bson>, at: &str) -> Result<(), String> {
    let want = arg
        .as_bool()
        .ok_or_else(|| format!("{at}: $$exists needs a bool"))?;
    if want == actual.is_some() {
        Ok(())
    } else if want {
        Err(format!("{at}: expected to exist, absent"))
    } else {
        Err(format!("{at}: expected to be absent, got {}", show(actual)))
    }
}

/// `$$type`: the value has the type (or one of the types) named.
fn has_type(arg: &Bson, actual: Option<&Bson>, at: &str) -> Result<(), String> {
    let Some(a) = actual else {
        return Err(format!("{at}: expected $$type {arg}, value absent"));
    };
    let ok = match arg {
        Bson::String(s) => type_matches(s, a),
        Bson::Array(v) => v
            .iter()
            .any(|t| t.as_str().is_some_and(|s| type_matches(s, a))),
        _ => return Err(format!("{at}: malformed $$type {arg}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{at}: expected type {arg}, got {} ({a})",
            type_name(a)
        ))
    }
}

/// `$$matchesHexBytes`: binary data (or a string) with these bytes.
fn matches_hex_bytes(arg: &Bson, actual: Option<&Bson>, at: &str) -> Result<(), String> {
    let hex = arg
        .as_str()
        .ok_or_else(|| format!("{at}: malformed $$matchesHexBytes"))?;
    let want = decode_hex(hex).ok_or_else(|| format!("{at}: malformed hex {hex}"))?;
    let got: Option<Vec<u8>> = match actual {
        Some(Bson::Binary(b)) => Some(b.bytes.clone()),
        Some(Bson::String(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    };
    if got.as_deref() == Some(&want[..]) {
        Ok(())
    } else {
        Err(format!("{at}: expected bytes {hex}, got {}", show(actual)))
    }
}

/// `$$sessionLsid`: the logical session id of a session entity.
fn session_lsid(
    arg: &Bson,
    actual: Option<&Bson>,
    ents: &dyn EntityLookup,
    at: &str,
) -> Result<(), String> {
    let id = arg
        .as_str()
        .ok_or_else(|| format!("{at}: malformed $$sessionLsid"))?;
    let lsid = ents
        .session_lsid(id)
        .ok_or_else(|| format!("{at}: no session entity `{id}`"))?;
    match actual {
        Some(Bson::Document(d)) if doc_exact_eq(d, &lsid) => Ok(()),
        other => Err(format!(
            "{at}: expected lsid of {id} {lsid}, got {}",
            show(other)
        )),
    }
}

/// `$$lte`: a number at most `arg`.
fn lte(arg: &Bson, actual: Option<&Bson>, at: &str) -> Result<(), String> {
    let (Some(e), Some(a)) = (as_f64(arg), actual.and_then(as_f64)) else {
        return Err(format!(
            "{at}: $$lte {arg} needs numbers, got {}",
            show(actual)
        ));
    };
    if a <= e {
        Ok(())
    } else {
        Err(format!("{at}: expected <= {arg}, got {}", show(actual)))
    }
}

/// `$$matchAsDocument`: a string of extended JSON whose document matches `arg`.
fn match_as_document(
    arg: &Bson,
    actual: Option<&Bson>,
    ents: &dyn EntityLookup,
    path: &str,
    at: &str,
) -> Result<(), String> {
    let Some(Bson::String(s)) = actual else {
        return Err(format!(
            "{at}: $$matchAsDocument needs a string, got {}",
            show(actual)
        ));
    };
    let json: serde_json::Value =
        serde_json::from_str(s).map_err(|e| format!("{at}: not JSON: {e}"))?;
    let parsed = Bson::try_from(json).map_err(|e| format!("{at}: not extended JSON: {e}"))?;
    match_at(arg, Some(&parsed), false, ents, path)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
