//! Documents as the write and read commands see them: insert preparation (`_id` first,
//! generated when missing), `_id` lookups, matching record ids, and the documents of a
//! namespace (a collection, the oplog, or a view with its pipeline applied).

use bson::{oid::ObjectId, Bson, Document, Timestamp};

use super::catalog::{Catalog, Collection, NsKind, ViewDef};
use super::Engine;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::query::compare::collation_of;
use crate::query::matcher::Matcher;

/// Depth of nesting (the top-level document is level 1).
fn depth(d: &Document) -> usize {
    fn val(v: &Bson) -> usize {
        match v {
            Bson::Document(d) => depth(d),
            Bson::Array(a) => 1 + a.iter().map(val).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + d.values().map(val).max().unwrap_or(0)
}

/// Prepares a document for insert as the server does (SRV `ops/insert.cpp`
/// `fixDocumentForInsert`): `_id` first (generated when missing), top-level
/// `Timestamp(0, 0)` replaced by a fresh cluster time, `_id` type and depth checks.
pub(crate) fn fix_document_for_insert(engine: &mut Engine, doc: &Document) -> CmdResult<Document> {
    if depth(doc) > 180 {
        return Err(CommandError::from_code(
            ErrorCode::Overflow,
            "cannot insert document because it exceeds 180 levels of nesting",
        ));
    }
    if engine.version == crate::ServerVersion::V4_4 {
        if let Some(k) = doc.keys().find(|k| k.starts_with('$')) {
            // 4.4 SRV ops/insert.cpp fixDocumentForInsert (allowed from 5.0)
            return Err(CommandError::bad_value(format!(
                "Document can't have $ prefixed field names: {k}"
            )));
        }
    }
    let id = match doc.get("_id") {
        Some(v) => {
            check_id(engine, v)?;
            v.clone()
        }
        None => Bson::ObjectId(ObjectId::new()),
    };
    let mut out = Document::new();
    out.insert("_id", id);
    for (k, v) in doc {
        if k == "_id" {
            continue;
        }
        match v {
            Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            }) => {
                out.insert(k.clone(), engine.clock.tick());
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    Ok(out)
}

/// `_id` may not be an array, regex or undefined (reference §8.7).
pub(crate) fn check_id(engine: &Engine, v: &Bson) -> CmdResult<()> {
    if let Bson::Document(d) = v {
        fn dollar(d: &Document) -> Option<&str> {
            d.iter().find_map(|(k, v)| {
                if k.starts_with('$') {
                    Some(k.as_str())
                } else if let Bson::Document(inner) = v {
                    dollar(inner)
                } else {
                    None
                }
            })
        }
        if let Some(k) = dollar(d) {
            // SRV storage_validation.cpp storageValidIdField
            return Err(CommandError::from_code(
                ErrorCode::DollarPrefixedFieldName,
                format!(
                    "_id fields may not contain '$'-prefixed fields: {k} is not valid for storage."
                ),
            ));
        }
    }
    let ty = match v {
        Bson::Array(_) => "array",
        Bson::RegularExpression(_) => "regex",
        Bson::Undefined => "undefined",
        _ => return Ok(()),
    };
    if engine.version == crate::ServerVersion::V4_4 {
        Err(CommandError::bad_value(format!(
            "can't use an {ty} for _id"
        )))
    } else {
        Err(CommandError::from_code(
            ErrorCode::InvalidIdField,
            format!("The '_id' value cannot be of type {ty}"),
        ))
    }
}

/// Record ids a top-level `_id` equality (`{_id: v}`, `{_id: {$eq: v}}`, `{_id: {$in: [...]}}`)
/// restricts the query to, looked up in the `_id` index; `None` when the query needs a scan.
pub(crate) fn id_candidates(c: &Collection, query: &Document) -> Option<Vec<u64>> {
    fn plain(v: &Bson) -> bool {
        match v {
            Bson::Document(d) => !d.keys().any(|k| k.starts_with('$')),
            Bson::Array(_) | Bson::RegularExpression(_) => false,
            _ => true,
        }
    }
    let v = query.get("_id")?;
    let values: Vec<&Bson> = match v {
        Bson::Document(d) if d.len() == 1 => match (d.get("$eq"), d.get("$in")) {
            (Some(x), _) if plain(x) => vec![x],
            (_, Some(Bson::Array(a))) if a.iter().all(plain) => a.iter().collect(),
            _ => return None,
        },
        x if plain(x) => vec![x],
        _ => return None,
    };
    let mut rids: Vec<u64> = values.into_iter().filter_map(|x| c.rid_by_id(x)).collect();
    rids.sort_unstable();
    rids.dedup();
    Some(rids)
}

/// Record ids of the documents matching `query` (parsed as `m`, simple collation), in
/// `$natural` order.
pub(crate) fn matching_rids(
    catalog: &Catalog,
    db: &str,
    coll: &str,
    query: &Document,
    m: &Matcher,
) -> Vec<u64> {
    matching_rids_with(catalog, db, coll, query, m, true)
}

/// [`matching_rids`] for a matcher that may carry a non-simple collation (`simple` false):
/// then the binary `_id` index cannot answer string equalities and the collection is scanned.
pub(crate) fn matching_rids_with(
    catalog: &Catalog,
    db: &str,
    coll: &str,
    query: &Document,
    m: &Matcher,
    simple: bool,
) -> Vec<u64> {
    let Some(c) = catalog.coll(db, coll) else {
        return Vec::new();
    };
    if let Some(rids) = id_candidates(c, query).filter(|_| simple) {
        return rids
            .into_iter()
            .filter(|r| c.get(*r).is_some_and(|sd| m.matches(&sd.doc)))
            .collect();
    }
    c.iter()
        .filter(|(_, sd)| m.matches(&sd.doc))
        .map(|(rid, _)| rid)
        .collect()
}

/// All documents of `db.coll` in `$natural` order: a collection, the oplog, or a view
/// (its pipeline applied). A missing namespace has none.
pub(crate) fn source_docs(
    engine: &Engine,
    db: &str,
    coll: &str,
    _filter: &Document,
) -> CmdResult<Vec<Document>> {
    engine_docs(engine, db, coll, 0)
}

pub(crate) fn engine_docs(
    engine: &Engine,
    db: &str,
    coll: &str,
    depth: usize,
) -> CmdResult<Vec<Document>> {
    if db == "local" && coll == "oplog.rs" {
        if let Some(o) = &engine.oplog {
            let mut out = Vec::with_capacity(o.len());
            for (_, e) in o.iter_from(0) {
                out.push(e.raw.to_document().map_err(|err| {
                    CommandError::from_code(ErrorCode::InternalError, err.to_string())
                })?);
            }
            return Ok(out);
        }
    }
    match engine.catalog.kind(db, coll) {
        NsKind::Missing => Ok(Vec::new()),
        NsKind::Collection(c) => Ok(c.iter().map(|(_, sd)| sd.doc.clone()).collect()),
        NsKind::View(v) => view_docs(engine, db, &v, depth),
    }
}

fn view_docs(engine: &Engine, db: &str, v: &ViewDef, depth: usize) -> CmdResult<Vec<Document>> {
    if depth > 20 {
        // SRV view_catalog.cpp: view depth limit
        return Err(CommandError::from_code(
            ErrorCode::ViewDepthLimitExceeded,
            "View depth too deep or view cycle detected; maximum depth is 20",
        ));
    }
    let base = engine_docs(engine, db, &v.view_on, depth + 1)?;
    run_pipeline(engine, db, &v.view_on, base, &v.pipeline, (None, None))
}

/// Runs `pipeline` over `docs` with QUERY's pipeline engine.
pub(crate) fn run_pipeline(
    engine: &Engine,
    db: &str,
    coll: &str,
    docs: Vec<Document>,
    pipeline: &[Bson],
    (lets, collation): (Option<&Document>, Option<&Bson>),
) -> CmdResult<Vec<Document>> {
    let _ = (db, coll);
    let mut stages = Vec::with_capacity(pipeline.len());
    for st in pipeline {
        match st {
            Bson::Document(d) => stages.push(d.clone()),
            _ => {
                return Err(CommandError::type_mismatch(
                    "Each element of the 'pipeline' array must be an object",
                ))
            }
        }
    }
    let mut p = crate::query::pipeline::Pipeline::parse_with_let(&stages, lets)?;
    p.set_collation(collation_of(collation)?);
    let vars = crate::query::matcher::eval_lets(lets)?;
    p.run_with_vars(
        docs,
        bson::DateTime::now(),
        Some(engine.cluster_time()),
        &vars,
    )
}

pub(crate) fn is_oplog(engine: &Engine, db: &str, coll: &str) -> bool {
    engine.oplog.is_some() && db == "local" && coll == "oplog.rs"
}
