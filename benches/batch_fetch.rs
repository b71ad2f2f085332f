//! Fetching the documents of 10,000 updates with 1 ms of simulated round-trip latency on
//! every `find` (mongosim `failCommand` with `blockConnection: true, blockTimeMS: 1`):
//! `batch_fetch` at its defaults (gtm's 50 ops / 75 ms per batch, one find per batch and
//! namespace, [`DEFAULT_FETCH_WORKERS`] finds in flight) against one `find` per update,
//! the obvious alternative; and the same with one worker, gtm's default.
//!
//! The 10,000 update ops are read from the oplog once, before the measurements; each
//! iteration fetches the documents of all of them. `batch_fetch` is measured by criterion;
//! the per-update finds (10,000 sequential round trips) are timed in one run over the
//! same 10,000 updates, which keeps the whole bench under a minute.
//!
//! With one worker the finds are sequential: each batch costs one round trip plus its
//! 50-document `$in`, so the speedup is at most the batch size (50) whatever the latency.
//!
//! `cargo bench --bench batch_fetch`; prints
//! `RATIO batch_fetch batch_fetch/per_op_find = x` (the speedup at defaults) and
//! `RATIO batch_fetch batch_fetch_one_worker/per_op_find = x`.

mod common;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures::{stream, StreamExt, TryStreamExt};
use mongodb::Client;
use mongotail::ext::{DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW, DEFAULT_FETCH_WORKERS};
use mongotail::{Op, OpStreamExt, OplogOptions, OplogStream, StartAt};

use common::{Bench, Recorder, DB};

const UPDATES: usize = 10_000;
const COLL: &str = "fetch";

/// `batch_fetch` over the update ops with `workers` finds in flight; returns how many got
/// their document.
async fn batch_fetch(client: &Client, ops: &[Op], workers: usize) -> usize {
    stream::iter(ops.iter().cloned().map(Ok))
        .batch_fetch(client.clone(), DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW)
        .workers(workers)
        .try_fold(
            0,
            |n, op| async move { Ok(n + usize::from(op.data.is_some())) },
        )
        .await
        .expect("batch_fetch")
}

/// One `find` per update, in order, as a consumer without batching does.
async fn per_op_find(client: &Client, ops: &[Op]) -> usize {
    let mut n = 0;
    for op in ops {
        let mut op = op.clone();
        let coll = client
            .database(op.database())
            .collection::<Document>(op.collection());
        let id = op.id.clone().expect("update id");
        op.data = coll.find_one(doc! {"_id": id}).await.expect("find");
        n += usize::from(op.data.is_some());
    }
    n
}

/// The `configureFailPoint` command that adds 1 ms to every `find`.
fn fail_point(mode: &str) -> Document {
    doc! {
        "configureFailPoint": "failCommand",
        "mode": mode,
        "data": {"failCommands": ["find"], "blockConnection": true, "blockTimeMS": 1},
    }
}

fn bench(c: &mut Criterion) {
    common::print_machine();
    let b = Bench::start();
    b.insert(COLL, UPDATES, |i| {
        doc! {"_id": i as i64, "name": format!("user-{i:06}"), "visits": 0, "tags": ["a", "b"]}
    });
    let start = b.latest_ts();
    let ops: Vec<Op> = b.rt.block_on(async {
        b.client
            .database(DB)
            .collection::<Document>(COLL)
            .update_many(doc! {}, doc! {"$inc": {"visits": 1}})
            .await
            .expect("update every document");
        let options = OplogOptions::new().start(StartAt::After(start));
        OplogStream::new(&b.client, options)
            .try_filter(|op| futures::future::ready(op.needs_fetch()))
            .take(UPDATES)
            .try_collect()
            .await
            .expect("read the update ops")
    });
    assert_eq!(ops.len(), UPDATES);

    let admin = b.client.database("admin");
    b.rt.block_on(admin.run_command(fail_point("alwaysOn")).into_future())
        .expect("configureFailPoint failCommand (needs enableTestCommands on a real server)");

    let rec = Recorder::default();
    let mut group = c.benchmark_group("batch_fetch");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(UPDATES as u64));
    for (name, workers) in [
        ("batch_fetch", DEFAULT_FETCH_WORKERS),
        ("batch_fetch_one_worker", 1),
    ] {
        group.bench_function(name, |bencher| {
            bencher.to_async(&b.rt).iter_custom(|iters| {
                let (client, rec, ops) = (b.client.clone(), rec.clone(), &ops);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let n = batch_fetch(&client, ops, workers).await;
                        let d = t.elapsed();
                        assert_eq!(n, UPDATES, "{name} fetched {n} documents");
                        rec.record(name, d);
                        total += d;
                    }
                    total
                }
            });
        });
    }
    group.finish();

    // One find per update costs UPDATES round trips (about 30 s here): criterion's ten
    // samples plus warm-up would take minutes, so it is timed once over all the updates.
    eprintln!("per_op_find: one timed run over {UPDATES} updates");
    let t = Instant::now();
    let n = b.rt.block_on(per_op_find(&b.client, &ops));
    assert_eq!(n, UPDATES, "per_op_find fetched {n} documents");
    rec.record("per_op_find", t.elapsed());

    b.rt.block_on(admin.run_command(fail_point("off")).into_future())
        .expect("turn the fail point off");
    for name in ["batch_fetch", "batch_fetch_one_worker"] {
        rec.print_ratio(
            "batch_fetch",
            name,
            "per_op_find",
            UPDATES as u64,
            "updates",
        );
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
