//! `hello` / `isMaster` / `ismaster` and `isdbgrid` on a router.
//!
//! SRV `src/mongo/s/commands/cluster_hello_cmd.cpp` (`CmdHello::runWithReplyBuilder`) and
//! `src/mongo/s/mongos_hello_response.cpp` (reference sharded-clusters.md §1.1): the primary
//! flag, `msg: "isdbgrid"`, then the limits; never `setName`, `hosts`, `primary`, `me`,
//! `secondary`, `setVersion`, `electionId` or `lastWrite`, so every driver classifies the
//! server as a Mongos and the topology as Sharded. `topologyVersion` is left out as on this
//! simulator's mongods (no awaitable hello; the driver polls).

use bson::{doc, Bson, DateTime, Document};

use crate::commands::hello::{
    check_awaitable_args, record_client_metadata, SESSION_TIMEOUT_MINUTES,
};
use crate::commands::{Ctx, Request};
use crate::error::CmdResult;
use crate::limits::{MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE, MAX_WRITE_BATCH_SIZE};

/// The router's handshake reply.
pub(crate) async fn hello(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let body = &req.body;
    record_client_metadata(ctx, body)?;
    check_awaitable_args(body)?;
    let mut reply = Document::new();
    if let Some(Bson::Boolean(_)) = body.get("helloOk") {
        ctx.conn.hello_ok = true;
        reply.insert("helloOk", true);
    }
    let primary_flag = if req.name == "hello" {
        "isWritablePrimary"
    } else {
        "ismaster"
    };
    reply.insert(primary_flag, true);
    reply.insert("msg", "isdbgrid");
    reply.insert("maxBsonObjectSize", MAX_BSON_OBJECT_SIZE as i32);
    reply.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE as i32);
    reply.insert("maxWriteBatchSize", MAX_WRITE_BATCH_SIZE);
    reply.insert("localTime", DateTime::now());
    reply.insert("logicalSessionTimeoutMinutes", SESSION_TIMEOUT_MINUTES);
    reply.insert(
        "connectionId",
        i32::try_from(ctx.conn.id).map_or(Bson::Int64(ctx.conn.id), Bson::Int32),
    );
    reply.insert("maxWireVersion", ctx.shared.opts.version.max_wire_version());
    reply.insert("minWireVersion", 0);
    Ok(reply)
}

/// `isdbgrid` (SRV `cluster_is_db_grid_cmd.cpp`): `{isdbgrid: 1, hostname}`.
pub(crate) async fn isdbgrid(ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    Ok(doc! {"isdbgrid": 1, "hostname": ctx.conn.local.to_string()})
}
