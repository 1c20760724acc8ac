//! The settings of `PUT /v1/subscriptions/{subscription}` beyond topic and deadline: backoff,
//! dead letters, ordering, filters and the start position; and the stats of `GET`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestApp, without};

fn data_of(deliveries: &[Value]) -> Vec<Value> {
    deliveries
        .iter()
        .map(|d| d["message"]["data"].clone())
        .collect()
}

#[tokio::test]
async fn every_setting_is_stored_shown_and_compared() {
    let app = TestApp::new();
    app.create_topic("t").await;
    app.create_topic("t.dead").await;
    let settings = json!({
        "topic": "t",
        "ack_deadline_ms": 10_000,
        "backoff": {"initial_ms": 200, "max_ms": 5000, "multiplier": 1.5},
        "max_deliveries": 5,
        "dead_letter_topic": "t.dead",
        "ordered": true,
        "filter": {"kind": ["created"]},
    });
    let body = app.create_subscription("s", settings.clone()).await;
    let mut expected = settings.clone();
    expected["name"] = json!("s");
    expected["revision"] = json!(1);
    expected["push"] = json!(null);
    assert_eq!(without(&body, "created_at"), expected);

    // The same settings with another start position find the subscription: `start` is only
    // used when creating.
    let mut same = settings.clone();
    same["start"] = json!("latest");
    let again = app.json("PUT", "/v1/subscriptions/s", same).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json(), body);

    let changes = [
        (
            "backoff",
            json!({"initial_ms": 300, "max_ms": 5000, "multiplier": 1.5}),
        ),
        ("max_deliveries", json!(6)),
        ("ordered", json!(false)),
        ("filter", json!({"kind": ["deleted"]})),
    ];
    for (member, value) in changes {
        let mut different = settings.clone();
        different[member] = value;
        app.json("PUT", "/v1/subscriptions/s", different)
            .await
            .problem(409, "conflict");
    }
    let read = app.read("/v1/subscriptions/s").await;
    assert_eq!(without(&read, "stats"), body, "conflicts changed nothing");
}

#[tokio::test]
async fn backoff_members_left_out_take_their_defaults() {
    let app = TestApp::new();
    app.create_topic("t").await;
    let body = app
        .create_subscription("s", json!({"topic": "t", "backoff": {"initial_ms": 50}}))
        .await;
    assert_eq!(
        body["backoff"],
        json!({"initial_ms": 50, "max_ms": 600_000, "multiplier": 2.0})
    );
    // `null` is the same as leaving a member out.
    let nulls = json!({"topic": "t", "backoff": {"initial_ms": 50}, "max_deliveries": null,
                       "dead_letter_topic": null, "filter": null});
    let again = app.json("PUT", "/v1/subscriptions/s", nulls).await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test]
async fn invalid_settings_are_400_pointing_at_the_member() {
    let app = TestApp::new();
    app.create_topic("t").await;
    app.create_topic("t.dead").await;
    let cases = [
        (
            json!({"backoff": {"multiplier": 0.5}}),
            "/backoff/multiplier",
        ),
        (
            json!({"backoff": {"initial_ms": 10_000, "max_ms": 1000}}),
            "/backoff/initial_ms",
        ),
        (
            json!({"backoff": {"max_ms": 2_592_000_001u64}}),
            "/backoff/max_ms",
        ),
        (json!({"backoff": {"jitter": true}}), "/backoff/jitter"),
        (json!({"max_deliveries": 0}), "/max_deliveries"),
        (json!({"max_deliveries": 1001}), "/max_deliveries"),
        (json!({"max_deliveries": -1}), "/max_deliveries"),
        (json!({"dead_letter_topic": "t.dead"}), "/dead_letter_topic"),
        (
            json!({"dead_letter_topic": "bad name", "max_deliveries": 3}),
            "/dead_letter_topic",
        ),
        (
            json!({"dead_letter_topic": "t", "max_deliveries": 3}),
            "/dead_letter_topic",
        ),
        (json!({"ordered": "yes"}), "/ordered"),
        (json!({"start": "middle"}), "/start"),
        (json!({"start": {"offset": -1}}), "/start/offset"),
        (json!({"start": {"time": "yesterday"}}), "/start/time"),
        (json!({"start": {"page": 2}}), "/start"),
    ];
    for (extra, pointer) in cases {
        let mut body = extra.clone();
        body["topic"] = json!("t");
        let response = app.json("PUT", "/v1/subscriptions/s", body.clone()).await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    let absent_dead_letter_topic =
        json!({"topic": "t", "max_deliveries": 3, "dead_letter_topic": "absent"});
    app.json("PUT", "/v1/subscriptions/s", absent_dead_letter_topic)
        .await
        .problem(404, "not-found");
    app.get("/v1/subscriptions/s")
        .await
        .problem(404, "not-found");
}

#[tokio::test]
async fn an_invalid_filter_is_400_pointing_into_the_filter() {
    let app = TestApp::new();
    app.create_topic("t").await;
    let cases = [
        (json!("kind = created"), "/filter"),
        (json!({}), "/filter"),
        (json!({"kind": []}), "/filter/kind"),
        (json!({"kind": [{"prefix": 5}]}), "/filter/kind"),
        (json!({"a.b": [{"no-such-operator": 1}]}), "/filter/a.b"),
    ];
    for (filter, pointer) in cases {
        let body = json!({"topic": "t", "filter": filter});
        let response = app.json("PUT", "/v1/subscriptions/s", body).await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{filter}: {problem}"
        );
    }
    app.get("/v1/subscriptions/s")
        .await
        .problem(404, "not-found");
}

