//! CRUD through the official driver: every supported update and query operator, write
//! replies and write errors (reference §8.2, §8.5, §8.7), findAndModify, count, distinct,
//! cursors and batches (§3.2).

mod common;

use bson::{doc, Bson, Document};
use common::{command_error, run, unique_db, TestServer};
use futures::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

async fn setup() -> (TestServer, mongodb::Client, String) {
    let server = TestServer::default_rs();
    let client = server.client().await;
    (server, client, unique_db("crud"))
}

#[tokio::test]
async fn update_operators() {
    let (_s, client, db) = setup().await;
    let coll = client.database(&db).collection::<Document>("u");
    let base = doc! {
        "_id": 1, "a": 1, "b": 2.5, "s": "x", "arr": [1, 2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]},
        "tags": ["a", "b"], "n": 10,
    };
    // (update, expected document after it) applied to a fresh copy of `base`
    let cases: Vec<(Document, Document)> = vec![
        (
            doc! {"$set": {"a": 5, "o.p": 2, "new": true}},
            doc! {"_id": 1, "a": 5, "b": 2.5, "s": "x", "arr": [1, 2, 3, 2], "o": {"p": 2, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 10, "new": true},
        ),
        (
            doc! {"$unset": {"s": "", "o.p": 1}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "arr": [1, 2, 3, 2], "o": {"q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 10},
        ),
        (
            doc! {"$inc": {"a": 2, "b": 1, "z": 1}},
            doc! {"_id": 1, "a": 3, "b": 3.5, "s": "x", "arr": [1, 2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 10, "z": 1},
        ),
        (
            doc! {"$mul": {"n": 3, "m": 2}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "s": "x", "arr": [1, 2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 30, "m": 0},
        ),
        (
            doc! {"$min": {"n": 5, "a": 7}, "$max": {"b": 9}},
            doc! {"_id": 1, "a": 1, "b": 9, "s": "x", "arr": [1, 2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 5},
        ),
        (
            doc! {"$rename": {"s": "t"}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "arr": [1, 2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 10, "t": "x"},
        ),
        (
            doc! {"$push": {"arr": 4, "tags": {"$each": ["c", "d"], "$slice": -3}}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "s": "x", "arr": [1, 2, 3, 2, 4], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["b", "c", "d"], "n": 10},
        ),
        (
            doc! {"$pull": {"arr": 2}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "s": "x", "arr": [1, 3], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 10},
        ),
        (
            doc! {"$addToSet": {"tags": {"$each": ["b", "c"]}}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "s": "x", "arr": [1, 2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b", "c"], "n": 10},
        ),
        (
            doc! {"$pop": {"arr": -1}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "s": "x", "arr": [2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 2}]}, "tags": ["a", "b"], "n": 10},
        ),
        (
            doc! {"$set": {"o.q.1.k": 5}},
            doc! {"_id": 1, "a": 1, "b": 2.5, "s": "x", "arr": [1, 2, 3, 2], "o": {"p": 1, "q": [{"k": 1}, {"k": 5}]}, "tags": ["a", "b"], "n": 10},
        ),
        (doc! {"$setOnInsert": {"never": 1}}, base.clone()),
    ];
    for (i, (update, expected)) in cases.into_iter().enumerate() {
        coll.delete_many(doc! {}).await.unwrap();
        coll.insert_one(base.clone()).await.unwrap();
        let r = coll
            .update_one(doc! {"_id": 1}, update.clone())
            .await
            .unwrap();
        assert_eq!(r.matched_count, 1, "case {i}");
        let got = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
        assert_eq!(got, expected, "case {i}: {update}");
    }

    // $currentDate sets a Date
    coll.update_one(doc! {"_id": 1}, doc! {"$currentDate": {"when": true}})
        .await
        .unwrap();
    let got = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert!(matches!(got.get("when"), Some(Bson::DateTime(_))));

    // positional $ and arrayFilters
    coll.update_one(doc! {"_id": 1, "o.q.k": 2}, doc! {"$set": {"o.q.$.k": 20}})
        .await
        .unwrap();
    let got = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(
        got.get_document("o").unwrap().get_array("q").unwrap(),
        &vec![
            Bson::Document(doc! {"k": 1}),
            Bson::Document(doc! {"k": 20})
        ]
    );
    coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"o.q.$[e].k": 1}})
        .array_filters(vec![doc! {"e.k": {"$gte": 1}}])
        .await
        .unwrap();
    let got = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(
        got.get_document("o").unwrap().get_array("q").unwrap(),
        &vec![
            Bson::Document(doc! {"k": 2}),
            Bson::Document(doc! {"k": 21})
        ]
    );

    // unknown operator: the server's error, not a silent no-op
    let err = coll
        .update_one(doc! {"_id": 1}, doc! {"$frobnicate": {"a": 1}})
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Unknown modifier: $frobnicate"), "{msg}");
}

#[tokio::test]
async fn query_operators() {
    let (_s, client, db) = setup().await;
    let coll = client.database(&db).collection::<Document>("q");
    coll.insert_many(vec![
        doc! {"_id": 1, "a": 1, "s": "apple", "arr": [1, 2, 3], "sub": {"x": 1}, "items": [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]},
        doc! {"_id": 2, "a": 2.0, "s": "banana", "arr": [4], "sub": {"x": 2}, "items": [{"k": 3, "v": "c"}]},
        doc! {"_id": 3, "a": "str", "s": "cherry", "arr": [], "n": Bson::Null},
        doc! {"_id": 4, "a": Bson::Int64(3), "s": "Apricot", "arr": [1, 4]},
    ])
    .await
    .unwrap();
    let cases: Vec<(Document, Vec<i32>)> = vec![
        (doc! {"a": 1}, vec![1]),
        (doc! {"a": {"$eq": 2}}, vec![2]),
        (doc! {"a": {"$ne": 1}}, vec![2, 3, 4]),
        (doc! {"a": {"$gt": 1}}, vec![2, 4]),
        (doc! {"a": {"$gte": 2}}, vec![2, 4]),
        (doc! {"a": {"$lt": 3}}, vec![1, 2]),
        (doc! {"a": {"$lte": 3}}, vec![1, 2, 4]),
        (doc! {"a": {"$in": [1, "str"]}}, vec![1, 3]),
        (doc! {"a": {"$nin": [1, "str"]}}, vec![2, 4]),
        (doc! {"n": {"$exists": true}}, vec![3]),
        (doc! {"sub": {"$exists": false}}, vec![3, 4]),
        (doc! {"$and": [{"arr": 1}, {"arr": 4}]}, vec![4]),
        (doc! {"$or": [{"a": 1}, {"s": "cherry"}]}, vec![1, 3]),
        (doc! {"$nor": [{"a": 1}, {"s": "cherry"}]}, vec![2, 4]),
        (doc! {"a": {"$not": {"$gt": 1}}}, vec![1, 3]),
        (doc! {"a": {"$type": "string"}}, vec![3]),
        (doc! {"a": {"$type": "number"}}, vec![1, 2, 4]),
        (doc! {"s": {"$regex": "^a", "$options": "i"}}, vec![1, 4]),
        (
            doc! {"s": bson::Regex { pattern: "an".into(), options: String::new() }},
            vec![2],
        ),
        (
            doc! {"items": {"$elemMatch": {"k": {"$gt": 1}, "v": "b"}}},
            vec![1],
        ),
        (doc! {"arr": {"$size": 0}}, vec![3]),
        (doc! {"arr": {"$size": 3}}, vec![1]),
        (doc! {"sub.x": 2}, vec![2]),
        (doc! {"items.k": 3}, vec![2]),
        (doc! {"arr.0": 1}, vec![1, 4]),
        (doc! {"arr": {"$all": [1, 4]}}, vec![4]),
        (doc! {"a": {"$mod": [2, 0]}}, vec![2]),
        (doc! {"n": Bson::Null}, vec![2, 1, 4, 3]),
    ];
    for (filter, mut expected) in cases {
        expected.sort();
        let mut ids: Vec<i32> = coll
            .find(filter.clone())
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(|d| d.get_i32("_id").unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, expected, "filter {filter}");
    }
    let err = coll.find(doc! {"a": {"$bogus": 1}}).await.unwrap_err();
    let (code, _, msg) = command_error(&err);
    assert_eq!(code, 2);
    assert!(msg.contains("unknown operator: $bogus"), "{msg}");
}

#[tokio::test]
async fn find_sort_projection_skip_limit_batches() {
    let (_s, client, db) = setup().await;
    let coll = client.database(&db).collection::<Document>("f");
    coll.insert_many((0..250).map(|i| doc! {"_id": i, "g": i % 3, "x": i}))
        .await
        .unwrap();
    // default first batch: 101 documents
    let r = run(&client, &db, doc! {"find": "f"}).await.unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("firstBatch").unwrap().len(), 101);
    assert!(matches!(c.get("id"), Some(Bson::Int64(id)) if *id != 0));
    assert_eq!(c.get_str("ns").unwrap(), format!("{db}.f"));
    let id = c.get_i64("id").unwrap();
    let more = run(&client, &db, doc! {"getMore": id, "collection": "f"})
        .await
        .unwrap();
    let m = more.get_document("cursor").unwrap();
    assert_eq!(m.get_array("nextBatch").unwrap().len(), 149);
    assert_eq!(m.get("id"), Some(&Bson::Int64(0)));

    // batchSize 0: empty first batch, open cursor
    let r = run(&client, &db, doc! {"find": "f", "batchSize": 0})
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert!(c.get_array("firstBatch").unwrap().is_empty());
    assert_ne!(c.get_i64("id").unwrap(), 0);

    // singleBatch closes the cursor
    let r = run(
        &client,
        &db,
        doc! {"find": "f", "batchSize": 5, "singleBatch": true},
    )
    .await
    .unwrap();
    assert_eq!(
        r.get_document("cursor").unwrap().get("id"),
        Some(&Bson::Int64(0))
    );

    let docs: Vec<Document> = coll
        .find(doc! {"g": 1})
        .sort(doc! {"x": -1})
        .skip(2)
        .limit(3)
        .projection(doc! {"_id": 0, "x": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        docs,
        vec![doc! {"x": 241}, doc! {"x": 238}, doc! {"x": 235}]
    );

    // whole collection through the driver in batches of 7
    let all: Vec<Document> = coll
        .find(doc! {})
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(all[249].get_i32("_id").unwrap(), 249);

    // hints must name an existing index
    let r = run(&client, &db, doc! {"find": "f", "hint": "_id_", "limit": 1})
        .await
        .unwrap();
    assert_eq!(
        r.get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .len(),
        1
    );
    let err = run(&client, &db, doc! {"find": "f", "hint": {"nope": 1}})
        .await
        .unwrap_err();
    let (code, _, msg) = command_error(&err);
    assert_eq!(code, 2);
    assert!(
        msg.ends_with("hint provided does not correspond to an existing index"),
        "{msg}"
    );
    // negative skip
    let err = run(&client, &db, doc! {"find": "f", "skip": -1})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 51024);
    // unknown field
    let err = run(&client, &db, doc! {"find": "f", "bogus": 1})
        .await
        .unwrap_err();
    let (code, _, msg) = command_error(&err);
    assert_eq!(code, 40415);
    assert_eq!(msg, "BSON field 'find.bogus' is an unknown field.");
}

#[tokio::test]
async fn write_replies_insert_and_duplicate_keys() {
    let (_s, client, db) = setup().await;
    let d = client.database(&db);
    // unordered insert continues after a duplicate; ok: 1 with writeErrors
    let r = d
        .run_command(doc! {"insert": "w", "documents": [{"_id": 1}, {"_id": 1}, {"_id": 2}], "ordered": false})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 2);
    let we = r.get_array("writeErrors").unwrap();
    assert_eq!(we.len(), 1);
    let we = we[0].as_document().unwrap();
    assert_eq!(we.get_i32("index").unwrap(), 1);
    assert_eq!(we.get_i32("code").unwrap(), 11000);
    assert_eq!(
        we.get_str("errmsg").unwrap(),
        format!("E11000 duplicate key error collection: {db}.w index: _id_ dup key: {{ _id: 1 }}")
    );
    assert_eq!(we.get_document("keyPattern").unwrap(), &doc! {"_id": 1});
    assert_eq!(we.get_document("keyValue").unwrap(), &doc! {"_id": 1});
    assert!(matches!(r.get("opTime"), Some(Bson::Document(_))));
    assert!(matches!(r.get("electionId"), Some(Bson::ObjectId(_))));
    // ordered insert stops at the first error
    let r = d
        .run_command(doc! {"insert": "w", "documents": [{"_id": 3}, {"_id": 1}, {"_id": 4}]})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 1);

    // a unique index over documents that all lack the field: duplicate nulls (E11000)
    let err = d
        .run_command(doc! {"createIndexes": "w", "indexes": [{"key": {"email": 1}, "name": "email_1", "unique": true}]})
        .await
        .unwrap_err();
    let (code, _, msg) = command_error(&err);
    assert_eq!(code, 11000);
    assert!(msg.ends_with("dup key: { email: null }"), "{msg}");
}

