//! Standard Webhooks signatures: `whsec_` secrets, the `webhook-signature` header, and its check.
//!
//! The signed content is `{id}.{timestamp}.{body}` and the key is the base64-decoded part of the
//! secret after `whsec_` (<https://www.standardwebhooks.com>), so receivers can verify with any
//! Standard Webhooks library.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// Reads secrets the way the reference libraries do (Python's `b64decode`): padding optional,
/// and unused bits of the last character ignored rather than refused.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng as _;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::DispatchError;

/// Header carrying the message id (the same on every attempt, so receivers can deduplicate).
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header carrying the Unix time in seconds at which the attempt was signed.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix every secret carries, so secret scanners and humans recognise one.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key accepted: below 192 bits a leaked signature could be brute-forced.
pub const MIN_KEY_BYTES: usize = 24;
/// Longest key accepted: HMAC-SHA256 hashes longer keys down to 32 bytes anyway, and
/// Standard Webhooks libraries reject longer ones.
pub const MAX_KEY_BYTES: usize = 64;
/// Length of a key made by [`SigningSecret::generate`].
pub const GENERATED_KEY_BYTES: usize = 32;
/// The clock skew Standard Webhooks receivers tolerate by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// An endpoint's signing secret, `whsec_<base64 key>`.
///
/// `Debug` shows only the key length; the secret itself is printed only through `Display` and
/// [`SigningSecret::as_str`], which exist to show it once to its owner.
#[derive(Clone)]
pub struct SigningSecret {
    // Keyed once at parse time: every signature clones it instead of re-hashing the key.
    mac: Hmac<Sha256>,
    key_len: usize,
    text: Zeroizing<String>,
}

impl SigningSecret {
    /// Parses `whsec_<base64>`. Padding may be left off; anything else is refused.
    pub fn parse(text: &str) -> Result<Self, DispatchError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(DispatchError::InvalidSecret("it must start with whsec_"))?;
        let key =
            Zeroizing::new(LENIENT.decode(encoded).map_err(|_| {
                DispatchError::InvalidSecret("the part after whsec_ is not base64")
            })?);
        Self::from_key(key)
    }

    /// A fresh secret of 32 bytes from the operating system-seeded generator.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new(vec![0u8; GENERATED_KEY_BYTES]);
        rand::rng().fill_bytes(&mut key);
        Self::from_key(key)
            .unwrap_or_else(|_| unreachable!("{GENERATED_KEY_BYTES} bytes is within the bounds"))
    }

    fn from_key(key: Zeroizing<Vec<u8>>) -> Result<Self, DispatchError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(DispatchError::InvalidSecret(
                "the key is shorter than 24 bytes",
            ));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(DispatchError::InvalidSecret(
                "the key is longer than 64 bytes",
            ));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| DispatchError::InvalidSecret("HMAC-SHA256 refused the key"))?;
        // Re-encoded with padding so that every spelling of one key prints the same.
        let text = Zeroizing::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&*key)));
        Ok(SigningSecret {
            mac,
            key_len: key.len(),
            text,
        })
    }

    /// The canonical `whsec_…` form (standard base64 with padding).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn tag(&self, id: &str, timestamp_s: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Display for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(whsec_<redacted {} bytes>)", self.key_len)
    }
}

