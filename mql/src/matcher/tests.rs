use super::*;
use bson::doc;

fn m(filter: Document, d: Document) -> bool {
    Matcher::parse(&filter).unwrap().matches(&d)
}

#[test]
fn equality_scalars_arrays_nulls() {
    assert!(m(doc! {"a": 1}, doc! {"a": 1.0}));
    assert!(m(doc! {"a": 1}, doc! {"a": [3, 1]}));
    assert!(m(doc! {"a": [3, 1]}, doc! {"a": [3, 1]}));
    assert!(!m(doc! {"a": [1, 3]}, doc! {"a": [3, 1]}));
    assert!(m(doc! {"a": [1]}, doc! {"a": [[1], 2]}));
    assert!(m(doc! {"a": null}, doc! {"b": 1}));
    assert!(m(doc! {"a": null}, doc! {"a": null}));
    assert!(!m(doc! {"a": null}, doc! {"a": 0}));
    assert!(m(doc! {"a": {"b": 1}}, doc! {"a": {"b": 1}}));
    assert!(!m(doc! {"a": {"b": 1}}, doc! {"a": {"b": 1, "c": 2}}));
    assert!(m(doc! {}, doc! {"x": 1}));
}

#[test]
fn dotted_through_arrays() {
    let d = doc! {"a": [{"b": 1}, {"b": [2, 3]}, {"c": 4}], "x": {"y": [{"z": 5}]}};
    assert!(m(doc! {"a.b": 1}, d.clone()));
    assert!(m(doc! {"a.b": 3}, d.clone()));
    assert!(m(doc! {"a.c": 4}, d.clone()));
    assert!(m(doc! {"a.b": null}, d.clone()));
    assert!(m(doc! {"x.y.z": 5}, d.clone()));
    assert!(m(doc! {"a.1.b": 2}, d.clone()));
    assert!(m(doc! {"a.0": {"b": 1}}, d.clone()));
    assert!(!m(doc! {"a.5": {"b": 1}}, d.clone()));
    assert!(m(doc! {"x.y.0.z": 5}, d));
    // numeric component also means a field named "0" in embedded docs of the array
    assert!(m(doc! {"a.0": 9}, doc! {"a": [{"0": 9}]}));
    assert!(m(doc! {"a.0": {"$exists": false}}, doc! {"a": []}));
    assert!(!m(doc! {"a.0": {"$exists": true}}, doc! {"a": []}));
    assert!(m(doc! {"a.0": null}, doc! {"a": []}));
    assert!(m(doc! {"a.b": null}, doc! {"a": [1, 2]}));
    assert!(!m(doc! {"a.b": null}, doc! {"a": [{"b": 1}, 2]}));
}

#[test]
fn comparisons_type_bracketing() {
    assert!(m(doc! {"a": {"$gt": 1}}, doc! {"a": 2i64}));
    assert!(!m(doc! {"a": {"$gt": 1}}, doc! {"a": "z"}));
    assert!(m(doc! {"a": {"$lt": "b"}}, doc! {"a": "a"}));
    assert!(m(doc! {"a": {"$gte": 2, "$lte": 2}}, doc! {"a": [1, 2, 3]}));
    assert!(m(doc! {"a": {"$gt": 1, "$lt": 3}}, doc! {"a": [0, 5]}));
    assert!(!m(doc! {"a": {"$gt": 1}}, doc! {"b": 1}));
    assert!(m(doc! {"a": {"$gte": null}}, doc! {"b": 1}));
    assert!(m(doc! {"a": {"$gt": bson::Bson::MinKey}}, doc! {"a": "x"}));
}

