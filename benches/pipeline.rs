//! The client-side adapters that need no server:
//!
//! - `pipeline`: the cost per op of `.pipeline([$match, $project])` (a typical filter and
//!   projection) over 20,000 small insert ops, against the same stream without it. Prints
//!   `PIPELINE cost per op = x µs` (median pipeline time minus median plain time, per op).
//! - `then_concurrent`: 200 ops whose work is a 1 ms sleep, 16 in flight against a
//!   sequential `then`. Prints `RATIO then_concurrent then_concurrent_16/then = x` (the
//!   target is at least 10).
//!
//! `cargo bench --bench pipeline`.

mod common;

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::{stream, StreamExt, TryStreamExt};
use mongotail::{Namespace, Op, OpKind, OpStreamExt};

use common::Recorder;

const OPS: usize = 20_000;
const SLEEPY_OPS: usize = 200;

fn ops(n: usize) -> Vec<Op> {
    let ns = Namespace::parse("shop.orders").unwrap();
    (0..n as i32)
        .map(|i| {
            Op::new(OpKind::Insert, ns.clone(), Some(Bson::Int32(i))).with_data(doc! {
                "_id": i, "status": if i % 2 == 0 { "A" } else { "B" }, "qty": i % 100,
                "customer": {"name": "ada", "email": "ada@example.com"}, "tags": ["x", "y"],
            })
        })
        .collect()
}

fn stages() -> Vec<Document> {
    vec![
        doc! {"$match": {"operationType": "insert", "fullDocument.status": "A"}},
        doc! {"$project": {"fullDocument.customer.email": 0}},
    ]
}

/// Criterion's `iter_custom` body: times `run` once per iteration, recording each time.
fn timed(
    rec: &Recorder,
    name: &'static str,
    iters: u64,
    mut run: impl FnMut() -> Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let d = run();
        rec.record(name, d);
        total += d;
    }
    total
}

fn count_kept<S>(s: S) -> usize
where
    S: futures::Stream<Item = mongotail::Result<Op>>,
{
    futures::executor::block_on(s.try_fold(0, |n, _| async move { Ok(n + 1) })).unwrap()
}

fn pipeline_cost(c: &mut Criterion, rec: &Recorder) {
    let input = ops(OPS);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(OPS as u64));
    g.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            timed(rec, "plain", iters, || {
                let s = stream::iter(input.clone().into_iter().map(Ok));
                let t = Instant::now();
                assert_eq!(count_kept(s), OPS);
                t.elapsed()
            })
        })
    });
    g.bench_function("match_project", |b| {
        b.iter_custom(|iters| {
            timed(rec, "match_project", iters, || {
                let s = stream::iter(input.clone().into_iter().map(Ok));
                let t = Instant::now();
                assert_eq!(count_kept(s.pipeline(&stages()).unwrap()), OPS / 2);
                t.elapsed()
            })
        })
    });
    g.finish();
    if let (Some(p), Some(plain)) = (rec.median("match_project"), rec.median("plain")) {
        let per_op = (p.saturating_sub(plain)).as_secs_f64() * 1e6 / OPS as f64;
        eprintln!(
            "PIPELINE cost per op = {per_op:.2} µs ($match + $project; median {:.1} ms with, {:.1} ms without, {OPS} ops)",
            p.as_secs_f64() * 1e3,
            plain.as_secs_f64() * 1e3
        );
    }
}

async fn sleepy(op: Op) -> Option<Bson> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    op.id
}

fn then_concurrent(c: &mut Criterion, rec: &Recorder) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let input = ops(SLEEPY_OPS);
    let mut g = c.benchmark_group("then_concurrent");
    g.throughput(Throughput::Elements(SLEEPY_OPS as u64));
    g.bench_function("then", |b| {
        b.iter_custom(|iters| {
            timed(rec, "then", iters, || {
                let s = stream::iter(input.clone()).then(sleepy);
                let t = Instant::now();
                assert_eq!(rt.block_on(s.count()), SLEEPY_OPS);
                t.elapsed()
            })
        })
    });
    g.bench_function("then_concurrent_16", |b| {
        b.iter_custom(|iters| {
            timed(rec, "then_concurrent_16", iters, || {
                let s = stream::iter(input.clone().into_iter().map(Ok)).then_concurrent(16, sleepy);
                let t = Instant::now();
                assert_eq!(rt.block_on(s.count()), SLEEPY_OPS);
                t.elapsed()
            })
        })
    });
    g.finish();
    rec.print_ratio(
        "then_concurrent",
        "then_concurrent_16",
        "then",
        SLEEPY_OPS as u64,
        "ops",
    );
}

fn benches(c: &mut Criterion) {
    common::print_machine();
    let rec = Recorder::default();
    pipeline_cost(c, &rec);
    then_concurrent(c, &rec);
}

criterion_group! {
    name = group;
    config = common::criterion();
    targets = benches
}
criterion_main!(group);
