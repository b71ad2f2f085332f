//! `batch_fetch` rules with a fake fetcher and paused time: batch size and deadline,
//! waker behaviour, partial batch at end of input, errors in the middle of a batch,
//! fetch failures, worker limit, orderings, bounded buffering, cancellation on drop.
// `mongotail::Error` is large by design (see the crate's `result_large_err` allow).
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{stream, FutureExt, Stream, StreamExt};
use mongotail::{Error, Namespace, Op, OpKind, OpStreamExt, Ordering, Result};
use tokio::time::{self, Instant};
use tokio_test::{assert_pending, assert_ready, task};

const WINDOW: Duration = Duration::from_millis(75);

#[derive(Debug, Clone)]
struct Call {
    ns: String,
    ids: Vec<Bson>,
    at: Instant,
}

/// Records every find; answers `{_id, v: <call number>}` for each id except `missing`,
/// after `latency` (per id: the largest in `slow`, else the default), failing for `fail_ns`.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    latency: Duration,
    slow: Vec<(i32, Duration)>,
    missing: Vec<i32>,
    fail_ns: Option<String>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Fake {
    fn fetcher(
        &self,
    ) -> impl Fn(Namespace, Vec<Bson>) -> BoxFuture<'static, Result<Vec<Document>>> + Send + 'static
    {
        let me = self.clone();
        move |ns: Namespace, ids: Vec<Bson>| {
            let me = me.clone();
            async move {
                let n = {
                    let mut calls = me.calls.lock().unwrap();
                    calls.push(Call {
                        ns: ns.to_string(),
                        ids: ids.clone(),
                        at: Instant::now(),
                    });
                    calls.len() as i32
                };
                let now = me.in_flight.fetch_add(1, AtomicOrdering::SeqCst) + 1;
                me.max_in_flight.fetch_max(now, AtomicOrdering::SeqCst);
                let latency = ids
                    .iter()
                    .filter_map(|id| {
                        me.slow
                            .iter()
                            .find(|(slow, _)| Some(*slow) == id.as_i32())
                            .map(|(_, d)| *d)
                    })
                    .max()
                    .unwrap_or(me.latency);
                if !latency.is_zero() {
                    time::sleep(latency).await;
                }
                me.in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
                if me.fail_ns.as_deref() == Some(&ns.to_string()) {
                    return Err(Error::Config(format!("fetch {n} failed")));
                }
                Ok(ids
                    .into_iter()
                    .filter(|id| !id.as_i32().is_some_and(|i| me.missing.contains(&i)))
                    .map(|id| doc! {"_id": id, "v": n})
                    .collect())
            }
            .boxed()
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

fn tagged(op: Op, tag: u32) -> Op {
    op.with_timestamp(Timestamp {
        time: 1,
        increment: tag,
    })
}

fn upd(coll: &str, id: i32, tag: u32) -> Result<Op> {
    Ok(tagged(
        Op::new(OpKind::Update, ns(coll), Some(Bson::Int32(id))),
        tag,
    ))
}

fn ins(coll: &str, id: i32, tag: u32) -> Result<Op> {
    Ok(tagged(
        Op::new(OpKind::Insert, ns(coll), Some(Bson::Int32(id))).with_data(doc! {"_id": id}),
        tag,
    ))
}

fn tag(item: &Result<Op>) -> Option<u32> {
    item.as_ref().ok().map(|op| op.timestamp.increment)
}

fn ids(call: &Call) -> Vec<i32> {
    call.ids.iter().filter_map(Bson::as_i32).collect()
}

/// An input that stays open: items sent through the returned sender.
fn channel() -> (
    mpsc::UnboundedSender<Result<Op>>,
    impl Stream<Item = Result<Op>>,
) {
    mpsc::unbounded()
}

#[tokio::test(start_paused = true)]
async fn full_batch_is_fetched_at_once() {
    let fake = Fake::default();
    let start = Instant::now();
    let (tx, rx) = channel();
    let mut s = rx.batch_fetch_with(fake.fetcher(), 3, WINDOW);
    for i in 0..3 {
        tx.unbounded_send(upd("db.c", i, i as u32)).unwrap();
    }
    for i in 0..3 {
        let op = s.next().await.unwrap().unwrap();
        assert_eq!(op.data, Some(doc! {"_id": i, "v": 1}));
        assert!(!op.document_missing);
    }
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(ids(&calls[0]), [0, 1, 2]);
    assert_eq!(
        calls[0].at, start,
        "a full batch does not wait for the window"
    );
}

#[tokio::test(start_paused = true)]
async fn partial_batch_waits_for_the_window_armed_by_its_first_op() {
    let fake = Fake::default();
    let (tx, rx) = channel();
    let mut s = task::spawn(rx.batch_fetch_with(fake.fetcher(), 10, WINDOW));
    assert_pending!(s.poll_next());
    // Idle for a while: no timer runs without a batch.
    time::sleep(Duration::from_millis(500)).await;
    assert!(!s.is_woken());
    let first = Instant::now();
    tx.unbounded_send(upd("db.c", 1, 1)).unwrap();
    assert!(s.is_woken());
    assert_pending!(s.poll_next());
    time::sleep(Duration::from_millis(50)).await;
    tx.unbounded_send(upd("db.c", 2, 2)).unwrap();
    assert_pending!(s.poll_next());
    assert!(fake.calls().is_empty());
    // The deadline counts from the first op, not the last.
    time::sleep(Duration::from_millis(24)).await;
    assert_pending!(s.poll_next());
    assert!(!s.is_woken());
    time::sleep(Duration::from_millis(1)).await;
    assert!(s.is_woken(), "deadline wakes the task");
    let op = assert_ready!(s.poll_next()).unwrap().unwrap();
    assert_eq!(op.data, Some(doc! {"_id": 1, "v": 1}));
    let op = assert_ready!(s.poll_next()).unwrap().unwrap();
    assert_eq!(op.data, Some(doc! {"_id": 2, "v": 1}));
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].at - first, WINDOW);

    // The next batch re-arms the (reset) timer from its own first op.
    time::sleep(Duration::from_millis(200)).await;
    let second = Instant::now();
    tx.unbounded_send(upd("db.c", 3, 3)).unwrap();
    assert_pending!(s.poll_next());
    time::sleep(WINDOW).await;
    assert!(s.is_woken());
    let op = assert_ready!(s.poll_next()).unwrap().unwrap();
    assert_eq!(op.data, Some(doc! {"_id": 3, "v": 2}));
    assert_eq!(fake.calls()[1].at - second, WINDOW);
    drop(tx);
    assert_eq!(assert_ready!(s.poll_next()).map(|r| r.is_ok()), None);
}

#[tokio::test(start_paused = true)]
async fn ops_without_fetch_pass_at_once_and_wake() {
    let fake = Fake::default();
    let (tx, rx) = channel();
    let mut s = task::spawn(rx.batch_fetch_with(fake.fetcher(), 10, WINDOW));
    assert_pending!(s.poll_next());
    tx.unbounded_send(ins("db.c", 1, 1)).unwrap();
    assert!(s.is_woken());
    let op = assert_ready!(s.poll_next()).unwrap().unwrap();
    assert_eq!(op.timestamp.increment, 1);
    assert_pending!(s.poll_next());
    assert!(fake.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn fetch_completion_wakes_the_task() {
    let fake = Fake {
        latency: Duration::from_millis(30),
        ..Fake::default()
    };
    let (tx, rx) = channel();
    let mut s = task::spawn(rx.batch_fetch_with(fake.fetcher(), 1, WINDOW));
    tx.unbounded_send(upd("db.c", 7, 1)).unwrap();
    assert_pending!(s.poll_next());
    assert_eq!(fake.calls().len(), 1, "batch of one sealed and started");
    // FuturesUnordered yields once (self-wake) after polling a new find; re-polled, it
    // waits for the find itself.
    if s.is_woken() {
        assert_pending!(s.poll_next());
    }
    assert!(!s.is_woken());
    time::sleep(Duration::from_millis(29)).await;
    assert!(!s.is_woken());
    time::sleep(Duration::from_millis(1)).await;
    assert!(s.is_woken());
    let op = assert_ready!(s.poll_next()).unwrap().unwrap();
    assert_eq!(op.data, Some(doc! {"_id": 7, "v": 1}));
}

#[tokio::test(start_paused = true)]
async fn partial_batch_is_flushed_at_end_of_input() {
    let fake = Fake::default();
    let start = Instant::now();
    let input = stream::iter(vec![upd("db.c", 1, 1), upd("db.c", 2, 2)]);
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 50, WINDOW)
        .collect()
        .await;
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|r| r.as_ref().unwrap().data.is_some()));
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].at, start,
        "end of input does not wait for the window"
    );
}

