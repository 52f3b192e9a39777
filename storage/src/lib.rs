//! # keel-storage — the partition log
//!
//! One partition's data on one node: an append-only sequence of Kafka RecordBatch v2 batches,
//! stored in segment files written with O_DIRECT, with sparse indexes, crash recovery,
//! retention and compaction. The replication layer (Raft) uses this log as its own log:
//! the batch's `partitionLeaderEpoch` is the Raft term and offsets are Raft indexes.
//!
//! ## Map
//! - [`batch`]: the RecordBatch v2 format — zero-copy validation, a builder, record iteration.
//! - [`compression`]: gzip, snappy, lz4 and zstd as Kafka's clients write them, with bounded
//!   decompression (compaction reads compressed batches).
//! - [`log`]: [`Log`], append / read / truncate / close, the write pipeline and group commit.
//! - `open` (private) and [`recovery`]: what opening a directory does after a crash — the
//!   decision table ([`recovery::RECOVERY_TABLE`]) and the segment scan.
//! - [`index`]: sparse offset and time indexes and their on-disk form.
//! - `pipeline` (private): which bytes of the active segment to write next, several writes in
//!   flight, never two on one page.
//! - [`runway`]: under `fsync=always`, zeros written ahead of the active segment's end so
//!   appends overwrite written blocks and their fdatasyncs commit no file system metadata.
//! - [`cleaner`]: retention (delete old segments) and compaction (keep the latest record per key).
//! - [`io`]: the disk as two small traits, with the glommio O_DIRECT implementation
//!   ([`io::dma`]) and a simulated disk with faults and power loss ([`io::sim`]); and
//!   [`io::heap`], which makes malloc keep freed buffers for reuse (the binaries call it).
//! - [`config`]: per-log settings, named after Kafka's topic configs.
//! - [`producers`]: idempotent producers — per producer id the epoch and last five batches, the
//!   append decision (append / duplicate / fenced / out of order) and the snapshot format. Pure
//!   logic; the log calls it on append and rebuilds it on open (snapshot + replay).
//!
//! ## Why it is shaped this way
//! - **Generic over the disk and the clock.** Every decision (what to write where, when to sync,
//!   what recovery keeps, what compaction drops) runs unchanged on the simulator, so tests can
//!   inject torn writes, EIO, ENOSPC and power loss deterministically from a seed.
//! - **The stored bytes are the wire bytes.** Batches are validated once (CRC-32C) on append and
//!   never re-encoded, so a fetch serves exactly what a producer sent (with offsets assigned).
//! - **Direct I/O with our own tail cache.** Writes are page-aligned DMA writes of the in-memory
//!   tail; recent data is served from that tail, older data by aligned DMA reads.
//! - **Disk errors are values.** An I/O error fails the operation with a [`StorageError`]; after
//!   a write or fdatasync failure the log refuses further writes (nothing unsynced is ever called
//!   durable) but keeps serving reads.
//!
//! On-disk layout of a log directory:
//! ```text
//! 00000000000000000000.log        batches (RecordBatch v2, back to back)
//! 00000000000000000000.index      sparse offset index   (written when the segment is sealed)
//! 00000000000000000000.timeindex  sparse time index     (written when the segment is sealed)
//! log-start.checkpoint            first offset served (retention, delete-records)
//! cleaner.checkpoint              compaction's first dirty offset (where the next one maps from)
//! truncate.checkpoint             present only while a suffix truncation runs
//! clean.shutdown                  present only between a clean close and the next open
//! producers.snapshot              idempotent producers: state below an offset (roll, clean close)
//! ```

pub mod batch;
pub mod be_reader;
pub mod cleaner;
pub mod compression;
pub mod config;
pub mod error;
mod files;
pub mod index;
pub mod io;
pub mod log;
mod notify;
mod open;
mod pipeline;
pub mod producers;
pub mod recovery;
pub mod runway;
mod tail;

pub use config::{CleanupPolicy, FsyncPolicy, LogConfig};
pub use error::{Result, StorageError};
pub use log::{AppendInfo, AppendWait, DamagedRange, Log, Offsets, ReadBatches, RecoveryReport};
