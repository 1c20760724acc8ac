//! Push delivery against its ceiling, in one process on loopback:
//!
//! 1. **ceiling**: a plain reqwest client POSTs the same signed bodies to the same receiver as
//!    fast as it can, with as many requests in flight as the endpoint allows;
//! 2. **dispatch**: as many messages published (durably, fsync always) before the endpoint is
//!    created, then pushed by the dispatcher: deliveries per second until the last arrives;
//! 3. **latency**: messages published one at a time at a fixed rate; each carries its publish
//!    time, and the receiver records publish-to-receive latency (p50, p99, max).
//!
//! Rounds alternate ceiling and dispatch so both see the same machine. Every loop is bounded.
//!
//! `cargo run --release -p opal-dispatch --example push_bench -- [messages] [rounds] [rate] [secs]`
//! (defaults 20000, 3, 1000, 10).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opal_core::{
    Broker, Clock, DataEncoding, NewMessage, PushConfig, PushSecret, StartPosition,
    SubscriptionConfig, SubscriptionName, TopicConfig, TopicName,
};
use opal_dispatch::{AddressPolicy, BreakerConfig, DispatcherSettings, SigningSecret};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};
use tokio_util::sync::CancellationToken;

const IN_FLIGHT: u32 = 64;
const PAYLOAD: usize = 256;
const WAIT_LIMIT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    /// Publish-to-receive latencies in µs, when the body carries a publish time.
    latencies: Mutex<Vec<u64>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// The publish time a raw-format body starts with (`<µs since epoch>;…`).
fn sent_at(body: &[u8]) -> Option<u64> {
    let end = body.iter().position(|&b| b == b';')?;
    std::str::from_utf8(&body[..end]).ok()?.parse().ok()
}

