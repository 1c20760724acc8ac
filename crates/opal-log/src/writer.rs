//! The writer thread: group commit (one write and one `fdatasync` per group of appends), segment
//! rolls and retention, so that every file change has a single author.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::batch;
use crate::config::{FsyncPolicy, LogConfig};
use crate::data;
use crate::deletion;
use crate::error::{IoContext, LogError, Result};
use crate::index::{IndexBuilder, OffsetEntry, SparseIndex, TimeEntry};
use crate::recovery::write_index_files;
use crate::retention;
use crate::segment::{DATA_EXT, SegmentMeta, file_path};
use crate::state::{ActiveSegment, Counters, Shared};
use crate::synced_write::SyncedWrites;
use crate::types::RetentionRule;
use crate::types::{Appended, Record};

/// Bytes taken into one group; what arrives beyond waits for the next one, so a flood of
/// appends cannot grow the buffer or the latency of a group without bound.
const GROUP_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Longest wait for the rest of a group under `Always`, however slow the disk.
const MAX_GATHER_WAIT: Duration = Duration::from_micros(500);
/// How long a wait for appenders polls (`yield_now`) before it sleeps instead. Appenders in the
/// same process come back within tens of microseconds and are caught by polling; appenders that
/// come back later (requests that cross a server's network stack) would make the writer poll
/// for the whole wait, taking CPU from the very threads that bring those appends.
const MAX_POLL: Duration = Duration::from_micros(50);
/// Groups gathered without polling after a poll came back empty-handed. A server's appenders
/// (requests crossing its network stack, on cores that the server and its clients keep busy)
/// come back after the polling window nearly every time; there polling cost 1.8-2.4
/// `sched_yield` calls per append and left smaller groups (docs/benchmarks.md). Polling is
/// tried again after this many groups, so appenders that speed up are caught again.
const GROUPS_WITHOUT_POLLING: u32 = 32;
/// How far ahead of the appends the active segment's file is filled with zeros when appends
/// are synced: as far as the segment already holds, between these bounds, so that a quiet
/// topic keeps at most 64 KiB of zeros and a busy one extends its file rarely. An `fdatasync`
/// after a write that grows the file must also write the inode (its size changed); within space
/// written earlier it writes the data alone. Measured on the benchmark machine (ext4, virtio
/// disk), a 4 KiB `write` + `fdatasync` took 244-328 µs (87-111 µs of CPU) growing the file and
/// 132-147 µs (61-66 µs of CPU) within zeroed space.
const PREALLOCATE_MIN_BYTES: u64 = 64 * 1024;
const PREALLOCATE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// The zeros written ahead, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

pub(crate) struct AppendRequest {
    pub(crate) records: Vec<Record>,
    /// Checked against `max_batch_bytes` by the caller.
    pub(crate) encoded_len: u64,
    pub(crate) reply: oneshot::Sender<AppendReply>,
}

/// The outcome of an append, with its records handed back: the appender drops them, not the
/// writer. Freeing memory that another thread allocated is slow with the system allocator (it
/// takes that thread's arena lock, contended by its owner), and the writer's time is on the
/// critical path of every append in the group: dropping the records of a 100-message batch
/// took about 30 % of the writer's time.
pub(crate) type AppendReply = (Result<Appended>, Vec<Record>);

pub(crate) enum Command {
    Append(AppendRequest),
    Roll(SyncSender<Result<()>>),
    Retention {
        now_ms: i64,
        /// Overrides the configured retention for this pass (settings changed since open).
        rule: Option<RetentionRule>,
        reply: SyncSender<Result<usize>>,
    },
    Close(SyncSender<Result<()>>),
    /// The last handle was dropped without `close`.
    Shutdown,
}

