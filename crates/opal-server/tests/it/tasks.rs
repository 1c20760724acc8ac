//! Tasks over HTTP: publishing with a callback, acking with a result, `GET /v1/tasks/{id}`.
//! No dispatcher runs here, so URL callbacks are checked up to the message that carries the
//! result; reply topics are checked to the end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestApp;

async fn jobs_app() -> TestApp {
    let app = TestApp::new();
    app.create_topic("jobs").await;
    app.create_topic("jobs.replies").await;
    app.create_topic("jobs.dead").await;
    app.create_subscription(
        "workers",
        json!({"topic": "jobs", "max_deliveries": 2, "dead_letter_topic": "jobs.dead"}),
    )
    .await;
    app.create_subscription("replies", json!({"topic": "jobs.replies"}))
        .await;
    app
}

async fn task(app: &TestApp, id: &str) -> Value {
    app.read(&format!("/v1/tasks/{id}")).await
}

#[tokio::test]
async fn a_task_goes_from_pending_to_succeeded_and_its_result_reaches_the_reply_topic() {
    let app = jobs_app().await;
    let published = app
        .publish(
            "jobs",
            json!([{"data": {"resize": "cat.png"}, "callback": {"topic": "jobs.replies"}}]),
        )
        .await;
    let id = published["results"][0]["id"].as_str().unwrap().to_owned();
    let pending = task(&app, &id).await;
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["attempts"], 0);
    assert_eq!(pending["callback"]["topic"], "jobs.replies");
    assert_eq!(pending["callback"]["state"], "waiting");

    let deliveries = app.pull("workers", 10, 1000).await;
    assert_eq!(deliveries.len(), 1);
    let running = task(&app, &id).await;
    assert_eq!(running["state"], "in_progress");
    assert_eq!(running["attempts"], 1);

    let ack_id = deliveries[0]["ack_id"].as_str().unwrap();
    let acked = app
        .action(
            "workers",
            "ack",
            json!({"ack_ids": [ack_id], "results": {ack_id: {"data": {"thumbnail": "cat-small.png"}}}}),
        )
        .await;
    assert_eq!(acked["acked"], 1, "{acked}");
    let done = task(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["data"], json!({"thumbnail": "cat-small.png"}));
    assert_eq!(done["error"], json!(null));
    assert_eq!(done["callback"]["state"], "delivered");

    let replies = app.pull("replies", 10, 1000).await;
    assert_eq!(replies.len(), 1);
    let reply = &replies[0]["message"];
    assert_eq!(reply["attributes"]["correlation_id"], id);
    assert_eq!(reply["attributes"]["task_state"], "succeeded");
    assert_eq!(reply["data"]["task_id"], id);
    assert_eq!(reply["data"]["state"], "succeeded");
    assert_eq!(reply["data"]["data"], json!({"thumbnail": "cat-small.png"}));
}

#[tokio::test]
async fn an_error_result_fails_the_task_and_plain_acks_still_work() {
    let app = jobs_app().await;
    let published = app
        .publish(
            "jobs",
            json!([
                {"data": 1, "callback": {"topic": "jobs.replies"}},
                {"data": 2}
            ]),
        )
        .await;
    let id = published["results"][0]["id"].as_str().unwrap().to_owned();
    let plain_id = published["results"][1]["id"].as_str().unwrap().to_owned();
    let deliveries = app.pull("workers", 10, 1000).await;
    let ack_ids: Vec<&str> = deliveries
        .iter()
        .map(|d| d["ack_id"].as_str().unwrap())
        .collect();
    let task_ack = deliveries
        .iter()
        .find(|d| d["message"]["id"] == id)
        .unwrap()["ack_id"]
        .as_str()
        .unwrap();
    let acked = app
        .action(
            "workers",
            "ack",
            json!({"ack_ids": ack_ids, "results": {task_ack: {"error": "the image is corrupt"}}}),
        )
        .await;
    assert_eq!(acked["acked"], 2);
    let failed = task(&app, &id).await;
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["error"], "the image is corrupt");
    let replies = app.pull("replies", 10, 1000).await;
    assert_eq!(
        replies[0]["message"]["data"]["error"],
        "the image is corrupt"
    );
    // A message without a callback acked without a result is no task.
    assert_eq!(app.get(&format!("/v1/tasks/{plain_id}")).await.status, 404);
}

