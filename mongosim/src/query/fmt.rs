//! Server-style rendering of BSON inside error messages (SRV `BSONElement::toString`,
//! `BSONObj::toString`): `{ a: 1, b: "x" }`, `[ 1, 2 ]`, `{}`.

use bson::{Bson, Document};

/// A document as the server prints it in errmsgs.
pub(crate) fn doc(d: &Document) -> String {
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
pub(crate) fn value(v: &Bson) -> String {
    match v {
        Bson::Double(f) => {
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else if f.is_nan() {
                "nan.0".to_string()
            } else if f.is_infinite() {
                if *f > 0.0 { "inf.0" } else { "-inf.0" }.to_string()
            } else {
                format!("{f}")
            }
        }
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

/// BSON type name as the server spells it in messages (SRV `typeName`).
pub(crate) fn type_name(v: &Bson) -> &'static str {
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
    }
}
