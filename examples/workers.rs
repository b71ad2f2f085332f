//! Splitting one stream between workers with a consistent hash ring (gtm's `consistent`
//! package): three workers, as three processes would, each tail the same oplog and keep
//! only the ops they own. Every op is seen by exactly one worker, and all the ops of one
//! document go to the same worker (so per-document order holds within that worker).
//!
//! The ring normally lives in a TOML file (`workers = ["Tom", "Dick", "Harry"]`) or in a
//! MongoDB document shared by every process; adding a fourth worker moves about a quarter
//! of the documents.
//!
//! ```text
//! cargo run --example workers
//! MONGODB_URI=mongodb://... cargo run --example workers
//! ```

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use futures::{future, TryStreamExt};
use mongodb::Client;
use mongotail::{
    start, HashRing, Namespace, OpKind, OpStreamExt, OplogOptions, StartAt, TailOptions,
};

const DB: &str = "mongotail_example_workers";
const DOCS: i32 = 300;

/// What one worker saw: (document id, op kind) in order.
type Seen = Vec<(i32, OpKind)>;

/// One worker: tails the database's oplog from `since`, keeps its share of the ops and
/// stops at the end marker (which every worker sees: it is checked before sharding).
async fn worker(
    client: Client,
    ring: HashRing,
    name: &'static str,
    since: Timestamp,
) -> mongotail::Result<Seen> {
    let me = ring.worker(name)?;
    let oplog = OplogOptions::new()
        .namespace(Namespace::database(DB)?)
        .start(StartAt::After(since));
    let (ops, _handle) = start(&client, TailOptions::new().oplog(oplog));
    let end = Namespace::new(DB, "end")?;
    ops.try_take_while(move |op| future::ready(Ok(op.namespace != end)))
        .filter_ns(|ns, _| ns.coll() == "items")
        .consistent_shard(me)
        .try_filter_map(|op| {
            let id = op.id.as_ref().and_then(Bson::as_i32);
            future::ready(Ok(id.map(|id| (id, op.kind))))
        })
        .try_collect()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let server = common::connect(None).await?;
    let client = server.client.clone();
    let db = client.database(DB);
    db.drop().await?;
    db.create_collection("items").await?;
    let items = db.collection::<Document>("items");

    let ring = HashRing::from_toml_str(r#"workers = ["Tom", "Dick", "Harry"]"#)?;
    let since = mongotail::last_op_timestamp(&client)
        .await?
        .ok_or("the oplog is empty: is this a replica set?")?;
    let workers: Vec<_> = ["Tom", "Dick", "Harry"]
        .into_iter()
        .map(|name| {
            (
                name,
                tokio::spawn(worker(client.clone(), ring.clone(), name, since)),
            )
        })
        .collect();

    // The workload: inserts, an update of every third document, deletes of every tenth.
    items
        .insert_many((0..DOCS).map(|i| doc! {"_id": i, "n": 0}))
        .await?;
    let mut written = DOCS as usize;
    for i in (0..DOCS).step_by(3) {
        items
            .update_one(doc! {"_id": i}, doc! {"$inc": {"n": 1}})
            .await?;
        written += 1;
    }
    for i in (0..DOCS).step_by(10) {
        items.delete_one(doc! {"_id": i}).await?;
        written += 1;
    }
    db.collection::<Document>("end")
        .insert_one(doc! {"done": true})
        .await?;

    // Who saw what.
    let mut owner_of: BTreeMap<i32, &str> = BTreeMap::new();
    let mut total = 0;
    let mut problems = Vec::new();
    for (name, task) in workers {
        let seen = tokio::time::timeout(Duration::from_secs(60), task).await???;
        let docs: BTreeSet<i32> = seen.iter().map(|(id, _)| *id).collect();
        let count = |k: OpKind| seen.iter().filter(|(_, kind)| *kind == k).count();
        println!(
            "{name:<5} {:>4} ops on {:>3} documents: {} inserts, {} updates, {} deletes",
            seen.len(),
            docs.len(),
            count(OpKind::Insert),
            count(OpKind::Update),
            count(OpKind::Delete)
        );
        for id in docs {
            if let Some(other) = owner_of.insert(id, name) {
                problems.push(format!("document {id} seen by {other} and {name}"));
            }
        }
        total += seen.len();
    }
    println!("{total} ops seen in all, {written} written");
    db.drop().await?;
    if total != written {
        problems.push(format!("{written} ops written but {total} seen"));
    }
    if !problems.is_empty() {
        return Err(problems.join("; ").into());
    }
    println!("every op was seen by exactly one worker, every document by one worker");
    Ok(())
}
