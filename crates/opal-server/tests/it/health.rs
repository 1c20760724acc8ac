//! Liveness and readiness probes.

use axum::body::Body;
use axum::http::Request;
use axum::http::header::RETRY_AFTER;
use serde_json::json;

use crate::support::TestApp;

async fn probe(app: &TestApp, path: &str) -> crate::support::TestResponse {
    // No Authorization header: probes are unauthenticated.
    app.send(Request::get(path).body(Body::empty()).unwrap())
        .await
}

#[tokio::test]
async fn liveness_is_ok_without_a_key_and_stays_ok_while_draining() {
    let app = TestApp::new();
    for path in ["/healthz", "/livez"] {
        let response = probe(&app, path).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.json(), json!({"status": "ok"}));
    }
    app.shutdown.cancel();
    assert_eq!(probe(&app, "/healthz").await.status, 200);
}

#[tokio::test]
async fn readiness_turns_503_once_shutdown_begins() {
    let app = TestApp::new();
    let response = probe(&app, "/readyz").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), json!({"status": "ready"}));

    app.shutdown.cancel();
    let response = probe(&app, "/readyz").await;
    response.problem(503, "unavailable");
    assert!(response.headers.contains_key(RETRY_AFTER), "{response:?}");
}
