//! Straightforward behaviour of the log on the simulated disk.

mod common;

use common::*;
use keel_storage::{
    io::sim::{SimClock, SimDisk},
    FsyncPolicy, LogConfig, StorageError,
};

#[test]
fn append_assigns_offsets_and_reads_back_byte_identical() {
    let disk = SimDisk::new(1);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let mut expected = Vec::new();
    for i in 0..50u64 {
        let b = batch(i, 3, 5, 100, 1_000 + i as i64);
        let info = block_on(log.append(&b, 7)).unwrap();
        assert_eq!(info.base_offset, i * 3);
        assert_eq!(info.last_offset, i * 3 + 2);
        let mut stored = b.clone();
        keel_storage::batch::set_base_offset(&mut stored, (i * 3) as i64);
        keel_storage::batch::set_partition_leader_epoch(&mut stored, 7);
        expected.push(stored);
    }
    let all = read_all(&log);
    assert_eq!(all.len(), 50);
    for (got, want) in all.iter().zip(&expected) {
        assert_eq!(&got.2, want);
    }
    assert!(log.segment_bases().len() > 1, "16 KiB segments must have rolled");
    // Reading from the middle of a batch returns that batch whole.
    let r = block_on(log.read(31, 1)).unwrap();
    let batches = split(&r.bytes);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, 30);
    assert_eq!(r.next_offset, 33);
    // Reopen cleanly and read the same bytes.
    block_on(log.close()).unwrap();
    let (log, report) = block_on(keel_storage::Log::open(disk.dir("p0"), clock.clone(), small_config())).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(report.scanned_segments, 0, "{report:?}");
    let again = read_all(&log);
    assert_eq!(again, all);
    let info = block_on(log.append(&batch(99, 1, 1, 10, 5_000), 8)).unwrap();
    assert_eq!(info.base_offset, 150);
}

#[test]
fn crash_keeps_every_acknowledged_append_with_fsync_always() {
    for seed in 0..30 {
        let disk = SimDisk::new(seed);
        let clock = SimClock::new(0);
        let log = open(&disk, &clock, small_config());
        let mut acked = Vec::new();
        for i in 0..40u64 {
            block_on(log.append(&batch(i, 2, 3, 300, i as i64), 1)).unwrap();
            acked.push(i);
        }
        let before = read_all(&log);
        drop(log);
        disk.crash();
        let (log, report) = block_on(keel_storage::Log::open(disk.dir("p0"), clock.clone(), small_config())).unwrap();
        assert!(!report.clean_shutdown);
        assert_eq!(read_all(&log), before, "seed {seed}: {report:?}");
        assert_eq!(log.offsets().log_end, 80);
    }
}

#[test]
fn rejects_bad_batches_and_appends_nothing() {
    let disk = SimDisk::new(2);
    let clock = SimClock::new(0);
    let log = open(&disk, &clock, small_config());
    let mut b = batch(1, 2, 2, 10, 0);
    b[30] ^= 0xff;
    assert!(matches!(block_on(log.append(&b, 0)), Err(StorageError::InvalidBatch(_))));
    let mut b = batch(1, 2, 2, 10, 0);
    b[16] = 1;
    assert!(matches!(block_on(log.append(&b, 0)), Err(StorageError::InvalidBatch(_))));
    let b = batch(1, 2, 2, 10, 0);
    assert!(matches!(block_on(log.append(&b[..b.len() - 1], 0)), Err(StorageError::InvalidBatch(_))));
    let big = batch(1, 1, 1, 2 << 20, 0);
    assert!(matches!(block_on(log.append(&big, 0)), Err(StorageError::BatchTooLarge { .. })));
    assert_eq!(log.offsets().log_end, 0);
    assert!(matches!(block_on(log.read(1, 100)), Err(StorageError::OffsetOutOfRange { .. })));
}

#[test]
fn fsync_never_and_interval_sync_less() {
    for (policy, max_syncs) in
        [(FsyncPolicy::Never, 10u64), (FsyncPolicy::Interval { ms: None, bytes: Some(64 << 10) }, 40)]
    {
        let disk = SimDisk::new(3);
        let clock = SimClock::new(0);
        let log = open(&disk, &clock, LogConfig { fsync: policy, ..small_config() });
        let before = disk.stats().syncs;
        for i in 0..200u64 {
            block_on(log.append(&batch(i, 1, 1, 500, 0), 0)).unwrap();
        }
        let syncs = disk.stats().syncs - before;
        // Segment seals still sync (16 KiB segments: ~7 rolls, each syncing log + 2 indexes).
        assert!(syncs < max_syncs * 3, "{policy:?}: {syncs} syncs");
        assert_eq!(log.offsets().written_end, 200);
    }
}

