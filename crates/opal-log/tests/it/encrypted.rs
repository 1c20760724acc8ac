//! Encrypted logs: nothing readable on disk, plaintext logs stay readable after encryption is
//! turned on, key rotation, wrong and missing keys (an error, never a truncation), and torn
//! tails still cut off by recovery.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use opal_log::{DecryptFailure, Keyring, Log, LogConfig, LogError, Zeroizing, encoded_batch_len};

use crate::support::{data_files, keyed, small, values};

const MARKERS: [&str; 4] = [
    "KEY-MARKER-7f3a",
    "HEADER-NAME-MARKER-7f3a",
    "HEADER-VALUE-MARKER-7f3a",
    "PAYLOAD-MARKER-7f3a",
];

fn keys(ids: &[(u16, u8)], current: u16) -> Keyring {
    Keyring::new(
        ids.iter()
            .map(|&(id, fill)| (id, Zeroizing::new([fill; 32]))),
        current,
    )
    .unwrap()
}

fn sealed(segment_max_bytes: u64, keyring: Keyring) -> LogConfig {
    LogConfig {
        encryption: Some(keyring),
        ..small(segment_max_bytes)
    }
}

/// Appends `count` one-record batches whose key, header and value carry the markers and `i`.
fn fill_marked(log: &Log, from: usize, count: usize) -> Vec<(u64, Vec<u8>)> {
    (from..from + count)
        .map(|i| {
            let value = format!("{}-{i}", MARKERS[3]).into_bytes();
            let record = keyed(
                1_000 + i as i64,
                MARKERS[0],
                &[(MARKERS[1], MARKERS[2])],
                value.clone(),
            );
            let appended = log.append_blocking(vec![record]).unwrap();
            (appended.base_offset, value)
        })
        .collect()
}

/// Every marker found anywhere in the files of `dir`.
fn markers_on_disk(dir: &Path) -> Vec<&'static str> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for marker in MARKERS {
            if bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
                && !found.contains(&marker)
            {
                found.push(marker);
            }
        }
    }
    found
}

/// The key id in the header of every batch of a data file, in order (0: plaintext).
fn batch_key_ids(file: &Path) -> Vec<u16> {
    let bytes = std::fs::read(file).unwrap();
    let mut ids = Vec::new();
    let mut pos = 0;
    while pos + 40 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        assert_eq!(
            bytes[pos + 17] & 1 == 1,
            bytes[pos + 18..pos + 20] != [0, 0]
        );
        ids.push(u16::from_le_bytes([bytes[pos + 18], bytes[pos + 19]]));
        pos += len;
    }
    assert_eq!(pos, bytes.len(), "batches cover the file");
    ids
}

fn file_lengths(dir: &Path) -> Vec<(PathBuf, u64)> {
    data_files(dir)
        .into_iter()
        .map(|f| {
            let len = std::fs::metadata(&f).unwrap().len();
            (f, len)
        })
        .collect()
}

fn decrypt_failure(err: LogError) -> DecryptFailure {
    match err {
        LogError::Decrypt { failure, .. } => failure,
        other => panic!("expected a decryption error, got {other}"),
    }
}

#[test]
fn an_encrypted_log_keeps_nothing_readable_and_reads_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let config = sealed(1_024, keys(&[(1, 1)], 1));
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let written = fill_marked(&log, 0, 30);
    // Checked while the log is open (the active segment) and after closing (rolled segments
    // with their index files).
    assert_eq!(markers_on_disk(dir.path()), Vec::<&str>::new());
    log.close().unwrap();
    assert!(data_files(dir.path()).len() >= 3, "several segments");
    assert_eq!(markers_on_disk(dir.path()), Vec::<&str>::new());

    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(values(&log), written);
    let record = &log.read(5, 1).unwrap()[0].record;
    assert_eq!(record.key.as_deref(), Some(MARKERS[0].as_bytes()));
    assert_eq!(record.headers[0].0, MARKERS[1]);
    assert_eq!(&record.headers[0].1[..], MARKERS[2].as_bytes());
}

#[test]
fn the_same_appends_without_encryption_leave_every_marker_on_disk() {
    // The check above is only worth something if it finds the markers in a plaintext log.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(1_024)).unwrap();
    fill_marked(&log, 0, 30);
    log.close().unwrap();
    let mut found = markers_on_disk(dir.path());
    found.sort_unstable();
    let mut all = MARKERS.to_vec();
    all.sort_unstable();
    assert_eq!(found, all);
}

#[test]
fn a_plaintext_log_stays_readable_after_encryption_is_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(1 << 20)).unwrap();
    let mut written = fill_marked(&log, 0, 5);
    log.close().unwrap();
    let config = sealed(1 << 20, keys(&[(1, 1)], 1));
    let log = Log::open(dir.path(), config.clone()).unwrap();
    written.extend(fill_marked(&log, 5, 5));
    assert_eq!(values(&log), written);
    log.close().unwrap();
    let file = data_files(dir.path()).remove(0);
    assert_eq!(batch_key_ids(&file), vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    assert_eq!(values(&Log::open(dir.path(), config).unwrap()), written);
}

