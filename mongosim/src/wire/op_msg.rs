//! OP_MSG (reference §1.2, SPEC-OPMSG, SRV `src/mongo/rpc/op_msg.cpp` `OpMsg::parse`).

use bson::{Bson, Document};

use super::{read_cstring, read_document, read_i32, DocError, Incoming, WireError};
use super::{Command, HEADER_LEN, OP_MSG};
use crate::error::CommandError;
use crate::error::ErrorCode;
use crate::limits::MAX_INTERNAL_BSON_SIZE;

const CHECKSUM_PRESENT: u32 = 1 << 0;
const MORE_TO_COME: u32 = 1 << 1;
/// Bits 0–15 are required: an unknown one is an error; 16–31 are optional (ignored).
const REQUIRED_MASK: u32 = 0xffff;
const KNOWN_REQUIRED: u32 = CHECKSUM_PRESENT | MORE_TO_COME;

/// Parses an OP_MSG; `message` includes the header.
pub(super) fn parse(message: &[u8]) -> Result<Incoming, WireError> {
    let flags = read_i32(message, HEADER_LEN).ok_or(WireError::Malformed("no flagBits"))? as u32;
    let unknown = flags & REQUIRED_MASK & !KNOWN_REQUIRED;
    if unknown != 0 {
        let bit = unknown.trailing_zeros();
        return Err(WireError::Fatal(CommandError::from_code(
            ErrorCode::IllegalOpMsgFlag,
            format!("Message contains illegal flags value: Flag {bit}"),
        )));
    }
    let mut end = message.len();
    if flags & CHECKSUM_PRESENT != 0 {
        if end < HEADER_LEN + 4 + 4 {
            return Err(WireError::Malformed("checksum flag set but no checksum"));
        }
        end -= 4;
        // CRC-32C over the whole message (header included) minus the trailer (SRV op_msg.cpp
        // `calculateChecksum`).
        let expected = u32::from_le_bytes([
            message[end],
            message[end + 1],
            message[end + 2],
            message[end + 3],
        ]);
        if crc32c::crc32c(&message[..end]) != expected {
            return Err(WireError::Fatal(CommandError::from_code(
                ErrorCode::ChecksumMismatch,
                "OP_MSG checksum does not match contents",
            )));
        }
    }
    let more_to_come = flags & MORE_TO_COME != 0;
    let command = parse_sections(message, HEADER_LEN + 4, end)?;
    Ok(Incoming::Msg {
        more_to_come,
        command,
    })
}

