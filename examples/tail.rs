//! `tail`: print every change of a MongoDB deployment, one JSON line per op.
//!
//! ```text
//! cargo run --release --example tail -- [--uri URI] [--source oplog|change-stream|direct]
//!                                       [--ns db.coll]... [--count N] [--stats SECS]
//! ```
//!
//! Without `--uri` (and without `MONGODB_URI`) it starts an embedded mongosim, writes a
//! short demo workload into it (inserts, updates, a replace, a delete, a transaction, a
//! rename, a collection drop and a database drop) and prints what mongotail reads, then
//! exits. With a URI it tails that server until Ctrl-C (or `--count` ops).
//!
//! On a sharded cluster (the URI names a router: `hello` says `msg: "isdbgrid"`),
//! `--source oplog` tails every shard's oplog, merged in cluster time order and following
//! shards as they are added ([`ClusterStream`](mongotail::ClusterStream)), and
//! `--source change-stream` opens change streams through the router.
//!
//! Each line on stdout is one op in MongoDB relaxed Extended JSON:
//!
//! ```text
//! {"op":"update","ns":"demo.users","id":1,"source":"oplog","ts":{"t":1700000000,"i":3},
//!  "data":{"_id":1,"name":"ada","visits":1},"update":{"updatedFields":{"visits":1},...}}
//! ```
//!
//! plus `"to"` for renames, `"txn"` (`lsid`, `txnNumber`, `index`) for ops of a transaction and `"document_missing"` when
//! an update's document was gone by the time it was fetched. Progress and errors go to
//! stderr (`RUST_LOG=debug` for more).

mod common;

use common::op_line::OpLine;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bson::{doc, Document, Timestamp};
use futures::stream::BoxStream;
use futures::StreamExt;
use mongodb::Client;
use mongotail::ext::{DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW};
use mongotail::{
    start, ChangeStreamOptions, ClusterOptions, DirectOptions, Handle, Namespace, Op, OpStreamExt,
    OplogOptions, StartAt, TailOptions,
};

/// The database the demo workload writes to.
const DEMO_DB: &str = "demo";
/// The namespace of the marker document written after the demo workload: when it shows
/// up, everything before it has been printed. It is never printed itself.
const DEMO_END_NS: &str = "demo.mongotail_demo_end";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SourceArg {
    /// Tail the oplog (on a router: every shard's)
    Oplog,
    /// A change stream (through a router on a sharded cluster)
    #[value(alias = "change_stream", alias = "changestream")]
    ChangeStream,
    /// Read whole collections
    Direct,
}

/// A connection string whose password is never printed, `Debug` included.
#[derive(Clone)]
struct Uri(String);

impl std::fmt::Debug for Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

impl std::str::FromStr for Uri {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty URI".into());
        }
        Ok(Uri(s.to_owned()))
    }
}

fn parse_ns(v: &str) -> Result<Namespace, String> {
    Namespace::parse(v).map_err(|e| e.to_string())
}

/// Print every change of a MongoDB deployment, one JSON line per op.
#[derive(Debug, clap::Parser)]
#[command(name = "tail")]
struct Args {
    /// Server to tail (default: $MONGODB_URI, else an embedded mongosim with a demo
    /// workload)
    #[arg(long)]
    uri: Option<Uri>,
    /// What to read
    #[arg(long, value_enum, default_value = "oplog")]
    source: SourceArg,
    /// Only this collection (db.coll) or database (db); repeatable; required with
    /// --source direct on a real server
    #[arg(long = "ns", value_name = "NS", value_parser = parse_ns)]
    namespaces: Vec<Namespace>,
    /// Exit after N ops
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Every SECS, one line per source on stderr: state, ops/s, lag
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    stats: Option<u64>,
    /// With --source change-stream: have the server split events over 16 MB
    /// ($changeStreamSplitLargeEvent, MongoDB 7.0 / 6.0.9) and print each one whole
    #[arg(long)]
    split_large_events: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors print the usage and exit with 2; --help prints it and exits with 0.
    let args = <Args as clap::Parser>::parse();
    common::init_tracing();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", common::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn run(args: Args) -> Result<(), BoxError> {
    let server = common::connect(args.uri.clone().map(|u| u.0)).await?;
    let client = server.client.clone();
    let demo = server.is_embedded();
    if !demo && args.source == SourceArg::Direct && args.namespaces.is_empty() {
        return Err("--source direct needs at least one --ns db.coll".into());
    }
    if args.split_large_events && args.source != SourceArg::ChangeStream {
        return Err("--split-large-events needs --source change-stream".into());
    }

