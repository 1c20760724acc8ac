//! Apps, keys, grants, quotas and the audit trail, through the HTTP API on a manual clock.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header::AUTHORIZATION};
use opal_core::Clock;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{KEY, TestApp, TestResponse, open_broker, server_config};

const ALL_SCOPES: [&str; 4] = ["manage", "read", "publish:*", "consume:*"];

fn clock() -> Clock {
    Clock::manual("2026-11-27T12:00:00Z".parse().unwrap())
}

struct Tenants {
    app: TestApp,
    clock: Clock,
}

impl Tenants {
    fn new() -> Self {
        let clock = clock();
        let for_config = clock.clone();
        Tenants {
            app: TestApp::with_config(move |c| c.clock = for_config),
            clock,
        }
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> TestResponse {
        self.app.with_key(Some(KEY), method, uri, body).await
    }

    async fn create_app(&self, name: &str, quotas: Value) {
        let response = self
            .admin(
                "POST",
                "/v1/apps",
                Some(json!({"name": name, "quotas": quotas})),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    }

    /// A new key of `app`: (id, secret).
    async fn key(&self, app: &str, scopes: &[&str], expires_at: Option<&str>) -> (String, String) {
        let response = self
            .admin(
                "POST",
                &format!("/v1/apps/{app}/keys"),
                Some(json!({"name": "test", "scopes": scopes, "expires_at": expires_at})),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
        let body = response.json();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }

    async fn call(&self, key: &str, method: &str, uri: &str, body: Option<Value>) -> TestResponse {
        self.app.with_key(Some(key), method, uri, body).await
    }

    async fn ok(&self, key: &str, method: &str, uri: &str, body: Option<Value>) -> Value {
        let response = self.call(key, method, uri, body).await;
        assert!(response.status.is_success(), "{method} {uri}: {response:?}");
        if response.body.is_empty() {
            Value::Null
        } else {
            response.json()
        }
    }
}

#[tokio::test]
async fn an_app_key_names_its_own_resources_and_the_admin_sees_them_qualified() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;

    let created = t
        .ok(&acme, "PUT", "/v1/topics/orders", Some(json!({})))
        .await;
    assert_eq!(created["name"], "orders");
    let listed = t.ok(&acme, "GET", "/v1/topics", None).await;
    assert_eq!(listed["topics"][0]["name"], "orders");
    // The admin's short names are the `default` app's: it has no `orders` yet.
    t.admin("GET", "/v1/topics/orders", None)
        .await
        .problem(404, "not-found");
    assert_eq!(
        t.admin("GET", "/v1/topics", None).await.json()["topics"],
        json!([])
    );
    let qualified = t.admin("GET", "/v1/topics/acme%2Forders", None).await;
    assert_eq!(qualified.json()["name"], "acme/orders");

    // Same short name, other app: another topic.
    t.admin("PUT", "/v1/topics/orders", Some(json!({}))).await;
    t.ok(
        &acme,
        "POST",
        "/v1/topics/orders/messages",
        Some(json!({"messages": [{"data": 1}, {"data": 2}]})),
    )
    .await;
    let acme_stats = t.ok(&acme, "GET", "/v1/topics/orders", None).await;
    let default_stats = t.admin("GET", "/v1/topics/orders", None).await.json();
    assert_eq!(acme_stats["stats"]["published_messages"], 2);
    assert_eq!(default_stats["stats"]["published_messages"], 0);

    // Deliveries and browsing show the short name too.
    t.ok(
        &acme,
        "PUT",
        "/v1/subscriptions/s",
        Some(json!({"topic": "orders"})),
    )
    .await;
    let sub = t.ok(&acme, "GET", "/v1/subscriptions/s", None).await;
    assert_eq!(
        (&sub["name"], &sub["topic"]),
        (&json!("s"), &json!("orders"))
    );
    let pulled = t
        .ok(
            &acme,
            "POST",
            "/v1/subscriptions/s/pull",
            Some(json!({"max_messages": 10})),
        )
        .await;
    assert_eq!(pulled["deliveries"][0]["message"]["topic"], "orders");
    let browsed = t.ok(&acme, "GET", "/v1/topics/orders/messages", None).await;
    assert_eq!(browsed["messages"][1]["topic"], "orders");
}

#[tokio::test]
async fn another_apps_resources_answer_the_same_whether_they_exist_or_not() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    t.create_app("isv", json!({})).await;
    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;
    let (_, isv) = t.key("isv", &ALL_SCOPES, None).await;
    t.ok(&acme, "PUT", "/v1/topics/orders", Some(json!({})))
        .await;
    t.ok(
        &acme,
        "PUT",
        "/v1/subscriptions/billing",
        Some(json!({"topic": "orders"})),
    )
    .await;
    let attempts = |name: &str| {
        vec![
            ("GET", format!("/v1/topics/acme%2F{name}"), None),
            (
                "POST",
                format!("/v1/topics/acme%2F{name}/messages"),
                Some(json!({"messages": [{"data": 1}]})),
            ),
            ("GET", format!("/v1/topics/acme%2F{name}/messages"), None),
            ("DELETE", format!("/v1/topics/acme%2F{name}"), None),
            ("GET", format!("/v1/subscriptions/acme%2F{name}"), None),
            (
                "POST",
                format!("/v1/subscriptions/acme%2F{name}/pull"),
                Some(json!({})),
            ),
            (
                "POST",
                format!("/v1/subscriptions/acme%2F{name}/seek"),
                Some(json!({"to": "earliest"})),
            ),
            (
                "POST",
                format!("/v1/subscriptions/acme%2F{name}/redrive"),
                Some(json!({})),
            ),
            (
                "GET",
                format!("/v1/subscriptions/acme%2F{name}/events"),
                None,
            ),
        ]
    };
    for ((method, existing, body), (_, missing, _)) in
        attempts("orders").into_iter().zip(attempts("nothing"))
    {
        let existing_answer = t.call(&isv, method, &existing, body.clone()).await;
        let missing_answer = t.call(&isv, method, &missing, body).await;
        assert_eq!(
            existing_answer.status,
            StatusCode::FORBIDDEN,
            "{method} {existing}"
        );
        assert_eq!(
            missing_answer.status, existing_answer.status,
            "{method} {missing}"
        );
        let strip = |r: &TestResponse, name: &str| r.text().replace(name, "NAME");
        assert_eq!(
            strip(&existing_answer, "orders"),
            strip(&missing_answer, "nothing"),
            "{method}: the answers differ"
        );
    }
    // A subscription on another app's topic without a grant: as if the topic did not exist.
    let ungranted = t
        .call(
            &isv,
            "PUT",
            "/v1/subscriptions/mine",
            Some(json!({"topic": "acme/orders"})),
        )
        .await;
    let missing = t
        .call(
            &isv,
            "PUT",
            "/v1/subscriptions/mine",
            Some(json!({"topic": "acme/nothing"})),
        )
        .await;
    ungranted.problem(404, "not-found");
    assert_eq!(
        ungranted.text().replace("orders", "NAME"),
        missing.text().replace("nothing", "NAME")
    );
    // Its own short name is its own app's: a missing topic, not acme's.
    t.call(&isv, "GET", "/v1/topics/orders", None)
        .await
        .problem(404, "not-found");
    // Nothing changed for acme.
    let stats = t.ok(&acme, "GET", "/v1/topics/orders", None).await;
    assert_eq!(stats["stats"]["published_messages"], 0);
    t.ok(&acme, "GET", "/v1/subscriptions/billing", None).await;
}

#[tokio::test]
async fn keys_are_shown_once_and_stop_working_when_revoked_or_expired() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    let (expiring_id, expiring) = t.key("acme", &["read"], Some("2026-11-27T12:01:00Z")).await;
    let (revoked_id, revoked) = t.key("acme", &["read"], None).await;
    assert!(expiring.starts_with("opal_") && expiring.contains(&expiring_id));

