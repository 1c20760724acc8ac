//! Model-based property test of the embedded backend's subscription semantics.
//!
//! Random sequences of publish, pull, ack, nack, extend, clock moves, seeks and restarts run
//! against a real `EmbeddedBroker` (fresh directory, manual clock, pulls that never wait) and
//! against a small model of the specification (the `Broker` trait docs, `docs/http-api.md`,
//! `docs/operations.md` and the conformance suite): one topic, one subscription with ack deadline
//! `D` and a constant backoff `B` (multiplier 1, so every failed delivery waits a time in
//! `[B/2, B]`). The model follows the spec, not the implementation.
//!
//! The model, per message (state since the last seek):
//! - acked (through which receipt), or skipped (by a seek to `Latest`),
//! - leased (receipt, deadline): live while `now < deadline`,
//! - waiting: may come back from `earliest` on, must be available from `latest` on. A passed
//!   deadline waits `[deadline + B/2, deadline + B]`, a nack with delay `d` exactly `now + d`, a
//!   nack without delay `[now + B/2, now + B]`; a new message is available at once,
//! - the deliveries so far (as the backend counts them), and the attempt its last nack ended.
//!
//! Rules checked:
//! - publish: one result per message, offsets going on one by one in each partition;
//! - pull: every delivery is a published message (id, topic, data), at most once per pull, and
//!   eligible (not acked or skipped, not under a live lease, its `earliest` has come); at most
//!   `max` deliveries, and at least `min(max, n)` when `n` messages are certainly available (past
//!   their `latest`); first deliveries come in offset order in each partition (no
//!   never-delivered message is passed over by a later one of its partition); `attempt` is the
//!   deliveries so far + 1 (for restarts see below);
//! - ack / nack / extend: an id is applied iff its lease is live (not expired, not superseded,
//!   not issued before a restart or a seek); an `Ack` of the very id that acked the message (same
//!   epoch) is applied again without effect; every other id is rejected, with a reason, and
//!   changes nothing. Ids of one call are distinct and judged against the state before the call;
//! - restart (`close`, then open again on the same directory and clock as soon as `close`
//!   returned): acks and nack delays survive; live leases are lost (the message is available at
//!   once); the wait after a passed deadline is not synced, so it may end at once (its `latest`
//!   still holds). Attempt rule: after a restart the next `attempt` of a message may be lower
//!   than the model's count + 1 (expiry-driven counts are not synced), but never below the
//!   attempt its last nack ended + 1 (nack counts are durable), and it is exactly count + 1 when
//!   the message was waiting on a nack at the restart; the model then adopts the observed attempt;
//! - seek `Earliest`: every message is unacked and available, attempts count from 1 again; seek
//!   `Latest`: nothing from before is delivered again; both void every outstanding id;
//! - at the end (at-least-once): after moving the clock past every wait, pulling and acking until
//!   a pull is empty delivers exactly the messages the model holds unacked; after one more
//!   restart nothing comes back.
//!
//! The dead-letter variant adds `max_deliveries = M` and a dead-letter topic: a delivery with
//! attempt `M` that fails (nack, or deadline passed) is dead-lettered instead of retried: never
//! delivered again (until a seek back), and published once to the dead-letter topic with
//! `dead_letter.attempts = M`; no delivery has an attempt above `M`. A restart may forget a
//! deadline-driven dead-lettering not carried out yet (leases and expiry-driven retries are not
//! durable): the message may then be delivered again instead, or else was dead-lettered. A seek
//! does not undo a dead-lettering whose deadline passed before it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use opal_core::dead_letter::{ATTEMPTS, ORIGINAL_ID};
use opal_core::{
    AckId, Backoff, Broker, Clock, DataEncoding, Delivery, NewMessage, Settle, StartPosition,
    SubscriptionConfig, SubscriptionName, TopicConfig, TopicName,
};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig, EmbeddedError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Where the manual clock starts: 2025-01-01T00:00:00Z.
const START_MS: i64 = 1_735_689_600_000;
/// The subscription's ack deadline.
const D: i64 = 1_000;
/// The subscription's backoff, constant: every failed delivery waits a time in `[B/2, B]`.
const B: i64 = 200;
/// The nack delays the operations choose from (`None`: the backoff).
const NACK_DELAYS: [Option<u64>; 4] = [Some(0), Some(50), Some(300), None];
/// Far enough to pass every lease and wait the model can hold.
const FAR: i64 = 10 * (3 * D + B + 300);
/// How long one broker call may take in real time before the case fails instead of hanging.
const REAL_TIME_BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Ack,
    Nack(Option<u64>),
    Extend(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Publish this many messages.
    Publish(usize),
    /// Pull up to this many, without waiting.
    Pull(usize),
    /// Settle 1 to 3 receipts picked among those issued so far (see `pick_receipt`).
    Settle(Vec<usize>, Action),
    /// Move the clock by this many milliseconds.
    Advance(u64),
    /// Move the clock to a time the model cares about (a deadline, the start or end of a wait),
    /// picked by index, plus `delta` (-1, 0, 1) to hit both sides of the boundary.
    AdvanceToEvent(usize, i64),
    SeekEarliest,
    SeekLatest,
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Ack),
        3 => proptest::sample::select(&NACK_DELAYS[..]).prop_map(Action::Nack),
        1 => prop_oneof![
            proptest::sample::select(vec![100u64, D as u64 / 2, D as u64, 2 * D as u64]),
            100..=3 * D as u64,
        ]
        .prop_map(Action::Extend),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..=5).prop_map(Op::Publish),
        4 => (1usize..=10).prop_map(Op::Pull),
        5 => (proptest::collection::vec(0usize..64, 1..=3), action())
            .prop_map(|(picks, a)| Op::Settle(picks, a)),
        2 => prop_oneof![
            proptest::sample::select(vec![
                0u64, 1, 49, 50, 99, 100, 101, 199, 200, 201, 299, 300, 999, 1_000, 1_001
            ]),
            0..=3 * D as u64,
        ]
        .prop_map(Op::Advance),
        2 => (0usize..64, -1i64..=1).prop_map(|(i, d)| Op::AdvanceToEvent(i, d)),
        1 => prop_oneof![Just(Op::SeekEarliest), Just(Op::SeekLatest)],
        1 => Just(Op::Restart),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..60)
}

