//! OP_QUERY / OP_REPLY (reference §1.4): the legacy handshake PyMongo 4.x and older tools use.

use bson::{doc, Bson, Document};

use super::{read_cstring, read_document, DocError, Incoming, WireError};
use super::{HEADER_LEN, OP_REPLY};
use crate::error::CommandError;
use crate::error::ErrorCode;
use crate::ServerVersion;

/// OP_REPLY responseFlags: QueryFailure.
pub(crate) const REPLY_QUERY_FAILURE: i32 = 2;
/// OP_REPLY responseFlags: AwaitCapable, set on every successful reply (SRV
/// `QueryResult::setResultFlagsToOk`).
const REPLY_AWAIT_CAPABLE: i32 = 8;

/// Parses an OP_QUERY: `flags | fullCollectionName | numberToSkip | numberToReturn | query
/// [| returnFieldsSelector]`.
pub(super) fn parse(message: &[u8], version: ServerVersion) -> Result<Incoming, WireError> {
    let end = message.len();
    let pos = HEADER_LEN + 4; // flags: none of them matter for commands
    if end < pos {
        return Err(WireError::Malformed("truncated OP_QUERY"));
    }
    let (ns, pos) =
        read_cstring(message, pos).ok_or(WireError::Malformed("OP_QUERY collection name"))?;
    let ns = ns.to_string();
    let pos = pos + 8; // numberToSkip, numberToReturn
    let query = match read_document(message, pos, end) {
        Ok((doc, _)) => doc,
        Err(DocError::Truncated) => return Err(WireError::Malformed("OP_QUERY query")),
        Err(DocError::Invalid(e)) => {
            return Ok(Incoming::QueryCommand { command: Err(e) });
        }
    };
    let Some(db) = ns.strip_suffix(".$cmd") else {
        // SRV service_entry_point_common.cpp (5.1+): non-command OP_QUERY is refused.
        return Ok(Incoming::QueryFailure {
            error: unsupported_legacy_op("OP_QUERY is no longer supported"),
        });
    };
    Ok(Incoming::QueryCommand {
        command: upconvert(db, query, version),
    })
}

/// Turns a legacy command into an OP_MSG-style request (SRV `rpc::opMsgRequestFromAnyProtocol`):
/// unwraps `$query`/`query`, keeps `$readPreference`, adds `$db`, and applies the 5.1+
/// allow-list (SRV `check_allowed_op_query_cmd.cpp`); 4.4 still runs any command over OP_QUERY.
fn upconvert(
    db: &str,
    query: Document,
    version: ServerVersion,
) -> Result<super::Command, CommandError> {
    let mut body = match query.iter().next() {
        Some((k, Bson::Document(inner))) if k == "$query" || k == "query" => {
            let mut body = inner.clone();
            if let Some(rp) = query.get("$readPreference") {
                body.insert("$readPreference", rp.clone());
            }
            body
        }
        _ => query,
    };
    body.insert("$db", db);
    let request = super::op_msg::into_command(body)?;
    if version != ServerVersion::V4_4 {
        const ALLOWED: [&str; 9] = [
            "hello",
            "isMaster",
            "ismaster",
            "_isSelf",
            "authenticate",
            "buildinfo",
            "buildInfo",
            "saslContinue",
            "saslStart",
        ];
        if !ALLOWED.contains(&request.name.as_str()) {
            return Err(CommandError::from_code(
                ErrorCode::UnsupportedOpQueryCommand,
                format!(
                    "Unsupported OP_QUERY command: {}. The client driver may require an upgrade. \
                     For more details see https://dochub.mongodb.org/core/legacy-opcode-removal",
                    request.name
                ),
            ));
        }
    }
    Ok(request)
}

/// The `$err` document of a refused legacy op (SRV `dbmessage.cpp`
/// `makeErrorResponseToUnsupportedOpQuery`).
pub(crate) fn unsupported_legacy_op(what: &str) -> Document {
    doc! {
        "$err": format!(
            "{what}. The client driver may require an upgrade. For more details see \
             https://dochub.mongodb.org/core/legacy-opcode-removal"
        ),
        "code": ErrorCode::LegacyOpcodeRemoved.code(),
        "ok": 0.0,
    }
}

/// Encodes an OP_REPLY with one encoded document: `responseFlags | cursorID 0 |
/// startingFrom 0 | numberReturned 1 | doc`. `flags` 0 means a normal command reply
/// (AwaitCapable is added).
pub(crate) fn encode_op_reply(
    request_id: i32,
    response_to: i32,
    flags: i32,
    body: &[u8],
) -> Vec<u8> {
    let flags = if flags == 0 {
        REPLY_AWAIT_CAPABLE
    } else {
        flags
    };
    let mut buf = Vec::with_capacity(HEADER_LEN + 20 + body.len());
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(&flags.to_le_bytes());
    buf.extend_from_slice(&0i64.to_le_bytes());
    buf.extend_from_slice(&0i32.to_le_bytes());
    buf.extend_from_slice(&1i32.to_le_bytes());
    buf.extend_from_slice(body);
    super::write_header(&mut buf, request_id, response_to, OP_REPLY);
    buf
}
