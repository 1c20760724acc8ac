//! What one delivery attempt came to, decided from the status and `Retry-After` alone.

use std::time::Duration;

use jiff::Timestamp;

use crate::client::PushResponse;
use crate::error::{DispatchError, ErrorKind};
use crate::retry_after::parse_retry_after;

/// A reasonable cap for an endpoint's `Retry-After`: long enough to ride out a deploy, short
/// enough that a typo on the receiver's side (`Retry-After: 86400000`) cannot park a message.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the endpoint has the message.
    Delivered,
    /// 410 Gone: the endpoint asks never to be called again; disable it.
    Gone,
    /// 429 or 503 with a usable `Retry-After`: try again after this long (already capped).
    RetryAfter(Duration),
    /// Any other status, 3xx included (redirects are not followed).
    Failed {
        /// The status received.
        status: u16,
    },
    /// No status at all: the request failed on the way.
    Error {
        /// Why.
        kind: ErrorKind,
    },
}

impl Outcome {
    /// Classifies a status. `retry_after` is the raw header, honoured only on 429 and 503,
    /// where RFC 9110 and RFC 6585 give it meaning; a missing or unparsable one leaves the
    /// attempt a plain failure, so the retry schedule decides. The wait is capped at
    /// `max_retry_after`.
    pub fn from_status(
        status: u16,
        retry_after: Option<&str>,
        now: Timestamp,
        max_retry_after: Duration,
    ) -> Self {
        match status {
            200..=299 => Outcome::Delivered,
            410 => Outcome::Gone,
            429 | 503 => match retry_after.and_then(|v| parse_retry_after(v, now)) {
                Some(wait) => Outcome::RetryAfter(wait.min(max_retry_after)),
                None => Outcome::Failed { status },
            },
            _ => Outcome::Failed { status },
        }
    }

    /// Classifies what [`crate::PushClient::post`] returned.
    pub fn from_result(
        result: &Result<PushResponse, DispatchError>,
        now: Timestamp,
        max_retry_after: Duration,
    ) -> Self {
        match result {
            Ok(response) => Self::from_status(
                response.status.as_u16(),
                response.retry_after.as_deref(),
                now,
                max_retry_after,
            ),
            Err(error) => Outcome::Error { kind: error.kind() },
        }
    }

    /// Whether the endpoint has the message.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(600);

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn classify(status: u16, retry_after: Option<&str>) -> Outcome {
        Outcome::from_status(status, retry_after, now(), MAX)
    }

    #[test]
    fn success_statuses() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify(status, None), Outcome::Delivered, "{status}");
        }
        // Retry-After on a success means nothing.
        assert_eq!(classify(200, Some("30")), Outcome::Delivered);
    }

    #[test]
    fn gone_disables() {
        assert_eq!(classify(410, None), Outcome::Gone);
        assert_eq!(classify(410, Some("30")), Outcome::Gone);
        assert_eq!(classify(404, None), Outcome::Failed { status: 404 });
    }

    #[test]
    fn redirects_are_failures() {
        for status in [300, 301, 302, 303, 307, 308] {
            assert_eq!(classify(status, Some("5")), Outcome::Failed { status });
        }
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        assert_eq!(
            classify(429, Some("30")),
            Outcome::RetryAfter(Duration::from_secs(30))
        );
        assert_eq!(
            classify(503, Some("0")),
            Outcome::RetryAfter(Duration::ZERO)
        );
        assert_eq!(classify(500, Some("30")), Outcome::Failed { status: 500 });
        assert_eq!(classify(502, Some("30")), Outcome::Failed { status: 502 });
        assert_eq!(classify(400, Some("30")), Outcome::Failed { status: 400 });
    }

    #[test]
    fn retry_after_dates_count_from_now() {
        let in_90s = (now() + jiff::SignedDuration::from_secs(90))
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        assert_eq!(
            classify(503, Some(&in_90s)),
            Outcome::RetryAfter(Duration::from_secs(90))
        );
    }

    #[test]
    fn retry_after_is_capped() {
        assert_eq!(classify(429, Some("601")), Outcome::RetryAfter(MAX));
        assert_eq!(
            classify(429, Some("99999999999999999999")),
            Outcome::RetryAfter(MAX)
        );
    }

    #[test]
    fn unusable_retry_after_is_a_plain_failure() {
        assert_eq!(classify(429, None), Outcome::Failed { status: 429 });
        assert_eq!(
            classify(429, Some("later")),
            Outcome::Failed { status: 429 }
        );
        assert_eq!(classify(503, Some("-1")), Outcome::Failed { status: 503 });
    }

    #[test]
    fn errors_keep_their_kind() {
        let err = DispatchError::Transport {
            kind: ErrorKind::Timeout,
            detail: "operation timed out".into(),
        };
        assert_eq!(
            Outcome::from_result(&Err(err), now(), MAX),
            Outcome::Error {
                kind: ErrorKind::Timeout
            }
        );
        let refused = DispatchError::UrlRefused {
            reason: "scheme".into(),
        };
        assert_eq!(
            Outcome::from_result(&Err(refused), now(), MAX),
            Outcome::Error {
                kind: ErrorKind::RefusedByPolicy
            }
        );
    }
}
