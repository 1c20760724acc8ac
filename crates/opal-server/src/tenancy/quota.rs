//! Quotas and rate limits per app, and failed authentications per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use opal_core::tenancy::Quotas;
use opal_core::{AppName, Broker, BrokerError, Clock};
use serde::Serialize;

use super::rate::{RateLimit, Refused, RetryAfter};
use crate::problem::{Problem, ProblemKind};

/// Addresses remembered at most; beyond, those whose limit has fully recovered are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;
/// How old an app's stored-bytes figure may be when a publish is checked against it.
const STORED_BYTES_MAX_AGE_MS: i64 = 1_000;

/// What an app uses, as shown in `GET /v1/apps/{app}`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub(crate) struct Usage {
    pub(crate) topics: u64,
    pub(crate) subscriptions: u64,
    /// Bytes in the app's topics' logs (at most a second old).
    pub(crate) stored_bytes: u64,
    pub(crate) open_streams: u64,
}

#[derive(Debug, Default)]
struct PublishLimits {
    messages: Option<RateLimit>,
    bytes: Option<RateLimit>,
}

#[derive(Debug)]
pub(crate) struct Enforcer {
    clock: Clock,
    /// Failed authentications a client address may make per second (burst: one second's
    /// worth); 0: no limit. Enough for a person mistyping; far too few to guess anything.
    auth_failures_per_s: u64,
    publish: Mutex<HashMap<AppName, PublishLimits>>,
    stored: Mutex<HashMap<AppName, (i64, u64)>>,
    streams: Arc<Mutex<HashMap<AppName, u64>>>,
    auth_failures: Mutex<HashMap<IpAddr, RateLimit>>,
    /// Whether any failure was ever recorded: until then, requests skip the lock above.
    any_auth_failure: AtomicBool,
}

/// Counts an open stream until dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    app: AppName,
    streams: Arc<Mutex<HashMap<AppName, u64>>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = streams.get_mut(&self.app) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                streams.remove(&self.app);
            }
        }
    }
}

fn rate_limited(what: &str, quota: u64, unit: &str, wait: RetryAfter) -> Problem {
    Problem::new(
        ProblemKind::RateLimited,
        format!("over this app's publish rate of {quota} {unit}/s ({what}); retry after the wait"),
    )
    .with_retry_after(wait.secs())
}

impl Enforcer {
    pub(crate) fn new(clock: Clock, auth_failures_per_s: u64) -> Self {
        Enforcer {
            clock,
            auth_failures_per_s,
            publish: Mutex::new(HashMap::new()),
            stored: Mutex::new(HashMap::new()),
            streams: Arc::new(Mutex::new(HashMap::new())),
            auth_failures: Mutex::new(HashMap::new()),
            any_auth_failure: AtomicBool::new(false),
        }
    }

    /// Quotas changed (or the app is gone): limits start afresh.
    pub(crate) fn forget(&self, app: &AppName) {
        self.publish
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
    }

    /// Checks a publish of `messages` messages and `bytes` payload bytes against the app's
    /// rates and storage quota; takes from the rates only when everything fits.
    pub(crate) async fn check_publish(
        &self,
        broker: &dyn Broker,
        app: &AppName,
        quotas: &Quotas,
        messages: u64,
        bytes: u64,
    ) -> Result<(), Problem> {
        if let Some(limit) = quotas.stored_bytes {
            let stored = self.stored_bytes(broker, app, false).await?;
            if stored.saturating_add(bytes) > limit {
                return Err(Problem::new(
                    ProblemKind::QuotaExceeded,
                    format!(
                        "this app's topics hold {stored} bytes and may hold {limit}: publishing \
                         {bytes} more is refused until retention or deletions free space"
                    ),
                ));
            }
        }
        if quotas.publish_messages_per_s.is_none() && quotas.publish_bytes_per_s.is_none() {
            return Ok(());
        }
        let mut all = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before inserting: the entry API would copy the app's name on every publish.
        if !all.contains_key(app) {
            let fresh = PublishLimits {
                messages: quotas.publish_messages_per_s.map(RateLimit::per_second),
                bytes: quotas.publish_bytes_per_s.map(RateLimit::per_second),
            };
            all.insert(app.clone(), fresh);
        }
        let Some(limits) = all.get_mut(app) else {
            return Ok(());
        };
        // Both or neither: check the byte rate on a copy first, so that a refusal by either
        // takes nothing from the other.
        if let (Some(rate), Some(quota)) = (&limits.bytes, quotas.publish_bytes_per_s) {
            let mut probe = rate.clone();
            match probe.take(&self.clock, bytes) {
                Ok(()) => {}
                Err(Refused::Later(wait)) => {
                    return Err(rate_limited("bytes", quota, "bytes", wait));
                }
                Err(Refused::Never) => {
                    return Err(Problem::new(
                        ProblemKind::RateLimited,
                        format!(
                            "this request's {bytes} bytes are more than this app may publish in a second ({quota}); send smaller requests"
                        ),
                    ));
                }
            }
        }
        if let (Some(rate), Some(quota)) = (&mut limits.messages, quotas.publish_messages_per_s) {
            match rate.take(&self.clock, messages) {
                Ok(()) => {}
                Err(Refused::Later(wait)) => {
                    return Err(rate_limited("messages", quota, "messages", wait));
                }
                Err(Refused::Never) => {
                    return Err(Problem::new(
                        ProblemKind::RateLimited,
                        format!(
                            "this request's {messages} messages are more than this app may publish in a second ({quota}); send smaller batches"
                        ),
                    ));
                }
            }
        }
        if let Some(rate) = &mut limits.bytes {
            // Cannot fail: the probe above took the same from the same state.
            let _ = rate.take(&self.clock, bytes);
        }
        Ok(())
    }

