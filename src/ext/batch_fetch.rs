use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::future::BoxFuture;
use futures::stream::{Fuse, FusedStream, FuturesUnordered, Stream, StreamExt, TryStreamExt};
use futures::FutureExt;
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use super::ordered::{Lane, Ordering, Sequencer};
use crate::error::{Error, Result};
use crate::op::{Namespace, Op};
use crate::ring::id_key_bytes;

/// Ops per batch unless configured otherwise (gtm's default).
pub const DEFAULT_BATCH_SIZE: usize = 50;
/// How long a batch waits for more ops after its first one, unless configured otherwise
/// (gtm's default).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(75);
/// `find` commands in flight at once unless configured otherwise (gtm's `WorkerCount`,
/// whose default is 1): four finds overlap their round trips, and finds that share a
/// document still run one after another (see [`BatchFetch::workers`]).
pub const DEFAULT_FETCH_WORKERS: usize = 4;

/// Fetches whole documents by `_id` for [`BatchFetch`].
///
/// Implemented by [`ClientFetcher`] (what [`batch_fetch`](crate::OpStreamExt::batch_fetch)
/// uses) and by every closure `Fn(Namespace, Vec<Bson>) -> BoxFuture<'static, Result<Vec<Document>>>`
/// (for [`batch_fetch_with`](crate::OpStreamExt::batch_fetch_with): tests, caches, other
/// stores).
pub trait Fetcher {
    /// Returns the documents of `namespace` whose `_id` is in `ids` (distinct, non-empty),
    /// in any order; a document that does not exist is simply absent.
    fn fetch(
        &self,
        namespace: Namespace,
        ids: Vec<Bson>,
    ) -> BoxFuture<'static, Result<Vec<Document>>>;
}

impl<F> Fetcher for F
where
    F: Fn(Namespace, Vec<Bson>) -> BoxFuture<'static, Result<Vec<Document>>>,
{
    fn fetch(
        &self,
        namespace: Namespace,
        ids: Vec<Bson>,
    ) -> BoxFuture<'static, Result<Vec<Document>>> {
        self(namespace, ids)
    }
}

/// The [`Fetcher`] of [`batch_fetch`](crate::OpStreamExt::batch_fetch): one
/// `find({_id: {$in: ids}})` on the op's collection, with the client's read preference
/// and read concern, batch size = number of ids. Failures are [`Error::Fetch`].
#[derive(Debug, Clone)]
pub struct ClientFetcher {
    client: mongodb::Client,
}

impl ClientFetcher {
    /// A fetcher reading through `client`.
    pub fn new(client: mongodb::Client) -> Self {
        ClientFetcher { client }
    }
}

impl Fetcher for ClientFetcher {
    fn fetch(
        &self,
        namespace: Namespace,
        ids: Vec<Bson>,
    ) -> BoxFuture<'static, Result<Vec<Document>>> {
        // Read raw and decoded with `Document::try_from`: the driver's serde decoding of a
        // `Document` costs about twice as much per document.
        let coll = self
            .client
            .database(namespace.db())
            .collection::<bson::RawDocumentBuf>(namespace.coll());
        async move {
            let batch_size = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            let fetched = async {
                let raw: Vec<bson::RawDocumentBuf> = coll
                    .find(doc! {"_id": {"$in": ids}})
                    .batch_size(batch_size)
                    .await?
                    .try_collect()
                    .await?;
                raw.iter()
                    .map(|d| Document::try_from(d.as_ref()).map_err(mongodb::error::Error::from))
                    .collect::<mongodb::error::Result<Vec<Document>>>()
            };
            fetched
                .await
                .map_err(|source| Error::Fetch { namespace, source })
        }
        .boxed()
    }
}

/// Stands in for a window too long to represent: about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// What the release queue holds: an op, an error from the input (no op), or an op with
/// the error of its failed fetch when it is the first op of that fetch (the error goes
/// out just before it).
struct Payload {
    op: Option<Op>,
    error: Option<Error>,
}

