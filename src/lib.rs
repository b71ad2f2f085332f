//! mongotail: tail MongoDB as a `futures::Stream` of ops (being built).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod error;
pub mod ext;
pub mod op;
pub mod ring;
pub mod source;
mod start;

pub use error::{Error, ErrorKind, Result};
pub use op::{Namespace, Op, OpKind, Position, Source, TruncatedArray, TxnInfo, UpdateDescription};
pub use ring::{HashRing, RingWorker};
pub use source::change_stream::{ChangeStreamOptions, ChangeStreamSource};
pub use source::direct::{DirectOptions, DirectReads};
pub use source::oplog::{OplogOptions, OplogStream, StartAt};
pub use source::RetryPolicy;
pub use start::{start, Handle, OpStream, TailOptions};
pub use ext::{OpStreamExt, Ordering};
