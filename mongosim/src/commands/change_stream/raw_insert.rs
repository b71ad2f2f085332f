//! The event of a plain insert entry built from the entry's bytes: the inserted document
//! is copied into the event as it is, never decoded into a `Document` and encoded again
//! (the general path does both, and that was most of the server CPU of an insert event).
//! The fields and their order are those of [`ChangeStreamCursor::event_document`] for an
//! insert outside a transaction; the `raw_insert_matches_the_general_path` test holds the
//! two to the same bytes.

use bson::{Document, RawBsonRef, RawDocument, Timestamp};

use super::{Candidate, ChangeStreamCursor, EventBody};
use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::resume_token::empty_with_capacity;
use crate::ServerVersion;

fn corrupt(e: impl std::fmt::Display) -> CommandError {
    CommandError::from_code(
        ErrorCode::InternalError,
        format!("corrupt oplog entry: {e}"),
    )
}

/// The fields of an insert entry its event is built from (beside `op` and `ns`), read
/// in one pass.
#[derive(Default)]
struct InsertEntry<'a> {
    ts: Option<Timestamp>,
    o: Option<&'a RawDocument>,
    o2: Option<&'a RawDocument>,
    ui: Option<RawBsonRef<'a>>,
    wall: Option<RawBsonRef<'a>>,
    from_migrate: bool,
}

impl<'a> InsertEntry<'a> {
    fn read(raw: &'a RawDocument) -> CmdResult<Self> {
        let mut e = InsertEntry::default();
        for element in raw {
            let (key, value) = element.map_err(corrupt)?;
            match (key, value) {
                ("ts", RawBsonRef::Timestamp(t)) => e.ts = Some(t),
                ("o", RawBsonRef::Document(d)) => e.o = Some(d),
                ("o2", RawBsonRef::Document(d)) => e.o2 = Some(d),
                ("ui", v) => e.ui = Some(v),
                ("wall", v) => e.wall = Some(v),
                ("fromMigrate", v) => e.from_migrate = v == RawBsonRef::Boolean(true),
                _ => {}
            }
        }
        Ok(e)
    }
}

impl ChangeStreamCursor {
    /// The candidate event of `raw` (whose `op` and `ns` are given) when it is a plain
    /// insert (`op: "i"`, not from a migration, with document `o` and key `o2`, as 6.0+ log
    /// them, reference §4.3) on a watched collection; `None` sends the entry down the
    /// general path.
    pub(super) fn raw_insert(
        &self,
        raw: &RawDocument,
        op: &str,
        ns: &str,
    ) -> CmdResult<Option<Candidate>> {
        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
        if self.version == ServerVersion::V4_4
            || op != "i"
            || coll == "system.views"
            || !self.watches(db, coll)
        {
            return Ok(None);
        }
        let e = InsertEntry::read(raw)?;
        let (false, Some(ts), Some(o), Some(key)) = (e.from_migrate, e.ts, e.o, e.o2) else {
            return Ok(None);
        };
        let uuid = match e.ui {
            Some(RawBsonRef::Binary(b)) if b.bytes.len() == 16 => b.bytes.try_into().ok(),
            _ => None,
        };
        let document_key = Document::try_from(key).map_err(corrupt)?;
        let token = self.event_token("insert", Some(&document_key), None, ts, uuid, 0);
        // One allocation: the event is the document, its key and ~200 bytes of fields.
        let capacity = o.as_bytes().len() + key.as_bytes().len() + ns.len() + 256;
        let mut ev = empty_with_capacity(capacity);
        ev.append("_id", token.encode().to_raw());
        ev.append("operationType", "insert");
        ev.append("clusterTime", ts);
        if self.spec.show_expanded {
            if let Some(ui) = e.ui {
                ev.append_ref("collectionUUID", ui);
            }
        }
        if let Some(wall) = e.wall {
            ev.append_ref("wallTime", wall);
        }
        ev.append_ref("fullDocument", RawBsonRef::Document(o));
        let mut ns_doc = empty_with_capacity(ns.len() + 32);
        ns_doc.append("db", db);
        ns_doc.append("coll", coll);
        ev.append("ns", ns_doc);
        ev.append_ref("documentKey", RawBsonRef::Document(key));
        Ok(Some(Candidate {
            token,
            event: EventBody::Raw(ev),
            lookup: None,
            invalidate: false,
            image: None,
        }))
    }
}
