//! Typed decoding (gtm's `Unmarshal`): `decode::<Order>()` turns each `Op<Document>`
//! into an `Op<Order>`. A document that does not fit the struct yields an error item
//! naming its namespace and `_id`, and the stream goes on.
//!
//! A change stream is used here because with its default `fullDocument: updateLookup`
//! updates carry the whole document, so every insert, update and replace decodes.
//!
//! ```text
//! cargo run --example typed
//! MONGODB_URI=mongodb://... cargo run --example typed
//! ```

mod common;

use std::time::Duration;

use bson::{doc, Document};
use futures::{future, StreamExt, TryStreamExt};
use mongotail::{
    start, ChangeStreamOptions, Error, Namespace, Op, OpStreamExt, StartAt, TailOptions,
};
use serde::Deserialize;

const DB: &str = "mongotail_example_typed";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    New,
    Paid,
    Shipped,
}

#[derive(Debug, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
}

#[derive(Debug, Deserialize)]
struct Order {
    #[serde(rename = "_id")]
    id: i32,
    customer: String,
    lines: Vec<Line>,
    total: f64,
    status: Status,
    #[serde(default)]
    note: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let server = common::connect(None).await?;
    let client = server.client.clone();
    let db = client.database(DB);
    db.drop().await?;
    db.create_collection("orders").await?;
    let orders = db.collection::<Document>("orders");
    let orders_ns = Namespace::new(DB, "orders")?;

    let since = mongotail::last_op_timestamp(&client)
        .await?
        .ok_or("the oplog is empty: is this a replica set?")?;
    let stream = ChangeStreamOptions::new()
        .namespace(orders_ns)
        .start(StartAt::After(since));
    let (ops, _handle) = start(
        &client,
        TailOptions::new().change_stream(stream).disable_oplog(),
    );

    orders
        .insert_many([
            doc! {"_id": 1, "customer": "ada", "lines": [{"sku": "kb-01", "qty": 1}], "total": 89.9, "status": "new"},
            doc! {"_id": 2, "customer": "grace", "lines": [{"sku": "ms-02", "qty": 2}, {"sku": "pad", "qty": 1}], "total": 45.0, "status": "new"},
            // Does not fit `Order`: total is a string. Its op becomes an error item.
            doc! {"_id": 3, "customer": "linus", "lines": [], "total": "free", "status": "new"},
        ])
        .await?;
    orders
        .update_one(doc! {"_id": 1}, doc! {"$set": {"status": "paid"}})
        .await?;
    orders
        .replace_one(
            doc! {"_id": 2},
            doc! {"customer": "grace", "lines": [{"sku": "ms-02", "qty": 2}], "total": 30.0, "status": "shipped", "note": "split"},
        )
        .await?;
    orders.delete_one(doc! {"_id": 3}).await?;
    // The end marker: a document that is not an order at all, recognised before decoding.
    orders.insert_one(doc! {"_id": "end"}).await?;

    let mut typed = std::pin::pin!(ops
        .try_take_while(|op| future::ready(Ok(op.id != Some("end".into()))))
        .decode::<Order>());
    let (mut decoded, mut failed) = (0, 0);
    let read_all = async {
        while let Some(item) = typed.next().await {
            match item {
                Ok(op) => {
                    decoded += 1;
                    print_order(&op);
                }
                Err(Error::Decode {
                    namespace,
                    id,
                    source,
                }) => {
                    failed += 1;
                    println!("{namespace} _id={id:?}: does not decode: {source}");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), read_all).await??;
    println!("{decoded} ops decoded, {failed} did not");
    db.drop().await?;
    if failed != 1 {
        return Err(
            format!("expected exactly one document that does not decode, got {failed}").into(),
        );
    }
    Ok(())
}

fn print_order(op: &Op<Order>) {
    match &op.data {
        Some(order) => {
            let items: u32 = order.lines.iter().map(|l| l.qty).sum();
            let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
            println!(
                "{:<7} order {} for {}: {items} item(s) {skus:?}, {:.2}, {:?}{}",
                format!("{:?}", op.kind).to_lowercase(),
                order.id,
                order.customer,
                order.total,
                order.status,
                order
                    .note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
        None => println!(
            "{:<7} order {} (no document)",
            format!("{:?}", op.kind).to_lowercase(),
            op.id.as_ref().map(ToString::to_string).unwrap_or_default()
        ),
    }
}
