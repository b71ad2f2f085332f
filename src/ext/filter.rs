use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::stream::{FusedStream, Stream};
use pin_project::pin_project;

use crate::error::Result;
use crate::op::Op;

/// A boxed predicate on a whole op (gtm's `OpFilter`), for [`chain_filters`].
pub type OpFilter = Box<dyn FnMut(&Op) -> bool + Send>;

/// One predicate that accepts an op when every one of `filters` does (gtm's
/// `ChainOpFilters`); evaluated in order, stopping at the first that rejects. An empty
/// chain accepts everything.
///
/// ```
/// use futures::{stream, TryStreamExt};
/// use mongotail::ext::{chain_filters, OpFilter};
/// use mongotail::{Namespace, Op, OpKind, OpStreamExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mongotail::Result<()> {
/// let ns = Namespace::parse("shop.orders")?;
/// let ops = (0..6).map(|i| Ok(Op::new(OpKind::Insert, ns.clone(), Some(i.into()))));
/// let filters: Vec<OpFilter> = vec![
///     Box::new(|op: &Op| op.is_insert()),
///     Box::new(|op: &Op| op.id.as_ref().and_then(|id| id.as_i32()).is_some_and(|i| i % 2 == 0)),
/// ];
/// let ids: Vec<_> = stream::iter(ops)
///     .filter(chain_filters(filters))
///     .map_ok(|op| op.id)
///     .try_collect()
///     .await?;
/// assert_eq!(ids, [Some(0.into()), Some(2.into()), Some(4.into())]);
/// # Ok(())
/// # }
/// ```
pub fn chain_filters(
    filters: impl IntoIterator<Item = OpFilter>,
) -> impl FnMut(&Op) -> bool + Send {
    let mut filters: Vec<OpFilter> = filters.into_iter().collect();
    move |op: &Op| filters.iter_mut().all(|f| f(op))
}

/// Stream for the [`filter`](crate::OpStreamExt::filter) method.
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct Filter<S, F> {
    #[pin]
    stream: S,
    predicate: F,
}

impl<S, F> Filter<S, F> {
    pub(crate) fn new(stream: S, predicate: F) -> Self {
        Filter { stream, predicate }
    }

    delegate_access_inner!(stream, S, ());
}

impl<S: fmt::Debug, F> fmt::Debug for Filter<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<S, F> Stream for Filter<S, F>
where
    S: Stream<Item = Result<Op>>,
    F: FnMut(&Op) -> bool,
{
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(mut op)) if !(this.predicate)(&op) => op.ack(), // dropped: done with
                other => return Poll::Ready(other),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.stream.size_hint().1)
    }
}

impl<S, F> FusedStream for Filter<S, F>
where
    S: FusedStream<Item = Result<Op>>,
    F: FnMut(&Op) -> bool,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
