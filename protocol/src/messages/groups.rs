//! Consumer group offsets: CommitOffsets (key 7), FetchCommitted (key 8), ListGroups (key 11).
//!
//! A group is just a name under which consumers store the offset to resume from, per partition.
//! Keel keeps no group membership; which consumer reads which partition is the clients' affair.

use crate::codec::wire_struct;
use crate::error_code::ErrorCode;
use crate::ids::{Offset, PartitionId};

wire_struct! {
    /// CommitOffsets request: store, for each partition, the offset the group resumes from.
    pub struct CommitOffsetsRequest {
        /// Not empty (else `INVALID_GROUP_ID`). The group exists once it has committed.
        pub group: String,
        pub topics: Vec<CommitOffsetsTopic>,
    }
}

wire_struct! {
    /// Offsets to commit in one topic.
    pub struct CommitOffsetsTopic {
        pub name: String,
        pub partitions: Vec<CommitOffsetsPartition>,
    }
}

wire_struct! {
    /// One offset to commit.
    pub struct CommitOffsetsPartition {
        pub partition: PartitionId,
        /// The next offset the group should consume (one past the last record processed).
        pub offset: Offset,
        /// Opaque client data stored with the offset and returned by FetchCommitted.
        pub metadata: Option<String>,
    }
}

wire_struct! {
    /// CommitOffsets response: one entry per topic and partition of the request, in request order.
    pub struct CommitOffsetsResponse {
        pub topics: Vec<CommitOffsetsTopicResponse>,
    }
}

wire_struct! {
    /// Results for one topic.
    pub struct CommitOffsetsTopicResponse {
        pub name: String,
        pub partitions: Vec<CommitOffsetsPartitionResponse>,
    }
}

wire_struct! {
    /// Result for one partition.
    pub struct CommitOffsetsPartitionResponse {
        pub partition: PartitionId,
        pub error_code: ErrorCode,
    }
}

wire_struct! {
    /// FetchCommitted request: read a group's committed offsets.
    pub struct FetchCommittedRequest {
        pub group: String,
        /// Partitions to read; `None` (null) = every partition the group has committed.
        pub topics: Option<Vec<FetchCommittedTopic>>,
    }
}

wire_struct! {
    /// Partitions to read in one topic.
    pub struct FetchCommittedTopic {
        pub name: String,
        pub partitions: Vec<PartitionId>,
    }
}

wire_struct! {
    /// FetchCommitted response.
    pub struct FetchCommittedResponse {
        pub topics: Vec<FetchCommittedTopicResponse>,
    }
}

wire_struct! {
    /// Committed offsets in one topic.
    pub struct FetchCommittedTopicResponse {
        pub name: String,
        pub partitions: Vec<FetchCommittedPartitionResponse>,
    }
}

wire_struct! {
    /// One partition's committed offset.
    pub struct FetchCommittedPartitionResponse {
        pub partition: PartitionId,
        pub error_code: ErrorCode,
        /// The committed offset; `None` (−1) if the group has committed none for this partition.
        pub offset: Option<Offset>,
        /// The metadata stored with it (null if none, or if `offset` is none).
        pub metadata: Option<String>,
    }
}

wire_struct! {
    /// ListGroups request: no fields.
    pub struct ListGroupsRequest {}
}

wire_struct! {
    /// ListGroups response.
    pub struct ListGroupsResponse {
        /// Every group with at least one committed offset, sorted.
        pub groups: Vec<String>,
    }
}
