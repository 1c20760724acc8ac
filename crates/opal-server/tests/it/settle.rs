//! nack, extend and seek (real time, bounded waits).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{TestApp, ack_ids};

/// Pulls until `n` deliveries came or `within` passed.
async fn pull_n(app: &TestApp, subscription: &str, n: usize, within: Duration) -> Vec<Value> {
    let start = Instant::now();
    let mut deliveries = Vec::new();
    while deliveries.len() < n && start.elapsed() < within {
        deliveries.extend(app.pull(subscription, n - deliveries.len(), 250).await);
    }
    deliveries
}

fn data_of(deliveries: &[Value]) -> Vec<Value> {
    deliveries
        .iter()
        .map(|d| d["message"]["data"].clone())
        .collect()
}

/// A topic and a subscription `s` on it with the given extra settings.
async fn subscription(app: &TestApp, settings: Value) {
    app.create_topic("t").await;
    let mut body = settings;
    body["topic"] = json!("t");
    app.create_subscription("s", body).await;
}

fn slow_backoff() -> Value {
    json!({"initial_ms": 20_000, "max_ms": 20_000})
}

#[tokio::test]
async fn a_nack_with_delay_zero_redelivers_at_once_with_the_next_attempt() {
    let app = TestApp::new();
    // A backoff far longer than the test, so only the explicit delay can explain a redelivery.
    subscription(&app, json!({"backoff": slow_backoff()})).await;
    app.publish("t", json!([{"data": "retry me"}])).await;
    let first = app.pull("s", 10, 2000).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["attempt"], 1);

    let answer = app
        .action(
            "s",
            "nack",
            json!({"ack_ids": ack_ids(&first), "delay_ms": 0}),
        )
        .await;
    assert_eq!(answer, json!({"nacked": 1, "rejected": []}));
    let nacked_at = Instant::now();
    let second = app.pull("s", 10, 2000).await;
    assert_eq!(second.len(), 1, "not redelivered at once: {second:?}");
    assert!(nacked_at.elapsed() < Duration::from_secs(2));
    assert_eq!(second[0]["attempt"], 2);
    assert_eq!(second[0]["message"]["id"], first[0]["message"]["id"]);
    assert_ne!(second[0]["ack_id"], first[0]["ack_id"]);

    // The first receipt is spent: a second nack of it is refused with a reason.
    let stale = first[0]["ack_id"].clone();
    let answer = app
        .action("s", "nack", json!({"ack_ids": [stale], "delay_ms": 0}))
        .await;
    assert_eq!(answer["nacked"], 0, "{answer}");
    assert_eq!(answer["rejected"][0]["ack_id"], stale, "{answer}");
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{answer}"
    );
    let stats = app.read("/v1/subscriptions/s").await["stats"].clone();
    assert_eq!(stats["nacked"], 1, "{stats}");
}

#[tokio::test]
async fn a_nack_without_a_delay_waits_for_the_backoff() {
    let app = TestApp::new();
    subscription(&app, json!({"backoff": {"initial_ms": 600, "max_ms": 600}})).await;
    app.publish("t", json!([{"data": 1}])).await;
    let first = app.pull("s", 10, 2000).await;
    assert_eq!(first.len(), 1, "{first:?}");
    app.action("s", "nack", json!({"ack_ids": ack_ids(&first)}))
        .await;
    let nacked_at = Instant::now();
    // Equal jitter: the wait is between half and all of the 600 ms.
    let early = app.pull("s", 10, 150).await;
    assert!(
        early.is_empty(),
        "redelivered before the backoff: {early:?}"
    );
    let later = app.pull_until_some("s", Duration::from_secs(5)).await;
    assert_eq!(later.len(), 1, "not redelivered within 5 s: {later:?}");
    assert!(nacked_at.elapsed() >= Duration::from_millis(290));
    assert_eq!(later[0]["attempt"], 2);
}

#[tokio::test]
async fn a_nack_with_a_delay_waits_that_long_instead_of_the_backoff() {
    let app = TestApp::new();
    subscription(&app, json!({"backoff": slow_backoff()})).await;
    app.publish("t", json!([{"data": 1}])).await;
    let first = app.pull("s", 10, 2000).await;
    assert_eq!(first.len(), 1, "{first:?}");
    // Taken before the nack: its answer may take a while on a loaded machine, and the wait
    // counts from when the broker applied it.
    let nacked_at = Instant::now();
    app.action(
        "s",
        "nack",
        json!({"ack_ids": ack_ids(&first), "delay_ms": 400}),
    )
    .await;
    let later = app.pull_until_some("s", Duration::from_secs(5)).await;
    assert_eq!(later.len(), 1, "not redelivered within 5 s: {later:?}");
    assert!(nacked_at.elapsed() >= Duration::from_millis(390));
    assert_eq!(later[0]["attempt"], 2);
}

