//! The change-stream source against a server (mongosim, or `MONGODB_URI`).

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document};
use common::{assert_quiet, int_ids, take_ops, unique_db, TestServer};
use futures::stream::{FusedStream, StreamExt};
use mongodb::change_stream::event::ResumeToken;
use mongosim::ServerVersion;
use mongotail::source::change_stream::{FullDocumentBeforeChangeType, FullDocumentType};
use mongotail::{
    ChangeStreamOptions, ChangeStreamSource, Error, Namespace, OpKind, Position, RetryPolicy,
    UpdateDescription,
};

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

/// The `_data` string of a resume token (hex KeyString: later tokens sort higher).
fn token_data(token: &ResumeToken) -> Option<String> {
    let doc = bson::to_document(token).ok()?;
    doc.get_str("_data").ok().map(str::to_owned)
}

/// Polls `s` until its initial aggregate has run (the position is known), so writes made
/// afterwards are seen.
async fn opened(s: &mut ChangeStreamSource) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while s.position().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never opened"
        );
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), s.next()).await {
            panic!("unexpected item before any write: {item:?}");
        }
    }
}

async fn collection_scope(version: ServerVersion) {
    let server = TestServer::with(mongosim::Options::new().version(version)).await;
    let db_name = unique_db("cs_coll");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().namespace(ns(&format!("{db_name}.c"))),
    );
    opened(&mut s).await;
    c.insert_one(doc! {"_id": 1, "a": 1, "b": 1}).await.unwrap();
    c.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"a": 2}, "$unset": {"b": ""}},
    )
    .await
    .unwrap();
    // updateLookup reads the document when the event is returned: read it before
    // the replace and delete.
    let mut got = take_ops(&mut s, 2).await;
    // Until the stream is polled again, its position is the last delivered event's token.
    assert_eq!(
        s.position().map(Position::ResumeToken),
        Some(got[1].position.clone())
    );
    c.replace_one(doc! {"_id": 1}, doc! {"x": 1}).await.unwrap();
    c.delete_one(doc! {"_id": 1}).await.unwrap();
    server
        .client
        .database(&db_name)
        .collection::<Document>("other")
        .insert_one(doc! {"_id": 5})
        .await
        .unwrap();
    got.extend(take_ops(&mut s, 2).await);
    let kinds: Vec<_> = got.iter().map(|o| o.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            OpKind::Insert,
            OpKind::Update,
            OpKind::Replace,
            OpKind::Delete
        ]
    );
    assert_eq!(got[0].data, Some(doc! {"_id": 1, "a": 1, "b": 1}));
    assert_eq!(
        got[1].update,
        Some(UpdateDescription::new(
            doc! {"a": 2},
            vec!["b".into()],
            vec![]
        ))
    );
    // updateLookup (default) brings the current document.
    assert_eq!(got[1].data, Some(doc! {"_id": 1, "a": 2}));
    assert_eq!(got[2].data, Some(doc! {"_id": 1, "x": 1}));
    assert_eq!(got[3].document_key, Some(doc! {"_id": 1}));
    for op in &got {
        assert!(op.is_source_change_stream());
        assert!(matches!(op.position, Position::ResumeToken(ref t) if token_data(t).is_some()));
        assert_eq!(op.namespace, ns(&format!("{db_name}.c")));
    }
    assert_quiet(&mut s, Duration::from_millis(300)).await;
    // The cached position is at or after the last event's token.
    let Position::ResumeToken(last) = &got[3].position else {
        unreachable!()
    };
    let cached = s.position().expect("position");
    assert!(
        token_data(&cached) >= token_data(last),
        "position went backwards"
    );
}

#[tokio::test]
async fn collection_scope_7_0() {
    collection_scope(ServerVersion::V7_0).await;
}

#[tokio::test]
async fn collection_scope_4_4() {
    collection_scope(ServerVersion::V4_4).await;
}

