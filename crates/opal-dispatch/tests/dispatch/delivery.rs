//! What a successful push looks like: signed, in the endpoint's format, acked, logged.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use jiff::Timestamp;
use opal_core::{AttemptStatus, PushFormat, PushSecret};
use opal_dispatch::SigningSecret;

use crate::support::*;

fn ok() -> axum::response::Response {
    StatusCode::NO_CONTENT.into_response()
}

#[tokio::test]
async fn deliveries_are_signed_acked_and_logged() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async { ok() }).await;
    let (push, secret) = endpoint(&receiver.url(), &[0, 100]);
    let sub = h.push("hook", push, |_| {}).await;
    let ids = h
        .publish(vec![text("one"), text("two"), text("three")])
        .await;

    let posts = receiver.wait_for_posts(3).await;
    for post in &posts {
        post.verify(&secret)
            .expect("the signature verifies with the endpoint's secret");
        assert_eq!(post.header("content-type"), "application/cloudevents+json");
        let event: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"].as_str(), Some(post.header("webhook-id")));
    }
    let mut got: Vec<String> = posts
        .iter()
        .map(|p| p.header("webhook-id").to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = ids.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(got, want, "webhook-id is the message id");

    let backlog = eventually("the backlog empties", async || {
        let (_, stats) = h.broker.get_subscription(&sub).await.unwrap();
        (stats.backlog == 0).then_some(stats)
    })
    .await;
    assert_eq!(backlog.acked, 3);
    let attempts = eventually("three attempts logged", async || {
        let a = h.attempts(&sub).await;
        (a.len() == 3).then_some(a)
    })
    .await;
    for a in &attempts {
        assert_eq!(a.status, AttemptStatus::Succeeded);
        assert_eq!(a.status_code, Some(204));
        assert_eq!(a.attempt, 1);
        assert_eq!(a.url, receiver.url());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 3, "nothing is delivered twice");
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async { ok() }).await;
    let (mut push, new) = endpoint(&receiver.url(), &[0]);
    let old = SigningSecret::generate();
    push.secrets.push(PushSecret {
        secret: old.as_str().to_owned(),
        expires_at: Some(Timestamp::now() + jiff::SignedDuration::from_hours(1)),
    });
    // One that expired already signs no more.
    let expired = SigningSecret::generate();
    push.secrets.push(PushSecret {
        secret: expired.as_str().to_owned(),
        expires_at: Some(Timestamp::now() - jiff::SignedDuration::from_hours(1)),
    });
    h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    let post = receiver.wait_for_posts(1).await.remove(0);
    let signature = post.header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    let check = |s: &SigningSecret| post.verify(s);
    check(&new).expect("the new secret verifies");
    check(&old).expect("the rotated-out secret still verifies");
    assert!(check(&expired).is_err(), "an expired secret signs no more");
}

#[tokio::test]
async fn raw_format_sends_the_payload_with_attribute_headers() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async { ok() }).await;
    let (mut push, _) = endpoint(&receiver.url(), &[0]);
    push.format = PushFormat::Raw;
    push.headers.insert("x-team".into(), "payments".into());
    h.push("hook", push, |_| {}).await;
    let mut m = text("payload bytes");
    m.attributes.insert("region".into(), "eu".into());
    m.key = Some("customer-7".into());
    h.publish(vec![m]).await;
    let post = receiver.wait_for_posts(1).await.remove(0);
    assert_eq!(&post.body[..], b"payload bytes");
    assert_eq!(post.header("opal-attr-region"), "eu");
    assert_eq!(post.header("opal-key"), "customer-7");
    assert_eq!(post.header("x-team"), "payments");
    assert_eq!(post.header("opal-attempt"), "1");
}

#[tokio::test]
async fn binary_format_sends_a_binary_mode_cloudevent() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async { ok() }).await;
    let (mut push, _) = endpoint(&receiver.url(), &[0]);
    push.format = PushFormat::Binary;
    h.push("hook", push, |_| {}).await;
    let mut m = text(r#"{"order":42}"#);
    m.encoding = opal_core::DataEncoding::Json;
    let ids = h.publish(vec![m]).await;
    let post = receiver.wait_for_posts(1).await.remove(0);
    assert_eq!(&post.body[..], br#"{"order":42}"#);
    assert_eq!(post.header("ce-specversion"), "1.0");
    assert_eq!(post.header("ce-id"), ids[0].to_string());
    assert_eq!(post.header("content-type"), "application/json");
}

#[tokio::test]
async fn an_endpoint_that_asks_for_validation_gets_the_handshake_first() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, r| async move {
        if r.method == axum::http::Method::OPTIONS {
            let origin = r.header("webhook-request-origin").to_owned();
            ([("webhook-allowed-origin", origin)], StatusCode::OK).into_response()
        } else {
            ok()
        }
    })
    .await;
    let (mut push, _) = endpoint(&receiver.url(), &[0]);
    push.validate = true;
    h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    receiver.wait_for_posts(1).await;
    let first = receiver.requests.lock().unwrap()[0].clone();
    assert_eq!(first.method, axum::http::Method::OPTIONS);
    assert_eq!(first.header("webhook-request-origin"), "opal");

    // An endpoint that does not consent gets no delivery.
    let refusing =
        Receiver::start(|_, _| async { StatusCode::METHOD_NOT_ALLOWED.into_response() }).await;
    let (mut push, _) = endpoint(&refusing.url(), &[0]);
    push.validate = true;
    h.push("refusing", push, |_| {}).await;
    h.publish(vec![text("y")]).await;
    eventually("the handshake is tried", async || {
        (refusing.count() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(refusing.posts().is_empty(), "no POST without consent");
    assert!(
        refusing.count() <= 2,
        "a refused handshake is asked again after a pause, not in a loop: {}",
        refusing.count()
    );
}
