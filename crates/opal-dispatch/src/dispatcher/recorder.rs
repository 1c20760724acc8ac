//! Writes the attempt log in batches: one store write per subscription every few
//! milliseconds rather than one per attempt, so logging never paces delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opal_core::{Broker, PushAttempt, SubscriptionName};
use tokio::sync::mpsc;

/// Attempts waiting to be written at most; past it an attempt is dropped from the log (and
/// counted in a warning) rather than holding deliveries up.
const QUEUE: usize = 65_536;
/// How long attempts gather before a write.
const GATHER: Duration = Duration::from_millis(20);

/// Hands attempts to the writer task.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    tx: mpsc::Sender<(SubscriptionName, PushAttempt)>,
}

impl Recorder {
    /// Starts the writer; it ends once every `Recorder` is dropped and the queue is written.
    pub(crate) fn spawn(broker: Arc<dyn Broker>) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_batches(broker, rx));
        (Recorder { tx }, task)
    }

    pub(crate) fn record(&self, subscription: &SubscriptionName, attempt: PushAttempt) {
        if self.tx.try_send((subscription.clone(), attempt)).is_err() {
            tracing::warn!(subscription = %subscription, "attempt log queue full; an attempt was not logged");
        }
    }
}

async fn write_batches(
    broker: Arc<dyn Broker>,
    mut rx: mpsc::Receiver<(SubscriptionName, PushAttempt)>,
) {
    let mut batch: HashMap<SubscriptionName, Vec<PushAttempt>> = HashMap::new();
    while let Some((name, attempt)) = rx.recv().await {
        batch.entry(name).or_default().push(attempt);
        tokio::time::sleep(GATHER).await;
        while let Ok((name, attempt)) = rx.try_recv() {
            batch.entry(name).or_default().push(attempt);
        }
        for (name, attempts) in batch.drain() {
            if let Err(e) = broker.record_push_attempts(&name, attempts).await {
                // A deleted subscription's attempts have nowhere to go; anything else is worth
                // a line, but never stops delivery.
                if !matches!(e, opal_core::BrokerError::SubscriptionNotFound(_)) {
                    tracing::warn!(subscription = %name, error = %e, "could not write the attempt log");
                }
            }
        }
    }
}
