//! Dead letters: giving up after `max_deliveries`, the dead-letter topic, and redrive.

use std::collections::BTreeMap;
use std::time::Duration;

use super::support::*;
use crate::dead_letter::{ATTEMPTS, ORIGINAL_ID, REASON, SOURCE_SUBSCRIPTION, SOURCE_TOPIC};
use crate::{
    BrokerError, Delivery, Message, NewMessage, SubscriptionConfig, SubscriptionName, TopicName,
};

struct Setup {
    source: TopicName,
    sub: SubscriptionName,
    dead: TopicName,
    inspect: SubscriptionName,
}

/// Topic `t`, dead-letter topic `t.dead` with subscription `t.dead.inspect`, and subscription
/// `s` on `t` giving up after `max_deliveries`.
async fn setup(fx: &Fixture<'_>, max_deliveries: u32) -> Setup {
    let source = fx.topic("t", 1).await;
    let dead = fx.topic("t.dead", 1).await;
    let inspect = fx.subscribe("t.dead.inspect", sub_config(&dead)).await;
    let config = SubscriptionConfig {
        max_deliveries: Some(max_deliveries),
        dead_letter_topic: Some(dead.clone()),
        ..sub_config(&source)
    };
    let sub = fx.subscribe("s", config).await;
    Setup {
        source,
        sub,
        dead,
        inspect,
    }
}

fn poison() -> crate::NewMessage {
    message(r#"{"poison": true}"#)
        .json()
        .with_key("k")
        .with_attr("kind", "created")
}

/// The dead letter carries the original data, key, encoding and attributes plus exactly the
/// five `dead_letter.*` attributes with their documented values.
fn assert_dead_letter(letter: &Delivery, original: &Message, setup: &Setup, attempts: u32) {
    let m = &letter.message;
    assert_eq!(m.topic, setup.dead);
    assert_eq!(m.data, original.data);
    assert_eq!(m.key, original.key);
    assert_eq!(m.encoding, original.encoding);
    let mut expected: BTreeMap<String, String> = original.attributes.clone();
    for (name, value) in [
        (SOURCE_TOPIC, setup.source.to_string()),
        (SOURCE_SUBSCRIPTION, setup.sub.to_string()),
        (ATTEMPTS, attempts.to_string()),
        (REASON, "max_deliveries".to_owned()),
        (ORIGINAL_ID, original.id.to_string()),
    ] {
        expected.insert(name.to_owned(), value);
    }
    assert_eq!(m.attributes, expected, "dead-letter attributes");
}

/// After the last allowed delivery's deadline passes, the message goes to the dead-letter topic
/// and is never delivered on the source subscription again (no extra attempt is made); the
/// subscription counts it in `dead_lettered` and no longer in its backlog.
pub async fn expired_last_delivery_is_dead_lettered(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let setup = setup(&fx, 2).await;
    fx.publish(&setup.source, vec![poison()]).await;
    let first = fx.pull_all(&setup.sub).await;
    assert_eq!(first.len(), 1);
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64)
        .await;
    let second = fx.pull_all(&setup.sub).await;
    assert_eq!(second.len(), 1, "the second delivery is allowed");
    assert_eq!(second[0].attempt, 2);
    let second_at = fx.now_ms();
    fx.advance_to(second_at + ACK_DEADLINE_MS + BACKOFF.max_ms as i64)
        .await;
    assert!(
        fx.pull_all(&setup.sub).await.is_empty(),
        "no third delivery after max_deliveries = 2"
    );
    let letters = fx.pull_eventually(&setup.inspect, 1).await;
    assert_eq!(letters.len(), 1, "exactly one dead letter");
    assert_dead_letter(&letters[0], &first[0].message, &setup, 2);

    fx.advance_to(fx.now_ms() + 100_000).await;
    assert!(fx.pull_all(&setup.sub).await.is_empty(), "gone for good");
    let stats = fx.sub_stats(&setup.sub).await;
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(
        (stats.backlog, stats.backlog_bytes, stats.in_flight),
        (0, 0, 0)
    );
}

/// A nack of the last allowed delivery dead-letters the message right away (without waiting for
/// a backoff or a pull of the source subscription).
pub async fn nack_of_last_delivery_dead_letters_at_once(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let setup = setup(&fx, 2).await;
    fx.publish(&setup.source, vec![poison()]).await;
    let first = fx.pull_all(&setup.sub).await;
    fx.nack(&setup.sub, &ack_ids(&first), Some(Duration::ZERO))
        .await;
    let second = fx.pull_all(&setup.sub).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    fx.nack(&setup.sub, &ack_ids(&second), None).await;

    let letters = fx.pull_eventually(&setup.inspect, 1).await;
    assert_eq!(letters.len(), 1, "dead-lettered by the nack");
    assert_dead_letter(&letters[0], &first[0].message, &setup, 2);
    fx.ack(&setup.inspect, &ack_ids(&letters)).await;
    fx.advance_to(100_000).await;
    assert!(fx.pull_all(&setup.sub).await.is_empty(), "gone for good");
    assert!(fx.pull_all(&setup.inspect).await.is_empty(), "only once");
    let stats = fx.sub_stats(&setup.sub).await;
    assert_eq!(
        (stats.nacked, stats.dead_lettered, stats.backlog),
        (2, 1, 0)
    );
}

