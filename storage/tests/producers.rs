//! Idempotent producers through the log: duplicates answered with the original offsets, fenced
//! and out-of-order batches refused, and the producer state surviving a clean close, a power
//! loss (snapshot + replay) and a torn tail (the torn batch is not remembered).

mod common;

use std::{future::Future, pin::Pin};

use common::*;
use keel_storage::{
    batch::BatchBuilder,
    io::{
        sim::{SimClock, SimDisk},
        Clock,
    },
    AppendInfo, AppendWait, FsyncPolicy, LogConfig, StorageError,
};

const TERM: u32 = 2;
const PID: i64 = 1_000;
const SNAPSHOT: &str = "producers.snapshot";

/// A batch of producer `pid` (epoch `epoch`) with `n` records starting at sequence `seq`.
fn pbatch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new().producer(pid, epoch, seq);
    for i in 0..n {
        let value = format!("p{pid}-e{epoch}-s{seq}-{i}-{}", ".".repeat(600));
        b.push(ts, Some(b"k"), Some(value.as_bytes()), &[]);
    }
    b.build()
}

fn append(log: &SimLog, bytes: &[u8]) -> Result<AppendInfo, StorageError> {
    block_on(log.append(bytes, TERM))
}

/// Appends batches of producer PID (epoch 0) with `n` records each, starting at sequence `seq`;
/// returns (bytes, info) of each and the next sequence.
fn append_run(log: &SimLog, seq: i32, count: usize, n: usize) -> (Vec<(Vec<u8>, AppendInfo)>, i32) {
    let mut seq = seq;
    let mut out = Vec::new();
    for _ in 0..count {
        let b = pbatch(PID, 0, seq, n, 1_000 + seq as i64);
        let info = append(log, &b).expect("in-order append");
        assert!(!info.duplicate);
        out.push((b, info));
        seq += n as i32;
    }
    (out, seq)
}

fn assert_duplicate(log: &SimLog, bytes: &[u8], original: &AppendInfo) {
    let before = log.offsets().log_end;
    let size = log.size_bytes();
    let got = append(log, bytes).expect("a duplicate is answered, not refused");
    assert!(got.duplicate, "recognised as a duplicate");
    assert_eq!((got.base_offset, got.last_offset), (original.base_offset, original.last_offset));
    assert_eq!(got.max_timestamp, original.max_timestamp);
    assert_eq!(log.offsets().log_end, before, "a duplicate appends nothing");
    assert_eq!(log.size_bytes(), size, "a duplicate appends nothing");
}

#[test]
fn duplicates_get_the_original_offsets_and_append_nothing() {
    let disk = SimDisk::new(1);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    // Other traffic in between: plain batches and another producer.
    append(&log, &tagged_batch(0)).unwrap();
    let (first, seq) = append_run(&log, 0, 3, 2);
    append(&log, &tagged_batch(1)).unwrap();
    let other = append(&log, &pbatch(7, 0, 40, 1, 5)).unwrap();
    let (second, _) = append_run(&log, seq, 3, 1);
    let all: Vec<_> = first.iter().chain(&second).collect();
    let served = read_all(&log);
    // The last five batches of PID are each recognised; the oldest (6th from the end) is not.
    for (bytes, info) in &all[1..] {
        assert_duplicate(&log, bytes, info);
    }
    match append(&log, &all[0].0) {
        Err(StorageError::OutOfOrderSequence { producer_id: PID, expected: 9, got: 0 }) => {}
        other => panic!("the sixth-oldest batch is too old to be a duplicate: {other:?}"),
    }
    assert_duplicate(&log, &pbatch(7, 0, 40, 1, 5), &other);
    assert_eq!(read_all(&log), served, "the log is unchanged");
    assert_eq!(log.producer_state(PID), Some((0, 8)));
    assert_eq!(log.producer_state(7), Some((0, 40)));
    assert_eq!(log.producer_state(8), None);
    // Plain batches are never deduplicated.
    let again = append(&log, &tagged_batch(0)).unwrap();
    assert!(!again.duplicate);
}

