//! Snapshot, then live, with no gap: `start` with direct reads and a live source that starts
//! from now takes one start point before the first direct read, so every change made while
//! the collection is read arrives as an op (against mongosim, or `MONGODB_URI`).

mod common;

use std::collections::BTreeSet;

use bson::{doc, Document};
use common::{unique_db, TestServer, WAIT};
use futures::StreamExt;
use mongotail::{start, Namespace, OplogOptions, Source, TailOptions};

#[tokio::test]
async fn changes_made_during_the_snapshot_arrive_as_ops() {
    let server = TestServer::start().await;
    let db = unique_db("snapshot");
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_many((0..2_000).map(|i| doc! {"_id": i, "v": 0}))
        .await
        .unwrap();
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let (mut ops, handle) = start(
        &server.client,
        TailOptions::new()
            .oplog(OplogOptions::new().namespace(ns.clone()))
            .direct_read(ns),
    );
    // The first op comes from the snapshot; change documents while the rest is read.
    let first = tokio::time::timeout(WAIT, ops.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.source, Source::Direct);
    let changed: BTreeSet<i32> = (0..2_000).step_by(100).collect();
    for id in &changed {
        coll.update_one(doc! {"_id": id}, doc! {"$set": {"v": 1}})
            .await
            .unwrap();
    }
    let mut read = BTreeSet::new();
    read.insert(first.id.clone().unwrap().as_i32().unwrap());
    let mut updated = BTreeSet::new();
    while read.len() < 2_000 || updated.len() < changed.len() {
        let op = tokio::time::timeout(WAIT, ops.next())
            .await
            .unwrap_or_else(|_| panic!("{} read, {} updates", read.len(), updated.len()))
            .unwrap()
            .unwrap();
        let id = op.id.clone().unwrap().as_i32().unwrap();
        match op.source {
            Source::Direct => assert!(read.insert(id), "{id} read twice"),
            Source::Oplog => {
                assert!(op.is_update(), "{op:?}");
                assert!(updated.insert(id), "{id} updated twice");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        updated, changed,
        "every change made during the snapshot arrives"
    );
    handle.stop();
}