// ---------------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// May be delivered from `earliest` on, certainly is from `latest` on (`i64::MAX`: never
    /// certain). `nacked`: the wait comes from a nack (durable) rather than a passed deadline.
    Waiting {
        earliest: i64,
        latest: i64,
        nacked: bool,
    },
    /// Leased through `receipt` until `deadline` (exclusive).
    Leased { receipt: usize, deadline: i64 },
    /// Acked through `receipt`.
    Acked { receipt: usize },
    /// Dead-lettered (dead-letter variant); `receipt` is the delivery that failed, if known.
    /// `by_deadline`: its deadline passed and the dead-lettering may not have been carried out
    /// yet (a restart may forget it); otherwise it was nacked (durable).
    Dead {
        receipt: Option<usize>,
        by_deadline: bool,
    },
    /// Left behind by a seek to `Latest`.
    Skipped,
}

#[derive(Debug, Clone)]
struct Msg {
    id: uuid::Uuid,
    partition: u32,
    offset: u64,
    data: String,
    state: State,
    /// Deliveries since the last seek, as the backend counts them (synced on each delivery).
    attempts: u32,
    /// A restart happened since the last delivery: the backend may count fewer deliveries.
    uncertain: bool,
    /// The attempt the last nack ended (0: none since the last seek); durable.
    nacked_attempt: u32,
    /// A restart may have undone a deadline-driven dead-lettering of this message (dead-letter
    /// variant): the message is waiting, and if it is never delivered again it was dead-lettered.
    maybe_dead: bool,
}

#[derive(Debug, Clone)]
struct Receipt {
    ack_id: AckId,
    msg: usize,
    epoch: u32,
}

/// What the spec says a settle does with one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The lease is live: apply the action.
    Live,
    /// An ack of the id that acked the message: applied, nothing changes.
    AlreadyAcked,
    Rejected,
}

#[derive(Debug, Clone, Copy)]
struct Variant {
    partitions: u32,
    /// `Some(M)`: the dead-letter variant.
    max_deliveries: Option<u32>,
}

