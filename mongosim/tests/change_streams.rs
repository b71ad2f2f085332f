//! Change streams through the official driver's `watch()` at collection, database and
//! cluster level, asserted field by field against the reference (§5) in 7.0 and 4.4 modes:
//! event shapes, resume tokens (format, version, order), resuming, invalidation, the
//! post-stage pipeline, `postBatchResumeToken`, and the driver's automatic resume after
//! `failCommand` errors on `getMore`.

mod common;

use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use common::{code, server_version, unique_db, TestServer};
use futures::StreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::Client;
use mongosim::{Options, ServerVersion};

const WAIT: Duration = Duration::from_secs(20);

/// The next event (fails the test after a generous timeout).
async fn next(stream: &mut ChangeStream<Document>) -> Document {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("event within the timeout")
        .expect("stream still open")
        .expect("event without error")
}

fn data(ev: &Document) -> String {
    ev.get_document("_id")
        .and_then(|id| id.get_str("_data"))
        .expect("_id._data")
        .to_string()
}

fn token_of(ev: &Document) -> ResumeToken {
    bson::from_bson(Bson::Document(ev.get_document("_id").unwrap().clone())).unwrap()
}

fn token_doc(t: &ResumeToken) -> Document {
    bson::to_document(t).unwrap()
}

/// Token version from the hex (`82` + 8-byte ts, then `2B02` = v1, `2B04` = v2; §5.8).
fn token_version(hex: &str) -> u32 {
    match &hex[18..22] {
        "2B02" => 1,
        "2B04" => 2,
        other => panic!("unexpected version bytes {other} in {hex}"),
    }
}

async fn last_oplog_ts(client: &Client) -> Timestamp {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .unwrap()
        .get_timestamp("ts")
        .unwrap()
}

/// Fields every event has; `wallTime` from 6.0 (reference §5.4).
fn assert_common(ev: &Document, op: &str, modern: bool) {
    assert_eq!(ev.get_str("operationType").unwrap(), op, "{ev}");
    let hex = data(ev);
    assert!(hex.starts_with("82"), "{hex}");
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_eq!(token_version(&hex), if modern { 2 } else { 1 });
    let ct = ev.get_timestamp("clusterTime").expect("clusterTime");
    // the token starts with the clusterTime
    assert_eq!(
        &hex[2..18],
        format!("{:08X}{:08X}", ct.time, ct.increment),
        "{ev}"
    );
    assert_eq!(
        matches!(ev.get("wallTime"), Some(Bson::DateTime(_))),
        modern,
        "wallTime presence: {ev}"
    );
    assert!(
        ev.get("lsid").is_none() && ev.get("txnNumber").is_none(),
        "{ev}"
    );
    assert!(
        ev.get("collectionUUID").is_none(),
        "no collectionUUID without showExpandedEvents"
    );
}

