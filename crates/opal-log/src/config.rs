//! Settings of a log (`LogConfig`, `FsyncPolicy`), their defaults, parsing and validation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::batch::HEADER_LEN;
use crate::error::LogError;
use crate::keyring::{Keyring, SEAL_OVERHEAD};

/// Largest `segment_max_bytes`: together with `MAX_BATCH_BYTES` it keeps every byte position
/// inside a segment below 2^32, so index entries can store positions as `u32`.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;
/// Largest `max_batch_bytes`.
pub const MAX_BATCH_BYTES: u32 = 1 << 30;
/// Smallest `max_batch_bytes`: a header and a few small records.
pub const MIN_BATCH_BYTES: u32 = 64;

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// `fdatasync` before an append is answered (group commit). The default.
    #[default]
    Always,
    /// Answer after `write`; `fdatasync` at most this often. A crash may lose the last interval.
    Interval(Duration),
    /// Never `fdatasync` explicitly; the OS flushes when it likes. A crash may lose anything unflushed.
    Never,
}

impl fmt::Display for FsyncPolicy {
    /// Writes `always`, `interval:<ms>` or `never`, the forms `from_str` accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = LogError;

    /// Parses `always`, `never` or `interval:<ms>` (milliseconds, at least 1), ignoring ASCII case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("always") {
            return Ok(FsyncPolicy::Always);
        }
        if text.eq_ignore_ascii_case("never") {
            return Ok(FsyncPolicy::Never);
        }
        let invalid = || {
            LogError::InvalidConfig(format!(
                "fsync policy {text:?} is not one of \"always\", \"interval:<ms>\" (ms >= 1), \"never\""
            ))
        };
        let (kind, millis) = text.split_once(':').ok_or_else(invalid)?;
        if !kind.trim().eq_ignore_ascii_case("interval") {
            return Err(invalid());
        }
        match millis.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
            _ => Err(invalid()),
        }
    }
}

/// Settings of one log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll the active segment when it would exceed this many bytes. Default 128 MiB.
    pub segment_max_bytes: u64,
    /// Roll the active segment when its first batch is older than this. Default 7 days.
    pub segment_max_age: Duration,
    /// Delete whole closed segments whose newest record is older than this. Default none.
    pub retention_max_age: Option<Duration>,
    /// Delete the oldest closed segments while the log is larger than this. Default none.
    pub retention_max_bytes: Option<u64>,
    pub fsync: FsyncPolicy,
    /// Add a sparse index entry after at least this many bytes of batches. Default 4096.
    pub index_interval_bytes: u32,
    /// Largest batch accepted by `append`, encoded. Default 16 MiB.
    pub max_batch_bytes: u32,
    /// Seal new batches with the current key, and open sealed ones with any key of the ring.
    /// Default none: batches are written in plaintext, and sealed ones cannot be read.
    pub encryption: Option<Keyring>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_max_bytes: 128 * 1024 * 1024,
            segment_max_age: Duration::from_secs(7 * 24 * 3600),
            retention_max_age: None,
            retention_max_bytes: None,
            fsync: FsyncPolicy::Always,
            index_interval_bytes: 4096,
            max_batch_bytes: 16 * 1024 * 1024,
            encryption: None,
        }
    }
}

impl LogConfig {
    /// Checks every setting; `Log::open` calls it and fails with `InvalidConfig`.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |msg: String| Err(LogError::InvalidConfig(msg));
        if self.segment_max_bytes < HEADER_LEN as u64 || self.segment_max_bytes > MAX_SEGMENT_BYTES
        {
            return invalid(format!(
                "segment_max_bytes must be between {HEADER_LEN} and {MAX_SEGMENT_BYTES}, got {}",
                self.segment_max_bytes
            ));
        }
        if duration_ms(self.segment_max_age) == 0 {
            return invalid("segment_max_age must be at least 1 ms".into());
        }
        if self
            .retention_max_age
            .is_some_and(|age| duration_ms(age) == 0)
        {
            return invalid("retention_max_age must be at least 1 ms when set".into());
        }
        if self.retention_max_bytes == Some(0) {
            return invalid("retention_max_bytes must be positive when set".into());
        }
        if let FsyncPolicy::Interval(every) = self.fsync
            && every.is_zero()
        {
            return invalid("fsync interval must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes must be positive".into());
        }
        if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&self.max_batch_bytes) {
            return invalid(format!(
                "max_batch_bytes must be between {MIN_BATCH_BYTES} and {MAX_BATCH_BYTES}, got {}",
                self.max_batch_bytes
            ));
        }
        Ok(())
    }

    /// Bytes a batch takes beyond `encoded_batch_len` of its records.
    pub fn batch_overhead(&self) -> u64 {
        if self.encryption.is_some() {
            SEAL_OVERHEAD as u64
        } else {
            0
        }
    }

    pub(crate) fn keys(&self) -> Option<&Keyring> {
        self.encryption.as_ref()
    }

    pub(crate) fn segment_max_age_ms(&self) -> i64 {
        duration_ms(self.segment_max_age)
    }

    pub(crate) fn retention_max_age_ms(&self) -> Option<i64> {
        self.retention_max_age.map(duration_ms)
    }
}

/// Whole milliseconds of `d`, saturating at `i64::MAX` (record timestamps are `i64` ms).
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_displays_the_same_forms() {
        for (text, policy) in [
            ("always", FsyncPolicy::Always),
            ("never", FsyncPolicy::Never),
            (
                "interval:250",
                FsyncPolicy::Interval(Duration::from_millis(250)),
            ),
        ] {
            assert_eq!(text.parse::<FsyncPolicy>().unwrap(), policy);
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(
            " ALWAYS ".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        assert_eq!(
            "Interval: 5".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(5))
        );
    }

    #[test]
    fn fsync_policy_rejects_bad_forms() {
        for text in [
            "",
            "sometimes",
            "interval",
            "interval:",
            "interval:0",
            "interval:-3",
            "interval:x",
            "always:1",
        ] {
            assert!(
                matches!(text.parse::<FsyncPolicy>(), Err(LogError::InvalidConfig(_))),
                "{text:?} should not parse"
            );
        }
    }

    #[test]
    fn default_config_is_valid() {
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn zero_and_out_of_range_settings_are_rejected() {
        let bad: Vec<fn(&mut LogConfig)> = vec![
            |c| c.segment_max_bytes = 0,
            |c| c.segment_max_bytes = MAX_SEGMENT_BYTES + 1,
            |c| c.segment_max_age = Duration::ZERO,
            |c| c.retention_max_age = Some(Duration::ZERO),
            |c| c.retention_max_bytes = Some(0),
            |c| c.fsync = FsyncPolicy::Interval(Duration::ZERO),
            |c| c.index_interval_bytes = 0,
            |c| c.max_batch_bytes = 0,
            |c| c.max_batch_bytes = MAX_BATCH_BYTES + 1,
        ];
        for (i, mutate) in bad.into_iter().enumerate() {
            let mut config = LogConfig::default();
            mutate(&mut config);
            assert!(
                matches!(config.validate(), Err(LogError::InvalidConfig(_))),
                "case {i} should be invalid"
            );
        }
    }
}
