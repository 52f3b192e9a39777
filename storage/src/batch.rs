//! Kafka RecordBatch v2 ("magic 2"): Keel's on-disk and on-wire batch format.
//!
//! Keel stores and serves batches exactly as Kafka defines them (see Kafka's
//! `DefaultRecordBatch.java` and `DefaultRecord.java`), so a batch a producer
//! sends can be validated, stamped with its offset and written to a segment
//! as is, and a fetch can send segment bytes back unchanged.
//!
//! # Why zero-copy
//!
//! [`BatchView`] is a validated view over borrowed bytes (a network buffer, a
//! segment page): reading a header field is a fixed-offset big-endian load and
//! iterating [`Records`] hands out sub-slices of the batch for keys, values and
//! headers. Nothing is copied or allocated on the append path except the
//! `Vec` of a record's headers, which stays unallocated when a record has none.
//! Compressed batches are stored and served as sent; their records are read
//! only where the broker must (compaction), through
//! [`BatchView::decompressed_records`], which decompresses into one buffer
//! (bounded, see [`crate::compression`]) and iterates it with the same
//! [`Records`]; for an uncompressed batch that buffer is the batch itself.
//! The only fields the log rewrites on append, the base offset and the
//! partition leader epoch, sit outside the CRC ([`set_base_offset`],
//! [`set_partition_leader_epoch`]), so stamping a batch never recomputes it.
//!
//! # Batch layout (big-endian)
//!
//! | at | size | field                  | notes                                          |
//! |---:|-----:|------------------------|------------------------------------------------|
//! |  0 |    8 | `baseOffset`           | i64, outside the CRC                           |
//! |  8 |    4 | `batchLength`          | i32, total bytes − 12 ([`LOG_OVERHEAD`])       |
//! | 12 |    4 | `partitionLeaderEpoch` | i32, outside the CRC                           |
//! | 16 |    1 | `magic`                | i8, always 2 ([`MAGIC`])                       |
//! | 17 |    4 | `crc`                  | u32, CRC-32C (Castagnoli) of bytes `[21, end)` |
//! | 21 |    2 | `attributes`           | i16, see below                                 |
//! | 23 |    4 | `lastOffsetDelta`      | i32                                            |
//! | 27 |    8 | `baseTimestamp`        | i64                                            |
//! | 35 |    8 | `maxTimestamp`         | i64                                            |
//! | 43 |    8 | `producerId`           | i64                                            |
//! | 51 |    2 | `producerEpoch`        | i16                                            |
//! | 53 |    4 | `baseSequence`         | i32                                            |
//! | 57 |    4 | `recordsCount`         | i32                                            |
//! | 61 |    … | records                | compressed as a whole if a codec is set        |
//!
//! Attributes: bits 0–2 compression codec (0 none, 1 gzip, 2 snappy, 3 lz4,
//! 4 zstd), bit 3 timestamp type (1 = LogAppendTime), bit 4 transactional,
//! bit 5 control, bit 6 delete horizon (`baseTimestamp` is then the delete
//! horizon); the other bits are unused.
//!
//! # Record layout
//!
//! "varint"/"varlong" are zigzag-encoded base-128 integers (protobuf
//! `sint32`/`sint64`); a length of −1 means null.
//!
//! | field            | type                                                   |
//! |------------------|--------------------------------------------------------|
//! | `length`         | varint: bytes of the record after this field           |
//! | `attributes`     | i8 (unused by Kafka, always 0)                         |
//! | `timestampDelta` | varlong, relative to `baseTimestamp`                   |
//! | `offsetDelta`    | varint, relative to `baseOffset`                       |
//! | `keyLength`      | varint (−1 = null), then the key bytes                 |
//! | `valueLength`    | varint (−1 = null), then the value bytes               |
//! | `headersCount`   | varint                                                 |
//! | each header      | keyLength varint, key, valueLength varint (−1 = null), value |
//!
//! # Untrusted input
//!
//! Every decoding function here takes bytes from the network or a disk that
//! may be corrupt: none of them panics, every index is checked and every
//! length is checked before it is used.  Decoding is slightly stricter than
//! Kafka's Java reader where Kafka silently accepts nonsense: lengths below −1
//! and varints whose value does not fit in 32 (64) bits are rejected, and an
//! uncompressed batch (or a compressed one's decompressed records) must not
//! hold bytes after its last record even when `recordsCount` is 0.

use std::{borrow::Cow, fmt};

use crate::compression::{self, MAX_DECOMPRESSED_RECORDS};

/// The only batch format version Keel reads and writes.
pub const MAGIC: i8 = 2;
/// Size of the fixed batch header, up to and including `recordsCount`.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the bytes not counted by `batchLength`,
/// so a batch's total length is `batchLength + LOG_OVERHEAD`.
pub const LOG_OVERHEAD: usize = 12;

/// Attribute bits 0–2: the compression codec.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are LogAppendTime (`maxTimestamp`) rather than CreateTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: the batch holds a control record (transaction marker).
pub const ATTR_CONTROL: i16 = 0x20;
/// Attribute bit 6: `baseTimestamp` holds the delete horizon set by compaction.
pub const ATTR_DELETE_HORIZON: i16 = 0x40;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from here to the end of the batch.
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// Smallest valid `batchLength`: a header with no records.
const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;

/// Why a batch could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the batch does; `needed` is the total number of
    /// bytes needed from the start of the batch (only [`HEADER_LEN`] while the
    /// header itself is incomplete, since the length is not known yet).
    Incomplete { needed: usize },
    /// The bytes are not a valid batch (corrupt, truncated inside a record, …).
    Invalid(String),
    /// A valid batch that this code does not handle (e.g. compressed records).
    Unsupported(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { needed } => {
                write!(f, "incomplete record batch: {needed} bytes needed")
            }
            DecodeError::Invalid(msg) => write!(f, "invalid record batch: {msg}"),
            DecodeError::Unsupported(msg) => write!(f, "unsupported record batch: {msg}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

/// Compression codec of a batch's records (attribute bits 0–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Kafka's name for the codec (`compression.type`).
    pub fn name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec's id in attribute bits 0–2.
    pub fn attribute_bits(&self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec named by a batch's attributes, `None` for the unassigned ids 5–7.
    fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & ATTR_COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[inline]
fn read_array<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    // `at` is always one of the constant field offsets above, all of which
    // end within the header, so this slice is in bounds.
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// A validated view over exactly one batch's bytes. It never copies: it is two
/// references into the caller's buffer, and accessors read the header in place.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    /// The whole batch, exactly `total_len` bytes (at least [`HEADER_LEN`]).
    bytes: &'a [u8],
    /// The first [`HEADER_LEN`] bytes of `bytes`, as an array so that field
    /// reads need no run-time bounds checks.
    header: &'a [u8; HEADER_LEN],
}

impl fmt::Debug for BatchView<'_> {
    // Not derived: the derived form would dump every byte of the batch.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchView")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("total_len", &self.total_len())
            .field("partition_leader_epoch", &self.partition_leader_epoch())
            .field("crc", &format_args!("{:#010x}", self.crc()))
            .field("attributes", &format_args!("{:#06x}", self.attributes()))
            .field("base_timestamp", &self.base_timestamp())
            .field("max_timestamp", &self.max_timestamp())
            .field("producer_id", &self.producer_id())
            .field("producer_epoch", &self.producer_epoch())
            .field("base_sequence", &self.base_sequence())
            .field("records_count", &self.records_count())
            .finish()
    }
}

impl<'a> BatchView<'a> {
    /// Total on-disk length of the batch starting at `buf` (`batchLength + 12`),
    /// if at least 12 bytes are there. No validation: this is for framing a
    /// stream (how many bytes to read next), `None` if fewer than 12 bytes are
    /// present or `batchLength` is negative.
    pub fn peek_total_len(buf: &[u8]) -> Option<usize> {
        let len = buf.get(BATCH_LENGTH_AT..LOG_OVERHEAD)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        usize::try_from(len).ok()?.checked_add(LOG_OVERHEAD)
    }

