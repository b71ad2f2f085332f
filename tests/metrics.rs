//! The `metrics` feature: each source reports through the `metrics` facade, labelled by
//! source and namespace (against mongosim, or `MONGODB_URI`).
#![cfg(feature = "metrics")]

mod common;

use bson::{doc, Document};
use common::{next_op, unique_db, TestServer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use mongotail::{start, Namespace, OplogOptions, TailOptions};

#[tokio::test]
async fn sources_count_their_ops_by_source_and_namespace() {
    let server = TestServer::start().await;
    let db = unique_db("metrics");
    let ns = Namespace::new(db.clone(), "c").unwrap();
    let coll = server.client.database(&db).collection::<Document>("c");
    coll.insert_many((0..20).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    // The one test of this binary: it may install the process-wide recorder.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder");
    let options = TailOptions::new()
        .oplog(OplogOptions::new().namespace(ns.clone()))
        .direct_read(ns.clone());
    let (mut ops, handle) = start(&server.client, options);
    let mut direct = 0;
    while direct < 20 {
        let op = next_op(&mut ops).await;
        direct += usize::from(op.is_source_direct());
    }
    coll.insert_one(doc! {"_id": 100}).await.unwrap();
    loop {
        let op = next_op(&mut ops).await;
        if op.is_source_oplog() {
            break;
        }
    }
    handle.stop();
    let mut found = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        found.insert(format!("{} {}", key.key().name(), labels.join(",")), value);
    }
    let counter = |name: &str| match found.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {:?}", found.keys()),
    };
    assert_eq!(
        counter(&format!("mongotail_ops_total source=oplog,ns={ns}")),
        1
    );
    assert_eq!(
        counter(&format!("mongotail_direct_documents_read_total ns={ns}")),
        20
    );
    let gauge = found.get(&format!(
        "mongotail_last_op_timestamp_seconds source=oplog,ns={ns}"
    ));
    assert!(
        matches!(gauge, Some(DebugValue::Gauge(g)) if g.into_inner() > 0.0),
        "{gauge:?}"
    );
}
