//! The read path: find a batch through the sparse index, then decode whole batches with
//! positioned reads, never past what is visible.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::{self, BatchHeader, HEADER_LEN, Reject};
use crate::cache::SegmentFiles;
use crate::data::Window;
use crate::error::{LogError, Result};
use crate::index_file;
use crate::segment::{DATA_EXT, INDEX_EXT, SegmentMeta, TIME_INDEX_EXT, file_path};
use crate::state::Shared;
use crate::types::StoredRecord;

/// Smallest and largest span read at once; between them, what the caller asked for.
const MIN_WINDOW: usize = 64 * 1024;
const MAX_WINDOW: usize = 16 * 1024 * 1024;

/// A segment to read, as seen under the state lock; used after the lock is released.
struct Target {
    /// Covers the visible batches only.
    meta: SegmentMeta,
    /// The active segment's file and the position its in-memory index gave; `None` for a closed
    /// segment, whose files come from the cache and whose index is on disk.
    active: Option<(Arc<File>, u64)>,
}

enum Lookup {
    Offset(u64),
    Time(i64),
}

/// What `Log::read` returns: whole batches from the one holding `offset`, while they fit in
/// `max_bytes` (the first always does), across segments.
pub(crate) fn read(
    shared: &Shared,
    offset: u64,
    max_bytes: usize,
    max_records: usize,
) -> Result<Vec<StoredRecord>> {
    shared.ensure_open()?;
    let mut out = Vec::new();
    let mut used = 0usize;
    let mut offset = offset;
    loop {
        let step = segment_for_offset(shared, offset).and_then(|target| match target {
            None => Ok(None),
            Some(target) => {
                let finished = read_segment(
                    shared,
                    &target,
                    offset,
                    max_bytes,
                    max_records,
                    &mut used,
                    &mut out,
                )?;
                Ok((finished && out.len() < max_records).then_some(target.meta.next_offset))
            }
        });
        match step {
            Ok(Some(next_segment)) => offset = next_segment,
            Ok(None) => break,
            // Retention overtook a read that already has records: return them.
            Err(LogError::OffsetBelowStart { .. }) if !out.is_empty() => break,
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// What `Log::offset_for_time` returns: the base offset of the first batch whose max
/// timestamp is at or after `timestamp_ms`.
pub(crate) fn offset_for_time(shared: &Shared, timestamp_ms: i64) -> Result<Option<u64>> {
    shared.ensure_open()?;
    let target = {
        let state = shared.read();
        if let Some(meta) = state
            .closed
            .iter()
            .find(|s| s.max_timestamp >= timestamp_ms)
        {
            Target {
                meta: *meta,
                active: None,
            }
        } else if !state.active.meta.is_empty() && state.active.meta.max_timestamp >= timestamp_ms {
            let position = state
                .active
                .index
                .last_time_below(timestamp_ms)
                .map_or(0, |e| e.position);
            Target {
                meta: state.active.meta,
                active: Some((state.active.file.clone(), u64::from(position))),
            }
        } else {
            return Ok(None);
        }
    };
    let (file, start) = open_target(shared, &target, Lookup::Time(timestamp_ms))?;
    let path = data_path(shared, &target.meta);
    let mut window = Window::default();
    let mut pos = start;
    while pos < target.meta.size {
        let header = read_header(&file, &mut window, pos, target.meta.size, MIN_WINDOW, &path)?;
        if header.max_timestamp >= timestamp_ms {
            return Ok(Some(header.base_offset));
        }
        pos += u64::from(header.len);
    }
    Err(LogError::corrupt(
        path,
        pos,
        format!(
            "no batch reaches timestamp {timestamp_ms} although the segment's index says one does"
        ),
    ))
}

fn segment_for_offset(shared: &Shared, offset: u64) -> Result<Option<Target>> {
    let state = shared.read();
    let start = state.start_offset();
    if offset < start {
        return Err(LogError::OffsetBelowStart { offset, start });
    }
    if offset >= state.next_offset() {
        return Ok(None);
    }
    let active = &state.active;
    if offset >= active.meta.base_offset {
        let relative = (offset - active.meta.base_offset) as u32;
        let position = active
            .index
            .floor_offset(relative)
            .map_or(0, |e| e.position);
        return Ok(Some(Target {
            meta: active.meta,
            active: Some((active.file.clone(), u64::from(position))),
        }));
    }
    // `offset >= start` so some closed segment starts at or before it.
    let after = state.closed.partition_point(|s| s.base_offset <= offset);
    Ok(state
        .closed
        .get(after.saturating_sub(1))
        .map(|meta| Target {
            meta: *meta,
            active: None,
        }))
}

/// The data file of `target` and the position where the search for `lookup` starts.
fn open_target(shared: &Shared, target: &Target, lookup: Lookup) -> Result<(FileRef, u64)> {
    if let Some((file, position)) = &target.active {
        return Ok((FileRef::Active(file.clone()), *position));
    }
    let base = target.meta.base_offset;
    let files = match shared.files.get(&shared.dir, base) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let start = shared.read().start_offset();
            if base < start {
                let offset = match lookup {
                    Lookup::Offset(offset) => offset,
                    Lookup::Time(_) => base,
                };
                return Err(LogError::OffsetBelowStart { offset, start });
            }
            return Err(LogError::io(data_path(shared, &target.meta), e));
        }
        Err(e) => return Err(LogError::io(data_path(shared, &target.meta), e)),
    };
    let index_error = |ext: &str, e: io::Error| LogError::io(file_path(&shared.dir, base, ext), e);
    let position = match lookup {
        Lookup::Offset(offset) => {
            let relative = u32::try_from(offset - base).unwrap_or(u32::MAX);
            index_file::floor_offset(&files.index, files.index_entries, relative)
                .map_err(|e| index_error(INDEX_EXT, e))?
                .map(|e| e.position)
        }
        Lookup::Time(timestamp) => {
            index_file::last_time_below(&files.time_index, files.time_entries, timestamp)
                .map_err(|e| index_error(TIME_INDEX_EXT, e))?
                .map(|e| e.position)
        }
    };
    let position = position.unwrap_or(0);
    Ok((FileRef::Closed(files), u64::from(position)))
}

/// A data file borrowed from the active segment or from the cache of closed ones.
enum FileRef {
    Active(Arc<File>),
    Closed(Arc<SegmentFiles>),
}

impl std::ops::Deref for FileRef {
    type Target = File;
    fn deref(&self) -> &File {
        match self {
            FileRef::Active(file) => file,
            FileRef::Closed(files) => &files.data,
        }
    }
}

fn data_path(shared: &Shared, meta: &SegmentMeta) -> PathBuf {
    file_path(&shared.dir, meta.base_offset, DATA_EXT)
}

/// Reads batches of one segment into `out`; `true` when it reached the segment's visible end
/// with budget left, so the next segment may follow.
fn read_segment(
    shared: &Shared,
    target: &Target,
    offset: u64,
    max_bytes: usize,
    max_records: usize,
    used: &mut usize,
    out: &mut Vec<StoredRecord>,
) -> Result<bool> {
    let (file, start) = open_target(shared, target, Lookup::Offset(offset))?;
    let path = data_path(shared, &target.meta);
    let end = target.meta.size;
    let preferred = max_bytes
        .saturating_sub(*used)
        .saturating_add(shared.config.index_interval_bytes as usize)
        .clamp(MIN_WINDOW, MAX_WINDOW);
    let mut window = Window::default();
    let mut pos = start;
    // Walk from the indexed batch to the one holding `offset`: at most an index interval.
    loop {
        if pos >= end {
            return Err(LogError::corrupt(
                path,
                pos,
                format!("offset {offset} not found in its segment"),
            ));
        }
        let header = read_header(&file, &mut window, pos, end, preferred, &path)?;
        if header.next_offset() > offset {
            if header.base_offset > offset {
                return Err(LogError::corrupt(
                    path,
                    pos,
                    format!("offset {offset} is missing from its segment"),
                ));
            }
            break;
        }
        pos += u64::from(header.len);
    }
    while pos < end {
        if out.len() >= max_records {
            return Ok(false);
        }
        let header = read_header(&file, &mut window, pos, end, preferred, &path)?;
        let len = header.len as usize;
        if *used > 0 && used.saturating_add(len) > max_bytes {
            return Ok(false);
        }
        let bytes = window
            .get(&file, pos, len, preferred, end)
            .map_err(|e| LogError::io(&path, e))?;
        let checked =
            batch::check(&bytes).map_err(|reason| LogError::corrupt(&path, pos, reason))?;
        batch::decode_at_most(
            &bytes,
            &checked,
            shared.config.keys(),
            offset,
            max_records,
            out,
        )
        .map_err(|reject| match reject {
            Reject::Invalid(reason) => LogError::corrupt(&path, pos, reason),
            Reject::Decrypt(failure) => LogError::decrypt(&path, pos, failure),
        })?;
        *used = used.saturating_add(len);
        pos += len as u64;
    }
    Ok(*used < max_bytes)
}

/// Reads and checks the header at `pos`, and that its batch ends within `end`.
fn read_header(
    file: &File,
    window: &mut Window,
    pos: u64,
    end: u64,
    preferred: usize,
    path: &std::path::Path,
) -> Result<BatchHeader> {
    if end - pos < HEADER_LEN as u64 {
        return Err(LogError::corrupt(path, pos, "partial batch header"));
    }
    let head = window
        .get(file, pos, HEADER_LEN, preferred, end)
        .map_err(|e| LogError::io(path, e))?;
    let header =
        BatchHeader::parse(&head).map_err(|reason| LogError::corrupt(path, pos, reason))?;
    if u64::from(header.len) > end - pos {
        return Err(LogError::corrupt(
            path,
            pos,
            "batch runs past the end of the segment",
        ));
    }
    Ok(header)
}
