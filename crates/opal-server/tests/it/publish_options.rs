//! Publish options: deduplication (`dedup_id`, `Idempotency-Key`) and delayed delivery
//! (`delay_ms`, `deliver_at`). Delays are real time, kept short, and every wait is bounded.

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{TestApp, TestResponse, authed};

const PUBLISH: &str = "/v1/topics/t/messages";

async fn publish_with_key(app: &TestApp, key: &str, messages: Value) -> TestResponse {
    let request = authed("POST", PUBLISH)
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(json!({ "messages": messages }).to_string().into())
        .unwrap();
    app.send(request).await
}

async fn assert_nothing_stored(app: &TestApp) {
    let deliveries = app.pull("t", 10, 300).await;
    assert!(
        deliveries.is_empty(),
        "a rejected request stored {deliveries:?}"
    );
}

fn bad_request_pointer(response: &TestResponse) -> Value {
    let problem = response.problem(400, "invalid-request");
    problem["errors"][0]["pointer"].clone()
}

#[tokio::test]
async fn a_repeated_dedup_id_answers_the_first_result_and_stores_nothing() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let first = app
        .publish("t", json!([{"data": "once", "dedup_id": "order-42"}]))
        .await;
    let first = &first["results"][0];
    assert_eq!(first["duplicate"], false, "{first}");
    assert_eq!(first["offset"], 0, "{first}");
    assert!(first.get("deliver_at").is_none(), "{first}");

    let second = app
        .publish(
            "t",
            json!([{"data": "twice", "dedup_id": "order-42"}, {"data": "other"}]),
        )
        .await;
    let results = second["results"].as_array().unwrap();
    assert_eq!(results[0]["duplicate"], true, "{second}");
    assert_eq!(results[0]["id"], first["id"], "{second}");
    assert_eq!(results[0]["partition"], first["partition"], "{second}");
    assert_eq!(results[0]["offset"], first["offset"], "{second}");
    assert_eq!(results[1]["duplicate"], false, "{second}");
    assert_eq!(results[1]["offset"], 1, "{second}");

    let deliveries = app.pull("t", 10, 2000).await;
    let data: Vec<&Value> = deliveries.iter().map(|d| &d["message"]["data"]).collect();
    assert_eq!(data, [&json!("once"), &json!("other")]);
    let stats = app.read("/v1/topics/t").await["stats"].clone();
    assert_eq!(stats["duplicates"], 1, "{stats}");
}

#[tokio::test]
async fn the_idempotency_key_header_dedups_a_one_message_batch() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    // The structured-field string form and the bare token form name the same id.
    let first = publish_with_key(&app, r#""abc-1""#, json!([{"data": 1}])).await;
    assert_eq!(first.status, 200, "{first:?}");
    let first = first.json()["results"][0].clone();
    assert_eq!(first["duplicate"], false, "{first}");

    let second = publish_with_key(&app, "abc-1", json!([{"data": 1}])).await;
    assert_eq!(second.status, 200, "{second:?}");
    let second = second.json()["results"][0].clone();
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["offset"], first["offset"]);

    // The header and a body `dedup_id` are the same id.
    let third = app
        .publish("t", json!([{"data": 1, "dedup_id": "abc-1"}]))
        .await;
    assert_eq!(third["results"][0]["duplicate"], true, "{third}");
    // Both given and equal is fine.
    let fourth = publish_with_key(&app, "abc-1", json!([{"data": 1, "dedup_id": "abc-1"}])).await;
    assert_eq!(fourth.status, 200, "{fourth:?}");
    assert_eq!(fourth.json()["results"][0]["duplicate"], true);

    let deliveries = app.pull("t", 10, 2000).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
}

