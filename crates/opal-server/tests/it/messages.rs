//! `POST /v1/topics/{topic}/messages`, checked end to end through pull.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn json_data_comes_back_byte_for_byte_with_key_and_attributes() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    // Deliberately odd spacing and number forms: they must survive unchanged.
    let raw = r#"{"b" : [1, 2.50, 1e3], "s":"\u00e9"}"#;
    let body = format!(
        r#"{{"messages":[{{"data": {raw} ,"key":"k1","attributes":{{"a":"b","c.d":"e"}}}}]}}"#
    );
    let response = app
        .raw(
            "POST",
            "/v1/topics/t/messages",
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let result = &response.json()["results"][0];
    assert_eq!(result["partition"], 0);
    assert_eq!(result["offset"], 0);
    let id = result["id"].as_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&id).expect("id is a UUID");

    let uri = "/v1/subscriptions/t/pull";
    let pulled = app.json("POST", uri, json!({"wait_ms": 2000})).await;
    assert_eq!(pulled.status, 200, "{pulled:?}");
    assert!(
        pulled.text().contains(&format!(r#""data":{raw}"#)),
        "{}",
        pulled.text()
    );
    let delivery = &pulled.json()["deliveries"][0];
    assert_eq!(delivery["attempt"], 1);
    assert!(delivery["ack_id"].as_str().is_some_and(|a| !a.is_empty()));
    let message = &delivery["message"];
    assert_eq!(message["id"], id);
    assert_eq!(message["topic"], "t");
    assert_eq!(message["offset"], 0);
    assert_eq!(message["key"], "k1");
    assert_eq!(message["attributes"], json!({"a": "b", "c.d": "e"}));
    assert!(message.get("data_base64").is_none(), "{message}");
    assert!(
        message["publish_time"].as_str().unwrap().ends_with('Z'),
        "{message}"
    );
}

#[tokio::test]
async fn base64_data_comes_back_as_the_same_bytes() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let bytes: Vec<u8> = (0..=255).collect();
    let encoded = BASE64.encode(&bytes);
    app.publish("t", json!([{"data_base64": encoded}, {"data": null}]))
        .await;

    let deliveries = app.pull("t", 10, 2000).await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    let first = &deliveries[0]["message"];
    assert_eq!(first["data_base64"], encoded);
    assert!(first.get("data").is_none(), "{first}");
    assert_eq!(
        first["key"],
        serde_json::Value::Null,
        "no key is null: {first}"
    );
    assert_eq!(
        first["attributes"],
        json!({}),
        "no attributes is an empty object: {first}"
    );
    // `"data": null` is a JSON payload, not a missing one.
    let second = &deliveries[1]["message"];
    assert!(second.as_object().unwrap().contains_key("data"), "{second}");
    assert_eq!(second["data"], serde_json::Value::Null);
}

async fn assert_nothing_stored(app: &TestApp) {
    let deliveries = app.pull("t", 10, 300).await;
    assert!(
        deliveries.is_empty(),
        "a rejected request stored {deliveries:?}"
    );
}

#[tokio::test]
async fn both_data_and_data_base64_is_400_and_stores_nothing() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let messages = json!([{"data": 1}, {"data": {"x": 1}, "data_base64": "AAE="}]);
    let response = app
        .json(
            "POST",
            "/v1/topics/t/messages",
            json!({"messages": messages}),
        )
        .await;
    let body = response.problem(400, "invalid-request");
    assert_eq!(body["errors"][0]["pointer"], "/messages/1", "{body}");
    // The valid first message of the batch was not stored either.
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn every_bad_message_of_a_batch_is_reported() {
    let app = TestApp::new();
    app.create_topic_and_subscription("t", 30_000).await;
    let messages = json!([
        {"key": "no payload"},
        {"data_base64": "not base64!"},
        {"data": 1, "attributes": {"bad name": "x"}},
        {"data": 1, "key": ""},
        {"data": 1},
    ]);
    let response = app
        .json(
            "POST",
            "/v1/topics/t/messages",
            json!({"messages": messages}),
        )
        .await;
    let body = response.problem(400, "invalid-request");
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        [
            "/messages/0",
            "/messages/1/data_base64",
            "/messages/2/attributes/bad name",
            "/messages/3/key"
        ],
        "{body}"
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn an_oversized_payload_points_at_the_member_that_carried_it() {
    let app = TestApp::with_config(|c| c.limits.max_message_bytes = 4);
    app.create_topic_and_subscription("t", 30_000).await;
    let messages = json!([{"data": "too long"}, {"data_base64": BASE64.encode(b"12345")}]);
    let response = app
        .json(
            "POST",
            "/v1/topics/t/messages",
            json!({"messages": messages}),
        )
        .await;
    let body = response.problem(400, "invalid-request");
    assert_eq!(body["errors"][0]["pointer"], "/messages/0/data", "{body}");
    assert_eq!(
        body["errors"][1]["pointer"], "/messages/1/data_base64",
        "{body}"
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn an_empty_or_too_large_batch_is_400() {
    let app = TestApp::with_config(|c| c.limits.max_batch_messages = 2);
    app.create_topic_and_subscription("t", 30_000).await;
    for messages in [json!([]), json!([{"data": 1}, {"data": 2}, {"data": 3}])] {
        let response = app
            .json(
                "POST",
                "/v1/topics/t/messages",
                json!({"messages": messages}),
            )
            .await;
        let body = response.problem(400, "invalid-request");
        assert_eq!(body["errors"][0]["pointer"], "/messages", "{body}");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn publishing_to_an_absent_topic_is_404() {
    let app = TestApp::new();
    let response = app
        .json(
            "POST",
            "/v1/topics/nope/messages",
            json!({"messages": [{"data": 1}]}),
        )
        .await;
    response.problem(404, "not-found");
}

#[tokio::test]
async fn offsets_count_up_across_batches() {
    let app = TestApp::new();
    app.create_topic("t").await;
    let first = app.publish("t", json!([{"data": 1}, {"data": 2}])).await;
    let second = app.publish("t", json!([{"data": 3}])).await;
    let offsets: Vec<u64> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["results"].as_array().unwrap())
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1, 2]);
}
