//! W3C Trace Context on publish: the `traceparent` and `tracestate` request headers are stored
//! with each message as the attributes of the same names, so that every delivery path (pull,
//! streams, webhooks, the CloudEvents `traceparent` extension) can carry them on.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName};
use opal_core::{Limits, NewMessage};

use crate::problem::{FieldError, Problem};

/// The header, and the message attribute, that names the caller's trace and span.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The header, and the message attribute, with vendor-specific trace data.
pub(crate) const TRACESTATE: &str = "tracestate";
/// The two names to look up: constant names are not parsed again on every request.
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);

/// Most list members a `tracestate` may have (W3C Trace Context §3.3.1.1).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Checks a `traceparent` value (W3C Trace Context §3.2): `00-<32 hex>-<16 hex>-<2 hex>` in
/// lowercase, with ids that are not all zeros. A later version (`01` to `fe`) may append fields
/// after a `-`; version `ff` is invalid.
pub(crate) fn check_traceparent(value: &str) -> Result<(), String> {
    const SHAPE: &str = "must be `<version>-<trace id>-<parent id>-<flags>`: 2, 32, 16 and 2 \
                         lowercase hex digits, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`";
    // `get` rather than `split_at`: a value with a multi-byte character across byte 55 (possible
    // in a CloudEvents extension or a percent-decoded `ce-traceparent`) is malformed, not a panic.
    let (Some(head), Some(tail)) = (value.get(..55), value.get(55..)) else {
        return Err(SHAPE.into());
    };
    let fields: Vec<&str> = head.split('-').collect();
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let [version, trace_id, parent_id, flags] = fields.as_slice() else {
        return Err(SHAPE.into());
    };
    if version.len() != 2
        || trace_id.len() != 32
        || parent_id.len() != 16
        || flags.len() != 2
        || !fields.iter().all(|f| lower_hex(f))
    {
        return Err(SHAPE.into());
    }
    if *version == "ff" {
        return Err("version `ff` is invalid".into());
    }
    if *version == "00" && !tail.is_empty() {
        return Err(format!("{SHAPE}; version 00 has nothing after the flags"));
    }
    if !tail.is_empty() && !tail.starts_with('-') {
        return Err(SHAPE.into());
    }
    if trace_id.bytes().all(|b| b == b'0') {
        return Err("the trace id must not be all zeros".into());
    }
    if parent_id.bytes().all(|b| b == b'0') {
        return Err("the parent id must not be all zeros".into());
    }
    Ok(())
}

/// Checks a `tracestate` value (W3C Trace Context §3.3): printable ASCII, comma-separated
/// `key=value` members (empty members are allowed), at most 32 of them, and short enough to be
/// stored as an attribute value.
pub(crate) fn check_tracestate(value: &str, limits: &Limits) -> Result<(), String> {
    if value.len() > limits.max_attribute_value_bytes {
        return Err(format!(
            "must be at most {} bytes long",
            limits.max_attribute_value_bytes
        ));
    }
    if !value
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) || b == b'\t')
    {
        return Err("must be printable ASCII".into());
    }
    let members: Vec<&str> = value
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > MAX_TRACESTATE_MEMBERS {
        return Err(format!(
            "must have at most {MAX_TRACESTATE_MEMBERS} list members"
        ));
    }
    if let Some(bad) = members
        .iter()
        .find(|m| m.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        return Err(format!("list member `{bad}` is not `key=value`"));
    }
    Ok(())
}

