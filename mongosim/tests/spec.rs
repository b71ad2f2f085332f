//! MongoDB's unified-format specification tests (change streams, CRUD, transactions) run
//! against mongosim with the official Rust driver (issue 7).
//!
//! The test files are read from `../shared/spec-tests/` next to the workspace (or from
//! `MONGOSIM_SPEC_TESTS`); `spec/fetch-spec-tests.sh` downloads them. When absent the test
//! prints that the conformance suite was SKIPPED and how to get the files, and passes. The server is a fresh
//! `mongosim::MongoSim`, or `MONGODB_URI` when set. `MONGOSIM_SPEC_FILTER=<substring>` limits the
//! run to matching file paths (`crud/find`), `MONGOSIM_SPEC_VERBOSE=1` prints every failure.
//!
//! The same suites then run against a simulated sharded cluster (two shards, two routers;
//! `runOnRequirements` topologies `sharded` / `sharded-replicaset`, `useMultipleMongoses`
//! honoured) and the counts are reported per topology.
//!
//! The run fails when an applicable test fails that is not listed in `spec/NOT_PASSING.md`
//! (replica set) or `spec/NOT_PASSING_SHARDED.md` (sharded cluster).
//! To check the 4.4 mode: start `mongosim --port 27999 --server-version 4.4` and run with
//! `MONGODB_URI=mongodb://127.0.0.1:27999/?replicaSet=rs0`.

#[path = "spec/bulk.rs"]
mod bulk;
#[path = "spec/entities.rs"]
mod entities;
#[path = "spec/matcher.rs"]
mod matcher;
#[path = "spec/operations.rs"]
mod operations;
#[path = "spec/runner.rs"]
mod runner;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use runner::Verdict;

/// Writes a line to stderr directly: libtest captures `eprintln!` of passing tests, and the
/// per-file summary should show in every run.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

const SUITES: &[&str] = &["change-streams", "crud", "transactions"];

fn spec_dir() -> PathBuf {
    match std::env::var_os("MONGOSIM_SPEC_TESTS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec-tests"),
    }
}

/// `(file, test description) -> (reason, driver limitation?)` from NOT_PASSING.md: lines of the
/// form ``- `suite/file.json` `test description` — reason``; entries under a heading that starts
/// with "## Rust driver" are driver limitations, the rest mongosim gaps.
fn allow_list(file: &str) -> BTreeMap<(String, String), (String, bool)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/spec")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut driver = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            driver = line.starts_with("## Rust driver");
        }
        let Some(rest) = line.strip_prefix("- `") else {
            continue;
        };
        let Some((file, rest)) = rest.split_once('`') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('`') else {
            continue;
        };
        let Some((desc, reason)) = rest.split_once('`') else {
            continue;
        };
        let reason = reason
            .trim()
            .trim_start_matches('—')
            .trim_start_matches('-')
            .trim();
        out.insert(
            (file.to_string(), desc.to_string()),
            (reason.to_string(), driver),
        );
    }
    out
}

#[derive(Default)]
struct Counts {
    passed: usize,
    failed: usize,
    listed: usize,
    /// Listed failures that are driver limitations.
    driver: usize,
    not_applicable: usize,
    skipped: usize,
}

impl Counts {
    fn line(&self) -> String {
        let pct = |passed: usize, of: usize| {
            if of == 0 {
                100.0
            } else {
                100.0 * passed as f64 / of as f64
            }
        };
        let applicable = self.passed + self.failed;
        let server = applicable - self.driver;
        format!(
            "passed {}, failed {} (listed {}: driver limitations {}, mongosim {}), \
             not applicable {}, skipped {}; {:.1}% of {applicable} applicable pass, {:.1}% of the {server} \
             the Rust driver can run",
            self.passed,
            self.failed,
            self.listed,
            self.driver,
            self.listed - self.driver,
            self.not_applicable,
            self.skipped,
            pct(self.passed, applicable),
            pct(self.passed, server),
        )
    }
    fn add(&mut self, o: &Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.listed += o.listed;
        self.driver += o.driver;
        self.not_applicable += o.not_applicable;
        self.skipped += o.skipped;
    }
}

/// What a run found besides the counts.
#[derive(Default)]
struct Findings {
    /// Applicable tests that failed and are not listed in NOT_PASSING.md.
    unexpected: Vec<String>,
    /// Listed tests that pass now.
    now_passing: Vec<String>,
}

