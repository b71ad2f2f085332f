//! mongotail against the bare driver, side by side on one mongosim: the figures of the
//! README's performance table.
//!
//! `cargo bench --bench compare` (a few minutes); `COMPARE_SCALE=0.2` (or `3`) scales every
//! count. It prints, per source (oplog, change stream, direct read), for mongotail and the
//! driver's `Document` and `RawDocumentBuf` readers (`find` on `local.oplog.rs` or the
//! collection, `watch()`): ops/s, mongotail's ratio, client and server CPU per op and the
//! client's peak RSS; then write→op latency p50/p99 at 1,000 writes/s, and the peak RSS
//! of mongotail tailing 1,000,000 ops written while it reads.
//!
//! How it measures:
//! - The server runs in a child process (this binary again, with `MONGOTAIL_COMPARE_SERVE`
//!   set): its memory and CPU stay out of the client's. Server CPU is the child's, client
//!   CPU this process's, both summed over the threads' `schedstat` (nanoseconds of CPU,
//!   `/proc/<pid>/task/*/schedstat`); neither process has other work while a reader runs.
//! - Peak RSS is `VmHWM` of this process, reset before each run (`/proc/self/clear_refs`).
//! - Each round runs every reader once, in an order rotated each round (interleaved pairs:
//!   the machine's speed drifts); a ratio is the median of the per-round ratios.

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocumentBuf, Timestamp};
use futures::StreamExt;
use mongodb::options::CursorType;
use mongodb::Client;
use mongotail::{
    ChangeStreamOptions, ChangeStreamSource, DirectOptions, DirectReads, Namespace, OplogOptions,
    OplogStream, StartAt,
};

/// Set in the child process that serves mongosim.
const SERVE_ENV: &str = "MONGOTAIL_COMPARE_SERVE";
/// Scales every count (default 1).
const SCALE_ENV: &str = "COMPARE_SCALE";
const DB: &str = "mongotail_compare";
const COLL: &str = "events";
/// Small inserts read back by every reader (scaled).
const BACKLOG: f64 = 100_000.0;
/// Rounds of interleaved runs.
const ROUNDS: usize = 3;
/// Writes at 1,000/s for the latency figures (scaled).
const LATENCY_WRITES: f64 = 5_000.0;
/// Ops tailed for the peak-RSS figure (scaled).
const RSS_OPS: f64 = 1_000_000.0;
const AWAIT: Duration = Duration::from_millis(500);

