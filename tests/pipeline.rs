//! `OpStreamExt::pipeline` against a server (mongosim, or `MONGODB_URI`): one pipeline text
//! gives the same ops on the oplog (client side), a change stream (server side), a change
//! stream filtered client side, and the merged stream of `start`, over random workloads.
#![cfg(feature = "pipeline")]

mod common;

use bson::{doc, Bson, Document, Timestamp};
use common::{unique_db, TestServer, WAIT};
use futures::{Stream, StreamExt};
use mongodb::Client;
use mongotail::{
    last_op_timestamp, start, ChangeStreamOptions, ChangeStreamSource, Namespace, Op, OpKind,
    OpStreamExt, OplogOptions, OplogStream, StartAt, TailOptions, UpdateDescription,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Pipelines as a user writes them. Every `$match` lets the end marker (collection `z`)
/// through, so each stream can be read up to it.
fn pipelines() -> Vec<Vec<Document>> {
    let or_end = |cond: Document| doc! {"$match": {"$or": [{"ns.coll": "z"}, cond]}};
    vec![
        vec![or_end(
            doc! {"operationType": {"$in": ["insert", "delete"]}},
        )],
        vec![or_end(doc! {"fullDocument.n": {"$gte": 5}})],
        vec![
            or_end(doc! {"ns.coll": "b"}),
            doc! {"$project": {"fullDocument.secret": 0}},
        ],
        vec![or_end(
            doc! {"updateDescription.updatedFields.n": {"$exists": true}},
        )],
        vec![
            or_end(doc! {"operationType": "insert"}),
            doc! {"$addFields": {"fullDocument.tag": {"$concat": ["t-", "$ns.coll"]}}},
        ],
        vec![doc! {"$redact": {"$cond": [{"$eq": ["$secret", 1]}, "$$PRUNE", "$$DESCEND"]}}],
        vec![doc! {"$unset": ["fullDocument.secret", "updateDescription.removedFields"]}],
        vec![],
    ]
}

/// Creates the collections the workloads write to, so that no implicit `create` (which the
/// oplog reports and a change stream without `showExpandedEvents` does not) happens later.
async fn create_collections(client: &Client, db: &str) {
    for coll in ["a", "b", "z"] {
        client.database(db).create_collection(coll).await.unwrap();
    }
}

/// A random workload of inserts, updates, replacements and deletes over collections `a`
/// and `b`, then the end marker.
async fn workload(client: &Client, db: &str, rng: &mut StdRng) {
    let db = client.database(db);
    let mut next_id = 0;
    let mut live: Vec<(&str, i32)> = Vec::new();
    for _ in 0..rng.random_range(10..30) {
        let coll = if rng.random_bool(0.5) { "a" } else { "b" };
        let c = db.collection::<Document>(coll);
        let n = rng.random_range(0..10);
        let secret = rng.random_range(0..2);
        match (
            rng.random_range(0..5),
            live.iter().position(|(c, _)| *c == coll),
        ) {
            (0 | 1, _) | (_, None) => {
                next_id += 1;
                c.insert_one(doc! {"_id": next_id, "n": n, "secret": secret, "arr": [1, 2, 3]})
                    .await
                    .unwrap();
                live.push((coll, next_id));
            }
            (2, Some(i)) => {
                let update = if rng.random_bool(0.5) {
                    doc! {"$set": {"n": n}, "$unset": {"secret": 1}}
                } else {
                    doc! {"$set": {"arr": [1]}, "$inc": {"n": 1}}
                };
                c.update_one(doc! {"_id": live[i].1}, update).await.unwrap();
            }
            (3, Some(i)) => {
                c.replace_one(doc! {"_id": live[i].1}, doc! {"n": n, "secret": secret})
                    .await
                    .unwrap();
            }
            (_, Some(i)) => {
                c.delete_one(doc! {"_id": live[i].1}).await.unwrap();
                live.remove(i);
            }
        }
    }
    db.collection::<Document>("z")
        .insert_one(doc! {"_id": "end"})
        .await
        .unwrap();
}

/// What must be equal whichever way the pipeline ran.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: OpKind,
    ns: Namespace,
    id: Option<Bson>,
    data: Option<Document>,
    update: Option<UpdateDescription>,
    key: Option<Document>,
    ts: Timestamp,
}

