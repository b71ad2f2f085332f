use super::*;
use bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, DateTime, Regex, Timestamp};

fn ordered(values: &[Bson]) {
    for (i, a) in values.iter().enumerate() {
        for (j, b) in values.iter().enumerate() {
            assert_eq!(cmp_bson(a, b), i.cmp(&j), "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn cross_type_order() {
    ordered(&[
        Bson::MinKey,
        Bson::Null,
        Bson::Int32(1),
        Bson::String("a".into()),
        Bson::Document(doc! {}),
        Bson::Array(vec![]),
        Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![],
        }),
        Bson::ObjectId(ObjectId::from_bytes([0; 12])),
        Bson::Boolean(false),
        Bson::DateTime(DateTime::from_millis(0)),
        Bson::Timestamp(Timestamp {
            time: 0,
            increment: 0,
        }),
        Bson::RegularExpression(Regex {
            pattern: "a".into(),
            options: String::new(),
        }),
        Bson::JavaScriptCode("x".into()),
        Bson::MaxKey,
    ]);
}

#[test]
fn null_and_undefined_equal() {
    assert_eq!(cmp_bson(&Bson::Null, &Bson::Undefined), Ordering::Equal);
}

#[test]
fn numbers_across_types() {
    assert!(bson_eq(&Bson::Int32(1), &Bson::Double(1.0)));
    assert!(bson_eq(&Bson::Int64(1), &Bson::Int32(1)));
    assert!(bson_eq(
        &Bson::Decimal128("1.0".parse().unwrap()),
        &Bson::Int32(1)
    ));
    ordered(&[
        Bson::Double(f64::NAN),
        Bson::Double(f64::NEG_INFINITY),
        Bson::Int64(i64::MIN),
        Bson::Int32(-1),
        Bson::Double(-0.5),
        Bson::Int32(0),
        Bson::Double(0.5),
        Bson::Int64(1),
        Bson::Double(1.5),
        Bson::Int64(i64::MAX),
        Bson::Double(f64::INFINITY),
    ]);
    assert!(bson_eq(&Bson::Double(f64::NAN), &Bson::Double(f64::NAN)));
    assert!(bson_eq(&Bson::Double(-0.0), &Bson::Int32(0)));
    // i64 precision is kept: 2^53 + 1 > 2^53 as double.
    assert_eq!(
        cmp_bson(
            &Bson::Int64((1 << 53) + 1),
            &Bson::Double((1u64 << 53) as f64)
        ),
        Ordering::Greater
    );
}

#[test]
fn strings_bytewise_and_symbol() {
    ordered(&[
        Bson::String("".into()),
        Bson::String("B".into()),
        Bson::String("a".into()),
        Bson::String("ab".into()),
        Bson::String("é".into()),
    ]);
    assert!(bson_eq(
        &Bson::Symbol("x".into()),
        &Bson::String("x".into())
    ));
}

#[test]
fn documents_and_arrays() {
    ordered(&[
        Bson::Document(doc! {}),
        Bson::Document(doc! {"a": 1}),
        Bson::Document(doc! {"a": 1, "b": 1}),
        Bson::Document(doc! {"a": 2}),
        Bson::Document(doc! {"b": 0}),
        Bson::Document(doc! {"a": "x"}),
    ]);
    // field values of lower canonical type sort before field names
    assert_eq!(
        cmp_bson(
            &Bson::Document(doc! {"b": 1}),
            &Bson::Document(doc! {"a": "s"})
        ),
        Ordering::Less
    );
    ordered(&[
        Bson::Array(vec![]),
        Bson::Array(vec![Bson::Int32(1)]),
        Bson::Array(vec![Bson::Int32(1), Bson::Int32(0)]),
        Bson::Array(vec![Bson::Int32(2)]),
        Bson::Array(vec![Bson::String("a".into())]),
    ]);
    assert!(bson_eq(
        &Bson::Document(doc! {"a": 1, "b": [1.0]}),
        &Bson::Document(doc! {"a": 1i64, "b": [1]})
    ));
}

#[test]
fn binary_by_length_then_subtype() {
    let b = |st: BinarySubtype, bytes: Vec<u8>| Bson::Binary(Binary { subtype: st, bytes });
    ordered(&[
        b(BinarySubtype::UserDefined(0x80), vec![9]),
        b(BinarySubtype::Generic, vec![0, 0]),
        b(BinarySubtype::Uuid, vec![0, 0]),
        b(BinarySubtype::Uuid, vec![0, 1]),
    ]);
}

#[test]
fn dates_timestamps_bools() {
    ordered(&[
        Bson::DateTime(DateTime::from_millis(-5)),
        Bson::DateTime(DateTime::from_millis(3)),
    ]);
    ordered(&[
        Bson::Timestamp(Timestamp {
            time: 1,
            increment: 9,
        }),
        Bson::Timestamp(Timestamp {
            time: 2,
            increment: 0,
        }),
        Bson::Timestamp(Timestamp {
            time: u32::MAX,
            increment: 0,
        }),
    ]);
    ordered(&[Bson::Boolean(false), Bson::Boolean(true)]);
}

#[test]
fn collation_strength_two_ignores_case() {
    let c = Collation::parse(&doc! {"locale": "en_US", "strength": 2}).unwrap();
    let c = c.as_ref();
    let (a, b) = (Bson::String("PING".into()), Bson::String("ping".into()));
    assert_eq!(cmp_coll(&a, &b, c), Ordering::Equal);
    assert_ne!(cmp_coll(&a, &b, None), Ordering::Equal);
    assert_eq!(
        cmp_coll(
            &Bson::Document(doc! {"x": "A"}),
            &Bson::Document(doc! {"x": "a"}),
            c
        ),
        Ordering::Equal
    );
    assert_eq!(Collation::parse(&doc! {"locale": "simple"}).unwrap(), None);
    let e = Collation::parse(&doc! {"locale": "xx"}).unwrap_err();
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (2, "Field 'locale' is invalid in: { locale: \"xx\" }")
    );
    assert!(Collation::parse(&doc! {"locale": "en", "strength": 9}).is_err());
}

#[test]
fn binary_equality_is_type_sensitive() {
    assert!(!binary_eq(&Bson::Int32(1), &Bson::Double(1.0)));
    assert!(binary_eq(&Bson::Int32(1), &Bson::Int32(1)));
    assert!(!binary_eq(
        &Bson::Document(doc! {"a": 1, "b": 2}),
        &Bson::Document(doc! {"b": 2, "a": 1})
    ));
    assert!(!binary_eq(&Bson::Double(0.0), &Bson::Double(-0.0)));
}
