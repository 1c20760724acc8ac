//! Raw-body publish: any non-JSON `Content-Type` makes the body one message, described by
//! `opal-*` headers.

use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::support::{TestApp, TestResponse, authed};

const PUBLISH: &str = "/v1/topics/t/messages";

async fn app_with(adjust: impl FnOnce(&mut opal_server::ServerConfig)) -> TestApp {
    let app = TestApp::with_config(adjust);
    app.create_topic_and_subscription("t", 30_000).await;
    app
}

async fn post(app: &TestApp, headers: &[(&str, &str)], body: impl Into<Body>) -> TestResponse {
    let mut request = authed("POST", PUBLISH);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.send(request.body(body.into()).unwrap()).await
}

async fn post_ok(app: &TestApp, headers: &[(&str, &str)], body: impl Into<Body>) -> Value {
    let response = post(app, headers, body).await;
    assert_eq!(response.status, 200, "{response:?}");
    response.json()
}

async fn pull_messages(app: &TestApp, expected: usize) -> Vec<Value> {
    let deliveries = app.pull("t", 100, 2000).await;
    assert_eq!(deliveries.len(), expected, "{deliveries:#?}");
    deliveries.iter().map(|d| d["message"].clone()).collect()
}

async fn assert_nothing_stored(app: &TestApp) {
    let deliveries = app.pull("t", 10, 300).await;
    assert!(
        deliveries.is_empty(),
        "a rejected request stored {deliveries:?}"
    );
}

/// The `header` of the only error of a 400 problem.
fn error_header(response: &TestResponse) -> String {
    let problem = response.problem(400, "invalid-request");
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{problem}");
    errors[0]["header"]
        .as_str()
        .unwrap_or_else(|| panic!("no header in {problem}"))
        .to_owned()
}

#[tokio::test]
async fn a_raw_body_is_one_message_with_its_headers() {
    let app = app_with(|_| {}).await;
    let answer = post_ok(
        &app,
        &[
            ("content-type", "text/plain; charset=utf-8"),
            ("opal-attr-kind", "created"),
            ("opal-attr-order.id", "42"),
            ("opal-key", "customer-7"),
        ],
        "hello, world",
    )
    .await;
    let result = &answer["results"][0];
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(result["offset"], 0);
    assert_eq!(result["duplicate"], false);

    let bytes: Vec<u8> = (0..=255).collect();
    post_ok(
        &app,
        &[("content-type", "application/octet-stream")],
        bytes.clone(),
    )
    .await;
    // An empty body is a zero-length message.
    post_ok(&app, &[("content-type", "application/octet-stream")], "").await;

    let messages = pull_messages(&app, 3).await;
    assert_eq!(messages[0]["id"], result["id"]);
    assert_eq!(messages[0]["key"], "customer-7");
    assert_eq!(
        messages[0]["attributes"],
        json!({"kind": "created", "order.id": "42", "content-type": "text/plain; charset=utf-8"})
    );
    assert_eq!(messages[0]["data_base64"], BASE64.encode("hello, world"));
    assert!(messages[0].get("data").is_none(), "{}", messages[0]);
    assert_eq!(messages[1]["data_base64"], BASE64.encode(&bytes));
    assert_eq!(messages[1]["key"], Value::Null);
    assert_eq!(
        messages[1]["attributes"],
        json!({"content-type": "application/octet-stream"})
    );
    assert_eq!(messages[2]["data_base64"], "");
}

#[tokio::test]
async fn dedup_ids_come_from_opal_dedup_id_or_idempotency_key() {
    let app = app_with(|_| {}).await;
    let raw = [("content-type", "application/octet-stream")];
    let first = post_ok(&app, &[raw[0], ("opal-dedup-id", "d-1")], "a").await;
    let again = post_ok(&app, &[raw[0], ("opal-dedup-id", "d-1")], "b").await;
    assert_eq!(again["results"][0]["duplicate"], true, "{again}");
    assert_eq!(again["results"][0]["id"], first["results"][0]["id"]);
    // The header and an Idempotency-Key with the same value agree; the key alone works too.
    let same = post_ok(
        &app,
        &[
            raw[0],
            ("opal-dedup-id", "d-1"),
            ("idempotency-key", "\"d-1\""),
        ],
        "c",
    )
    .await;
    assert_eq!(same["results"][0]["duplicate"], true, "{same}");
    let keyed = post_ok(&app, &[raw[0], ("idempotency-key", "d-1")], "d").await;
    assert_eq!(keyed["results"][0]["duplicate"], true, "{keyed}");
    // They may not disagree.
    let response = post(
        &app,
        &[raw[0], ("opal-dedup-id", "x"), ("idempotency-key", "y")],
        "e",
    )
    .await;
    assert_eq!(error_header(&response), "opal-dedup-id");

    let messages = pull_messages(&app, 1).await;
    assert_eq!(messages[0]["data_base64"], BASE64.encode("a"));
}