async fn collection_events(opts: Options) {
    let server = TestServer::start(opts);
    let client = server.client().await;
    let modern = server_version(&client).await != ServerVersion::V4_4;
    let db_name = unique_db("cs_coll");
    let db = client.database(&db_name);
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();

    coll.insert_one(doc! {"_id": 1, "a": 1, "b": 2, "arr": [1, 2, 3]})
        .await
        .unwrap();
    coll.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"a": 5}, "$unset": {"b": ""}},
    )
    .await
    .unwrap();
    coll.replace_one(doc! {"_id": 1}, doc! {"x": "new"})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    db.collection::<Document>("other")
        .insert_one(doc! {"_id": 9})
        .await
        .unwrap();
    coll.drop().await.unwrap();

    let ns = doc! {"db": &db_name, "coll": "c"};
    let ins = next(&mut stream).await;
    assert_common(&ins, "insert", modern);
    assert_eq!(ins.get_document("ns").unwrap(), &ns);
    assert_eq!(ins.get_document("documentKey").unwrap(), &doc! {"_id": 1});
    assert_eq!(
        ins.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "a": 1, "b": 2, "arr": [1, 2, 3]}
    );
    assert!(ins.get("updateDescription").is_none());

    let upd = next(&mut stream).await;
    assert_common(&upd, "update", modern);
    assert_eq!(upd.get_document("documentKey").unwrap(), &doc! {"_id": 1});
    assert!(
        upd.get("fullDocument").is_none(),
        "default fullDocument: {upd}"
    );
    let ud = upd.get_document("updateDescription").unwrap();
    assert_eq!(ud.get_document("updatedFields").unwrap(), &doc! {"a": 5});
    assert_eq!(
        ud.get_array("removedFields").unwrap(),
        &vec![Bson::from("b")]
    );
    if modern {
        assert_eq!(ud.get_array("truncatedArrays").unwrap().len(), 0);
    } else {
        assert!(ud.get("truncatedArrays").is_none(), "4.4: {ud}");
    }
    assert!(ud.get("disambiguatedPaths").is_none());

    let rep = next(&mut stream).await;
    assert_common(&rep, "replace", modern);
    assert_eq!(
        rep.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "x": "new"}
    );
    assert_eq!(rep.get_document("documentKey").unwrap(), &doc! {"_id": 1});

    let del = next(&mut stream).await;
    assert_common(&del, "delete", modern);
    assert_eq!(del.get_document("documentKey").unwrap(), &doc! {"_id": 1});
    assert!(del.get("fullDocument").is_none());

    let drop = next(&mut stream).await;
    assert_common(&drop, "drop", modern);
    assert_eq!(drop.get_document("ns").unwrap(), &ns);
    assert!(drop.get("documentKey").is_none());

    let inv = next(&mut stream).await;
    assert_eq!(inv.get_str("operationType").unwrap(), "invalidate");
    assert!(inv.get("ns").is_none());
    assert_eq!(inv.get("clusterTime"), drop.get("clusterTime"));
    // invalidate token = drop token with fromInvalidate true (6E -> 6F)
    let (d, i) = (data(&drop), data(&inv));
    // layout: 82 <ts:16> 2B0x <tokenType 2C0100> <txnOpIndex 29> <fromInvalidate 6E|6F> …
    assert_eq!(&i[..30], &d[..30]);
    assert_eq!((&d[30..32], &i[30..32]), ("6E", "6F"), "{d} / {i}");
    assert_eq!(&i[32..], &d[32..]);
    // the stream is closed after the invalidate
    let after = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(after.is_none(), "{after:?}");
    assert!(!stream.is_alive());

    // tokens sort in event order, byte-wise = hex order
    let tokens: Vec<String> = [&ins, &upd, &rep, &del, &drop, &inv]
        .iter()
        .map(|e| data(e))
        .collect();
    let mut sorted = tokens.clone();
    sorted.sort();
    assert_eq!(tokens, sorted);
}

#[tokio::test]
async fn collection_stream_events_7_0() {
    collection_events(Options::new()).await;
}

#[tokio::test]
async fn collection_stream_events_4_4() {
    collection_events(Options::new().version(ServerVersion::V4_4)).await;
}

#[tokio::test]
async fn events_match_the_oplog() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db_name = unique_db("cs_oplog");
    let coll = client.database(&db_name).collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    coll.insert_many(vec![doc! {"_id": 1}, doc! {"_id": 2}])
        .await
        .unwrap();
    let a = next(&mut stream).await;
    let b = next(&mut stream).await;
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    for ev in [&a, &b] {
        let id = ev
            .get_document("documentKey")
            .unwrap()
            .get("_id")
            .unwrap()
            .clone();
        let entry = oplog
            .find_one(doc! {"ns": format!("{db_name}.c"), "op": "i", "o._id": id})
            .await
            .unwrap()
            .expect("oplog entry");
        assert_eq!(entry.get("ts"), ev.get("clusterTime"));
        assert_eq!(entry.get("wall"), ev.get("wallTime"));
    }
    let (ta, tb) = (
        a.get_timestamp("clusterTime").unwrap(),
        b.get_timestamp("clusterTime").unwrap(),
    );
    assert_eq!((ta.time, ta.increment + 1), (tb.time, tb.increment));
}