/// Without a dead-letter topic, a message is dropped after `max_deliveries` and counted as
/// dead-lettered, whether its last delivery was nacked or its deadline passed.
pub async fn without_dead_letter_topic_the_message_is_dropped(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let config = SubscriptionConfig {
        max_deliveries: Some(1),
        ..sub_config(&t)
    };
    let s = fx.subscribe("s", config).await;
    fx.publish(&t, vec![message("poison"), message("fine")])
        .await;
    let got = fx.pull_all(&s).await;
    assert_eq!(got.len(), 2);
    fx.nack(&s, &ack_ids([find(&got, "poison")]), None).await;
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64).await;
    let again = fx.pull_all(&s).await;
    assert!(again.is_empty(), "neither comes back: {:?}", texts(&again));
    let stats = fx.sub_stats(&s).await;
    assert_eq!(stats.dead_lettered, 2, "both reached max_deliveries = 1");
    assert_eq!(stats.backlog, 0);
}

/// `redrive` moves dead letters back to their source topic without the `dead_letter.*`
/// attributes; the source subscription receives them again as fresh messages.
pub async fn redrive_moves_dead_letters_back(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let setup = setup(&fx, 1).await;
    fx.publish(&setup.source, vec![poison()]).await;
    let first = fx.pull_all(&setup.sub).await;
    fx.nack(&setup.sub, &ack_ids(&first), None).await;

    // The dead letter may be published by a background task: give it a bounded real time.
    let mut moved = 0;
    for _ in 0..100 {
        let outcome =
            crate::dead_letter::redrive(fx.broker().as_ref(), &setup.inspect, 10, &|_| true)
                .await
                .expect("redrive succeeded");
        moved += outcome.moved;
        if moved > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(moved, 1, "one dead letter moved");
    let back = fx.pull_eventually(&setup.sub, 1).await;
    assert_eq!(back.len(), 1, "the source subscription gets it again");
    let original = &first[0].message;
    let m = &back[0].message;
    assert_eq!(back[0].attempt, 1);
    assert_ne!(m.offset, original.offset, "published again");
    assert_eq!(
        (&m.data, &m.key, &m.attributes, m.encoding),
        (
            &original.data,
            &original.key,
            &original.attributes,
            original.encoding
        )
    );
    assert!(
        fx.pull_all(&setup.inspect).await.is_empty(),
        "acked on the dead-letter subscription"
    );
}

/// `redrive` moves nothing into a topic the caller may not publish to, and stops (rather than
/// spinning) when a pull brings only messages it cannot move.
pub async fn redrive_skips_what_it_may_not_move(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let setup = setup(&fx, 1).await;
    // A message on the dead-letter topic that claims to come from the source topic.
    let forged = NewMessage {
        attributes: [(SOURCE_TOPIC.to_owned(), setup.source.to_string())].into(),
        ..message("forged")
    };
    fx.publish(&setup.dead, vec![forged, message("plain")])
        .await;
    let outcome = bounded(
        "redrive",
        crate::dead_letter::redrive(fx.broker().as_ref(), &setup.inspect, 10, &|_| false),
    )
    .await
    .expect("redrive succeeded");
    assert_eq!((outcome.moved, outcome.skipped), (0, 2));
    assert!(
        fx.pull_all(&setup.sub).await.is_empty(),
        "nothing reached the source topic"
    );
    let left = fx.pull_eventually(&setup.inspect, 2).await;
    assert_eq!(
        left.len(),
        2,
        "both are still on the dead-letter subscription"
    );
}

/// Strict reading of the API's "404 the dead-letter topic does not exist": a subscription naming
/// a missing dead-letter topic is refused with `TopicNotFound`.
pub async fn dead_letter_topic_must_exist(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let config = SubscriptionConfig {
        max_deliveries: Some(3),
        dead_letter_topic: Some(TopicName::new("nowhere").expect("valid")),
        ..sub_config(&t)
    };
    let name = SubscriptionName::new("s").expect("valid");
    match fx
        .broker()
        .create_subscription(&name, config, Default::default())
        .await
    {
        Err(BrokerError::TopicNotFound(topic)) => assert_eq!(topic, "nowhere"),
        other => panic!("expected TopicNotFound(\"nowhere\"), got {other:?}"),
    }
    assert!(matches!(
        fx.broker().get_subscription(&name).await,
        Err(BrokerError::SubscriptionNotFound(_))
    ));
}
