//! The push dispatcher: one delivery loop per enabled push subscription, started, changed and
//! stopped as subscriptions change. It is a front door like the HTTP API: it consumes through
//! the `Broker` trait (pull, ack, nack), so everything the broker guarantees (durable pending
//! deliveries, retries, dead letters, ordering by key) holds for pushes too. Resends asked for
//! over the API wait in the broker too, and go out through the same loops.

mod announce;
mod endpoint;
mod gate;
mod recorder;
mod request;
mod resend;
mod settler;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opal_core::{Broker, Clock, EndpointState, PushConfig, SubscriptionName, TopicName};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use announce::{ENDPOINT_DISABLED, EVENTS_TOPIC};

use crate::address_policy::AddressPolicy;
use crate::breaker::BreakerConfig;
use crate::client::{ClientOptions, PushClient};
use crate::error::DispatchError;
use announce::Announcer;
use endpoint::Endpoint;
use recorder::Recorder;

/// Subscriptions read per page when the dispatcher looks for push endpoints.
const PAGE: usize = 1_000;
/// The dispatcher also looks again this often, in case a change was missed.
const RESYNC: Duration = Duration::from_secs(30);

/// How the dispatcher behaves, beyond each endpoint's own settings.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Which addresses endpoints may resolve to (the SSRF guard).
    pub policy: AddressPolicy,
    pub client: ClientOptions,
    /// Sent as `WebHook-Request-Origin` in the validation handshake.
    pub origin: String,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    pub breaker: BreakerConfig,
    /// An endpoint failing without one success this long is disabled.
    pub disable_after: Duration,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        DispatcherSettings {
            policy: AddressPolicy::new(),
            client: ClientOptions::default(),
            origin: "opal".to_owned(),
            max_retry_after: crate::outcome::DEFAULT_MAX_RETRY_AFTER,
            breaker: BreakerConfig::default(),
            disable_after: crate::breaker::DEFAULT_DISABLE_AFTER,
        }
    }
}

/// What the loops share.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) clock: Clock,
    pub(crate) origin: String,
    pub(crate) max_retry_after: Duration,
    pub(crate) breaker: BreakerConfig,
    pub(crate) disable_after: Duration,
}

#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) clock: Clock,
    pub(crate) client: PushClient,
    pub(crate) settings: Settings,
    pub(crate) recorder: Recorder,
    pub(crate) announcer: Announcer,
}

/// Starts the dispatcher. It runs until `shutdown` is cancelled, then lets the attempts under
/// way finish (each bounded by its endpoint's timeout) and settles them before the returned
/// task ends: await it before closing the broker.
pub fn spawn(
    broker: Arc<dyn Broker>,
    clock: Clock,
    settings: DispatcherSettings,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, DispatchError> {
    settings.breaker.validate()?;
    let client = PushClient::new(settings.policy, settings.client)?;
    let (recorder, recording) = Recorder::spawn(Arc::clone(&broker));
    let ctx = Arc::new(Context {
        announcer: Announcer::new(Arc::clone(&broker), clock.clone()),
        broker,
        clock: clock.clone(),
        client,
        settings: Settings {
            clock,
            origin: settings.origin,
            max_retry_after: settings.max_retry_after,
            breaker: settings.breaker,
            disable_after: settings.disable_after,
        },
        recorder,
    });
    Ok(tokio::spawn(async move {
        supervise(ctx, shutdown).await;
        let _ = recording.await;
    }))
}

struct Running {
    topic: TopicName,
    config: watch::Sender<Arc<PushConfig>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn supervise(ctx: Arc<Context>, shutdown: CancellationToken) {
    // Callbacks a crash left untold (the task ended, its callback message was not sent yet).
    match opal_core::task::tell_owed_callbacks(ctx.broker.as_ref()).await {
        Ok(0) => {}
        Ok(told) => tracing::info!(told, "told task callbacks owed from before the restart"),
        Err(e) => tracing::warn!(error = %e, "could not tell owed task callbacks"),
    }
    let mut changes = ctx.broker.watch_subscriptions();
    let mut running: HashMap<SubscriptionName, Running> = HashMap::new();
    loop {
        changes.borrow_and_update();
        match enabled_endpoints(ctx.broker.as_ref()).await {
            Ok(wanted) => reconcile(&ctx, &shutdown, &mut running, wanted),
            Err(e) => tracing::warn!(error = %e, "could not list push subscriptions"),
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(RESYNC) => {}
            () = shutdown.cancelled() => break,
        }
    }
    for (_, r) in running.drain() {
        r.stop.cancel();
        let _ = r.task.await;
    }
}

fn reconcile(
    ctx: &Arc<Context>,
    shutdown: &CancellationToken,
    running: &mut HashMap<SubscriptionName, Running>,
    mut wanted: HashMap<SubscriptionName, (TopicName, PushConfig)>,
) {
    running.retain(|name, r| match wanted.remove(name) {
        Some((topic, config)) if !r.task.is_finished() && topic == r.topic => {
            if **r.config.borrow() != config {
                r.config.send_replace(Arc::new(config));
            }
            true
        }
        Some(endpoint) => {
            // Its loop ended by itself (the subscription was briefly gone), or the name now
            // reads another topic (deleted and created again): start it afresh.
            r.stop.cancel();
            wanted.insert(name.clone(), endpoint);
            false
        }
        None => {
            r.stop.cancel();
            false
        }
    });
    for (name, (topic, config)) in wanted {
        let (tx, rx) = watch::channel(Arc::new(config));
        let stop = shutdown.child_token();
        tracing::info!(subscription = %name, "push endpoint started");
        let endpoint = Endpoint {
            name: name.clone(),
            topic: topic.clone(),
            config: rx,
            ctx: Arc::clone(ctx),
            stop: stop.clone(),
        };
        let task = tokio::spawn(endpoint.run());
        running.insert(
            name,
            Running {
                topic,
                config: tx,
                stop,
                task,
            },
        );
    }
}

/// Every push subscription whose endpoint is enabled, with its topic.
async fn enabled_endpoints(
    broker: &dyn Broker,
) -> Result<HashMap<SubscriptionName, (TopicName, PushConfig)>, opal_core::BrokerError> {
    let mut out = HashMap::new();
    let mut after = None;
    loop {
        let page = broker
            .list_subscriptions(None, after.as_ref(), PAGE)
            .await?;
        let full = page.len() == PAGE;
        after = page.last().map(|s| s.name.clone());
        for s in page {
            if let Some(push) = s.config.push
                && matches!(push.state, EndpointState::Enabled)
            {
                out.insert(s.name, (s.config.topic, push));
            }
        }
        if !full {
            return Ok(out);
        }
    }
}
