//! A bounds check run on a request body before the `kafka-protocol` decoder sees it.
//!
//! The decoder reserves memory for an array from its count before reading the elements
//! (`Vec::with_capacity(count)`), so a 25-byte frame claiming 2^31 topics makes it ask for
//! hundreds of GiB, and the failed allocation aborts the process. This walk follows the same
//! layout without building anything and refuses a body in which any array count exceeds the bytes
//! left (every element takes at least one byte), so the decoder only ever reserves memory in
//! proportion to the frame, which `max_frame_bytes` bounds. It reads lengths and counts only;
//! decoding stays the crate's.

use kafka_protocol::messages::ApiKey;

type Result<T> = std::result::Result<T, String>;

/// Checks the body (what follows the request header) of a served `api` and `version`.
pub(super) fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<()> {
    let v = version;
    match api {
        ApiKey::Produce => {
            let w = &mut Walk::new(body, v >= 9);
            w.string()?; // transactional_id
            w.skip(2 + 4)?; // acks, timeout_ms
            w.array(|w| {
                w.string()?; // name
                w.array(|w| {
                    w.skip(4)?; // index
                    w.bytes()?; // records
                    w.tags()
                })?;
                w.tags()
            })?;
            w.tags()
        }
        ApiKey::Fetch => {
            let w = &mut Walk::new(body, v >= 12);
            w.skip(4 + 4 + 4 + 4 + 1)?; // replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level
            if v >= 7 {
                w.skip(4 + 4)?; // session_id, session_epoch
            }
            w.array(|w| {
                w.string()?; // topic
                w.array(|w| {
                    let epochs = if v >= 9 { 4 } else { 0 } + if v >= 12 { 4 } else { 0 };
                    let log_start = if v >= 5 { 8 } else { 0 };
                    w.skip(4 + 8 + 4 + epochs + log_start)?; // partition, fetch_offset, partition_max_bytes, ...
                    w.tags()
                })?;
                w.tags()
            })?;
            if v >= 7 {
                w.array(|w| {
                    w.string()?; // topic
                    w.array(|w| w.skip(4))?; // partitions
                    w.tags()
                })?;
            }
            if v >= 11 {
                w.string()?; // rack_id
            }
            w.tags()
        }
        ApiKey::ListOffsets => {
            let w = &mut Walk::new(body, v >= 6);
            w.skip(4 + if v >= 2 { 1 } else { 0 })?; // replica_id, isolation_level
            w.array(|w| {
                w.string()?; // name
                w.array(|w| {
                    w.skip(4 + if v >= 4 { 4 } else { 0 } + 8)?; // partition, current_leader_epoch, timestamp
                    w.tags()
                })?;
                w.tags()
            })?;
            w.tags()
        }
        ApiKey::Metadata => {
            let w = &mut Walk::new(body, v >= 9);
            w.array(|w| {
                w.skip(if v >= 10 { 16 } else { 0 })?; // topic_id
                w.string()?; // name
                w.tags()
            })?;
            // allow_auto_topic_creation, include_cluster_authorized_operations,
            // include_topic_authorized_operations
            w.skip(
                if v >= 4 { 1 } else { 0 } + if (8..=10).contains(&v) { 1 } else { 0 } + if v >= 8 { 1 } else { 0 },
            )?;
            w.tags()
        }
        // No arrays: v0–v2 are empty, v3 has two strings and tagged fields.
        ApiKey::ApiVersions => Ok(()),
        ApiKey::CreateTopics => {
            let w = &mut Walk::new(body, v >= 5);
            w.array(|w| {
                w.string()?; // name
                w.skip(4 + 2)?; // num_partitions, replication_factor
                w.array(|w| {
                    w.skip(4)?; // partition_index
                    w.array(|w| w.skip(4))?; // broker_ids
                    w.tags()
                })?;
                w.array(|w| {
                    w.string()?; // name
                    w.string()?; // value
                    w.tags()
                })?;
                w.tags()
            })?;
            w.skip(4 + 1)?; // timeout_ms, validate_only
            w.tags()
        }
        ApiKey::DeleteTopics => {
            let w = &mut Walk::new(body, v >= 4);
            if v >= 6 {
                w.array(|w| {
                    w.string()?; // name
                    w.skip(16)?; // topic_id
                    w.tags()
                })?;
            } else {
                w.array(|w| w.string())?; // topic_names
            }
            w.skip(4)?; // timeout_ms
            w.tags()
        }
        ApiKey::FindCoordinator => {
            let w = &mut Walk::new(body, v >= 3);
            if v <= 3 {
                w.string()?; // key
            }
            if v >= 1 {
                w.skip(1)?; // key_type
            }
            if v >= 4 {
                w.array(|w| w.string())?; // coordinator_keys
            }
            w.tags()
        }
        ApiKey::OffsetCommit => {
            let w = &mut Walk::new(body, v >= 8);
            w.string()?; // group_id
            w.skip(4)?; // generation_id
            w.string()?; // member_id
            if v >= 7 {
                w.string()?; // group_instance_id
            }
            if v <= 4 {
                w.skip(8)?; // retention_time_ms
            }
            w.array(|w| {
                w.string()?; // name
                w.array(|w| {
                    w.skip(4 + 8 + if v >= 6 { 4 } else { 0 })?; // partition, offset, leader_epoch
                    w.string()?; // committed_metadata
                    w.tags()
                })?;
                w.tags()
            })?;
            w.tags()
        }
        ApiKey::OffsetFetch => {
            let w = &mut Walk::new(body, v >= 6);
            w.string()?; // group_id
            w.array(|w| {
                w.string()?; // name
                w.array(|w| w.skip(4))?; // partition_indexes
                w.tags()
            })?;
            if v >= 7 {
                w.skip(1)?; // require_stable
            }
            w.tags()
        }
        ApiKey::DescribeConfigs => {
            let w = &mut Walk::new(body, v >= 4);
            w.array(|w| {
                w.skip(1)?; // resource_type
                w.string()?; // resource_name
                w.array(|w| w.string())?; // configuration_keys
                w.tags()
            })?;
            w.skip(1 + if v >= 3 { 1 } else { 0 })?; // include_synonyms, include_documentation
            w.tags()
        }
        ApiKey::AlterConfigs | ApiKey::IncrementalAlterConfigs => {
            let incremental = api == ApiKey::IncrementalAlterConfigs;
            let w = &mut Walk::new(body, if incremental { v >= 1 } else { v >= 2 });
            w.array(|w| {
                w.skip(1)?; // resource_type
                w.string()?; // resource_name
                w.array(|w| {
                    w.string()?; // name
                    if incremental {
                        w.skip(1)?; // config_operation
                    }
                    w.string()?; // value
                    w.tags()
                })?;
                w.tags()
            })?;
            w.skip(1)?; // validate_only
            w.tags()
        }
        ApiKey::ListGroups => {
            let w = &mut Walk::new(body, v >= 3);
            if v >= 4 {
                w.array(|w| w.string())?; // states_filter
            }
            w.tags()
        }
        ApiKey::OffsetForLeaderEpoch => {
            let w = &mut Walk::new(body, v >= 4);
            if v >= 3 {
                w.skip(4)?; // replica_id
            }
            w.array(|w| {
                w.string()?; // topic
                w.array(|w| {
                    w.skip(4 + 4 + 4)?; // partition, current_leader_epoch, leader_epoch
                    w.tags()
                })?;
                w.tags()
            })?;
            w.tags()
        }
        ApiKey::JoinGroup => {
            let w = &mut Walk::new(body, v >= 6);
            w.string()?; // group_id
            w.skip(4 + if v >= 1 { 4 } else { 0 })?; // session_timeout_ms, rebalance_timeout_ms
            w.string()?; // member_id
            if v >= 5 {
                w.string()?; // group_instance_id
            }
            w.string()?; // protocol_type
            w.array(|w| {
                w.string()?; // name
                w.bytes()?; // metadata
                w.tags()
            })?;
            if v >= 8 {
                w.string()?; // reason
            }
            w.tags()
        }
        ApiKey::SyncGroup => {
            let w = &mut Walk::new(body, v >= 4);
            w.string()?; // group_id
            w.skip(4)?; // generation_id
            w.string()?; // member_id
            if v >= 3 {
                w.string()?; // group_instance_id
            }
            if v >= 5 {
                w.string()?; // protocol_type
                w.string()?; // protocol_name
            }
            w.array(|w| {
                w.string()?; // member_id
                w.bytes()?; // assignment
                w.tags()
            })?;
            w.tags()
        }
        ApiKey::Heartbeat => {
            let w = &mut Walk::new(body, v >= 4);
            w.string()?; // group_id
            w.skip(4)?; // generation_id
            w.string()?; // member_id
            if v >= 3 {
                w.string()?; // group_instance_id
            }
            w.tags()
        }
        ApiKey::LeaveGroup => {
            let w = &mut Walk::new(body, v >= 4);
            w.string()?; // group_id
            if v <= 2 {
                w.string()?; // member_id
            } else {
                w.array(|w| {
                    w.string()?; // member_id
                    w.string()?; // group_instance_id
                    if v >= 5 {
                        w.string()?; // reason
                    }
                    w.tags()
                })?;
            }
            w.tags()
        }
        ApiKey::DescribeGroups => {
            let w = &mut Walk::new(body, v >= 5);
            w.array(|w| w.string())?; // groups
            if v >= 3 {
                w.skip(1)?; // include_authorized_operations
            }
            w.tags()
        }
        ApiKey::DeleteGroups => {
            let w = &mut Walk::new(body, v >= 2);
            w.array(|w| w.string())?; // groups_names
            w.tags()
        }
        ApiKey::InitProducerId => {
            let w = &mut Walk::new(body, v >= 2);
            w.string()?; // transactional_id
            w.skip(4 + if v >= 3 { 8 + 2 } else { 0 })?; // transaction_timeout_ms, producer_id, producer_epoch
            w.tags()
        }
        ApiKey::DeleteRecords => {
            let w = &mut Walk::new(body, v >= 2);
            w.array(|w| {
                w.string()?; // name
                w.array(|w| {
                    w.skip(4 + 8)?; // partition_index, offset
                    w.tags()
                })?;
                w.tags()
            })?;
            w.skip(4)?; // timeout_ms
            w.tags()
        }
        other => Err(format!("no bounds check for {other:?}")),
    }
}