#[tokio::test]
async fn write_replies_unique_index_update_and_delete() {
    let (_s, client, db) = setup().await;
    let d = client.database(&db);
    let coll = d.collection::<Document>("uw");
    unique_secondary_index_errors(&d, &coll).await;
    update_and_delete_replies(&d, &coll).await;
}

/// A unique secondary index: duplicate key errors with keyPattern/keyValue, and creating a
/// unique index over duplicates. Leaves `uw` with documents 10, 20 and 21.
async fn unique_secondary_index_errors(
    d: &mongodb::Database,
    coll: &mongodb::Collection<Document>,
) {
    // unique secondary index: keyPattern/keyValue
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"email": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build(),
    )
    .await
    .unwrap();
    coll.insert_one(doc! {"_id": 10, "email": "a@b"})
        .await
        .unwrap();
    let err = coll
        .insert_one(doc! {"_id": 11, "email": "a@b"})
        .await
        .unwrap_err();
    match &*err.kind {
        mongodb::error::ErrorKind::InsertMany(_) | mongodb::error::ErrorKind::Write(_) => {}
        other => panic!("expected write error, got {other:?}"),
    }
    let r = d
        .run_command(doc! {"insert": "uw", "documents": [{"_id": 12, "email": "a@b"}]})
        .await
        .unwrap();
    let we = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(we.get_i32("code").unwrap(), 11000);
    assert_eq!(we.get_document("keyPattern").unwrap(), &doc! {"email": 1});
    assert_eq!(we.get_document("keyValue").unwrap(), &doc! {"email": "a@b"});
    assert!(we
        .get_str("errmsg")
        .unwrap()
        .ends_with("index: email_1 dup key: { email: \"a@b\" }"));
    // creating a unique index over duplicates fails with 11000 too
    coll.insert_one(doc! {"_id": 20, "dup": 1, "email": "x20"})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 21, "dup": 1, "email": "x21"})
        .await
        .unwrap();
    let err = d
        .run_command(doc! {"createIndexes": "uw", "indexes": [{"key": {"dup": 1}, "name": "dup_1", "unique": true}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 11000);
}

/// Update replies (n, nModified, upserted), multi updates, the immutable `_id`, and delete
/// limits, on `uw` as `unique_secondary_index_errors` leaves it.
async fn update_and_delete_replies(d: &mongodb::Database, coll: &mongodb::Collection<Document>) {
    // update reply: n, nModified, upserted
    let r = d
        .run_command(doc! {"update": "uw", "updates": [
            {"q": {"_id": 10}, "u": {"$set": {"v": 1}}},
            {"q": {"_id": 10}, "u": {"$set": {"v": 1}}},
            {"q": {"_id": 99}, "u": {"$set": {"v": 2}}, "upsert": true},
        ]})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 3);
    assert_eq!(r.get_i32("nModified").unwrap(), 1);
    assert_eq!(
        r.get_array("upserted").unwrap(),
        &vec![Bson::Document(doc! {"index": 2, "_id": 99})]
    );
    // multi update
    let r = coll
        .update_many(doc! {}, doc! {"$set": {"all": true}})
        .await
        .unwrap();
    assert_eq!(r.matched_count, r.modified_count);
    // changing _id is refused
    let err = coll
        .update_one(doc! {"_id": 10}, doc! {"$set": {"_id": 5}})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ImmutableField") || err.to_string().contains("immutable"),
        "{err}"
    );
    // delete limit 0 / 1
    let r = d
        .run_command(doc! {"delete": "uw", "deletes": [{"q": {"all": true}, "limit": 1}]})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 1);
    let before = coll.count_documents(doc! {}).await.unwrap();
    let r = coll.delete_many(doc! {"all": true}).await.unwrap();
    assert_eq!(r.deleted_count, before);
    let err = d
        .run_command(doc! {"delete": "uw", "deletes": [{"q": {}, "limit": 5}]})
        .await
        .unwrap();
    assert_eq!(
        err.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .get_i32("code")
            .unwrap(),
        9
    );
}

