//! The engine: catalog, oplog ring, logical clock, cursor registry.
//!
//! Write path (contract §4): catalog methods mutate data and return the oplog operations
//! they produced (`op`, `ns`, `ui`, `o`, `o2`); [`Engine::log`] stamps them with `ts`, `t`,
//! `v`, `wall` (plus session fields for retryable writes) and appends them to the oplog
//! ring, waking tailing cursors through a `watch` channel.

pub(crate) mod catalog;
pub(crate) mod clock;
pub(crate) mod cursor;
pub(crate) mod docs;
pub(crate) mod images;
pub(crate) mod names;
pub(crate) mod oplog;
pub(crate) mod validation;

use crate::error::ErrorCode;
use crate::{Options, ServerVersion};
use bson::{doc, spec::BinarySubtype, Binary, Bson, DateTime, Document, RawDocumentBuf, Timestamp};
use catalog::Catalog;
use clock::Clock;
use cursor::CursorRegistry;
use oplog::Oplog;
use std::collections::HashMap;
use tokio::sync::watch;

tokio::task_local! {
    /// Set while a shard runs a command a router sent with `shardVersion`.
    static VERSIONED: bool;
}

/// Whether the running command came from a router with `shardVersion` (its reads and writes
/// skip orphaned documents).
pub(crate) fn versioned() -> bool {
    VERSIONED.try_with(|v| *v).unwrap_or(false)
}

/// Runs `fut` as a versioned command (see [`versioned`]).
pub(crate) async fn with_versioned<F: std::future::Future>(fut: F) -> F::Output {
    VERSIONED.scope(true, fut).await
}

/// The election term written as `t` (constant: the simulated node never steps down).
pub(crate) const TERM: i64 = 1;

/// The null optime `{ts: Timestamp(0, 0), t: Long(-1)}` (first `prevOpTime` of a session).
pub(crate) fn null_optime() -> Document {
    doc! {"ts": Timestamp { time: 0, increment: 0 }, "t": -1i64}
}

/// An optime `{ts, t}`.
pub(crate) fn optime(ts: Timestamp) -> Document {
    doc! {"ts": ts, "t": TERM}
}

/// An operation to log plus its statement id when it belongs to a retryable write.
#[derive(Debug, Clone)]
pub(crate) struct PendingOp {
    /// `{op, ns, ui?, o, o2?}`.
    pub(crate) op: Document,
    /// Statement id (retryable writes only; `None` for implicit `create` entries etc.).
    pub(crate) stmt_id: Option<i32>,
    /// 4.4 retryable findAndModify: this op links to the image no-op logged just before it
    /// through this field (`preImageOpTime` / `postImageOpTime`) and shares its `prevOpTime`
    /// (SRV 4.4 `op_observer_impl.cpp` `replLogUpdate`/`replLogDelete`).
    pub(crate) image_link: Option<&'static str>,
}

impl PendingOp {
    /// An op of a retryable statement.
    pub(crate) fn stmt(op: Document, stmt_id: Option<i32>) -> Self {
        Self {
            op,
            stmt_id,
            image_link: None,
        }
    }
}

impl From<Document> for PendingOp {
    fn from(op: Document) -> Self {
        Self::stmt(op, None)
    }
}

/// The session of a retryable write (`lsid` + `txnNumber` outside a transaction).
#[derive(Debug, Clone)]
pub(crate) struct RetryCtx {
    /// The client's `lsid` (`{id: UUID}`).
    pub(crate) lsid: Document,
    /// `txnNumber`.
    pub(crate) txn_number: i64,
}

#[derive(Debug, Default)]
struct SessionState {
    txn_number: i64,
    /// Optime of the last entry written for `txn_number`.
    last: Option<Timestamp>,
    /// Statements of `txn_number` already executed.
    executed: HashMap<i32, Timestamp>,
}

