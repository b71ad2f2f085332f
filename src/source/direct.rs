//! Direct reads: every document of whole collections or views, as insert ops with
//! [`Source::Direct`].
//!
//! Collections (not views, checked with `listCollections`) are split into up to
//! [`DirectOptions::split_max`] `_id` ranges read concurrently. Boundaries come from a
//! `$sample` of `_id`s sorted on the server (reference §7.6). Because MongoDB compares
//! values only within one type bracket, the ranges cover the `_id`s of the sampled type
//! (ObjectId, string, number or date) and one more query reads every document whose `_id`
//! has another type, so each document is read exactly once. At most
//! [`DirectOptions::concurrency`] namespaces are read at a time. The stream ends when
//! every namespace has been read.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
//! # let uri = sim.uri();
//! use futures::TryStreamExt;
//! use mongotail::source::direct::{DirectOptions, DirectReads};
//! use mongotail::Namespace;
//!
//! let client = mongodb::Client::with_uri_str(&uri).await?;
//! let orders = client.database("shop").collection::<bson::Document>("orders");
//! orders.insert_many((0..10).map(|i| bson::doc! {"_id": i})).await?;
//!
//! let options = DirectOptions::new().namespace(Namespace::parse("shop.orders")?);
//! let docs: Vec<_> = DirectReads::new(&client, options).try_collect().await?;
//! assert_eq!(docs.len(), 10);
//! assert!(docs.iter().all(|op| op.is_insert() && op.is_source_direct()));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bson::{doc, Bson, Document, Timestamp};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, Fuse, StreamExt, TryStreamExt};
use futures::FutureExt;
use mongodb::{Client, Collection};
use tokio::sync::Semaphore;

use super::engine::{Control, Decoded, Engine, Opened, Read, Resumable, Verdict};
use super::retry::{retry_transient, RetryPolicy};
use super::stats::{DirectCounters, DirectEntry};
use crate::checkpoint::track::{LaneKey, Mark, Tracker};
use crate::checkpoint::tracked::Tracked;
use crate::checkpoint::DirectProgress;
use crate::error::{Error, Result};
use crate::op::{Namespace, Op, OpKind, Position, Source};

/// Options of the direct-read source. Build with [`DirectOptions::new`] and the builder
/// methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DirectOptions {
    /// Collections or views to read, `db.coll`. Default empty.
    pub namespaces: Vec<Namespace>,
    /// Most `_id` ranges a collection is split into, read concurrently. Default 9 (gtm).
    /// `1` disables splitting.
    pub split_max: usize,
    /// Collections with fewer documents than this are not split. Default 1,000.
    pub split_min_docs: u64,
    /// Most namespaces read at the same time. Default 4.
    pub concurrency: usize,
    /// Most reads in flight at once across every namespace: a range being read, or a
    /// namespace being planned (`count`, `$sample`) each count as one. A read in flight
    /// holds a pooled connection while the consumer is not polling, so keep this below the
    /// client's `maxPoolSize` (default 10): then a stalled consumer never takes every
    /// connection of a client it shares with other work. Default 8.
    pub max_in_flight: usize,
    /// Aggregation stages applied per namespace after the range `$match`. Default none.
    pub pipelines: BTreeMap<Namespace, Vec<Document>>,
    /// `allowDiskUse` for pipelines and `$sample`. Default `false`.
    pub allow_disk_use: bool,
    /// `noCursorTimeout` on the range cursors. Default `false`.
    pub no_cursor_timeout: bool,
    /// Bounded mode: only documents whose `_id` is at most the greatest `_id` present
    /// when the read of the namespace starts (in MongoDB's cross-type order), so
    /// documents inserted with larger `_id`s (e.g. new ObjectIds) during the read are
    /// left to the live sources. Default `false`.
    pub bounded: bool,
    /// Cursor batch size. Default `None`: about 1 MiB per batch from the collection's
    /// average document size (`collStats.avgObjSize`), between 100 and 10,000 documents.
    pub batch_size: Option<u32>,
    /// Retry of transient errors: a range (read in `_id` order) is re-opened after the
    /// last `_id` delivered. Ranges with a pipeline are retried only before their first
    /// document. Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
}

