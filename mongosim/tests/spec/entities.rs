//! Entities of the unified test format: clients (with command monitoring), databases,
//! collections, sessions, change streams and saved BSON values.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mongodb::{
    bson::{Bson, Document},
    change_stream::ChangeStream,
    event::{cmap::CmapEvent, command::CommandEvent, EventHandler},
    options::{
        Acknowledgment, ClientOptions, CollectionOptions, DatabaseOptions, ReadConcern,
        ReadPreference, ReadPreferenceOptions, SelectionCriteria, SessionOptions,
        TransactionOptions, WriteConcern,
    },
    Client, ClientSession, Collection, Database,
};

use crate::matcher::EntityLookup;

/// One observed event.
#[derive(Debug, Clone)]
pub enum Ev {
    Started {
        name: String,
        db: String,
        command: Document,
        /// The server the command went to (`host:port`): on a sharded cluster, the mongos a
        /// session is pinned to.
        address: String,
    },
    Succeeded {
        name: String,
        reply: Document,
    },
    Failed {
        name: String,
    },
    /// A CMAP event, by its unified-format name (e.g. `connectionCheckOutStartedEvent`).
    Cmap(&'static str),
}

impl Ev {
    pub fn command_name(&self) -> Option<&str> {
        match self {
            Ev::Started { name, .. } | Ev::Succeeded { name, .. } | Ev::Failed { name } => {
                Some(name)
            }
            Ev::Cmap(_) => None,
        }
    }
}

/// A client entity and the events it observed.
#[derive(Clone)]
pub struct ClientEntity {
    pub client: Client,
    pub events: Arc<Mutex<Vec<Ev>>>,
    pub observe: Vec<String>,
    pub ignore: Vec<String>,
    pub observe_sensitive: bool,
}

const SENSITIVE: &[&str] = &[
    "authenticate",
    "saslstart",
    "saslcontinue",
    "getnonce",
    "createuser",
    "updateuser",
    "copydbgetnonce",
    "copydbsaslstart",
    "copydb",
];

impl ClientEntity {
    /// The observed command events after the filters of the format (observeEvents,
    /// ignoreCommandMonitoringEvents, configureFailPoint, sensitive commands).
    pub fn command_events(&self) -> Vec<Ev> {
        let evs = self.events.lock().map(|g| g.clone()).unwrap_or_default();
        evs.into_iter()
            .filter(|e| {
                let kind = match e {
                    Ev::Started { .. } => "commandStartedEvent",
                    Ev::Succeeded { .. } => "commandSucceededEvent",
                    Ev::Failed { .. } => "commandFailedEvent",
                    Ev::Cmap(_) => return false,
                };
                if !self.observe.iter().any(|o| o == kind) {
                    return false;
                }
                let name = e.command_name().unwrap_or_default();
                if name == "configureFailPoint" || self.ignore.iter().any(|i| i == name) {
                    return false;
                }
                if !self.observe_sensitive {
                    let lower = name.to_ascii_lowercase();
                    if SENSITIVE.contains(&lower.as_str()) {
                        return false;
                    }
                    if (lower == "hello" || lower == "ismaster") && is_redacted(e) {
                        return false;
                    }
                }
                true
            })
            .collect()
    }

