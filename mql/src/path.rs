//! Dotted paths (`a.b.0.c`) over documents.
//!
//! Two flavours, as in the server:
//! - strict lookup/set/unset (`get_path`, `set_path`, `unset_path`): numeric components index
//!   arrays, nothing fans out (SRV `mutablebson` path walking in `update/path_support.cpp`);
//! - fan-out lookup (`collect_values`): non-numeric components traverse array elements, as
//!   sort keys and `$group`/`distinct` see them (SRV `dotted_path_support::extractAllElementsAlongPath`).

use bson::{Bson, Document};

use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// Splits a dotted path into its components.
pub fn split(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

/// Array index of a path component: only plain decimal digits (no sign, no leading zeros
/// except "0" itself), as `FieldRef` / `isNumericPathComponentStrict` accept.
pub fn array_index(part: &str) -> Option<usize> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if part.len() > 1 && part.starts_with('0') {
        return None;
    }
    part.parse().ok()
}

/// Strict lookup: documents by field name, arrays by numeric component; `None` when missing.
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = doc.get(first)?;
    for p in parts {
        cur = child(cur, p)?;
    }
    Some(cur)
}

/// Child of a value by one path component (strict).
pub fn child<'a>(v: &'a Bson, part: &str) -> Option<&'a Bson> {
    match v {
        Bson::Document(d) => d.get(part),
        Bson::Array(a) => array_index(part).and_then(|i| a.get(i)),
        _ => None,
    }
}

/// Fan-out lookup: every value reachable at `path`, descending into array elements for
/// non-numeric components. With `expand_leaf_arrays`, a leaf array contributes its elements
/// (sort keys); otherwise the array itself.
pub fn collect_values<'a>(
    doc: &'a Document,
    path: &str,
    expand_leaf_arrays: bool,
) -> Vec<&'a Bson> {
    let parts = split(path);
    let mut out = Vec::new();
    if let Some(v) = doc.get(parts[0]) {
        collect_from(v, &parts[1..], expand_leaf_arrays, &mut out);
    }
    out
}

