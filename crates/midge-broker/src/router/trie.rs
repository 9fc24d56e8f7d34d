//! Subscription trie (stub).
