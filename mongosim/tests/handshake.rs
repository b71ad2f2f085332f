//! Handshake and topology: the official Rust driver discovers the simulator as a replica-set
//! primary (reference §2), standalone mode looks like a standalone, the driver's monitor does
//! not spin (§2.6), and the `mongosim` binary starts, serves and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bson::{doc, spec::ElementType, Bson, Document};
use mongodb::Client;
use mongosim::{MongoSim, Options, ServerVersion};

async fn client(sim: &MongoSim) -> Client {
    Client::with_uri_str(sim.uri()).await.expect("client")
}

async fn admin(client: &Client, cmd: Document) -> Document {
    client
        .database("admin")
        .run_command(cmd)
        .await
        .expect("command")
}

#[tokio::test]
async fn discovery_with_replica_set_uri_then_ping_and_build_info() {
    let sim = MongoSim::start(Options::new()).unwrap();
    assert_eq!(
        sim.uri(),
        format!("mongodb://127.0.0.1:{}/?replicaSet=rs0", sim.port())
    );
    let client = client(&sim).await;
    let ping = admin(&client, doc! {"ping": 1}).await;
    assert_eq!(ping.get("ok"), Some(&Bson::Double(1.0)));

    let info = admin(&client, doc! {"buildInfo": 1}).await;
    assert_eq!(info.get_str("version").unwrap(), "7.0.14");
    let array: Vec<i32> = info
        .get_array("versionArray")
        .unwrap()
        .iter()
        .map(|v| v.as_i32().unwrap())
        .collect();
    assert_eq!(array, vec![7, 0, 14, 0]);
    assert_eq!(info.get_i32("maxBsonObjectSize").unwrap(), 16 * 1024 * 1024);

    // The driver only selects a server for a primary read once SDAM classified it as
    // RSPrimary of set rs0; a session-using operation also needs logicalSessionTimeoutMinutes.
    let mut session = client.start_session().await.unwrap();
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .session(&mut session)
        .await
        .unwrap();
    assert!(session.cluster_time().is_some(), "$clusterTime gossiped");
}

#[tokio::test]
async fn direct_connection_and_a_localhost_seed_also_work() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let direct = Client::with_uri_str(format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        sim.port()
    ))
    .await
    .unwrap();
    admin(&direct, doc! {"ping": 1}).await;
    // SDAM replaces the seed with the `hosts` entry (127.0.0.1:<port>), which is reachable.
    let seeded = Client::with_uri_str(format!(
        "mongodb://localhost:{}/?replicaSet=rs0&serverSelectionTimeoutMS=5000",
        sim.port()
    ))
    .await
    .unwrap();
    admin(&seeded, doc! {"ping": 1}).await;
}

