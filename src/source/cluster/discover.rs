//! Finding the shards and the config server through a router, and connecting to them.
//!
//! A router answers `listShards` with the `config.shards` documents (`_id`, `host` as
//! `set/h1:p,h2:p`, `topologyTime` from 5.0) and `getShardMap` with the config server's
//! connection string under `map.config` (reference sharded-clusters.md §2.1, §2.6). Each
//! replica set is reached with all the hosts its `host` string lists, so the driver follows
//! its elections (gtm keeps only the first host, §7.1).

use bson::{doc, Bson, Document, Timestamp};
use mongodb::options::{ClientOptions, ServerAddress};
use mongodb::Client;

use crate::error::{Error, Result};
use crate::source::retry::{retry_transient, RetryPolicy};
use crate::source::start_at::{cluster_time, last_op_timestamp};

/// One `config.shards` document.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ShardDoc {
    /// `_id`: the shard's name.
    pub(super) id: String,
    /// `host`: `set/h1:p,h2:p` (or `h:p` for a shard that is not a replica set).
    pub(super) host: String,
    /// `topologyTime`: when it was added (5.0+).
    pub(super) added: Option<Timestamp>,
}

impl ShardDoc {
    /// Reads a `config.shards` document; `None` without `_id` or `host`.
    pub(super) fn from_doc(d: &Document) -> Option<ShardDoc> {
        Some(ShardDoc {
            id: d.get_str("_id").ok()?.to_owned(),
            host: d.get_str("host").ok()?.to_owned(),
            added: d.get_timestamp("topologyTime").ok(),
        })
    }
}

/// What [`discover`] found.
#[derive(Debug)]
pub(super) struct Discovered {
    /// The cluster time before the shards were listed: "now" for every shard.
    pub(super) now: Timestamp,
    pub(super) shards: Vec<ShardDoc>,
    /// The config server and the `ts` of its newest oplog entry before the shards were
    /// listed (its tail starts there); `None` when it cannot be reached.
    pub(super) config: Option<(Client, Timestamp)>,
    /// The router, to poll `listShards` through when the config server cannot be followed.
    pub(super) router: Option<Client>,
}

/// The shards of the cluster `router` routes for, and (when `follow`) the config server.
///
/// The config server's position is taken before `listShards`, so a shard added in between
/// is both listed and seen by the config tail (the caller keeps one tail per id).
pub(super) async fn discover(
    router: Client,
    follow: bool,
    template: Option<ClientOptions>,
    retry: RetryPolicy,
) -> Result<Discovered> {
    let now = retry_transient(&retry, "cluster time", || cluster_time(&router)).await?;
    let config = if follow {
        match config_server(&router, template.as_ref()).await {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(error = %e, "config server unreachable: polling listShards instead");
                None
            }
        }
    } else {
        None
    };
    let shards = retry_transient(&retry, "listShards", || list_shards(&router)).await?;
    Ok(Discovered {
        now,
        shards,
        config,
        router: Some(router),
    })
}

/// `listShards` through a router.
pub(super) async fn list_shards(router: &Client) -> Result<Vec<ShardDoc>> {
    let reply = router
        .database("admin")
        .run_command(doc! {"listShards": 1})
        .await?;
    let shards = reply.get_array("shards").map_err(|e| Error::Malformed {
        what: "listShards reply".into(),
        message: e.to_string(),
    })?;
    Ok(shards
        .iter()
        .filter_map(Bson::as_document)
        .filter_map(ShardDoc::from_doc)
        .collect())
}

/// The config server (from `getShardMap`'s `map.config`), connected, with the `ts` of its
/// newest oplog entry.
async fn config_server(
    router: &Client,
    template: Option<&ClientOptions>,
) -> Result<Option<(Client, Timestamp)>> {
    let reply = router
        .database("admin")
        .run_command(doc! {"getShardMap": 1})
        .await?;
    let Ok(host) = reply.get_document("map").and_then(|m| m.get_str("config")) else {
        return Ok(None);
    };
    let client = connect(host, template)?;
    let last = last_op_timestamp(&client).await?;
    Ok(last.map(|ts| (client, ts)))
}

/// A client for the replica set a `config.shards` `host` string names (`set/h1:p,h2:p`),
/// with every listed host as a seed and `replicaSet` set. `template` gives the other
/// options (credentials, TLS, timeouts; its hosts and set name are replaced).
pub(super) fn connect(host: &str, template: Option<&ClientOptions>) -> Result<Client> {
    Ok(Client::with_options(client_options(host, template)?)?)
}

/// The options [`connect`] uses.
fn client_options(host: &str, template: Option<&ClientOptions>) -> Result<ClientOptions> {
    let (set, hosts) = match host.split_once('/') {
        Some((set, hosts)) => (Some(set), hosts),
        None => (None, host),
    };
    let hosts = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(ServerAddress::parse)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if hosts.is_empty() {
        return Err(Error::Config(format!("shard host {host:?} lists no host")));
    }
    let mut options = template.cloned().unwrap_or_default();
    options.hosts = hosts;
    options.repl_set_name = set.map(str::to_owned);
    options.direct_connection = None;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_docs_need_id_and_host() {
        let ts = Timestamp {
            time: 7,
            increment: 1,
        };
        let d = doc! {"_id": "shard01", "host": "shard01/a:1,b:2", "state": 1, "topologyTime": ts};
        assert_eq!(
            ShardDoc::from_doc(&d),
            Some(ShardDoc {
                id: "shard01".into(),
                host: "shard01/a:1,b:2".into(),
                added: Some(ts),
            })
        );
        assert_eq!(ShardDoc::from_doc(&doc! {"_id": "s"}), None);
    }

    #[test]
    fn every_host_of_the_set_is_a_seed() {
        let mut template = ClientOptions::default();
        template.app_name = Some("indexer".into());
        template.direct_connection = Some(true);
        let o = client_options("shard01/h1:1,h2:2", Some(&template)).unwrap();
        let hosts: Vec<String> = o.hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["h1:1", "h2:2"]);
        assert_eq!(o.repl_set_name.as_deref(), Some("shard01"));
        assert_eq!(o.app_name.as_deref(), Some("indexer"));
        assert_eq!(o.direct_connection, None);
        let single = client_options("h3:3", None).unwrap();
        assert_eq!(single.repl_set_name, None);
        assert!(client_options("shard01/", None).is_err());
    }
}
