//! A subscription's ack state, leases, retries and key order on one partition, as a pure state
//! machine: no I/O, no clock of its own (times are milliseconds given by the caller).
//!
//! The durable part is the ack floor (every offset below it is acked), the sparse set of acked
//! offsets above it, and the retries (attempt count, earliest redelivery); leases live in memory
//! only. After a restart every unacked offset from the floor on is delivered again, which is what
//! at-least-once allows.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// An ordering key, shared between the structures that track it.
pub(crate) type Key = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) token: u64,
    pub(crate) deadline_ms: i64,
    pub(crate) attempt: u32,
    pub(crate) key: Option<Key>,
}

/// A failed delivery waiting for its next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Deliveries made so far.
    pub(crate) attempt: u32,
    pub(crate) not_before_ms: i64,
    pub(crate) key: Option<Key>,
}

/// What to do with one ack id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseCheck {
    /// Held by this lease and in time: apply it.
    Live,
    /// Acked before (a retried call): nothing to do.
    AlreadyAcked,
    Reject(&'static str),
}

/// The durable change that acking some offsets makes to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AckPlan {
    pub(crate) new_floor: u64,
    /// Acked offsets at or above the new floor, to store.
    pub(crate) insert: Vec<u64>,
    /// Stored acked offsets that fell below the new floor, to delete.
    pub(crate) delete: Vec<u64>,
    /// Every offset acked by this plan (their retry records are deleted).
    pub(crate) acked: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionCursor {
    floor: u64,
    acked: BTreeSet<u64>,
    /// The next offset never read since this process opened the subscription.
    next: u64,
    leases: BTreeMap<u64, Lease>,
    /// Leases in deadline order, so finding expired ones does not scan every lease.
    lease_deadlines: BTreeSet<(i64, u64)>,
    retries: BTreeMap<u64, Retry>,
    retry_times: BTreeSet<(i64, u64)>,
    /// Ordered subscriptions: the offset that holds each key (leased, retrying or ready).
    busy_keys: HashMap<Key, u64>,
    /// Ordered subscriptions: offsets read but waiting for their key, in publish order.
    held: HashMap<Key, VecDeque<u64>>,
    held_count: usize,
    /// Ordered subscriptions: offsets whose key was released to them, ready to deliver.
    ready: BTreeMap<u64, Option<Key>>,
    /// Which lease's token acked each recently acked offset (`DEAD_LETTERED` when no consumer's
    /// did), so a retried ack of the same receipt succeeds while a stale receipt is refused.
    acked_by: BTreeMap<u64, u64>,
}

/// Tokens no receipt carries: the message was acked by dead-lettering.
const DEAD_LETTERED: u64 = u64::MAX;
/// Recently acked offsets remembered in `acked_by`; older acks of unknown receipts are
/// reported as already acked.
const ACKED_BY_LIMIT: usize = 65_536;

impl PartitionCursor {
    pub(crate) fn new(floor: u64, acked: BTreeSet<u64>) -> Self {
        PartitionCursor {
            floor,
            acked,
            next: floor,
            ..Self::default()
        }
    }

    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    #[cfg(test)]
    pub(crate) fn acked_count(&self) -> usize {
        self.acked.len()
    }

    /// Moves the never-read position past `offset`.
    pub(crate) fn advance_past(&mut self, offset: u64) {
        self.next = self.next.max(offset + 1);
    }

    pub(crate) fn is_acked(&self, offset: u64) -> bool {
        offset < self.floor || self.acked.contains(&offset)
    }

    /// Whether the offset is already accounted for: acked, leased, retrying, held or ready.
    pub(crate) fn is_tracked(&self, offset: u64) -> bool {
        self.is_acked(offset)
            || self.leases.contains_key(&offset)
            || self.retries.contains_key(&offset)
            || self.ready.contains_key(&offset)
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.leases.len()
    }

    /// Leases still running at `now_ms` (expired ones wait to be turned into retries).
    pub(crate) fn in_flight_at(&self, now_ms: i64) -> usize {
        self.lease_deadlines.range((now_ms + 1, 0)..).count()
    }

    pub(crate) fn held_count(&self) -> usize {
        self.held_count
    }

