//! The embedded backend through the `Broker` trait: publish, pull, ack, redelivery and reopen.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use opal_core::{
    AckId, Broker, BrokerError, Created, DataEncoding, NewMessage, Settle, StartPosition,
    SubscriptionConfig, SubscriptionName, TopicConfig, TopicName,
};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};

fn message(i: usize, key: Option<&str>) -> NewMessage {
    NewMessage {
        key: key.map(str::to_owned),
        attributes: BTreeMap::from([("i".to_owned(), i.to_string())]),
        data: Bytes::from(format!("payload-{i}")),
        encoding: DataEncoding::Binary,
        dedup_id: None,
        deliver_at: None,
        callback: None,
    }
}

async fn setup(dir: &std::path::Path, partitions: u32, ack_deadline_ms: u64) -> EmbeddedBroker {
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir)).unwrap();
    let topic = TopicName::new("t").unwrap();
    broker
        .create_topic(
            &topic,
            TopicConfig {
                partitions,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    let config = SubscriptionConfig {
        ack_deadline_ms,
        ..SubscriptionConfig::new(topic)
    };
    broker
        .create_subscription(&sub(), config, StartPosition::Earliest)
        .await
        .unwrap();
    broker
}

fn sub() -> SubscriptionName {
    SubscriptionName::new("s").unwrap()
}

fn topic() -> TopicName {
    TopicName::new("t").unwrap()
}

#[tokio::test]
async fn keyed_messages_keep_their_partition_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), 4, 30_000).await;
    let batch: Vec<_> = (0..40)
        .map(|i| message(i, Some(&format!("k{}", i % 3))))
        .collect();
    let results = broker.publish(&topic(), batch).await.unwrap();
    assert_eq!(results.len(), 40);
    for (i, r) in results.iter().enumerate() {
        let same_key = &results[i % 3];
        assert_eq!(r.partition, same_key.partition, "one key, one partition");
    }
    let deliveries = broker.pull(&sub(), 100, Duration::ZERO).await.unwrap();
    assert_eq!(deliveries.len(), 40);
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    for d in &deliveries {
        let m = &d.message;
        if let Some(prev) = last_offset.insert(m.partition, m.offset) {
            assert!(m.offset > prev, "offsets increase within a partition");
        }
        let i: usize = m.attributes["i"].parse().unwrap();
        assert_eq!(m.data, Bytes::from(format!("payload-{i}")));
        assert_eq!(m.id, results[i].id);
        assert_eq!(d.attempt, 1);
    }
}

#[tokio::test]
async fn unacked_messages_come_back_after_the_deadline_with_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), 1, 100).await;
    broker
        .publish(&topic(), vec![message(0, None), message(1, None)])
        .await
        .unwrap();
    let first = broker.pull(&sub(), 10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 2);
    let acked = broker
        .settle(&sub(), &[first[0].ack_id.clone()], Settle::Ack)
        .await
        .unwrap();
    assert_eq!((acked.applied, acked.rejected.len()), (1, 0));

    assert!(
        broker
            .pull(&sub(), 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    // Long-poll across the deadline: the redelivery wakes the pull.
    let again = broker
        .pull(&sub(), 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.offset, 1);
    assert_eq!(again[0].attempt, 2);

    // The first lease's receipt no longer acks anything.
    let stale = broker
        .settle(&sub(), &[first[1].ack_id.clone()], Settle::Ack)
        .await
        .unwrap();
    assert_eq!((stale.applied, stale.rejected.len()), (0, 1));
    let fresh = broker
        .settle(&sub(), &[again[0].ack_id.clone()], Settle::Ack)
        .await
        .unwrap();
    assert_eq!(fresh.applied, 1);
}

#[tokio::test]
async fn long_poll_wakes_on_publish() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), 1, 30_000).await;
    let waiter = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.pull(&sub(), 10, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    broker
        .publish(&topic(), vec![message(7, None)])
        .await
        .unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke by the publish, not the timeout"
    );
}

#[tokio::test]
async fn acks_survive_reopen_and_unacked_messages_return() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = setup(dir.path(), 2, 30_000).await;
        broker
            .publish(&topic(), (0..20).map(|i| message(i, None)).collect())
            .await
            .unwrap();
        let deliveries = broker.pull(&sub(), 20, Duration::ZERO).await.unwrap();
        let odd: Vec<AckId> = deliveries
            .iter()
            .filter(|d| d.message.attributes["i"].parse::<usize>().unwrap() % 2 == 1)
            .map(|d| d.ack_id.clone())
            .collect();
        assert_eq!(
            broker
                .settle(&sub(), &odd, Settle::Ack)
                .await
                .unwrap()
                .applied,
            10
        );
        broker.close().await.unwrap();
    }
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    let mut back: Vec<usize> = broker
        .pull(&sub(), 100, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|d| d.message.attributes["i"].parse().unwrap())
        .collect();
    back.sort_unstable();
    assert_eq!(back, (0..20).filter(|i| i % 2 == 0).collect::<Vec<_>>());
    let (_, created) = broker
        .create_topic(
            &topic(),
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created, Created::Existing);
}

#[tokio::test]
async fn invalid_input_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), 1, 30_000).await;
    let mut bad = message(1, None);
    bad.attributes.insert("bad name".into(), "x".into());
    let err = broker
        .publish(&topic(), vec![message(0, None), bad])
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Invalid { .. }), "{err}");
    assert!(
        broker
            .pull(&sub(), 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    let err = broker
        .settle(&sub(), &[AckId("nonsense".into())], Settle::Ack)
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Invalid { .. }), "{err}");
    let err = broker
        .create_topic(
            &topic(),
            TopicConfig {
                partitions: 3,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Conflict { .. }), "{err}");
    let missing = SubscriptionConfig::new(TopicName::new("nope").unwrap());
    let err = broker
        .create_subscription(
            &SubscriptionName::new("x").unwrap(),
            missing,
            StartPosition::Earliest,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::TopicNotFound(_)), "{err}");
}