#[tokio::test]
async fn update_lookup_and_post_stage_pipeline() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let coll = client
        .database(&unique_db("cs_lookup"))
        .collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "n": 0}).await.unwrap();
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .pipeline(vec![
            doc! {"$match": {"operationType": "update"}},
            doc! {"$addFields": {"extra": "$fullDocument.n"}},
            doc! {"$unset": "wallTime"},
        ])
        .await
        .unwrap()
        .with_type::<Document>();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    let first = next(&mut stream).await;
    assert_eq!(first.get_str("operationType").unwrap(), "update");
    // updateLookup reads the current document: already n = 2
    assert_eq!(
        first.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "n": 2}
    );
    assert_eq!(first.get_i32("extra").unwrap(), 2);
    assert!(first.get("wallTime").is_none());
    assert_eq!(
        first
            .get_document("updateDescription")
            .unwrap()
            .get_document("updatedFields")
            .unwrap(),
        &doc! {"n": 1}
    );
    let second = next(&mut stream).await;
    assert_eq!(
        second
            .get_document("updateDescription")
            .unwrap()
            .get_document("updatedFields")
            .unwrap(),
        &doc! {"n": 2}
    );
}

#[tokio::test]
async fn projecting_out_id_fails_with_280() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let coll = client
        .database(&unique_db("cs_id"))
        .collection::<Document>("c");
    let mut stream = coll
        .watch()
        .pipeline(vec![doc! {"$project": {"_id": 0}}])
        .await
        .unwrap()
        .with_type::<Document>();
    coll.insert_one(doc! {"z": 3}).await.unwrap();
    let err = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&err), Some(280), "{err}");
}

#[tokio::test]
async fn invalid_stages_and_options() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let coll = client
        .database(&unique_db("cs_bad"))
        .collection::<Document>("c");
    let err = coll
        .watch()
        .pipeline(vec![doc! {"$unsupported": "foo"}])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(40324));
    let err = coll
        .watch()
        .pipeline(vec![doc! {"$group": {"_id": null}}])
        .await
        .unwrap_err();
    assert!(code(&err).is_some());
    let db = client.database("admin");
    let err = db.watch().await.unwrap_err();
    assert_eq!(code(&err), Some(73), "admin without allChangesForCluster");
}

#[tokio::test]
async fn database_and_cluster_streams() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let modern = server_version(&client).await != ServerVersion::V4_4;
    let db_name = unique_db("cs_db");
    let other_db = unique_db("cs_db_other");
    let db = client.database(&db_name);
    let mut dbs = db.watch().await.unwrap().with_type::<Document>();
    let mut cluster = client.watch().await.unwrap().with_type::<Document>();
    db.collection::<Document>("a")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    db.collection::<Document>("b")
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap();
    client
        .database(&other_db)
        .collection::<Document>("x")
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    db.drop().await.unwrap();
    client
        .database(&other_db)
        .collection::<Document>("x")
        .insert_one(doc! {"_id": 4})
        .await
        .unwrap();

    let a = next(&mut dbs).await;
    assert_common(&a, "insert", modern);
    assert_eq!(
        a.get_document("ns").unwrap(),
        &doc! {"db": &db_name, "coll": "a"}
    );
    let b = next(&mut dbs).await;
    assert_eq!(
        b.get_document("ns").unwrap(),
        &doc! {"db": &db_name, "coll": "b"}
    );
    // dropDatabase: a drop per collection, then dropDatabase, then invalidate (§5.5)
    let mut dropped = Vec::new();
    let mut ev = next(&mut dbs).await;
    while ev.get_str("operationType").unwrap() == "drop" {
        assert_common(&ev, "drop", modern);
        dropped.push(
            ev.get_document("ns")
                .unwrap()
                .get_str("coll")
                .unwrap()
                .to_string(),
        );
        ev = next(&mut dbs).await;
    }
    dropped.sort();
    assert_eq!(dropped, vec!["a", "b"]);
    assert_common(&ev, "dropDatabase", modern);
    assert_eq!(ev.get_document("ns").unwrap(), &doc! {"db": &db_name});
    let inv = next(&mut dbs).await;
    assert_eq!(inv.get_str("operationType").unwrap(), "invalidate");
    assert!(tokio::time::timeout(WAIT, dbs.next())
        .await
        .unwrap()
        .is_none());

    // the cluster stream sees every database and is never invalidated
    let mut seen = Vec::new();
    loop {
        let ev = next(&mut cluster).await;
        let op = ev.get_str("operationType").unwrap().to_string();
        let ns = ev.get_document("ns").unwrap().clone();
        seen.push((op.clone(), ns.get_str("db").unwrap().to_string()));
        if op == "insert" && ev.get_document("documentKey").unwrap() == &doc! {"_id": 4} {
            break;
        }
    }
    assert!(
        seen.contains(&("dropDatabase".to_string(), db_name.clone())),
        "{seen:?}"
    );
    assert!(seen.iter().all(|(op, _)| op != "invalidate"));
    assert_eq!(
        seen.iter().filter(|(op, _)| op == "insert").count(),
        4,
        "{seen:?}"
    );
}

