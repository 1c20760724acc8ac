//! What every conformance test stands on: the harness a backend implements, a fixture with a
//! manual clock and a temporary directory, and small helpers to publish, pull and settle.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;

use crate::{
    AckId, AckOutcome, Backoff, Broker, BrokerError, Clock, DataEncoding, Delivery, NewMessage,
    PublishResult, Settle, StartPosition, SubscriptionConfig, SubscriptionName, SubscriptionStats,
    TopicConfig, TopicName, TopicStats,
};

/// How a backend is opened for the suite.
///
/// The suite assumes the backend runs with [`crate::Limits::default`], and that `clock` is its
/// only time source: publish times, leases, backoff, delays, dedup windows and long-poll waits
/// all read it.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens a backend storing its data under `dir`, or reopens the one a previous `open` on the
    /// same `dir` left there (after its `close`).
    async fn open(&self, dir: &Path, clock: Clock) -> Arc<dyn Broker>;
}

/// Where every test's manual clock starts: 2025-01-01T00:00:00Z.
pub const START_MS: i64 = 1_735_689_600_000;
/// The ack deadline of [`sub_config`].
pub const ACK_DEADLINE_MS: i64 = 10_000;
/// The backoff of [`sub_config`]: 1 s, 2 s, 4 s, 8 s, 8 s, … (each with equal jitter).
pub const BACKOFF: Backoff = Backoff {
    initial_ms: 1_000,
    max_ms: 8_000,
    multiplier: 2.0,
};

/// How long any one broker call may take in real time before the test fails instead of hanging.
const REAL_TIME_BOUND: Duration = Duration::from_secs(5);
/// How long [`Fixture::pull_eventually`] keeps looking for work a background task should do.
const EVENTUALLY: Duration = Duration::from_secs(2);

/// Runs one test on a fresh current-thread runtime (what `#[tokio::test]` does), so that a
/// backend's test crate needs no tokio macros of its own.
pub fn run(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance test")
        .block_on(test);
}

/// Lets the backend's background tasks catch up after the clock moved: yields, then waits a
/// little real time. Never used to wait for a timer; timers run on the manual clock.
pub async fn settle_background() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

pub(crate) async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(REAL_TIME_BOUND, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {REAL_TIME_BOUND:?} of real time"),
    }
}

/// `START_MS + ms` as a timestamp.
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(START_MS + ms).expect("a timestamp near 2025")
}

/// A keyless binary message with `data` as payload and nothing else.
pub fn message(data: &str) -> NewMessage {
    NewMessage {
        key: None,
        attributes: Default::default(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        encoding: DataEncoding::Binary,
        dedup_id: None,
        deliver_at: None,
        callback: None,
    }
}

/// Builders for the optional parts of a [`NewMessage`].
pub trait MessageExt {
    fn with_key(self, key: &str) -> Self;
    fn with_attr(self, name: &str, value: &str) -> Self;
    fn with_dedup_id(self, id: &str) -> Self;
    fn with_deliver_at(self, at: Timestamp) -> Self;
    fn json(self) -> Self;
}

impl MessageExt for NewMessage {
    fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    fn with_attr(mut self, name: &str, value: &str) -> Self {
        self.attributes.insert(name.to_owned(), value.to_owned());
        self
    }

    fn with_dedup_id(mut self, id: &str) -> Self {
        self.dedup_id = Some(id.to_owned());
        self
    }

    fn with_deliver_at(mut self, at: Timestamp) -> Self {
        self.deliver_at = Some(at);
        self
    }

    fn json(mut self) -> Self {
        self.encoding = DataEncoding::Json;
        self
    }
}

/// A subscription on `topic` with [`ACK_DEADLINE_MS`] and [`BACKOFF`], otherwise defaults.
pub fn sub_config(topic: &TopicName) -> SubscriptionConfig {
    SubscriptionConfig {
        ack_deadline_ms: ACK_DEADLINE_MS as u64,
        backoff: BACKOFF,
        ..SubscriptionConfig::new(topic.clone())
    }
}

/// The payload of a delivery as text.
pub fn text(delivery: &Delivery) -> &str {
    std::str::from_utf8(&delivery.message.data).expect("the suite publishes UTF-8 payloads")
}

/// The payloads of deliveries, in the order given.
pub fn texts(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(text).collect()
}

/// The payloads of deliveries, sorted: for checks that do not depend on delivery order.
pub fn sorted_texts(deliveries: &[Delivery]) -> Vec<&str> {
    let mut all = texts(deliveries);
    all.sort_unstable();
    all
}

/// The ack ids of deliveries.
pub fn ack_ids<'a>(deliveries: impl IntoIterator<Item = &'a Delivery>) -> Vec<AckId> {
    deliveries.into_iter().map(|d| d.ack_id.clone()).collect()
}