/// The trace context a publish request carried in its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TraceHeaders {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl TraceHeaders {
    /// Reads and checks the headers. `traceparent` may be given once; several `tracestate`
    /// headers are one list (RFC 9110 §5.3); a `tracestate` without a `traceparent` is refused,
    /// since it has no trace to belong to.
    pub(crate) fn from_headers(headers: &HeaderMap, limits: &Limits) -> Result<Self, Problem> {
        let mut errors = Vec::new();
        let traceparent = match single_header(headers, &TRACEPARENT_NAME) {
            Ok(Some(value)) => match check_traceparent(&value) {
                Ok(()) => Some(value),
                Err(reason) => {
                    errors.push(FieldError::header(TRACEPARENT, reason));
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                errors.push(error);
                None
            }
        };
        let mut parts = Vec::new();
        for value in headers.get_all(&TRACESTATE_NAME) {
            match value.to_str() {
                Ok(text) => parts.push(text.trim()),
                Err(_) => errors.push(FieldError::header(TRACESTATE, "must be printable ASCII")),
            }
        }
        let tracestate = (!parts.is_empty()).then(|| parts.join(","));
        if let Some(state) = &tracestate {
            if let Err(reason) = check_tracestate(state, limits) {
                errors.push(FieldError::header(TRACESTATE, reason));
            } else if traceparent.is_none() && !headers.contains_key(&TRACEPARENT_NAME) {
                errors.push(FieldError::header(
                    TRACESTATE,
                    "needs a `traceparent` header: a trace state belongs to a trace",
                ));
            }
        }
        if errors.is_empty() {
            Ok(TraceHeaders {
                traceparent,
                tracestate,
            })
        } else {
            Err(Problem::invalid(errors))
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    /// Adds the header values to a message's attributes, unless the message carries its own
    /// trace (a `traceparent` attribute): the message's own context is the more specific one.
    /// Returns whether anything was added.
    pub(crate) fn apply(&self, attributes: &mut BTreeMap<String, String>) -> bool {
        let Some(traceparent) = &self.traceparent else {
            return false;
        };
        if attributes.contains_key(TRACEPARENT) {
            return false;
        }
        attributes.insert(TRACEPARENT.to_owned(), traceparent.clone());
        if let Some(state) = &self.tracestate {
            attributes
                .entry(TRACESTATE.to_owned())
                .or_insert_with(|| state.clone());
        }
        true
    }

    /// [`apply`](Self::apply) to every message of a JSON batch, refusing a message that the
    /// added attributes would take over the attribute limit (`pointer` names its `attributes`).
    pub(crate) fn apply_to_batch(
        &self,
        messages: &mut [NewMessage],
        limits: &Limits,
        pointer: impl Fn(usize) -> String,
    ) -> Result<(), Problem> {
        if self.is_empty() {
            return Ok(());
        }
        let mut errors = Vec::new();
        for (index, message) in messages.iter_mut().enumerate() {
            if self.apply(&mut message.attributes)
                && message.attributes.len() > limits.max_attributes
            {
                errors.push(FieldError::at(
                    pointer(index),
                    format!(
                        "with the `traceparent`/`tracestate` headers added, the message has more \
                         than {} attributes",
                        limits.max_attributes
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::invalid(errors))
        }
    }
}

/// A header that may be given at most once, as printable ASCII.
fn single_header(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, FieldError> {
    let mut values = headers.get_all(name).iter();
    let name = name.as_str();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(FieldError::header(name, "must be given at most once"));
    }
    let text = value
        .to_str()
        .map_err(|_| FieldError::header(name, "must be printable ASCII"))?;
    Ok(Some(text.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_follow_the_w3c_grammar() {
        assert_eq!(check_traceparent(GOOD), Ok(()));
        // A later version may carry more fields.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-ever";
        assert_eq!(check_traceparent(future), Ok(()));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\u{e9}",
        ] {
            assert!(check_traceparent(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tracestates_are_lists_of_key_values() {
        let limits = Limits::default();
        for good in [
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE",
            "a=1,,b=2",
        ] {
            assert_eq!(check_tracestate(good, &limits), Ok(()), "{good}");
        }
        let many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
        for bad in ["novalue", "=v", "caf\u{e9}=1", &many.join(",")] {
            assert!(check_tracestate(bad, &limits).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_apply_unless_the_message_has_its_own_trace() {
        let limits = Limits::default();
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        headers.append(TRACESTATE, HeaderValue::from_static("a=1"));
        headers.append(TRACESTATE, HeaderValue::from_static("b=2"));
        let trace = TraceHeaders::from_headers(&headers, &limits).unwrap();

        let mut plain = BTreeMap::new();
        assert!(trace.apply(&mut plain));
        assert_eq!(plain[TRACEPARENT], GOOD);
        assert_eq!(plain[TRACESTATE], "a=1,b=2");

        let own = "00-11111111111111111111111111111111-2222222222222222-00";
        let mut traced = BTreeMap::from([(TRACEPARENT.to_owned(), own.to_owned())]);
        assert!(!trace.apply(&mut traced));
        assert_eq!(traced.len(), 1);
        assert_eq!(traced[TRACEPARENT], own);
    }

    #[test]
    fn bad_headers_are_refused() {
        let limits = Limits::default();
        let mut twice = HeaderMap::new();
        twice.append(TRACEPARENT, HeaderValue::from_static(GOOD));
        twice.append(TRACEPARENT, HeaderValue::from_static(GOOD));
        let mut state_alone = HeaderMap::new();
        state_alone.insert(TRACESTATE, HeaderValue::from_static("a=1"));
        let mut malformed = HeaderMap::new();
        malformed.insert(TRACEPARENT, HeaderValue::from_static("00-abc"));
        for headers in [twice, state_alone, malformed] {
            assert!(
                TraceHeaders::from_headers(&headers, &limits).is_err(),
                "{headers:?}"
            );
        }
        assert!(
            TraceHeaders::from_headers(&HeaderMap::new(), &limits)
                .unwrap()
                .is_empty()
        );
    }
}