#[tokio::test]
async fn rename_invalidates_the_source_stream() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let modern = server_version(&client).await != ServerVersion::V4_4;
    let db_name = unique_db("cs_rename");
    let coll = client.database(&db_name).collection::<Document>("from");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    client
        .database("admin")
        .run_command(
            doc! {"renameCollection": format!("{db_name}.from"), "to": format!("{db_name}.to")},
        )
        .await
        .unwrap();
    let ren = next(&mut stream).await;
    assert_common(&ren, "rename", modern);
    assert_eq!(
        ren.get_document("ns").unwrap(),
        &doc! {"db": &db_name, "coll": "from"}
    );
    assert_eq!(
        ren.get_document("to").unwrap(),
        &doc! {"db": &db_name, "coll": "to"}
    );
    let inv = next(&mut stream).await;
    assert_eq!(inv.get_str("operationType").unwrap(), "invalidate");
}

#[tokio::test]
async fn resume_after_start_after_and_start_at_operation_time() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db_name = unique_db("cs_resume");
    let coll = client.database(&db_name).collection::<Document>("c");
    let before = last_oplog_ts(&client).await;
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    for i in 0..4 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(next(&mut stream).await);
    }
    coll.drop().await.unwrap();
    let drop = next(&mut stream).await;
    let inv = next(&mut stream).await;
    assert_eq!(inv.get_str("operationType").unwrap(), "invalidate");

    // resumeAfter the second event: the third and fourth follow, nothing repeated
    let mut resumed = coll
        .watch()
        .resume_after(token_of(&events[1]))
        .await
        .unwrap()
        .with_type::<Document>();
    assert_eq!(next(&mut resumed).await, events[2]);
    assert_eq!(next(&mut resumed).await, events[3]);
    assert_eq!(next(&mut resumed).await, drop);

    // startAtOperationTime: every event from that time on
    let t = events[0].get_timestamp("clusterTime").unwrap();
    let mut at = coll
        .watch()
        .start_at_operation_time(t)
        .await
        .unwrap()
        .with_type::<Document>();
    assert_eq!(next(&mut at).await, events[0]);
    assert_eq!(next(&mut at).await, events[1]);
    let mut early = coll
        .watch()
        .start_at_operation_time(before)
        .await
        .unwrap()
        .with_type::<Document>();
    assert_eq!(next(&mut early).await, events[0]);

    // resumeAfter an invalidate is refused (260), startAfter works
    let err = coll.watch().resume_after(token_of(&inv)).await.unwrap_err();
    assert_eq!(code(&err), Some(260), "{err}");
    let mut after = coll
        .watch()
        .start_after(token_of(&inv))
        .await
        .unwrap()
        .with_type::<Document>();
    coll.insert_one(doc! {"_id": "recreated"}).await.unwrap();
    let ev = next(&mut after).await;
    assert_eq!(ev.get_str("operationType").unwrap(), "insert");
    assert_eq!(
        ev.get_document("documentKey").unwrap(),
        &doc! {"_id": "recreated"}
    );

    // a malformed token
    let bad: ResumeToken = bson::from_bson(Bson::Document(doc! {"_data": "zz"})).unwrap();
    assert!(coll.watch().resume_after(bad).await.is_err());
}

