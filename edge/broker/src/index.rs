//! The subscription index: a trie over topic levels, so routing a PUBLISH costs the levels of
//! its topic times the wildcard branches that actually exist, never the size of unrelated
//! filters. (A flat list made each publish cost the total size of all filters held: 8 clients
//! × 128 filters of 64 KiB made 20 publishes take 99 s.)

use mqtt::QoS;

use crate::session::SessionId;

/// Bytes one filter level costs in the trie at most (a node and its entry in its parent),
/// for the subscription byte budget; the level's name is counted on top.
pub const LEVEL_COST: usize = 160;

/// What holding `filter` costs: its trie levels and its text, twice (the session keeps it too).
pub fn filter_cost(filter: &str) -> usize {
    mqtt::topic::levels(filter) * LEVEL_COST + 2 * filter.len()
}

#[derive(Default, Debug)]
struct Node {
    /// Exact next levels, sorted by name (binary search; a node of a gateway's trie has few
    /// children, and a sorted `Vec` costs a fraction of a hash table's memory).
    children: Vec<(Box<str>, Node)>,
    /// The `+` level.
    plus: Option<Box<Node>>,
    /// Subscribers whose filter ends here.
    here: Vec<(SessionId, QoS)>,
    /// Subscribers whose filter is this path followed by `/#`.
    hash: Vec<(SessionId, QoS)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
    }
}

/// Every subscription of every session, by filter.
#[derive(Default, Debug)]
pub struct Index {
    root: Node,
    len: usize,
}

fn upsert(list: &mut Vec<(SessionId, QoS)>, s: SessionId, q: QoS) -> bool {
    match list.iter_mut().find(|(id, _)| *id == s) {
        Some(e) => {
            e.1 = q;
            false
        }
        None => {
            list.push((s, q));
            true
        }
    }
}

impl Index {
    /// Subscriptions held, over all sessions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds or replaces `session`'s subscription to the (valid) `filter`.
    pub fn insert(&mut self, filter: &str, session: SessionId, qos: QoS) {
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" {
                if upsert(&mut node.hash, session, qos) {
                    self.len += 1;
                }
                return;
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Default::default)
            } else {
                let i = match node.children.binary_search_by(|(k, _)| (**k).cmp(level)) {
                    Ok(i) => i,
                    Err(i) => {
                        node.children.insert(i, (level.into(), Node::default()));
                        i
                    }
                };
                &mut node.children[i].1
            };
            if levels.peek().is_none() && upsert(&mut node.here, session, qos) {
                self.len += 1;
            }
        }
    }

    /// Removes `session`'s subscription to `filter`; whether it had one.
    pub fn remove(&mut self, filter: &str, session: SessionId) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, session);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f(session, granted)` for every subscription matching the (valid) topic name,
    /// once per matching filter (a session with overlapping filters is seen several times).
    /// Returns the number of trie nodes visited: the cost of the match.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(SessionId, QoS)) -> usize {
        let levels: Vec<&str> = topic.split('/').collect();
        // [MQTT-4.7.2-1]: wildcards at the first level do not match `$` topics.
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, dollar, &mut f)
    }
}

fn walk(
    node: &Node,
    levels: &[&str],
    no_wildcards: bool,
    f: &mut impl FnMut(SessionId, QoS),
) -> usize {
    let mut visited = 1;
    if !no_wildcards {
        // `a/#` matches `a` itself and everything below it.
        for (s, q) in &node.hash {
            f(*s, *q);
        }
    }
    let Some((first, rest)) = levels.split_first() else {
        for (s, q) in &node.here {
            f(*s, *q);
        }
        return visited;
    };
    if let Ok(i) = node.children.binary_search_by(|(k, _)| (**k).cmp(first)) {
        visited += walk(&node.children[i].1, rest, false, f);
    }
    if !no_wildcards {
        if let Some(plus) = &node.plus {
            visited += walk(plus, rest, false, f);
        }
    }
    visited
}

