//! Checkpoint stores: the same behaviour from the memory, file and MongoDB stores (the last
//! against mongosim, or `MONGODB_URI`), and clear errors for what is not a checkpoint.

mod common;

use bson::{doc, Bson, Document, Timestamp};
use common::{unique_db, TestServer};
use mongotail::checkpoint::{
    Checkpoint, CheckpointStore, DirectProgress, FileStore, MemoryStore, MongoStore, OplogProgress,
    RangeProgress,
};
use mongotail::Error;

fn sample(increment: u32) -> Checkpoint {
    let mut cp = Checkpoint::new();
    let ts = Timestamp {
        time: 1_700_000_000,
        increment,
    };
    cp.oplog = Some(OplogProgress::inside(ts, 200));
    let mut range = RangeProgress::new(doc! {"_id": {"$gte": 10, "$lt": 20}});
    range.last_id = Some(Bson::Int32(15));
    let mut direct = DirectProgress::default();
    direct.ranges.push(range);
    cp.direct.insert("shop.users".into(), direct);
    cp.shards.insert("shard01".into(), OplogProgress::new(ts));
    cp
}

/// Save, load, replace and delete, the same on every store.
async fn behaves_as_a_store(store: &dyn CheckpointStore) {
    assert_eq!(store.load("job-1").await.unwrap(), None);
    store.save("job-1", &sample(1)).await.unwrap();
    store.save("job-2", &sample(2)).await.unwrap();
    assert_eq!(store.load("job-1").await.unwrap(), Some(sample(1)));
    store.save("job-1", &sample(3)).await.unwrap();
    assert_eq!(store.load("job-1").await.unwrap(), Some(sample(3)));
    store.delete("job-1").await.unwrap();
    store.delete("job-1").await.unwrap();
    assert_eq!(store.load("job-1").await.unwrap(), None);
    assert_eq!(store.load("job-2").await.unwrap(), Some(sample(2)));
}

#[tokio::test]
async fn memory_store() {
    behaves_as_a_store(&MemoryStore::new()).await;
}

#[tokio::test]
async fn file_store_replaces_atomically_and_refuses_what_is_not_a_checkpoint() {
    let dir = std::env::temp_dir().join(unique_db("checkpoint_files"));
    let store = FileStore::new(&dir).unwrap();
    behaves_as_a_store(&store).await;
    // Nothing but the saved checkpoint is left in the directory (no temporary files).
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["job-2.json".to_string()]);
    for (content, why) in [
        ("{not json", "not a checkpoint"),
        ("[1, 2]", "not a checkpoint"),
        (r#"{"version": {"$numberLong": "99"}}"#, "version 99"),
        (r#"{"oplog": {}}"#, "no version"),
    ] {
        std::fs::write(dir.join("bad.json"), content).unwrap();
        let e = store.load("bad").await.unwrap_err();
        assert!(
            matches!(&e, Error::Checkpoint { name, message } if name == "bad" && message.contains(why)),
            "{content}: {e}"
        );
    }
    for name in ["", "../x", "a/b", ".hidden", "sp ace"] {
        assert!(store.save(name, &sample(1)).await.is_err(), "{name:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn mongo_store_keeps_one_document_per_name() {
    let server = TestServer::start().await;
    let coll = server
        .client
        .database(&unique_db("checkpoints"))
        .collection::<Document>("checkpoints");
    let store = MongoStore::new(coll.clone());
    behaves_as_a_store(&store).await;
    let stored = coll.find_one(doc! {"_id": "job-2"}).await.unwrap().unwrap();
    assert_eq!(
        stored.get_document("checkpoint").unwrap(),
        &sample(2).to_document().unwrap()
    );
    coll.insert_one(doc! {"_id": "foreign", "ts": 1})
        .await
        .unwrap();
    let e = store.load("foreign").await.unwrap_err();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    coll.insert_one(doc! {"_id": "future", "checkpoint": {"version": 7}})
        .await
        .unwrap();
    let e = store.load("future").await.unwrap_err();
    assert!(e.to_string().contains("version 7"), "{e}");
}
