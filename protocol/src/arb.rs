//! Test support: proptest strategies for every wire type (the message structs get theirs from
//! `wire_struct!`), and one hand-filled sample of every request and response, with every array
//! non-empty, for the truncation tests.

use std::fmt;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::ids::{Offset, PartitionId, ShardId, TopicId};
use crate::messages::*;
use crate::request::Request;
use crate::response::Response;

/// A type with a strategy for arbitrary values.
pub(crate) trait Arb: Sized + fmt::Debug {
    fn arb() -> BoxedStrategy<Self>;
}

macro_rules! arb_any {
    ($($ty:ty),*) => {$(
        impl Arb for $ty {
            fn arb() -> BoxedStrategy<Self> {
                any::<$ty>().boxed()
            }
        }
    )*};
}

arb_any!(bool, u16, u32, u64, i64);

impl Arb for String {
    fn arb() -> BoxedStrategy<Self> {
        prop_oneof![3 => "[a-z0-9._-]{0,10}", 1 => "\\PC{0,6}"].boxed()
    }
}

impl Arb for Option<String> {
    fn arb() -> BoxedStrategy<Self> {
        proptest::option::of(String::arb()).boxed()
    }
}

impl Arb for Bytes {
    fn arb() -> BoxedStrategy<Self> {
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from).boxed()
    }
}

impl<T: Arb + 'static> Arb for Vec<T> {
    fn arb() -> BoxedStrategy<Self> {
        proptest::collection::vec(T::arb(), 0..4).boxed()
    }
}

impl<T: Arb + 'static> Arb for Option<Vec<T>> {
    fn arb() -> BoxedStrategy<Self> {
        proptest::option::of(Vec::<T>::arb()).boxed()
    }
}

impl Arb for ErrorCode {
    fn arb() -> BoxedStrategy<Self> {
        prop_oneof![
            3 => proptest::sample::select(ErrorCode::KNOWN.to_vec()),
            1 => any::<u16>().prop_map(ErrorCode::from_u16),
        ]
        .boxed()
    }
}

impl Arb for PartitionId {
    fn arb() -> BoxedStrategy<Self> {
        any::<u32>().prop_map(PartitionId).boxed()
    }
}

impl Arb for ShardId {
    fn arb() -> BoxedStrategy<Self> {
        any::<u32>().prop_map(ShardId).boxed()
    }
}

impl Arb for TopicId {
    fn arb() -> BoxedStrategy<Self> {
        any::<[u8; 16]>().prop_map(TopicId).boxed()
    }
}

impl Arb for Offset {
    fn arb() -> BoxedStrategy<Self> {
        (0..=crate::ids::MAX_OFFSET).prop_map(Offset).boxed()
    }
}

impl Arb for Option<Offset> {
    fn arb() -> BoxedStrategy<Self> {
        proptest::option::of((0..=i64::MAX as u64).prop_map(Offset)).boxed()
    }
}

impl Arb for Acks {
    fn arb() -> BoxedStrategy<Self> {
        prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)].boxed()
    }
}

impl Arb for OffsetQuery {
    fn arb() -> BoxedStrategy<Self> {
        prop_oneof![
            Just(OffsetQuery::Latest),
            Just(OffsetQuery::Earliest),
            (0..=i64::MAX).prop_map(OffsetQuery::Timestamp)
        ]
        .boxed()
    }
}

impl Arb for Request {
    fn arb() -> BoxedStrategy<Self> {
        prop_oneof![
            ApiVersionsRequest::arb().prop_map(Request::ApiVersions),
            MetadataRequest::arb().prop_map(Request::Metadata),
            CreateTopicRequest::arb().prop_map(Request::CreateTopic),
            DeleteTopicRequest::arb().prop_map(Request::DeleteTopic),
            ProduceRequest::arb().prop_map(Request::Produce),
            FetchRequest::arb().prop_map(Request::Fetch),
            ListOffsetsRequest::arb().prop_map(Request::ListOffsets),
            CommitOffsetsRequest::arb().prop_map(Request::CommitOffsets),
            FetchCommittedRequest::arb().prop_map(Request::FetchCommitted),
            DescribeConfigsRequest::arb().prop_map(Request::DescribeConfigs),
            AlterConfigsRequest::arb().prop_map(Request::AlterConfigs),
            ListGroupsRequest::arb().prop_map(Request::ListGroups),
            BrokerStatusRequest::arb().prop_map(Request::BrokerStatus),
        ]
        .boxed()
    }
}

