//! Crash test: a child process appends under `fsync=always` and is killed with SIGKILL at random
//! moments; every append it saw acknowledged must survive, intact and in order. The encrypted
//! variant seals every batch and rotates to a new key each round.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opal_log::{FsyncPolicy, Keyring, Log, LogConfig, Record, Zeroizing};

const DIR_ENV: &str = "OPAL_LOG_CRASH_DIR";
const ROUND_ENV: &str = "OPAL_LOG_CRASH_ROUND";
/// Set (to anything) for the encrypted variant.
const ENCRYPTED_ENV: &str = "OPAL_LOG_CRASH_ENCRYPTED";
const CHILD_TEST: &str = "crash::crash_child";
const ROUNDS: u32 = 20;
const APPENDERS: u32 = 4;

/// The configuration of `round`; encrypted, it has keys 1 to `round + 1`, the last current.
fn config(encrypted: bool, round: u32) -> LogConfig {
    let current = round as u16 + 1;
    LogConfig {
        // Small segments so that kills also land during rolls.
        segment_max_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        fsync: FsyncPolicy::Always,
        encryption: encrypted.then(|| {
            Keyring::new(
                (1..=current).map(|id| (id, Zeroizing::new([id as u8; 32]))),
                current,
            )
            .unwrap()
        }),
        ..LogConfig::default()
    }
}

/// Deterministic pseudo-random numbers (splitmix64), so no dependency is needed for them.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Payload: round, appender and sequence number first, so order can be checked after recovery.
fn payload(rng: &mut Rng, round: u32, appender: u32, seq: u32) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&round.to_le_bytes());
    value.extend_from_slice(&appender.to_le_bytes());
    value.extend_from_slice(&seq.to_le_bytes());
    let extra = rng.below(600) as usize;
    value.extend((0..extra).map(|_| rng.next() as u8));
    value
}

fn origin(value: &[u8]) -> (u32, u32, u32) {
    let word = |i: usize| u32::from_le_bytes(value[i..i + 4].try_into().unwrap());
    (word(0), word(4), word(8))
}

/// The child: run only when the parent sets the directory. Never returns on its own before the
/// parent kills it, except after a safety timeout.
#[test]
#[ignore = "child process of crash_recovery_keeps_every_acknowledged_append"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let encrypted = std::env::var_os(ENCRYPTED_ENV).is_some();
    let log = Arc::new(Log::open(Path::new(&dir), config(encrypted, round)).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(u64::from(round) << 32 | u64::from(appender));
                let mut seq = 0;
                while Instant::now() < deadline {
                    let count = 1 + rng.below(3) as usize;
                    let values: Vec<Vec<u8>> = (0..count)
                        .map(|_| {
                            seq += 1;
                            payload(&mut rng, round, appender, seq)
                        })
                        .collect();
                    let records = values
                        .iter()
                        .map(|v| Record {
                            timestamp_ms: 0,
                            key: None,
                            headers: Vec::new(),
                            value: Bytes::copy_from_slice(v),
                        })
                        .collect();
                    let appended = log.append_blocking(records).unwrap();
                    // Printed only once the append resolved: these are promises the log made.
                    let mut out = std::io::stdout().lock();
                    for (i, value) in values.iter().enumerate() {
                        let offset = appended.base_offset + i as u64;
                        writeln!(
                            out,
                            "ACK {offset} {} {}",
                            crc32c::crc32c(value),
                            value.len()
                        )
                        .unwrap();
                    }
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.join().unwrap();
    }
}

fn parse_ack(line: &str) -> Option<(u64, (u32, usize))> {
    let rest = &line[line.find("ACK ")? + 4..];
    let mut fields = rest.split_whitespace();
    let offset = fields.next()?.parse().ok()?;
    let crc = fields.next()?.parse().ok()?;
    let len = fields.next()?.parse().ok()?;
    Some((offset, (crc, len)))
}

/// Reopens the log and checks every acknowledged record; returns the next offset.
fn verify(dir: &Path, config: LogConfig, acked: &BTreeMap<u64, (u32, usize)>) -> u64 {
    let log = Log::open(dir, config).unwrap();
    let records = log.read(log.start_offset(), usize::MAX).unwrap();
    assert_eq!(log.start_offset(), 0);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset, i as u64, "offsets are contiguous");
    }
    let mut last_seq: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for (&offset, &(crc, len)) in acked {
        let record = records.get(offset as usize).unwrap_or_else(|| {
            panic!(
                "acknowledged offset {offset} lost (log ends at {})",
                records.len()
            )
        });
        let value = &record.record.value;
        assert_eq!(
            (crc32c::crc32c(value), value.len()),
            (crc, len),
            "payload of offset {offset} differs"
        );
        let (round, appender, seq) = origin(value);
        if let Some(previous) = last_seq.insert((round, appender), seq) {
            assert!(
                previous < seq,
                "appender {appender} of round {round} out of order at offset {offset}"
            );
        }
    }
    let next = log.next_offset();
    log.close().unwrap();
    next
}

#[test]
fn crash_recovery_keeps_every_acknowledged_append() {
    crash_rounds(false);
}

#[test]
fn crash_recovery_keeps_every_acknowledged_append_encrypted() {
    crash_rounds(true);
}

fn crash_rounds(encrypted: bool) {
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<u64, (u32, usize)> = BTreeMap::new();
    let mut rounds_waiting_for_acks = 0;
    for round in 0..ROUNDS {
        let mut command = Command::new(&exe);
        command
            .args([
                "--exact",
                CHILD_TEST,
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if encrypted {
            command.env(ENCRYPTED_ENV, "1");
        } else {
            command.env_remove(ENCRYPTED_ENV);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (acks, received) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut by the kill has no newline: it is not counted.
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with('\n')
                    && let Some(ack) = parse_ack(&line)
                {
                    let _ = acks.send(ack);
                }
                line.clear();
            }
        });
        let mut round_acks = Vec::new();
        // Most rounds kill while appends are flowing, at a random moment after the first
        // acknowledgement (so a slow start on a busy machine does not waste the round); the
        // others kill blind, possibly during start-up or recovery.
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(120)));
        } else {
            rounds_waiting_for_acks += 1;
            let first = received
                .recv_timeout(Duration::from_secs(20))
                .expect("the child acknowledged nothing within 20 s");
            round_acks.push(first);
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        round_acks.extend(received.try_iter());
        for (offset, ack) in round_acks {
            if let Some(previous) = acked.insert(offset, ack) {
                assert_eq!(
                    previous, ack,
                    "offset {offset} acknowledged twice for different records"
                );
            }
        }
        verify(dir.path(), config(encrypted, round), &acked);
    }
    assert!(
        acked.len() >= rounds_waiting_for_acks,
        "{} acknowledged records",
        acked.len()
    );
    // Appends continue right after the recovered end.
    let next = verify(dir.path(), config(encrypted, ROUNDS), &acked);
    let log = Log::open(dir.path(), config(encrypted, ROUNDS)).unwrap();
    let appended = log.append_blocking(vec![Record {
        timestamp_ms: 0,
        key: None,
        headers: Vec::new(),
        value: Bytes::from_static(b"after the crashes"),
    }]);
    assert_eq!(appended.unwrap().base_offset, next);
    println!(
        "{} acknowledged records survived {ROUNDS} kills",
        acked.len()
    );
}
