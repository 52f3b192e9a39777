//! The zeroed runway under `fsync=always` (`keel_storage::runway`), on the simulated disk:
//! zeros land only past the data, appends overwrite them and never lose data to a zero write in
//! flight, sealing trims them, a roll waits for them, recovery cuts them after a power loss
//! without losing anything acknowledged, and a failing disk is handled as everywhere else.

mod common;

use common::{
    turns::{Op, TurnsDir},
    *,
};
use keel_storage::{
    io::{
        sim::{FaultKind, SimClock, SimDisk},
        Dir,
    },
    recovery::DiskState,
    FsyncPolicy, Log, LogConfig, StorageError,
};

const TERM: u32 = 4;
const RUNWAY: u64 = 64 << 10;
const ENOSPC: i32 = 28;
const EIO: i32 = 5;

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 1 << 20,
        runway_bytes: RUNWAY,
        preallocate_bytes: 8192,
        write_bytes: 8192,
        tail_cache_bytes: 8192,
        ..LogConfig::default()
    }
}

/// An operation takes one executor turn, a write one more per 4 KiB, and a write of zeros (the
/// runway's) 200: appends' writes complete while a zero write is in flight, as they can on a real
/// disk.
fn timed(op: Op<'_>) -> usize {
    match op {
        Op::Write(bytes) if bytes.iter().all(|&b| b == 0) => 200,
        Op::Write(bytes) => 1 + bytes.len() / 4096,
        Op::Sync | Op::SetLen | Op::Allocate => 1,
    }
}

type TimedLog = Log<TurnsDir, SimClock>;

/// An append's tag and result.
type TaggedAppend = (u64, keel_storage::Result<keel_storage::AppendInfo>);

/// One of several futures a test runs side by side ([`join_all`]).
type Task<'a, T = ()> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

fn open_timed(disk: &SimDisk, clock: &SimClock, config: LogConfig) -> TimedLog {
    block_on(Log::open(TurnsDir::new(disk.dir(DIR), timed), clock.clone(), config)).expect("open").0
}

/// A new simulated disk (seeded), its clock, and a log with [`config`] on it.
fn fresh(seed: u64) -> (SimDisk, SimClock, SimLog) {
    let disk = SimDisk::new(seed);
    let clock = SimClock::new(1_000);
    let log = open(&disk, &clock, config());
    (disk, clock, log)
}

/// Appends tags one after another (each must succeed) until the log holds at least `bytes`.
fn append_until<D: Dir>(log: &Log<D, SimClock>, first_tag: u64, bytes: u64) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut tag = first_tag;
    while log.size_bytes() < bytes {
        let b = tagged_batch(tag);
        let info = block_on(log.append(&b, TERM)).unwrap_or_else(|e| panic!("append {tag}: {e}"));
        out.push((info.base_offset, info.last_offset, stored(&b, info.base_offset, TERM)));
        tag += 1;
    }
    out
}

/// Appends write whole pages: the file ends at the page holding the data's end.
fn page_up(bytes: u64) -> u64 {
    bytes.div_ceil(4096) * 4096
}

fn active_file(disk: &SimDisk) -> Vec<u8> {
    disk.file_bytes(DIR, &log_file(0)).expect("segment 0")
}

#[test]
fn no_runway_unless_every_append_is_synced_and_the_segment_has_grown() {
    let (disk, clock, log) = fresh(1);
    append_until(&log, 0, RUNWAY / 2);
    assert!(!log.wants_runway(), "a segment smaller than the runway gets none");
    let data = log.size_bytes();
    block_on(log.extend_runway()).unwrap();
    assert_eq!(active_file(&disk).len() as u64, page_up(data), "nothing zeroed");

    for fsync in [FsyncPolicy::Never, FsyncPolicy::Interval { ms: Some(10), bytes: None }] {
        let disk = SimDisk::new(2);
        let log = open(&disk, &clock, LogConfig { fsync, ..config() });
        append_until(&log, 0, 2 * RUNWAY);
        assert!(!log.wants_runway(), "{fsync:?}: no runway");
        let data = log.size_bytes();
        block_on(log.extend_runway()).unwrap();
        assert_eq!(active_file(&disk).len() as u64, page_up(data), "{fsync:?}: nothing zeroed");
    }
}

