//! State shared by the log handles and the writer thread: segments, visibility, counters.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::cache::FileCache;
use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::index::SparseIndex;
use crate::segment::SegmentMeta;
use crate::types::LogStats;

/// The segment being appended to, as far as readers may see it.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    /// Covers only visible batches: under `Always` those that are durable.
    pub(crate) meta: SegmentMeta,
    pub(crate) file: Arc<File>,
    /// Entries for visible batches only, so readers never reach past what they may see.
    pub(crate) index: SparseIndex,
}

/// The segments of the log, oldest first. Only the writer thread changes it.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) closed: VecDeque<SegmentMeta>,
    pub(crate) closed_bytes: u64,
    pub(crate) active: ActiveSegment,
}

impl State {
    pub(crate) fn start_offset(&self) -> u64 {
        self.closed
            .front()
            .map_or(self.active.meta.base_offset, |s| s.base_offset)
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.active.meta.next_offset
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.closed_bytes + self.active.meta.size
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) syncs: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    state: RwLock<State>,
    pub(crate) files: FileCache,
    pub(crate) counters: Counters,
    /// Publishes `next_offset` each time it advances.
    pub(crate) high_watermark: watch::Sender<u64>,
    pub(crate) closed: AtomicBool,
    /// Set once after a failed write or sync; never cleared (no retry after fsync failure).
    failure: OnceLock<String>,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

/// Failures that unit tests can switch on, to see the log fail instead of pretending.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) fail_write: AtomicBool,
    pub(crate) fail_sync: AtomicBool,
    /// `fdatasync` calls tried, failed ones included.
    pub(crate) sync_attempts: AtomicU64,
}

#[cfg(test)]
impl Faults {
    pub(crate) fn check(flag: &AtomicBool) -> std::io::Result<()> {
        if flag.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("injected failure"));
        }
        Ok(())
    }
}

impl Shared {
    pub(crate) fn new(dir: PathBuf, config: LogConfig, state: State) -> Self {
        let (high_watermark, _) = watch::channel(state.next_offset());
        Shared {
            dir,
            config,
            state: RwLock::new(state),
            files: FileCache::default(),
            counters: Counters::default(),
            high_watermark,
            closed: AtomicBool::new(false),
            failure: OnceLock::new(),
            #[cfg(test)]
            faults: Faults::default(),
        }
    }

    // The state is only changed by small assignments that cannot panic halfway, so a poisoned
    // lock still guards consistent data.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    pub(crate) fn set_failed(&self, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "log failed; it accepts no more appends");
        let _ = self.failure.set(reason);
    }

    /// The error every append gets once the log has failed.
    pub(crate) fn failure(&self) -> Option<LogError> {
        self.failure.get().map(|reason| {
            LogError::io(
                &self.dir,
                std::io::Error::other(format!(
                    "the log failed earlier and accepts no more appends: {reason}"
                )),
            )
        })
    }

    pub(crate) fn stats(&self) -> LogStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let state = self.read();
        LogStats {
            start_offset: state.start_offset(),
            next_offset: state.next_offset(),
            segments: state.closed.len() as u64 + 1,
            size_bytes: state.size_bytes(),
            appends: load(&self.counters.appends),
            records: load(&self.counters.records),
            writes: load(&self.counters.writes),
            syncs: load(&self.counters.syncs),
        }
    }
}
