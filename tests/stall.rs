//! Stall detection: a live source whose cursor gives nothing (no entry, no periodic no-op,
//! no empty batch) for `RetryPolicy::stall_after` reconnects from its position (against
//! mongosim, or `MONGODB_URI` with test commands enabled).

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document};
use common::{unique_db, wait_live, TestServer, WAIT};
use futures::StreamExt;
use mongotail::{start, ChangeStreamOptions, OplogOptions, RetryPolicy, TailOptions};

fn quick() -> RetryPolicy {
    RetryPolicy::default().stall_after(Duration::from_secs(1))
}

/// Opens `options`, blocks the next `getMore` for a minute (longer than [`WAIT`]), writes,
/// and expects the write to arrive: only a reconnection gets it in time.
async fn reconnects_when_stalled(options: TailOptions) {
    let server = TestServer::start().await;
    let db = unique_db("stall");
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap(); // created before the start
    let (mut ops, handle) = start(&server.client, options);
    let first = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(op) = ops.next().await {
            let op = op.expect("no error");
            if op.namespace.db() == db {
                seen.push(op);
                break;
            }
        }
        seen
    });
    wait_live(&handle).await;
    let block = doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 60_000};
    server.fail_command(doc! {"times": 1}.into(), block).await;
    // The getMore in flight returns within its await time (1 s); the next one blocks.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let seen = tokio::time::timeout(WAIT, first)
        .await
        .expect("reconnected")
        .unwrap();
    assert_eq!(seen[0].id, Some(Bson::Int32(1)));
    let stats = handle.stats().await;
    assert!(
        stats.sources[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("stalled")),
        "{stats:?}"
    );
    handle.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_oplog_cursor_reconnects() {
    reconnects_when_stalled(TailOptions::new().oplog(OplogOptions::new().retry(quick()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_change_stream_reconnects() {
    let cs = ChangeStreamOptions::new().retry(quick());
    reconnects_when_stalled(TailOptions::new().disable_oplog().change_stream(cs)).await;
}
