//! The change-event `updateDescription` derived from an update's oplog entry
//! (SRV `src/mongo/db/pipeline/change_stream_document_diff_parser.cpp` for `$v: 2` diffs;
//! the 4.4 transform for `$v: 1`, reference §4.4/§5.4).
//!
//! `$v: 2`: per document level, every `u` then every `i` entry becomes an `updatedFields`
//! entry, then every `d` entry a `removedFields` path, then `s<field>` sub-diffs recurse in
//! order; array diffs add `truncatedArrays` for `l` and descend by index. A path is
//! ambiguous (reported in `disambiguatedPaths` with `showExpandedEvents`) once a field name
//! contains a dot or a non-first field name is a numeric string; array indices are Int32 in
//! the disambiguated form.

use bson::{Bson, Document};

use super::path::array_index;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

#[derive(Clone)]
struct Comp {
    name: String,
    is_index: bool,
    ambiguous: bool,
}

struct Builder {
    path: Vec<Comp>,
    updated: Document,
    removed: Vec<Bson>,
    truncated: Vec<Bson>,
    disambiguated: Document,
}

fn numeric_strict(s: &str) -> bool {
    // SRV FieldRef::isNumericPathComponentStrict: digits, no leading zero unless "0".
    array_index(s).is_some()
}

impl Builder {
    fn push(&mut self, name: &str, is_index: bool) {
        let prev_ambiguous = self.path.last().is_some_and(|c| c.ambiguous);
        let ambiguous = prev_ambiguous
            || (!is_index
                && ((!self.path.is_empty() && numeric_strict(name)) || name.contains('.')));
        self.path.push(Comp {
            name: name.to_string(),
            is_index,
            ambiguous,
        });
    }

    fn pop(&mut self) {
        self.path.pop();
    }

    fn dotted(&self) -> String {
        self.path
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }

    fn record_ambiguity(&mut self) {
        if self.path.last().is_some_and(|c| c.ambiguous) {
            let parts: Vec<Bson> = self
                .path
                .iter()
                .map(|c| {
                    if c.is_index {
                        Bson::Int32(c.name.parse().unwrap_or(0))
                    } else {
                        Bson::String(c.name.clone())
                    }
                })
                .collect();
            self.disambiguated.insert(self.dotted(), parts);
        }
    }

    fn updated(&mut self, name: &str, is_index: bool, v: &Bson) {
        self.push(name, is_index);
        self.updated.insert(self.dotted(), v.clone());
        self.record_ambiguity();
        self.pop();
    }

    fn removed(&mut self, name: &str) {
        self.push(name, false);
        self.removed.push(Bson::String(self.dotted()));
        self.record_ambiguity();
        self.pop();
    }

    fn truncated(&mut self, new_size: i32) {
        let mut d = Document::new();
        d.insert("field", self.dotted());
        d.insert("newSize", new_size);
        self.truncated.push(Bson::Document(d));
        self.record_ambiguity();
    }

    fn doc_diff(&mut self, diff: &Document) -> CmdResult<()> {
        for section in ["u", "i", "b"] {
            if let Some(v) = diff.get(section) {
                let Bson::Document(entries) = v else {
                    return Err(malformed(section));
                };
                for (k, val) in entries {
                    self.updated(k, false, val);
                }
            }
        }
        if let Some(v) = diff.get("d") {
            let Bson::Document(entries) = v else {
                return Err(malformed("d"));
            };
            for k in entries.keys() {
                self.removed(k);
            }
        }
        for (k, v) in diff {
            if matches!(k.as_str(), "u" | "i" | "b" | "d") {
                continue;
            }
            let Some(field) = k.strip_prefix('s') else {
                return Err(malformed(k));
            };
            let Bson::Document(sub) = v else {
                return Err(malformed(k));
            };
            self.push(field, false);
            let r = self.sub_diff(sub);
            self.pop();
            r?;
        }
        Ok(())
    }

    fn sub_diff(&mut self, sub: &Document) -> CmdResult<()> {
        if matches!(sub.get("a"), Some(Bson::Boolean(true))) {
            self.array_diff(sub)
        } else {
            self.doc_diff(sub)
        }
    }

