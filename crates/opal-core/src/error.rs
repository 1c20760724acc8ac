//! The one error type of the broker core, shared by every backend.

/// What went wrong in a broker operation. Front doors map each variant to their own error form
/// (problem+json over HTTP), so variants name what failed, not which dependency failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    #[error("subscription `{0}` does not exist")]
    SubscriptionNotFound(String),
    #[error("app `{0}` does not exist")]
    AppNotFound(String),
    #[error("{kind} `{name}` already exists with different settings")]
    Conflict { kind: &'static str, name: String },
    #[error("{kind} `{name}` is in use by {by}")]
    InUse {
        kind: &'static str,
        name: String,
        by: String,
    },
    #[error("{kind} `{name}` is at revision {current}, not {expected}")]
    RevisionMismatch {
        kind: &'static str,
        name: String,
        expected: u64,
        current: u64,
    },
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("storage failure: {0}")]
    Storage(String),
}

impl BrokerError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        BrokerError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
