//! Change stream throughput: mongotail's change stream source against the driver's bare
//! `watch()`, both on the same collection from the same cluster time, same options
//! (`fullDocument: updateLookup`, 1 s await), reading the same 50,000 insert events.
//!
//! `cargo bench --bench change_stream`; prints
//! `RATIO change_stream mongotail/raw_watch = x` (throughput of mongotail over bare
//! `watch()`; the target is at least 0.90).

mod common;

use std::future::IntoFuture;
use std::time::Duration;

use bson::{doc, Document, Timestamp};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::FullDocumentType;
use mongodb::Client;
use mongotail::{ChangeStreamOptions, ChangeStreamSource, Namespace};

use common::{just_after, Bench, DB};

const EVENTS: usize = 50_000;
const COLL: &str = "events";
/// Interleaved pairs of runs after the criterion measurements (the machine's speed drifts
/// between runs, so the per-pair ratio is the figure to read).
const PAIRED_ROUNDS: usize = 16;
const AWAIT: Duration = Duration::from_secs(1);

/// mongotail: every event decoded into an `Op`.
async fn mongotail(client: &Client, start: Timestamp, end: Timestamp) -> usize {
    let options = ChangeStreamOptions::new()
        .namespace(Namespace::new(DB, COLL).expect("namespace"))
        .start_at_operation_time(just_after(start))
        .max_await_time(AWAIT);
    let mut ops = ChangeStreamSource::new(client, options);
    let mut n = 0;
    while let Some(op) = ops.next().await {
        let op = op.expect("change stream op");
        n += 1;
        if op.timestamp >= end {
            break;
        }
    }
    n
}

/// The driver alone: `watch()` with the same options, events as `ChangeStreamEvent<Document>`.
async fn raw_watch(client: &Client, start: Timestamp, end: Timestamp) -> usize {
    let mut events = client
        .database(DB)
        .collection::<Document>(COLL)
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .start_at_operation_time(just_after(start))
        .max_await_time(AWAIT)
        .await
        .expect("open the change stream");
    let mut n = 0;
    while let Some(event) = events.try_next().await.expect("change event") {
        n += 1;
        if event.cluster_time.is_some_and(|t| t >= end) {
            break;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    common::print_machine();
    let b = Bench::start();
    b.rt.block_on(b.client.database(DB).create_collection(COLL).into_future())
        .expect("create the collection");
    let start = b.latest_ts();
    b.insert(COLL, EVENTS, |i| {
        doc! {"_id": i as i64, "name": format!("user-{i:06}"), "visits": (i % 100) as i32, "tags": ["a", "b"]}
    });
    let end = b.latest_ts();
    common::compare(
        c,
        &b,
        "change_stream",
        ["mongotail", "raw_watch"],
        EVENTS,
        "events",
        PAIRED_ROUNDS,
        move |name, client| async move {
            match name {
                "mongotail" => mongotail(&client, start, end).await,
                _ => raw_watch(&client, start, end).await,
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
