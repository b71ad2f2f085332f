//! Kill -9 at random points: the `checkpoint` example runs as a child process against the
//! test's server (mongosim, or `MONGODB_URI`) while a writer keeps writing; it is killed
//! with SIGKILL during the snapshot, in the middle of a large transaction and while
//! tailing, and restarted with the same checkpoint each time.
//!
//! Asserted: every change written is printed at least once, and what a run prints again
//! is only what the checkpoint saved before the kill allows: live ops after the saved
//! position (a contiguous tail of the previous run's live output) and documents of a
//! direct-read range after its saved `_id`.
#![cfg(unix)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bson::{doc, Bson, Document};
use common::{unique_db, TestServer};
use mongotail::checkpoint::{Checkpoint, CheckpointStore, FileStore, MongoStore};
use rand::Rng;
use serde_json::Value;

/// Documents present before the first start (read directly).
const SNAPSHOT: i64 = 3_000;
/// Ops of each large transaction the writer commits.
const TXN_OPS: i64 = 300;
/// `--save-every` of the child.
const SAVE_EVERY: u64 = 50;
/// Bound on any wait for the child's output.
const WAIT: Duration = Duration::from_secs(60);

/// The `checkpoint` example, built next to this test binary (`cargo test` builds examples).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("checkpoint{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "checkpoint"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the checkpoint example");
    }
    path
}

/// One printed line, reduced to what identifies the change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Line {
    direct: bool,
    /// `insert:<id>` or `update:<v>`: unique per change written.
    change: String,
    id: i64,
    /// The op's cluster time and index inside its transaction.
    ts: (u32, u32, i64),
}

fn parse(line: &str) -> Line {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let id = v["id"].as_i64().unwrap_or_else(|| panic!("int id: {line}"));
    let change = match v["op"].as_str().unwrap() {
        "insert" => format!("insert:{id}"),
        "update" => {
            let n = v["update"]["updatedFields"]["v"].as_i64().unwrap();
            format!("update:{n}")
        }
        other => panic!("unexpected {other}: {line}"),
    };
    let t = |k: &str| v["ts"][k].as_u64().unwrap() as u32;
    Line {
        direct: v["source"] == "direct",
        change,
        id,
        ts: (t("t"), t("i"), v["txn"]["index"].as_i64().unwrap_or(-1)),
    }
}

/// A running child and the lines it printed so far.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<Line>,
}

impl Run {
    fn start(uri: &str, args: &[&str]) -> Run {
        let mut child = Command::new(example())
            .args(["--uri", uri])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run {
            child,
            lines,
            printed: Vec::new(),
        }
    }

    /// Reads lines until `stop` says so; `false` if the child went quiet for [`WAIT`]
    /// first (it is killed then).
    fn until(&mut self, mut stop: impl FnMut(&[Line]) -> bool) -> bool {
        while !stop(&self.printed) {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => self.printed.push(parse(&line)),
                Err(_) => {
                    let _ = self.child.kill();
                    return false;
                }
            }
        }
        true
    }

    /// SIGKILL, then whatever it had written before dying.
    fn kill(mut self) -> Vec<Line> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.printed.push(parse(&line));
        }
        self.printed
    }
}

