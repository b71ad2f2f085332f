//! A consistent hash ring of named workers (gtm's `consistent` package), used by
//! [`consistent_shard`](crate::OpStreamExt::consistent_shard) to split the ops of one
//! deployment between several processes.
//!
//! # Algorithm (stable across processes, platforms and versions)
//!
//! All hashing is `h(bytes) = fmix64(fnv1a64(bytes))`: 64-bit FNV-1a (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`) followed by MurmurHash3's 64-bit finalizer
//! `fmix64` (for avalanche; FNV alone clusters short inputs). Nothing depends on the
//! platform, the process or a random seed, and the golden values in this module's tests
//! pin it: a change is a breaking change.
//!
//! - **Ring points**: every worker gets `replicas` virtual nodes (default
//!   [`HashRing::DEFAULT_REPLICAS`]). Point `i` of worker `name` is
//!   `h(len(name) as u32 LE ‖ name as UTF-8 ‖ i as u32 LE)`. Points are sorted by
//!   `(hash, name)`, so the ring does not depend on the order the workers were listed in.
//! - **Keys**: an op's key is its document id encoded as a BSON element value, the type
//!   byte followed by the value bytes exactly as they appear on the wire (so `1` as
//!   `int32` and `1` as `int64` are different keys, as they are different `_id`s on the
//!   server; an embedded document's field order matters, as on the server). An op with no
//!   id (commands) is keyed by its namespace, the UTF-8 bytes of `db.coll` (`db` for a
//!   database). A key belongs to the worker of the first point at or after `h(key)`,
//!   wrapping around.
//!
//! Adding one worker to `k` only moves keys to the new worker, about `1/(k+1)` of them.
//!
//! # Configuration
//!
//! From a list ([`HashRing::new`]), a TOML string or file ([`HashRing::from_toml_str`],
//! [`HashRing::from_toml_file`]) or a BSON document ([`HashRing::from_document`], so the
//! configuration can live in MongoDB), all of the shape
//! `workers = ["Tom", "Dick", "Harry"]` with an optional `replicas = 160` (TOML keys match
//! ignoring case, as in gtm: `Workers = [...]` works too).
//! An empty list, an empty or duplicate name, `replicas = 0` and a malformed file are
//! [`Error::Config`] errors; so is asking for a worker that is not in the ring
//! ([`HashRing::worker`]).

use std::fmt;
#[cfg(feature = "toml")]
use std::path::Path;
use std::sync::Arc;

use bson::{Bson, Document};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::op::{Namespace, Op};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Upper bound on [`HashRing::with_replicas`]' `replicas`, so a typo in a config file
/// cannot allocate gigabytes.
const MAX_REPLICAS: u32 = 10_000;

/// 64-bit FNV-1a followed by MurmurHash3's `fmix64`.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn point_hash(name: &str, replica: u32) -> u64 {
    let mut bytes = Vec::with_capacity(name.len() + 8);
    // Names are at most u32::MAX bytes in practice; a longer one is rejected in `build`.
    bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&replica.to_le_bytes());
    hash64(&bytes)
}

/// The canonical key bytes of a document id: BSON element type byte followed by the value
/// bytes as BSON encodes them.
pub(crate) fn id_key_bytes(id: &Bson) -> Vec<u8> {
    let mut doc = Document::new();
    doc.insert("", id.clone());
    let mut buf = Vec::new();
    match doc.to_writer(&mut buf) {
        // Layout: i32 length, type byte, key "" (one NUL), value bytes, document NUL.
        Ok(()) if buf.len() >= 7 => {
            let mut key = Vec::with_capacity(buf.len() - 6);
            key.push(buf[4]);
            key.extend_from_slice(&buf[6..buf.len() - 1]);
            key
        }
        // Not encodable as BSON (no id read from the server is like that): fall back to the
        // debug text, tagged with a byte no BSON type uses.
        _ => {
            let mut key = vec![0x00];
            key.extend_from_slice(format!("{id:?}").as_bytes());
            key
        }
    }
}

/// The shape of a ring configuration, in TOML or BSON.
#[derive(Debug, Deserialize)]
struct RingConfig {
    workers: Vec<String>,
    #[serde(default)]
    replicas: Option<u32>,
}

