//! Fast, clear first contact: a source that cannot reach the server ends within
//! `RetryPolicy::first_contact` with `Error::FirstContact`, whose cause names the host
//! or says what to check (against mongosim, or `MONGODB_URI` for the wrong replica-set name).

mod common;

use std::time::Duration;

use bson::doc;
use common::TestServer;
use futures::StreamExt;
use mongodb::Client;
use mongotail::{
    start, ChangeStreamOptions, DirectOptions, Error, Namespace, OplogOptions, RetryPolicy,
    TailOptions,
};

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn quick() -> RetryPolicy {
    RetryPolicy::default().first_contact(Duration::from_secs(2))
}

/// Every source alone, with a quick first-contact limit.
fn each_source() -> Vec<(&'static str, TailOptions)> {
    let ns = Namespace::parse("shop.orders").unwrap();
    vec![
        (
            "oplog",
            TailOptions::new().oplog(OplogOptions::new().retry(quick())),
        ),
        (
            "change stream",
            TailOptions::new()
                .disable_oplog()
                .change_stream(ChangeStreamOptions::new().retry(quick())),
        ),
        (
            "direct",
            TailOptions::new()
                .disable_oplog()
                .direct(DirectOptions::new().namespace(ns).retry(quick())),
        ),
    ]
}

/// The error chain of the first item of `options` on `client`.
async fn first_error(client: &Client, options: TailOptions) -> (Error, String) {
    let (mut ops, _handle) = start(client, options);
    // A guard against a hang only: the limit under test is 2 s.
    let first = tokio::time::timeout(Duration::from_secs(120), ops.next()).await;
    let Ok(Some(Err(e))) = first else {
        panic!("expected an error, got {first:?}");
    };
    let mut chain = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        chain.push_str(&format!(": {c}"));
        cause = c.source();
    }
    (e, chain)
}

#[tokio::test]
async fn an_unreachable_server_is_reported_by_every_source_naming_the_host() {
    let port = closed_port();
    let uri =
        format!("mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300");
    let client = Client::with_uri_str(&uri).await.unwrap();
    for (name, options) in each_source() {
        let (e, chain) = first_error(&client, options).await;
        assert!(matches!(e, Error::FirstContact { .. }), "{name}: {chain}");
        assert!(
            chain.contains(&format!("127.0.0.1:{port}")),
            "{name}: {chain}"
        );
    }
}

#[tokio::test]
async fn a_wrong_replica_set_name_is_reported_with_what_to_check() {
    let server = TestServer::start().await;
    let mut opts = mongodb::options::ClientOptions::parse(&server.uri)
        .await
        .unwrap();
    opts.repl_set_name = Some("not-this-one".into());
    opts.server_selection_timeout = Some(Duration::from_millis(300));
    let client = Client::with_options(opts).unwrap();
    let (e, chain) = first_error(&client, each_source().remove(0).1).await;
    assert!(matches!(e, Error::FirstContact { .. }), "{chain}");
    // The driver drops a host that reports another set name: the error names the set and
    // says what to check (the `tail` example adds the URI).
    assert!(
        chain.contains("not-this-one") && chain.contains("replicaSet"),
        "{chain}"
    );
}

#[tokio::test]
async fn a_missing_privilege_is_reported_at_once_by_every_source() {
    let server = TestServer::start().await;
    for (name, options) in each_source() {
        // What a server answers a user without the privilege (13 Unauthorized).
        server
            .fail_command(
                "alwaysOn".into(),
                doc! {
                    "failCommands": ["find", "aggregate", "count", "listCollections"],
                    "errorCode": 13,
                },
            )
            .await;
        let (e, chain) = first_error(&server.client, options).await;
        server.fail_off().await;
        assert!(matches!(e, Error::FirstContact { .. }), "{name}: {chain}");
        assert!(
            chain.contains("not authorized") && chain.contains("Unauthorized"),
            "{name}: {chain}"
        );
    }
}