impl Default for DirectOptions {
    fn default() -> Self {
        DirectOptions {
            namespaces: Vec::new(),
            split_max: 9,
            split_min_docs: 1_000,
            concurrency: 4,
            max_in_flight: 8,
            pipelines: BTreeMap::new(),
            allow_disk_use: false,
            no_cursor_timeout: false,
            bounded: false,
            batch_size: None,
            retry: RetryPolicy::default(),
        }
    }
}

impl DirectOptions {
    /// The defaults (no namespaces).
    pub fn new() -> Self {
        DirectOptions::default()
    }

    /// Adds a namespace to read.
    pub fn namespace(mut self, ns: Namespace) -> Self {
        self.namespaces.push(ns);
        self
    }

    /// Replaces [`DirectOptions::namespaces`].
    pub fn namespaces(mut self, ns: impl IntoIterator<Item = Namespace>) -> Self {
        self.namespaces = ns.into_iter().collect();
        self
    }

    /// Sets [`DirectOptions::split_max`].
    pub fn split_max(mut self, n: usize) -> Self {
        self.split_max = n;
        self
    }

    /// Sets [`DirectOptions::split_min_docs`].
    pub fn split_min_docs(mut self, n: u64) -> Self {
        self.split_min_docs = n;
        self
    }

    /// Sets [`DirectOptions::max_in_flight`] (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Sets [`DirectOptions::concurrency`].
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets the pipeline of one namespace.
    pub fn pipeline(mut self, ns: Namespace, stages: impl IntoIterator<Item = Document>) -> Self {
        self.pipelines.insert(ns, stages.into_iter().collect());
        self
    }

    /// Sets [`DirectOptions::allow_disk_use`].
    pub fn allow_disk_use(mut self, on: bool) -> Self {
        self.allow_disk_use = on;
        self
    }

    /// Sets [`DirectOptions::no_cursor_timeout`].
    pub fn no_cursor_timeout(mut self, on: bool) -> Self {
        self.no_cursor_timeout = on;
        self
    }

    /// Sets [`DirectOptions::bounded`].
    pub fn bounded(mut self, on: bool) -> Self {
        self.bounded = on;
        self
    }

    /// Sets [`DirectOptions::batch_size`].
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// Sets [`DirectOptions::retry`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// The direct-read source: a `Stream<Item = Result<Op>>` that ends when every namespace
/// has been read. Dropping it closes its cursors.
///
/// Memory: at most `concurrency` namespaces × (`split_max` + 1) ranges hold one cursor
/// batch each (about 1 MiB by default) while the consumer is not polling.
#[must_use = "streams do nothing unless polled"]
pub struct DirectReads {
    inner: Fuse<BoxStream<'static, Result<Op>>>,
}

impl fmt::Debug for DirectReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectReads").finish_non_exhaustive()
    }
}

impl DirectReads {
    /// Builds the stream; nothing is sent to the server before the first poll.
    pub fn new(client: &Client, options: DirectOptions) -> DirectReads {
        DirectReads::build(client, options, None, Arc::default())
    }

    /// Direct reads reporting to `counters` (a [`Handle`](crate::Handle)'s stats).
    pub(crate) fn counted(
        client: &Client,
        options: DirectOptions,
        tracker: Option<Arc<Tracker>>,
        counters: Arc<DirectCounters>,
    ) -> DirectReads {
        DirectReads::build(client, options, tracker, counters)
    }

    /// Direct reads whose ops carry acknowledgements of `tracker`, continuing the
    /// progress of its checkpoint.
    pub(crate) fn tracked(
        client: &Client,
        options: DirectOptions,
        tracker: Arc<Tracker>,
    ) -> DirectReads {
        DirectReads::build(client, options, Some(tracker), Arc::default())
    }

