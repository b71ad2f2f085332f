//! The one error type of the crate.
//!
//! # Which errors end a stream
//!
//! Sources retry transient failures themselves, with exponential backoff and jitter
//! ([`RetryPolicy`](crate::RetryPolicy)), from the last delivered position (oplog: the
//! last `ts`; change streams: the last resume token; direct reads: the last `_id` of the
//! range), so nothing is lost or repeated, and never yield them while retries remain.
//! Transient means: network errors, server selection, not primary, shutdown in progress,
//! cursor killed / not found, interrupted, and what the change-stream specification calls
//! resumable (see [`Error::is_resumable`]). What the sources yield:
//!
//! | Error | Source stream afterwards |
//! |---|---|
//! | [`Error::PositionLost`] | ends: the position is gone from the server (oplog rolled over, change-stream history lost, invalid token); the caller decides what to do, mongotail never jumps ahead |
//! | [`Error::NotReplicaSet`] | ends |
//! | [`Error::FirstContact`] | ends: the server was never reached within [`RetryPolicy::first_contact`](crate::RetryPolicy::first_contact) (default 30 s) of the source's start; the driver's error, the cause, names each host |
//! | [`Error::Driver`] that [`is_resumable`](Error::is_resumable) | yielded only once the retry budget is exhausted; the stream (for direct reads: that range) then ends |
//! | [`Error::Driver`] otherwise (auth, bad options, …) | ends (for direct reads: that range or namespace) |
//! | [`Error::Malformed`] | continues with the next entry |
//! | [`Error::TransactionTooLarge`] | ends (the transaction cannot be delivered whole) |
//! | [`Error::Config`], [`Error::InvalidNamespace`] | ends (returned before anything is read) |
//! | [`Error::Decode`], [`Error::Fetch`], [`Error::Pipeline`] (adapters) | the adapter's stream continues |
//! | [`Error::Stopped`] | never yielded by streams; returned by handle calls after `stop()` |
//!
//! # Display and sources
//!
//! An error that wraps another ([`Error::Driver`], [`Error::Decode`], [`Error::Fetch`])
//! says what failed and leaves the cause to [`source`](std::error::Error::source), so a
//! chain printer (anyhow's `{:#}`, `tracing`'s error chains) prints each cause once:
//!
//! ```
//! use std::error::Error as _;
//!
//! let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
//! let e = mongotail::Error::from(mongodb::error::Error::from(io));
//! assert_eq!(e.to_string(), "MongoDB driver error");
//! assert!(e.source().is_some_and(|cause| cause.to_string().contains("reset by peer")));
//! ```

use bson::Bson;

use crate::op::{Namespace, Position};

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while tailing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the MongoDB driver (network, server command error, …); the driver's
    /// error is the [`source`](std::error::Error::source).
    #[error("MongoDB driver error")]
    Driver(#[source] mongodb::error::Error),

    /// The position to resume from is no longer available on the server: oplog entry
    /// rolled off (136 `CappedPositionLost`, or older than the oldest entry), change
    /// stream history lost (286), resume token not found (280) or invalid (260).
    #[error("position {position:?} lost (code {code}): {message}")]
    PositionLost {
        /// The last position delivered (or the requested start).
        position: Position,
        /// Server error code (0 when detected client-side).
        code: i32,
        /// Server or client message.
        message: String,
    },

    /// A source could not reach the server within
    /// [`RetryPolicy::first_contact`](crate::RetryPolicy::first_contact) of its start
    /// (unreachable, wrong replica-set name, refused connections), or the server refused
    /// its first read for good (13 `Unauthorized`: the user lacks a privilege the source
    /// needs; `after` is then the time until the refusal). The driver's error, which names
    /// each host and why it was not usable, or the server's refusal, is the
    /// [`source`](std::error::Error::source).
    #[error("first contact with MongoDB failed after {after:?}{hint}")]
    FirstContact {
        /// The time allowed.
        after: std::time::Duration,
        /// What the cause suggests (`", …"`), or empty.
        hint: String,
        /// The last error.
        #[source]
        source: Box<Error>,
    },

    /// Change streams (and the oplog) need a replica set or a sharded cluster (40573).
    #[error("the deployment is not a replica set: {0}")]
    NotReplicaSet(String),

    /// A namespace that MongoDB would reject.
    #[error("invalid namespace {0}")]
    InvalidNamespace(String),

    /// A document did not decode into the requested type (the serde error is the
    /// [`source`](std::error::Error::source)).
    #[error("cannot decode document {id:?} in {namespace}")]
    Decode {
        /// Where the document lives.
        namespace: Namespace,
        /// Its `_id`, when known.
        id: Option<Bson>,
        /// Why it did not decode.
        #[source]
        source: bson::de::Error,
    },

    /// Fetching full documents failed (the driver error is the
    /// [`source`](std::error::Error::source)).
    #[error("fetching documents of {namespace} failed")]
    Fetch {
        /// The namespace being fetched.
        namespace: Namespace,
        /// The driver error.
        #[source]
        source: mongodb::error::Error,
    },

    /// An oplog entry or change event that does not have the documented shape.
    #[error("malformed {what}: {message}")]
    Malformed {
        /// What was being decoded (e.g. `oplog entry Timestamp(…)`).
        what: String,
        /// What is wrong with it.
        message: String,
    },

    /// A transaction spans more buffered oplog entries than allowed
    /// (`OplogOptions::max_pending_txn_ops`).
    #[error("transaction buffer exceeded: more than {limit} pending operations")]
    TransactionTooLarge {
        /// The configured limit.
        limit: usize,
    },

    /// Invalid options.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An aggregation pipeline run by [`pipeline`](crate::OpStreamExt::pipeline) is invalid
    /// or failed on an op: the code and codeName a server gives for the same pipeline (40324
    /// unknown stage, 20 a stage change streams do not permit, 280 the event `_id` modified,
    /// …).
    #[error("pipeline error {code_name} ({code}): {message}")]
    Pipeline {
        /// The server's error code for the same failure.
        code: i32,
        /// Its symbolic name.
        code_name: String,
        /// The server's message.
        message: String,
    },

    /// A checkpoint that cannot be loaded, saved or read: the store failed, or what it holds
    /// is not a checkpoint of this format ([`checkpoint`](crate::checkpoint)). Never a silent
    /// restart from scratch.
    #[error("checkpoint {name:?}: {message}")]
    Checkpoint {
        /// The checkpoint's name (or the store's location).
        name: String,
        /// What went wrong.
        message: String,
    },

    /// The stream was stopped through its handle.
    #[error("stopped")]
    Stopped,
}

