//! BSON comparison order (SRV `src/mongo/bson/bsonelement.cpp` `compareElements`,
//! `canonicalizeBSONType` in `bsontypes.cpp`; docs "Comparison/Sort Order").
//!
//! MinKey < Null/Undefined < Numbers < Symbol/String < Object < Array < BinData < ObjectId
//! < Boolean < Date < Timestamp < RegEx < DBPointer < JavaScript < JavaScriptWithScope < MaxKey.
//! Numbers compare by value across Int32/Int64/Double/Decimal128 (NaN sorts below every other
//! number and equals NaN); documents compare element by element (canonical type, then field
//! name, then value); arrays element-wise; the shorter prefix sorts first.

use std::cmp::Ordering;

use crate::error::ErrorCode;
use bson::{Bson, Document};

/// Canonical type rank used to order values of different BSON types
/// (SRV `canonicalizeBSONType`).
pub fn canonical_type(v: &Bson) -> i32 {
    match v {
        Bson::MinKey => -1,
        Bson::Null | Bson::Undefined => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
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
        Bson::MaxKey => 100,
    }
}

/// Numeric view of a number for cross-type comparison.
#[derive(Debug, Clone, Copy)]
pub enum Num {
    Int(i64),
    Float(f64),
}

/// The numeric value of `v` if it is a number (Int32, Int64, Double, Decimal128).
pub fn as_num(v: &Bson) -> Option<Num> {
    match v {
        Bson::Int32(i) => Some(Num::Int(i64::from(*i))),
        Bson::Int64(i) => Some(Num::Int(*i)),
        Bson::Double(f) => Some(Num::Float(*f)),
        Bson::Decimal128(d) => Some(Num::Float(decimal_to_f64(d))),
        _ => None,
    }
}

/// Best-effort conversion of a Decimal128 to f64 (via its canonical string form).
pub fn decimal_to_f64(d: &bson::Decimal128) -> f64 {
    let s = d.to_string();
    match s.as_str() {
        "NaN" | "-NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        _ => s.parse::<f64>().unwrap_or(f64::NAN),
    }
}

/// f64 view of a number (`None` for non-numbers).
pub fn as_f64(v: &Bson) -> Option<f64> {
    as_num(v).map(|n| match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    })
}

