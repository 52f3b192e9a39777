//! Recovery after an unclean stop: what each on-disk state means and what the log does about it.
//!
//! The decisions are [`RECOVERY_TABLE`], one row per state, and [`action_for`] encodes it; the scan
//! that detects the states is [`scan_segment`]. Two facts make the table safe:
//! - A **sealed** segment (every segment but the last) was written out, fsynced and had its indexes
//!   written before the next segment was created, whatever the fsync policy. Anything wrong inside
//!   it is therefore corruption, never a torn write: it is reported and the damaged range is
//!   refused, nothing is truncated.
//! - In the **last** segment, an acknowledged append's bytes are always followed only by bytes that
//!   were never acknowledged (acks follow the contiguous written/synced prefix). So the first bad
//!   byte ends the acknowledged data and the log is truncated there.

use std::{fmt, ops::Range};

use crate::{
    batch::{BatchView, DecodeError, LOG_OVERHEAD},
    index::SegmentIndex,
    io::File,
    producers::{BatchMeta, IdempotentBatch},
};

/// The on-disk states recovery distinguishes, one row each. Keep in step with [`RECOVERY_TABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskState {
    CleanShutdown,
    SealedIndexValid,
    IndexMissing,
    IndexDamaged,
    IndexPastEnd,
    UncleanTail,
    ZeroFilledTail,
    TornTail,
    BadBatchInTail,
    BadBatchInSealed,
    TornSealed,
    OffsetsNotMonotonic,
    LeftoverCompaction,
    TruncationIntent,
    BelowLogStart,
}

/// What recovery does about a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Use the segment and its indexes as they are; no scan.
    Trust,
    /// Scan every batch (length, CRC, offsets) and rebuild both indexes from the scan.
    ScanAndRebuildIndex,
    /// The logical end is here: cut the file at the first bad byte.
    TruncateAtFirstBadByte,
    /// Keep the bytes, report them, and refuse reads of the offsets they cover.
    ReportAndRefuseRange,
    /// Delete the leftover files.
    Delete,
    /// Finish the interrupted operation (idempotent).
    Redo,
}

/// One row of the recovery decision table.
pub struct Row {
    pub state: DiskState,
    pub detected_by: &'static str,
    pub action: Action,
}

/// The recovery decisions, one row per on-disk state.
pub const RECOVERY_TABLE: &[Row] = &[
    Row { state: DiskState::CleanShutdown, detected_by: "valid clean-shutdown marker and valid indexes for every segment", action: Action::Trust },
    Row { state: DiskState::SealedIndexValid, detected_by: "segment is not the last; index headers valid and agree with the log file (size, next offset, last batch CRC)", action: Action::Trust },
    Row { state: DiskState::IndexMissing, detected_by: ".index or .timeindex file absent", action: Action::ScanAndRebuildIndex },
    Row { state: DiskState::IndexDamaged, detected_by: "index file truncated, bad magic or bad CRC", action: Action::ScanAndRebuildIndex },
    Row { state: DiskState::IndexPastEnd, detected_by: "index header disagrees with the log file, or an entry points past its end", action: Action::ScanAndRebuildIndex },
    Row { state: DiskState::UncleanTail, detected_by: "last segment, no valid clean-shutdown marker", action: Action::ScanAndRebuildIndex },
    Row { state: DiskState::ZeroFilledTail, detected_by: "zero bytes where the next batch header would be (page padding, preallocated space)", action: Action::TruncateAtFirstBadByte },
    Row { state: DiskState::TornTail, detected_by: "last segment ends inside a batch", action: Action::TruncateAtFirstBadByte },
    Row { state: DiskState::BadBatchInTail, detected_by: "last segment: bad length, magic or CRC (whatever follows was never acknowledged)", action: Action::TruncateAtFirstBadByte },
    Row { state: DiskState::BadBatchInSealed, detected_by: "sealed segment: bad length, magic or CRC, before its end", action: Action::ReportAndRefuseRange },
    Row { state: DiskState::TornSealed, detected_by: "sealed segment ends inside a batch (data lost from a synced file)", action: Action::ReportAndRefuseRange },
    Row { state: DiskState::OffsetsNotMonotonic, detected_by: "a batch's base offset is below the previous batch's last offset + 1: stale bytes, treated like a bad batch (truncate in the last segment, refuse in a sealed one)", action: Action::TruncateAtFirstBadByte },
    Row { state: DiskState::LeftoverCompaction, detected_by: "*.cleaned files: a compaction that did not finish its swap", action: Action::Delete },
    Row { state: DiskState::TruncationIntent, detected_by: "truncate.checkpoint present: a suffix truncation that may not have finished", action: Action::Redo },
    Row { state: DiskState::BelowLogStart, detected_by: "segment wholly below the log-start checkpoint (retention or delete-records interrupted)", action: Action::Delete },
];

