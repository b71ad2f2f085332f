//! `start`: merged sources and the control handle, against a server (mongosim, or
//! `MONGODB_URI`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bson::{doc, Document};
use common::{assert_quiet, int_ids, take_ops, unique_db, TestServer, WAIT};
use futures::StreamExt;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongotail::{
    cluster_time, first_op_timestamp, last_op_timestamp, start, ChangeStreamOptions, DirectOptions,
    Error, Handle, Namespace, OplogOptions, Source, StartAt, TailOptions,
};

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

/// A client that counts started commands by name.
async fn counting_client(
    server: &TestServer,
    name: &'static str,
) -> (mongodb::Client, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    let client = server
        .client_with(|o| {
            o.command_event_handler = Some(EventHandler::callback(move |ev| {
                if let CommandEvent::Started(s) = ev {
                    if s.command_name == name {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        })
        .await;
    (client, n)
}

#[tokio::test]
async fn direct_reads_then_live_changes_with_completion_signal() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_mix");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_many((0..100).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let target = ns(&format!("{db_name}.c"));
    let (mut ops, handle) = start(
        &server.client,
        TailOptions::new()
            .oplog(
                OplogOptions::new()
                    .start_after(server.latest_ts().await)
                    .namespace(target.clone()),
            )
            .direct(DirectOptions::new().namespace(target.clone())),
    );
    let done = {
        let h = handle.clone();
        tokio::spawn(async move { h.direct_reads_done().await })
    };
    let direct = take_ops(&mut ops, 100).await;
    assert!(direct.iter().all(|o| o.is_source_direct()));
    let mut ids = int_ids(&direct);
    ids.sort_unstable();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    c.insert_one(doc! {"_id": 1000}).await.unwrap();
    let live = take_ops(&mut ops, 1).await;
    assert!(live[0].is_source_oplog());
    assert_eq!(int_ids(&live), vec![1000]);
    tokio::time::timeout(WAIT, done)
        .await
        .expect("direct reads signalled")
        .unwrap()
        .expect("completed, not stopped");
}

#[tokio::test]
async fn change_streams_through_start() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_cs");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let (mut ops, handle) = start(
        &server.client,
        TailOptions::new().watch(ns(&format!("{db_name}.c"))),
    );
    // Direct reads: none, so the signal is immediate.
    handle.direct_reads_done().await.unwrap();
    // Poll until the change stream has opened.
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.resume_tokens().iter().any(Option::is_none) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "change stream never opened"
        );
        assert_quiet(&mut ops, Duration::from_millis(20)).await;
    }
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let got = take_ops(&mut ops, 1).await;
    assert!(got[0].is_source_change_stream() && got[0].is_insert());
}

async fn oplog_start(
    server: &TestServer,
    db_name: &str,
) -> (mongotail::OpStream, mongotail::Handle) {
    start(
        &server.client,
        TailOptions::new().oplog(
            OplogOptions::new()
                .start_after(server.latest_ts().await)
                .max_await_time(Duration::from_millis(100))
                .namespace(ns(&format!("{db_name}.c"))),
        ),
    )
}

