//! Oplog entries into ops: the decoder dispatches each entry to the transaction machinery
//! ([`txn`](super::txn)) or decodes it as one op ([`entry`](super::entry)), keeping the
//! entries of uncommitted transactions between calls.

use std::collections::VecDeque;
use std::sync::Arc;

use bson::raw::RawDocument;
use bson::{DateTime, Document, Timestamp};

use super::entry::{malformed, ns_selected, Ctx, Leaf, Rules};
use super::txn::{emit, prev_op_time, txn_ctx, Chain, Transactions};
use crate::error::Result;
use crate::op::{Namespace, Op};

/// What a command entry does to transactions.
enum TxnEntry {
    /// A `partialTxn` or prepared `applyOps`: kept until its commit.
    Buffered,
    /// Any other `applyOps`: a transaction (or batched write) committed by this entry.
    Applied,
    /// `commitTransaction` of a prepared transaction.
    Commit,
    /// `abortTransaction`.
    Abort,
}

impl TxnEntry {
    /// What the `o` of an `op: "c"` entry is, when it is about transactions.
    fn of(o: &Document) -> Option<TxnEntry> {
        if o.contains_key("applyOps") {
            let partial = o.get_bool("partialTxn").unwrap_or(false);
            let prepare = o.get_bool("prepare").unwrap_or(false);
            return Some(if partial || prepare {
                TxnEntry::Buffered
            } else {
                TxnEntry::Applied
            });
        }
        if o.contains_key("commitTransaction") {
            return Some(TxnEntry::Commit);
        }
        o.contains_key("abortTransaction")
            .then_some(TxnEntry::Abort)
    }
}

/// Turns oplog entries into ops; keeps the entries of uncommitted transactions.
#[derive(Debug)]
pub(crate) struct Decoder {
    rules: Arc<Rules>,
    txns: Transactions,
}

impl Decoder {
    pub(crate) fn new(namespaces: Vec<Namespace>, as_delta: bool, max_pending: usize) -> Self {
        Decoder {
            rules: Arc::new(Rules {
                namespaces,
                as_delta,
            }),
            txns: Transactions::new(max_pending),
        }
    }

    /// The rules ops are decoded with (for a [`Chain`] completed elsewhere).
    pub(crate) fn rules(&self) -> Arc<Rules> {
        self.rules.clone()
    }

    /// Forgets buffered transaction entries (after a seek).
    pub(crate) fn clear(&mut self) {
        self.txns.clear();
    }

    /// Decodes one oplog entry and appends the ops it makes visible now to `out` (nothing
    /// on error). A transaction commit whose earlier entries are not buffered comes back as
    /// a [`Chain`] to complete from the oplog ([`Chain::walk_oplog`]).
    pub(crate) fn process_into(
        &mut self,
        entry: Document,
        out: &mut VecDeque<Op>,
    ) -> Result<Option<Chain>> {
        let ts = entry.get_timestamp("ts").map_err(|_| {
            malformed(
                Timestamp {
                    time: 0,
                    increment: 0,
                },
                "missing `ts`",
            )
        })?;
        if entry.get_bool("fromMigrate").unwrap_or(false) {
            return Ok(None);
        }
        let op = entry
            .get_str("op")
            .map_err(|_| malformed(ts, "missing `op`"))?;
        let o = entry
            .get_document("o")
            .map_err(|_| malformed(ts, "missing `o`"))?;
        if op == "c" {
            if let Some(kind) = TxnEntry::of(o) {
                return self.transaction(kind, entry, ts, out);
            }
        }
        let crud = matches!(op, "i" | "u" | "d");
        self.leaf(entry, ts, crud, out)?;
        Ok(None)
    }

    fn transaction(
        &mut self,
        kind: TxnEntry,
        entry: Document,
        ts: Timestamp,
        out: &mut VecDeque<Op>,
    ) -> Result<Option<Chain>> {
        match kind {
            TxnEntry::Buffered => self.txns.buffer(ts, entry)?,
            TxnEntry::Applied if prev_op_time(&entry).is_none() => {
                let ctx = txn_ctx(&entry, ts);
                out.extend(emit(&self.rules, vec![entry], &ctx)?);
            }
            TxnEntry::Applied | TxnEntry::Commit => {
                let mut chain = self.txns.commit(entry, ts);
                if !chain.walk_buffer()? {
                    return Ok(Some(chain));
                }
                out.extend(chain.into_ops(&self.rules)?);
            }
            TxnEntry::Abort => self.txns.abort(&entry),
        }
        Ok(None)
    }

