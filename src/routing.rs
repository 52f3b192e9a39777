//! What one shard asks another: the pieces a request is split into (one per shard it touches,
//! each with that shard's partitions), and the controller operations shard 0 performs for the
//! whole node.
//!
//! These cross threads, so they hold only `Send` data: ids, numbers and `Bytes` (record batches
//! travel as the slices of the frame they arrived in, never copied on the way).

use std::sync::Arc;

use bytes::Bytes;
use keel_protocol::ErrorCode;
use keel_storage::StorageError;

use crate::{
    metadata::{Metadata, Topic},
    partitions::PartitionKey,
};

/// A failure with the error code a client acts on and a message a human reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }

    pub fn unknown_partition(key: PartitionKey) -> Self {
        Failure::new(ErrorCode::UnknownTopicOrPartition, format!("partition {} is not on this broker", key.partition))
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        let code = match &e {
            StorageError::InvalidBatch(_) => ErrorCode::CorruptMessage,
            StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            StorageError::OffsetOutOfRange { .. } | StorageError::NotBatchBoundary { .. } => {
                ErrorCode::OffsetOutOfRange
            }
            StorageError::Closed => ErrorCode::BrokerShuttingDown,
            StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            StorageError::ProducerFenced { .. } => ErrorCode::InvalidProducerEpoch,
            StorageError::NoSpace(_)
            | StorageError::Io { .. }
            | StorageError::Failed { .. }
            | StorageError::Corrupt { .. }
            | StorageError::BadLayout(_) => ErrorCode::StorageError,
        };
        Failure { code, message: e.to_string() }
    }
}

/// One committed position: (topic, partition, committed offset or none, metadata).
pub type CommittedEntry = (String, u32, Option<u64>, Option<String>);

/// A request from one shard to another.
#[derive(Debug)]
pub enum ShardRequest {
    /// Append record batches (one or more, concatenated) to each of these partitions this shard
    /// owns: every part of one client request that this shard owns, in one message, so a
    /// request costs one round trip per shard it touches, not one per partition.
    Produce {
        parts: Vec<(PartitionKey, Bytes)>,
        term: u32,
        /// What the producer's `acks` waits for: written (`0`, `1`) or durable (`all`).
        wait: keel_storage::AppendWait,
    },
    /// Read whole batches from each part's offset (at most its `max_bytes`), now.
    Fetch {
        parts: Vec<FetchPart>,
    },
    /// A fetch's long poll: answer once any part has data at or past its offset (`true`), or
    /// when `max_wait_ms` has passed or every part failed (`false`).
    AwaitData {
        parts: Vec<(PartitionKey, u64)>,
        max_wait_ms: u32,
    },
    /// Earliest (-2), latest (-1) or first offset with a batch timestamp >= the given one.
    ListOffset {
        key: PartitionKey,
        timestamp: i64,
    },
    /// Move a partition's log start to `offset` (−1: its high watermark): Kafka's DeleteRecords.
    DeleteRecords {
        key: PartitionKey,
        offset: i64,
    },
    /// Serve this native-protocol client connection from now on: its requests all go to this
    /// shard's partitions (see `connection::Affinity`). `leftover`: bytes already read from it
    /// past the last request answered. Not refused at the connection limit: the connection was
    /// accepted already, and moving it does not add one to the node.
    AdoptConnection {
        socket: std::os::fd::OwnedFd,
        leftover: bytes::BytesMut,
    },
    /// Offsets of partitions this shard owns, for Metadata.
    Offsets {
        keys: Vec<PartitionKey>,
    },
    /// Open (creating) these partitions of a topic.
    OpenPartitions {
        topic: Topic,
        partitions: Vec<u32>,
    },
    /// Close and delete these partitions of a deleted topic.
    RemovePartitions {
        topic: Topic,
        partitions: Vec<u32>,
    },
    /// Apply `topic`'s altered configs to these partitions' open logs.
    ReconfigurePartitions {
        topic: Topic,
        partitions: Vec<u32>,
    },
    /// The controller's new metadata: every shard keeps a copy to route requests.
    MetadataChanged(Arc<Metadata>),
    /// Controller operations, sent to shard 0.
    CreateTopic {
        name: String,
        partitions: u32,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
    AlterConfigs {
        topic: String,
        set: Vec<(String, String)>,
        remove: Vec<String>,
    },
    /// Partitions and log bytes of this shard.
    Status,
    /// A new idempotent producer id (controller, shard 0): unique for the life of the data
    /// directory.
    AllocateProducerId,
    /// Append a group's commits (one batch, all or nothing) to its offsets partition here, if
    /// the group's coordinator (here too) accepts `member`'s commit.
    CommitOffsets {
        group: String,
        commits: Vec<(String, u32, u64, Option<String>)>,
        member: CommitMember,
    },
    /// A consumer group membership operation, sent to the shard that coordinates the group.
    Group(crate::coordinator::GroupOp),
    /// A group's commits (`None` = all of them; else these partitions of these topics).
    FetchCommitted {
        group: String,
        filter: Option<Vec<(String, Vec<u32>)>>,
    },
    /// Groups with commits on this shard.
    ListGroups,
    /// Delete every commit for `topic` on this shard's offsets partitions (the topic was
    /// deleted; as Kafka does, its committed offsets go with it).
    ForgetTopicOffsets {
        topic: String,
    },
}

/// One partition's part of a [`ShardRequest::Fetch`].
#[derive(Clone, Copy, Debug)]
pub struct FetchPart {
    pub key: PartitionKey,
    pub offset: u64,
    pub max_bytes: u32,
}

/// Offsets of one partition as a client sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: u64,
    /// The end a consumer may read up to (exclusive).
    pub high_watermark: u64,
}

/// One partition's part of a [`ShardRequest::Produce`] answered: the base offset of its first
/// batch and the partition's offsets, or its failure.
pub type Appended = Result<(u64, PartitionOffsets), Failure>;

/// The answer to a [`ShardRequest`], variant by variant.
#[derive(Debug)]
pub enum ShardResponse {
    /// Each part's answer, in the parts' order.
    Produced(Vec<Appended>),
    /// Each part's batches read, or its failure, in the parts' order; with the partition's
    /// offsets whenever it exists (a client resets an out-of-range position with them).
    Fetched(Vec<(Result<Bytes, Failure>, Option<PartitionOffsets>)>),
    /// Whether any part of an [`ShardRequest::AwaitData`] has data.
    DataArrived(bool),
    Offset(Result<(Option<u64>, i64), Failure>),
    ProducerId(Result<i64, Failure>),
    /// The partition's new log start (low watermark).
    RecordsDeleted(Result<u64, Failure>),
    Offsets(Vec<Result<PartitionOffsets, Failure>>),
    Done(Result<(), Failure>),
    Status {
        partitions: u32,
        log_bytes: u64,
    },
    Committed(Vec<CommittedEntry>),
    /// Groups with commits or members on this shard: (id, state, protocol type).
    Groups(Vec<(String, crate::groups::GroupState, String)>),
    Group(crate::coordinator::GroupAnswer),
}

/// Who commits: a group member (Kafka's OffsetCommit with a generation) or, with generation −1
/// and no member id, a client that assigns partitions itself (allowed while the group has no
/// members).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitMember {
    pub member_id: String,
    pub generation: i32,
    pub has_instance_id: bool,
}

impl CommitMember {
    /// A commit outside group membership (the native protocol's, or a Kafka client's without a
    /// generation).
    pub fn standalone() -> Self {
        CommitMember { member_id: String::new(), generation: -1, has_instance_id: false }
    }
}