/// Parses the sections between `pos` and `end`. Framing errors close the connection (outer
/// `Err`); semantic errors are answered (inner `Err`).
fn parse_sections(
    message: &[u8],
    mut pos: usize,
    end: usize,
) -> Result<Result<Command, CommandError>, WireError> {
    let mut sections = Sections::default();
    while pos < end {
        let kind = message[pos];
        let next = match kind {
            0 => sections.body(message, pos + 1, end)?,
            1 => sections.sequence(message, pos + 1, end)?,
            other => {
                // Cannot continue: the length of an unknown section is unknown.
                Err(CommandError::from_code(
                    ErrorCode::OpMsgUnknownSectionKind,
                    format!("Unknown section kind {other}"),
                ))
            }
        };
        match next {
            Ok(next) => pos = next,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(sections.into_command())
}

/// The sections of one OP_MSG read so far. A section parser returns the offset after the
/// section (`Ok(Ok)`), an error to answer (`Ok(Err)`), or a framing error that closes the
/// connection (`Err`).
#[derive(Default)]
struct Sections {
    body: Option<Document>,
    sequences: Vec<(String, Vec<Bson>)>,
    /// The first answerable error, reported once every section is framed.
    error: Option<CommandError>,
}

type SectionResult = Result<Result<usize, CommandError>, WireError>;

impl Sections {
    /// A kind-0 section (the body) at `pos`.
    fn body(&mut self, message: &[u8], pos: usize, end: usize) -> SectionResult {
        let len = read_i32(message, pos).ok_or(WireError::Malformed("truncated body"))?;
        let fits = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .is_some_and(|e| e <= end);
        if !fits {
            return Err(WireError::Malformed("body runs past the message"));
        }
        if len as usize > MAX_INTERNAL_BSON_SIZE {
            // SRV bsonobj.cpp `BSONObj::_assertInvalid`.
            return Ok(Err(CommandError::from_code(
                ErrorCode::BSONObjectTooLarge,
                format!(
                    "BSONObj size: {len} (0x{len:X}) is invalid. Size must be between 0 \
                     and {MAX_INTERNAL_BSON_SIZE}(16MB)"
                ),
            )));
        }
        match read_document(message, pos, end) {
            Ok((doc, next)) => {
                if self.body.is_some() {
                    self.error.get_or_insert_with(|| {
                        CommandError::from_code(
                            ErrorCode::OpMsgMultipleBodies,
                            "Multiple body sections in message",
                        )
                    });
                } else {
                    self.body = Some(doc);
                }
                Ok(Ok(next))
            }
            Err(DocError::Truncated) => Err(WireError::Malformed("body runs past the message")),
            Err(DocError::Invalid(e)) => Ok(Err(e)),
        }
    }

    /// A kind-1 section (a document sequence) at `pos`.
    fn sequence(&mut self, message: &[u8], pos: usize, end: usize) -> SectionResult {
        let size = read_i32(message, pos).ok_or(WireError::Malformed("truncated sequence"))?;
        let seq_end = usize::try_from(size)
            .ok()
            .filter(|&s| s >= 5)
            .and_then(|s| pos.checked_add(s))
            .filter(|&e| e <= end)
            .ok_or(WireError::Malformed("document sequence size"))?;
        let (ident, mut doc_pos) = read_cstring(&message[..seq_end], pos + 4)
            .ok_or(WireError::Malformed("document sequence identifier"))?;
        let ident = ident.to_string();
        let mut docs = Vec::new();
        while doc_pos < seq_end {
            match read_document(message, doc_pos, seq_end) {
                Ok((doc, next)) => {
                    docs.push(Bson::Document(doc));
                    doc_pos = next;
                }
                Err(DocError::Truncated) => {
                    return Err(WireError::Malformed("document runs past its sequence"))
                }
                Err(DocError::Invalid(e)) => return Ok(Err(e)),
            }
        }
        if self.sequences.len() >= 2 {
            return Err(WireError::Fatal(CommandError::from_code(
                ErrorCode::TooManyDocumentSequences,
                "Too many document sequences in OP_MSG",
            )));
        }
        if self.sequences.iter().any(|(name, _)| *name == ident) {
            self.error.get_or_insert_with(|| {
                CommandError::from_code(
                    ErrorCode::OpMsgDuplicateDocumentSequence,
                    format!("Duplicate document sequence: {ident}"),
                )
            });
        }
        self.sequences.push((ident, docs));
        Ok(Ok(seq_end))
    }

    /// The command: the body with each sequence merged in as an array field named by its
    /// identifier (SPEC-OPMSG).
    fn into_command(self) -> Result<Command, CommandError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some(mut body) = self.body else {
            return Err(CommandError::from_code(
                ErrorCode::OpMsgMissingBody,
                "OP_MSG messages must have a body",
            ));
        };
        for (ident, docs) in self.sequences {
            if body.contains_key(&ident) {
                return Err(CommandError::from_code(
                    ErrorCode::OpMsgDuplicateSequenceField,
                    format!("Duplicate field between body and document sequence {ident}"),
                ));
            }
            body.insert(ident, Bson::Array(docs));
        }
        into_command(body)
    }
}

/// Checks `$db` (SRV `op_msg.h` `getDatabase`) and takes the command name from the first key.
pub(super) fn into_command(body: Document) -> Result<Command, CommandError> {
    let db = match body.get("$db") {
        Some(Bson::String(db)) => db.clone(),
        Some(other) => {
            return Err(CommandError::wrong_type("$db", other, "string"));
        }
        None => {
            return Err(CommandError::from_code(
                ErrorCode::OpMsgMissingDb,
                "OP_MSG requests require a $db argument",
            ))
        }
    };
    let name = body.keys().next().cloned().unwrap_or_default();
    Ok(Command { name, db, body })
}

/// Encodes a reply: flagBits 0, one kind-0 section holding the encoded `body`, no checksum.
pub(crate) fn encode_op_msg(request_id: i32, response_to: i32, body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + 5 + body.len());
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.push(0);
    buf.extend_from_slice(body);
    super::write_header(&mut buf, request_id, response_to, OP_MSG);
    buf
}