    /// Parses and fully validates the batch at the start of `buf` (`buf` may
    /// hold more after it), in this order:
    /// header present (else `Incomplete { needed: HEADER_LEN }`);
    /// `batchLength >= 49` (else `Invalid`); whole batch present (else
    /// `Incomplete { needed: total }`); `magic == 2`; CRC matches (the message
    /// shows both CRCs); codec 0..=4; `lastOffsetDelta >= 0`;
    /// `recordsCount >= 0`; and if uncompressed, `recordsCount` is at most the
    /// number of record bytes (every record takes at least one byte).
    ///
    /// The records themselves are checked lazily by [`BatchView::records`].
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        Self::parse_impl(buf, true)
    }

    /// [`BatchView::parse`] without the CRC check: for reading header fields of
    /// a batch already known good (e.g. re-reading a segment after recovery
    /// verified it), or for diagnosing a corrupt batch.
    pub fn parse_unchecked_crc(buf: &'a [u8]) -> Result<Self, DecodeError> {
        Self::parse_impl(buf, false)
    }

    fn parse_impl(buf: &'a [u8], verify_crc: bool) -> Result<Self, DecodeError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::Incomplete { needed: HEADER_LEN });
        };
        let batch_length = i32::from_be_bytes(read_array(header, BATCH_LENGTH_AT));
        if batch_length < MIN_BATCH_LENGTH {
            return Err(invalid(format!(
                "batchLength {batch_length} is smaller than the header's {MIN_BATCH_LENGTH} bytes"
            )));
        }
        let total = usize::try_from(batch_length)
            .ok()
            .and_then(|len| len.checked_add(LOG_OVERHEAD))
            .ok_or_else(|| invalid(format!("batchLength {batch_length} does not fit in memory")))?;
        let Some(bytes) = buf.get(..total) else {
            return Err(DecodeError::Incomplete { needed: total });
        };
        let view = BatchView { bytes, header };

        if view.magic() != MAGIC {
            return Err(invalid(format!("magic {} is not {MAGIC} (only RecordBatch v2 is supported)", view.magic())));
        }
        if verify_crc {
            let (stored, computed) = (view.crc(), view.computed_crc());
            if stored != computed {
                return Err(invalid(format!("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")));
            }
        }
        let Some(compression) = Compression::from_attributes(view.attributes()) else {
            return Err(invalid(format!(
                "unknown compression codec {} in attributes {:#06x}",
                view.attributes() & ATTR_COMPRESSION_MASK,
                view.attributes()
            )));
        };
        if view.last_offset_delta() < 0 {
            return Err(invalid(format!("negative lastOffsetDelta {}", view.last_offset_delta())));
        }
        let count = view.records_count();
        let Ok(count) = usize::try_from(count) else {
            return Err(invalid(format!("negative recordsCount {count}")));
        };
        let record_bytes = total - HEADER_LEN; // total >= HEADER_LEN: batchLength >= 49
        if compression == Compression::None && count > record_bytes {
            return Err(invalid(format!("recordsCount {count} exceeds the {record_bytes} bytes of records")));
        }
        Ok(view)
    }

    /// What a producer's batch must also hold, beyond [`BatchView::parse`]'s framing and CRC,
    /// before a broker takes it (Kafka's broker checks the same): at least one record, and
    /// `lastOffsetDelta` = `recordsCount` − 1, since that is how many offsets the batch takes.
    /// An uncompressed batch's records must also decode, fill the batch exactly and number
    /// their offset deltas 0, 1, 2, …; a compressed one is stored as sent, not decompressed.
    /// (Compaction may leave stored batches with gaps: this is for batches as produced.)
    pub fn check_as_produced(&self) -> Result<(), DecodeError> {
        let count = self.records_count();
        if count < 1 {
            return Err(invalid("a produced batch holds no records (recordsCount 0)".to_string()));
        }
        if self.last_offset_delta() != count - 1 {
            return Err(invalid(format!(
                "lastOffsetDelta {} does not match recordsCount {count} (it must be recordsCount - 1)",
                self.last_offset_delta()
            )));
        }
        if self.compression() == Compression::None {
            for (index, record) in self.records()?.enumerate() {
                let record = record?;
                if i64::from(record.offset_delta) != index as i64 {
                    return Err(invalid(format!("record {index} has offset delta {}", record.offset_delta)));
                }
            }
        }
        Ok(())
    }

    /// The batch's bytes, exactly [`BatchView::total_len`] of them.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Total length of the batch: `batchLength + 12`.
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the batch's first record (assigned by the log on append).
    pub fn base_offset(&self) -> i64 {
        i64::from_be_bytes(read_array(self.header, BASE_OFFSET_AT))
    }

    /// Bytes after the `batchLength` field.
    pub fn batch_length(&self) -> i32 {
        i32::from_be_bytes(read_array(self.header, BATCH_LENGTH_AT))
    }

    /// Leader epoch of the broker that appended the batch (−1 from producers).
    pub fn partition_leader_epoch(&self) -> i32 {
        i32::from_be_bytes(read_array(self.header, PARTITION_LEADER_EPOCH_AT))
    }

    /// Format version; always [`MAGIC`] for a parsed view.
    pub fn magic(&self) -> i8 {
        i8::from_be_bytes(read_array(self.header, MAGIC_AT))
    }

    /// The CRC stored in the batch.
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(read_array(self.header, CRC_AT))
    }

    /// CRC-32C of bytes `[21, end)`, which must equal [`BatchView::crc`].
    pub fn computed_crc(&self) -> u32 {
        // A view always holds at least HEADER_LEN bytes, so this is in bounds.
        crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..])
    }

    /// Raw attribute bits (see the module docs and the `ATTR_*` constants).
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(read_array(self.header, ATTRIBUTES_AT))
    }

    /// Codec of the records (validated by `parse`, so always a known one).
    pub fn compression(&self) -> Compression {
        // Both parse functions reject codecs 5–7, so the fallback is never used.
        Compression::from_attributes(self.attributes()).unwrap_or(Compression::None)
    }

    /// Timestamp type is LogAppendTime: every record's timestamp is then
    /// [`BatchView::max_timestamp`], whatever its delta says.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTR_LOG_APPEND_TIME != 0
    }

    /// The batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }

    /// The batch holds a control record (commit/abort marker).
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }

    /// Compaction has set a delete horizon, stored in `baseTimestamp`.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & ATTR_DELETE_HORIZON != 0
    }

    /// The batch's last offset relative to its base offset (never negative
    /// in a parsed view). Compaction keeps it even if the last record is gone.
    pub fn last_offset_delta(&self) -> i32 {
        i32::from_be_bytes(read_array(self.header, LAST_OFFSET_DELTA_AT))
    }

    /// `base_offset + last_offset_delta`. Saturates at `i64::MAX` rather than
    /// wrapping, so that `last_offset() >= base_offset()` holds for any input.
    pub fn last_offset(&self) -> i64 {
        self.base_offset().saturating_add(i64::from(self.last_offset_delta()))
    }

    /// Timestamp of the first record (or the delete horizon, see
    /// [`BatchView::has_delete_horizon`]); record timestamps are deltas from it.
    pub fn base_timestamp(&self) -> i64 {
        i64::from_be_bytes(read_array(self.header, BASE_TIMESTAMP_AT))
    }

    /// Largest record timestamp, or the broker's append time for LogAppendTime.
    pub fn max_timestamp(&self) -> i64 {
        i64::from_be_bytes(read_array(self.header, MAX_TIMESTAMP_AT))
    }

    /// Idempotent/transactional producer id (−1 if none).
    pub fn producer_id(&self) -> i64 {
        i64::from_be_bytes(read_array(self.header, PRODUCER_ID_AT))
    }

    /// Producer epoch (−1 if none).
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes(read_array(self.header, PRODUCER_EPOCH_AT))
    }

    /// Sequence number of the first record (−1 if none).
    pub fn base_sequence(&self) -> i32 {
        i32::from_be_bytes(read_array(self.header, BASE_SEQUENCE_AT))
    }

    /// Number of records (never negative in a parsed view).
    pub fn records_count(&self) -> i32 {
        i32::from_be_bytes(read_array(self.header, RECORDS_COUNT_AT))
    }

    /// Iterates the records, decoding each lazily, without copying.
    /// Uncompressed batches only: a compressed batch gives `Err(Unsupported)`
    /// naming the codec; use [`BatchView::decompressed_records`] to read it.
    pub fn records(&self) -> Result<Records<'a>, DecodeError> {
        let compression = self.compression();
        if compression != Compression::None {
            return Err(DecodeError::Unsupported(format!(
                "the records of a {} compressed batch need decompressed_records()",
                compression.name()
            )));
        }
        Ok(Records::new(&self.bytes[HEADER_LEN..], self.records_count()))
    }

    /// The records section of any batch, decompressed if the batch is
    /// compressed (borrowed, not copied, if it is not), at most
    /// [`MAX_DECOMPRESSED_RECORDS`] bytes. Iterate it with [`RecordsSection::records`].
    pub fn decompressed_records(&self) -> Result<RecordsSection<'a>, DecodeError> {
        self.decompressed_records_limited(MAX_DECOMPRESSED_RECORDS)
    }

    /// [`BatchView::decompressed_records`] with the bound on the decompressed
    /// size given. A section over `limit` bytes, or a `recordsCount` that
    /// could not fit in `limit` bytes, is `Err(Unsupported)` and is refused
    /// before more than `limit + 1` bytes are held; a corrupt or truncated
    /// stream, or fewer decompressed bytes than `recordsCount`, is `Err(Invalid)`.
    /// The limit does not apply to an uncompressed batch (nothing is allocated).
    pub fn decompressed_records_limited(&self, limit: usize) -> Result<RecordsSection<'a>, DecodeError> {
        let codec = self.compression();
        let count = self.records_count();
        let section = &self.bytes[HEADER_LEN..];
        if codec == Compression::None {
            return Ok(RecordsSection { bytes: Cow::Borrowed(section), count });
        }
        // Every record takes at least one byte: a count this large is a bomb announced up front.
        let expected = usize::try_from(count).unwrap_or(0);
        if expected > limit {
            return Err(DecodeError::Unsupported(format!(
                "recordsCount {count} cannot fit in the limit of {limit} decompressed bytes"
            )));
        }
        let bytes = compression::decompress(codec, section, limit)?;
        if expected > bytes.len() {
            return Err(invalid(format!(
                "recordsCount {count} exceeds the {} bytes of {codec} decompressed records",
                bytes.len()
            )));
        }
        Ok(RecordsSection { bytes: Cow::Owned(bytes), count })
    }
}

/// A batch's records section ready to iterate: borrowed from an uncompressed
/// batch, or owned after decompression ([`BatchView::decompressed_records`]).
#[derive(Debug, Clone)]
pub struct RecordsSection<'a> {
    bytes: Cow<'a, [u8]>,
    count: i32,
}

impl RecordsSection<'_> {
    /// Iterates the records, borrowing keys, values and headers from this section.
    pub fn records(&self) -> Records<'_> {
        Records::new(&self.bytes, self.count)
    }

    /// The (decompressed) records bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether decompression produced these bytes (false: they are the batch's own).
    pub fn is_decompressed(&self) -> bool {
        matches!(self.bytes, Cow::Owned(_))
    }
}

/// Overwrites `baseOffset`, which the log assigns on append. It is outside the
/// CRC, so the batch stays valid. Panics if `batch.len() < HEADER_LEN`
/// (a programmer error: only call this on a batch that parsed).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(batch.len() >= HEADER_LEN, "set_base_offset on a {}-byte buffer, shorter than a batch header", batch.len());
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// `batch` (uncompressed, as [`BatchBuilder`] or a client writes it) re-encoded with its records
/// section compressed by `codec`: the codec bits, `batchLength` and the CRC follow; every other
/// header field stays. Panics if `batch` is not an uncompressed batch (a programmer error).
pub fn compressed(batch: &[u8], codec: Compression) -> Vec<u8> {
    let view = BatchView::parse_unchecked_crc(batch).expect("compressed: not a record batch");
    assert_eq!(view.compression(), Compression::None, "compressed: the batch is compressed already");
    let records = compression::compress(codec, &batch[HEADER_LEN..view.total_len()]);
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&records);
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).expect("compressed: batch larger than i32::MAX bytes");
    out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = view.attributes() | codec.attribute_bits();
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Overwrites `partitionLeaderEpoch`, which the leader stamps on append. It is
/// outside the CRC, so the batch stays valid. Panics if `batch.len() < HEADER_LEN`.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(
        batch.len() >= HEADER_LEN,
        "set_partition_leader_epoch on a {}-byte buffer, shorter than a batch header",
        batch.len()
    );
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// One record, borrowing its key, value and headers from the batch bytes (or
/// from the decompressed section of a compressed batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Record attributes (unused by Kafka; 0 in batches Keel builds).
    pub attributes: i8,
    /// Timestamp relative to the batch's `baseTimestamp` (may be negative).
    pub timestamp_delta: i64,
    /// Offset relative to the batch's `baseOffset`.
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

impl Record<'_> {
    /// Absolute offset given the batch's base offset. Saturates like
    /// [`BatchView::last_offset`] instead of wrapping on absurd input.
    pub fn offset(&self, base_offset: i64) -> i64 {
        base_offset.saturating_add(i64::from(self.offset_delta))
    }

    /// Absolute CreateTime timestamp given the batch's base timestamp. Wraps on
    /// overflow like Kafka's Java `long` arithmetic, which makes it the exact
    /// inverse of the delta [`BatchBuilder`] writes. For a LogAppendTime batch
    /// the record's timestamp is the batch's `max_timestamp` instead.
    pub fn timestamp(&self, base_timestamp: i64) -> i64 {
        base_timestamp.wrapping_add(self.timestamp_delta)
    }
}

/// A record header. Its key cannot be null; its value can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Iterator over a batch's records ([`BatchView::records`], [`RecordsSection::records`]).
///
/// Yields exactly `recordsCount` records. A malformed record yields one
/// `Err(Invalid)` and ends the iteration; so does a batch whose bytes run out
/// before `recordsCount` records, or that has bytes left after the last one
/// (that error comes after the last record).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    expected: usize,
    read: usize,
    done: bool,
}

impl<'a> Records<'a> {
    fn new(rest: &'a [u8], count: i32) -> Self {
        // Parsed views have a non-negative count.
        Records { rest, expected: usize::try_from(count).unwrap_or(0), read: 0, done: false }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.read >= self.expected {
            self.done = true;
            if self.rest.is_empty() {
                return None;
            }
            return Some(Err(invalid(format!(
                "{} bytes left after the last of {} records",
                self.rest.len(),
                self.expected
            ))));
        }
        if self.rest.is_empty() {
            self.done = true;
            return Some(Err(invalid(format!("batch ends after {} of its {} records", self.read, self.expected))));
        }
        let mut reader = Reader { buf: self.rest };
        match decode_record(&mut reader) {
            Ok(record) => {
                self.rest = reader.buf;
                self.read += 1;
                Some(Ok(record))
            }
            Err(msg) => {
                self.done = true;
                Some(Err(invalid(format!("record {}: {msg}", self.read))))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            // Possibly one more item: the error for trailing bytes.
            let left = self.expected.saturating_sub(self.read);
            (0, left.checked_add(1))
        }
    }
}

impl std::iter::FusedIterator for Records<'_> {}

/// Bounds-checked cursor over untrusted bytes. Errors are plain strings; the
/// caller adds which record they belong to.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// Unsigned base-128 integer of at most `max_bytes` bytes, whose last byte
    /// may not exceed `last_max` (the bits that still fit in the target type).
    /// Non-minimal encodings are accepted, as Kafka does.
    fn uvarint(&mut self, what: &str, max_bytes: u32, last_max: u8) -> Result<u64, String> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let Some(b) = self.byte() else {
                return Err(format!("{what}: truncated varint"));
            };
            if i + 1 == max_bytes && b > last_max {
                return Err(format!("{what}: varint too long or out of range"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        // Unreachable: the last byte is <= last_max < 0x80, so it ends the loop.
        Err(format!("{what}: varint too long"))
    }

    /// Zigzag varint (Kafka `Varint`): at most 5 bytes, 32 bits.
    fn varint(&mut self, what: &str) -> Result<i32, String> {
        let v = self.uvarint(what, 5, 0x0f)?;
        let v = u32::try_from(v).map_err(|_| format!("{what}: varint out of range"))?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// Zigzag varlong (Kafka `Varlong`): at most 10 bytes, 64 bits.
    fn varlong(&mut self, what: &str) -> Result<i64, String> {
        let v = self.uvarint(what, 10, 0x01)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A varint length (−1 = null) followed by that many bytes.
    fn nullable_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, String> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| format!("{what}: invalid length {len}"))?;
        let left = self.buf.len();
        self.take(n)
            .map(Some)
            .ok_or_else(|| format!("{what}: length {len} exceeds the {left} bytes left in the record"))
    }
}

fn decode_record<'a>(input: &mut Reader<'a>) -> Result<Record<'a>, String> {
    let len = input.varint("length")?;
    let n = usize::try_from(len).map_err(|_| format!("negative length {len}"))?;
    let left = input.buf.len();
    let body = input.take(n).ok_or_else(|| format!("length {len} exceeds the {left} bytes left in the batch"))?;
    let mut r = Reader { buf: body };
    let attributes = r.byte().ok_or_else(|| "record body is empty (no attributes)".to_string())?.to_be_bytes();
    let attributes = i8::from_be_bytes(attributes);
    let timestamp_delta = r.varlong("timestampDelta")?;
    let offset_delta = r.varint("offsetDelta")?;
    let key = r.nullable_bytes("key")?;
    let value = r.nullable_bytes("value")?;
    let count = r.varint("headersCount")?;
    let count = usize::try_from(count).map_err(|_| format!("negative headersCount {count}"))?;
    // Each header takes at least 2 bytes (two length varints); checking this
    // first keeps a corrupt count from driving a huge allocation or loop.
    if count > r.buf.len() / 2 {
        return Err(format!("headersCount {count} does not fit in the {} bytes left in the record", r.buf.len()));
    }
    let mut headers = Vec::with_capacity(count);
    for h in 0..count {
        let key_len = r.varint("header key length")?;
        let n = usize::try_from(key_len)
            .map_err(|_| format!("header {h}: invalid key length {key_len} (keys cannot be null)"))?;
        let left = r.buf.len();
        let key = r
            .take(n)
            .ok_or_else(|| format!("header {h}: key length {key_len} exceeds the {left} bytes left in the record"))?;
        let value = r.nullable_bytes("header value")?;
        headers.push(Header { key, value });
    }
    if !r.buf.is_empty() {
        return Err(format!("{} bytes left in the record body after its headers (length says {len})", r.buf.len()));
    }
    Ok(Record { attributes, timestamp_delta, offset_delta, key, value, headers })
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Writes a length as a varint; lengths come from the caller, so an
/// over-long one is a programmer error.
fn put_len(out: &mut Vec<u8>, len: usize, what: &str) {
    let len = i32::try_from(len).unwrap_or_else(|_| panic!("{what} of {len} bytes is too long"));
    put_varint(out, len);
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>, what: &str) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_len(out, b.len(), what);
            out.extend_from_slice(b);
        }
    }
}