    fn array_diff(&mut self, diff: &Document) -> CmdResult<()> {
        if let Some(l) = diff.get("l") {
            let n = match l {
                Bson::Int32(i) => *i,
                Bson::Int64(i) => *i as i32,
                Bson::Double(f) => *f as i32,
                _ => return Err(malformed("l")),
            };
            self.truncated(n);
        }
        for (k, v) in diff {
            if k == "a" || k == "l" {
                continue;
            }
            let (Some(kind), Some(idx)) = (k.get(..1), k.get(1..)) else {
                return Err(malformed(k));
            };
            if array_index(idx).is_none() {
                return Err(malformed(k));
            }
            match kind {
                "u" => self.updated(idx, true, v),
                "s" => {
                    let Bson::Document(sub) = v else {
                        return Err(malformed(k));
                    };
                    self.push(idx, true);
                    let r = self.sub_diff(sub);
                    self.pop();
                    r?;
                }
                _ => return Err(malformed(k)),
            }
        }
        Ok(())
    }
}

fn malformed(field: &str) -> CommandError {
    // SRV document_diff_serialization.cpp DocumentDiffReader: 4770503
    CommandError::from_code(
        ErrorCode::DocumentDiffUnexpectedField,
        format!("Unexpected field '{field}' in document diff"),
    )
}

/// `updateDescription` from a `$v: 2` diff (the `diff` field of the oplog `o`).
/// `with_disambiguated_paths` is `showExpandedEvents` on a 6.1+ server: then
/// `disambiguatedPaths` is always present (possibly `{}`).
pub fn from_v2_diff(diff: &Document, with_disambiguated_paths: bool) -> CmdResult<Document> {
    let mut b = Builder {
        path: Vec::new(),
        updated: Document::new(),
        removed: Vec::new(),
        truncated: Vec::new(),
        disambiguated: Document::new(),
    };
    b.doc_diff(diff)?;
    let mut out = Document::new();
    out.insert("updatedFields", b.updated);
    out.insert("removedFields", b.removed);
    out.insert("truncatedArrays", b.truncated);
    if with_disambiguated_paths {
        out.insert("disambiguatedPaths", b.disambiguated);
    }
    Ok(out)
}

