//! Wire protocol over raw sockets (reference §1, §8): OP_MSG framing and flags, OP_QUERY /
//! OP_REPLY for the legacy handshake, the errors a server answers with, and malformed input
//! that must close only its own connection.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bson::{doc, Bson, Document};
use mongosim::{MongoSim, Options, ServerVersion};

const OP_REPLY: i32 = 1;
const OP_QUERY: i32 = 2004;
const OP_MSG: i32 = 2013;

fn connect(sim: &MongoSim) -> TcpStream {
    let s = TcpStream::connect(sim.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn frame(request_id: i32, op_code: i32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(&((16 + payload.len()) as i32).to_le_bytes());
    m.extend_from_slice(&request_id.to_le_bytes());
    m.extend_from_slice(&0i32.to_le_bytes());
    m.extend_from_slice(&op_code.to_le_bytes());
    m.extend_from_slice(payload);
    m
}

fn bson_bytes(d: &Document) -> Vec<u8> {
    let mut v = Vec::new();
    d.to_writer(&mut v).unwrap();
    v
}

fn op_msg(request_id: i32, flags: u32, body: &Document) -> Vec<u8> {
    let mut p = flags.to_le_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(&bson_bytes(body));
    frame(request_id, OP_MSG, &p)
}

fn op_msg_with_checksum(request_id: i32, body: &Document) -> Vec<u8> {
    let mut p = 1u32.to_le_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(&bson_bytes(body));
    p.extend_from_slice(&[0; 4]);
    let mut m = frame(request_id, OP_MSG, &p);
    let n = m.len();
    let crc = crc32c::crc32c(&m[..n - 4]);
    m[n - 4..].copy_from_slice(&crc.to_le_bytes());
    m
}

fn op_query(request_id: i32, ns: &str, query: &Document) -> Vec<u8> {
    let mut p = 0i32.to_le_bytes().to_vec();
    p.extend_from_slice(ns.as_bytes());
    p.push(0);
    p.extend_from_slice(&0i32.to_le_bytes());
    p.extend_from_slice(&(-1i32).to_le_bytes());
    p.extend_from_slice(&bson_bytes(query));
    frame(request_id, OP_QUERY, &p)
}

struct Reply {
    response_to: i32,
    op_code: i32,
    payload: Vec<u8>,
}

fn read_reply(s: &mut TcpStream) -> Reply {
    let mut header = [0u8; 16];
    s.read_exact(&mut header).expect("reply header");
    let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len - 16];
    s.read_exact(&mut payload).expect("reply payload");
    Reply {
        response_to: i32::from_le_bytes(header[8..12].try_into().unwrap()),
        op_code: i32::from_le_bytes(header[12..16].try_into().unwrap()),
        payload,
    }
}

/// The body of an OP_MSG reply (flagBits 0, one kind-0 section).
fn msg_body(r: &Reply) -> Document {
    assert_eq!(r.op_code, OP_MSG);
    assert_eq!(&r.payload[..4], &[0, 0, 0, 0], "reply flagBits");
    assert_eq!(r.payload[4], 0, "kind-0 section");
    Document::from_reader(&r.payload[5..]).unwrap()
}

/// The flags and single document of an OP_REPLY.
fn reply_doc(r: &Reply) -> (i32, Document) {
    assert_eq!(r.op_code, OP_REPLY);
    let p = &r.payload;
    let flags = i32::from_le_bytes(p[0..4].try_into().unwrap());
    assert_eq!(
        i64::from_le_bytes(p[4..12].try_into().unwrap()),
        0,
        "cursorID"
    );
    assert_eq!(
        i32::from_le_bytes(p[12..16].try_into().unwrap()),
        0,
        "startingFrom"
    );
    assert_eq!(
        i32::from_le_bytes(p[16..20].try_into().unwrap()),
        1,
        "numberReturned"
    );
    (flags, Document::from_reader(&p[20..]).unwrap())
}

fn command(s: &mut TcpStream, id: i32, body: Document) -> Document {
    s.write_all(&op_msg(id, 0, &body)).unwrap();
    let r = read_reply(s);
    assert_eq!(r.response_to, id);
    msg_body(&r)
}

fn assert_error(reply: &Document, code: i32, code_name: &str) {
    assert_eq!(reply.get("ok"), Some(&Bson::Double(0.0)), "{reply}");
    assert_eq!(reply.get("code"), Some(&Bson::Int32(code)), "{reply}");
    assert_eq!(reply.get_str("codeName").unwrap(), code_name, "{reply}");
}

/// The server closed this connection (EOF or reset) without replying.
fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected close, got {n} bytes"),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) => {}
        Err(e) => panic!("expected close, got {e}"),
    }
}