impl Payload {
    fn op(op: Op) -> Payload {
        Payload {
            op: Some(op),
            error: None,
        }
    }
}

/// An op of the open batch.
struct Waiting {
    seq: u64,
    key: Vec<u8>,
}

/// One `find` to run: the distinct ids of one namespace in one batch, and the ops
/// waiting for it (in arrival order).
struct Job {
    namespace: Namespace,
    ids: Vec<Bson>,
    /// The ids' keys ([`id_key_bytes`]).
    keys: HashSet<Vec<u8>>,
    waiting: Vec<Waiting>,
}

impl Job {
    /// Whether this find and one of `namespace` over `keys` share a document.
    fn overlaps(&self, namespace: &Namespace, keys: &HashSet<Vec<u8>>) -> bool {
        self.namespace == *namespace && !self.keys.is_disjoint(keys)
    }
}

/// A find in flight: its number, namespace and ids' keys.
type Running = (u64, Namespace, HashSet<Vec<u8>>);

/// A finished find: its number, the ops it was for, and what it found.
type Done = (u64, Vec<Waiting>, Result<Vec<Document>>);

/// Stream for the [`batch_fetch`](crate::OpStreamExt::batch_fetch) method.
///
/// Configure it before polling with [`workers`](BatchFetch::workers) and
/// [`ordered`](BatchFetch::ordered).
#[pin_project(project = BatchFetchProj)]
#[must_use = "streams do nothing unless polled"]
pub struct BatchFetch<S: Stream, F> {
    #[pin]
    stream: Fuse<S>,
    /// Armed when a batch starts; created once, then reset. Boxed so that the adapter
    /// is `Unpin` whenever the input is.
    deadline: Option<Pin<Box<Sleep>>>,
    fetcher: F,
    max_batch: usize,
    window: Duration,
    workers: usize,
    ordering: Ordering,
    /// Ops of the batch being collected, by namespace in order of first appearance.
    open: Vec<(Namespace, Vec<(Bson, Waiting)>)>,
    open_len: usize,
    /// Sealed finds not started yet (all workers busy).
    queued: VecDeque<Job>,
    in_flight: FuturesUnordered<BoxFuture<'static, Done>>,
    /// The finds in flight, to hold back a find that shares a document with one.
    running: Vec<Running>,
    /// The number of the next find started.
    next_find: u64,
    sequencer: Sequencer<Payload>,
    /// An op whose fetch error was just yielded; goes out next.
    stash: Option<Op>,
}

impl<S: Stream, F> BatchFetch<S, F> {
    pub(crate) fn new(stream: S, fetcher: F, max_batch: usize, window: Duration) -> Self {
        BatchFetch {
            stream: stream.fuse(),
            deadline: None,
            fetcher,
            max_batch,
            window,
            workers: DEFAULT_FETCH_WORKERS,
            ordering: Ordering::default(),
            open: Vec::new(),
            open_len: 0,
            queued: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            running: Vec::new(),
            next_find: 0,
            sequencer: Sequencer::default(),
            stash: None,
        }
    }

    /// At most `workers` `find` commands in flight at once (default
    /// [`DEFAULT_FETCH_WORKERS`], gtm's `WorkerCount`).
    ///
    /// Two finds that include the same document never run at once: a find waits until
    /// every earlier find sharing a document with it has finished (finds of other
    /// documents go past it). So the fetched documents of one document never go back in
    /// time, whatever the number of workers.
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
    /// let ops = (0..8).map(|i| Ok(Op::new(OpKind::Update, ns.clone(), Some(Bson::Int32(i)))));
    /// // Every find takes 100 ms.
    /// let fetcher = |_ns: Namespace, ids: Vec<Bson>| -> BoxFuture<'static, Result<Vec<Document>>> {
    ///     async move {
    ///         tokio::time::sleep(Duration::from_millis(100)).await;
    ///         Ok(ids.into_iter().map(|id| doc! {"_id": id}).collect())
    ///     }
    ///     .boxed()
    /// };
    /// let start = tokio::time::Instant::now();
    /// let out: Vec<Op> = stream::iter(ops)
    ///     .batch_fetch_with(fetcher, 2, Duration::from_millis(75))
    ///     .workers(4) // the four finds of two ids run at once
    ///     .try_collect()
    ///     .await?;
    /// assert_eq!(out.len(), 8);
    /// assert_eq!(start.elapsed(), Duration::from_millis(100));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Panics
    /// When `workers` is zero.
    #[track_caller]
    pub fn workers(mut self, workers: usize) -> Self {
        assert!(workers > 0, "batch_fetch: workers must be at least 1");
        self.workers = workers;
        self
    }

