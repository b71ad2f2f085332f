//! Chunk migrations through the official driver: `split`, `moveChunk` with and without
//! `_waitForDelete`, the `fromMigrate` entries on both shards and the donor's
//! `migrateChunkToNewShard` no-op, orphans hidden from routed reads and writes, change
//! streams on the shards blind to migrations, `removeShard` draining, a shard added at run
//! time receiving a chunk (reference sharded-clusters.md §4.2–§4.5).

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Client;
use mongosim::{Cluster, ClusterOptions};

async fn client(uri: &str) -> Client {
    Client::with_uri_str(uri).await.expect("client")
}

async fn oplog(uri: &str, ns: &str) -> Vec<Document> {
    client(uri)
        .await
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"$or": [{"ns": ns}, {"o.create": {"$exists": true}}]})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn from_migrate(e: &Document) -> bool {
    e.get_bool("fromMigrate") == Ok(true)
}

/// Index of the shard named `name` (`shard01` -> 0).
fn idx(name: &str) -> usize {
    name.trim_start_matches("shard").parse::<usize>().unwrap() - 1
}

async fn ranged_setup(cluster: &Cluster) -> (Client, String, String) {
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    admin
        .run_command(doc! {"enableSharding": "m", "primaryShard": "shard01"})
        .await
        .unwrap();
    admin
        .run_command(doc! {"shardCollection": "m.c", "key": {"k": 1}})
        .await
        .unwrap();
    let coll = c.database("m").collection::<Document>("c");
    coll.insert_many((0..20).map(|i| doc! {"_id": i, "k": i, "tag": "orig"}))
        .await
        .unwrap();
    admin
        .run_command(doc! {"split": "m.c", "middle": {"k": 10}})
        .await
        .unwrap();
    (c, "shard01".into(), "shard02".into())
}

#[tokio::test]
async fn move_chunk_with_wait_for_delete_logs_migration_entries_on_both_shards() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2)).unwrap();
    let (c, donor, recipient) = ranged_setup(&cluster).await;
    // A change stream straight on each shard, opened before the move.
    let donor_client = client(&cluster.shard_uri(idx(&donor))).await;
    let recipient_client = client(&cluster.shard_uri(idx(&recipient))).await;
    let mut donor_stream = donor_client.watch().await.unwrap();
    let mut recipient_stream = recipient_client.watch().await.unwrap();
    let reply = c
        .database("admin")
        .run_command(doc! {"moveChunk": "m.c", "find": {"k": 15}, "to": recipient.clone(), "_waitForDelete": true})
        .await
        .unwrap();
    assert!(reply.get_i64("millis").is_ok(), "{reply}");
    // config.chunks: the upper chunk moved, its major version bumped, history prepended
    let cfg = client(&cluster.config_uri()).await;
    let chunks: Vec<Document> = cfg
        .database("config")
        .collection::<Document>("chunks")
        .find(doc! {})
        .sort(doc! {"min": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].get_str("shard"), Ok(donor.as_str()));
    assert_eq!(chunks[1].get_str("shard"), Ok(recipient.as_str()));
    assert_eq!(chunks[1].get_timestamp("lastmod").unwrap().time, 2);
    let history = chunks[1].get_array("history").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0].as_document().unwrap().get_str("shard"),
        Ok(recipient.as_str())
    );
    // Recipient: create + ten inserts, every one fromMigrate.
    let rec = oplog(&cluster.shard_uri(idx(&recipient)), "m.c").await;
    let inserts: Vec<&Document> = rec.iter().filter(|e| e.get_str("op") == Ok("i")).collect();
    assert_eq!(inserts.len(), 10);
    assert!(inserts.iter().all(|e| from_migrate(e)));
    let create = rec
        .iter()
        .find(|e| {
            e.get_document("o")
                .is_ok_and(|o| o.get_str("create") == Ok("c"))
        })
        .expect("create on the recipient");
    assert!(from_migrate(create), "{create}");
    // Donor: the first-chunk no-op, then ten fromMigrate deletes (_waitForDelete).
    let don = oplog(&cluster.shard_uri(idx(&donor)), "m.c").await;
    let noop = don
        .iter()
        .find(|e| {
            e.get_str("op") == Ok("n")
                && e.get_document("o2")
                    .is_ok_and(|o| o.contains_key("migrateChunkToNewShard"))
        })
        .expect("migrateChunkToNewShard no-op");
    assert_eq!(
        noop.get_document("o2").unwrap(),
        &doc! {"migrateChunkToNewShard": "m.c", "fromShardId": donor.clone(), "toShardId": recipient.clone()}
    );
    let deletes: Vec<&Document> = don.iter().filter(|e| e.get_str("op") == Ok("d")).collect();
    assert_eq!(deletes.len(), 10);
    assert!(deletes.iter().all(|e| from_migrate(e)));
    assert_eq!(
        donor_client
            .database("m")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap(),
        10
    );
    // Writes after the move go to the new owner; the shards' change streams show them and
    // nothing of the migration.
    let coll = c.database("m").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 100, "k": 17}).await.unwrap();
    coll.insert_one(doc! {"_id": 101, "k": 3}).await.unwrap();
    let ev = recipient_stream.next_if_any().await.unwrap();
    let ev = match ev {
        Some(ev) => ev,
        None => futures::StreamExt::next(&mut recipient_stream)
            .await
            .unwrap()
            .unwrap(),
    };
    assert_eq!(ev.document_key, Some(doc! {"k": 17, "_id": 100}));
    let ev = futures::StreamExt::next(&mut donor_stream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.document_key, Some(doc! {"k": 3, "_id": 101}));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 22);
}

