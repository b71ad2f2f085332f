//! Collection validators (`validator`, `validationLevel`, `validationAction` of create /
//! collMod): 121 DocumentValidationFailure with `errInfo: {failingDocumentId, details}`
//! (SRV `src/mongo/db/catalog/collection_impl.cpp` `checkValidation`,
//! `src/mongo/db/matcher/doc_validation_error.cpp` for the `details` shape; `errInfo`
//! exists from 5.0, 4.4 replies only "Document failed validation").

use bson::{doc, Bson, Document};

use crate::engine::Engine;
use crate::error::ErrorCode;
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
    let (schema, rest) = split_schema(validator);
    let schema = schema.and_then(Bson::as_document);
    let m = Matcher::parse(&rest)?;
    let failures = |d: &Document| -> (Vec<Bson>, bool) {
        let f = schema
            .map(|s| schema_failures(s, &Bson::Document(d.clone())))
            .unwrap_or_default();
        (f, m.matches(d))
    };
    let (schema_fail, query_ok) = failures(new_doc);
    if schema_fail.is_empty() && query_ok {
        return Ok(());
    }
    if level == "moderate" {
        if let Some(o) = old {
            let (f, ok) = failures(o);
            if !f.is_empty() || !ok {
                return Ok(());
            }
        }
    }
    let err = CommandError::from_code(
        ErrorCode::DocumentValidationFailure,
        "Document failed validation",
    );
    if engine.version == crate::ServerVersion::V4_4 {
        return Err(err);
    }
    let id = new_doc.get("_id").cloned().unwrap_or(Bson::Null);
    let schema_details =
        doc! {"operatorName": "$jsonSchema", "schemaRulesNotSatisfied": schema_fail.clone()};
    let details = match (schema_fail.is_empty(), query_ok) {
        (false, true) => schema_details,
        (true, _) => details(&rest, new_doc),
        (false, false) => {
            // an implicit top-level $and of the $jsonSchema and the query clauses
            let mut clauses = vec![Bson::Document(doc! {"index": 0, "details": schema_details})];
            clauses.push(Bson::Document(
                doc! {"index": 1, "details": details(&rest, new_doc)},
            ));
            doc! {"operatorName": "$and", "clausesNotSatisfied": clauses}
        }
    };
    Err(err.with_extra(
        "errInfo",
        doc! {"failingDocumentId": id, "details": details},
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

/// Checks the validator options of `create` / `collMod` (`cmd`): `validator` is an object
/// whose query and `$jsonSchema` parse, `validationLevel` / `validationAction` are enum values
/// (SRV `collection_options.cpp`, IDL enum errors: 2 BadValue).
pub(crate) fn check_options(options: &Document, cmd: &str) -> CmdResult<()> {
    if let Some(v) = options.get("validator") {
        let Bson::Document(validator) = v else {
            return Err(CommandError::wrong_type(
                &format!("{cmd}.validator"),
                v,
                "object",
            ));
        };
        let (schema, rest) = split_schema(validator);
        if let Some(s) = schema {
            let Bson::Document(s) = s else {
                return Err(CommandError::type_mismatch("$jsonSchema must be an object"));
            };
            check_schema(s)?;
        }
        Matcher::parse(&rest)?;
    }
    for (field, allowed) in [
        ("validationLevel", &["off", "strict", "moderate"][..]),
        ("validationAction", &["error", "warn"][..]),
    ] {
        match options.get(field) {
            None => {}
            Some(Bson::String(s)) if allowed.contains(&s.as_str()) => {}
            Some(Bson::String(s)) => {
                return Err(CommandError::bad_value(format!(
                    "Enumeration value '{s}' for field '{cmd}.{field}' is not a valid value."
                )))
            }
            Some(other) => {
                return Err(CommandError::wrong_type(
                    &format!("{cmd}.{field}"),
                    other,
                    "string",
                ))
            }
        }
    }
    Ok(())
}

/// The top-level `$jsonSchema` of a validator and the remaining query.
fn split_schema(validator: &Document) -> (Option<&Bson>, Document) {
    let mut rest = validator.clone();
    rest.remove("$jsonSchema");
    (validator.get("$jsonSchema"), rest)
}

// ---------------------------------------------------------------- $jsonSchema

/// Keywords MongoDB's `$jsonSchema` supports (SRV `json_schema_parser.cpp`); `id`,
/// `$ref`, `$schema`, `default`, `definitions`, `format`, `additionalItems` are rejected.
const SCHEMA_KEYWORDS: &[&str] = &[
    "bsonType",
    "type",
    "required",
    "properties",
    "additionalProperties",
    "patternProperties",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "title",
    "description",
    "encrypt",
    "encryptMetadata",
    "dependencies",
];

fn check_schema(s: &Document) -> CmdResult<()> {
    for (k, v) in s {
        if !SCHEMA_KEYWORDS.contains(&k.as_str()) {
            // SRV json_schema_parser.cpp
            return Err(CommandError::failed_to_parse(format!(
                "Unknown $jsonSchema keyword: {k}"
            )));
        }
        match (k.as_str(), v) {
            ("properties" | "patternProperties", Bson::Document(props)) => {
                for (_, p) in props {
                    if let Bson::Document(p) = p {
                        check_schema(p)?;
                    }
                }
            }
            ("items" | "additionalProperties" | "not", Bson::Document(p)) => check_schema(p)?,
            ("allOf" | "anyOf" | "oneOf", Bson::Array(subs)) => {
                for p in subs {
                    if let Bson::Document(p) = p {
                        check_schema(p)?;
                    }
                }
            }
            ("type", Bson::String(t)) if t == "integer" => {
                return Err(CommandError::bad_value(
                    "$jsonSchema type 'integer' is not currently supported.",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn bson_type_matches(name: &str, v: &Bson) -> bool {
    let t = crate::query::fmt::type_name(v);
    match name {
        "number" => matches!(t, "int" | "long" | "double" | "decimal"),
        // JSON Schema `type` names
        "object" | "array" | "string" | "null" => t == name,
        "boolean" | "bool" => t == "bool",
        other => t == other,
    }
}

fn type_ok(spec: &Bson, v: &Bson) -> bool {
    match spec {
        Bson::String(s) => bson_type_matches(s, v),
        Bson::Array(a) => a
            .iter()
            .any(|s| s.as_str().is_some_and(|s| bson_type_matches(s, v))),
        _ => true,
    }
}

fn num(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            crate::query::compare::as_f64(v)
        }
        _ => None,
    }
}

/// Validates `v` against schema `s`; returns the unsatisfied rules (empty = valid), in the
/// shape of SRV doc_validation_error.cpp (`operatorName`, `specifiedAs`, `reason`, ...).
fn schema_failures(s: &Document, v: &Bson) -> Vec<Bson> {
    s.iter()
        .filter_map(|(kw, spec)| {
            let (_, check) = KEYWORD_CHECKS.iter().find(|(k, _)| k == kw)?;
            check(kw, spec, s, v)
        })
        .collect()
}

/// Checks `v` against keyword `kw: spec` of schema `s`: the failure, if any.
type KeywordCheck = fn(kw: &str, spec: &Bson, s: &Document, v: &Bson) -> Option<Bson>;

/// The `$jsonSchema` keywords checked, each with its check (other keywords pass).
const KEYWORD_CHECKS: &[(&str, KeywordCheck)] = &[
    ("bsonType", check_type),
    ("type", check_type),
    ("minimum", check_bound),
    ("maximum", check_bound),
    ("minLength", check_length),
    ("maxLength", check_length),
    ("pattern", check_pattern),
    ("enum", check_enum),
    ("minItems", check_item_count),
    ("maxItems", check_item_count),
    ("items", check_items),
    ("required", check_required),
    ("properties", check_properties),
    ("additionalProperties", check_additional_properties),
    ("minProperties", check_property_count),
    ("maxProperties", check_property_count),
    ("uniqueItems", check_unique_items),
    ("allOf", check_combination),
    ("anyOf", check_combination),
    ("oneOf", check_combination),
    ("not", check_not),
];

/// The failure of a simple keyword: `{operatorName, specifiedAs, reason, consideredValue}`.
fn rule_doc(kw: &str, spec: &Bson, v: &Bson, reason: &str) -> Document {
    let mut d = doc! {"operatorName": kw, "specifiedAs": {kw: spec.clone()}, "reason": reason};
    d.insert("consideredValue", v.clone());
    d
}

/// [`rule_doc`] as a reported failure.
fn rule(kw: &str, spec: &Bson, v: &Bson, reason: &str) -> Option<Bson> {
    Some(Bson::Document(rule_doc(kw, spec, v, reason)))
}

/// Whether the count `n` satisfies the `min…` or `max…` keyword `kw` with limit `lim`.
fn count_ok(kw: &str, n: f64, lim: f64) -> bool {
    if kw.starts_with("min") {
        n >= lim
    } else {
        n <= lim
    }
}

/// `bsonType` / `type`.
fn check_type(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    if type_ok(spec, v) {
        return None;
    }
    let mut d = rule_doc(kw, spec, v, "type did not match");
    d.insert("consideredType", crate::query::fmt::type_name(v));
    Some(Bson::Document(d))
}

/// `minimum` / `maximum`, with `exclusiveMinimum` / `exclusiveMaximum`.
fn check_bound(kw: &str, spec: &Bson, s: &Document, v: &Bson) -> Option<Bson> {
    let (x, lim) = (num(v)?, num(spec)?);
    let exclusive = s
        .get(if kw == "minimum" {
            "exclusiveMinimum"
        } else {
            "exclusiveMaximum"
        })
        .and_then(Bson::as_bool)
        .unwrap_or(false);
    let ok = match (kw, exclusive) {
        ("minimum", false) => x >= lim,
        ("minimum", true) => x > lim,
        (_, false) => x <= lim,
        (_, true) => x < lim,
    };
    if ok {
        return None;
    }
    rule(kw, spec, v, "comparison failed")
}

/// `minLength` / `maxLength` of a string, in characters.
fn check_length(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::String(st), Some(lim)) = (v, num(spec)) else {
        return None;
    };
    if count_ok(kw, st.chars().count() as f64, lim) {
        return None;
    }
    rule(kw, spec, v, "specified string length was not satisfied")
}

/// `pattern` of a string (an invalid pattern passes).
fn check_pattern(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::String(st), Bson::String(p)) = (v, spec) else {
        return None;
    };
    if regex::Regex::new(p).is_ok_and(|re| !re.is_match(st)) {
        return rule(kw, spec, v, "regular expression did not match");
    }
    None
}

/// `enum`: the value is one of the items.
fn check_enum(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let Bson::Array(items) = spec else {
        return None;
    };
    if items.iter().any(|i| crate::query::compare::binary_eq(i, v)) {
        return None;
    }
    rule(kw, spec, v, "value was not found in enum")
}

/// `minItems` / `maxItems` of an array.
fn check_item_count(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::Array(a), Some(lim)) = (v, num(spec)) else {
        return None;
    };
    if count_ok(kw, a.len() as f64, lim) {
        return None;
    }
    rule(kw, spec, v, "array did not match specified length")
}

/// `items`: every item of an array matches the sub-schema (the first failing one is
/// reported).
fn check_items(_: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::Array(a), Bson::Document(item)) = (v, spec) else {
        return None;
    };
    let (i, f) = a
        .iter()
        .enumerate()
        .map(|(i, e)| (i, schema_failures(item, e)))
        .find(|(_, f)| !f.is_empty())?;
    Some(Bson::Document(
        doc! {"operatorName": "items", "reason": "At least one item did not match the sub-schema", "itemIndex": i as i32, "details": f},
    ))
}

/// `required`: the listed fields are present.
fn check_required(_: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::Document(d), Bson::Array(req)) = (v, spec) else {
        return None;
    };
    let missing: Vec<Bson> = req
        .iter()
        .filter(|f| f.as_str().is_some_and(|f| !d.contains_key(f)))
        .cloned()
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(Bson::Document(
        doc! {"operatorName": "required", "specifiedAs": {"required": spec.clone()}, "missingProperties": missing},
    ))
}

/// `properties`: each present property matches its sub-schema.
fn check_properties(_: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::Document(d), Bson::Document(props)) = (v, spec) else {
        return None;
    };
    let mut bad = Vec::new();
    for (name, p) in props {
        if let (Some(val), Bson::Document(p)) = (d.get(name), p) {
            let f = schema_failures(p, val);
            if !f.is_empty() {
                bad.push(Bson::Document(
                    doc! {"propertyName": name.as_str(), "details": f},
                ));
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    Some(Bson::Document(
        doc! {"operatorName": "properties", "propertiesNotSatisfied": bad},
    ))
}

/// `additionalProperties`: `false` (none allowed) or a sub-schema the properties not listed
/// in `properties` must match.
fn check_additional_properties(_: &str, spec: &Bson, s: &Document, v: &Bson) -> Option<Bson> {
    let Bson::Document(d) = v else {
        return None;
    };
    let known: Vec<&str> = s
        .get_document("properties")
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let extra: Vec<(&String, &Bson)> = d
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .collect();
    match spec {
        Bson::Boolean(false) if !extra.is_empty() => {
            let names: Vec<Bson> = extra
                .iter()
                .map(|(k, _)| Bson::String((*k).clone()))
                .collect();
            Some(Bson::Document(
                doc! {"operatorName": "additionalProperties", "specifiedAs": {"additionalProperties": false}, "additionalProperties": names},
            ))
        }
        Bson::Document(sub) => extra.into_iter().find_map(|(k, val)| {
            let f = schema_failures(sub, val);
            (!f.is_empty()).then(|| {
                Bson::Document(
                    doc! {"operatorName": "additionalProperties", "reason": "at least one additional property did not match the subschema", "failingProperty": k.as_str(), "details": f},
                )
            })
        }),
        _ => None,
    }
}

/// `minProperties` / `maxProperties` of a document.
fn check_property_count(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::Document(d), Some(lim)) = (v, num(spec)) else {
        return None;
    };
    if count_ok(kw, d.len() as f64, lim) {
        return None;
    }
    Some(Bson::Document(
        doc! {"operatorName": kw, "specifiedAs": {kw: spec.clone()}, "reason": "specified number of properties was not satisfied", "numberOfProperties": d.len() as i32},
    ))
}

/// `uniqueItems: true`: no two items of an array are equal.
fn check_unique_items(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let (Bson::Array(a), Bson::Boolean(true)) = (v, spec) else {
        return None;
    };
    let dup = a.iter().enumerate().any(|(i, x)| {
        a[..i]
            .iter()
            .any(|y| crate::query::compare::binary_eq(x, y))
    });
    if dup {
        return rule(kw, spec, v, "found a duplicate item");
    }
    None
}

/// `allOf` / `anyOf` / `oneOf`: how many of the sub-schemas must match.
fn check_combination(kw: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let Bson::Array(subs) = spec else {
        return None;
    };
    let results: Vec<Vec<Bson>> = subs
        .iter()
        .filter_map(|x| x.as_document())
        .map(|x| schema_failures(x, v))
        .collect();
    let passing = results.iter().filter(|r| r.is_empty()).count();
    let ok = match kw {
        "allOf" => passing == results.len(),
        "anyOf" => passing >= 1,
        _ => passing == 1,
    };
    if ok {
        return None;
    }
    Some(Bson::Document(
        doc! {"operatorName": kw, "schemasNotSatisfied": results.into_iter().filter(|r| !r.is_empty()).map(|r| Bson::Document(doc! {"details": r})).collect::<Vec<_>>()},
    ))
}

/// `not`: the sub-schema does not match.
fn check_not(_: &str, spec: &Bson, _: &Document, v: &Bson) -> Option<Bson> {
    let Bson::Document(sub) = spec else {
        return None;
    };
    if schema_failures(sub, v).is_empty() {
        return Some(Bson::Document(
            doc! {"operatorName": "not", "reason": "child expression matched"},
        ));
    }
    None
}
