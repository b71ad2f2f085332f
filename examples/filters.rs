//! Filtering: the same question ("which orders of 100 or more were placed?") answered
//! three ways, cheapest first.
//!
//! 1. `OplogOptions::namespace`: the namespace filter pushed into the oplog query, so the
//!    server sends only this database's entries;
//! 2. `filter_ns` (namespace and kind only, gtm's `NamespaceFilter`) then `filter` with
//!    [`chain_filters`] (whole op, gtm's `Filter` / `ChainOpFilters`), on the client;
//! 3. a change stream with a `$match` pipeline (gtm's `Pipe`), filtered by the server.
//!
//! ```text
//! cargo run --example filters            # embedded mongosim
//! MONGODB_URI=mongodb://... cargo run --example filters
//! ```

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::{future, TryStreamExt};
use mongotail::ext::{chain_filters, OpFilter};
use mongotail::{
    start, ChangeStreamOptions, Namespace, Op, OpKind, OpStreamExt, OplogOptions, StartAt,
    TailOptions,
};

const DB: &str = "mongotail_example_filters";
/// How long to wait for the expected ops before giving up.
const DEADLINE: Duration = Duration::from_secs(30);

fn total(op: &Op) -> Option<i64> {
    match op.data.as_ref()?.get("total")? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let server = common::connect(None).await?;
    let client = server.client.clone();
    let db = client.database(DB);
    db.drop().await?;
    let orders_ns = Namespace::new(DB, "orders")?;
    let end_ns = Namespace::new(DB, "end")?;

    // Both readers start just after the newest oplog entry, so they see all of this.
    let since = mongotail::last_op_timestamp(&client)
        .await?
        .ok_or("the oplog is empty: is this a replica set?")?;

    // The workload: 30 orders with assorted totals, audit records in another collection,
    // updates of some orders, then an end marker.
    let orders: Vec<Document> = (1..=30)
        .map(|i: i32| doc! {"_id": i, "total": (i * 37) % 250, "status": "new"})
        .collect();
    let expected: BTreeSet<i32> = orders
        .iter()
        .filter(|o| o.get_i32("total").is_ok_and(|t| t >= 100))
        .filter_map(|o| o.get_i32("_id").ok())
        .collect();
    db.collection::<Document>("orders")
        .insert_many(orders)
        .await?;
    db.collection::<Document>("audit")
        .insert_many((1..=10).map(|i| doc! {"_id": i, "total": 1000, "event": "login"}))
        .await?;
    db.collection::<Document>("orders")
        .update_many(
            doc! {"total": {"$lt": 50}},
            doc! {"$set": {"status": "small"}},
        )
        .await?;
    db.collection::<Document>("end")
        .insert_one(doc! {"done": true})
        .await?;
    println!(
        "wrote 30 orders ({} of them >= 100), 10 audit records, some updates",
        expected.len()
    );

    // 1 + 2: the oplog of this database only (server side), then client-side filters.
    let oplog = OplogOptions::new()
        .namespace(Namespace::database(DB)?)
        .start(StartAt::After(since));
    let (ops, _handle) = start(&client, TailOptions::new().oplog(oplog));
    let filters: Vec<OpFilter> = vec![
        Box::new(|op: &Op| total(op).is_some_and(|t| t >= 100)),
        Box::new(|op: &Op| op.data.as_ref().and_then(|d| d.get_str("status").ok()) == Some("new")),
    ];
    let end = end_ns.clone();
    let from_oplog: BTreeSet<i32> = tokio::time::timeout(
        DEADLINE,
        ops.try_take_while(move |op| future::ready(Ok(op.namespace != end)))
            .filter_ns(|ns, kind| ns.coll() == "orders" && *kind == OpKind::Insert)
            .filter(chain_filters(filters))
            .map_ok(|op| op.id.and_then(|id| id.as_i32()).unwrap_or_default())
            .try_collect(),
    )
    .await??;
    println!("oplog + filter_ns + filter:     {from_oplog:?}");

    // 3: a change stream on the collection, filtered on the server by a pipeline.
    let pipeline =
        [doc! {"$match": {"operationType": "insert", "fullDocument.total": {"$gte": 100}}}];
    let stream = ChangeStreamOptions::new()
        .namespace(orders_ns)
        .pipeline(pipeline)
        .start(StartAt::After(since));
    let (events, _handle) = start(
        &client,
        TailOptions::new().change_stream(stream).disable_oplog(),
    );
    let from_pipeline: BTreeSet<i32> = tokio::time::timeout(
        DEADLINE,
        futures::StreamExt::take(events, expected.len())
            .map_ok(|op| op.id.and_then(|id| id.as_i32()).unwrap_or_default())
            .try_collect(),
    )
    .await??;
    println!("change stream + $match pipeline: {from_pipeline:?}");

    db.drop().await?;
    if from_oplog != expected || from_pipeline != expected {
        return Err(format!("expected {expected:?}").into());
    }
    println!(
        "both found exactly the {} orders of 100 or more",
        expected.len()
    );
    Ok(())
}