#[test]
fn fenced_and_out_of_order_batches_are_refused_and_append_nothing() {
    let disk = SimDisk::new(2);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    append(&log, &pbatch(PID, 3, 0, 2, 1)).unwrap();
    let end = log.offsets().log_end;
    let size = log.size_bytes();
    let refused = [
        (pbatch(PID, 3, 3, 1, 1), "gap"),
        (pbatch(PID, 3, 1, 1, 1), "overlap"),
        (pbatch(PID, 2, 2, 1, 1), "old epoch"),
        (pbatch(PID, 4, 5, 1, 1), "new epoch not from 0"),
    ];
    for (bytes, why) in &refused {
        let err = append(&log, bytes).expect_err(why);
        match (why, &err) {
            (&"old epoch", StorageError::ProducerFenced { producer_id: PID, epoch: 2, current: 3 }) => {}
            (&"gap" | &"overlap", StorageError::OutOfOrderSequence { producer_id: PID, expected: 2, .. }) => {}
            (&"new epoch not from 0", StorageError::OutOfOrderSequence { expected: 0, got: 5, .. }) => {}
            _ => panic!("{why}: unexpected {err:?}"),
        }
        assert_eq!(log.offsets().log_end, end, "{why}: nothing appended");
        assert_eq!(log.size_bytes(), size, "{why}: nothing appended");
    }
    assert!(err_text(StorageError::ProducerFenced { producer_id: 1, epoch: 1, current: 2 }).contains("epoch"));
    // The log still takes the right batches: the next sequence, and a new epoch from 0.
    append(&log, &pbatch(PID, 3, 2, 1, 1)).unwrap();
    append(&log, &pbatch(PID, 4, 0, 1, 1)).unwrap();
    assert_eq!(log.producer_state(PID), Some((4, 0)));
    assert!(matches!(append(&log, &pbatch(PID, 3, 3, 1, 1)), Err(StorageError::ProducerFenced { .. })));
    // An unknown producer starts anywhere (its earlier batches may be gone to retention).
    append(&log, &pbatch(55, 1, 12_345, 1, 1)).unwrap();
    assert_eq!(log.producer_state(55), Some((1, 12_345)));
}

fn err_text(e: StorageError) -> String {
    e.to_string()
}

/// An append in flight: its answer and the log's `flushed_end` when it completed.
type Waiting<'a> = Pin<Box<dyn Future<Output = (AppendInfo, u64)> + 'a>>;

/// A duplicate of a batch that is not durable yet completes only once the original is.
#[test]
fn a_duplicate_of_an_unsynced_batch_waits_until_it_is_durable() {
    let disk = SimDisk::new(3);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, LogConfig { fsync: FsyncPolicy::Always, ..small_config() });
    let bytes = pbatch(PID, 0, 0, 3, 1);
    let original = async {
        let info = log.append_until(&bytes, TERM, AppendWait::Written).await.unwrap();
        (info, log.offsets().flushed_end)
    };
    let retry = async {
        let info = log.append(&bytes, TERM).await.unwrap();
        (info, log.offsets().flushed_end)
    };
    let futures: Vec<Waiting<'_>> = vec![Box::pin(original), Box::pin(retry)];
    let done = join_all(futures);
    let (orig, _) = done[0];
    let (dup, flushed_when_done) = done[1];
    assert!(!orig.duplicate && dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (orig.base_offset, orig.last_offset));
    assert!(flushed_when_done > dup.last_offset, "the duplicate's acks=all answer waited for the original's fdatasync");
    assert_eq!(log.offsets().log_end, 3);
}

