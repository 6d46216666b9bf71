//! Operational transformation for collaborative playlists.
//!
//! A playlist is an ordered list of items (an item is one occurrence of a track, with its
//! own id, so a track can appear twice). Editors send operations against the version
//! they last saw; the server rebases each one over the operations committed since
//! (`rebase`), applies it, and logs what it did with the exact indices (`Applied`), so
//! later rebases can see where each change happened. The server's order is the only
//! order: every editor converges on it by taking the server's answer.
//!
//! Intent kept by a rebase: an add lands at the same place relative to the items that
//! were around it (shifted by concurrent adds, removes and moves before it; at the same
//! index, the earlier-committed item stays first); a move keeps its target relative to
//! the others. An operation on an item another editor removed meanwhile is refused
//! (`Conflict`), as is one against a version that does not exist.

use serde::{Deserialize, Serialize};

pub type ItemId = String;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub item_id: ItemId,
    pub track_id: String,
}

/// What an editor sends. Indices are positions in the version the editor saw: `add`
/// inserts before position `index` (`index` = length appends); `move` puts the item at
/// `index` of the list as it is without the item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Add { track_id: String, index: usize },
    Remove { item_id: ItemId },
    Move { item_id: ItemId, index: usize },
}

/// What the server did, with the indices in the list it was applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Applied {
    Add { item: Item, index: usize },
    Remove { item: Item, index: usize },
    Move { item_id: ItemId, from: usize, to: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The operation cannot be rebased (the item was removed meanwhile).
    Conflict(String),
    /// The operation does not fit the version it names.
    Invalid(String),
}

fn pos(list: &[Item], id: &str) -> Option<usize> {
    list.iter().position(|i| i.item_id == id)
}

/// Apply a logged change to `list`.
pub fn apply(list: &mut Vec<Item>, a: &Applied) {
    match a {
        Applied::Add { item, index } => list.insert((*index).min(list.len()), item.clone()),
        Applied::Remove { index, .. } => {
            if *index < list.len() {
                list.remove(*index);
            }
        }
        Applied::Move { from, to, .. } => {
            if *from < list.len() {
                let it = list.remove(*from);
                list.insert((*to).min(list.len()), it);
            }
        }
    }
}

/// Undo a logged change (to walk back to an older version).
pub fn unapply(list: &mut Vec<Item>, a: &Applied) {
    match a {
        Applied::Add { index, .. } => {
            if *index < list.len() {
                list.remove(*index);
            }
        }
        Applied::Remove { item, index } => list.insert((*index).min(list.len()), item.clone()),
        Applied::Move { from, to, .. } => {
            if *to < list.len() {
                let it = list.remove(*to);
                list.insert((*from).min(list.len()), it);
            }
        }
    }
}

/// Check `op` against the list the editor saw.
pub fn validate(op: &Op, seen: &[Item]) -> Result<(), Refusal> {
    match op {
        Op::Add { index, .. } if *index > seen.len() => {
            Err(Refusal::Invalid(format!("add index {index} is past the end ({} items)", seen.len())))
        }
        Op::Remove { item_id } | Op::Move { item_id, .. } if pos(seen, item_id).is_none() => {
            Err(Refusal::Conflict(format!("item {item_id:?} is not in that version of the playlist")))
        }
        Op::Move { index, .. } if *index >= seen.len() => {
            Err(Refusal::Invalid(format!("move index {index} is past the end ({} items)", seen.len())))
        }
        _ => Ok(()),
    }
}

/// Rebase `op`, made on `base`, over the changes `log` committed since (in order).
/// Returns the operation as it applies to the list after `log`.
pub fn rebase(op: &Op, base: &[Item], log: &[Applied]) -> Result<Op, Refusal> {
    let mut state = base.to_vec();
    let mut op = op.clone();
    for e in log {
        op = transform(&op, &state, e)?;
        apply(&mut state, e);
    }
    Ok(op)
}

