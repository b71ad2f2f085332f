use super::*;
use bson::{bson, doc};

fn run(stages: Vec<Document>, docs: Vec<Document>) -> CmdResult<Vec<Document>> {
    Pipeline::parse(&stages)?.run(docs)
}

fn sample() -> Vec<Document> {
    vec![
        doc! {"_id": 1, "k": "a", "n": 1},
        doc! {"_id": 2, "k": "b", "n": 2},
        doc! {"_id": 3, "k": "a", "n": 3},
    ]
}

#[test]
fn match_sort_skip_limit() {
    let out = run(
        vec![
            doc! {"$match": {"n": {"$gte": 2}}},
            doc! {"$sort": {"n": -1}},
            doc! {"$skip": 1},
            doc! {"$limit": 5},
        ],
        sample(),
    )
    .unwrap();
    assert_eq!(out, vec![doc! {"_id": 2, "k": "b", "n": 2}]);
}

#[test]
fn group_and_count() {
    let out = run(
        vec![
            doc! {"$group": {"_id": "$k", "total": {"$sum": "$n"}, "c": {"$sum": 1}, "avg": {"$avg": "$n"},
                "mx": {"$max": "$n"}, "f": {"$first": "$_id"}, "all": {"$push": "$n"}}},
            doc! {"$sort": {"_id": 1}},
        ],
        sample(),
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            doc! {"_id": "a", "total": 4, "c": 2, "avg": 2.0, "mx": 3, "f": 1, "all": [1, 3]},
            doc! {"_id": "b", "total": 2, "c": 1, "avg": 2.0, "mx": 2, "f": 2, "all": [2]},
        ]
    );
    let out = run(vec![doc! {"$count": "n"}], sample()).unwrap();
    assert_eq!(out, vec![doc! {"n": 3}]);
    assert!(run(vec![doc! {"$count": "n"}], vec![]).unwrap().is_empty());
    let out = run(
        vec![doc! {"$group": {"_id": null, "s": {"$sum": "$n"}}}],
        sample(),
    )
    .unwrap();
    assert_eq!(out, vec![doc! {"_id": null, "s": 6}]);
}

#[test]
fn project_add_fields_unset_replace_root() {
    let docs = vec![doc! {"_id": 1, "a": {"b": 1, "c": 2}, "x": 5}];
    let out = run(vec![doc! {"$project": {"a.b": 1}}], docs.clone()).unwrap();
    assert_eq!(out, vec![doc! {"_id": 1, "a": {"b": 1}}]);
    let out = run(
        vec![doc! {"$addFields": {"a.d": "$x", "y": {"$add": ["$x", 1]}}}],
        docs.clone(),
    )
    .unwrap();
    assert_eq!(
        out,
        vec![doc! {"_id": 1, "a": {"b": 1, "c": 2, "d": 5}, "x": 5, "y": 6}]
    );
    let out = run(vec![doc! {"$set": {"x": "$$REMOVE"}}], docs.clone()).unwrap();
    assert_eq!(out, vec![doc! {"_id": 1, "a": {"b": 1, "c": 2}}]);
    let out = run(vec![doc! {"$unset": ["x", "a.c"]}], docs.clone()).unwrap();
    assert_eq!(out, vec![doc! {"_id": 1, "a": {"b": 1}}]);
    let out = run(vec![doc! {"$replaceRoot": {"newRoot": "$a"}}], docs.clone()).unwrap();
    assert_eq!(out, vec![doc! {"b": 1, "c": 2}]);
    let out = run(
        vec![doc! {"$replaceWith": {"$mergeObjects": ["$a", {"z": 1}]}}],
        docs.clone(),
    )
    .unwrap();
    assert_eq!(out, vec![doc! {"b": 1, "c": 2, "z": 1}]);
    let e = run(vec![doc! {"$replaceWith": "$x"}], docs).unwrap_err();
    assert_eq!(e.code, 40228);
}

