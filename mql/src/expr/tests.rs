use super::*;
use bson::{bson, doc};

fn ev(e: Bson, d: &Document) -> CmdResult<Option<Bson>> {
    Expr::parse(&e)?.eval(&Vars::new(d))
}

#[test]
fn rand_is_a_double_in_unit_interval_and_takes_no_arguments() {
    let d = doc! {};
    for _ in 0..100 {
        match ev(bson!({"$rand": {}}), &d).unwrap() {
            Some(Bson::Double(x)) => assert!((0.0..1.0).contains(&x), "{x}"),
            other => panic!("not a double: {other:?}"),
        }
    }
    let e = Expr::parse(&bson!({"$rand": {"seed": 1}})).unwrap_err();
    assert_eq!(e.code, 3040500);
}

#[test]
fn field_paths_and_vars() {
    let d = doc! {"a": {"b": 1}, "arr": [{"x": 1}, {"y": 2}, {"x": [3]}, 4]};
    assert_eq!(ev(bson!("$a.b"), &d).unwrap(), Some(bson!(1)));
    assert_eq!(ev(bson!("$nope"), &d).unwrap(), None);
    assert_eq!(ev(bson!("$arr.x"), &d).unwrap(), Some(bson!([1, [3]])));
    assert_eq!(ev(bson!("$$ROOT.a"), &d).unwrap(), Some(bson!({"b": 1})));
    assert_eq!(ev(bson!("$$CURRENT.a.b"), &d).unwrap(), Some(bson!(1)));
    assert_eq!(ev(bson!("$$REMOVE"), &d).unwrap(), None);
    assert_eq!(ev(bson!("$$nope"), &d).unwrap_err().code, 17276);
    assert_eq!(ev(bson!("plain"), &d).unwrap(), Some(bson!("plain")));
    assert_eq!(
        ev(bson!({"$literal": "$a"}), &d).unwrap(),
        Some(bson!("$a"))
    );
}

#[test]
fn comparisons_treat_missing_below_null() {
    let d = doc! {"n": null, "a": 1};
    assert_eq!(
        ev(bson!({"$eq": ["$missing", null]}), &d).unwrap(),
        Some(bson!(false))
    );
    assert_eq!(
        ev(bson!({"$eq": ["$n", null]}), &d).unwrap(),
        Some(bson!(true))
    );
    assert_eq!(
        ev(bson!({"$lt": ["$missing", null]}), &d).unwrap(),
        Some(bson!(true))
    );
    assert_eq!(
        ev(bson!({"$gt": ["$a", 0.5]}), &d).unwrap(),
        Some(bson!(true))
    );
    assert_eq!(ev(bson!({"$cmp": ["$a", 2]}), &d).unwrap(), Some(bson!(-1)));
    assert_eq!(ev(bson!({"$eq": ["$a"]}), &d).unwrap_err().code, 16020);
}

#[test]
fn arithmetic_and_strings() {
    let d = doc! {"a": 2, "b": 2.5, "s": "x", "big": i32::MAX};
    assert_eq!(ev(bson!({"$add": ["$a", 3]}), &d).unwrap(), Some(bson!(5)));
    assert_eq!(
        ev(bson!({"$add": ["$a", "$b"]}), &d).unwrap(),
        Some(bson!(4.5))
    );
    assert_eq!(
        ev(bson!({"$add": ["$big", 1]}), &d).unwrap(),
        Some(Bson::Int64(i64::from(i32::MAX) + 1))
    );
    assert_eq!(
        ev(bson!({"$add": ["$a", "$missing"]}), &d).unwrap(),
        Some(Bson::Null)
    );
    assert_eq!(
        ev(bson!({"$subtract": ["$a", 5]}), &d).unwrap(),
        Some(bson!(-3))
    );
    assert_eq!(ev(bson!({"$add": ["$s", 1]}), &d).unwrap_err().code, 16554);
    assert_eq!(
        ev(bson!({"$concat": ["$s", "y"]}), &d).unwrap(),
        Some(bson!("xy"))
    );
    assert_eq!(
        ev(bson!({"$concat": ["$s", "$zz"]}), &d).unwrap(),
        Some(Bson::Null)
    );
    assert_eq!(
        ev(bson!({"$concat": ["$s", 1]}), &d).unwrap_err().code,
        16702
    );
    assert_eq!(
        ev(bson!({"$toString": "$a"}), &d).unwrap(),
        Some(bson!("2"))
    );
    assert_eq!(ev(bson!({"$divide": [1, 0]}), &d).unwrap_err().code, 2);
}

#[test]
fn logic_cond_ifnull_in_size_merge() {
    let d = doc! {"a": [1, 2], "o": {"x": 1}, "z": 0};
    assert_eq!(
        ev(
            bson!({"$cond": [{"$gt": [{"$size": "$a"}, 1]}, "big", "small"]}),
            &d
        )
        .unwrap(),
        Some(bson!("big"))
    );
    assert_eq!(
        ev(bson!({"$cond": {"if": "$z", "then": 1, "else": 2}}), &d).unwrap(),
        Some(bson!(2))
    );
    assert_eq!(
        ev(bson!({"$ifNull": ["$m", "$z"]}), &d).unwrap(),
        Some(bson!(0))
    );
    assert_eq!(
        ev(bson!({"$in": [2, "$a"]}), &d).unwrap(),
        Some(bson!(true))
    );
    assert_eq!(ev(bson!({"$in": [2, "$o"]}), &d).unwrap_err().code, 40081);
    assert_eq!(ev(bson!({"$size": "$o"}), &d).unwrap_err().code, 17124);
    assert_eq!(
        ev(bson!({"$mergeObjects": ["$o", {"y": 2}, null]}), &d).unwrap(),
        Some(bson!({"x": 1, "y": 2}))
    );
    assert_eq!(
        ev(bson!({"$and": [1, "$a"]}), &d).unwrap(),
        Some(bson!(true))
    );
    assert_eq!(
        ev(bson!({"$or": [0, "$m"]}), &d).unwrap(),
        Some(bson!(false))
    );
    assert_eq!(ev(bson!({"$not": [[]]}), &d).unwrap(), Some(bson!(false)));
}

