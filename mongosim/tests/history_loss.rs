//! History loss (reference §5.10): with a small oplog, resuming a change stream from a point
//! that has rolled off fails with 286 ChangeStreamHistoryLost, as does starting before the
//! oldest entry; a live stream that falls behind loses its position.

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use common::{command_error, unique_db, TestServer};
use futures::StreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::Collection;
use mongosim::Options;

const SMALL_OPLOG: u64 = 64 * 1024;

async fn fill(coll: &Collection<Document>, n: i32) {
    let pad = "x".repeat(200);
    let docs: Vec<Document> = (0..n).map(|i| doc! {"i": i, "pad": &pad}).collect();
    for chunk in docs.chunks(100) {
        coll.insert_many(chunk.to_vec()).await.unwrap();
    }
}

async fn oldest_ts(coll: &Collection<Document>) -> Timestamp {
    coll.client()
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .unwrap()
        .unwrap()
        .get_timestamp("ts")
        .unwrap()
}

#[tokio::test]
async fn resuming_from_a_lost_point_gives_286() {
    let server = TestServer::start(Options::new().oplog_size_bytes(SMALL_OPLOG));
    if !server.is_sim() {
        return;
    }
    let client = server.client().await;
    let coll = client
        .database(&unique_db("hl_resume"))
        .collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    coll.insert_one(doc! {"_id": "first"}).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let token: ResumeToken =
        bson::from_bson(Bson::Document(ev.get_document("_id").unwrap().clone())).unwrap();
    let first_ts = ev.get_timestamp("clusterTime").unwrap();
    drop(stream);

    // still resumable while the entry is in the oplog
    coll.watch().resume_after(token.clone()).await.unwrap();

    fill(&coll, 1000).await;
    let oldest = oldest_ts(&coll).await;
    assert!(
        (oldest.time, oldest.increment) > (first_ts.time, first_ts.increment),
        "the oplog rolled over"
    );

    let err = coll.watch().resume_after(token.clone()).await.unwrap_err();
    let (code, name, msg) = command_error(&err);
    assert_eq!((code, name.as_str()), (286, "ChangeStreamHistoryLost"));
    assert_eq!(
        msg,
        "Resume of change stream was not possible, as the resume point may no longer be in the oplog."
    );
    assert!(err.contains_label("NonResumableChangeStreamError"));

    let err = coll.watch().start_after(token).await.unwrap_err();
    assert_eq!(command_error(&err).0, 286);

    let err = coll
        .watch()
        .start_at_operation_time(first_ts)
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 286);

    // starting exactly at the oldest entry still works
    coll.watch().start_at_operation_time(oldest).await.unwrap();
}

#[tokio::test]
async fn live_stream_that_falls_behind_loses_its_position() {
    let server = TestServer::start(Options::new().oplog_size_bytes(SMALL_OPLOG));
    if !server.is_sim() {
        return;
    }
    let client = server.client().await;
    let coll = client
        .database(&unique_db("hl_live"))
        .collection::<Document>("c");
    let mut stream = coll
        .watch()
        .batch_size(1)
        .await
        .unwrap()
        .with_type::<Document>();
    fill(&coll, 1000).await;
    // the first batch still finds entries that are gone: the position is lost and the
    // driver does not resume (no resumable label)
    let mut failed = None;
    for _ in 0..2000 {
        match tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                failed = Some(e);
                break;
            }
            None => break,
        }
    }
    let err = failed.expect("the stream fails once its position rolled off");
    let (code, _, _) = command_error(&err);
    assert!(code == 136 || code == 286, "{err}");
}
