//! One push subscription's delivery loop: take what the endpoint may take now (its in-flight
//! bound, rate limit, circuit breaker and any `Retry-After` pause), due resends and pulled
//! deliveries in turn; POST each, log the attempt, then ack or nack a delivery by the outcome
//! (resends are settled in `resend`). Endpoints run side by side, so a slow one delays nobody
//! else.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use opal_core::{
    AttemptStatus, BrokerError, Delivery, EndpointState, Message, PushAttempt, PushConfig, Settle,
    SubscriptionName, TopicName,
};
use reqwest::Url;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::announce::Announcer;
use super::recorder::Recorder;
use super::request;
use super::resend::Book;
use super::settler::Settler;
use super::{Context, gate::Gate};
use crate::outcome::Outcome;
use crate::schedule::RetrySchedule;
use crate::signing::SigningSecret;

/// Longest long-poll of one pull: short enough to notice a changed configuration soon.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// A queued delivery older than this has its lease renewed before it is sent.
const QUEUED_BEFORE_RENEWAL: Duration = Duration::from_secs(1);
/// Wait after a failing pull (a broker error) before the next.
const PULL_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The loop of one endpoint.
pub(crate) struct Endpoint {
    pub(crate) name: SubscriptionName,
    /// The subscription's topic (it cannot change), where resends are read from.
    pub(crate) topic: TopicName,
    pub(crate) config: watch::Receiver<Arc<PushConfig>>,
    pub(crate) ctx: Arc<Context>,
    pub(crate) stop: CancellationToken,
}

/// What an attempt needs, shared by the attempts of one endpoint.
pub(super) struct Shared {
    pub(super) name: SubscriptionName,
    pub(super) topic: TopicName,
    pub(super) ctx: Arc<Context>,
    gate: Mutex<Gate>,
    settler: Settler,
    recorder: Recorder,
    announcer: Announcer,
    pub(super) resends: Mutex<Book>,
    /// Told when a resend's retry time is set, so a waiting pull gives way to it then.
    pub(super) resend_timer: Notify,
    /// The endpoint's URL and secrets, parsed once per configuration rather than per attempt.
    parsed: Mutex<Option<Parsed>>,
}

/// What [`Shared::push`] would otherwise parse on every attempt.
struct Parsed {
    /// The configuration it was parsed from.
    config: Arc<PushConfig>,
    url: Option<Url>,
    secrets: Arc<Vec<SigningSecret>>,
    /// When a secret of the list stops signing (then the list is made again).
    until: Timestamp,
}

