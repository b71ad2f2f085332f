//! The `mongosim` binary: a simulated MongoDB replica set, shard or sharded cluster on
//! 127.0.0.1.
//!
//! ```text
//! mongosim --port <P> [--repl-set rs0] [--server-version 7.0|4.4] [--oplog-size-mb N]
//!          [--standalone] [--noop-interval-secs N]
//! mongosim --port <P> --shards N [--routers M] ...   # a sharded cluster
//! mongosim --port <P> --shardsvr --repl-set NAME ...  # a shard for addShard: "NAME/host:port"
//! ```
//! Prints one stdout line per listening endpoint clients use, `mongosim listening on
//! 127.0.0.1:<port>` (a cluster: one per router, first router first), once it accepts
//! connections, and nothing else; stops cleanly on SIGINT/SIGTERM. Usage errors exit with
//! status 2.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use mongosim::{Cluster, ClusterOptions, MongoSim, Options, ServerVersion};

/// A simulated MongoDB replica set on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "mongosim", version, about)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 27017)]
    port: u16,
    /// Replica set name.
    #[arg(long, alias = "replSet", value_name = "NAME", default_value = "rs0",
          value_parser = parse_repl_set, conflicts_with = "standalone")]
    repl_set: String,
    /// Imitated release: 7.0 or 4.4.
    #[arg(long, value_name = "V", default_value = "7.0", value_parser = parse_version)]
    server_version: ServerVersion,
    /// Capped size of local.oplog.rs in MiB (1-1048576).
    #[arg(long, alias = "oplogSize", value_name = "N", default_value_t = 192,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024))]
    oplog_size_mb: u64,
    /// No replica set: no oplog, no setName.
    #[arg(long)]
    standalone: bool,
    /// Idle periodic no-op interval in seconds (0 < N <= 86400).
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = parse_interval)]
    noop_interval_secs: f64,
    /// Start a sharded cluster with N shards (a config server, N shard replica sets and the
    /// routers; --port is the first router's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64),
          conflicts_with_all = ["standalone", "shardsvr"])]
    shards: Option<u16>,
    /// Number of routers of a cluster (1-16).
    #[arg(long, value_name = "M", requires = "shards",
          value_parser = clap::value_parser!(u16).range(1..=16))]
    routers: Option<u16>,
    /// Run as a shard's replica set, ready for a router's addShard.
    #[arg(long, conflicts_with = "standalone")]
    shardsvr: bool,
}

/// What to start.
#[derive(Debug)]
enum Launch {
    /// One replica set (or standalone server, or shard).
    Server(Options),
    /// A sharded cluster.
    Cluster(ClusterOptions),
}

fn parse_repl_set(v: &str) -> Result<String, String> {
    if v.is_empty() || v.contains('/') {
        Err("expected a non-empty name without '/'".into())
    } else {
        Ok(v.to_string())
    }
}

fn parse_version(v: &str) -> Result<ServerVersion, String> {
    ServerVersion::parse(v).ok_or_else(|| "expected 7.0 or 4.4".to_string())
}

fn parse_interval(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .ok_or_else(|| "expected a positive number of seconds, at most 86400".to_string())
}

impl Args {
    fn options(&self) -> Options {
        let opts = Options::new()
            .port(self.port)
            .version(self.server_version)
            .oplog_size_bytes(self.oplog_size_mb * 1024 * 1024)
            .noop_interval(Duration::from_secs_f64(self.noop_interval_secs));
        let opts = if self.shardsvr {
            opts.shard_server()
        } else {
            opts
        };
        if self.standalone {
            opts.standalone()
        } else {
            opts.repl_set(self.repl_set.clone())
        }
    }

    fn launch(&self) -> Launch {
        match self.shards {
            Some(n) => Launch::Cluster(
                ClusterOptions::new()
                    .shards(n.into())
                    .routers(self.routers.unwrap_or(1).into())
                    .port(self.port)
                    .version(self.server_version)
                    .oplog_size_bytes(self.oplog_size_mb * 1024 * 1024)
                    .noop_interval(Duration::from_secs_f64(self.noop_interval_secs)),
            ),
            None => Launch::Server(self.options()),
        }
    }
}

/// What is running: stopped on the way out.
enum Running {
    Server(MongoSim),
    Cluster(Box<Cluster>),
}

