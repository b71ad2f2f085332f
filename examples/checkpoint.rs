//! `checkpoint`: copy a collection, then tail it, and continue where the last run stopped.
//!
//! ```text
//! cargo run --release --example checkpoint -- --uri URI --checkpoint FILE --ns DB.COLL
//!     [--source oplog|change-stream] [--save-every N] [--store file|mongo]
//! ```
//!
//! The first run reads the collection directly and tails its changes from a cluster time
//! taken before the read (no gap); a restart continues from the checkpoint: unfinished
//! `_id` ranges of the read, then the live source from its saved position. Each op is
//! printed as one line of relaxed Extended JSON, exactly like the `tail` example, stdout is
//! flushed, and only then the op is acknowledged: kill the process at any moment and the
//! next run prints every change at least once.
//!
//! - `--checkpoint FILE`: the checkpoint file (`.json` is added when missing). With
//!   `--store mongo` it is instead the checkpoint's name in the `mongotail.checkpoints`
//!   collection of the tailed server.
//! - `--save-every N`: save after every N acknowledgements (default 100; also every second).
//! - Without `--uri` (and `MONGODB_URI`) it starts an embedded mongosim, writes a few
//!   documents and changes, prints them and exits. Each run is then a new server: delete
//!   FILE between such runs (a checkpoint of another server is reported as lost).
//!
//! Ctrl-C stops it after saving the checkpoint.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use bson::doc;
use futures::StreamExt;
use mongodb::Client;
use mongotail::checkpoint::{CheckpointOptions, CheckpointStore, FileStore, MongoStore};
use mongotail::{start, Handle, Namespace, OpStream, OplogOptions, TailOptions};

use common::op_line::OpLine;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "\
usage: checkpoint --checkpoint FILE --ns DB.COLL [--uri URI] [--source oplog|change-stream]
                  [--save-every N] [--store file|mongo]";

#[derive(Debug)]
struct Args {
    uri: Option<String>,
    checkpoint: String,
    ns: Namespace,
    change_stream: bool,
    save_every: u64,
    mongo_store: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let (mut uri, mut checkpoint, mut ns) = (None, None, None);
    let (mut change_stream, mut save_every, mut mongo_store) = (false, 100, false);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--uri" => uri = Some(value()?),
            "--checkpoint" => checkpoint = Some(value()?),
            "--ns" => {
                let v = value()?;
                let parsed = Namespace::parse(&v).map_err(|e| format!("--ns {v:?}: {e}"))?;
                if parsed.is_database() {
                    return Err(format!("--ns {v:?}: expected a collection, DB.COLL"));
                }
                ns = Some(parsed);
            }
            "--source" => match value()?.as_str() {
                "oplog" => change_stream = false,
                "change-stream" | "change_stream" => change_stream = true,
                other => return Err(format!("unknown --source {other:?}")),
            },
            "--save-every" => {
                let v = value()?;
                save_every = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--save-every {v:?}: expected a positive integer"))?;
            }
            "--store" => match value()?.as_str() {
                "file" => mongo_store = false,
                "mongo" => mongo_store = true,
                other => return Err(format!("unknown --store {other:?}")),
            },
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(Args {
        uri,
        checkpoint: checkpoint.ok_or("--checkpoint FILE is required")?,
        ns: ns.ok_or("--ns DB.COLL is required")?,
        change_stream,
        save_every,
        mongo_store,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_tracing();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("checkpoint: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("checkpoint: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let server = common::connect(args.uri.clone())
        .await
        .map_err(|e| e.to_string())?;
    let client = server.client.clone();
    let (store, name) = store(&client, &args)?;
    let live = if args.change_stream {
        TailOptions::new().watch(args.ns.clone())
    } else {
        TailOptions::new().oplog(OplogOptions::new().namespace(args.ns.clone()))
    };
    let checkpoint = CheckpointOptions::shared(store, name).save_every(args.save_every);
    let options = live
        .direct_read(args.ns.clone())
        .checkpoint_options(checkpoint);
    if server.is_embedded() {
        demo_documents(&client, &args.ns).await?;
    }
    let (ops, handle) = start(&client, options);
    let stop = handle.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.stop();
        }
    });
    let demo = server.is_embedded().then(|| {
        let (client, ns, handle) = (client.clone(), args.ns.clone(), handle.clone());
        tokio::spawn(async move {
            // After the copy, so that the changes arrive as live ops.
            if handle.direct_reads_done().await.is_ok() {
                demo_changes(&client, &ns).await;
            }
        })
    });
    print_and_ack(ops, &handle, demo.map(|_| 5 + 4)).await?;
    handle.flush().await?;
    Ok(())
}

/// The checkpoint store and name `args` ask for.
fn store(client: &Client, args: &Args) -> Result<(Arc<dyn CheckpointStore>, String), BoxError> {
    if args.mongo_store {
        let coll = client.database("mongotail").collection("checkpoints");
        return Ok((Arc::new(MongoStore::new(coll)), args.checkpoint.clone()));
    }
    let path = Path::new(&args.checkpoint);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => ".".into(),
    };
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or("--checkpoint: not a file name")?;
    let name = file.strip_suffix(".json").unwrap_or(file).to_owned();
    Ok((Arc::new(FileStore::new(dir)?), name))
}

/// Prints each op, flushes stdout, then acknowledges the op; ends with the stream (or
/// after `limit` ops).
async fn print_and_ack(
    mut ops: OpStream,
    handle: &Handle,
    limit: Option<usize>,
) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    let mut printed = 0;
    while let Some(op) = ops.next().await {
        let mut op = op?;
        writeln!(out, "{}", serde_json::to_string(&OpLine::from(&op))?)?;
        out.flush()?;
        op.ack();
        printed += 1;
        if limit.is_some_and(|n| printed >= n) {
            handle.stop();
        }
    }
    Ok(())
}

/// The embedded demo: five documents to copy…
async fn demo_documents(client: &Client, ns: &Namespace) -> Result<(), BoxError> {
    let coll = client
        .database(ns.db())
        .collection::<bson::Document>(ns.coll());
    coll.insert_many((1..=5).map(|i| doc! {"_id": i, "n": i}))
        .await?;
    Ok(())
}

/// …and, once they are copied, four changes to tail.
async fn demo_changes(client: &Client, ns: &Namespace) {
    {
        let coll = client
            .database(ns.db())
            .collection::<bson::Document>(ns.coll());
        let writes = async {
            coll.update_one(doc! {"_id": 1}, doc! {"$set": {"n": 10}})
                .await?;
            coll.insert_one(doc! {"_id": 6, "n": 6}).await?;
            coll.update_one(doc! {"_id": 6}, doc! {"$inc": {"n": 1}})
                .await?;
            coll.delete_one(doc! {"_id": 2}).await?;
            Ok::<_, mongodb::error::Error>(())
        };
        if let Err(e) = writes.await {
            eprintln!("checkpoint: demo writes failed: {e}");
        }
    }
}
