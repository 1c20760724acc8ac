//! Unit tests of sealed (encrypted) batches: round trips, key rotation, wrong and missing keys,
//! and tampering that keeps the checksum valid.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::keyring::Keyring;

fn ring(keys: &[(u16, u8)], current: u16) -> Keyring {
    Keyring::new(
        keys.iter()
            .map(|&(id, fill)| (id, zeroize::Zeroizing::new([fill; 32]))),
        current,
    )
    .unwrap()
}

fn record(ts: i64, key: &str, header: (&str, &str), value: &str) -> Record {
    Record {
        timestamp_ms: ts,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        headers: vec![(
            header.0.to_owned(),
            Bytes::copy_from_slice(header.1.as_bytes()),
        )],
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn sealed(records: &[Record], base: u64, keys: &Keyring) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_into(&mut buf, base, records, Some(keys)).unwrap();
    buf
}

fn decode(batch: &[u8], keys: Option<&Keyring>) -> Result<Vec<StoredRecord>, Reject> {
    let bytes = Bytes::copy_from_slice(batch);
    let header = check(&bytes)?;
    let mut out = Vec::new();
    decode_into(&bytes, &header, keys, 0, &mut out)?;
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Recomputes the CRC after a deliberate change, as an attacker with write access would.
fn fix_crc(batch: &mut [u8]) {
    let crc = batch_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_sealed_batch_round_trips_and_hides_every_field() {
    let keys = ring(&[(7, 1)], 7);
    let records = vec![
        record(
            1_000,
            "key-SECRET",
            ("name-SECRET", "value-SECRET"),
            "payload-SECRET",
        ),
        record(1_005, "k2", ("h", "v"), "second"),
    ];
    let batch = sealed(&records, 40, &keys);
    assert_eq!(
        batch.len() as u64,
        encoded_batch_len(&records) + SEAL_OVERHEAD as u64
    );
    for secret in [
        "key-SECRET",
        "name-SECRET",
        "value-SECRET",
        "payload-SECRET",
        "second",
    ] {
        assert!(!contains(&batch, secret.as_bytes()), "{secret} is readable");
    }
    let header = verify(&batch, Some(&keys)).unwrap();
    assert_eq!(header.key_id, Some(7));
    assert_eq!((header.base_offset, header.record_count), (40, 2));
    assert_eq!(
        (header.base_timestamp, header.max_timestamp),
        (1_000, 1_005)
    );
    let out = decode(&batch, Some(&keys)).unwrap();
    assert_eq!(
        out.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![40, 41]
    );
    let back: Vec<Record> = out.into_iter().map(|r| r.record).collect();
    assert_eq!(back, records);
}

#[test]
fn the_same_records_seal_differently_each_time() {
    let keys = ring(&[(1, 1)], 1);
    let records = vec![record(1, "k", ("a", "b"), "same")];
    assert_ne!(sealed(&records, 0, &keys), sealed(&records, 0, &keys));
}

#[test]
fn old_batches_open_after_rotation_and_new_ones_use_the_new_key() {
    let old = ring(&[(1, 1)], 1);
    let rotated = ring(&[(1, 1), (2, 2)], 2);
    let records = vec![record(5, "k", ("a", "b"), "v")];
    let before = sealed(&records, 0, &old);
    let after = sealed(&records, 1, &rotated);
    assert_eq!(check(&before).unwrap().key_id, Some(1));
    assert_eq!(check(&after).unwrap().key_id, Some(2));
    assert_eq!(
        decode(&before, Some(&rotated)).unwrap()[0].record,
        records[0]
    );
    assert_eq!(
        decode(&after, Some(&rotated)).unwrap()[0].record,
        records[0]
    );
    // The old ring alone cannot open what the new key sealed.
    assert_eq!(
        decode(&after, Some(&old)),
        Err(Reject::Decrypt(DecryptFailure::UnknownKey { key_id: 2 }))
    );
}

#[test]
fn wrong_or_missing_keys_are_named_not_garbage() {
    let keys = ring(&[(3, 1)], 3);
    let batch = sealed(&[record(1, "k", ("a", "b"), "v")], 0, &keys);
    // The checksum holds whatever the keys: the batch is intact.
    assert!(check(&batch).is_ok());
    let imposter = ring(&[(3, 9)], 3);
    for (keys, failure) in [
        (None, DecryptFailure::NoKeys { key_id: 3 }),
        (
            Some(ring(&[(4, 1)], 4)),
            DecryptFailure::UnknownKey { key_id: 3 },
        ),
        (Some(imposter), DecryptFailure::NotAuthentic { key_id: 3 }),
    ] {
        assert_eq!(verify(&batch, keys.as_ref()), Err(Reject::Decrypt(failure)));
        assert_eq!(decode(&batch, keys.as_ref()), Err(Reject::Decrypt(failure)));
    }
}

#[test]
fn plaintext_batches_stay_readable_with_keys() {
    let mut plain = Vec::new();
    let records = vec![record(1, "k", ("a", "b"), "written before encryption")];
    encode_into(&mut plain, 0, &records, None).unwrap();
    let keys = ring(&[(1, 1)], 1);
    assert_eq!(verify(&plain, Some(&keys)).unwrap().key_id, None);
    assert_eq!(decode(&plain, Some(&keys)).unwrap()[0].record, records[0]);
}

#[test]
fn every_flipped_bit_is_caught_by_the_checksum_before_any_key_is_used() {
    let keys = ring(&[(1, 1)], 1);
    let batch = sealed(&[record(7, "key", ("h", "v"), "value")], 3, &keys);
    for byte in 0..batch.len() {
        for bit in 0..8 {
            let mut damaged = batch.clone();
            damaged[byte] ^= 1 << bit;
            // Without keys: a damaged batch is `Invalid` (recovery may cut it), never a
            // decryption failure (which would stop the open).
            assert!(
                matches!(verify(&damaged, None), Err(Reject::Invalid(_))),
                "flip at byte {byte} bit {bit}"
            );
        }
    }
}

#[test]
fn tampering_with_a_valid_checksum_fails_authentication() {
    let keys = ring(&[(1, 1)], 1);
    let batch = sealed(&[record(7, "key", ("h", "v"), "value")], 3, &keys);
    for byte in (0..batch.len()).filter(|b| !(CRC_AT..CRC_AT + 4).contains(b)) {
        let mut forged = batch.clone();
        forged[byte] ^= 0x01;
        fix_crc(&mut forged);
        let result = verify(&forged, Some(&keys));
        assert!(result.is_err(), "forgery at byte {byte} accepted");
        // Whatever still passes the header rules and names the same key must fail the tag:
        // offset, count, timestamps (header), nonce, records and the tag itself.
        if check(&forged).is_ok_and(|h| h.key_id == Some(1)) {
            assert_eq!(
                result,
                Err(Reject::Decrypt(DecryptFailure::NotAuthentic { key_id: 1 })),
                "byte {byte}"
            );
        }
        if !(8..HEADER_LEN).contains(&byte) {
            assert!(
                matches!(result, Err(Reject::Decrypt(_))),
                "byte {byte}: {result:?}"
            );
        }
    }
}

fn arb_record() -> impl Strategy<Value = Record> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from);
    (
        any::<i64>(),
        prop::option::of(bytes()),
        prop::collection::vec((".{0,12}", bytes()), 0..4),
        bytes(),
    )
        .prop_map(|(timestamp_ms, key, headers, value)| Record {
            timestamp_ms,
            key,
            headers,
            value,
        })
}

proptest! {
    #[test]
    fn arbitrary_sealed_batches_round_trip(
        records in prop::collection::vec(arb_record(), 1..12),
        base in 0u64..u64::MAX / 2,
        key in any::<[u8; 32]>(),
    ) {
        let keys = Keyring::new([(9, zeroize::Zeroizing::new(key))], 9).unwrap();
        let batch = sealed(&records, base, &keys);
        prop_assert_eq!(batch.len() as u64, encoded_batch_len(&records) + SEAL_OVERHEAD as u64);
        let header = verify(&batch, Some(&keys)).unwrap();
        prop_assert_eq!(header.max_timestamp, max_timestamp(&records));
        let out = decode(&batch, Some(&keys)).unwrap();
        prop_assert_eq!(out.len(), records.len());
        for (i, (stored, original)) in out.iter().zip(&records).enumerate() {
            prop_assert_eq!(stored.offset, base + i as u64);
            prop_assert_eq!(&stored.record, original);
        }
    }

    #[test]
    fn arbitrary_tampering_never_opens(
        records in prop::collection::vec(arb_record(), 1..4),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let keys = Keyring::new([(1, zeroize::Zeroizing::new([7; 32]))], 1).unwrap();
        let mut batch = sealed(&records, 0, &keys);
        let mut byte = at.index(batch.len());
        if (CRC_AT..CRC_AT + 4).contains(&byte) {
            byte = HEADER_LEN;
        }
        batch[byte] ^= mask;
        fix_crc(&mut batch);
        prop_assert!(verify(&batch, Some(&keys)).is_err());
        prop_assert!(decode(&batch, Some(&keys)).is_err());
    }
}
