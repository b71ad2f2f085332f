//! Property test: mutated valid messages never crash the server.
//!
//! Valid `OP_MSG` and `OP_QUERY` messages (bodies holding every BSON element type, code with
//! scope included, document sequences, checksums, deep nesting) are mutated at random — bit
//! flips, byte overwrites, truncation, lying length fields at every level of the message and
//! of every BSON value, huge declared sizes — and each is sent on its own connection to a live
//! server, followed by a write shutdown. Every message must get well-formed replies or a
//! close, within a bound; no panic may happen anywhere in the process; and afterwards a fresh
//! connection still gets `ping` answered.
//!
//! `MONGOSIM_MUTATIONS` sets the number of mutated messages (default 5,000) and
//! `MONGOSIM_MUTATION_SEED` the seed (default: fixed, so a failure is reproducible).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use bson::{doc, spec::BinarySubtype, Binary, Bson, Document, JavaScriptCodeWithScope, Regex};
use mongosim::{MongoSim, Options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const OP_QUERY: i32 = 2004;
const OP_MSG: i32 = 2013;
const CHECKSUM_PRESENT: u32 = 1;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic in the process (caught or not), then reports it as usual.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn to_bytes(d: &Document) -> Vec<u8> {
    let mut v = Vec::new();
    d.to_writer(&mut v).expect("encodable");
    v
}

/// A body holding one value of every BSON element type.
fn every_type() -> Document {
    doc! {
        "double": 1.5, "string": "text", "doc": {"a": [1, {"b": null}]}, "array": [1, "x", []],
        "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
        "undefined": Bson::Undefined, "oid": bson::oid::ObjectId::new(), "bool": true,
        "date": bson::DateTime::from_millis(1_700_000_000_000), "null": Bson::Null,
        "regex": Regex { pattern: "^a.*".into(), options: "i".into() },
        "dbpointer": Bson::DbPointer(dbpointer()),
        "code": Bson::JavaScriptCode("function () {}".into()), "symbol": Bson::Symbol("s".into()),
        "cws": Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
            code: "function () { return x; }".into(), scope: doc! {"x": 1, "y": {"z": "w"}},
        }),
        "int": 42i32, "ts": bson::Timestamp { time: 5, increment: 6 }, "long": 7i64,
        "decimal": Bson::Decimal128(bson::Decimal128::from_bytes([1; 16])),
        "min": Bson::MinKey, "max": Bson::MaxKey,
    }
}

/// A DBPointer value: the bson crate has no public constructor, so decode one.
fn dbpointer() -> bson::DbPointer {
    let mut raw = vec![0u8; 4];
    raw.push(0x0C);
    raw.extend_from_slice(b"p\0");
    raw.extend_from_slice(&5i32.to_le_bytes());
    raw.extend_from_slice(b"db.c\0");
    raw.extend_from_slice(&[9u8; 12]);
    raw.push(0);
    let len = raw.len() as i32;
    raw[..4].copy_from_slice(&len.to_le_bytes());
    match Document::from_reader(raw.as_slice())
        .expect("valid dbpointer")
        .remove("p")
    {
        Some(Bson::DbPointer(p)) => p,
        other => panic!("not a dbpointer: {other:?}"),
    }
}

fn nested(depth: usize) -> Document {
    let mut d = doc! {"leaf": 1};
    for i in 0..depth {
        d = if i % 2 == 0 {
            doc! {"d": d}
        } else {
            doc! {"a": [Bson::Document(d)]}
        };
    }
    d
}

/// An OP_MSG: kind-0 body, then kind-1 sequences, optionally with a CRC-32C checksum.
fn op_msg(body: &Document, sequences: &[(&str, Vec<Document>)], checksum: bool) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m.extend_from_slice(&(if checksum { CHECKSUM_PRESENT } else { 0 }).to_le_bytes());
    m.push(0);
    m.extend_from_slice(&to_bytes(body));
    for (ident, docs) in sequences {
        m.push(1);
        let at = m.len();
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(ident.as_bytes());
        m.push(0);
        for d in docs {
            m.extend_from_slice(&to_bytes(d));
        }
        let size = (m.len() - at) as i32;
        m[at..at + 4].copy_from_slice(&size.to_le_bytes());
    }
    if checksum {
        m.extend_from_slice(&[0; 4]);
    }
    finish_header(&mut m, OP_MSG);
    if checksum {
        let n = m.len();
        let crc = crc32c::crc32c(&m[..n - 4]);
        m[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    m
}

/// A legacy OP_QUERY command on `<db>.$cmd`.
fn op_query(db: &str, query: &Document) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m.extend_from_slice(&0i32.to_le_bytes());
    m.extend_from_slice(format!("{db}.$cmd").as_bytes());
    m.push(0);
    m.extend_from_slice(&0i32.to_le_bytes());
    m.extend_from_slice(&(-1i32).to_le_bytes());
    m.extend_from_slice(&to_bytes(query));
    finish_header(&mut m, OP_QUERY);
    m
}

