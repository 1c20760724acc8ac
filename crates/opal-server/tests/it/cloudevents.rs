//! CloudEvents on publish (structured, batched and binary mode) and on pull (`"format":
//! "cloudevents"`), W3C trace context, and the CloudEvents id as the dedup id.

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::support::{TestApp, TestResponse, authed};

const PUBLISH: &str = "/v1/topics/t/messages";
const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Topic `t` with two subscriptions: `ce` (pulled as CloudEvents) and `opal` (pulled as is).
async fn app() -> TestApp {
    app_with(|_| {}).await
}

async fn app_with(adjust: impl FnOnce(&mut opal_server::ServerConfig)) -> TestApp {
    let app = TestApp::with_config(adjust);
    app.create_topic("t").await;
    for name in ["ce", "opal"] {
        app.create_subscription(name, json!({"topic": "t"})).await;
    }
    app
}

/// `POST`s a body to the publish route with these headers.
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

/// Pulls from `ce` in the CloudEvents format; returns the raw response too (for byte checks).
async fn pull_events(app: &TestApp, expected: usize) -> (Vec<Value>, String) {
    let body = json!({"max_messages": 100, "wait_ms": 2000, "format": "cloudevents"});
    let response = app.json("POST", "/v1/subscriptions/ce/pull", body).await;
    assert_eq!(response.status, 200, "{response:?}");
    let deliveries = response.json()["deliveries"].as_array().unwrap().clone();
    assert_eq!(deliveries.len(), expected, "{deliveries:#?}");
    for delivery in &deliveries {
        assert_eq!(delivery["attempt"], 1, "{delivery}");
        assert!(delivery["ack_id"].as_str().is_some_and(|a| !a.is_empty()));
        assert!(delivery.get("message").is_none(), "{delivery}");
    }
    let events = deliveries.iter().map(|d| d["event"].clone()).collect();
    (events, response.text())
}

/// Pulls the messages from `opal`, in the default format.
async fn pull_messages(app: &TestApp, expected: usize) -> Vec<Value> {
    let deliveries = app.pull("opal", 100, 2000).await;
    assert_eq!(deliveries.len(), expected, "{deliveries:#?}");
    deliveries.iter().map(|d| d["message"].clone()).collect()
}

async fn assert_nothing_stored(app: &TestApp) {
    let deliveries = app.pull("opal", 10, 300).await;
    assert!(
        deliveries.is_empty(),
        "a rejected request stored {deliveries:?}"
    );
}

fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| {
            e.get("pointer")
                .or_else(|| e.get("header"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("error without pointer or header: {e}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_structured_event_comes_back_as_the_same_event() {
    let app = app().await;
    // Odd spacing and number forms in `data` must survive byte for byte.
    let data = r#"{"order" : 42, "total": 1.50e1}"#;
    let body = format!(
        r#"{{"specversion":"1.0","id":"evt-1","source":"/shop/orders","type":"com.example.order.created",
            "time":"2025-11-27T14:32:05.123456+01:00","subject":"order/42",
            "dataschema":"https://example.com/schemas/order","datacontenttype":"application/json",
            "region":"eu","count":7,"ratio":0.25,"urgent":true,"partitionkey":"customer-7",
            "data":{data}}}"#
    );
    let answer = post_ok(&app, &[("content-type", STRUCTURED)], body.clone()).await;
    let result = &answer["results"][0];
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(result["offset"], 0, "{answer}");
    assert_eq!(result["duplicate"], false, "{answer}");

    let (events, text) = pull_events(&app, 1).await;
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        events[0], sent,
        "the delivered event differs from the published one"
    );
    assert!(text.contains(&format!(r#""data":{data}"#)), "{text}");
    assert!(text.contains(r#""ratio":0.25"#), "{text}");

    // In Opal's own format the attributes say where each part went.
    let message = &pull_messages(&app, 1).await[0];
    assert_eq!(message["id"], result["id"]);
    assert_eq!(message["key"], "customer-7");
    let attributes = &message["attributes"];
    assert_eq!(attributes["ce-id"], "evt-1");
    assert_eq!(attributes["ce-type"], "com.example.order.created");
    assert_eq!(attributes["ce-time"], "2025-11-27T14:32:05.123456+01:00");
    assert_eq!(attributes["ce-count"], "7");
    assert_eq!(attributes["ce.type.count"], "number");
    assert_eq!(attributes["ce.type.urgent"], "boolean");
    assert!(attributes.get("ce-partitionkey").is_none(), "{attributes}");
    assert_eq!(
        message["data"],
        json!({"order": 42, "total": 15.0}),
        "{message}"
    );
}

#[tokio::test]
async fn a_batch_stores_one_message_per_event_in_order() {
    let app = app().await;
    let events = json!([
        {"specversion": "1.0", "id": "a", "source": "/s", "type": "t.json", "data": {"n": 1}},
        {"specversion": "1.0", "id": "b", "source": "/s", "type": "t.bytes",
         "datacontenttype": "image/png", "data_base64": BASE64.encode([0u8, 1, 2, 255])},
        {"specversion": "1.0", "id": "c", "source": "/s", "type": "t.none", "subject": "no data"},
        {"specversion": "1.0", "id": "d", "source": "/s", "type": "t.empty", "data_base64": ""},
        {"specversion": "1.0", "id": "e", "source": "/s", "type": "t.text",
         "datacontenttype": "text/plain", "data": "hello"},
    ]);
    let answer = post_ok(&app, &[("content-type", BATCH)], events.to_string()).await;
    let offsets: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["offset"])
        .collect();
    assert_eq!(
        offsets,
        [0, 1, 2, 3, 4].map(|n| json!(n)).iter().collect::<Vec<_>>()
    );
    let (delivered, _) = pull_events(&app, 5).await;
    assert_eq!(Value::Array(delivered), events);
}

#[tokio::test]
async fn batch_errors_point_at_each_event_and_store_nothing() {
    let app = app().await;
    let events = json!([
        {"specversion": "1.0", "id": "ok", "source": "/s", "type": "t"},
        {"specversion": "1.0", "source": "/s", "type": "t", "Bad_Name": 1},
        {"specversion": "1.0", "id": "x", "source": "/s", "type": "t", "data": 1, "data_base64": "AA=="},
        {"specversion": "1.0", "id": "y", "source": "/s", "type": "t", "time": "27 Nov 2025"},
    ]);
    let response = post(&app, &[("content-type", BATCH)], events.to_string()).await;
    let problem = response.problem(400, "invalid-request");
    let mut found = pointers(&problem);
    found.sort();
    assert_eq!(found, ["/1", "/1/Bad_Name", "/2", "/3/time"], "{problem}");
    assert_nothing_stored(&app).await;

    // Not an array, and an array of non-objects.
    for body in [r#"{"specversion":"1.0"}"#, r#"[1]"#] {
        let response = post(&app, &[("content-type", BATCH)], body).await;
        response.problem(400, "invalid-request");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn structured_validation_errors_have_pointers() {
    let app = app().await;
    let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let with = |member: &str, value: Value| {
        let mut event = base.clone();
        event[member] = value;
        event.to_string()
    };
    let cases = [
        (with("specversion", json!("0.3")), "/specversion"),
        (with("id", json!("")), "/id"),
        (with("source", json!(42)), "/source"),
        (with("time", json!("2025-11-27T13:32:05")), "/time"),
        (with("datacontenttype", json!("json")), "/datacontenttype"),
        (with("subject", json!("")), "/subject"),
        (with("nested", json!({"a": 1})), "/nested"),
        (with("list", json!([1])), "/list"),
        (
            with("abcdefghijklmnopqrstu", json!("21 chars")),
            "/abcdefghijklmnopqrstu",
        ),
        (with("with-dash", json!("x")), "/with-dash"),
        (with("data_base64", json!("not base64!")), "/data_base64"),
        (with("traceparent", json!("00-abc")), "/traceparent"),
        (with("partitionkey", json!(7)), "/partitionkey"),
        (with("type", Value::Null), ""),
        (
            r#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}"#.to_owned(),
            "",
        ),
    ];
    for (body, pointer) in cases {
        let response = post(&app, &[("content-type", STRUCTURED)], body.clone()).await;
        let problem = response.problem(400, "invalid-request");
        assert!(
            pointers(&problem).iter().any(|p| p == pointer),
            "{body}: expected pointer {pointer:?} in {problem}"
        );
    }
    for body in ["[]", "not json", ""] {
        let response = post(&app, &[("content-type", STRUCTURED)], body).await;
        response.problem(400, "invalid-request");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn binary_mode_round_trips_headers_and_body() {
    let app = app().await;
    let json_headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-1"),
        ("ce-source", "/devices/thermo%20one"),
        ("ce-type", "com.example.reading"),
        ("ce-time", "2025-11-27T13:32:05Z"),
        ("ce-subject", "r%C3%A9sum%C3%A9"),
        ("ce-sensor", "t-7"),
        ("ce-partitionkey", "device-9"),
        ("content-type", "application/json; charset=utf-8"),
    ];
    let data = r#"{"celsius": 21.5}"#;
    post_ok(&app, &json_headers, data).await;
    let text_headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-2"),
        ("ce-source", "/devices"),
        ("ce-type", "com.example.log"),
        ("content-type", "text/plain"),
    ];
    post_ok(&app, &text_headers, "line one").await;
    let empty_headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-3"),
        ("ce-source", "/devices"),
        ("ce-type", "com.example.ping"),
    ];
    post_ok(&app, &empty_headers, "").await;

    let (events, text) = pull_events(&app, 3).await;
    assert_eq!(
        events[0],
        json!({"specversion": "1.0", "id": "bin-1", "source": "/devices/thermo one",
               "type": "com.example.reading", "datacontenttype": "application/json; charset=utf-8",
               "subject": "résumé", "time": "2025-11-27T13:32:05Z", "sensor": "t-7",
               "partitionkey": "device-9", "data": {"celsius": 21.5}})
    );
    assert!(text.contains(&format!(r#""data":{data}"#)), "{text}");
    assert_eq!(
        events[1],
        json!({"specversion": "1.0", "id": "bin-2", "source": "/devices", "type": "com.example.log",
               "datacontenttype": "text/plain", "data_base64": BASE64.encode("line one")})
    );
    assert_eq!(
        events[2],
        json!({"specversion": "1.0", "id": "bin-3", "source": "/devices", "type": "com.example.ping"})
    );
    let messages = pull_messages(&app, 3).await;
    assert_eq!(messages[0]["key"], "device-9");
    assert_eq!(messages[1]["data_base64"], BASE64.encode("line one"));
}

#[tokio::test]
async fn binary_mode_errors_name_the_headers() {
    let app = app().await;
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Headers<'_>, &str, &str); 6] = [
        (
            &[
                ("ce-specversion", "1.0"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            "x",
            "ce-id",
        ),
        (
            &[
                ("ce-specversion", "2.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            "x",
            "ce-specversion",
        ),
        (
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("ce-datacontenttype", "text/plain"),
            ],
            "x",
            "ce-datacontenttype",
        ),
        (
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("content-type", "application/json"),
            ],
            "{not json",
            "",
        ),
        (
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("ce-traceparent", "00-00"),
            ],
            "x",
            "ce-traceparent",
        ),
        // `ce-` headers without `ce-specversion` are a binary event missing its version.
        (
            &[("ce-id", "1"), ("content-type", "application/octet-stream")],
            "x",
            "ce-specversion",
        ),
    ];
    for (headers, body, location) in cases {
        let response = post(&app, headers, body).await;
        let problem = response.problem(400, "invalid-request");
        assert!(
            pointers(&problem).iter().any(|p| p == location),
            "{headers:?}: expected {location:?} in {problem}"
        );
    }
    // A repeated header.
    let request = authed("POST", PUBLISH)
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-id", "2")
        .header("ce-source", "/s")
        .header("ce-type", "t")
        .body(Body::from("x"))
        .unwrap();
    let problem = app.send(request).await.problem(400, "invalid-request");
    assert_eq!(pointers(&problem), ["ce-id"], "{problem}");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn modes_cannot_be_mixed_and_other_event_formats_are_415() {
    let app = app().await;
    let event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}).to_string();
    let response = post(
        &app,
        &[("content-type", STRUCTURED), ("ce-id", "1")],
        event.clone(),
    )
    .await;
    let problem = response.problem(400, "invalid-request");
    assert_eq!(pointers(&problem), ["ce-id"]);
    let response = post(
        &app,
        &[("content-type", STRUCTURED), ("opal-key", "k")],
        event.clone(),
    )
    .await;
    response.problem(400, "invalid-request");
    let response = post(
        &app,
        &[("content-type", "application/cloudevents+protobuf")],
        event,
    )
    .await;
    response.problem(415, "unsupported-media-type");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn the_source_and_id_are_the_dedup_id_unless_an_idempotency_key_is_given() {
    let app = app().await;
    let event = |source: &str, id: &str| {
        json!({"specversion": "1.0", "id": id, "source": source, "type": "t", "data": 1})
            .to_string()
    };
    let first = post_ok(&app, &[("content-type", STRUCTURED)], event("/a", "1")).await;
    let again = post_ok(&app, &[("content-type", STRUCTURED)], event("/a", "1")).await;
    assert_eq!(again["results"][0]["duplicate"], true, "{again}");
    assert_eq!(again["results"][0]["id"], first["results"][0]["id"]);
    // The same id from another source is another event.
    let other = post_ok(&app, &[("content-type", STRUCTURED)], event("/b", "1")).await;
    assert_eq!(other["results"][0]["duplicate"], false, "{other}");
    // The same event in binary mode is the same event.
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/a"),
        ("ce-type", "t"),
    ];
    let retried = post_ok(&app, &binary, "x").await;
    assert_eq!(retried["results"][0]["duplicate"], true, "{retried}");
    // Repeats inside one batch: the later one is the duplicate.
    let batch = format!("[{},{}]", event("/c", "9"), event("/c", "9"));
    let answer = post_ok(&app, &[("content-type", BATCH)], batch).await;
    assert_eq!(answer["results"][0]["duplicate"], false, "{answer}");
    assert_eq!(answer["results"][1]["duplicate"], true, "{answer}");
    assert_eq!(answer["results"][1]["id"], answer["results"][0]["id"]);

    // An Idempotency-Key replaces the event's own dedup id.
    let keyed = [("content-type", STRUCTURED), ("idempotency-key", "\"k-1\"")];
    let one = post_ok(&app, &keyed, event("/d", "1")).await;
    let two = post_ok(&app, &keyed, event("/d", "2")).await;
    assert_eq!(one["results"][0]["duplicate"], false, "{one}");
    assert_eq!(two["results"][0]["duplicate"], true, "{two}");
    let batch = format!("[{},{}]", event("/e", "1"), event("/e", "2"));
    let response = post(
        &app,
        &[("content-type", BATCH), ("idempotency-key", "k-2")],
        batch,
    )
    .await;
    let problem = response.problem(400, "invalid-request");
    assert_eq!(pointers(&problem), ["Idempotency-Key"], "{problem}");

    let (events, _) = pull_events(&app, 4).await;
    let ids: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["source"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, [("/a", "1"), ("/b", "1"), ("/c", "9"), ("/d", "1")]);
}

#[tokio::test]
async fn traceparent_headers_are_stored_and_bad_ones_refused() {
    let app = app().await;
    let event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}).to_string();
    let traced = [
        ("content-type", STRUCTURED),
        ("traceparent", TRACEPARENT),
        ("tracestate", "congo=t61rcWkgMzE"),
    ];
    post_ok(&app, &traced, event).await;
    // The event's own trace context wins over the headers.
    let own = "00-11111111111111111111111111111111-2222222222222222-00";
    let event =
        json!({"specversion": "1.0", "id": "2", "source": "/s", "type": "t", "traceparent": own});
    post_ok(&app, &traced, event.to_string()).await;
    // JSON batch: every message without its own traceparent gets the header's.
    let batch = json!({"messages": [
        {"data": 1},
        {"data": 2, "attributes": {"traceparent": own}},
    ]});
    post_ok(
        &app,
        &[
            ("content-type", "application/json"),
            ("traceparent", TRACEPARENT),
        ],
        batch.to_string(),
    )
    .await;

    let messages = pull_messages(&app, 4).await;
    assert_eq!(messages[0]["attributes"]["traceparent"], TRACEPARENT);
    assert_eq!(messages[0]["attributes"]["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(messages[1]["attributes"]["traceparent"], own);
    assert!(messages[1]["attributes"].get("tracestate").is_none());
    assert_eq!(messages[2]["attributes"]["traceparent"], TRACEPARENT);
    assert_eq!(messages[3]["attributes"], json!({"traceparent": own}));
    let (events, _) = pull_events(&app, 4).await;
    assert_eq!(events[0]["traceparent"], TRACEPARENT);
    assert_eq!(events[0]["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(events[1]["traceparent"], own);
    assert_eq!(events[2]["traceparent"], TRACEPARENT);

    let bad = [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ];
    for value in bad {
        for (content_type, body) in [
            (
                STRUCTURED,
                json!({"specversion": "1.0", "id": "9", "source": "/s", "type": "t"}),
            ),
            ("application/json", json!({"messages": [{"data": 1}]})),
            ("text/plain", json!("raw")),
        ] {
            let headers = [("content-type", content_type), ("traceparent", value)];
            let response = post(&app, &headers, body.to_string()).await;
            let problem = response.problem(400, "invalid-request");
            assert_eq!(pointers(&problem), ["traceparent"], "{value}: {problem}");
        }
    }
    let response = post(
        &app,
        &[("content-type", "application/json"), ("tracestate", "a=1")],
        json!({"messages": [{"data": 1}]}).to_string(),
    )
    .await;
    assert_eq!(
        pointers(&response.problem(400, "invalid-request")),
        ["tracestate"]
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn other_messages_are_rendered_as_opal_events() {
    let app = app().await;
    let raw = r#"{"a" : [1, 2.0]}"#;
    let body = format!(
        r#"{{"messages":[{{"data":{raw},"key":"k1","attributes":{{"kind":"created","Kind.Upper":"x","dead_letter.reason":"y","id":"z"}}}}]}}"#
    );
    let answer = post_ok(&app, &[("content-type", "application/json")], body).await;
    let id = answer["results"][0]["id"].as_str().unwrap().to_owned();
    post_ok(
        &app,
        &[("content-type", "image/png"), ("opal-attr-size", "3")],
        vec![0u8, 1, 2],
    )
    .await;
    post_ok(
        &app,
        &[
            ("content-type", "application/json"),
            ("traceparent", TRACEPARENT),
        ],
        json!({"messages": [{"data_base64": "AAE="}]}).to_string(),
    )
    .await;

    let messages = pull_messages(&app, 3).await;
    let (events, text) = pull_events(&app, 3).await;
    assert_eq!(
        events[0],
        json!({"specversion": "1.0", "id": id, "source": "/topics/t", "type": "opal.message",
               "datacontenttype": "application/json", "time": messages[0]["publish_time"],
               "kind": "created", "partitionkey": "k1", "data": {"a": [1, 2.0]}})
    );
    assert!(text.contains(&format!(r#""data":{raw}"#)), "{text}");
    assert_eq!(
        events[1],
        json!({"specversion": "1.0", "id": messages[1]["id"], "source": "/topics/t",
               "type": "opal.message", "datacontenttype": "image/png",
               "time": messages[1]["publish_time"], "size": "3", "data_base64": "AAEC"})
    );
    assert_eq!(
        events[2],
        json!({"specversion": "1.0", "id": messages[2]["id"], "source": "/topics/t",
               "type": "opal.message", "datacontenttype": "application/octet-stream",
               "time": messages[2]["publish_time"], "traceparent": TRACEPARENT,
               "data_base64": "AAE="})
    );
}

#[tokio::test]
async fn pull_formats_are_checked() {
    let app = app().await;
    for format in ["xml", "CloudEvents", ""] {
        let body = json!({"format": format});
        let response = app.json("POST", "/v1/subscriptions/ce/pull", body).await;
        let problem = response.problem(400, "invalid-request");
        assert_eq!(pointers(&problem), ["/format"], "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("`opal` or `cloudevents`"), "{detail}");
    }
    // serde_json reports a number where a name belongs as a syntax error: no pointer then.
    let body = json!({"format": 1});
    let response = app.json("POST", "/v1/subscriptions/ce/pull", body).await;
    response.problem(400, "invalid-request");
    let response = app
        .json(
            "POST",
            "/v1/subscriptions/ce/pull",
            json!({"format": "opal"}),
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
}

#[tokio::test]
async fn an_empty_batch_stores_nothing_but_needs_the_topic() {
    let app = app().await;
    let answer = post_ok(&app, &[("content-type", BATCH)], "[]").await;
    assert_eq!(answer, json!({"results": []}));
    let mut request = authed("POST", "/v1/topics/absent/messages");
    request = request.header("content-type", BATCH);
    let response = app.send(request.body(Body::from("[]")).unwrap()).await;
    response.problem(404, "not-found");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn size_limits_apply_to_every_mode() {
    let app = app_with(|config| {
        config.max_body_bytes = 4096;
        config.limits.max_message_bytes = 100;
    })
    .await;
    let big = "x".repeat(200);
    // Structured: the data is a member of the body, as in the JSON batch.
    let event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": big});
    let response = post(&app, &[("content-type", STRUCTURED)], event.to_string()).await;
    assert_eq!(
        pointers(&response.problem(400, "invalid-request")),
        ["/data"]
    );
    let event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                       "data_base64": BASE64.encode(&big)});
    let response = post(&app, &[("content-type", BATCH)], format!("[{event}]")).await;
    assert_eq!(
        pointers(&response.problem(400, "invalid-request")),
        ["/0/data_base64"]
    );
    // Binary: the body is the payload.
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    ];
    let response = post(&app, &headers, big.clone()).await;
    let problem = response.problem(413, "payload-too-large");
    assert!(
        problem["detail"].as_str().unwrap().contains("100"),
        "{problem}"
    );
    // Over the request limit.
    let response = post(&app, &[("content-type", STRUCTURED)], "x".repeat(5000)).await;
    response.problem(413, "payload-too-large");
    // Exactly at the limit is fine.
    post_ok(&app, &headers, "x".repeat(100)).await;
}
