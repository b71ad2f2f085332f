//! `hello` / `isMaster` / `ismaster` (reference §2.1–2.6).

use bson::{doc, Bson, DateTime, Document};

use super::reply::{election_id, op_time, ts_date, SET_VERSION};
use super::{Ctx, Request};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::limits::{MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE, MAX_WRITE_BATCH_SIZE};

/// `logicalSessionTimeoutMinutes` (reference §2.2).
pub(crate) const SESSION_TIMEOUT_MINUTES: i32 = 30;

/// Handles the three spellings. `hello` answers `isWritablePrimary`, the legacy names
/// `ismaster` (reference §2.2).
pub(crate) async fn hello(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let legacy = req.name != "hello";
    let body = &req.body;
    record_client_metadata(ctx, body)?;
    check_awaitable_args(body)?;

    let mut reply = Document::new();
    // SRV replication_info.cpp `CmdHello::run`: echoed whenever the request carries a bool.
    if let Some(Bson::Boolean(_)) = body.get("helloOk") {
        ctx.conn.hello_ok = true;
        reply.insert("helloOk", true);
    }
    // topologyVersion is deliberately omitted (reference §2.6): with it, the Rust driver switches
    // its monitor to streaming/awaitable hello, which a server must then hold open for
    // maxAwaitTimeMS. Without it the driver polls every heartbeatFrequencyMS (10 s), which is
    // what a 4.2 server looks like and needs no long-lived waits here.
    let primary_flag = if legacy {
        "ismaster"
    } else {
        "isWritablePrimary"
    };
    let shared = ctx.shared.clone();
    if let Some(set_name) = &shared.opts.repl_set {
        insert_repl_set_fields(ctx, &mut reply, set_name, primary_flag);
    } else {
        reply.insert(primary_flag, true);
    }
    reply.insert("maxBsonObjectSize", MAX_BSON_OBJECT_SIZE as i32);
    reply.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE as i32);
    reply.insert("maxWriteBatchSize", MAX_WRITE_BATCH_SIZE);
    reply.insert("localTime", DateTime::now());
    reply.insert("logicalSessionTimeoutMinutes", SESSION_TIMEOUT_MINUTES);
    reply.insert(
        "connectionId",
        i32::try_from(ctx.conn.id).map_or(Bson::Int64(ctx.conn.id), Bson::Int32),
    );
    reply.insert("minWireVersion", 0);
    reply.insert("maxWireVersion", shared.opts.version.max_wire_version());
    reply.insert("readOnly", false);
    if shared.opts.cluster_role == crate::ClusterRole::ConfigServer {
        // SRV replication_info.cpp: a config server member says so (what addShard checks).
        reply.insert("configsvr", 2);
    }
    // No `compression`: nothing is negotiated, so clients never send OP_COMPRESSED (§1.5).
    Ok(reply)
}

/// Client metadata may only come with the first hello of a connection (SRV
/// replication_info.cpp, ClientMetadata::setFromMetadata); it names the application.
pub(crate) fn record_client_metadata(ctx: &mut Ctx<'_>, body: &Document) -> CmdResult<()> {
    let Some(client) = body.get("client") else {
        return Ok(());
    };
    let Bson::Document(client) = client else {
        return Err(super::wrong_type("client", client, "object"));
    };
    if ctx.conn.client_metadata.is_some() {
        return Err(CommandError::from_code(
            ErrorCode::ClientMetadataCannotBeMutated,
            "The client metadata document may only be sent in the first hello",
        ));
    }
    ctx.conn.app_name = client
        .get_document("application")
        .ok()
        .and_then(|a| a.get_str("name").ok())
        .map(str::to_string);
    ctx.conn.client_metadata = Some(client.clone());
    Ok(())
}

/// Awaitable hello arguments must come as a pair (SRV replication_info.cpp). This server
/// never advertises a topologyVersion, so a well-behaved client never sends them; a
/// request that does is answered at once (its processId cannot be ours).
pub(crate) fn check_awaitable_args(body: &Document) -> CmdResult<()> {
    let (tv, wait) = match (body.get("topologyVersion"), body.get("maxAwaitTimeMS")) {
        (Some(_), None) => {
            return Err(CommandError::from_code(
                ErrorCode::TopologyVersionMaxAwaitMismatch,
                "A request with a 'topologyVersion' must include 'maxAwaitTimeMS'",
            ))
        }
        (None, Some(_)) => {
            return Err(CommandError::from_code(
                ErrorCode::TopologyVersionMaxAwaitMismatch,
                "A request with 'maxAwaitTimeMS' must include a 'topologyVersion'",
            ))
        }
        (Some(tv), Some(wait)) => (tv, wait),
        (None, None) => return Ok(()),
    };
    let wait = match wait {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        Bson::Double(d) => *d as i64,
        other => return Err(super::wrong_type("maxAwaitTimeMS", other, "long")),
    };
    if wait < 0 {
        return Err(CommandError::from_code(
            ErrorCode::MaxAwaitTimeMsNegative,
            "maxAwaitTimeMS must be a non-negative integer",
        ));
    }
    if let Bson::Document(tv) = tv {
        if tv.get_i64("counter").is_ok_and(|c| c < 0) {
            return Err(CommandError::from_code(
                ErrorCode::TopologyVersionNegativeCounter,
                "topologyVersion must have a non-negative counter",
            ));
        }
    }
    Ok(())
}

/// The replica-set fields of a primary of set `set_name`: hosts/me/primary are the address
/// the client connected to, so SDAM keeps its seed (reference §2.5).
fn insert_repl_set_fields(ctx: &Ctx<'_>, reply: &mut Document, set_name: &str, primary_flag: &str) {
    let me = ctx.conn.local.to_string();
    let last = ctx.shared.engine.lock().last_applied();
    reply.insert("hosts", vec![Bson::String(me.clone())]);
    reply.insert("setName", set_name);
    reply.insert("setVersion", SET_VERSION);
    reply.insert(primary_flag, true);
    reply.insert("secondary", false);
    reply.insert("primary", me.clone());
    reply.insert("me", me);
    reply.insert("electionId", election_id());
    reply.insert(
        "lastWrite",
        doc! {
            "opTime": op_time(last),
            "lastWriteDate": ts_date(last),
            "majorityOpTime": op_time(last),
            "majorityWriteDate": ts_date(last),
        },
    );
}