/// The action for a state: the table above as a function.
pub fn action_for(state: DiskState) -> Action {
    RECOVERY_TABLE.iter().find(|row| row.state == state).map(|row| row.action).expect("every state has a row")
}

/// Where a scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Exactly at the end of the file, after a valid batch (or an empty file).
    Eof,
    /// Zero bytes where a batch header should be.
    ZeroTail,
    /// The file ends inside a batch.
    Torn,
    /// An invalid batch at `scan.valid_end`.
    Bad { reason: String },
    /// A valid batch whose offsets do not follow the previous batch's (stale bytes).
    Stale { reason: String },
}

/// A range of a sealed segment that failed validation but is followed by valid data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Offsets the damaged bytes may hold: from after the last good batch to before the next one.
    pub offsets: Range<u64>,
    pub positions: Range<u64>,
    pub reason: String,
}

/// Result of scanning one segment.
#[derive(Debug)]
pub struct Scan {
    /// Position after the last batch kept (bytes after it are not part of the log).
    pub valid_end: u64,
    /// One past the last offset of the last valid batch (the segment base if none).
    pub next_offset: u64,
    pub last_batch_crc: u32,
    pub batches: u64,
    pub index: SegmentIndex,
    pub damage: Vec<Damage>,
    pub end: ScanEnd,
    /// Bytes after `valid_end` that parse as valid batches; non-zero means the cut dropped data
    /// that was written but never acknowledged (concurrent writes completing out of order), or
    /// that a bit flipped in the tail. Reported so an operator can tell.
    pub valid_bytes_after_end: u64,
    /// The idempotent producers' batches kept, in offset order: (producer id, epoch, batch).
    /// Recovery replays them into the producer state, so it reads the segment once.
    pub producer_batches: Vec<(i64, i16, BatchMeta)>,
}

/// Reads windows of this size while scanning.
const SCAN_WINDOW: usize = 4 << 20;

/// Reads a file sequentially through a window, so a scan never holds the whole segment in memory.
struct Window<'f, F: File> {
    file: &'f F,
    file_len: u64,
    start: u64,
    bytes: Vec<u8>,
}

impl<'f, F: File> Window<'f, F> {
    /// The bytes from `pos`, at least `need` of them unless the file ends first.
    async fn at(&mut self, pos: u64, need: usize) -> std::io::Result<&[u8]> {
        let have_end = self.start + self.bytes.len() as u64;
        let want_end = (pos + need as u64).min(self.file_len);
        if pos < self.start || want_end > have_end {
            let len = (need.max(SCAN_WINDOW) as u64).min(self.file_len.saturating_sub(pos)) as usize;
            self.bytes = self.file.read_at(pos, len).await?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.bytes[from.min(self.bytes.len())..])
    }
}

/// Scans a segment from its start: validates every batch and rebuilds the indexes.
/// `sealed` selects how bad bytes are handled (see the module doc).
pub async fn scan_segment<F: File>(
    file: &F,
    base: u64,
    file_len: u64,
    sealed: bool,
    index_interval: u64,
) -> std::io::Result<Scan> {
    let mut window = Window { file, file_len, start: 0, bytes: Vec::new() };
    let mut scan = Scan {
        valid_end: 0,
        next_offset: base,
        last_batch_crc: 0,
        batches: 0,
        index: SegmentIndex::new(),
        damage: Vec::new(),
        end: ScanEnd::Eof,
        valid_bytes_after_end: 0,
        producer_batches: Vec::new(),
    };
    let mut pos = 0u64;
    loop {
        if pos >= file_len {
            scan.end = ScanEnd::Eof;
            break;
        }
        let bytes = window.at(pos, crate::batch::HEADER_LEN).await?;
        if is_zero_header(bytes) {
            scan.end = ScanEnd::ZeroTail;
            break;
        }
        let total = BatchView::peek_total_len(bytes).unwrap_or(LOG_OVERHEAD);
        let bytes = window.at(pos, total).await?;
        let problem = match BatchView::parse(bytes) {
            Ok(batch) if batch.base_offset() >= 0 && batch.base_offset() as u64 >= scan.next_offset => {
                let rel = (batch.base_offset() as u64 - base) as u32;
                scan.index.on_batch(rel, pos as u32, batch.total_len() as u32, batch.max_timestamp(), index_interval);
                scan.next_offset = batch.last_offset() as u64 + 1;
                scan.last_batch_crc = batch.crc();
                scan.batches += 1;
                if let Some(p) = IdempotentBatch::of(&batch) {
                    let meta = p.meta(batch.base_offset() as u64, batch.last_offset() as u64, batch.max_timestamp());
                    scan.producer_batches.push((p.producer_id, p.epoch, meta));
                }
                pos += batch.total_len() as u64;
                scan.valid_end = pos;
                continue;
            }
            Ok(batch) => ScanEnd::Stale {
                reason: format!(
                    "offset {} does not follow {}",
                    batch.base_offset(),
                    scan.next_offset.saturating_sub(1)
                ),
            },
            Err(DecodeError::Incomplete { .. }) => ScanEnd::Torn,
            Err(e) => ScanEnd::Bad { reason: e.to_string() },
        };
        // `pos` holds a bad batch. Look for the next valid one after it.
        let resume = find_next_batch(&mut window, pos + 1, scan.next_offset).await?;
        match resume {
            Some(next) if sealed => {
                let next_base = peek_base(&mut window, next).await?;
                scan.damage.push(Damage {
                    offsets: scan.next_offset..next_base,
                    positions: pos..next,
                    reason: describe(&problem),
                });
                pos = next;
                scan.valid_end = pos; // the damaged bytes stay; reads of their offsets are refused
                                      // Index the batch after the damage, so reads past it never scan through it.
                scan.index.force_next_entry();
            }
            _ => {
                if let Some(next) = resume {
                    scan.valid_bytes_after_end = file_len - next;
                }
                if sealed {
                    scan.damage.push(Damage {
                        offsets: scan.next_offset..u64::MAX,
                        positions: pos..file_len,
                        reason: describe(&problem),
                    });
                    scan.valid_end = file_len;
                }
                scan.end = problem;
                break;
            }
        }
    }
    Ok(scan)
}

