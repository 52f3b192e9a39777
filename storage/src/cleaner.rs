//! Retention and compaction: removing old data without ever renumbering offsets.
//!
//! - **Retention** (`cleanup.policy` includes `delete`) deletes whole *closed* segments, oldest
//!   first: by time when a segment's newest timestamp is older than `retention.ms`, by size while
//!   the log without its oldest segment is still at least `retention.bytes`. The log start moves to
//!   the first kept segment; the checkpoint is written before any file is deleted.
//! - **Compaction** (`compact`) keeps, in closed segments, only the latest record of each key
//!   (latest among closed segments). A tombstone (null value) is itself removed once its timestamp
//!   is older than `delete.retention.ms`. The map of keys is bounded
//!   (`LogConfig::compaction_map_bytes`), as Kafka's cleaner's is: a compaction maps the keys of
//!   the records not mapped before (from the log's first dirty offset on) until the map is full,
//!   then rewrites the segments up to the last record mapped, dropping every record a mapped one
//!   supersedes; the next compaction goes on from there. A record is dropped only for a newer
//!   record of its key that the map holds, so a partial map never drops a latest record.
//!   Survivors keep their offsets; a batch keeps its base offset and offset range even when
//!   records inside it go, so offsets in a compacted log are increasing with gaps. Compressed
//!   batches are decompressed to read their keys and, when records go, rebuilt with the
//!   survivors compressed with the same codec (as Kafka's cleaner does); one that does not
//!   decompress (corrupt, or over the size bound) is kept whole, since compaction never drops
//!   what it cannot read. Control batches are kept whole (records unread). Records without a key
//!   are kept.
//!
//! Compaction is crash-safe: a segment is rewritten into `<base>.log.cleaned` (plus
//! `.index.cleaned`, `.timeindex.cleaned`), synced, then renamed over the original — an atomic
//! replace — and the directory synced. Recovery deletes `*.cleaned` leftovers (the original is
//! intact) and rebuilds an index that no longer matches its log after a crash between renames.

use std::{collections::HashMap, rc::Rc};

use tracing::{info, warn};

use crate::{
    batch::{BatchBuilder, BatchView, ATTR_COMPRESSION_MASK},
    error::{Result, StorageError},
    files,
    index::{SealInfo, SegmentIndex},
    io::{align_down, Clock, Dir, File, IoBuf},
    log::{index_name, log_name, time_index_name, Log, CLEANER_CHECKPOINT},
};

/// What one retention pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start: u64,
}

/// What one compaction pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Distinct keys mapped, and the map's size as counted against `compaction_map_bytes`.
    pub keys_mapped: usize,
    pub map_bytes: usize,
    /// Every record below this offset has now been mapped by some compaction; the next one maps
    /// from here.
    pub mapped_to: u64,
    /// Whether that covers every closed segment (false: the map filled up; compact again).
    pub complete: bool,
}

/// What the key map charges per key against `compaction_map_bytes`: the key's bytes plus the
/// entry, the vector's header and the table's slack.
pub fn map_entry_bytes(key_len: usize) -> usize {
    key_len + 64
}

/// The fate of one batch under compaction.
#[derive(Debug, PartialEq, Eq)]
pub enum CleanedBatch {
    Keep,
    Drop,
    /// Some records removed: the batch re-encoded with the survivors (same base offset and range).
    Rebuilt {
        bytes: Vec<u8>,
        removed: u64,
    },
}

