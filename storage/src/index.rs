//! Sparse per-segment indexes, kept in memory and persisted when a segment is sealed.
//!
//! - The **offset index** maps a relative offset to the byte position of the batch that starts
//!   there; one entry every `index_interval_bytes` of log. A lookup gives the position of the last
//!   indexed batch at or before the wanted offset; the reader scans forward from there.
//! - The **time index** stores, at the same points, the largest timestamp of every batch *before*
//!   the entry. Every batch before an entry whose value is `< T` has only timestamps `< T`, so the
//!   first record with timestamp `>= T` is found by scanning from the last such entry.
//!
//! On disk (`<base>.index`, `<base>.timeindex`) each file is a 48-byte header followed by fixed-size
//! entries, padded with zeros to a multiple of [`ALIGN`]. The header records the state of the
//! segment it describes ([`SealInfo`]) and a CRC-32C of header and entries, so recovery can tell a
//! valid index of a sealed segment from a missing, truncated, damaged or stale one.

use crate::io::{align_up, ALIGN};

/// Offset index file magic, "KOX1".
const OFFSET_MAGIC: u32 = 0x4b4f_5831;
/// Time index file magic, "KTX1".
const TIME_MAGIC: u32 = 0x4b54_5831;
pub(crate) const HEADER_LEN: usize = 48;
const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

/// The state of a sealed segment, recorded in both index headers. Recovery trusts a sealed segment
/// without scanning it only if its index headers agree with the log file on all of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealInfo {
    /// Logical length of the segment's `.log` file in bytes.
    pub log_size: u64,
    /// One past the last offset the segment covers (its base offset if it never held a batch).
    pub next_offset: u64,
    /// Largest batch max-timestamp in the segment (`i64::MIN` if empty).
    pub max_timestamp: i64,
    /// CRC of the segment's last batch (0 if empty): ties the index to one version of the file,
    /// so an index left over from before a compaction swap is recognised as stale.
    pub last_batch_crc: u32,
}

/// Why an index file was not usable. Every case leads recovery to rebuild the index by scanning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexFileError {
    Truncated {
        len: usize,
        needed: usize,
    },
    BadMagic(u32),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    Inconsistent(String),
    /// An entry points at or past the end of the log the header describes.
    PastEnd {
        position: u64,
        log_size: u64,
    },
}

/// Both sparse indexes of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// (relative offset, byte position), strictly increasing in both.
    offsets: Vec<(u32, u32)>,
    /// (largest timestamp of all batches before the entry, relative offset of the entry's batch).
    times: Vec<(i64, u32)>,
    /// Bytes appended since the last entry.
    bytes_since_entry: u64,
    /// Largest timestamp seen so far in the segment.
    max_timestamp: i64,
}

impl SegmentIndex {
    pub fn new() -> Self {
        SegmentIndex { max_timestamp: i64::MIN, ..Default::default() }
    }

    /// Records a batch of `len` bytes at `position` whose first offset is `rel_offset` past the
    /// segment base. Adds an entry when `interval` bytes have gone by since the last one.
    pub fn on_batch(&mut self, rel_offset: u32, position: u32, len: u32, batch_max_timestamp: i64, interval: u64) {
        if let Some(&(last_rel, last_pos)) = self.offsets.last() {
            assert!(rel_offset > last_rel && position > last_pos, "index entries must increase");
        }
        if self.bytes_since_entry >= interval {
            self.offsets.push((rel_offset, position));
            self.times.push((self.max_timestamp, rel_offset));
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry = self.bytes_since_entry.saturating_add(u64::from(len));
        self.max_timestamp = self.max_timestamp.max(batch_max_timestamp);
    }

    /// Makes the next batch get an index entry whatever the interval (after a damaged range,
    /// so lookups past it start after it).
    pub fn force_next_entry(&mut self) {
        self.bytes_since_entry = u64::MAX;
    }

    /// Byte position to start scanning from to find relative offset `rel`.
    pub fn position_for(&self, rel: u32) -> u64 {
        match self.offsets.partition_point(|&(r, _)| r <= rel) {
            0 => 0,
            i => u64::from(self.offsets[i - 1].1),
        }
    }

    /// Relative offset of the batch to start scanning from to find the first timestamp `>= ts`.
    pub fn rel_offset_for_timestamp(&self, ts: i64) -> u32 {
        match self.times.partition_point(|&(before, _)| before < ts) {
            0 => 0,
            i => self.times[i - 1].1,
        }
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn entries(&self) -> usize {
        self.offsets.len()
    }

    /// Forgets everything at or after byte `position` (suffix truncation). The time index's
    /// running maximum may then be an over-estimate, which only makes lookups scan a bit more;
    /// callers that need it exact rebuild the index.
    pub fn truncate_to(&mut self, position: u64) {
        let keep = self.offsets.partition_point(|&(_, p)| u64::from(p) < position);
        self.offsets.truncate(keep);
        self.times.truncate(keep);
    }

    /// Encodes `(offset index file, time index file)`, each padded to [`ALIGN`].
    pub fn encode(&self, seal: &SealInfo) -> (Vec<u8>, Vec<u8>) {
        let mut offsets = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_LEN);
        for &(rel, pos) in &self.offsets {
            offsets.extend_from_slice(&rel.to_be_bytes());
            offsets.extend_from_slice(&pos.to_be_bytes());
        }
        let mut times = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN);
        for &(ts, rel) in &self.times {
            times.extend_from_slice(&ts.to_be_bytes());
            times.extend_from_slice(&rel.to_be_bytes());
        }
        (
            encode_file(OFFSET_MAGIC, OFFSET_ENTRY_LEN, self.offsets.len(), seal, &offsets),
            encode_file(TIME_MAGIC, TIME_ENTRY_LEN, self.times.len(), seal, &times),
        )
    }