fn describe(end: &ScanEnd) -> String {
    match end {
        ScanEnd::Torn => "segment ends inside a batch".to_string(),
        ScanEnd::Bad { reason } | ScanEnd::Stale { reason } => reason.clone(),
        other => format!("{other:?}"),
    }
}

fn is_zero_header(bytes: &[u8]) -> bool {
    let n = bytes.len().min(crate::batch::HEADER_LEN);
    bytes[..n].iter().all(|&b| b == 0)
}

async fn peek_base<F: File>(window: &mut Window<'_, F>, pos: u64) -> std::io::Result<u64> {
    let bytes = window.at(pos, 8).await?;
    Ok(i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")) as u64)
}

/// First position `>= from` holding a whole valid batch whose base offset is `>= min_offset`.
/// Used only after a bad batch, to tell damage in the middle from a bad tail.
async fn find_next_batch<F: File>(
    window: &mut Window<'_, F>,
    from: u64,
    min_offset: u64,
) -> std::io::Result<Option<u64>> {
    const HEADER: usize = crate::batch::HEADER_LEN;
    let mut pos = from;
    while pos + HEADER as u64 <= window.file_len {
        let file_len = window.file_len;
        let (candidate, scanned) = {
            let bytes = window.at(pos, 64 << 10).await?;
            let limit = bytes.len().saturating_sub(HEADER);
            let found = (0..limit).find_map(|i| {
                let c = &bytes[i..];
                let total = BatchView::peek_total_len(c)?;
                let plausible = c[16] == 2 && total >= HEADER && pos + (i + total) as u64 <= file_len;
                plausible.then_some((pos + i as u64, total))
            });
            (found, limit.max(1))
        };
        match candidate {
            None => pos += scanned as u64,
            Some((here, total)) => {
                let whole = window.at(here, total).await?;
                if let Ok(batch) = BatchView::parse(whole) {
                    if batch.base_offset() >= 0 && batch.base_offset() as u64 >= min_offset {
                        return Ok(Some(here));
                    }
                }
                pos = here + 1;
            }
        }
    }
    Ok(None)
}

impl fmt::Display for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_exactly_one_row() {
        use DiskState::*;
        let all = [
            CleanShutdown,
            SealedIndexValid,
            IndexMissing,
            IndexDamaged,
            IndexPastEnd,
            UncleanTail,
            ZeroFilledTail,
            TornTail,
            BadBatchInTail,
            BadBatchInSealed,
            TornSealed,
            OffsetsNotMonotonic,
            LeftoverCompaction,
            TruncationIntent,
            BelowLogStart,
        ];
        assert_eq!(all.len(), RECOVERY_TABLE.len());
        for state in all {
            assert_eq!(RECOVERY_TABLE.iter().filter(|r| r.state == state).count(), 1, "{state}");
        }
        assert_eq!(action_for(BadBatchInSealed), Action::ReportAndRefuseRange);
        assert_eq!(action_for(TornTail), Action::TruncateAtFirstBadByte);
    }
}
