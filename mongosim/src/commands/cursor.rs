//! `find`, `getMore`, `killCursors` and non-change-stream `aggregate` (reference §3, §7.4).
//!
//! Plain finds materialise their result once and drain it batch by batch; scans of
//! `local.oplog.rs` and tailable scans of capped collections are lazy and keep a position
//! (record id), serving the stored raw BSON; a position truncated away by the capped ring
//! is 136 CappedPositionLost.

use super::args::{cursor_batch_size, missing_field, opt_bool, opt_doc, opt_i64};
use super::reply::{cursor_reply, encode, open_cursor, raw_reply};
use super::{Ctx, Request};
use crate::engine::catalog::NsKind;
use crate::engine::clock::ts_key;
use crate::engine::cursor::{
    Batch, BatchBuilder, Checkout, CursorEntry, CursorSource, VecCursor, DEFAULT_FIRST_BATCH,
};
use crate::engine::docs::{engine_docs, is_oplog, run_pipeline};
use crate::engine::{names, Engine};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::query::matcher::Matcher;
use bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use std::time::Duration;

// ---------------------------------------------------------------- query glue

/// Sort + projection of a find, parsed once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    sort: Option<crate::query::sort::SortSpec>,
    projection: Option<crate::query::projection::Projection>,
}

impl Shape {
    fn parse(sort: Option<&Document>, projection: Option<&Document>) -> CmdResult<Shape> {
        let projection = match projection {
            Some(p) if !p.is_empty() => Some(crate::query::projection::Projection::parse(p)?),
            _ => None,
        };
        let sort = match sort {
            Some(s) if !s.is_empty() => Some(crate::query::sort::SortSpec::parse(s)?),
            _ => None,
        };
        Ok(Shape { sort, projection })
    }

    fn project(&self, d: &Document) -> CmdResult<Document> {
        match &self.projection {
            Some(p) => p.apply(d),
            None => Ok(d.clone()),
        }
    }
}

// ---------------------------------------------------------------- cursor sources

/// 136 CappedPositionLost (SRV `collection_scan.cpp`, reference §3.3).
fn capped_position_lost(rid: u64) -> CommandError {
    CommandError::from_code(
        ErrorCode::CappedPositionLost,
        format!(
            "CollectionScan died due to position in capped collection being deleted. Last seen record id: RecordId({rid})"
        ),
    )
}

/// Filter evaluation for oplog scans: nothing beyond the `ts` bound used to seek, or a
/// matcher on the decoded entry — only the top-level fields the filter reads when it names
/// them all (`ts`, `ns`, `op`, `fromMigrate`: the entry's `o` is never decoded for a
/// tailer's filter), else the whole entry.
#[derive(Debug, Clone)]
enum OplogFilter {
    All,
    Matcher(Box<Matcher>, Option<Vec<String>>),
}

/// The fields of `raw` named in `fields`, decoded into `d` (cleared first: one document
/// serves a whole scan), in the entry's order.
fn decode_fields(raw: &bson::RawDocument, fields: &[String], d: &mut Document) -> CmdResult<()> {
    let corrupt =
        |err: bson::raw::Error| CommandError::from_code(ErrorCode::InternalError, err.to_string());
    d.clear();
    // Values are parsed only for the fields the filter reads.
    for element in raw.iter_elements() {
        let element = element.map_err(corrupt)?;
        let key = element.key();
        if fields.iter().any(|f| f == key) {
            let value = element.value().map_err(corrupt)?;
            let value = bson::Bson::try_from(value.to_raw_bson()).map_err(corrupt)?;
            d.insert(key, value);
        }
    }
    Ok(())
}

/// A lazy `$natural`-order scan of `local.oplog.rs` (optionally tailable).
#[derive(Debug)]
pub(crate) struct OplogScan {
    filter: OplogFilter,
    /// The fields a cut-down filter reads, of the entry being examined.
    fields: Document,
    shape: Shape,
    next_seq: u64,
    /// Record id of the last examined entry (the saved position).
    last_seq: Option<u64>,
    reverse: bool,
    tailable: bool,
    await_data: bool,
    remaining: Option<u64>,
    skip: u64,
}

impl OplogScan {
    fn advance(&mut self, engine: &mut Engine, batch_size: Option<usize>) -> CmdResult<Batch> {
        let mut b = BatchBuilder::new(batch_size.unwrap_or(0));
        let Some(oplog) = engine.oplog.as_ref() else {
            return Ok(b.finish(true));
        };
        if let Some(last) = self.last_seq {
            if last < oplog.first_seq() {
                return Err(capped_position_lost(last));
            }
        }
        if self.remaining == Some(0) {
            return Ok(b.finish(true));
        }
        let mut end_reached = true;
        if self.reverse {
            let start = self.next_seq;
            for (seq, e) in oplog.iter_back_from(start) {
                if self.remaining == Some(0) || b.full() {
                    end_reached = self.remaining == Some(0);
                    break;
                }
                if !self.take(e, &mut b)? {
                    end_reached = false;
                    break;
                }
                self.last_seq = Some(seq);
                if seq == 0 {
                    break;
                }
                self.next_seq = seq - 1;
            }
            if self.last_seq == Some(oplog.first_seq()) || end_reached {
                return Ok(b.finish(true));
            }
            return Ok(b.finish(false));
        }
        for (seq, e) in oplog.iter_from(self.next_seq) {
            if self.remaining == Some(0) || b.full() {
                end_reached = self.remaining == Some(0);
                break;
            }
            if !self.take(e, &mut b)? {
                end_reached = false;
                break;
            }
            self.last_seq = Some(seq);
            self.next_seq = seq + 1;
        }
        let exhausted = self.remaining == Some(0) || (end_reached && !self.tailable);
        Ok(b.finish(exhausted))
    }

