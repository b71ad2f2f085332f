//! The diff calculator for pipeline updates (SRV `document_diff_calculator.cpp`): a delta
//! when it is smaller than the new document.

use std::collections::BTreeMap;

use bson::{Bson, Document};

use super::log::DNode;
use crate::compare::binary_eq;

/// Size of the `{$v: 2, diff: ...}` wrapper counted against a delta
/// (SRV pipeline_executor.cpp `kSizeOfDeltaOplogEntryMetadata`).
pub(super) const DELTA_PADDING: usize = 15;

fn bson_size(d: &Document) -> usize {
    bson::to_vec(d).map(|v| v.len()).unwrap_or(usize::MAX)
}

fn value_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => bson_size(d),
        Bson::Array(a) => {
            let mut d = Document::new();
            for (i, e) in a.iter().enumerate() {
                d.insert(i.to_string(), e.clone());
            }
            bson_size(&d)
        }
        other => {
            let mut d = Document::new();
            d.insert("", other.clone());
            bson_size(&d).saturating_sub(7)
        }
    }
}

/// SRV `doc_diff::computeOplogDiff`: a `$v:2` diff of `pre` -> `post`, or `None` when a
/// replacement is smaller. Sizes are the server's approximations
/// (`diff_tree::InternalNode::ApproxBSONSizeTracker`: empty document diff 5 bytes, empty
/// array diff 9, each entry name + 2 + value size, +8 for each new `d`/`u`/`i` section, +1
/// for an `s` prefix, +7 for `l`).
pub fn compute_oplog_diff(pre: &Document, post: &Document, padding: usize) -> Option<Document> {
    let (node, _) = compute_doc_diff(pre, post, padding)?;
    let diff = node.serialize();
    (bson_size(&diff) < bson_size(post)).then_some(diff)
}

/// A document diff under construction with its approximate size.
struct DocDiff {
    children: Vec<(String, DNode)>,
    size: usize,
    has_u: bool,
    has_i: bool,
    has_d: bool,
}

impl DocDiff {
    fn new(padding: usize) -> Self {
        DocDiff {
            children: Vec::new(),
            size: padding + 5,
            has_u: false,
            has_i: false,
            has_d: false,
        }
    }

    fn add(&mut self, name: &str, node: DNode, child_size: usize) {
        self.size += name.len() + 2;
        match &node {
            DNode::Sub(_) | DNode::Arr(..) => self.size += child_size + 1,
            DNode::Ins(_) => self.size += child_size,
            DNode::Update(v) => {
                self.size += value_size(v);
                if !self.has_u {
                    self.has_u = true;
                    self.size += 8;
                }
            }
            DNode::Insert(v) => {
                self.size += value_size(v);
                if !self.has_i {
                    self.has_i = true;
                    self.size += 8;
                }
            }
            DNode::Delete => {
                self.size += 1;
                if !self.has_d {
                    self.has_d = true;
                    self.size += 8;
                }
            }
        }
        self.children.push((name.to_string(), node));
    }
}

fn compute_doc_diff(pre: &Document, post: &Document, padding: usize) -> Option<(DNode, usize)> {
    let post_size = bson_size(post);
    let mut diff = DocDiff::new(padding);
    let mut deletes: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let pre_v: Vec<(&String, &Bson)> = pre.iter().collect();
    let post_v: Vec<(&String, &Bson)> = post.iter().collect();
    let (mut i, mut j) = (0, 0);
    while i < pre_v.len() && j < post_v.len() {
        if post_size < diff.size {
            return None;
        }
        let (pk, pv) = pre_v[i];
        let (qk, qv) = post_v[j];
        if pk == qk && binary_eq(pv, qv) && same_type(pv, qv) {
            i += 1;
            j += 1;
            continue;
        }
        if pk == qk {
            let (node, size) = sub_diff(pv, qv);
            diff.add(pk, node, size);
            i += 1;
            j += 1;
        } else {
            deletes.insert(pk.clone());
            i += 1;
        }
    }
    while i < pre_v.len() {
        diff.add(pre_v[i].0, DNode::Delete, 0);
        i += 1;
    }
    while j < post_v.len() {
        let (k, v) = post_v[j];
        diff.add(k, DNode::Insert(v.clone()), 0);
        deletes.remove(k);
        j += 1;
    }
    for k in deletes {
        diff.add(&k, DNode::Delete, 0);
    }
    (post_size > diff.size).then(|| (DNode::Sub(diff.children), diff.size))
}

fn same_type(a: &Bson, b: &Bson) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// SRV `calculateSubDiffHelper`: a sub-diff, or an update of the whole value when the
/// sub-diff would not be smaller. Returns the node and its approximate size.
fn sub_diff(pre: &Bson, post: &Bson) -> (DNode, usize) {
    let sub = match (pre, post) {
        (Bson::Document(a), Bson::Document(b)) => compute_doc_diff(a, b, 0),
        (Bson::Array(a), Bson::Array(b)) => compute_array_diff(a, b),
        _ => None,
    };
    sub.unwrap_or_else(|| (DNode::Update(post.clone()), 0))
}

fn compute_array_diff(pre: &[Bson], post: &[Bson]) -> Option<(DNode, usize)> {
    let post_size = value_size(&Bson::Array(post.to_vec()));
    let mut children = BTreeMap::new();
    let mut size = 9;
    let add = |children: &mut BTreeMap<usize, DNode>,
               size: &mut usize,
               k: usize,
               node: DNode,
               child_size: usize| {
        *size += 1 + k.to_string().len() + 2;
        *size += match &node {
            DNode::Update(v) | DNode::Insert(v) => value_size(v),
            _ => child_size,
        };
        children.insert(k, node);
    };
    let n = pre.len().min(post.len());
    for k in 0..n {
        if post_size < size {
            return None;
        }
        if !(binary_eq(&pre[k], &post[k]) && same_type(&pre[k], &post[k])) {
            let (node, child_size) = sub_diff(&pre[k], &post[k]);
            add(&mut children, &mut size, k, node, child_size);
        }
    }
    for (k, v) in post.iter().enumerate().skip(n) {
        add(&mut children, &mut size, k, DNode::Update(v.clone()), 0);
    }
    let resize = (pre.len() > post.len()).then_some(post.len());
    if resize.is_some() {
        size += 7;
    }
    (post_size > size).then(|| (DNode::Arr(children, resize), size))
}
