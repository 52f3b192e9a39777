//! Opening a log directory: find the segments, decide per [`crate::recovery::RECOVERY_TABLE`]
//! which to trust and which to scan, repair what recovery repairs, and hand the result to
//! [`crate::Log::open`].

use std::{collections::BTreeMap, rc::Rc};

use tracing::{info, warn};

use crate::{
    config::LogConfig,
    error::{Result, StorageError},
    files::{self, decode_checkpoint, read_checkpoint, read_small},
    index::{IndexFileError, SealInfo, SegmentIndex},
    io::{align_down, Clock, Dir, File},
    log::{
        index_name, log_name, time_index_name, DamagedRange, Opened, RecoveryReport, Segment, CLEAN_SHUTDOWN,
        LOG_START_CHECKPOINT, TRUNCATE_CHECKPOINT,
    },
    producers::{BatchMeta, ProducerStates, SNAPSHOT_FILE},
    recovery::{action_for, scan_segment, Action, DiskState, ScanEnd},
    tail::Tail,
};

async fn remove<D: Dir>(dir: &D, name: &str, report: &mut RecoveryReport) -> Result<()> {
    if files::remove_if_exists(dir, name).await? {
        report.deleted_files.push(name.to_string());
    }
    Ok(())
}

/// Parses `<20 digits>.log`.
fn segment_base(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

pub(crate) async fn open_segments<D: Dir, C: Clock>(dir: &D, clock: &C, config: &LogConfig) -> Result<Opened<D::File>> {
    let mut report = RecoveryReport::default();
    let names = dir.list().map_err(|e| StorageError::io("listing", dir.describe(""), e))?;

    // Leftovers of an unfinished compaction swap or checkpoint write.
    for name in names.iter().filter(|n| n.ends_with(".cleaned") || n.ends_with(".tmp")) {
        report.decisions.push((DiskState::LeftoverCompaction, name.clone()));
        debug_assert_eq!(action_for(DiskState::LeftoverCompaction), Action::Delete);
        remove(dir, name, &mut report).await?;
    }

    // A clean-shutdown marker is honoured once: removed before anything can be written.
    let marker = read_small(dir, CLEAN_SHUTDOWN).await?;
    let clean = marker.as_deref().is_some_and(|bytes| decode_checkpoint(bytes).is_some());
    let log_start_checkpoint = read_checkpoint(dir, LOG_START_CHECKPOINT).await?;
    let truncate_intent = read_checkpoint(dir, TRUNCATE_CHECKPOINT).await?;
    report.clean_shutdown = clean;

    let mut bases: Vec<u64> = names.iter().filter_map(|n| segment_base(n)).collect();
    bases.sort_unstable();

    // Segments wholly below the log start were being deleted; finish the job.
    let log_start = log_start_checkpoint.unwrap_or(bases.first().copied().unwrap_or(0));
    let now = clock.now_ms();
    let mut segments = BTreeMap::new();
    let mut prev_next: Option<u64> = None;
    // The producers' batches of the segments recovery scanned anyway (see `load_producers`).
    let mut scanned_producers = BTreeMap::new();
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let name = log_name(base);
        let file = dir.open(&name, false).await.map_err(|e| StorageError::io("opening", dir.describe(&name), e))?;
        let len = file.len().await.map_err(|e| StorageError::io("sizing", dir.describe(&name), e))?;
        if let Some(prev) = prev_next {
            if base < prev {
                return Err(StorageError::BadLayout(format!(
                    "segment {name} starts at offset {base}, inside the previous segment (which ends at {prev})"
                )));
            }
        }
        let (segment, producer_batches) =
            open_segment(dir, config, file, base, len, is_last, clean, &mut report).await?;
        if let Some(batches) = producer_batches {
            scanned_producers.insert(base, batches);
        }
        prev_next = Some(segment.next_offset);
        segments.insert(base, Segment { created_ms: now, ..segment });
    }

    // Damage reaching the end of a sealed segment covers offsets up to the next segment's base.
    let bases_in_order: Vec<u64> = segments.keys().copied().collect();
    for pair in bases_in_order.windows(2) {
        let name = log_name(pair[0]);
        for d in report.damaged.iter_mut().filter(|d| d.segment == name && d.offsets.end == u64::MAX) {
            d.offsets.end = pair[1];
        }
        if report.damaged.iter().any(|d| d.segment == name && d.offsets.end == pair[1]) {
            segments.get_mut(&pair[0]).expect("segment").next_offset = pair[1];
        }
    }

    // Delete segments wholly below the log start: a segment covers offsets up to the next
    // segment's base (compaction may have emptied its end). The last one goes too if it ends
    // below the start (a log start is only persisted once the data below it is durable, so this
    // means the disk lost synced data; offsets below the log start are never reused either way).
    let doomed: Vec<u64> = {
        let bases: Vec<u64> = segments.keys().copied().collect();
        let last = segments.values().next_back().map(|s| (s.base, s.next_offset));
        let mut doomed: Vec<u64> = bases.windows(2).filter(|w| w[1] <= log_start).map(|w| w[0]).collect();
        if let Some((base, next)) = last {
            if next < log_start {
                doomed.push(base);
            }
        }
        doomed
    };
    for base in doomed {
        report.decisions.push((DiskState::BelowLogStart, log_name(base)));
        if let Some(segment) = segments.remove(&base) {
            crate::io::close_shared(segment.file)
                .await
                .map_err(|e| StorageError::io("closing", dir.describe(""), e))?;
        }
        for name in [log_name(base), index_name(base), time_index_name(base)] {
            remove(dir, &name, &mut report).await?;
        }
    }

    if segments.is_empty() {
        let name = log_name(log_start);
        let file = dir.open(&name, true).await.map_err(|e| StorageError::io("creating", dir.describe(&name), e))?;
        segments.insert(
            log_start,
            Segment {
                base: log_start,
                file: Rc::new(file),
                size: 0,
                next_offset: log_start,
                last_batch_crc: 0,
                index: SegmentIndex::new(),
                created_ms: now,
            },
        );
    }

    let active = segments.values().next_back().expect("at least one segment");
    let active_size = active.size;
    let log_end = active.next_offset;
    let prefix_start = align_down(active_size);
    let prefix = active
        .file
        .read_at(prefix_start, (active_size - prefix_start) as usize)
        .await
        .map_err(|e| StorageError::io("reading", dir.describe(&log_name(active.base)), e))?;
    if prefix.len() as u64 != active_size - prefix_start {
        return Err(StorageError::BadLayout(format!(
            "{} is shorter than its recorded size",
            dir.describe(&log_name(active.base))
        )));
    }
    let tail = Tail::new(active_size, &prefix);
    let spans: Vec<SegmentSpan<D::File>> = segments
        .values()
        .map(|s| SegmentSpan { base: s.base, file: s.file.clone(), size: s.size, next_offset: s.next_offset })
        .collect();
    let producers = load_producers(dir, config, &spans, scanned_producers, log_end, &mut report).await?;

    report.segments = segments.len();
    if marker.is_some() {
        remove(dir, CLEAN_SHUTDOWN, &mut report).await?;
    }
    dir.sync().await.map_err(|e| StorageError::io("syncing directory", dir.describe(""), e))?;
    if log_start_checkpoint.is_none() {
        // Record the start so a later deletion of the first segment cannot lose it.
        files::write_checkpoint(dir, LOG_START_CHECKPOINT, log_start).await?;
    }
    Ok(Opened { segments, tail, active_size, log_start, log_end, truncate_intent, producers, report })
}

