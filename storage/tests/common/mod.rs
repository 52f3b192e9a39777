//! Helpers shared by the storage tests.
#![allow(dead_code)]

pub mod turns;

use keel_storage::{
    batch::{BatchBuilder, BatchView},
    io::sim::{SimClock, SimDir, SimDisk},
    Log, LogConfig,
};

pub type SimLog = Log<SimDir, SimClock>;

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}

/// A batch of `n` records: key `k{i % keys}`, value `v{tag}-{i}` of `value_bytes` bytes (padded).
pub fn batch(tag: u64, n: usize, keys: u64, value_bytes: usize, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let key = format!("k{}", (tag + i as u64) % keys.max(1));
        let mut value = format!("v{tag}-{i}").into_bytes();
        value.resize(value_bytes.max(value.len()), b'.');
        b.push(ts, Some(key.as_bytes()), Some(&value), &[]);
    }
    b.build()
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        index_interval_bytes: 512,
        write_bytes: 8192,
        tail_cache_bytes: 8192,
        preallocate_bytes: 8192,
        ..LogConfig::default()
    }
}

pub fn open(disk: &SimDisk, clock: &SimClock, config: LogConfig) -> SimLog {
    let (log, _report) = block_on(Log::open(disk.dir("p0"), clock.clone(), config)).expect("open");
    log
}

/// Every batch the log serves, from its start, for any disk, read `max_bytes` at a time, as
/// (base, last, bytes).
pub fn served_in<D: keel_storage::io::Dir>(log: &Log<D, SimClock>, max_bytes: usize) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut at = log.offsets().log_start;
    loop {
        let read = block_on(log.read(at, max_bytes)).unwrap_or_else(|e| panic!("read {at}: {e}"));
        if read.bytes.is_empty() {
            return out;
        }
        out.extend(split(&read.bytes));
        at = read.next_offset;
    }
}

/// [`served_in`] 64 KiB at a time.
pub fn served<D: keel_storage::io::Dir>(log: &Log<D, SimClock>) -> Vec<Stored> {
    served_in(log, 1 << 16)
}

/// [`served_in`] 4 KiB at a time (below most batches' size, so reads end mid-way often).
pub fn read_all(log: &SimLog) -> Vec<Stored> {
    served_in(log, 4096)
}