#[tokio::test]
async fn database_and_deployment_scopes() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_db");
    let db = server.client.database(&db_name);
    let mut by_db = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().namespace(Namespace::database(&db_name).unwrap()),
    );
    let mut all = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().pipeline([doc! {"$match": {"ns.db": &db_name}}]),
    );
    opened(&mut by_db).await;
    opened(&mut all).await;
    db.collection::<Document>("a")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    db.collection::<Document>("b")
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap();
    server
        .client
        .database(&unique_db("cs_elsewhere"))
        .collection::<Document>("a")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    db.collection::<Document>("a")
        .insert_one(doc! {"_id": 4})
        .await
        .unwrap();
    for s in [&mut by_db, &mut all] {
        let got = take_ops(s, 3).await;
        assert_eq!(int_ids(&got), vec![1, 2, 4]);
        assert_eq!(got[1].collection(), "b");
        assert_quiet(s, Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn invalidate_then_continue_after_drop_and_rename() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_inv");
    let db = server.client.database(&db_name);
    let c = db.collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().namespace(ns(&format!("{db_name}.c"))),
    );
    opened(&mut s).await;
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    c.drop().await.unwrap();
    c.insert_one(doc! {"_id": 2}).await.unwrap();
    server
        .client
        .database("admin")
        .run_command(
            doc! {"renameCollection": format!("{db_name}.c"), "to": format!("{db_name}.d")},
        )
        .await
        .unwrap();
    c.insert_one(doc! {"_id": 3}).await.unwrap();
    let got = take_ops(&mut s, 5).await;
    let kinds: Vec<_> = got.iter().map(|o| o.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            OpKind::Insert,
            OpKind::DropCollection,
            OpKind::Insert,
            OpKind::Rename {
                to: ns(&format!("{db_name}.d"))
            },
            OpKind::Insert,
        ],
        "{got:#?}"
    );
    assert_eq!(got[2].id, Some(Bson::Int32(2)));
    assert_eq!(got[4].id, Some(Bson::Int32(3)));
}

#[tokio::test]
async fn pipeline_filters_events() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_pipe");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .pipeline([doc! {"$match": {"operationType": "insert", "fullDocument.keep": true}}]),
    );
    opened(&mut s).await;
    c.insert_one(doc! {"_id": 1, "keep": false}).await.unwrap();
    c.insert_one(doc! {"_id": 2, "keep": true}).await.unwrap();
    c.update_one(doc! {"_id": 2}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    c.insert_one(doc! {"_id": 3, "keep": true}).await.unwrap();
    assert_eq!(int_ids(&take_ops(&mut s, 2).await), vec![2, 3]);
    assert_quiet(&mut s, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn resume_after_token_and_start_at_time() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_resume");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let target = ns(&format!("{db_name}.c"));
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().namespace(target.clone()),
    );
    opened(&mut s).await;
    for i in 1..=3 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let got = take_ops(&mut s, 3).await;
    drop(s);
    let Position::ResumeToken(token) = got[0].position.clone() else {
        panic!("no token")
    };
    let mut resumed = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(target.clone())
            .resume_after(token),
    );
    assert_eq!(int_ids(&take_ops(&mut resumed, 2).await), vec![2, 3]);

    let mut at = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(target)
            .start_at_operation_time(got[1].timestamp),
    );
    assert_eq!(int_ids(&take_ops(&mut at, 2).await), vec![2, 3]);
}

#[tokio::test]
async fn transaction_events_carry_txn_info() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_txn");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().namespace(ns(&format!("{db_name}.c"))),
    );
    opened(&mut s).await;
    let mut session = server.client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    c.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    c.insert_one(doc! {"_id": 2})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    session.start_transaction().await.unwrap();
    c.insert_one(doc! {"_id": 3})
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    c.insert_one(doc! {"_id": 4}).await.unwrap();
    let got = take_ops(&mut s, 3).await;
    assert_eq!(int_ids(&got), vec![1, 2, 4]);
    let t0 = got[0].txn.as_ref().expect("txn info");
    let t1 = got[1].txn.as_ref().expect("txn info");
    assert_eq!((t0.index, t1.index), (0, 1));
    assert!(t0.lsid.is_some() && t0.txn_number.is_some());
    assert_eq!(got[0].timestamp, got[1].timestamp);
    assert!(got[2].txn.is_none());
}

