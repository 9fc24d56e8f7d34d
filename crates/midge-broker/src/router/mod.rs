//! Routing (stub).
pub mod trie;