/// The ops of `stream` up to the end marker.
async fn until_end<S>(mut stream: S) -> Vec<Seen>
where
    S: Stream<Item = mongotail::Result<Op>> + Unpin,
{
    let mut out = Vec::new();
    loop {
        let op = match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(op))) => op,
            other => panic!("after {} ops: {other:?}", out.len()),
        };
        let end = op.namespace.coll() == "z";
        out.push(Seen {
            kind: op.kind,
            ns: op.namespace,
            id: op.id,
            data: op.data,
            update: op.update,
            key: op.document_key,
            ts: op.timestamp,
        });
        if end {
            return out;
        }
    }
}

#[tokio::test]
async fn one_pipeline_gives_the_same_ops_from_every_source() {
    let server = TestServer::start().await;
    let client = &server.client;
    let seed = std::env::var("MONGOTAIL_PIPELINE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    // Three random workloads per pipeline.
    let cases = pipelines().into_iter().cycle().take(3 * pipelines().len());
    for (case, stages) in cases.enumerate() {
        let db = unique_db("pipeline");
        let ns = Namespace::database(db.clone()).unwrap();
        create_collections(client, &db).await;
        let since = last_op_timestamp(client).await.unwrap().unwrap();
        let oplog = OplogStream::new(
            client,
            OplogOptions::new()
                .namespace(ns.clone())
                .start(StartAt::After(since)),
        )
        .pipeline(&stages)
        .unwrap();
        let stream_options = || {
            ChangeStreamOptions::new()
                .namespace(ns.clone())
                .full_document(None)
                .start(StartAt::After(since))
        };
        let server_side =
            ChangeStreamSource::new(client, stream_options().pipeline(stages.clone()));
        let client_side = ChangeStreamSource::new(client, stream_options())
            .pipeline(&stages)
            .unwrap();
        let (merged, handle) = start(
            client,
            TailOptions::new()
                .oplog(OplogOptions::new().namespace(ns.clone()))
                .start(StartAt::After(since)),
        );
        let merged = merged.pipeline(&stages).unwrap();
        workload(client, &db, &mut rng).await;
        let from_oplog = until_end(oplog).await;
        let what = format!("case {case} (seed {seed}): {stages:?}");
        assert!(from_oplog.len() > 1, "{what}: only the end marker");
        assert_eq!(
            until_end(server_side).await,
            from_oplog,
            "{what}: server side"
        );
        assert_eq!(
            until_end(client_side).await,
            from_oplog,
            "{what}: client side"
        );
        assert_eq!(until_end(merged).await, from_oplog, "{what}: merged");
        handle.stop();
    }
}

#[tokio::test]
async fn per_namespace_pipelines_apply_to_their_namespace_only() {
    let server = TestServer::start().await;
    let client = &server.client;
    let db = unique_db("pipeline_ns");
    create_collections(client, &db).await;
    let since = last_op_timestamp(client).await.unwrap().unwrap();
    let ops = OplogStream::new(
        client,
        OplogOptions::new()
            .namespace(Namespace::database(db.clone()).unwrap())
            .start(StartAt::After(since)),
    )
    .pipeline_by_ns(|ns: &Namespace| match ns.coll() {
        "a" => Some(vec![doc! {"$match": {"fullDocument.n": {"$gt": 1}}}]),
        "b" => Some(vec![doc! {"$bogus": 1}]),
        _ => None,
    });
    let d = client.database(&db);
    for n in 0..4 {
        d.collection::<Document>("a")
            .insert_one(doc! {"_id": n, "n": n})
            .await
            .unwrap();
    }
    d.collection::<Document>("b")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    d.collection::<Document>("z")
        .insert_one(doc! {"_id": "end"})
        .await
        .unwrap();
    let items: Vec<_> = ops.take(4).collect().await;
    let ids: Vec<_> = items[..2]
        .iter()
        .map(|o| o.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(ids, vec![Some(Bson::Int32(2)), Some(Bson::Int32(3))]);
    match &items[2] {
        Err(mongotail::Error::Pipeline {
            code: 40324,
            message,
            ..
        }) => {
            assert!(message.contains(&format!("{db}.b")), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(items[3].as_ref().unwrap().namespace.coll(), "z");
}
