//! Restart from a checkpoint, in process: acknowledged ops are never delivered again, ops
//! not acknowledged are (against mongosim, or `MONGODB_URI`). The kill -9 tests with a
//! child process are in `checkpoint_kill.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use common::{unique_db, TestServer, WAIT};
use futures::StreamExt;
use mongotail::checkpoint::{
    Checkpoint, CheckpointOptions, CheckpointStore, FileStore, MemoryStore, MongoStore,
    OplogProgress, PositionLostPolicy,
};
use mongotail::{
    start, DirectOptions, Error, Namespace, Op, OpStream, OpStreamExt, OplogOptions, StartAt,
    TailOptions,
};

async fn next(ops: &mut (impl futures::Stream<Item = mongotail::Result<Op>> + Unpin)) -> Op {
    tokio::time::timeout(WAIT, ops.next())
        .await
        .expect("an op within the wait")
        .expect("the stream goes on")
        .expect("no error")
}

fn id(op: &Op) -> i32 {
    op.id.as_ref().and_then(Bson::as_i32).expect("an int _id")
}

/// Every store, each under its own name: memory, a file, a collection of the server.
fn stores(server: &TestServer, db: &str) -> Vec<(&'static str, Arc<dyn CheckpointStore>)> {
    let dir = std::env::temp_dir().join(format!("mongotail-{db}"));
    let coll = server.client.database(db).collection("checkpoints");
    vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("file", Arc::new(FileStore::new(dir).unwrap())),
        ("mongo", Arc::new(MongoStore::new(coll))),
    ]
}

fn oplog_of(ns: &Namespace, after: Timestamp) -> OplogOptions {
    OplogOptions::new()
        .start(StartAt::After(after))
        .namespace(ns.clone())
}

#[tokio::test]
async fn acknowledged_ops_are_not_delivered_again_with_every_store() {
    let server = TestServer::start().await;
    let db = unique_db("cp_oplog");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await.unwrap(); // the implicit create, before
    let after = server.latest_ts().await;
    for i in 0..10 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    for (kind, store) in stores(&server, &db) {
        let options = TailOptions::new()
            .oplog(oplog_of(&ns, after))
            .checkpoint_options(CheckpointOptions::shared(store.clone(), "t"));
        let (mut ops, handle) = start(&server.client, options.clone());
        let mut first: Vec<Op> = Vec::new();
        for _ in 0..6 {
            first.push(next(&mut ops).await);
        }
        // Out of order, from other tasks; ops 3 and 5 are never acknowledged.
        for i in [2, 0, 4, 1] {
            let ack = first[i].take_ack().expect("ops carry an ack");
            tokio::spawn(async move { ack.ack() }).await.unwrap();
        }
        assert_eq!(handle.outstanding(), 2, "{kind}");
        handle.flush().await.unwrap();
        handle.stop();
        let saved = store.load("t").await.unwrap().expect("saved");
        assert_eq!(
            saved.oplog,
            Some(OplogProgress::new(first[2].timestamp)),
            "{kind}: just before op 3, the oldest not acknowledged"
        );
        let (mut ops, handle) = start(&server.client, options);
        let mut ids = Vec::new();
        for _ in 3..10 {
            ids.push(id(&next(&mut ops).await));
        }
        assert_eq!(ids, (3..10).collect::<Vec<_>>(), "{kind}");
        handle.stop();
    }
}

#[tokio::test]
async fn a_restart_inside_a_transaction_delivers_the_rest_of_it() {
    let server = TestServer::start().await;
    let db = unique_db("cp_txn");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await.unwrap();
    let after = server.latest_ts().await;
    let mut session = server.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    for i in 0..300 {
        coll.insert_one(doc! {"_id": i})
            .session(&mut session)
            .await
            .unwrap();
    }
    session.commit_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 1_000}).await.unwrap();

    let store = MemoryStore::new();
    let options = TailOptions::new()
        .oplog(oplog_of(&ns, after))
        .checkpoint(store.clone(), "txn");
    let (mut ops, handle) = start(&server.client, options.clone());
    for i in 0..25 {
        let mut op = next(&mut ops).await;
        assert_eq!(op.txn.as_ref().map(|t| t.index), Some(i));
        if i <= 20 {
            op.ack();
        }
    }
    handle.flush().await.unwrap();
    handle.stop();
    let saved = store.load("txn").await.unwrap().unwrap().oplog.unwrap();
    assert_eq!(saved.index, Some(20), "inside the transaction, after op 20");

    let (mut ops, handle) = start(&server.client, options);
    for i in 21..300 {
        let op = next(&mut ops).await;
        assert_eq!(op.txn.as_ref().map(|t| t.index), Some(i), "{op:?}");
        assert_eq!(id(&op), i as i32);
    }
    assert_eq!(id(&next(&mut ops).await), 1_000, "then what came after it");
    handle.stop();
}