/// Which files to run and how to judge and report their results.
struct RunConfig {
    /// `MONGOSIM_SPEC_FILTER`: only files whose `suite/file` name contains it.
    filter: Option<String>,
    /// `MONGOSIM_SPEC_VERBOSE`: print listed failures too.
    verbose: bool,
    allow: BTreeMap<(String, String), (String, bool)>,
}

#[test]
fn unified_spec_tests() {
    let dir = spec_dir();
    if !dir.is_dir() {
        say!(
            "\nSKIPPED: the mongosim conformance suite (MongoDB's unified spec tests) did not run: \
             {} not found.\nGet the files with `bash mongosim/tests/spec/fetch-spec-tests.sh` \
             (downloads mongodb/specifications at the pinned commit into ../shared/spec-tests), \
             or point MONGOSIM_SPEC_TESTS at a copy.\n",
            dir.display()
        );
        return;
    }
    let cfg = |list: &str| RunConfig {
        filter: std::env::var("MONGOSIM_SPEC_FILTER").ok(),
        verbose: std::env::var_os("MONGOSIM_SPEC_VERBOSE").is_some(),
        allow: allow_list(list),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_sim, uri) = server_uri();
    let found = rt.block_on(run_all(&dir, &uri, &cfg("NOT_PASSING.md")));
    let sharded = if std::env::var("MONGODB_URI").is_err() {
        let cluster = mongosim::Cluster::start(
            mongosim::ClusterOptions::new()
                .shards(2)
                .routers(2)
                .noop_interval(std::time::Duration::from_millis(50)),
        )
        .expect("start a mongosim cluster");
        Some(rt.block_on(run_all(
            &dir,
            &cluster.uri(),
            &cfg("NOT_PASSING_SHARDED.md"),
        )))
    } else {
        None
    };
    let mut unexpected = Vec::new();
    for (list, found) in [
        ("NOT_PASSING.md", Some(found)),
        ("NOT_PASSING_SHARDED.md", sharded),
    ] {
        let Some(found) = found else { continue };
        for n in &found.now_passing {
            say!("now passes, remove from {list}: {n}");
        }
        unexpected.extend(
            found
                .unexpected
                .iter()
                .map(|u| format!("{u} (not in {list})")),
        );
    }
    assert!(
        unexpected.is_empty(),
        "{} applicable spec tests failed that are not listed in tests/spec/NOT_PASSING*.md:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

/// The server under test: `MONGODB_URI`, or a fresh simulator (returned to be kept alive).
fn server_uri() -> (Option<mongosim::MongoSim>, String) {
    match std::env::var("MONGODB_URI") {
        Ok(u) => (None, u),
        Err(_) => {
            let sim = mongosim::MongoSim::start(mongosim::Options::new()).expect("start mongosim");
            let u = sim.uri();
            (Some(sim), u)
        }
    }
}

/// Runs every suite against the server at `uri`, printing per-suite and total counts.
async fn run_all(dir: &Path, uri: &str, cfg: &RunConfig) -> Findings {
    let env = runner::Env::new(uri)
        .await
        .unwrap_or_else(|e| panic!("spec runner setup: {e}"));
    say!(
        "spec tests against {uri}: server {:?}, topology {}",
        env.version,
        env.topology
    );
    runner::kill_all_sessions(&env).await;
    let mut found = Findings::default();
    let mut total = Counts::default();
    for suite in SUITES {
        let Some(sc) = run_suite(&env, dir, suite, cfg, &mut found).await else {
            continue;
        };
        say!("== {suite} ({}): {}", env.topology, sc.line());
        total.add(&sc);
    }
    say!("== total ({}): {}", env.topology, total.line());
    found
}

/// Runs the files of one suite in name order, printing per-file counts; `None` when the
/// suite's directory cannot be read.
async fn run_suite(
    env: &runner::Env,
    dir: &Path,
    suite: &str,
    cfg: &RunConfig,
    found: &mut Findings,
) -> Option<Counts> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir.join(suite)) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return None,
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let mut sc = Counts::default();
    for path in files {
        let fname = format!(
            "{suite}/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        if cfg.filter.as_deref().is_some_and(|f| !fname.contains(f)) {
            continue;
        }
        let rep = runner::run_file(env, &path).await;
        let c = tally(&fname, &rep, cfg, found);
        say!(
            "{fname}: passed {}, failed {}, not applicable {}, skipped {}",
            c.passed,
            c.failed,
            c.not_applicable,
            c.skipped
        );
        for (desc, v) in &rep.tests {
            if let Verdict::Skipped(r) = v {
                say!("  skipped `{desc}`: {r}");
            }
        }
        sc.add(&c);
    }
    Some(sc)
}

