//! The subscription trie: topic filters indexed level by level, so that finding the
//! subscribers of a PUBLISH costs O(topic depth × wildcard branching) rather than a scan
//! of every subscription.
//!
//! Each node has a map of literal children, a separate slot for the `+` child and one for
//! the `#` leaf, so the matcher never has to look for wildcards among the literal levels.
//! Nodes are four pointers wide and allocate their child map only when they have children,
//! because a broker holds millions of filters and most nodes are leaves.
//!
//! Nothing here recurses on the depth of a filter or topic (a 65535-byte topic can have
//! 32768 levels, enough to overflow a task's stack): walks use an explicit stack, and nodes
//! are dropped iteratively.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// Subscriptions indexed by filter level so that matching a topic costs
/// O(topic depth * branching on wildcards), not O(number of subscriptions).
///
/// An entry is a `(filter, key)` pair with a value; the key is typically the client or
/// the shared-subscription group member. Filters must be valid
/// ([`midge_proto::topic::valid_topic_filter`]); a `#` that is not the last level is
/// treated as a literal level, which no valid topic name can match.
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

struct Node<K, V> {
    children: Children<Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    /// The entries whose filter ends with `#` at this level.
    hash: Option<Box<Leaf<K, V>>>,
    /// The entries whose filter ends at this node.
    leaf: Option<Box<Leaf<K, V>>>,
}

struct Leaf<K, V> {
    /// The whole filter, handed to the match callback (the router needs it for shared groups).
    filter: Box<str>,
    subs: Subs<K, V>,
}

/// Entries of one filter. Most filters have a single subscriber, kept inline in the leaf
/// with no allocation of its own; a few are a vector, smaller and faster than a map; a
/// popular filter switches to a map so that subscribing and unsubscribing stay O(1).
#[allow(clippy::box_collection)] // Boxed to keep every leaf small; few leaves need a map.
enum Subs<K, V> {
    Empty,
    One(K, V),
    Few(Vec<(K, V)>),
    Many(Box<HashMap<K, V>>),
}

const FEW_MAX: usize = 16;

/// How a filter level selects a node's slot.
enum Step<'a> {
    Plus,
    Hash,
    Exact(&'a str),
}

impl<'a> Step<'a> {
    fn of(level: &'a str, is_last: bool) -> Self {
        match level {
            "+" => Step::Plus,
            "#" if is_last => Step::Hash,
            _ => Step::Exact(level),
        }
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTrie<K, V> {
    pub fn new() -> Self {
        SubscriptionTrie {
            root: Node::default(),
            len: 0,
        }
    }

    /// Adds the entry `(filter, key)`, replacing and returning the previous value if any.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        let mut levels = Levels::new(filter);
        let leaf = loop {
            let Some((level, is_last)) = levels.next() else {
                break &mut node.leaf;
            };
            node = match Step::of(level, is_last) {
                Step::Plus => node.plus.get_or_insert_with(Box::default),
                Step::Hash => break &mut node.hash,
                Step::Exact(level) => node.children.get_or_insert(level),
            };
        };
        let leaf = leaf.get_or_insert_with(|| Box::new(Leaf::new(filter)));
        let old = leaf.subs.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the entry `(filter, key)`, pruning the nodes it leaves empty.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let cut = self.prune_point(filter, key)?;
        let value = self.take(filter, key)?;
        self.len -= 1;
        if let Some(depth) = cut {
            self.cut(filter, depth);
        }
        Some(value)
    }

    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        self.leaf(filter)?.subs.get(key)
    }

    /// Calls `f(filter, key, value)` for every entry whose filter matches the topic name
    /// `topic`, with `+`/`#` in the first level not matching `$` topics [MQTT-4.7.2-1].
    /// Each entry is visited once; the order is unspecified.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &K, &V)) {
        let mut pending: SmallStack<(&Node<K, V>, Levels<'_>), 16> = SmallStack::new();
        let mut next = Some((&self.root, Levels::new(topic)));
        while let Some((node, mut levels)) = next.take().or_else(|| pending.pop()) {
            let Some((level, _)) = levels.next() else {
                // The topic ends here: filters ending here match, and so does `a/#` for `a`.
                Leaf::visit(&node.leaf, &mut f);
                Leaf::visit(&node.hash, &mut f);
                continue;
            };
            let dollar = level.starts_with('$') && std::ptr::eq(node, &self.root);
            if !dollar {
                Leaf::visit(&node.hash, &mut f);
                if let Some(plus) = &node.plus {
                    pending.push((plus, levels));
                }
            }
            next = node.children.get(level).map(|child| (child, levels));
        }
    }