#[tokio::test]
async fn post_batch_resume_token_advances_while_idle() {
    let server = TestServer::start(Options::new().noop_interval(Duration::from_millis(200)));
    let client = server.client().await;
    let coll = client
        .database(&unique_db("cs_pbrt"))
        .collection::<Document>("c");
    let mut stream = coll
        .watch()
        .max_await_time(Duration::from_millis(300))
        .await
        .unwrap()
        .with_type::<Document>();
    let first = stream.resume_token().expect("initial PBRT");
    let first_hex = token_doc(&first).get_str("_data").unwrap().to_string();
    // an initial high-water mark: clusterTime, version, tokenType 0 and nothing else (§5.8)
    assert!(
        first_hex.ends_with("2B0429296E1404") || first_hex.ends_with("2B0229296E04"),
        "{first_hex}"
    );
    let mut advanced = false;
    for _ in 0..30 {
        assert!(stream.next_if_any().await.unwrap().is_none());
        let now = token_doc(&stream.resume_token().unwrap())
            .get_str("_data")
            .unwrap()
            .to_string();
        if now > first_hex {
            advanced = true;
            break;
        }
    }
    assert!(advanced, "the PBRT must advance through the periodic no-op");
}

#[tokio::test]
async fn show_expanded_events() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    if server_version(&client).await == ServerVersion::V4_4 {
        return;
    }
    let db_name = unique_db("cs_expanded");
    let db = client.database(&db_name);
    let mut stream = db
        .watch()
        .show_expanded_events(true)
        .await
        .unwrap()
        .with_type::<Document>();
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "a": {"b.c": 1}})
        .await
        .unwrap();
    coll.create_index(mongodb::IndexModel::builder().keys(doc! {"x": 1}).build())
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"arr": [1]}})
        .await
        .unwrap();
    coll.drop_index("x_1").await.unwrap();

    let create = next(&mut stream).await;
    assert_eq!(create.get_str("operationType").unwrap(), "create");
    assert!(matches!(
        create.get("collectionUUID"),
        Some(Bson::Binary(_))
    ));
    assert!(
        create.get_document("operationDescription").is_ok(),
        "{create}"
    );
    let ins = next(&mut stream).await;
    assert_eq!(ins.get_str("operationType").unwrap(), "insert");
    assert_eq!(ins.get("collectionUUID"), create.get("collectionUUID"));
    let ci = next(&mut stream).await;
    assert_eq!(ci.get_str("operationType").unwrap(), "createIndexes");
    let idx = ci
        .get_document("operationDescription")
        .unwrap()
        .get_array("indexes")
        .unwrap();
    assert_eq!(idx.len(), 1);
    let upd = next(&mut stream).await;
    let ud = upd.get_document("updateDescription").unwrap();
    assert!(
        ud.get_document("disambiguatedPaths").is_ok(),
        "expanded: {ud}"
    );
    let di = next(&mut stream).await;
    assert_eq!(di.get_str("operationType").unwrap(), "dropIndexes");
    // expanded events carry v2 tokens with {operationType, operationDescription}
    assert_eq!(token_version(&data(&di)), 2);
}

#[tokio::test]
async fn driver_resumes_after_get_more_errors() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let coll = client
        .database(&unique_db("cs_autoresume"))
        .collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    let admin = client.database("admin");
    let mut got = Vec::new();
    let mut next_id = 0;
    for fp in [
        doc! {"failCommands": ["getMore"], "errorCode": 43},
        doc! {"failCommands": ["getMore"], "closeConnection": true},
    ] {
        coll.insert_one(doc! {"_id": next_id}).await.unwrap();
        next_id += 1;
        got.push(next(&mut stream).await);
        coll.insert_one(doc! {"_id": next_id}).await.unwrap();
        next_id += 1;
        admin
            .run_command(
                doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": fp},
            )
            .await
            .unwrap();
        coll.insert_one(doc! {"_id": next_id}).await.unwrap();
        next_id += 1;
        got.push(next(&mut stream).await);
        got.push(next(&mut stream).await);
    }
    let ids: Vec<i32> = got
        .iter()
        .map(|e| {
            e.get_document("documentKey")
                .unwrap()
                .get_i32("_id")
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (0..6).collect::<Vec<_>>(), "no event lost or repeated");
}

