use super::*;
use bson::{bson, doc};

fn now() -> DateTime {
    DateTime::from_millis(1_700_000_000_000)
}

fn upd(d: Document, u: Bson) -> UpdateOutcome {
    Update::parse(&u, None)
        .unwrap()
        .apply(&d, &UpdateCtx::new(now()))
        .unwrap()
}

fn upd_err(d: Document, u: Bson) -> CommandError {
    match Update::parse(&u, None) {
        Err(e) => e,
        Ok(p) => p.apply(&d, &UpdateCtx::new(now())).unwrap_err(),
    }
}

fn diff(o: &UpdateOutcome) -> Document {
    assert_eq!(o.v2_diff.get_i32("$v").unwrap(), 2);
    o.v2_diff.get_document("diff").unwrap().clone()
}

#[test]
fn reference_example_delete_update_insert() {
    // reference §4.5: {$set: {a: 2}} where a existed; {$unset: {c: ""}}; {$set: {newf: 1}}
    let o = upd(
        doc! {"_id": 1, "a": 1, "c": 3},
        bson!({"$set": {"a": 2, "newf": 1}, "$unset": {"c": ""}}),
    );
    assert!(o.modified);
    assert!(!o.is_replacement);
    assert_eq!(o.new_doc, doc! {"_id": 1, "a": 2, "newf": 1});
    assert_eq!(
        o.v2_diff,
        doc! {"$v": 2, "diff": {"d": {"c": false}, "u": {"a": 2}, "i": {"newf": 1}}}
    );
    // reference §4.4
    assert_eq!(
        o.v1,
        doc! {"$v": 1, "$set": {"a": 2, "newf": 1}, "$unset": {"c": true}}
    );
}

/// SRV jstests/replsets/oplog_format.js, verbatim expectations.
#[test]
fn server_oplog_format_js() {
    let cases: Vec<(Document, Bson, Document, Document)> = vec![
        (
            doc! {"_id": 1, "a": 2},
            bson!({"$inc": {"a": 1}, "$set": {"b": 2}}),
            doc! {"_id": 1, "a": 3, "b": 2},
            doc! {"$v": 2, "diff": {"u": {"a": 3}, "i": {"b": 2}}},
        ),
        (
            doc! {"_id": 1, "c": 0},
            bson!({"$inc": {"a": 1}, "$set": {"b": 2}}),
            doc! {"_id": 1, "c": 0, "a": 1, "b": 2},
            doc! {"$v": 2, "diff": {"i": {"a": 1, "b": 2}}},
        ),
        (
            doc! {"_id": 1, "a": {"b": [1, 2], "c": [1, 2]}},
            bson!({"$pull": {"a.b": 2, "a.c": 2}}),
            doc! {"_id": 1, "a": {"b": [1], "c": [1]}},
            doc! {"$v": 2, "diff": {"sa": {"u": {"b": [1], "c": [1]}}}},
        ),
        (
            doc! {"_id": 1, "a": 1, "b": 1},
            bson!({"$set": {"a": 2, "b": 2}}),
            doc! {"_id": 1, "a": 2, "b": 2},
            doc! {"$v": 2, "diff": {"u": {"a": 2, "b": 2}}},
        ),
        (
            doc! {"_id": 1, "a": 2},
            bson!({"$set": {"a": 2, "b": 2}}),
            doc! {"_id": 1, "a": 2, "b": 2},
            doc! {"$v": 2, "diff": {"i": {"b": 2}}},
        ),
        (
            doc! {"_id": 1, "a": 1},
            bson!({"$set": {"a": 2, "b": 2}}),
            doc! {"_id": 1, "a": 2, "b": 2},
            doc! {"$v": 2, "diff": {"u": {"a": 2}, "i": {"b": 2}}},
        ),
        (
            doc! {"_id": 1, "a": [2]},
            bson!({"$inc": {"a.0": 1}}),
            doc! {"_id": 1, "a": [3]},
            doc! {"$v": 2, "diff": {"sa": {"a": true, "u0": 3}}},
        ),
        (
            doc! {"_id": 1, "a": "foo"},
            bson!({"$push": {"c": 18}}),
            doc! {"_id": 1, "a": "foo", "c": [18]},
            doc! {"$v": 2, "diff": {"i": {"c": [18]}}},
        ),
        (
            doc! {"_id": 1, "a": {"b": [18]}},
            bson!({"$push": {"a.b": {"$each": [1, 2], "$slice": -2}}}),
            doc! {"_id": 1, "a": {"b": [1, 2]}},
            doc! {"$v": 2, "diff": {"sa": {"u": {"b": [1, 2]}}}},
        ),
        (
            doc! {"_id": 1, "a": {"b": [{"c": 2}, {"c": 1}]}},
            bson!({"$push": {"a.b": {"$each": [{"c": -1}], "$sort": {"c": 1}, "$slice": -100}}}),
            doc! {"_id": 1, "a": {"b": [{"c": -1}, {"c": 1}, {"c": 2}]}},
            doc! {"$v": 2, "diff": {"sa": {"u": {"b": [{"c": -1}, {"c": 1}, {"c": 2}]}}}},
        ),
        (
            doc! {"_id": 1, "a": [{"b": 2}, {"b": 1}]},
            bson!({"$push": {"a": {"$each": [{"b": -1}], "$slice": -2, "$sort": {"b": 1}}}}),
            doc! {"_id": 1, "a": [{"b": 1}, {"b": 2}]},
            doc! {"$v": 2, "diff": {"u": {"a": [{"b": 1}, {"b": 2}]}}},
        ),
        (
            doc! {"_id": 1, "a": {"b": [{"c": 2}, {"c": 1}]}},
            bson!({"$push": {"a.b": {"$each": [{"c": -1}], "$slice": -2, "$sort": {"c": 1}}}}),
            doc! {"_id": 1, "a": {"b": [{"c": 1}, {"c": 2}]}},
            doc! {"$v": 2, "diff": {"sa": {"u": {"b": [{"c": 1}, {"c": 2}]}}}},
        ),
        (
            doc! {"_id": 1, "a": {"b": [{"c": 1}, {"c": 2}]}},
            bson!({"$push": {"a.b": {"$each": [{"c": -1}], "$slice": -2, "$sort": {"c": -1}}}}),
            doc! {"_id": 1, "a": {"b": [{"c": 1}, {"c": -1}]}},
            doc! {"$v": 2, "diff": {"sa": {"u": {"b": [{"c": 1}, {"c": -1}]}}}},
        ),
    ];
    for (before, spec, after, o) in cases {
        let out = upd(before.clone(), spec.clone());
        assert!(out.modified, "{spec}");
        assert_eq!(out.new_doc, after, "{spec}");
        assert_eq!(out.v2_diff, o, "{spec}");
    }
    // "bad $setOnInsert": no-op without upsert, no oplog entry
    assert!(
        !upd(
            doc! {"_id": 1, "a": [3]},
            bson!({"$setOnInsert": {"a": -1}})
        )
        .modified
    );
}

