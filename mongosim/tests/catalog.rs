//! Catalog commands through the official driver (reference §7.1–7.4, §4.8): create (capped,
//! views), listCollections, listIndexes, listDatabases, renameCollection, drop,
//! dropDatabase, createIndexes/dropIndexes, collMod, collStats / `$collStats`.

mod common;

use bson::{doc, spec::BinarySubtype, Bson, Document};
use common::{command_error, run, unique_db, TestServer};
use futures::TryStreamExt;

async fn collections(client: &mongodb::Client, db: &str, filter: Document) -> Vec<Document> {
    let r = run(client, db, doc! {"listCollections": 1, "filter": filter})
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(
        c.get_str("ns").unwrap(),
        format!("{db}.$cmd.listCollections")
    );
    assert!(matches!(c.get("id"), Some(Bson::Int64(0))));
    c.get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|b| b.as_document().unwrap().clone())
        .collect()
}

fn uuid_of(spec: &Document) -> Bson {
    let info = spec.get_document("info").unwrap();
    let ui = info.get("uuid").unwrap().clone();
    assert!(matches!(&ui, Bson::Binary(b) if b.subtype == BinarySubtype::Uuid));
    ui
}

#[tokio::test]
async fn list_collections_with_views_capped_and_uuids() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("cat");
    let d = client.database(&db);
    d.create_collection("plain").await.unwrap();
    d.create_collection("cap")
        .capped(true)
        .size(5000)
        .max(3)
        .await
        .unwrap();
    d.run_command(doc! {"create": "v", "viewOn": "plain", "pipeline": [{"$project": {"a": 1}}]})
        .await
        .unwrap();

    let all = collections(&client, &db, doc! {}).await;
    let names: Vec<&str> = all.iter().map(|c| c.get_str("name").unwrap()).collect();
    assert_eq!(names, vec!["cap", "plain", "system.views", "v"]);
    let plain = &all[1];
    assert_eq!(plain.get_str("type").unwrap(), "collection");
    assert_eq!(plain.get_document("options").unwrap(), &doc! {});
    assert!(!plain
        .get_document("info")
        .unwrap()
        .get_bool("readOnly")
        .unwrap());
    assert_eq!(
        plain.get_document("idIndex").unwrap(),
        &doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    );
    uuid_of(plain);
    let cap = &all[0];
    assert_eq!(
        cap.get_document("options").unwrap(),
        &doc! {"capped": true, "size": 5120, "max": 3}
    );
    let view = &all[3];
    assert_eq!(view.get_str("type").unwrap(), "view");
    assert_eq!(
        view.get_document("options").unwrap(),
        &doc! {"viewOn": "plain", "pipeline": [{"$project": {"a": 1}}]}
    );
    assert_eq!(view.get_document("info").unwrap(), &doc! {"readOnly": true});
    assert!(view.get("idIndex").is_none());

    // filters and nameOnly
    let views = collections(&client, &db, doc! {"type": "view"}).await;
    assert_eq!(views.len(), 1);
    let mut names = d.list_collection_names().await.unwrap();
    names.sort();
    assert_eq!(names, vec!["cap", "plain", "system.views", "v"]);
    let r = run(
        &client,
        &db,
        doc! {"listCollections": 1, "nameOnly": true, "filter": {"name": "plain"}},
    )
    .await
    .unwrap();
    assert_eq!(
        r.get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap(),
        &vec![Bson::Document(doc! {"name": "plain", "type": "collection"})]
    );
    // the driver's typed API parses the specifications
    let specs: Vec<_> = d
        .list_collections()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(specs.len(), 4);

    // create on an existing name: 48
    let err = d.create_collection("plain").await.unwrap_err();
    let (code, name, msg) = command_error(&err);
    assert_eq!((code, name.as_str()), (48, "NamespaceExists"));
    assert_eq!(msg, format!("Collection {db}.plain already exists."));
    let err = d.create_collection("v").await.unwrap_err();
    assert_eq!(command_error(&err).0, 48);
    // capped without size
    let err = run(&client, &db, doc! {"create": "c2", "capped": true})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 72);

    // the oplog is listed in local
    let local = collections(&client, "local", doc! {"name": "oplog.rs"}).await;
    assert_eq!(local.len(), 1);
    assert!(local[0]
        .get_document("options")
        .unwrap()
        .get_bool("capped")
        .unwrap());
    // unknown database: empty
    assert!(collections(&client, &unique_db("nope"), doc! {})
        .await
        .is_empty());
}

