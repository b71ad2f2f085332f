//! The oplog source against a server (mongosim, or `MONGODB_URI`).

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document};
use common::{assert_quiet, int_ids, take_ops, unique_db, TestServer};
use futures::stream::{FusedStream, StreamExt};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use mongosim::ServerVersion;
use mongotail::{
    Error, Namespace, OpKind, OplogOptions, OplogStream, Position, RetryPolicy, StartAt,
    UpdateDescription,
};

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

async fn every_entry_kind(version: ServerVersion) {
    let server = TestServer::with(mongosim::Options::new().version(version)).await;
    let db_name = unique_db("kinds");
    let db = server.client.database(&db_name);
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(Namespace::database(&db_name).unwrap()),
    );
    let c = db.collection::<Document>("c");
    c.insert_one(doc! {"_id": 1, "a": 1, "b": 1}).await.unwrap();
    c.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"a": 2}, "$unset": {"b": ""}},
    )
    .await
    .unwrap();
    c.replace_one(doc! {"_id": 1}, doc! {"x": "new"})
        .await
        .unwrap();
    c.delete_one(doc! {"_id": 1}).await.unwrap();
    c.create_index(
        IndexModel::builder()
            .keys(doc! {"x": 1})
            .options(IndexOptions::builder().name("x_1".to_owned()).build())
            .build(),
    )
    .await
    .unwrap();
    server
        .client
        .database("admin")
        .run_command(
            doc! {"renameCollection": format!("{db_name}.c"), "to": format!("{db_name}.d")},
        )
        .await
        .unwrap();
    db.collection::<Document>("d").drop().await.unwrap();
    db.collection::<Document>("e")
        .insert_one(doc! {"_id": 9})
        .await
        .unwrap();
    db.drop().await.unwrap();

    let got = take_ops(&mut ops, 12).await;
    let kinds: Vec<OpKind> = got.iter().map(|o| o.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            OpKind::Create,
            OpKind::Insert,
            OpKind::Update,
            OpKind::Replace,
            OpKind::Delete,
            OpKind::Command("createIndexes".into()),
            OpKind::Rename {
                to: ns(&format!("{db_name}.d"))
            },
            OpKind::DropCollection,
            OpKind::Create,
            OpKind::Insert,
            OpKind::DropCollection,
            OpKind::DropDatabase,
        ],
        "{got:#?}"
    );
    assert_eq!(got[0].namespace, ns(&format!("{db_name}.c")));
    assert_eq!(got[1].data, Some(doc! {"_id": 1, "a": 1, "b": 1}));
    assert_eq!(got[1].id, Some(Bson::Int32(1)));
    assert_eq!(
        got[2].update,
        Some(UpdateDescription::new(
            doc! {"a": 2},
            vec!["b".into()],
            vec![]
        ))
    );
    assert!(got[2].data.is_none() && got[2].needs_fetch());
    assert_eq!(got[3].data, Some(doc! {"_id": 1, "x": "new"}));
    assert_eq!(got[4].document_key, Some(doc! {"_id": 1}));
    assert_eq!(got[6].namespace, ns(&format!("{db_name}.c")));
    assert_eq!(got[7].namespace, ns(&format!("{db_name}.d")));
    assert_eq!(got[10].namespace, ns(&format!("{db_name}.e")));
    assert_eq!(got[11].namespace.to_string(), db_name);
    // Strictly increasing timestamps, positions = ts, wall time present.
    for w in got.windows(2) {
        assert!(w[0].timestamp < w[1].timestamp);
    }
    for op in &got {
        assert_eq!(op.position, Position::Oplog(op.timestamp));
        assert!(op.wall_time.is_some() && op.is_source_oplog() && op.txn.is_none());
    }
    assert_eq!(ops.position(), Some(got[11].timestamp));
}

#[tokio::test]
async fn every_entry_kind_7_0() {
    every_entry_kind(ServerVersion::V7_0).await;
}

