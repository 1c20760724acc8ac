//! `PUT`/`GET /v1/topics/{topic}`.

use axum::body::Body;
use serde_json::{Value, json};

use crate::support::{TestApp, authed, without};

fn assert_rfc3339_utc(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert!(text.ends_with('Z'), "{text}");
    text.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{text}: {e}"));
}

#[tokio::test]
async fn create_is_201_then_200_when_repeated_then_409_when_different() {
    let app = TestApp::new();
    let first = app
        .json("PUT", "/v1/topics/orders", json!({"partitions": 2}))
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    let body = first.json();
    assert_eq!(body["name"], "orders");
    assert_eq!(body["partitions"], 2);
    assert_rfc3339_utc(&body["created_at"]);
    assert_eq!(
        without(&body, "created_at"),
        json!({
            "name": "orders",
            "revision": 1,
            "partitions": 2,
            "retention": {"max_age_ms": null, "max_bytes": null, "policy": "limits"},
            "dedup_window_ms": 120_000,
        }),
        "every setting is shown, defaults included"
    );

    let again = app
        .json("PUT", "/v1/topics/orders", json!({"partitions": 2}))
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(
        again.json(),
        body,
        "a repeat returns the stored topic unchanged"
    );

    let conflict = app
        .json("PUT", "/v1/topics/orders", json!({"partitions": 3}))
        .await;
    conflict.problem(409, "conflict");

    let read = app.read("/v1/topics/orders").await;
    assert_eq!(
        without(&read, "stats"),
        body,
        "the conflicting PUT changed nothing"
    );
}

#[tokio::test]
async fn create_without_a_body_uses_the_defaults() {
    let app = TestApp::new();
    let response = app
        .send(
            authed("PUT", "/v1/topics/plain")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.json()["partitions"], 1);
    // An empty object means the same settings, so it finds the topic.
    let again = app.json("PUT", "/v1/topics/plain", json!({})).await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test]
async fn an_invalid_name_is_400_naming_the_path_parameter() {
    let app = TestApp::new();
    for name in ["a%20b", ".hidden", "%C3%BC"] {
        let response = app
            .json("PUT", &format!("/v1/topics/{name}"), json!({}))
            .await;
        let body = response.problem(400, "invalid-request");
        assert_eq!(body["errors"][0]["parameter"], "topic", "{name}: {body}");
    }
}

#[tokio::test]
async fn invalid_settings_are_400_pointing_at_the_member() {
    let app = TestApp::new();
    for partitions in [0, 100_000] {
        let response = app
            .json("PUT", "/v1/topics/t", json!({"partitions": partitions}))
            .await;
        let body = response.problem(400, "invalid-request");
        assert_eq!(body["errors"][0]["pointer"], "/partitions", "{body}");
    }
    app.get("/v1/topics/t").await.problem(404, "not-found");
}

#[tokio::test]
async fn reading_an_absent_topic_is_404() {
    let app = TestApp::new();
    let body = app.get("/v1/topics/absent").await.problem(404, "not-found");
    assert!(
        body["detail"].as_str().unwrap().contains("absent"),
        "{body}"
    );
}

#[tokio::test]
async fn retention_and_dedup_window_are_stored_and_shown() {
    let app = TestApp::new();
    let settings = json!({
        "partitions": 1,
        "retention": {"max_age_ms": 3_600_000, "max_bytes": 1_048_576, "policy": "acked"},
        "dedup_window_ms": 5000,
    });
    let created = app.json("PUT", "/v1/topics/t", settings.clone()).await;
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json();
    assert_eq!(body["retention"], settings["retention"], "{body}");
    assert_eq!(body["dedup_window_ms"], 5000, "{body}");

    // The same settings find the topic; any difference is a conflict.
    let again = app.json("PUT", "/v1/topics/t", settings).await;
    assert_eq!(again.status, 200, "{again:?}");
    let different = json!({"retention": {"max_age_ms": 3_600_000, "max_bytes": 1_048_576}, "dedup_window_ms": 5000});
    app.json("PUT", "/v1/topics/t", different)
        .await
        .problem(409, "conflict");

    // Members of `retention` left out (or null) take their defaults.
    let partial = json!({"retention": {"max_age_ms": 60_000, "max_bytes": null}});
    let created = app.json("PUT", "/v1/topics/u", partial).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(
        created.json()["retention"],
        json!({"max_age_ms": 60_000, "max_bytes": null, "policy": "limits"})
    );
    assert_eq!(created.json()["dedup_window_ms"], 120_000);
}

