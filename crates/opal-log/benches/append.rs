//! Append throughput under `fsync=always` (256 B and 4 KiB records, 1 and 16 appenders),
//! compared with the raw limit of the disk: plain writes of the same group-commit size, each
//! followed by one `fdatasync`, with no engine logic. The raw loop runs right after every engine
//! sample, for as long and with that sample's average group size, so both see the same disk
//! (a virtual disk's speed drifts by tens of percent within a minute).
//!
//! Every case runs twice, in plaintext and encrypted (XChaCha20-Poly1305), one right after the
//! other; 16 appenders also run under `fsync=never`, where no disk wait hides the cost of the
//! encryption (there is no group commit to compare with a raw loop then).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use opal_log::{FsyncPolicy, Keyring, Log, LogConfig, Record, Zeroizing};

const SIZES: [usize; 2] = [256, 4096];
/// (fsync policy, appenders).
const CASES: [(FsyncPolicy, usize); 3] = [
    (FsyncPolicy::Always, 1),
    (FsyncPolicy::Always, 16),
    (FsyncPolicy::Never, 16),
];
/// Totals over every timed run of one benchmark (warm-up included: the same workload).
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    elapsed: Duration,
    appends: u64,
    syncs: u64,
    disk_bytes: u64,
    raw_elapsed: Duration,
    raw_bytes: u64,
}

#[derive(Debug)]
struct Row {
    size: usize,
    policy: FsyncPolicy,
    appenders: usize,
    encrypted: bool,
    totals: Totals,
}

impl Row {
    fn records_s(&self) -> f64 {
        self.totals.appends as f64 / self.totals.elapsed.as_secs_f64()
    }
    /// Payload megabytes (10^6) per second.
    fn payload_mb_s(&self) -> f64 {
        self.records_s() * self.size as f64 / 1e6
    }
    /// Bytes written to the data file (batch headers and framing included) per second.
    fn disk_mb_s(&self) -> f64 {
        self.totals.disk_bytes as f64 / self.totals.elapsed.as_secs_f64() / 1e6
    }
    fn batch_records(&self) -> f64 {
        self.totals.appends as f64 / self.totals.syncs.max(1) as f64
    }
    fn batch_bytes(&self) -> u64 {
        self.totals.disk_bytes / self.totals.syncs.max(1)
    }
    fn raw_mb_s(&self) -> f64 {
        self.totals.raw_bytes as f64 / self.totals.raw_elapsed.as_secs_f64() / 1e6
    }
}

fn config(fsync: FsyncPolicy, encrypted: bool) -> LogConfig {
    LogConfig {
        fsync,
        encryption: encrypted
            .then(|| Keyring::new([(1, Zeroizing::new([0x42; 32]))], 1).expect("key ring")),
        ..LogConfig::default()
    }
}

