//! Bounded memory: a consumer that stops reading for 10 s on a 200,000-op backlog costs at
//! most what the README states (one cursor batch per source in the driver, its decoded ops,
//! and nothing else: `start` reads only while polled). Measured as the growth of this
//! process's resident memory while the consumer holds (Linux).
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use bson::{doc, Document};
use common::{unique_db, TestServer, WAIT};
use futures::StreamExt;
use mongotail::{start, Namespace, OplogOptions, StartAt, TailOptions};

/// The documented bound: a `getMore` batch is at most 16 MiB, its decoded ops about as much
/// again; allowance for allocator slack.
const BOUND_MIB: u64 = 40;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_consumer_holds_one_batch_not_the_backlog() {
    let server = TestServer::start().await;
    let db = unique_db("memory");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await.unwrap();
    let from = server.latest_ts().await;
    let pad = "x".repeat(500); // a backlog of about 100 MB
    for chunk in 0..200 {
        let docs = (0..1_000).map(|i| doc! {"_id": chunk * 1_000 + i, "pad": &pad});
        coll.insert_many(docs).await.unwrap();
    }
    let oplog = OplogOptions::new()
        .namespace(ns)
        .start(StartAt::After(from));
    let (mut ops, handle) = start(&server.client, TailOptions::new().oplog(oplog));
    tokio::time::timeout(WAIT, ops.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let before = rss_kib();
    let mut peak = before;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        peak = peak.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then everything still arrives.
    let mut n = 1;
    while n < 200_000 {
        tokio::time::timeout(WAIT, ops.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        n += 1;
    }
    handle.stop();
    let grew_mib = peak.saturating_sub(before) / 1024;
    println!("memory: grew {grew_mib} MiB while the consumer held a 200,000-op backlog");
    assert!(
        grew_mib <= BOUND_MIB,
        "grew {grew_mib} MiB, bound {BOUND_MIB} MiB"
    );
}
