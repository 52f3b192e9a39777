//! Per-log settings. Field names follow Kafka's topic configs where Kafka has the concept.

/// When appended data is made durable with fdatasync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// An append completes only after its bytes are fdatasync'ed. Concurrent appends share one
    /// fdatasync (group commit).
    Always,
    /// fdatasync when `ms` milliseconds or `bytes` bytes have gone by since the last one (either
    /// may be absent). Checked on every append and by [`crate::Log::tick`].
    Interval { ms: Option<u64>, bytes: Option<u64> },
    /// Never fdatasync on the append path (sealing a segment and clean shutdown still do):
    /// durability comes from replication. An append completes once written to the file.
    Never,
}

/// What happens to old data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Retention by time and size deletes whole closed segments.
    Delete,
    /// Keep the latest record per key in closed segments.
    Compact,
    /// Both.
    CompactDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

/// Settings of one partition log. Every bound carries its unit in its name.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll the active segment before it would grow past this (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment once it is this old (`segment.ms`); `None` = only by size.
    pub segment_ms: Option<i64>,
    /// One sparse index entry per this many bytes of log (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Delete closed segments whose newest record is older than this (`retention.ms`).
    pub retention_ms: Option<i64>,
    /// Delete the oldest closed segments while the log is larger than this (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    pub cleanup_policy: CleanupPolicy,
    /// Compaction removes a tombstone once its timestamp is older than this (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// Largest batch `append` accepts (`max.message.bytes`).
    pub max_batch_bytes: usize,
    /// Largest single disk write; a multiple of 4096.
    pub write_bytes: usize,
    /// Writes in flight at once per log.
    pub writes_in_flight: usize,
    /// Recent bytes of the active segment kept in memory to serve reads without disk I/O.
    pub tail_cache_bytes: usize,
    /// Reserve disk space for the active segment in steps of this many bytes, so an append
    /// finds a full disk before it writes anything (0 = off). The file's size covers the
    /// reserved space, so appends do not extend it ([`crate::io::File::allocate`]).
    pub preallocate_bytes: u64,
    /// Under `fsync=always`, keep up to this many bytes of zeros written ahead of the active
    /// segment's end, so appends overwrite instead of growing the file and their fdatasyncs
    /// commit no metadata (0 = off, the default: it lowers CPU and median latency but raised
    /// the tail on the disk it was measured on). Kept by [`crate::Log::extend_runway`]; see
    /// [`crate::runway`].
    pub runway_bytes: u64,
    /// Idempotent producers whose state the log keeps at most; a new producer beyond this makes
    /// the log forget the one whose last batch is oldest.
    pub max_producers: usize,
    /// A producer's state is forgotten once its last batch's timestamp is this old, checked when
    /// the producer snapshot is written (at roll and close) (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// Most memory a compaction's map of keys may take (Kafka's
    /// `log.cleaner.dedupe.buffer.size`): when the keys of the segments to compact do not fit,
    /// a compaction covers the records whose keys did, and the next one goes on from there.
    pub compaction_map_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::Always,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            max_batch_bytes: 1 << 20,
            write_bytes: 1 << 20,
            writes_in_flight: 4,
            tail_cache_bytes: 4 << 20,
            preallocate_bytes: 32 << 20,
            runway_bytes: 0,
            max_producers: 10_000,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            compaction_map_bytes: 32 << 20,
        }
    }
}

impl LogConfig {
    /// Panics on settings that would break the log's invariants (a programmer error: callers
    /// validate user input before building a config).
    pub fn validate(&self) {
        assert!(
            self.write_bytes >= crate::io::ALIGN && self.write_bytes.is_multiple_of(crate::io::ALIGN),
            "write_bytes must be a multiple of 4096"
        );
        assert!(self.writes_in_flight >= 1, "writes_in_flight must be at least 1");
        assert!(
            self.segment_bytes >= 4096 && self.segment_bytes <= u32::MAX as u64,
            "segment_bytes must fit index positions (u32)"
        );
        assert!(self.max_batch_bytes >= crate::batch::HEADER_LEN, "max_batch_bytes too small");
        assert!(
            self.preallocate_bytes.is_multiple_of(crate::io::ALIGN as u64),
            "preallocate_bytes must be a multiple of 4096"
        );
        assert!(self.runway_bytes.is_multiple_of(crate::io::ALIGN as u64), "runway_bytes must be a multiple of 4096");
        assert!(self.max_producers >= 1, "max_producers must be at least 1");
    }
}
