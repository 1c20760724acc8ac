//! API key secrets: `opal_<key id>_<secret>`, shown once, stored as SHA-256.
//!
//! The secret is 32 random bytes (base64url, 43 characters): 256 bits cannot be guessed, so a
//! fast hash is enough and checking a key costs microseconds. The key id in the text lets the
//! server find the record first and compare one hash, in constant time. The `opal_` prefix lets
//! secret scanners recognise a leaked key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use opal_core::tenancy::KeyId;
use sha2::{Digest, Sha256};

const PREFIX: &str = "opal_";
const SECRET_BYTES: usize = 32;
/// base64url without padding of 32 bytes.
const SECRET_CHARS: usize = 43;
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A freshly made key: its id, the whole text (given to the caller once) and its hash (kept).
pub(crate) struct NewSecret {
    pub(crate) id: KeyId,
    pub(crate) text: String,
    pub(crate) hash: [u8; 32],
}

// By hand: the secret stays out of logs.
impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NewSecret {
    /// A new key whose id `taken` does not know.
    pub(crate) fn generate(taken: impl Fn(&KeyId) -> bool) -> Self {
        let id = loop {
            let raw: [u8; KeyId::LEN] = rand::random();
            let text: String = raw
                .iter()
                .map(|b| ID_ALPHABET[usize::from(*b) % ID_ALPHABET.len()] as char)
                .collect();
            let id = KeyId::new(text).expect("generated from the id alphabet");
            if !taken(&id) {
                break id;
            }
        };
        let secret: [u8; SECRET_BYTES] = rand::random();
        let text = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
        let hash = Sha256::digest(text.as_bytes()).into();
        NewSecret { id, text, hash }
    }
}

/// The key id of a presented key, if it has the shape of one of ours.
pub(crate) fn parse_key(token: &str) -> Option<KeyId> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_at_checked(KeyId::LEN)?;
    let secret = secret.strip_prefix('_')?;
    if secret.len() != SECRET_CHARS
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    KeyId::new(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_to_their_id_and_hash_to_what_is_stored() {
        let key = NewSecret::generate(|_| false);
        assert!(key.text.starts_with("opal_"));
        assert_eq!(key.text.len(), 5 + 12 + 1 + 43);
        assert_eq!(parse_key(&key.text), Some(key.id.clone()));
        let hash: [u8; 32] = Sha256::digest(key.text.as_bytes()).into();
        assert_eq!(hash, key.hash);
        assert!(!format!("{key:?}").contains(&key.text));
    }

    #[test]
    fn two_keys_differ_and_a_taken_id_is_not_reused() {
        let first = NewSecret::generate(|_| false);
        let second = NewSecret::generate(|id| *id == first.id);
        assert_ne!(first.id, second.id);
        assert_ne!(first.text, second.text);
    }

    #[test]
    fn malformed_keys_have_no_id() {
        let good = NewSecret::generate(|_| false).text;
        for bad in [
            "",
            "opal_",
            "opal_abc",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen("opal_", "opql_", 1),
            &good.replacen('_', "-", 2),
            "admin-key",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