    fn build(
        client: &Client,
        options: DirectOptions,
        tracker: Option<Arc<Tracker>>,
        counters: Arc<DirectCounters>,
    ) -> Self {
        let concurrency = options.concurrency.max(1);
        let client = client.clone();
        let namespaces = options.namespaces.clone();
        let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
        let options = Arc::new(options);
        let inner = stream::iter(namespaces)
            .map(move |ns| {
                let (client, options) = (client.clone(), options.clone());
                let entry = counters.entry(&ns.to_string());
                read_namespace(client, options, in_flight.clone(), tracker.clone(), ns)
                    .counted(entry)
            })
            .flatten_unordered(concurrency)
            .boxed()
            .fuse();
        DirectReads { inner }
    }
}

delegate_stream!(DirectReads, inner);

/// The `$type` alias of the type bracket an `_id` sorts in, for the types ranges support.
fn type_bracket(v: &Bson) -> Option<&'static str> {
    match v {
        Bson::ObjectId(_) => Some("objectId"),
        Bson::String(_) => Some("string"),
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => Some("number"),
        Bson::DateTime(_) => Some("date"),
        _ => None,
    }
}

/// The `_id` filters that partition a collection: ranges between `bounds` (sorted,
/// distinct, all of type bracket `bracket`) plus every `_id` of another type.
pub(crate) fn range_filters(bracket: &str, bounds: &[Bson]) -> Vec<Document> {
    let mut out = Vec::with_capacity(bounds.len() + 2);
    let mut lower: Option<&Bson> = None;
    for b in bounds.iter().map(Some).chain(std::iter::once(None)) {
        let mut cond = Document::new();
        match lower {
            Some(l) => {
                cond.insert("$gte", l.clone());
            }
            None => {
                cond.insert("$type", bracket);
            }
        }
        if let Some(b) = b {
            cond.insert("$lt", b.clone());
        }
        out.push(doc! {"_id": cond});
        lower = b;
    }
    out.push(doc! {"_id": {"$not": {"$type": bracket}}});
    out
}

/// Picks up to `splits - 1` boundaries from sorted sample `_id`s.
pub(crate) fn pick_bounds(sample: &[Bson], splits: usize) -> Vec<Bson> {
    let mut out: Vec<Bson> = Vec::new();
    if splits < 2 || sample.is_empty() {
        return out;
    }
    for i in 1..splits {
        let at = i * sample.len() / splits;
        if let Some(b) = sample.get(at) {
            if out.last() != Some(b) {
                out.push(b.clone());
            }
        }
    }
    out
}

struct Plan {
    coll: Collection<Document>,
    /// The collection's document count (`collStats`), when known.
    count: Option<u64>,
    filters: Vec<Document>,
    pipeline: Option<Vec<Document>>,
    batch_size: u32,
}

async fn is_view(client: &Client, ns: &Namespace) -> Result<Option<bool>> {
    let mut specs = client
        .database(ns.db())
        .list_collections()
        .filter(doc! {"name": ns.coll()})
        .await?;
    match specs.try_next().await? {
        Some(spec) => Ok(Some(matches!(
            spec.collection_type,
            mongodb::results::CollectionType::View
        ))),
        None => Ok(None),
    }
}

/// Plans the read of `ns`: its `_id` range filters (`known`: those of a checkpoint, else
/// split from a sample) and batch size. `None` when there is no such collection.
async fn plan(
    client: &Client,
    options: &DirectOptions,
    ns: &Namespace,
    known: Option<Vec<Document>>,
) -> Result<Option<Plan>> {
    if ns.is_database() {
        return Err(Error::Config(format!(
            "direct reads need a collection namespace, got database {ns}"
        )));
    }
    let db = client.database(ns.db());
    let coll = db.collection::<Document>(ns.coll());
    let pipeline = options.pipelines.get(ns).cloned();
    let Some(view) = is_view(client, ns).await? else {
        return Ok(None); // no such collection: nothing to read
    };
    let default_batch = |avg: Option<f64>| -> u32 {
        options.batch_size.unwrap_or_else(|| match avg {
            Some(avg) if avg > 0.0 => ((1024.0 * 1024.0) / avg).clamp(100.0, 10_000.0) as u32,
            _ => 1_000,
        })
    };
    if view {
        return Ok(Some(Plan {
            coll,
            count: None,
            filters: known.unwrap_or_else(|| vec![Document::new()]),
            pipeline,
            batch_size: default_batch(None),
        }));
    }
    // reference §7.4: collStats gives `count` and `avgObjSize` (absent when empty).
    let stats = db.run_command(doc! {"collStats": ns.coll()}).await.ok();
    let count = stats
        .as_ref()
        .and_then(|s| s.get("count"))
        .and_then(bson_u64)
        .unwrap_or(0);
    let avg = stats
        .as_ref()
        .and_then(|s| s.get("avgObjSize"))
        .and_then(bson_f64);
    let filters = match known {
        Some(filters) => filters,
        None => split(&coll, options, ns, count).await?,
    };
    Ok(Some(Plan {
        coll,
        count: stats.as_ref().map(|_| count),
        filters,
        pipeline,
        batch_size: default_batch(avg),
    }))
}

