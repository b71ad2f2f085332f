use super::*;
use bson::doc;

const UUID: [u8; 16] = [
    0xA5, 0x09, 0x3A, 0xBB, 0x38, 0xFE, 0x4B, 0x9E, 0xA6, 0x7F, 0x01, 0xBB, 0x1A, 0x96, 0xD8, 0x12,
];
const TS: Timestamp = Timestamp {
    time: 1630438675,
    increment: 1,
};

// Reference §5.8 worked example (mongodb-resumetoken-decoder README).
const V1_INSERT: &str = "82612E8513000000012B022C0100296E5A1004A5093ABB38FE4B9EA67F01BB1A96D812463C5F6964003C5F5F5F78000004";

#[test]
fn v1_insert_token_matches_reference_example() {
    let data = ResumeTokenData::event(
        TS,
        1,
        0,
        Some(UUID),
        "insert",
        Some(&doc! {"_id": "___x"}),
        None,
    );
    let tok = data.encode();
    assert_eq!(tok.data, V1_INSERT);
    assert_eq!(tok.type_bits, None);
    let decoded = ResumeToken {
        data: V1_INSERT.to_string(),
        type_bits: None,
    }
    .decode()
    .unwrap();
    assert_eq!(decoded, data);
    assert_eq!(decoded.cluster_time, TS);
    assert_eq!(decoded.version, 1);
    assert_eq!(decoded.token_type, 128);
    assert_eq!(decoded.event_identifier, Some(doc! {"_id": "___x"}));
    assert_eq!(decoded.encode().data, V1_INSERT);
}

#[test]
fn v2_insert_token_matches_reference_example() {
    let data = ResumeTokenData::event(
        TS,
        2,
        0,
        Some(UUID),
        "insert",
        Some(&doc! {"_id": "___x"}),
        None,
    );
    let expected = concat!(
        "82612E851300000001",
        "2B04",
        "2C0100",
        "29",
        "6E",
        "5A1004A5093ABB38FE4B9EA67F01BB1A96D812",
        "46",
        "3C6F7065726174696F6E547970650",
        "03C696E7365727400",
        "46646F63756D656E744B657900",
        "463C5F6964003C5F5F5F780000",
        "00",
        "04"
    );
    let tok = data.encode();
    assert_eq!(tok.data, expected);
    let decoded = tok.decode().unwrap();
    assert_eq!(
        decoded.event_identifier,
        Some(doc! {"operationType": "insert", "documentKey": {"_id": "___x"}})
    );
    assert_eq!(decoded, data);
}

#[test]
fn high_water_mark_tokens() {
    let v1 = ResumeTokenData::high_water_mark(TS, 1).encode();
    assert_eq!(v1.data, "82612E8513000000012B0229296E04");
    let v2 = ResumeTokenData::high_water_mark(TS, 2).encode();
    assert_eq!(v2.data, "82612E8513000000012B0429296E1404");
    let d = v2.decode().unwrap();
    assert!(d.is_high_water_mark());
    assert_eq!(d.uuid, None);
}

#[test]
fn invalidate_and_txn_op_index() {
    let mut data = ResumeTokenData::event(TS, 1, 0, Some(UUID), "drop", None, None);
    let drop = data.encode().data;
    data.from_invalidate = true;
    let inv = data.encode().data;
    assert_eq!(inv, drop.replacen("296E", "296F", 1));
    assert!(inv > drop);
    let t3 = ResumeTokenData::event(TS, 2, 3, Some(UUID), "insert", Some(&doc! {"_id": 1}), None);
    assert!(t3.encode().data.contains("2C01002B06"));
    assert_eq!(t3.encode().decode().unwrap().txn_op_index, 3);
}