/// The `lsid` as the oplog records it: `{id, uid}` where `uid` is the SHA-256 of the
/// (empty, auth off) user name (reference §4.1).
pub(crate) fn oplog_lsid(lsid: &Document) -> Document {
    use sha2::Digest;
    let uid = sha2::Sha256::digest(b"").to_vec();
    let mut d = Document::new();
    if let Some(id) = lsid.get("id") {
        d.insert("id", id.clone());
    }
    let uid = match lsid.get("uid") {
        Some(u) => u.clone(),
        None => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: uid,
        }),
    };
    d.insert("uid", uid);
    d
}

fn session_key(lsid: &Document) -> Vec<u8> {
    match lsid.get("id") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(other) => other.to_string().into_bytes(),
        None => Vec::new(),
    }
}

/// Stamp fields added around an operation when it is logged.
#[derive(Debug, Default)]
struct Stamp {
    /// Client `lsid`, `txnNumber`, `stmtId`.
    session: Option<(Document, i64, Option<i32>)>,
    /// `preImageOpTime`/`postImageOpTime` link (4.4 retryable findAndModify).
    link: Option<(&'static str, Timestamp)>,
    /// `prevOpTime`.
    prev: Option<Document>,
}

fn raw_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One oplog entry as raw BSON.
fn encode_entry(op: &Document, ts: Timestamp, stamp: &Stamp) -> Result<RawDocumentBuf, String> {
    let mut w = RawDocumentBuf::new();
    if let Some((lsid, txn, _)) = &stamp.session {
        w.append(
            "lsid",
            RawDocumentBuf::from_document(&oplog_lsid(lsid)).map_err(raw_err)?,
        );
        w.append("txnNumber", *txn);
    }
    let op_raw = RawDocumentBuf::from_document(op).map_err(raw_err)?;
    for el in op_raw.iter() {
        let (k, v) = el.map_err(raw_err)?;
        w.append_ref(k, v);
    }
    if let Some((field, image_ts)) = stamp.link {
        w.append(
            field,
            RawDocumentBuf::from_document(&optime(image_ts)).map_err(raw_err)?,
        );
    }
    if let Some((_, _, Some(stmt))) = &stamp.session {
        w.append("stmtId", *stmt);
    }
    w.append("ts", ts);
    w.append("t", TERM);
    w.append("v", 2i64);
    w.append("wall", DateTime::now());
    if let Some(p) = &stamp.prev {
        w.append(
            "prevOpTime",
            RawDocumentBuf::from_document(p).map_err(raw_err)?,
        );
    }
    Ok(w)
}

/// All server data behind one lock (`commands::state::Shared::engine`).
#[derive(Debug)]
pub(crate) struct Engine {
    /// Imitated release.
    pub(crate) version: ServerVersion,
    /// Replica-set mode (false = standalone: no oplog).
    pub(crate) repl: bool,
    /// The logical clock.
    pub(crate) clock: Clock,
    /// Databases, collections, documents.
    pub(crate) catalog: Catalog,
    /// `local.oplog.rs` (None on a standalone).
    pub(crate) oplog: Option<Oplog>,
    /// UUID of `local.oplog.rs`.
    pub(crate) oplog_uuid: bson::Uuid,
    /// Open cursors.
    pub(crate) cursors: CursorRegistry,
    /// Change-stream pre-/post-images by `(ts, applyOpsIndex, ui)` (SRV
    /// `config.system.preimages`; `commands/change_stream.rs`).
    pub(crate) pre_images: images::PreImages,
    sessions: HashMap<Vec<u8>, SessionState>,
    last_applied: Timestamp,
    noop_last_known: Option<Timestamp>,
    /// Write notifications in standalone mode (no oplog to watch).
    standalone_tx: watch::Sender<Timestamp>,
}

impl Engine {
    /// An engine for `opts`; on a replica set the oplog starts with the entries written when
    /// the set was initiated.
    pub(crate) fn new(opts: &Options) -> Self {
        let repl = opts.repl_set.is_some();
        let (standalone_tx, _rx) = watch::channel(Timestamp {
            time: 0,
            increment: 0,
        });
        let mut e = Engine {
            version: opts.version,
            repl,
            clock: Clock::new(),
            catalog: Catalog::new(opts.version),
            oplog: repl.then(|| Oplog::new(opts.oplog_size_bytes.max(1))),
            oplog_uuid: bson::Uuid::new(),
            cursors: CursorRegistry::default(),
            pre_images: Default::default(),
            sessions: HashMap::new(),
            last_applied: Timestamp {
                time: 0,
                increment: 0,
            },
            noop_last_known: None,
            standalone_tx,
        };
        if repl {
            // SRV replication_coordinator_impl.cpp (initiate) and
            // replication_coordinator_external_state_impl.cpp (step-up) no-ops, §4.9
            e.log(
                vec![doc! {"op": "n", "ns": "", "o": {"msg": "initiating set"}}.into()],
                None,
            );
            e.log(
                vec![doc! {"op": "n", "ns": "", "o": {"msg": "new primary"}}.into()],
                None,
            );
        } else {
            e.last_applied = e.clock.tick();
        }
        e
    }

