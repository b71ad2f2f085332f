//! Logical-session commands through the official driver: `killAllSessions`, `killSessions`,
//! `killAllSessionsByPattern`, `endSessions`, `refreshSessions`, `startSession`, and what
//! they do to open transactions and cursors (SRV kill_sessions_local.cpp,
//! logical_session_cache_impl.cpp); transaction statements carrying a non-primary
//! `$readPreference`; the databases every replica set lists.

mod common;

use bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use common::{code, command_error, unique_db, TestServer};
use mongodb::{Client, ClientSession, Collection};

async fn admin(client: &Client, cmd: Document) -> mongodb::error::Result<Document> {
    client.database("admin").run_command(cmd).await
}

/// The session's `lsid` document (`{id: UUID}`).
fn lsid(s: &ClientSession) -> Document {
    s.id().clone()
}

/// A session with a transaction in progress that inserted `{_id: id}` into `coll`.
async fn open_txn(client: &Client, coll: &Collection<Document>, id: i32) -> ClientSession {
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": id})
        .session(&mut s)
        .await
        .unwrap();
    s
}

fn has_label(e: &mongodb::error::Error, label: &str) -> bool {
    e.contains_label(label)
}

#[tokio::test]
async fn kill_all_sessions_aborts_every_open_transaction() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("kas");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut a = open_txn(&client, &coll, 1).await;
    let mut b = open_txn(&client, &coll, 2).await;

    let reply = admin(&client, doc! {"killAllSessions": []}).await.unwrap();
    assert_eq!(reply.get("ok").and_then(Bson::as_f64), Some(1.0));

    // The next statement of a killed transaction: 251 NoSuchTransaction, transient.
    let err = coll
        .insert_one(doc! {"_id": 3})
        .session(&mut a)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    assert!(has_label(&err, "TransientTransactionError"), "{err}");
    let err = b.commit_transaction().await.unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    // Nothing of either transaction became visible.
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);

    // The same documents can now be written by a new transaction: no write conflict with
    // the killed ones.
    let mut c = open_txn(&client, &coll, 1).await;
    coll.insert_one(doc! {"_id": 2})
        .session(&mut c)
        .await
        .unwrap();
    c.commit_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3);
}

#[tokio::test]
async fn kill_sessions_aborts_only_the_named_sessions() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("ks");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut a = open_txn(&client, &coll, 1).await;
    let mut b = open_txn(&client, &coll, 2).await;

    admin(&client, doc! {"killSessions": [lsid(&a)]})
        .await
        .unwrap();
    let err = a.commit_transaction().await.unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    b.commit_transaction().await.unwrap();
    let ids: Vec<i32> = coll
        .distinct("_id", doc! {})
        .await
        .unwrap()
        .iter()
        .filter_map(Bson::as_i32)
        .collect();
    assert_eq!(ids, vec![0, 2]);

    // An lsid of another user (a uid that is not the unauthenticated one) matches nothing.
    let mut c = open_txn(&client, &coll, 3).await;
    let mut other = lsid(&c);
    other.insert(
        "uid",
        Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![7u8; 32],
        },
    );
    admin(&client, doc! {"killSessions": [other]})
        .await
        .unwrap();
    c.commit_transaction().await.unwrap();

    // Malformed session ids are refused.
    let err = admin(&client, doc! {"killSessions": [{"id": 1}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 40423);
    let err = admin(&client, doc! {"killSessions": 1}).await.unwrap_err();
    assert_eq!(command_error(&err).0, 14);
}

#[tokio::test]
async fn kill_sessions_kills_the_sessions_cursors() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("ksc");
    let d = client.database(&db);
    d.collection::<Document>("c")
        .insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let mut s = client.start_session().await.unwrap();
    let mut other = client.start_session().await.unwrap();
    let first = d
        .run_command(doc! {"find": "c", "batchSize": 2})
        .session(&mut s)
        .await
        .unwrap();
    let id = first.get_document("cursor").unwrap().get_i64("id").unwrap();
    let kept = d
        .run_command(doc! {"find": "c", "batchSize": 2})
        .session(&mut other)
        .await
        .unwrap();
    let kept_id = kept.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert!(id != 0 && kept_id != 0);

    admin(&client, doc! {"killSessions": [lsid(&s)]})
        .await
        .unwrap();
    let err = d
        .run_command(doc! {"getMore": id, "collection": "c"})
        .session(&mut s)
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 43, "{err}");
    // The other session's cursor lives on.
    let more = d
        .run_command(doc! {"getMore": kept_id, "collection": "c", "batchSize": 2})
        .session(&mut other)
        .await
        .unwrap();
    assert_eq!(
        more.get_document("cursor")
            .unwrap()
            .get_array("nextBatch")
            .unwrap()
            .len(),
        2
    );

    // killAllSessions kills every session's cursors.
    admin(&client, doc! {"killAllSessions": []}).await.unwrap();
    let err = d
        .run_command(doc! {"getMore": kept_id, "collection": "c"})
        .session(&mut other)
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 43, "{err}");
}

