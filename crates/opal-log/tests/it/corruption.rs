//! Damaged files: torn or corrupt tails are cut, damaged indexes are rebuilt, intact closed
//! indexes are trusted without reading the data, and damaged closed data reads as `Corrupt`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use opal_log::{Log, LogError, encoded_batch_len};

use crate::support::{Written, data_files, fill, rec, small, values, with_ext};

const VALUE: usize = 100;

/// One active segment holding `count` one-record batches; returns the data file, the values
/// and the byte position of each batch.
fn single_segment(dir: &Path, count: usize) -> (PathBuf, Written, Vec<u64>) {
    let log = Log::open(dir, small(1 << 20)).unwrap();
    let written = fill(&log, count, VALUE);
    log.close().unwrap();
    let mut positions = vec![0u64];
    for (i, (_, value)) in written.iter().enumerate() {
        let len = encoded_batch_len(&[rec(1_000 + i as i64, value.clone())]);
        positions.push(positions[i] + len);
    }
    let file = data_files(dir).remove(0);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), positions[count]);
    (file, written, positions)
}

fn flip(path: &Path, at: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5A], at).unwrap();
}

fn assert_recovers_to(dir: &Path, written: &[(u64, Vec<u8>)], keep: usize, file: &Path, len: u64) {
    let log = Log::open(dir, small(1 << 20)).unwrap();
    assert_eq!(log.next_offset(), keep as u64);
    assert_eq!(values(&log), written[..keep].to_vec());
    assert_eq!(
        std::fs::metadata(file).unwrap().len(),
        len,
        "the damaged tail is cut off"
    );
    let next = log.append_blocking(vec![rec(9, "after recovery")]).unwrap();
    assert_eq!(next.base_offset, keep as u64);
    log.close().unwrap();
    let log = Log::open(dir, small(1 << 20)).unwrap();
    assert_eq!(log.next_offset(), keep as u64 + 1);
}

#[test]
fn a_flipped_byte_in_the_tail_batch_cuts_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (file, written, positions) = single_segment(dir.path(), 10);
    flip(&file, positions[9] + 60);
    assert_recovers_to(dir.path(), &written, 9, &file, positions[9]);
}

#[test]
fn a_batch_cut_in_half_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (file, written, positions) = single_segment(dir.path(), 10);
    let half = positions[9] + (positions[10] - positions[9]) / 2;
    OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(half)
        .unwrap();
    assert_recovers_to(dir.path(), &written, 9, &file, positions[9]);
    // A header cut short is a torn tail too.
    let dir = tempfile::tempdir().unwrap();
    let (file, written, positions) = single_segment(dir.path(), 10);
    OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(positions[9] + 7)
        .unwrap();
    assert_recovers_to(dir.path(), &written, 9, &file, positions[9]);
}

#[test]
fn garbage_after_the_last_batch_is_removed() {
    for garbage in [vec![0xABu8; 100], vec![0u8; 4096], vec![1u8; 3]] {
        let dir = tempfile::tempdir().unwrap();
        let (file, written, positions) = single_segment(dir.path(), 10);
        OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        assert_recovers_to(dir.path(), &written, 10, &file, positions[10]);
    }
}

#[test]
fn damage_inside_the_active_segment_cuts_from_the_damaged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (file, written, positions) = single_segment(dir.path(), 10);
    flip(&file, positions[4] + 2); // in the base offset of batch 4
    assert_recovers_to(dir.path(), &written, 4, &file, positions[4]);
}

/// A log of several closed segments plus an active one.
fn multi_segment(dir: &Path) -> (Vec<PathBuf>, Written) {
    let log = Log::open(dir, small(1_024)).unwrap();
    let written = fill(&log, 40, VALUE);
    log.close().unwrap();
    let files = data_files(dir);
    assert!(files.len() >= 4, "{files:?}");
    (files, written)
}

fn reopen_and_check(dir: &Path, written: &[(u64, Vec<u8>)]) -> Log {
    let log = Log::open(dir, small(1_024)).unwrap();
    assert_eq!(values(&log), written.to_vec());
    for (offset, value) in written.iter().step_by(3) {
        let read = log.read(*offset, 1).unwrap();
        assert_eq!(
            (read[0].offset, read[0].record.value.to_vec()),
            (*offset, value.clone())
        );
    }
    for (i, (offset, _)) in written.iter().enumerate() {
        assert_eq!(
            log.offset_for_time(1_000 + i as i64).unwrap(),
            Some(*offset)
        );
    }
    log
}

