//! The one resumable state machine under every source, as the driver's
//! `cursor/poll_state.rs` serves its cursors and change streams: [`Engine`] owns the
//! cursor, the position, retries with backoff, seek and pause requests and the delivery of
//! ops; a source only says how it opens a cursor from a position, decodes what the cursor
//! returns, and classifies errors ([`Resumable`]).
//!
//! States: `Closed` (no cursor) → `Starting` (first time: resolve the start point) or
//! `Opening` (from the position) → `Open` (reading; each item decoded into queued ops) →
//! back to `Closed` on a seek, an invalidate or a transient error (through `Waiting`, the
//! backoff), or `Done`. `LookingUp` parks the cursor while a decode reads more from the
//! server (an oplog transaction whose earlier entries are not buffered).
//!
//! The position is published for controls when every op decoded from a document has been
//! delivered, and a cursor is always re-opened from the published position, so a retry
//! neither loses nor repeats an op. Nothing shared with a control is locked while the
//! engine polls: requests are atomics, the position a value swapped under a short lock.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bson::Timestamp;
use futures::future::BoxFuture;
use futures::stream::{FusedStream, Stream};
use futures::task::AtomicWaker;
use tokio::time::Sleep;

use super::retry::{Attempts, RetryPolicy};
use super::stats::{Counters, SourceState};