#[tokio::test]
async fn nack_arguments_are_checked() {
    let app = TestApp::with_config(|c| c.limits.max_ack_ids = 2);
    subscription(&app, json!({})).await;
    let cases = [
        (json!({"ack_ids": []}), "/ack_ids"),
        (json!({"ack_ids": ["a", "b", "c"]}), "/ack_ids"),
        (json!({"ack_ids": ["bogus"]}), "/ack_ids/0"),
        (
            json!({"ack_ids": ["bogus"], "delay_ms": 2_592_000_001u64}),
            "/delay_ms",
        ),
        (json!({"ack_ids": ["bogus"], "delay_ms": -1}), "/delay_ms"),
        (json!({"ack_ids": ["bogus"], "delay": 5}), "/delay"),
        (json!({"delay_ms": 5}), ""),
    ];
    for (body, pointer) in cases {
        let response = app
            .json("POST", "/v1/subscriptions/s/nack", body.clone())
            .await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    app.json(
        "POST",
        "/v1/subscriptions/none/nack",
        json!({"ack_ids": ["x"]}),
    )
    .await
    .problem(404, "not-found");
}

#[tokio::test]
async fn an_extended_lease_outlives_the_ack_deadline() {
    let app = TestApp::new();
    subscription(
        &app,
        json!({"ack_deadline_ms": 200, "backoff": {"initial_ms": 100, "max_ms": 100}}),
    )
    .await;
    app.publish("t", json!([{"data": 1}])).await;
    let first = app.pull("s", 10, 2000).await;
    assert_eq!(first.len(), 1, "{first:?}");

    let answer = app
        .action(
            "s",
            "extend",
            json!({"ack_ids": ack_ids(&first), "ack_deadline_ms": 5000}),
        )
        .await;
    assert_eq!(answer, json!({"extended": 1, "rejected": []}));
    // Well past the 200 ms deadline (and the backoff after it), nothing is redelivered...
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = app.pull("s", 10, 300).await;
    assert!(
        again.is_empty(),
        "redelivered despite the extension: {again:?}"
    );
    // ...and the original receipt still acks.
    let answer = app
        .action("s", "ack", json!({"ack_ids": ack_ids(&first)}))
        .await;
    assert_eq!(answer, json!({"acked": 1, "rejected": []}));
}

#[tokio::test]
async fn extend_arguments_are_checked() {
    let app = TestApp::new();
    subscription(&app, json!({})).await;
    let cases = [
        (
            json!({"ack_ids": ["bogus"], "ack_deadline_ms": 99}),
            "/ack_deadline_ms",
        ),
        (
            json!({"ack_ids": ["bogus"], "ack_deadline_ms": 43_200_001u64}),
            "/ack_deadline_ms",
        ),
        (json!({"ack_ids": ["bogus"]}), ""),
        (json!({"ack_ids": [], "ack_deadline_ms": 1000}), "/ack_ids"),
        (
            json!({"ack_ids": ["bogus"], "ack_deadline_ms": 1000}),
            "/ack_ids/0",
        ),
    ];
    for (body, pointer) in cases {
        let response = app
            .json("POST", "/v1/subscriptions/s/extend", body.clone())
            .await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    // Every argument error is listed at once.
    let response = app
        .json(
            "POST",
            "/v1/subscriptions/s/extend",
            json!({"ack_ids": [], "ack_deadline_ms": 1}),
        )
        .await;
    let problem = response.problem(400, "invalid-request");
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
}

#[tokio::test]
async fn seek_to_earliest_redelivers_acked_messages() {
    let app = TestApp::new();
    subscription(&app, json!({})).await;
    app.publish("t", json!([{"data": 1}, {"data": 2}])).await;
    let first = pull_n(&app, "s", 2, Duration::from_secs(5)).await;
    assert_eq!(data_of(&first), [json!(1), json!(2)]);
    app.action("s", "ack", json!({"ack_ids": ack_ids(&first)}))
        .await;
    let none = app.pull("s", 10, 300).await;
    assert!(none.is_empty(), "{none:?}");

    let answer = app.action("s", "seek", json!({"to": "earliest"})).await;
    assert_eq!(answer, json!({"subscription": "s", "to": "earliest"}));
    let again = pull_n(&app, "s", 2, Duration::from_secs(5)).await;
    assert_eq!(data_of(&again), [json!(1), json!(2)]);
    let ids = |d: &[Value]| {
        d.iter()
            .map(|d| d["message"]["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&first));
}

#[tokio::test]
async fn seek_to_latest_an_offset_or_a_time() {
    let app = TestApp::new();
    subscription(&app, json!({})).await;
    app.publish("t", json!([{"data": 0}, {"data": 1}, {"data": 2}]))
        .await;

    let answer = app.action("s", "seek", json!({"to": {"offset": 1}})).await;
    assert_eq!(answer, json!({"subscription": "s", "to": {"offset": 1}}));
    let from_one = pull_n(&app, "s", 2, Duration::from_secs(5)).await;
    assert_eq!(data_of(&from_one), [json!(1), json!(2)]);

    let answer = app.action("s", "seek", json!({"to": "latest"})).await;
    assert_eq!(answer["to"], "latest");
    let none = app.pull("s", 10, 300).await;
    assert!(none.is_empty(), "{none:?}");
    app.publish("t", json!([{"data": 3}])).await;
    let after = app.pull("s", 10, 2000).await;
    assert_eq!(data_of(&after), [json!(3)]);

    let past = "2020-01-01T00:00:00Z";
    let answer = app.action("s", "seek", json!({"to": {"time": past}})).await;
    assert_eq!(answer["to"], json!({"time": past}));
    let everything = pull_n(&app, "s", 4, Duration::from_secs(5)).await;
    assert_eq!(
        data_of(&everything),
        [json!(0), json!(1), json!(2), json!(3)]
    );

    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
    app.action("s", "seek", json!({"to": {"time": future}}))
        .await;
    let none = app.pull("s", 10, 300).await;
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn seek_arguments_are_checked() {
    let app = TestApp::new();
    subscription(&app, json!({})).await;
    let cases = [
        (json!({}), ""),
        (json!({"to": "middle"}), "/to"),
        (json!({"to": {"offset": -1}}), "/to/offset"),
        (json!({"to": {"time": "noon"}}), "/to/time"),
        (json!({"to": "earliest", "from": "latest"}), "/from"),
    ];
    for (body, pointer) in cases {
        let response = app
            .json("POST", "/v1/subscriptions/s/seek", body.clone())
            .await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    app.json(
        "POST",
        "/v1/subscriptions/none/seek",
        json!({"to": "earliest"}),
    )
    .await
    .problem(404, "not-found");
}