/// How a pipeline update was logged (SRV v2_delta_oplog_entries.js).
#[derive(PartialEq, Debug)]
enum DeltaKind {
    Delta,
    Replacement,
    NoOp,
}

/// One v2_delta_oplog_entries.js case: pre-image, pipeline, post-image, expected logging.
type DeltaCase = (Document, Bson, Document, DeltaKind);

/// The padding string of v2_delta_oplog_entries.js.
fn giant() -> String {
    "_".repeat(100)
}

/// The mongo shell sends JS numbers as doubles: mirror that, it changes the sizes.
fn shell(b: Bson) -> Bson {
    match b {
        Bson::Int32(i) => Bson::Double(f64::from(i)),
        Bson::Document(d) => Bson::Document(d.into_iter().map(|(k, v)| (k, shell(v))).collect()),
        Bson::Array(a) => Bson::Array(a.into_iter().map(shell).collect()),
        other => other,
    }
}

/// [`shell`] for a document.
fn shell_doc(d: Document) -> Document {
    match shell(Bson::Document(d)) {
        Bson::Document(d) => d,
        _ => Document::new(),
    }
}

/// Cases 0-8: `$unset`, `$set` and `$project` stages.
fn v2_delta_set_and_project_cases() -> Vec<DeltaCase> {
    let giant = giant();
    vec![
        (
            doc! {"_id": 0, "x": 3, "y": 3, "padding": &giant},
            bson!([{"$unset": ["x", "y"]}]),
            doc! {"_id": 0, "padding": &giant},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 1, "x": "notSoLargeString", "y": 0},
            bson!([{"$set": {"a": "foo", "y": 999}}]),
            doc! {"_id": 1, "x": "notSoLargeString", "y": 999, "a": "foo"},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 2, "x": "notSoLargeString", "subObj": {"a": 1, "b": 2}},
            bson!([{"$set": {"subObj.a": "foo", "y": 1}}]),
            doc! {"_id": 2, "x": "notSoLargeString", "subObj": {"a": "foo", "b": 2}, "y": 1},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 3, "x": "notSoLargeString", "subObj": {"a": 1i64, "b": 2}},
            bson!([{"$set": {"subObj.a": 1, "y": 1}}]),
            doc! {"_id": 3, "x": "notSoLargeString", "subObj": {"a": 1, "b": 2}, "y": 1},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 4, "x": "notSoLargeString", "subObj": {"a": 1i64, "b": 2}},
            bson!([{"$set": {"subObj.a": {"$const": {"newObj": {"subField": 1}}}, "y": 1}}]),
            doc! {"_id": 4, "x": "notSoLargeString", "subObj": {"a": {"newObj": {"subField": 1}}, "b": 2}, "y": 1},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 5, "subObj": {"a": 1, "b": 2}},
            bson!([{"$set": {"subObj.c": "foo"}}]),
            doc! {"_id": 5, "subObj": {"a": 1, "b": 2, "c": "foo"}},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 6, "subObj": {"a": 1, "b": 2}, "toRemove": "foo", "padding": &giant},
            bson!([{"$project": {"subObj": 1, "padding": 1}}, {"$set": {"subObj.c": "foo"}}]),
            doc! {"_id": 6, "subObj": {"a": 1, "b": 2, "c": "foo"}, "padding": &giant},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 7, "toRemove": "foo", "subObj": {"a": 1, "b": 2}},
            bson!([{"$project": {"subObj": 1}}]),
            doc! {"_id": 7, "subObj": {"a": 1, "b": 2}},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 8, "x": "foo", "subObj": {"a": 1, "toRemove": 2}, "padding": &giant},
            bson!([{"$project": {"subObj": {"a": 1}, "padding": 1}}]),
            doc! {"_id": 8, "subObj": {"a": 1}, "padding": &giant},
            DeltaKind::Delta,
        ),
    ]
}