#[tokio::test(start_paused = true)]
async fn input_error_in_the_middle_of_a_batch() {
    let fake = Fake::default();
    let input = stream::iter(vec![
        upd("db.c", 1, 1),
        ins("db.c", 9, 2),
        upd("db.c", 2, 3),
        Err(Error::Config("source failed".into())),
        upd("db.c", 3, 4),
    ]);
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 50, WINDOW)
        .ordered(Ordering::Any)
        .collect()
        .await;
    assert_eq!(out.len(), 5);
    // Buffered ops go out (fetched) before the error, even with `Any`.
    assert_eq!(
        out[..3].iter().map(tag).collect::<Vec<_>>(),
        [Some(2), Some(1), Some(3)]
    );
    assert!(out[..3].iter().all(|r| r.as_ref().unwrap().data.is_some()));
    assert!(matches!(&out[3], Err(Error::Config(m)) if m == "source failed"));
    assert_eq!(tag(&out[4]), Some(4));
    assert_eq!(out[4].as_ref().unwrap().data, Some(doc! {"_id": 3, "v": 2}));
    let calls = fake.calls();
    assert_eq!(
        calls.iter().map(ids).collect::<Vec<_>>(),
        [vec![1, 2], vec![3]]
    );
}

#[tokio::test(start_paused = true)]
async fn failed_fetch_yields_the_error_then_the_ops_unfetched() {
    let fake = Fake {
        fail_ns: Some("db.bad".into()),
        ..Fake::default()
    };
    let input = stream::iter(vec![
        upd("db.good", 1, 1),
        upd("db.bad", 1, 2),
        upd("db.bad", 2, 3),
        upd("db.good", 2, 4),
    ]);
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 50, WINDOW)
        .collect()
        .await;
    assert_eq!(out.len(), 5, "{out:?}");
    assert_eq!(tag(&out[0]), Some(1));
    assert!(out[0].as_ref().unwrap().data.is_some());
    assert!(matches!(&out[1], Err(Error::Config(m)) if m.contains("failed")));
    for (item, want) in out[2..4].iter().zip([2, 3]) {
        let op = item.as_ref().unwrap();
        assert_eq!(op.timestamp.increment, want);
        assert!(
            op.needs_fetch() && !op.document_missing,
            "delivered unfetched"
        );
    }
    assert_eq!(tag(&out[4]), Some(4));
    assert!(out[4].as_ref().unwrap().data.is_some());
    // One find per namespace per batch.
    let mut calls: Vec<(String, Vec<i32>)> = fake
        .calls()
        .iter()
        .map(|c| (c.ns.clone(), ids(c)))
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            ("db.bad".to_string(), vec![1, 2]),
            ("db.good".to_string(), vec![1, 2])
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn missing_documents_and_duplicate_ids() {
    let fake = Fake {
        missing: vec![2],
        ..Fake::default()
    };
    let input = stream::iter(vec![
        upd("db.c", 1, 1),
        upd("db.c", 2, 2),
        upd("db.c", 1, 3),
        upd("db.c", 1, 4),
    ]);
    let out: Vec<Op> = input
        .batch_fetch_with(fake.fetcher(), 50, WINDOW)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(ids(&fake.calls()[0]), [1, 2], "each id once per find");
    assert_eq!(out.len(), 4);
    for i in [0, 2, 3] {
        assert_eq!(out[i].data, Some(doc! {"_id": 1, "v": 1}));
    }
    assert_eq!(out[1].data, None);
    assert!(out[1].document_missing);
}

