//! Adapters on streams of ops: the [`OpStreamExt`] trait and the streams it returns.
//!
//! | gtm | mongotail |
//! |---|---|
//! | `NamespaceFilter` | [`filter_ns`](OpStreamExt::filter_ns) |
//! | `Filter`, `ChainOpFilters` | [`filter`](OpStreamExt::filter), [`chain_filters`] |
//! | fetching updates (`WorkerCount`, `BufferSize`, `BufferDuration`) | [`batch_fetch`](OpStreamExt::batch_fetch) + [`BatchFetch::workers`] |
//! | `Ordering` (`Oplog`, `Namespace`, `Document`, `AnyOrder`) | [`BatchFetch::ordered`] with [`Ordering`] |
//! | `consistent` package | [`consistent_shard`](OpStreamExt::consistent_shard) with a [`HashRing`](crate::HashRing) |
//! | `Unmarshal` | [`decode`](OpStreamExt::decode), [`decode_with`](OpStreamExt::decode_with) |
//!
//! Ordering is a setting of the two adapters that run work concurrently, [`BatchFetch`] and
//! [`ThenConcurrent`]; every other adapter keeps input order.
//!
//! Every adapter passes `Err` items through unchanged and in place, unless it says
//! otherwise. None of them spawns a task: the work they do (fetches) runs inside their
//! `poll_next`, so dropping the stream cancels it.

use std::time::Duration;

use bson::Document;
use futures::Stream;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::op::{Namespace, Op, OpKind};
use crate::ring::RingWorker;

#[macro_use]
mod delegate;

mod batch_fetch;
mod consistent_shard;
mod decode;
mod filter;
mod filter_ns;
mod ordered;
#[cfg(feature = "pipeline")]
mod pipeline;
mod then_concurrent;

pub use batch_fetch::{
    BatchFetch, ClientFetcher, Fetcher, DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW,
    DEFAULT_FETCH_WORKERS,
};
pub use consistent_shard::ConsistentShard;
pub use decode::{Decode, DecodeWith};
pub use filter::{chain_filters, Filter, OpFilter};
pub use filter_ns::FilterNs;
pub use ordered::Ordering;
#[cfg(feature = "pipeline")]
pub use pipeline::{Pipeline, PipelineByNs};
pub use then_concurrent::ThenConcurrent;