pub fn split(mut bytes: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let b = BatchView::parse(bytes).expect("log serves valid batches");
        out.push((b.base_offset() as u64, b.last_offset() as u64, b.as_bytes().to_vec()));
        bytes = &bytes[b.total_len()..];
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Helpers for the recovery and fault tests.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use keel_storage::{
    batch::{set_base_offset, set_partition_leader_epoch},
    recovery::DiskState,
    RecoveryReport,
};

/// One appended batch as the log must store it: (base offset, last offset, stored bytes).
pub type Stored = (u64, u64, Vec<u8>);

/// Name of the log directory `open` uses.
pub const DIR: &str = "p0";

pub fn log_file(base: u64) -> String {
    format!("{base:020}.log")
}
pub fn index_file(base: u64) -> String {
    format!("{base:020}.index")
}
pub fn timeindex_file(base: u64) -> String {
    format!("{base:020}.timeindex")
}

/// `batch` as the log stores it after assigning `base` and stamping `term`.
pub fn stored(batch: &[u8], base: u64, term: u32) -> Vec<u8> {
    let mut out = batch.to_vec();
    set_base_offset(&mut out, base as i64);
    set_partition_leader_epoch(&mut out, term as i32);
    out
}

/// The batch `append_tagged` appends for `tag`: 1–3 records (keys `k0..k6`) of 100–1,300 bytes,
/// so some batches are smaller than `small_config`'s index interval and some larger.
pub fn tagged_batch(tag: u64) -> Vec<u8> {
    let value_bytes = 100 + ((tag * 389) % 1_200) as usize;
    batch(tag, 1 + (tag % 3) as usize, 7, value_bytes, 1_000 + tag as i64)
}

/// Appends `tagged_batch(tag)` for every tag in `tags` (each must succeed) and returns what the log
/// must now store for them.
pub fn append_tagged(log: &SimLog, tags: std::ops::Range<u64>, term: u32) -> Vec<Stored> {
    tags.map(|tag| {
        let b = tagged_batch(tag);
        let info = block_on(log.append(&b, term)).unwrap_or_else(|e| panic!("append of tag {tag}: {e}"));
        (info.base_offset, info.last_offset, stored(&b, info.base_offset, term))
    })
    .collect()
}

/// Reopens the log in `DIR` (recovery) and returns it with its report.
pub fn reopen(disk: &SimDisk, clock: &SimClock, config: LogConfig) -> (SimLog, RecoveryReport) {
    block_on(Log::open(disk.dir(DIR), clock.clone(), config)).expect("reopen")
}

/// The states recovery recorded for file `name`, in order.
pub fn decisions_for(report: &RecoveryReport, name: &str) -> Vec<DiskState> {
    report.decisions.iter().filter(|(_, n)| n == name).map(|(s, _)| *s).collect()
}

/// Bases of the segment files in `DIR`, sorted.
pub fn segment_files(disk: &SimDisk) -> Vec<u64> {
    disk.list_raw(DIR)
        .iter()
        .filter_map(|n| n.strip_suffix(".log").filter(|d| d.len() == 20).and_then(|d| d.parse().ok()))
        .collect()
}

/// Batches found in a segment file's bytes, front to back, until the first invalid one:
/// (position, base, last, total length).
pub fn batches_in(mut bytes: &[u8]) -> Vec<(usize, u64, u64, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(b) = BatchView::parse(bytes) {
        out.push((pos, b.base_offset() as u64, b.last_offset() as u64, b.total_len()));
        pos += b.total_len();
        bytes = &bytes[b.total_len()..];
    }
    out
}

/// Asserts the log serves exactly `expected` (every batch byte-identical, nothing else) and that
/// its offsets say so: everything up to the last batch is written and flushed.
pub fn assert_serves(log: &SimLog, expected: &[Stored], log_start: u64, log_end: u64) {
    let got = read_all(log);
    assert_eq!(got.len(), expected.len(), "number of batches served");
    for (g, w) in got.iter().zip(expected) {
        assert_eq!((g.0, g.1), (w.0, w.1), "batch offsets");
        assert!(g.2 == w.2, "batch {} is not byte-identical to what was appended", w.0);
    }
    let o = log.offsets();
    assert_eq!(o.log_start, log_start, "log_start");
    assert_eq!(o.log_end, log_end, "log_end");
    assert_eq!(o.written_end, log_end, "written_end");
    assert_eq!(o.flushed_end, log_end, "flushed_end");
}

/// Appends one more batch and checks it lands at `expected_base` and reads back byte-identical.
/// Returns it.
pub fn append_one_more(log: &SimLog, tag: u64, expected_base: u64) -> Stored {
    let b = tagged_batch(tag);
    let info = block_on(log.append(&b, 9)).expect("append after recovery");
    assert_eq!(info.base_offset, expected_base, "append after recovery continues at the log end");
    let want = stored(&b, info.base_offset, 9);
    let read = block_on(log.read(info.base_offset, 1)).expect("read back");
    assert!(split(&read.bytes)[0].2 == want, "appended batch reads back byte-identical");
    (info.base_offset, info.last_offset, want)
}

/// Polls every future until all are done, concurrently on this thread (futures that wait on the
/// log are re-polled when woken). Panics if they stop making progress (a hang).
pub fn join_all<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<dyn Future<Output = T> + 'a>>>> = futures.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut idle_rounds = 0;
    block_on(std::future::poll_fn(|cx: &mut Context<'_>| {
        let mut progressed = false;
        for (slot, result) in futures.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    *result = Some(v);
                    *slot = None;
                    progressed = true;
                }
            }
        }
        if futures.iter().all(Option::is_none) {
            return Poll::Ready(());
        }
        idle_rounds = if progressed { 0 } else { idle_rounds + 1 };
        assert!(idle_rounds < 100_000, "futures stopped making progress (hang)");
        cx.waker().wake_by_ref();
        Poll::Pending
    }));
    out.into_iter().map(|v| v.expect("finished")).collect()
}
