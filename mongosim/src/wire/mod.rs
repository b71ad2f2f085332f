//! Framing (reference §1): the 16-byte header, OP_MSG (`op_msg.rs`), OP_QUERY/OP_REPLY
//! (`op_query.rs`), and a BSON validator that runs before any document is decoded
//! (`bson_check.rs`). Nothing here panics on client input: every malformed message becomes
//! either an error reply or a [`WireError`] that closes only its connection.

mod bson_check;
mod op_msg;
mod op_query;

use bson::Document;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{CommandError, ErrorCode};
use crate::limits::MAX_MESSAGE_SIZE;
use crate::ServerVersion;

pub(crate) use op_msg::{decode_reply, encode_op_msg};
pub(crate) use op_query::{encode_op_reply, REPLY_QUERY_FAILURE};

/// Header length: messageLength, requestID, responseTo, opCode (all little-endian Int32).
pub(crate) const HEADER_LEN: usize = 16;

/// Opcodes (reference §1.1; legacy values from SRV `src/mongo/rpc/message.h`).
pub(crate) const OP_REPLY: i32 = 1;
const OP_UPDATE: i32 = 2001;
const OP_INSERT: i32 = 2002;
pub(crate) const OP_QUERY: i32 = 2004;
const OP_GET_MORE: i32 = 2005;
const OP_DELETE: i32 = 2006;
const OP_KILL_CURSORS: i32 = 2007;
pub(crate) const OP_MSG: i32 = 2013;

/// Why a message cannot be answered: the connection is closed.
#[derive(Debug)]
pub(crate) enum WireError {
    /// Socket error or EOF in the middle of a message.
    Io(std::io::Error),
    /// Header length outside `16..=maxMessageSizeBytes` (SRV transport layer closes the
    /// session: "recv(): message msgLen … is invalid").
    BadLength(i64),
    /// Structurally broken message (truncated section, sizes that do not add up).
    Malformed(&'static str),
    /// A connection-fatal parse error (`ErrorCodes::isConnectionFatalMessageParseError`:
    /// 223 IllegalOpMsgFlag, 233 TooManyDocumentSequences, 288 ChecksumMismatch).
    Fatal(CommandError),
    /// Opcode the server does not accept (SRV `isSupportedRequestNetworkOp`).
    UnsupportedOpcode(i32),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "i/o: {e}"),
            WireError::BadLength(n) => write!(
                f,
                "message length {n} is invalid. Min {HEADER_LEN} Max: {MAX_MESSAGE_SIZE}"
            ),
            WireError::Malformed(what) => write!(f, "malformed message: {what}"),
            WireError::Fatal(e) => write!(f, "{e}"),
            WireError::UnsupportedOpcode(op) => write!(f, "Message type {op} is not supported."),
        }
    }
}

/// A parsed request.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// OP_MSG: the command, or a non-fatal parse error to answer with.
    Msg {
        /// `moreToCome` was set: send no reply.
        more_to_come: bool,
        command: Result<Command, CommandError>,
    },
    /// OP_QUERY on `<db>.$cmd`: answered with an OP_REPLY holding the command reply.
    QueryCommand {
        command: Result<Command, CommandError>,
    },
    /// Legacy op the server refuses with an OP_REPLY `{$err, code, ok: 0}` (QueryFailure).
    QueryFailure { error: Document },
    /// Fire-and-forget legacy write (OP_INSERT/UPDATE/DELETE/KILL_CURSORS): no reply.
    Ignored,
}

/// One parsed command: the kind-0 body with every kind-1 document sequence merged in as an
/// array field (reference §1.2). The server turns it into the commands' request.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    /// First key of the body (SPEC-OPMSG: "The command name MUST continue to be the first key").
    pub(crate) name: String,
    /// The `$db` argument (it stays in the body too).
    pub(crate) db: String,
    /// The whole body.
    pub(crate) body: Document,
}