#[tokio::test]
async fn hello_reply_of_a_primary_has_the_real_fields_and_types() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let client = client(&sim).await;
    let me = format!("127.0.0.1:{}", sim.port());

    let hello = admin(&client, doc! {"hello": 1, "helloOk": true}).await;
    let keys: Vec<&str> = hello.keys().map(String::as_str).collect();
    assert_eq!(keys[0], "helloOk", "helloOk comes first: {keys:?}");
    assert!(hello.get_bool("helloOk").unwrap());
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    assert!(!hello.contains_key("ismaster"));
    assert!(!hello.get_bool("secondary").unwrap());
    assert_eq!(hello.get_str("setName").unwrap(), "rs0");
    assert_eq!(hello.get_i32("setVersion").unwrap(), 1);
    assert_eq!(
        hello.get_array("hosts").unwrap(),
        &vec![Bson::String(me.clone())]
    );
    assert_eq!(hello.get_str("primary").unwrap(), me);
    assert_eq!(hello.get_str("me").unwrap(), me);
    assert_eq!(
        hello.get_object_id("electionId").unwrap().to_hex(),
        "7fffffff0000000000000001"
    );
    let last_write = hello.get_document("lastWrite").unwrap();
    let op_time = last_write.get_document("opTime").unwrap();
    assert_eq!(op_time.get("t"), Some(&Bson::Int64(1)));
    assert!(op_time.get_timestamp("ts").is_ok());
    assert!(last_write.get_datetime("lastWriteDate").is_ok());
    assert!(last_write.get_document("majorityOpTime").is_ok());
    assert!(last_write.get_datetime("majorityWriteDate").is_ok());
    assert_eq!(hello.get_i32("maxBsonObjectSize").unwrap(), 16_777_216);
    assert_eq!(hello.get_i32("maxMessageSizeBytes").unwrap(), 48_000_000);
    assert_eq!(hello.get_i32("maxWriteBatchSize").unwrap(), 100_000);
    assert!(hello.get_datetime("localTime").is_ok());
    assert_eq!(hello.get_i32("logicalSessionTimeoutMinutes").unwrap(), 30);
    assert_eq!(
        hello.get("connectionId").map(Bson::element_type),
        Some(ElementType::Int32)
    );
    assert_eq!(hello.get_i32("minWireVersion").unwrap(), 0);
    assert_eq!(hello.get_i32("maxWireVersion").unwrap(), 21);
    assert!(!hello.get_bool("readOnly").unwrap());
    assert!(
        !hello.contains_key("topologyVersion"),
        "deliberately omitted"
    );
    assert!(!hello.contains_key("compression"));
    assert_eq!(hello.get("ok"), Some(&Bson::Double(1.0)));
    let cluster_time = hello.get_document("$clusterTime").unwrap();
    assert!(cluster_time.get_timestamp("clusterTime").is_ok());
    let signature = cluster_time.get_document("signature").unwrap();
    assert_eq!(
        signature.get_binary_generic("hash").unwrap(),
        &vec![0u8; 20]
    );
    assert_eq!(signature.get("keyId"), Some(&Bson::Int64(0)));
    assert!(hello.get_timestamp("operationTime").is_ok());

    // Legacy spellings answer `ismaster`, and `helloOk` only when asked.
    for name in ["isMaster", "ismaster"] {
        let reply = admin(&client, doc! {name: 1}).await;
        assert!(reply.get_bool("ismaster").unwrap(), "{name}");
        assert!(!reply.contains_key("isWritablePrimary"), "{name}");
        assert!(!reply.contains_key("helloOk"), "{name}");
    }
}

#[tokio::test]
async fn hello_validates_awaitable_arguments_and_client_metadata() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let client = client(&sim).await;
    let db = client.database("admin");
    let err = db
        .run_command(doc! {"hello": 1, "maxAwaitTimeMS": 10i64})
        .await
        .unwrap_err();
    assert!(matches!(*err.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 31368));
    // The driver's pooled connection already sent its metadata in the handshake.
    let err = db
        .run_command(doc! {"hello": 1, "client": {"driver": {"name": "x", "version": "1"}}})
        .await
        .unwrap_err();
    assert!(matches!(*err.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 186));
}

#[tokio::test]
async fn version_4_4_reports_wire_version_9() {
    let sim = MongoSim::start(Options::new().version(ServerVersion::V4_4)).unwrap();
    let client = client(&sim).await;
    let hello = admin(&client, doc! {"hello": 1}).await;
    assert_eq!(hello.get_i32("maxWireVersion").unwrap(), 9);
    let info = admin(&client, doc! {"buildInfo": 1}).await;
    assert!(info.get_str("version").unwrap().starts_with("4.4."));
    let fcv = admin(
        &client,
        doc! {"getParameter": 1, "featureCompatibilityVersion": 1},
    )
    .await;
    assert_eq!(
        fcv.get_document("featureCompatibilityVersion")
            .unwrap()
            .get_str("version")
            .unwrap(),
        "4.4"
    );
}

