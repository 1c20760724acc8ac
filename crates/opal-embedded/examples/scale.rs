//! Measures the embedded backend at scale: a million pending delayed messages (publish, reopen,
//! the scheduler's single timer) and a million acks (throughput, ack state size, recovery).
//!
//! ```sh
//! cargo run --release -p opal-embedded --example scale -- --dir /work/scale-data
//! ```
//!
//! Options: `--dir D` (created, must not exist), `--delayed N` (default 1,000,000),
//! `--acks N` (default 1,000,000), `--sparse N` (default 100,000). The data directory is left
//! in place; delete it afterwards. Every figure is printed as `phase key=value ...`; memory
//! figures are the process's `VmRSS` (current) and `VmHWM` (peak) in KiB. Before each open the
//! peak is reset (`/proc/self/clear_refs`), so `hwm` after an open is the peak of that open.
//!
//! The program re-runs itself for two internal modes, so that an open is also measured in a
//! fresh process and after a crash:
//! `child-open <dir> <topic>` opens, reports and closes; `child-crash <dir> <mode> <topic>
//! <subscription>` commits one more write (`delayed`: 1,000 delayed messages; `acks`: publishes,
//! pulls and acks 1,000 messages) and then aborts without closing anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{
    Broker, DataEncoding, NewMessage, Settle, StartPosition, SubscriptionConfig, SubscriptionName,
    TopicConfig, TopicName,
};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};
use redb::{ReadableDatabase, TableDefinition};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The ack state tables of the metadata store, as `crates/opal-embedded/src/meta.rs` defines them.
const ACK_FLOORS: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("ack_floors");
const ACKED: TableDefinition<'_, (&str, u32, u64), ()> = TableDefinition::new("acked");

const BATCH: usize = 1000;
const PAYLOAD_BYTES: usize = 100;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.as_slice() {
        [mode, dir, topic] if mode == "child-open" => {
            runtime.block_on(child_open(Path::new(dir), topic))
        }
        [mode, dir, kind, topic, sub] if mode == "child-crash" => {
            runtime.block_on(child_crash(Path::new(dir), kind, topic, sub))
        }
        _ => {
            let options = Options::parse(&args)?;
            runtime.block_on(run(options))
        }
    }
}

#[derive(Debug)]
struct Options {
    dir: PathBuf,
    delayed: usize,
    acks: usize,
    sparse: usize,
}

impl Options {
    fn parse(args: &[String]) -> Res<Self> {
        let mut options = Options {
            dir: PathBuf::from("/work/scale-data"),
            delayed: 1_000_000,
            acks: 1_000_000,
            sparse: 100_000,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--dir" => options.dir = PathBuf::from(value),
                "--delayed" => options.delayed = value.parse()?,
                "--acks" => options.acks = value.parse()?,
                "--sparse" => options.sparse = value.parse()?,
                _ => {
                    return Err(format!(
                        "unknown option {flag}; usage: scale [--dir D] [--delayed N] [--acks N] [--sparse N]"
                    )
                    .into());
                }
            }
        }
        for n in [options.delayed, options.acks, options.sparse] {
            if n == 0 || !n.is_multiple_of(BATCH) {
                return Err(format!("counts must be positive multiples of {BATCH}").into());
            }
        }
        Ok(options)
    }
}

/// (VmRSS, VmHWM) in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mem() -> String {
    let (rss, hwm) = memory();
    format!("rss_kib={rss} hwm_kib={hwm}")
}

/// Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs).
fn reset_peak() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        println!("warning: could not reset the peak RSS: {e}");
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn open(dir: &Path) -> Res<(EmbeddedBroker, Duration)> {
    let started = Instant::now();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir))?;
    Ok((broker, started.elapsed()))
}

fn message(deliver_at: Option<Timestamp>, payload: &Bytes) -> NewMessage {
    NewMessage {
        key: None,
        attributes: Default::default(),
        data: payload.clone(),
        encoding: DataEncoding::Binary,
        dedup_id: None,
        deliver_at,
        callback: None,
    }
}

