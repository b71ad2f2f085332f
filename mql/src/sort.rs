//! Sort specifications (`find` `sort`, `$sort`, `$push` does its own)
//! (SRV `src/mongo/db/query/sort_pattern.cpp`, `sort_key_generator.cpp`).
//!
//! Sort keys over arrays: an ascending key uses the smallest element reachable at the path,
//! a descending key the largest (SRV `SortKeyGenerator`: "the sort key for an array is its
//! min/max element"); a missing path sorts as `null`; an empty array sorts before `null`.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::compare::{as_f64, cmp_coll, Collation};
use super::fmt;
use super::path::collect_values;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// A parsed sort specification.
#[derive(Debug, Clone, PartialEq)]
pub struct SortSpec {
    keys: Vec<(String, bool)>,
    natural: Option<i32>,
    coll: Option<Collation>,
}

impl SortSpec {
    /// Parses `{field: 1|-1, ...}`; `{$natural: ±1}` is recognised and reported by
    /// [`SortSpec::natural`].
    pub fn parse(spec: &Document) -> CmdResult<SortSpec> {
        let mut keys = Vec::new();
        let mut natural = None;
        for (k, v) in spec {
            if let Bson::Document(d) = v {
                if d.contains_key("$meta") {
                    // SRV sort_pattern.cpp: only textScore/randVal/searchScore metadata exist.
                    return Err(CommandError::bad_value(format!(
                        "$meta sort by '{}' metadata is not supported",
                        d.get("$meta").map(fmt::value).unwrap_or_default()
                    )));
                }
            }
            let Some(n) = as_f64(v) else {
                // SRV sort_pattern.cpp: 15974
                return Err(CommandError::from_code(
                    ErrorCode::SortKeyNotNumeric,
                    format!("Illegal key in $sort specification: {k}: {}", fmt::value(v)),
                ));
            };
            if n != 1.0 && n != -1.0 {
                // SRV sort_pattern.cpp: 15975
                return Err(CommandError::from_code(
                    ErrorCode::SortOrderNotOneOrMinusOne,
                    "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                ));
            }
            if k == "$natural" {
                natural = Some(n as i32);
                continue;
            }
            if k.is_empty() || k.split('.').any(str::is_empty) {
                return Err(CommandError::from_code(
                    ErrorCode::FieldPathEmpty,
                    "FieldPath cannot be constructed with empty string",
                ));
            }
            keys.push((k.clone(), n > 0.0));
        }
        Ok(SortSpec {
            keys,
            natural,
            coll: None,
        })
    }

    /// Applies the command's collation to string keys.
    pub fn set_collation(&mut self, coll: Option<Collation>) {
        self.coll = coll;
    }

    /// `Some(direction)` when the spec contains `$natural`.
    pub fn natural(&self) -> Option<i32> {
        self.natural
    }

    /// Whether there are no field keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Compares two documents by this spec.
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        for (path, asc) in &self.keys {
            let ka = sort_key(a, path, *asc, self.coll.as_ref());
            let kb = sort_key(b, path, *asc, self.coll.as_ref());
            let o = cmp_key(&ka, &kb, self.coll.as_ref());
            let o = if *asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Sorts documents in place (stable, as the server's sort is for equal keys in practice).
    pub fn sort(&self, docs: &mut [Document]) {
        if !self.keys.is_empty() {
            docs.sort_by(|a, b| self.compare(a, b));
        }
    }
}

/// A sort key: `None` = empty array (sorts before null).
type Key = Option<Bson>;

fn cmp_key(a: &Key, b: &Key, coll: Option<&Collation>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => cmp_coll(x, y, coll),
    }
}

fn sort_key(doc: &Document, path: &str, asc: bool, coll: Option<&Collation>) -> Key {
    let vals = collect_values(doc, path, true);
    if vals.is_empty() {
        // Missing -> null, unless the path ended in an empty array.
        let raw = collect_values(doc, path, false);
        if raw
            .iter()
            .any(|v| matches!(v, Bson::Array(a) if a.is_empty()))
        {
            return None;
        }
        return Some(Bson::Null);
    }
    let mut best = vals[0];
    for v in &vals[1..] {
        let o = cmp_coll(v, best, coll);
        if (asc && o == Ordering::Less) || (!asc && o == Ordering::Greater) {
            best = v;
        }
    }
    Some(best.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn sorted(spec: Document, docs: Vec<Document>) -> Vec<Bson> {
        let s = SortSpec::parse(&spec).unwrap();
        let mut docs = docs;
        s.sort(&mut docs);
        docs.into_iter()
            .map(|d| d.get("_id").cloned().unwrap())
            .collect()
    }

    #[test]
    fn multi_key_and_types() {
        let docs = vec![
            doc! {"_id": 1, "a": 2, "b": 1},
            doc! {"_id": 2, "a": 1, "b": 5},
            doc! {"_id": 3, "a": 2, "b": 0},
            doc! {"_id": 4, "a": "x"},
            doc! {"_id": 5},
        ];
        assert_eq!(
            sorted(doc! {"a": 1, "b": -1}, docs.clone()),
            vec![
                Bson::Int32(5),
                Bson::Int32(2),
                Bson::Int32(1),
                Bson::Int32(3),
                Bson::Int32(4)
            ]
        );
        assert_eq!(
            sorted(doc! {"a": -1}, docs),
            vec![
                Bson::Int32(4),
                Bson::Int32(1),
                Bson::Int32(3),
                Bson::Int32(2),
                Bson::Int32(5)
            ]
        );
    }

    #[test]
    fn arrays_use_min_or_max() {
        let docs = vec![
            doc! {"_id": 1, "a": [1, 10]},
            doc! {"_id": 2, "a": [5]},
            doc! {"_id": 3, "a": []},
        ];
        assert_eq!(
            sorted(doc! {"a": 1}, docs.clone()),
            vec![Bson::Int32(3), Bson::Int32(1), Bson::Int32(2)]
        );
        assert_eq!(
            sorted(doc! {"a": -1}, docs),
            vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]
        );
    }

    #[test]
    fn dotted_paths() {
        let docs = vec![
            doc! {"_id": 1, "a": {"b": 3}},
            doc! {"_id": 2, "a": [{"b": 1}, {"b": 9}]},
        ];
        assert_eq!(
            sorted(doc! {"a.b": 1}, docs.clone()),
            vec![Bson::Int32(2), Bson::Int32(1)]
        );
        assert_eq!(
            sorted(doc! {"a.b": -1}, docs),
            vec![Bson::Int32(2), Bson::Int32(1)]
        );
    }

    #[test]
    fn collation_orders_case_insensitively() {
        let docs = vec![
            doc! {"_id": 1, "s": "b"},
            doc! {"_id": 2, "s": "B"},
            doc! {"_id": 3, "s": "a"},
        ];
        let mut s = SortSpec::parse(&doc! {"s": 1}).unwrap();
        let mut v = docs.clone();
        s.sort(&mut v);
        let ids: Vec<Bson> = v.iter().map(|d| d.get("_id").cloned().unwrap()).collect();
        assert_eq!(ids, vec![Bson::Int32(2), Bson::Int32(3), Bson::Int32(1)]);
        s.set_collation(Collation::parse(&doc! {"locale": "en", "strength": 1}).unwrap());
        let mut v = docs;
        s.sort(&mut v);
        let ids: Vec<Bson> = v.iter().map(|d| d.get("_id").cloned().unwrap()).collect();
        assert_eq!(ids, vec![Bson::Int32(3), Bson::Int32(1), Bson::Int32(2)]);
    }

    #[test]
    fn natural_and_errors() {
        let s = SortSpec::parse(&doc! {"$natural": -1}).unwrap();
        assert_eq!(s.natural(), Some(-1));
        assert!(s.is_empty());
        let e = SortSpec::parse(&doc! {"a": 2}).unwrap_err();
        assert_eq!(e.code, 15975);
        let e = SortSpec::parse(&doc! {"a": "x"}).unwrap_err();
        assert_eq!(e.code, 15974);
        assert_eq!(e.errmsg, "Illegal key in $sort specification: a: \"x\"");
    }
}
