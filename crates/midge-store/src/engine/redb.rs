//! A second engine on redb, a copy-on-write B-tree, kept for the engine comparison.
//!
//! redb has no "written but not fsynced" state that survives a process crash: a commit
//! with `Durability::None` is lost with the process unless a later durable commit
//! follows. So `write` commits without fsync and `sync` makes one durable commit.

use super::{Engine, EngineError, Visit, Write};
use crate::key::Table;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// redb with one table per [`Table`], in one file.
pub struct RedbEngine {
    db: Database,
}

fn def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

fn classify(e: impl Into<redb::Error>) -> EngineError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::DatabaseAlreadyOpen => {
            EngineError::Locked("the database is open in another process".into())
        }
        redb::Error::Io(io) => EngineError::Io(io.to_string()),
        redb::Error::Corrupted(s) => EngineError::Damaged(s),
        other => EngineError::Damaged(other.to_string()),
    }
}

impl RedbEngine {
    /// Opens (or creates) the database file `dir/store.redb`.
    pub fn open(dir: &Path) -> Result<RedbEngine, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::Io(e.to_string()))?;
        let db = Database::create(dir.join("store.redb")).map_err(classify)?;
        let tx = db.begin_write().map_err(classify)?;
        for table in Table::ALL {
            tx.open_table(def(table)).map_err(classify)?;
        }
        tx.commit().map_err(classify)?;
        Ok(RedbEngine { db })
    }
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn write(&self, batch: &[Write]) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(classify)?;
        tx.set_durability(Durability::None).map_err(classify)?;
        {
            let mut open = Vec::new();
            for w in batch {
                let i = match open.iter().position(|(t, _)| *t == w.table) {
                    Some(i) => i,
                    None => {
                        open.push((w.table, tx.open_table(def(w.table)).map_err(classify)?));
                        open.len() - 1
                    }
                };
                let t = &mut open[i].1;
                match &w.value {
                    Some(v) => {
                        t.insert(w.key.as_slice(), v.as_slice()).map_err(classify)?;
                    }
                    None => {
                        t.remove(w.key.as_slice()).map_err(classify)?;
                    }
                }
            }
        }
        tx.commit().map_err(classify)
    }

    fn sync(&self) -> Result<(), EngineError> {
        let mut tx = self.db.begin_write().map_err(classify)?;
        tx.set_durability(Durability::Immediate).map_err(classify)?;
        tx.commit().map_err(classify)
    }

    fn crash_safe_without_sync(&self) -> bool {
        false
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let tx = self.db.begin_read().map_err(classify)?;
        let t = tx.open_table(def(table)).map_err(classify)?;
        let v = t.get(key).map_err(classify)?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        visit: Visit<'_>,
    ) -> Result<(), EngineError> {
        let tx = self.db.begin_read().map_err(classify)?;
        let t = tx.open_table(def(table)).map_err(classify)?;
        for item in t.range(start..).map_err(classify)? {
            let (k, v) = item.map_err(classify)?;
            if !k.value().starts_with(prefix) || !visit(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }

    fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, EngineError> {
        let tx = self.db.begin_read().map_err(classify)?;
        let t = tx.open_table(def(table)).map_err(classify)?;
        let last = t.last().map_err(classify)?;
        Ok(last.map(|(k, _)| k.value().to_vec()))
    }
}
