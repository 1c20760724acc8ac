//! Managing resources: update, delete and list topics and subscriptions, and browse messages.

use std::sync::Arc;

use opal_core::{
    AppName, BrokerError, Message, StartPosition, Subscription, SubscriptionConfig,
    SubscriptionName, Topic, TopicConfig, TopicName,
};

use crate::EmbeddedBroker;
use crate::broker::blocking;
use crate::rows;
use crate::subscription::{Settings, floors_for};
use crate::topic::remove_topic_dir;

fn check_revision(
    kind: &'static str,
    name: &str,
    current: u64,
    expected: Option<u64>,
) -> Result<(), BrokerError> {
    match expected {
        Some(expected) if expected != current => Err(BrokerError::RevisionMismatch {
            kind,
            name: name.to_owned(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}

impl EmbeddedBroker {
    pub(crate) async fn update_topic_settings(
        &self,
        name: &TopicName,
        config: TopicConfig,
        expected: Option<u64>,
    ) -> Result<Topic, BrokerError> {
        self.check_open()?;
        config.validate(&self.inner.config.limits)?;
        let _guard = self.inner.create_lock.lock().await;
        let open = self.topic(name)?;
        let current = open.topic();
        check_revision("topic", name.as_str(), current.revision, expected)?;
        if config.partitions != current.config.partitions {
            return Err(BrokerError::invalid(
                "partitions",
                "cannot change after the topic is created",
            ));
        }
        if config == current.config {
            return Ok((*current).clone());
        }
        let updated = Topic {
            config,
            revision: current.revision + 1,
            ..(*current).clone()
        };
        let row = rows::topic_row(&updated);
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        blocking(move || meta.put_topic(&key, &row)).await?;
        open.set_topic(updated.clone());
        tracing::info!(topic = %name, revision = updated.revision, "topic updated");
        Ok(updated)
    }

    pub(crate) async fn delete_topic_and_messages(
        &self,
        name: &TopicName,
        expected: Option<u64>,
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        let _guard = self.inner.create_lock.lock().await;
        let open = self.topic(name)?;
        check_revision("topic", name.as_str(), open.topic().revision, expected)?;
        let users: Vec<String> = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| {
                let settings = s.settings();
                Arc::ptr_eq(&s.topic, &open)
                    || settings
                        .dead_letter
                        .as_ref()
                        .is_some_and(|d| Arc::ptr_eq(d, &open))
            })
            .map(|s| s.name().to_owned())
            .collect();
        if let Some(first) = users.first() {
            return Err(BrokerError::InUse {
                kind: "topic",
                name: name.to_string(),
                by: format!("subscription `{first}`"),
            });
        }
        self.inner
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name.as_str());
        open.published.notify_waiters();
        let meta = Arc::clone(&self.inner.meta);
        let data_dir = self.inner.config.data_dir.clone();
        let key = name.to_string();
        // Metadata first: once it is gone the topic is gone, and a directory left behind by a
        // crash is cleared by the next create of the same name.
        blocking(move || {
            meta.delete_topic(&key)?;
            open.close()?;
            remove_topic_dir(&data_dir, &key)
        })
        .await?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    pub(crate) fn topics_after(
        &self,
        app: Option<&AppName>,
        after: Option<&TopicName>,
        limit: usize,
    ) -> Vec<Topic> {
        let topics = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = topics
            .keys()
            .filter(|n| after.is_none_or(|a| n.as_str() > a.as_str()))
            .filter(|n| app.is_none_or(|app| owned_by(n, app)))
            .collect();
        names.sort_unstable();
        names
            .into_iter()
            .take(limit)
            .map(|n| (*topics[n].topic()).clone())
            .collect()
    }

    pub(crate) async fn update_subscription_settings(
        &self,
        name: &SubscriptionName,
        config: SubscriptionConfig,
        expected: Option<u64>,
    ) -> Result<Subscription, BrokerError> {
        self.check_open()?;
        config.validate(&self.inner.config.limits)?;
        let _guard = self.inner.create_lock.lock().await;
        let open = self.subscription(name)?;
        let current = open.subscription();
        check_revision("subscription", name.as_str(), current.revision, expected)?;
        if config.topic != current.config.topic {
            return Err(BrokerError::invalid(
                "topic",
                "cannot change after the subscription is created",
            ));
        }
        if config == current.config {
            return Ok((*current).clone());
        }
        let dead_letter = self.dead_letter_topic(&config)?;
        let updated = Subscription {
            config,
            revision: current.revision + 1,
            ..(*current).clone()
        };
        let row = rows::subscription_row(&updated);
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        blocking(move || meta.put_subscription_row(&key, &row)).await?;
        open.set_settings(Settings {
            subscription: Arc::new(updated.clone()),
            dead_letter,
        });
        // A changed filter or deadline may make something deliverable now.
        open.topic.published.notify_waiters();
        tracing::info!(subscription = %name, revision = updated.revision, "subscription updated");
        self.inner.subscriptions_changed();
        Ok(updated)
    }

    pub(crate) async fn delete_subscription_state(
        &self,
        name: &SubscriptionName,
        expected: Option<u64>,
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        let _guard = self.inner.create_lock.lock().await;
        let open = self.subscription(name)?;
        check_revision(
            "subscription",
            name.as_str(),
            open.subscription().revision,
            expected,
        )?;
        // Under its lock, so no pull or settle of it is half-way through its writes, and none
        // that found it before writes afterwards (they check `deleted` once they hold the lock).
        let mut state = open.state.lock().await;
        open.deleted
            .store(true, std::sync::atomic::Ordering::Release);
        state.new_epoch();
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        blocking(move || meta.delete_subscription(&key)).await?;
        drop(state);
        self.inner
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name.as_str());
        open.topic.published.notify_waiters();
        tracing::info!(subscription = %name, "subscription deleted");
        self.inner.subscriptions_changed();
        Ok(())
    }

    pub(crate) fn subscriptions_after(
        &self,
        app: Option<&AppName>,
        after: Option<&SubscriptionName>,
        limit: usize,
    ) -> Vec<Subscription> {
        let subscriptions = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = subscriptions
            .keys()
            .filter(|n| after.is_none_or(|a| n.as_str() > a.as_str()))
            .filter(|n| app.is_none_or(|app| owned_by(n, app)))
            .collect();
        names.sort_unstable();
        names
            .into_iter()
            .take(limit)
            .map(|n| (*subscriptions[n].subscription()).clone())
            .collect()
    }

    pub(crate) fn browse(
        &self,
        topic: &TopicName,
        partition: u32,
        from: StartPosition,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        let open = self.topic(topic)?;
        if partition >= open.partitions() {
            return Err(BrokerError::invalid(
                "partition",
                format!(
                    "topic `{topic}` has partitions 0 to {}",
                    open.partitions() - 1
                ),
            ));
        }
        let start = floors_for(&open, from)?[partition as usize];
        let mut out = Vec::new();
        let mut offset = start;
        while out.len() < limit {
            let messages = open.read(partition, offset)?;
            let Some(last) = messages.last().map(|m| m.offset) else {
                break;
            };
            out.extend(messages.into_iter().take(limit - out.len()));
            offset = last + 1;
        }
        Ok(out)
    }
}

/// Whether a stored name is qualified by `app`.
fn owned_by(name: &str, app: &AppName) -> bool {
    name.split_once(opal_core::APP_SEPARATOR)
        .is_some_and(|(owner, _)| owner == app.as_str())
}
