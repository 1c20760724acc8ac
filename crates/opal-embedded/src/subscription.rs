//! One open subscription: its settings, its topic, the per-partition cursors and its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use opal_core::{StartPosition, Subscription, SubscriptionName};

use crate::EmbeddedError;
use crate::cursor::PartitionCursor;
use crate::topic::OpenTopic;

#[derive(Debug)]
pub(crate) struct OpenSubscription {
    name: SubscriptionName,
    pub(crate) topic: Arc<OpenTopic>,
    /// The current settings and where dead letters go; replaced whole on update.
    settings: RwLock<Settings>,
    pub(crate) state: tokio::sync::Mutex<SubscriptionState>,
    pub(crate) counters: Counters,
    /// Set when deleted, so calls that found it just before stop instead of writing its state.
    pub(crate) deleted: AtomicBool,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) subscription: Arc<Subscription>,
    /// Where messages go after `max_deliveries` (dropped when `None`).
    pub(crate) dead_letter: Option<Arc<OpenTopic>>,
}

impl OpenSubscription {
    pub(crate) fn new(
        subscription: Subscription,
        topic: Arc<OpenTopic>,
        dead_letter: Option<Arc<OpenTopic>>,
        cursors: Vec<PartitionCursor>,
    ) -> Self {
        OpenSubscription {
            name: subscription.name.clone(),
            topic,
            settings: RwLock::new(Settings {
                subscription: Arc::new(subscription),
                dead_letter,
            }),
            state: tokio::sync::Mutex::new(SubscriptionState::new(cursors)),
            counters: Counters::default(),
            deleted: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The current settings (a snapshot: an update in between does not change it).
    pub(crate) fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn subscription(&self) -> Arc<Subscription> {
        self.settings().subscription
    }

    pub(crate) fn set_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }
}

/// Counters since the process started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) expired: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct SubscriptionState {
    pub(crate) cursors: Vec<PartitionCursor>,
    next_token: u64,
    /// Tokens issued since the last seek (or open) lie in `(epoch_start, next_token]`; older
    /// receipts name leases of a position the subscription left.
    epoch_start: u64,
    /// Partition to read first on the next pull, so no partition starves the others.
    pub(crate) first_partition: u32,
}

impl SubscriptionState {
    pub(crate) fn new(cursors: Vec<PartitionCursor>) -> Self {
        // A random start keeps receipts from before a restart from matching new leases.
        let start: u64 = rand::random();
        SubscriptionState {
            cursors,
            next_token: start,
            epoch_start: start,
            first_partition: 0,
        }
    }

    /// Voids every receipt issued so far (after a seek).
    pub(crate) fn new_epoch(&mut self) {
        self.epoch_start = self.next_token;
    }

    /// Whether a receipt's token was issued in the current epoch.
    pub(crate) fn is_current(&self, token: u64) -> bool {
        let issued = self.next_token.wrapping_sub(self.epoch_start);
        token.wrapping_sub(self.epoch_start).wrapping_sub(1) < issued
    }

    pub(crate) fn token(&mut self) -> u64 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }
}

/// The ack floor of each partition for a subscription starting (or seeking) at `position`.
pub(crate) fn floors_for(
    topic: &OpenTopic,
    position: StartPosition,
) -> Result<Vec<u64>, EmbeddedError> {
    (0..topic.partitions())
        .map(|p| {
            let log = topic.log(p);
            let (start, end) = (log.start_offset(), log.next_offset());
            Ok(match position {
                StartPosition::Earliest => start,
                StartPosition::Latest => end,
                StartPosition::Offset(n) => n.clamp(start, end),
                StartPosition::Time(t) => log
                    .offset_for_time(t.as_millisecond())?
                    .unwrap_or(end)
                    .clamp(start, end),
            })
        })
        .collect()
}
