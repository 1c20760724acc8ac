//! The first path end to end: 10,000 messages published, pulled, acked and checked.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{Server, data_dir};

const TOTAL: usize = 10_000;
const BATCH: usize = 100;
const PUBLISHERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(&data_dir(&root)));
    server.create_topic("orders").await;
    server
        .create_subscription("billing", "orders", 30_000)
        .await;

    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut published = Vec::new();
            for b in (p * BATCH..TOTAL).step_by(BATCH * PUBLISHERS) {
                let messages: Vec<Value> = (b..b + BATCH)
                    .map(|i| {
                        // Alternate JSON and binary payloads so both encodings go the whole way.
                        if i.is_multiple_of(2) {
                            json!({"data": {"n": i, "text": format!("message {i}")}, "key": format!("k{}", i % 7), "attributes": {"n": i.to_string()}})
                        } else {
                            json!({"data_base64": base64_of(i), "attributes": {"n": i.to_string()}})
                        }
                    })
                    .collect();
                let (status, body) = server
                    .post("/v1/topics/orders/messages", json!({"messages": messages}))
                    .await;
                assert_eq!(status, 200, "publish: {body}");
                let results = body["results"].as_array().unwrap();
                assert_eq!(results.len(), BATCH);
                for r in results {
                    assert_eq!(r["id"].as_str().unwrap().len(), 36, "{r}");
                    published.push(r["offset"].as_u64().unwrap());
                }
            }
            published
        }));
    }
    let mut offsets = Vec::new();
    for t in tasks {
        offsets.extend(t.await.unwrap());
    }
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(
        offsets,
        (0..TOTAL as u64).collect::<Vec<_>>(),
        "offsets are dense and unique"
    );

    let messages = server.drain("billing", 500, 100).await;
    assert_eq!(
        messages.len(),
        TOTAL,
        "every message delivered exactly once when acked in time"
    );
    let mut by_n = BTreeMap::new();
    for m in &messages {
        let n: usize = m["attributes"]["n"].as_str().unwrap().parse().unwrap();
        assert_eq!(m["topic"], "orders");
        assert!(m["publish_time"].as_str().unwrap().ends_with('Z'), "{m}");
        if n.is_multiple_of(2) {
            assert_eq!(m["data"], json!({"n": n, "text": format!("message {n}")}));
            assert_eq!(m["key"], format!("k{}", n % 7));
        } else {
            assert_eq!(m["data_base64"], base64_of(n));
            assert_eq!(m["key"], Value::Null);
        }
        assert!(
            by_n.insert(n, m["id"].clone()).is_none(),
            "message {n} delivered twice"
        );
    }
    assert_eq!(by_n.len(), TOTAL);
}

fn base64_of(i: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("bytes-{i}-\u{0}\u{ff}"))
}