fn remove_at(node: &mut Node, levels: &[&str], session: SessionId) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return false;
    };
    if *first == "#" {
        let before = node.hash.len();
        node.hash.retain(|(s, _)| *s != session);
        return node.hash.len() != before;
    }
    let removed;
    if *first == "+" {
        let Some(child) = node.plus.as_deref_mut() else {
            return false;
        };
        removed = remove_below(child, rest, session);
        if child.is_empty() {
            node.plus = None;
        }
    } else {
        let Ok(i) = node.children.binary_search_by(|(k, _)| (**k).cmp(first)) else {
            return false;
        };
        removed = remove_below(&mut node.children[i].1, rest, session);
        if node.children[i].1.is_empty() {
            node.children.remove(i);
        }
    }
    removed
}

fn remove_below(child: &mut Node, rest: &[&str], session: SessionId) -> bool {
    if rest.is_empty() {
        let before = child.here.len();
        child.here.retain(|(s, _)| *s != session);
        child.here.len() != before
    } else {
        remove_at(child, rest, session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(ix: &Index, topic: &str) -> Vec<(u64, u8)> {
        let mut v = Vec::new();
        ix.for_each_match(topic, |s, q| v.push((s.0, q as u8)));
        v.sort();
        v
    }

    /// The index agrees with the spec's matching function on every filter/topic pair of a
    /// table that covers `+`, `#`, empty levels and `$` topics.
    #[test]
    fn agrees_with_topic_matches() {
        let filters = [
            "#",
            "+",
            "+/+",
            "/#",
            "/+",
            "a",
            "a/#",
            "a/+",
            "a/+/c",
            "a/b",
            "a/b/#",
            "+/b",
            "a//c",
            "$SYS/#",
            "$SYS/+",
            "+/#",
            "$hw/events/device/+/+/twin/+",
        ];
        let topics = [
            "a",
            "a/b",
            "a/b/c",
            "a//c",
            "/",
            "/a",
            "b",
            "a/",
            "$SYS",
            "$SYS/x",
            "$SYS/x/y",
            "$hw/events/device/ns/d/twin/update",
            "a/$b",
            "x/b",
        ];
        let mut ix = Index::default();
        for (i, f) in filters.iter().enumerate() {
            ix.insert(f, SessionId(i as u64), QoS::AtLeastOnce);
        }
        assert_eq!(ix.len(), filters.len());
        for t in topics {
            let want: Vec<(u64, u8)> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| mqtt::topic::matches(f, t))
                .map(|(i, _)| (i as u64, 1))
                .collect();
            assert_eq!(matched(&ix, t), want, "topic {t:?}");
        }
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut ix = Index::default();
        let s = SessionId(1);
        ix.insert("a/+/c", s, QoS::AtMostOnce);
        ix.insert("a/+/c", s, QoS::ExactlyOnce);
        assert_eq!(ix.len(), 1, "same filter, same session: replaced");
        assert_eq!(matched(&ix, "a/b/c"), [(1, 2)]);
        assert!(!ix.remove("a/+/x", s));
        assert!(ix.remove("a/+/c", s));
        assert!(!ix.remove("a/+/c", s));
        assert_eq!(ix.len(), 0);
        assert!(ix.root.is_empty(), "no empty nodes left behind");
        ix.insert("a/#", s, QoS::AtMostOnce);
        assert!(ix.remove("a/#", s));
        assert!(ix.root.is_empty());
    }

    /// Routing cost does not grow with unrelated filters: with 10,000 long filters under
    /// other prefixes, matching `dev/7/state` visits the root, `dev`, `+` and `state`.
    #[test]
    fn unrelated_filters_are_not_visited() {
        let mut ix = Index::default();
        ix.insert("dev/+/state", SessionId(99_999), QoS::AtLeastOnce);
        let mut calls = 0;
        let alone = ix.for_each_match("dev/7/state", |_, _| calls += 1);
        for i in 0..10_000u64 {
            let deep = format!("other/{i}/{}/+/#", "x/".repeat(30));
            ix.insert(&deep, SessionId(i), QoS::AtMostOnce);
        }
        let crowded = ix.for_each_match("dev/7/state", |_, _| calls += 1);
        assert_eq!(calls, 2, "the one matching subscription, each time");
        assert_eq!((alone, crowded), (4, 4));
    }
}
