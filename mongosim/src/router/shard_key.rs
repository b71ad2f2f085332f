//! Shard key patterns: parsing, the key of a document or a query, comparison of key values,
//! and which shards a query must reach.
//!
//! SRV `src/mongo/s/shard_key_pattern.cpp` (`extractShardKeyFromDoc`: hashed fields are
//! hashed with `BSONElementHasher::hash64`, a missing field is null since 4.4;
//! `extractShardKeyFromQuery`: equality on every field), `src/mongo/s/chunk_manager.cpp`
//! (`getShardIdsForQuery`: one chunk for a full equality, the owners of the intersecting
//! chunks for ranges, every owner otherwise). Reference sharded-clusters.md §3.1.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::meta::Sharded;
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::hasher::hash64;
use crate::query::compare::cmp_bson;

/// A parsed shard key pattern (`{a: 1}`, `{h: "hashed"}`, `{a: 1, b: "hashed"}`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShardKey {
    /// The pattern as stored in `config.collections.key`.
    pub(crate) pattern: Document,
    /// Field paths and whether each is hashed.
    fields: Vec<(String, bool)>,
}

impl ShardKey {
    /// Parses a key pattern: every value 1 or `"hashed"`, at most one hashed field (SRV
    /// `shard_key_pattern.cpp` `isValidShardKeyElement`, 4.4+ compound hashed keys).
    pub(crate) fn parse(pattern: &Document) -> CmdResult<ShardKey> {
        let mut fields = Vec::new();
        for (k, v) in pattern {
            let hashed = match v {
                Bson::String(s) if s == "hashed" => true,
                Bson::Int32(1) | Bson::Int64(1) => false,
                Bson::Double(d) if *d == 1.0 => false,
                _ => {
                    return Err(CommandError::bad_value(format!(
                        "Shard key {pattern} must be ascending (1) or hashed"
                    )))
                }
            };
            if k.is_empty() || k.starts_with('$') {
                return Err(CommandError::bad_value(format!(
                    "Field {k} of shard key {pattern} is not valid"
                )));
            }
            fields.push((k.clone(), hashed));
        }
        if fields.is_empty() {
            return Err(CommandError::bad_value("Shard key cannot be empty"));
        }
        if fields.iter().filter(|(_, h)| *h).count() > 1 {
            // SRV shard_key_pattern.cpp (31303)
            return Err(CommandError::bad_value(format!(
                "Shard key {pattern} cannot contain more than one hashed field"
            )));
        }
        Ok(ShardKey {
            pattern: pattern.clone(),
            fields,
        })
    }

    /// The field paths.
    pub(crate) fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(f, _)| f.as_str())
    }

    /// Whether a field is hashed.
    pub(crate) fn is_hashed(&self) -> bool {
        self.fields.iter().any(|(_, h)| *h)
    }

    /// Whether the first field is hashed.
    pub(crate) fn hashed_prefix(&self) -> bool {
        self.fields.first().is_some_and(|(_, h)| *h)
    }

    /// `{f: MinKey, ...}` (`KeyPattern::globalMin`).
    pub(crate) fn global_min(&self) -> Document {
        self.fields
            .iter()
            .map(|(f, _)| (f.clone(), Bson::MinKey))
            .collect()
    }

    /// `{f: MaxKey, ...}`.
    pub(crate) fn global_max(&self) -> Document {
        self.fields
            .iter()
            .map(|(f, _)| (f.clone(), Bson::MaxKey))
            .collect()
    }

    /// The key of `doc` as chunks are keyed: each field's value (null when missing), hashed
    /// fields as `Long(hash64(value))`.
    pub(crate) fn key_of_doc(&self, doc: &Document) -> Document {
        crate::engine::catalog::shard_key_value(&self.pattern, doc)
    }

    fn keyed(&self, v: Bson, hashed: bool) -> Bson {
        if hashed {
            Bson::Int64(hash64(&v))
        } else {
            v
        }
    }

    /// The key of a query with an equality on every shard-key field (`{f: v}` or
    /// `{f: {$eq: v}}`), else `None` (SRV `extractShardKeyFromQuery`).
    pub(crate) fn key_of_query(&self, q: &Document) -> Option<Document> {
        let mut out = Document::new();
        for (f, hashed) in &self.fields {
            let v = equality(q.get(f)?)?;
            out.insert(f.clone(), self.keyed(v.clone(), *hashed));
        }
        Some(out)
    }
}

/// The value of an equality predicate (`v` or `{$eq: v}`); arrays, regexes and operator
/// documents are not equalities that target one chunk.
fn equality(v: &Bson) -> Option<&Bson> {
    match v {
        Bson::Document(d) => {
            if d.keys().any(|k| k.starts_with('$')) {
                match (d.len(), d.get("$eq")) {
                    (1, Some(x)) => equality(x),
                    _ => None,
                }
            } else {
                Some(v)
            }
        }
        Bson::Array(_) | Bson::RegularExpression(_) => None,
        other => Some(other),
    }
}