/// The writer's view of the active segment. It runs ahead of the shared view by the batches
/// that are encoded or written but not yet visible to readers.
struct Tail {
    path: PathBuf,
    file: Arc<File>,
    meta: SegmentMeta,
    /// Bytes already written to the file; the rest of `meta.size` is in the group buffer.
    written: u64,
    /// Length of the file: `written` plus the zeros written ahead (`allocate_ahead`). Recovery
    /// and rolls cut the zeros off, so a closed segment's file ends with its last batch.
    allocated: u64,
    builder: IndexBuilder,
    /// Index entries of batches not yet visible.
    pending: Vec<(OffsetEntry, TimeEntry)>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    dir_file: File,
    /// Keeps the directory lock until the thread ends.
    _lock: File,
    tail: Tail,
    /// Encoded batches of the current group, reused across groups.
    buf: Vec<u8>,
    group: Vec<AppendRequest>,
    answers: Vec<(oneshot::Sender<AppendReply>, Appended, Vec<Record>)>,
    /// A command taken while gathering a group that belongs after it.
    carry: Option<Command>,
    unsynced: bool,
    last_sync: Instant,
    /// How long the last `fdatasync` took: the scale of a worthwhile wait for a fuller group.
    sync_time: Duration,
    /// Appends in the last group: how many appenders are likely to come back together.
    last_group: usize,
    /// Groups left to gather without polling (see `GROUPS_WITHOUT_POLLING`); 0: poll.
    polling_paused: u32,
    /// Writes that are their own `fdatasync`, for groups within the zeros written ahead.
    synced_writes: SyncedWrites,
    failed: bool,
}