/// A fresh connection still works.
fn assert_serving(sim: &MongoSim) {
    let mut s = connect(sim);
    let reply = command(&mut s, 99, doc! {"ping": 1, "$db": "admin"});
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn op_msg_reply_shape() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    let reply = command(&mut s, 41, doc! {"ping": 1, "$db": "admin"});
    let keys: Vec<&str> = reply.keys().map(String::as_str).collect();
    assert_eq!(keys, ["ok", "$clusterTime", "operationTime"]);
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn checksummed_requests_are_accepted() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    s.write_all(&op_msg_with_checksum(5, &doc! {"ping": 1, "$db": "admin"}))
        .unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.response_to, 5);
    assert_eq!(msg_body(&r).get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn more_to_come_requests_get_no_reply() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    s.write_all(&op_msg(1, 2, &doc! {"ping": 1, "$db": "admin"}))
        .unwrap();
    // Errors are dropped silently too (SPEC-OPMSG "moreToCome On Requests").
    s.write_all(&op_msg(2, 2, &doc! {"noSuchCommand": 1, "$db": "admin"}))
        .unwrap();
    let reply = command(&mut s, 3, doc! {"ping": 1, "$db": "admin"});
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn missing_db_is_40571() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    let reply = command(&mut s, 1, doc! {"ping": 1});
    assert_error(&reply, 40571, "Location40571");
    assert_eq!(
        reply.get_str("errmsg").unwrap(),
        "OP_MSG requests require a $db argument"
    );
    // Error replies of a replica-set member still carry the cluster time (reference §2.7).
    assert!(reply.get_document("$clusterTime").is_ok());
    assert!(reply.get_timestamp("operationTime").is_ok());
    // The connection stays usable.
    let reply = command(&mut s, 2, doc! {"ping": 1, "$db": "admin"});
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn unknown_command_is_59() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    let reply = command(&mut s, 1, doc! {"frobnicate": 1, "$db": "test"});
    assert_error(&reply, 59, "CommandNotFound");
    assert_eq!(
        reply.get_str("errmsg").unwrap(),
        "no such command: 'frobnicate'"
    );
}

#[test]
fn command_lookup_comes_before_the_database_name_check() {
    // SRV service_entry_point_common.cpp: `findCommand` (59) runs in `receivedCommands`
    // before `ExecCommandDatabase` validates the database name (73).
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    let reply = command(&mut s, 1, doc! {"frobnicate": 1, "$db": "a.b"});
    assert_error(&reply, 59, "CommandNotFound");
    // A test command is unknown when test commands are off, whatever the database.
    let sim = MongoSim::start(Options::new().enable_test_commands(false)).unwrap();
    let mut s = connect(&sim);
    let reply = command(
        &mut s,
        1,
        doc! {"configureFailPoint": "failCommand", "mode": "off", "$db": "a b"},
    );
    assert_error(&reply, 59, "CommandNotFound");
    let reply = command(&mut s, 2, doc! {"ping": 1, "$db": "a b"});
    assert_error(&reply, 73, "InvalidNamespace");
}

#[test]
fn invalid_database_names_are_73_before_any_command_runs() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    for db in ["a.b", "", "a b", "a/b", "x\\y", &"d".repeat(64)] {
        let reply = command(&mut s, 1, doc! {"ping": 1, "$db": db});
        assert_error(&reply, 73, "InvalidNamespace");
        assert_eq!(
            reply.get_str("errmsg").unwrap(),
            format!("Invalid database name: '{db}'")
        );
    }
    // `$` is allowed at the entry point (`$external`), and 63 bytes is the longest name.
    for db in ["$external", &"d".repeat(63)] {
        let reply = command(&mut s, 2, doc! {"ping": 1, "$db": db});
        assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)), "{db}");
    }
}

