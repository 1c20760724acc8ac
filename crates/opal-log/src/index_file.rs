//! Index files of closed segments: entries and a checksummed footer, written once at roll and
//! read with positioned reads (never loaded whole).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::index::{OffsetEntry, TimeEntry, last_true};

pub(crate) const FOOTER_LEN: usize = 48;
/// Bytes hashed per positioned read while checking a footer.
const VERIFY_CHUNK: usize = 64 * 1024;

/// What an index file says about the segment it covers; both index files repeat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    /// Length of the data file when the index was written; a different length on open means
    /// the index no longer describes the data.
    pub(crate) data_len: u64,
    /// Bytes of valid batches from the start of the data file: `data_len` unless the index
    /// was rebuilt from a damaged segment. Readers stop there.
    pub(crate) valid_len: u64,
    pub(crate) next_offset: u64,
    pub(crate) max_timestamp: i64,
    pub(crate) entry_count: u32,
}

/// A fixed-size index entry.
pub(crate) trait Entry: Copy {
    const LEN: usize;
    const MAGIC: &'static [u8; 8];
    fn put(&self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(word)
}

impl Entry for OffsetEntry {
    const LEN: usize = 8;
    const MAGIC: &'static [u8; 8] = b"OPALIDX1";
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32_at(b, 0),
            position: u32_at(b, 4),
        }
    }
}

impl Entry for TimeEntry {
    const LEN: usize = 16;
    const MAGIC: &'static [u8; 8] = b"OPALTIX1";
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: u64_at(b, 0) as i64,
            relative_offset: u32_at(b, 8),
            position: u32_at(b, 12),
        }
    }
}

/// Writes `entries` and the footer to `path` (replacing it) and syncs the file.
pub(crate) fn write<E: Entry>(path: &Path, entries: &[E], footer: Footer) -> io::Result<()> {
    let mut buf = Vec::with_capacity(entries.len() * E::LEN + FOOTER_LEN);
    for entry in entries {
        entry.put(&mut buf);
    }
    buf.extend_from_slice(E::MAGIC);
    buf.extend_from_slice(&footer.data_len.to_le_bytes());
    buf.extend_from_slice(&footer.valid_len.to_le_bytes());
    buf.extend_from_slice(&footer.next_offset.to_le_bytes());
    buf.extend_from_slice(&footer.max_timestamp.to_le_bytes());
    buf.extend_from_slice(&footer.entry_count.to_le_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&buf)?;
    file.sync_data()
}

/// Reads and checks the footer of an open index file: length, magic and checksum over the whole
/// file, hashed in chunks. `Ok(Err(reason))` when the file is damaged.
pub(crate) fn read_footer<E: Entry>(file: &File) -> io::Result<Result<Footer, String>> {
    let len = file.metadata()?.len();
    if len < FOOTER_LEN as u64 || !(len - FOOTER_LEN as u64).is_multiple_of(E::LEN as u64) {
        return Ok(Err(format!(
            "index file length {len} is not entries plus a footer"
        )));
    }
    let footer_at = len - FOOTER_LEN as u64;
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut footer, footer_at)?;
    if &footer[..8] != E::MAGIC {
        return Ok(Err("index footer magic mismatch".into()));
    }
    let mut crc = 0;
    let mut chunk = vec![0u8; VERIFY_CHUNK.min(footer_at as usize)];
    let mut pos = 0;
    while pos < footer_at {
        let n = chunk.len().min((footer_at - pos) as usize);
        file.read_exact_at(&mut chunk[..n], pos)?;
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
        pos += n as u64;
    }
    crc = crc32c::crc32c_append(crc, &footer[..FOOTER_LEN - 4]);
    if crc != u32_at(&footer, FOOTER_LEN - 4) {
        return Ok(Err("index checksum (crc32c) mismatch".into()));
    }
    let parsed = Footer {
        data_len: u64_at(&footer, 8),
        valid_len: u64_at(&footer, 16),
        next_offset: u64_at(&footer, 24),
        max_timestamp: u64_at(&footer, 32) as i64,
        entry_count: u32_at(&footer, 40),
    };
    if parsed.valid_len > parsed.data_len {
        return Ok(Err(
            "index footer claims more valid bytes than the data file has".into(),
        ));
    }
    if u64::from(parsed.entry_count) != footer_at / E::LEN as u64 {
        return Ok(Err("index entry count does not match its length".into()));
    }
    Ok(Ok(parsed))
}

