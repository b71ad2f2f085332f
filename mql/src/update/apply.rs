//! Applying an update to one document: modifiers (expanded through positional and
//! array-filter paths), `$rename`, replacements and pipelines.

use bson::{doc, Bson, Document};

use super::applier::Applier;
use super::diff::{compute_oplog_diff, DELTA_PADDING};
use super::log::{v1_from_log, v2_from_log, LogEntry, LogKind};
use super::{bad, Kind, Mod, Update, UpdateCtx, UpdateOutcome};
use crate::compare::binary_eq;
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt;
use crate::matcher::Matcher;
use crate::path::array_index;

impl Update {
    /// Whether this is a replacement-style update.
    pub fn is_replacement(&self) -> bool {
        matches!(self.kind, Kind::Replacement(_))
    }

    /// Whether this is a pipeline-style update.
    pub fn is_pipeline(&self) -> bool {
        matches!(self.kind, Kind::Pipeline(_))
    }

    /// Whether the update uses the positional `$` operator (needs `ctx.query`).
    pub fn is_positional(&self) -> bool {
        match &self.kind {
            Kind::Modifiers(l) => l.iter().any(|(p, _)| p.iter().any(|c| c == "$")),
            _ => false,
        }
    }

    /// Applies the update to `doc`.
    pub fn apply(&self, doc: &Document, ctx: &UpdateCtx<'_>) -> CmdResult<UpdateOutcome> {
        match &self.kind {
            Kind::Replacement(r) => apply_replacement(doc, r, ctx),
            Kind::Modifiers(leaves) => self.apply_modifiers(leaves, doc, ctx),
            Kind::Pipeline(p) => apply_pipeline(p, doc, ctx),
        }
    }

    fn apply_modifiers(
        &self,
        leaves: &[(Vec<String>, Mod)],
        doc: &Document,
        ctx: &UpdateCtx<'_>,
    ) -> CmdResult<UpdateOutcome> {
        let mut new_doc = doc.clone();
        let mut log: Vec<LogEntry> = Vec::new();
        for (tpl, m) in leaves {
            match m {
                Mod::Placeholder => continue,
                Mod::SetOnInsert(_) if !ctx.is_upsert_insert => continue,
                _ => {}
            }
            let id = doc.get("_id").cloned();
            if let Mod::Rename(from) = m {
                apply_rename(&mut new_doc, from, tpl, ctx, &mut log, id.as_ref())?;
                continue;
            }
            for path in self.expand(tpl, doc, &new_doc, ctx)? {
                let mut taken = Vec::new();
                let mut a = Applier {
                    m,
                    ctx,
                    log: &mut log,
                    id: id.as_ref(),
                    path: &path,
                };
                a.apply_in_doc(&mut new_doc, 0, &mut taken)?;
            }
        }
        if !ctx.is_upsert_insert {
            // SRV modifier_node.cpp checkImmutablePathsNotModified: 66 ImmutableField, naming
            // the modifier's path.
            if let Some(e) = log
                .iter()
                .find(|e| e.path.first().is_some_and(|(p, _)| p == "_id"))
            {
                let dotted: Vec<&str> = e.path.iter().map(|(p, _)| p.as_str()).collect();
                return Err(CommandError::from_code(
                    ErrorCode::ImmutableField,
                    format!(
                        "Performing an update on the path '{}' would modify the immutable field '_id'",
                        dotted.join(".")
                    ),
                ));
            }
            check_id_unchanged(doc, &new_doc)?;
        }
        let modified = !log.is_empty();
        Ok(UpdateOutcome {
            v2_diff: v2_from_log(&log),
            v1: v1_from_log(&log),
            new_doc,
            modified,
            is_replacement: false,
        })
    }

