//! Record-batch codec (sans-IO): the on-disk batch format, encoding (sealed or not), checking
//! and decoding.
//!
//! Layout (little-endian), documented in `docs/storage.md`:
//! `base_offset u64 | length u32 | crc32c u32 | magic u8 | attributes u8 | key_id u16 |
//!  record_count u32 | base_timestamp i64 | max_timestamp i64 | records…`, where an encrypted
//! batch (attribute bit 0) holds `nonce [24] | sealed records | tag [16]` after the header.

use bytes::{Bytes, BytesMut};

use crate::error::DecryptFailure;
use crate::keyring::{Keyring, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};
use crate::types::{Record, StoredRecord};
use crate::varint::{get_uvarint, put_uvarint, unzigzag, uvarint_len, zigzag};

/// Format version written in every batch.
pub(crate) const MAGIC: u8 = 1;
pub(crate) const HEADER_LEN: usize = 40;
/// The CRC covers the batch except its own 4 bytes at this position.
const CRC_AT: usize = 12;
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 17;
const KEY_ID_AT: usize = 18;
/// Attribute bit: the records are sealed with the key named in `key_id`.
const ENCRYPTED: u8 = 0x01;
/// Header bytes authenticated with the records of a sealed batch: all but the CRC, which is
/// computed after sealing.
const AAD_LEN: usize = HEADER_LEN - 4;

/// Why a batch was rejected; the caller adds the file and position.
pub(crate) type Invalid = &'static str;

/// Why a batch could not be read: damaged (recovery may cut it off) or not decryptable with
/// the keys at hand (never cut: the data may be fine and the keys wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    Invalid(Invalid),
    Decrypt(DecryptFailure),
}

impl From<Invalid> for Reject {
    fn from(reason: Invalid) -> Self {
        Reject::Invalid(reason)
    }
}

/// The fixed-size header at the start of every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) base_offset: u64,
    /// Whole batch, header included.
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) record_count: u32,
    /// Timestamp of the first record; the records store deltas from it.
    pub(crate) base_timestamp: i64,
    pub(crate) max_timestamp: i64,
    /// The key the records are sealed with; `None` for a plaintext batch.
    pub(crate) key_id: Option<u16>,
}

impl BatchHeader {
    /// Parses and sanity-checks a header; `bytes` must hold at least `HEADER_LEN` bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        let b = bytes.get(..HEADER_LEN).ok_or("batch header is cut off")?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(word)
        };
        if b[MAGIC_AT] != MAGIC {
            return Err("unknown batch format version (magic)");
        }
        let key_id = match (
            b[ATTRIBUTES_AT],
            u16::from_le_bytes([b[KEY_ID_AT], b[KEY_ID_AT + 1]]),
        ) {
            (0, 0) => None,
            (ENCRYPTED, 0) => return Err("encrypted batch has key id 0"),
            (ENCRYPTED, id) => Some(id),
            (0, _) => return Err("batch that is not encrypted has a key id"),
            _ => return Err("unknown batch attributes"),
        };
        let header = BatchHeader {
            base_offset: u64_at(0),
            len: u32_at(8),
            crc: u32_at(CRC_AT),
            record_count: u32_at(20),
            base_timestamp: u64_at(24) as i64,
            max_timestamp: u64_at(32) as i64,
            key_id,
        };
        let overhead = if key_id.is_some() { SEAL_OVERHEAD } else { 0 };
        if (header.len as usize) < HEADER_LEN + overhead + 1 {
            return Err("batch length is smaller than a header and one record");
        }
        if header.record_count == 0 {
            return Err("batch has no records");
        }
        if header.max_timestamp < header.base_timestamp {
            return Err("batch max timestamp is below its base timestamp");
        }
        if header
            .base_offset
            .checked_add(u64::from(header.record_count))
            .is_none()
        {
            return Err("batch offsets overflow");
        }
        Ok(header)
    }

    /// One past the last offset of the batch.
    pub(crate) fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Encoded size of `records` as one batch (what `append` checks against `max_batch_bytes`).
