//! The op model: what every source yields and every adapter consumes.
//!
//! An [`Op`] is one change (or one document of a direct read) in a [`Namespace`]: its
//! [`OpKind`], the document id and key, the document when known, an
//! [`UpdateDescription`] for updates, the time it happened, which [`Source`] produced it,
//! and the [`Position`] a caller saves to resume exactly after it.

use std::fmt;
use std::str::FromStr;

use bson::{Bson, Document, Timestamp};
use mongodb::change_stream::event::ResumeToken;

use crate::checkpoint::Ack;
use crate::error::{Error, Result};

/// Longest database name MongoDB accepts (SRV `DatabaseName::kMaxDatabaseNameLength`, reference §8.4).
const MAX_DB_NAME_LEN: usize = 63;
/// Longest fully qualified namespace, in bytes (SRV `NamespaceString::MaxNsCollectionLen`, reference §8.4).
const MAX_NS_LEN: usize = 255;

/// A database plus collection, e.g. `test.users`.
///
/// A namespace with an empty collection names a whole database (used for
/// [`OpKind::DropDatabase`] and for commands that are not about one collection); it
/// displays as just the database name.
///
/// ```
/// use mongotail::Namespace;
///
/// let ns = Namespace::parse("shop.orders.archive")?;
/// assert_eq!(ns.db(), "shop");
/// assert_eq!(ns.coll(), "orders.archive"); // split at the first dot, like the server
/// assert_eq!(ns.to_string(), "shop.orders.archive");
/// assert!(Namespace::parse("bad$db.c").is_err());
/// # Ok::<(), mongotail::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    db: String,
    coll: String,
}

impl Namespace {
    /// Parses `db.coll` (split at the first dot) or a bare `db`, validating both parts
    /// as MongoDB does (reference §8.4): the database name is non-empty, shorter than 64
    /// characters and free of `/ \ . " $`, space and NUL; the collection name contains no
    /// NUL and no `$`; the whole namespace is at most 255 bytes.
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`] naming the rejected input.
    pub fn parse(ns: &str) -> Result<Namespace> {
        match ns.split_once('.') {
            Some((db, coll)) => Namespace::new(db, coll),
            None => Namespace::database(ns),
        }
    }

    /// Builds and validates a collection namespace from its two parts.
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`] when either part is invalid (see [`Namespace::parse`]) or
    /// the collection name is empty.
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Result<Namespace> {
        let (db, coll) = (db.into(), coll.into());
        let full = format!("{db}.{coll}");
        validate_db(&db).map_err(|why| Error::InvalidNamespace(format!("{full:?}: {why}")))?;
        if coll.is_empty() {
            return Err(Error::InvalidNamespace(format!(
                "{full:?}: empty collection name"
            )));
        }
        if coll.contains('\0') || coll.contains('$') {
            return Err(Error::InvalidNamespace(format!(
                "{full:?}: collection names may not contain '$' or NUL"
            )));
        }
        if full.len() > MAX_NS_LEN {
            return Err(Error::InvalidNamespace(format!(
                "{full:?}: longer than {MAX_NS_LEN} bytes"
            )));
        }
        Ok(Namespace { db, coll })
    }

    /// A namespace naming a whole database (empty collection).
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`] when the database name is invalid.
    pub fn database(db: impl Into<String>) -> Result<Namespace> {
        let db = db.into();
        validate_db(&db).map_err(|why| Error::InvalidNamespace(format!("{db:?}: {why}")))?;
        Ok(Namespace {
            db,
            coll: String::new(),
        })
    }

    /// Builds a namespace from what the server wrote (oplog `ns`, change event `ns`)
    /// without validation: the server's own names (`db.$cmd`, `system.*`) must round-trip.
    pub(crate) fn from_server(db: &str, coll: &str) -> Namespace {
        Namespace {
            db: db.to_owned(),
            coll: coll.to_owned(),
        }
    }

    /// Splits a server-written `db.coll` at the first dot, without validation.
    pub(crate) fn from_server_ns(ns: &str) -> Namespace {
        match ns.split_once('.') {
            Some((db, coll)) => Namespace::from_server(db, coll),
            None => Namespace::from_server(ns, ""),
        }
    }

    /// The database name.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// The collection name; empty when the namespace names a whole database.
    pub fn coll(&self) -> &str {
        &self.coll
    }

    /// Whether this namespace names a whole database (no collection).
    pub fn is_database(&self) -> bool {
        self.coll.is_empty()
    }
}

fn validate_db(db: &str) -> std::result::Result<(), &'static str> {
    if db.is_empty() {
        return Err("empty database name");
    }
    if db.chars().count() > MAX_DB_NAME_LEN {
        return Err("database names must be shorter than 64 characters");
    }
    if db
        .chars()
        .any(|c| matches!(c, '/' | '\\' | '.' | '"' | '$' | ' ' | '\0'))
    {
        return Err("database names may not contain / \\ . \" $, space or NUL");
    }
    Ok(())
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.coll.is_empty() {
            f.write_str(&self.db)
        } else {
            write!(f, "{}.{}", self.db, self.coll)
        }
    }
}

impl FromStr for Namespace {
    type Err = Error;

    fn from_str(s: &str) -> Result<Namespace> {
        Namespace::parse(s)
    }
}

/// What an [`Op`] did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// A document was inserted (or read by a direct read).
    Insert,
    /// A document was modified with update operators.
    Update,
    /// A document was replaced as a whole.
    Replace,
    /// A document was deleted.
    Delete,
    /// The collection was dropped.
    DropCollection,
    /// The database was dropped.
    DropDatabase,
    /// The collection was renamed to `to`.
    Rename {
        /// The new namespace.
        to: Namespace,
    },
    /// The collection (or view) was created.
    Create,
    /// Another command, by name (`createIndexes`, `dropIndexes`, `collMod`, …).
    Command(String),
    /// Anything else (an unknown change-stream `operationType`, an unknown oplog `op`).
    Other(String),
}

/// Which source produced an [`Op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// Tailing `local.oplog.rs`.
    Oplog,
    /// A change stream (`watch`).
    ChangeStream,
    /// A direct read of a collection or view.
    Direct,
}

