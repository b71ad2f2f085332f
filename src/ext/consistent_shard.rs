use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::stream::{FusedStream, Stream};
use pin_project::pin_project;

use crate::error::Result;
use crate::op::Op;
use crate::ring::RingWorker;

/// Stream for the [`consistent_shard`](crate::OpStreamExt::consistent_shard) method.
#[pin_project]
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct ConsistentShard<S> {
    #[pin]
    stream: S,
    worker: RingWorker,
}

impl<S> ConsistentShard<S> {
    pub(crate) fn new(stream: S, worker: RingWorker) -> Self {
        ConsistentShard { stream, worker }
    }

    delegate_access_inner!(stream, S, ());

    /// The worker whose ops this stream keeps.
    pub fn worker(&self) -> &RingWorker {
        &self.worker
    }
}

impl<S> Stream for ConsistentShard<S>
where
    S: Stream<Item = Result<Op>>,
{
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(mut op)) if !this.worker.owns(&op) => op.ack(), // another worker's
                other => return Poll::Ready(other),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.stream.size_hint().1)
    }
}

impl<S> FusedStream for ConsistentShard<S>
where
    S: FusedStream<Item = Result<Op>>,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
