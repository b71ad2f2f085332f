//! Adapters against a server (mongosim, or `MONGODB_URI`): a burst of updates through
//! `batch_fetch` + `Ordering::Document`, and three `consistent_shard` workers.
// `mongotail::Error` is large by design (see the crate's `result_large_err` allow).
#![allow(clippy::result_large_err)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use common::{assert_quiet, take_ops, unique_db, TestServer};
use futures::StreamExt;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::{Client, IndexModel};
use mongotail::ext::DEFAULT_BATCH_WINDOW;
use mongotail::{
    HashRing, Namespace, Op, OpKind, OpStreamExt, OplogOptions, OplogStream, Ordering,
};

/// A client that counts the `find` commands it sends to database `db`.
async fn counting_client(server: &TestServer, db: &str) -> (Client, Arc<AtomicUsize>) {
    let finds = Arc::new(AtomicUsize::new(0));
    let (counter, db) = (finds.clone(), db.to_owned());
    let client = server
        .client_with(move |opts| {
            opts.command_event_handler = Some(EventHandler::callback(move |ev: CommandEvent| {
                if let CommandEvent::Started(started) = ev {
                    if started.command_name == "find" && started.db == db {
                        counter.fetch_add(1, AtomicOrdering::SeqCst);
                    }
                }
            }));
        })
        .await;
    (client, finds)
}

fn oplog(server: &TestServer, db: &str, start: Timestamp) -> OplogStream {
    OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(Namespace::database(db).unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_updates_through_batch_fetch_keeps_document_order() {
    const DOCS: i32 = 1_000;
    const ROUNDS: i32 = 10;
    const BATCH: usize = 50;
    let server = TestServer::start().await;
    let db_name = unique_db("burst");
    let coll = server.client.database(&db_name).collection::<Document>("c");
    coll.insert_many((0..DOCS).map(|i| doc! {"_id": i, "v": 0}))
        .await
        .unwrap();
    let start = server.latest_ts().await;
    for round in 1..=ROUNDS {
        // One oplog entry per document and round.
        let r = coll
            .update_many(doc! {}, doc! {"$set": {"v": round}})
            .await
            .unwrap();
        assert_eq!(r.modified_count, DOCS as u64);
    }

    let (fetch_client, finds) = counting_client(&server, &db_name).await;
    let mut ops = oplog(&server, &db_name, start)
        .batch_fetch(fetch_client, BATCH, DEFAULT_BATCH_WINDOW)
        .workers(4)
        .ordered(Ordering::Document);
    let total = (DOCS * ROUNDS) as usize;
    let got = take_ops(&mut ops, total).await;
    assert_quiet(&mut ops, Duration::from_millis(500)).await;

    // Every op once, in order per document, with the document as fetched after the burst.
    let mut last: HashMap<i32, Timestamp> = HashMap::new();
    let mut seen = HashSet::new();
    for op in &got {
        assert_eq!(op.kind, OpKind::Update);
        let id = op.id.as_ref().and_then(Bson::as_i32).expect("int id");
        assert!(seen.insert((id, op.timestamp)), "op delivered twice");
        if let Some(prev) = last.insert(id, op.timestamp) {
            assert!(
                prev < op.timestamp,
                "document {id}: {prev:?} after {:?}",
                op.timestamp
            );
        }
        let data = op.data.as_ref().expect("fetched");
        assert_eq!(data.get_i32("_id"), Ok(id));
        assert_eq!(data.get_i32("v"), Ok(ROUNDS));
        assert!(!op.document_missing);
    }
    assert_eq!(seen.len(), total);
    assert_eq!(last.len(), DOCS as usize);

    // One find per full batch, give or take a few partial batches closed by the window.
    let finds = finds.load(AtomicOrdering::SeqCst);
    let ideal = total / BATCH;
    assert!(
        (ideal..=ideal + ideal / 4).contains(&finds),
        "{finds} finds for {total} updates in batches of {BATCH}"
    );
}

/// Identity of an op in these tests: oplog time, kind and id.
fn identity(op: &Op) -> (Timestamp, String, String) {
    (
        op.timestamp,
        format!("{:?}", op.kind),
        format!("{:?}", op.id),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_see_every_op_exactly_once() {
    let server = TestServer::start().await;
    let db_name = unique_db("shard");
    let db = server.client.database(&db_name);
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    let start = server.latest_ts().await;
    coll.insert_many((0..300).map(|i| doc! {"_id": i, "v": 0}))
        .await
        .unwrap();
    for round in 1..=2 {
        coll.update_many(doc! {}, doc! {"$set": {"v": round}})
            .await
            .unwrap();
    }
    coll.delete_many(doc! {"_id": {"$lt": 30}}).await.unwrap();
    // A command: no document id, keyed by namespace.
    coll.create_index(IndexModel::builder().keys(doc! {"v": 1}).build())
        .await
        .unwrap();

    // Everything, unsharded, as the reference.
    let mut all = oplog(&server, &db_name, start);
    let mut reference = take_ops(&mut all, 300 + 600 + 30 + 1).await;
    // Index builds may log more than one command entry (startIndexBuild/commitIndexBuild).
    while let Ok(Some(op)) = tokio::time::timeout(Duration::from_secs(1), all.next()).await {
        reference.push(op.unwrap());
    }
    assert!(reference.iter().any(|op| op.id.is_none()), "the command op");

    let ring = HashRing::new(["Tom", "Dick", "Harry"]).unwrap();
    let mut union: HashMap<(Timestamp, String, String), usize> = HashMap::new();
    for name in ["Tom", "Dick", "Harry"] {
        let expected = reference.iter().filter(|op| ring.owner(op) == name).count();
        assert!(expected > 0, "{name} owns nothing");
        let mut mine = oplog(&server, &db_name, start)
            .consistent_shard(ring.worker(name).unwrap())
            .batch_fetch(server.client.clone(), 50, DEFAULT_BATCH_WINDOW);
        let got = take_ops(&mut mine, expected).await;
        assert_quiet(&mut mine, Duration::from_millis(300)).await;
        for op in &got {
            assert_eq!(ring.owner(op), name);
            if op.kind == OpKind::Update {
                // Documents 0..30 were deleted before the fetch.
                let id = op.id.as_ref().and_then(Bson::as_i32).unwrap();
                if id < 30 {
                    assert!(op.data.is_none() && op.document_missing, "{op:?}");
                } else {
                    assert_eq!(op.data.as_ref().unwrap().get_i32("v"), Ok(2));
                    assert!(!op.document_missing);
                }
            }
            *union.entry(identity(op)).or_default() += 1;
        }
    }
    let want: HashSet<_> = reference.iter().map(identity).collect();
    assert_eq!(want.len(), reference.len());
    assert_eq!(union.len(), reference.len(), "every op seen by some worker");
    assert!(union.values().all(|&n| n == 1), "no op seen twice");
    assert!(union.keys().all(|k| want.contains(k)));
}