/// Where a source stood right after an [`Op`]: save it to resume exactly after that op.
///
/// Positions serialize with serde (any format: BSON, JSON, …), so a checkpoint can be
/// stored anywhere and read back:
///
/// ```
/// use bson::Timestamp;
/// use mongotail::Position;
///
/// let saved = Position::Oplog(Timestamp { time: 1_700_000_000, increment: 3 });
/// let json = serde_json::to_string(&saved).unwrap();
/// assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), saved);
/// let stored = bson::to_document(&saved).unwrap();
/// assert_eq!(bson::from_document::<Position>(stored).unwrap(), saved);
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Position {
    /// The oplog `ts` of the entry (for an op inside a transaction: of the entry that
    /// committed it, shared by all ops of the transaction, so resuming from it resumes
    /// after the whole transaction). Resume with
    /// [`OplogOptions::start_after`](crate::OplogOptions::start_after) or
    /// [`Handle::since`](crate::Handle::since).
    Oplog(Timestamp),
    /// A change-stream resume token (`_id` of the event), as the driver types it. Resume
    /// with [`ChangeStreamOptions::resume_after`](crate::ChangeStreamOptions::resume_after)
    /// or [`start_after`](crate::ChangeStreamOptions::start_after).
    ResumeToken(ResumeToken),
    /// Direct reads have no resumable position of their own (a checkpoint keeps their
    /// progress per `_id` range).
    Direct,
    /// The oplog `ts` of the entry on one shard of a sharded cluster (per-shard tailing):
    /// a cluster stream's position is the vector of its shards' positions.
    Shard {
        /// The shard's id (`_id` in `config.shards`).
        shard: String,
        /// The entry's `ts` on that shard (for a transaction: its commit entry's).
        ts: Timestamp,
    },
}

