//! The error type of the log engine and small helpers to attach paths to I/O errors.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the log engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("offset {offset} is below the log start {start}")]
    OffsetBelowStart { offset: u64, start: u64 },
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { size: u64, limit: u32 },
    #[error("empty append")]
    EmptyAppend,
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        position: u64,
        reason: String,
    },
    #[error("the log directory {0} is locked by another process")]
    Locked(std::path::PathBuf),
    #[error("the log is closed")]
    Closed,
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

pub(crate) type Result<T, E = LogError> = std::result::Result<T, E>;

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        LogError::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}

/// Attaches the path of the file an I/O error happened on.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| LogError::io(path, source))
    }
}
