//! [`ThenConcurrent`]: an async function run on up to `limit` ops at once, with the output
//! order an [`Ordering`] guarantees.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{Fuse, FusedStream, FuturesUnordered, Stream, StreamExt};
use pin_project::pin_project;

use super::ordered::{Lane, Ordering, Sequencer};
use crate::error::Result;
use crate::op::Op;

/// Stream for the [`then_concurrent`](crate::OpStreamExt::then_concurrent) method.
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct ThenConcurrent<S, F, Fut>
where
    Fut: Future,
{
    #[pin]
    stream: Fuse<S>,
    f: F,
    limit: usize,
    ordering: Ordering,
    running: FuturesUnordered<Tagged<Fut>>,
    /// Every op taken from the input and not yet yielded: running (`None`) or done.
    held: Sequencer<Option<Result<Fut::Output>>>,
}

impl<S, F, Fut> ThenConcurrent<S, F, Fut>
where
    S: Stream,
    Fut: Future,
{
    pub(super) fn new(stream: S, limit: usize, f: F) -> Self {
        ThenConcurrent {
            stream: stream.fuse(),
            f,
            limit,
            ordering: Ordering::default(),
            running: FuturesUnordered::new(),
            held: Sequencer::default(),
        }
    }

    /// Sets the order the outputs keep (default [`Ordering::Oplog`]: input order).
    ///
    /// ```
    /// use futures::{stream, StreamExt};
    /// use mongotail::{Namespace, Op, OpKind, OpStreamExt, Ordering};
    ///
    /// # futures::executor::block_on(async {
    /// let ns = Namespace::parse("shop.orders").unwrap();
    /// let ops = (1..=3).map(|i| Ok(Op::new(OpKind::Insert, ns.clone(), Some(i.into()))));
    /// let done: Vec<_> = stream::iter(ops)
    ///     .then_concurrent(2, |op| async move { op.id })
    ///     .ordered(Ordering::Document)
    ///     .collect()
    ///     .await;
    /// assert_eq!(done.len(), 3);
    /// # });
    /// ```
    pub fn ordered(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Ops taken from the input and not yet yielded (running or waiting for their turn).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    delegate_access_inner!(stream, S, (.));
}

impl<S, F, Fut> std::fmt::Debug for ThenConcurrent<S, F, Fut>
where
    S: std::fmt::Debug,
    Fut: Future,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThenConcurrent")
            .field("stream", &self.stream)
            .field("limit", &self.limit)
            .field("ordering", &self.ordering)
            .field("running", &self.running.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl<S, F, Fut> Stream for ThenConcurrent<S, F, Fut>
where
    S: Stream<Item = Result<Op>>,
    F: FnMut(Op) -> Fut,
    Fut: Future,
{
    type Item = Result<Fut::Output>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            // Only ready items are released, and a ready item always has its output.
            if let Some(Some(out)) = this.held.pop() {
                return Poll::Ready(Some(out));
            }
            // Take input while there is room (everything held counts, so memory stays
            // bounded by `limit` however long one op blocks its successors).
            let mut took = false;
            while this.held.len() < *this.limit {
                match this.stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(op))) => {
                        let lane = this.ordering.lane(&op);
                        let seq = this.held.push(lane, false, None);
                        this.running.push(Tagged {
                            seq,
                            fut: (this.f)(op),
                        });
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // An error is a barrier: after everything before it, before the rest.
                        this.held.push(Lane::Barrier, true, Some(Err(e)));
                        took = true;
                        break;
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            if took {
                continue;
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((seq, out))) => {
                    if let Some(slot) = this.held.payload_mut(seq) {
                        *slot = Some(Ok(out));
                    }
                    this.held.set_ready(seq);
                }
                Poll::Ready(None) if this.stream.is_terminated() && this.held.is_empty() => {
                    return Poll::Ready(None);
                }
                // Nothing running: the input was polled above and is pending (or the room
                // is full of ready items, which the next turn releases).
                Poll::Ready(None) if !this.held.is_empty() => continue,
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (lo, hi) = self.stream.size_hint();
        let held = self.held.len();
        (
            lo.saturating_add(held),
            hi.and_then(|h| h.checked_add(held)),
        )
    }
}

impl<S, F, Fut> FusedStream for ThenConcurrent<S, F, Fut>
where
    S: Stream<Item = Result<Op>>,
    F: FnMut(Op) -> Fut,
    Fut: Future,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated() && self.held.is_empty()
    }
}

/// A running call with the number of its op.
#[pin_project]
struct Tagged<Fut> {
    seq: u64,
    #[pin]
    fut: Fut,
}

impl<Fut: Future> Future for Tagged<Fut> {
    type Output = (u64, Fut::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.fut.poll(cx).map(|out| (*this.seq, out))
    }
}