#[test]
fn negations() {
    assert!(m(doc! {"a": {"$ne": 1}}, doc! {"a": 2}));
    assert!(!m(doc! {"a": {"$ne": 1}}, doc! {"a": [1, 2]}));
    assert!(m(doc! {"a": {"$ne": 1}}, doc! {}));
    assert!(!m(doc! {"a": {"$ne": null}}, doc! {}));
    assert!(m(doc! {"a": {"$nin": [1, 2]}}, doc! {"a": 3}));
    assert!(!m(doc! {"a": {"$nin": [1, 2]}}, doc! {"a": [3, 2]}));
    assert!(m(doc! {"a": {"$not": {"$gt": 5}}}, doc! {"a": 3}));
    assert!(m(doc! {"a": {"$not": {"$gt": 5}}}, doc! {"a": "str"}));
    assert!(m(doc! {"$nor": [{"a": 1}, {"b": 1}]}, doc! {"a": 2}));
}

#[test]
fn in_exists_type() {
    assert!(m(doc! {"a": {"$in": [1, "x"]}}, doc! {"a": "x"}));
    assert!(m(doc! {"a": {"$in": [null]}}, doc! {}));
    assert!(m(
        doc! {"a": {"$in": [bson::Regex { pattern: "^x".into(), options: String::new() }]}},
        doc! {"a": "xy"}
    ));
    assert!(m(doc! {"a.b": {"$exists": true}}, doc! {"a": [{"b": 1}]}));
    assert!(!m(doc! {"a.b": {"$exists": true}}, doc! {"a": [{"c": 1}]}));
    assert!(m(doc! {"a": {"$exists": false}}, doc! {"b": 1}));
    assert!(m(doc! {"a": {"$exists": 0}}, doc! {"b": 1}));
    assert!(m(doc! {"a": {"$type": "string"}}, doc! {"a": "s"}));
    assert!(m(doc! {"a": {"$type": 2}}, doc! {"a": "s"}));
    assert!(m(doc! {"a": {"$type": "number"}}, doc! {"a": 1.5}));
    assert!(m(doc! {"a": {"$type": ["bool", "long"]}}, doc! {"a": 1i64}));
    assert!(m(doc! {"a": {"$type": "array"}}, doc! {"a": []}));
    assert!(m(doc! {"a": {"$type": "int"}}, doc! {"a": ["x", 1]}));
    assert!(!m(doc! {"a": {"$type": "null"}}, doc! {}));
    assert_eq!(
        Matcher::parse(&doc! {"a": {"$type": "nope"}})
            .unwrap_err()
            .errmsg,
        "Unknown type name alias: nope"
    );
}

#[test]
fn regexes() {
    assert!(m(doc! {"a": {"$regex": "^ab"}}, doc! {"a": "abc"}));
    assert!(m(
        doc! {"a": {"$regex": "^AB", "$options": "i"}},
        doc! {"a": "abc"}
    ));
    assert!(m(
        doc! {"a": bson::Regex { pattern: "c$".into(), options: String::new() }},
        doc! {"a": ["x", "abc"]}
    ));
    assert!(!m(doc! {"a": {"$regex": "^ab"}}, doc! {"a": 1}));
    assert!(m(
        doc! {"a": {"$not": bson::Regex { pattern: "^a".into(), options: String::new() }}},
        doc! {"a": "b"}
    ));
    assert_eq!(
        Matcher::parse(&doc! {"a": {"$options": "i"}})
            .unwrap_err()
            .errmsg,
        "$options needs a $regex"
    );
}

#[test]
fn arrays_ops() {
    let d = doc! {"a": [{"x": 1, "y": 2}, {"x": 2, "y": 1}], "n": [1, 5, 9]};
    assert!(m(doc! {"a": {"$elemMatch": {"x": 1, "y": 2}}}, d.clone()));
    assert!(!m(doc! {"a": {"$elemMatch": {"x": 1, "y": 1}}}, d.clone()));
    assert!(m(
        doc! {"n": {"$elemMatch": {"$gt": 4, "$lt": 6}}},
        d.clone()
    ));
    assert!(!m(
        doc! {"n": {"$elemMatch": {"$gt": 5, "$lt": 9}}},
        d.clone()
    ));
    assert!(m(doc! {"n": {"$size": 3}}, d.clone()));
    assert!(!m(doc! {"n": {"$size": 2}}, d.clone()));
    assert!(m(doc! {"n": {"$all": [9, 1]}}, d.clone()));
    assert!(!m(doc! {"n": {"$all": [9, 2]}}, d.clone()));
    assert!(!m(doc! {"n": {"$all": []}}, d.clone()));
    assert!(m(
        doc! {"a": {"$all": [{"$elemMatch": {"x": 2}}, {"$elemMatch": {"y": 2}}]}},
        d.clone()
    ));
    assert!(m(doc! {"n": {"$mod": [4, 1]}}, d.clone()));
    assert!(!m(doc! {"n": {"$mod": [10, 3]}}, d));
}