/// The `_id` range filters of a collection of `count` documents: split at boundaries
/// sampled from it, then bounded to the greatest `_id` present now if asked.
async fn split(
    coll: &Collection<Document>,
    options: &DirectOptions,
    ns: &Namespace,
    count: u64,
) -> Result<Vec<Document>> {
    let mut filters = vec![Document::new()];
    if options.split_max > 1 && count >= options.split_min_docs {
        let size = (options.split_max as u64 * 16).min(count).max(1);
        let sample: Vec<Bson> = coll
            .aggregate(vec![
                doc! {"$sample": {"size": i64::try_from(size).unwrap_or(i64::MAX)}},
                doc! {"$project": {"_id": 1}},
                doc! {"$sort": {"_id": 1}},
            ])
            .allow_disk_use(options.allow_disk_use)
            .await?
            .try_filter_map(|d| async move { Ok(d.get("_id").cloned()) })
            .try_collect()
            .await?;
        let bracket = sample.first().and_then(type_bracket);
        let same = bracket.is_some() && sample.iter().all(|v| type_bracket(v) == bracket);
        if let (true, Some(bracket)) = (same, bracket) {
            let bounds = pick_bounds(&sample, options.split_max);
            filters = range_filters(bracket, &bounds);
            tracing::debug!(%ns, ranges = filters.len(), "direct read split");
        }
    }
    if options.bounded {
        // Bounded mode: only `_id`s up to the greatest one present now.
        let last = coll
            .find_one(doc! {})
            .sort(doc! {"_id": -1})
            .projection(doc! {"_id": 1})
            .await?;
        filters = match last.and_then(|d| d.get("_id").cloned()) {
            Some(max) => filters
                .into_iter()
                .map(|f| and_filter(f, upto_filter(&max)))
                .collect(),
            None => Vec::new(), // empty now: nothing to read
        };
    }
    Ok(filters)
}

