//! The partition log: an append-only sequence of RecordBatch v2 batches split into segments.
//!
//! Offsets (all "one past the last" style, all monotonic except through explicit truncation):
//! - `log_start`: first offset the log serves. Moves forward by retention and delete-records.
//! - `flushed_end`: offsets below it are durable (fdatasync'ed).
//! - `written_end`: offsets below it are written to the file and visible to readers.
//! - `log_end`: the next offset `append` assigns. Batches in `[written_end, log_end)` are being
//!   written; they are not readable yet and not acknowledged.
//!
//! `log_start <= flushed_end <= written_end <= log_end` once anything was appended.
//!
//! Concurrency: every method takes `&self` and is meant to be called from many tasks on one
//! executor thread. An append copies its batch into the in-memory tail synchronously (offset
//! order = byte order = call order), then waits for its bytes to be written (and synced under
//! `fsync=always`). Waiting appenders perform the writes and syncs themselves: whoever finds work
//! to do does it for everyone queued behind, which is group commit without a background task.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    ops::Range,
    rc::Rc,
};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::{
    batch::{self, BatchView, HEADER_LEN},
    config::{FsyncPolicy, LogConfig},
    error::{Result, StorageError},
    files,
    index::{SealInfo, SegmentIndex},
    io::{self, align_down, align_up, Clock, Dir, File, IoBuf},
    notify::Notify,
    open::{load_producers, SegmentSpan},
    pipeline::WritePipeline,
    producers::{Decision, IdempotentBatch, ProducerStates, SNAPSHOT_FILE},
    recovery::DiskState,
    tail::Tail,
};

pub(crate) const CLEAN_SHUTDOWN: &str = "clean.shutdown";
/// fdatasyncs of one log in flight at once (group commit overlaps at most two rounds).
const MAX_SYNCS_IN_FLIGHT: usize = 2;
pub(crate) const LOG_START_CHECKPOINT: &str = "log-start.checkpoint";
/// Compaction's first dirty offset ([`Log::compact`]), so a restart does not map again every
/// key below it. Only an optimisation: absent or damaged, compaction maps from the log start.
pub(crate) const CLEANER_CHECKPOINT: &str = "cleaner.checkpoint";
pub(crate) const TRUNCATE_CHECKPOINT: &str = "truncate.checkpoint";

pub(crate) fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}
pub(crate) fn index_name(base: u64) -> String {
    format!("{base:020}.index")
}
pub(crate) fn time_index_name(base: u64) -> String {
    format!("{base:020}.timeindex")
}

/// One segment: a `.log` file and its indexes.
pub(crate) struct Segment<F> {
    pub(crate) base: u64,
    pub(crate) file: Rc<F>,
    /// Logical size in bytes (for the active segment: bytes appended, written or not).
    pub(crate) size: u64,
    /// One past the last offset this segment covers.
    pub(crate) next_offset: u64,
    pub(crate) last_batch_crc: u32,
    pub(crate) index: SegmentIndex,
    /// When the segment was created or opened (for `segment_ms`).
    pub(crate) created_ms: i64,
}

impl<F> Segment<F> {
    pub(crate) fn seal_info(&self) -> SealInfo {
        SealInfo {
            log_size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.index.max_timestamp(),
            last_batch_crc: self.last_batch_crc,
        }
    }
}

/// A damaged range the log refuses to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    pub segment: String,
    pub offsets: Range<u64>,
    pub reason: String,
}

/// What an append waits for before it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendWait {
    /// The batch is written to its segment file (a producer's `acks=1`: the leader has it). Not
    /// yet durable under `fsync=always`, and until it is, not readable either.
    Written,
    /// The batch is durable under the log's fsync policy (`acks=all`): written, and fdatasync'ed
    /// under `fsync=always` (group commit); under `interval`, synced if the interval has passed.
    Durable,
}

/// Offsets assigned to an appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The batch's max timestamp.
    pub max_timestamp: i64,
    /// The batch was an idempotent producer's retry of a batch already in the log: nothing was
    /// appended, and the offsets and timestamp are the original batch's.
    pub duplicate: bool,
}

/// Whole batches returned by [`Log::read`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatches {
    /// Concatenated batches, exactly as stored.
    pub bytes: Bytes,
    /// Offset to read from next: one past the last offset returned (or the offset asked for when
    /// nothing was returned).
    pub next_offset: u64,
    /// The log's [`Offsets::readable_end`] when the read was served (the high end a reader can
    /// reach now).
    pub readable_end: u64,
    pub log_start: u64,
}

/// The log's offsets at one moment. See the module doc for their meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: u64,
    pub flushed_end: u64,
    pub written_end: u64,
    pub log_end: u64,
    /// Readers are served offsets below this: `flushed_end` under `fsync=always` (nothing is
    /// seen before it is durable, so a crash can never take back a record a consumer read),
    /// `written_end` otherwise (the policy accepts losing unsynced writes).
    pub readable_end: u64,
}

/// What `open` found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub clean_shutdown: bool,
    pub segments: usize,
    pub scanned_segments: usize,
    pub scanned_bytes: u64,
    pub rebuilt_indexes: usize,
    pub truncated_bytes: u64,
    /// Valid-looking bytes discarded after a tail cut (never acknowledged; see recovery docs).
    pub discarded_valid_bytes: u64,
    pub damaged: Vec<DamagedRange>,
    pub deleted_files: Vec<String>,
    /// (state, segment) for each decision recovery took, per [`crate::recovery::RECOVERY_TABLE`].
    pub decisions: Vec<(DiskState, String)>,
    pub log_start: u64,
    pub log_end: u64,
    /// The offset the producer snapshot loaded covers (`None`: no usable snapshot, the producer
    /// state was rebuilt from the whole log).
    pub producer_snapshot: Option<u64>,
    /// Idempotent producers' batches replayed into the producer state after the snapshot.
    pub producer_batches_replayed: u64,
    /// Segments read only to rebuild the producer state (not scanned by recovery anyway).
    pub producer_scanned_segments: usize,
}

pub(crate) struct State<F: File> {
    pub(crate) segments: BTreeMap<u64, Segment<F>>,
    tail: Tail,
    pub(crate) log_start: u64,
    log_end: u64,
    written_end: u64,
    flushed_end: u64,
    /// Position in the active segment below which bytes are durable.
    flushed_pos: u64,
    /// Which bytes of the active segment to write next, and which are written.
    pipeline: WritePipeline,
    /// fdatasyncs in flight, and the highest offset one of them covers.
    syncs_in_flight: usize,
    sync_covers: u64,
    /// (end position, next offset) of batches appended but not yet written.
    pending: VecDeque<(u64, u64)>,
    bytes_since_sync: u64,
    last_sync_ms: i64,
    /// fdatasyncs of appended data that succeeded since the log was opened (`Log::syncs`).
    syncs_done: u64,
    /// Bytes of the active segment file with disk space reserved.
    pub(crate) allocated: u64,
    /// The active segment file holds durable zeros up to here, past its data (the runway, see
    /// [`crate::runway`]); 0 when it has none. Reset whenever the file is cut or replaced.
    pub(crate) zeroed: u64,
    /// A runway refill is writing zeros from this position (or syncing them: then it is the
    /// runway's end): appends must not write at or past it, and exclusive work (roll,
    /// truncation) waits for the refill to end.
    pub(crate) zeroing: Option<u64>,
    /// An append waits for the refill's zeros to be written past it: the refill stops pausing.
    pub(crate) zeros_wanted: bool,
    /// Making the runway failed (a full disk, say): none again for this segment file, rather
    /// than a failing attempt after every append.
    pub(crate) runway_refused: bool,
    /// A roll, truncation or preallocation is running: appends wait.
    exclusive: bool,
    /// Retention, compaction or truncation is running: other maintenance waits.
    pub(crate) maintenance: bool,
    failed: Option<String>,
    closed: bool,
    pub(crate) damaged: Vec<DamagedRange>,
    /// Idempotent producers: epoch and last batches of each (see [`crate::producers`]).
    producers: ProducerStates,
}

