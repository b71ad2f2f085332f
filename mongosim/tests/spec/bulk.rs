//! Collection-level `bulkWrite` of the CRUD spec. The Rust driver has no such helper (only the
//! 8.0+ client-level `bulkWrite`), so the runner does what the CRUD spec prescribes for drivers:
//! split the requests into consecutive batches of inserts / updates / deletes, send each as an
//! `insert` / `update` / `delete` command and merge the replies into a BulkWriteResult or a
//! BulkWriteException.

use mongodb::{
    bson::{doc, Bson, Document},
    ClientSession, Collection,
};

use crate::{
    matcher::as_f64,
    operations::{ensure_id, wc_of, BulkErr, OpErr, Res},
};

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Insert,
    Update,
    Delete,
}

/// A write model as a statement; the inner `Err` is a client-side validation error.
fn model(req: &Document) -> Result<Result<(Kind, Document, Bson), String>, String> {
    let (name, body) = req.iter().next().ok_or("empty request")?;
    let Bson::Document(body) = body else {
        return Err(format!("bad request {req}"));
    };
    let mut b = body.clone();
    let filter = |b: &mut Document| match b.remove("filter") {
        Some(Bson::Document(f)) => Ok(f),
        _ => Err(format!("request without filter: {req}")),
    };
    let out = match name.as_str() {
        "insertOne" => {
            let Some(Bson::Document(mut d)) = b.remove("document") else {
                return Err(format!("bad insertOne {req}"));
            };
            let id = ensure_id(&mut d);
            if !b.is_empty() {
                return Err(format!("unsupported insertOne fields {b}"));
            }
            (Kind::Insert, d, id)
        }
        "updateOne" | "updateMany" | "replaceOne" => {
            let q = filter(&mut b)?;
            let u = if name == "replaceOne" {
                b.remove("replacement")
                    .ok_or("replaceOne without replacement")?
            } else {
                b.remove("update").ok_or("update without update")?
            };
            // CRUD spec: update documents must start with an operator, replacements must not.
            if let Bson::Document(d) = &u {
                let op = d.keys().next().is_some_and(|k| k.starts_with('$'));
                if name == "replaceOne" && op {
                    return Ok(Err(format!(
                        "replacement document must not contain update operators: {d}"
                    )));
                }
                if name != "replaceOne" && !op {
                    return Ok(Err(format!(
                        "update document must contain update operators: {d}"
                    )));
                }
            }
            let mut st = doc! { "q": q, "u": u };
            if name == "updateMany" {
                st.insert("multi", true);
            }
            for k in ["upsert", "arrayFilters", "hint", "collation", "sort"] {
                if let Some(v) = b.remove(k) {
                    st.insert(k, v);
                }
            }
            if !b.is_empty() {
                return Err(format!("unsupported {name} fields {b}"));
            }
            (Kind::Update, st, Bson::Null)
        }
        "deleteOne" | "deleteMany" => {
            let q = filter(&mut b)?;
            let mut st = doc! { "q": q, "limit": if name == "deleteOne" { 1 } else { 0 } };
            for k in ["hint", "collation"] {
                if let Some(v) = b.remove(k) {
                    st.insert(k, v);
                }
            }
            if !b.is_empty() {
                return Err(format!("unsupported {name} fields {b}"));
            }
            (Kind::Delete, st, Bson::Null)
        }
        other => return Err(format!("unknown write model {other}")),
    };
    Ok(Ok(out))
}

/// The number at `k` in a reply (0 when absent).
fn n(d: &Document, k: &str) -> i64 {
    d.get(k).and_then(as_f64).unwrap_or(0.0) as i64
}

/// A write model as a statement: its kind, the statement document and the `_id` of an insert.
type Model = (Kind, Document, Bson);

