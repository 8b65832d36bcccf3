//! The broker core's lookup structures: [`SubTree`] finds the subscriptions whose filter
//! matches a published topic, [`RetainTree`] the retained messages a new subscription's
//! filter matches. Matching follows MQTT 3.1.1 / 5 §4.7: levels split on `/` (empty levels
//! count), `+` is exactly one level, a final `#` is the parent level and everything below
//! it, and a topic starting with `$` is not matched by a wildcard in the first level.
//!
//! Most subscriptions name one exact topic (every device has its own), so filters without
//! wildcards live in a hash map keyed by the filter: routing a publish costs one lookup of
//! the whole topic however many devices there are. Only the few wildcard filters go in the
//! trie of levels, which a publish walks only when it is not empty.
//!
//! Walks are loops over an explicit stack and nodes are taken apart the same way, never by
//! recursion: a topic may have tens of thousands of levels (`a////…`) and must not overflow
//! the stack of the task routing it. Not here: validation (callers pass valid topics and
//! filters; anything else is stored without panicking and matches nothing useful), shared
//! subscriptions, sessions, QoS.

use std::collections::HashMap;
use std::hash::Hash;
use std::{mem, ptr};

/// One level of a trie. In the filter trie the children `+` and `#` are the wildcards; in
/// the retain tree every level is literal. `leaf` is what ends here, next to its full filter
/// or topic so that a match hands it out without rebuilding it.
struct Node<T> {
    children: HashMap<Box<str>, Node<T>>,
    /// Boxed: every node sits inline in its parent's map, and most nodes have no leaf (a
    /// retained message inline would cost its size in every bucket of every level).
    leaf: Option<Box<(Box<str>, T)>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            leaf: None,
        }
    }
}

impl<T> Drop for Node<T> {
    /// Takes the subtree apart in a loop: a recursive drop of a deep trie overflows the stack.
    fn drop(&mut self) {
        let mut stack: Vec<Self> = self.children.drain().map(|(_, child)| child).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, child)| child));
        }
    }
}

impl<T> Node<T> {
    #[cfg(test)]
    fn find(&self, path: &str) -> Option<&Self> {
        let mut levels = path.split('/');
        levels.try_fold(self, |node, level| node.children.get(level))
    }

    fn find_mut(&mut self, path: &str) -> Option<&mut Self> {
        let mut levels = path.split('/');
        levels.try_fold(self, |node, level| node.children.get_mut(level))
    }

    fn find_or_insert(&mut self, path: &str) -> &mut Self {
        let levels = path.split('/');
        levels.fold(self, |node, level| {
            node.children.entry(level.into()).or_default()
        })
    }

    /// Runs `take` on the leaf at `path`, then drops the nodes it left empty, so memory
    /// follows what is stored, not what was once stored.
    fn remove<R>(
        &mut self,
        path: &str,
        take: impl FnOnce(&mut Option<Box<(Box<str>, T)>>) -> Option<R>,
    ) -> Option<R> {
        // `keep`: the depth of the deepest node on the path holding more than the path.
        let (mut node, mut keep, mut depth) = (&mut *self, 0, 0);
        for level in path.split('/') {
            if node.leaf.is_some() || node.children.len() > 1 {
                keep = depth;
            }
            node = node.children.get_mut(level)?;
            depth += 1;
        }
        let out = take(&mut node.leaf)?;
        if node.leaf.is_some() || !node.children.is_empty() {
            keep = depth;
        }
        let mut levels = path.split('/');
        let mut above = levels.by_ref().take(keep);
        let parent = above.try_fold(&mut *self, |node, level| node.children.get_mut(level));
        if let (Some(parent), Some(level)) = (parent, levels.next()) {
            parent.children.remove(level);
        }
        Some(out)
    }

    /// Nodes below this one (recursive: tests count shallow tries only).
    #[cfg(test)]
    fn count(&self) -> usize {
        self.children.values().map(|child| 1 + child.count()).sum()
    }
}

