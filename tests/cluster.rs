//! Sharded clusters: per-shard oplog tailing merged in cluster time order
//! ([`ClusterStream`]), new and removed shards, restart from per-shard positions, the
//! `from_shards` form, and the existing sources through a router. Runs on an embedded
//! `mongosim::Cluster`, or on the cluster whose router `MONGODB_URI` names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::{Stream, StreamExt, TryStreamExt};
use mongodb::Client;
use mongotail::{
    cluster_time, start, ChangeStreamOptions, ChangeStreamSource, ClusterOptions, ClusterStream,
    DirectOptions, DirectReads, Error, Namespace, Op, OpKind, Position, StartAt, TailOptions,
};

use common::{take_ops, unique_db, WAIT};

/// A cluster for one test (its router client), kept alive with it.
struct Sharded {
    router: Client,
    sim: Option<mongosim::Cluster>,
}

impl Sharded {
    /// An embedded cluster of `shards` shards, or the cluster whose router
    /// `MONGODB_CLUSTER_URI` (else `MONGODB_URI`) names; `None` (the test is skipped, with a
    /// note) when that server is not a router.
    async fn start(shards: usize) -> Option<Sharded> {
        let external = ["MONGODB_CLUSTER_URI", "MONGODB_URI"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()));
        let (uri, sim) = match external {
            Some(uri) => (uri, None),
            None => {
                let opts = mongosim::ClusterOptions::new()
                    .shards(shards)
                    .noop_interval(Duration::from_millis(100));
                let sim = mongosim::Cluster::start(opts).expect("start a cluster");
                (sim.uri(), Some(sim))
            }
        };
        let router = Client::with_uri_str(&uri).await.expect("router client");
        let hello = router
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
            .expect("hello");
        if hello.get_str("msg") != Ok("isdbgrid") {
            eprintln!("skipped: {uri} is not a router (mongos); set MONGODB_CLUSTER_URI");
            return None;
        }
        Some(Sharded { router, sim })
    }

    /// True (and a note) when the test needs the embedded cluster (to add a shard, set a
    /// fail point) and runs against an external one.
    fn external(&self, why: &str) -> bool {
        if self.sim.is_none() {
            eprintln!("skipped against an external cluster: {why}");
        }
        self.sim.is_none()
    }

    async fn admin(&self, cmd: Document) -> Document {
        let what = cmd.clone();
        self.router
            .database("admin")
            .run_command(cmd)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// The shard ids, as `listShards` gives them.
    async fn shard_ids(&self) -> Vec<String> {
        let reply = self.admin(doc! {"listShards": 1}).await;
        let shards = reply.get_array("shards").expect("shards");
        shards
            .iter()
            .filter_map(Bson::as_document)
            .map(|s| s.get_str("_id").expect("_id").to_owned())
            .collect()
    }

    /// The shard ids, and `<unique db>.c` split over the first two
    /// ([`Sharded::split_collection`]).
    async fn split_over_two(&self, prefix: &str) -> (Vec<String>, Namespace) {
        let ids = self.shard_ids().await;
        let ns = self
            .split_collection(&unique_db(prefix), &ids[0], &ids[1])
            .await;
        (ids, ns)
    }

    /// `db.c` sharded on `k`, split at 0: `k < 0` on `lo`, `k >= 0` on `hi`.
    async fn split_collection(&self, db: &str, lo: &str, hi: &str) -> Namespace {
        let ns = format!("{db}.c");
        self.admin(doc! {"enableSharding": db, "primaryShard": lo})
            .await;
        self.admin(doc! {"shardCollection": &ns, "key": {"k": 1}})
            .await;
        self.admin(doc! {"split": &ns, "middle": {"k": 0}}).await;
        self.admin(doc! {"moveChunk": &ns, "find": {"k": 5}, "to": hi, "_waitForDelete": true})
            .await;
        Namespace::parse(&ns).expect("namespace")
    }

    fn coll(&self, ns: &Namespace) -> mongodb::Collection<Document> {
        self.router.database(ns.db()).collection(ns.coll())
    }
}

/// `(kind, _id)` of each op.
fn kinds_ids(ops: &[Op]) -> Vec<(OpKind, Option<Bson>)> {
    ops.iter().map(|o| (o.kind.clone(), o.id.clone())).collect()
}

