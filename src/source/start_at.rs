//! Where the live sources start ([`StartAt`], one rule for the oplog and change streams)
//! and the timestamps a start point is made of: the oldest and newest oplog entries
//! (gtm's `FirstOpTimestamp`, `LastOpTimestamp`) and the deployment's cluster time.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bson::{doc, Document, Timestamp};
use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::{Client, Collection};

use crate::error::{Error, Result};

/// A caller-supplied async function returning the timestamp to start after (gtm's `After`).
pub type StartFn = Arc<dyn Fn(Client) -> BoxFuture<'static, Result<Timestamp>> + Send + Sync>;

/// Where a live source (the oplog, a change stream) starts.
///
/// Set it once for every live source with [`TailOptions::start`](crate::TailOptions::start),
/// or per source with [`OplogOptions::start`](crate::OplogOptions::start) and
/// [`ChangeStreamOptions::start`](crate::ChangeStreamOptions::start) (a change stream's
/// resume token, when it has one, wins over both).
///
/// One rule for both sources: a start point is **exclusive**. `After(ts)` delivers the
/// changes logged after `ts`, never the one at `ts` (the oplog reads `ts > T`; a change
/// stream opens with `startAtOperationTime` at the timestamp just after `T`, since the
/// server's option is inclusive). So a saved [`Position::Oplog`](crate::Position::Oplog)
/// resumes just after the op it was saved with, whichever live source reads it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
/// # let uri = sim.uri();
/// use bson::doc;
/// use futures::TryStreamExt;
/// use mongotail::{last_op_timestamp, start, ChangeStreamOptions, Namespace, StartAt, TailOptions};
///
/// let client = mongodb::Client::with_uri_str(&uri).await?;
/// let orders = client.database("shop").collection::<bson::Document>("orders");
/// orders.insert_one(doc! {"_id": 1}).await?;
/// let after_first = last_op_timestamp(&client).await?.expect("a replica set has an oplog");
/// orders.insert_one(doc! {"_id": 2}).await?;
///
/// // The oplog and a change stream, both from just after the first insert.
/// let ns = Namespace::parse("shop.orders")?;
/// let options = TailOptions::new()
///     .start(StartAt::After(after_first))
///     .oplog(mongotail::OplogOptions::new().namespace(ns.clone()))
///     .change_stream(ChangeStreamOptions::new().namespace(ns));
/// let (mut ops, handle) = start(&client, options);
/// let (a, b) = (ops.try_next().await?.unwrap(), ops.try_next().await?.unwrap());
/// assert_eq!((a.id, b.id), (Some(2.into()), Some(2.into()))); // once from each source
/// handle.stop();
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum StartAt {
    /// From now: the oplog starts after its newest entry when the stream is first polled, a
    /// change stream at the server's current time when it opens (default).
    #[default]
    Latest,
    /// At the oldest entry still in the oplog (inclusive: nothing before it exists). A
    /// change stream opens at that entry's time, read from `local.oplog.rs` (replica sets).
    Earliest,
    /// After the given timestamp, e.g. a saved [`Position::Oplog`](crate::Position::Oplog)
    /// (exclusive, see above). If the server no longer reaches back to it the stream yields
    /// [`Error::PositionLost`].
    After(Timestamp),
    /// After the timestamp returned by a function called when the stream starts
    /// (exclusive, like `After`). Build it with [`StartAt::func`].
    Func(StartFn),
}

impl StartAt {
    /// [`StartAt::Func`] from an async function of the client (gtm's `After`).
    ///
    /// ```
    /// use bson::Timestamp;
    /// use mongotail::{OplogOptions, StartAt};
    ///
    /// // e.g. read a checkpoint saved by an earlier run
    /// let start = StartAt::func(|_client| async { Ok(Timestamp { time: 1_700_000_000, increment: 0 }) });
    /// let options = OplogOptions::new().start(start);
    /// ```
    pub fn func<F, Fut>(f: F) -> StartAt
    where
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Timestamp>> + Send + 'static,
    {
        StartAt::Func(Arc::new(move |client| f(client).boxed()))
    }
}

impl fmt::Debug for StartAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartAt::Latest => f.write_str("Latest"),
            StartAt::Earliest => f.write_str("Earliest"),
            StartAt::After(ts) => f.debug_tuple("After").field(ts).finish(),
            StartAt::Func(_) => f.write_str("Func(..)"),
        }
    }
}

