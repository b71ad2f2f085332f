//! Collection entity operations: one function per operation, dispatched by name.

use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::{
    bson::{doc, to_bson, Bson, Document},
    options::{
        AggregateOptions, CountOptions, DeleteOptions, DistinctOptions,
        EstimatedDocumentCountOptions, FindOneAndDeleteOptions, FindOneAndReplaceOptions,
        FindOneAndUpdateOptions, FindOneOptions, FindOptions, IndexOptions, InsertManyOptions,
        InsertOneOptions, ReplaceOptions, UpdateOptions,
    },
    ClientSession, Collection, IndexModel,
};

use super::{
    aggregate, change_stream_args, change_stream_entity, docs_value, lock_session, no_extra_args,
    note_sent, opts, sess_mut, take_doc, take_docs, take_max_time, take_str, update_mods,
    update_result, usize_doc, OpErr, OpResult, Res, TestState, AGGREGATE_OPTIONS,
};
use crate::entities::Entity;

type Sess<'a> = Option<&'a mut ClientSession>;
type Coll = Collection<Document>;

const WRITE_COMMON: &[&str] = &["comment", "let", "hint", "collation"];

/// The options every write accepts plus `extra`.
fn allowed<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = WRITE_COMMON.to_vec();
    v.extend_from_slice(extra);
    v
}

/// Runs a collection operation in the session named in `args` (if any).
pub(super) async fn collection_op(
    st: &mut TestState,
    c: &Coll,
    name: &str,
    args: &mut Document,
) -> Result<OpResult, String> {
    let mut g = lock_session(st, args).await?;
    let in_txn = g
        .as_ref()
        .is_some_and(|g| matches!(g.state, "starting" | "in_progress"));
    let r = match sess_mut(&mut g) {
        Ok(sess) => collection_op_inner(c, name, args, sess, in_txn).await?,
        Err(e) => return Ok(Err(e)),
    };
    note_sent(&mut g, &r);
    Ok(r)
}

/// Dispatches a collection operation by name.
async fn collection_op_inner(
    c: &Coll,
    name: &str,
    args: &mut Document,
    sess: Sess<'_>,
    in_txn: bool,
) -> Result<OpResult, String> {
    if !in_txn
        && UNACKNOWLEDGED.contains(&name)
        && crate::bulk::is_unacknowledged(super::wc_of(c).as_ref())
    {
        return unacknowledged(c, name, args, sess).await;
    }
    match name {
        "insertOne" => insert_one(c, args, sess).await,
        "insertMany" => insert_many(c, args, sess).await,
        "updateOne" | "updateMany" => update(c, name, args, sess).await,
        "replaceOne" => replace_one(c, args, sess).await,
        "deleteOne" | "deleteMany" => delete(c, name, args, sess).await,
        "findOneAndDelete" => find_one_and_delete(c, args, sess).await,
        "findOneAndReplace" => find_one_and_replace(c, args, sess).await,
        "findOneAndUpdate" => find_one_and_update(c, args, sess).await,
        "find" => find(c, args, sess).await,
        "createFindCursor" => create_find_cursor(c, args, sess).await,
        "findOne" => find_one(c, args, sess).await,
        "aggregate" => collection_aggregate(c, args, sess).await,
        "distinct" => distinct(c, args, sess).await,
        "countDocuments" => count_documents(c, args, sess).await,
        "estimatedDocumentCount" => estimated_document_count(c, args, sess).await,
        "count" => count(c, args, sess).await,
        "bulkWrite" => crate::bulk::bulk_write(c, args, sess, in_txn).await,
        "createChangeStream" => {
            let (pipeline, o) = change_stream_args(args)?;
            Ok(change_stream_entity(
                c.watch().pipeline(pipeline).with_options(o).await,
            ))
        }
        "createIndex" => create_index(c, args, sess).await,
        "dropIndex" => drop_index(c, args, sess).await,
        "listIndexes" => list_indexes(c, args, sess).await,
        "rename" => rename(c, args, sess).await,
        other => Err(format!("unsupported collection operation {other}")),
    }
}

// ---------------------------------------------------------------------------------------
// writes

/// The writes [`unacknowledged`] sends with `w: 0`.
const UNACKNOWLEDGED: [&str; 8] = [
    "updateOne",
    "updateMany",
    "replaceOne",
    "deleteOne",
    "deleteMany",
    "findOneAndUpdate",
    "findOneAndReplace",
    "findOneAndDelete",
];