pub(crate) use crate::engine::catalog::cmp_keys;

/// The shards a query on a sharded collection must reach (SRV `getShardIdsForQuery`), in
/// chunk order.
pub(crate) fn shards_for_query(coll: &Sharded, q: &Document) -> Vec<String> {
    if let Some(key) = coll.key.key_of_query(q) {
        return coll
            .chunk_for(&key)
            .map(|c| vec![c.shard.clone()])
            .unwrap_or_default();
    }
    let Some((first, hashed)) = coll.key.fields.first() else {
        return coll.shards();
    };
    let Some(pred) = q.get(first) else {
        return coll.shards();
    };
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !out.iter().any(|x| x == s) {
            out.push(s.to_string());
        }
    };
    if let Some(values) = in_values(pred) {
        if coll.key.fields.len() > 1 && !values.is_empty() {
            return coll.shards();
        }
        for v in values {
            let key: Document = [(first.clone(), coll.key.keyed(v.clone(), *hashed))]
                .into_iter()
                .collect();
            if let Some(c) = coll.chunk_for(&key) {
                add(&c.shard);
            }
        }
        return out;
    }
    match (hashed, range_bounds(pred)) {
        (false, Some((lo, hi))) => {
            for c in &coll.chunks {
                let cmin = c.min.values().next().unwrap_or(&Bson::MinKey);
                let cmax = c.max.values().next().unwrap_or(&Bson::MaxKey);
                if cmp_bson(cmin, &hi) != Ordering::Greater && cmp_bson(cmax, &lo) != Ordering::Less
                {
                    add(&c.shard);
                }
            }
            out
        }
        _ => coll.shards(),
    }
}

/// The values of `{$in: [...]}` or of an equality.
fn in_values(pred: &Bson) -> Option<Vec<&Bson>> {
    if let Some(v) = equality(pred) {
        return Some(vec![v]);
    }
    let Bson::Document(d) = pred else {
        return None;
    };
    match (d.len(), d.get("$in")) {
        (1, Some(Bson::Array(a))) => a.iter().map(equality).collect(),
        _ => None,
    }
}

/// `[lo, hi]` (inclusive, over-approximating) of `{$gt|$gte|$lt|$lte: v, ...}`.
fn range_bounds(pred: &Bson) -> Option<(Bson, Bson)> {
    let Bson::Document(d) = pred else {
        return None;
    };
    let mut lo = Bson::MinKey;
    let mut hi = Bson::MaxKey;
    for (op, v) in d {
        match op.as_str() {
            "$gt" | "$gte" => lo = v.clone(),
            "$lt" | "$lte" => hi = v.clone(),
            _ => return None,
        }
    }
    Some((lo, hi))
}

/// 61 ShardKeyNotFound for a single-document write that cannot be targeted (SRV
/// `chunk_manager_targeter.cpp`).
pub(crate) fn not_targetable(what: &str, key: &ShardKey) -> CommandError {
    CommandError::from_code(
        ErrorCode::ShardKeyNotFound,
        format!(
            "{what} on a sharded collection must contain an exact match on _id (and have the collection default collation) or contain the shard key (and have the simple collation). Query was missing the shard key {}",
            key.pattern
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn keys_of_documents_and_queries() {
        let k = ShardKey::parse(&doc! {"a": 1, "h": "hashed"}).unwrap();
        let d = doc! {"_id": 1, "h": 42, "a": "x"};
        assert_eq!(
            k.key_of_doc(&d),
            doc! {"a": "x", "h": -944302157085130861i64}
        );
        assert_eq!(
            crate::engine::catalog::document_key(&k.pattern, &d),
            doc! {"a": "x", "h": 42, "_id": 1}
        );
        assert_eq!(
            k.key_of_query(&doc! {"a": "x", "h": {"$eq": 42}}),
            Some(doc! {"a": "x", "h": -944302157085130861i64})
        );
        assert_eq!(k.key_of_query(&doc! {"a": "x"}), None);
        assert_eq!(k.key_of_query(&doc! {"a": {"$gt": 1}, "h": 1}), None);
        let missing = k.key_of_doc(&doc! {"_id": 2});
        assert_eq!(missing.get("a"), Some(&Bson::Null));
        assert!(ShardKey::parse(&doc! {"a": "hashed", "b": "hashed"}).is_err());
        assert!(ShardKey::parse(&doc! {"a": -1}).is_err());
    }

    #[test]
    fn key_order_is_bson_order() {
        assert_eq!(
            cmp_keys(&doc! {"a": Bson::MinKey}, &doc! {"a": 1}),
            Ordering::Less
        );
        assert_eq!(
            cmp_keys(&doc! {"a": "z"}, &doc! {"a": Bson::MaxKey}),
            Ordering::Less
        );
        assert_eq!(cmp_keys(&doc! {"a": 5}, &doc! {"a": "a"}), Ordering::Less);
        assert_eq!(
            cmp_keys(&doc! {"a": 5i64}, &doc! {"a": 5.0}),
            Ordering::Equal
        );
    }
}