/// `Stream` and `FusedStream` for a source type, delegated to its `$field` (an [`Engine`],
/// or any fused stream of ops).
macro_rules! delegate_stream {
    ($source:ty, $field:ident) => {
        impl ::futures::stream::Stream for $source {
            type Item = $crate::error::Result<$crate::op::Op>;

            fn poll_next(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<Option<Self::Item>> {
                ::futures::stream::StreamExt::poll_next_unpin(&mut self.$field, cx)
            }

            fn size_hint(&self) -> (usize, Option<usize>) {
                self.$field.size_hint()
            }
        }

        impl ::futures::stream::FusedStream for $source {
            fn is_terminated(&self) -> bool {
                self.$field.is_terminated()
            }
        }
    };
}

/// `pause`, `resume` and `is_paused` for a live source's control type, delegated to its
/// `control` field (a [`Control`]).
macro_rules! delegate_pause {
    ($control:ident) => {
        /// Stops the stream from reading until
        #[doc = concat!("[`", stringify!($control), "::resume`]:")]
        /// its next poll is pending (the cursor stays open; if the server times it out, it
        /// is re-opened from the position on resume).
        pub fn pause(&self) {
            self.control.pause();
        }

        /// Resumes after
        #[doc = concat!("[`", stringify!($control), "::pause`].")]
        pub fn resume(&self) {
            self.control.resume();
        }

        /// Whether the stream is paused.
        pub fn is_paused(&self) -> bool {
            self.control.is_paused()
        }
    };
}
use crate::error::{DisplayChain, Error, Result};
use crate::op::Op;

/// What a source tells the engine: how to open a cursor from a position, what a read of
/// the cursor means, how to decode it, and which errors are worth a retry.
pub(crate) trait Resumable: Send + Unpin + 'static {
    /// Where the source stands: an oplog `ts`, a change-stream token, the last `_id` read.
    type Pos: Clone + Send + Unpin + 'static;
    /// An open server cursor.
    type Cursor: Send + Unpin + 'static;
    /// One item the cursor returns (an oplog entry, a change event, a document).
    type Doc;

    /// Names the source in logs.
    const NAME: &'static str;

    /// Whether the cursor sees something at least every periodic no-op interval (entries,
    /// no-ops or empty batches), so that silence longer than [`RetryPolicy::stall_after`]
    /// means a stalled connection.
    fn watches_stalls(&self) -> bool {
        true
    }

    /// What the source reads, for logs: namespaces, or `*` for everything.
    fn scope(&self) -> String {
        "*".to_owned()
    }

    /// Resolves where to start, once, on the first poll (`None`: the cursor's own start,
    /// e.g. the oldest oplog entry or a change stream's "now").
    fn start(&mut self) -> BoxFuture<'static, Result<Option<Self::Pos>>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Opens a cursor after `from`; returns it with the position it reports, if any (a
    /// change stream's initial token).
    fn open(&mut self, from: Option<Self::Pos>) -> BoxFuture<'static, Result<Opened<Self>>>;

    /// Polls the cursor for its next item.
    fn poll_read(
        &mut self,
        cursor: &mut Self::Cursor,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Read<Self::Doc, Self::Pos>>>;

    /// Decodes one item, appending the ops it makes visible to `out` (nothing on error).
    fn decode(&mut self, doc: Self::Doc, out: &mut VecDeque<Op>) -> Decoded<Self::Pos>;

    /// Whether an error of starting, opening or reading is transient (retried from the
    /// position `at`) or ends the source; typed errors (a lost position) are made here.
    fn classify(&self, e: Error, at: Option<&Self::Pos>) -> Verdict;

    /// Where to continue after a seek to `ts` (forgetting what is half decoded), or `None`
    /// when the source has no time order and ignores seeks.
    fn seek(&mut self, ts: Timestamp) -> Option<Self::Pos>;
}

/// An opened cursor and the position it reports.
pub(crate) type Opened<S> = (<S as Resumable>::Cursor, Option<<S as Resumable>::Pos>);

/// One read of a cursor.
pub(crate) enum Read<D, P> {
    /// An item.
    Doc(D),
    /// An empty batch; the position it moved to (a post-batch resume token), if any.
    Idle(Option<P>),
    /// The server closed the cursor: open another from `pos` (or the position) `after` this
    /// long.
    Reopen { pos: Option<P>, after: Duration },
    /// Everything was read (direct reads).
    End,
}

/// What decoding one item did besides appending ops.
pub(crate) struct Decoded<P> {
    /// The position once the ops appended are delivered (`None`: unchanged).
    pub(crate) pos: Option<P>,
    pub(crate) then: Then,
}

/// What the engine does after a decode.
pub(crate) enum Then {
    /// Deliver the ops appended.
    Deliver,
    /// Deliver them, then re-open the cursor from the new position (a change stream after
    /// an invalidate).
    Reopen,
    /// Read more first (an oplog transaction whose earlier entries are not buffered); the
    /// ops it resolves to are delivered then.
    Lookup(BoxFuture<'static, Result<Vec<Op>>>),
    /// Yield this error: the source goes on after [`Error::Malformed`] (past the item),
    /// and ends after anything else.
    Fail(Error),
}

impl<P> Decoded<P> {
    /// Deliver the ops appended; then stand at `pos`.
    pub(crate) fn deliver(pos: Option<P>) -> Self {
        Decoded {
            pos,
            then: Then::Deliver,
        }
    }

    /// Yield `e` (see [`Then::Fail`]); stand at `pos` if the source goes on.
    pub(crate) fn fail(pos: Option<P>, e: Error) -> Self {
        Decoded {
            pos,
            then: Then::Fail(e),
        }
    }
}

/// What to do after an error of starting, opening or reading.
pub(crate) enum Verdict {
    /// Transient: retry from the position after a backoff, while the budget lasts.
    Retry(Error),
    /// Yield the error and end.
    End(Error),
}

impl Verdict {
    /// Retry what [`Error::is_resumable`] calls transient, end on anything else.
    pub(crate) fn by_resumable(e: Error) -> Verdict {
        if e.is_resumable() {
            Verdict::Retry(e)
        } else {
            Verdict::End(e)
        }
    }
}

const PAUSED: u8 = 1;
const SEEK: u8 = 2;

/// What an engine shares with the controls of its source (and a [`Handle`](crate::Handle)):
/// the published position, seek and pause requests, and the waker of a pending poll.
pub(crate) struct Control<P> {
    position: Mutex<Option<P>>,
    /// What the source reports through [`Handle::stats`](crate::Handle::stats).
    pub(crate) stats: Counters,
    requests: AtomicU8,
    /// The `ts` of the last seek request, `time << 32 | increment`.
    seek_to: AtomicU64,
    waker: AtomicWaker,
}

impl<P: Clone> Control<P> {
    /// A control whose position is known before the first poll (a change stream's token).
    pub(crate) fn new(position: Option<P>) -> Control<P> {
        Control {
            position: Mutex::new(position),
            stats: Counters::new(),
            requests: AtomicU8::new(0),
            seek_to: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<P>> {
        self.position.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The position of the last item fully delivered.
    pub(crate) fn position(&self) -> Option<P> {
        self.lock().clone()
    }

    fn with_position<R>(&self, f: impl FnOnce(Option<&P>) -> R) -> R {
        f(self.lock().as_ref())
    }

    fn publish(&self, pos: P) {
        let old = self.lock().replace(pos);
        drop(old); // outside the lock
    }

    /// Sets the position before the engine runs (a control made before its source).
    pub(crate) fn reset(&self, pos: P) {
        self.publish(pos);
    }

    /// Asks the engine to continue after `ts` on its next poll.
    pub(crate) fn seek(&self, ts: Timestamp) {
        let packed = (u64::from(ts.time) << 32) | u64::from(ts.increment);
        self.seek_to.store(packed, Ordering::Release);
        self.requests.fetch_or(SEEK, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Stops the engine from reading until [`Control::resume`]: its next poll is pending.
    pub(crate) fn pause(&self) {
        self.requests.fetch_or(PAUSED, Ordering::AcqRel);
    }

    /// Undoes [`Control::pause`] and wakes a pending poll.
    pub(crate) fn resume(&self) {
        self.requests.fetch_and(!PAUSED, Ordering::AcqRel);
        self.waker.wake();
    }

    fn has_requests(&self) -> bool {
        self.requests.load(Ordering::Acquire) != 0
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.requests.load(Ordering::Acquire) & PAUSED != 0
    }

    fn take_seek(&self) -> Option<Timestamp> {
        if self.requests.fetch_and(!SEEK, Ordering::AcqRel) & SEEK == 0 {
            return None;
        }
        let packed = self.seek_to.load(Ordering::Acquire);
        Some(Timestamp {
            time: (packed >> 32) as u32,
            increment: packed as u32,
        })
    }
}

impl<P: fmt::Debug> fmt::Debug for Control<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let position = self.position.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Control")
            .field("position", &*position)
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

enum State<S: Resumable> {
    /// No cursor: start (first time) or open one from the position on the next poll.
    Closed,
    Starting(BoxFuture<'static, Result<Option<S::Pos>>>),
    Opening(BoxFuture<'static, Result<Opened<S>>>),
    /// Boxed: driver cursors are large, and the other states small.
    Open(Box<S::Cursor>),
    /// The cursor waits while a decode reads more from the server.
    LookingUp {
        cursor: Box<S::Cursor>,
        lookup: BoxFuture<'static, Result<Vec<Op>>>,
        pos: Option<S::Pos>,
    },
    /// A backoff before a retry, or a pause before re-opening a closed cursor.
    Waiting(Pin<Box<Sleep>>),
    Done,
}

impl<S: Resumable> State<S> {
    fn name(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Starting(_) => "starting",
            State::Opening(_) => "opening",
            State::Open(_) => "open",
            State::LookingUp { .. } => "looking up",
            State::Waiting(_) => "waiting",
            State::Done => "done",
        }
    }
}

/// What one step of the state machine leads to (ops go out through the queue).
enum Flow {
    Continue,
    /// Yield this error, or end the stream (`None`).
    Yield(Option<Error>),
}

/// A [`Resumable`] source as a `Stream<Item = Result<Op>>`.
pub(crate) struct Engine<S: Resumable> {
    source: S,
    state: State<S>,
    started: bool,
    /// Ops decoded and not delivered yet.
    out: VecDeque<Op>,
    /// The position once `out` is delivered.
    next_pos: Option<S::Pos>,
    attempts: Attempts,
    control: Arc<Control<S::Pos>>,
    /// When the engine first ran, until a cursor opened (first contact made).
    first_run: Option<Instant>,
    contacted: bool,
    /// When the open cursor last gave anything, and the timer that checks it.
    last_read: Option<Instant>,
    stall_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// `source` and `ns` of every event this engine logs.
    span: tracing::Span,
}

impl<S: Resumable> Engine<S> {
    /// An engine over `source`, publishing to `control`; nothing runs before the first poll.
    pub(crate) fn new(source: S, retry: RetryPolicy, control: Arc<Control<S::Pos>>) -> Self {
        let span = tracing::warn_span!("mongotail", source = S::NAME, ns = %source.scope());
        #[cfg(feature = "metrics")]
        control.stats.instrument(S::NAME, source.scope());
        Engine {
            source,
            state: State::Closed,
            started: false,
            out: VecDeque::new(),
            next_pos: None,
            attempts: Attempts::new(retry),
            control,
            first_run: None,
            contacted: false,
            last_read: None,
            stall_timer: None,
            span,
        }
    }

    /// What the engine shares with the source's controls.
    pub(crate) fn control(&self) -> &Arc<Control<S::Pos>> {
        &self.control
    }

    /// Applies a pending seek; `Some(pending)` while paused. One atomic load when there is
    /// no request.
    fn requests(&mut self, cx: &mut Context<'_>) -> Option<Poll<Option<Result<Op>>>> {
        if !self.control.has_requests() {
            return None;
        }
        if let Some(ts) = self.control.take_seek() {
            self.seek(ts);
        }
        if !self.control.is_paused() {
            return None;
        }
        self.control.waker.register(cx.waker());
        // A resume between the check and the registration has woken no one: look again.
        self.control.is_paused().then_some(Poll::Pending)
    }

    fn seek(&mut self, ts: Timestamp) {
        if matches!(self.state, State::Done) {
            return;
        }
        let Some(pos) = self.source.seek(ts) else {
            return;
        };
        self.out.clear();
        self.next_pos = None;
        self.started = true;
        self.state = State::Closed; // drops the cursor and whatever was in flight
        self.control.publish(pos);
    }

    /// One transition; `Pending` only when a future or the cursor is.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Flow> {
        let flow = match &mut self.state {
            State::Done => Flow::Yield(None),
            State::Closed => {
                self.first_run.get_or_insert_with(Instant::now);
                self.state = if self.started {
                    State::Opening(self.source.open(self.control.position()))
                } else {
                    State::Starting(self.source.start())
                };
                Flow::Continue
            }
            State::Starting(start) => {
                let started = ready!(start.as_mut().poll(cx));
                self.started(started)
            }
            State::Opening(open) => {
                let opened = ready!(open.as_mut().poll(cx));
                self.opened(opened)
            }
            State::Open(cursor) => match self.source.poll_read(cursor, cx) {
                Poll::Ready(read) => {
                    self.last_read = Some(Instant::now());
                    self.read(read)
                }
                Poll::Pending if self.stalled(cx) => {
                    let after = self.attempts.policy().stall_after;
                    tracing::warn!(parent: &self.span, silent_for = ?after,
                        "no entry, no-op or empty batch: reconnecting from the position");
                    self.control.stats.error(&Error::Config(format!(
                        "stalled: nothing read for {after:?}, reconnected"
                    )));
                    self.state = State::Closed; // re-opens from the position
                    Flow::Continue
                }
                Poll::Pending => return Poll::Pending,
            },
            State::LookingUp { lookup, .. } => {
                let ops = ready!(lookup.as_mut().poll(cx));
                self.looked_up(ops)
            }
            State::Waiting(sleep) => {
                ready!(sleep.as_mut().poll(cx));
                self.state = State::Closed;
                Flow::Continue
            }
        };
        Poll::Ready(flow)
    }

    fn started(&mut self, start: Result<Option<S::Pos>>) -> Flow {
        match start {
            Ok(pos) => {
                self.started = true;
                if let Some(pos) = pos {
                    self.control.publish(pos);
                }
                self.state = State::Closed;
                Flow::Continue
            }
            Err(e) => self.failed(e),
        }
    }

    fn opened(&mut self, opened: Result<Opened<S>>) -> Flow {
        match opened {
            Ok((cursor, pos)) => {
                if let Some(pos) = pos {
                    self.control.publish(pos);
                }
                self.contacted = true;
                self.control.stats.set(SourceState::Live);
                self.state = State::Open(Box::new(cursor));
                Flow::Continue
            }
            Err(e) => self.failed(e),
        }
    }

    fn read(&mut self, read: Result<Read<S::Doc, S::Pos>>) -> Flow {
        match read {
            Ok(Read::Doc(doc)) => {
                self.attempts.reset();
                let decoded = self.source.decode(doc, &mut self.out);
                self.decoded(decoded)
            }
            Ok(Read::Idle(pos)) => {
                self.attempts.reset();
                self.deliver_then(pos);
                Flow::Continue
            }
            Ok(Read::Reopen { pos, after }) => {
                self.attempts.reset();
                self.deliver_then(pos);
                self.state = if after.is_zero() {
                    State::Closed
                } else {
                    State::Waiting(Box::pin(tokio::time::sleep(after)))
                };
                Flow::Continue
            }
            Ok(Read::End) => {
                self.control.stats.set(SourceState::Stopped);
                self.state = State::Done;
                Flow::Yield(None)
            }
            Err(e) => {
                self.state = State::Closed;
                self.failed(e)
            }
        }
    }

    fn decoded(&mut self, decoded: Decoded<S::Pos>) -> Flow {
        let Decoded { pos, then } = decoded;
        match then {
            Then::Deliver => self.deliver_then(pos),
            Then::Reopen => {
                self.deliver_then(pos);
                self.state = State::Closed;
            }
            Then::Lookup(lookup) => {
                if let State::Open(cursor) = std::mem::replace(&mut self.state, State::Done) {
                    self.state = State::LookingUp {
                        cursor,
                        lookup,
                        pos,
                    };
                }
            }
            Then::Fail(e) => return self.decode_failed(e, pos),
        }
        Flow::Continue
    }

    fn looked_up(&mut self, ops: Result<Vec<Op>>) -> Flow {
        let State::LookingUp { cursor, pos, .. } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Flow::Continue;
        };
        self.state = State::Open(cursor);
        match ops {
            Ok(ops) => {
                self.out.extend(ops);
                self.deliver_then(pos);
                Flow::Continue
            }
            Err(e) => self.decode_failed(e, pos),
        }
    }

    /// Stands at `pos` once the ops now queued are delivered.
    fn deliver_then(&mut self, pos: Option<S::Pos>) {
        let Some(pos) = pos else {
            return;
        };
        if self.out.is_empty() {
            self.control.publish(pos);
        } else {
            self.next_pos = Some(pos);
        }
    }

    /// A decode error: past a malformed item the source goes on, anything else ends it.
    fn decode_failed(&mut self, e: Error, pos: Option<S::Pos>) -> Flow {
        if matches!(e, Error::Malformed { .. }) {
            self.deliver_then(pos);
        } else {
            self.state = State::Done;
        }
        Flow::Yield(Some(e))
    }

    /// An error of starting, opening or reading: retried, or the end.
    fn failed(&mut self, e: Error) -> Flow {
        let control = &self.control;
        let verdict = control.with_position(|at| self.source.classify(e, at));
        let e = match verdict {
            Verdict::Retry(e) => match self.attempts.next_backoff() {
                Some(wait) if self.too_late_for_first_contact(wait) => {
                    Error::first_contact(self.attempts.policy().first_contact, e)
                }
                Some(wait) => {
                    tracing::warn!(
                        parent: &self.span,
                        error = %DisplayChain(&e),
                        attempt = self.attempts.failures(),
                        "retrying after a transient error"
                    );
                    self.control.stats.retry(&e);
                    self.state = State::Waiting(Box::pin(tokio::time::sleep(wait)));
                    return Flow::Continue;
                }
                None => e,
            },
            Verdict::End(e) if !self.contacted => {
                let after = self.first_run.map(|t| t.elapsed()).unwrap_or_default();
                Error::refused_at_first_contact(after, e)
            }
            Verdict::End(e) => e,
        };
        self.control.stats.error(&e);
        self.control.stats.set(SourceState::Stopped);
        self.state = State::Done;
        Flow::Yield(Some(e))
    }
}

impl<S: Resumable> Engine<S> {
    /// Whether the open cursor of a live source has given nothing for
    /// [`RetryPolicy::stall_after`]; arms a timer (woken then) when not. One timer per
    /// silent period: reads do not touch it, it re-arms for what is left when it fires.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.attempts.policy().stall_after;
        if limit.is_zero() || !self.source.watches_stalls() {
            return false;
        }
        if self.stall_timer.is_none() && tokio::runtime::Handle::try_current().is_err() {
            return false; // polled outside Tokio (a test executor): no timers
        }
        let last = *self.last_read.get_or_insert_with(Instant::now);
        loop {
            let timer = self.stall_timer.get_or_insert_with(|| {
                let left = limit.saturating_sub(last.elapsed());
                Box::pin(tokio::time::sleep(left))
            });
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.stall_timer = None;
            if last.elapsed() >= limit {
                self.last_read = None;
                return true;
            }
        }
    }

    /// Whether retrying after `wait` would go past the first-contact time of a source that
    /// has never reached the server.
    fn too_late_for_first_contact(&self, wait: Duration) -> bool {
        let limit = self.attempts.policy().first_contact;
        !self.contacted && self.first_run.is_some_and(|t| t.elapsed() + wait >= limit)
    }
}

impl<S: Resumable> Stream for Engine<S> {
    type Item = Result<Op>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(paused) = this.requests(cx) {
                return paused;
            }
            if let Some(op) = this.out.pop_front() {
                if this.out.is_empty() {
                    if let Some(pos) = this.next_pos.take() {
                        this.control.publish(pos);
                    }
                }
                this.control.stats.op(&op);
                return Poll::Ready(Some(Ok(op)));
            }
            match this.step(cx) {
                Poll::Ready(Flow::Continue) => {}
                Poll::Ready(Flow::Yield(error)) => return Poll::Ready(error.map(Err)),
                Poll::Pending => {
                    // Seek and resume wake this waker; a request made before it was
                    // registered is seen by looking again.
                    this.control.waker.register(cx.waker());
                    if !this.control.has_requests() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let queued = self.out.len();
        match self.state {
            State::Done => (queued, Some(queued)),
            _ => (queued, None),
        }
    }
}

impl<S: Resumable> FusedStream for Engine<S> {
    fn is_terminated(&self) -> bool {
        matches!(self.state, State::Done) && self.out.is_empty()
    }
}

impl<S: Resumable> fmt::Debug for Engine<S>
where
    S::Pos: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("source", &S::NAME)
            .field("state", &self.state.name())
            .field("queued", &self.out.len())
            .field("position", &self.control.position())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio_test::{assert_pending, assert_ready, task};

    use crate::op::{Namespace, OpKind};

    /// What a scripted cursor returns, in order; `Pending` once it runs out.
    type Script = VecDeque<Result<Read<u32, u32>>>;
    /// Where each cursor was opened from.
    type Opens = Arc<Mutex<Vec<Option<u32>>>>;

    /// A source whose cursors follow scripts, one per open, and whose item `n` decodes into
    /// `n % 10` ops standing at position `n` (99: malformed, 98: an error that ends).
    #[derive(Default)]
    struct Scripted {
        scripts: VecDeque<Script>,
        opened_from: Opens,
    }

    fn op(n: u32) -> Op {
        Op::new(
            OpKind::Insert,
            Namespace::parse("a.b").unwrap(),
            Some(bson::Bson::Int64(i64::from(n))),
        )
    }

    fn transient() -> Error {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        mongodb::error::Error::from(io).into()
    }

    impl Resumable for Scripted {
        type Pos = u32;
        type Cursor = Script;
        type Doc = u32;
        const NAME: &'static str = "scripted";

        fn open(&mut self, from: Option<u32>) -> BoxFuture<'static, Result<Opened<Self>>> {
            self.opened_from.lock().unwrap().push(from);
            let script = self.scripts.pop_front().unwrap_or_default();
            Box::pin(std::future::ready(Ok((script, None))))
        }

        fn poll_read(
            &mut self,
            c: &mut Script,
            _: &mut Context<'_>,
        ) -> Poll<Result<Read<u32, u32>>> {
            c.pop_front().map_or(Poll::Pending, Poll::Ready)
        }

        fn decode(&mut self, n: u32, out: &mut VecDeque<Op>) -> Decoded<u32> {
            let fail = |message: &str| Error::Malformed {
                what: "item".into(),
                message: message.into(),
            };
            match n {
                99 => Decoded::fail(Some(n), fail("bad")),
                98 => Decoded::fail(Some(n), Error::TransactionTooLarge { limit: 1 }),
                _ => {
                    out.extend((0..n % 10).map(|i| op(n * 10 + i)));
                    Decoded::deliver(Some(n))
                }
            }
        }

        fn classify(&self, e: Error, _: Option<&u32>) -> Verdict {
            Verdict::by_resumable(e)
        }

        fn seek(&mut self, ts: Timestamp) -> Option<u32> {
            Some(ts.increment)
        }
    }

    fn engine(scripts: Vec<Vec<Result<Read<u32, u32>>>>) -> (Engine<Scripted>, Opens) {
        let source = Scripted {
            scripts: scripts.into_iter().map(VecDeque::from).collect(),
            ..Scripted::default()
        };
        let opened_from = source.opened_from.clone();
        let retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 2);
        (
            Engine::new(source, retry, Arc::new(Control::new(None))),
            opened_from,
        )
    }

    fn id(item: Option<Result<Op>>) -> u32 {
        let op = item.expect("an item").expect("an op");
        op.id.and_then(|id| id.as_i64()).expect("an id") as u32
    }

    #[test]
    fn the_position_moves_once_every_op_of_an_item_is_delivered() {
        let (e, _) = engine(vec![vec![
            Ok(Read::Doc(2)),
            Ok(Read::Doc(10)),
            Ok(Read::Doc(1)),
        ]]);
        let mut e = task::spawn(e);
        assert_eq!(id(assert_ready!(e.poll_next())), 20);
        assert_eq!(e.control().position(), None);
        assert_eq!(id(assert_ready!(e.poll_next())), 21);
        assert_eq!(e.control().position(), Some(2));
        // Item 10 makes no op: its position is published at once, then item 1 comes.
        assert_eq!(id(assert_ready!(e.poll_next())), 10);
        assert_eq!(e.control().position(), Some(1));
        assert_pending!(e.poll_next());
        assert_eq!(e.size_hint(), (0, None));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_reopen_from_the_position_until_the_budget_is_spent() {
        let (mut e, opened_from) = engine(vec![
            vec![Ok(Read::Doc(1)), Err(transient())],
            vec![Err(transient())],
            vec![Ok(Read::Doc(2)), Ok(Read::Doc(2)), Err(transient())],
            vec![Err(transient())],
            vec![Err(transient())],
        ]);
        let start = tokio::time::Instant::now();
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(id(e.next().await));
        }
        // The server answered in between: the budget (2) starts again after item 2.
        assert_eq!(got, [10, 20, 21, 20, 21]);
        let err = e
            .next()
            .await
            .expect("the last error")
            .expect_err("an error");
        assert!(err.is_resumable());
        assert!(e.next().await.is_none() && e.is_terminated());
        assert_eq!(
            *opened_from.lock().unwrap(),
            [None, Some(1), Some(1), Some(2), Some(2)]
        );
        // Jittered backoffs of at least 50, 100, 50 and 100 ms (paused time).
        assert!(start.elapsed() >= Duration::from_millis(300), "backed off");
    }

    #[test]
    fn a_seek_drops_what_is_queued_and_reopens_after_the_target() {
        let (e, opened_from) = engine(vec![vec![Ok(Read::Doc(3))], vec![Ok(Read::Doc(1))]]);
        let mut e = task::spawn(e);
        assert_eq!(id(assert_ready!(e.poll_next())), 30);
        e.control().seek(Timestamp {
            time: 0,
            increment: 7,
        });
        assert_eq!(e.control().position(), None, "applied by the next poll");
        assert_eq!(id(assert_ready!(e.poll_next())), 10);
        assert_eq!(*opened_from.lock().unwrap(), [None, Some(7)]);
        assert_eq!(e.control().position(), Some(1));
    }

    #[test]
    fn seek_and_resume_wake_a_pending_poll_and_pause_holds_it() {
        let (e, _) = engine(vec![vec![], vec![Ok(Read::Doc(1))]]);
        let control = e.control().clone();
        let mut e = task::spawn(e);
        assert_pending!(e.poll_next());
        control.pause();
        assert!(!e.is_woken(), "pausing a pending stream needs no wake");
        control.seek(Timestamp {
            time: 0,
            increment: 4,
        });
        assert!(e.is_woken());
        assert_pending!(e.poll_next()); // paused: the seek waits
        assert_eq!(control.position(), Some(4), "the seek itself is applied");
        control.resume();
        assert!(e.is_woken());
        assert_eq!(id(assert_ready!(e.poll_next())), 10);
    }

    #[test]
    fn malformed_items_are_yielded_and_skipped_other_decode_errors_end() {
        let script = vec![
            Ok(Read::Doc(99)),
            Ok(Read::Doc(1)),
            Ok(Read::Doc(98)),
            Ok(Read::Doc(1)),
        ];
        let (e, _) = engine(vec![script]);
        let mut e = task::spawn(e);
        let malformed = assert_ready!(e.poll_next()).expect("an item");
        assert!(matches!(malformed, Err(Error::Malformed { .. })));
        assert_eq!(e.control().position(), Some(99), "past the malformed item");
        assert_eq!(id(assert_ready!(e.poll_next())), 10);
        let fatal = assert_ready!(e.poll_next()).expect("an item");
        assert!(matches!(fatal, Err(Error::TransactionTooLarge { .. })));
        assert!(assert_ready!(e.poll_next()).is_none());
        assert_eq!(e.control().position(), Some(1));
    }

    #[test]
    fn idle_batches_move_the_position_and_the_end_ends() {
        let (e, _) = engine(vec![vec![Ok(Read::Idle(Some(5))), Ok(Read::End)]]);
        let mut e = task::spawn(e);
        assert!(assert_ready!(e.poll_next()).is_none());
        assert_eq!(e.control().position(), Some(5));
        assert!(e.is_terminated());
        assert_eq!(e.size_hint(), (0, Some(0)));
    }
}