/// A write with `w: 0`, which the Rust driver refuses client-side ("Unacknowledged write
/// concerns are not supported"), sent as a driver that supports it sends it: single
/// statements as a one-model `bulkWrite` (the same commands), `findOneAnd*` as a
/// `findAndModify` (CRUD spec: the result of an unacknowledged write is not available).
async fn unacknowledged(
    c: &Coll,
    name: &str,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    const BULK_LEVEL: [&str; 3] = ["comment", "let", "bypassDocumentValidation"];
    match name {
        "updateOne" | "updateMany" | "replaceOne" | "deleteOne" | "deleteMany" => {
            let (mut model, mut bulk) = (Document::new(), Document::new());
            for (k, v) in std::mem::take(args) {
                match BULK_LEVEL.contains(&k.as_str()) {
                    true => bulk.insert(k, v),
                    false => model.insert(k, v),
                };
            }
            bulk.insert("requests", vec![Bson::Document(doc! {name: model})]);
            crate::bulk::bulk_write(c, &mut bulk, sess, false).await
        }
        "findOneAndUpdate" | "findOneAndReplace" | "findOneAndDelete" => {
            let mut cmd = doc! {"findAndModify": c.name()};
            for (k, v) in std::mem::take(args) {
                let key = match (k.as_str(), name) {
                    ("filter", _) => "query",
                    ("replacement", _) => "update",
                    ("projection", _) => "fields",
                    ("returnDocument", _) => {
                        cmd.insert("new", v.as_str() == Some("After"));
                        continue;
                    }
                    (other, _) => other,
                };
                cmd.insert(key, v);
            }
            if name == "findOneAndDelete" {
                cmd.insert("remove", true);
            }
            cmd.insert("writeConcern", doc! {"w": 0});
            let db = c.client().database(&c.namespace().db);
            let r = run!(sess, db.run_command(cmd));
            Ok(r.map(|_| Res::Value(Bson::Null, true)).map_err(OpErr::from))
        }
        other => Err(format!(
            "{other} is not a write the runner sends unacknowledged"
        )),
    }
}

/// `insertOne`: the inserted id.
async fn insert_one(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let d = take_doc(args, "document")?;
    let o: InsertOneOptions = opts(args, &["comment", "bypassDocumentValidation"])?;
    Ok(run!(sess, c.insert_one(d).with_options(o))
        .map(|r| Res::Value(Bson::Document(doc! { "insertedId": r.inserted_id }), false))
        .map_err(OpErr::from))
}

/// `insertMany`: the inserted ids by index.
async fn insert_many(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let d = take_docs(args, "documents")?;
    let o: InsertManyOptions = opts(args, &["comment", "bypassDocumentValidation", "ordered"])?;
    Ok(run!(sess, c.insert_many(d).with_options(o))
        .map(|r| {
            Res::Value(
                Bson::Document(doc! { "insertedIds": usize_doc(&r.inserted_ids) }),
                false,
            )
        })
        .map_err(OpErr::from))
}

/// `updateOne` / `updateMany`: an UpdateResult.
async fn update(
    c: &Coll,
    name: &str,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let f = take_doc(args, "filter")?;
    let u = update_mods(args.remove("update").ok_or("missing update")?)?;
    let mut extra = vec!["upsert", "arrayFilters", "bypassDocumentValidation"];
    if name == "updateOne" {
        extra.push("sort");
    }
    let o: UpdateOptions = opts(args, &allowed(&extra))?;
    let r = if name == "updateOne" {
        run!(sess, c.update_one(f, u).with_options(o))
    } else {
        run!(sess, c.update_many(f, u).with_options(o))
    };
    Ok(r.map(|r| Res::Value(update_result(r), false))
        .map_err(OpErr::from))
}

/// `replaceOne`: an UpdateResult.
async fn replace_one(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let f = take_doc(args, "filter")?;
    let d = take_doc(args, "replacement")?;
    let o: ReplaceOptions = opts(
        args,
        &allowed(&["upsert", "bypassDocumentValidation", "sort"]),
    )?;
    Ok(run!(sess, c.replace_one(f, d).with_options(o))
        .map(|r| Res::Value(update_result(r), false))
        .map_err(OpErr::from))
}

/// `deleteOne` / `deleteMany`: the deleted count.
async fn delete(
    c: &Coll,
    name: &str,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let f = take_doc(args, "filter")?;
    let o: DeleteOptions = opts(args, &allowed(&[]))?;
    let r = if name == "deleteOne" {
        run!(sess, c.delete_one(f).with_options(o))
    } else {
        run!(sess, c.delete_many(f).with_options(o))
    };
    Ok(r.map(|r| {
        Res::Value(
            Bson::Document(doc! { "deletedCount": r.deleted_count as i64 }),
            false,
        )
    })
    .map_err(OpErr::from))
}

