//! The default engine: fjall, an LSM tree with a write-ahead journal.
//!
//! A batch is appended to the journal and handed to the OS before `write` returns, so it
//! survives a process crash without an fsync; `sync` fsyncs the journal.

use super::{Engine, EngineError, Visit, Write};
use crate::key::Table;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;

/// fjall with one keyspace per [`Table`].
pub struct FjallEngine {
    db: Database,
    tables: Vec<(Table, Keyspace)>,
}

impl FjallEngine {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<FjallEngine, EngineError> {
        let db = Database::builder(dir).open().map_err(classify)?;
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            let ks = db
                .keyspace(table.name(), KeyspaceCreateOptions::default)
                .map_err(classify)?;
            tables.push((table, ks));
        }
        Ok(FjallEngine { db, tables })
    }

    fn keyspace(&self, table: Table) -> &Keyspace {
        // Every table is opened in `open`, in `Table::ALL` order.
        &self.tables[table as usize].1
    }
}

/// Sorts fjall's errors by what an operator can do about them.
fn classify(e: fjall::Error) -> EngineError {
    use fjall::Error as F;
    let text = format!("{e:?}");
    match e {
        F::Locked => EngineError::Locked("the database is locked by another process".into()),
        F::Io(io) => EngineError::Io(io.to_string()),
        F::Storage(fjall::LsmError::Io(io)) => EngineError::Io(io.to_string()),
        F::Poisoned => EngineError::Io(
            "an earlier write or fsync failed; the engine refuses further writes".into(),
        ),
        _ => EngineError::Damaged(text),
    }
}

impl Engine for FjallEngine {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn write(&self, batch: &[Write]) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch().durability(Some(PersistMode::Buffer));
        for w in batch {
            let ks = self.keyspace(w.table);
            match &w.value {
                Some(v) => b.insert(ks, w.key.as_slice(), v.as_slice()),
                None => b.remove(ks, w.key.as_slice()),
            }
        }
        b.commit().map_err(classify)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db.persist(PersistMode::SyncAll).map_err(classify)
    }

    fn crash_safe_without_sync(&self) -> bool {
        true
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let v = self.keyspace(table).get(key).map_err(classify)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        visit: Visit<'_>,
    ) -> Result<(), EngineError> {
        for guard in self.keyspace(table).range(start..) {
            let (k, v) = guard.into_inner().map_err(classify)?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, EngineError> {
        match self.keyspace(table).last_key_value() {
            None => Ok(None),
            Some(g) => Ok(Some(g.key().map_err(classify)?.to_vec())),
        }
    }
}
