//! The cursor registry and the [`CursorSource`] trait every cursor kind implements
//! (plain finds, tailable capped/oplog scans, change streams), so `getMore` and
//! `killCursors` treat them alike (architecture contract §6).

use super::Engine;
use crate::error::CmdResult;
use bson::{Document, RawDocumentBuf};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A batch of documents is cut before it would exceed this many bytes (reference §3.2,
/// §8.5: 16 MiB of documents per batch); a batch always holds at least one document.
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Default number of documents in a first batch when `batchSize` is not given
/// (reference §3.2).
pub(crate) const DEFAULT_FIRST_BATCH: usize = 101;

/// Idle cursors are reaped after this long (`cursorTimeoutMillis`, default 10 minutes).
pub(crate) const CURSOR_TIMEOUT: Duration = Duration::from_secs(600);

/// One batch produced by a cursor source.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The documents, already encoded (served to the client without re-encoding).
    pub(crate) docs: Vec<RawDocumentBuf>,
    /// No more documents will ever come: the cursor is closed (`id: 0`).
    pub(crate) exhausted: bool,
}

/// Accumulates a batch under the document-count and byte limits.
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    batch: Batch,
    max_docs: usize,
    bytes: usize,
}

impl BatchBuilder {
    /// `max_docs` = 0 means no document-count limit.
    pub(crate) fn new(max_docs: usize) -> Self {
        Self {
            batch: Batch::default(),
            max_docs: if max_docs == 0 { usize::MAX } else { max_docs },
            bytes: 0,
        }
    }
    /// Whether another document of `len` bytes fits.
    pub(crate) fn fits(&self, len: usize) -> bool {
        if self.batch.docs.len() >= self.max_docs {
            return false;
        }
        self.batch.docs.is_empty() || self.bytes + len <= MAX_BATCH_BYTES
    }
    /// Whether the batch is full by count.
    pub(crate) fn full(&self) -> bool {
        self.batch.docs.len() >= self.max_docs
    }
    /// Appends a document (callers check [`fits`](Self::fits) first).
    pub(crate) fn push(&mut self, doc: RawDocumentBuf) {
        self.bytes += doc.as_bytes().len();
        self.batch.docs.push(doc);
    }
    /// Finishes the batch.
    pub(crate) fn finish(mut self, exhausted: bool) -> Batch {
        self.batch.exhausted = exhausted;
        self.batch
    }
}

/// A server-side cursor. Implemented by find cursors here and by change-stream cursors
/// (`commands/change_stream.rs`).
pub(crate) trait CursorSource: Send {
    /// Next batch of at most `batch_size` documents (`None` = no count limit, only the
    /// 16 MiB byte limit) given the engine state; `exhausted` when the cursor is done.
    fn next_batch(&mut self, engine: &mut Engine, batch_size: Option<usize>) -> CmdResult<Batch>;

    /// tailable + awaitData: an empty getMore waits (event-driven) for new oplog entries.
    fn awaits_data(&self) -> bool;

    /// A change-stream cursor: it outlives drops of its namespace (it reports them as
    /// `drop` / `invalidate` events, reference §5.5), so `kill_where` spares it.
    fn is_change_stream(&self) -> bool {
        false
    }

    /// Extra fields for the `cursor` sub-document of each reply (e.g. `postBatchResumeToken`).
    fn cursor_extras(&self) -> Document {
        Document::new()
    }
}

/// A registered cursor.
pub(crate) struct CursorEntry {
    /// `"<db>.<coll>"` as reported in replies; getMore's `collection` must match its coll part.
    pub(crate) ns: String,
    /// The producer of batches.
    pub(crate) source: Box<dyn CursorSource>,
    /// `lsid.id` of the session that opened it, if any.
    pub(crate) lsid: Option<Document>,
    /// `noCursorTimeout: true`.
    pub(crate) no_timeout: bool,
    last_used: Instant,
}

impl std::fmt::Debug for CursorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorEntry")
            .field("ns", &self.ns)
            .field("no_timeout", &self.no_timeout)
            .finish_non_exhaustive()
    }
}

impl CursorEntry {
    /// A new entry.
    pub(crate) fn new(ns: impl Into<String>, source: Box<dyn CursorSource>) -> Self {
        Self {
            ns: ns.into(),
            source,
            lsid: None,
            no_timeout: false,
            last_used: Instant::now(),
        }
    }
}

enum Slot {
    Idle(CursorEntry),
    /// Checked out by a running getMore; `killed` when killCursors ran meanwhile.
    InUse {
        ns: String,
        killed: bool,
        /// The session that opened the cursor (so killing the session kills it too).
        lsid: Option<Document>,
    },
}

/// All open cursors, by id (random positive Int64, contract §6).
#[derive(Default)]
pub(crate) struct CursorRegistry {
    slots: HashMap<i64, Slot>,
}

impl std::fmt::Debug for CursorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorRegistry")
            .field("open", &self.slots.len())
            .finish()
    }
}