    t.ok(&expiring, "GET", "/v1/topics", None).await;
    t.ok(&revoked, "GET", "/v1/topics", None).await;
    let listed = t.admin("GET", "/v1/apps/acme/keys", None).await.json();
    assert!(
        !listed.to_string().contains(&expiring) && !listed.to_string().contains(&revoked),
        "a listing shows a secret: {listed}"
    );
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none())
    );

    let response = t
        .admin("DELETE", &format!("/v1/apps/acme/keys/{revoked_id}"), None)
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    let refused = t.call(&revoked, "GET", "/v1/topics", None).await;
    assert!(
        refused.problem(401, "unauthorized")["detail"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    t.clock.advance(Duration::from_secs(61));
    let refused = t.call(&expiring, "GET", "/v1/topics", None).await;
    assert!(
        refused.problem(401, "unauthorized")["detail"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let statuses: std::collections::BTreeMap<String, String> =
        t.admin("GET", "/v1/apps/acme/keys", None).await.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["id"].as_str().unwrap().into(),
                    k["status"].as_str().unwrap().into(),
                )
            })
            .collect();
    let expected = std::collections::BTreeMap::from([
        (expiring_id, "expired".to_owned()),
        (revoked_id, "revoked".to_owned()),
    ]);
    assert_eq!(statuses, expected);
    // A near miss of a real key is just a wrong key.
    let mut wrong = expiring.clone();
    wrong.pop();
    wrong.push(if expiring.ends_with('A') { 'B' } else { 'A' });
    let refused = t.call(&wrong, "GET", "/v1/topics", None).await;
    assert_eq!(
        refused.problem(401, "unauthorized")["detail"],
        "the API key is not valid"
    );
}

