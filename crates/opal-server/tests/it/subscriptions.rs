//! Subscriptions: create/read, long-poll pull, ack and redelivery (real time, bounded waits).

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, timeout};

use crate::support::{TestApp, ack_ids, without};

#[tokio::test]
async fn create_is_201_then_200_then_409_and_reads_back() {
    let app = TestApp::new();
    app.create_topic("t").await;
    let created = app
        .json("PUT", "/v1/subscriptions/s", json!({"topic": "t"}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json();
    assert_eq!(body["name"], "s");
    assert_eq!(body["topic"], "t");
    assert_eq!(
        body["ack_deadline_ms"], 30_000,
        "the default deadline: {body}"
    );
    assert!(
        body["created_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    assert_eq!(
        without(&body, "created_at"),
        json!({
            "name": "s",
            "revision": 1,
            "topic": "t",
            "ack_deadline_ms": 30_000,
            "backoff": {"initial_ms": 1000, "max_ms": 600_000, "multiplier": 2.0},
            "max_deliveries": null,
            "dead_letter_topic": null,
            "ordered": false,
            "filter": null,
            "push": null,
        }),
        "every setting is shown, defaults included"
    );

    let same = json!({"topic": "t", "ack_deadline_ms": 30_000});
    let again = app.json("PUT", "/v1/subscriptions/s", same).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json(), body);

    let different = json!({"topic": "t", "ack_deadline_ms": 1000});
    app.json("PUT", "/v1/subscriptions/s", different)
        .await
        .problem(409, "conflict");

    let read = app.read("/v1/subscriptions/s").await;
    assert_eq!(without(&read, "stats"), body);
}

#[tokio::test]
async fn a_subscription_needs_an_existing_topic_and_valid_settings() {
    let app = TestApp::new();
    let response = app
        .json("PUT", "/v1/subscriptions/s", json!({"topic": "absent"}))
        .await;
    response.problem(404, "not-found");

    app.create_topic("t").await;
    let cases = [
        (
            json!({"topic": "t", "ack_deadline_ms": 1}),
            "/ack_deadline_ms",
        ),
        (json!({"topic": "bad name"}), "/topic"),
        (json!({"ack_deadline_ms": 1000}), ""),
    ];
    for (body, pointer) in cases {
        let response = app.json("PUT", "/v1/subscriptions/s", body.clone()).await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    app.get("/v1/subscriptions/s")
        .await
        .problem(404, "not-found");
}

#[tokio::test]
async fn pull_arguments_are_bounded() {
    let app = TestApp::with_config(|c| {
        c.limits.max_pull_messages = 10;
        c.limits.max_wait_ms = 1000;
    });
    app.create_topic_and_subscription("s", 30_000).await;
    let cases = [
        (json!({"max_messages": 0}), "/max_messages"),
        (json!({"max_messages": 11}), "/max_messages"),
        (json!({"wait_ms": 1001}), "/wait_ms"),
        (json!({"wait_ms": -1}), "/wait_ms"),
    ];
    for (body, pointer) in cases {
        let response = app
            .json("POST", "/v1/subscriptions/s/pull", body.clone())
            .await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    // No body at all means the defaults (and the default count is capped by the limit).
    let response = app.raw("POST", "/v1/subscriptions/s/pull", None, "").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), json!({"deliveries": []}));
    let absent = app
        .json("POST", "/v1/subscriptions/none/pull", json!({}))
        .await;
    absent.problem(404, "not-found");
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_message_is_published() {
    let app = TestApp::new();
    app.create_topic_and_subscription("s", 30_000).await;
    let started = Instant::now();
    let waiter = tokio::spawn({
        let app = app.clone();
        async move { app.pull("s", 10, 10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the pull should still be waiting");

    app.publish("s", json!([{"data": "wake up"}])).await;
    let deliveries = timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the long-poll ended well before its 10 s wait")
        .unwrap();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0]["message"]["data"], "wake up");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn a_long_poll_ends_early_and_empty_on_shutdown() {
    let app = TestApp::new();
    app.create_topic_and_subscription("s", 30_000).await;
    let waiter = tokio::spawn({
        let app = app.clone();
        async move { app.pull("s", 10, 20_000).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the pull should still be waiting");

    app.shutdown.cancel();
    let deliveries = timeout(Duration::from_secs(3), waiter)
        .await
        .expect("shutdown cut the 20 s long-poll short")
        .unwrap();
    assert!(deliveries.is_empty(), "{deliveries:?}");
}

#[tokio::test]
async fn an_acked_message_is_not_redelivered() {
    let app = TestApp::new();
    app.create_topic_and_subscription("s", 200).await;
    app.publish("s", json!([{"data": 1}, {"data": 2}])).await;
    let deliveries = app.pull("s", 10, 2000).await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    let ack_ids = ack_ids(&deliveries);

    let response = app
        .json(
            "POST",
            "/v1/subscriptions/s/ack",
            json!({"ack_ids": ack_ids}),
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), json!({"acked": 2, "rejected": []}));

    // Three ack deadlines later, nothing comes back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = app.pull("s", 10, 300).await;
    assert!(again.is_empty(), "acked messages came back: {again:?}");
}

#[tokio::test]
async fn an_unacked_message_is_redelivered_after_its_deadline() {
    let app = TestApp::new();
    app.create_topic_and_subscription("s", 200).await;
    app.publish("s", json!([{"data": "again"}])).await;
    let first = app.pull("s", 10, 2000).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["attempt"], 1);
    let leased_at = Instant::now();

    let second = app.pull_until_some("s", Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1, "not redelivered within 5 s: {second:?}");
    assert!(
        leased_at.elapsed() >= Duration::from_millis(150),
        "redelivered before the deadline"
    );
    assert_eq!(second[0]["attempt"], 2);
    assert_eq!(second[0]["message"]["id"], first[0]["message"]["id"]);
    assert_ne!(
        second[0]["ack_id"], first[0]["ack_id"],
        "a new lease gets a new receipt"
    );
}

#[tokio::test]
async fn ack_ids_are_bounded_and_must_be_ones_opal_issued() {
    let app = TestApp::new();
    app.create_topic_and_subscription("s", 30_000).await;
    let none: Vec<String> = Vec::new();
    let too_many = vec!["x"; 1001];
    for ids in [json!(none), json!(too_many)] {
        let response = app
            .json("POST", "/v1/subscriptions/s/ack", json!({"ack_ids": ids}))
            .await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(problem["errors"][0]["pointer"], "/ack_ids", "{problem}");
    }
    let body = json!({"ack_ids": ["bogus"]});
    let response = app.json("POST", "/v1/subscriptions/s/ack", body).await;
    let problem = response.problem(400, "invalid-request");
    assert_eq!(problem["errors"][0]["pointer"], "/ack_ids/0", "{problem}");
}

#[tokio::test]
async fn an_ack_for_a_superseded_lease_is_rejected_with_a_reason() {
    let app = TestApp::new();
    app.create_topic_and_subscription("s", 200).await;
    app.publish("s", json!([{"data": 1}])).await;
    let first = app.pull("s", 10, 2000).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let second = app.pull_until_some("s", Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1, "not redelivered within 5 s: {second:?}");

    let stale = first[0]["ack_id"].clone();
    let response = app
        .json(
            "POST",
            "/v1/subscriptions/s/ack",
            json!({"ack_ids": [stale]}),
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let body = response.json();
    assert_eq!(body["acked"], 0, "{body}");
    assert_eq!(body["rejected"][0]["ack_id"], stale, "{body}");
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );

    let live = second[0]["ack_id"].clone();
    let response = app
        .json(
            "POST",
            "/v1/subscriptions/s/ack",
            json!({"ack_ids": [live]}),
        )
        .await;
    assert_eq!(response.json(), json!({"acked": 1, "rejected": []}));
}
