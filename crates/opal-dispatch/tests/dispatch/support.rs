//! A real embedded broker, a running dispatcher, and scripted receivers on loopback.
//!
//! Receivers bind 127.0.0.1:0 only; the dispatcher's allow list is loopback only (or empty, to
//! see the guard refuse a loopback receiver that must then never be called).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use opal_core::{
    AttemptQuery, Broker, Clock, Message, NewMessage, PushConfig, PushSecret, StartPosition,
    SubscriptionConfig, SubscriptionName, TopicConfig, TopicName,
};
use opal_dispatch::{AddressPolicy, BreakerConfig, DispatcherSettings, SigningSecret};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) const LOOPBACK_ONLY: &str = "127.0.0.0/8, ::1/128";
/// Longest real-time wait for something the dispatcher should do.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) at: Instant,
}

impl Recorded {
    /// Checks the Standard Webhooks signature with `secret`, as a receiver would now.
    pub(crate) fn verify(
        &self,
        secret: &opal_dispatch::SigningSecret,
    ) -> Result<(), opal_dispatch::DispatchError> {
        opal_dispatch::verify(
            secret,
            self.header("webhook-id"),
            self.header("webhook-timestamp"),
            self.header("webhook-signature"),
            &self.body,
            jiff::Timestamp::now().as_second(),
            Duration::from_secs(60),
        )
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A loopback HTTP server answering the n-th request (0-based) with `answer(n, request)`.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    pub(crate) requests: Arc<Mutex<Vec<Recorded>>>,
    pub(crate) max_in_flight: Arc<AtomicUsize>,
}

impl Receiver {
    pub(crate) async fn start<F, Fut>(answer: F) -> Receiver
    where
        F: Fn(usize, Recorded) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let (log, busy, peak) = (
            Arc::clone(&requests),
            Arc::clone(&in_flight),
            Arc::clone(&max_in_flight),
        );
        let app = Router::new().fallback(move |method: Method, headers: HeaderMap, body: Bytes| {
            let (answer, log, busy, peak) = (
                answer.clone(),
                Arc::clone(&log),
                Arc::clone(&busy),
                Arc::clone(&peak),
            );
            async move {
                let request = Recorded {
                    method,
                    headers,
                    body,
                    at: Instant::now(),
                };
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len() - 1
                };
                let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let response = answer(n, request).await;
                busy.fetch_sub(1, Ordering::SeqCst);
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            port,
            requests,
            max_in_flight,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(crate) fn posts(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == Method::POST)
            .cloned()
            .collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` POSTs arrived; panics after [`WAIT`].
    pub(crate) async fn wait_for_posts(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + WAIT;
        loop {
            let posts = self.posts();
            if posts.len() >= n {
                return posts;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} POSTs, got {} within {WAIT:?}",
                posts.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Polls `check` until it returns `Some`, for at most [`WAIT`].
pub(crate) async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) struct Harness {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) topic: TopicName,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub(crate) fn settings(allow: &str) -> DispatcherSettings {
    DispatcherSettings {
        policy: AddressPolicy::parse_allow_list(allow).unwrap(),
        breaker: BreakerConfig {
            failure_threshold: 1_000,
            ..BreakerConfig::default()
        },
        ..DispatcherSettings::default()
    }
}

impl Harness {
    /// A broker with topic `acme/orders` and a dispatcher allowed to reach loopback.
    pub(crate) async fn start() -> Harness {
        Harness::with(settings(LOOPBACK_ONLY)).await
    }

    pub(crate) async fn with(settings: DispatcherSettings) -> Harness {
        Harness::with_clock(settings, Clock::system()).await
    }

    /// The broker and the dispatcher on `clock` (a manual one moves only when a test says).
    pub(crate) async fn with_clock(settings: DispatcherSettings, clock: Clock) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmbeddedConfig::new(dir.path());
        config.clock = clock.clone();
        let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(config).unwrap());
        let topic = TopicName::new("acme/orders").unwrap();
        broker
            .create_topic(&topic, TopicConfig::default())
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let task =
            opal_dispatch::spawn(Arc::clone(&broker), clock, settings, stop.clone()).unwrap();
        Harness {
            broker,
            topic,
            stop,
            task: Some(task),
            _dir: dir,
        }
    }

    pub(crate) async fn topic(&self, name: &str) -> TopicName {
        let topic = TopicName::new(name).unwrap();
        self.broker
            .create_topic(&topic, TopicConfig::default())
            .await
            .unwrap();
        topic
    }

    /// A push subscription `acme/<name>` on the topic with `push`, changed by `edit`.
    pub(crate) async fn push(
        &self,
        name: &str,
        push: PushConfig,
        edit: impl FnOnce(&mut SubscriptionConfig),
    ) -> SubscriptionName {
        let name = SubscriptionName::new(format!("acme/{name}")).unwrap();
        let mut config = SubscriptionConfig {
            ack_deadline_ms: push.timeout_ms + 5_000,
            max_deliveries: Some(push.retry_schedule_ms.len() as u32),
            push: Some(push),
            ..SubscriptionConfig::new(self.topic.clone())
        };
        edit(&mut config);
        self.broker
            .create_subscription(&name, config, StartPosition::Earliest)
            .await
            .unwrap();
        name
    }

    pub(crate) async fn publish(&self, messages: Vec<NewMessage>) -> Vec<uuid::Uuid> {
        self.broker
            .publish(&self.topic, messages)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    pub(crate) async fn attempts(&self, sub: &SubscriptionName) -> Vec<opal_core::PushAttempt> {
        self.broker
            .list_push_attempts(
                sub,
                AttemptQuery {
                    limit: 1_000,
                    ..AttemptQuery::default()
                },
            )
            .await
            .unwrap()
    }

    pub(crate) async fn read_all(&self, topic: &TopicName) -> Vec<Message> {
        self.broker
            .read_messages(topic, 0, StartPosition::Earliest, 1_000)
            .await
            .unwrap_or_default()
    }

    /// Stops the dispatcher and waits for it, as the server does before closing storage.
    pub(crate) async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the dispatcher stops")
                .unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An endpoint at `url` with one fresh secret, fast timeouts, and `schedule_ms`.
pub(crate) fn endpoint(url: &str, schedule_ms: &[u64]) -> (PushConfig, SigningSecret) {
    let secret = SigningSecret::generate();
    let mut config = PushConfig::new(
        url,
        PushSecret {
            secret: secret.as_str().to_owned(),
            expires_at: None,
        },
    );
    config.timeout_ms = 2_000;
    config.retry_schedule_ms = schedule_ms.to_vec();
    (config, secret)
}

pub(crate) fn text(data: &str) -> NewMessage {
    NewMessage {
        key: None,
        attributes: Default::default(),
        data: bytes::Bytes::copy_from_slice(data.as_bytes()),
        encoding: opal_core::DataEncoding::Binary,
        dedup_id: None,
        deliver_at: None,
        callback: None,
    }
}
