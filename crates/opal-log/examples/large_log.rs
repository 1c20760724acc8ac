//! Opens a large log and reports open time, read latency and peak memory.
//!
//! ```sh
//! cargo run --release -p opal-log --example large_log -- fill /path/dir 10   # write 10 GiB once
//! cargo run --release -p opal-log --example large_log -- open /path/dir      # fresh process
//! ```
//!
//! `open` shows that opening trusts closed segments' checksummed indexes instead of scanning
//! their data, and that memory stays small however large the log is.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use opal_log::{FsyncPolicy, Log, LogConfig, Record};

const RECORD_BYTES: usize = 4096;
const BATCH_RECORDS: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [mode, dir, gib] if mode == "fill" => fill(Path::new(dir), gib.parse()?),
        [mode, dir] if mode == "open" => open(Path::new(dir)),
        _ => Err("usage: large_log fill <dir> <GiB> | large_log open <dir>".into()),
    }
}

fn fill(dir: &Path, gib: u64) -> Result<(), Box<dyn std::error::Error>> {
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    };
    let log = Log::open(dir, config)?;
    let target = gib << 30;
    let value = Bytes::from(vec![0x5a; RECORD_BYTES]);
    let started = Instant::now();
    let mut ts = 1_700_000_000_000i64;
    while log.stats().size_bytes < target {
        let batch = (0..BATCH_RECORDS)
            .map(|_| {
                ts += 1;
                Record {
                    timestamp_ms: ts,
                    key: None,
                    headers: Vec::new(),
                    value: value.clone(),
                }
            })
            .collect();
        log.append_blocking(batch)?;
    }
    log.close()?;
    let stats = log.stats();
    report(
        "filled",
        &[
            ("bytes", stats.size_bytes.to_string()),
            ("records", stats.next_offset.to_string()),
            ("segments", stats.segments.to_string()),
            ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
    Ok(())
}

fn open(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let log = Log::open(dir, LogConfig::default())?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let stats = log.stats();

    // Reads spread over the whole log: each finds its segment and batch through the indexes.
    let reads = 2000u64;
    let started = Instant::now();
    let mut records = 0usize;
    for i in 0..reads {
        let offset = (stats.next_offset - 1) * i / reads;
        let got = log.read(offset, 64 * 1024)?;
        assert!(
            got.iter().any(|r| r.offset == offset),
            "offset {offset} not returned"
        );
        records += got.len();
    }
    let read_us = started.elapsed().as_secs_f64() * 1e6 / reads as f64;
    let middle = log.offset_for_time(1_700_000_000_000 + (stats.next_offset / 2) as i64)?;
    log.close()?;
    report(
        "opened",
        &[
            ("bytes", stats.size_bytes.to_string()),
            ("segments", stats.segments.to_string()),
            ("open_ms", format!("{open_ms:.1}")),
            ("random_read_us", format!("{read_us:.0}")),
            ("records_read", records.to_string()),
            ("offset_for_time(middle)", format!("{middle:?}")),
            ("peak_rss_kib_before_open", rss_before.to_string()),
            ("peak_rss_kib", peak_rss_kib().to_string()),
        ],
    );
    Ok(())
}

/// VmHWM: the process's peak resident memory.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[allow(clippy::print_stdout)]
fn report(what: &str, fields: &[(&str, String)]) {
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{what}: {}", line.join(" "));
}
