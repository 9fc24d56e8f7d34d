//! The store's errors. Each names the store (directory) and, for damage, the table and
//! key or what the engine found, so an operator knows what to check or move aside.

use crate::engine::EngineError;
use std::path::PathBuf;

/// What went wrong. `Clone` because one failed group commit fails every ticket in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The files are damaged or in a format this build cannot read.
    #[error(
        "the store in {path} is damaged: {what}. Run `midge store check` for a full report; \
         `midge store repair` moves the damaged files aside (keeping them) and starts a \
         fresh store with everything that can still be read"
    )]
    Damaged { path: PathBuf, what: String },
    /// Another process has the store open.
    #[error("the store in {path} is in use by another process ({what})")]
    Locked { path: PathBuf, what: String },
    /// The disk refused a read or write.
    #[error("I/O error on the store in {path}: {what}")]
    Io { path: PathBuf, what: String },
    /// The data directory was removed or replaced while the store was open.
    #[error("{what}")]
    Gone { path: PathBuf, what: String },
    /// The store's writer stopped after an earlier failure, or the store was closed.
    #[error("the store in {path} no longer accepts writes: {what}")]
    Closed { path: PathBuf, what: String },
}

impl StoreError {
    /// The store's directory (or label).
    pub fn path(&self) -> &std::path::Path {
        match self {
            StoreError::Damaged { path, .. }
            | StoreError::Locked { path, .. }
            | StoreError::Io { path, .. }
            | StoreError::Gone { path, .. }
            | StoreError::Closed { path, .. } => path,
        }
    }

    pub(crate) fn engine(path: &std::path::Path, e: EngineError) -> StoreError {
        let path = path.to_path_buf();
        match e {
            EngineError::Damaged(what) => StoreError::Damaged { path, what },
            EngineError::Locked(what) => StoreError::Locked { path, what },
            EngineError::Io(what) => StoreError::Io { path, what },
            EngineError::Gone(what) => StoreError::Gone { path, what },
        }
    }

    pub(crate) fn damaged(path: &std::path::Path, what: impl Into<String>) -> StoreError {
        StoreError::Damaged {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}
