//! Fault storms: a TCP fault proxy between the client and the server (connections reset,
//! stalled, replies cut mid-message) and `failCommand` storms on `getMore`, `aggregate` and
//! `find` (transient error codes, `closeConnection`, `blockConnection`), all while a writer
//! keeps writing. Every op must arrive exactly once and in order, for the oplog source, a
//! change stream and both merged by `start`.
//!
//! Ignored by default: `SOAK_FAULTS=10000 cargo test --release --test soak -- --ignored
//! --nocapture` (CI runs it with `SOAK_FAULTS=500`). Prints one line:
//! `soak: <faults> faults, <ops> ops, <lost> lost, <dup> duplicated`. Against mongosim
//! (or `MONGODB_URI`, a server with test commands enabled: the proxy is put in front of its
//! first host, with `directConnection=true`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use common::{unique_db, TestServer};
use futures::StreamExt;
use mongodb::Client;
use mongotail::{
    start, ChangeStreamOptions, Namespace, OplogOptions, RetryPolicy, Source, StartAt, TailOptions,
};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the connections going through it.
#[derive(Default)]
struct Faults {
    /// Bumped to reset every open connection (RST).
    epoch: AtomicU64,
    /// Forwarding waits until then.
    stall_until: Mutex<Option<Instant>>,
    /// The next server reply is cut in the middle and the connection closed.
    cut_next: AtomicBool,
}

/// A TCP proxy to `upstream` that applies [`Faults`].
async fn proxy(upstream: String, faults: Arc<Faults>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, faults) = (upstream.clone(), faults.clone());
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(&upstream).await {
                    pair(client, server, faults).await;
                }
            });
        }
    });
    addr
}