/// One partition's log. See the module doc.
pub struct Log<D: Dir, C: Clock> {
    pub(crate) dir: D,
    pub(crate) clock: C,
    /// Replaced whole by [`Log::reconfigure`]; read through [`Log::config`] (a snapshot, so no
    /// borrow is ever held across an await).
    config: RefCell<Rc<LogConfig>>,
    pub(crate) state: RefCell<State<D::File>>,
    pub(crate) changed: Notify,
    /// Bytes of recent appends kept in memory; starts at `config.tail_cache_bytes`, lowered by
    /// the owner of many logs to keep their caches within a budget ([`Log::set_cache_limit`]).
    cache_limit: std::cell::Cell<usize>,
    /// Compaction has mapped the keys of every record below this offset; never past the log end.
    /// Kept in `cleaner.checkpoint` across restarts. See [`Log::compact`].
    pub(crate) first_dirty: std::cell::Cell<u64>,
}

/// What an append must do before it can copy its batch in.
enum Prepare {
    Ready(AppendInfo),
    /// An idempotent producer's retry of a batch in the log: nothing to copy, wait for the
    /// original's offsets like an append.
    Duplicate(AppendInfo),
    Wait,
    /// Wait for the runway's zero write in flight, after telling the refill (it may be pausing
    /// between its writes) that it is waited for.
    WaitForZeros,
    Roll,
    Allocate(u64),
}

impl<D: Dir, C: Clock> Log<D, C> {
    /// Opens (recovering if needed) or creates the log in `dir`.
    pub async fn open(dir: D, clock: C, config: LogConfig) -> Result<(Self, RecoveryReport)> {
        config.validate();
        let opened = crate::open::open_segments(&dir, &clock, &config).await?;
        let now = clock.now_ms();
        let cache_limit = std::cell::Cell::new(config.tail_cache_bytes);
        let log = Log {
            dir,
            clock,
            config: RefCell::new(Rc::new(config)),
            state: RefCell::new(State {
                segments: opened.segments,
                tail: opened.tail,
                log_start: opened.log_start,
                log_end: opened.log_end,
                written_end: opened.log_end,
                flushed_end: opened.log_end,
                flushed_pos: opened.active_size,
                pipeline: WritePipeline::new(opened.active_size),
                syncs_in_flight: 0,
                sync_covers: 0,
                pending: VecDeque::new(),
                bytes_since_sync: 0,
                last_sync_ms: now,
                syncs_done: 0,
                allocated: 0,
                zeroed: 0,
                zeroing: None,
                zeros_wanted: false,
                runway_refused: false,
                exclusive: false,
                maintenance: false,
                failed: None,
                closed: false,
                damaged: opened.report.damaged.clone(),
                producers: opened.producers,
            }),
            changed: Notify::default(),
            cache_limit,
            first_dirty: std::cell::Cell::new(0),
        };
        let mut report = opened.report;
        // Redo an interrupted suffix truncation before anything else can read or write.
        if let Some(end) = opened.truncate_intent {
            report.decisions.push((DiskState::TruncationIntent, TRUNCATE_CHECKPOINT.into()));
            if end < log.offsets().log_end {
                log.truncate_suffix(end).await?;
            } else {
                log.remove_checkpoint(TRUNCATE_CHECKPOINT).await?;
            }
        }
        let offsets = log.offsets();
        // Where the last compaction left off; never past the log end (a truncation since).
        match files::read_checkpoint(&log.dir, CLEANER_CHECKPOINT).await {
            Ok(Some(first_dirty)) => log.first_dirty.set(first_dirty.min(offsets.log_end)),
            Ok(None) => {}
            Err(e) => {
                warn!(dir = %log.dir.describe(""), error = %e, "ignoring the compaction checkpoint; the next compaction maps from the log start")
            }
        }
        report.log_start = offsets.log_start;
        report.log_end = offsets.log_end;
        // One line per log is noise with thousands of partitions; say more only when recovery
        // had work to do.
        let eventful = !report.clean_shutdown && (report.truncated_bytes > 0 || !report.decisions.is_empty());
        if eventful || !report.damaged.is_empty() {
            info!(dir = %log.dir.describe(""), log_start = offsets.log_start, log_end = offsets.log_end,
                truncated_bytes = report.truncated_bytes, damaged = report.damaged.len(), "log recovered");
        } else {
            debug!(dir = %log.dir.describe(""), log_start = offsets.log_start, log_end = offsets.log_end,
                clean = report.clean_shutdown, "log opened");
        }
        Ok((log, report))
    }

    /// The settings in force (a snapshot: a [`Log::reconfigure`] later does not change it).
    pub fn config(&self) -> Rc<LogConfig> {
        self.config.borrow().clone()
    }

    /// Applies a topic's changed settings at once: `segment.bytes` and `segment.ms` (from the next
    /// append on), retention by time and size, the cleanup policy, `delete.retention.ms` (from the
    /// next maintenance round on) and the largest batch. Every other setting, the fsync policy
    /// among them, keeps the value the log was opened with until it is opened again: switching
    /// fsync policy under appends in flight would move the readable end backwards.
    pub fn reconfigure(&self, next: &LogConfig) {
        let mut config = (*self.config()).clone();
        config.segment_bytes = next.segment_bytes;
        config.segment_ms = next.segment_ms;
        config.retention_ms = next.retention_ms;
        config.retention_bytes = next.retention_bytes;
        config.cleanup_policy = next.cleanup_policy;
        config.delete_retention_ms = next.delete_retention_ms;
        config.max_batch_bytes = next.max_batch_bytes;
        config.validate();
        *self.config.borrow_mut() = Rc::new(config);
    }

    pub fn offsets(&self) -> Offsets {
        let st = self.state.borrow();
        debug_assert!(
            st.flushed_end <= st.written_end && st.written_end <= st.log_end,
            "offset order broken: flushed {} written {} end {}",
            st.flushed_end,
            st.written_end,
            st.log_end
        );
        Offsets {
            log_start: st.log_start,
            flushed_end: st.flushed_end,
            written_end: st.written_end,
            log_end: st.log_end,
            readable_end: st.readable_end(self.config().fsync),
        }
    }

    /// Base offset of the active (last) segment: everything below it is in closed segments.
    pub fn active_segment_base(&self) -> u64 {
        *self.state.borrow().segments.keys().next_back().expect("a log always has an active segment")
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.state.borrow().segments.keys().copied().collect()
    }

    /// Total bytes in all segments.
    /// Caps the memory this log keeps of recent appends (at least one 256 KiB chunk while it
    /// holds bytes of the active segment) and drops what is over the cap now, if written: reads
    /// of dropped bytes go to the disk. Also drops kept-for-reuse buffers over the cap.
    pub fn set_cache_limit(&self, bytes: usize) {
        self.cache_limit.set(bytes);
        let mut st = self.state.borrow_mut();
        let written = st.pipeline.written();
        st.tail.trim(written, bytes);
    }

    /// Bytes this log holds in memory for its cache of recent appends (including buffers kept
    /// for reuse).
    pub fn cache_bytes(&self) -> usize {
        self.state.borrow().tail.allocated_bytes()
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.values().map(|s| s.size).sum()
    }

    /// Ranges the log refuses to serve because their bytes failed validation.
    pub fn damaged_ranges(&self) -> Vec<DamagedRange> {
        self.state.borrow().damaged.clone()
    }

    /// Puts the log in the failed state: it refuses writes until reopened, and nothing written
    /// after this point is called durable.
    pub(crate) fn fail(&self, reason: String) {
        if self.refuse(&reason) {
            warn!(dir = %self.dir.describe(""), %reason, "log failed: refusing writes until reopened");
        }
    }

    /// Refuses writes from now on, without calling the log failed: for a log whose partition is
    /// being deleted while a request or a background task still holds it, so that it appends,
    /// rolls and compacts nothing more in a directory that is going away. Reads go on.
    pub fn refuse_writes(&self, reason: &str) {
        self.refuse(reason);
    }

    /// Records the first reason to refuse writes and wakes every waiter (appenders, long polls);
    /// true if it is the first.
    fn refuse(&self, reason: &str) -> bool {
        let first = {
            let mut st = self.state.borrow_mut();
            let first = st.failed.is_none();
            if first {
                st.failed = Some(reason.to_string());
            }
            first
        };
        self.changed.notify_all();
        first
    }

