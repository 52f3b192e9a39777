//! Per-partition batching for the producer: records go into one open RecordBatch v2 per
//! partition; a batch is sealed when it is full (`batch_max_bytes`) and is due to be sent when
//! sealed or when its first record has waited `linger`. Pure logic: the caller passes the
//! current time and sends what [`Accumulator::drain_due`] hands back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_storage::batch::{BatchBuilder, HEADER_LEN};

/// One record as a producer hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

/// The batch being filled for one partition.
#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    /// Exact encoded size of the batch built from `builder` (checked when it is built).
    bytes: usize,
    /// Timestamp of the first record: the batch's `baseTimestamp`, which record timestamp
    /// deltas are relative to.
    base_timestamp: i64,
    /// When the first record arrived: the batch is due at `opened + linger`.
    opened: Instant,
}

/// Open batches per partition and sealed batches waiting to be sent.
#[derive(Debug)]
pub(crate) struct Accumulator {
    /// A batch is sealed once it reaches this many bytes; a record that would take it past is
    /// put in a new batch (a record alone larger than this gets a batch of its own).
    batch_max_bytes: usize,
    /// How long a batch's first record may wait before the batch is due.
    linger: Duration,
    /// Indexed by partition.
    open: Vec<Option<OpenBatch>>,
    /// Sealed batches in the order they were sealed. At most two per partition between two
    /// drains (one sealed because the next record did not fit, then that record alone if it
    /// fills a batch by itself).
    sealed: Vec<(u32, Bytes)>,
}

impl Accumulator {
    pub(crate) fn new(partitions: u32, batch_max_bytes: usize, linger: Duration) -> Accumulator {
        assert!(partitions > 0 && batch_max_bytes > 0);
        Accumulator { batch_max_bytes, linger, open: (0..partitions).map(|_| None).collect(), sealed: Vec::new() }
    }

    /// Adds `record` to `partition`'s open batch, sealing batches that are full.
    pub(crate) fn append(&mut self, partition: u32, record: RecordRef<'_>, now: Instant) {
        let slot = partition as usize;
        assert!(slot < self.open.len(), "partition {partition} of {}", self.open.len());
        let max = self.batch_max_bytes;
        let fits = |open: &OpenBatch| {
            open.bytes
                + record_bytes(record.timestamp_ms.wrapping_sub(open.base_timestamp), open.builder.len(), &record)
                <= max
        };
        if self.open[slot].as_ref().is_some_and(|open| !fits(open)) {
            self.seal(partition);
        }
        let open = self.open[slot].get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(),
            bytes: HEADER_LEN,
            base_timestamp: record.timestamp_ms,
            opened: now,
        });
        open.bytes += record_bytes(record.timestamp_ms.wrapping_sub(open.base_timestamp), open.builder.len(), &record);
        open.builder.push(record.timestamp_ms, record.key, record.value, record.headers);
        if open.bytes >= self.batch_max_bytes {
            self.seal(partition);
        }
    }

    /// Whether a batch is sealed or has lingered long enough at `now`.
    pub(crate) fn has_due(&self, now: Instant) -> bool {
        !self.sealed.is_empty() || self.open.iter().flatten().any(|b| self.is_due(b, now))
    }

    /// Takes the sealed batches and the open batches that have lingered long enough, as
    /// `(partition, records)` with one entry per partition (a partition's batches back to back,
    /// oldest first), in partition order.
    pub(crate) fn drain_due(&mut self, now: Instant) -> Vec<(u32, Bytes)> {
        for p in 0..self.open.len() {
            if self.open[p].as_ref().is_some_and(|b| self.is_due(b, now)) {
                self.seal(p as u32);
            }
        }
        self.take_sealed()
    }

    /// Takes every batch, sealed or open.
    pub(crate) fn drain_all(&mut self) -> Vec<(u32, Bytes)> {
        for p in 0..self.open.len() {
            if self.open[p].is_some() {
                self.seal(p as u32);
            }
        }
        self.take_sealed()
    }

    /// Records waiting in open batches.
    pub(crate) fn open_records(&self) -> usize {
        self.open.iter().flatten().map(|b| b.builder.len()).sum()
    }

    fn is_due(&self, batch: &OpenBatch, now: Instant) -> bool {
        now.saturating_duration_since(batch.opened) >= self.linger
    }

    fn seal(&mut self, partition: u32) {
        let open = self.open[partition as usize].take().expect("sealing an open batch");
        assert!(!open.builder.is_empty(), "an open batch has a record");
        // Offsets in a batch are dense: the last delta is the record count - 1.
        let last_delta = i32::try_from(open.builder.len() - 1).expect("fewer than 2^31 records in a batch");
        let batch = open.builder.last_offset_delta(last_delta).build();
        assert_eq!(batch.len(), open.bytes, "record_bytes agrees with BatchBuilder");
        self.sealed.push((partition, Bytes::from(batch)));
    }

    fn take_sealed(&mut self) -> Vec<(u32, Bytes)> {
        let mut sealed = std::mem::take(&mut self.sealed);
        // Stable: a partition's batches stay oldest first.
        sealed.sort_by_key(|(p, _)| *p);
        let mut out: Vec<(u32, Bytes)> = Vec::with_capacity(sealed.len());
        for (p, batch) in sealed {
            match out.last_mut() {
                Some((last, records)) if *last == p => {
                    let mut joined = Vec::with_capacity(records.len() + batch.len());
                    joined.extend_from_slice(records);
                    joined.extend_from_slice(&batch);
                    *records = Bytes::from(joined);
                }
                _ => out.push((p, batch)),
            }
        }
        out
    }
}