    pub fn cmap_events(&self) -> Vec<&'static str> {
        let evs = self.events.lock().map(|g| g.clone()).unwrap_or_default();
        evs.into_iter()
            .filter_map(|e| match e {
                Ev::Cmap(n) if self.observe.iter().any(|o| o == n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// All `commandStartedEvent`s regardless of observeEvents (for lsid assertions).
    pub fn started_commands(&self) -> Vec<Document> {
        let evs = self.events.lock().map(|g| g.clone()).unwrap_or_default();
        evs.into_iter()
            .filter_map(|e| match e {
                Ev::Started { name, command, .. } if name != "configureFailPoint" => Some(command),
                _ => None,
            })
            .collect()
    }
}

fn is_redacted(e: &Ev) -> bool {
    match e {
        Ev::Started { command, .. } => command.is_empty(),
        Ev::Succeeded { reply, .. } => reply.is_empty(),
        _ => false,
    }
}

/// A session entity. `session` is `None` after `endSession`.
pub struct SessionEntity {
    pub session: Option<ClientSession>,
    pub client: String,
    /// Transaction state as the format names it (`none`, `starting`, `in_progress`,
    /// `committed`, `aborted`), tracked by the runner since the driver keeps it private.
    pub state: &'static str,
}

/// A change stream entity.
pub type Stream = Arc<tokio::sync::Mutex<ChangeStream<Document>>>;

#[derive(Clone)]
pub enum Entity {
    Client(ClientEntity),
    Database(Database),
    Collection(Collection<Document>),
    Session(Arc<tokio::sync::Mutex<SessionEntity>>),
    ChangeStream(Stream),
    /// A find cursor from `createFindCursor` (without a session).
    Cursor(Arc<tokio::sync::Mutex<mongodb::Cursor<Document>>>),
    Bson(Bson),
}

impl Entity {
    pub fn kind(&self) -> &'static str {
        match self {
            Entity::Client(_) => "client",
            Entity::Database(_) => "database",
            Entity::Collection(_) => "collection",
            Entity::Session(_) => "session",
            Entity::ChangeStream(_) => "changeStream",
            Entity::Cursor(_) => "findCursor",
            Entity::Bson(_) => "bson",
        }
    }
}

/// The entity map of one test; also remembers session lsids so `$$sessionLsid` works after
/// `endSession`.
#[derive(Default)]
pub struct Entities {
    pub map: HashMap<String, Entity>,
    pub lsids: HashMap<String, Document>,
}

impl EntityLookup for Entities {
    fn bson_entity(&self, id: &str) -> Option<Bson> {
        match self.map.get(id) {
            Some(Entity::Bson(b)) => Some(b.clone()),
            _ => None,
        }
    }
    fn session_lsid(&self, id: &str) -> Option<Document> {
        self.lsids.get(id).cloned()
    }
}

impl Entities {
    pub fn insert(&mut self, id: &str, e: Entity) -> Result<(), String> {
        if self.map.contains_key(id) {
            return Err(format!("entity `{id}` already exists"));
        }
        self.map.insert(id.to_string(), e);
        Ok(())
    }
    pub fn get(&self, id: &str) -> Result<&Entity, String> {
        self.map.get(id).ok_or_else(|| format!("no entity `{id}`"))
    }
    pub fn client(&self, id: &str) -> Result<ClientEntity, String> {
        match self.get(id)? {
            Entity::Client(c) => Ok(c.clone()),
            e => Err(format!("entity `{id}` is a {}, not a client", e.kind())),
        }
    }
    pub fn database(&self, id: &str) -> Result<Database, String> {
        match self.get(id)? {
            Entity::Database(d) => Ok(d.clone()),
            e => Err(format!("entity `{id}` is a {}, not a database", e.kind())),
        }
    }
    pub fn session(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<SessionEntity>>, String> {
        match self.get(id)? {
            Entity::Session(s) => Ok(s.clone()),
            e => Err(format!("entity `{id}` is a {}, not a session", e.kind())),
        }
    }

    /// Ends sessions, closes change streams and shuts clients down.
    pub async fn clear(&mut self) {
        let map = std::mem::take(&mut self.map);
        let mut clients = Vec::new();
        for (_, e) in map {
            match e {
                Entity::Client(c) => clients.push(c.client),
                Entity::Session(s) => {
                    let mut g = s.lock().await;
                    if let Some(mut sess) = g.session.take() {
                        // Abort an open transaction in line rather than in the background.
                        if g.state == "in_progress" {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                sess.abort_transaction(),
                            )
                            .await;
                        }
                    }
                }
                other => drop(other),
            }
        }
        for c in clients {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), c.shutdown().immediate(true)).await;
        }
        self.lsids.clear();
    }
}

fn opt_str<'a>(d: &'a Document, k: &str) -> Option<&'a str> {
    d.get_str(k).ok()
}