    /// Completes once a read at `offset` can return something (the readable end moved past it),
    /// or the log failed or closed: the wake-up of a consumer's long poll.
    pub async fn wait_for_readable(&self, offset: u64) {
        loop {
            let wait = self.changed.changed();
            {
                let st = self.state.borrow();
                if st.readable_end(self.config().fsync) > offset || st.closed || st.failed.is_some() {
                    return;
                }
            }
            wait.await;
        }
    }

    /// The reason the log refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.state.borrow().failed.clone()
    }

    // ----------------------------------------------------------------------------------------
    // Append

    /// Appends one RecordBatch v2. Assigns the next offsets (rewrites `baseOffset`), stamps
    /// `partitionLeaderEpoch` with `term`, and completes once the batch is written, and fdatasync'ed
    /// too under `fsync=always`. Returns the assigned range.
    pub async fn append(&self, batch: &[u8], term: u32) -> Result<AppendInfo> {
        self.append_until(batch, term, AppendWait::Durable).await
    }

    /// [`Log::append`], completing at the point `wait` names. With [`AppendWait::Written`] under
    /// `fsync=always` the batch is not durable, nor readable, until an fdatasync covers it: the
    /// caller must see that one runs ([`Log::flush`], or a later durable append).
    pub async fn append_until(&self, batch: &[u8], term: u32, wait: AppendWait) -> Result<AppendInfo> {
        let view = BatchView::parse(batch).map_err(StorageError::InvalidBatch)?;
        if view.total_len() != batch.len() {
            return Err(StorageError::InvalidBatch(batch::DecodeError::Invalid(format!(
                "{} bytes after the end of the batch",
                batch.len() - view.total_len()
            ))));
        }
        let max_batch_bytes = self.config().max_batch_bytes;
        if batch.len() > max_batch_bytes {
            return Err(StorageError::BatchTooLarge { bytes: batch.len(), max: max_batch_bytes });
        }
        let info = loop {
            let wait = self.changed.changed();
            let step = self.prepare_append(&view, term)?;
            match step {
                Prepare::Ready(info) | Prepare::Duplicate(info) => break info,
                Prepare::Wait => wait.await,
                Prepare::WaitForZeros => self.changed.notify_all(), // then waits as `Wait`
                Prepare::Roll => self.roll().await?,
                Prepare::Allocate(upto) => self.allocate(upto).await?,
            }
        };
        // Let every other task that is ready to run append before this one starts a write, so
        // appends that arrive together (a burst of requests, the appenders woken by the last
        // write or fdatasync) leave in one write and one fdatasync instead of a chain of small ones.
        futures_lite::future::yield_now().await;
        self.wait_written(info.last_offset + 1).await?;
        if wait == AppendWait::Written {
            return Ok(info);
        }
        match self.config().fsync {
            FsyncPolicy::Always => self.wait_flushed(info.last_offset + 1).await?,
            FsyncPolicy::Interval { .. } => {
                if self.interval_sync_due() {
                    self.flush().await?;
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(info)
    }

    /// Decides what an append needs; if nothing, copies the batch into the tail (no await between
    /// the decision and the copy, so nothing can change in between). An idempotent producer's
    /// batch is checked here too (duplicate, fenced, out of order), in the same step.
    fn prepare_append(&self, view: &BatchView<'_>, term: u32) -> Result<Prepare> {
        let now = self.clock.now_ms();
        let mut st = self.state.borrow_mut();
        st.check_writable()?;
        if st.exclusive {
            return Ok(Prepare::Wait);
        }
        let producer = IdempotentBatch::of(view);
        if let Some(p) = &producer {
            if let Decision::Duplicate(original) = st.producers.check(p)? {
                return Ok(Prepare::Duplicate(AppendInfo {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    max_timestamp: original.timestamp,
                    duplicate: true,
                }));
            }
        }
        let len = view.total_len() as u64;
        let config = self.config();
        let active = st.segments.values().next_back().expect("active segment");
        let too_big = active.size > 0 && active.size + len > config.segment_bytes;
        let too_old = active.size > 0 && config.segment_ms.is_some_and(|ms| now - active.created_ms >= ms);
        let relative_overflow = st.log_end + view.last_offset_delta() as u64 - active.base > u32::MAX as u64;
        if too_big || too_old || relative_overflow {
            return Ok(Prepare::Roll);
        }
        let end = active.size + len;
        if st.zeroing.is_some_and(|from| align_up(end) > from) {
            // The runway's zero write in flight covers these pages.
            return Ok(if std::mem::replace(&mut st.zeros_wanted, true) {
                Prepare::Wait
            } else {
                Prepare::WaitForZeros
            });
        }
        if config.preallocate_bytes > 0 && end > st.allocated {
            return Ok(Prepare::Allocate(preallocation_target(end, config.preallocate_bytes, config.segment_bytes)));
        }
        let info = st.push_batch(view, term, config.index_interval_bytes, self.cache_limit.get());
        if let Some(p) = producer {
            st.producers.record(p.producer_id, p.epoch, p.meta(info.base_offset, info.last_offset, info.max_timestamp));
        }
        Ok(Prepare::Ready(info))
    }

    /// The idempotent producer `producer_id` as the log knows it: (epoch, last sequence appended).
    pub fn producer_state(&self, producer_id: i64) -> Option<(i16, i32)> {
        self.state.borrow().producers.get(producer_id).map(|e| (e.epoch, e.last().last_seq))
    }

    /// Producers whose state the log keeps.
    pub fn producer_count(&self) -> usize {
        self.state.borrow().producers.len()
    }

    /// Writes the producer snapshot (`producers.snapshot`: temporary file, fdatasync, rename,
    /// directory sync) covering everything below `log_end`, after forgetting expired producers.
    /// Appends must be held off. Best effort: without it the next open replays more of the log.
    async fn write_producer_snapshot(&self) {
        let bytes = {
            let mut st = self.state.borrow_mut();
            st.producers.expire(self.clock.now_ms(), self.config().producer_id_expiration_ms);
            st.producers.encode(st.log_end)
        };
        let tmp = format!("{SNAPSHOT_FILE}.tmp");
        let written: Result<()> = async {
            files::write_whole(&self.dir, &tmp, &bytes).await?;
            self.dir
                .rename(&tmp, SNAPSHOT_FILE)
                .await
                .map_err(|e| StorageError::io("renaming", self.dir.describe(&tmp), e))?;
            self.sync_dir().await
        }
        .await;
        if let Err(e) = written {
            warn!(dir = %self.dir.describe(""), error = %e, "writing the producer snapshot failed; the next open replays more of the log");
        }
    }

    fn interval_sync_due(&self) -> bool {
        let FsyncPolicy::Interval { ms, bytes } = self.config().fsync else { return false };
        let st = self.state.borrow();
        if st.flushed_end >= st.written_end {
            return false;
        }
        bytes.is_some_and(|b| st.bytes_since_sync >= b)
            || ms.is_some_and(|ms| self.clock.now_ms() - st.last_sync_ms >= ms as i64)
    }

    /// For `fsync=interval`: whether appended data is not yet fdatasync'ed, so [`Log::tick`]
    /// still has work to do once its interval passes. Cheap; the broker asks after ticks. Never
    /// true of a log just opened: what recovery keeps counts as durable.
    pub fn interval_sync_pending(&self) -> bool {
        let st = self.state.borrow();
        matches!(self.config().fsync, FsyncPolicy::Interval { .. })
            && st.flushed_end < st.log_end
            && st.failed.is_none()
    }

    /// fdatasyncs of appended data that succeeded since the log was opened (a metric).
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs_done
    }

    /// For `fsync=interval`: fdatasyncs if the interval has passed. Call it periodically (the
    /// runtime does) so data does not stay unsynced when appends stop.
    pub async fn tick(&self) -> Result<()> {
        if self.interval_sync_due() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes and fdatasyncs everything appended so far.
    pub async fn flush(&self) -> Result<()> {
        let end = self.state.borrow().log_end;
        self.wait_written(end).await?;
        self.wait_flushed(end).await
    }

    /// Waits until offsets below `end` are written, performing writes while there are any to do.
    async fn wait_written(&self, end: u64) -> Result<()> {
        loop {
            let wait = self.changed.changed();
            let job = {
                let mut st = self.state.borrow_mut();
                if st.written_end >= end {
                    return Ok(());
                }
                if let Some(reason) = &st.failed {
                    return Err(StorageError::Failed { reason: reason.clone() });
                }
                let config = self.config();
                st.next_write(config.write_bytes, config.writes_in_flight)
            };
            match job {
                Some((file, buf, id, start)) => {
                    let guard = JobGuard { log_state: &self.state, notify: &self.changed, id: Some(id) };
                    let result = file.write_at(Rc::new(buf), start).await;
                    guard.finish(result.map_err(|e| StorageError::io("writing", self.dir.describe(""), e)))?;
                }
                None => wait.await,
            }
        }
    }

    /// Waits until offsets below `end` are durable, running an fdatasync if none is in flight
    /// (concurrent callers share it: group commit). Offsets below `end` must be written.
    async fn wait_flushed(&self, end: u64) -> Result<()> {
        loop {
            let wait = self.changed.changed();
            let sync = {
                let mut st = self.state.borrow_mut();
                if st.flushed_end >= end {
                    return Ok(());
                }
                if let Some(reason) = &st.failed {
                    return Err(StorageError::Failed { reason: reason.clone() });
                }
                // Start an fdatasync if none in flight covers `end`: a second one may overlap the
                // first, so bytes written while a sync runs do not wait for it to finish first.
                let covered = st.syncs_in_flight > 0 && st.sync_covers >= end;
                if covered || st.syncs_in_flight >= MAX_SYNCS_IN_FLIGHT || st.written_end < end {
                    None
                } else {
                    st.syncs_in_flight += 1;
                    st.sync_covers = st.written_end;
                    let file = st.segments.values().next_back().expect("active segment").file.clone();
                    Some((file, st.written_end, st.pipeline.written()))
                }
            };
            let Some((file, covers, covers_pos)) = sync else {
                wait.await;
                continue;
            };
            let result = file.sync_data().await;
            let failed_meanwhile = {
                let mut st = self.state.borrow_mut();
                st.syncs_in_flight -= 1;
                match (&result, st.failed.clone()) {
                    // An earlier failed fdatasync may have dropped data this one "succeeds" over.
                    (Ok(()), Some(reason)) => Some(reason),
                    (Ok(()), None) => {
                        st.flushed_end = st.flushed_end.max(covers);
                        st.flushed_pos = st.flushed_pos.max(covers_pos);
                        st.bytes_since_sync = 0;
                        st.last_sync_ms = self.clock.now_ms();
                        st.syncs_done += 1;
                        None
                    }
                    (Err(_), _) => None,
                }
            };
            self.changed.notify_all();
            if let Some(reason) = failed_meanwhile {
                return Err(StorageError::Failed { reason });
            }
            if let Err(e) = result {
                // After a failed fdatasync nothing unsynced may be called durable, ever (the
                // kernel may have dropped the dirty state): refuse writes until reopened.
                let err = StorageError::io("fdatasync of", self.dir.describe(""), e);
                self.fail(err.to_string());
                self.drop_unsynced(&file).await;
                return Err(err);
            }
        }
    }

    /// After a failed fdatasync: cut the active segment back to its last durable byte, so the
    /// bytes whose durability is unknown (never acknowledged) cannot resurface after a reopen
    /// and sit, possibly lost, in front of later appends. Best effort: if the disk refuses this
    /// too, recovery's scan decides at the next open.
    async fn drop_unsynced(&self, file: &Rc<D::File>) {
        let (pos, end) = {
            let st = self.state.borrow();
            if !st.active().file_is(file) {
                return; // a roll happened meanwhile; its seal failed or will fail on its own
            }
            (st.flushed_pos, st.flushed_end)
        };
        let cut: std::io::Result<()> = async {
            file.set_len(pos).await?;
            file.sync_data().await
        }
        .await;
        if let Err(e) = cut {
            warn!(dir = %self.dir.describe(""), error = %e, "could not drop unsynced bytes after a failed fdatasync");
            return;
        }
        let mut st = self.state.borrow_mut();
        st.written_end = end;
        st.pipeline = WritePipeline::new(pos);
        st.pending.clear();
        st.forget_space_past_data();
        let active = st.segments.values_mut().next_back().expect("active segment");
        active.size = pos;
        warn!(dir = %self.dir.describe(""), log_end = end, "dropped bytes written after the last successful fdatasync");
    }

    /// Runs `work` with appends held off: waits for other exclusive work, then drains writes.
    async fn begin_exclusive(&self) -> Result<ExclusiveGuard<'_, D::File>> {
        loop {
            let wait = self.changed.changed();
            {
                let mut st = self.state.borrow_mut();
                st.check_open()?;
                if !st.exclusive {
                    st.exclusive = true;
                    break;
                }
            }
            wait.await;
        }
        self.changed.notify_all(); // a paced runway refill stops pausing (`runway`)
        let guard = ExclusiveGuard { state: &self.state, notify: &self.changed };
        // A runway refill may not outlive the file, or the length, it writes (roll, truncation).
        loop {
            let wait = self.changed.changed();
            if self.state.borrow().zeroing.is_none() {
                break;
            }
            wait.await;
        }
        let end = self.state.borrow().log_end;
        if self.state.borrow().failed.is_none() {
            self.wait_written(end).await?;
        }
        Ok(guard)
    }

    /// Reserves disk space for the active segment up to `upto` bytes.
    async fn allocate(&self, upto: u64) -> Result<()> {
        let _guard = self.begin_exclusive().await?;
        let file = self.state.borrow().active().file.clone();
        file.allocate(upto).await.map_err(|e| StorageError::io("preallocating", self.dir.describe(""), e))?;
        let mut st = self.state.borrow_mut();
        st.allocated = st.allocated.max(upto);
        Ok(())
    }

    /// Seals the active segment and starts a new one at `log_end` (nothing happens if the active
    /// segment is empty). Appends roll by themselves per `segment_bytes` / `segment_ms`.
    pub async fn roll(&self) -> Result<()> {
        let _guard = self.begin_exclusive().await?;
        self.state.borrow().check_writable()?;
        if self.state.borrow().active().size == 0 {
            return Ok(());
        }
        self.roll_exclusive().await
    }

    /// The roll itself; appends must be held off ([`Log::begin_exclusive`]).
    async fn roll_exclusive(&self) -> Result<()> {
        self.seal_active().await?;
        let base = self.state.borrow().log_end;
        let name = log_name(base);
        let file =
            self.dir.open(&name, true).await.map_err(|e| StorageError::io("creating", self.dir.describe(&name), e))?;
        self.dir.sync().await.map_err(|e| StorageError::io("syncing directory of", self.dir.describe(&name), e))?;
        let now = self.clock.now_ms();
        {
            let mut st = self.state.borrow_mut();
            st.segments.insert(
                base,
                Segment {
                    base,
                    file: Rc::new(file),
                    size: 0,
                    next_offset: base,
                    last_batch_crc: 0,
                    index: SegmentIndex::new(),
                    created_ms: now,
                },
            );
            st.tail = Tail::new(0, &[]);
            st.pipeline = WritePipeline::new(0);
            st.flushed_pos = 0;
            st.forget_space_past_data();
        }
        info!(dir = %self.dir.describe(""), base, "rolled to a new segment");
        self.write_producer_snapshot().await;
        Ok(())
    }

    /// Makes the active segment a sealed one on disk: trimmed to its logical size, fdatasync'ed,
    /// indexes written and synced. Appends must be held off and everything written.
    async fn seal_active(&self) -> Result<()> {
        let (file, base, seal, index) = {
            let st = self.state.borrow();
            st.check_writable()?;
            let active = st.active();
            debug_assert_eq!(st.pipeline.written(), active.size);
            (active.file.clone(), active.base, active.seal_info(), active.index.clone())
        };
        let what = self.dir.describe(&log_name(base));
        let sealed: std::io::Result<()> = async {
            file.set_len(seal.log_size).await?;
            file.sync_data().await
        }
        .await;
        if let Err(e) = sealed {
            let err = StorageError::io("sealing", what, e);
            self.fail(err.to_string());
            self.drop_unsynced(&file).await;
            return Err(err);
        }
        {
            // A sync that failed meanwhile (another task's) means this one proves nothing.
            let mut st = self.state.borrow_mut();
            st.check_writable()?;
            st.flushed_end = st.written_end;
            st.flushed_pos = seal.log_size;
            st.forget_space_past_data();
        }
        self.write_index_files(base, &index, &seal).await
    }

    pub(crate) async fn write_index_files(&self, base: u64, index: &SegmentIndex, seal: &SealInfo) -> Result<()> {
        let (offsets, times) = index.encode(seal);
        self.write_whole_file(&index_name(base), &offsets).await?;
        self.write_whole_file(&time_index_name(base), &times).await
    }

    pub(crate) async fn write_whole_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        files::write_whole(&self.dir, name, bytes).await
    }

    // ----------------------------------------------------------------------------------------
    // Read

    /// Returns whole batches starting with the batch that contains `from` (or the first batch
    /// after it when `from` falls in a gap left by compaction), up to `max_bytes` — but always at
    /// least one whole batch if there is one, so a reader makes progress. Serves only readable
    /// data (`< readable_end`: written, and under `fsync=always` durable); an empty result at
    /// `from >= readable_end` means "nothing new".
    pub async fn read(&self, from: u64, max_bytes: usize) -> Result<ReadBatches> {
        let mut at = from;
        loop {
            let plan = self.plan_read(at)?;
            let Some(plan) = plan else {
                let st = self.state.borrow();
                return Ok(ReadBatches {
                    bytes: Bytes::new(),
                    next_offset: from,
                    readable_end: st.readable_end(self.config().fsync),
                    log_start: st.log_start,
                });
            };
            let (bytes, next) = self.read_segment(&plan, from, max_bytes).await?;
            if !bytes.is_empty() {
                let st = self.state.borrow();
                return Ok(ReadBatches {
                    bytes,
                    next_offset: next,
                    readable_end: st.readable_end(self.config().fsync),
                    log_start: st.log_start,
                });
            }
            // Nothing at or after `at` in this segment (a gap at its end): go to the next one.
            at = plan.segment_next_offset.max(at + 1);
        }
    }

    /// Whether a [`Log::read`] at `from` would now go to the disk: history below the tail of
    /// recent appends kept in memory. The broker bounds how many such reads run at once, so
    /// consumers catching up cannot fill the device queue in front of appends. A hint only: a
    /// roll or an eviction may change the answer before the read.
    pub fn read_would_hit_disk(&self, from: u64) -> bool {
        match self.plan_read(from) {
            Ok(Some(plan)) => plan.cache_start.is_none_or(|cached_from| plan.start < cached_from),
            _ => false,
        }
    }

    fn plan_read(&self, from: u64) -> Result<Option<ReadPlan<D::File>>> {
        let st = self.state.borrow();
        st.check_open()?;
        if from < st.log_start || from > st.log_end {
            return Err(StorageError::OffsetOutOfRange { offset: from, log_start: st.log_start, log_end: st.log_end });
        }
        let readable_end = st.readable_end(self.config().fsync);
        if from >= readable_end {
            return Ok(None);
        }
        if let Some(d) = st.damaged.iter().find(|d| d.offsets.contains(&from)) {
            return Err(StorageError::Corrupt {
                segment: d.segment.clone(),
                offsets: d.offsets.clone(),
                reason: d.reason.clone(),
            });
        }
        let active_base = st.active().base;
        let (_, seg) = st.segments.range(..=from).next_back().ok_or(StorageError::OffsetOutOfRange {
            offset: from,
            log_start: st.log_start,
            log_end: st.log_end,
        })?;
        let is_active = seg.base == active_base;
        let limit = if is_active { st.pipeline.written() } else { seg.size };
        let rel = from.saturating_sub(seg.base).min(u32::MAX as u64) as u32;
        // Stop before a damaged range that starts inside this segment.
        let next_damage = st.damaged.iter().filter(|d| d.offsets.start > from).map(|d| d.offsets.start).min();
        // Never serve at or past the readable end (written_end: a failed truncation lowers it
        // below what files hold; flushed_end under fsync=always).
        let stop_offset = Some(next_damage.map_or(readable_end, |d| d.min(readable_end)));
        Ok(Some(ReadPlan {
            file: seg.file.clone(),
            segment_base: seg.base,
            segment_next_offset: seg.next_offset,
            start: seg.index.position_for(rel),
            limit,
            stop_offset,
            cache_start: if is_active { Some(st.tail.start()) } else { None },
        }))
    }

    /// Reads whole batches of one segment per `plan`; returns them and the next offset. One read
    /// of the segment covers the index gap before `from` and `max_bytes` after it; the result is
    /// a slice of that read buffer (no further copy). Batches read from the file have their CRC
    /// checked; batches from the tail cache do not (they are the bytes whose CRC the append
    /// checked, never written since, and checking them again was a twentieth of a tailing
    /// broker's CPU).
    async fn read_segment(&self, plan: &ReadPlan<D::File>, from: u64, max_bytes: usize) -> Result<(Bytes, u64)> {
        let mut pos = plan.start;
        let want = max_bytes.max(64 << 10) as u64 + self.config().index_interval_bytes;
        if pos >= plan.limit {
            return Ok((Bytes::new(), from));
        }
        let (mut window, mut cached) = self.fetch(plan, pos, want.min(plan.limit - pos) as usize).await?;
        let mut window_start = pos;
        let (mut first, mut out_end, mut next) = (None::<usize>, 0usize, from);
        let mut prev_last: Option<u64> = None;
        while pos < plan.limit {
            let at = (pos - window_start) as usize;
            if window.len() - at < HEADER_LEN && first.is_none() && (pos + (window.len() - at) as u64) < plan.limit {
                (window, cached) = self.fetch(plan, pos, HEADER_LEN.min((plan.limit - pos) as usize)).await?;
                window_start = pos;
                continue;
            }
            // Stop before a refused range, before looking any closer at its bytes.
            let base = header_fields(&window[at..]).map(|(base, _, _)| base);
            if let (Some(stop), Some(base)) = (plan.stop_offset, base) {
                if base >= stop {
                    break;
                }
            }
            let checked = self.check_batch(plan, &window[at..], pos, prev_last, (from, next), !cached);
            let total = match checked {
                Ok(Some(total)) => total,
                Ok(None) => {
                    if first.is_some() {
                        break; // the window is used up: return what it holds
                    }
                    let total = BatchView::peek_total_len(&window[at..]).unwrap_or(HEADER_LEN);
                    (window, cached) = self.fetch(plan, pos, total).await?;
                    window_start = pos;
                    continue;
                }
                // Serve the good batches before a bad one; the next read reports it.
                Err(_) if first.is_some() => break,
                Err(e) => return Err(e),
            };
            let batch = BatchView::parse_unchecked_crc(&window[at..at + total]).expect("checked above");
            let last = batch.last_offset() as u64;
            prev_last = Some(last);
            if last >= from {
                let start = *first.get_or_insert(at);
                if at + total - start > max_bytes && at > start {
                    break;
                }
                out_end = at + total;
                next = last + 1;
                if out_end - start >= max_bytes {
                    break;
                }
            }
            pos += total as u64;
        }
        Ok(match first {
            Some(start) => (Bytes::from(window).slice(start..out_end), next),
            None => (Bytes::new(), from),
        })
    }

    /// Validates the batch at the start of `bytes` (position `pos` in the segment): its length,
    /// CRC (if `verify_crc` and it reaches `from`), and that its offsets follow `prev_last`.
    /// `Ok(None)` if `bytes` does not hold all of it.
    fn check_batch(
        &self,
        plan: &ReadPlan<D::File>,
        bytes: &[u8],
        pos: u64,
        prev_last: Option<u64>,
        (from, next): (u64, u64),
        verify_crc: bool,
    ) -> Result<Option<usize>> {
        let total = match BatchView::peek_total_len(bytes) {
            Some(t) if t >= HEADER_LEN => t,
            Some(_) => return Err(self.corrupt(plan, next, "batch length field too small")),
            None => return Err(self.corrupt(plan, next, "batch length field unreadable")),
        };
        if pos + total as u64 > plan.limit {
            return Err(self.corrupt(plan, next, "batch runs past the end of the segment"));
        }
        if total > bytes.len() {
            return Ok(None);
        }
        // Batches skipped on the way to `from` are not served: their header is enough, so damage
        // inside one does not block reads of the good batches after it.
        let batch =
            BatchView::parse_unchecked_crc(&bytes[..total]).map_err(|e| self.corrupt(plan, next, &e.to_string()))?;
        if verify_crc && batch.last_offset() as u64 >= from {
            BatchView::parse(&bytes[..total]).map_err(|e| self.corrupt(plan, next, &e.to_string()))?;
        }
        if prev_last.is_some_and(|prev| (batch.base_offset() as u64) <= prev) {
            return Err(self.corrupt(plan, next, "batch offsets go backwards (stale bytes)"));
        }
        Ok(Some(total))
    }

    fn corrupt(&self, plan: &ReadPlan<D::File>, from: u64, reason: &str) -> StorageError {
        let segment = log_name(plan.segment_base);
        warn!(dir = %self.dir.describe(""), segment = %segment, from, reason, "corrupt batch on read");
        StorageError::Corrupt { segment, offsets: from..plan.segment_next_offset, reason: reason.to_string() }
    }

    /// Bytes `[pos, pos+len)` of a segment: from the tail cache when held (then `true`), else
    /// from the file.
    async fn fetch(&self, plan: &ReadPlan<D::File>, pos: u64, len: usize) -> Result<(Vec<u8>, bool)> {
        if let Some(cache_start) = plan.cache_start {
            let st = self.state.borrow();
            // Re-check: a roll or eviction may have happened since planning.
            if pos >= cache_start
                && pos >= st.tail.start()
                && pos + len as u64 <= st.tail.end()
                && st.active().file_is(&plan.file)
            {
                return Ok((st.tail.copy_out(pos, len), true));
            }
        }
        let bytes = plan
            .file
            .read_at(pos, len)
            .await
            .map_err(|e| StorageError::io("reading", self.dir.describe(&log_name(plan.segment_base)), e))?;
        Ok((bytes, false))
    }

    /// The first record whose timestamp is `>= ts`: its offset and its timestamp (Kafka's
    /// ListOffsets by time), or `None` if every record is older. Compressed batches are
    /// decompressed to find the record; one that cannot be (corrupt) answers with its first
    /// offset that may be served and its base timestamp.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        let start = {
            let st = self.state.borrow();
            st.check_open()?;
            let seg = st.segments.values().find(|s| s.index.max_timestamp() >= ts && s.next_offset > st.log_start);
            match seg {
                None => return Ok(None),
                Some(seg) => (seg.base + u64::from(seg.index.rel_offset_for_timestamp(ts))).max(st.log_start),
            }
        };
        let mut at = start;
        loop {
            let read = self.read(at, 1 << 20).await?;
            if read.bytes.is_empty() {
                return Ok(None);
            }
            let mut rest = &read.bytes[..];
            while let Ok(batch) = BatchView::parse_unchecked_crc(rest) {
                rest = &rest[batch.total_len()..];
                if batch.max_timestamp() < ts {
                    continue;
                }
                let Ok(section) = batch.decompressed_records() else {
                    return Ok(Some(((batch.base_offset() as u64).max(at), batch.base_timestamp())));
                };
                for record in section.records().flatten() {
                    let offset = record.offset(batch.base_offset()) as u64;
                    // LogAppendTime: every record's time is the batch's (maxTimestamp).
                    let timestamp = if batch.is_log_append_time() {
                        batch.max_timestamp()
                    } else {
                        record.timestamp(batch.base_timestamp())
                    };
                    if timestamp >= ts && offset >= at {
                        return Ok(Some((offset, timestamp)));
                    }
                }
            }
            at = read.next_offset;
        }
    }

    // ----------------------------------------------------------------------------------------
    // Truncation, log start, close

    /// Removes every batch at or after `new_end`, which must be a batch boundary in
    /// `[log_start, log_end]` (Raft truncates at batch boundaries). Durable and crash-safe: an
    /// intent checkpoint is written first and redone by recovery.
    pub async fn truncate_suffix(&self, new_end: u64) -> Result<()> {
        let _maintenance = self.begin_maintenance().await?;
        let _guard = self.begin_exclusive().await?;
        {
            let st = self.state.borrow();
            st.check_writable()?;
            if new_end < st.log_start || new_end > st.log_end {
                return Err(StorageError::OffsetOutOfRange {
                    offset: new_end,
                    log_start: st.log_start,
                    log_end: st.log_end,
                });
            }
            if new_end == st.log_end {
                return Ok(());
            }
        }
        let position = self.boundary_position(new_end).await?;
        // Until the intent is renamed into place nothing has changed and an error is just an error.
        let tmp = format!("{TRUNCATE_CHECKPOINT}.tmp");
        files::write_whole(&self.dir, &tmp, &files::encode_checkpoint(new_end)).await?;
        self.dir
            .rename(&tmp, TRUNCATE_CHECKPOINT)
            .await
            .map_err(|e| StorageError::io("renaming", self.dir.describe(&tmp), e))?;
        // From here a reopen redoes the truncation, so a failure must stop the log: nothing may be
        // appended (and acknowledged) past `new_end` any more.
        // What is appended from `new_end` on again is new to compaction.
        self.first_dirty.set(self.first_dirty.get().min(new_end));
        let done = self.truncate_suffix_steps(new_end, position).await;
        if let Err(e) = &done {
            self.fail(format!("suffix truncation to offset {new_end} did not finish ({e}); reopen to complete it"));
            // Show now what the reopen will complete: nothing at or past `new_end` is served.
            let mut st = self.state.borrow_mut();
            st.log_end = st.log_end.min(new_end);
            st.written_end = st.written_end.min(new_end);
            st.flushed_end = st.flushed_end.min(new_end);
            st.producers.truncate(new_end);
        }
        done
    }

    /// The durable steps of [`Log::truncate_suffix`]; appends are held off.
    async fn truncate_suffix_steps(&self, new_end: u64, position: u64) -> Result<()> {
        // A snapshot covering batches being removed goes first; one below the cut stays valid.
        let snapshot = files::read_small(&self.dir, SNAPSHOT_FILE).await?;
        if snapshot
            .and_then(|b| ProducerStates::decode(&b, self.config().max_producers))
            .is_none_or(|(c, _)| c > new_end)
        {
            self.remove_if_exists(SNAPSHOT_FILE).await?;
        }
        // Compaction's checkpoint may lie past the cut, over offsets about to be appended anew.
        if files::read_checkpoint(&self.dir, CLEANER_CHECKPOINT).await.ok().flatten().is_none_or(|d| d > new_end) {
            self.remove_if_exists(CLEANER_CHECKPOINT).await?;
        }
        self.sync_dir().await?;
        // Drop whole segments above the cut, newest first.
        let doomed: Vec<u64> = self.state.borrow().segments.range(new_end + 1..).map(|(b, _)| *b).rev().collect();
        let keep_base = self.state.borrow().segments.range(..=new_end).next_back().map(|(b, _)| *b);
        let was_active = keep_base == Some(self.active_segment_base());
        for base in doomed {
            if Some(base) == keep_base {
                continue;
            }
            self.close_removed_segment(base).await;
            self.remove_segment_files(base).await?;
        }
        let base = keep_base.expect("the cut lies in a segment");
        let file = self.state.borrow().segments[&base].file.clone();
        let what = self.dir.describe(&log_name(base));
        file.set_len(position).await.map_err(|e| StorageError::io("truncating", what.clone(), e))?;
        file.sync_data().await.map_err(|e| StorageError::io("syncing", what.clone(), e))?;
        // The kept segment is active again: its on-disk indexes are stale.
        for name in [index_name(base), time_index_name(base)] {
            self.remove_if_exists(&name).await?;
        }
        let prefix = file.read_at(align_down(position), (position - align_down(position)) as usize).await;
        let prefix = prefix.map_err(|e| StorageError::io("reading", what, e))?;
        {
            let mut st = self.state.borrow_mut();
            let seg = st.segments.get_mut(&base).expect("kept segment");
            seg.size = position;
            seg.next_offset = new_end;
            seg.index.truncate_to(position);
            seg.last_batch_crc = 0;
            st.tail = Tail::new(position, &prefix);
            st.pipeline = WritePipeline::new(position);
            st.pending.clear();
            st.log_end = new_end;
            st.written_end = new_end;
            st.flushed_end = new_end;
            st.flushed_pos = position;
            st.forget_space_past_data();
            st.damaged.retain(|d| d.offsets.start < new_end);
            st.producers.truncate(new_end);
        }
        // Rebuild the producer state as it was after the last batch kept, as an open would (the
        // in-memory state lost whatever the removed batches replaced).
        let spans: Vec<SegmentSpan<D::File>> = self
            .state
            .borrow()
            .segments
            .values()
            .map(|s| SegmentSpan { base: s.base, file: s.file.clone(), size: s.size, next_offset: s.next_offset })
            .collect();
        let mut report = RecoveryReport::default();
        let producers =
            load_producers(&self.dir, &self.config(), &spans, BTreeMap::new(), new_end, &mut report).await?;
        drop(spans);
        self.state.borrow_mut().producers = producers;
        if !was_active {
            // A closed segment may end in a gap left by compaction, so its last batch need not end
            // at `new_end`. Seal it and start the active segment at `new_end`, whose file name
            // then records the log end durably.
            self.roll_exclusive().await?;
        }
        self.sync_dir().await?;
        self.remove_checkpoint(TRUNCATE_CHECKPOINT).await?;
        info!(dir = %self.dir.describe(""), new_end, "truncated log suffix");
        Ok(())
    }

    /// File position of the batch starting at `offset` (or the segment's end if `offset` is the
    /// segment's next offset). Errors if `offset` is inside a batch.
    async fn boundary_position(&self, offset: u64) -> Result<u64> {
        let (file, seg_base, start, size, next) = {
            let st = self.state.borrow();
            let (_, seg) = st.segments.range(..=offset).next_back().expect("offset >= log_start lies in a segment");
            let rel = (offset - seg.base).min(u32::MAX as u64) as u32;
            (seg.file.clone(), seg.base, seg.index.position_for(rel), seg.size, seg.next_offset)
        };
        if offset >= next {
            return if offset == next { Ok(size) } else { Err(StorageError::NotBatchBoundary { offset }) };
        }
        let mut pos = start;
        while pos < size {
            let head = file
                .read_at(pos, HEADER_LEN)
                .await
                .map_err(|e| StorageError::io("reading", self.dir.describe(&log_name(seg_base)), e))?;
            let (base, last, total) = header_fields(&head).ok_or(StorageError::NotBatchBoundary { offset })?;
            if base == offset {
                return Ok(pos);
            }
            if base > offset || last >= offset {
                return Err(StorageError::NotBatchBoundary { offset });
            }
            pos += total;
        }
        Err(StorageError::NotBatchBoundary { offset })
    }

    /// Moves the log start forward to `offset` (delete-records): offsets below it are no longer
    /// served and segments wholly below it are deleted. Durable: the checkpoint is written first.
    pub async fn advance_log_start(&self, offset: u64) -> Result<()> {
        let _maintenance = self.begin_maintenance().await?;
        {
            let st = self.state.borrow();
            st.check_open()?;
            if offset > st.log_end {
                return Err(StorageError::OffsetOutOfRange { offset, log_start: st.log_start, log_end: st.log_end });
            }
            if offset <= st.log_start {
                return Ok(());
            }
        }
        self.set_log_start(offset).await
    }

    /// Persists a new log start, then deletes closed segments wholly below it.
    pub(crate) async fn set_log_start(&self, offset: u64) -> Result<()> {
        // Never let the durable log start run ahead of durable data: a power loss would leave a
        // log whose start is past its end.
        if offset > self.offsets().flushed_end {
            self.flush().await?;
        }
        self.write_checkpoint(LOG_START_CHECKPOINT, offset).await?;
        self.state.borrow_mut().log_start = offset;
        // A closed segment covers offsets up to the next segment's base.
        let doomed: Vec<u64> = {
            let st = self.state.borrow();
            let bases: Vec<u64> = st.segments.keys().copied().collect();
            bases.windows(2).filter(|w| w[1] <= offset).map(|w| w[0]).collect()
        };
        for base in doomed {
            self.close_removed_segment(base).await;
            self.remove_segment_files(base).await?;
        }
        self.state.borrow_mut().damaged.retain(|d| d.offsets.end > offset);
        self.sync_dir().await
    }

    /// Clean shutdown: writes everything, fdatasyncs, writes the active segment's indexes and the
    /// clean-shutdown marker, so the next open skips the recovery scan.
    pub async fn close(self) -> Result<()> {
        let _maintenance = self.begin_maintenance().await?;
        let guard = self.begin_exclusive().await?;
        if self.failure().is_none() {
            self.seal_active().await?;
            self.write_producer_snapshot().await;
            self.write_checkpoint(CLEAN_SHUTDOWN, self.offsets().log_end).await?;
        }
        self.state.borrow_mut().closed = true;
        drop(guard);
        self.changed.notify_all();
        let segments = std::mem::take(&mut self.state.borrow_mut().segments);
        for (_, segment) in segments {
            io::close_shared(segment.file).await.map_err(|e| StorageError::io("closing", self.dir.describe(""), e))?;
        }
        Ok(())
    }

    /// Forgets segment `base` and closes its file (once no reader holds it).
    async fn close_removed_segment(&self, base: u64) {
        let removed = self.state.borrow_mut().segments.remove(&base);
        if let Some(segment) = removed {
            if let Err(e) = io::close_shared(segment.file).await {
                warn!(dir = %self.dir.describe(""), base, error = %e, "closing a removed segment failed");
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Small durable files

    pub(crate) async fn write_checkpoint(&self, name: &str, value: u64) -> Result<()> {
        files::write_checkpoint(&self.dir, name, value).await
    }

    pub(crate) async fn remove_checkpoint(&self, name: &str) -> Result<()> {
        files::remove_if_exists(&self.dir, name).await?;
        files::sync_dir(&self.dir).await
    }

    pub(crate) async fn remove_if_exists(&self, name: &str) -> Result<()> {
        files::remove_if_exists(&self.dir, name).await.map(|_| ())
    }

    pub(crate) async fn remove_segment_files(&self, base: u64) -> Result<()> {
        for name in [log_name(base), index_name(base), time_index_name(base)] {
            self.remove_if_exists(&name).await?;
        }
        Ok(())
    }

    pub(crate) async fn sync_dir(&self) -> Result<()> {
        files::sync_dir(&self.dir).await
    }

    /// Serialises retention, compaction, truncation and close.
    pub(crate) async fn begin_maintenance(&self) -> Result<MaintenanceGuard<'_, D::File>> {
        loop {
            let wait = self.changed.changed();
            {
                let mut st = self.state.borrow_mut();
                st.check_open()?;
                if !st.maintenance {
                    st.maintenance = true;
                    return Ok(MaintenanceGuard { state: &self.state, notify: &self.changed });
                }
            }
            wait.await;
        }
    }
}

/// (base offset, last offset, total length) from a batch header alone.
fn header_fields(head: &[u8]) -> Option<(u64, u64, u64)> {
    if head.len() < HEADER_LEN {
        return None;
    }
    let base = i64::from_be_bytes(head[0..8].try_into().ok()?);
    let delta = i32::from_be_bytes(head[23..27].try_into().ok()?);
    let total = BatchView::peek_total_len(head)?;
    (base >= 0 && delta >= 0).then_some((base as u64, (base + i64::from(delta)) as u64, total as u64))
}

struct ReadPlan<F> {
    file: Rc<F>,
    /// The segment's base offset (its file name, for errors only: planning allocates nothing,
    /// and every fetch plans at least once, twice when it asks `read_would_hit_disk` first).
    segment_base: u64,
    segment_next_offset: u64,
    start: u64,
    limit: u64,
    stop_offset: Option<u64>,
    cache_start: Option<u64>,
}

impl<F: File> State<F> {
    /// See [`Offsets::readable_end`].
    fn readable_end(&self, fsync: FsyncPolicy) -> u64 {
        match fsync {
            FsyncPolicy::Always => self.flushed_end,
            _ => self.written_end,
        }
    }
}

impl<F: File> State<F> {
    pub(crate) fn active(&self) -> &Segment<F> {
        self.segments.values().next_back().expect("a log always has an active segment")
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        match &self.failed {
            Some(reason) => Err(StorageError::Failed { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Copies a validated batch into the tail with its offsets assigned; updates the indexes.
    fn push_batch(&mut self, view: &BatchView<'_>, term: u32, index_interval: u64, cache_bytes: usize) -> AppendInfo {
        let base = self.log_end;
        let last = base + view.last_offset_delta() as u64;
        let bytes = view.as_bytes();
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&bytes[..HEADER_LEN]);
        batch::set_base_offset(&mut head, base as i64);
        batch::set_partition_leader_epoch(&mut head, term as i32);
        let position = self.tail.end();
        self.tail.push(&head);
        self.tail.push(&bytes[HEADER_LEN..]);
        let active = self.segments.values_mut().next_back().expect("active segment");
        assert_eq!(active.size, position, "tail and segment size agree");
        active.index.on_batch(
            (base - active.base) as u32,
            position as u32,
            bytes.len() as u32,
            view.max_timestamp(),
            index_interval,
        );
        active.size += bytes.len() as u64;
        active.next_offset = last + 1;
        active.last_batch_crc = view.crc();
        self.log_end = last + 1;
        self.pending.push_back((active.size, last + 1));
        self.bytes_since_sync += bytes.len() as u64;
        self.tail.evict(self.pipeline.written(), cache_bytes);
        AppendInfo { base_offset: base, last_offset: last, max_timestamp: view.max_timestamp(), duplicate: false }
    }

    /// The next write to issue, if one may be issued now (see [`WritePipeline`]), with its
    /// bytes copied out of the tail into an aligned, zero-padded buffer.
    fn next_write(&mut self, write_bytes: usize, max_in_flight: usize) -> Option<(Rc<F>, F::Buf, u64, u64)> {
        let plan = self.pipeline.plan(self.tail.end(), write_bytes as u64, max_in_flight)?;
        // prepare_append keeps appends short of a runway refill's zero writes.
        debug_assert!(
            self.zeroing.is_none_or(|from| align_up(plan.end) <= from),
            "a write of [{}, {}) would meet the runway's zero write from {:?}",
            plan.start,
            plan.end,
            self.zeroing
        );
        let file = self.active().file.clone();
        let len = (plan.end - plan.start) as usize;
        let mut buf = file.alloc_buf(align_up(len as u64) as usize);
        let slice = buf.as_mut_slice();
        self.tail.copy_to(plan.start, &mut slice[..len]);
        slice[len..].fill(0);
        Some((file, buf, plan.id, plan.start))
    }

    /// Marks write `id` done and advances the written prefix and `written_end`.
    fn complete_write(&mut self, id: u64) {
        let written = self.pipeline.complete(id);
        while let Some(&(end_pos, next_offset)) = self.pending.front() {
            if end_pos > written {
                break;
            }
            self.written_end = next_offset;
            self.pending.pop_front();
        }
    }
}

impl<F: File> State<F> {
    /// The active segment file was cut or replaced (roll, seal, truncation, dropped unsynced
    /// bytes): nothing is reserved or zeroed past its data any more, and a runway may be tried
    /// again.
    fn forget_space_past_data(&mut self) {
        self.allocated = 0;
        self.zeroed = 0;
        self.runway_refused = false;
    }

    /// Whether a runway refill must write its remaining zeros without pausing: appends or
    /// exclusive work wait for it, or the log failed or closed.
    pub(crate) fn refill_must_hurry(&self) -> bool {
        debug_assert!(!self.zeros_wanted || self.zeroing.is_some(), "zeros wanted only while a refill runs");
        self.zeros_wanted || self.exclusive || self.closed || self.failed.is_some()
    }

    /// No runway work now: the log failed or closed, a roll or truncation holds appends off, a
    /// refill runs already, or this segment's runway failed. [`Log::wants_runway`] and
    /// [`Log::extend_runway`] both ask it, so a caller looping on the one never spins on the
    /// other.
    pub(crate) fn runway_held_off(&self) -> bool {
        self.failed.is_some() || self.closed || self.exclusive || self.zeroing.is_some() || self.runway_refused
    }
}

impl<F: File> Segment<F> {
    fn file_is(&self, other: &Rc<F>) -> bool {
        Rc::ptr_eq(&self.file, other)
    }
}

/// Completes a write job; if the task running it is dropped mid-write, the log fails rather
/// than waiting forever for a write nobody will finish.
struct JobGuard<'a, F: File> {
    log_state: &'a RefCell<State<F>>,
    notify: &'a Notify,
    id: Option<u64>,
}

impl<F: File> JobGuard<'_, F> {
    fn finish(mut self, result: Result<()>) -> Result<()> {
        let id = self.id.take().expect("finished once");
        let mut st = self.log_state.borrow_mut();
        let outcome = match result {
            Ok(()) => {
                st.complete_write(id);
                Ok(())
            }
            Err(e) => {
                st.failed = Some(e.to_string());
                Err(e)
            }
        };
        drop(st);
        self.notify.notify_all();
        outcome
    }
}

impl<F: File> Drop for JobGuard<'_, F> {
    fn drop(&mut self) {
        if self.id.is_some() {
            if let Ok(mut st) = self.log_state.try_borrow_mut() {
                st.failed = Some("a write was abandoned before it completed".into());
            }
            self.notify.notify_all();
        }
    }
}

pub(crate) struct ExclusiveGuard<'a, F: File> {
    state: &'a RefCell<State<F>>,
    notify: &'a Notify,
}