    /// Decodes both index files and checks they describe the same sealed segment.
    pub fn decode(offset_file: &[u8], time_file: &[u8]) -> Result<(SealInfo, SegmentIndex), IndexFileError> {
        let (seal, offset_bytes) = decode_file(OFFSET_MAGIC, OFFSET_ENTRY_LEN, offset_file)?;
        let (time_seal, time_bytes) = decode_file(TIME_MAGIC, TIME_ENTRY_LEN, time_file)?;
        if seal != time_seal {
            return Err(IndexFileError::Inconsistent("offset and time index describe different segments".into()));
        }
        let offsets: Vec<(u32, u32)> =
            offset_bytes.chunks_exact(OFFSET_ENTRY_LEN).map(|e| (be_u32(&e[0..4]), be_u32(&e[4..8]))).collect();
        let times: Vec<(i64, u32)> =
            time_bytes.chunks_exact(TIME_ENTRY_LEN).map(|e| (be_i64(&e[0..8]), be_u32(&e[8..12]))).collect();
        if offsets.len() != times.len() {
            return Err(IndexFileError::Inconsistent("offset and time index differ in length".into()));
        }
        for (pair, tpair) in offsets.windows(2).zip(times.windows(2)) {
            if pair[1].0 <= pair[0].0 || pair[1].1 <= pair[0].1 || tpair[1].0 < tpair[0].0 {
                return Err(IndexFileError::Inconsistent("entries are not increasing".into()));
            }
        }
        for (&(rel, pos), &(_, trel)) in offsets.iter().zip(&times) {
            if rel != trel {
                return Err(IndexFileError::Inconsistent("time entry points at another batch".into()));
            }
            if u64::from(pos) >= seal.log_size {
                return Err(IndexFileError::PastEnd { position: u64::from(pos), log_size: seal.log_size });
            }
        }
        let index = SegmentIndex { offsets, times, bytes_since_entry: 0, max_timestamp: seal.max_timestamp };
        Ok((seal, index))
    }
}

fn encode_file(magic: u32, entry_len: usize, count: usize, seal: &SealInfo, entries: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(align_up((HEADER_LEN + entries.len()) as u64) as usize);
    out.extend_from_slice(&magic.to_be_bytes());
    out.extend_from_slice(&(entry_len as u32).to_be_bytes());
    out.extend_from_slice(&(count as u64).to_be_bytes());
    out.extend_from_slice(&seal.log_size.to_be_bytes());
    out.extend_from_slice(&seal.next_offset.to_be_bytes());
    out.extend_from_slice(&seal.max_timestamp.to_be_bytes());
    out.extend_from_slice(&seal.last_batch_crc.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN - 4);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), entries);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(entries);
    out.resize(align_up(out.len() as u64) as usize, 0);
    debug_assert_eq!(out.len() % ALIGN, 0);
    out
}

