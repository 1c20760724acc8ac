//! Segment metadata as a plain struct with pure predicates, and the segment file names.

use std::path::{Path, PathBuf};

pub(crate) const DATA_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// `<base offset, 20 digits>.<ext>`: zero padding makes names sort like offsets.
pub(crate) fn file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

pub(crate) fn file_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(file_name(base_offset, ext))
}

/// Splits a segment file name into its base offset and extension; `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if ![DATA_EXT, INDEX_EXT, TIME_INDEX_EXT].contains(&ext) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// What the engine knows about one segment without touching its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub(crate) base_offset: u64,
    /// One past the last offset stored in the segment.
    pub(crate) next_offset: u64,
    /// Bytes of batches in the data file.
    pub(crate) size: u64,
    /// Largest record timestamp; `i64::MIN` while empty.
    pub(crate) max_timestamp: i64,
    /// Max timestamp of the first batch: the segment's age for time-based rolls. Only
    /// known for the active segment (closed segments never roll again).
    pub(crate) first_batch_timestamp: Option<i64>,
}

impl SegmentMeta {
    pub(crate) fn empty(base_offset: u64) -> Self {
        SegmentMeta {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: i64::MIN,
            first_batch_timestamp: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }

    /// Accounts one more batch at the end of the segment.
    pub(crate) fn push_batch(&mut self, len: u64, record_count: u64, max_timestamp: i64) {
        if self.is_empty() {
            self.first_batch_timestamp = Some(max_timestamp);
        }
        self.next_offset += record_count;
        self.size += len;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    /// Whether a batch of `len` bytes and `record_count` records must go to a new segment
    /// because of size. An empty segment takes any batch, so a batch larger than the limit
    /// still fits somewhere; relative offsets must stay within `u32` for the index.
    pub(crate) fn is_full(&self, len: u64, record_count: u64, max_bytes: u64) -> bool {
        let relative_end = self.next_offset - self.base_offset + record_count;
        !self.is_empty() && (self.size + len > max_bytes || relative_end > u64::from(u32::MAX))
    }

    /// Whether the segment is old enough to roll: its first batch is more than `max_age_ms`
    /// older than `now_ms` (the wall clock, or the timestamp of the batch being appended).
    pub(crate) fn is_roll_due(&self, now_ms: i64, max_age_ms: i64) -> bool {
        self.first_batch_timestamp
            .is_some_and(|first| now_ms.saturating_sub(first) > max_age_ms)
    }

    /// Whether every record is more than `retention_ms` older than `now_ms`.
    pub(crate) fn is_expired(&self, now_ms: i64, retention_ms: i64) -> bool {
        !self.is_empty() && now_ms.saturating_sub(self.max_timestamp) > retention_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zero_padded_and_parse_back() {
        assert_eq!(file_name(0, DATA_EXT), "00000000000000000000.log");
        assert_eq!(
            file_name(42, TIME_INDEX_EXT),
            "00000000000000000042.timeindex"
        );
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((42, INDEX_EXT))
        );
        assert_eq!(
            parse_file_name(&file_name(u64::MAX, DATA_EXT)),
            Some((u64::MAX, DATA_EXT))
        );
        for other in [
            "0042.log",
            "00000000000000000042.txt",
            "opal-log.lock",
            "0000000000000000004x.log",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn predicates_follow_the_batches() {
        let mut meta = SegmentMeta::empty(100);
        assert!(meta.is_empty());
        assert!(!meta.is_full(1_000, 1, 10));
        assert!(!meta.is_roll_due(i64::MAX, 1));
        assert!(!meta.is_expired(i64::MAX, 1));
        meta.push_batch(60, 3, 5_000);
        meta.push_batch(40, 2, 4_000);
        assert_eq!(
            (meta.next_offset, meta.size, meta.max_timestamp),
            (105, 100, 5_000)
        );
        assert_eq!(meta.first_batch_timestamp, Some(5_000));
        assert!(!meta.is_full(28, 1, 128));
        assert!(meta.is_full(29, 1, 128));
        assert!(meta.is_full(1, u64::from(u32::MAX), u64::MAX));
        assert!(!meta.is_roll_due(6_000, 1_000));
        assert!(meta.is_roll_due(6_001, 1_000));
        assert!(!meta.is_expired(6_000, 1_000));
        assert!(meta.is_expired(6_001, 1_000));
    }
}
