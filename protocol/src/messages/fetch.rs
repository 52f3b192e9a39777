//! What a consumer reads with: Fetch (key 5) for records, ListOffsets (key 6) to find where to
//! start.

use bytes::Bytes;

use crate::codec::{wire_struct, Malformed, Reader, Wire};
use crate::error_code::ErrorCode;
use crate::ids::{Offset, PartitionId};

wire_struct! {
    /// Fetch request. The broker answers when at least `min_bytes` are available across all
    /// partitions or `max_wait_ms` has passed, whichever comes first.
    pub struct FetchRequest {
        /// Longest the broker may wait for `min_bytes`.
        pub max_wait_ms: u32,
        /// Bytes of records to wait for; 0 answers at once.
        pub min_bytes: u32,
        /// Soft limit on the records of the whole response (see [`FetchPartitionResponse::records`]).
        pub max_bytes: u32,
        pub topics: Vec<FetchTopic>,
    }
}

wire_struct! {
    /// Partitions to fetch from one topic.
    pub struct FetchTopic {
        pub name: String,
        pub partitions: Vec<FetchPartition>,
    }
}

wire_struct! {
    /// One partition to fetch from.
    pub struct FetchPartition {
        pub partition: PartitionId,
        /// First offset wanted; must be in `[log_start_offset, high_watermark]` (else
        /// `OFFSET_OUT_OF_RANGE`).
        pub fetch_offset: Offset,
        /// Soft limit on this partition's records.
        pub partition_max_bytes: u32,
    }
}

wire_struct! {
    /// Fetch response: one entry per topic and partition of the request, in request order.
    pub struct FetchResponse {
        pub topics: Vec<FetchTopicResponse>,
    }
}

wire_struct! {
    /// Records from one topic.
    pub struct FetchTopicResponse {
        pub name: String,
        pub partitions: Vec<FetchPartitionResponse>,
    }
}

wire_struct! {
    /// Records from one partition.
    pub struct FetchPartitionResponse {
        pub partition: PartitionId,
        pub error_code: ErrorCode,
        /// Offset after the last committed record (what a caught-up consumer would fetch next).
        pub high_watermark: Offset,
        /// First offset that can be fetched.
        pub log_start_offset: Offset,
        /// Whole RecordBatch v2 batches, starting with the batch that contains `fetch_offset`
        /// (so the first batch may start before it: skip records below `fetch_offset`). If any
        /// batch is available, at least one is returned even when it exceeds the byte limits, so
        /// a consumer always makes progress. Empty when nothing is available or on error.
        pub records: Bytes,
    }
}

/// Which offset ListOffsets looks up. Wire: i64 — −1 latest, −2 earliest, otherwise a timestamp
/// (milliseconds since the Unix epoch, `>= 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetQuery {
    /// −1: the high watermark (where a consumer reading only new records starts).
    Latest,
    /// −2: the log start offset (the oldest record still kept).
    Earliest,
    /// The first record whose timestamp is `>=` this (milliseconds since the epoch).
    Timestamp(i64),
}

impl Wire for OffsetQuery {
    const MIN_LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        let raw = match *self {
            OffsetQuery::Latest => -1,
            OffsetQuery::Earliest => -2,
            OffsetQuery::Timestamp(ms) => {
                assert!(ms >= 0, "OffsetQuery::Timestamp({ms}) must not be negative");
                ms
            }
        };
        raw.encode(out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match i64::decode(r)? {
            -1 => Ok(OffsetQuery::Latest),
            -2 => Ok(OffsetQuery::Earliest),
            ms if ms >= 0 => Ok(OffsetQuery::Timestamp(ms)),
            other => Err(Malformed::new(format!("timestamp {other} is not -1 (latest), -2 (earliest) or a time >= 0"))),
        }
    }
}

wire_struct! {
    /// ListOffsets request.
    pub struct ListOffsetsRequest {
        pub topics: Vec<ListOffsetsTopic>,
    }
}

wire_struct! {
    /// Partitions to look up in one topic.
    pub struct ListOffsetsTopic {
        pub name: String,
        pub partitions: Vec<ListOffsetsPartition>,
    }
}

wire_struct! {
    /// One partition to look up.
    pub struct ListOffsetsPartition {
        pub partition: PartitionId,
        /// Wire name `timestamp`.
        pub timestamp: OffsetQuery,
    }
}

wire_struct! {
    /// ListOffsets response: one entry per topic and partition of the request, in request order.
    pub struct ListOffsetsResponse {
        pub topics: Vec<ListOffsetsTopicResponse>,
    }
}

wire_struct! {
    /// Results for one topic.
    pub struct ListOffsetsTopicResponse {
        pub name: String,
        pub partitions: Vec<ListOffsetsPartitionResponse>,
    }
}

wire_struct! {
    /// Result for one partition.
    pub struct ListOffsetsPartitionResponse {
        pub partition: PartitionId,
        pub error_code: ErrorCode,
        /// The offset found; `None` (−1) when no record has a timestamp at or after the
        /// requested time, or on error.
        pub offset: Option<Offset>,
        /// For a timestamp query, the timestamp of the record found (ms since the epoch);
        /// −1 for latest and earliest, when `offset` is none, or on error.
        pub timestamp: i64,
    }
}