#[tokio::test]
async fn a_filter_delivers_only_matching_messages_and_is_shown_canonically() {
    let app = TestApp::new();
    app.create_topic("t").await;
    // A bare string is the short form of a one-condition array.
    let body = app
        .create_subscription("s", json!({"topic": "t", "filter": {"kind": "created"}}))
        .await;
    assert_eq!(body["filter"], json!({"kind": ["created"]}), "{body}");

    app.publish(
        "t",
        json!([
            {"data": 1, "attributes": {"kind": "created"}},
            {"data": 2, "attributes": {"kind": "deleted"}},
            {"data": 3},
            {"data": 4, "attributes": {"kind": "created"}},
        ]),
    )
    .await;
    let deliveries = app.pull("s", 10, 2000).await;
    let mut got = data_of(&deliveries);
    if got.len() < 2 {
        got.extend(data_of(&app.pull("s", 10, 1000).await));
    }
    assert_eq!(got, [json!(1), json!(4)]);
}

#[tokio::test]
async fn start_latest_skips_what_was_published_before() {
    let app = TestApp::new();
    app.create_topic("t").await;
    app.publish("t", json!([{"data": "old"}])).await;
    app.create_subscription("from-start", json!({"topic": "t"}))
        .await;
    app.create_subscription("latest", json!({"topic": "t", "start": "latest"}))
        .await;
    app.publish("t", json!([{"data": "new"}])).await;

    let latest = app.pull("latest", 10, 2000).await;
    assert_eq!(data_of(&latest), [json!("new")]);
    let earliest = app.pull("from-start", 10, 2000).await;
    assert_eq!(data_of(&earliest), [json!("old"), json!("new")]);
}

#[tokio::test]
async fn start_at_an_offset_or_a_time() {
    let app = TestApp::new();
    app.create_topic("t").await;
    app.publish("t", json!([{"data": 0}, {"data": 1}, {"data": 2}]))
        .await;
    app.create_subscription("by-offset", json!({"topic": "t", "start": {"offset": 2}}))
        .await;
    let in_the_future = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let body = json!({"topic": "t", "start": {"time": in_the_future.to_string()}});
    app.create_subscription("by-time", body).await;

    let deliveries = app.pull("by-offset", 10, 2000).await;
    assert_eq!(data_of(&deliveries), [json!(2)]);
    let deliveries = app.pull("by-time", 10, 300).await;
    assert!(deliveries.is_empty(), "{deliveries:?}");
}

#[tokio::test]
async fn reading_a_subscription_shows_its_stats() {
    let app = TestApp::new();
    app.create_topic_and_subscription("s", 30_000).await;
    let fresh = app.read("/v1/subscriptions/s").await;
    assert_eq!(
        fresh["stats"],
        json!({
            "backlog": 0, "backlog_bytes": 0, "in_flight": 0, "oldest_unacked_age_ms": 0,
            "delivered": 0, "acked": 0, "nacked": 0, "redelivered": 0,
            "dead_lettered": 0, "expired": 0,
        }),
        "{fresh}"
    );

    app.publish("s", json!([{"data": 1}, {"data": 2}, {"data": 3}]))
        .await;
    let deliveries = app.pull("s", 2, 2000).await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    app.action("s", "ack", json!({"ack_ids": [deliveries[0]["ack_id"]]}))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let read = app.read("/v1/subscriptions/s").await;
    let stats = &read["stats"];
    assert_eq!(stats["backlog"], 2, "{read}");
    assert!(stats["backlog_bytes"].as_u64().unwrap() > 0, "{read}");
    assert_eq!(stats["in_flight"], 1, "{read}");
    assert_eq!(stats["delivered"], 2, "{read}");
    assert_eq!(stats["acked"], 1, "{read}");
    assert_eq!(stats["nacked"], 0, "{read}");
    assert!(
        stats["oldest_unacked_age_ms"].as_u64().unwrap() >= 20,
        "{read}"
    );
}