#[test]
fn scoped_variables() {
    let d = doc! {"a": [1, 2, 3], "o": {"x.y": 5}};
    assert_eq!(
        ev(
            bson!({"$map": {"input": "$a", "as": "n", "in": {"$add": ["$$n", 1]}}}),
            &d
        )
        .unwrap(),
        Some(bson!([2, 3, 4]))
    );
    assert_eq!(
        ev(
            bson!({"$filter": {"input": "$a", "cond": {"$gte": ["$$this", 2]}, "limit": 1}}),
            &d
        )
        .unwrap(),
        Some(bson!([2]))
    );
    assert_eq!(
        ev(
            bson!({"$let": {"vars": {"k": 10}, "in": {"$multiply": ["$$k", 2]}}}),
            &d
        )
        .unwrap(),
        Some(bson!(20))
    );
    assert_eq!(
        ev(bson!({"$getField": {"field": "x.y", "input": "$o"}}), &d).unwrap(),
        Some(bson!(5))
    );
    assert_eq!(
        ev(
            bson!({"$setField": {"field": "n.m", "input": "$o", "value": 1}}),
            &d
        )
        .unwrap(),
        Some(bson!({"x.y": 5, "n.m": 1}))
    );
    assert_eq!(
        ev(bson!({"$unsetField": {"field": "x.y", "input": "$o"}}), &d).unwrap(),
        Some(bson!({}))
    );
    // crud spec updateOne-dots_and_dollars.json
    assert_eq!(
        ev(
            bson!({"$setField": {"field": {"$literal": "$a"}, "value": 1, "input": "$$ROOT"}}),
            &d
        )
        .unwrap(),
        Some(bson!({"a": [1, 2, 3], "o": {"x.y": 5}, "$a": 1}))
    );
    assert_eq!(
        ev(bson!({"$map": {"input": "$a", "in": 1, "bad": 1}}), &d)
            .unwrap_err()
            .code,
        16879
    );
}

#[test]
fn extreme_arguments_do_not_panic() {
    let d = doc! {"a": [1, 2, 3], "t": bson::DateTime::from_millis(i64::MIN)};
    assert_eq!(
        ev(bson!({"$slice": ["$a", i64::MIN]}), &d).unwrap(),
        Some(bson!([1, 2, 3]))
    );
    assert_eq!(
        ev(bson!({"$slice": ["$a", i64::MIN, 2]}), &d).unwrap(),
        Some(bson!([1, 2]))
    );
    assert_eq!(
        ev(bson!({"$arrayElemAt": ["$a", i64::MIN]}), &d).unwrap(),
        None
    );
    assert!(ev(bson!({"$subtract": ["$t", i64::MAX]}), &d).is_ok());
    assert_eq!(
        ev(bson!({"$abs": i32::MIN}), &d).unwrap(),
        Some(Bson::Int64(2147483648))
    );
    assert_eq!(
        ev(bson!({"$multiply": [i64::MAX, 2]}), &d).unwrap(),
        Some(Bson::Double(i64::MAX as f64 * 2.0))
    );
}

#[test]
fn no_operator_panics_on_odd_arguments() {
    let d = doc! {"a": [1], "s": "x", "o": {"k": 1}};
    let odd = [
        bson!([]),
        bson!([null]),
        bson!("x"),
        bson!(["$a", "$s", "$o", 1.5, null]),
        bson!({"x": 1}),
        bson!([[], {}]),
    ];
    for op in KNOWN_OPS
        .iter()
        .chain(["$let", "$map", "$filter", "$cond", "$literal"].iter())
    {
        for arg in &odd {
            let mut spec = Document::new();
            spec.insert(*op, arg.clone());
            if let Ok(e) = Expr::parse(&Bson::Document(spec)) {
                let _ = e.eval(&Vars::new(&d));
            }
        }
    }
}

#[test]
fn unknown_operator_is_168() {
    let e = Expr::parse(&bson!({"$frobnicate": 1})).unwrap_err();
    assert_eq!(e.code, 168);
    assert_eq!(e.code_name, "InvalidPipelineOperator");
    assert_eq!(e.errmsg, "Unrecognized expression '$frobnicate'");
    assert_eq!(
        Expr::parse(&bson!({"$add": [1], "x": 1})).unwrap_err().code,
        15983
    );
}

#[test]
fn object_expression_drops_missing() {
    let d = doc! {"a": 1};
    assert_eq!(
        ev(bson!({"x": "$a", "y": "$nope", "z": ["$nope"]}), &d).unwrap(),
        Some(bson!({"x": 1, "z": [null]}))
    );
}