/// Renames each top-level key that matches a [`RingConfig`] field only when case is ignored
/// (gtm's `Workers`) to the field's name, as Go's TOML decoder matches keys to struct fields:
/// an exact match first, then one ignoring case.
#[cfg(feature = "toml")]
fn match_keys_ignoring_case(table: &mut toml::Table) {
    for field in ["workers", "replicas"] {
        if table.contains_key(field) {
            continue;
        }
        let Some(key) = table
            .keys()
            .find(|k| k.eq_ignore_ascii_case(field))
            .cloned()
        else {
            continue;
        };
        if let Some(value) = table.remove(&key) {
            table.insert(field.to_owned(), value);
        }
    }
}

struct Inner {
    /// Worker names, in the order given.
    workers: Vec<String>,
    /// `(hash, worker index)`, sorted by hash then worker name.
    points: Vec<(u64, u32)>,
    replicas: u32,
}

/// A consistent hash ring of named workers.
///
/// Cheap to clone (shared). See the [module docs](crate::ring) for the hash algorithm.
///
/// ```
/// use bson::Bson;
/// use mongotail::HashRing;
///
/// let ring = HashRing::from_toml_str(r#"workers = ["Tom", "Dick", "Harry"]"#)?;
/// let owner = ring.owner_of_id(&Bson::Int32(42));
/// assert!(["Tom", "Dick", "Harry"].contains(&owner));
/// // The same key always lands on the same worker, whatever the list order.
/// let again = HashRing::new(["Harry", "Tom", "Dick"])?;
/// assert_eq!(again.owner_of_id(&Bson::Int32(42)), owner);
/// assert!(ring.worker("Jane").is_err());
/// # Ok::<(), mongotail::Error>(())
/// ```
#[derive(Clone)]
pub struct HashRing {
    inner: Arc<Inner>,
}

impl fmt::Debug for HashRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashRing")
            .field("workers", &self.inner.workers)
            .field("replicas", &self.inner.replicas)
            .finish()
    }
}

impl HashRing {
    /// Virtual nodes per worker unless configured otherwise (as in ketama): enough for
    /// each worker's share of keys to be within a few percent of even.
    pub const DEFAULT_REPLICAS: u32 = 160;

