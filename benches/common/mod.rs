//! Shared by the benches: one embedded mongosim per bench file, a client runtime, and a
//! recorder that prints the ratio between the two contenders of a bench.
//!
//! Set `MONGODB_URI` to run against a real replica set instead (the benches write into
//! the `mongotail_bench` database and drop it first).

#![allow(dead_code)] // each bench uses part of this module

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Document, Timestamp};
use criterion::Criterion;
use mongodb::Client;

/// The database the benches write into.
pub const DB: &str = "mongotail_bench";

/// A server (embedded unless `MONGODB_URI` is set) and a client runtime.
pub struct Bench {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub sim: Option<mongosim::MongoSim>,
}

impl Bench {
    /// Starts the server with a 2 GiB oplog (large enough for every bench's entries) and
    /// no periodic no-op writes during measurements.
    pub fn start() -> Bench {
        Bench::start_with_thread_hook(|| {})
    }

    /// [`Bench::start`], running `hook` on each thread of the client runtime as it starts.
    pub fn start_with_thread_hook(hook: fn()) -> Bench {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(hook)
            .build()
            .expect("tokio runtime");
        let (uri, sim) = match std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
            Some(uri) => (uri, None),
            None => {
                let sim = mongosim::MongoSim::start(
                    mongosim::Options::new()
                        .oplog_size_bytes(2 << 30)
                        .noop_interval(Duration::from_secs(3600)),
                )
                .expect("start mongosim");
                (sim.uri(), Some(sim))
            }
        };
        let client = rt
            .block_on(Client::with_uri_str(&uri))
            .expect("connect to the server");
        rt.block_on(client.database(DB).drop().into_future())
            .expect("drop the bench database");
        Bench { rt, client, sim }
    }

    /// The `ts` of the newest oplog entry.
    pub fn latest_ts(&self) -> Timestamp {
        self.rt.block_on(latest_ts(&self.client))
    }

    /// Inserts `n` documents made by `make` into `coll`, in batches.
    pub fn insert(&self, coll: &str, n: usize, make: impl Fn(usize) -> Document) {
        let coll = self.client.database(DB).collection::<Document>(coll);
        self.rt.block_on(async {
            let mut i = 0;
            while i < n {
                let end = (i + 5_000).min(n);
                coll.insert_many((i..end).map(&make))
                    .await
                    .expect("insert bench documents");
                i = end;
            }
        });
    }
}

/// The `ts` of the newest oplog entry.
pub async fn latest_ts(client: &Client) -> Timestamp {
    let entry = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .projection(doc! {"ts": 1})
        .await
        .expect("read the oplog")
        .expect("the oplog is empty");
    entry.get_timestamp("ts").expect("oplog entry ts")
}

/// Criterion settings shared by every bench: 10 samples, short warm-up, a few seconds of
/// measurement (each iteration processes the whole data set, so samples are flat).
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args()
}

/// The cluster time just after `ts`.
pub fn just_after(ts: Timestamp) -> Timestamp {
    match ts.increment.checked_add(1) {
        Some(increment) => Timestamp {
            time: ts.time,
            increment,
        },
        None => Timestamp {
            time: ts.time + 1,
            increment: 0,
        },
    }
}

/// Per-iteration durations of each contender, to print their ratio after criterion's
/// report (criterion does not hand its estimates back to the caller).
#[derive(Clone, Default)]
pub struct Recorder {
    runs: Arc<Mutex<BTreeMap<&'static str, Vec<Duration>>>>,
}

impl Recorder {
    pub fn record(&self, name: &'static str, d: Duration) {
        self.runs
            .lock()
            .expect("recorder lock")
            .entry(name)
            .or_default()
            .push(d);
    }

    /// Median duration of one iteration of `name`.
    pub fn median(&self, name: &str) -> Option<Duration> {
        let runs = self.runs.lock().expect("recorder lock");
        let mut v = runs.get(name)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort();
        Some(v[v.len() / 2])
    }

    /// Prints `RATIO <bench> <a>/<b> = x`, the throughput of `a` over the throughput of
    /// `b` (above 1: `a` is faster), with both throughputs in `unit`s per second.
    pub fn print_ratio(&self, bench: &str, a: &str, b: &str, elements: u64, unit: &str) {
        let (Some(ta), Some(tb)) = (self.median(a), self.median(b)) else {
            eprintln!("RATIO {bench} {a}/{b} = n/a (a contender did not run)");
            return;
        };
        let rate = |t: Duration| elements as f64 / t.as_secs_f64();
        let runs = |name: &str| -> String {
            let runs = self.runs.lock().expect("recorder lock");
            let secs: Vec<String> = runs
                .get(name)
                .map(|v| {
                    v.iter()
                        .map(|d| format!("{:.2}", d.as_secs_f64()))
                        .collect()
                })
                .unwrap_or_default();
            secs.join(" ")
        };
        eprintln!("RUNS {bench} {a} (s): {}", runs(a));
        eprintln!("RUNS {bench} {b} (s): {}", runs(b));
        eprintln!(
            "THROUGHPUT {bench} {a} = {:.0} {unit}/s (median {:.3} s per {elements})",
            rate(ta),
            ta.as_secs_f64()
        );
        eprintln!(
            "THROUGHPUT {bench} {b} = {:.0} {unit}/s (median {:.3} s per {elements})",
            rate(tb),
            tb.as_secs_f64()
        );
        eprintln!(
            "RATIO {bench} {a}/{b} = {:.2}",
            tb.as_secs_f64() / ta.as_secs_f64()
        );
    }
}

