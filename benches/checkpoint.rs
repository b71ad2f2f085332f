//! The cost of acknowledgement tracking: `start` tailing the oplog without a checkpoint,
//! against the same with a checkpoint (every op acknowledged, saved every 1,000
//! acknowledgements to a file), both reading the same 100,000 insert entries.
//!
//! `cargo bench --bench checkpoint`; prints `RATIO acknowledged_oplog
//! checkpointed/plain = x` (throughput with tracking over without; the target is at least
//! 0.95: tracking costs under 5%).

mod common;

use std::time::Duration;

use bson::Timestamp;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use mongodb::Client;
use mongotail::checkpoint::{CheckpointOptions, CheckpointStore, FileStore};
use mongotail::{start, OplogOptions, StartAt, TailOptions};

use common::Bench;

const ENTRIES: usize = 100_000;
/// Alternating runs of each contender after the criterion measurements.
const PAIRED_ROUNDS: usize = 10;
const SAVE_EVERY: u64 = 1_000;

/// Reads every entry from `start` to `end` through [`start`], acknowledging each op when
/// `checkpointed`.
async fn tail(client: &Client, from: Timestamp, end: Timestamp, checkpointed: bool) -> usize {
    let oplog = OplogOptions::new()
        .start(StartAt::After(from))
        .max_await_time(Duration::from_secs(1));
    let mut options = TailOptions::new().oplog(oplog);
    let dir = std::env::temp_dir().join(format!("mongotail-bench-{}", std::process::id()));
    if checkpointed {
        let store = FileStore::new(&dir).expect("checkpoint directory");
        store.delete("bench").await.expect("fresh checkpoint");
        let checkpoint = CheckpointOptions::new(store, "bench").save_every(SAVE_EVERY);
        options = options.checkpoint_options(checkpoint);
    }
    let (mut ops, handle) = start(client, options);
    let mut n = 0;
    while let Some(op) = ops.next().await {
        let mut op = op.expect("oplog op");
        n += 1;
        let last = op.timestamp >= end;
        op.ack();
        if last {
            break;
        }
    }
    if checkpointed {
        handle.flush().await.expect("saved");
    }
    handle.stop();
    n
}

fn bench(c: &mut Criterion) {
    common::print_machine();
    let b = Bench::start();
    let (from, end) = b.oplog_backlog("acked", ENTRIES);
    common::compare(
        c,
        &b,
        "acknowledged_oplog",
        ["checkpointed", "plain"],
        ENTRIES,
        "entries",
        PAIRED_ROUNDS,
        move |name, client| async move { tail(&client, from, end, name == "checkpointed").await },
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
