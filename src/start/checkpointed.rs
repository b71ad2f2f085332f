//! [`start`](super::start) with a checkpoint: load it at the first poll, resume every
//! source from it, and make each source's ops carry acknowledgements.

use std::sync::Arc;

use bson::Timestamp;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, BoxStream, StreamExt};
use mongodb::Client;
use tokio::sync::watch;

use super::reread::{Rereading, Restart};
use super::{build, Controls, SnapshotStart, TailOptions};
use crate::checkpoint::track::{LaneKey, Mark, Tracker};
use crate::checkpoint::tracked::Tracked;
use crate::checkpoint::{Checkpoint, OplogProgress, PositionLostPolicy, Saver};
use crate::error::Result;
use crate::op::{Namespace, Op};
use crate::source::change_stream::{ChangeStreamControl, ChangeStreamOptions, ChangeStreamSource};
use crate::source::cluster::ClusterControl;
use crate::source::oplog::{OplogControl, OplogOptions, OplogStream};
use crate::source::start_at::StartAt;

/// The sources of `options`, started once the checkpoint is loaded: each resumes from its
/// stored position, and the saver's tracker follows their ops. A checkpoint that cannot be
/// loaded (unreadable, foreign, store unreachable) is the stream's only item.
///
/// On a first start, the start point of every live source is saved before any op is
/// delivered, so that a process killed before its first acknowledgement was saved still
/// resumes from there (not from a later "now").
pub(super) fn resume(
    client: Client,
    mut options: TailOptions,
    snapshot: Option<Arc<SnapshotStart>>,
    controls: Controls,
    saver: Arc<Saver>,
    direct_done: watch::Sender<bool>,
) -> BoxFuture<'static, Vec<BoxStream<'static, Result<Op>>>> {
    async move {
        let loaded = match saver.load().await {
            Ok(loaded) => loaded.unwrap_or_default(),
            Err(e) => return vec![stream::once(async move { Err(e) }).boxed()],
        };
        let shared = match &snapshot {
            Some(snapshot) if needs_start(&options, &loaded) => snapshot.take().await.ok(),
            _ => None,
        };
        let bases = Bases::new(&options, &loaded, shared);
        apply(&mut options, &loaded);
        saver.tracker.set_base(loaded);
        let tracking = Tracking {
            tracker: saver.tracker.clone(),
            bases,
            client: client.clone(),
            policy: saver.options().on_position_lost,
        };
        let mut sources = build(
            &client,
            options,
            snapshot,
            &controls,
            Some(&tracking),
            direct_done,
        );
        // Every live lane exists now, at its start: save it before the first op.
        if let Err(e) = saver.save_now().await {
            sources.insert(0, stream::once(async move { Err(e) }).boxed());
        }
        sources
    }
    .boxed()
}

/// Whether a live source of `options` starts fresh (nothing in `cp`) from the shared start.
fn needs_start(options: &TailOptions, cp: &Checkpoint) -> bool {
    let oplog = options
        .oplog
        .as_ref()
        .is_some_and(|o| o.start.is_none() && cp.oplog.is_none());
    let scopes = scopes(&options.change_streams);
    let streams = options
        .change_streams
        .iter()
        .zip(&scopes)
        .any(|(cs, scope)| {
            let own = cs.start.is_some() || cs.resume_after.is_some() || cs.start_after.is_some();
            !own && !cp.change_streams.contains_key(scope)
                && !cp.change_stream_times.contains_key(scope)
        });
    let cluster = options.cluster.as_ref().is_some_and(|c| {
        c.oplog.start.is_none() && cp.shards.is_empty() && cp.cluster_start.is_none()
    });
    oplog || streams || cluster
}

/// Where each live lane starts: its stored position, else the start it was given when that
/// is a known point (a time or a token), else the shared start of a fresh start.
struct Bases {
    oplog: Option<Mark>,
    change_streams: Vec<Option<Mark>>,
    /// A cluster stream's start, while its shards have no positions.
    cluster: Option<Mark>,
}