/// One entry of [`UpdateDescription::truncated_arrays`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TruncatedArray {
    /// Dotted path of the array.
    pub field: String,
    /// Its new length.
    pub new_size: u32,
}

impl TruncatedArray {
    /// An array at `field` truncated to `new_size` elements.
    pub fn new(field: impl Into<String>, new_size: u32) -> TruncatedArray {
        TruncatedArray {
            field: field.into(),
            new_size,
        }
    }
}

/// What an update changed, in the shape of a change event's `updateDescription`
/// whichever source produced it (oplog `$v: 1` and `$v: 2` entries are converted the way
/// the server converts them for change streams, reference §4.4, §4.5).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct UpdateDescription {
    /// Dotted path -> new value (array indexes are path components: `"arr.1"`).
    pub updated_fields: Document,
    /// Dotted paths of removed fields.
    pub removed_fields: Vec<String>,
    /// Arrays whose length shrank.
    pub truncated_arrays: Vec<TruncatedArray>,
}

impl UpdateDescription {
    /// Builds an update description from its parts.
    ///
    /// ```
    /// use bson::doc;
    /// use mongotail::UpdateDescription;
    ///
    /// let u = UpdateDescription::new(doc! {"a": 1}, vec!["b".into()], vec![]);
    /// assert_eq!(u.updated_fields, doc! {"a": 1});
    /// ```
    pub fn new(
        updated_fields: Document,
        removed_fields: Vec<String>,
        truncated_arrays: Vec<TruncatedArray>,
    ) -> UpdateDescription {
        UpdateDescription {
            updated_fields,
            removed_fields,
            truncated_arrays,
        }
    }
}

/// Transaction (or batched write) an [`Op`] belonged to.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TxnInfo {
    /// The session id (`lsid`); `None` for batched writes logged as `applyOps` without a session.
    pub lsid: Option<Document>,
    /// The transaction number on that session.
    pub txn_number: Option<i64>,
    /// 0-based index of the op within the whole transaction.
    pub index: u32,
}

impl TxnInfo {
    /// Builds transaction info from its parts.
    pub fn new(lsid: Option<Document>, txn_number: Option<i64>, index: u32) -> TxnInfo {
        TxnInfo {
            lsid,
            txn_number,
            index,
        }
    }
}

/// One change read from MongoDB (or one document of a direct read).
///
/// `T` is the document type: [`bson::Document`] as produced by the sources, or any type an
/// adapter decoded it into (see [`Op::map_data`]).
///
/// Ops are built by the sources; to build one yourself (tests, adapters) start with
/// [`Op::new`] and chain the `with_*` setters:
///
/// ```
/// use bson::{doc, Bson, Timestamp};
/// use mongotail::{Namespace, Op, OpKind, Position, Source};
///
/// let op = Op::new(OpKind::Insert, Namespace::parse("shop.orders")?, Some(Bson::Int32(1)))
///     .with_data(doc! {"_id": 1, "total": 12})
///     .with_timestamp(Timestamp { time: 1_700_000_000, increment: 1 })
///     .with_source(Source::Oplog)
///     .with_position(Position::Oplog(Timestamp { time: 1_700_000_000, increment: 1 }));
/// assert!(op.is_insert() && op.is_source_oplog());
/// assert_eq!(op.collection(), "orders");
/// assert_eq!(op.document_key, Some(doc! {"_id": 1}));
/// # Ok::<(), mongotail::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Op<T = Document> {
    /// The document's `_id`, when the op is about one document.
    pub id: Option<Bson>,
    /// The full document key (`_id` plus shard key fields, when known).
    pub document_key: Option<Document>,
    /// What happened.
    pub kind: OpKind,
    /// Where it happened.
    pub namespace: Namespace,
    /// The document: inserted, replaced, read directly, looked up (`updateLookup`,
    /// `batch_fetch`), or the raw update with `update_data_as_delta`. For commands, the
    /// command object.
    pub data: Option<T>,
    /// The document as it was before the change (the change event's
    /// `fullDocumentBeforeChange`): change streams opened with
    /// [`ChangeStreamOptions::full_document_before_change`] on collections that record
    /// pre-images (MongoDB 6.0+). `None` otherwise (the oplog does not carry pre-images).
    ///
    /// [`ChangeStreamOptions::full_document_before_change`]: crate::source::change_stream::ChangeStreamOptions::full_document_before_change
    pub before: Option<Document>,
    /// What an update changed.
    pub update: Option<UpdateDescription>,
    /// The raw oplog update `o` (only with `update_data_as_delta`).
    pub delta: Option<Document>,
    /// Cluster time of the change (commit time for transactions); zero for direct reads.
    pub timestamp: Timestamp,
    /// Wall-clock time of the change, when the server recorded it.
    pub wall_time: Option<bson::DateTime>,
    /// Which source produced the op.
    pub source: Source,
    /// Where to resume after this op.
    pub position: Position,
    /// Transaction info, when the op came from a transaction or batched write.
    pub txn: Option<TxnInfo>,
    /// Set by `batch_fetch` when the document no longer existed at fetch time.
    pub document_missing: bool,
    /// The op's acknowledgement when [`start`](crate::start) keeps a checkpoint
    /// ([`TailOptions::checkpoint`](crate::TailOptions::checkpoint)): call [`Op::ack`] (or
    /// take it with [`Op::take_ack`] and call [`Ack::ack`] later, from any task) once the
    /// application has finished with the op. `None` otherwise.
    pub ack: Option<Ack>,
}

