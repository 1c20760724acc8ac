//! The push attempt log: what the dispatcher records and the API lists.

use uuid::Uuid;

use super::support::*;
use crate::{AttemptQuery, AttemptStatus, BrokerError, PushAttempt, SubscriptionName};

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