/// The category of an [`Error`], for matching without destructuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::Driver`].
    Driver,
    /// [`Error::PositionLost`].
    PositionLost,
    /// [`Error::NotReplicaSet`].
    NotReplicaSet,
    /// [`Error::FirstContact`].
    FirstContact,
    /// [`Error::InvalidNamespace`].
    InvalidNamespace,
    /// [`Error::Decode`].
    Decode,
    /// [`Error::Fetch`].
    Fetch,
    /// [`Error::Malformed`].
    Malformed,
    /// [`Error::TransactionTooLarge`].
    TransactionTooLarge,
    /// [`Error::Config`].
    Config,
    /// [`Error::Pipeline`].
    Pipeline,
    /// [`Error::Checkpoint`].
    Checkpoint,
    /// [`Error::Stopped`].
    Stopped,
}

/// Error codes the change-stream spec treats as resumable on servers without
/// `ResumableChangeStreamError` labels (reference §5.10), plus cursor/interrupt codes that
/// a tailable oplog cursor recovers from by re-querying (reference §3.4).
const RESUMABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    43,    // CursorNotFound
    63,    // StaleShardVersion
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    133,   // FailedToSatisfyReadPreference
    150,   // StaleEpoch
    189,   // PrimarySteppedDown
    234,   // RetryChangeStream
    237,   // CursorKilled
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11601, // Interrupted
    11602, // InterruptedDueToReplStateChange
    13388, // StaleConfig
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Codes that mean the position is gone (reference §3.3, §5.10).
const POSITION_LOST_CODES: &[i32] = &[136, 286, 280, 260];

/// The deployment is not a replica set: it has no oplog and no change streams.
const NOT_A_REPLICA_SET: i32 = 40573;

/// The code of a driver error, when the server sent one.
pub(crate) fn driver_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    match e.kind.as_ref() {
        K::Command(c) => Some(c.code),
        K::Write(WriteFailure::WriteConcernError(wc)) => Some(wc.code),
        _ => None,
    }
}

/// Whether a driver error is transient: network, server selection, pool cleared, or one of
/// the resumable codes / the `ResumableChangeStreamError` label.
pub(crate) fn driver_is_resumable(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind as K;
    if e.contains_label(mongodb::error::RESUMABLE_CHANGE_STREAM_ERROR) {
        return true;
    }
    if e.contains_label("NonResumableChangeStreamError") {
        return false;
    }
    match e.kind.as_ref() {
        K::Io(_) | K::ConnectionPoolCleared { .. } | K::ServerSelection { .. } => true,
        _ => driver_code(e).is_some_and(|c| RESUMABLE_CODES.contains(&c)),
    }
}

impl Error {
    /// Whether retrying from the last position may succeed: network errors, not-primary,
    /// cursor killed / not found, interrupted, and everything the change-stream spec calls
    /// resumable (the `ResumableChangeStreamError` label or, for old servers, its code list).
    /// Sources retry these themselves; seeing one means the retry budget ran out.
    pub fn is_resumable(&self) -> bool {
        match self {
            Error::Driver(e) | Error::Fetch { source: e, .. } => driver_is_resumable(e),
            _ => false,
        }
    }