/// The timestamp right after `ts` in the server's order, for the inclusive
/// `startAtOperationTime`.
pub(crate) fn just_after(ts: Timestamp) -> Timestamp {
    match ts.increment.checked_add(1) {
        Some(increment) => Timestamp {
            time: ts.time,
            increment,
        },
        None => Timestamp {
            time: ts.time.saturating_add(1),
            increment: 0,
        },
    }
}

/// The timestamp right before `ts` (`ts` itself for the zero timestamp, before which
/// nothing is logged).
pub(crate) fn just_before(ts: Timestamp) -> Timestamp {
    match (ts.increment.checked_sub(1), ts.time.checked_sub(1)) {
        (Some(increment), _) => Timestamp {
            time: ts.time,
            increment,
        },
        (None, Some(time)) => Timestamp {
            time,
            increment: u32::MAX,
        },
        (None, None) => ts,
    }
}

/// The `ts` of the oldest (`natural = 1`) or newest (`-1`) entry of an oplog collection.
pub(crate) async fn oplog_edge(
    oplog: &Collection<Document>,
    natural: i32,
) -> Result<Option<Timestamp>> {
    let entry = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": natural})
        .projection(doc! {"ts": 1})
        .await?;
    Ok(entry.and_then(|e| e.get_timestamp("ts").ok()))
}

fn local_oplog(client: &Client) -> Collection<Document> {
    client.database("local").collection("oplog.rs")
}

/// The `ts` of the oldest entry of `local.oplog.rs` (gtm's `FirstOpTimestamp`): how far
/// back the oplog reaches. `None` when there is no oplog (not a replica set).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mongotail::Result<()> {
/// # let sim = mongosim::MongoSim::start(mongosim::Options::new()).unwrap();
/// # let client = mongodb::Client::with_uri_str(sim.uri()).await?;
/// let first = mongotail::first_op_timestamp(&client).await?.expect("an oplog");
/// let last = mongotail::last_op_timestamp(&client).await?.expect("an oplog");
/// assert!(first <= last);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Driver`] when the query fails (e.g. no `read` privilege on `local`).
pub async fn first_op_timestamp(client: &Client) -> Result<Option<Timestamp>> {
    oplog_edge(&local_oplog(client), 1).await
}

/// The `ts` of the newest entry of `local.oplog.rs` (gtm's `LastOpTimestamp`): start after
/// it ([`StartAt::After`]) to see every change logged from now on, even those made before
/// the stream is first polled. `None` when there is no oplog (not a replica set).
///
/// # Errors
/// [`Error::Driver`] when the query fails.
pub async fn last_op_timestamp(client: &Client) -> Result<Option<Timestamp>> {
    oplog_edge(&local_oplog(client), -1).await
}

/// The deployment's current cluster time (`$clusterTime` of a `ping` reply, else its
/// `operationTime`): every change logged later has a greater timestamp, so
/// `StartAt::After(cluster_time)` means "from now" for the oplog and change streams alike,
/// and it works through `mongos`, which has no oplog to read.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mongotail::Result<()> {
/// # let sim = mongosim::MongoSim::start(mongosim::Options::new()).unwrap();
/// # let client = mongodb::Client::with_uri_str(sim.uri()).await?;
/// let now = mongotail::cluster_time(&client).await?;
/// assert!(Some(now) >= mongotail::last_op_timestamp(&client).await?);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::NotReplicaSet`] when the server reports no cluster time (a standalone),
/// [`Error::Driver`] when the command fails.
pub async fn cluster_time(client: &Client) -> Result<Timestamp> {
    let reply = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await?;
    let cluster = reply
        .get_document("$clusterTime")
        .and_then(|c| c.get_timestamp("clusterTime"));
    cluster
        .or_else(|_| reply.get_timestamp("operationTime"))
        .map_err(|_| Error::NotReplicaSet("the server reports no cluster time".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u32, increment: u32) -> Timestamp {
        Timestamp { time, increment }
    }

    #[test]
    fn neighbours_in_the_server_order() {
        assert_eq!(just_after(ts(5, 1)), ts(5, 2));
        assert_eq!(just_after(ts(5, u32::MAX)), ts(6, 0));
        assert_eq!(just_before(ts(5, 2)), ts(5, 1));
        assert_eq!(just_before(ts(6, 0)), ts(5, u32::MAX));
        assert_eq!(just_before(ts(0, 0)), ts(0, 0));
        for t in [ts(5, 1), ts(6, 0), ts(7, u32::MAX)] {
            assert_eq!(just_before(just_after(t)), t);
        }
    }
}
