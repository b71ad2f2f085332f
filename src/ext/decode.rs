use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bson::Document;
use futures::stream::{FusedStream, Stream};
use pin_project::pin_project;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::op::{Namespace, Op};

/// Decodes the document of `op` with `f`, or names the op in an [`Error::Decode`].
fn decode_op<T, F>(mut op: Op, f: F) -> Result<Op<T>>
where
    F: FnOnce(&Namespace, Document) -> std::result::Result<T, bson::de::Error>,
{
    let namespace = op.namespace.clone();
    let id = op.id.clone();
    let ack = op.take_ack();
    match op.try_map_data(|doc| f(&namespace, doc)) {
        Ok(mut op) => {
            op.ack = ack;
            Ok(op)
        }
        Err(source) => {
            // The op cannot be delivered: it is done with (acknowledged), the error names it.
            if let Some(ack) = ack {
                ack.ack();
            }
            Err(Error::Decode {
                namespace,
                id,
                source,
            })
        }
    }
}

/// Stream for the [`decode`](crate::OpStreamExt::decode) method.
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct Decode<S, T> {
    #[pin]
    stream: S,
    _target: PhantomData<fn() -> T>,
}

impl<S, T> Decode<S, T> {
    pub(crate) fn new(stream: S) -> Self {
        Decode {
            stream,
            _target: PhantomData,
        }
    }

    delegate_access_inner!(stream, S, ());
}

impl<S: fmt::Debug, T> fmt::Debug for Decode<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decode")
            .field("stream", &self.stream)
            .field("target", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, T> Stream for Decode<S, T>
where
    S: Stream<Item = Result<Op>>,
    T: DeserializeOwned,
{
    type Item = Result<Op<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(self.project().stream.poll_next(cx));
        Poll::Ready(item.map(|r| r.and_then(|op| decode_op(op, |_, doc| bson::from_document(doc)))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl<S, T> FusedStream for Decode<S, T>
where
    S: FusedStream<Item = Result<Op>>,
    T: DeserializeOwned,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}

/// Stream for the [`decode_with`](crate::OpStreamExt::decode_with) method.
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct DecodeWith<S, F> {
    #[pin]
    stream: S,
    decoder: F,
}

impl<S, F> DecodeWith<S, F> {
    pub(crate) fn new(stream: S, decoder: F) -> Self {
        DecodeWith { stream, decoder }
    }

    delegate_access_inner!(stream, S, ());
}

impl<S: fmt::Debug, F> fmt::Debug for DecodeWith<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeWith")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<S, F, T> Stream for DecodeWith<S, F>
where
    S: Stream<Item = Result<Op>>,
    F: FnMut(&Namespace, Document) -> std::result::Result<T, bson::de::Error>,
{
    type Item = Result<Op<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = ready!(this.stream.poll_next(cx));
        let decoder = this.decoder;
        Poll::Ready(item.map(|r| r.and_then(|op| decode_op(op, |ns, doc| decoder(ns, doc)))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl<S, F, T> FusedStream for DecodeWith<S, F>
where
    S: FusedStream<Item = Result<Op>>,
    F: FnMut(&Namespace, Document) -> std::result::Result<T, bson::de::Error>,
{
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
