//! `$out` / `$merge` / `$documents` and collection validators through the official driver
//! (SRV document_source_out.cpp, document_source_merge.cpp, collection_impl.cpp
//! checkValidation).

mod common;

use bson::{doc, Bson, Document};
use common::{command_error, run, unique_db, TestServer};
use futures::TryStreamExt;

/// The code of a write error (or of a command error).
fn write_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            Some(w.code)
        }
        _ => common::code(e),
    }
}

async fn setup() -> (TestServer, mongodb::Client, String) {
    let server = TestServer::default_rs();
    let client = server.client().await;
    (server, client, unique_db("aggw"))
}

async fn all(client: &mongodb::Client, db: &str, coll: &str) -> Vec<Document> {
    client
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect")
}

async fn oplog_for(client: &mongodb::Client, db: &str) -> Vec<Document> {
    client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ns": {"$regex": format!("^{db}\\.")}})
        .await
        .expect("oplog")
        .try_collect()
        .await
        .expect("collect")
}

#[tokio::test]
async fn out_replaces_target_via_temp_collection_and_rename() {
    let (_s, client, db) = setup().await;
    let src = client.database(&db).collection::<Document>("src");
    src.insert_many(vec![
        doc! {"_id": 1, "x": 1},
        doc! {"_id": 2, "x": 2},
        doc! {"_id": 3, "x": 3},
    ])
    .await
    .unwrap();
    let tgt = client.database(&db).collection::<Document>("tgt");
    tgt.insert_one(doc! {"_id": 99, "old": true}).await.unwrap();
    let reply = run(
        &client,
        &db,
        doc! {"aggregate": "src", "pipeline": [{"$match": {"x": {"$gt": 1}}}, {"$out": "tgt"}], "cursor": {"batchSize": 1}},
    )
    .await
    .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert_eq!(cursor.get_array("firstBatch").unwrap().len(), 0);
    assert_eq!(cursor.get("id"), Some(&Bson::Int64(0)));
    assert_eq!(
        all(&client, &db, "tgt").await,
        vec![doc! {"_id": 2, "x": 2}, doc! {"_id": 3, "x": 3}]
    );
    // no temporary collection left, and the target is not marked temp
    let names = client.database(&db).list_collection_names().await.unwrap();
    assert!(
        names.iter().all(|n| !n.starts_with("tmp.agg_out")),
        "{names:?}"
    );
    // oplog: create tmp (temp: true), inserts into tmp, renameCollection with dropTarget
    let ops = oplog_for(&client, &db).await;
    let create_tmp = ops.iter().find(|o| {
        o.get_document("o")
            .ok()
            .and_then(|o| o.get_str("create").ok())
            .is_some_and(|c| c.starts_with("tmp.agg_out."))
    });
    let create_tmp = create_tmp.expect("create of tmp.agg_out.*");
    assert_eq!(
        create_tmp.get_document("o").unwrap().get_bool("temp"),
        Ok(true)
    );
    let rename = ops
        .iter()
        .find(|o| {
            o.get_document("o")
                .is_ok_and(|o| o.contains_key("renameCollection"))
        })
        .expect("renameCollection entry");
    let o = rename.get_document("o").unwrap();
    assert_eq!(o.get_str("to"), Ok(format!("{db}.tgt").as_str()));
    assert!(
        matches!(o.get("dropTarget"), Some(Bson::Binary(_))),
        "{o:?}"
    );
    let tmp_inserts = ops
        .iter()
        .filter(|e| {
            e.get_str("op") == Ok("i") && e.get_str("ns").is_ok_and(|n| n.contains(".tmp.agg_out."))
        })
        .count();
    assert_eq!(tmp_inserts, 2);
}

#[tokio::test]
async fn out_errors() {
    let (_s, client, db) = setup().await;
    client
        .database(&db)
        .collection::<Document>("src")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let e = run(
        &client,
        &db,
        doc! {"aggregate": "src", "pipeline": [{"$out": "t"}, {"$match": {}}], "cursor": {}},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 40601);
    let e = run(
        &client,
        &db,
        doc! {"aggregate": "src", "pipeline": [{"$out": "system.foo"}], "cursor": {}},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 17385);
    run(
        &client,
        &db,
        doc! {"create": "capped", "capped": true, "size": 4096},
    )
    .await
    .unwrap();
    let e = run(
        &client,
        &db,
        doc! {"aggregate": "src", "pipeline": [{"$out": "capped"}], "cursor": {}},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 17152);
}

#[tokio::test]
async fn merge_modes() {
    let (_s, client, db) = setup().await;
    let tgt = client.database(&db).collection::<Document>("tgt");
    tgt.insert_many(vec![
        doc! {"_id": 1, "a": 1, "keep": true},
        doc! {"_id": 2, "a": 2},
    ])
    .await
    .unwrap();
    merge_update_modes(&client, &db, &tgt).await;
    merge_fail_and_pipeline_modes(&client, &db, &tgt).await;
    merge_option_errors(&client, &db).await;
    merge_pipeline_with_let(&client, &db).await;
}

