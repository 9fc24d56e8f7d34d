//! The default engine: fjall, an LSM tree with a write-ahead journal.
//!
//! A batch is appended to the journal and handed to the OS before `write` returns, so it
//! survives a process crash without an fsync; `sync` fsyncs the journal.

use super::{journal, Engine, EngineError, Visit, Write};
use crate::key::Table;
use crate::lock::StoreLock;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::{Path, PathBuf};

/// Journal size above which fjall flushes memtables to table files (its minimum).
const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// fjall with one keyspace per [`Table`]. Never clear or delete a keyspace: the journal
/// check (`journal.rs`) counts on batch sequence numbers rising within a journal, which a
/// cleared keyspace's replay breaks.
pub struct FjallEngine {
    db: Database,
    dir: PathBuf,
    tables: Vec<(Table, Keyspace)>,
    /// The data directory's lock (`lock.rs`); `None` for a salvage copy, which no broker
    /// opens.
    lock: Option<StoreLock>,
}

/// Lists each table's directory, relative to the store, once the store exists. fjall
/// silently makes an empty table when a table's directory is gone; this file lets `open`
/// notice instead of starting with that table's data lost.
const TABLES_FILE: &str = "midge-tables";

impl FjallEngine {
    /// Opens (or creates) the database in `dir` (made if missing). A table whose
    /// directory has disappeared since the store was made is damage: an error naming it,
    /// not an empty table. [`EngineError::Locked`] (naming the holder's pid) when another
    /// process has the store open, even one whose directory was replaced since.
    pub fn open(dir: &Path) -> Result<FjallEngine, EngineError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::Io(format!("{}: cannot create: {e}", dir.display())))?;
        // First: nothing below may read or change files another process owns.
        let store_lock = StoreLock::acquire(dir)?;
        let has_files = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
        if has_files && !dir.join("version").exists() {
            // fjall would fail with "File exists (os error 17)".
            return Err(EngineError::Damaged(format!(
                "{}: `version` is missing (not a Midge data directory, or a store that lost \
                 that file)",
                dir.display()
            )));
        }
        let missing = missing_tables(dir);
        if !missing.is_empty() {
            return Err(EngineError::Damaged(format!(
                "{}: table directories are missing, their records would be lost: {}",
                dir.display(),
                missing.join(", ")
            )));
        }
        // fjall would take a damaged journal for a cut-short one and drop what follows
        // the damage: read the journals first, under the store's lock (a running
        // broker's journal is not ours to read or cut).
        if has_files {
            let lock = lock_store(dir)?;
            journal::check_before_open(dir).map_err(EngineError::Damaged)?;
            drop(lock);
        }
        FjallEngine::open_unchecked(dir, Some(store_lock))
    }

    /// Opens a damaged copy for salvage: missing tables are made empty, and journals
    /// are rewritten to their readable batches. Returns notes on what is lost, for the
    /// repair report.
    pub fn open_for_salvage(dir: &Path) -> Result<(FjallEngine, Vec<String>), EngineError> {
        let mut notes: Vec<String> = missing_tables(dir)
            .into_iter()
            .map(|t| format!("table {t} was missing from the damaged store: its records are lost"))
            .collect();
        let lock = lock_store(dir)?;
        notes.extend(
            journal::keep_good_batches(dir)
                .map_err(|e| EngineError::Io(format!("{}: {e}", dir.display())))?,
        );
        drop(lock);
        Ok((FjallEngine::open_unchecked(dir, None)?, notes))
    }

    fn open_unchecked(dir: &Path, lock: Option<StoreLock>) -> Result<FjallEngine, EngineError> {
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
        let engine = FjallEngine {
            db,
            dir: dir.to_path_buf(),
            tables,
            lock,
        };
        engine.record_tables()?;
        Ok(engine)
    }

    /// Writes [`TABLES_FILE`] if the store has none yet (a new store, or one made before
    /// the file existed).
    fn record_tables(&self) -> Result<(), EngineError> {
        let path = self.dir.join(TABLES_FILE);
        if path.exists() {
            return Ok(());
        }
        let mut text = String::new();
        for (table, ks) in &self.tables {
            let rel = ks.path().strip_prefix(&self.dir).unwrap_or(ks.path());
            text.push_str(&format!("{}\t{}\n", table.name(), rel.display()));
        }
        let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
        let tmp = self.dir.join(format!("{TABLES_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
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

/// The tables [`TABLES_FILE`] lists whose directory is gone, as `name (path)`.
fn missing_tables(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join(TABLES_FILE)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, rel)| !dir.join(rel).is_dir())
        .map(|(name, rel)| format!("`{name}` ({})", dir.join(rel).display()))
        .collect()
}

/// Takes the store's lock file (fjall's own) while Midge reads or changes files fjall
/// owns; `None` when the store has no lock file yet.
pub fn lock_store(dir: &Path) -> Result<Option<std::fs::File>, EngineError> {
    let path = dir.join("lock");
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    else {
        return Ok(None);
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(EngineError::Locked("its lock file is held".into()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(EngineError::Io(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
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
        // The store's own lock (`lock.rs`) was free: the holder is out of reach of it (another
        // network namespace, another machine sharing the directory).
        F::Locked => EngineError::Locked("its lock file is held".into()),
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
        // A directory removed (or replaced) while open: fjall's flush would wait forever
        // for files it cannot write (or collides with the new directory's: "File
        // exists"). Nothing left to keep.
        self.check_location()?;
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

    fn check_location(&self) -> Result<(), EngineError> {
        match &self.lock {
            Some(lock) => lock.check(),
            None => Ok(()),
        }
    }

    fn tick(&self) {
        if let Some(lock) = &self.lock {
            lock.answer_queries();
        }
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