#[tokio::test]
async fn sixteen_mib_document_is_a_write_error_code_2() {
    let (_s, client, db) = setup().await;
    let d = client.database(&db);
    // {_id: 1, s: "<n bytes>"} encodes to 22 + n bytes
    let max = 16 * 1024 * 1024;
    let too_big = "x".repeat(max + 1 - 22);
    let r = d
        .run_command(doc! {"insert": "big", "documents": [{"_id": 1, "s": too_big}]})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 0);
    let we = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(we.get_i32("code").unwrap(), 2);
    assert_eq!(
        we.get_str("errmsg").unwrap(),
        format!(
            "object to insert too large. size in bytes: {}, max size: {max}",
            max + 1
        )
    );
    let exact = "x".repeat(max - 22);
    let r = d
        .run_command(doc! {"insert": "big", "documents": [{"_id": 2, "s": exact}]})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 1, "exactly 16 MiB is accepted");
}

#[tokio::test]
async fn find_and_modify_count_distinct() {
    let (_s, client, db) = setup().await;
    let d = client.database(&db);
    let coll = d.collection::<Document>("fam");
    coll.insert_many((1..=5).map(|i| doc! {"_id": i, "g": i % 2, "v": i * 10}))
        .await
        .unwrap();
    let r = d
        .run_command(
            doc! {"findAndModify": "fam", "query": {"g": 1}, "sort": {"v": -1},
            "update": {"$inc": {"v": 1}}, "new": true, "fields": {"v": 1}},
        )
        .await
        .unwrap();
    assert_eq!(r.get_document("value").unwrap(), &doc! {"_id": 5, "v": 51});
    assert_eq!(
        r.get_document("lastErrorObject").unwrap(),
        &doc! {"n": 1, "updatedExisting": true}
    );
    let r = d
        .run_command(doc! {"findAndModify": "fam", "query": {"_id": 42}, "update": {"$set": {"v": 0}}, "upsert": true})
        .await
        .unwrap();
    assert_eq!(r.get("value"), Some(&Bson::Null));
    assert_eq!(
        r.get_document("lastErrorObject").unwrap(),
        &doc! {"n": 1, "updatedExisting": false, "upserted": 42}
    );
    let removed = coll
        .find_one_and_delete(doc! {"_id": 1})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed, doc! {"_id": 1, "g": 1, "v": 10});
    let err = d
        .run_command(doc! {"findAndModify": "fam", "query": {}, "remove": true, "update": {"$set": {"a": 1}}})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 9);

    assert_eq!(coll.estimated_document_count().await.unwrap(), 5);
    assert_eq!(coll.count_documents(doc! {"g": 0}).await.unwrap(), 2);
    let r = d
        .run_command(doc! {"count": "fam", "query": {"g": 1}})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 2);
    let r = d.run_command(doc! {"count": "missing"}).await.unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 0);
    let vals = coll.distinct("g", doc! {}).await.unwrap();
    assert_eq!(vals, vec![Bson::Int32(0), Bson::Int32(1)]);

    // aggregate: $match $group $sort $count
    let out: Vec<Document> = coll
        .aggregate(vec![
            doc! {"$match": {"v": {"$gte": 20}}},
            doc! {"$group": {"_id": "$g", "total": {"$sum": "$v"}}},
            doc! {"$sort": {"_id": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    let out: Vec<Document> = coll
        .aggregate(vec![doc! {"$count": "n"}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, vec![doc! {"n": 5}]);
    let err = coll.aggregate(vec![doc! {"$nope": {}}]).await.unwrap_err();
    assert_eq!(command_error(&err).0, 40324);
}

#[tokio::test]
async fn bad_namespaces_and_views() {
    let (_s, client, db) = setup().await;
    // invalid collection names
    for cmd in [
        doc! {"insert": "", "documents": [{}]},
        doc! {"insert": "a$b", "documents": [{}]},
        doc! {"find": ""},
    ] {
        let err = run(&client, &db, cmd.clone()).await.unwrap_err();
        let (code, name, _) = command_error(&err);
        assert_eq!((code, name.as_str()), (73, "InvalidNamespace"), "{cmd}");
    }
    let err = run(&client, &db, doc! {"insert": "", "documents": [{}]})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err).2,
        format!("Invalid namespace specified '{db}.'")
    );
    let err = run(&client, &db, doc! {"insert": 5, "documents": [{}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 73);
    // too long
    let long = "c".repeat(300);
    let err = run(&client, &db, doc! {"insert": long, "documents": [{}]})
        .await
        .unwrap_err();
    let (code, _, msg) = command_error(&err);
    assert_eq!(code, 73);
    assert!(
        msg.starts_with("Fully qualified namespace is too long"),
        "{msg}"
    );
    // writes to the oplog and system collections
    let err = run(
        &client,
        "local",
        doc! {"insert": "oplog.rs", "documents": [{}]},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&err).0, 73);
    let err = run(
        &client,
        &db,
        doc! {"insert": "system.views", "documents": [{}]},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&err).0, 73);

    // views: reads work through the pipeline, writes fail with 166
    let d = client.database(&db);
    d.collection::<Document>("src")
        .insert_many(vec![doc! {"_id": 1, "a": 1}, doc! {"_id": 2, "a": 2}])
        .await
        .unwrap();
    d.run_command(doc! {"create": "v", "viewOn": "src", "pipeline": [{"$match": {"a": 2}}]})
        .await
        .unwrap();
    let v = d.collection::<Document>("v");
    let docs: Vec<Document> = v.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(docs, vec![doc! {"_id": 2, "a": 2}]);
    let err = v.insert_one(doc! {"a": 3}).await.unwrap_err();
    assert_eq!(command_error(&err).0, 166);
    let err = run(
        &client,
        &db,
        doc! {"update": "v", "updates": [{"q": {}, "u": {"$set": {"x": 1}}}]},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&err).0, 166);
}

#[tokio::test]
async fn command_shape_checks() {
    let (_s, client, db) = setup().await;
    let d = client.database(&db);
    d.collection::<Document>("s")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    // aggregate honours cursor.batchSize
    let r = d
        .run_command(doc! {"aggregate": "s", "pipeline": [], "cursor": {"batchSize": 2}})
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("firstBatch").unwrap().len(), 2);
    let id = c.get_i64("id").unwrap();
    assert_ne!(id, 0);
    let more = d
        .run_command(doc! {"getMore": id, "collection": "s"})
        .await
        .unwrap();
    assert_eq!(
        more.get_document("cursor")
            .unwrap()
            .get_array("nextBatch")
            .unwrap()
            .len(),
        3
    );
    // `sort` in an update statement is an 8.0 field: the command fails to parse
    let err = d
        .run_command(doc! {"update": "s", "updates": [{"q": {}, "u": {"$set": {"a": 1}}, "sort": {"_id": 1}}]})
        .await
        .unwrap_err();
    let (code, _, msg) = command_error(&err);
    assert_eq!(code, 40415);
    assert_eq!(msg, "BSON field 'update.updates.sort' is an unknown field.");
    // `_id` may not contain $-prefixed fields
    let r = d
        .run_command(doc! {"insert": "s", "documents": [{"_id": {"$a": 1}}]})
        .await
        .unwrap();
    let we = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(we.get_i32("code").unwrap(), 52);
}

