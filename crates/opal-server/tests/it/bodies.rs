//! Malformed requests of every kind: each is a problem+json, and none stores anything.

use axum::body::Body;
use axum::http::Request;
use axum::http::header::ALLOW;
use serde_json::json;

use crate::support::{TestApp, authed};

const PUBLISH: &str = "/v1/topics/t/messages";

async fn app_with_topic(adjust: impl FnOnce(&mut opal_server::ServerConfig)) -> TestApp {
    let app = TestApp::with_config(adjust);
    app.create_topic_and_subscription("t", 30_000).await;
    app
}

async fn assert_nothing_stored(app: &TestApp) {
    let deliveries = app.pull("t", 10, 300).await;
    assert!(
        deliveries.is_empty(),
        "a rejected request stored {deliveries:?}"
    );
}

#[tokio::test]
async fn an_unknown_field_is_400_naming_it() {
    let app = app_with_topic(|_| {}).await;
    let body = json!({"messages": [{"data": 1, "colour": "red"}]});
    let problem = app
        .json("POST", PUBLISH, body)
        .await
        .problem(400, "invalid-request");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("unknown field `colour`"), "{detail}");
    assert!(detail.contains("expected one of"), "{detail}");
    assert_eq!(
        problem["errors"][0]["pointer"], "/messages/0/colour",
        "{problem}"
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_wrong_type_is_400_pointing_at_the_value() {
    let app = app_with_topic(|_| {}).await;
    let body = json!({"messages": [{"data": 1, "key": 7}]});
    let problem = app
        .json("POST", PUBLISH, body)
        .await
        .problem(400, "invalid-request");
    assert_eq!(
        problem["errors"][0]["pointer"], "/messages/0/key",
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("invalid type"),
        "{problem}"
    );

    let problem = app
        .json("PUT", "/v1/topics/u", json!({"partitions": "two"}))
        .await
        .problem(400, "invalid-request");
    assert_eq!(problem["errors"][0]["pointer"], "/partitions", "{problem}");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn invalid_json_is_400() {
    let app = app_with_topic(|_| {}).await;
    for text in [
        r#"{"messages": [{"data": 1}"#,
        r#"{"messages": []} trailing"#,
        "",
        "nul",
    ] {
        let response = app
            .raw("POST", PUBLISH, Some("application/json"), text)
            .await;
        let problem = response.problem(400, "invalid-request");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("not valid JSON"), "{text:?}: {detail}");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_400() {
    let app = app_with_topic(|_| {}).await;
    let body = b"{\"messages\": [{\"data\": \"caf\xe9\"}]}".to_vec();
    let response = app
        .raw("POST", PUBLISH, Some("application/json"), body)
        .await;
    let problem = response.problem(400, "invalid-request");
    assert!(
        problem["detail"].as_str().unwrap().contains("UTF-8"),
        "{problem}"
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = app_with_topic(|c| c.max_body_bytes = 1024).await;
    let big = "x".repeat(2000);
    let response = app
        .json("POST", PUBLISH, json!({"messages": [{"data": big}]}))
        .await;
    let problem = response.problem(413, "payload-too-large");
    assert!(
        problem["detail"].as_str().unwrap().contains("1024"),
        "{problem}"
    );
    // Just under the limit is fine.
    let fits = "x".repeat(900);
    app.publish("t", json!([{ "data": fits }])).await;
}

#[tokio::test]
async fn a_publish_without_a_usable_content_type_is_415() {
    let app = app_with_topic(|_| {}).await;
    let body = json!({"messages": [{"data": 1}]}).to_string();
    // Other media types are raw payloads (tests/it/raw.rs); these two are refused.
    for content_type in [Some("application/x-www-form-urlencoded"), None] {
        let response = app.raw("POST", PUBLISH, content_type, body.clone()).await;
        response.problem(415, "unsupported-media-type");
    }
    assert_nothing_stored(&app).await;
    // `+json` media types and parameters are fine.
    let response = app
        .raw(
            "POST",
            PUBLISH,
            Some("application/json; charset=utf-8"),
            body,
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = TestApp::new();
    for path in ["/v1/nothing", "/", "/v2/topics/t"] {
        let response = app.get(path).await;
        let problem = response.problem(404, "not-found");
        assert!(
            problem["detail"].as_str().unwrap().contains(path),
            "{problem}"
        );
    }
    // Also without a key: a missing route is not a secret.
    let response = app
        .send(Request::get("/nope").body(Body::empty()).unwrap())
        .await;
    response.problem(404, "not-found");
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_with_allow() {
    let app = TestApp::new();
    let response = app
        .send(authed("POST", "/v1/topics/t").body(Body::empty()).unwrap())
        .await;
    response.problem(405, "method-not-allowed");
    let allow = response.headers[ALLOW].to_str().unwrap();
    for method in ["PUT", "GET", "PATCH", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
}

#[tokio::test]
async fn request_ids_are_generated_and_propagated() {
    let app = TestApp::new();
    let response = app.get("/v1/topics/absent").await;
    let generated = response.headers["x-request-id"].to_str().unwrap();
    uuid::Uuid::parse_str(generated).expect("a generated request id is a UUID");

    let request = authed("GET", "/v1/topics/absent").header("x-request-id", "trace-me-42");
    let response = app.send(request.body(Body::empty()).unwrap()).await;
    assert_eq!(response.headers["x-request-id"], "trace-me-42");
}