async fn survives_faults(data: Document) {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_fault");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .max_await_time(Duration::from_millis(100))
            .retry(RetryPolicy::new(
                Duration::from_millis(10),
                Duration::from_millis(100),
                10,
            )),
    );
    opened(&mut s).await;
    for i in 1..=5 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    assert_eq!(int_ids(&take_ops(&mut s, 5).await), vec![1, 2, 3, 4, 5]);
    let mut data = data;
    data.insert("failCommands", vec!["getMore"]);
    // Three failures: more than the driver's single automatic resume.
    server.fail_command(doc! {"times": 3}.into(), data).await;
    for i in 6..=10 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    assert_eq!(int_ids(&take_ops(&mut s, 5).await), vec![6, 7, 8, 9, 10]);
    server.fail_off().await;
    assert_quiet(&mut s, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn resumes_after_get_more_error_codes() {
    survives_faults(doc! {"errorCode": 6}).await; // HostUnreachable
    survives_faults(doc! {"errorCode": 43}).await; // CursorNotFound
}

#[tokio::test]
async fn resumes_after_closed_connections() {
    survives_faults(doc! {"closeConnection": true}).await;
}

#[tokio::test]
async fn history_lost_ends_the_stream() {
    if common::external_server("needs a 256 KiB oplog") {
        return;
    }
    let server = TestServer::with(mongosim::Options::new().oplog_size_bytes(256 * 1024)).await;
    let db_name = unique_db("cs_lost");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let target = ns(&format!("{db_name}.c"));
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().namespace(target.clone()),
    );
    opened(&mut s).await;
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let first = take_ops(&mut s, 1).await.remove(0);
    drop(s);
    let blob = "z".repeat(16 * 1024);
    for i in 2..=66 {
        c.insert_one(doc! {"_id": i, "blob": &blob}).await.unwrap();
    }
    let Position::ResumeToken(token) = first.position.clone() else {
        panic!()
    };
    let mut resumed = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(target)
            .resume_after(token.clone()),
    );
    match tokio::time::timeout(common::WAIT, resumed.next())
        .await
        .unwrap()
    {
        Some(Err(Error::PositionLost { position, code, .. })) => {
            assert_eq!(code, 286);
            assert_eq!(position, Position::ResumeToken(token));
        }
        other => panic!("expected PositionLost, got {other:?}"),
    }
    assert!(resumed.next().await.is_none());
}

#[tokio::test]
async fn standalone_is_not_a_replica_set() {
    if common::external_server("needs a standalone server") {
        return;
    }
    let server = TestServer::with(mongosim::Options::new().standalone()).await;
    let mut s = ChangeStreamSource::new(&server.client, ChangeStreamOptions::new());
    match tokio::time::timeout(common::WAIT, s.next()).await.unwrap() {
        Some(Err(Error::NotReplicaSet(_))) => {}
        other => panic!("expected NotReplicaSet, got {other:?}"),
    }
    assert!(s.next().await.is_none());
    assert!(s.is_terminated() && s.next().await.is_none());
}

#[tokio::test]
async fn update_lookup_of_a_deleted_document_is_marked_missing() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_missing");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let after_insert = server.latest_ts().await;
    c.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 1}})
        .await
        .unwrap();
    c.delete_one(doc! {"_id": 1}).await.unwrap();
    // Opened after the delete: the lookup for the update finds nothing.
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .start_at_operation_time(bson::Timestamp {
                time: after_insert.time,
                increment: after_insert.increment + 1,
            }),
    );
    let got = take_ops(&mut s, 2).await;
    assert!(
        got[0].is_update() && got[0].data.is_none() && got[0].document_missing,
        "{:?}",
        got[0]
    );
    assert!(got[1].is_delete());
}

#[tokio::test]
async fn history_lost_on_get_more_ends_the_stream() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_lost286");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .max_await_time(Duration::from_millis(100)),
    );
    opened(&mut s).await;
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    take_ops(&mut s, 1).await;
    server
        .fail_command(
            doc! {"times": 1}.into(),
            doc! {"failCommands": ["getMore"], "errorCode": 286},
        )
        .await;
    match tokio::time::timeout(common::WAIT, s.next()).await.unwrap() {
        Some(Err(Error::PositionLost { code, position, .. })) => {
            assert_eq!(code, 286);
            assert!(matches!(position, Position::ResumeToken(t) if token_data(&t).is_some()));
        }
        other => panic!("expected PositionLost, got {other:?}"),
    }
    assert!(s.next().await.is_none());
    server.fail_off().await;
}

#[tokio::test]
async fn database_stream_continues_after_drop_database() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_dropdb");
    let db = server.client.database(&db_name);
    db.collection::<Document>("a")
        .insert_one(doc! {"_id": 0})
        .await
        .unwrap();
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new().namespace(Namespace::database(&db_name).unwrap()),
    );
    opened(&mut s).await;
    db.drop().await.unwrap();
    db.collection::<Document>("b")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let got = take_ops(&mut s, 3).await;
    let kinds: Vec<_> = got.iter().map(|o| o.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![OpKind::DropCollection, OpKind::DropDatabase, OpKind::Insert],
        "{got:#?}"
    );
    assert_eq!(got[1].namespace.to_string(), db_name);
    assert_eq!(got[2].collection(), "b");
}

