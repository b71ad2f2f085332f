//! Sharded cluster throughput: the merged per-shard oplog tails of a three-shard cluster
//! ([`ClusterStream`]) against a change stream through the router
//! ([`ChangeStreamSource`]), both on the same hashed collection from the same cluster
//! time, reading the same 30,000 inserts spread over the three shards.
//!
//! `cargo bench --bench cluster`; prints
//! `RATIO cluster cluster_stream/router_change_stream = x` (throughput of the per-shard
//! tails over the router's change stream). Set `MONGODB_URI` to a router of a real
//! cluster to measure that instead (the bench writes into `mongotail_bench`).

mod common;

use std::future::IntoFuture;
use std::time::Duration;

use bson::{doc, Timestamp};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use mongodb::Client;
use mongotail::{
    cluster_time, ChangeStreamOptions, ChangeStreamSource, ClusterOptions, ClusterStream,
    Namespace, StartAt,
};

use common::{Bench, DB};

const EVENTS: usize = 30_000;
const COLL: &str = "events";
const PAIRED_ROUNDS: usize = 6;

fn ns() -> Namespace {
    Namespace::new(DB, COLL).expect("namespace")
}

/// Reads `EVENTS` ops of `stream`.
async fn count<S>(mut stream: S) -> usize
where
    S: futures::Stream<Item = mongotail::Result<mongotail::Op>> + Unpin,
{
    let mut n = 0;
    while n < EVENTS {
        match stream.next().await {
            Some(op) => {
                op.expect("an op");
                n += 1;
            }
            None => break,
        }
    }
    n
}

async fn cluster_stream(router: &Client, start: Timestamp) -> usize {
    let options = ClusterOptions::new()
        .namespace(ns())
        .start(StartAt::After(start));
    count(ClusterStream::new(router, options)).await
}

async fn router_change_stream(router: &Client, start: Timestamp) -> usize {
    let options = ChangeStreamOptions::new()
        .namespace(ns())
        .start(StartAt::After(start));
    count(ChangeStreamSource::new(router, options)).await
}

fn bench(c: &mut Criterion) {
    common::print_machine();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (uri, _cluster) = match std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
        Some(uri) => (uri, None),
        None => {
            // Idle shards advance every 50 ms, so the last ops are not held back for long.
            let opts = mongosim::ClusterOptions::new()
                .shards(3)
                .oplog_size_bytes(1 << 30)
                .noop_interval(Duration::from_millis(50));
            let cluster = mongosim::Cluster::start(opts).expect("start a cluster");
            (cluster.uri(), Some(cluster))
        }
    };
    let router = rt
        .block_on(Client::with_uri_str(&uri))
        .expect("connect to the router");
    rt.block_on(router.database(DB).drop().into_future())
        .expect("drop the bench database");
    rt.block_on(
        router
            .database("admin")
            .run_command(doc! {"shardCollection": ns().to_string(), "key": {"_id": "hashed"}})
            .into_future(),
    )
    .expect("shard the collection");
    let start = rt
        .block_on(cluster_time(&router))
        .expect("the router's cluster time");
    let b = Bench {
        rt,
        client: router,
        sim: None,
    };
    b.insert(COLL, EVENTS, |i| {
        doc! {"_id": i as i64, "name": format!("user-{i:06}"), "visits": (i % 100) as i32}
    });
    common::compare(
        c,
        &b,
        "cluster",
        ["cluster_stream", "router_change_stream"],
        EVENTS,
        "ops",
        PAIRED_ROUNDS,
        move |name, client| async move {
            match name {
                "cluster_stream" => cluster_stream(&client, start).await,
                _ => router_change_stream(&client, start).await,
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