    /// The ordering to keep between ops while fetches run (default [`Ordering::Oplog`]);
    /// see [`Ordering`] for what each one allows.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bson::{doc, Bson, Document};
    /// use futures::{future::BoxFuture, stream, FutureExt, TryStreamExt};
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt, Ordering, Result};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> mongotail::Result<()> {
    /// let ns = Namespace::parse("shop.orders")?;
    /// let update = |id: i32| Ok(Op::new(OpKind::Update, ns.clone(), Some(Bson::Int32(id))));
    /// // Fetching document 1 takes a second, document 2 a millisecond.
    /// let fetcher = |_ns: Namespace, ids: Vec<Bson>| -> BoxFuture<'static, Result<Vec<Document>>> {
    ///     async move {
    ///         let slow = ids.contains(&Bson::Int32(1));
    ///         tokio::time::sleep(Duration::from_millis(if slow { 1000 } else { 1 })).await;
    ///         Ok(ids.into_iter().map(|id| doc! {"_id": id}).collect())
    ///     }
    ///     .boxed()
    /// };
    /// let order = |ordering| {
    ///     stream::iter(vec![update(1), update(2), update(1)])
    ///         .batch_fetch_with(fetcher, 1, Duration::from_millis(75))
    ///         .workers(2)
    ///         .ordered(ordering)
    ///         .map_ok(|op| op.id.and_then(|id| id.as_i32()))
    ///         .try_collect::<Vec<_>>()
    /// };
    /// // Per document: document 2 does not wait for document 1's slow fetch.
    /// assert_eq!(order(Ordering::Document).await?, [Some(2), Some(1), Some(1)]);
    /// // Total order: everything waits.
    /// assert_eq!(order(Ordering::Oplog).await?, [Some(1), Some(2), Some(1)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn ordered(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    delegate_access_inner!(stream, S, (.));

    /// Most ops held at once: `max_batch * (workers + 1)`. Input is not polled while
    /// this many are held.
    fn capacity(&self) -> usize {
        self.max_batch
            .saturating_mul(self.workers.saturating_add(1))
    }
}

