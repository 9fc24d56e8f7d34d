//! The storage-engine seam: the few key-value operations the store needs, implemented on
//! fjall (the default), redb (feature `redb`, kept for the engine comparison) and plain
//! memory (tests).

pub mod fjall;
pub mod journal;
pub mod memory;
#[cfg(feature = "redb")]
pub mod redb;

use crate::key::Table;

/// One write of a batch: a put (`Some`) or a delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Write {
    pub fn put(table: Table, key: Vec<u8>, value: Vec<u8>) -> Write {
        Write {
            table,
            key,
            value: Some(value),
        }
    }

    pub fn delete(table: Table, key: Vec<u8>) -> Write {
        Write {
            table,
            key,
            value: None,
        }
    }
}

/// What went wrong inside an engine, sorted by what the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The files are damaged or not in a format this build reads.
    Damaged(String),
    /// Another process holds the store open.
    Locked(String),
    /// Reading or writing failed (disk full, permissions, I/O error).
    Io(String),
    /// The data directory was removed or replaced while open: writes would land in files
    /// no later start finds.
    Gone(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Damaged(s)
            | EngineError::Locked(s)
            | EngineError::Io(s)
            | EngineError::Gone(s) => f.write_str(s),
        }
    }
}

/// Visits one key-value pair of a scan; returns `false` to stop.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> bool;

/// An embedded ordered key-value store with atomic multi-table batches.
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs and reports ("fjall", "redb", "memory").
    fn name(&self) -> &'static str;

    /// Applies `batch` atomically. On return the writes are visible to reads and, where
    /// [`Engine::crash_safe_without_sync`] is true, in the operating system's hands (they
    /// survive the process being killed).
    fn write(&self, batch: &[Write]) -> Result<(), EngineError>;

    /// Makes everything written so far durable on the device (fsync).
    fn sync(&self) -> Result<(), EngineError>;

    /// Called once when the store closes, after the last write: make everything durable
    /// and leave the files so that the next open is quick.
    fn close(&self) -> Result<(), EngineError> {
        self.sync()
    }

    /// True when [`Engine::write`] alone survives a process crash (fjall hands its journal
    /// to the OS; redb's non-durable commits are lost with the process).
    fn crash_safe_without_sync(&self) -> bool;

    /// Reads one value.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Visits, in key order, the pairs whose key starts with `prefix` and is at least
    /// `start` (pass `prefix` as `start` to read them all).
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        visit: Visit<'_>,
    ) -> Result<(), EngineError>;

    /// The greatest key of a table.
    fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, EngineError>;

    /// Fails once the engine's files are no longer where it opened them (the data
    /// directory was removed or replaced). Cheap: the writer calls it before each batch
    /// and about once a second while idle.
    fn check_location(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Housekeeping the writer runs about once a second while idle.
    fn tick(&self) {}
}
