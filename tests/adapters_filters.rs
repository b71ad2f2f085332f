//! `filter_ns`, `filter`, `chain_filters`, `decode`, `decode_with`: what they keep, that
//! errors pass through in place, and waker behaviour.
// `mongotail::Error` is large by design (see the crate's `result_large_err` allow).
#![allow(clippy::result_large_err)]

use bson::{doc, Bson};
use futures::channel::mpsc;
use futures::{stream, StreamExt};
use mongotail::ext::{chain_filters, OpFilter};
use mongotail::{Error, ErrorKind, Namespace, Op, OpKind, OpStreamExt, Result};
use serde::Deserialize;
use tokio_test::{assert_pending, assert_ready, task};

fn op(ns: &str, kind: OpKind, id: i32) -> Result<Op> {
    Ok(
        Op::new(kind, Namespace::parse(ns).unwrap(), Some(Bson::Int32(id)))
            .with_data(doc! {"_id": id, "n": id}),
    )
}

fn ids(out: &[Result<Op>]) -> Vec<std::result::Result<i32, ErrorKind>> {
    out.iter()
        .map(|r| match r {
            Ok(op) => Ok(op.id.as_ref().and_then(Bson::as_i32).unwrap()),
            Err(e) => Err(e.kind()),
        })
        .collect()
}

fn input() -> Vec<Result<Op>> {
    vec![
        op("a.x", OpKind::Insert, 1),
        op("a.y", OpKind::Insert, 2),
        Err(Error::Config("boom".into())),
        op("a.x", OpKind::Delete, 3),
        op("b.x", OpKind::Update, 4),
    ]
}

#[tokio::test]
async fn filter_ns_sees_namespace_and_kind_and_passes_errors() {
    let mut seen = Vec::new();
    let out: Vec<Result<Op>> = stream::iter(input())
        .filter_ns(|ns, kind| {
            seen.push((ns.to_string(), kind.clone()));
            ns.db() == "a" && *kind != OpKind::Delete
        })
        .collect()
        .await;
    assert_eq!(ids(&out), [Ok(1), Ok(2), Err(ErrorKind::Config)]);
    assert_eq!(seen.len(), 4, "called once per op, never for errors");
    assert_eq!(seen[3], ("b.x".to_string(), OpKind::Update));
}

#[tokio::test]
async fn filter_and_chained_filters() {
    // With futures::StreamExt in scope, the call needs the trait's name.
    let once = OpStreamExt::filter(stream::iter(input()), |op: &Op| {
        op.id != Some(Bson::Int32(2))
    });
    let out: Vec<Result<Op>> = OpStreamExt::filter(once, |op: &Op| !op.is_delete())
        .collect()
        .await;
    assert_eq!(ids(&out), [Ok(1), Err(ErrorKind::Config), Ok(4)]);

    let filters: Vec<OpFilter> = vec![
        Box::new(|op: &Op| op.database() == "a"),
        Box::new(|op: &Op| op.collection() == "x"),
    ];
    let out: Vec<Result<Op>> = OpStreamExt::filter(stream::iter(input()), chain_filters(filters))
        .collect()
        .await;
    assert_eq!(ids(&out), [Ok(1), Err(ErrorKind::Config), Ok(3)]);

    let out: Vec<Result<Op>> = OpStreamExt::filter(stream::iter(input()), chain_filters(vec![]))
        .collect()
        .await;
    assert_eq!(out.len(), 5, "an empty chain keeps everything");
}

