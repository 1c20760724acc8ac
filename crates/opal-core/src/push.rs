//! Push subscriptions: the endpoint a subscription's messages are POSTed to, and the log of
//! attempts. The broker stores these; the push dispatcher (a front door) does the HTTP.

use std::collections::BTreeMap;

use jiff::Timestamp;
use uuid::Uuid;

use crate::BrokerError;

/// How a push delivery's body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushFormat {
    /// A structured-mode CloudEvent (`application/cloudevents+json`).
    #[default]
    CloudEvents,
    /// A binary-mode CloudEvent: the payload as body, the attributes as `ce-*` headers.
    Binary,
    /// The payload as body, attributes as `opal-attr-*` headers.
    Raw,
}

impl PushFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PushFormat::CloudEvents => "cloudevents",
            PushFormat::Binary => "binary",
            PushFormat::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cloudevents" => Some(PushFormat::CloudEvents),
            "binary" => Some(PushFormat::Binary),
            "raw" => Some(PushFormat::Raw),
            _ => None,
        }
    }
}

/// A signing secret (`whsec_…`). The newest comes first; older ones keep signing beside it
/// until they expire, so receivers can switch over without losing a delivery.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSecret {
    pub secret: String,
    /// `None` for the current secret; the end of the overlap for a rotated-out one.
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for PushSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSecret")
            .field("secret", &"whsec_…")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Whether the dispatcher sends to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EndpointState {
    #[default]
    Enabled,
    /// Stopped by the dispatcher (410 Gone, failing for too long) or by its owner; messages
    /// wait in the backlog until it is enabled again.
    Disabled { at: Timestamp, reason: String },
}

/// The endpoint of a push subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// `http://` or `https://`; checked against the SSRF guard before every connection.
    pub url: String,
    /// At least one; the first is current.
    pub secrets: Vec<PushSecret>,
    pub timeout_ms: u64,
    /// Deliveries waiting for an answer from this endpoint at most.
    pub max_in_flight: u32,
    pub rate_limit_per_s: Option<u32>,
    pub format: PushFormat,
    /// Sent with every delivery (names lower-case).
    pub headers: BTreeMap<String, String>,
    /// The wait before each attempt: the first entry before the first attempt (normally 0),
    /// so the list's length is the number of attempts.
    pub retry_schedule_ms: Vec<u64>,
    /// Run the CloudEvents webhook validation handshake (`OPTIONS`) before the first delivery.
    pub validate: bool,
    pub state: EndpointState,
    /// Send each message to the URL in this attribute instead of `url` (the internal
    /// subscription that delivers task results to their callback URLs).
    pub url_attribute: Option<String>,
}

impl PushConfig {
    pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;
    pub const MAX_TIMEOUT_MS: u64 = 60_000;
    pub const MIN_TIMEOUT_MS: u64 = 100;
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
    pub const MAX_IN_FLIGHT: u32 = 1_000;
    pub const MAX_URL_BYTES: usize = 2_048;
    pub const MAX_HEADERS: usize = 32;
    pub const MAX_HEADER_BYTES: usize = 4_096;
    pub const MAX_SCHEDULE_LEN: usize = 32;
    pub const MAX_SCHEDULE_DELAY_MS: u64 = 7 * 24 * 3_600_000;
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: a day and a half of trying.
    pub const DEFAULT_SCHEDULE_MS: [u64; 8] = [
        0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
    ];
    /// Headers the dispatcher writes itself; a configured header may not replace them.
    pub const RESERVED_HEADERS: [&'static str; 9] = [
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    ];

    /// How much a push delivery's lease outlasts one attempt, so an attempt that times out is
    /// settled before its message could be handed out again.
    pub const LEASE_MARGIN_MS: u64 = 15_000;

    /// The lease a delivery to this endpoint needs: one attempt and the margin.
    pub fn lease_ms(&self) -> u64 {
        self.timeout_ms.saturating_add(Self::LEASE_MARGIN_MS)
    }

    /// An endpoint with every setting at its default.
    pub fn new(url: impl Into<String>, secret: PushSecret) -> Self {
        PushConfig {
            url: url.into(),
            secrets: vec![secret],
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            rate_limit_per_s: None,
            format: PushFormat::default(),
            headers: BTreeMap::new(),
            retry_schedule_ms: Self::DEFAULT_SCHEDULE_MS.to_vec(),
            validate: false,
            state: EndpointState::Enabled,
            url_attribute: None,
        }
    }

