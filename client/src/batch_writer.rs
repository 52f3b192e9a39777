//! [`BatchWriter`]: encodes RecordBatch v2 batches straight into one reusable buffer, for
//! producers that care about the cost per record (load generators, pipelines that already hold
//! their records in memory).
//!
//! [`BatchBuilder`](keel_storage::batch::BatchBuilder) copies every key and value into a record
//! list first and allocates a new batch per `build`; this writes each record once, in place, and
//! the memory of batches handed out with [`BatchWriter::take`] is reused for later batches once
//! every handed-out [`Bytes`] is dropped (a producer with one request in flight allocates once).
//! The bytes are the same as `BatchBuilder`'s for the same records (both encode minimally, as
//! Kafka does).

use bytes::{BufMut, Bytes, BytesMut};
use keel_storage::batch::{BatchView, HEADER_LEN, LOG_OVERHEAD, MAGIC};

/// Where the CRC-covered part of a batch starts (the attributes field).
const CRC_FROM: usize = 21;

/// Writes uncompressed RecordBatch v2 batches (base offset 0, partition leader epoch −1, no
/// producer id, CreateTime), one open batch at a time, back to back in one buffer.
///
/// ```
/// use keel_client::BatchWriter;
/// let mut w = BatchWriter::new();
/// w.begin(1_700_000_000_000);
/// w.push(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
/// w.finish();
/// let batches = w.take(); // one batch, ready for Client::produce_many
/// assert_eq!(keel_storage::batch::BatchView::parse(&batches).unwrap().records_count(), 1);
/// ```
#[derive(Debug, Default)]
pub struct BatchWriter {
    buf: BytesMut,
    /// Start of the open batch in `buf`.
    open: Option<usize>,
    base_timestamp: i64,
    max_timestamp: i64,
    records: i32,
}

impl BatchWriter {
    /// An empty writer; its buffer grows to the largest set of batches taken at once.
    pub fn new() -> BatchWriter {
        BatchWriter::default()
    }

    /// An empty writer with room for `bytes` of batches before it allocates again.
    pub fn with_capacity(bytes: usize) -> BatchWriter {
        BatchWriter { buf: BytesMut::with_capacity(bytes), ..BatchWriter::default() }
    }

    /// Opens a batch whose record timestamps are relative to `base_timestamp_ms` (usually the
    /// first record's). Panics if a batch is already open.
    pub fn begin(&mut self, base_timestamp_ms: i64) {
        assert!(self.open.is_none(), "BatchWriter::begin: a batch is already open");
        self.open = Some(self.buf.len());
        self.buf.put_bytes(0, HEADER_LEN);
        self.base_timestamp = base_timestamp_ms;
        self.max_timestamp = i64::MIN;
        self.records = 0;
    }

    /// Appends a record to the open batch (panics if none is open). The batch's `maxTimestamp`
    /// is the largest record timestamp.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let header_bytes: usize =
            headers.iter().map(|(k, v)| varint_len(k.len() as i64) + k.len() + nullable_len(v.map(<[u8]>::len))).sum();
        let value_parts: &[&[u8]] = match &value {
            Some(v) => std::slice::from_ref(v),
            None => &[],
        };
        self.put_record(timestamp_ms, key, value.map(<[u8]>::len), value_parts, headers.len(), header_bytes);
        for (k, v) in headers {
            put_varint(&mut self.buf, k.len() as i64);
            self.buf.put_slice(k);
            put_nullable(&mut self.buf, *v);
        }
    }

    /// Appends a record without headers whose value is `value_parts` concatenated (e.g. a
    /// per-record prefix followed by a shared payload), copied once into the batch.
    pub fn push_value_parts(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value_parts: &[&[u8]]) {
        let value_len = value_parts.iter().map(|p| p.len()).sum();
        self.put_record(timestamp_ms, key, Some(value_len), value_parts, 0, 0);
    }

    /// Records in the open batch (0 if none is open).
    pub fn records(&self) -> usize {
        if self.open.is_some() {
            self.records as usize
        } else {
            0
        }
    }

    /// Bytes of the open batch so far, its header included (0 if none is open).
    pub fn open_bytes(&self) -> usize {
        self.open.map_or(0, |start| self.buf.len() - start)
    }

    /// Bytes finished (and open) since the last [`BatchWriter::take`].
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written since the last [`BatchWriter::take`].
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Exact bytes a record without headers takes in a batch (its length prefix included), as
    /// the record at `offset_delta` whose timestamp is `timestamp_delta` from the base.
    pub fn record_bytes(
        timestamp_delta: i64,
        offset_delta: usize,
        key_len: Option<usize>,
        value_len: Option<usize>,
    ) -> usize {
        let body = record_body_len(timestamp_delta, offset_delta as i64, key_len, value_len, 0, 0);
        varint_len(body as i64) + body
    }

    /// Closes the open batch: fills in its header and CRC. A batch without records is dropped
    /// (the broker refuses empty batches). Panics if no batch is open.
    pub fn finish(&mut self) {
        let start = self.open.take().expect("BatchWriter::finish: no open batch");
        if self.records == 0 {
            self.buf.truncate(start);
            return;
        }
        let batch = &mut self.buf[start..];
        let batch_length = i32::try_from(batch.len() - LOG_OVERHEAD).expect("a batch below 2 GiB");
        let mut header = [0u8; HEADER_LEN];
        let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &0i64.to_be_bytes()); // baseOffset: the broker assigns it
        put(8, &batch_length.to_be_bytes());
        put(12, &(-1i32).to_be_bytes()); // partitionLeaderEpoch
        put(16, &MAGIC.to_be_bytes());
        put(21, &0i16.to_be_bytes()); // attributes: uncompressed, CreateTime
        put(23, &(self.records - 1).to_be_bytes()); // lastOffsetDelta: dense offsets
        put(27, &self.base_timestamp.to_be_bytes());
        put(35, &self.max_timestamp.to_be_bytes());
        put(43, &(-1i64).to_be_bytes()); // producerId
        put(51, &(-1i16).to_be_bytes()); // producerEpoch
        put(53, &(-1i32).to_be_bytes()); // baseSequence
        put(57, &self.records.to_be_bytes());
        batch[..HEADER_LEN].copy_from_slice(&header);
        let crc = BatchView::parse_unchecked_crc(batch).expect("a batch this writer encoded parses").computed_crc();
        batch[17..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    }

    /// Takes every finished batch written since the last call, back to back (empty if none).
    /// Panics if a batch is still open.
    pub fn take(&mut self) -> Bytes {
        assert!(self.open.is_none(), "BatchWriter::take: a batch is still open");
        self.buf.split().freeze()
    }

    /// Makes room for `additional` more bytes; the memory of taken batches that have all been
    /// dropped is reclaimed rather than allocated anew.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    fn put_record(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value_len: Option<usize>,
        value_parts: &[&[u8]],
        header_count: usize,
        header_bytes: usize,
    ) {
        assert!(self.open.is_some(), "BatchWriter: push without begin");
        let delta = timestamp_ms.wrapping_sub(self.base_timestamp);
        let offset_delta = i64::from(self.records);
        let body = record_body_len(delta, offset_delta, key.map(<[u8]>::len), value_len, header_count, header_bytes);
        self.buf.reserve(varint_len(body as i64) + body);
        put_varint(&mut self.buf, body as i64);
        self.buf.put_u8(0); // record attributes: unused
        put_varint(&mut self.buf, delta);
        put_varint(&mut self.buf, offset_delta);
        put_nullable(&mut self.buf, key);
        match value_len {
            Some(len) => {
                put_varint(&mut self.buf, len as i64);
                for part in value_parts {
                    self.buf.put_slice(part);
                }
            }
            None => put_varint(&mut self.buf, -1),
        }
        put_varint(&mut self.buf, header_count as i64);
        self.records = self.records.checked_add(1).expect("fewer than 2^31 records in a batch");
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
    }
}

