//! Every `/v1` route needs the admin key; health probes need nothing.

use axum::body::Body;
use axum::http::Request;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::json;

use crate::support::{TestApp, authed};

#[tokio::test]
async fn a_request_without_a_key_is_401_with_a_bearer_challenge() {
    let app = TestApp::new();
    let request = Request::put("/v1/topics/t").body(Body::empty()).unwrap();
    let response = app.send(request).await;
    response.problem(401, "unauthorized");
    let challenge = response.headers[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    // Nothing was created on the way.
    app.get("/v1/topics/t").await.problem(404, "not-found");
}

#[tokio::test]
async fn a_wrong_key_or_scheme_is_401() {
    let app = TestApp::new();
    for value in [
        "Bearer not-the-key",
        "Basic b3BhbDpvcGFs",
        "opal_test_admin-key",
    ] {
        let request = Request::get("/v1/topics/t").header(AUTHORIZATION, value);
        let response = app.send(request.body(Body::empty()).unwrap()).await;
        response.problem(401, "unauthorized");
        assert!(
            response.headers[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
}

#[tokio::test]
async fn the_right_key_is_accepted_on_every_resource() {
    let app = TestApp::new();
    let response = app.json("PUT", "/v1/topics/t", json!({})).await;
    assert_eq!(response.status, 201, "{response:?}");
    let request = authed("GET", "/v1/subscriptions/none")
        .body(Body::empty())
        .unwrap();
    // Past auth, the subscription is looked up (and is absent).
    app.send(request).await.problem(404, "not-found");
}

#[tokio::test]
async fn auth_is_checked_before_the_body_is_read() {
    let app = TestApp::new();
    let request = Request::post("/v1/topics/t/messages")
        .header("content-type", "text/plain")
        .body(Body::from("not json"))
        .unwrap();
    app.send(request).await.problem(401, "unauthorized");
}
