//! Opal's log engine: a segmented, append-only, checksummed log for one partition.
//!
//! A log is a directory of segments. Each segment is a data file of record batches
//! (`<base offset>.log`) with a sparse offset index (`.index`) and time index (`.timeindex`).
//! Appends go through one writer thread that group-commits them (one write and one
//! `fdatasync` for everything queued); reads use positioned reads and never load a segment.
//! The byte formats, recovery rules, fsync policies and retention are in `docs/storage.md`.

mod batch;
mod cache;
mod config;
mod data;
mod deletion;
mod error;
mod index;
mod index_file;
mod keyring;
mod log;
mod reader;
mod recovery;
mod retention;
mod segment;
mod state;
mod synced_write;
mod types;
mod varint;
mod writer;

pub use batch::encoded_batch_len;
pub use config::{FsyncPolicy, LogConfig, MAX_BATCH_BYTES, MAX_SEGMENT_BYTES, MIN_BATCH_BYTES};
pub use error::{DecryptFailure, LogError};
pub use keyring::{KEY_LEN, Keyring, LOOKUP_TAG_LEN, SEAL_OVERHEAD, sealed_value_key};
pub use log::Log;
pub use recovery::create_dir_durable;
pub use types::{Appended, LogStats, Record, RetentionRule, StoredRecord};
/// Key bytes are handed over in this wrapper, which wipes them when dropped.
pub use zeroize::Zeroizing;