/// Bytes of a record after its length prefix.
fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i64,
    key_len: Option<usize>,
    value_len: Option<usize>,
    header_count: usize,
    header_bytes: usize,
) -> usize {
    1 + varint_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable_len(key_len)
        + nullable_len(value_len)
        + varint_len(header_count as i64)
        + header_bytes
}

fn nullable_len(len: Option<usize>) -> usize {
    len.map_or(1, |n| varint_len(n as i64) + n)
}

/// Bytes of the zigzag varint (varlong) encoding of `v`.
fn varint_len(v: i64) -> usize {
    let zigzag = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (zigzag | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_nullable(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.put_slice(b);
        }
        None => put_varint(out, -1),
    }
}

#[cfg(test)]
mod tests {
    use keel_storage::batch::BatchBuilder;

    use super::*;

    #[test]
    fn same_bytes_as_batch_builder() {
        let big = vec![9u8; 300];
        let headers: &[(&[u8], Option<&[u8]>)] = &[(b"h", Some(b"v")), (b"", None)];
        let mut w = BatchWriter::new();
        let mut b = BatchBuilder::new();
        let base = 1_700_000_000_000i64;
        w.begin(base);
        for i in 0..150i64 {
            let ts = base + i * 977 - 40_000;
            let key = (i % 3 != 0).then_some(&big[..(i as usize % 200)]);
            let value = (i % 5 != 0).then_some(&big[..(i as usize * 2)]);
            let h = if i % 2 == 0 { headers } else { &[] };
            w.push(ts, key, value, h);
            b.push(ts, key, value, h);
        }
        w.finish();
        let ours = w.take();
        let theirs = b.base_timestamp(base).build();
        assert_eq!(&ours[..], &theirs[..]);
        BatchView::parse(&ours).unwrap();
    }

    #[test]
    fn value_parts_and_sizes() {
        let mut w = BatchWriter::with_capacity(1 << 10);
        for round in 0..3 {
            w.begin(5);
            for i in 0..10u8 {
                let before = w.open_bytes();
                let prefix = [i; 8];
                w.push_value_parts(5 + i64::from(i), Some(b"key"), &[&prefix, b"payload"]);
                let want = BatchWriter::record_bytes(i64::from(i), usize::from(i), Some(3), Some(15));
                assert_eq!(w.open_bytes() - before, want);
            }
            assert_eq!(w.records(), 10);
            w.finish();
            w.begin(0);
            w.finish(); // empty: dropped
            let batches = w.take();
            let view = BatchView::parse(&batches).unwrap();
            assert_eq!(view.total_len(), batches.len(), "round {round}: one batch");
            assert_eq!((view.records_count(), view.last_offset_delta(), view.max_timestamp()), (10, 9, 14));
            let values: Vec<Vec<u8>> = view.records().unwrap().map(|r| r.unwrap().value.unwrap().to_vec()).collect();
            assert_eq!(values[3], [&[3u8; 8][..], b"payload"].concat());
            drop(batches);
            w.reserve(1 << 10);
        }
    }
}