#[test]
fn logical_and_expr() {
    let d = doc! {"a": 1, "b": 2};
    assert!(m(doc! {"$and": [{"a": 1}, {"b": 2}]}, d.clone()));
    assert!(m(doc! {"$or": [{"a": 5}, {"b": 2}]}, d.clone()));
    assert!(!m(doc! {"$or": [{"a": 5}, {"b": 5}]}, d.clone()));
    assert!(m(doc! {"$expr": {"$lt": ["$a", "$b"]}}, d.clone()));
    assert!(!m(doc! {"$expr": {"$gt": ["$a", "$b"]}}, d.clone()));
    assert!(m(doc! {"a": 1, "$comment": "hi"}, d));
}

#[test]
fn expr_errors_are_reported_by_try_matches() {
    let m = Matcher::parse(&doc! {"$expr": {"$gt": [{"$add": ["$a", 1]}, 0]}}).unwrap();
    assert!(m.try_matches(&doc! {"a": 1}).unwrap());
    let e = m.try_matches(&doc! {"a": "s"}).unwrap_err();
    assert_eq!(e.code, 16554);
    assert!(!m.matches(&doc! {"a": "s"}));
}

#[test]
fn collation() {
    let mut m =
        Matcher::parse(&doc! {"x": "PING", "y": {"$in": ["A"]}, "z": {"$gte": "b"}}).unwrap();
    let d = doc! {"x": "ping", "y": "a", "z": "B"};
    assert!(!m.matches(&d));
    m.set_collation(Collation::parse(&doc! {"locale": "en_US", "strength": 2}).unwrap());
    assert!(m.matches(&d));
}

#[test]
fn let_variables_in_expr() {
    let lets = doc! {"id": 2, "lim": {"$add": [1, 1]}};
    let m =
        Matcher::parse_with_let(&doc! {"$expr": {"$eq": ["$_id", "$$id"]}}, Some(&lets)).unwrap();
    assert!(m.matches(&doc! {"_id": 2}));
    assert!(!m.matches(&doc! {"_id": 3}));
    let m =
        Matcher::parse_with_let(&doc! {"$expr": {"$lte": ["$n", "$$lim"]}}, Some(&lets)).unwrap();
    assert!(m.matches(&doc! {"n": 2}));
    let e = Matcher::parse_with_let(&doc! {}, Some(&doc! {"Bad": 1})).unwrap_err();
    assert_eq!(e.code, 16870);
}

#[test]
fn no_operator_panics_on_odd_arguments() {
    let ops = [
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$exists",
        "$type",
        "$regex",
        "$options",
        "$size",
        "$elemMatch",
        "$all",
        "$mod",
        "$not",
        "$comment",
        "$expr",
    ];
    let odd = [
        bson::bson!([]),
        bson::bson!([null]),
        bson::bson!("x"),
        bson::bson!(-1),
        bson::bson!(1.5),
        bson::bson!({}),
        bson::bson!({"$gt": 1}),
        bson::bson!([0, 0]),
        bson::bson!([i64::MIN, -1]),
    ];
    let docs = [
        doc! {},
        doc! {"a": [1, [2], {"b": 3}], "s": "x"},
        doc! {"a": {"b": [{"c": null}]}},
    ];
    for op in ops {
        for arg in &odd {
            let mut inner = Document::new();
            inner.insert(op, arg.clone());
            for path in ["a", "a.b", "a.0", "a.b.c"] {
                let mut f = Document::new();
                f.insert(path, inner.clone());
                if let Ok(m) = Matcher::parse(&f) {
                    for d in &docs {
                        let _ = m.matches(d);
                    }
                }
            }
            for top in ["$and", "$or", "$nor", "$expr", "$comment"] {
                let mut f = Document::new();
                f.insert(top, arg.clone());
                if let Ok(m) = Matcher::parse(&f) {
                    for d in &docs {
                        let _ = m.matches(d);
                    }
                }
            }
        }
    }
}

