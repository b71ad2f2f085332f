//! mongosim: a MongoDB wire-compatible single-node replica set — or a whole sharded cluster
//! — for tests.
//!
//! ```no_run
//! let sim = mongosim::MongoSim::start(mongosim::Options::new()).unwrap();
//! println!("{}", sim.uri()); // mongodb://127.0.0.1:<port>/?replicaSet=rs0
//! // dropped: the server stops
//!
//! let cluster = mongosim::Cluster::start(mongosim::ClusterOptions::new().shards(2)).unwrap();
//! println!("{}", cluster.uri()); // mongodb://127.0.0.1:<router port>/
//! ```
//!
//! # Layers
//!
//! The folders follow a request, and imports point one way, down:
//! `wire/` (framing, OP_MSG / OP_QUERY, BSON validation; returns its own parsed
//! `wire::Command`) -> `server` (accept loop, one task per connection, turns a parsed command
//! into a request and decorates replies) -> `router/` (a router node's mongos commands: it
//! reaches shards and the config server over the wire with its own client, and uses the
//! `commands` layer's context, argument parsing, fail points and sessions) -> `commands/` (one
//! file per command family, with the shared `args`, `reply` and `state` modules at its
//! bottom) -> `engine/` (catalog, oplog, clock, cursors, pre/post images, document
//! validation) and `query/` (matcher, expressions, updates, projection, pipeline). `engine/`
//! and `query/` import nothing from `commands`, `server` or `wire`; `wire/` nothing from
//! `commands` or `server`; `commands/` nothing from `server` or `router`; `router/` nothing
//! from `server`. `cluster` (starting a config server, shards and routers) sits beside
//! `server`. Beneath everything: `error` (the one error type and the table of error codes, from the `mql` crate),
//! `limits` (size limits), `options`, `hasher` (MongoDB's hash of hashed shard keys) and
//! `resume_token` (the KeyString codec).

#![warn(missing_debug_implementations, rust_2018_idioms)]
// Every handler returns `CmdResult<T> = Result<T, CommandError>`; the error carries the
// reply's code, codeName, errmsg, labels and extra fields by value and is the cold path.
#![allow(clippy::result_large_err)]

mod cluster;
pub mod error;
mod hasher;
mod limits;
mod options;

pub(crate) mod commands;
pub(crate) mod engine;
/// The query engine lives in its own crate (`mql/`); `crate::query::…` paths reach it.
pub(crate) use mql as query;
pub(crate) mod resume_token;
pub(crate) mod router;
pub(crate) mod server;
pub(crate) mod wire;

pub use cluster::{Cluster, ClusterOptions};
pub use commands::state::Stats;
pub use error::CommandError;
pub use options::{ClusterRole, Options, ServerVersion};
pub use server::MongoSim;

/// Runs the wire layer on one raw message as the server would (framing, OP_MSG / OP_QUERY
/// parsing, BSON validation), discarding the result: the entry point of the fuzz target
/// (`mongosim/fuzz`). Never panics, whatever the input.
#[doc(hidden)]
pub fn fuzz_wire(message: &[u8]) {
    let _ = wire::parse(message, ServerVersion::V7_0);
    let _ = wire::parse(message, ServerVersion::V4_4);
    let _ = wire::validate_bson(message);
}
