//! Update descriptions from oplog updates (reference §4.4, §4.5): `$v: 2` diffs rendered
//! the way the server's change-stream diff parser renders them, and `$v: 1` (and older)
//! modifier documents.

use bson::{Bson, Document};

use crate::op::{TruncatedArray, UpdateDescription};

fn as_u32(v: &Bson) -> Option<u32> {
    match v {
        Bson::Int32(n) => u32::try_from(*n).ok(),
        Bson::Int64(n) => u32::try_from(*n).ok(),
        Bson::Double(f) if *f >= 0.0 && f.fract() == 0.0 && *f <= f64::from(u32::MAX) => {
            Some(*f as u32)
        }
        _ => None,
    }
}

/// The [`UpdateDescription`] of an update `o` (reference §4.4, §4.5): `$v: 2` diffs as
/// the server's change-stream diff parser renders them, `$v: 1` (and older, unversioned)
/// modifier documents from `$set`/`$unset`.
pub(crate) fn update_description(o: &Document) -> std::result::Result<UpdateDescription, String> {
    let version = o.get("$v").and_then(as_u32);
    let mut out = UpdateDescription::default();
    if version == Some(2) {
        let diff = o
            .get_document("diff")
            .map_err(|_| "`$v: 2` update without `diff`".to_owned())?;
        parse_diff(diff, "", &mut out)?;
    } else if version.is_none() || version == Some(1) {
        if let Ok(set) = o.get_document("$set") {
            out.updated_fields = set.clone();
        }
        if let Ok(unset) = o.get_document("$unset") {
            out.removed_fields = unset.keys().cloned().collect();
        }
    } else {
        return Err(format!("unsupported update version {:?}", o.get("$v")));
    }
    Ok(out)
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn sub_diff<'a>(v: &'a Bson, key: &str) -> std::result::Result<&'a Document, String> {
    v.as_document()
        .ok_or_else(|| format!("diff entry `{key}` is not a document"))
}

/// An object diff: `d`, `u`, `i`, `b`, `s<field>` (reference §4.5).
fn parse_diff(
    diff: &Document,
    prefix: &str,
    out: &mut UpdateDescription,
) -> std::result::Result<(), String> {
    for (k, v) in diff {
        match k.as_str() {
            "d" => {
                for (field, _) in sub_diff(v, k)? {
                    out.removed_fields.push(join(prefix, field));
                }
            }
            // Binary deltas (`b`) are reported as updated fields holding the delta.
            "u" | "i" | "b" => {
                for (field, value) in sub_diff(v, k)? {
                    out.updated_fields
                        .insert(join(prefix, field), value.clone());
                }
            }
            _ => match k.strip_prefix('s') {
                Some(field) if !field.is_empty() => {
                    let path = join(prefix, field);
                    parse_sub(sub_diff(v, k)?, &path, out)?;
                }
                _ => return Err(format!("unknown diff entry `{k}`")),
            },
        }
    }
    Ok(())
}

fn parse_sub(
    sub: &Document,
    path: &str,
    out: &mut UpdateDescription,
) -> std::result::Result<(), String> {
    if sub.get_bool("a") == Ok(true) {
        parse_array_diff(sub, path, out)
    } else {
        parse_diff(sub, path, out)
    }
}

