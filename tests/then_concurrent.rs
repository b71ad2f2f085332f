//! Property tests of `then_concurrent`: for random ops (and input errors), random completion
//! delays, random limits and every `Ordering`, every op is processed and yielded exactly
//! once, the ordering holds (per document, per namespace, total), errors are barriers, and
//! no more than `limit` calls run at once.
// `mongotail::Error` is large by design (see the crate's `result_large_err` allow).
#![allow(clippy::result_large_err)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use common::ordering::{item, must_precede, ordering, to_input, Item};
use futures::{stream, StreamExt};
use mongotail::{Error, OpStreamExt, Ordering, Result};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    items: Vec<Item>,
    delays: Vec<u64>,
    limit: usize,
    ordering: Ordering,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(item(), 0..60),
        prop::collection::vec(0u64..50, 1..12),
        1usize..9,
        ordering(),
    )
        .prop_map(|(items, delays, limit, ordering)| Case {
            items,
            delays,
            limit,
            ordering,
        })
}

/// The outputs (each the input index of its op) and the most calls seen running at once.
fn run(case: &Case) -> (Vec<Result<usize>>, usize) {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let input: Vec<_> = case
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| to_input(i, it))
        .collect();
    let delays = case.delays.clone();
    let (r, m) = (running.clone(), most.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let out = rt.block_on(
        stream::iter(input)
            .then_concurrent(case.limit, move |op| {
                let index = op.timestamp.increment as usize;
                let delay = Duration::from_millis(delays[index % delays.len()]);
                let now = r.fetch_add(1, AtomicOrdering::SeqCst) + 1;
                m.fetch_max(now, AtomicOrdering::SeqCst);
                let r = r.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    r.fetch_sub(1, AtomicOrdering::SeqCst);
                    index
                }
            })
            .ordered(case.ordering)
            .collect(),
    );
    (out, most.load(AtomicOrdering::SeqCst))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn orderings_hold_under_random_delays(case in case()) {
        let (out, most) = run(&case);
        prop_assert!(most <= case.limit, "{most} calls ran at once, limit {}", case.limit);
        let mut pos: HashMap<usize, usize> = HashMap::new();
        for (at, r) in out.iter().enumerate() {
            let input = match r {
                Ok(index) => *index,
                Err(Error::Config(m)) => m["input ".len()..].parse().unwrap(),
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            };
            prop_assert!(pos.insert(input, at).is_none(), "input {input} yielded twice");
        }
        prop_assert_eq!(pos.len(), case.items.len(), "every input yielded once");
        for a in 0..case.items.len() {
            for b in a + 1..case.items.len() {
                if must_precede(case.ordering, &case.items[a], &case.items[b]) {
                    prop_assert!(
                        pos[&a] < pos[&b],
                        "{:?}: input {} ({:?}) came out after input {} ({:?})",
                        case.ordering, a, case.items[a], b, case.items[b]
                    );
                }
            }
        }
    }
}

/// With one slow document and per-document order, the other documents overtake it; with
/// total order they wait: the same inputs, two orders.
#[test]
fn a_slow_document_holds_back_only_what_the_ordering_says() {
    let items = vec![
        Item::Update { ns: 0, id: 1 },
        Item::Update { ns: 0, id: 2 },
        Item::Update { ns: 1, id: 1 },
    ];
    let case = |ordering| Case {
        items: items.clone(),
        delays: vec![40, 1, 1],
        limit: 3,
        ordering,
    };
    let order = |ordering| -> Vec<usize> {
        run(&case(ordering))
            .0
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(order(Ordering::Document), vec![1, 2, 0]);
    assert_eq!(order(Ordering::Namespace), vec![2, 0, 1]);
    assert_eq!(order(Ordering::Oplog), vec![0, 1, 2]);
}
