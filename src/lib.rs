//! mongotail: tail MongoDB as a [`futures::Stream`] of [`Op`]s.
//!
//! Three sources, each a `Stream<Item = Result<Op>>` built from an options value:
//!
//! - [`OplogStream`]: tails `local.oplog.rs`, decoding every entry kind, including
//!   `$v: 2` update diffs and transactions (`applyOps`, large and prepared ones);
//! - [`ChangeStreamSource`]: a change stream on a collection, a database or the deployment,
//!   continuing after invalidations;
//! - [`DirectReads`]: every document of collections (split into `_id` ranges read
//!   concurrently) and views.
//!
//! [`start`] runs any mix of them from one [`TailOptions`] value as one [`OpStream`] with a
//! [`Handle`] to pause, resume, seek, stop and wait for direct reads, like gtm's `Start`.
//! Transient errors are retried from the last delivered position; a lost position is a
//! typed [`Error::PositionLost`], never a silent jump (see [`error`]).
//!
//! # Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
//! # let uri = sim.uri();
//! use bson::doc;
//! use futures::StreamExt;
//! use mongotail::{start, Namespace, OplogOptions, StartAt, TailOptions};
//!
//! let client = mongodb::Client::with_uri_str(&uri).await?;
//! let orders = client.database("shop").collection::<bson::Document>("orders");
//! orders.insert_one(doc! {"_id": 1, "total": 10}).await?;
//! orders.update_one(doc! {"_id": 1}, doc! {"$set": {"total": 12}}).await?;
//!
//! let oplog = OplogOptions::new()
//!     .start(StartAt::Earliest)
//!     .namespace(Namespace::parse("shop.orders")?);
//! let (mut ops, handle) = start(&client, TailOptions::new().oplog(oplog));
//! let mut kinds = Vec::new();
//! while let Some(op) = ops.next().await {
//!     let op = op?;
//!     kinds.push(format!("{:?}", op.kind));
//!     if op.is_update() {
//!         let update = op.update.as_ref().expect("updates describe their change");
//!         assert_eq!(update.updated_fields, doc! {"total": 12});
//!         handle.stop(); // ends the stream and closes its cursor
//!     }
//! }
//! assert_eq!(kinds, ["Create", "Insert", "Update"]);
//! # Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
// `Error` carries the namespace, id and position it is about by value (~200 bytes); errors
// are rare, so boxing them would only make matching on them clumsier.
#![allow(clippy::result_large_err)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod checkpoint;
pub mod error;
pub mod ext;
pub mod op;
pub mod ring;
pub mod source;
mod start;

pub use error::{Error, ErrorKind, Result};
pub use ext::{OpStreamExt, Ordering};
pub use op::{Namespace, Op, OpKind, Position, Source, TruncatedArray, TxnInfo, UpdateDescription};
pub use ring::{HashRing, RingWorker};
pub use source::change_stream::{ChangeStreamOptions, ChangeStreamSource};
pub use source::cluster::{ClusterControl, ClusterOptions, ClusterStream};
pub use source::direct::{DirectOptions, DirectReads};
pub use source::oplog::{OplogOptions, OplogStream};
pub use source::start_at::{cluster_time, first_op_timestamp, last_op_timestamp, StartAt, StartFn};
pub use source::stats::{DirectStats, SourceState, SourceStats, Stats};
pub use source::RetryPolicy;
pub use start::{start, Handle, OpStream, TailOptions};
