//! Consistent sharding: every op goes to exactly one of `k` workers, adding a worker
//! moves about `1/(k+1)` of the keys (and only to the new worker), rings built from a
//! list, TOML or BSON agree, and configuration errors are clear.
// `mongotail::Error` is large by design (see the crate's `result_large_err` allow).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use bson::{doc, oid::ObjectId, Bson};
use futures::executor::block_on;
use futures::{stream, StreamExt};
use mongotail::{Error, HashRing, Namespace, Op, OpKind, OpStreamExt, Result};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = Option<Bson>> {
    prop_oneof![
        any::<i32>().prop_map(|i| Some(Bson::Int32(i))),
        any::<i64>().prop_map(|i| Some(Bson::Int64(i))),
        "[a-z0-9]{0,12}".prop_map(|s| Some(Bson::String(s))),
        any::<[u8; 12]>().prop_map(|b| Some(Bson::ObjectId(ObjectId::from_bytes(b)))),
        (any::<i32>(), "[a-z]{1,4}").prop_map(|(i, s)| Some(Bson::Document(doc! {"a": i, "b": s}))),
        Just(None),
    ]
}

fn op(coll: u8, id: Option<Bson>, tag: u32) -> Result<Op> {
    let kind = if id.is_some() {
        OpKind::Update
    } else {
        OpKind::DropCollection
    };
    Ok(
        Op::new(kind, Namespace::new("db", format!("c{coll}")).unwrap(), id).with_timestamp(
            bson::Timestamp {
                time: 1,
                increment: tag,
            },
        ),
    )
}

fn names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("worker-{i}")).collect()
}

proptest! {
    #[test]
    fn every_op_goes_to_exactly_one_worker(
        k in 1usize..7,
        ops in prop::collection::vec((0u8..3, id()), 0..200),
    ) {
        let ring = HashRing::new(names(k)).unwrap();
        let input = || {
            ops.iter()
                .enumerate()
                .map(|(i, (coll, id))| op(*coll, id.clone(), i as u32))
        };
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for name in ring.workers() {
            let worker = ring.worker(name).unwrap();
            let mine: Vec<Result<Op>> =
                block_on(stream::iter(input()).consistent_shard(worker).collect());
            for r in mine {
                let op = r.unwrap();
                prop_assert_eq!(ring.owner(&op), name.as_str());
                *seen.entry(op.timestamp.increment).or_default() += 1;
            }
        }
        prop_assert_eq!(seen.len(), ops.len());
        prop_assert!(seen.values().all(|&n| n == 1));
    }

}

proptest! {
    // Each case hashes 8,000 keys: fewer cases keep the suite fast.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn adding_a_worker_moves_about_one_in_k_plus_one(k in 1usize..9, salt in any::<u32>()) {
        let before = HashRing::new(names(k)).unwrap();
        let new = format!("new-{salt}");
        let mut grown = names(k);
        grown.push(new.clone());
        let after = HashRing::new(grown).unwrap();
        const KEYS: i32 = 4000;
        let mut moved = 0;
        for i in 0..KEYS {
            let id = Bson::Int32(i.wrapping_mul(7919) ^ salt as i32);
            let (a, b) = (before.owner_of_id(&id), after.owner_of_id(&id));
            if a != b {
                prop_assert_eq!(b, new.as_str(), "keys only move to the new worker");
                moved += 1;
            }
        }
        let expected = f64::from(KEYS) / (k as f64 + 1.0);
        let moved = f64::from(moved);
        prop_assert!(
            moved > expected * 0.5 && moved < expected * 1.6,
            "moved {} keys, expected about {}", moved, expected
        );
    }
}

#[test]
fn errors_pass_through_to_every_worker() {
    let ring = HashRing::new(["Tom", "Dick"]).unwrap();
    for name in ["Tom", "Dick"] {
        let out: Vec<Result<Op>> = block_on(
            stream::iter(vec![Err(Error::Config("boom".into()))])
                .consistent_shard(ring.worker(name).unwrap())
                .collect(),
        );
        assert!(matches!(&out[..], [Err(Error::Config(m))] if m == "boom"));
    }
}

#[test]
fn list_toml_and_bson_rings_agree() {
    let list = HashRing::new(["Tom", "Dick", "Harry"]).unwrap();
    let toml = HashRing::from_toml_str("workers = [\"Harry\", \"Dick\", \"Tom\"]").unwrap();
    let bson = HashRing::from_document(&doc! {"workers": ["Dick", "Tom", "Harry"]}).unwrap();
    for i in 0..2000 {
        let id = Bson::Int32(i);
        assert_eq!(list.owner_of_id(&id), toml.owner_of_id(&id));
        assert_eq!(list.owner_of_id(&id), bson.owner_of_id(&id));
    }
}

#[test]
fn numeric_types_of_one_value_are_different_keys() {
    // Like the server, where `_id: 1` and `_id: NumberLong(1)` are distinct documents
    // only by type, the ring keys on the BSON type as well as the value.
    let ring = HashRing::new(names(16)).unwrap();
    let differs = (0..200)
        .any(|i| ring.owner_of_id(&Bson::Int32(i)) != ring.owner_of_id(&Bson::Int64(i64::from(i))));
    assert!(differs);
}

#[test]
fn configuration_errors() {
    let cases: Vec<(&str, Result<HashRing>)> = vec![
        ("empty", HashRing::new(Vec::<String>::new())),
        ("duplicate", HashRing::new(["Tom", "Tom"])),
        ("malformed", HashRing::from_toml_str("workers = [\"Tom\"")),
        ("missing key", HashRing::from_toml_str("names = [\"Tom\"]")),
        (
            "not strings",
            HashRing::from_document(&doc! {"workers": [1, 2]}),
        ),
        ("zero replicas", HashRing::with_replicas(["Tom"], 0)),
    ];
    for (what, r) in cases {
        match r {
            Err(Error::Config(msg)) => assert!(msg.contains("hash ring"), "{what}: {msg}"),
            other => panic!("{what}: expected a config error, got {other:?}"),
        }
    }
    let ring = HashRing::new(["Tom"]).unwrap();
    let err = ring.worker("Harry").unwrap_err();
    assert!(err.to_string().contains("Harry"), "{err}");
}