fn bson_u64(v: &Bson) -> Option<u64> {
    match v {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

fn bson_f64(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(f) => Some(*f),
        _ => None,
    }
}

fn to_op(ns: &Namespace, d: Document) -> Op {
    let id = d.get("_id").cloned();
    Op::new(OpKind::Insert, ns.clone(), id)
        .with_data(d)
        .with_source(Source::Direct)
        .with_position(Position::Direct)
}

/// Brackets of BSON types in MongoDB's sort order, as `$type` aliases.
const TYPE_ORDER: &[&[&str]] = &[
    &["minKey"],
    &["null", "undefined"],
    &["double", "int", "long", "decimal"],
    &["string", "symbol"],
    &["object"],
    &["array"],
    &["binData"],
    &["objectId"],
    &["bool"],
    &["date"],
    &["timestamp"],
    &["regex"],
    &["dbPointer"],
    &["javascript"],
    &["javascriptWithScope"],
    &["maxKey"],
];

fn type_rank(v: &Bson) -> usize {
    match v {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::JavaScriptCodeWithScope(_) => 14,
        Bson::MaxKey => 15,
    }
}

/// `_id`s sorting at or before `max` in MongoDB's order (any type).
pub(crate) fn upto_filter(max: &Bson) -> Document {
    let earlier: Vec<&str> = TYPE_ORDER
        .iter()
        .take(type_rank(max))
        .flat_map(|aliases| aliases.iter().copied())
        .collect();
    if earlier.is_empty() {
        doc! {"_id": {"$lte": max.clone()}}
    } else {
        doc! {"$or": [{"_id": {"$lte": max.clone()}}, {"_id": {"$type": earlier}}]}
    }
}

fn and_filter(a: Document, b: Document) -> Document {
    if a.is_empty() {
        b
    } else {
        doc! {"$and": [a, b]}
    }
}

/// `range` restricted to `_id`s sorting after `last` in MongoDB's order: greater within
/// `last`'s type bracket, or of a later bracket (comparison operators alone stay inside
/// one bracket).
pub(crate) fn resume_filter(range: &Document, last: &Bson) -> Document {
    let later: Vec<&str> = TYPE_ORDER
        .iter()
        .skip(type_rank(last) + 1)
        .flat_map(|aliases| aliases.iter().copied())
        .collect();
    let after = if later.is_empty() {
        doc! {"_id": {"$gt": last.clone()}}
    } else {
        doc! {"$or": [{"_id": {"$gt": last.clone()}}, {"_id": {"$type": later}}]}
    };
    and_filter(range.clone(), after)
}

/// One `_id` range being read: how it opens (after the last `_id` read, in `_id` order)
/// and decodes; the [`Engine`] does the rest.
struct RangeRead {
    coll: Collection<Document>,
    ns: Namespace,
    filter: Document,
    pipeline: Option<Vec<Document>>,
    batch_size: u32,
    allow_disk_use: bool,
    no_cursor_timeout: bool,
}

impl Resumable for RangeRead {
    /// The `_id` of the last document read.
    type Pos = Bson;
    type Cursor = mongodb::Cursor<Document>;
    type Doc = Document;

    const NAME: &'static str = "direct read";

    fn open(&mut self, from: Option<Bson>) -> BoxFuture<'static, Result<Opened<Self>>> {
        let filter = match &from {
            Some(last) => resume_filter(&self.filter, last),
            None => self.filter.clone(),
        };
        let coll = self.coll.clone();
        let (batch_size, no_cursor_timeout) = (self.batch_size, self.no_cursor_timeout);
        let Some(stages) = &self.pipeline else {
            return async move {
                let find = coll
                    .find(filter)
                    .sort(doc! {"_id": 1})
                    .batch_size(batch_size)
                    .no_cursor_timeout(no_cursor_timeout);
                Ok((find.await?, None))
            }
            .boxed();
        };
        let mut pipeline = Vec::with_capacity(stages.len() + 1);
        if !filter.is_empty() {
            pipeline.push(doc! {"$match": filter});
        }
        pipeline.extend(stages.iter().cloned());
        let allow_disk_use = self.allow_disk_use;
        async move {
            let aggregate = coll
                .aggregate(pipeline)
                .allow_disk_use(allow_disk_use)
                .batch_size(batch_size);
            Ok((aggregate.await?, None))
        }
        .boxed()
    }

    fn poll_read(
        &mut self,
        cursor: &mut mongodb::Cursor<Document>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Read<Document, Bson>>> {
        Poll::Ready(match ready!(cursor.poll_next_unpin(cx)) {
            Some(Ok(doc)) => Ok(Read::Doc(doc)),
            Some(Err(e)) => Err(e.into()),
            None => Ok(Read::End),
        })
    }

    fn decode(&mut self, doc: Document, out: &mut VecDeque<Op>) -> Decoded<Bson> {
        let id = doc.get("_id").cloned();
        out.push_back(to_op(&self.ns, doc));
        Decoded::deliver(id)
    }

    fn classify(&self, e: Error, at: Option<&Bson>) -> Verdict {
        // A pipeline may rewrite `_id`: resuming after the last one read would not be exact.
        if self.pipeline.is_some() && at.is_some() {
            return Verdict::End(e);
        }
        Verdict::by_resumable(e)
    }

    fn scope(&self) -> String {
        self.ns.to_string()
    }

    /// A range's cursor may take long on a large batch and sees no no-ops: no stall watch.
    fn watches_stalls(&self) -> bool {
        false
    }

    /// Direct reads have no time order: seeks do not apply (and no control is exposed).
    fn seek(&mut self, _ts: Timestamp) -> Option<Bson> {
        None
    }
}

fn read_range(
    plan: &Plan,
    options: &DirectOptions,
    ns: Namespace,
    filter: Document,
    after: Option<Bson>,
) -> BoxStream<'static, Result<Op>> {
    let range = RangeRead {
        coll: plan.coll.clone(),
        ns,
        filter,
        pipeline: plan.pipeline.clone(),
        batch_size: plan.batch_size,
        allow_disk_use: options.allow_disk_use,
        no_cursor_timeout: options.no_cursor_timeout,
    };
    Engine::new(range, options.retry.clone(), Arc::new(Control::new(after))).boxed()
}