#[tokio::test]
async fn chain_stops_at_the_first_rejection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let filters: Vec<OpFilter> = vec![
        Box::new(|_: &Op| false),
        Box::new(move |_: &Op| {
            c.fetch_add(1, Ordering::SeqCst);
            true
        }),
    ];
    let mut f = chain_filters(filters);
    let op = op("a.x", OpKind::Insert, 1).unwrap();
    assert!(!f(&op));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn filters_forward_wakeups() {
    let (tx, rx) = mpsc::unbounded::<Result<Op>>();
    let mut s = task::spawn(rx.filter_ns(|ns, _| ns.coll() == "keep"));
    assert_pending!(s.poll_next());
    tx.unbounded_send(op("a.drop", OpKind::Insert, 1)).unwrap();
    assert!(s.is_woken());
    // Dropped op: the adapter polls on and returns Pending with the inner waker set.
    assert_pending!(s.poll_next());
    tx.unbounded_send(op("a.keep", OpKind::Insert, 2)).unwrap();
    assert!(s.is_woken());
    let got = assert_ready!(s.poll_next()).unwrap().unwrap();
    assert_eq!(got.id, Some(Bson::Int32(2)));
    drop(tx);
    assert!(assert_ready!(s.poll_next()).is_none());
}

#[derive(Debug, Deserialize, PartialEq)]
struct Doc {
    n: i32,
}

#[tokio::test]
async fn decode_errors_name_the_op_and_the_stream_goes_on() {
    let ns = Namespace::parse("a.x").unwrap();
    let input = vec![
        op("a.x", OpKind::Insert, 1),
        Ok(Op::new(OpKind::Insert, ns.clone(), Some(Bson::Int32(2))).with_data(doc! {"n": "two"})),
        Err(Error::Config("boom".into())),
        Ok(Op::new(OpKind::Delete, ns.clone(), Some(Bson::Int32(3)))),
        op("a.x", OpKind::Replace, 4),
    ];
    let out: Vec<Result<Op<Doc>>> = stream::iter(input).decode::<Doc>().collect().await;
    assert_eq!(out.len(), 5);
    assert_eq!(out[0].as_ref().unwrap().data, Some(Doc { n: 1 }));
    match &out[1] {
        Err(Error::Decode { namespace, id, .. }) => {
            assert_eq!(namespace, &ns);
            assert_eq!(id, &Some(Bson::Int32(2)));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(matches!(&out[2], Err(Error::Config(m)) if m == "boom"));
    let delete = out[3].as_ref().unwrap();
    assert!(delete.is_delete() && delete.data.is_none());
    let replace = out[4].as_ref().unwrap();
    assert_eq!(replace.data, Some(Doc { n: 4 }));
    assert_eq!(
        replace.document_key,
        Some(doc! {"_id": 4}),
        "everything else kept"
    );
}

#[tokio::test]
async fn decode_with_per_namespace() {
    #[derive(Debug, PartialEq)]
    enum Any {
        X(Doc),
        Raw(bson::Document),
    }
    let input = vec![op("a.x", OpKind::Insert, 1), op("a.y", OpKind::Insert, 2)];
    let mut namespaces = Vec::new();
    let out: Vec<Result<Op<Any>>> = stream::iter(input)
        .decode_with(|ns: &Namespace, d| {
            namespaces.push(ns.to_string());
            if ns.coll() == "x" {
                bson::from_document(d).map(Any::X)
            } else {
                Ok(Any::Raw(d))
            }
        })
        .collect()
        .await;
    assert_eq!(namespaces, ["a.x", "a.y"]);
    assert_eq!(out[0].as_ref().unwrap().data, Some(Any::X(Doc { n: 1 })));
    assert_eq!(
        out[1].as_ref().unwrap().data,
        Some(Any::Raw(doc! {"_id": 2, "n": 2}))
    );
}

#[test]
fn adapters_are_send_and_unpin() {
    fn check<T: Send + Unpin>(_: &T) {}
    let s = stream::iter(input());
    check(&s.filter_ns(|_, _| true));
    check(&OpStreamExt::filter(stream::iter(input()), |_| true));
    check(&stream::iter(input()).decode::<Doc>());
    let ring = mongotail::HashRing::new(["a"]).unwrap();
    check(&stream::iter(input()).consistent_shard(ring.worker("a").unwrap()));
}
