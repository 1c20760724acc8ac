//! Settings of the embedded backend.

use std::path::PathBuf;

use opal_core::{Clock, Limits};
use opal_log::{FsyncPolicy, Keyring};

/// Where and how the embedded backend stores data.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub limits: Limits,
    /// Size at which a partition's active segment is rolled.
    pub segment_max_bytes: u64,
    /// The time source of every timer (the system clock unless a test drives it).
    pub clock: Clock,
    /// Encryption at rest: log batches and the metadata rows that hold message content are
    /// sealed with the current key. `None` (the default) stores plaintext; a directory that
    /// holds encrypted data then refuses to open.
    pub encryption: Option<Keyring>,
    /// How long a task (and its result) is kept after its last change.
    pub task_ttl_ms: u64,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            limits: Limits::default(),
            segment_max_bytes: 128 * 1024 * 1024,
            clock: Clock::system(),
            encryption: None,
            task_ttl_ms: opal_core::task::DEFAULT_RESULT_TTL_MS,
        }
    }
}
