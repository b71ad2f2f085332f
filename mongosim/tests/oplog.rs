//! Oplog entries asserted field by field (types included) against the reference (§4) in
//! both 7.0 and 4.4 modes, read back through the official driver from `local.oplog.rs`.

mod common;

use bson::{doc, spec::BinarySubtype, Bson, Document, Timestamp};
use common::{server_version, unique_db, TestServer};
use futures::TryStreamExt;
use mongodb::options::FindOptions;
use mongodb::Client;
use mongosim::{Options, ServerVersion};

/// Entries of `local.oplog.rs` after `after` whose `ns` belongs to `db`, in `$natural` order.
async fn entries_after(client: &Client, db: &str, after: Timestamp) -> Vec<Document> {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let re = bson::Regex {
        pattern: format!("^{db}\\."),
        options: String::new(),
    };
    oplog
        .find(doc! {"ts": {"$gt": after}, "ns": {"$regex": re}})
        .with_options(FindOptions::builder().sort(doc! {"$natural": 1}).build())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The `ts` of the newest oplog entry.
async fn last_ts(client: &Client) -> Timestamp {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let last = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .expect("oplog not empty");
    last.get_timestamp("ts").unwrap()
}

/// Common stamped fields: `ts` Timestamp, `t` Int64(1), `v` Int64(2), `wall` Date; `ui`
/// a UUID (BinData subtype 4) when `with_ui`.
fn assert_common(e: &Document, with_ui: bool) {
    assert!(matches!(e.get("ts"), Some(Bson::Timestamp(_))), "ts: {e}");
    assert!(matches!(e.get("t"), Some(Bson::Int64(_))), "t Int64: {e}");
    assert_eq!(e.get("v"), Some(&Bson::Int64(2)), "v Int64(2): {e}");
    assert!(
        matches!(e.get("wall"), Some(Bson::DateTime(_))),
        "wall Date: {e}"
    );
    assert!(e.get("h").is_none(), "no h since 4.2");
    match (with_ui, e.get("ui")) {
        (true, Some(Bson::Binary(b))) => {
            assert_eq!(b.subtype, BinarySubtype::Uuid);
            assert_eq!(b.bytes.len(), 16);
        }
        (false, None) => {}
        (w, other) => panic!("ui expected={w}, got {other:?} in {e}"),
    }
}

fn keys(e: &Document) -> Vec<&str> {
    e.keys().map(String::as_str).collect()
}

/// Keys without the retryable-write session fields (the driver retries writes by default,
/// so single-statement writes carry `lsid`, `txnNumber`, `stmtId`, `prevOpTime`).
fn op_keys(e: &Document) -> Vec<&str> {
    e.keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "lsid" | "txnNumber" | "stmtId" | "prevOpTime"))
        .collect()
}

async fn crud_entries_for(version: ServerVersion) {
    let server = TestServer::start(Options::new().version(version));
    let client = server.client().await;
    let version = server_version(&client).await;
    let db = unique_db("oplog");
    let coll = client.database(&db).collection::<Document>("c");
    let start = last_ts(&client).await;
    crud_writes(&coll).await;
    let e = entries_after(&client, &db, start).await;
    let ops: Vec<&str> = e.iter().map(|x| x.get_str("op").unwrap()).collect();
    assert_eq!(
        ops,
        vec!["c", "i", "i", "i", "i", "u", "u", "d", "i"],
        "{e:#?}"
    );

    assert_create_and_inserts(&e, &db, version);
    assert_update_replace_delete(&e, version);
}

/// Implicit create, inserts, a modifier update, a replacement, a delete and an upsert.
async fn crud_writes(coll: &mongodb::Collection<Document>) {
    // implicit create + insert
    coll.insert_one(doc! {"_id": 1, "a": 1, "c": "x"})
        .await
        .unwrap();
    // multi-document insert: consecutive increments
    coll.insert_many(vec![doc! {"_id": 2}, doc! {"_id": 3}, doc! {"_id": 4}])
        .await
        .unwrap();
    // modifier update: update existing, insert new, delete
    coll.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"a": 2, "n": 1}, "$unset": {"c": ""}},
    )
    .await
    .unwrap();
    // replacement
    coll.replace_one(doc! {"_id": 2}, doc! {"x": "new"})
        .await
        .unwrap();
    // delete
    coll.delete_one(doc! {"_id": 3}).await.unwrap();
    // upsert is logged as an insert
    coll.update_one(doc! {"_id": 9}, doc! {"$set": {"u": true}})
        .upsert(true)
        .await
        .unwrap();
}

