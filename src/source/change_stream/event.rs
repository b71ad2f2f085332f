//! Change events into ops: the fields an [`Op`] is made of are read from the raw event in
//! one pass (reference §5.4), the resume token in one copy, and the index of an op within
//! its transaction from the token (reference §5.8).

use bson::raw::{RawBsonRef, RawDocument};
use bson::{Bson, DateTime, Document, Timestamp};
use mongodb::change_stream::event::ResumeToken;

use crate::error::{Error, Result};
use crate::op::{
    Namespace, Op, OpKind, Position, Source, TruncatedArray, TxnInfo, UpdateDescription,
};

/// What one change event turns into.
// Returned and matched at once, never stored: boxing the op would cost an allocation per
// event for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Event {
    Op(Op),
    /// The stream was invalidated; this is the token to start after.
    Invalidate(ResumeToken),
}

/// Numbers the events of one transaction when the token does not carry `txnOpIndex`.
#[derive(Debug, Default)]
pub(crate) struct TxnCounter {
    last: Option<(Timestamp, i64)>,
    next: u32,
}

pub(crate) fn malformed(message: impl Into<String>) -> Error {
    Error::Malformed {
        what: "change event".into(),
        message: message.into(),
    }
}

/// Decodes a KeyString-encoded non-negative integer (reference §5.8) at `bytes[0..]`,
/// returning the value and the number of bytes used.
fn keystring_uint(bytes: &[u8]) -> Option<(u64, usize)> {
    let ctype = *bytes.first()?;
    if ctype == 0x29 {
        return Some((0, 1));
    }
    let n = usize::from(ctype.checked_sub(0x2A)?);
    if !(1..=8).contains(&n) || bytes.len() < 1 + n {
        return None;
    }
    let mut v: u64 = 0;
    for b in &bytes[1..=n] {
        v = (v << 8) | u64::from(*b);
    }
    if v & 1 != 0 {
        return None; // fractional part: not an integer
    }
    Some((v >> 1, 1 + n))
}

/// `txnOpIndex` from a resume token's `_data` (reference §5.8): clusterTime, version,
/// [tokenType (v1+)], txnOpIndex.
pub(crate) fn txn_op_index(token: &RawDocument) -> Option<u32> {
    let hex = token.get_str("_data").ok()?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if bytes.first() != Some(&0x82) || bytes.len() < 9 {
        return None;
    }
    let mut at = 9;
    let (version, used) = keystring_uint(&bytes[at..])?;
    at += used;
    if version >= 1 {
        let (_token_type, used) = keystring_uint(&bytes[at..])?;
        at += used;
    }
    let (index, _) = keystring_uint(&bytes[at..])?;
    u32::try_from(index).ok()
}

fn update_description(d: &Document) -> Result<UpdateDescription> {
    let updated = d.get_document("updatedFields").cloned().unwrap_or_default();
    let removed = match d.get_array("removedFields") {
        Ok(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed("removedFields"))
            })
            .collect::<Result<Vec<_>>>()?,
        Err(_) => Vec::new(),
    };
    let mut truncated = Vec::new();
    if let Ok(arr) = d.get_array("truncatedArrays") {
        for t in arr {
            let t = t
                .as_document()
                .ok_or_else(|| malformed("truncatedArrays"))?;
            let field = t
                .get_str("field")
                .map_err(|_| malformed("truncatedArrays.field"))?;
            let size = match t.get("newSize") {
                Some(Bson::Int32(n)) => u32::try_from(*n).ok(),
                Some(Bson::Int64(n)) => u32::try_from(*n).ok(),
                _ => None,
            }
            .ok_or_else(|| malformed("truncatedArrays.newSize"))?;
            truncated.push(TruncatedArray::new(field, size));
        }
    }
    Ok(UpdateDescription::new(updated, removed, truncated))
}

/// The fields of a change event (reference §5.4) an [`Op`] is made of, borrowed from the
/// raw event: nothing else is decoded.
#[derive(Default)]
struct EventFields<'a> {
    id: Option<RawBsonRef<'a>>,
    operation_type: Option<&'a str>,
    ns: Option<&'a RawDocument>,
    to: Option<&'a RawDocument>,
    document_key: Option<&'a RawDocument>,
    full_document: Option<RawBsonRef<'a>>,
    full_document_before_change: Option<&'a RawDocument>,
    operation_description: Option<&'a RawDocument>,
    update_description: Option<&'a RawDocument>,
    cluster_time: Option<Timestamp>,
    wall_time: Option<DateTime>,
    lsid: Option<RawBsonRef<'a>>,
    txn_number: Option<RawBsonRef<'a>>,
}

