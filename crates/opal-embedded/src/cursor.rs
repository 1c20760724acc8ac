//! A subscription's ack state and leases on one partition, as a pure state machine.
//!
//! The durable part is the ack floor (every offset below it is acked) and the sparse set of acked
//! offsets above it; leases live in memory only. After a restart every unacked offset from the
//! floor on is delivered again, which is what at-least-once allows.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    token: u64,
    deadline: Instant,
    attempt: u32,
}

/// What to do with one ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckCheck {
    /// Held by this lease and in time: apply it.
    Accept,
    /// Acked before (a retried ack call): nothing to do, report success.
    AlreadyAcked,
    Reject(&'static str),
}

/// The durable change one ack call makes to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AckPlan {
    pub(crate) new_floor: u64,
    /// Acked offsets at or above the new floor, to store.
    pub(crate) insert: Vec<u64>,
    /// Stored acked offsets that fell below the new floor, to delete.
    pub(crate) delete: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct PartitionCursor {
    floor: u64,
    acked: BTreeSet<u64>,
    /// The next offset never handed out since this process opened the subscription.
    next: u64,
    leases: BTreeMap<u64, Lease>,
    /// Leases in deadline order, so finding expired ones does not scan every lease.
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl PartitionCursor {
    pub(crate) fn new(floor: u64, acked: BTreeSet<u64>) -> Self {
        PartitionCursor {
            floor,
            acked,
            next: floor,
            leases: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Moves the never-delivered position forward past `offset` (messages were handed out or skipped).
    pub(crate) fn advance_past(&mut self, offset: u64) {
        self.next = self.next.max(offset + 1);
    }

    pub(crate) fn is_acked(&self, offset: u64) -> bool {
        offset < self.floor || self.acked.contains(&offset)
    }

    /// Offsets whose lease ran out by `now`, oldest deadline first.
    pub(crate) fn expired(&self, now: Instant, max: usize) -> Vec<u64> {
        self.by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(max)
            .map(|&(_, offset)| offset)
            .collect()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|&(deadline, _)| deadline)
    }

    /// Leases `offset` until `deadline`; returns the attempt number of this delivery.
    pub(crate) fn lease(&mut self, offset: u64, token: u64, deadline: Instant) -> u32 {
        let attempt = match self.leases.get(&offset) {
            Some(old) => {
                self.by_deadline.remove(&(old.deadline, offset));
                old.attempt + 1
            }
            None => 1,
        };
        self.leases.insert(
            offset,
            Lease {
                token,
                deadline,
                attempt,
            },
        );
        self.by_deadline.insert((deadline, offset));
        attempt
    }

    /// Forgets a lease without acking (the message is gone, e.g. removed by retention).
    pub(crate) fn drop_lease(&mut self, offset: u64) {
        if let Some(old) = self.leases.remove(&offset) {
            self.by_deadline.remove(&(old.deadline, offset));
        }
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.leases.len()
    }

    pub(crate) fn check_ack(&self, offset: u64, token: u64, now: Instant) -> AckCheck {
        if self.is_acked(offset) {
            return AckCheck::AlreadyAcked;
        }
        match self.leases.get(&offset) {
            Some(lease) if lease.token != token => {
                AckCheck::Reject("the lease expired and the message was delivered again")
            }
            Some(lease) if lease.deadline <= now => {
                AckCheck::Reject("the ack deadline passed; the message will be delivered again")
            }
            Some(_) => AckCheck::Accept,
            None => AckCheck::Reject("not leased: the lease expired or the server restarted"),
        }
    }

    /// The durable change that acking `offsets` (all accepted by `check_ack`) makes.
    pub(crate) fn plan_acks(&self, offsets: &BTreeSet<u64>) -> AckPlan {
        let mut floor = self.floor;
        while self.acked.contains(&floor) || offsets.contains(&floor) {
            floor += 1;
        }
        AckPlan {
            new_floor: floor,
            insert: offsets.range(floor..).copied().collect(),
            delete: self.acked.range(..floor).copied().collect(),
        }
    }

    /// Applies a plan once it is durable.
    pub(crate) fn apply_acks(&mut self, offsets: &BTreeSet<u64>, plan: &AckPlan) {
        for &offset in offsets {
            self.drop_lease(offset);
        }
        self.acked.extend(plan.insert.iter().copied());
        self.acked = self.acked.split_off(&plan.new_floor);
        self.floor = plan.new_floor;
        self.next = self.next.max(self.floor);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn acks(offsets: &[u64]) -> BTreeSet<u64> {
        offsets.iter().copied().collect()
    }

    #[test]
    fn floor_advances_over_contiguous_acks_only() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let mut c = PartitionCursor::new(0, BTreeSet::new());
        for o in 0..4 {
            c.lease(o, o, later);
        }
        let first = acks(&[1, 3]);
        let plan = c.plan_acks(&first);
        assert_eq!(
            plan,
            AckPlan {
                new_floor: 0,
                insert: vec![1, 3],
                delete: vec![]
            }
        );
        c.apply_acks(&first, &plan);
        let second = acks(&[0]);
        let plan = c.plan_acks(&second);
        assert_eq!(
            plan,
            AckPlan {
                new_floor: 2,
                insert: vec![],
                delete: vec![1]
            }
        );
        c.apply_acks(&second, &plan);
        assert_eq!(c.floor(), 2);
        assert!(c.is_acked(3) && !c.is_acked(2));
        assert_eq!(c.in_flight(), 1);
    }

    #[test]
    fn expired_lease_is_redelivered_with_next_attempt_and_old_receipt_refused() {
        let now = Instant::now();
        let mut c = PartitionCursor::new(0, BTreeSet::new());
        assert_eq!(c.lease(0, 1, now + Duration::from_millis(5)), 1);
        assert!(c.expired(now, 10).is_empty());
        let after = now + Duration::from_millis(6);
        assert_eq!(c.expired(after, 10), vec![0]);
        assert_eq!(
            c.check_ack(0, 1, after),
            AckCheck::Reject("the ack deadline passed; the message will be delivered again")
        );
        assert_eq!(c.lease(0, 2, after + Duration::from_secs(1)), 2);
        assert!(matches!(c.check_ack(0, 1, after), AckCheck::Reject(_)));
        assert_eq!(c.check_ack(0, 2, after), AckCheck::Accept);
        assert!(c.expired(after, 10).is_empty());
    }

    #[test]
    fn acked_offsets_report_already_acked() {
        let c = PartitionCursor::new(5, acks(&[7]));
        let now = Instant::now();
        assert_eq!(c.check_ack(4, 0, now), AckCheck::AlreadyAcked);
        assert_eq!(c.check_ack(7, 0, now), AckCheck::AlreadyAcked);
        assert!(matches!(c.check_ack(6, 0, now), AckCheck::Reject(_)));
    }
}