    // In demo mode the stream starts just after the newest oplog entry present now, so it
    // sees the whole workload however fast the workload runs.
    let start_after = demo_start(&client, demo && args.source != SourceArg::Direct).await?;

    let mut workload = None;
    if demo {
        if args.source == SourceArg::Direct {
            // Direct reads copy what is there: write everything first.
            demo_workload(client.clone(), Duration::ZERO, false).await?;
        } else {
            workload = Some(tokio::spawn(demo_workload(
                client.clone(),
                Duration::from_millis(20),
                true,
            )));
        }
    }
    let end_ns = Namespace::parse(DEMO_END_NS)?;
    let router = is_router(&client).await?;

    let (mut ops, handle) = open_stream(&client, &args, demo, start_after, &end_ns, router);
    if let Some(secs) = args.stats {
        tokio::spawn(print_stats(handle.clone(), Duration::from_secs(secs)));
    }
    if args.source == SourceArg::Direct && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tokio::spawn(progress_bar(handle.clone()));
    }
    tracing::info!(source = ?args.source, router, uri = %redact(&server.uri), "tailing");
    let mut stdout = std::io::stdout().lock();
    let mut printed: u64 = 0;
    let mut last_error = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let next = tokio::select! {
            next = ops.next() => next,
            res = async { workload.as_mut().expect("guarded").await }, if workload.is_some() => {
                workload = None;
                match res {
                    Ok(Ok(())) => tracing::info!("demo workload written"),
                    Ok(Err(e)) => return Err(format!("demo workload failed: {e}").into()),
                    Err(e) => return Err(format!("demo workload panicked: {e}").into()),
                }
                continue;
            }
            _ = &mut ctrl_c => {
                tracing::info!(printed, "interrupted");
                handle.stop(); // closes the server cursors
                return Ok(());
            }
        };
        match next {
            None => {
                return match last_error {
                    Some(e) => Err(format!(
                        "stream ended after an error ({}): {}",
                        redact(&server.uri),
                        common::error_chain(&e)
                    )
                    .into()),
                    None if demo && args.source != SourceArg::Direct => {
                        Err("stream ended before the demo workload was printed".into())
                    }
                    None => {
                        tracing::info!(printed, "stream ended");
                        Ok(())
                    }
                };
            }
            Some(Err(e)) => {
                tracing::warn!(error = %common::error_chain(&e), kind = ?e.kind(), "error from the stream");
                last_error = Some(e);
            }
            Some(Ok(op)) => {
                last_error = None;
                if demo && op.namespace == end_ns {
                    if op.is_insert() {
                        tracing::info!(printed, "demo workload fully printed");
                        return Ok(());
                    }
                    continue; // the marker collection's implicit create
                }
                let line = serde_json::to_string(&OpLine::from(&op))?;
                if writeln!(stdout, "{line}").is_err() {
                    return Ok(()); // stdout closed (e.g. `| head`): nothing left to do
                }
                printed += 1;
                if args.count == Some(printed) {
                    return Ok(());
                }
            }
        }
    }
}

/// Whether `client` talks to a router (mongos) of a sharded cluster.
async fn is_router(client: &Client) -> mongodb::error::Result<bool> {
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await?;
    Ok(hello.get_str("msg") == Ok("isdbgrid"))
}