/// Adapters for every `Stream<Item = Result<Op>>` (gtm's filters, fetching, ordering,
/// sharding and unmarshalling).
///
/// `filter` shares its name with [`futures::StreamExt::filter`]: when both traits are in
/// scope, call it as `OpStreamExt::filter(stream, f)` (or import `futures::TryStreamExt`
/// instead, which has no `filter`).
pub trait OpStreamExt: Stream<Item = Result<Op>> {
    /// Keeps the ops whose namespace and kind satisfy `f` (gtm's `NamespaceFilter`).
    ///
    /// Cheap by construction: `f` sees only the namespace and kind, so put it first,
    /// before any adapter that does document work.
    ///
    /// 1. An op is yielded when `f(&op.namespace, &op.kind)` is `true`, dropped otherwise.
    /// 2. `Err` items pass through.
    ///
    /// ```
    /// use futures::{stream, TryStreamExt};
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mongotail::Result<()> {
    /// let op = |ns: &str, kind| Ok(Op::new(kind, Namespace::parse(ns).unwrap(), None));
    /// let ops = vec![
    ///     op("shop.orders", OpKind::Insert),
    ///     op("shop.audit", OpKind::Insert),
    ///     op("shop.orders", OpKind::Delete),
    /// ];
    /// let kept: Vec<Op> = stream::iter(ops)
    ///     .filter_ns(|ns, kind| ns.coll() == "orders" && *kind == OpKind::Insert)
    ///     .try_collect()
    ///     .await?;
    /// assert_eq!(kept.len(), 1);
    /// assert_eq!(kept[0].namespace.to_string(), "shop.orders");
    /// # Ok(())
    /// # }
    /// ```
    fn filter_ns<F>(self, f: F) -> FilterNs<Self, F>
    where
        F: FnMut(&Namespace, &OpKind) -> bool,
        Self: Sized,
    {
        FilterNs::new(self, f)
    }

    /// Keeps the ops that satisfy `f` (gtm's `Filter`). Chain calls, or combine several
    /// predicates with [`chain_filters`] (gtm's `ChainOpFilters`).
    ///
    /// 1. An op is yielded when `f(&op)` is `true`, dropped otherwise.
    /// 2. `Err` items pass through.
    ///
    /// ```
    /// use futures::{stream, TryStreamExt};
    /// use bson::doc;
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mongotail::Result<()> {
    /// let ns = Namespace::parse("shop.orders")?;
    /// let ops = (1..=4).map(|i| {
    ///     Ok(Op::new(OpKind::Insert, ns.clone(), Some(i.into())).with_data(doc! {"_id": i, "total": i * 10}))
    /// });
    /// let big: Vec<Op> = stream::iter(ops)
    ///     .filter(|op| op.data.as_ref().and_then(|d| d.get_i32("total").ok()) > Some(15))
    ///     .filter(|op| op.is_insert())
    ///     .try_collect()
    ///     .await?;
    /// assert_eq!(big.len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    fn filter<F>(self, f: F) -> Filter<Self, F>
    where
        F: FnMut(&Op) -> bool,
        Self: Sized,
    {
        Filter::new(self, f)
    }

    /// Fills in the document of updates that carry none ([`Op::needs_fetch`]: oplog
    /// updates without `update_data_as_delta`) with batched
    /// `find({_id: {$in: [...]}})` commands through `client` (gtm's fetching).
    ///
    /// `max_batch` and `window` bound a batch by size and by time (gtm defaults:
    /// [`DEFAULT_BATCH_SIZE`], [`DEFAULT_BATCH_WINDOW`]). Configure the returned
    /// stream with [`BatchFetch::workers`] (finds in flight at once) and
    /// [`BatchFetch::ordered`] (the [`Ordering`] kept while finds run).
    ///
    /// 1. An op that needs no fetch is ready at once; it goes out as soon as the
    ///    ordering allows.
    /// 2. An op that needs a fetch joins the open batch. The batch closes when it holds
    ///    `max_batch` ops, when `window` has passed since its first op, when the input
    ///    yields an `Err` and when the input ends (a partial batch is never left behind).
    /// 3. A closed batch becomes one `find` per namespace, with each distinct `_id` once;
    ///    every op on that `_id` gets the document found (the latest, for several updates
    ///    of one document). At most `workers` finds run at once; the others wait their turn.
    /// 4. When the document no longer exists, the op goes out with `data: None` and
    ///    `document_missing: true`.
    /// 5. When a find fails, its error ([`Error::Fetch`](crate::Error::Fetch)) is yielded
    ///    just before the first op of that find, and that find's ops go out unfetched
    ///    (`needs_fetch()` still true): nothing is dropped, and a consumer that stops at
    ///    the error has not yet seen (or checkpointed past) the ops it concerns.
    /// 6. An `Err` from the input goes out after every op received before it and before
    ///    every op received after it.
    /// 7. At most `max_batch * (workers + 1)` ops are held; the input is not polled while
    ///    that many are.
    ///
    /// # Panics
    /// When `max_batch` is zero.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use mongotail::ext::{DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW};
    /// use mongotail::{OpStreamExt, Ordering};
    ///
    /// # async fn run(client: mongodb::Client, source: impl futures::Stream<Item = mongotail::Result<mongotail::Op>>) -> mongotail::Result<()> {
    /// let mut ops = std::pin::pin!(source
    ///     .batch_fetch(client, DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WINDOW)
    ///     .workers(4)
    ///     .ordered(Ordering::Document));
    /// while let Some(op) = ops.try_next().await? {
    ///     println!("{} {:?}", op.namespace, op.data);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    fn batch_fetch(
        self,
        client: mongodb::Client,
        max_batch: usize,
        window: Duration,
    ) -> BatchFetch<Self, ClientFetcher>
    where
        Self: Sized,
    {
        assert!(max_batch > 0, "batch_fetch: max_batch must be at least 1");
        BatchFetch::new(self, ClientFetcher::new(client), max_batch, window)
    }

    /// [`batch_fetch`](OpStreamExt::batch_fetch) with a custom [`Fetcher`] (any
    /// `Fn(Namespace, Vec<Bson>) -> BoxFuture<'static, Result<Vec<Document>>>`): a cache, another
    /// store, or a fake in tests. Same rules as `batch_fetch`.
    ///
    /// # Panics
    /// When `max_batch` is zero.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bson::{doc, Bson, Document};
    /// use futures::{future::BoxFuture, stream, FutureExt, TryStreamExt};
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt, Result};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> mongotail::Result<()> {
    /// let ns = Namespace::parse("shop.orders")?;
    /// // Three updates (no document yet) and an insert; document 3 no longer exists.
    /// let ops = vec![
    ///     Ok(Op::new(OpKind::Update, ns.clone(), Some(Bson::Int32(1)))),
    ///     Ok(Op::new(OpKind::Insert, ns.clone(), Some(Bson::Int32(2))).with_data(doc! {"_id": 2})),
    ///     Ok(Op::new(OpKind::Update, ns.clone(), Some(Bson::Int32(1)))),
    ///     Ok(Op::new(OpKind::Update, ns.clone(), Some(Bson::Int32(3)))),
    /// ];
    /// let fetcher = |_ns: Namespace, ids: Vec<Bson>| -> BoxFuture<'static, Result<Vec<Document>>> {
    ///     async move {
    ///         assert_eq!(ids, [Bson::Int32(1), Bson::Int32(3)]); // one find, distinct ids
    ///         Ok(vec![doc! {"_id": 1, "status": "paid"}])
    ///     }
    ///     .boxed()
    /// };
    /// let out: Vec<Op> = stream::iter(ops)
    ///     .batch_fetch_with(fetcher, 50, Duration::from_millis(75))
    ///     .try_collect()
    ///     .await?;
    /// assert_eq!(out[0].data, Some(doc! {"_id": 1, "status": "paid"}));
    /// assert!(out[1].is_insert());
    /// assert_eq!(out[2].data, out[0].data);
    /// assert!(out[3].data.is_none() && out[3].document_missing);
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    fn batch_fetch_with<F>(
        self,
        fetcher: F,
        max_batch: usize,
        window: Duration,
    ) -> BatchFetch<Self, F>
    where
        F: Fetcher,
        Self: Sized,
    {
        assert!(max_batch > 0, "batch_fetch: max_batch must be at least 1");
        BatchFetch::new(self, fetcher, max_batch, window)
    }

    /// Keeps only the ops that `worker` owns in its consistent hash ring (gtm's
    /// `consistent` filter), so several processes can split one deployment's ops between
    /// them: run one per worker name, with the same ring.
    ///
    /// 1. An op is yielded when `worker` owns it: by its document id, by its namespace
    ///    when it has none (see [`HashRing`](crate::HashRing) for the hash); dropped otherwise.
    /// 2. `Err` items pass through (every worker sees them).
    ///
    /// An unknown worker name is an error from [`HashRing::worker`](crate::HashRing::worker),
    /// before any stream exists.
    ///
    /// ```
    /// use futures::{stream, TryStreamExt};
    /// use mongotail::{HashRing, Namespace, Op, OpKind, OpStreamExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mongotail::Result<()> {
    /// let ring = HashRing::from_toml_str(r#"workers = ["Tom", "Dick", "Harry"]"#)?;
    /// let ns = Namespace::parse("shop.orders")?;
    /// let ops = || stream::iter((0..300).map(|i| Ok(Op::new(OpKind::Insert, ns.clone(), Some(i.into())))));
    /// let mut total = 0;
    /// for name in ["Tom", "Dick", "Harry"] {
    ///     let mine: Vec<Op> = ops().consistent_shard(ring.worker(name)?).try_collect().await?;
    ///     assert!(mine.iter().all(|op| ring.owner(op) == name));
    ///     total += mine.len();
    /// }
    /// assert_eq!(total, 300); // every op seen by exactly one worker
    /// assert!(ring.worker("Jane").is_err());
    /// # Ok(())
    /// # }
    /// ```
    fn consistent_shard(self, worker: RingWorker) -> ConsistentShard<Self>
    where
        Self: Sized,
    {
        ConsistentShard::new(self, worker)
    }

    /// Decodes each op's document into `T` (gtm's `Unmarshal`), giving `Op<T>`.
    ///
    /// 1. An op with a document yields `Ok(Op<T>)` when it decodes, and
    ///    [`Error::Decode`](crate::Error::Decode) (with namespace and id) when it does
    ///    not; the stream goes on either way.
    /// 2. An op without a document (deletes, unfetched updates) yields `Ok` with `data: None`.
    /// 3. `Err` items pass through.
    ///
    /// ```
    /// use futures::{stream, StreamExt};
    /// use bson::doc;
    /// use mongotail::{Error, Namespace, Op, OpKind, OpStreamExt};
    ///
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// struct Order { total: i32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mongotail::Result<()> {
    /// let ns = Namespace::parse("shop.orders")?;
    /// let ops = vec![
    ///     Ok(Op::new(OpKind::Insert, ns.clone(), Some(1.into())).with_data(doc! {"_id": 1, "total": 5})),
    ///     Ok(Op::new(OpKind::Insert, ns.clone(), Some(2.into())).with_data(doc! {"_id": 2, "total": "x"})),
    ///     Ok(Op::new(OpKind::Delete, ns.clone(), Some(3.into()))),
    /// ];
    /// let out: Vec<_> = stream::iter(ops).decode::<Order>().collect().await;
    /// assert_eq!(out[0].as_ref().unwrap().data, Some(Order { total: 5 }));
    /// assert!(matches!(&out[1], Err(Error::Decode { id: Some(id), .. }) if *id == 2.into()));
    /// assert_eq!(out[2].as_ref().unwrap().data, None);
    /// # Ok(())
    /// # }
    /// ```
    fn decode<T>(self) -> Decode<Self, T>
    where
        T: DeserializeOwned,
        Self: Sized,
    {
        Decode::new(self)
    }

    /// Decodes each op's document with `f`, which sees the namespace: one function for
    /// several collections, each decoded into its own variant.
    ///
    /// Same rules as [`decode`](OpStreamExt::decode); `f` is called only for ops with a
    /// document, and its error becomes [`Error::Decode`](crate::Error::Decode).
    ///
    /// ```
    /// use futures::{stream, TryStreamExt};
    /// use bson::{doc, from_document};
    /// use serde::de::Error as _;
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt};
    ///
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// struct User { name: String }
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// struct Order { total: i32 }
    /// #[derive(Debug, PartialEq)]
    /// enum Doc { User(User), Order(Order) }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mongotail::Result<()> {
    /// let ops = vec![
    ///     Ok(Op::new(OpKind::Insert, Namespace::parse("app.users")?, None).with_data(doc! {"name": "ann"})),
    ///     Ok(Op::new(OpKind::Insert, Namespace::parse("app.orders")?, None).with_data(doc! {"total": 3})),
    /// ];
    /// let out: Vec<Op<Doc>> = stream::iter(ops)
    ///     .decode_with(|ns, doc| match ns.coll() {
    ///         "users" => from_document(doc).map(Doc::User),
    ///         "orders" => from_document(doc).map(Doc::Order),
    ///         other => Err(bson::de::Error::custom(format!("no type for {other}"))),
    ///     })
    ///     .try_collect()
    ///     .await?;
    /// assert_eq!(out[0].data, Some(Doc::User(User { name: "ann".into() })));
    /// assert_eq!(out[1].data, Some(Doc::Order(Order { total: 3 })));
    /// # Ok(())
    /// # }
    /// ```
    fn decode_with<T, F>(self, f: F) -> DecodeWith<Self, F>
    where
        F: FnMut(&Namespace, Document) -> std::result::Result<T, bson::de::Error>,
        Self: Sized,
    {
        DecodeWith::new(self, f)
    }

