//! MongoDB's 64-bit hash of a BSON value: the key of hashed indexes and hashed shard keys
//! (`convertShardKeyToHashed`), so a simulated cluster places documents on the same chunks as
//! a real one.
//!
//! SRV `src/mongo/db/hasher.cpp` `BSONElementHasher::hash64` (seed 0): MD5 over the seed as a
//! little-endian int32, then `recursiveHash(element, includeFieldName = false)`:
//! the element's canonical type as little-endian int32; the field name with its NUL when
//! `includeFieldName`; then numbers as `safeNumberLongForHash` (little-endian int64), other
//! scalars as their raw BSON value bytes, and documents/arrays as each child element hashed
//! with its name, closed by the EOO element (canonical type 0, no name, no value). The result
//! is the first 8 digest bytes as a little-endian signed int64. Canonical types from SRV
//! `src/mongo/bson/bsontypes.h` `canonicalizeBSONType`.

use bson::{Bson, Document, RawDocumentBuf};
use md5::{Digest, Md5};

/// `BSONElementHasher::hash64(value, 0)`.
pub(crate) fn hash64(value: &Bson) -> i64 {
    let mut h = Md5::new();
    h.update(0i32.to_le_bytes());
    recursive_hash(&mut h, None, value);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// SRV `canonicalizeBSONType`.
fn canonical_type(v: &Bson) -> i32 {
    match v {
        Bson::MinKey => -1,
        Bson::Undefined => 0,
        Bson::Null => 5,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 127,
    }
}

fn recursive_hash(h: &mut Md5, name: Option<&str>, v: &Bson) {
    h.update(canonical_type(v).to_le_bytes());
    if let Some(name) = name {
        h.update(name.as_bytes());
        h.update([0u8]);
    }
    match v {
        Bson::Document(d) => hash_children(h, d.iter().map(|(k, v)| (k.clone(), v))),
        Bson::Array(a) => hash_children(h, a.iter().enumerate().map(|(i, v)| (i.to_string(), v))),
        Bson::JavaScriptCodeWithScope(cws) => {
            // `codeWScopeCode()`: the code string's bytes including its NUL.
            h.update(cws.code.as_bytes());
            h.update([0u8]);
            hash_children(h, cws.scope.iter().map(|(k, v)| (k.clone(), v)));
        }
        _ => match safe_number_long_for_hash(v) {
            Some(n) => h.update(n.to_le_bytes()),
            None => h.update(value_bytes(v)),
        },
    }
}

/// Each child with its field name, then EOO: canonical type 0 and nothing else.
fn hash_children<'a>(h: &mut Md5, children: impl Iterator<Item = (String, &'a Bson)>) {
    for (k, v) in children {
        recursive_hash(h, Some(&k), v);
    }
    h.update(0i32.to_le_bytes());
}

/// SRV `BSONElement::safeNumberLongForHash`: doubles truncate toward zero, NaN is 0, values
/// out of range clamp to the int64 limits. `None` for non-numbers.
fn safe_number_long_for_hash(v: &Bson) -> Option<i64> {
    let clamp = |d: f64| -> i64 {
        if d.is_nan() {
            0
        } else if d >= 9.223_372_036_854_776e18 {
            i64::MAX
        } else if d < -9.223_372_036_854_776e18 {
            i64::MIN
        } else {
            d.trunc() as i64
        }
    };
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) => Some(clamp(*d)),
        Bson::Decimal128(_) => Some(clamp(crate::query::compare::as_f64(v).unwrap_or(0.0))),
        _ => None,
    }
}

/// `e.value()` / `e.valuesize()`: the element's value bytes as BSON encodes them.
fn value_bytes(v: &Bson) -> Vec<u8> {
    let mut d = Document::new();
    d.insert("", v.clone());
    match RawDocumentBuf::from_document(&d) {
        // int32 length, type byte, empty name's NUL, value..., document NUL
        Ok(raw) => {
            let b = raw.as_bytes();
            b[6..b.len() - 1].to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::hash64;
    use bson::{bson, oid::ObjectId, Bson};

    /// Vectors from SRV `src/mongo/db/hasher_test.cpp` (seed 0), as listed in the reference
    /// (sharded-clusters.md §2.7).
    #[test]
    fn server_test_vectors() {
        let cases: Vec<(Bson, i64)> = vec![
            (Bson::Int32(42), -944302157085130861),
            (Bson::Double(42.123), -944302157085130861),
            (Bson::Int64(42), -944302157085130861),
            (Bson::Int32(0), 4854801880128277513),
            (Bson::Double(0.456), 4854801880128277513),
            (Bson::Double(f64::NAN), 4854801880128277513),
            (Bson::Int32(1), 5902408780260971510),
            (Bson::Int32(-1), 1140205862565771219),
            (Bson::String("abc".into()), 8478485326885698097),
            (Bson::Symbol("abc".into()), 8478485326885698097),
            (
                Bson::ObjectId(ObjectId::parse_str("010203040506070809101112").unwrap()),
                -5588663249627035708,
            ),
            (Bson::Null, 2338878944348059895),
            (Bson::MinKey, 7961148599568647290),
            (Bson::MaxKey, 5504842513779440750),
            (Bson::Boolean(true), 6405873908747105701),
            (Bson::Boolean(false), 6289544573401934092),
            (bson!({"a": "abc", "b": 123i64}), 4771603801758380216),
            (bson!({}), 7980500913326740417),
            (bson!([]), 8849948234993459283),
        ];
        for (v, want) in cases {
            assert_eq!(hash64(&v), want, "{v:?}");
        }
    }
}
