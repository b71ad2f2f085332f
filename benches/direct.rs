//! Direct reads of a 200,000-document collection: mongotail's direct-read source (split
//! into `_id` ranges read concurrently, gtm defaults: up to 9 splits) against one `find`
//! cursor over the whole collection.
//!
//! After the timing, one more run of each measures the peak heap the client holds while
//! reading (allocations on the client's threads only; the embedded server's threads are
//! not counted), to show that memory stays bounded by the cursors' batches.
//!
//! `cargo bench --bench direct`; prints `RATIO direct_reads split/one_cursor = x` (the
//! target is at least 1.0) and `MEMORY direct_reads ...` lines.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures::{StreamExt, TryStreamExt};
use mongodb::Client;
use mongotail::{DirectOptions, DirectReads, Namespace};

use common::{Bench, Recorder, DB};

const DOCS: usize = 200_000;
const COLL: &str = "direct";

/// mongotail: the collection split into `_id` ranges read concurrently, each document an
/// insert `Op`.
async fn split(client: &Client) -> usize {
    let options = DirectOptions::new().namespace(Namespace::new(DB, COLL).expect("namespace"));
    let mut ops = DirectReads::new(client, options);
    let mut n = 0;
    while let Some(op) = ops.next().await {
        op.expect("direct read op");
        n += 1;
    }
    n
}

/// The driver alone: one cursor over the whole collection.
async fn one_cursor(client: &Client) -> usize {
    let mut cursor = client
        .database(DB)
        .collection::<Document>(COLL)
        .find(doc! {})
        .await
        .expect("open the cursor");
    let mut n = 0;
    while cursor.try_next().await.expect("document").is_some() {
        n += 1;
    }
    n
}

async fn read(name: &str, client: &Client) -> usize {
    match name {
        "split" => split(client).await,
        _ => one_cursor(client).await,
    }
}

fn bench(c: &mut Criterion) {
    common::print_machine();
    let b = Bench::start_with_thread_hook(count_this_thread);
    count_this_thread(); // criterion's `to_async` runs the future on this thread
    b.insert(COLL, DOCS, |i| {
        doc! {
            "_id": i as i64,
            "name": format!("user-{i:06}"),
            "email": format!("user{i}@example.com"),
            "visits": (i % 1000) as i32,
            "tags": ["a", "b", "c"],
        }
    });
    let rec = Recorder::default();

    let mut group = c.benchmark_group("direct_reads");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(DOCS as u64));
    for name in ["split", "one_cursor"] {
        group.bench_function(name, |bencher| {
            bencher.to_async(&b.rt).iter_custom(|iters| {
                let (client, rec) = (b.client.clone(), rec.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let n = read(name, &client).await;
                        let d = t.elapsed();
                        assert_eq!(n, DOCS, "{name} read {n} documents");
                        rec.record(name, d);
                        total += d;
                    }
                    total
                }
            });
        });
    }
    group.finish();
    rec.print_ratio("direct_reads", "split", "one_cursor", DOCS as u64, "docs");

    for name in ["split", "one_cursor"] {
        let peak = b.rt.block_on(async {
            let base = heap_window_start();
            let n = read(name, &b.client).await;
            assert_eq!(n, DOCS);
            heap_window_end(base)
        });
        eprintln!(
            "MEMORY direct_reads {name} peak client heap = {:.1} MiB (for {DOCS} documents)",
            peak as f64 / (1024.0 * 1024.0)
        );
    }
}

// --- Heap accounting: bytes allocated and not yet freed by the client's threads. ---

#[global_allocator]
static ALLOC: Counting = Counting;

static ENABLED: AtomicBool = AtomicBool::new(false);
static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

fn counted() -> bool {
    ENABLED.load(Ordering::Relaxed) && COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn add(delta: isize) {
    let now = CURRENT.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Starts counting; returns the baseline.
fn heap_window_start() -> isize {
    CURRENT.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    ENABLED.store(true, Ordering::SeqCst);
    0
}

/// Stops counting; returns the peak above the baseline.
fn heap_window_end(base: isize) -> isize {
    ENABLED.store(false, Ordering::SeqCst);
    PEAK.load(Ordering::Relaxed) - base
}

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// plain atomics updated after the fact.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            add(-(layout.size() as isize));
        }
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && counted() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && counted() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