#[tokio::test]
async fn pause_resume_and_since() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_pause");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let (mut ops, handle) = oplog_start(&server, &db_name).await;
    handle.pause();
    assert!(handle.is_paused());
    for i in 1..=3 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    assert_quiet(&mut ops, Duration::from_millis(500)).await;
    handle.resume();
    let got = take_ops(&mut ops, 3).await;
    assert_eq!(int_ids(&got), vec![1, 2, 3]);
    assert_eq!(handle.oplog_position(), Some(got[2].timestamp));
    handle.since(got[0].timestamp).unwrap();
    assert_eq!(int_ids(&take_ops(&mut ops, 2).await), vec![2, 3]);
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn stop_ends_the_stream_and_kills_cursors() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_stop");
    let (client, kills) = counting_client(&server, "killCursors").await;
    let c = client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let (mut ops, handle) = start(
        &client,
        TailOptions::new()
            .oplog(
                OplogOptions::new()
                    .start_after(server.latest_ts().await)
                    .namespace(ns(&format!("{db_name}.c"))),
            )
            .direct(
                DirectOptions::new()
                    .namespace(ns(&format!("{db_name}.c")))
                    .batch_size(1),
            ),
    );
    take_ops(&mut ops, 1).await;
    handle.stop();
    handle.stop(); // idempotent
    assert!(handle.is_stopped());
    assert!(ops.next().await.is_none());
    assert!(matches!(
        handle.since(bson::Timestamp {
            time: 1,
            increment: 0
        }),
        Err(Error::Stopped)
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    while kills.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no killCursors after stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropping the stream is as good as stopping it.
    let (ops2, handle2) = oplog_start(&server, &db_name).await;
    drop(ops2);
    assert!(handle2.is_stopped());
}

#[tokio::test]
async fn direct_reads_done_errs_when_stopped_first() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_stopdr");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let (ops, handle) = start(
        &server.client,
        TailOptions::new()
            .disable_oplog()
            .direct_read(ns(&format!("{db_name}.c"))),
    );
    drop(ops);
    assert!(matches!(
        handle.direct_reads_done().await,
        Err(Error::Stopped)
    ));
}

#[tokio::test]
async fn stalled_consumer_stops_reading() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_stall");
    let (client, get_mores) = counting_client(&server, "getMore").await;
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": -1}).await.unwrap();
    let (mut ops, _handle) = start(
        &client,
        TailOptions::new().oplog(
            OplogOptions::new()
                .start_after(server.latest_ts().await)
                .batch_size(100)
                .namespace(ns(&format!("{db_name}.c"))),
        ),
    );
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    assert_eq!(int_ids(&take_ops(&mut ops, 1).await), vec![0]);
    // The consumer stalls while 5,000 entries are written.
    for chunk in (1..=5_000).collect::<Vec<i32>>().chunks(1_000) {
        c.insert_many(chunk.iter().map(|i| doc! {"_id": *i}))
            .await
            .unwrap();
    }
    let before = get_mores.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get_mores.load(Ordering::Relaxed),
        before,
        "the source kept reading while nobody polled"
    );
    let got = take_ops(&mut ops, 5_000).await;
    assert_eq!(int_ids(&got), (1..=5_000).collect::<Vec<_>>());
    // Read in batches of 100, not all at once.
    assert!(get_mores.load(Ordering::Relaxed) - before >= 49);
}

#[tokio::test]
async fn since_seeks_change_streams_too() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_cs_since");
    let c = server.client.database(&db_name).collection::<Document>("c");
    let from = server.latest_ts().await;
    let (mut ops, handle) = start(
        &server.client,
        TailOptions::new().disable_oplog().change_stream(
            ChangeStreamOptions::new()
                .namespace(ns(&format!("{db_name}.c")))
                .start_at_operation_time(from),
        ),
    );
    for i in 1..=3 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let got = take_ops(&mut ops, 3).await;
    assert_eq!(int_ids(&got), vec![1, 2, 3]);
    handle.since(got[0].timestamp).unwrap();
    assert_eq!(int_ids(&take_ops(&mut ops, 2).await), vec![2, 3]);
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
}