fn shard_of(op: &Op) -> &str {
    match &op.position {
        Position::Shard { shard, ts } => {
            assert_eq!(*ts, op.timestamp, "a shard position is the entry's ts");
            shard
        }
        other => panic!("not a shard position: {other:?}"),
    }
}

/// Ops until (and with) the insert of `_id: "end"`.
async fn until_end<S>(stream: &mut S) -> Vec<Op>
where
    S: Stream<Item = mongotail::Result<Op>> + Unpin,
{
    let mut ops = Vec::new();
    loop {
        let op = take_ops(stream, 1).await.remove(0);
        let end = op.id == Some(Bson::String("end".into()));
        ops.push(op);
        if end {
            return ops;
        }
    }
}

/// A transaction through the router inserting `docs`, committed or aborted.
async fn transaction(s: &Sharded, ns: &Namespace, docs: Vec<Document>, commit: bool) {
    let mut session = s.router.start_session().await.expect("session");
    session
        .start_transaction()
        .await
        .expect("start transaction");
    for d in docs {
        s.coll(ns)
            .insert_one(d)
            .session(&mut session)
            .await
            .expect("insert in transaction");
    }
    if commit {
        session.commit_transaction().await.expect("commit");
    } else {
        session.abort_transaction().await.expect("abort");
    }
}

