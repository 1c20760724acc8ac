//! Behaviour of the public API: appends, reads, reopen, validation, locking, closing, watching.

use std::time::{Duration, Instant};

use opal_log::{FsyncPolicy, Log, LogConfig, LogError, encoded_batch_len};

use crate::support::{data_files, fill, keyed, read_all, rec, small, values, with_ext};

#[test]
fn appended_records_read_back_with_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let first = log
        .append_blocking(vec![
            keyed(10, "k1", &[("h", "v")], "a"),
            rec(12, ""),
            rec(11, "c"),
        ])
        .unwrap();
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    let second = log.append_blocking(vec![rec(20, "d")]).unwrap();
    assert_eq!((second.base_offset, second.last_offset), (3, 3));
    assert_eq!(log.next_offset(), 4);
    let all = read_all(&log);
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].record, keyed(10, "k1", &[("h", "v")], "a"));
    assert_eq!(all[1].record.value.len(), 0);
    // Reading from the middle of a batch skips its earlier records.
    let from_two = log.read(2, usize::MAX).unwrap();
    assert_eq!(
        from_two.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(log.read(4, usize::MAX).unwrap().is_empty());
    assert!(log.read(400, usize::MAX).unwrap().is_empty());
    let stats = log.stats();
    assert_eq!((stats.appends, stats.records, stats.segments), (2, 4, 1));
    assert!(
        stats.syncs >= 2,
        "fsync=always syncs every group: {stats:?}"
    );
    log.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_append_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let mut watch = log.subscribe();
    assert_eq!(*watch.borrow_and_update(), 0);
    let appended = log.append(vec![rec(1, "x"), rec(2, "y")]).await.unwrap();
    assert_eq!(appended.last_offset, 1);
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*watch.borrow(), 2);
    // Read-your-writes: once the append resolved, the records are visible.
    assert_eq!(log.read(0, 1).unwrap().len(), 2);
    log.close().unwrap();
}

#[test]
fn reopen_continues_at_the_next_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(600)).unwrap();
    let written = fill(&log, 30, 50);
    log.close().unwrap();
    let log = Log::open(dir.path(), small(600)).unwrap();
    assert_eq!(log.next_offset(), 30);
    assert_eq!(values(&log), written);
    let next = log.append_blocking(vec![rec(5, "after")]).unwrap();
    assert_eq!(next.base_offset, 30);
    assert!(data_files(dir.path()).len() > 2, "small segments roll");
    drop(log);
    // Dropping the last handle also stops the writer and releases the lock.
    let log = Log::open(dir.path(), small(600)).unwrap();
    assert_eq!(log.next_offset(), 31);
}

#[test]
fn invalid_appends_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_batch_bytes: 200,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    assert!(matches!(
        log.append_blocking(vec![]),
        Err(LogError::EmptyAppend)
    ));
    let big = vec![rec(1, vec![0u8; 300])];
    let size = encoded_batch_len(&big);
    match log.append_blocking(big) {
        Err(LogError::BatchTooLarge {
            size: s,
            limit: 200,
        }) => assert_eq!(s, size),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    let stats = log.stats();
    assert_eq!(
        (stats.next_offset, stats.size_bytes, stats.writes),
        (0, 0, 0)
    );
    assert_eq!(
        std::fs::metadata(&data_files(dir.path())[0]).unwrap().len(),
        0
    );
    // A batch exactly at the limit is accepted.
    let mut value = vec![0u8; 100];
    while encoded_batch_len(&[rec(1, value.clone())]) < 200 {
        value.push(0);
    }
    assert_eq!(encoded_batch_len(&[rec(1, value.clone())]), 200);
    log.append_blocking(vec![rec(1, value)]).unwrap();
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        LogConfig {
            segment_max_bytes: 0,
            ..LogConfig::default()
        },
        LogConfig {
            index_interval_bytes: 0,
            ..LogConfig::default()
        },
        LogConfig {
            fsync: FsyncPolicy::Interval(Duration::ZERO),
            ..LogConfig::default()
        },
    ] {
        assert!(matches!(
            Log::open(dir.path(), config),
            Err(LogError::InvalidConfig(_))
        ));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn a_locked_directory_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogConfig::default()),
        Err(LogError::Locked(_))
    ));
    log.close().unwrap();
    let reopened = Log::open(dir.path(), LogConfig::default()).unwrap();
    reopened.close().unwrap();
}

#[test]
fn a_closed_log_refuses_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let other_handle = log.clone();
    log.append_blocking(vec![rec(1, "x")]).unwrap();
    log.close().unwrap();
    assert!(matches!(
        other_handle.append_blocking(vec![rec(1, "y")]),
        Err(LogError::Closed)
    ));
    assert!(matches!(other_handle.read(0, 100), Err(LogError::Closed)));
    assert!(matches!(other_handle.roll(), Err(LogError::Closed)));
    assert!(matches!(
        other_handle.enforce_retention(0),
        Err(LogError::Closed)
    ));
    assert!(matches!(
        other_handle.offset_for_time(0),
        Err(LogError::Closed)
    ));
    assert!(matches!(other_handle.close(), Err(LogError::Closed)));
}

