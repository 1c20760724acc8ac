//! Retention on the embedded backend: whole segments go by age, size or (policy `acked`) once
//! every subscription is past them; what a subscription lost counts as expired.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{
    Broker, Clock, DataEncoding, NewMessage, Retention, RetentionPolicy, Settle, StartPosition,
    SubscriptionConfig, SubscriptionName, TopicConfig, TopicName,
};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};

const PAYLOAD: usize = 1000;

fn open(dir: &std::path::Path, clock: &Clock) -> EmbeddedBroker {
    let mut config = EmbeddedConfig::new(dir);
    config.clock = clock.clone();
    // Small segments, so a few dozen messages make several of them.
    config.segment_max_bytes = 4096;
    EmbeddedBroker::open(config).unwrap()
}

fn message() -> NewMessage {
    NewMessage {
        key: None,
        attributes: BTreeMap::new(),
        data: Bytes::from(vec![7u8; PAYLOAD]),
        encoding: DataEncoding::Binary,
        dedup_id: None,
        deliver_at: None,
        callback: None,
    }
}

async fn publish(broker: &EmbeddedBroker, topic: &TopicName, n: usize) {
    for _ in 0..n {
        broker.publish(topic, vec![message()]).await.unwrap();
    }
}

async fn start_offset(broker: &EmbeddedBroker, topic: &TopicName) -> u64 {
    broker.get_topic(topic).await.unwrap().1.partitions[0].start_offset
}

/// Retention runs every 30 s of the broker's clock; move past it and let the scheduler work.
async fn run_retention(clock: &Clock, broker: &EmbeddedBroker, topic: &TopicName) -> u64 {
    let before = start_offset(broker, topic).await;
    clock.advance(Duration::from_secs(31));
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = start_offset(broker, topic).await;
        if now != before {
            return now;
        }
    }
    before
}

#[tokio::test]
async fn limits_by_bytes_drop_old_segments_and_count_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(Timestamp::from_second(1_700_000_000).unwrap());
    let broker = open(dir.path(), &clock);
    let topic = TopicName::new("t").unwrap();
    let retention = Retention {
        max_bytes: Some(8192),
        ..Retention::default()
    };
    broker
        .create_topic(
            &topic,
            TopicConfig {
                retention,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    let sub = SubscriptionName::new("s").unwrap();
    broker
        .create_subscription(
            &sub,
            SubscriptionConfig::new(topic.clone()),
            StartPosition::Earliest,
        )
        .await
        .unwrap();
    publish(&broker, &topic, 40).await;

    let start = run_retention(&clock, &broker, &topic).await;
    assert!(start > 0, "old segments were deleted");
    let (_, stats) = broker.get_topic(&topic).await.unwrap();
    assert!(stats.partitions[0].bytes <= 8192 + 4096, "{stats:?}");

    let delivered = broker.pull(&sub, 1000, Duration::ZERO).await.unwrap();
    assert_eq!(delivered.first().map(|d| d.message.offset), Some(start));
    assert_eq!(delivered.len() as u64, 40 - start);
    let (_, stats) = broker.get_subscription(&sub).await.unwrap();
    assert_eq!(
        stats.expired, start,
        "what the subscription never got counts as expired"
    );
}

#[tokio::test]
async fn acked_policy_keeps_segments_until_every_subscription_is_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(Timestamp::from_second(1_700_000_000).unwrap());
    let broker = open(dir.path(), &clock);
    let topic = TopicName::new("t").unwrap();
    let retention = Retention {
        policy: RetentionPolicy::Acked,
        ..Retention::default()
    };
    broker
        .create_topic(
            &topic,
            TopicConfig {
                retention,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    let (fast, slow) = (
        SubscriptionName::new("fast").unwrap(),
        SubscriptionName::new("slow").unwrap(),
    );
    for sub in [&fast, &slow] {
        broker
            .create_subscription(
                sub,
                SubscriptionConfig::new(topic.clone()),
                StartPosition::Earliest,
            )
            .await
            .unwrap();
    }
    publish(&broker, &topic, 40).await;

    let acks: Vec<_> = broker
        .pull(&fast, 1000, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.ack_id)
        .collect();
    broker.settle(&fast, &acks, Settle::Ack).await.unwrap();
    assert_eq!(
        run_retention(&clock, &broker, &topic).await,
        0,
        "slow has acked nothing yet"
    );

    let slow_deliveries = broker.pull(&slow, 20, Duration::ZERO).await.unwrap();
    let acks: Vec<_> = slow_deliveries.into_iter().map(|d| d.ack_id).collect();
    broker.settle(&slow, &acks, Settle::Ack).await.unwrap();
    let start = run_retention(&clock, &broker, &topic).await;
    assert!(
        start > 0 && start <= 20,
        "only segments both are past go: start {start}"
    );

    let rest = broker.pull(&slow, 1000, Duration::ZERO).await.unwrap();
    assert_eq!(rest.len(), 20, "nothing slow had not acked was deleted");
    let (_, stats) = broker.get_subscription(&slow).await.unwrap();
    assert_eq!(stats.expired, 0);
}
