//! Administrative and connection-level commands: `ping`, `buildInfo`,
//! `getParameter`, `getCmdLineOpts`, `replSetGetStatus`, `hostInfo`, `whatsmyuri`,
//! `connectionStatus`, `serverStatus` (reference §7.7, §7.9).

use bson::{doc, Bson, DateTime, Document};

use super::reply::{election_id, op_time, ts_date, SET_VERSION, TERM};
use super::{Ctx, Request};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::limits::MAX_BSON_OBJECT_SIZE;
use crate::ServerVersion;

/// `adminOnly()` commands refuse other databases (SRV `commands.cpp`
/// `CommandHelpers::uassertCommandRunWithMajority`… / `Command::adminOnly`): 13 Unauthorized.
fn require_admin(req: &Request) -> CmdResult<()> {
    if req.db == "admin" {
        Ok(())
    } else {
        Err(CommandError::from_code(
            ErrorCode::Unauthorized,
            format!("{} may only be run against the admin database.", req.name),
        ))
    }
}

/// `ping` -> `{ok: 1}` (reference §7.9).
pub(crate) async fn ping(_ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    Ok(Document::new())
}

/// `buildInfo` (reference §7.9; field order of a 7.0 `db.runCommand({buildInfo: 1})`).
pub(crate) async fn build_info(ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    let version = ctx.shared.opts.version;
    let version_string = version.version_string();
    let version_array: Vec<Bson> = version_string
        .split('.')
        .map(|p| Bson::Int32(p.parse().unwrap_or(0)))
        .chain(std::iter::once(Bson::Int32(0)))
        .collect();
    let openssl_version = match version {
        ServerVersion::V4_4 => "OpenSSL 1.1.1f  31 Mar 2020",
        _ => "OpenSSL 3.0.2 15 Mar 2022",
    };
    Ok(doc! {
        "version": version_string,
        // Not a real commit: the simulator has no build of its own to point at.
        "gitVersion": "0000000000000000000000000000000000000000",
        "openssl": { "running": openssl_version, "compiled": openssl_version },
        "modules": [],
        "allocator": "tcmalloc",
        "javascriptEngine": "mozjs",
        "sysInfo": "deprecated",
        "versionArray": version_array,
        "buildEnvironment": {
            "distmod": "ubuntu2204",
            "distarch": "x86_64",
            "target_arch": "x86_64",
            "target_os": "linux",
        },
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE as i32,
        "storageEngines": ["devnull", "wiredTiger"],
    })
}

/// The parameters `getParameter` knows (name -> value for this server).
fn parameters(ctx: &Ctx<'_>) -> Document {
    let fcv = match ctx.shared.opts.version {
        ServerVersion::V4_4 => "4.4",
        _ => "7.0",
    };
    doc! {
        "featureCompatibilityVersion": { "version": fcv },
        "enableTestCommands": ctx.shared.opts.enable_test_commands,
        "transactionLifetimeLimitSeconds":
            ctx.shared.opts.transaction_lifetime_limit.as_secs().max(1) as i32,
        "maxBSONDepth": 200,
        "logLevel": 0,
        "cursorTimeoutMillis": 600_000i64,
        "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
    }
}

/// `getParameter` (admin only): `{getParameter: 1, <name>: 1}` or `{getParameter: "*"}`.
pub(crate) async fn get_parameter(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let all = parameters(ctx);
    if matches!(req.target(), Some(Bson::String(s)) if s == "*") {
        return Ok(all);
    }
    let mut reply = Document::new();
    for (key, _) in req.body.iter().skip(1) {
        if key.starts_with('$') || super::GENERIC_ARGS.contains(&key.as_str()) {
            continue;
        }
        if let Some(v) = all.get(key) {
            reply.insert(key.clone(), v.clone());
        }
    }
    if reply.is_empty() {
        // SRV src/mongo/db/commands/parameters.cpp
        return Err(CommandError::from_code(
            ErrorCode::InvalidOptions,
            "no option found to get",
        ));
    }
    Ok(reply)
}

/// `getCmdLineOpts` (admin only): the argv/parsed options of an equivalent `mongod`.
pub(crate) async fn get_cmd_line_opts(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let port = i32::from(ctx.conn.local.port());
    let mut argv = vec![
        Bson::from("mongod"),
        Bson::from("--bind_ip"),
        Bson::from("127.0.0.1"),
        Bson::from("--port"),
        Bson::from(port.to_string()),
    ];
    let mut parsed = doc! { "net": { "bindIp": "127.0.0.1", "port": port } };
    if let Some(rs) = &ctx.shared.opts.repl_set {
        argv.push(Bson::from("--replSet"));
        argv.push(Bson::from(rs.clone()));
        let size_mb = (ctx.shared.opts.oplog_size_bytes / (1024 * 1024)) as f64;
        argv.push(Bson::from("--oplogSize"));
        argv.push(Bson::from(size_mb.to_string()));
        parsed.insert(
            "replication",
            doc! { "oplogSizeMB": size_mb, "replSet": rs.clone() },
        );
    }
    Ok(doc! { "argv": argv, "parsed": parsed })
}