impl std::str::FromStr for SigningSecret {
    type Err = DispatchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The `webhook-signature` header value: one `v1,<base64 HMAC-SHA256>` per secret, separated by
/// spaces, so that during a rotation receivers holding either the old or the new secret accept
/// the message. With no secrets the value is empty.
pub fn signature_header(
    id: &str,
    timestamp_s: i64,
    body: &[u8],
    secrets: &[SigningSecret],
) -> String {
    let mut header = String::with_capacity(secrets.len() * 48);
    for secret in secrets {
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        STANDARD.encode_string(secret.tag(id, timestamp_s, body), &mut header);
    }
    header
}

/// Checks a received webhook the way a Standard Webhooks receiver does: the timestamp must be
/// within `tolerance` of `now_s` (either way, which bounds replays), and one of the `v1`
/// signatures in `signature_header` must match. Signatures of other versions are skipped.
/// The comparison is constant-time so a forger learns nothing from response times.
pub fn verify(
    secret: &SigningSecret,
    id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_s: i64,
    tolerance: Duration,
) -> Result<(), DispatchError> {
    let timestamp_s: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| DispatchError::SignatureRejected("the timestamp is not an integer"))?;
    let tolerance_s = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if timestamp_s < now_s.saturating_sub(tolerance_s) {
        return Err(DispatchError::SignatureRejected("the timestamp is too old"));
    }
    if timestamp_s > now_s.saturating_add(tolerance_s) {
        return Err(DispatchError::SignatureRejected(
            "the timestamp is in the future",
        ));
    }
    let expected = secret.tag(id, timestamp_s, body);
    let matched = signature_header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .fold(false, |found, candidate| {
            // No early exit: every candidate is compared, so timing does not reveal which matched.
            found | bool::from(candidate.as_slice().ct_eq(&expected))
        });
    if matched {
        Ok(())
    } else {
        Err(DispatchError::SignatureRejected("no v1 signature matches"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Produced with the Python `standardwebhooks` 1.1.0 package (PyPI):
    //   Webhook(SECRET).sign(ID, datetime.fromtimestamp(1700000000, tz=timezone.utc), BODY)
    // for each secret below; the two key byte strings are bytes(range(32)) and bytes(range(100, 124)).
    const SECRET_A: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const SECRET_B: &str = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7";
    const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    const TIMESTAMP: i64 = 1_700_000_000;
    const BODY: &str = r#"{"type":"order.created","data":{"id":42,"note":"héllo"}}"#;
    const SIG_A: &str = "v1,jb+hFOismHrc3QE1Djfuo3leKC6IYKuLLIsr/5mTrIk=";
    const SIG_B: &str = "v1,zskWoyT0zwStGraFIv/DyUmOm85T5zygv3qZO87qSAI=";

    fn secret(text: &str) -> SigningSecret {
        SigningSecret::parse(text).unwrap()
    }

    #[test]
    fn matches_the_python_reference_vector() {
        let header = signature_header(ID, TIMESTAMP, BODY.as_bytes(), &[secret(SECRET_A)]);
        assert_eq!(header, SIG_A);
        let header = signature_header(ID, TIMESTAMP, BODY.as_bytes(), &[secret(SECRET_B)]);
        assert_eq!(header, SIG_B);
    }

    #[test]
    fn one_signature_per_secret_during_rotation() {
        let secrets = [secret(SECRET_A), secret(SECRET_B)];
        let header = signature_header(ID, TIMESTAMP, BODY.as_bytes(), &secrets);
        assert_eq!(header, format!("{SIG_A} {SIG_B}"));
        assert_eq!(signature_header(ID, TIMESTAMP, b"", &[]), "");
    }

    #[test]
    fn parse_accepts_unpadded_and_prints_canonically() {
        let padded = secret(SECRET_A);
        let unpadded = secret(SECRET_A.trim_end_matches('='));
        assert_eq!(unpadded.as_str(), SECRET_A);
        assert_eq!(padded.to_string(), SECRET_A);
        let header = signature_header(ID, TIMESTAMP, BODY.as_bytes(), &[unpadded]);
        assert_eq!(header, SIG_A);
    }

    #[test]
    fn parse_ignores_unused_bits_of_the_last_character_like_the_reference_libraries() {
        // 24 bytes and one more in "AB" (whose low bits "B" sets are unused).
        let text = format!("whsec_{}AB==", "A".repeat(32));
        let secret = SigningSecret::parse(&text).expect("lenient like Python's b64decode");
        assert_eq!(secret.as_str(), format!("whsec_{}AA==", "A".repeat(32)));
    }

    #[test]
    fn parse_refuses_anything_else() {
        let cases = [
            "",
            "whsec_",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "WHSEC_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "whsec AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
            "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8-",
            "whsec_!!!!",
        ];
        for case in cases {
            assert!(
                matches!(
                    SigningSecret::parse(case),
                    Err(DispatchError::InvalidSecret(_))
                ),
                "{case:?} was accepted"
            );
        }
    }

    #[test]
    fn key_length_bounds() {
        let with_len = |n: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
        assert!(SigningSecret::parse(&with_len(23)).is_err());
        assert!(SigningSecret::parse(&with_len(24)).is_ok());
        assert!(SigningSecret::parse(&with_len(64)).is_ok());
        assert!(SigningSecret::parse(&with_len(65)).is_err());
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let a = SigningSecret::generate();
        let b = SigningSecret::generate();
        assert_ne!(a.as_str(), b.as_str());
        assert!(a.as_str().starts_with(SECRET_PREFIX));
        let reparsed = secret(a.as_str());
        assert_eq!(reparsed.as_str(), a.as_str());
        assert_eq!(reparsed.key_len, GENERATED_KEY_BYTES);
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let s = secret(SECRET_A);
        let debug = format!("{s:?}");
        assert!(!debug.contains("AAECAwQF"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }

    #[test]
    fn verify_accepts_the_reference_signature_among_others() {
        let s = secret(SECRET_A);
        let ts = TIMESTAMP.to_string();
        let tol = DEFAULT_TOLERANCE;
        let body = BODY.as_bytes();
        verify(&s, ID, &ts, SIG_A, body, TIMESTAMP, tol).unwrap();
        // Rotation: the matching signature may come second, after one of another secret.
        verify(
            &s,
            ID,
            &ts,
            &format!("{SIG_B} {SIG_A}"),
            body,
            TIMESTAMP,
            tol,
        )
        .unwrap();
        // Unknown versions and junk are skipped, not fatal.
        let mixed = format!("v2,abc v1,not-base64!! {SIG_A}");
        verify(&s, ID, &ts, &mixed, body, TIMESTAMP, tol).unwrap();
    }

    #[test]
    fn verify_rejects_tampering() {
        let s = secret(SECRET_A);
        let ts = TIMESTAMP.to_string();
        let tol = DEFAULT_TOLERANCE;
        let body = BODY.as_bytes();
        let rejected = |r: Result<(), DispatchError>| {
            assert!(
                matches!(r, Err(DispatchError::SignatureRejected(_))),
                "{r:?}"
            )
        };
        rejected(verify(&s, ID, &ts, SIG_B, body, TIMESTAMP, tol));
        rejected(verify(&s, "msg_other", &ts, SIG_A, body, TIMESTAMP, tol));
        rejected(verify(&s, ID, &ts, SIG_A, b"{}", TIMESTAMP, tol));
        rejected(verify(&s, ID, "1700000001", SIG_A, body, TIMESTAMP, tol));
        rejected(verify(&s, ID, &ts, "", body, TIMESTAMP, tol));
        rejected(verify(&s, ID, &ts, "v1,", body, TIMESTAMP, tol));
        rejected(verify(&s, ID, "soon", SIG_A, body, TIMESTAMP, tol));
    }

    #[test]
    fn verify_enforces_the_tolerance_both_ways() {
        let s = secret(SECRET_A);
        let ts = TIMESTAMP.to_string();
        let tol = Duration::from_secs(300);
        let body = BODY.as_bytes();
        verify(&s, ID, &ts, SIG_A, body, TIMESTAMP + 300, tol).unwrap();
        verify(&s, ID, &ts, SIG_A, body, TIMESTAMP - 300, tol).unwrap();
        assert!(verify(&s, ID, &ts, SIG_A, body, TIMESTAMP + 301, tol).is_err());
        assert!(verify(&s, ID, &ts, SIG_A, body, TIMESTAMP - 301, tol).is_err());
    }
}
