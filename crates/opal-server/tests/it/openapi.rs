//! `GET /openapi.json`: served without a key, OpenAPI 3.1, and every operation it documents is
//! answered by a route (the unit tests in `src/openapi.rs` check the converse).

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Request, StatusCode};
use serde_json::Value;

use crate::support::{TestApp, authed};

async fn document(app: &TestApp) -> Value {
    let response = app
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(
        response.headers.get(CONTENT_TYPE).unwrap(),
        "application/json"
    );
    response.json()
}

#[tokio::test]
async fn the_document_is_served_without_a_key() {
    let app = TestApp::new();
    let spec = document(&app).await;
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    assert_eq!(spec["info"]["title"], "Opal HTTP API");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    // The same bytes every time: clients may cache and diff it.
    let again = document(&app).await;
    assert_eq!(spec, again);
}

#[tokio::test]
async fn every_documented_operation_is_answered_by_a_route() {
    let app = TestApp::new();
    let spec = document(&app).await;
    let mut probed = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            // Any name will do: a missing topic is the handler's 404, not the router's.
            let uri = path
                .replace("{topic}", "probe")
                .replace("{subscription}", "probe");
            let method = method.to_uppercase();
            let response = app
                .send(authed(&method, &uri).body(Body::empty()).unwrap())
                .await;
            assert_ne!(
                response.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}: {response:?}"
            );
            if response.status == StatusCode::NOT_FOUND {
                let detail = response.json()["detail"].as_str().unwrap().to_owned();
                assert!(
                    !detail.starts_with("no resource at"),
                    "{method} {uri} has no route: {detail}"
                );
            }
            probed += 1;
        }
    }
    assert!(probed >= 24, "only {probed} operations");
}