    /// Examines one entry; false when the batch is full (entry not consumed).
    fn take(
        &mut self,
        e: &crate::engine::oplog::OplogEntry,
        b: &mut BatchBuilder,
    ) -> CmdResult<bool> {
        let pass = match &self.filter {
            OplogFilter::All => None,
            OplogFilter::Matcher(m, Some(fields)) => {
                decode_fields(&e.raw, fields, &mut self.fields)?;
                if !m.matches(&self.fields) {
                    return Ok(true);
                }
                // a cut-down entry is not projected: the projection decodes it whole
                None
            }
            OplogFilter::Matcher(m, None) => {
                let d = e.raw.to_document().map_err(|err| {
                    CommandError::from_code(ErrorCode::InternalError, err.to_string())
                })?;
                if !m.matches(&d) {
                    return Ok(true);
                }
                Some(d)
            }
        };
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(true);
        }
        let raw = match (&self.shape.projection, pass) {
            (None, _) => e.raw.clone(),
            (Some(_), Some(d)) => encode(&self.shape.project(&d)?)?,
            (Some(_), None) => {
                let d = e.raw.to_document().map_err(|err| {
                    CommandError::from_code(ErrorCode::InternalError, err.to_string())
                })?;
                encode(&self.shape.project(&d)?)?
            }
        };
        if !b.fits(raw.as_bytes().len()) {
            return Ok(false);
        }
        b.push(raw);
        if let Some(r) = self.remaining.as_mut() {
            *r -= 1;
        }
        Ok(true)
    }
}

impl CursorSource for OplogScan {
    fn next_batch(&mut self, engine: &mut Engine, batch_size: Option<usize>) -> CmdResult<Batch> {
        self.advance(engine, batch_size)
    }
    fn awaits_data(&self) -> bool {
        self.await_data
    }
}

/// A tailable `$natural` scan of a capped collection.
#[derive(Debug)]
pub(crate) struct CappedScan {
    db: String,
    coll: String,
    uuid: bson::Uuid,
    matcher: Matcher,
    shape: Shape,
    next_rid: u64,
    last_rid: Option<u64>,
    await_data: bool,
    remaining: Option<u64>,
    skip: u64,
}

impl CursorSource for CappedScan {
    fn next_batch(&mut self, engine: &mut Engine, batch_size: Option<usize>) -> CmdResult<Batch> {
        let mut b = BatchBuilder::new(batch_size.unwrap_or(0));
        let Some(c) = engine.catalog.coll(&self.db, &self.coll) else {
            return Err(CommandError::from_code(
                ErrorCode::QueryPlanKilled,
                "collection dropped",
            ));
        };
        if c.uuid != self.uuid {
            return Err(CommandError::from_code(
                ErrorCode::QueryPlanKilled,
                "collection dropped",
            ));
        }
        if let Some(last) = self.last_rid {
            if !c.has_rid(last) && c.first_rid().is_none_or(|f| f > last) {
                return Err(capped_position_lost(last));
            }
        }
        for (rid, sd) in c.iter_from(self.next_rid) {
            if self.remaining == Some(0) || b.full() {
                break;
            }
            if self.matcher.matches(&sd.doc) {
                if self.skip > 0 {
                    self.skip -= 1;
                } else {
                    let raw = match &self.shape.projection {
                        None => sd.raw.clone(),
                        Some(_) => encode(&self.shape.project(&sd.doc)?)?,
                    };
                    if !b.fits(raw.as_bytes().len()) {
                        break;
                    }
                    b.push(raw);
                    if let Some(r) = self.remaining.as_mut() {
                        *r -= 1;
                    }
                }
            }
            self.last_rid = Some(rid);
            self.next_rid = rid + 1;
        }
        let done = self.remaining == Some(0);
        Ok(b.finish(done))
    }
    fn awaits_data(&self) -> bool {
        self.await_data
    }
}

// ---------------------------------------------------------------- replies

// ---------------------------------------------------------------- document sources

/// `{$sample: {size: n}}` with a valid non-negative integral size (other shapes go to the
/// pipeline, which reports the server's errors).
fn sample_size(stage: &Document) -> Option<usize> {
    let spec = stage.get_document("$sample").ok()?;
    if spec.len() != 1 {
        return None;
    }
    match spec.get("size")? {
        Bson::Int32(n) if *n >= 0 => Some(*n as usize),
        Bson::Int64(n) if *n >= 0 => Some(*n as usize),
        Bson::Double(d) if *d >= 0.0 && d.fract() == 0.0 => Some(*d as usize),
        _ => None,
    }
}

