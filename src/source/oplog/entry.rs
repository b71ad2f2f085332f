//! One oplog operation (a top-level entry or an element of `applyOps`) into an [`Op`]:
//! inserts, updates, replacements, deletes and commands (reference §4), and the namespace
//! selection the decoder applies.

use bson::{Bson, Document, Timestamp};

use super::diff::update_description;
use crate::error::{Error, Result};
use crate::op::{Namespace, Op, OpKind, Position, Source, TxnInfo};

/// What every decoded op gets from the decoder's options.
#[derive(Debug)]
pub(crate) struct Rules {
    /// Only ops in these namespaces; empty: every op.
    pub(crate) namespaces: Vec<Namespace>,
    /// Put the raw update in `data` and `delta` (gtm's `UpdateDataAsDelta`).
    pub(crate) as_delta: bool,
}

/// The fields of one entry an op is built from.
pub(crate) struct Leaf<'a> {
    /// `op`: `i`, `u`, `d`, `c`, `n`…
    pub(crate) op: &'a str,
    pub(crate) namespace: Namespace,
    pub(crate) o: Document,
    pub(crate) o2: Option<Document>,
}

/// Context an op inherits from its (outer) entry.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) ts: Timestamp,
    pub(crate) wall: Option<bson::DateTime>,
    pub(crate) lsid: Option<Document>,
    pub(crate) txn_number: Option<i64>,
    pub(crate) in_txn: bool,
}

impl Ctx {
    /// The context of a top-level entry that is not part of a transaction.
    pub(crate) fn plain(ts: Timestamp, wall: Option<bson::DateTime>) -> Ctx {
        Ctx {
            ts,
            wall,
            lsid: None,
            txn_number: None,
            in_txn: false,
        }
    }
}

pub(crate) fn malformed(ts: Timestamp, message: impl Into<String>) -> Error {
    Error::Malformed {
        what: format!("oplog entry {ts}"),
        message: message.into(),
    }
}

/// Whether `ns` (an op's namespace) is selected by `filter` (database namespaces select
/// every collection of the database). An empty filter selects everything.
pub(crate) fn ns_selected(filter: &[Namespace], ns: &Namespace) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| {
            f.db() == ns.db() && (f.is_database() || ns.is_database() || f.coll() == ns.coll())
        })
}

/// Whether `op` is selected by `filter`: its namespace, or the target of a rename.
pub(crate) fn op_selected<T>(filter: &[Namespace], op: &Op<T>) -> bool {
    if ns_selected(filter, &op.namespace) {
        return true;
    }
    match &op.kind {
        OpKind::Rename { to } => ns_selected(filter, to),
        _ => false,
    }
}

impl Rules {
    /// Whether `op` is one the decoder was asked for.
    pub(crate) fn selects(&self, op: &Op) -> bool {
        op_selected(&self.namespaces, op)
    }

    /// Decodes a CRUD or command entry (top level or inside `applyOps`).
    pub(crate) fn decode_leaf(
        &self,
        mut entry: Document,
        ctx: &Ctx,
        index: u32,
    ) -> Result<Option<Op>> {
        let ts = ctx.ts;
        let namespace = Namespace::from_server_ns(entry.get_str("ns").unwrap_or(""));
        let o = match entry.remove("o") {
            Some(Bson::Document(o)) => o,
            _ => return Err(malformed(ts, "missing `o`")),
        };
        let o2 = match entry.remove("o2") {
            Some(Bson::Document(o2)) => Some(o2),
            _ => None,
        };
        let op = entry
            .get_str("op")
            .map_err(|_| malformed(ts, "missing `op`"))?;
        self.build(
            Leaf {
                op,
                namespace,
                o,
                o2,
            },
            ctx,
            index,
        )
    }

