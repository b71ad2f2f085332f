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

pub use error::{Error, ErrorKind, Result};
pub use op::{Namespace, Op, OpKind, Position, Source, TruncatedArray, TxnInfo, UpdateDescription};
pub use ring::{HashRing, RingWorker};
pub use ext::{OpStreamExt, Ordering};
