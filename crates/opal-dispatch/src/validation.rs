//! The abuse-protection handshake of CloudEvents "HTTP 1.1 Web Hooks for Event Delivery"
//! (section 4): before pushing to a URL, ask it whether it wants our deliveries at all, so the
//! broker cannot be used to flood a third party's server with unsolicited requests.
//!
//! Only the synchronous form is supported: the endpoint must agree in its answer to the
//! `OPTIONS` request. The asynchronous form (`WebHook-Request-Callback`) is not offered.

use std::num::NonZeroU32;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::client::{PushClient, PushResponse};
use crate::error::DispatchError;

/// `WebHook-Request-Origin`: who is asking to deliver.
pub const WEBHOOK_REQUEST_ORIGIN: HeaderName = HeaderName::from_static("webhook-request-origin");
/// `WebHook-Request-Rate`: the deliveries per minute we would like to send.
pub const WEBHOOK_REQUEST_RATE: HeaderName = HeaderName::from_static("webhook-request-rate");
/// `WebHook-Allowed-Origin`: whom the endpoint accepts deliveries from.
pub const WEBHOOK_ALLOWED_ORIGIN: HeaderName = HeaderName::from_static("webhook-allowed-origin");
/// `WebHook-Allowed-Rate`: the deliveries per minute the endpoint accepts.
pub const WEBHOOK_ALLOWED_RATE: HeaderName = HeaderName::from_static("webhook-allowed-rate");

/// The rate an endpoint granted in `WebHook-Allowed-Rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedRate {
    /// `*`: no limit.
    Unlimited,
    /// At most this many deliveries per minute.
    PerMinute(NonZeroU32),
}

/// What a successful handshake yielded.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The rate the endpoint granted; `None` if it named none, or none we could read (the
    /// origin check is what grants consent, the rate is advice on top).
    pub allowed_rate: Option<AllowedRate>,
    /// The endpoint's answer, for the attempts log.
    pub response: PushResponse,
}

impl PushClient {
    /// Runs the handshake against `url` through this client, and so through the same SSRF
    /// guard as deliveries: `OPTIONS` with `WebHook-Request-Origin: origin` (and
    /// `WebHook-Request-Rate` if `requested_rate` is given). Succeeds only if the endpoint
    /// answers 200 or 204 with `WebHook-Allowed-Origin` equal to `origin` or `*`.
    pub async fn validate_endpoint(
        &self,
        url: &Url,
        origin: &str,
        requested_rate: Option<NonZeroU32>,
        timeout: Duration,
    ) -> Result<Validation, DispatchError> {
        let mut headers = HeaderMap::new();
        let origin_value = HeaderValue::from_str(origin)
            .map_err(|_| DispatchError::config("webhook origin", "not a valid header value"))?;
        headers.insert(WEBHOOK_REQUEST_ORIGIN, origin_value);
        if let Some(rate) = requested_rate {
            headers.insert(WEBHOOK_REQUEST_RATE, HeaderValue::from(rate.get()));
        }
        let response = self
            .send(Method::OPTIONS, url, headers, None, timeout)
            .await?;
        let allowed_rate = evaluate(
            response.status,
            response.allowed_origin.as_deref(),
            response.allowed_rate.as_deref(),
            origin,
        )?;
        Ok(Validation {
            allowed_rate,
            response,
        })
    }
}

/// Judges a handshake answer: the status must be 200 or 204 and `allowed_origin` must be
/// `our_origin` (host names compare without regard to case) or `*`. Returns the granted rate.
pub fn evaluate(
    status: StatusCode,
    allowed_origin: Option<&str>,
    allowed_rate: Option<&str>,
    our_origin: &str,
) -> Result<Option<AllowedRate>, DispatchError> {
    let refused = |reason: String| Err(DispatchError::ValidationRefused { reason });
    if status != StatusCode::OK && status != StatusCode::NO_CONTENT {
        return refused(format!("the endpoint answered {status}, not 200 or 204"));
    }
    match allowed_origin.map(str::trim) {
        None => return refused("the answer has no WebHook-Allowed-Origin".to_owned()),
        Some(origin) if origin == "*" || origin.eq_ignore_ascii_case(our_origin.trim()) => {}
        Some(origin) => {
            return refused(format!(
                "WebHook-Allowed-Origin is {origin:?}, not {our_origin:?} or *"
            ));
        }
    }
    Ok(allowed_rate.and_then(parse_allowed_rate))
}

/// Parses `WebHook-Allowed-Rate`: `*`, or a positive whole number of requests per minute.
pub fn parse_allowed_rate(value: &str) -> Option<AllowedRate> {
    let value = value.trim();
    if value == "*" {
        return Some(AllowedRate::Unlimited);
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(AllowedRate::PerMinute)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "opal.example.com";

    fn judge(
        status: u16,
        origin: Option<&str>,
        rate: Option<&str>,
    ) -> Result<Option<AllowedRate>, DispatchError> {
        evaluate(StatusCode::from_u16(status).unwrap(), origin, rate, ORIGIN)
    }

    fn per_minute(n: u32) -> Option<AllowedRate> {
        Some(AllowedRate::PerMinute(NonZeroU32::new(n).unwrap()))
    }

    #[test]
    fn accepts_our_origin_or_any() {
        assert_eq!(judge(200, Some(ORIGIN), None).unwrap(), None);
        assert_eq!(judge(204, Some("*"), None).unwrap(), None);
        assert_eq!(judge(200, Some(" OPAL.example.COM "), None).unwrap(), None);
    }

    #[test]
    fn refuses_other_answers() {
        for (status, origin) in [
            (200, None),
            (200, Some("evil.example.com")),
            (200, Some("")),
            (200, Some("opal.example.com.evil")),
            (201, Some(ORIGIN)),
            (202, Some(ORIGIN)),
            (301, Some(ORIGIN)),
            (403, Some(ORIGIN)),
            (405, Some("*")),
            (500, Some(ORIGIN)),
        ] {
            assert!(
                matches!(
                    judge(status, origin, None),
                    Err(DispatchError::ValidationRefused { .. })
                ),
                "{status} {origin:?}"
            );
        }
    }

    #[test]
    fn reads_the_granted_rate() {
        assert_eq!(judge(200, Some("*"), Some("120")).unwrap(), per_minute(120));
        assert_eq!(
            judge(200, Some("*"), Some(" * ")).unwrap(),
            Some(AllowedRate::Unlimited)
        );
        for unreadable in ["0", "-1", "+5", "1.5", "ten", "", "99999999999"] {
            assert_eq!(
                judge(200, Some("*"), Some(unreadable)).unwrap(),
                None,
                "{unreadable:?}"
            );
        }
    }
}
