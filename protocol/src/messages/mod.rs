//! The request and response bodies of every API, one module per group of related APIs. Each
//! struct's fields are its wire fields in order (the private `codec::wire_struct!` macro derives the codec).

mod cluster;
mod fetch;
mod groups;
mod produce;
mod topics;

pub use cluster::{
    ApiVersionRange, ApiVersionsRequest, ApiVersionsResponse, BrokerStatusRequest, BrokerStatusResponse,
    MetadataPartition, MetadataRequest, MetadataResponse, MetadataTopic, ShardStatus,
};
pub use fetch::{
    FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopic, FetchTopicResponse,
    ListOffsetsPartition, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopic,
    ListOffsetsTopicResponse, OffsetQuery,
};
pub use groups::{
    CommitOffsetsPartition, CommitOffsetsPartitionResponse, CommitOffsetsRequest, CommitOffsetsResponse,
    CommitOffsetsTopic, CommitOffsetsTopicResponse, FetchCommittedPartitionResponse, FetchCommittedRequest,
    FetchCommittedResponse, FetchCommittedTopic, FetchCommittedTopicResponse, ListGroupsRequest, ListGroupsResponse,
};
pub use produce::{
    Acks, ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopic,
    ProduceTopicResponse,
};
pub use topics::{
    AlterConfigsRequest, AlterConfigsResponse, ConfigEntry, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicRequest, DeleteTopicResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeConfigsTopic,
    DescribedConfig,
};
