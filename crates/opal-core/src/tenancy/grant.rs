//! Grants: an app's right to a topic another app owns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{AppName, BrokerError, TopicName};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Create subscriptions on the topic and receive its messages through them.
    Subscribe,
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Right::Subscribe => f.write_str("subscribe"),
        }
    }
}

impl FromStr for Right {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "subscribe" => Ok(Right::Subscribe),
            _ => Err(BrokerError::invalid(
                "rights",
                format!("unknown right {s:?}; the rights are: subscribe"),
            )),
        }
    }
}

/// `app` may do `rights` on `topic` (a qualified name, owned by another app).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub topic: TopicName,
    pub app: AppName,
    pub rights: Vec<Right>,
    pub created_at_ms: i64,
}