#[tokio::test]
async fn a_delayed_raw_message_waits_for_its_time() {
    let app = app_with(|_| {}).await;
    let answer = post_ok(
        &app,
        &[("content-type", "text/plain"), ("opal-delay-ms", "700")],
        "later",
    )
    .await;
    let result = &answer["results"][0];
    assert_eq!(result["offset"], Value::Null, "{answer}");
    assert!(result["deliver_at"].as_str().is_some(), "{answer}");
    assert!(
        app.pull("t", 10, 200).await.is_empty(),
        "delivered before its time"
    );
    let deliveries = app.pull_until_some("t", Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(
        deliveries[0]["message"]["data_base64"],
        BASE64.encode("later")
    );
    assert_eq!(deliveries[0]["message"]["deliver_at"], result["deliver_at"]);
}

#[tokio::test]
async fn bad_headers_are_400s_naming_the_header() {
    let app = app_with(|c| c.limits.max_key_bytes = 8).await;
    let ct = ("content-type", "application/octet-stream");
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[ct, ("opal-colour", "red")], "opal-colour"),
        (&[ct, ("opal-delay-ms", "soon")], "opal-delay-ms"),
        (&[ct, ("opal-delay-ms", "99999999999999")], "opal-delay-ms"),
        (&[ct, ("opal-attr-a+b", "x")], "opal-attr-a+b"),
        (
            &[ct, ("opal-attr-content-type", "x")],
            "opal-attr-content-type",
        ),
        (&[ct, ("opal-key", "much-too-long")], "opal-key"),
        (&[ct, ("opal-dedup-id", "")], "opal-dedup-id"),
    ];
    for (headers, header) in cases {
        let response = post(&app, headers, "x").await;
        assert_eq!(error_header(&response), header, "{headers:?}");
    }
    let request = authed("POST", PUBLISH)
        .header("content-type", "application/octet-stream")
        .header("opal-key", "a")
        .header("opal-key", "b")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(error_header(&app.send(request).await), "opal-key");
    // `opal-` headers mean nothing to a JSON batch: refused rather than ignored.
    let response = post(
        &app,
        &[("content-type", "application/json"), ("opal-key", "k")],
        json!({"messages": [{"data": 1}]}).to_string(),
    )
    .await;
    assert_eq!(error_header(&response), "opal-key");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn size_limits_and_media_types() {
    let app = app_with(|c| {
        c.max_body_bytes = 4096;
        c.limits.max_message_bytes = 1000;
    })
    .await;
    let ct = [("content-type", "application/octet-stream")];
    let response = post(&app, &ct, vec![7u8; 1001]).await;
    let problem = response.problem(413, "payload-too-large");
    assert!(
        problem["detail"].as_str().unwrap().contains("1000"),
        "{problem}"
    );
    let response = post(&app, &ct, vec![7u8; 5000]).await;
    response.problem(413, "payload-too-large");
    // No `Content-Type`, or curl's default form type: refused, saying what to send.
    for headers in [
        &[][..],
        &[("content-type", "application/x-www-form-urlencoded")],
    ] {
        let response = post(&app, headers, "x").await;
        let problem = response.problem(415, "unsupported-media-type");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("application/octet-stream"),
            "{problem}"
        );
    }
    assert_nothing_stored(&app).await;
    post_ok(&app, &ct, vec![7u8; 1000]).await;
    assert_eq!(pull_messages(&app, 1).await.len(), 1);
}

#[tokio::test]
async fn a_raw_message_carries_the_trace_context() {
    let app = app_with(|_| {}).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    post_ok(
        &app,
        &[
            ("content-type", "text/plain"),
            ("traceparent", traceparent),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ],
        "traced",
    )
    .await;
    // An attribute given explicitly is the message's own context.
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    post_ok(
        &app,
        &[
            ("content-type", "text/plain"),
            ("traceparent", traceparent),
            ("opal-attr-traceparent", own),
        ],
        "own",
    )
    .await;
    let messages = pull_messages(&app, 2).await;
    assert_eq!(messages[0]["attributes"]["traceparent"], traceparent);
    assert_eq!(
        messages[0]["attributes"]["tracestate"],
        "rojo=00f067aa0ba902b7"
    );
    assert_eq!(messages[1]["attributes"]["traceparent"], own);
    let response = post(
        &app,
        &[("content-type", "text/plain"), ("traceparent", "01-xyz")],
        "bad",
    )
    .await;
    assert_eq!(error_header(&response), "traceparent");
    assert_nothing_stored(&app).await;
}