#[tokio::test(start_paused = true)]
async fn workers_bound_concurrent_finds() {
    let fake = Fake {
        latency: Duration::from_millis(10),
        ..Fake::default()
    };
    let input = stream::iter((0..40).map(|i| upd("db.c", i, i as u32)));
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 4, WINDOW)
        .workers(3)
        .collect()
        .await;
    assert_eq!(out.len(), 40);
    assert_eq!(
        out.iter().map(tag).collect::<Vec<_>>(),
        (0..40).map(Some).collect::<Vec<_>>(),
        "oplog order by default"
    );
    assert_eq!(fake.calls().len(), 10);
    assert_eq!(fake.max_in_flight.load(AtomicOrdering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn document_ordering_does_not_wait_for_other_documents() {
    let fake = Fake {
        slow: vec![(1, Duration::from_secs(10))],
        ..Fake::default()
    };
    let start = Instant::now();
    let (tx, rx) = channel();
    let mut s = rx
        .batch_fetch_with(fake.fetcher(), 1, WINDOW)
        .workers(2)
        .ordered(Ordering::Document);
    tx.unbounded_send(upd("db.c", 1, 1)).unwrap(); // slow find
    tx.unbounded_send(ins("db.c", 2, 2)).unwrap();
    tx.unbounded_send(upd("db.c", 3, 3)).unwrap(); // fast find
    tx.unbounded_send(ins("db.c", 1, 4)).unwrap(); // must wait for op 1
    let a = s.next().await.unwrap().unwrap();
    let b = s.next().await.unwrap().unwrap();
    assert_eq!((a.timestamp.increment, b.timestamp.increment), (2, 3));
    assert!(Instant::now() - start < Duration::from_secs(1));
    let c = s.next().await.unwrap().unwrap();
    let d = s.next().await.unwrap().unwrap();
    assert_eq!((c.timestamp.increment, d.timestamp.increment), (1, 4));
    assert!(Instant::now() - start >= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn oplog_ordering_holds_everything_behind_a_slow_fetch() {
    let fake = Fake {
        slow: vec![(1, Duration::from_secs(10))],
        ..Fake::default()
    };
    let input = stream::iter(vec![
        upd("db.c", 1, 1),
        ins("db.c", 2, 2),
        upd("db.c", 3, 3),
    ]);
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 1, WINDOW)
        .workers(2)
        .collect()
        .await;
    assert_eq!(
        out.iter().map(tag).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3)]
    );
}

#[tokio::test(start_paused = true)]
async fn namespace_ordering_holds_only_the_same_namespace() {
    let fake = Fake {
        slow: vec![(1, Duration::from_secs(10))],
        ..Fake::default()
    };
    let input = stream::iter(vec![
        upd("db.a", 1, 1),
        ins("db.a", 2, 2),
        ins("db.b", 1, 3),
        upd("db.b", 5, 4),
    ]);
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 1, WINDOW)
        .workers(2)
        .ordered(Ordering::Namespace)
        .collect()
        .await;
    assert_eq!(
        out.iter().map(tag).collect::<Vec<_>>(),
        [Some(3), Some(4), Some(1), Some(2)]
    );
}