/// Bounds a filter's top-level `_id` comparisons (`$gt`/`$gte`/`$lt`/`$lte`/equality, also
/// inside a top-level `$and`) put on `_id`, as a superset of the matching `_id`s in BSON order.
fn id_bounds(filter: &Document) -> (std::ops::Bound<Bson>, std::ops::Bound<Bson>) {
    use std::cmp::Ordering;
    use std::ops::Bound;
    let mut lo: Bound<Bson> = Bound::Unbounded;
    let mut hi: Bound<Bson> = Bound::Unbounded;
    fn tighter_lo(cur: &Bound<Bson>, v: &Bson, incl: bool) -> bool {
        match cur {
            Bound::Unbounded => true,
            Bound::Included(c) | Bound::Excluded(c) => {
                let o = crate::query::compare::cmp_bson(v, c);
                o == Ordering::Greater || (o == Ordering::Equal && !incl)
            }
        }
    }
    fn tighter_hi(cur: &Bound<Bson>, v: &Bson, incl: bool) -> bool {
        match cur {
            Bound::Unbounded => true,
            Bound::Included(c) | Bound::Excluded(c) => {
                let o = crate::query::compare::cmp_bson(v, c);
                o == Ordering::Less || (o == Ordering::Equal && !incl)
            }
        }
    }
    let plain = |v: &Bson| {
        !matches!(
            v,
            Bson::Array(_) | Bson::RegularExpression(_) | Bson::Null | Bson::Undefined
        ) && !matches!(v, Bson::Document(d) if d.keys().any(|k| k.starts_with('$')))
    };
    let mut conds: Vec<&Bson> = Vec::new();
    if let Some(v) = filter.get("_id") {
        conds.push(v);
    }
    if let Some(Bson::Array(a)) = filter.get("$and") {
        for c in a {
            if let Some(v) = c.as_document().and_then(|d| d.get("_id")) {
                conds.push(v);
            }
        }
    }
    for v in conds {
        match v {
            Bson::Document(d) if d.keys().all(|k| k.starts_with('$')) => {
                for (op, x) in d {
                    if !plain(x) {
                        continue;
                    }
                    match op.as_str() {
                        "$gt" if tighter_lo(&lo, x, false) => lo = Bound::Excluded(x.clone()),
                        "$gte" | "$eq" if tighter_lo(&lo, x, true) => {
                            lo = Bound::Included(x.clone())
                        }
                        _ => {}
                    }
                    match op.as_str() {
                        "$lt" if tighter_hi(&hi, x, false) => hi = Bound::Excluded(x.clone()),
                        "$lte" | "$eq" if tighter_hi(&hi, x, true) => {
                            hi = Bound::Included(x.clone())
                        }
                        _ => {}
                    }
                }
            }
            x if plain(x) => {
                lo = Bound::Included(x.clone());
                hi = Bound::Included(x.clone());
            }
            _ => {}
        }
    }
    (lo, hi)
}

/// Lower bound on `ts` found at the top level of a filter (or in a top-level `$and`):
/// `(ts, inclusive)`, plus whether the filter is nothing but that bound.
fn ts_lower_bound(filter: &Document) -> (Option<(Timestamp, bool)>, bool) {
    fn from_cond(v: &Bson) -> Option<(Timestamp, bool, bool)> {
        match v {
            Bson::Document(c) => {
                let mut best = None;
                let mut only = true;
                for (k, x) in c {
                    match (k.as_str(), x) {
                        ("$gt", Bson::Timestamp(t)) => best = Some((*t, false)),
                        ("$gte", Bson::Timestamp(t)) => best = Some((*t, true)),
                        _ => only = false,
                    }
                }
                best.map(|(t, inc)| (t, inc, only))
            }
            Bson::Timestamp(t) => Some((*t, true, false)),
            _ => None,
        }
    }
    let mut bound: Option<(Timestamp, bool)> = None;
    let mut only = true;
    for (k, v) in filter {
        if k == "ts" {
            if let Some((t, inc, o)) = from_cond(v) {
                bound = Some((t, inc));
                only &= o;
            } else {
                only = false;
            }
        } else if k == "$and" {
            only = false;
            if let Bson::Array(a) = v {
                for c in a {
                    if let Bson::Document(c) = c {
                        if let Some(Some((t, inc, _))) = c.get("ts").map(from_cond) {
                            let better = match bound {
                                None => true,
                                Some((b, _)) => ts_key(t) > ts_key(b),
                            };
                            if better {
                                bound = Some((t, inc));
                            }
                        }
                    }
                }
            }
        } else {
            only = false;
        }
    }
    (bound, only && bound.is_some())
}

// ---------------------------------------------------------------- find

const FIND_FIELDS: &[&str] = &[
    "find",
    "filter",
    "sort",
    "projection",
    "hint",
    "skip",
    "limit",
    "batchSize",
    "singleBatch",
    "comment",
    "maxTimeMS",
    "readConcern",
    "max",
    "min",
    "returnKey",
    "showRecordId",
    "tailable",
    "oplogReplay",
    "noCursorTimeout",
    "awaitData",
    "allowPartialResults",
    "collation",
    "allowDiskUse",
    "let",
    "$db",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "$clusterTime",
    "$readPreference",
    "readPreference",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "writeConcern",
    "$audit",
    "$client",
    "mirrored",
    "ntoreturn",
    "term",
    "readOnce",
    "includeQueryStatsMetrics",
    "querySettings",
    "_requestResumeToken",
    "$_requestResumeToken",
    "$_resumeAfter",
    "_resumeAfter",
    "encryptionInformation",
    "databaseVersion",
    "shardVersion",
    "$queryOptions",
    "maxScan",
];

fn non_negative(v: Option<i64>, field: &str) -> CmdResult<Option<u64>> {
    match v {
        Some(n) if n < 0 => Err(CommandError::from_code(
            ErrorCode::IdlValueBelowMinimum,
            format!("BSON field '{field}' value must be >= 0, actual value '{n}'"),
        )),
        Some(n) => Ok(Some(n as u64)),
        None => Ok(None),
    }
}

/// `find` (reference §3.1–3.3).
pub(crate) async fn find(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let find = parse_find(ctx, &req)?;
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    ctx.operation_time = Some(engine.last_applied());
    let reply = match find_path(engine, &find)? {
        FindPath::Empty => empty_first_batch(&find.ns)?,
        FindPath::Oplog => oplog_find(ctx, engine, find)?,
        FindPath::Capped(uuid) => capped_find(ctx, engine, find, uuid)?,
        FindPath::IdOrder(c, dir) => {
            let docs = id_order_docs(c, &find, dir)?;
            vec_find(ctx, engine, find, docs)?
        }
        FindPath::Materialise => {
            let docs = materialised_docs(engine, &find)?;
            vec_find(ctx, engine, find, docs)?
        }
    };
    raw_reply(ctx, reply)
}

