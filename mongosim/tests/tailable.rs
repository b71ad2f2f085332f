//! Tailable cursors (reference §3.3): awaitData on `local.oplog.rs` and capped collections,
//! event-driven wake-ups, empty batches that keep the cursor, 136 CappedPositionLost,
//! getMore/killCursors errors.

mod common;

use bson::{doc, Bson, Document, Timestamp};
use common::{command_error, run, unique_db, TestServer};
use futures::StreamExt;
use mongodb::options::CursorType;
use mongosim::Options;
use std::time::{Duration, Instant};

async fn last_ts(client: &mongodb::Client) -> Timestamp {
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

#[tokio::test]
async fn await_data_cursor_wakes_on_write() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("tail");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let after = last_ts(&client).await;

    let mut cursor = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ts": {"$gt": after}, "ns": format!("{db}.c")})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_secs(5))
        .await
        .unwrap();

    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t0 = Instant::now();
            coll.insert_one(doc! {"_id": 1}).await.unwrap();
            t0
        })
    };
    let entry = cursor.next().await.unwrap().unwrap();
    let received = Instant::now();
    let t0 = writer.await.unwrap();
    let latency = received.saturating_duration_since(t0);
    println!("tailable awaitData latency after the write: {latency:?}");
    assert_eq!(entry.get_str("op").unwrap(), "i");
    assert_eq!(entry.get_document("o").unwrap(), &doc! {"_id": 1});
    assert!(
        latency < Duration::from_millis(100),
        "awaitData getMore woke {latency:?} after the write"
    );
}

#[tokio::test]
async fn empty_await_batch_keeps_the_cursor_open() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let after = last_ts(&client).await;
    let local = client.database("local");
    let db = unique_db("nothing");
    let first = local
        .run_command(doc! {
            "find": "oplog.rs",
            "filter": {"ts": {"$gt": after}, "ns": format!("{db}.none")},
            "tailable": true, "awaitData": true,
        })
        .await
        .unwrap();
    let cursor = first.get_document("cursor").unwrap();
    assert!(cursor.get_array("firstBatch").unwrap().is_empty());
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    assert_eq!(cursor.get_str("ns").unwrap(), "local.oplog.rs");

    let t0 = Instant::now();
    let more = local
        .run_command(doc! {"getMore": id, "collection": "oplog.rs", "maxTimeMS": 300})
        .await
        .unwrap();
    let waited = t0.elapsed();
    let c = more.get_document("cursor").unwrap();
    assert!(c.get_array("nextBatch").unwrap().is_empty());
    assert_eq!(c.get("id"), Some(&Bson::Int64(id)), "same cursor id");
    assert!(
        waited >= Duration::from_millis(250),
        "waited only {waited:?}"
    );

    let killed = local
        .run_command(doc! {"killCursors": "oplog.rs", "cursors": [id]})
        .await
        .unwrap();
    assert_eq!(
        killed.get_array("cursorsKilled").unwrap(),
        &vec![Bson::Int64(id)]
    );
    let err = local
        .run_command(doc! {"getMore": id, "collection": "oplog.rs"})
        .await
        .unwrap_err();
    let (code, name, msg) = command_error(&err);
    assert_eq!((code, name.as_str()), (43, "CursorNotFound"));
    assert_eq!(msg, format!("cursor id {id} not found"));
}

#[tokio::test]
async fn max_time_ms_on_a_non_await_get_more_is_bad_value() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("mt");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let r = run(&client, &db, doc! {"find": "c", "batchSize": 1})
        .await
        .unwrap();
    let id = r.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let err = run(
        &client,
        &db,
        doc! {"getMore": id, "collection": "c", "maxTimeMS": 100},
    )
    .await
    .unwrap_err();
    let (code, name, msg) = command_error(&err);
    assert_eq!((code, name.as_str()), (2, "BadValue"));
    assert_eq!(
        msg,
        "cannot set maxTimeMS on getMore command for a non-awaitData cursor"
    );
    // wrong collection
    let err = run(&client, &db, doc! {"getMore": id, "collection": "other"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 13);
    // still usable
    let r = run(&client, &db, doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("nextBatch").unwrap().len(), 4);
    assert_eq!(c.get("id"), Some(&Bson::Int64(0)));
}

