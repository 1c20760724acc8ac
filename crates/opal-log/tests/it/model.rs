//! Model-based property test: random operations on a real log, checked against a plain model.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use opal_log::{
    FsyncPolicy, Keyring, Log, LogConfig, LogError, Record, StoredRecord, Zeroizing,
    encoded_batch_len,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Records with timestamps relative to the model clock; the clock then advances.
    Append(Vec<Record>, i64),
    /// Offset as a fraction of the log (may fall below the start or past the end).
    Read(f64, usize),
    Time(i64),
    Roll,
    Retention(i64),
    Reopen,
}

#[derive(Debug, Clone)]
struct Batch {
    base: u64,
    records: Vec<Record>,
    len: u64,
    max_ts: i64,
}

#[derive(Debug, Clone)]
struct Segment {
    base: u64,
    batches: Vec<Batch>,
}

impl Segment {
    fn size(&self) -> u64 {
        self.batches.iter().map(|b| b.len).sum()
    }
    fn max_ts(&self) -> i64 {
        self.batches
            .iter()
            .map(|b| b.max_ts)
            .max()
            .unwrap_or(i64::MIN)
    }
    fn expired(&self, now: i64, age: i64) -> bool {
        !self.batches.is_empty() && now.saturating_sub(self.max_ts()) > age
    }
}

/// The log as a list of segments of batches, following the documented rules.
#[derive(Debug)]
struct Model {
    segments: Vec<Segment>,
    next: u64,
    config: LogConfig,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Model {
    fn active(&mut self) -> &mut Segment {
        self.segments.last_mut().unwrap()
    }

    fn start(&self) -> u64 {
        self.segments[0].base
    }

    fn size(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    fn roll(&mut self) {
        if !self.active().batches.is_empty() {
            let base = self.next;
            self.segments.push(Segment {
                base,
                batches: vec![],
            });
        }
    }

    fn append(&mut self, records: Vec<Record>) -> (u64, u64) {
        let len = encoded_batch_len(&records) + self.config.batch_overhead();
        let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap();
        let (seg_max, seg_age) = (
            self.config.segment_max_bytes,
            ms(self.config.segment_max_age),
        );
        let active = self.active();
        if let Some(first) = active.batches.first()
            && (active.size() + len > seg_max || max_ts.saturating_sub(first.max_ts) > seg_age)
        {
            self.roll();
        }
        let base = self.next;
        self.next += records.len() as u64;
        self.active().batches.push(Batch {
            base,
            records,
            len,
            max_ts,
        });
        (base, self.next - 1)
    }

    fn retention(&mut self, now: i64) -> usize {
        let seg_age = ms(self.config.segment_max_age);
        let ret_age = self.config.retention_max_age.map(ms);
        let active = self.segments.last().unwrap();
        let closed = &self.segments[..self.segments.len() - 1];
        let roll = match active.batches.first() {
            None => false,
            Some(first) => {
                now.saturating_sub(first.max_ts) > seg_age
                    || ret_age.is_some_and(|age| {
                        active.expired(now, age) && closed.iter().all(|s| s.expired(now, age))
                    })
            }
        };
        if roll {
            self.roll();
        }
        let mut total = self.size();
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let expired = ret_age.is_some_and(|age| oldest.expired(now, age));
            let too_big = self
                .config
                .retention_max_bytes
                .is_some_and(|limit| total > limit);
            if !(expired || too_big) {
                break;
            }
            total -= oldest.size();
            self.segments.remove(0);
            deleted += 1;
        }
        deleted
    }

    fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.segments.iter().flat_map(|s| &s.batches)
    }

    fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>, u64> {
        if offset < self.start() {
            return Err(self.start());
        }
        let mut out = Vec::new();
        let mut used = 0usize;
        for batch in self
            .batches()
            .filter(|b| b.base + b.records.len() as u64 > offset)
        {
            if used > 0 && used + batch.len as usize > max_bytes {
                break;
            }
            used += batch.len as usize;
            for (i, record) in batch.records.iter().enumerate() {
                let at = batch.base + i as u64;
                if at >= offset {
                    out.push(StoredRecord {
                        offset: at,
                        record: record.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn offset_for_time(&self, ts: i64) -> Option<u64> {
        self.batches().find(|b| b.max_ts >= ts).map(|b| b.base)
    }
}

fn arb_record() -> impl Strategy<Value = (i64, Record)> {
    (
        -50i64..50,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        prop::collection::vec(
            ("[a-z]{0,4}", prop::collection::vec(any::<u8>(), 0..6)),
            0..3,
        ),
        prop_oneof![Just(0usize), 0usize..40, 0usize..300],
    )
        .prop_map(|(jitter, key, headers, value_len)| {
            let record = Record {
                timestamp_ms: 0,
                key: key.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n, Bytes::from(v)))
                    .collect(),
                value: Bytes::from(vec![value_len as u8; value_len]),
            };
            (jitter, record)
        })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(arb_record(), 1..6), 0i64..120).prop_map(|(records, advance)| {
            // Timestamps near the clock, the clock itself applied when the op runs.
            let records = records
                .into_iter()
                .map(|(jitter, mut r)| {
                    r.timestamp_ms = jitter;
                    r
                })
                .collect();
            Op::Append(records, advance)
        }),
        3 => (-0.2f64..1.2, prop_oneof![Just(0usize), 1usize..400, Just(usize::MAX)]).prop_map(|(at, max)| Op::Read(at, max)),
        2 => (-100i64..3_000).prop_map(Op::Time),
        1 => Just(Op::Roll),
        2 => (0i64..3_000).prop_map(Op::Retention),
        1 => Just(Op::Reopen),
    ]
}

fn arb_config() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![Just(200u64), Just(600), Just(2_000)],
        prop_oneof![Just(300u64), Just(100_000)],
        prop::option::of(prop_oneof![Just(400u64), Just(1_500)]),
        prop::option::of(prop_oneof![Just(1_000u64), Just(4_000)]),
        prop_oneof![Just(1u32), Just(100), Just(1_000)],
        any::<bool>(),
    )
        .prop_map(
            |(segment_max_bytes, age, retention_age, retention_bytes, interval, encrypted)| {
                LogConfig {
                    segment_max_bytes,
                    segment_max_age: Duration::from_millis(age),
                    retention_max_age: retention_age.map(Duration::from_millis),
                    retention_max_bytes: retention_bytes,
                    fsync: FsyncPolicy::Never,
                    index_interval_bytes: interval,
                    max_batch_bytes: 1 << 20,
                    encryption: encrypted.then(|| keys_up_to(1)),
                }
            },
        )
}