/// A `find`, parsed and checked before the engine is locked.
struct Find<'a> {
    db: &'a str,
    coll: &'a str,
    ns: String,
    filter: Document,
    matcher: Matcher,
    shape: Shape,
    skip: u64,
    limit: Option<u64>,
    /// Size of the first batch: `batchSize`, bounded by `limit`.
    first_size: Option<usize>,
    single_batch: bool,
    tailable: bool,
    await_data: bool,
    no_timeout: bool,
    /// Direction of a `{$natural: ±1}` sort (also `{ts: ±1}` on the oplog).
    natural: Option<f64>,
    /// Direction of a `{_id: ±1}` sort without `collation`.
    id_sort: Option<f64>,
    /// `collation` is absent or null.
    simple_collation: bool,
}

/// Parses and checks a `find`, in the server's order (the first failed check decides the
/// error reported).
fn parse_find<'a>(ctx: &Ctx<'_>, req: &'a Request) -> CmdResult<Find<'a>> {
    let body = &req.body;
    let db = req.db.as_str();
    names::check_db(db)?;
    for k in body.keys() {
        if !FIND_FIELDS.contains(&k.as_str()) {
            return Err(CommandError::unknown_field(k, "find"));
        }
    }
    super::args::reject_let_on_44(ctx, req)?;
    let coll = match req.target() {
        Some(Bson::Binary(_)) => {
            return Err(CommandError::invalid_namespace(
                "find by UUID is not supported",
            ))
        }
        v => names::coll_arg(db, v)?,
    };
    let filter = opt_doc(body, "find", "filter")?
        .cloned()
        .unwrap_or_default();
    let sort = opt_doc(body, "find", "sort")?.cloned();
    let projection = opt_doc(body, "find", "projection")?.cloned();
    let skip = non_negative(opt_i64(body, "find", "skip")?, "skip")?.unwrap_or(0);
    let limit = non_negative(opt_i64(body, "find", "limit")?, "limit")?.filter(|l| *l > 0);
    let batch_size = non_negative(opt_i64(body, "find", "batchSize")?, "batchSize")?;
    let single_batch = opt_bool(body, "find", "singleBatch")?.unwrap_or(false);
    let tailable = opt_bool(body, "find", "tailable")?.unwrap_or(false);
    let await_data = opt_bool(body, "find", "awaitData")?.unwrap_or(false);
    let no_timeout = opt_bool(body, "find", "noCursorTimeout")?.unwrap_or(false);
    check_tailable_options(sort.as_ref(), tailable, single_batch, await_data)?;
    let lets = opt_doc(body, "find", "let")?.cloned();
    let matcher = super::args::matcher_for(&filter, lets.as_ref(), body.get("collation"))?;
    if let Some(hint) = body.get("hint") {
        check_hint(ctx, db, coll, hint)?;
    }
    let natural = natural_order(sort.as_ref(), db, coll);
    let shape_sort = if natural.is_some() {
        None
    } else {
        sort.as_ref()
    };
    let mut shape = Shape::parse(shape_sort, projection.as_ref())?;
    if let Some(s) = shape.sort.as_mut() {
        s.set_collation(super::args::collation_of(body.get("collation"))?);
    }
    Ok(Find {
        db,
        coll,
        ns: format!("{db}.{coll}"),
        first_size: first_batch_size(batch_size.map(|b| b as usize), limit),
        id_sort: id_sort_order(sort.as_ref(), body),
        simple_collation: matches!(body.get("collation"), None | Some(Bson::Null)),
        filter,
        matcher,
        shape,
        skip,
        limit,
        single_batch,
        tailable,
        await_data,
        no_timeout,
        natural,
    })
}

/// SRV query_request_helper.cpp validateFindCommandRequest: the options `tailable` and
/// `awaitData` allow.
fn check_tailable_options(
    sort: Option<&Document>,
    tailable: bool,
    single_batch: bool,
    await_data: bool,
) -> CmdResult<()> {
    if tailable {
        let natural_fwd = sort.is_none_or(|s| s.is_empty() || *s == doc! {"$natural": 1});
        if !natural_fwd {
            return Err(CommandError::bad_value(
                "cannot use tailable option with a sort other than {$natural: 1}",
            ));
        }
        if single_batch {
            return Err(CommandError::bad_value(
                "cannot use tailable option with the 'singleBatch' option",
            ));
        }
    }
    if await_data && !tailable {
        return Err(CommandError::failed_to_parse(
            "Cannot set 'awaitData' without also setting 'tailable'",
        ));
    }
    Ok(())
}

/// The direction of a `{$natural: ±1}` sort; on the oplog of a primary `ts` order is
/// `$natural` order (reference §4).
fn natural_order(sort: Option<&Document>, db: &str, coll: &str) -> Option<f64> {
    let s = sort?;
    if s.len() != 1 {
        return None;
    }
    match s.get("$natural") {
        Some(v) => crate::query::compare::as_f64(v),
        None if db == "local" && coll == "oplog.rs" => {
            s.get("ts").and_then(crate::query::compare::as_f64)
        }
        None => None,
    }
}

/// The direction of a `{_id: ±1}` sort of a command without `collation`.
fn id_sort_order(sort: Option<&Document>, body: &Document) -> Option<f64> {
    sort.and_then(|s| {
        if s.len() == 1 && body.get("collation").is_none() {
            s.get("_id").and_then(crate::query::compare::as_f64)
        } else {
            None
        }
    })
}