#[tokio::test]
async fn standalone_has_no_set_name_and_no_cluster_time() {
    let sim = MongoSim::start(Options::new().standalone()).unwrap();
    assert_eq!(sim.uri(), format!("mongodb://127.0.0.1:{}/", sim.port()));
    let client = client(&sim).await;
    let hello = admin(&client, doc! {"hello": 1}).await;
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    for absent in [
        "setName",
        "hosts",
        "me",
        "primary",
        "electionId",
        "lastWrite",
        "$clusterTime",
        "operationTime",
    ] {
        assert!(!hello.contains_key(absent), "{absent} in {hello}");
    }
    assert_eq!(hello.get_i32("logicalSessionTimeoutMinutes").unwrap(), 30);
    let err = client
        .database("admin")
        .run_command(doc! {"replSetGetStatus": 1})
        .await
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => {
            assert_eq!(c.code, 76);
            assert_eq!(c.code_name, "NoReplicationEnabled");
        }
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn repl_set_get_status_and_admin_commands() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let client = client(&sim).await;
    let status = admin(&client, doc! {"replSetGetStatus": 1}).await;
    assert_eq!(status.get_str("set").unwrap(), "rs0");
    assert_eq!(status.get_i32("myState").unwrap(), 1);
    assert_eq!(status.get("term"), Some(&Bson::Int64(1)));
    let optimes = status.get_document("optimes").unwrap();
    assert_eq!(
        optimes.get_document("lastCommittedOpTime").unwrap(),
        optimes.get_document("appliedOpTime").unwrap()
    );
    let members = status.get_array("members").unwrap();
    assert_eq!(members.len(), 1);
    let member = members[0].as_document().unwrap();
    assert_eq!(member.get_str("stateStr").unwrap(), "PRIMARY");
    assert_eq!(
        member.get_str("name").unwrap(),
        format!("127.0.0.1:{}", sim.port())
    );
    assert!(member.get_bool("self").unwrap());

    // adminOnly commands refuse other databases.
    let err = client
        .database("test")
        .run_command(doc! {"replSetGetStatus": 1})
        .await
        .unwrap_err();
    assert!(matches!(*err.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 13));

    let opts = admin(&client, doc! {"getCmdLineOpts": 1}).await;
    assert_eq!(
        opts.get_document("parsed")
            .unwrap()
            .get_document("replication")
            .unwrap()
            .get_str("replSet")
            .unwrap(),
        "rs0"
    );
    let err = client
        .database("admin")
        .run_command(doc! {"getParameter": 1, "noSuchParameter": 1})
        .await
        .unwrap_err();
    assert!(matches!(*err.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 72));
    let me = admin(&client, doc! {"whatsmyuri": 1}).await;
    assert!(me.get_str("you").unwrap().starts_with("127.0.0.1:"));
    let status = admin(&client, doc! {"connectionStatus": 1}).await;
    assert!(status
        .get_document("authInfo")
        .unwrap()
        .get_array("authenticatedUsers")
        .unwrap()
        .is_empty());
    let server = admin(&client, doc! {"serverStatus": 1}).await;
    assert_eq!(server.get_str("process").unwrap(), "mongod");
    assert!(
        server
            .get_document("connections")
            .unwrap()
            .get_i32("current")
            .unwrap()
            >= 1
    );
    let host = admin(&client, doc! {"hostInfo": 1}).await;
    assert!(
        host.get_document("system")
            .unwrap()
            .get_i32("numCores")
            .unwrap()
            >= 1
    );
    let ended = admin(&client, doc! {"endSessions": [{"id": bson::Uuid::new()}]}).await;
    assert_eq!(ended.get("ok"), Some(&Bson::Double(1.0)));
}

