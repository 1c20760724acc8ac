//! Resends: a message pushed again on request (delivered or dead-lettered before), recover of
//! what failed, and a failing resend retried by the schedule, then dropped; none of it touches
//! the subscription's ack state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use jiff::Timestamp;
use opal_core::{AttemptStatus, SubscriptionName};

use crate::support::*;

async fn queue_empty(h: &Harness, sub: &SubscriptionName) {
    eventually("the resend queue empties", async || {
        let due = h.broker.due_resends(sub, 10).await.unwrap();
        due.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_delivered_message_resent_arrives_again_with_the_same_id() {
    let h = Harness::start().await;
    let receiver = Receiver::start(|_, _| async { StatusCode::NO_CONTENT.into_response() }).await;
    let (push, secret) = endpoint(&receiver.url(), &[0, 100]);
    let sub = h.push("hook", push, |_| {}).await;
    let ids = h.publish(vec![text("once")]).await;
    receiver.wait_for_posts(1).await;
    eventually("the delivery is acked and logged", async || {
        let (_, stats) = h.broker.get_subscription(&sub).await.unwrap();
        let logged = h.attempts(&sub).await.len();
        (stats.acked == 1 && logged == 1).then_some(())
    })
    .await;

    let target = opal_core::resend::logged_target(h.broker.as_ref(), &sub, ids[0])
        .await
        .unwrap()
        .expect("the attempt log knows where the message is");
    let queued_at = Instant::now();
    assert_eq!(h.broker.queue_resends(&sub, vec![target]).await.unwrap(), 1);
    let posts = receiver.wait_for_posts(2).await;
    assert!(
        posts[1].at - queued_at < Duration::from_secs(2),
        "the queue woke the endpoint ({:?})",
        posts[1].at - queued_at
    );
    let again = &posts[1];
    assert_eq!(again.header("webhook-id"), ids[0].to_string());
    assert_eq!(
        again.header("opal-attempt"),
        "1",
        "a resend counts its own attempts"
    );
    assert_eq!(again.body, posts[0].body, "the same event");
    again
        .verify(&secret)
        .expect("a resend is signed like a delivery");

    let attempts = eventually("the resend is logged", async || {
        let a = h.attempts(&sub).await;
        (a.len() == 2).then_some(a)
    })
    .await;
    assert!(
        attempts
            .iter()
            .all(|a| a.status == AttemptStatus::Succeeded && a.message_id == ids[0])
    );
    queue_empty(&h, &sub).await;
    let (_, stats) = h.broker.get_subscription(&sub).await.unwrap();
    assert_eq!(
        (stats.acked, stats.backlog),
        (1, 0),
        "the ack state is untouched"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 2, "sent once more, not more");
}

#[tokio::test]
async fn recover_resends_each_message_whose_last_attempts_failed_once() {
    let h = Harness::start().await;
    let dead = h.topic("acme/dead").await;
    let failing = Arc::new(AtomicBool::new(false));
    let answer = Arc::clone(&failing);
    let receiver = Receiver::start(move |_, _| {
        let failing = answer.load(Ordering::SeqCst);
        async move {
            if failing {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            } else {
                StatusCode::OK.into_response()
            }
        }
    })
    .await;
    let (push, _) = endpoint(&receiver.url(), &[0, 50]);
    let sub = h
        .push("hook", push, |c| c.dead_letter_topic = Some(dead.clone()))
        .await;
    let since = Timestamp::now();
    let good = h.publish(vec![text("good")]).await[0];
    receiver.wait_for_posts(1).await;

    failing.store(true, Ordering::SeqCst);
    let bad = h.publish(vec![text("bad-1"), text("bad-2")]).await;
    eventually("both failing messages are dead-lettered", async || {
        (h.read_all(&dead).await.len() == 2).then_some(())
    })
    .await;
    failing.store(false, Ordering::SeqCst);
    let before = receiver.posts().len();
    assert_eq!(
        before, 5,
        "one success, then two attempts of each failing message"
    );
    eventually("every attempt is logged", async || {
        (h.attempts(&sub).await.len() == 5).then_some(())
    })
    .await;

    let targets = opal_core::resend::failed_since(h.broker.as_ref(), &sub, since, None)
        .await
        .unwrap();
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert_eq!(h.broker.queue_resends(&sub, targets).await.unwrap(), 2);
    let posts = receiver.wait_for_posts(before + 2).await;
    let mut resent: Vec<String> = posts[before..]
        .iter()
        .map(|p| p.header("webhook-id").to_owned())
        .collect();
    resent.sort();
    let mut want: Vec<String> = bad.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(resent, want, "each failed message once more, not {good}");
    queue_empty(&h, &sub).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.posts().len(), before + 2, "nothing else");

    // Now every message's last attempt succeeded: nothing is left to recover.
    eventually("the resends are logged", async || {
        (h.attempts(&sub).await.len() == 7).then_some(())
    })
    .await;
    let left = opal_core::resend::failed_since(h.broker.as_ref(), &sub, since, None)
        .await
        .unwrap();
    assert_eq!(left, vec![]);
    assert_eq!(h.read_all(&dead).await.len(), 2, "dead-lettered once");
}

#[tokio::test]
async fn a_failing_resend_follows_the_schedule_then_is_dropped() {
    let h = Harness::start().await;
    let dead = h.topic("acme/dead").await;
    let receiver = Receiver::start(|n, _| async move {
        if n == 0 {
            StatusCode::OK.into_response()
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response()
        }
    })
    .await;
    let (push, _) = endpoint(&receiver.url(), &[0, 200, 400]);
    let sub = h
        .push("hook", push, |c| c.dead_letter_topic = Some(dead.clone()))
        .await;
    let ids = h.publish(vec![text("x")]).await;
    receiver.wait_for_posts(1).await;
    let target = eventually("the delivery is logged", async || {
        opal_core::resend::logged_target(h.broker.as_ref(), &sub, ids[0])
            .await
            .unwrap()
    })
    .await;
    h.broker.queue_resends(&sub, vec![target]).await.unwrap();

    let posts = receiver.wait_for_posts(4).await;
    let numbers: Vec<&str> = posts[1..]
        .iter()
        .map(|p| p.header("opal-attempt"))
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    // The schedule's waits, less at most 20 % jitter.
    let gap1 = posts[2].at - posts[1].at;
    let gap2 = posts[3].at - posts[2].at;
    assert!(gap1 >= Duration::from_millis(160), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(320), "{gap2:?}");
    queue_empty(&h, &sub).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.posts().len(),
        4,
        "no attempt after the schedule's last"
    );
    assert!(
        h.read_all(&dead).await.is_empty(),
        "a dropped resend is not dead-lettered"
    );
    let attempts = eventually("every attempt is logged", async || {
        let a = h.attempts(&sub).await;
        (a.len() == 4).then_some(a)
    })
    .await;
    let statuses: BTreeMap<u32, usize> = attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Failed)
        .fold(BTreeMap::new(), |mut m, a| {
            *m.entry(a.attempt).or_default() += 1;
            m
        });
    assert_eq!(statuses, BTreeMap::from([(1, 1), (2, 1), (3, 1)]));
    let (_, stats) = h.broker.get_subscription(&sub).await.unwrap();
    assert_eq!((stats.acked, stats.backlog), (1, 0));
}