fn finish_header(m: &mut [u8], op_code: i32) {
    let len = m.len() as i32;
    m[..4].copy_from_slice(&len.to_le_bytes());
    m[4..8].copy_from_slice(&7i32.to_le_bytes());
    m[12..16].copy_from_slice(&op_code.to_le_bytes());
}

/// The valid messages that get mutated.
fn corpus() -> Vec<Vec<u8>> {
    let insert = doc! {"insert": "c", "documents": [every_type()], "$db": "fuzz"};
    let find = doc! {"find": "c", "filter": {"int": {"$gte": 1}, "cws": {"$exists": true}},
    "projection": {"doc": 1}, "$db": "fuzz"};
    let aggregate = doc! {"aggregate": "c", "pipeline": [
    {"$match": {"string": {"$regex": "^t"}}}, {"$project": {"x": {"$add": ["$int", 1]}}}],
    "cursor": {}, "$db": "fuzz"};
    let update = doc! {"update": "c", "$db": "fuzz"};
    let updates = vec![doc! {"q": {"int": 42}, "u": {"$set": {"nested": nested(20)}}}];
    vec![
        op_msg(&doc! {"ping": 1, "$db": "admin"}, &[], false),
        op_msg(&insert, &[], false),
        op_msg(&insert, &[], true),
        op_msg(&find, &[], false),
        op_msg(&aggregate, &[], true),
        op_msg(&update, &[("updates", updates)], false),
        op_msg(
            &doc! {"insert": "c", "$db": "fuzz"},
            &[("documents", vec![every_type(), doc! {"deep": nested(190)}])],
            false,
        ),
        op_msg(
            &doc! {"insert": "c", "documents": [nested(199)], "$db": "fuzz"},
            &[],
            false,
        ),
        op_query("admin", &doc! {"isMaster": 1, "helloOk": true}),
        op_query(
            "admin",
            &doc! {"$query": {"hello": 1}, "$readPreference": {"mode": "primary"}},
        ),
    ]
}

/// Offsets of every Int32 length field inside the BSON document at `at` (its own length, and
/// those of every nested document, array, string, binary and code-with-scope).
fn bson_lengths(b: &[u8], at: usize, out: &mut Vec<usize>) {
    let Some(len) = read_i32(b, at) else { return };
    out.push(at);
    let end = (at + len.max(0) as usize).min(b.len());
    let mut p = at + 4;
    while p < end {
        let t = b[p];
        if t == 0 {
            break;
        }
        let Some(nul) = b[p + 1..end].iter().position(|&x| x == 0) else {
            return;
        };
        p += 1 + nul + 1;
        let Some(next) = value_lengths(b, t, p, out) else {
            return;
        };
        p = next;
    }
}

/// Records the length fields of one value of type `t` at `p`; returns the offset after it.
fn value_lengths(b: &[u8], t: u8, p: usize, out: &mut Vec<usize>) -> Option<usize> {
    let i32_len = |at: usize| read_i32(b, at).filter(|n| *n >= 0).map(|n| n as usize);
    Some(match t {
        0x01 | 0x09 | 0x11 | 0x12 => p + 8,
        0x02 | 0x0D | 0x0E => {
            out.push(p);
            p + 4 + i32_len(p)?
        }
        0x03 | 0x04 => {
            bson_lengths(b, p, out);
            p + i32_len(p)?
        }
        0x05 => {
            out.push(p);
            p + 5 + i32_len(p)?
        }
        0x07 => p + 12,
        0x08 => p + 1,
        0x0B => {
            let a = p + b.get(p..)?.iter().position(|&x| x == 0)? + 1;
            a + b.get(a..)?.iter().position(|&x| x == 0)? + 1
        }
        0x0C => {
            out.push(p);
            p + 4 + i32_len(p)? + 12
        }
        0x0F => {
            out.push(p);
            out.push(p + 4);
            let s = p + 8 + i32_len(p + 4)?;
            bson_lengths(b, s, out);
            p + i32_len(p)?
        }
        0x10 => p + 4,
        0x13 => p + 16,
        _ => p,
    })
}