#[tokio::test]
async fn kill_all_sessions_naming_users_needs_the_users() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let err = admin(
        &client,
        doc! {"killAllSessions": [{"user": "nobody", "db": "admin"}]},
    )
    .await
    .unwrap_err();
    let (code, name, _) = command_error(&err);
    assert_eq!((code, name.as_str()), (11, "UserNotFound"));
    let err = admin(&client, doc! {"killAllSessions": [{"user": "x"}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 40414);
}

#[tokio::test]
async fn kill_all_sessions_by_pattern_matches_lsid_and_uid() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("kasbp");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut a = open_txn(&client, &coll, 1).await;
    let mut b = open_txn(&client, &coll, 2).await;

    // A uid nobody has: nothing is killed.
    let other = Binary {
        subtype: BinarySubtype::Generic,
        bytes: vec![9u8; 32],
    };
    admin(&client, doc! {"killAllSessionsByPattern": [{"uid": other}]})
        .await
        .unwrap();
    // One session by its full lsid {id, uid}.
    let mut full = lsid(&a);
    full.insert("uid", no_auth_uid());
    admin(&client, doc! {"killAllSessionsByPattern": [{"lsid": full}]})
        .await
        .unwrap();
    let err = a.commit_transaction().await.unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    b.commit_transaction().await.unwrap();

    // The unauthenticated user's uid matches every session.
    let mut c = open_txn(&client, &coll, 3).await;
    admin(
        &client,
        doc! {"killAllSessionsByPattern": [{"uid": no_auth_uid()}]},
    )
    .await
    .unwrap();
    let err = c.commit_transaction().await.unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");

    // Strict patterns.
    let err = admin(&client, doc! {"killAllSessionsByPattern": [{"bogus": 1}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 40415);
}

/// SHA-256 of the empty string: the `uid` of every session on a server without auth.
fn no_auth_uid() -> Binary {
    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let bytes = (0..HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&HEX[i..i + 2], 16).unwrap())
        .collect();
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

#[tokio::test]
async fn end_sessions_does_not_abort_an_open_transaction() {
    // SRV LogicalSessionCacheImpl::endSessions only queues the sessions for the next refresh;
    // the transaction stays open until it is committed/aborted or outlives
    // transactionLifetimeLimitSeconds.
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("es");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut a = open_txn(&client, &coll, 1).await;
    let reply = admin(&client, doc! {"endSessions": [lsid(&a)]})
        .await
        .unwrap();
    assert_eq!(reply.get("ok").and_then(Bson::as_f64), Some(1.0));
    a.commit_transaction().await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);

    // The cache refresh (test command refreshLogicalSessionCacheNow) kills the cursors of
    // ended sessions, and only those.
    let d = client.database(&db);
    d.collection::<Document>("many")
        .insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let mut ended = client.start_session().await.unwrap();
    let mut alive = client.start_session().await.unwrap();
    let c1 = d
        .run_command(doc! {"find": "many", "batchSize": 1})
        .session(&mut ended)
        .await
        .unwrap()
        .get_document("cursor")
        .unwrap()
        .get_i64("id")
        .unwrap();
    let c2 = d
        .run_command(doc! {"find": "many", "batchSize": 1})
        .session(&mut alive)
        .await
        .unwrap()
        .get_document("cursor")
        .unwrap()
        .get_i64("id")
        .unwrap();
    admin(&client, doc! {"endSessions": [lsid(&ended)]})
        .await
        .unwrap();
    // Not yet: the refresh has not run.
    d.run_command(doc! {"getMore": c1, "collection": "many", "batchSize": 1})
        .session(&mut ended)
        .await
        .unwrap();
    admin(&client, doc! {"refreshLogicalSessionCacheNow": 1})
        .await
        .unwrap();
    let err = d
        .run_command(doc! {"getMore": c1, "collection": "many"})
        .session(&mut ended)
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 43, "{err}");
    d.run_command(doc! {"getMore": c2, "collection": "many"})
        .session(&mut alive)
        .await
        .unwrap();

    let err = admin(&client, doc! {"endSessions": [{"id": "x"}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 40423);
}

#[tokio::test]
async fn refresh_and_start_session() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let s = client.start_session().await.unwrap();
    let reply = admin(&client, doc! {"refreshSessions": [lsid(&s)]})
        .await
        .unwrap();
    assert_eq!(reply.get("ok").and_then(Bson::as_f64), Some(1.0));
    let reply = admin(&client, doc! {"startSession": 1}).await.unwrap();
    let id = reply.get_document("id").unwrap();
    assert!(
        matches!(id.get("id"), Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid),
        "{reply}"
    );
    assert_eq!(reply.get_i32("timeoutMinutes").unwrap(), 30);
    // Both sessions are now in the server's local session cache.
    let listed = admin(
        &client,
        doc! {"aggregate": 1, "pipeline": [{"$listLocalSessions": {}}], "cursor": {}},
    )
    .await
    .unwrap();
    let ids: Vec<Bson> = listed
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .filter_map(|d| {
            d.as_document()?
                .get_document("_id")
                .ok()?
                .get("id")
                .cloned()
        })
        .collect();
    assert!(ids.contains(id.get("id").unwrap()), "{ids:?}");
    assert!(ids.contains(lsid(&s).get("id").unwrap()), "{ids:?}");
}

#[tokio::test]
async fn statements_in_a_transaction_may_carry_a_non_primary_read_preference() {
    // "read preference in a transaction must be primary" is a driver-side check (every
    // driver has it); mongod accepts the `$readPreference` the driver sends, e.g. on getMore.
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("rp");
    let d = client.database(&db);
    d.collection::<Document>("c")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    let first = d
        .run_command(doc! {"find": "c", "batchSize": 2})
        .session(&mut s)
        .await
        .unwrap();
    let id = first.get_document("cursor").unwrap().get_i64("id").unwrap();
    let more = d
        .run_command(doc! {
            "getMore": id,
            "collection": "c",
            "$readPreference": {"mode": "primaryPreferred"},
        })
        .session(&mut s)
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
    s.commit_transaction().await.unwrap();
}

#[tokio::test]
async fn list_databases_shows_admin_config_and_local() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let names = client.list_database_names().await.unwrap();
    for name in ["admin", "config", "local"] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    for spec in client.list_databases().await.unwrap() {
        if ["admin", "config", "local"].contains(&spec.name.as_str()) {
            assert!(spec.size_on_disk > 0);
            assert!(!spec.empty);
        }
    }
}