/// `updateDescription` from a 4.4 `$v: 1` oplog `o`: `updatedFields = o.$set`,
/// `removedFields = keys(o.$unset)`, no `truncatedArrays` (reference §4.4).
pub fn from_v1(o: &Document) -> Document {
    let updated = match o.get("$set") {
        Some(Bson::Document(d)) => d.clone(),
        _ => Document::new(),
    };
    let removed: Vec<Bson> = match o.get("$unset") {
        Some(Bson::Document(d)) => d.keys().map(|k| Bson::String(k.clone())).collect(),
        _ => Vec::new(),
    };
    let mut out = Document::new();
    out.insert("updatedFields", updated);
    out.insert("removedFields", removed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn reference_examples() {
        // reference §4.5 examples
        assert_eq!(
            from_v2_diff(
                &doc! {"d": {"c": false}, "u": {"a": 2}, "i": {"newf": 1}},
                false
            )
            .unwrap(),
            doc! {"updatedFields": {"a": 2, "newf": 1}, "removedFields": ["c"], "truncatedArrays": []}
        );
        assert_eq!(
            from_v2_diff(&doc! {"ssub": {"u": {"b": "x"}}}, false).unwrap(),
            doc! {"updatedFields": {"sub.b": "x"}, "removedFields": [], "truncatedArrays": []}
        );
        assert_eq!(
            from_v2_diff(&doc! {"sarr": {"a": true, "u1": 5}}, false).unwrap(),
            doc! {"updatedFields": {"arr.1": 5}, "removedFields": [], "truncatedArrays": []}
        );
        assert_eq!(
            from_v2_diff(&doc! {"sarr": {"a": true, "l": 2}}, true).unwrap(),
            doc! {"updatedFields": {}, "removedFields": [], "truncatedArrays": [{"field": "arr", "newSize": 2}], "disambiguatedPaths": {}}
        );
    }

    #[test]
    fn nested_arrays_and_docs() {
        let diff =
            doc! {"sa": {"a": true, "l": 3, "s0": {"d": {"x": false}, "i": {"y": 1}}, "u2": [1]}};
        assert_eq!(
            from_v2_diff(&diff, false).unwrap(),
            doc! {
                "updatedFields": {"a.0.y": 1, "a.2": [1]},
                "removedFields": ["a.0.x"],
                "truncatedArrays": [{"field": "a", "newSize": 3}],
            }
        );
    }

    #[test]
    fn disambiguated_paths_like_the_server_tests() {
        // jstests/change_streams/show_expanded_events_update_description.js (6.1+)
        let d = from_v2_diff(
            &doc! {"sarrayWithNumericField": {"a": true, "s0": {"a": true, "s0": {"u": {"1": {"b.c": 1}}}}}},
            true,
        )
        .unwrap();
        assert_eq!(
            d.get_document("disambiguatedPaths").unwrap(),
            &doc! {"arrayWithNumericField.0.0.1": ["arrayWithNumericField", 0, 0, "1"]}
        );
        let d = from_v2_diff(
            &doc! {"sobjectWithNumericField": {"s0": {"u": {"1": "updated"}}}},
            true,
        )
        .unwrap();
        assert_eq!(
            d.get_document("disambiguatedPaths").unwrap(),
            &doc! {"objectWithNumericField.0.1": ["objectWithNumericField", "0", "1"]}
        );
        let d = from_v2_diff(
            &doc! {"u": {"d.o.t": {"subObj": 1}}, "i": {"new.Field.": 1}},
            true,
        )
        .unwrap();
        assert_eq!(
            d.get_document("disambiguatedPaths").unwrap(),
            &doc! {"d.o.t": ["d.o.t"], "new.Field.": ["new.Field."]}
        );
        // a numeric top-level field is not ambiguous; array indices alone are not either
        let d = from_v2_diff(&doc! {"u": {"0": 1}, "sarr": {"a": true, "u1": 2}}, true).unwrap();
        assert_eq!(d.get_document("disambiguatedPaths").unwrap(), &doc! {});
        let d = from_v2_diff(
            &doc! {"sobj": {"ssub.obj": {"sd.o.t..": {"a": true, "l": 1, "s0": {"a": true, "s0": {"sa": {"u": {"b.c": 2}}}}}}}},
            true,
        )
        .unwrap();
        assert_eq!(
            d,
            doc! {
                "updatedFields": {"obj.sub.obj.d.o.t...0.0.a.b.c": 2},
                "removedFields": [],
                "truncatedArrays": [{"field": "obj.sub.obj.d.o.t..", "newSize": 1}],
                "disambiguatedPaths": {
                    "obj.sub.obj.d.o.t..": ["obj", "sub.obj", "d.o.t.."],
                    "obj.sub.obj.d.o.t...0.0.a.b.c": ["obj", "sub.obj", "d.o.t..", 0, 0, "a", "b.c"],
                },
            }
        );
    }

    #[test]
    fn v1_form() {
        assert_eq!(
            from_v1(&doc! {"$v": 1, "$set": {"a": 2, "sub.b": "x"}, "$unset": {"c": true}}),
            doc! {"updatedFields": {"a": 2, "sub.b": "x"}, "removedFields": ["c"]}
        );
        assert_eq!(
            from_v1(&doc! {"$v": 1, "$unset": {"c": true}}),
            doc! {"updatedFields": {}, "removedFields": ["c"]}
        );
    }

    #[test]
    fn malformed_diff_is_an_error() {
        assert!(from_v2_diff(&doc! {"x": 1}, false).is_err());
        assert!(from_v2_diff(&doc! {"sarr": {"a": true, "q1": 1}}, false).is_err());
        assert!(from_v2_diff(&doc! {"sarr": {"a": true, "": 1}}, false).is_err());
        assert!(from_v2_diff(&doc! {"sarr": {"a": true, "é1": 1}}, false).is_err());
        assert!(from_v2_diff(&doc! {"u": 1}, false).is_err());
    }
}
