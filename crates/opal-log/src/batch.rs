//! Record-batch codec (sans-IO): the on-disk batch format, encoding, checking and decoding.
//!
//! Layout (little-endian), documented in `docs/storage.md`:
//! `base_offset u64 | length u32 | crc32c u32 | magic u8 | attributes u8 | reserved u16 |
//!  record_count u32 | base_timestamp i64 | max_timestamp i64 | records…`

use bytes::Bytes;

use crate::types::{Record, StoredRecord};
use crate::varint::{get_uvarint, put_uvarint, unzigzag, uvarint_len, zigzag};

/// Format version written in every batch.
pub(crate) const MAGIC: u8 = 1;
pub(crate) const HEADER_LEN: usize = 40;
/// The CRC covers the batch except its own 4 bytes at this position.
const CRC_AT: usize = 12;

/// Why a batch was rejected; the caller adds the file and position.
pub(crate) type Invalid = &'static str;

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
        if b[16] != MAGIC {
            return Err("unknown batch format version (magic)");
        }
        if b[17] != 0 || b[18] != 0 || b[19] != 0 {
            return Err("reserved batch header bytes are not zero");
        }
        let header = BatchHeader {
            base_offset: u64_at(0),
            len: u32_at(8),
            crc: u32_at(CRC_AT),
            record_count: u32_at(20),
            base_timestamp: u64_at(24) as i64,
            max_timestamp: u64_at(32) as i64,
        };
        if (header.len as usize) < HEADER_LEN + 1 {
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

/// Appends one batch holding `records` (non-empty, size already checked) to `buf`; returns its length.
pub(crate) fn encode_into(buf: &mut Vec<u8>, base_offset: u64, records: &[Record]) -> usize {
    let start = buf.len();
    let base_ts = records.first().map_or(0, |r| r.timestamp_ms);
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
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
    let len = buf.len() - start;
    let header = &mut buf[start..start + HEADER_LEN];
    header[0..8].copy_from_slice(&base_offset.to_le_bytes());
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    header[16] = MAGIC;
    header[20..24].copy_from_slice(&(records.len() as u32).to_le_bytes());
    header[24..32].copy_from_slice(&base_ts.to_le_bytes());
    header[32..40].copy_from_slice(&max_timestamp(records).to_le_bytes());
    let crc = batch_crc(&buf[start..]);
    buf[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    len
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

/// Full validation used by recovery: header, checksum and the structure of every record.
pub(crate) fn verify(batch: &[u8]) -> Result<BatchHeader, Invalid> {
    let header = check(batch)?;
    walk_records(batch, &header, |_| Ok(()))?;
    Ok(header)
}

/// Decodes the records at or after `from_offset` of a checked batch, sharing `batch`'s memory.
pub(crate) fn decode_into(
    batch: &Bytes,
    header: &BatchHeader,
    from_offset: u64,
    out: &mut Vec<StoredRecord>,
) -> Result<(), Invalid> {
    walk_records(batch, header, |raw| {
        if raw.offset < from_offset {
            return Ok(());
        }
        let mut headers = Vec::with_capacity(raw.header_count.min(raw.headers.len() / 2));
        let mut pos = 0;
        while pos < raw.headers.len() {
            let (name, value) = header_pair(raw.headers, &mut pos)?;
            // Validated as UTF-8 by `header_pair`; this conversion cannot fail here.
            let name = std::str::from_utf8(name).map_err(|_| "header name is not UTF-8")?;
            headers.push((name.to_owned(), batch.slice_ref(value)));
        }
        out.push(StoredRecord {
            offset: raw.offset,
            record: Record {
                timestamp_ms: raw.timestamp_ms,
                key: raw.key.map(|key| batch.slice_ref(key)),
                headers,
                value: batch.slice_ref(raw.value),
            },
        });
        Ok(())
    })
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

/// Walks every record of a checked batch, validating its structure against the header.
fn walk_records<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    mut visit: impl FnMut(RawRecord<'a>) -> Result<(), Invalid>,
) -> Result<(), Invalid> {
    let mut pos = HEADER_LEN;
    let mut max_ts = i64::MIN;
    for i in 0..header.record_count {
        let body_len = varint(batch, &mut pos)?;
        let body = take(batch, &mut pos, body_len)?;
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
        visit(RawRecord {
            offset: header.base_offset + u64::from(i),
            timestamp_ms,
            key,
            headers,
            header_count: usize::try_from(header_count).unwrap_or(usize::MAX),
            value,
        })?;
    }
    if pos != batch.len() {
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