    /// Calls `f(filter, key, value)` for every entry.
    pub fn for_each(&self, mut f: impl FnMut(&str, &K, &V)) {
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            Leaf::visit(&node.leaf, &mut f);
            Leaf::visit(&node.hash, &mut f);
            pending.extend(node.plus.as_deref());
            pending.extend(node.children.values());
        }
    }

    /// The number of `(filter, key)` entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn leaf(&self, filter: &str) -> Option<&Leaf<K, V>> {
        let mut node = &self.root;
        for (level, is_last) in Levels::new(filter) {
            node = match Step::of(level, is_last) {
                Step::Plus => node.plus.as_deref()?,
                Step::Hash => return node.hash.as_deref(),
                Step::Exact(level) => node.children.get(level)?,
            };
        }
        node.leaf.as_deref()
    }

    /// Plans the removal of `(filter, key)` without changing anything: `None` if there is no
    /// such entry, `Some(None)` if no node becomes empty, `Some(Some(depth))` if the slot
    /// reached by the level at `depth` (0-based) must be cut off along with everything below.
    fn prune_point(&self, filter: &str, key: &K) -> Option<Option<usize>> {
        let leaf = self.leaf(filter)?;
        leaf.subs.get(key)?;
        if leaf.subs.len() > 1 {
            return Some(None);
        }
        // Walk down again, remembering the deepest node that keeps something besides the
        // path being removed; everything below it goes.
        let mut cut = 0;
        let mut node = &self.root;
        let mut depth = 0;
        for (level, is_last) in Levels::new(filter) {
            if node.branches() > 1 {
                cut = depth;
            }
            node = match Step::of(level, is_last) {
                Step::Plus => node.plus.as_deref()?,
                Step::Hash => return Some(Some(cut)),
                Step::Exact(level) => node.children.get(level)?,
            };
            depth += 1;
        }
        if node.branches() > 1 {
            return Some(Some(depth));
        }
        Some(Some(cut))
    }

    /// Removes the entry's value, leaving a possibly empty leaf for [`Self::cut`].
    fn take(&mut self, filter: &str, key: &K) -> Option<V> {
        let mut node = &mut self.root;
        let mut levels = Levels::new(filter);
        let leaf = loop {
            let Some((level, is_last)) = levels.next() else {
                break &mut node.leaf;
            };
            node = match Step::of(level, is_last) {
                Step::Plus => node.plus.as_deref_mut()?,
                Step::Hash => break &mut node.hash,
                Step::Exact(level) => node.children.get_mut(level)?,
            };
        };
        leaf.as_mut()?.subs.remove(key)
    }

    /// Cuts the slot selected by the level at `depth` of `filter` (or the leaf, if `depth`
    /// is the number of levels).
    fn cut(&mut self, filter: &str, depth: usize) {
        let mut node = &mut self.root;
        let mut levels = Levels::new(filter);
        for _ in 0..depth {
            let Some((level, is_last)) = levels.next() else {
                return;
            };
            node = match Step::of(level, is_last) {
                Step::Plus => match node.plus.as_deref_mut() {
                    Some(plus) => plus,
                    None => return,
                },
                Step::Hash => return,
                Step::Exact(level) => match node.children.get_mut(level) {
                    Some(child) => child,
                    None => return,
                },
            };
        }
        let Some((level, is_last)) = levels.next() else {
            node.leaf = None;
            return;
        };
        match Step::of(level, is_last) {
            Step::Plus => node.plus = None,
            Step::Hash => node.hash = None,
            Step::Exact(level) => {
                node.children.remove(level);
            }
        }
    }
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<K, V> Node<K, V> {
    /// How many things hang off this node: children, wildcard slots and its own leaf.
    fn branches(&self) -> usize {
        self.children.len()
            + usize::from(self.plus.is_some())
            + usize::from(self.hash.is_some())
            + usize::from(self.leaf.is_some())
    }
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            plus: None,
            hash: None,
            leaf: None,
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Drops the subtree without recursing on its depth.
    fn drop(&mut self) {
        if self.plus.is_none() && self.children.is_empty() {
            return;
        }
        let mut doomed = Vec::new();
        loop {
            doomed.extend(self.plus.take().map(|plus| *plus));
            doomed.extend(self.children.take());
            // `next` is dropped at the end of the iteration with no children left.
            match doomed.pop() {
                Some(mut next) => std::mem::swap(self, &mut next),
                None => return,
            }
        }
    }
}

impl<K: Eq + Hash + Clone, V> Leaf<K, V> {
    fn new(filter: &str) -> Self {
        Leaf {
            filter: filter.into(),
            subs: Subs::Empty,
        }
    }