/// Cases 9-16: `$replaceRoot` stages and nested `$unset`/`$set`.
fn v2_delta_replace_root_cases() -> Vec<DeltaCase> {
    let giant = giant();
    let medium = "zzzzzzzzzzzzzzzzzzzzzzzzzz";
    vec![
        (
            doc! {"_id": 9, "x": "foo", "subObj": {"a": 1, "b": 2}},
            bson!([{"$replaceRoot": {"newRoot": {"_id": 9, "x": "foo", "subObj": {"a": 1, "b": 2}}}}]),
            doc! {"_id": 9, "x": "foo", "subObj": {"a": 1, "b": 2}},
            DeltaKind::NoOp,
        ),
        (
            doc! {"_id": 10, "x": "foo", "subObj": {"a": 1, "b": 2}, "padding": &giant},
            bson!([{"$replaceRoot": {"newRoot": {"x": "bar", "subObj": {"a": 1, "b": 2}, "padding": &giant}}}]),
            doc! {"_id": 10, "x": "bar", "subObj": {"a": 1, "b": 2}, "padding": &giant},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 11, "x": "foo", "subObj": {"a": 1, "b": 2}},
            bson!([{"$replaceRoot": {"newRoot": {"_id": 11, "newField": medium}}}]),
            doc! {"_id": 11, "newField": medium},
            DeltaKind::Replacement,
        ),
        (
            doc! {"_id": 12, "padding": &giant, "a": 1, "b": {"c": 2, "d": {"e": 3, "f": 6}}, "z": 3},
            bson!([{"$unset": ["b.d.f"]}, {"$set": {"b.a": 5, "b.b": 3, "b.c": 2, "b.d.d": 2, "b.d.e": 10, "z": 7}}]),
            doc! {"_id": 12, "padding": &giant, "a": 1, "b": {"c": 2, "d": {"e": 10, "d": 2}, "a": 5, "b": 3}, "z": 7},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 13, "padding": &giant, "arrField": [{"x": 1}, {"x": 2}]},
            bson!([{"$set": {"arrField.x": 5}}]),
            doc! {"_id": 13, "padding": &giant, "arrField": [{"x": 5}, {"x": 5}]},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 14, "x": "foo", "y": "bar", "z": "baz"},
            bson!([{"$replaceRoot": {"newRoot": {"_id": 14, "z": "baz", "y": "bar", "x": "foo"}}}]),
            doc! {"_id": 14, "z": "baz", "y": "bar", "x": "foo"},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 15, "padding": &giant, "x": "foo", "y": "bar"},
            bson!([{"$replaceRoot": {"newRoot": {"_id": 15, "padding": &giant, "y": "bar", "x": "foo"}}}]),
            doc! {"_id": 15, "padding": &giant, "y": "bar", "x": "foo"},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 16, "padding": &giant, "a": 1, "b": 1, "c": 1, "d": 1},
            bson!([{"$replaceRoot": {"newRoot": {"_id": 16, "padding": &giant, "a": 1, "c": 1, "b": 1, "d": 1}}}]),
            doc! {"_id": 16, "padding": &giant, "a": 1, "c": 1, "b": 1, "d": 1},
            DeltaKind::Delta,
        ),
    ]
}

/// Cases 17-23: array values.
fn v2_delta_array_cases() -> Vec<DeltaCase> {
    let giant = giant();
    vec![
        (
            doc! {"_id": 17, "padding": &giant, "a": [1, 2, 3, 4, 5]},
            bson!([{"$set": {"a": [1, 2, 999, 4, 5]}}]),
            doc! {"_id": 17, "padding": &giant, "a": [1, 2, 999, 4, 5]},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 18, "padding": &giant, "a": [1, 2, 3, {"b": 1}, 5]},
            bson!([{"$set": {"a": [1, 2, 3, {"b": 2}, 5]}}]),
            doc! {"_id": 18, "padding": &giant, "a": [1, 2, 3, {"b": 2}, 5]},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 19, "padding": &giant, "a": [1, 2, 3, {"b": [{"c": 1}]}, 5]},
            bson!([{"$set": {"a": [1, 2, 3, {"b": [{"c": 999}]}, 5]}}]),
            doc! {"_id": 19, "padding": &giant, "a": [1, 2, 3, {"b": [{"c": 999}]}, 5]},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 20, "padding": &giant, "a": [1, 2, 3]},
            bson!([{"$set": {"a": [1, 2, 3, 4, 5]}}]),
            doc! {"_id": 20, "padding": &giant, "a": [1, 2, 3, 4, 5]},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 21, "padding": &giant, "a": [1, 2, 3]},
            bson!([{"$set": {"a": [1, 2]}}]),
            doc! {"_id": 21, "padding": &giant, "a": [1, 2]},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 22, "padding": &giant, "a": [1, {"b": 10}, 3]},
            bson!([{"$set": {"a": [1, {"b": 9}]}}]),
            doc! {"_id": 22, "padding": &giant, "a": [1, {"b": 9}]},
            DeltaKind::Delta,
        ),
        (
            doc! {"_id": 23, "padding": &giant, "a": [1, 2, 999, 3, 4]},
            bson!([{"$set": {"a": [1, 2, 3, 4]}}]),
            doc! {"_id": 23, "padding": &giant, "a": [1, 2, 3, 4]},
            DeltaKind::Delta,
        ),
    ]
}

/// SRV jstests/replsets/v2_delta_oplog_entries.js: delta vs replacement for pipeline updates.
#[test]
fn server_v2_delta_oplog_entries_js() {
    let cases = v2_delta_set_and_project_cases()
        .into_iter()
        .chain(v2_delta_replace_root_cases())
        .chain(v2_delta_array_cases());
    for (pre, spec, post, kind) in cases {
        let (pre, spec, post) = (shell_doc(pre), shell(spec), shell_doc(post));
        let o = upd(pre.clone(), spec.clone());
        assert_eq!(o.new_doc, post, "{spec}");
        let got = if !o.modified {
            DeltaKind::NoOp
        } else if o.is_replacement {
            DeltaKind::Replacement
        } else {
            DeltaKind::Delta
        };
        assert_eq!(got, kind, "{spec}: {}", o.v2_diff);
        if kind == DeltaKind::Delta {
            let keys: Vec<&String> = o.v2_diff.keys().collect();
            assert_eq!(keys, vec!["$v", "diff"]);
        }
    }
}

/// v2_delta_oplog_entries.js: "Verify that diffing the deepest objects allowed by the JS
/// client can produce delta op-log entries": 147 levels of {padding, subObj}.
#[test]
fn server_v2_delta_oplog_entries_js_deepest_objects() {
    fn deep(depth: usize, max: usize, value: Bson, pad: &str) -> Document {
        let sub = if depth >= max {
            value
        } else {
            Bson::Document(deep(depth + 1, max, value, pad))
        };
        doc! {"padding": pad, "subObj": sub}
    }
    let giant = giant();
    let mut pre = doc! {"_id": 99.0};
    pre.extend(deep(1, 147, Bson::Double(1.0), &giant));
    let mut post = doc! {"_id": 99.0};
    post.extend(deep(1, 147, Bson::Double(2.0), &giant));
    let path = format!("{}subObj", "subObj.".repeat(146));
    let mut set = Document::new();
    set.insert(path, 2.0);
    let o = upd(pre, bson!([{"$set": set}]));
    assert_eq!(o.new_doc, post);
    assert!(o.modified && !o.is_replacement);
}