#[tokio::test]
async fn every_entry_kind_4_4() {
    every_entry_kind(ServerVersion::V4_4).await;
}

async fn array_updates(version: ServerVersion) -> (Vec<mongotail::Op>, i32) {
    let server = TestServer::with(mongosim::Options::new().version(version)).await;
    let major = common::server_major(&server.client).await;
    let db_name = unique_db("arrays");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let big = "x".repeat(64);
    c.insert_one(doc! {"_id": 1, "arr": [&big, &big, &big, &big], "sub": {"x": 1}})
        .await
        .unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(ns(&format!("{db_name}.c"))),
    );
    c.update_one(doc! {"_id": 1}, doc! {"$set": {"arr.1": 20, "sub.y": 2}})
        .await
        .unwrap();
    // A pipeline update shrinking the array (reference §4.5: `{sarr: {a: true, l: 3}}`).
    c.update_one(
        doc! {"_id": 1},
        vec![doc! {"$set": {"arr": {"$slice": ["$arr", 3]}}}],
    )
    .await
    .unwrap();
    (take_ops(&mut ops, 2).await, major)
}

/// `$v: 2` servers (5.0+) log array diffs; 4.4 logs `$set` paths and pipeline updates as
/// replacements (reference §4.4, §4.5).
async fn assert_array_updates(version: ServerVersion) {
    let (ops, major) = array_updates(version).await;
    let u0 = ops[0].update.as_ref().unwrap();
    // {sarr: {a: true, u1: 20}, ssub: {i: {y: 2}}} or {$set: {arr.1: 20, sub.y: 2}}
    assert_eq!(u0.updated_fields, doc! {"arr.1": 20, "sub.y": 2});
    assert!(u0.removed_fields.is_empty() && u0.truncated_arrays.is_empty());
    if major >= 5 {
        // {sarr: {a: true, l: 3}}
        let u1 = ops[1].update.as_ref().unwrap();
        assert!(ops[1].is_update());
        assert!(u1.updated_fields.is_empty() && u1.removed_fields.is_empty());
        assert_eq!(u1.truncated_arrays.len(), 1);
        assert_eq!(u1.truncated_arrays[0].field, "arr");
        assert_eq!(u1.truncated_arrays[0].new_size, 3);
    } else {
        assert!(ops[1].is_replace());
        let big = "x".repeat(64);
        assert_eq!(
            ops[1].data,
            Some(doc! {"_id": 1, "arr": [&big, 20, &big], "sub": {"x": 1, "y": 2}})
        );
    }
}

#[tokio::test]
async fn array_and_nested_updates_7_0() {
    assert_array_updates(ServerVersion::V7_0).await;
}

#[tokio::test]
async fn array_and_nested_updates_4_4() {
    assert_array_updates(ServerVersion::V4_4).await;
}

#[tokio::test]
async fn update_data_as_delta_carries_the_raw_update() {
    let server = TestServer::start().await;
    let db_name = unique_db("delta");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .update_data_as_delta(true)
            .namespace(ns(&format!("{db_name}.c"))),
    );
    c.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 5}})
        .await
        .unwrap();
    let op = take_ops(&mut ops, 1).await.remove(0);
    let delta = op.delta.clone().expect("delta");
    assert_eq!(op.data, Some(delta.clone()));
    assert!(delta.contains_key("$v"));
    assert!(!op.needs_fetch());
}

#[tokio::test]
async fn transactions_committed_and_aborted_7_0() {
    transactions_committed_and_aborted(ServerVersion::V7_0).await;
}

#[tokio::test]
async fn transactions_committed_and_aborted_4_4() {
    transactions_committed_and_aborted(ServerVersion::V4_4).await;
}