impl<S: Stream + fmt::Debug, F> fmt::Debug for BatchFetch<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchFetch")
            .field("stream", &self.stream)
            .field("max_batch", &self.max_batch)
            .field("window", &self.window)
            .field("workers", &self.workers)
            .field("ordering", &self.ordering)
            .field("buffered", &self.open_len)
            .field("held", &self.sequencer.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl<S, F> Stream for BatchFetch<S, F>
where
    S: Stream<Item = Result<Op>>,
    F: Fetcher,
{
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let capacity = self.capacity();
        let mut this = self.project();
        if let Some(op) = this.stash.take() {
            return Poll::Ready(Some(Ok(op)));
        }
        loop {
            // 1. Whatever the ordering lets out.
            if let Some(Payload { op, error }) = this.sequencer.pop() {
                match (op, error) {
                    (Some(op), None) => return Poll::Ready(Some(Ok(op))),
                    (op, Some(e)) => {
                        *this.stash = op;
                        return Poll::Ready(Some(Err(e)));
                    }
                    // Never built.
                    (None, None) => continue,
                }
            }

            // 2. The open batch's deadline, checked against the clock on every turn so
            //    that a busy input (always ready) cannot hold a batch past its window.
            if *this.open_len > 0 {
                if let Some(deadline) = this.deadline {
                    if deadline.deadline() <= Instant::now() {
                        seal(this.open, this.open_len, this.queued);
                    }
                }
            }

            // 3. Start finds while workers are free; take in every finished one.
            if drive_fetches(&mut this, cx) {
                continue;
            }

            // 4. More input, while under capacity.
            if !this.stream.is_done() && this.sequencer.len() < capacity {
                match this.stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(op))) => {
                        let lane = this.ordering.lane(&op);
                        let fetch_id = if op.needs_fetch() {
                            op.id.clone()
                        } else {
                            None
                        };
                        let Some(id) = fetch_id else {
                            this.sequencer.push(lane, true, Payload::op(op));
                            continue;
                        };
                        buffer(&mut this, op, id, lane);
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // Fetch what is buffered now: those ops go out before the error.
                        seal(this.open, this.open_len, this.queued);
                        this.sequencer.push(
                            Lane::Barrier,
                            true,
                            Payload {
                                op: None,
                                error: Some(e),
                            },
                        );
                        continue;
                    }
                    Poll::Ready(None) => {
                        seal(this.open, this.open_len, this.queued);
                        continue;
                    }
                    Poll::Pending => {}
                }
            }

            // 5. Wait for the open batch's deadline (registers the waker).
            if *this.open_len > 0 {
                if let Some(deadline) = this.deadline {
                    if deadline.as_mut().poll(cx).is_ready() {
                        seal(this.open, this.open_len, this.queued);
                        continue;
                    }
                }
            }

            if this.stream.is_done()
                && this.sequencer.is_empty()
                && *this.open_len == 0
                && this.queued.is_empty()
                && this.in_flight.is_empty()
            {
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Fetch errors add items, filters nothing: no useful upper bound.
        (usize::from(self.stash.is_some()), None)
    }
}

impl<S, F> FusedStream for BatchFetch<S, F>
where
    S: Stream<Item = Result<Op>>,
    F: Fetcher,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_done()
            && self.stash.is_none()
            && self.sequencer.is_empty()
            && self.open_len == 0
            && self.queued.is_empty()
            && self.in_flight.is_empty()
    }
}

/// Closes the open batch: one job per namespace, ids deduplicated.
/// Starts finds while workers are free and takes in every finished one; `true` when one
/// finished (its ops may be releasable).
fn drive_fetches<S: Stream, F: Fetcher>(
    this: &mut BatchFetchProj<'_, S, F>,
    cx: &mut Context<'_>,
) -> bool {
    let mut finished = false;
    loop {
        while this.in_flight.len() < *this.workers {
            let Some(job) = next_startable(this.queued, this.running) else {
                break;
            };
            tracing::debug!(
                namespace = %job.namespace,
                ids = job.ids.len(),
                ops = job.waiting.len(),
                "batch_fetch: fetching"
            );
            let n = *this.next_find;
            *this.next_find += 1;
            let fetch = this.fetcher.fetch(job.namespace.clone(), job.ids);
            this.running.push((n, job.namespace, job.keys));
            let waiting = job.waiting;
            this.in_flight
                .push(async move { (n, waiting, fetch.await) }.boxed());
        }
        if this.in_flight.is_empty() {
            return finished;
        }
        match this.in_flight.poll_next_unpin(cx) {
            Poll::Ready(Some((n, waiting, result))) => {
                this.running.retain(|(m, _, _)| *m != n);
                apply(this.sequencer, waiting, result);
                finished = true;
            }
            _ => return finished,
        }
    }
}