#[test]
fn zeros_go_past_the_data_appends_overwrite_them_and_sealing_trims_them() {
    let (disk, clock, log) = fresh(3);
    let mut acked = append_until(&log, 0, RUNWAY);
    assert!(log.wants_runway());
    let data = log.size_bytes();
    block_on(log.extend_runway()).unwrap();
    assert!(!log.wants_runway(), "refilled");
    let file = active_file(&disk);
    // Up to `data` + what the segment holds (capped by the runway), page-rounded.
    let target = page_up(page_up(data) + data.min(RUNWAY));
    assert_eq!(file.len() as u64, target, "the file now reaches the runway's end");
    assert!(file[data as usize..].iter().all(|&b| b == 0), "only zeros past the data");
    assert_eq!(batches_in(&file).len(), acked.len(), "the data is intact");

    // Appends go on into the zeros, and the file does not grow while they stay inside them.
    acked.extend(append_until(&log, 1_000, data + RUNWAY / 4));
    assert_eq!(active_file(&disk).len() as u64, target);
    let end = log.offsets().log_end;
    assert_serves(&log, &acked, 0, end);

    // A roll seals the segment at its data.
    let data = log.size_bytes();
    block_on(log.roll()).unwrap();
    assert_eq!(active_file(&disk).len() as u64, data, "sealed segments hold no zeros past their data");
    let (log, report) = reopen(&disk, &clock, config());
    assert_eq!(report.truncated_bytes, 0);
    assert_serves(&log, &acked, 0, end);
}

#[test]
fn appends_wait_for_a_zero_write_in_flight_and_none_is_lost_to_it() {
    let disk = SimDisk::new(4);
    let clock = SimClock::new(1_000);
    // Space reserved far ahead, as the 32 MiB default does: an append reserving more would wait
    // for the zero write anyway (a reservation waits for it). Reservations double the segment's
    // size here: the one made past 144 KiB of data reaches about 300 KiB, beyond these appends.
    let config = LogConfig { preallocate_bytes: 1 << 20, ..config() };
    let log = open_timed(&disk, &clock, config.clone());
    let mut acked = append_until(&log, 0, 150 << 10);
    let before = log.offsets().log_end;
    let size_before = log.size_bytes();
    // The runway's zero write (48 KiB from 16 KiB past the end, so many turns) runs while 60
    // appends of up to 4 KiB go past its start: they must wait for it, not be overwritten by it.
    let mut tasks: Vec<Task<'_, Option<TaggedAppend>>> = vec![Box::pin(async {
        log.extend_runway().await.expect("runway");
        None
    })];
    for tag in 1_000..1_060u64 {
        let log = &log;
        tasks.push(Box::pin(async move {
            let b = tagged_batch(tag);
            Some((tag, log.append(&b, TERM).await))
        }));
    }
    let mut appended: Vec<(u64, keel_storage::AppendInfo)> = join_all(tasks)
        .into_iter()
        .flatten()
        .map(|(tag, r)| (tag, r.unwrap_or_else(|e| panic!("append {tag}: {e}"))))
        .collect();
    appended.sort_by_key(|(_, info)| info.base_offset);
    assert!(log.size_bytes() > size_before + RUNWAY, "the appends reached past the zero write");
    for (tag, info) in &appended {
        acked.push((info.base_offset, info.last_offset, stored(&tagged_batch(*tag), info.base_offset, TERM)));
    }
    let end = log.offsets().log_end;
    assert!(end > before);
    assert!(served(&log) == acked, "every acknowledged batch is served byte-identical");
    // And on disk, after a power loss: everything acknowledged, byte-identical.
    disk.crash();
    let (log, _) = reopen(&disk, &clock, config);
    assert_serves(&log, &acked, 0, end);
}

#[test]
fn a_roll_waits_for_the_zero_write_in_flight() {
    let disk = SimDisk::new(5);
    let clock = SimClock::new(1_000);
    let log = open_timed(&disk, &clock, config());
    append_until(&log, 0, RUNWAY);
    let data = log.size_bytes();
    let tasks: Vec<Task<'_>> = vec![
        Box::pin(async { log.extend_runway().await.expect("runway") }),
        Box::pin(async { log.roll().await.expect("roll") }),
    ];
    join_all(tasks);
    // Had the seal trimmed the file before the zero write landed, the write would have grown
    // the sealed segment again.
    assert_eq!(active_file(&disk).len() as u64, data, "the sealed segment holds only its data");
    assert_eq!(log.active_segment_base(), log.offsets().log_end);
}