#[test]
fn max_bytes_bounds_reads_in_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(700)).unwrap();
    fill(&log, 40, 60);
    let batch = encoded_batch_len(&[rec(1_000, vec![0u8; 60])]) as usize;
    assert_eq!(log.read(0, 0).unwrap().len(), 1, "at least one batch");
    assert_eq!(log.read(0, batch * 5).unwrap().len(), 5);
    assert_eq!(log.read(0, batch * 5 + batch - 1).unwrap().len(), 5);
    // Crosses segment boundaries (700-byte segments hold about 7 batches).
    let many = log.read(3, batch * 20).unwrap();
    assert_eq!(
        many.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (3..23).collect::<Vec<_>>()
    );
}

#[test]
fn offset_for_time_finds_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(400)).unwrap();
    // Timestamps go back and forth; batch max timestamps: 100, 300, 200, 500, 400, ...
    for (i, ts) in [100, 300, 200, 500, 400, 700, 600, 900].iter().enumerate() {
        log.append_blocking(vec![rec(*ts, vec![i as u8; 90])])
            .unwrap();
    }
    assert!(data_files(dir.path()).len() > 2);
    for (ts, expected) in [
        (0, Some(0)),
        (100, Some(0)),
        (101, Some(1)),
        (300, Some(1)),
        (301, Some(3)),
        (450, Some(3)),
        (501, Some(5)),
        (800, Some(7)),
        (901, None),
    ] {
        assert_eq!(log.offset_for_time(ts).unwrap(), expected, "ts {ts}");
    }
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = Log::open(empty_dir.path(), LogConfig::default()).unwrap();
    assert_eq!(empty.offset_for_time(i64::MIN).unwrap(), None);
}

#[test]
fn rolled_segments_get_index_files_and_padded_names() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(1 << 20)).unwrap();
    fill(&log, 3, 10);
    log.roll().unwrap();
    log.roll().unwrap(); // empty active segment: nothing to roll
    fill(&log, 2, 10);
    let files = data_files(dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["00000000000000000000.log", "00000000000000000003.log"]
    );
    assert!(with_ext(&files[0], "index").exists() && with_ext(&files[0], "timeindex").exists());
    assert!(
        !with_ext(&files[1], "index").exists(),
        "the active segment's index lives in memory"
    );
    assert_eq!(log.stats().segments, 2);
}

#[test]
fn segments_roll_by_age_of_their_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_age: Duration::from_millis(1_000),
        ..small(1 << 20)
    };
    let log = Log::open(dir.path(), config).unwrap();
    log.append_blocking(vec![rec(10_000, "a")]).unwrap();
    log.append_blocking(vec![rec(11_000, "b")]).unwrap(); // exactly the max age: no roll
    assert_eq!(log.stats().segments, 1);
    log.append_blocking(vec![rec(11_001, "c")]).unwrap();
    assert_eq!(log.stats().segments, 2);
    // Checked against the clock given to enforce_retention too.
    assert_eq!(log.enforce_retention(12_001).unwrap(), 0);
    assert_eq!(log.stats().segments, 2);
    assert_eq!(log.enforce_retention(12_002).unwrap(), 0);
    assert_eq!(log.stats().segments, 3);
}

#[test]
fn retention_deletes_oldest_segments_and_moves_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_max_bytes: Some(1_500),
        ..small(500)
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let written = fill(&log, 60, 60);
    let before = log.stats();
    let deleted = log.enforce_retention(0).unwrap();
    assert!(deleted > 0);
    let after = log.stats();
    assert_eq!(after.segments, before.segments - deleted as u64);
    assert!(after.size_bytes <= 1_500, "{after:?}");
    let start = log.start_offset();
    assert!(start > 0);
    assert!(
        matches!(log.read(start - 1, 100), Err(LogError::OffsetBelowStart { offset, start: s }) if offset == start - 1 && s == start)
    );
    assert_eq!(values(&log), written[start as usize..].to_vec());
    assert_eq!(data_files(dir.path()).len() as u64, after.segments);
    log.close().unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.start_offset(), start, "the start survives a reopen");
}

#[test]
fn age_retention_can_empty_an_idle_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_max_age: Some(Duration::from_millis(500)),
        ..small(300)
    };
    let log = Log::open(dir.path(), config).unwrap();
    fill(&log, 10, 40); // timestamps 1000..1009
    assert_eq!(log.enforce_retention(1_400).unwrap(), 0);
    // Segments of three records; the active one (offset 9, ts 1009) is not expired yet.
    assert_eq!(log.enforce_retention(1_509).unwrap(), 3);
    assert_eq!((log.start_offset(), log.stats().segments), (9, 1));
    assert_eq!(log.enforce_retention(1_510).unwrap(), 1);
    assert_eq!(
        log.start_offset(),
        10,
        "every record expired, the active segment was rolled and deleted"
    );
    assert_eq!(log.next_offset(), 10);
    assert!(read_all(&log).is_empty());
    assert_eq!(
        log.append_blocking(vec![rec(5_000, "new")])
            .unwrap()
            .base_offset,
        10
    );
}

#[test]
fn interval_policy_syncs_an_idle_log_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(50)),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    log.append_blocking(vec![rec(1, "x")]).unwrap();
    let started = Instant::now();
    while log.stats().syncs == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no sync within 2 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    let syncs = log.stats().syncs;
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(log.stats().syncs, syncs, "nothing to sync while idle");
}

#[test]
fn never_policy_syncs_only_on_roll_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(1 << 20)).unwrap();
    fill(&log, 20, 10);
    assert_eq!(log.stats().syncs, 0);
    log.roll().unwrap();
    assert_eq!(log.stats().syncs, 1);
    fill(&log, 2, 10);
    let handle = log.clone();
    log.close().unwrap();
    assert_eq!(handle.stats().syncs, 2);
}
