//! `Handle::stats`: per-source state, ops, lag and direct-read progress (against mongosim,
//! or `MONGODB_URI`).

mod common;

use bson::{doc, Document};
use common::{next_op, unique_db, wait_live, TestServer, WAIT};
use futures::StreamExt;
use mongotail::{start, ChangeStreamOptions, Namespace, OplogOptions, SourceState, TailOptions};

#[tokio::test]
async fn stats_follow_every_source() {
    let server = TestServer::start().await;
    let db = unique_db("stats");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_many((0..500).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let options = TailOptions::new()
        .oplog(OplogOptions::new().namespace(ns.clone()))
        .change_stream(ChangeStreamOptions::new().namespace(ns.clone()))
        .direct_read(ns.clone());
    let (mut ops, handle) = start(&server.client, options);
    let before = handle.stats().await;
    assert_eq!(before.sources.len(), 2);
    assert_eq!(before.sources[0].source, "oplog");
    assert_eq!(before.sources[1].source, format!("change stream {ns}"));
    assert!(before.sources.iter().all(|s| s.ops == 0));

    let mut direct = 0;
    while direct < 500 {
        let op = next_op(&mut ops).await;
        direct += usize::from(op.is_source_direct());
    }
    coll.insert_one(doc! {"_id": 1_000}).await.unwrap();
    let mut live = 0;
    while live < 2 {
        let op = next_op(&mut ops).await;
        live += usize::from(!op.is_source_direct());
    }
    let stats = handle.stats().await;
    let read = &stats.direct[0];
    assert_eq!(read.namespace, ns.to_string());
    assert_eq!(
        (read.read, read.estimated_total, read.done),
        (500, Some(500), true)
    );
    for source in &stats.sources {
        assert_eq!(source.ops, 1, "{source:?}");
        assert_eq!(source.state, SourceState::Live, "{source:?}");
        assert!(source.last_op_time.is_some() && source.last_op_wall_time.is_some());
        assert!(source.lag.is_some(), "{source:?}");
    }
    handle.pause_live();
    assert!(handle
        .stats()
        .await
        .sources
        .iter()
        .all(|s| s.state == SourceState::Paused));
    handle.stop();
    assert!(handle
        .stats()
        .await
        .sources
        .iter()
        .all(|s| s.state == SourceState::Stopped));
}

#[tokio::test]
async fn caught_up_resolves_once_everything_written_before_was_delivered() {
    let server = TestServer::start().await;
    let db = unique_db("caught");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await.unwrap(); // created before the start
    let options = TailOptions::new()
        .oplog(OplogOptions::new().namespace(ns.clone()))
        .change_stream(ChangeStreamOptions::new().namespace(ns.clone()));
    let (mut ops, handle) = start(&server.client, options);
    let consumer = tokio::spawn(async move { while let Some(Ok(_)) = ops.next().await {} });
    // Both sources open before the writes (their start is "now").
    wait_live(&handle).await;
    for i in 0..50 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    tokio::time::timeout(WAIT, handle.caught_up())
        .await
        .unwrap()
        .unwrap();
    for source in handle.stats().await.sources {
        assert_eq!(source.ops, 50, "{source:?}");
    }
    handle.stop();
    consumer.await.unwrap();
}