/// Decides what compaction does with `batch`, given the latest offset of every key and the
/// timestamp before which tombstones are removed. Pure, so tests can check it against a model.
/// A compressed batch is decompressed and, if rebuilt, compressed again with its codec.
pub fn clean_batch(batch: &BatchView<'_>, latest: &HashMap<Vec<u8>, u64>, tombstone_horizon: i64) -> CleanedBatch {
    if batch.is_control() {
        return CleanedBatch::Keep;
    }
    let Ok(section) = batch.decompressed_records() else { return CleanedBatch::Keep };
    let base = batch.base_offset();
    let mut kept = Vec::new();
    let mut removed = 0u64;
    for record in section.records() {
        let Ok(record) = record else { return CleanedBatch::Keep }; // unreadable: never drop what we cannot read
        let offset = record.offset(base) as u64;
        let survives = match record.key {
            None => true,
            Some(key) => {
                // Superseded only by a newer record the map holds (with a partial map, a key's
                // records past the mapped range are newer than its entry).
                let is_latest = latest.get(key).is_none_or(|&l| l <= offset);
                let expired_tombstone =
                    record.value.is_none() && record.timestamp(batch.base_timestamp()) < tombstone_horizon;
                is_latest && !expired_tombstone
            }
        };
        if survives {
            kept.push(record);
        } else {
            removed += 1;
        }
    }
    if removed == 0 {
        return CleanedBatch::Keep;
    }
    // Re-encoding needs strictly increasing deltas within the batch's range; a batch that breaks
    // that (a malformed producer) is kept as it is rather than rewritten.
    let deltas_ok = kept.windows(2).all(|w| w[0].offset_delta < w[1].offset_delta)
        && kept.first().is_some_and(|r| r.offset_delta >= 0)
        && kept.last().is_none_or(|r| r.offset_delta <= batch.last_offset_delta());
    if !deltas_ok && !kept.is_empty() {
        return CleanedBatch::Keep;
    }
    if kept.is_empty() {
        return CleanedBatch::Drop;
    }
    let mut builder = BatchBuilder::new()
        .base_offset(base)
        .partition_leader_epoch(batch.partition_leader_epoch())
        .producer(batch.producer_id(), batch.producer_epoch(), batch.base_sequence())
        .attributes(batch.attributes() & !ATTR_COMPRESSION_MASK)
        .compression(batch.compression())
        .base_timestamp(batch.base_timestamp())
        .last_offset_delta(batch.last_offset_delta());
    if batch.is_log_append_time() {
        // The broker's timestamp stands for the whole batch; keep it (as Kafka's cleaner does).
        builder = builder.max_timestamp(batch.max_timestamp());
    }
    for r in &kept {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r.headers.iter().map(|h| (h.key, h.value)).collect();
        builder.push_with_delta(r.offset_delta, r.timestamp(batch.base_timestamp()), r.key, r.value, &headers);
    }
    CleanedBatch::Rebuilt { bytes: builder.build(), removed }
}

/// Reads a segment's batches in order through a window.
struct BatchReader<F: File> {
    file: Rc<F>,
    size: u64,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
}

impl<F: File> BatchReader<F> {
    fn new(file: Rc<F>, size: u64) -> Self {
        BatchReader { file, size, pos: 0, window: Vec::new(), window_start: 0 }
    }

    /// The next batch's bytes, validated; `None` at the end of the segment.
    async fn next(&mut self) -> std::io::Result<Option<Result<(u64, Vec<u8>)>>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let mut need = crate::batch::HEADER_LEN;
        loop {
            let have_end = self.window_start + self.window.len() as u64;
            if self.pos < self.window_start || self.pos + need as u64 > have_end {
                let len = (need.max(1 << 20) as u64).min(self.size - self.pos) as usize;
                self.window = self.file.read_at(self.pos, len).await?;
                self.window_start = self.pos;
            }
            let bytes = &self.window[(self.pos - self.window_start) as usize..];
            match BatchView::parse(bytes) {
                Ok(batch) => {
                    let at = self.pos;
                    self.pos += batch.total_len() as u64;
                    return Ok(Some(Ok((at, batch.as_bytes().to_vec()))));
                }
                Err(crate::batch::DecodeError::Incomplete { needed })
                    if (self.pos + needed as u64) <= self.size && needed > bytes.len() =>
                {
                    need = needed;
                }
                Err(e) => {
                    return Ok(Some(Err(StorageError::InvalidBatch(e))));
                }
            }
        }
    }
}

