use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::stream::{FusedStream, Stream};
use pin_project::pin_project;

use crate::error::Result;
use crate::op::{Namespace, Op, OpKind};

/// Stream for the [`filter_ns`](crate::OpStreamExt::filter_ns) method.
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct FilterNs<S, F> {
    #[pin]
    stream: S,
    predicate: F,
}

impl<S, F> FilterNs<S, F> {
    pub(crate) fn new(stream: S, predicate: F) -> Self {
        FilterNs { stream, predicate }
    }

    delegate_access_inner!(stream, S, ());
}

impl<S: fmt::Debug, F> fmt::Debug for FilterNs<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterNs")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<S, F> Stream for FilterNs<S, F>
where
    S: Stream<Item = Result<Op>>,
    F: FnMut(&Namespace, &OpKind) -> bool,
{
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(mut op)) if !(this.predicate)(&op.namespace, &op.kind) => op.ack(),
                other => return Poll::Ready(other),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.stream.size_hint().1)
    }
}

impl<S, F> FusedStream for FilterNs<S, F>
where
    S: FusedStream<Item = Result<Op>>,
    F: FnMut(&Namespace, &OpKind) -> bool,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
