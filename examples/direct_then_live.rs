//! Copy a collection, then follow its changes: direct reads and the oplog in one stream,
//! with the completion signal `Handle::direct_reads_done()` (gtm's `DirectReadWg`).
//!
//! The oplog source starts at the newest entry present before the copy begins, so a
//! change made while the copy runs is read twice at worst (once by the copy, once from
//! the oplog), never missed. Here the live changes are written only once the copy is
//! done, to show the signal.
//!
//! ```text
//! cargo run --example direct_then_live
//! MONGODB_URI=mongodb://... cargo run --example direct_then_live
//! ```

mod common;

use std::time::Duration;

use bson::{doc, Document};
use futures::{future, TryStreamExt};
use mongotail::ext::{DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW};
use mongotail::{
    start, DirectOptions, Namespace, OpStreamExt, OplogOptions, Source, StartAt, TailOptions,
};

const DB: &str = "mongotail_example_direct_then_live";
const DOCS: i32 = 5_000;
/// Changes the writer makes after the copy.
const LIVE_CHANGES: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let server = common::connect(None).await?;
    let client = server.client.clone();
    let db = client.database(DB);
    db.drop().await?;
    let items = db.collection::<Document>("items");
    let ns = Namespace::new(DB, "items")?;
    let end_ns = Namespace::new(DB, "end")?;

    // Existing data: what the direct read copies.
    let docs: Vec<Document> = (0..DOCS)
        .map(|i| doc! {"_id": i, "sku": format!("sku-{i:05}"), "stock": i % 17})
        .collect();
    items.insert_many(docs).await?;
    println!("collection {ns} has {DOCS} documents");

    let since = mongotail::last_op_timestamp(&client)
        .await?
        .ok_or("the oplog is empty: is this a replica set?")?;
    let options = TailOptions::new()
        .oplog(
            OplogOptions::new()
                .namespace(Namespace::database(DB)?)
                .start(StartAt::After(since)),
        )
        .direct(DirectOptions::new().namespace(ns.clone()));
    let (ops, handle) = start(&client, options);

    // The writer waits for the copy to finish, then makes live changes and marks the end.
    let writer = {
        let handle = handle.clone();
        let items = items.clone();
        let end = db.collection::<Document>("end");
        tokio::spawn(async move {
            handle.direct_reads_done().await?;
            println!("direct reads done: writing live changes");
            items
                .insert_one(doc! {"_id": DOCS, "sku": "new", "stock": 5})
                .await?;
            items
                .update_one(doc! {"_id": 7}, doc! {"$inc": {"stock": -1}})
                .await?;
            items
                .update_one(doc! {"_id": 8}, doc! {"$set": {"sku": "renamed"}})
                .await?;
            items.delete_one(doc! {"_id": 9}).await?;
            end.insert_one(doc! {"done": true}).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
    };

    // One stream: the copy (source direct) and the changes (source oplog, updates with
    // their document fetched in batches). It ends at the end marker.
    let mut ops = std::pin::pin!(ops
        .try_take_while(move |op| future::ready(Ok(op.namespace != end_ns)))
        .batch_fetch(client.clone(), DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW));
    let (mut copied, mut live) = (0, Vec::new());
    let read_all = async {
        while let Some(op) = ops.try_next().await? {
            match op.source {
                Source::Direct => copied += 1,
                _ if op.namespace == ns => live.push(op),
                _ => {} // e.g. the end marker collection's create
            }
        }
        Ok::<_, mongotail::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(60), read_all).await??;
    writer.await?.map_err(|e| e.to_string())?;

    println!(
        "copied {copied} documents, then {} live changes:",
        live.len()
    );
    for op in &live {
        println!(
            "  {:?} _id={} data={}",
            op.kind,
            op.id.as_ref().map(ToString::to_string).unwrap_or_default(),
            op.data
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into())
        );
    }
    db.drop().await?;
    if copied != DOCS || live.len() != LIVE_CHANGES {
        return Err(format!("expected {DOCS} copied and {LIVE_CHANGES} live changes").into());
    }
    Ok(())
}