/// Accumulates a new segment file and writes it in aligned pieces.
struct SegmentWriter<F: File> {
    file: F,
    pending: Vec<u8>,
    /// File position of `pending[0]` (a multiple of ALIGN).
    pending_pos: u64,
    size: u64,
}

impl<F: File> SegmentWriter<F> {
    async fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
        if self.pending.len() >= 1 << 20 {
            let aligned = align_down(self.pending.len() as u64) as usize;
            self.write(aligned).await?;
        }
        Ok(())
    }

    /// Writes the first `len` pending bytes (zero-padded to ALIGN) and keeps the rest.
    async fn write(&mut self, len: usize) -> std::io::Result<()> {
        let padded = crate::io::align_up(len as u64) as usize;
        let mut buf = self.file.alloc_buf(padded);
        buf.as_mut_slice()[..len].copy_from_slice(&self.pending[..len]);
        buf.as_mut_slice()[len..].fill(0);
        self.file.write_at(Rc::new(buf), self.pending_pos).await?;
        self.pending.drain(..len);
        self.pending_pos += len as u64;
        Ok(())
    }

    async fn finish(mut self) -> std::io::Result<F> {
        if !self.pending.is_empty() {
            let len = self.pending.len();
            self.write(len).await?;
        }
        self.file.set_len(self.size).await?;
        self.file.sync_data().await?;
        Ok(self.file)
    }
}

/// A closed segment as compaction sees it.
struct Candidate<F> {
    base: u64,
    file: Rc<F>,
    size: u64,
    next_offset: u64,
}

impl<D: Dir, C: Clock> Log<D, C> {
    /// Deletes closed segments past `retention.ms` / `retention.bytes` (if the cleanup policy
    /// deletes). The active segment is never deleted.
    pub async fn enforce_retention(&self) -> Result<RetentionOutcome> {
        if !self.config().cleanup_policy.deletes() {
            return Ok(RetentionOutcome { log_start: self.offsets().log_start, ..Default::default() });
        }
        let _maintenance = self.begin_maintenance().await?;
        let now = self.clock.now_ms();
        let (new_start, deleted, bytes) = {
            let st = self.state.borrow();
            let active = st.active().base;
            let mut total: u64 = st.segments.values().map(|s| s.size).sum();
            let (mut new_start, mut deleted, mut bytes) = (st.log_start, 0, 0);
            for (next_base, seg) in st.segments.keys().skip(1).zip(st.segments.values()) {
                if seg.base == active {
                    break;
                }
                let too_old = self.config().retention_ms.is_some_and(|ms| seg.index.max_timestamp() < now - ms);
                let too_big = self.config().retention_bytes.is_some_and(|limit| total - seg.size >= limit);
                if !(too_old || too_big) {
                    break;
                }
                total -= seg.size;
                bytes += seg.size;
                deleted += 1;
                new_start = new_start.max(*next_base);
            }
            (new_start, deleted, bytes)
        };
        if deleted > 0 {
            self.set_log_start(new_start).await?;
            info!(dir = %self.dir.describe(""), deleted, bytes, new_start, "retention deleted segments");
        }
        Ok(RetentionOutcome { deleted_segments: deleted, deleted_bytes: bytes, log_start: self.offsets().log_start })
    }

