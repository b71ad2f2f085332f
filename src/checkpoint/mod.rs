//! Durable progress: where every source stands, saved under a name in a
//! [`CheckpointStore`] so that a restarted process continues where the last one stopped.
//!
//! A [`Checkpoint`] holds the position of every source: the oplog timestamp (and the index
//! of the last op delivered inside a transaction), each change stream's resume token,
//! direct-read progress per collection and per `_id` range, and per-shard oplog positions
//! for sharded clusters. Its format is versioned ([`FORMAT_VERSION`]); a checkpoint that
//! cannot be read, or that another format wrote, is [`Error::Checkpoint`], never a silent
//! restart from scratch.
//!
//! Three stores: [`MongoStore`] (one document per name in a collection, majority write
//! concern), [`FileStore`] (one file per name: write a temporary file, fsync, rename) and
//! [`MemoryStore`] (tests).
//!
//! ```
//! use bson::Timestamp;
//! use mongotail::checkpoint::{Checkpoint, CheckpointStore, MemoryStore, OplogProgress};
//!
//! # futures::executor::block_on(async {
//! let store = MemoryStore::new();
//! let mut cp = Checkpoint::new();
//! cp.oplog = Some(OplogProgress::new(Timestamp { time: 1_700_000_000, increment: 3 }));
//! store.save("indexer", &cp).await?;
//! assert_eq!(store.load("indexer").await?, Some(cp));
//! store.delete("indexer").await?;
//! assert_eq!(store.load("indexer").await?, None);
//! # Ok::<(), mongotail::Error>(())
//! # }).unwrap();
//! ```
//!
//! [`start`](crate::start) keeps one with [`TailOptions::checkpoint`](crate::TailOptions::checkpoint):
//! each op then carries an [`Ack`]; the low watermark of acknowledged ops is saved every
//! [`CheckpointOptions::save_every`] acknowledgements, every
//! [`CheckpointOptions::save_interval`], at stop and on [`Handle::flush`](crate::Handle::flush),
//! and a restart resumes every source from it (the guarantee is written there).

use std::collections::BTreeMap;

use bson::{Bson, Document, Timestamp};
use futures::future::BoxFuture;
use mongodb::change_stream::event::ResumeToken;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod file;
mod memory;
mod mongo;
mod saver;
pub(crate) mod track;
pub(crate) mod tracked;

pub use file::FileStore;
pub use memory::MemoryStore;
pub use mongo::MongoStore;
pub(crate) use saver::Saver;
pub use saver::{CheckpointOptions, PositionLostPolicy};
pub use track::Ack;

/// The version of the checkpoint format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where every source stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The format version ([`FORMAT_VERSION`] when written by this build).
    pub version: u32,
    /// The oplog source's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog: Option<OplogProgress>,
    /// Each change stream's resume token, by the stream's scope (`db.coll`, `db`, or the
    /// empty string for the whole deployment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub change_streams: BTreeMap<String, ResumeToken>,
    /// Change streams that started at a cluster time and have no resume token yet, by
    /// scope: they resume at that time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub change_stream_times: BTreeMap<String, Timestamp>,
    /// Direct-read progress by namespace (`db.coll`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub direct: BTreeMap<String, DirectProgress>,
    /// Per-shard oplog positions of a sharded cluster, by shard id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shards: BTreeMap<String, OplogProgress>,
    /// Where a sharded cluster's stream started (one cluster time for every shard), kept
    /// until its shards have positions: a restart before that starts every shard there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_start: Option<Timestamp>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            version: FORMAT_VERSION,
            oplog: None,
            change_streams: BTreeMap::new(),
            change_stream_times: BTreeMap::new(),
            direct: BTreeMap::new(),
            shards: BTreeMap::new(),
            cluster_start: None,
        }
    }
}

impl Checkpoint {
    /// An empty checkpoint of the current format: nothing read yet.
    pub fn new() -> Checkpoint {
        Checkpoint::default()
    }

    /// The checkpoint as a BSON document (what [`MongoStore`] stores).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when it cannot be encoded (it always can).
    pub fn to_document(&self) -> Result<Document> {
        bson::to_document(self).map_err(|e| invalid("(unsaved)", e))
    }