/// The create entry, the first insert (with `o2` only on 6.0+) and the timestamps of a
/// multi-document insert.
fn assert_create_and_inserts(e: &[Document], db: &str, version: ServerVersion) {
    // create (reference §4.8)
    let create = &e[0];
    assert_common(create, true);
    assert_eq!(create.get_str("ns").unwrap(), format!("{db}.$cmd"));
    assert_eq!(
        create.get_document("o").unwrap(),
        &doc! {"create": "c", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
    );
    assert!(create.get("o2").is_none());
    let ui = create.get("ui").unwrap().clone();

    // insert (§4.3): o2 only on 6.0+
    let ins = &e[1];
    assert_common(ins, true);
    assert_eq!(ins.get("ui"), Some(&ui));
    assert_eq!(ins.get_str("ns").unwrap(), format!("{db}.c"));
    assert_eq!(
        ins.get_document("o").unwrap(),
        &doc! {"_id": 1, "a": 1, "c": "x"}
    );
    match version {
        ServerVersion::V4_4 => {
            assert!(ins.get("o2").is_none(), "4.4 inserts have no o2");
            assert_eq!(
                op_keys(ins),
                vec!["op", "ns", "ui", "o", "ts", "t", "v", "wall"]
            );
        }
        _ => {
            assert_eq!(ins.get_document("o2").unwrap(), &doc! {"_id": 1});
            assert_eq!(
                op_keys(ins),
                vec!["op", "ns", "ui", "o", "o2", "ts", "t", "v", "wall"]
            );
        }
    }
    assert!(create.get_timestamp("ts").unwrap() < ins.get_timestamp("ts").unwrap());

    // insert_many: consecutive increments within the same second
    let ts: Vec<Timestamp> = e[2..5]
        .iter()
        .map(|x| x.get_timestamp("ts").unwrap())
        .collect();
    assert_eq!(ts[0].time, ts[2].time);
    assert_eq!(ts[1].increment, ts[0].increment + 1);
    assert_eq!(ts[2].increment, ts[1].increment + 1);
}

/// The modifier update (per version), replacement, delete and upsert entries.
fn assert_update_replace_delete(e: &[Document], version: ServerVersion) {
    // modifier update (§4.4 / §4.5)
    let upd = &e[5];
    assert_common(upd, true);
    assert_eq!(upd.get_document("o2").unwrap(), &doc! {"_id": 1});
    let o = upd.get_document("o").unwrap();
    match version {
        ServerVersion::V4_4 => {
            assert_eq!(crate_num(o.get("$v")), 1.0);
            assert_eq!(o.get_document("$set").unwrap(), &doc! {"a": 2, "n": 1});
            assert_eq!(o.get_document("$unset").unwrap(), &doc! {"c": true});
        }
        _ => {
            assert_eq!(o.get("$v"), Some(&Bson::Int32(2)));
            assert_eq!(
                o.get_document("diff").unwrap(),
                &doc! {"d": {"c": false}, "u": {"a": 2}, "i": {"n": 1}}
            );
        }
    }

    // replacement (§4.6): full document, no $v
    let rep = &e[6];
    assert_common(rep, true);
    assert_eq!(rep.get_document("o").unwrap(), &doc! {"_id": 2, "x": "new"});
    assert_eq!(rep.get_document("o2").unwrap(), &doc! {"_id": 2});

    // delete (§4.7)
    let del = &e[7];
    assert_common(del, true);
    assert_eq!(del.get_document("o").unwrap(), &doc! {"_id": 3});
    assert!(del.get("o2").is_none());

    // upsert logged as insert
    let ups = &e[8];
    assert_eq!(ups.get_document("o").unwrap(), &doc! {"_id": 9, "u": true});
    assert!(ups.get("b").is_none());
}

fn crate_num(v: Option<&Bson>) -> f64 {
    match v {
        Some(Bson::Int32(i)) => *i as f64,
        Some(Bson::Int64(i)) => *i as f64,
        Some(Bson::Double(d)) => *d,
        other => panic!("not a number: {other:?}"),
    }
}

#[tokio::test]
async fn crud_entries_7_0() {
    crud_entries_for(ServerVersion::V7_0).await;
}

#[tokio::test]
async fn crud_entries_4_4() {
    crud_entries_for(ServerVersion::V4_4).await;
}

async fn ddl_entries_for(version: ServerVersion) {
    let server = TestServer::start(Options::new().version(version));
    let client = server.client().await;
    let db = unique_db("ddl");
    let d = client.database(&db);
    let start = last_ts(&client).await;
    ddl_writes(&client, &d, &db).await;

    let e = entries_after(&client, &db, start).await;
    let summary = ddl_summary(&e);
    assert_eq!(
        summary,
        vec![
            "c:create",
            "i:_id",
            "c:startIndexBuild",
            "c:commitIndexBuild",
            "c:dropIndexes",
            "c:renameCollection",
            "c:drop",
            "c:create",
            "c:createIndexes",
            "c:drop",
            "c:dropDatabase",
        ],
        "{e:#?}"
    );
    let ui = assert_create_and_index_entries(&e);
    assert_rename_and_drop_entries(&e, &db, ui);
}

/// Creates a capped collection, builds and drops an index, renames and drops the collection,
/// creates another one with an index, and drops the database.
async fn ddl_writes(client: &Client, d: &mongodb::Database, db: &str) {
    d.create_collection("cap")
        .capped(true)
        .size(1000)
        .max(10)
        .await
        .unwrap();
    d.collection::<Document>("cap")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    d.run_command(doc! {"createIndexes": "cap", "indexes": [{"key": {"a": 1}, "name": "a_1"}]})
        .await
        .unwrap();
    d.run_command(doc! {"dropIndexes": "cap", "index": "a_1"})
        .await
        .unwrap();
    client
        .database("admin")
        .run_command(doc! {"renameCollection": format!("{db}.cap"), "to": format!("{db}.cap2")})
        .await
        .unwrap();
    d.collection::<Document>("cap2").drop().await.unwrap();
    d.create_collection("e").await.unwrap();
    d.run_command(doc! {"createIndexes": "e", "indexes": [{"key": {"b": -1}, "name": "b_-1", "unique": true}]})
        .await
        .unwrap();
    d.drop().await.unwrap();
}

/// `op:first key of o` of each entry.
fn ddl_summary(e: &[Document]) -> Vec<String> {
    e.iter()
        .map(|x| {
            let o = x.get_document("o").unwrap();
            format!("{}:{}", x.get_str("op").unwrap(), o.keys().next().unwrap())
        })
        .collect()
}

/// The capped create, the index build start and the dropIndexes entries; returns the
/// collection's UUID.
fn assert_create_and_index_entries(e: &[Document]) -> Option<Bson> {
    let create = &e[0];
    assert_common(create, true);
    assert_eq!(
        create.get_document("o").unwrap(),
        &doc! {"create": "cap", "capped": true, "size": 1024, "max": 10,
        "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
    );
    let ui = create.get("ui").cloned();
    let start_build = e[2].get_document("o").unwrap();
    assert_eq!(
        start_build.get_array("indexes").unwrap()[0],
        Bson::Document(doc! {"v": 2, "key": {"a": 1}, "name": "a_1"})
    );
    assert!(
        matches!(start_build.get("indexBuildUUID"), Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid)
    );
    let drop_ix = &e[4];
    assert_eq!(
        drop_ix.get_document("o").unwrap(),
        &doc! {"dropIndexes": "cap", "index": "a_1"}
    );
    assert_eq!(
        drop_ix.get_document("o2").unwrap(),
        &doc! {"v": 2, "key": {"a": 1}, "name": "a_1"}
    );
    ui
}

/// The rename (same UUID `ui`), drop, createIndexes and dropDatabase entries.
fn assert_rename_and_drop_entries(e: &[Document], db: &str, ui: Option<Bson>) {
    let rename = &e[5];
    assert_common(rename, true);
    assert_eq!(rename.get("ui").cloned(), ui, "rename keeps the UUID");
    assert_eq!(
        rename.get_document("o").unwrap(),
        &doc! {"renameCollection": format!("{db}.cap"), "to": format!("{db}.cap2"), "stayTemp": false}
    );
    let drop = &e[6];
    assert_common(drop, true);
    assert_eq!(drop.get("ui").cloned(), ui);
    assert_eq!(drop.get_document("o").unwrap(), &doc! {"drop": "cap2"});
    assert_eq!(drop.get_document("o2").unwrap(), &doc! {"numRecords": 1});
    let ci = &e[8];
    assert_eq!(
        ci.get_document("o").unwrap(),
        &doc! {"createIndexes": "e", "v": 2, "key": {"b": -1}, "name": "b_-1", "unique": true}
    );
    let dd = &e[10];
    assert_common(dd, false);
    assert_eq!(dd.get_str("ns").unwrap(), format!("{db}.$cmd"));
    assert_eq!(dd.get_document("o").unwrap(), &doc! {"dropDatabase": 1});
}

#[tokio::test]
async fn ddl_entries_7_0() {
    ddl_entries_for(ServerVersion::V7_0).await;
}

#[tokio::test]
async fn ddl_entries_4_4() {
    ddl_entries_for(ServerVersion::V4_4).await;
}

async fn retryable_entries_for(version: ServerVersion) {
    let server = TestServer::start(Options::new().version(version));
    let client = server.client().await;
    let db = unique_db("retry");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let start = last_ts(&client).await;
    let mut session = client.start_session().await.unwrap();
    // the driver sends lsid + txnNumber for retryable single-document writes
    coll.insert_one(doc! {"_id": 1})
        .session(&mut session)
        .await
        .unwrap();
    coll.insert_many(vec![doc! {"_id": 2}, doc! {"_id": 3}])
        .session(&mut session)
        .await
        .unwrap();
    let op_time = session.operation_time().expect("operationTime");
    let e = entries_after(&client, &db, start).await;
    assert_eq!(e.len(), 3, "{e:#?}");
    for x in &e {
        assert_common(x, true);
        let lsid = x.get_document("lsid").unwrap();
        assert!(
            matches!(lsid.get("id"), Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid)
        );
        match lsid.get("uid") {
            Some(Bson::Binary(b)) => {
                assert_eq!(b.subtype, BinarySubtype::Generic);
                assert_eq!(b.bytes.len(), 32);
            }
            other => panic!("uid: {other:?}"),
        }
        assert!(matches!(x.get("txnNumber"), Some(Bson::Int64(_))));
        assert!(matches!(x.get("stmtId"), Some(Bson::Int32(_))));
        let prev = x.get_document("prevOpTime").unwrap();
        assert!(matches!(prev.get("ts"), Some(Bson::Timestamp(_))));
        assert!(matches!(prev.get("t"), Some(Bson::Int64(_))));
    }
    // first write of each txnNumber points at the null optime
    let null = doc! {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64};
    assert_eq!(e[0].get_document("prevOpTime").unwrap(), &null);
    assert_eq!(e[1].get_document("prevOpTime").unwrap(), &null);
    // the second statement of insert_many chains to the first
    assert_eq!(
        e[2].get_document("prevOpTime").unwrap(),
        &doc! {"ts": e[1].get_timestamp("ts").unwrap(), "t": 1i64}
    );
    assert_eq!(e[1].get_i32("stmtId").unwrap(), 0);
    assert_eq!(e[2].get_i32("stmtId").unwrap(), 1);
    assert!(e[1].get_i64("txnNumber").unwrap() > e[0].get_i64("txnNumber").unwrap());
    assert_eq!(
        keys(&e[0])[..3],
        ["lsid", "txnNumber", "op"],
        "session fields first"
    );
    // operationTime of the write is the ts of its last entry
    assert_eq!(op_time, e[2].get_timestamp("ts").unwrap());

    // retryable findAndModify: 4.4 links a no-op image entry, 6.0+ marks needsRetryImage
    let start = last_ts(&client).await;
    let after = coll
        .find_one_and_update(doc! {"_id": 1}, doc! {"$set": {"x": 1}})
        .return_document(mongodb::options::ReturnDocument::After)
        .session(&mut session)
        .await
        .unwrap();
    assert_eq!(after, Some(doc! {"_id": 1, "x": 1}));
    let e = entries_after(&client, &db, start).await;
    match version {
        ServerVersion::V4_4 => {
            assert_eq!(e.len(), 2, "{e:#?}");
            assert_eq!(e[0].get_str("op").unwrap(), "n");
            assert_eq!(e[0].get_str("ns").unwrap(), format!("{db}.c"));
            assert_eq!(e[0].get_document("o").unwrap(), &doc! {"_id": 1, "x": 1});
            assert_eq!(e[1].get_str("op").unwrap(), "u");
            assert_eq!(
                e[1].get_document("postImageOpTime").unwrap(),
                &doc! {"ts": e[0].get_timestamp("ts").unwrap(), "t": 1i64}
            );
            assert_eq!(e[0].get("prevOpTime"), e[1].get("prevOpTime"));
        }
        _ => {
            assert_eq!(e.len(), 1, "{e:#?}");
            assert_eq!(e[0].get_str("needsRetryImage").unwrap(), "postImage");
        }
    }
}

#[tokio::test]
async fn retryable_write_entries_7_0() {
    retryable_entries_for(ServerVersion::V7_0).await;
}

#[tokio::test]
async fn retryable_write_entries_4_4() {
    retryable_entries_for(ServerVersion::V4_4).await;
}

#[tokio::test]
async fn multi_update_failing_midway_keeps_and_logs_earlier_writes() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("midway");
    let d = client.database(&db);
    let coll = d.collection::<Document>("c");
    coll.insert_many(vec![
        doc! {"_id": 1, "k": 1},
        doc! {"_id": 2, "k": 2},
        doc! {"_id": 3, "k": 10},
    ])
    .await
    .unwrap();
    d.run_command(
        doc! {"createIndexes": "c", "indexes": [{"key": {"k": 1}, "name": "k_1", "unique": true}]},
    )
    .await
    .unwrap();
    let start = last_ts(&client).await;
    let r = d
        .run_command(doc! {"update": "c", "updates": [{"q": {"_id": {"$in": [2, 1]}}, "u": {"$inc": {"k": 8}}, "multi": true}]})
        .await
        .unwrap();
    // $natural order: _id 1 (k 1 -> 9) succeeds, _id 2 (k 2 -> 10) collides with _id 3
    let we = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(we.get_i32("code").unwrap(), 11000);
    assert_eq!(
        coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap(),
        doc! {"_id": 1, "k": 9}
    );
    let e = entries_after(&client, &db, start).await;
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].get_document("o2").unwrap(), &doc! {"_id": 1});
}