    /// Resolves `$`, `$[]` and `$[id]` into concrete paths.
    fn expand(
        &self,
        tpl: &[String],
        original: &Document,
        current: &Document,
        ctx: &UpdateCtx<'_>,
    ) -> CmdResult<Vec<Vec<String>>> {
        if !tpl.iter().any(|c| c.starts_with('$')) {
            return Ok(vec![tpl.to_vec()]);
        }
        let mut out: Vec<Vec<String>> = vec![Vec::new()];
        for comp in tpl {
            if comp == "$" {
                let mut next = Vec::new();
                for prefix in out {
                    let prefix_path = prefix.join(".");
                    let idx = ctx
                        .query
                        .and_then(|q| Matcher::parse(q).ok())
                        .and_then(|m| m.matched_array_index(original, &prefix_path));
                    let Some(i) = idx else {
                        // SRV update_positional_node / update_array_node: 2 BadValue
                        return Err(bad(
                            "The positional operator did not find the match needed from the query.",
                        ));
                    };
                    let mut p = prefix;
                    p.push(i.to_string());
                    next.push(p);
                }
                out = next;
            } else if let Some(id) = comp.strip_prefix("$[").and_then(|r| r.strip_suffix(']')) {
                let mut next = Vec::new();
                for prefix in out {
                    let prefix_path = prefix.join(".");
                    let arr = match crate::path::get_path(current, &prefix_path) {
                        Some(Bson::Array(a)) => a.clone(),
                        Some(other) => {
                            return Err(bad(format!(
                                "Cannot apply array updates to non-array element {}: {}",
                                prefix.last().map(String::as_str).unwrap_or(""),
                                fmt::value(other)
                            )))
                        }
                        None if ctx.is_upsert_insert => {
                            return Err(bad(format!(
                                "The path '{prefix_path}' must exist in the document in order to apply array updates."
                            )))
                        }
                        None => {
                            return Err(bad(format!(
                                "The path '{prefix_path}' must exist in the document in order to apply array updates."
                            )))
                        }
                    };
                    let filter = if id.is_empty() {
                        None
                    } else {
                        self.filters.iter().find(|(n, _)| n == id).map(|(_, m)| m)
                    };
                    for (i, e) in arr.iter().enumerate() {
                        let ok = match filter {
                            None => true,
                            Some(m) => {
                                let mut one = Document::new();
                                one.insert(id, e.clone());
                                m.matches(&one)
                            }
                        };
                        if ok {
                            let mut p = prefix.clone();
                            p.push(i.to_string());
                            next.push(p);
                        }
                    }
                }
                out = next;
            } else {
                for p in &mut out {
                    p.push(comp.clone());
                }
            }
        }
        Ok(out)
    }
}

/// SRV rename_node.cpp `RenameNode::apply`: `$set` of the source's value at the destination,
/// then removal of the source (logged as a delete).
fn apply_rename(
    doc: &mut Document,
    from: &[String],
    to: &[String],
    ctx: &UpdateCtx<'_>,
    log: &mut Vec<LogEntry>,
    id: Option<&Bson>,
) -> CmdResult<()> {
    let id_shown = match id {
        Some(v) => format!("_id: {}", fmt::value(v)),
        None => "no id".to_string(),
    };
    let from_dotted = from.join(".");
    let mut cur: Option<&Bson> = doc.get(&from[0]);
    let mut array_field: Option<&str> = None;
    for (i, p) in from.iter().enumerate().skip(1) {
        cur = match cur {
            None => return Ok(()),
            Some(Bson::Document(d)) => d.get(p),
            Some(Bson::Array(a)) => {
                array_field = Some(from[i - 1].as_str());
                array_index(p).and_then(|k| a.get(k))
            }
            Some(other) => {
                // SRV path_support.cpp findLongestPrefix: 28 PathNotViable
                return Err(CommandError::from_code(
                    ErrorCode::PathNotViable,
                    format!(
                        "Cannot use the part ({p}) of ({from_dotted}) to traverse the element ({{{}: {}}})",
                        from[i - 1],
                        fmt::value(other)
                    ),
                ));
            }
        };
    }
    let Some(value) = cur.cloned() else {
        return Ok(());
    };
    if let Some(af) = array_field {
        return Err(bad(format!(
            "The source field cannot be an array element, '{from_dotted}' in doc with {id_shown} has an array field called '{af}'"
        )));
    }
    let mut walk: Option<&Bson> = doc.get(&to[0]);
    for i in 0..to.len() - 1 {
        match walk {
            Some(Bson::Document(d)) => walk = d.get(&to[i + 1]),
            Some(Bson::Array(_)) => {
                return Err(bad(format!(
                    "The destination field cannot be an array element, '{}' in doc with {id_shown} has an array field called '{}'",
                    to.join("."),
                    to[i]
                )));
            }
            _ => break,
        }
    }
    let set = Mod::Set(value);
    let mut a = Applier {
        m: &set,
        ctx,
        log,
        id,
        path: to,
    };
    a.apply_in_doc(doc, 0, &mut Vec::new())?;
    remove_path(doc, from);
    log.push(LogEntry {
        path: from.iter().map(|p| (p.clone(), false)).collect(),
        kind: LogKind::Delete,
    });
    Ok(())
}