/// Takes the first queued find that shares no document with a find in flight, nor with
/// a queued find before it (which must run first).
fn next_startable(queued: &mut VecDeque<Job>, running: &[Running]) -> Option<Job> {
    let mut held: Vec<&Job> = Vec::new();
    let at = queued.iter().position(|job| {
        let blocked = running.iter().any(|(_, ns, keys)| job.overlaps(ns, keys))
            || held.iter().any(|h| job.overlaps(&h.namespace, &h.keys));
        if blocked {
            held.push(job);
        }
        !blocked
    })?;
    queued.remove(at)
}

/// Puts an op whose document must be fetched into the open batch (arming the batch's
/// deadline when it is the first), sealing the batch when it is full.
fn buffer<S: Stream, F>(this: &mut BatchFetchProj<'_, S, F>, op: Op, id: Bson, lane: Lane) {
    let namespace = op.namespace.clone();
    let seq = this.sequencer.push(lane, false, Payload::op(op));
    if *this.open_len == 0 {
        let now = Instant::now();
        // A window too long to add (`Duration::MAX`) means "never".
        let at = now.checked_add(*this.window).unwrap_or(now + FAR_FUTURE);
        match this.deadline {
            Some(deadline) => deadline.as_mut().reset(at),
            None => *this.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
    let key = id_key_bytes(&id);
    let entry = (id, Waiting { seq, key });
    match this.open.iter_mut().find(|(ns, _)| *ns == namespace) {
        Some((_, ops)) => ops.push(entry),
        None => this.open.push((namespace, vec![entry])),
    }
    *this.open_len += 1;
    if *this.open_len >= *this.max_batch {
        seal(this.open, this.open_len, this.queued);
    }
}

fn seal(
    open: &mut Vec<(Namespace, Vec<(Bson, Waiting)>)>,
    open_len: &mut usize,
    queued: &mut VecDeque<Job>,
) {
    *open_len = 0;
    for (namespace, ops) in open.drain(..) {
        let mut ids = Vec::with_capacity(ops.len());
        let mut keys = HashSet::with_capacity(ops.len());
        let mut waiting = Vec::with_capacity(ops.len());
        for (id, w) in ops {
            if keys.insert(w.key.clone()) {
                ids.push(id);
            }
            waiting.push(w);
        }
        queued.push_back(Job {
            namespace,
            ids,
            keys,
            waiting,
        });
    }
}

/// Fills in the ops of a finished find and marks them ready.
fn apply(sequencer: &mut Sequencer<Payload>, waiting: Vec<Waiting>, result: Result<Vec<Document>>) {
    match result {
        Ok(docs) => {
            // key -> (document, ops still to serve): the last op takes it, the others clone.
            let mut found: HashMap<Vec<u8>, (Document, usize)> = docs
                .into_iter()
                .filter_map(|d| {
                    let key = id_key_bytes(d.get("_id")?);
                    Some((key, (d, 0)))
                })
                .collect();
            for w in &waiting {
                if let Some((_, uses)) = found.get_mut(&w.key) {
                    *uses += 1;
                }
            }
            for w in waiting {
                if let Some(Payload { op: Some(op), .. }) = sequencer.payload_mut(w.seq) {
                    let doc = match found.get_mut(&w.key) {
                        Some((_, uses)) if *uses > 1 => {
                            *uses -= 1;
                            found.get(&w.key).map(|(d, _)| d.clone())
                        }
                        Some(_) => found.remove(&w.key).map(|(d, _)| d),
                        None => None,
                    };
                    op.document_missing = doc.is_none();
                    op.data = doc;
                }
                sequencer.set_ready(w.seq);
            }
        }
        Err(error) => {
            // The error goes out just before the first op of the find; the ops go out
            // unfetched (`needs_fetch()` still true, `document_missing` false).
            let mut error = Some(error);
            for w in waiting {
                if let Some(payload) = sequencer.payload_mut(w.seq) {
                    if payload.error.is_none() {
                        payload.error = error.take();
                    }
                }
                sequencer.set_ready(w.seq);
            }
        }
    }
}