#[tokio::test]
async fn rotation_gives_a_new_key_and_keeps_the_old_until_the_time_given() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    let (old_id, old) = t.key("acme", &["read", "publish:orders.*"], None).await;
    let rotated = t
        .admin(
            "POST",
            &format!("/v1/apps/acme/keys/{old_id}/rotate"),
            Some(json!({"old_key_expires_at": "2026-11-27T13:00:00Z"})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{rotated:?}");
    let rotated = rotated.json();
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(rotated["rotated_from"], old_id.as_str());
    assert_eq!(rotated["scopes"], json!(["read", "publish:orders.*"]));
    t.ok(&old, "GET", "/v1/topics", None).await;
    t.ok(&new, "GET", "/v1/topics", None).await;
    t.clock.advance(Duration::from_secs(3601));
    t.call(&old, "GET", "/v1/topics", None)
        .await
        .problem(401, "unauthorized");
    t.ok(&new, "GET", "/v1/topics", None).await;
    // An expired key cannot be rotated again.
    t.admin("POST", &format!("/v1/apps/acme/keys/{old_id}/rotate"), None)
        .await
        .problem(409, "conflict");
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    let (_, manage) = t.key("acme", &["manage"], None).await;
    let (_, publisher) = t.key("acme", &["publish:orders.*"], None).await;
    let (_, consumer) = t.key("acme", &["consume:billing"], None).await;
    t.ok(&manage, "PUT", "/v1/topics/orders.eu", Some(json!({})))
        .await;
    t.ok(&manage, "PUT", "/v1/topics/audit", Some(json!({})))
        .await;
    t.ok(
        &manage,
        "PUT",
        "/v1/subscriptions/billing",
        Some(json!({"topic": "orders.eu"})),
    )
    .await;
    let one = Some(json!({"messages": [{"data": 1}]}));
    t.ok(
        &publisher,
        "POST",
        "/v1/topics/orders.eu/messages",
        one.clone(),
    )
    .await;
    t.call(&publisher, "POST", "/v1/topics/audit/messages", one.clone())
        .await
        .problem(403, "forbidden");
    t.call(&publisher, "GET", "/v1/topics/orders.eu", None)
        .await
        .problem(403, "forbidden");
    t.call(&manage, "POST", "/v1/topics/orders.eu/messages", one)
        .await
        .problem(403, "forbidden");
    let pulled = t
        .ok(
            &consumer,
            "POST",
            "/v1/subscriptions/billing/pull",
            Some(json!({"max_messages": 5})),
        )
        .await;
    assert_eq!(pulled["deliveries"].as_array().unwrap().len(), 1);
    t.call(&consumer, "DELETE", "/v1/subscriptions/billing", None)
        .await
        .problem(403, "forbidden");
    t.call(&manage, "POST", "/v1/apps", Some(json!({"name": "x"})))
        .await
        .problem(403, "forbidden");
    // A key reads its own app (with `read` or `manage`), never another's.
    let own = t.ok(&manage, "GET", "/v1/apps/acme", None).await;
    assert_eq!(own["usage"]["topics"], 2);
    t.call(&manage, "GET", "/v1/apps/default", None)
        .await
        .problem(403, "forbidden");
    t.call(&publisher, "GET", "/v1/apps/acme", None)
        .await
        .problem(403, "forbidden");
}

#[tokio::test]
async fn a_grant_lets_another_app_subscribe_and_revoking_it_stops_delivery() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    t.create_app("isv", json!({})).await;
    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;
    let (_, isv) = t.key("isv", &ALL_SCOPES, None).await;
    t.ok(&acme, "PUT", "/v1/topics/events", Some(json!({})))
        .await;
    let subscribe = Some(json!({"topic": "acme/events", "ack_deadline_ms": 60_000}));
    t.call(&isv, "PUT", "/v1/subscriptions/feed", subscribe.clone())
        .await
        .problem(404, "not-found");

    let grant = t
        .call(
            &acme,
            "POST",
            "/v1/topics/events/grants",
            Some(json!({"app": "isv", "rights": ["subscribe"]})),
        )
        .await;
    assert_eq!(grant.status, StatusCode::CREATED, "{grant:?}");
    assert_eq!(grant.json()["topic"], "acme/events");
    let listed = t.ok(&acme, "GET", "/v1/topics/events/grants", None).await;
    assert_eq!(listed["grants"][0]["app"], "isv");
    let sub = t.ok(&isv, "PUT", "/v1/subscriptions/feed", subscribe).await;
    assert_eq!(sub["topic"], "acme/events");
    // The grant lets isv read through its subscription, not publish or browse.
    t.call(
        &isv,
        "POST",
        "/v1/topics/acme%2Fevents/messages",
        Some(json!({"messages": [{"data": 1}]})),
    )
    .await
    .problem(403, "forbidden");

    let publish = |n: u64| json!({"messages": [{"data": {"n": n}}]});
    t.ok(
        &acme,
        "POST",
        "/v1/topics/events/messages",
        Some(publish(1)),
    )
    .await;
    let pull = Some(json!({"max_messages": 10}));
    let got = t
        .ok(&isv, "POST", "/v1/subscriptions/feed/pull", pull.clone())
        .await;
    assert_eq!(got["deliveries"][0]["message"]["topic"], "acme/events");
    assert_eq!(got["deliveries"][0]["message"]["data"]["n"], 1);

    let revoked = t
        .call(&acme, "DELETE", "/v1/topics/events/grants/isv", None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    t.ok(
        &acme,
        "POST",
        "/v1/topics/events/messages",
        Some(publish(2)),
    )
    .await;
    t.call(&isv, "POST", "/v1/subscriptions/feed/pull", pull.clone())
        .await
        .problem(403, "forbidden");
    let stream = Request::get("/v1/subscriptions/feed/events")
        .header(AUTHORIZATION, format!("Bearer {isv}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(t.app.head_of(stream).await.0, StatusCode::FORBIDDEN);
    // The subscription itself stays; granted again, it delivers what came meanwhile.
    t.ok(&isv, "GET", "/v1/subscriptions/feed", None).await;
    t.ok(
        &acme,
        "POST",
        "/v1/topics/events/grants",
        Some(json!({"app": "isv", "rights": ["subscribe"]})),
    )
    .await;
    let got = t
        .ok(&isv, "POST", "/v1/subscriptions/feed/pull", pull)
        .await;
    assert_eq!(got["deliveries"][0]["message"]["data"]["n"], 2);

    // Bad grants change nothing.
    for (body, pointer) in [
        (json!({"app": "isv", "rights": ["publish"]}), "/rights/0"),
        (json!({"app": "isv", "rights": []}), "/rights"),
        (json!({"app": "acme", "rights": ["subscribe"]}), "/app"),
    ] {
        let refused = t
            .call(&acme, "POST", "/v1/topics/events/grants", Some(body))
            .await;
        assert_eq!(
            refused.problem(400, "invalid-request")["errors"][0]["pointer"],
            pointer
        );
    }
    t.call(
        &acme,
        "POST",
        "/v1/topics/events/grants",
        Some(json!({"app": "nobody", "rights": ["subscribe"]})),
    )
    .await
    .problem(404, "not-found");
}

#[tokio::test]
async fn publish_rates_answer_429_with_retry_after_on_the_server_clock() {
    let t = Tenants::new();
    t.create_app(
        "acme",
        json!({"publish_messages_per_s": 10, "publish_bytes_per_s": 1000}),
    )
    .await;
    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;
    t.ok(&acme, "PUT", "/v1/topics/t", Some(json!({}))).await;
    let batch = |n: usize| json!({"messages": vec![json!({"data": 1}); n]});
    t.ok(&acme, "POST", "/v1/topics/t/messages", Some(batch(10)))
        .await;
    let refused = t
        .call(&acme, "POST", "/v1/topics/t/messages", Some(batch(1)))
        .await;
    refused.problem(429, "rate-limited");
    assert_eq!(refused.headers["retry-after"], "1");
    t.clock.advance(Duration::from_millis(100));
    t.ok(&acme, "POST", "/v1/topics/t/messages", Some(batch(1)))
        .await;
    // A batch larger than a second's worth can never pass: said so, not "retry".
    t.clock.advance(Duration::from_secs(5));
    let too_big = t
        .call(&acme, "POST", "/v1/topics/t/messages", Some(batch(11)))
        .await;
    assert!(
        too_big.problem(429, "rate-limited")["detail"]
            .as_str()
            .unwrap()
            .contains("smaller")
    );
    // Bytes: 1000 per second; 600 now, 600 more is over.
    let big = |bytes: usize| json!({"messages": [{"data_base64": base64_of(bytes)}]});
    t.ok(&acme, "POST", "/v1/topics/t/messages", Some(big(600)))
        .await;
    t.call(&acme, "POST", "/v1/topics/t/messages", Some(big(600)))
        .await
        .problem(429, "rate-limited");
    let stats = t.ok(&acme, "GET", "/v1/topics/t", None).await;
    assert_eq!(
        stats["stats"]["published_messages"], 12,
        "refused ones are not stored"
    );
    // Other apps are not limited by acme's quota.
    t.admin("PUT", "/v1/topics/t", Some(json!({}))).await;
    let response = t
        .admin("POST", "/v1/topics/t/messages", Some(batch(50)))
        .await;
    assert_eq!(response.status, StatusCode::OK);
}

fn base64_of(bytes: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![7u8; bytes])
}

#[tokio::test]
async fn storage_topic_subscription_and_stream_quotas() {
    let t = Tenants::new();
    t.create_app(
        "acme",
        json!({"topics": 1, "subscriptions": 1, "stored_bytes": 1000, "open_streams": 1}),
    )
    .await;
    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;
    t.ok(&acme, "PUT", "/v1/topics/t", Some(json!({}))).await;
    // Creating the same topic again is no new topic.
    t.ok(&acme, "PUT", "/v1/topics/t", Some(json!({}))).await;
    t.call(&acme, "PUT", "/v1/topics/u", Some(json!({})))
        .await
        .problem(429, "quota-exceeded");
    t.ok(
        &acme,
        "PUT",
        "/v1/subscriptions/s",
        Some(json!({"topic": "t"})),
    )
    .await;
    t.call(
        &acme,
        "PUT",
        "/v1/subscriptions/s2",
        Some(json!({"topic": "t"})),
    )
    .await
    .problem(429, "quota-exceeded");

    let big = json!({"messages": [{"data_base64": base64_of(900)}]});
    t.ok(&acme, "POST", "/v1/topics/t/messages", Some(big.clone()))
        .await;
    // The stored figure may be a second old: after that, the log's bytes count.
    t.clock.advance(Duration::from_secs(2));
    t.call(&acme, "POST", "/v1/topics/t/messages", Some(big))
        .await
        .problem(429, "quota-exceeded");
    let usage = t.ok(&acme, "GET", "/v1/apps/acme", None).await["usage"].clone();
    assert_eq!(
        (&usage["topics"], &usage["subscriptions"]),
        (&json!(1), &json!(1))
    );
    assert!(usage["stored_bytes"].as_u64().unwrap() >= 900, "{usage}");
}

#[tokio::test]
async fn an_app_over_its_open_streams_gets_429() {
    let t = Tenants::new();
    t.create_app("acme", json!({"open_streams": 1})).await;
    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;
    t.ok(&acme, "PUT", "/v1/topics/t", Some(json!({}))).await;
    t.ok(
        &acme,
        "PUT",
        "/v1/subscriptions/s",
        Some(json!({"topic": "t"})),
    )
    .await;
    let stream = || {
        Request::get("/v1/subscriptions/s/events")
            .header(AUTHORIZATION, format!("Bearer {acme}"))
            .body(Body::empty())
            .unwrap()
    };
    let held = tower::ServiceExt::oneshot(t.app.router(), stream())
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let (status, headers) = t.app.head_of(stream()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        t.ok(&acme, "GET", "/v1/apps/acme", None).await["usage"]["open_streams"],
        1
    );
    // Closing the stream frees its place (the pump notices within a pull's wait at most).
    drop(held);
    let mut freed = false;
    for _ in 0..400 {
        if t.app.head_of(stream()).await.0 == StatusCode::OK {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(freed, "the closed stream was still counted after 10 s");
}

#[tokio::test]
async fn apps_are_created_changed_and_deleted_by_admins() {
    let t = Tenants::new();
    t.create_app("acme", json!({"topics": 5})).await;
    t.admin("POST", "/v1/apps", Some(json!({"name": "acme"})))
        .await
        .problem(409, "conflict");
    t.admin("POST", "/v1/apps", Some(json!({"name": "a/b"})))
        .await
        .problem(400, "invalid-request");
    t.admin(
        "POST",
        "/v1/apps",
        Some(json!({"name": "x", "quotas": {"topics": 1, "bogus": 2}})),
    )
    .await
    .problem(400, "invalid-request");
    let changed = t
        .admin(
            "PATCH",
            "/v1/apps/acme",
            Some(json!({"quotas": {"publish_messages_per_s": 100}})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    let changed = changed.json();
    assert_eq!(changed["quotas"]["publish_messages_per_s"], 100);
    assert_eq!(
        changed["quotas"]["topics"],
        Value::Null,
        "quotas are replaced"
    );
    assert_eq!(changed["revision"], 2);
    let names: Vec<Value> = t.admin("GET", "/v1/apps", None).await.json()["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("acme"), json!("default")]);

    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;
    t.ok(&acme, "PUT", "/v1/topics/t", Some(json!({}))).await;
    t.admin("DELETE", "/v1/apps/acme", None)
        .await
        .problem(409, "conflict");
    t.ok(&acme, "DELETE", "/v1/topics/t", None).await;
    let deleted = t.admin("DELETE", "/v1/apps/acme", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    t.call(&acme, "GET", "/v1/topics", None)
        .await
        .problem(401, "unauthorized");
    t.admin("DELETE", "/v1/apps/default", None)
        .await
        .problem(409, "conflict");
}

#[tokio::test]
async fn the_audit_trail_records_who_changed_what() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    let (key_id, acme) = t.key("acme", &ALL_SCOPES, None).await;
    let request = Request::builder()
        .method("PUT")
        .uri("/v1/topics/orders")
        .header(AUTHORIZATION, format!("Bearer {acme}"))
        .header("x-request-id", "audit-me")
        .body(Body::empty())
        .unwrap();
    assert_eq!(t.app.send(request).await.status, StatusCode::CREATED);
    t.ok(&acme, "DELETE", "/v1/topics/orders", None).await;
    // Refused and read-only requests leave no entry.
    t.call(&acme, "POST", "/v1/apps", Some(json!({"name": "x"})))
        .await;
    t.ok(&acme, "GET", "/v1/topics", None).await;

    let page = t.admin("GET", "/v1/audit", None).await.json();
    let entries: Vec<(String, String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let actor = format!("acme:{key_id}");
    assert_eq!(
        entries,
        vec![
            ("admin".into(), "app.create".into(), "acme".into()),
            (
                "admin".into(),
                "key.create".into(),
                format!("acme:{key_id}")
            ),
            (actor.clone(), "topic.create".into(), "acme/orders".into()),
            (actor, "topic.delete".into(), "acme/orders".into()),
        ]
    );
    assert_eq!(page["entries"][2]["request_id"], "audit-me");
    assert_eq!(page["entries"][2]["at"], "2026-11-27T12:00:00Z");
    assert_eq!(page["next_after"], 4);
    let rest = t
        .admin("GET", "/v1/audit?after=3&limit=10", None)
        .await
        .json();
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    let (_, reader) = t.key("acme", &["read", "manage"], None).await;
    t.call(&reader, "GET", "/v1/audit", None)
        .await
        .problem(403, "forbidden");
}

#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    let clock = clock();
    let (_dir, broker) = open_broker();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = server_config();
    config.clock = clock.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(opal_server::run(
        listener,
        config,
        broker.clone(),
        broker,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let get = |key: &'static str| {
        let client = client.clone();
        async move {
            let response = tokio::time::timeout(
                Duration::from_secs(10),
                client
                    .get(format!("http://{addr}/v1/topics"))
                    .bearer_auth(key)
                    .send(),
            )
            .await
            .expect("in time")
            .expect("answered");
            (
                response.status(),
                response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        }
    };
    for _ in 0..5 {
        assert_eq!(get("wrong-key").await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, retry) = get("wrong-key").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry.as_deref(), Some("1"));
    // The right key from that address waits too: guessing gains nothing by mixing in good keys.
    assert_eq!(get(KEY).await.0, StatusCode::TOO_MANY_REQUESTS);
    clock.advance(Duration::from_millis(1200));
    assert_eq!(get(KEY).await.0, StatusCode::OK);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

#[tokio::test]
async fn an_admin_subscription_on_an_apps_topic_needs_no_grant() {
    let t = Tenants::new();
    t.create_app("acme", json!({})).await;
    let (_, acme) = t.key("acme", &ALL_SCOPES, None).await;
    t.ok(&acme, "PUT", "/v1/topics/events", Some(json!({})))
        .await;
    let sub = t
        .admin(
            "PUT",
            "/v1/subscriptions/audit-copy",
            Some(json!({"topic": "acme/events"})),
        )
        .await;
    assert_eq!(sub.status, StatusCode::CREATED, "{sub:?}");
    assert_eq!(sub.json()["topic"], "acme/events");
    t.ok(
        &acme,
        "POST",
        "/v1/topics/events/messages",
        Some(json!({"messages": [{"data": 5}]})),
    )
    .await;
    let pulled = t
        .admin(
            "POST",
            "/v1/subscriptions/audit-copy/pull",
            Some(json!({"max_messages": 5})),
        )
        .await;
    assert_eq!(pulled.status, StatusCode::OK, "{pulled:?}");
    assert_eq!(pulled.json()["deliveries"][0]["message"]["data"], 5);
}