/// The result of a findOneAnd* operation: the document or null.
fn found(r: mongodb::error::Result<Option<Document>>) -> OpResult {
    r.map(|r| Res::Value(r.map_or(Bson::Null, Bson::Document), true))
        .map_err(OpErr::from)
}

/// `findOneAndDelete`.
async fn find_one_and_delete(
    c: &Coll,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let f = take_doc(args, "filter")?;
    let max_time = take_max_time(args)?;
    let mut o: FindOneAndDeleteOptions =
        opts(args, &allowed(&["projection", "sort", "maxTimeMS"]))?;
    o.max_time = max_time;
    Ok(found(run!(sess, c.find_one_and_delete(f).with_options(o))))
}

/// `findOneAndReplace`.
async fn find_one_and_replace(
    c: &Coll,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let f = take_doc(args, "filter")?;
    let d = take_doc(args, "replacement")?;
    let max_time = take_max_time(args)?;
    let mut o: FindOneAndReplaceOptions = opts(
        args,
        &allowed(&[
            "projection",
            "sort",
            "maxTimeMS",
            "upsert",
            "returnDocument",
            "bypassDocumentValidation",
        ]),
    )?;
    o.max_time = max_time;
    Ok(found(run!(
        sess,
        c.find_one_and_replace(f, d).with_options(o)
    )))
}

/// `findOneAndUpdate`.
async fn find_one_and_update(
    c: &Coll,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let f = take_doc(args, "filter")?;
    let u = update_mods(args.remove("update").ok_or("missing update")?)?;
    let max_time = take_max_time(args)?;
    let mut o: FindOneAndUpdateOptions = opts(
        args,
        &allowed(&[
            "projection",
            "sort",
            "maxTimeMS",
            "upsert",
            "returnDocument",
            "bypassDocumentValidation",
            "arrayFilters",
        ]),
    )?;
    o.max_time = max_time;
    Ok(found(run!(
        sess,
        c.find_one_and_update(f, u).with_options(o)
    )))
}

// ---------------------------------------------------------------------------------------
// reads

/// `find`: all documents of the cursor.
async fn find(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let f = take_doc(args, "filter").unwrap_or_default();
    let max_time = take_max_time(args)?;
    let mut o: FindOptions = opts(
        args,
        &[
            "sort",
            "skip",
            "limit",
            "batchSize",
            "projection",
            "let",
            "comment",
            "allowDiskUse",
            "collation",
            "hint",
            "maxTimeMS",
            "min",
            "max",
            "returnKey",
            "showRecordId",
            "noCursorTimeout",
            "allowPartialResults",
        ],
    )?;
    o.max_time = max_time;
    Ok(match sess {
        Some(s) => match c.find(f).with_options(o).session(&mut *s).await {
            Ok(mut cur) => cur
                .stream(s)
                .try_collect::<Vec<_>>()
                .await
                .map(docs_value)
                .map_err(OpErr::from),
            Err(e) => Err(e.into()),
        },
        None => match c.find(f).with_options(o).await {
            Ok(cur) => cur
                .try_collect::<Vec<_>>()
                .await
                .map(docs_value)
                .map_err(OpErr::from),
            Err(e) => Err(e.into()),
        },
    })
}

/// `createFindCursor`: a cursor entity (without a session).
async fn create_find_cursor(
    c: &Coll,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let f = take_doc(args, "filter").unwrap_or_default();
    let max_time = take_max_time(args)?;
    let mut o: FindOptions = opts(
        args,
        &[
            "sort",
            "skip",
            "limit",
            "batchSize",
            "projection",
            "let",
            "comment",
            "allowDiskUse",
            "collation",
            "hint",
        ],
    )?;
    o.max_time = max_time;
    if sess.is_some() {
        return Err("createFindCursor with a session is not supported by this runner".into());
    }
    Ok(c.find(f)
        .with_options(o)
        .await
        .map(|cur| Res::Entity(Entity::Cursor(Arc::new(tokio::sync::Mutex::new(cur)))))
        .map_err(OpErr::from))
}

/// `findOne`: the document or null.
async fn find_one(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let f = take_doc(args, "filter").unwrap_or_default();
    let o: FindOneOptions = opts(
        args,
        &[
            "sort",
            "skip",
            "projection",
            "let",
            "comment",
            "collation",
            "hint",
            "maxTimeMS",
        ],
    )?;
    Ok(found(run!(sess, c.find_one(f).with_options(o))))
}

/// `aggregate` on a collection: all result documents.
async fn collection_aggregate(
    c: &Coll,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let pipeline = take_docs(args, "pipeline")?;
    let o: AggregateOptions = opts(args, AGGREGATE_OPTIONS)?;
    Ok(aggregate(c.aggregate(pipeline).with_options(o), sess).await)
}

