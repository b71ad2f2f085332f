//! Accept loop, one task per connection (being built).

use crate::Options;

/// A running simulator; stops when dropped.
#[derive(Debug)]
pub struct MongoSim {
    opts: Options,
    port: u16,
}

impl MongoSim {
    /// Starts a server on 127.0.0.1.
    pub fn start(opts: Options) -> std::io::Result<MongoSim> {
        let port = opts.port;
        Ok(MongoSim { opts, port })
    }
    /// Connection string, `mongodb://127.0.0.1:<port>/?replicaSet=rs0`.
    pub fn uri(&self) -> String {
        match &self.opts.repl_set {
            Some(rs) => format!("mongodb://127.0.0.1:{}/?replicaSet={rs}", self.port),
            None => format!("mongodb://127.0.0.1:{}/", self.port),
        }
    }
}