#[test]
fn producer_state_survives_a_clean_close() {
    let disk = SimDisk::new(4);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let (run, seq) = append_run(&log, 0, 30, 2); // spans several segments (rolls write snapshots)
    assert!(log.segment_bases().len() > 2);
    let end = log.offsets().log_end;
    block_on(log.close()).unwrap();
    assert!(disk.file_bytes(DIR, SNAPSHOT).is_some(), "close writes the snapshot");
    let (log, report) = reopen(&disk, &clock, small_config());
    assert_eq!(report.producer_snapshot, Some(end), "the close snapshot covers the whole log");
    assert_eq!((report.producer_batches_replayed, report.producer_scanned_segments), (0, 0));
    assert_eq!(log.producer_state(PID), Some((0, seq - 1)));
    for (bytes, info) in &run[run.len() - 5..] {
        assert_duplicate(&log, bytes, info);
    }
    assert!(matches!(append(&log, &pbatch(PID, 0, seq + 1, 1, 1)), Err(StorageError::OutOfOrderSequence { .. })));
    append(&log, &pbatch(PID, 0, seq, 1, 1)).unwrap();
}

/// Power loss after a roll: the roll's snapshot plus the recovery scan of the last segment give
/// back the state; acknowledged batches before and after the roll are still duplicates.
#[test]
fn producer_state_survives_a_power_loss() {
    let disk = SimDisk::new(5);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let (before, seq) = append_run(&log, 0, 3, 1);
    block_on(log.roll()).unwrap();
    let roll_base = log.active_segment_base();
    let (after, seq) = append_run(&log, seq, 3, 1);
    // A second producer only in the snapshot, a third only after it.
    let p2 = append(&log, &pbatch(2, 5, 9, 1, 1)).unwrap();
    drop(log);
    disk.crash();
    let (log, report) = reopen(&disk, &clock, small_config());
    assert!(!report.clean_shutdown);
    assert_eq!(report.producer_snapshot, Some(roll_base));
    assert_eq!(report.producer_batches_replayed, 4, "the batches after the roll, from the recovery scan");
    assert_eq!(report.producer_scanned_segments, 0, "no segment read twice");
    assert_eq!(log.producer_state(PID), Some((0, seq - 1)));
    assert_eq!(log.producer_state(2), Some((5, 9)));
    for (bytes, info) in before.iter().chain(&after).skip(1) {
        assert_duplicate(&log, bytes, info);
    }
    assert_duplicate(&log, &pbatch(2, 5, 9, 1, 1), &p2);
    append(&log, &pbatch(PID, 0, seq, 1, 1)).unwrap();
}

/// Without a snapshot (first start of an older log, or a damaged one) the whole log is replayed.
#[test]
fn without_a_usable_snapshot_the_whole_log_is_replayed() {
    for damage in [false, true] {
        let disk = SimDisk::new(6);
        let clock = SimClock::new(1_000);
        let log = open(&disk, &clock, small_config());
        let (run, seq) = append_run(&log, 0, 30, 2);
        let segments = log.segment_bases().len();
        block_on(log.close()).unwrap();
        if damage {
            disk.write_raw(DIR, SNAPSHOT, 9, &[0xff]);
        } else {
            disk.remove_raw(DIR, SNAPSHOT);
        }
        let (log, report) = reopen(&disk, &clock, small_config());
        assert_eq!(report.producer_snapshot, None);
        assert_eq!(report.producer_batches_replayed, 30);
        assert_eq!(report.producer_scanned_segments, segments, "clean open: every segment read for the producers");
        assert_eq!(log.producer_state(PID), Some((0, seq - 1)));
        for (bytes, info) in &run[run.len() - 5..] {
            assert_duplicate(&log, bytes, info);
        }
    }
}