#[tokio::test]
async fn resumable_label_on_get_more_after_checkout() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let coll = client
        .database(&unique_db("cs_label"))
        .collection::<Document>("c");
    let mut stream = coll.watch().await.unwrap().with_type::<Document>();
    client
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failGetMoreAfterCursorCheckout", "mode": {"times": 1}, "data": {"errorCode": 6}})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    // HostUnreachable with ResumableChangeStreamError: the driver resumes transparently
    let ev = next(&mut stream).await;
    assert_eq!(ev.get_document("documentKey").unwrap(), &doc! {"_id": 1});
    // a plain failCommand error (no label) is not resumed (spec test errorLabels)
    client
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": {"failCommands": ["getMore"], "errorCode": 6}})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let err = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&err), Some(6));
}

#[tokio::test]
async fn standalone_gives_40573() {
    let server = TestServer::start(Options::new().standalone());
    if !server.is_sim() {
        return;
    }
    let client = server.client().await;
    let coll = client
        .database(&unique_db("cs_standalone"))
        .collection::<Document>("c");
    let err = coll.watch().await.unwrap_err();
    assert_eq!(code(&err), Some(40573), "{err}");
}

#[tokio::test]
async fn batch_size_and_raw_replies() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db_name = unique_db("cs_raw");
    let db = client.database(&db_name);
    let start = last_oplog_ts(&client).await;
    for i in 0..5 {
        db.collection::<Document>("c")
            .insert_one(doc! {"_id": i})
            .await
            .unwrap();
    }
    let reply = db
        .run_command(doc! {
            "aggregate": "c",
            "pipeline": [{"$changeStream": {"startAtOperationTime": start}}],
            "cursor": {"batchSize": 2},
        })
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    let keys: Vec<&String> = cursor.keys().collect();
    assert_eq!(keys, ["firstBatch", "postBatchResumeToken", "id", "ns"]);
    let batch = cursor.get_array("firstBatch").unwrap();
    assert_eq!(batch.len(), 2);
    let last = batch[1].as_document().unwrap();
    // while returning events the PBRT is the last event's token (§5.7)
    assert_eq!(
        cursor.get_document("postBatchResumeToken").unwrap(),
        last.get_document("_id").unwrap()
    );
    assert!(matches!(cursor.get("id"), Some(Bson::Int64(id)) if *id != 0));
    assert_eq!(cursor.get_str("ns").unwrap(), format!("{db_name}.c"));
    let id = cursor.get_i64("id").unwrap();
    let more = db
        .run_command(doc! {"getMore": id, "collection": "c", "batchSize": 10, "maxTimeMS": 100})
        .await
        .unwrap();
    let next_batch = more
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap();
    assert_eq!(next_batch.len(), 3);
    // database-level cursors report `<db>.$cmd.aggregate`
    let reply = db
        .run_command(doc! {"aggregate": 1, "pipeline": [{"$changeStream": {}}], "cursor": {}})
        .await
        .unwrap();
    assert_eq!(
        reply.get_document("cursor").unwrap().get_str("ns").unwrap(),
        format!("{db_name}.$cmd.aggregate")
    );
}