    /// The server error code, when there is one.
    pub fn code(&self) -> Option<i32> {
        match self {
            Error::Driver(e) | Error::Fetch { source: e, .. } => driver_code(e),
            Error::PositionLost { code, .. } | Error::Pipeline { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The typed error a live source's driver error stands for: [`Error::PositionLost`]
    /// at `position` for a code that means the position is gone (136, 286, 280, 260),
    /// [`Error::NotReplicaSet`] for 40573; anything else unchanged.
    pub(crate) fn for_position(self, position: impl FnOnce() -> Position) -> Error {
        let Error::Driver(driver) = &self else {
            return self;
        };
        match driver_code(driver) {
            Some(NOT_A_REPLICA_SET) => Error::NotReplicaSet(driver.to_string()),
            Some(code) if POSITION_LOST_CODES.contains(&code) => Error::PositionLost {
                position: position(),
                code,
                message: driver.to_string(),
            },
            _ => self,
        }
    }

    /// `e`, the last error of a source that never reached the server, as
    /// [`Error::FirstContact`] after `after`.
    pub(crate) fn first_contact(after: std::time::Duration, e: Error) -> Error {
        let cause = DisplayChain(&e).to_string();
        let hint = if cause.contains("Set Name:") && !cause.contains("Servers:") {
            ": no host answered as a member of the replica set named in the URI (is `replicaSet` right?)"
        } else if cause.contains("Connection refused") || cause.contains("connection refused") {
            ": connection refused (is the server running, the host and port right?)"
        } else if cause.contains("Authentication") || cause.contains("auth") {
            ": authentication failed (user, password, authSource?)"
        } else {
            ""
        };
        Error::FirstContact {
            after,
            hint: hint.to_owned(),
            source: Box::new(e),
        }
    }

    /// A source's first read refused for good: [`Error::FirstContact`] with what the
    /// refusal means, when it is a missing privilege (13 `Unauthorized`); `e` unchanged
    /// otherwise.
    pub(crate) fn refused_at_first_contact(after: std::time::Duration, e: Error) -> Error {
        if e.code() != Some(UNAUTHORIZED) {
            return e;
        }
        Error::FirstContact {
            after,
            hint: ": not authorized: the user lacks a privilege this source needs (the \
                   oplog: `find` on `local.oplog.rs`; change streams: `changeStream` and \
                   `find` on what they watch; direct reads: `find` on the collections)"
                .to_owned(),
            source: Box::new(e),
        }
    }

    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Driver(_) => ErrorKind::Driver,
            Error::PositionLost { .. } => ErrorKind::PositionLost,
            Error::NotReplicaSet(_) => ErrorKind::NotReplicaSet,
            Error::FirstContact { .. } => ErrorKind::FirstContact,
            Error::InvalidNamespace(_) => ErrorKind::InvalidNamespace,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::Fetch { .. } => ErrorKind::Fetch,
            Error::Malformed { .. } => ErrorKind::Malformed,
            Error::TransactionTooLarge { .. } => ErrorKind::TransactionTooLarge,
            Error::Config(_) => ErrorKind::Config,
            Error::Pipeline { .. } => ErrorKind::Pipeline,
            Error::Checkpoint { .. } => ErrorKind::Checkpoint,
            Error::Stopped => ErrorKind::Stopped,
        }
    }
}

/// 13 `Unauthorized`: the user lacks a privilege (server `error_codes.yml`).
const UNAUTHORIZED: i32 = 13;

/// Displays an error followed by each of its sources, `: `-separated (for logs).
pub(crate) struct DisplayChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

impl From<mongodb::error::Error> for Error {
    fn from(e: mongodb::error::Error) -> Self {
        Error::Driver(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> mongodb::error::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into()
    }

    #[test]
    fn classification() {
        let e = Error::from(io_error());
        assert!(e.is_resumable());
        assert_eq!(e.kind(), ErrorKind::Driver);
        assert_eq!(e.code(), None);
        let lost = Error::PositionLost {
            position: Position::Direct,
            code: 136,
            message: "gone".into(),
        };
        assert!(!lost.is_resumable());
        assert_eq!(lost.code(), Some(136));
        assert_eq!(lost.kind(), ErrorKind::PositionLost);
        assert!(!Error::Stopped.is_resumable());
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn display_leaves_the_cause_to_source() {
        let driver = Error::from(io_error());
        let fetch = Error::Fetch {
            namespace: Namespace::parse("a.b").unwrap(),
            source: io_error(),
        };
        let decode = Error::Decode {
            namespace: Namespace::parse("a.b").unwrap(),
            id: None,
            source: <bson::de::Error as serde::de::Error>::custom("bad total"),
        };
        for (e, cause) in [
            (&driver, "reset"),
            (&fetch, "reset"),
            (&decode, "bad total"),
        ] {
            let source = std::error::Error::source(e).expect("a source");
            assert!(source.to_string().contains(cause), "{source}");
            assert!(!e.to_string().contains(cause), "{e} repeats its cause");
            let chain = DisplayChain(e).to_string();
            assert_eq!(chain.matches(cause).count(), 1, "{chain}");
        }
        assert_eq!(fetch.to_string(), "fetching documents of a.b failed");
    }
}
