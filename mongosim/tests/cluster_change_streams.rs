//! Change streams through the router with the official driver: per-shard streams merged in
//! resume-token order, `documentKey` with the shard key first, migrations invisible, a
//! shard added later picked up, resuming across shards, one `drop` then `invalidate` for a
//! sharded collection (reference sharded-clusters.md §5).

use std::time::Duration;

use bson::{doc, Document};
use futures::StreamExt;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::Client;
use mongosim::{Cluster, ClusterOptions};

fn options() -> ClusterOptions {
    // Idle shards advance the merged stream through their periodic no-ops (§5.3).
    ClusterOptions::new()
        .shards(2)
        .noop_interval(Duration::from_millis(50))
}

async fn client(uri: &str) -> Client {
    Client::with_uri_str(uri).await.expect("client")
}

async fn sharded(c: &Client, ns: &str, key: Document) {
    c.database("admin")
        .run_command(doc! {"shardCollection": ns, "key": key})
        .await
        .unwrap();
}

async fn next<T>(s: &mut ChangeStream<ChangeStreamEvent<T>>) -> ChangeStreamEvent<T>
where
    T: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    s.next().await.expect("stream open").expect("event")
}

fn data(t: &ResumeToken) -> String {
    bson::to_document(t)
        .unwrap()
        .get_str("_data")
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn events_from_every_shard_merge_in_resume_token_order() {
    let cluster = Cluster::start(options()).unwrap();
    let c = client(&cluster.uri()).await;
    sharded(&c, "cs.h", doc! {"k": "hashed"}).await;
    let coll = c.database("cs").collection::<Document>("h");
    let mut stream = coll.watch().await.unwrap();
    for i in 0..20 {
        coll.insert_one(doc! {"_id": i, "k": i}).await.unwrap();
    }
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let ev = next(&mut stream).await;
        assert_eq!(ev.operation_type, OperationType::Insert);
        let key = ev.document_key.clone().unwrap();
        assert_eq!(key.keys().collect::<Vec<_>>(), vec!["k", "_id"]);
        ids.push(key.get_i32("_id").unwrap());
        tokens.push(data(&ev.id));
    }
    // Both shards got some of the documents, and the router returned them in token order,
    // which here is the order they were written.
    let mut sorted = tokens.clone();
    sorted.sort();
    assert_eq!(tokens, sorted);
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    for i in 0..2 {
        let n = client(&cluster.shard_uri(i))
            .await
            .database("cs")
            .collection::<Document>("h")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert!(n > 0, "shard {i} got nothing");
    }
    // Resuming from the 5th event's token continues with the 6th, across shards.
    let mut resumed = coll
        .watch()
        .resume_after(
            bson::from_bson::<ResumeToken>(bson::to_bson(&tokens_doc(&tokens[4])).unwrap())
                .unwrap(),
        )
        .await
        .unwrap();
    for want in 5..20 {
        let ev = next(&mut resumed).await;
        assert_eq!(ev.document_key.unwrap().get_i32("_id"), Ok(want));
    }
}

fn tokens_doc(data: &str) -> Document {
    doc! {"_data": data}
}

#[tokio::test]
async fn migrations_are_invisible_and_a_new_shard_is_picked_up() {
    let mut cluster = Cluster::start(options()).unwrap();
    let c = client(&cluster.uri()).await;
    c.database("admin")
        .run_command(doc! {"enableSharding": "mv", "primaryShard": "shard01"})
        .await
        .unwrap();
    sharded(&c, "mv.r", doc! {"k": 1}).await;
    let coll = c.database("mv").collection::<Document>("r");
    coll.insert_many((0..10).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    let mut stream = c.watch().await.unwrap();
    let admin = c.database("admin");
    admin
        .run_command(doc! {"split": "mv.r", "middle": {"k": 5}})
        .await
        .unwrap();
    admin
        .run_command(
            doc! {"moveChunk": "mv.r", "find": {"k": 7}, "to": "shard02", "_waitForDelete": true},
        )
        .await
        .unwrap();
    let added = cluster.add_shard().unwrap();
    admin
        .run_command(doc! {"moveChunk": "mv.r", "find": {"k": 2}, "to": added.clone(), "_waitForDelete": true})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 100, "k": 8}).await.unwrap();
    coll.insert_one(doc! {"_id": 101, "k": 1}).await.unwrap();
    coll.update_one(doc! {"k": 1, "_id": 101}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    // Only the three user writes: no clone inserts, no range deletes.
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Insert);
    assert_eq!(ev.document_key, Some(doc! {"k": 8, "_id": 100}));
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Insert);
    assert_eq!(ev.document_key, Some(doc! {"k": 1, "_id": 101}));
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Update);
    assert_eq!(ev.document_key, Some(doc! {"k": 1, "_id": 101}));
    // The last two writes live on the shard added after the stream was opened.
    let on_new = client(&cluster.shard_uri(2))
        .await
        .database("mv")
        .collection::<Document>("r")
        .count_documents(doc! {"_id": 101})
        .await
        .unwrap();
    assert_eq!(on_new, 1);
}

