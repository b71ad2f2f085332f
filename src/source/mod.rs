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

/// Feeds `bytes`, read as a BSON document, to the oplog decoder (after the entries
/// `seeds` it is given first, so a partial transaction may be pending), discarding the
/// result: the entry point of the fuzz target `oplog_entry` (`fuzz/`). Never panics,
/// whatever the input.
#[doc(hidden)]
pub fn fuzz_oplog_entry(bytes: &[u8], filtered: bool, as_delta: bool) {
    let Ok(entry) = bson::Document::from_reader(bytes) else {
        return;
    };
    let namespaces = if filtered {
        vec![crate::Namespace::parse("db.c").expect("valid")]
    } else {
        Vec::new()
    };
    let mut decoder = oplog::decode::Decoder::new(namespaces, as_delta, 1_000);
    let mut out = std::collections::VecDeque::new();
    let _ = decoder.process_into(entry, &mut out);
}

/// Feeds `bytes`, read as a raw BSON document, to the change-event decoder, discarding the
/// result: the entry point of the fuzz target `change_event` (`fuzz/`). Never panics,
/// whatever the input.
#[doc(hidden)]
pub fn fuzz_change_event(bytes: &[u8]) {
    let Ok(event) = bson::RawDocument::from_bytes(bytes) else {
        return;
    };
    let mut txn = change_stream::event::TxnCounter::default();
    let _ = change_stream::event::decode_event(event, &mut txn);
}
