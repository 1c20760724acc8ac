//! Managing resources: PATCH with ETag/If-Match, DELETE, paginated lists, message browsing.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{ETAG, IF_MATCH, LINK};
use serde_json::json;

use crate::support::{TestApp, ack_ids, authed};

async fn patch(
    app: &TestApp,
    uri: &str,
    if_match: Option<&str>,
    body: serde_json::Value,
) -> crate::support::TestResponse {
    let mut request = authed("PATCH", uri).header("content-type", "application/json");
    if let Some(tag) = if_match {
        request = request.header(IF_MATCH, tag);
    }
    app.send(request.body(Body::from(body.to_string())).unwrap())
        .await
}

async fn delete(app: &TestApp, uri: &str, if_match: Option<&str>) -> crate::support::TestResponse {
    let mut request = authed("DELETE", uri);
    if let Some(tag) = if_match {
        request = request.header(IF_MATCH, tag);
    }
    app.send(request.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn topic_patch_follows_etags() {
    let app = TestApp::new();
    app.create_topic("t").await;
    let got = app.get("/v1/topics/t").await;
    assert_eq!(got.headers[ETAG], "\"1\"");
    assert_eq!(got.json()["revision"], 1);

    let changed = patch(
        &app,
        "/v1/topics/t",
        Some("\"1\""),
        json!({"dedup_window_ms": 5000, "retention": {"max_age_ms": 60000}}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    assert_eq!(changed.headers[ETAG], "\"2\"");
    let body = changed.json();
    assert_eq!(
        (
            body["dedup_window_ms"].as_u64(),
            body["retention"]["max_age_ms"].as_u64()
        ),
        (Some(5000), Some(60000))
    );
    assert_eq!(body["revision"], 2);

    let stale = patch(
        &app,
        "/v1/topics/t",
        Some("\"1\""),
        json!({"dedup_window_ms": 1}),
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{stale:?}");
    assert_eq!(stale.json()["type"], "urn:opal:problem:precondition-failed");
    assert_eq!(
        app.read("/v1/topics/t").await["dedup_window_ms"],
        5000,
        "nothing changed"
    );

    let partitions = patch(&app, "/v1/topics/t", None, json!({"partitions": 4})).await;
    assert_eq!(partitions.status, StatusCode::BAD_REQUEST, "{partitions:?}");
    // Bad input is a 400 whatever the revision, stale or not.
    let bad_and_stale = patch(
        &app,
        "/v1/topics/t",
        Some("\"1\""),
        json!({"partitions": 257}),
    )
    .await;
    assert_eq!(
        bad_and_stale.status,
        StatusCode::BAD_REQUEST,
        "{bad_and_stale:?}"
    );
    let unknown = patch(&app, "/v1/topics/t", None, json!({"colour": "red"})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let bad_tag = patch(&app, "/v1/topics/t", Some("1"), json!({})).await;
    assert_eq!(bad_tag.status, StatusCode::BAD_REQUEST);
    let missing = patch(&app, "/v1/topics/none", None, json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn topic_delete_refuses_while_used_and_forgets_messages() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    app.publish("t", json!([{"data": 1}])).await;
    let refused = delete(&app, "/v1/topics/t", None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");

    let stale = delete(&app, "/v1/subscriptions/t", Some("\"7\"")).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        delete(&app, "/v1/subscriptions/t", Some("\"1\""))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/v1/subscriptions/t").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete(&app, "/v1/topics/t", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get("/v1/topics/t").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        delete(&app, "/v1/topics/t", None).await.status,
        StatusCode::NOT_FOUND
    );

    app.create_topic("t").await;
    let browsed = app.read("/v1/topics/t/messages").await;
    assert_eq!(
        browsed["messages"],
        json!([]),
        "a new topic of the same name starts empty"
    );
}

#[tokio::test]
async fn deleting_a_subscription_voids_its_receipts() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    app.publish("t", json!([{"data": 1}])).await;
    let deliveries = app.pull("t", 10, 0).await;
    assert_eq!(
        delete(&app, "/v1/subscriptions/t", None).await.status,
        StatusCode::NO_CONTENT
    );
    let ack = app
        .json(
            "POST",
            "/v1/subscriptions/t/ack",
            json!({"ack_ids": ack_ids(&deliveries)}),
        )
        .await;
    assert_eq!(ack.status, StatusCode::NOT_FOUND);

    // A new subscription of the same name starts from scratch.
    app.create_subscription("t", json!({"topic": "t"})).await;
    assert_eq!(app.pull("t", 10, 0).await.len(), 1);
}

#[tokio::test]
async fn lists_page_with_cursors_and_link_headers() {
    let app = TestApp::new();
    for name in ["c", "a", "b"] {
        app.create_topic(name).await;
        app.create_subscription(name, json!({"topic": name})).await;
    }
    let first = app.get("/v1/topics?limit=2").await;
    assert_eq!(first.status, StatusCode::OK);
    let body = first.json();
    let names: Vec<_> = body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let link = first.headers[LINK].to_str().unwrap().to_owned();
    assert!(
        link.contains(&format!("cursor={cursor}")) && link.ends_with("rel=\"next\""),
        "{link}"
    );

    let second = app
        .read(&format!("/v1/topics?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second["topics"][0]["name"], "c");
    assert_eq!(second["topics"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_cursor"], json!(null));

    let subs = app.read("/v1/subscriptions").await;
    assert_eq!(subs["subscriptions"].as_array().unwrap().len(), 3);
    assert_eq!(
        app.get("/v1/topics?limit=0").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/v1/topics?cursor=!!").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/v1/topics?page=2").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn subscription_patch_changes_settings_and_keeps_position() {
    let app = TestApp::new();
    app.create_topic("t").await;
    app.create_topic("dlq").await;
    app.create_subscription("s", json!({"topic": "t", "filter": {"kind": ["a"]}}))
        .await;
    app.publish("t", json!([{"data": 1, "attributes": {"kind": "a"}}]))
        .await;
    let first = app.pull("s", 10, 0).await;
    app.action("s", "ack", json!({"ack_ids": ack_ids(&first)}))
        .await;

    let changed = patch(&app, "/v1/subscriptions/s", Some("\"1\""), json!({"filter": null, "max_deliveries": 3, "dead_letter_topic": "dlq", "ack_deadline_ms": 5000})).await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    let body = changed.json();
    assert_eq!(body["filter"], json!(null));
    assert_eq!(
        (body["max_deliveries"].as_u64(), body["revision"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(changed.headers[ETAG], "\"2\"");

    // The acked message stays acked; an unfiltered one now arrives.
    app.publish("t", json!([{"data": 2, "attributes": {"kind": "b"}}]))
        .await;
    let next = app.pull("s", 10, 0).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["message"]["data"], 2);

    let topic = patch(&app, "/v1/subscriptions/s", None, json!({"topic": "dlq"})).await;
    assert_eq!(topic.status, StatusCode::BAD_REQUEST, "{topic:?}");
    let cleared = patch(
        &app,
        "/v1/subscriptions/s",
        None,
        json!({"max_deliveries": null, "dead_letter_topic": null}),
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK, "{cleared:?}");
    assert_eq!(cleared.json()["max_deliveries"], json!(null));
    let bad_filter = patch(
        &app,
        "/v1/subscriptions/s",
        None,
        json!({"filter": {"kind": [{"prefx": "a"}]}}),
    )
    .await;
    assert_eq!(bad_filter.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_filter.json()["errors"][0]["pointer"]
            .as_str()
            .unwrap()
            .starts_with("/filter")
    );
}

#[tokio::test]
async fn browsing_reads_without_touching_subscriptions() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let messages: Vec<_> = (0..5).map(|i| json!({"data": i})).collect();
    app.publish("t", json!(messages)).await;

    let all = app.read("/v1/topics/t/messages").await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 5);
    assert_eq!(all["next_offset"], 5);
    let page = app
        .read("/v1/topics/t/messages?partition=0&from_offset=2&limit=2")
        .await;
    let offsets: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);
    assert_eq!(page["next_offset"], 4);
    let by_time = app
        .read("/v1/topics/t/messages?from_time=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(by_time["messages"].as_array().unwrap().len(), 5);

    assert_eq!(
        app.pull("t", 10, 0).await.len(),
        5,
        "the subscription saw nothing of the browsing"
    );
    for bad in [
        "?partition=3",
        "?from_offset=1&from_time=2000-01-01T00:00:00Z",
        "?from_time=yesterday",
        "?limit=0",
        "?limit=5000",
        "?colour=red",
    ] {
        let response = app.get(&format!("/v1/topics/t/messages{bad}")).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {response:?}"
        );
    }
    assert_eq!(
        app.get("/v1/topics/none/messages").await.status,
        StatusCode::NOT_FOUND
    );
}
