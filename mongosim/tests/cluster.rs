//! A sharded cluster through the official driver: routers answering as mongos, config
//! metadata with the real shapes, hashed and ranged collections spread over the shards,
//! routed writes and merged reads (reference sharded-clusters.md §1–§3).

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::options::FindOptions;
use mongodb::Client;
use mongosim::{Cluster, ClusterOptions, ServerVersion};

async fn client(uri: &str) -> Client {
    Client::with_uri_str(uri).await.expect("client")
}

fn oplog_entries<'a>(
    entries: &'a [Document],
    ns: &'a str,
    op: &'a str,
) -> impl Iterator<Item = &'a Document> + 'a {
    entries
        .iter()
        .filter(move |e| e.get_str("ns") == Ok(ns) && e.get_str("op") == Ok(op))
}

async fn oplog(uri: &str) -> Vec<Document> {
    let c = client(uri).await;
    c.database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn router_is_a_mongos_and_the_topology_sharded() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2).routers(2)).unwrap();
    let c = client(&cluster.uri()).await;
    let hello = c
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert_eq!(hello.get_str("msg"), Ok("isdbgrid"));
    assert_eq!(hello.get_bool("isWritablePrimary"), Ok(true));
    for absent in [
        "setName",
        "hosts",
        "primary",
        "me",
        "lastWrite",
        "electionId",
    ] {
        assert!(!hello.contains_key(absent), "{absent} in {hello}");
    }
    assert!(hello.contains_key("$clusterTime"), "{hello}");
    // The driver sees a Sharded topology (sessions + transactions need it).
    let desc = c
        .database("admin")
        .run_command(doc! {"listShards": 1})
        .await
        .unwrap();
    let shards = desc.get_array("shards").unwrap();
    assert_eq!(shards.len(), 2);
    let s0 = shards[0].as_document().unwrap();
    assert_eq!(s0.get_str("_id"), Ok("shard01"));
    assert_eq!(
        s0.get_str("host").unwrap(),
        format!("shard01/{}", cluster.shards()[0].addr())
    );
    assert_eq!(s0.get_i32("state"), Ok(1));
    assert!(s0.get_timestamp("topologyTime").is_ok());
    // local is refused through the router
    let err = c
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Can't use 'local' database through mongos"),
        "{err}"
    );
    // Shards are ordinary replica sets reachable by their own URI; the config server holds
    // config.shards (what gtm's GetShards reads).
    let direct = client(&cluster.shard_uri(1)).await;
    let h = direct
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert_eq!(h.get_str("setName"), Ok("shard02"));
    let cfg = client(&cluster.config_uri()).await;
    let n = cfg
        .database("config")
        .collection::<Document>("shards")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 2);
    let version = cfg
        .database("config")
        .collection::<Document>("version")
        .find_one(doc! {})
        .await
        .unwrap()
        .unwrap();
    assert!(version.get_object_id("clusterId").is_ok(), "{version}");
}