/// A limit smaller than the batch size bounds the first batch (SRV find_cmd.cpp).
fn first_batch_size(batch_size: Option<usize>, limit: Option<u64>) -> Option<usize> {
    match (batch_size, limit) {
        (Some(b), Some(l)) => Some(b.min(l as usize)),
        (None, Some(l)) => Some((l as usize).min(DEFAULT_FIRST_BATCH)),
        (b, None) => b,
    }
}

/// How a `find` reads its namespace.
enum FindPath<'e> {
    /// No cursor: an empty, exhausted first batch.
    Empty,
    /// `local.oplog.rs` in `$natural` order: a lazy [`OplogScan`].
    Oplog,
    /// A tailable [`CappedScan`] of the capped collection with this UUID.
    Capped(bson::Uuid),
    /// `{_id: ±1}` on a collection: the `_id` index walked in this direction.
    IdOrder(&'e crate::engine::catalog::Collection, f64),
    /// Filter, sort, skip, limit and project a copy of the matching documents.
    Materialise,
}

/// Chooses the [`FindPath`]; tailable finds fail on views and on collections that are not
/// capped.
fn find_path<'e>(engine: &'e Engine, find: &Find<'_>) -> CmdResult<FindPath<'e>> {
    let (db, coll, ns) = (find.db, find.coll, &find.ns);
    let oplog = is_oplog(engine, db, coll);
    if oplog && (find.natural.is_some() || find.shape.sort.is_none()) {
        return Ok(FindPath::Oplog);
    }
    let kind = engine.catalog.kind(db, coll);
    match kind {
        // nothing to tail: the server does not keep a cursor on an empty collection
        NsKind::Missing if find.tailable && !oplog => return Ok(FindPath::Empty),
        NsKind::View(_) if find.tailable => {
            return Err(CommandError::from_code(
                ErrorCode::CommandNotSupportedOnView,
                format!("Namespace {ns} is a view. Tailable cursors are not supported on views"),
            ));
        }
        NsKind::Collection(c) if find.tailable => {
            if !c.is_capped() {
                return Err(CommandError::bad_value(format!(
                    "error processing query: ns={ns} planner returned error :: caused by :: tailable cursor requested on non capped collection"
                )));
            }
            // SRV find_cmd.cpp shouldSaveCursor: no tailable cursor on an empty collection
            if c.count() == 0 {
                return Ok(FindPath::Empty);
            }
            return Ok(FindPath::Capped(c.uuid));
        }
        _ => {}
    }
    Ok(match (find.id_sort, kind) {
        (Some(dir), NsKind::Collection(c)) if !oplog => FindPath::IdOrder(c, dir),
        _ => FindPath::Materialise,
    })
}

/// The reply of a find that keeps no cursor and returns nothing.
fn empty_first_batch(ns: &str) -> CmdResult<RawDocumentBuf> {
    cursor_reply(true, Vec::new(), Document::new(), 0, ns)
}

/// `find` on `local.oplog.rs` in `$natural` order: a lazy scan, started at the filter's
/// lower bound on `ts` when there is one.
fn oplog_find(ctx: &Ctx<'_>, engine: &mut Engine, find: Find<'_>) -> CmdResult<RawDocumentBuf> {
    let oplog = engine
        .oplog
        .as_ref()
        .map(|o| (o.first_seq(), o.end_seq(), o.is_empty()));
    let Some((first_seq, end_seq, empty)) = oplog else {
        return empty_first_batch(&find.ns);
    };
    let reverse = find.natural.is_some_and(|n| n < 0.0);
    let (bound, only_ts) = ts_lower_bound(&find.filter);
    let start = match (reverse, bound) {
        (true, _) => end_seq.saturating_sub(1),
        (false, Some((t, inclusive))) => engine
            .oplog
            .as_ref()
            .map(|o| o.seek(t, inclusive))
            .unwrap_or(first_seq),
        (false, None) => first_seq,
    };
    let filter = if (only_ts && !reverse) || find.filter.is_empty() {
        OplogFilter::All
    } else {
        let fields = find.matcher.top_level_fields();
        OplogFilter::Matcher(Box::new(find.matcher), fields)
    };
    if find.tailable && empty {
        return empty_first_batch(&find.ns);
    }
    let scan = OplogScan {
        filter,
        fields: Document::new(),
        shape: find.shape,
        next_seq: start,
        // a seek on `ts` positions the scan on the entry before `start`, as the server's
        // oplog start-point optimisation does: if that entry is truncated away before the
        // next getMore, the position is lost (136)
        last_seq: (!reverse && start > first_seq).then(|| start - 1),
        reverse,
        tailable: find.tailable,
        await_data: find.await_data,
        remaining: find.limit,
        skip: find.skip,
    };
    open_cursor(
        ctx,
        engine,
        find.ns,
        Box::new(scan),
        find.first_size,
        find.single_batch,
        find.no_timeout,
    )
}

/// A tailable `find` on the capped collection `uuid`.
fn capped_find(
    ctx: &Ctx<'_>,
    engine: &mut Engine,
    find: Find<'_>,
    uuid: bson::Uuid,
) -> CmdResult<RawDocumentBuf> {
    let scan = CappedScan {
        db: find.db.to_string(),
        coll: find.coll.to_string(),
        uuid,
        matcher: find.matcher,
        shape: find.shape,
        next_rid: 0,
        last_rid: None,
        await_data: find.await_data,
        remaining: find.limit,
        skip: find.skip,
    };
    open_cursor(
        ctx,
        engine,
        find.ns,
        Box::new(scan),
        find.first_size,
        false,
        find.no_timeout,
    )
}

