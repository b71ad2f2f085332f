//! Running the in-memory stages over documents: one function per stage, dispatched by
//! [`run_stage`], and the grouping shared by `$group`, `$bucket` and `$bucketAuto`
//! (SRV `document_source_*.cpp` `doGetNext`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use bson::{Bson, Document};
use rand::seq::SliceRandom;

use super::{err, Env, Stage};
use crate::compare::{canonical_type, cmp_bson};
use crate::error::CmdResult;
use crate::error::ErrorCode;
use crate::expr::{accumulate, Expr};
use crate::fmt;
use crate::matcher::Matcher;
use crate::path::get_path;
use crate::sort::SortSpec;

/// Accumulator fields of a grouping stage: `(output field, $accumulator, expression)`.
type Accs = [(String, String, Expr)];

/// Runs the stages in order, each over the previous one's output.
pub(super) fn run_stages(
    stages: &[(String, Stage)],
    mut docs: Vec<Document>,
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    for (_, st) in stages {
        docs = run_stage(st, docs, env)?;
    }
    Ok(docs)
}

/// Runs one stage over `docs`: the table from stage to its runner.
fn run_stage(st: &Stage, docs: Vec<Document>, env: &Env<'_>) -> CmdResult<Vec<Document>> {
    match st {
        Stage::Match(m) => run_match(m, docs),
        Stage::Sort(s) => Ok(run_sort(s, docs)),
        Stage::Skip(n) => Ok(docs.into_iter().skip(*n as usize).collect()),
        Stage::Limit(n) => Ok(docs.into_iter().take(*n as usize).collect()),
        Stage::Project(p) => docs
            .iter()
            .map(|d| p.apply_vars(&env.vars(d), None))
            .collect(),
        Stage::AddFields(fields) => run_add_fields(fields, docs, env),
        Stage::ReplaceRoot(e) => run_replace_root(e, docs, env),
        Stage::Count(name) => Ok(run_count(name, &docs)),
        Stage::Group(id, accs) => group(docs, id, accs, env),
        Stage::Unwind(path, idx, preserve) => Ok(run_unwind(path, idx.as_deref(), *preserve, docs)),
        Stage::Bucket(group_by, boundaries, default, accs) => {
            run_bucket(group_by, boundaries, default.as_ref(), accs, docs, env)
        }
        Stage::BucketAuto(group_by, n, accs) => run_bucket_auto(group_by, *n, accs, docs, env),
        Stage::Facet(facets) => run_facet(facets, docs, env),
        Stage::Sample(n) => Ok(run_sample(*n, docs)),
        Stage::Redact(e) => run_redact(e, docs, env),
    }
}

/// `$match`: the documents the filter matches (`$expr` errors fail the stage).
fn run_match(m: &Matcher, docs: Vec<Document>) -> CmdResult<Vec<Document>> {
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        if m.try_matches(&d)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// `$sort` (`{$natural: -1}` alone reverses the input).
fn run_sort(s: &SortSpec, mut docs: Vec<Document>) -> Vec<Document> {
    s.sort(&mut docs);
    if s.natural() == Some(-1) && s.is_empty() {
        docs.reverse();
    }
    docs
}

/// `$addFields`: every expression is evaluated against the input document, then set.
fn run_add_fields(
    fields: &[(String, Expr)],
    docs: Vec<Document>,
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let vars = env.vars(&d);
        let mut vals = Vec::with_capacity(fields.len());
        for (_, e) in fields {
            vals.push(e.eval(&vars)?);
        }
        let mut nd = d.clone();
        for ((path, _), v) in fields.iter().zip(vals) {
            let parts: Vec<&str> = path.split('.').collect();
            add_field(&mut nd, &parts, v);
        }
        out.push(nd);
    }
    Ok(out)
}

/// Sets `path` in `doc` the way `$addFields` does: creates/overwrites embedded documents
/// (a non-document in the way is replaced); arrays of documents get the field in each element.
fn add_field(doc: &mut Document, parts: &[&str], v: Option<Bson>) {
    if parts.len() == 1 {
        match v {
            Some(v) => {
                doc.insert(parts[0], v);
            }
            None => {
                doc.remove(parts[0]);
            }
        }
        return;
    }
    match doc.get_mut(parts[0]) {
        Some(Bson::Document(sub)) => add_field(sub, &parts[1..], v),
        Some(Bson::Array(arr)) => {
            for e in arr.iter_mut() {
                if let Bson::Document(sub) = e {
                    add_field(sub, &parts[1..], v.clone());
                }
            }
        }
        _ => {
            if v.is_some() {
                let mut sub = Document::new();
                add_field(&mut sub, &parts[1..], v);
                doc.insert(parts[0], sub);
            }
        }
    }
}