/// Offsets of every length field of a message: the header, OP_MSG section sizes and every
/// BSON length inside the sections (or the OP_QUERY query document). Tolerates any input (it
/// also walks messages mutated before).
fn length_fields(m: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    match read_i32(m, 12) {
        Some(OP_MSG) => {
            let mut p = 20;
            let end = m.len();
            while p < end {
                match m[p] {
                    0 => {
                        bson_lengths(m, p + 1, &mut out);
                        p += 1 + read_i32(m, p + 1).unwrap_or(0).max(1) as usize;
                    }
                    1 => {
                        out.push(p + 1);
                        let size = read_i32(m, p + 1).unwrap_or(0).max(1) as usize;
                        let ident = m.get(p + 5..).unwrap_or_default();
                        let ident_end = ident.iter().position(|&x| x == 0).unwrap_or(0);
                        let mut d = p + 5 + ident_end + 1;
                        while d < (p + 1 + size).min(end) {
                            bson_lengths(m, d, &mut out);
                            d += read_i32(m, d).unwrap_or(0).max(1) as usize;
                        }
                        p += 1 + size;
                    }
                    _ => break,
                }
            }
        }
        Some(OP_QUERY) => {
            let ns = m.get(20..).unwrap_or_default();
            let ns_end = ns.iter().position(|&x| x == 0).unwrap_or(0);
            bson_lengths(m, 20 + ns_end + 1 + 8, &mut out);
        }
        _ => {}
    }
    out
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Lengths a liar would write: off by one either way, zero, negative, tiny and huge.
fn lying_length(rng: &mut StdRng, honest: i32) -> i32 {
    match rng.random_range(0..9) {
        0 => honest.wrapping_add(1),
        1 => honest.wrapping_sub(1),
        2 => 0,
        3 => -1,
        4 => rng.random_range(1..16),
        5 => i32::MAX,
        6 => 48_000_001,
        7 => honest.wrapping_add(rng.random_range(2..64)),
        _ => honest.wrapping_sub(rng.random_range(2..64)),
    }
}

/// One random mutation of `m`.
fn mutate(rng: &mut StdRng, m: &[u8]) -> Vec<u8> {
    let mut v = m.to_vec();
    let rounds = if rng.random_bool(0.8) {
        1
    } else {
        rng.random_range(2..5)
    };
    for _ in 0..rounds {
        match rng.random_range(0..5) {
            0 => {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..v.len());
                v[i] = [0u8, 1, 0x7f, 0x80, 0xff, 0x0F, 0x03, 0x04][rng.random_range(0..8)];
            }
            2 => {
                let cut = rng.random_range(0..v.len());
                v.truncate(cut);
                if rng.random_bool(0.5) && v.len() >= 4 {
                    let n = v.len() as i32;
                    v[..4].copy_from_slice(&n.to_le_bytes());
                }
            }
            _ => {
                let fields = length_fields(&v);
                let at = fields[rng.random_range(0..fields.len())];
                if let Some(honest) = read_i32(&v, at) {
                    let lie = lying_length(rng, honest);
                    v[at..at + 4].copy_from_slice(&lie.to_le_bytes());
                }
            }
        }
        if v.is_empty() {
            break;
        }
    }
    v
}

/// What one connection did with one message.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The server closed the connection after `replies` well-formed replies.
    Closed { replies: usize },
}

/// Sends `m`, shuts the write half, and reads until the server closes. Each reply must be a
/// whole message whose body is valid BSON.
fn exchange(addr: std::net::SocketAddr, m: &[u8]) -> Result<Outcome, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close before reading everything: a failed write is a close.
    let _ = s.write_all(m);
    let _ = s.shutdown(Shutdown::Write);
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("no reply and no close: {e}")),
        }
        if Instant::now() > deadline {
            return Err("no close within 10 s".into());
        }
    }
    Ok(Outcome::Closed {
        replies: check_replies(&buf)?,
    })
}