async fn transactions_committed_and_aborted(version: ServerVersion) {
    let server = TestServer::with(mongosim::Options::new().version(version)).await;
    let db_name = unique_db("txn");
    let db = server.client.database(&db_name);
    let c = db.collection::<Document>("c");
    let other = db.collection::<Document>("other");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    other.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(ns(&format!("{db_name}.c"))),
    );

    let mut s = server.client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    c.insert_one(doc! {"_id": 1}).session(&mut s).await.unwrap();
    other
        .insert_one(doc! {"_id": 1})
        .session(&mut s)
        .await
        .unwrap();
    c.update_one(doc! {"_id": 0}, doc! {"$set": {"t": 1}})
        .session(&mut s)
        .await
        .unwrap();
    c.delete_one(doc! {"_id": 1}).session(&mut s).await.unwrap();
    s.commit_transaction().await.unwrap();

    s.start_transaction().await.unwrap();
    c.insert_one(doc! {"_id": 2}).session(&mut s).await.unwrap();
    s.abort_transaction().await.unwrap();
    c.insert_one(doc! {"_id": 3}).await.unwrap();

    let got = take_ops(&mut ops, 4).await;
    let kinds: Vec<_> = got.iter().map(|o| o.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            OpKind::Insert,
            OpKind::Update,
            OpKind::Delete,
            OpKind::Insert
        ]
    );
    // The op on `other` (index 1) is filtered out but still counted.
    let idx: Vec<_> = got[..3]
        .iter()
        .map(|o| o.txn.as_ref().unwrap().index)
        .collect();
    assert_eq!(idx, vec![0, 2, 3]);
    let txn = got[0].txn.as_ref().unwrap();
    assert!(txn.lsid.is_some());
    assert!(txn.txn_number.is_some());
    assert!(got[..3].iter().all(|o| o.timestamp == got[0].timestamp));
    assert_eq!(got[3].id, Some(Bson::Int32(3)), "aborted insert leaked");
    assert!(got[3].txn.is_none());
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn large_transaction_spanning_several_entries() {
    let server = TestServer::start().await;
    let db_name = unique_db("bigtxn");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(ns(&format!("{db_name}.c"))),
    );
    // 24 documents of 1 MiB: more than one 16 MiB applyOps entry (reference §6).
    let blob = "x".repeat(1 << 20);
    let mut s = server.client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    for i in 1..=24 {
        c.insert_one(doc! {"_id": i, "blob": &blob})
            .session(&mut s)
            .await
            .unwrap();
    }
    s.commit_transaction().await.unwrap();
    let got = take_ops(&mut ops, 24).await;
    assert_eq!(int_ids(&got), (1..=24).collect::<Vec<_>>());
    let idx: Vec<u32> = got.iter().map(|o| o.txn.as_ref().unwrap().index).collect();
    assert_eq!(idx, (0..24).collect::<Vec<u32>>());
    assert!(got.iter().all(|o| o.timestamp == got[23].timestamp));
    let partial = server
        .client
        .database("local")
        .collection::<Document>("oplog.rs")
        .count_documents(doc! {"ts": {"$gt": start}, "o.partialTxn": true})
        .await
        .unwrap();
    assert!(partial >= 1, "the transaction was not split");

    // Starting after the first `partialTxn` entry: the earlier part is fetched through the
    // `prevOpTime` chain, nothing is lost.
    let first_partial = server
        .client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {"ts": {"$gt": start}, "o.partialTxn": true})
        .sort(doc! {"$natural": 1})
        .await
        .unwrap()
        .unwrap()
        .get_timestamp("ts")
        .unwrap();
    let mut mid = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(first_partial)
            .namespace(ns(&format!("{db_name}.c"))),
    );
    let again = take_ops(&mut mid, 24).await;
    assert_eq!(int_ids(&again), (1..=24).collect::<Vec<_>>());
}

#[tokio::test]
async fn batched_deletes_are_unwound() {
    let server = TestServer::with(mongosim::Options::new().batched_deletes(true)).await;
    let db_name = unique_db("batched");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_many((0..10).map(|i| doc! {"_id": i, "k": i % 2}))
        .await
        .unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(ns(&format!("{db_name}.c"))),
    );
    c.delete_many(doc! {"k": 0}).await.unwrap();
    let got = take_ops(&mut ops, 5).await;
    assert!(got.iter().all(|o| o.is_delete()));
    let mut ids = int_ids(&got);
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 2, 4, 6, 8]);
}