/// `{_id: ±1}` on a collection (simple collation): walks the `_id` index in order, within
/// the filter's `_id` bounds, and stops once skip + limit documents matched.
fn id_order_docs(
    c: &crate::engine::catalog::Collection,
    find: &Find<'_>,
    dir: f64,
) -> CmdResult<Vec<RawDocumentBuf>> {
    let want = find.limit.map(|l| l + find.skip);
    let mut docs = Vec::new();
    for rid in c.rids_by_id_range(id_bounds(&find.filter), dir < 0.0) {
        if want.is_some_and(|w| docs.len() as u64 >= w) {
            break;
        }
        if let Some(sd) = c.get(rid) {
            if find.matcher.matches(&sd.doc) {
                docs.push(sd);
            }
        }
    }
    let mut out = Vec::new();
    for sd in docs.into_iter().skip(find.skip as usize) {
        out.push(match &find.shape.projection {
            None => sd.raw.clone(),
            Some(_) => encode(&find.shape.project(&sd.doc)?)?,
        });
    }
    Ok(out)
}

/// Record ids, in `$natural` order, that the filter's top-level `_id` conditions restrict
/// a find to, read from the `_id` index: equalities and `$in`, or the range of
/// `$gt`/`$gte`/`$lt`/`$lte` bounds (the split queries of direct reads; every `_id` the
/// range holds is a candidate the matcher still checks). `None`: the collection is scanned
/// (no `_id` condition, or a non-simple collation, under which the binary index order is
/// not the query's).
fn id_index_rids(c: &crate::engine::catalog::Collection, find: &Find<'_>) -> Option<Vec<u64>> {
    use std::ops::Bound;
    if !find.simple_collation {
        return None;
    }
    if let Some(rids) = crate::engine::docs::id_candidates(c, &find.filter) {
        return Some(rids);
    }
    let bounds = id_bounds(&find.filter);
    if matches!(bounds, (Bound::Unbounded, Bound::Unbounded)) {
        return None;
    }
    let mut rids: Vec<u64> = c.rids_by_id_range(bounds, false).collect();
    rids.sort_unstable();
    Some(rids)
}

/// A document a materialised find returns: stored in a collection (its encoding is
/// returned as is when nothing is projected) or computed (views, system collections).
enum Found<'e> {
    Stored(&'e crate::engine::catalog::StoredDoc),
    Computed(Document),
}

impl Found<'_> {
    fn doc(&self) -> &Document {
        match self {
            Found::Stored(sd) => &sd.doc,
            Found::Computed(d) => d,
        }
    }

    fn encode(&self, shape: &Shape) -> CmdResult<RawDocumentBuf> {
        match (self, &shape.projection) {
            (Found::Stored(sd), None) => Ok(sd.raw.clone()),
            _ => encode(&shape.project(self.doc())?),
        }
    }
}

/// The materialised result: filter, sort, skip, limit, project.
fn materialised_docs(engine: &Engine, find: &Find<'_>) -> CmdResult<Vec<RawDocumentBuf>> {
    let (db, coll, matcher) = (find.db, find.coll, &find.matcher);
    let mut docs: Vec<Found<'_>> = match engine.catalog.kind(db, coll) {
        // only matching documents are kept; `_id` conditions use the `_id` index
        NsKind::Collection(c) if !is_oplog(engine, db, coll) => match id_index_rids(c, find) {
            Some(rids) => rids
                .into_iter()
                .filter_map(|r| c.get(r))
                .filter(|sd| matcher.matches(&sd.doc))
                .map(Found::Stored)
                .collect(),
            None => c
                .iter()
                .filter(|(_, sd)| matcher.matches(&sd.doc))
                .map(|(_, sd)| Found::Stored(sd))
                .collect(),
        },
        _ => engine_docs(engine, db, coll, 0)?
            .into_iter()
            .filter(|d| matcher.matches(d))
            .map(Found::Computed)
            .collect(),
    };
    if find.natural.is_some_and(|n| n < 0.0) {
        docs.reverse();
    }
    if let Some(s) = &find.shape.sort {
        docs.sort_by(|a, b| s.compare(a.doc(), b.doc()));
    }
    let mut out = Vec::new();
    for d in docs.into_iter().skip(find.skip as usize) {
        if find.limit.is_some_and(|l| out.len() as u64 >= l) {
            break;
        }
        out.push(d.encode(&find.shape)?);
    }
    Ok(out)
}

/// Opens the cursor of a find whose result is materialised in `docs`.
fn vec_find(
    ctx: &Ctx<'_>,
    engine: &mut Engine,
    find: Find<'_>,
    docs: Vec<RawDocumentBuf>,
) -> CmdResult<RawDocumentBuf> {
    open_cursor(
        ctx,
        engine,
        find.ns,
        Box::new(VecCursor::new(docs)),
        find.first_size,
        find.single_batch,
        find.no_timeout,
    )
}

/// A `hint` must name an existing index (by name or key pattern) or be `{$natural: ±1}`
/// (SRV `get_executor.cpp`: "hint provided does not correspond to an existing index").
fn check_hint(ctx: &Ctx<'_>, db: &str, coll: &str, hint: &Bson) -> CmdResult<()> {
    let engine = ctx.shared.engine.lock();
    let Some(c) = engine.catalog.coll(db, coll) else {
        return Ok(());
    };
    let found = match hint {
        Bson::String(name) => name.is_empty() || c.index(name).is_some(),
        Bson::Document(d) if d.is_empty() => true,
        Bson::Document(d) if d.contains_key("$natural") => true,
        Bson::Document(d) => c.indexes.iter().any(|i| &i.key_pattern() == d),
        _ => {
            return Err(CommandError::from_code(
                ErrorCode::FailedToParse,
                "hint must be either a string or nested object",
            ))
        }
    };
    if found {
        Ok(())
    } else {
        Err(CommandError::bad_value(format!(
            "error processing query: ns={db}.{coll} planner returned error :: caused by :: hint provided does not correspond to an existing index"
        )))
    }
}