    /// A ring of the named workers with [`HashRing::DEFAULT_REPLICAS`] points each.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty list, an empty name or a duplicate name.
    pub fn new<I, S>(workers: I) -> Result<HashRing>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        HashRing::with_replicas(workers, HashRing::DEFAULT_REPLICAS)
    }

    /// A ring of the named workers with `replicas` points each. More points spread the
    /// keys more evenly, at the cost of memory (`16 bytes * workers * replicas`).
    ///
    /// ```
    /// use mongotail::HashRing;
    ///
    /// let ring = HashRing::with_replicas(["a", "b"], 500)?;
    /// assert_eq!(ring.replicas(), 500);
    /// assert!(HashRing::with_replicas(["a"], 0).is_err());
    /// # Ok::<(), mongotail::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an empty list, an empty or duplicate name, or `replicas`
    /// outside `1..=10_000`.
    pub fn with_replicas<I, S>(workers: I, replicas: u32) -> Result<HashRing>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let workers: Vec<String> = workers.into_iter().map(Into::into).collect();
        if workers.is_empty() {
            return Err(Error::Config("hash ring: the worker list is empty".into()));
        }
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(Error::Config(format!(
                "hash ring: replicas must be between 1 and {MAX_REPLICAS}, got {replicas}"
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(workers.len());
        for name in &workers {
            if name.is_empty() {
                return Err(Error::Config("hash ring: empty worker name".into()));
            }
            if u32::try_from(name.len()).is_err() {
                return Err(Error::Config("hash ring: worker name too long".into()));
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::Config(format!(
                    "hash ring: duplicate worker name {name:?}"
                )));
            }
        }
        let count = u32::try_from(workers.len())
            .map_err(|_| Error::Config("hash ring: too many workers".into()))?;
        let mut points = Vec::with_capacity(workers.len() * replicas as usize);
        for index in 0..count {
            let name = &workers[index as usize];
            points.extend((0..replicas).map(|r| (point_hash(name, r), index)));
        }
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| workers[a.1 as usize].cmp(&workers[b.1 as usize]))
        });
        Ok(HashRing {
            inner: Arc::new(Inner {
                workers,
                points,
                replicas,
            }),
        })
    }

    /// A ring from TOML: `workers = ["Tom", "Dick", "Harry"]`, optionally
    /// `replicas = 160`. Other keys are ignored, so the ring can live in a larger file.
    ///
    /// Keys match ignoring case, as gtm's TOML decoder matches them (an exact match wins),
    /// so gtm's ring files (`Workers = [ "Tom", "Dick", "Harry" ]`) load unchanged.
    ///
    /// ```
    /// use mongotail::HashRing;
    ///
    /// let ring = HashRing::from_toml_str("workers = [\"a\", \"b\"]\nreplicas = 50")?;
    /// assert_eq!(ring.workers(), ["a", "b"]);
    /// let gtm = HashRing::from_toml_str(r#"Workers = [ "Tom", "Dick", "Harry" ]"#)?;
    /// assert_eq!(gtm.workers(), ["Tom", "Dick", "Harry"]);
    /// assert!(HashRing::from_toml_str("workers = [").is_err());
    /// assert!(HashRing::from_toml_str("workers = []").is_err());
    /// # Ok::<(), mongotail::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for malformed TOML, a missing or mistyped `workers` key, or any
    /// error of [`HashRing::with_replicas`].
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml_str(toml: &str) -> Result<HashRing> {
        let invalid = |e: toml::de::Error| Error::Config(format!("hash ring: invalid TOML: {e}"));
        let mut table: toml::Table = toml::from_str(toml).map_err(invalid)?;
        match_keys_ignoring_case(&mut table);
        let config: RingConfig = toml::Value::Table(table).try_into().map_err(invalid)?;
        HashRing::from_config(config)
    }

    /// A ring from a TOML file (see [`HashRing::from_toml_str`]).
    ///
    /// ```
    /// use mongotail::HashRing;
    ///
    /// let path = std::env::temp_dir().join(format!("ring-doc-{}.toml", std::process::id()));
    /// std::fs::write(&path, "workers = [\"Tom\", \"Dick\", \"Harry\"]\n").unwrap();
    /// let ring = HashRing::from_toml_file(&path)?;
    /// assert_eq!(ring.workers(), ["Tom", "Dick", "Harry"]);
    /// # std::fs::remove_file(&path).unwrap();
    /// assert!(HashRing::from_toml_file("/no/such/ring.toml").is_err());
    /// # Ok::<(), mongotail::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the file when it cannot be read or is not a valid ring
    /// configuration.
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<HashRing> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("hash ring: cannot read {}: {e}", path.display()))
        })?;
        HashRing::from_toml_str(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{msg} (in {})", path.display())),
            other => other,
        })
    }

    /// A ring from a BSON document `{workers: ["Tom", "Dick", "Harry"]}`, optionally with
    /// `replicas: 160` (an `int32`); other fields (`_id`, …) are ignored. Lets the worker
    /// list live in a MongoDB collection.
    ///
    /// ```
    /// use bson::doc;
    /// use mongotail::HashRing;
    ///
    /// let ring = HashRing::from_document(&doc! {"_id": "ring", "workers": ["Tom", "Dick"]})?;
    /// assert_eq!(ring.workers(), ["Tom", "Dick"]);
    /// assert!(HashRing::from_document(&doc! {"workers": [1, 2]}).is_err());
    /// # Ok::<(), mongotail::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when `workers` is missing or not an array of strings, or any
    /// error of [`HashRing::with_replicas`].
    pub fn from_document(doc: &Document) -> Result<HashRing> {
        let config: RingConfig = bson::from_document(doc.clone())
            .map_err(|e| Error::Config(format!("hash ring: invalid document: {e}")))?;
        HashRing::from_config(config)
    }

    fn from_config(config: RingConfig) -> Result<HashRing> {
        HashRing::with_replicas(
            config.workers,
            config.replicas.unwrap_or(HashRing::DEFAULT_REPLICAS),
        )
    }

    /// The worker names, in the order they were given.
    pub fn workers(&self) -> &[String] {
        &self.inner.workers
    }

    /// Virtual nodes per worker.
    pub fn replicas(&self) -> u32 {
        self.inner.replicas
    }

    /// The worker called `name`, to pass to
    /// [`consistent_shard`](crate::OpStreamExt::consistent_shard).
    ///
    /// # Errors
    /// [`Error::Config`] when no worker has that name.
    pub fn worker(&self, name: &str) -> Result<RingWorker> {
        match self.inner.workers.iter().position(|w| w == name) {
            Some(index) => Ok(RingWorker {
                ring: self.clone(),
                index,
            }),
            None => Err(Error::Config(format!(
                "hash ring: unknown worker {name:?} (workers: {:?})",
                self.inner.workers
            ))),
        }
    }

    fn index_of_key(&self, key: &[u8]) -> usize {
        let h = hash64(key);
        let points = &self.inner.points;
        let at = points.partition_point(|p| p.0 < h);
        let (_, index) = points[if at == points.len() { 0 } else { at }];
        index as usize
    }

    fn index_of_op<T>(&self, op: &Op<T>) -> usize {
        match &op.id {
            Some(id) => self.index_of_key(&id_key_bytes(id)),
            None => self.index_of_key(op.namespace.to_string().as_bytes()),
        }
    }

    /// The worker owning raw key bytes (see the [module docs](crate::ring)).
    pub fn owner_of_key(&self, key: &[u8]) -> &str {
        &self.inner.workers[self.index_of_key(key)]
    }

    /// The worker owning a document id.
    pub fn owner_of_id(&self, id: &Bson) -> &str {
        self.owner_of_key(&id_key_bytes(id))
    }

    /// The worker owning ops without a document id in `namespace`.
    pub fn owner_of_namespace(&self, namespace: &Namespace) -> &str {
        self.owner_of_key(namespace.to_string().as_bytes())
    }

    /// The worker owning `op`: by document id, by namespace when it has none.
    ///
    /// ```
    /// use bson::Bson;
    /// use mongotail::{HashRing, Namespace, Op, OpKind};
    ///
    /// let ring = HashRing::new(["Tom", "Dick", "Harry"])?;
    /// let ns = Namespace::parse("shop.orders")?;
    /// let update: Op = Op::new(OpKind::Update, ns.clone(), Some(Bson::Int32(7)));
    /// assert_eq!(ring.owner(&update), ring.owner_of_id(&Bson::Int32(7)));
    /// let drop: Op = Op::new(OpKind::DropCollection, ns.clone(), None);
    /// assert_eq!(ring.owner(&drop), ring.owner_of_namespace(&ns));
    /// assert_eq!(ring.owner(&drop), ring.owner_of_key(b"shop.orders"));
    /// assert!(ring.worker(ring.owner(&update))?.owns(&update));
    /// # Ok::<(), mongotail::Error>(())
    /// ```
    pub fn owner<T>(&self, op: &Op<T>) -> &str {
        &self.inner.workers[self.index_of_op(op)]
    }
}

