//! Transactions in the oplog (reference §6): `applyOps` entries unwound into their inner
//! ops, large transactions written as several `partialTxn` entries and prepared ones
//! buffered until their commit (dropped on abort), and the `prevOpTime` chain of a commit
//! walked back, from the buffer or, when the stream started mid-transaction, from the oplog.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use bson::{doc, Bson, Document, Timestamp};

use super::entry::{malformed, Ctx, Rules};
use crate::error::{Error, Result};
use crate::op::{Op, Position};

/// Looks up an oplog entry by `ts` (to walk a transaction's `prevOpTime` chain).
pub(crate) trait Lookup: Sync {
    fn entry_at(&self, ts: Timestamp) -> impl Future<Output = Result<Option<Document>>> + Send;
}

/// Transaction key: the session id bytes and the transaction number.
type TxnKey = (Vec<u8>, i64);

/// Entries of a transaction that is not committed yet, by `ts`.
#[derive(Debug, Default)]
struct PendingTxn {
    entries: BTreeMap<Timestamp, Document>,
    ops: usize,
}

fn null_ts(ts: Timestamp) -> bool {
    ts.time == 0 && ts.increment == 0
}

/// The `ts` of the previous entry of the same transaction, if any.
pub(crate) fn prev_op_time(entry: &Document) -> Option<Timestamp> {
    let ts = entry
        .get_document("prevOpTime")
        .ok()?
        .get_timestamp("ts")
        .ok()?;
    (!null_ts(ts)).then_some(ts)
}

fn txn_key(entry: &Document) -> Option<TxnKey> {
    let lsid = entry.get_document("lsid").ok()?;
    let id = lsid.get("id").cloned().unwrap_or(Bson::Null);
    let txn = entry.get_i64("txnNumber").ok()?;
    let bytes = bson::to_vec(&doc! {"id": id}).ok()?;
    Some((bytes, txn))
}

fn apply_ops_len(entry: &Document) -> usize {
    entry
        .get_document("o")
        .and_then(|o| o.get_array("applyOps"))
        .map_or(0, |a| a.len())
}

fn is_apply_ops(entry: &Document) -> bool {
    entry
        .get_document("o")
        .is_ok_and(|o| o.contains_key("applyOps"))
}

/// Session fields of the entry that commits a transaction.
pub(crate) fn txn_ctx(commit: &Document, ts: Timestamp) -> Ctx {
    Ctx {
        ts,
        wall: commit.get_datetime("wall").ok().copied(),
        lsid: commit.get_document("lsid").ok().cloned(),
        txn_number: commit.get_i64("txnNumber").ok(),
        in_txn: true,
    }
}

/// The entries of transactions that are not committed yet, bounded in inner ops.
#[derive(Debug)]
pub(crate) struct Transactions {
    pending: HashMap<TxnKey, PendingTxn>,
    pending_ops: usize,
    max_pending: usize,
}

impl Transactions {
    pub(crate) fn new(max_pending: usize) -> Transactions {
        Transactions {
            pending: HashMap::new(),
            pending_ops: 0,
            max_pending,
        }
    }

    /// Inner ops buffered now.
    #[cfg(test)]
    pub(crate) fn pending_ops(&self) -> usize {
        self.pending_ops
    }

    /// Forgets every buffered entry (after a seek).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.pending_ops = 0;
    }

    /// Buffers a `partialTxn` or prepared `applyOps` entry until its commit.
    pub(crate) fn buffer(&mut self, ts: Timestamp, entry: Document) -> Result<()> {
        let key = txn_key(&entry)
            .ok_or_else(|| malformed(ts, "partialTxn/prepare applyOps without lsid/txnNumber"))?;
        let n = apply_ops_len(&entry);
        if self.pending_ops + n > self.max_pending {
            return Err(Error::TransactionTooLarge {
                limit: self.max_pending,
            });
        }
        let p = self.pending.entry(key).or_default();
        if p.entries.insert(ts, entry).is_none() {
            p.ops += n;
            self.pending_ops += n;
        }
        Ok(())
    }

    /// Drops the entries of the transaction `entry` aborts.
    pub(crate) fn abort(&mut self, entry: &Document) {
        if let Some(p) = txn_key(entry).and_then(|key| self.pending.remove(&key)) {
            self.pending_ops -= p.ops;
        }
    }

    /// Starts gathering the transaction `entry` commits (an `applyOps` with a
    /// `prevOpTime`, or a `commitTransaction`), taking its buffered entries.
    pub(crate) fn commit(&mut self, entry: Document, ts: Timestamp) -> Chain {
        let buffered = match txn_key(&entry) {
            Some(key) => self.pending.remove(&key).unwrap_or_default(),
            None => PendingTxn::default(),
        };
        self.pending_ops -= buffered.ops;
        let mut chain = Chain {
            ctx: txn_ctx(&entry, ts),
            prev: prev_op_time(&entry),
            entries: Vec::new(),
            ops: 0,
            buffered,
            max_pending: self.max_pending,
        };
        if is_apply_ops(&entry) {
            chain.ops += apply_ops_len(&entry);
            chain.entries.push(entry);
        }
        chain
    }
}