    /// The op of one entry's fields (the entry read whole, or a CRUD entry read raw).
    pub(crate) fn build(&self, leaf: Leaf<'_>, ctx: &Ctx, index: u32) -> Result<Option<Op>> {
        let Leaf {
            op,
            namespace,
            o,
            o2,
        } = leaf;
        let ts = ctx.ts;
        let mut out = match op {
            "n" => return Ok(None),
            "i" => {
                let id = o.get("_id").cloned();
                let mut op = Op::new(OpKind::Insert, namespace, id);
                if let Some(key) = o2 {
                    op.document_key = Some(key);
                }
                op.with_data(o)
            }
            "u" => {
                let Some(o2) = o2 else {
                    return Err(malformed(ts, "update without `o2`"));
                };
                self.update(namespace, o, o2, ts)?
            }
            "d" => {
                let id = o.get("_id").cloned();
                Op::new(OpKind::Delete, namespace, id).with_document_key(o)
            }
            "c" => decode_command(namespace.db(), o),
            other => Op::new(OpKind::Other(other.to_owned()), namespace, None).with_data(o),
        };
        out.timestamp = ts;
        out.wall_time = ctx.wall;
        out.source = Source::Oplog;
        out.position = Position::Oplog(ts);
        if ctx.in_txn {
            out.txn = Some(TxnInfo::new(ctx.lsid.clone(), ctx.txn_number, index));
        }
        Ok(Some(out))
    }

    /// An `op: "u"` entry: a replacement (no operators) or an update.
    fn update(&self, namespace: Namespace, o: Document, o2: Document, ts: Timestamp) -> Result<Op> {
        let id = o2.get("_id").cloned();
        let replacement = !o.contains_key("$v") && !o.keys().any(|k| k.starts_with('$'));
        if replacement {
            return Ok(Op::new(OpKind::Replace, namespace, id)
                .with_document_key(o2)
                .with_data(o));
        }
        let update = update_description(&o).map_err(|m| malformed(ts, m))?;
        let mut op = Op::new(OpKind::Update, namespace, id)
            .with_document_key(o2)
            .with_update(update);
        if self.as_delta {
            op.delta = Some(o.clone());
            op.data = Some(o);
        }
        Ok(op)
    }
}

/// A command entry (`o` of an `op: "c"` entry on `<db>.$cmd`, reference §4.8).
fn decode_command(db: &str, o: Document) -> Op {
    let Some((name, value)) = o.iter().next() else {
        return Op::new(
            OpKind::Other("c".into()),
            Namespace::from_server(db, ""),
            None,
        );
    };
    let coll_ns = |v: &Bson| match v {
        Bson::String(c) => Namespace::from_server(db, c),
        _ => Namespace::from_server(db, ""),
    };
    let op = match name.as_str() {
        "create" => Op::new(OpKind::Create, coll_ns(value), None),
        "drop" => Op::new(OpKind::DropCollection, coll_ns(value), None),
        "dropDatabase" => Op::new(OpKind::DropDatabase, Namespace::from_server(db, ""), None),
        "renameCollection" => {
            let from = value.as_str().unwrap_or_default();
            let to = o.get_str("to").unwrap_or_default();
            Op::new(
                OpKind::Rename {
                    to: Namespace::from_server_ns(to),
                },
                Namespace::from_server_ns(from),
                None,
            )
        }
        other => Op::new(OpKind::Command(other.to_owned()), coll_ns(value), None),
    };
    op.with_data(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_selection() {
        let f = vec![
            Namespace::parse("a.x").unwrap(),
            Namespace::database("b").unwrap(),
        ];
        let sel = |s: &str| ns_selected(&f, &Namespace::parse(s).unwrap());
        assert!(sel("a.x") && sel("b.anything") && sel("a") && sel("b"));
        assert!(!sel("a.y") && !sel("c.x") && !sel("c"));
        let rename: Op = Op::new(
            OpKind::Rename {
                to: Namespace::parse("a.x").unwrap(),
            },
            Namespace::parse("a.tmp").unwrap(),
            None,
        );
        assert!(op_selected(&f, &rename));
        let other_db: Op = Op::new(
            OpKind::DropDatabase,
            Namespace::database("c").unwrap(),
            None,
        );
        assert!(!op_selected(&f, &other_db));
        assert!(op_selected(&[], &other_db));
    }
}
