//! Multi-document transactions (reference §6) through the official driver: isolation until
//! commit, the single `applyOps` oplog entry, the change events it produces (§5.6), aborts,
//! commit retries, error codes and labels; batched deletes (§4.7).

mod common;

use std::time::Duration;

use bson::{doc, spec::BinarySubtype, Bson, Document, Timestamp};
use common::{code, unique_db, TestServer};
use futures::{StreamExt, TryStreamExt};
use mongodb::change_stream::ChangeStream;
use mongodb::Client;
use mongosim::Options;

async fn last_ts(client: &Client) -> Timestamp {
    client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .unwrap()
        .get_timestamp("ts")
        .unwrap()
}

/// Oplog entries after `after`, skipping no-ops.
async fn entries_after(client: &Client, after: Timestamp) -> Vec<Document> {
    client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ts": {"$gt": after}, "op": {"$ne": "n"}})
        .sort(doc! {"$natural": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn next(stream: &mut ChangeStream<Document>) -> Document {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("event in time")
        .expect("open")
        .expect("no error")
}

/// `txnOpIndex` from a v2 token: `82 <ts> 2B04 2C0100 <txnOpIndex> …` (reference §5.8).
fn txn_op_index(ev: &Document) -> u32 {
    let hex = ev.get_document("_id").unwrap().get_str("_data").unwrap();
    assert_eq!(&hex[18..28], "2B042C0100", "{hex}");
    match &hex[28..30] {
        "29" => 0,
        "2B" => u32::from_str_radix(&hex[30..32], 16).unwrap() / 2,
        other => panic!("unexpected txnOpIndex encoding {other} in {hex}"),
    }
}

#[tokio::test]
async fn commit_logs_one_apply_ops_and_events_share_the_commit_time() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db_name = unique_db("txn_commit");
    let db = client.database(&db_name);
    db.create_collection("c").await.unwrap();
    db.create_collection("other").await.unwrap();
    let coll = db.collection::<Document>("c");
    let other = db.collection::<Document>("other");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    let before = last_ts(&client).await;

    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1, "a": 1})
        .session(&mut session)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2})
        .session(&mut session)
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .session(&mut session)
        .await
        .unwrap();
    other
        .insert_one(doc! {"_id": "x"})
        .session(&mut session)
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 2})
        .session(&mut session)
        .await
        .unwrap();

    // invisible outside, visible inside the transaction
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
    let inside: Vec<Document> = coll
        .find(doc! {})
        .session(&mut session)
        .await
        .unwrap()
        .stream(&mut session)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(inside, vec![doc! {"_id": 1, "a": 2}]);
    assert!(
        entries_after(&client, before).await.is_empty(),
        "nothing logged before commit"
    );

    session.commit_transaction().await.unwrap();
    // committing again is idempotent
    session.commit_transaction().await.unwrap();

    let entries = entries_after(&client, before).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e.get_str("op").unwrap(), "c");
    assert_eq!(e.get_str("ns").unwrap(), "admin.$cmd");
    assert!(e.get("ui").is_none());
    let lsid = e.get_document("lsid").unwrap();
    assert!(matches!(lsid.get("id"), Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid));
    assert!(matches!(lsid.get("uid"), Some(Bson::Binary(b)) if b.bytes.len() == 32));
    assert_eq!(e.get("txnNumber"), Some(&Bson::Int64(1)));
    assert_eq!(
        e.get_document("prevOpTime").unwrap(),
        &doc! {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64}
    );
    let inner = e.get_document("o").unwrap().get_array("applyOps").unwrap();
    let kinds: Vec<&str> = inner
        .iter()
        .map(|o| o.as_document().unwrap().get_str("op").unwrap())
        .collect();
    assert_eq!(kinds, ["i", "i", "u", "i", "d"]);
    for op in inner {
        let op = op.as_document().unwrap();
        for f in ["ts", "t", "v", "wall", "lsid", "txnNumber", "prevOpTime"] {
            assert!(op.get(f).is_none(), "inner op has no {f}: {op}");
        }
        assert!(matches!(op.get("ui"), Some(Bson::Binary(_))));
    }
    assert_eq!(
        coll.find_one(doc! {"_id": 1}).await.unwrap(),
        Some(doc! {"_id": 1, "a": 2})
    );
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    assert_eq!(other.count_documents(doc! {}).await.unwrap(), 1);

    // change events: same clusterTime (the commit ts), lsid, txnNumber, increasing
    // txnOpIndex that counts the op on the other collection too (§5.6)
    let commit_ts = e.get_timestamp("ts").unwrap();
    let mut indexes = Vec::new();
    let mut ops = Vec::new();
    for _ in 0..4 {
        let ev = next(&mut stream).await;
        assert_eq!(ev.get_timestamp("clusterTime").unwrap(), commit_ts);
        assert_eq!(ev.get_document("lsid").unwrap(), lsid);
        assert_eq!(ev.get("txnNumber"), Some(&Bson::Int64(1)));
        indexes.push(txn_op_index(&ev));
        ops.push(ev.get_str("operationType").unwrap().to_string());
    }
    assert_eq!(indexes, [0, 1, 2, 4]);
    assert_eq!(ops, ["insert", "insert", "update", "delete"]);
}