#[derive(Debug)]
struct Model {
    variant: Variant,
    /// Milliseconds since `START_MS`.
    now: i64,
    msgs: Vec<Msg>,
    by_position: BTreeMap<(u32, u64), usize>,
    next_offset: Vec<u64>,
    receipts: Vec<Receipt>,
    /// Bumped by every restart and seek: receipts of an older epoch are void.
    epoch: u32,
    /// Per message id: dead letters certainly published, and ones that may have been.
    dead_certain: BTreeMap<String, u32>,
    dead_maybe: BTreeMap<String, u32>,
}

impl Model {
    fn new(variant: Variant) -> Self {
        Model {
            variant,
            now: 0,
            msgs: Vec::new(),
            by_position: BTreeMap::new(),
            next_offset: vec![0; variant.partitions as usize],
            receipts: Vec::new(),
            epoch: 0,
            dead_certain: BTreeMap::new(),
            dead_maybe: BTreeMap::new(),
        }
    }

    /// Turns leases whose deadline passed into waits (or dead letters at `max_deliveries`).
    fn expire(&mut self) {
        let now = self.now;
        let max = self.variant.max_deliveries;
        for i in 0..self.msgs.len() {
            let m = &mut self.msgs[i];
            if let State::Leased { receipt, deadline } = m.state
                && deadline <= now
            {
                if max.is_some_and(|max| m.attempts >= max) {
                    m.state = State::Dead {
                        receipt: Some(receipt),
                        by_deadline: true,
                    };
                    *self.dead_certain.entry(m.data.clone()).or_default() += 1;
                } else {
                    m.state = State::Waiting {
                        earliest: deadline + B / 2,
                        latest: deadline + B,
                        nacked: false,
                    };
                }
            }
        }
    }

    fn eligible(&self, m: &Msg) -> bool {
        matches!(m.state, State::Waiting { earliest, .. } if earliest <= self.now)
    }

    fn certain(&self, m: &Msg) -> bool {
        matches!(m.state, State::Waiting { latest, .. } if latest <= self.now)
    }

    fn expect(&self, r: usize, action: Action) -> Expect {
        let receipt = &self.receipts[r];
        if receipt.epoch != self.epoch {
            return Expect::Rejected;
        }
        match self.msgs[receipt.msg].state {
            State::Leased { receipt: held, .. } if held == r => Expect::Live,
            State::Acked { receipt: by } if by == r && action == Action::Ack => {
                Expect::AlreadyAcked
            }
            _ => Expect::Rejected,
        }
    }

    /// The times at which something in the model changes by itself, after now.
    fn events(&self) -> Vec<i64> {
        let mut times = BTreeSet::new();
        for m in &self.msgs {
            match m.state {
                State::Leased { deadline, .. } => {
                    times.insert(deadline);
                }
                State::Waiting {
                    earliest, latest, ..
                } => {
                    times.insert(earliest);
                    if latest != i64::MAX {
                        times.insert(latest);
                    }
                }
                _ => {}
            }
        }
        times.into_iter().filter(|&t| t >= self.now).collect()
    }

    fn restart(&mut self) {
        self.expire();
        self.epoch += 1;
        let now = self.now;
        for m in &mut self.msgs {
            match m.state {
                State::Leased { .. } => {
                    m.state = State::Waiting {
                        earliest: now,
                        latest: now,
                        nacked: false,
                    };
                    m.uncertain = true;
                }
                State::Waiting {
                    earliest,
                    latest,
                    nacked: false,
                } => {
                    m.state = State::Waiting {
                        earliest: earliest.min(now),
                        latest,
                        nacked: false,
                    };
                    m.uncertain = m.attempts > 0;
                }
                State::Waiting { nacked: true, .. } => {}
                State::Dead {
                    by_deadline: true, ..
                } => {
                    // The dead-lettering may not have been carried out before the restart.
                    m.state = State::Waiting {
                        earliest: now,
                        latest: i64::MAX,
                        nacked: false,
                    };
                    m.uncertain = true;
                    m.maybe_dead = true;
                    *self.dead_certain.get_mut(&m.data).expect("counted") -= 1;
                    *self.dead_maybe.entry(m.data.clone()).or_default() += 1;
                }
                State::Dead {
                    by_deadline: false, ..
                }
                | State::Acked { .. }
                | State::Skipped => {}
            }
        }
    }