fn main() {
    if std::env::var_os(SERVE_ENV).is_some() {
        serve();
        return;
    }
    common::print_machine();
    let scale: f64 = std::env::var(SCALE_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let count = |n: f64| ((n * scale) as usize).max(1_000);
    let server = Server::spawn();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = rt
        .block_on(Client::with_uri_str(&server.uri))
        .expect("connect to mongosim");
    // First, while the process holds nothing from the other runs; the backlog's oplog
    // entries come after its entries, so no reader scans them.
    let tailing_rss = tailing_rss(&rt, &client, count(RSS_OPS));
    let backlog = count(BACKLOG);
    let (start, end) = rt.block_on(write_backlog(&client, backlog));
    eprintln!("BACKLOG {backlog} small inserts; {ROUNDS} interleaved rounds");
    let fixture = Fixture {
        client,
        start,
        end,
        expected: backlog,
    };
    let mut table = Vec::new();
    for source in [Source::Oplog, Source::ChangeStream, Source::Direct] {
        table.extend(compare_source(&rt, &server, &fixture, source));
    }
    print_table(&table);
    print_filtered_scans(&rt, &server, &fixture);
    print_latency(&rt, &fixture.client, count(LATENCY_WRITES));
    println!();
    println!("{tailing_rss}");
}

// ------------------------------------------------------------------ the server process

/// mongosim in a child process (this binary, started with [`SERVE_ENV`]); it stops when
/// its standard input closes.
struct Server {
    child: Child,
    uri: String,
}

impl Server {
    fn spawn() -> Server {
        let exe = std::env::current_exe().expect("the bench binary's path");
        let mut child = Command::new(exe)
            .env(SERVE_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let stdout = child.stdout.take().expect("the server's stdout");
        let mut uri = String::new();
        BufReader::new(stdout)
            .read_line(&mut uri)
            .expect("the server's URI");
        Server {
            child,
            uri: uri.trim().to_owned(),
        }
    }

    /// CPU time the server process has used so far.
    fn cpu(&self) -> Duration {
        threads_cpu(&format!("/proc/{}/task", self.child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The child: serves until standard input closes. No periodic no-op writes, an oplog large
/// enough for every entry the bench writes.
fn serve() {
    let sim = mongosim::MongoSim::start(
        mongosim::Options::new()
            .oplog_size_bytes(8 << 30)
            .noop_interval(Duration::from_secs(3600)),
    )
    .expect("start mongosim");
    let mut out = std::io::stdout();
    writeln!(out, "{}", sim.uri()).expect("print the URI");
    out.flush().expect("flush the URI");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(sim);
}

/// CPU time of the threads listed in `tasks` (`/proc/<pid>/task`), from their `schedstat`.
fn threads_cpu(tasks: &str) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// Returns the heap's free memory to the system, then resets this process's peak RSS to its
/// current RSS: the next peak is what the next run adds to what is live.
fn reset_peak_rss() {
    // SAFETY: glibc's malloc_trim only releases free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak RSS in bytes since the last reset.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ------------------------------------------------------------------ readers

/// The backlog every reader reads: `expected` inserts into [`COLL`] after `start`, the
/// last at `end`.
struct Fixture {
    client: Client,
    start: Timestamp,
    end: Timestamp,
    expected: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Oplog,
    ChangeStream,
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reader {
    Mongotail,
    DriverDocument,
    DriverRaw,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Oplog => "oplog",
            Source::ChangeStream => "change stream",
            Source::Direct => "direct read",
        }
    }
}

impl Reader {
    const ALL: [Reader; 3] = [Reader::Mongotail, Reader::DriverDocument, Reader::DriverRaw];

    fn name(self, source: Source) -> &'static str {
        match (self, source) {
            (Reader::Mongotail, _) => "mongotail",
            (Reader::DriverDocument, Source::ChangeStream) => "watch() Document",
            (Reader::DriverRaw, Source::ChangeStream) => "watch() RawDocumentBuf",
            (Reader::DriverDocument, _) => "driver Document",
            (Reader::DriverRaw, _) => "driver RawDocumentBuf",
        }
    }
}

/// Inserts `n` small documents; the oplog `ts` before the first and of the last.
async fn write_backlog(client: &Client, n: usize) -> (Timestamp, Timestamp) {
    let db = client.database(DB);
    db.drop().await.expect("drop the bench database");
    db.create_collection(COLL)
        .await
        .expect("create the collection");
    let start = common::latest_ts(client).await;
    insert_batches(client, COLL, 0, n).await;
    (start, common::latest_ts(client).await)
}

/// Inserts documents `from..to` into `coll` in batches of 1,000.
async fn insert_batches(client: &Client, coll: &str, from: usize, to: usize) {
    let coll = client.database(DB).collection::<Document>(coll);
    let mut i = from;
    while i < to {
        let end = (i + 1_000).min(to);
        coll.insert_many((i..end).map(small_doc))
            .await
            .expect("insert bench documents");
        i = end;
    }
}

fn small_doc(i: usize) -> Document {
    doc! {"_id": i as i64, "name": format!("user-{i:06}"), "visits": (i % 100) as i32, "tags": ["a", "b"]}
}

/// Reads the backlog with `reader`; returns how many ops it read.
async fn read(f: &Fixture, source: Source, reader: Reader) -> usize {
    match (source, reader) {
        (Source::Oplog, Reader::Mongotail) => {
            let options = OplogOptions::new()
                .start(StartAt::After(f.start))
                .max_await_time(AWAIT);
            count_until(OplogStream::new(&f.client, options), |op| {
                op.timestamp >= f.end
            })
            .await
        }
        (Source::ChangeStream, Reader::Mongotail) => {
            let options = ChangeStreamOptions::new()
                .namespace(Namespace::new(DB, COLL).expect("namespace"))
                .start_at_operation_time(common::just_after(f.start))
                .max_await_time(AWAIT);
            let ops = ChangeStreamSource::new(&f.client, options);
            count_until(ops, |op| op.timestamp >= f.end).await
        }
        (Source::Direct, Reader::Mongotail) => {
            let options =
                DirectOptions::new().namespace(Namespace::new(DB, COLL).expect("namespace"));
            let ops = DirectReads::new(&f.client, options);
            ops.map(|op| op.expect("direct read op")).count().await
        }
        (Source::Oplog, _) => driver_oplog(f, reader).await,
        (Source::ChangeStream, _) => driver_watch(f, reader).await,
        (Source::Direct, _) => driver_find(f, reader).await,
    }
}

/// Counts the items of a stream (a mongotail source, a driver cursor or change stream) up
/// to the first one `last` says ends the backlog.
async fn count_until<T, E, S>(mut items: S, last: impl Fn(&T) -> bool) -> usize
where
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(item) = items.next().await {
        n += 1;
        if last(&item.expect("an op, entry or event")) {
            break;
        }
    }
    n
}

/// The driver's tailable cursor on the oplog, entries as `Document` or `RawDocumentBuf`.
async fn driver_oplog(f: &Fixture, reader: Reader) -> usize {
    let cursor = f
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs")
        .find(doc! {"ts": {"$gt": f.start}})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(AWAIT)
        .await
        .expect("open the oplog cursor");
    if reader == Reader::DriverDocument {
        let last = |e: &Document| e.get_timestamp("ts").expect("ts") >= f.end;
        count_until(cursor.with_type::<Document>(), last).await
    } else {
        let last = |e: &RawDocumentBuf| e.get_timestamp("ts").expect("ts") >= f.end;
        count_until(cursor, last).await
    }
}

/// The driver's `watch()` with mongotail's options, events as `ChangeStreamEvent<Document>`
/// or `RawDocumentBuf`.
async fn driver_watch(f: &Fixture, reader: Reader) -> usize {
    let stream = f
        .client
        .database(DB)
        .collection::<Document>(COLL)
        .watch()
        .full_document(mongodb::options::FullDocumentType::UpdateLookup)
        .start_at_operation_time(common::just_after(f.start))
        .max_await_time(AWAIT)
        .await
        .expect("open the change stream");
    if reader == Reader::DriverDocument {
        count_until(stream, |e| e.cluster_time.is_some_and(|t| t >= f.end)).await
    } else {
        let last =
            |e: &RawDocumentBuf| e.get_timestamp("clusterTime").expect("clusterTime") >= f.end;
        count_until(stream.with_type::<RawDocumentBuf>(), last).await
    }
}

/// One `find({})` on the collection, documents as `Document` or `RawDocumentBuf`.
async fn driver_find(f: &Fixture, reader: Reader) -> usize {
    let cursor = f
        .client
        .database(DB)
        .collection::<RawDocumentBuf>(COLL)
        .find(doc! {})
        .await
        .expect("open the cursor");
    if reader == Reader::DriverDocument {
        let docs = cursor.with_type::<Document>();
        docs.map(|d| d.expect("document")).count().await
    } else {
        cursor.map(|d| d.expect("document")).count().await
    }
}

// ------------------------------------------------------------------ measuring

/// One run of one reader.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ops: usize,
    wall: Duration,
    client: Duration,
    server: Duration,
    peak_rss: u64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `work` on `rt`, measuring wall time, both processes' CPU and the peak RSS.
fn measure(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    work: impl Future<Output = usize>,
) -> Sample {
    reset_peak_rss();
    let (client0, server0) = (threads_cpu("/proc/self/task"), server.cpu());
    let t = Instant::now();
    let ops = rt.block_on(work);
    let wall = t.elapsed();
    Sample {
        ops,
        wall,
        client: threads_cpu("/proc/self/task").saturating_sub(client0),
        server: server.cpu().saturating_sub(server0),
        peak_rss: peak_rss(),
    }
}

/// One row of the table: a reader of a source, its runs and its ratios.
struct Row {
    source: Source,
    reader: Reader,
    samples: Vec<Sample>,
    /// mongotail's ops/s over this reader's, per round.
    ratios: Vec<f64>,
}

/// [`ROUNDS`] rounds of every reader of `source`, in an order rotated each round.
fn compare_source(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    f: &Fixture,
    source: Source,
) -> Vec<Row> {
    let mut rows: Vec<Row> = Reader::ALL
        .iter()
        .map(|&reader| Row {
            source,
            reader,
            samples: Vec::new(),
            ratios: Vec::new(),
        })
        .collect();
    // An untimed run of each warms the server's and the client's caches.
    for reader in Reader::ALL {
        rt.block_on(read(f, source, reader));
    }
    for round in 0..ROUNDS {
        for k in 0..Reader::ALL.len() {
            let i = (k + round) % Reader::ALL.len();
            let sample = measure(rt, server, read(f, source, rows[i].reader));
            assert!(
                sample.ops >= f.expected,
                "{} {} read {} of {} ops",
                source.name(),
                rows[i].reader.name(source),
                sample.ops,
                f.expected
            );
            rows[i].samples.push(sample);
        }
        let lib = rows[0].samples[round].rate();
        for row in &mut rows {
            let rate = row.samples[round].rate();
            row.ratios.push(lib / rate);
        }
    }
    rows
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn per_op(d: Duration, ops: usize) -> f64 {
    d.as_secs_f64() * 1e6 / ops.max(1) as f64
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| source | reader | ops/s | mongotail ÷ reader | client CPU µs/op | server CPU µs/op | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        let s = &row.samples;
        let med = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
        let ratio = match row.reader {
            Reader::Mongotail => "–".to_owned(),
            _ => format!("{:.2}x", median(row.ratios.clone())),
        };
        println!(
            "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.1} |",
            row.source.name(),
            row.reader.name(row.source),
            med(&|x| x.rate()),
            ratio,
            med(&|x| per_op(x.client, x.ops)),
            med(&|x| per_op(x.server, x.ops)),
            med(&|x| x.peak_rss as f64 / (1 << 20) as f64),
        );
    }
}

/// mongosim's CPU per oplog entry scanned by the filters tailers send, none of which
/// matches the backlog's entries: the cost of the filter alone (median of [`ROUNDS`]).
fn print_filtered_scans(rt: &tokio::runtime::Runtime, server: &Server, f: &Fixture) {
    let other = format!("{DB}.other");
    let filters = [
        ("ts range + ns $in", doc! {"ns": {"$in": [&other]}}),
        (
            "ts range + ns regex",
            doc! {"ns": {"$regex": "^mongotail_compare\\.other$"}},
        ),
        ("ts range + op $in", doc! {"op": {"$in": ["n"]}}),
        (
            "ts range + fromMigrate $exists",
            doc! {"fromMigrate": {"$exists": true}},
        ),
    ];
    println!();
    println!(
        "| oplog query ({} entries scanned, none returned) | server CPU µs/entry |",
        f.expected
    );
    println!("|---|---|");
    let oplog = f
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    for (name, filter) in filters {
        let mut filter = filter;
        filter.insert("ts", doc! {"$gt": f.start, "$lte": f.end});
        let runs = (0..ROUNDS)
            .map(|_| {
                let sample = measure(rt, server, async {
                    let cursor = oplog.find(filter.clone()).await.expect("oplog query");
                    cursor.map(|e| e.expect("entry")).count().await
                });
                assert_eq!(sample.ops, 0, "{name} matched entries");
                per_op(sample.server, f.expected)
            })
            .collect();
        println!("| {name} | {:.2} |", median(runs));
    }
}

// ------------------------------------------------------------------ latency and memory

/// Nanoseconds since a fixed instant of this process: writers stamp documents with it.
fn now_ns(epoch: Instant) -> i64 {
    epoch.elapsed().as_nanos() as i64
}

/// Write→op latency of each tailing reader at 1,000 writes/s: `writes` inserts stamped
/// with their send time, each reader started before the first.
fn print_latency(rt: &tokio::runtime::Runtime, client: &Client, writes: usize) {
    println!();
    println!("| write→op latency at 1,000 writes/s ({writes} writes) | p50 | p99 |");
    println!("|---|---|---|");
    let epoch = Instant::now();
    let readers: [(&str, Source, Reader); 4] = [
        ("mongotail oplog", Source::Oplog, Reader::Mongotail),
        ("driver oplog cursor", Source::Oplog, Reader::DriverRaw),
        (
            "mongotail change stream",
            Source::ChangeStream,
            Reader::Mongotail,
        ),
        ("driver watch()", Source::ChangeStream, Reader::DriverRaw),
    ];
    for (name, source, reader) in readers {
        let mut lat = rt.block_on(latencies(client, source, reader, writes, epoch));
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!(
            "| {name} | {:.2} ms | {:.2} ms |",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3
        );
    }
}

/// The latencies of `writes` stamped inserts, as `reader` of `source` sees them.
async fn latencies(
    client: &Client,
    source: Source,
    reader: Reader,
    writes: usize,
    epoch: Instant,
) -> Vec<Duration> {
    let coll = format!("latency_{}_{reader:?}", source.name().replace(' ', "_"));
    let db = client.database(DB);
    db.create_collection(&coll)
        .await
        .expect("create the collection");
    let start = common::latest_ts(client).await;
    let stamps = stamped_ops(client, source, reader, &coll, start);
    let writer = {
        let coll = db.collection::<Document>(&coll);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for i in 0..writes {
                tick.tick().await;
                let d = doc! {"_id": i as i64, "t": now_ns(epoch)};
                coll.insert_one(d).await.expect("insert");
            }
        })
    };
    let lat: Vec<Duration> = stamps
        .take(writes)
        .map(|t| Duration::from_nanos((now_ns(epoch) - t).max(0) as u64))
        .collect()
        .await;
    writer.await.expect("the writer");
    lat
}

/// The `t` stamps of the inserts into `coll` after `start`, as `reader` of `source`
/// delivers them.
fn stamped_ops<'a>(
    client: &'a Client,
    source: Source,
    reader: Reader,
    coll: &'a str,
    start: Timestamp,
) -> futures::stream::BoxStream<'a, i64> {
    let ns = Namespace::new(DB, coll).expect("namespace");
    let stamp = |d: &Document| d.get_i64("t").expect("stamp");
    match (source, reader) {
        (Source::Oplog, Reader::Mongotail) => {
            let options = OplogOptions::new()
                .start(StartAt::After(start))
                .namespace(ns)
                .max_await_time(AWAIT);
            OplogStream::new(client, options)
                .map(move |op| stamp(op.expect("op").data.as_ref().expect("insert data")))
                .boxed()
        }
        (Source::ChangeStream, Reader::Mongotail) => {
            let options = ChangeStreamOptions::new()
                .namespace(ns)
                .start_at_operation_time(common::just_after(start))
                .max_await_time(AWAIT);
            ChangeStreamSource::new(client, options)
                .map(move |op| stamp(op.expect("op").data.as_ref().expect("insert data")))
                .boxed()
        }
        (Source::Oplog, _) => driver_stamps_oplog(client, coll, start),
        _ => driver_stamps_watch(client, coll, start),
    }
}