/// Bytes `record` takes in a batch (its length prefix included) as the record at
/// `offset_delta` with `timestamp_delta`, exactly as [`BatchBuilder`] encodes it.
fn record_bytes(timestamp_delta: i64, offset_delta: usize, record: &RecordRef<'_>) -> usize {
    let nullable = |b: Option<&[u8]>| b.map_or(varint_bytes(-1), |b| varint_bytes(b.len() as i64) + b.len());
    let headers: usize =
        record.headers.iter().map(|(k, v)| varint_bytes(k.len() as i64) + k.len() + nullable(*v)).sum();
    let body = 1 // attributes
        + varint_bytes(timestamp_delta)
        + varint_bytes(offset_delta as i64)
        + nullable(record.key)
        + nullable(record.value)
        + varint_bytes(record.headers.len() as i64)
        + headers;
    varint_bytes(body as i64) + body
}

/// Bytes of the zigzag varint (or varlong) encoding of `v`.
fn varint_bytes(v: i64) -> usize {
    let zigzag = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (zigzag | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use keel_storage::batch::BatchView;

    use super::*;

    fn record<'a>(ts: i64, key: &'a [u8], value: &'a [u8]) -> RecordRef<'a> {
        RecordRef { timestamp_ms: ts, key: Some(key), value: Some(value), headers: &[] }
    }

    /// The records of `records` (batches back to back) as (offset, key, value).
    fn parse(records: &[u8]) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            let view = BatchView::parse(rest).unwrap();
            assert_eq!(i64::from(view.last_offset_delta()) + 1, i64::from(view.records_count()), "dense offsets");
            for r in view.records().unwrap() {
                let r = r.unwrap();
                out.push((r.offset(view.base_offset()), r.key.unwrap().to_vec(), r.value.unwrap().to_vec()));
            }
            rest = &rest[view.total_len()..];
        }
        out
    }

    #[test]
    fn varint_sizes() {
        for (v, n) in
            [(0, 1), (-1, 1), (63, 1), (-64, 1), (64, 2), (8191, 2), (8192, 3), (i64::MAX, 10), (i64::MIN, 10)]
        {
            assert_eq!(varint_bytes(v), n, "{v}");
        }
    }

    #[test]
    fn size_estimate_is_exact() {
        // seal() asserts it; push records of every shape through.
        let t0 = Instant::now();
        let mut acc = Accumulator::new(1, usize::MAX, Duration::from_secs(60));
        let big = vec![7u8; 300];
        let headers: &[(&[u8], Option<&[u8]>)] = &[(b"h", Some(b"v")), (b"", None)];
        for i in 0..200i64 {
            let r = RecordRef {
                timestamp_ms: 1_700_000_000_000 + i * 1000 - 50_000,
                key: (i % 3 != 0).then_some(&big[..(i as usize % 200)]),
                value: (i % 5 != 0).then_some(&big[..(i as usize)]),
                headers: if i % 2 == 0 { headers } else { &[] },
            };
            acc.append(0, r, t0);
        }
        assert_eq!(acc.open_records(), 200);
        let drained = acc.drain_all();
        assert_eq!(drained.len(), 1);
        assert_eq!(BatchView::parse(&drained[0].1).unwrap().records_count(), 200);
    }

    #[test]
    fn batches_are_sealed_at_the_byte_limit() {
        let t0 = Instant::now();
        let limit = 1000;
        let mut acc = Accumulator::new(2, limit, Duration::from_secs(60));
        let value = [b'v'; 90];
        for i in 0..100u32 {
            acc.append(0, record(1, format!("k{i:03}").as_bytes(), &value), t0);
        }
        assert!(acc.has_due(t0), "full batches are due at once");
        let drained = acc.drain_due(t0);
        assert_eq!(drained.len(), 1, "one entry for partition 0");
        let mut rest = &drained[0].1[..];
        let mut batches = 0;
        while !rest.is_empty() {
            let view = BatchView::parse(rest).unwrap();
            assert!(view.total_len() <= limit, "a batch of {} bytes", view.total_len());
            assert!(view.total_len() + 100 > limit, "a batch is sealed only when the next record does not fit");
            rest = &rest[view.total_len()..];
            batches += 1;
        }
        let sealed = parse(&drained[0].1).len();
        assert_eq!(sealed + acc.open_records(), 100);
        assert!(batches >= 9, "{batches} batches");
        // The rest is sent once it has lingered.
        assert!(!acc.has_due(t0 + Duration::from_secs(59)));
        let later = acc.drain_due(t0 + Duration::from_secs(60));
        let keys: Vec<Vec<u8>> = parse(&drained[0].1).into_iter().chain(parse(&later[0].1)).map(|r| r.1).collect();
        let want: Vec<Vec<u8>> = (0..100u32).map(|i| format!("k{i:03}").into_bytes()).collect();
        assert_eq!(keys, want, "every record once, in order");
        assert_eq!(acc.open_records(), 0);
    }

    #[test]
    fn an_oversized_record_gets_its_own_batch() {
        let t0 = Instant::now();
        let mut acc = Accumulator::new(1, 200, Duration::from_secs(60));
        acc.append(0, record(1, b"small", b"x"), t0);
        acc.append(0, record(1, b"big", &[0u8; 500]), t0);
        acc.append(0, record(1, b"after", b"y"), t0);
        let drained = acc.drain_due(t0);
        let got: Vec<Vec<u8>> = parse(&drained[0].1).into_iter().map(|r| r.1).collect();
        assert_eq!(got, [b"small".to_vec(), b"big".to_vec()], "the small batch, then the big one alone");
        assert_eq!(acc.open_records(), 1);
    }

    #[test]
    fn linger_is_per_partition() {
        let t0 = Instant::now();
        let linger = Duration::from_millis(5);
        let mut acc = Accumulator::new(3, 1 << 20, linger);
        acc.append(0, record(1, b"a", b"1"), t0);
        acc.append(2, record(1, b"b", b"2"), t0 + Duration::from_millis(3));
        assert!(!acc.has_due(t0 + Duration::from_millis(4)));
        let first = acc.drain_due(t0 + Duration::from_millis(5));
        assert_eq!(first.iter().map(|b| b.0).collect::<Vec<_>>(), [0]);
        let second = acc.drain_due(t0 + Duration::from_millis(8));
        assert_eq!(second.iter().map(|b| b.0).collect::<Vec<_>>(), [2]);
        assert!(acc.drain_all().is_empty());
    }

    #[test]
    fn timestamps_before_the_first_record_are_kept() {
        let t0 = Instant::now();
        let mut acc = Accumulator::new(1, 1 << 20, Duration::ZERO);
        acc.append(0, record(5_000, b"a", b"1"), t0);
        acc.append(0, record(1_000, b"b", b"2"), t0);
        let drained = acc.drain_all();
        let view = BatchView::parse(&drained[0].1).unwrap();
        let ts: Vec<i64> = view.records().unwrap().map(|r| r.unwrap().timestamp(view.base_timestamp())).collect();
        assert_eq!(ts, [5_000, 1_000]);
        assert_eq!(view.max_timestamp(), 5_000);
    }
}