/// A due time uniformly spread over [now + 1 day, now + 30 days - 1 hour].
fn far_due(now_ms: i64) -> Res<Timestamp> {
    let span = (29 * DAY_MS - 60 * 60 * 1000) as u64;
    let at = now_ms + DAY_MS + (rand::random::<u64>() % span) as i64;
    Ok(Timestamp::from_millisecond(at)?)
}

async fn setup(
    broker: &EmbeddedBroker,
    topic: &str,
    sub: &str,
) -> Res<(TopicName, SubscriptionName)> {
    let topic = TopicName::new(topic)?;
    let sub = SubscriptionName::new(sub)?;
    broker.create_topic(&topic, TopicConfig::default()).await?;
    broker
        .create_subscription(
            &sub,
            SubscriptionConfig::new(topic.clone()),
            StartPosition::Earliest,
        )
        .await?;
    Ok((topic, sub))
}

async fn end_offset(broker: &EmbeddedBroker, topic: &TopicName) -> Res<u64> {
    let (_, stats) = broker.get_topic(topic).await?;
    Ok(stats.partitions.iter().map(|p| p.end_offset).sum())
}

async fn scheduled(broker: &EmbeddedBroker, topic: &TopicName) -> Res<u64> {
    Ok(broker.get_topic(topic).await?.1.scheduled)
}

/// Publishes `count` messages in batches of 1,000; `delayed` gives them due times 1..30 days out.
async fn publish_many(
    broker: &EmbeddedBroker,
    topic: &TopicName,
    count: usize,
    delayed: bool,
    label: &str,
) -> Res<Duration> {
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let started = Instant::now();
    let mut lap = Instant::now();
    for batch in 0..count / BATCH {
        let now_ms = Timestamp::now().as_millisecond();
        let messages = (0..BATCH)
            .map(|_| {
                let at = if delayed {
                    Some(far_due(now_ms)?)
                } else {
                    None
                };
                Ok(message(at, &payload))
            })
            .collect::<Res<Vec<_>>>()?;
        broker.publish(topic, messages).await?;
        let done = (batch + 1) * BATCH;
        if done.is_multiple_of(100_000) {
            let rate = 100_000.0 / lap.elapsed().as_secs_f64();
            println!(
                "  {label}: {done} published, last 100k at {rate:.0} msg/s, {}",
                mem()
            );
            lap = Instant::now();
        }
    }
    Ok(started.elapsed())
}

/// Pulls until `count` deliveries arrived; acks those `ack` selects. Returns the elapsed time.
async fn pull_and_ack(
    broker: &EmbeddedBroker,
    sub: &SubscriptionName,
    count: usize,
    ack: impl Fn(u64) -> bool,
    label: &str,
) -> Res<(Duration, usize)> {
    let started = Instant::now();
    let mut lap = Instant::now();
    let (mut pulled, mut acked) = (0usize, 0usize);
    let mut next_report = 100_000;
    while pulled < count {
        let deliveries = broker.pull(sub, BATCH, Duration::from_secs(5)).await?;
        if deliveries.is_empty() {
            return Err(format!("{label}: pull came back empty after {pulled} of {count}").into());
        }
        pulled += deliveries.len();
        let ids: Vec<_> = deliveries
            .iter()
            .filter(|d| ack(d.message.offset))
            .map(|d| d.ack_id.clone())
            .collect();
        if !ids.is_empty() {
            let outcome = broker.settle(sub, &ids, Settle::Ack).await?;
            if !outcome.rejected.is_empty() {
                return Err(format!("{label}: acks refused: {:?}", outcome.rejected[0]).into());
            }
            acked += outcome.applied;
        }
        if pulled >= next_report {
            let rate = (pulled - (next_report - 100_000)) as f64 / lap.elapsed().as_secs_f64();
            println!(
                "  {label}: {pulled} pulled, {acked} acked, last 100k at {rate:.0} msg/s, {}",
                mem()
            );
            next_report += 100_000;
            lap = Instant::now();
        }
    }
    Ok((started.elapsed(), acked))
}