#[tokio::test]
async fn aborted_transaction_writes_nothing() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let coll = client
        .database(&unique_db("txn_abort"))
        .collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let before = last_ts(&client).await;
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 0})
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    assert!(entries_after(&client, before).await.is_empty());
    let ids: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, vec![doc! {"_id": 0}]);
}

#[tokio::test]
async fn failed_statement_aborts_and_labels() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("txn_errors"));
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();

    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    let dup = coll
        .insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("E11000"), "{dup}");
    assert!(!dup.contains_label("TransientTransactionError"));
    // the transaction was aborted by the failed statement (spec test "abort ignores
    // TransactionAborted")
    let err = coll
        .insert_one(doc! {"_id": 2})
        .session(&mut session)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    assert!(err.contains_label("TransientTransactionError"));
    session.abort_transaction().await.ok();

    // count is not allowed in a transaction (263)
    let mut s2 = client.start_session().await.unwrap();
    s2.start_transaction().await.unwrap();
    coll.find_one(doc! {}).session(&mut s2).await.unwrap();
    let err = db
        .run_command(doc! {"count": "c"})
        .session(&mut s2)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(263), "{err}");
    assert!(!err.contains_label("TransientTransactionError"));
}

#[tokio::test]
async fn write_conflict_between_transactions() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("txn_conflict"));
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    let mut s0 = client.start_session().await.unwrap();
    let mut s1 = client.start_session().await.unwrap();
    s0.start_transaction().await.unwrap();
    s1.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut s0)
        .await
        .unwrap();
    let err = coll
        .insert_one(doc! {"_id": 1})
        .session(&mut s1)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(112), "{err}");
    assert!(err.contains_label("TransientTransactionError"));
    s0.commit_transaction().await.unwrap();
    let err = s1.commit_transaction().await.unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    assert!(err.contains_label("TransientTransactionError"));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test]
async fn raw_transaction_commands() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let admin = client.database("admin");
    let lsid = doc! {"id": bson::Uuid::new()};
    // commit of a transaction that never started: 251 + TransientTransactionError
    let err = admin
        .run_command(doc! {"commitTransaction": 1, "lsid": lsid.clone(), "txnNumber": 5i64, "autocommit": false})
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    assert!(err.contains_label("TransientTransactionError"));
    // autocommit: true is refused
    let db = client.database(&unique_db("txn_raw"));
    let err = db
        .run_command(
            doc! {"find": "c", "lsid": lsid.clone(), "txnNumber": 6i64, "autocommit": true},
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(72), "{err}");
}

