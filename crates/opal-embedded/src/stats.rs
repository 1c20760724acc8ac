//! Subscription stats: backlog, in flight, oldest unacked age, and the counters.

use opal_core::SubscriptionStats;

use crate::subscription::{Counters, OpenSubscription};
use crate::{EmbeddedBroker, EmbeddedError};

/// Messages walked per partition to count the backlog exactly (acked ones and those the
/// filter drops are not backlog); past this, the rest is counted as backlog and its bytes
/// estimated from the walked part.
const SCAN_LIMIT: u64 = 10_000;

impl EmbeddedBroker {
    pub(crate) async fn subscription_stats(
        &self,
        sub: &OpenSubscription,
    ) -> Result<SubscriptionStats, EmbeddedError> {
        let subscription = sub.subscription();
        let filter = subscription.config.filter.as_ref();
        let state = sub.state.lock().await;
        let now = self.inner.clock.now_ms();
        let mut stats = SubscriptionStats::default();
        let mut oldest_publish_ms: Option<i64> = None;
        for partition in 0..sub.topic.partitions() {
            let cursor = &state.cursors[partition as usize];
            let log = sub.topic.log(partition);
            let end = log.next_offset();
            let floor = cursor.floor().max(log.start_offset());

            // Walk the unacked range, up to a limit: exact counts, bytes and oldest age there.
            let mut offset = floor;
            let stop = end.min(floor.saturating_add(SCAN_LIMIT));
            let (mut scanned, mut backlog, mut bytes) = (0u64, 0u64, 0u64);
            while offset < stop {
                let messages = sub.topic.read(partition, offset)?;
                let Some(last) = messages.last().map(|m| m.offset) else {
                    break;
                };
                for m in messages.iter().filter(|m| m.offset < stop) {
                    scanned += 1;
                    if cursor.is_acked(m.offset)
                        || filter.is_some_and(|f| !f.matches(&m.attributes))
                    {
                        continue;
                    }
                    backlog += 1;
                    bytes += m.data.len() as u64;
                    let ms = m.publish_time.as_millisecond();
                    oldest_publish_ms = Some(oldest_publish_ms.map_or(ms, |o| o.min(ms)));
                }
                offset = last + 1;
            }
            // Past the limit, count unacked messages as backlog at the scanned average size.
            let rest = end.saturating_sub(stop);
            if rest > 0 {
                stats.backlog += rest;
                if scanned > 0 {
                    stats.backlog_bytes += rest * (bytes / scanned.max(1));
                }
            }
            stats.backlog += backlog;
            stats.backlog_bytes += bytes;
            stats.in_flight += cursor.in_flight_at(now) as u64;
        }
        if let Some(published) = oldest_publish_ms {
            stats.oldest_unacked_age_ms = now.saturating_sub(published).max(0) as u64;
        }
        let c = &sub.counters;
        stats.delivered = Counters::get(&c.delivered);
        stats.acked = Counters::get(&c.acked);
        stats.nacked = Counters::get(&c.nacked);
        stats.redelivered = Counters::get(&c.redelivered);
        stats.dead_lettered = Counters::get(&c.dead_lettered);
        stats.expired = Counters::get(&c.expired);
        Ok(stats)
    }
}