/// One named worker of a [`HashRing`], from [`HashRing::worker`].
#[derive(Clone, Debug)]
pub struct RingWorker {
    ring: HashRing,
    index: usize,
}

impl RingWorker {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.ring.inner.workers[self.index]
    }

    /// The ring it belongs to.
    pub fn ring(&self) -> &HashRing {
        &self.ring
    }

    /// Whether this worker owns `op` (see [`HashRing::owner`]).
    pub fn owns<T>(&self, op: &Op<T>) -> bool {
        self.ring.index_of_op(op) == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::OpKind;

    #[test]
    fn hash_golden_values() {
        // Pinned: changing these changes which worker owns which key in deployed fleets.
        assert_eq!(fnv_only(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv_only(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash64(b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash64(b"Tom"), GOLDEN_TOM);
        assert_eq!(id_key_bytes(&Bson::Int32(1)), vec![0x10, 1, 0, 0, 0]);
        assert_eq!(
            id_key_bytes(&Bson::Int64(1)),
            vec![0x12, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            id_key_bytes(&Bson::String("ab".into())),
            vec![0x02, 3, 0, 0, 0, b'a', b'b', 0]
        );
    }

    /// Computed with an independent implementation (Python) of the documented algorithm.
    const GOLDEN_TOM: u64 = 0xbba3_f020_c5de_3655;

    #[test]
    fn ring_golden_owners() {
        // Independent implementation of the documented ring (Python), 160 replicas.
        let ring = HashRing::new(["Tom", "Dick", "Harry"]).unwrap();
        let owners: Vec<&str> = (0..10).map(|i| ring.owner_of_id(&Bson::Int32(i))).collect();
        assert_eq!(
            owners,
            ["Tom", "Tom", "Tom", "Dick", "Harry", "Harry", "Harry", "Harry", "Dick", "Harry"]
        );
        assert_eq!(ring.owner_of_key(b"db.coll"), "Harry");
        assert_eq!(ring.owner_of_id(&Bson::String("abc".into())), "Harry");
    }

    fn fnv_only(bytes: &[u8]) -> u64 {
        let mut h = FNV_OFFSET;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        h
    }

    #[test]
    #[cfg(feature = "toml")]
    fn config_errors() {
        assert!(matches!(
            HashRing::new(Vec::<String>::new()),
            Err(Error::Config(_))
        ));
        assert!(
            matches!(HashRing::new(["a", "a"]), Err(Error::Config(m)) if m.contains("duplicate"))
        );
        assert!(matches!(HashRing::new(["a", ""]), Err(Error::Config(_))));
        assert!(matches!(
            HashRing::with_replicas(["a"], 0),
            Err(Error::Config(_))
        ));
        assert!(
            matches!(HashRing::from_toml_str("workers = "), Err(Error::Config(m)) if m.contains("TOML"))
        );
        assert!(matches!(
            HashRing::from_toml_str("worker = [\"a\"]"),
            Err(Error::Config(_))
        ));
        // Keys match ignoring case (gtm's README uses `Workers`); an exact match wins.
        let ring = HashRing::from_toml_str("WORKERS = [\"a\"]\nReplicas = 7").unwrap();
        assert_eq!(
            (ring.workers(), ring.replicas()),
            (&["a".to_owned()][..], 7)
        );
        let ring = HashRing::from_toml_str("Workers = [\"x\"]\nworkers = [\"a\"]").unwrap();
        assert_eq!(ring.workers(), ["a"]);
        assert!(matches!(
            HashRing::from_toml_str("workers = [1]"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            HashRing::from_document(&bson::doc! {"workers": "Tom"}),
            Err(Error::Config(_))
        ));
        let ring = HashRing::new(["Tom"]).unwrap();
        assert!(matches!(ring.worker("Dick"), Err(Error::Config(m)) if m.contains("Dick")));
        assert!(matches!(
            HashRing::from_toml_file("/nonexistent/ring.toml"),
            Err(Error::Config(m)) if m.contains("/nonexistent/ring.toml")
        ));
    }

    #[test]
    #[cfg(feature = "toml")]
    fn toml_file_and_extra_keys() {
        let dir = std::env::temp_dir().join(format!("mongotail-ring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ring.toml");
        std::fs::write(
            &path,
            "name = \"app\"\nworkers = [\"Tom\", \"Dick\", \"Harry\"]\n",
        )
        .unwrap();
        let ring = HashRing::from_toml_file(&path).unwrap();
        assert_eq!(ring.workers(), ["Tom", "Dick", "Harry"]);
        assert_eq!(ring.replicas(), HashRing::DEFAULT_REPLICAS);
        std::fs::write(&path, "workers = [\"Tom\",").unwrap();
        let err = HashRing::from_toml_file(&path).unwrap_err();
        assert!(err.to_string().contains("ring.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn int32_and_int64_ids_are_different_keys() {
        assert_ne!(id_key_bytes(&Bson::Int32(1)), id_key_bytes(&Bson::Int64(1)));
    }

    #[test]
    fn ops_without_id_are_keyed_by_namespace() {
        let ring = HashRing::new(["a", "b", "c", "d"]).unwrap();
        let ns = Namespace::parse("db.coll").unwrap();
        let op: Op = Op::new(OpKind::DropCollection, ns.clone(), None);
        assert_eq!(ring.owner(&op), ring.owner_of_namespace(&ns));
        assert_eq!(ring.owner(&op), ring.owner_of_key(b"db.coll"));
        let owner = ring.worker(ring.owner(&op)).unwrap();
        assert!(owner.owns(&op));
    }

    #[test]
    fn balance() {
        let ring = HashRing::new(["Tom", "Dick", "Harry"]).unwrap();
        let mut counts = std::collections::HashMap::new();
        for i in 0..30_000i32 {
            *counts
                .entry(ring.owner_of_id(&Bson::Int32(i)))
                .or_insert(0u32) += 1;
        }
        for (name, n) in counts {
            assert!((7_000..13_000).contains(&n), "{name} got {n} of 30000");
        }
    }
}