#[tokio::test]
async fn expanded_events_report_ddl() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_expanded");
    let db = server.client.database(&db_name);
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(Namespace::database(&db_name).unwrap())
            .show_expanded_events(true),
    );
    opened(&mut s).await;
    db.create_collection("c").await.unwrap();
    db.collection::<Document>("c")
        .create_index(mongodb::IndexModel::builder().keys(doc! {"a": 1}).build())
        .await
        .unwrap();
    let got = take_ops(&mut s, 2).await;
    assert_eq!(got[0].kind, OpKind::Create);
    assert_eq!(got[0].collection(), "c");
    assert_eq!(got[1].kind, OpKind::Command("createIndexes".into()));
    assert!(got[1]
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key("indexes")));
}

#[tokio::test]
async fn transient_errors_opening_the_stream_are_retried() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_open_fault");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let from = server.latest_ts().await;
    server
        .fail_command(
            doc! {"times": 2}.into(),
            doc! {"failCommands": ["aggregate"], "errorCode": 91},
        )
        .await;
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .start_at_operation_time(bson::Timestamp {
                time: from.time,
                increment: from.increment + 1,
            })
            .retry(RetryPolicy::new(
                Duration::from_millis(10),
                Duration::from_millis(50),
                5,
            )),
    );
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(int_ids(&take_ops(&mut s, 1).await), vec![1]);
    server.fail_off().await;
}

#[tokio::test]
async fn capped_position_lost_on_get_more_ends_the_stream() {
    let server = TestServer::start().await;
    let db_name = unique_db("cs_lost136");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .max_await_time(Duration::from_millis(100)),
    );
    opened(&mut s).await;
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let first = take_ops(&mut s, 1).await.remove(0);
    // What a running change stream gets when it falls off the oplog.
    server
        .fail_command(
            doc! {"times": 1}.into(),
            doc! {"failCommands": ["getMore"], "errorCode": 136},
        )
        .await;
    c.insert_one(doc! {"_id": 2}).await.unwrap();
    match tokio::time::timeout(common::WAIT, s.next()).await.unwrap() {
        Some(Err(Error::PositionLost { code, position, .. })) => {
            assert_eq!(code, 136);
            assert_eq!(position, first.position);
        }
        other => panic!("expected PositionLost, got {other:?}"),
    }
    assert!(
        s.next().await.is_none(),
        "the stream must end, never jump ahead"
    );
    server.fail_off().await;
}

