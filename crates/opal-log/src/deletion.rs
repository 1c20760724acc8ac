//! Deleting a segment's files in an order that a crash cannot turn into a hole in the offsets.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{IoContext, LogError, Result};
use crate::segment::{DATA_EXT, INDEX_EXT, TIME_INDEX_EXT, file_path};

/// Removes the files of the segment at `base_offset`, already gone from the segment list.
///
/// Readers that have its files open keep reading the unlinked files. The data file goes first:
/// a crash before the index files are gone leaves orphans that the next open removes. The
/// directory is synced before the caller deletes the next segment, so deletions reach the disk
/// oldest first and a crash can only leave a shorter prefix deleted, never a hole.
pub(crate) fn delete_segment(dir: &Path, dir_file: &File, base_offset: u64) -> Result<()> {
    for ext in [DATA_EXT, INDEX_EXT, TIME_INDEX_EXT] {
        let path = file_path(dir, base_offset, ext);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(LogError::io(&path, e)),
            _ => {}
        }
    }
    dir_file.sync_all().at(dir)
}