#[test]
fn errors_match_server() {
    let e = Matcher::parse(&doc! {"a": {"$foo": 1}}).unwrap_err();
    assert_eq!((e.code, e.errmsg.as_str()), (2, "unknown operator: $foo"));
    let e = Matcher::parse(&doc! {"$foo": 1}).unwrap_err();
    assert_eq!(e.code, 2);
    assert!(e.errmsg.starts_with("unknown top level operator: $foo"));
    let e = Matcher::parse(&doc! {"$not": {"a": 1}}).unwrap_err();
    assert_eq!(
        e.errmsg,
        "unknown top level operator: $not. If you are trying to negate an entire expression, use $nor."
    );
    let e = Matcher::parse(&doc! {"$or": []}).unwrap_err();
    assert_eq!(e.errmsg, "$and/$or/$nor must be a nonempty array");
    let e = Matcher::parse(&doc! {"$and": [1]}).unwrap_err();
    assert_eq!(e.errmsg, "$or/$and/$nor entries need to be full objects");
    let e = Matcher::parse(&doc! {"a": {"$in": 1}}).unwrap_err();
    assert_eq!(e.errmsg, "$in needs an array");
    let e = Matcher::parse(&doc! {"a": {"$size": "x"}}).unwrap_err();
    assert_eq!(e.code, 2);
}

#[test]
fn positional_index() {
    let d = doc! {"a": [{"x": 1}, {"x": 5}, {"x": 7}], "n": [1, 5, 9]};
    let mt = Matcher::parse(&doc! {"a.x": {"$gt": 4}}).unwrap();
    assert_eq!(mt.matched_array_index(&d, "a"), Some(1));
    let mt = Matcher::parse(&doc! {"n": 9}).unwrap();
    assert_eq!(mt.matched_array_index(&d, "n"), Some(2));
    let mt = Matcher::parse(&doc! {"z": 9}).unwrap();
    assert_eq!(mt.matched_array_index(&d, "n"), None);
    let mt = Matcher::parse(&doc! {"a": {"$elemMatch": {"x": {"$gte": 6}}}}).unwrap();
    assert_eq!(mt.matched_array_index(&d, "a"), Some(2));
    let mt = Matcher::parse(&doc! {"n": {"$elemMatch": {"$gt": 1, "$lt": 9}}}).unwrap();
    assert_eq!(mt.matched_array_index(&d, "n"), Some(1));
}

/// The fields an oplog scan decodes: first path components in first-use order, through
/// `$and`/`$or`/`$nor`; `None` once an `$expr` (which sees the whole document) appears.
#[test]
fn top_level_fields() {
    let m = |f: Document| Matcher::parse(&f).unwrap().top_level_fields();
    assert_eq!(
        m(doc! {"ts": {"$gt": 1}, "ns": {"$in": ["a.b"]}, "o.x": 1, "o": {"$exists": true}}),
        Some(vec!["ts".to_string(), "ns".to_string(), "o".to_string()])
    );
    assert_eq!(
        m(doc! {"$or": [{"op": "i"}, {"fromMigrate": {"$exists": false}}]}),
        Some(vec!["op".to_string(), "fromMigrate".to_string()])
    );
    assert_eq!(m(doc! {}), Some(vec![]));
    assert_eq!(m(doc! {"ts": 1, "$expr": {"$eq": ["$op", "i"]}}), None);
    assert_eq!(
        m(doc! {"a": {"$elemMatch": {"$expr": {"$eq": [1, 1]}}}}),
        None
    );
}
