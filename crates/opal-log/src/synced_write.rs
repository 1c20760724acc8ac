//! Writes that are durable when they return, in one system call where the kernel allows.
//!
//! A group under `FsyncPolicy::Always` used to take a `pwrite` and then an `fdatasync`. Linux's
//! `pwritev2` with `RWF_DSYNC` (since 4.7) gives the same guarantee for the bytes written (data,
//! and the metadata needed to read them back, as `fdatasync` does) in one call: on the
//! benchmark machine a 6,000-byte group took 122-129 µs and 51-55 µs of CPU that way, against
//! 132-144 µs and 58 µs for the two calls (docs/benchmarks.md). Where the kernel or the file
//! system refuses the flag, the write falls back to the two calls, for good.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positioned, durable writes to the files of one log.
#[derive(Debug)]
pub(crate) struct SyncedWrites {
    /// Whether to try `RWF_DSYNC`; cleared when the kernel or the file system refuses it.
    dsync: bool,
}

impl SyncedWrites {
    pub(crate) fn new() -> Self {
        SyncedWrites {
            dsync: cfg!(target_os = "linux"),
        }
    }

    /// Writes all of `buf` at `offset` and returns once it is durable, as `write_all_at` then
    /// `sync_data` would.
    pub(crate) fn write_all_at(&mut self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.dsync {
            let (written, result) = dsync_write_all_at(file, buf, offset);
            match result {
                Ok(()) => return Ok(()),
                Err(err) if refuses_the_flag(&err) => {
                    self.dsync = false;
                    tracing::debug!(error = %err, "RWF_DSYNC refused: writing, then fdatasync");
                    let rest = &buf[written..];
                    file.write_all_at(rest, offset + written as u64)?;
                    return file.sync_data();
                }
                Err(err) => return Err(err),
            }
        }
        file.write_all_at(buf, offset)?;
        file.sync_data()
    }

    /// Whether writes go through `RWF_DSYNC` (for tests).
    #[cfg(test)]
    pub(crate) fn uses_dsync(&self) -> bool {
        self.dsync
    }
}

/// `pwritev2(RWF_DSYNC)` until all of `buf` is written: how many bytes were, and the outcome.
#[cfg(target_os = "linux")]
fn dsync_write_all_at(file: &File, buf: &[u8], offset: u64) -> (usize, io::Result<()>) {
    use rustix::io::{Errno, ReadWriteFlags, pwritev2};

    let mut written = 0;
    while written < buf.len() {
        let slice = [io::IoSlice::new(&buf[written..])];
        match pwritev2(file, &slice, offset + written as u64, ReadWriteFlags::DSYNC) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(Errno::INTR) => {}
            Err(errno) => return (written, Err(errno.into())),
        }
    }
    (written, Ok(()))
}

/// What a kernel without `pwritev2` (before 4.6) or without `RWF_DSYNC` (before 4.7), or a file
/// system that does not take it, answers.
#[cfg(target_os = "linux")]
fn refuses_the_flag(err: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::NOSYS, Errno::OPNOTSUPP, Errno::INVAL]
        .iter()
        .any(|errno| err.raw_os_error() == Some(errno.raw_os_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes into the middle and past the end of a file through `writes`; returns it.
    fn writes_at_offsets(mut writes: SyncedWrites) -> SyncedWrites {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.write_all_at(&[b'.'; 16], 0).unwrap();
        writes.write_all_at(&file, b"abcd", 4).unwrap();
        writes.write_all_at(&file, b"xy", 14).unwrap();
        writes.write_all_at(&file, b"tail", 16).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"....abcd......xytail");
        writes
    }

    #[test]
    fn writes_at_the_offset_and_keeps_what_is_around() {
        let writes = writes_at_offsets(SyncedWrites::new());
        assert_eq!(
            writes.uses_dsync(),
            cfg!(target_os = "linux"),
            "this kernel and file system take RWF_DSYNC"
        );
    }

    #[test]
    fn without_the_flag_it_writes_then_syncs_the_same_bytes() {
        // As after a refusal: the two calls.
        writes_at_offsets(SyncedWrites { dsync: false });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_refused_flag_falls_back() {
        use rustix::io::Errno;
        for errno in [Errno::NOSYS, Errno::OPNOTSUPP, Errno::INVAL] {
            assert!(refuses_the_flag(&errno.into()), "{errno:?}");
        }
        for errno in [Errno::IO, Errno::NOSPC, Errno::BADF, Errno::INTR] {
            assert!(!refuses_the_flag(&errno.into()), "{errno:?}");
        }
    }

    #[test]
    fn a_write_to_a_read_only_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"kept").unwrap();
        let file = File::open(&path).unwrap();
        let mut writes = SyncedWrites::new();
        let err = writes.write_all_at(&file, b"lost", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(9), "EBADF: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }
}