/// The `_id`s `got` delivered from `source`, sorted.
fn ids_from(got: &[mongotail::Op], source: Source) -> Vec<i32> {
    let from: Vec<_> = got.iter().filter(|o| o.source == source).cloned().collect();
    let mut ids = int_ids(&from);
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn one_exclusive_start_point_for_every_live_source() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_shared");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let at_zero = last_op_timestamp(&server.client).await.unwrap().unwrap();
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let at_one = last_op_timestamp(&server.client).await.unwrap().unwrap();
    for i in 2..=3 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let target = ns(&format!("{db_name}.c"));
    let (mut ops, _handle) = start(
        &server.client,
        TailOptions::new()
            .start(StartAt::After(at_one))
            // sets its own start: after insert 0
            .oplog(
                OplogOptions::new()
                    .namespace(target.clone())
                    .start(StartAt::After(at_zero)),
            )
            // inherits the shared start: after insert 1
            .change_stream(ChangeStreamOptions::new().namespace(target.clone()))
            // the function form: after insert 1 too
            .change_stream(
                ChangeStreamOptions::new()
                    .namespace(target)
                    .start(StartAt::func(move |_client| async move { Ok(at_one) })),
            ),
    );
    let got = take_ops(&mut ops, 3 + 2 + 2).await;
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
    // Exclusive for both sources: the op at the start point itself is not delivered.
    assert_eq!(ids_from(&got, Source::Oplog), vec![1, 2, 3]);
    assert_eq!(ids_from(&got, Source::ChangeStream), vec![2, 2, 3, 3]);
}

#[tokio::test]
async fn change_streams_start_at_the_earliest_entry_and_the_time_helpers_agree() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_earliest");
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_many((1..=3).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let first = first_op_timestamp(&server.client).await.unwrap().unwrap();
    let last = last_op_timestamp(&server.client).await.unwrap().unwrap();
    let now = cluster_time(&server.client).await.unwrap();
    assert!(first <= last && last <= now, "{first} {last} {now}");
    let (mut ops, _handle) = start(
        &server.client,
        TailOptions::new()
            .start(StartAt::Earliest)
            .watch(ns(&format!("{db_name}.c"))),
    );
    assert_eq!(int_ids(&take_ops(&mut ops, 3).await), vec![1, 2, 3]);
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
}

/// Holds every `getMore` of the client named `app` on the server for a minute; returns how
/// many commands entered the fail point before this call (reference §7.10).
async fn hold_get_mores(server: &TestServer, app: &str) -> i64 {
    let reply = server
        .client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 60_000, "appName": app},
        })
        .await
        .expect("configureFailPoint");
    match reply.get("count") {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        other => panic!("configureFailPoint count {other:?}"),
    }
}