#[tokio::test]
async fn capped_rollover_gives_capped_position_lost() {
    if std::env::var("MONGODB_URI").is_ok() {
        return; // needs a tiny oplog
    }
    let server = TestServer::start(Options::new().oplog_size_bytes(64 * 1024));
    let client = server.client().await;
    let db = unique_db("roll");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await.unwrap();
    let local = client.database("local");
    let r = local
        .run_command(doc! {"find": "oplog.rs", "filter": {}, "tailable": true, "awaitData": true, "batchSize": 1})
        .await
        .unwrap();
    let id = r.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let pad = "x".repeat(1000);
    coll.insert_many((0..200).map(|i| doc! {"_id": i, "pad": pad.clone()}))
        .await
        .unwrap();
    let err = local
        .run_command(doc! {"getMore": id, "collection": "oplog.rs", "batchSize": 1})
        .await
        .unwrap_err();
    let (code, name, msg) = command_error(&err);
    assert_eq!((code, name.as_str()), (136, "CappedPositionLost"));
    assert!(
        msg.starts_with("CollectionScan died due to position in capped collection being deleted"),
        "{msg}"
    );
    // the cursor is dead afterwards
    let err = local
        .run_command(doc! {"getMore": id, "collection": "oplog.rs"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 43);
    // and the oplog stayed bounded
    let stats = local
        .run_command(doc! {"collStats": "oplog.rs"})
        .await
        .unwrap();
    let size = stats.get("size").and_then(Bson::as_i64).unwrap();
    assert!(size <= 64 * 1024, "oplog size {size}");
}

#[tokio::test]
async fn a_tail_from_the_newest_entry_loses_its_position_on_rollover() {
    if std::env::var("MONGODB_URI").is_ok() {
        return; // needs a tiny oplog
    }
    let server = TestServer::start(Options::new().oplog_size_bytes(32 * 1024));
    let client = server.client().await;
    let after = last_ts(&client).await;
    let local = client.database("local");
    // nothing after `after` yet: empty first batch, the cursor sits on the `after` entry
    let r = local
        .run_command(doc! {"find": "oplog.rs", "filter": {"ts": {"$gt": after}}, "tailable": true, "awaitData": true})
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert!(c.get_array("firstBatch").unwrap().is_empty());
    let id = c.get_i64("id").unwrap();
    let db = unique_db("lost");
    let pad = "y".repeat(1000);
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_many((0..100).map(|i| doc! {"_id": i, "pad": pad.clone()}))
        .await
        .unwrap();
    let err = local
        .run_command(doc! {"getMore": id, "collection": "oplog.rs", "maxTimeMS": 100})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 136);
}

#[tokio::test]
async fn tailable_cursor_on_a_capped_collection() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("cap");
    let d = client.database(&db);
    d.create_collection("cap")
        .capped(true)
        .size(1 << 20)
        .await
        .unwrap();
    let coll = d.collection::<Document>("cap");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut cursor = coll
        .find(doc! {})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(cursor.next().await.unwrap().unwrap(), doc! {"_id": 1});
    let c2 = coll.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.insert_one(doc! {"_id": 2}).await.unwrap();
    });
    assert_eq!(cursor.next().await.unwrap().unwrap(), doc! {"_id": 2});

    // tailable on a non-capped collection is refused
    d.collection::<Document>("plain")
        .insert_one(doc! {})
        .await
        .unwrap();
    let err = run(&client, &db, doc! {"find": "plain", "tailable": true})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 2);
    // awaitData without tailable
    let err = run(&client, &db, doc! {"find": "cap", "awaitData": true})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 9);
}