    fn seek(&mut self, earliest: bool) {
        self.epoch += 1;
        let now = self.now;
        for m in &mut self.msgs {
            m.state = if earliest {
                State::Waiting {
                    earliest: now,
                    latest: now,
                    nacked: false,
                }
            } else {
                State::Skipped
            };
            m.attempts = 0;
            m.uncertain = false;
            m.nacked_attempt = 0;
            // Whether it was dead-lettered can no longer be told from its deliveries.
            m.maybe_dead = false;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test

struct Sut {
    dir: tempfile::TempDir,
    clock: Clock,
    broker: Option<EmbeddedBroker>,
    topic: TopicName,
    sub: SubscriptionName,
    dead_topic: TopicName,
    inspect: SubscriptionName,
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

async fn bounded<T, E: std::fmt::Debug>(
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, TestCaseError> {
    match tokio::time::timeout(REAL_TIME_BOUND, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(fail(format!("{what} failed: {e:?}"))),
        Err(_) => Err(fail(format!(
            "{what} did not finish in {REAL_TIME_BOUND:?}"
        ))),
    }
}

/// A fresh directory per case: in memory (`/dev/shm`) where there is one, since every ack and
/// nack is an fsync and the test restarts cleanly only; otherwise the system's temp directory.
fn temp_dir() -> Result<tempfile::TempDir, TestCaseError> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir().map_err(fail)
}

fn open(dir: &std::path::Path, clock: &Clock) -> Result<EmbeddedBroker, EmbeddedError> {
    let mut config = EmbeddedConfig::new(dir);
    config.clock = clock.clone();
    EmbeddedBroker::open(config)
}

impl Sut {
    async fn new(variant: Variant) -> Result<Self, TestCaseError> {
        let dir = temp_dir()?;
        let clock = Clock::manual(
            jiff::Timestamp::from_millisecond(START_MS).map_err(|e| fail(format!("{e}")))?,
        );
        let broker = open(dir.path(), &clock).map_err(|e| fail(format!("open failed: {e:?}")))?;
        let topic = TopicName::new("t").map_err(|e| fail(format!("{e:?}")))?;
        let dead_topic = TopicName::new("t.dead").map_err(|e| fail(format!("{e:?}")))?;
        let sub = SubscriptionName::new("s").map_err(|e| fail(format!("{e:?}")))?;
        let inspect = SubscriptionName::new("inspect").map_err(|e| fail(format!("{e:?}")))?;
        let topic_config = |partitions| TopicConfig {
            partitions,
            ..TopicConfig::default()
        };
        bounded(
            "create_topic",
            broker.create_topic(&topic, topic_config(variant.partitions)),
        )
        .await?;
        let mut config = SubscriptionConfig {
            ack_deadline_ms: D as u64,
            backoff: Backoff {
                initial_ms: B as u64,
                max_ms: B as u64,
                multiplier: 1.0,
            },
            ..SubscriptionConfig::new(topic.clone())
        };
        if let Some(max) = variant.max_deliveries {
            bounded(
                "create_topic",
                broker.create_topic(&dead_topic, topic_config(1)),
            )
            .await?;
            let inspect_config = SubscriptionConfig {
                ack_deadline_ms: 100 * FAR as u64,
                ..SubscriptionConfig::new(dead_topic.clone())
            };
            bounded(
                "create_subscription",
                broker.create_subscription(&inspect, inspect_config, StartPosition::Earliest),
            )
            .await?;
            config.max_deliveries = Some(max);
            config.dead_letter_topic = Some(dead_topic.clone());
        }
        bounded(
            "create_subscription",
            broker.create_subscription(&sub, config, StartPosition::Earliest),
        )
        .await?;
        Ok(Sut {
            dir,
            clock,
            broker: Some(broker),
            topic,
            sub,
            dead_topic,
            inspect,
        })
    }

    fn broker(&self) -> &EmbeddedBroker {
        self.broker.as_ref().expect("the broker is open")
    }

    /// Closes the broker and opens it again on the same directory and clock as soon as `close`
    /// has returned.
    async fn restart(&mut self) -> Result<(), TestCaseError> {
        let broker = self.broker.take().expect("the broker is open");
        bounded("close", broker.close()).await?;
        drop(broker);
        let reopened = open(self.dir.path(), &self.clock).map_err(|e| {
            fail(format!(
                "reopening right after close() returned failed: {e:?}"
            ))
        })?;
        self.broker = Some(reopened);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Running a sequence

struct Run {
    model: Model,
    sut: Sut,
    published: usize,
}

impl Run {
    async fn publish(&mut self, n: usize) -> Result<(), TestCaseError> {
        let datas: Vec<String> = (0..n).map(|i| format!("m{}", self.published + i)).collect();
        self.published += n;
        let batch = datas
            .iter()
            .map(|data| NewMessage {
                key: None,
                attributes: BTreeMap::new(),
                data: Bytes::from(data.clone()),
                encoding: DataEncoding::Binary,
                dedup_id: None,
                deliver_at: None,
                callback: None,
            })
            .collect();
        let results = bounded("publish", self.sut.broker().publish(&self.sut.topic, batch)).await?;
        prop_assert_eq!(results.len(), n, "one result per message");
        let now = self.model.now;
        for (data, result) in datas.into_iter().zip(results) {
            let partition = result.partition;
            prop_assert!(partition < self.model.variant.partitions, "{:?}", result);
            let expected = self.model.next_offset[partition as usize];
            prop_assert_eq!(
                result.offset,
                Some(expected),
                "offsets go on one by one in each partition"
            );
            prop_assert!(!result.duplicate);
            self.model.next_offset[partition as usize] += 1;
            self.model
                .by_position
                .insert((partition, expected), self.model.msgs.len());
            self.model.msgs.push(Msg {
                id: result.id,
                partition,
                offset: expected,
                data,
                state: State::Waiting {
                    earliest: now,
                    latest: now,
                    nacked: false,
                },
                attempts: 0,
                uncertain: false,
                nacked_attempt: 0,
                maybe_dead: false,
            });
        }
        Ok(())
    }

    /// Pulls and checks the deliveries against the model; returns the indices of the new
    /// receipts.
    async fn pull(&mut self, max: usize) -> Result<Vec<usize>, TestCaseError> {
        self.model.expire();
        let got: Vec<Delivery> = bounded(
            "pull",
            self.sut.broker().pull(&self.sut.sub, max, Duration::ZERO),
        )
        .await?;
        let model = &mut self.model;
        let now = model.now;
        let certain = model.msgs.iter().filter(|m| model.certain(m)).count();
        prop_assert!(got.len() <= max, "{} deliveries for max {}", got.len(), max);
        prop_assert!(
            got.len() >= max.min(certain),
            "pull(max {}) at {} returned {} deliveries, but {} messages are certainly \
             available: {:?}",
            max,
            now,
            got.len(),
            certain,
            model
                .msgs
                .iter()
                .filter(|m| model.certain(m))
                .map(|m| (&m.data, m.state))
                .collect::<Vec<_>>()
        );
        let mut seen = BTreeSet::new();
        let mut new_receipts = Vec::new();
        for d in got {
            let position = (d.message.partition, d.message.offset);
            let Some(&i) = model.by_position.get(&position) else {
                return Err(fail(format!("delivery of an unknown message {position:?}")));
            };
            prop_assert!(
                seen.insert(position),
                "{:?} delivered twice in one pull",
                position
            );
            let m = &model.msgs[i];
            prop_assert_eq!(d.message.id, m.id);
            prop_assert_eq!(&d.message.topic, &self.sut.topic);
            prop_assert_eq!(&d.message.data[..], m.data.as_bytes());
            prop_assert!(
                model.eligible(m),
                "{} delivered at {} but the model says {:?}",
                m.data,
                now,
                m.state
            );
            let (low, high) = if m.uncertain {
                (m.nacked_attempt + 1, m.attempts + 1)
            } else {
                (m.attempts + 1, m.attempts + 1)
            };
            prop_assert!(
                (low..=high).contains(&d.attempt),
                "{} delivered at {} with attempt {}, the model expects {}..={} ({:?})",
                m.data,
                now,
                d.attempt,
                low,
                high,
                m
            );
            if let Some(max_deliveries) = model.variant.max_deliveries {
                prop_assert!(
                    d.attempt <= max_deliveries,
                    "{} delivered with attempt {} past max_deliveries",
                    m.data,
                    d.attempt
                );
            }
            if m.attempts == 0 {
                let passed_over = model.msgs.iter().find(|o| {
                    o.partition == m.partition
                        && o.offset < m.offset
                        && o.attempts == 0
                        && matches!(o.state, State::Waiting { .. })
                });
                prop_assert!(
                    passed_over.is_none(),
                    "first delivery of {} (offset {}) while {:?} of the same partition was \
                     never delivered",
                    m.data,
                    m.offset,
                    passed_over
                );
            }
            let m = &mut model.msgs[i];
            if m.maybe_dead {
                // Delivered again: the dead-lettering had not been carried out.
                m.maybe_dead = false;
                *model.dead_maybe.get_mut(&m.data).expect("counted") -= 1;
            }
            m.attempts = d.attempt;
            m.uncertain = false;
            m.state = State::Leased {
                receipt: model.receipts.len(),
                deadline: now + D,
            };
            new_receipts.push(model.receipts.len());
            model.receipts.push(Receipt {
                ack_id: d.ack_id,
                msg: i,
                epoch: model.epoch,
            });
        }
        Ok(new_receipts)
    }

    /// Settles receipts (by index, distinct) and checks the outcome against the model.
    async fn settle(&mut self, picks: &[usize], action: Action) -> Result<(), TestCaseError> {
        self.model.expire();
        let model = &mut self.model;
        let now = model.now;
        let expected: Vec<(usize, Expect)> = picks
            .iter()
            .map(|&r| (r, model.expect(r, action)))
            .collect();
        let ids: Vec<AckId> = picks
            .iter()
            .map(|&r| model.receipts[r].ack_id.clone())
            .collect();
        let settle = match action {
            Action::Ack => Settle::Ack,
            Action::Nack(delay) => Settle::Nack {
                delay: delay.map(Duration::from_millis),
            },
            Action::Extend(ms) => Settle::Extend {
                deadline: Duration::from_millis(ms),
            },
        };
        let outcome = bounded(
            "settle",
            self.sut.broker().settle(&self.sut.sub, &ids, settle),
        )
        .await?;
        let describe = || {
            expected
                .iter()
                .map(|&(r, e)| {
                    let m = &model.msgs[model.receipts[r].msg];
                    format!("receipt {r} of {} ({:?}): {e:?}", m.data, m.state)
                })
                .collect::<Vec<_>>()
        };
        let applied = expected
            .iter()
            .filter(|(_, e)| *e != Expect::Rejected)
            .count();
        let rejected: BTreeSet<&str> = expected
            .iter()
            .filter(|(_, e)| *e == Expect::Rejected)
            .map(|&(r, _)| model.receipts[r].ack_id.0.as_str())
            .collect();
        let got_rejected: BTreeSet<&str> = outcome
            .rejected
            .iter()
            .map(|r| r.ack_id.0.as_str())
            .collect();
        prop_assert!(
            outcome.applied == applied
                && got_rejected == rejected
                && outcome.rejected.len() == rejected.len(),
            "{:?} at {}: applied {} rejected {:?}; the model expects {:?}",
            action,
            now,
            outcome.applied,
            outcome.rejected,
            describe()
        );
        prop_assert!(
            outcome.rejected.iter().all(|r| !r.reason.is_empty()),
            "every rejection gives a reason: {:?}",
            outcome.rejected
        );
        for (r, e) in expected {
            if e != Expect::Live {
                continue;
            }
            let i = model.receipts[r].msg;
            let max = model.variant.max_deliveries;
            let m = &mut model.msgs[i];
            m.state = match action {
                Action::Ack => State::Acked { receipt: r },
                Action::Nack(_) if max.is_some_and(|max| m.attempts >= max) => {
                    *model.dead_certain.entry(m.data.clone()).or_default() += 1;
                    State::Dead {
                        receipt: Some(r),
                        by_deadline: false,
                    }
                }
                Action::Nack(delay) => {
                    m.nacked_attempt = m.attempts;
                    let (earliest, latest) = match delay {
                        Some(d) => (now + d as i64, now + d as i64),
                        None => (now + B / 2, now + B),
                    };
                    State::Waiting {
                        earliest,
                        latest,
                        nacked: true,
                    }
                }
                Action::Extend(ms) => State::Leased {
                    receipt: r,
                    deadline: now + ms as i64,
                },
            };
        }
        self.model.expire();
        Ok(())
    }

    /// Picks a receipt: mostly one of the latest few, sometimes any (likely stale).
    fn pick_receipt(&self, pick: usize) -> usize {
        let len = self.model.receipts.len();
        if !pick.is_multiple_of(4) {
            len - 1 - (pick / 4) % len.min(6)
        } else {
            (pick / 4) % len
        }
    }

    async fn advance_to(&mut self, t: i64) {
        if t > self.model.now {
            self.sut
                .clock
                .advance(Duration::from_millis((t - self.model.now) as u64));
            self.model.now = t;
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Publish(n) => self.publish(*n).await?,
            Op::Pull(max) => {
                self.pull(*max).await?;
            }
            Op::Settle(picks, action) => {
                if self.model.receipts.is_empty() {
                    return Ok(());
                }
                let mut chosen = Vec::new();
                for &p in picks {
                    let r = self.pick_receipt(p);
                    if !chosen.contains(&r) {
                        chosen.push(r);
                    }
                }
                self.settle(&chosen, *action).await?;
            }
            Op::Advance(ms) => self.advance_to(self.model.now + *ms as i64).await,
            Op::AdvanceToEvent(pick, delta) => {
                let events = self.model.events();
                if !events.is_empty() {
                    let t = events[pick % events.len()] + delta;
                    self.advance_to(t).await;
                }
            }
            Op::SeekEarliest | Op::SeekLatest => {
                let earliest = *op == Op::SeekEarliest;
                let position = if earliest {
                    StartPosition::Earliest
                } else {
                    StartPosition::Latest
                };
                bounded("seek", self.sut.broker().seek(&self.sut.sub, position)).await?;
                self.model.seek(earliest);
            }
            Op::Restart => {
                self.sut.restart().await?;
                self.model.restart();
            }
        }
        self.model.expire();
        Ok(())
    }

    /// At-least-once: past every wait, pulling and acking until a pull is empty delivers
    /// exactly the messages the model holds unacked; after a restart nothing comes back.
    async fn drain(&mut self) -> Result<(), TestCaseError> {
        self.advance_to(self.model.now + FAR).await;
        self.model.expire();
        let unacked: BTreeSet<String> = self
            .model
            .msgs
            .iter()
            .filter(|m| matches!(m.state, State::Waiting { .. }))
            .map(|m| m.data.clone())
            .collect();
        let must: BTreeSet<String> = self
            .model
            .msgs
            .iter()
            .filter(|m| self.model.certain(m))
            .map(|m| m.data.clone())
            .collect();
        let mut drained = BTreeSet::new();
        for _ in 0..100 {
            let receipts = self.pull(1_000).await?;
            if receipts.is_empty() {
                break;
            }
            for &r in &receipts {
                drained.insert(self.model.msgs[self.model.receipts[r].msg].data.clone());
            }
            for chunk in receipts.chunks(3) {
                self.settle(chunk, Action::Ack).await?;
            }
        }
        prop_assert!(
            drained.is_subset(&unacked) && must.is_subset(&drained),
            "the drain delivered {:?}; the model holds {:?} unacked ({:?} certainly)",
            drained,
            unacked,
            must
        );
        for m in &mut self.model.msgs {
            // Maybe-dead messages the drain did not deliver were dead-lettered.
            if m.maybe_dead {
                m.maybe_dead = false;
                *self.model.dead_maybe.get_mut(&m.data).expect("counted") -= 1;
                if !drained.contains(&m.data) {
                    *self.model.dead_certain.entry(m.data.clone()).or_default() += 1;
                    m.state = State::Dead {
                        receipt: None,
                        by_deadline: false,
                    };
                }
            }
            // The drain pulled after every deadline: dead-letterings are carried out by now.
            if let State::Dead { by_deadline, .. } = &mut m.state {
                *by_deadline = false;
            }
        }

        self.sut.restart().await?;
        self.model.restart();
        self.advance_to(self.model.now + FAR).await;
        let again = self.pull(1_000).await?;
        prop_assert!(again.is_empty(), "everything was acked before the restart");

        if self.model.variant.max_deliveries.is_some() {
            self.check_dead_letters().await?;
        }
        Ok(())
    }

    /// Every dead letter names a message the model dead-lettered, as many times as it did, with
    /// `dead_letter.attempts` = `max_deliveries`.
    async fn check_dead_letters(&mut self) -> Result<(), TestCaseError> {
        let max = self
            .model
            .variant
            .max_deliveries
            .expect("the dead-letter variant");
        let ids: BTreeMap<String, String> = self
            .model
            .msgs
            .iter()
            .map(|m| (m.id.to_string(), m.data.clone()))
            .collect();
        let mut letters: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..100 {
            let got = bounded(
                "pull dead letters",
                self.sut
                    .broker()
                    .pull(&self.sut.inspect, 1_000, Duration::ZERO),
            )
            .await?;
            if got.is_empty() {
                break;
            }
            for d in &got {
                prop_assert_eq!(&d.message.topic, &self.sut.dead_topic);
                let original = d.message.attributes.get(ORIGINAL_ID).cloned();
                let data = original.as_ref().and_then(|id| ids.get(id));
                prop_assert!(
                    data.is_some(),
                    "a dead letter of an unknown message: {:?}",
                    d
                );
                let data = data.expect("checked").clone();
                prop_assert_eq!(&d.message.data[..], data.as_bytes());
                prop_assert_eq!(
                    d.message.attributes.get(ATTEMPTS),
                    Some(&max.to_string()),
                    "dead letter of {} after max_deliveries",
                    data
                );
                *letters.entry(data).or_default() += 1;
            }
            let ack_ids: Vec<AckId> = got.iter().map(|d| d.ack_id.clone()).collect();
            bounded(
                "ack dead letters",
                self.sut
                    .broker()
                    .settle(&self.sut.inspect, &ack_ids, Settle::Ack),
            )
            .await?;
        }
        for m in &self.model.msgs {
            let got = letters.get(&m.data).copied().unwrap_or(0);
            let certain = self.model.dead_certain.get(&m.data).copied().unwrap_or(0);
            let maybe = self.model.dead_maybe.get(&m.data).copied().unwrap_or(0);
            prop_assert!(
                (certain..=certain + maybe).contains(&got),
                "{} was dead-lettered {} times, the model expects {}..={}",
                m.data,
                got,
                certain,
                certain + maybe
            );
        }
        Ok(())
    }
}

fn run(variant: Variant, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    runtime.block_on(async move {
        let sut = Sut::new(variant).await?;
        let mut run = Run {
            model: Model::new(variant),
            sut,
            published: 0,
        };
        for (i, op) in ops.iter().enumerate() {
            run.step(op)
                .await
                .map_err(|e| fail(format!("step {i} ({op:?}) at {} ms: {e}", run.model.now)))?;
        }
        run.drain()
            .await
            .map_err(|e| fail(format!("final drain at {} ms: {e}", run.model.now)))?;
        let broker = run.sut.broker.take().expect("the broker is open");
        bounded("close", broker.close()).await?;
        Ok(())
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        // Failing cases are reported by the run, not stored beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// One topic with one partition, one subscription.
    #[test]
    fn one_partition_follows_the_model(ops in ops()) {
        run(Variant { partitions: 1, max_deliveries: None }, ops)?;
    }

    /// Two partitions: ordering and availability hold per partition.
    #[test]
    fn two_partitions_follow_the_model(ops in ops()) {
        run(Variant { partitions: 2, max_deliveries: None }, ops)?;
    }

    /// `max_deliveries` with a dead-letter topic.
    #[test]
    fn dead_letters_follow_the_model(ops in ops(), max in 1u32..=3) {
        run(Variant { partitions: 1, max_deliveries: Some(max) }, ops)?;
    }
}
