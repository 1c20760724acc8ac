//! Helpers shared by the integration tests: records, configs, file listings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use opal_log::{FsyncPolicy, Log, LogConfig, Record, StoredRecord};

/// Offsets and values as appended, in order.
pub(crate) type Written = Vec<(u64, Vec<u8>)>;

pub(crate) fn rec(ts: i64, value: impl Into<Vec<u8>>) -> Record {
    Record {
        timestamp_ms: ts,
        key: None,
        headers: Vec::new(),
        value: Bytes::from(value.into()),
    }
}

pub(crate) fn keyed(
    ts: i64,
    key: &str,
    headers: &[(&str, &str)],
    value: impl Into<Vec<u8>>,
) -> Record {
    Record {
        timestamp_ms: ts,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        value: Bytes::from(value.into()),
    }
}

/// Small segments and a dense index so that a few records exercise rolls and lookups.
pub(crate) fn small(segment_max_bytes: u64) -> LogConfig {
    LogConfig {
        segment_max_bytes,
        index_interval_bytes: 128,
        fsync: FsyncPolicy::Never,
        segment_max_age: Duration::from_secs(3600 * 24 * 365),
        ..LogConfig::default()
    }
}

pub(crate) fn read_all(log: &Log) -> Vec<StoredRecord> {
    log.read(log.start_offset(), usize::MAX).unwrap()
}

pub(crate) fn values(log: &Log) -> Written {
    read_all(log)
        .into_iter()
        .map(|r| (r.offset, r.record.value.to_vec()))
        .collect()
}

/// Data files of the log in `dir`, oldest first.
pub(crate) fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

pub(crate) fn with_ext(data_file: &Path, ext: &str) -> PathBuf {
    data_file.with_extension(ext)
}

/// Appends `count` one-record batches with values `"value-<i>"` padded to about `size` bytes.
pub(crate) fn fill(log: &Log, count: usize, size: usize) -> Written {
    (0..count)
        .map(|i| {
            let mut value = format!("value-{i}-").into_bytes();
            value.resize(size.max(value.len()), b'a' + (i % 26) as u8);
            let appended = log
                .append_blocking(vec![rec(1_000 + i as i64, value.clone())])
                .unwrap();
            (appended.base_offset, value)
        })
        .collect()
}
