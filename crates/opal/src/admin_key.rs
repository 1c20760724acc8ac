//! The bootstrap admin key: taken from the configuration, or generated once and kept only as a hash.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use opal_core::Broker;
use sha2::{Digest, Sha256};

/// How the admin key was settled on this start.
#[derive(Debug)]
pub(crate) enum AdminKey {
    /// Given by the operator (flag or environment).
    Configured([u8; 32]),
    /// Generated now; the secret is shown this once and never again.
    Generated { secret: String, hash: [u8; 32] },
    /// Generated on an earlier start; only its hash is known.
    Stored([u8; 32]),
}

impl AdminKey {
    pub(crate) fn hash(&self) -> [u8; 32] {
        match self {
            AdminKey::Configured(hash) | AdminKey::Stored(hash) => *hash,
            AdminKey::Generated { hash, .. } => *hash,
        }
    }
}

pub(crate) fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// 32 random bytes: a secret that cannot be guessed, so a fast hash is enough to store it.
fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("opal_admin_{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) async fn settle(
    configured: Option<&str>,
    broker: &dyn Broker,
) -> anyhow::Result<AdminKey> {
    if let Some(secret) = configured {
        anyhow::ensure!(
            secret.len() >= 16,
            "OPAL_ADMIN_KEY must be at least 16 characters long"
        );
        return Ok(AdminKey::Configured(sha256(secret)));
    }
    if let Some(hash) = broker
        .admin_key_hash()
        .await
        .context("reading the stored admin key")?
    {
        return Ok(AdminKey::Stored(hash));
    }
    let secret = generate();
    let hash = sha256(&secret);
    broker
        .set_admin_key_hash(hash)
        .await
        .context("storing the admin key hash")?;
    Ok(AdminKey::Generated { secret, hash })
}