/// The delivery whose payload is `data`; fails the test when there is none.
pub fn find<'a>(deliveries: &'a [Delivery], data: &str) -> &'a Delivery {
    deliveries
        .iter()
        .find(|d| text(d) == data)
        .unwrap_or_else(|| panic!("no delivery of {data:?} in {:?}", texts(deliveries)))
}

/// Fails the test unless `result` is `BrokerError::Invalid`.
#[track_caller]
pub fn assert_invalid<T: fmt::Debug>(result: Result<T, BrokerError>, what: &str) {
    match result {
        Err(BrokerError::Invalid { .. }) => {}
        other => panic!("{what}: expected BrokerError::Invalid, got {other:?}"),
    }
}

/// A pull started in the background, to be finished after the clock moved.
#[derive(Debug)]
pub struct PendingPull(tokio::task::JoinHandle<Result<Vec<Delivery>, BrokerError>>);

impl PendingPull {
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits (a bounded real time) for the pull to answer, and fails the test on an error.
    pub async fn finish(self) -> Vec<Delivery> {
        self.finish_result()
            .await
            .expect("the long-poll pull succeeded")
    }

    /// Waits (a bounded real time) for the pull to answer.
    pub async fn finish_result(self) -> Result<Vec<Delivery>, BrokerError> {
        bounded("a long-poll pull", self.0)
            .await
            .expect("the pull task did not panic")
    }

    /// Gives up on the pull, dropping its future.
    pub async fn abandon(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}

/// One test's world: a backend on a temporary directory, driven by a manual clock that starts at
/// [`START_MS`].
pub struct Fixture<'h> {
    harness: &'h dyn Harness,
    dir: tempfile::TempDir,
    pub clock: Clock,
    broker: Option<Arc<dyn Broker>>,
}

impl fmt::Debug for Fixture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("dir", &self.dir.path())
            .field("clock_ms", &(self.clock.now_ms() - START_MS))
            .field("broker", &self.broker)
            .finish()
    }
}

impl<'h> Fixture<'h> {
    pub async fn new(harness: &'h dyn Harness) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = Clock::manual(at(0));
        let broker = bounded(
            "opening the backend",
            harness.open(dir.path(), clock.clone()),
        )
        .await;
        Fixture {
            harness,
            dir,
            clock,
            broker: Some(broker),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.broker.as_ref().expect("the broker is open")
    }

    /// Closes the backend and opens it again on the same directory and clock.
    pub async fn restart(&mut self) {
        let broker = self.broker.take().expect("the broker is open");
        bounded("close", broker.close())
            .await
            .expect("close succeeded");
        drop(broker);
        settle_background().await;
        let reopened = bounded(
            "reopening the backend",
            self.harness.open(self.dir.path(), self.clock.clone()),
        )
        .await;
        assert!(reopened.is_ready(), "a reopened backend is ready");
        self.broker = Some(reopened);
    }

    /// Milliseconds since [`START_MS`] on the manual clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms() - START_MS
    }

    /// Moves the clock to `START_MS + ms` and lets background tasks catch up.
    pub async fn advance_to(&self, ms: i64) {
        let now = self.now_ms();
        assert!(ms >= now, "the clock only moves forward ({now} → {ms})");
        self.clock.advance(Duration::from_millis((ms - now) as u64));
        settle_background().await;
    }

    pub async fn topic(&self, name: &str, partitions: u32) -> TopicName {
        let config = TopicConfig {
            partitions,
            ..TopicConfig::default()
        };
        self.topic_with(name, config).await
    }

    pub async fn topic_with(&self, name: &str, config: TopicConfig) -> TopicName {
        let name = TopicName::new(name).expect("a valid topic name");
        bounded("create_topic", self.broker().create_topic(&name, config))
            .await
            .expect("create_topic succeeded");
        name
    }