    /// A config server's first write: `config.version` (SRV `config_server_catalog_cache_loader`
    /// / `ShardingCatalogManager::initializeConfigDatabaseIfNeeded`; shapes from reference
    /// sharded-clusters.md §2.5: 7.0 `{_id: 1, clusterId}`, 4.4 with `minCompatibleVersion: 5,
    /// currentVersion: 6`).
    pub(crate) fn init_config_server(&mut self) {
        let mut version = doc! {"_id": 1};
        if self.version == ServerVersion::V4_4 {
            version.insert("minCompatibleVersion", 5);
            version.insert("currentVersion", 6);
        }
        version.insert("clusterId", bson::oid::ObjectId::new());
        let mut ops: Vec<PendingOp> = match self.catalog.ensure_collection("config", "version") {
            Ok(ops) => ops.into_iter().map(Into::into).collect(),
            Err(_) => return,
        };
        if let Ok((_, op)) = self.catalog.insert_doc("config", "version", version) {
            ops.push(op.into());
        }
        self.log(ops, None);
    }

    /// The logical clock's current value (`$clusterTime.clusterTime`, reference §2.7).
    pub(crate) fn cluster_time(&self) -> Timestamp {
        self.clock.now()
    }

    /// Optime of the last oplog entry written (`operationTime` of reads).
    pub(crate) fn last_applied(&self) -> Timestamp {
        self.last_applied
    }

    /// A receiver that changes whenever oplog entries are appended (on a standalone: whenever
    /// a write is logged).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Timestamp> {
        match &self.oplog {
            Some(o) => o.subscribe(),
            None => self.standalone_tx.subscribe(),
        }
    }

    /// Stamps and appends `ops` (one entry each, consecutive increments). Ops with a
    /// `stmt_id` get the session fields of `retry` (reference §4.1, §6). Returns the `ts`
    /// of the last entry (the write's optime), or `None` when `ops` is empty.
    pub(crate) fn log(
        &mut self,
        ops: Vec<PendingOp>,
        retry: Option<&RetryCtx>,
    ) -> Option<Timestamp> {
        if ops.is_empty() {
            return None;
        }
        let first = self.clock.reserve(ops.len() as u32);
        let mut last = first;
        let mut prev_entry: Option<(Timestamp, Option<Document>)> = None;
        for (i, p) in ops.into_iter().enumerate() {
            let ts = Timestamp {
                time: first.time,
                increment: first.increment + i as u32,
            };
            last = ts;
            let session = match (retry, p.stmt_id) {
                (Some(r), Some(stmt)) => Some((r, stmt)),
                _ => None,
            };
            let mut prev = None;
            if let Some((r, stmt)) = session {
                let st = self.sessions.entry(session_key(&r.lsid)).or_default();
                if st.txn_number != r.txn_number {
                    st.txn_number = r.txn_number;
                    st.last = None;
                    st.executed.clear();
                }
                prev = match (p.image_link, &prev_entry) {
                    (Some(_), Some((_, Some(image_prev)))) => Some(image_prev.clone()),
                    _ => Some(st.last.map(optime).unwrap_or_else(null_optime)),
                };
                st.last = Some(ts);
                st.executed.insert(stmt, ts);
            }
            let link = match (p.image_link, &prev_entry) {
                (Some(field), Some((image_ts, _))) => Some((field, *image_ts)),
                _ => None,
            };
            let stamp = Stamp {
                session: session.map(|(r, stmt)| (r.lsid.clone(), r.txn_number, Some(stmt))),
                link,
                prev: prev.clone(),
            };
            prev_entry = Some((ts, prev));
            self.append_stamped(&p.op, ts, stamp);
        }
        self.last_applied = last;
        match &self.oplog {
            Some(o) => o.notify(),
            None => {
                self.standalone_tx.send_replace(last);
            }
        }
        Some(last)
    }