#[tokio::test]
async fn orphans_are_invisible_through_the_router_until_the_range_deleter_runs() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2)).unwrap();
    let (c, donor, recipient) = ranged_setup(&cluster).await;
    c.database("admin")
        .run_command(doc! {"moveChunk": "m.c", "bounds": [{"k": 10}, {"k": Bson::MaxKey}], "to": recipient.clone()})
        .await
        .unwrap();
    let donor_coll = client(&cluster.shard_uri(idx(&donor)))
        .await
        .database("m")
        .collection::<Document>("c");
    // The donor still holds the moved documents (orphans, 900 s cleanup delay).
    assert_eq!(donor_coll.count_documents(doc! {}).await.unwrap(), 20);
    let coll = c.database("m").collection::<Document>("c");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 20);
    assert_eq!(coll.estimated_document_count().await.unwrap(), 20);
    let all: Vec<Document> = coll
        .find(doc! {})
        .sort(doc! {"k": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ks: Vec<i32> = all.iter().map(|d| d.get_i32("k").unwrap()).collect();
    assert_eq!(ks, (0..20).collect::<Vec<_>>());
    assert_eq!(coll.distinct("tag", doc! {}).await.unwrap().len(), 1);
    let found = coll.find_one(doc! {"_id": 15}).await.unwrap().unwrap();
    assert_eq!(found.get_i32("k"), Ok(15));
    // A multi-update through the router touches owned documents only.
    let r = coll
        .update_many(doc! {}, doc! {"$set": {"tag": "new"}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 20);
    let orphan = donor_coll
        .find_one(doc! {"_id": 15})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(orphan.get_str("tag"), Ok("orig"));
    let agg: Vec<Document> = coll
        .aggregate(vec![doc! {"$group": {"_id": null, "n": {"$sum": 1}}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(agg[0].get_i32("n"), Ok(20));
}

#[tokio::test]
async fn remove_shard_drains_its_chunks() {
    let cluster = Cluster::start(ClusterOptions::new().shards(3)).unwrap();
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    admin
        .run_command(doc! {"enableSharding": "r", "primaryShard": "shard01"})
        .await
        .unwrap();
    admin
        .run_command(doc! {"shardCollection": "r.h", "key": {"h": "hashed"}})
        .await
        .unwrap();
    let coll = c.database("r").collection::<Document>("h");
    coll.insert_many((0..90).map(|i| doc! {"_id": i, "h": i}))
        .await
        .unwrap();
    let first = admin
        .run_command(doc! {"removeShard": "shard03"})
        .await
        .unwrap();
    assert_eq!(first.get_str("state"), Ok("started"));
    assert_eq!(first.get_array("dbsToMove").unwrap().len(), 0);
    let shards = admin.run_command(doc! {"listShards": 1}).await.unwrap();
    let s3 = shards
        .get_array("shards")
        .unwrap()
        .iter()
        .filter_map(Bson::as_document)
        .find(|s| s.get_str("_id") == Ok("shard03"))
        .unwrap()
        .clone();
    assert_eq!(s3.get_bool("draining"), Ok(true));
    let done = admin
        .run_command(doc! {"removeShard": "shard03"})
        .await
        .unwrap();
    assert_eq!(done.get_str("state"), Ok("completed"), "{done}");
    let shards = admin.run_command(doc! {"listShards": 1}).await.unwrap();
    assert_eq!(shards.get_array("shards").unwrap().len(), 2);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 90);
    let left = client(&cluster.shard_uri(2))
        .await
        .database("r")
        .collection::<Document>("h")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(left, 0, "drained with _waitForDelete");
}

#[tokio::test]
async fn a_shard_added_at_run_time_receives_a_chunk_and_its_writes() {
    let mut cluster = Cluster::start(ClusterOptions::new().shards(2)).unwrap();
    let (c, _donor, _) = ranged_setup(&cluster).await;
    let name = cluster.add_shard().unwrap();
    assert_eq!(name, "shard03");
    // gtm's shard listener sees a plain insert into config.shards on the config server.
    let inserts = oplog(&cluster.config_uri(), "config.shards").await;
    assert!(inserts.iter().any(|e| e.get_str("op") == Ok("i")
        && e.get_document("o")
            .is_ok_and(|o| o.get_str("_id") == Ok("shard03"))));
    c.database("admin")
        .run_command(doc! {"moveChunk": "m.c", "find": {"k": 12}, "to": "shard03"})
        .await
        .unwrap();
    let coll = c.database("m").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 50, "k": 11}).await.unwrap();
    let entries = oplog(&cluster.shard_uri(2), "m.c").await;
    let user_insert = entries
        .iter()
        .find(|e| e.get_str("op") == Ok("i") && !from_migrate(e))
        .expect("a routed insert on the new shard");
    assert_eq!(
        user_insert.get_document("o2").unwrap(),
        &doc! {"k": 11, "_id": 50}
    );
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 21);
}

#[tokio::test]
async fn writes_during_a_migration_are_caught_up() {
    let cluster = Cluster::start(ClusterOptions::new().shards(2)).unwrap();
    let (c, _donor, recipient) = ranged_setup(&cluster).await;
    let coll = c.database("m").collection::<Document>("c");
    // Writes into the moving range [10, MaxKey) run while the chunk moves.
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                coll.insert_one(doc! {"_id": 1000 + i, "k": 1000 + i})
                    .await
                    .unwrap();
            }
        })
    };
    c.database("admin")
        .run_command(doc! {"moveChunk": "m.c", "find": {"k": 15}, "to": recipient.clone(), "_waitForDelete": true})
        .await
        .unwrap();
    writer.await.unwrap();
    // Nothing was lost: every write is readable through the router and lives on its owner.
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 320);
    let on_recipient = client(&cluster.shard_uri(idx(&recipient)))
        .await
        .database("m")
        .collection::<Document>("c")
        .count_documents(doc! {"k": {"$gte": 10}})
        .await
        .unwrap();
    assert_eq!(on_recipient, 310);
}