/// `op` (on `state`) seen after `e` (also on `state`) was applied.
fn transform(op: &Op, state: &[Item], e: &Applied) -> Result<Op, Refusal> {
    Ok(match op {
        Op::Add { track_id, index } => Op::Add { track_id: track_id.clone(), index: shift_insert(*index, e) },
        Op::Remove { item_id } => {
            if matches!(e, Applied::Remove { item, .. } if &item.item_id == item_id) {
                return Err(Refusal::Conflict(format!("item {item_id:?} was removed by another editor")));
            }
            op.clone()
        }
        Op::Move { item_id, index } => {
            let removed = matches!(e, Applied::Remove { item, .. } if &item.item_id == item_id);
            if removed {
                return Err(Refusal::Conflict(format!("item {item_id:?} was removed by another editor")));
            }
            let Some(x) = pos(state, item_id) else {
                return Err(Refusal::Conflict(format!("item {item_id:?} is gone")));
            };
            // `index` counts positions in the list without x: express e there.
            let without = |i: usize| if x < i { i - 1 } else { i };
            let e_without: Option<Applied> = match e {
                Applied::Add { item, index: j } => Some(Applied::Add { item: item.clone(), index: without(*j) }),
                Applied::Remove { item, index: j } => Some(Applied::Remove { item: item.clone(), index: without(*j) }),
                // Moving x itself leaves the others in place: the later move wins as sent.
                Applied::Move { item_id: y, .. } if y == item_id => None,
                Applied::Move { item_id: y, from, to } => {
                    // `to` counts positions without y; x's position there:
                    let x_wo_y = if *from < x { x - 1 } else { x };
                    let to_without = if x_wo_y < *to { to - 1 } else { *to };
                    Some(Applied::Move { item_id: y.clone(), from: without(*from), to: to_without })
                }
            };
            let index = match e_without {
                Some(e) => shift_insert(*index, &e),
                None => *index,
            };
            Op::Move { item_id: item_id.clone(), index }
        }
    })
}

/// An insertion index seen after `e`: shifted past earlier-committed items at the same
/// place, left by removals before it.
fn shift_insert(i: usize, e: &Applied) -> usize {
    match e {
        Applied::Add { index: j, .. } => {
            if *j <= i {
                i + 1
            } else {
                i
            }
        }
        Applied::Remove { index: j, .. } => {
            if *j < i {
                i - 1
            } else {
                i
            }
        }
        Applied::Move { from, to, .. } => {
            let i = if *from < i { i - 1 } else { i };
            if *to <= i {
                i + 1
            } else {
                i
            }
        }
    }
}