fn decode_file(magic: u32, entry_len: usize, file: &[u8]) -> Result<(SealInfo, &[u8]), IndexFileError> {
    if file.len() < HEADER_LEN {
        return Err(IndexFileError::Truncated { len: file.len(), needed: HEADER_LEN });
    }
    let found = be_u32(&file[0..4]);
    if found != magic || be_u32(&file[4..8]) as usize != entry_len {
        return Err(IndexFileError::BadMagic(found));
    }
    let count = be_u64(&file[8..16]);
    let needed = count
        .checked_mul(entry_len as u64)
        .and_then(|n| n.checked_add(HEADER_LEN as u64))
        .ok_or(IndexFileError::Inconsistent(format!("absurd entry count {count}")))?;
    if needed > file.len() as u64 {
        return Err(IndexFileError::Truncated { len: file.len(), needed: needed as usize });
    }
    let entries = &file[HEADER_LEN..needed as usize];
    let stored = be_u32(&file[44..48]);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&file[..44]), entries);
    if stored != computed {
        return Err(IndexFileError::BadCrc { stored, computed });
    }
    let seal = SealInfo {
        log_size: be_u64(&file[16..24]),
        next_offset: be_u64(&file[24..32]),
        max_timestamp: be_i64(&file[32..40]),
        last_batch_crc: be_u32(&file[40..44]),
    };
    Ok((seal, entries))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}
fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}
fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b.try_into().expect("8 bytes"))
}

impl std::fmt::Display for IndexFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexFileError::Truncated { len, needed } => write!(f, "truncated: {len} bytes, needs {needed}"),
            IndexFileError::BadMagic(m) => write!(f, "bad magic {m:#010x}"),
            IndexFileError::BadCrc { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            IndexFileError::Inconsistent(why) => write!(f, "inconsistent: {why}"),
            IndexFileError::PastEnd { position, log_size } => {
                write!(f, "entry at position {position} is past the end of the log ({log_size} bytes)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SegmentIndex, SealInfo) {
        let mut idx = SegmentIndex::new();
        let mut pos = 0u32;
        for i in 0..100u32 {
            idx.on_batch(i * 3, pos, 1000, 1_000 + i64::from(i), 4096);
            pos += 1000;
        }
        let seal = SealInfo { log_size: u64::from(pos), next_offset: 300, max_timestamp: 1_099, last_batch_crc: 7 };
        (idx, seal)
    }

    #[test]
    fn sparse_entries_every_interval() {
        let (idx, _) = sample();
        // 1000-byte batches, 4096-byte interval: an entry every 5th batch after the first 5.
        assert_eq!(idx.entries(), 19);
        assert_eq!(idx.position_for(0), 0);
        assert_eq!(idx.position_for(14), 0);
        assert_eq!(idx.position_for(15), 5000);
        assert_eq!(idx.position_for(299), 95_000);
    }

    #[test]
    fn time_lookup_never_skips_a_match() {
        let (idx, _) = sample();
        for ts in 995..1_105 {
            let rel = idx.rel_offset_for_timestamp(ts);
            // Batch i (rel 3i) has timestamp 1000+i; the first batch with ts >= T must be at or after rel.
            let first_match = (ts - 1_000).clamp(0, 100) as u32 * 3;
            assert!(rel <= first_match, "ts {ts}: scan starts at {rel}, first match {first_match}");
        }
    }

    #[test]
    fn roundtrip_and_damage_detection() {
        let (idx, seal) = sample();
        let (o, t) = idx.encode(&seal);
        assert_eq!(o.len() % ALIGN, 0);
        let (seal2, idx2) = SegmentIndex::decode(&o, &t).unwrap();
        assert_eq!(seal2, seal);
        assert_eq!(idx2.offsets, idx.offsets);
        assert_eq!(idx2.times, idx.times);

        assert!(matches!(SegmentIndex::decode(&o[..100], &t), Err(IndexFileError::Truncated { .. })));
        assert!(matches!(SegmentIndex::decode(&[], &t), Err(IndexFileError::Truncated { .. })));
        let mut flipped = o.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert!(matches!(SegmentIndex::decode(&flipped, &t), Err(IndexFileError::BadCrc { .. })));
        assert!(matches!(SegmentIndex::decode(&t, &o), Err(IndexFileError::BadMagic(_))));
        // An index whose entries point past the log's end ("index past end").
        let short = SealInfo { log_size: 50_000, ..seal };
        let (o, t) = idx.encode(&short);
        assert!(matches!(SegmentIndex::decode(&o, &t), Err(IndexFileError::PastEnd { .. })));
    }

    #[test]
    fn truncate_drops_entries_at_and_after_position() {
        let (mut idx, _) = sample();
        idx.truncate_to(50_000);
        assert_eq!(idx.position_for(299), 45_000);
    }
}