impl<'a> EventFields<'a> {
    fn read(ev: &'a RawDocument) -> Result<EventFields<'a>> {
        let mut f = EventFields::default();
        for element in ev.iter() {
            let (key, value) = element.map_err(|e| malformed(e.to_string()))?;
            match key {
                "_id" => f.id = Some(value),
                "operationType" => f.operation_type = value.as_str(),
                "ns" => f.ns = value.as_document(),
                "to" => f.to = value.as_document(),
                "documentKey" => f.document_key = value.as_document(),
                "fullDocument" => f.full_document = Some(value),
                "fullDocumentBeforeChange" => f.full_document_before_change = value.as_document(),
                "operationDescription" => f.operation_description = value.as_document(),
                "updateDescription" => f.update_description = value.as_document(),
                "clusterTime" => f.cluster_time = value.as_timestamp(),
                "wallTime" => f.wall_time = value.as_datetime(),
                "lsid" => f.lsid = Some(value),
                "txnNumber" => f.txn_number = Some(value),
                _ => {}
            }
        }
        Ok(f)
    }
}

fn raw_doc(d: &RawDocument, what: &str) -> Result<Document> {
    crate::source::raw::document(d).map_err(|e| malformed(format!("{what}: {e}")))
}

/// `ns` / `to` of an event: `{db, coll}`, `coll` absent for database-level events. One
/// pass over the fields (two `get_str` calls would walk the document twice).
fn raw_ns(d: Option<&RawDocument>) -> Option<Namespace> {
    let (mut db, mut coll) = (None, "");
    for element in d? {
        match element.ok()? {
            ("db", value) => db = value.as_str(),
            ("coll", value) => coll = value.as_str().unwrap_or(""),
            _ => {}
        }
    }
    Some(Namespace::from_server(db?, coll))
}

/// Turns one change event (reference §5.4), read raw, into an op.
pub(crate) fn decode_event(ev: &RawDocument, txn: &mut TxnCounter) -> Result<Event> {
    let f = EventFields::read(ev)?;
    let Some(raw_token) = f.id.and_then(RawBsonRef::as_document) else {
        return Err(malformed("missing `_id` (resume token)"));
    };
    // One copy of the token's bytes.
    let token: ResumeToken =
        bson::from_slice(raw_token.as_bytes()).map_err(|e| malformed(format!("_id: {e}")))?;
    let op_type = f
        .operation_type
        .ok_or_else(|| malformed("missing `operationType`"))?;
    if op_type == "invalidate" {
        return Ok(Event::Invalidate(token));
    }
    let ns = raw_ns(f.ns).ok_or_else(|| malformed(format!("{op_type} event without `ns`")))?;
    let kind = match op_type {
        "insert" => OpKind::Insert,
        "update" => OpKind::Update,
        "replace" => OpKind::Replace,
        "delete" => OpKind::Delete,
        "drop" => OpKind::DropCollection,
        "dropDatabase" => OpKind::DropDatabase,
        "rename" => OpKind::Rename {
            to: raw_ns(f.to).ok_or_else(|| malformed("rename event without `to`"))?,
        },
        "create" => OpKind::Create,
        "createIndexes"
        | "dropIndexes"
        | "modify"
        | "shardCollection"
        | "reshardCollection"
        | "refineCollectionShardKey" => OpKind::Command(op_type.to_owned()),
        other => OpKind::Other(other.to_owned()),
    };
    let document_key = f
        .document_key
        .map(|k| raw_doc(k, "documentKey"))
        .transpose()?;
    let id = document_key.as_ref().and_then(|k| k.get("_id").cloned());
    let mut op = Op::new(kind, ns, id);
    op.document_key = document_key;
    match f.full_document {
        Some(RawBsonRef::Document(d)) => op.data = Some(raw_doc(d, "fullDocument")?),
        Some(RawBsonRef::Null) if op.is_update() => op.document_missing = true,
        _ => {}
    }
    if let Some(d) = f.full_document_before_change {
        op.before = Some(raw_doc(d, "fullDocumentBeforeChange")?);
    }
    if op.data.is_none() && op.is_command() {
        if let Some(d) = f.operation_description {
            op.data = Some(raw_doc(d, "operationDescription")?);
        }
    }
    if let Some(u) = f.update_description {
        op.update = Some(update_description(&raw_doc(u, "updateDescription")?)?);
    }
    op.timestamp = f.cluster_time.unwrap_or(Timestamp {
        time: 0,
        increment: 0,
    });
    op.wall_time = f.wall_time;
    op.source = Source::ChangeStream;
    if f.lsid.is_some() || f.txn_number.is_some() {
        let lsid = match f.lsid {
            Some(RawBsonRef::Document(d)) => Some(raw_doc(d, "lsid")?),
            _ => None,
        };
        let txn_number = f.txn_number.and_then(RawBsonRef::as_i64);
        let index = match txn_op_index(raw_token) {
            Some(i) => i,
            None => {
                let key = (op.timestamp, txn_number.unwrap_or(-1));
                if txn.last != Some(key) {
                    txn.last = Some(key);
                    txn.next = 0;
                }
                let i = txn.next;
                txn.next += 1;
                i
            }
        };
        op.txn = Some(TxnInfo::new(lsid, txn_number, index));
    }
    op.position = Position::ResumeToken(token);
    Ok(Event::Op(op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, RawDocumentBuf};

    const INSERT_TOKEN: &str =
        "82612E8513000000012B022C0100296E5A1004A5093ABB38FE4B9EA67F01BB1A96D812463C5F6964003C5F5F5F78000004";

    fn raw(ev: Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&ev).unwrap()
    }

    fn token(t: Document) -> ResumeToken {
        bson::from_document(t).unwrap()
    }

    #[test]
    fn tokens_are_read_from_the_raw_id() {
        let id = doc! {"_data": INSERT_TOKEN};
        let Event::Op(op) = decode_event(
            &raw(
                doc! {"_id": id.clone(), "operationType": "delete", "ns": {"db": "t", "coll": "c"}},
            ),
            &mut TxnCounter::default(),
        )
        .unwrap() else {
            panic!("not an op")
        };
        let Position::ResumeToken(t) = op.position else {
            panic!("no token")
        };
        assert_eq!(bson::to_document(&t).unwrap(), id);
        assert_eq!(t, token(id));
    }

    fn decode(ev: Document) -> Op {
        match decode_event(&raw(ev), &mut TxnCounter::default()).unwrap() {
            Event::Op(op) => op,
            _ => panic!("not an op"),
        }
    }

    #[test]
    fn txn_op_index_from_tokens() {
        // reference §5.8 worked example: txnOpIndex 0
        assert_eq!(txn_op_index(&raw(doc! {"_data": INSERT_TOKEN})), Some(0));
        // same token with txnOpIndex 3: `2B 06`
        let t3 = INSERT_TOKEN.replacen("2C0100296E", "2C01002B066E", 1);
        assert_eq!(txn_op_index(&raw(doc! {"_data": t3})), Some(3));
        // v2 HWM token
        assert_eq!(
            txn_op_index(&raw(doc! {"_data": "82612E8513000000012B0429296E1404"})),
            Some(0)
        );
        assert_eq!(txn_op_index(&raw(doc! {"_data": "zz"})), None);
        assert_eq!(txn_op_index(&raw(doc! {})), None);
    }

    #[test]
    fn crud_events() {
        let ts = Timestamp {
            time: 5,
            increment: 1,
        };
        let insert = decode(doc! {
            "_id": {"_data": INSERT_TOKEN}, "operationType": "insert", "clusterTime": ts,
            "wallTime": bson::DateTime::from_millis(9),
            "fullDocument": {"_id": 1, "a": 1}, "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
        });
        assert!(insert.is_insert() && insert.is_source_change_stream());
        assert_eq!(insert.data, Some(doc! {"_id": 1, "a": 1}));
        assert_eq!(insert.id, Some(Bson::Int32(1)));
        assert_eq!(insert.timestamp, ts);
        assert_eq!(insert.wall_time, Some(bson::DateTime::from_millis(9)));
        assert_eq!(
            insert.position,
            Position::ResumeToken(token(doc! {"_data": INSERT_TOKEN}))
        );
        assert!(insert.txn.is_none());

        let update = decode(doc! {
            "_id": {"_data": "82"}, "operationType": "update", "clusterTime": ts,
            "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
            "updateDescription": {"updatedFields": {"a": 2}, "removedFields": ["b"], "truncatedArrays": [{"field": "arr", "newSize": 2}]},
            "fullDocument": null,
        });
        assert!(update.is_update() && update.document_missing && update.data.is_none());
        assert_eq!(
            update.update,
            Some(UpdateDescription::new(
                doc! {"a": 2},
                vec!["b".into()],
                vec![TruncatedArray::new("arr", 2)]
            ))
        );

        let replace = decode(doc! {
            "_id": {"_data": "82"}, "operationType": "replace", "clusterTime": ts,
            "fullDocument": {"_id": 1, "x": "new"}, "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
        });
        assert!(replace.is_replace() && replace.data.is_some());
        let delete = decode(doc! {
            "_id": {"_data": "82"}, "operationType": "delete", "clusterTime": ts,
            "ns": {"db": "test", "coll": "c"}, "documentKey": {"_id": 1},
        });
        assert!(delete.is_delete() && delete.data.is_none());
    }

    #[test]
    fn ddl_and_invalidate_events() {
        let ts = Timestamp {
            time: 5,
            increment: 1,
        };
        let drop = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "drop", "clusterTime": ts, "ns": {"db": "test", "coll": "c"}},
        );
        assert!(drop.is_drop_collection() && drop.collection() == "c");
        let rename = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "rename", "clusterTime": ts,
            "ns": {"db": "test", "coll": "a"}, "to": {"db": "test", "coll": "b"}},
        );
        assert_eq!(
            rename.kind,
            OpKind::Rename {
                to: Namespace::parse("test.b").unwrap()
            }
        );
        let dropdb = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "dropDatabase", "clusterTime": ts, "ns": {"db": "test"}},
        );
        assert!(dropdb.is_drop_database() && dropdb.namespace.is_database());
        let created = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "createIndexes", "clusterTime": ts,
            "ns": {"db": "test", "coll": "a"}, "operationDescription": {"indexes": []}},
        );
        assert_eq!(created.kind, OpKind::Command("createIndexes".into()));
        assert_eq!(created.data, Some(doc! {"indexes": []}));
        let other = decode(
            doc! {"_id": {"_data": "82"}, "operationType": "somethingNew", "clusterTime": ts, "ns": {"db": "test"}},
        );
        assert_eq!(other.kind, OpKind::Other("somethingNew".into()));
        let inv = decode_event(
            &raw(doc! {"_id": {"_data": "83"}, "operationType": "invalidate", "clusterTime": ts}),
            &mut TxnCounter::default(),
        )
        .unwrap();
        assert!(matches!(inv, Event::Invalidate(t) if t == token(doc! {"_data": "83"})));
        assert!(decode_event(
            &raw(doc! {"operationType": "insert"}),
            &mut TxnCounter::default()
        )
        .is_err());
    }

    #[test]
    fn transaction_events() {
        let ts = Timestamp {
            time: 5,
            increment: 1,
        };
        let mut counter = TxnCounter::default();
        let lsid = doc! {"id": 1};
        let mut idx = Vec::new();
        for (i, data) in ["82", "82", INSERT_TOKEN].iter().enumerate() {
            let ev = doc! {"_id": {"_data": *data}, "operationType": "insert", "clusterTime": ts,
            "ns": {"db": "t", "coll": "c"}, "documentKey": {"_id": i as i32}, "fullDocument": {"_id": i as i32},
            "lsid": lsid.clone(), "txnNumber": 3i64};
            let Event::Op(op) = decode_event(&raw(ev), &mut counter).unwrap() else {
                panic!()
            };
            let txn = op.txn.unwrap();
            assert_eq!((txn.lsid.as_ref(), txn.txn_number), (Some(&lsid), Some(3)));
            idx.push(txn.index);
        }
        // first two from the counter (tokens too short), the last from the token
        assert_eq!(idx, vec![0, 1, 0]);
    }
}