/// The selected source, with the namespace filters and (for the oplog) `batch_fetch` so
/// updates carry their document. On a router, the oplog source tails every shard.
fn open_stream(
    client: &Client,
    args: &Args,
    demo: bool,
    start_after: Option<Timestamp>,
    end_ns: &Namespace,
    router: bool,
) -> (BoxStream<'static, mongotail::Result<Op>>, Handle) {
    let mut namespaces = args.namespaces.clone();
    if demo && !namespaces.is_empty() {
        namespaces.push(end_ns.clone()); // the marker must get through the server filter
    }
    // One start point for whichever live source runs (exclusive: changes after `ts`).
    let live = match start_after {
        Some(ts) => TailOptions::new().start(StartAt::After(ts)),
        None => TailOptions::new(),
    };
    match args.source {
        SourceArg::Oplog => {
            let options = if router {
                let shards = namespaces
                    .into_iter()
                    .fold(ClusterOptions::new(), ClusterOptions::namespace);
                live.cluster(shards)
            } else {
                live.oplog(OplogOptions::new().namespaces(namespaces))
            };
            let (ops, handle) = start(client, options);
            let ops = ops.batch_fetch(client.clone(), DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW);
            (ops.boxed(), handle)
        }
        SourceArg::ChangeStream => {
            let mut options = live.disable_oplog();
            let scopes: Vec<Option<Namespace>> = if namespaces.is_empty() {
                vec![None] // the whole deployment
            } else {
                namespaces.into_iter().map(Some).collect()
            };
            for scope in scopes {
                let mut cs = ChangeStreamOptions::new().split_large_events(args.split_large_events);
                if let Some(ns) = scope {
                    cs = cs.namespace(ns);
                }
                options = options.change_stream(cs);
            }
            let (ops, handle) = start(client, options);
            (ops.boxed(), handle)
        }
        SourceArg::Direct => {
            let namespaces = if namespaces.is_empty() {
                vec![
                    Namespace::new(DEMO_DB, "users").expect("valid"),
                    Namespace::new(DEMO_DB, "orders").expect("valid"),
                ]
            } else {
                namespaces
            };
            let options = TailOptions::new()
                .disable_oplog()
                .direct(DirectOptions::new().namespaces(namespaces));
            let (ops, handle) = start(client, options);
            (ops.boxed(), handle)
        }
    }
}

/// The demo: every kind of event, in a few milliseconds (`pause` between steps so the
/// output streams in). With `marker`, ends by writing the end marker.
async fn demo_workload(
    client: Client,
    pause: Duration,
    marker: bool,
) -> mongodb::error::Result<()> {
    let db = client.database(DEMO_DB);
    let users = db.collection::<Document>("users");
    let step = || tokio::time::sleep(pause);

    users
        .insert_many([
            doc! {"_id": 1, "name": "ada", "visits": 0, "tags": ["admin", "ops"]},
            doc! {"_id": 2, "name": "grace", "visits": 0, "address": {"city": "Arlington"}},
            doc! {"_id": 3, "name": "linus", "visits": 0},
            doc! {"_id": 4, "name": "ken", "visits": 0},
        ])
        .await?;
    step().await;
    users
        .update_one(
            doc! {"_id": 1},
            doc! {"$inc": {"visits": 1}, "$set": {"email": "ada@example.com"}},
        )
        .await?;
    step().await;
    users
        .update_one(
            doc! {"_id": 2},
            doc! {"$set": {"address.city": "New York"}, "$unset": {"visits": ""}},
        )
        .await?;
    step().await;
    users
        .replace_one(
            doc! {"_id": 3},
            doc! {"name": "linus", "visits": 7, "kernel": true},
        )
        .await?;
    step().await;
    users.delete_one(doc! {"_id": 4}).await?;
    step().await;

    // A transaction: its ops reach the oplog as one applyOps entry at commit.
    db.create_collection("orders").await?;
    let orders = db.collection::<Document>("orders");
    let mut session = client.start_session().await?;
    session.start_transaction().await?;
    orders
        .insert_one(doc! {"_id": 101, "user": 1, "total": 42.5})
        .session(&mut session)
        .await?;
    users
        .update_one(doc! {"_id": 1}, doc! {"$push": {"orders": 101}})
        .session(&mut session)
        .await?;
    session.commit_transaction().await?;
    step().await;

    // DDL: rename a collection, drop it, drop a whole database.
    db.collection::<Document>("tmp")
        .insert_one(doc! {"_id": "scratch", "note": "renamed, then dropped"})
        .await?;
    client
        .database("admin")
        .run_command(doc! {"renameCollection": "demo.tmp", "to": "demo.archive"})
        .await?;
    db.collection::<Document>("archive").drop().await?;
    step().await;
    let scratch = client.database("demo_scratch");
    scratch
        .collection::<Document>("items")
        .insert_one(doc! {"_id": 1})
        .await?;
    scratch.drop().await?;

    if marker {
        let (db, coll) = DEMO_END_NS.split_once('.').expect("db.coll");
        client
            .database(db)
            .collection::<Document>(coll)
            .insert_one(doc! {"done": true})
            .await?;
    }
    Ok(())
}