// ---------------------------------------------------------------- getMore / killCursors

/// `getMore` (reference §3.1, §3.3): awaitData cursors wait event-driven up to `maxTimeMS`
/// (default 1 s) and return an empty batch with the same id.
pub(crate) async fn get_more(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let (id, coll, batch_size) = parse_get_more(&req)?;
    let ns = format!("{}.{coll}", req.db);
    let mut entry = check_out_cursor(ctx, id, &ns)?;
    let awaits = entry.source.awaits_data();
    if ctx.max_time_ms.is_some() && !awaits {
        ctx.shared.engine.lock().cursors.check_in(id, entry);
        // SRV getmore_cmd.cpp
        return Err(CommandError::bad_value(
            "cannot set maxTimeMS on getMore command for a non-awaitData cursor",
        ));
    }
    let wait = Duration::from_millis(ctx.max_time_ms.unwrap_or(1000).max(0) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut rx = {
            let shared = ctx.shared.clone();
            let mut guard = shared.engine.lock();
            let engine = &mut *guard;
            let result = entry.source.next_batch(engine, batch_size);
            let batch = match result {
                Ok(b) => b,
                Err(e) => {
                    engine.cursors.release(id);
                    return Err(e);
                }
            };
            ctx.operation_time = Some(engine.last_applied());
            let timed_out = tokio::time::Instant::now() >= deadline;
            if !batch.docs.is_empty() || batch.exhausted || !awaits || timed_out {
                let extras = entry.source.cursor_extras();
                let out_id = if batch.exhausted {
                    engine.cursors.release(id);
                    0
                } else if engine.cursors.check_in(id, entry) {
                    id
                } else {
                    0
                };
                return raw_reply(ctx, cursor_reply(false, batch.docs, extras, out_id, &ns)?);
            }
            let mut rx = engine.subscribe();
            rx.borrow_and_update();
            rx
        };
        // event-driven wait for new oplog entries, bounded by maxTimeMS
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

/// `getMore`'s cursor id, `collection` and `batchSize` (`None`: no limit).
fn parse_get_more(req: &Request) -> CmdResult<(i64, String, Option<usize>)> {
    let body = &req.body;
    let id = match req.target() {
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Int32(i)) => *i as i64,
        Some(other) => return Err(super::wrong_type("getMore.getMore", other, "long")),
        None => return Err(missing_field("getMore", "getMore")),
    };
    let coll = match body.get("collection") {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => return Err(super::wrong_type("getMore.collection", other, "string")),
        None => return Err(missing_field("getMore", "collection")),
    };
    let batch_size = match opt_i64(body, "getMore", "batchSize")? {
        Some(n) if n < 0 => {
            return Err(CommandError::from_code(
                ErrorCode::IdlValueBelowMinimum,
                format!("BSON field 'batchSize' value must be >= 0, actual value '{n}'"),
            ))
        }
        Some(0) | None => None,
        Some(n) => Some(n as usize),
    };
    Ok((id, coll, batch_size))
}

/// Checks out cursor `id` of namespace `ns` for one `getMore`.
fn check_out_cursor(ctx: &Ctx<'_>, id: i64, ns: &str) -> CmdResult<CursorEntry> {
    let mut engine = ctx.shared.engine.lock();
    match engine.cursors.ns(id) {
        None => {
            return Err(CommandError::from_code(
                ErrorCode::CursorNotFound,
                format!("cursor id {id} not found"),
            ))
        }
        Some(cns) if cns != ns => {
            // SRV getmore_cmd.cpp
            return Err(CommandError::from_code(
                ErrorCode::Unauthorized,
                format!(
                    "Requested getMore on namespace '{ns}', but cursor belongs to a different namespace {cns}"
                ),
            ));
        }
        Some(_) => {}
    }
    match engine.cursors.check_out(id) {
        Checkout::Ok(e) => Ok(e),
        Checkout::NotFound => Err(CommandError::from_code(
            ErrorCode::CursorNotFound,
            format!("cursor id {id} not found"),
        )),
        Checkout::InUse => {
            // SRV cursor_manager.cpp (error_codes.yml: 143 CursorInUse)
            Err(CommandError::from_code(
                ErrorCode::CursorInUse,
                format!("cursor id {id} is already in use"),
            ))
        }
    }
}

/// `killCursors` (reference §3.1).
pub(crate) async fn kill_cursors(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let db = req.db.as_str();
    let coll = names::coll_arg(db, req.target())?;
    let ids = super::args::req_array(&req.body, "killCursors", "cursors")?;
    let ns = format!("{db}.{coll}");
    let mut killed = Vec::new();
    let mut not_found = Vec::new();
    let shared = ctx.shared.clone();
    let mut engine = shared.engine.lock();
    for v in ids {
        let id = match v {
            Bson::Int64(i) => *i,
            Bson::Int32(i) => *i as i64,
            other => return Err(super::wrong_type("killCursors.cursors", other, "long")),
        };
        let ours = engine.cursors.ns(id).is_some_and(|c| c == ns);
        if ours && engine.cursors.kill(id) {
            killed.push(Bson::Int64(id));
        } else {
            not_found.push(Bson::Int64(id));
        }
    }
    Ok(doc! {
        "cursorsKilled": killed,
        "cursorsNotFound": not_found,
        "cursorsAlive": [],
        "cursorsUnknown": [],
    })
}

// ---------------------------------------------------------------- aggregate

/// `aggregate` for ordinary pipelines (change streams are dispatched to
/// `change_stream.rs` before reaching here). Supports `$collStats` as the first stage.
pub(crate) async fn aggregate(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let body = &req.body;
    let db = req.db.as_str();
    names::check_db(db)?;
    super::args::reject_let_on_44(ctx, &req)?;
    let pipeline = super::args::req_array(body, "aggregate", "pipeline")?.clone();
    let batch_size = cursor_batch_size(body, "aggregate")?;
    let explain = opt_bool(body, "aggregate", "explain")?.unwrap_or(false);
    if body.get("cursor").is_none() && !explain {
        // SRV aggregate command: cursor required
        return Err(CommandError::failed_to_parse(
            "The 'cursor' option is required, except for aggregate with the explain argument",
        ));
    }
    let (coll, ns) = aggregate_namespace(&req)?;
    let shared = ctx.shared.clone();
    let mut guard = shared.engine.lock();
    let engine = &mut *guard;
    ctx.operation_time = Some(engine.last_applied());
    let (input, rest) = match coll.as_deref() {
        Some(c) => collection_input(ctx, engine, db, c, &pipeline)?,
        None => database_input(ctx, engine, &pipeline)?,
    };
    // SIMFIX (agg_write.rs): `$out` / `$merge` write the results and reply with an empty batch
    if super::agg_write::has_write_stage(rest)? {
        let reply = super::agg_write::run(ctx, engine, db, &ns, input, rest, body)?;
        return raw_reply(ctx, reply);
    }
    let lets = opt_doc(body, "aggregate", "let")?.cloned();
    let out = run_pipeline(
        engine,
        db,
        coll.as_deref().unwrap_or(""),
        input,
        rest,
        (lets.as_ref(), body.get("collation")),
    )?;
    let mut raws = Vec::with_capacity(out.len());
    for d in &out {
        raws.push(encode(d)?);
    }
    raw_reply(
        ctx,
        open_cursor(
            ctx,
            engine,
            ns,
            Box::new(VecCursor::new(raws)),
            batch_size,
            false,
            false,
        )?,
    )
}

/// The collection of an `aggregate` (`None` for `aggregate: 1`) and the cursor's namespace.
fn aggregate_namespace(req: &Request) -> CmdResult<(Option<String>, String)> {
    let db = req.db.as_str();
    Ok(match req.target() {
        Some(Bson::Int32(1)) | Some(Bson::Int64(1)) | Some(Bson::Double(_)) => {
            (None, format!("{db}.$cmd.aggregate"))
        }
        v => {
            let c = names::coll_arg(db, v)?;
            (Some(c.to_string()), format!("{db}.{c}"))
        }
    })
}

/// The input of a pipeline on collection `c` and the stages left to run: the collection's
/// documents, or what a first `$collStats` or `$sample` produces.
fn collection_input<'p>(
    ctx: &Ctx<'_>,
    engine: &Engine,
    db: &str,
    c: &str,
    pipeline: &'p [Bson],
) -> CmdResult<(Vec<Document>, &'p [Bson])> {
    let Some(Bson::Document(st)) = pipeline.first() else {
        return Ok((engine_docs(engine, db, c, 0)?, pipeline));
    };
    if st.contains_key("$collStats") {
        let spec = st.get_document("$collStats").cloned().unwrap_or_default();
        let host = ctx.conn.local.to_string();
        let d = super::catalog::coll_stats_stage(engine, db, c, &spec, &host)?;
        return Ok((vec![d], &pipeline[1..]));
    }
    if st.contains_key("$listLocalSessions") {
        // SRV document_source_list_local_sessions.cpp
        return Err(CommandError::invalid_namespace(
            "$listLocalSessions must be run against the database with {aggregate: 1}, not a collection",
        ));
    }
    if st.len() == 1 && !is_oplog(engine, db, c) {
        if let (NsKind::Collection(coll), Some(size)) =
            (engine.catalog.kind(db, c), sample_size(st))
        {
            return Ok((sample_docs(coll, size), &pipeline[1..]));
        }
    }
    if st.contains_key("$documents") {
        // SIMFIX (agg_write.rs): `$documents` needs `aggregate: 1`
        return Err(super::agg_write::documents_on_collection());
    }
    Ok((engine_docs(engine, db, c, 0)?, pipeline))
}

