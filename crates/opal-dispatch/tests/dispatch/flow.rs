//! How much goes out, when: the in-flight bound, rate limits, the circuit breaker, ordering by
//! key, endpoints that do not wait for each other, and changes taking effect.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use opal_dispatch::BreakerConfig;

use crate::support::*;

#[tokio::test]
async fn in_flight_deliveries_stay_within_the_bound() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let (mut push, _) = endpoint(&receiver.url(), &[0]);
    push.max_in_flight = 3;
    h.push("hook", push, |_| {}).await;
    h.publish((0..12).map(|i| text(&i.to_string())).collect())
        .await;
    receiver.wait_for_posts(12).await;
    let peak = receiver.max_in_flight.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} deliveries in flight at once");
    assert!(peak >= 2, "deliveries do run side by side ({peak})");
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_another() {
    let h = Harness::start().await;
    let slow = Receiver::start(|_, _| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let fast = Receiver::start(|_, _| async { StatusCode::OK.into_response() }).await;
    let (mut slow_push, _) = endpoint(&slow.url(), &[0]);
    slow_push.timeout_ms = 5_000;
    slow_push.max_in_flight = 1;
    h.push("slow", slow_push, |_| {}).await;
    let (fast_push, _) = endpoint(&fast.url(), &[0]);
    h.push("fast", fast_push, |_| {}).await;
    let started = Instant::now();
    h.publish((0..20).map(|i| text(&i.to_string())).collect())
        .await;
    fast.wait_for_posts(20).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fast endpoint got everything while the slow one still held its first delivery"
    );
    assert_eq!(slow.count(), 1);
}

#[tokio::test]
async fn ordered_subscriptions_push_one_key_at_a_time_in_order() {
    let h = Harness::start().await;
    // The first attempt of every message fails, so order must survive retries.
    let receiver = Receiver::start(|_, r| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if r.header("opal-attempt") == "1" {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (mut push, _) = endpoint(&receiver.url(), &[0, 10, 10]);
    push.format = opal_core::PushFormat::Raw;
    h.push("hook", push, |c| c.ordered = true).await;
    let messages = (0..6)
        .map(|i| {
            let mut m = text(&format!("{}-{i}", if i % 2 == 0 { "a" } else { "b" }));
            m.key = Some(if i % 2 == 0 { "a" } else { "b" }.into());
            m
        })
        .collect();
    h.publish(messages).await;
    let posts = receiver.wait_for_posts(12).await;
    for key in ["a", "b"] {
        let of_key: Vec<(String, String)> = posts
            .iter()
            .filter(|p| p.header("opal-key") == key)
            .map(|p| {
                (
                    String::from_utf8_lossy(&p.body).into_owned(),
                    p.header("opal-attempt").to_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = (0..6)
            .filter(|i| (i % 2 == 0) == (key == "a"))
            .flat_map(|i| {
                let body = format!("{key}-{i}");
                [(body.clone(), "1".to_owned()), (body, "2".to_owned())]
            })
            .collect();
        assert_eq!(
            of_key, expected,
            "key {key}: one at a time, in publish order"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_spreads_deliveries() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async { StatusCode::OK.into_response() }).await;
    let (mut push, _) = endpoint(&receiver.url(), &[0]);
    push.rate_limit_per_s = Some(10);
    h.push("hook", push, |_| {}).await;
    h.publish((0..25).map(|i| text(&i.to_string())).collect())
        .await;
    let posts = receiver.wait_for_posts(25).await;
    // A burst of one second's worth, then 10 per second: 25 need at least 1.4 s.
    let span = posts[24].at - posts[0].at;
    assert!(
        span >= Duration::from_millis(1_300),
        "25 deliveries in {span:?}"
    );
    for window in posts.windows(21) {
        let took = window[20].at - window[0].at;
        assert!(
            took >= Duration::from_millis(900),
            "21 deliveries within {took:?}"
        );
    }
}

#[tokio::test]
async fn the_circuit_breaker_stops_attempts_then_probes() {
    let mut s = settings(LOOPBACK_ONLY);
    s.breaker = BreakerConfig {
        failure_threshold: 3,
        cool_down: Duration::from_millis(800),
        max_cool_down: Duration::from_secs(10),
    };
    let h = Harness::with(s).await;
    let receiver = Receiver::start(|n, _| async move {
        if n < 4 {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (mut push, _) = endpoint(&receiver.url(), &[0, 10, 10, 10, 10, 10, 10, 10]);
    push.max_in_flight = 1;
    h.push("hook", push, |_| {}).await;
    h.publish((0..3).map(|i| text(&i.to_string())).collect())
        .await;
    let posts = receiver.wait_for_posts(3).await;
    // Three failures open it: nothing for the cool-down, then one probe (which fails and
    // doubles the cool-down), then one that succeeds and closes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.posts().len(), 3, "no attempt while open");
    let posts_after = receiver.wait_for_posts(7).await;
    let probe = &posts_after[3];
    assert!(
        probe.at - posts[2].at >= Duration::from_millis(700),
        "the probe waited for the cool-down"
    );
    let second_probe = &posts_after[4];
    assert!(
        second_probe.at - probe.at >= Duration::from_millis(1_400),
        "a failed probe doubles the wait"
    );
}

#[tokio::test]
async fn a_changed_url_takes_effect_and_stopping_drains() {
    let mut h = Harness::start().await;
    let first = Receiver::start(|_, _| async { StatusCode::OK.into_response() }).await;
    let second = Receiver::start(|_, _| async { StatusCode::OK.into_response() }).await;
    let (push, _) = endpoint(&first.url(), &[0]);
    let sub = h.push("hook", push, |_| {}).await;
    h.publish(vec![text("one")]).await;
    first.wait_for_posts(1).await;

    let (s, _) = h.broker.get_subscription(&sub).await.unwrap();
    let mut config = s.config;
    config.push.as_mut().unwrap().url = second.url();
    h.broker
        .update_subscription(&sub, config, Some(s.revision))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.publish(vec![text("two")]).await;
    second.wait_for_posts(1).await;
    assert_eq!(first.count(), 1);
    h.stop().await;
}

/// Deliveries pulled ahead wait for a slot; one that waited has its lease renewed before it is
/// sent, so a slow endpoint does not make it expire mid-attempt and go out twice.
#[tokio::test]
async fn a_queued_delivery_is_not_sent_twice_behind_a_slow_endpoint() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async {
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let (mut push, _) = endpoint(&receiver.url(), &[0, 10]);
    push.timeout_ms = 3_000;
    push.max_in_flight = 1;
    // The lease barely outlasts one attempt: the second message waits 2 s in the queue, then
    // takes 2 s more; without a renewal its lease would end 1 s into its attempt.
    let sub = h.push("hook", push, |c| c.ack_deadline_ms = 3_100).await;
    h.publish((0..3).map(|i| text(&i.to_string())).collect())
        .await;
    let posts = receiver.wait_for_posts(3).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let ids: std::collections::BTreeSet<_> = posts
        .iter()
        .map(|p| p.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(receiver.posts().len(), 3, "no delivery went out twice");
    let (_, stats) = h.broker.get_subscription(&sub).await.unwrap();
    assert_eq!((stats.backlog, stats.redelivered), (0, 0), "{stats:?}");
}