/// Writes until stopped: inserts, updates and, every so often, a large transaction; records
/// each change as the line key it must be printed with.
fn writer(
    server: &TestServer,
    db: &str,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<BTreeSet<String>>>) {
    let written = Arc::new(Mutex::new(BTreeSet::new()));
    let (client, db, log) = (server.client.clone(), db.to_owned(), written.clone());
    let task = tokio::spawn(async move {
        let coll = client.database(&db).collection::<Document>("c");
        let (mut next_id, mut next_v) = (SNAPSHOT, 0_i64);
        for round in 0_u64.. {
            if stop.load(Ordering::Acquire) {
                break;
            }
            if round % 40 == 20 {
                let mut session = client.start_session().await.unwrap();
                session.start_transaction().await.unwrap();
                let ids: Vec<i64> = (next_id..next_id + TXN_OPS).collect();
                for id in &ids {
                    let insert = coll.insert_one(doc! {"_id": id}).session(&mut session);
                    insert.await.unwrap();
                }
                session.commit_transaction().await.unwrap();
                next_id += TXN_OPS;
                log.lock()
                    .unwrap()
                    .extend(ids.iter().map(|i| format!("insert:{i}")));
                continue;
            }
            coll.insert_one(doc! {"_id": next_id}).await.unwrap();
            log.lock().unwrap().insert(format!("insert:{next_id}"));
            let target = rand::rng().random_range(0..next_id);
            next_v += 1;
            let set = doc! {"$set": {"v": next_v}};
            coll.update_one(doc! {"_id": target}, set).await.unwrap();
            log.lock().unwrap().insert(format!("update:{next_v}"));
            next_id += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (task, written)
}

/// Whether `id` is in the `_id` range `filter` (the int forms direct reads plan).
fn in_range(filter: &Document, id: i64) -> bool {
    let Ok(cond) = filter.get_document("_id") else {
        return true; // `{}`: the whole collection
    };
    let bound = |k: &str| {
        cond.get(k)
            .and_then(|b| b.as_i64().or(b.as_i32().map(i64::from)))
    };
    if cond.contains_key("$not") {
        return false; // `_id`s of another type: none here
    }
    bound("$gte").is_none_or(|lo| id >= lo) && bound("$lt").is_none_or(|hi| id < hi)
}

fn last_id(b: &Bson) -> i64 {
    b.as_i64().or(b.as_i32().map(i64::from)).unwrap()
}

/// The key a change is counted under: direct reads and live ops apart.
fn key(l: &Line) -> (bool, String) {
    (l.direct, l.change.clone())
}

/// What run `next` printed again must be allowed by `saved`, the checkpoint at the kill
/// that ended run `prev`.
fn check_duplicates(prev: &[Line], next: &[Line], saved: Option<&Checkpoint>) {
    let before: BTreeSet<(bool, String)> = prev.iter().map(key).collect();
    // Live: only ops after the saved position, a contiguous tail of the previous output.
    let prev_live: Vec<&Line> = prev.iter().filter(|l| !l.direct).collect();
    let again_live: Vec<&Line> = next
        .iter()
        .filter(|l| !l.direct && before.contains(&key(l)))
        .collect();
    // The next run may die before printing all of that tail again: a contiguous part of
    // the previous live output, from its first op after the saved position.
    if let Some(first) = again_live.first() {
        let start = prev_live.iter().position(|l| l == first).unwrap();
        let end = start + again_live.len();
        assert!(
            end <= prev_live.len(),
            "more duplicates than the previous run printed"
        );
        assert_eq!(
            again_live,
            prev_live[start..end],
            "live duplicates are contiguous"
        );
        if let (Some(before), Some(at)) = (start.checked_sub(1), saved.and_then(|s| s.oplog)) {
            let at = (
                at.ts.time,
                at.ts.increment,
                at.index.map_or(i64::MAX, i64::from),
            );
            assert!(
                prev_live[before].ts <= at,
                "{:?} was not saved yet not printed again",
                prev_live[before]
            );
        }
    }
    if let Some(saved) = saved.and_then(|s| s.oplog) {
        let at = (
            saved.ts.time,
            saved.ts.increment,
            saved.index.map_or(i64::MAX, i64::from),
        );
        for l in &again_live {
            assert!(l.ts > at, "{l:?} was saved ({at:?}) yet delivered again");
        }
    }
    // Direct: documents of a range after its saved `_id`.
    let saved_direct = saved.and_then(|s| s.direct.values().next());
    for l in next.iter().filter(|l| l.direct && before.contains(&key(l))) {
        let Some(direct) = saved_direct else {
            continue; // nothing saved yet: the read starts over
        };
        let range = direct.ranges.iter().find(|r| in_range(&r.filter, l.id));
        let range = range.unwrap_or_else(|| panic!("no range holds {}", l.id));
        assert!(!range.finished, "{} read again from a finished range", l.id);
        if let Some(last) = &range.last_id {
            assert!(l.id > last_id(last), "{} read again, saved at {last}", l.id);
        }
    }
}

type Phase = Box<dyn FnMut(&[Line]) -> bool + Send>;
type Load = Box<dyn Fn() -> futures::future::BoxFuture<'static, Option<Checkpoint>>>;

/// Kills the child at each of `phases` (a stop condition on its output), restarting it with
/// the same checkpoint; then lets a last run print everything written and checks it all.
async fn kill_and_restart(
    server: &TestServer,
    db: &str,
    args: &[&str],
    load: Load,
    phases: Vec<Phase>,
) {
    let coll = server.client.database(db).collection::<Document>("c");
    coll.insert_many((0..SNAPSHOT).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writing = None;
    let mut runs: Vec<(Vec<Line>, Option<Checkpoint>)> = Vec::new();
    for mut phase in phases {
        let mut run = Run::start(&server.uri, args);
        if writing.is_none() {
            // Changes count from the first start point, taken before the first line.
            assert!(tokio::task::block_in_place(|| run.until(|p| !p.is_empty())));
            writing = Some(writer(server, db, stop.clone()));
        }
        let printed = tokio::task::block_in_place(|| {
            assert!(
                run.until(|p| phase(p)),
                "quiet after {} lines",
                run.printed.len()
            );
            run.kill()
        });
        runs.push((printed, load().await));
    }
    stop.store(true, Ordering::Release);
    let (task, written) = writing.expect("at least one phase");
    task.await.unwrap();
    let mut missing: BTreeSet<(bool, String)> = (0..SNAPSHOT)
        .map(|i| (true, format!("insert:{i}")))
        .chain(written.lock().unwrap().iter().map(|c| (false, c.clone())))
        .collect();
    for (printed, _) in &runs {
        for l in printed {
            missing.remove(&key(l));
        }
    }
    for (i, (printed, saved)) in runs.iter().enumerate() {
        let live = printed.iter().filter(|l| !l.direct).count();
        let txn = printed.iter().filter(|l| l.ts.2 >= 0).count();
        let at = saved.as_ref().and_then(|s| s.oplog);
        eprintln!(
            "run {i}: {} lines ({live} live, {txn} in transactions), saved {at:?}",
            printed.len()
        );
    }
    let mut run = Run::start(&server.uri, args);
    let mut done = 0;
    let last = tokio::task::block_in_place(|| {
        let complete = run.until(|p| {
            for l in &p[done..] {
                missing.remove(&key(l));
            }
            done = p.len();
            missing.is_empty()
        });
        let first: Vec<_> = missing.iter().take(10).collect();
        assert!(
            complete,
            "{} changes never printed, e.g. {first:?}",
            missing.len()
        );
        run.kill()
    });
    runs.push((last, None));
    for pair in runs.windows(2) {
        check_duplicates(&pair[0].0, &pair[1].0, pair[0].1.as_ref());
    }
}

fn during_snapshot() -> Phase {
    let n = rand::rng().random_range(300..2_000);
    Box::new(move |p: &[Line]| p.iter().filter(|l| l.direct).count() >= n)
}

fn inside_a_transaction() -> Phase {
    let index = rand::rng().random_range(50..TXN_OPS - 50);
    Box::new(move |p: &[Line]| p.last().is_some_and(|l| !l.direct && l.ts.2 == index))
}

fn while_tailing() -> Phase {
    let n = rand::rng().random_range(100..600);
    let mut seen = None;
    Box::new(move |p: &[Line]| {
        let live = p.iter().filter(|l| !l.direct).count();
        live >= *seen.get_or_insert(live) + n
    })
}

fn file_load(dir: &Path, name: &str) -> Load {
    let (dir, name) = (dir.to_path_buf(), name.to_owned());
    Box::new(move || {
        let store = FileStore::new(&dir).unwrap();
        let name = name.clone();
        Box::pin(async move { store.load(&name).await.unwrap() })
    })
}

/// The child with a file checkpoint, tailing `db.c` with `source`, killed at `phases`.
async fn with_a_file(prefix: &str, source: &str, phases: Vec<Phase>) {
    let server = TestServer::start().await;
    let db = unique_db(prefix);
    let dir = std::env::temp_dir().join(format!("mongotail-{db}"));
    let file = dir.join("cp.json");
    let (ns, save) = (format!("{db}.c"), SAVE_EVERY.to_string());
    let args = [
        "--checkpoint",
        file.to_str().unwrap(),
        "--ns",
        &ns,
        "--save-every",
        &save,
        "--source",
        source,
    ];
    kill_and_restart(&server, &db, &args, file_load(&dir, "cp"), phases).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_with_a_file_checkpoint_survives_kill_9_anywhere() {
    let phases = vec![during_snapshot(), inside_a_transaction(), while_tailing()];
    with_a_file("kill_oplog", "oplog", phases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stream_with_a_file_checkpoint_survives_kill_9() {
    let phases = vec![inside_a_transaction(), while_tailing()];
    with_a_file("kill_cs", "change-stream", phases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_checkpoint_survives_kill_9() {
    let server = TestServer::start().await;
    let db = unique_db("kill_mongo");
    let ns = format!("{db}.c");
    let save = SAVE_EVERY.to_string();
    let args = [
        "--checkpoint",
        &db,
        "--ns",
        &ns,
        "--save-every",
        &save,
        "--store",
        "mongo",
    ];
    let coll = server
        .client
        .database("mongotail")
        .collection("checkpoints");
    let name = db.clone();
    let load: Load = Box::new(move || {
        let (store, name) = (MongoStore::new(coll.clone()), name.clone());
        Box::pin(async move { store.load(&name).await.unwrap() })
    });
    let phases = vec![during_snapshot(), while_tailing()];
    kill_and_restart(&server, &db, &args, load, phases).await;
}