/// v2_delta_oplog_entries.js: the exact diffs of two of the cases.
#[test]
fn server_v2_delta_oplog_entries_js_exact_diffs() {
    let giant = giant();
    let o = upd(
        shell_doc(doc! {"_id": 14, "x": "foo", "y": "bar", "z": "baz"}),
        shell(
            bson!([{"$replaceRoot": {"newRoot": {"_id": 14, "z": "baz", "y": "bar", "x": "foo"}}}]),
        ),
    );
    assert_eq!(
        o.v2_diff,
        doc! {"$v": 2, "diff": {"i": {"y": "bar", "x": "foo"}}}
    );
    let o = upd(
        shell_doc(doc! {"_id": 23, "padding": &giant, "a": [1, 2, 999, 3, 4]}),
        shell(bson!([{"$set": {"a": [1, 2, 3, 4]}}])),
    );
    assert_eq!(
        o.v2_diff,
        doc! {"$v": 2, "diff": {"sa": {"a": true, "l": 4, "u2": 3.0, "u3": 4.0}}}
    );
}

#[test]
fn reference_example_subdocument() {
    let o = upd(
        doc! {"_id": 1, "sub": {"a": 1, "b": "y"}},
        bson!({"$set": {"sub.b": "x"}}),
    );
    assert_eq!(diff(&o), doc! {"ssub": {"u": {"b": "x"}}});
    assert_eq!(o.v1, doc! {"$v": 1, "$set": {"sub.b": "x"}});
}

#[test]
fn reference_example_array_element() {
    let o = upd(
        doc! {"_id": 1, "arr": [0, 1, 2]},
        bson!({"$set": {"arr.1": 5}}),
    );
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "u1": 5}});
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [0, 5, 2]});
    assert_eq!(o.v1, doc! {"$v": 1, "$set": {"arr.1": 5}});
}

#[test]
fn reference_example_array_shrunk_by_pipeline() {
    // reference §4.5: array shrunk to 2 elements -> {sarr: {a: true, l: 2}}
    let big = "x".repeat(64);
    let o = upd(
        doc! {"_id": 1, "arr": [big.clone(), big.clone(), big.clone()]},
        bson!([{"$set": {"arr": {"$slice": ["$arr", 2]}}}]),
    );
    assert_eq!(
        o.v2_diff,
        doc! {"$v": 2, "diff": {"sarr": {"a": true, "l": 2}}}
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [big.clone(), big]});
}

#[test]
fn pipeline_truncation_is_an_array_resize() {
    let big = "x".repeat(64);
    let o = upd(
        doc! {"_id": 1, "arr": [big.clone(), big.clone(), big.clone()]},
        bson!([{"$set": {"arr": {"$literal": [big.clone(), big.clone()]}}}]),
    );
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "l": 2}});
    assert_eq!(o.v1, o.new_doc); // 4.4 logs pipeline updates as replacements
}

#[test]
fn pipeline_small_doc_becomes_replacement() {
    // the delta would not be smaller than the post-image -> replacement
    let o = upd(
        doc! {"_id": 1, "a": 1},
        bson!([{"$set": {"a": 2, "b": {"c": 1}}}]),
    );
    assert!(o.is_replacement);
    assert_eq!(o.v2_diff, doc! {"_id": 1, "a": 2, "b": {"c": 1}});
    let big = "y".repeat(200);
    let o = upd(
        doc! {"_id": 1, "a": 1, "big": big.clone()},
        bson!([{"$set": {"a": 2}}, {"$unset": "zz"}]),
    );
    assert!(!o.is_replacement);
    assert_eq!(o.v2_diff, doc! {"$v": 2, "diff": {"u": {"a": 2}}});
    let o = upd(
        doc! {"_id": 1, "a": 1, "b": 2, "big": big.clone()},
        bson!([{"$unset": "a"}, {"$set": {"n": 1}}]),
    );
    assert_eq!(
        o.v2_diff,
        doc! {"$v": 2, "diff": {"d": {"a": false}, "i": {"n": 1}}}
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "b": 2, "big": big, "n": 1});
}

#[test]
fn pipeline_update_system_variables() {
    let big = "p".repeat(100);
    let mut ctx = UpdateCtx::new(now());
    ctx.now_ts = Timestamp {
        time: 7,
        increment: 3,
    };
    let u = Update::parse(
        &bson!([{"$set": {"at": "$$NOW", "ct": "$$CLUSTER_TIME"}}]),
        None,
    )
    .unwrap();
    let o = u.apply(&doc! {"_id": 1, "big": big.clone()}, &ctx).unwrap();
    assert_eq!(
        o.new_doc,
        doc! {"_id": 1, "big": big, "at": now(), "ct": Timestamp { time: 7, increment: 3 }}
    );
    assert_eq!(
        o.v2_diff,
        doc! {"$v": 2, "diff": {"i": {"at": now(), "ct": Timestamp { time: 7, increment: 3 }}}}
    );
}

#[test]
fn pipeline_update_with_let() {
    let lets = doc! {"v": "x"};
    let mut ctx = UpdateCtx::new(now());
    ctx.lets = Some(&lets);
    let u = Update::parse(&bson!([{"$set": {"a": "$$v"}}]), None).unwrap();
    let o = u.apply(&doc! {"_id": 1}, &ctx).unwrap();
    assert_eq!(o.new_doc, doc! {"_id": 1, "a": "x"});
}

