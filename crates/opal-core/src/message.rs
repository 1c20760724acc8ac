//! Messages as published and as delivered.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use jiff::Timestamp;
use uuid::Uuid;

use crate::{BrokerError, Limits, TopicName};

/// How a message's payload was given, so it can be handed back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEncoding {
    /// The payload is a JSON document (published as `data`).
    Json,
    /// The payload is opaque bytes (published as `data_base64` or a raw body).
    Binary,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub key: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub data: Bytes,
    pub encoding: DataEncoding,
    /// A repeat of this id inside the topic's dedup window stores nothing.
    pub dedup_id: Option<String>,
    /// Invisible to every subscription until then.
    pub deliver_at: Option<Timestamp>,
    /// Makes the message a task: its result goes there.
    pub callback: Option<crate::Callback>,
}

impl NewMessage {
    /// Checks the message against the limits. `index` names the message in a batch for the error.
    pub fn validate(
        &self,
        index: usize,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<(), BrokerError> {
        let at = |field: &str| format!("messages[{index}].{field}");
        if let Some(id) = &self.dedup_id
            && (id.is_empty() || id.len() > limits.max_dedup_id_bytes)
        {
            return Err(BrokerError::invalid(
                at("dedup_id"),
                format!("must be 1 to {} bytes long", limits.max_dedup_id_bytes),
            ));
        }
        if let Some(at_time) = self.deliver_at {
            let latest = now
                .as_millisecond()
                .saturating_add(limits.max_delay_ms as i64);
            if at_time.as_millisecond() > latest {
                return Err(BrokerError::invalid(
                    at("deliver_at"),
                    format!("must be at most {} ms in the future", limits.max_delay_ms),
                ));
            }
        }
        if let Some(callback) = &self.callback {
            callback.validate(&at("callback"))?;
        }
        if self.data.len() > limits.max_message_bytes {
            return Err(BrokerError::invalid(
                at("data"),
                format!(
                    "payload is {} bytes, the limit is {} bytes",
                    self.data.len(),
                    limits.max_message_bytes
                ),
            ));
        }
        if let Some(key) = &self.key
            && (key.is_empty() || key.len() > limits.max_key_bytes)
        {
            return Err(BrokerError::invalid(
                at("key"),
                format!("must be 1 to {} bytes long", limits.max_key_bytes),
            ));
        }
        if self.attributes.len() > limits.max_attributes {
            return Err(BrokerError::invalid(
                at("attributes"),
                format!("at most {} attributes are allowed", limits.max_attributes),
            ));
        }
        for (name, value) in &self.attributes {
            validate_attribute_name(name, limits).map_err(|reason| {
                BrokerError::invalid(at(&format!("attributes.{name}")), reason)
            })?;
            if value.len() > limits.max_attribute_value_bytes {
                return Err(BrokerError::invalid(
                    at(&format!("attributes.{name}")),
                    format!(
                        "value is longer than {} bytes",
                        limits.max_attribute_value_bytes
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Attribute names are restricted to a plain character set so that backends may keep internal
/// fields beside them (under names outside that set) without any risk of collision.
fn validate_attribute_name(name: &str, limits: &Limits) -> Result<(), String> {
    if name.is_empty() || name.len() > limits.max_attribute_name_bytes {
        return Err(format!(
            "attribute names must be 1 to {} bytes long",
            limits.max_attribute_name_bytes
        ));
    }
    if !name.chars().all(crate::names::is_plain_name_char) {
        return Err(
            "attribute names may contain only ASCII letters, digits, '.', '_' and '-'".into(),
        );
    }
    Ok(())
}

/// Where a published message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishResult {
    pub id: Uuid,
    pub partition: u32,
    /// `None` while a delayed message waits for its time: it gets its offset when it is due.
    pub offset: Option<u64>,
    /// The dedup id was seen inside the window: this is the first message's result, nothing was stored.
    pub duplicate: bool,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: Uuid,
    pub topic: TopicName,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub data: Bytes,
    pub encoding: DataEncoding,
    pub publish_time: Timestamp,
    /// When a delayed message became visible.
    pub deliver_at: Option<Timestamp>,
    /// Where a task's result goes (a task is a message with a callback).
    pub callback: Option<crate::Callback>,
}

/// The receipt of one delivery; a consumer hands it back to ack. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AckId(pub String);

impl fmt::Display for AckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> NewMessage {
        NewMessage {
            key: Some("k".into()),
            attributes: BTreeMap::from([("a".into(), "b".into())]),
            data: Bytes::from_static(b"{}"),
            encoding: DataEncoding::Json,
            dedup_id: None,
            deliver_at: None,
            callback: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    #[test]
    fn valid_message_passes() {
        assert!(message().validate(0, &Limits::default(), now()).is_ok());
    }

    #[test]
    fn oversized_payload_is_rejected_with_its_index() {
        let limits = Limits {
            max_message_bytes: 1,
            ..Limits::default()
        };
        let err = message()
            .validate(3, &limits, now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("messages[3].data"), "{err}");
    }

    #[test]
    fn attribute_names_outside_the_plain_set_are_rejected() {
        let mut m = message();
        m.attributes.insert(":id".into(), "x".into());
        assert!(m.validate(0, &Limits::default(), now()).is_err());
    }

    #[test]
    fn empty_key_is_rejected() {
        let mut m = message();
        m.key = Some(String::new());
        assert!(m.validate(0, &Limits::default(), now()).is_err());
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn deliver_at_beyond_the_limit_is_rejected() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let limits = Limits::default();
        let mut m = NewMessage {
            key: None,
            attributes: BTreeMap::new(),
            data: Bytes::new(),
            encoding: DataEncoding::Binary,
            dedup_id: Some("d".into()),
            deliver_at: Some(
                Timestamp::from_millisecond(now.as_millisecond() + limits.max_delay_ms as i64)
                    .unwrap(),
            ),
            callback: None,
        };
        assert!(m.validate(0, &limits, now).is_ok());
        m.deliver_at = Some(
            Timestamp::from_millisecond(now.as_millisecond() + limits.max_delay_ms as i64 + 1)
                .unwrap(),
        );
        assert!(m.validate(0, &limits, now).is_err());
        m.deliver_at = None;
        m.dedup_id = Some(String::new());
        assert!(m.validate(0, &limits, now).is_err());
    }
}