async fn pair(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let epoch = faults.epoch.load(Ordering::Acquire);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, faults.clone(), epoch, false);
    let down = pump(sr, cw, faults, epoch, true);
    // Either direction ending (or a fault) closes both.
    tokio::select! { () = up => {}, () = down => {} }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    epoch: u64,
    replies: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                if faults.epoch.load(Ordering::Acquire) != epoch { return; }
                continue;
            }
        };
        let stall = *faults.stall_until.lock().unwrap();
        if let Some(until) = stall {
            tokio::time::sleep_until(until.into()).await;
        }
        if faults.epoch.load(Ordering::Acquire) != epoch {
            return; // reset: drop both halves
        }
        if replies && faults.cut_next.swap(false, Ordering::AcqRel) {
            let _ = to.write_all(&buf[..n / 2]).await;
            return; // cut mid-message
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Transient codes a storm injects (reference: the change-stream spec's resumable errors
/// and the not-primary / interrupted family).
const CODES: &[i32] = &[
    43, 91, 189, 262, 11600, 11601, 10107, 13435, 13436, 63, 150, 234, 133,
];

/// One random fault: through the proxy, or a `failCommand` through `admin`.
async fn one_fault(faults: &Faults, admin: &Client, rng: &mut impl Rng) -> &'static str {
    match rng.random_range(0..6) {
        0 => {
            faults.epoch.fetch_add(1, Ordering::AcqRel);
            "reset"
        }
        1 => {
            let d = Duration::from_millis(rng.random_range(20..200));
            *faults.stall_until.lock().unwrap() = Some(Instant::now() + d);
            "stall"
        }
        2 => {
            faults.cut_next.store(true, Ordering::Release);
            "cut"
        }
        k => {
            let cmd = ["getMore", "aggregate", "find"][rng.random_range(0..3)];
            let mut data = doc! {"failCommands": [cmd]};
            let kind = match k {
                3 => {
                    data.insert("errorCode", CODES[rng.random_range(0..CODES.len())]);
                    "failCommand"
                }
                4 => {
                    data.insert("closeConnection", true);
                    "closeConnection"
                }
                _ => {
                    data.insert("blockConnection", true);
                    data.insert("blockTimeMS", rng.random_range(10..300_i32));
                    "blockConnection"
                }
            };
            let fp = doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": data};
            admin
                .database("admin")
                .run_command(fp)
                .await
                .expect("fail point");
            kind
        }
    }
}

/// Every `_id` a source delivered, in order.
type Seen = Arc<Mutex<BTreeMap<&'static str, Vec<i64>>>>;

fn consume(ops: mongotail::OpStream, seen: Seen, db: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ops = ops;
        while let Some(op) = ops.next().await {
            let op = op.unwrap_or_else(|e| panic!("a fault ended a stream: {e}"));
            if op.namespace.db() != db || !op.is_insert() {
                continue;
            }
            let id = op.id.as_ref().and_then(Bson::as_i64).expect("int64 _id");
            let source = match op.source {
                Source::Oplog => "oplog",
                Source::ChangeStream => "change stream",
                _ => "other",
            };
            seen.lock().unwrap().entry(source).or_default().push(id);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with SOAK_FAULTS=N and --ignored"]
async fn soak() {
    let target: u64 = std::env::var("SOAK_FAULTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let server = TestServer::start().await;
    let host = server
        .uri
        .trim_start_matches("mongodb://")
        .split(['/', ',', '?'])
        .next()
        .unwrap()
        .to_owned();
    let faults = Arc::new(Faults::default());
    let via = proxy(host, faults.clone()).await;
    let client = Client::with_uri_str(format!(
        "mongodb://{via}/?directConnection=true&serverSelectionTimeoutMS=5000"
    ))
    .await
    .unwrap();
    let db = unique_db("soak");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1_i64}).await.unwrap();
    let from = server.latest_ts().await;
    let retry = RetryPolicy::new(Duration::from_millis(5), Duration::from_millis(200), 1_000);
    let oplog = OplogOptions::new()
        .namespace(ns.clone())
        .retry(retry.clone());
    let cs = ChangeStreamOptions::new()
        .namespace(ns.clone())
        .retry(retry);
    let seen: Seen = Arc::default();
    let merged = TailOptions::new()
        .start(StartAt::After(from))
        .oplog(oplog)
        .change_stream(cs);
    let (ops, handle) = start(&client, merged);
    let consumer = consume(ops, seen.clone(), db.clone());

    // The writer writes through its own connection, outside the proxy.
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (coll, writing, written) = (coll.clone(), writing.clone(), written.clone());
        tokio::spawn(async move {
            while writing.load(Ordering::Acquire) {
                let id = written.load(Ordering::Acquire) as i64;
                coll.insert_one(doc! {"_id": id}).await.expect("write");
                written.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    // The storm starts once both sources read (a source never reached would end with
    // `Error::FirstContact` after 30 s, as it should).
    while seen.lock().unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rng = rand::rng();
    let mut mix: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..target {
        *mix.entry(one_fault(&faults, &server.client, &mut rng).await)
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
    }
    writing.store(false, Ordering::Release);
    writer.await.unwrap();
    let _ = server
        .client
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await;
    let total = written.load(Ordering::Acquire);
    // Let both sources catch up (no more faults now).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            ["oplog", "change stream"]
                .iter()
                .all(|s| seen.get(s).is_some_and(|v| v.len() as u64 >= total))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.stop();
    consumer.await.unwrap();
    let (ops, lost, dup, ordered) = tally(&seen.lock().unwrap(), total);
    println!("soak: {target} faults, {ops} ops, {lost} lost, {dup} duplicated");
    println!("soak: fault mix {mix:?}, {total} writes per source");
    assert_eq!((lost, dup), (0, 0));
    assert!(ordered, "a source delivered out of order");
}

/// Ops delivered, lost and duplicated across both sources, and whether each source
/// delivered in order, for `total` writes (`_id`s `0..total`).
fn tally(seen: &BTreeMap<&'static str, Vec<i64>>, total: u64) -> (u64, usize, usize, bool) {
    let (mut lost, mut dup, mut ops, mut ordered) = (0, 0, 0, true);
    for source in ["oplog", "change stream"] {
        let ids = seen.get(source).cloned().unwrap_or_default();
        ops += ids.len() as u64;
        let mut counts = vec![0_u32; total as usize];
        for id in &ids {
            counts[*id as usize] += 1;
        }
        lost += counts.iter().filter(|c| **c == 0).count();
        dup += counts
            .iter()
            .map(|c| c.saturating_sub(1) as usize)
            .sum::<usize>();
        let twice: Vec<usize> = (0..counts.len())
            .filter(|i| counts[*i] > 1)
            .take(5)
            .collect();
        if !twice.is_empty() {
            let at = ids
                .iter()
                .position(|i| *i as usize == twice[0])
                .unwrap_or(0);
            let around = &ids[at.saturating_sub(3)..(at + 8).min(ids.len())];
            println!("soak: {source} delivered again e.g. {twice:?}; around the first: {around:?}");
        }
        ordered &= ids.windows(2).all(|w| w[0] <= w[1]);
    }
    (ops, lost, dup, ordered)
}