/// Apply a rebased `op` to the current `list`; `new_id` names an added item.
pub fn commit(list: &mut Vec<Item>, op: &Op, new_id: impl FnOnce() -> ItemId) -> Result<Applied, Refusal> {
    let applied = match op {
        Op::Add { track_id, index } => Applied::Add {
            item: Item { item_id: new_id(), track_id: track_id.clone() },
            index: (*index).min(list.len()),
        },
        Op::Remove { item_id } => {
            let index = pos(list, item_id).ok_or_else(|| Refusal::Conflict(format!("item {item_id:?} is gone")))?;
            Applied::Remove { item: list[index].clone(), index }
        }
        Op::Move { item_id, index } => {
            let from = pos(list, item_id).ok_or_else(|| Refusal::Conflict(format!("item {item_id:?} is gone")))?;
            Applied::Move { item_id: item_id.clone(), from, to: (*index).min(list.len() - 1) }
        }
    };
    apply(list, &applied);
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn items(ids: &[&str]) -> Vec<Item> {
        ids.iter().map(|i| Item { item_id: i.to_string(), track_id: format!("t-{i}") }).collect()
    }
    fn ids(list: &[Item]) -> Vec<&str> {
        list.iter().map(|i| i.item_id.as_str()).collect()
    }

    /// The server: current list and the log of everything applied since version 0.
    struct Server {
        list: Vec<Item>,
        log: Vec<Applied>,
        next: usize,
    }

    impl Server {
        fn version_list(&self, v: usize) -> Vec<Item> {
            let mut l = self.list.clone();
            for a in self.log[v..].iter().rev() {
                unapply(&mut l, a);
            }
            l
        }
        fn submit(&mut self, base: usize, op: &Op) -> Result<Applied, Refusal> {
            let seen = self.version_list(base);
            validate(op, &seen)?;
            let rebased = rebase(op, &seen, &self.log[base..])?;
            self.next += 1;
            let n = self.next;
            let a = commit(&mut self.list, &rebased, || format!("n{n}"))?;
            self.log.push(a.clone());
            Ok(a)
        }
    }

    #[test]
    fn concurrent_edits_keep_each_editors_intent() {
        let mut s = Server { list: items(&["a", "b", "c", "d"]), log: Vec::new(), next: 0 };
        // Two editors on version 0: one adds after "b", the other removes "a".
        s.submit(0, &Op::Remove { item_id: "a".into() }).unwrap();
        s.submit(0, &Op::Add { track_id: "t-x".into(), index: 2 }).unwrap();
        assert_eq!(ids(&s.list), ["b", "n2", "c", "d"], "the add still lands between b and c");
        // A third, also on version 0, moves "d" to the front and another moves "c" to the end.
        s.submit(0, &Op::Move { item_id: "d".into(), index: 0 }).unwrap();
        s.submit(0, &Op::Move { item_id: "c".into(), index: 3 }).unwrap();
        assert_eq!(ids(&s.list), ["d", "b", "n2", "c"]);
        // Removing the removed item, or moving it, is a conflict.
        assert!(matches!(s.submit(0, &Op::Remove { item_id: "a".into() }), Err(Refusal::Conflict(_))));
        assert!(matches!(s.submit(1, &Op::Move { item_id: "a".into(), index: 0 }), Err(Refusal::Conflict(_))));
        // Two adds at the same place: the earlier-committed one stays first.
        let v = s.log.len();
        s.submit(v, &Op::Add { track_id: "t-y".into(), index: 1 }).unwrap();
        s.submit(v, &Op::Add { track_id: "t-z".into(), index: 1 }).unwrap();
        assert_eq!(ids(&s.list)[1..3], ["n5", "n6"]);
    }

    /// Random editors, each working from a stale version and syncing now and then: every
    /// op is either refused with a conflict or applied; the log replays to the server's
    /// list from any version; every accepted add is present unless removed later; and
    /// items nobody touched keep their relative order.
    #[test]
    fn random_interleavings_converge_and_keep_untouched_order() {
        for seed in 0..300u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let start = items(&["p", "q", "r", "s", "t", "u"]);
            let mut s = Server { list: start.clone(), log: Vec::new(), next: 0 };
            let editors = rng.random_range(2..5usize);
            let mut seen: Vec<usize> = vec![0; editors];
            let mut touched = std::collections::HashSet::new();
            for _ in 0..rng.random_range(5..25) {
                let e = rng.random_range(0..editors);
                if rng.random_bool(0.3) {
                    seen[e] = s.log.len(); // sync
                }
                let view = s.version_list(seen[e]);
                let op = match rng.random_range(0..3) {
                    0 => Op::Add { track_id: "t".into(), index: rng.random_range(0..=view.len()) },
                    1 if !view.is_empty() => {
                        Op::Remove { item_id: view[rng.random_range(0..view.len())].item_id.clone() }
                    }
                    _ if !view.is_empty() => Op::Move {
                        item_id: view[rng.random_range(0..view.len())].item_id.clone(),
                        index: rng.random_range(0..view.len()),
                    },
                    _ => continue,
                };
                // The neighbours an add was placed between, in the editor's view.
                let neighbours = match &op {
                    Op::Add { index, .. } => Some((
                        index.checked_sub(1).map(|l| view[l].item_id.clone()),
                        view.get(*index).map(|r| r.item_id.clone()),
                    )),
                    _ => None,
                };
                let base = seen[e];
                match s.submit(base, &op) {
                    Ok(a) => {
                        if let (Applied::Add { item, .. }, Some((left, right))) = (&a, &neighbours) {
                            // Intent: still after its left and before its right neighbour,
                            // unless one of them moved since the editor's version.
                            let moved = |id: &str| {
                                s.log[base..s.log.len() - 1]
                                    .iter()
                                    .any(|b| matches!(b, Applied::Move { item_id, .. } if item_id == id))
                            };
                            let at = pos(&s.list, &item.item_id).unwrap();
                            for (n, before) in [(left, true), (right, false)] {
                                if let Some(p) = n.as_deref().filter(|n| !moved(n)).and_then(|n| pos(&s.list, n)) {
                                    assert_eq!(p < at, before, "seed {seed}: add landed on the wrong side of {n:?}");
                                }
                            }
                        }
                        match &a {
                            Applied::Remove { item, .. } => touched.insert(item.item_id.clone()),
                            Applied::Move { item_id, .. } => touched.insert(item_id.clone()),
                            Applied::Add { .. } => false,
                        };
                    }
                    Err(Refusal::Conflict(_)) => {}
                    Err(Refusal::Invalid(why)) => panic!("seed {seed}: a valid op was refused: {why}"),
                }
            }
            // Replaying the log from version 0 gives the server's list.
            let mut replay = start.clone();
            for a in &s.log {
                apply(&mut replay, a);
            }
            assert_eq!(replay, s.list, "seed {seed}");
            assert_eq!(s.version_list(0), start, "seed {seed}: undo does not walk back");
            // Every accepted add is there unless a later op removed it.
            for a in &s.log {
                if let Applied::Add { item, .. } = a {
                    let removed =
                        s.log.iter().any(|b| matches!(b, Applied::Remove { item: r, .. } if r.item_id == item.item_id));
                    assert_eq!(pos(&s.list, &item.item_id).is_some(), !removed, "seed {seed}");
                }
            }
            // Untouched original items keep their relative order.
            let kept: Vec<&str> = ids(&s.list)
                .into_iter()
                .filter(|i| start.iter().any(|o| o.item_id == *i) && !touched.contains(*i))
                .collect();
            let orig: Vec<&str> = ids(&start).into_iter().filter(|i| kept.contains(i)).collect();
            assert_eq!(kept, orig, "seed {seed}");
            // No duplicates.
            let mut all = ids(&s.list);
            all.sort();
            all.dedup();
            assert_eq!(all.len(), s.list.len(), "seed {seed}");
        }
    }
}