fn driver_stamps_oplog<'a>(
    client: &'a Client,
    coll: &'a str,
    start: Timestamp,
) -> futures::stream::BoxStream<'a, i64> {
    let oplog = client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let filter = doc! {"ts": {"$gt": start}, "ns": format!("{DB}.{coll}")};
    futures::stream::once(async move {
        oplog
            .find(filter)
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(AWAIT)
            .await
            .expect("open the oplog cursor")
    })
    .flat_map(|cursor| {
        cursor.map(|e| {
            let e = e.expect("oplog entry");
            e.get_document("o").expect("o").get_i64("t").expect("stamp")
        })
    })
    .boxed()
}

fn driver_stamps_watch<'a>(
    client: &'a Client,
    coll: &'a str,
    start: Timestamp,
) -> futures::stream::BoxStream<'a, i64> {
    let coll = client.database(DB).collection::<Document>(coll);
    futures::stream::once(async move {
        coll.watch()
            .start_at_operation_time(common::just_after(start))
            .max_await_time(AWAIT)
            .await
            .expect("open the change stream")
            .with_type::<RawDocumentBuf>()
    })
    .flat_map(|events| {
        events.map(|e| {
            let e = e.expect("change event");
            let full = e.get_document("fullDocument").expect("fullDocument");
            full.get_i64("t").expect("stamp")
        })
    })
    .boxed()
}

/// Peak RSS of this process while mongotail tails `ops` inserts into another collection,
/// written during the read (a consumer that keeps up: it only counts); the line to print.
fn tailing_rss(rt: &tokio::runtime::Runtime, client: &Client, ops: usize) -> String {
    const TAILED: &str = "tailed";
    let start = rt.block_on(common::latest_ts(client));
    reset_peak_rss();
    let before = peak_rss();
    let t = Instant::now();
    let n = rt.block_on(async {
        let writer = {
            let client = client.clone();
            tokio::spawn(async move { insert_batches(&client, TAILED, 0, ops).await })
        };
        let options = OplogOptions::new()
            .start(StartAt::After(start))
            .namespace(Namespace::new(DB, TAILED).expect("namespace"))
            .max_await_time(AWAIT);
        let n = OplogStream::new(client, options)
            .take(ops)
            .map(|op| op.expect("op"))
            .count()
            .await;
        writer.await.expect("the writer");
        n
    });
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "peak RSS tailing {n} ops with mongotail's oplog source while they are written: {:.1} MiB (at the start: {:.1} MiB; {:.1} s; target < 64 MiB)",
        mib(peak_rss()),
        mib(before),
        t.elapsed().as_secs_f64()
    )
}