#[tokio::test]
async fn remove_shard_completes_after_move_primary() {
    let cluster = Cluster::start(
        ClusterOptions::new()
            .shards(2)
            .noop_interval(std::time::Duration::from_millis(50)),
    )
    .unwrap();
    let c = client(&cluster.uri()).await;
    let admin = c.database("admin");
    admin
        .run_command(doc! {"enableSharding": "p", "primaryShard": "shard02"})
        .await
        .unwrap();
    let plain = c.database("p").collection::<Document>("plain");
    plain
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let started = admin
        .run_command(doc! {"removeShard": "shard02"})
        .await
        .unwrap();
    assert_eq!(
        started.get_array("dbsToMove").unwrap(),
        &vec![Bson::from("p")]
    );
    let ongoing = admin
        .run_command(doc! {"removeShard": "shard02"})
        .await
        .unwrap();
    assert_eq!(ongoing.get_str("state"), Ok("ongoing"));
    let mut stream = c.watch().await.unwrap();
    admin
        .run_command(doc! {"movePrimary": "p", "to": "shard01"})
        .await
        .unwrap();
    let done = admin
        .run_command(doc! {"removeShard": "shard02"})
        .await
        .unwrap();
    assert_eq!(done.get_str("state"), Ok("completed"), "{done}");
    assert_eq!(plain.count_documents(doc! {}).await.unwrap(), 5);
    let drop = client(&cluster.shard_uri(1))
        .await
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {"o.drop": "plain"})
        .await
        .unwrap()
        .expect("the old primary dropped its copy");
    assert!(from_migrate(&drop), "{drop}");
    // The move is invisible: the next event is the next write.
    plain.insert_one(doc! {"_id": 9}).await.unwrap();
    let ev = futures::StreamExt::next(&mut stream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.document_key, Some(doc! {"_id": 9}));
}