/// `replSetGetStatus` (admin only) of a single-node set (reference §7.7); 76 when standalone.
pub(crate) async fn repl_set_get_status(ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    require_admin(&req)?;
    let shared = ctx.shared.clone();
    let Some(set) = &shared.opts.repl_set else {
        return Err(CommandError::from_code(
            ErrorCode::NoReplicationEnabled,
            "not running with --replSet",
        ));
    };
    let last = shared.engine.lock().last_applied();
    let now = DateTime::now();
    let started_ms = shared
        .started_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let election_ts = bson::Timestamp {
        time: (started_ms / 1000) as u32,
        increment: 1,
    };
    let uptime = shared.started.elapsed().as_secs() as i64;
    let optime = op_time(last);
    let wall = ts_date(last);
    Ok(doc! {
        "set": set.clone(),
        "date": now,
        "myState": 1,
        "term": TERM,
        "syncSourceHost": "",
        "syncSourceId": -1,
        "heartbeatIntervalMillis": 2000i64,
        "majorityVoteCount": 1,
        "writeMajorityCount": 1,
        "votingMembersCount": 1,
        "writableVotingMembersCount": 1,
        "optimes": {
            "lastCommittedOpTime": optime.clone(),
            "lastCommittedWallTime": wall,
            "readConcernMajorityOpTime": optime.clone(),
            "readConcernMajorityWallTime": wall,
            "appliedOpTime": optime.clone(),
            "durableOpTime": optime.clone(),
            "lastAppliedWallTime": wall,
            "lastDurableWallTime": wall,
        },
        "lastStableRecoveryTimestamp": last,
        "members": [{
            "_id": 0,
            "name": ctx.conn.local.to_string(),
            "health": 1.0,
            "state": 1,
            "stateStr": "PRIMARY",
            "uptime": uptime as i32,
            "optime": optime,
            "optimeDate": wall,
            "lastAppliedWallTime": wall,
            "lastDurableWallTime": wall,
            "syncSourceHost": "",
            "syncSourceId": -1,
            "infoMessage": "",
            "electionTime": election_ts,
            "electionDate": DateTime::from_millis(started_ms),
            "configVersion": SET_VERSION,
            "configTerm": TERM as i32,
            "self": true,
            "lastHeartbeatMessage": "",
        }],
    })
}

/// `hostInfo`: the machine as far as std can tell.
pub(crate) async fn host_info(_ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    Ok(doc! {
        "system": {
            "currentTime": DateTime::now(),
            "hostname": hostname,
            "cpuAddrSize": 64,
            "numCores": cores,
            "cpuArch": std::env::consts::ARCH,
            "numaEnabled": false,
        },
        "os": { "type": if cfg!(target_os = "linux") { "Linux" } else { std::env::consts::OS } },
        "extra": {},
    })
}

/// `whatsmyuri`: the client's address as the server sees it.
pub(crate) async fn whatsmyuri(ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    Ok(doc! { "you": ctx.conn.peer.to_string() })
}

/// `connectionStatus`: no authentication, so no users or roles.
pub(crate) async fn connection_status(_ctx: &mut Ctx<'_>, req: Request) -> CmdResult<Document> {
    let mut auth = doc! { "authenticatedUsers": [], "authenticatedUserRoles": [] };
    if req.body.get_bool("showPrivileges").unwrap_or(false) {
        auth.insert("authenticatedUserPrivileges", Bson::Array(Vec::new()));
    }
    Ok(doc! { "authInfo": auth })
}

/// `serverStatus`: identity, uptime, connections and (replica set) the `repl` section.
pub(crate) async fn server_status(ctx: &mut Ctx<'_>, _req: Request) -> CmdResult<Document> {
    let shared = ctx.shared.clone();
    let uptime = shared.started.elapsed();
    let stats = &shared.stats;
    let mut reply = doc! {
        "host": ctx.conn.local.to_string(),
        "version": shared.opts.version.version_string(),
        "process": "mongod",
        "pid": i64::from(std::process::id()),
        "uptime": uptime.as_secs() as f64,
        "uptimeMillis": uptime.as_millis() as i64,
        "uptimeEstimate": uptime.as_secs() as i64,
        "localTime": DateTime::now(),
        "connections": {
            "current": stats.open_connections() as i32,
            "available": 838_860 - stats.open_connections() as i32,
            "totalCreated": stats.connection_count() as i64,
        },
    };
    if let Some(set) = &shared.opts.repl_set {
        let me = ctx.conn.local.to_string();
        reply.insert(
            "repl",
            doc! {
                "hosts": [me.clone()],
                "setName": set.clone(),
                "setVersion": SET_VERSION,
                "isWritablePrimary": true,
                "secondary": false,
                "primary": me.clone(),
                "me": me,
                "electionId": election_id(),
            },
        );
    }
    Ok(reply)
}