/// A first `$sample` on a collection picks its documents without copying the rest
/// (SRV: a random cursor for small samples, a random sort otherwise; both uniform here).
fn sample_docs(coll: &crate::engine::catalog::Collection, size: usize) -> Vec<Document> {
    let mut picked = Vec::new();
    let rids: Vec<u64> = coll.iter().map(|(r, _)| r).collect();
    let n = size.min(rids.len());
    let mut rng = rand::rng();
    for i in rand::seq::index::sample(&mut rng, rids.len(), n) {
        if let Some(sd) = coll.get(rids[i]) {
            picked.push(sd.doc.clone());
        }
    }
    picked
}

/// The input of an `aggregate: 1` pipeline and the stages left to run: what a first
/// `$listLocalSessions` or `$documents` produces, or nothing.
fn database_input<'p>(
    ctx: &Ctx<'_>,
    engine: &Engine,
    pipeline: &'p [Bson],
) -> CmdResult<(Vec<Document>, &'p [Bson])> {
    match pipeline.first() {
        // SIMFIX: the sessions in the local logical session cache (sessions.rs).
        Some(Bson::Document(st)) if st.contains_key("$listLocalSessions") => {
            let spec = st.get("$listLocalSessions").cloned().unwrap_or(Bson::Null);
            Ok((
                super::sessions::list_local_sessions(&ctx.shared, &spec)?,
                &pipeline[1..],
            ))
        }
        // SIMFIX (agg_write.rs): `$documents` source of `aggregate: 1`
        Some(Bson::Document(st)) if st.contains_key("$documents") => Ok((
            super::agg_write::documents_stage(engine.version, st)?,
            &pipeline[1..],
        )),
        _ => Ok((Vec::new(), pipeline)),
    }
}
