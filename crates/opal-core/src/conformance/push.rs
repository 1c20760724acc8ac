//! The push attempt log (what the dispatcher records and the API lists) and the resend queue
//! (what the API queues and the dispatcher sends).

use uuid::Uuid;

use super::support::*;
use crate::{
    AttemptQuery, AttemptStatus, BrokerError, PushAttempt, Resend, ResendTarget, SubscriptionName,
};

/// An attempt logged at `ms` (since [`START_MS`]), with an id of that time.
fn attempt(ms: i64, message: u128, n: u32, ok: bool) -> PushAttempt {
    let when = at(ms);
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        when.as_second() as u64,
        when.subsec_nanosecond() as u32,
    ));
    PushAttempt {
        id,
        message_id: Uuid::from_u128(message),
        partition: 0,
        offset: message as u64,
        attempt: n,
        at: when,
        url: "https://hooks.example.com/in".into(),
        status: if ok {
            AttemptStatus::Succeeded
        } else {
            AttemptStatus::Failed
        },
        status_code: Some(if ok { 204 } else { 500 }),
        latency_ms: 12,
        response: if ok { String::new() } else { "oops".into() },
        error: None,
    }
}

fn query(limit: usize) -> AttemptQuery {
    AttemptQuery {
        limit,
        ..AttemptQuery::default()
    }
}

async fn list(fx: &Fixture<'_>, sub: &SubscriptionName, q: AttemptQuery) -> Vec<PushAttempt> {
    fx.broker()
        .list_push_attempts(sub, q)
        .await
        .expect("attempts of a subscription")
}

/// Attempts come back newest first, whole; filters by message, status and time combine; a
/// page continues before the last id of the previous page.
pub async fn attempts_are_listed_newest_first_and_filtered(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let logged = vec![
        attempt(1_000, 1, 1, false),
        attempt(2_000, 2, 1, true),
        attempt(3_000, 1, 2, true),
    ];
    fx.broker()
        .record_push_attempts(&s, logged.clone())
        .await
        .expect("recorded");
    let all = list(&fx, &s, query(10)).await;
    let newest_first: Vec<_> = logged.iter().rev().cloned().collect();
    assert_eq!(all, newest_first, "every attempt, newest first, unchanged");

    let of_one = list(
        &fx,
        &s,
        AttemptQuery {
            message_id: Some(Uuid::from_u128(1)),
            ..query(10)
        },
    )
    .await;
    assert_eq!(of_one, vec![logged[2].clone(), logged[0].clone()]);
    let failed = list(
        &fx,
        &s,
        AttemptQuery {
            status: Some(AttemptStatus::Failed),
            ..query(10)
        },
    )
    .await;
    assert_eq!(failed, vec![logged[0].clone()]);
    let window = list(
        &fx,
        &s,
        AttemptQuery {
            since: Some(at(2_000)),
            until: Some(at(3_000)),
            ..query(10)
        },
    )
    .await;
    assert_eq!(
        window,
        vec![logged[1].clone()],
        "since is inclusive, until is not"
    );

    let first_page = list(&fx, &s, query(2)).await;
    assert_eq!(first_page.len(), 2);
    let next = list(
        &fx,
        &s,
        AttemptQuery {
            before_id: Some(first_page[1].id),
            ..query(2)
        },
    )
    .await;
    assert_eq!(next, vec![logged[0].clone()]);
}

/// The log keeps a week: recording moves older attempts out.
pub async fn attempts_older_than_a_week_are_dropped(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let old = attempt(0, 1, 1, false);
    fx.broker()
        .record_push_attempts(&s, vec![old.clone()])
        .await
        .expect("recorded");
    let week_ms = 7 * 24 * 3_600_000;
    fx.advance_to(week_ms + 1_000).await;
    let new = attempt(week_ms + 1_000, 2, 1, true);
    fx.broker()
        .record_push_attempts(&s, vec![new.clone()])
        .await
        .expect("recorded");
    assert_eq!(list(&fx, &s, query(10)).await, vec![new]);
}

