//! The router's client: commands to shards and the config server over the wire protocol
//! (OP_MSG), so a shard in another process is reached exactly like one in this process.
//!
//! One `Remote` per server address keeps a small pool of idle connections. A reply with
//! `ok: 0` is returned as a `CommandError` carrying the shard's code, codeName, errmsg,
//! labels and extra fields, so the router can pass it through unchanged (SRV
//! `src/mongo/s/commands/strategy.cpp` relays shard errors as its own reply).

use std::sync::atomic::{AtomicI32, Ordering};

use bson::{Bson, Document};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::{CmdResult, CommandError, ErrorCode};
use crate::wire;

/// Idle connections kept per server.
const MAX_IDLE: usize = 16;

/// One server the router talks to.
#[derive(Debug)]
pub(crate) struct Remote {
    addr: String,
    idle: parking_lot::Mutex<Vec<TcpStream>>,
}

fn next_request_id() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff
}

/// A network failure as mongos reports it (SRV `network_interface_tl.cpp`: "Error connecting
/// to <host> :: caused by :: <reason>", code 6 HostUnreachable).
fn unreachable(addr: &str, e: impl std::fmt::Display) -> CommandError {
    CommandError::from_code(
        ErrorCode::HostUnreachable,
        format!("Error connecting to {addr} :: caused by :: {e}"),
    )
}

impl Remote {
    /// A client for the server at `addr` (`host:port`); connects lazily.
    pub(crate) fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// `host:port`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `body` to database `db` and returns the reply body whatever its `ok` (transport
    /// failures are 6 HostUnreachable).
    pub(crate) async fn run_raw(&self, db: &str, mut body: Document) -> CmdResult<Document> {
        body.insert("$db", db);
        let mut bytes = Vec::new();
        body.to_writer(&mut bytes)
            .map_err(|e| CommandError::from_code(ErrorCode::InternalError, e.to_string()))?;
        let message = wire::encode_op_msg(next_request_id(), 0, &bytes);
        let pooled = self.idle.lock().pop();
        let mut stream = match pooled {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| unreachable(&self.addr, e))?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        stream
            .write_all(&message)
            .await
            .map_err(|e| unreachable(&self.addr, e))?;
        let reply = match wire::read_message(&mut stream).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(unreachable(&self.addr, "connection closed by peer")),
            Err(e) => return Err(unreachable(&self.addr, e)),
        };
        let doc = wire::decode_reply(&reply).map_err(|e| unreachable(&self.addr, e))?;
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
        Ok(doc)
    }
}

/// `Ok(reply)` when `ok` is 1, else the error the reply describes.
pub(crate) fn check_ok(reply: Document) -> CmdResult<Document> {
    let ok = match reply.get("ok") {
        Some(Bson::Double(d)) => *d == 1.0,
        Some(Bson::Int32(i)) => *i == 1,
        Some(Bson::Int64(i)) => *i == 1,
        Some(Bson::Boolean(b)) => *b,
        _ => false,
    };
    if ok {
        return Ok(reply);
    }
    Err(error_of(&reply))
}

/// The `CommandError` an `ok: 0` reply carries (extra fields kept, cluster-time fields not).
pub(crate) fn error_of(reply: &Document) -> CommandError {
    let code = match reply.get("code") {
        Some(Bson::Int32(c)) => *c,
        Some(Bson::Int64(c)) => *c as i32,
        Some(Bson::Double(c)) => *c as i32,
        _ => ErrorCode::UnknownError.code(),
    };
    let errmsg = reply.get_str("errmsg").unwrap_or_default().to_string();
    let mut err = CommandError::from_number(code, errmsg);
    if let Ok(name) = reply.get_str("codeName") {
        err.code_name = name.to_string();
    }
    for (k, v) in reply {
        match k.as_str() {
            "ok" | "errmsg" | "code" | "codeName" | "$clusterTime" | "operationTime" => {}
            "errorLabels" => {
                if let Bson::Array(a) = v {
                    err.labels = a
                        .iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect();
                }
            }
            _ => {
                err.extra.insert(k.clone(), v.clone());
            }
        }
    }
    err
}
