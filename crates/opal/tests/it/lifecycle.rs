//! Process lifecycle: the generated admin key, health, SIGTERM drain and restart.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Server, data_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_admin_key_is_printed_once_and_works_across_restarts() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let mut first = Server::spawn(&dir, |_| {});
    let line = first.banner.last().unwrap().clone();
    let secret = line
        .rsplit(' ')
        .next()
        .filter(|s| s.starts_with("opal_admin_"))
        .unwrap_or_else(|| panic!("no generated key in {line:?}"))
        .to_owned();
    assert_eq!(
        get_status(&first, &secret).await,
        404,
        "the printed key is accepted"
    );
    assert_eq!(get_status(&first, "opal_admin_wrong").await, 401);
    first.kill();

    let second = Server::spawn(&dir, |_| {});
    assert!(
        second.banner.iter().all(|l| !l.contains(&secret)),
        "the secret is never shown again: {:?}",
        second.banner
    );
    assert_eq!(
        get_status(&second, &secret).await,
        404,
        "the stored hash still accepts the key"
    );
    let stored = std::fs::read(dir.join("meta.redb")).unwrap();
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret itself is not in the data dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let mut server = Server::start(&dir);
    let health = server
        .client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = server
        .client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    server.create_topic("t").await;
    server.create_subscription("s", "t", 30_000).await;
    let (status, _) = server
        .post("/v1/topics/t/messages", json!({"messages": [{"data": 1}]}))
        .await;
    assert_eq!(status, 200);

    // A long-poll in flight must not hold the shutdown for its whole wait.
    let (client, url) = (server.client.clone(), server.url.clone());
    let waiting = tokio::spawn(async move {
        client
            .post(format!("{url}/v1/subscriptions/s/pull"))
            .bearer_auth(crate::support::ADMIN_KEY)
            .json(&json!({"max_messages": 1, "wait_ms": 0}))
            .send()
            .await
            .unwrap();
        // The first pull took the only message; this one waits.
        client
            .post(format!("{url}/v1/subscriptions/s/pull"))
            .bearer_auth(crate::support::ADMIN_KEY)
            .json(&json!({"max_messages": 1, "wait_ms": 20_000}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain took {:?}",
        started.elapsed()
    );
    assert_eq!(
        waiting.await.unwrap().ok(),
        Some(200),
        "the long-poll was answered, not cut"
    );

    let server = Server::start(&dir);
    let (status, body) = server.put("/v1/topics/t", json!({"partitions": 1})).await;
    assert_eq!(status, 200, "the topic survived: {body}");
}

async fn get_status(server: &Server, key: &str) -> u16 {
    let url = format!("{}/v1/topics/none", server.url);
    let response = server
        .client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}