/// The `applyOps` entries of a committed transaction being gathered, newest first.
#[derive(Debug)]
pub(crate) struct Chain {
    ctx: Ctx,
    /// The next entry to gather.
    prev: Option<Timestamp>,
    entries: Vec<Document>,
    ops: usize,
    buffered: PendingTxn,
    max_pending: usize,
}

impl Chain {
    /// Takes the chain's entries from the buffer while it has them; `true` when the chain
    /// is complete.
    pub(crate) fn walk_buffer(&mut self) -> Result<bool> {
        while let Some(prev) = self.prev {
            let Some(entry) = self.buffered.entries.remove(&prev) else {
                return Ok(false);
            };
            self.push(entry)?;
        }
        Ok(true)
    }

    /// Completes the chain, reading from the oplog the entries the buffer lacks (the
    /// stream started in the middle of the transaction).
    pub(crate) async fn walk_oplog<L: Lookup>(mut self, lookup: &L) -> Result<Chain> {
        while let Some(prev) = self.prev {
            let entry = match self.buffered.entries.remove(&prev) {
                Some(entry) => entry,
                None => lookup
                    .entry_at(prev)
                    .await?
                    .ok_or_else(|| self.lost(prev))?,
            };
            self.push(entry)?;
        }
        Ok(self)
    }

    fn push(&mut self, entry: Document) -> Result<()> {
        self.ops += apply_ops_len(&entry);
        if self.ops > self.max_pending {
            return Err(Error::TransactionTooLarge {
                limit: self.max_pending,
            });
        }
        self.prev = prev_op_time(&entry);
        self.entries.push(entry);
        Ok(())
    }

    fn lost(&self, entry: Timestamp) -> Error {
        let ts = self.ctx.ts;
        Error::PositionLost {
            position: Position::Oplog(ts),
            code: 0,
            message: format!(
                "entry {entry} of the transaction committed at {ts} is no longer in the oplog"
            ),
        }
    }

    /// The ops of the (complete) transaction, all at the commit time.
    pub(crate) fn into_ops(mut self, rules: &Rules) -> Result<Vec<Op>> {
        self.entries.reverse();
        emit(rules, self.entries, &self.ctx)
    }
}

/// The ops of the committed transaction made of `entries` (oldest first).
pub(crate) fn emit(rules: &Rules, entries: Vec<Document>, ctx: &Ctx) -> Result<Vec<Op>> {
    let mut out = Vec::new();
    let mut index = 0u32;
    for mut entry in entries {
        let o = match entry.remove("o") {
            Some(Bson::Document(o)) => o,
            _ => return Err(malformed(ctx.ts, "applyOps entry without `o`")),
        };
        unwind(rules, o, ctx, &mut index, &mut out, 0)?;
    }
    Ok(out)
}

/// The inner ops of one `applyOps` object, nested ones included; `index` counts every op
/// of the transaction, the filtered-out ones too.
fn unwind(
    rules: &Rules,
    mut o: Document,
    ctx: &Ctx,
    index: &mut u32,
    out: &mut Vec<Op>,
    depth: usize,
) -> Result<()> {
    if depth > 16 {
        return Err(malformed(ctx.ts, "applyOps nested too deeply"));
    }
    let Some(Bson::Array(inner)) = o.remove("applyOps") else {
        return Err(malformed(ctx.ts, "`applyOps` is not an array"));
    };
    for op in inner {
        let Bson::Document(mut op) = op else {
            return Err(malformed(ctx.ts, "applyOps element is not a document"));
        };
        let nested = op.get_str("op") == Ok("c") && is_apply_ops(&op);
        if nested {
            let Some(Bson::Document(o)) = op.remove("o") else {
                return Err(malformed(ctx.ts, "nested applyOps without `o`"));
            };
            unwind(rules, o, ctx, index, out, depth + 1)?;
            continue;
        }
        let this = *index;
        *index += 1;
        if op.get_bool("fromMigrate").unwrap_or(false) {
            continue;
        }
        if let Some(op) = rules.decode_leaf(op, ctx, this)? {
            if rules.selects(&op) {
                out.push(op);
            }
        }
    }
    Ok(())
}
