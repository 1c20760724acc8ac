//! Push subscriptions over HTTP: the `push` member of create, update and view, the signing
//! secret, the attempt log, and resend and recover (queued only: attempts are logged through
//! the broker). No dispatcher runs here (the binary starts it), so no URL is
//! ever called; hosts are names that are not resolved, or loopback literals.

use jiff::Timestamp;
use opal_core::{AttemptStatus, PushAttempt};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::TestApp;

const URL: &str = "https://hooks.example.com/in";

async fn push_app() -> TestApp {
    let app = TestApp::new();
    app.create_topic("orders").await;
    app
}

#[tokio::test]
async fn a_push_subscription_gets_defaults_and_a_generated_secret() {
    let app = push_app().await;
    let created = app
        .json(
            "PUT",
            "/v1/subscriptions/hook",
            json!({"topic": "orders", "push": {"url": URL}}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.text());
    let body = created.json();
    assert_eq!(
        body["push"],
        json!({
            "url": URL,
            "timeout_ms": 15_000,
            "max_in_flight": 16,
            "rate_limit_per_s": null,
            "format": "cloudevents",
            "headers": {},
            "retry_schedule_ms": [0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000],
            "validate": false,
            "enabled": true,
            "disabled_at": null,
            "disabled_reason": null,
            "url_attribute": null,
        })
    );
    assert_eq!(
        body["max_deliveries"], 8,
        "one delivery per scheduled attempt"
    );
    assert_eq!(body["ack_deadline_ms"], 30_000, "the timeout plus 15 s");
    assert!(
        !body.to_string().contains("whsec_"),
        "views never show secrets"
    );

    let secret = app.read("/v1/subscriptions/hook/secret").await;
    let current = secret["secret"].as_str().unwrap();
    assert!(current.starts_with("whsec_"), "{secret}");
    assert_eq!(secret["previous"], json!([]));
    let pull = app.read("/v1/subscriptions/hook").await;
    assert_eq!(pull["push"]["url"], URL);
}

#[tokio::test]
async fn every_push_setting_is_stored_and_shown() {
    let app = push_app().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let push = json!({
        "url": URL,
        "secret": secret,
        "timeout_ms": 2_000,
        "max_in_flight": 4,
        "rate_limit_per_s": 50,
        "format": "raw",
        "headers": {"x-team": "payments"},
        "retry_schedule_ms": [0, 1_000, 60_000],
        "validate": true,
    });
    let body = app
        .create_subscription("hook", json!({"topic": "orders", "push": push}))
        .await;
    let mut shown = push.clone();
    shown.as_object_mut().unwrap().remove("secret");
    shown["enabled"] = json!(true);
    shown["disabled_at"] = json!(null);
    shown["disabled_reason"] = json!(null);
    shown["url_attribute"] = json!(null);
    assert_eq!(body["push"], shown);
    assert_eq!(body["max_deliveries"], 3);
    assert_eq!(body["ack_deadline_ms"], 17_000);
    let read = app.read("/v1/subscriptions/hook/secret").await;
    assert_eq!(read["secret"], secret);
}

#[tokio::test]
async fn bad_push_settings_are_refused_with_their_field() {
    let app = push_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"url": "ftp://hooks.example.com/in"}), "/push/url"),
        (json!({"url": "not a url"}), "/push/url"),
        (
            json!({"url": "https://user:pw@hooks.example.com/in"}),
            "/push/url",
        ),
        (json!({"url": "http://127.0.0.1:9/in"}), "/push/url"),
        (json!({"url": "http://[::1]:9/in"}), "/push/url"),
        (json!({"url": "http://169.254.169.254/latest"}), "/push/url"),
        (json!({"url": "http://10.0.0.1/in"}), "/push/url"),
        (json!({"url": URL, "secret": "nope"}), "/push/secret"),
        (
            json!({"url": URL, "secret": "whsec_c2hvcnQ="}),
            "/push/secret",
        ),
        (json!({"url": URL, "timeout_ms": 50}), "/push/timeout_ms"),
        (
            json!({"url": URL, "timeout_ms": 60_001}),
            "/push/timeout_ms",
        ),
        (
            json!({"url": URL, "max_in_flight": 0}),
            "/push/max_in_flight",
        ),
        (
            json!({"url": URL, "rate_limit_per_s": 0}),
            "/push/rate_limit_per_s",
        ),
        (
            json!({"url": URL, "retry_schedule_ms": []}),
            "/push/retry_schedule_ms",
        ),
        (
            json!({"url": URL, "retry_schedule_ms": [0, 604_800_001]}),
            "/push/retry_schedule_ms",
        ),
        (
            json!({"url": URL, "headers": {"webhook-id": "x"}}),
            "/push/headers/webhook-id",
        ),
        (
            json!({"url": URL, "headers": {"Content-Type": "x"}}),
            "/push/headers/Content-Type",
        ),
        (
            json!({"url": URL, "headers": {"x-a": "line\nbreak"}}),
            "/push/headers/x-a",
        ),
        (json!({"url": URL, "format": "xml"}), "/push/format"),
        (json!({"url": URL, "colour": "red"}), "/push"),
    ];
    for (push, pointer) in cases {
        let response = app
            .json(
                "PUT",
                "/v1/subscriptions/hook",
                json!({"topic": "orders", "push": push}),
            )
            .await;
        let problem = response.problem(400, "invalid-request");
        let got = problem["errors"][0]["pointer"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(pointer),
            "{push}: pointer {got}, expected {pointer}: {problem}"
        );
    }
    // A deadline no longer than the timeout would hand a delivery out again mid-attempt.
    let response = app
        .json(
            "PUT",
            "/v1/subscriptions/hook",
            json!({"topic": "orders", "ack_deadline_ms": 15_000, "push": {"url": URL}}),
        )
        .await;
    response.problem(400, "invalid-request");
    let list = app.read("/v1/subscriptions").await;
    assert_eq!(list["subscriptions"], json!([]), "nothing was created");
}

