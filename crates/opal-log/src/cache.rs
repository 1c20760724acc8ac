//! A small cache of open files of closed segments, so that neither descriptors nor memory grow
//! with the number of segments.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::index::{OffsetEntry, TimeEntry};
use crate::index_file::entry_count;
use crate::segment::{DATA_EXT, INDEX_EXT, TIME_INDEX_EXT, file_path};

/// Closed segments kept open per log; readers mostly stay near one position, so a few suffice.
const CAPACITY: usize = 8;

/// The three files of a closed segment, opened read-only.
#[derive(Debug)]
pub(crate) struct SegmentFiles {
    pub(crate) data: File,
    pub(crate) index: File,
    pub(crate) time_index: File,
    pub(crate) index_entries: u32,
    pub(crate) time_entries: u32,
}

impl SegmentFiles {
    fn open(dir: &Path, base_offset: u64) -> io::Result<Self> {
        let index = File::open(file_path(dir, base_offset, INDEX_EXT))?;
        let time_index = File::open(file_path(dir, base_offset, TIME_INDEX_EXT))?;
        Ok(SegmentFiles {
            data: File::open(file_path(dir, base_offset, DATA_EXT))?,
            index_entries: entry_count::<OffsetEntry>(&index)?,
            time_entries: entry_count::<TimeEntry>(&time_index)?,
            index,
            time_index,
        })
    }
}

#[derive(Debug, Default)]
struct Slots {
    /// (base offset, last use, files); evicts the least recently used.
    entries: Vec<(u64, u64, Arc<SegmentFiles>)>,
    clock: u64,
}

#[derive(Debug, Default)]
pub(crate) struct FileCache {
    slots: Mutex<Slots>,
}

impl FileCache {
    pub(crate) fn get(&self, dir: &Path, base_offset: u64) -> io::Result<Arc<SegmentFiles>> {
        if let Some(files) = self.lookup(base_offset) {
            return Ok(files);
        }
        // Opened outside the lock so a slow open does not stall readers of other segments.
        let files = Arc::new(SegmentFiles::open(dir, base_offset)?);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.clock += 1;
        let now = slots.clock;
        if let Some(entry) = slots.entries.iter_mut().find(|e| e.0 == base_offset) {
            entry.1 = now;
            return Ok(entry.2.clone());
        }
        if slots.entries.len() >= CAPACITY
            && let Some(oldest) = slots
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.1)
                .map(|(i, _)| i)
        {
            slots.entries.swap_remove(oldest);
        }
        slots.entries.push((base_offset, now, files.clone()));
        Ok(files)
    }

    fn lookup(&self, base_offset: u64) -> Option<Arc<SegmentFiles>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.clock += 1;
        let now = slots.clock;
        let entry = slots.entries.iter_mut().find(|e| e.0 == base_offset)?;
        entry.1 = now;
        Some(entry.2.clone())
    }

    /// Forgets a deleted segment (readers holding its files can still finish).
    pub(crate) fn evict(&self, base_offset: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entries.retain(|e| e.0 != base_offset);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_segments_open() {
        let dir = tempfile::tempdir().unwrap();
        for base in 0..20u64 {
            for ext in [DATA_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                std::fs::write(file_path(dir.path(), base, ext), b"x").unwrap();
            }
        }
        let cache = FileCache::default();
        for base in 0..20 {
            cache.get(dir.path(), base).unwrap();
            cache.get(dir.path(), 0).unwrap(); // keep segment 0 warm
        }
        assert_eq!(cache.len(), CAPACITY);
        assert!(cache.lookup(0).is_some());
        assert!(cache.lookup(1).is_none());
        cache.evict(0);
        assert!(cache.lookup(0).is_none());
        assert!(cache.get(dir.path(), 99).is_err());
    }
}
