//! What survives close and reopen, what close does, and the errors of create and lookup calls.

use std::time::Duration;

use super::support::*;
use jiff::Timestamp;

use crate::{
    Backoff, BrokerError, Created, EndpointState, PushConfig, PushFormat, PushSecret, Retention,
    RetentionPolicy, Settle, StartPosition, SubscriptionConfig, SubscriptionName, TopicConfig,
    TopicName,
};

/// Published messages survive a restart unchanged, and offsets go on after them.
pub async fn messages_survive_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let sent = vec![
        message("a").with_key("k").with_attr("x", "1"),
        message(r#"{"b": 2}"#).json(),
        message("c"),
    ];
    let results = fx.publish(&t, sent.clone()).await;
    fx.restart().await;
    let mut got = fx.pull_all(&s).await;
    got.sort_by_key(|d| d.message.offset);
    assert_eq!(got.len(), 3);
    for ((d, m), r) in got.iter().zip(&sent).zip(&results) {
        assert_eq!(d.message.id, r.id);
        assert_eq!(Some(d.message.offset), r.offset);
        assert_eq!(
            (
                &d.message.key,
                &d.message.attributes,
                &d.message.data,
                d.message.encoding
            ),
            (&m.key, &m.attributes, &m.data, m.encoding)
        );
        assert_eq!(d.message.publish_time, at(0));
    }
    let more = fx.publish(&t, vec![message("d")]).await;
    assert_eq!(more[0].offset, Some(3));
}

/// Acks survive a restart; unacked messages, leased before it, come back (at the latest once
/// their lease and the largest backoff have passed); acked ones never do.
pub async fn acks_survive_restart_and_leases_come_back(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 2).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let batch = ["m0", "m1", "m2", "m3"].into_iter().map(message).collect();
    fx.publish(&t, batch).await;
    let got = fx.pull_all(&s).await;
    assert_eq!(got.len(), 4);
    fx.ack(&s, &ack_ids([find(&got, "m0"), find(&got, "m2")]))
        .await;
    fx.restart().await;
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(sorted_texts(&again), ["m1", "m3"]);
    fx.ack(&s, &ack_ids(&again)).await;
    fx.restart().await;
    fx.advance_to(10 * (ACK_DEADLINE_MS + BACKOFF.max_ms as i64))
        .await;
    assert!(fx.pull_all(&s).await.is_empty());
}

/// A nack survives a restart with its delay and the attempt it ended: the message is not back
/// before the delay, then comes with attempt 2.
pub async fn nack_survives_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull_all(&s).await;
    fx.nack(&s, &ack_ids(&got), Some(Duration::from_secs(5)))
        .await;
    fx.restart().await;
    assert!(fx.pull_all(&s).await.is_empty(), "the nack delay holds");
    fx.advance_to(4_999).await;
    assert!(fx.pull_all(&s).await.is_empty(), "the nack delay holds");
    fx.advance_to(5_000).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(texts(&again), ["a"]);
    assert_eq!(again[0].attempt, 2, "the nacked attempt was remembered");
}

/// Delivery counts of nacks survive a restart (so `max_deliveries` holds across restarts), and so
/// does dead-lettering: a dead letter is published once and the message never returns.
pub async fn dead_lettering_survives_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let dead = fx.topic("t.dead", 1).await;
    let inspect = fx.subscribe("inspect", sub_config(&dead)).await;
    let config = SubscriptionConfig {
        max_deliveries: Some(2),
        dead_letter_topic: Some(dead.clone()),
        ..sub_config(&t)
    };
    let s = fx.subscribe("s", config).await;
    fx.publish(&t, vec![message("poison")]).await;
    let first = fx.pull_all(&s).await;
    fx.nack(&s, &ack_ids(&first), Some(Duration::ZERO)).await;
    fx.restart().await;
    let second = fx.pull_all(&s).await;
    assert_eq!(texts(&second), ["poison"]);
    assert_eq!(second[0].attempt, 2, "the first nack was remembered");
    fx.nack(&s, &ack_ids(&second), Some(Duration::ZERO)).await;
    settle_background().await;
    fx.restart().await;
    fx.advance_to(100_000).await;
    assert!(fx.pull_all(&s).await.is_empty(), "dead-lettered for good");
    let letters = fx.pull_eventually(&inspect, 1).await;
    assert_eq!(texts(&letters), ["poison"]);
    fx.ack(&inspect, &ack_ids(&letters)).await;
    fx.advance_to(200_000).await;
    assert!(fx.pull_all(&inspect).await.is_empty(), "published once");
}

fn full_topic_config() -> TopicConfig {
    TopicConfig {
        partitions: 3,
        retention: Retention {
            max_age_ms: Some(86_400_000),
            max_bytes: Some(1 << 30),
            policy: RetentionPolicy::Limits,
        },
        dedup_window_ms: 30_000,
    }
}