/// Entries in an index file, from its length (the footer was checked when the log opened).
pub(crate) fn entry_count<E: Entry>(file: &File) -> io::Result<u32> {
    let len = file.metadata()?.len().saturating_sub(FOOTER_LEN as u64);
    Ok(u32::try_from(len / E::LEN as u64).unwrap_or(u32::MAX))
}

fn entry_at<E: Entry>(file: &File, i: u64) -> io::Result<E> {
    let mut buf = [0u8; 16];
    let buf = &mut buf[..E::LEN];
    file.read_exact_at(buf, i * E::LEN as u64)?;
    Ok(E::get(buf))
}

/// `SparseIndex::floor_offset` over a file of `count` entries.
pub(crate) fn floor_offset(
    file: &File,
    count: u32,
    relative_offset: u32,
) -> io::Result<Option<OffsetEntry>> {
    last_true(
        u64::from(count),
        |i| entry_at::<OffsetEntry>(file, i),
        |e| e.relative_offset <= relative_offset,
    )
}

/// `SparseIndex::last_time_below` over a file of `count` entries.
pub(crate) fn last_time_below(
    file: &File,
    count: u32,
    timestamp: i64,
) -> io::Result<Option<TimeEntry>> {
    last_true(
        u64::from(count),
        |i| entry_at::<TimeEntry>(file, i),
        |e| e.timestamp < timestamp,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(count: u32) -> Footer {
        Footer {
            data_len: 4096,
            valid_len: 4000,
            next_offset: 77,
            max_timestamp: -5,
            entry_count: count,
        }
    }

    #[test]
    fn written_files_verify_and_answer_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let offsets: Vec<OffsetEntry> = (0..100)
            .map(|i| OffsetEntry {
                relative_offset: i * 3,
                position: i * 50,
            })
            .collect();
        let times: Vec<TimeEntry> = (0..100)
            .map(|i| TimeEntry {
                timestamp: i64::from(i) * 10,
                relative_offset: i * 3,
                position: i * 50,
            })
            .collect();
        let (index_path, time_path) = (dir.path().join("a.index"), dir.path().join("a.timeindex"));
        write(&index_path, &offsets, footer(100)).unwrap();
        write(&time_path, &times, footer(100)).unwrap();
        let index = File::open(&index_path).unwrap();
        let time = File::open(&time_path).unwrap();
        assert_eq!(read_footer::<OffsetEntry>(&index).unwrap(), Ok(footer(100)));
        assert_eq!(read_footer::<TimeEntry>(&time).unwrap(), Ok(footer(100)));
        // The wrong entry type is noticed by the magic.
        assert!(read_footer::<TimeEntry>(&index).unwrap().is_err());
        assert_eq!(floor_offset(&index, 100, 0).unwrap().unwrap().position, 0);
        assert_eq!(
            floor_offset(&index, 100, 5)
                .unwrap()
                .unwrap()
                .relative_offset,
            3
        );
        assert_eq!(
            floor_offset(&index, 100, 297).unwrap().unwrap().position,
            99 * 50
        );
        assert_eq!(
            floor_offset(&index, 100, u32::MAX)
                .unwrap()
                .unwrap()
                .relative_offset,
            297
        );
        assert_eq!(last_time_below(&time, 100, 0).unwrap(), None);
        assert_eq!(
            last_time_below(&time, 100, 15).unwrap().unwrap().timestamp,
            10
        );
        assert_eq!(
            last_time_below(&time, 100, 20).unwrap().unwrap().timestamp,
            10
        );
        assert_eq!(
            last_time_below(&time, 100, 10_000)
                .unwrap()
                .unwrap()
                .timestamp,
            990
        );
    }

    #[test]
    fn damaged_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.index");
        let entries = [OffsetEntry {
            relative_offset: 0,
            position: 0,
        }; 10];
        write(&path, &entries, footer(10)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_footer::<OffsetEntry>(&File::open(&path).unwrap()).unwrap()
        };
        assert!(check(&good).is_ok());
        for at in [0, 40, good.len() - 30, good.len() - 1] {
            let mut flipped = good.clone();
            flipped[at] ^= 0x10;
            assert!(check(&flipped).is_err(), "flip at {at} unnoticed");
        }
        assert!(check(&good[..good.len() - 8]).is_err());
        assert!(check(&good[..10]).is_err());
        assert!(check(&[]).is_err());
    }
}