/// `Log::interval_sync_pending`, which the broker's interval-sync task relies on to visit only
/// logs that owe a sync: true from an append until the interval's fdatasync, and false for a
/// log just opened over data (recovery's bytes count as durable), so no start-up scan is needed.
#[test]
fn an_interval_log_owes_a_sync_from_its_append_to_its_tick() {
    let disk = SimDisk::new(5);
    let clock = SimClock::new(0);
    let config = LogConfig { fsync: FsyncPolicy::Interval { ms: Some(100), bytes: None }, ..small_config() };
    let log = open(&disk, &clock, config.clone());
    assert!(!log.interval_sync_pending(), "nothing appended yet");
    block_on(log.append(&batch(0, 1, 1, 100, 0), 0)).unwrap();
    assert!(log.interval_sync_pending());
    block_on(log.tick()).unwrap();
    assert!(log.interval_sync_pending(), "the interval has not passed");
    assert_eq!(log.syncs(), 0);
    clock.advance(100);
    block_on(log.tick()).unwrap();
    assert!(!log.interval_sync_pending());
    assert_eq!(log.syncs(), 1);
    block_on(log.append(&batch(1, 1, 1, 100, 0), 0)).unwrap();
    assert!(log.interval_sync_pending());
    drop(log); // no clean close: recovery finds the unsynced batch
    let (log, _) = block_on(keel_storage::Log::open(disk.dir("p0"), clock.clone(), config)).unwrap();
    assert_eq!(log.offsets().log_end, 2);
    assert!(!log.interval_sync_pending(), "a log opens with nothing owed");
}

#[test]
fn segments_roll_by_age_and_retention_deletes_by_time_and_size() {
    let disk = SimDisk::new(4);
    let clock = SimClock::new(1_000_000);
    let config =
        LogConfig { segment_ms: Some(60_000), retention_ms: Some(600_000), retention_bytes: None, ..small_config() };
    let log = open(&disk, &clock, config.clone());
    // Ten small appends a minute apart: each lands in a new segment (age roll), far below the
    // 16 KiB size roll.
    for i in 0..10u64 {
        block_on(log.append(&batch(i, 1, 1, 10, 1_000_000 + i as i64 * 60_000), 0)).unwrap();
        clock.advance(60_000);
    }
    assert_eq!(log.segment_bases(), (0..10).collect::<Vec<u64>>(), "one segment per minute");
    // Segments whose newest record is older than 10 minutes go (segment 0's record has ts
    // 1_000_000 < now - 600_000 = 1_000_001), never the active one, oldest first, and the log
    // start follows.
    clock.advance(1);
    let out = block_on(log.enforce_retention()).unwrap();
    assert_eq!(out.deleted_segments, 1);
    assert_eq!(log.offsets().log_start, 1);
    clock.advance(5 * 60_000);
    let out = block_on(log.enforce_retention()).unwrap();
    assert_eq!(out.deleted_segments, 5);
    assert_eq!(log.offsets().log_start, 6);
    assert!(matches!(block_on(log.read(5, 100)), Err(StorageError::OffsetOutOfRange { .. })));
    assert_eq!(split(&block_on(log.read(6, 100)).unwrap().bytes)[0].0, 6);
    // Offsets are never renumbered: the next append continues at 10.
    assert_eq!(block_on(log.append(&batch(10, 1, 1, 10, 2_000_000), 0)).unwrap().base_offset, 10);

    // Size: keep deleting the oldest closed segment while the rest still holds retention_bytes.
    let per_segment = log.size_bytes() / log.segment_bases().len() as u64;
    drop(log);
    let sized = LogConfig { retention_ms: None, retention_bytes: Some(per_segment * 2), ..config };
    let (log, _) = block_on(keel_storage::Log::open(disk.dir("p0"), clock.clone(), sized)).unwrap();
    block_on(log.enforce_retention()).unwrap();
    assert!(log.size_bytes() >= per_segment * 2, "never below retention_bytes");
    assert!(log.segment_bases().len() <= 3);
    assert_eq!(log.offsets().log_start, log.segment_bases()[0]);
    // Restart: the log start is durable.
    let start = log.offsets().log_start;
    drop(log);
    disk.crash();
    let (log, _) = block_on(keel_storage::Log::open(disk.dir("p0"), clock, small_config())).unwrap();
    assert_eq!(log.offsets().log_start, start);
}

/// `read_would_hit_disk` tells reads of history (sealed segments, or the active one below the
/// tail kept in memory) from reads the tail serves; the broker gates only the former.
#[test]
fn reads_of_history_are_told_from_reads_of_the_tail() {
    let disk = SimDisk::new(3);
    let clock = SimClock::new(1_000);
    let config = LogConfig { tail_cache_bytes: 64 << 10, ..small_config() };
    let log = open(&disk, &clock, config.clone());
    for i in 0..40u64 {
        block_on(log.append(&batch(i, 1, 1, 1_000, 1_000 + i as i64), 1)).unwrap();
    }
    let bases = log.segment_bases();
    assert!(bases.len() > 1, "16 KiB segments must have rolled: {bases:?}");
    let active = *bases.last().unwrap();
    assert!(log.read_would_hit_disk(0), "a sealed segment is read from disk");
    assert!(!log.read_would_hit_disk(active), "the active segment's start is in the tail");
    assert!(!log.read_would_hit_disk(39), "the last record is in the tail");
    assert!(!log.read_would_hit_disk(40), "nothing to read at the end: no disk read");
    // After a reopen the tail holds only the partial last page: the active segment's start is
    // history now.
    block_on(log.close()).unwrap();
    let (log, _) = block_on(keel_storage::Log::open(disk.dir("p0"), clock.clone(), config)).unwrap();
    assert!(log.read_would_hit_disk(active));
    assert!(log.read_would_hit_disk(0));
}