    /// Writes one unprepared transaction as a single `applyOps` entry (reference §6):
    /// inner ops keep `op`, `ns`, `ui`, `o`, `o2`; the outer entry carries the session and a
    /// null `prevOpTime`.
    pub(crate) fn log_transaction(
        &mut self,
        ops: Vec<Document>,
        lsid: &Document,
        txn_number: i64,
    ) -> Option<Timestamp> {
        self.log_apply_ops(ops, Some((lsid, txn_number)))
    }

    /// Writes a large unprepared transaction (added by CSTREAM for `commands/txn.rs`, which
    /// splits the ops so each entry stays under 16 MB) as a chain of `applyOps` entries with
    /// consecutive optimes (reference §6): every entry but the last has `partialTxn: true`,
    /// each links the previous one through `prevOpTime` (the first: the null optime), the
    /// last carries `count` (total ops) and is the commit point. Returns each entry's `ts`.
    pub(crate) fn log_transaction_chain(
        &mut self,
        chunks: Vec<Vec<Document>>,
        lsid: &Document,
        txn_number: i64,
    ) -> Vec<Timestamp> {
        let chunks: Vec<Vec<Document>> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        if chunks.len() <= 1 {
            let ops = chunks.into_iter().next().unwrap_or_default();
            return self
                .log_transaction(ops, lsid, txn_number)
                .into_iter()
                .collect();
        }
        let total: usize = chunks.iter().map(Vec::len).sum();
        let n = chunks.len();
        let first = self.clock.reserve(n as u32);
        let mut prev = null_optime();
        let mut stamps = Vec::with_capacity(n);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let ts = Timestamp {
                time: first.time,
                increment: first.increment + i as u32,
            };
            let inner: Vec<Bson> = chunk.into_iter().map(Bson::Document).collect();
            let mut o = doc! {"applyOps": inner};
            if i + 1 < n {
                o.insert("partialTxn", true);
            } else {
                o.insert("count", total as i64);
            }
            let stamp = Stamp {
                session: Some((lsid.clone(), txn_number, None)),
                prev: Some(prev),
                ..Stamp::default()
            };
            let entry = doc! {"op": "c", "ns": "admin.$cmd", "o": o};
            self.append_stamped(&entry, ts, stamp);
            prev = optime(ts);
            stamps.push(ts);
        }
        let last = stamps[n - 1];
        let st = self.sessions.entry(session_key(lsid)).or_default();
        st.txn_number = txn_number;
        st.last = Some(last);
        st.executed.clear();
        self.last_applied = last;
        if let Some(o) = &self.oplog {
            o.notify();
        }
        stamps
    }

    /// A prepared transaction's entry (SRV `op_observer_impl.cpp` `onTransactionPrepare`,
    /// reference sharded-clusters.md §6): `{applyOps: [...], prepare: true}` with the session
    /// and a null `prevOpTime`. Returns its optime, the `prepareTimestamp`.
    pub(crate) fn log_prepare(
        &mut self,
        ops: Vec<Document>,
        lsid: &Document,
        txn_number: i64,
    ) -> Timestamp {
        let ts = self.clock.tick();
        let inner: Vec<Bson> = ops.into_iter().map(Bson::Document).collect();
        let stamp = Stamp {
            session: Some((lsid.clone(), txn_number, None)),
            prev: Some(null_optime()),
            ..Stamp::default()
        };
        let entry = doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": inner, "prepare": true}};
        self.append_stamped(&entry, ts, stamp);
        self.finish_session_entry(lsid, txn_number, ts);
        ts
    }

    /// A prepared transaction's decision: `o` is `{commitTransaction: 1, commitTimestamp}`
    /// or `{abortTransaction: 1}`, linked to the prepare entry by `prevOpTime` (SRV
    /// `op_observer_impl.cpp` `onPreparedTransactionCommit` / `onTransactionAbort`).
    pub(crate) fn log_transaction_decision(
        &mut self,
        o: Document,
        lsid: &Document,
        txn_number: i64,
        prepare_ts: Timestamp,
    ) -> Timestamp {
        let ts = self.clock.tick();
        let stamp = Stamp {
            session: Some((lsid.clone(), txn_number, None)),
            prev: Some(optime(prepare_ts)),
            ..Stamp::default()
        };
        let entry = doc! {"op": "c", "ns": "admin.$cmd", "o": o};
        self.append_stamped(&entry, ts, stamp);
        self.finish_session_entry(lsid, txn_number, ts);
        ts
    }

    fn finish_session_entry(&mut self, lsid: &Document, txn_number: i64, ts: Timestamp) {
        let st = self.sessions.entry(session_key(lsid)).or_default();
        st.txn_number = txn_number;
        st.last = Some(ts);
        st.executed.clear();
        self.last_applied = ts;
        if let Some(o) = &self.oplog {
            o.notify();
        }
    }

    /// Writes `ops` as one `admin.$cmd` `applyOps` entry; without a session this is the
    /// batched-write form (batched multi-deletes, reference §4.7).
    pub(crate) fn log_apply_ops(
        &mut self,
        ops: Vec<Document>,
        session: Option<(&Document, i64)>,
    ) -> Option<Timestamp> {
        if ops.is_empty() {
            return None;
        }
        let ts = self.clock.tick();
        let inner: Vec<Bson> = ops.into_iter().map(Bson::Document).collect();
        let mut stamp = Stamp::default();
        if let Some((lsid, txn_number)) = session {
            let st = self.sessions.entry(session_key(lsid)).or_default();
            st.txn_number = txn_number;
            st.last = Some(ts);
            st.executed.clear();
            stamp.session = Some((lsid.clone(), txn_number, None));
            stamp.prev = Some(null_optime());
        }
        let entry = doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": inner}};
        self.append_stamped(&entry, ts, stamp);
        self.last_applied = ts;
        if let Some(o) = &self.oplog {
            o.notify();
        }
        Some(ts)
    }

    /// Encodes `op` with its stamp straight into raw BSON (field order of reference §4.1:
    /// `lsid, txnNumber, op, ns, ui, o, o2, [image link], stmtId, ts, t, v, wall,
    /// prevOpTime`) and appends it to the ring.
    fn append_stamped(&mut self, op: &Document, ts: Timestamp, stamp: Stamp) {
        let Some(o) = self.oplog.as_mut() else {
            return;
        };
        match encode_entry(op, ts, &stamp) {
            Ok(raw) => o.append(ts, raw),
            Err(e) => tracing::error!("cannot encode oplog entry: {e}"),
        }
        // Images of this entry's updates/deletes; expire with the oplog window.
        self.pre_images
            .record(op, ts, &mut self.catalog.images, o.first_ts());
    }

    /// For a retryable write: the optime of statement `stmt` if it already ran in this
    /// `txnNumber` (the retry must not run it again). Errors with 225 TransactionTooOld
    /// when a newer `txnNumber` has been seen on the session.
    pub(crate) fn retry_executed(
        &self,
        retry: &RetryCtx,
        stmt: i32,
    ) -> crate::error::CmdResult<Option<Timestamp>> {
        let Some(st) = self.sessions.get(&session_key(&retry.lsid)) else {
            return Ok(None);
        };
        if st.txn_number > retry.txn_number {
            // SRV transaction_participant.cpp
            return Err(crate::CommandError::from_code(
                ErrorCode::TransactionTooOld,
                format!(
                    "Retryable write with txnNumber {} is prohibited on session {} because a newer retryable write with txnNumber {} has already started on this session.",
                    retry.txn_number,
                    lsid_display(&retry.lsid),
                    st.txn_number
                ),
            ));
        }
        if st.txn_number != retry.txn_number {
            return Ok(None);
        }
        Ok(st.executed.get(&stmt).copied())
    }

    /// Periodic no-op (reference §4.9, SRV `noop_writer.cpp`): writes
    /// `{op: "n", ns: "", o: {msg: "periodic noop"}}` only if nothing was written since
    /// the previous call. Called by the server's timer every `noop_interval`.
    /// Returns whether an entry was written.
    pub(crate) fn write_periodic_noop_if_idle(&mut self) -> bool {
        if self.oplog.is_none() {
            return false;
        }
        let wrote = if self.noop_last_known == Some(self.last_applied) {
            self.log(
                vec![doc! {"op": "n", "ns": "", "o": {"msg": "periodic noop"}}.into()],
                None,
            );
            true
        } else {
            false
        };
        self.noop_last_known = Some(self.last_applied);
        wrote
    }

    /// The options of `local.oplog.rs` as `listCollections` shows them.
    pub(crate) fn oplog_options(&self) -> Document {
        let size = self.oplog.as_ref().map(|o| o.cap_bytes()).unwrap_or(0) as i64;
        doc! {"capped": true, "size": size, "autoIndexId": false}
    }
}

