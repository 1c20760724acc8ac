//! Unit tests of the key ring: construction rules, sealed values and lookup tags.

use proptest::prelude::*;

use super::*;

fn key(fill: u8) -> Zeroizing<[u8; KEY_LEN]> {
    Zeroizing::new([fill; KEY_LEN])
}

fn ring(keys: &[(u16, u8)], current: u16) -> Keyring {
    Keyring::new(keys.iter().map(|&(id, fill)| (id, key(fill))), current).unwrap()
}

#[test]
fn bad_key_sets_are_refused_with_a_reason() {
    type Keys = &'static [(u16, u8)];
    let cases: [(Keys, u16, &str); 4] = [
        (&[(0, 1)], 0, "id 0 is reserved"),
        (&[(1, 1), (1, 2)], 1, "given twice"),
        (&[(1, 1)], 2, "current encryption key id 2"),
        (&[], 1, "current encryption key id 1"),
    ];
    for (keys, current, reason) in cases {
        let result = Keyring::new(keys.iter().map(|&(id, fill)| (id, key(fill))), current);
        match result {
            Err(LogError::InvalidConfig(msg)) => assert!(msg.contains(reason), "{msg}"),
            other => panic!("{keys:?} accepted: {other:?}"),
        }
    }
}

#[test]
fn debug_shows_ids_but_no_key_material() {
    let keys = ring(&[(1, 0xAB), (2, 0xCD)], 2);
    let shown = format!("{keys:?}");
    assert!(
        shown.contains("[1, 2]") && shown.contains("current: 2"),
        "{shown}"
    );
    assert!(
        !shown.to_lowercase().contains("ab, ab") && !shown.contains("171"),
        "{shown}"
    );
    assert_eq!(keys.key_ids(), vec![1, 2]);
    assert_eq!(keys.current_id(), 2);
}

#[test]
fn values_round_trip_under_their_associated_data_only() {
    let keys = ring(&[(5, 1)], 5);
    let sealed = keys
        .seal_value(b"delayed/t/1", b"{\"data\":\"SECRET\"}")
        .unwrap();
    assert_eq!(sealed_value_key(&sealed), Some(5));
    assert!(!sealed.windows(6).any(|w| w == b"SECRET"));
    assert_eq!(
        keys.open_value(b"delayed/t/1", &sealed).unwrap(),
        b"{\"data\":\"SECRET\"}"
    );
    // Moved to another row, it does not open.
    assert_eq!(
        keys.open_value(b"delayed/t/2", &sealed),
        Err(DecryptFailure::NotAuthentic { key_id: 5 })
    );
}

#[test]
fn values_name_the_key_they_need() {
    let old = ring(&[(1, 1)], 1);
    let sealed = old.seal_value(b"aad", b"v").unwrap();
    let rotated = ring(&[(1, 1), (2, 2)], 2);
    assert_eq!(rotated.open_value(b"aad", &sealed).unwrap(), b"v");
    assert_eq!(
        sealed_value_key(&rotated.seal_value(b"aad", b"v").unwrap()),
        Some(2)
    );
    assert_eq!(
        ring(&[(2, 2)], 2).open_value(b"aad", &sealed),
        Err(DecryptFailure::UnknownKey { key_id: 1 })
    );
    assert_eq!(
        ring(&[(1, 9)], 1).open_value(b"aad", &sealed),
        Err(DecryptFailure::NotAuthentic { key_id: 1 })
    );
}

#[test]
fn plaintext_and_truncated_values_are_not_taken_for_sealed_ones() {
    let keys = ring(&[(1, 1)], 1);
    assert_eq!(sealed_value_key(b"{\"partition\":0}"), None);
    assert_eq!(sealed_value_key(b""), None);
    let sealed = keys.seal_value(b"", b"").unwrap();
    for cut in 0..sealed.len() {
        assert!(
            keys.open_value(b"", &sealed[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    assert_eq!(
        keys.open_value(b"", b"{\"partition\":0}"),
        Err(DecryptFailure::Malformed)
    );
}

#[test]
fn lookup_tags_are_stable_per_key_and_list_every_key_current_first() {
    let keys = ring(&[(1, 1), (2, 2), (3, 3)], 2);
    let (id, tag) = keys.lookup_tag(b"order-42");
    assert_eq!(id, 2);
    assert_eq!(keys.lookup_tag(b"order-42"), (2, tag));
    assert_ne!(keys.lookup_tag(b"order-43").1, tag);
    let all = keys.lookup_tags(b"order-42");
    assert_eq!(
        all.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![2, 3, 1]
    );
    assert_eq!(all[0].1, tag);
    // Under another key the same input gives another tag; the same key elsewhere the same.
    assert_ne!(all[1].1, tag);
    assert_eq!(ring(&[(1, 1)], 1).lookup_tag(b"order-42").1, all[2].1);
}

proptest! {
    #[test]
    fn arbitrary_values_round_trip_and_any_tamper_fails(
        value in prop::collection::vec(any::<u8>(), 0..512),
        aad in prop::collection::vec(any::<u8>(), 0..64),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let keys = ring(&[(1, 1), (2, 2)], 2);
        let sealed = keys.seal_value(&aad, &value).unwrap();
        prop_assert_eq!(keys.open_value(&aad, &sealed).unwrap(), value);
        let mut tampered = sealed.clone();
        let byte = at.index(tampered.len());
        tampered[byte] ^= mask;
        prop_assert!(keys.open_value(&aad, &tampered).is_err());
    }
}