#[tokio::test]
async fn four_four_rejects_let_and_dollar_fields() {
    let server = TestServer::start(mongosim::Options::new().version(mongosim::ServerVersion::V4_4));
    let client = server.client().await;
    if common::server_version(&client).await != mongosim::ServerVersion::V4_4 {
        return; // MONGODB_URI points at a newer server
    }
    let db = unique_db("ff");
    let d = client.database(&db);
    let r = d
        .run_command(doc! {"insert": "c", "documents": [{"_id": 1, "$a": 1}]})
        .await
        .unwrap();
    let we = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(we.get_i32("code").unwrap(), 2);
    assert_eq!(
        we.get_str("errmsg").unwrap(),
        "Document can't have $ prefixed field names: $a"
    );
    let err = d
        .run_command(doc! {"find": "c", "filter": {}, "let": {"x": 1}})
        .await
        .unwrap_err();
    let (code, _, msg) = command_error(&err);
    assert_eq!(code, 9);
    assert!(msg.contains("Unrecognized field 'let'"), "{msg}");
    let err = d
        .run_command(doc! {"delete": "c", "deletes": [{"q": {}, "limit": 0}], "let": {"x": 1}})
        .await
        .unwrap_err();
    assert_eq!(
        command_error(&err).2,
        "BSON field 'delete.let' is an unknown field."
    );
    // 4.4 storage validation refuses $-prefixed names in a replacement
    d.collection::<Document>("c")
        .insert_one(doc! {"_id": 5})
        .await
        .unwrap();
    let r = d
        .run_command(doc! {"update": "c", "updates": [{"q": {"_id": 5}, "u": {"a": {"$b": 1}}}]})
        .await
        .unwrap();
    let we = r.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(we.get_i32("code").unwrap(), 52);
}