#[test]
fn op_query_is_master_gets_an_op_reply() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    // What PyMongo 4.x sends first (reference §1.4).
    let hello = doc! {
        "isMaster": 1,
        "helloOk": true,
        "client": {"driver": {"name": "PyMongo", "version": "4.15.0"}, "os": {"type": "Linux"}},
        "compression": ["zstd"],
    };
    s.write_all(&op_query(17, "admin.$cmd", &hello)).unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.response_to, 17);
    let (flags, doc) = reply_doc(&r);
    assert_eq!(flags, 8, "AwaitCapable");
    assert!(doc.get_bool("helloOk").unwrap());
    assert!(doc.get_bool("ismaster").unwrap());
    assert_eq!(doc.get_str("setName").unwrap(), "rs0");
    assert_eq!(doc.get_i32("maxWireVersion").unwrap(), 21);
    assert!(!doc.contains_key("compression"), "nothing negotiated");
    assert_eq!(doc.get("ok"), Some(&Bson::Double(1.0)));

    // The connection then switches to OP_MSG.
    let reply = command(&mut s, 18, doc! {"ping": 1, "$db": "admin"});
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));

    // `$query`-wrapped legacy form on another database.
    let mut s = connect(&sim);
    let wrapped = doc! {"$query": {"ismaster": 1}, "$readPreference": {"mode": "primary"}};
    s.write_all(&op_query(19, "test.$cmd", &wrapped)).unwrap();
    let (_, doc) = reply_doc(&read_reply(&mut s));
    assert!(doc.get_bool("ismaster").unwrap());
}

#[test]
fn op_query_other_commands_are_refused_with_352_on_7_0() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    s.write_all(&op_query(3, "admin.$cmd", &doc! {"ping": 1}))
        .unwrap();
    let (flags, doc) = reply_doc(&read_reply(&mut s));
    assert_eq!(flags, 8);
    assert_error(&doc, 352, "UnsupportedOpQueryCommand");
    assert!(doc
        .get_str("errmsg")
        .unwrap()
        .starts_with("Unsupported OP_QUERY command: ping."));

    // buildInfo is on the allow-list.
    s.write_all(&op_query(4, "admin.$cmd", &doc! {"buildinfo": 1}))
        .unwrap();
    let (_, doc) = reply_doc(&read_reply(&mut s));
    assert_eq!(doc.get("ok"), Some(&Bson::Double(1.0)));

    // A non-command OP_QUERY is a query failure.
    s.write_all(&op_query(5, "test.coll", &doc! {})).unwrap();
    let (flags, doc) = reply_doc(&read_reply(&mut s));
    assert_eq!(flags, 2, "QueryFailure");
    assert_eq!(doc.get_i32("code").unwrap(), 5739101);
    assert!(doc
        .get_str("$err")
        .unwrap()
        .starts_with("OP_QUERY is no longer supported."));
}

#[test]
fn op_query_commands_run_on_4_4() {
    let sim = MongoSim::start(Options::new().version(ServerVersion::V4_4)).unwrap();
    let mut s = connect(&sim);
    s.write_all(&op_query(3, "admin.$cmd", &doc! {"ping": 1}))
        .unwrap();
    let (_, doc) = reply_doc(&read_reply(&mut s));
    assert_eq!(doc.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn legacy_fire_and_forget_ops_get_no_reply() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    let mut p = 0i32.to_le_bytes().to_vec();
    p.extend_from_slice(b"test.c\0");
    p.extend_from_slice(&bson_bytes(&doc! {"_id": 1}));
    s.write_all(&frame(1, 2002, &p)).unwrap(); // OP_INSERT
    let reply = command(&mut s, 2, doc! {"ping": 1, "$db": "admin"});
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn invalid_bson_and_too_deep_documents_are_answered() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    let mut body = bson_bytes(&doc! {"ping": 1, "$db": "admin"});
    body[4] = 0x42; // unknown element type
    let mut p = 0u32.to_le_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(&body);
    s.write_all(&frame(1, OP_MSG, &p)).unwrap();
    let reply = msg_body(&read_reply(&mut s));
    assert_error(&reply, 22, "InvalidBSON");

    let mut nested = doc! {"x": 1};
    for _ in 0..250 {
        nested = doc! {"x": nested};
    }
    let reply = command(&mut s, 2, doc! {"ping": 1, "deep": nested, "$db": "admin"});
    assert_error(&reply, 15, "Overflow");
    let reply = command(&mut s, 3, doc! {"ping": 1, "$db": "admin"});
    assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
}

#[test]
fn oversized_command_body_is_10334() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let mut s = connect(&sim);
    let big = "x".repeat(16 * 1024 * 1024 + 16 * 1024);
    let reply = command(&mut s, 1, doc! {"ping": 1, "pad": big, "$db": "admin"});
    assert_error(&reply, 10334, "BSONObjectTooLarge");
}

