//! Reply builders every command family shares: cursor replies written as raw BSON
//! (reference §3.1), cursor registration, and the replica-set fields of write replies
//! (reference §2.2, §8.2).

use bson::{doc, oid::ObjectId, DateTime, Document, RawDocumentBuf, Timestamp};

use super::Ctx;
use crate::engine::cursor::{Batch, CursorEntry, CursorSource, DEFAULT_FIRST_BATCH};
use crate::engine::Engine;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// Replica-set config version reported as `setVersion` (constant: keeps the driver's
/// stale-primary check happy, reference §2.5).
pub(crate) const SET_VERSION: i32 = 1;
/// The election term, constant (oplog `t`, `electionId`).
pub(crate) const TERM: i64 = 1;
/// `electionId` of the primary: `7fffffff` + the 8-byte big-endian term (reference §2.2).
pub(crate) fn election_id() -> ObjectId {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    bytes[4..].copy_from_slice(&TERM.to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// `{ts, t}` as replication reports optimes.
pub(crate) fn op_time(ts: Timestamp) -> Document {
    doc! { "ts": ts, "t": TERM }
}

/// A Timestamp's seconds as a Date (the `…WallTime`/`lastWriteDate` fields; second precision).
pub(crate) fn ts_date(ts: Timestamp) -> DateTime {
    DateTime::from_millis(i64::from(ts.time) * 1000)
}

/// Appends the undocumented replication fields of write replies, `opTime` and `electionId`
/// (SRV `write_commands.cpp` `serializeReply`).
pub(crate) fn append_repl_fields(ctx: &Ctx<'_>, reply: &mut Document, ts: Timestamp) {
    if ctx.shared.is_repl_set() {
        reply.insert("opTime", op_time(ts));
        reply.insert("electionId", election_id());
    }
}

pub(crate) fn encode(d: &Document) -> CmdResult<RawDocumentBuf> {
    RawDocumentBuf::from_document(d)
        .map_err(|e| CommandError::from_code(ErrorCode::BSONObjectTooLarge, e.to_string()))
}

/// Builds `{cursor: {firstBatch|nextBatch, <extras>, id, ns}}` (reference §3.1; extras such
/// as `postBatchResumeToken` precede `id` as in SRV `CursorResponseBuilder::done`) as raw
/// BSON: the batch's documents are copied, never decoded.
pub(crate) fn cursor_reply(
    first: bool,
    docs: Vec<RawDocumentBuf>,
    extras: Document,
    id: i64,
    ns: &str,
) -> CmdResult<RawDocumentBuf> {
    // Written by hand into one buffer: the documents are copied once, no per-element
    // allocation (reference §3.1 shape).
    let extras = if extras.is_empty() {
        None
    } else {
        Some(encode(&extras)?)
    };
    let docs_len: usize = docs.iter().map(|d| d.as_bytes().len() + 9).sum();
    let mut buf: Vec<u8> = Vec::with_capacity(docs_len + ns.len() + 96);
    buf.extend_from_slice(&[0; 4]); // reply length
    buf.push(0x03);
    buf.extend_from_slice(b"cursor\0");
    let cursor_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(0x04);
    buf.extend_from_slice(if first {
        b"firstBatch\0"
    } else {
        b"nextBatch\0"
    });
    let arr_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let mut key = itoa_buf();
    for (i, d) in docs.iter().enumerate() {
        buf.push(0x03);
        buf.extend_from_slice(key.format(i));
        buf.push(0);
        buf.extend_from_slice(d.as_bytes());
    }
    buf.push(0);
    patch_len(&mut buf, arr_at);
    if let Some(x) = &extras {
        let bytes = x.as_bytes();
        buf.extend_from_slice(&bytes[4..bytes.len() - 1]);
    }
    buf.push(0x12);
    buf.extend_from_slice(b"id\0");
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(0x02);
    buf.extend_from_slice(b"ns\0");
    buf.extend_from_slice(&((ns.len() + 1) as i32).to_le_bytes());
    buf.extend_from_slice(ns.as_bytes());
    buf.push(0);
    buf.push(0);
    patch_len(&mut buf, cursor_at);
    buf.push(0);
    patch_len(&mut buf, 0);
    RawDocumentBuf::from_bytes(buf)
        .map_err(|e| CommandError::from_code(ErrorCode::InternalError, e.to_string()))
}

/// Writes the length of the document starting at `at` (it ends at the buffer's end).
fn patch_len(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A small decimal formatter for array keys.
struct KeyBuf([u8; 20]);

fn itoa_buf() -> KeyBuf {
    KeyBuf([0; 20])
}

impl KeyBuf {
    fn format(&mut self, mut n: usize) -> &[u8] {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        &self.0[i..]
    }
}

/// Hands a raw reply body to the server layer (which appends `ok`, `$clusterTime`,
/// `operationTime`).
pub(crate) fn raw_reply(ctx: &mut Ctx<'_>, raw: RawDocumentBuf) -> CmdResult<Document> {
    ctx.raw_reply = Some(raw);
    Ok(Document::new())
}

/// Runs the first batch of `source` and registers it when it is not exhausted; returns the
/// reply. `batch_size`: `None` = default first batch (101 docs), `Some(0)` = empty.
pub(crate) fn open_cursor(
    ctx: &Ctx<'_>,
    engine: &mut Engine,
    ns: String,
    mut source: Box<dyn CursorSource>,
    batch_size: Option<usize>,
    single_batch: bool,
    no_timeout: bool,
) -> CmdResult<RawDocumentBuf> {
    let batch = match batch_size {
        Some(0) => Batch::default(),
        Some(n) => source.next_batch(engine, Some(n))?,
        None => source.next_batch(engine, Some(DEFAULT_FIRST_BATCH))?,
    };
    let extras = source.cursor_extras();
    let keep = !batch.exhausted && !single_batch;
    let id = if keep {
        let mut entry = CursorEntry::new(ns.clone(), source);
        entry.lsid = ctx.lsid.clone();
        entry.no_timeout = no_timeout;
        engine.cursors.register(entry)
    } else {
        0
    };
    cursor_reply(true, batch.docs, extras, id, &ns)
}
