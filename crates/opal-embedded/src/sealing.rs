//! What `meta.redb` holds about messages, protected when encryption is on: row values that can
//! carry message content are sealed, dedup ids are stored as keyed tags, and the store records
//! which keys wrote to it so that a wrong or missing key stops the open instead of a read.

use opal_log::{DecryptFailure, Keyring, sealed_value_key};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::EmbeddedError;

/// Settings entry per key that was ever current here: `<prefix><key id>` → a value sealed
/// with that key, which opens only with the same key.
pub(crate) const KEY_CHECK_PREFIX: &str = "encryption_key_check.";
const KEY_CHECK_AAD: &[u8] = b"opal/v1/key-check";
/// Stored dedup keys made from a tag start with this character, which no tag-less lookup of a
/// plaintext dedup id written before encryption was on is ever likely to begin with.
const TAG_MARK: char = '\u{1}';

/// The encryption side of the metadata store: a no-op without keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sealing {
    keys: Option<Keyring>,
}

/// Associated data naming where a value is stored (table and row key), length-prefixed so that
/// different rows can never give the same bytes.
pub(crate) fn row_aad(table: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    for part in std::iter::once(table.as_bytes()).chain(parts.iter().copied()) {
        aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

fn failed(what: &str, failure: DecryptFailure) -> EmbeddedError {
    EmbeddedError::Keys(format!("cannot decrypt {what}: {failure}"))
}

impl Sealing {
    pub(crate) fn new(keys: Option<Keyring>) -> Self {
        Sealing { keys }
    }

    /// The stored form of a row: JSON, sealed when encryption is on.
    pub(crate) fn encode<T: Serialize>(
        &self,
        aad: &[u8],
        row: &T,
    ) -> Result<Vec<u8>, EmbeddedError> {
        let json =
            serde_json::to_vec(row).map_err(|e| EmbeddedError::CorruptMeta(e.to_string()))?;
        match &self.keys {
            None => Ok(json),
            Some(keys) => Ok(keys.seal_value(aad, &json)?),
        }
    }

    /// Reads a row stored by `encode`, sealed or (written before encryption was on) not.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        what: &str,
        aad: &[u8],
        bytes: &[u8],
    ) -> Result<T, EmbeddedError> {
        let opened;
        let json = match (sealed_value_key(bytes), &self.keys) {
            (None, _) => bytes,
            (Some(key_id), None) => return Err(failed(what, DecryptFailure::NoKeys { key_id })),
            (Some(_), Some(keys)) => {
                opened = keys.open_value(aad, bytes).map_err(|f| failed(what, f))?;
                &opened[..]
            }
        };
        serde_json::from_slice(json).map_err(|e| EmbeddedError::CorruptMeta(format!("{what}: {e}")))
    }

    /// The key a dedup id is stored under from now on: a tag under the current key, or the id
    /// itself without encryption.
    pub(crate) fn dedup_key(&self, id: &str) -> String {
        match &self.keys {
            None => id.to_owned(),
            Some(keys) => tag_key(keys.lookup_tag(id.as_bytes())),
        }
    }

    /// Every key a dedup id may be stored under, most likely first: its tag under each key
    /// (one may have been current when it was stored), then the id itself (stored before
    /// encryption was turned on).
    pub(crate) fn dedup_lookup_keys(&self, id: &str) -> Vec<String> {
        let mut keys: Vec<String> = match &self.keys {
            None => Vec::new(),
            Some(keys) => keys
                .lookup_tags(id.as_bytes())
                .into_iter()
                .map(tag_key)
                .collect(),
        };
        keys.push(id.to_owned());
        keys
    }

    /// Checks the keys against the ones recorded in the store (`recorded`: key id and check
    /// value from the settings); returns the entry to record for the current key if it is new.
    /// Fails when data here was written with a key that is missing or different, or with
    /// encryption while no keys are given.
    pub(crate) fn check_recorded_keys(
        &self,
        recorded: &[(u16, Vec<u8>)],
    ) -> Result<Option<(String, Vec<u8>)>, EmbeddedError> {
        let Some(keys) = &self.keys else {
            if recorded.is_empty() {
                return Ok(None);
            }
            let ids: Vec<u16> = recorded.iter().map(|(id, _)| *id).collect();
            return Err(EmbeddedError::Keys(format!(
                "this data directory holds data encrypted with key ids {ids:?}, but no \
                 encryption keys were given; open it with its key file"
            )));
        };
        let available = keys.key_ids();
        let missing: Vec<u16> = recorded
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !available.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(EmbeddedError::Keys(format!(
                "data in this directory was written with encryption key ids {missing:?}, which \
                 the given keys do not include (they have {available:?}); every key that was \
                 ever current must stay in the key file"
            )));
        }
        for (id, check) in recorded {
            if let Err(failure) = keys.open_value(KEY_CHECK_AAD, check) {
                return Err(EmbeddedError::Keys(match failure {
                    DecryptFailure::NotAuthentic { .. } => format!(
                        "encryption key id {id} in the key file is not the key that data in this \
                         directory was written with"
                    ),
                    other => format!("the record of encryption key id {id} is unusable: {other}"),
                }));
            }
        }
        let current = keys.current_id();
        if recorded.iter().any(|(id, _)| *id == current) {
            return Ok(None);
        }
        let check = keys.seal_value(KEY_CHECK_AAD, b"")?;
        Ok(Some((format!("{KEY_CHECK_PREFIX}{current}"), check)))
    }
}