impl Running {
    fn start(launch: Launch) -> std::io::Result<Running> {
        Ok(match launch {
            Launch::Server(opts) => Running::Server(MongoSim::start(opts)?),
            Launch::Cluster(opts) => Running::Cluster(Box::new(Cluster::start(opts)?)),
        })
    }

    /// The addresses clients connect to: the server, or every router.
    fn endpoints(&self) -> Vec<std::net::SocketAddr> {
        match self {
            Running::Server(sim) => vec![sim.addr()],
            Running::Cluster(c) => c.routers().iter().map(MongoSim::addr).collect(),
        }
    }

    fn shutdown(&mut self) {
        match self {
            Running::Server(sim) => sim.shutdown(),
            Running::Cluster(c) => c.shutdown(),
        }
    }
}

/// SIGINT and SIGTERM (Ctrl-C only, off Unix).
struct StopSignals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(StopSignals {})
        }
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    // `--help` and `--version` exit with 0; usage errors print the error and the usage line
    // and exit with 2.
    let launch = match Args::try_parse() {
        Ok(args) => args.launch(),
        Err(e) if e.exit_code() == 0 => e.exit(),
        Err(e) => {
            let _ = e.print();
            eprintln!("\n{}", Args::command().render_usage());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mongosim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Install the handlers before announcing readiness so an early signal is not lost.
    let mut stop = match runtime.block_on(async { StopSignals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mongosim: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut running = match Running::start(launch) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mongosim: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        for addr in running.endpoints() {
            let _ = writeln!(out, "mongosim listening on {addr}");
        }
        let _ = out.flush();
    }
    runtime.block_on(stop.wait());
    running.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Args::try_parse_from(std::iter::once("mongosim").chain(args.iter().copied()))
            .map(|a| a.options())
    }

    #[test]
    fn defaults_and_flags() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.port, 27017);
        assert_eq!(o.repl_set.as_deref(), Some("rs0"));
        assert_eq!(o.version, ServerVersion::V7_0);
        assert_eq!(o.oplog_size_bytes, 192 * 1024 * 1024);
        assert_eq!(o.noop_interval, Duration::from_secs(10));
        let o = parse(&[
            "--port",
            "0",
            "--repl-set=rsX",
            "--server-version",
            "4.4",
            "--oplog-size-mb",
            "5",
            "--noop-interval-secs",
            "0.5",
        ])
        .unwrap();
        assert_eq!(o.port, 0);
        assert_eq!(o.repl_set.as_deref(), Some("rsX"));
        assert_eq!(o.version, ServerVersion::V4_4);
        assert_eq!(o.oplog_size_bytes, 5 * 1024 * 1024);
        assert_eq!(o.noop_interval, Duration::from_millis(500));
        let o = parse(&["--replSet", "a", "--oplogSize", "7"]).unwrap();
        assert_eq!(o.repl_set.as_deref(), Some("a"));
        assert_eq!(o.oplog_size_bytes, 7 * 1024 * 1024);
        let o = parse(&["--standalone"]).unwrap();
        assert_eq!(o.repl_set, None);
        let o = parse(&["--shardsvr", "--repl-set", "sh1"]).unwrap();
        assert_eq!(o.cluster_role, mongosim::ClusterRole::ShardServer);
        assert_eq!(o.repl_set.as_deref(), Some("sh1"));
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
    }

    #[test]
    fn cluster_flags() {
        let args =
            Args::try_parse_from(["mongosim", "--port", "0", "--shards", "3", "--routers", "2"])
                .unwrap();
        match args.launch() {
            Launch::Cluster(c) => {
                assert_eq!((c.shards, c.routers, c.port), (3, 2, 0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--port"][..],
            &["--port", "70000"],
            &["--server-version", "5.0"],
            &["--oplog-size-mb", "0"],
            &["--noop-interval-secs", "-1"],
            &["--noop-interval-secs", "nan"],
            &["--repl-set", "a/b"],
            &["--standalone", "--repl-set", "rs0"],
            &["--routers", "2"],
            &["--shards", "0"],
            &["--shards", "2", "--standalone"],
            &["--shards", "2", "--shardsvr"],
            &["--bogus"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }
}