#[tokio::test(start_paused = true)]
async fn commands_are_barriers_under_document_ordering() {
    let fake = Fake {
        slow: vec![(1, Duration::from_secs(1))],
        ..Fake::default()
    };
    let drop = Ok(tagged(Op::new(OpKind::DropCollection, ns("db.c"), None), 3));
    let input = stream::iter(vec![
        upd("db.c", 1, 1),
        ins("db.c", 2, 2),
        drop,
        ins("db.c", 4, 4),
    ]);
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 1, WINDOW)
        .ordered(Ordering::Document)
        .collect()
        .await;
    assert_eq!(
        out.iter().map(tag).collect::<Vec<_>>(),
        [Some(2), Some(1), Some(3), Some(4)]
    );
}

#[tokio::test(start_paused = true)]
async fn buffering_is_bounded() {
    let polled = Arc::new(AtomicUsize::new(0));
    let counter = polled.clone();
    let input = stream::iter((0..10_000).map(|i| upd("db.c", i, i as u32))).inspect(move |_| {
        counter.fetch_add(1, AtomicOrdering::SeqCst);
    });
    // A fetcher that never answers.
    let fetcher = |_: Namespace, _: Vec<Bson>| -> BoxFuture<'static, Result<Vec<Document>>> {
        futures::future::pending().boxed()
    };
    let mut s = task::spawn(input.batch_fetch_with(fetcher, 10, WINDOW).workers(2));
    assert_pending!(s.poll_next());
    time::sleep(Duration::from_secs(1)).await;
    assert_pending!(s.poll_next());
    assert_eq!(polled.load(AtomicOrdering::SeqCst), 10 * (2 + 1));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_cancels_fetches() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, AtomicOrdering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let fetcher = move |_: Namespace, _: Vec<Bson>| -> BoxFuture<'static, Result<Vec<Document>>> {
        let guard = Guard(d.clone());
        async move {
            let _guard = guard;
            futures::future::pending().await
        }
        .boxed()
    };
    let mut s =
        task::spawn(stream::iter(vec![upd("db.c", 1, 1)]).batch_fetch_with(fetcher, 1, WINDOW));
    assert_pending!(s.poll_next());
    assert_eq!(dropped.load(AtomicOrdering::SeqCst), 0);
    drop(s);
    assert_eq!(dropped.load(AtomicOrdering::SeqCst), 1);
}

#[test]
#[should_panic(expected = "max_batch must be at least 1")]
fn zero_batch_size_panics() {
    let _ = stream::empty::<Result<Op>>().batch_fetch_with(Fake::default().fetcher(), 0, WINDOW);
}