fn cmp_i64_f64(a: i64, b: f64) -> Ordering {
    if b.is_nan() {
        return Ordering::Greater;
    }
    // 2^63 as f64; every i64 is below it.
    if b >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if b < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let t = b.trunc();
    let ti = t as i64;
    match a.cmp(&ti) {
        Ordering::Equal => {
            let frac = b - t;
            if frac > 0.0 {
                Ordering::Less
            } else if frac < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

fn cmp_f64(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // -0.0 == 0.0 as the server does.
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

pub fn cmp_num(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => cmp_f64(x, y),
        (Num::Int(x), Num::Float(y)) => cmp_i64_f64(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_i64_f64(y, x).reverse(),
    }
}

/// A collation (the subset mongosim models): `locale: "simple"` compares strings by bytes;
/// any other valid locale with `strength` 1 or 2 compares case-insensitively (ICU primary /
/// secondary strength ignore case), strength 3+ by bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Collation {
    /// ICU locale id, or "simple".
    pub locale: String,
    /// ICU comparison strength (1..=5, default 3).
    pub strength: i32,
}

impl Collation {
    /// Parses a `collation` document (SRV `CollationSpec` / `collator_factory_icu.cpp`);
    /// `Ok(None)` for the simple collation.
    pub fn parse(spec: &Document) -> crate::error::CmdResult<Option<Collation>> {
        use crate::error::CommandError;
        let locale = match spec.get("locale") {
            Some(Bson::String(s)) => s.clone(),
            Some(_) => {
                return Err(CommandError::type_mismatch(
                    "BSON field 'locale' is the wrong type, expected type 'string'",
                ))
            }
            None => {
                // SRV IDL: 40414
                return Err(CommandError::from_code(
                    ErrorCode::IdlFailedToParse,
                    "BSON field 'Collation.locale' is missing but a required field",
                ));
            }
        };
        // Languages with ICU collation data (docs "Collation Locales and Default Parameters").
        const LANGS: &[&str] = &[
            "af", "sq", "am", "ar", "hy", "as", "az", "bn", "be", "bs", "bg", "my", "ca", "chr",
            "zh", "hr", "cs", "da", "nl", "dz", "en", "eo", "et", "ee", "fo", "fil", "fi", "fr",
            "gl", "ka", "de", "el", "gu", "ha", "haw", "he", "hi", "hu", "is", "ig", "smn", "id",
            "ga", "it", "ja", "kl", "kn", "kk", "km", "kok", "ko", "ky", "lkt", "lo", "lv", "ln",
            "lt", "dsb", "lb", "mk", "ms", "ml", "mt", "mr", "mn", "ne", "se", "nb", "nn", "or",
            "om", "ps", "fa", "pl", "pt", "pa", "ro", "ru", "sr", "si", "sk", "sl", "es", "sw",
            "sv", "ta", "te", "th", "bo", "to", "tr", "uk", "hsb", "ur", "ug", "vi", "wae", "cy",
            "yi", "yo", "zu",
        ];
        let valid_locale = locale == "simple" || {
            let lang = locale.split(['_', '@']).next().unwrap_or("");
            LANGS.contains(&lang)
        };
        if !valid_locale {
            // SRV collator_factory_icu.cpp
            return Err(CommandError::bad_value(format!(
                "Field 'locale' is invalid in: {}",
                super::fmt::doc(spec)
            )));
        }
        let strength = match spec.get("strength") {
            None => 3,
            Some(v) => match as_f64(v) {
                Some(f) if (1.0..=5.0).contains(&f) && f.fract() == 0.0 => f as i32,
                _ => {
                    return Err(CommandError::bad_value(format!(
                        "Field 'strength' must be an integer 1 through 5. Got: {}",
                        super::fmt::value(v)
                    )))
                }
            },
        };
        if locale == "simple" {
            return Ok(None);
        }
        Ok(Some(Collation { locale, strength }))
    }

    fn cmp_str(&self, a: &str, b: &str) -> Ordering {
        if self.strength <= 2 {
            let (x, y) = (a.to_lowercase(), b.to_lowercase());
            x.cmp(&y)
        } else {
            a.as_bytes().cmp(b.as_bytes())
        }
    }
}

/// Total BSON order of two values (SRV `compareElementValues`).
pub fn cmp_bson(a: &Bson, b: &Bson) -> Ordering {
    cmp_coll(a, b, None)
}

/// [`cmp_bson`] under a collation (strings, also inside documents and arrays).
pub fn cmp_coll(a: &Bson, b: &Bson, coll: Option<&Collation>) -> Ordering {
    let (ta, tb) = (canonical_type(a), canonical_type(b));
    if ta != tb {
        return ta.cmp(&tb);
    }
    match (a, b) {
        (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_), _) => {
            match (as_num(a), as_num(b)) {
                (Some(x), Some(y)) => cmp_num(x, y),
                _ => Ordering::Equal,
            }
        }
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => match coll {
            Some(c) => c.cmp_str(x, y),
            None => x.as_bytes().cmp(y.as_bytes()),
        },
        (Bson::Document(x), Bson::Document(y)) => cmp_docs_coll(x, y, coll),
        (Bson::Array(x), Bson::Array(y)) => cmp_arrays_coll(x, y, coll),
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .as_bytes()
            .cmp(y.pattern.as_bytes())
            .then_with(|| x.options.as_bytes().cmp(y.options.as_bytes())),
        (Bson::DbPointer(x), Bson::DbPointer(y)) => {
            // DbPointer fields are private in the bson crate; compare the extended JSON form.
            let (sx, sy) = (
                Bson::DbPointer(x.clone())
                    .into_relaxed_extjson()
                    .to_string(),
                Bson::DbPointer(y.clone())
                    .into_relaxed_extjson()
                    .to_string(),
            );
            sx.cmp(&sy)
        }
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => x
            .code
            .as_bytes()
            .cmp(y.code.as_bytes())
            .then_with(|| cmp_docs(&x.scope, &y.scope)),
        // MinKey/MaxKey/Null/Undefined: equal within their class.
        _ => Ordering::Equal,
    }
}

/// Document order: element by element (canonical type, field name, value); a prefix sorts
/// first (SRV `BSONObj::woCompare`).
pub fn cmp_docs(a: &Document, b: &Document) -> Ordering {
    cmp_docs_coll(a, b, None)
}

fn cmp_docs_coll(a: &Document, b: &Document, coll: Option<&Collation>) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let o = canonical_type(va)
                    .cmp(&canonical_type(vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| cmp_coll(va, vb, coll));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Array order: element-wise, a prefix sorts first.
pub fn cmp_arrays(a: &[Bson], b: &[Bson]) -> Ordering {
    cmp_arrays_coll(a, b, None)
}

fn cmp_arrays_coll(a: &[Bson], b: &[Bson], coll: Option<&Collation>) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let o = canonical_type(x)
            .cmp(&canonical_type(y))
            .then_with(|| cmp_coll(x, y, coll));
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Query equality: same canonical type and equal by [`cmp_bson`] (so `1 == 1.0 == Long(1)`).
pub fn bson_eq(a: &Bson, b: &Bson) -> bool {
    cmp_bson(a, b) == Ordering::Equal
}

/// Storage identity: same BSON type and same value (what the update system uses to decide
/// whether `$set` is a no-op; SRV `BSONElement::binaryEqualValues`).
pub fn binary_eq(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Double(x), Bson::Double(y)) => x.to_bits() == y.to_bits(),
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && binary_eq(va, vb))
        }
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| binary_eq(p, q))
        }
        _ => a == b,
    }
}

/// Parses a `collation` argument.
pub fn collation_of(collation: Option<&Bson>) -> crate::error::CmdResult<Option<Collation>> {
    match collation {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Collation::parse(d),
        Some(other) => Err(crate::error::CommandError::wrong_type(
            "collation",
            other,
            "object",
        )),
    }
}

#[cfg(test)]
mod tests;
