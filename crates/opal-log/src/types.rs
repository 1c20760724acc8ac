//! Plain data types exchanged with callers: records, append results, counters.

use bytes::Bytes;

/// One record as given to `append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub value: Bytes,
}

/// A record read back, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub record: Record,
}

/// Offsets given to one append: `base_offset..=last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
}

/// Counters of the engine since open (for benchmarks, metrics and tests).
///
/// `writes` counts `write` calls on segment data files and `syncs` counts `fdatasync` calls on
/// them (group commits, rolls, interval and close syncs); index and directory syncs are not
/// counted. `size_bytes` is the length of all segment data files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub start_offset: u64,
    pub next_offset: u64,
    pub segments: u64,
    pub size_bytes: u64,
    pub appends: u64,
    pub records: u64,
    pub writes: u64,
    pub syncs: u64,
}

/// Retention for one `enforce_retention_with` pass, overriding the configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionRule {
    /// Delete closed segments whose newest record is older than this.
    pub max_age: Option<std::time::Duration>,
    /// Delete the oldest closed segments while the log is larger than this.
    pub max_bytes: Option<u64>,
    /// Also delete closed segments whose every record lies below this offset (the caller's
    /// readers are done with them).
    pub released_below: Option<u64>,
}
