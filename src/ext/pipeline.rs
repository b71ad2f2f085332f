//! [`Pipeline`] and [`PipelineByNs`]: an aggregation pipeline applied to every op, the way a
//! server applies a change stream's pipeline to every change event.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bson::{doc, Bson, Document};
use futures::stream::{FusedStream, Stream};
use mql::change_event::EventPipeline;
use pin_project::pin_project;

use crate::error::{Error, Result};
use crate::op::{Namespace, Op, OpKind, Position, TruncatedArray, UpdateDescription};

/// Parses `stages` as a change-stream pipeline.
pub(super) fn parse(stages: &[Document]) -> Result<EventPipeline> {
    EventPipeline::parse(stages).map_err(pipeline_error)
}

fn pipeline_error(e: mql::Error) -> Error {
    Error::Pipeline {
        code: e.code,
        code_name: e.code_name,
        message: e.errmsg,
    }
}

/// Stream for the [`pipeline`](crate::OpStreamExt::pipeline) method.
#[pin_project]
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Pipeline<S> {
    #[pin]
    stream: S,
    pipeline: EventPipeline,
}

impl<S> Pipeline<S> {
    pub(super) fn new(stream: S, pipeline: EventPipeline) -> Self {
        Pipeline { stream, pipeline }
    }

    delegate_access_inner!(stream, S, ());
}

impl<S> Stream for Pipeline<S>
where
    S: Stream<Item = Result<Op>>,
{
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Op>>> {
        let mut this = self.project();
        loop {
            let op = match futures::ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(op)) => op,
                other => return Poll::Ready(other),
            };
            if let Some(out) = apply(this.pipeline, op).transpose() {
                return Poll::Ready(Some(out));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.stream.size_hint().1)
    }
}

impl<S> FusedStream for Pipeline<S>
where
    S: FusedStream<Item = Result<Op>>,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}

/// A namespace's parsed pipeline (`None`: no pipeline), or why it did not parse.
type Parsed = std::result::Result<Option<EventPipeline>, mql::Error>;

/// Stream for the [`pipeline_by_ns`](crate::OpStreamExt::pipeline_by_ns) method.
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct PipelineByNs<S, F> {
    #[pin]
    stream: S,
    stages_for: F,
    /// The parsed pipeline of every namespace seen (`None`: no pipeline), or why it did not
    /// parse. Bounded by the number of namespaces in the deployment.
    parsed: HashMap<Namespace, Parsed>,
}

impl<S, F> PipelineByNs<S, F> {
    pub(super) fn new(stream: S, stages_for: F) -> Self {
        PipelineByNs {
            stream,
            stages_for,
            parsed: HashMap::new(),
        }
    }

    delegate_access_inner!(stream, S, ());
}

impl<S: std::fmt::Debug, F> std::fmt::Debug for PipelineByNs<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineByNs")
            .field("stream", &self.stream)
            .field("namespaces", &self.parsed.len())
            .finish_non_exhaustive()
    }
}

impl<S, F> Stream for PipelineByNs<S, F>
where
    S: Stream<Item = Result<Op>>,
    F: FnMut(&Namespace) -> Option<Vec<Document>>,
{
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Op>>> {
        let mut this = self.project();
        loop {
            let op = match futures::ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(op)) => op,
                other => return Poll::Ready(other),
            };
            let stages_for = &mut *this.stages_for;
            let entry = this
                .parsed
                .entry(op.namespace.clone())
                .or_insert_with_key(|ns| match stages_for(ns) {
                    None => Ok(None),
                    Some(stages) => EventPipeline::parse(&stages).map(Some),
                });
            let out = match entry {
                Ok(None) => Some(Ok(op)),
                Ok(Some(p)) => apply(p, op).transpose(),
                Err(e) => Some(Err(Error::Pipeline {
                    code: e.code,
                    code_name: e.code_name.clone(),
                    message: format!("pipeline of {}: {}", op.namespace, e.errmsg),
                })),
            };
            if let Some(out) = out {
                return Poll::Ready(Some(out));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.stream.size_hint().1)
    }
}

impl<S, F> FusedStream for PipelineByNs<S, F>
where
    S: FusedStream<Item = Result<Op>>,
    F: FnMut(&Namespace) -> Option<Vec<Document>>,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}

