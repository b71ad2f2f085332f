//! No input from the server makes a decoder panic: property tests feed real-shaped oplog
//! entries and change events, with fields dropped, retyped and replaced by arbitrary BSON,
//! to the oplog decoder and the change-event decoder. Malformed input is an error (or an
//! entry skipped as not a change), never a panic. `PROPTEST_CASES` sets the number of
//! cases (default 2,000 per property).

use std::collections::VecDeque;

use bson::{doc, spec::BinarySubtype, Binary, Bson, Document, RawDocumentBuf, Timestamp};
use proptest::prelude::*;

use super::change_stream::event::{decode_event, TxnCounter};
use super::oplog::decode::Decoder;
use crate::op::Namespace;

fn ts(n: u32) -> Timestamp {
    Timestamp {
        time: 1_700_000_000,
        increment: n,
    }
}

/// Entries of every kind the oplog decoder reads.
fn oplog_seeds() -> Vec<Document> {
    let lsid = doc! {"id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] }};
    vec![
        doc! {"op": "i", "ns": "db.c", "ts": ts(1), "o": {"_id": 1, "a": 2}, "v": 2},
        doc! {"op": "u", "ns": "db.c", "ts": ts(2), "o": {"$v": 2, "diff": {"u": {"a": 3}, "d": {"b": false}, "sarr": {"a": true, "u0": 1}}}, "o2": {"_id": 1}},
        doc! {"op": "u", "ns": "db.c", "ts": ts(3), "o": {"$set": {"a": 1}, "$unset": {"b": 1}}, "o2": {"_id": 1}},
        doc! {"op": "d", "ns": "db.c", "ts": ts(4), "o": {"_id": 1}},
        doc! {"op": "c", "ns": "db.$cmd", "ts": ts(5), "o": {"renameCollection": "db.c", "to": "db.d"}},
        doc! {"op": "c", "ns": "admin.$cmd", "ts": ts(6), "lsid": lsid.clone(), "txnNumber": 1_i64,
        "o": {"applyOps": [{"op": "i", "ns": "db.c", "o": {"_id": 2}}, {"op": "d", "ns": "db.c", "o": {"_id": 3}}]}},
        doc! {"op": "c", "ns": "admin.$cmd", "ts": ts(7), "lsid": lsid.clone(), "txnNumber": 2_i64,
        "o": {"applyOps": [{"op": "i", "ns": "db.c", "o": {"_id": 4}}], "partialTxn": true}},
        doc! {"op": "c", "ns": "admin.$cmd", "ts": ts(8), "lsid": lsid, "txnNumber": 2_i64,
        "prevOpTime": {"ts": ts(7), "t": 1_i64}, "o": {"applyOps": [{"op": "i", "ns": "db.c", "o": {"_id": 5}}], "count": 2_i64}},
        doc! {"op": "n", "ns": "", "ts": ts(9), "o": {"msg": "periodic noop"}},
    ]
}

/// Events of every kind the change-event decoder reads.
fn event_seeds() -> Vec<Document> {
    let id = doc! {"_data": "8263AB12340000000A2B0229296E04"};
    let ns = doc! {"db": "db", "coll": "c"};
    vec![
        doc! {"_id": id.clone(), "operationType": "insert", "clusterTime": ts(1), "ns": ns.clone(),
        "documentKey": {"_id": 1}, "fullDocument": {"_id": 1, "a": 1}},
        doc! {"_id": id.clone(), "operationType": "update", "clusterTime": ts(2), "ns": ns.clone(),
        "documentKey": {"_id": 1}, "updateDescription": {"updatedFields": {"a": 2}, "removedFields": ["b"], "truncatedArrays": [{"field": "arr", "newSize": 1}]},
        "lsid": {"id": 1}, "txnNumber": 3_i64},
        doc! {"_id": id.clone(), "operationType": "delete", "clusterTime": ts(3), "ns": ns.clone(), "documentKey": {"_id": 1}},
        doc! {"_id": id.clone(), "operationType": "rename", "clusterTime": ts(4), "ns": ns.clone(), "to": {"db": "db", "coll": "d"}},
        doc! {"_id": id, "operationType": "invalidate", "clusterTime": ts(5)},
    ]
}

/// Arbitrary BSON, a few levels deep.
fn any_bson() -> impl Strategy<Value = Bson> {
    let leaf = prop_oneof![
        Just(Bson::Null),
        any::<bool>().prop_map(Bson::Boolean),
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        ".{0,12}".prop_map(Bson::String),
        (any::<u32>(), any::<u32>()).prop_map(|(t, i)| Bson::Timestamp(Timestamp {
            time: t,
            increment: i
        })),
        Just(Bson::String("db.c".into())),
        Just(Bson::String("i".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            prop::collection::vec(("[a-z_$]{1,6}", inner), 0..4)
                .prop_map(|kv| Bson::Document(kv.into_iter().collect())),
        ]
    })
}

/// One change to a document: drop a field, or set one (existing or new) to `value`.
#[derive(Debug, Clone)]
enum Edit {
    Drop(usize),
    Set(usize, Bson),
    Nested(usize, usize, Bson),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::Drop),
        (any::<usize>(), any_bson()).prop_map(|(i, v)| Edit::Set(i, v)),
        (any::<usize>(), any::<usize>(), any_bson()).prop_map(|(i, j, v)| Edit::Nested(i, j, v)),
    ];
    prop::collection::vec(edit, 1..4)
}

fn apply(mut doc: Document, edits: &[Edit]) -> Document {
    for edit in edits {
        let keys: Vec<String> = doc.keys().cloned().collect();
        let key = |i: usize| keys[i % keys.len().max(1)].clone();
        match edit {
            Edit::Drop(i) if !keys.is_empty() => {
                doc.remove(key(*i));
            }
            Edit::Set(i, v) if !keys.is_empty() => {
                doc.insert(key(*i), v.clone());
            }
            Edit::Nested(i, j, v) if !keys.is_empty() => {
                if let Some(Bson::Document(inner)) = doc.get_mut(key(*i)) {
                    let inner_keys: Vec<String> = inner.keys().cloned().collect();
                    if let Some(k) = inner_keys.get(j % inner_keys.len().max(1)) {
                        inner.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                doc.insert("x", Bson::Null);
            }
        }
    }
    doc
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
    ))]

    #[test]
    fn the_oplog_decoder_never_panics(seed in 0..9_usize, edits in edits(), filtered in any::<bool>()) {
        let namespaces = if filtered { vec![Namespace::parse("db.c").unwrap()] } else { Vec::new() };
        let mut decoder = Decoder::new(namespaces, seed % 2 == 0, 1_000);
        let mut out = VecDeque::new();
        // The seeds before it first (a partial transaction is then pending), then the edit.
        for entry in oplog_seeds().into_iter().take(seed) {
            let _ = decoder.process_into(entry, &mut out);
        }
        let entry = apply(oplog_seeds()[seed].clone(), &edits);
        let _ = decoder.process_into(entry, &mut out);
    }

    #[test]
    fn the_change_event_decoder_never_panics(seed in 0..5_usize, edits in edits()) {
        let event = apply(event_seeds()[seed].clone(), &edits);
        let raw = RawDocumentBuf::from_document(&event).expect("encodable");
        let _ = decode_event(&raw, &mut TxnCounter::default());
    }
}