#[tokio::test]
async fn namespace_filter_and_skipped_entries() {
    let server = TestServer::start().await;
    let db_name = unique_db("filter");
    let db = server.client.database(&db_name);
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(ns(&format!("{db_name}.keep"))),
    );
    db.collection::<Document>("skip")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    db.collection::<Document>("keep")
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap();
    server
        .client
        .database(&unique_db("elsewhere"))
        .collection::<Document>("keep")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    db.collection::<Document>("keep")
        .insert_one(doc! {"_id": 4})
        .await
        .unwrap();
    let got = take_ops(&mut ops, 3).await;
    assert_eq!(got[0].kind, OpKind::Create);
    assert_eq!(int_ids(&got[1..]), vec![2, 4]);
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn start_latest_and_earliest() {
    let server = TestServer::start().await;
    let db_name = unique_db("start");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let filter = Namespace::parse(&format!("{db_name}.c")).unwrap();

    let mut latest = OplogStream::new(
        &server.client,
        OplogOptions::new().namespace(filter.clone()),
    );
    let mut earliest = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start(StartAt::Earliest)
            .namespace(filter.clone()),
    );
    // Resolve the latest start point before writing.
    assert_quiet(&mut latest, Duration::from_millis(200)).await;
    c.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(int_ids(&take_ops(&mut latest, 1).await), vec![2]);
    let got = take_ops(&mut earliest, 3).await;
    assert_eq!(got[0].kind, OpKind::Create);
    assert_eq!(int_ids(&got[1..]), vec![1, 2]);

    let start_ts = server.latest_ts().await;
    let mut func = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start(StartAt::Func(std::sync::Arc::new(move |_client| {
                Box::pin(async move { Ok(start_ts) })
            })))
            .namespace(filter),
    );
    c.insert_one(doc! {"_id": 3}).await.unwrap();
    assert_eq!(int_ids(&take_ops(&mut func, 1).await), vec![3]);
}

async fn survives_get_more_faults(data: Document) {
    let server = TestServer::start().await;
    let db_name = unique_db("faults");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .max_await_time(Duration::from_millis(100))
            .retry(RetryPolicy::new(
                Duration::from_millis(10),
                Duration::from_millis(100),
                10,
            ))
            .namespace(ns(&format!("{db_name}.c"))),
    );
    for i in 1..=5 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    assert_eq!(int_ids(&take_ops(&mut ops, 5).await), vec![1, 2, 3, 4, 5]);
    let mut data = data;
    data.insert("failCommands", vec!["getMore"]);
    server.fail_command(doc! {"times": 2}.into(), data).await;
    for i in 6..=10 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    assert_eq!(int_ids(&take_ops(&mut ops, 5).await), vec![6, 7, 8, 9, 10]);
    server.fail_off().await;
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn retries_get_more_error_codes_without_loss_or_repeat() {
    survives_get_more_faults(doc! {"errorCode": 91}).await; // ShutdownInProgress
}

#[tokio::test]
async fn retries_cursor_not_found_and_interrupted() {
    survives_get_more_faults(doc! {"errorCode": 43}).await;
    survives_get_more_faults(doc! {"errorCode": 11601}).await;
}

#[tokio::test]
async fn retries_closed_connections_without_loss_or_repeat() {
    survives_get_more_faults(doc! {"closeConnection": true}).await;
}

#[tokio::test]
async fn non_transient_error_ends_the_stream() {
    let server = TestServer::start().await;
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .max_await_time(Duration::from_millis(100)),
    );
    server
        .fail_command(
            doc! {"times": 1}.into(),
            doc! {"failCommands": ["find"], "errorCode": 2},
        )
        .await;
    let first = tokio::time::timeout(common::WAIT, ops.next())
        .await
        .unwrap();
    match first {
        Some(Err(e @ Error::Driver(_))) => {
            assert_eq!(e.code(), Some(2));
            assert!(!e.is_resumable());
        }
        other => panic!("expected the driver error, got {other:?}"),
    }
    assert!(ops.next().await.is_none());
    assert!(ops.is_terminated() && ops.next().await.is_none());
}

