//! What a client asks before anything else: which API versions the broker speaks (ApiVersions),
//! where topics and partitions live (Metadata), and the broker's own state (BrokerStatus).

use crate::api::{ApiKey, SUPPORTED};
use crate::codec::wire_struct;
use crate::error_code::ErrorCode;
use crate::ids::{Offset, PartitionId, ShardId, TopicId};

wire_struct! {
    /// ApiVersions (key 0) request: no fields. Send it first on a new connection.
    pub struct ApiVersionsRequest {}
}

wire_struct! {
    /// ApiVersions response: the broker's supported version range of every API it knows.
    pub struct ApiVersionsResponse {
        /// One entry per API the broker supports, in key order.
        pub apis: Vec<ApiVersionRange>,
        /// The broker's software version (`0.1.0`), for humans and logs.
        pub broker_version: String,
    }
}

wire_struct! {
    /// The versions of one API the broker accepts.
    pub struct ApiVersionRange {
        /// Raw key: a newer broker may list APIs this crate does not know ([`ApiKey::from_u16`]).
        pub api_key: u16,
        /// Oldest supported version.
        pub min_version: u16,
        /// Newest supported version (`>= min_version`).
        pub max_version: u16,
    }
}

impl ApiVersionsResponse {
    /// The answer for this crate's [`SUPPORTED`] table.
    pub fn supported(broker_version: impl Into<String>) -> Self {
        let apis = SUPPORTED
            .iter()
            .map(|&(key, min, max)| ApiVersionRange { api_key: key.code(), min_version: min, max_version: max })
            .collect();
        ApiVersionsResponse { apis, broker_version: broker_version.into() }
    }

    /// The range the broker announced for `api`, if it supports it.
    pub fn range(&self, api: ApiKey) -> Option<(u16, u16)> {
        self.apis.iter().find(|r| r.api_key == api.code()).map(|r| (r.min_version, r.max_version))
    }
}

wire_struct! {
    /// Metadata (key 1) request.
    pub struct MetadataRequest {
        /// Topics to describe; `None` (null) = every topic.
        pub topics: Option<Vec<String>>,
    }
}

wire_struct! {
    /// Metadata response.
    pub struct MetadataResponse {
        /// Number of shards (cores) the broker runs.
        pub shard_count: u32,
        /// One entry per requested topic (every topic if the request's list was null).
        pub topics: Vec<MetadataTopic>,
    }
}

wire_struct! {
    /// One topic in a Metadata response.
    pub struct MetadataTopic {
        /// `UNKNOWN_TOPIC_OR_PARTITION` for a requested topic that does not exist (its
        /// `topic_id` is then all zeros and `partitions` empty).
        pub error_code: ErrorCode,
        pub name: String,
        pub topic_id: TopicId,
        /// Every partition of the topic, in partition order.
        pub partitions: Vec<MetadataPartition>,
    }
}

wire_struct! {
    /// One partition in a Metadata response.
    pub struct MetadataPartition {
        pub partition: PartitionId,
        /// The shard that owns the partition.
        pub shard: ShardId,
        /// The partition leader's epoch (the Raft term once replication exists); grows by one at
        /// each leadership change.
        pub leader_epoch: u32,
        /// First offset that can be fetched; grows with retention and never moves back.
        pub log_start_offset: Offset,
        /// Offset after the last committed (readable) record: a consumer that has read everything
        /// is at this offset. Never moves back; `>= log_start_offset`.
        pub high_watermark: Offset,
    }
}

wire_struct! {
    /// BrokerStatus (key 12) request: no fields.
    pub struct BrokerStatusRequest {}
}

wire_struct! {
    /// BrokerStatus response: the broker and its shards, for operators.
    pub struct BrokerStatusResponse {
        /// The broker's software version.
        pub broker_version: String,
        /// The broker's data directory, as configured.
        pub data_dir: String,
        /// One entry per shard, in shard order.
        pub shards: Vec<ShardStatus>,
    }
}

wire_struct! {
    /// One shard in a BrokerStatus response.
    pub struct ShardStatus {
        pub shard: ShardId,
        /// The CPU core the shard's thread is pinned to.
        pub core: u32,
        /// Partitions the shard owns.
        pub partitions: u32,
        /// Bytes of log segments on disk across those partitions.
        pub log_bytes: u64,
    }
}