/// Appends `iters` one-record batches from `appenders` concurrent tasks.
fn run_appends(
    runtime: &tokio::runtime::Runtime,
    log: &Arc<Log>,
    value: &Bytes,
    appenders: usize,
    iters: u64,
) -> Duration {
    runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..appenders as u64)
            .map(|task| {
                let (log, value) = (log.clone(), value.clone());
                let count = iters / appenders as u64 + u64::from(task < iters % appenders as u64);
                tokio::spawn(async move {
                    for i in 0..count {
                        let record = Record {
                            timestamp_ms: i as i64,
                            key: None,
                            headers: Vec::new(),
                            value: value.clone(),
                        };
                        log.append(vec![record]).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("appender task");
        }
        started.elapsed()
    })
}

/// Writes `chunk`-byte pieces to `file`, one `fdatasync` each, for `time`; returns the bytes
/// written and the time taken.
fn raw_limit(file: &mut File, chunk: u64, time: Duration) -> (u64, Duration) {
    let buf = vec![0x5Au8; chunk.max(1) as usize];
    let started = Instant::now();
    let mut written = 0u64;
    while started.elapsed() < time {
        file.write_all(&buf).expect("raw write");
        file.sync_data().expect("raw fdatasync");
        written += buf.len() as u64;
    }
    (written, started.elapsed())
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    // On the disk of the build directory (not a tmpfs, where fsync would be free).
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut rows = Vec::new();
    for size in SIZES {
        let mut group = criterion.benchmark_group(format!("append_{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        for (policy, appenders) in CASES {
            for encrypted in [false, true] {
                let dir = tempfile::tempdir_in(base).expect("bench dir");
                let log = Arc::new(Log::open(dir.path(), config(policy, encrypted)).expect("open"));
                let value = Bytes::from(vec![0xA5u8; size]);
                let mut raw_file = File::create(dir.path().join("raw.dat")).expect("raw file");
                let totals = Arc::new(Mutex::new(Totals::default()));
                let sealing = if encrypted { "encrypted" } else { "plain" };
                let name = format!("{policy}_{appenders}_appenders_{sealing}");
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        let before = log.stats();
                        let elapsed = run_appends(&runtime, &log, &value, appenders, iters);
                        let after = log.stats();
                        let (syncs, bytes) = (
                            after.syncs - before.syncs,
                            after.size_bytes - before.size_bytes,
                        );
                        // Under `never` the only syncs are rolls: no group commit to compare.
                        let compare = policy == FsyncPolicy::Always && syncs > 0;
                        let (raw_bytes, raw_elapsed) = if test_mode || !compare {
                            (0, Duration::ZERO)
                        } else {
                            raw_limit(&mut raw_file, bytes / syncs, elapsed)
                        };
                        let mut totals = totals.lock().expect("totals");
                        totals.elapsed += elapsed;
                        totals.appends += after.appends - before.appends;
                        totals.syncs += syncs;
                        totals.disk_bytes += bytes;
                        totals.raw_bytes += raw_bytes;
                        totals.raw_elapsed += raw_elapsed;
                        elapsed
                    })
                });
                log.close().expect("close");
                let totals = *totals.lock().expect("totals");
                rows.push(Row {
                    size,
                    policy,
                    appenders,
                    encrypted,
                    totals,
                });
            }
        }
        group.finish();
    }
    criterion.final_summary();
    if test_mode {
        return;
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    println!();
    println!("Log engine: append of one-record batches (MB = 10^6 bytes)");
    println!(
        "| record | fsync | appenders | batches | engine payload MB/s | engine disk MB/s | records/s | avg batch (records, bytes) | raw MB/s, same chunks | engine/raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let (raw, ratio) = if row.totals.raw_elapsed.is_zero() {
            ("n/a".to_owned(), "n/a".to_owned())
        } else {
            (
                format!("{:.2}", row.raw_mb_s()),
                format!("{:.0} %", 100.0 * row.disk_mb_s() / row.raw_mb_s()),
            )
        };
        let batch = if row.policy == FsyncPolicy::Always {
            format!("{:.1}, {}", row.batch_records(), row.batch_bytes())
        } else {
            "n/a".to_owned()
        };
        println!(
            "| {} B | {} | {} | {} | {:.2} | {:.2} | {:.0} | {batch} | {raw} | {ratio} |",
            row.size,
            row.policy,
            row.appenders,
            if row.encrypted { "encrypted" } else { "plain" },
            row.payload_mb_s(),
            row.disk_mb_s(),
            row.records_s(),
        );
    }
    println!();
    println!("Encrypted against plain, same run:");
    println!(
        "| record | fsync | appenders | plain records/s | encrypted records/s | encrypted/plain | engine/raw plain, encrypted |"
    );
    println!("|---|---|---|---|---|---|---|");
    for plain in rows.iter().filter(|r| !r.encrypted) {
        let sealed = rows.iter().find(|r| {
            r.encrypted
                && r.size == plain.size
                && r.policy == plain.policy
                && r.appenders == plain.appenders
        });
        if let Some(sealed) = sealed {
            // The disk's speed drifts between the two runs; each one's share of the raw limit
            // measured beside it does not.
            let share = |r: &Row| {
                if r.totals.raw_elapsed.is_zero() {
                    "n/a".to_owned()
                } else {
                    format!("{:.0} %", 100.0 * r.disk_mb_s() / r.raw_mb_s())
                }
            };
            println!(
                "| {} B | {} | {} | {:.0} | {:.0} | {:.0} % | {}, {} |",
                plain.size,
                plain.policy,
                plain.appenders,
                plain.records_s(),
                sealed.records_s(),
                100.0 * sealed.records_s() / plain.records_s(),
                share(plain),
                share(sealed),
            );
        }
    }
    for size in SIZES {
        let find = |n| {
            rows.iter().find(|r| {
                r.size == size
                    && r.appenders == n
                    && !r.encrypted
                    && r.policy == FsyncPolicy::Always
            })
        };
        if let (Some(one), Some(many)) = (find(1), find(16)) {
            let speedup = many.records_s() / one.records_s();
            println!(
                "{size} B, plain, fsync=always: 16 appenders reach {speedup:.1}x the throughput of 1"
            );
        }
    }
    let json: Vec<String> = rows
        .iter()
        .map(|row| {
            let raw = if row.totals.raw_elapsed.is_zero() {
                "null".to_owned()
            } else {
                format!("{:.3}", row.raw_mb_s())
            };
            format!(
                "{{\"record_bytes\":{},\"fsync\":\"{}\",\"appenders\":{},\"encrypted\":{},\"engine_payload_mb_s\":{:.3},\"engine_disk_mb_s\":{:.3},\"records_s\":{:.1},\"batch_records\":{:.2},\"batch_bytes\":{},\"raw_mb_s\":{raw}}}",
                row.size,
                row.policy,
                row.appenders,
                row.encrypted,
                row.payload_mb_s(),
                row.disk_mb_s(),
                row.records_s(),
                row.batch_records(),
                row.batch_bytes(),
            )
        })
        .collect();
    println!("--json [{}]", json.join(","));
}
