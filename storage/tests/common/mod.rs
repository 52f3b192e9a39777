//! Helpers shared by the storage tests.
#![allow(dead_code)]

use keel_storage::{
    batch::{BatchBuilder, BatchView},
    io::sim::{SimClock, SimDir, SimDisk},
    Log, LogConfig, ReadBatches,
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

/// Every batch from the log start to the end, as (base, last, bytes).
pub fn read_all(log: &SimLog) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = log.offsets().log_start;
    loop {
        let ReadBatches { bytes, next_offset, .. } = block_on(log.read(at, 4096)).expect("read");
        if bytes.is_empty() {
            break;
        }
        out.extend(split(&bytes));
        at = next_offset;
    }
    out
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