#[tokio::test]
async fn history_loss_is_a_typed_error() {
    if common::external_server("needs a 256 KiB oplog") {
        return;
    }
    let server = TestServer::with(mongosim::Options::new().oplog_size_bytes(256 * 1024)).await;
    let db_name = unique_db("lost");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(&server.client, OplogOptions::new().start_after(start));
    let blob = "y".repeat(16 * 1024);
    for i in 1..=64 {
        c.insert_one(doc! {"_id": i, "blob": &blob}).await.unwrap();
    }
    // 1 MiB written into a 256 KiB oplog: `start` is gone.
    match tokio::time::timeout(common::WAIT, ops.next())
        .await
        .unwrap()
    {
        Some(Err(Error::PositionLost { position, .. })) => {
            assert_eq!(position, Position::Oplog(start));
        }
        other => panic!("expected PositionLost, got {other:?}"),
    }
    assert!(ops.next().await.is_none(), "the stream must end");
}

#[tokio::test]
async fn seek_moves_the_stream() {
    let server = TestServer::start().await;
    let db_name = unique_db("seek");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .namespace(ns(&format!("{db_name}.c"))),
    );
    for i in 1..=3 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let got = take_ops(&mut ops, 3).await;
    assert_eq!(int_ids(&got), vec![1, 2, 3]);
    ops.control().seek(got[0].timestamp);
    assert_eq!(int_ids(&take_ops(&mut ops, 2).await), vec![2, 3]);
}

#[tokio::test]
async fn capped_position_lost_on_get_more_ends_the_stream() {
    let server = TestServer::start().await;
    let db_name = unique_db("lost136");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .max_await_time(Duration::from_millis(100))
            .namespace(ns(&format!("{db_name}.c"))),
    );
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let first = take_ops(&mut ops, 1).await.remove(0);
    server
        .fail_command(
            doc! {"times": 1}.into(),
            doc! {"failCommands": ["getMore"], "errorCode": 136},
        )
        .await;
    c.insert_one(doc! {"_id": 2}).await.unwrap();
    match tokio::time::timeout(common::WAIT, ops.next())
        .await
        .unwrap()
    {
        Some(Err(Error::PositionLost { position, code, .. })) => {
            assert_eq!(code, 136);
            assert_eq!(position, Position::Oplog(first.timestamp));
        }
        other => panic!("expected PositionLost, got {other:?}"),
    }
    assert!(
        ops.next().await.is_none(),
        "the stream must end, never jump ahead"
    );
}

#[tokio::test]
async fn idle_position_advances_with_no_op_entries() {
    let server =
        TestServer::with(mongosim::Options::new().noop_interval(Duration::from_millis(200))).await;
    let db_name = unique_db("idle");
    let start = server.latest_ts().await;
    let mut ops = OplogStream::new(
        &server.client,
        OplogOptions::new()
            .start_after(start)
            .max_await_time(Duration::from_millis(100))
            .namespace(ns(&format!("{db_name}.c"))),
    );
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        assert_quiet(&mut ops, Duration::from_millis(100)).await;
        if ops.position().is_some_and(|p| p > start) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "position never moved past {start}"
        );
    }
}

#[tokio::test]
async fn standalone_has_no_oplog() {
    if common::external_server("needs a standalone server") {
        return;
    }
    let server = TestServer::with(mongosim::Options::new().standalone()).await;
    let mut ops = OplogStream::new(&server.client, OplogOptions::new());
    match tokio::time::timeout(common::WAIT, ops.next())
        .await
        .unwrap()
    {
        Some(Err(Error::NotReplicaSet(_))) => {}
        other => panic!("expected NotReplicaSet, got {other:?}"),
    }
    assert!(ops.next().await.is_none());
}