/// A collection recording pre- and post-images, holding `{_id: 1, a: <5 MB>}`, then
/// updated with `$set: {b: <5 MB>}` (a ~20 MB event: update description, pre-image,
/// post-image) and followed by an insert of `{_id: 2}`. Returns the database name and the
/// cluster time before the update. `None` (test skipped) before MongoDB 7.0.
async fn large_event(server: &TestServer) -> Option<(String, bson::Timestamp)> {
    if common::server_major(&server.client).await < 7 {
        eprintln!("skipped: $changeStreamSplitLargeEvent needs MongoDB 7.0");
        return None;
    }
    let db_name = unique_db("cs_split");
    let db = server.client.database(&db_name);
    db.run_command(doc! {"create": "c", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    let c = db.collection::<Document>("c");
    c.insert_one(doc! {"_id": 1, "a": "a".repeat(5_000_000)})
        .await
        .unwrap();
    let before = mongotail::cluster_time(&server.client).await.unwrap();
    c.update_one(doc! {"_id": 1}, doc! {"$set": {"b": "b".repeat(5_000_000)}})
        .await
        .unwrap();
    c.insert_one(doc! {"_id": 2}).await.unwrap();
    Some((db_name, before))
}

/// The ~20 MB update of [`large_event`], whole, then the insert after it.
fn assert_whole_then_insert(ops: &[mongotail::Op]) {
    let update = &ops[0];
    assert!(update.is_update(), "{:?}", update.kind);
    let after = update.data.as_ref().expect("post-image");
    assert_eq!(after.get_str("a").unwrap().len(), 5_000_000);
    assert_eq!(after.get_str("b").unwrap().len(), 5_000_000);
    let before = update.before.as_ref().expect("pre-image");
    assert_eq!(before.get_str("a").unwrap().len(), 5_000_000);
    assert!(
        before.get("b").is_none(),
        "the pre-image is before the $set"
    );
    let fields = &update
        .update
        .as_ref()
        .expect("update description")
        .updated_fields;
    assert_eq!(fields.get_str("b").unwrap().len(), 5_000_000);
    assert_eq!(update.document_key, Some(doc! {"_id": 1}));
    assert!(ops[1].is_insert() && ops[1].id == Some(Bson::Int32(2)));
}

#[tokio::test]
async fn events_over_16_mb_arrive_whole_across_a_resume_between_fragments() {
    let server = TestServer::start().await;
    let Some((db_name, before)) = large_event(&server).await else {
        return;
    };
    let options = |start| {
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .full_document(Some(FullDocumentType::UpdateLookup))
            .full_document_before_change(Some(FullDocumentBeforeChangeType::Required))
            .start(mongotail::StartAt::After(start))
    };

    // Without splitting, the server cannot send the event.
    let mut plain = ChangeStreamSource::new(&server.client, options(before));
    let err = tokio::time::timeout(common::WAIT, plain.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:?}").contains("10334"), "{err:?}");

    // With it: the first fragment is the aggregate's first batch (the second does not fit
    // in 16 MB with it), and the getMore for the second fails once with a resumable error
    // (the fail point that fires once the cursor is known to be a change stream's, so the
    // server labels the error `ResumableChangeStreamError`): the driver resumes from the
    // first fragment's token.
    let resumed_from = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = resumed_from.clone();
    let client = server
        .client_with(move |opts| {
            opts.command_event_handler = Some(mongodb::event::EventHandler::callback(
                move |ev: mongodb::event::command::CommandEvent| {
                    if let mongodb::event::command::CommandEvent::Started(s) = ev {
                        let stage = s.command.get_array("pipeline").ok().and_then(|p| {
                            p.first()?.as_document()?.get_document("$changeStream").ok()
                        });
                        if let Some(token) = stage.and_then(|s| s.get_document("resumeAfter").ok())
                        {
                            let data = token.get_str("_data").unwrap_or_default().to_owned();
                            seen.lock().unwrap().push(data);
                        }
                    }
                },
            ));
        })
        .await;
    let fail_point = |mode: Bson| {
        doc! {
            "configureFailPoint": "failGetMoreAfterCursorCheckout",
            "mode": mode, "data": {"errorCode": 6},
        }
    };
    let admin = server.client.database("admin");
    admin
        .run_command(fail_point(doc! {"times": 1}.into()))
        .await
        .unwrap();
    let mut split = ChangeStreamSource::new(&client, options(before).split_large_events(true));
    let ops = take_ops(&mut split, 2).await;
    admin.run_command(fail_point("off".into())).await.unwrap();
    assert_whole_then_insert(&ops);

    // The resume stood between the fragments: at the event's time, before its last token.
    let resumed_from = resumed_from.lock().unwrap().clone();
    let [fragment] = resumed_from.as_slice() else {
        panic!("expected one resume, got {resumed_from:?}");
    };
    let last = match &ops[0].position {
        Position::ResumeToken(t) => token_data(t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(
        fragment < &last,
        "resumed from {fragment}, event ends at {last}"
    );
    assert!(fragment[..18] == last[..18], "the same cluster time");
    assert_eq!(
        split.position(),
        match &ops[1].position {
            Position::ResumeToken(t) => Some(t.clone()),
            _ => None,
        }
    );
}

#[tokio::test]
async fn starting_from_a_fragment_token_reads_the_event_whole() {
    let server = TestServer::start().await;
    let Some((db_name, before)) = large_event(&server).await else {
        return;
    };
    // The first fragment's token, as a driver's own stream hands it out.
    let coll = server.client.database(&db_name).collection::<Document>("c");
    let mut raw = coll
        .watch()
        .pipeline(vec![doc! {"$changeStreamSplitLargeEvent": {}}])
        .full_document(FullDocumentType::UpdateLookup)
        .full_document_before_change(FullDocumentBeforeChangeType::Required)
        .start_at_operation_time(bson::Timestamp {
            time: before.time,
            increment: before.increment + 1,
        })
        .await
        .unwrap()
        .with_type::<Document>();
    let first = tokio::time::timeout(common::WAIT, raw.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 1, "of": 2}
    );
    let token: ResumeToken =
        bson::from_document(first.get_document("_id").unwrap().clone()).unwrap();
    drop(raw);

    // The stage given in the pipeline works as the option does.
    let mut s = ChangeStreamSource::new(
        &server.client,
        ChangeStreamOptions::new()
            .namespace(ns(&format!("{db_name}.c")))
            .pipeline([doc! {"$changeStreamSplitLargeEvent": {}}])
            .full_document_before_change(Some(FullDocumentBeforeChangeType::Required))
            .resume_after(token),
    );
    assert_whole_then_insert(&take_ops(&mut s, 2).await);
    assert_quiet(&mut s, Duration::from_millis(200)).await;
}