#[tokio::test]
async fn views_are_stored_in_system_views() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("views");
    let start = last_ts(&client).await;
    client
        .database(&db)
        .run_command(doc! {"create": "v", "viewOn": "src", "pipeline": [{"$match": {"a": 1}}]})
        .await
        .unwrap();
    let e = entries_after(&client, &db, start).await;
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        e[0].get_document("o").unwrap().get_str("create").unwrap(),
        "system.views"
    );
    assert_eq!(e[1].get_str("op").unwrap(), "i");
    assert_eq!(e[1].get_str("ns").unwrap(), format!("{db}.system.views"));
    assert_eq!(
        e[1].get_document("o").unwrap(),
        &doc! {"_id": format!("{db}.v"), "viewOn": "src", "pipeline": [{"$match": {"a": 1}}]}
    );
}

#[tokio::test]
async fn standalone_has_no_oplog() {
    if std::env::var("MONGODB_URI").is_ok() {
        return; // a real deployment's topology is not ours to choose
    }
    let server = TestServer::start(Options::new().standalone());
    let client = server.client().await;
    let db = unique_db("sa");
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(doc! {"x": 1})
        .await
        .unwrap();
    let names = client
        .database("local")
        .list_collection_names()
        .await
        .unwrap();
    assert!(!names.contains(&"oplog.rs".to_string()), "{names:?}");
    let n = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn initial_entries_and_periodic_noop() {
    if std::env::var("MONGODB_URI").is_ok() {
        return; // interval is a simulator option
    }
    let server =
        TestServer::start(Options::new().noop_interval(std::time::Duration::from_millis(100)));
    let client = server.client().await;
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let first = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.get_str("op").unwrap(), "n");
    assert_eq!(first.get_str("ns").unwrap(), "");
    assert_eq!(
        first.get_document("o").unwrap(),
        &doc! {"msg": "initiating set"}
    );
    assert_common(&first, false);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let noops = oplog
        .count_documents(doc! {"o.msg": "periodic noop"})
        .await
        .unwrap();
    assert!(
        noops >= 1,
        "no periodic noop after 500 ms with a 100 ms interval"
    );
}
