//! API keys: what is stored of them (never the secret) and when they are valid.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AppName, BrokerError};

use super::Scope;

/// A key's public id: 12 of `[a-z0-9]`, part of the secret's text (`opal_<id>_<secret>`), so a
/// presented key is looked up by id and only then compared, in constant time, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub const LEN: usize = 12;

    pub fn new(id: impl Into<String>) -> Result<Self, BrokerError> {
        let id = id.into();
        if id.len() == Self::LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            Ok(KeyId(id))
        } else {
            Err(BrokerError::invalid(
                "key",
                format!("a key id is {} of [a-z0-9]", Self::LEN),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = BrokerError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        KeyId::new(id)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An API key of an app, as stored: the SHA-256 of its secret, never the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: KeyId,
    pub app: AppName,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// SHA-256 of the whole key text (`opal_<id>_<secret>`).
    pub hash: [u8; 32],
    pub created_at_ms: i64,
    /// After this the key is refused.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked; refused from then on.
    pub revoked_at_ms: Option<i64>,
    /// The key this one replaced, when it was made by a rotation.
    pub rotated_from: Option<KeyId>,
    /// SHA-256 of the DER of a TLS client certificate that stands for this key: a request on a
    /// connection with that (verified) certificate and no `Authorization` header acts as it.
    #[serde(default)]
    pub client_certificate_sha256: Option<[u8; 32]>,
}

// By hand: the hash stays out of logs.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("app", &self.app)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("created_at_ms", &self.created_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .field("rotated_from", &self.rotated_from)
            .field(
                "client_certificate_sha256",
                &self.client_certificate_sha256.is_some(),
            )
            .finish_non_exhaustive()
    }
}

/// Whether a key may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl ApiKey {
    pub fn status(&self, now_ms: i64) -> KeyStatus {
        if self.revoked_at_ms.is_some_and(|at| at <= now_ms) {
            KeyStatus::Revoked
        } else if self.expires_at_ms.is_some_and(|at| at <= now_ms) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(expires: Option<i64>, revoked: Option<i64>) -> ApiKey {
        ApiKey {
            id: KeyId::new("abcdefghij01").unwrap(),
            app: AppName::new("acme").unwrap(),
            name: "ci".into(),
            scopes: vec![Scope::Manage],
            hash: [7; 32],
            created_at_ms: 0,
            expires_at_ms: expires,
            revoked_at_ms: revoked,
            rotated_from: None,
            client_certificate_sha256: None,
        }
    }

    #[test]
    fn status_follows_expiry_and_revocation() {
        assert_eq!(key(None, None).status(10), KeyStatus::Active);
        assert_eq!(key(Some(11), None).status(10), KeyStatus::Active);
        assert_eq!(key(Some(10), None).status(10), KeyStatus::Expired);
        assert_eq!(key(Some(100), Some(5)).status(10), KeyStatus::Revoked);
    }

    #[test]
    fn ids_are_twelve_lowercase_alphanumerics() {
        assert!(KeyId::new("abcdefghij01").is_ok());
        for bad in ["", "abc", "ABCDEFGHIJ01", "abcdefghij0_", "abcdefghij012"] {
            assert!(KeyId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_the_hash() {
        assert!(!format!("{:?}", key(None, None)).contains("hash"));
    }
}
