//! The three sources: [`oplog`], [`change_stream`] and [`direct`] reads, and the
//! [`cluster`] stream: one oplog tail per shard of a sharded cluster, merged in time order.
//!
//! Each is a `Stream<Item = Result<Op>>` built from an options value (`Default` + builder
//! methods). Under each runs the same resumable state machine (`engine`): it owns the
//! cursor and the position, retries transient errors with [`RetryPolicy`], applies seek and
//! pause requests and detects a lost position; a source only says how it opens a cursor,
//! decodes what it reads and classifies errors. Live sources expose their position for
//! checkpointing; see [`crate::error`] for what ends a stream.
//!
//! [`Op`]: crate::Op

#[macro_use]
mod engine;

pub mod change_stream;
pub mod cluster;
#[cfg(test)]
mod decode_props;
pub mod direct;
pub mod oplog;
mod raw;
mod retry;
pub mod start_at;
pub mod stats;

pub use retry::RetryPolicy;