pub fn encoded_batch_len(records: &[Record]) -> u64 {
    let base_ts = records.first().map_or(0, |r| r.timestamp_ms);
    HEADER_LEN as u64
        + records
            .iter()
            .map(|r| {
                let body = record_body_len(r, base_ts);
                (uvarint_len(body as u64) + body) as u64
            })
            .sum::<u64>()
}

pub(crate) fn max_timestamp(records: &[Record]) -> i64 {
    records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(i64::MIN)
}

fn len_prefixed_len(len: usize) -> usize {
    uvarint_len(len as u64) + len
}

fn record_body_len(record: &Record, base_ts: i64) -> usize {
    let key = match &record.key {
        None => 1,
        Some(key) => uvarint_len(key.len() as u64 + 1) + key.len(),
    };
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| len_prefixed_len(name.len()) + len_prefixed_len(value.len()))
        .sum();
    uvarint_len(zigzag(record.timestamp_ms.wrapping_sub(base_ts)))
        + key
        + uvarint_len(record.headers.len() as u64)
        + headers
        + len_prefixed_len(record.value.len())
}

/// Appends one batch holding `records` (non-empty, size already checked) to `buf`, sealed with
/// the current key of `keys` when given; returns its length. On error `buf` is left as it was.
pub(crate) fn encode_into(
    buf: &mut Vec<u8>,
    base_offset: u64,
    records: &[Record],
    keys: Option<&Keyring>,
) -> Result<usize, Invalid> {
    let start = buf.len();
    let base_ts = records.first().map_or(0, |r| r.timestamp_ms);
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    if keys.is_some() {
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
    }
    for record in records {
        put_uvarint(buf, record_body_len(record, base_ts) as u64);
        put_uvarint(buf, zigzag(record.timestamp_ms.wrapping_sub(base_ts)));
        match &record.key {
            None => put_uvarint(buf, 0),
            Some(key) => {
                put_uvarint(buf, key.len() as u64 + 1);
                buf.extend_from_slice(key);
            }
        }
        put_uvarint(buf, record.headers.len() as u64);
        for (name, value) in &record.headers {
            put_uvarint(buf, name.len() as u64);
            buf.extend_from_slice(name.as_bytes());
            put_uvarint(buf, value.len() as u64);
            buf.extend_from_slice(value);
        }
        put_uvarint(buf, record.value.len() as u64);
        buf.extend_from_slice(&record.value);
    }
    let tag_len = if keys.is_some() { TAG_LEN } else { 0 };
    let len = buf.len() - start + tag_len;
    let header = &mut buf[start..start + HEADER_LEN];
    header[0..8].copy_from_slice(&base_offset.to_le_bytes());
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    header[MAGIC_AT] = MAGIC;
    header[20..24].copy_from_slice(&(records.len() as u32).to_le_bytes());
    header[24..32].copy_from_slice(&base_ts.to_le_bytes());
    header[32..40].copy_from_slice(&max_timestamp(records).to_le_bytes());
    if let Some(keys) = keys {
        header[ATTRIBUTES_AT] = ENCRYPTED;
        header[KEY_ID_AT..KEY_ID_AT + 2].copy_from_slice(&keys.current_id().to_le_bytes());
        let aad = associated_data(header);
        let body = &mut buf[start + HEADER_LEN + NONCE_LEN..];
        let (nonce, tag) = match keys.seal_batch(&aad, body) {
            Ok(sealed) => sealed,
            Err(reason) => {
                buf.truncate(start);
                return Err(reason);
            }
        };
        buf[start + HEADER_LEN..start + HEADER_LEN + NONCE_LEN].copy_from_slice(&nonce);
        buf.extend_from_slice(&tag);
    }
    let crc = batch_crc(&buf[start..]);
    buf[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

/// The header fields a sealed batch authenticates: every byte of the header but the CRC, so
/// that offsets, count, timestamps and key id cannot be changed without the key.
fn associated_data(header: &[u8]) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..CRC_AT].copy_from_slice(&header[..CRC_AT]);
    aad[CRC_AT..].copy_from_slice(&header[CRC_AT + 4..HEADER_LEN]);
    aad
}

