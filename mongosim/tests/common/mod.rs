//! Shared helpers for mongosim's integration tests: start a simulator (or use a real server
//! when `MONGODB_URI` is set: same test body), connect the official driver, name scratch
//! databases.

#![allow(dead_code)]

use bson::{doc, Document};
use mongodb::Client;
use mongosim::{MongoSim, Options, ServerVersion};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A server under test: an embedded simulator, or the server at `MONGODB_URI`.
#[derive(Debug)]
pub struct TestServer {
    /// The simulator (None when testing against `MONGODB_URI`).
    pub sim: Option<MongoSim>,
    /// Connection string.
    pub uri: String,
}

impl TestServer {
    /// Starts a simulator with `opts`, unless `MONGODB_URI` is set.
    pub fn start(opts: Options) -> TestServer {
        if let Ok(uri) = std::env::var("MONGODB_URI") {
            return TestServer { sim: None, uri };
        }
        let sim = MongoSim::start(opts).expect("start mongosim");
        let uri = sim.uri();
        TestServer {
            sim: Some(sim),
            uri,
        }
    }

    /// A default 7.0 replica set.
    pub fn default_rs() -> TestServer {
        Self::start(Options::new())
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::with_uri_str(&self.uri).await.expect("client")
    }

    /// True when running against the embedded simulator.
    pub fn is_sim(&self) -> bool {
        self.sim.is_some()
    }
}

/// The version family of the connected server (`buildInfo`): 4.4-style oplog formats below
/// 5.0, 7.0-style from 6.0.
pub async fn server_version(client: &Client) -> ServerVersion {
    let info = client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .expect("buildInfo");
    let v = info.get_str("version").unwrap_or("7.0");
    let major: u32 = v
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(7);
    if major < 5 {
        ServerVersion::V4_4
    } else {
        ServerVersion::V7_0
    }
}

/// A database name unique within this test process.
pub fn unique_db(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command on `db` and returns the raw reply (errors as `Err`).
pub async fn run(client: &Client, db: &str, cmd: Document) -> mongodb::error::Result<Document> {
    client.database(db).run_command(cmd).await
}

/// The server error code of a failed command.
pub fn code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// The code, codeName and message of a failed command.
pub fn command_error(e: &mongodb::error::Error) -> (i32, String, String) {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => (c.code, c.code_name.clone(), c.message.clone()),
        other => panic!("not a command error: {other:?}"),
    }
}
