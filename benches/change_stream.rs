//! Change stream throughput: mongotail's change stream source against the driver's bare
//! `watch()`, both on the same collection from the same cluster time, same options
//! (`fullDocument: updateLookup`, 1 s await), reading the same 50,000 insert events.
//!
//! `cargo bench --bench change_stream`; prints
//! `RATIO change_stream mongotail/raw_watch = x` (throughput of mongotail over bare
//! `watch()`; the target is at least 0.90).

mod common;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use bson::{doc, Document, Timestamp};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::FullDocumentType;
use mongodb::Client;
use mongotail::{ChangeStreamOptions, ChangeStreamSource, Namespace};

use common::{just_after, Bench, Recorder, DB};

const EVENTS: usize = 50_000;
const COLL: &str = "events";
/// Alternating runs of each contender after the criterion measurements.
const PAIRED_ROUNDS: usize = 6;
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
    let rec = Recorder::default();

    let mut group = c.benchmark_group("change_stream");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(EVENTS as u64));
    for name in ["mongotail", "raw_watch"] {
        group.bench_function(name, |bencher| {
            bencher.to_async(&b.rt).iter_custom(|iters| {
                let (client, rec) = (b.client.clone(), rec.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let n = match name {
                            "mongotail" => mongotail(&client, start, end).await,
                            _ => raw_watch(&client, start, end).await,
                        };
                        let d = t.elapsed();
                        assert_eq!(n, EVENTS, "{name} read {n} events");
                        rec.record(name, d);
                        total += d;
                    }
                    total
                }
            });
        });
    }
    group.finish();
    rec.print_ratio(
        "change_stream",
        "mongotail",
        "raw_watch",
        EVENTS as u64,
        "events",
    );

    // Criterion runs one contender after the other, so load drift on a shared machine
    // biases that ratio; alternate them too (ABBA) and report the paired ratio.
    let paired = Recorder::default();
    for round in 0..PAIRED_ROUNDS {
        // ABBA order, so neither contender always runs right after the other.
        let order = if round % 2 == 0 {
            ["mongotail", "raw_watch"]
        } else {
            ["raw_watch", "mongotail"]
        };
        for name in order {
            let t = Instant::now();
            let n = b.rt.block_on(async {
                match name {
                    "mongotail" => mongotail(&b.client, start, end).await,
                    _ => raw_watch(&b.client, start, end).await,
                }
            });
            assert_eq!(n, EVENTS);
            paired.record(name, t.elapsed());
        }
    }
    paired.print_ratio(
        "change_stream_paired",
        "mongotail",
        "raw_watch",
        EVENTS as u64,
        "events",
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