/// Keys 1 to `current`, the last one current: each reopen of an encrypted log rotates to a new
/// key, so batches sealed under every earlier key must stay readable.
fn keys_up_to(current: u16) -> Keyring {
    Keyring::new(
        (1..=current).map(|id| (id, Zeroizing::new([id as u8; 32]))),
        current,
    )
    .unwrap()
}

fn check_shape(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    let stats = log.stats();
    prop_assert_eq!(stats.start_offset, model.start());
    prop_assert_eq!(stats.next_offset, model.next);
    prop_assert_eq!(log.next_offset(), model.next);
    prop_assert_eq!(stats.segments, model.segments.len() as u64);
    prop_assert_eq!(stats.size_bytes, model.size());
    Ok(())
}

fn run(dir: &Path, mut config: LogConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut log = Log::open(dir, config.clone()).unwrap();
    let mut model = Model {
        segments: vec![Segment {
            base: 0,
            batches: vec![],
        }],
        next: 0,
        config: config.clone(),
    };
    let mut clock = 1_000i64;
    for op in ops {
        match op {
            Op::Append(records, advance) => {
                let records: Vec<Record> = records
                    .into_iter()
                    .map(|mut r| {
                        r.timestamp_ms += clock;
                        r
                    })
                    .collect();
                clock += advance;
                let appended = log.append_blocking(records.clone()).unwrap();
                let (base, last) = model.append(records);
                prop_assert_eq!((appended.base_offset, appended.last_offset), (base, last));
            }
            Op::Read(at, max_bytes) => {
                let span = (model.next + 2) as f64;
                let offset = (at * span).max(0.0) as u64;
                match (log.read(offset, max_bytes), model.read(offset, max_bytes)) {
                    (Ok(got), Ok(expected)) => {
                        prop_assert_eq!(got, expected, "read({}, {})", offset, max_bytes)
                    }
                    (Err(LogError::OffsetBelowStart { offset: o, start }), Err(model_start)) => {
                        prop_assert_eq!((o, start), (offset, model_start));
                    }
                    (got, expected) => {
                        prop_assert!(false, "read({offset}): log {got:?}, model {expected:?}")
                    }
                }
            }
            Op::Time(delta) => {
                let ts = clock - 1_500 + delta;
                prop_assert_eq!(
                    log.offset_for_time(ts).unwrap(),
                    model.offset_for_time(ts),
                    "offset_for_time({})",
                    ts
                );
            }
            Op::Roll => {
                log.roll().unwrap();
                model.roll();
            }
            Op::Retention(delta) => {
                let now = clock + delta - 500;
                let deleted = log.enforce_retention(now).unwrap();
                prop_assert_eq!(deleted, model.retention(now), "enforce_retention({})", now);
            }
            Op::Reopen => {
                log.close().unwrap();
                if let Some(keys) = &config.encryption {
                    config.encryption = Some(keys_up_to(keys.current_id() + 1));
                }
                log = Log::open(dir, config.clone()).unwrap();
            }
        }
        check_shape(&log, &model)?;
    }
    // Whatever happened, a final full read matches and survives one more reopen.
    prop_assert_eq!(
        log.read(model.start(), usize::MAX).unwrap(),
        model.read(model.start(), usize::MAX).unwrap()
    );
    log.close().unwrap();
    let log = Log::open(dir, config).unwrap();
    check_shape(&log, &model)?;
    prop_assert_eq!(
        log.read(model.start(), usize::MAX).unwrap(),
        model.read(model.start(), usize::MAX).unwrap()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_behaves_like_its_model(config in arb_config(), ops in prop::collection::vec(arb_op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), config, ops)?;
    }
}