#[test]
fn new_paths_under_existing_and_missing_parents() {
    let o = upd(
        doc! {"_id": 1, "a": {"z": 0}},
        bson!({"$set": {"a.b.c": 1}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "a": {"z": 0, "b": {"c": 1}}});
    assert_eq!(diff(&o), doc! {"sa": {"i": {"b": {"c": 1}}}});
    assert_eq!(o.v1, doc! {"$v": 1, "$set": {"a.b.c": 1}});
    let o = upd(doc! {"_id": 1}, bson!({"$set": {"x.b": 2, "x.a": 1}}));
    assert_eq!(o.new_doc, doc! {"_id": 1, "x": {"a": 1, "b": 2}});
    assert_eq!(diff(&o), doc! {"i": {"x": {"a": 1, "b": 2}}});
    assert_eq!(o.v1, doc! {"$v": 1, "$set": {"x.a": 1, "x.b": 2}});
}

#[test]
fn fields_are_created_in_lexicographic_order() {
    let o = upd(
        doc! {"_id": 1},
        bson!({"$set": {"b": 1, "a": 1}, "$inc": {"B": 1}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "B": 1, "a": 1, "b": 1});
    assert_eq!(diff(&o), doc! {"i": {"B": 1, "a": 1, "b": 1}});
}

#[test]
fn numeric_field_names_apply_in_numeric_order() {
    let o = upd(
        doc! {"_id": 1, "o": {}},
        bson!({"$set": {"o.10": 1, "o.9": 1, "o.b": 1, "o.a": 1}}),
    );
    assert_eq!(
        o.new_doc,
        doc! {"_id": 1, "o": {"9": 1, "10": 1, "a": 1, "b": 1}}
    );
    let u = Update::parse_versioned(&bson!({"$set": {"o.10": 1, "o.9": 1}}), None, true).unwrap();
    let o = u
        .apply(&doc! {"_id": 1, "o": {}}, &UpdateCtx::new(now()))
        .unwrap();
    assert_eq!(o.new_doc, doc! {"_id": 1, "o": {"10": 1, "9": 1}});
    let e = Update::parse_versioned(&bson!({"$set": {}}), None, true).unwrap_err();
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (
            9,
            "'$set' is empty. You must specify a field like so: {$set: {<field>: ...}}"
        )
    );
}

#[test]
fn padding_is_bounded() {
    let e = upd_err(doc! {"_id": 1, "a": []}, bson!({"$set": {"a.2000000": 1}}));
    assert_eq!((e.code, e.code_name.as_str()), (34, "CannotBackfillArray"));
}

#[test]
fn array_creation_beyond_length_pads_with_null() {
    let o = upd(doc! {"_id": 1, "arr": [1]}, bson!({"$set": {"arr.3": 9}}));
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [1, null, null, 9]});
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "u3": 9}});
    let o = upd(doc! {"_id": 1, "arr": []}, bson!({"$set": {"arr.0.c": 1}}));
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [{"c": 1}]});
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "u0": {"c": 1}}});
}

#[test]
fn nested_array_element_subdiff() {
    let o = upd(
        doc! {"_id": 1, "arr": [{"x": 1}, {"x": 2, "y": 0}]},
        bson!({"$set": {"arr.1.x": 5}, "$unset": {"arr.1.y": 1}}),
    );
    assert_eq!(
        diff(&o),
        doc! {"sarr": {"a": true, "s1": {"d": {"y": false}, "u": {"x": 5}}}}
    );
    assert_eq!(
        o.v1,
        doc! {"$v": 1, "$set": {"arr.1.x": 5}, "$unset": {"arr.1.y": true}}
    );
}

#[test]
fn unset_array_element_sets_null() {
    let o = upd(
        doc! {"_id": 1, "arr": [1, 2]},
        bson!({"$unset": {"arr.1": ""}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [1, null]});
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "u1": null}});
    assert_eq!(o.v1, doc! {"$v": 1, "$unset": {"arr.1": true}});
    let o = upd(doc! {"_id": 1}, bson!({"$unset": {"nope": "", "a.b": 1}}));
    assert!(!o.modified);
}

#[test]
fn noops_are_not_modifications() {
    let o = upd(doc! {"_id": 1, "a": 1}, bson!({"$set": {"a": 1}}));
    assert!(!o.modified);
    assert_eq!(o.v2_diff, doc! {"$v": 2, "diff": {}});
    let o = upd(doc! {"_id": 1, "a": 1}, bson!({"$inc": {"a": 0}}));
    assert!(!o.modified);
    let o = upd(doc! {"_id": 1, "a": 1}, bson!({"$set": {"a": 1.0}}));
    assert!(o.modified, "a type change is a modification");
    assert_eq!(diff(&o), doc! {"u": {"a": 1.0}});
    let o = upd(doc! {"_id": 1}, bson!({"$set": {}}));
    assert!(!o.modified);
}

