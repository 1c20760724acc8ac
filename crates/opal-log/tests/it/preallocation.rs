//! Space written ahead: under a syncing policy the active segment's file is filled with zeros
//! ahead of its appends (so that an `fdatasync` need not write the inode); recovery cuts the
//! zeros off without losing or inventing a record, and closed segments end with their last
//! batch.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use opal_log::{FsyncPolicy, Log, LogConfig, encoded_batch_len};

use crate::support::{Written, data_files, fill, rec, small, values};

const VALUE: usize = 100;

fn syncing(segment_max_bytes: u64) -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        ..small(segment_max_bytes)
    }
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Bytes taken by `count` one-record batches written by `fill`.
fn filled_len(written: &Written) -> u64 {
    written
        .iter()
        .enumerate()
        .map(|(i, (_, value))| encoded_batch_len(&[rec(1_000 + i as i64, value.clone())]))
        .sum()
}

/// Appends `count` records under `always`, then copies the log's files while it is open, as a
/// crash would leave them (each append was synced before it was acknowledged, so the copy holds
/// every acknowledged one). Returns the copy (kept alive by the guard) and what was appended.
fn crashed_copy(count: usize) -> (tempfile::TempDir, PathBuf, Written) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), syncing(1 << 20)).unwrap();
    let written = fill(&log, count, VALUE);
    let copy = tempfile::tempdir().unwrap();
    let crashed = copy.path().join("log");
    std::fs::create_dir_all(&crashed).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), crashed.join(entry.file_name())).unwrap();
    }
    log.close().unwrap();
    (copy, crashed, written)
}

#[test]
fn the_active_segment_is_filled_ahead_and_cut_back_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), syncing(1 << 20)).unwrap();
    let written = fill(&log, 20, VALUE);
    let file = data_files(dir.path()).remove(0);
    let data = filled_len(&written);
    // 64 KiB ahead of the first batch, then within them.
    let first = encoded_batch_len(&[rec(1_000, written[0].1.clone())]);
    assert_eq!(
        len(&file),
        first + 64 * 1024,
        "zeros written ahead of {data} bytes"
    );
    let mut tail = vec![1u8; 4096];
    file_at(&file).read_exact_at(&mut tail, data).unwrap();
    assert!(tail.iter().all(|&b| b == 0), "the space ahead holds zeros");
    log.close().unwrap();
    assert_eq!(len(&file), data, "close cuts the zeros off");
    let log = Log::open(dir.path(), syncing(1 << 20)).unwrap();
    assert_eq!(values(&log), written);
}

#[test]
fn the_never_policy_writes_nothing_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(1 << 20)).unwrap();
    let written = fill(&log, 5, VALUE);
    let file = data_files(dir.path()).remove(0);
    assert_eq!(len(&file), filled_len(&written));
    log.close().unwrap();
}

#[test]
fn a_crashed_log_recovers_every_append_and_continues_after_them() {
    let (_copy, crashed, written) = crashed_copy(20);

    let file = data_files(&crashed).remove(0);
    assert!(
        len(&file) > filled_len(&written),
        "the copy has the zeros ahead"
    );
    let log = Log::open(&crashed, syncing(1 << 20)).unwrap();
    assert_eq!(log.next_offset(), 20);
    assert_eq!(values(&log), written);
    assert_eq!(
        len(&file),
        filled_len(&written),
        "recovery cuts the zeros off"
    );
    let next = log.append_blocking(vec![rec(9, "after recovery")]).unwrap();
    assert_eq!(next.base_offset, 20);
    log.close().unwrap();

    let log = Log::open(&crashed, syncing(1 << 20)).unwrap();
    let mut expected = written.clone();
    expected.push((20, b"after recovery".to_vec()));
    assert_eq!(values(&log), expected);
    log.close().unwrap();
}

#[test]
fn a_torn_batch_in_the_space_written_ahead_is_cut_off() {
    let (_copy, crashed, written) = crashed_copy(10);

    // The first half of a batch that was being written when the machine stopped: the copy of
    // the last batch's first bytes, at the end of the data.
    let file = data_files(&crashed).remove(0);
    let data = filled_len(&written);
    let last = encoded_batch_len(&[rec(1_009, written[9].1.clone())]);
    let mut torn = vec![0u8; (last / 2) as usize];
    file_at(&file)
        .read_exact_at(&mut torn, data - last)
        .unwrap();
    file_at(&file).write_all_at(&torn, data).unwrap();

    let log = Log::open(&crashed, syncing(1 << 20)).unwrap();
    assert_eq!(values(&log), written, "nothing lost, nothing invented");
    let next = log.append_blocking(vec![rec(9, "after recovery")]).unwrap();
    assert_eq!(next.base_offset, 10);
    log.close().unwrap();
    assert_eq!(
        len(&file),
        data + encoded_batch_len(&[rec(9, "after recovery")])
    );
}

#[test]
fn closed_segments_end_with_their_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about ten batches per segment.
    let log = Log::open(dir.path(), syncing(1_500)).unwrap();
    let written = fill(&log, 45, VALUE);
    let files = data_files(dir.path());
    assert!(files.len() >= 4, "rolled: {files:?}");
    let batch = |offset: u64| {
        encoded_batch_len(&[rec(
            1_000 + offset as i64,
            written[offset as usize].1.clone(),
        )])
    };
    let base =
        |path: &Path| -> u64 { path.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    for pair in files.windows(2) {
        let expected: u64 = (base(&pair[0])..base(&pair[1])).map(batch).sum();
        assert_eq!(
            len(&pair[0]),
            expected,
            "{} ends with its last batch",
            pair[0].display()
        );
    }
    log.close().unwrap();
    let log = Log::open(dir.path(), syncing(1_500)).unwrap();
    assert_eq!(values(&log), written);
    log.close().unwrap();
}

fn file_at(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

#[test]
fn a_busy_segment_is_extended_further_ahead_up_to_its_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), syncing(300 * 1024)).unwrap();
    let mut written = Written::new();
    let mut furthest_ahead = 0;
    for i in 0..280 {
        let value = vec![b'a' + (i % 26) as u8; 1_000];
        let appended = log
            .append_blocking(vec![rec(1_000 + i, value.clone())])
            .unwrap();
        written.push((appended.base_offset, value));
        let file = data_files(dir.path()).remove(0);
        furthest_ahead = furthest_ahead.max(len(&file) - filled_len(&written));
    }
    // The steps grow with what the segment holds: beyond 64 KiB once it holds more.
    assert!(furthest_ahead > 64 * 1024, "{furthest_ahead}");
    // But never past the segment's size limit.
    let data = filled_len(&written);
    assert!(data < 300 * 1024, "{data}");
    let file = data_files(dir.path()).remove(0);
    assert_eq!(len(&file), 300 * 1024);
    log.close().unwrap();
    assert_eq!(len(&file), data);
}