/// Runs `p` on `op` viewed as a change event: `None` when the pipeline dropped it.
fn apply(p: &EventPipeline, mut op: Op) -> Result<Option<Op>> {
    let event = event_of(&mut op);
    // An op the pipeline drops, or fails on, is done with: acknowledged here.
    match p.apply(event).map_err(pipeline_error) {
        Ok(Some(event)) => {
            restore(&mut op, event);
            Ok(Some(op))
        }
        Ok(None) => {
            op.ack();
            Ok(None)
        }
        Err(e) => {
            op.ack();
            Err(e)
        }
    }
}

/// The change event a server would emit for `op` (reference §5.3): `_id` (the op's
/// position), `operationType`, `clusterTime`, `wallTime`, `ns`, `to`, `documentKey`,
/// `fullDocument`, `fullDocumentBeforeChange`, `updateDescription`, `txnNumber`, `lsid`. The
/// documents and update description move out of the op (no copy) and come back in
/// [`restore`].
fn event_of(op: &mut Op) -> Document {
    let mut e = Document::new();
    e.insert("_id", position_id(&op.position));
    e.insert("operationType", operation_type(&op.kind));
    e.insert("clusterTime", op.timestamp);
    if let Some(wall) = op.wall_time {
        e.insert("wallTime", wall);
    }
    e.insert("ns", ns_doc(&op.namespace));
    if let OpKind::Rename { to } = &op.kind {
        e.insert("to", ns_doc(to));
    }
    if let Some(key) = op.document_key.take() {
        e.insert("documentKey", key);
    }
    if has_full_document(&op.kind) {
        if let Some(data) = op.data.take() {
            e.insert("fullDocument", data);
        }
    }
    if let Some(before) = op.before.take() {
        e.insert("fullDocumentBeforeChange", before);
    }
    if let Some(u) = op.update.take() {
        e.insert("updateDescription", update_doc(u));
    }
    if let Some(txn) = &op.txn {
        if let Some(n) = txn.txn_number {
            e.insert("txnNumber", n);
        }
        if let Some(lsid) = &txn.lsid {
            e.insert("lsid", lsid.clone());
        }
    }
    e
}

/// Puts what the pipeline left of the event back into `op`: its `fullDocument`,
/// `fullDocumentBeforeChange`, `updateDescription` and `documentKey`. The op keeps its kind,
/// namespace, times, source and position; other fields the stages add or change are not
/// carried.
fn restore(op: &mut Op, mut event: Document) {
    if has_full_document(&op.kind) {
        op.data = match event.remove("fullDocument") {
            Some(Bson::Document(d)) => Some(d),
            _ => None,
        };
    }
    op.before = match event.remove("fullDocumentBeforeChange") {
        Some(Bson::Document(d)) => Some(d),
        _ => None,
    };
    op.update = match event.remove("updateDescription") {
        Some(Bson::Document(d)) => Some(update_of(d)),
        _ => None,
    };
    op.document_key = match event.remove("documentKey") {
        Some(Bson::Document(d)) => Some(d),
        _ => None,
    };
}

/// Whether `op.data` is the event's `fullDocument` (for commands it is the command object,
/// which a change event does not carry).
fn has_full_document(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Insert | OpKind::Update | OpKind::Replace | OpKind::Delete
    )
}

/// The event `_id`: what a pipeline must leave unchanged.
fn position_id(position: &Position) -> Bson {
    match position {
        // A token serializes as the document the server sent; it cannot fail.
        Position::ResumeToken(token) => bson::to_bson(token).unwrap_or(Bson::Null),
        Position::Oplog(ts) => Bson::Document(doc! {"ts": *ts}),
        Position::Shard { shard, ts } => Bson::Document(doc! {"shard": shard, "ts": *ts}),
        _ => Bson::Null,
    }
}

/// `operationType` as a change stream names the op's kind (expanded events for DDL).
fn operation_type(kind: &OpKind) -> &str {
    match kind {
        OpKind::Insert => "insert",
        OpKind::Update => "update",
        OpKind::Replace => "replace",
        OpKind::Delete => "delete",
        OpKind::DropCollection => "drop",
        OpKind::DropDatabase => "dropDatabase",
        OpKind::Rename { .. } => "rename",
        OpKind::Create => "create",
        OpKind::Command(name) | OpKind::Other(name) => name,
    }
}

fn ns_doc(ns: &Namespace) -> Document {
    if ns.is_database() {
        doc! {"db": ns.db()}
    } else {
        doc! {"db": ns.db(), "coll": ns.coll()}
    }
}