fn full_sub_config(topic: &TopicName, dead: &TopicName) -> SubscriptionConfig {
    SubscriptionConfig {
        topic: topic.clone(),
        ack_deadline_ms: 15_000,
        backoff: Backoff {
            initial_ms: 250,
            max_ms: 60_000,
            multiplier: 3.5,
        },
        max_deliveries: Some(7),
        dead_letter_topic: Some(dead.clone()),
        ordered: true,
        filter: None,
        push: Some(full_push_config()),
    }
}

fn full_push_config() -> PushConfig {
    let rotated_out = Timestamp::from_second(2_000_000_000).expect("a valid time");
    PushConfig {
        url: "https://hooks.example.com/opal?tenant=7".into(),
        secrets: vec![
            PushSecret {
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                expires_at: None,
            },
            PushSecret {
                secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
                expires_at: Some(rotated_out),
            },
        ],
        timeout_ms: 5_000,
        max_in_flight: 3,
        rate_limit_per_s: Some(40),
        format: PushFormat::Raw,
        headers: [("x-team".to_owned(), "payments".to_owned())].into(),
        retry_schedule_ms: vec![0, 1_000, 60_000],
        validate: true,
        state: EndpointState::Disabled {
            at: rotated_out,
            reason: "410 Gone".into(),
        },
        url_attribute: Some("opal.callback.url".into()),
    }
}

/// Topics and subscriptions keep every setting and their creation time (read from the clock)
/// across a restart; creating them again with the same settings finds them (`Existing`).
pub async fn settings_survive_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    fx.advance_to(1_000).await;
    let t = fx.topic_with("t", full_topic_config()).await;
    let dead = fx.topic("t.dead", 1).await;
    fx.advance_to(2_000).await;
    let s = fx.subscribe("s", full_sub_config(&t, &dead)).await;
    fx.advance_to(3_000).await;
    fx.restart().await;

    let (topic, stats) = fx.broker().get_topic(&t).await.expect("get_topic");
    assert_eq!(
        (&topic.name, &topic.config, topic.created_at),
        (&t, &full_topic_config(), at(1_000))
    );
    assert_eq!(stats.partitions.len(), 3);
    let (sub, _) = fx
        .broker()
        .get_subscription(&s)
        .await
        .expect("get_subscription");
    assert_eq!(
        (&sub.name, &sub.config, sub.created_at),
        (&s, &full_sub_config(&t, &dead), at(2_000))
    );

    let (again, created) = fx
        .broker()
        .create_topic(&t, full_topic_config())
        .await
        .expect("create_topic");
    assert_eq!((again, created), (topic, Created::Existing));
    let (again, created) = fx
        .broker()
        .create_subscription(&s, full_sub_config(&t, &dead), StartPosition::Latest)
        .await
        .expect("create_subscription");
    assert_eq!((again, created), (sub, Created::Existing));
}

/// Create is idempotent with the same settings (whatever `start` says: it does not move an
/// existing subscription) and a `Conflict` naming the resource with different ones, which
/// changes nothing.
pub async fn create_finds_existing_and_conflicts_on_other_settings(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 2).await;
    let config = TopicConfig {
        partitions: 2,
        ..TopicConfig::default()
    };
    let (_, created) = fx
        .broker()
        .create_topic(&t, config.clone())
        .await
        .expect("create");
    assert_eq!(created, Created::Existing);
    let other = TopicConfig {
        partitions: 3,
        ..config.clone()
    };
    match fx.broker().create_topic(&t, other).await {
        Err(BrokerError::Conflict { kind, name }) => {
            assert_eq!((kind, name.as_str()), ("topic", "t"))
        }
        other => panic!("expected a topic Conflict, got {other:?}"),
    }
    let (topic, _) = fx.broker().get_topic(&t).await.expect("get_topic");
    assert_eq!(topic.config, config, "the conflict changed nothing");

    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull_all(&s).await;
    fx.ack(&s, &ack_ids(&got)).await;
    let (_, created) = fx
        .broker()
        .create_subscription(&s, sub_config(&t), StartPosition::Earliest)
        .await
        .expect("create_subscription");
    assert_eq!(created, Created::Existing);
    assert!(fx.pull_all(&s).await.is_empty(), "start did not move it");
    let other = SubscriptionConfig {
        ack_deadline_ms: 20_000,
        ..sub_config(&t)
    };
    match fx
        .broker()
        .create_subscription(&s, other, StartPosition::Earliest)
        .await
    {
        Err(BrokerError::Conflict { kind, name }) => {
            assert_eq!((kind, name.as_str()), ("subscription", "s"))
        }
        other => panic!("expected a subscription Conflict, got {other:?}"),
    }
    let (sub, _) = fx.broker().get_subscription(&s).await.expect("get");
    assert_eq!(sub.config, sub_config(&t), "the conflict changed nothing");
}

