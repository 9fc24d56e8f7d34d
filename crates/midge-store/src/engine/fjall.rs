//! The default engine: fjall, an LSM tree with a write-ahead journal.
//!
//! A batch is appended to the journal and handed to the OS before `write` returns, so it
//! survives a process crash without an fsync; `sync` fsyncs the journal.

use super::{Engine, EngineError, Visit, Write};
use crate::key::Table;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::{Path, PathBuf};

/// Journal size above which fjall flushes memtables to table files (its minimum).
const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// fjall with one keyspace per [`Table`].
pub struct FjallEngine {
    db: Database,
    dir: PathBuf,
    tables: Vec<(Table, Keyspace)>,
}

impl FjallEngine {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<FjallEngine, EngineError> {
        let db = Database::builder(dir)
            // The journal is replayed at start-up after a crash: keep it at fjall's
            // minimum so that replay stays short (see docs/design/storage.md).
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(|e| classify(e, &opening(dir)))?;
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            let ks = db
                .keyspace(table.name(), KeyspaceCreateOptions::default)
                .map_err(|e| classify(e, &format!("opening table `{}`", table.name())))?;
            tables.push((table, ks));
        }
        Ok(FjallEngine {
            db,
            dir: dir.to_path_buf(),
            tables,
        })
    }

    fn keyspace(&self, table: Table) -> &Keyspace {
        // Every table is opened in `open`, in `Table::ALL` order.
        &self.tables[table as usize].1
    }

    /// Says which files hold `table`, for error messages.
    fn where_is(&self, table: Table) -> String {
        format!(
            "table `{}` (files in {})",
            table.name(),
            self.keyspace(table).path().display()
        )
    }

    /// Writes every table's in-memory part to table files and waits (tests and
    /// benchmarks use it to put data where a long-running store would have it).
    pub fn flush_tables(&self) -> Result<(), EngineError> {
        for (table, ks) in &self.tables {
            ks.rotate_memtable_and_wait()
                .map_err(|e| classify(e, &self.where_is(*table)))?;
        }
        Ok(())
    }

    /// The directory holding `table`'s files.
    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.keyspace(table).path().to_path_buf()
    }

    /// The directory of the database.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Names the journal files, since a journal error at open does not say which.
fn opening(dir: &Path) -> String {
    let mut journals: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    journals.sort();
    format!("opening (journal files: {})", journals.join(", "))
}

/// Sorts fjall's errors by what an operator can do about them; `context` says what was
/// being done and on which files.
fn classify(e: fjall::Error, context: &str) -> EngineError {
    use fjall::Error as F;
    match e {
        F::Locked => EngineError::Locked("the database is locked by another process".into()),
        F::Io(io) | F::Storage(fjall::LsmError::Io(io)) => {
            EngineError::Io(format!("{context}: {io}"))
        }
        F::Poisoned => EngineError::Io(
            "an earlier write or fsync failed; the engine refuses further writes".into(),
        ),
        F::JournalRecovery(r) => EngineError::Damaged(format!(
            "{context}: a journal batch before the last one is unreadable ({r:?})"
        )),
        F::Storage(fjall::LsmError::ChecksumMismatch { .. }) => {
            EngineError::Damaged(format!("{context}: a block's checksum does not match"))
        }
        other => EngineError::Damaged(format!("{context}: {other:?}")),
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
        b.commit()
            .map_err(|e| classify(e, "writing a batch to the journal"))
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| classify(e, "fsync of the journal"))
    }

    fn close(&self) -> Result<(), EngineError> {
        self.sync()?;
        // Without this the next open replays the whole journal into memory.
        self.flush_tables()
    }

    fn crash_safe_without_sync(&self) -> bool {
        true
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let v = self
            .keyspace(table)
            .get(key)
            .map_err(|e| classify(e, &self.where_is(table)))?;
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
            let (k, v) = guard
                .into_inner()
                .map_err(|e| classify(e, &self.where_is(table)))?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, EngineError> {
        match self.keyspace(table).last_key_value() {
            None => Ok(None),
            Some(g) => Ok(Some(
                g.key()
                    .map_err(|e| classify(e, &self.where_is(table)))?
                    .to_vec(),
            )),
        }
    }
}
