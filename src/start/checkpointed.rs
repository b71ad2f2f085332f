//! [`start`](super::start) with a checkpoint: load it at the first poll, resume every
//! source from it, and make each source's ops carry acknowledgements.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use mongodb::Client;
use tokio::sync::watch;

use super::{build, Controls, SnapshotStart, TailOptions};
use crate::checkpoint::track::{LaneKey, Mark, Tracker};
use crate::checkpoint::tracked::Tracked;
use crate::checkpoint::{Checkpoint, OplogProgress, Saver};
use crate::error::Result;
use crate::op::Op;
use crate::source::change_stream::{ChangeStreamControl, ChangeStreamOptions};
use crate::source::cluster::ClusterControl;
use crate::source::oplog::OplogControl;

/// The sources of `options`, started once the checkpoint is loaded: each resumes from its
/// stored position, and the saver's tracker follows their ops. A checkpoint that cannot be
/// loaded (unreadable, foreign, store unreachable) is the stream's only item.
pub(super) fn resume(
    client: Client,
    mut options: TailOptions,
    snapshot: Option<Arc<SnapshotStart>>,
    controls: Controls,
    saver: Arc<Saver>,
    direct_done: watch::Sender<bool>,
) -> BoxStream<'static, Result<Op>> {
    stream::once(async move {
        let loaded = match saver.load().await {
            Ok(loaded) => loaded.unwrap_or_default(),
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        if loaded.oplog.is_some() || !loaded.change_streams.is_empty() || !loaded.shards.is_empty()
        {
            tracing::info!(checkpoint = %saver.options().name, "resuming from the checkpoint");
        }
        apply(&mut options, &loaded);
        let tracking = Tracking {
            tracker: saver.tracker.clone(),
            loaded,
        };
        saver.tracker.set_base(tracking.loaded.clone());
        let sources = build(
            &client,
            options,
            snapshot,
            &controls,
            Some(&tracking),
            direct_done,
        );
        stream::select_all(sources).boxed()
    })
    .flatten()
    .boxed()
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
    }
    let scopes = scopes(&options.change_streams);
    for (cs, scope) in options.change_streams.iter_mut().zip(scopes) {
        if let Some(token) = cp.change_streams.get(&scope) {
            cs.start_after = Some(token.clone());
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

/// What [`build`] needs to track a source: the tracker and the loaded checkpoint.
pub(super) struct Tracking {
    tracker: Arc<Tracker>,
    loaded: Checkpoint,
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
    ) -> BoxStream<'static, Result<Op>> {
        let base = self.loaded.oplog.map(Mark::Oplog);
        let lane = self.tracker.lane(LaneKey::Oplog, base);
        let control = control.clone();
        let idle = Box::new(move || {
            let at = control.position();
            at.map(|ts| (LaneKey::Oplog, Mark::Oplog(OplogProgress::new(ts))))
                .into_iter()
                .collect()
        });
        Tracked::one(source, self.tracker(), lane, LaneKey::Oplog, Some(idle)).boxed()
    }

    /// The cluster source as one tracked lane per shard; idle, each shard stands where the
    /// control's positions say.
    pub(super) fn cluster(
        &self,
        source: BoxStream<'static, Result<Op>>,
        control: &ClusterControl,
    ) -> BoxStream<'static, Result<Op>> {
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

    /// A change stream as a tracked lane; idle, it stands at its latest token.
    pub(super) fn change_stream(
        &self,
        source: BoxStream<'static, Result<Op>>,
        control: &ChangeStreamControl,
        scope: String,
    ) -> BoxStream<'static, Result<Op>> {
        let base = self.loaded.change_streams.get(&scope).cloned();
        let key = LaneKey::ChangeStream(scope);
        let lane = self.tracker.lane(key.clone(), base.map(Mark::Token));
        let (control, own) = (control.clone(), key.clone());
        let idle = Box::new(move || {
            let token = control.position();
            token
                .map(|t| (own.clone(), Mark::Token(t)))
                .into_iter()
                .collect()
        });
        Tracked::one(source, self.tracker(), lane, key, Some(idle)).boxed()
    }
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