/// Runs `$documents: [{_id: 1, a: 10}, {_id: 3, a: 30}]` into `{$merge: stage}`.
async fn merge(
    client: &mongodb::Client,
    db: &str,
    stage: Document,
) -> mongodb::error::Result<Document> {
    run(
        client,
        db,
        doc! {"aggregate": 1, "pipeline": [
            {"$documents": [{"_id": 1, "a": 10}, {"_id": 3, "a": 30}]},
            {"$merge": stage}
        ], "cursor": {}},
    )
    .await
}

/// whenMatched merge (the default), replace and keepExisting; whenNotMatched insert and
/// discard.
async fn merge_update_modes(
    client: &mongodb::Client,
    db: &str,
    tgt: &mongodb::Collection<Document>,
) {
    // default: whenMatched merge, whenNotMatched insert
    merge(client, db, doc! {"into": "tgt"}).await.unwrap();
    assert_eq!(
        all(client, db, "tgt").await,
        vec![
            doc! {"_id": 1, "a": 10, "keep": true},
            doc! {"_id": 2, "a": 2},
            doc! {"_id": 3, "a": 30}
        ]
    );
    // replace + discard
    tgt.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 0}})
        .await
        .unwrap();
    tgt.delete_one(doc! {"_id": 3}).await.unwrap();
    merge(
        client,
        db,
        doc! {"into": "tgt", "whenMatched": "replace", "whenNotMatched": "discard"},
    )
    .await
    .unwrap();
    assert_eq!(
        all(client, db, "tgt").await,
        vec![doc! {"_id": 1, "a": 10}, doc! {"_id": 2, "a": 2}]
    );
    // keepExisting + insert
    tgt.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 5}})
        .await
        .unwrap();
    merge(
        client,
        db,
        doc! {"into": "tgt", "whenMatched": "keepExisting"},
    )
    .await
    .unwrap();
    assert_eq!(
        all(client, db, "tgt").await,
        vec![
            doc! {"_id": 1, "a": 5},
            doc! {"_id": 2, "a": 2},
            doc! {"_id": 3, "a": 30}
        ]
    );
}

/// whenMatched / whenNotMatched fail, and a whenMatched pipeline that reads `$$new`.
async fn merge_fail_and_pipeline_modes(
    client: &mongodb::Client,
    db: &str,
    tgt: &mongodb::Collection<Document>,
) {
    // fail: DuplicateKey with keyPattern/keyValue
    let e = merge(client, db, doc! {"into": "tgt", "whenMatched": "fail"})
        .await
        .unwrap_err();
    let (code, _, msg) = command_error(&e);
    assert_eq!(code, 11000);
    assert!(
        msg.starts_with("$merge with whenMatched: fail found an existing document with the same values for the 'on' fields :: caused by :: E11000 duplicate key error"),
        "{msg}"
    );
    // whenNotMatched fail
    tgt.delete_one(doc! {"_id": 3}).await.unwrap();
    let e = merge(
        client,
        db,
        doc! {"into": "tgt", "whenMatched": "replace", "whenNotMatched": "fail"},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 13113);
    // pipeline whenMatched sees $$new
    merge(client, db, doc! {"into": "tgt", "whenMatched": [{"$set": {"b": "$$new.a"}}], "whenNotMatched": "discard"})
        .await
        .unwrap();
    let docs = all(client, db, "tgt").await;
    assert_eq!(docs[0].get_i32("b"), Ok(10), "{docs:?}");
}

