//! The `Log` handle: validates requests, hands writes to the writer thread and serves reads.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use crate::batch::encoded_batch_len;
use crate::config::LogConfig;
use crate::error::{IoContext, LogError, Result};
use crate::reader;
use crate::recovery::{self, RecoveredActive};
use crate::state::{ActiveSegment, Shared, State};
use crate::types::{Appended, LogStats, Record, StoredRecord};
use crate::writer::{AppendReply, AppendRequest, Command, Writer};

/// Handle to one partition's log. Cheap to clone; all clones share one writer.
///
/// Appends, rolls and retention run on a dedicated writer thread, so every change to the files
/// has one author; reads run on the caller's thread with positioned reads. `close`, and
/// dropping the last handle, wait for that thread (and its final sync) to end.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    // Short on purpose: the shared state holds the whole in-memory index.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.inner.shared;
        let state = shared.read();
        f.debug_struct("Log")
            .field("dir", &shared.dir)
            .field("start_offset", &state.start_offset())
            .field("next_offset", &state.next_offset())
            .field("segments", &(state.closed.len() + 1))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn join_writer(&self) {
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            let _ = self.commands.send(Command::Shutdown);
        }
        self.join_writer();
    }
}

impl Log {
    /// Opens (creating if absent) the log in `dir`, recovering the active segment's tail.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        config.validate()?;
        let recovered = recovery::recover(dir, &config)?;
        let RecoveredActive {
            meta,
            file,
            index,
            builder,
        } = recovered.active;
        let file = Arc::new(file);
        let state = State {
            closed_bytes: recovered.closed.iter().map(|s| s.size).sum(),
            closed: recovered.closed,
            active: ActiveSegment {
                meta,
                file: file.clone(),
                index,
            },
        };
        let shared = Arc::new(Shared::new(dir.to_path_buf(), config, state));
        let (commands, receiver) = mpsc::channel();
        let files = (recovered.lock, recovered.dir_file);
        let writer = Writer::new(shared.clone(), receiver, files, meta, builder, file);
        let handle = std::thread::Builder::new()
            .name("opal-log-writer".into())
            .spawn(move || writer.run())
            .at(dir)?;
        Ok(Log {
            inner: Arc::new(Inner {
                shared,
                commands,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Appends records as one batch; resolves once durable under the fsync policy. Concurrent calls are group-committed.
    ///
    /// Dropping the future does not cancel an append that was already handed to the writer.
    pub async fn append(&self, records: Vec<Record>) -> Result<Appended, LogError> {
        let reply = self.submit(records)?;
        // The records come back to be dropped here, on the appender's thread.
        reply
            .await
            .map_or(Err(LogError::Closed), |(result, _records)| result)
    }

    /// `append` for callers without an async runtime.
    ///
    /// Panics if called from within an async runtime (as `oneshot::Receiver::blocking_recv`
    /// does); use `append` there.
    pub fn append_blocking(&self, records: Vec<Record>) -> Result<Appended, LogError> {
        let reply = self.submit(records)?;
        reply
            .blocking_recv()
            .map_or(Err(LogError::Closed), |(result, _records)| result)
    }

    /// Checks an append and queues it for the writer; nothing is written if a check fails.
    fn submit(&self, records: Vec<Record>) -> Result<oneshot::Receiver<AppendReply>> {
        let shared = &self.inner.shared;
        shared.ensure_open()?;
        if records.is_empty() {
            return Err(LogError::EmptyAppend);
        }
        let size = encoded_batch_len(&records) + shared.config.batch_overhead();
        let limit = shared.config.max_batch_bytes;
        if size > u64::from(limit) {
            return Err(LogError::BatchTooLarge { size, limit });
        }
        if let Some(err) = shared.failure() {
            return Err(err);
        }
        let (reply, receiver) = oneshot::channel();
        let request = AppendRequest {
            records,
            encoded_len: size,
            reply,
        };
        self.inner
            .commands
            .send(Command::Append(request))
            .map_err(|_| LogError::Closed)?;
        Ok(receiver)
    }

    /// Sends a command to the writer and waits for its answer. Uses a std channel so that it
    /// also works (blocking briefly) when called from async code.
    fn request<T>(&self, make: impl FnOnce(SyncSender<Result<T>>) -> Command) -> Result<T> {
        self.inner.shared.ensure_open()?;
        let (reply, receiver) = mpsc::sync_channel(1);
        self.inner
            .commands
            .send(make(reply))
            .map_err(|_| LogError::Closed)?;
        receiver.recv().unwrap_or(Err(LogError::Closed))
    }

    /// Reads records from `offset` on, whole batches, up to about `max_bytes` (at least one batch if any).
    /// Only durable (acknowledged) records are visible. Empty at or past the end.
    ///
    /// Records before `offset` in the first batch are skipped; `max_bytes` counts encoded batches.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>, LogError> {
        reader::read(&self.inner.shared, offset, max_bytes, usize::MAX)
    }

    /// As [`Log::read`], returning at most `max_records` records: the batch holding the last of
    /// them is not decoded past it.
    pub fn read_at_most(
        &self,
        offset: u64,
        max_bytes: usize,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        reader::read(&self.inner.shared, offset, max_bytes, max_records.max(1))
    }

    /// First offset whose batch's max timestamp is >= `timestamp_ms`, or None if past the end.
    ///
    /// The offset returned is the base offset of that batch.
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        reader::offset_for_time(&self.inner.shared, timestamp_ms)
    }

    pub fn start_offset(&self) -> u64 {
        self.inner.shared.read().start_offset()
    }

    /// One past the last visible offset.
    pub fn next_offset(&self) -> u64 {
        self.inner.shared.read().next_offset()
    }

    /// A watch that changes whenever `next_offset` advances (for long-polling readers).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.high_watermark.subscribe()
    }

    /// Closes the active segment and starts a new one.
    ///
    /// Does nothing when the active segment is empty. Blocks the calling thread until the
    /// writer has done it (a few syncs).
    pub fn roll(&self) -> Result<(), LogError> {
        self.request(Command::Roll)
    }

    /// Applies retention (age, bytes) and age-based roll; returns the number of deleted segments.
    ///
    /// `now_ms` is compared with record timestamps; see `docs/storage.md` for the rules.
    /// Blocks the calling thread until the writer has done it.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.request(|reply| Command::Retention {
            now_ms,
            rule: None,
            reply,
        })
    }

    /// `enforce_retention` with `rule` instead of the configured retention (for settings that
    /// changed since the log was opened, and for deleting what every reader is done with).
    pub fn enforce_retention_with(
        &self,
        now_ms: i64,
        rule: crate::RetentionRule,
    ) -> Result<usize, LogError> {
        self.request(|reply| Command::Retention {
            now_ms,
            rule: Some(rule),
            reply,
        })
    }

    pub fn stats(&self) -> LogStats {
        self.inner.shared.stats()
    }

    /// Flushes and syncs everything, stops the writer. Later calls fail with `Closed`.
    ///
    /// Appends queued before `close` are still written. Returns the sync error, or the earlier
    /// failure if the log had failed.
    pub fn close(&self) -> Result<(), LogError> {
        if self.inner.shared.closed.swap(true, Ordering::AcqRel) {
            return Err(LogError::Closed);
        }
        let (reply, receiver) = mpsc::sync_channel(1);
        let result = match self.inner.commands.send(Command::Close(reply)) {
            Ok(()) => receiver.recv().unwrap_or(Ok(())),
            // The writer thread is already gone (it panicked): nothing left to sync.
            Err(_) => Ok(()),
        };
        self.inner.join_writer();
        result
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
