//! Following the cluster's shards: the config server's oplog (inserts into and deletes
//! from `config.shards`, unwound from the transaction 7.x `addShard` writes them in, as
//! the oplog source unwinds any transaction), or `listShards` through a router at an
//! interval when the config server cannot be reached (reference sharded-clusters.md §5.4,
//! §7.3: gtm's listener reads top-level inserts only and misses 7.x shards).
//!
//! While the config tail runs, its position bounds the merged stream: an op is released
//! only once the config server's oplog has been read past its `ts`, so a shard added
//! earlier is already tailed. The tail gets a short retry budget: once it fails, the bound
//! goes (existing shards go on) and the shard list is polled instead.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bson::{Bson, Timestamp};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use mongodb::Client;
use tokio::time::Sleep;

use super::discover::{list_shards, ShardDoc};
use super::merge::Watermark;
use crate::error::Result;
use crate::op::{Namespace, OpKind};
use crate::source::oplog::{OplogOptions, OplogStream};
use crate::source::start_at::StartAt;
use crate::source::RetryPolicy;

/// A change of the shard list.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Change {
    /// A shard was added; tail it from `doc.added` (or the time the change was seen).
    Added(ShardDoc),
    /// A shard was removed at this time (`None`: not known).
    Removed { id: String, at: Option<Timestamp> },
}

/// How the shard list is followed.
pub(super) enum Topology {
    /// The shard list is fixed (shards given by the user).
    Fixed,
    /// Tailing `config.shards` on the config server; `router` for the fallback.
    Follow {
        tail: Box<OplogStream>,
        router: Option<Client>,
        interval: Duration,
    },
    /// Polling `listShards` through the router.
    Poll {
        router: Client,
        interval: Duration,
        sleep: Pin<Box<Sleep>>,
        fetch: Option<BoxFuture<'static, Result<Vec<ShardDoc>>>>,
    },
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topology::Fixed => "Fixed",
            Topology::Follow { .. } => "Follow",
            Topology::Poll { .. } => "Poll",
        })
    }
}

impl Topology {
    /// Tails the config server's `config.shards` from `start`.
    pub(super) fn follow(
        config: &Client,
        start: StartAt,
        router: Option<Client>,
        interval: Duration,
        max_await: Duration,
    ) -> Topology {
        let options = OplogOptions::new()
            .namespace(Namespace::parse("config.shards").expect("a valid namespace"))
            .start(start)
            // Every entry moves the bound: a busy config server writes no no-ops.
            .filter_on_server(false)
            .max_await_time(max_await)
            .retry(RetryPolicy::new(
                Duration::from_millis(100),
                Duration::from_millis(500),
                3,
            ));
        Topology::Follow {
            tail: Box::new(OplogStream::new(config, options)),
            router,
            interval,
        }
    }

    /// Polls `listShards` through `router` every `interval`, the first time after `first`.
    pub(super) fn poll(router: Client, interval: Duration, first: Duration) -> Topology {
        Topology::Poll {
            router,
            interval,
            sleep: Box::pin(tokio::time::sleep(first)),
            fetch: None,
        }
    }

    /// How far the shard list is known: the config tail's position while it runs.
    pub(super) fn bound(&self) -> Watermark {
        match self {
            Topology::Follow { tail, .. } => Watermark::At(tail.position()),
            _ => Watermark::Ended,
        }
    }

    /// Reads changes until nothing more is ready; `known` are the shards being tailed.
    pub(super) fn poll_changes(
        &mut self,
        cx: &mut Context<'_>,
        known: &BTreeSet<String>,
        out: &mut Vec<Change>,
    ) {
        loop {
            let next = match self {
                Topology::Fixed => return,
                Topology::Follow { tail, .. } => match tail.poll_next_unpin(cx) {
                    Poll::Pending => return,
                    Poll::Ready(Some(Ok(op))) => {
                        out.extend(change_of(&op));
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::warn!(error = %e, "config server tail failed: polling listShards");
                        None
                    }
                    Poll::Ready(None) => None,
                },
                Topology::Poll { .. } => match self.poll_list(cx) {
                    Poll::Ready(shards) => Some(shards),
                    Poll::Pending => return,
                },
            };
            match next {
                Some(shards) => out.extend(diff(known, shards)),
                None => self.fall_back(),
            }
        }
    }

