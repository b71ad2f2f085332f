//! Shared helpers of the integration tests: a server (embedded mongosim, or the server at
//! `MONGODB_URI` when that is set: same test bodies), unique database names, collecting
//! ops with a timeout, fail points.
#![allow(dead_code)]

pub mod ordering;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use futures::{Stream, StreamExt};
use mongodb::Client;
use mongotail::{Op, Result};

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// A server for one test. Keep it alive as long as the client is used.
pub struct TestServer {
    pub client: Client,
    pub uri: String,
    _sim: Option<mongosim::MongoSim>,
}

impl TestServer {
    /// A 7.0 replica set (or `MONGODB_URI`).
    pub async fn start() -> TestServer {
        TestServer::with(mongosim::Options::new()).await
    }

    /// An embedded server with `opts` (ignored when `MONGODB_URI` is set).
    pub async fn with(opts: mongosim::Options) -> TestServer {
        let (uri, sim) = match std::env::var("MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => (uri, None),
            _ => {
                let sim = mongosim::MongoSim::start(opts).expect("start mongosim");
                (sim.uri(), Some(sim))
            }
        };
        let client = Client::with_uri_str(&uri).await.expect("client");
        TestServer {
            client,
            uri,
            _sim: sim,
        }
    }

    /// A client with its own options (e.g. command monitoring).
    pub async fn client_with(
        &self,
        f: impl FnOnce(&mut mongodb::options::ClientOptions),
    ) -> Client {
        let mut opts = mongodb::options::ClientOptions::parse(&self.uri)
            .await
            .expect("parse uri");
        f(&mut opts);
        Client::with_options(opts).expect("client")
    }

    /// The `ts` of the newest oplog entry.
    pub async fn latest_ts(&self) -> Timestamp {
        let entry = self
            .client
            .database("local")
            .collection::<Document>("oplog.rs")
            .find_one(doc! {})
            .sort(doc! {"$natural": -1})
            .await
            .expect("read oplog")
            .expect("oplog not empty");
        entry.get_timestamp("ts").expect("ts")
    }

    /// Sets the `failCommand` fail point (reference §7.10).
    pub async fn fail_command(&self, mode: Bson, data: Document) {
        self.client
            .database("admin")
            .run_command(doc! {"configureFailPoint": "failCommand", "mode": mode, "data": data})
            .await
            .expect("configureFailPoint");
    }

    /// Turns `failCommand` off.
    pub async fn fail_off(&self) {
        self.client
            .database("admin")
            .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
            .await
            .expect("configureFailPoint off");
    }
}

/// A database name unique to this process and call (tests share a real server).
pub fn unique_db(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mt_{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The next `n` items of `stream`, failing the test on an error item or after [`WAIT`].
pub async fn take_ops<S>(stream: &mut S, n: usize) -> Vec<Op>
where
    S: Stream<Item = Result<Op>> + Unpin,
{
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(op))) => out.push(op),
            Ok(Some(Err(e))) => panic!("error after {} ops: {e:?}", out.len()),
            Ok(None) => panic!("stream ended after {} of {n} ops", out.len()),
            Err(_) => panic!("timed out after {} of {n} ops: {out:#?}", out.len()),
        }
    }
    out
}

/// The next op of `stream` (panics on an error, the end, or [`WAIT`] without one).
pub async fn next_op<S>(stream: &mut S) -> Op
where
    S: Stream<Item = Result<Op>> + Unpin,
{
    take_ops(stream, 1).await.remove(0)
}

/// Waits until every live source of `handle` has opened (its start point is taken).
pub async fn wait_live(handle: &mongotail::Handle) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle
        .stats()
        .await
        .sources
        .iter()
        .any(|s| s.state != mongotail::SourceState::Live)
    {
        assert!(tokio::time::Instant::now() < deadline, "sources not live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `stream` yields nothing within `d`.
pub async fn assert_quiet<S>(stream: &mut S, d: Duration)
where
    S: Stream<Item = Result<Op>> + Unpin,
{
    if let Ok(item) = tokio::time::timeout(d, stream.next()).await {
        panic!("expected no more ops, got {item:?}");
    }
}

/// The `_id`s of `ops` as i32 (panics on another type).
pub fn int_ids(ops: &[Op]) -> Vec<i32> {
    ops.iter()
        .map(|o| match o.id {
            Some(Bson::Int32(i)) => i,
            ref other => panic!("id {other:?}"),
        })
        .collect()
}

/// True (and a note on stderr) when the test needs an embedded server with special
/// options (a tiny oplog, a standalone) that a `MONGODB_URI` deployment cannot provide.
pub fn external_server(why: &str) -> bool {
    match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => {
            eprintln!("skipped against MONGODB_URI: {why}");
            true
        }
        _ => false,
    }
}

/// The server's major version (`buildInfo.versionArray[0]`).
pub async fn server_major(client: &Client) -> i32 {
    let info = client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .expect("buildInfo");
    match info.get_array("versionArray").ok().and_then(|a| a.first()) {
        Some(Bson::Int32(v)) => *v,
        Some(Bson::Int64(v)) => *v as i32,
        other => panic!("versionArray {other:?}"),
    }
}
