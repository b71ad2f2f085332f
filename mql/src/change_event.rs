//! Pipelines over change events, as a server applies the stages that follow `$changeStream`
//! to each event: only the stages a change stream permits, and a pipeline may not change an
//! event's `_id` (its resume token).
//!
//! ```
//! use bson::doc;
//! use mql::change_event::EventPipeline;
//!
//! let p = EventPipeline::parse(&[
//!     doc! {"$match": {"operationType": "insert"}},
//!     doc! {"$project": {"fullDocument.secret": 0}},
//! ])?;
//! let event = doc! {
//!     "_id": {"_data": "8263"}, "operationType": "insert",
//!     "ns": {"db": "shop", "coll": "users"}, "documentKey": {"_id": 1},
//!     "fullDocument": {"_id": 1, "name": "ada", "secret": "x"},
//! };
//! let out = p.apply(event)?.expect("an insert passes the $match");
//! assert_eq!(out.get_document("fullDocument")?, &doc! {"_id": 1, "name": "ada"});
//!
//! // A stage a change stream does not permit is refused when the pipeline is parsed.
//! assert_eq!(EventPipeline::parse(&[doc! {"$group": {"_id": null}}]).unwrap_err().code, 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use bson::{doc, Bson, Document};

use crate::error::{Error, ErrorCode, Result};
use crate::fmt;
use crate::pipeline::Pipeline;

/// Stages allowed after `$changeStream` (SPEC-CS, SRV-DOC-CS; reference §5.1).
pub const ALLOWED_STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$replaceRoot",
    "$replaceWith",
    "$redact",
];

/// Aggregation stages a server knows but does not permit after `$changeStream`.
pub const OTHER_KNOWN_STAGES: &[&str] = &[
    "$bucket",
    "$bucketAuto",
    "$collStats",
    "$count",
    "$densify",
    "$facet",
    "$fill",
    "$geoNear",
    "$graphLookup",
    "$group",
    "$indexStats",
    "$limit",
    "$listSessions",
    "$lookup",
    "$merge",
    "$out",
    "$planCacheStats",
    "$sample",
    "$search",
    "$setWindowFields",
    "$skip",
    "$sort",
    "$sortByCount",
    "$unionWith",
    "$unwind",
    "$documents",
    "$currentOp",
    "$listLocalSessions",
];

/// 280 when the user's stages changed the event's `_id` (its resume token), which was `id`
/// (SRV change_stream_proxy / document_source_change_stream_handle_topology_change).
pub fn check_id_unchanged(event: &Document, id: Option<&Bson>) -> Result<()> {
    if event.get("_id") == id {
        return Ok(());
    }
    let found = match event.get("_id") {
        Some(v) => fmt::doc(&doc! {"_id": v.clone()}),
        None => "{}".to_string(),
    };
    Err(Error::from_code(
        ErrorCode::ChangeStreamFatalError,
        format!(
            "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. Modifying the _id field of an event makes it impossible to resume the stream from that point. Only transformations that retain the unmodified _id field are allowed. Expected: {} but found: {found}",
            fmt::doc(&doc! {"_id": id.cloned().unwrap_or(Bson::Null)})
        ),
    ))
}

/// Whether a stage may follow `$changeStream`: 20 IllegalOperation for a stage the server
/// knows but does not permit there, 40324 for a stage it does not know (SRV
/// `document_source_change_stream.cpp` stage constraints, `document_source.cpp` parse).
pub fn check_stage(name: &str) -> Result<()> {
    if ALLOWED_STAGES.contains(&name) {
        Ok(())
    } else if OTHER_KNOWN_STAGES.contains(&name) {
        Err(Error::from_code(
            ErrorCode::IllegalOperation,
            format!("{name} is not permitted in a $changeStream pipeline"),
        ))
    } else {
        Err(Error::from_code(
            ErrorCode::UnrecognizedPipelineStage,
            format!("Unrecognized pipeline stage name: '{name}'"),
        ))
    }
}

/// A pipeline applied to one change event at a time.
#[derive(Debug, Clone)]
pub struct EventPipeline {
    pipeline: Pipeline,
}

impl EventPipeline {
    /// Parses `stages`, refusing what a change stream refuses ([`check_stage`]) and every
    /// error [`Pipeline::parse`] reports.
    ///
    /// # Errors
    /// The server's error for the first invalid stage.
    pub fn parse(stages: &[Document]) -> Result<EventPipeline> {
        for stage in stages {
            if let Some(name) = stage.keys().next() {
                check_stage(name)?;
            }
        }
        Ok(EventPipeline {
            pipeline: Pipeline::parse(stages)?,
        })
    }

    /// The event after the stages: `None` when a `$match` (or `$redact`) dropped it.
    ///
    /// # Errors
    /// An expression's evaluation error, or 280 ChangeStreamFatalError when the stages
    /// changed or removed the event's `_id` ([`check_id_unchanged`]).
    pub fn apply(&self, event: Document) -> Result<Option<Document>> {
        let id = event.get("_id").cloned();
        match self.pipeline.run_one(event)? {
            Some(out) => {
                check_id_unchanged(&out, id.as_ref())?;
                Ok(Some(out))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Document {
        doc! {"_id": {"_data": "82AB"}, "operationType": "update", "ns": {"db": "d", "coll": "c"},
        "documentKey": {"_id": 7}, "updateDescription": {"updatedFields": {"n": 2}}}
    }

    #[test]
    fn stages_a_change_stream_refuses() {
        for (stage, code) in [
            ("$group", 20),
            ("$limit", 20),
            ("$lookup", 20),
            ("$nope", 40324),
        ] {
            let e = EventPipeline::parse(&[doc! {stage: {}}]).unwrap_err();
            assert_eq!(e.code, code, "{stage}");
        }
        for stage in ALLOWED_STAGES {
            assert!(check_stage(stage).is_ok(), "{stage}");
        }
    }

    #[test]
    fn match_drops_and_id_is_guarded() {
        let p = EventPipeline::parse(&[doc! {"$match": {"operationType": "insert"}}]).unwrap();
        assert_eq!(p.apply(event()).unwrap(), None);
        let p = EventPipeline::parse(&[doc! {"$set": {"extra": 1}}]).unwrap();
        assert_eq!(p.apply(event()).unwrap().unwrap().get_i32("extra"), Ok(1));
        for stage in [
            doc! {"$project": {"_id": 0}},
            doc! {"$set": {"_id": 1}},
            doc! {"$replaceRoot": {"newRoot": "$documentKey"}},
        ] {
            let p = EventPipeline::parse(std::slice::from_ref(&stage)).unwrap();
            let e = p.apply(event()).unwrap_err();
            assert_eq!(
                (e.code, e.code_name.as_str()),
                (280, "ChangeStreamFatalError"),
                "{stage}"
            );
        }
    }
}
