//! Direct reads against a server (mongosim, or `MONGODB_URI`).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bson::{doc, oid::ObjectId, Bson, Document};
use common::{unique_db, TestServer};
use futures::TryStreamExt;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongotail::{DirectOptions, DirectReads, Namespace, Op, Position};

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

async fn read_all(client: &mongodb::Client, options: DirectOptions) -> Vec<Op> {
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        DirectReads::new(client, options).try_collect::<Vec<_>>(),
    )
    .await
    .expect("direct reads finish")
    .expect("no error")
}

#[tokio::test]
async fn splits_a_100k_collection_and_reads_each_document_once() {
    let server = TestServer::start().await;
    let db_name = unique_db("direct_big");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let docs: Vec<Document> = (0..100_000).map(|i| doc! {"_id": i, "v": i * 2}).collect();
    for chunk in docs.chunks(10_000) {
        c.insert_many(chunk.to_vec()).await.unwrap();
    }
    // A few documents with `_id`s of other types than the sampled one.
    c.insert_many(vec![
        doc! {"_id": "s1"},
        doc! {"_id": ObjectId::new()},
        doc! {"_id": {"k": 1}},
    ])
    .await
    .unwrap();

    // Count the find commands: one per range.
    let finds = Arc::new(AtomicUsize::new(0));
    let counter = finds.clone();
    let client = server
        .client_with(|o| {
            o.command_event_handler = Some(EventHandler::callback(move |ev| {
                if let CommandEvent::Started(s) = ev {
                    if s.command_name == "find" {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        })
        .await;
    let ops = read_all(
        &client,
        DirectOptions::new().namespace(ns(&format!("{db_name}.c"))),
    )
    .await;
    assert_eq!(ops.len(), 100_003);
    let mut seen = HashSet::new();
    for op in &ops {
        assert!(op.is_insert() && op.is_source_direct());
        assert_eq!(op.position, Position::Direct);
        let id = op.id.clone().expect("id");
        assert!(seen.insert(id.to_string()), "{id} read twice");
        if let Some(Bson::Int32(i)) = op.id {
            assert_eq!(op.data.as_ref().unwrap().get_i32("v").unwrap(), i * 2);
        }
    }
    let ranges = finds.load(Ordering::Relaxed);
    assert!(
        (3..=10).contains(&ranges),
        "expected a split into several ranges plus the other-types range, got {ranges} finds"
    );
}

#[tokio::test]
async fn reads_views_and_pipelines() {
    let server = TestServer::start().await;
    let db_name = unique_db("direct_view");
    let db = server.client.database(&db_name);
    let c = db.collection::<Document>("c");
    c.insert_many((0..50).map(|i| doc! {"_id": i, "even": i % 2 == 0}))
        .await
        .unwrap();
    db.run_command(
        doc! {"create": "evens", "viewOn": "c", "pipeline": [{"$match": {"even": true}}]},
    )
    .await
    .unwrap();
    let ops = read_all(
        &server.client,
        DirectOptions::new()
            .namespace(ns(&format!("{db_name}.evens")))
            .namespace(ns(&format!("{db_name}.c")))
            .pipeline(
                ns(&format!("{db_name}.c")),
                [
                    doc! {"$match": {"_id": {"$lt": 10}}},
                    doc! {"$project": {"even": 0}},
                ],
            ),
    )
    .await;
    let mut from_view: Vec<i32> = Vec::new();
    let mut from_coll: Vec<i32> = Vec::new();
    for op in &ops {
        let Some(Bson::Int32(id)) = op.id else {
            panic!("{op:?}")
        };
        match op.collection() {
            "evens" => from_view.push(id),
            "c" => {
                assert_eq!(op.data, Some(doc! {"_id": id}));
                from_coll.push(id);
            }
            other => panic!("unexpected namespace {other}"),
        }
    }
    from_view.sort_unstable();
    from_coll.sort_unstable();
    assert_eq!(from_view, (0..50).step_by(2).collect::<Vec<_>>());
    assert_eq!(from_coll, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn bounded_reads_stop_at_the_start_maximum_and_missing_collections_are_empty() {
    let server = TestServer::start().await;
    for split_max in [1, 9] {
        let db_name = unique_db("direct_bounded");
        let c = server.client.database(&db_name).collection::<Document>("c");
        c.insert_many((0..2_000).map(|i| doc! {"_id": i}))
            .await
            .unwrap();
        c.insert_one(doc! {"_id": Bson::Null}).await.unwrap(); // sorts before numbers
        let mut reads = DirectReads::new(
            &server.client,
            DirectOptions::new()
                .namespace(ns(&format!("{db_name}.c")))
                .namespace(ns(&format!("{db_name}.missing")))
                .bounded(true)
                .split_max(split_max)
                .batch_size(100),
        );
        let first = reads.try_next().await.unwrap().expect("first op");
        // Written after the read started, beyond the maximum `_id` at the start (1999;
        // strings and ObjectIds sort after numbers).
        c.insert_many((5_000..5_100).map(|i| doc! {"_id": i}))
            .await
            .unwrap();
        c.insert_many(vec![doc! {"_id": "t"}, doc! {"_id": ObjectId::new()}])
            .await
            .unwrap();
        let mut ops = vec![first];
        ops.extend(reads.try_collect::<Vec<_>>().await.unwrap());
        let ids: HashSet<String> = ops
            .iter()
            .map(|o| o.id.clone().unwrap().to_string())
            .collect();
        let mut want: HashSet<String> = (0..2_000).map(|i| Bson::Int32(i).to_string()).collect();
        want.insert(Bson::Null.to_string());
        assert_eq!(
            ops.len(),
            want.len(),
            "split_max {split_max}: duplicates or extra documents"
        );
        let extra: Vec<_> = ids.difference(&want).take(5).collect();
        let missing: Vec<_> = want.difference(&ids).take(5).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "split_max {split_max}: extra {extra:?}, missing {missing:?}"
        );
    }
}

async fn survives_faults(data: Document) {
    let server = TestServer::start().await;
    let db_name = unique_db("direct_fault");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_many((0..3_000).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    c.insert_many(vec![doc! {"_id": "a"}, doc! {"_id": "b"}])
        .await
        .unwrap();
    let mut data = data;
    data.insert("failCommands", vec!["getMore"]);
    server.fail_command(doc! {"times": 3}.into(), data).await;
    let ops = read_all(
        &server.client,
        DirectOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .batch_size(100)
            .retry(mongotail::RetryPolicy::new(
                std::time::Duration::from_millis(10),
                std::time::Duration::from_millis(100),
                10,
            )),
    )
    .await;
    server.fail_off().await;
    let mut seen = HashSet::new();
    for op in &ops {
        assert!(
            seen.insert(op.id.clone().unwrap().to_string()),
            "{:?} twice",
            op.id
        );
    }
    assert_eq!(ops.len(), 3_002);
}

#[tokio::test]
async fn direct_reads_resume_after_faults_without_loss_or_repeat() {
    survives_faults(doc! {"errorCode": 91}).await;
    survives_faults(doc! {"closeConnection": true}).await;
}