impl Endpoint {
    pub(crate) async fn run(mut self) {
        let (settler, settling) = Settler::spawn(Arc::clone(&self.ctx.broker), self.name.clone());
        let mut resend_wake = self.ctx.broker.watch_resends();
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            topic: self.topic.clone(),
            ctx: Arc::clone(&self.ctx),
            gate: Mutex::new(Gate::new(&self.ctx.settings, &self.config.borrow())),
            settler,
            recorder: self.ctx.recorder.clone(),
            announcer: self.ctx.announcer.clone(),
            resends: Mutex::new(Book::new(Instant::now())),
            resend_timer: Notify::new(),
            parsed: Mutex::new(None),
        });
        let mut attempts = JoinSet::new();
        let mut validated = false;
        // Resends and pulls take turns, so a large recover does not hold new messages back.
        let mut resent_last = false;
        // Deliveries pulled ahead, so the next attempt starts the moment a slot frees instead
        // of after a pull (which waits while the subscription commits acks).
        let mut queue: VecDeque<(Instant, Delivery)> = VecDeque::new();
        let mut pulling: Option<JoinHandle<Result<Vec<Delivery>, BrokerError>>> = None;
        loop {
            while attempts.try_join_next().is_some() {}
            let config = Arc::clone(&self.config.borrow_and_update());
            shared.gate().configure(&config);
            if !matches!(config.state, EndpointState::Enabled) {
                break;
            }
            let max = config.max_in_flight as usize;
            if resend_wake.has_changed().unwrap_or(false) {
                resend_wake.borrow_and_update();
                shared.book().wake(Instant::now());
            }
            let mut wake: Option<Instant> = None;
            let mut later = |until: Instant| wake = Some(wake.map_or(until, |w| w.min(until)));
            if !resent_last && attempts.len() < max && shared.book().wants_look(Instant::now()) {
                let permitted = shared.gate().permits(max - attempts.len());
                match permitted {
                    Ok(count) => {
                        let due = shared.take_due_resends(count).await;
                        if !due.is_empty() {
                            shared.gate().took(due.len());
                            for resend in due {
                                let (shared, config) = (Arc::clone(&shared), Arc::clone(&config));
                                attempts.spawn(async move { shared.resend(&config, resend).await });
                            }
                            resent_last = true;
                            continue;
                        }
                    }
                    Err(until) => later(until),
                }
            }
            resent_last = false;
            while attempts.len() < max && !queue.is_empty() {
                let admitted = shared.gate().may_send();
                if let Err(until) = admitted {
                    later(until);
                    break;
                }
                if let Some((pulled_at, delivery)) = queue.pop_front() {
                    let (shared, config) = (Arc::clone(&shared), Arc::clone(&config));
                    attempts.spawn(async move {
                        shared.keep_lease(&config, &delivery, pulled_at).await;
                        shared.attempt(&config, delivery).await
                    });
                }
            }
            if pulling.is_none() {
                let room = (2 * max).saturating_sub(attempts.len() + queue.len());
                if room > 0 && queue.len() < max {
                    let permitted = shared.gate().permits(room);
                    match permitted {
                        Ok(count) => {
                            if config.validate && !validated {
                                validated = shared.validate(&config).await;
                                if !validated {
                                    // Asked again after a pause (and through the breaker),
                                    // not in a tight loop against a refusing endpoint.
                                    tokio::select! {
                                        () = tokio::time::sleep(PULL_ERROR_PAUSE) => {}
                                        () = self.stop.cancelled() => break,
                                    }
                                    continue;
                                }
                            }
                            // With resends due, the pull only takes what is there, then it is
                            // their turn.
                            let wait = if shared.book().wants_look(Instant::now()) {
                                Duration::ZERO
                            } else {
                                PULL_WAIT
                            };
                            let (broker, name) = (Arc::clone(&self.ctx.broker), self.name.clone());
                            pulling = Some(tokio::spawn(async move {
                                broker.pull(&name, count, wait).await
                            }));
                        }
                        Err(until) => later(until),
                    }
                }
            }
            let wake_at = shared.book().wake_at();
            tokio::select! {
                pulled = async { pulling.as_mut().expect("guarded").await }, if pulling.is_some() => {
                    pulling = None;
                    match pulled.unwrap_or_else(|e| Err(BrokerError::Storage(e.to_string()))) {
                        Ok(deliveries) => {
                            shared.gate().took(deliveries.len());
                            let now = Instant::now();
                            queue.extend(deliveries.into_iter().map(|d| (now, d)));
                        }
                        Err(BrokerError::SubscriptionNotFound(_) | BrokerError::ShuttingDown) => break,
                        Err(e) => {
                            tracing::warn!(subscription = %self.name, error = %e, "push pull failed");
                            tokio::select! {
                                () = tokio::time::sleep(PULL_ERROR_PAUSE) => {}
                                () = self.stop.cancelled() => break,
                            }
                        }
                    }
                }
                _ = attempts.join_next(), if !attempts.is_empty() => {}
                () = sleep_until_some(wake) => {}
                _ = self.config.changed() => {}
                changed = resend_wake.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    shared.book().wake(Instant::now());
                }
                () = sleep_until_some(wake_at) => {}
                () = shared.resend_timer.notified() => {}
                () = self.stop.cancelled() => break,
            }
        }
        // A pull under way ends within its wait; what it and the queue hold was never sent,
        // and is handed out again when its lease runs out (or at once after a restart).
        if let Some(pull) = pulling {
            pull.abort();
        }
        // Attempts under way finish (each is bounded by its timeout) and are settled; what is
        // not pulled stays in the backlog for the next start.
        while attempts.join_next().await.is_some() {}
        drop(shared);
        let _ = settling.await;
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Shared {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.resends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The CloudEvents webhook validation handshake; `false` waits (the breaker counts it as a
    /// failure) and tries again.
    async fn validate(&self, config: &PushConfig) -> bool {
        let result = match Url::parse(&config.url) {
            Ok(url) => {
                self.ctx
                    .client
                    .validate_endpoint(
                        &url,
                        &self.ctx.settings.origin,
                        config
                            .rate_limit_per_s
                            .and_then(|s| std::num::NonZeroU32::new(s.saturating_mul(60))),
                        Duration::from_millis(config.timeout_ms),
                    )
                    .await
            }
            Err(e) => Err(crate::DispatchError::UrlRefused {
                reason: e.to_string(),
            }),
        };
        match result {
            Ok(validation) => {
                if let Some(crate::AllowedRate::PerMinute(per_minute)) = validation.allowed_rate {
                    self.gate().limit_per_minute(per_minute.get());
                }
                true
            }
            Err(e) => {
                tracing::info!(subscription = %self.name, error = %e, "endpoint validation failed");
                self.gate().failure(None);
                false
            }
        }
    }

    /// A delivery that waited in the queue gets its lease renewed for a whole attempt first,
    /// so a slow endpoint cannot make it expire mid-attempt (and go out twice).
    async fn keep_lease(&self, config: &PushConfig, delivery: &Delivery, pulled_at: Instant) {
        if pulled_at.elapsed() < QUEUED_BEFORE_RENEWAL {
            return;
        }
        let deadline = Duration::from_millis(config.lease_ms());
        let renewed = self
            .ctx
            .broker
            .settle(
                &self.name,
                std::slice::from_ref(&delivery.ack_id),
                Settle::Extend { deadline },
            )
            .await;
        if let Err(e) = renewed {
            tracing::debug!(subscription = %self.name, error = %e, "could not renew a queued delivery's lease");
        }
    }

    async fn attempt(&self, config: &Arc<PushConfig>, delivery: Delivery) {
        let outcome = self.push(config, &delivery.message, delivery.attempt).await;
        // A callback URL asking to be left alone says nothing about the other URLs.
        let gone_callback = outcome == Outcome::Gone && config.url_attribute.is_some();
        if outcome.is_delivered() || gone_callback {
            self.settler.ack(delivery.ack_id);
            return;
        }
        // Past the schedule the nack dead-letters the message (max_deliveries follows it).
        let delay = at_least_retry_after(
            scheduled_wait(config, delivery.attempt + 1).unwrap_or_default(),
            outcome,
        );
        let nacked = self
            .ctx
            .broker
            .settle(
                &self.name,
                std::slice::from_ref(&delivery.ack_id),
                Settle::Nack { delay: Some(delay) },
            )
            .await;
        if let Err(e) = nacked {
            tracing::warn!(subscription = %self.name, error = %e, "could not nack a failed push; its lease will run out");
        }
    }

    /// POSTs `message` as its `attempt`-th attempt, logs the attempt, and tells the gate how
    /// it went; a 410 or failing for too long disables the endpoint.
    /// The endpoint's parsed URL and live secrets at `now`, from the cache when still valid.
    fn parsed(
        &self,
        config: &Arc<PushConfig>,
        now: Timestamp,
    ) -> (Option<Url>, Arc<Vec<SigningSecret>>) {
        let mut cache = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.as_ref()
            && Arc::ptr_eq(&p.config, config)
            && now < p.until
        {
            return (p.url.clone(), Arc::clone(&p.secrets));
        }
        let secrets: Vec<SigningSecret> = config
            .signing_secrets(now)
            .filter_map(|s| SigningSecret::parse(&s.secret).ok())
            .collect();
        let until = config
            .signing_secrets(now)
            .filter_map(|s| s.expires_at)
            .min()
            .unwrap_or(Timestamp::MAX);
        let parsed = Parsed {
            config: Arc::clone(config),
            url: Url::parse(&config.url).ok(),
            secrets: Arc::new(secrets),
            until,
        };
        let out = (parsed.url.clone(), Arc::clone(&parsed.secrets));
        *cache = Some(parsed);
        out
    }

    pub(super) async fn push(
        &self,
        config: &Arc<PushConfig>,
        message: &Message,
        attempt: u32,
    ) -> Outcome {
        let now = self.ctx.clock.now();
        let (endpoint_url, secrets) = self.parsed(config, now);
        let prepared = request::prepare(config, &secrets, message, attempt, now);
        let url = match &config.url_attribute {
            // Task callbacks: each message names its own URL.
            Some(name) => message.attributes.get(name).cloned().unwrap_or_default(),
            None => config.url.clone(),
        };
        let parsed = match (&config.url_attribute, endpoint_url) {
            (None, Some(parsed)) => Ok(parsed),
            _ => Url::parse(&url),
        };
        let started = Instant::now();
        let result = match parsed {
            Ok(parsed) => {
                self.ctx
                    .client
                    .post(
                        &parsed,
                        prepared.headers,
                        prepared.body,
                        Duration::from_millis(config.timeout_ms),
                    )
                    .await
            }
            Err(e) => Err(crate::DispatchError::UrlRefused {
                reason: format!("{url:?} is not a URL: {e}"),
            }),
        };
        let latency = started.elapsed();
        let outcome = Outcome::from_result(&result, now, self.ctx.settings.max_retry_after);
        self.record(&url, message, attempt, now, latency, &result);
        match outcome {
            Outcome::Delivered => {
                self.gate().success();
                return outcome;
            }
            // Every URL of a callback route is its own endpoint: no shared breaker, pause or
            // disabling.
            _ if config.url_attribute.is_some() => return outcome,
            Outcome::RetryAfter(wait) => self.gate().failure(Some(wait)),
            _ => self.gate().failure(None),
        }
        let failing_for = self.gate().failing_too_long();
        if outcome == Outcome::Gone {
            self.disable(config, "the endpoint answered 410 Gone").await;
        } else if let Some(since) = failing_for {
            let reason = format!("every attempt failed for {}s", since.as_secs());
            self.disable(config, &reason).await;
        }
        outcome
    }

    fn record(
        &self,
        url: &str,
        message: &Message,
        attempt: u32,
        now: Timestamp,
        latency: Duration,
        result: &Result<crate::PushResponse, crate::DispatchError>,
    ) {
        // Succeeded exactly when the outcome is `Delivered`: a 2xx answer.
        let delivered = result.as_ref().is_ok_and(|r| r.status.is_success());
        let (status_code, response, error) = match result {
            Ok(r) => (
                Some(r.status.as_u16()),
                String::from_utf8_lossy(&r.body).into_owned(),
                None,
            ),
            Err(e) => (None, String::new(), Some(e.to_string())),
        };
        let attempt = PushAttempt {
            id: Uuid::now_v7(),
            message_id: message.id,
            partition: message.partition,
            offset: message.offset,
            attempt,
            at: now,
            url: url.to_owned(),
            status: if delivered {
                AttemptStatus::Succeeded
            } else {
                AttemptStatus::Failed
            },
            status_code,
            latency_ms: latency.as_millis().min(u128::from(u64::MAX)) as u64,
            response,
            error,
        };
        self.recorder.record(&self.name, attempt);
    }

    /// Stores the endpoint as disabled (its loop then ends) and tells its owner.
    async fn disable(&self, config: &PushConfig, reason: &str) {
        let broker = &self.ctx.broker;
        let Ok((subscription, _)) = broker.get_subscription(&self.name).await else {
            return;
        };
        let mut updated = subscription.config.clone();
        let Some(push) = updated.push.as_mut() else {
            return;
        };
        if push.url != config.url || !matches!(push.state, EndpointState::Enabled) {
            return;
        }
        push.state = EndpointState::Disabled {
            at: self.ctx.clock.now(),
            reason: reason.to_owned(),
        };
        match broker
            .update_subscription(&self.name, updated, Some(subscription.revision))
            .await
        {
            Ok(_) => {
                tracing::warn!(subscription = %self.name, url = %config.url, reason, "push endpoint disabled");
                self.announcer
                    .endpoint_disabled(&self.name, &config.url, reason)
                    .await;
            }
            Err(BrokerError::RevisionMismatch { .. }) => {}
            Err(e) => {
                tracing::warn!(subscription = %self.name, error = %e, "could not disable a push endpoint");
            }
        }
    }
}

/// The wait before `attempt` by the endpoint's schedule (±20 % jitter); `None` past its last
/// attempt.
pub(super) fn scheduled_wait(config: &PushConfig, attempt: u32) -> Option<Duration> {
    let schedule = RetrySchedule::new(
        config
            .retry_schedule_ms
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect(),
    )
    .unwrap_or_default();
    schedule.delay_before(attempt, rand::random::<f64>())
}

/// `wait`, or longer when the failed attempt's answer asked for it with `Retry-After`.
pub(super) fn at_least_retry_after(wait: Duration, outcome: Outcome) -> Duration {
    match outcome {
        Outcome::RetryAfter(asked) => wait.max(asked),
        _ => wait,
    }
}