#[tokio::test]
async fn unknown_command_is_59_with_the_real_message() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let client = client(&sim).await;
    let err = client
        .database("test")
        .run_command(doc! {"noSuchCommand": 1})
        .await
        .unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => {
            assert_eq!(c.code, 59);
            assert_eq!(c.code_name, "CommandNotFound");
            assert_eq!(c.message, "no such command: 'noSuchCommand'");
        }
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn generic_arguments_are_accepted() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let client = client(&sim).await;
    let reply = admin(
        &client,
        doc! {
            "ping": 1,
            "lsid": {"id": bson::Uuid::new()},
            "readConcern": {"level": "majority"},
            "writeConcern": {"w": "majority"},
            "maxTimeMS": 1000,
            "comment": "hi",
            "$readPreference": {"mode": "primaryPreferred"},
            "apiVersion": "1",
        },
    )
    .await;
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
    let err = client
        .database("admin")
        .run_command(doc! {"ping": 1, "readConcern": "majority"})
        .await
        .unwrap_err();
    assert!(matches!(*err.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 14));
    for (bad, msg) in [
        (Bson::Int32(-1), "maxTimeMS is out of range"),
        (Bson::Double(1.5), "maxTimeMS has non-integral value"),
        (Bson::String("1".into()), "maxTimeMS must be a number"),
    ] {
        let err = client
            .database("admin")
            .run_command(doc! {"ping": 1, "maxTimeMS": bad})
            .await
            .unwrap_err();
        match *err.kind {
            mongodb::error::ErrorKind::Command(ref c) => {
                assert_eq!((c.code, c.message.as_str()), (2, msg));
            }
            ref other => panic!("{other:?}"),
        }
    }
}

/// Idle servers write `{msg: "periodic noop"}` every `noop_interval` (reference §4.9), which
/// moves the last applied optime that hello's `lastWrite` and `operationTime` report.
#[tokio::test]
async fn periodic_noop_advances_the_last_write_when_idle() {
    let sim = MongoSim::start(Options::new().noop_interval(Duration::from_millis(200))).unwrap();
    let client = client(&sim).await;
    let last_write = |hello: &Document| {
        hello
            .get_document("lastWrite")
            .unwrap()
            .get_document("opTime")
            .unwrap()
            .get_timestamp("ts")
            .unwrap()
    };
    let first = last_write(&admin(&client, doc! {"hello": 1}).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hello = admin(&client, doc! {"hello": 1}).await;
    let second = last_write(&hello);
    assert!(
        (second.time, second.increment) > (first.time, first.increment),
        "{first:?} -> {second:?}"
    );
    let operation_time = hello.get_timestamp("operationTime").unwrap();
    assert!((operation_time.time, operation_time.increment) >= (second.time, second.increment));
}

/// The monitor must poll (no topologyVersion => no awaitable hello), not spin: count the
/// hellos the server sees over ~3 s while the client is idle.
#[tokio::test]
async fn driver_monitor_does_not_spin() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let client = client(&sim).await;
    admin(&client, doc! {"ping": 1}).await;
    let before = sim.stats().hello_count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = sim.stats().hello_count() - before;
    // Polling at heartbeatFrequencyMS (10 s) gives ~0–2; a spinning monitor gives thousands.
    assert!(during < 20, "{during} hellos in 3 s");
    admin(&client, doc! {"ping": 1}).await;
}

#[test]
fn embedded_server_works_from_sync_code_and_stops_on_drop() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let addr = sim.addr();
    assert!(addr.ip().is_loopback());
    std::net::TcpStream::connect(addr).expect("accepting");
    drop(sim);
    // After drop the port no longer accepts connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(_) => break,
            Ok(_) if Instant::now() > deadline => panic!("still accepting after drop"),
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn binary_prints_one_line_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mongosim"))
        .args(["--port", "0", "--noop-interval-secs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim_end()
        .strip_prefix("mongosim listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::with_uri_str(format!("mongodb://127.0.0.1:{port}/?replicaSet=rs0"))
            .await
            .unwrap();
        let hello = admin(&client, doc! {"hello": 1}).await;
        assert_eq!(hello.get_str("setName").unwrap(), "rs0");
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mongosim did not exit on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    // Exactly one line on stdout.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "");
}

#[test]
fn binary_usage_errors_exit_with_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_mongosim"))
        .args(["--server-version", "5.0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--server-version"), "{err}");
    assert!(err.contains("Usage: mongosim"), "{err}");
}