#[tokio::test]
async fn a_dead_lettered_task_reports_it_and_tells_its_callback() {
    let app = jobs_app().await;
    let published = app
        .publish(
            "jobs",
            json!([{"data": 1, "callback": {"topic": "jobs.replies"}}]),
        )
        .await;
    let id = published["results"][0]["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let deliveries = app.pull_until_some("workers", Duration::from_secs(5)).await;
        let ack_id = deliveries[0]["ack_id"].as_str().unwrap();
        app.action(
            "workers",
            "nack",
            json!({"ack_ids": [ack_id], "delay_ms": 0}),
        )
        .await;
    }
    let dead = task(&app, &id).await;
    assert_eq!(dead["state"], "dead_lettered", "{dead}");
    assert_eq!(dead["attempts"], 2);
    let replies = app.pull_until_some("replies", Duration::from_secs(5)).await;
    assert_eq!(replies[0]["message"]["attributes"]["correlation_id"], id);
    assert_eq!(replies[0]["message"]["data"]["state"], "dead_lettered");
    assert!(replies[0]["message"]["data"]["error"].is_string());
}

#[tokio::test]
async fn a_url_callback_goes_through_the_apps_callback_subscription() {
    let app = jobs_app().await;
    let published = app
        .publish(
            "jobs",
            json!([{"data": 1, "callback": {"url": "https://client.example.com/done"}}]),
        )
        .await;
    let id = published["results"][0]["id"].as_str().unwrap().to_owned();
    let deliveries = app.pull("workers", 10, 1000).await;
    let ack_id = deliveries[0]["ack_id"].as_str().unwrap();
    app.action(
        "workers",
        "ack",
        json!({"ack_ids": [ack_id], "results": {ack_id: {"data": "ok"}}}),
    )
    .await;
    let done = task(&app, &id).await;
    assert_eq!(done["callback"]["url"], "https://client.example.com/done");
    assert_eq!(
        done["callback"]["state"], "pending",
        "no dispatcher runs here"
    );
    let route = app.read("/v1/subscriptions/opal.callbacks").await;
    assert_eq!(route["push"]["url_attribute"], "opal.callback.url");
    let secret = app.read("/v1/subscriptions/opal.callbacks/secret").await;
    assert!(secret["secret"].as_str().unwrap().starts_with("whsec_"));
    let carried = app
        .read("/v1/topics/opal.callbacks/messages?partition=0&limit=10")
        .await;
    let message = &carried["messages"][0];
    assert_eq!(
        message["attributes"]["opal.callback.url"],
        "https://client.example.com/done"
    );
    assert_eq!(message["data"]["task_id"], id);
    assert_eq!(message["id"], done["callback"]["message_id"]);
}

#[tokio::test]
async fn bad_callbacks_and_results_are_refused_and_change_nothing() {
    let app = jobs_app().await;
    let cases = [
        (
            json!({"url": "https://a.example.com", "topic": "jobs.replies"}),
            "/messages/0/callback",
        ),
        (json!({}), "/messages/0/callback"),
        (
            json!({"url": "ftp://a.example.com"}),
            "/messages/0/callback/url",
        ),
        (
            json!({"url": "http://169.254.169.254/"}),
            "/messages/0/callback/url",
        ),
        (
            json!({"url": "http://[::1]:9/"}),
            "/messages/0/callback/url",
        ),
        (json!({"topic": "nope"}), "/messages/0/callback/topic"),
        (json!({"topic": "Bad Name"}), "/messages/0/callback/topic"),
        (
            json!({"url": "https://a.example.com", "colour": 1}),
            "/messages/0/callback",
        ),
    ];
    for (callback, pointer) in cases {
        let response = app
            .json(
                "POST",
                "/v1/topics/jobs/messages",
                json!({"messages": [{"data": 1, "callback": callback}]}),
            )
            .await;
        let problem = response.problem(400, "invalid-request");
        let got = problem["errors"][0]["pointer"].as_str().unwrap_or_default();
        assert!(got.starts_with(pointer), "{callback}: {got}: {problem}");
    }
    let topic = app.read("/v1/topics/jobs").await;
    assert_eq!(
        topic["stats"]["published_messages"], 0,
        "nothing was stored: {topic}"
    );

    app.publish(
        "jobs",
        json!([{"data": 1, "callback": {"topic": "jobs.replies"}}]),
    )
    .await;
    let deliveries = app.pull("workers", 10, 1000).await;
    let ack_id = deliveries[0]["ack_id"].as_str().unwrap();
    for results in [
        json!({"someone-else": {"data": 1}}),
        json!({ack_id: {"data": 1, "error": "x"}}),
        json!({ack_id: {}}),
        json!({ack_id: {"result": 1}}),
    ] {
        let response = app
            .json(
                "POST",
                "/v1/subscriptions/workers/ack",
                json!({"ack_ids": [ack_id], "results": results}),
            )
            .await;
        response.problem(400, "invalid-request");
    }
    let sub = app.read("/v1/subscriptions/workers").await;
    assert_eq!(sub["stats"]["acked"], 0, "nothing was acked: {sub}");
    assert_eq!(app.get("/v1/tasks/not-a-uuid").await.status, 404);
    assert_eq!(
        app.get("/v1/tasks/019ac5f0-0000-7000-8000-000000000000")
            .await
            .status,
        404
    );
}