/// `$replaceRoot` / `$replaceWith`: the expression must evaluate to a document.
fn run_replace_root(e: &Expr, docs: Vec<Document>, env: &Env<'_>) -> CmdResult<Vec<Document>> {
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let vars = env.vars(&d);
        match e.eval(&vars)? {
            Some(Bson::Document(nd)) => out.push(nd),
            other => {
                // SRV document_source_replace_root.cpp: 40228
                let v = other.unwrap_or(Bson::Null);
                return Err(err(
                    ErrorCode::ReplacementNotObject,
                    format!(
                        "'replacement document' must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {}",
                        fmt::value(&v),
                        fmt::type_name(&v),
                        fmt::doc(&d)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// `$redact` (SRV `document_source_redact.cpp`): each document is kept, pruned or descended
/// into as the expression decides, level by level; `$$DESCEND`, `$$PRUNE` and `$$KEEP` are
/// bound to the strings the server binds them to. Field paths resolve against the level
/// being decided (the server's `$$CURRENT`); this engine has no separate `$$ROOT` there.
fn run_redact(e: &Expr, docs: Vec<Document>, env: &Env<'_>) -> CmdResult<Vec<Document>> {
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        if let Some(kept) = redact_object(e, d, env)? {
            out.push(kept);
        }
    }
    Ok(out)
}

/// One level of `$redact`: `None` when pruned.
fn redact_object(e: &Expr, d: Document, env: &Env<'_>) -> CmdResult<Option<Document>> {
    let decision = {
        let mut vars = env.vars(&d);
        for (name, value) in [("DESCEND", "descend"), ("PRUNE", "prune"), ("KEEP", "keep")] {
            vars.user
                .push((name.to_string(), Bson::String(value.to_string())));
        }
        e.eval(&vars)?
    };
    match decision {
        Some(Bson::String(s)) if s == "keep" => Ok(Some(d)),
        Some(Bson::String(s)) if s == "prune" => Ok(None),
        Some(Bson::String(s)) if s == "descend" => {
            let mut out = Document::new();
            for (k, v) in d {
                if let Some(v) = redact_value(e, v, env)? {
                    out.insert(k, v);
                }
            }
            Ok(Some(out))
        }
        other => Err(err(
            ErrorCode::RedactBadResult,
            format!(
                "$redact's expression should not return anything aside from the variables \
                 $$KEEP, $$DESCEND, and $$PRUNE, but returned {}",
                other.map_or_else(|| "MISSING".to_string(), |v| fmt::value(&v))
            ),
        )),
    }
}

/// A field value under a descended level: documents are decided again, arrays descended.
fn redact_value(e: &Expr, v: Bson, env: &Env<'_>) -> CmdResult<Option<Bson>> {
    match v {
        Bson::Document(d) => Ok(redact_object(e, d, env)?.map(Bson::Document)),
        Bson::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(item) = redact_value(e, item, env)? {
                    out.push(item);
                }
            }
            Ok(Some(Bson::Array(out)))
        }
        other => Ok(Some(other)),
    }
}

/// `$count`: one `{name: n}` document, none for an empty input.
fn run_count(name: &str, docs: &[Document]) -> Vec<Document> {
    if docs.is_empty() {
        Vec::new()
    } else {
        let mut d = Document::new();
        d.insert(name, docs.len() as i32);
        vec![d]
    }
}

/// `$unwind` (SRV document_source_unwind.cpp): one document per array element; `idx`
/// receives the element index, `preserve` keeps documents without elements.
fn run_unwind(path: &str, idx: Option<&str>, preserve: bool, docs: Vec<Document>) -> Vec<Document> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    for d in docs {
        let v = get_path(&d, path).cloned();
        match v {
            Some(Bson::Array(items)) if !items.is_empty() => {
                for (i, item) in items.into_iter().enumerate() {
                    let mut nd = d.clone();
                    add_field(&mut nd, &parts, Some(item));
                    if let Some(f) = idx {
                        nd.insert(f, i as i64);
                    }
                    out.push(nd);
                }
            }
            Some(Bson::Array(_)) | None | Some(Bson::Null) => {
                if preserve {
                    let mut nd = d.clone();
                    if matches!(v, Some(Bson::Array(_))) {
                        add_field(&mut nd, &parts, None);
                    }
                    if let Some(f) = idx {
                        nd.insert(f, Bson::Null);
                    }
                    out.push(nd);
                }
            }
            Some(_) => {
                let mut nd = d;
                if let Some(f) = idx {
                    nd.insert(f, Bson::Null);
                }
                out.push(nd);
            }
        }
    }
    out
}

/// `$bucket`: groups by the boundary range each key falls in (else `default`), in
/// boundaries order with the default bucket last.
fn run_bucket(
    group_by: &Expr,
    boundaries: &[Bson],
    default: Option<&Bson>,
    accs: &Accs,
    docs: Vec<Document>,
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    let mut keys = Vec::with_capacity(docs.len());
    for d in &docs {
        let v = group_by.eval(&env.vars(d))?.unwrap_or(Bson::Null);
        keys.push(bucket_key(&v, boundaries, default)?);
    }
    let mut out = group_by_keys(&docs, keys, accs, env)?;
    let rank = |d: &Document| {
        let id = d.get("_id").unwrap_or(&Bson::Null);
        boundaries
            .iter()
            .position(|b| cmp_bson(b, id) == Ordering::Equal)
            .unwrap_or(usize::MAX)
    };
    out.sort_by_key(rank);
    Ok(out)
}

/// The `$bucket` key of value `v`: the lower boundary of its range, else `default`.
fn bucket_key(v: &Bson, boundaries: &[Bson], default: Option<&Bson>) -> CmdResult<Bson> {
    let same = canonical_type(v) == canonical_type(&boundaries[0]);
    let slot = if same {
        boundaries
            .windows(2)
            .find(|w| cmp_bson(v, &w[0]) != Ordering::Less && cmp_bson(v, &w[1]) == Ordering::Less)
    } else {
        None
    };
    match (slot, default) {
        (Some(w), _) => Ok(w[0].clone()),
        (None, Some(def)) => Ok(def.clone()),
        (None, None) => {
            // SRV: $bucket is a $group over a $switch
            Err(err(ErrorCode::SwitchNoMatchingBranch, "$switch could not find a matching branch for an input, and no default was specified."))
        }
    }
}

/// `$bucketAuto`: up to `n` buckets of about equal size over the sorted keys, each with
/// `_id: {min, max}`.
fn run_bucket_auto(
    group_by: &Expr,
    n: usize,
    accs: &Accs,
    docs: Vec<Document>,
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    let mut keyed = Vec::with_capacity(docs.len());
    for d in docs {
        let k = group_by.eval(&env.vars(&d))?.unwrap_or(Bson::Null);
        keyed.push((k, d));
    }
    keyed.sort_by(|a, b| cmp_bson(&a.0, &b.0));
    let buckets = auto_buckets(keyed, n);
    let mins: Vec<Bson> = buckets.iter().map(|b| b[0].0.clone()).collect();
    let mut out = Vec::with_capacity(buckets.len());
    for (i, b) in buckets.into_iter().enumerate() {
        let max = match mins.get(i + 1) {
            Some(m) => m.clone(),
            None => b.last().map(|(k, _)| k.clone()).unwrap_or(Bson::Null),
        };
        let id = Bson::Document(bson::doc! {"min": mins[i].clone(), "max": max});
        let (keys, docs): (Vec<Bson>, Vec<Document>) =
            b.into_iter().map(|(_, d)| (id.clone(), d)).unzip();
        out.extend(group_by_keys(&docs, keys, accs, env)?);
    }
    Ok(out)
}

/// Cuts key-sorted documents into at most `n` buckets of about equal size, never splitting
/// equal keys.
fn auto_buckets(keyed: Vec<(Bson, Document)>, n: usize) -> Vec<Vec<(Bson, Document)>> {
    let approx = ((keyed.len() as f64 / n as f64).round() as usize).max(1);
    let mut buckets: Vec<Vec<(Bson, Document)>> = Vec::new();
    for (k, d) in keyed {
        let start_new = match buckets.last() {
            None => true,
            Some(cur) => {
                cur.len() >= approx
                    && buckets.len() < n
                    && cur
                        .last()
                        .is_some_and(|(lk, _)| cmp_bson(lk, &k) != Ordering::Equal)
            }
        };
        if start_new {
            buckets.push(Vec::new());
        }
        if let Some(cur) = buckets.last_mut() {
            cur.push((k, d));
        }
    }
    buckets
}

/// `$facet`: one document with each sub-pipeline's output; the unnamed single facet of
/// `$sortByCount` just runs its sub-pipeline.
fn run_facet(
    facets: &[(String, super::Pipeline)],
    docs: Vec<Document>,
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    if facets.len() == 1 && facets[0].0.is_empty() {
        // internal form used by $sortByCount: just the sub-pipeline
        return run_stages(&facets[0].1.stages, docs, env);
    }
    let mut out = Document::new();
    for (name, sub) in facets {
        let part = run_stages(&sub.stages, docs.clone(), env)?;
        out.insert(
            name.clone(),
            part.into_iter().map(Bson::Document).collect::<Vec<_>>(),
        );
    }
    Ok(vec![out])
}

/// `$sample`: `n` documents in random order.
fn run_sample(n: usize, mut docs: Vec<Document>) -> Vec<Document> {
    docs.shuffle(&mut rand::rng());
    docs.truncate(n);
    docs
}

/// A group key ordered like `cmp_bson` (so `1` and `1.0` are one group).
#[derive(Debug, Clone)]
struct GroupKey(Bson);

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        cmp_bson(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for GroupKey {}
impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_bson(&self.0, &other.0)
    }
}

/// `$group`: groups by the `_id` expression's value.
fn group(docs: Vec<Document>, id: &Expr, accs: &Accs, env: &Env<'_>) -> CmdResult<Vec<Document>> {
    let keys = docs
        .iter()
        .map(|d| Ok(id.eval(&env.vars(d))?.unwrap_or(Bson::Null)))
        .collect::<CmdResult<Vec<Bson>>>()?;
    group_by_keys(&docs, keys, accs, env)
}

/// Groups `docs` by the given per-document keys (first-seen order) and evaluates the
/// accumulators (SRV `document_source_group.cpp`, `accumulator_*.cpp`).
fn group_by_keys(
    docs: &[Document],
    keys: Vec<Bson>,
    accs: &Accs,
    env: &Env<'_>,
) -> CmdResult<Vec<Document>> {
    let mut index: BTreeMap<GroupKey, usize> = BTreeMap::new();
    let mut order: Vec<Bson> = Vec::new();
    let mut vals: Vec<Vec<Vec<Option<Bson>>>> = Vec::new();
    for (d, key) in docs.iter().zip(keys) {
        let vars = env.vars(d);
        let gi = match index.get(&GroupKey(key.clone())) {
            Some(i) => *i,
            None => {
                index.insert(GroupKey(key.clone()), order.len());
                order.push(key);
                vals.push(vec![Vec::new(); accs.len()]);
                order.len() - 1
            }
        };
        for (ai, (_, _, e)) in accs.iter().enumerate() {
            vals[gi][ai].push(e.eval(&vars)?);
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for (key, gvals) in order.into_iter().zip(vals) {
        let mut d = Document::new();
        d.insert("_id", key);
        for ((name, op, _), items) in accs.iter().zip(gvals) {
            d.insert(name.clone(), finish_accumulator(op, items));
        }
        out.push(d);
    }
    Ok(out)
}

/// The value of accumulator `op` over one group's evaluated items (missing ones are `None`).
fn finish_accumulator(op: &str, items: Vec<Option<Bson>>) -> Bson {
    match op {
        "$sum" | "$count" => {
            let present: Vec<Bson> = items.into_iter().flatten().collect();
            accumulate("$sum", &present)
        }
        "$avg" | "$min" | "$max" => {
            let present: Vec<Bson> = items.into_iter().flatten().collect();
            accumulate(op, &present)
        }
        "$first" => items.into_iter().next().flatten().unwrap_or(Bson::Null),
        "$last" => items.into_iter().last().flatten().unwrap_or(Bson::Null),
        "$push" => Bson::Array(items.into_iter().flatten().collect()),
        "$addToSet" => {
            let mut seen: BTreeSet<GroupKey> = BTreeSet::new();
            let mut set: Vec<Bson> = Vec::new();
            for v in items.into_iter().flatten() {
                if seen.insert(GroupKey(v.clone())) {
                    set.push(v);
                }
            }
            Bson::Array(set)
        }
        _ => Bson::Null,
    }
}