#[test]
#[should_panic(expected = "workers must be at least 1")]
fn zero_workers_panics() {
    let _ = stream::empty::<Result<Op>>()
        .batch_fetch_with(Fake::default().fetcher(), 1, WINDOW)
        .workers(0);
}

#[test]
fn streams_are_send_and_unpin() {
    fn assert_send_unpin<T: Send + Unpin>(_: &T) {}
    fn assert_type_send_unpin<T: Send + Unpin>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    let s = stream::empty::<Result<Op>>().batch_fetch_with(Fake::default().fetcher(), 1, WINDOW);
    assert_send_unpin(&s);
    assert_type_send_unpin::<
        mongotail::ext::BatchFetch<mongotail::OplogStream, mongotail::ext::ClientFetcher>,
    >();
    assert_send_sync::<mongotail::HashRing>();
    assert_send_sync::<mongotail::RingWorker>();
    assert_send_sync::<mongotail::ext::ClientFetcher>();
}

/// Real time: an input that is always ready (a burst) must not hold an open batch past
/// its window, nor finished finds behind it. (The fake find answers at once: a find that
/// needs the runtime's timer or network only completes when the task yields, which a
/// real input does.)
#[tokio::test(flavor = "current_thread")]
async fn busy_input_does_not_starve_the_window_or_finished_finds() {
    let fake = Fake::default();
    let input = stream::iter(
        std::iter::once(upd("db.c", 0, 0)).chain((1..4000).map(|i| ins("db.c", i, i as u32))),
    )
    // Always ready, but takes real time.
    .inspect(|_| std::thread::sleep(Duration::from_micros(250)));
    let out: Vec<Result<Op>> = input
        .batch_fetch_with(fake.fetcher(), 50, Duration::from_millis(20))
        .ordered(Ordering::Document)
        .collect()
        .await;
    assert_eq!(out.len(), 4000);
    let at = out.iter().position(|r| tag(r) == Some(0)).unwrap();
    // 20 ms is about 80 inputs; allow a wide margin, far below the end of the burst.
    assert!(at < 2000, "the update came out at position {at} of 4000");
    assert!(out[at].as_ref().unwrap().data.is_some());
}

#[tokio::test(start_paused = true)]
async fn endless_window_waits_for_size_or_end_of_input() {
    let fake = Fake::default();
    let (tx, rx) = channel();
    let mut s = task::spawn(rx.batch_fetch_with(fake.fetcher(), 2, Duration::MAX));
    tx.unbounded_send(upd("db.c", 1, 1)).unwrap();
    assert_pending!(s.poll_next());
    time::sleep(Duration::from_secs(3600)).await;
    assert_pending!(s.poll_next());
    assert!(fake.calls().is_empty());
    drop(tx);
    let op = assert_ready!(s.poll_next()).unwrap().unwrap();
    assert!(op.data.is_some());
}

#[tokio::test(start_paused = true)]
async fn finds_sharing_a_document_run_one_after_another() {
    let fake = Fake {
        latency: Duration::from_millis(10),
        slow: vec![(1, Duration::from_millis(100))],
        ..Fake::default()
    };
    let start = Instant::now();
    // Batches of two: {1, 2} (slow), {1, 3}, {4, 5}; four workers by default.
    let input = stream::iter(
        [1, 2, 1, 3, 4, 5]
            .into_iter()
            .zip(1..)
            .map(|(id, t)| upd("db.c", id, t)),
    );
    let out: Vec<Op> = input
        .batch_fetch_with(fake.fetcher(), 2, WINDOW)
        .map(|op| op.unwrap())
        .collect()
        .await;
    let calls = fake.calls();
    let started = |want: [i32; 2]| {
        let call = calls.iter().find(|c| ids(c) == want).expect("a find");
        call.at - start
    };
    assert_eq!(started([1, 2]), Duration::ZERO);
    assert_eq!(
        started([4, 5]),
        Duration::ZERO,
        "finds of other documents go past"
    );
    assert_eq!(
        started([1, 3]),
        Duration::from_millis(100),
        "the find sharing document 1 waits for the one in flight"
    );
    // Document 1 as fetched for its second update is the later read.
    let v = |tag: u32| {
        let op = out.iter().find(|op| op.timestamp.increment == tag).unwrap();
        op.data.as_ref().unwrap().get_i32("v").unwrap()
    };
    assert!(
        v(3) > v(1),
        "fetched documents of one document never go back in time"
    );
    assert_eq!(
        out.iter()
            .map(|op| op.timestamp.increment)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
}