impl Bases {
    fn new(options: &TailOptions, cp: &Checkpoint, shared: Option<Timestamp>) -> Bases {
        // A source's own start, else the common one (a function there is the shared start:
        // with a function of the user's own, `shared` is `None`).
        let given = |own: &Option<StartAt>| match (own, &options.start) {
            (Some(StartAt::After(ts)), _) | (None, StartAt::After(ts)) => Some(*ts),
            (None, StartAt::Func(_)) => shared,
            _ => None,
        };
        let oplog = options.oplog.as_ref().and_then(|o| {
            let stored = cp.oplog.map(Mark::Oplog);
            stored.or_else(|| given(&o.start).map(|ts| Mark::Oplog(OplogProgress::new(ts))))
        });
        let scopes = scopes(&options.change_streams);
        let change_streams = options
            .change_streams
            .iter()
            .zip(&scopes)
            .map(|(cs, scope)| {
                let stored = cp.change_streams.get(scope).cloned().map(Mark::Token);
                let time = cp.change_stream_times.get(scope).copied().map(Mark::Time);
                let token = cs.start_after.clone().or_else(|| cs.resume_after.clone());
                stored
                    .or(time)
                    .or_else(|| token.map(Mark::Token))
                    .or_else(|| given(&cs.start).map(Mark::Time))
            })
            .collect();
        let cluster = options.cluster.as_ref().and_then(|c| {
            let stored = cp.cluster_start.map(Mark::Time);
            stored.or_else(|| given(&c.oplog.start).map(Mark::Time))
        });
        Bases {
            oplog,
            change_streams,
            cluster,
        }
    }
}

/// Sets each live source of `options` to resume from its position in `cp`.
fn apply(options: &mut TailOptions, cp: &Checkpoint) {
    if let Some(progress) = cp.oplog {
        options.oplog = options.oplog.take().map(|o| o.resume_from(progress));
    }
    if !cp.shards.is_empty() {
        options.cluster = options
            .cluster
            .take()
            .map(|c| c.resume_from(cp.shards.clone()));
    } else if let Some(ts) = cp.cluster_start {
        // Stopped before any shard had a position: every shard from the saved start.
        options.cluster = options.cluster.take().map(|c| c.start(StartAt::After(ts)));
    }
    let scopes = scopes(&options.change_streams);
    for (cs, scope) in options.change_streams.iter_mut().zip(scopes) {
        if let Some(token) = cp.change_streams.get(&scope) {
            cs.start_after = Some(token.clone());
        } else if let Some(ts) = cp.change_stream_times.get(&scope) {
            cs.start = Some(StartAt::After(*ts));
            (cs.start_after, cs.resume_after) = (None, None);
        }
    }
}

/// The key of each change stream in a checkpoint: its namespace (`db.coll` or `db`; the
/// empty string for the whole deployment), with `#2`, `#3`… for further streams of the
/// same scope, in the order of [`TailOptions::change_streams`].
pub(super) fn scopes(streams: &[ChangeStreamOptions]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::with_capacity(streams.len());
    let mut out = Vec::with_capacity(streams.len());
    for cs in streams {
        let scope = cs
            .namespace
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let same = seen.iter().filter(|s| **s == scope).count();
        out.push(match same {
            0 => scope.clone(),
            n => format!("{scope}#{}", n + 1),
        });
        seen.push(scope);
    }
    out
}

/// What [`build`] needs to track a source: the tracker, where each live lane starts, and
/// what to do when a stored position is lost.
pub(super) struct Tracking {
    tracker: Arc<Tracker>,
    bases: Bases,
    client: Client,
    policy: PositionLostPolicy,
}

impl Tracking {
    pub(super) fn tracker(&self) -> Arc<Tracker> {
        self.tracker.clone()
    }