    /// Compacts the closed segments (if the cleanup policy compacts). Segments with damaged
    /// ranges are left alone.
    pub async fn compact(&self) -> Result<CompactionOutcome> {
        let mut outcome = CompactionOutcome::default();
        if !self.config().cleanup_policy.compacts() {
            return Ok(outcome);
        }
        let _maintenance = self.begin_maintenance().await?;
        let candidates: Vec<Candidate<D::File>> = {
            let st = self.state.borrow();
            let active = st.active().base;
            st.segments
                .values()
                .filter(|s| s.base != active)
                .filter(|s| !st.damaged.iter().any(|d| d.segment == log_name(s.base)))
                .map(|s| Candidate { base: s.base, file: s.file.clone(), size: s.size, next_offset: s.next_offset })
                .collect()
        };
        // Pass 1: the latest offset of each key of the records not mapped before.
        let first_dirty = self.first_dirty.get();
        debug_assert!(first_dirty <= self.offsets().log_end, "the first dirty offset lies inside the log");
        let closed_end = candidates.last().map_or(first_dirty, |c| c.next_offset).max(first_dirty);
        let (latest, map_bytes, mapped_to) = self.map_keys(&candidates, first_dirty, closed_end).await?;
        debug_assert!(mapped_to >= first_dirty, "compaction never maps backwards");
        debug_assert!(latest.values().all(|&l| (first_dirty..mapped_to).contains(&l)), "the map covers its range");
        outcome.keys_mapped = latest.len();
        outcome.map_bytes = map_bytes;
        outcome.mapped_to = mapped_to;
        outcome.complete = mapped_to >= closed_end;
        // Pass 2: rewrite each segment up to the last record mapped that loses something.
        let horizon = self.clock.now_ms() - self.config().delete_retention_ms;
        for c in candidates.into_iter().filter(|c| c.base < mapped_to) {
            self.compact_segment(c, &latest, horizon, &mut outcome).await?;
        }
        if mapped_to > first_dirty {
            self.first_dirty.set(mapped_to);
            self.save_first_dirty().await;
        }
        Ok(outcome)
    }

    /// Persists the first dirty offset (best effort: without it a restart maps from the log
    /// start again, which costs time, not correctness; a stale one only leaves duplicates in
    /// place longer, since a record is dropped only for a newer one of its key in the map).
    async fn save_first_dirty(&self) {
        let first_dirty = self.first_dirty.get();
        if let Err(e) = files::write_checkpoint(&self.dir, CLEANER_CHECKPOINT, first_dirty).await {
            warn!(dir = %self.dir.describe(""), error = %e, first_dirty, "writing the compaction checkpoint failed");
        }
    }

    /// The latest offset of each key of the candidates' records from `first_dirty` on, until
    /// the map would pass `compaction_map_bytes`; also the map's size and `mapped_to`: every
    /// record below it is mapped (`closed_end` if they all fit).
    async fn map_keys(
        &self,
        candidates: &[Candidate<D::File>],
        first_dirty: u64,
        closed_end: u64,
    ) -> Result<(HashMap<Vec<u8>, u64>, usize, u64)> {
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut map_bytes = 0usize;
        for c in candidates.iter().filter(|c| c.next_offset > first_dirty) {
            let mut reader = BatchReader::new(c.file.clone(), c.size);
            while let Some(batch) =
                reader.next().await.map_err(|e| StorageError::io("reading", self.dir.describe(&log_name(c.base)), e))?
            {
                let (_, bytes) = batch?;
                let view = BatchView::parse(&bytes).map_err(StorageError::InvalidBatch)?;
                if view.is_control() || (view.last_offset() as u64) < first_dirty {
                    continue;
                }
                // An unreadable batch adds no key: older versions of its keys survive, never the reverse.
                let Ok(section) = view.decompressed_records() else { continue };
                for record in section.records().flatten() {
                    let offset = record.offset(view.base_offset()) as u64;
                    let Some(key) = record.key.filter(|_| offset >= first_dirty) else { continue };
                    if let Some(l) = latest.get_mut(key) {
                        *l = offset;
                        continue;
                    }
                    let cost = map_entry_bytes(key.len());
                    // Full: stop before this record (but map one key at least, to progress).
                    if map_bytes + cost > self.config().compaction_map_bytes && !latest.is_empty() {
                        return Ok((latest, map_bytes, offset));
                    }
                    map_bytes += cost;
                    latest.insert(key.to_vec(), offset);
                }
            }
        }
        Ok((latest, map_bytes, closed_end))
    }