/// Inserts, updates and deletes on both shards, a chunk migration, a two-shard transaction,
/// an aborted one, then `_id: "end"`.
async fn workload(s: &Sharded, ns: &Namespace, lo: &str) {
    let coll = s.coll(ns);
    for i in 1..=6 {
        let k = if i % 2 == 0 { i } else { -i };
        coll.insert_one(doc! {"_id": i, "k": k})
            .await
            .expect("insert");
    }
    coll.update_one(doc! {"_id": 2, "k": 2}, doc! {"$set": {"x": 1}})
        .await
        .expect("update");
    coll.delete_one(doc! {"_id": 3, "k": -3})
        .await
        .expect("delete");
    // Move the chunk of k >= 4 (holding _id 4 and 6) from `hi` to `lo`: copies and deletes
    // marked fromMigrate on both shards.
    s.admin(doc! {"split": ns.to_string(), "middle": {"k": 4}})
        .await;
    s.admin(doc! {"moveChunk": ns.to_string(), "find": {"k": 4}, "to": lo, "_waitForDelete": true})
        .await;
    coll.update_one(doc! {"_id": 6, "k": 6}, doc! {"$set": {"x": 2}})
        .await
        .expect("update after the move");
    transaction(
        s,
        ns,
        vec![doc! {"_id": 7, "k": -7}, doc! {"_id": 8, "k": 2}],
        true,
    )
    .await;
    transaction(
        s,
        ns,
        vec![doc! {"_id": 9, "k": -9}, doc! {"_id": 10, "k": 3}],
        false,
    )
    .await;
    coll.insert_one(doc! {"_id": "end", "k": 1})
        .await
        .expect("end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_shard_ops_come_in_the_router_change_stream_order() {
    let Some(s) = Sharded::start(3).await else {
        return;
    };
    let ids = s.shard_ids().await;
    let db = unique_db("order");
    let ranged = s.split_collection(&db, &ids[0], &ids[1]).await;
    // A hashed collection: its initial chunks spread over every shard.
    let hashed = Namespace::new(&db, "h").expect("namespace");
    s.admin(doc! {"shardCollection": hashed.to_string(), "key": {"_id": "hashed"}})
        .await;
    let whole_db = Namespace::database(&db).expect("namespace");
    let now = cluster_time(&s.router).await.expect("cluster time");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(whole_db.clone())
            .start(StartAt::After(now)),
    );
    let mut events = ChangeStreamSource::new(
        &s.router,
        ChangeStreamOptions::new()
            .namespace(whole_db)
            .start(StartAt::After(now)),
    );
    let h = s.coll(&hashed);
    h.insert_many((0..12).map(|i| doc! {"_id": 100 + i}))
        .await
        .expect("hashed inserts");
    workload(&s, &ranged, &ids[0]).await;
    h.update_one(doc! {"_id": 103}, doc! {"$set": {"x": 1}})
        .await
        .expect("hashed update");
    h.delete_one(doc! {"_id": 104})
        .await
        .expect("hashed delete");
    // Dropping a sharded collection: one drop, whatever number of shards had it.
    h.drop().await.expect("drop the hashed collection");
    s.coll(&ranged)
        .insert_one(doc! {"_id": "end", "k": -1000})
        .await
        .expect("end");
    let (from_shards, from_router) = (until_end(&mut ops).await, until_end(&mut events).await);
    // The workload's own end, then the hashed writes and the drop, then the final end.
    let (from_shards, from_router) = (
        [from_shards, until_end(&mut ops).await].concat(),
        [from_router, until_end(&mut events).await].concat(),
    );
    let drops = from_shards
        .iter()
        .filter(|o| o.kind == OpKind::DropCollection)
        .count();
    assert_eq!(drops, 1, "one drop for the sharded collection");

    assert_eq!(kinds_ids(&from_shards), kinds_ids(&from_router));
    // Nothing of the migration, nothing of the aborted transaction: 12 hashed inserts; on
    // the ranged collection 6 inserts, 2 updates, 1 delete, the 2 inserts of the committed
    // transaction and the end; a hashed update and delete, the drop, and the final end.
    assert_eq!(from_shards.len(), 12 + 6 + 2 + 1 + 2 + 1 + 2 + 1 + 1);
    let times: Vec<_> = from_shards.iter().map(|o| o.timestamp).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "cluster time order");
    let shards: BTreeSet<&str> = from_shards.iter().map(shard_of).collect();
    assert_eq!(shards.len(), ids.len(), "writes landed on every shard");
    let txn: Vec<&Op> = from_shards.iter().filter(|o| o.txn.is_some()).collect();
    assert_eq!(txn.len(), 2, "the committed transaction, once");
    assert_ne!(
        shard_of(txn[0]),
        shard_of(txn[1]),
        "a two-shard transaction"
    );
    assert!(from_shards
        .iter()
        .all(|o| o.source == mongotail::Source::Oplog));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_shard_transaction_arrives_once_on_commit_and_never_on_abort() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let (_, ns) = s.split_over_two("txn").await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now)),
    );
    transaction(
        &s,
        &ns,
        vec![doc! {"_id": 1, "k": -1}, doc! {"_id": 2, "k": 1}],
        false,
    )
    .await;
    let three = vec![
        doc! {"_id": 3, "k": -3},
        doc! {"_id": 4, "k": 4},
        doc! {"_id": 5, "k": -5},
    ];
    transaction(&s, &ns, three, true).await;
    s.coll(&ns)
        .insert_one(doc! {"_id": "end", "k": -100})
        .await
        .expect("end");
    let got = until_end(&mut ops).await;
    let ids_got: Vec<Option<Bson>> = got.iter().map(|o| o.id.clone()).collect();
    assert_eq!(got.len(), 4, "{ids_got:?}");
    let txn: Vec<_> = got[..3]
        .iter()
        .map(|o| o.txn.clone().expect("txn"))
        .collect();
    assert!(txn
        .iter()
        .all(|t| t.lsid == txn[0].lsid && t.txn_number == txn[0].txn_number));
    let mut by_shard: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (op, t) in got.iter().zip(&txn) {
        by_shard.entry(shard_of(op)).or_default().push(t.index);
    }
    assert_eq!(by_shard.len(), 2, "both shards committed: {by_shard:?}");
    let mut txn_ids = common::int_ids(&got[..3]);
    txn_ids.sort();
    assert_eq!(txn_ids, [3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_added_while_tailing_is_tailed_from_when_it_was_added() {
    let Some(mut s) = Sharded::start(2).await else {
        return;
    };
    if s.external("adds a shard to the embedded cluster") {
        return;
    }
    let (_, ns) = s.split_over_two("grow").await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now)),
    );
    let mut events = ChangeStreamSource::new(
        &s.router,
        ChangeStreamOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now)),
    );
    s.coll(&ns)
        .insert_one(doc! {"_id": 1, "k": -1})
        .await
        .expect("insert");
    assert_eq!(take_ops(&mut ops, 1).await[0].id, Some(Bson::Int32(1)));
    assert_eq!(take_ops(&mut events, 1).await[0].id, Some(Bson::Int32(1)));

    let sim = s.sim.as_mut().expect("embedded");
    let added = tokio::task::block_in_place(|| sim.add_shard()).expect("add a shard");
    s.admin(doc! {"split": ns.to_string(), "middle": {"k": 100}})
        .await;
    s.admin(doc! {"moveChunk": ns.to_string(), "find": {"k": 100}, "to": &added, "_waitForDelete": true})
        .await;
    for (id, k) in [(2, 150), (3, -2), (4, 160)] {
        s.coll(&ns)
            .insert_one(doc! {"_id": id, "k": k})
            .await
            .expect("insert");
    }
    s.coll(&ns)
        .insert_one(doc! {"_id": "end", "k": 200})
        .await
        .expect("end");
    let got = until_end(&mut ops).await;
    // As the router's change stream, which picks the new shard up too.
    assert_eq!(kinds_ids(&got), kinds_ids(&until_end(&mut events).await));
    assert_eq!(
        got.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        [2, 3, 4]
            .map(|i| Some(Bson::Int32(i)))
            .into_iter()
            .chain([Some("end".into())])
            .collect::<Vec<_>>()
    );
    let on_new: Vec<&Op> = got.iter().filter(|o| shard_of(o) == added).collect();
    assert_eq!(
        on_new.len(),
        3,
        "2, 4 and end were written on the new shard"
    );
    assert!(ops.control().positions().contains_key(&added));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_and_removed_shard_s_tail_ends() {
    removal(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_shard_gone_before_its_tail_caught_up_ends_after_the_grace() {
    removal(true).await;
}

/// Drains and removes the second shard while tailing; with `gone`, the tail cannot read
/// that shard any more from before the drain (a fail point for its connections).
async fn removal(gone: bool) {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    if s.external("removes a shard from the cluster") {
        return;
    }
    let (ids, ns) = s.split_over_two("shrink").await;
    s.coll(&ns)
        .insert_many([doc! {"_id": 1, "k": 1}, doc! {"_id": 2, "k": 2}])
        .await
        .expect("inserts on the shard to remove");
    let now = cluster_time(&s.router).await.expect("cluster time");
    let app = app_named("mt-removal-test");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now))
            .client_options(app)
            .removed_shard_grace(Duration::from_millis(300)),
    );
    // Both tails started: an op from each shard.
    s.coll(&ns)
        .insert_many([doc! {"_id": 3, "k": -3}, doc! {"_id": 4, "k": 4}])
        .await
        .expect("inserts");
    take_ops(&mut ops, 2).await;
    assert!(ops.control().positions().contains_key(&ids[1]));
    if gone {
        let shard = Client::with_uri_str(s.sim.as_ref().expect("embedded").shard_uri(1))
            .await
            .expect("shard client");
        shard
            .database("admin")
            .run_command(
                doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn",
                "data": {"failCommands": ["find", "getMore"], "appName": "mt-removal-test",
                    "errorCode": 91}},
            )
            .await
            .expect("fail point");
    }
    let mut state = String::new();
    for _ in 0..10 {
        let reply = s.admin(doc! {"removeShard": &ids[1]}).await;
        state = reply.get_str("state").unwrap_or_default().to_owned();
        if state == "completed" {
            break;
        }
    }
    assert_eq!(state, "completed");
    // The drain copied 1, 2 and 4 to the remaining shard (fromMigrate): no op. Keep writing
    // until the removed shard's tail has ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 10;
    while ops.control().positions().contains_key(&ids[1]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tail never ended"
        );
        s.coll(&ns)
            .insert_one(doc! {"_id": n, "k": n})
            .await
            .expect("insert");
        let op = take_ops(&mut ops, 1).await.remove(0);
        assert_eq!(
            (op.id, shard_of_owned(&op.position)),
            (Some(Bson::Int32(n)), ids[0].clone())
        );
        n += 1;
    }
    assert_eq!(ops.shards(), [ids[0].clone()]);
}