impl Arb for Response {
    fn arb() -> BoxedStrategy<Self> {
        prop_oneof![
            ApiVersionsResponse::arb().prop_map(Response::ApiVersions),
            MetadataResponse::arb().prop_map(Response::Metadata),
            CreateTopicResponse::arb().prop_map(Response::CreateTopic),
            DeleteTopicResponse::arb().prop_map(Response::DeleteTopic),
            ProduceResponse::arb().prop_map(Response::Produce),
            FetchResponse::arb().prop_map(Response::Fetch),
            ListOffsetsResponse::arb().prop_map(Response::ListOffsets),
            CommitOffsetsResponse::arb().prop_map(Response::CommitOffsets),
            FetchCommittedResponse::arb().prop_map(Response::FetchCommitted),
            DescribeConfigsResponse::arb().prop_map(Response::DescribeConfigs),
            AlterConfigsResponse::arb().prop_map(Response::AlterConfigs),
            ListGroupsResponse::arb().prop_map(Response::ListGroups),
            BrokerStatusResponse::arb().prop_map(Response::BrokerStatus),
        ]
        .boxed()
    }
}

/// A real batch from kafka-python (one record, null key, value "123"); also in
/// `keel_storage::batch` tests and in docs/protocol.md.
pub(crate) const KAFKA_BATCH: [u8; 71] = [
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
    0x12, 0x00, 0x00, 0x00, 0x01, 0x06, 0x31, 0x32, 0x33, 0x00, // the record
];

fn name(s: &str) -> String {
    s.to_string()
}

fn records() -> Bytes {
    Bytes::from_static(b"batch-bytes")
}

fn config() -> ConfigEntry {
    ConfigEntry { key: name("retention.ms"), value: name("60000") }
}

/// A request of API `key` in which every array has an element and every nullable field is set.
pub(crate) fn sample_request(key: ApiKey) -> Request {
    let p = PartitionId(3);
    match key {
        ApiKey::ApiVersions => Request::ApiVersions(ApiVersionsRequest {}),
        ApiKey::Metadata => Request::Metadata(MetadataRequest { topics: Some(vec![name("events")]) }),
        ApiKey::CreateTopic => {
            Request::CreateTopic(CreateTopicRequest { name: name("events"), partitions: 4, configs: vec![config()] })
        }
        ApiKey::DeleteTopic => Request::DeleteTopic(DeleteTopicRequest { name: name("events") }),
        ApiKey::Produce => Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 5000,
            topics: vec![ProduceTopic {
                name: name("events"),
                partitions: vec![ProducePartition { partition: p, records: records() }],
            }],
        }),
        ApiKey::Fetch => Request::Fetch(FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: name("events"),
                partitions: vec![FetchPartition { partition: p, fetch_offset: Offset(42), partition_max_bytes: 4096 }],
            }],
        }),
        ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: name("events"),
                partitions: vec![ListOffsetsPartition {
                    partition: p,
                    timestamp: OffsetQuery::Timestamp(1_700_000_000_000),
                }],
            }],
        }),
        ApiKey::CommitOffsets => Request::CommitOffsets(CommitOffsetsRequest {
            group: name("billing"),
            topics: vec![CommitOffsetsTopic {
                name: name("events"),
                partitions: vec![CommitOffsetsPartition {
                    partition: p,
                    offset: Offset(43),
                    metadata: Some(name("m")),
                }],
            }],
        }),
        ApiKey::FetchCommitted => Request::FetchCommitted(FetchCommittedRequest {
            group: name("billing"),
            topics: Some(vec![FetchCommittedTopic { name: name("events"), partitions: vec![p] }]),
        }),
        ApiKey::DescribeConfigs => Request::DescribeConfigs(DescribeConfigsRequest { topics: vec![name("events")] }),
        ApiKey::AlterConfigs => Request::AlterConfigs(AlterConfigsRequest {
            topic: name("events"),
            set: vec![config()],
            remove: vec![name("cleanup.policy")],
        }),
        ApiKey::ListGroups => Request::ListGroups(ListGroupsRequest {}),
        ApiKey::BrokerStatus => Request::BrokerStatus(BrokerStatusRequest {}),
    }
}