    async fn compact_segment(
        &self,
        c: Candidate<D::File>,
        latest: &HashMap<Vec<u8>, u64>,
        horizon: i64,
        outcome: &mut CompactionOutcome,
    ) -> Result<()> {
        let name = log_name(c.base);
        let cleaned_name = format!("{name}.cleaned");
        let io_err = |op: &'static str, e: std::io::Error| StorageError::io(op, self.dir.describe(&cleaned_name), e);
        let file = self.dir.open(&cleaned_name, true).await.map_err(|e| io_err("creating", e))?;
        file.set_len(0).await.map_err(|e| io_err("truncating", e))?;
        let mut writer = SegmentWriter { file, pending: Vec::new(), pending_pos: 0, size: 0 };
        let mut index = SegmentIndex::new();
        let mut reader = BatchReader::new(c.file.clone(), c.size);
        let (mut removed, mut last_crc) = (0u64, 0u32);
        while let Some(batch) =
            reader.next().await.map_err(|e| StorageError::io("reading", self.dir.describe(&name), e))?
        {
            let (_, bytes) = batch?;
            let view = BatchView::parse(&bytes).map_err(StorageError::InvalidBatch)?;
            let out = match clean_batch(&view, latest, horizon) {
                CleanedBatch::Keep => bytes.clone(),
                CleanedBatch::Drop => {
                    removed += view.records_count() as u64;
                    continue;
                }
                CleanedBatch::Rebuilt { bytes, removed: n } => {
                    removed += n;
                    bytes
                }
            };
            let kept = BatchView::parse(&out).expect("compaction produces valid batches");
            index.on_batch(
                (c.base.max(kept.base_offset() as u64) - c.base) as u32,
                writer.size as u32,
                out.len() as u32,
                kept.max_timestamp(),
                self.config().index_interval_bytes,
            );
            last_crc = kept.crc();
            writer.push(&out).await.map_err(|e| io_err("writing", e))?;
        }
        if removed == 0 {
            drop(writer);
            self.remove_if_exists(&cleaned_name).await?;
            return Ok(());
        }
        let new_size = writer.size;
        let cleaned = writer.finish().await.map_err(|e| io_err("finishing", e))?;
        cleaned.close().await.map_err(|e| io_err("closing", e))?;
        let seal = SealInfo {
            log_size: new_size,
            next_offset: c.next_offset,
            max_timestamp: index.max_timestamp(),
            last_batch_crc: last_crc,
        };
        let (offsets, times) = index.encode(&seal);
        let (index_cleaned, time_cleaned) =
            (format!("{}.cleaned", index_name(c.base)), format!("{}.cleaned", time_index_name(c.base)));
        self.write_whole_file(&index_cleaned, &offsets).await?;
        self.write_whole_file(&time_cleaned, &times).await?;
        // The swap: each rename atomically replaces one file; see the module doc for crashes between.
        for (from, to) in [
            (&cleaned_name, name.clone()),
            (&index_cleaned, index_name(c.base)),
            (&time_cleaned, time_index_name(c.base)),
        ] {
            self.dir.rename(from, &to).await.map_err(|e| StorageError::io("renaming", self.dir.describe(from), e))?;
        }
        self.sync_dir().await?;
        let new_file =
            self.dir.open(&name, false).await.map_err(|e| StorageError::io("opening", self.dir.describe(&name), e))?;
        let old_file = {
            let mut st = self.state.borrow_mut();
            let seg = st.segments.get_mut(&c.base).expect("maintenance lock keeps closed segments in place");
            let old_file = std::mem::replace(&mut seg.file, Rc::new(new_file));
            seg.size = new_size;
            seg.index = index;
            seg.last_batch_crc = last_crc;
            old_file
        };
        outcome.segments_rewritten += 1;
        outcome.records_removed += removed;
        outcome.bytes_before += c.size;
        outcome.bytes_after += new_size;
        info!(dir = %self.dir.describe(""), segment = %name, removed, before = c.size, after = new_size, "compacted segment");
        // Close the replaced file once nothing here holds it (readers in flight keep it open).
        drop(reader);
        drop(c);
        if let Err(e) = crate::io::close_shared(old_file).await {
            tracing::warn!(dir = %self.dir.describe(""), segment = %name, error = %e, "closing the replaced segment file failed");
        }
        Ok(())
    }
}