/// CRC32C of the whole batch except the CRC field itself, so the offset and length are covered too.
fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&batch[..CRC_AT]), &batch[CRC_AT + 4..])
}

/// Checks the header and the checksum of a whole batch (`batch` is exactly one batch).
pub(crate) fn check(batch: &[u8]) -> Result<BatchHeader, Invalid> {
    let header = BatchHeader::parse(batch)?;
    if header.len as usize != batch.len() {
        return Err("batch length does not match the bytes given");
    }
    if batch_crc(batch) != header.crc {
        return Err("batch checksum (crc32c) mismatch");
    }
    Ok(header)
}

/// The decrypted records of a checked, sealed batch; `None` for a plaintext batch (whose
/// records are the bytes after its header).
fn open_records(
    batch: &[u8],
    header: &BatchHeader,
    keys: Option<&Keyring>,
) -> Result<Option<BytesMut>, Reject> {
    let Some(key_id) = header.key_id else {
        return Ok(None);
    };
    let keys = keys.ok_or(Reject::Decrypt(DecryptFailure::NoKeys { key_id }))?;
    // `parse` checked that the batch holds a header, a nonce, a tag and one byte.
    let body_at = HEADER_LEN + NONCE_LEN;
    let tag_at = batch.len() - TAG_LEN;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&batch[HEADER_LEN..body_at]);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&batch[tag_at..]);
    let mut records = BytesMut::from(&batch[body_at..tag_at]);
    keys.open_batch(key_id, &associated_data(batch), &nonce, &mut records, &tag)
        .map_err(Reject::Decrypt)?;
    Ok(Some(records))
}

/// Full validation used by recovery: header, checksum, authenticity of a sealed batch, and the
/// structure of every record. The checksum comes first, so a torn or damaged batch is found
/// as such without any key.
pub(crate) fn verify(batch: &[u8], keys: Option<&Keyring>) -> Result<BatchHeader, Reject> {
    let header = check(batch)?;
    match open_records(batch, &header, keys)? {
        None => walk_records(&batch[HEADER_LEN..], &header, |_| Ok(true))?,
        Some(records) => walk_records(&records, &header, |_| Ok(true))?,
    }
    Ok(header)
}

/// Decodes the records at or after `from_offset` of a checked batch. They share the memory of
/// `batch` (or of its decrypted records).
#[cfg(test)]
pub(crate) fn decode_into(
    batch: &Bytes,
    header: &BatchHeader,
    keys: Option<&Keyring>,
    from_offset: u64,
    out: &mut Vec<StoredRecord>,
) -> Result<(), Reject> {
    decode_at_most(batch, header, keys, from_offset, usize::MAX, out)
}

/// As [`decode_into`], stopping once `out` holds `max_records`: the records after them are not
/// decoded (the batch's CRC, checked before, already vouches for their bytes).
pub(crate) fn decode_at_most(
    batch: &Bytes,
    header: &BatchHeader,
    keys: Option<&Keyring>,
    from_offset: u64,
    max_records: usize,
    out: &mut Vec<StoredRecord>,
) -> Result<(), Reject> {
    if out.len() >= max_records {
        return Ok(());
    }
    let records = match open_records(batch, header, keys)? {
        None => batch.slice(HEADER_LEN..),
        Some(records) => records.freeze(),
    };
    walk_records(&records, header, |raw| {
        if raw.offset < from_offset {
            return Ok(true);
        }
        let mut headers = Vec::with_capacity(raw.header_count.min(raw.headers.len() / 2));
        let mut pos = 0;
        while pos < raw.headers.len() {
            let (name, value) = header_pair(raw.headers, &mut pos)?;
            // Validated as UTF-8 by `header_pair`; this conversion cannot fail here.
            let name = std::str::from_utf8(name).map_err(|_| "header name is not UTF-8")?;
            headers.push((name.to_owned(), records.slice_ref(value)));
        }
        out.push(StoredRecord {
            offset: raw.offset,
            record: Record {
                timestamp_ms: raw.timestamp_ms,
                key: raw.key.map(|key| records.slice_ref(key)),
                headers,
                value: records.slice_ref(raw.value),
            },
        });
        Ok(out.len() < max_records)
    })?;
    Ok(())
}

