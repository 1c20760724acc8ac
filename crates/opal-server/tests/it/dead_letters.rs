//! Dead letters after `max_deliveries`, and redrive back to the source topic.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestApp, ack_ids};

/// `orders` with subscription `billing` (one delivery allowed, dead letters to `orders.dead`),
/// and two subscriptions on `orders.dead`: `dead.peek` to look at, `dead` to redrive from.
async fn setup(app: &TestApp) {
    app.create_topic("orders").await;
    app.create_topic("orders.dead").await;
    let billing = json!({
        "topic": "orders",
        "max_deliveries": 1,
        "dead_letter_topic": "orders.dead",
        "backoff": {"initial_ms": 100, "max_ms": 100},
    });
    app.create_subscription("billing", billing).await;
    app.create_subscription("dead.peek", json!({"topic": "orders.dead"}))
        .await;
    app.create_subscription("dead", json!({"topic": "orders.dead"}))
        .await;
}

async fn dead_letter_one(app: &TestApp) -> Value {
    let message =
        json!({"data": {"order": 42}, "key": "customer-7", "attributes": {"kind": "created"}});
    app.publish("orders", json!([message])).await;
    let delivered = app.pull("billing", 10, 2000).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let answer = app
        .action(
            "billing",
            "nack",
            json!({"ack_ids": ack_ids(&delivered), "delay_ms": 0}),
        )
        .await;
    assert_eq!(answer["nacked"], 1, "{answer}");
    delivered[0]["message"].clone()
}

#[tokio::test]
async fn a_message_is_dead_lettered_after_max_deliveries_and_redriven_back() {
    let app = TestApp::new();
    setup(&app).await;
    let original = dead_letter_one(&app).await;

    // Gone from the source subscription...
    let none = app.pull("billing", 10, 300).await;
    assert!(
        none.is_empty(),
        "redelivered after max_deliveries: {none:?}"
    );
    // ...and on the dead-letter topic, with where it came from.
    let dead = app
        .pull_until_some("dead.peek", Duration::from_secs(5))
        .await;
    assert_eq!(dead.len(), 1, "not dead-lettered within 5 s: {dead:?}");
    let message = &dead[0]["message"];
    assert_eq!(message["topic"], "orders.dead");
    assert_eq!(message["data"], original["data"]);
    assert_eq!(message["key"], "customer-7");
    let attributes = &message["attributes"];
    assert_eq!(attributes["kind"], "created", "{message}");
    assert_eq!(
        attributes["dead_letter.source_topic"], "orders",
        "{message}"
    );
    assert_eq!(
        attributes["dead_letter.source_subscription"], "billing",
        "{message}"
    );
    assert_eq!(attributes["dead_letter.attempts"], "1", "{message}");
    assert_eq!(
        attributes["dead_letter.reason"], "max_deliveries",
        "{message}"
    );
    assert_eq!(
        attributes["dead_letter.message_id"], original["id"],
        "{message}"
    );
    let stats = app.read("/v1/subscriptions/billing").await["stats"].clone();
    assert_eq!(stats["dead_lettered"], 1, "{stats}");
    assert_eq!(stats["backlog"], 0, "{stats}");

    // Redrive publishes it back to `orders` without the dead-letter attributes.
    let answer = app.action("dead", "redrive", json!({})).await;
    assert_eq!(answer, json!({"moved": 1, "skipped": 0}));
    let back = app.pull_until_some("billing", Duration::from_secs(5)).await;
    assert_eq!(back.len(), 1, "not redriven within 5 s: {back:?}");
    assert_eq!(back[0]["attempt"], 1);
    let message = &back[0]["message"];
    assert_eq!(message["topic"], "orders");
    assert_eq!(message["data"], original["data"]);
    assert_eq!(message["key"], "customer-7");
    assert_eq!(
        message["attributes"],
        json!({"kind": "created"}),
        "{message}"
    );
    app.action("billing", "ack", json!({"ack_ids": ack_ids(&back)}))
        .await;

    // Nothing is left to move.
    let answer = app.action("dead", "redrive", json!({})).await;
    assert_eq!(answer, json!({"moved": 0, "skipped": 0}));
}

#[tokio::test]
async fn redrive_moves_at_most_max_messages_and_takes_no_body() {
    let app = TestApp::new();
    setup(&app).await;
    dead_letter_one(&app).await;
    dead_letter_one(&app).await;
    // Wait until both are on the dead-letter topic.
    let mut seen = Vec::new();
    let start = tokio::time::Instant::now();
    while seen.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        seen.extend(app.pull("dead.peek", 10, 250).await);
    }
    assert_eq!(seen.len(), 2, "not dead-lettered within 5 s: {seen:?}");

    let answer = app
        .action("dead", "redrive", json!({"max_messages": 1}))
        .await;
    assert_eq!(answer, json!({"moved": 1, "skipped": 0}));
    // No body at all: the default count.
    let response = app
        .raw("POST", "/v1/subscriptions/dead/redrive", None, "")
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), json!({"moved": 1, "skipped": 0}));
}

#[tokio::test]
async fn redrive_arguments_are_checked() {
    let app = TestApp::new();
    setup(&app).await;
    for (body, pointer) in [
        (json!({"max_messages": 0}), "/max_messages"),
        (json!({"max_messages": 10_001}), "/max_messages"),
        (json!({"max_messages": -1}), "/max_messages"),
        (json!({"max": 5}), "/max"),
    ] {
        let response = app
            .json("POST", "/v1/subscriptions/dead/redrive", body.clone())
            .await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    app.json("POST", "/v1/subscriptions/none/redrive", json!({}))
        .await
        .problem(404, "not-found");
}
