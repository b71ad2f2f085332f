//! Collection validators (`validator`, `validationLevel`, `validationAction` of create /
//! collMod): 121 DocumentValidationFailure with `errInfo: {failingDocumentId, details}`
//! (SRV `src/mongo/db/catalog/collection_impl.cpp` `checkValidation`,
//! `src/mongo/db/matcher/doc_validation_error.cpp` for the `details` shape; `errInfo`
//! exists from 5.0, 4.4 replies only "Document failed validation").

use bson::{doc, Bson, Document};

use crate::engine::Engine;
use crate::error::{CmdResult, CommandError};
use crate::query::matcher::Matcher;

/// Checks `new_doc` against the validator of `db.coll` (no validator: always valid).
/// `old` is the document before an update: with `validationLevel: "moderate"` updates of
/// documents that were already invalid are not checked.
pub(crate) fn check(
    engine: &Engine,
    db: &str,
    coll: &str,
    new_doc: &Document,
    old: Option<&Document>,
) -> CmdResult<()> {
    let Some(c) = engine.catalog.coll(db, coll) else {
        return Ok(());
    };
    let Ok(validator) = c.options.get_document("validator") else {
        return Ok(());
    };
    if validator.is_empty() {
        return Ok(());
    }
    let level = c.options.get_str("validationLevel").unwrap_or("strict");
    let action = c.options.get_str("validationAction").unwrap_or("error");
    if level == "off" || action == "warn" {
        // "warn" only logs (SRV collection_impl.cpp)
        return Ok(());
    }
    let m = Matcher::parse(validator)?;
    if m.matches(new_doc) {
        return Ok(());
    }
    if level == "moderate" {
        if let Some(o) = old {
            if !m.matches(o) {
                return Ok(());
            }
        }
    }
    let err = CommandError::from_code(121, "Document failed validation");
    if engine.version == crate::ServerVersion::V4_4 {
        return Err(err);
    }
    let id = new_doc.get("_id").cloned().unwrap_or(Bson::Null);
    Err(err.with_extra(
        "errInfo",
        doc! {"failingDocumentId": id, "details": details(validator, new_doc)},
    ))
}

/// The `details` of a failed validation: the failing operator with the reason
/// (SRV doc_validation_error.cpp; a multi-clause validator is an implicit `$and` listing
/// `clausesNotSatisfied`).
fn details(validator: &Document, d: &Document) -> Document {
    let clauses: Vec<(String, Bson)> = validator
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if clauses.len() == 1 {
        let (k, v) = &clauses[0];
        return clause_details(k, v, d);
    }
    let mut failing = Vec::new();
    for (i, (k, v)) in clauses.iter().enumerate() {
        let one = doc! {k.clone(): v.clone()};
        let ok = Matcher::parse(&one).map(|m| m.matches(d)).unwrap_or(false);
        if !ok {
            failing.push(Bson::Document(
                doc! {"index": i as i32, "details": clause_details(k, v, d)},
            ));
        }
    }
    doc! {"operatorName": "$and", "clausesNotSatisfied": failing}
}

fn clause_details(field: &str, spec: &Bson, d: &Document) -> Document {
    if field.starts_with('$') {
        return doc! {"operatorName": field, "specifiedAs": {field: spec.clone()}, "reason": "expression did not match"};
    }
    let (op, specified) = match spec {
        Bson::Document(s) if s.keys().next().is_some_and(|k| k.starts_with('$')) => {
            let op = s.keys().next().cloned().unwrap_or_default();
            (op, doc! {field: spec.clone()})
        }
        _ => ("$eq".to_string(), doc! {field: spec.clone()}),
    };
    let value = crate::query::path::get_path(d, field);
    let mut out = doc! {"operatorName": op.as_str(), "specifiedAs": specified};
    match (value, op.as_str()) {
        (None, "$exists") => {
            out.insert("reason", "path does not exist");
        }
        (Some(_), "$exists") => {
            out.insert("reason", "path does exist");
        }
        (None, _) => {
            out.insert("reason", "field was missing");
        }
        (Some(v), _) => {
            // SRV doc_validation_error_test.cpp: reasons per operator
            let reason = match op.as_str() {
                "$type" => "type did not match",
                "$ne" => "comparison succeeded",
                "$eq" | "$gt" | "$gte" | "$lt" | "$lte" => "comparison failed",
                "$in" => "no matching value found in array",
                "$nin" => "matching value found in array",
                "$regex" => "regular expression did not match",
                _ => "expression did not match",
            };
            out.insert("reason", reason);
            // implicit array traversal reports every value
            match v {
                Bson::Array(items) => out.insert("consideredValues", items.clone()),
                _ => out.insert("consideredValue", v.clone()),
            };
            if op == "$type" {
                match v {
                    Bson::Array(items) => {
                        let types: Vec<Bson> = items
                            .iter()
                            .map(|i| Bson::String(crate::query::fmt::type_name(i).to_string()))
                            .collect();
                        out.insert("consideredTypes", types)
                    }
                    _ => out.insert("consideredType", crate::query::fmt::type_name(v)),
                };
            }
        }
    }
    out
}

/// The command's `bypassDocumentValidation: true`.
pub(crate) fn bypass(body: &Document) -> bool {
    matches!(
        body.get("bypassDocumentValidation"),
        Some(Bson::Boolean(true))
    )
}
