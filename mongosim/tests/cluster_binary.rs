//! The binary in cluster mode: `mongosim --port 0 --shards N --routers M` prints one line per
//! router and nothing else; `mongosim --port 0 --shardsvr --repl-set NAME` starts a shard that
//! a router in another process takes with `addShard: "NAME/127.0.0.1:<port>"`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use mongodb::Client;

/// A spawned binary, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the binary and reads `lines` "listening" lines; returns the ports.
fn spawn(args: &[&str], lines: usize) -> (Proc, Vec<u16>, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mongosim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ports = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port: u16 = line
            .trim_end()
            .strip_prefix("mongosim listening on 127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .parse()
            .unwrap();
        ports.push(port);
    }
    (Proc(child), ports, stdout)
}

fn stop(mut p: Proc, mut stdout: BufReader<std::process::ChildStdout>) {
    let status = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = p.0.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "nothing else on stdout");
}

#[test]
fn cluster_binary_prints_one_line_per_router_and_takes_a_shard_from_another_process() {
    let (cluster, routers, cluster_out) =
        spawn(&["--port", "0", "--shards", "2", "--routers", "2"], 2);
    assert_ne!(routers[0], routers[1]);
    let (shard, shard_ports, shard_out) =
        spawn(&["--port", "0", "--shardsvr", "--repl-set", "extra"], 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let uri = format!(
            "mongodb://127.0.0.1:{},127.0.0.1:{}/",
            routers[0], routers[1]
        );
        let c = Client::with_uri_str(&uri).await.unwrap();
        let admin = c.database("admin");
        let hello = admin.run_command(doc! {"hello": 1}).await.unwrap();
        assert_eq!(hello.get_str("msg"), Ok("isdbgrid"));
        let added = admin
            .run_command(doc! {"addShard": format!("extra/127.0.0.1:{}", shard_ports[0])})
            .await
            .unwrap();
        assert_eq!(added.get_str("shardAdded"), Ok("extra"));
        let shards = admin.run_command(doc! {"listShards": 1}).await.unwrap();
        assert_eq!(shards.get_array("shards").unwrap().len(), 3);
        // A database whose primary is the new shard stores its data in the other process.
        admin
            .run_command(doc! {"enableSharding": "far", "primaryShard": "extra"})
            .await
            .unwrap();
        c.database("far")
            .collection::<Document>("c")
            .insert_one(doc! {"x": 1})
            .await
            .unwrap();
        let direct = Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{}/?replicaSet=extra",
            shard_ports[0]
        ))
        .await
        .unwrap();
        let n = direct
            .database("far")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(n, 1);
        // A connection string naming another set is refused (SRV _validateHostAsShard).
        let err = admin
            .run_command(doc! {"addShard": format!("wrong/127.0.0.1:{}", shard_ports[0])})
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("does not match the actual set name"),
            "{err}"
        );
    });
    stop(shard, shard_out);
    stop(cluster, cluster_out);
}