#[tokio::test]
async fn invalid_retention_and_dedup_window_are_400_pointing_at_the_member() {
    let app = TestApp::new();
    let cases = [
        (
            json!({"retention": {"max_age_ms": 0}}),
            "/retention/max_age_ms",
        ),
        (
            json!({"retention": {"max_bytes": 0}}),
            "/retention/max_bytes",
        ),
        (
            json!({"retention": {"max_age_ms": -5}}),
            "/retention/max_age_ms",
        ),
        (
            json!({"retention": {"policy": "forever"}}),
            "/retention/policy",
        ),
        (json!({"retention": {"ttl": 5}}), "/retention/ttl"),
        (json!({"retention": 5}), "/retention"),
        (
            json!({"dedup_window_ms": 604_800_001u64}),
            "/dedup_window_ms",
        ),
        (json!({"dedup_window_ms": "2m"}), "/dedup_window_ms"),
    ];
    for (body, pointer) in cases {
        let response = app.json("PUT", "/v1/topics/t", body.clone()).await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    app.get("/v1/topics/t").await.problem(404, "not-found");
}

#[tokio::test]
async fn reading_a_topic_shows_its_stats() {
    let app = TestApp::new();
    let created = app
        .json("PUT", "/v1/topics/t", json!({"partitions": 2}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert!(created.json().get("stats").is_none(), "PUT shows no stats");

    let fresh = app.read("/v1/topics/t").await;
    let stats = &fresh["stats"];
    assert_eq!(
        stats["partitions"],
        json!([
            {"partition": 0, "start_offset": 0, "end_offset": 0, "messages": 0, "bytes": 0},
            {"partition": 1, "start_offset": 0, "end_offset": 0, "messages": 0, "bytes": 0},
        ]),
        "{fresh}"
    );
    for counter in [
        "published_messages",
        "published_bytes",
        "duplicates",
        "scheduled",
    ] {
        assert_eq!(stats[counter], 0, "{counter}: {fresh}");
    }

    let messages = json!([
        {"data": "a", "key": "k"},
        {"data": "b", "key": "k"},
        {"data": "c", "key": "k", "dedup_id": "once"},
        {"data": "c", "key": "k", "dedup_id": "once"},
        {"data": "later", "delay_ms": 600_000},
    ]);
    app.publish("t", messages).await;
    let read = app.read("/v1/topics/t").await;
    let stats = &read["stats"];
    assert_eq!(stats["duplicates"], 1, "{read}");
    assert_eq!(stats["scheduled"], 1, "{read}");
    assert!(stats["published_messages"].as_u64().unwrap() >= 3, "{read}");
    assert!(stats["published_bytes"].as_u64().unwrap() > 0, "{read}");
    let partitions = stats["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2, "{read}");
    let held: u64 = partitions
        .iter()
        .map(|p| p["messages"].as_u64().unwrap())
        .sum();
    let ends: u64 = partitions
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(
        held, 3,
        "three visible messages, the delayed one not yet: {read}"
    );
    assert_eq!(ends, 3, "{read}");
    assert!(
        partitions
            .iter()
            .any(|p| p["messages"] == 3 && p["bytes"].as_u64().unwrap() > 0),
        "one key, one partition: {read}"
    );
}