#[tokio::test]
async fn let_variables_and_collation() {
    let (_s, client, db) = setup().await;
    let d = client.database(&db);
    d.collection::<Document>("l")
        .insert_many(vec![
            doc! {"_id": 1, "s": "ping"},
            doc! {"_id": 2, "s": "PONG"},
        ])
        .await
        .unwrap();
    let r = d
        .run_command(
            doc! {"find": "l", "filter": {"$expr": {"$eq": ["$_id", "$$id"]}}, "let": {"id": 2}},
        )
        .await
        .unwrap();
    assert_eq!(
        r.get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap(),
        &vec![Bson::Document(doc! {"_id": 2, "s": "PONG"})]
    );
    let r = d
        .run_command(doc! {"find": "l", "filter": {"s": "PING"}, "collation": {"locale": "en_US", "strength": 2}})
        .await
        .unwrap();
    assert_eq!(
        r.get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .len(),
        1
    );
    let r = d
        .run_command(doc! {"update": "l", "updates": [{"q": {"s": "pong"}, "u": {"$set": {"hit": true}}, "collation": {"locale": "en_US", "strength": 2}}]})
        .await
        .unwrap();
    assert_eq!(r.get_i32("nModified").unwrap(), 1);
    let r = d
        .run_command(doc! {"aggregate": "l", "pipeline": [{"$match": {"_id": 1}}, {"$project": {"_id": 0, "x": "$$x"}}], "let": {"x": "foo"}, "cursor": {}})
        .await
        .unwrap();
    assert_eq!(
        r.get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap(),
        &vec![Bson::Document(doc! {"x": "foo"})]
    );
    // a collation applies to `_id` equality too (the binary _id index cannot answer it)
    d.collection::<Document>("l")
        .insert_one(doc! {"_id": "abc"})
        .await
        .unwrap();
    let r = d
        .run_command(doc! {"count": "l", "query": {"_id": "ABC"}, "collation": {"locale": "en_US", "strength": 2}})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 1);
    let r = d
        .run_command(doc! {"count": "l", "query": {"_id": "ABC"}})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 0);
    let r = d
        .run_command(doc! {"delete": "l", "deletes": [{"q": {"$expr": {"$eq": ["$_id", "$$id"]}}, "limit": 1}], "let": {"id": 1}})
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 1);
}