#[test]
fn unwind() {
    let docs = vec![
        doc! {"_id": 1, "a": [1, 2]},
        doc! {"_id": 2, "a": []},
        doc! {"_id": 3, "a": 7},
        doc! {"_id": 4},
    ];
    let out = run(vec![doc! {"$unwind": "$a"}], docs.clone()).unwrap();
    assert_eq!(
        out,
        vec![
            doc! {"_id": 1, "a": 1},
            doc! {"_id": 1, "a": 2},
            doc! {"_id": 3, "a": 7}
        ]
    );
    let out = run(
        vec![doc! {"$unwind": {"path": "$a", "includeArrayIndex": "i", "preserveNullAndEmptyArrays": true}}],
        docs,
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            doc! {"_id": 1, "a": 1, "i": 0i64},
            doc! {"_id": 1, "a": 2, "i": 1i64},
            doc! {"_id": 2, "i": null},
            doc! {"_id": 3, "a": 7, "i": null},
            doc! {"_id": 4, "i": null},
        ]
    );
    assert_eq!(
        Pipeline::parse(&[doc! {"$unwind": "a"}]).unwrap_err().code,
        28818
    );
}

#[test]
fn facet_and_sort_by_count() {
    let out = run(
        vec![
            doc! {"$facet": {"n": [{"$count": "c"}], "top": [{"$sort": {"n": -1}}, {"$limit": 1}]}},
        ],
        sample(),
    )
    .unwrap();
    assert_eq!(
        out,
        vec![doc! {"n": [{"c": 3}], "top": [{"_id": 3, "k": "a", "n": 3}]}]
    );
    let out = run(vec![doc! {"$sortByCount": "$k"}], sample()).unwrap();
    assert_eq!(
        out,
        vec![doc! {"_id": "a", "count": 2}, doc! {"_id": "b", "count": 1}]
    );
    assert_eq!(
        Pipeline::parse(&[doc! {"$addFields": {}}])
            .unwrap_err()
            .code,
        40177
    );
}

#[test]
fn bucket_and_bucket_auto() {
    let docs: Vec<Document> = (1..=10).map(|i| doc! {"_id": i, "v": i * 10}).collect();
    let out = run(
        vec![
            doc! {"$bucket": {"groupBy": "$v", "boundaries": [0, 50, 80], "default": "other",
            "output": {"n": {"$sum": 1}, "ids": {"$push": "$_id"}}}},
        ],
        docs.clone(),
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            doc! {"_id": 0, "n": 4, "ids": [1, 2, 3, 4]},
            doc! {"_id": 50, "n": 3, "ids": [5, 6, 7]},
            doc! {"_id": "other", "n": 3, "ids": [8, 9, 10]},
        ]
    );
    let e = run(
        vec![doc! {"$bucket": {"groupBy": "$v", "boundaries": [0, 50]}}],
        docs.clone(),
    )
    .unwrap_err();
    assert_eq!(e.code, 40066);
    let e =
        Pipeline::parse(&[doc! {"$bucket": {"groupBy": "$v", "boundaries": [5, 1]}}]).unwrap_err();
    assert_eq!(e.code, 40194);
    let out = run(
        vec![doc! {"$bucketAuto": {"groupBy": "$v", "buckets": 3}}],
        docs,
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            doc! {"_id": {"min": 10, "max": 40}, "count": 3},
            doc! {"_id": {"min": 40, "max": 70}, "count": 3},
            doc! {"_id": {"min": 70, "max": 100}, "count": 4},
        ]
    );
}

#[test]
fn sample_stage() {
    let out = run(vec![doc! {"$sample": {"size": 2}}], sample()).unwrap();
    assert_eq!(out.len(), 2);
}

#[test]
fn errors() {
    let e = Pipeline::parse(&[doc! {"$foo": 1}]).unwrap_err();
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (40324, "Unrecognized pipeline stage name: '$foo'")
    );
    let e = Pipeline::parse(&[doc! {"$match": {}, "$sort": {"a": 1}}]).unwrap_err();
    assert_eq!(e.code, 40323);
    let e = Pipeline::parse(&[doc! {"$project": {"x": {"$nope": 1}}}]).unwrap_err();
    assert_eq!(e.code, 168);
    let e = Pipeline::parse(&[doc! {"$limit": 0}]).unwrap_err();
    assert_eq!(e.code, 15958);
    let e = Pipeline::parse(&[doc! {"$project": {"a": 1, "b": 0}}]).unwrap_err();
    assert_eq!(e.code, 31254);
    assert!(e.errmsg.starts_with("Invalid $project :: caused by :: "));
    let p = Pipeline::parse(&[doc! {"$match": {"a": 1}}, doc! {"$project": {"a": 1}}]).unwrap();
    assert_eq!(p.stage_names(), vec!["$match", "$project"]);
    let _ = bson!(1);
}

