//! What a running source reports: [`SourceStats`] through
//! [`Handle::stats`](crate::Handle::stats), from counters its engine keeps with atomics
//! (a handle never waits for a poll).

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use bson::{Bson, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use parking_lot::Mutex;

use crate::error::{DisplayChain, Error};
use crate::op::Op;

/// What a source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceState {
    /// Resolving its start point or opening its first cursor.
    Starting,
    /// Reading (for direct reads: copying collections).
    Live,
    /// Waiting to retry after a transient error.
    Retrying,
    /// Paused by the handle.
    Paused,
    /// Ended (stopped, finished, or after an error that ends it).
    Stopped,
}

/// One live source's figures, as [`Handle::stats`](crate::Handle::stats) reports them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SourceStats {
    /// Which source: `oplog`, or `change stream <scope>` (`db.coll`, `db`, or
    /// `deployment`).
    pub source: String,
    /// What it is doing.
    pub state: SourceState,
    /// Cluster time of the last op delivered.
    pub last_op_time: Option<Timestamp>,
    /// Wall time of the last op delivered, when the server recorded it.
    pub last_op_wall_time: Option<bson::DateTime>,
    /// How far behind the server the source is: the server's cluster time (taken by
    /// `stats`) minus the newest time the source has read, ops or no-ops (so an idle,
    /// caught-up source reports at most the server's no-op interval). `None` when either
    /// is unknown.
    pub lag: Option<Duration>,
    /// Ops delivered since the start.
    pub ops: u64,
    /// Retries after transient errors since the start.
    pub retries: u64,
    /// The last error seen (retried or not), with its causes.
    pub last_error: Option<String>,
}

/// The direct read of one collection, as [`Handle::stats`](crate::Handle::stats) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectStats {
    /// The collection, `db.coll`.
    pub namespace: String,
    /// Documents read so far.
    pub read: u64,
    /// The collection's document count when its read was planned (`collStats`), an
    /// estimate; `None` before that.
    pub estimated_total: Option<u64>,
    /// Every range was read to its end.
    pub done: bool,
}

/// Everything [`Handle::stats`](crate::Handle::stats) reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The oplog and each change stream, in the order they were configured.
    pub sources: Vec<SourceStats>,
    /// Each collection read directly, in the order they were configured.
    pub direct: Vec<DirectStats>,
    /// Ops delivered and not yet acknowledged (with a checkpoint; else 0).
    pub outstanding: usize,
}

impl Stats {
    pub(crate) fn new(
        sources: Vec<SourceStats>,
        direct: Vec<DirectStats>,
        outstanding: usize,
    ) -> Stats {
        Stats {
            sources,
            direct,
            outstanding,
        }
    }
}

/// The `metrics` instruments of one source (feature `metrics`).
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Instruments {
    ops: metrics::Counter,
    retries: metrics::Counter,
    last_op: metrics::Gauge,
    last_wall: metrics::Gauge,
}

/// A source's counters, updated by its engine and read by handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    #[cfg(feature = "metrics")]
    instruments: std::sync::OnceLock<Instruments>,
    state: AtomicU8,
    ops: AtomicU64,
    retries: AtomicU64,
    /// `time << 32 | increment` of the last op (0: none).
    last_ts: AtomicU64,
    /// Milliseconds since the epoch of the last op's wall time (`i64::MIN`: none).
    last_wall: AtomicI64,
    last_error: Mutex<Option<String>>,
}

fn pack(ts: Timestamp) -> u64 {
    (u64::from(ts.time) << 32) | u64::from(ts.increment)
}

fn unpack(v: u64) -> Option<Timestamp> {
    (v != 0).then_some(Timestamp {
        time: (v >> 32) as u32,
        increment: v as u32,
    })
}

const STATES: [SourceState; 5] = [
    SourceState::Starting,
    SourceState::Live,
    SourceState::Retrying,
    SourceState::Paused,
    SourceState::Stopped,
];

impl Counters {
    pub(crate) fn new() -> Counters {
        let c = Counters::default();
        c.last_wall.store(i64::MIN, Ordering::Relaxed);
        c
    }

