//! Positioned reads of segment data files: a read window and the validating scan used by recovery.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_LEN, Reject};
use crate::error::{LogError, Result};
use crate::index::{IndexBuilder, SparseIndex};
use crate::keyring::Keyring;
use crate::segment::SegmentMeta;

/// Bytes read at once while scanning a whole segment.
const SCAN_WINDOW: usize = 1024 * 1024;

/// A span of a data file held in memory. Reads go through it so that many small batches cost
/// one `pread`, and the batches handed out share its memory instead of being copied.
#[derive(Debug, Default)]
pub(crate) struct Window {
    buf: Bytes,
    start: u64,
}

impl Window {
    /// Bytes `pos..pos + len` of `file`. When they are not in the window, reads from `pos` on
    /// `max(len, preferred)` bytes, but never past `end` (the caller checked `pos + len <= end`).
    pub(crate) fn get(
        &mut self,
        file: &File,
        pos: u64,
        len: usize,
        preferred: usize,
        end: u64,
    ) -> io::Result<Bytes> {
        let held = self.start..self.start + self.buf.len() as u64;
        if pos < held.start || pos + len as u64 > held.end {
            let want = (len.max(preferred) as u64)
                .min(end.saturating_sub(pos))
                .max(len as u64);
            let mut buf = BytesMut::zeroed(want as usize);
            file.read_exact_at(&mut buf, pos)?;
            self.buf = buf.freeze();
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(self.buf.slice(from..from + len))
    }
}

/// The valid prefix of a data file as found by `scan`.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) meta: SegmentMeta,
    pub(crate) index: SparseIndex,
    /// Continues the index for batches appended after the scanned ones.
    pub(crate) builder: IndexBuilder,
    /// Where and why the scan stopped before the end of the file.
    pub(crate) stopped: Option<(u64, &'static str)>,
}

/// What `scan` needs to know besides the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanOptions<'a> {
    pub(crate) path: &'a Path,
    pub(crate) base_offset: u64,
    pub(crate) file_len: u64,
    pub(crate) index_interval: u32,
    pub(crate) keys: Option<&'a Keyring>,
}

/// Reads the data file of the segment at `base_offset` from its start, checking every batch
/// (header, checksum, authenticity if sealed, record structure, contiguous offsets), and
/// indexes the valid prefix. Memory use is one window, whatever the file size.
///
/// A sealed batch that the keys cannot open is an error, not the end of the valid prefix: its
/// checksum holds, so it is not torn, and cutting it off would destroy data because of a key
/// file mistake.
pub(crate) fn scan(file: &File, options: ScanOptions<'_>) -> Result<Scan> {
    let ScanOptions {
        path,
        base_offset,
        file_len,
        index_interval,
        keys,
    } = options;
    let mut out = Scan {
        meta: SegmentMeta::empty(base_offset),
        index: SparseIndex::default(),
        builder: IndexBuilder::new(index_interval),
        stopped: None,
    };
    let mut window = Window::default();
    let mut pos = 0u64;
    while pos < file_len {
        match next_batch(file, &mut window, pos, file_len, &out.meta, keys) {
            Ok(header) => {
                let relative = (header.base_offset - base_offset) as u32;
                if let Some(entries) = out.builder.on_batch(
                    relative,
                    pos as u32,
                    u64::from(header.len),
                    header.max_timestamp,
                ) {
                    out.index.push(entries);
                }
                out.meta.push_batch(
                    u64::from(header.len),
                    u64::from(header.record_count),
                    header.max_timestamp,
                );
                pos += u64::from(header.len);
            }
            Err(Stop::Invalid(reason)) => {
                out.stopped = Some((pos, reason));
                break;
            }
            Err(Stop::Io(e)) => return Err(LogError::io(path, e)),
            Err(Stop::Decrypt(failure)) => return Err(LogError::decrypt(path, pos, failure)),
        }
    }
    Ok(out)
}

enum Stop {
    Invalid(&'static str),
    Decrypt(crate::error::DecryptFailure),
    Io(io::Error),
}

fn next_batch(
    file: &File,
    window: &mut Window,
    pos: u64,
    file_len: u64,
    meta: &SegmentMeta,
    keys: Option<&Keyring>,
) -> std::result::Result<BatchHeader, Stop> {
    if file_len - pos < HEADER_LEN as u64 {
        return Err(Stop::Invalid("partial batch header at the end of the file"));
    }
    let head = window
        .get(file, pos, HEADER_LEN, SCAN_WINDOW, file_len)
        .map_err(Stop::Io)?;
    let header = BatchHeader::parse(&head).map_err(Stop::Invalid)?;
    if header.base_offset != meta.next_offset {
        return Err(Stop::Invalid(
            "batch base offset does not follow the previous batch",
        ));
    }
    if u64::from(header.len) > file_len - pos {
        return Err(Stop::Invalid("batch runs past the end of the file"));
    }
    if header.next_offset() - meta.base_offset > u64::from(u32::MAX) || pos > u64::from(u32::MAX) {
        return Err(Stop::Invalid(
            "batch lies beyond what a segment index can address",
        ));
    }
    let bytes = window
        .get(file, pos, header.len as usize, SCAN_WINDOW, file_len)
        .map_err(Stop::Io)?;
    batch::verify(&bytes, keys).map_err(|reject| match reject {
        Reject::Invalid(reason) => Stop::Invalid(reason),
        Reject::Decrypt(failure) => Stop::Decrypt(failure),
    })
}

/// Whether bytes `from..to` of `file` are all zero (the space the writer fills ahead of its
/// appends). Reads one window at a time.
pub(crate) fn is_zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; SCAN_WINDOW];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(SCAN_WINDOW as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Creates the empty data file of a new segment and makes its directory entry durable.
pub(crate) fn create(dir_file: &File, path: &std::path::Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    dir_file.sync_all()?;
    Ok(file)
}