    /// Reads a checkpoint written by [`Checkpoint::to_document`], checking its version.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming `name` when the document is not a checkpoint or was
    /// written in another format version.
    pub fn from_document(name: &str, doc: Document) -> Result<Checkpoint> {
        match doc.get("version") {
            Some(Bson::Int32(v)) if *v == FORMAT_VERSION as i32 => {}
            Some(Bson::Int64(v)) if *v == i64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(Error::Checkpoint {
                    name: name.to_owned(),
                    message: format!(
                        "format version {v} is not {FORMAT_VERSION}, the one this build reads"
                    ),
                })
            }
            None => {
                return Err(Error::Checkpoint {
                    name: name.to_owned(),
                    message: "not a mongotail checkpoint (no version field)".into(),
                })
            }
        }
        bson::from_document(doc).map_err(|e| invalid(name, e))
    }
}

fn invalid(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        name: name.to_owned(),
        message: format!("unreadable checkpoint: {e}"),
    }
}

/// An oplog position: the `ts` of the last entry whose ops were all handled, or of the
/// entry (a transaction) whose ops up to `index` were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OplogProgress {
    /// The entry's `ts`.
    pub ts: Timestamp,
    /// Inside a transaction committed at `ts`: the index of the last op handled (`None`:
    /// the whole entry was handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl OplogProgress {
    /// After the whole entry at `ts`.
    pub fn new(ts: Timestamp) -> OplogProgress {
        OplogProgress { ts, index: None }
    }

    /// After op `index` of the transaction committed at `ts`.
    pub fn inside(ts: Timestamp, index: u32) -> OplogProgress {
        OplogProgress {
            ts,
            index: Some(index),
        }
    }
}

/// How far the direct read of one collection got.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DirectProgress {
    /// Every range was read to its end.
    pub finished: bool,
    /// Progress per `_id` range, in the order the ranges were planned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeProgress>,
}

/// How far one `_id` range of a direct read got.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RangeProgress {
    /// The range's `_id` filter.
    pub filter: Document,
    /// The last `_id` handled (ranges are read in `_id` order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<Bson>,
    /// The range was read to its end.
    pub finished: bool,
}

impl RangeProgress {
    /// A range with `filter`, nothing read yet.
    pub fn new(filter: Document) -> RangeProgress {
        RangeProgress {
            filter,
            last_id: None,
            finished: false,
        }
    }
}

/// Where checkpoints are kept: load, save and delete by name. Implement it to keep them
/// anywhere else (a key-value store, the same transaction as your own output).
pub trait CheckpointStore: Send + Sync {
    /// The checkpoint saved under `name`, or `None` when there is none.
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>>>;

    /// Saves `checkpoint` under `name`, replacing the previous one; durable when the
    /// future resolves.
    fn save<'a>(&'a self, name: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<()>>;

    /// Deletes the checkpoint saved under `name` (nothing when there is none).
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn full() -> Checkpoint {
        let mut cp = Checkpoint::new();
        let ts = Timestamp {
            time: 5,
            increment: 2,
        };
        cp.oplog = Some(OplogProgress::inside(ts, 199));
        let token: ResumeToken = bson::from_bson(Bson::Document(doc! {"_data": "8263AB"})).unwrap();
        cp.change_streams.insert("shop.orders".into(), token);
        cp.direct.insert(
            "shop.users".into(),
            DirectProgress {
                finished: false,
                ranges: vec![RangeProgress {
                    filter: doc! {"_id": {"$lt": 100}},
                    last_id: Some(Bson::Int32(42)),
                    finished: false,
                }],
            },
        );
        cp.shards.insert("shard0".into(), OplogProgress::new(ts));
        cp
    }

    #[test]
    fn round_trips_through_bson() {
        let cp = full();
        let doc = cp.to_document().unwrap();
        // bson writes a `u32` as an Int64.
        assert_eq!(doc.get_i64("version"), Ok(i64::from(FORMAT_VERSION)));
        assert_eq!(Checkpoint::from_document("x", doc).unwrap(), cp);
        let empty = Checkpoint::new().to_document().unwrap();
        assert_eq!(empty, doc! {"version": i64::from(FORMAT_VERSION)});
    }

    #[test]
    fn foreign_and_future_checkpoints_are_errors() {
        let e = Checkpoint::from_document("a", doc! {"ts": 1}).unwrap_err();
        assert!(
            matches!(&e, Error::Checkpoint { name, .. } if name == "a"),
            "{e}"
        );
        let e = Checkpoint::from_document("b", doc! {"version": 2}).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        let e = Checkpoint::from_document("c", doc! {"version": 1, "oplog": "x"}).unwrap_err();
        assert!(e.to_string().contains("unreadable"), "{e}");
    }
}
