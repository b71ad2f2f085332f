//! The sources by hand, without `mongotail::start`: build each source, chain adapters on
//! each, merge them with `futures::stream::select_all`, adapt the merged stream again, and
//! drive it with `while let Some(op) = stream.next().await`.
//!
//! - the oplog of `orders`: inserts and updates only, updates completed by `batch_fetch`;
//! - a change stream on `users`: inserts only;
//! - a direct read of `products`: the ones in stock only;
//! - merged, then decoded into one `Record` type per collection with `decode_with`.
//!
//! ```text
//! cargo run --example select_all
//! MONGODB_URI=mongodb://... cargo run --example select_all
//! ```

mod common;

use std::time::Duration;

use bson::{doc, from_document, Document};
use futures::stream::{select_all, StreamExt};
use mongotail::ext::{DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW};
use mongotail::{
    ChangeStreamOptions, ChangeStreamSource, DirectOptions, DirectReads, Namespace, Op, OpKind,
    OpStreamExt, OplogOptions, OplogStream, StartAt,
};
use serde::de::Error as _;
use serde::Deserialize;

const DB: &str = "mongotail_example_select_all";
/// How long to wait for the whole workload.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
struct Product {
    name: String,
    stock: i32,
}

#[derive(Debug, Deserialize)]
struct Order {
    #[serde(rename = "_id")]
    id: i32,
    status: String,
}

#[derive(Debug, Deserialize)]
struct User {
    name: String,
}

/// What the merged stream decodes each document into.
#[derive(Debug)]
enum Record {
    Product(Product),
    Order(Order),
    User(User),
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let server = common::connect(None).await?;
    let client = server.client.clone();
    let db = client.database(DB);
    db.drop().await?;
    for coll in ["orders", "users"] {
        db.create_collection(coll).await?;
    }
    // What the direct read copies: four products, three in stock.
    let products = db.collection::<Document>("products");
    products
        .insert_many((0..4).map(|i| doc! {"_id": i, "name": format!("p{i}"), "stock": i % 4}))
        .await?;
    let since = mongotail::last_op_timestamp(&client)
        .await?
        .ok_or("the oplog is empty: is this a replica set?")?;

    // 1. Each source, with its own adapters, boxed so the three types become one.
    let orders_ns = Namespace::new(DB, "orders")?;
    let oplog = OplogStream::new(
        &client,
        OplogOptions::new()
            .namespace(orders_ns)
            .start(StartAt::After(since)),
    )
    .filter_ns(|_, kind| matches!(kind, OpKind::Insert | OpKind::Update))
    .batch_fetch(client.clone(), DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW)
    .boxed();
    let users = ChangeStreamSource::new(
        &client,
        ChangeStreamOptions::new()
            .namespace(Namespace::new(DB, "users")?)
            .start(StartAt::After(since)),
    );
    // `OpStreamExt::filter` by path: `futures::StreamExt` (in scope) has a `filter` too.
    let users = OpStreamExt::filter(users, Op::is_insert).boxed();
    let products_copy = DirectReads::new(
        &client,
        DirectOptions::new().namespace(Namespace::new(DB, "products")?),
    );
    let in_stock = OpStreamExt::filter(products_copy, |op| {
        op.data.as_ref().and_then(|d| d.get_i32("stock").ok()) > Some(0)
    })
    .boxed();

    // 2. Merged, then adapted again: one type per collection.
    let mut stream = select_all([oplog, users, in_stock]).decode_with(|ns, doc| match ns.coll() {
        "products" => from_document(doc).map(Record::Product),
        "orders" => from_document(doc).map(Record::Order),
        "users" => from_document(doc).map(Record::User),
        other => Err(bson::de::Error::custom(format!("no type for {other}"))),
    });

    // The live changes: three orders (one then paid) and two users.
    let orders = db.collection::<Document>("orders");
    orders
        .insert_many((1..=3).map(|i| doc! {"_id": i, "status": "new"}))
        .await?;
    orders
        .update_one(doc! {"_id": 2}, doc! {"$set": {"status": "paid"}})
        .await?;
    let users = db.collection::<Document>("users");
    users
        .insert_many([doc! {"name": "ada"}, doc! {"name": "grace"}])
        .await?;

    // 3. A plain loop; the live sources never end, so stop once everything arrived.
    let expected = 3 + 4 + 2;
    let mut seen = 0;
    let drive = async {
        while let Some(op) = stream.next().await {
            let op = op?;
            match &op.data {
                Some(Record::Product(p)) => println!("copied   {} ({} in stock)", p.name, p.stock),
                Some(Record::Order(o)) => println!("{:<8} order {} {}", kind(&op), o.id, o.status),
                Some(Record::User(u)) => println!("{:<8} user {}", kind(&op), u.name),
                None => println!("{:<8} {} without a document", kind(&op), op.namespace),
            }
            seen += 1;
            if seen == expected {
                break;
            }
        }
        Ok::<_, mongotail::Error>(())
    };
    tokio::time::timeout(DEADLINE, drive).await??;
    println!("{seen} ops from three sources merged by hand");
    db.drop().await?;
    Ok(())
}

fn kind<T>(op: &Op<T>) -> &'static str {
    match op.kind {
        OpKind::Insert => "insert",
        OpKind::Update => "update",
        _ => "other",
    }
}
