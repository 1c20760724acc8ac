//! Tasks are kept for the configured time after their last change, then forgotten.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opal_core::task::ack_with_results;
use opal_core::{
    Broker, Callback, Clock, DataEncoding, NewMessage, StartPosition, SubscriptionConfig,
    SubscriptionName, TaskResult, TaskState, TopicConfig, TopicName,
};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};

#[tokio::test]
async fn a_task_is_forgotten_after_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual("2026-11-27T12:00:00Z".parse().unwrap());
    let mut config = EmbeddedConfig::new(dir.path());
    config.clock = clock.clone();
    config.task_ttl_ms = 60_000;
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(config).unwrap());
    let jobs = TopicName::new("acme/jobs").unwrap();
    let replies = TopicName::new("acme/replies").unwrap();
    for t in [&jobs, &replies] {
        broker
            .create_topic(t, TopicConfig::default())
            .await
            .unwrap();
    }
    let workers = SubscriptionName::new("acme/workers").unwrap();
    broker
        .create_subscription(
            &workers,
            SubscriptionConfig::new(jobs.clone()),
            StartPosition::Earliest,
        )
        .await
        .unwrap();
    let message = NewMessage {
        key: None,
        attributes: Default::default(),
        data: Bytes::from_static(b"work"),
        encoding: DataEncoding::Binary,
        dedup_id: None,
        deliver_at: None,
        callback: Some(Callback::Topic(replies)),
    };
    let id = broker.publish(&jobs, vec![message]).await.unwrap()[0].id;
    let d = broker.pull(&workers, 1, Duration::ZERO).await.unwrap();
    // Within the lease (30 s by default).
    clock.advance(Duration::from_secs(10));
    ack_with_results(
        broker.as_ref(),
        &workers,
        &[d[0].ack_id.clone()],
        vec![(d[0].ack_id.clone(), TaskResult::Error("no".into()))],
        clock.now(),
    )
    .await
    .unwrap();
    let task = broker.get_task(id).await.unwrap().expect("kept");
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(
        task.expires_at.as_millisecond() - task.updated_at.as_millisecond(),
        60_000,
        "kept for the retention after its last change"
    );
    clock.advance(Duration::from_secs(59));
    assert!(broker.get_task(id).await.unwrap().is_some(), "not before");
    clock.advance(Duration::from_secs(2));
    assert!(
        broker.get_task(id).await.unwrap().is_none(),
        "forgotten after"
    );
}