async fn receiver(counts: Arc<Counts>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().fallback(move |_: HeaderMap, body: Bytes| {
        let counts = Arc::clone(&counts);
        async move {
            counts.received.fetch_add(1, Ordering::Relaxed);
            if let Some(at) = sent_at(&body) {
                let latency = now_us().saturating_sub(at);
                counts.latencies.lock().unwrap().push(latency);
            }
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn body(stamp: bool) -> Vec<u8> {
    let mut b = if stamp {
        format!("{};", now_us()).into_bytes()
    } else {
        b"0;".to_vec()
    };
    b.resize(PAYLOAD, b'x');
    b
}

fn message(stamp: bool) -> NewMessage {
    NewMessage {
        key: None,
        attributes: Default::default(),
        data: bytes::Bytes::from(body(stamp)),
        encoding: DataEncoding::Binary,
        dedup_id: None,
        deliver_at: None,
        callback: None,
    }
}

async fn wait_for(counts: &Counts, n: u64) -> Duration {
    let started = Instant::now();
    while counts.received.load(Ordering::Relaxed) < n {
        assert!(started.elapsed() < WAIT_LIMIT, "receiver stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

/// A plain client: the same body, signed the same way, `IN_FLIGHT` requests at once.
async fn ceiling(url: &str, n: u64, counts: &Counts) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT as usize)
        .build()
        .unwrap();
    let secret = SigningSecret::generate();
    let before = counts.received.load(Ordering::Relaxed);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (client, url, secret, next) = (
            client.clone(),
            url.to_owned(),
            secret.clone(),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let body = body(false);
                let id = uuid::Uuid::now_v7().to_string();
                let ts = (now_us() / 1_000_000) as i64;
                let signature =
                    opal_dispatch::signature_header(&id, ts, &body, std::slice::from_ref(&secret));
                client
                    .post(&url)
                    .header("content-type", "application/octet-stream")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(counts.received.load(Ordering::Relaxed) >= before + n);
    n as f64 / elapsed.as_secs_f64()
}

struct Setup {
    broker: Arc<dyn Broker>,
    url: String,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

async fn setup(port: u16) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> =
        Arc::new(EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap());
    let stop = CancellationToken::new();
    let settings = DispatcherSettings {
        policy: AddressPolicy::parse_allow_list("127.0.0.0/8").unwrap(),
        breaker: BreakerConfig {
            failure_threshold: 1_000_000,
            ..BreakerConfig::default()
        },
        ..DispatcherSettings::default()
    };
    opal_dispatch::spawn(Arc::clone(&broker), Clock::system(), settings, stop.clone()).unwrap();
    Setup {
        broker,
        url: format!("http://127.0.0.1:{port}/hook"),
        _dir: dir,
        stop,
    }
}

async fn endpoint(s: &Setup, name: &str, topic: &TopicName, start: StartPosition) {
    let mut push = PushConfig::new(
        s.url.clone(),
        PushSecret {
            secret: SigningSecret::generate().as_str().to_owned(),
            expires_at: None,
        },
    );
    push.max_in_flight = IN_FLIGHT;
    push.format = opal_core::PushFormat::Raw;
    let name = SubscriptionName::new(name).unwrap();
    let config = SubscriptionConfig {
        ack_deadline_ms: 60_000,
        push: Some(push),
        ..SubscriptionConfig::new(topic.clone())
    };
    s.broker
        .create_subscription(&name, config, start)
        .await
        .unwrap();
}

/// Publishes `n` messages, then opens an endpoint from the earliest: deliveries per second.
async fn dispatch(s: &Setup, round: usize, n: u64, counts: &Counts) -> f64 {
    let topic = TopicName::new(format!("bench/backlog-{round}")).unwrap();
    s.broker
        .create_topic(&topic, TopicConfig::default())
        .await
        .unwrap();
    let mut left = n;
    while left > 0 {
        let batch = left.min(
            std::env::var("BATCH")
                .ok()
                .and_then(|b| b.parse().ok())
                .unwrap_or(1_000),
        );
        let messages = (0..batch).map(|_| message(false)).collect();
        s.broker.publish(&topic, messages).await.unwrap();
        left -= batch;
    }
    let before = counts.received.load(Ordering::Relaxed);
    let started = Instant::now();
    endpoint(
        s,
        &format!("bench/backlog-{round}"),
        &topic,
        StartPosition::Earliest,
    )
    .await;
    wait_for(counts, before + n).await;
    let elapsed = started.elapsed();
    n as f64 / elapsed.as_secs_f64()
}

/// Publishes one message at a time at `rate` per second for `secs`: latency percentiles in ms.
async fn latency(s: &Setup, rate: u64, secs: u64, counts: &Counts) -> (f64, f64, f64, u64) {
    let topic = TopicName::new("bench/latency").unwrap();
    s.broker
        .create_topic(&topic, TopicConfig::default())
        .await
        .unwrap();
    endpoint(s, "bench/latency", &topic, StartPosition::Latest).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    counts.latencies.lock().unwrap().clear();
    let before = counts.received.load(Ordering::Relaxed);
    let total = rate * secs;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let publishing = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..total {
        tick.tick().await;
        let (broker, topic) = (Arc::clone(&s.broker), topic.clone());
        sends.spawn(async move { broker.publish(&topic, vec![message(true)]).await.unwrap() });
    }
    while sends.join_next().await.is_some() {}
    let achieved = total as f64 / publishing.elapsed().as_secs_f64();
    wait_for(counts, before + total).await;
    let mut l = counts.latencies.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| l[((l.len() as f64 - 1.0) * p).round() as usize] as f64 / 1_000.0;
    eprintln!("latency phase: published {achieved:.0}/s");
    (
        pct(0.5),
        pct(0.99),
        *l.last().unwrap() as f64 / 1_000.0,
        l.len() as u64,
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(20_000);
    let rounds = args.get(1).copied().unwrap_or(3) as usize;
    let rate = args.get(2).copied().unwrap_or(1_000);
    let secs = args.get(3).copied().unwrap_or(10);
    let counts = Arc::new(Counts::default());
    let port = receiver(Arc::clone(&counts)).await;
    let s = setup(port).await;
    println!("messages={n} payload={PAYLOAD}B in_flight={IN_FLIGHT} fsync=always");
    let (mut ceilings, mut dispatches) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let c = ceiling(&s.url, n, &counts).await;
        let d = dispatch(&s, round, n, &counts).await;
        println!(
            "round {round}: ceiling {c:.0} req/s, dispatch {d:.0} deliveries/s = {:.1} %",
            100.0 * d / c
        );
        ceilings.push(c);
        dispatches.push(d);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "mean: ceiling {:.0} req/s, dispatch {:.0} deliveries/s = {:.1} %",
        mean(&ceilings),
        mean(&dispatches),
        100.0 * mean(&dispatches) / mean(&ceilings)
    );
    let (p50, p99, max, count) = latency(&s, rate, secs, &counts).await;
    println!(
        "latency at {rate}/s for {secs} s ({count} messages, publish to receive): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    s.stop.cancel();
}
