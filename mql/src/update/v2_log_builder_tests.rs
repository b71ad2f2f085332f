use super::log::{v2_from_log, LogEntry, LogKind};
use super::*;
use crate::path::array_index;
use bson::{bson, doc};

fn path(p: &str, numeric_are_indexes: bool) -> Vec<(String, bool)> {
    p.split('.')
        .map(|c| {
            (
                c.to_string(),
                numeric_are_indexes && array_index(c).is_some(),
            )
        })
        .collect()
}
fn upd(p: &str, v: Bson, idx: bool) -> LogEntry {
    LogEntry {
        path: path(p, idx),
        kind: LogKind::Update(v),
    }
}
fn cre(p: &str, first_new: usize, v: Bson, idx: bool) -> LogEntry {
    LogEntry {
        path: path(p, idx),
        kind: LogKind::Create(v, first_new),
    }
}
fn del(p: &str, idx: bool) -> LogEntry {
    LogEntry {
        path: path(p, idx),
        kind: LogKind::Delete,
    }
}

#[test]
fn create_field_bson_elt() {
    let log = vec![
        cre("a.b.d", 0, bson!(["v", "a", "l"]), false),
        cre("a.c.e", 0, bson!({}), false),
        cre("a.b.c", 0, bson!(2), false),
    ];
    assert_eq!(
        v2_from_log(&log),
        doc! {"$v": 2, "diff": {"i": {"a": {"b": {"d": ["v", "a", "l"], "c": 2}, "c": {"e": {}}}}}}
    );
}

#[test]
fn create_field_merge_in_order() {
    let obj = bson!({"arr": [{"a": [0]}]});
    let log = vec![
        cre("root.d", 1, bson!(1), false),
        cre("root.b.a", 1, bson!(1), false),
        cre("root.c.b", 1, obj.clone(), false),
        cre("root.c.e", 1, bson!(1), false),
        cre("root.a", 1, obj.clone(), false),
    ];
    assert_eq!(
        v2_from_log(&log),
        doc! {"$v": 2, "diff": {"sroot": {"i": {"d": 1, "b": {"a": 1}, "c": {"b": obj.clone(), "e": 1}, "a": obj}}}}
    );
}

#[test]
fn deletes_order_and_all_modification_types() {
    let log = vec![
        del("a.c", false),
        del("a.b", false),
        del("x.z", false),
        del("x.y", false),
    ];
    assert_eq!(
        v2_from_log(&log),
        doc! {"$v": 2, "diff": {"sa": {"d": {"c": false, "b": false}}, "sx": {"d": {"z": false, "y": false}}}}
    );
    let log = vec![
        upd("a.b.c", bson!(1), false),
        cre("a.b.d.e", 3, bson!(2), false),
        del("a.b.e", false),
    ];
    assert_eq!(
        v2_from_log(&log),
        doc! {"$v": 2, "diff": {"sa": {"sb": {"d": {"e": false}, "u": {"c": 1}, "sd": {"i": {"e": 2}}}}}}
    );
}

#[test]
fn sub_diffs_are_ordered_correctly() {
    let log = vec![
        upd("a.b.c", bson!(1), false),
        cre("a.c.d", 2, bson!(1), false),
        upd("x.y.z", bson!(2), false),
        upd("x.z.a", bson!(2), false),
    ];
    assert_eq!(
        v2_from_log(&log),
        doc! {"$v": 2, "diff": {"sa": {"sb": {"u": {"c": 1}}, "sc": {"i": {"d": 1}}}, "sx": {"sy": {"u": {"z": 2}}, "sz": {"u": {"a": 2}}}}}
    );
}

#[test]
fn array_modifications() {
    let obj = bson!({"arr": [{"a": [0]}]});
    let log = vec![
        upd("a.0.c.update", bson!(1), true),
        cre("a.10.insert.a", 2, bson!(2), true),
        upd("a.3", bson!(1), true),
        cre("a.0.c.insert.a", 3, bson!(2), true),
        cre("a.0.c.insert.f", 3, bson!(2), true),
        cre("a.1", 1, obj.clone(), true),
        del("a.0.c.del", true),
    ];
    assert_eq!(
        v2_from_log(&log),
        doc! {"$v": 2, "diff": {"sa": {
            "a": true,
            "s0": {"sc": {"d": {"del": false}, "u": {"update": 1}, "i": {"insert": {"a": 2, "f": 2}}}},
            "u1": obj,
            "u3": 1,
            "s10": {"i": {"insert": {"a": 2}}},
        }}}
    );
}

#[test]
fn implicit_array_element_creation() {
    let log = vec![
        cre("a.10.b.a", 1, bson!(1), true),
        cre("a.2.b.a", 1, bson!(1), true),
        upd("a.0.b.a", bson!(1), true),
    ];
    assert_eq!(
        v2_from_log(&log),
        doc! {"$v": 2, "diff": {"sa": {"a": true, "s0": {"sb": {"u": {"a": 1}}}, "u2": {"b": {"a": 1}}, "u10": {"b": {"a": 1}}}}}
    );
}