/// Damages an index file of the second segment, reopens, and checks the index files were
/// rebuilt byte for byte and reads are right.
fn check_index_rebuilt(damage: impl Fn(&Path)) {
    for ext in ["index", "timeindex"] {
        let dir = tempfile::tempdir().unwrap();
        let (files, written) = multi_segment(dir.path());
        let index = with_ext(&files[1], ext);
        let original = std::fs::read(&index).unwrap();
        damage(&index);
        let log = reopen_and_check(dir.path(), &written);
        assert_eq!(
            std::fs::read(&index).unwrap(),
            original,
            "{ext} rebuilt as it was"
        );
        log.close().unwrap();
    }
}

#[test]
fn a_deleted_index_file_is_rebuilt() {
    check_index_rebuilt(|path| std::fs::remove_file(path).unwrap());
}

#[test]
fn a_truncated_index_file_is_rebuilt() {
    check_index_rebuilt(|path| {
        let len = std::fs::metadata(path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
    });
    check_index_rebuilt(|path| {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap()
    });
}

#[test]
fn an_index_with_a_bad_checksum_is_rebuilt() {
    check_index_rebuilt(|path| {
        let len = std::fs::metadata(path).unwrap().len();
        flip(path, len - 1); // the checksum itself
    });
    check_index_rebuilt(|path| flip(path, 3)); // an entry
}

#[test]
fn intact_closed_indexes_are_trusted_without_reading_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = multi_segment(dir.path());
    let victim = &files[1];
    let index_before = std::fs::read(with_ext(victim, "index")).unwrap();
    let time_before = std::fs::read(with_ext(victim, "timeindex")).unwrap();
    // Same length, no valid batch left: a scan at open would notice and rewrite the indexes.
    let len = std::fs::metadata(victim).unwrap().len();
    std::fs::write(victim, vec![0u8; len as usize]).unwrap();
    let log = Log::open(dir.path(), small(1_024)).unwrap();
    assert_eq!(
        std::fs::read(with_ext(victim, "index")).unwrap(),
        index_before,
        "index untouched"
    );
    assert_eq!(
        std::fs::read(with_ext(victim, "timeindex")).unwrap(),
        time_before,
        "time index untouched"
    );
    assert_eq!(log.next_offset(), written.len() as u64);
    let victim_base: u64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next_base: u64 = files[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    for offset in victim_base..next_base {
        assert!(
            matches!(log.read(offset, 1), Err(LogError::Corrupt { ref path, .. }) if path == victim),
            "offset {offset} of the zeroed segment must read as corrupt"
        );
    }
    // The segments around it are fine.
    assert_eq!(
        log.read(0, 1).unwrap()[0].record.value.to_vec(),
        written[0].1
    );
    let after = log.read(next_base, usize::MAX).unwrap();
    assert_eq!(after.len(), written.len() - next_base as usize);
}

#[test]
fn a_flipped_byte_in_a_closed_segment_reads_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = multi_segment(dir.path());
    let base: u64 = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Second batch of the segment, inside its value.
    let first_len =
        encoded_batch_len(&[rec(1_000 + base as i64, written[base as usize].1.clone())]);
    flip(&files[1], first_len + 80);
    let log = Log::open(dir.path(), small(1_024)).unwrap();
    assert_eq!(
        log.read(base, 1).unwrap()[0].offset,
        base,
        "the batch before is intact"
    );
    match log.read(base + 1, 1) {
        Err(LogError::Corrupt {
            path,
            position,
            reason,
        }) => {
            assert_eq!(path, files[1]);
            assert_eq!(position, first_len);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(log.read(base + 2, 1).is_ok());
}

#[test]
fn garbage_after_a_closed_segment_is_skipped_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = multi_segment(dir.path());
    let len = std::fs::metadata(&files[1]).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&files[1])
        .unwrap()
        .write_all(&[0xEE; 77])
        .unwrap();
    // The index no longer covers the file: rebuilt; the data file keeps its bytes.
    let log = reopen_and_check(dir.path(), &written);
    assert_eq!(std::fs::metadata(&files[1]).unwrap().len(), len + 77);
    log.close().unwrap();
    let log = reopen_and_check(dir.path(), &written);
    log.close().unwrap();
}