/// Outcome of checking a cursor out.
#[derive(Debug)]
pub(crate) enum Checkout {
    /// The cursor, now owned by the caller until [`CursorRegistry::check_in`].
    Ok(CursorEntry),
    /// No such cursor (43 CursorNotFound).
    NotFound,
    /// Another operation is using it.
    InUse,
}

impl CursorRegistry {
    /// Registers a cursor and returns its new id.
    pub(crate) fn register(&mut self, entry: CursorEntry) -> i64 {
        self.reap_idle();
        loop {
            let id: i64 = rand::random::<i64>() & i64::MAX;
            if id != 0 && !self.slots.contains_key(&id) {
                self.slots.insert(id, Slot::Idle(entry));
                return id;
            }
        }
    }

    /// The namespace of a cursor, if it exists.
    pub(crate) fn ns(&self, id: i64) -> Option<&str> {
        match self.slots.get(&id)? {
            Slot::Idle(e) => Some(&e.ns),
            Slot::InUse { ns, .. } => Some(ns),
        }
    }

    /// Takes a cursor out for a getMore.
    pub(crate) fn check_out(&mut self, id: i64) -> Checkout {
        match self.slots.remove(&id) {
            None => Checkout::NotFound,
            Some(Slot::InUse { ns, killed, lsid }) => {
                self.slots.insert(id, Slot::InUse { ns, killed, lsid });
                Checkout::InUse
            }
            Some(Slot::Idle(e)) => {
                self.slots.insert(
                    id,
                    Slot::InUse {
                        ns: e.ns.clone(),
                        killed: false,
                        lsid: e.lsid.clone(),
                    },
                );
                Checkout::Ok(e)
            }
        }
    }

    /// Returns a checked-out cursor; returns false (and drops it) if it was killed meanwhile.
    pub(crate) fn check_in(&mut self, id: i64, mut entry: CursorEntry) -> bool {
        match self.slots.remove(&id) {
            Some(Slot::InUse { killed: false, .. }) => {
                entry.last_used = Instant::now();
                self.slots.insert(id, Slot::Idle(entry));
                true
            }
            _ => false,
        }
    }

    /// Forgets a checked-out cursor that is exhausted or failed.
    pub(crate) fn release(&mut self, id: i64) {
        self.slots.remove(&id);
    }

    /// killCursors: true if the cursor existed.
    pub(crate) fn kill(&mut self, id: i64) -> bool {
        match self.slots.get_mut(&id) {
            None => false,
            Some(Slot::Idle(_)) => {
                self.slots.remove(&id);
                true
            }
            Some(Slot::InUse { killed, .. }) => {
                *killed = true;
                true
            }
        }
    }

    /// Kills every cursor whose namespace satisfies `pred` (collection/database dropped).
    pub(crate) fn kill_where(&mut self, pred: impl Fn(&str) -> bool) {
        let ids: Vec<i64> = self
            .slots
            .iter()
            .filter(|(_, s)| match s {
                Slot::Idle(e) => pred(&e.ns) && !e.source.is_change_stream(),
                Slot::InUse { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.slots.remove(&id);
        }
    }

    /// Kills the cursors opened under a session that `select` picks by its `lsid`
    /// (killSessions & co., ended sessions; SRV `killCursorsWithMatchingSessions`): idle ones
    /// at once, checked-out ones when their getMore returns them. Cursors opened without a
    /// session are not touched.
    pub(crate) fn kill_sessions(&mut self, select: impl Fn(&Document) -> bool) {
        self.slots.retain(|_, s| match s {
            Slot::Idle(e) => !e.lsid.as_ref().is_some_and(&select),
            Slot::InUse { killed, lsid, .. } => {
                if lsid.as_ref().is_some_and(&select) {
                    *killed = true;
                }
                true
            }
        });
    }

    fn reap_idle(&mut self) {
        let now = Instant::now();
        self.slots.retain(|_, s| match s {
            Slot::Idle(e) => e.no_timeout || now.duration_since(e.last_used) < CURSOR_TIMEOUT,
            Slot::InUse { .. } => true,
        });
    }
}

/// A materialised result drained batch by batch.
#[derive(Debug)]
pub(crate) struct VecCursor {
    docs: VecDeque<RawDocumentBuf>,
}

impl VecCursor {
    /// A cursor over `docs`.
    pub(crate) fn new(docs: impl IntoIterator<Item = RawDocumentBuf>) -> Self {
        Self {
            docs: docs.into_iter().collect(),
        }
    }
}

impl CursorSource for VecCursor {
    fn next_batch(&mut self, _engine: &mut Engine, batch_size: Option<usize>) -> CmdResult<Batch> {
        let mut b = BatchBuilder::new(batch_size.unwrap_or(0));
        while let Some(d) = self.docs.front() {
            if !b.fits(d.as_bytes().len()) {
                break;
            }
            if let Some(d) = self.docs.pop_front() {
                b.push(d);
            }
        }
        let done = self.docs.is_empty();
        Ok(b.finish(done))
    }
    fn awaits_data(&self) -> bool {
        false
    }
}
