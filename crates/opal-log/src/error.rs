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
    /// Encrypted data that the key ring cannot open. Never a reason to truncate: the data may
    /// be fine and the keys wrong.
    #[error("cannot decrypt {location}: {failure}")]
    Decrypt {
        /// The file and byte position of the batch.
        location: String,
        failure: DecryptFailure,
    },
}

/// Why encrypted data could not be opened (in `LogError::Decrypt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptFailure {
    /// The data is encrypted but no encryption keys were given.
    NoKeys { key_id: u16 },
    /// The data was sealed with a key id that the key ring does not have.
    UnknownKey { key_id: u16 },
    /// The key ring has a key under that id, but the authentication tag does not verify: the
    /// key is not the one the data was sealed with, or the data was altered.
    NotAuthentic { key_id: u16 },
    /// Too short, or of an unknown format, to be sealed data.
    Malformed,
}

impl std::fmt::Display for DecryptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecryptFailure::NoKeys { key_id } => write!(
                f,
                "it is encrypted (key id {key_id}) but no encryption keys were given"
            ),
            DecryptFailure::UnknownKey { key_id } => write!(
                f,
                "it was encrypted with key id {key_id}, which is not among the encryption keys"
            ),
            DecryptFailure::NotAuthentic { key_id } => write!(
                f,
                "authentication with key id {key_id} failed: the key under that id is not the \
                 one it was encrypted with, or the data was altered"
            ),
            DecryptFailure::Malformed => f.write_str("it is not sealed data of a known format"),
        }
    }
}

pub(crate) type Result<T, E = LogError> = std::result::Result<T, E>;

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn decrypt(path: &Path, position: u64, failure: DecryptFailure) -> Self {
        LogError::Decrypt {
            location: format!("{} at byte {position}", path.display()),
            failure,
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
