//! mongosim: a MongoDB wire-compatible single-node replica set for tests.
//!
//! ```no_run
//! let sim = mongosim::MongoSim::start(mongosim::Options::new()).unwrap();
//! println!("{}", sim.uri()); // mongodb://127.0.0.1:<port>/?replicaSet=rs0
//! // dropped: the server stops
//! ```
//!
//! Layout follows a request: `wire/` (framing) -> `server` (connections, sessions) ->
//! `commands/` (one file per family) -> `engine/` (catalog, oplog, clock) with `query/`
//! (matcher, updates, pipelines) beside it.

#![warn(missing_debug_implementations, rust_2018_idioms)]
// Every handler returns `CmdResult<T> = Result<T, CommandError>`; the error carries the
// reply's code, codeName, errmsg, labels and extra fields by value and is the cold path.
#![allow(clippy::result_large_err)]

pub mod error;
mod options;

pub(crate) mod commands;
pub(crate) mod engine;
pub(crate) mod query;
pub(crate) mod resume_token;
pub(crate) mod server;
pub(crate) mod wire;

pub use error::CommandError;
pub use options::{Options, ServerVersion};
pub use server::{MongoSim, Stats};