/// In demo mode, the newest oplog entry's time: the stream starts just after it.
async fn demo_start(client: &Client, demo: bool) -> Result<Option<Timestamp>, BoxError> {
    if !demo {
        return Ok(None);
    }
    let last = mongotail::last_op_timestamp(client).await?;
    Ok(Some(
        last.ok_or("the oplog is empty: is this a replica set?")?,
    ))
}

/// A progress bar of the direct reads on stderr (a terminal): documents read against the
/// collections' estimated counts.
async fn progress_bar(handle: Handle) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} documents {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !handle.is_stopped() {
        let direct = handle.stats().await.direct;
        bar.set_length(direct.iter().filter_map(|d| d.estimated_total).sum());
        bar.set_position(direct.iter().map(|d| d.read).sum());
        let done = direct.iter().filter(|d| d.done).count();
        bar.set_message(format!("({done}/{} collections)", direct.len()));
        if !direct.is_empty() && done == direct.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish();
}

/// Prints every `every` one line per source to stderr: state, ops/s since the last line,
/// lag, retries; and the progress of each direct read.
async fn print_stats(handle: Handle, every: Duration) {
    let mut last: Vec<u64> = Vec::new();
    loop {
        tokio::time::sleep(every).await;
        if handle.is_stopped() {
            return;
        }
        let stats = handle.stats().await;
        last.resize(stats.sources.len(), 0);
        for (s, before) in stats.sources.iter().zip(last.iter_mut()) {
            let rate = (s.ops - *before) as f64 / every.as_secs_f64();
            *before = s.ops;
            let lag = s
                .lag
                .map_or("?".to_owned(), |l| format!("{}s", l.as_secs()));
            eprintln!(
                "stats: {} {:?} ops={} ops/s={rate:.0} lag={lag} retries={}",
                s.source, s.state, s.ops, s.retries
            );
        }
        for d in &stats.direct {
            let total = d.estimated_total.map_or("?".to_owned(), |n| n.to_string());
            eprintln!(
                "stats: direct {} {}/{total}{}",
                d.namespace,
                d.read,
                if d.done { " done" } else { "" }
            );
        }
    }
}

/// The URI without its password, for logs.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &uri[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..]),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        <Args as clap::Parser>::try_parse_from(std::iter::once("tail").chain(args.iter().copied()))
    }

    #[test]
    fn args() {
        let a = parse(&[
            "--uri=mongodb://u:secret@x",
            "--source",
            "direct",
            "--ns",
            "a.b",
            "--ns",
            "c",
            "--count",
            "3",
        ])
        .expect("accepted");
        assert_eq!(
            a.uri.as_ref().map(|u| u.0.as_str()),
            Some("mongodb://u:secret@x")
        );
        assert!(
            !format!("{a:?}").contains("secret"),
            "Debug redacts the password"
        );
        assert_eq!(a.source, SourceArg::Direct);
        assert_eq!(a.namespaces.len(), 2);
        assert_eq!(a.count, Some(3));
        assert_eq!(
            parse(&["--source", "change_stream"]).unwrap().source,
            SourceArg::ChangeStream
        );
        for bad in [
            &["--count", "0"][..],
            &["--count", "x"],
            &["--source", "tcp"],
            &["--ns", "a$b.c"],
            &["--uri"],
            &["--bogus"],
            &["--stats", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("mongodb://u:secret@h:27017/?x=1"),
            "mongodb://u:***@h:27017/?x=1"
        );
        assert_eq!(redact("mongodb://h:27017"), "mongodb://h:27017");
    }
}
