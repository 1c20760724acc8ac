//! Encryption keys for data at rest: the keys by id, which one is current, and what they seal
//! (record batches in place, small values for a metadata store, keyed lookup tags).
//!
//! Each key is never used directly: three subkeys are derived from it (HMAC-SHA256 of the key
//! over a fixed label), one per use, so that a batch, a value and a tag can never be mistaken
//! for one another even if their bytes happened to line up. Formats are in `docs/storage.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::MAX_BATCH_BYTES;
use crate::error::{DecryptFailure, LogError};

/// Length of a key in bytes (XChaCha20-Poly1305 takes 256-bit keys).
pub const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;
/// Bytes a sealed batch has beyond the plaintext one: a nonce before the records, a tag after.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a lookup tag.
pub const LOOKUP_TAG_LEN: usize = 16;

/// First byte of a sealed value: no JSON document (nor UTF-8 text) starts with it, so a store
/// can tell sealed values from the plaintext ones written before encryption was turned on.
const VALUE_MARK: u8 = 0;
const VALUE_VERSION: u8 = 1;
/// `mark u8 | version u8 | key id u16 | nonce`, then ciphertext and tag.
const VALUE_HEADER_LEN: usize = 4 + NONCE_LEN;

const BATCH_LABEL: &[u8] = b"opal/v1/log-batch";
const VALUE_LABEL: &[u8] = b"opal/v1/meta-value";
const TAG_LABEL: &[u8] = b"opal/v1/lookup-tag";

/// The subkeys of one key.
struct Key {
    batch: XChaCha20Poly1305,
    value: XChaCha20Poly1305,
    tag: Hmac<Sha256>,
}

struct Inner {
    keys: BTreeMap<u16, Key>,
    current: u16,
}

/// The keys that data at rest is sealed with, by key id; new data is sealed with the current
/// one, and data sealed with any of them can be opened. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keyring {
    // Key ids only: key material never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.inner.keys.keys().collect::<Vec<_>>())
            .field("current", &self.inner.current)
            .finish()
    }
}

fn derive(key: &[u8; KEY_LEN], label: &[u8]) -> Result<Zeroizing<[u8; 32]>, LogError> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .map_err(|_| LogError::InvalidConfig("HMAC refused a 32-byte key".into()))?;
    mac.update(label);
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

fn cipher(key: &[u8; 32]) -> Result<XChaCha20Poly1305, LogError> {
    XChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| LogError::InvalidConfig("XChaCha20-Poly1305 refused a 32-byte key".into()))
}

impl Key {
    fn new(key: &[u8; KEY_LEN]) -> Result<Self, LogError> {
        let tag = derive(key, TAG_LABEL)?;
        Ok(Key {
            batch: cipher(&*derive(key, BATCH_LABEL)?)?,
            value: cipher(&*derive(key, VALUE_LABEL)?)?,
            tag: <Hmac<Sha256> as KeyInit>::new_from_slice(tag.as_slice())
                .map_err(|_| LogError::InvalidConfig("HMAC refused a 32-byte key".into()))?,
        })
    }
}

/// A fresh random nonce. 192 bits drawn at random never repeat in practice (the chance of any
/// repeat after 2^64 seals is about 2^-65), so no counter has to survive restarts.
fn nonce() -> XNonce {
    let mut nonce = XNonce::default();
    rand::fill(nonce.as_mut_slice());
    nonce
}

impl Keyring {
    /// A key ring of `keys` (id, key bytes) whose key `current` seals new data. Key ids are 1
    /// to 65535 (0 means "not encrypted" on disk); ids must be distinct.
    pub fn new(
        keys: impl IntoIterator<Item = (u16, Zeroizing<[u8; KEY_LEN]>)>,
        current: u16,
    ) -> Result<Keyring, LogError> {
        let invalid = |msg: String| Err(LogError::InvalidConfig(msg));
        let mut map = BTreeMap::new();
        for (id, bytes) in keys {
            if id == 0 {
                return invalid("encryption key id 0 is reserved; use 1 to 65535".into());
            }
            if map.insert(id, Key::new(&bytes)?).is_some() {
                return invalid(format!("encryption key id {id} is given twice"));
            }
        }
        if !map.contains_key(&current) {
            return invalid(format!(
                "the current encryption key id {current} is not among the keys"
            ));
        }
        Ok(Keyring {
            inner: Arc::new(Inner { keys: map, current }),
        })
    }

    /// The id of the key that seals new data.
    pub fn current_id(&self) -> u16 {
        self.inner.current
    }

    /// Every key id, ascending.
    pub fn key_ids(&self) -> Vec<u16> {
        self.inner.keys.keys().copied().collect()
    }

    fn key(&self, id: u16) -> Result<&Key, DecryptFailure> {
        self.inner
            .keys
            .get(&id)
            .ok_or(DecryptFailure::UnknownKey { key_id: id })
    }

