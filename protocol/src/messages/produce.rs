//! Produce (key 4): append record batches to partitions.

use bytes::Bytes;

use crate::codec::{wire_struct, Malformed, Reader, Wire};
use crate::error_code::ErrorCode;
use crate::ids::{Offset, PartitionId};

/// When the broker answers a Produce request. Wire: i8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// 0: never: the broker sends no response at all (fire and forget; errors are only logged).
    None,
    /// 1: once the leader has appended the batches to its log.
    Leader,
    /// −1: once the batches are committed (durable per the topic's fsync policy and, with
    /// replication, on a quorum).
    All,
}

impl Acks {
    /// The value sent on the wire.
    pub fn code(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl Wire for Acks {
    const MIN_LEN: usize = 1;

    fn encode(&self, out: &mut Vec<u8>) {
        self.code().encode(out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match i8::decode(r)? {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            other => Err(Malformed::new(format!("acks {other} is not 0 (none), 1 (leader) or -1 (all)"))),
        }
    }
}

wire_struct! {
    /// Produce request. With `acks` = [`Acks::None`] the broker sends no response.
    pub struct ProduceRequest {
        pub acks: Acks,
        /// How long the broker may wait for `acks` before answering `REQUEST_TIMED_OUT`
        /// (the batches may still be appended).
        pub timeout_ms: u32,
        pub topics: Vec<ProduceTopic>,
    }
}

wire_struct! {
    /// The batches for one topic.
    pub struct ProduceTopic {
        pub name: String,
        pub partitions: Vec<ProducePartition>,
    }
}

wire_struct! {
    /// The batches for one partition.
    pub struct ProducePartition {
        pub partition: PartitionId,
        /// One or more Kafka RecordBatch v2 batches back to back. Producers set `baseOffset` to 0;
        /// the broker assigns offsets. Decoding from `Bytes` shares the frame's memory.
        pub records: Bytes,
    }
}

wire_struct! {
    /// Produce response: one entry per topic and partition of the request, in request order.
    pub struct ProduceResponse {
        pub topics: Vec<ProduceTopicResponse>,
    }
}

wire_struct! {
    /// Results for one topic.
    pub struct ProduceTopicResponse {
        pub name: String,
        pub partitions: Vec<ProducePartitionResponse>,
    }
}

wire_struct! {
    /// Result for one partition.
    pub struct ProducePartitionResponse {
        pub partition: PartitionId,
        pub error_code: ErrorCode,
        /// Details for humans when `error_code` is not `NONE`; null otherwise.
        pub error_message: Option<String>,
        /// Offset assigned to the first record of the first batch; the partition's batches got
        /// consecutive offsets from it. `None` (−1) on error.
        pub base_offset: Option<Offset>,
        /// The partition's log start offset after the append; `None` (−1) on error.
        pub log_start_offset: Option<Offset>,
    }
}