/// Machine description for the report.
pub fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    eprintln!("MACHINE {cores} cores, {model}");
}

/// Measures two contenders that each read the same `elements` items (`run(name, client)`
/// returns how many it read): two untimed runs of each, criterion timings of each, then
/// `paired_rounds` alternating
/// runs in ABBA order (criterion runs one contender after the other, so load drift on a
/// shared machine biases that ratio). Prints both ratios, `names[0]` over `names[1]`.
#[allow(clippy::too_many_arguments)]
pub fn compare<F, Fut>(
    c: &mut Criterion,
    b: &Bench,
    group_name: &'static str,
    names: [&'static str; 2],
    elements: usize,
    unit: &str,
    paired_rounds: usize,
    run: F,
) where
    F: Fn(&'static str, Client) -> Fut + Copy,
    Fut: std::future::Future<Output = usize>,
{
    use criterion::{SamplingMode, Throughput};
    use std::time::Instant;

    // Untimed alternating runs first: the first runs after the data was written are slower
    // (the server's heap and page tables are still growing), and criterion measures the
    // contenders one after the other, so without this the first one would pay for it.
    for name in names.iter().chain(names.iter()) {
        let n = b.rt.block_on(run(name, b.client.clone()));
        assert_eq!(n, elements, "{name} read {n} {unit} (warm-up)");
    }

    let rec = Recorder::default();
    let mut group = c.benchmark_group(group_name);
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(elements as u64));
    for name in names {
        group.bench_function(name, |bencher| {
            bencher.to_async(&b.rt).iter_custom(|iters| {
                let (client, rec) = (b.client.clone(), rec.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let n = run(name, client.clone()).await;
                        let d = t.elapsed();
                        assert_eq!(n, elements, "{name} read {n} {unit}");
                        rec.record(name, d);
                        total += d;
                    }
                    total
                }
            });
        });
    }
    group.finish();
    rec.print_ratio(group_name, names[0], names[1], elements as u64, unit);

    // Interleaved pairs (ABBA): each pair runs both contenders back to back, so a change
    // of machine load between pairs cancels out of that pair's ratio.
    let mut pair_ratios = Vec::new();
    let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let paired = Recorder::default();
    for round in 0..paired_rounds {
        let order = if round % 2 == 0 {
            names
        } else {
            [names[1], names[0]]
        };
        let mut secs = [0.0f64; 2];
        for name in order {
            let cpu_before = client_cpu();
            let t = Instant::now();
            let n = b.rt.block_on(run(name, b.client.clone()));
            let d = t.elapsed();
            assert_eq!(n, elements, "{name} read {n} {unit}");
            paired.record(name, d);
            secs[usize::from(name != names[0])] = d.as_secs_f64();
            if let (Some(before), Some(after)) = (cpu_before, client_cpu()) {
                cpu.entry(name).or_default().push(after - before);
            }
        }
        pair_ratios.push(secs[1] / secs[0]);
    }
    let group = format!("{group_name}_paired");
    paired.print_ratio(&group, names[0], names[1], elements as u64, unit);
    if let Some(m) = median(&mut pair_ratios) {
        let list: Vec<String> = pair_ratios.iter().map(|r| format!("{r:.2}")).collect();
        eprintln!(
            "RATIO {group} {}/{} = {m:.2} (median of the per-pair ratios: {})",
            names[0],
            names[1],
            list.join(" ")
        );
    }
    // Client-side CPU (every thread of this process but the embedded server's): what each
    // contender itself costs per item, apart from the server's work and the machine's load.
    let (Some(a), Some(b)) = (
        cpu.get_mut(names[0]).and_then(|v| median(v)),
        cpu.get_mut(names[1]).and_then(|v| median(v)),
    ) else {
        return;
    };
    let per_item = |s: f64| s * 1e6 / elements as f64;
    eprintln!(
        "CLIENT_CPU {group_name} {} = {:.2} us/{unit}, {} = {:.2} us/{unit}; RATIO {}/{} = {:.2}",
        names[0],
        per_item(a),
        names[1],
        per_item(b),
        names[0],
        names[1],
        b / a
    );
}

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// CPU seconds used so far by this process's threads, without the embedded server's
/// (`mongosim*` threads); `None` where `/proc` cannot tell (not Linux).
pub fn client_cpu() -> Option<f64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if name.starts_with("mongosim") {
            continue;
        }
        // schedstat: time on the CPU (ns), time waiting, time slices
        let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total as f64 / 1e9)
}

impl Bench {
    /// Writes `entries` small inserts into a new collection `coll` and returns the oplog
    /// timestamps just before and at the last of them.
    pub fn oplog_backlog(&self, coll: &str, entries: usize) -> (Timestamp, Timestamp) {
        let db = self.client.database(DB);
        let create = db.create_collection(coll);
        self.rt
            .block_on(create.into_future())
            .expect("create the collection");
        let start = self.latest_ts();
        self.insert(coll, entries, |i| {
            doc! {"_id": i as i64, "name": format!("user-{i:06}"), "visits": (i % 100) as i32, "tags": ["a", "b"]}
        });
        (start, self.latest_ts())
    }
}