    fn current(&self) -> &Key {
        // `new` checked that the current id is in the map.
        &self.inner.keys[&self.inner.current]
    }

    /// Seals `body` in place with the current key's batch subkey under a fresh nonce; returns
    /// the nonce and the tag. Fails only for a body of 256 GiB or more, far above any batch limit.
    pub(crate) fn seal_batch(
        &self,
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<([u8; NONCE_LEN], [u8; TAG_LEN]), &'static str> {
        let nonce = nonce();
        let tag = self
            .current()
            .batch
            .encrypt_inout_detached(&nonce, aad, body.into())
            .map_err(|_| "batch too large to encrypt")?;
        Ok((nonce.into(), tag.into()))
    }

    /// Opens a batch body sealed with key `key_id`, in place.
    pub(crate) fn open_batch(
        &self,
        key_id: u16,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), DecryptFailure> {
        self.key(key_id)?
            .batch
            .decrypt_inout_detached(&XNonce::from(*nonce), aad, body.into(), &Tag::from(*tag))
            .map_err(|_| DecryptFailure::NotAuthentic { key_id })
    }

    /// Seals a small value with the current key. `aad` binds it to where it is stored (its
    /// table and row key), so a sealed value copied to another row does not open there.
    /// Values larger than `MAX_BATCH_BYTES` are refused with `BatchTooLarge`.
    pub fn seal_value(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, LogError> {
        let too_large = || LogError::BatchTooLarge {
            size: plaintext.len() as u64,
            limit: MAX_BATCH_BYTES,
        };
        if plaintext.len() > MAX_BATCH_BYTES as usize {
            return Err(too_large());
        }
        let nonce = nonce();
        let mut out = Vec::with_capacity(VALUE_HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VALUE_MARK);
        out.push(VALUE_VERSION);
        out.extend_from_slice(&self.inner.current.to_le_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .current()
            .value
            .encrypt_inout_detached(&nonce, aad, (&mut out[VALUE_HEADER_LEN..]).into())
            .map_err(|_| too_large())?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a value made by `seal_value` (with any key of the ring) under the same `aad`.
    pub fn open_value(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, DecryptFailure> {
        if sealed.len() < VALUE_HEADER_LEN + TAG_LEN
            || sealed[0] != VALUE_MARK
            || sealed[1] != VALUE_VERSION
        {
            return Err(DecryptFailure::Malformed);
        }
        let key_id = u16::from_le_bytes([sealed[2], sealed[3]]);
        let key = self.key(key_id)?;
        let nonce = XNonce::try_from(&sealed[4..VALUE_HEADER_LEN])
            .map_err(|_| DecryptFailure::Malformed)?;
        let (body, tag) =
            sealed[VALUE_HEADER_LEN..].split_at(sealed.len() - VALUE_HEADER_LEN - TAG_LEN);
        let tag = Tag::try_from(tag).map_err(|_| DecryptFailure::Malformed)?;
        let mut plaintext = body.to_vec();
        key.value
            .decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag)
            .map_err(|_| DecryptFailure::NotAuthentic { key_id })?;
        Ok(plaintext)
    }

    /// A keyed hash of `data` under the current key: lets a store index by a secret (a dedup
    /// id) without writing it down. Equal inputs give equal tags under the same key only.
    pub fn lookup_tag(&self, data: &[u8]) -> (u16, [u8; LOOKUP_TAG_LEN]) {
        (self.inner.current, tag_with(self.current(), data))
    }

    /// `lookup_tag` under every key, current first: what to look for when an entry may have
    /// been stored while another key was current.
    pub fn lookup_tags(&self, data: &[u8]) -> Vec<(u16, [u8; LOOKUP_TAG_LEN])> {
        let mut tags = vec![self.lookup_tag(data)];
        tags.extend(
            self.inner
                .keys
                .iter()
                .rev()
                .filter(|(id, _)| **id != self.inner.current)
                .map(|(id, key)| (*id, tag_with(key, data))),
        );
        tags
    }
}

fn tag_with(key: &Key, data: &[u8]) -> [u8; LOOKUP_TAG_LEN] {
    let mut mac = key.tag.clone();
    mac.update(data);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; LOOKUP_TAG_LEN];
    tag.copy_from_slice(&full[..LOOKUP_TAG_LEN]);
    tag
}

/// Whether `bytes` is a value made by `seal_value` rather than a plaintext one (such as a JSON
/// row written before encryption was turned on); its key id when it is.
pub fn sealed_value_key(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [VALUE_MARK, _, lo, hi, ..] => Some(u16::from_le_bytes([*lo, *hi])),
        _ => None,
    }
}

#[cfg(test)]
#[path = "keyring_tests.rs"]
mod tests;