#[tokio::test]
async fn change_streams_resume_after_the_last_acknowledged_event() {
    let server = TestServer::start().await;
    let db = unique_db("cp_cs");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await.unwrap();
    let after = server.latest_ts().await;
    for i in 0..8 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let store = MemoryStore::new();
    let options = TailOptions::new()
        .watch(ns.clone())
        .start(StartAt::After(after))
        .checkpoint(store.clone(), "cs");
    let (mut ops, handle) = start(&server.client, options.clone());
    for i in 0..5 {
        let mut op = next(&mut ops).await;
        assert_eq!(id(&op), i);
        if i < 3 {
            op.ack();
        }
    }
    handle.flush().await.unwrap();
    handle.stop();
    let saved = store.load("cs").await.unwrap().unwrap();
    assert!(
        saved.change_streams.contains_key(&ns.to_string()),
        "{saved:?}"
    );
    let (mut ops, handle) = start(&server.client, options);
    for i in 3..8 {
        assert_eq!(id(&next(&mut ops).await), i);
    }
    handle.stop();
}

async fn read_n(ops: &mut OpStream, n: usize, ack: bool) -> Vec<i32> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut op = next(ops).await;
        out.push(id(&op));
        if ack {
            op.ack();
        }
    }
    out
}

#[tokio::test]
async fn direct_reads_continue_their_unfinished_ranges_and_skip_finished_collections() {
    let server = TestServer::start().await;
    let db = unique_db("cp_direct");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_many((0..3_000).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let store = MemoryStore::new();
    let direct = DirectOptions::new()
        .namespace(ns)
        .split_max(4)
        .split_min_docs(100)
        .batch_size(50);
    let options = TailOptions::new()
        .disable_oplog()
        .direct(direct)
        .checkpoint(store.clone(), "d");
    let (mut ops, handle) = start(&server.client, options.clone());
    let mut seen = read_n(&mut ops, 1_000, true).await;
    handle.flush().await.unwrap();
    handle.stop();
    let saved = store.load("d").await.unwrap().unwrap();
    let progress = saved.direct.values().next().expect("direct progress");
    assert!(
        !progress.finished && progress.ranges.len() > 1,
        "{progress:?}"
    );

    let (ops, handle) = start(&server.client, options.clone());
    let rest: Vec<Op> = ops.map(|op| op.unwrap()).collect().await;
    handle.flush().await.unwrap();
    let rest_ids: Vec<i32> = rest.iter().map(id).collect();
    assert_eq!(
        rest_ids.len(),
        2_000,
        "every acknowledged document is skipped"
    );
    seen.extend(rest_ids);
    seen.sort_unstable();
    assert_eq!(seen, (0..3_000).collect::<Vec<_>>());
    // The rest were never acknowledged: the ranges are read to their end, but not done.
    let saved = store.load("d").await.unwrap().unwrap();
    assert!(!saved.direct.values().next().unwrap().finished);

    let (ops, handle) = start(&server.client, options.clone());
    let mut again: Vec<Op> = ops.map(|op| op.unwrap()).collect().await;
    assert_eq!(again.len(), 2_000, "unacknowledged documents come again");
    again.iter_mut().for_each(Op::ack);
    handle.flush().await.unwrap();
    assert!(store
        .load("d")
        .await
        .unwrap()
        .unwrap()
        .direct
        .values()
        .all(|d| d.finished));
    let (ops, _handle) = start(&server.client, options);
    assert_eq!(
        ops.count().await,
        0,
        "a finished collection is not read again"
    );
}

#[tokio::test]
async fn sources_wait_while_too_many_ops_are_not_acknowledged() {
    let server = TestServer::start().await;
    let db = unique_db("cp_room");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": -1}).await.unwrap();
    let after = server.latest_ts().await;
    for i in 0..10 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let checkpoint = CheckpointOptions::new(MemoryStore::new(), "room").max_outstanding(3);
    let options = TailOptions::new()
        .oplog(oplog_of(&ns, after))
        .checkpoint_options(checkpoint);
    let (mut ops, handle) = start(&server.client, options);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut ops).await);
    }
    // Nothing more while three wait (an op arriving here would be the failure).
    let more = tokio::time::timeout(Duration::from_millis(300), ops.next()).await;
    assert!(more.is_err(), "a fourth op was delivered: {more:?}");
    held[1].ack();
    assert_eq!(id(&next(&mut ops).await), 3, "an ack makes room");
    handle.stop();
}