#[test]
fn tokens_sort_in_event_order() {
    let ts2 = Timestamp {
        time: TS.time,
        increment: 2,
    };
    let hwm = ResumeTokenData::high_water_mark(ts2, 2).encode().data;
    let e0 = ResumeTokenData::event(
        ts2,
        2,
        0,
        Some(UUID),
        "insert",
        Some(&doc! {"_id": 9}),
        None,
    )
    .encode()
    .data;
    let e1 = ResumeTokenData::event(
        ts2,
        2,
        1,
        Some(UUID),
        "insert",
        Some(&doc! {"_id": 1}),
        None,
    )
    .encode()
    .data;
    let earlier =
        ResumeTokenData::event(TS, 2, 7, Some(UUID), "update", Some(&doc! {"_id": 1}), None)
            .encode()
            .data;
    assert!(earlier < hwm && hwm < e0 && e0 < e1);
}

#[test]
fn numeric_ids_round_trip_with_type_bits() {
    for id in [
        Bson::Int32(0),
        Bson::Int32(-5),
        Bson::Int32(i32::MAX),
        Bson::Int64(1 << 40),
        Bson::Int64(i64::MIN),
        Bson::Double(2.0),
        Bson::Double(1.5),
        Bson::Double(-1234.25),
        Bson::Double(0.001),
        Bson::Double(1e300),
        Bson::String("a\0b".into()),
        Bson::ObjectId(bson::oid::ObjectId::from_bytes([7; 12])),
        Bson::DateTime(bson::DateTime::from_millis(-5)),
        Bson::Array(vec![Bson::Int32(1), Bson::Null, Bson::Boolean(true)]),
        Bson::Document(doc! {"a": 1i64, "b": "x"}),
    ] {
        let data = ResumeTokenData::event(
            TS,
            2,
            0,
            Some(UUID),
            "delete",
            Some(&doc! {"_id": id.clone()}),
            None,
        );
        let tok = data.encode();
        let back = tok.decode().unwrap();
        assert_eq!(back, data, "round trip of {id:?}");
        assert_eq!(back.encode(), tok);
    }
    // Int64 ids need type bits; Int32 and ObjectId ids do not.
    let long = ResumeTokenData::event(
        TS,
        2,
        0,
        Some(UUID),
        "delete",
        Some(&doc! {"_id": 5i64}),
        None,
    );
    assert!(long.encode().type_bits.is_some());
    let int = ResumeTokenData::event(TS, 2, 0, Some(UUID), "delete", Some(&doc! {"_id": 5}), None);
    assert!(int.encode().type_bits.is_none());
}

#[test]
fn numbers_sort_numerically() {
    let enc = |v: Bson| {
        ResumeTokenData::event(TS, 2, 0, Some(UUID), "delete", Some(&doc! {"_id": v}), None)
            .encode()
            .data
    };
    let vals = [
        Bson::Double(-1e300),
        Bson::Int64(-300),
        Bson::Double(-2.5),
        Bson::Int32(-1),
        Bson::Double(-0.5),
        Bson::Int32(0),
        Bson::Double(0.25),
        Bson::Int32(1),
        Bson::Double(1.5),
        Bson::Int64(2),
        Bson::Int32(300),
        Bson::Double(1e300),
    ];
    for w in vals.windows(2) {
        assert!(
            enc(w[0].clone()) < enc(w[1].clone()),
            "{:?} < {:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn malformed_tokens_give_server_errors() {
    let err = ResumeToken::parse(&doc! {"_data": 1}).unwrap_err();
    assert_eq!(err.code, 40647);
    let bad_hex = ResumeToken {
        data: "XYZ".into(),
        type_bits: None,
    };
    assert_eq!(bad_hex.decode().unwrap_err().code, 9);
    let empty = ResumeToken {
        data: String::new(),
        type_bits: None,
    };
    assert_eq!(empty.decode().unwrap_err().code, 40649);
    let bad_version = ResumeToken {
        data: "82612E8513000000012B0A04".into(),
        type_bits: None,
    };
    assert_eq!(bad_version.decode().unwrap_err().code, 50795);
    let truncated = ResumeToken {
        data: V1_INSERT[..40].into(),
        type_bits: None,
    };
    assert!(truncated.decode().is_err());
}