/// A cursor over a body in the classic (non-flexible) or the flexible (compact lengths, tagged
/// fields) encoding.
struct Walk<'a> {
    rest: &'a [u8],
    flexible: bool,
}

impl<'a> Walk<'a> {
    fn new(body: &'a [u8], flexible: bool) -> Self {
        Walk { rest: body, flexible }
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        match self.rest.get(n..) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(format!("{n} bytes wanted, {} left", self.rest.len())),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.rest.first_chunk::<N>().copied().ok_or_else(|| "the body ends mid-field".to_string())?;
        self.rest = &self.rest[N..];
        Ok(bytes)
    }

    fn varint(&mut self) -> Result<u32> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let [b] = self.take::<1>()?;
            value |= u32::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 5 bytes".into())
    }

    /// A length (strings, bytes) or count (arrays) prefix: `None` for null.
    fn length(&mut self, classic: impl FnOnce(&mut Self) -> Result<i64>) -> Result<Option<usize>> {
        let n = if self.flexible { i64::from(self.varint()?) - 1 } else { classic(self)? };
        // Other negative values are the decoder's to refuse.
        Ok(usize::try_from(n).ok())
    }

    /// A string or nullable string.
    fn string(&mut self) -> Result<()> {
        match self.length(|w| w.take::<2>().map(|b| i64::from(i16::from_be_bytes(b))))? {
            Some(n) => self.skip(n),
            None => Ok(()),
        }
    }

    /// Bytes or nullable bytes.
    fn bytes(&mut self) -> Result<()> {
        match self.length(|w| w.take::<4>().map(|b| i64::from(i32::from_be_bytes(b))))? {
            Some(n) => self.skip(n),
            None => Ok(()),
        }
    }

    /// An array or nullable array; `each` walks one element.
    fn array(&mut self, mut each: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        let Some(count) = self.length(|w| w.take::<4>().map(|b| i64::from(i32::from_be_bytes(b))))? else {
            return Ok(());
        };
        if count > self.rest.len() {
            return Err(format!("an array of {count} elements in the {} bytes left", self.rest.len()));
        }
        for _ in 0..count {
            each(self)?;
        }
        Ok(())
    }

    /// Tagged fields (flexible versions only).
    fn tags(&mut self) -> Result<()> {
        if self.flexible {
            for _ in 0..self.varint()? {
                self.varint()?; // tag
                let size = self.varint()?;
                self.skip(size as usize)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::{
        messages::{
            alter_configs_request::{AlterConfigsResource, AlterableConfig},
            create_topics_request::{CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig},
            delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic},
            delete_topics_request::DeleteTopicState,
            describe_configs_request::DescribeConfigsResource,
            fetch_request::{FetchPartition, FetchTopic, ForgottenTopic},
            incremental_alter_configs_request as incremental,
            join_group_request::JoinGroupRequestProtocol,
            leave_group_request::MemberIdentity,
            list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
            metadata_request::MetadataRequestTopic,
            offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
            offset_fetch_request::OffsetFetchRequestTopic,
            offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
            produce_request::{PartitionProduceData, TopicProduceData},
            sync_group_request::SyncGroupRequestAssignment,
            AlterConfigsRequest, ApiVersionsRequest, BrokerId, CreateTopicsRequest, DeleteGroupsRequest,
            DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
            FindCoordinatorRequest, GroupId, HeartbeatRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest,
            JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
            OffsetCommitRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest, ProducerId,
            SyncGroupRequest, TopicName, TransactionalId,
        },
        protocol::{Encodable, StrBytes},
    };

    use super::*;
    use crate::kafka::translate::SERVED;

    fn name(s: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(s))
    }

    /// Every served (or guarded, not yet served) version of every API, with every array holding
    /// elements: the walk must end exactly at the end of what the crate's encoder wrote.
    #[test]
    fn the_walk_matches_the_codecs_layout() {
        let produce = ProduceRequest::default().with_topic_data(vec![TopicProduceData::default()
            .with_name(name("t"))
            .with_partition_data(vec![
                PartitionProduceData::default().with_records(Some(Bytes::from_static(b"batch"))),
                PartitionProduceData::default().with_index(1),
            ])]);
        let fetch = FetchRequest::default()
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("t"))
                .with_partitions(vec![FetchPartition::default(), FetchPartition::default().with_partition(1)])])
            .with_rack_id(StrBytes::from_static_str("rack"));
        let list_offsets = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("t"))
            .with_partitions(vec![ListOffsetsPartition::default(), ListOffsetsPartition::default()])]);
        let metadata = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("a"))),
            MetadataRequestTopic::default().with_name(Some(name("b"))),
        ]));
        let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(name("t"))
            .with_assignments(vec![CreatableReplicaAssignment::default().with_broker_ids(vec![BrokerId(0)])])
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("k"))
                .with_value(Some(StrBytes::from_static_str("v")))])]);
        let s = StrBytes::from_static_str;
        let commit = OffsetCommitRequest::default().with_group_id(GroupId(s("g"))).with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(name("t")).with_partitions(vec![
                OffsetCommitRequestPartition::default().with_committed_metadata(Some(s("meta"))),
                OffsetCommitRequestPartition::default().with_partition_index(1),
            ]),
        ]);
        let offset_fetch = OffsetFetchRequest::default().with_group_id(GroupId(s("g"))).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(name("t")).with_partition_indexes(vec![0, 1]),
            OffsetFetchRequestTopic::default().with_name(name("u")),
        ]));
        let describe = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configuration_keys(Some(vec![s("retention.ms"), s("x")])),
            DescribeConfigsResource::default().with_resource_type(2).with_resource_name(s("u")),
        ]);
        let alter = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![
                AlterableConfig::default().with_name(s("retention.ms")).with_value(Some(s("1"))),
                AlterableConfig::default().with_name(s("x")),
            ])]);
        let incremental =
            IncrementalAlterConfigsRequest::default().with_resources(vec![incremental::AlterConfigsResource::default(
            )
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![
                incremental::AlterableConfig::default().with_name(s("retention.ms")).with_value(Some(s("1"))),
                incremental::AlterableConfig::default().with_name(s("x")).with_config_operation(1),
            ])]);
        let epoch = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default().with_topic(name("t")).with_partitions(vec![
                OffsetForLeaderPartition::default(),
                OffsetForLeaderPartition::default().with_partition(1).with_leader_epoch(3),
            ]),
            OffsetForLeaderTopic::default().with_topic(name("u")),
        ]);
        let join = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(45_000)
            .with_rebalance_timeout_ms(300_000)
            .with_member_id(s("m"))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"meta")),
                JoinGroupRequestProtocol::default().with_name(s("roundrobin")),
            ])
            .with_reason(Some(s("why")));
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(1)
            .with_member_id(s("m"))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default().with_member_id(s("m")).with_assignment(Bytes::from_static(b"a")),
                SyncGroupRequestAssignment::default().with_member_id(s("n")),
            ]);
        let heartbeat =
            HeartbeatRequest::default().with_group_id(GroupId(s("g"))).with_generation_id(1).with_member_id(s("m"));
        let leave = LeaveGroupRequest::default().with_group_id(GroupId(s("g")));
        let describe_groups = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g")), GroupId(s("h"))]);
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx"))))
            .with_transaction_timeout_ms(60_000);
        let delete_records = DeleteRecordsRequest::default()
            .with_topics(vec![
                DeleteRecordsTopic::default().with_name(name("t")).with_partitions(vec![
                    DeleteRecordsPartition::default().with_offset(5),
                    DeleteRecordsPartition::default().with_partition_index(1).with_offset(-1),
                ]),
                DeleteRecordsTopic::default().with_name(name("u")),
            ])
            .with_timeout_ms(30_000);
        // An API in both lists (once its handler lands) is just checked twice.
        for &(api, min, max) in SERVED {
            for v in min..=max {
                let mut body = Vec::new();
                let encoded = match api {
                    ApiKey::Produce => produce.encode(&mut body, v),
                    ApiKey::Fetch => {
                        let fetch = if v >= 7 {
                            fetch.clone().with_forgotten_topics_data(vec![ForgottenTopic::default()
                                .with_topic(name("old"))
                                .with_partitions(vec![0, 1])])
                        } else {
                            fetch.clone()
                        };
                        fetch.encode(&mut body, v)
                    }
                    ApiKey::ListOffsets => list_offsets.encode(&mut body, v),
                    ApiKey::Metadata => metadata.encode(&mut body, v),
                    ApiKey::ApiVersions => ApiVersionsRequest::default().encode(&mut body, v),
                    ApiKey::CreateTopics => create.encode(&mut body, v),
                    ApiKey::DeleteTopics if v >= 6 => DeleteTopicsRequest::default()
                        .with_topics(vec![DeleteTopicState::default().with_name(Some(name("t")))])
                        .encode(&mut body, v),
                    ApiKey::DeleteTopics => {
                        DeleteTopicsRequest::default().with_topic_names(vec![name("a"), name("b")]).encode(&mut body, v)
                    }
                    ApiKey::FindCoordinator if v >= 4 => FindCoordinatorRequest::default()
                        .with_coordinator_keys(vec![s("a"), s("bb")])
                        .encode(&mut body, v),
                    ApiKey::FindCoordinator => FindCoordinatorRequest::default().with_key(s("g")).encode(&mut body, v),
                    ApiKey::OffsetCommit if v >= 7 => {
                        commit.clone().with_group_instance_id(Some(s("i"))).encode(&mut body, v)
                    }
                    ApiKey::OffsetCommit => commit.encode(&mut body, v),
                    ApiKey::OffsetFetch => offset_fetch.encode(&mut body, v),
                    ApiKey::DescribeConfigs => describe.encode(&mut body, v),
                    ApiKey::AlterConfigs => alter.encode(&mut body, v),
                    ApiKey::IncrementalAlterConfigs => incremental.encode(&mut body, v),
                    ApiKey::ListGroups if v >= 4 => {
                        ListGroupsRequest::default().with_states_filter(vec![s("Empty")]).encode(&mut body, v)
                    }
                    ApiKey::ListGroups => ListGroupsRequest::default().encode(&mut body, v),
                    ApiKey::OffsetForLeaderEpoch => epoch.encode(&mut body, v),
                    ApiKey::JoinGroup if v >= 5 => {
                        join.clone().with_group_instance_id(Some(s("i"))).encode(&mut body, v)
                    }
                    ApiKey::JoinGroup => join.encode(&mut body, v),
                    ApiKey::SyncGroup if v >= 3 => {
                        sync.clone().with_group_instance_id(Some(s("i"))).encode(&mut body, v)
                    }
                    ApiKey::SyncGroup => sync.encode(&mut body, v),
                    ApiKey::Heartbeat if v >= 3 => {
                        heartbeat.clone().with_group_instance_id(Some(s("i"))).encode(&mut body, v)
                    }
                    ApiKey::Heartbeat => heartbeat.encode(&mut body, v),
                    ApiKey::LeaveGroup if v >= 3 => leave
                        .clone()
                        .with_members(vec![
                            MemberIdentity::default()
                                .with_member_id(s("m"))
                                .with_group_instance_id(Some(s("i")))
                                .with_reason(Some(s("why"))),
                            MemberIdentity::default().with_member_id(s("n")),
                        ])
                        .encode(&mut body, v),
                    ApiKey::LeaveGroup => leave.clone().with_member_id(s("m")).encode(&mut body, v),
                    ApiKey::DescribeGroups if v >= 3 => {
                        describe_groups.clone().with_include_authorized_operations(true).encode(&mut body, v)
                    }
                    ApiKey::DescribeGroups => describe_groups.encode(&mut body, v),
                    ApiKey::DeleteGroups => DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(s("g")), GroupId(s("h"))])
                        .encode(&mut body, v),
                    ApiKey::InitProducerId if v >= 3 => {
                        init.clone().with_producer_id(ProducerId(7)).with_producer_epoch(2).encode(&mut body, v)
                    }
                    ApiKey::InitProducerId => init.encode(&mut body, v),
                    ApiKey::DeleteRecords => delete_records.encode(&mut body, v),
                    other => panic!("{other:?} is guarded but not covered here"),
                };
                encoded.unwrap_or_else(|e| panic!("encoding {api:?} v{v}: {e}"));
                assert_eq!(check(api, v, &body), Ok(()), "{api:?} v{v}");
                // The walk must consume everything: a shorter body fails somewhere.
                if api != ApiKey::ApiVersions && !body.is_empty() {
                    assert!(check(api, v, &body[..body.len() - 1]).is_err(), "{api:?} v{v} walked past its end");
                }
            }
        }
    }

    #[test]
    fn a_count_beyond_the_bytes_left_is_refused() {
        // Produce v3: null transactional id, acks, timeout, then 2^31 - 1 topics in 0 bytes.
        let mut body = vec![0xFF, 0xFF, 0, 1, 0, 0, 0x03, 0xE8];
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        let err = check(ApiKey::Produce, 3, &body).unwrap_err();
        assert!(err.contains("2147483647 elements"), "{err}");
        // Flexible (compact) count.
        let body = [0, 0, 1, 0, 0, 0x03, 0xE8, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(check(ApiKey::Produce, 9, &body).is_err());
        // Nested: one topic whose partition count is absurd.
        let mut body = vec![0; 17]; // replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level
        body.extend_from_slice(&1i32.to_be_bytes()); // one topic
        body.extend_from_slice(&[0, 1, b't']);
        body.extend_from_slice(&1_000_000i32.to_be_bytes());
        body.extend_from_slice(&[0; 16]);
        assert!(check(ApiKey::Fetch, 4, &body).unwrap_err().contains("1000000 elements"));
        // JoinGroup v0: group_id "g", session_timeout_ms, member_id "", protocol_type "consumer",
        // then 2^31 - 1 protocols in 0 bytes.
        let mut body = vec![0, 1, b'g', 0, 0, 0xAF, 0xC8, 0, 0, 0, 8];
        body.extend_from_slice(b"consumer");
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(check(ApiKey::JoinGroup, 0, &body).unwrap_err().contains("2147483647 elements"));
        // DeleteRecords v2 (compact): one topic "t" whose partition count (2^20) is absurd.
        let body = [2, 2, b't', 0x81, 0x80, 0x40, 0, 0, 0, 0];
        assert!(check(ApiKey::DeleteRecords, 2, &body).unwrap_err().contains("1048576 elements"));
    }
}