#[test]
fn a_truncation_waits_for_the_refill_and_the_runway_is_made_again() {
    let disk = SimDisk::new(8);
    let clock = SimClock::new(1_000);
    let log = open_timed(&disk, &clock, config());
    let acked = append_until(&log, 0, 2 * RUNWAY);
    // Keep three quarters of the batches (about 1.5 runways): still enough for a runway.
    let keep = acked.len() * 3 / 4;
    let new_end = acked[keep].0;
    let tasks: Vec<Task<'_>> = vec![
        Box::pin(async { log.extend_runway().await.expect("runway") }),
        Box::pin(async { log.truncate_suffix(new_end).await.expect("truncate") }),
    ];
    join_all(tasks);
    assert_eq!(log.offsets().log_end, new_end);
    let data = log.size_bytes();
    // The truncation cut the file at its data, runway and all, and the log knows it: had it
    // kept counting the cut zeros, it would not want a runway now.
    assert_eq!(active_file(&disk).len() as u64, data, "the file ends at the data");
    assert!(log.wants_runway(), "the runway is made again after a truncation");
    assert!(served(&log) == acked[..keep], "the batches kept are served byte-identical");
}

#[test]
fn a_power_loss_with_a_runway_loses_nothing_acknowledged() {
    for seed in 0..20 {
        let (disk, clock, log) = fresh(100 + seed);
        let mut acked = append_until(&log, 0, RUNWAY);
        block_on(log.extend_runway()).unwrap();
        acked.extend(append_until(&log, 1_000, RUNWAY * 7 / 4));
        // A second refill, then more appends into the first one's zeros.
        assert!(log.wants_runway(), "seed {seed}: less than half the runway left");
        block_on(log.extend_runway()).unwrap();
        acked.extend(append_until(&log, 2_000, RUNWAY * 2));
        let end = log.offsets().log_end;
        disk.crash();
        let (log, report) = reopen(&disk, &clock, config());
        assert_serves(&log, &acked, 0, end);
        assert!(
            decisions_for(&report, &log_file(0)).contains(&DiskState::ZeroFilledTail),
            "seed {seed}: the zeros were found and cut: {:?}",
            report.decisions
        );
        assert_eq!(report.truncated_bytes, 0, "seed {seed}: zeros are not reported as cut data");
        append_one_more(&log, 9_999, end);
    }
}

#[test]
fn a_full_disk_leaves_the_log_without_a_runway_but_usable() {
    let (disk, _clock, log) = fresh(6);
    let mut acked = append_until(&log, 0, RUNWAY);
    disk.fail_next(FaultKind::Allocate, 1, ENOSPC);
    let r = block_on(log.extend_runway());
    assert!(matches!(r, Err(StorageError::NoSpace(_)) | Err(StorageError::Io { .. })), "{r:?}");
    assert!(log.failure().is_none(), "a runway that could not be reserved does not fail the log");
    assert!(!log.wants_runway(), "no new attempt after every append");
    acked.extend(append_until(&log, 1_000, RUNWAY + 4096));
    let end = log.offsets().log_end;
    assert_serves(&log, &acked, 0, end);
    // The next segment tries again.
    block_on(log.roll()).unwrap();
    let sealed = log.size_bytes();
    acked.extend(append_until(&log, 2_000, sealed + RUNWAY));
    assert!(log.wants_runway());
    block_on(log.extend_runway()).unwrap();
    let end = log.offsets().log_end;
    assert_serves(&log, &acked, 0, end);
}

#[test]
fn a_failed_fdatasync_of_the_runway_fails_the_log_until_reopened() {
    let (disk, clock, log) = fresh(7);
    let acked = append_until(&log, 0, RUNWAY);
    let end = log.offsets().log_end;
    disk.fail_next(FaultKind::Sync, 1, EIO);
    assert!(matches!(block_on(log.extend_runway()), Err(StorageError::Io { .. })));
    assert!(log.failure().is_some());
    let later = block_on(log.append(&tagged_batch(500), TERM));
    assert!(matches!(later, Err(StorageError::Failed { .. })), "{later:?}");
    drop(log);
    let (log, _) = reopen(&disk, &clock, config());
    assert_serves(&log, &acked, 0, end);
    append_one_more(&log, 501, end);
}

