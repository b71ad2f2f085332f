//! The document an upsert starts from (equality predicates of its query).

use bson::{doc, Bson, Document};

use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// The document an upsert starts from: the equality predicates of its query
/// (SRV `UpdateDriver::populateDocumentWithQueryFields`, `pathsupport::extractEqualityMatches`).
/// For replacement updates only `_id` is taken.
pub fn upsert_seed(query: &Document) -> CmdResult<Document> {
    upsert_seed_for(query, false)
}

/// [`upsert_seed`] for a replacement update (`replacement = true`: only `_id` is taken).
pub fn upsert_seed_for(query: &Document, replacement: bool) -> CmdResult<Document> {
    let mut eqs: Vec<(String, Bson)> = Vec::new();
    collect_equalities(query, &mut eqs);
    let mut out = Document::new();
    for (path, v) in eqs {
        if replacement && path != "_id" {
            continue;
        }
        if crate::path::get_path(&out, &path).is_some() {
            // SRV path_support.cpp: 54 NotSingleValueField
            return Err(CommandError::from_code(
                ErrorCode::NotSingleValueField,
                format!("cannot infer query fields to set, path '{path}' is matched twice"),
            ));
        }
        crate::path::set_path(&mut out, &path, v)?;
    }
    // _id first.
    if let Some(id) = out.remove("_id") {
        let mut d = doc! {"_id": id};
        for (k, v) in out {
            d.insert(k, v);
        }
        out = d;
    }
    Ok(out)
}

fn collect_equalities(q: &Document, out: &mut Vec<(String, Bson)>) {
    for (k, v) in q {
        // A one-clause `$or` is canonicalized into its clause (SRV canonical_query.cpp).
        if k == "$or" {
            if let Bson::Array(items) = v {
                if let [Bson::Document(d)] = items.as_slice() {
                    collect_equalities(d, out);
                }
            }
            continue;
        }
        if k == "$and" {
            if let Bson::Array(items) = v {
                for it in items {
                    if let Bson::Document(d) = it {
                        collect_equalities(d, out);
                    }
                }
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Bson::Document(d) if d.keys().next().is_some_and(|f| f.starts_with('$')) => {
                if let Some(e) = d.get("$eq") {
                    out.push((k.clone(), e.clone()));
                } else if let Some(Bson::Array(items)) = d.get("$in") {
                    // a one-element $in is canonicalized to $eq
                    if let [single] = items.as_slice() {
                        if !matches!(single, Bson::RegularExpression(_)) {
                            out.push((k.clone(), single.clone()));
                        }
                    }
                }
            }
            Bson::RegularExpression(_) => {}
            other => out.push((k.clone(), other.clone())),
        }
    }
}