#[tokio::test]
async fn dropping_a_sharded_collection_gives_one_drop_then_invalidate() {
    let cluster = Cluster::start(options()).unwrap();
    let c = client(&cluster.uri()).await;
    sharded(&c, "dr.h", doc! {"k": "hashed"}).await;
    let coll = c.database("dr").collection::<Document>("h");
    coll.insert_many((0..6).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 50, "k": 50}).await.unwrap();
    coll.drop().await.unwrap();
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Insert);
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Drop);
    let ev = next(&mut stream).await;
    assert_eq!(ev.operation_type, OperationType::Invalidate);
    assert!(
        stream.next().await.is_none(),
        "the stream ends after invalidate"
    );
    // Both shards dropped their copy; one drop is user-visible.
    let mut visible = 0;
    for i in 0..2 {
        let drops: Vec<Document> = client(&cluster.shard_uri(i))
            .await
            .database("local")
            .collection::<Document>("oplog.rs")
            .find(doc! {"o.drop": "h"})
            .await
            .unwrap()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(drops.len(), 1, "shard {i}");
        if drops[0].get_bool("fromMigrate") != Ok(true) {
            visible += 1;
        }
    }
    assert_eq!(visible, 1);
}

#[tokio::test]
async fn idle_shards_advance_the_post_batch_resume_token() {
    let cluster = Cluster::start(options()).unwrap();
    let c = client(&cluster.uri()).await;
    let coll = c.database("idle").collection::<Document>("c");
    coll.insert_one(doc! {"x": 1}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    let first = stream.resume_token().map(|t| data(&t));
    // Nothing is written: the token still moves, carried by the shards' periodic no-ops.
    let mut advanced = false;
    for _ in 0..200 {
        assert!(stream.next_if_any().await.unwrap().is_none());
        let now = stream.resume_token().map(|t| data(&t));
        if now > first {
            advanced = true;
            break;
        }
    }
    assert!(advanced, "postBatchResumeToken never advanced");
}

#[tokio::test]
async fn show_expanded_events_reports_shard_collection() {
    let cluster = Cluster::start(options()).unwrap();
    let c = client(&cluster.uri()).await;
    let db = c.database("ex");
    db.create_collection("c").await.unwrap();
    let mut stream = db
        .collection::<Document>("c")
        .watch()
        .show_expanded_events(true)
        .await
        .unwrap()
        .with_type::<Document>();
    sharded(&c, "ex.c", doc! {"_id": 1}).await;
    // The first event is shardCollection (spec test change-streams-showExpandedEvents).
    let ev = stream.next().await.unwrap().unwrap();
    assert_eq!(ev.get_str("operationType"), Ok("shardCollection"), "{ev}");
    let desc = ev.get_document("operationDescription").unwrap();
    assert_eq!(desc.get_document("shardKey").unwrap(), &doc! {"_id": 1});
    assert!(ev.get("collectionUUID").is_some(), "{ev}");
}

#[tokio::test]
async fn a_44_cluster_streams_shard_keys_in_insert_document_keys() {
    let cluster = Cluster::start(options().version(mongosim::ServerVersion::V4_4)).unwrap();
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    admin
        .run_command(doc! {"enableSharding": "old"})
        .await
        .unwrap();
    sharded(&c, "old.c", doc! {"region": 1}).await;
    let coll = c.database("old").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1, "region": "eu"})
        .await
        .unwrap();
    let ev = next(&mut stream).await;
    assert_eq!(ev.document_key, Some(doc! {"region": "eu", "_id": 1}));
    // 4.4 oplog inserts have no o2 (reference §4.1): the key comes from the metadata.
    let shard = client(&cluster.shard_uri(0)).await;
    let other = client(&cluster.shard_uri(1)).await;
    let mut found = 0;
    for s in [&shard, &other] {
        let e = s
            .database("local")
            .collection::<Document>("oplog.rs")
            .find_one(doc! {"ns": "old.c", "op": "i"})
            .await
            .unwrap();
        if let Some(e) = e {
            assert!(!e.contains_key("o2"), "{e}");
            found += 1;
        }
    }
    assert_eq!(found, 1);
}

#[tokio::test]
async fn start_after_an_invalidate_and_start_at_operation_time_through_the_router() {
    let cluster = Cluster::start(options()).unwrap();
    let c = client(&cluster.uri()).await;
    sharded(&c, "sa.h", doc! {"k": "hashed"}).await;
    let coll = c.database("sa").collection::<Document>("h");
    coll.insert_one(doc! {"_id": 1, "k": 1}).await.unwrap();
    let mut stream = coll.watch().await.unwrap();
    coll.drop().await.unwrap();
    assert_eq!(next(&mut stream).await.operation_type, OperationType::Drop);
    let invalidate = next(&mut stream).await;
    assert_eq!(invalidate.operation_type, OperationType::Invalidate);
    // The collection comes back (unsharded now); startAfter the invalidate sees it.
    coll.insert_one(doc! {"_id": 2, "k": 2}).await.unwrap();
    let mut after = coll.watch().start_after(invalidate.id).await.unwrap();
    let ev = next(&mut after).await;
    assert_eq!(ev.operation_type, OperationType::Insert);
    assert_eq!(ev.document_key.unwrap().get_i32("_id"), Ok(2));
    // startAtOperationTime: from the operationTime of a write on, across shards.
    sharded(&c, "sa.t", doc! {"k": "hashed"}).await;
    let t = c.database("sa").collection::<Document>("t");
    let mut session = c.start_session().await.unwrap();
    t.insert_one(doc! {"_id": 10, "k": 10})
        .session(&mut session)
        .await
        .unwrap();
    let from = session.operation_time().unwrap();
    for i in 11..16 {
        t.insert_one(doc! {"_id": i, "k": i}).await.unwrap();
    }
    let mut at = t.watch().start_at_operation_time(from).await.unwrap();
    for want in 10..16 {
        let ev = next(&mut at).await;
        assert_eq!(ev.document_key.unwrap().get_i32("_id"), Ok(want));
    }
}