fn str_list(d: &Document, k: &str) -> Vec<String> {
    d.get_array(k)
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Appends `uriOptions` to a connection string (they override options already there).
pub fn uri_with_options(uri: &str, opts: &Document) -> Result<String, String> {
    let (base, query) = match uri.split_once('?') {
        Some((b, q)) => (b.to_string(), q.to_string()),
        None => (uri.to_string(), String::new()),
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .filter_map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in opts {
        let val = match v {
            Bson::String(s) => s.clone(),
            Bson::Boolean(b) => b.to_string(),
            Bson::Int32(i) => i.to_string(),
            Bson::Int64(i) => i.to_string(),
            Bson::Double(d) => d.to_string(),
            other => return Err(format!("unsupported uriOptions value {k}: {other}")),
        };
        pairs.retain(|(pk, _)| !pk.eq_ignore_ascii_case(k));
        pairs.push((k.clone(), val));
    }
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let q: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(format!("{base}?{}", q.join("&")))
}

pub async fn make_client(uri: &str, spec: &Document) -> Result<ClientEntity, String> {
    let uri = match spec.get_document("uriOptions") {
        Ok(o) => uri_with_options(uri, o)?,
        Err(_) => uri.to_string(),
    };
    let mut opts = ClientOptions::parse(&uri)
        .await
        .map_err(|e| format!("client uri {uri}: {e}"))?;
    let events: Arc<Mutex<Vec<Ev>>> = Arc::default();
    let observe = str_list(spec, "observeEvents");
    for o in &observe {
        if !o.starts_with("command") && !o.starts_with("connection") && !o.starts_with("pool") {
            return Err(format!("unsupported observeEvents type {o}"));
        }
    }
    let sink = events.clone();
    opts.command_event_handler = Some(EventHandler::callback(move |ev: CommandEvent| {
        let e = match ev {
            CommandEvent::Started(s) => Ev::Started {
                name: s.command_name,
                db: s.db,
                command: s.command,
                address: s.connection.address.to_string(),
            },
            CommandEvent::Succeeded(s) => Ev::Succeeded {
                name: s.command_name,
                reply: s.reply,
            },
            CommandEvent::Failed(f) => Ev::Failed {
                name: f.command_name,
            },
            _ => return,
        };
        if let Ok(mut g) = sink.lock() {
            g.push(e);
        }
    }));
    let sink = events.clone();
    opts.cmap_event_handler = Some(EventHandler::callback(move |ev: CmapEvent| {
        let n = match ev {
            CmapEvent::PoolCreated(_) => "poolCreatedEvent",
            CmapEvent::PoolReady(_) => "poolReadyEvent",
            CmapEvent::PoolCleared(_) => "poolClearedEvent",
            CmapEvent::PoolClosed(_) => "poolClosedEvent",
            CmapEvent::ConnectionCreated(_) => "connectionCreatedEvent",
            CmapEvent::ConnectionReady(_) => "connectionReadyEvent",
            CmapEvent::ConnectionClosed(_) => "connectionClosedEvent",
            CmapEvent::ConnectionCheckoutStarted(_) => "connectionCheckOutStartedEvent",
            CmapEvent::ConnectionCheckoutFailed(_) => "connectionCheckOutFailedEvent",
            CmapEvent::ConnectionCheckedOut(_) => "connectionCheckedOutEvent",
            CmapEvent::ConnectionCheckedIn(_) => "connectionCheckedInEvent",
            _ => return,
        };
        if let Ok(mut g) = sink.lock() {
            g.push(Ev::Cmap(n));
        }
    }));
    let client = Client::with_options(opts).map_err(|e| format!("client: {e}"))?;
    Ok(ClientEntity {
        client,
        events,
        observe,
        ignore: str_list(spec, "ignoreCommandMonitoringEvents"),
        observe_sensitive: spec.get_bool("observeSensitiveCommands").unwrap_or(false),
    })
}

pub fn parse_read_concern(d: &Document) -> Result<ReadConcern, String> {
    let level = opt_str(d, "level").ok_or_else(|| format!("readConcern without level: {d}"))?;
    Ok(match level {
        "local" => ReadConcern::local(),
        "majority" => ReadConcern::majority(),
        "linearizable" => ReadConcern::linearizable(),
        "available" => ReadConcern::available(),
        "snapshot" => ReadConcern::snapshot(),
        other => ReadConcern::custom(other),
    })
}

pub fn parse_write_concern(d: &Document) -> Result<WriteConcern, String> {
    let mut wc = WriteConcern::default();
    for (k, v) in d {
        match k.as_str() {
            "w" => {
                wc.w = Some(match v {
                    Bson::String(s) => Acknowledgment::from(s.as_str()),
                    other => {
                        let n = crate::matcher::as_f64(other)
                            .ok_or_else(|| format!("bad w {other}"))?;
                        Acknowledgment::Nodes(n as u32)
                    }
                })
            }
            "journal" | "j" => wc.journal = v.as_bool(),
            "wtimeoutMS" | "wtimeout" => {
                let n = crate::matcher::as_f64(v).ok_or_else(|| format!("bad wtimeout {v}"))?;
                wc.w_timeout = Some(Duration::from_millis(n as u64));
            }
            other => return Err(format!("unsupported writeConcern field {other}")),
        }
    }
    Ok(wc)
}

pub fn parse_read_preference(d: &Document) -> Result<SelectionCriteria, String> {
    let mode = opt_str(d, "mode").ok_or_else(|| format!("readPreference without mode: {d}"))?;
    let mut o = ReadPreferenceOptions::default();
    let mut any = false;
    if let Some(s) = d
        .get("maxStalenessSeconds")
        .and_then(crate::matcher::as_f64)
    {
        o.max_staleness = Some(Duration::from_secs(s as u64));
        any = true;
    }
    if let Ok(tags) = d.get_array("tagSets") {
        let mut sets = Vec::new();
        for t in tags {
            let Bson::Document(t) = t else {
                return Err(format!("bad tag set {t}"));
            };
            sets.push(
                t.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
            );
        }
        o.tag_sets = Some(sets);
        any = true;
    }
    let options = if any { Some(o) } else { None };
    let rp = match mode.to_ascii_lowercase().as_str() {
        "primary" => ReadPreference::Primary,
        "primarypreferred" => ReadPreference::PrimaryPreferred { options },
        "secondary" => ReadPreference::Secondary { options },
        "secondarypreferred" => ReadPreference::SecondaryPreferred { options },
        "nearest" => ReadPreference::Nearest { options },
        other => return Err(format!("unknown read preference mode {other}")),
    };
    Ok(SelectionCriteria::ReadPreference(rp))
}

/// readConcern / readPreference / writeConcern of a database or collection entity.
type Concerns = (
    Option<ReadConcern>,
    Option<SelectionCriteria>,
    Option<WriteConcern>,
);

fn coll_or_db_options(d: Option<&Document>) -> Result<Concerns, String> {
    let Some(d) = d else {
        return Ok((None, None, None));
    };
    let mut out = (None, None, None);
    for (k, v) in d {
        let Bson::Document(v) = v else {
            return Err(format!("bad option {k}: {v}"));
        };
        match k.as_str() {
            "readConcern" => out.0 = Some(parse_read_concern(v)?),
            "readPreference" => out.1 = Some(parse_read_preference(v)?),
            "writeConcern" => out.2 = Some(parse_write_concern(v)?),
            other => return Err(format!("unsupported database/collection option {other}")),
        }
    }
    Ok(out)
}

pub fn parse_transaction_options(d: &Document) -> Result<TransactionOptions, String> {
    let mut t = TransactionOptions::default();
    for (k, v) in d {
        match (k.as_str(), v) {
            ("readConcern", Bson::Document(v)) => t.read_concern = Some(parse_read_concern(v)?),
            ("writeConcern", Bson::Document(v)) => t.write_concern = Some(parse_write_concern(v)?),
            ("readPreference", Bson::Document(v)) => {
                t.selection_criteria = Some(parse_read_preference(v)?)
            }
            ("maxCommitTimeMS", v) => {
                let n = crate::matcher::as_f64(v).ok_or_else(|| format!("bad {k}"))?;
                t.max_commit_time = Some(Duration::from_millis(n as u64));
            }
            (other, _) => return Err(format!("unsupported transaction option {other}")),
        }
    }
    Ok(t)
}

/// `mongodb://h1,h2/?x` -> `mongodb://h1/?x`.
pub fn first_host_only(uri: &str) -> String {
    let Some(rest) = uri.strip_prefix("mongodb://") else {
        return uri.to_string();
    };
    let (hosts, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let first = hosts.split(',').next().unwrap_or(hosts);
    format!("mongodb://{first}{tail}")
}

/// Creates one entity described by `{ <type>: {...} }` and adds it to the map.
pub async fn create_entity(ents: &mut Entities, uri: &str, e: &Document) -> Result<(), String> {
    let (kind, spec) = e.iter().next().ok_or("empty entity")?;
    let Bson::Document(spec) = spec else {
        return Err(format!("bad entity {e}"));
    };
    let id = opt_str(spec, "id").ok_or("entity without id")?.to_string();
    match kind.as_str() {
        "client" => {
            for k in spec.keys() {
                if !matches!(
                    k.as_str(),
                    "id" | "uriOptions"
                        | "observeEvents"
                        | "ignoreCommandMonitoringEvents"
                        | "observeSensitiveCommands"
                        | "useMultipleMongoses"
                ) {
                    return Err(format!("unsupported client option {k}"));
                }
            }
            // One mongos unless the test asks for several (unified test format:
            // useMultipleMongoses); on a replica set the URI has one host anyway.
            let uri = if spec.get_bool("useMultipleMongoses") == Ok(true) {
                uri.to_string()
            } else {
                first_host_only(uri)
            };
            let c = make_client(&uri, spec).await?;
            ents.insert(&id, Entity::Client(c))
        }
        "database" => {
            let client = ents.client(opt_str(spec, "client").ok_or("database without client")?)?;
            let name = opt_str(spec, "databaseName").ok_or("database without name")?;
            let (rc, sc, wc) = coll_or_db_options(spec.get_document("databaseOptions").ok())?;
            let mut o = DatabaseOptions::default();
            o.read_concern = rc;
            o.selection_criteria = sc;
            o.write_concern = wc;
            let db = client.client.database_with_options(name, o);
            ents.insert(&id, Entity::Database(db))
        }
        "collection" => {
            let db = ents.database(opt_str(spec, "database").ok_or("collection without db")?)?;
            let name = opt_str(spec, "collectionName").ok_or("collection without name")?;
            let (rc, sc, wc) = coll_or_db_options(spec.get_document("collectionOptions").ok())?;
            let mut o = CollectionOptions::default();
            o.read_concern = rc;
            o.selection_criteria = sc;
            o.write_concern = wc;
            let coll = db.collection_with_options::<Document>(name, o);
            ents.insert(&id, Entity::Collection(coll))
        }
        "session" => {
            let cid = opt_str(spec, "client").ok_or("session without client")?;
            let client = ents.client(cid)?;
            let mut so = SessionOptions::default();
            if let Ok(d) = spec.get_document("sessionOptions") {
                for (k, v) in d {
                    match (k.as_str(), v) {
                        ("defaultTransactionOptions", Bson::Document(t)) => {
                            so.default_transaction_options = Some(parse_transaction_options(t)?)
                        }
                        ("causalConsistency", Bson::Boolean(b)) => so.causal_consistency = Some(*b),
                        ("snapshot", Bson::Boolean(b)) => so.snapshot = Some(*b),
                        (other, _) => return Err(format!("unsupported session option {other}")),
                    }
                }
            }
            let session = client
                .client
                .start_session()
                .with_options(so)
                .await
                .map_err(|e| format!("startSession: {e}"))?;
            let lsid = session.id().clone();
            ents.lsids.insert(id.clone(), lsid);
            let s = SessionEntity {
                session: Some(session),
                client: cid.to_string(),
                state: "none",
            };
            ents.insert(&id, Entity::Session(Arc::new(tokio::sync::Mutex::new(s))))
        }
        other => Err(format!("unsupported entity type {other}")),
    }
}