/// A response of API `key` in which every array has an element and every nullable field is set.
pub(crate) fn sample_response(key: ApiKey) -> Response {
    let p = PartitionId(3);
    let err = ErrorCode::None;
    let message = Some(name("details"));
    match key {
        ApiKey::ApiVersions => Response::ApiVersions(ApiVersionsResponse::supported("0.1.0")),
        ApiKey::Metadata => Response::Metadata(MetadataResponse {
            shard_count: 2,
            topics: vec![MetadataTopic {
                error_code: err,
                name: name("events"),
                topic_id: TopicId([7; 16]),
                partitions: vec![MetadataPartition {
                    partition: p,
                    shard: ShardId(1),
                    leader_epoch: 1,
                    log_start_offset: Offset(0),
                    high_watermark: Offset(44),
                }],
            }],
        }),
        ApiKey::CreateTopic => Response::CreateTopic(CreateTopicResponse { error_code: err, error_message: message }),
        ApiKey::DeleteTopic => Response::DeleteTopic(DeleteTopicResponse { error_code: err, error_message: message }),
        ApiKey::Produce => Response::Produce(ProduceResponse {
            topics: vec![ProduceTopicResponse {
                name: name("events"),
                partitions: vec![ProducePartitionResponse {
                    partition: p,
                    error_code: err,
                    error_message: message,
                    base_offset: Some(Offset(42)),
                    log_start_offset: Some(Offset(0)),
                }],
            }],
        }),
        ApiKey::Fetch => Response::Fetch(FetchResponse {
            topics: vec![FetchTopicResponse {
                name: name("events"),
                partitions: vec![FetchPartitionResponse {
                    partition: p,
                    error_code: err,
                    high_watermark: Offset(44),
                    log_start_offset: Offset(0),
                    records: records(),
                }],
            }],
        }),
        ApiKey::ListOffsets => Response::ListOffsets(ListOffsetsResponse {
            topics: vec![ListOffsetsTopicResponse {
                name: name("events"),
                partitions: vec![ListOffsetsPartitionResponse {
                    partition: p,
                    error_code: err,
                    offset: Some(Offset(40)),
                    timestamp: 1_700_000_000_123,
                }],
            }],
        }),
        ApiKey::CommitOffsets => Response::CommitOffsets(CommitOffsetsResponse {
            topics: vec![CommitOffsetsTopicResponse {
                name: name("events"),
                partitions: vec![CommitOffsetsPartitionResponse { partition: p, error_code: err }],
            }],
        }),
        ApiKey::FetchCommitted => Response::FetchCommitted(FetchCommittedResponse {
            topics: vec![FetchCommittedTopicResponse {
                name: name("events"),
                partitions: vec![FetchCommittedPartitionResponse {
                    partition: p,
                    error_code: err,
                    offset: Some(Offset(43)),
                    metadata: Some(name("m")),
                }],
            }],
        }),
        ApiKey::DescribeConfigs => Response::DescribeConfigs(DescribeConfigsResponse {
            topics: vec![DescribeConfigsTopic {
                name: name("events"),
                error_code: err,
                configs: vec![DescribedConfig { key: name("retention.ms"), value: name("60000"), is_default: false }],
            }],
        }),
        ApiKey::AlterConfigs => {
            Response::AlterConfigs(AlterConfigsResponse { error_code: err, error_message: message })
        }
        ApiKey::ListGroups => Response::ListGroups(ListGroupsResponse { groups: vec![name("billing")] }),
        ApiKey::BrokerStatus => Response::BrokerStatus(BrokerStatusResponse {
            broker_version: name("0.1.0"),
            data_dir: name("/var/lib/keel"),
            shards: vec![ShardStatus { shard: ShardId(0), core: 0, partitions: 3, log_bytes: 1 << 30 }],
        }),
    }
}