/// Attempts belong to their subscription: another subscription sees none, a deleted and
/// recreated one starts empty, a missing one is not found.
pub async fn attempts_go_with_their_subscription(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let other = fx.subscribe("other", sub_config(&t)).await;
    fx.broker()
        .record_push_attempts(&s, vec![attempt(0, 1, 1, true)])
        .await
        .expect("recorded");
    assert!(list(&fx, &other, query(10)).await.is_empty());
    fx.broker()
        .delete_subscription(&s, None)
        .await
        .expect("deleted");
    let missing = fx.broker().list_push_attempts(&s, query(10)).await;
    assert!(
        matches!(missing, Err(BrokerError::SubscriptionNotFound(_))),
        "{missing:?}"
    );
    let recorded = fx
        .broker()
        .record_push_attempts(&s, vec![attempt(0, 1, 1, true)])
        .await;
    assert!(
        matches!(recorded, Err(BrokerError::SubscriptionNotFound(_))),
        "{recorded:?}"
    );
    let s = fx.subscribe("s", sub_config(&t)).await;
    assert!(list(&fx, &s, query(10)).await.is_empty());
}

/// Creating, updating and deleting a subscription moves the watch, so the dispatcher learns of
/// endpoints at once.
pub async fn subscription_changes_are_announced(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let mut watch = fx.broker().watch_subscriptions();
    watch.borrow_and_update();
    let s = fx.subscribe("s", sub_config(&t)).await;
    assert!(watch.has_changed().expect("the broker is open"), "create");
    watch.borrow_and_update();
    let config = crate::SubscriptionConfig {
        ordered: true,
        ..sub_config(&t)
    };
    fx.broker()
        .update_subscription(&s, config, None)
        .await
        .expect("updated");
    assert!(watch.has_changed().expect("the broker is open"), "update");
    watch.borrow_and_update();
    fx.broker()
        .delete_subscription(&s, None)
        .await
        .expect("deleted");
    assert!(watch.has_changed().expect("the broker is open"), "delete");
}

fn target(partition: u32, offset: u64) -> ResendTarget {
    ResendTarget { partition, offset }
}

async fn due(fx: &Fixture<'_>, sub: &SubscriptionName) -> Vec<Resend> {
    fx.broker()
        .due_resends(sub, 100)
        .await
        .expect("due resends of a subscription")
}

/// Queued resends are due at once with attempt 1, earliest first; settling with a time moves
/// one to its next attempt then, settling with none drops it. Queueing moves the watch.
pub async fn resends_are_queued_due_and_settled(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 2).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let mut watch = fx.broker().watch_resends();
    watch.borrow_and_update();
    let queued = fx
        .broker()
        .queue_resends(&s, vec![target(1, 4), target(0, 7)])
        .await
        .expect("queued");
    assert_eq!(queued, 2);
    assert!(watch.has_changed().expect("the broker is open"), "queue");
    let first = due(&fx, &s).await;
    let now = at(0);
    assert_eq!(
        first,
        vec![
            Resend {
                partition: 0,
                offset: 7,
                attempt: 1,
                not_before: now
            },
            Resend {
                partition: 1,
                offset: 4,
                attempt: 1,
                not_before: now
            },
        ]
    );
    let limited = fx.broker().due_resends(&s, 1).await.expect("due");
    assert_eq!(limited, first[..1]);

    fx.broker()
        .settle_resend(&s, 0, 7, Some(at(5_000)))
        .await
        .expect("settled");
    fx.broker()
        .settle_resend(&s, 1, 4, None)
        .await
        .expect("settled");
    assert!(due(&fx, &s).await.is_empty(), "one waits, one is gone");
    fx.advance_to(5_000).await;
    assert_eq!(
        due(&fx, &s).await,
        vec![Resend {
            partition: 0,
            offset: 7,
            attempt: 2,
            not_before: at(5_000)
        }]
    );
    fx.broker()
        .settle_resend(&s, 1, 4, Some(at(6_000)))
        .await
        .expect("settling what is not queued is a no-op");
    fx.advance_to(10_000).await;
    assert_eq!(due(&fx, &s).await.len(), 1, "nothing came back");
}

