//! Retained messages: the last retained PUBLISH of each topic, stored in a tree of topic
//! levels so that a new subscription finds what its filter matches without scanning every
//! retained topic.
//!
//! Like the subscription trie, nothing here recurses on topic depth: walks use an explicit
//! stack and nodes are dropped iteratively.

use std::fmt;

use crate::router::trie::{Children, Levels, SmallStack};

/// Retained messages by topic, searchable by filter.
pub struct RetainedTree<V> {
    root: Node<V>,
    len: usize,
}

struct Node<V> {
    children: Children<Node<V>>,
    /// The topic ending at this node and its message. Boxed: most nodes on a path are
    /// interior and hold nothing.
    entry: Option<Box<(Box<str>, V)>>,
}

/// Where a filter walk is: still matching levels, or emitting a whole subtree for `#`.
enum Walk<'n, 'f, V> {
    Match(&'n Node<V>, Levels<'f>),
    All(&'n Node<V>),
}

// Not derived: the derive would require `V: Copy`, but only references are copied.
impl<V> Clone for Walk<'_, '_, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Walk<'_, '_, V> {}

impl<V> RetainedTree<V> {
    pub fn new() -> Self {
        RetainedTree {
            root: Node::default(),
            len: 0,
        }
    }

    /// Stores `value` for the topic name `topic`, returning the message it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for (level, _) in Levels::new(topic) {
            node = node.children.get_or_insert(level);
        }
        match &mut node.entry {
            Some(entry) => Some(std::mem::replace(&mut entry.1, value)),
            empty => {
                *empty = Some(Box::new((topic.into(), value)));
                self.len += 1;
                None
            }
        }
    }

    /// Removes the message retained for `topic`, pruning the nodes it leaves empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let cut = self.prune_point(topic)?;
        let mut node = &mut self.root;
        let mut levels = Levels::new(topic);
        for _ in 0..cut {
            let (level, _) = levels.next()?;
            node = node.children.get_mut(level)?;
        }
        let value = match levels.next() {
            // The node holding the message has other children: keep it, take the message.
            None => node.entry.take().map(|entry| entry.1),
            Some((level, _)) => {
                let mut doomed = node.children.remove(level)?;
                let mut doomed = &mut doomed;
                for (level, _) in levels {
                    doomed = doomed.children.get_mut(level)?;
                }
                doomed.entry.take().map(|entry| entry.1)
            }
        };
        self.len -= usize::from(value.is_some());
        value
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        self.node(topic)?.entry.as_ref().map(|entry| &entry.1)
    }

    /// Calls `f(topic, value)` for every retained topic that `filter` matches, with `+`/`#`
    /// in the first level not matching `$` topics [MQTT-4.7.2-1] (`#` does not return
    /// `$SYS/x`). `filter` must be a valid topic filter. The order is unspecified.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let mut pending: SmallStack<Walk<'_, '_, V>, 16> = SmallStack::new();
        pending.push(Walk::Match(&self.root, Levels::new(filter)));
        while let Some(walk) = pending.pop() {
            match walk {
                Walk::All(node) => {
                    node.visit(&mut f);
                    node.children
                        .values()
                        .for_each(|c| pending.push(Walk::All(c)));
                }
                Walk::Match(node, mut levels) => {
                    let at_root = std::ptr::eq(node, &self.root);
                    let visible = |level: &str| !(at_root && level.starts_with('$'));
                    match levels.next() {
                        None => node.visit(&mut f),
                        // `a/#` matches `a` too; the root holds no message.
                        Some(("#", true)) => {
                            node.visit(&mut f);
                            for (level, child) in node.children.iter() {
                                if visible(level) {
                                    pending.push(Walk::All(child));
                                }
                            }
                        }
                        Some(("+", _)) => {
                            for (level, child) in node.children.iter() {
                                if visible(level) {
                                    pending.push(Walk::Match(child, levels));
                                }
                            }
                        }
                        Some((level, _)) => {
                            if let Some(child) = node.children.get(level) {
                                pending.push(Walk::Match(child, levels));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Calls `f(topic, value)` for every retained message.
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            node.visit(&mut f);
            pending.extend(node.children.values());
        }
    }

    /// The number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn node(&self, topic: &str) -> Option<&Node<V>> {
        let mut node = &self.root;
        for (level, _) in Levels::new(topic) {
            node = node.children.get(level)?;
        }
        Some(node)
    }

    /// The number of levels to walk down before cutting: the depth of the deepest node on
    /// the path that keeps something once the message is gone. `None` if nothing is retained
    /// for `topic`. Equal to the topic's level count when the node holding the message
    /// itself has children.
    fn prune_point(&self, topic: &str) -> Option<usize> {
        self.node(topic)?.entry.as_ref()?;
        let mut cut = 0;
        let mut depth = 0;
        let mut node = &self.root;
        for (level, _) in Levels::new(topic) {
            if node.branches() > 1 {
                cut = depth;
            }
            node = node.children.get(level)?;
            depth += 1;
        }
        if node.branches() > 1 {
            cut = depth;
        }
        Some(cut)
    }
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for RetainedTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> Node<V> {
    fn branches(&self) -> usize {
        self.children.len() + usize::from(self.entry.is_some())
    }

    fn visit(&self, f: &mut impl FnMut(&str, &V)) {
        if let Some(entry) = &self.entry {
            f(&entry.0, &entry.1);
        }
    }
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            entry: None,
        }
    }
}

impl<V> Drop for Node<V> {
    /// Drops the subtree without recursing on its depth.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut doomed: Vec<Node<V>> = self.children.take().collect();
        while let Some(mut node) = doomed.pop() {
            doomed.extend(node.children.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(tree: &RetainedTree<u32>, filter: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        tree.for_each_match(filter, |t, v| out.push((t.to_owned(), *v)));
        out.sort();
        out
    }

    fn topics(tree: &RetainedTree<u32>, filter: &str) -> Vec<String> {
        matched(tree, filter).into_iter().map(|(t, _)| t).collect()
    }

    fn tree(topics: &[&str]) -> RetainedTree<u32> {
        let mut tree = RetainedTree::new();
        for (i, t) in topics.iter().enumerate() {
            tree.insert(t, i as u32);
        }
        tree
    }

    #[test]
    fn insert_replaces_and_get_finds() {
        let mut t = RetainedTree::new();
        assert_eq!(t.insert("a/b", 1), None);
        assert_eq!(t.insert("a/b", 2), Some(1));
        assert_eq!(t.insert("a", 3), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a/b"), Some(&2));
        assert_eq!(t.get("a"), Some(&3));
        assert_eq!(t.get("a/b/c"), None);
        assert_eq!(t.get("b"), None);
    }

    #[test]
    fn filters_find_retained_topics() {
        let t = tree(&[
            "sport",
            "sport/tennis",
            "sport/tennis/player1",
            "/finance",
            "a//b",
        ]);
        assert_eq!(
            topics(&t, "sport/#"),
            ["sport", "sport/tennis", "sport/tennis/player1"]
        );
        assert_eq!(
            topics(&t, "sport/tennis/#"),
            ["sport/tennis", "sport/tennis/player1"]
        );
        assert_eq!(topics(&t, "sport/+"), ["sport/tennis"]);
        assert_eq!(topics(&t, "+/+"), ["/finance", "sport/tennis"]);
        assert_eq!(topics(&t, "a/+/b"), ["a//b"]);
        assert_eq!(topics(&t, "sport"), ["sport"]);
        assert_eq!(topics(&t, "nothing/#"), Vec::<String>::new());
        assert_eq!(topics(&t, "#").len(), 5);
    }

    #[test]
    fn wildcards_do_not_return_dollar_topics() {
        // [MQTT-4.7.2-1]
        let t = tree(&["$SYS/x", "$SYS", "x", "a/$b"]);
        assert_eq!(topics(&t, "#"), ["a/$b", "x"]);
        assert_eq!(topics(&t, "+"), ["x"]);
        assert_eq!(topics(&t, "+/x"), Vec::<String>::new());
        assert_eq!(topics(&t, "$SYS/#"), ["$SYS", "$SYS/x"]);
        assert_eq!(topics(&t, "$SYS/+"), ["$SYS/x"]);
        assert_eq!(topics(&t, "a/+"), ["a/$b"]);
    }

    #[test]
    fn remove_prunes_empty_nodes() {
        let mut t = tree(&["a/b/c", "a", "a/x"]);
        assert_eq!(t.remove("a/b"), None);
        assert_eq!(t.remove("a/b/c"), Some(0));
        assert!(t
            .root
            .children
            .get("a")
            .unwrap()
            .children
            .get("b")
            .is_none());
        assert_eq!(t.remove("a"), Some(1));
        assert_eq!(t.get("a/x"), Some(&2));
        assert_eq!(t.remove("a/x"), Some(2));
        assert!(t.root.children.is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn remove_keeps_a_node_with_children() {
        let mut t = tree(&["a", "a/b"]);
        assert_eq!(t.remove("a"), Some(0));
        assert_eq!(topics(&t, "#"), ["a/b"]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let deep = "/".repeat(32_767);
        let mut t = tree(&[&deep]);
        assert_eq!(topics(&t, "#").len(), 1);
        assert_eq!(topics(&t, &deep).len(), 1);
        t.insert("x", 1);
        assert_eq!(t.remove(&deep), Some(0));
        t.insert(&deep, 2);
        drop(t);
    }

    mod model {
        use super::*;
        use crate::router::trie::tests::model::{filter, topic};
        use midge_proto::topic::matches;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert(String, u32),
            Remove(String),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (topic(), any::<u32>()).prop_map(|(t, v)| Op::Insert(t, v)),
                2 => topic().prop_map(Op::Remove),
            ]
        }

        proptest! {
            #[test]
            fn retained_tree_matches_like_a_linear_scan(
                ops in prop::collection::vec(op(), 0..60),
                filters in prop::collection::vec(filter(), 1..10),
            ) {
                let mut tree = RetainedTree::new();
                let mut model: Vec<(String, u32)> = Vec::new();
                for op in ops {
                    match op {
                        Op::Insert(t, v) => {
                            let i = model.iter().position(|(mt, _)| *mt == t);
                            let old = i.map(|i| model.swap_remove(i).1);
                            prop_assert_eq!(tree.insert(&t, v), old);
                            model.push((t, v));
                        }
                        Op::Remove(t) => {
                            let i = model.iter().position(|(mt, _)| *mt == t);
                            let old = i.map(|i| model.swap_remove(i).1);
                            prop_assert_eq!(tree.remove(&t), old);
                        }
                    }
                    prop_assert_eq!(tree.len(), model.len());
                    for filter in &filters {
                        let mut want: Vec<_> =
                            model.iter().filter(|(t, _)| matches(filter, t)).cloned().collect();
                        want.sort();
                        prop_assert_eq!(matched(&tree, filter), want, "{}", filter);
                    }
                }
                for (t, v) in &model {
                    prop_assert_eq!(tree.get(t), Some(v));
                }
                for (t, _) in &model {
                    prop_assert!(tree.remove(t).is_some());
                }
                prop_assert!(tree.is_empty());
                prop_assert!(tree.root.children.is_empty());
            }
        }
    }
}
