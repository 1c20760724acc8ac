//! Retention rules as pure functions: when to roll the active segment and which closed segments go.

use crate::config::LogConfig;
use crate::segment::SegmentMeta;

/// Whether `enforce_retention` rolls the active segment before deleting. It rolls when the
/// segment is older than `segment_max_age`, and when age retention would delete everything
/// else and the active segment is expired too: rolled, it is deleted in the same pass, so an
/// idle log whose records have all expired ends up empty instead of keeping its last segment.
pub(crate) fn should_roll<'a>(
    active: &SegmentMeta,
    mut closed: impl Iterator<Item = &'a SegmentMeta>,
    config: &LogConfig,
    now_ms: i64,
) -> bool {
    if active.is_empty() {
        return false;
    }
    if active.is_roll_due(now_ms, config.segment_max_age_ms()) {
        return true;
    }
    config.retention_max_age_ms().is_some_and(|max_age| {
        active.is_expired(now_ms, max_age) && closed.all(|s| s.is_expired(now_ms, max_age))
    })
}

/// How many of the oldest closed segments to delete: while the oldest one is expired, or the
/// log (all segments, active included) is larger than `retention_max_bytes`, or every record
/// of it lies below `released_below` (its readers are done with it). Deletion stops at the
/// first segment kept, so the log never gets a hole.
pub(crate) fn segments_to_delete<'a>(
    closed: impl Iterator<Item = &'a SegmentMeta>,
    mut total_bytes: u64,
    config: &LogConfig,
    now_ms: i64,
    released_below: Option<u64>,
) -> usize {
    let max_age = config.retention_max_age_ms();
    let mut count = 0;
    for segment in closed {
        let expired = max_age.is_some_and(|age| segment.is_expired(now_ms, age));
        let too_big = config
            .retention_max_bytes
            .is_some_and(|limit| total_bytes > limit);
        let released = released_below.is_some_and(|below| segment.next_offset <= below);
        if !(expired || too_big || released) {
            break;
        }
        total_bytes -= segment.size;
        count += 1;
    }
    count
}

#[cfg(test)]
mod released_tests {
    use super::*;

    #[test]
    fn released_segments_go_oldest_first_and_stop_at_the_first_kept() {
        let mut a = SegmentMeta::empty(0);
        a.push_batch(10, 10, 100);
        let mut b = SegmentMeta::empty(10);
        b.push_batch(10, 10, 100);
        let cfg = LogConfig::default();
        assert_eq!(segments_to_delete([a, b].iter(), 20, &cfg, 0, Some(9)), 0);
        assert_eq!(segments_to_delete([a, b].iter(), 20, &cfg, 0, Some(10)), 1);
        assert_eq!(segments_to_delete([a, b].iter(), 20, &cfg, 0, Some(25)), 2);
        assert_eq!(segments_to_delete([a, b].iter(), 20, &cfg, 0, None), 0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn segment(base: u64, size: u64, max_ts: i64) -> SegmentMeta {
        let mut meta = SegmentMeta::empty(base);
        meta.push_batch(size, 10, max_ts);
        meta
    }

    fn config(age_ms: Option<u64>, bytes: Option<u64>) -> LogConfig {
        LogConfig {
            retention_max_age: age_ms.map(Duration::from_millis),
            retention_max_bytes: bytes,
            segment_max_age: Duration::from_millis(1_000),
            ..LogConfig::default()
        }
    }

    #[test]
    fn deletes_expired_prefix_only() {
        let closed = [
            segment(0, 10, 100),
            segment(10, 10, 500),
            segment(20, 10, 200),
        ];
        let cfg = config(Some(300), None);
        assert_eq!(segments_to_delete(closed.iter(), 40, &cfg, 350, None), 0);
        assert_eq!(segments_to_delete(closed.iter(), 40, &cfg, 401, None), 1);
        // The third is expired at 600 but the second is not: no hole.
        assert_eq!(segments_to_delete(closed.iter(), 40, &cfg, 600, None), 1);
        assert_eq!(segments_to_delete(closed.iter(), 40, &cfg, 801, None), 3);
    }

    #[test]
    fn deletes_while_over_the_byte_limit() {
        let closed = [segment(0, 10, 0), segment(10, 20, 0), segment(20, 30, 0)];
        let cfg = config(None, Some(45));
        // 60 closed + 5 active = 65 > 45: drop 10 (55 > 45), drop 20 (35): stop.
        assert_eq!(segments_to_delete(closed.iter(), 65, &cfg, 0, None), 2);
        assert_eq!(segments_to_delete(closed.iter(), 45, &cfg, 0, None), 0);
        // Never the active segment, however large.
        assert_eq!(segments_to_delete(closed.iter(), 1_000, &cfg, 0, None), 3);
        assert_eq!(segments_to_delete([].iter(), 1_000, &cfg, 0, None), 0);
    }

    #[test]
    fn rolls_for_segment_age_and_for_total_expiry() {
        let active = segment(30, 10, 5_000);
        let closed = [segment(0, 10, 100)];
        let cfg = config(Some(300), None);
        assert!(!should_roll(
            &SegmentMeta::empty(9),
            closed.iter(),
            &cfg,
            i64::MAX
        ));
        assert!(!should_roll(&active, closed.iter(), &cfg, 5_300));
        assert!(should_roll(&active, closed.iter(), &cfg, 5_301));
        let old_closed = [segment(0, 10, 9_000)];
        // Expired by segment age alone (first batch at 5000, max age 1000).
        assert!(should_roll(
            &active,
            old_closed.iter(),
            &config(None, None),
            6_001
        ));
        let recent = [segment(0, 10, 9_000)];
        let cfg = LogConfig {
            segment_max_age: Duration::from_secs(3_600),
            ..config(Some(300), None)
        };
        assert!(
            !should_roll(&active, recent.iter(), &cfg, 9_200),
            "older segment not expired yet"
        );
        assert!(should_roll(&active, recent.iter(), &cfg, 9_301));
    }
}