/// Counts the verdicts of one file against the allow list, printing unexpected failures
/// (and listed ones when verbose).
fn tally(fname: &str, rep: &runner::FileReport, cfg: &RunConfig, found: &mut Findings) -> Counts {
    let mut c = Counts::default();
    for (desc, v) in &rep.tests {
        let key = (fname.to_string(), desc.clone());
        match v {
            Verdict::Passed => {
                c.passed += 1;
                if cfg.allow.contains_key(&key) {
                    found.now_passing.push(format!("{fname} `{desc}`"));
                }
            }
            Verdict::Failed(why) => {
                c.failed += 1;
                if cfg.allow.contains_key(&key) {
                    c.listed += 1;
                    if cfg.allow.get(&key).is_some_and(|e| e.1) {
                        c.driver += 1;
                    }
                    if cfg.verbose {
                        say!("  listed failure {fname} `{desc}`: {why}");
                    }
                } else {
                    say!("  FAILED {fname} `{desc}`: {why}");
                    found.unexpected.push(format!("{fname} `{desc}`"));
                }
            }
            Verdict::NotApplicable => c.not_applicable += 1,
            Verdict::Skipped(_) => c.skipped += 1,
        }
    }
    c
}

/// The matcher follows "Evaluating Matches" of the unified test format.
#[test]
fn matcher_rules() {
    use mongodb::bson::{bson, Bson};
    let none = std::collections::HashMap::<String, Bson>::new();
    let m = |e: Bson, a: Bson, root: bool| matcher::matches(&e, Some(&a), root, &none);
    // extra fields only at the root
    assert!(m(bson!({"x": 1}), bson!({"x": 1, "y": 1}), true).is_ok());
    assert!(m(bson!({"x": {"y": 1}}), bson!({"x": {"y": 1, "z": 1}}), true).is_err());
    assert!(m(bson!({"x": 1, "y": 1}), bson!({"x": 1}), true).is_err());
    // flexible numerics, but not across values
    assert!(m(bson!(1), bson!(1.0), false).is_ok());
    assert!(m(bson!(1), Bson::Int64(1), false).is_ok());
    assert!(m(bson!(1), bson!(1.5), false).is_err());
    // arrays: same length, elements not root
    assert!(m(bson!([1, 2]), bson!([1, 2, 3]), false).is_err());
    assert!(m(bson!([{"x": 1}]), bson!([{"x": 1, "y": 2}]), false).is_err());
    // operators
    assert!(m(bson!({"a": {"$$exists": false}}), bson!({"b": 1}), true).is_ok());
    assert!(m(bson!({"a": {"$$exists": true}}), bson!({"b": 1}), true).is_err());
    assert!(m(
        bson!({"a": {"$$type": ["int", "long"]}}),
        bson!({"a": Bson::Int64(3)}),
        true
    )
    .is_ok());
    assert!(m(bson!({"a": {"$$type": "string"}}), bson!({"a": 3}), true).is_err());
    assert!(m(bson!({"a": {"$$unsetOrMatches": 2}}), bson!({}), true).is_ok());
    assert!(m(bson!({"a": {"$$unsetOrMatches": 2}}), bson!({"a": 3}), true).is_err());
    assert!(m(bson!({"a": {"$$lte": 5}}), bson!({"a": 5.0}), true).is_ok());
    assert!(m(bson!({"a": {"$$lte": 5}}), bson!({"a": 6}), true).is_err());
    // key order does not matter; outcome comparison is exact on types
    assert!(m(bson!({"x": 1, "y": 2}), bson!({"y": 2, "x": 1}), false).is_ok());
    assert!(matcher::exact_eq(
        &bson!({"x": 1, "y": 2}),
        &bson!({"y": 2, "x": 1})
    ));
    assert!(!matcher::exact_eq(&bson!({"x": 1}), &bson!({"x": 1.0})));
    assert_eq!(runner::parse_version("4.9.0-alpha4-271"), (4, 9, 0));
    assert_eq!(runner::parse_version("7.0"), (7, 0, 0));
}