/// What [`load_producers`] needs of a segment.
pub(crate) struct SegmentSpan<F> {
    pub(crate) base: u64,
    pub(crate) file: Rc<F>,
    pub(crate) size: u64,
    pub(crate) next_offset: u64,
}

/// The idempotent producers' state as it was after the last batch the log now holds: the
/// snapshot (if there is a usable one) plus the batches after the offset it covers. Segments the
/// recovery scan read are not read again (`scanned`); any other segment with batches past the
/// snapshot is scanned here (only without a snapshot, or when the last one failed to write).
pub(crate) async fn load_producers<D: Dir>(
    dir: &D,
    config: &LogConfig,
    segments: &[SegmentSpan<D::File>],
    mut scanned: BTreeMap<u64, Vec<(i64, i16, BatchMeta)>>,
    log_end: u64,
    report: &mut RecoveryReport,
) -> Result<ProducerStates> {
    let snapshot = read_small(dir, SNAPSHOT_FILE).await?;
    let (covers, mut producers) = match snapshot.as_deref().map(|b| ProducerStates::decode(b, config.max_producers)) {
        None => (0, ProducerStates::new(config.max_producers)),
        Some(Some((covers, state))) if covers <= log_end => {
            report.producer_snapshot = Some(covers);
            (covers, state)
        }
        Some(Some((covers, _))) => {
            // The log lost offsets the snapshot covers: it may claim batches no longer there.
            warn!(dir = %dir.describe(SNAPSHOT_FILE), covers, log_end, "producer snapshot covers offsets past the log end: rebuilding from the log");
            (0, ProducerStates::new(config.max_producers))
        }
        Some(None) => {
            warn!(dir = %dir.describe(SNAPSHOT_FILE), "producer snapshot damaged: rebuilding from the log");
            (0, ProducerStates::new(config.max_producers))
        }
    };
    let last_base = segments.last().map(|s| s.base);
    for segment in segments {
        let base = segment.base;
        if segment.next_offset <= covers || segment.size == 0 {
            continue;
        }
        let batches = match scanned.remove(&base) {
            Some(batches) => batches,
            None => {
                let sealed = Some(base) != last_base;
                let scan = scan_segment(&*segment.file, base, segment.size, sealed, config.index_interval_bytes)
                    .await
                    .map_err(|e| StorageError::io("scanning", dir.describe(&log_name(base)), e))?;
                report.producer_scanned_segments += 1;
                scan.producer_batches
            }
        };
        let replay = batches.into_iter().filter(|(_, _, m)| m.base_offset >= covers && m.last_offset < log_end);
        for (producer_id, epoch, meta) in replay {
            producers.record(producer_id, epoch, meta);
            report.producer_batches_replayed += 1;
        }
    }
    Ok(producers)
}