#[tokio::test]
async fn adapters_acknowledge_the_ops_they_drop() {
    let server = TestServer::start().await;
    let db = unique_db("cp_filter");
    let coll = server.client.database(&db).collection::<Document>("c");
    let other = server.client.database(&db).collection::<Document>("other");
    coll.insert_one(doc! {"_id": -1}).await.unwrap();
    other.insert_one(doc! {"_id": -1}).await.unwrap();
    let after = server.latest_ts().await;
    for i in 0..5 {
        other.insert_one(doc! {"_id": i}).await.unwrap();
    }
    coll.insert_one(doc! {"_id": 7}).await.unwrap();
    let store = MemoryStore::new();
    let oplog = OplogOptions::new()
        .start(StartAt::After(after))
        .namespace(Namespace::database(db.clone()).unwrap());
    let options = TailOptions::new()
        .oplog(oplog)
        .checkpoint_options(CheckpointOptions::new(store.clone(), "f").max_outstanding(2));
    let (ops, handle) = start(&server.client, options);
    // With room for 2 outstanding ops, 5 dropped ones would stall the stream if the
    // filter did not acknowledge them.
    let mut ops = ops.filter_ns(|ns, _| ns.coll() == "c");
    let mut op = next(&mut ops).await;
    assert_eq!(id(&op), 7);
    op.ack();
    handle.flush().await.unwrap();
    let saved = store.load("f").await.unwrap().unwrap().oplog.unwrap();
    assert_eq!(saved.ts, op.timestamp);
    handle.stop();
}

#[tokio::test]
async fn an_unreadable_checkpoint_is_an_error_never_a_fresh_start() {
    let server = TestServer::start().await;
    let dir = std::env::temp_dir().join(format!("mongotail-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.json"), r#"{"something": "else"}"#).unwrap();
    let options = TailOptions::new().checkpoint(FileStore::new(&dir).unwrap(), "bad");
    let (mut ops, _handle) = start(&server.client, options);
    let first = tokio::time::timeout(WAIT, ops.next()).await.unwrap();
    assert!(
        matches!(&first, Some(Err(Error::Checkpoint { name, .. })) if name == "bad"),
        "{first:?}"
    );
    assert!(ops.next().await.is_none(), "and nothing is read");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_lost_position_fails_or_rereads_the_collections_by_policy() {
    let server = TestServer::start().await;
    let db = unique_db("cp_lost");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let store = MemoryStore::new();
    let mut gone = Checkpoint::new();
    // Older than any oplog entry: the server no longer has it.
    gone.oplog = Some(OplogProgress::new(Timestamp {
        time: 1,
        increment: 1,
    }));
    store.save("lost", &gone).await.unwrap();
    let oplog = OplogOptions::new().namespace(ns.clone());

    let checkpoint = CheckpointOptions::new(store.clone(), "lost");
    let options = TailOptions::new()
        .oplog(oplog.clone())
        .checkpoint_options(checkpoint);
    let (mut ops, _handle) = start(&server.client, options);
    let first = tokio::time::timeout(WAIT, ops.next()).await.unwrap();
    assert!(
        matches!(first, Some(Err(Error::PositionLost { .. }))),
        "{first:?}"
    );

    let checkpoint =
        CheckpointOptions::new(store.clone(), "lost").on_position_lost(PositionLostPolicy::Reread);
    let options = TailOptions::new()
        .oplog(oplog)
        .checkpoint_options(checkpoint);
    let (mut ops, handle) = start(&server.client, options);
    let mut read = Vec::new();
    for _ in 0..5 {
        let mut op = next(&mut ops).await;
        assert!(op.is_source_direct(), "{op:?}");
        read.push(id(&op));
        op.ack();
    }
    read.sort_unstable();
    assert_eq!(read, [0, 1, 2, 3, 4], "the collection is read again");
    coll.insert_one(doc! {"_id": 5}).await.unwrap();
    let mut live = next(&mut ops).await;
    assert!(
        live.is_source_oplog() && id(&live) == 5,
        "then live: {live:?}"
    );
    live.ack();
    handle.flush().await.unwrap();
    let saved = store.load("lost").await.unwrap().unwrap();
    assert_eq!(
        saved.oplog.map(|p| p.ts),
        Some(live.timestamp),
        "a new position is saved"
    );
    assert!(saved.direct.values().all(|d| d.finished), "{saved:?}");
    handle.stop();
}