/// `level` and what follows its `/` (`None` when it is the last level).
fn split_level(levels: &str) -> (&str, Option<&str>) {
    match levels.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (levels, None),
    }
}

fn is_wildcard(filter: &str) -> bool {
    filter.split('/').any(|level| matches!(level, "+" | "#"))
}

/// Subscriptions by filter. Exact filters (no `+`/`#`) live in a hash map keyed by the
/// filter; wildcard filters in a trie of levels. Several keys may subscribe the same filter.
pub(crate) struct SubTree<K, V> {
    exact: HashMap<Box<str>, HashMap<K, V>>,
    wild: Node<HashMap<K, V>>,
    len: usize,
}

impl<K: Eq + Hash + Clone, V> SubTree<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            exact: HashMap::new(),
            wild: Node::default(),
            len: 0,
        }
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the value it replaced.
    pub(crate) fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let old = if is_wildcard(filter) {
            let leaf = &mut self.wild.find_or_insert(filter).leaf;
            let (_, subs) =
                &mut **leaf.get_or_insert_with(|| Box::new((filter.into(), HashMap::new())));
            subs.insert(key, value)
        } else if let Some(subs) = self.exact.get_mut(filter) {
            subs.insert(key, value)
        } else {
            let subs = HashMap::from([(key, value)]);
            self.exact.insert(filter.into(), subs);
            None
        };
        self.len += usize::from(old.is_none());
        old
    }

    /// Removes `key`'s subscription to `filter`; returns it. Empty nodes and entries go.
    pub(crate) fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let old = if is_wildcard(filter) {
            self.wild.remove(filter, |leaf| {
                let (_, subs) = &mut **leaf.as_mut()?;
                let value = subs.remove(key)?;
                if subs.is_empty() {
                    *leaf = None;
                }
                Some(value)
            })?
        } else {
            let subs = self.exact.get_mut(filter)?;
            let value = subs.remove(key)?;
            if subs.is_empty() {
                self.exact.remove(filter);
            }
            value
        };
        self.len -= 1;
        Some(old)
    }

    /// Calls `f(filter, key, value)` for every subscription whose filter matches `topic`
    /// (a topic name, without wildcards).
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &K, &V)) {
        if let Some(subs) = self.exact.get(topic) {
            subs.iter().for_each(|(key, value)| f(topic, key, value));
        }
        if self.wild.children.is_empty() {
            return;
        }
        let mut emit = |node: Option<&Node<HashMap<K, V>>>| {
            if let Some((filter, subs)) = node.and_then(|node| node.leaf.as_deref()) {
                subs.iter().for_each(|(key, value)| f(filter, key, value));
            }
        };
        // A node reached and the topic levels below it (`None`: the topic ends there).
        let mut stack = vec![(&self.wild, Some(topic))];
        while let Some((node, rest)) = stack.pop() {
            // `$` topics are not matched by a wildcard in the first level.
            let wild = !ptr::eq(node, &self.wild) || !topic.starts_with('$');
            if wild {
                // `#` matches the level of its parent node and every level below it.
                emit(node.children.get("#"));
            }
            let Some(rest) = rest else {
                emit(Some(node));
                continue;
            };
            let (level, next) = split_level(rest);
            if !matches!(level, "+" | "#") {
                stack.extend(node.children.get(level).map(|child| (child, next)));
            }
            if wild {
                stack.extend(node.children.get("+").map(|child| (child, next)));
            }
        }
    }

    /// Number of (filter, key) subscriptions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Trie nodes plus exact-filter entries.
    #[cfg(test)]
    fn nodes(&self) -> usize {
        self.wild.count() + self.exact.len()
    }
}

/// What a retained-message walk still matches below a node: these filter levels, nothing
/// (the filter ends at the node), or every level (after a `#`).
#[derive(Clone, Copy)]
enum Below<'f> {
    Levels(&'f str),
    Nothing,
    All,
}

/// Retained messages by topic, in a trie of levels, so a filter is matched by walking it
/// (not by scanning every topic). Each leaf keeps its full topic next to the message.
pub(crate) struct RetainTree<M> {
    root: Node<M>,
    len: usize,
}