/// `distinct`: the distinct values.
async fn distinct(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let field = take_str(args, "fieldName")?;
    let f = take_doc(args, "filter").unwrap_or_default();
    let o: DistinctOptions = opts(args, &["comment", "collation", "hint", "maxTimeMS"])?;
    Ok(run!(sess, c.distinct(field, f).with_options(o))
        .map(|v| Res::Value(Bson::Array(v), false))
        .map_err(OpErr::from))
}

/// A count as an Int64 value.
fn count_value(r: mongodb::error::Result<u64>) -> OpResult {
    r.map(|n| Res::Value(Bson::Int64(n as i64), false))
        .map_err(OpErr::from)
}

/// `countDocuments`.
async fn count_documents(
    c: &Coll,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let f = take_doc(args, "filter").unwrap_or_default();
    let max_time = take_max_time(args)?;
    let mut o: CountOptions = opts(
        args,
        &["comment", "collation", "hint", "maxTimeMS", "skip", "limit"],
    )?;
    o.max_time = max_time;
    Ok(count_value(run!(
        sess,
        c.count_documents(f).with_options(o)
    )))
}

/// `estimatedDocumentCount` (the driver takes no session for it).
async fn estimated_document_count(
    c: &Coll,
    args: &mut Document,
    sess: Sess<'_>,
) -> Result<OpResult, String> {
    let o: EstimatedDocumentCountOptions = opts(args, &["comment", "maxTimeMS"])?;
    let _ = sess; // estimatedDocumentCount takes no session in the driver
    Ok(count_value(
        c.estimated_document_count().with_options(o).await,
    ))
}

/// `count`, emulated: the deprecated `count` helper of the CRUD spec is not in the Rust
/// driver; it is defined as the `count` command with these fields.
async fn count(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let f = take_doc(args, "filter").unwrap_or_default();
    let mut cmd = doc! { "count": c.name(), "query": f };
    for k in ["skip", "limit", "collation", "comment", "hint"] {
        if let Some(v) = args.remove(k) {
            cmd.insert(k, v);
        }
    }
    no_extra_args(args)?;
    let db = c.client().database(c.namespace().db.as_str());
    Ok(run!(sess, db.run_command(cmd))
        .map(|r| Res::Value(r.get("n").cloned().unwrap_or(Bson::Null), false))
        .map_err(OpErr::from))
}

// ---------------------------------------------------------------------------------------
// indexes and renaming

/// `createIndex`: the index name.
async fn create_index(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let keys = take_doc(args, "keys")?;
    let o: IndexOptions = opts(
        args,
        &[
            "name",
            "unique",
            "sparse",
            "expireAfterSeconds",
            "partialFilterExpression",
            "hidden",
            "collation",
        ],
    )?;
    let m = IndexModel::builder().keys(keys).options(o).build();
    Ok(run!(sess, c.create_index(m))
        .map(|r| Res::Value(Bson::String(r.index_name), false))
        .map_err(OpErr::from))
}

/// `dropIndex`.
async fn drop_index(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let n = take_str(args, "name")?;
    no_extra_args(args)?;
    Ok(run!(sess, c.drop_index(n))
        .map(|_| Res::None)
        .map_err(OpErr::from))
}

/// `listIndexes`: the index models.
async fn list_indexes(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    no_extra_args(args)?;
    let r = match sess {
        Some(s) => match c.list_indexes().session(&mut *s).await {
            Ok(mut cur) => cur.stream(s).try_collect::<Vec<_>>().await,
            Err(e) => Err(e),
        },
        None => match c.list_indexes().await {
            Ok(cur) => cur.try_collect::<Vec<_>>().await,
            Err(e) => Err(e),
        },
    };
    Ok(r.map(|v| {
        Res::Value(
            Bson::Array(v.iter().filter_map(|m| to_bson(m).ok()).collect()),
            true,
        )
    })
    .map_err(OpErr::from))
}

/// `rename`, emulated: no rename helper in the driver; the spec defines it as
/// `renameCollection` run on the admin database.
async fn rename(c: &Coll, args: &mut Document, sess: Sess<'_>) -> Result<OpResult, String> {
    let to = take_str(args, "to")?;
    let ns = c.namespace();
    let mut cmd = doc! { "renameCollection": format!("{}.{}", ns.db, ns.coll), "to": format!("{}.{}", ns.db, to) };
    if let Some(v) = args.remove("dropTarget") {
        cmd.insert("dropTarget", v);
    }
    no_extra_args(args)?;
    let admin = c.client().database("admin");
    Ok(run!(sess, admin.run_command(cmd))
        .map(|_| Res::None)
        .map_err(OpErr::from))
}