#[test]
fn arithmetic() {
    let o = upd(
        doc! {"_id": 1, "a": i32::MAX, "b": 2, "c": 1.5},
        bson!({"$inc": {"a": 1, "b": 2.5, "n": 5}, "$mul": {"c": 2, "m": 3i64}}),
    );
    assert_eq!(
        o.new_doc,
        doc! {"_id": 1, "a": i64::from(i32::MAX) + 1, "b": 4.5, "c": 3.0, "m": 0i64, "n": 5}
    );
    assert_eq!(
        diff(&o),
        doc! {"u": {"a": i64::from(i32::MAX) + 1, "b": 4.5, "c": 3.0}, "i": {"m": 0i64, "n": 5}}
    );
    let e = upd_err(doc! {"_id": 1, "a": "s"}, bson!({"$inc": {"a": 1}}));
    assert_eq!(e.code, 14);
    assert_eq!(
        e.errmsg,
        "Cannot apply $inc to a value of non-numeric type. {_id: 1} has the field 'a' of non-numeric type string"
    );
    let e = upd_err(doc! {"_id": 1}, bson!({"$inc": {"a": "x"}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (14, "Cannot increment with non-numeric argument: {a: \"x\"}")
    );
}

#[test]
fn bit() {
    let o = upd(
        doc! {"_id": 1, "a": 13, "b": 1i64},
        bson!({"$bit": {"a": {"and": 10}, "b": {"or": 4}, "c": {"xor": 5i64}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "a": 8, "b": 5i64, "c": 5i64});
    assert_eq!(diff(&o), doc! {"u": {"a": 8, "b": 5i64}, "i": {"c": 5i64}});
    assert!(!upd(doc! {"_id": 1, "a": 1}, bson!({"$bit": {"a": {"or": 1}}})).modified);
    let e = upd_err(doc! {"_id": 1, "a": 1.5}, bson!({"$bit": {"a": {"or": 1}}}));
    assert_eq!(
        e.errmsg,
        "Cannot apply $bit to a value of non-integral type._id: 1 has the field a of non-integer type double"
    );
    let e = upd_err(doc! {"_id": 1}, bson!({"$bit": {"a": {"nand": 1}}}));
    assert_eq!(
        e.errmsg,
        "The $bit modifier only supports 'and', 'or', and 'xor', not 'nand' which is an unknown operator: {nand: 1}"
    );
    let e = upd_err(doc! {"_id": 1}, bson!({"$bit": {"a": 5}}));
    assert_eq!(e.code, 2);
}

#[test]
fn min_max_current_date() {
    let o = upd(
        doc! {"_id": 1, "lo": 5, "hi": 5},
        bson!({"$min": {"lo": 3, "hi": 9}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "lo": 3, "hi": 5});
    let o = upd(
        doc! {"_id": 1, "lo": 5},
        bson!({"$max": {"lo": 9, "new": 1}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "lo": 9, "new": 1});
    let o = upd(
        doc! {"_id": 1},
        bson!({"$currentDate": {"d": true, "t": {"$type": "timestamp"}}}),
    );
    assert_eq!(o.new_doc.get_datetime("d").unwrap(), &now());
    assert!(matches!(o.new_doc.get("t"), Some(Bson::Timestamp(_))));
    assert_eq!(
        upd_err(doc! {"_id": 1}, bson!({"$currentDate": {"d": 1}})).code,
        2
    );
}

#[test]
fn push_variants() {
    // append to a non-empty array: per-element array diff
    let o = upd(doc! {"_id": 1, "arr": [1, 2]}, bson!({"$push": {"arr": 3}}));
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [1, 2, 3]});
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "u2": 3}});
    assert_eq!(o.v1, doc! {"$v": 1, "$set": {"arr.2": 3}});
    // $each append of several
    let o = upd(
        doc! {"_id": 1, "arr": [1]},
        bson!({"$push": {"arr": {"$each": [2, 3]}}}),
    );
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "u1": 2, "u2": 3}});
    // empty array: whole array
    let o = upd(doc! {"_id": 1, "arr": []}, bson!({"$push": {"arr": 3}}));
    assert_eq!(diff(&o), doc! {"u": {"arr": [3]}});
    // missing: created
    let o = upd(doc! {"_id": 1}, bson!({"$push": {"arr": 3}}));
    assert_eq!(diff(&o), doc! {"i": {"arr": [3]}});
    // $position, $sort, $slice: whole array
    let o = upd(
        doc! {"_id": 1, "arr": [1, 2]},
        bson!({"$push": {"arr": {"$each": [0], "$position": 0}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [0, 1, 2]});
    assert_eq!(diff(&o), doc! {"u": {"arr": [0, 1, 2]}});
    let o = upd(
        doc! {"_id": 1, "arr": [5, 1]},
        bson!({"$push": {"arr": {"$each": [3, 9], "$sort": -1, "$slice": 3}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [9, 5, 3]});
    let o = upd(
        doc! {"_id": 1, "arr": [{"k": 2}, {"k": 1}]},
        bson!({"$push": {"arr": {"$each": [{"k": 0}], "$sort": {"k": 1}, "$slice": -2}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [{"k": 1}, {"k": 2}]});
    let o = upd(
        doc! {"_id": 1, "arr": [1, 2]},
        bson!({"$push": {"arr": {"$each": [0], "$position": i64::MIN, "$slice": i64::MIN}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [0, 1, 2]});
    let e = upd_err(doc! {"_id": 1, "arr": 1}, bson!({"$push": {"arr": 3}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (
            2,
            "The field 'arr' must be an array but is of type int in document {_id: 1}"
        )
    );
    let e = upd_err(doc! {"_id": 1}, bson!({"$push": {"arr": {"$each": 1}}}));
    assert_eq!(e.code, 2);
}

#[test]
fn add_to_set_pull_pop() {
    let o = upd(
        doc! {"_id": 1, "s": [1, 2]},
        bson!({"$addToSet": {"s": {"$each": [2, 3, 3]}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "s": [1, 2, 3]});
    assert_eq!(diff(&o), doc! {"u": {"s": [1, 2, 3]}});
    assert!(!upd(doc! {"_id": 1, "s": [1]}, bson!({"$addToSet": {"s": 1.0}})).modified);
    let o = upd(
        doc! {"_id": 1, "s": [1, 5, 7]},
        bson!({"$pull": {"s": {"$gte": 5}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "s": [1]});
    let o = upd(
        doc! {"_id": 1, "s": [{"a": 1, "b": 1}, {"a": 2}]},
        bson!({"$pull": {"s": {"a": 1}}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "s": [{"a": 2}]});
    let o = upd(
        doc! {"_id": 1, "s": [1, 2, 1, 3]},
        bson!({"$pullAll": {"s": [1, 3]}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "s": [2]});
    let o = upd(doc! {"_id": 1, "s": [1, 2, 3]}, bson!({"$pop": {"s": -1}}));
    assert_eq!(o.new_doc, doc! {"_id": 1, "s": [2, 3]});
    assert_eq!(diff(&o), doc! {"u": {"s": [2, 3]}});
    assert!(!upd(doc! {"_id": 1, "s": []}, bson!({"$pop": {"s": 1}})).modified);
    assert!(!upd(doc! {"_id": 1, "s": {}}, bson!({"$pop": {"s.x.y": 1}})).modified);
    let e = upd_err(doc! {"_id": 1, "s": 5}, bson!({"$pull": {"s.x": 1}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (
            28,
            "Cannot use the part (x) of (s.x) to traverse the element ({s: 5})"
        )
    );
    assert!(!upd(doc! {"_id": 1, "s": 5}, bson!({"$unset": {"s.x": 1}})).modified);
    assert_eq!(
        upd_err(doc! {"_id": 1}, bson!({"$pop": {"s": 2}})).errmsg,
        "$pop expects 1 or -1, found: 2"
    );
    assert_eq!(
        upd_err(doc! {"_id": 1, "s": 1}, bson!({"$pop": {"s": 1}})).code,
        14
    );
}

#[test]
fn rename() {
    let o = upd(
        doc! {"_id": 1, "a": 1, "z": 0},
        bson!({"$rename": {"a": "b"}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "z": 0, "b": 1});
    assert_eq!(diff(&o), doc! {"d": {"a": false}, "i": {"b": 1}});
    assert_eq!(
        o.v1,
        doc! {"$v": 1, "$set": {"b": 1}, "$unset": {"a": true}}
    );
    assert!(!upd(doc! {"_id": 1}, bson!({"$rename": {"a": "b"}})).modified);
    let e = upd_err(doc! {"_id": 1}, bson!({"$rename": {"a": "a"}}));
    assert_eq!(e.code, 2);
    let e = upd_err(doc! {"_id": 1}, bson!({"$rename": {"a": 1}}));
    assert_eq!(
        e.errmsg,
        "The 'to' field for $rename must be a string: a: 1"
    );
    let e = upd_err(doc! {"_id": 1}, bson!({"$rename": {"a": "a.b"}}));
    assert_eq!(
        e.errmsg,
        "The source and target field for $rename must not be on the same path: a: \"a.b\""
    );
    let e = upd_err(
        doc! {"_id": 1, "a": [{"b": 1}]},
        bson!({"$rename": {"a.0.b": "c"}}),
    );
    assert_eq!(
        e.errmsg,
        "The source field cannot be an array element, 'a.0.b' in doc with _id: 1 has an array field called 'a'"
    );
    let e = upd_err(
        doc! {"_id": 1, "x": 1, "a": []},
        bson!({"$rename": {"x": "a.0"}}),
    );
    assert_eq!(
        e.errmsg,
        "The destination field cannot be an array element, 'a.0' in doc with _id: 1 has an array field called 'a'"
    );
    let e = upd_err(doc! {"_id": 1, "a": 5}, bson!({"$rename": {"a.b": "c"}}));
    assert_eq!(e.code, 28);
    // the rename runs at the destination's position in the update tree
    let o = upd(
        doc! {"_id": 1, "z": 1, "m": 2},
        bson!({"$rename": {"z": "a"}, "$set": {"b": 1}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "m": 2, "a": 1, "b": 1});
    assert_eq!(
        o.v1,
        doc! {"$v": 1, "$set": {"a": 1, "b": 1}, "$unset": {"z": true}}
    );
    let o = upd(
        doc! {"_id": 1, "s": {"x": 1}},
        bson!({"$rename": {"s.x": "t.y"}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "s": {}, "t": {"y": 1}});
    assert_eq!(
        diff(&o),
        doc! {"i": {"t": {"y": 1}}, "ss": {"d": {"x": false}}}
    );
}

#[test]
fn positional_and_array_filters() {
    let q = doc! {"arr": 2};
    let u = Update::parse(&bson!({"$set": {"arr.$": 9}}), None).unwrap();
    let mut ctx = UpdateCtx::new(now());
    ctx.query = Some(&q);
    let o = u.apply(&doc! {"_id": 1, "arr": [1, 2, 3]}, &ctx).unwrap();
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [1, 9, 3]});
    assert_eq!(diff(&o), doc! {"sarr": {"a": true, "u1": 9}});
    let e = u.apply(&doc! {"_id": 1, "arr": [1, 3]}, &ctx).unwrap_err();
    assert_eq!(e.code, 2);

    let o = upd(
        doc! {"_id": 1, "arr": [{"x": 1}, {"x": 2}]},
        bson!({"$inc": {"arr.$[].x": 10}}),
    );
    assert_eq!(o.new_doc, doc! {"_id": 1, "arr": [{"x": 11}, {"x": 12}]});
    assert_eq!(
        diff(&o),
        doc! {"sarr": {"a": true, "s0": {"u": {"x": 11}}, "s1": {"u": {"x": 12}}}}
    );

    let filters = [doc! {"e.x": {"$gt": 1}}];
    let u = Update::parse(&bson!({"$set": {"arr.$[e].y": true}}), Some(&filters)).unwrap();
    let o = u
        .apply(
            &doc! {"_id": 1, "arr": [{"x": 1}, {"x": 2}]},
            &UpdateCtx::new(now()),
        )
        .unwrap();
    assert_eq!(
        o.new_doc,
        doc! {"_id": 1, "arr": [{"x": 1}, {"x": 2, "y": true}]}
    );
    assert_eq!(
        diff(&o),
        doc! {"sarr": {"a": true, "s1": {"i": {"y": true}}}}
    );
    let e = Update::parse(&bson!({"$set": {"a": 1}}), Some(&filters)).unwrap_err();
    assert_eq!(e.code, 9);
    let e = Update::parse(&bson!({"$set": {"arr.$[q]": 1}}), None).unwrap_err();
    assert_eq!(e.code, 2);
}

#[test]
fn no_modifier_panics_on_odd_input() {
    let mods = [
        "$set",
        "$setOnInsert",
        "$unset",
        "$inc",
        "$mul",
        "$min",
        "$max",
        "$currentDate",
        "$push",
        "$addToSet",
        "$pop",
        "$pull",
        "$pullAll",
        "$rename",
    ];
    let odd = [
        bson!(1),
        bson!(-1),
        bson!("b"),
        bson!("a.0"),
        bson!(null),
        bson!([]),
        bson!({}),
        bson!({"$each": [1, 2], "$slice": -1, "$sort": 1, "$position": -5}),
        bson!({"$each": 1}),
        bson!({"$type": "timestamp"}),
        bson!({"$gt": 1}),
    ];
    let docs = [
        doc! {"_id": 1},
        doc! {"_id": 1, "a": [1, {"b": 2}, [3]], "b": {"c": 1}},
        doc! {"_id": 1, "a": 5, "b": "s"},
    ];
    for m in mods {
        for v in &odd {
            for path in ["a", "a.b", "a.0", "a.5.c", "b.c", "a.$[]", "_id"] {
                let mut inner = Document::new();
                inner.insert(path, v.clone());
                let mut spec = Document::new();
                spec.insert(m, inner);
                if let Ok(u) = Update::parse(&Bson::Document(spec), None) {
                    for d in &docs {
                        let _ = u.apply(d, &UpdateCtx::new(now()));
                    }
                }
            }
        }
    }
}

#[test]
fn parse_errors_match_server() {
    let e = upd_err(doc! {}, bson!({"$foo": {"a": 1}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (9, "Unknown modifier: $foo. Expected a valid update modifier or pipeline-style update specified as an array")
    );
    let e = upd_err(doc! {}, bson!({"$set": {"a": 1}, "$inc": {"a": 1}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (40, "Updating the path 'a' would create a conflict at 'a'")
    );
    let e = upd_err(doc! {}, bson!({"$set": {"a": 1}, "$inc": {"a.b": 1}}));
    assert_eq!(
        e.errmsg,
        "Updating the path 'a.b' would create a conflict at 'a'"
    );
    let e = upd_err(doc! {}, bson!({"$set": {"a.b": 1}, "$unset": {"a": 1}}));
    assert_eq!(
        e.errmsg,
        "Updating the path 'a' would create a conflict at 'a'"
    );
    let e = upd_err(doc! {}, bson!({"$set": 1}));
    assert_eq!(e.code, 9);
    let e = upd_err(doc! {}, bson!({"a": 1, "$set": {"b": 1}}));
    assert_eq!(e.code, 52);
    let e = upd_err(doc! {}, bson!([{"$match": {}}]));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (72, "$match is not allowed to be used within an update")
    );
}

#[test]
fn id_is_immutable() {
    let e = upd_err(doc! {"_id": 1}, bson!({"$set": {"_id": 2}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (
            66,
            "Performing an update on the path '_id' would modify the immutable field '_id'"
        )
    );
    assert_eq!(
        upd_err(doc! {"_id": 1}, bson!({"$unset": {"_id": 1}})).code,
        66
    );
    assert!(!upd(doc! {"_id": 1}, bson!({"$set": {"_id": 1}})).modified);
    let e = upd_err(doc! {"_id": {"x": 1}}, bson!({"$set": {"_id.x": 2}}));
    assert_eq!(
        e.errmsg,
        "Performing an update on the path '_id.x' would modify the immutable field '_id'"
    );
    let e = upd_err(doc! {"_id": 1}, bson!({"_id": 2, "a": 1}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (66, "After applying the update, the (immutable) field '_id' was found to have been altered to _id: 2")
    );
}

#[test]
fn path_not_viable() {
    let e = upd_err(doc! {"_id": 1, "a": 1}, bson!({"$set": {"a.b": 1}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (28, "Cannot create field 'b' in element {a: 1}")
    );
    let e = upd_err(doc! {"_id": 1, "a": [1]}, bson!({"$set": {"a.b": 1}}));
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (28, "Cannot create field 'b' in element {a: [ 1 ]}")
    );
}

#[test]
fn replacement() {
    let o = upd(doc! {"_id": 1, "a": 1}, bson!({"x": "new"}));
    assert!(o.is_replacement);
    assert_eq!(o.new_doc, doc! {"_id": 1, "x": "new"});
    assert_eq!(o.v2_diff, doc! {"_id": 1, "x": "new"});
    assert_eq!(o.v1, doc! {"_id": 1, "x": "new"});
    assert!(!upd(doc! {"_id": 1, "a": 1}, bson!({"a": 1})).modified);
}

#[test]
fn set_on_insert_only_on_upsert_insert() {
    let u = Update::parse(&bson!({"$setOnInsert": {"c": 1}, "$set": {"a": 1}}), None).unwrap();
    let o = u.apply(&doc! {"_id": 1}, &UpdateCtx::new(now())).unwrap();
    assert_eq!(o.new_doc, doc! {"_id": 1, "a": 1});
    let mut ctx = UpdateCtx::new(now());
    ctx.is_upsert_insert = true;
    let o = u.apply(&doc! {"_id": 1}, &ctx).unwrap();
    assert_eq!(o.new_doc, doc! {"_id": 1, "a": 1, "c": 1});
}

#[test]
fn upsert_seed_from_query() {
    let q = doc! {"a": 1, "b.c": {"$eq": 2}, "d": {"$gt": 1}, "$and": [{"e": "x"}], "_id": 7};
    assert_eq!(
        upsert_seed(&q).unwrap(),
        doc! {"_id": 7, "a": 1, "b": {"c": 2}, "e": "x"}
    );
    assert_eq!(upsert_seed_for(&q, true).unwrap(), doc! {"_id": 7});
    assert_eq!(
        upsert_seed(&doc! {"_id": {"$in": [3]}, "$or": [{"x": 1}], "y": {"$in": [1, 2]}}).unwrap(),
        doc! {"_id": 3, "x": 1}
    );
    let e = upsert_seed(&doc! {"a": 1, "$and": [{"a": 2}]}).unwrap_err();
    assert_eq!(e.code, 54);
}

#[test]
fn diffs_round_trip_through_update_description() {
    let o = upd(
        doc! {"_id": 1, "a": 1, "c": 3, "arr": [1, 2], "sub": {"x": 1}},
        bson!({"$set": {"a": 2, "sub.y": 1}, "$unset": {"c": 1}, "$push": {"arr": 3}}),
    );
    let ud = super::super::update_description::from_v2_diff(&diff(&o), false).unwrap();
    assert_eq!(
        ud,
        doc! {"updatedFields": {"a": 2, "arr.2": 3, "sub.y": 1}, "removedFields": ["c"], "truncatedArrays": []}
    );
}