/// Runs a collection `bulkWrite`: consecutive models of one kind go as one write command.
pub async fn bulk_write(
    c: &Collection<Document>,
    args: &mut Document,
    mut sess: Option<&mut ClientSession>,
    in_txn: bool,
) -> Result<Result<Res, OpErr>, String> {
    let (reqs, ordered, common) = bulk_args(args)?;
    let models = match models_of(reqs)? {
        Ok(models) => models,
        Err(e) => return Ok(Err(e)),
    };
    let ns = c.namespace();
    let db = c.client().database(&ns.db);
    let wc = if in_txn { None } else { wc_of(c) };
    // With `w: 0` the commands go out as a driver that supports unacknowledged writes
    // sends them (the Rust driver refuses them client-side); the result is unacknowledged.
    let unacknowledged = is_unacknowledged(wc.as_ref());

    let mut merged = Merged::default();
    let mut i = 0;
    while i < models.len() {
        let kind = models[i].0;
        let mut j = i;
        while j < models.len() && models[j].0 == kind {
            j += 1;
        }
        let batch = &models[i..j];
        let cmd = batch_command(&ns.coll, kind, batch, ordered, &common, wc.as_ref());
        let reply = match sess.as_deref_mut() {
            Some(s) => db.run_command(cmd).session(s).await,
            None => db.run_command(cmd).await,
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => return Ok(Err(OpErr::Driver(e))),
        };
        let failed = merged.absorb(kind, batch, i, ordered, &reply);
        if ordered && !failed.is_empty() {
            break;
        }
        i = j;
    }
    if unacknowledged {
        return Ok(Ok(Res::Value(
            Bson::Document(doc! {"acknowledged": false}),
            false,
        )));
    }
    Ok(merged.into_result())
}

/// Whether a write concern is `w: 0` (unacknowledged).
pub fn is_unacknowledged(wc: Option<&Document>) -> bool {
    wc.is_some_and(|w| matches!(w.get("w"), Some(Bson::Int32(0) | Bson::Int64(0))))
}

/// The requests, `ordered` and the options common to every command of a `bulkWrite`.
fn bulk_args(args: &mut Document) -> Result<(Vec<Bson>, bool, Document), String> {
    let Some(Bson::Array(reqs)) = args.remove("requests") else {
        return Err("bulkWrite without requests".into());
    };
    let ordered = match args.remove("ordered") {
        Some(Bson::Boolean(b)) => b,
        None => true,
        Some(o) => return Err(format!("bad ordered {o}")),
    };
    let mut common = Document::new();
    for k in ["bypassDocumentValidation", "comment", "let"] {
        if let Some(v) = args.remove(k) {
            common.insert(k, v);
        }
    }
    if !args.is_empty() {
        return Err(format!("unsupported arguments {args}"));
    }
    Ok((reqs, ordered, common))
}

/// The write models of the requests; the inner `Err` is a client-side error.
fn models_of(reqs: Vec<Bson>) -> Result<Result<Vec<Model>, OpErr>, String> {
    let mut models = Vec::new();
    for r in reqs {
        let Bson::Document(r) = r else {
            return Err(format!("bad request {r}"));
        };
        match model(&r)? {
            Ok(m) => models.push(m),
            Err(client) => return Ok(Err(OpErr::Client(client))),
        }
    }
    if models.is_empty() {
        return Ok(Err(OpErr::Client(
            "bulkWrite requires at least one request".into(),
        )));
    }
    Ok(Ok(models))
}

/// The `insert` / `update` / `delete` command of one batch of models of the same kind.
fn batch_command(
    coll: &str,
    kind: Kind,
    batch: &[Model],
    ordered: bool,
    common: &Document,
    wc: Option<&Document>,
) -> Document {
    let stmts: Vec<Bson> = batch.iter().map(|m| Bson::Document(m.1.clone())).collect();
    let mut cmd = match kind {
        Kind::Insert => doc! { "insert": coll, "documents": stmts },
        Kind::Update => doc! { "update": coll, "updates": stmts },
        Kind::Delete => doc! { "delete": coll, "deletes": stmts },
    };
    cmd.insert("ordered", ordered);
    for (k, v) in common {
        let applies = match k.as_str() {
            "bypassDocumentValidation" => kind != Kind::Delete,
            "let" => kind != Kind::Insert,
            _ => true,
        };
        if applies {
            cmd.insert(k.clone(), v.clone());
        }
    }
    if let Some(wc) = wc {
        cmd.insert("writeConcern", wc.clone());
    }
    cmd
}