    /// Takes the leases whose deadline passed by `now_ms`, oldest first.
    pub(crate) fn take_expired(&mut self, now_ms: i64) -> Vec<(u64, Lease)> {
        let due: Vec<(i64, u64)> = self
            .lease_deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .copied()
            .collect();
        due.into_iter()
            .filter_map(|(deadline, offset)| {
                self.lease_deadlines.remove(&(deadline, offset));
                self.leases.remove(&offset).map(|lease| (offset, lease))
            })
            .collect()
    }

    /// Offsets whose retry time has come, earliest first.
    pub(crate) fn due_retries(&self, now_ms: i64, max: usize) -> Vec<u64> {
        self.retry_times
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(max)
            .map(|&(_, offset)| offset)
            .collect()
    }

    /// Offsets released to their key and ready to deliver.
    pub(crate) fn ready(&self, max: usize) -> Vec<u64> {
        self.ready.keys().take(max).copied().collect()
    }

    /// The earliest time something here changes by itself: a lease expires or a retry is due.
    pub(crate) fn next_wake_ms(&self) -> Option<i64> {
        let lease = self.lease_deadlines.first().map(|&(t, _)| t);
        let retry = self.retry_times.first().map(|&(t, _)| t);
        lease.into_iter().chain(retry).min()
    }

    /// Ordered subscriptions: whether another offset holds this key.
    pub(crate) fn key_blocked(&self, key: &Key, offset: u64) -> bool {
        self.busy_keys
            .get(key)
            .is_some_and(|&holder| holder != offset)
    }

    /// Ordered subscriptions: parks `offset` until its key is free.
    pub(crate) fn hold(&mut self, key: Key, offset: u64) {
        self.held.entry(key).or_default().push_back(offset);
        self.held_count += 1;
    }

    /// Hands `offset` to a consumer until `deadline_ms`; returns the attempt number.
    /// `ordered` reserves the key for this offset.
    pub(crate) fn lease(
        &mut self,
        offset: u64,
        token: u64,
        deadline_ms: i64,
        key: Option<Key>,
        ordered: bool,
    ) -> u32 {
        let previous = self.retries.remove(&offset).map(|retry| {
            self.retry_times.remove(&(retry.not_before_ms, offset));
            retry.attempt
        });
        self.ready.remove(&offset);
        if let Some(old) = self.leases.remove(&offset) {
            self.lease_deadlines.remove(&(old.deadline_ms, offset));
        }
        if ordered && let Some(key) = &key {
            self.busy_keys.insert(key.clone(), offset);
        }
        let attempt = previous.unwrap_or(0) + 1;
        self.leases.insert(
            offset,
            Lease {
                token,
                deadline_ms,
                attempt,
                key,
            },
        );
        self.lease_deadlines.insert((deadline_ms, offset));
        attempt
    }

    /// Records a failed delivery that will be retried at `not_before_ms` (keeps its key held).
    pub(crate) fn schedule_retry(&mut self, offset: u64, retry: Retry) {
        if let Some(old) = self.retries.remove(&offset) {
            self.retry_times.remove(&(old.not_before_ms, offset));
        }
        self.retry_times.insert((retry.not_before_ms, offset));
        self.retries.insert(offset, retry);
    }

    /// Restores a retry loaded from storage (after a restart), reserving its key.
    pub(crate) fn restore_retry(&mut self, offset: u64, retry: Retry, ordered: bool) {
        if ordered && let Some(key) = &retry.key {
            self.busy_keys.insert(key.clone(), offset);
        }
        self.schedule_retry(offset, retry);
    }

    pub(crate) fn check_lease(&self, offset: u64, token: u64, now_ms: i64) -> LeaseCheck {
        if self.is_acked(offset) {
            return match self.acked_by.get(&offset) {
                Some(&by) if by != token => LeaseCheck::Reject(
                    "the lease expired; the message was delivered again or dead-lettered",
                ),
                _ => LeaseCheck::AlreadyAcked,
            };
        }
        match self.leases.get(&offset) {
            Some(lease) if lease.token != token => {
                LeaseCheck::Reject("the lease expired and the message was delivered again")
            }
            Some(lease) if lease.deadline_ms <= now_ms => {
                LeaseCheck::Reject("the ack deadline passed; the message will be delivered again")
            }
            Some(_) => LeaseCheck::Live,
            None => LeaseCheck::Reject("not leased: the lease expired or the server restarted"),
        }
    }