#[tokio::test]
async fn natural_order_and_ts_filters_on_the_oplog() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("nat");
    let coll = client.database(&db).collection::<Document>("c");
    let before = last_ts(&client).await;
    coll.insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let last = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.get_document("o").unwrap(), &doc! {"_id": 9});
    let mut forward = oplog
        .find(doc! {"ts": {"$gt": before}, "op": "i", "ns": format!("{db}.c")})
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut prev: Option<Timestamp> = None;
    while let Some(e) = forward.next().await {
        let e = e.unwrap();
        let ts = e.get_timestamp("ts").unwrap();
        if let Some(p) = prev {
            assert!(ts > p, "ts strictly increasing");
        }
        prev = Some(ts);
        ids.push(e.get_document("o").unwrap().get_i32("_id").unwrap());
    }
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    // $gte on a known ts includes it
    let n = oplog
        .count_documents(doc! {"ts": {"$gte": last.get_timestamp("ts").unwrap()}})
        .await
        .unwrap();
    assert!(n >= 1);
}

#[tokio::test]
async fn standalone_capped_await_data_wakes_on_insert() {
    if std::env::var("MONGODB_URI").is_ok() {
        return; // topology is a simulator option
    }
    let server = TestServer::start(Options::new().standalone());
    let client = server.client().await;
    let db = unique_db("sacap");
    let d = client.database(&db);
    d.create_collection("cap")
        .capped(true)
        .size(1 << 16)
        .await
        .unwrap();
    let coll = d.collection::<Document>("cap");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut cursor = coll
        .find(doc! {})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(cursor.next().await.unwrap().unwrap(), doc! {"_id": 1});
    let c2 = coll.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.insert_one(doc! {"_id": 2}).await.unwrap();
    });
    let t0 = Instant::now();
    assert_eq!(cursor.next().await.unwrap().unwrap(), doc! {"_id": 2});
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "woken by the write, not the timeout"
    );
}

/// Reads N oplog entries through a tailable cursor (N = `MONGOSIM_PERF_N`, default 20 000);
/// prints the time. Speed targets live in benches/manual runs, this checks completeness and
/// order.
#[tokio::test]
async fn reads_many_oplog_entries_through_a_tailable_cursor() {
    let n: usize = std::env::var("MONGOSIM_PERF_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("perf");
    let coll = client.database(&db).collection::<Document>("c");
    let before = last_ts(&client).await;
    let batch: Vec<Document> = (0..n as i64)
        .map(|i| doc! {"_id": i, "v": "payload"})
        .collect();
    let t0 = Instant::now();
    coll.insert_many(batch).await.unwrap();
    println!("inserted {n} documents in {:?}", t0.elapsed());
    let oplog = client.database("local");
    // typed documents (the driver decodes every entry)
    let t0 = Instant::now();
    let mut cursor = oplog
        .collection::<Document>("oplog.rs")
        .find(doc! {"ts": {"$gt": before}})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_millis(200))
        .await
        .unwrap();
    let mut got = 0usize;
    while got < n + 1 {
        let e = cursor.next().await.unwrap().unwrap();
        if e.get_str("op").unwrap() == "i" {
            let id = e.get_document("o").unwrap().get_i64("_id").unwrap();
            assert_eq!(id, got as i64 - 1);
        }
        got += 1;
    }
    println!(
        "read {got} oplog entries as Document through a tailable cursor in {:?}",
        t0.elapsed()
    );
    // raw documents (no decoding on the client)
    let t0 = Instant::now();
    let mut cursor = oplog
        .collection::<bson::RawDocumentBuf>("oplog.rs")
        .find(doc! {"ts": {"$gt": before}})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_millis(200))
        .await
        .unwrap();
    let mut got = 0usize;
    while got < n + 1 {
        let e = cursor.next().await.unwrap().unwrap();
        if e.get_str("op").unwrap() == "i" {
            let id = e.get_document("o").unwrap().get_i64("_id").unwrap();
            assert_eq!(id, got as i64 - 1);
        }
        got += 1;
    }
    println!(
        "read {got} oplog entries as RawDocumentBuf through a tailable cursor in {:?}",
        t0.elapsed()
    );
}