#[tokio::test]
async fn rename_keeps_uuid_drop_and_recreate_changes_it() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("ren");
    let d = client.database(&db);
    d.collection::<Document>("a")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let ui = uuid_of(&collections(&client, &db, doc! {"name": "a"}).await[0]);
    let admin = client.database("admin");
    admin
        .run_command(doc! {"renameCollection": format!("{db}.a"), "to": format!("{db}.b")})
        .await
        .unwrap();
    let b = collections(&client, &db, doc! {"name": "b"}).await;
    assert_eq!(uuid_of(&b[0]), ui);
    assert!(collections(&client, &db, doc! {"name": "a"})
        .await
        .is_empty());
    assert_eq!(
        d.collection::<Document>("b")
            .find_one(doc! {})
            .await
            .unwrap(),
        Some(doc! {"_id": 1})
    );
    // errors: not admin, missing source, existing target without dropTarget, same name
    let err = d
        .run_command(doc! {"renameCollection": format!("{db}.b"), "to": format!("{db}.c")})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 13);
    let err = admin
        .run_command(doc! {"renameCollection": format!("{db}.zz"), "to": format!("{db}.c")})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 26);
    d.create_collection("t").await.unwrap();
    let err = admin
        .run_command(doc! {"renameCollection": format!("{db}.b"), "to": format!("{db}.t")})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 48);
    admin
        .run_command(doc! {"renameCollection": format!("{db}.b"), "to": format!("{db}.t"), "dropTarget": true})
        .await
        .unwrap();
    assert_eq!(
        uuid_of(&collections(&client, &db, doc! {"name": "t"}).await[0]),
        ui
    );
    // across databases: the documents move, the target gets a new collection
    let other = unique_db("ren2");
    admin
        .run_command(doc! {"renameCollection": format!("{db}.t"), "to": format!("{other}.moved")})
        .await
        .unwrap();
    assert_eq!(
        client
            .database(&other)
            .collection::<Document>("moved")
            .find_one(doc! {})
            .await
            .unwrap(),
        Some(doc! {"_id": 1})
    );
    assert!(collections(&client, &db, doc! {"name": "t"})
        .await
        .is_empty());

    // drop + create: new UUID
    let moved = collections(&client, &other, doc! {"name": "moved"}).await;
    let u1 = uuid_of(&moved[0]);
    let r = run(&client, &other, doc! {"drop": "moved"}).await.unwrap();
    assert_eq!(r.get_i32("nIndexesWas").unwrap(), 1);
    assert_eq!(r.get_str("ns").unwrap(), format!("{other}.moved"));
    client
        .database(&other)
        .create_collection("moved")
        .await
        .unwrap();
    let u2 = uuid_of(&collections(&client, &other, doc! {"name": "moved"}).await[0]);
    assert_ne!(u1, u2);
}