    /// The secrets that still sign at `now`.
    pub fn signing_secrets(&self, now: Timestamp) -> impl Iterator<Item = &PushSecret> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|at| at > now))
    }

    /// Checks the shape of the settings; the URL's host is checked by the dispatcher's guard.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let url = self.url.to_ascii_lowercase();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(BrokerError::invalid(
                "push.url",
                "must be an absolute http:// or https:// URL",
            ));
        }
        if self.url.len() > Self::MAX_URL_BYTES {
            return Err(BrokerError::invalid(
                "push.url",
                format!("must be at most {} bytes long", Self::MAX_URL_BYTES),
            ));
        }
        if self.secrets.is_empty() || self.secrets[0].expires_at.is_some() {
            return Err(BrokerError::invalid(
                "push.secret",
                "a push subscription needs a current signing secret",
            ));
        }
        if !(Self::MIN_TIMEOUT_MS..=Self::MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(BrokerError::invalid(
                "push.timeout_ms",
                format!(
                    "must be between {} and {}",
                    Self::MIN_TIMEOUT_MS,
                    Self::MAX_TIMEOUT_MS
                ),
            ));
        }
        if !(1..=Self::MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(BrokerError::invalid(
                "push.max_in_flight",
                format!("must be between 1 and {}", Self::MAX_IN_FLIGHT),
            ));
        }
        if self.rate_limit_per_s == Some(0) {
            return Err(BrokerError::invalid(
                "push.rate_limit_per_s",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        self.validate_headers()?;
        if self.retry_schedule_ms.is_empty()
            || self.retry_schedule_ms.len() > Self::MAX_SCHEDULE_LEN
        {
            return Err(BrokerError::invalid(
                "push.retry_schedule_ms",
                format!("must list 1 to {} waits", Self::MAX_SCHEDULE_LEN),
            ));
        }
        if self
            .retry_schedule_ms
            .iter()
            .any(|&ms| ms > Self::MAX_SCHEDULE_DELAY_MS)
        {
            return Err(BrokerError::invalid(
                "push.retry_schedule_ms",
                format!(
                    "each wait must be at most {} ms",
                    Self::MAX_SCHEDULE_DELAY_MS
                ),
            ));
        }
        Ok(())
    }

    fn validate_headers(&self) -> Result<(), BrokerError> {
        if self.headers.len() > Self::MAX_HEADERS {
            return Err(BrokerError::invalid(
                "push.headers",
                format!("at most {} headers", Self::MAX_HEADERS),
            ));
        }
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
            if !token {
                return Err(BrokerError::invalid(
                    format!("push.headers.{name}"),
                    "header names are lower-case letters, digits, '-' and '_'",
                ));
            }
            if Self::RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("ce-") {
                return Err(BrokerError::invalid(
                    format!("push.headers.{name}"),
                    "is written by the dispatcher",
                ));
            }
            if value.len() > Self::MAX_HEADER_BYTES
                || value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
            {
                return Err(BrokerError::invalid(
                    format!("push.headers.{name}"),
                    format!(
                        "values are at most {} bytes of visible characters",
                        Self::MAX_HEADER_BYTES
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    use base64::Engine as _;
    let key: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// How one push attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    /// The endpoint answered 2xx.
    Succeeded,
    /// Any other answer, a timeout, a refused connection, a TLS or guard error.
    Failed,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(AttemptStatus::Succeeded),
            "failed" => Some(AttemptStatus::Failed),
            _ => None,
        }
    }
}

/// One HTTP attempt of a push delivery, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAttempt {
    /// UUIDv7: orders attempts by time.
    pub id: Uuid,
    pub message_id: Uuid,
    pub partition: u32,
    pub offset: u64,
    /// The delivery's attempt number (1 for the first).
    pub attempt: u32,
    pub at: Timestamp,
    pub url: String,
    pub status: AttemptStatus,
    /// The HTTP status, when an answer came.
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The first KiB of the answer's body (lossy UTF-8).
    pub response: String,
    /// Why it failed, when no answer or a guard refusal stopped it.
    pub error: Option<String>,
}

impl PushAttempt {
    /// The part of an answer that is kept.
    pub const MAX_RESPONSE_BYTES: usize = 1_024;
}

/// Which attempts to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptQuery {
    pub message_id: Option<Uuid>,
    pub status: Option<AttemptStatus>,
    /// Only attempts at or after this time.
    pub since: Option<Timestamp>,
    /// Only attempts before this time.
    pub until: Option<Timestamp>,
    /// The page after this attempt id (cursor).
    pub before_id: Option<Uuid>,
    pub limit: usize,
}

/// A message of a push subscription's topic to push again, by where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResendTarget {
    pub partition: u32,
    pub offset: u64,
}

/// A resend waiting in a push subscription's queue. Resends are pushes outside the
/// subscription's ack state: they are asked for by people (a message delivered or dead-lettered
/// before, sent again), retried by the endpoint's schedule, and dropped after its last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    pub partition: u32,
    pub offset: u64,
    /// The number of its next attempt (1 for the first), sent as `opal-attempt`.
    pub attempt: u32,
    /// Not sent before this time.
    pub not_before: Timestamp,
}

impl Resend {
    pub fn target(&self) -> ResendTarget {
        ResendTarget {
            partition: self.partition,
            offset: self.offset,
        }
    }
}
