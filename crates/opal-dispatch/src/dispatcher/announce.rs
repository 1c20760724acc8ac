//! Operational events: what the dispatcher did to an app's endpoints, published on the app's
//! `opal.events` topic (created on first use) so its owner can subscribe to it like any topic.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use opal_core::{
    AppName, Broker, BrokerError, Clock, DataEncoding, NewMessage, SubscriptionName, TopicConfig,
    TopicName,
};

/// The short name of every app's operational-events topic.
pub const EVENTS_TOPIC: &str = "opal.events";
/// `type` of the event published when an endpoint is disabled.
pub const ENDPOINT_DISABLED: &str = "opal.push.endpoint.disabled";

#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    broker: Arc<dyn Broker>,
    clock: Clock,
}

impl Announcer {
    pub(crate) fn new(broker: Arc<dyn Broker>, clock: Clock) -> Self {
        Announcer { broker, clock }
    }

    /// The events topic of the app that owns `subscription`.
    pub(crate) fn topic_for(subscription: &SubscriptionName) -> Option<TopicName> {
        let app = match subscription.app() {
            Some(app) => AppName::new(app).ok()?,
            None => AppName::default_app(),
        };
        TopicName::qualified(&app, EVENTS_TOPIC).ok()
    }

    pub(crate) async fn endpoint_disabled(
        &self,
        subscription: &SubscriptionName,
        url: &str,
        reason: &str,
    ) {
        let Some(topic) = Self::topic_for(subscription) else {
            return;
        };
        let short = subscription.short();
        let body = serde_json::json!({
            "type": ENDPOINT_DISABLED,
            "subscription": short,
            "url": url,
            "reason": reason,
            "at": self.clock.now().to_string(),
        });
        let message = NewMessage {
            key: Some(short.to_owned()),
            attributes: BTreeMap::from([
                ("type".to_owned(), ENDPOINT_DISABLED.to_owned()),
                ("subscription".to_owned(), short.to_owned()),
            ]),
            data: Bytes::from(body.to_string()),
            encoding: DataEncoding::Json,
            dedup_id: None,
            deliver_at: None,
            callback: None,
        };
        if let Err(e) = self.publish(&topic, message).await {
            tracing::warn!(topic = %topic, error = %e, "could not publish an operational event");
        }
    }

    async fn publish(&self, topic: &TopicName, message: NewMessage) -> Result<(), BrokerError> {
        match self
            .broker
            .create_topic(topic, TopicConfig::default())
            .await
        {
            Ok(_) | Err(BrokerError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        self.broker.publish(topic, vec![message]).await.map(drop)
    }
}
