//! Transactions through the router with the official driver: a one-shard commit is one
//! `applyOps`; a two-shard commit is a two-phase commit with a `prepare: true` `applyOps`
//! and a `commitTransaction` entry on both shards; `recoveryToken` in replies; the events in
//! the router's change stream (reference sharded-clusters.md §6).

use std::time::Duration;

use bson::{doc, Document};
use futures::{StreamExt, TryStreamExt};
use mongodb::change_stream::event::OperationType;
use mongodb::Client;
use mongosim::{Cluster, ClusterOptions};

async fn client(uri: &str) -> Client {
    Client::with_uri_str(uri).await.expect("client")
}

async fn txn_entries(uri: &str) -> Vec<Document> {
    client(uri)
        .await
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ns": "admin.$cmd", "lsid": {"$exists": true}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// A cluster with `t.c` sharded on `k` and split at 0: k < 0 on shard01, k >= 0 on shard02.
async fn two_shard_collection() -> (Cluster, Client) {
    let cluster = Cluster::start(
        ClusterOptions::new()
            .shards(2)
            .noop_interval(Duration::from_millis(50)),
    )
    .unwrap();
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    admin
        .run_command(doc! {"enableSharding": "t", "primaryShard": "shard01"})
        .await
        .unwrap();
    admin
        .run_command(doc! {"shardCollection": "t.c", "key": {"k": 1}})
        .await
        .unwrap();
    admin
        .run_command(doc! {"split": "t.c", "middle": {"k": 0}})
        .await
        .unwrap();
    admin
        .run_command(
            doc! {"moveChunk": "t.c", "find": {"k": 5}, "to": "shard02", "_waitForDelete": true},
        )
        .await
        .unwrap();
    (cluster, c)
}

#[tokio::test]
async fn a_two_shard_transaction_commits_in_two_phases() {
    let (cluster, c) = two_shard_collection().await;
    let coll = c.database("t").collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap();
    let mut session = c.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    let reply = c
        .database("t")
        .run_command(doc! {"insert": "c", "documents": [{"_id": 1, "k": -1}]})
        .session(&mut session)
        .await
        .unwrap();
    // Every ok reply inside a transaction carries the recovery token (§6.1).
    assert_eq!(
        reply.get_document("recoveryToken").unwrap(),
        &doc! {"recoveryShardId": "shard01"}
    );
    coll.insert_one(doc! {"_id": 2, "k": 1})
        .session(&mut session)
        .await
        .unwrap();
    // Not visible outside the transaction before the commit.
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
    session.commit_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    for i in 0..2 {
        let entries = txn_entries(&cluster.shard_uri(i)).await;
        assert_eq!(entries.len(), 2, "shard {i}: {entries:?}");
        let prepare = entries[0].get_document("o").unwrap();
        assert_eq!(prepare.get_bool("prepare"), Ok(true));
        assert_eq!(prepare.get_array("applyOps").unwrap().len(), 1);
        let commit = &entries[1];
        let o = commit.get_document("o").unwrap();
        assert_eq!(o.get_i32("commitTransaction"), Ok(1));
        let commit_ts = o.get_timestamp("commitTimestamp").unwrap();
        let prepare_ts = entries[0].get_timestamp("ts").unwrap();
        assert_eq!(
            commit
                .get_document("prevOpTime")
                .unwrap()
                .get_timestamp("ts"),
            Ok(prepare_ts)
        );
        assert!((commit_ts.time, commit_ts.increment) >= (prepare_ts.time, prepare_ts.increment));
        assert_eq!(commit.get_i64("txnNumber"), entries[0].get_i64("txnNumber"));
    }
    // The router's change stream shows both inserts, with the transaction's session.
    let mut keys = Vec::new();
    for _ in 0..2 {
        let ev = stream.next().await.unwrap().unwrap();
        assert_eq!(ev.operation_type, OperationType::Insert);
        assert!(ev.lsid.is_some() && ev.txn_number.is_some());
        keys.push(ev.document_key.unwrap());
    }
    keys.sort_by_key(|k| k.get_i32("k").unwrap());
    assert_eq!(
        keys,
        vec![doc! {"k": -1, "_id": 1}, doc! {"k": 1, "_id": 2}]
    );
}

#[tokio::test]
async fn a_one_shard_transaction_is_one_apply_ops_and_aborts_write_nothing() {
    let (cluster, c) = two_shard_collection().await;
    let coll = c.database("t").collection::<Document>("c");
    let mut session = c.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1, "k": 3})
        .session(&mut session)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2, "k": 4})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    let entries = txn_entries(&cluster.shard_uri(1)).await;
    assert_eq!(entries.len(), 1);
    let o = entries[0].get_document("o").unwrap();
    assert_eq!(o.get_array("applyOps").unwrap().len(), 2);
    assert!(!o.contains_key("prepare"));
    assert!(txn_entries(&cluster.shard_uri(0)).await.is_empty());
    // Aborted across two shards: nothing written anywhere.
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 3, "k": -3})
        .session(&mut session)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 4, "k": 7})
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    assert_eq!(txn_entries(&cluster.shard_uri(1)).await.len(), 1);
    assert!(txn_entries(&cluster.shard_uri(0)).await.is_empty());
}

#[tokio::test]
async fn updating_the_shard_key_moves_the_document_to_its_new_shard() {
    let (cluster, c) = two_shard_collection().await;
    let coll = c.database("t").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "k": -1, "v": 1})
        .await
        .unwrap();
    // A retryable write (the driver's default): delete on shard01, insert on shard02.
    let r = coll
        .update_one(doc! {"k": -1, "_id": 1}, doc! {"$set": {"k": 5}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    let on = |i: usize| {
        let uri = cluster.shard_uri(i);
        async move {
            client(&uri)
                .await
                .database("t")
                .collection::<Document>("c")
                .count_documents(doc! {})
                .await
                .unwrap()
        }
    };
    assert_eq!((on(0).await, on(1).await), (0, 1));
    let got = coll.find_one(doc! {"k": 5}).await.unwrap().unwrap();
    assert_eq!(got, doc! {"_id": 1, "k": 5, "v": 1});
    // Inside a transaction too.
    let mut session = c.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.update_one(doc! {"k": 5, "_id": 1}, doc! {"$set": {"k": -7}})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    assert_eq!((on(0).await, on(1).await), (1, 0));
    // Neither: refused (SRV: IllegalOperation).
    let plain = client(&format!("{}?retryWrites=false", cluster.uri())).await;
    let err = plain
        .database("t")
        .collection::<Document>("c")
        .update_one(doc! {"k": -7, "_id": 1}, doc! {"$set": {"k": 9}})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Must run update to shard key field"),
        "{err}"
    );
}