#[tokio::test]
async fn transactions_outliving_the_lifetime_limit_are_aborted() {
    // SRV killAllExpiredTransactions: transactionLifetimeLimitSeconds after it started, an
    // open transaction is aborted by the server.
    let server = TestServer::start(
        mongosim::Options::new().transaction_lifetime_limit(std::time::Duration::from_secs(1)),
    );
    let client = server.client().await;
    if !server.is_sim() {
        admin(
            &client,
            doc! {"setParameter": 1, "transactionLifetimeLimitSeconds": 1},
        )
        .await
        .unwrap();
    }
    let reported = admin(
        &client,
        doc! {"getParameter": 1, "transactionLifetimeLimitSeconds": 1},
    )
    .await
    .unwrap();
    assert_eq!(
        reported.get_i32("transactionLifetimeLimitSeconds").unwrap(),
        1
    );
    let db = unique_db("ttl");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut a = open_txn(&client, &coll, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let err = a.commit_transaction().await.unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    // A fresh transaction on the same document is not in conflict with the expired one.
    let mut b = open_txn(&client, &coll, 1).await;
    b.commit_transaction().await.unwrap();
    if !server.is_sim() {
        admin(
            &client,
            doc! {"setParameter": 1, "transactionLifetimeLimitSeconds": 60},
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn list_local_sessions_shows_the_sessions_in_use() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let s = client.start_session().await.unwrap();
    let mut s2 = client.start_session().await.unwrap();
    // A session becomes known to the server when a command carries it.
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .session(&mut s2)
        .await
        .unwrap();
    let listed = |pipeline: Vec<Document>| {
        let client = client.clone();
        async move {
            let reply = client
                .database("admin")
                .run_command(doc! {"aggregate": 1, "pipeline": pipeline, "cursor": {}})
                .await?;
            Ok::<_, mongodb::error::Error>(
                reply
                    .get_document("cursor")
                    .unwrap()
                    .get_array("firstBatch")
                    .unwrap()
                    .iter()
                    .filter_map(|d| d.as_document().cloned())
                    .collect::<Vec<Document>>(),
            )
        }
    };
    let mine = lsid(&s2).get("id").cloned().unwrap();
    let all = listed(vec![doc! {"$listLocalSessions": {}}]).await.unwrap();
    let found = all
        .iter()
        .find(|d| d.get_document("_id").ok().and_then(|i| i.get("id")) == Some(&mine))
        .unwrap_or_else(|| panic!("{all:?}"));
    let id = found.get_document("_id").unwrap();
    assert!(matches!(id.get("uid"), Some(Bson::Binary(b)) if b.bytes.len() == 32));
    assert!(found.get_datetime("lastUse").is_ok());
    // A session never used in a command is not known.
    let unused = lsid(&s).get("id").cloned().unwrap();
    assert!(!all
        .iter()
        .any(|d| d.get_document("_id").ok().and_then(|i| i.get("id")) == Some(&unused)));
    let all_users = listed(vec![doc! {"$listLocalSessions": {"allUsers": true}}])
        .await
        .unwrap();
    assert!(all_users.len() >= all.len());
    let other = listed(vec![
        doc! {"$listLocalSessions": {"users": [{"user": "u", "db": "d"}]}},
    ])
    .await
    .unwrap();
    assert!(other.is_empty());
    let err = listed(vec![
        doc! {"$listLocalSessions": {"allUsers": true, "users": [{"user": "u", "db": "d"}]}},
    ])
    .await
    .unwrap_err();
    assert_eq!(command_error(&err).0, 12);
    let err = client
        .database("admin")
        .run_command(
            doc! {"aggregate": "c", "pipeline": [{"$listLocalSessions": {}}], "cursor": {}},
        )
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 73);
}

#[tokio::test]
async fn killing_a_session_kills_its_cursor_in_use_by_a_waiting_get_more() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let mut s = client.start_session().await.unwrap();
    let local = client.database("local");
    let last = local
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .unwrap()
        .get_timestamp("ts")
        .unwrap();
    let reply = local
        .run_command(doc! {
            "find": "oplog.rs", "filter": {"ts": {"$gt": last}},
            "tailable": true, "awaitData": true,
        })
        .session(&mut s)
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let key = lsid(&s);
    let waiting = {
        let local = local.clone();
        tokio::spawn(async move {
            let r = local
                .run_command(doc! {"getMore": id, "collection": "oplog.rs", "maxTimeMS": 1500})
                .session(&mut s)
                .await;
            (r, s)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    admin(&client, doc! {"killSessions": [key]}).await.unwrap();
    let (in_flight, mut s) = waiting.await.unwrap();
    // A real server interrupts the waiting getMore; either way the cursor is gone.
    if in_flight.is_ok() {
        let err = local
            .run_command(doc! {"getMore": id, "collection": "oplog.rs", "maxTimeMS": 100})
            .session(&mut s)
            .await
            .unwrap_err();
        assert_eq!(command_error(&err).0, 43, "{err}");
    }
}

#[tokio::test]
async fn kill_commands_ignore_their_own_session_arguments() {
    // SRV `attachLogicalSessionsToOpCtx() == false`: sent inside a transaction,
    // killAllSessions is not a statement of it (no 263) and kills that transaction too.
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = unique_db("ign");
    let coll = client.database(&db).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let mut a = open_txn(&client, &coll, 1).await;
    client
        .database("admin")
        .run_command(doc! {"killAllSessions": []})
        .session(&mut a)
        .await
        .unwrap();
    let err = a.commit_transaction().await.unwrap_err();
    assert_eq!(code(&err), Some(251), "{err}");
}