/// Splits the bytes the server sent into replies and checks each one's frame and body.
fn check_replies(mut b: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    while !b.is_empty() {
        let len = read_i32(b, 0).ok_or("short reply header")? as usize;
        if len < 16 || len > b.len() {
            return Err(format!("reply cut short: {len} of {}", b.len()));
        }
        let (reply, rest) = b.split_at(len);
        let body = match read_i32(reply, 12) {
            Some(OP_MSG) => &reply[21..],
            Some(1) => &reply[36..],
            other => return Err(format!("reply opcode {other:?}")),
        };
        Document::from_reader(body).map_err(|e| format!("reply body: {e}"))?;
        b = rest;
        n += 1;
    }
    Ok(n)
}

fn ping(addr: std::net::SocketAddr) -> Document {
    let m = op_msg(&doc! {"ping": 1, "$db": "admin"}, &[], false);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&m).unwrap();
    let mut header = [0u8; 16];
    s.read_exact(&mut header).unwrap();
    let len = read_i32(&header, 0).unwrap() as usize;
    let mut rest = vec![0u8; len - 16];
    s.read_exact(&mut rest).unwrap();
    Document::from_reader(&rest[5..]).unwrap()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` on a thread with a large stack: the bson crate encodes and drops deeply nested
/// documents recursively, which a test thread's default stack does not hold in debug builds.
fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 * 1024 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

#[test]
fn mutated_messages_get_an_answer_or_a_close() {
    with_big_stack(mutated_messages);
}

fn mutated_messages() {
    count_panics();
    let sim = MongoSim::start(Options::new()).unwrap();
    let addr = sim.addr();
    let count = env_number("MONGOSIM_MUTATIONS", 5_000);
    let seed = env_number("MONGOSIM_MUTATION_SEED", 0x6d6f_6e67_6f73_696d);
    let mut rng = StdRng::seed_from_u64(seed);
    let corpus = corpus();
    // Every unmutated message is answered (a reply, then the close).
    for m in &corpus {
        assert_eq!(exchange(addr, m), Ok(Outcome::Closed { replies: 1 }));
    }
    let mut answered = 0;
    for i in 0..count {
        let m = mutate(&mut rng, &corpus[i as usize % corpus.len()]);
        match exchange(addr, &m) {
            Ok(Outcome::Closed { replies }) => answered += usize::from(replies > 0),
            Err(e) => panic!("mutated message {i} (seed {seed}): {e}\n{m:02x?}"),
        }
        if i % 500 == 499 {
            assert_eq!(ping(addr).get_f64("ok"), Ok(1.0), "after {i} messages");
        }
    }
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a panic happened (see stderr)"
    );
    assert_eq!(ping(addr).get_f64("ok"), Ok(1.0));
    // Most mutations leave a parseable frame: the server must be answering, not just closing.
    assert!(
        answered > count as usize / 10,
        "only {answered} of {count} answered"
    );
    eprintln!("wire_mutation: {count} mutated messages, {answered} answered, seed {seed}");
}

#[test]
fn the_code_with_scope_that_used_to_panic_gets_invalid_bson() {
    count_panics();
    let sim = MongoSim::start(Options::new()).unwrap();
    let cws = Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
        code: "function () { return 1; }".into(),
        scope: doc! {"k": 1},
    });
    let mut m = op_msg(
        &doc! {"insert": "c", "documents": [{"c": cws}], "$db": "t"},
        &[],
        false,
    );
    // Declare a code-with-scope total smaller than the string inside it.
    let fields = length_fields(&m);
    let at = fields
        .windows(2)
        .find(|w| w[1] == w[0] + 4 && m[w[0] - 3] == 0x0F)
        .map(|w| w[0])
        .expect("a code-with-scope in the message");
    m[at..at + 4].copy_from_slice(&10i32.to_le_bytes());
    let mut s = TcpStream::connect(sim.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&m).unwrap();
    let mut header = [0u8; 16];
    s.read_exact(&mut header).unwrap();
    let mut rest = vec![0u8; read_i32(&header, 0).unwrap() as usize - 16];
    s.read_exact(&mut rest).unwrap();
    let reply = Document::from_reader(&rest[5..]).unwrap();
    assert_eq!(reply.get_f64("ok"), Ok(0.0), "{reply}");
    assert_eq!(reply.get_i32("code"), Ok(22), "{reply}");
    assert_eq!(reply.get_str("codeName"), Ok("InvalidBSON"), "{reply}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