#[tokio::test]
async fn an_allow_list_admits_a_loopback_endpoint() {
    let app = TestApp::with_config(|c| {
        c.push_policy = opal_dispatch::AddressPolicy::parse_allow_list("127.0.0.0/8").unwrap();
    });
    app.create_topic("orders").await;
    let created = app
        .json(
            "PUT",
            "/v1/subscriptions/hook",
            json!({"topic": "orders", "push": {"url": "http://127.0.0.1:9/in"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
}

#[tokio::test]
async fn patch_changes_disables_enables_and_removes_push() {
    let app = push_app().await;
    app.create_subscription("s", json!({"topic": "orders"}))
        .await;
    // A pull subscription needs a URL to become a push subscription.
    let response = app
        .json(
            "PATCH",
            "/v1/subscriptions/s",
            json!({"push": {"timeout_ms": 1000}}),
        )
        .await;
    assert_eq!(
        response.problem(400, "invalid-request")["errors"][0]["pointer"],
        "/push/url"
    );
    let patched = app
        .json(
            "PATCH",
            "/v1/subscriptions/s",
            json!({"push": {"url": URL}}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["push"]["url"], URL);
    let secret = app.read("/v1/subscriptions/s/secret").await["secret"].clone();

    let patched = app
        .json(
            "PATCH",
            "/v1/subscriptions/s",
            json!({"push": {"enabled": false, "rate_limit_per_s": 5}}),
        )
        .await
        .json();
    assert_eq!(patched["push"]["enabled"], false);
    assert_eq!(patched["push"]["disabled_reason"], "disabled by its owner");
    assert_eq!(patched["push"]["rate_limit_per_s"], 5);
    assert_eq!(
        patched["push"]["url"], URL,
        "members left out keep their values"
    );
    let patched = app
        .json(
            "PATCH",
            "/v1/subscriptions/s",
            json!({"push": {"enabled": true, "rate_limit_per_s": null}}),
        )
        .await
        .json();
    assert_eq!(patched["push"]["enabled"], true);
    assert_eq!(patched["push"]["disabled_at"], json!(null));
    assert_eq!(patched["push"]["rate_limit_per_s"], json!(null));
    assert_eq!(
        app.read("/v1/subscriptions/s/secret").await["secret"],
        secret,
        "changing settings keeps the secret"
    );

    let patched = app
        .json("PATCH", "/v1/subscriptions/s", json!({"push": null}))
        .await
        .json();
    assert_eq!(patched["push"], json!(null));
    let response = app.get("/v1/subscriptions/s/secret").await;
    response.problem(409, "conflict");
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_signing_for_the_overlap() {
    let app = push_app().await;
    app.create_subscription("hook", json!({"topic": "orders", "push": {"url": URL}}))
        .await;
    let before = app.read("/v1/subscriptions/hook/secret").await;
    let old = before["secret"].as_str().unwrap().to_owned();
    let rotated = app
        .json(
            "POST",
            "/v1/subscriptions/hook/secret/rotate",
            json!({"overlap_ms": 3_600_000}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.headers["etag"], "\"2\"");
    let rotated = rotated.json();
    assert_ne!(rotated["secret"], old);
    assert_eq!(rotated["previous"][0]["secret"], old);
    assert!(rotated["previous"][0]["expires_at"].is_string());

    let chosen = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let again = app
        .json(
            "POST",
            "/v1/subscriptions/hook/secret/rotate",
            json!({"secret": chosen, "overlap_ms": 0}),
        )
        .await
        .json();
    assert_eq!(again["secret"], chosen);
    assert_eq!(
        again["previous"],
        json!([]),
        "no overlap: the previous secrets stop at once"
    );
    let bad = app
        .json(
            "POST",
            "/v1/subscriptions/hook/secret/rotate",
            json!({"secret": "whsec_!!"}),
        )
        .await;
    bad.problem(400, "invalid-request");
    let audit = app.read("/v1/audit").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "subscription.secret.rotate"),
        "{audit}"
    );
}

#[tokio::test]
async fn the_attempt_log_is_empty_then_paged_and_filtered() {
    let app = push_app().await;
    app.create_subscription("hook", json!({"topic": "orders", "push": {"url": URL}}))
        .await;
    let page = app.read("/v1/subscriptions/hook/attempts").await;
    assert_eq!(page, json!({"attempts": [], "next_cursor": null}));
    for query in [
        "status=maybe",
        "limit=0",
        "limit=1001",
        "message_id=nope",
        "since=yesterday",
        "colour=red",
    ] {
        let response = app
            .get(&format!("/v1/subscriptions/hook/attempts?{query}"))
            .await;
        response.problem(400, "invalid-request");
    }
    let missing = app.get("/v1/subscriptions/nope/attempts").await;
    assert_eq!(missing.status, 404);
}

/// The stored name of the admin's subscription `short`.
fn stored(short: &str) -> opal_core::SubscriptionName {
    opal_core::SubscriptionName::qualified(&opal_core::AppName::default_app(), short).unwrap()
}

/// An attempt of `message` (at `offset` of partition 0), logged now.
fn logged(message: Uuid, offset: u64, ok: bool) -> PushAttempt {
    PushAttempt {
        id: Uuid::now_v7(),
        message_id: message,
        partition: 0,
        offset,
        attempt: 1,
        at: Timestamp::now(),
        url: URL.into(),
        status: if ok {
            AttemptStatus::Succeeded
        } else {
            AttemptStatus::Failed
        },
        status_code: Some(if ok { 200 } else { 500 }),
        latency_ms: 3,
        response: String::new(),
        error: None,
    }
}

/// Logs attempts one by one, a few milliseconds apart, so their ids and times keep that order.
async fn log(app: &TestApp, attempts: Vec<PushAttempt>) {
    for a in attempts {
        let a = PushAttempt {
            id: Uuid::now_v7(),
            at: Timestamp::now(),
            ..a
        };
        app.broker
            .record_push_attempts(&stored("hook"), vec![a])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
}

async fn queued_offsets(app: &TestApp) -> Vec<u64> {
    let due = app.broker.due_resends(&stored("hook"), 100).await.unwrap();
    let mut offsets: Vec<u64> = due.iter().map(|r| r.offset).collect();
    offsets.sort_unstable();
    offsets
}

#[tokio::test]
async fn resend_requests_are_validated() {
    let app = push_app().await;
    app.create_subscription("hook", json!({"topic": "orders", "push": {"url": URL}}))
        .await;
    app.create_subscription("pulled", json!({"topic": "orders"}))
        .await;
    let id = Uuid::now_v7().to_string();
    let t = "2026-11-27T13:00:00Z";
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), ""),
        (json!({"message_id": id, "since": t}), ""),
        (json!({"until": t}), ""),
        (json!({"message_id": "nope"}), "/message_id"),
        (json!({"since": "yesterday"}), "/since"),
        (json!({"message_id": id, "until": t}), "/until"),
        (
            json!({"since": t, "until": "2026-11-27T12:00:00Z"}),
            "/until",
        ),
        (json!({"since": t, "colour": "red"}), ""),
    ];
    for (body, pointer) in cases {
        let response = app
            .json("POST", "/v1/subscriptions/hook/resend", body.clone())
            .await;
        let problem = response.problem(400, "invalid-request");
        let got = problem["errors"][0]["pointer"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(pointer),
            "{body}: pointer {got}, expected {pointer}: {problem}"
        );
    }
    let unknown = app
        .json(
            "POST",
            "/v1/subscriptions/hook/resend",
            json!({"message_id": id}),
        )
        .await;
    let problem = unknown.problem(404, "not-found");
    assert!(
        problem["detail"].as_str().unwrap().contains("attempt log"),
        "{problem}"
    );
    let missing = app
        .json("POST", "/v1/subscriptions/nope/resend", json!({"since": t}))
        .await;
    missing.problem(404, "not-found");
    let pull = app
        .json(
            "POST",
            "/v1/subscriptions/pulled/resend",
            json!({"since": t}),
        )
        .await;
    pull.problem(409, "conflict");
    assert!(queued_offsets(&app).await.is_empty(), "nothing was queued");
}

#[tokio::test]
async fn resend_and_recover_queue_what_the_attempt_log_names() {
    let app = push_app().await;
    app.create_subscription("hook", json!({"topic": "orders", "push": {"url": URL}}))
        .await;
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    // The log keeps milliseconds: each boundary is a few of them away from any attempt.
    let since = Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    log(&app, vec![logged(c, 2, false)]).await;
    let cut = Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    log(
        &app,
        vec![
            logged(a, 0, false),
            logged(b, 1, false),
            logged(a, 0, true),
            logged(b, 1, false),
        ],
    )
    .await;
    let resend = async |body: Value| {
        let response = app
            .json("POST", "/v1/subscriptions/hook/resend", body)
            .await;
        assert_eq!(response.status, 202, "{}", response.text());
        response.json()
    };

    // b and c failed last; a succeeded after failing.
    let all = resend(json!({"since": since.to_string()})).await;
    assert_eq!(all, json!({"queued": 2}));
    assert_eq!(queued_offsets(&app).await, vec![1, 2]);
    let before_cut = resend(json!({"since": since.to_string(), "until": cut.to_string()})).await;
    assert_eq!(
        before_cut,
        json!({"queued": 1}),
        "only c failed before the cut"
    );
    let after_cut = resend(json!({"since": cut.to_string()})).await;
    assert_eq!(
        after_cut,
        json!({"queued": 1}),
        "only b failed after the cut"
    );
    assert_eq!(queued_offsets(&app).await, vec![1, 2], "each waits once");

    // A delivered message can be resent too.
    let one = resend(json!({"message_id": a})).await;
    assert_eq!(one, json!({"queued": 1}));
    assert_eq!(queued_offsets(&app).await, vec![0, 1, 2]);
    let nothing = resend(json!({"since": Timestamp::now().to_string()})).await;
    assert_eq!(nothing, json!({"queued": 0}));

    let audit = app.read("/v1/audit").await;
    let resends = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "subscription.resend")
        .count();
    assert_eq!(resends, 5, "{audit}");
}
