//! Sparse offset and time index of one segment in memory: which batches get entries, and lookups.

/// Maps an offset (relative to the segment base) to the byte position of the batch holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

/// The largest record timestamp of the segment up to and including the indexed batch,
/// and where that batch is. The running maximum makes entries sorted even when record
/// timestamps are not, so a binary search stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

/// The entries of one segment, in batch order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
}

impl SparseIndex {
    pub(crate) fn push(&mut self, (offset, time): (OffsetEntry, TimeEntry)) {
        self.offsets.push(offset);
        self.times.push(time);
    }

    /// The entry of the last indexed batch starting at or before `relative_offset`.
    pub(crate) fn floor_offset(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let after = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map(|i| self.offsets[i])
    }

    /// The last entry whose running max timestamp is below `timestamp`: every batch up to it
    /// is older, so the search for the first batch at or after `timestamp` starts there.
    pub(crate) fn last_time_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let after = self.times.partition_point(|e| e.timestamp < timestamp);
        after.checked_sub(1).map(|i| self.times[i])
    }
}

/// Decides which batches get an index entry: the first batch of the segment, then the first
/// batch after at least `interval` bytes since the last entry. Recovery replays it over the
/// data file, so a rebuilt index equals the one written at append time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexBuilder {
    interval: u64,
    bytes_since_entry: u64,
    running_max: i64,
    started: bool,
}

impl IndexBuilder {
    pub(crate) fn new(interval_bytes: u32) -> Self {
        IndexBuilder {
            interval: u64::from(interval_bytes),
            bytes_since_entry: 0,
            running_max: i64::MIN,
            started: false,
        }
    }

    /// Accounts a batch at `position`; returns the entries to add for it, if any.
    pub(crate) fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        len: u64,
        max_timestamp: i64,
    ) -> Option<(OffsetEntry, TimeEntry)> {
        self.running_max = self.running_max.max(max_timestamp);
        let entry = (!self.started || self.bytes_since_entry >= self.interval).then(|| {
            self.bytes_since_entry = 0;
            (
                OffsetEntry {
                    relative_offset,
                    position,
                },
                TimeEntry {
                    timestamp: self.running_max,
                    relative_offset,
                    position,
                },
            )
        });
        self.started = true;
        self.bytes_since_entry += len;
        entry
    }
}

/// The last element satisfying `pred`, for a predicate that is true on a prefix only, over
/// `len` elements read one by one through a fallible `get` (index files on disk).
pub(crate) fn last_true<T, E>(
    len: u64,
    mut get: impl FnMut(u64) -> Result<T, E>,
    pred: impl Fn(&T) -> bool,
) -> Result<Option<T>, E> {
    let (mut lo, mut hi, mut best) = (0, len, None);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let element = get(mid)?;
        if pred(&element) {
            best = Some(element);
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(batches: &[(u64, i64)], interval: u32) -> SparseIndex {
        let mut builder = IndexBuilder::new(interval);
        let mut index = SparseIndex::default();
        let (mut rel, mut pos) = (0u32, 0u32);
        for &(len, ts) in batches {
            if let Some(entries) = builder.on_batch(rel, pos, len, ts) {
                index.push(entries);
            }
            rel += 2;
            pos += len as u32;
        }
        index
    }

    #[test]
    fn entries_follow_the_byte_interval() {
        let index = build(
            &[(60, 1), (60, 2), (60, 3), (10, 4), (200, 5), (10, 6)],
            100,
        );
        let positions: Vec<u32> = index.offsets.iter().map(|e| e.position).collect();
        // First batch always; then once 100 bytes have passed since the last entry.
        assert_eq!(positions, vec![0, 120, 390]);
    }

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let index = build(&[(50, 0); 10], 100);
        assert_eq!(index.offsets.len(), 5);
        assert_eq!(index.floor_offset(0).unwrap().relative_offset, 0);
        assert_eq!(index.floor_offset(3).unwrap().relative_offset, 0);
        assert_eq!(index.floor_offset(4).unwrap().relative_offset, 4);
        assert_eq!(index.floor_offset(7).unwrap().relative_offset, 4);
        assert_eq!(index.floor_offset(1_000).unwrap().relative_offset, 16);
        assert_eq!(SparseIndex::default().floor_offset(0), None);
    }

    #[test]
    fn time_lookup_uses_the_running_maximum() {
        // Timestamps go back in time at the third batch; entries must stay sorted.
        let index = build(&[(100, 10), (100, 50), (100, 20), (100, 60), (100, 30)], 1);
        let stamps: Vec<i64> = index.times.iter().map(|e| e.timestamp).collect();
        assert_eq!(stamps, vec![10, 50, 50, 60, 60]);
        assert_eq!(index.last_time_below(5), None);
        assert_eq!(index.last_time_below(11).unwrap().relative_offset, 0);
        assert_eq!(index.last_time_below(50).unwrap().relative_offset, 0);
        assert_eq!(index.last_time_below(51).unwrap().relative_offset, 4);
        assert_eq!(index.last_time_below(61).unwrap().relative_offset, 8);
    }

    #[test]
    fn last_true_agrees_with_partition_point() {
        let values: Vec<u64> = vec![1, 3, 3, 5, 8, 13];
        for needle in 0..15 {
            let found = last_true::<u64, ()>(
                values.len() as u64,
                |i| Ok(values[i as usize]),
                |v| *v <= needle,
            )
            .unwrap();
            let expected = values.iter().copied().rfind(|v| *v <= needle);
            assert_eq!(found, expected, "needle {needle}");
        }
        assert_eq!(last_true::<u64, ()>(0, |_| Err(()), |_| true), Ok(None));
    }
}