/// Subscription settings outside the rules are refused with `Invalid`, and nothing is created.
pub async fn invalid_subscription_settings_are_refused(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let dead = fx.topic("t.dead", 1).await;
    let name = SubscriptionName::new("s").expect("valid");
    let base = sub_config(&t);
    let bad = [
        SubscriptionConfig {
            ack_deadline_ms: SubscriptionConfig::MIN_ACK_DEADLINE_MS - 1,
            ..base.clone()
        },
        SubscriptionConfig {
            ack_deadline_ms: crate::Limits::default().max_ack_deadline_ms + 1,
            ..base.clone()
        },
        SubscriptionConfig {
            backoff: Backoff {
                multiplier: 0.5,
                ..BACKOFF
            },
            ..base.clone()
        },
        SubscriptionConfig {
            backoff: Backoff {
                initial_ms: 10_000,
                max_ms: 1_000,
                multiplier: 2.0,
            },
            ..base.clone()
        },
        SubscriptionConfig {
            max_deliveries: Some(0),
            ..base.clone()
        },
        SubscriptionConfig {
            dead_letter_topic: Some(dead.clone()),
            ..base.clone()
        },
        SubscriptionConfig {
            max_deliveries: Some(3),
            dead_letter_topic: Some(t.clone()),
            ..base.clone()
        },
    ];
    for config in bad {
        let what = format!("{config:?}");
        assert_invalid(
            fx.broker()
                .create_subscription(&name, config, StartPosition::Earliest)
                .await,
            &what,
        );
    }
    assert!(matches!(
        fx.broker().get_subscription(&name).await,
        Err(BrokerError::SubscriptionNotFound(_))
    ));
}

/// Calls on a missing topic are `TopicNotFound`, on a missing subscription
/// `SubscriptionNotFound`, each naming what is missing. (Settle is given a well-formed ack id of
/// another subscription, since an empty list is invalid input on its own.)
pub async fn missing_resources_are_not_found(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let real = fx.topic("t", 1).await;
    let real_sub = fx.subscribe("s", sub_config(&real)).await;
    fx.publish(&real, vec![message("a")]).await;
    let real_ids = ack_ids(&fx.pull_all(&real_sub).await);
    assert_eq!(real_ids.len(), 1);
    let broker = fx.broker();
    let topic = TopicName::new("no-topic").expect("valid");
    let sub = SubscriptionName::new("no-sub").expect("valid");
    let topic_missing = |r: Result<(), BrokerError>, what: &str| match r {
        Err(BrokerError::TopicNotFound(name)) => assert_eq!(name, "no-topic", "{what}"),
        other => panic!("{what}: expected TopicNotFound, got {other:?}"),
    };
    topic_missing(broker.get_topic(&topic).await.map(drop), "get_topic");
    topic_missing(
        broker.publish(&topic, vec![message("a")]).await.map(drop),
        "publish",
    );
    topic_missing(
        broker
            .create_subscription(&sub, sub_config(&topic), StartPosition::Earliest)
            .await
            .map(drop),
        "create_subscription",
    );
    let sub_missing = |r: Result<(), BrokerError>, what: &str| match r {
        Err(BrokerError::SubscriptionNotFound(name)) => assert_eq!(name, "no-sub", "{what}"),
        other => panic!("{what}: expected SubscriptionNotFound, got {other:?}"),
    };
    sub_missing(
        broker.get_subscription(&sub).await.map(drop),
        "get_subscription",
    );
    sub_missing(
        broker.pull(&sub, 10, Duration::ZERO).await.map(drop),
        "pull",
    );
    sub_missing(
        broker.settle(&sub, &real_ids, Settle::Ack).await.map(drop),
        "settle",
    );
    sub_missing(broker.seek(&sub, StartPosition::Latest).await, "seek");
}

/// Closing answers a waiting pull at once (with an empty list, or `ShuttingDown`), refuses
/// further writes with `ShuttingDown`, and the backend is no longer ready.
pub async fn close_wakes_pulls_and_refuses_writes(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    assert!(fx.broker().is_ready());
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(20));
    settle_background().await;
    assert!(!pending.is_finished());
    fx.broker().close().await.expect("close");
    match pending.finish_result().await {
        Ok(deliveries) => assert!(deliveries.is_empty()),
        Err(BrokerError::ShuttingDown) => {}
        Err(other) => panic!("a waiting pull at close: {other:?}"),
    }
    assert!(!fx.broker().is_ready());
    assert!(matches!(
        fx.broker().publish(&t, vec![message("a")]).await,
        Err(BrokerError::ShuttingDown)
    ));
}

/// The admin key hash is stored durably.
pub async fn admin_key_hash_survives_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    assert_eq!(fx.broker().admin_key_hash().await.expect("read"), None);
    let hash = [7u8; 32];
    fx.broker().set_admin_key_hash(hash).await.expect("store");
    assert_eq!(
        fx.broker().admin_key_hash().await.expect("read"),
        Some(hash)
    );
    fx.restart().await;
    assert_eq!(
        fx.broker().admin_key_hash().await.expect("read"),
        Some(hash)
    );
}
