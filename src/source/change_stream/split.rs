//! Events split by `$changeStreamSplitLargeEvent` (MongoDB 7.0, 6.0.9), put back together.
//!
//! An event larger than 16 MB arrives as `n` fragments. Fragment `k` (1-based) is
//! `{_id: <token>, splitEvent: {fragment: k, of: n}, …}` with some of the event's
//! top-level fields: the server packs the fields, smallest first, into as few fragments as
//! fit, and gives each fragment its own resume token (the event's token with
//! `fragmentNum: k - 1`) (server `change_stream_split_event_helpers.cpp`
//! `splitChangeEvent`). The fields of all fragments together are the event's fields.

use bson::raw::{RawDocument, RawDocumentBuf};

use super::event::malformed;
use crate::error::Result;

/// What one event read from the server is, once fragments are accounted for.
pub(crate) enum Piece {
    /// A whole event: one that was not split, or the one its last fragment completed.
    Whole(RawDocumentBuf),
    /// A fragment, kept until the others arrive.
    Kept,
    /// A fragment after the first whose earlier fragments this stream never read: the
    /// stream started after one of them. Carries the fragment's token `_data`.
    Orphan(String),
}

/// Most fragments an event can have: an event holds at most three documents of up to
/// 16 MB (`fullDocument`, `fullDocumentBeforeChange`, `updateDescription`), and the server
/// never splits a field, so four fragments suffice; more is a malformed split, refused
/// before it can hold memory.
const MAX_FRAGMENTS: i32 = 16;

/// The fragments read so far of one split event.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    fragments: Vec<RawDocumentBuf>,
    /// `of` of the fragments kept.
    of: i32,
}

/// `splitEvent: {fragment, of}` of `event`, `None` when it is not a fragment.
fn split_event(event: &RawDocument) -> Result<Option<(i32, i32)>> {
    let split = match event.get("splitEvent") {
        Ok(None) => return Ok(None),
        Ok(Some(value)) => value.as_document(),
        Err(e) => return Err(malformed(format!("splitEvent: {e}"))),
    };
    let field = |name: &str| split.and_then(|s| s.get_i32(name).ok());
    match (field("fragment"), field("of")) {
        (Some(k), Some(n)) if 1 <= k && k <= n && n <= MAX_FRAGMENTS => Ok(Some((k, n))),
        _ => Err(malformed(format!(
            "splitEvent must be {{fragment: k, of: n}} with 1 <= k <= n <= {MAX_FRAGMENTS}, \
             got {split:?}"
        ))),
    }
}

/// The `_data` of an event's resume token (empty when it has none: the decoder reports it).
fn token_data(event: &RawDocument) -> String {
    event
        .get_document("_id")
        .ok()
        .and_then(|id| id.get_str("_data").ok())
        .unwrap_or_default()
        .to_owned()
}

impl Reassembly {
    /// Whether fragments of an event are kept, waiting for the rest.
    pub(crate) fn is_partial(&self) -> bool {
        !self.fragments.is_empty()
    }

    /// Forgets the fragments kept (the stream moved elsewhere).
    pub(crate) fn clear(&mut self) {
        self.fragments.clear();
        self.of = 0;
    }

    /// Takes the next event read from the server.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a `splitEvent` that is not `{fragment: k, of: n}`, for a
    /// fragment that does not follow the ones kept, and for a whole event arriving while
    /// fragments are kept (they are dropped; the whole event is the next one read).
    pub(crate) fn push(&mut self, event: RawDocumentBuf) -> Result<Piece> {
        let Some((k, n)) = split_event(&event)? else {
            if self.is_partial() {
                let kept = (self.fragments.len(), self.of);
                self.clear();
                return Err(malformed(format!(
                    "an event that was not split arrived after fragment {} of {} of a split \
                     event: the split event is incomplete",
                    kept.0, kept.1
                )));
            }
            return Ok(Piece::Whole(event));
        };
        if k == 1 {
            // A first fragment starts an event, also when the same event is sent again
            // after a resume from before it.
            self.clear();
            self.of = n;
        } else if !self.is_partial() {
            return Ok(Piece::Orphan(token_data(&event)));
        } else if n != self.of || usize::try_from(k - 1) != Ok(self.fragments.len()) {
            let kept = (self.fragments.len(), self.of);
            self.clear();
            return Err(malformed(format!(
                "fragment {k} of {n} of a split event after fragment {} of {}",
                kept.0, kept.1
            )));
        }
        self.fragments.push(event);
        if usize::try_from(n) != Ok(self.fragments.len()) {
            return Ok(Piece::Kept);
        }
        let whole = self.assemble();
        self.clear();
        Ok(Piece::Whole(whole))
    }