impl<T> Op<T> {
    /// A new op with the given kind, namespace and id; everything else empty: no data, zero
    /// timestamp, [`Source::Direct`] and [`Position::Direct`]. When `id` is set the document
    /// key defaults to `{_id: id}`.
    pub fn new(kind: OpKind, namespace: Namespace, id: Option<Bson>) -> Op<T> {
        let document_key = id.as_ref().map(|id| {
            let mut key = Document::new();
            key.insert("_id", id.clone());
            key
        });
        Op {
            id,
            document_key,
            kind,
            namespace,
            data: None,
            before: None,
            update: None,
            delta: None,
            timestamp: Timestamp {
                time: 0,
                increment: 0,
            },
            wall_time: None,
            source: Source::Direct,
            position: Position::Direct,
            txn: None,
            document_missing: false,
            ack: None,
        }
    }

    /// Sets [`Op::data`].
    pub fn with_data(mut self, data: T) -> Self {
        self.data = Some(data);
        self
    }

    /// Sets [`Op::before`].
    ///
    /// ```
    /// use bson::doc;
    /// use mongotail::{Namespace, Op, OpKind};
    ///
    /// let op: Op = Op::new(OpKind::Update, Namespace::parse("shop.users")?, Some(1.into()))
    ///     .with_before(doc! {"_id": 1, "name": "eve"})
    ///     .with_data(doc! {"_id": 1, "name": "ada"});
    /// let before = op.before.expect("set above");
    /// assert_eq!(before.get_str("name"), Ok("eve"));
    /// # Ok::<(), mongotail::Error>(())
    /// ```
    pub fn with_before(mut self, before: Document) -> Self {
        self.before = Some(before);
        self
    }

    /// Sets [`Op::document_key`].
    pub fn with_document_key(mut self, key: Document) -> Self {
        self.document_key = Some(key);
        self
    }

    /// Sets [`Op::update`].
    pub fn with_update(mut self, update: UpdateDescription) -> Self {
        self.update = Some(update);
        self
    }

    /// Sets [`Op::delta`].
    pub fn with_delta(mut self, delta: Document) -> Self {
        self.delta = Some(delta);
        self
    }

    /// Sets [`Op::timestamp`].
    pub fn with_timestamp(mut self, ts: Timestamp) -> Self {
        self.timestamp = ts;
        self
    }