fn lsid_display(lsid: &Document) -> String {
    match lsid.get("id") {
        Some(Bson::Binary(b)) => format!("{} - ", hex::encode(&b.bytes)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_oplog_and_stamping() {
        let mut e = Engine::new(&Options::new());
        let o = e.oplog.as_ref().unwrap();
        assert_eq!(o.len(), 2);
        let ops = e.catalog.ensure_collection("t", "c").unwrap();
        let mut pending: Vec<PendingOp> = ops.into_iter().map(Into::into).collect();
        for i in 0..3 {
            let (_, op) = e.catalog.insert_doc("t", "c", doc! {"_id": i}).unwrap();
            pending.push(PendingOp::stmt(op, Some(i)));
        }
        let retry = RetryCtx {
            lsid: doc! {"id": bson::Uuid::new()},
            txn_number: 7,
        };
        let last = e.log(pending, Some(&retry)).unwrap();
        let o = e.oplog.as_ref().unwrap();
        assert_eq!(o.len(), 6);
        assert_eq!(o.last_ts(), Some(last));
        let entries: Vec<Document> = o
            .iter_from(0)
            .map(|(_, x)| x.raw.to_document().unwrap())
            .collect();
        let create = &entries[2];
        assert!(create.get("lsid").is_none());
        let first = &entries[3];
        let keys: Vec<&String> = first.keys().collect();
        assert_eq!(
            keys,
            vec![
                "lsid",
                "txnNumber",
                "op",
                "ns",
                "ui",
                "o",
                "o2",
                "stmtId",
                "ts",
                "t",
                "v",
                "wall",
                "prevOpTime"
            ]
        );
        assert_eq!(first.get_document("prevOpTime").unwrap(), &null_optime());
        let second = &entries[4];
        assert_eq!(
            second.get_document("prevOpTime").unwrap(),
            &optime(first.get_timestamp("ts").unwrap())
        );
        let t1 = first.get_timestamp("ts").unwrap();
        let t2 = second.get_timestamp("ts").unwrap();
        assert_eq!(t2.increment, t1.increment + 1);
        assert!(e.retry_executed(&retry, 1).unwrap().is_some());
        assert!(e.retry_executed(&retry, 9).unwrap().is_none());
    }

    #[test]
    fn periodic_noop_only_when_idle() {
        let mut e = Engine::new(&Options::new());
        assert!(!e.write_periodic_noop_if_idle());
        assert!(e.write_periodic_noop_if_idle());
        // the no-op itself does not count as activity: an idle primary writes one per interval
        assert!(e.write_periodic_noop_if_idle());
        e.log(
            vec![doc! {"op": "n", "ns": "", "o": {"msg": "x"}}.into()],
            None,
        );
        assert!(!e.write_periodic_noop_if_idle());
        assert_eq!(e.oplog.as_ref().unwrap().len(), 5);
    }

    #[test]
    fn standalone_has_no_oplog() {
        let e = Engine::new(&Options::new().standalone());
        assert!(e.oplog.is_none());
    }
}
