//! Random ops for the property tests of the adapters that keep an [`Ordering`] while
//! working concurrently (`batch_fetch`, `then_concurrent`), and the rule they must keep.
// `mongotail::Error` is large by design (see the crate's `result_large_err` allow).
#![allow(clippy::result_large_err)]

use bson::{doc, Bson, Timestamp};
use mongotail::{Error, Namespace, Op, OpKind, Ordering, Result};
use proptest::prelude::*;

/// One input item: an op on a document, a command (no document id), or an input error.
#[derive(Debug, Clone)]
pub enum Item {
    Update { ns: u8, id: i32 },
    Insert { ns: u8, id: i32 },
    Command { ns: u8 },
    Error,
}

impl Item {
    pub fn ns(&self) -> Option<u8> {
        match self {
            Item::Update { ns, .. } | Item::Insert { ns, .. } | Item::Command { ns } => Some(*ns),
            Item::Error => None,
        }
    }

    pub fn id(&self) -> Option<i32> {
        match self {
            Item::Update { id, .. } | Item::Insert { id, .. } => Some(*id),
            _ => None,
        }
    }
}

pub fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => (0u8..2, 0i32..5).prop_map(|(ns, id)| Item::Update { ns, id }),
        3 => (0u8..2, 0i32..5).prop_map(|(ns, id)| Item::Insert { ns, id }),
        1 => (0u8..2).prop_map(|ns| Item::Command { ns }),
        1 => Just(Item::Error),
    ]
}

pub fn ordering() -> impl Strategy<Value = Ordering> {
    prop_oneof![
        Just(Ordering::Oplog),
        Just(Ordering::Namespace),
        Just(Ordering::Document),
        Just(Ordering::Any),
    ]
}

pub fn namespace(ns: u8) -> Namespace {
    Namespace::new("db", format!("c{ns}")).unwrap()
}

pub fn to_input(i: usize, item: &Item) -> Result<Op> {
    let tag = Timestamp {
        time: 1,
        increment: i as u32,
    };
    let op = match item {
        Item::Update { ns, id } => Op::new(OpKind::Update, namespace(*ns), Some(Bson::Int32(*id))),
        Item::Insert { ns, id } => Op::new(OpKind::Insert, namespace(*ns), Some(Bson::Int32(*id)))
            .with_data(doc! {"_id": *id}),
        Item::Command { ns } => Op::new(OpKind::DropCollection, namespace(*ns), None),
        Item::Error => return Err(Error::Config(format!("input {i}"))),
    };
    Ok(op.with_timestamp(tag))
}

/// Must input `a` (earlier) come out before input `b` under `ordering`?
pub fn must_precede(ordering: Ordering, a: &Item, b: &Item) -> bool {
    if matches!(a, Item::Error) || matches!(b, Item::Error) {
        return true;
    }
    match ordering {
        Ordering::Oplog => true,
        Ordering::Namespace => a.id().is_none() || b.id().is_none() || a.ns() == b.ns(),
        Ordering::Document => {
            a.id().is_none() || b.id().is_none() || (a.ns() == b.ns() && a.id() == b.id())
        }
        _ => false,
    }
}
