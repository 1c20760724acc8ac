//! At-least-once across SIGKILL: every answered publish and no answered ack is lost.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Server, data_dir};

const PUBLISHERS: usize = 4;
const BATCH: usize = 10;
/// Bounds each publisher even if the kill never comes.
const MAX_BATCHES: usize = 5_000;
const ROUNDS: usize = 3;

async fn publish_until_error(
    url: String,
    client: reqwest::Client,
    round: usize,
    p: usize,
) -> Vec<String> {
    let mut answered = Vec::new();
    for n in 0..MAX_BATCHES {
        let ids: Vec<String> = (0..BATCH)
            .map(|j| format!("r{round}-p{p}-b{n}-m{j}"))
            .collect();
        let messages: Vec<Value> = ids.iter().map(|id| json!({"data": {"id": id}})).collect();
        let response = client
            .post(format!("{url}/v1/topics/events/messages"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"messages": messages}))
            .send()
            .await;
        match response {
            Ok(r) if r.status().as_u16() == 200 => {
                // Only a complete, successful answer counts as acknowledged.
                match r.json::<Value>().await {
                    Ok(body) if body["results"].as_array().map(Vec::len) == Some(BATCH) => {
                        answered.extend(ids)
                    }
                    _ => break,
                }
            }
            _ => break,
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_publishes_survive_sigkill_mid_load() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let mut answered = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut server = Server::start(&dir);
        if round == 0 {
            server.create_topic("events").await;
            server.create_subscription("audit", "events", 60_000).await;
        }
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                tokio::spawn(publish_until_error(
                    server.url.clone(),
                    server.client.clone(),
                    round,
                    p,
                ))
            })
            .collect();
        let kill_after = Duration::from_millis(rand::random_range(300..1500));
        tokio::time::sleep(kill_after).await;
        server.kill();
        let mut this_round = 0;
        for p in publishers {
            let ids = p.await.unwrap();
            this_round += ids.len();
            answered.extend(ids);
        }
        assert!(
            this_round > 0,
            "round {round}: nothing was published before the kill"
        );
    }

    let server = Server::start(&dir);
    let delivered: BTreeSet<String> = server
        .drain("audit", 1000, 10_000)
        .await
        .into_iter()
        .map(|m| m["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = answered.difference(&delivered).take(10).collect();
    assert!(
        lost.is_empty(),
        "{} answered messages lost, e.g. {lost:?}",
        answered.difference(&delivered).count()
    );

    // Publishing goes on after recovery.
    let (status, body) = server
        .post(
            "/v1/topics/events/messages",
            json!({"messages": [{"data": "after"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_acks_survive_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let mut server = Server::start(&dir);
    server.create_topic("jobs").await;
    server.create_subscription("workers", "jobs", 60_000).await;
    let messages: Vec<Value> = (0..100).map(|i| json!({"data": i})).collect();
    let (status, body) = server
        .post("/v1/topics/jobs/messages", json!({"messages": messages}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (_, pulled) = server
        .post(
            "/v1/subscriptions/workers/pull",
            json!({"max_messages": 100, "wait_ms": 0}),
        )
        .await;
    let deliveries = pulled["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 100);
    // Ack every other message: the floor cannot simply jump, so the sparse set must survive too.
    let acked: BTreeSet<i64> = (0..100).filter(|i| i % 2 == 0 || *i < 10).collect();
    let ack_ids: Vec<Value> = deliveries
        .iter()
        .filter(|d| acked.contains(&d["message"]["data"].as_i64().unwrap()))
        .map(|d| d["ack_id"].clone())
        .collect();
    let (status, body) = server
        .post("/v1/subscriptions/workers/ack", json!({"ack_ids": ack_ids}))
        .await;
    assert_eq!(
        (status, body["acked"].as_u64()),
        (200, Some(acked.len() as u64)),
        "{body}"
    );
    server.kill();

    let server = Server::start(&dir);
    let redelivered: BTreeSet<i64> = server
        .drain("workers", 300, 100)
        .await
        .iter()
        .map(|m| m["data"].as_i64().unwrap())
        .collect();
    let expected: BTreeSet<i64> = (0..100).filter(|i| !acked.contains(i)).collect();
    assert_eq!(
        redelivered, expected,
        "exactly the unacked messages come back"
    );
}