    /// Config tail gone: poll through the router, or keep the shards as they are.
    fn fall_back(&mut self) {
        let next = match std::mem::replace(self, Topology::Fixed) {
            Topology::Follow {
                router: Some(router),
                interval,
                ..
            } => Topology::poll(router, interval, Duration::ZERO),
            _ => Topology::Fixed,
        };
        *self = next;
    }

    /// The next `listShards` answer (failures are logged and retried at the next tick).
    fn poll_list(&mut self, cx: &mut Context<'_>) -> Poll<Vec<ShardDoc>> {
        let Topology::Poll {
            router,
            interval,
            sleep,
            fetch,
        } = self
        else {
            return Poll::Pending;
        };
        loop {
            if let Some(f) = fetch.as_mut() {
                let listed = ready!(f.as_mut().poll(cx));
                *fetch = None;
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + *interval);
                match listed {
                    Ok(shards) => return Poll::Ready(shards),
                    Err(e) => tracing::warn!(error = %e, "listShards failed"),
                }
            }
            ready!(sleep.as_mut().poll(cx));
            let router = router.clone();
            *fetch = Some(async move { list_shards(&router).await }.boxed());
        }
    }
}

/// What a `config.shards` op means.
fn change_of(op: &crate::op::Op) -> Option<Change> {
    if op.namespace.coll() != "shards" || op.namespace.db() != "config" {
        return None;
    }
    match op.kind {
        OpKind::Insert => {
            let mut doc = ShardDoc::from_doc(op.data.as_ref()?)?;
            doc.added = Some(doc.added.map_or(op.timestamp, |t| t.min(op.timestamp)));
            Some(Change::Added(doc))
        }
        OpKind::Delete => match &op.id {
            Some(Bson::String(id)) => Some(Change::Removed {
                id: id.clone(),
                at: Some(op.timestamp),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// The changes between the shards tailed and a `listShards` answer.
fn diff(known: &BTreeSet<String>, listed: Vec<ShardDoc>) -> Vec<Change> {
    let ids: BTreeSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    let removed = known
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .map(|id| Change::Removed {
            id: id.clone(),
            at: None,
        });
    let removed: Vec<Change> = removed.collect();
    listed
        .into_iter()
        .filter(|s| !known.contains(&s.id))
        .map(Change::Added)
        .chain(removed)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Op;
    use bson::doc;

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 9,
            increment: i,
        }
    }

    #[test]
    fn config_shards_inserts_and_deletes_are_changes() {
        let ns = Namespace::parse("config.shards").unwrap();
        let mut insert = Op::new(OpKind::Insert, ns.clone(), Some("shard03".into()));
        insert.timestamp = ts(5);
        insert.data = Some(doc! {"_id": "shard03", "host": "shard03/h:1", "topologyTime": ts(4)});
        let Some(Change::Added(doc)) = change_of(&insert) else {
            panic!("an added shard");
        };
        assert_eq!((doc.id.as_str(), doc.added), ("shard03", Some(ts(4))));
        let mut delete = Op::new(OpKind::Delete, ns.clone(), Some("shard03".into()));
        delete.timestamp = ts(8);
        assert_eq!(
            change_of(&delete),
            Some(Change::Removed {
                id: "shard03".into(),
                at: Some(ts(8))
            })
        );
        let update = Op::new(OpKind::Update, ns, Some("shard03".into()));
        assert_eq!(change_of(&update), None, "draining is not a removal");
    }

    #[test]
    fn listed_shards_diff_against_the_tailed_ones() {
        let known: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let doc = |id: &str| ShardDoc {
            id: id.into(),
            host: format!("{id}/h:1"),
            added: None,
        };
        let changes = diff(&known, vec![doc("a"), doc("c")]);
        assert_eq!(
            changes,
            [
                Change::Added(doc("c")),
                Change::Removed {
                    id: "b".into(),
                    at: None
                }
            ]
        );
    }
}