/// Publishes 1,000 messages due in 2 s and reports when they become visible and delivered.
/// `long_poll`: a pull waits across the due time (the pull itself may release them).
/// Otherwise nothing pulls: only the scheduler's timer can move them into the log, observed by
/// polling the topic's end offset every 2 ms; then they are pulled.
async fn due_round(
    broker: &EmbeddedBroker,
    topic: &TopicName,
    sub: &SubscriptionName,
    long_poll: bool,
    label: &str,
) -> Res<()> {
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let before = end_offset(broker, topic).await?;
    let due_ms = Timestamp::now().as_millisecond() + 2000;
    let due = Timestamp::from_millisecond(due_ms)?;
    let messages = (0..BATCH).map(|_| message(Some(due), &payload)).collect();
    broker.publish(topic, messages).await?;
    let since_due = || Timestamp::now().as_millisecond() - due_ms;

    let mut visible_after = None;
    if !long_poll {
        let give_up = Instant::now() + Duration::from_secs(60);
        while end_offset(broker, topic).await? < before + BATCH as u64 {
            if Instant::now() > give_up {
                return Err(format!("{label}: not released by the scheduler within 60 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        visible_after = Some(since_due());
    }
    let (mut received, mut first_after) = (0usize, None);
    while received < BATCH {
        let deliveries = broker.pull(sub, BATCH, Duration::from_secs(30)).await?;
        if deliveries.is_empty() {
            return Err(format!("{label}: pull empty after {received} deliveries").into());
        }
        first_after.get_or_insert_with(since_due);
        received += deliveries.len();
        let ids: Vec<_> = deliveries.iter().map(|d| d.ack_id.clone()).collect();
        broker.settle(sub, &ids, Settle::Ack).await?;
    }
    let all_after = since_due();
    println!(
        "{label}: messages={BATCH} mode={} in_log_after_due_ms={} first_delivery_after_due_ms={} all_delivered_after_due_ms={} scheduled_left={} {}",
        if long_poll {
            "long-poll pull"
        } else {
            "scheduler only"
        },
        visible_after.map_or("-".to_owned(), |v| v.to_string()),
        first_after.unwrap_or_default(),
        all_after,
        scheduled(broker, topic).await?,
        mem()
    );
    Ok(())
}

/// Reads a subscription's stored ack state straight from meta.redb (the broker must be closed).
fn stored_ack_state(dir: &Path, sub: &str) -> Res<(u64, u64)> {
    let db = redb::Database::open(dir.join("meta.redb"))?;
    let txn = db.begin_read()?;
    let floor = txn
        .open_table(ACK_FLOORS)?
        .get((sub, 0))?
        .map(|v| v.value())
        .unwrap_or(0);
    let sparse = txn
        .open_table(ACKED)?
        .range((sub, 0, 0)..=(sub, u32::MAX, u64::MAX))?
        .count() as u64;
    Ok((floor, sparse))
}

/// Runs this program again in `mode` (a fresh process) and waits for it.
fn child(args: &[&str]) -> Res<()> {
    let status = Command::new(std::env::current_exe()?).args(args).status()?;
    println!("  (child exited: {status})");
    Ok(())
}

async fn run(options: Options) -> Res<()> {
    if options.dir.exists() {
        return Err(format!("{} exists; give a new directory", options.dir.display()).into());
    }
    println!(
        "opal-embedded scale run: delayed={} acks={} sparse={} dir={} fsync=always (default)",
        options.delayed,
        options.acks,
        options.sparse,
        options.dir.display()
    );
    println!("start: {}", mem());
    delayed_phases(&options).await?;
    ack_phases(&options).await?;
    sparse_phases(&options).await?;
    println!("end: {}", mem());
    Ok(())
}

async fn delayed_phases(options: &Options) -> Res<()> {
    let dir = options.dir.join("delayed");
    let (broker, took) = open(&dir)?;
    println!("phase0.open_empty: open_ms={} {}", ms(took), mem());
    let (topic, sub) = setup(&broker, "delayed", "delayed-sub").await?;
    due_round(&broker, &topic, &sub, false, "phase0.due_with_0_pending").await?;
    due_round(&broker, &topic, &sub, true, "phase0.due_with_0_pending").await?;

    reset_peak();
    let took = publish_many(&broker, &topic, options.delayed, true, "phase1.publish").await?;
    println!(
        "phase1.publish: messages={} elapsed_s={:.1} rate_msg_s={:.0} scheduled={} meta_redb_bytes={} {}",
        options.delayed,
        took.as_secs_f64(),
        options.delayed as f64 / took.as_secs_f64(),
        scheduled(&broker, &topic).await?,
        file_size(&dir.join("meta.redb")),
        mem()
    );
    let started = Instant::now();
    broker.close().await?;
    drop(broker);
    println!("phase1.close: close_ms={} {}", ms(started.elapsed()), mem());

    reset_peak();
    let (broker, took) = open(&dir)?;
    println!(
        "phase1.reopen: open_ms={} scheduled={} meta_redb_bytes={} {}",
        ms(took),
        scheduled(&broker, &topic).await?,
        file_size(&dir.join("meta.redb")),
        mem()
    );

    reset_peak();
    let label = format!("phase2.due_with_{}_pending", options.delayed);
    due_round(&broker, &topic, &sub, false, &label).await?;
    due_round(&broker, &topic, &sub, true, &label).await?;
    // A second pair: the first pair paid for bringing the pages in after the reopen.
    let label = format!("{label}_again");
    due_round(&broker, &topic, &sub, false, &label).await?;
    due_round(&broker, &topic, &sub, true, &label).await?;
    broker.close().await?;
    drop(broker);
    println!(
        "phase2.closed: meta_redb_bytes={}",
        file_size(&dir.join("meta.redb"))
    );

    let dir_str = dir.to_string_lossy().into_owned();
    println!("phase1.fresh_process_open (clean close before):");
    child(&["child-open", &dir_str, "delayed"])?;
    println!("phase1.crash: a child commits 1,000 more delayed messages and aborts");
    child(&["child-crash", &dir_str, "delayed", "delayed", "delayed-sub"])?;
    println!("phase1.fresh_process_open_after_crash:");
    child(&["child-open", &dir_str, "delayed"])?;
    println!("phase1.fresh_process_open_again (clean close before):");
    child(&["child-open", &dir_str, "delayed"])?;
    Ok(())
}

async fn ack_phases(options: &Options) -> Res<()> {
    let dir = options.dir.join("acks");
    let (broker, _) = open(&dir)?;
    let (topic, sub) = setup(&broker, "acks", "acks-sub").await?;
    reset_peak();
    let took = publish_many(&broker, &topic, options.acks, false, "phase3.publish").await?;
    println!(
        "phase3.publish: messages={} elapsed_s={:.1} rate_msg_s={:.0} log_bytes={} {}",
        options.acks,
        took.as_secs_f64(),
        options.acks as f64 / took.as_secs_f64(),
        dir_size(&dir.join("topics")),
        mem()
    );
    reset_peak();
    let (took, acked) = pull_and_ack(&broker, &sub, options.acks, |_| true, "phase3.ack").await?;
    let (_, stats) = broker.get_subscription(&sub).await?;
    println!(
        "phase3.pull_ack: messages={} acked={acked} elapsed_s={:.1} rate_msg_s={:.0} backlog={} meta_redb_bytes={} {}",
        options.acks,
        took.as_secs_f64(),
        options.acks as f64 / took.as_secs_f64(),
        stats.backlog,
        file_size(&dir.join("meta.redb")),
        mem()
    );
    broker.close().await?;
    drop(broker);
    let (floor, sparse) = stored_ack_state(&dir, "acks-sub")?;
    println!("phase3.stored_ack_state: floor={floor} sparse_acked_rows={sparse}");

    reset_peak();
    let (broker, took) = open(&dir)?;
    let (_, stats) = broker.get_subscription(&sub).await?;
    println!(
        "phase3.reopen: open_ms={} backlog={} meta_redb_bytes={} {}",
        ms(took),
        stats.backlog,
        file_size(&dir.join("meta.redb")),
        mem()
    );
    broker.close().await?;
    drop(broker);

    let dir_str = dir.to_string_lossy().into_owned();
    println!("phase3.fresh_process_open (clean close before):");
    child(&["child-open", &dir_str, "acks"])?;
    println!("phase3.crash: a child publishes, pulls and acks 1,000 more messages and aborts");
    child(&["child-crash", &dir_str, "acks", "acks", "acks-sub"])?;
    println!("phase3.fresh_process_open_after_crash:");
    child(&["child-open", &dir_str, "acks"])?;
    let (floor, sparse) = stored_ack_state(&dir, "acks-sub")?;
    println!("phase3.stored_ack_state_after_crash: floor={floor} sparse_acked_rows={sparse}");
    Ok(())
}

async fn sparse_phases(options: &Options) -> Res<()> {
    let dir = options.dir.join("sparse");
    let (broker, _) = open(&dir)?;
    let (topic, sub) = setup(&broker, "sparse", "sparse-sub").await?;
    publish_many(&broker, &topic, options.sparse, false, "phase4.publish").await?;
    reset_peak();
    let (took, acked) = pull_and_ack(
        &broker,
        &sub,
        options.sparse,
        |offset| offset.is_multiple_of(2),
        "phase4.ack_every_other",
    )
    .await?;
    println!(
        "phase4.pull_ack_every_other: messages={} acked={acked} elapsed_s={:.1} {}",
        options.sparse,
        took.as_secs_f64(),
        mem()
    );
    broker.close().await?;
    drop(broker);
    let (floor, sparse) = stored_ack_state(&dir, "sparse-sub")?;
    println!(
        "phase4.stored_ack_state: floor={floor} sparse_acked_rows={sparse} (expected floor=1, rows={})",
        options.sparse / 2 - 1
    );

    reset_peak();
    let (broker, took) = open(&dir)?;
    println!(
        "phase4.reopen: open_ms={} meta_redb_bytes={} {}",
        ms(took),
        file_size(&dir.join("meta.redb")),
        mem()
    );
    // Every unacked message (the odd offsets) must come back, and nothing else.
    let started = Instant::now();
    let mut odd = 0usize;
    let mut total = 0usize;
    loop {
        let deliveries = broker.pull(&sub, BATCH, Duration::from_millis(500)).await?;
        if deliveries.is_empty() {
            break;
        }
        total += deliveries.len();
        odd += deliveries
            .iter()
            .filter(|d| !d.message.offset.is_multiple_of(2))
            .count();
    }
    println!(
        "phase4.redelivered_after_reopen: delivered={total} odd_offsets={odd} expected={} elapsed_ms={}",
        options.sparse / 2,
        ms(started.elapsed())
    );
    broker.close().await?;
    drop(broker);
    let dir_str = dir.to_string_lossy().into_owned();
    println!("phase4.fresh_process_open (clean close before):");
    child(&["child-open", &dir_str, "sparse"])?;
    Ok(())
}

async fn child_open(dir: &Path, topic: &str) -> Res<()> {
    let topic = TopicName::new(topic)?;
    let before = mem();
    let (broker, took) = open(dir)?;
    let after = mem();
    println!(
        "  child.open: open_ms={} before_open: {before} after_open: {after} scheduled={} end_offset={} meta_redb_bytes={}",
        ms(took),
        scheduled(&broker, &topic).await?,
        end_offset(&broker, &topic).await?,
        file_size(&dir.join("meta.redb"))
    );
    broker.close().await?;
    Ok(())
}

async fn child_crash(dir: &Path, kind: &str, topic: &str, sub: &str) -> Res<()> {
    let topic = TopicName::new(topic)?;
    let sub = SubscriptionName::new(sub)?;
    let (broker, took) = open(dir)?;
    println!("  child.crash: open_ms={}", ms(took));
    match kind {
        "delayed" => {
            publish_many(&broker, &topic, BATCH, true, "child").await?;
        }
        "acks" => {
            publish_many(&broker, &topic, BATCH, false, "child").await?;
            pull_and_ack(&broker, &sub, BATCH, |_| true, "child").await?;
        }
        _ => return Err(format!("unknown crash mode {kind}").into()),
    }
    println!("  child.crash: committed; aborting without closing");
    std::process::abort();
}
