//! Server-style rendering of BSON inside error messages (SRV `BSONElement::toString`,
//! `BSONObj::toString`): `{ a: 1, b: "x" }`, `[ 1, 2 ]`, `{}`.

use bson::{Bson, Document};

/// A document as the server prints it in errmsgs.
pub fn doc(d: &Document) -> String {
    if d.is_empty() {
        return "{}".to_string();
    }
    let inner: Vec<String> = d
        .iter()
        .map(|(k, v)| format!("{k}: {}", value(v)))
        .collect();
    format!("{{ {} }}", inner.join(", "))
}

/// A value as the server prints it in errmsgs.
pub fn value(v: &Bson) -> String {
    match v {
        Bson::Double(f) => double_nice(*f),
        Bson::String(s) | Bson::Symbol(s) => format!("\"{s}\""),
        Bson::Document(d) => doc(d),
        Bson::Array(a) => {
            if a.is_empty() {
                "[]".to_string()
            } else {
                let inner: Vec<String> = a.iter().map(value).collect();
                format!("[ {} ]", inner.join(", "))
            }
        }
        Bson::Boolean(b) => b.to_string(),
        Bson::Null => "null".to_string(),
        Bson::Undefined => "undefined".to_string(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::ObjectId(o) => format!("ObjectId('{o}')"),
        Bson::DateTime(d) => format!("new Date({})", d.timestamp_millis()),
        Bson::Timestamp(t) => format!("Timestamp({}, {})", t.time, t.increment),
        Bson::RegularExpression(r) => format!("/{}/{}", r.pattern, r.options),
        Bson::Decimal128(d) => format!("NumberDecimal(\"{d}\")"),
        Bson::MinKey => "MinKey".to_string(),
        Bson::MaxKey => "MaxKey".to_string(),
        Bson::Binary(b) => format!(
            "BinData({}, {})",
            u8::from(b.subtype),
            hex::encode_upper(&b.bytes)
        ),
        Bson::JavaScriptCode(c) => c.clone(),
        Bson::JavaScriptCodeWithScope(c) => c.code.clone(),
        Bson::DbPointer(_) => "DBRef(...)".to_string(),
    }
}

/// SRV `StringBuilder::appendDoubleNice`: `printf("%.16g")`, then ".0" unless the text has
/// a '.', 'E' or 'N' (so `1e+16.0`, `nan.0`, `inf.0` are what the server prints).
fn double_nice(x: f64) -> String {
    let mut s = g16(x);
    if !s.contains(['.', 'E', 'N']) {
        s.push_str(".0");
    }
    s
}

/// C's `%.16g`.
fn g16(x: f64) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:.15e}` rounds to 16 significant digits like %.16g does.
    let sci = format!("{x:.15e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mant), exp.abs())
    } else {
        let decimals = (15 - exp).max(0) as usize;
        strip(&format!("{x:.decimals$}"))
    }
}

/// BSON type name as the server spells it in messages (SRV `typeName`).
pub fn type_name(v: &Bson) -> &'static str {
    match v {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn renders_like_the_server() {
        assert_eq!(
            doc(&doc! {"_id": 1, "a": "x", "b": [1, 2.5], "c": {}, "d": 2.0}),
            "{ _id: 1, a: \"x\", b: [ 1, 2.5 ], c: {}, d: 2.0 }"
        );
        assert_eq!(type_name(&Bson::Int64(1)), "long");
        for (x, want) in [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e16, "1e+16.0"),
            (1.5e16, "1.5e+16"),
            (123456789012345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05.0"),
            (f64::NAN, "nan.0"),
            (f64::INFINITY, "inf.0"),
        ] {
            assert_eq!(value(&Bson::Double(x)), want, "{x}");
        }
    }
}