/// An array diff: `a: true`, `l`, `u<idx>`, `s<idx>` (reference §4.5).
fn parse_array_diff(
    diff: &Document,
    path: &str,
    out: &mut UpdateDescription,
) -> std::result::Result<(), String> {
    for (k, v) in diff {
        if k == "a" {
            continue;
        }
        if k == "l" {
            let n = as_u32(v).ok_or_else(|| format!("array length `{v}` at {path}"))?;
            out.truncated_arrays.push(TruncatedArray::new(path, n));
            continue;
        }
        let (kind, idx) = k.split_at(1.min(k.len()));
        if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("unknown array diff entry `{k}` at {path}"));
        }
        let elem = join(path, idx);
        match kind {
            "u" => {
                out.updated_fields.insert(elem, v.clone());
            }
            "s" => parse_sub(sub_diff(v, k)?, &elem, out)?,
            _ => return Err(format!("unknown array diff entry `{k}` at {path}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, spec::BinarySubtype, Binary};

    fn ud(o: Document) -> UpdateDescription {
        update_description(&o).unwrap()
    }

    #[test]
    fn v1_update() {
        // reference §4.4
        let u = ud(doc! {"$v": 1, "$set": {"a": 2, "sub.b": "x"}, "$unset": {"c": true}});
        assert_eq!(u.updated_fields, doc! {"a": 2, "sub.b": "x"});
        assert_eq!(u.removed_fields, vec!["c".to_owned()]);
        assert!(u.truncated_arrays.is_empty());
        // pre-4.x entries have no `$v`
        let u = ud(doc! {"$set": {"a": 1}});
        assert_eq!(u.updated_fields, doc! {"a": 1});
    }

    #[test]
    fn v2_top_level_d_u_i() {
        // reference §4.5 first example
        let u = ud(doc! {"$v": 2, "diff": {"d": {"c": false}, "u": {"a": 2}, "i": {"newf": 1}}});
        assert_eq!(u.updated_fields, doc! {"a": 2, "newf": 1});
        assert_eq!(u.removed_fields, vec!["c".to_owned()]);
        assert!(u.truncated_arrays.is_empty());
    }

    #[test]
    fn v2_nested_object() {
        let u = ud(
            doc! {"$v": 2, "diff": {"ssub": {"u": {"b": "x"}, "d": {"gone": false}, "sdeep": {"i": {"z": 1}}}}},
        );
        assert_eq!(u.updated_fields, doc! {"sub.b": "x", "sub.deep.z": 1});
        assert_eq!(u.removed_fields, vec!["sub.gone".to_owned()]);
    }

    #[test]
    fn v2_array_update_element() {
        let u = ud(doc! {"$v": 2, "diff": {"sarr": {"a": true, "u1": 5}}});
        assert_eq!(u.updated_fields, doc! {"arr.1": 5});
    }

    #[test]
    fn v2_array_truncate() {
        let u = ud(doc! {"$v": 2, "diff": {"sarr": {"a": true, "l": 2}}});
        assert_eq!(u.truncated_arrays, vec![TruncatedArray::new("arr", 2)]);
        assert!(u.updated_fields.is_empty());
    }

    #[test]
    fn v2_array_resize_and_append_and_subdiff() {
        let u = ud(doc! {"$v": 2, "diff": {"sarr": {
            "a": true, "l": 4, "u2": {"x": 1}, "u3": "new",
            "s0": {"u": {"name": "n"}},
            "s1": {"a": true, "u0": 9, "l": 1}
        }}});
        assert_eq!(
            u.updated_fields,
            doc! {"arr.2": {"x": 1}, "arr.3": "new", "arr.0.name": "n", "arr.1.0": 9}
        );
        assert_eq!(
            u.truncated_arrays,
            vec![
                TruncatedArray::new("arr", 4),
                TruncatedArray::new("arr.1", 1)
            ]
        );
    }

    #[test]
    fn v2_binary_delta_and_errors() {
        let u = ud(
            doc! {"$v": 2, "diff": {"b": {"bin": {"o": 0, "d": Binary { subtype: BinarySubtype::Generic, bytes: vec![1] }}}}},
        );
        assert!(u.updated_fields.contains_key("bin"));
        assert!(update_description(&doc! {"$v": 2}).is_err());
        assert!(update_description(&doc! {"$v": 2, "diff": {"x": {}}}).is_err());
        assert!(
            update_description(&doc! {"$v": 2, "diff": {"sarr": {"a": true, "zz": 1}}}).is_err()
        );
        assert!(update_description(&doc! {"$v": 3, "diff": {}}).is_err());
    }
}
