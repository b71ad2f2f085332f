//! The sources built by hand, each with its own adapters, merged with
//! `futures::stream::select_all`, adapted again and driven with `while let` (what
//! `examples/select_all.rs` shows), against a server (mongosim, or `MONGODB_URI`).

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document};
use common::{unique_db, TestServer, WAIT};
use futures::stream::{select_all, StreamExt};
use mongotail::ext::DEFAULT_BATCH_WINDOW;
use mongotail::{
    last_op_timestamp, ChangeStreamOptions, ChangeStreamSource, DirectOptions, DirectReads,
    HashRing, Namespace, Op, OpKind, OpStreamExt, OplogOptions, OplogStream, Source, StartAt,
};

#[tokio::test]
async fn three_sources_merged_by_hand_with_adapters_before_and_after() {
    let server = TestServer::start().await;
    let client = &server.client;
    let db_name = unique_db("select_all");
    let db = client.database(&db_name);
    for coll in ["orders", "users"] {
        db.create_collection(coll).await.unwrap();
    }
    db.collection::<Document>("products")
        .insert_many((0..4).map(|i| doc! {"_id": i, "stock": i % 4}))
        .await
        .unwrap();
    let since = last_op_timestamp(client).await.unwrap().unwrap();
    let ns = |coll: &str| Namespace::new(db_name.clone(), coll).unwrap();

    let oplog = OplogStream::new(
        client,
        OplogOptions::new()
            .namespace(ns("orders"))
            .start(StartAt::After(since)),
    )
    .filter_ns(|_, kind| matches!(kind, OpKind::Insert | OpKind::Update))
    .batch_fetch(client.clone(), 10, DEFAULT_BATCH_WINDOW)
    .boxed();
    let users = ChangeStreamSource::new(
        client,
        ChangeStreamOptions::new()
            .namespace(ns("users"))
            .start(StartAt::After(since)),
    );
    let users = OpStreamExt::filter(users, Op::is_insert).boxed();
    let products = DirectReads::new(client, DirectOptions::new().namespace(ns("products")));
    let in_stock = OpStreamExt::filter(products, |op| {
        op.data.as_ref().and_then(|d| d.get_i32("stock").ok()) > Some(0)
    })
    .boxed();
    // Adapted again after the merge: a one-worker ring owns every op, so nothing is lost.
    let ring = HashRing::new(["only"]).unwrap();
    let mut stream =
        select_all([oplog, users, in_stock]).consistent_shard(ring.worker("only").unwrap());

    let orders = db.collection::<Document>("orders");
    orders
        .insert_many((1..=3).map(|i| doc! {"_id": i, "status": "new"}))
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": 2}, doc! {"$set": {"status": "paid"}})
        .await
        .unwrap();
    db.collection::<Document>("users")
        .insert_many([doc! {"_id": "ada"}, doc! {"_id": "grace"}])
        .await
        .unwrap();

    let mut got: Vec<Op> = Vec::new();
    let drive = async {
        while let Some(op) = stream.next().await {
            got.push(op.expect("no error"));
            if got.len() == 3 + 4 + 2 {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, drive)
        .await
        .expect("every op arrives");
    common::assert_quiet(&mut stream, Duration::from_millis(300)).await;

    let ids = |source: Source, kind: OpKind| -> Vec<Bson> {
        let mut ids: Vec<Bson> = got
            .iter()
            .filter(|o| o.source == source && o.kind == kind)
            .filter_map(|o| o.id.clone())
            .collect();
        ids.sort_by_key(|id| id.to_string());
        ids
    };
    let int = |v: &[i32]| v.iter().map(|i| Bson::Int32(*i)).collect::<Vec<_>>();
    assert_eq!(ids(Source::Direct, OpKind::Insert), int(&[1, 2, 3]));
    assert_eq!(ids(Source::Oplog, OpKind::Insert), int(&[1, 2, 3]));
    assert_eq!(ids(Source::Oplog, OpKind::Update), int(&[2]));
    assert_eq!(
        ids(Source::ChangeStream, OpKind::Insert),
        vec![Bson::from("ada"), Bson::from("grace")]
    );
    let update = got.iter().find(|o| o.is_update()).unwrap();
    assert_eq!(update.data, Some(doc! {"_id": 2, "status": "paid"}));
}