impl Writer {
    /// `meta` and `builder` describe the active segment as recovery left it, in `file`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        (lock, dir_file): (File, File),
        meta: SegmentMeta,
        builder: IndexBuilder,
        file: Arc<File>,
    ) -> Self {
        let tail = Tail {
            path: file_path(&shared.dir, meta.base_offset, DATA_EXT),
            file,
            meta,
            written: meta.size,
            allocated: meta.size,
            builder,
            pending: Vec::new(),
        };
        Writer {
            shared,
            commands,
            dir_file,
            _lock: lock,
            tail,
            buf: Vec::new(),
            group: Vec::new(),
            answers: Vec::new(),
            carry: None,
            unsynced: false,
            last_sync: Instant::now(),
            sync_time: Duration::ZERO,
            last_group: 0,
            polling_paused: 0,
            synced_writes: SyncedWrites::new(),
            failed: false,
        }
    }

    pub(crate) fn run(mut self) {
        while let Some(command) = self.next_command() {
            match command {
                Command::Append(first) => self.append_group(first),
                Command::Roll(reply) => {
                    let result = self.unless_failed(Self::roll);
                    let _ = reply.send(result);
                }
                Command::Retention {
                    now_ms,
                    rule,
                    reply,
                } => {
                    let result = self.unless_failed(|w| w.enforce_retention(now_ms, rule));
                    let _ = reply.send(result);
                }
                Command::Close(reply) => {
                    let _ = reply.send(self.finish());
                    return;
                }
                Command::Shutdown => break,
            }
        }
        let _ = self.finish();
    }

    /// The next command, syncing on time under `Interval` while idle. `None` once every handle
    /// is gone.
    fn next_command(&mut self) -> Option<Command> {
        if let Some(command) = self.carry.take() {
            return Some(command);
        }
        if let Some(command) = self.poll_for_returning_appenders() {
            return Some(command);
        }
        loop {
            let FsyncPolicy::Interval(every) = self.shared.config.fsync else {
                return self.commands.recv().ok();
            };
            if !self.unsynced || self.failed {
                return self.commands.recv().ok();
            }
            let wait = (self.last_sync + every).saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(wait) {
                Ok(command) => return Some(command),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.sync();
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Under `Always`, the appenders of a group come back right after their answers. Polling
    /// for them briefly instead of parking spares each group a thread wake-up on its critical
    /// path; `yield_now` hands the core to them meanwhile. Bounded by the gather wait and by
    /// `MAX_POLL`: appenders that take longer find the writer parked, and polling pauses.
    fn poll_for_returning_appenders(&mut self) -> Option<Command> {
        if self.shared.config.fsync != FsyncPolicy::Always
            || self.last_group < 2
            || self.polling_paused > 0
        {
            return None;
        }
        let deadline = Instant::now() + self.gather_wait().min(MAX_POLL);
        loop {
            match self.commands.try_recv() {
                Ok(command) => return Some(command),
                Err(TryRecvError::Empty) if Instant::now() < deadline => std::thread::yield_now(),
                Err(TryRecvError::Empty) => {
                    self.polling_paused = GROUPS_WITHOUT_POLLING;
                    return None;
                }
                Err(TryRecvError::Disconnected) => return None,
            }
        }
    }

    /// A wait for more appends is worth at most half an fsync: longer, and the disk would idle
    /// more than the wait saves.
    fn gather_wait(&self) -> Duration {
        (self.sync_time / 2).min(MAX_GATHER_WAIT)
    }

    fn unless_failed<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        match self.shared.failure() {
            Some(err) => Err(err),
            None => op(self),
        }
    }

    /// Gathers what is queued behind `first` and commits it as one group.
    fn append_group(&mut self, first: AppendRequest) {
        let mut bytes = first.encoded_len;
        let mut group = std::mem::take(&mut self.group);
        group.push(first);
        while bytes < GROUP_MAX_BYTES {
            match self.commands.try_recv() {
                Ok(command) => {
                    if !self.join_group(command, &mut group, &mut bytes) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        // Appenders answered together come back together, tens of microseconds apart. Taking
        // only the first arrivals would split them into a small group and a large one behind it
        // (measured: 8.6 appends per fsync with 16 appenders); waiting briefly for as many as
        // last time lets one fsync serve them all. When appenders leave, the wait times out once
        // and the target shrinks to what came. Appenders slower than the polling window make it
        // pause (`GROUPS_WITHOUT_POLLING`).
        self.polling_paused = self.polling_paused.saturating_sub(1);
        if self.shared.config.fsync == FsyncPolicy::Always && group.len() < self.last_group {
            let started = Instant::now();
            let deadline = started + self.gather_wait();
            let poll_until = if self.polling_paused > 0 {
                started
            } else {
                started + MAX_POLL
            };
            let mut slept = false;
            while group.len() < self.last_group && bytes < GROUP_MAX_BYTES {
                match self.commands.try_recv() {
                    Ok(command) => {
                        if !self.join_group(command, &mut group, &mut bytes) {
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline || slept {
                            break;
                        }
                        if now < poll_until {
                            // Polling rather than parking: each arrival would otherwise cost
                            // the sender a wake-up call and the writer a context switch.
                            std::thread::yield_now();
                        } else {
                            // Slower appenders: one sleep to the deadline, then take what came.
                            if poll_until > started {
                                self.polling_paused = GROUPS_WITHOUT_POLLING;
                            }
                            std::thread::sleep(deadline - now);
                            slept = true;
                        }
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            // What came beyond the target joins too: the target grows with the load.
            while slept && bytes < GROUP_MAX_BYTES && self.carry.is_none() {
                match self.commands.try_recv() {
                    Ok(command) => {
                        if !self.join_group(command, &mut group, &mut bytes) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        self.last_group = group.len();
        for request in group.drain(..) {
            if let Some(err) = self.shared.failure() {
                let _ = request.reply.send((Err(err), request.records));
                continue;
            }
            let records = request.records.len() as u64;
            let max_ts = batch::max_timestamp(&request.records);
            let config = &self.shared.config;
            let roll =
                self.tail
                    .meta
                    .is_full(request.encoded_len, records, config.segment_max_bytes)
                    || self
                        .tail
                        .meta
                        .is_roll_due(max_ts, config.segment_max_age_ms());
            if roll && let Err(err) = self.roll() {
                let _ = request.reply.send((Err(err), request.records));
                continue;
            }
            self.stage(request, max_ts);
        }
        self.group = group;
        // A failure has already been reported to every staged append.
        let _ = self.commit();
    }

    /// Adds an append to the group if it fits; anything else waits in `carry` for after the
    /// group. Returns whether to keep gathering.
    fn join_group(
        &mut self,
        command: Command,
        group: &mut Vec<AppendRequest>,
        bytes: &mut u64,
    ) -> bool {
        match command {
            Command::Append(request) if *bytes + request.encoded_len <= GROUP_MAX_BYTES => {
                *bytes += request.encoded_len;
                group.push(request);
                true
            }
            other => {
                self.carry = Some(other);
                false
            }
        }
    }

    /// Encodes one append as one batch into the group buffer.
    fn stage(&mut self, request: AppendRequest, max_ts: i64) {
        let tail = &mut self.tail;
        let base = tail.meta.next_offset;
        let position = tail.meta.size;
        let keys = self.shared.config.keys();
        let len = match batch::encode_into(&mut self.buf, base, &request.records, keys) {
            Ok(len) => len as u64,
            Err(reason) => {
                tracing::error!(reason, "batch not written");
                let err = LogError::BatchTooLarge {
                    size: request.encoded_len,
                    limit: crate::config::MAX_BATCH_BYTES,
                };
                let _ = request.reply.send((Err(err), request.records));
                return;
            }
        };
        let count = request.records.len() as u64;
        // `is_full` keeps relative offsets and positions within u32.
        let relative = (base - tail.meta.base_offset) as u32;
        if let Some(entries) = tail
            .builder
            .on_batch(relative, position as u32, len, max_ts)
        {
            tail.pending.push(entries);
        }
        tail.meta.push_batch(len, count, max_ts);
        let appended = Appended {
            base_offset: base,
            last_offset: base + count - 1,
        };
        self.answers
            .push((request.reply, appended, request.records));
    }

    /// Writes the group buffer with one write, syncs it as the policy asks, then makes it
    /// visible and answers the appends.
    fn commit(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Within the zeros written ahead, under `Always`, one call writes and syncs the group;
        // a group that reaches past them writes more zeros, then syncs both with `sync`.
        let end = self.tail.written + self.buf.len() as u64;
        let synced_write =
            self.shared.config.fsync == FsyncPolicy::Always && end <= self.tail.allocated;
        // A synced write is timed as `sync` times an `fdatasync`: the gather wait scales with it.
        let synced_since = synced_write.then(Instant::now);
        let written = if synced_write {
            self.synced_writes
                .write_all_at(&self.tail.file, &self.buf, self.tail.written)
        } else {
            self.tail
                .file
                .write_all_at(&self.buf, self.tail.written)
                .and_then(|()| self.allocate_ahead())
        };
        #[cfg(test)]
        let written =
            written.and_then(|()| crate::state::Faults::check(&self.shared.faults.fail_write));
        if let Err(e) = written {
            let err = LogError::io(&self.tail.path, e);
            return Err(self.fail(err));
        }
        Counters::add(&self.shared.counters.writes, 1);
        self.tail.written += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > 2 * GROUP_MAX_BYTES as usize {
            self.buf.shrink_to(GROUP_MAX_BYTES as usize);
        }
        self.unsynced = true;
        match self.shared.config.fsync {
            FsyncPolicy::Always => {
                match synced_since {
                    Some(started) => self.synced(started, Ok(()))?,
                    None => self.sync()?,
                }
                self.publish();
            }
            FsyncPolicy::Interval(every) => {
                self.publish();
                if self.last_sync.elapsed() >= every {
                    // Already answered: a failure here only stops later appends.
                    let _ = self.sync();
                }
            }
            FsyncPolicy::Never => self.publish(),
        }
        Ok(())
    }

    /// Writes zeros ahead of the group just written when it reached past them, under a policy
    /// that syncs, so that the `fdatasync`s of the next groups find the file's size unchanged.
    /// The zeros are synced with the group, at the cost of one inode write per extension.
    fn allocate_ahead(&mut self) -> std::io::Result<()> {
        let end = self.tail.written + self.buf.len() as u64;
        if self.shared.config.fsync == FsyncPolicy::Never || end <= self.tail.allocated {
            return Ok(());
        }
        let ahead = end.clamp(PREALLOCATE_MIN_BYTES, PREALLOCATE_MAX_BYTES);
        // Never past the segment's size limit: the segment rolls there.
        let target = (end + ahead).min(self.shared.config.segment_max_bytes.max(end));
        let mut pos = end;
        while pos < target {
            let n = (target - pos).min(ZEROS.len() as u64) as usize;
            self.tail.file.write_all_at(&ZEROS[..n], pos)?;
            pos += n as u64;
        }
        self.tail.allocated = target.max(end);
        Ok(())
    }

    /// Cuts the zeros written ahead off the active segment's file (before it is closed), and
    /// makes the new length durable.
    fn trim_allocation(&mut self) -> Result<()> {
        if self.tail.allocated <= self.tail.written {
            return Ok(());
        }
        let trimmed = self
            .tail
            .file
            .set_len(self.tail.written)
            .and_then(|()| self.tail.file.sync_data());
        if let Err(e) = trimmed {
            return Err(self.fail(LogError::io(&self.tail.path, e)));
        }
        self.tail.allocated = self.tail.written;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let started = Instant::now();
        let synced = self.tail.file.sync_data();
        self.synced(started, synced)
    }

    /// Records the outcome of a sync that began at `started` (an `fdatasync`, or a write that
    /// was also one); a failed sync fails the log.
    fn synced(&mut self, started: Instant, synced: std::io::Result<()>) -> Result<()> {
        #[cfg(test)]
        let synced = synced.and_then(|()| {
            Counters::add(&self.shared.faults.sync_attempts, 1);
            crate::state::Faults::check(&self.shared.faults.fail_sync)
        });
        if let Err(e) = synced {
            let err = LogError::io(&self.tail.path, e);
            return Err(self.fail(err));
        }
        Counters::add(&self.shared.counters.syncs, 1);
        self.unsynced = false;
        self.last_sync = Instant::now();
        self.sync_time = self.last_sync - started;
        Ok(())
    }

    fn publish(&mut self) {
        {
            let mut state = self.shared.write();
            state.active.meta = self.tail.meta;
            for entries in self.tail.pending.drain(..) {
                state.active.index.push(entries);
            }
        }
        self.shared
            .high_watermark
            .send_replace(self.tail.meta.next_offset);
        let records: u64 = self
            .answers
            .iter()
            .map(|(_, a, _)| a.last_offset - a.base_offset + 1)
            .sum();
        Counters::add(&self.shared.counters.appends, self.answers.len() as u64);
        Counters::add(&self.shared.counters.records, records);
        for (reply, appended, records) in self.answers.drain(..) {
            let _ = reply.send((Ok(appended), records));
        }
    }

    /// Puts the log in the failed state after a write or sync error. Nothing is retried: after a
    /// failed `fdatasync` the kernel may have dropped the dirty pages, so a later success would
    /// prove nothing. Staged appends fail; a reopen recovers from what is on disk.
    fn fail(&mut self, err: LogError) -> LogError {
        self.failed = true;
        self.shared.set_failed(err.to_string());
        self.buf.clear();
        self.tail.pending.clear();
        for (reply, _, records) in self.answers.drain(..) {
            let err = self.shared.failure().unwrap_or_else(|| {
                LogError::io(&self.tail.path, std::io::Error::other("write failed"))
            });
            let _ = reply.send((Err(err), records));
        }
        err
    }

    /// Closes the active segment (writing its index files) and starts a new one.
    fn roll(&mut self) -> Result<()> {
        self.commit()?;
        if self.tail.meta.is_empty() {
            return Ok(());
        }
        if self.unsynced {
            self.sync()?;
        }
        self.trim_allocation()?;
        let dir = self.shared.dir.clone();
        let closing = SegmentMeta {
            first_batch_timestamp: None,
            ..self.tail.meta
        };
        let index = self.shared.read().active.index.clone();
        if let Err(err) = write_index_files(
            &dir,
            closing.base_offset,
            &index,
            &closing,
            self.tail.written,
        ) {
            return Err(self.fail(err));
        }
        let base = closing.next_offset;
        let path = file_path(&dir, base, DATA_EXT);
        let file = match data::create(&self.dir_file, &path).at(&path) {
            Ok(file) => Arc::new(file),
            Err(err) => return Err(self.fail(err)),
        };
        {
            let mut state = self.shared.write();
            state.closed.push_back(closing);
            state.closed_bytes += closing.size;
            state.active = ActiveSegment {
                meta: SegmentMeta::empty(base),
                file: file.clone(),
                index: SparseIndex::default(),
            };
        }
        self.tail = Tail {
            path,
            file,
            meta: SegmentMeta::empty(base),
            written: 0,
            allocated: 0,
            builder: IndexBuilder::new(self.shared.config.index_interval_bytes),
            pending: Vec::new(),
        };
        Ok(())
    }

    fn enforce_retention(&mut self, now_ms: i64, rule: Option<RetentionRule>) -> Result<usize> {
        let shared = self.shared.clone();
        let overridden;
        let (config, released_below) = match rule {
            Some(rule) => {
                overridden = LogConfig {
                    retention_max_age: rule.max_age,
                    retention_max_bytes: rule.max_bytes,
                    ..shared.config.clone()
                };
                (&overridden, rule.released_below)
            }
            None => (&shared.config, None),
        };
        let roll =
            retention::should_roll(&self.tail.meta, shared.read().closed.iter(), config, now_ms);
        if roll {
            self.roll()?;
        }
        let doomed: Vec<SegmentMeta> = {
            let mut state = shared.write();
            let count = retention::segments_to_delete(
                state.closed.iter(),
                state.size_bytes(),
                config,
                now_ms,
                released_below,
            );
            let doomed: Vec<SegmentMeta> = state.closed.drain(..count).collect();
            state.closed_bytes -= doomed.iter().map(|s| s.size).sum::<u64>();
            doomed
        };
        for segment in &doomed {
            self.shared.files.evict(segment.base_offset);
            deletion::delete_segment(&self.shared.dir, &self.dir_file, segment.base_offset)?;
        }
        Ok(doomed.len())
    }

    /// Makes everything written durable before the thread ends.
    fn finish(&mut self) -> Result<()> {
        if let Some(err) = self.shared.failure() {
            return Err(err);
        }
        if self.unsynced {
            self.sync()?;
        }
        self.trim_allocation()
    }
}
