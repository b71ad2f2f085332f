//! Oplog tailing throughput: mongotail's oplog source against the driver's bare tailable
//! cursor on `local.oplog.rs`, both reading the same 100,000 insert entries.
//!
//! `cargo bench --bench oplog`; prints `RATIO oplog_tailing mongotail/raw_driver = x`
//! (throughput of mongotail over the raw cursor's; the target is at least 0.90).

mod common;

use std::time::Duration;

use bson::{doc, Document, Timestamp};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::CursorType;
use mongodb::Client;
use mongotail::{OplogOptions, OplogStream, StartAt};

use common::Bench;

const ENTRIES: usize = 100_000;
/// Alternating runs of each contender after the criterion measurements.
const PAIRED_ROUNDS: usize = 10;
const AWAIT: Duration = Duration::from_secs(1);

/// mongotail: every entry decoded into an `Op`.
async fn mongotail(client: &Client, start: Timestamp, end: Timestamp) -> usize {
    let options = OplogOptions::new()
        .start(StartAt::After(start))
        .max_await_time(AWAIT);
    let mut ops = OplogStream::new(client, options);
    let mut n = 0;
    while let Some(op) = ops.next().await {
        let op = op.expect("oplog op");
        n += 1;
        if op.timestamp >= end {
            break;
        }
    }
    n
}

/// The driver alone: a tailable awaitData cursor, each entry deserialized into a Document.
async fn raw_driver(client: &Client, start: Timestamp, end: Timestamp) -> usize {
    let mut cursor = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ts": {"$gt": start}})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(AWAIT)
        .await
        .expect("open the oplog cursor");
    let mut n = 0;
    while let Some(entry) = cursor.try_next().await.expect("oplog entry") {
        n += 1;
        if entry.get_timestamp("ts").expect("ts") >= end {
            break;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    common::print_machine();
    let b = Bench::start();
    let (start, end) = b.oplog_backlog("oplog", ENTRIES);
    common::compare(
        c,
        &b,
        "oplog_tailing",
        ["mongotail", "raw_driver"],
        ENTRIES,
        "entries",
        PAIRED_ROUNDS,
        move |name, client| async move {
            match name {
                "mongotail" => mongotail(&client, start, end).await,
                _ => raw_driver(&client, start, end).await,
            }
        },
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
