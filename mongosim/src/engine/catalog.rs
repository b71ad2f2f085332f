//! The catalog: databases -> collections (UUID, options, documents, indexes).
//!
//! `Catalog` is `Clone` and separate from the oplog (contract §4), so a transaction can
//! work on a snapshot. Every mutating method returns the oplog operations it produced
//! (`op`, `ns`, `ui`, `o`, `o2`, … without `ts`/`t`/`v`/`wall`); the engine stamps them.
//! Views live as documents of `<db>.system.views`, as on a real server
//! (SRV `durable_view_catalog.cpp`).

use super::names;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::query::compare::cmp_bson;
use crate::ServerVersion;
use bson::{doc, Bson, Document, RawDocumentBuf, Uuid};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Largest user document (reference §8.5, SRV `BSONObjMaxUserSize`).
pub(crate) const MAX_USER_DOC: usize = 16 * 1024 * 1024;

/// A BSON value ordered by the server's comparison rules (so `1`, `1.0` and `Long(1)`
/// are the same key, as in a real `_id` index).
#[derive(Debug, Clone)]
pub(crate) struct Key(pub(crate) Bson);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        cmp_bson(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_bson(&self.0, &other.0)
    }
}

/// A stored document: parsed for matching, encoded for serving.
#[derive(Debug, Clone)]
pub(crate) struct StoredDoc {
    /// The document.
    pub(crate) doc: Document,
    /// Its encoding.
    pub(crate) raw: RawDocumentBuf,
}

/// Capped collection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Capped {
    /// Byte cap (rounded up to a multiple of 256 as the server stores it).
    pub(crate) size: i64,
    /// Document cap, if any.
    pub(crate) max: Option<i64>,
}

/// An index: its spec plus (for unique indexes) the key -> record ids map.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    /// `{v: 2, key: {...}, name: "...", unique?, ...}` as listIndexes shows it.
    pub(crate) spec: Document,
    /// Key fields in order.
    pub(crate) fields: Vec<String>,
    /// Unique constraint.
    pub(crate) unique: bool,
    /// Sparse: documents missing every key field are not indexed.
    pub(crate) sparse: bool,
    entries: BTreeMap<Vec<Key>, BTreeSet<u64>>,
}

impl Index {
    /// The index name.
    pub(crate) fn name(&self) -> &str {
        self.spec.get_str("name").unwrap_or("")
    }
    /// The key pattern.
    pub(crate) fn key_pattern(&self) -> Document {
        self.spec.get_document("key").cloned().unwrap_or_default()
    }

    /// Index keys of `doc` (several when a key field is an array: multikey).
    fn keys_of(&self, doc: &Document) -> Option<Vec<Vec<Key>>> {
        let mut any = false;
        let mut keys: Vec<Vec<Key>> = vec![Vec::new()];
        for f in &self.fields {
            let vals = path_values(doc, f);
            let vals = if vals.is_empty() {
                vec![Bson::Null]
            } else {
                any = true;
                vals
            };
            let mut next = Vec::new();
            for k in &keys {
                for v in &vals {
                    let mut k2 = k.clone();
                    k2.push(Key(v.clone()));
                    next.push(k2);
                }
                if next.len() > 4096 {
                    break;
                }
            }
            keys = next;
        }
        if self.sparse && !any {
            return None;
        }
        keys.sort();
        keys.dedup();
        Some(keys)
    }
}

