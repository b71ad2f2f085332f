//! Controlling a running stream through its `Handle`: `pause()` / `resume()`,
//! `since(ts)` to replay from a saved position (gtm's `Since`), and `stop()`.
//!
//! ```text
//! cargo run --example pause_resume
//! MONGODB_URI=mongodb://... cargo run --example pause_resume
//! ```

mod common;

use std::time::Duration;

use bson::{doc, Document, Timestamp};
use futures::StreamExt;
use mongotail::{start, Namespace, Op, OpKind, OpStreamExt, OplogOptions, StartAt, TailOptions};

const DB: &str = "mongotail_example_pause_resume";
/// How long to wait for an op that must arrive.
const DEADLINE: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error>;

/// The next op, failing after [`DEADLINE`].
async fn next_op<S>(ops: &mut S) -> Result<Op, BoxError>
where
    S: futures::Stream<Item = mongotail::Result<Op>> + Unpin,
{
    match tokio::time::timeout(DEADLINE, ops.next()).await {
        Ok(Some(op)) => Ok(op?),
        Ok(None) => Err("the stream ended".into()),
        Err(_) => Err("no op within the deadline".into()),
    }
}

fn id(op: &Op) -> i32 {
    op.id.as_ref().and_then(|id| id.as_i32()).unwrap_or(-1)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    common::init_tracing();
    let server = common::connect(None).await?;
    let client = server.client.clone();
    let db = client.database(DB);
    db.drop().await?;
    db.create_collection("events").await?;
    let events = db.collection::<Document>("events");

    let since = mongotail::last_op_timestamp(&client)
        .await?
        .ok_or("the oplog is empty: is this a replica set?")?;
    let oplog = OplogOptions::new()
        .namespace(Namespace::new(DB, "events")?)
        .start(StartAt::After(since));
    let (ops, handle) = start(&client, TailOptions::new().oplog(oplog));
    let mut ops = ops.filter_ns(|_, kind| *kind == OpKind::Insert);

    // Live: three inserts come through; remember the position after the second.
    events.insert_many((1..=3).map(|i| doc! {"_id": i})).await?;
    let mut checkpoint: Option<Timestamp> = None;
    for _ in 1..=3 {
        let op = next_op(&mut ops).await?;
        println!("live:     insert _id={} at {}", id(&op), op.timestamp);
        if id(&op) == 2 {
            checkpoint = Some(op.timestamp); // what a consumer would persist
        }
    }
    let checkpoint = checkpoint.ok_or("insert 2 not seen")?;

    // Paused: writes happen, nothing is delivered.
    handle.pause();
    events.insert_many((4..=5).map(|i| doc! {"_id": i})).await?;
    let quiet = tokio::time::timeout(Duration::from_millis(500), ops.next()).await;
    println!(
        "paused:   {} (is_paused = {})",
        if quiet.is_err() {
            "nothing delivered for 500 ms"
        } else {
            "an op arrived while paused!"
        },
        handle.is_paused()
    );
    if quiet.is_ok() {
        return Err("an op was delivered while paused".into());
    }

    // Resumed: what was written meanwhile arrives, nothing lost.
    handle.resume();
    for _ in 4..=5 {
        let op = next_op(&mut ops).await?;
        println!("resumed:  insert _id={}", id(&op));
    }

    // since(checkpoint): replay everything after the saved position.
    handle.since(checkpoint)?;
    let mut replayed = Vec::new();
    for _ in 3..=5 {
        replayed.push(id(&next_op(&mut ops).await?));
    }
    println!("since({checkpoint}): replayed _id {replayed:?}");
    if replayed != [3, 4, 5] {
        return Err(format!("expected to replay [3, 4, 5], got {replayed:?}").into());
    }
    println!("position: {:?}", handle.oplog_position());

    // stop(): the stream ends and its cursor is closed; the handle reports it.
    handle.stop();
    let end = tokio::time::timeout(DEADLINE, ops.next()).await?;
    println!(
        "stopped:  next() = {:?}, is_stopped = {}, since() now: {:?}",
        end.map(|_| "an op"),
        handle.is_stopped(),
        handle.since(checkpoint).err().map(|e| e.to_string())
    );
    db.drop().await?;
    Ok(())
}