    /// Creates a subscription at [`StartPosition::Earliest`].
    pub async fn subscribe(&self, name: &str, config: SubscriptionConfig) -> SubscriptionName {
        self.subscribe_at(name, config, StartPosition::Earliest)
            .await
    }

    pub async fn subscribe_at(
        &self,
        name: &str,
        config: SubscriptionConfig,
        start: StartPosition,
    ) -> SubscriptionName {
        let name = SubscriptionName::new(name).expect("a valid subscription name");
        bounded(
            "create_subscription",
            self.broker().create_subscription(&name, config, start),
        )
        .await
        .expect("create_subscription succeeded");
        name
    }

    pub async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<NewMessage>,
    ) -> Vec<PublishResult> {
        bounded("publish", self.broker().publish(topic, messages))
            .await
            .expect("publish succeeded")
    }

    /// One pull that does not wait.
    pub async fn pull(&self, sub: &SubscriptionName, max: usize) -> Vec<Delivery> {
        bounded("pull", self.broker().pull(sub, max, Duration::ZERO))
            .await
            .expect("pull succeeded")
    }

    /// Pulls without waiting until a pull comes back empty: everything available now.
    pub async fn pull_all(&self, sub: &SubscriptionName) -> Vec<Delivery> {
        let mut all = Vec::new();
        for _ in 0..1_000 {
            let got = self.pull(sub, 1_000).await;
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
        panic!("pulls kept returning messages: {} so far", all.len());
    }

    /// Pulls until at least `n` deliveries came, giving background tasks a bounded real time to
    /// make them available (a delay that came due, a dead letter being published).
    pub async fn pull_eventually(&self, sub: &SubscriptionName, n: usize) -> Vec<Delivery> {
        let give_up = tokio::time::Instant::now() + EVENTUALLY;
        let mut all = self.pull_all(sub).await;
        while all.len() < n && tokio::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
            all.extend(self.pull_all(sub).await);
        }
        all
    }

    /// Starts a long-poll pull in the background; its `wait` runs on the broker's clock.
    pub fn spawn_pull(&self, sub: &SubscriptionName, max: usize, wait: Duration) -> PendingPull {
        let broker = Arc::clone(self.broker());
        let sub = sub.clone();
        PendingPull(tokio::spawn(
            async move { broker.pull(&sub, max, wait).await },
        ))
    }

    pub async fn try_settle(
        &self,
        sub: &SubscriptionName,
        ids: &[AckId],
        action: Settle,
    ) -> Result<AckOutcome, BrokerError> {
        bounded("settle", self.broker().settle(sub, ids, action)).await
    }

    pub async fn settle(
        &self,
        sub: &SubscriptionName,
        ids: &[AckId],
        action: Settle,
    ) -> AckOutcome {
        self.try_settle(sub, ids, action)
            .await
            .expect("settle succeeded")
    }

    /// Acks and checks that every id was applied.
    pub async fn ack(&self, sub: &SubscriptionName, ids: &[AckId]) {
        let outcome = self.settle(sub, ids, Settle::Ack).await;
        assert_eq!(
            (outcome.applied, outcome.rejected.as_slice()),
            (ids.len(), &[][..]),
            "every ack id is applied"
        );
    }

    /// Nacks and checks that every id was applied.
    pub async fn nack(&self, sub: &SubscriptionName, ids: &[AckId], delay: Option<Duration>) {
        let outcome = self.settle(sub, ids, Settle::Nack { delay }).await;
        assert_eq!(
            (outcome.applied, outcome.rejected.as_slice()),
            (ids.len(), &[][..]),
            "every nacked id is applied"
        );
    }

    pub async fn seek(&self, sub: &SubscriptionName, position: StartPosition) {
        bounded("seek", self.broker().seek(sub, position))
            .await
            .expect("seek succeeded");
    }

    pub async fn sub_stats(&self, sub: &SubscriptionName) -> SubscriptionStats {
        bounded("get_subscription", self.broker().get_subscription(sub))
            .await
            .expect("get_subscription succeeded")
            .1
    }

    pub async fn topic_stats(&self, topic: &TopicName) -> TopicStats {
        bounded("get_topic", self.broker().get_topic(topic))
            .await
            .expect("get_topic succeeded")
            .1
    }
}