#[test]
fn after_rotation_old_batches_read_with_the_old_key_and_new_ones_use_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), sealed(1 << 20, keys(&[(1, 1)], 1))).unwrap();
    let mut written = fill_marked(&log, 0, 3);
    log.close().unwrap();
    let rotated = sealed(1 << 20, keys(&[(1, 1), (2, 2)], 2));
    let log = Log::open(dir.path(), rotated.clone()).unwrap();
    written.extend(fill_marked(&log, 3, 3));
    assert_eq!(values(&log), written);
    log.close().unwrap();
    let file = data_files(dir.path()).remove(0);
    assert_eq!(batch_key_ids(&file), vec![1, 1, 1, 2, 2, 2]);
    assert_eq!(values(&Log::open(dir.path(), rotated).unwrap()), written);
}

#[test]
fn opening_with_missing_or_wrong_keys_fails_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), sealed(1 << 20, keys(&[(1, 1)], 1))).unwrap();
    let written = fill_marked(&log, 0, 4);
    log.close().unwrap();
    let before = file_lengths(dir.path());
    let cases = [
        (small(1 << 20), DecryptFailure::NoKeys { key_id: 1 }),
        (
            sealed(1 << 20, keys(&[(2, 1)], 2)),
            DecryptFailure::UnknownKey { key_id: 1 },
        ),
        (
            sealed(1 << 20, keys(&[(1, 9)], 1)),
            DecryptFailure::NotAuthentic { key_id: 1 },
        ),
    ];
    for (config, expected) in cases {
        let err = Log::open(dir.path(), config).unwrap_err();
        assert!(err.to_string().contains("at byte 0"), "{err}");
        assert_eq!(decrypt_failure(err), expected);
        assert_eq!(file_lengths(dir.path()), before, "nothing was truncated");
    }
    let log = Log::open(dir.path(), sealed(1 << 20, keys(&[(1, 1)], 1))).unwrap();
    assert_eq!(
        values(&log),
        written,
        "the right key still reads everything"
    );
}

#[test]
fn reading_a_closed_segment_without_its_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), sealed(1_024, keys(&[(1, 1)], 1))).unwrap();
    fill_marked(&log, 0, 30);
    log.close().unwrap();
    // Rotate and fill a new active segment so that only closed segments hold key 1.
    let log = Log::open(dir.path(), sealed(1_024, keys(&[(1, 1), (2, 2)], 2))).unwrap();
    log.roll().unwrap();
    let next = log.next_offset();
    fill_marked(&log, 30, 2);
    log.close().unwrap();
    // Closed segments are not read at open, so a ring without key 1 opens; reading them fails.
    let log = Log::open(dir.path(), sealed(1_024, keys(&[(2, 2)], 2))).unwrap();
    assert_eq!(log.read(next, usize::MAX).unwrap().len(), 2);
    let err = log.read(0, usize::MAX).unwrap_err();
    assert!(err.to_string().contains("key id 1"), "{err}");
    assert_eq!(
        decrypt_failure(err),
        DecryptFailure::UnknownKey { key_id: 1 }
    );
}

#[test]
fn a_torn_tail_of_an_encrypted_log_is_cut_off() {
    let config = sealed(1 << 20, keys(&[(1, 1)], 1));
    let batch = |i: usize| {
        let value = format!("{}-{i}", MARKERS[3]).into_bytes();
        let record = keyed(
            1_000 + i as i64,
            MARKERS[0],
            &[(MARKERS[1], MARKERS[2])],
            value,
        );
        encoded_batch_len(&[record]) + config.batch_overhead()
    };
    let positions: Vec<u64> = (0..=10)
        .scan(0, |at, i| {
            let here = *at;
            if i < 10 {
                *at += batch(i);
            }
            Some(here)
        })
        .collect();
    // A batch cut in half, and a flipped byte in the last batch's sealed records.
    for damage in ["cut", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let written = fill_marked(&log, 0, 10);
        log.close().unwrap();
        let file = data_files(dir.path()).remove(0);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), positions[10]);
        let handle = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        if damage == "cut" {
            handle
                .set_len(positions[9] + (positions[10] - positions[9]) / 2)
                .unwrap();
        } else {
            let at = positions[9] + 70;
            let mut byte = [0u8];
            handle.read_exact_at(&mut byte, at).unwrap();
            handle.write_all_at(&[byte[0] ^ 0x5A], at).unwrap();
        }
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(values(&log), written[..9].to_vec(), "{damage}");
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            positions[9],
            "{damage}"
        );
        let next = log
            .append_blocking(vec![keyed(9, "k", &[], "after")])
            .unwrap();
        assert_eq!(next.base_offset, 9);
    }
}
