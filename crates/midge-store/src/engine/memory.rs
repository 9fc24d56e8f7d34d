//! An engine in plain memory, for tests: the same store logic without a disk. The maps
//! are shared through an `Arc`, so a test can "restart" by opening a new store on them.

use super::{Engine, EngineError, Visit, Write};
use crate::key::Table;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

type Tables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

/// Sorted maps in memory; clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryEngine {
    data: Arc<RwLock<Tables>>,
}

impl MemoryEngine {
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&self, batch: &[Write]) -> Result<(), EngineError> {
        let mut data = self.data.write();
        for w in batch {
            let k = (w.table, w.key.clone());
            match &w.value {
                Some(v) => data.insert(k, v.clone()),
                None => data.remove(&k),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn crash_safe_without_sync(&self) -> bool {
        true
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.data.read().get(&(table, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        visit: Visit<'_>,
    ) -> Result<(), EngineError> {
        let data = self.data.read();
        for ((t, k), v) in data.range((table, start.to_vec())..) {
            if *t != table || !k.starts_with(prefix) || !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, EngineError> {
        let data = self.data.read();
        let next = Table::ALL.iter().find(|t| **t > table);
        let last = match next {
            Some(n) => data.range(..(*n, Vec::new())).next_back(),
            None => data.iter().next_back(),
        };
        Ok(last
            .filter(|((t, _), _)| *t == table)
            .map(|((_, k), _)| k.clone()))
    }
}
