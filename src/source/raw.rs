//! Raw BSON to `Document` without intermediate copies.
//!
//! `Document::try_from(&RawDocument)` in the bson crate turns every nested document or
//! array into an owned raw buffer first (`RawBsonRef::to_raw_bson`) and then decodes that
//! copy, so each level of nesting is copied once more. The sources decode every event and
//! entry they deliver, so they walk the raw bytes once instead.

use bson::raw::{Error, RawArray, RawBsonRef, RawDocument};
use bson::{Bson, Document};

/// Decodes `raw` into a `Document`.
pub(crate) fn document(raw: &RawDocument) -> Result<Document, Error> {
    let mut doc = Document::new();
    for element in raw {
        let (key, value) = element?;
        doc.insert(key, bson(value)?);
    }
    Ok(doc)
}

/// Decodes one raw value.
pub(crate) fn bson(value: RawBsonRef<'_>) -> Result<Bson, Error> {
    Ok(match value {
        RawBsonRef::Document(d) => Bson::Document(document(d)?),
        RawBsonRef::Array(a) => Bson::Array(array(a)?),
        // Scalars (and code with scope, which is rare) have nothing nested to copy twice.
        other => Bson::try_from(other)?,
    })
}

fn array(raw: &RawArray) -> Result<Vec<Bson>, Error> {
    raw.into_iter().map(|v| v.and_then(bson)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, Binary, DateTime, Decimal128, RawDocumentBuf, Timestamp};

    #[test]
    fn same_as_the_bson_crate() {
        let d = doc! {
            "_id": ObjectId::new(), "s": "text", "i": 1, "l": 2i64, "f": 1.5, "b": true, "n": null,
            "ts": Timestamp { time: 1, increment: 2 }, "dt": DateTime::from_millis(7),
            "bin": Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16] },
            "dec": Decimal128::from_bytes([3; 16]),
            "nested": {"a": [1, {"b": [[], {}]}, "x"], "c": {"d": {"e": 1}}},
            "empty": {}, "arr": [],
        };
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        assert_eq!(document(&raw).unwrap(), d);
        assert_eq!(
            document(&raw).unwrap(),
            Document::try_from(raw.as_ref()).unwrap()
        );
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        let mut bytes = RawDocumentBuf::from_document(&doc! {"a": {"b": "c"}})
            .unwrap()
            .into_bytes();
        // the nested document's length now runs past the end
        bytes[7] = 0x7f;
        let raw = RawDocument::from_bytes(&bytes).unwrap();
        assert!(document(raw).is_err());
    }
}
