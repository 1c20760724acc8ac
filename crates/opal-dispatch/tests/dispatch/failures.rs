//! Failed attempts: retried by the schedule, `Retry-After` honoured, dead-lettered at the end,
//! 410 disabling the endpoint, timeouts, and the SSRF guard.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use opal_core::{AttemptStatus, EndpointState};

use crate::support::*;

#[tokio::test]
async fn failures_follow_the_schedule_then_dead_letter() {
    let h = Harness::start().await;
    let dead = h.topic("acme/dead").await;
    let receiver = Receiver::start(|_, _| async {
        (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()
    })
    .await;
    let (push, _) = endpoint(&receiver.url(), &[0, 300, 600]);
    let sub = h
        .push("hook", push, |c| c.dead_letter_topic = Some(dead.clone()))
        .await;
    let ids = h.publish(vec![text("doomed")]).await;

    let posts = receiver.wait_for_posts(3).await;
    let ids_seen: Vec<_> = posts
        .iter()
        .map(|p| p.header("webhook-id").to_owned())
        .collect();
    assert!(
        ids_seen.iter().all(|id| *id == ids[0].to_string()),
        "webhook-id is stable across retries"
    );
    let attempts: Vec<_> = posts
        .iter()
        .map(|p| p.header("opal-attempt").to_owned())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    // The waits are the schedule's, ±20 % jitter (and never shorter than 80 %).
    let gap1 = posts[1].at - posts[0].at;
    let gap2 = posts[2].at - posts[1].at;
    assert!(gap1 >= Duration::from_millis(240), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(480), "{gap2:?}");

    let dead_letters = eventually("the message is dead-lettered", async || {
        let m = h.read_all(&dead).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(&dead_letters[0].data[..], b"doomed");
    let logged = eventually("three failed attempts logged", async || {
        let a = h.attempts(&sub).await;
        (a.len() == 3).then_some(a)
    })
    .await;
    assert!(logged.iter().all(|a| a.status == AttemptStatus::Failed));
    assert!(
        logged
            .iter()
            .all(|a| a.status_code == Some(500) && a.response == "oops")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.posts().len(), 3, "no attempt after the last");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|n, _| async move {
        if n == 0 {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    // The schedule alone would retry after 10 ms.
    let (push, _) = endpoint(&receiver.url(), &[0, 10, 10]);
    h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    let posts = receiver.wait_for_posts(2).await;
    let gap = posts[1].at - posts[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, not after Retry-After: 1"
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_tells_its_owner() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async { StatusCode::GONE.into_response() }).await;
    let (push, _) = endpoint(&receiver.url(), &[0, 10, 10, 10]);
    let sub = h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    receiver.wait_for_posts(1).await;
    let state = eventually("the endpoint is disabled", async || {
        let (s, _) = h.broker.get_subscription(&sub).await.unwrap();
        let state = s.config.push.unwrap().state;
        matches!(state, EndpointState::Disabled { .. }).then_some(state)
    })
    .await;
    let EndpointState::Disabled { reason, .. } = state else {
        unreachable!()
    };
    assert!(reason.contains("410"), "{reason}");
    let events_topic = opal_core::TopicName::new("acme/opal.events").unwrap();
    let events = eventually("an operational event", async || {
        let m = h.read_all(&events_topic).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    let event: serde_json::Value = serde_json::from_slice(&events[0].data).unwrap();
    assert_eq!(event["type"], opal_dispatch::ENDPOINT_DISABLED);
    assert_eq!(event["subscription"], "hook");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.count(),
        1,
        "a disabled endpoint is not called again"
    );
    let (_, stats) = h.broker.get_subscription(&sub).await.unwrap();
    assert_eq!(
        stats.backlog, 1,
        "the message waits for the endpoint to come back"
    );
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_a_failed_attempt() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|n, _| async move {
        if n == 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        StatusCode::OK.into_response()
    })
    .await;
    let (mut push, _) = endpoint(&receiver.url(), &[0, 10]);
    push.timeout_ms = 300;
    let sub = h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    receiver.wait_for_posts(2).await;
    let attempts = eventually("two attempts logged", async || {
        let a = h.attempts(&sub).await;
        (a.len() == 2).then_some(a)
    })
    .await;
    let (last, first) = (&attempts[0], &attempts[1]);
    assert_eq!(first.status, AttemptStatus::Failed);
    assert_eq!(first.status_code, None);
    assert!(
        first
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out")
            || first
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("timeout"),
        "{:?}",
        first.error
    );
    assert!(first.latency_ms < 2_000, "{}", first.latency_ms);
    assert_eq!(last.status, AttemptStatus::Succeeded);
}

#[tokio::test]
async fn a_refused_connection_is_a_failed_attempt() {
    let h = Harness::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (push, _) = endpoint(&format!("http://127.0.0.1:{closed}/hook"), &[0, 10_000]);
    let sub = h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    let attempts = eventually("an attempt logged", async || {
        let a = h.attempts(&sub).await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(attempts[0].status, AttemptStatus::Failed);
    assert!(attempts[0].error.is_some());
}

/// With nothing allowed, a loopback endpoint is refused before any connection: the receiver
/// is never called, and the attempt log says why.
#[tokio::test]
async fn the_ssrf_guard_refuses_a_loopback_endpoint_end_to_end() {
    let h = Harness::with(settings("")).await;
    let receiver = Receiver::start(|_, _| async { StatusCode::OK.into_response() }).await;
    for (name, url) in [
        ("literal", receiver.url()),
        ("named", format!("http://localhost:{}/hook", receiver.port)),
    ] {
        let (push, _) = endpoint(&url, &[0, 60_000]);
        let sub = h.push(name, push, |_| {}).await;
        h.publish(vec![text(name)]).await;
        let attempts = eventually("a refused attempt logged", async || {
            let a = h.attempts(&sub).await;
            (!a.is_empty()).then_some(a)
        })
        .await;
        let error = attempts[0].error.clone().unwrap_or_default();
        assert!(error.contains("loopback"), "{name}: {error}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 0, "the guarded receiver was never called");
}

/// On a manual clock the schedule's waits pass only when the clock moves: the second attempt
/// comes after 60 s (±20 %) of broker time, not before, whatever real time passes.
#[tokio::test]
async fn the_schedule_waits_on_the_brokers_clock() {
    let clock = opal_core::Clock::manual("2026-11-27T12:00:00Z".parse().unwrap());
    let h = Harness::with_clock(settings(LOOPBACK_ONLY), clock.clone()).await;
    let receiver = Receiver::start(|n, _| async move {
        if n == 0 {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (push, _) = endpoint(&receiver.url(), &[0, 60_000]);
    let sub = h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    receiver.wait_for_posts(1).await;
    clock.advance(Duration::from_millis(47_000));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1, "not before 80 % of the wait");
    clock.advance(Duration::from_millis(26_000));
    receiver.wait_for_posts(2).await;
    let (_, stats) = h.broker.get_subscription(&sub).await.unwrap();
    assert_eq!(stats.redelivered, 1);
}

/// An endpoint whose every attempt fails for the configured period is disabled, and its owner
/// told, even without a 410.
#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled() {
    let mut s = settings(LOOPBACK_ONLY);
    s.disable_after = Duration::from_millis(600);
    let h = Harness::with(s).await;
    let receiver =
        Receiver::start(|_, _| async { StatusCode::INTERNAL_SERVER_ERROR.into_response() }).await;
    let (push, _) = endpoint(
        &receiver.url(),
        &[0, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100],
    );
    let sub = h.push("hook", push, |_| {}).await;
    h.publish(vec![text("x")]).await;
    let reason = eventually("the endpoint is disabled", async || {
        let (s, _) = h.broker.get_subscription(&sub).await.unwrap();
        match s.config.push.unwrap().state {
            EndpointState::Disabled { reason, .. } => Some(reason),
            EndpointState::Enabled => None,
        }
    })
    .await;
    assert!(reason.contains("every attempt failed"), "{reason}");
    // The event is published just after the endpoint is stored as disabled.
    let events_topic = opal_core::TopicName::new("acme/opal.events").unwrap();
    eventually("an operational event", async || {
        (!h.read_all(&events_topic).await.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.read_all(&events_topic).await.len(),
        1,
        "one operational event"
    );
    let count = receiver.count();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.count(), count, "no attempt once disabled");
}
