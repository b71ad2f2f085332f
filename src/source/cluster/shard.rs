//! One shard's tail inside a cluster stream: its [`OplogStream`] and the ops read from it
//! but not released yet, with position marks between them.
//!
//! The oplog source publishes its position only once every op of an entry is delivered
//! (no-ops and filtered entries move it too), so the tail records it as a mark after the
//! ops it covers: once the merge has released every op before a mark, the shard's safe
//! resume point is that mark.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bson::Timestamp;
use futures::StreamExt;
use mongodb::Client;
use tokio::time::Sleep;

use super::merge::{Key, Lane, Watermark};
use crate::error::Error;
use crate::op::{Op, Position};
use crate::source::oplog::{OplogOptions, OplogStream};

/// When a removed shard's tail ends.
enum End {
    Never,
    /// Once it has read up to this `ts` (its removal, on the config server's clock), or
    /// when the grace period is over (the shard was shut down before its tail got there).
    After(Timestamp, Pin<Box<Sleep>>),
    /// Once it has read everything there is (removal seen without a time).
    WhenIdle,
}

/// One shard's tail.
pub(super) struct ShardTail {
    pub(super) id: String,
    /// `None` once the tail has ended.
    stream: Option<OplogStream>,
    buffer: VecDeque<Op>,
    /// Position marks: `(n, ts)`: every op of the entries up to `ts` is among the first
    /// `n` ops ever put in the buffer.
    marks: VecDeque<(u64, Timestamp)>,
    /// Ops ever put in the buffer, and ever taken out.
    pushed: u64,
    popped: u64,
    /// The largest `ts` put in the buffer (op or mark): the watermark.
    seen: Option<Timestamp>,
    /// The stream's position when last looked at.
    last_pos: Option<Timestamp>,
    /// The last mark released: the position to report.
    released: Option<Timestamp>,
    end: End,
}

impl fmt::Debug for ShardTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardTail")
            .field("id", &self.id)
            .field("ended", &self.stream.is_none())
            .field("buffered", &self.buffer.len())
            .field("seen", &self.seen)
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

impl ShardTail {
    /// A tail of `client`'s oplog (nothing is read before the first poll).
    pub(super) fn new(id: String, client: &Client, options: OplogOptions) -> ShardTail {
        ShardTail {
            id,
            stream: Some(OplogStream::new(client, options)),
            buffer: VecDeque::new(),
            marks: VecDeque::new(),
            pushed: 0,
            popped: 0,
            seen: None,
            last_pos: None,
            released: None,
            end: End::Never,
        }
    }

    /// Ends the tail once it has read up to `ts`, or after `grace` at the latest (`None`:
    /// once it has read everything).
    pub(super) fn end_after(&mut self, ts: Option<Timestamp>, grace: Duration) {
        self.end = match ts {
            Some(ts) => End::After(ts, Box::pin(tokio::time::sleep(grace))),
            None => End::WhenIdle,
        };
    }

    /// Whether the shard was removed from the cluster.
    pub(super) fn is_removed(&self) -> bool {
        !matches!(self.end, End::Never)
    }

    /// Whether a removed shard's tail is done: it has read up to its removal, or the grace
    /// period is over.
    fn removal_done(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.end {
            End::Never => false,
            End::WhenIdle => true,
            End::After(ts, _) if self.seen >= Some(*ts) => true,
            End::After(ts, grace) => {
                let over = grace.as_mut().poll(cx).is_ready();
                if over {
                    tracing::warn!(shard = %self.id, removed = ?ts, seen = ?self.seen,
                        "removed shard unreachable before its tail reached the removal: ending it");
                }
                over
            }
        }
    }

    /// Continues after `ts`: what is buffered goes, the oplog tail re-opens there.
    pub(super) fn seek(&mut self, ts: Timestamp) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        stream.control().seek(ts);
        self.buffer.clear();
        self.marks.clear();
        (self.pushed, self.popped) = (0, 0);
        (self.seen, self.last_pos) = (None, None);
    }

    /// Reads ops into the buffer until the stream is pending or `cap` ops are buffered.
    /// Returns an error of the stream (named after the shard), to be yielded.
    pub(super) fn fill(&mut self, cx: &mut Context<'_>, cap: usize) -> Option<Error> {
        while self.buffer.len() < cap {
            let stream = self.stream.as_mut()?;
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(mut op))) => {
                    op.position = Position::Shard {
                        shard: self.id.clone(),
                        ts: op.timestamp,
                    };
                    self.see(op.timestamp);
                    self.buffer.push_back(op);
                    self.pushed += 1;
                    self.mark();
                }
                Poll::Ready(Some(Err(e))) => {
                    self.mark();
                    if self.is_removed() {
                        // A removed shard may be shut down: its tail simply ends.
                        tracing::debug!(shard = %self.id, error = %e, "removed shard's tail ends");
                        self.stream = None;
                        return None;
                    }
                    return Some(self.name(e));
                }
                Poll::Ready(None) => {
                    self.mark();
                    self.stream = None;
                }
                Poll::Pending => {
                    self.mark();
                    if self.removal_done(cx) {
                        self.stream = None;
                    }
                    return None;
                }
            }
        }
        None
    }

    fn see(&mut self, ts: Timestamp) {
        if self.seen < Some(ts) {
            self.seen = Some(ts);
        }
    }

    /// Records a mark when the stream's position moved.
    fn mark(&mut self) {
        let pos = self.stream.as_ref().and_then(OplogStream::position);
        if let Some(pos) = pos.filter(|_| pos != self.last_pos) {
            self.last_pos = Some(pos);
            self.see(pos);
            self.marks.push_back((self.pushed, pos));
        }
    }

    /// A lost position names the shard.
    fn name(&self, e: Error) -> Error {
        match e {
            Error::PositionLost {
                position: Position::Oplog(ts),
                code,
                message,
            } => Error::PositionLost {
                position: Position::Shard {
                    shard: self.id.clone(),
                    ts,
                },
                code,
                message: format!("shard {}: {message}", self.id),
            },
            other => {
                tracing::warn!(shard = %self.id, error = %other, "shard tail error");
                other
            }
        }
    }

    /// Releases the marks at the head of the buffer; whether the position moved.
    pub(super) fn release_marks(&mut self) -> bool {
        let mut moved = false;
        while let Some(&(n, ts)) = self.marks.front() {
            if n > self.popped {
                break;
            }
            self.released = Some(ts);
            self.marks.pop_front();
            moved = true;
        }
        moved
    }

    /// The head op and the tail's watermark, as the merge sees them.
    pub(super) fn lane(&self) -> Lane {
        let head = self.buffer.front().map(key);
        let watermark = match self.stream {
            Some(_) => Watermark::At(self.seen),
            None => Watermark::Ended,
        };
        Lane { head, watermark }
    }

    /// Takes the head op (then call [`ShardTail::release_marks`]).
    pub(super) fn pop(&mut self) -> Option<Op> {
        let op = self.buffer.pop_front()?;
        self.popped += 1;
        Some(op)
    }

    /// The `ts` of the last entry all of whose ops were released.
    pub(super) fn position(&self) -> Option<Timestamp> {
        self.released
    }

    /// Ended, with nothing left to release.
    pub(super) fn is_finished(&self) -> bool {
        self.stream.is_none() && self.buffer.is_empty()
    }
}

fn key(op: &Op) -> Key {
    (op.timestamp, op.txn.as_ref().map_or(0, |t| t.index))
}