thread_local! {
    /// The operations a [`recorded`] disk performed, in order: 'z' a zero write, 'w' another
    /// write, 's' an fdatasync.
    static OPS: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Turns as in [`timed`], except that a zero write takes one (a refill that does not pause
/// writes its zeros back to back) and an fdatasync 20; each operation recorded in [`OPS`].
fn recorded(op: Op<'_>) -> usize {
    let (letter, turns) = match &op {
        Op::Write(bytes) if bytes.iter().all(|&b| b == 0) => ('z', 1),
        Op::Write(bytes) => ('w', 1 + bytes.len() / 4096),
        Op::Sync => ('s', 20),
        Op::SetLen | Op::Allocate => ('-', 1),
    };
    OPS.with(|ops| ops.borrow_mut().push(letter));
    turns
}

/// A log whose runway (1 MiB) takes several zero writes to refill, on a [`recorded`] disk
/// holding 1 MiB of data already.
fn long_runway(seed: u64) -> (SimDisk, SimClock, LogConfig, TimedLog, Vec<Stored>) {
    let disk = SimDisk::new(seed);
    let clock = SimClock::new(1_000);
    let config = LogConfig { runway_bytes: 1 << 20, segment_bytes: 16 << 20, preallocate_bytes: 4 << 20, ..config() };
    let log = block_on(Log::open(TurnsDir::new(disk.dir(DIR), recorded), clock.clone(), config.clone())).unwrap().0;
    let acked = append_until(&log, 0, 1 << 20);
    assert!(log.wants_runway());
    OPS.with(|ops| ops.borrow_mut().clear());
    (disk, clock, config, log, acked)
}

/// Lets other tasks run for `n` turns.
async fn after_turns(n: usize) {
    for _ in 0..n {
        futures_lite::future::yield_now().await;
    }
}

#[test]
fn a_paced_refill_writes_each_zero_write_after_an_fdatasync_of_the_appends() {
    let (disk, clock, config, log, mut acked) = long_runway(11);
    let refilled = std::cell::Cell::new(false);
    let tasks: Vec<Task<'_, Vec<Stored>>> = vec![
        // A pause that never ends by itself: only the appends' fdatasyncs let the refill go on.
        Box::pin(async {
            log.extend_runway_paced(std::future::pending::<()>).await.expect("runway");
            refilled.set(true);
            Vec::new()
        }),
        Box::pin(async {
            let mut acked = Vec::new();
            let mut tag = 10_000;
            while !refilled.get() {
                let b = tagged_batch(tag);
                let info = log.append(&b, TERM).await.expect("append");
                acked.push((info.base_offset, info.last_offset, stored(&b, info.base_offset, TERM)));
                tag += 1;
            }
            acked
        }),
    ];
    acked.extend(join_all(tasks).into_iter().flatten());
    let ops = OPS.with(|ops| ops.borrow().clone());
    let zeros: Vec<usize> = ops.match_indices('z').map(|(i, _)| i).collect();
    assert!(zeros.len() >= 4, "the refill took several zero writes: {ops}");
    for pair in zeros.windows(2) {
        assert!(ops[pair[0]..pair[1]].contains('s'), "an fdatasync between two zero writes: {ops}");
    }
    assert!(!log.wants_runway(), "refilled");
    let end = log.offsets().log_end;
    assert!(served(&log) == acked, "every acknowledged batch is served byte-identical");
    disk.crash();
    let (log, _) = reopen(&disk, &clock, config);
    assert_serves(&log, &acked, 0, end);
}

#[test]
fn a_paced_refill_stops_pausing_for_a_roll() {
    // Nothing else runs, and the pause never ends: the roll alone must see the refill through.
    let (disk, _clock, _config, log, _) = long_runway(12);
    let data = log.size_bytes();
    let tasks: Vec<Task<'_>> = vec![
        Box::pin(async { log.extend_runway_paced(std::future::pending::<()>).await.expect("runway") }),
        Box::pin(async {
            after_turns(20).await; // the refill pauses after its first zero write
            log.roll().await.expect("roll")
        }),
    ];
    join_all(tasks);
    let ops = OPS.with(|ops| ops.borrow().clone());
    assert!(ops.matches('z').count() >= 4, "the refill went on to its end: {ops}");
    assert_eq!(active_file(&disk).len() as u64, data, "the sealed segment holds only its data");
}

#[test]
fn a_paced_refill_stops_pausing_for_an_append_that_waits_for_its_zeros() {
    // An append past the zeros written so far, with no fdatasync before it to end the pause:
    // it waits for the zeros, and the refill must not wait for it in turn.
    let (_disk, _clock, _config, log, _) = long_runway(13);
    let big = batch(77, 600, 10, 1_000, 1_000); // about 600 KB: past the first zero writes
    let appended = std::cell::Cell::new(None);
    let tasks: Vec<Task<'_>> = vec![
        Box::pin(async { log.extend_runway_paced(std::future::pending::<()>).await.expect("runway") }),
        Box::pin(async {
            after_turns(20).await; // the refill pauses after its first zero write
            let info = log.append(&big, TERM).await.expect("append");
            appended.set(Some(info.base_offset));
        }),
    ];
    join_all(tasks);
    let base = appended.get().expect("appended");
    assert!(served(&log).last() == Some(&(base, base + 599, stored(&big, base, TERM))), "the batch is served intact");
}