/// A `Handle` method, by name.
type HandleCall = (&'static str, Box<dyn FnOnce(Handle) + Send>);

/// Every `Handle` method but `direct_reads_done` (async), `stop` last.
fn handle_calls() -> Vec<HandleCall> {
    let ts = bson::Timestamp {
        time: 1,
        increment: 0,
    };
    vec![
        ("pause", Box::new(|h: Handle| h.pause())),
        ("is_paused", Box::new(|h: Handle| assert!(h.is_paused()))),
        ("pause_live", Box::new(|h: Handle| h.pause_live())),
        ("resume", Box::new(|h: Handle| h.resume())),
        ("since", Box::new(move |h: Handle| h.since(ts).unwrap())),
        (
            "oplog_position",
            Box::new(|h: Handle| {
                let _ = h.oplog_position();
            }),
        ),
        (
            "resume_tokens",
            Box::new(|h: Handle| assert_eq!(h.resume_tokens().len(), 1)),
        ),
        ("is_stopped", Box::new(|h: Handle| assert!(!h.is_stopped()))),
        ("stop", Box::new(|h: Handle| h.stop())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_calls_return_while_a_poll_is_stuck_on_the_server() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_stuck");
    let target = ns(&format!("{db_name}.c"));
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let app = db_name.clone(); // unique: tests may share a real server
    let before = hold_get_mores(&server, &app).await;
    let client = server.client_with(|o| o.app_name = Some(app.clone())).await;
    let (mut ops, handle) = start(
        &client,
        TailOptions::new()
            .oplog(OplogOptions::new().namespace(target.clone()))
            .change_stream(ChangeStreamOptions::new().namespace(target)),
    );
    let consumer = tokio::spawn(async move { ops.next().await.map(|op| op.map_err(|e| e.kind())) });
    // Wait until a getMore of the stream is held on the server.
    let deadline = tokio::time::Instant::now() + WAIT;
    while hold_get_mores(&server, &app).await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no getMore was held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Generous bounds: each call takes microseconds; one that waited for the poll would
    // wait for the server's minute.
    let prompt = Duration::from_secs(5);
    for (name, call) in handle_calls() {
        let h = handle.clone();
        let called = tokio::time::timeout(prompt, tokio::task::spawn_blocking(move || call(h)));
        called
            .await
            .unwrap_or_else(|_| panic!("{name} waited"))
            .unwrap();
    }
    let done = tokio::time::timeout(prompt, handle.direct_reads_done()).await;
    assert!(
        done.expect("direct_reads_done waited").is_ok(),
        "no direct reads"
    );
    let ended = tokio::time::timeout(prompt, consumer).await;
    let ended = ended.expect("the held poll ends at stop").unwrap();
    assert!(ended.is_none(), "{ended:?}");
    server.fail_off().await;
}

#[tokio::test]
async fn a_start_function_may_call_the_handle() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_func_handle");
    let target = ns(&format!("{db_name}.c"));
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    let after = last_op_timestamp(&server.client).await.unwrap().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    // The stream runs on a thread and runtime of its own, so that a handle call that
    // deadlocked inside its poll would fail this test instead of hanging it.
    let (uri, counted) = (server.uri.clone(), calls.clone());
    let (ids_tx, ids) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            let cell: Arc<OnceLock<Handle>> = Arc::default();
            let seen = cell.clone();
            // Runs inside a poll of the stream, once per live source.
            let start_fn = StartAt::func(move |_client| {
                let handle = seen.get().cloned().expect("set before the first poll");
                assert!(!handle.is_paused() && !handle.is_stopped());
                handle.pause();
                handle.resume();
                drop((handle.oplog_position(), handle.resume_tokens()));
                counted.fetch_add(1, Ordering::SeqCst);
                async move { Ok(after) }
            });
            let (mut ops, handle) = start(
                &client,
                TailOptions::new()
                    .start(start_fn)
                    .oplog(OplogOptions::new().namespace(target.clone()))
                    .change_stream(ChangeStreamOptions::new().namespace(target)),
            );
            cell.set(handle).unwrap();
            let _ = ids_tx.send(int_ids(&take_ops(&mut ops, 2).await));
        });
    });
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let ids = tokio::time::timeout(WAIT, ids).await;
    assert_eq!(ids.expect("the stream deadlocked").unwrap(), vec![1, 1]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn pause_live_holds_the_oplog_while_direct_reads_go_on() {
    let server = TestServer::start().await;
    let db_name = unique_db("start_pause_live");
    let target = ns(&format!("{db_name}.c"));
    let c = server.client.database(&db_name).collection::<Document>("c");
    c.insert_many((0..50).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let (mut ops, handle) = start(
        &server.client,
        TailOptions::new()
            .start(StartAt::After(server.latest_ts().await))
            .oplog(OplogOptions::new().namespace(target.clone()))
            .direct(DirectOptions::new().namespace(target).batch_size(10)),
    );
    handle.pause_live(); // gtm's Pause
    assert!(handle.is_paused());
    let copied = take_ops(&mut ops, 50).await;
    assert!(copied.iter().all(|op| op.is_source_direct()));
    // The copy completes (its end is seen by polling on) while the oplog is held.
    let done = tokio::time::timeout(WAIT, handle.direct_reads_done());
    let (done, ()) = tokio::join!(done, assert_quiet(&mut ops, Duration::from_millis(100)));
    done.expect("direct reads complete while the live sources are paused")
        .unwrap();
    c.insert_one(doc! {"_id": 1000}).await.unwrap();
    assert_quiet(&mut ops, Duration::from_millis(300)).await;
    handle.resume();
    let live = take_ops(&mut ops, 1).await;
    assert!(live[0].is_source_oplog());
    assert_eq!(int_ids(&live), vec![1000]);
}