impl<F: File> Drop for ExclusiveGuard<'_, F> {
    fn drop(&mut self) {
        self.state.borrow_mut().exclusive = false;
        self.notify.notify_all();
    }
}

pub(crate) struct MaintenanceGuard<'a, F: File> {
    state: &'a RefCell<State<F>>,
    notify: &'a Notify,
}

impl<F: File> Drop for MaintenanceGuard<'_, F> {
    fn drop(&mut self) {
        self.state.borrow_mut().maintenance = false;
        self.notify.notify_all();
    }
}

/// What [`crate::open::open_segments`] hands to [`Log::open`].
pub(crate) struct Opened<F> {
    pub(crate) segments: BTreeMap<u64, Segment<F>>,
    pub(crate) tail: Tail,
    pub(crate) active_size: u64,
    pub(crate) log_start: u64,
    pub(crate) log_end: u64,
    pub(crate) truncate_intent: Option<u64>,
    pub(crate) producers: ProducerStates,
    pub(crate) report: RecoveryReport,
}

/// Smallest step by which an active segment's reserved space grows.
const MIN_PREALLOCATE_STEP: u64 = 64 << 10;

/// How far to reserve disk space for an active segment that must hold `end` bytes: ahead by as
/// much as the segment already holds (so a busy partition reaches `step_max` steps after a few
/// reservations), at least 64 KiB and at most `step_max`, and never past the segment's size
/// limit (steps below 64 KiB only when `step_max` is). Reserving `step_max` up front would cost every partition that much disk however little
/// it holds: 10,000 partitions with one record each would reserve 320 GiB at the 32 MiB default.
fn preallocation_target(end: u64, step_max: u64, segment_bytes: u64) -> u64 {
    let end = align_up(end);
    let step = end.clamp(MIN_PREALLOCATE_STEP.min(step_max), step_max);
    (end + step).min(align_up(segment_bytes).max(end))
}

#[cfg(test)]
mod preallocation_tests {
    use super::preallocation_target;

    #[test]
    fn grows_with_the_segment_up_to_the_step_and_the_segment_limit() {
        const MIB: u64 = 1 << 20;
        // One small record reserves 64 KiB more, not the whole 32 MiB step.
        assert_eq!(preallocation_target(100, 32 * MIB, 1 << 30), 4096 + (64 << 10));
        // Ahead by what the segment holds...
        assert_eq!(preallocation_target(3 * MIB, 32 * MIB, 1 << 30), 6 * MIB);
        // ...at most the configured step...
        assert_eq!(preallocation_target(100 * MIB, 32 * MIB, 1 << 30), 132 * MIB);
        // ...and never past the segment's size limit.
        assert_eq!(preallocation_target(1000 * MIB, 32 * MIB, 1 << 30), 1 << 30);
        // A step configured below 64 KiB is honoured.
        assert_eq!(preallocation_target(100, 4096, 1 << 30), 8192);
        // A batch larger than the segment limit still fits.
        assert_eq!(preallocation_target(3 * MIB, 32 * MIB, MIB), 3 * MIB);
    }
}