/// A record as given to the builder, kept until [`BatchBuilder::build`]
/// because the base timestamp its delta is taken from can still change.
#[derive(Debug, Clone)]
struct PendingRecord {
    offset_delta: i32,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Builds batches, uncompressed or compressed ([`BatchBuilder::compression`]),
/// for tests, clients, tools and compaction. It copies every key and value, so
/// it is not meant for the append hot path (the log appends the producer's
/// bytes as they are).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    compression: Compression,
    last_offset_delta: Option<i32>,
    base_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    records: Vec<PendingRecord>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// Defaults: base offset 0, partition leader epoch −1, producer id −1,
    /// producer epoch −1, base sequence −1, attributes 0 (CreateTime, not
    /// transactional), no records.
    pub fn new() -> Self {
        BatchBuilder {
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            compression: Compression::None,
            last_offset_delta: None,
            base_timestamp: None,
            max_timestamp: None,
            records: Vec::new(),
        }
    }

    /// Sets `baseOffset`.
    pub fn base_offset(mut self, base: i64) -> Self {
        self.base_offset = base;
        self
    }

    /// Sets `partitionLeaderEpoch`.
    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets the idempotent producer fields.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Attribute bits other than compression (timestamp type, transactional,
    /// control, delete horizon; see the `ATTR_*` constants). Panics if
    /// compression bits are set: the codec is set by [`BatchBuilder::compression`].
    pub fn attributes(mut self, attributes: i16) -> Self {
        assert!(
            attributes & ATTR_COMPRESSION_MASK == 0,
            "BatchBuilder::attributes({attributes:#06x}): compression bits set; use BatchBuilder::compression"
        );
        self.attributes = attributes;
        self
    }

    /// Compresses the records section with `codec` at [`BatchBuilder::build`]
    /// and sets the codec's attribute bits; the CRC then covers the compressed
    /// bytes, as in Kafka. Default: [`Compression::None`].
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// Forces `lastOffsetDelta`: compaction keeps a batch's original offset
    /// range even when its last record was removed. Must be >= the largest
    /// record offset delta (checked by [`BatchBuilder::build`]); panics if negative.
    pub fn last_offset_delta(mut self, delta: i32) -> Self {
        assert!(delta >= 0, "BatchBuilder::last_offset_delta({delta}): negative");
        self.last_offset_delta = Some(delta);
        self
    }

    /// Forces `baseTimestamp` (compaction keeps the original, or stores the
    /// delete horizon there). Default: timestamp of the first record (0 if empty).
    pub fn base_timestamp(mut self, ts: i64) -> Self {
        self.base_timestamp = Some(ts);
        self
    }

    /// Forces `maxTimestamp`. Default: the largest record timestamp (or the
    /// base timestamp if empty). Needed to rebuild a LogAppendTime batch, whose
    /// maxTimestamp is the broker's append time, and an emptied batch, which
    /// Kafka's compaction leaves with its previous maxTimestamp.
    pub fn max_timestamp(mut self, ts: i64) -> Self {
        self.max_timestamp = Some(ts);
        self
    }

    /// Appends a record at the next offset delta (0 for the first, then the
    /// previous one + 1).
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> &mut Self {
        let delta = match self.records.last() {
            None => 0,
            Some(last) => last.offset_delta.checked_add(1).expect("BatchBuilder::push: offset delta overflows i32"),
        };
        self.push_with_delta(delta, timestamp, key, value, headers)
    }

    /// Appends a record with an explicit offset delta, which must be greater
    /// than the previous record's, and not negative for the first record
    /// (panics otherwise): offsets within a batch only ever go up.
    pub fn push_with_delta(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> &mut Self {
        match self.records.last() {
            None => assert!(offset_delta >= 0, "BatchBuilder::push_with_delta: negative offset delta {offset_delta}"),
            Some(last) => assert!(
                offset_delta > last.offset_delta,
                "BatchBuilder::push_with_delta: offset delta {offset_delta} is not greater than the previous {}",
                last.offset_delta
            ),
        }
        self.records.push(PendingRecord {
            offset_delta,
            timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: headers.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect(),
        });
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records pushed yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encodes the batch: `maxTimestamp` = forced, else the largest record
    /// timestamp (or `baseTimestamp` if empty); `lastOffsetDelta` = forced,
    /// else the last record's delta (0 if empty); `recordsCount`; records
    /// compressed with the codec set (even when there are none, as Kafka
    /// does); CRC. All varints are minimally encoded, as Kafka writes them.
    ///
    /// Panics if a forced `lastOffsetDelta` is below the last record's delta,
    /// or if the batch exceeds `i32::MAX` bytes.
    pub fn build(&self) -> Vec<u8> {
        let base_timestamp = self.base_timestamp.unwrap_or_else(|| self.records.first().map_or(0, |r| r.timestamp));
        let max_timestamp = self
            .max_timestamp
            .unwrap_or_else(|| self.records.iter().map(|r| r.timestamp).max().unwrap_or(base_timestamp));
        let last_record_delta = self.records.last().map(|r| r.offset_delta);
        let last_offset_delta = match (self.last_offset_delta, last_record_delta) {
            (Some(forced), Some(last)) => {
                assert!(
                    forced >= last,
                    "BatchBuilder: forced lastOffsetDelta {forced} is below the last record's offset delta {last}"
                );
                forced
            }
            (Some(forced), None) => forced,
            (None, last) => last.unwrap_or(0),
        };
        let count = i32::try_from(self.records.len()).expect("BatchBuilder: too many records");

        let mut out = vec![0u8; HEADER_LEN];
        // Uncompressed records go straight after the header; compressed ones are gathered first.
        let mut plain = Vec::new();
        let section = if self.compression == Compression::None { &mut out } else { &mut plain };
        let mut body = Vec::new();
        for r in &self.records {
            body.clear();
            body.push(0); // record attributes: unused
            put_varlong(&mut body, r.timestamp.wrapping_sub(base_timestamp));
            put_varint(&mut body, r.offset_delta);
            put_nullable(&mut body, r.key.as_deref(), "key");
            put_nullable(&mut body, r.value.as_deref(), "value");
            put_len(&mut body, r.headers.len(), "header list");
            for (k, v) in &r.headers {
                put_len(&mut body, k.len(), "header key");
                body.extend_from_slice(k);
                put_nullable(&mut body, v.as_deref(), "header value");
            }
            put_len(section, body.len(), "record");
            section.extend_from_slice(&body);
        }
        if self.compression != Compression::None {
            out.extend_from_slice(&compression::compress(self.compression, &plain));
        }
        let attributes = self.attributes | self.compression.attribute_bits();
        let batch_length =
            i32::try_from(out.len() - LOG_OVERHEAD).expect("BatchBuilder: batch larger than i32::MAX bytes");

        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(BASE_OFFSET_AT, &self.base_offset.to_be_bytes());
        put(BATCH_LENGTH_AT, &batch_length.to_be_bytes());
        put(PARTITION_LEADER_EPOCH_AT, &self.partition_leader_epoch.to_be_bytes());
        put(MAGIC_AT, &MAGIC.to_be_bytes());
        put(ATTRIBUTES_AT, &attributes.to_be_bytes());
        put(LAST_OFFSET_DELTA_AT, &last_offset_delta.to_be_bytes());
        put(BASE_TIMESTAMP_AT, &base_timestamp.to_be_bytes());
        put(MAX_TIMESTAMP_AT, &max_timestamp.to_be_bytes());
        put(PRODUCER_ID_AT, &self.producer_id.to_be_bytes());
        put(PRODUCER_EPOCH_AT, &self.producer_epoch.to_be_bytes());
        put(BASE_SEQUENCE_AT, &self.base_sequence.to_be_bytes());
        put(RECORDS_COUNT_AT, &count.to_be_bytes());
        let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// The body of the `batch_decode` fuzz target (`fuzz/fuzz_targets/batch_decode.rs`),
/// kept here so that the unit tests run it too. Panics when an invariant of
/// the decoder or the builder does not hold for `data`; never otherwise.
///
/// Checks: parsing never panics; `Incomplete` asks for more than was given; a
/// parsed batch lies within the input and `last_offset >= base_offset`; its
/// records (decompressed, within [`FUZZ_DECOMPRESS_LIMIT`]) iterate to the
/// end; and a batch rebuilt with [`BatchBuilder`] (same codec) from the parsed
/// fields and records parses to the same fields and records.
///
/// Byte equality of the rebuilt batch with the input cannot be asserted in
/// general: the decoder accepts (as Kafka does) non-minimal varints such as
/// `80 00` for 0, which the builder re-encodes minimally. For an uncompressed batch it does hold when
/// the rebuilt batch has the same length: every rebuilt varint is at most as
/// long as the one it replaces, so equal lengths mean every input varint was
/// minimal, and minimal encodings are unique. Record attributes (which the
/// builder always writes as 0) and batches the builder refuses (record offset
/// deltas not increasing, or above lastOffsetDelta) are skipped.
///
/// Almost every mutation of a batch breaks its CRC, which would keep a fuzzer
/// away from the record decoder, so when `data` holds the whole batch its
/// header claims, the checks also run on a copy with the CRC fixed.
/// Decompression bound of [`fuzz_check_decode`], small so that fuzzing stays fast.
#[doc(hidden)]
pub const FUZZ_DECOMPRESS_LIMIT: usize = 1 << 20;

#[doc(hidden)]
pub fn fuzz_check_decode(data: &[u8]) {
    check_decode_invariants(data);
    if let Some(total) = BatchView::peek_total_len(data) {
        if (HEADER_LEN..=data.len()).contains(&total) {
            let mut sealed = data.to_vec();
            let crc = crc32c::crc32c(&sealed[ATTRIBUTES_AT..total]);
            sealed[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            check_decode_invariants(&sealed);
        }
    }
}

fn check_decode_invariants(data: &[u8]) {
    let peeked = BatchView::peek_total_len(data);
    let unchecked = BatchView::parse_unchecked_crc(data);
    let view = match BatchView::parse(data) {
        Ok(view) => view,
        Err(e) => {
            if let DecodeError::Incomplete { needed } = e {
                assert!(needed > data.len(), "Incomplete asks for {needed} of {} bytes", data.len());
            }
            let _ = e.to_string();
            return;
        }
    };
    let unchecked = unchecked.expect("parse_unchecked_crc must accept what parse accepts");
    assert_eq!(unchecked.as_bytes(), view.as_bytes());
    assert_eq!(peeked, Some(view.total_len()));
    assert!(view.total_len() <= data.len());
    assert_eq!(view.as_bytes().len(), view.total_len());
    assert_eq!(view.as_bytes(), &data[..view.total_len()]);
    assert!(view.total_len() >= HEADER_LEN);
    assert!(view.last_offset() >= view.base_offset());
    assert_eq!(view.crc(), view.computed_crc());
    assert_eq!(view.magic(), MAGIC);
    let _ = format!("{view:?}");

    let compressed = view.compression() != Compression::None;
    match view.records() {
        Ok(_) => assert!(!compressed, "records() must refuse a compressed batch"),
        Err(e) => assert!(compressed && matches!(e, DecodeError::Unsupported(_)), "{e}"),
    }
    let section = match view.decompressed_records_limited(FUZZ_DECOMPRESS_LIMIT) {
        Ok(section) => section,
        Err(e) => {
            assert!(compressed, "an uncompressed batch's section is always there: {e}");
            assert!(!matches!(e, DecodeError::Incomplete { .. }), "{e}");
            return;
        }
    };
    assert_eq!(section.is_decompressed(), compressed);
    assert!(section.as_bytes().len() <= FUZZ_DECOMPRESS_LIMIT || !compressed);
    let iter = section.records();
    let expected = usize::try_from(view.records_count()).expect("parsed count is >= 0");
    let mut records = Vec::new();
    let mut items = 0usize;
    let mut failed = false;
    for item in iter {
        items += 1;
        assert!(items <= expected + 1, "iterator yields more than recordsCount + 1 items");
        match item {
            Ok(record) => {
                assert!(!failed, "a record after an error");
                records.push(record);
            }
            Err(e) => {
                assert!(matches!(e, DecodeError::Invalid(_)));
                failed = true;
            }
        }
    }
    if failed {
        return;
    }
    assert_eq!(records.len(), expected);

    // Rebuild only what BatchBuilder can express.
    let deltas_ok = records.first().is_none_or(|r| r.offset_delta >= 0)
        && records.windows(2).all(|w| w[0].offset_delta < w[1].offset_delta)
        && records.last().is_none_or(|r| r.offset_delta <= view.last_offset_delta());
    if !deltas_ok {
        return;
    }
    let mut builder = BatchBuilder::new()
        .base_offset(view.base_offset())
        .partition_leader_epoch(view.partition_leader_epoch())
        .producer(view.producer_id(), view.producer_epoch(), view.base_sequence())
        .attributes(view.attributes() & !ATTR_COMPRESSION_MASK)
        .compression(view.compression())
        .last_offset_delta(view.last_offset_delta())
        .base_timestamp(view.base_timestamp())
        .max_timestamp(view.max_timestamp());
    for r in &records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r.headers.iter().map(|h| (h.key, h.value)).collect();
        builder.push_with_delta(r.offset_delta, r.timestamp(view.base_timestamp()), r.key, r.value, &headers);
    }
    let rebuilt = builder.build();
    let again = BatchView::parse(&rebuilt).expect("a rebuilt batch must parse");
    assert_eq!(again.total_len(), rebuilt.len());
    // Compressed sizes depend on the compressor, not on the varints.
    assert!(compressed || rebuilt.len() <= view.total_len(), "minimal encoding made the batch longer");
    assert_eq!(again.base_offset(), view.base_offset());
    assert_eq!(again.partition_leader_epoch(), view.partition_leader_epoch());
    assert_eq!(again.attributes(), view.attributes());
    assert_eq!(again.last_offset_delta(), view.last_offset_delta());
    assert_eq!(again.base_timestamp(), view.base_timestamp());
    assert_eq!(again.max_timestamp(), view.max_timestamp());
    assert_eq!(again.producer_id(), view.producer_id());
    assert_eq!(again.producer_epoch(), view.producer_epoch());
    assert_eq!(again.base_sequence(), view.base_sequence());
    assert_eq!(again.records_count(), view.records_count());
    let again_section = again.decompressed_records().expect("a rebuilt batch must decompress");
    assert!(again_section.as_bytes().len() <= section.as_bytes().len(), "minimal encoding made the records longer");
    let again_records: Vec<Record<'_>> =
        again_section.records().collect::<Result<_, _>>().expect("rebuilt records must decode");
    assert_eq!(again_records.len(), records.len());
    for (a, b) in again_records.iter().zip(&records) {
        assert_eq!(a.attributes, 0);
        let b_without_attrs = Record { attributes: 0, ..b.clone() };
        assert_eq!(a, &b_without_attrs);
    }
    if !compressed && records.iter().all(|r| r.attributes == 0) && rebuilt.len() == view.total_len() {
        assert_eq!(rebuilt.as_slice(), view.as_bytes(), "same length but different bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `batch` with its CRC recomputed, so only the checks after the CRC's can refuse it.
    fn with_fresh_crc(mut batch: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn produced_batches_must_hold_the_offsets_they_claim() {
        let check = |batch: &[u8]| BatchView::parse(batch).unwrap().check_as_produced();
        let mut three = BatchBuilder::new();
        for i in 0..3u8 {
            three.push(1_700_000_000_000, Some(&[i]), Some(b"value"), &[]);
        }
        let good = three.build();
        assert!(check(&good).is_ok());
        assert!(check(&compressed(&good, Compression::Lz4)).is_ok());
        // The Kafka-written golden batches pass too.
        assert!(check(&KAFKA_BATCH_1).is_ok());

        let empty = BatchBuilder::new().build();
        assert!(check(&empty).unwrap_err().to_string().contains("no records"));
        let claims_more = three.clone().last_offset_delta(5).build();
        assert!(check(&claims_more).unwrap_err().to_string().contains("lastOffsetDelta 5"));
        assert!(check(&compressed(&claims_more, Compression::Gzip)).is_err(), "compressed: the header still counts");

        // recordsCount 4 over 3 records (the CRC recomputed): the records run out.
        let mut count_4 = three.clone().last_offset_delta(3).build();
        count_4[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&4i32.to_be_bytes());
        let count_4 = with_fresh_crc(count_4);
        assert!(check(&count_4).unwrap_err().to_string().contains("ends after 3 of its 4 records"));

        // The second record's offset delta (its third byte: length, attributes, timestamp delta
        // 0, offset delta) made 0 again: lastOffsetDelta and recordsCount still agree.
        let mut repeated = good.clone();
        let first_len = usize::from(repeated[HEADER_LEN] / 2) + 1; // one-byte zigzag length
        let second = HEADER_LEN + first_len;
        assert_eq!(repeated[second + 3], 2, "offset delta 1, zigzag");
        repeated[second + 3] = 0;
        let repeated = with_fresh_crc(repeated);
        assert!(check(&repeated).unwrap_err().to_string().contains("record 1 has offset delta 0"));
    }

    // ---------------------------------------------------------------
    // Golden vectors
    // ---------------------------------------------------------------

    // Real batches written by an Apache Kafka 0.11 broker (the fourth by a
    // later broker, with a header), from kafka-python
    // `test/record/test_records.py` (`record_batch_data_v2`,
    // github.com/dpkp/kafka-python), converted from Python byte literals.
    // Their CRCs were checked independently with a bitwise CRC-32C.

    /// kafka-python batch 1: offset 0, leader epoch 1, one record, value "123".
    const KAFKA_BATCH_1: [u8; 71] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // baseOffset 0
        0x00, 0x00, 0x00, 0x3b, // batchLength 59
        0x00, 0x00, 0x00, 0x01, // partitionLeaderEpoch 1
        0x02, // magic
        0x03, 0x18, 0xa2, 0x70, // crc
        0x00, 0x00, // attributes
        0x00, 0x00, 0x00, 0x00, // lastOffsetDelta 0
        0x00, 0x00, 0x01, 0x5d, 0xff, 0x7b, 0x06, 0x3c, // baseTimestamp 1503229838908
        0x00, 0x00, 0x01, 0x5d, 0xff, 0x7b, 0x06, 0x3c, // maxTimestamp 1503229838908
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId -1
        0xff, 0xff, // producerEpoch -1
        0xff, 0xff, 0xff, 0xff, // baseSequence -1
        0x00, 0x00, 0x00, 0x01, // recordsCount 1
        0x12, // record length 9
        0x00, 0x00, 0x00, // attributes, timestampDelta 0, offsetDelta 0
        0x01, // key null
        0x06, 0x31, 0x32, 0x33, // value "123"
        0x00, // no headers
    ];

    /// kafka-python batch 2: offset 1, leader epoch 2, two records with a null
    /// key and an empty value, the second 168 ms after the first.
    const KAFKA_BATCH_2: [u8; 76] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // baseOffset 1
        0x00, 0x00, 0x00, 0x40, // batchLength 64
        0x00, 0x00, 0x00, 0x02, // partitionLeaderEpoch 2
        0x02, // magic
        0xc8, 0x5c, 0xbd, 0x23, // crc
        0x00, 0x00, // attributes
        0x00, 0x00, 0x00, 0x01, // lastOffsetDelta 1
        0x00, 0x00, 0x01, 0x5d, 0xff, 0x7c, 0xdd, 0x6c, // baseTimestamp 1503229959532
        0x00, 0x00, 0x01, 0x5d, 0xff, 0x7c, 0xde, 0x14, // maxTimestamp 1503229959700
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId -1
        0xff, 0xff, // producerEpoch -1
        0xff, 0xff, 0xff, 0xff, // baseSequence -1
        0x00, 0x00, 0x00, 0x02, // recordsCount 2
        // record: len 6, attrs, ts +0, off 0, key null, value "", 0 headers
        0x0c, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        // record: len 7, attrs, ts +168 (d0 02), off 1, key null, value "", 0 headers
        0x0e, 0x00, 0xd0, 0x02, 0x02, 0x01, 0x00, 0x00,
    ];

    /// kafka-python batch 3: offset 3, leader epoch 2, value "123".
    const KAFKA_BATCH_3: [u8; 71] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, // baseOffset 3
        0x00, 0x00, 0x00, 0x3b, // batchLength 59
        0x00, 0x00, 0x00, 0x02, // partitionLeaderEpoch 2
        0x02, // magic
        0x2e, 0x0b, 0x85, 0xb7, // crc
        0x00, 0x00, // attributes
        0x00, 0x00, 0x00, 0x00, // lastOffsetDelta 0
        0x00, 0x00, 0x01, 0x5d, 0xff, 0x7c, 0xe7, 0x9d, // baseTimestamp 1503229962141
        0x00, 0x00, 0x01, 0x5d, 0xff, 0x7c, 0xe7, 0x9d, // maxTimestamp
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId -1
        0xff, 0xff, // producerEpoch -1
        0xff, 0xff, 0xff, 0xff, // baseSequence -1
        0x00, 0x00, 0x00, 0x01, // recordsCount 1
        0x12, 0x00, 0x00, 0x00, 0x01, 0x06, 0x31, 0x32, 0x33, 0x00,
    ];

    /// kafka-python batch 4: value "hdr" with header hkey=hval, leader epoch 0.
    const KAFKA_BATCH_4: [u8; 81] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // baseOffset 0
        0x00, 0x00, 0x00, 0x45, // batchLength 69
        0x00, 0x00, 0x00, 0x00, // partitionLeaderEpoch 0
        0x02, // magic
        0x5c, 0xd8, 0xef, 0x52, // crc
        0x00, 0x00, // attributes
        0x00, 0x00, 0x00, 0x00, // lastOffsetDelta 0
        0x00, 0x00, 0x01, 0x65, 0x85, 0xb6, 0xf3, 0xc1, // baseTimestamp 1535546684353
        0x00, 0x00, 0x01, 0x65, 0x85, 0xb6, 0xf3, 0xc1, // maxTimestamp
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId -1
        0xff, 0xff, // producerEpoch -1
        0xff, 0xff, 0xff, 0xff, // baseSequence -1
        0x00, 0x00, 0x00, 0x01, // recordsCount 1
        0x26, 0x00, 0x00, 0x00, 0x01, // len 19, attrs, ts, off, key null
        0x06, 0x68, 0x64, 0x72, // value "hdr"
        0x02, // 1 header
        0x08, 0x68, 0x6b, 0x65, 0x79, // "hkey"
        0x08, 0x68, 0x76, 0x61, 0x6c, // "hval"
    ];

    // Batches encoded by Sarama (Go client), from IBM/sarama `record_test.go`
    // (`recordBatchTestCases`), where they are both its encoder's expected
    // output and its decoder's input.

    /// Sarama "uncompressed record": key 01020304, value 050607, header
    /// 08090a=0b0c, timestamp delta 5 ms, producer fields 0 and maxTimestamp 0.
    const SARAMA_UNCOMPRESSED: [u8; 82] = [
        0, 0, 0, 0, 0, 0, 0, 0, // First Offset
        0, 0, 0, 70, // Length
        0, 0, 0, 0, // Partition Leader Epoch
        2, // Version
        84, 121, 97, 253, // CRC
        0, 0, // Attributes
        0, 0, 0, 0, // Last Offset Delta
        0, 0, 1, 88, 141, 205, 89, 56, // First Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Max Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Producer ID
        0, 0, // Producer Epoch
        0, 0, 0, 0, // First Sequence
        0, 0, 0, 1,  // Number of Records
        40, // Record Length
        0,  // Attributes
        10, // Timestamp Delta
        0,  // Offset Delta
        8,  // Key Length
        1, 2, 3, 4, //
        6, // Value Length
        5, 6, 7, //
        2, // Number of Headers
        6, // Header Key Length
        8, 9, 10, // Header Key
        4,  // Header Value Length
        11, 12, // Header Value
    ];

    /// Sarama "empty record": no records, every field 0.
    const SARAMA_EMPTY: [u8; 61] = [
        0, 0, 0, 0, 0, 0, 0, 0, // First Offset
        0, 0, 0, 49, // Length
        0, 0, 0, 0, // Partition Leader Epoch
        2, // Version
        89, 95, 183, 221, // CRC
        0, 0, // Attributes
        0, 0, 0, 0, // Last Offset Delta
        0, 0, 0, 0, 0, 0, 0, 0, // First Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Max Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Producer ID
        0, 0, // Producer Epoch
        0, 0, 0, 0, // First Sequence
        0, 0, 0, 0, // Number of Records
    ];

    /// Sarama "control batch": as `SARAMA_EMPTY` with the control attribute.
    const SARAMA_CONTROL: [u8; 61] = [
        0, 0, 0, 0, 0, 0, 0, 0, // First Offset
        0, 0, 0, 49, // Length
        0, 0, 0, 0, // Partition Leader Epoch
        2, // Version
        81, 46, 67, 217, // CRC
        0, 32, // Attributes
        0, 0, 0, 0, // Last Offset Delta
        0, 0, 0, 0, 0, 0, 0, 0, // First Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Max Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Producer ID
        0, 0, // Producer Epoch
        0, 0, 0, 0, // First Sequence
        0, 0, 0, 0, // Number of Records
    ];

    /// Sarama "gzipped record": the record of `SARAMA_UNCOMPRESSED`, gzipped.
    const SARAMA_GZIP: [u8; 107] = [
        0, 0, 0, 0, 0, 0, 0, 0, // First Offset
        0, 0, 0, 95, // Length
        0, 0, 0, 0, // Partition Leader Epoch
        2, // Version
        231, 74, 206, 165, // CRC
        0, 1, // Attributes
        0, 0, 0, 0, // Last Offset Delta
        0, 0, 1, 88, 141, 205, 89, 56, // First Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Max Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Producer ID
        0, 0, // Producer Epoch
        0, 0, 0, 0, // First Sequence
        0, 0, 0, 1, // Number of Records
        31, 139, 8, 0, 0, 9, 110, 136, 0, 255, 0, 21, 0, 234, 255, 40, 0, 10, 0, 8, 1, 2, //
        3, 4, 6, 5, 6, 7, 2, 6, 8, 9, 10, 4, 11, 12, 3, 0, 173, 201, 88, 103, 21, 0, 0, 0,
    ];

    /// Sarama "lz4 compressed record".
    const SARAMA_LZ4: [u8; 101] = [
        0, 0, 0, 0, 0, 0, 0, 0, // First Offset
        0, 0, 0, 89, // Length
        0, 0, 0, 0, // Partition Leader Epoch
        2, // Version
        169, 74, 119, 197, // CRC
        0, 3, // Attributes
        0, 0, 0, 0, // Last Offset Delta
        0, 0, 1, 88, 141, 205, 89, 56, // First Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Max Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Producer ID
        0, 0, // Producer Epoch
        0, 0, 0, 0, // First Sequence
        0, 0, 0, 1, // Number of Records
        4, 34, 77, 24, 100, 112, 185, 21, 0, 0, 128, 40, 0, 10, 0, 8, 1, 2, 3, 4, 6, 5, 6, 7, 2, 6, 8, 9, 10, 4, 11,
        12, 0, 0, 0, 0, 12, 59, 239, 146,
    ];

    /// Sarama "snappy compressed record": a bare raw snappy block, no xerial framing.
    const SARAMA_SNAPPY: [u8; 84] = [
        0, 0, 0, 0, 0, 0, 0, 0, // First Offset
        0, 0, 0, 72, // Length
        0, 0, 0, 0, // Partition Leader Epoch
        2, // Version
        21, 0, 159, 97, // CRC
        0, 2, // Attributes
        0, 0, 0, 0, // Last Offset Delta
        0, 0, 1, 88, 141, 205, 89, 56, // First Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Max Timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // Producer ID
        0, 0, // Producer Epoch
        0, 0, 0, 0, // First Sequence
        0, 0, 0, 1, // Number of Records
        21, 80, 40, 0, 10, 0, 8, 1, 2, 3, 4, 6, 5, 6, 7, 2, 6, 8, 9, 10, 4, 11, 12,
    ];

    fn collect_records<'a>(view: &BatchView<'a>) -> Result<Vec<Record<'a>>, DecodeError> {
        view.records()?.collect()
    }

    /// Re-seals a hand-edited batch: batchLength from its size, then the CRC,
    /// so that a test reaches the check it targets.
    fn reseal(batch: &mut [u8]) {
        let len = i32::try_from(batch.len() - LOG_OVERHEAD).unwrap();
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    fn rec<'a>(
        offset_delta: i32,
        timestamp_delta: i64,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        headers: Vec<Header<'a>>,
    ) -> Record<'a> {
        Record { attributes: 0, timestamp_delta, offset_delta, key, value, headers }
    }

    #[test]
    fn golden_kafka_batch_1() {
        let v = BatchView::parse(&KAFKA_BATCH_1).unwrap();
        assert_eq!(v.total_len(), 71);
        assert_eq!(v.as_bytes(), &KAFKA_BATCH_1[..]);
        assert_eq!(v.base_offset(), 0);
        assert_eq!(v.batch_length(), 59);
        assert_eq!(v.partition_leader_epoch(), 1);
        assert_eq!(v.magic(), 2);
        assert_eq!(v.crc(), 0x0318_a270);
        assert_eq!(v.computed_crc(), 0x0318_a270);
        assert_eq!(v.attributes(), 0);
        assert_eq!(v.compression(), Compression::None);
        assert!(!v.is_log_append_time() && !v.is_transactional() && !v.is_control());
        assert!(!v.has_delete_horizon());
        assert_eq!(v.last_offset_delta(), 0);
        assert_eq!(v.last_offset(), 0);
        assert_eq!(v.base_timestamp(), 1_503_229_838_908);
        assert_eq!(v.max_timestamp(), 1_503_229_838_908);
        assert_eq!(v.producer_id(), -1);
        assert_eq!(v.producer_epoch(), -1);
        assert_eq!(v.base_sequence(), -1);
        assert_eq!(v.records_count(), 1);
        let records = collect_records(&v).unwrap();
        assert_eq!(records, vec![rec(0, 0, None, Some(b"123"), vec![])]);
        assert_eq!(records[0].offset(v.base_offset()), 0);
        assert_eq!(records[0].timestamp(v.base_timestamp()), 1_503_229_838_908);

        let mut b = BatchBuilder::new().partition_leader_epoch(1);
        b.push(1_503_229_838_908, None, Some(b"123"), &[]);
        assert_eq!(b.build(), KAFKA_BATCH_1);
    }

    #[test]
    fn golden_kafka_batch_2() {
        let v = BatchView::parse(&KAFKA_BATCH_2).unwrap();
        assert_eq!(v.total_len(), 76);
        assert_eq!(v.base_offset(), 1);
        assert_eq!(v.batch_length(), 64);
        assert_eq!(v.partition_leader_epoch(), 2);
        assert_eq!(v.crc(), 0xc85c_bd23);
        assert_eq!(v.attributes(), 0);
        assert_eq!(v.last_offset_delta(), 1);
        assert_eq!(v.last_offset(), 2);
        assert_eq!(v.base_timestamp(), 1_503_229_959_532);
        assert_eq!(v.max_timestamp(), 1_503_229_959_700);
        assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence()), (-1, -1, -1));
        assert_eq!(v.records_count(), 2);
        let records = collect_records(&v).unwrap();
        assert_eq!(records, vec![rec(0, 0, None, Some(b""), vec![]), rec(1, 168, None, Some(b""), vec![])]);
        assert_eq!(records[1].offset(v.base_offset()), 2);
        assert_eq!(records[1].timestamp(v.base_timestamp()), 1_503_229_959_700);