#[tokio::test]
async fn a_bad_dedup_id_or_idempotency_key_is_400() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let too_long = "x".repeat(257);
    for (messages, pointer) in [
        (json!([{"data": 1, "dedup_id": ""}]), "/messages/0/dedup_id"),
        (
            json!([{"data": 1, "dedup_id": too_long}]),
            "/messages/0/dedup_id",
        ),
        (json!([{"data": 1, "dedup_id": 7}]), "/messages/0/dedup_id"),
    ] {
        let response = app
            .json("POST", PUBLISH, json!({ "messages": messages }))
            .await;
        assert_eq!(bad_request_pointer(&response), pointer, "{messages}");
    }

    // The header and the body disagree: the body member is pointed at.
    let response = publish_with_key(&app, "a", json!([{"data": 1, "dedup_id": "b"}])).await;
    assert_eq!(bad_request_pointer(&response), "/messages/0/dedup_id");

    // Malformed headers, and the header on a batch of two, name the header.
    for (key, messages) in [
        (r#""unterminated"#, json!([{"data": 1}])),
        (r#""""#, json!([{"data": 1}])),
        ("a,b", json!([{"data": 1}])),
        ("k", json!([{"data": 1}, {"data": 2}])),
        (&*format!(r#""{}""#, "y".repeat(257)), json!([{"data": 1}])),
    ] {
        let response = publish_with_key(&app, key, messages).await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["header"], "Idempotency-Key",
            "{key}: {problem}"
        );
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn delay_zero_is_an_ordinary_message() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let past = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60)).to_string();
    let published = app
        .publish(
            "t",
            json!([{"data": 0, "delay_ms": 0}, {"data": 1, "deliver_at": past}]),
        )
        .await;
    for result in published["results"].as_array().unwrap() {
        assert!(result["offset"].is_u64(), "{published}");
        assert!(result.get("deliver_at").is_none(), "{published}");
    }
    let deliveries = app.pull("t", 10, 2000).await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    for delivery in &deliveries {
        assert!(
            delivery["message"].get("deliver_at").is_none(),
            "{delivery}"
        );
    }
}

#[tokio::test]
async fn a_delayed_message_is_invisible_until_its_time() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let sent = Instant::now();
    let before = jiff::Timestamp::now();
    let published = app
        .publish(
            "t",
            json!([{"data": "later", "delay_ms": 300}, {"data": "now"}]),
        )
        .await;
    let delayed = &published["results"][0];
    assert_eq!(delayed["offset"], Value::Null, "{published}");
    assert_eq!(delayed["duplicate"], false, "{published}");
    let deliver_at: jiff::Timestamp = delayed["deliver_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no deliver_at: {published}"))
        .parse()
        .unwrap();
    let delay = deliver_at.duration_since(before);
    assert!(
        delay >= jiff::SignedDuration::from_millis(299)
            && delay < jiff::SignedDuration::from_secs(5),
        "{published}"
    );
    assert!(published["results"][1]["offset"].is_u64(), "{published}");

    let first = app.pull("t", 10, 1000).await;
    assert_eq!(first.len(), 1, "only the undelayed message: {first:?}");
    assert_eq!(first[0]["message"]["data"], "now");

    let later = app.pull_until_some("t", Duration::from_secs(5)).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(290),
        "delivered after {:?}",
        sent.elapsed()
    );
    assert_eq!(later.len(), 1, "not delivered within 5 s: {later:?}");
    let message = &later[0]["message"];
    assert_eq!(message["data"], "later");
    assert_eq!(message["id"], delayed["id"]);
    assert!(message["offset"].is_u64(), "{message}");
    let delivered_deliver_at: jiff::Timestamp =
        message["deliver_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(delivered_deliver_at, deliver_at, "{message}");
}

#[tokio::test]
async fn deliver_at_delays_until_the_given_time() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(300);
    let published = app
        .publish("t", json!([{"data": "at", "deliver_at": at.to_string()}]))
        .await;
    assert_eq!(
        published["results"][0]["offset"],
        Value::Null,
        "{published}"
    );
    let later = app.pull_until_some("t", Duration::from_secs(5)).await;
    assert_eq!(later.len(), 1, "not delivered within 5 s: {later:?}");
    assert!(jiff::Timestamp::now() >= at);
}

#[tokio::test]
async fn invalid_delays_are_400_pointing_at_the_member() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let far = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(31 * 24)).to_string();
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)).to_string();
    let cases = [
        (
            json!({"data": 1, "delay_ms": 100, "deliver_at": soon}),
            "/messages/0",
        ),
        (json!({"data": 1, "delay_ms": -1}), "/messages/0/delay_ms"),
        (
            json!({"data": 1, "delay_ms": 2_592_000_001u64}),
            "/messages/0/delay_ms",
        ),
        (
            json!({"data": 1, "deliver_at": far}),
            "/messages/0/deliver_at",
        ),
        (
            json!({"data": 1, "deliver_at": "tomorrow"}),
            "/messages/0/deliver_at",
        ),
        (
            json!({"data": 1, "deliver_at": 1_700_000_000}),
            "/messages/0/deliver_at",
        ),
    ];
    for (message, pointer) in cases {
        let response = app
            .json("POST", PUBLISH, json!({ "messages": [message] }))
            .await;
        assert_eq!(bad_request_pointer(&response), pointer, "{message}");
    }
    assert_nothing_stored(&app).await;
}