    /// Ends a live lease without acking it (nack); the caller retries or dead-letters it.
    pub(crate) fn take_lease(&mut self, offset: u64) -> Option<Lease> {
        let lease = self.leases.remove(&offset)?;
        self.lease_deadlines.remove(&(lease.deadline_ms, offset));
        Some(lease)
    }

    pub(crate) fn extend(&mut self, offset: u64, deadline_ms: i64) {
        if let Some(lease) = self.leases.get_mut(&offset) {
            self.lease_deadlines.remove(&(lease.deadline_ms, offset));
            lease.deadline_ms = deadline_ms;
            self.lease_deadlines.insert((deadline_ms, offset));
        }
    }

    /// The durable change that acking `offsets` makes.
    pub(crate) fn plan_acks(&self, offsets: &BTreeSet<u64>) -> AckPlan {
        let mut floor = self.floor;
        while self.acked.contains(&floor) || offsets.contains(&floor) {
            floor += 1;
        }
        AckPlan {
            new_floor: floor,
            insert: offsets.range(floor..).copied().collect(),
            delete: self.acked.range(..floor).copied().collect(),
            acked: offsets.iter().copied().collect(),
        }
    }

    /// Applies a plan once it is durable; frees the keys the acked offsets held.
    pub(crate) fn apply_acks(&mut self, plan: &AckPlan) {
        for &offset in &plan.acked {
            let (by, key) = match self.take_lease(offset) {
                Some(lease) => (Some(lease.token), lease.key),
                None => match self.retries.remove(&offset) {
                    Some(retry) => {
                        self.retry_times.remove(&(retry.not_before_ms, offset));
                        (Some(DEAD_LETTERED), retry.key)
                    }
                    None => (None, self.ready.remove(&offset).flatten()),
                },
            };
            if let Some(by) = by {
                self.acked_by.insert(offset, by);
                if self.acked_by.len() > ACKED_BY_LIMIT {
                    self.acked_by.pop_first();
                }
            }
            if let Some(key) = key {
                self.release_key(&key, offset);
            }
        }
        self.acked.extend(plan.insert.iter().copied());
        self.acked = self.acked.split_off(&plan.new_floor);
        self.floor = plan.new_floor;
        self.next = self.next.max(self.floor);
    }

    /// Frees `key` if `offset` held it, handing it to the next held offset of that key.
    fn release_key(&mut self, key: &Key, offset: u64) {
        if self.busy_keys.get(key) != Some(&offset) {
            return;
        }
        self.busy_keys.remove(key);
        let Some(queue) = self.held.get_mut(key) else {
            return;
        };
        if let Some(next) = queue.pop_front() {
            self.held_count -= 1;
            self.busy_keys.insert(key.clone(), next);
            self.ready.insert(next, Some(key.clone()));
        }
        if queue.is_empty() {
            self.held.remove(key);
        }
    }

