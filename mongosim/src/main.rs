//! The `mongosim` binary: a simulated MongoDB replica set on 127.0.0.1.
//!
//! ```text
//! mongosim --port <P> [--repl-set rs0] [--server-version 7.0|4.4] [--oplog-size-mb N]
//!          [--standalone] [--noop-interval-secs N]
//! ```
//! Prints exactly one stdout line, `mongosim listening on 127.0.0.1:<port>`, once it accepts
//! connections; stops cleanly on SIGINT/SIGTERM. Usage errors exit with status 2.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use mongosim::{MongoSim, Options, ServerVersion};

const USAGE: &str = "usage: mongosim [--port <P>] [--repl-set <NAME>] [--server-version 7.0|4.4] \
[--oplog-size-mb <N>] [--standalone] [--noop-interval-secs <N>]

  --port <P>                port on 127.0.0.1 (default 27017; 0 picks a free port)
  --repl-set <NAME>         replica set name (default rs0)
  --server-version <V>      imitated release: 7.0 (default) or 4.4
  --oplog-size-mb <N>       capped size of local.oplog.rs in MiB (default 192)
  --standalone              no replica set: no oplog, no setName
  --noop-interval-secs <N>  idle periodic no-op interval in seconds (default 10)";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options::new().port(27017);
    let mut repl_set: Option<String> = None;
    let mut standalone = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} requires a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => {
                let v = value("--port")?;
                let port = v
                    .parse::<u16>()
                    .map_err(|_| format!("invalid --port '{v}': expected 0-65535"))?;
                opts = opts.port(port);
            }
            "--repl-set" | "--replSet" => {
                let v = value("--repl-set")?;
                if v.is_empty() || v.contains('/') {
                    return Err(format!("invalid --repl-set '{v}'"));
                }
                repl_set = Some(v);
            }
            "--server-version" => {
                let v = value("--server-version")?;
                let version = ServerVersion::parse(&v).ok_or_else(|| {
                    format!("invalid --server-version '{v}': expected 7.0 or 4.4")
                })?;
                opts = opts.version(version);
            }
            "--oplog-size-mb" | "--oplogSize" => {
                let v = value("--oplog-size-mb")?;
                let mb = v
                    .parse::<u64>()
                    .ok()
                    .filter(|&mb| (1..=1024 * 1024).contains(&mb))
                    .ok_or_else(|| format!("invalid --oplog-size-mb '{v}': expected 1-1048576"))?;
                opts = opts.oplog_size_bytes(mb * 1024 * 1024);
            }
            "--noop-interval-secs" => {
                let v = value("--noop-interval-secs")?;
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .ok_or_else(|| {
                        format!("invalid --noop-interval-secs '{v}': expected a positive number")
                    })?;
                opts = opts.noop_interval(Duration::from_secs_f64(secs));
            }
            "--standalone" => {
                if inline.is_some() {
                    return Err("--standalone takes no value".to_string());
                }
                standalone = true;
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if standalone {
        if repl_set.is_some() {
            return Err("--standalone and --repl-set are mutually exclusive".to_string());
        }
        opts = opts.standalone();
    } else if let Some(rs) = repl_set {
        opts = opts.repl_set(rs);
    }
    Ok(Some(opts))
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
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mongosim: {e}\n{USAGE}");
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
    let mut sim = match MongoSim::start(opts) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("mongosim: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mongosim listening on {}", sim.addr());
        let _ = out.flush();
    }
    runtime.block_on(stop.wait());
    sim.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!(o.port, 27017);
        assert_eq!(o.repl_set.as_deref(), Some("rs0"));
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
        .unwrap()
        .unwrap();
        assert_eq!(o.port, 0);
        assert_eq!(o.repl_set.as_deref(), Some("rsX"));
        assert_eq!(o.version, ServerVersion::V4_4);
        assert_eq!(o.oplog_size_bytes, 5 * 1024 * 1024);
        assert_eq!(o.noop_interval, Duration::from_millis(500));
        let o = parse(&["--standalone"]).unwrap().unwrap();
        assert_eq!(o.repl_set, None);
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--port"][..],
            &["--port", "70000"],
            &["--server-version", "5.0"],
            &["--oplog-size-mb", "0"],
            &["--noop-interval-secs", "-1"],
            &["--standalone", "--repl-set", "rs0"],
            &["--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