        let mut b = BatchBuilder::new().base_offset(1).partition_leader_epoch(2);
        b.push(1_503_229_959_532, None, Some(b""), &[]);
        b.push(1_503_229_959_700, None, Some(b""), &[]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.build(), KAFKA_BATCH_2);
    }

    #[test]
    fn golden_kafka_batch_3() {
        let v = BatchView::parse(&KAFKA_BATCH_3).unwrap();
        assert_eq!(v.base_offset(), 3);
        assert_eq!(v.last_offset(), 3);
        assert_eq!(v.partition_leader_epoch(), 2);
        assert_eq!(v.crc(), 0x2e0b_85b7);
        assert_eq!(v.base_timestamp(), 1_503_229_962_141);
        assert_eq!(v.max_timestamp(), 1_503_229_962_141);
        let records = collect_records(&v).unwrap();
        assert_eq!(records, vec![rec(0, 0, None, Some(b"123"), vec![])]);
        assert_eq!(records[0].offset(v.base_offset()), 3);

        let mut b = BatchBuilder::new().base_offset(3).partition_leader_epoch(2);
        b.push(1_503_229_962_141, None, Some(b"123"), &[]);
        assert_eq!(b.build(), KAFKA_BATCH_3);
    }

    #[test]
    fn golden_kafka_batch_4_with_header() {
        let v = BatchView::parse(&KAFKA_BATCH_4).unwrap();
        assert_eq!(v.total_len(), 81);
        assert_eq!(v.batch_length(), 69);
        assert_eq!(v.base_offset(), 0);
        assert_eq!(v.partition_leader_epoch(), 0);
        assert_eq!(v.crc(), 0x5cd8_ef52);
        assert_eq!(v.base_timestamp(), 1_535_546_684_353);
        assert_eq!(v.max_timestamp(), 1_535_546_684_353);
        assert_eq!(v.records_count(), 1);
        let records = collect_records(&v).unwrap();
        let header = Header { key: b"hkey", value: Some(b"hval") };
        assert_eq!(records, vec![rec(0, 0, None, Some(b"hdr"), vec![header])]);

        let mut b = BatchBuilder::new().partition_leader_epoch(0);
        b.push(1_535_546_684_353, None, Some(b"hdr"), &[(b"hkey", Some(b"hval"))]);
        assert_eq!(b.build(), KAFKA_BATCH_4);
    }

    #[test]
    fn golden_kafka_batches_concatenated_like_a_segment() {
        // kafka-python's test joins the batches and appends 4 zero bytes: a
        // partial batch at the end of a log, as recovery finds it.
        let mut log = Vec::new();
        for b in [&KAFKA_BATCH_1[..], &KAFKA_BATCH_2, &KAFKA_BATCH_3, &KAFKA_BATCH_4] {
            log.extend_from_slice(b);
        }
        log.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(log.len(), 303);
        let mut pos = 0;
        let mut offsets = Vec::new();
        loop {
            match BatchView::parse(&log[pos..]) {
                Ok(v) => {
                    assert_eq!(BatchView::peek_total_len(&log[pos..]), Some(v.total_len()));
                    offsets.push((v.base_offset(), v.last_offset()));
                    pos += v.total_len();
                }
                Err(e) => {
                    assert_eq!(e, DecodeError::Incomplete { needed: HEADER_LEN });
                    break;
                }
            }
        }
        assert_eq!(pos, 299);
        assert_eq!(offsets, vec![(0, 0), (1, 2), (3, 3), (0, 0)]);
        assert_eq!(BatchView::peek_total_len(&log[pos..]), None);
    }

    #[test]
    fn golden_sarama_uncompressed() {
        let v = BatchView::parse(&SARAMA_UNCOMPRESSED).unwrap();
        assert_eq!(v.total_len(), 82);
        assert_eq!(v.batch_length(), 70);
        assert_eq!(v.base_offset(), 0);
        assert_eq!(v.partition_leader_epoch(), 0);
        assert_eq!(v.crc(), u32::from_be_bytes([84, 121, 97, 253]));
        assert_eq!(v.attributes(), 0);
        assert_eq!(v.last_offset_delta(), 0);
        assert_eq!(v.base_timestamp(), 1_479_847_795_000);
        assert_eq!(v.max_timestamp(), 0);
        assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence()), (0, 0, 0));
        assert_eq!(v.records_count(), 1);
        let records = collect_records(&v).unwrap();
        let header = Header { key: &[8, 9, 10], value: Some(&[11, 12]) };
        assert_eq!(records, vec![rec(0, 5, Some(&[1, 2, 3, 4]), Some(&[5, 6, 7]), vec![header])]);
        assert_eq!(records[0].timestamp(v.base_timestamp()), 1_479_847_795_005);

        // Sarama leaves maxTimestamp at 0, so it has to be forced.
        let mut b = BatchBuilder::new().partition_leader_epoch(0).producer(0, 0, 0).max_timestamp(0);
        b.push(1_479_847_795_005, Some(&[1, 2, 3, 4]), Some(&[5, 6, 7]), &[(&[8, 9, 10], Some(&[11, 12]))]);
        // Its base timestamp is 5 ms before the only record's.
        let b = b.base_timestamp(1_479_847_795_000);
        assert_eq!(b.build(), SARAMA_UNCOMPRESSED);
    }

    #[test]
    fn golden_sarama_empty_and_control() {
        for (bytes, control) in [(&SARAMA_EMPTY, false), (&SARAMA_CONTROL, true)] {
            let v = BatchView::parse(bytes).unwrap();
            assert_eq!(v.total_len(), HEADER_LEN);
            assert_eq!(v.batch_length(), 49);
            assert_eq!(v.is_control(), control);
            assert_eq!(v.attributes(), if control { 0x20 } else { 0 });
            assert_eq!(v.records_count(), 0);
            assert_eq!((v.base_timestamp(), v.max_timestamp()), (0, 0));
            assert!(collect_records(&v).unwrap().is_empty());
            let attrs = if control { ATTR_CONTROL } else { 0 };
            let b = BatchBuilder::new().partition_leader_epoch(0).producer(0, 0, 0).attributes(attrs);
            assert!(b.is_empty());
            assert_eq!(&b.build()[..], &bytes[..]);
        }
    }

    /// Sarama's gzip (Go's compress/gzip), lz4 (pierrec/lz4: 4 MiB blocks, content checksum) and
    /// raw snappy batches decompress to exactly the records section of its uncompressed batch.
    #[test]
    fn golden_sarama_compressed_records_decompress() {
        let plain = BatchView::parse(&SARAMA_UNCOMPRESSED).unwrap();
        let plain_section = plain.decompressed_records().unwrap();
        assert!(!plain_section.is_decompressed());
        assert_eq!(plain_section.as_bytes(), &SARAMA_UNCOMPRESSED[HEADER_LEN..]);
        let expected = collect_records(&plain).unwrap();
        assert_eq!(expected.len(), 1);
        for (bytes, codec, name) in [
            (&SARAMA_GZIP[..], Compression::Gzip, "gzip"),
            (&SARAMA_SNAPPY[..], Compression::Snappy, "snappy"),
            (&SARAMA_LZ4[..], Compression::Lz4, "lz4"),
        ] {
            let v = BatchView::parse(bytes).unwrap();
            assert_eq!(v.compression(), codec);
            assert_eq!(codec.name(), name);
            assert_eq!(v.records_count(), 1);
            assert_eq!(v.base_timestamp(), 1_479_847_795_000);
            match v.records() {
                Err(DecodeError::Unsupported(msg)) => assert!(msg.contains(name), "{msg}"),
                other => panic!("expected Unsupported, got {other:?}"),
            }
            let section = v.decompressed_records().unwrap();
            assert!(section.is_decompressed());
            assert_eq!(section.as_bytes(), plain_section.as_bytes(), "{name}");
            let records: Vec<Record<'_>> = section.records().collect::<Result<_, _>>().unwrap();
            assert_eq!(records, expected, "{name}");
            fuzz_check_decode(bytes);
        }
    }

    fn sample_builder() -> BatchBuilder {
        let mut b = BatchBuilder::new()
            .base_offset(1000)
            .partition_leader_epoch(4)
            .producer(12, 3, 40)
            .attributes(ATTR_TRANSACTIONAL)
            .last_offset_delta(9);
        b.push_with_delta(0, 5_000, Some(b"key-a"), Some(b"value a"), &[(b"h1", Some(b"x")), (b"h2", None)]);
        b.push_with_delta(1, 5_003, Some(b"key-b"), None, &[]);
        b.push_with_delta(4, 4_990, None, Some(&[7u8; 3000]), &[(b"only", Some(b""))]);
        b.push_with_delta(9, 5_010, Some(b""), Some(b""), &[]);
        b
    }

    #[test]
    fn builder_compresses_and_records_round_trip_for_every_codec() {
        let plain_bytes = sample_builder().build();
        let plain = BatchView::parse(&plain_bytes).unwrap();
        let expected = collect_records(&plain).unwrap();
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let bytes = sample_builder().compression(codec).build();
            let v = BatchView::parse(&bytes).expect("CRC covers the compressed bytes");
            assert_eq!(v.compression(), codec);
            assert_eq!(v.attributes(), ATTR_TRANSACTIONAL | codec.attribute_bits());
            assert_eq!(usize::try_from(v.batch_length()).unwrap() + LOG_OVERHEAD, bytes.len());
            assert!(bytes.len() < plain_bytes.len(), "{codec}: the 3000-byte value compresses");
            // Every header field but attributes, length and CRC is the uncompressed batch's.
            assert_eq!(bytes[..8], plain_bytes[..8]);
            assert_eq!(bytes[12..17], plain_bytes[12..17]);
            assert_eq!(bytes[23..HEADER_LEN], plain_bytes[23..HEADER_LEN]);
            assert_ne!(&bytes[HEADER_LEN..], &plain_bytes[HEADER_LEN..]);
            assert_eq!(
                compression::decompress(codec, &bytes[HEADER_LEN..], 1 << 20).unwrap(),
                &plain_bytes[HEADER_LEN..]
            );
            let section = v.decompressed_records().unwrap();
            assert_eq!(section.as_bytes(), &plain_bytes[HEADER_LEN..], "{codec}");
            let records: Vec<Record<'_>> = section.records().collect::<Result<_, _>>().unwrap();
            assert_eq!(records, expected, "{codec}");
            assert_eq!(records[1].value, None);
            assert_eq!(records[2].key, None);
            assert_eq!(records[0].headers[1], Header { key: b"h2", value: None });
            fuzz_check_decode(&bytes);
            // Compressing a built batch afterwards gives the builder's bytes exactly.
            assert_eq!(compressed(&plain_bytes, codec), bytes, "{codec}");
        }
    }

    #[test]
    fn empty_compressed_batch_round_trips() {
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let bytes = BatchBuilder::new().compression(codec).build();
            let v = BatchView::parse(&bytes).unwrap();
            assert_eq!(v.compression(), codec);
            assert!(bytes.len() > HEADER_LEN, "{codec}: an empty stream still has a header");
            assert_eq!(v.decompressed_records().unwrap().records().count(), 0);
        }
    }

    #[test]
    fn compressed_batch_errors_are_values() {
        let good = sample_builder().compression(Compression::Lz4).build();
        // Truncated payload, re-sealed so that parse accepts it.
        let mut cut = good[..good.len() - 10].to_vec();
        reseal(&mut cut);
        let v = BatchView::parse(&cut).unwrap();
        assert!(matches!(v.decompressed_records(), Err(DecodeError::Invalid(msg)) if msg.contains("lz4")));
        // Garbage payload.
        let mut junk = good[..HEADER_LEN].to_vec();
        junk.extend_from_slice(b"garbage, not an lz4 frame");
        reseal(&mut junk);
        assert!(matches!(BatchView::parse(&junk).unwrap().decompressed_records(), Err(DecodeError::Invalid(_))));
        // A count larger than the decompressed bytes could hold.
        let mut big_count = good.clone();
        big_count[RECORDS_COUNT_AT..HEADER_LEN].copy_from_slice(&1_000_000i32.to_be_bytes());
        reseal(&mut big_count);
        let v = BatchView::parse(&big_count).unwrap();
        assert!(matches!(v.decompressed_records(), Err(DecodeError::Invalid(msg)) if msg.contains("recordsCount")));
        // A count above the limit is refused before decompressing.
        assert!(matches!(v.decompressed_records_limited(1000), Err(DecodeError::Unsupported(_))));
        // Fewer records than the count: the iterator reports it, as for uncompressed batches.
        let mut more = good.clone();
        more[RECORDS_COUNT_AT..HEADER_LEN].copy_from_slice(&5i32.to_be_bytes());
        reseal(&mut more);
        let section = BatchView::parse(&more).unwrap().decompressed_records().unwrap();
        assert!(section.records().last().unwrap().is_err());
    }

    #[test]
    fn compressed_bomb_in_a_batch_is_refused() {
        let mut b = BatchBuilder::new().compression(Compression::Zstd);
        b.push(0, None, Some(&[0u8; 200_000]), &[]);
        let bytes = b.build();
        let v = BatchView::parse(&bytes).unwrap();
        assert!(bytes.len() < 1000);
        assert!(matches!(v.decompressed_records_limited(100_000), Err(DecodeError::Unsupported(_))));
        assert_eq!(v.decompressed_records().unwrap().records().count(), 1);
    }

    #[test]
    fn golden_vectors_pass_the_fuzz_check() {
        for bytes in [
            &KAFKA_BATCH_1[..],
            &KAFKA_BATCH_2,
            &KAFKA_BATCH_3,
            &KAFKA_BATCH_4,
            &SARAMA_UNCOMPRESSED,
            &SARAMA_EMPTY,
            &SARAMA_CONTROL,
            &SARAMA_GZIP,
            &SARAMA_SNAPPY,
            &SARAMA_LZ4,
        ] {
            fuzz_check_decode(bytes);
        }
    }

    // ---------------------------------------------------------------
    // Builder
    // ---------------------------------------------------------------

    #[test]
    fn builder_defaults_and_empty_batch() {
        let bytes = BatchBuilder::default().build();
        let v = BatchView::parse(&bytes).unwrap();
        assert_eq!(v.total_len(), HEADER_LEN);
        assert_eq!(v.base_offset(), 0);
        assert_eq!(v.partition_leader_epoch(), -1);
        assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence()), (-1, -1, -1));
        assert_eq!(v.attributes(), 0);
        assert_eq!(v.last_offset_delta(), 0);
        assert_eq!((v.base_timestamp(), v.max_timestamp()), (0, 0));
        assert_eq!(v.records_count(), 0);
        assert_eq!(collect_records(&v).unwrap(), vec![]);
    }

    #[test]
    fn builder_fields_and_forced_values() {
        let mut b = BatchBuilder::new()
            .base_offset(1000)
            .partition_leader_epoch(7)
            .producer(42, 3, 99)
            .attributes(ATTR_TRANSACTIONAL | ATTR_LOG_APPEND_TIME | ATTR_DELETE_HORIZON)
            .last_offset_delta(10)
            .base_timestamp(500);
        b.push_with_delta(2, 400, Some(b"k"), None, &[(b"h", None)]).push(700, None, Some(b"v"), &[]);
        let bytes = b.build();
        let v = BatchView::parse(&bytes).unwrap();
        assert_eq!(v.base_offset(), 1000);
        assert_eq!(v.partition_leader_epoch(), 7);
        assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence()), (42, 3, 99));
        assert!(v.is_transactional() && v.is_log_append_time() && v.has_delete_horizon());
        assert!(!v.is_control());
        assert_eq!(v.last_offset_delta(), 10);
        assert_eq!(v.last_offset(), 1010);
        assert_eq!(v.base_timestamp(), 500);
        assert_eq!(v.max_timestamp(), 700);
        let records = collect_records(&v).unwrap();
        assert_eq!(
            records,
            vec![
                rec(2, -100, Some(b"k"), None, vec![Header { key: b"h", value: None }]),
                rec(3, 200, None, Some(b"v"), vec![]),
            ]
        );
        assert_eq!(records[1].offset(v.base_offset()), 1003);
        assert_eq!(records[0].timestamp(v.base_timestamp()), 400);
    }

    #[test]
    fn builder_empty_with_forced_fields() {
        // An emptied batch as compaction keeps it: original offsets and timestamps.
        let bytes =
            BatchBuilder::new().base_offset(50).last_offset_delta(4).base_timestamp(123).max_timestamp(456).build();
        let v = BatchView::parse(&bytes).unwrap();
        assert_eq!((v.base_offset(), v.last_offset()), (50, 54));
        assert_eq!((v.base_timestamp(), v.max_timestamp()), (123, 456));
        assert_eq!(v.records_count(), 0);
    }

    #[test]
    #[should_panic(expected = "compression bits")]
    fn builder_rejects_compression_attributes() {
        let _ = BatchBuilder::new().attributes(1);
    }

    #[test]
    #[should_panic(expected = "not greater")]
    fn builder_rejects_non_increasing_delta() {
        let mut b = BatchBuilder::new();
        b.push_with_delta(5, 0, None, None, &[]);
        b.push_with_delta(5, 0, None, None, &[]);
    }

    #[test]
    #[should_panic(expected = "negative offset delta")]
    fn builder_rejects_negative_first_delta() {
        BatchBuilder::new().push_with_delta(-1, 0, None, None, &[]);
    }

    #[test]
    #[should_panic(expected = "below the last record")]
    fn builder_rejects_forced_last_offset_delta_below_records() {
        let mut b = BatchBuilder::new().last_offset_delta(1);
        b.push(0, None, None, &[]).push(0, None, None, &[]).push(0, None, None, &[]);
        let _ = b.build();
    }

    #[test]
    fn set_base_offset_and_epoch_keep_crc_valid() {
        let mut bytes = KAFKA_BATCH_2.to_vec();
        set_base_offset(&mut bytes, 123_456_789);
        set_partition_leader_epoch(&mut bytes, 42);
        let v = BatchView::parse(&bytes).unwrap();
        assert_eq!(v.base_offset(), 123_456_789);
        assert_eq!(v.last_offset(), 123_456_790);
        assert_eq!(v.partition_leader_epoch(), 42);
        assert_eq!(v.crc(), 0xc85c_bd23);
    }

    #[test]
    #[should_panic(expected = "shorter than a batch header")]
    fn set_base_offset_panics_on_short_buffer() {
        set_base_offset(&mut [0u8; 60], 1);
    }

    #[test]
    #[should_panic(expected = "shorter than a batch header")]
    fn set_partition_leader_epoch_panics_on_short_buffer() {
        set_partition_leader_epoch(&mut [0u8; 12], 1);
    }

    #[test]
    fn offsets_and_timestamps_do_not_overflow() {
        let mut bytes = BatchBuilder::new().last_offset_delta(5).build();
        set_base_offset(&mut bytes, i64::MAX - 1);
        let v = BatchView::parse(&bytes).unwrap();
        assert_eq!(v.last_offset(), i64::MAX);
        let r = rec(3, i64::MAX, None, None, vec![]);
        assert_eq!(r.offset(i64::MAX - 1), i64::MAX);
        assert_eq!(r.timestamp(1), i64::MIN);
        // The builder's delta is the exact inverse.
        let mut b = BatchBuilder::new().base_timestamp(i64::MAX);
        b.push(i64::MIN, None, None, &[]);
        let bytes = b.build();
        let v = BatchView::parse(&bytes).unwrap();
        let r = &collect_records(&v).unwrap()[0];
        assert_eq!(r.timestamp(v.base_timestamp()), i64::MIN);
    }

    // ---------------------------------------------------------------
    // Validation errors
    // ---------------------------------------------------------------

    #[test]
    fn truncated_header_is_incomplete() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                BatchView::parse(&KAFKA_BATCH_4[..n]).unwrap_err(),
                DecodeError::Incomplete { needed: HEADER_LEN },
                "prefix of {n} bytes"
            );
            assert_eq!(
                BatchView::parse_unchecked_crc(&KAFKA_BATCH_4[..n]).unwrap_err(),
                DecodeError::Incomplete { needed: HEADER_LEN }
            );
            let expect = if n < 12 { None } else { Some(81) };
            assert_eq!(BatchView::peek_total_len(&KAFKA_BATCH_4[..n]), expect);
        }
    }

    #[test]
    fn truncated_body_is_incomplete_with_total_len() {
        for n in HEADER_LEN..KAFKA_BATCH_4.len() {
            assert_eq!(
                BatchView::parse(&KAFKA_BATCH_4[..n]).unwrap_err(),
                DecodeError::Incomplete { needed: 81 },
                "prefix of {n} bytes"
            );
        }
        // Extra bytes after the batch are not part of it.
        let mut more = KAFKA_BATCH_4.to_vec();
        more.extend_from_slice(b"next batch");
        let v = BatchView::parse(&more).unwrap();
        assert_eq!(v.as_bytes(), &KAFKA_BATCH_4[..]);
    }

    #[test]
    fn bad_magic_is_invalid() {
        for magic in [0u8, 1, 3, 0xff] {
            let mut bytes = KAFKA_BATCH_1.to_vec();
            bytes[16] = magic;
            for r in [BatchView::parse(&bytes), BatchView::parse_unchecked_crc(&bytes)] {
                match r {
                    Err(DecodeError::Invalid(msg)) => assert!(msg.contains("magic"), "{msg}"),
                    other => panic!("expected Invalid, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn any_flipped_byte_in_crc_range_fails_crc() {
        for batch in [&KAFKA_BATCH_2[..], &SARAMA_UNCOMPRESSED, &SARAMA_GZIP] {
            for i in ATTRIBUTES_AT..batch.len() {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut bytes = batch.to_vec();
                    bytes[i] ^= mask;
                    match BatchView::parse(&bytes) {
                        Err(DecodeError::Invalid(msg)) => {
                            let stored = format!("{:#010x}", u32::from_be_bytes(batch[17..21].try_into().unwrap()));
                            assert!(msg.contains("CRC") && msg.contains(&stored), "{msg}");
                        }
                        other => {
                            panic!("byte {i} ^ {mask:#x}: expected a CRC error, got {other:?}")
                        }
                    }
                }
            }
            // The stored CRC itself.
            for i in CRC_AT..ATTRIBUTES_AT {
                let mut bytes = batch.to_vec();
                bytes[i] ^= 0x10;
                assert!(matches!(BatchView::parse(&bytes), Err(DecodeError::Invalid(m)) if m.contains("CRC")));
                // Header fields are still readable without the check.
                let v = BatchView::parse_unchecked_crc(&bytes).unwrap();
                assert_ne!(v.crc(), v.computed_crc());
            }
        }
    }

    #[test]
    fn flipped_base_offset_and_epoch_bytes_do_not_affect_crc() {
        for i in (BASE_OFFSET_AT..BATCH_LENGTH_AT).chain(PARTITION_LEADER_EPOCH_AT..MAGIC_AT) {
            let mut bytes = KAFKA_BATCH_4.to_vec();
            bytes[i] ^= 0xff;
            let v = BatchView::parse(&bytes).unwrap();
            assert_eq!(v.crc(), v.computed_crc());
            assert_eq!(collect_records(&v).unwrap().len(), 1);
        }
    }

    #[test]
    fn batch_length_too_small_or_negative_is_invalid() {
        for len in [48i32, 0, -1, i32::MIN] {
            let mut bytes = KAFKA_BATCH_1.to_vec();
            bytes[8..12].copy_from_slice(&len.to_be_bytes());
            match BatchView::parse(&bytes) {
                Err(DecodeError::Invalid(msg)) => assert!(msg.contains("batchLength"), "{msg}"),
                other => panic!("batchLength {len}: expected Invalid, got {other:?}"),
            }
            let expect = if len < 0 { None } else { Some(len as usize + 12) };
            assert_eq!(BatchView::peek_total_len(&bytes), expect);
        }
        // A huge length is just an incomplete batch.
        let mut bytes = KAFKA_BATCH_1.to_vec();
        bytes[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(BatchView::parse(&bytes).unwrap_err(), DecodeError::Incomplete { needed: i32::MAX as usize + 12 });
    }

    #[test]
    fn unknown_codec_is_invalid() {
        for codec in 5..=7 {
            let mut bytes = KAFKA_BATCH_1.to_vec();
            bytes[22] |= codec;
            reseal(&mut bytes);
            match BatchView::parse(&bytes) {
                Err(DecodeError::Invalid(msg)) => assert!(msg.contains("codec"), "{msg}"),
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
        for (codec, c) in [(2u8, Compression::Snappy), (4, Compression::Zstd)] {
            let mut bytes = KAFKA_BATCH_1.to_vec();
            bytes[22] |= codec;
            reseal(&mut bytes);
            let v = BatchView::parse(&bytes).unwrap();
            assert_eq!(v.compression(), c);
            assert!(matches!(v.records(), Err(DecodeError::Unsupported(m)) if m.contains(c.name())));
        }
    }

    #[test]
    fn negative_last_offset_delta_and_count_are_invalid() {
        let mut bytes = KAFKA_BATCH_1.to_vec();
        bytes[23..27].copy_from_slice(&(-1i32).to_be_bytes());
        reseal(&mut bytes);
        assert!(matches!(BatchView::parse(&bytes), Err(DecodeError::Invalid(m)) if m.contains("lastOffsetDelta")));

        let mut bytes = KAFKA_BATCH_1.to_vec();
        bytes[57..61].copy_from_slice(&(-1i32).to_be_bytes());
        reseal(&mut bytes);
        assert!(matches!(BatchView::parse(&bytes), Err(DecodeError::Invalid(m)) if m.contains("recordsCount")));
    }

    #[test]
    fn records_count_larger_than_bytes_is_invalid() {
        let mut bytes = KAFKA_BATCH_1.to_vec(); // 10 bytes of records
        bytes[57..61].copy_from_slice(&11i32.to_be_bytes());
        reseal(&mut bytes);
        assert!(matches!(BatchView::parse(&bytes), Err(DecodeError::Invalid(m)) if m.contains("recordsCount")));
        // 10 passes parse but the records run out.
        bytes[57..61].copy_from_slice(&10i32.to_be_bytes());
        reseal(&mut bytes);
        let v = BatchView::parse(&bytes).unwrap();
        let items: Vec<_> = v.records().unwrap().collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(&items[1], Err(DecodeError::Invalid(m)) if m.contains("after 1 of its 10")));
        // A compressed batch's count is not bounded by its bytes.
        bytes[22] = 1;
        bytes[57..61].copy_from_slice(&1000i32.to_be_bytes());
        reseal(&mut bytes);
        assert!(BatchView::parse(&bytes).is_ok());
    }

    #[test]
    fn fewer_records_than_count_is_invalid() {
        let mut bytes = KAFKA_BATCH_2.to_vec();
        bytes[57..61].copy_from_slice(&3i32.to_be_bytes());
        reseal(&mut bytes);
        let v = BatchView::parse(&bytes).unwrap();
        let items: Vec<_> = v.records().unwrap().collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(matches!(&items[2], Err(DecodeError::Invalid(_))));
        assert!(collect_records(&v).is_err());
    }

    #[test]
    fn more_records_than_count_is_invalid() {
        let mut bytes = KAFKA_BATCH_2.to_vec();
        bytes[57..61].copy_from_slice(&1i32.to_be_bytes());
        reseal(&mut bytes);
        let v = BatchView::parse(&bytes).unwrap();
        let mut it = v.records().unwrap();
        assert!(it.next().unwrap().is_ok());
        assert!(matches!(it.next(), Some(Err(DecodeError::Invalid(m))) if m.contains("8 bytes left")));
        assert!(it.next().is_none());
        assert!(it.next().is_none());
    }

    #[test]
    fn trailing_garbage_after_last_record_is_invalid() {
        for garbage in [&[0u8][..], b"\x00\x00\x00", b"junk"] {
            let mut bytes = KAFKA_BATCH_4.to_vec();
            bytes.extend_from_slice(garbage);
            reseal(&mut bytes);
            let v = BatchView::parse(&bytes).unwrap();
            let items: Vec<_> = v.records().unwrap().collect();
            assert_eq!(items.len(), 2);
            assert!(items[0].is_ok());
            assert!(matches!(&items[1], Err(DecodeError::Invalid(m)) if m.contains("left after the last")));
        }
        // Also for an empty batch.
        let mut bytes = SARAMA_EMPTY.to_vec();
        bytes.push(0);
        reseal(&mut bytes);
        let v = BatchView::parse(&bytes).unwrap();
        assert!(collect_records(&v).is_err());
    }

    /// Builds a one-record batch whose record body is given raw, after a
    /// correct record length varint.
    fn batch_with_raw_record(body: &[u8]) -> Vec<u8> {
        let mut bytes = BatchBuilder::new().build();
        bytes[57..61].copy_from_slice(&1i32.to_be_bytes());
        put_len(&mut bytes, body.len(), "test");
        bytes.extend_from_slice(body);
        reseal(&mut bytes);
        bytes
    }

    fn record_error(bytes: &[u8]) -> String {
        let v = BatchView::parse(bytes).unwrap();
        match collect_records(&v) {
            Err(DecodeError::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn well_formed_raw_record_decodes() {
        // attrs 0, ts -1 (zigzag 1), offset 0, key "ab", value null, 1 header "h" = ""
        let bytes = batch_with_raw_record(&[0, 1, 0, 4, b'a', b'b', 1, 2, 2, b'h', 0]);
        let v = BatchView::parse(&bytes).unwrap();
        let records = collect_records(&v).unwrap();
        assert_eq!(records, vec![rec(0, -1, Some(b"ab"), None, vec![Header { key: b"h", value: Some(b"") }])]);
        fuzz_check_decode(&bytes);
    }

    #[test]
    fn negative_lengths_are_invalid() {
        // key length -2 (zigzag 3)
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 3, 1, 0]));
        assert!(m.contains("key: invalid length -2"), "{m}");
        // value length -5 (zigzag 9)
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 1, 9, 0]));
        assert!(m.contains("value: invalid length -5"), "{m}");
        // headers count -1
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 1, 1, 1]));
        assert!(m.contains("negative headersCount"), "{m}");
        // header key length -1 (null keys are not allowed)
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 1, 1, 2, 1, 0]));
        assert!(m.contains("header 0: invalid key length -1"), "{m}");
        // header value length -2
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 1, 1, 2, 0, 3]));
        assert!(m.contains("header value: invalid length -2"), "{m}");
        // record length -1
        let mut bytes = BatchBuilder::new().build();
        bytes[57..61].copy_from_slice(&1i32.to_be_bytes());
        bytes.extend_from_slice(&[1, 0, 0, 0, 1, 1, 0]);
        reseal(&mut bytes);
        let m = record_error(&bytes);
        assert!(m.contains("record 0: negative length -1"), "{m}");
    }

    #[test]
    fn lengths_past_the_end_are_invalid() {
        // key length 10 with 2 bytes left
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 20, 1, 2]));
        assert!(m.contains("key: length 10 exceeds"), "{m}");
        // record length beyond the batch
        let mut bytes = BatchBuilder::new().build();
        bytes[57..61].copy_from_slice(&1i32.to_be_bytes());
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 1, 0]);
        reseal(&mut bytes);
        let m = record_error(&bytes);
        assert!(m.contains("length 20 exceeds the 6 bytes left in the batch"), "{m}");
        // headers count larger than the record
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 1, 1, 20, 0, 0]));
        assert!(m.contains("headersCount 10"), "{m}");
        // record body longer than its fields
        let m = record_error(&batch_with_raw_record(&[0, 0, 0, 1, 1, 0, 7, 7]));
        assert!(m.contains("2 bytes left in the record body"), "{m}");
        // empty record body
        let m = record_error(&batch_with_raw_record(&[]));
        assert!(m.contains("empty"), "{m}");
        // body ending inside a varint
        let m = record_error(&batch_with_raw_record(&[0, 0x80]));
        assert!(m.contains("timestampDelta: truncated varint"), "{m}");
    }

    #[test]
    fn overlong_varints_are_invalid() {
        // offsetDelta with 6 bytes
        let m = record_error(&batch_with_raw_record(&[0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 1, 0]));
        assert!(m.contains("offsetDelta: varint too long"), "{m}");
        // offsetDelta with 5 bytes but 35 bits
        let m = record_error(&batch_with_raw_record(&[0, 0, 0xff, 0xff, 0xff, 0xff, 0x1f, 1, 1, 0]));
        assert!(m.contains("offsetDelta: varint too long or out of range"), "{m}");
        // timestampDelta with 11 bytes
        let mut body = vec![0u8];
        body.extend_from_slice(&[0x80; 10]);
        body.extend_from_slice(&[0, 0, 1, 1, 0]);
        let m = record_error(&batch_with_raw_record(&body));
        assert!(m.contains("timestampDelta: varint too long"), "{m}");
    }

    #[test]
    fn extreme_but_valid_varints_decode() {
        // offsetDelta i32::MIN (zigzag u32::MAX: ff ff ff ff 0f), timestampDelta i64::MIN
        let mut body = vec![0u8];
        put_varlong(&mut body, i64::MIN);
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]);
        let bytes = batch_with_raw_record(&body);
        let v = BatchView::parse(&bytes).unwrap();
        let records = collect_records(&v).unwrap();
        assert_eq!(records[0].offset_delta, i32::MIN);
        assert_eq!(records[0].timestamp_delta, i64::MIN);
        fuzz_check_decode(&bytes);
    }

    #[test]
    fn non_minimal_varints_are_accepted_like_kafka() {
        // key length 0 written as 80 00; value null as 81 80 00
        let bytes = batch_with_raw_record(&[0, 0, 0, 0x80, 0x00, 0x81, 0x80, 0x00, 0]);
        let v = BatchView::parse(&bytes).unwrap();
        assert_eq!(collect_records(&v).unwrap(), vec![rec(0, 0, Some(b""), None, vec![])]);
        // The rebuilt batch is shorter, so the fuzz check compares records, not bytes.
        fuzz_check_decode(&bytes);
    }

    #[test]
    fn error_display() {
        assert_eq!(DecodeError::Incomplete { needed: 61 }.to_string(), "incomplete record batch: 61 bytes needed");
        assert!(DecodeError::Invalid("x".into()).to_string().contains("invalid"));
        assert!(DecodeError::Unsupported("y".into()).to_string().contains("unsupported"));
        let e: Box<dyn std::error::Error> = Box::new(DecodeError::Invalid("z".into()));
        assert!(e.to_string().ends_with('z'));
        assert_eq!(Compression::Zstd.to_string(), "zstd");
        let v = BatchView::parse(&KAFKA_BATCH_1).unwrap();
        let dbg = format!("{v:?}");
        assert!(dbg.contains("records_count: 1") && dbg.contains("0x0318a270"), "{dbg}");
    }

    // ---------------------------------------------------------------
    // Properties
    // ---------------------------------------------------------------

    #[derive(Debug, Clone)]
    struct GenRecord {
        gap: i32,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    }

    fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..8),
            1 => proptest::collection::vec(any::<u8>(), 0..300),
        ]
    }

    fn record_strategy() -> impl Strategy<Value = GenRecord> {
        (
            prop_oneof![3 => Just(1i32), 1 => 1i32..1000, 1 => 1i32..1_000_000],
            prop_oneof![
                2 => 1_700_000_000_000i64..1_700_000_100_000,
                1 => any::<i64>(),
                1 => -1000i64..1000,
            ],
            proptest::option::of(bytes_strategy()),
            proptest::option::of(bytes_strategy()),
            proptest::collection::vec((bytes_strategy(), proptest::option::of(bytes_strategy())), 0..4),
        )
            .prop_map(|(gap, timestamp, key, value, headers)| GenRecord {
                gap,
                timestamp,
                key,
                value,
                headers,
            })
    }

    #[derive(Debug, Clone)]
    struct GenBatch {
        base_offset: i64,
        epoch: i32,
        producer: (i64, i16, i32),
        attributes: i16,
        first_delta: i32,
        extra_last_delta: Option<i32>,
        base_timestamp: Option<i64>,
        max_timestamp: Option<i64>,
        records: Vec<GenRecord>,
    }

    fn batch_strategy() -> impl Strategy<Value = GenBatch> {
        (
            (any::<i64>(), any::<i32>(), any::<(i64, i16, i32)>()),
            any::<i16>().prop_map(|a| a & !ATTR_COMPRESSION_MASK),
            prop_oneof![3 => Just(0i32), 1 => 0i32..100],
            proptest::option::of(0i32..100),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            proptest::collection::vec(record_strategy(), 0..12),
        )
            .prop_map(
                |(
                    (base_offset, epoch, producer),
                    attributes,
                    first_delta,
                    extra_last_delta,
                    base_timestamp,
                    max_timestamp,
                    records,
                )| GenBatch {
                    base_offset,
                    epoch,
                    producer,
                    attributes,
                    first_delta,
                    extra_last_delta,
                    base_timestamp,
                    max_timestamp,
                    records,
                },
            )
    }

    /// Builds a batch and returns it with the expected (offset delta, timestamp) per record.
    fn build_gen(g: &GenBatch) -> (Vec<u8>, Vec<(i32, i64)>) {
        let (b, expected) = build_gen_parts(g);
        (b.build(), expected)
    }

    fn build_gen_builder(g: &GenBatch) -> BatchBuilder {
        build_gen_parts(g).0
    }

    fn build_gen_parts(g: &GenBatch) -> (BatchBuilder, Vec<(i32, i64)>) {
        let mut b = BatchBuilder::new()
            .base_offset(g.base_offset)
            .partition_leader_epoch(g.epoch)
            .producer(g.producer.0, g.producer.1, g.producer.2)
            .attributes(g.attributes);
        let mut expected = Vec::new();
        let mut delta = g.first_delta;
        for (i, r) in g.records.iter().enumerate() {
            if i > 0 {
                delta += r.gap;
            }
            let headers: Vec<(&[u8], Option<&[u8]>)> =
                r.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
            if r.gap == 1 && i > 0 {
                b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
            } else {
                b.push_with_delta(delta, r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
            }
            expected.push((delta, r.timestamp));
        }
        if let Some(extra) = g.extra_last_delta {
            b = b.last_offset_delta(expected.last().map_or(0, |e| e.0) + extra);
        }
        if let Some(ts) = g.base_timestamp {
            b = b.base_timestamp(ts);
        }
        if let Some(ts) = g.max_timestamp {
            b = b.max_timestamp(ts);
        }
        (b, expected)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn prop_roundtrip(g in batch_strategy()) {
            let (bytes, expected) = build_gen(&g);
            let v = BatchView::parse(&bytes).unwrap();
            prop_assert_eq!(v.total_len(), bytes.len());
            prop_assert_eq!(v.base_offset(), g.base_offset);
            prop_assert_eq!(v.partition_leader_epoch(), g.epoch);
            prop_assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence()), g.producer);
            prop_assert_eq!(v.attributes(), g.attributes);
            prop_assert_eq!(v.records_count() as usize, g.records.len());
            let last_delta = expected.last().map_or(0, |e| e.0) + g.extra_last_delta.unwrap_or(0);
            prop_assert_eq!(v.last_offset_delta(), last_delta);
            let base_ts = g.base_timestamp.unwrap_or(g.records.first().map_or(0, |r| r.timestamp));
            prop_assert_eq!(v.base_timestamp(), base_ts);
            let max_ts = g.max_timestamp.unwrap_or(g.records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts));
            prop_assert_eq!(v.max_timestamp(), max_ts);

            let records = collect_records(&v).unwrap();
            prop_assert_eq!(records.len(), g.records.len());
            for ((r, gr), (delta, ts)) in records.iter().zip(&g.records).zip(&expected) {
                prop_assert_eq!(r.attributes, 0);
                prop_assert_eq!(r.offset_delta, *delta);
                prop_assert_eq!(r.timestamp(v.base_timestamp()), *ts);
                prop_assert_eq!(r.offset(v.base_offset()), v.base_offset().saturating_add(i64::from(*delta)));
                prop_assert_eq!(r.key, gr.key.as_deref());
                prop_assert_eq!(r.value, gr.value.as_deref());
                let headers: Vec<(&[u8], Option<&[u8]>)> = r.headers.iter().map(|h| (h.key, h.value)).collect();
                let want: Vec<(&[u8], Option<&[u8]>)> = gr.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
                prop_assert_eq!(headers, want);
            }
            // Rebuilding from the parsed batch gives the same bytes.
            fuzz_check_decode(&bytes);
        }

        #[test]
        fn prop_compressed_roundtrip(
            g in batch_strategy(),
            codec in prop_oneof![
                Just(Compression::Gzip),
                Just(Compression::Snappy),
                Just(Compression::Lz4),
                Just(Compression::Zstd),
            ],
        ) {
            // The compressed batch is the uncompressed one with its records section compressed.
            let (plain, _) = build_gen(&g);
            let bytes = build_gen_builder(&g).compression(codec).build();
            let v = BatchView::parse(&bytes).unwrap();
            prop_assert_eq!(v.compression(), codec);
            prop_assert_eq!(v.attributes(), g.attributes | codec.attribute_bits());
            prop_assert_eq!(&bytes[..8], &plain[..8]);
            prop_assert_eq!(&bytes[12..17], &plain[12..17]);
            prop_assert_eq!(&bytes[23..HEADER_LEN], &plain[23..HEADER_LEN]);
            let section = v.decompressed_records().unwrap();
            prop_assert_eq!(section.as_bytes(), &plain[HEADER_LEN..]);
            fuzz_check_decode(&bytes);
        }

        #[test]
        fn prop_parse_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzz_check_decode(&data);
        }

        #[test]
        fn prop_parse_never_panics_on_plausible_headers(
            body in proptest::collection::vec(any::<u8>(), 0..100),
            count in prop_oneof![Just(-1i32), 0i32..5, any::<i32>()],
            attrs in any::<i16>(),
            last_delta in prop_oneof![0i32..5, any::<i32>()],
        ) {
            // Arbitrary records behind a well-formed, correctly sealed header,
            // to get past the CRC to the record decoder.
            let mut bytes = BatchBuilder::new().build();
            bytes[21..23].copy_from_slice(&attrs.to_be_bytes());
            bytes[23..27].copy_from_slice(&last_delta.to_be_bytes());
            bytes[57..61].copy_from_slice(&count.to_be_bytes());
            bytes.extend_from_slice(&body);
            reseal(&mut bytes);
            fuzz_check_decode(&bytes);
        }

        #[test]
        fn prop_parse_never_panics_on_mutated_batches(
            g in batch_strategy(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
            seal in proptest::bool::weighted(0.8),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let (mut bytes, _) = build_gen(&g);
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes[i] ^= 1 << (byte % 8),
                    2 => bytes.insert(i, byte),
                    _ => { if bytes.len() > 1 { bytes.remove(i); } }
                }
            }
            if seal && bytes.len() >= HEADER_LEN {
                // Fix length and CRC so the mutation reaches the record decoder.
                reseal(&mut bytes);
            }
            if let Some(cut) = cut {
                let n = cut.index(bytes.len() + 1);
                bytes.truncate(n);
            }
            fuzz_check_decode(&bytes);
            let _ = BatchView::parse_unchecked_crc(&bytes).map(|v| v.records().map(|r| r.count()));
        }
    }
}
