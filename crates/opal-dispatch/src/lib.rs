//! Push delivery's building blocks, independent of the broker: Standard Webhooks signing, the
//! SSRF guard and the HTTP client it protects, attempt outcomes, the retry schedule, and the
//! per-endpoint circuit breaker and rate limit.
//!
//! Everything but [`dispatcher`] is either pure (decisions over values and a caller-supplied
//! "now") or one HTTP call; [`dispatcher`] runs them against a [`opal_core::Broker`]: pull,
//! POST, log, ack or nack.

pub mod address_policy;
pub mod breaker;
pub mod client;
pub mod dispatcher;
pub mod error;
pub mod outcome;
pub mod rate;
pub mod resolver;
pub mod retry_after;
pub mod schedule;
pub mod signing;
pub mod validation;

pub use address_policy::{AddressPolicy, Refusal};
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
pub use client::{ClientOptions, PushClient, PushResponse, check_callback_url};
pub use dispatcher::{DispatcherSettings, ENDPOINT_DISABLED, EVENTS_TOPIC, spawn};
pub use error::{DispatchError, ErrorKind};
pub use outcome::Outcome;
pub use rate::RateLimiter;
pub use schedule::RetrySchedule;
pub use signing::{SigningSecret, signature_header, verify};
pub use validation::{AllowedRate, Validation};