/// Decodes a reply this server's own client received (the router's connections to shards):
/// flagBits, then the kind-0 body; a checksum, if flagged, is not verified.
pub(crate) fn decode_reply(message: &[u8]) -> Result<Document, WireError> {
    if read_i32(message, 12) != Some(OP_MSG) {
        return Err(WireError::Malformed("reply is not an OP_MSG"));
    }
    if message.get(HEADER_LEN + 4) != Some(&0) {
        return Err(WireError::Malformed(
            "reply does not start with a body section",
        ));
    }
    match read_document(message, HEADER_LEN + 5, message.len()) {
        Ok((doc, _)) => Ok(doc),
        Err(DocError::Truncated) => Err(WireError::Malformed("truncated reply body")),
        Err(DocError::Invalid(e)) => Err(WireError::Fatal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    enum Section<'a> {
        Body(&'a Document),
        Seq(&'a str, &'a [Document]),
        Raw(&'a [u8]),
    }

    fn message(flags: u32, sections: &[Section<'_>], checksum: bool) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN];
        let flags = if checksum {
            flags | CHECKSUM_PRESENT
        } else {
            flags
        };
        buf.extend_from_slice(&flags.to_le_bytes());
        for s in sections {
            match s {
                Section::Body(d) => {
                    buf.push(0);
                    d.to_writer(&mut buf).unwrap();
                }
                Section::Seq(ident, docs) => {
                    buf.push(1);
                    let mut payload = Vec::new();
                    payload.extend_from_slice(ident.as_bytes());
                    payload.push(0);
                    for d in *docs {
                        d.to_writer(&mut payload).unwrap();
                    }
                    buf.extend_from_slice(&((payload.len() + 4) as i32).to_le_bytes());
                    buf.extend_from_slice(&payload);
                }
                Section::Raw(bytes) => buf.extend_from_slice(bytes),
            }
        }
        if checksum {
            buf.extend_from_slice(&[0; 4]);
        }
        let n = buf.len();
        super::super::write_header(&mut buf, 7, 0, OP_MSG);
        if checksum {
            let crc = crc32c::crc32c(&buf[..n - 4]);
            buf[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        buf
    }

    fn request(m: &[u8]) -> Result<Command, CommandError> {
        match parse(m) {
            Ok(Incoming::Msg { command, .. }) => command,
            other => panic!("{other:?}"),
        }
    }

    fn code(m: &[u8]) -> i32 {
        request(m).unwrap_err().code
    }

    fn fatal(m: &[u8]) -> i32 {
        match parse(m) {
            Err(WireError::Fatal(e)) => e.code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sequences_merge_into_the_body_in_any_order() {
        let body = doc! {"insert": "c", "$db": "test"};
        let docs = [doc! {"_id": 1}, doc! {"_id": 2}];
        let m = message(
            0,
            &[Section::Seq("documents", &docs), Section::Body(&body)],
            false,
        );
        let req = request(&m).unwrap();
        assert_eq!(req.name, "insert");
        assert_eq!(req.db, "test");
        assert_eq!(
            req.body,
            doc! {"insert": "c", "$db": "test", "documents": [{"_id": 1}, {"_id": 2}]}
        );
        // An empty sequence is an empty array.
        let m = message(
            0,
            &[Section::Body(&body), Section::Seq("documents", &[])],
            false,
        );
        assert_eq!(
            request(&m)
                .unwrap()
                .body
                .get_array("documents")
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn checksum_is_verified() {
        let body = doc! {"ping": 1, "$db": "admin"};
        let m = message(0, &[Section::Body(&body)], true);
        assert_eq!(request(&m).unwrap().name, "ping");
        let mut bad = m.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert_eq!(fatal(&bad), 288);
    }

    #[test]
    fn more_to_come_and_optional_flags() {
        let body = doc! {"ping": 1, "$db": "admin"};
        let m = message(MORE_TO_COME | (1 << 16), &[Section::Body(&body)], false);
        assert!(matches!(
            parse(&m),
            Ok(Incoming::Msg {
                more_to_come: true,
                ..
            })
        ));
        let m = message(1 << 5, &[Section::Body(&body)], false);
        assert_eq!(fatal(&m), 223);
    }

    #[test]
    fn server_parse_errors() {
        let body = doc! {"insert": "c", "$db": "test"};
        let one = [doc! {"_id": 1}];
        assert_eq!(
            code(&message(
                0,
                &[Section::Body(&body), Section::Body(&body)],
                false
            )),
            40430
        );
        assert_eq!(
            code(&message(
                0,
                &[
                    Section::Body(&body),
                    Section::Seq("a", &one),
                    Section::Seq("a", &one)
                ],
                false
            )),
            40431
        );
        assert_eq!(
            fatal(&message(
                0,
                &[
                    Section::Body(&body),
                    Section::Seq("a", &one),
                    Section::Seq("b", &one),
                    Section::Seq("c", &one)
                ],
                false
            )),
            233
        );
        assert_eq!(
            code(&message(
                0,
                &[Section::Body(&body), Section::Raw(&[2, 0, 0])],
                false
            )),
            40432
        );
        assert_eq!(code(&message(0, &[Section::Seq("a", &one)], false)), 40587);
        assert_eq!(
            code(&message(
                0,
                &[Section::Body(&body), Section::Seq("insert", &one)],
                false
            )),
            40433
        );
        let no_db = doc! {"ping": 1};
        let e = request(&message(0, &[Section::Body(&no_db)], false)).unwrap_err();
        assert_eq!(e.code, 40571);
        assert_eq!(e.errmsg, "OP_MSG requests require a $db argument");
        let bad_db = doc! {"ping": 1, "$db": 1};
        assert_eq!(code(&message(0, &[Section::Body(&bad_db)], false)), 14);
    }

    #[test]
    fn broken_framing_closes() {
        let body = doc! {"ping": 1, "$db": "admin"};
        let m = message(0, &[Section::Body(&body)], false);
        // Cut the body short but fix up the header length: the section runs past the end.
        let mut cut = m[..m.len() - 3].to_vec();
        let n = cut.len() as i32;
        cut[..4].copy_from_slice(&n.to_le_bytes());
        assert!(matches!(parse(&cut), Err(WireError::Malformed(_))));
        // Sequence size larger than the message.
        let m = message(
            0,
            &[Section::Body(&body), Section::Raw(&[1, 0xff, 0, 0, 0])],
            false,
        );
        assert!(matches!(parse(&m), Err(WireError::Malformed(_))));
        // Invalid BSON inside a correctly framed body is answered (22), not fatal.
        let mut raw = Vec::new();
        body.to_writer(&mut raw).unwrap();
        raw[4] = 0x42; // unknown element type
        let mut section = vec![0u8];
        section.extend_from_slice(&raw);
        assert_eq!(code(&message(0, &[Section::Raw(&section)], false)), 22);
    }

    #[test]
    fn exhaustive_truncation_and_corruption_never_panics() {
        let body = doc! {"find": "c", "filter": {"a": {"$gt": [1, "x"]}}, "$db": "test"};
        let docs = [doc! {"_id": 1, "s": "abc"}];
        let m = message(
            0,
            &[Section::Body(&body), Section::Seq("documents", &docs)],
            true,
        );
        for cut in HEADER_LEN..m.len() {
            let mut v = m[..cut].to_vec();
            let n = v.len() as i32;
            v[..4].copy_from_slice(&n.to_le_bytes());
            let _ = parse(&v);
        }
        let m = message(
            0,
            &[Section::Body(&body), Section::Seq("documents", &docs)],
            false,
        );
        for i in HEADER_LEN..m.len() {
            for b in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                let mut v = m.clone();
                v[i] = b;
                let _ = parse(&v);
            }
        }
    }
}
