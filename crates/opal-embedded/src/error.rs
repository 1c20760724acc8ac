//! The embedded backend's error type.

use opal_core::BrokerError;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("log: {0}")]
    Log(#[from] opal_log::LogError),
    #[error("metadata store: {0}")]
    Meta(#[from] redb::Error),
    #[error("corrupt metadata: {0}")]
    CorruptMeta(String),
    #[error("i/o on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("storage is closed")]
    Closed,
    #[error("subscription `{0}` was deleted")]
    SubscriptionGone(String),
    #[error("background task failed: {0}")]
    Task(String),
    /// Encryption keys that do not fit the data: missing, different, or not given.
    #[error("encryption keys: {0}")]
    Keys(String),
}

impl EmbeddedError {
    pub(crate) fn meta(e: impl Into<redb::Error>) -> Self {
        EmbeddedError::Meta(e.into())
    }
}

impl From<EmbeddedError> for BrokerError {
    fn from(e: EmbeddedError) -> Self {
        match e {
            EmbeddedError::Log(opal_log::LogError::Closed) | EmbeddedError::Closed => {
                BrokerError::ShuttingDown
            }
            EmbeddedError::SubscriptionGone(name) => BrokerError::SubscriptionNotFound(name),
            other => BrokerError::Storage(other.to_string()),
        }
    }
}
