//! Opening a log directory: the lock, finding segments, trusting or rebuilding the index files of
//! closed segments, and cutting a torn tail off the active segment.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::LogConfig;
use crate::data::{self, Scan, ScanOptions};
use crate::error::{IoContext, LogError, Result};
use crate::index::{IndexBuilder, OffsetEntry, SparseIndex, TimeEntry};
use crate::index_file::{self, Footer};
use crate::segment::{
    DATA_EXT, INDEX_EXT, SegmentMeta, TIME_INDEX_EXT, file_path, parse_file_name,
};

pub(crate) const LOCK_FILE: &str = "opal-log.lock";

/// The active segment as found on disk, with its index rebuilt in memory.
#[derive(Debug)]
pub(crate) struct RecoveredActive {
    pub(crate) meta: SegmentMeta,
    pub(crate) file: File,
    pub(crate) index: SparseIndex,
    pub(crate) builder: IndexBuilder,
}

#[derive(Debug)]
pub(crate) struct Recovered {
    /// Holds the directory lock for as long as it stays open.
    pub(crate) lock: File,
    pub(crate) dir_file: File,
    pub(crate) closed: VecDeque<SegmentMeta>,
    pub(crate) active: RecoveredActive,
}

/// Locks `dir` and brings it to a consistent state: the last segment becomes the active one.
pub(crate) fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered> {
    create_dir_durable(dir).at(dir)?;
    let lock = lock_dir(dir)?;
    let dir_file = File::open(dir).at(dir)?;
    let mut bases = BTreeSet::new();
    let mut index_files = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let name = entry.at(dir)?.file_name();
        match name.to_str().and_then(parse_file_name) {
            Some((base, DATA_EXT)) => {
                bases.insert(base);
            }
            Some((base, ext)) => index_files.push((base, ext.to_owned())),
            None => {}
        }
    }
    // Left behind by a retention that deleted the data file and stopped before its indexes.
    for (base, ext) in index_files.iter().filter(|(base, _)| !bases.contains(base)) {
        let path = file_path(dir, *base, ext);
        tracing::warn!(path = %path.display(), "removing an index file without a data file");
        remove_if_present(&path)?;
    }
    if bases.is_empty() {
        let path = file_path(dir, 0, DATA_EXT);
        data::create(&dir_file, &path).at(&path)?;
        bases.insert(0);
    }
    let bases: Vec<u64> = bases.into_iter().collect();
    let mut closed = VecDeque::with_capacity(bases.len() - 1);
    for pair in bases.windows(2) {
        closed.push_back(load_closed(dir, pair[0], pair[1], config)?);
    }
    let last = bases[bases.len() - 1];
    let active = recover_active(dir, last, config)?;
    Ok(Recovered {
        lock,
        dir_file,
        closed,
        active,
    })
}

/// How long `open` waits for a lock held by someone else. A child forked by this very process
/// shares every open descriptor, and so the lock of a log closed a moment ago, until it execs;
/// such a lock frees itself within milliseconds, one held by another opal does not.
const LOCK_WAIT: Duration = Duration::from_millis(200);

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Err(LogError::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(LogError::io(&path, e)),
        }
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LogError::io(path, e)),
        _ => Ok(()),
    }
}

/// A closed segment: its index files are trusted without reading the data when their checksums
/// hold and they cover the data file as it is; otherwise they are rebuilt from the data.
fn load_closed(dir: &Path, base: u64, next_base: u64, config: &LogConfig) -> Result<SegmentMeta> {
    let data_path = file_path(dir, base, DATA_EXT);
    let data_len = fs::metadata(&data_path).at(&data_path)?.len();
    match trusted_footer(dir, base, data_len, next_base)? {
        Ok(footer) => Ok(SegmentMeta {
            base_offset: base,
            next_offset: footer.next_offset,
            size: footer.valid_len,
            max_timestamp: footer.max_timestamp,
            first_batch_timestamp: None,
        }),
        Err(reason) => {
            tracing::warn!(segment = %data_path.display(), %reason, "rebuilding the index files from the data file");
            rebuild_closed(dir, base, next_base, data_len, config)
        }
    }
}

/// The footer both index files agree on, or why they cannot be trusted.
fn trusted_footer(
    dir: &Path,
    base: u64,
    data_len: u64,
    next_base: u64,
) -> Result<Result<Footer, String>> {
    let index = footer_of::<OffsetEntry>(&file_path(dir, base, INDEX_EXT))?;
    let time = footer_of::<TimeEntry>(&file_path(dir, base, TIME_INDEX_EXT))?;
    Ok(match (index, time) {
        (Err(reason), _) | (_, Err(reason)) => Err(reason),
        (Ok(a), Ok(b)) if a != b => Err("the two index files disagree".into()),
        (Ok(footer), _) if footer.data_len != data_len => Err(format!(
            "index covers {} bytes but the data file has {data_len}",
            footer.data_len
        )),
        (Ok(footer), _) if footer.next_offset != next_base => Err(format!(
            "index ends at offset {} but the next segment starts at {next_base}",
            footer.next_offset
        )),
        (Ok(footer), _) => Ok(footer),
    })
}