#[tokio::test]
async fn id_ordered_reads_and_sample() {
    let (_s, client, db) = setup().await;
    let coll = client.database(&db).collection::<Document>("ids");
    // inserted out of order, mixed numeric types and a string
    let mut docs: Vec<Document> = (0..300).rev().map(|i| doc! {"_id": i, "v": i}).collect();
    docs.push(doc! {"_id": Bson::Int64(1000), "v": 1000});
    docs.push(doc! {"_id": 300.5, "v": 300});
    docs.push(doc! {"_id": "s", "v": -1});
    coll.insert_many(docs).await.unwrap();
    let last = coll
        .find_one(doc! {})
        .sort(doc! {"_id": -1})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last,
        doc! {"_id": "s", "v": -1},
        "strings sort after numbers"
    );
    let ids = |v: Vec<Document>| -> Vec<Bson> {
        v.into_iter()
            .map(|d| d.get("_id").unwrap().clone())
            .collect()
    };
    let range: Vec<Document> = coll
        .find(doc! {"_id": {"$gte": 10, "$lt": 14}})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        ids(range),
        vec![
            Bson::Int32(10),
            Bson::Int32(11),
            Bson::Int32(12),
            Bson::Int32(13)
        ]
    );
    let top: Vec<Document> = coll
        .find(doc! {"_id": {"$gt": 298}, "v": {"$gte": 0}})
        .sort(doc! {"_id": -1})
        .skip(1)
        .limit(2)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(top), vec![Bson::Double(300.5), Bson::Int32(299)]);
    let empty: Vec<Document> = coll
        .find(doc! {"_id": {"$gt": 5, "$lt": 3}})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(empty.is_empty());
    // $sample: distinct documents of the collection
    let sample: Vec<Document> = coll
        .aggregate(vec![
            doc! {"$sample": {"size": 20}},
            doc! {"$project": {"_id": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(sample.len(), 20);
    let mut seen = std::collections::HashSet::new();
    for d in &sample {
        assert!(seen.insert(d.get("_id").unwrap().to_string()));
    }
    let all: Vec<Document> = coll
        .aggregate(vec![doc! {"$sample": {"size": 5000}}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 303);
}