    /// Moves the floor up to `start` when retention removed what lies below; returns how many
    /// unacked messages were lost that way.
    pub(crate) fn skip_to(&mut self, start: u64) -> u64 {
        if self.floor >= start {
            return 0;
        }
        let acked_below = self.acked.range(..start).count() as u64;
        let lost = start - self.floor - acked_below;
        self.acked = self.acked.split_off(&start);
        self.floor = start;
        self.next = self.next.max(start);
        let gone: Vec<u64> = self.leases.range(..start).map(|(&o, _)| o).collect();
        for offset in gone {
            self.take_lease(offset);
        }
        let gone: Vec<u64> = self.retries.range(..start).map(|(&o, _)| o).collect();
        for offset in gone {
            if let Some(r) = self.retries.remove(&offset) {
                self.retry_times.remove(&(r.not_before_ms, offset));
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(offsets: &[u64]) -> BTreeSet<u64> {
        offsets.iter().copied().collect()
    }

    #[test]
    fn floor_advances_over_contiguous_acks_only() {
        let mut c = PartitionCursor::new(0, BTreeSet::new());
        for o in 0..4 {
            c.lease(o, o, 100, None, false);
        }
        let plan = c.plan_acks(&set(&[1, 3]));
        assert_eq!(
            (plan.new_floor, plan.insert.clone(), plan.delete.clone()),
            (0, vec![1, 3], vec![])
        );
        c.apply_acks(&plan);
        let plan = c.plan_acks(&set(&[0]));
        assert_eq!(
            (plan.new_floor, plan.insert.clone(), plan.delete.clone()),
            (2, vec![], vec![1])
        );
        c.apply_acks(&plan);
        assert_eq!(c.floor(), 2);
        assert!(c.is_acked(3) && !c.is_acked(2));
        assert_eq!(c.in_flight(), 1);
    }

    #[test]
    fn expired_lease_becomes_a_retry_and_the_old_receipt_is_refused() {
        let mut c = PartitionCursor::new(0, BTreeSet::new());
        assert_eq!(c.lease(0, 1, 5, None, false), 1);
        assert!(c.take_expired(4).is_empty());
        let expired = c.take_expired(5);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            c.check_lease(0, 1, 5),
            LeaseCheck::Reject("not leased: the lease expired or the server restarted")
        );
        c.schedule_retry(
            0,
            Retry {
                attempt: 1,
                not_before_ms: 10,
                key: None,
            },
        );
        assert!(c.due_retries(9, 10).is_empty());
        assert_eq!(c.due_retries(10, 10), vec![0]);
        assert_eq!(c.lease(0, 2, 20, None, false), 2);
        assert!(matches!(c.check_lease(0, 1, 11), LeaseCheck::Reject(_)));
        assert_eq!(c.check_lease(0, 2, 11), LeaseCheck::Live);
        assert_eq!(
            c.check_lease(0, 2, 20),
            LeaseCheck::Reject("the ack deadline passed; the message will be delivered again")
        );
    }

    #[test]
    fn a_key_is_released_to_the_next_held_offset_in_order() {
        let key: Key = Arc::from("k");
        let mut c = PartitionCursor::new(0, BTreeSet::new());
        c.lease(0, 1, 100, Some(key.clone()), true);
        assert!(c.key_blocked(&key, 1));
        c.hold(key.clone(), 1);
        c.hold(key.clone(), 2);
        assert!(c.ready(10).is_empty());
        let plan = c.plan_acks(&set(&[0]));
        c.apply_acks(&plan);
        assert_eq!(c.ready(10), vec![1]);
        assert!(c.key_blocked(&key, 2));
        c.lease(1, 2, 100, Some(key.clone()), true);
        let plan = c.plan_acks(&set(&[1]));
        c.apply_acks(&plan);
        assert_eq!(c.ready(10), vec![2]);
        assert_eq!(c.held_count(), 0);
    }

    #[test]
    fn a_stale_receipt_of_an_acked_message_is_refused_but_a_retried_ack_succeeds() {
        let mut c = PartitionCursor::new(0, BTreeSet::new());
        c.lease(0, 1, 10, None, false);
        c.take_expired(10);
        c.schedule_retry(
            0,
            Retry {
                attempt: 1,
                not_before_ms: 10,
                key: None,
            },
        );
        c.lease(0, 2, 100, None, false);
        let plan = c.plan_acks(&set(&[0]));
        c.apply_acks(&plan);
        assert_eq!(
            c.check_lease(0, 2, 50),
            LeaseCheck::AlreadyAcked,
            "the same receipt again"
        );
        assert!(
            matches!(c.check_lease(0, 1, 50), LeaseCheck::Reject(_)),
            "the superseded receipt"
        );
    }

    #[test]
    fn acked_offsets_report_already_acked() {
        let c = PartitionCursor::new(5, set(&[7]));
        assert_eq!(c.check_lease(4, 0, 0), LeaseCheck::AlreadyAcked);
        assert_eq!(c.check_lease(7, 0, 0), LeaseCheck::AlreadyAcked);
        assert!(matches!(c.check_lease(6, 0, 0), LeaseCheck::Reject(_)));
    }

    #[test]
    fn skipping_to_the_log_start_counts_what_was_lost() {
        let mut c = PartitionCursor::new(0, set(&[2, 3]));
        c.lease(1, 1, 100, None, false);
        assert_eq!(c.skip_to(5), 3);
        assert_eq!((c.floor(), c.in_flight(), c.acked_count()), (5, 0, 0));
    }
}