#[tokio::test]
async fn hashed_collection_spreads_over_three_shards() {
    let cluster = Cluster::start(ClusterOptions::new().shards(3)).unwrap();
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    admin
        .run_command(doc! {"enableSharding": "app", "primaryShard": "shard01"})
        .await
        .unwrap();
    let reply = admin
        .run_command(doc! {"shardCollection": "app.users", "key": {"uid": "hashed"}})
        .await
        .unwrap();
    assert_eq!(reply.get_str("collectionsharded"), Ok("app.users"));
    // 2 chunks per shard, split points symmetric around 0 (SRV initial_split_policy.cpp)
    let cfg = client(&cluster.config_uri()).await;
    let coll_doc = cfg
        .database("config")
        .collection::<Document>("collections")
        .find_one(doc! {"_id": "app.users"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        coll_doc.get_document("key").unwrap(),
        &doc! {"uid": "hashed"}
    );
    let uuid = coll_doc.get("uuid").unwrap().clone();
    let chunks: Vec<Document> = cfg
        .database("config")
        .collection::<Document>("chunks")
        .find(doc! {"uuid": uuid.clone()})
        .sort(doc! {"min": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(chunks.len(), 6);
    let owners: Vec<&str> = chunks.iter().map(|c| c.get_str("shard").unwrap()).collect();
    for s in ["shard01", "shard02", "shard03"] {
        assert_eq!(owners.iter().filter(|o| **o == s).count(), 2, "{owners:?}");
    }
    assert_eq!(
        chunks[0].get_document("min").unwrap(),
        &doc! {"uid": Bson::MinKey}
    );
    let users = c.database("app").collection::<Document>("users");
    let docs: Vec<Document> = (0..60)
        .map(|i| doc! {"_id": i, "uid": i, "v": i % 7})
        .collect();
    users.insert_many(docs).await.unwrap();
    // Every shard got documents, each exactly where its hashed key's chunk lives.
    let mut total = 0;
    for i in 0..3 {
        let direct = client(&cluster.shard_uri(i)).await;
        let held: Vec<Document> = direct
            .database("app")
            .collection::<Document>("users")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(!held.is_empty(), "shard {i} holds nothing");
        total += held.len();
        let entries = oplog(&cluster.shard_uri(i)).await;
        let inserts: Vec<&Document> = oplog_entries(&entries, "app.users", "i").collect();
        assert_eq!(inserts.len(), held.len());
        // documentKey: shard key fields first, then _id (reference §4.1)
        let o2 = inserts[0].get_document("o2").unwrap();
        assert_eq!(o2.keys().collect::<Vec<_>>(), vec!["uid", "_id"]);
        // one UUID on every shard
        assert_eq!(inserts[0].get("ui").unwrap(), &uuid);
    }
    assert_eq!(total, 60);
    merged_reads_and_routed_writes(&users).await;
}

/// Reads merged across shards, writes targeted by shard key (or not).
async fn merged_reads_and_routed_writes(users: &mongodb::Collection<Document>) {
    // Merged reads: sort, skip, limit, projection across shards.
    let opts = FindOptions::builder()
        .sort(doc! {"v": -1, "_id": 1})
        .skip(3)
        .limit(10)
        .projection(doc! {"v": 1})
        .batch_size(4)
        .build();
    let got: Vec<Document> = users
        .find(doc! {"v": {"$gte": 2}})
        .with_options(opts)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut want: Vec<(i32, i32)> = (0..60).filter(|i| i % 7 >= 2).map(|i| (i % 7, i)).collect();
    want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let want: Vec<Document> = want
        .into_iter()
        .skip(3)
        .take(10)
        .map(|(v, i)| doc! {"_id": i, "v": v})
        .collect();
    assert_eq!(got, want);
    assert_eq!(users.count_documents(doc! {"v": 3}).await.unwrap(), 9);
    assert_eq!(users.estimated_document_count().await.unwrap(), 60);
    let mut distinct = users.distinct("v", doc! {}).await.unwrap();
    distinct.sort_by_key(|b| b.as_i32());
    assert_eq!(distinct.len(), 7);
    // Targeted single-document writes.
    let r = users
        .update_one(doc! {"uid": 5}, doc! {"$set": {"touched": true}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    // 7.0: a single update without the shard key finds its document on any shard
    let r = users
        .update_one(doc! {"_id": 17}, doc! {"$set": {"touched": true}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    let r = users
        .update_many(doc! {"v": 0}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 9);
    let r = users.delete_many(doc! {"v": 6}).await.unwrap();
    assert_eq!(r.deleted_count, 8);
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 52);
    let got = users
        .find_one_and_update(doc! {"uid": 8}, doc! {"$set": {"f": 1}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.get_i32("_id"), Ok(8));
}

#[tokio::test]
async fn ranged_collection_and_unsharded_collections_on_the_primary() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2)).unwrap();
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    // 7.0: shardCollection creates the database; one chunk on the primary shard
    admin
        .run_command(doc! {"shardCollection": "shop.orders", "key": {"region": 1, "_id": 1}})
        .await
        .unwrap();
    let orders = c.database("shop").collection::<Document>("orders");
    orders
        .insert_many((0..10).map(|i| doc! {"_id": i, "region": if i % 2 == 0 {"eu"} else {"us"}}))
        .await
        .unwrap();
    let db_doc = client(&cluster.config_uri())
        .await
        .database("config")
        .collection::<Document>("databases")
        .find_one(doc! {"_id": "shop"})
        .await
        .unwrap()
        .unwrap();
    let primary = db_doc.get_str("primary").unwrap().to_string();
    let version = db_doc.get_document("version").unwrap();
    assert!(version.get_timestamp("timestamp").is_ok() && version.contains_key("uuid"));
    let primary_idx = if primary == "shard01" { 0 } else { 1 };
    let other_idx = 1 - primary_idx;
    let on_primary = client(&cluster.shard_uri(primary_idx))
        .await
        .database("shop")
        .collection::<Document>("orders")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(on_primary, 10);
    // An unsharded collection lives on the database's primary shard only.
    c.database("shop")
        .collection::<Document>("plain")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap();
    let elsewhere = client(&cluster.shard_uri(other_idx))
        .await
        .database("shop")
        .list_collection_names()
        .await
        .unwrap();
    assert!(!elsewhere.contains(&"plain".to_string()), "{elsewhere:?}");
    let entries = oplog(&cluster.shard_uri(primary_idx)).await;
    let delete_key = {
        orders
            .delete_one(doc! {"region": "us", "_id": 3})
            .await
            .unwrap();
        let entries = oplog(&cluster.shard_uri(primary_idx)).await;
        let o = oplog_entries(&entries, "shop.orders", "d")
            .next()
            .unwrap()
            .get_document("o")
            .unwrap()
            .clone();
        o
    };
    assert_eq!(delete_key, doc! {"region": "us", "_id": 3});
    let noop = entries
        .iter()
        .find(|e| e.get_str("op") == Ok("n") && e.get_str("ns") == Ok("shop.orders"))
        .expect("shardCollection no-op on the primary shard");
    assert_eq!(
        noop.get_document("o2")
            .unwrap()
            .get_document("shardKey")
            .unwrap(),
        &doc! {"region": 1, "_id": 1}
    );
}

#[tokio::test]
async fn cursors_belong_to_their_router() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2).routers(2)).unwrap();
    let c0 = client(&cluster.router_uri(0)).await;
    let c1 = client(&cluster.router_uri(1)).await;
    c0.database("admin")
        .run_command(doc! {"shardCollection": "t.c", "key": {"k": "hashed"}})
        .await
        .unwrap();
    let coll = c0.database("t").collection::<Document>("c");
    coll.insert_many((0..30).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    let reply = c0
        .database("t")
        .run_command(doc! {"find": "c", "batchSize": 5})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let err = c1
        .database("t")
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Cursor not found"), "{err}");
    let more = c0
        .database("t")
        .run_command(doc! {"getMore": id, "collection": "c", "batchSize": 100})
        .await
        .unwrap();
    let cursor = more.get_document("cursor").unwrap();
    assert_eq!(cursor.get_array("nextBatch").unwrap().len(), 25);
    assert_eq!(cursor.get_i64("id"), Ok(0));
    let killed = c0
        .database("t")
        .run_command(doc! {"killCursors": "c", "cursors": [id]})
        .await
        .unwrap();
    assert_eq!(killed.get_array("cursorsNotFound").unwrap().len(), 1);
}

#[tokio::test]
async fn version_44_requires_enable_sharding_and_keys_chunks_by_ns() {
    let cluster =
        Cluster::start(ClusterOptions::new().shards(2).version(ServerVersion::V4_4)).unwrap();
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    let err = admin
        .run_command(doc! {"shardCollection": "d.c", "key": {"a": 1}})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("sharding not enabled for db d"),
        "{err}"
    );
    admin
        .run_command(doc! {"enableSharding": "d"})
        .await
        .unwrap();
    admin
        .run_command(doc! {"shardCollection": "d.c", "key": {"a": 1}})
        .await
        .unwrap();
    let chunk = client(&cluster.config_uri())
        .await
        .database("config")
        .collection::<Document>("chunks")
        .find_one(doc! {"ns": "d.c"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chunk.get_str("_id"), Ok("d.c-a_MinKey"));
    assert!(chunk.get_object_id("lastmodEpoch").is_ok());
}

#[tokio::test]
async fn fail_points_belong_to_their_router() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2).routers(2)).unwrap();
    let c0 = client(&cluster.router_uri(0)).await;
    let c1 = client(&cluster.router_uri(1)).await;
    c0.database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["find"], "errorCode": 2},
        })
        .await
        .unwrap();
    let coll1 = c1.database("f").collection::<Document>("c");
    coll1.find_one(doc! {}).await.unwrap();
    let err = c0
        .database("f")
        .collection::<Document>("c")
        .find_one(doc! {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failCommand"), "{err}");
    // times: 1 is used up; router 1 never fired.
    c0.database("f")
        .collection::<Document>("c")
        .find_one(doc! {})
        .await
        .unwrap();
    let off = c1
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .unwrap();
    assert_eq!(off.get_i32("count"), Ok(0));
}

#[tokio::test]
async fn add_shard_refuses_the_config_server_and_routers() {
    let cluster = Cluster::start(ClusterOptions::new().shards(1).routers(2)).unwrap();
    let c = client(&cluster.router_uri(0)).await;
    let admin = c.database("admin");
    let cfg = cluster.config_server().addr();
    let err = admin
        .run_command(doc! {"addShard": format!("configRepl/{cfg}")})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("config server"), "{err}");
    let other = cluster.routers()[1].addr();
    let err = admin
        .run_command(doc! {"addShard": format!("{other}")})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mongos"), "{err}");
}

#[tokio::test]
async fn coll_stats_through_the_router() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2)).unwrap();
    let c = client(&cluster.uri()).await;
    c.database("admin")
        .run_command(doc! {"shardCollection": "st.h", "key": {"k": "hashed"}})
        .await
        .unwrap();
    let db = c.database("st");
    db.collection::<Document>("h")
        .insert_many((0..40).map(|i| doc! {"_id": i, "k": i}))
        .await
        .unwrap();
    db.collection::<Document>("plain")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap();
    let s = db.run_command(doc! {"collStats": "h"}).await.unwrap();
    assert_eq!(s.get_bool("sharded"), Ok(true));
    assert_eq!(s.get_i64("count"), Ok(40));
    assert_eq!(s.get_document("shards").unwrap().len(), 2);
    assert_eq!(s.get_i32("nchunks"), Ok(4));
    let p = db.run_command(doc! {"collStats": "plain"}).await.unwrap();
    assert_eq!(p.get_bool("sharded"), Ok(false));
    assert!(p.get_str("primary").is_ok(), "{p}");
}