/// A target queued twice (in one call or again later) waits once, started over: due now,
/// attempt 1.
pub async fn a_resend_queued_twice_waits_once(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let queued = fx
        .broker()
        .queue_resends(&s, vec![target(0, 3), target(0, 3)])
        .await
        .expect("queued");
    assert_eq!(queued, 1, "distinct targets");
    fx.broker()
        .settle_resend(&s, 0, 3, Some(at(60_000)))
        .await
        .expect("settled");
    fx.advance_to(1_000).await;
    assert!(due(&fx, &s).await.is_empty());
    fx.broker()
        .queue_resends(&s, vec![target(0, 3)])
        .await
        .expect("queued again");
    assert_eq!(
        due(&fx, &s).await,
        vec![Resend {
            partition: 0,
            offset: 3,
            attempt: 1,
            not_before: at(1_000)
        }]
    );
    fx.advance_to(60_000).await;
    assert_eq!(due(&fx, &s).await.len(), 1, "the earlier time left no row");
}

/// Queued resends and their attempt counts survive a restart.
pub async fn resends_survive_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.broker()
        .queue_resends(&s, vec![target(0, 1), target(0, 2)])
        .await
        .expect("queued");
    fx.broker()
        .settle_resend(&s, 0, 2, Some(at(2_000)))
        .await
        .expect("settled");
    fx.restart().await;
    assert_eq!(due(&fx, &s).await.len(), 1);
    fx.advance_to(2_000).await;
    let after = due(&fx, &s).await;
    assert_eq!(
        after
            .iter()
            .map(|r| (r.offset, r.attempt))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
}

/// Resends belong to their subscription: another sees none, a deleted and recreated one starts
/// empty, a missing one is not found, and turning push off drops them.
pub async fn resends_go_with_their_subscription(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let other = fx.subscribe("other", sub_config(&t)).await;
    fx.broker()
        .queue_resends(&s, vec![target(0, 1)])
        .await
        .expect("queued");
    assert!(due(&fx, &other).await.is_empty());
    fx.broker()
        .delete_subscription(&s, None)
        .await
        .expect("deleted");
    let missing = fx.broker().due_resends(&s, 10).await;
    assert!(
        matches!(missing, Err(BrokerError::SubscriptionNotFound(_))),
        "{missing:?}"
    );
    let queued = fx.broker().queue_resends(&s, vec![target(0, 1)]).await;
    assert!(
        matches!(queued, Err(BrokerError::SubscriptionNotFound(_))),
        "{queued:?}"
    );
    let s = fx.subscribe("s", sub_config(&t)).await;
    assert!(due(&fx, &s).await.is_empty());

    let push = crate::PushConfig::new(
        "https://hooks.example.com/in",
        crate::PushSecret {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            expires_at: None,
        },
    );
    let hooked = crate::SubscriptionConfig {
        ack_deadline_ms: push.timeout_ms + 15_000,
        push: Some(push),
        ..sub_config(&t)
    };
    let p = fx.subscribe("p", hooked.clone()).await;
    fx.broker()
        .queue_resends(&p, vec![target(0, 1)])
        .await
        .expect("queued");
    fx.broker()
        .update_subscription(&p, sub_config(&t), None)
        .await
        .expect("push turned off");
    assert!(due(&fx, &p).await.is_empty(), "no endpoint, no resends");
}

/// A resend set for later is not due before its time on the broker's clock.
pub async fn a_resend_is_not_due_before_its_time(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.broker()
        .queue_resends(&s, vec![target(0, 1)])
        .await
        .expect("queued");
    fx.broker()
        .settle_resend(&s, 0, 1, Some(at(30_000)))
        .await
        .expect("settled");
    fx.advance_to(29_999).await;
    assert!(due(&fx, &s).await.is_empty(), "a millisecond early");
    fx.advance_to(30_000).await;
    assert_eq!(due(&fx, &s).await.len(), 1, "due at its time");
}
