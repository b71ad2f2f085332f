//! Oplog tailing throughput: mongotail's oplog source against the driver's bare tailable
//! cursor on `local.oplog.rs`, both reading the same 100,000 insert entries.
//!
//! `cargo bench --bench oplog`; prints `RATIO oplog_tailing mongotail/raw_driver = x`
//! (throughput of mongotail over the raw cursor's; the target is at least 0.90).

mod common;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use bson::{doc, Document, Timestamp};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::CursorType;
use mongodb::Client;
use mongotail::{OplogOptions, OplogStream, StartAt};

use common::{Bench, Recorder, DB};

const ENTRIES: usize = 100_000;
/// Alternating runs of each contender after the criterion measurements.
const PAIRED_ROUNDS: usize = 6;
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
    b.rt.block_on(
        b.client
            .database(DB)
            .create_collection("oplog")
            .into_future(),
    )
    .expect("create the collection");
    let start = b.latest_ts();
    b.insert("oplog", ENTRIES, |i| {
        doc! {"_id": i as i64, "name": format!("user-{i:06}"), "visits": (i % 100) as i32, "tags": ["a", "b"]}
    });
    let end = b.latest_ts();
    let rec = Recorder::default();

    let mut group = c.benchmark_group("oplog_tailing");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(ENTRIES as u64));
    for name in ["mongotail", "raw_driver"] {
        group.bench_function(name, |bencher| {
            bencher.to_async(&b.rt).iter_custom(|iters| {
                let (client, rec) = (b.client.clone(), rec.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let n = match name {
                            "mongotail" => mongotail(&client, start, end).await,
                            _ => raw_driver(&client, start, end).await,
                        };
                        let d = t.elapsed();
                        assert_eq!(n, ENTRIES, "{name} read {n} entries");
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
        "oplog_tailing",
        "mongotail",
        "raw_driver",
        ENTRIES as u64,
        "entries",
    );

    // Criterion runs one contender after the other, so load drift on a shared machine
    // biases that ratio; alternate them too (ABBA) and report the paired ratio.
    let paired = Recorder::default();
    for round in 0..PAIRED_ROUNDS {
        // ABBA order, so neither contender always runs right after the other.
        let order = if round % 2 == 0 {
            ["mongotail", "raw_driver"]
        } else {
            ["raw_driver", "mongotail"]
        };
        for name in order {
            let t = Instant::now();
            let n = b.rt.block_on(async {
                match name {
                    "mongotail" => mongotail(&b.client, start, end).await,
                    _ => raw_driver(&b.client, start, end).await,
                }
            });
            assert_eq!(n, ENTRIES);
            paired.record(name, t.elapsed());
        }
    }
    paired.print_ratio(
        "oplog_tailing_paired",
        "mongotail",
        "raw_driver",
        ENTRIES as u64,
        "entries",
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
