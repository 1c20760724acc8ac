//! Push delivery across SIGKILL: every message published before the kill reaches the endpoint
//! after a restart, whether it was waiting, in flight, or waiting for a retry at the kill.
//!
//! The receiver binds 127.0.0.1:0; the server may reach loopback only (allow list, allow-list
//! only, no DNS), so nothing here can leave the host.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::support::{ADMIN_KEY, Server, data_dir};

const MESSAGES: usize = 300;

fn loopback_only(dir: &std::path::Path) -> Server {
    Server::spawn(dir, |c| {
        c.env("OPAL_ADMIN_KEY", ADMIN_KEY)
            .env("OPAL_PUSH_ALLOW_NETS", "127.0.0.0/8,::1/128")
            .env("OPAL_PUSH_ONLY_ALLOWED_NETS", "true")
            .env("OPAL_PUSH_NO_DNS", "true")
            // Every first attempt fails on purpose; the breaker must not pause the endpoint.
            .env("OPAL_PUSH_BREAKER_FAILURES", "1000000");
    })
}

/// Answers every first attempt 500 (so retries are pending) and later ones 200 after a short
/// wait (so attempts are in flight); records the message ids it answered 200.
async fn receiver() -> (u16, Arc<Mutex<BTreeSet<String>>>, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let delivered = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let (d, s) = (Arc::clone(&delivered), Arc::clone(&seen));
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let (d, s) = (Arc::clone(&d), Arc::clone(&s));
        async move {
            *s.lock().unwrap() += 1;
            let header = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            if header("opal-attempt") == "1" {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.lock().unwrap().insert(header("webhook-id"));
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, delivered, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pushes_survive_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let (port, delivered, seen) = receiver().await;
    let mut server = loopback_only(&dir);
    server.create_topic("events").await;
    let (status, body) = server
        .put(
            "/v1/subscriptions/hook",
            json!({
                "topic": "events",
                "push": {
                    "url": format!("http://127.0.0.1:{port}/hook"),
                    "timeout_ms": 2_000,
                    "max_in_flight": 8,
                    "retry_schedule_ms": [0, 300, 300, 300, 300, 300, 300, 300],
                },
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut published = BTreeSet::new();
    for chunk in 0..(MESSAGES / 100) {
        let messages: Vec<_> = (0..100)
            .map(|i| json!({"data": {"n": chunk * 100 + i}}))
            .collect();
        let (status, body) = server
            .post("/v1/topics/events/messages", json!({"messages": messages}))
            .await;
        assert_eq!(status, 200, "{body}");
        for r in body["results"].as_array().unwrap() {
            published.insert(r["id"].as_str().unwrap().to_owned());
        }
    }
    // Kill once the endpoint is busy: some first attempts failed, some retries answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "no pushes within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let at_kill = delivered.lock().unwrap().len();
    assert!(
        at_kill < MESSAGES,
        "everything was delivered before the kill; the test proves nothing"
    );

    let server = loopback_only(&dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = delivered.lock().unwrap().clone();
        let missing: Vec<_> = published.difference(&got).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {MESSAGES} published messages never reached the endpoint after the restart \
             ({at_kill} before the kill), e.g. {:?}",
            missing.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, sub) = server.get("/v1/subscriptions/hook").await;
        if sub["stats"]["backlog"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backlog never emptied: {sub}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        *seen.lock().unwrap() > MESSAGES,
        "first attempts failed and were retried"
    );
}