#[tokio::test]
async fn pre_and_post_images() {
    use mongodb::options::FullDocumentBeforeChangeType;
    let server = TestServer::default_rs();
    let client = server.client().await;
    if server_version(&client).await == ServerVersion::V4_4 {
        return;
    }
    let db = client.database(&unique_db("cs_images"));
    db.create_collection("c").await.unwrap();
    db.create_collection("plain").await.unwrap();
    db.run_command(doc! {"collMod": "c", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "n": 1}).await.unwrap();
    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::Required)
        .full_document_before_change(FullDocumentBeforeChangeType::Required)
        .await
        .unwrap()
        .with_type::<Document>();
    coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    coll.replace_one(doc! {"_id": 1}, doc! {"r": true})
        .await
        .unwrap();
    // a transaction: images are keyed by the commit entry and the op's index in it
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"t": 1}})
        .session(&mut session)
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();

    let upd = next(&mut stream).await;
    assert_eq!(
        upd.get_document("fullDocumentBeforeChange").unwrap(),
        &doc! {"_id": 1, "n": 1}
    );
    assert_eq!(
        upd.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "n": 2}
    );
    let rep = next(&mut stream).await;
    assert_eq!(
        rep.get_document("fullDocumentBeforeChange").unwrap(),
        &doc! {"_id": 1, "n": 2}
    );
    assert_eq!(
        rep.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "r": true}
    );
    let tupd = next(&mut stream).await;
    assert_eq!(
        tupd.get_document("fullDocumentBeforeChange").unwrap(),
        &doc! {"_id": 1, "r": true}
    );
    assert_eq!(
        tupd.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "r": true, "t": 1}
    );
    let tdel = next(&mut stream).await;
    assert_eq!(tdel.get_str("operationType").unwrap(), "delete");
    assert_eq!(
        tdel.get_document("fullDocumentBeforeChange").unwrap(),
        &doc! {"_id": 1, "r": true, "t": 1}
    );

    // without the collection option: whenAvailable gives null, required fails
    let plain = db.collection::<Document>("plain");
    plain.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut lenient = plain
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
        .await
        .unwrap()
        .with_type::<Document>();
    let mut strict = plain
        .watch()
        .full_document_before_change(FullDocumentBeforeChangeType::Required)
        .await
        .unwrap()
        .with_type::<Document>();
    plain
        .update_one(doc! {"_id": 1}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    let ev = next(&mut lenient).await;
    assert_eq!(ev.get("fullDocument"), Some(&Bson::Null));
    assert_eq!(ev.get("fullDocumentBeforeChange"), Some(&Bson::Null));
    let err = tokio::time::timeout(WAIT, strict.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&err), Some(47), "{err}");
}

#[tokio::test]
async fn kill_cursors_on_database_and_cluster_streams() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db_name = unique_db("cs_kill");
    let db = client.database(&db_name);
    for (target_db, cmd) in [
        (
            db_name.as_str(),
            doc! {"aggregate": 1, "pipeline": [{"$changeStream": {}}], "cursor": {"batchSize": 0}},
        ),
        (
            "admin",
            doc! {"aggregate": 1, "pipeline": [{"$changeStream": {"allChangesForCluster": true}}], "cursor": {"batchSize": 0}},
        ),
    ] {
        let d = client.database(target_db);
        let reply = d.run_command(cmd).await.unwrap();
        let cursor = reply.get_document("cursor").unwrap();
        let id = cursor.get_i64("id").unwrap();
        assert_ne!(id, 0);
        let more = d
            .run_command(doc! {"getMore": id, "collection": "$cmd.aggregate", "maxTimeMS": 10})
            .await
            .unwrap();
        assert!(more
            .get_document("cursor")
            .unwrap()
            .get_document("postBatchResumeToken")
            .is_ok());
        let killed = d
            .run_command(doc! {"killCursors": "$cmd.aggregate", "cursors": [id]})
            .await
            .unwrap();
        assert_eq!(
            killed.get_array("cursorsKilled").unwrap(),
            &vec![Bson::Int64(id)]
        );
    }
    let _ = db;
}

#[tokio::test]
async fn change_stream_not_allowed_in_transaction() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("cs_txn"));
    db.create_collection("c").await.unwrap();
    let coll = db.collection::<Document>("c");
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.find_one(doc! {}).session(&mut session).await.unwrap();
    let err = match coll.watch().session(&mut session).await {
        Ok(_) => panic!("$changeStream in a transaction must fail"),
        Err(e) => e,
    };
    assert_eq!(code(&err), Some(263), "{err}");
}

