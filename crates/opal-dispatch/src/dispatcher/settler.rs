//! Acks of one endpoint's deliveries, settled together: while one settle call commits, the
//! acks that arrive gather for the next, so a fast endpoint costs one durable commit per
//! batch rather than one per message.

use std::sync::Arc;

use opal_core::{AckId, Broker, Settle, SubscriptionName};
use tokio::sync::mpsc;

/// Most ids in one settle call (the broker's default `max_ack_ids`).
const MAX_BATCH: usize = 1_000;
/// How long acks gather before a commit.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Debug, Clone)]
pub(crate) struct Settler {
    tx: mpsc::UnboundedSender<AckId>,
}

impl Settler {
    /// Starts the task; it ends once every `Settler` is dropped and the queue is settled.
    pub(crate) fn spawn(
        broker: Arc<dyn Broker>,
        subscription: SubscriptionName,
    ) -> (Settler, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(ack_batches(broker, subscription, rx));
        (Settler { tx }, task)
    }

    /// Queues an ack. Bounded by the endpoint's deliveries in flight, which hold their slot
    /// until the ack is queued.
    pub(crate) fn ack(&self, id: AckId) {
        // The task outlives every sender, so the send cannot fail while one exists.
        let _ = self.tx.send(id);
    }
}

async fn ack_batches(
    broker: Arc<dyn Broker>,
    subscription: SubscriptionName,
    mut rx: mpsc::UnboundedReceiver<AckId>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // The deliveries sent with this one answer within about a millisecond: waiting that
        // long turns a commit per ack into a commit per round of the endpoint.
        tokio::time::sleep(GATHER).await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        match broker.settle(&subscription, &batch, Settle::Ack).await {
            Ok(outcome) => {
                for rejected in outcome.rejected {
                    // The lease ran out before the answer came: the message is delivered again.
                    tracing::debug!(subscription = %subscription, ack_id = %rejected.ack_id.0, reason = %rejected.reason, "ack after the lease");
                }
            }
            Err(e) => {
                tracing::warn!(subscription = %subscription, error = %e, count = batch.len(), "could not ack deliveries; they will be delivered again");
            }
        }
        batch.clear();
    }
}