/// The BulkWriteResult (or BulkWriteException) merged from the batch replies.
#[derive(Default)]
struct Merged {
    inserted: i64,
    matched: i64,
    modified: i64,
    deleted: i64,
    inserted_ids: Document,
    upserted_ids: Document,
    err: BulkErr,
}

impl Merged {
    /// Merges the reply to the batch that starts at model `first`; returns the indexes
    /// (within the batch) of the statements that failed.
    fn absorb(
        &mut self,
        kind: Kind,
        batch: &[Model],
        first: usize,
        ordered: bool,
        reply: &Document,
    ) -> Vec<usize> {
        let failed = self.absorb_errors(first, reply);
        match kind {
            Kind::Insert => {
                self.inserted += n(reply, "n");
                for (k, m) in batch.iter().enumerate() {
                    let ok = if ordered {
                        failed.first().is_none_or(|f| k < *f)
                    } else {
                        !failed.contains(&k)
                    };
                    if ok {
                        self.inserted_ids
                            .insert((first + k).to_string(), m.2.clone());
                    }
                }
            }
            Kind::Update => self.absorb_update(first, reply),
            Kind::Delete => self.deleted += n(reply, "n"),
        }
        failed
    }

    /// Collects the error labels, write errors (renumbered from `first`) and write concern
    /// error of a reply; returns the batch indexes of the write errors.
    fn absorb_errors(&mut self, first: usize, reply: &Document) -> Vec<usize> {
        if let Ok(labels) = reply.get_array("errorLabels") {
            self.err
                .labels
                .extend(labels.iter().filter_map(|l| l.as_str().map(str::to_string)));
        }
        let mut failed: Vec<usize> = Vec::new();
        if let Ok(wes) = reply.get_array("writeErrors") {
            for we in wes {
                if let Bson::Document(we) = we {
                    let idx = n(we, "index") as usize;
                    failed.push(idx);
                    let mut we = we.clone();
                    we.insert("index", (first + idx) as i64);
                    self.err.write_errors.push(we);
                }
            }
        }
        if let Ok(wce) = reply.get_document("writeConcernError") {
            self.err.wc_errors.push(wce.clone());
        }
        failed
    }

    /// Counts matched, modified and upserted documents of an `update` reply.
    fn absorb_update(&mut self, first: usize, reply: &Document) {
        let ups = reply
            .get_array("upserted")
            .map(|a| a.len() as i64)
            .unwrap_or(0);
        self.matched += n(reply, "n") - ups;
        self.modified += n(reply, "nModified");
        if let Ok(a) = reply.get_array("upserted") {
            for u in a {
                if let Bson::Document(u) = u {
                    let idx = first + n(u, "index") as usize;
                    self.upserted_ids
                        .insert(idx.to_string(), u.get("_id").cloned().unwrap_or(Bson::Null));
                }
            }
        }
    }

    /// The BulkWriteResult, or the BulkWriteException when a write failed.
    fn into_result(self) -> Result<Res, OpErr> {
        let Merged {
            inserted,
            matched,
            modified,
            deleted,
            inserted_ids,
            upserted_ids,
            mut err,
        } = self;
        let result = doc! {
            "deletedCount": deleted,
            "insertedCount": inserted,
            "insertedIds": inserted_ids,
            "matchedCount": matched,
            "modifiedCount": modified,
            "upsertedCount": upserted_ids.len() as i64,
            "upsertedIds": upserted_ids,
        };
        if err.write_errors.is_empty() && err.wc_errors.is_empty() {
            Ok(Res::Value(Bson::Document(result), false))
        } else {
            // The partial result of a BulkWriteException; `insertedIds` is optional there and
            // drivers that report it disagree on its content, so it is left out.
            let mut result = result;
            result.remove("insertedIds");
            err.partial = result;
            Err(OpErr::Bulk(Box::new(err)))
        }
    }
}