#[tokio::test]
async fn view_definitions_as_expanded_events() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    if server_version(&client).await == ServerVersion::V4_4 {
        return;
    }
    let db_name = unique_db("cs_views");
    let db = client.database(&db_name);
    let mut stream = db
        .watch()
        .show_expanded_events(true)
        .await
        .unwrap()
        .with_type::<Document>();
    db.run_command(doc! {"create": "v", "viewOn": "src", "pipeline": [{"$match": {"a": 1}}]})
        .await
        .unwrap();
    db.collection::<Document>("v").drop().await.unwrap();
    let create = next(&mut stream).await;
    assert_eq!(create.get_str("operationType").unwrap(), "create");
    assert_eq!(
        create.get_document("ns").unwrap(),
        &doc! {"db": &db_name, "coll": "v"}
    );
    assert_eq!(
        create.get_document("operationDescription").unwrap(),
        &doc! {"viewOn": "src", "pipeline": [{"$match": {"a": 1}}]}
    );
    assert!(create.get("collectionUUID").is_none());
    let drop = next(&mut stream).await;
    assert_eq!(drop.get_str("operationType").unwrap(), "drop");
    assert_eq!(
        drop.get_document("ns").unwrap(),
        &doc! {"db": &db_name, "coll": "v"}
    );
}

#[tokio::test]
async fn split_large_events() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    if server_version(&client).await == ServerVersion::V4_4 {
        return;
    }
    let coll = client
        .database(&unique_db("cs_split"))
        .collection::<Document>("c");
    let eight_mb = "a".repeat(8_000_000);
    coll.insert_one(doc! {"_id": 1, "a": &eight_mb})
        .await
        .unwrap();
    let mut plain = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();
    let mut split = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .pipeline(vec![doc! {"$changeStreamSplitLargeEvent": {}}])
        .await
        .unwrap()
        .with_type::<Document>();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"b": &eight_mb}})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();

    // ~24 MB event: 10334 without the split stage
    let err = tokio::time::timeout(WAIT, plain.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&err), Some(10334), "{err}");

    let f1 = next(&mut split).await;
    let f2 = next(&mut split).await;
    assert_eq!(
        f1.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 1, "of": 2}
    );
    assert_eq!(
        f2.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 2, "of": 2}
    );
    assert_eq!(f1.get_str("operationType").unwrap(), "update");
    assert!(f1.get("updateDescription").is_some() && f1.get("fullDocument").is_none());
    assert!(f2.get("fullDocument").is_some() && f2.get("operationType").is_none());
    assert!(data(&f1) < data(&f2));
    let small = next(&mut split).await;
    assert_eq!(small.get_str("operationType").unwrap(), "insert");
    assert!(data(&f2) < data(&small));

    // resuming after the first fragment returns the second one, then the rest
    let mut resumed = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .pipeline(vec![doc! {"$changeStreamSplitLargeEvent": {}}])
        .resume_after(token_of(&f1))
        .await
        .unwrap()
        .with_type::<Document>();
    let again = next(&mut resumed).await;
    assert_eq!(
        again.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 2, "of": 2}
    );
    assert_eq!(data(&again), data(&f2));
    assert_eq!(data(&next(&mut resumed).await), data(&small));

    // the stage must come last
    let err = coll
        .watch()
        .pipeline(vec![
            doc! {"$changeStreamSplitLargeEvent": {}},
            doc! {"$match": {}},
        ])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(7182802));
}

#[tokio::test]
async fn resume_from_a_v1_token_on_7_0() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    if server_version(&client).await == ServerVersion::V4_4 {
        return;
    }
    let db_name = unique_db("cs_v1");
    let db = client.database(&db_name);
    let coll = db.collection::<Document>("c");
    let start = last_oplog_ts(&client).await;
    for i in 0..3 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    // `$_generateV2ResumeTokens: false` (what 6.0 mongos asks for) gives v1 tokens (§5.9)
    let reply = db
        .run_command(doc! {
            "aggregate": "c",
            "pipeline": [{"$changeStream": {"startAtOperationTime": start}}],
            "cursor": {},
            "$_generateV2ResumeTokens": false,
        })
        .await
        .unwrap();
    let batch = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    assert_eq!(batch.len(), 3);
    let first = batch[0].as_document().unwrap();
    assert_eq!(token_version(&data(first)), 1);
    let mut resumed = coll
        .watch()
        .resume_after(token_of(first))
        .await
        .unwrap()
        .with_type::<Document>();
    let next_ev = next(&mut resumed).await;
    assert_eq!(
        next_ev.get_document("documentKey").unwrap(),
        &doc! {"_id": 1}
    );
    assert_eq!(token_version(&data(&next_ev)), 2);
}