/// Reads one whole message (header included). `Ok(None)`: the peer closed cleanly between
/// messages.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader
            .read(&mut header[filled..])
            .await
            .map_err(WireError::Io)?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(WireError::Malformed("truncated header"))
            };
        }
        filled += n;
    }
    let len = i32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if len < HEADER_LEN as i32 || len as i64 > MAX_MESSAGE_SIZE as i64 {
        return Err(WireError::BadLength(len.into()));
    }
    let len = len as usize;
    let mut message = Vec::with_capacity(len);
    message.extend_from_slice(&header);
    message.resize(len, 0);
    reader
        .read_exact(&mut message[HEADER_LEN..])
        .await
        .map_err(WireError::Io)?;
    Ok(Some(message))
}

/// `requestID` of a framed message (0 if it is too short, which `read_message` prevents).
pub(crate) fn request_id(message: &[u8]) -> i32 {
    read_i32(message, 4).unwrap_or(0)
}

/// Validates one BSON document occupying exactly `bytes` (`bson_check`).
pub(crate) fn validate_bson(bytes: &[u8]) -> Result<(), CommandError> {
    bson_check::validate(bytes)
}

/// The opcode of a framed message (0 when the header is short).
pub(crate) fn op_code(message: &[u8]) -> i32 {
    read_i32(message, 12).unwrap_or(0)
}

/// Parses a framed message by opcode.
pub(crate) fn parse(message: &[u8], version: ServerVersion) -> Result<Incoming, WireError> {
    let op_code = read_i32(message, 12).ok_or(WireError::Malformed("short header"))?;
    match op_code {
        OP_MSG => op_msg::parse(message),
        OP_QUERY => op_query::parse(message, version),
        // SRV service_entry_point_common.cpp (5.1+): legacy ops answered or ignored.
        OP_GET_MORE => Ok(Incoming::QueryFailure {
            error: op_query::unsupported_legacy_op("OP_GET_MORE is no longer supported"),
        }),
        OP_INSERT | OP_UPDATE | OP_DELETE | OP_KILL_CURSORS => Ok(Incoming::Ignored),
        other => Err(WireError::UnsupportedOpcode(other)),
    }
}

/// Little-endian Int32 at `at`, if the slice is long enough.
pub(crate) fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The NUL-terminated string at `at` and the offset after its NUL.
pub(crate) fn read_cstring(bytes: &[u8], at: usize) -> Option<(&str, usize)> {
    let rest = bytes.get(at..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&rest[..nul]).ok()?;
    Some((s, at + nul + 1))
}

/// Decodes one BSON document that starts at `at` and must end by `end`: validates it first
/// (structure, UTF-8 keys, nesting depth) so decoding can neither recurse without bound nor
/// misread. Returns the document and the offset after it.
pub(crate) fn read_document(
    bytes: &[u8],
    at: usize,
    end: usize,
) -> Result<(Document, usize), DocError> {
    let len = read_i32(bytes, at).ok_or(DocError::Truncated)?;
    if len < 5 {
        return Err(DocError::Truncated);
    }
    let doc_end = at
        .checked_add(len as usize)
        .filter(|&e| e <= end && e <= bytes.len())
        .ok_or(DocError::Truncated)?;
    let raw = &bytes[at..doc_end];
    bson_check::validate(raw).map_err(DocError::Invalid)?;
    let doc = Document::from_reader(raw).map_err(|e| {
        DocError::Invalid(CommandError::from_code(
            ErrorCode::InvalidBSON,
            format!("invalid BSON: {e}"),
        ))
    })?;
    Ok((doc, doc_end))
}

/// A document that could not be read.
#[derive(Debug)]
pub(crate) enum DocError {
    /// Its length runs past its container: the framing is broken.
    Truncated,
    /// It is framed correctly but not valid BSON (answered with an error reply).
    Invalid(CommandError),
}

/// Writes the 16-byte header into the first bytes of `buf` (which holds the whole message).
pub(crate) fn write_header(buf: &mut [u8], request_id: i32, response_to: i32, op_code: i32) {
    let len = buf.len() as i32;
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&request_id.to_le_bytes());
    buf[8..12].copy_from_slice(&response_to.to_le_bytes());
    buf[12..16].copy_from_slice(&op_code.to_le_bytes());
}