#[tokio::test]
async fn indexes_create_list_drop() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("ix");
    let d = client.database(&db);
    let r = d
        .run_command(doc! {"createIndexes": "c", "indexes": [
            {"key": {"a": 1}, "name": "a_1"},
            {"key": {"b": -1, "c": 1}, "name": "b_-1_c_1", "unique": true},
        ]})
        .await
        .unwrap();
    assert_eq!(r.get_i32("numIndexesBefore").unwrap(), 1);
    assert_eq!(r.get_i32("numIndexesAfter").unwrap(), 3);
    assert!(r.get_bool("createdCollectionAutomatically").unwrap());
    let r = d
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "a_1"}]})
        .await
        .unwrap();
    assert_eq!(r.get_str("note").unwrap(), "all indexes already exist");
    let r = run(&client, &db, doc! {"listIndexes": "c"}).await.unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_str("ns").unwrap(), format!("{db}.$cmd.listIndexes.c"));
    let specs: Vec<Document> = c
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|b| b.as_document().unwrap().clone())
        .collect();
    assert_eq!(
        specs,
        vec![
            doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            doc! {"v": 2, "key": {"a": 1}, "name": "a_1"},
            doc! {"v": 2, "key": {"b": -1, "c": 1}, "name": "b_-1_c_1", "unique": true},
        ]
    );
    let names = d
        .collection::<Document>("c")
        .list_index_names()
        .await
        .unwrap();
    assert_eq!(names.len(), 3);
    // same name, different key: 86; same key, different name: 85
    let err = d
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"z": 1}, "name": "a_1"}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 86);
    let err = d
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "other"}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 85);
    let r = d
        .run_command(doc! {"dropIndexes": "c", "index": "a_1"})
        .await
        .unwrap();
    assert_eq!(r.get_i32("nIndexesWas").unwrap(), 3);
    let err = d
        .run_command(doc! {"dropIndexes": "c", "index": "a_1"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 27);
    let err = d
        .run_command(doc! {"dropIndexes": "c", "index": "_id_"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 72);
    d.run_command(doc! {"dropIndexes": "c", "index": "*"})
        .await
        .unwrap();
    assert_eq!(
        d.collection::<Document>("c")
            .list_index_names()
            .await
            .unwrap(),
        vec!["_id_".to_string()]
    );
    let err = run(&client, &db, doc! {"listIndexes": "missing"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 26);
}

#[tokio::test]
async fn list_databases_drop_database_and_stats() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("ldb");
    let d = client.database(&db);
    d.collection::<Document>("c")
        .insert_many((0..10).map(|i| doc! {"_id": i, "pad": "0123456789"}))
        .await
        .unwrap();
    let names = client.list_database_names().await.unwrap();
    assert!(names.contains(&db), "{names:?}");
    assert!(names.contains(&"local".to_string()));
    let specs: Vec<_> = client.list_databases().await.unwrap();
    let mine = specs.iter().find(|s| s.name == db).unwrap();
    assert!(!mine.empty);
    assert!(mine.size_on_disk > 0);
    let r = client
        .database("admin")
        .run_command(doc! {"listDatabases": 1, "filter": {"name": &db}})
        .await
        .unwrap();
    assert_eq!(r.get_array("databases").unwrap().len(), 1);
    assert!(r.get("totalSize").is_some());
    let r = client
        .database("admin")
        .run_command(doc! {"listDatabases": 1, "nameOnly": true, "filter": {"name": &db}})
        .await
        .unwrap();
    assert_eq!(
        r.get_array("databases").unwrap(),
        &vec![Bson::Document(doc! {"name": &db})]
    );
    assert!(r.get("totalSize").is_none());
    let err = d.run_command(doc! {"listDatabases": 1}).await.unwrap_err();
    assert_eq!(command_error(&err).0, 13);

    // collStats and $collStats
    let s = d.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert_eq!(s.get_str("ns").unwrap(), format!("{db}.c"));
    assert_eq!(s.get("count").and_then(Bson::as_i64), Some(10));
    assert!(s.get("avgObjSize").is_some());
    assert!(!s.get_bool("capped").unwrap());
    let s = d.run_command(doc! {"collStats": "missing"}).await.unwrap();
    assert_eq!(s.get("count").and_then(Bson::as_i64), Some(0));
    assert!(s.get("avgObjSize").is_none());
    let out: Vec<Document> = d
        .collection::<Document>("c")
        .aggregate(vec![doc! {"$collStats": {"count": {}, "storageStats": {}}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].get_i64("count").unwrap(), 10);
    assert_eq!(
        out[0]
            .get_document("storageStats")
            .unwrap()
            .get("count")
            .and_then(Bson::as_i64),
        Some(10)
    );
    let err = d
        .collection::<Document>("missing")
        .aggregate(vec![doc! {"$collStats": {"count": {}}}])
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 26);

    // collMod stores changeStreamPreAndPostImages
    d.run_command(doc! {"collMod": "c", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    let spec = collections(&client, &db, doc! {"name": "c"}).await;
    assert_eq!(
        spec[0].get_document("options").unwrap(),
        &doc! {"changeStreamPreAndPostImages": {"enabled": true}}
    );

    let r = d.run_command(doc! {"dropDatabase": 1}).await.unwrap();
    assert_eq!(r.get_str("dropped").unwrap(), db);
    let names = client.list_database_names().await.unwrap();
    assert!(!names.contains(&db));
}

#[tokio::test]
async fn db_stats_and_database_name_case() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("Stats");
    let d = client.database(&db);
    let empty = d.run_command(doc! {"dbStats": 1}).await.unwrap();
    assert_eq!(empty.get_str("db").unwrap(), db);
    assert_eq!(empty.get_f64("avgObjSize").unwrap(), 0.0);
    d.collection::<Document>("c")
        .insert_many(vec![doc! {"_id": 1}, doc! {"_id": 2}])
        .await
        .unwrap();
    let s = d.run_command(doc! {"dbStats": 1}).await.unwrap();
    assert_eq!(s.get("collections").and_then(Bson::as_i64), Some(1));
    assert_eq!(s.get("objects").and_then(Bson::as_i64), Some(2));
    assert!(s.get_f64("avgObjSize").unwrap() > 0.0);
    // a database differing only in case cannot be created
    let lower = db.to_lowercase();
    let err = client
        .database(&lower)
        .collection::<Document>("c")
        .insert_one(doc! {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("13297") || err.to_string().contains("different case"),
        "{err}"
    );
}
