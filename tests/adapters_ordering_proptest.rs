//! Property tests: every `Ordering` of `batch_fetch` holds for random interleavings of
//! ops, random arrival gaps, random fetch latencies and failures, and random batch
//! settings; nothing is lost or repeated; fetched documents match their ops.
// `mongotail::Error` is large by design (see the crate's `result_large_err` allow).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::future::BoxFuture;
use futures::{stream, FutureExt, StreamExt};
use mongotail::{Error, Namespace, Op, OpStreamExt, Ordering, Result};
use proptest::prelude::*;

mod common;
use common::ordering::{item, must_precede, ordering, to_input, Item};

/// The id that never exists when fetched.
const MISSING_ID: i32 = 3;

#[derive(Debug, Clone)]
struct Case {
    items: Vec<(u64, Item)>,
    latencies: Vec<u64>,
    failures: Vec<bool>,
    ordering: Ordering,
    max_batch: usize,
    window: u64,
    workers: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((0u64..15, item()), 0..60),
        prop::collection::vec(0u64..120, 1..8),
        prop::collection::vec(prop::bool::weighted(0.15), 1..8),
        ordering(),
        1usize..7,
        1u64..40,
        1usize..4,
    )
        .prop_map(
            |(items, latencies, failures, ordering, max_batch, window, workers)| Case {
                items,
                latencies,
                failures,
                ordering,
                max_batch,
                window,
                workers,
            },
        )
}

fn run(case: &Case) -> (Vec<Result<Op>>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (latencies, failures) = (case.latencies.clone(), case.failures.clone());
    let (c, f) = (calls.clone(), failed.clone());
    let fetcher =
        move |_ns: Namespace, ids: Vec<Bson>| -> BoxFuture<'static, Result<Vec<Document>>> {
            let n = c.fetch_add(1, AtomicOrdering::SeqCst);
            let latency = Duration::from_millis(latencies[n % latencies.len()]);
            let fail = failures[n % failures.len()];
            if fail {
                f.fetch_add(1, AtomicOrdering::SeqCst);
            }
            async move {
                tokio::time::sleep(latency).await;
                if fail {
                    return Err(Error::Config(format!("fetch {n}")));
                }
                Ok(ids
                    .into_iter()
                    .filter(|id| id.as_i32() != Some(MISSING_ID))
                    .map(|id| doc! {"_id": id, "call": n as i64})
                    .collect())
            }
            .boxed()
        };
    let input: Vec<(u64, Result<Op>)> = case
        .items
        .iter()
        .enumerate()
        .map(|(i, (gap, item))| (*gap, to_input(i, item)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let out = rt.block_on(
        stream::iter(input)
            .then(|(gap, item)| async move {
                tokio::time::sleep(Duration::from_millis(gap)).await;
                item
            })
            .batch_fetch_with(fetcher, case.max_batch, Duration::from_millis(case.window))
            .workers(case.workers)
            .ordered(case.ordering)
            .collect(),
    );
    (out, failed.load(AtomicOrdering::SeqCst))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn orderings_hold(case in case()) {
        let (out, failed_calls) = run(&case);
        let items: Vec<&Item> = case.items.iter().map(|(_, item)| item).collect();

        // Position of every input in the output; fetch errors checked in passing.
        let mut pos: HashMap<usize, usize> = HashMap::new();
        let mut fetch_errors = 0;
        let mut after_fetch_error = false;
        for (at, r) in out.iter().enumerate() {
            let input = match r {
                Ok(op) => {
                    if after_fetch_error {
                        prop_assert!(op.needs_fetch(), "op after a fetch error must be unfetched: {op:?}");
                    }
                    after_fetch_error = false;
                    op.timestamp.increment as usize
                }
                Err(Error::Config(m)) if m.starts_with("input ") => {
                    prop_assert!(!after_fetch_error);
                    m["input ".len()..].parse().unwrap()
                }
                Err(Error::Config(m)) if m.starts_with("fetch ") => {
                    prop_assert!(!after_fetch_error, "two fetch errors in a row");
                    fetch_errors += 1;
                    after_fetch_error = true;
                    continue;
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            };
            prop_assert!(pos.insert(input, at).is_none(), "input {input} delivered twice");
        }
        prop_assert!(!after_fetch_error, "a fetch error must be followed by its op");
        prop_assert_eq!(pos.len(), items.len(), "every input delivered once");
        prop_assert_eq!(fetch_errors, failed_calls, "one error per failed find");

        // The ordering.
        for a in 0..items.len() {
            for b in a + 1..items.len() {
                if must_precede(case.ordering, items[a], items[b]) {
                    prop_assert!(
                        pos[&a] < pos[&b],
                        "{:?}: input {} ({:?}) came out after input {} ({:?})",
                        case.ordering, a, items[a], b, items[b]
                    );
                }
            }
        }

        // Documents: fetched ones match their op; missing ones are marked; unless the
        // ordering lets ops of one document pass each other (`Any`), the fetched states of
        // one document never go back in time, whatever the number of workers (finds
        // sharing a document run one after another).
        let mut last_call: HashMap<(String, i32), i64> = HashMap::new();
        for op in out.iter().filter_map(|r| r.as_ref().ok()) {
            let input = items[op.timestamp.increment as usize];
            let id = op.id.as_ref().and_then(Bson::as_i32);
            match input {
                Item::Update { .. } => match &op.data {
                    Some(d) => {
                        prop_assert_eq!(d.get_i32("_id").ok(), id);
                        prop_assert!(!op.document_missing);
                        let call = d.get_i64("call").unwrap();
                        let key = (op.namespace.to_string(), id.unwrap());
                        if case.ordering != Ordering::Any {
                            if let Some(prev) = last_call.get(&key) {
                                prop_assert!(*prev <= call, "document went back in time");
                            }
                        }
                        last_call.insert(key, call);
                    }
                    None if op.document_missing => prop_assert_eq!(id, Some(MISSING_ID)),
                    None => prop_assert!(failed_calls > 0 && op.needs_fetch()),
                },
                Item::Insert { id, .. } => {
                    prop_assert_eq!(op.data.as_ref(), Some(&doc! {"_id": *id}));
                    prop_assert!(!op.document_missing);
                }
                Item::Command { .. } => prop_assert!(op.data.is_none() && op.id.is_none()),
                Item::Error => unreachable!("errors are not ops"),
            }
        }
    }
}