    fn visit(leaf: &Option<Box<Self>>, f: &mut impl FnMut(&str, &K, &V)) {
        if let Some(leaf) = leaf {
            leaf.subs.for_each(|k, v| f(&leaf.filter, k, v));
        }
    }
}

impl<K: Eq + Hash + Clone, V> Subs<K, V> {
    fn len(&self) -> usize {
        match self {
            Subs::Empty => 0,
            Subs::One(..) => 1,
            Subs::Few(v) => v.len(),
            Subs::Many(m) => m.len(),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        match self {
            Subs::Empty => None,
            Subs::One(k, v) => (k == key).then_some(v),
            Subs::Few(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Subs::Many(m) => m.get(key),
        }
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Subs::Empty => *self = Subs::One(key, value),
            Subs::One(k, v) if *k == key => return Some(std::mem::replace(v, value)),
            Subs::One(..) => {
                if let Subs::One(k, v) = std::mem::replace(self, Subs::Empty) {
                    *self = Subs::Few(vec![(k, v), (key, value)]);
                }
            }
            Subs::Few(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(&mut slot.1, value));
                }
                if v.len() < FEW_MAX {
                    v.push((key, value));
                } else {
                    let mut map: HashMap<K, V> = std::mem::take(v).into_iter().collect();
                    map.insert(key, value);
                    *self = Subs::Many(Box::new(map));
                }
            }
            Subs::Many(m) => return m.insert(key, value),
        }
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Subs::Empty => None,
            Subs::One(k, _) if k == key => match std::mem::replace(self, Subs::Empty) {
                Subs::One(_, v) => Some(v),
                _ => None,
            },
            Subs::One(..) => None,
            Subs::Few(v) => {
                let i = v.iter().position(|(k, _)| k == key)?;
                Some(v.swap_remove(i).1)
            }
            Subs::Many(m) => m.remove(key),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        match self {
            Subs::Empty => {}
            Subs::One(k, v) => f(k, v),
            Subs::Few(v) => v.iter().for_each(|(k, v)| f(k, v)),
            Subs::Many(m) => m.iter().for_each(|(k, v)| f(k, v)),
        }
    }
}

/// The literal children of a node, keyed by level. The map is allocated only when the
/// node has children, so a leaf costs one null pointer here.
#[allow(clippy::box_collection)] // Boxed on purpose: 8 bytes per node instead of 48.
pub(crate) struct Children<N>(Option<Box<HashMap<Box<str>, N>>>);

impl<N> Default for Children<N> {
    fn default() -> Self {
        Children(None)
    }
}

impl<N> Children<N> {
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        self.0.as_ref()?.get(level)
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        self.0.as_mut()?.get_mut(level)
    }

    pub(crate) fn get_or_insert(&mut self, level: &str) -> &mut N
    where
        N: Default,
    {
        let map = self.0.get_or_insert_with(Box::default);
        map.entry(level.into()).or_default()
    }

    /// Removes a child, freeing the map when it was the last one.
    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        let map = self.0.as_mut()?;
        let child = map.remove(level);
        if map.is_empty() {
            self.0 = None;
        }
        child
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &N)> {
        self.0
            .iter()
            .flat_map(|map| map.iter().map(|(level, child)| (&**level, child)))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &N> {
        self.0.iter().flat_map(|map| map.values())
    }

    /// Takes all children out, for iterative dropping.
    pub(crate) fn take(&mut self) -> impl Iterator<Item = N> {
        self.0.take().into_iter().flat_map(|map| map.into_values())
    }
}

/// The levels of a topic or filter, each with whether it is the last. `Copy`, so that a
/// walk can remember where it is in the topic for free.
#[derive(Clone, Copy)]
pub(crate) struct Levels<'a> {
    rest: Option<&'a str>,
}

impl<'a> Levels<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Levels { rest: Some(s) }
    }
}

impl<'a> Iterator for Levels<'a> {
    type Item = (&'a str, bool);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        match rest.split_once('/') {
            Some((level, tail)) => {
                self.rest = Some(tail);
                Some((level, false))
            }
            None => {
                self.rest = None;
                Some((rest, true))
            }
        }
    }
}

