//! `configureFailPoint` / `failCommand` (reference §7.10) through the official driver.

mod common;

use std::time::{Duration, Instant};

use bson::{doc, Document};
use common::{code, command_error, unique_db, TestServer};
use mongodb::options::ClientOptions;
use mongodb::Client;
use mongosim::Options;

async fn set(client: &Client, cmd: Document) -> Document {
    client.database("admin").run_command(cmd).await.unwrap()
}

async fn off(client: &Client) {
    set(
        client,
        doc! {"configureFailPoint": "failCommand", "mode": "off"},
    )
    .await;
}

#[tokio::test]
async fn times_mode_fails_matching_commands_then_turns_off() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("fp_times"));
    let reply = set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 2},
        "data": {"failCommands": ["insert"], "errorCode": 2}},
    )
    .await;
    assert!(reply.get("count").is_some(), "{reply}");
    // a command not in failCommands is not affected and does not consume a time
    db.run_command(doc! {"ping": 1}).await.unwrap();
    let coll = db.collection::<Document>("c");
    for _ in 0..2 {
        let err = coll.insert_one(doc! {"x": 1}).await.unwrap_err();
        let (c, name, msg) = command_error(&err);
        assert_eq!((c, name.as_str()), (2, "BadValue"));
        assert_eq!(msg, "Failing command via 'failCommand' failpoint");
    }
    coll.insert_one(doc! {"x": 1}).await.unwrap();
    // the failed inserts wrote nothing
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test]
async fn skip_and_always_on() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("fp_skip"));
    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"skip": 1},
        "data": {"failCommands": ["find"], "errorCode": 91}},
    )
    .await;
    let coll = db.collection::<Document>("c");
    // find is retryable on 91: use runCommand to see the raw error
    db.run_command(doc! {"find": "c"}).await.unwrap();
    let err = db.run_command(doc! {"find": "c"}).await.unwrap_err();
    assert_eq!(code(&err), Some(91));
    let err = db.run_command(doc! {"find": "c"}).await.unwrap_err();
    assert_eq!(code(&err), Some(91));
    off(&client).await;
    assert!(coll.find_one(doc! {}).await.unwrap().is_none());

    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn",
        "data": {"failCommands": ["count"], "errorCode": 8,
                 "errorLabels": ["CustomLabel"]}},
    )
    .await;
    for _ in 0..3 {
        let err = db.run_command(doc! {"count": "c"}).await.unwrap_err();
        assert_eq!(code(&err), Some(8));
        assert!(err.contains_label("CustomLabel"));
    }
    let reply = set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": "off"},
    )
    .await;
    // count = times the fail point had fired before this call (1 skip-mode + 3 alwaysOn hits)
    assert_eq!(reply.get_i32("count").unwrap(), 5);
    db.run_command(doc! {"count": "c"}).await.unwrap();
}

#[tokio::test]
async fn retryable_write_label_and_override() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("fp_labels"));
    let coll = db.collection::<Document>("c");
    // a retryable write error: the server adds RetryableWriteError, the driver retries once
    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["insert"], "errorCode": 91}},
    )
    .await;
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    // errorLabels: [] suppresses it: the driver does not retry
    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["insert"], "errorCode": 91, "errorLabels": []}},
    )
    .await;
    let err = coll.insert_one(doc! {"_id": 2}).await.unwrap_err();
    assert_eq!(code(&err), Some(91));
    assert!(!err.contains_label("RetryableWriteError"));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test]
async fn close_connection_and_block_connection() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("fp_close"));
    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["count"], "closeConnection": true}},
    )
    .await;
    let err = db.run_command(doc! {"count": "c"}).await.unwrap_err();
    assert!(
        matches!(
            *err.kind,
            mongodb::error::ErrorKind::Io(_)
                | mongodb::error::ErrorKind::ConnectionPoolCleared { .. }
        ),
        "{err}"
    );
    db.run_command(doc! {"count": "c"}).await.unwrap();

    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["count"], "blockConnection": true, "blockTimeMS": 300}},
    )
    .await;
    let t = Instant::now();
    db.run_command(doc! {"count": "c"}).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // blockConnection without blockTimeMS: 72 InvalidOptions
    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["count"], "blockConnection": true}},
    )
    .await;
    let err = db.run_command(doc! {"count": "c"}).await.unwrap_err();
    assert_eq!(code(&err), Some(72));
}

#[tokio::test]
async fn app_name_filter() {
    let server = TestServer::default_rs();
    let mut opts = ClientOptions::parse(&server.uri).await.unwrap();
    opts.app_name = Some("victim".into());
    let victim = Client::with_options(opts).unwrap();
    let other = server.client().await;
    let name = unique_db("fp_app");
    set(
        &other,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["count"], "errorCode": 2, "appName": "victim"}},
    )
    .await;
    other
        .database(&name)
        .run_command(doc! {"count": "c"})
        .await
        .unwrap();
    let err = victim
        .database(&name)
        .run_command(doc! {"count": "c"})
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(2));
}

#[tokio::test]
async fn write_concern_error_after_the_write() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let db = client.database(&unique_db("fp_wce"));
    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
              "data": {"failCommands": ["insert"],
                       "writeConcernError": {"code": 100, "codeName": "UnsatisfiableWriteConcern", "errmsg": "Not enough data-bearing nodes"}}},
    )
    .await;
    let reply = db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 1}]})
        .await;
    // the driver surfaces writeConcernError as an error; the write itself happened
    assert!(reply.is_err() || reply.unwrap().get("writeConcernError").is_some());
    assert_eq!(
        db.collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn bad_arguments_and_disabled_test_commands() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let admin = client.database("admin");
    let err = admin
        .run_command(doc! {"configureFailPoint": "noSuchFailPoint", "mode": "off"})
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(266));
    let err = admin
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "sometimes"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).2, "unknown mode: sometimes");
    let err = client
        .database(&unique_db("fp_notadmin"))
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(13));

    let disabled = TestServer::start(Options::new().enable_test_commands(false));
    if !disabled.is_sim() {
        return;
    }
    let c = disabled.client().await;
    let err = c
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .unwrap_err();
    let (code, name, msg) = command_error(&err);
    assert_eq!((code, name.as_str()), (59, "CommandNotFound"));
    assert_eq!(msg, "no such command: 'configureFailPoint'");
}

#[tokio::test]
async fn namespace_filter() {
    let server = TestServer::default_rs();
    let client = server.client().await;
    let name = unique_db("fp_ns");
    let db = client.database(&name);
    set(
        &client,
        doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["count"], "errorCode": 2, "namespace": format!("{name}.b")}},
    )
    .await;
    db.run_command(doc! {"count": "a"}).await.unwrap();
    let err = db.run_command(doc! {"count": "b"}).await.unwrap_err();
    assert_eq!(code(&err), Some(2));
}
