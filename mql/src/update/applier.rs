//! One modifier applied along one concrete path: creating missing fields and array
//! elements, modifying existing elements, and logging each change.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::log::{LogEntry, LogKind};
use super::{bad, Mod, PullCond, Push, PushSort, UpdateCtx};
use crate::compare::{as_f64, binary_eq, bson_eq, cmp_bson};
use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};
use crate::fmt;
use crate::path::array_index;

/// SRV `pathsupport::kMaxPaddingAllowed`.
const MAX_PADDING: usize = 1_500_000;

/// One modifier being applied along one concrete path.
pub(super) struct Applier<'x, 'c> {
    /// The modifier.
    pub(super) m: &'x Mod,
    /// The update's context.
    pub(super) ctx: &'x UpdateCtx<'c>,
    /// Where changes are logged.
    pub(super) log: &'x mut Vec<LogEntry>,
    /// The document's `_id` (for error messages).
    pub(super) id: Option<&'x Bson>,
    /// The concrete path (positional components resolved).
    pub(super) path: &'x [String],
}

/// What a modifier did to an existing element.
enum Outcome {
    Noop,
    Updated,
    /// `$push` appended `n` elements at the end of a non-empty array.
    Appended(usize),
    /// `$unset` of a document field: remove it.
    Remove,
}

impl Applier<'_, '_> {
    fn creates(&self) -> bool {
        !matches!(
            self.m,
            Mod::Unset
                | Mod::Pop(_)
                | Mod::Pull(_)
                | Mod::PullAll(_)
                | Mod::Rename(_)
                | Mod::Placeholder
        )
    }

    fn id_string(&self) -> String {
        match self.id {
            Some(v) => format!("_id: {}", fmt::value(v)),
            None => "no id".to_string(),
        }
    }

    /// Applies at `self.path[i..]` inside document `d`. Returns the `$rename` source value
    /// (and its path) when the modifier is a rename whose source exists.
    pub(super) fn apply_in_doc(
        &mut self,
        d: &mut Document,
        i: usize,
        taken: &mut Vec<(String, bool)>,
    ) -> CmdResult<()> {
        let part = self.path[i].clone();
        let last = i == self.path.len() - 1;
        taken.push((part.clone(), false));
        match d.get_mut(&part) {
            Some(child) => {
                if last {
                    let o = self.apply_existing_leaf(child, taken)?;
                    self.finish_doc_leaf(o, d, &part, taken)
                } else {
                    self.descend(child, i, taken)
                }
            }
            None => {
                if self.creates() {
                    let value = self.new_value_for_missing()?;
                    let Some(value) = value else { return Ok(()) };
                    let nested = nest(&self.path[i + 1..], value.clone());
                    d.insert(part, nested);
                    let mut full = taken.clone();
                    full.extend(self.path[i + 1..].iter().map(|p| (p.clone(), false)));
                    self.log.push(LogEntry {
                        path: full,
                        kind: LogKind::Create(value, i),
                    });
                }
                Ok(())
            }
        }
    }