    /// The oplog source as a tracked lane; idle, it stands where its control says.
    pub(super) fn oplog(
        &self,
        source: BoxStream<'static, Result<Op>>,
        control: &OplogControl,
        options: OplogOptions,
    ) -> BoxStream<'static, Result<Op>> {
        let lane = self.tracker.lane(LaneKey::Oplog, self.bases.oplog.clone());
        let tracked = track_oplog(&self.tracker, lane, source, control);
        if self.policy != PositionLostPolicy::Reread {
            return tracked;
        }
        let (client, tracker, control) = (self.client.clone(), self.tracker(), control.clone());
        let scope = options.namespaces.clone();
        let live = Box::new(move |ts| {
            let o = options.clone().resume_from(OplogProgress::new(ts));
            let s = OplogStream::with_control(&client, o, &control).boxed();
            track_oplog(&tracker, lane, s, &control)
        });
        self.rereading(tracked, lane, LaneKey::Oplog, scope, live)
    }

    /// The cluster source as one tracked lane per shard; idle, each shard stands where the
    /// control's positions say.
    pub(super) fn cluster(
        &self,
        source: BoxStream<'static, Result<Op>>,
        control: &ClusterControl,
    ) -> BoxStream<'static, Result<Op>> {
        if let Some(start) = self.bases.cluster.clone() {
            self.tracker.lane(LaneKey::Cluster, Some(start));
        }
        let control = control.clone();
        let idle = Box::new(move || {
            control
                .positions()
                .into_iter()
                .map(|(shard, p)| (LaneKey::Shard(shard), Mark::Oplog(p)))
                .collect()
        });
        Tracked::shards(source, self.tracker(), Some(idle)).boxed()
    }

    /// Change stream `index` as a tracked lane; idle, it stands at its latest token.
    pub(super) fn change_stream(
        &self,
        source: BoxStream<'static, Result<Op>>,
        control: &ChangeStreamControl,
        index: usize,
        scope: String,
        options: ChangeStreamOptions,
    ) -> BoxStream<'static, Result<Op>> {
        let base = self.bases.change_streams.get(index).cloned().flatten();
        let key = LaneKey::ChangeStream(scope);
        let lane = self.tracker.lane(key.clone(), base);
        let tracked = track_change_stream(&self.tracker, lane, &key, source, control);
        if self.policy != PositionLostPolicy::Reread {
            return tracked;
        }
        let (client, tracker, control) = (self.client.clone(), self.tracker(), control.clone());
        let scope = options.namespace.clone().into_iter().collect();
        let own = key.clone();
        let live = Box::new(move |ts| {
            let mut cs = options.clone();
            (cs.start, cs.start_after, cs.resume_after) = (Some(StartAt::After(ts)), None, None);
            let s = ChangeStreamSource::with_control(&client, cs, &control).boxed();
            track_change_stream(&tracker, lane, &own, s, &control)
        });
        self.rereading(tracked, lane, key, scope, live)
    }

    fn rereading(
        &self,
        tracked: BoxStream<'static, Result<Op>>,
        lane: usize,
        key: LaneKey,
        scope: Vec<Namespace>,
        live: Box<dyn Fn(Timestamp) -> BoxStream<'static, Result<Op>> + Send + Sync>,
    ) -> BoxStream<'static, Result<Op>> {
        let restart = Restart {
            client: self.client.clone(),
            tracker: self.tracker(),
            lane,
            key,
            scope,
            live,
        };
        Rereading::new(tracked, restart).boxed()
    }
}

fn track_oplog(
    tracker: &Arc<Tracker>,
    lane: usize,
    source: BoxStream<'static, Result<Op>>,
    control: &OplogControl,
) -> BoxStream<'static, Result<Op>> {
    let control = control.clone();
    let idle = Box::new(move || {
        let at = control.position();
        at.map(|ts| (LaneKey::Oplog, Mark::Oplog(OplogProgress::new(ts))))
            .into_iter()
            .collect()
    });
    Tracked::one(source, tracker.clone(), lane, LaneKey::Oplog, Some(idle)).boxed()
}

fn track_change_stream(
    tracker: &Arc<Tracker>,
    lane: usize,
    key: &LaneKey,
    source: BoxStream<'static, Result<Op>>,
    control: &ChangeStreamControl,
) -> BoxStream<'static, Result<Op>> {
    let (control, own) = (control.clone(), key.clone());
    let idle = Box::new(move || {
        let token = control.position();
        token
            .map(|t| (own.clone(), Mark::Token(t)))
            .into_iter()
            .collect()
    });
    Tracked::one(source, tracker.clone(), lane, key.clone(), Some(idle)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Namespace;

    #[test]
    fn scopes_name_each_change_stream_once() {
        let ns = |s: &str| ChangeStreamOptions::new().namespace(Namespace::parse(s).unwrap());
        let streams = [
            ns("shop.orders"),
            ChangeStreamOptions::new(),
            ns("shop.orders"),
            ns("shop"),
            ns("shop.orders"),
        ];
        assert_eq!(
            scopes(&streams),
            ["shop.orders", "", "shop.orders#2", "shop", "shop.orders#3"]
        );
    }
}
