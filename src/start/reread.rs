//! [`PositionLostPolicy::Reread`](crate::checkpoint::PositionLostPolicy::Reread): when a live source's stored position is gone from the
//! server, re-read the collections it covers directly and continue live from a fresh
//! start point taken before the read (snapshot, then live, with no gap).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bson::{doc, Timestamp};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use futures::FutureExt;
use mongodb::Client;

use crate::checkpoint::track::{LaneKey, Mark, Tracker};
use crate::checkpoint::OplogProgress;
use crate::error::{Error, Result};
use crate::op::{Namespace, Op};
use crate::source::direct::{DirectOptions, DirectReads};
use crate::source::start_at::cluster_time;

/// How to restart one live source after its position was lost: a fresh stream after a
/// cluster time, on the same lane.
pub(super) struct Restart {
    pub(super) client: Client,
    pub(super) tracker: Arc<Tracker>,
    pub(super) lane: usize,
    pub(super) key: LaneKey,
    /// What the source covers: collections, databases, or everything (empty).
    pub(super) scope: Vec<Namespace>,
    /// The source again, live after `ts` (tracked on the same lane).
    pub(super) live: Box<dyn Fn(Timestamp) -> BoxStream<'static, Result<Op>> + Send + Sync>,
}

enum State {
    Live(BoxStream<'static, Result<Op>>),
    Restarting(BoxFuture<'static, Result<BoxStream<'static, Result<Op>>>>),
}

/// A tracked live source that, on [`Error::PositionLost`], restarts as `Restart` says.
pub(super) struct Rereading {
    state: State,
    restart: Arc<Restart>,
}

impl Rereading {
    pub(super) fn new(source: BoxStream<'static, Result<Op>>, restart: Restart) -> Rereading {
        Rereading {
            state: State::Live(source),
            restart: Arc::new(restart),
        }
    }
}

impl Stream for Rereading {
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Live(source) => match source.poll_next_unpin(cx) {
                    Poll::Ready(Some(Err(e @ Error::PositionLost { .. }))) => {
                        tracing::warn!(lane = ?this.restart.key, error = %e,
                            "position lost: re-reading the collections, then live");
                        this.state = State::Restarting(restart(this.restart.clone()).boxed());
                    }
                    other => return other,
                },
                State::Restarting(fut) => match futures::ready!(fut.poll_unpin(cx)) {
                    Ok(stream) => this.state = State::Live(stream),
                    Err(e) => {
                        this.state = State::Live(stream::empty().boxed());
                        return Poll::Ready(Some(Err(e)));
                    }
                },
            }
        }
    }
}

/// Takes a cluster time, moves the lane there, and returns the live source after it merged
/// with direct reads of every collection in scope.
async fn restart(r: Arc<Restart>) -> Result<BoxStream<'static, Result<Op>>> {
    let ts = cluster_time(&r.client).await?;
    let collections = collections_in(&r.client, &r.scope).await?;
    let mark = match r.key {
        LaneKey::ChangeStream(_) => Mark::Time(ts),
        _ => Mark::Oplog(OplogProgress::new(ts)),
    };
    r.tracker.reset(r.lane, mark);
    for ns in &collections {
        r.tracker.forget_direct(&ns.to_string());
    }
    let direct = DirectOptions::new().namespaces(collections);
    let direct = DirectReads::tracked(&r.client, direct, r.tracker.clone());
    Ok(stream::select((r.live)(ts), direct).boxed())
}

/// The collections of `scope`: each collection named, every collection of each database
/// named, or, when empty, every collection of every database but `admin`, `local` and
/// `config`. Views and `system.*` collections are left out.
async fn collections_in(client: &Client, scope: &[Namespace]) -> Result<Vec<Namespace>> {
    let mut out = Vec::new();
    let databases: Vec<String> = if scope.is_empty() {
        let names = client.list_database_names().await?;
        let user = |db: &String| !matches!(db.as_str(), "admin" | "local" | "config");
        names.into_iter().filter(user).collect()
    } else {
        out.extend(scope.iter().filter(|ns| !ns.is_database()).cloned());
        let dbs = scope.iter().filter(|ns| ns.is_database());
        dbs.map(|ns| ns.db().to_owned()).collect()
    };
    for db in databases {
        let filter = doc! {"type": "collection", "name": {"$not": {"$regex": "^system\\."}}};
        let names: Vec<String> = client
            .database(&db)
            .list_collection_names()
            .filter(filter)
            .await?;
        for name in names {
            out.push(Namespace::new(db.clone(), name)?);
        }
    }
    Ok(out)
}