/// `range`, started once a permit of `in_flight` is free and holding it until it ends.
fn with_permit(
    in_flight: Arc<Semaphore>,
    range: BoxStream<'static, Result<Op>>,
) -> BoxStream<'static, Result<Op>> {
    stream::once(async move {
        // The semaphore is never closed; the permit lives as long as the range.
        let permit = in_flight.acquire_owned().await.ok();
        range.map(move |item| {
            let _held = &permit;
            item
        })
    })
    .flatten()
    .boxed()
}

fn read_namespace(
    client: Client,
    options: Arc<DirectOptions>,
    in_flight: Arc<Semaphore>,
    tracker: Option<Arc<Tracker>>,
    ns: Namespace,
) -> Counting {
    let key = ns.to_string();
    let progress = tracker.as_ref().and_then(|t| t.direct_progress(&key));
    if progress.as_ref().is_some_and(|p| p.finished) {
        return Counting::Planned(stream::empty().boxed(), None); // read before a restart
    }
    let known = progress
        .as_ref()
        .filter(|p| !p.ranges.is_empty())
        .map(|p| p.ranges.iter().map(|r| r.filter.clone()).collect());
    Counting::Planning(
        async move {
            let planned = {
                let _permit = in_flight.clone().acquire_owned().await;
                retry_transient(&options.retry, "direct read plan", || {
                    plan(&client, &options, &ns, known.clone())
                })
                .await
            };
            let plan = match planned {
                Ok(Some(plan)) => plan,
                Ok(None) => {
                    if let Some(t) = &tracker {
                        t.plan_direct(&key, &[]); // no such collection: nothing to read
                    }
                    return (stream::empty().boxed(), Some(0));
                }
                Err(e) => return (stream::once(async move { Err(e) }).boxed(), None),
            };
            let ranges = range_reads(&plan, &options, &ns, tracker, progress);
            let ranges = ranges
                .into_iter()
                .map(|r| with_permit(in_flight.clone(), r));
            (stream::select_all(ranges).boxed(), plan.count)
        }
        .boxed(),
    )
}

/// One namespace's read: planning (then its document count), then its ranges.
enum Counting {
    Planning(BoxFuture<'static, (BoxStream<'static, Result<Op>>, Option<u64>)>),
    Planned(BoxStream<'static, Result<Op>>, Option<u64>),
}

impl Counting {
    /// The read, reporting to `entry`: the count once planned, each document, the end.
    fn counted(self, entry: Arc<DirectEntry>) -> BoxStream<'static, Result<Op>> {
        let planned = match self {
            Counting::Planned(s, n) => futures::future::ready((s, n)).boxed(),
            Counting::Planning(f) => f,
        };
        let (counting, done) = (entry.clone(), entry);
        stream::once(planned.map(move |(reads, count)| {
            if let Some(n) = count {
                counting.total(n);
            }
            reads.inspect(move |op| {
                if op.is_ok() {
                    counting.read();
                }
            })
        }))
        .flatten()
        .chain(stream::once(async move { done.done() }).filter_map(|()| async { None }))
        .boxed()
    }
}