impl<M> RetainTree<M> {
    pub(crate) fn new() -> Self {
        let root = Node::default();
        Self { root, len: 0 }
    }

    /// Stores `msg` for `topic` (a topic name), replacing and returning the previous one.
    pub(crate) fn insert(&mut self, topic: &str, msg: M) -> Option<M> {
        // Replacing a retained message is the common case: no allocation then.
        let found = self.root.find_mut(topic);
        if let Some((_, old)) = found.and_then(|node| node.leaf.as_deref_mut()) {
            return Some(mem::replace(old, msg));
        }
        self.root.find_or_insert(topic).leaf = Some(Box::new((topic.into(), msg)));
        self.len += 1;
        None
    }

    /// Removes the message of `topic`, pruning empty nodes.
    pub(crate) fn remove(&mut self, topic: &str) -> Option<M> {
        let (_, old) = *self.root.remove(topic, Option::take)?;
        self.len -= 1;
        Some(old)
    }

    #[cfg(test)]
    pub(crate) fn get(&self, topic: &str) -> Option<&M> {
        let (_, msg) = self.root.find(topic)?.leaf.as_deref()?;
        Some(msg)
    }

    /// Calls `f(topic, msg)` for each stored message whose topic `filter` matches.
    pub(crate) fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &M)) {
        let mut stack = vec![(&self.root, Below::Levels(filter))];
        while let Some((node, below)) = stack.pop() {
            // `$` topics are not matched by a wildcard in the first level.
            let at_root = ptr::eq(node, &self.root);
            let children = node.children.iter();
            let wildcard = children.filter(|(level, _)| !at_root || !level.starts_with('$'));
            let rest = match below {
                Below::Levels(rest) => rest,
                Below::Nothing | Below::All => {
                    if let Some((topic, msg)) = node.leaf.as_deref() {
                        f(topic, msg);
                    }
                    if let Below::All = below {
                        stack.extend(wildcard.map(|(_, child)| (child, Below::All)));
                    }
                    continue;
                }
            };
            let (level, next) = split_level(rest);
            let next = next.map_or(Below::Nothing, Below::Levels);
            match level {
                // The parent level and everything below it.
                "#" => stack.push((node, Below::All)),
                "+" => stack.extend(wildcard.map(|(_, child)| (child, next))),
                _ => stack.extend(node.children.get(level).map(|child| (child, next))),
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    fn nodes(&self) -> usize {
        self.root.count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iot_proto::topics::matches;

    use super::*;

    fn subs_of(tree: &SubTree<u32, u32>, topic: &str) -> Vec<(String, u32, u32)> {
        let mut out = Vec::new();
        tree.for_each_match(topic, |filter, k, v| out.push((filter.to_owned(), *k, *v)));
        out.sort();
        out
    }

    fn retained_of(tree: &RetainTree<u32>, filter: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        tree.for_each_match(filter, |topic, msg| out.push((topic.to_owned(), *msg)));
        out.sort();
        out
    }

    #[test]
    fn matching_rules() {
        #[rustfmt::skip]
        let cases = [
            ("a/b", "a/b", true), ("a/b", "a/b/c", false), ("a/b", "a", false),
            ("a/+", "a/b", true), ("a/+", "a", false), ("a/+", "a/b/c", false),
            ("+/+", "/a", true), ("+", "/a", false), ("a/+/b", "a//b", true),
            ("a//b", "a//b", true), ("a//b", "a/b", false), ("a/", "a/", true),
            ("a/", "a", false), ("/a", "/a", true), ("/a", "a", false), ("a/+", "a/", true),
            ("a/#", "a", true), ("a/#", "a/b/c", true), ("a/#", "a/", true), ("a/#", "ab", false),
            ("a/#", "b/a", false), ("#", "a/b", true), ("#", "/", true), ("+/#", "a", true),
            ("a/+/#", "a", false), ("a/+/#", "a/b", true), ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false), ("+/#", "$SYS", false), ("$SYS/#", "$SYS/x", true),
            ("$SYS/#", "$SYS", true), ("$SYS/+", "$SYS/x", true), ("$SYS/x", "$SYS/x", true),
            ("a/+", "a/$x", true), ("a/#", "a/$x", true), ("+/$x", "a/$x", true),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "oracle: {filter} {topic}");
            let (mut subs, mut retained) = (SubTree::new(), RetainTree::new());
            subs.insert(filter, 1, 2);
            retained.insert(topic, 3);
            let got = !subs_of(&subs, topic).is_empty();
            assert_eq!(got, want, "subscription {filter:?} on {topic:?}");
            let got = !retained_of(&retained, filter).is_empty();
            assert_eq!(got, want, "retained {topic:?} by {filter:?}");
        }
    }

    #[test]
    fn keys_share_a_filter_and_replacing_returns_the_old_value() {
        let mut subs = SubTree::new();
        for filter in ["a/b", "a/+"] {
            assert_eq!(subs.insert(filter, 1, 10), None);
            assert_eq!(subs.insert(filter, 2, 20), None);
            assert_eq!(subs.insert(filter, 1, 11), Some(10));
        }
        let sub = |filter: &str, key, value| (filter.to_owned(), key, value);
        #[rustfmt::skip]
        let all = [sub("a/+", 1, 11), sub("a/+", 2, 20), sub("a/b", 1, 11), sub("a/b", 2, 20)];
        assert_eq!(subs_of(&subs, "a/b"), all);
        assert_eq!(subs.len(), 4);
        assert_eq!(subs.remove("a/+", &1), Some(11));
        assert_eq!(subs.remove("a/+", &1), None);
        assert_eq!(subs.remove("a/b", &3), None);
        assert_eq!(subs_of(&subs, "a/c"), [sub("a/+", 2, 20)]);

        let mut retained = RetainTree::new();
        assert_eq!(retained.insert("a/b", 1), None);
        assert_eq!(retained.insert("a/b", 2), Some(1));
        assert_eq!(retained.get("a/b"), Some(&2));
        assert_eq!(retained.get("a"), None);
        assert_eq!(retained.remove("a"), None);
        assert_eq!(retained.remove("a/b"), Some(2));
        assert!(retained.is_empty() && retained.get("a/b").is_none());
    }

    #[test]
    fn removing_prunes_every_node() {
        let (mut subs, mut retained) = (SubTree::new(), RetainTree::new());
        for round in 0..3 {
            let filters: Vec<String> = (0..1000)
                .map(|i| match i % 3 {
                    0 => format!("d/{i}/+/x{}/#", i % 7),
                    1 => format!("+/{}/{i}", i % 5),
                    _ => format!("d/{}//{i}/#", i % 3),
                })
                .collect();
            for (i, filter) in (0..).zip(&filters) {
                assert_eq!(subs.insert(filter, 7, i), None);
                assert_eq!(retained.insert(filter, i), None);
            }
            assert!(subs.nodes() > 2000 && retained.nodes() > 2000);
            // Half in order, the other half backwards, a different half each round.
            let (first, last): (Vec<_>, Vec<_>) =
                (0..).zip(&filters).partition(|(i, _)| (i + round) % 2 == 0);
            for (i, filter) in first.into_iter().chain(last.into_iter().rev()) {
                assert_eq!(subs.remove(filter, &7), Some(i), "{filter}");
                assert_eq!(retained.remove(filter), Some(i), "{filter}");
            }
            assert_eq!((subs.nodes(), retained.nodes()), (0, 0));
            assert!(subs.is_empty() && retained.is_empty());
        }
    }

    #[test]
    fn deep_and_odd_input_neither_panics_nor_overflows() {
        let (deep, deep_plus) = ("a/".repeat(100_000), "+/".repeat(100_000));
        let (mut subs, mut retained) = (SubTree::new(), RetainTree::new());
        subs.insert(&format!("{deep}#"), 1, 0);
        subs.insert(&deep_plus, 2, 0);
        retained.insert(&deep, 0);
        assert_eq!(subs_of(&subs, &deep).len(), 2);
        assert_eq!(retained_of(&retained, "#").len(), 1);
        assert_eq!(retained_of(&retained, &deep_plus).len(), 1);
        let odd = ["", "/", "#/#", "a/#/b", "++", "+#", "#", "+", "$", "a/#"];
        for name in odd {
            subs.insert(name, 3, 0);
            retained.insert(name, 0);
            subs.for_each_match(name, |_, _, _| {});
            retained.for_each_match(name, |_, _| {});
        }
        // A wildcard in a topic (invalid) is not also taken literally: `+` is reported once.
        let plus = subs_of(&subs, "+")
            .into_iter()
            .filter(|(filter, ..)| filter == "+");
        assert_eq!(plus.count(), 1);
        for name in odd {
            assert_eq!(subs.remove(name, &3), Some(0));
            assert_eq!(retained.remove(name), Some(0));
        }
        assert_eq!(subs.remove(&deep_plus, &2), Some(0));
        assert_eq!((subs.len(), retained.len()), (1, 1));
        // Both dropped here, a 100,000-level trie still inside each.
    }

    /// xorshift64*: deterministic, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        /// A topic, or with `wild` a filter, of 1 to 4 levels over a tiny alphabet.
        fn name(&mut self, wild: bool) -> String {
            let n = 1 + self.below(4);
            // Topics take the first 4 letters, filters add `+`, and `#` in the last level.
            let letters = |i| 4 + usize::from(wild) * (1 + usize::from(i + 1 == n));
            let levels: Vec<&str> = (0..n)
                .map(|i| ["a", "b", "", "$x", "+", "#"][self.below(letters(i))])
                .collect();
            levels.join("/")
        }
    }

    #[test]
    fn both_trees_agree_with_the_naive_matcher() {
        let (mut rng, mut subs, mut retained) = (Rng(1), SubTree::new(), RetainTree::new());
        let mut sub_model: HashMap<(String, u32), u32> = HashMap::new();
        let mut retain_model: HashMap<String, u32> = HashMap::new();
        for step in 0..8_000 {
            let (filter, key, topic) = (rng.name(true), rng.below(3) as u32, rng.name(false));
            let sub = (filter.clone(), key);
            if rng.below(3) == 0 {
                assert_eq!(subs.remove(&filter, &key), sub_model.remove(&sub));
                assert_eq!(retained.remove(&topic), retain_model.remove(&topic));
            } else {
                assert_eq!(subs.insert(&filter, key, step), sub_model.insert(sub, step));
                let old = retain_model.insert(topic.clone(), step);
                assert_eq!(retained.insert(&topic, step), old);
            }
            assert_eq!(subs.len(), sub_model.len());
            assert_eq!(retained.len(), retain_model.len());
            assert_eq!(retained.get(&topic), retain_model.get(&topic));

            let (filter, topic) = (rng.name(true), rng.name(false));
            let mut want: Vec<_> = sub_model
                .iter()
                .filter(|((filter, _), _)| matches(filter, &topic))
                .map(|((filter, key), value)| (filter.clone(), *key, *value))
                .collect();
            want.sort();
            assert_eq!(subs_of(&subs, &topic), want, "topic {topic:?}");
            let mut want: Vec<_> = retain_model
                .iter()
                .filter(|(topic, _)| matches(&filter, topic))
                .map(|(topic, msg)| (topic.clone(), *msg))
                .collect();
            want.sort();
            assert_eq!(retained_of(&retained, &filter), want, "filter {filter:?}");
        }
        for ((filter, key), value) in sub_model {
            assert_eq!(subs.remove(&filter, &key), Some(value));
        }
        for (topic, msg) in retain_model {
            assert_eq!(retained.remove(&topic), Some(msg));
        }
        assert_eq!((subs.nodes(), retained.nodes()), (0, 0));
    }
}
