//! Retention settings and what a topic's partitions report holding.
//!
//! Deletion itself is not tested here: backends enforce retention periodically and delete whole
//! segments, and the trait offers no way to roll a segment or run enforcement on demand, so a
//! trait-level test could not say when (or whether) anything must be gone. Backends test
//! deletion in their own suites; this suite checks the settings and the partition figures.

use std::collections::BTreeMap;

use super::support::*;
use crate::{BrokerError, Retention, RetentionPolicy, TopicConfig, TopicName, partition_for_key};

/// Each partition reports its index, `start_offset` 0, `end_offset` and `messages` equal to what
/// was published to it, and `bytes` at least the payload bytes stored there, growing with each
/// publish to it and unchanged by publishes to other partitions.
pub async fn partition_stats_follow_publishes(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 3).await;
    let empty = fx.topic_stats(&t).await;
    assert_eq!(empty.partitions.len(), 3);
    for (i, p) in empty.partitions.iter().enumerate() {
        assert_eq!(p.partition, i as u32);
        assert_eq!((p.start_offset, p.end_offset, p.messages), (0, 0, 0));
    }

    let keys: Vec<String> = (0..12).map(|i| format!("key-{i}")).collect();
    let batch = keys
        .iter()
        .map(|k| message(&format!("payload of {k}")).with_key(k))
        .collect();
    fx.publish(&t, batch).await;
    let mut count: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for k in &keys {
        let entry = count.entry(partition_for_key(k, 3)).or_default();
        entry.0 += 1;
        entry.1 += format!("payload of {k}").len() as u64;
    }
    let stats = fx.topic_stats(&t).await;
    for p in &stats.partitions {
        let (messages, payload) = count.get(&p.partition).copied().unwrap_or_default();
        assert_eq!(p.start_offset, 0, "partition {}", p.partition);
        assert_eq!(p.end_offset, messages, "partition {}", p.partition);
        assert_eq!(p.messages, messages, "partition {}", p.partition);
        assert!(
            p.bytes >= payload,
            "partition {}: {} bytes",
            p.partition,
            p.bytes
        );
    }

    let grown = partition_for_key("key-0", 3);
    fx.publish(&t, vec![message("more").with_key("key-0")])
        .await;
    let after = fx.topic_stats(&t).await;
    for (before, now) in stats.partitions.iter().zip(&after.partitions) {
        if now.partition == grown {
            assert_eq!(now.end_offset, before.end_offset + 1);
            assert_eq!(now.messages, before.messages + 1);
            assert!(now.bytes > before.bytes, "bytes grow with a publish");
        } else {
            assert_eq!(now, before, "other partitions are unchanged");
        }
    }
}

/// Topic settings outside the rules are refused with `Invalid`, and nothing is created.
pub async fn invalid_topic_settings_are_refused(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let name = TopicName::new("t").expect("valid");
    let limits = crate::Limits::default();
    let bad = [
        TopicConfig {
            partitions: 0,
            ..TopicConfig::default()
        },
        TopicConfig {
            partitions: limits.max_partitions + 1,
            ..TopicConfig::default()
        },
        TopicConfig {
            dedup_window_ms: limits.max_dedup_window_ms + 1,
            ..TopicConfig::default()
        },
        TopicConfig {
            retention: Retention {
                max_age_ms: Some(0),
                ..Retention::default()
            },
            ..TopicConfig::default()
        },
        TopicConfig {
            retention: Retention {
                max_bytes: Some(0),
                ..Retention::default()
            },
            ..TopicConfig::default()
        },
    ];
    for config in bad {
        let what = format!("{config:?}");
        assert_invalid(fx.broker().create_topic(&name, config).await, &what);
    }
    assert!(matches!(
        fx.broker().get_topic(&name).await,
        Err(BrokerError::TopicNotFound(_))
    ));
}

/// Retention settings, with either policy, (and the rest of a topic's settings) are accepted,
/// stored as given and returned by `get_topic`.
pub async fn retention_settings_are_stored(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    for (name, policy) in [
        ("limits", RetentionPolicy::Limits),
        ("acked", RetentionPolicy::Acked),
    ] {
        let config = TopicConfig {
            partitions: 2,
            retention: Retention {
                max_age_ms: Some(3_600_000),
                max_bytes: Some(1 << 30),
                policy,
            },
            dedup_window_ms: 0,
        };
        let t = TopicName::new(name).expect("valid");
        let (created, _) = fx
            .broker()
            .create_topic(&t, config.clone())
            .await
            .unwrap_or_else(|e| panic!("policy {policy:?} is accepted: {e}"));
        assert_eq!(created.config, config);
        let (topic, stats) = fx.broker().get_topic(&t).await.expect("get_topic");
        assert_eq!(topic.config, config);
        assert_eq!(topic.name, t);
        assert_eq!(stats.partitions.len(), 2);
    }
}