    /// Sets [`Op::wall_time`].
    pub fn with_wall_time(mut self, wall: bson::DateTime) -> Self {
        self.wall_time = Some(wall);
        self
    }

    /// Sets [`Op::source`].
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Sets [`Op::position`].
    pub fn with_position(mut self, position: Position) -> Self {
        self.position = position;
        self
    }

    /// Sets [`Op::txn`].
    pub fn with_txn(mut self, txn: TxnInfo) -> Self {
        self.txn = Some(txn);
        self
    }

    /// Sets [`Op::document_missing`].
    pub fn with_document_missing(mut self, missing: bool) -> Self {
        self.document_missing = missing;
        self
    }

    /// An insert (or a direct-read document).
    pub fn is_insert(&self) -> bool {
        self.kind == OpKind::Insert
    }

    /// An update with operators (not a replacement).
    pub fn is_update(&self) -> bool {
        self.kind == OpKind::Update
    }

    /// A whole-document replacement.
    pub fn is_replace(&self) -> bool {
        self.kind == OpKind::Replace
    }

    /// A delete.
    pub fn is_delete(&self) -> bool {
        self.kind == OpKind::Delete
    }

    /// A collection or database drop.
    pub fn is_drop(&self) -> bool {
        self.is_drop_collection() || self.is_drop_database()
    }

    /// A collection drop.
    pub fn is_drop_collection(&self) -> bool {
        self.kind == OpKind::DropCollection
    }

    /// A database drop.
    pub fn is_drop_database(&self) -> bool {
        self.kind == OpKind::DropDatabase
    }

    /// A rename; the target is in the kind.
    pub fn is_rename(&self) -> bool {
        matches!(self.kind, OpKind::Rename { .. })
    }

    /// A DDL or other command (create, drop, rename, createIndexes, …).
    pub fn is_command(&self) -> bool {
        !matches!(
            self.kind,
            OpKind::Insert | OpKind::Update | OpKind::Replace | OpKind::Delete | OpKind::Other(_)
        )
    }

    /// Produced by the oplog source.
    pub fn is_source_oplog(&self) -> bool {
        self.source == Source::Oplog
    }

    /// Produced by a change stream.
    pub fn is_source_change_stream(&self) -> bool {
        self.source == Source::ChangeStream
    }

    /// Produced by a direct read.
    pub fn is_source_direct(&self) -> bool {
        self.source == Source::Direct
    }

    /// The database name.
    pub fn database(&self) -> &str {
        self.namespace.db()
    }

    /// The collection name (empty for database-level ops).
    pub fn collection(&self) -> &str {
        self.namespace.coll()
    }

    /// An update that carries no document yet (oplog source without
    /// `update_data_as_delta`): `batch_fetch` fills it in.
    pub fn needs_fetch(&self) -> bool {
        self.is_update() && self.data.is_none() && self.id.is_some()
    }

    /// Acknowledges the op now (see [`Op::ack`](Op#structfield.ack)): the application has
    /// finished with it, so its source's checkpoint may move past it. Does nothing when the
    /// op carries no acknowledgement or it was taken.
    pub fn ack(&mut self) {
        if let Some(ack) = self.ack.take() {
            ack.ack();
        }
    }

    /// Takes the op's acknowledgement, to call [`Ack::ack`] later (for instance after the
    /// op was moved into a task that writes it somewhere).
    pub fn take_ack(&mut self) -> Option<Ack> {
        self.ack.take()
    }

    /// Converts the document with `f`, keeping everything else.
    ///
    /// ```
    /// use bson::doc;
    /// use mongotail::{Namespace, Op, OpKind};
    ///
    /// let op = Op::new(OpKind::Insert, Namespace::parse("a.b")?, None).with_data(doc! {"n": 3});
    /// let op = op.map_data(|d| d.get_i32("n").unwrap_or(0));
    /// assert_eq!(op.data, Some(3));
    /// # Ok::<(), mongotail::Error>(())
    /// ```
    pub fn map_data<U>(self, f: impl FnOnce(T) -> U) -> Op<U> {
        match self.try_map_data(|d| Ok::<U, std::convert::Infallible>(f(d))) {
            Ok(op) => op,
            Err(never) => match never {},
        }
    }