    fn finish_doc_leaf(
        &mut self,
        o: Outcome,
        d: &mut Document,
        part: &str,
        taken: &[(String, bool)],
    ) -> CmdResult<()> {
        match o {
            Outcome::Remove => {
                d.remove(part);
                self.log.push(LogEntry {
                    path: taken.to_vec(),
                    kind: LogKind::Delete,
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn descend(
        &mut self,
        child: &mut Bson,
        i: usize,
        taken: &mut Vec<(String, bool)>,
    ) -> CmdResult<()> {
        match child {
            Bson::Document(sub) => self.apply_in_doc(sub, i + 1, taken),
            Bson::Array(arr) => self.apply_in_array(arr, i + 1, taken),
            other => {
                if self.creates() {
                    // SRV path_support.cpp / modifier_node.cpp: 28 PathNotViable
                    return Err(CommandError::from_code(
                        ErrorCode::PathNotViable,
                        format!(
                            "Cannot create field '{}' in element {{{}: {}}}",
                            self.path[i + 1],
                            self.path[i],
                            fmt::value(other)
                        ),
                    ));
                }
                self.check_viability(&self.path[i], other, i + 1)
            }
        }
    }

    /// SRV `UpdateLeafNode::checkViability`: non-creating modifiers other than `$unset` fail
    /// on a path that could never exist (28 PathNotViable).
    fn check_viability(&self, name: &str, element: &Bson, next: usize) -> CmdResult<()> {
        if matches!(self.m, Mod::Unset) {
            return Ok(());
        }
        Err(CommandError::from_code(
            ErrorCode::PathNotViable,
            format!(
                "Cannot use the part ({}) of ({}) to traverse the element ({{{name}: {}}})",
                self.path[next],
                self.path.join("."),
                fmt::value(element)
            ),
        ))
    }

    fn apply_in_array(
        &mut self,
        arr: &mut Vec<Bson>,
        i: usize,
        taken: &mut Vec<(String, bool)>,
    ) -> CmdResult<()> {
        let part = self.path[i].clone();
        let last = i == self.path.len() - 1;
        let Some(idx) = array_index(&part) else {
            if self.creates() {
                return Err(CommandError::from_code(
                    ErrorCode::PathNotViable,
                    format!(
                        "Cannot create field '{part}' in element {{{}: {}}}",
                        self.path[i - 1],
                        fmt::value(&Bson::Array(arr.clone()))
                    ),
                ));
            }
            return self.check_viability(&self.path[i - 1], &Bson::Array(arr.clone()), i);
        };
        taken.push((part.clone(), true));
        if idx < arr.len() {
            let child = &mut arr[idx];
            if last {
                let o = self.apply_existing_leaf(child, taken)?;
                if let Outcome::Remove = o {
                    // $unset of an array element sets it to null (SRV unset_node.cpp).
                    *child = Bson::Null;
                    self.log.push(LogEntry {
                        path: taken.clone(),
                        kind: LogKind::NullElement,
                    });
                }
                Ok(())
            } else {
                self.descend(child, i, taken)
            }
        } else {
            if self.creates() {
                let Some(value) = self.new_value_for_missing()? else {
                    return Ok(());
                };
                if idx - arr.len() > MAX_PADDING {
                    // SRV path_support.cpp: 34 CannotBackfillArray
                    return Err(CommandError::from_code(
                        ErrorCode::CannotBackfillArray,
                        format!("can't backfill more than {MAX_PADDING} elements"),
                    ));
                }
                while arr.len() < idx {
                    arr.push(Bson::Null);
                }
                arr.push(nest(&self.path[i + 1..], value.clone()));
                let mut full = taken.clone();
                full.extend(self.path[i + 1..].iter().map(|p| (p.clone(), false)));
                self.log.push(LogEntry {
                    path: full,
                    kind: LogKind::Create(value, i),
                });
            }
            Ok(())
        }
    }

    /// Value a creating modifier stores when its path is missing (`None`: nothing to do).
    fn new_value_for_missing(&self) -> CmdResult<Option<Bson>> {
        Ok(Some(match self.m {
            Mod::Set(v) | Mod::SetOnInsert(v) | Mod::Min(v) | Mod::Max(v) | Mod::Inc(v) => {
                v.clone()
            }
            Mod::Mul(v) => match v {
                Bson::Int32(_) => Bson::Int32(0),
                Bson::Int64(_) => Bson::Int64(0),
                Bson::Decimal128(_) => Bson::Decimal128("0".parse().map_err(|_| bad("decimal"))?),
                _ => Bson::Double(0.0),
            },
            Mod::CurrentDate(ts) => self.current_date(*ts),
            Mod::Bit(ops) => apply_bits(&Bson::Int32(0), ops),
            Mod::Push(p) => {
                let mut arr = Vec::new();
                push_into(&mut arr, p);
                Bson::Array(arr)
            }
            Mod::AddToSet(vals) => {
                let mut arr: Vec<Bson> = Vec::new();
                for v in vals {
                    if !arr.iter().any(|x| bson_eq(x, v)) {
                        arr.push(v.clone());
                    }
                }
                Bson::Array(arr)
            }
            _ => return Ok(None),
        }))
    }

    fn current_date(&self, ts: bool) -> Bson {
        if ts {
            Bson::Timestamp(self.ctx.now_ts)
        } else {
            Bson::DateTime(self.ctx.now)
        }
    }

    /// Applies the modifier to the existing element `cur` (at `taken`) and logs the change.
    fn apply_existing_leaf(
        &mut self,
        cur: &mut Bson,
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        let outcome = self.modify_existing(cur, taken)?;
        self.log_outcome(&outcome, cur, taken);
        Ok(outcome)
    }

    /// What the modifier does to the existing element `cur`: the table from modifier to
    /// its function.
    fn modify_existing(&self, cur: &mut Bson, taken: &[(String, bool)]) -> CmdResult<Outcome> {
        Ok(match self.m {
            Mod::Placeholder => Outcome::Noop,
            Mod::Unset => Outcome::Remove,
            Mod::Rename(_) => Outcome::Noop,
            Mod::Set(v) | Mod::SetOnInsert(v) => set_if_different(cur, v.clone()),
            Mod::CurrentDate(ts) => set_if_different(cur, self.current_date(*ts)),
            Mod::Bit(ops) => self.bit_existing(cur, ops, taken)?,
            Mod::Inc(v) | Mod::Mul(v) => self.arith_existing(cur, v, taken)?,
            Mod::Min(v) | Mod::Max(v) => self.min_max_existing(cur, v),
            Mod::Push(p) => self.push_existing(cur, p, taken)?,
            Mod::AddToSet(vals) => add_to_set_existing(cur, vals, taken)?,
            Mod::Pop(first) => pop_existing(cur, *first, taken)?,
            Mod::Pull(_) | Mod::PullAll(_) => self.pull_existing(cur)?,
        })
    }

    /// `$bit` on an existing integer.
    fn bit_existing(
        &self,
        cur: &mut Bson,
        ops: &[(String, Bson)],
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        if !matches!(cur, Bson::Int32(_) | Bson::Int64(_)) {
            // SRV bit_node.cpp updateExistingElement
            return Err(bad(format!(
                "Cannot apply $bit to a value of non-integral type.{} has the field {} of non-integer type {}",
                self.id_string(),
                leaf_name(taken),
                fmt::type_name(cur)
            )));
        }
        let r = apply_bits(cur, ops);
        Ok(set_if_different(cur, r))
    }

    /// `$inc` / `$mul` by `v` on an existing number.
    fn arith_existing(
        &self,
        cur: &mut Bson,
        v: &Bson,
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        let inc = matches!(self.m, Mod::Inc(_));
        if as_f64(cur).is_none() {
            let op = if inc { "$inc" } else { "$mul" };
            // SRV arithmetic_node.cpp: 14 TypeMismatch
            return Err(CommandError::type_mismatch(format!(
                "Cannot apply {op} to a value of non-numeric type. {{{}}} has the field '{}' of non-numeric type {}",
                self.id_string(),
                leaf_name(taken),
                fmt::type_name(cur)
            )));
        }
        let r = if inc {
            crate::expr::add_nums(cur, v)
        } else {
            crate::expr::mul_nums(cur, v)
        };
        Ok(match r {
            Some(r) => set_if_different(cur, r),
            None => Outcome::Noop,
        })
    }

    /// `$min` / `$max`: `v` replaces `cur` when it is lower / higher.
    fn min_max_existing(&self, cur: &mut Bson, v: &Bson) -> Outcome {
        let o = cmp_bson(v, cur);
        let want = if matches!(self.m, Mod::Min(_)) {
            Ordering::Less
        } else {
            Ordering::Greater
        };
        if o == want {
            set_if_different(cur, v.clone())
        } else {
            Outcome::Noop
        }
    }

    /// `$push` into an existing array.
    fn push_existing(
        &self,
        cur: &mut Bson,
        p: &Push,
        taken: &[(String, bool)],
    ) -> CmdResult<Outcome> {
        let Bson::Array(arr) = cur else {
            // SRV push_node.cpp performPush
            return Err(bad(format!(
                "The field '{}' must be an array but is of type {} in document {{{}}}",
                dotted(taken),
                fmt::type_name(cur),
                self.id_string()
            )));
        };
        let before = arr.len();
        Ok(match push_into(arr, p) {
            PushResult::Noop => Outcome::Noop,
            PushResult::Normal => Outcome::Updated,
            PushResult::Append => Outcome::Appended(arr.len() - before),
        })
    }

    /// `$pull` / `$pullAll` from an existing array.
    fn pull_existing(&self, cur: &mut Bson) -> CmdResult<Outcome> {
        let Bson::Array(arr) = cur else {
            // SRV array_culling_node.cpp
            return Err(bad("Cannot apply $pull to a non-array value"));
        };
        let before = arr.len();
        match self.m {
            Mod::Pull(c) => arr.retain(|e| !pull_matches(c, e)),
            Mod::PullAll(vals) => arr.retain(|e| !vals.iter().any(|v| bson_eq(e, v))),
            _ => {}
        }
        Ok(if arr.len() == before {
            Outcome::Noop
        } else {
            Outcome::Updated
        })
    }

    /// Logs an updated element, or each element appended to the array `cur`.
    fn log_outcome(&mut self, outcome: &Outcome, cur: &Bson, taken: &[(String, bool)]) {
        match outcome {
            Outcome::Updated => self.log.push(LogEntry {
                path: taken.to_vec(),
                kind: LogKind::Update(cur.clone()),
            }),
            Outcome::Appended(n) => {
                if let Bson::Array(arr) = cur {
                    let start = arr.len() - n;
                    for (k, v) in arr[start..].iter().enumerate() {
                        let mut p = taken.to_vec();
                        p.push(((start + k).to_string(), true));
                        let idx = p.len() - 1;
                        self.log.push(LogEntry {
                            path: p,
                            kind: LogKind::Create(v.clone(), idx),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// The dotted path of `taken`.
fn dotted(taken: &[(String, bool)]) -> String {
    taken
        .iter()
        .map(|(p, _)| p.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// The last component of `taken` (the field being modified).
fn leaf_name(taken: &[(String, bool)]) -> &str {
    taken.last().map(|(p, _)| p.as_str()).unwrap_or("")
}

/// `$addToSet` into an existing array: the values it does not contain yet.
fn add_to_set_existing(
    cur: &mut Bson,
    vals: &[Bson],
    taken: &[(String, bool)],
) -> CmdResult<Outcome> {
    let Bson::Array(arr) = cur else {
        // SRV addtoset_node.cpp
        return Err(bad(format!(
            "Cannot apply $addToSet to non-array field. Field named '{}' has non-array type {}",
            leaf_name(taken),
            fmt::type_name(cur)
        )));
    };
    let mut added = false;
    for v in vals {
        if !arr.iter().any(|x| bson_eq(x, v)) {
            arr.push(v.clone());
            added = true;
        }
    }
    Ok(if added {
        Outcome::Updated
    } else {
        Outcome::Noop
    })
}

/// `$pop` of the first (`first`) or last element of an existing array.
fn pop_existing(cur: &mut Bson, first: bool, taken: &[(String, bool)]) -> CmdResult<Outcome> {
    let Bson::Array(arr) = cur else {
        // SRV pop_node.cpp: 14 TypeMismatch
        return Err(CommandError::type_mismatch(format!(
            "Path '{}' contains an element of non-array type '{}'",
            dotted(taken),
            fmt::type_name(cur)
        )));
    };
    if arr.is_empty() {
        return Ok(Outcome::Noop);
    }
    if first {
        arr.remove(0);
    } else {
        arr.pop();
    }
    Ok(Outcome::Updated)
}

fn set_if_different(cur: &mut Bson, v: Bson) -> Outcome {
    if binary_eq(cur, &v) {
        Outcome::Noop
    } else {
        *cur = v;
        Outcome::Updated
    }
}

fn nest(rest: &[String], value: Bson) -> Bson {
    let mut v = value;
    for p in rest.iter().rev() {
        let mut d = Document::new();
        d.insert(p.clone(), v);
        v = Bson::Document(d);
    }
    v
}

fn pull_matches(c: &PullCond, e: &Bson) -> bool {
    match c {
        PullCond::Equal(v) => bson_eq(e, v),
        PullCond::Value(m) => {
            let mut d = Document::new();
            d.insert("v", e.clone());
            m.matches(&d)
        }
        PullCond::Query(m) => match e {
            Bson::Document(d) => m.matches(d),
            _ => false,
        },
    }
}

enum PushResult {
    Noop,
    Normal,
    Append,
}

/// SRV push_node.cpp `insertElementsWithPosition` + `performPush`.
fn push_into(arr: &mut Vec<Bson>, p: &Push) -> PushResult {
    let mut result = if p.each.is_empty() {
        PushResult::Noop
    } else {
        let size = arr.len() as i64;
        let position = p.position.unwrap_or(i64::MAX);
        if size == 0 {
            arr.extend(p.each.iter().cloned());
            PushResult::Normal
        } else if position > size {
            arr.extend(p.each.iter().cloned());
            PushResult::Append
        } else {
            let at = if position >= 0 {
                position as usize
            } else if position.saturating_neg() < size {
                (size + position) as usize
            } else {
                0
            };
            let tail = arr.split_off(at);
            arr.extend(p.each.iter().cloned());
            arr.extend(tail);
            PushResult::Normal
        }
    };
    if let Some(sort) = &p.sort {
        result = PushResult::Normal;
        arr.sort_by(|a, b| push_cmp(sort, a, b));
    }
    if let Some(slice) = p.slice {
        let keep = slice.unsigned_abs().min(usize::MAX as u64) as usize;
        while arr.len() > keep {
            result = PushResult::Normal;
            if slice >= 0 {
                arr.pop();
            } else {
                arr.remove(0);
            }
        }
    }
    result
}

fn push_cmp(sort: &PushSort, a: &Bson, b: &Bson) -> Ordering {
    match sort {
        PushSort::Whole(dir) => {
            let o = cmp_bson(a, b);
            if *dir < 0 {
                o.reverse()
            } else {
                o
            }
        }
        PushSort::Fields(fields) => {
            for (f, dir) in fields {
                let get = |v: &Bson| -> Bson {
                    match v {
                        Bson::Document(d) => {
                            crate::path::get_path(d, f).cloned().unwrap_or(Bson::Null)
                        }
                        _ => Bson::Null,
                    }
                };
                let o = cmp_bson(&get(a), &get(b));
                let o = if *dir < 0 { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
    }
}

/// SafeNum bit operations: Int32 op Int32 stays Int32, anything with Int64 is Int64.
fn apply_bits(start: &Bson, ops: &[(String, Bson)]) -> Bson {
    let mut cur = start.clone();
    for (op, operand) in ops {
        cur = match (&cur, operand) {
            (Bson::Int32(a), Bson::Int32(b)) => Bson::Int32(match op.as_str() {
                "and" => a & b,
                "or" => a | b,
                _ => a ^ b,
            }),
            _ => {
                let a = match cur {
                    Bson::Int32(i) => i64::from(i),
                    Bson::Int64(i) => i,
                    _ => 0,
                };
                let b = match operand {
                    Bson::Int32(i) => i64::from(*i),
                    Bson::Int64(i) => *i,
                    _ => 0,
                };
                Bson::Int64(match op.as_str() {
                    "and" => a & b,
                    "or" => a | b,
                    _ => a ^ b,
                })
            }
        };
    }
    cur
}
