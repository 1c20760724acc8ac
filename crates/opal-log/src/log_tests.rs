//! Unit tests of failure handling: a failed write or sync fails its appends and the log after it.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::*;
use crate::config::FsyncPolicy;

fn record(value: &'static [u8]) -> Record {
    Record {
        timestamp_ms: 1,
        key: None,
        headers: Vec::new(),
        value: Bytes::from_static(value),
    }
}

fn assert_failed(result: Result<Appended>) {
    match result {
        Err(LogError::Io { source, .. }) => {
            assert!(source.to_string().contains("injected"), "{source}")
        }
        other => panic!("expected an i/o failure, got {other:?}"),
    }
}

fn fails_and_stays_failed(
    fault: impl Fn(&Shared) -> &std::sync::atomic::AtomicBool,
    fsync: FsyncPolicy,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    log.append_blocking(vec![record(b"kept")]).unwrap();
    fault(&log.inner.shared).store(true, Ordering::Relaxed);
    assert_failed(log.append_blocking(vec![record(b"lost")]));
    let attempts = log
        .inner
        .shared
        .faults
        .sync_attempts
        .load(Ordering::Relaxed);
    // The fault is gone, but the log does not pretend: no retry, every later append fails.
    fault(&log.inner.shared).store(false, Ordering::Relaxed);
    assert!(matches!(
        log.append_blocking(vec![record(b"later")]),
        Err(LogError::Io { .. })
    ));
    assert!(matches!(log.roll(), Err(LogError::Io { .. })));
    assert_eq!(
        log.next_offset(),
        1,
        "the failed append never became visible"
    );
    assert_eq!(
        log.read(0, usize::MAX).unwrap().len(),
        1,
        "reads still work"
    );
    assert!(
        matches!(log.close(), Err(LogError::Io { .. })),
        "close reports the failure"
    );
    let after = log
        .inner
        .shared
        .faults
        .sync_attempts
        .load(Ordering::Relaxed);
    assert_eq!(
        after, attempts,
        "no fsync is tried after the failure, not even by close"
    );
    // A reopen recovers from what is on disk and accepts appends again.
    let log = Log::open(dir.path(), config).unwrap();
    let next = log.next_offset();
    assert!(
        next == 1 || next == 2,
        "the failed append may or may not have reached the disk"
    );
    assert_eq!(
        log.append_blocking(vec![record(b"again")])
            .unwrap()
            .base_offset,
        next
    );
}

#[test]
fn a_failed_write_fails_the_group_and_the_log() {
    fails_and_stays_failed(|s| &s.faults.fail_write, FsyncPolicy::Always);
    fails_and_stays_failed(|s| &s.faults.fail_write, FsyncPolicy::Never);
}

#[test]
fn a_failed_fsync_fails_the_group_and_the_log() {
    fails_and_stays_failed(|s| &s.faults.fail_sync, FsyncPolicy::Always);
}

#[test]
fn debug_output_stays_short() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append_blocking(vec![record(b"x")]).unwrap();
    let text = format!("{log:?}");
    assert!(
        text.contains("next_offset: 1") && text.len() < 300,
        "{text}"
    );
}

#[test]
fn read_at_most_returns_that_many_across_batches_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 4 * 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for _ in 0..20 {
        log.append_blocking((0..10).map(|_| record(&[b'x'; 100])).collect())
            .unwrap();
    }
    let all = log.read(0, usize::MAX).unwrap();
    assert_eq!(all.len(), 200);
    for (from, max) in [
        (0, 1),
        (3, 7),
        (5, 10),
        (9, 35),
        (150, 100),
        (199, 5),
        (0, 1000),
    ] {
        let got = log.read_at_most(from, usize::MAX, max).unwrap();
        let offsets: Vec<u64> = got
            .iter()
            .map(|r| r.offset)
            .filter(|&o| o >= from)
            .collect();
        let want: Vec<u64> = (from..200).take(max).collect();
        assert_eq!(offsets, want, "from {from}, at most {max}");
    }
}