/// A LIFO stack that keeps its first `N` items inline and spills to the heap only beyond,
/// so a typical match allocates nothing.
pub(crate) struct SmallStack<T: Copy, const N: usize> {
    inline: [Option<T>; N],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy, const N: usize> SmallStack<T, N> {
    pub(crate) fn new() -> Self {
        SmallStack {
            inline: [None; N],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.len < N {
            self.inline[self.len] = Some(item);
            self.len += 1;
        } else {
            self.spill.push(item);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline[self.len].take()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn matched(trie: &SubscriptionTrie<u32, u32>, topic: &str) -> Vec<(String, u32, u32)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |f, k, v| out.push((f.to_owned(), *k, *v)));
        out.sort();
        out
    }

    fn filters(trie: &SubscriptionTrie<u32, u32>, topic: &str) -> Vec<String> {
        matched(trie, topic)
            .into_iter()
            .map(|(f, _, _)| f)
            .collect()
    }

    #[test]
    fn insert_replaces_and_get_finds() {
        let mut t = SubscriptionTrie::new();
        assert_eq!(t.insert("a/b", 1, 10), None);
        assert_eq!(t.insert("a/b", 1, 11), Some(10));
        assert_eq!(t.insert("a/b", 2, 20), None);
        assert_eq!(t.insert("a/#", 1, 30), None);
        assert_eq!(t.insert("+/b", 1, 40), None);
        assert_eq!(t.len(), 4);
        assert_eq!(t.get("a/b", &1), Some(&11));
        assert_eq!(t.get("a/#", &1), Some(&30));
        assert_eq!(t.get("+/b", &1), Some(&40));
        assert_eq!(t.get("a", &1), None);
        assert_eq!(t.get("a/b", &3), None);
    }

    #[test]
    fn wildcards_match_as_the_spec_says() {
        let mut t = SubscriptionTrie::new();
        for (i, f) in [
            "sport/tennis/#",
            "sport/+",
            "+/+",
            "#",
            "$SYS/#",
            "+/x",
            "/+",
            "a//b",
        ]
        .into_iter()
        .enumerate()
        {
            t.insert(f, i as u32, 0);
        }
        assert_eq!(
            filters(&t, "sport/tennis"),
            ["#", "+/+", "sport/+", "sport/tennis/#"]
        );
        assert_eq!(filters(&t, "sport"), ["#"]);
        assert_eq!(filters(&t, "/finance"), ["#", "+/+", "/+"]);
        // [MQTT-4.7.2-1]
        assert_eq!(filters(&t, "$SYS/x"), ["$SYS/#"]);
        assert_eq!(filters(&t, "$SYS"), ["$SYS/#"]);
        assert_eq!(filters(&t, "a//b"), ["#", "a//b"]);
        assert_eq!(filters(&t, "x/x"), ["#", "+/+", "+/x"]);
    }

    #[test]
    fn remove_prunes_empty_nodes() {
        let mut t = SubscriptionTrie::new();
        t.insert("a/b/c", 1, 1);
        t.insert("a/+/#", 1, 2);
        t.insert("a", 1, 3);
        assert_eq!(t.remove("a/b/c", &2), None);
        assert_eq!(t.remove("a/b/c", &1), Some(1));
        assert!(t.root.children.get("a").unwrap().children.is_empty());
        assert_eq!(t.remove("a/+/#", &1), Some(2));
        assert!(t.root.children.get("a").unwrap().plus.is_none());
        assert_eq!(t.remove("a", &1), Some(3));
        assert_eq!(t.root.branches(), 0);
        assert!(t.is_empty());
        assert_eq!(t.remove("a", &1), None);
    }

    #[test]
    fn remove_keeps_nodes_still_in_use() {
        let mut t = SubscriptionTrie::new();
        t.insert("a/b", 1, 1);
        t.insert("a/b", 2, 2);
        t.insert("a/b/c", 1, 3);
        assert_eq!(t.remove("a/b", &1), Some(1));
        assert_eq!(filters(&t, "a/b"), ["a/b"]);
        assert_eq!(t.remove("a/b", &2), Some(2));
        assert_eq!(filters(&t, "a/b"), Vec::<String>::new());
        assert_eq!(filters(&t, "a/b/c"), ["a/b/c"]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn subscribers_of_one_filter_survive_every_representation() {
        let mut t = SubscriptionTrie::new();
        for n in [1u32, 2, 16, 17, 40] {
            for k in 0..n {
                assert_eq!(t.insert("x", k, k), None);
                assert_eq!(t.insert("x", k, k + 1), Some(k));
            }
            assert_eq!(matched(&t, "x").len(), n as usize);
            for k in (0..n).rev() {
                assert_eq!(t.get("x", &k), Some(&(k + 1)));
                assert_eq!(t.remove("x", &k), Some(k + 1));
                assert_eq!(t.remove("x", &k), None);
            }
            assert!(t.is_empty());
        }
    }

    #[test]
    fn popular_filter_switches_to_a_map() {
        let mut t = SubscriptionTrie::new();
        for k in 0..100 {
            t.insert("news", k, k);
        }
        assert_eq!(matched(&t, "news").len(), 100);
        for k in 0..100 {
            assert_eq!(t.remove("news", &k), Some(k));
        }
        assert!(t.is_empty());
        assert_eq!(t.root.branches(), 0);
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        // 32768 levels: the most a 65535-byte topic can have.
        let deep = "/".repeat(32_767);
        let plus = vec!["+"; 32_768].join("/");
        let mut t = SubscriptionTrie::new();
        t.insert(&deep, 1, 1);
        t.insert(&plus, 2, 2);
        assert_eq!(matched(&t, &deep).len(), 2);
        assert_eq!(t.remove(&deep, &1), Some(1));
        drop(t);
    }

    #[test]
    fn small_stack_spills_and_stays_lifo() {
        let mut s: SmallStack<u32, 2> = SmallStack::new();
        for i in 0..5 {
            s.push(i);
        }
        let popped: Vec<u32> = std::iter::from_fn(|| s.pop()).collect();
        assert_eq!(popped, [4, 3, 2, 1, 0]);
    }

    pub(crate) mod model {
        use super::*;
        use midge_proto::topic::matches;
        use proptest::prelude::*;

        /// A filter of 1 to 4 levels from a small alphabet, so that filters collide and
        /// wildcards, empty levels and `$` topics all meet; truncated after a `#` to stay valid.
        pub(crate) fn filter() -> impl Strategy<Value = String> {
            let level = prop::sample::select(vec!["", "a", "b", "$SYS", "+", "#"]);
            prop::collection::vec(level, 1..5).prop_map(|levels| {
                let end = levels
                    .iter()
                    .position(|l| *l == "#")
                    .map_or(levels.len(), |i| i + 1);
                levels[..end].join("/")
            })
        }

        pub(crate) fn topic() -> impl Strategy<Value = String> {
            let level = prop::sample::select(vec!["", "a", "b", "$SYS", "$"]);
            prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
        }

        #[derive(Debug, Clone)]
        enum Op {
            Insert(String, u8, u32),
            Remove(String, u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (filter(), 0..3u8, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
                2 => (filter(), 0..3u8).prop_map(|(f, k)| Op::Remove(f, k)),
            ]
        }

        fn expected(model: &[(String, u8, u32)], topic: &str) -> Vec<(String, u8, u32)> {
            let mut out: Vec<_> = model
                .iter()
                .filter(|(f, _, _)| matches(f, topic))
                .cloned()
                .collect();
            out.sort();
            out
        }

        fn actual(trie: &SubscriptionTrie<u8, u32>, topic: &str) -> Vec<(String, u8, u32)> {
            let mut out = Vec::new();
            trie.for_each_match(topic, |f, k, v| out.push((f.to_owned(), *k, *v)));
            out.sort();
            out
        }

        proptest! {
            #[test]
            fn trie_matches_like_a_linear_scan(
                ops in prop::collection::vec(op(), 0..60),
                topics in prop::collection::vec(topic(), 1..10),
            ) {
                let mut trie = SubscriptionTrie::new();
                let mut model: Vec<(String, u8, u32)> = Vec::new();
                for op in ops {
                    match op {
                        Op::Insert(f, k, v) => {
                            let i = model.iter().position(|(mf, mk, _)| *mf == f && *mk == k);
                            let old = i.map(|i| model.swap_remove(i).2);
                            prop_assert_eq!(trie.insert(&f, k, v), old);
                            model.push((f, k, v));
                        }
                        Op::Remove(f, k) => {
                            let i = model.iter().position(|(mf, mk, _)| *mf == f && *mk == k);
                            let old = i.map(|i| model.swap_remove(i).2);
                            prop_assert_eq!(trie.remove(&f, &k), old);
                        }
                    }
                    prop_assert_eq!(trie.len(), model.len());
                    for topic in &topics {
                        prop_assert_eq!(actual(&trie, topic), expected(&model, topic), "{}", topic);
                    }
                }
                for (f, k, v) in &model {
                    prop_assert_eq!(trie.get(f, k), Some(v));
                }
                let mut all = Vec::new();
                trie.for_each(|f, k, v| all.push((f.to_owned(), *k, *v)));
                all.sort();
                model.sort();
                prop_assert_eq!(&all, &model);
                // Removing everything leaves no node behind.
                for (f, k, _) in &model {
                    prop_assert!(trie.remove(f, k).is_some());
                }
                prop_assert!(trie.is_empty());
                prop_assert_eq!(trie.root.branches(), 0);
            }
        }
    }
}
