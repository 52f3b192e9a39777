//! The one error enum of the storage crate. Operating errors (disk, input, state) are values;
//! programmer errors (broken invariants) panic.

use std::{fmt, io, ops::Range};

use crate::batch::DecodeError;

/// Everything a partition log operation can fail with. Each variant is something the caller can act on.
#[derive(Debug)]
pub enum StorageError {
    /// The batch handed to `append` is malformed (bad length, CRC, magic, ...). Nothing was appended.
    InvalidBatch(DecodeError),
    /// The batch is larger than the log's `max_batch_bytes`. Nothing was appended.
    BatchTooLarge { bytes: usize, max: usize },
    /// The requested offset is outside `[log_start, log_end]`.
    OffsetOutOfRange { offset: u64, log_start: u64, log_end: u64 },
    /// Truncation point is not the last offset of a batch (Raft truncates at batch boundaries).
    NotBatchBoundary { offset: u64 },
    /// The disk ran out of space. Nothing of the failed append was acknowledged; the log stays readable.
    NoSpace(io::Error),
    /// Any other I/O error from the disk (EIO, ...), with what we were doing.
    Io { op: &'static str, file: String, source: io::Error },
    /// The log hit an I/O error on its write path earlier (`reason`) and refuses further writes until it
    /// is reopened, because what is durable is no longer known. Reads keep working.
    Failed { reason: String },
    /// Stored data in `offsets` does not match its checksum (bit rot, a bad sector, a torn write in a
    /// closed segment). The log refuses to serve this range rather than inventing data.
    Corrupt { segment: String, offsets: Range<u64>, reason: String },
    /// The directory holds something recovery cannot make sense of (e.g. an unparseable checkpoint).
    BadLayout(String),
    /// An idempotent producer's batch carries an epoch below the producer's current one: a newer
    /// instance of the producer fenced it (Kafka's `INVALID_PRODUCER_EPOCH`). Nothing was appended.
    ProducerFenced { producer_id: i64, epoch: i16, current: i16 },
    /// An idempotent producer's batch does not continue its sequence (Kafka's
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`): `expected` is the first sequence the log accepts next.
    /// Nothing was appended.
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    /// The log was closed.
    Closed,
}

pub type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// Wraps an I/O error, singling out ENOSPC so callers can tell "disk full" from "disk broken".
    pub fn io(op: &'static str, file: impl Into<String>, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) || source.kind() == io::ErrorKind::StorageFull {
            StorageError::NoSpace(source)
        } else {
            StorageError::Io { op, file: file.into(), source }
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::InvalidBatch(e) => write!(f, "invalid record batch: {e}"),
            StorageError::BatchTooLarge { bytes, max } => {
                write!(f, "record batch of {bytes} bytes exceeds the limit of {max} bytes")
            }
            StorageError::OffsetOutOfRange { offset, log_start, log_end } => {
                write!(f, "offset {offset} is out of range [{log_start}, {log_end}]")
            }
            StorageError::NotBatchBoundary { offset } => {
                write!(f, "offset {offset} is not the last offset of a batch")
            }
            StorageError::NoSpace(e) => write!(f, "no space left on device: {e}"),
            StorageError::Io { op, file, source } => write!(f, "I/O error while {op} {file}: {source}"),
            StorageError::Failed { reason } => {
                write!(f, "log refuses writes after an earlier I/O failure ({reason}); reopen it to recover")
            }
            StorageError::Corrupt { segment, offsets, reason } => {
                write!(f, "corrupt data in segment {segment}, offsets {}..{}: {reason}", offsets.start, offsets.end)
            }
            StorageError::BadLayout(why) => write!(f, "unrecognised log directory layout: {why}"),
            StorageError::ProducerFenced { producer_id, epoch, current } => write!(
                f,
                "invalid producer epoch: producer {producer_id} sent epoch {epoch}, its current epoch is {current}"
            ),
            StorageError::OutOfOrderSequence { producer_id, expected, got } => write!(
                f,
                "out of order sequence number: producer {producer_id} sent sequence {got}, expected {expected}"
            ),
            StorageError::Closed => write!(f, "log is closed"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::NoSpace(e) | StorageError::Io { source: e, .. } => Some(e),
            StorageError::InvalidBatch(e) => Some(e),
            _ => None,
        }
    }
}