fn tag_key((key_id, tag): (u16, [u8; opal_log::LOOKUP_TAG_LEN])) -> String {
    let mut out = format!("{TAG_MARK}{key_id}:");
    for byte in tag {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use opal_log::Zeroizing;

    use super::*;

    fn sealing(keys: &[(u16, u8)], current: u16) -> Sealing {
        Sealing::new(Some(
            Keyring::new(
                keys.iter()
                    .map(|&(id, fill)| (id, Zeroizing::new([fill; 32]))),
                current,
            )
            .unwrap(),
        ))
    }

    #[test]
    fn rows_are_sealed_and_bound_to_their_place() {
        let s = sealing(&[(1, 1)], 1);
        let aad = row_aad("retries", &[b"sub", &7u64.to_le_bytes()]);
        let stored = s
            .encode(&aad, &serde_json::json!({"key": "ORDER-KEY"}))
            .unwrap();
        assert!(!stored.windows(9).any(|w| w == b"ORDER-KEY"));
        let back: serde_json::Value = s.decode("retry", &aad, &stored).unwrap();
        assert_eq!(back["key"], "ORDER-KEY");
        let elsewhere = row_aad("retries", &[b"sub", &8u64.to_le_bytes()]);
        let err = s
            .decode::<serde_json::Value>("retry", &elsewhere, &stored)
            .unwrap_err();
        assert!(err.to_string().contains("key id 1"), "{err}");
        // Rows written before encryption was turned on still read.
        let plain: serde_json::Value = s.decode("retry", &aad, b"{\"key\":null}").unwrap();
        assert_eq!(plain["key"], serde_json::Value::Null);
        // Without keys, a sealed row is an error, not garbage.
        let err = Sealing::default()
            .decode::<serde_json::Value>("retry", &aad, &stored)
            .unwrap_err();
        assert!(err.to_string().contains("no encryption keys"), "{err}");
    }

    #[test]
    fn dedup_ids_become_tags_found_under_every_key() {
        let old = sealing(&[(1, 1)], 1);
        let rotated = sealing(&[(1, 1), (2, 2)], 2);
        let stored = old.dedup_key("invoice-SECRET");
        assert!(
            !stored.contains("SECRET") && stored.starts_with('\u{1}'),
            "{stored:?}"
        );
        let candidates = rotated.dedup_lookup_keys("invoice-SECRET");
        assert_eq!(candidates.len(), 3);
        assert_eq!(candidates[0], rotated.dedup_key("invoice-SECRET"));
        assert_eq!(candidates[1], stored);
        assert_eq!(candidates[2], "invoice-SECRET");
        assert_eq!(Sealing::default().dedup_key("x"), "x");
        assert_eq!(Sealing::default().dedup_lookup_keys("x"), vec!["x"]);
    }

    #[test]
    fn recorded_keys_catch_missing_wrong_and_absent_keys() {
        let first = sealing(&[(1, 1)], 1);
        let (name, check) = first.check_recorded_keys(&[]).unwrap().unwrap();
        assert_eq!(name, "encryption_key_check.1");
        let recorded = vec![(1u16, check)];
        assert_eq!(first.check_recorded_keys(&recorded).unwrap(), None);
        let (name, check2) = sealing(&[(1, 1), (2, 2)], 2)
            .check_recorded_keys(&recorded)
            .unwrap()
            .unwrap();
        assert_eq!(name, "encryption_key_check.2");
        let both = vec![recorded[0].clone(), (2u16, check2)];
        for (s, expected) in [
            (sealing(&[(2, 2)], 2), "key ids [1]"),
            (
                sealing(&[(1, 9), (2, 2)], 2),
                "key id 1 in the key file is not the key",
            ),
            (Sealing::default(), "no encryption keys were given"),
        ] {
            let err = s.check_recorded_keys(&both).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        assert_eq!(Sealing::default().check_recorded_keys(&[]).unwrap(), None);
    }
}