#[test]
fn malformed_messages_close_only_their_connection() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let c = mongodb::Client::with_uri_str(sim.uri()).await.unwrap();
        c.database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .unwrap();
        c
    });

    let ping = op_msg(1, 0, &doc! {"ping": 1, "$db": "admin"});
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("truncated header", ping[..10].to_vec()));
    let mut bogus = ping.clone();
    bogus[..4].copy_from_slice(&i32::MAX.to_le_bytes());
    cases.push(("length over maxMessageSizeBytes", bogus));
    let mut negative = ping.clone();
    negative[..4].copy_from_slice(&(-5i32).to_le_bytes());
    cases.push(("negative length", negative));
    let mut short = ping.clone();
    short[..4].copy_from_slice(&8i32.to_le_bytes());
    cases.push(("length below the header", short));
    cases.push(("truncated message body", ping[..ping.len() - 5].to_vec()));
    cases.push((
        "illegal required flag bit",
        op_msg(1, 1 << 4, &doc! {"ping": 1, "$db": "admin"}),
    ));
    let mut bad_crc = op_msg_with_checksum(1, &doc! {"ping": 1, "$db": "admin"});
    let n = bad_crc.len();
    bad_crc[n - 2] ^= 0x55;
    cases.push(("checksum mismatch", bad_crc));
    let mut garbage = frame(
        1,
        OP_MSG,
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x7f],
    );
    garbage.extend_from_slice(&[0xAB; 32]);
    let len = garbage.len() as i32;
    garbage[..4].copy_from_slice(&len.to_le_bytes());
    cases.push(("garbage OP_MSG", garbage));
    cases.push(("unknown opcode", frame(1, 9999, &[1, 2, 3, 4])));
    cases.push(("OP_COMPRESSED never negotiated", frame(1, 2012, &[0; 9])));

    for (name, bytes) in cases {
        let mut s = connect(&sim);
        s.write_all(&bytes).unwrap();
        // A truncated message is only detectable once the client stops sending (the server
        // may already have closed: then shutdown fails with NotConnected).
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) => {}
            other => panic!("{name}: expected close, got {other:?}"),
        }
        assert_serving(&sim);
    }

    // Closed without half-closing: the server must not wait for the rest.
    let mut s = connect(&sim);
    s.write_all(&op_msg(1, 1 << 3, &doc! {"ping": 1, "$db": "admin"}))
        .unwrap();
    assert_closed(&mut s);

    // The driver's own connections were never disturbed.
    rt.block_on(async {
        let reply = client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .unwrap();
        assert_eq!(reply.get("ok"), Some(&Bson::Double(1.0)));
    });
}

#[test]
fn fuzzed_messages_never_take_the_server_down() {
    let sim = MongoSim::start(Options::new()).unwrap();
    let valid = op_msg(
        1,
        0,
        &doc! {"insert": "c", "documents": [{"_id": 1, "a": [1, {"b": "x"}]}], "$db": "test"},
    );
    let query = op_query(1, "admin.$cmd", &doc! {"isMaster": 1, "helloOk": true});
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let base = if round % 2 == 0 { &valid } else { &query };
        let mut m = base.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let at = 16 + (next() as usize) % (m.len() - 16);
            m[at] = next() as u8;
        }
        if round % 7 == 0 {
            let cut = 16 + (next() as usize) % (m.len() - 16);
            m.truncate(cut);
            let len = m.len() as i32;
            m[..4].copy_from_slice(&len.to_le_bytes());
        }
        let mut s = connect(&sim);
        let _ = s.write_all(&m);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Either a reply or a close; drain until EOF.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    assert_serving(&sim);
}