#[tokio::test]
async fn batched_deletes_are_one_apply_ops_without_session() {
    let server = TestServer::start(Options::new().batched_deletes(true));
    if !server.is_sim() {
        return;
    }
    let client = server.client().await;
    let coll = client
        .database(&unique_db("txn_batched"))
        .collection::<Document>("c");
    coll.insert_many((0..3).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    let before = last_ts(&client).await;
    coll.delete_many(doc! {}).await.unwrap();
    let entries = entries_after(&client, before).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert!(e.get("lsid").is_none() && e.get("txnNumber").is_none());
    assert_eq!(
        e.get_document("o")
            .unwrap()
            .get_array("applyOps")
            .unwrap()
            .len(),
        3
    );
    let ts = e.get_timestamp("ts").unwrap();
    for i in 0..3 {
        let ev = next(&mut stream).await;
        assert_eq!(ev.get_str("operationType").unwrap(), "delete");
        assert_eq!(ev.get_timestamp("clusterTime").unwrap(), ts);
        assert!(
            ev.get("lsid").is_none() && ev.get("txnNumber").is_none(),
            "{ev}"
        );
        assert_eq!(txn_op_index(&ev), i);
    }
}

#[tokio::test]
async fn unsatisfiable_write_concern_on_commit() {
    use mongodb::options::{TransactionOptions, WriteConcern};
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("txn_wc"));
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    let mut session = client.start_session().await.unwrap();
    session
        .start_transaction()
        .with_options(
            TransactionOptions::builder()
                .write_concern(
                    WriteConcern::builder()
                        .w(mongodb::options::Acknowledgment::Nodes(10))
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    // the commit happens; a one-node set reports 100 UnsatisfiableWriteConcern after it
    let err = session.commit_transaction().await.unwrap_err();
    match &*err.kind {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(wce)) => {
            assert_eq!(wce.code, 100);
            assert_eq!(wce.code_name, "UnsatisfiableWriteConcern");
        }
        other => panic!("expected a write concern error, got {other:?}"),
    }
    assert!(!err.contains_label("TransientTransactionError"));
    assert!(!err.contains_label("UnknownTransactionCommitResult"));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test]
async fn large_transaction_is_a_chain_of_apply_ops() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("txn_large"));
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    let before = last_ts(&client).await;
    let big = "x".repeat(1_000_000);
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    for i in 0..20 {
        coll.insert_one(doc! {"_id": i, "big": &big})
            .session(&mut session)
            .await
            .unwrap();
    }
    session.commit_transaction().await.unwrap();

    // more than 16 MB of operations: several applyOps entries (reference §6)
    let entries = entries_after(&client, before).await;
    assert!(entries.len() >= 2, "{} entries", entries.len());
    let mut total = 0;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.get_str("ns").unwrap(), "admin.$cmd");
        assert_eq!(e.get("txnNumber"), Some(&Bson::Int64(1)));
        let o = e.get_document("o").unwrap();
        total += o.get_array("applyOps").unwrap().len();
        let prev = e
            .get_document("prevOpTime")
            .unwrap()
            .get_timestamp("ts")
            .unwrap();
        if i == 0 {
            assert_eq!(
                prev,
                Timestamp {
                    time: 0,
                    increment: 0
                }
            );
        } else {
            assert_eq!(prev, entries[i - 1].get_timestamp("ts").unwrap());
        }
        if i + 1 < entries.len() {
            assert_eq!(o.get("partialTxn"), Some(&Bson::Boolean(true)), "{i}");
            assert!(o.get("count").is_none());
        } else {
            assert!(o.get("partialTxn").is_none());
            assert_eq!(o.get("count").and_then(Bson::as_i64), Some(20));
        }
    }
    assert_eq!(total, 20);

    // events: all at the commit (last entry) time, txnOpIndex 0..19
    let commit_ts = entries.last().unwrap().get_timestamp("ts").unwrap();
    for i in 0..20 {
        let ev = next(&mut stream).await;
        assert_eq!(ev.get_timestamp("clusterTime").unwrap(), commit_ts);
        assert_eq!(txn_op_index(&ev), i);
        assert_eq!(
            ev.get_document("documentKey").unwrap(),
            &doc! {"_id": i as i32}
        );
    }
}

#[tokio::test]
async fn transaction_in_4_4_mode() {
    let server = TestServer::start(Options::new().version(mongosim::ServerVersion::V4_4));
    if !server.is_sim() {
        return;
    }
    let client = server.client().await;
    let db = client.database(&unique_db("txn_44"));
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    let before = last_ts(&client).await;
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 1}})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    let entries = entries_after(&client, before).await;
    assert_eq!(entries.len(), 1);
    let inner = entries[0]
        .get_document("o")
        .unwrap()
        .get_array("applyOps")
        .unwrap();
    let ins = inner[0].as_document().unwrap();
    assert!(ins.get("o2").is_none(), "4.4 inserts have no o2: {ins}");
    let upd = inner[1].as_document().unwrap();
    assert_eq!(
        upd.get_document("o").unwrap().get("$v"),
        Some(&Bson::Int32(1))
    );
    for op in ["insert", "update"] {
        let ev = next(&mut stream).await;
        assert_eq!(ev.get_str("operationType").unwrap(), op);
        assert!(ev.get("wallTime").is_none());
        assert_eq!(ev.get("txnNumber"), Some(&Bson::Int64(1)));
        let hex = ev.get_document("_id").unwrap().get_str("_data").unwrap();
        assert_eq!(&hex[18..22], "2B02", "v1 token: {hex}");
    }
}