fn check_id_unchanged(old: &Document, new: &Document) -> CmdResult<()> {
    let same = match (old.get("_id"), new.get("_id")) {
        (Some(a), Some(b)) => binary_eq(a, b),
        (None, None) => true,
        (None, Some(_)) => true,
        _ => false,
    };
    if !same {
        // SRV update/update_util / object_replace_executor: 66 ImmutableField
        return Err(CommandError::from_code(
            ErrorCode::ImmutableField,
            "Performing an update on the path '_id' would modify the immutable field '_id'",
        ));
    }
    Ok(())
}

fn remove_path(doc: &mut Document, path: &[String]) {
    if path.len() == 1 {
        doc.remove(&path[0]);
        return;
    }
    let mut cur: Option<&mut Bson> = doc.get_mut(&path[0]);
    for p in &path[1..path.len() - 1] {
        cur = match cur {
            Some(Bson::Document(d)) => d.get_mut(p),
            Some(Bson::Array(a)) => array_index(p).and_then(move |i| a.get_mut(i)),
            _ => None,
        };
    }
    if let Some(Bson::Document(d)) = cur {
        d.remove(&path[path.len() - 1]);
    }
}

fn apply_replacement(
    doc: &Document,
    repl: &Document,
    ctx: &UpdateCtx<'_>,
) -> CmdResult<UpdateOutcome> {
    // SRV object_replace_executor.cpp: keep the original _id (first) when the replacement
    // has none; a different _id is an error.
    let mut new_doc = Document::new();
    match (doc.get("_id"), repl.get("_id")) {
        (Some(old), Some(new)) => {
            if !binary_eq(old, new) && !ctx.is_upsert_insert {
                return Err(CommandError::from_code(
                    ErrorCode::ImmutableField,
                    format!(
                        "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {}",
                        fmt::value(new)
                    ),
                ));
            }
            new_doc = repl.clone();
        }
        (Some(old), None) => {
            new_doc.insert("_id", old.clone());
            for (k, v) in repl {
                new_doc.insert(k.clone(), v.clone());
            }
        }
        (None, _) => new_doc = repl.clone(),
    }
    let modified = !binary_eq(
        &Bson::Document(doc.clone()),
        &Bson::Document(new_doc.clone()),
    );
    Ok(UpdateOutcome {
        v2_diff: new_doc.clone(),
        v1: new_doc.clone(),
        new_doc,
        modified,
        is_replacement: true,
    })
}

fn apply_pipeline(
    p: &crate::pipeline::Pipeline,
    doc: &Document,
    ctx: &UpdateCtx<'_>,
) -> CmdResult<UpdateOutcome> {
    let out = p.run_with_vars(
        vec![doc.clone()],
        ctx.now,
        Some(ctx.now_ts),
        &crate::matcher::eval_lets(ctx.lets)?,
    )?;
    let mut new_doc = out.into_iter().next().unwrap_or_default();
    // SRV pipeline_executor.cpp: the _id may not change; it is put back first if removed.
    match (doc.get("_id"), new_doc.get("_id")) {
        (Some(old), Some(new)) if !binary_eq(old, new) && !ctx.is_upsert_insert => {
            return Err(CommandError::from_code(
                ErrorCode::ImmutableField,
                "Performing an update on the path '_id' would modify the immutable field '_id'",
            ));
        }
        (Some(old), None) => {
            let mut d = doc! {"_id": old.clone()};
            for (k, v) in new_doc {
                d.insert(k, v);
            }
            new_doc = d;
        }
        _ => {}
    }
    let modified = !binary_eq(
        &Bson::Document(doc.clone()),
        &Bson::Document(new_doc.clone()),
    );
    // 7.0: delta if it is smaller than the post-image, else a replacement
    // (SRV document_diff_calculator.cpp computeOplogDiff).
    let diff = compute_oplog_diff(doc, &new_doc, DELTA_PADDING);
    let (v2, is_repl) = match diff {
        Some(d) => (doc! {"$v": 2, "diff": d}, false),
        None => (new_doc.clone(), true),
    };
    Ok(UpdateOutcome {
        v2_diff: v2,
        // 4.4 logs pipeline updates as replacements (reference §4.5).
        v1: new_doc.clone(),
        new_doc,
        modified,
        is_replacement: is_repl,
    })
}