/// Values at a dotted path, expanding arrays like an index does (an array contributes
/// its elements; an empty array contributes `undefined`, indexed as such).
fn path_values(doc: &Document, path: &str) -> Vec<Bson> {
    fn walk(v: &Bson, parts: &[&str], out: &mut Vec<Bson>) {
        if parts.is_empty() {
            match v {
                Bson::Array(a) if a.is_empty() => out.push(Bson::Undefined),
                Bson::Array(a) => out.extend(a.iter().cloned()),
                other => out.push(other.clone()),
            }
            return;
        }
        match v {
            Bson::Document(d) => {
                if let Some(x) = d.get(parts[0]) {
                    walk(x, &parts[1..], out)
                }
            }
            Bson::Array(a) => {
                if let Ok(i) = parts[0].parse::<usize>() {
                    if let Some(x) = a.get(i) {
                        walk(x, &parts[1..], out);
                    }
                }
                for e in a {
                    if let Bson::Document(d) = e {
                        if let Some(x) = d.get(parts[0]) {
                            walk(x, &parts[1..], out)
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    if let Some(first) = doc.get(parts[0]) {
        walk(first, &parts[1..], &mut out);
    }
    out
}

/// A collection.
#[derive(Debug, Clone)]
pub(crate) struct Collection {
    /// Stable for the collection's lifetime (rename keeps it; drop + create gets a new one).
    pub(crate) uuid: Uuid,
    /// Create options as `listCollections` reports them.
    pub(crate) options: Document,
    /// Capped limits.
    pub(crate) capped: Option<Capped>,
    /// Indexes; `_id_` first (absent only on collections created with `autoIndexId: false`).
    pub(crate) indexes: Vec<Index>,
    /// On a shard: the key pattern of a sharded collection, so its oplog entries carry the
    /// shard-key fields in their document keys (set by the router, `commands/shardsvr.rs`).
    pub(crate) shard_key: Option<Document>,
    /// On a shard: shard-key ranges `[min, max)` whose documents this shard holds but does
    /// not own (migrated away and awaiting the range deleter, or being received). Reads and
    /// writes a router sends (`shardVersion`, [`super::versioned`]) do not see them.
    pub(crate) orphans: Vec<(Document, Document)>,
    docs: BTreeMap<u64, StoredDoc>,
    ids: BTreeMap<Key, u64>,
    next_rid: u64,
    data_size: u64,
}

/// The document key of `doc` under shard key `pattern`: each key field present in `doc` (by
/// its dotted path), then `_id` unless the key holds it.
pub(crate) fn document_key(pattern: &Document, doc: &Document) -> Document {
    let mut out = Document::new();
    for field in pattern.keys() {
        if let Some(v) = crate::query::path::get_path(doc, field) {
            out.insert(field.clone(), v.clone());
        }
    }
    if !out.contains_key("_id") {
        out.insert("_id", doc.get("_id").cloned().unwrap_or(Bson::Null));
    }
    out
}

/// The shard-key value of `doc` as chunks are keyed (SRV `ShardKeyPattern::
/// extractShardKeyFromDoc`): each field's value, null when missing (4.4+), hashed fields as
/// `Long(hash64(value))`.
pub(crate) fn shard_key_value(pattern: &Document, doc: &Document) -> Document {
    pattern
        .iter()
        .map(|(f, kind)| {
            let v = crate::query::path::get_path(doc, f)
                .cloned()
                .unwrap_or(Bson::Null);
            let v = if kind.as_str() == Some("hashed") {
                Bson::Int64(crate::hasher::hash64(&v))
            } else {
                v
            };
            (f.clone(), v)
        })
        .collect()
}

/// Compares two shard-key values field by field in BSON order (`BSONObj::woCompare`
/// without field names).
pub(crate) fn cmp_keys(a: &Document, b: &Document) -> Ordering {
    for (x, y) in a.values().zip(b.values()) {
        let o = cmp_bson(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Whether `key` falls in one of the `[min, max)` ranges.
pub(crate) fn in_ranges(ranges: &[(Document, Document)], key: &Document) -> bool {
    ranges.iter().any(|(min, max)| {
        cmp_keys(min, key) != Ordering::Greater && cmp_keys(key, max) == Ordering::Less
    })
}

/// The `_id` index spec (reference §7.1).
pub(crate) fn id_index_spec() -> Document {
    doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}
}

impl Collection {
    fn new(options: Document, capped: Option<Capped>) -> Self {
        let mut c = Collection {
            uuid: Uuid::new(),
            options,
            capped,
            indexes: Vec::new(),
            shard_key: None,
            orphans: Vec::new(),
            docs: BTreeMap::new(),
            ids: BTreeMap::new(),
            next_rid: 1,
            data_size: 0,
        };
        c.indexes.push(Index {
            spec: id_index_spec(),
            fields: vec!["_id".into()],
            unique: true,
            sparse: false,
            entries: BTreeMap::new(),
        });
        c
    }

    /// The document key logged for `doc`: `{_id}`, or on a shard the shard-key fields then
    /// `_id` (SRV `op_observer_util.cpp` `getDocumentKey` / `DocumentKey::getShardKeyAndId`:
    /// `extractElementsBasedOnTemplate` leaves missing fields out; reference
    /// sharded-clusters.md §4.1).
    pub(crate) fn document_key(&self, doc: &Document) -> Document {
        match &self.shard_key {
            Some(pattern) => document_key(pattern, doc),
            None => doc! {"_id": doc.get("_id").cloned().unwrap_or(Bson::Null)},
        }
    }

    /// Whether a stored document is visible to this command: always, except an orphan to a
    /// command a router sent (SRV `ShardFilterer`, reference sharded-clusters.md §4.2).
    fn visible(&self, sd: &StoredDoc) -> bool {
        if self.orphans.is_empty() || !super::versioned() {
            return true;
        }
        let Some(pattern) = &self.shard_key else {
            return true;
        };
        !in_ranges(&self.orphans, &shard_key_value(pattern, &sd.doc))
    }

    /// Number of documents (visible to this command).
    pub(crate) fn count(&self) -> usize {
        if self.orphans.is_empty() || !super::versioned() {
            return self.docs.len();
        }
        self.docs.values().filter(|d| self.visible(d)).count()
    }
    /// Sum of the documents' BSON sizes.
    pub(crate) fn data_size(&self) -> u64 {
        self.data_size
    }
    /// Documents in insertion (`$natural`) order with their record ids.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &StoredDoc)> + '_ {
        self.docs
            .iter()
            .filter(|(_, v)| self.visible(v))
            .map(|(k, v)| (*k, v))
    }
    /// Documents from record id `rid` on.
    pub(crate) fn iter_from(&self, rid: u64) -> impl Iterator<Item = (u64, &StoredDoc)> + '_ {
        self.docs
            .range(rid..)
            .filter(|(_, v)| self.visible(v))
            .map(|(k, v)| (*k, v))
    }
    /// Smallest stored record id.
    pub(crate) fn first_rid(&self) -> Option<u64> {
        self.docs.keys().next().copied()
    }
    /// Whether record `rid` exists.
    pub(crate) fn has_rid(&self, rid: u64) -> bool {
        self.docs.contains_key(&rid)
    }
    /// Document by record id.
    pub(crate) fn get(&self, rid: u64) -> Option<&StoredDoc> {
        self.docs.get(&rid)
    }
    /// Record id of the document with this `_id`.
    pub(crate) fn rid_by_id(&self, id: &Bson) -> Option<u64> {
        let rid = self.ids.get(&Key(id.clone())).copied()?;
        self.docs.get(&rid).filter(|d| self.visible(d)).map(|_| rid)
    }
    /// Record ids in `_id` order (BSON order, the `_id` index), restricted to `_id`s within
    /// `bounds`; newest-last or reversed.
    pub(crate) fn rids_by_id_range(
        &self,
        bounds: (std::ops::Bound<Bson>, std::ops::Bound<Bson>),
        reverse: bool,
    ) -> Box<dyn Iterator<Item = u64> + '_> {
        use std::ops::Bound;
        let conv = |b: Bound<Bson>| match b {
            Bound::Included(v) => Bound::Included(Key(v)),
            Bound::Excluded(v) => Bound::Excluded(Key(v)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (lo, hi) = (conv(bounds.0), conv(bounds.1));
        // an empty or inverted range has no documents (BTreeMap::range would panic)
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) =
            (&lo, &hi)
        {
            let exclusive = matches!(lo, Bound::Excluded(_)) || matches!(hi, Bound::Excluded(_));
            if l > h || (l == h && exclusive) {
                return Box::new(std::iter::empty());
            }
        }
        let range = self
            .ids
            .range((lo, hi))
            .map(|(_, r)| *r)
            .filter(|r| self.docs.get(r).is_some_and(|d| self.visible(d)));
        if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        }
    }
    /// The index named `name`.
    pub(crate) fn index(&self, name: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.name() == name)
    }
    /// Whether this is a capped collection.
    pub(crate) fn is_capped(&self) -> bool {
        self.capped.is_some()
    }

    /// E11000 for `doc` against every unique index (ignoring record `skip`).
    fn check_unique(&self, ns: &str, doc: &Document, skip: Option<u64>) -> CmdResult<()> {
        for ix in self.indexes.iter().filter(|i| i.unique) {
            let Some(keys) = ix.keys_of(doc) else {
                continue;
            };
            for k in keys {
                if let Some(rids) = ix.entries.get(&k) {
                    if rids.iter().any(|r| Some(*r) != skip) {
                        return Err(dup_key_error(ns, ix, &k));
                    }
                }
            }
        }
        Ok(())
    }

    fn index_add(&mut self, rid: u64, doc: &Document) {
        for ix in self.indexes.iter_mut().filter(|i| i.unique) {
            if let Some(keys) = ix.keys_of(doc) {
                for k in keys {
                    ix.entries.entry(k).or_default().insert(rid);
                }
            }
        }
    }

    fn index_remove(&mut self, rid: u64, doc: &Document) {
        for ix in self.indexes.iter_mut().filter(|i| i.unique) {
            if let Some(keys) = ix.keys_of(doc) {
                for k in keys {
                    if let Some(set) = ix.entries.get_mut(&k) {
                        set.remove(&rid);
                        if set.is_empty() {
                            ix.entries.remove(&k);
                        }
                    }
                }
            }
        }
    }

    fn put(&mut self, rid: u64, doc: Document, raw: RawDocumentBuf) {
        self.data_size += raw.as_bytes().len() as u64;
        if let Some(id) = doc.get("_id") {
            self.ids.insert(Key(id.clone()), rid);
        }
        self.index_add(rid, &doc);
        self.docs.insert(rid, StoredDoc { doc, raw });
    }

    fn take(&mut self, rid: u64) -> Option<StoredDoc> {
        let sd = self.docs.remove(&rid)?;
        self.data_size -= sd.raw.as_bytes().len() as u64;
        if let Some(id) = sd.doc.get("_id") {
            if self.ids.get(&Key(id.clone())) == Some(&rid) {
                self.ids.remove(&Key(id.clone()));
            }
        }
        self.index_remove(rid, &sd.doc);
        Some(sd)
    }

    /// Removes the oldest documents beyond the capped limits (not logged: every node trims
    /// its own capped collections).
    fn trim_capped(&mut self) {
        let Some(c) = self.capped else { return };
        let size = c.size.max(4096) as u64; // WiredTiger minimum cap of 4096 bytes
        while self.docs.len() > 1
            && (self.data_size > size || c.max.is_some_and(|m| m > 0 && self.docs.len() as i64 > m))
        {
            let Some(rid) = self.first_rid() else { break };
            self.take(rid);
        }
    }
}

/// The E11000 write error with `keyPattern`/`keyValue` (SRV `duplicate_key_error_info.cpp`,
/// reference §8.2).
fn dup_key_error(ns: &str, ix: &Index, key: &[Key]) -> CommandError {
    let pattern = ix.key_pattern();
    let mut value = Document::new();
    let mut shown = Vec::new();
    for ((field, _), k) in pattern.iter().zip(key.iter()) {
        value.insert(field.clone(), k.0.clone());
        shown.push(format!("{}: {}", field, crate::query::fmt::value(&k.0)));
    }
    CommandError::duplicate_key(format!(
        "E11000 duplicate key error collection: {ns} index: {} dup key: {{ {} }}",
        ix.name(),
        shown.join(", ")
    ))
    .with_extra("keyPattern", pattern)
    .with_extra("keyValue", value)
}

/// A database.
#[derive(Debug, Clone, Default)]
pub(crate) struct Database {
    /// Collections by name (including `system.views`).
    pub(crate) colls: BTreeMap<String, Collection>,
}

/// A view definition (a document of `<db>.system.views`).
#[derive(Debug, Clone)]
pub(crate) struct ViewDef {
    /// The source collection/view name (same database).
    pub(crate) view_on: String,
    /// The view pipeline.
    pub(crate) pipeline: Vec<Bson>,
    /// Optional collation.
    pub(crate) collation: Option<Document>,
}

/// What a namespace currently is.
#[derive(Debug, Clone)]
pub(crate) enum NsKind<'a> {
    /// Nothing.
    Missing,
    /// A collection.
    Collection(&'a Collection),
    /// A view.
    View(ViewDef),
}

/// All databases (cloneable snapshot of the data).
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    /// Databases by name.
    pub(crate) dbs: BTreeMap<String, Database>,
    /// Oplog format to produce.
    pub(crate) version: ServerVersion,
    /// Images of updates/deletes on collections with `changeStreamPreAndPostImages`,
    /// waiting for their oplog entry (consumed by `Engine` when it stamps the entry;
    /// `commands/change_stream.rs`).
    pub(crate) images: super::images::ImageLog,
}

fn ns_of(db: &str, coll: &str) -> String {
    format!("{db}.{coll}")
}

fn cmd_ns(db: &str) -> String {
    format!("{db}.$cmd")
}

/// `appendNumber(long long)`: Int32 when |n| < 2^30, else Int64 (SRV `bsonobjbuilder.h`).
fn append_number(n: i64) -> Bson {
    if -(1 << 30) < n && n < (1 << 30) {
        Bson::Int32(n as i32)
    } else {
        Bson::Int64(n)
    }
}

fn num_i64(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(*i as i64),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) if d.is_finite() => Some(*d as i64),
        Bson::Decimal128(_) => crate::query::compare::as_f64(v).map(|f| f as i64),
        _ => None,
    }
}

/// Encodes a document, enforcing the 16 MiB user limit with the insert error (code 2,
/// "object to insert too large", SRV `insert.cpp` `fixDocumentForInsert`, reference §8.5).
pub(crate) fn encode_for_insert(doc: &Document) -> CmdResult<RawDocumentBuf> {
    let raw = RawDocumentBuf::from_document(doc)
        .map_err(|e| CommandError::bad_value(format!("cannot encode document: {e}")))?;
    let n = raw.as_bytes().len();
    if n > MAX_USER_DOC {
        return Err(CommandError::bad_value(format!(
            "object to insert too large. size in bytes: {n}, max size: {MAX_USER_DOC}"
        )));
    }
    Ok(raw)
}

impl Catalog {
    /// An empty catalog producing oplog ops for `version`.
    pub(crate) fn new(version: ServerVersion) -> Self {
        Self {
            dbs: BTreeMap::new(),
            version,
            images: Default::default(),
        }
    }

    /// The collection `db.coll`, if it exists.
    pub(crate) fn coll(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.dbs.get(db)?.colls.get(coll)
    }

    pub(crate) fn coll_mut(&mut self, db: &str, coll: &str) -> Option<&mut Collection> {
        self.dbs.get_mut(db)?.colls.get_mut(coll)
    }

    /// The view `db.name`, if defined.
    pub(crate) fn view(&self, db: &str, name: &str) -> Option<ViewDef> {
        let views = self.coll(db, "system.views")?;
        let id = Bson::String(ns_of(db, name));
        let rid = views.rid_by_id(&id)?;
        let d = &views.get(rid)?.doc;
        Some(ViewDef {
            view_on: d.get_str("viewOn").unwrap_or("").to_string(),
            pipeline: d.get_array("pipeline").cloned().unwrap_or_default(),
            collation: d.get_document("collation").ok().cloned(),
        })
    }

    /// All views of a database, by name.
    pub(crate) fn views(&self, db: &str) -> Vec<(String, ViewDef)> {
        let Some(views) = self.coll(db, "system.views") else {
            return Vec::new();
        };
        let prefix = format!("{db}.");
        let mut out: Vec<(String, ViewDef)> = views
            .iter()
            .filter_map(|(_, sd)| {
                let id = sd.doc.get_str("_id").ok()?;
                let name = id.strip_prefix(&prefix)?;
                Some((
                    name.to_string(),
                    ViewDef {
                        view_on: sd.doc.get_str("viewOn").unwrap_or("").to_string(),
                        pipeline: sd.doc.get_array("pipeline").cloned().unwrap_or_default(),
                        collation: sd.doc.get_document("collation").ok().cloned(),
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// What `db.name` is.
    pub(crate) fn kind(&self, db: &str, name: &str) -> NsKind<'_> {
        if let Some(c) = self.coll(db, name) {
            return NsKind::Collection(c);
        }
        match self.view(db, name) {
            Some(v) => NsKind::View(v),
            None => NsKind::Missing,
        }
    }

    // ------------------------------------------------------------------ DDL

    /// Creates a collection with create `options` (already validated by the command
    /// layer); 48 NamespaceExists if the name is taken.
    pub(crate) fn create_collection(
        &mut self,
        db: &str,
        coll: &str,
        options: &Document,
    ) -> CmdResult<Vec<Document>> {
        if !matches!(self.kind(db, coll), NsKind::Missing) {
            return Err(CommandError::from_code(
                ErrorCode::NamespaceExists,
                format!("Collection {} already exists.", ns_of(db, coll)),
            ));
        }
        if !self.dbs.contains_key(db) {
            if let Some(other) = self.dbs.keys().find(|d| d.eq_ignore_ascii_case(db)) {
                // SRV database_holder_impl.cpp (reference §8.4)
                return Err(CommandError::from_code(
                    ErrorCode::DatabaseDifferCase,
                    format!(
                        "db already exists with different case already have: [{other}] trying to create [{db}]"
                    ),
                ));
            }
        }
        let mut stored = Document::new();
        let mut capped = None;
        let mut auto_index_id = true;
        if options.get_bool("capped").unwrap_or(false) {
            // SRV collection_options.cpp: size rounded up to a multiple of 256
            let size = options.get("size").and_then(num_i64).unwrap_or(0);
            let size = (size + 0xff) & !0xff;
            let max = options.get("max").and_then(num_i64).filter(|m| *m > 0);
            stored.insert("capped", true);
            stored.insert("size", append_number(size));
            if let Some(m) = max {
                stored.insert("max", append_number(m));
            }
            capped = Some(Capped { size, max });
        }
        for (k, v) in options {
            match k.as_str() {
                "capped" | "size" | "max" => {}
                "autoIndexId" => {
                    auto_index_id = v.as_bool().unwrap_or(true);
                    stored.insert(k.clone(), v.clone());
                }
                _ => {
                    stored.insert(k.clone(), v.clone());
                }
            }
        }
        let mut c = Collection::new(stored.clone(), capped);
        if !auto_index_id {
            c.indexes.clear();
        }
        // SRV oplog_entry.cpp makeCreateCollCmdObj: create, options, idIndex
        let mut o = doc! {"create": coll};
        for (k, v) in &stored {
            o.insert(k.clone(), v.clone());
        }
        if auto_index_id {
            o.insert("idIndex", id_index_spec());
        }
        let op = doc! {"op": "c", "ns": cmd_ns(db), "ui": c.uuid, "o": o};
        self.dbs
            .entry(db.to_string())
            .or_default()
            .colls
            .insert(coll.to_string(), c);
        Ok(vec![op])
    }

    /// [`Catalog::create_collection`] with a given UUID: a sharded collection has one UUID on
    /// every shard.
    pub(crate) fn create_collection_with_uuid(
        &mut self,
        db: &str,
        coll: &str,
        options: &Document,
        uuid: Uuid,
    ) -> CmdResult<Vec<Document>> {
        let mut ops = self.create_collection(db, coll, options)?;
        if let Some(c) = self.coll_mut(db, coll) {
            c.uuid = uuid;
        }
        for op in &mut ops {
            if op.contains_key("ui") {
                op.insert("ui", uuid);
            }
        }
        Ok(ops)
    }

    /// Creates the collection if it does not exist (implicit creation on first write,
    /// reference §4.8); returns the `create` op if one was made.
    pub(crate) fn ensure_collection(&mut self, db: &str, coll: &str) -> CmdResult<Vec<Document>> {
        if self.coll(db, coll).is_some() {
            return Ok(Vec::new());
        }
        names::check_create_ns(db, coll)?;
        self.create_collection(db, coll, &Document::new())
    }

    /// Defines a view: stored in `<db>.system.views` (created implicitly).
    pub(crate) fn create_view(
        &mut self,
        db: &str,
        name: &str,
        view_on: &str,
        pipeline: Vec<Bson>,
        collation: Option<Document>,
    ) -> CmdResult<Vec<Document>> {
        if !matches!(self.kind(db, name), NsKind::Missing) {
            return Err(CommandError::from_code(
                ErrorCode::NamespaceExists,
                format!("Namespace {} already exists", ns_of(db, name)),
            ));
        }
        let mut ops = self.ensure_collection(db, "system.views")?;
        let mut vdoc = doc! {"_id": ns_of(db, name), "viewOn": view_on, "pipeline": pipeline};
        if let Some(c) = collation {
            vdoc.insert("collation", c);
        }
        let (_, op) = self.insert_doc(db, "system.views", vdoc)?;
        ops.push(op);
        Ok(ops)
    }

    /// Drops a collection or view. `None` when nothing existed.
    pub(crate) fn drop_ns(&mut self, db: &str, name: &str) -> CmdResult<Option<Vec<Document>>> {
        if let Some(c) = self.dbs.get_mut(db).and_then(|d| d.colls.remove(name)) {
            let op = doc! {
                "op": "c", "ns": cmd_ns(db), "ui": c.uuid,
                "o": {"drop": name},
                "o2": {"numRecords": c.count() as i32},
            };
            self.prune_db(db);
            return Ok(Some(vec![op]));
        }
        if self.view(db, name).is_some() {
            let views = self.coll(db, "system.views");
            let rid = views.and_then(|v| v.rid_by_id(&Bson::String(ns_of(db, name))));
            if let Some(rid) = rid {
                let op = self.delete_doc(db, "system.views", rid)?;
                return Ok(Some(vec![op]));
            }
        }
        Ok(None)
    }

    fn prune_db(&mut self, db: &str) {
        if self.dbs.get(db).is_some_and(|d| d.colls.is_empty()) {
            self.dbs.remove(db);
        }
    }

    /// dropDatabase: a `drop` per collection (`system.views` last), then `{dropDatabase: 1}`.
    /// `None` if the database did not exist.
    pub(crate) fn drop_database(&mut self, db: &str) -> CmdResult<Option<Vec<Document>>> {
        let Some(d) = self.dbs.get(db) else {
            return Ok(None);
        };
        let mut names: Vec<String> = d.colls.keys().cloned().collect();
        names.sort_by_key(|n| n == "system.views");
        let mut ops = Vec::new();
        for n in names {
            if let Some(mut o) = self.drop_ns(db, &n)? {
                ops.append(&mut o);
            }
        }
        ops.push(doc! {"op": "c", "ns": cmd_ns(db), "o": {"dropDatabase": 1}});
        self.dbs.remove(db);
        Ok(Some(ops))
    }

    /// renameCollection within or across databases. The command layer validated names and
    /// existence of the source.
    pub(crate) fn rename(
        &mut self,
        from: (&str, &str),
        to: (&str, &str),
        drop_target: bool,
    ) -> CmdResult<Vec<Document>> {
        let (fdb, fcoll) = from;
        let (tdb, tcoll) = to;
        let Some(src) = self.coll(fdb, fcoll) else {
            return Err(CommandError::namespace_not_found(
                "source namespace does not exist",
            ));
        };
        let src_uuid = src.uuid;
        let target_exists = !matches!(self.kind(tdb, tcoll), NsKind::Missing);
        if target_exists && !drop_target {
            return Err(CommandError::from_code(
                ErrorCode::NamespaceExists,
                "target namespace exists",
            ));
        }
        if let NsKind::View(_) = self.kind(tdb, tcoll) {
            return Err(CommandError::from_code(
                ErrorCode::CommandNotSupportedOnView,
                format!(
                    "Namespace {} is a view, not a collection",
                    ns_of(tdb, tcoll)
                ),
            ));
        }
        let mut ops = Vec::new();
        if fdb == tdb {
            // SRV op_observer_impl.cpp preRenameCollection
            let mut o = doc! {"renameCollection": ns_of(fdb, fcoll), "to": ns_of(tdb, tcoll)};
            let mut o2 = None;
            if let Some(t) = self.dbs.get_mut(tdb).and_then(|d| d.colls.remove(tcoll)) {
                o.insert("stayTemp", false);
                o.insert("dropTarget", t.uuid);
                o2 = Some(doc! {"numRecords": t.count() as i32});
            } else {
                o.insert("stayTemp", false);
            }
            let mut op = doc! {"op": "c", "ns": cmd_ns(fdb), "ui": src_uuid, "o": o};
            if let Some(o2) = o2 {
                op.insert("o2", o2);
            }
            ops.push(op);
            if let Some(c) = self.dbs.get_mut(fdb).and_then(|d| d.colls.remove(fcoll)) {
                self.dbs
                    .entry(tdb.to_string())
                    .or_default()
                    .colls
                    .insert(tcoll.to_string(), c);
            }
            return Ok(ops);
        }
        // Across databases the server copies into a temporary collection of the target
        // database, renames it over the target and drops the source
        // (SRV rename_collection.cpp renameBetweenDBs).
        let tmp = format!("tmp{}.renameCollection", random_suffix());
        let src = self
            .coll(fdb, fcoll)
            .cloned()
            .ok_or_else(|| CommandError::namespace_not_found("source namespace does not exist"))?;
        let mut opts = src.options.clone();
        opts.remove("autoIndexId");
        ops.extend(self.create_collection(tdb, &tmp, &opts)?);
        for ix in src.indexes.iter().filter(|i| i.name() != "_id_") {
            ops.extend(self.create_indexes(tdb, &tmp, vec![ix.spec.clone()])?);
        }
        for (_, sd) in src.iter() {
            let (_, op) = self.insert_doc(tdb, &tmp, sd.doc.clone())?;
            ops.push(op);
        }
        ops.extend(self.rename((tdb, &tmp), (tdb, tcoll), drop_target)?);
        if let Some(mut d) = self.drop_ns(fdb, fcoll)? {
            ops.append(&mut d);
        }
        Ok(ops)
    }

    /// createIndexes with validated specs (`{key, name, unique?, ...}`); existing identical
    /// indexes are skipped. Returns ops and the number of indexes before.
    pub(crate) fn create_indexes(
        &mut self,
        db: &str,
        coll: &str,
        specs: Vec<Document>,
    ) -> CmdResult<Vec<Document>> {
        let ns = ns_of(db, coll);
        let Some(c) = self.coll_mut(db, coll) else {
            return Err(CommandError::namespace_not_found(format!(
                "ns {ns} does not exist"
            )));
        };
        let mut new_ix = Vec::new();
        for spec in specs {
            let key = spec.get_document("key").cloned().unwrap_or_default();
            let name = spec.get_str("name").unwrap_or("").to_string();
            if let Some(existing) = c.indexes.iter().find(|i| i.name() == name) {
                if existing.key_pattern() == key {
                    continue;
                }
                return Err(CommandError::from_code(
                    ErrorCode::IndexKeySpecsConflict,
                    format!(
                        "An existing index has the same name as the requested index. When index names are not specified, they are auto generated and can cause conflicts. Please refer to our documentation. Requested index: {spec}, existing index: {}",
                        existing.spec
                    ),
                ));
            }
            if let Some(existing) = c.indexes.iter().find(|i| i.key_pattern() == key) {
                return Err(CommandError::from_code(
                    ErrorCode::IndexOptionsConflict,
                    format!(
                        "Index already exists with a different name: {}",
                        existing.name()
                    ),
                ));
            }
            let mut full = doc! {"v": 2, "key": key.clone(), "name": name};
            for (k, v) in &spec {
                if !matches!(k.as_str(), "v" | "key" | "name" | "ns") {
                    full.insert(k.clone(), v.clone());
                }
            }
            let mut ix = Index {
                fields: key.keys().cloned().collect(),
                unique: spec.get_bool("unique").unwrap_or(false),
                sparse: spec.get_bool("sparse").unwrap_or(false),
                spec: full,
                entries: BTreeMap::new(),
            };
            if ix.unique {
                for (rid, sd) in c.docs.iter() {
                    if let Some(keys) = ix.keys_of(&sd.doc) {
                        for k in keys {
                            let set = ix.entries.entry(k.clone()).or_default();
                            if !set.is_empty() {
                                return Err(dup_key_error(&ns, &ix, &k));
                            }
                            set.insert(*rid);
                        }
                    }
                }
            }
            new_ix.push(ix);
        }
        let empty = c.count() == 0;
        let uuid = c.uuid;
        let specs: Vec<Document> = new_ix.iter().map(|i| i.spec.clone()).collect();
        c.indexes.extend(new_ix);
        let mut ops = Vec::new();
        if specs.is_empty() {
            return Ok(ops);
        }
        if empty {
            // single-phase build on an empty collection: one createIndexes entry per index
            for spec in specs {
                let mut o = doc! {"createIndexes": coll};
                for (k, v) in spec {
                    o.insert(k, v);
                }
                ops.push(doc! {"op": "c", "ns": cmd_ns(db), "ui": uuid, "o": o});
            }
        } else {
            // two-phase index build (4.4+): startIndexBuild + commitIndexBuild
            let build = Uuid::new();
            let arr: Vec<Bson> = specs.into_iter().map(Bson::Document).collect();
            ops.push(doc! {"op": "c", "ns": cmd_ns(db), "ui": uuid,
            "o": {"startIndexBuild": coll, "indexBuildUUID": build, "indexes": arr.clone()}});
            ops.push(doc! {"op": "c", "ns": cmd_ns(db), "ui": uuid,
            "o": {"commitIndexBuild": coll, "indexBuildUUID": build, "indexes": arr}});
        }
        Ok(ops)
    }

    /// Drops indexes by name (`_id_` is refused by the command layer).
    pub(crate) fn drop_indexes(
        &mut self,
        db: &str,
        coll: &str,
        names: &[String],
    ) -> CmdResult<Vec<Document>> {
        let Some(c) = self.coll_mut(db, coll) else {
            return Err(CommandError::namespace_not_found(format!(
                "ns not found {}",
                ns_of(db, coll)
            )));
        };
        let mut ops = Vec::new();
        for n in names {
            if let Some(pos) = c.indexes.iter().position(|i| i.name() == n) {
                let ix = c.indexes.remove(pos);
                // SRV op_observer_impl.cpp onDropIndex: o2 = the dropped index spec
                ops.push(doc! {"op": "c", "ns": cmd_ns(db), "ui": c.uuid,
                "o": {"dropIndexes": coll, "index": n.clone()}, "o2": ix.spec});
            }
        }
        Ok(ops)
    }

    /// collMod: merges `changes` into the stored options.
    pub(crate) fn coll_mod(
        &mut self,
        db: &str,
        coll: &str,
        changes: &Document,
    ) -> CmdResult<Vec<Document>> {
        let version = self.version;
        let Some(c) = self.coll_mut(db, coll) else {
            return Err(CommandError::namespace_not_found(format!(
                "ns does not exist: {}",
                ns_of(db, coll)
            )));
        };
        let mut old = Document::new();
        if let Some(cap) = c.capped.as_mut() {
            // collMod cappedSize / cappedMax (6.0+): new limits, applied on the next insert
            if let Some(size) = changes.get("cappedSize").and_then(num_i64) {
                cap.size = size;
                c.options.insert("size", append_number(size));
            }
            if let Some(max) = changes.get("cappedMax").and_then(num_i64) {
                cap.max = (max > 0).then_some(max);
                if max > 0 {
                    c.options.insert("max", append_number(max));
                } else {
                    c.options.remove("max");
                }
            }
        }
        for (k, v) in changes
            .iter()
            .filter(|(k, _)| *k != "cappedSize" && *k != "cappedMax")
        {
            if let Some(prev) = c.options.get(k) {
                old.insert(k.clone(), prev.clone());
            }
            c.options.insert(k.clone(), v.clone());
        }
        let mut o = doc! {"collMod": coll};
        for (k, v) in changes {
            o.insert(k.clone(), v.clone());
        }
        let mut op = doc! {"op": "c", "ns": cmd_ns(db), "ui": c.uuid, "o": o};
        if version != ServerVersion::V4_4 {
            op.insert("o2", doc! {"collectionOptions_old": old});
        }
        Ok(vec![op])
    }

    // ------------------------------------------------------------------ CRUD

    /// Inserts one document (creating the collection implicitly first); returns the new
    /// record id and the insert op. `_id` must already be present and first.
    pub(crate) fn insert_doc(
        &mut self,
        db: &str,
        coll: &str,
        doc: Document,
    ) -> CmdResult<(u64, Document)> {
        let raw = encode_for_insert(&doc)?;
        let version = self.version;
        let ns = ns_of(db, coll);
        let Some(c) = self.coll_mut(db, coll) else {
            return Err(CommandError::namespace_not_found(format!("{ns} not found")));
        };
        c.check_unique(&ns, &doc, None)?;
        let rid = c.next_rid;
        c.next_rid += 1;
        let mut op = doc! {"op": "i", "ns": ns, "ui": c.uuid, "o": doc.clone()};
        if version != ServerVersion::V4_4 {
            // 6.0+: o2 = document key (reference §4.3)
            op.insert("o2", c.document_key(&doc));
        }
        c.put(rid, doc, raw);
        c.trim_capped();
        Ok((rid, op))
    }

    /// Replaces record `rid` with `new_doc` (same `_id`), logging `o` (an update
    /// description built by the caller: `$v:2` diff, `$v:1` form, or the full replacement).
    pub(crate) fn update_doc(
        &mut self,
        db: &str,
        coll: &str,
        rid: u64,
        new_doc: Document,
        o: Document,
    ) -> CmdResult<Document> {
        let version = self.version;
        let ns = ns_of(db, coll);
        let Some(c) = self.coll_mut(db, coll) else {
            return Err(CommandError::namespace_not_found(format!("{ns} not found")));
        };
        let raw = RawDocumentBuf::from_document(&new_doc)
            .map_err(|e| CommandError::bad_value(format!("cannot encode document: {e}")))?;
        if raw.as_bytes().len() > MAX_USER_DOC {
            // SRV update_stage.cpp: "Resulting document after update is larger than 16777216"
            return Err(CommandError::from_code(
                ErrorCode::UpdatedDocumentTooLarge,
                format!("Resulting document after update is larger than {MAX_USER_DOC}"),
            ));
        }
        if c.capped.is_some() && version == ServerVersion::V4_4 {
            // 4.4: documents of capped collections keep their size (SRV 10003, SERVER-20529;
            // the restriction was lifted by SERVER-58865 in 5.0)
            if let Some(old) = c.docs.get(&rid) {
                if raw.as_bytes().len() != old.raw.as_bytes().len() {
                    return Err(CommandError::from_code(
                        ErrorCode::CannotGrowDocumentInCappedNamespace,
                        "Cannot change the size of a document in a capped collection",
                    ));
                }
            }
        }
        c.check_unique(&ns, &new_doc, Some(rid))?;
        let Some(old) = c.take(rid) else {
            return Err(CommandError::from_code(
                ErrorCode::PathNotViable,
                "document to update no longer exists",
            ));
        };
        let id = old.doc.get("_id").cloned().unwrap_or(Bson::Null);
        // Pre-/post-image for change streams (SRV `changeStreamPreAndPostImages`, §5.2).
        let image =
            super::images::images_enabled(&c.options).then(|| (old.doc.clone(), new_doc.clone()));
        let key = c.document_key(&new_doc);
        c.put(rid, new_doc, raw);
        let uuid = c.uuid;
        if let Some((pre, post)) = image {
            self.images.push(uuid, id, pre, Some(post));
        }
        Ok(doc! {"op": "u", "ns": ns, "ui": uuid, "o": o, "o2": key})
    }

    /// Deletes record `rid`; returns the delete op (`o: {_id}`, reference §4.7).
    pub(crate) fn delete_doc(&mut self, db: &str, coll: &str, rid: u64) -> CmdResult<Document> {
        let ns = ns_of(db, coll);
        let Some(c) = self.coll_mut(db, coll) else {
            return Err(CommandError::namespace_not_found(format!("{ns} not found")));
        };
        let Some(old) = c.take(rid) else {
            return Err(CommandError::from_code(
                ErrorCode::PathNotViable,
                "document to delete no longer exists",
            ));
        };
        let id = old.doc.get("_id").cloned().unwrap_or(Bson::Null);
        let uuid = c.uuid;
        let key = c.document_key(&old.doc);
        // Pre-image for change streams (SRV `changeStreamPreAndPostImages`, §5.2).
        if super::images::images_enabled(&c.options) {
            self.images.push(uuid, id, old.doc, None);
        }
        Ok(doc! {"op": "d", "ns": ns, "ui": uuid, "o": key})
    }
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..5)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_create_then_insert_ops() {
        let mut c = Catalog::new(ServerVersion::V7_0);
        let ops = c.ensure_collection("test", "c").unwrap();
        assert_eq!(ops.len(), 1);
        let o = ops[0].get_document("o").unwrap();
        assert_eq!(o.keys().collect::<Vec<_>>(), vec!["create", "idIndex"]);
        let (_, op) = c.insert_doc("test", "c", doc! {"_id": 1, "a": 1}).unwrap();
        assert_eq!(op.get_document("o2").unwrap(), &doc! {"_id": 1});
        let err = c.insert_doc("test", "c", doc! {"_id": 1.0}).unwrap_err();
        assert_eq!(err.code, 11000);
        assert_eq!(
            err.errmsg,
            "E11000 duplicate key error collection: test.c index: _id_ dup key: { _id: 1.0 }"
        );
    }

    #[test]
    fn v44_insert_has_no_o2() {
        let mut c = Catalog::new(ServerVersion::V4_4);
        c.ensure_collection("test", "c").unwrap();
        let (_, op) = c.insert_doc("test", "c", doc! {"_id": 1}).unwrap();
        assert!(op.get("o2").is_none());
    }

    #[test]
    fn capped_trims_oldest() {
        let mut c = Catalog::new(ServerVersion::V7_0);
        c.create_collection("t", "cap", &doc! {"capped": true, "size": 1000, "max": 2})
            .unwrap();
        let coll = c.coll("t", "cap").unwrap();
        assert_eq!(coll.options, doc! {"capped": true, "size": 1024, "max": 2});
        for i in 0..5 {
            c.insert_doc("t", "cap", doc! {"_id": i}).unwrap();
        }
        let ids: Vec<i32> = c
            .coll("t", "cap")
            .unwrap()
            .iter()
            .map(|(_, d)| d.doc.get_i32("_id").unwrap())
            .collect();
        assert_eq!(ids, vec![3, 4]);
    }

    #[test]
    fn rename_keeps_uuid_and_drop_create_changes_it() {
        let mut c = Catalog::new(ServerVersion::V7_0);
        c.ensure_collection("d", "a").unwrap();
        let u = c.coll("d", "a").unwrap().uuid;
        let ops = c.rename(("d", "a"), ("d", "b"), false).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(c.coll("d", "b").unwrap().uuid, u);
        c.drop_ns("d", "b").unwrap();
        c.ensure_collection("d", "b").unwrap();
        assert_ne!(c.coll("d", "b").unwrap().uuid, u);
    }

    #[test]
    fn unique_secondary_index() {
        let mut c = Catalog::new(ServerVersion::V7_0);
        c.ensure_collection("d", "u").unwrap();
        c.create_indexes(
            "d",
            "u",
            vec![doc! {"key": {"a": 1}, "name": "a_1", "unique": true}],
        )
        .unwrap();
        c.insert_doc("d", "u", doc! {"_id": 1, "a": "x"}).unwrap();
        let e = c
            .insert_doc("d", "u", doc! {"_id": 2, "a": "x"})
            .unwrap_err();
        assert_eq!(e.extra.get_document("keyPattern").unwrap(), &doc! {"a": 1});
        assert_eq!(e.extra.get_document("keyValue").unwrap(), &doc! {"a": "x"});
        assert!(e.errmsg.ends_with("index: a_1 dup key: { a: \"x\" }"));
    }
}