fn collect_from<'a>(v: &'a Bson, rest: &[&str], expand: bool, out: &mut Vec<&'a Bson>) {
    if rest.is_empty() {
        match v {
            Bson::Array(a) if expand => out.extend(a.iter()),
            _ => out.push(v),
        }
        return;
    }
    match v {
        Bson::Document(d) => {
            if let Some(c) = d.get(rest[0]) {
                collect_from(c, &rest[1..], expand, out);
            }
        }
        Bson::Array(a) => {
            if let Some(i) = array_index(rest[0]) {
                if let Some(c) = a.get(i) {
                    collect_from(c, &rest[1..], expand, out);
                }
            } else {
                for e in a {
                    if let Bson::Document(d) = e {
                        if let Some(c) = d.get(rest[0]) {
                            collect_from(c, &rest[1..], expand, out);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Strict set: creates missing embedded documents, numeric components index into existing
/// arrays (padding with `null`). Traversing a scalar fails with 28 PathNotViable like the
/// server's "Cannot create field 'b' in element {a: 1}".
pub fn set_path(doc: &mut Document, path: &str, value: Bson) -> CmdResult<()> {
    let parts = split(path);
    set_in_doc(doc, &parts, value)
}

fn set_in_doc(doc: &mut Document, parts: &[&str], value: Bson) -> CmdResult<()> {
    if parts.len() == 1 {
        doc.insert(parts[0], value);
        return Ok(());
    }
    if !doc.contains_key(parts[0]) {
        doc.insert(parts[0], Document::new());
    }
    match doc.get_mut(parts[0]) {
        Some(c) => set_in_value(c, parts[0], &parts[1..], value),
        None => Ok(()),
    }
}

fn set_in_value(v: &mut Bson, name: &str, parts: &[&str], value: Bson) -> CmdResult<()> {
    match v {
        Bson::Document(d) => set_in_doc(d, parts, value),
        Bson::Array(a) => match array_index(parts[0]) {
            Some(i) => {
                if i > a.len() + 1_500_000 {
                    // SRV path_support.cpp kMaxPaddingAllowed: 34 CannotBackfillArray
                    return Err(CommandError::from_code(
                        ErrorCode::CannotBackfillArray,
                        "can't backfill more than 1500000 elements",
                    ));
                }
                while a.len() <= i {
                    a.push(Bson::Null);
                }
                if parts.len() == 1 {
                    a[i] = value;
                    Ok(())
                } else {
                    if matches!(a[i], Bson::Null) {
                        a[i] = Bson::Document(Document::new());
                    }
                    set_in_value(&mut a[i], parts[0], &parts[1..], value)
                }
            }
            None => Err(not_viable(parts[0], name, v)),
        },
        other => Err(not_viable(parts[0], name, other)),
    }
}

fn not_viable(part: &str, name: &str, v: &Bson) -> CommandError {
    CommandError::from_code(
        ErrorCode::PathNotViable,
        format!(
            "Cannot create field '{part}' in element {{{name}: {}}}",
            super::fmt::value(v)
        ),
    )
}

/// Strict unset: removes a field; an array element is set to `null` (as `$unset` does).
/// Returns whether something changed.
pub fn unset_path(doc: &mut Document, path: &str) -> bool {
    let parts = split(path);
    unset_in_doc(doc, &parts)
}

fn unset_in_doc(doc: &mut Document, parts: &[&str]) -> bool {
    if parts.len() == 1 {
        return doc.remove(parts[0]).is_some();
    }
    match doc.get_mut(parts[0]) {
        Some(v) => unset_in_value(v, &parts[1..]),
        None => false,
    }
}

fn unset_in_value(v: &mut Bson, parts: &[&str]) -> bool {
    match v {
        Bson::Document(d) => unset_in_doc(d, parts),
        Bson::Array(a) => match array_index(parts[0]) {
            Some(i) if i < a.len() => {
                if parts.len() == 1 {
                    if matches!(a[i], Bson::Null) {
                        false
                    } else {
                        a[i] = Bson::Null;
                        true
                    }
                } else {
                    unset_in_value(&mut a[i], &parts[1..])
                }
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc};

    #[test]
    fn numeric_components() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("a1"), None);
    }

    #[test]
    fn strict_get() {
        let d = doc! {"a": {"b": [10, {"c": 5}]}};
        assert_eq!(get_path(&d, "a.b.0"), Some(&Bson::Int32(10)));
        assert_eq!(get_path(&d, "a.b.1.c"), Some(&Bson::Int32(5)));
        assert_eq!(get_path(&d, "a.b.c"), None);
        assert_eq!(get_path(&d, "a.x"), None);
        assert_eq!(get_path(&d, "a.b.5"), None);
    }

    #[test]
    fn fan_out_collect() {
        let d = doc! {"a": [{"b": 1}, {"b": [2, 3]}, 7, {"c": 1}]};
        let v: Vec<Bson> = collect_values(&d, "a.b", false)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(v, vec![bson!(1), bson!([2, 3])]);
        let v: Vec<Bson> = collect_values(&d, "a.b", true)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(v, vec![bson!(1), bson!(2), bson!(3)]);
        let v: Vec<Bson> = collect_values(&d, "a.2", false)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(v, vec![bson!(7)]);
        assert!(collect_values(&d, "z", true).is_empty());
    }

    #[test]
    fn set_creates_and_pads() {
        let mut d = doc! {"a": {"b": 1}, "arr": [1]};
        set_path(&mut d, "a.c.d", bson!(2)).unwrap();
        set_path(&mut d, "arr.3", bson!(9)).unwrap();
        set_path(&mut d, "new", bson!("x")).unwrap();
        assert_eq!(
            d,
            doc! {"a": {"b": 1, "c": {"d": 2}}, "arr": [1, null, null, 9], "new": "x"}
        );
        let e = set_path(&mut d, "a.b.x", bson!(1)).unwrap_err();
        assert_eq!(e.code, 28);
        assert_eq!(e.errmsg, "Cannot create field 'x' in element {b: 1}");
        let e = set_path(&mut d, "arr.x", bson!(1)).unwrap_err();
        assert_eq!(e.code, 28);
    }

    #[test]
    fn unset_fields_and_elements() {
        let mut d = doc! {"a": {"b": 1, "c": 2}, "arr": [1, 2]};
        assert!(unset_path(&mut d, "a.b"));
        assert!(unset_path(&mut d, "arr.0"));
        assert!(!unset_path(&mut d, "arr.0"));
        assert!(!unset_path(&mut d, "zz.y"));
        assert_eq!(d, doc! {"a": {"c": 2}, "arr": [null, 2]});
    }
}