fn shard_of_owned(p: &Position) -> String {
    match p {
        Position::Shard { shard, .. } => shard.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_positions_after_the_kth_op_delivers_exactly_the_rest() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let (ids, ns) = s.split_over_two("restart").await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let options = ClusterOptions::new().namespace(ns.clone());
    let mut first = ClusterStream::new(&s.router, options.clone().start(StartAt::After(now)));
    let coll = s.coll(&ns);
    for i in 1..=8 {
        let k = if i % 3 == 0 { -i } else { i };
        coll.insert_one(doc! {"_id": i, "k": k})
            .await
            .expect("insert");
    }
    transaction(
        &s,
        &ns,
        vec![doc! {"_id": 9, "k": -9}, doc! {"_id": 10, "k": 10}],
        true,
    )
    .await;
    coll.insert_one(doc! {"_id": "end", "k": 0})
        .await
        .expect("end");

    let k = 5;
    let head = take_ops(&mut first, k).await;
    let positions = first.control().positions();
    assert_eq!(positions.len(), ids.len(), "every shard: {positions:?}");
    let rest = until_end(&mut first).await;
    drop(first);

    let mut again = ClusterStream::new(&s.router, options.resume_from(positions));
    let replayed = until_end(&mut again).await;
    assert_eq!(kinds_ids(&replayed), kinds_ids(&rest));
    assert_eq!(head.len() + rest.len(), 8 + 2 + 1);
    // Nothing after the end either: the next op is a new write.
    coll.insert_one(doc! {"_id": 99, "k": -99})
        .await
        .expect("insert");
    assert_eq!(take_ops(&mut again, 1).await[0].id, Some(Bson::Int32(99)));
}

/// A `mongodb://` URI for a `config.shards` `host` string (`set/h1,h2`).
fn shard_uri(host: &str) -> String {
    match host.split_once('/') {
        Some((set, hosts)) => format!("mongodb://{hosts}/?replicaSet={set}"),
        None => format!("mongodb://{host}/"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_shards_tails_the_shard_clients_it_is_given() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let (ids, ns) = s.split_over_two("multi").await;
    let reply = s.admin(doc! {"listShards": 1}).await;
    let mut shards = Vec::new();
    for d in reply.get_array("shards").expect("shards") {
        let d = d.as_document().expect("a shard");
        let uri = shard_uri(d.get_str("host").expect("host"));
        let client = Client::with_uri_str(&uri).await.expect("shard client");
        shards.push((d.get_str("_id").expect("_id").to_owned(), client));
    }
    let now = cluster_time(&s.router).await.expect("cluster time");
    let mut ops = ClusterStream::from_shards(
        shards,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now)),
    );
    for i in [-1, 1, -2, 2] {
        s.coll(&ns)
            .insert_one(doc! {"_id": i, "k": i})
            .await
            .expect("insert");
    }
    let got = take_ops(&mut ops, 4).await;
    assert_eq!(common::int_ids(&got), [-1, 1, -2, 2]);
    let on: Vec<&str> = got.iter().map(shard_of).collect();
    assert_eq!(on, [&ids[0], &ids[1], &ids[0], &ids[1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shard_position_is_position_lost_naming_the_shard() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let ids = s.shard_ids().await;
    let ancient = bson::Timestamp {
        time: 1,
        increment: 0,
    };
    let positions = ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                mongotail::checkpoint::OplogProgress::new(ancient),
            )
        })
        .collect();
    let mut ops = ClusterStream::new(&s.router, ClusterOptions::new().resume_from(positions));
    let item = tokio::time::timeout(WAIT, ops.next())
        .await
        .expect("no deadlock")
        .expect("an item");
    match item {
        Err(Error::PositionLost {
            position: Position::Shard { shard, ts },
            ..
        }) => {
            assert!(ids.contains(&shard));
            assert_eq!(ts, ancient);
        }
        other => panic!("expected a lost shard position, got {other:?}"),
    }
    assert!(
        ops.next().await.is_none(),
        "the stream ends rather than skip the shard"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_streams_and_direct_reads_work_through_the_router() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let ids = s.shard_ids().await;
    let db = unique_db("router");
    s.admin(doc! {"enableSharding": &db, "primaryShard": &ids[0]})
        .await;
    let ns = Namespace::parse(&format!("{db}.c")).expect("namespace");
    s.admin(doc! {"shardCollection": ns.to_string(), "key": {"region": 1, "_id": 1}})
        .await;
    s.admin(doc! {"split": ns.to_string(), "middle": {"region": "m", "_id": Bson::MinKey}})
        .await;
    s.admin(doc! {"moveChunk": ns.to_string(), "find": {"region": "z", "_id": 0}, "to": &ids[1], "_waitForDelete": true})
        .await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let mut events = ChangeStreamSource::new(
        &s.router,
        ChangeStreamOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now)),
    );
    let coll = s.coll(&ns);
    coll.insert_many([
        doc! {"_id": 1, "region": "eu"},
        doc! {"_id": 2, "region": "us"},
    ])
    .await
    .expect("inserts");
    coll.delete_one(doc! {"_id": 2, "region": "us"})
        .await
        .expect("delete");
    let got = take_ops(&mut events, 3).await;
    let keys: Vec<Option<Document>> = got.iter().map(|o| o.document_key.clone()).collect();
    assert_eq!(
        keys,
        [
            Some(doc! {"region": "eu", "_id": 1}),
            Some(doc! {"region": "us", "_id": 2}),
            Some(doc! {"region": "us", "_id": 2}),
        ]
    );
    assert_eq!(got[2].kind, OpKind::Delete);

    coll.insert_one(doc! {"_id": 3, "region": "zz"})
        .await
        .expect("insert");
    let read: Vec<Op> = DirectReads::new(&s.router, DirectOptions::new().namespace(ns.clone()))
        .try_collect()
        .await
        .expect("direct reads");
    let mut ids_read = common::int_ids(&read);
    ids_read.sort();
    assert_eq!(ids_read, [1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_tails_every_shard_through_a_router_with_the_cluster_option() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let (ids, ns) = s.split_over_two("start").await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let options = TailOptions::new()
        .start(StartAt::After(now))
        .cluster(ClusterOptions::new().namespace(ns.clone()));
    assert!(options.oplog.is_none(), "a router has no oplog of its own");
    let (mut ops, handle) = start(&s.router, options);
    for i in [1, -1] {
        s.coll(&ns)
            .insert_one(doc! {"_id": i, "k": i})
            .await
            .expect("insert");
    }
    let got = take_ops(&mut ops, 2).await;
    assert_eq!(common::int_ids(&got), [1, -1]);
    assert_eq!(
        got.iter().map(shard_of).collect::<Vec<_>>(),
        [&ids[1], &ids[0]]
    );
    let positions = handle.cluster().expect("a cluster source").positions();
    assert!(positions[&ids[0]].ts >= got[1].timestamp);
    assert!(positions[&ids[1]].ts >= got[0].timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_config_server_shards_go_on_and_new_ones_come_from_list_shards() {
    let Some(mut s) = Sharded::start(2).await else {
        return;
    };
    if s.external("sets a fail point on the embedded config server") {
        return;
    }
    let (_, ns) = s.split_over_two("noconfig").await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let app = app_named("mt-cluster-test");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now))
            .client_options(app)
            .shard_poll_interval(Duration::from_millis(200)),
    );
    s.coll(&ns)
        .insert_one(doc! {"_id": 1, "k": 1})
        .await
        .expect("insert");
    assert_eq!(common::int_ids(&take_ops(&mut ops, 1).await), [1]);

    // The config server now fails every read of this stream's connections.
    let config_uri = s.sim.as_ref().expect("embedded").config_uri();
    let config = Client::with_uri_str(config_uri).await.expect("config");
    config
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn",
            "data": {"failCommands": ["find", "getMore"], "appName": "mt-cluster-test", "errorCode": 6}})
        .await
        .expect("configureFailPoint");
    for i in [2, -2] {
        s.coll(&ns)
            .insert_one(doc! {"_id": i, "k": i})
            .await
            .expect("insert");
    }
    assert_eq!(common::int_ids(&take_ops(&mut ops, 2).await), [2, -2]);

    let sim = s.sim.as_mut().expect("embedded");
    let added = tokio::task::block_in_place(|| sim.add_shard()).expect("add a shard");
    s.admin(doc! {"split": ns.to_string(), "middle": {"k": 100}})
        .await;
    s.admin(doc! {"moveChunk": ns.to_string(), "find": {"k": 100}, "to": &added, "_waitForDelete": true})
        .await;
    s.coll(&ns)
        .insert_one(doc! {"_id": 3, "k": 150})
        .await
        .expect("insert on the new shard");
    let op = take_ops(&mut ops, 1).await.remove(0);
    assert_eq!(
        (op.id, shard_of_owned(&op.position)),
        (Some(Bson::Int32(3)), added)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_restart_inside_a_two_shard_transaction_delivers_exactly_the_rest() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let (ids, ns) = s.split_over_two("cp").await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let coll = s.coll(&ns);
    coll.insert_many([doc! {"_id": 1, "k": -1}, doc! {"_id": 2, "k": 2}])
        .await
        .expect("inserts");
    let txn = vec![
        doc! {"_id": 3, "k": -3},
        doc! {"_id": 4, "k": 4},
        doc! {"_id": 5, "k": -5},
    ];
    transaction(&s, &ns, txn, true).await;
    coll.insert_many([doc! {"_id": 6, "k": 6}, doc! {"_id": 7, "k": -7}])
        .await
        .expect("inserts");

    let store = mongotail::checkpoint::MemoryStore::new();
    let options = TailOptions::new()
        .start(StartAt::After(now))
        .cluster(ClusterOptions::new().namespace(ns.clone()))
        .checkpoint(store.clone(), "sharded");
    let (mut ops, handle) = start(&s.router, options.clone());
    let mut all = take_ops(&mut ops, 7).await;
    // Acknowledge up to the first op of the transaction on the shard that has two of them.
    let cut = all
        .iter()
        .position(|o| o.txn.as_ref().is_some_and(|t| t.index == 0) && shard_of(o) == ids[0])
        .expect("the transaction's first op on the first shard");
    for op in &mut all[..=cut] {
        op.take_ack().expect("an ack").ack();
    }
    handle.flush().await.expect("saved");
    handle.stop();
    let saved = mongotail::checkpoint::CheckpointStore::load(&store, "sharded")
        .await
        .expect("load")
        .expect("a checkpoint");
    assert_eq!(
        saved.shards[&ids[0]],
        mongotail::checkpoint::OplogProgress::inside(all[cut].timestamp, 0)
    );

    let (mut again, handle) = start(&s.router, options);
    let rest = take_ops(&mut again, all.len() - cut - 1).await;
    assert_eq!(kinds_ids(&rest), kinds_ids(&all[cut + 1..]));
    coll.insert_one(doc! {"_id": 99, "k": 99})
        .await
        .expect("insert");
    assert_eq!(take_ops(&mut again, 1).await[0].id, Some(Bson::Int32(99)));
    handle.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_shard_is_retried_and_the_stream_waits_for_it() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    if s.external("sets a fail point on an embedded shard") {
        return;
    }
    let (ids, ns) = s.split_over_two("down").await;
    // Every read of this stream's connections to the first shard fails (a transient
    // error), from before the stream starts.
    let shard = Client::with_uri_str(s.sim.as_ref().expect("embedded").shard_uri(0))
        .await
        .expect("shard client");
    let fail = |mode: Bson| {
        doc! {"configureFailPoint": "failCommand", "mode": mode,
        "data": {"failCommands": ["find", "getMore"], "appName": "mt-down-test", "errorCode": 91}}
    };
    shard
        .database("admin")
        .run_command(fail("alwaysOn".into()))
        .await
        .expect("fail point on");
    let now = cluster_time(&s.router).await.expect("cluster time");
    let app = app_named("mt-down-test");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now))
            .client_options(app),
    );
    for (id, k) in [(1, -1), (2, 2)] {
        s.coll(&ns)
            .insert_one(doc! {"_id": id, "k": k})
            .await
            .expect("insert");
    }
    // Drive the stream while the first shard fails: whatever it yields counts.
    let mut got = Vec::new();
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(500), ops.next()).await {
        got.push(item.expect("transient errors are retried, not yielded"));
    }
    shard
        .database("admin")
        .run_command(fail("off".into()))
        .await
        .expect("fail point off");
    let more = 2 - got.len();
    got.extend(take_ops(&mut ops, more).await);
    // The second shard's later insert waited for the first shard's earlier one.
    assert_eq!(common::int_ids(&got), [1, 2]);
    assert_eq!(shard_of(&got[0]), ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_shards_with_the_config_server_follows_new_shards() {
    let Some(mut s) = Sharded::start(2).await else {
        return;
    };
    if s.external("adds a shard to the embedded cluster") {
        return;
    }
    let (_, ns) = s.split_over_two("listen").await;
    let reply = s.admin(doc! {"listShards": 1}).await;
    let mut shards = Vec::new();
    for d in reply.get_array("shards").expect("shards") {
        let d = d.as_document().expect("a shard");
        let uri = shard_uri(d.get_str("host").expect("host"));
        let client = Client::with_uri_str(&uri).await.expect("shard client");
        shards.push((d.get_str("_id").expect("_id").to_owned(), client));
    }
    let map = s.admin(doc! {"getShardMap": 1}).await;
    let config_host = map
        .get_document("map")
        .expect("map")
        .get_str("config")
        .expect("config");
    let config = Client::with_uri_str(shard_uri(config_host))
        .await
        .expect("config client");
    let now = cluster_time(&s.router).await.expect("cluster time");
    let options = ClusterOptions::new()
        .namespace(ns.clone())
        .start(StartAt::After(now));
    let mut ops = ClusterStream::from_shards(shards, options).follow_config_server(&config);

    let sim = s.sim.as_mut().expect("embedded");
    let added = tokio::task::block_in_place(|| sim.add_shard()).expect("add a shard");
    s.admin(doc! {"split": ns.to_string(), "middle": {"k": 100}})
        .await;
    s.admin(doc! {"moveChunk": ns.to_string(), "find": {"k": 100}, "to": &added, "_waitForDelete": true})
        .await;
    for (id, k) in [(1, 150), (2, -2), (3, 2)] {
        s.coll(&ns)
            .insert_one(doc! {"_id": id, "k": k})
            .await
            .expect("insert");
    }
    let got = take_ops(&mut ops, 3).await;
    assert_eq!(common::int_ids(&got), [1, 2, 3]);
    assert_eq!(shard_of(&got[0]), added);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_makes_every_shard_continue_after_the_time() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let (_, ns) = s.split_over_two("seek").await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now)),
    );
    for i in [-1, 1, -2, 2] {
        s.coll(&ns)
            .insert_one(doc! {"_id": i, "k": i})
            .await
            .expect("insert");
    }
    let first = take_ops(&mut ops, 4).await;
    assert_eq!(common::int_ids(&first), [-1, 1, -2, 2]);
    ops.control().seek(first[1].timestamp);
    let again = take_ops(&mut ops, 2).await;
    assert_eq!(kinds_ids(&again), kinds_ids(&first[2..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_busy_with_other_namespaces_does_not_hold_the_stream_back() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let ids = s.shard_ids().await;
    let db = unique_db("busy");
    let ns = s.split_collection(&db, &ids[0], &ids[1]).await;
    let now = cluster_time(&s.router).await.expect("cluster time");
    let mut ops = ClusterStream::new(
        &s.router,
        ClusterOptions::new()
            .namespace(ns.clone())
            .start(StartAt::After(now)),
    );
    // Keep the second shard busy (no periodic no-op) with writes to another collection
    // whose only chunk lives there.
    let other = Namespace::new(&db, "other").expect("namespace");
    s.admin(doc! {"shardCollection": other.to_string(), "key": {"k": 1}})
        .await;
    s.admin(doc! {"moveChunk": other.to_string(), "find": {"k": 0}, "to": &ids[1], "_waitForDelete": true})
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let (coll, stop) = (s.coll(&other), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                coll.insert_one(doc! {"_id": i, "k": i})
                    .await
                    .expect("busy write");
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // One write on the first shard: released once the busy shard's tail has passed it.
    s.coll(&ns)
        .insert_one(doc! {"_id": 1, "k": -1})
        .await
        .expect("insert");
    let got = take_ops(&mut ops, 1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.await.expect("busy writer");
    assert_eq!(common::int_ids(&got), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_checkpointed_start_saves_its_cluster_start_before_any_shard_position() {
    let Some(s) = Sharded::start(2).await else {
        return;
    };
    let (_, ns) = s.split_over_two("cp0").await;
    let store = mongotail::checkpoint::MemoryStore::new();
    let options = TailOptions::new()
        .cluster(ClusterOptions::new().namespace(ns.clone()))
        .checkpoint(store.clone(), "first");
    // The start is saved before the first op, even if the process dies before any shard
    // was read: here the stream is dropped right after its first poll.
    let (mut ops, _handle) = start(&s.router, options.clone());
    let _ = tokio::time::timeout(Duration::from_millis(200), ops.next()).await;
    drop(ops);
    let saved = mongotail::checkpoint::CheckpointStore::load(&store, "first")
        .await
        .expect("load")
        .expect("saved at the first poll");
    assert!(saved.cluster_start.is_some(), "{saved:?}");
    let coll = s.coll(&ns);
    coll.insert_many([doc! {"_id": 1, "k": -1}, doc! {"_id": 2, "k": 2}])
        .await
        .expect("inserts");
    let (mut again, handle) = start(&s.router, options);
    let ops = take_ops(&mut again, 2).await;
    let mut ids: Vec<_> = ops.iter().map(|o| o.id.clone()).collect();
    ids.sort_by_key(|id| format!("{id:?}"));
    assert_eq!(
        ids,
        [Some(Bson::Int32(1)), Some(Bson::Int32(2))],
        "written while down"
    );
    handle.stop();
}

/// Client options with only an application name (to tell the test's connections apart).
fn app_named(name: &str) -> mongodb::options::ClientOptions {
    let mut app = mongodb::options::ClientOptions::default();
    app.app_name = Some(name.into());
    app
}