    /// A CRUD or command entry outside transactions.
    fn leaf(
        &self,
        entry: Document,
        ts: Timestamp,
        crud: bool,
        out: &mut VecDeque<Op>,
    ) -> Result<()> {
        let ctx = Ctx::plain(ts, entry.get_datetime("wall").ok().copied());
        let namespaces = &self.rules.namespaces;
        if namespaces.is_empty() {
            // Everything is selected: no namespace check, the namespace is built once.
            out.extend(self.rules.decode_leaf(entry, &ctx, 0)?);
            return Ok(());
        }
        // Skip filtered-out CRUD entries before building anything.
        let ns = || Namespace::from_server_ns(entry.get_str("ns").unwrap_or(""));
        if crud && !ns_selected(namespaces, &ns()) {
            return Ok(());
        }
        out.extend(
            self.rules
                .decode_leaf(entry, &ctx, 0)?
                .filter(|op| self.rules.selects(op)),
        );
        Ok(())
    }
}

/// A plain CRUD entry (`op` `i`, `u` or `d`: most of an oplog), its fields read from
/// the raw bytes in one pass so that only `o` and `o2` become documents.
pub(crate) struct RawCrud<'a> {
    op: &'a str,
    ns: &'a str,
    o: &'a RawDocument,
    o2: Option<&'a RawDocument>,
    pub(crate) ts: Timestamp,
    wall: Option<DateTime>,
    from_migrate: bool,
}

impl<'a> RawCrud<'a> {
    /// The fields of `raw` when it is a well-formed CRUD entry; `None` for anything else
    /// (commands, no-ops, malformed entries), which goes the general way.
    pub(crate) fn read(raw: &'a RawDocument) -> Option<RawCrud<'a>> {
        let (mut op, mut ns, mut o, mut o2, mut ts) = (None, None, None, None, None);
        let (mut wall, mut from_migrate) = (None, false);
        for element in raw {
            let (key, value) = element.ok()?;
            match key {
                "op" => op = value.as_str(),
                "ns" => ns = value.as_str(),
                "o" => o = value.as_document(),
                "o2" => o2 = value.as_document(),
                "ts" => ts = value.as_timestamp(),
                "wall" => wall = value.as_datetime(),
                "fromMigrate" => from_migrate = value.as_bool() == Some(true),
                _ => {}
            }
        }
        let op = op.filter(|op| matches!(*op, "i" | "u" | "d"))?;
        Some(RawCrud {
            op,
            ns: ns.unwrap_or(""),
            o: o?,
            o2,
            ts: ts?,
            wall,
            from_migrate,
        })
    }
}

impl Decoder {
    /// Decodes a CRUD entry read raw: the same op as [`Decoder::process_into`] gives for
    /// the entry read whole (the tests check both ways), with less copying.
    pub(crate) fn process_crud(&self, crud: RawCrud<'_>, out: &mut VecDeque<Op>) -> Result<()> {
        if crud.from_migrate {
            return Ok(());
        }
        let namespace = Namespace::from_server_ns(crud.ns);
        if !ns_selected(&self.rules.namespaces, &namespace) {
            return Ok(());
        }
        let ts = crud.ts;
        let doc = |d: &RawDocument| {
            crate::source::raw::document(d).map_err(|e| malformed(ts, e.to_string()))
        };
        let leaf = Leaf {
            op: crud.op,
            namespace,
            o: doc(crud.o)?,
            o2: crud.o2.map(doc).transpose()?,
        };
        out.extend(self.rules.build(leaf, &Ctx::plain(ts, crud.wall), 0)?);
        Ok(())
    }
}

#[cfg(test)]
impl Decoder {
    /// Decodes one entry, completing a transaction from `lookup` when needed.
    pub(crate) async fn process<L: super::txn::Lookup>(
        &mut self,
        entry: Document,
        lookup: &L,
    ) -> Result<Vec<Op>> {
        let mut out = VecDeque::new();
        if let Some(chain) = self.process_into(entry, &mut out)? {
            out.extend(chain.walk_oplog(lookup).await?.into_ops(&self.rules)?);
        }
        Ok(out.into())
    }