    /// Applies an aggregation pipeline to every op, as MongoDB applies a change stream's
    /// pipeline to every change event (gtm's `Pipe`), wherever the ops come from: the oplog,
    /// change streams, direct reads or a merged stream.
    ///
    /// Each op is viewed as the change event a server would emit for it: `_id` (its
    /// position), `operationType`, `clusterTime`, `wallTime`, `ns: {db, coll}`, `to`,
    /// `documentKey`, `fullDocument`, `updateDescription`, `txnNumber`, `lsid`. The stages a
    /// change stream permits are supported: `$match`, `$project`, `$addFields`/`$set`,
    /// `$unset`, `$replaceRoot`/`$replaceWith` and `$redact`, with the query and expression
    /// operators of the [`mql`] crate.
    ///
    /// 1. An op the stages drop (`$match`, `$redact`) is not yielded.
    /// 2. Otherwise the op is yielded with what the stages left of its `fullDocument`
    ///    (`data`), `updateDescription` (`update`) and `documentKey`; its kind, namespace,
    ///    times, source and position are kept, and other fields the stages add are not
    ///    carried.
    /// 3. An op whose evaluation fails (an expression error, or stages that change or remove
    ///    the event `_id`, which the server refuses with 280 `ChangeStreamFatalError`) is an
    ///    [`Error::Pipeline`](crate::Error::Pipeline) item and the stream goes on.
    /// 4. `Err` items pass through.
    ///
    /// Where to evaluate: a pipeline set on a change stream
    /// ([`ChangeStreamOptions::pipeline`](crate::ChangeStreamOptions::pipeline)) or a direct
    /// read ([`DirectOptions::pipeline`](crate::DirectOptions::pipeline)) runs on the server,
    /// which sends less; this adapter runs in the client, on any stream. The same text gives
    /// the same ops either way.
    ///
    /// # Errors
    /// An invalid pipeline is an [`Error::Pipeline`](crate::Error::Pipeline) here, before any
    /// op is read, with the server's code (40324 unknown stage, 20 a stage change streams do
    /// not permit, …).
    ///
    /// ```
    /// use bson::doc;
    /// use futures::{stream, TryStreamExt};
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt};
    ///
    /// # futures::executor::block_on(async {
    /// let users = Namespace::parse("shop.users")?;
    /// let ops = vec![
    ///     Ok(Op::new(OpKind::Insert, users.clone(), Some(1.into()))
    ///         .with_data(doc! {"_id": 1, "name": "ada", "password": "x"})),
    ///     Ok(Op::new(OpKind::Delete, users, Some(2.into()))),
    /// ];
    /// let out: Vec<Op> = stream::iter(ops)
    ///     .pipeline(&[
    ///         doc! {"$match": {"operationType": "insert"}},
    ///         doc! {"$project": {"fullDocument.password": 0}},
    ///     ])?
    ///     .try_collect()
    ///     .await?;
    /// assert_eq!(out.len(), 1);
    /// assert_eq!(out[0].data, Some(doc! {"_id": 1, "name": "ada"}));
    ///
    /// let bad = stream::iter(Vec::<mongotail::Result<Op>>::new()).pipeline(&[doc! {"$group": {"_id": 1}}]);
    /// assert_eq!(bad.unwrap_err().code(), Some(20));
    /// # Ok::<(), mongotail::Error>(())
    /// # }).unwrap();
    /// ```
    #[cfg(feature = "pipeline")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pipeline")))]
    fn pipeline(self, stages: &[Document]) -> Result<Pipeline<Self>>
    where
        Self: Sized,
    {
        Ok(Pipeline::new(self, pipeline::parse(stages)?))
    }

    /// [`pipeline`](OpStreamExt::pipeline) with a pipeline per namespace, as gtm's pipeline
    /// builder: `stages_for(ns)` is asked once per namespace (on its first op) and returns
    /// the stages for its ops, or `None` to let them through unchanged.
    ///
    /// 1. As [`pipeline`](OpStreamExt::pipeline), per namespace.
    /// 2. When a namespace's stages are invalid, each of its ops is an
    ///    [`Error::Pipeline`](crate::Error::Pipeline) item naming the namespace, and the
    ///    stream goes on.
    /// 3. Memory: one parsed pipeline per namespace seen.
    ///
    /// ```
    /// use bson::doc;
    /// use futures::{stream, StreamExt};
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt};
    ///
    /// # futures::executor::block_on(async {
    /// let op = |ns: &str| Ok(Op::new(OpKind::Insert, Namespace::parse(ns).unwrap(), Some(1.into()))
    ///     .with_data(doc! {"_id": 1, "card": "4111"}));
    /// let mut out = stream::iter(vec![op("shop.payments"), op("shop.users")])
    ///     .pipeline_by_ns(|ns: &Namespace| {
    ///         (ns.coll() == "payments").then(|| vec![doc! {"$unset": "fullDocument.card"}])
    ///     });
    /// assert_eq!(out.next().await.unwrap().unwrap().data, Some(doc! {"_id": 1}));
    /// assert_eq!(out.next().await.unwrap().unwrap().data, Some(doc! {"_id": 1, "card": "4111"}));
    /// # });
    /// ```
    #[cfg(feature = "pipeline")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pipeline")))]
    fn pipeline_by_ns<F>(self, stages_for: F) -> PipelineByNs<Self, F>
    where
        F: FnMut(&Namespace) -> Option<Vec<Document>>,
        Self: Sized,
    {
        PipelineByNs::new(self, stages_for)
    }

    /// Runs the async function `f` on up to `limit` ops at once (index into a search engine,
    /// call a web hook…) and yields its outputs in the order
    /// [`ThenConcurrent::ordered`] asks for (default [`Ordering::Oplog`]: input order) — what
    /// [`batch_fetch`](OpStreamExt::batch_fetch) does for fetching, for any work. The
    /// concurrent counterpart of `StreamExt::then`.
    ///
    /// 1. Every op is given to `f` exactly once, in input order; at most `limit` ops are
    ///    held at any time (running, or done and waiting for their turn), so memory is
    ///    bounded by `limit` outputs.
    /// 2. Each output is yielded as `Ok(output)` once the ordering lets it out (see
    ///    [`Ordering`]): per document, per namespace, in input order, or as soon as ready.
    /// 3. An `Err` item from the input is a barrier: it is yielded after the outputs of every
    ///    op received before it and before those of every op received after it.
    /// 4. Nothing is spawned: the futures run inside `poll_next`; dropping the stream
    ///    cancels them.
    ///
    /// # Panics
    /// When `limit` is 0.
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt, Ordering};
    ///
    /// #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// async fn main() {
    ///     let ns = Namespace::parse("shop.orders").unwrap();
    ///     // Document 1 is slow; per-document order lets the others overtake it.
    ///     let ops = [1, 2, 1, 3].map(|id| Ok(Op::new(OpKind::Update, ns.clone(), Some(id.into()))));
    ///     let done: Vec<i32> = stream::iter(ops)
    ///         .then_concurrent(4, |op| async move {
    ///             let id = op.id.and_then(|id| id.as_i32()).unwrap();
    ///             tokio::time::sleep(Duration::from_millis(if id == 1 { 50 } else { 1 })).await;
    ///             id
    ///         })
    ///         .ordered(Ordering::Document)
    ///         .map(|out| out.unwrap())
    ///         .collect()
    ///         .await;
    ///     assert_eq!(done, vec![2, 3, 1, 1]);
    /// }
    /// ```
    #[track_caller]
    fn then_concurrent<F, Fut>(self, limit: usize, f: F) -> ThenConcurrent<Self, F, Fut>
    where
        F: FnMut(Op) -> Fut,
        Fut: std::future::Future,
        Self: Sized,
    {
        assert!(limit > 0, "then_concurrent: limit must be at least 1");
        ThenConcurrent::new(self, limit, f)
    }
}

impl<S> OpStreamExt for S where S: Stream<Item = Result<Op>> {}
