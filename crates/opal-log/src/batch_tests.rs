//! Unit tests of the batch codec: round trips, checksums and rejection of damaged batches.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn record(ts: i64, key: Option<&str>, headers: &[(&str, &str)], value: &str) -> Record {
    Record {
        timestamp_ms: ts,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn decode_all(buf: &[u8]) -> (BatchHeader, Vec<StoredRecord>) {
    let bytes = Bytes::copy_from_slice(buf);
    let header = check(&bytes).unwrap();
    let mut out = Vec::new();
    decode_into(&bytes, &header, None, 0, &mut out).unwrap();
    (header, out)
}

#[test]
fn round_trip_keeps_every_field() {
    let records = vec![
        record(1_000, Some("k"), &[("a", "1"), ("", "")], "hello"),
        record(999, None, &[], ""),
        record(5_000, Some(""), &[("ü", "x")], "world"),
    ];
    let mut buf = vec![0xAA; 3]; // encoding appends after existing bytes
    let len = encode_into(&mut buf, 42, &records, None).unwrap();
    assert_eq!(len as u64, encoded_batch_len(&records));
    assert_eq!(buf.len(), 3 + len);
    let (header, out) = decode_all(&buf[3..]);
    assert_eq!(header.base_offset, 42);
    assert_eq!(header.record_count, 3);
    assert_eq!(header.base_timestamp, 1_000);
    assert_eq!(header.max_timestamp, 5_000);
    assert_eq!(header.next_offset(), 45);
    let offsets: Vec<u64> = out.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![42, 43, 44]);
    let back: Vec<Record> = out.into_iter().map(|r| r.record).collect();
    assert_eq!(back, records);
}

/// A plaintext batch at offset 10 of `count` records whose values are their indexes.
fn numbered_batch(count: i64) -> (Bytes, BatchHeader) {
    let records: Vec<Record> = (0..count)
        .map(|i| record(i, None, &[], &i.to_string()))
        .collect();
    let mut buf = Vec::new();
    encode_into(&mut buf, 10, &records, None).unwrap();
    let bytes = Bytes::from(buf);
    let header = check(&bytes).unwrap();
    (bytes, header)
}

#[test]
fn decode_skips_records_before_the_wanted_offset() {
    let (bytes, header) = numbered_batch(5);
    let mut out = Vec::new();
    decode_into(&bytes, &header, None, 13, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![13, 14]
    );
    assert_eq!(out[0].record.value, Bytes::from_static(b"3"));
}

#[test]
fn decode_at_most_stops_once_it_has_enough() {
    let (bytes, header) = numbered_batch(6);
    let mut out = Vec::new();
    decode_at_most(&bytes, &header, None, 11, 2, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![11, 12]
    );
    // Counting what `out` already holds: nothing more once it is full.
    decode_at_most(&bytes, &header, None, 13, 2, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    decode_at_most(&bytes, &header, None, 13, 3, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![11, 12, 13]
    );
}

#[test]
fn every_flipped_bit_is_detected() {
    let records = vec![record(7, Some("key"), &[("h", "v")], "value")];
    let mut buf = Vec::new();
    encode_into(&mut buf, 3, &records, None).unwrap();
    for byte in 0..buf.len() {
        for bit in 0..8 {
            let mut damaged = buf.clone();
            damaged[byte] ^= 1 << bit;
            assert!(
                verify(&damaged, None).is_err(),
                "flip at byte {byte} bit {bit} went unnoticed"
            );
        }
    }
    verify(&buf, None).unwrap();
}

#[test]
fn cut_batches_are_rejected() {
    let mut buf = Vec::new();
    encode_into(&mut buf, 0, &[record(1, None, &[], "abcdef")], None).unwrap();
    for cut in 0..buf.len() {
        assert!(
            verify(&buf[..cut], None).is_err(),
            "batch cut at {cut} accepted"
        );
    }
}

#[test]
fn structural_damage_with_a_valid_checksum_is_rejected() {
    // Corrupt a record length but recompute the CRC: only the structure walk can notice.
    let mut buf = Vec::new();
    encode_into(&mut buf, 0, &[record(1, None, &[], "abc")], None).unwrap();
    buf[HEADER_LEN] += 1;
    let crc = batch_crc(&buf);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    assert!(check(&buf).is_ok());
    assert!(verify(&buf, None).is_err());
}

#[test]
fn bad_header_fields_are_named() {
    let mut buf = Vec::new();
    encode_into(&mut buf, 0, &[record(1, None, &[], "abc")], None).unwrap();
    let mut bad_magic = buf.clone();
    bad_magic[16] = 9;
    assert_eq!(
        BatchHeader::parse(&bad_magic),
        Err("unknown batch format version (magic)")
    );
    let mut no_records = buf.clone();
    no_records[20..24].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(BatchHeader::parse(&no_records), Err("batch has no records"));
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        any::<i64>(),
        prop::option::of(arb_bytes()),
        prop::collection::vec((".{0,12}", arb_bytes()), 0..4),
        arb_bytes(),
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
    fn arbitrary_records_round_trip(
        records in prop::collection::vec(arb_record(), 1..20),
        base in 0u64..u64::MAX / 2,
    ) {
        let mut buf = Vec::new();
        let len = encode_into(&mut buf, base, &records, None).unwrap();
        prop_assert_eq!(len as u64, encoded_batch_len(&records));
        let header = verify(&buf, None).unwrap();
        prop_assert_eq!(header.max_timestamp, max_timestamp(&records));
        let (_, out) = decode_all(&buf);
        prop_assert_eq!(out.len(), records.len());
        for (i, (stored, original)) in out.iter().zip(&records).enumerate() {
            prop_assert_eq!(stored.offset, base + i as u64);
            prop_assert_eq!(&stored.record, original);
        }
    }
}