    fn pending_ops(&self) -> usize {
        self.txns.pending_ops()
    }
}

#[cfg(test)]
mod tests {
    use super::super::txn::Lookup;
    use super::*;
    use crate::error::Error;
    use crate::op::{OpKind, Position};
    use bson::{doc, spec::BinarySubtype, Binary, Bson};

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 1_700_000_000,
            increment: i,
        }
    }

    /// A lookup over a fixed set of entries (the rest of the oplog).
    struct Entries(Vec<Document>);

    impl Lookup for Entries {
        async fn entry_at(&self, t: Timestamp) -> Result<Option<Document>> {
            Ok(self
                .0
                .iter()
                .find(|e| e.get_timestamp("ts").ok() == Some(t))
                .cloned())
        }
    }

    fn decode_all(entries: &[Document]) -> Vec<Op> {
        decode_with(Decoder::new(vec![], false, 1000), entries, &[])
    }

    fn decode_with(mut d: Decoder, entries: &[Document], rest: &[Document]) -> Vec<Op> {
        let lookup = Entries(rest.to_vec());
        let mut out = Vec::new();
        for e in entries {
            out.extend(futures::executor::block_on(d.process(e.clone(), &lookup)).unwrap());
        }
        out
    }

    fn lsid() -> Document {
        doc! {
            "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
            "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xe3; 32] },
        }
    }

    #[test]
    fn crud_entries() {
        let entries = [
            // 6.0+ insert with o2 (reference §4.3)
            doc! {"op": "i", "ns": "test.coll", "o": {"_id": 1, "a": 1}, "o2": {"_id": 1}, "ts": ts(1), "t": 1i64, "v": 2i64, "wall": bson::DateTime::from_millis(5)},
            doc! {"op": "u", "ns": "test.coll", "o": {"$v": 2, "diff": {"u": {"a": 2}}}, "o2": {"_id": 1}, "ts": ts(2)},
            doc! {"op": "u", "ns": "test.coll", "o": {"_id": 1, "x": "new"}, "o2": {"_id": 1}, "ts": ts(3)},
            doc! {"op": "d", "ns": "test.coll", "o": {"_id": 1}, "ts": ts(4)},
            doc! {"op": "n", "ns": "", "o": {"msg": "periodic noop"}, "ts": ts(5)},
            doc! {"op": "i", "ns": "test.coll", "o": {"_id": 2}, "ts": ts(6), "fromMigrate": true},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops.len(), 4);
        assert!(ops[0].is_insert() && ops[0].data == Some(doc! {"_id": 1, "a": 1}));
        assert_eq!(ops[0].wall_time, Some(bson::DateTime::from_millis(5)));
        assert!(ops[1].is_update() && ops[1].needs_fetch() && ops[1].data.is_none());
        assert_eq!(
            ops[1].update.as_ref().unwrap().updated_fields,
            doc! {"a": 2}
        );
        assert!(ops[2].is_replace() && ops[2].data == Some(doc! {"_id": 1, "x": "new"}));
        assert!(ops[3].is_delete() && ops[3].id == Some(Bson::Int32(1)));
        assert_eq!(ops[3].position, Position::Oplog(ts(4)));
        assert!(ops.iter().all(|o| o.is_source_oplog() && o.txn.is_none()));
    }

    #[test]
    fn four_four_format_entries() {
        // reference §4.3/§4.4: no `o2` on inserts, `$v: 1` updates, legacy `h`, Int32 `v`.
        let entries = [
            doc! {"op": "i", "ns": "test.coll", "o": {"_id": 1, "a": 1}, "ts": ts(1), "t": 1i64, "h": 0i64, "v": 2, "wall": bson::DateTime::from_millis(1)},
            doc! {"op": "u", "ns": "test.coll", "o": {"$v": 1, "$set": {"a": 2}}, "o2": {"_id": 1}, "ts": ts(2), "t": 1i64, "v": 2},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops[0].document_key, Some(doc! {"_id": 1}));
        assert_eq!(
            ops[1].update.as_ref().unwrap().updated_fields,
            doc! {"a": 2}
        );
    }

    #[test]
    fn other_commands_and_unknown_ops() {
        let entries = [
            doc! {"op": "c", "ns": "test.$cmd", "o": {"dropIndexes": "c", "index": "a_1"}, "o2": {"v": 2, "key": {"a": 1}, "name": "a_1"}, "ts": ts(1)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"collMod": "c", "validator": {}}, "ts": ts(2)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"startIndexBuild": "c", "indexBuildUUID": 1, "indexes": []}, "ts": ts(3)},
            doc! {"op": "xi", "ns": "test.c", "o": {"k": 1}, "ts": ts(4)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"create": "v", "viewOn": "c", "pipeline": []}, "ts": ts(5)},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops[0].kind, OpKind::Command("dropIndexes".into()));
        assert_eq!(ops[0].namespace.to_string(), "test.c");
        assert_eq!(ops[1].kind, OpKind::Command("collMod".into()));
        assert_eq!(ops[2].kind, OpKind::Command("startIndexBuild".into()));
        assert_eq!(ops[3].kind, OpKind::Other("xi".into()));
        assert_eq!(ops[4].kind, OpKind::Create);
        assert_eq!(
            ops[4].data.as_ref().unwrap().get_str("viewOn").unwrap(),
            "c"
        );
    }

    #[test]
    fn update_as_delta() {
        let o = doc! {"$v": 1, "$set": {"a": 1}};
        let e = doc! {"op": "u", "ns": "a.b", "o": o.clone(), "o2": {"_id": 1}, "ts": ts(1)};
        let ops = decode_with(Decoder::new(vec![], true, 10), &[e], &[]);
        assert_eq!(ops[0].data, Some(o.clone()));
        assert_eq!(ops[0].delta, Some(o));
        assert!(!ops[0].needs_fetch());
    }

    #[test]
    fn commands() {
        let entries = [
            doc! {"op": "c", "ns": "test.$cmd", "o": {"create": "c", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}, "ts": ts(1)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1"}, "ts": ts(2)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"renameCollection": "test.c", "to": "test.d", "stayTemp": false}, "ts": ts(3)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"drop": "d"}, "o2": {"numRecords": 3}, "ts": ts(4)},
            doc! {"op": "c", "ns": "test.$cmd", "o": {"dropDatabase": 1}, "ts": ts(5)},
        ];
        let ops = decode_all(&entries);
        assert_eq!(ops[0].kind, OpKind::Create);
        assert_eq!(ops[0].namespace.to_string(), "test.c");
        assert_eq!(ops[1].kind, OpKind::Command("createIndexes".into()));
        assert_eq!(
            ops[2].kind,
            OpKind::Rename {
                to: Namespace::parse("test.d").unwrap()
            }
        );
        assert_eq!(ops[2].namespace.to_string(), "test.c");
        assert!(ops[3].is_drop_collection() && ops[3].collection() == "d");
        assert!(ops[4].is_drop_database() && ops[4].namespace.to_string() == "test");
    }

    #[test]
    fn single_entry_transaction() {
        // reference §6
        let e = doc! {
            "lsid": lsid(), "txnNumber": 1i64, "op": "c", "ns": "admin.$cmd",
            "o": {"applyOps": [
                {"op": "i", "ns": "test.c", "o": {"_id": 1}},
                {"op": "u", "ns": "test.c", "o": {"$v": 2, "diff": {"u": {"a": 1}}}, "o2": {"_id": 2}},
                {"op": "i", "ns": "other.x", "o": {"_id": 3}},
            ]},
            "ts": ts(9), "t": 1i64, "v": 2i64, "wall": bson::DateTime::from_millis(1),
            "prevOpTime": {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64},
        };
        let ops = decode_with(
            Decoder::new(vec![Namespace::parse("test.c").unwrap()], false, 100),
            &[e],
            &[],
        );
        assert_eq!(ops.len(), 2);
        for (i, op) in ops.iter().enumerate() {
            let txn = op.txn.as_ref().unwrap();
            assert_eq!(txn.index, i as u32);
            assert_eq!(txn.txn_number, Some(1));
            assert_eq!(txn.lsid, Some(lsid()));
            assert_eq!(op.timestamp, ts(9));
        }
        assert!(ops[1].is_update());
    }

    #[test]
    fn batched_deletes_and_nested_apply_ops() {
        let e = doc! {
            "op": "c", "ns": "admin.$cmd",
            "o": {"applyOps": [
                {"op": "d", "ns": "t.c", "o": {"_id": 1}},
                {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [
                    {"op": "d", "ns": "t.c", "o": {"_id": 2}},
                ]}},
                {"op": "d", "ns": "t.c", "o": {"_id": 3}},
            ]},
            "ts": ts(4),
        };
        let ops = decode_all(&[e]);
        let ids: Vec<_> = ops.iter().map(|o| o.id.clone().unwrap()).collect();
        assert_eq!(ids, vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]);
        let txn = ops[2].txn.as_ref().unwrap();
        assert_eq!(
            (txn.lsid.is_none(), txn.txn_number, txn.index),
            (true, None, 2)
        );
    }

    fn partial(i: u32, prev: u32, ids: &[i32]) -> Document {
        let ops: Vec<Bson> = ids
            .iter()
            .map(|id| Bson::Document(doc! {"op": "i", "ns": "t.c", "o": {"_id": *id}}))
            .collect();
        doc! {
            "lsid": lsid(), "txnNumber": 5i64, "op": "c", "ns": "admin.$cmd",
            "o": {"applyOps": ops, "partialTxn": true},
            "ts": ts(i), "prevOpTime": {"ts": Timestamp { time: if prev == 0 { 0 } else { 1_700_000_000 }, increment: prev }, "t": 1i64},
        }
    }

    fn commit_entry(i: u32, prev: u32, ids: &[i32], total: i32) -> Document {
        let mut e = partial(i, prev, ids);
        let o = e.get_document_mut("o").unwrap();
        o.remove("partialTxn");
        o.insert("count", total);
        e
    }

    #[test]
    fn large_transaction() {
        let interleaved = doc! {"op": "i", "ns": "t.c", "o": {"_id": 100}, "ts": ts(2)};
        let entries = [
            partial(1, 0, &[1, 2]),
            interleaved,
            partial(3, 1, &[3]),
            commit_entry(4, 3, &[4], 4),
        ];
        let ops = decode_all(&entries);
        let ids: Vec<_> = ops.iter().map(|o| o.id.clone().unwrap()).collect();
        let want: Vec<Bson> = [100, 1, 2, 3, 4].into_iter().map(Bson::Int32).collect();
        assert_eq!(ids, want);
        assert!(ops[1..].iter().all(|o| o.timestamp == ts(4)));
        let idx: Vec<u32> = ops[1..]
            .iter()
            .map(|o| o.txn.as_ref().unwrap().index)
            .collect();
        assert_eq!(idx, vec![0, 1, 2, 3]);
    }

    #[test]
    fn large_transaction_started_mid_chain_fetches_earlier_entries() {
        let first = partial(1, 0, &[1]);
        let ops = decode_with(
            Decoder::new(vec![], false, 100),
            &[partial(2, 1, &[2]), commit_entry(3, 2, &[3], 3)],
            &[first],
        );
        let ids: Vec<_> = ops.iter().map(|o| o.id.clone().unwrap()).collect();
        assert_eq!(ids, vec![Bson::Int32(1), Bson::Int32(2), Bson::Int32(3)]);
    }

    #[test]
    fn lost_transaction_entry_is_position_lost() {
        let mut d = Decoder::new(vec![], false, 100);
        let r =
            futures::executor::block_on(d.process(commit_entry(3, 2, &[3], 3), &Entries(vec![])));
        assert!(matches!(r, Err(Error::PositionLost { .. })));
    }

    fn prepare(i: u32, ids: &[i32]) -> Document {
        let mut e = partial(i, 0, ids);
        let o = e.get_document_mut("o").unwrap();
        o.remove("partialTxn");
        o.insert("prepare", true);
        e
    }

    #[test]
    fn prepared_transactions_commit_and_abort() {
        let commit = doc! {
            "lsid": lsid(), "txnNumber": 5i64, "op": "c", "ns": "admin.$cmd",
            "o": {"commitTransaction": 1, "commitTimestamp": ts(6)},
            "ts": ts(7), "prevOpTime": {"ts": ts(5), "t": 1i64},
        };
        let abort = doc! {
            "lsid": lsid(), "txnNumber": 5i64, "op": "c", "ns": "admin.$cmd",
            "o": {"abortTransaction": 1}, "ts": ts(7), "prevOpTime": {"ts": ts(5), "t": 1i64},
        };
        let mut d = Decoder::new(vec![], false, 100);
        let lookup = Entries(vec![]);
        let buffered =
            futures::executor::block_on(d.process(prepare(5, &[1, 2]), &lookup)).unwrap();
        assert!(buffered.is_empty());
        let ops = futures::executor::block_on(d.process(commit, &lookup)).unwrap();
        assert_eq!(ops.len(), 2);
        assert!(ops.iter().all(|o| o.timestamp == ts(7)));
        assert_eq!(d.pending_ops(), 0);

        let ops = decode_with(
            Decoder::new(vec![], false, 100),
            &[prepare(5, &[1]), abort],
            &[],
        );
        assert!(ops.is_empty());
    }

    #[test]
    fn pending_buffer_is_bounded() {
        let mut d = Decoder::new(vec![], false, 2);
        let r = futures::executor::block_on(d.process(partial(1, 0, &[1, 2, 3]), &Entries(vec![])));
        assert!(matches!(r, Err(Error::TransactionTooLarge { limit: 2 })));
    }

    #[test]
    fn malformed_entries_are_errors() {
        let mut d = Decoder::new(vec![], false, 2);
        let lookup = Entries(vec![]);
        for e in [
            doc! {"op": "i", "ns": "a.b"},
            doc! {"op": "u", "ns": "a.b", "o": {"$v": 2, "diff": {}}, "ts": ts(1)},
            doc! {"ns": "a.b", "o": {}, "ts": ts(1)},
        ] {
            let r = futures::executor::block_on(d.process(e.clone(), &lookup));
            assert!(matches!(r, Err(Error::Malformed { .. })), "{e}");
        }
    }
}
