//! `PUT`/`GET /v1/topics/{topic}`.

use axum::body::Body;
use serde_json::{Value, json};

use crate::support::{TestApp, authed};

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
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");

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

    let read = app.get("/v1/topics/orders").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), body, "the conflicting PUT changed nothing");
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