/// One record's fields, borrowed from the batch.
struct RawRecord<'a> {
    offset: u64,
    timestamp_ms: i64,
    key: Option<&'a [u8]>,
    /// The encoded header pairs, already validated.
    headers: &'a [u8],
    header_count: usize,
    value: &'a [u8],
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], Invalid> {
    let len = usize::try_from(len).map_err(|_| "field length overflows")?;
    let end = pos
        .checked_add(len)
        .filter(|&end| end <= buf.len())
        .ok_or("field runs past the record end")?;
    let field = &buf[*pos..end];
    *pos = end;
    Ok(field)
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Invalid> {
    get_uvarint(buf, pos).ok_or("malformed varint")
}

fn header_pair<'a>(buf: &'a [u8], pos: &mut usize) -> Result<(&'a [u8], &'a [u8]), Invalid> {
    let name_len = varint(buf, pos)?;
    let name = take(buf, pos, name_len)?;
    std::str::from_utf8(name).map_err(|_| "header name is not UTF-8")?;
    let value_len = varint(buf, pos)?;
    let value = take(buf, pos, value_len)?;
    Ok((name, value))
}

/// Walks every record of a checked batch (`records`: the plaintext after the header),
/// validating its structure against the header.
fn walk_records<'a>(
    records: &'a [u8],
    header: &BatchHeader,
    mut visit: impl FnMut(RawRecord<'a>) -> Result<bool, Invalid>,
) -> Result<(), Invalid> {
    let mut pos = 0;
    let mut max_ts = i64::MIN;
    for i in 0..header.record_count {
        let body_len = varint(records, &mut pos)?;
        let body = take(records, &mut pos, body_len)?;
        let mut p = 0;
        let delta = unzigzag(varint(body, &mut p)?);
        if i == 0 && delta != 0 {
            return Err("first record's timestamp differs from the batch base timestamp");
        }
        let timestamp_ms = header.base_timestamp.wrapping_add(delta);
        max_ts = max_ts.max(timestamp_ms);
        let key = match varint(body, &mut p)? {
            0 => None,
            tagged => Some(take(body, &mut p, tagged - 1)?),
        };
        let header_count = varint(body, &mut p)?;
        let headers_start = p;
        for _ in 0..header_count {
            header_pair(body, &mut p)?;
        }
        let headers = &body[headers_start..p];
        let value_len = varint(body, &mut p)?;
        let value = take(body, &mut p, value_len)?;
        if p != body.len() {
            return Err("record length does not match its fields");
        }
        let more = visit(RawRecord {
            offset: header.base_offset + u64::from(i),
            timestamp_ms,
            key,
            headers,
            header_count: usize::try_from(header_count).unwrap_or(usize::MAX),
            value,
        })?;
        if !more {
            // The caller has what it wanted; the checks below are for whole walks.
            return Ok(());
        }
    }
    if pos != records.len() {
        return Err("bytes left over after the last record");
    }
    if max_ts != header.max_timestamp {
        return Err("batch max timestamp does not match its records");
    }
    Ok(())
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "batch_seal_tests.rs"]
mod seal_tests;