fn footer_of<E: index_file::Entry>(path: &Path) -> Result<Result<Footer, String>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Err(format!("{} is missing", path.display())));
        }
        Err(e) => return Err(LogError::io(path, e)),
    };
    index_file::read_footer::<E>(&file).at(path)
}

/// Rebuilds and rewrites the index files of a closed segment. Damage inside a closed segment is
/// not truncated (later segments hold acknowledged records): the valid prefix is indexed and
/// readers stop at its end; offsets lost in the damage read as `Corrupt` when asked for
/// directly, and the next segment keeps its offsets.
fn rebuild_closed(
    dir: &Path,
    base: u64,
    next_base: u64,
    data_len: u64,
    config: &LogConfig,
) -> Result<SegmentMeta> {
    let data_path = file_path(dir, base, DATA_EXT);
    let file = File::open(&data_path).at(&data_path)?;
    let scan = data::scan(
        &file,
        ScanOptions {
            path: &data_path,
            base_offset: base,
            file_len: data_len,
            index_interval: config.index_interval_bytes,
            keys: config.keys(),
        },
    )?;
    if let Some((position, reason)) = scan.stopped {
        tracing::error!(
            segment = %data_path.display(), position, reason,
            unreadable_bytes = data_len - position,
            lost_offsets = %format_args!("{}..{next_base}", scan.meta.next_offset),
            "closed segment is damaged; reads stop before the damage"
        );
    } else if scan.meta.next_offset != next_base {
        tracing::error!(
            segment = %data_path.display(), ends_at = scan.meta.next_offset, next_segment = next_base,
            "closed segment does not end where the next segment starts"
        );
    }
    let meta = SegmentMeta {
        next_offset: next_base,
        first_batch_timestamp: None,
        ..scan.meta
    };
    write_index_files(dir, base, &scan.index, &meta, data_len)?;
    Ok(meta)
}

/// Writes both index files of a segment that takes no more batches; `data_len` is the length
/// of its data file, `meta.size` the valid part of it.
pub(crate) fn write_index_files(
    dir: &Path,
    base: u64,
    index: &SparseIndex,
    meta: &SegmentMeta,
    data_len: u64,
) -> Result<()> {
    let footer = Footer {
        data_len,
        valid_len: meta.size,
        next_offset: meta.next_offset,
        max_timestamp: meta.max_timestamp,
        entry_count: index.offsets.len() as u32,
    };
    let index_path = file_path(dir, base, INDEX_EXT);
    index_file::write(&index_path, &index.offsets, footer).at(&index_path)?;
    let time_path = file_path(dir, base, TIME_INDEX_EXT);
    index_file::write(&time_path, &index.times, footer).at(&time_path)
}

/// Scans the active segment from its start and truncates it after the last valid batch.
fn recover_active(dir: &Path, base: u64, config: &LogConfig) -> Result<RecoveredActive> {
    let path = file_path(dir, base, DATA_EXT);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .at(&path)?;
    let len = file.metadata().at(&path)?.len();
    let Scan {
        meta,
        index,
        builder,
        stopped,
    } = data::scan(
        &file,
        ScanOptions {
            path: &path,
            base_offset: base,
            file_len: len,
            index_interval: config.index_interval_bytes,
            keys: config.keys(),
        },
    )?;
    if let Some((position, reason)) = stopped {
        // The writer fills the active segment ahead of its appends with zeros: cutting them off
        // is the normal end of a segment that was not closed, not damage.
        if data::is_zeros(&file, position, len).at(&path)? {
            tracing::debug!(
                segment = %path.display(), position, truncated_bytes = len - position,
                "cutting off the zeros written ahead of the active segment's appends"
            );
        } else {
            tracing::warn!(
                segment = %path.display(), offset = meta.next_offset, position,
                truncated_bytes = len - position, reason,
                "truncating a torn or corrupt tail of the active segment"
            );
        }
        file.set_len(position).at(&path)?;
        file.sync_data().at(&path)?;
    }
    // Index files of the active segment would be stale: they are written again when it rolls.
    remove_if_present(&file_path(dir, base, INDEX_EXT))?;
    remove_if_present(&file_path(dir, base, TIME_INDEX_EXT))?;
    Ok(RecoveredActive {
        meta,
        file,
        index,
        builder,
    })
}

/// Creates `dir` and any missing ancestors, and syncs the parent of each directory it created,
/// so that after a machine crash the directory entries exist when the files inside them do.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path);
        cursor = path.parent();
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