/// Unsupported mode combinations, `on` without a unique index, `$documents` on a
/// collection, `let` without a pipeline, and a system collection as the target.
async fn merge_option_errors(client: &mongodb::Client, db: &str) {
    // unsupported combination, missing unique index for `on`
    let e = merge(
        client,
        db,
        doc! {"into": "tgt", "whenMatched": "keepExisting", "whenNotMatched": "fail"},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 51189);
    let e = merge(client, db, doc! {"into": "tgt", "on": "a"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 51183);
    let e = run(
        client,
        db,
        doc! {"aggregate": "tgt", "pipeline": [{"$documents": [{"a": 1}]}], "cursor": {}},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 73);
    let e = merge(client, db, doc! {"into": "tgt", "let": {"x": 1}})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 51199);
    let e = merge(client, db, doc! {"into": "system.x"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 31319);
}

/// A whenMatched pipeline with a `let` variable evaluated against the result document.
async fn merge_pipeline_with_let(client: &mongodb::Client, db: &str) {
    // pipeline whenMatched with a user variable evaluated against the result document
    merge(
        client,
        db,
        doc! {"into": "tgt", "let": {"twice": {"$multiply": ["$a", 2]}},
        "whenMatched": [{"$set": {"c": "$$twice"}}], "whenNotMatched": "discard"},
    )
    .await
    .unwrap();
    let docs = all(client, db, "tgt").await;
    assert_eq!(docs[0].get_i32("c"), Ok(20), "{docs:?}");
}

#[tokio::test]
async fn validator_enforced_and_bypassed() {
    let (_s, client, db) = setup().await;
    run(
        &client,
        &db,
        doc! {"create": "v", "validator": {"x": {"$type": "string"}}},
    )
    .await
    .unwrap();
    let coll = client.database(&db).collection::<Document>("v");
    coll.insert_one(doc! {"_id": 1, "x": "ok"}).await.unwrap();
    let e = coll.insert_one(doc! {"_id": 2, "x": 2}).await.unwrap_err();
    assert_eq!(write_code(&e), Some(121), "{e:?}");
    // errInfo as 7.0 builds it (SRV doc_validation_error_test.cpp)
    if let mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) = &*e.kind
    {
        let info = w.details.clone().expect("errInfo");
        assert_eq!(info.get("failingDocumentId"), Some(&Bson::Int32(2)));
        assert_eq!(
            info.get_document("details").unwrap(),
            &doc! {"operatorName": "$type", "specifiedAs": {"x": {"$type": "string"}},
            "reason": "type did not match", "consideredValue": 2, "consideredType": "int"}
        );
    }
    let e = coll
        .find_one_and_update(doc! {"_id": 1}, doc! {"$set": {"x": 1}})
        .await
        .unwrap_err();
    let (code, _, _) = command_error(&e);
    assert_eq!(code, 121);
    // bypassDocumentValidation
    coll.insert_one(doc! {"_id": 3, "x": 3})
        .bypass_document_validation(true)
        .await
        .unwrap();
    // validationAction warn: accepted
    run(
        &client,
        &db,
        doc! {"collMod": "v", "validationAction": "warn"},
    )
    .await
    .unwrap();
    coll.insert_one(doc! {"_id": 4, "x": 4}).await.unwrap();
    assert_eq!(all(&client, &db, "v").await.len(), 3);
    // validationLevel moderate: updates of already-invalid documents are not checked
    run(
        &client,
        &db,
        doc! {"collMod": "v", "validationAction": "error", "validationLevel": "moderate"},
    )
    .await
    .unwrap();
    coll.update_one(doc! {"_id": 3}, doc! {"$set": {"x": 33}})
        .await
        .unwrap();
    let e = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"x": 1}})
        .await
        .unwrap_err();
    assert_eq!(write_code(&e), Some(121), "{e:?}");
}

#[tokio::test]
async fn json_schema_validator_and_option_checks() {
    let (_s, client, db) = setup().await;
    run(
        &client,
        &db,
        doc! {"create": "s", "validator": {"$jsonSchema": {
            "bsonType": "object",
            "required": ["name"],
            "properties": {"age": {"bsonType": "number", "minimum": 0}}
        }}},
    )
    .await
    .unwrap();
    let coll = client.database(&db).collection::<Document>("s");
    coll.insert_one(doc! {"_id": 1, "name": "a", "age": 3})
        .await
        .unwrap();
    let e = coll
        .insert_one(doc! {"_id": 2, "age": 3})
        .await
        .unwrap_err();
    assert_eq!(write_code(&e), Some(121));
    if let mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) = &*e.kind
    {
        let details = w.details.clone().unwrap();
        let details = details.get_document("details").unwrap();
        assert_eq!(details.get_str("operatorName"), Ok("$jsonSchema"));
        let rules = details.get_array("schemaRulesNotSatisfied").unwrap();
        assert_eq!(
            rules[0].as_document().unwrap(),
            &doc! {"operatorName": "required", "specifiedAs": {"required": ["name"]}, "missingProperties": ["name"]}
        );
    }
    let e = coll
        .insert_one(doc! {"_id": 3, "name": "b", "age": -1})
        .await
        .unwrap_err();
    assert_eq!(write_code(&e), Some(121));
    let e = coll
        .insert_one(doc! {"_id": 4, "name": "b", "age": "x"})
        .await
        .unwrap_err();
    assert_eq!(write_code(&e), Some(121));
    // option checks at create / collMod
    let e = run(
        &client,
        &db,
        doc! {"create": "bad", "validationLevel": "sometimes"},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 2);
    let e = run(&client, &db, doc! {"collMod": "s", "validator": 5})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 14);
    let e = run(
        &client,
        &db,
        doc! {"collMod": "s", "validator": {"$jsonSchema": {"bogus": 1}}},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 9);
}

#[tokio::test]
async fn out_and_merge_rejected_in_transactions() {
    let (_s, client, db) = setup().await;
    let src = client.database(&db).collection::<Document>("src");
    src.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut session = client.start_session().await.unwrap();
    // the error aborts the transaction, so one transaction per stage
    for stage in [doc! {"$out": "t"}, doc! {"$merge": {"into": "t"}}] {
        session.start_transaction().await.unwrap();
        let e = src
            .aggregate(vec![stage])
            .session(&mut session)
            .await
            .unwrap_err();
        assert_eq!(common::code(&e), Some(263), "{e:?}");
        let _ = session.abort_transaction().await;
    }
}