    /// The event made of the fragments kept: the last fragment's `_id` (resuming after it
    /// resumes after the whole event), then every other field of every fragment.
    fn assemble(&self) -> RawDocumentBuf {
        let mut whole = RawDocumentBuf::new();
        let last = self.fragments.last().map(|f| f.get("_id"));
        if let Some(Ok(Some(id))) = last {
            whole.append_ref("_id", id);
        }
        for fragment in &self.fragments {
            for (key, value) in fragment.iter().flatten() {
                if key != "_id" && key != "splitEvent" {
                    whole.append_ref(key, value);
                }
            }
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use bson::{doc, Document};

    fn fragment(k: i32, n: i32, fields: Document) -> RawDocumentBuf {
        let mut d =
            doc! {"_id": {"_data": format!("T{k}")}, "splitEvent": {"fragment": k, "of": n}};
        d.extend(fields);
        RawDocumentBuf::from_document(&d).unwrap()
    }

    fn whole(piece: Result<Piece>) -> Document {
        match piece {
            Ok(Piece::Whole(d)) => d.to_document().unwrap(),
            Ok(Piece::Kept) => panic!("kept"),
            Ok(Piece::Orphan(t)) => panic!("orphan {t}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn fragments_become_one_event_with_the_last_token() {
        let mut r = Reassembly::default();
        let first = fragment(1, 3, doc! {"operationType": "update", "ns": {"db": "a"}});
        assert!(matches!(r.push(first), Ok(Piece::Kept)));
        assert!(r.is_partial());
        let second = fragment(2, 3, doc! {"fullDocumentBeforeChange": {"x": 1}});
        assert!(matches!(r.push(second), Ok(Piece::Kept)));
        let event = whole(r.push(fragment(3, 3, doc! {"fullDocument": {"x": 2}})));
        assert_eq!(
            event,
            doc! {
                "_id": {"_data": "T3"}, "operationType": "update", "ns": {"db": "a"},
                "fullDocumentBeforeChange": {"x": 1}, "fullDocument": {"x": 2},
            }
        );
        assert!(!r.is_partial());
        let plain = RawDocumentBuf::from_document(&doc! {"_id": {"_data": "U"}}).unwrap();
        assert_eq!(whole(r.push(plain)), doc! {"_id": {"_data": "U"}});
    }

    #[test]
    fn a_first_fragment_sent_again_starts_over() {
        let mut r = Reassembly::default();
        assert!(matches!(
            r.push(fragment(1, 2, doc! {"a": 1})),
            Ok(Piece::Kept)
        ));
        assert!(matches!(
            r.push(fragment(1, 2, doc! {"a": 1})),
            Ok(Piece::Kept)
        ));
        let event = whole(r.push(fragment(2, 2, doc! {"b": 2})));
        assert_eq!(event, doc! {"_id": {"_data": "T2"}, "a": 1, "b": 2});
    }

    #[test]
    fn a_fragment_without_its_first_is_an_orphan() {
        let mut r = Reassembly::default();
        match r.push(fragment(2, 3, doc! {"b": 2})) {
            Ok(Piece::Orphan(token)) => assert_eq!(token, "T2"),
            _ => panic!("not an orphan"),
        }
        assert!(!r.is_partial());
    }

    #[test]
    fn gaps_and_bad_split_fields_are_malformed() {
        let mut r = Reassembly::default();
        assert!(matches!(r.push(fragment(1, 3, doc! {})), Ok(Piece::Kept)));
        let gap = r.push(fragment(3, 3, doc! {}));
        assert!(matches!(gap, Err(Error::Malformed { .. })), "a gap");
        assert!(!r.is_partial(), "the incomplete event is dropped");

        assert!(matches!(r.push(fragment(1, 2, doc! {})), Ok(Piece::Kept)));
        let plain = RawDocumentBuf::from_document(&doc! {"_id": {"_data": "U"}}).unwrap();
        assert!(matches!(r.push(plain), Err(Error::Malformed { .. })));

        for bad in [
            doc! {"splitEvent": {"fragment": 0, "of": 2}},
            doc! {"splitEvent": {"fragment": 3, "of": 2}},
            doc! {"splitEvent": {"fragment": 1, "of": MAX_FRAGMENTS + 1}},
            doc! {"splitEvent": {"fragment": "1", "of": 2}},
            doc! {"splitEvent": 1},
        ] {
            let raw = RawDocumentBuf::from_document(&bad).unwrap();
            assert!(matches!(r.push(raw), Err(Error::Malformed { .. })), "{bad}");
        }
    }
}
