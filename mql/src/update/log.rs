//! Log entries (what the server's `LogBuilderInterface` receives) and their two
//! serializations: the 7.0 `$v: 2` diff and the 4.4 `$v: 1` `$set`/`$unset`.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};

use crate::path::array_index;

/// What happened at a path.
#[derive(Debug, Clone)]
pub(super) enum LogKind {
    Update(Bson),
    /// `$unset` of an array element: the element became `null`. 7.0 logs an update to null
    /// (SRV unset_node.cpp `logUpdate`); 4.4's `LogBuilder` logged it under `$unset`.
    NullElement,
    Create(Bson, usize),
    Delete,
}

/// One logged change.
#[derive(Debug, Clone)]
pub(super) struct LogEntry {
    /// Path components with "is an array index" flags (SRV `RuntimeUpdatePath`).
    pub(super) path: Vec<(String, bool)>,
    /// The change.
    pub(super) kind: LogKind,
}

/// The server's diff tree (SRV `document_diff_serialization.h` `diff_tree`).
#[derive(Debug, Clone)]
pub(super) enum DNode {
    Sub(Vec<(String, DNode)>),
    Ins(Vec<(String, DNode)>),
    Arr(BTreeMap<usize, DNode>, Option<usize>),
    Update(Bson),
    Insert(Bson),
    Delete,
}

impl DNode {
    fn child_mut(&mut self, name: &str) -> Option<&mut DNode> {
        match self {
            DNode::Sub(c) | DNode::Ins(c) => c.iter_mut().find(|(n, _)| n == name).map(|(_, n)| n),
            DNode::Arr(c, _) => array_index(name).and_then(|i| c.get_mut(&i)),
            _ => None,
        }
    }

    fn add_child(&mut self, name: &str, node: DNode) -> Option<&mut DNode> {
        match self {
            DNode::Sub(c) | DNode::Ins(c) => {
                c.push((name.to_string(), node));
                c.last_mut().map(|(_, n)| n)
            }
            DNode::Arr(c, _) => {
                let i = array_index(name)?;
                c.insert(i, node);
                c.get_mut(&i)
            }
            _ => None,
        }
    }

    /// SRV `V2LogBuilder::addNodeAtPathHelper`.
    fn add_at_path(
        &mut self,
        path: &[(String, bool)],
        idx: usize,
        leaf: DNode,
        first_new: Option<usize>,
    ) {
        let part = &path[idx].0;
        if idx == path.len() - 1 {
            self.add_child(part, leaf);
            return;
        }
        let is_new = first_new.is_some_and(|f| idx >= f);
        if self.child_mut(part).is_none() {
            // SRV createInternalNode
            let node = if path[idx + 1].1 {
                DNode::Arr(BTreeMap::new(), None)
            } else if is_new {
                DNode::Ins(Vec::new())
            } else {
                DNode::Sub(Vec::new())
            };
            self.add_child(part, node);
        }
        if let Some(child) = self.child_mut(part) {
            child.add_at_path(path, idx + 1, leaf, first_new);
        }
    }

    /// Serializes a document-level node (SRV `DocumentSubDiffFrame`).
    pub(super) fn serialize(&self) -> Document {
        let mut out = Document::new();
        match self {
            DNode::Sub(children) => {
                let mut d = Document::new();
                let mut u = Document::new();
                let mut i = Document::new();
                let mut subs: Vec<(String, Document)> = Vec::new();
                for (name, c) in children {
                    match c {
                        DNode::Delete => {
                            d.insert(name.clone(), false);
                        }
                        DNode::Update(v) => {
                            u.insert(name.clone(), v.clone());
                        }
                        DNode::Insert(v) => {
                            i.insert(name.clone(), v.clone());
                        }
                        DNode::Ins(_) => {
                            i.insert(name.clone(), c.serialize_insert());
                        }
                        DNode::Sub(_) | DNode::Arr(..) => {
                            subs.push((format!("s{name}"), c.serialize()));
                        }
                    }
                }
                if !d.is_empty() {
                    out.insert("d", d);
                }
                if !u.is_empty() {
                    out.insert("u", u);
                }
                if !i.is_empty() {
                    out.insert("i", i);
                }
                for (k, v) in subs {
                    out.insert(k, v);
                }
            }
            DNode::Arr(children, resize) => {
                // SRV ArrayFrame: header, resize, then children in index order.
                out.insert("a", true);
                if let Some(l) = resize {
                    out.insert("l", *l as i32);
                }
                for (idx, c) in children {
                    match c {
                        DNode::Update(v) | DNode::Insert(v) => {
                            out.insert(format!("u{idx}"), v.clone());
                        }
                        DNode::Ins(_) => {
                            out.insert(format!("u{idx}"), c.serialize_insert());
                        }
                        DNode::Sub(_) | DNode::Arr(..) => {
                            out.insert(format!("s{idx}"), c.serialize());
                        }
                        DNode::Delete => {}
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn serialize_insert(&self) -> Bson {
        match self {
            DNode::Ins(children) => {
                let mut d = Document::new();
                for (n, c) in children {
                    match c {
                        DNode::Insert(v) | DNode::Update(v) => {
                            d.insert(n.clone(), v.clone());
                        }
                        DNode::Ins(_) => {
                            d.insert(n.clone(), c.serialize_insert());
                        }
                        _ => {}
                    }
                }
                Bson::Document(d)
            }
            DNode::Insert(v) | DNode::Update(v) => v.clone(),
            _ => Bson::Null,
        }
    }
}

pub(super) fn v2_from_log(log: &[LogEntry]) -> Document {
    let mut root = DNode::Sub(Vec::new());
    for e in log {
        let (leaf, first_new) = match &e.kind {
            LogKind::Update(v) => (DNode::Update(v.clone()), None),
            LogKind::NullElement => (DNode::Update(Bson::Null), None),
            LogKind::Create(v, f) => (DNode::Insert(v.clone()), Some(*f)),
            LogKind::Delete => (DNode::Delete, None),
        };
        root.add_at_path(&e.path, 0, leaf, first_new);
    }
    doc! {"$v": 2, "diff": root.serialize()}
}

pub(super) fn v1_from_log(log: &[LogEntry]) -> Document {
    // 4.4 LogBuilder: `$v: 1` then `$set`/`$unset` sections in first-use order.
    let mut out = doc! {"$v": 1};
    let mut set = Document::new();
    let mut unset = Document::new();
    let mut order: Vec<&str> = Vec::new();
    for e in log {
        let path: Vec<&str> = e.path.iter().map(|(p, _)| p.as_str()).collect();
        let dotted = path.join(".");
        match &e.kind {
            LogKind::Update(v) | LogKind::Create(v, _) => {
                if !order.contains(&"$set") {
                    order.push("$set");
                }
                set.insert(dotted, v.clone());
            }
            LogKind::Delete | LogKind::NullElement => {
                if !order.contains(&"$unset") {
                    order.push("$unset");
                }
                unset.insert(dotted, true);
            }
        }
    }
    for s in order {
        if s == "$set" {
            out.insert("$set", std::mem::take(&mut set));
        } else {
            out.insert("$unset", std::mem::take(&mut unset));
        }
    }
    out
}