#[test]
fn let_variables() {
    let lets = doc! {"want": "a"};
    let p = Pipeline::parse_with_let(
        &[
            doc! {"$match": {"$expr": {"$eq": ["$k", "$$want"]}}},
            doc! {"$project": {"_id": 1, "w": "$$want"}},
        ],
        Some(&lets),
    )
    .unwrap();
    let vars = crate::matcher::eval_lets(Some(&lets)).unwrap();
    let out = p
        .run_with_vars(sample(), DateTime::now(), None, &vars)
        .unwrap();
    assert_eq!(
        out,
        vec![doc! {"_id": 1, "w": "a"}, doc! {"_id": 3, "w": "a"}]
    );
}

#[test]
fn out_and_merge_are_final_stages_reported_to_the_caller() {
    let p = Pipeline::parse(&[doc! {"$match": {"n": {"$gt": 1}}}, doc! {"$out": "other"}]).unwrap();
    assert_eq!(p.stage_names(), vec!["$match", "$out"]);
    assert_eq!(
        p.output_stage(),
        Some(&OutputStage::Out {
            db: None,
            coll: "other".into()
        })
    );
    assert_eq!(p.run(sample()).unwrap_err().code, 40324);
    assert_eq!(
        p.run_for_output(sample(), DateTime::now(), None, &[])
            .unwrap()
            .len(),
        2
    );
    let p = Pipeline::parse(&[
        doc! {"$merge": {"into": {"db": "d", "coll": "c"}, "whenMatched": "replace"}},
    ])
    .unwrap();
    assert_eq!(
        p.output_stage(),
        Some(&OutputStage::Merge {
            db: Some("d".into()),
            coll: "c".into(),
            on: vec!["_id".into()],
            when_matched: MergeWhenMatched::Mode("replace".into()),
            when_not_matched: "insert".into(),
        })
    );
    let e = Pipeline::parse(&[doc! {"$out": "x"}, doc! {"$match": {}}]).unwrap_err();
    assert_eq!(
        (e.code, e.errmsg.as_str()),
        (40601, "$out can only be the final stage in the pipeline")
    );
    assert_eq!(
        merge_documents(
            &doc! {"_id": 1, "a": 1, "b": 1},
            &doc! {"_id": 1, "b": 2, "c": 3}
        ),
        doc! {"_id": 1, "a": 1, "b": 2, "c": 3}
    );
}

#[test]
fn run_one_filters() {
    let p = Pipeline::parse(&[doc! {"$match": {"operationType": "insert"}}]).unwrap();
    assert!(p
        .run_one(doc! {"operationType": "insert"})
        .unwrap()
        .is_some());
    assert!(p
        .run_one(doc! {"operationType": "delete"})
        .unwrap()
        .is_none());
}

/// `$redact` as in the server manual's example: levels whose `tags` do not intersect the
/// allowed set are pruned, others are descended into; arrays of documents are redacted
/// element by element.
#[test]
fn redact_descends_prunes_and_keeps() {
    let decide = doc! {"$cond": {
        "if": {"$in": ["G", {"$ifNull": ["$tags", ["G"]]}]},
        "then": "$$DESCEND",
        "else": "$$PRUNE",
    }};
    let docs = vec![doc! {
        "_id": 1, "tags": ["G"], "title": "t",
        "sub": {"tags": ["X"], "secret": 1},
        "list": [{"tags": ["G"], "a": 1}, {"tags": ["X"], "b": 2}, 3, [{"tags": ["X"]}]],
    }];
    let out = run(vec![doc! {"$redact": decide}], docs).unwrap();
    assert_eq!(
        out,
        vec![
            doc! {"_id": 1, "tags": ["G"], "title": "t", "list": [{"tags": ["G"], "a": 1}, 3, []]}
        ]
    );
    let kept = run(vec![doc! {"$redact": "$$KEEP"}], vec![doc! {"a": {"b": 1}}]).unwrap();
    assert_eq!(kept, vec![doc! {"a": {"b": 1}}]);
    let pruned = run(vec![doc! {"$redact": "$$PRUNE"}], vec![doc! {"a": 1}]).unwrap();
    assert!(pruned.is_empty());
    let e = run(vec![doc! {"$redact": "keep it"}], vec![doc! {"a": 1}]).unwrap_err();
    assert_eq!(e.code, 17053);
    assert!(
        e.errmsg
            .contains("$$KEEP, $$DESCEND, and $$PRUNE, but returned"),
        "{}",
        e.errmsg
    );
}