/// A batch that recovery cuts away (torn tail) is not remembered: its retry is appended again, at
/// the same offsets.
#[test]
fn a_batch_torn_away_by_recovery_is_forgotten() {
    let disk = SimDisk::new(7);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let (run, seq) = append_run(&log, 0, 4, 1);
    block_on(log.roll()).unwrap();
    let (tail, seq) = append_run(&log, seq, 2, 3);
    let base = log.active_segment_base();
    drop(log);
    disk.crash();
    // Tear the last batch: cut the file 10 bytes before its end (writes are page-padded).
    let name = log_file(base);
    let batches = batches_in(&disk.file_bytes(DIR, &name).unwrap());
    assert_eq!(batches.len(), 2);
    let (pos, _, _, total) = batches[1];
    disk.set_len_raw(DIR, &name, (pos + total - 10) as u64);
    let (log, report) = reopen(&disk, &clock, small_config());
    assert!(report.truncated_bytes > 0);
    let (torn_bytes, torn_info) = &tail[1];
    assert_eq!(log.offsets().log_end, torn_info.base_offset);
    assert_eq!(log.producer_state(PID), Some((0, seq - 4)), "the torn batch is not remembered");
    assert_duplicate(&log, &tail[0].0, &tail[0].1);
    assert_duplicate(&log, &run[3].0, &run[3].1);
    let retried = append(&log, torn_bytes).expect("the retry of the torn batch appends");
    assert!(!retried.duplicate);
    assert_eq!((retried.base_offset, retried.last_offset), (torn_info.base_offset, torn_info.last_offset));
    assert_eq!(log.producer_state(PID), Some((0, seq - 1)));
}

/// A suffix truncation forgets the producers' batches it removes, also across a reopen (the
/// snapshot, which covered them, is removed).
#[test]
fn truncation_forgets_removed_batches() {
    let disk = SimDisk::new(8);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, small_config());
    let (run, _) = append_run(&log, 0, 20, 2);
    block_on(log.roll()).unwrap();
    assert!(disk.file_bytes(DIR, SNAPSHOT).is_some());
    // Cut inside the sealed segments: the last 8 batches go.
    let cut = run[12].1.base_offset;
    block_on(log.truncate_suffix(cut)).unwrap();
    assert_eq!(log.producer_state(PID), Some((0, 23)));
    let check = |log: &SimLog| {
        assert_duplicate(log, &run[11].0, &run[11].1);
        assert!(matches!(append(log, &run[13].0), Err(StorageError::OutOfOrderSequence { expected: 24, .. })));
    };
    check(&log);
    drop(log);
    disk.crash();
    let (log, _) = reopen(&disk, &clock, small_config());
    assert_eq!(log.producer_state(PID), Some((0, 23)));
    check(&log);
    let again = append(&log, &run[12].0).expect("the truncated batch's retry appends");
    assert_eq!(again.base_offset, cut);
}

/// At most `max_producers` are kept; producers idle for `producer_id_expiration_ms` are forgotten
/// when the snapshot is written.
#[test]
fn producers_are_bounded_and_expire() {
    let disk = SimDisk::new(9);
    let clock = SimClock::new(1_000_000);
    let config = LogConfig { max_producers: 3, producer_id_expiration_ms: 60_000, ..small_config() };
    let log = open(&disk, &clock, config.clone());
    for pid in 0..4 {
        append(&log, &pbatch(pid, 0, 0, 1, 1_000_000 + pid)).unwrap();
    }
    assert_eq!(log.producer_count(), 3);
    assert_eq!(log.producer_state(0), None, "the producer with the oldest batch is forgotten");
    clock.advance(30_000);
    append(&log, &pbatch(1, 0, 1, 1, clock.now_ms())).unwrap();
    clock.advance(40_000);
    block_on(log.roll()).unwrap();
    assert_eq!(log.producer_count(), 1, "producers 2 and 3 idle for 70 s expired");
    assert_eq!(log.producer_state(1), Some((0, 1)));
    drop(log);
    disk.crash();
    let (log, _) = reopen(&disk, &clock, config);
    assert_eq!(log.producer_count(), 1, "the snapshot holds what the roll kept");
}