    /// Converts the document with a fallible `f`; an op without document always succeeds.
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn try_map_data<U, E>(
        self,
        f: impl FnOnce(T) -> std::result::Result<U, E>,
    ) -> std::result::Result<Op<U>, E> {
        let Op {
            id,
            document_key,
            kind,
            namespace,
            data,
            before,
            update,
            delta,
            timestamp,
            wall_time,
            source,
            position,
            txn,
            document_missing,
            ack,
        } = self;
        Ok(Op {
            id,
            document_key,
            kind,
            namespace,
            data: data.map(f).transpose()?,
            before,
            update,
            delta,
            timestamp,
            wall_time,
            source,
            position,
            txn,
            document_missing,
            ack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn namespace_parse_and_display() {
        let ns = Namespace::parse("db.coll.with.dots").unwrap();
        assert_eq!((ns.db(), ns.coll()), ("db", "coll.with.dots"));
        assert_eq!(ns.to_string(), "db.coll.with.dots");
        let db = Namespace::parse("db").unwrap();
        assert!(db.is_database());
        assert_eq!(db.to_string(), "db");
        assert_eq!(
            "x.y".parse::<Namespace>().unwrap(),
            Namespace::new("x", "y").unwrap()
        );
    }

    #[test]
    fn namespace_rejects_what_the_server_rejects() {
        for bad in [
            "", ".c", "d.", "a b.c", "a$b.c", "a/b.c", "a\\b.c", "a\"b.c", "d.c$x", "d.c\0",
        ] {
            assert!(
                matches!(Namespace::parse(bad), Err(Error::InvalidNamespace(_))),
                "{bad:?} accepted"
            );
        }
        let long_db = "d".repeat(64);
        assert!(Namespace::parse(&long_db).is_err());
        assert!(Namespace::parse(&"d".repeat(63)).is_ok());
        let long_coll = format!("db.{}", "c".repeat(253));
        assert!(Namespace::parse(&long_coll).is_err());
        assert!(Namespace::parse(&format!("db.{}", "c".repeat(252))).is_ok());
    }

    #[test]
    fn positions_round_trip_through_serde() {
        let token: ResumeToken = bson::from_document(doc! {"_data": "8263A5"}).unwrap();
        let ts = Timestamp {
            time: 1_700_000_000,
            increment: 7,
        };
        for p in [
            Position::Oplog(ts),
            Position::ResumeToken(token),
            Position::Direct,
        ] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(
                serde_json::from_str::<Position>(&json).unwrap(),
                p,
                "{json}"
            );
            let bson = bson::to_bson(&p).unwrap();
            assert_eq!(
                bson::from_bson::<Position>(bson.clone()).unwrap(),
                p,
                "{bson}"
            );
        }
    }

    #[test]
    fn helpers_and_map() {
        let ns = Namespace::parse("a.b").unwrap();
        let op: Op = Op::new(OpKind::Update, ns.clone(), Some(Bson::Int32(7)));
        assert!(op.is_update() && op.needs_fetch() && !op.is_command());
        assert_eq!(op.document_key, Some(doc! {"_id": 7}));
        let op = op.with_data(doc! {"_id": 7});
        assert!(!op.needs_fetch());
        let mapped: std::result::Result<Op<i32>, &str> = op.try_map_data(|_| Err("no"));
        assert_eq!(mapped.unwrap_err(), "no");
        let drop: Op = Op::new(
            OpKind::DropDatabase,
            Namespace::database("a").unwrap(),
            None,
        );
        assert!(drop.is_drop() && drop.is_drop_database() && drop.is_command());
        let rename: Op = Op::new(
            OpKind::Rename { to: ns },
            Namespace::parse("a.c").unwrap(),
            None,
        );
        assert!(rename.is_rename() && !rename.is_drop());
    }
}
