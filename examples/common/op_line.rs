//! One op as one line of MongoDB relaxed Extended JSON: the output format of the `tail`
//! and `checkpoint` examples.

use bson::{doc, Bson, Document};
use mongotail::{Op, OpKind, Source, UpdateDescription};
use serde::Serialize;
use serde_json::Value;

/// One output line.
#[derive(Serialize)]
pub struct OpLine {
    op: String,
    ns: String,
    id: Value,
    source: &'static str,
    ts: Ts,
    data: Value,
    update: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    txn: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    document_missing: bool,
}

#[derive(Serialize)]
pub struct Ts {
    pub t: u32,
    pub i: u32,
}

impl From<&Op> for OpLine {
    fn from(op: &Op) -> Self {
        OpLine {
            op: kind_name(&op.kind),
            ns: op.namespace.to_string(),
            id: op
                .id
                .clone()
                .map_or(Value::Null, Bson::into_relaxed_extjson),
            source: match op.source {
                Source::Oplog => "oplog",
                Source::ChangeStream => "change_stream",
                Source::Direct => "direct",
                _ => "other",
            },
            ts: Ts {
                t: op.timestamp.time,
                i: op.timestamp.increment,
            },
            data: op
                .data
                .clone()
                .map_or(Value::Null, |d| Bson::Document(d).into_relaxed_extjson()),
            update: op.update.as_ref().map_or(Value::Null, update_json),
            to: match &op.kind {
                OpKind::Rename { to } => Some(to.to_string()),
                _ => None,
            },
            txn: op.txn.as_ref().map(|t| {
                let mut txn = Document::new();
                if let Some(id) = t.lsid.as_ref().and_then(|l| l.get("id")) {
                    txn.insert("lsid", id.clone()); // the session id (a UUID)
                }
                if let Some(n) = t.txn_number {
                    txn.insert("txnNumber", n);
                }
                txn.insert("index", i64::from(t.index));
                Bson::Document(txn).into_relaxed_extjson()
            }),
            document_missing: op.document_missing,
        }
    }
}

fn kind_name(kind: &OpKind) -> String {
    match kind {
        OpKind::Insert => "insert".into(),
        OpKind::Update => "update".into(),
        OpKind::Replace => "replace".into(),
        OpKind::Delete => "delete".into(),
        OpKind::DropCollection => "drop".into(),
        OpKind::DropDatabase => "drop_database".into(),
        OpKind::Rename { .. } => "rename".into(),
        OpKind::Create => "create".into(),
        OpKind::Command(name) | OpKind::Other(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

fn update_json(u: &UpdateDescription) -> Value {
    let truncated: Vec<Bson> = u
        .truncated_arrays
        .iter()
        .map(|t| Bson::Document(doc! {"field": &t.field, "newSize": i64::from(t.new_size)}))
        .collect();
    Bson::Document(doc! {
        "updatedFields": u.updated_fields.clone(),
        "removedFields": u.removed_fields.clone(),
        "truncatedArrays": truncated,
    })
    .into_relaxed_extjson()
}