/// A stream per `_id` range of `plan` still to read. With a checkpoint, each range is a
/// lane of `tracker`: a range of `progress` (from before a restart) continues after its
/// last `_id` (from its start with a pipeline, which may rewrite `_id`s) unless finished.
fn range_reads(
    plan: &Plan,
    options: &DirectOptions,
    ns: &Namespace,
    tracker: Option<Arc<Tracker>>,
    progress: Option<DirectProgress>,
) -> Vec<BoxStream<'static, Result<Op>>> {
    let Some(tracker) = tracker else {
        return plan
            .filters
            .iter()
            .map(|f| read_range(plan, options, ns.clone(), f.clone(), None))
            .collect();
    };
    let key = ns.to_string();
    let resumed = progress.filter(|p| !p.ranges.is_empty());
    let lanes: Vec<(usize, Option<Bson>, bool)> = match &resumed {
        Some(p) => p
            .ranges
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let after = r.last_id.clone().filter(|_| plan.pipeline.is_none());
                let base = r.last_id.clone().map(Mark::Id);
                let lane = tracker.lane(lane_key(&key, index), base);
                (lane, after, r.finished)
            })
            .collect(),
        None => tracker
            .plan_direct(&key, &plan.filters)
            .into_iter()
            .map(|lane| (lane, None, false))
            .collect(),
    };
    let mut out = Vec::new();
    for (index, (lane, after, finished)) in lanes.into_iter().enumerate() {
        if finished {
            tracker.end(lane);
            continue;
        }
        let filter = plan.filters[index].clone();
        let range = read_range(plan, options, ns.clone(), filter, after);
        let tracked = Tracked::one(range, tracker.clone(), lane, lane_key(&key, index), None);
        out.push(tracked.boxed());
    }
    out
}

fn lane_key(ns: &str, index: usize) -> LaneKey {
    LaneKey::Range {
        ns: ns.to_owned(),
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_evenly_spaced_and_distinct() {
        let sample: Vec<Bson> = (0..90).map(Bson::Int32).collect();
        let b = pick_bounds(&sample, 9);
        assert_eq!(b, (1..9).map(|i| Bson::Int32(i * 10)).collect::<Vec<_>>());
        let dup: Vec<Bson> = vec![Bson::Int32(1); 10];
        assert_eq!(pick_bounds(&dup, 9), vec![Bson::Int32(1)]);
        assert!(pick_bounds(&sample, 1).is_empty());
        assert!(pick_bounds(&[], 9).is_empty());
    }

    #[test]
    fn resume_filters_cover_later_type_brackets() {
        assert_eq!(
            resume_filter(&doc! {}, &Bson::MaxKey),
            doc! {"_id": {"$gt": Bson::MaxKey}}
        );
        let f = resume_filter(&doc! {"_id": {"$gte": 5}}, &Bson::Int32(7));
        let later: Vec<&str> = TYPE_ORDER[3..]
            .iter()
            .flat_map(|a| a.iter().copied())
            .collect();
        assert_eq!(
            f,
            doc! {"$and": [{"_id": {"$gte": 5}}, {"$or": [{"_id": {"$gt": 7}}, {"_id": {"$type": later}}]}]}
        );
    }

    #[test]
    fn range_filters_partition() {
        let f = range_filters("number", &[Bson::Int32(10), Bson::Int32(20)]);
        assert_eq!(
            f,
            vec![
                doc! {"_id": {"$type": "number", "$lt": 10}},
                doc! {"_id": {"$gte": 10, "$lt": 20}},
                doc! {"_id": {"$gte": 20}},
                doc! {"_id": {"$not": {"$type": "number"}}},
            ]
        );
        let f = range_filters("string", &[]);
        assert_eq!(
            f,
            vec![
                doc! {"_id": {"$type": "string"}},
                doc! {"_id": {"$not": {"$type": "string"}}},
            ]
        );
        assert_eq!(
            upto_filter(&Bson::MinKey),
            doc! {"_id": {"$lte": Bson::MinKey}}
        );
        assert_eq!(
            upto_filter(&Bson::Int32(3)),
            doc! {"$or": [{"_id": {"$lte": 3}}, {"_id": {"$type": ["minKey", "null", "undefined"]}}]}
        );
    }
}
