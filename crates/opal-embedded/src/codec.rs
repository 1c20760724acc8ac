//! Mapping between broker messages and log records.
//!
//! User attributes become record headers under their own names. Internal fields use header names
//! starting with ':', which attribute-name validation forbids, so the two can never collide.

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{Callback, DataEncoding, Message, NewMessage, TopicName};
use opal_log::{Record, StoredRecord};
use uuid::Uuid;

use crate::EmbeddedError;

const ID: &str = ":id";
const ENCODING: &str = ":enc";
const DELIVER_AT: &str = ":at";
/// A task's callback: `u` or `t`, then the URL or the topic.
const CALLBACK: &str = ":cb";

fn callback_header(callback: &Callback) -> Bytes {
    let (kind, value) = match callback {
        Callback::Url(url) => ('u', url.as_str()),
        Callback::Topic(topic) => ('t', topic.as_str()),
    };
    Bytes::from(format!("{kind}{value}"))
}

fn callback_of(value: &[u8]) -> Option<Callback> {
    let text = std::str::from_utf8(value).ok()?;
    let (kind, rest) = text.split_at_checked(1)?;
    match kind {
        "u" => Some(Callback::Url(rest.to_owned())),
        "t" => TopicName::new(rest).ok().map(Callback::Topic),
        _ => None,
    }
}

/// The record of a message; `deliver_at` is set on delayed messages when they become due.
pub(crate) fn to_record(message: NewMessage, id: Uuid, timestamp_ms: i64) -> Record {
    let mut headers = Vec::with_capacity(message.attributes.len() + 3);
    headers.push((ID.to_owned(), Bytes::copy_from_slice(id.as_bytes())));
    if let Some(at) = message.deliver_at {
        headers.push((
            DELIVER_AT.to_owned(),
            Bytes::copy_from_slice(&at.as_millisecond().to_be_bytes()),
        ));
    }
    let encoding: &'static [u8] = match message.encoding {
        DataEncoding::Json => b"json",
        DataEncoding::Binary => b"binary",
    };
    headers.push((ENCODING.to_owned(), Bytes::from_static(encoding)));
    if let Some(callback) = &message.callback {
        headers.push((CALLBACK.to_owned(), callback_header(callback)));
    }
    headers.extend(
        message
            .attributes
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v))),
    );
    Record {
        timestamp_ms,
        key: message.key.map(Bytes::from),
        headers,
        value: message.data,
    }
}

pub(crate) fn to_message(
    topic: &TopicName,
    partition: u32,
    stored: StoredRecord,
) -> Result<Message, EmbeddedError> {
    let corrupt = |what: &str| {
        EmbeddedError::CorruptMeta(format!(
            "record {partition}/{} of topic {topic}: {what}",
            stored.offset
        ))
    };
    let record = stored.record;
    let mut id = None;
    let mut encoding = DataEncoding::Binary;
    let mut deliver_at = None;
    let mut callback = None;
    let mut attributes = BTreeMap::new();
    for (name, value) in record.headers {
        match name.as_str() {
            ID => id = Some(Uuid::from_slice(&value).map_err(|_| corrupt("bad id"))?),
            DELIVER_AT => {
                let ms: [u8; 8] = value[..]
                    .try_into()
                    .map_err(|_| corrupt("bad deliver_at"))?;
                deliver_at = Some(
                    Timestamp::from_millisecond(i64::from_be_bytes(ms))
                        .map_err(|_| corrupt("deliver_at out of range"))?,
                );
            }
            CALLBACK => {
                callback = Some(callback_of(&value).ok_or_else(|| corrupt("bad callback"))?)
            }
            ENCODING => {
                encoding = match &value[..] {
                    b"json" => DataEncoding::Json,
                    _ => DataEncoding::Binary,
                }
            }
            _ => {
                let value = String::from_utf8(value.to_vec())
                    .map_err(|_| corrupt("attribute is not UTF-8"))?;
                attributes.insert(name, value);
            }
        }
    }
    let key = match record.key {
        Some(k) => Some(String::from_utf8(k.to_vec()).map_err(|_| corrupt("key is not UTF-8"))?),
        None => None,
    };
    Ok(Message {
        id: id.ok_or_else(|| corrupt("missing id"))?,
        topic: topic.clone(),
        partition,
        offset: stored.offset,
        key,
        attributes,
        data: record.value,
        encoding,
        publish_time: Timestamp::from_millisecond(record.timestamp_ms)
            .map_err(|_| corrupt("timestamp out of range"))?,
        deliver_at,
        callback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_everything() {
        let topic = TopicName::new("t").unwrap();
        let new = NewMessage {
            key: Some("k".into()),
            attributes: BTreeMap::from([("a".into(), "b".into())]),
            data: Bytes::from_static(b"[1,2]"),
            encoding: DataEncoding::Json,
            dedup_id: None,
            deliver_at: Some(Timestamp::from_millisecond(1_700_000_001_000).unwrap()),
            callback: Some(Callback::Url("https://hooks.example.com/done?x=1".into())),
        };
        let id = Uuid::now_v7();
        let record = to_record(new.clone(), id, 1_700_000_000_123);
        let message = to_message(&topic, 2, StoredRecord { offset: 9, record }).unwrap();
        assert_eq!(message.id, id);
        assert_eq!((message.partition, message.offset), (2, 9));
        assert_eq!(message.key, new.key);
        assert_eq!(message.attributes, new.attributes);
        assert_eq!(message.data, new.data);
        assert_eq!(message.encoding, DataEncoding::Json);
        assert_eq!(message.publish_time.as_millisecond(), 1_700_000_000_123);
        assert_eq!(message.deliver_at, new.deliver_at);
    }
}
