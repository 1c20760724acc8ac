//! Encryption at rest in the embedded backend: key rotation keeps delayed messages, retries
//! (with their ordering keys) and dedup ids working, and keys that do not fit the data stop the
//! open with a reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{
    Broker, Clock, DataEncoding, NewMessage, Settle, StartPosition, SubscriptionConfig,
    SubscriptionName, TopicConfig, TopicName,
};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};
use opal_log::{Keyring, Zeroizing};

fn ring(keys: &[(u16, u8)], current: u16) -> Keyring {
    Keyring::new(
        keys.iter()
            .map(|&(id, fill)| (id, Zeroizing::new([fill; 32]))),
        current,
    )
    .unwrap()
}

fn open(dir: &Path, clock: &Clock, keys: Option<Keyring>) -> Result<EmbeddedBroker, String> {
    let mut config = EmbeddedConfig::new(dir);
    config.clock = clock.clone();
    config.encryption = keys;
    EmbeddedBroker::open(config).map_err(|e| e.to_string())
}

fn message(data: &str, key: &str, dedup_id: Option<&str>, at: Option<Timestamp>) -> NewMessage {
    NewMessage {
        key: Some(key.to_owned()),
        attributes: BTreeMap::from([("kind".to_owned(), data.to_owned())]),
        data: Bytes::copy_from_slice(data.as_bytes()),
        encoding: DataEncoding::Binary,
        dedup_id: dedup_id.map(str::to_owned),
        deliver_at: at,
        callback: None,
    }
}

fn names() -> (TopicName, SubscriptionName) {
    (
        TopicName::new("orders").unwrap(),
        SubscriptionName::new("billing").unwrap(),
    )
}

#[tokio::test]
async fn rotation_keeps_delayed_messages_retries_and_dedup_ids_working() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(Timestamp::from_second(1_800_000_000).unwrap());
    let (topic, sub) = names();

    // Under key 1: a message with a dedup id that is nacked (a retry with its ordering key is
    // stored), and a delayed message.
    let broker = open(dir.path(), &clock, Some(ring(&[(1, 1)], 1))).unwrap();
    let config = TopicConfig {
        dedup_window_ms: 24 * 3600 * 1000,
        ..TopicConfig::default()
    };
    broker.create_topic(&topic, config).await.unwrap();
    let sub_config = SubscriptionConfig {
        ordered: true,
        ..SubscriptionConfig::new(topic.clone())
    };
    broker
        .create_subscription(&sub, sub_config, StartPosition::Earliest)
        .await
        .unwrap();
    let later = Timestamp::from_second(1_800_003_600).unwrap();
    let first = broker
        .publish(
            &topic,
            vec![
                message("now", "order-7", Some("dedup-A"), None),
                message("later", "order-8", None, Some(later)),
            ],
        )
        .await
        .unwrap();
    let pulled = broker.pull(&sub, 10, Duration::ZERO).await.unwrap();
    assert_eq!(pulled.len(), 1);
    let nack = Settle::Nack {
        delay: Some(Duration::from_secs(60)),
    };
    broker
        .settle(&sub, &[pulled[0].ack_id.clone()], nack)
        .await
        .unwrap();
    broker.close().await.unwrap();

    // Rotated: key 2 is current, key 1 still opens what it sealed.
    let rotated = || Some(ring(&[(1, 1), (2, 2)], 2));
    let broker = open(dir.path(), &clock, rotated()).unwrap();
    let repeat = broker
        .publish(
            &topic,
            vec![message("now", "order-7", Some("dedup-A"), None)],
        )
        .await
        .unwrap();
    assert!(repeat[0].duplicate, "{repeat:?}");
    assert_eq!(repeat[0].offset, first[0].offset);
    clock.advance(Duration::from_secs(61));
    let retried = broker.pull(&sub, 10, Duration::ZERO).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempt, 2);
    assert_eq!(retried[0].message.key.as_deref(), Some("order-7"));
    broker
        .settle(&sub, &[retried[0].ack_id.clone()], Settle::Ack)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    let due = broker.pull(&sub, 10, Duration::ZERO).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(&due[0].message.data[..], b"later");
    assert_eq!(due[0].message.attributes["kind"], "later");
    broker
        .publish(&topic, vec![message("b", "order-9", Some("dedup-B"), None)])
        .await
        .unwrap();
    broker.close().await.unwrap();

    // Keys that do not fit the data stop the open, whatever else they hold.
    for (keys, reason) in [
        (Some(ring(&[(2, 2)], 2)), "key ids [1]"),
        (
            Some(ring(&[(1, 1), (2, 9)], 2)),
            "key id 2 in the key file is not the key",
        ),
        (None, "no encryption keys were given"),
    ] {
        let err = open(dir.path(), &clock, keys).unwrap_err();
        assert!(err.contains(reason), "{err}");
    }

    // With the right keys, both dedup ids are still known, whichever key tagged them.
    let broker = open(dir.path(), &clock, rotated()).unwrap();
    for id in ["dedup-A", "dedup-B"] {
        let repeat = broker
            .publish(&topic, vec![message("x", "order-7", Some(id), None)])
            .await
            .unwrap();
        assert!(repeat[0].duplicate, "{id}: {repeat:?}");
    }
    broker.close().await.unwrap();
}

#[tokio::test]
async fn plaintext_data_stays_readable_when_encryption_is_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(Timestamp::from_second(1_800_000_000).unwrap());
    let (topic, sub) = names();
    let broker = open(dir.path(), &clock, None).unwrap();
    broker
        .create_topic(&topic, TopicConfig::default())
        .await
        .unwrap();
    broker
        .create_subscription(
            &sub,
            SubscriptionConfig::new(topic.clone()),
            StartPosition::Earliest,
        )
        .await
        .unwrap();
    let later = Timestamp::from_second(1_800_000_100).unwrap();
    broker
        .publish(
            &topic,
            vec![
                message("plain-now", "k", Some("dedup-P"), None),
                message("plain-later", "k", None, Some(later)),
            ],
        )
        .await
        .unwrap();
    broker.close().await.unwrap();

    let broker = open(dir.path(), &clock, Some(ring(&[(1, 1)], 1))).unwrap();
    let repeat = broker
        .publish(
            &topic,
            vec![message("plain-now", "k", Some("dedup-P"), None)],
        )
        .await
        .unwrap();
    assert!(
        repeat[0].duplicate,
        "a plaintext dedup entry is still found"
    );
    broker
        .publish(&topic, vec![message("sealed-now", "k", None, None)])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(100));
    let mut seen = Vec::new();
    for _ in 0..3 {
        for delivery in broker.pull(&sub, 10, Duration::ZERO).await.unwrap() {
            seen.push(String::from_utf8(delivery.message.data.to_vec()).unwrap());
        }
    }
    seen.sort();
    assert_eq!(seen, ["plain-later", "plain-now", "sealed-now"]);
    broker.close().await.unwrap();
    // Once a key wrote here, opening without keys is refused.
    let err = open(dir.path(), &clock, None).unwrap_err();
    assert!(err.contains("key ids [1]"), "{err}");
}