/// Opens one segment: trusts its indexes when the table says so, otherwise scans and repairs.
#[allow(clippy::too_many_arguments)]
async fn open_segment<D: Dir>(
    dir: &D,
    config: &LogConfig,
    file: D::File,
    base: u64,
    len: u64,
    is_last: bool,
    clean: bool,
    report: &mut RecoveryReport,
) -> Result<(Segment<D::File>, Option<Vec<(i64, i16, BatchMeta)>>)> {
    let name = log_name(base);
    let offsets = read_small(dir, &index_name(base)).await?;
    let times = read_small(dir, &time_index_name(base)).await?;
    let loaded = match (&offsets, &times) {
        (Some(o), Some(t)) => Some(SegmentIndex::decode(o, t)),
        _ => None,
    };
    let index_state = match &loaded {
        None => DiskState::IndexMissing,
        Some(Err(IndexFileError::PastEnd { .. })) => DiskState::IndexPastEnd,
        Some(Err(e)) => {
            warn!(segment = %name, error = %e, "index damaged");
            DiskState::IndexDamaged
        }
        Some(Ok((seal, _))) if seal.log_size != len => DiskState::IndexPastEnd,
        Some(Ok(_)) if is_last && !clean => DiskState::UncleanTail,
        Some(Ok(_)) if clean && is_last => DiskState::CleanShutdown,
        Some(Ok(_)) => DiskState::SealedIndexValid,
    };
    if action_for(index_state) == Action::Trust {
        let (seal, index) = loaded.expect("trusted index was loaded").expect("trusted index is valid");
        report.decisions.push((index_state, name));
        return Ok((segment_from(file, base, seal, index), None));
    }
    // Every state that reaches here calls for a scan (the table's Trust rows returned above).
    debug_assert_eq!(action_for(index_state), Action::ScanAndRebuildIndex);
    report.decisions.push((index_state, name.clone()));
    let scan = scan_segment(&file, base, len, !is_last, config.index_interval_bytes)
        .await
        .map_err(|e| StorageError::io("scanning", dir.describe(&name), e))?;
    report.scanned_segments += 1;
    report.scanned_bytes += len;
    let end_state = match (&scan.end, is_last) {
        (ScanEnd::Eof, _) => None,
        (ScanEnd::ZeroTail, _) => Some(DiskState::ZeroFilledTail),
        (ScanEnd::Torn, true) => Some(DiskState::TornTail),
        (ScanEnd::Torn, false) => Some(DiskState::TornSealed),
        (ScanEnd::Bad { .. }, true) => Some(DiskState::BadBatchInTail),
        (ScanEnd::Bad { .. }, false) => Some(DiskState::BadBatchInSealed),
        (ScanEnd::Stale { .. }, _) => Some(DiskState::OffsetsNotMonotonic),
    };
    for d in &scan.damage {
        report.decisions.push((DiskState::BadBatchInSealed, name.clone()));
        let range = DamagedRange { segment: name.clone(), offsets: d.offsets.clone(), reason: d.reason.clone() };
        warn!(segment = %name, offsets = ?range.offsets, reason = %range.reason, "damaged range in a sealed segment: refusing to serve it");
        report.damaged.push(range);
    }
    if let Some(state) = end_state {
        report.decisions.push((state, name.clone()));
        // Zeros hold no data and are cut anywhere. Bad bytes are cut only at the tail of the
        // last segment; in a sealed segment the scan recorded them as a refused range.
        let action = if is_last || state == DiskState::ZeroFilledTail {
            action_for(state)
        } else {
            Action::ReportAndRefuseRange
        };
        if action == Action::TruncateAtFirstBadByte {
            let cut = len - scan.valid_end;
            if state != DiskState::ZeroFilledTail || !is_last {
                warn!(segment = %name, at = scan.valid_end, bytes = cut, end = ?scan.end, "cutting the segment at the first bad byte");
                report.truncated_bytes += cut;
            }
            report.discarded_valid_bytes += scan.valid_bytes_after_end;
            file.set_len(scan.valid_end).await.map_err(|e| StorageError::io("truncating", dir.describe(&name), e))?;
            file.sync_data().await.map_err(|e| StorageError::io("syncing", dir.describe(&name), e))?;
        }
    } else if is_last {
        // What the scan read is what the log now acknowledges: make sure it is durable.
        file.sync_data().await.map_err(|e| StorageError::io("syncing", dir.describe(&name), e))?;
    }
    let (size, next_offset) = (scan.valid_end, scan.next_offset);
    let seal = SealInfo {
        log_size: size,
        next_offset,
        max_timestamp: scan.index.max_timestamp(),
        last_batch_crc: scan.last_batch_crc,
    };
    if !is_last && scan.damage.is_empty() {
        // Persist the rebuilt index so the next open trusts this sealed segment.
        let (o, t) = scan.index.encode(&seal);
        files::write_whole(dir, &index_name(base), &o).await?;
        files::write_whole(dir, &time_index_name(base), &t).await?;
        report.rebuilt_indexes += 1;
        info!(segment = %name, "rebuilt index");
    }
    Ok((segment_from(file, base, seal, scan.index), Some(scan.producer_batches)))
}

fn segment_from<F>(file: F, base: u64, seal: SealInfo, index: SegmentIndex) -> Segment<F> {
    Segment {
        base,
        file: Rc::new(file),
        size: seal.log_size,
        next_offset: seal.next_offset,
        last_batch_crc: seal.last_batch_crc,
        index,
        created_ms: 0,
    }
}