fn update_doc(u: UpdateDescription) -> Document {
    let truncated: Vec<Bson> = u
        .truncated_arrays
        .into_iter()
        .map(|t| Bson::Document(doc! {"field": t.field, "newSize": i64::from(t.new_size)}))
        .collect();
    doc! {
        "updatedFields": u.updated_fields,
        "removedFields": u.removed_fields,
        "truncatedArrays": truncated,
    }
}

/// The update description a pipeline left; parts it removed or reshaped are empty.
fn update_of(mut d: Document) -> UpdateDescription {
    let updated = match d.remove("updatedFields") {
        Some(Bson::Document(f)) => f,
        _ => Document::new(),
    };
    let removed = match d.remove("removedFields") {
        Some(Bson::Array(a)) => a
            .into_iter()
            .filter_map(|v| match v {
                Bson::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let truncated = match d.remove("truncatedArrays") {
        Some(Bson::Array(a)) => a.iter().filter_map(truncated_of).collect(),
        _ => Vec::new(),
    };
    UpdateDescription::new(updated, removed, truncated)
}

fn truncated_of(v: &Bson) -> Option<TruncatedArray> {
    let d = v.as_document()?;
    let size = match d.get("newSize")? {
        Bson::Int32(n) => u32::try_from(*n).ok()?,
        Bson::Int64(n) => u32::try_from(*n).ok()?,
        _ => return None,
    };
    Some(TruncatedArray::new(d.get_str("field").ok()?, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Source, TxnInfo};
    use bson::Timestamp;

    fn update_op() -> Op {
        let ts = Timestamp {
            time: 7,
            increment: 1,
        };
        Op::new(
            OpKind::Update,
            Namespace::parse("shop.users").unwrap(),
            Some(Bson::Int32(1)),
        )
        .with_data(doc! {"_id": 1, "name": "ada", "secret": "s"})
        .with_before(doc! {"_id": 1, "name": "eve", "secret": "s"})
        .with_update(UpdateDescription::new(
            doc! {"name": "ada"},
            vec!["old".into()],
            vec![TruncatedArray::new("arr", 2)],
        ))
        .with_timestamp(ts)
        .with_source(Source::Oplog)
        .with_position(Position::Oplog(ts))
    }

    #[test]
    fn an_op_round_trips_through_an_empty_pipeline() {
        let p = parse(&[]).unwrap();
        let op = update_op();
        assert_eq!(apply(&p, op.clone()).unwrap(), Some(op));
        let mut txn = update_op();
        txn.txn = Some(TxnInfo::new(Some(doc! {"id": 1}), Some(4), 0));
        let mut e = txn.clone();
        let event = event_of(&mut e);
        assert_eq!(event.get_i64("txnNumber"), Ok(4));
        assert_eq!(event.get_str("operationType"), Ok("update"));
        assert_eq!(
            event.get_document("ns"),
            Ok(&doc! {"db": "shop", "coll": "users"})
        );
        assert_eq!(apply(&p, txn.clone()).unwrap(), Some(txn));
    }

    #[test]
    fn stages_reshape_and_filter() {
        let p = parse(&[
            doc! {"$match": {"operationType": "update", "fullDocument.name": "ada"}},
            doc! {"$project": {"fullDocument.secret": 0, "updateDescription.removedFields": 0}},
            doc! {"$unset": "fullDocumentBeforeChange.secret"},
        ])
        .unwrap();
        let out = apply(&p, update_op()).unwrap().unwrap();
        assert_eq!(out.data, Some(doc! {"_id": 1, "name": "ada"}));
        assert_eq!(out.before, Some(doc! {"_id": 1, "name": "eve"}));
        let u = out.update.unwrap();
        assert!(u.removed_fields.is_empty());
        assert_eq!(u.truncated_arrays, vec![TruncatedArray::new("arr", 2)]);
        let other = parse(&[doc! {"$match": {"ns.coll": "orders"}}]).unwrap();
        assert_eq!(apply(&other, update_op()).unwrap(), None);
    }

    #[test]
    fn errors_are_the_servers() {
        let e = parse(&[doc! {"$group": {"_id": null}}]).unwrap_err();
        assert_eq!(e.code(), Some(20));
        let p = parse(&[doc! {"$unset": "_id"}]).unwrap();
        let e = apply(&p, update_op()).unwrap_err();
        assert!(
            matches!(&e, Error::Pipeline { code: 280, code_name, .. } if code_name == "ChangeStreamFatalError"),
            "{e}"
        );
    }
}