    /// Bytes stored in an app's topics; a figure up to a second old unless `fresh`.
    pub(crate) async fn stored_bytes(
        &self,
        broker: &dyn Broker,
        app: &AppName,
        fresh: bool,
    ) -> Result<u64, BrokerError> {
        let now = self.clock.now_ms();
        if !fresh {
            let cached = self
                .stored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(app)
                .copied();
            if let Some((at, bytes)) = cached
                && now - at < STORED_BYTES_MAX_AGE_MS
            {
                return Ok(bytes);
            }
        }
        let mut total = 0u64;
        for topic in broker.list_topics(Some(app), None, usize::MAX).await? {
            match broker.get_topic(&topic.name).await {
                Ok((_, stats)) => {
                    total = total.saturating_add(stats.partitions.iter().map(|p| p.bytes).sum());
                }
                // Deleted in between: it holds nothing any more.
                Err(BrokerError::TopicNotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.clone(), (now, total));
        Ok(total)
    }

    pub(crate) fn open_streams(&self, app: &AppName) -> u64 {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .copied()
            .unwrap_or(0)
    }

    /// Counts a new stream of `app`, or refuses it when the app has as many open as it may.
    pub(crate) fn open_stream(
        &self,
        app: &AppName,
        quotas: &Quotas,
    ) -> Result<StreamGuard, Problem> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(app.clone()).or_insert(0);
        if let Some(limit) = quotas.open_streams
            && *open >= limit
        {
            return Err(Problem::new(
                ProblemKind::RateLimited,
                format!("this app has {open} streams open and may have {limit}; close one first"),
            )
            .with_retry_after(5));
        }
        *open += 1;
        Ok(StreamGuard {
            app: app.clone(),
            streams: Arc::clone(&self.streams),
        })
    }

    /// Whether an address has failed to authenticate too often; how long it must wait.
    pub(crate) fn auth_blocked(&self, addr: IpAddr) -> Option<RetryAfter> {
        if self.auth_failures_per_s == 0 || !self.any_auth_failure.load(Ordering::Relaxed) {
            return None;
        }
        let mut failures = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        let rate = failures.get_mut(&addr)?;
        // Would one more failure fit? Asked of a copy, so asking takes nothing.
        match rate.clone().take(&self.clock, 1) {
            Ok(()) => None,
            Err(Refused::Later(wait)) => Some(wait),
            Err(Refused::Never) => None,
        }
    }

    pub(crate) fn auth_failed(&self, addr: IpAddr) {
        if self.auth_failures_per_s == 0 {
            return;
        }
        self.any_auth_failure.store(true, Ordering::Relaxed);
        let mut failures = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            let clock = &self.clock;
            let full = self.auth_failures_per_s;
            failures.retain(|_, rate| rate.clone().take(clock, full).is_err());
        }
        let rate = failures
            .entry(addr)
            .or_insert_with(|| RateLimit::per_second(self.auth_failures_per_s));
        let _ = rate.take(&self.clock, 1);
    }
}
