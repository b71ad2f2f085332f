//! What every example needs: a server to talk to and logging on stderr.
//!
//! Examples run against an embedded mongosim (a single-node replica set simulator,
//! started in-process) unless `MONGODB_URI` is set, in which case they use that server.

#![allow(dead_code)] // each example uses part of this module

use mongodb::Client;

pub mod op_line;

/// A connected client, plus the embedded server it talks to (if any). Dropping it stops
/// the embedded server.
pub struct Server {
    /// Client connected to the server.
    pub client: Client,
    /// The connection string used.
    pub uri: String,
    /// The embedded server, when no URI was given.
    pub sim: Option<mongosim::MongoSim>,
}

impl Server {
    /// Whether this is the embedded simulator (examples then write their own data).
    pub fn is_embedded(&self) -> bool {
        self.sim.is_some()
    }
}

/// Connects to `uri`, or to `MONGODB_URI`, or starts an embedded mongosim.
pub async fn connect(uri: Option<String>) -> Result<Server, Box<dyn std::error::Error>> {
    let uri = uri.or_else(|| std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()));
    let (uri, sim) = match uri {
        Some(uri) => (uri, None),
        None => {
            let sim = mongosim::MongoSim::start(mongosim::Options::new())?;
            tracing::info!(uri = %sim.uri(), "started embedded mongosim");
            (sim.uri(), Some(sim))
        }
    };
    let client = Client::with_uri_str(&uri).await?;
    Ok(Server { client, uri, sim })
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info for the examples and
/// mongotail, warn for everything else).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,mongotail=info,tail=info,filters=info,direct_then_live=info,pause_resume=info,typed=info,workers=info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
}

/// `error` followed by each of its causes, `: `-separated (mongotail's errors leave the
/// cause to `source()`).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(&format!(": {cause}"));
        next = cause.source();
    }
    text
}