    /// Registers the source's `metrics` instruments, labelled `source` and `ns`: the
    /// counters `mongotail_ops_total` and `mongotail_retries_total`, the gauges
    /// `mongotail_last_op_timestamp_seconds` (cluster time) and
    /// `mongotail_last_op_wall_time_seconds`.
    #[cfg(feature = "metrics")]
    pub(crate) fn instrument(&self, source: &'static str, ns: String) {
        let labels = [("source", source.to_owned()), ("ns", ns)];
        let _ = self.instruments.set(Instruments {
            ops: metrics::counter!("mongotail_ops_total", &labels),
            retries: metrics::counter!("mongotail_retries_total", &labels),
            last_op: metrics::gauge!("mongotail_last_op_timestamp_seconds", &labels),
            last_wall: metrics::gauge!("mongotail_last_op_wall_time_seconds", &labels),
        });
    }

    pub(crate) fn set(&self, state: SourceState) {
        let i = STATES.iter().position(|s| *s == state).unwrap_or(0);
        self.state.store(i as u8, Ordering::Release);
    }

    /// An op was delivered.
    pub(crate) fn op(&self, op: &Op) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if op.timestamp.time != 0 {
            self.last_ts.store(pack(op.timestamp), Ordering::Relaxed);
        }
        if let Some(wall) = op.wall_time {
            self.last_wall
                .store(wall.timestamp_millis(), Ordering::Relaxed);
        }
        #[cfg(feature = "metrics")]
        if let Some(m) = self.instruments.get() {
            m.ops.increment(1);
            if op.timestamp.time != 0 {
                m.last_op.set(f64::from(op.timestamp.time));
            }
            if let Some(wall) = op.wall_time {
                m.last_wall.set(wall.timestamp_millis() as f64 / 1000.0);
            }
        }
    }

    /// A transient error is being retried.
    pub(crate) fn retry(&self, e: &Error) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(m) = self.instruments.get() {
            m.retries.increment(1);
        }
        self.error(e);
        self.set(SourceState::Retrying);
    }

    pub(crate) fn error(&self, e: &Error) {
        *self.last_error.lock() = Some(DisplayChain(e).to_string());
    }

    /// The figures now; `paused` overrides the state, `newest` (the newest time the
    /// source read) and `server` (the server's cluster time) give the lag.
    pub(crate) fn snapshot(
        &self,
        source: String,
        paused: bool,
        newest: Option<Timestamp>,
        server: Option<Timestamp>,
    ) -> SourceStats {
        let state = STATES[usize::from(self.state.load(Ordering::Acquire)).min(4)];
        let last_op_time = unpack(self.last_ts.load(Ordering::Relaxed));
        let wall = self.last_wall.load(Ordering::Relaxed);
        let newest = newest.max(last_op_time);
        let lag = match (server, newest) {
            (Some(server), Some(newest)) => Some(Duration::from_secs(u64::from(
                server.time.saturating_sub(newest.time),
            ))),
            _ => None,
        };
        SourceStats {
            source,
            state: if paused && state == SourceState::Live {
                SourceState::Paused
            } else {
                state
            },
            last_op_time,
            last_op_wall_time: (wall != i64::MIN).then(|| bson::DateTime::from_millis(wall)),
            lag,
            ops: self.ops.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// The cluster time a resume token stands at: its `_data` is a KeyString whose first value
/// is the event's cluster time (type byte `0x82`, then the timestamp, big-endian), as
/// MongoDB's `ResumeTokenData` writes it (server `src/mongo/db/pipeline/resume_token.cpp`,
/// `ResumeToken::ResumeToken(const ResumeTokenData&)` appends `clusterTime` first).
pub(crate) fn token_time(token: &ResumeToken) -> Option<Timestamp> {
    let Ok(Bson::Document(doc)) = bson::to_bson(token) else {
        return None;
    };
    data_time(doc.get_str("_data").ok()?)
}

/// The cluster time in a resume token's `_data`: its first KeyString value, a timestamp
/// (`82` and 8 bytes, reference §5.8).
pub(crate) fn data_time(data: &str) -> Option<Timestamp> {
    let hex = data.get(0..18)?;
    if !hex.starts_with("82") {
        return None;
    }
    let v = u64::from_str_radix(&hex[2..18], 16).ok()?;
    unpack(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn a_token_tells_its_cluster_time() {
        let token: ResumeToken = bson::from_bson(Bson::Document(
            doc! {"_data": "8263AB12340000000A2B0229296E04"},
        ))
        .unwrap();
        assert_eq!(
            token_time(&token),
            Some(Timestamp {
                time: 0x63AB_1234,
                increment: 10
            })
        );
        let odd: ResumeToken = bson::from_bson(Bson::Document(doc! {"_data": "zz"})).unwrap();
        assert_eq!(token_time(&odd), None);
    }

    #[test]
    fn counters_report_state_ops_and_lag() {
        let c = Counters::new();
        assert_eq!(
            c.snapshot("oplog".into(), false, None, None).state,
            SourceState::Starting
        );
        c.set(SourceState::Live);
        let ts = Timestamp {
            time: 100,
            increment: 1,
        };
        let ns = crate::Namespace::parse("a.b").unwrap();
        c.op(&Op::new(crate::OpKind::Insert, ns, None).with_timestamp(ts));
        let server = Timestamp {
            time: 130,
            increment: 0,
        };
        let s = c.snapshot("oplog".into(), true, None, Some(server));
        assert_eq!(
            (s.state, s.ops, s.last_op_time),
            (SourceState::Paused, 1, Some(ts))
        );
        assert_eq!(s.lag, Some(Duration::from_secs(30)));
        let newer = Timestamp {
            time: 125,
            increment: 0,
        };
        let s = c.snapshot("oplog".into(), false, Some(newer), Some(server));
        assert_eq!(s.lag, Some(Duration::from_secs(5)), "no-ops read count");
    }
}

/// The direct-read figures of every collection, in the order they were configured.
#[derive(Debug, Default)]
pub(crate) struct DirectCounters {
    entries: Mutex<Vec<std::sync::Arc<DirectEntry>>>,
}

/// One collection's direct-read figures.
#[derive(Debug)]
pub(crate) struct DirectEntry {
    namespace: String,
    read: AtomicU64,
    /// `u64::MAX`: not known yet.
    total: AtomicU64,
    done: std::sync::atomic::AtomicBool,
    /// `mongotail_direct_documents_read_total` and `mongotail_direct_documents_estimated`,
    /// labelled `ns`.
    #[cfg(feature = "metrics")]
    metrics: (metrics::Counter, metrics::Gauge),
}

impl DirectEntry {
    pub(crate) fn read(&self) {
        self.read.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.0.increment(1);
    }

    pub(crate) fn total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.1.set(n as f64);
    }

    pub(crate) fn done(&self) {
        self.done.store(true, Ordering::Release);
    }
}

impl DirectCounters {
    /// The entry of `namespace`, added when missing.
    pub(crate) fn entry(&self, namespace: &str) -> std::sync::Arc<DirectEntry> {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.iter().find(|e| e.namespace == namespace) {
            return e.clone();
        }
        let e = std::sync::Arc::new(DirectEntry {
            namespace: namespace.to_owned(),
            read: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
            done: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "metrics")]
            metrics: {
                let labels = [("ns", namespace.to_owned())];
                (
                    metrics::counter!("mongotail_direct_documents_read_total", &labels),
                    metrics::gauge!("mongotail_direct_documents_estimated", &labels),
                )
            },
        });
        entries.push(e.clone());
        e
    }

    pub(crate) fn snapshot(&self) -> Vec<DirectStats> {
        let entries = self.entries.lock();
        entries
            .iter()
            .map(|e| DirectStats {
                namespace: e.namespace.clone(),
                read: e.read.load(Ordering::Relaxed),
                estimated_total: Some(e.total.load(Ordering::Relaxed)).filter(|n| *n != u64::MAX),
                done: e.done.load(Ordering::Acquire),
            })
            .collect()
    }
}
