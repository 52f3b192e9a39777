//! Kafka request bodies to native [`Request`]s and native [`Response`]s back to Kafka bodies, one
//! pair of functions per API.
//!
//! Each API follows the same shape: what the native protocol cannot express (a negative
//! partition index, acks = 2, a batch that is not RecordBatch v2, a topic named by id only) is
//! answered here, per partition or per topic, and never reaches the logs; the rest goes to
//! [`connection::handle`] as one native request; the native answer is merged back into request
//! order. Record data is the `Bytes` slice of the request frame on the way in and the stored
//! batches on the way out: nothing is decoded or re-encoded.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::{
    messages::{
        alter_configs_response::AlterConfigsResourceResponse,
        api_versions_response::ApiVersion,
        create_topics_response::CreatableTopicResult,
        delete_topics_response::DeletableTopicResult,
        describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult},
        fetch_response::{FetchableTopicResponse, PartitionData},
        find_coordinator_response::Coordinator,
        incremental_alter_configs_response as incremental,
        list_groups_response::ListedGroup,
        list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
        metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic},
        offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
        offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic},
        offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
        produce_response::{PartitionProduceResponse, TopicProduceResponse},
        AlterConfigsRequest, AlterConfigsResponse, ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
        CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
        DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
        FindCoordinatorResponse, GroupId, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
        InitProducerIdRequest, InitProducerIdResponse, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest,
        ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse,
        OffsetFetchRequest, OffsetFetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
        ProduceRequest, ProduceResponse, ProducerId, TopicName,
    },
    protocol::StrBytes,
    ResponseError as K,
};
use keel_protocol::{
    messages::{self as native, Acks, OffsetQuery},
    ErrorCode, Offset, PartitionId, Request, Response, TopLevelError,
};
use uuid::Uuid;

use crate::{broker::ShardState, connection, offsets::OFFSETS_TOPIC, routing::CommitMember};

/// The APIs served and their version ranges: (key, min, max). ApiVersions lists exactly these.
/// The minimums reach below Kafka 4.x's (Produce v3, Fetch v4 for older librdkafka); the
/// maximums stop where a version needs something not built yet (topic ids in Produce/Fetch v13,
/// ListOffsets v8's tiered storage offsets, OffsetFetch v8's several groups per request);
/// DescribeConfigs starts at v1 and OffsetForLeaderEpoch at v2, the crate's first.
pub(crate) const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
];

/// Whether `version` of `api` is served.
pub(crate) fn served(api: ApiKey, version: i16) -> bool {
    SERVED.iter().any(|&(key, min, max)| key == api && (min..=max).contains(&version))
}

/// The one broker Kafka clients see: node 0 at the Kafka listener's address, leader of every
/// partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub host: String,
    pub port: i32,
}

pub(crate) const NODE_ID: i32 = 0;
/// No replication yet: every partition has one replica.
const REPLICATION_FACTOR: i16 = 1;
/// Kafka's "no error".
const NONE: i16 = 0;

/// The Kafka code for a native error code, by meaning.
pub(crate) fn kafka_code(code: ErrorCode) -> i16 {
    match code {
        ErrorCode::None => NONE,
        ErrorCode::UnknownServerError | ErrorCode::Unknown(_) => K::UnknownServerError.code(),
        ErrorCode::CorruptMessage => K::CorruptMessage.code(),
        ErrorCode::UnknownTopicOrPartition => K::UnknownTopicOrPartition.code(),
        ErrorCode::OffsetOutOfRange => K::OffsetOutOfRange.code(),
        ErrorCode::MessageTooLarge => K::MessageTooLarge.code(),
        ErrorCode::TopicAlreadyExists => K::TopicAlreadyExists.code(),
        ErrorCode::InvalidPartitions => K::InvalidPartitions.code(),
        ErrorCode::InvalidConfig => K::InvalidConfig.code(),
        // Kafka has no "unknown API" code; an unknown key is an unsupported version of nothing.
        ErrorCode::UnsupportedVersion | ErrorCode::UnknownApi => K::UnsupportedVersion.code(),
        ErrorCode::InvalidRequest => K::InvalidRequest.code(),
        ErrorCode::RequestTimedOut => K::RequestTimedOut.code(),
        ErrorCode::StorageError => K::KafkaStorageError.code(),
        // Retriable in every client, which then refreshes metadata and tries again: what a
        // client of a Kafka broker that is going away sees.
        ErrorCode::BrokerShuttingDown => K::NotLeaderOrFollower.code(),
        ErrorCode::InvalidTopicName => K::InvalidTopicException.code(),
        ErrorCode::InvalidGroupId => K::InvalidGroupId.code(),
        // A memory or queue bound: retriable after a backoff, as a timeout is.
        ErrorCode::NotEnoughMemory => K::RequestTimedOut.code(),
        ErrorCode::PolicyViolation => K::PolicyViolation.code(),
        ErrorCode::UnknownMemberId => K::UnknownMemberId.code(),
        ErrorCode::IllegalGeneration => K::IllegalGeneration.code(),
        ErrorCode::RebalanceInProgress => K::RebalanceInProgress.code(),
        ErrorCode::OutOfOrderSequenceNumber => K::OutOfOrderSequenceNumber.code(),
        ErrorCode::InvalidProducerEpoch => K::InvalidProducerEpoch.code(),
    }
}

/// Runs a native request as the native listener would (shutdown check, metrics).
async fn call(state: &Rc<ShardState>, request: Request) -> Option<Result<Response, TopLevelError>> {
    let started = std::time::Instant::now();
    let api = request.api_key();
    let response = if state.shard.is_stopping() {
        Some(Err(TopLevelError {
            code: ErrorCode::BrokerShuttingDown,
            message: Some("the broker is shutting down".into()),
        }))
    } else {
        connection::handle(state, request).await
    };
    state.stats().request_done(api, started.elapsed(), matches!(response, Some(Err(_))));
    response
}

/// A failure answered without asking the native side: (Kafka code, message).
type Refusal = (i16, String);

fn refusal(code: K, message: impl Into<String>) -> Refusal {
    (code.code(), message.into())
}

fn unexpected(response: Option<Result<Response, TopLevelError>>) -> Refusal {
    match response {
        Some(Err(e)) => (kafka_code(e.code), e.message.unwrap_or_default()),
        other => refusal(K::UnknownServerError, format!("unexpected native answer {other:?}")),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn str_bytes(s: String) -> StrBytes {
    StrBytes::from_string(s)
}

/// The ApiVersions body: [`SERVED`], with `error_code` (UNSUPPORTED_VERSION when the client
/// asked for a version above ours, so it can retry with one we list).
pub(crate) fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SERVED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}

/// The name of the topic with this id (newer versions may name a topic by id alone).
fn resolve_id(state: &ShardState, id: Uuid) -> Option<String> {
    let bytes = *id.as_bytes();
    state.metadata().topics().find(|t| t.id.0 == bytes).map(|t| t.name.clone())
}

fn topic_id(state: &ShardState, name: &str) -> Uuid {
    state.metadata().topic(name).map_or(Uuid::nil(), |t| Uuid::from_bytes(t.id.0))
}

pub(crate) async fn metadata(
    state: &Rc<ShardState>,
    node: &Node,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 has no null topic list: an empty one asks for every topic.
    let topics = req.topics.filter(|t| version > 0 || !t.is_empty());
    // v10+ may name a topic by id only: resolve it here; an unknown id is answered here.
    let requested: Option<Vec<Result<String, Uuid>>> = topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => Ok(name.0.to_string()),
                None => resolve_id(state, t.topic_id).ok_or(t.topic_id),
            })
            .collect()
    });
    let names: Option<Vec<String>> =
        requested.as_ref().map(|r| r.iter().filter_map(|t| t.as_ref().ok().cloned()).collect());
    // Kafka's auto.create.topics.enable; v0–v3 have no allow_auto_topic_creation and imply it.
    let auto_create = state.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut not_created: Vec<(String, i16)> = Vec::new();
    if let Some(names) = names.as_ref().filter(|_| auto_create) {
        for name in names {
            if let Err(code) = auto_create_topic(state, name).await {
                not_created.push((name.clone(), code));
            }
        }
    }
    let native = match call(state, Request::Metadata(native::MetadataRequest { topics: names })).await {
        Some(Ok(Response::Metadata(m))) => Ok(m.topics),
        other => Err(unexpected(other)),
    };
    let to_kafka = |t: native::MetadataTopic| {
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                MetadataResponsePartition::default()
                    .with_partition_index(p.partition.0 as i32)
                    .with_leader_id(BrokerId(NODE_ID))
                    .with_leader_epoch(p.leader_epoch as i32)
                    .with_replica_nodes(vec![BrokerId(NODE_ID)])
                    .with_isr_nodes(vec![BrokerId(NODE_ID)])
            })
            .collect();
        MetadataResponseTopic::default()
            .with_error_code(kafka_code(t.error_code))
            .with_is_internal(t.name == OFFSETS_TOPIC)
            .with_name(Some(topic_name(&t.name)))
            .with_topic_id(if version >= 10 { Uuid::from_bytes(t.topic_id.0) } else { Uuid::nil() })
            .with_partitions(partitions)
    };
    let failed = |name: Option<TopicName>, id: Uuid, code: i16| {
        MetadataResponseTopic::default().with_error_code(code).with_name(name).with_topic_id(id)
    };
    let topics = match (requested, native) {
        (None, Err(_)) => Vec::new(),
        (Some(requested), Err((code, _))) => requested
            .into_iter()
            .map(|t| match t {
                Ok(name) => failed(Some(topic_name(&name)), Uuid::nil(), code),
                Err(id) => failed(None, id, code),
            })
            .collect(),
        (None, Ok(native)) => native.into_iter().map(to_kafka).collect(),
        (Some(requested), Ok(native)) => {
            let mut answers = native.into_iter();
            requested
                .into_iter()
                .map(|t| match t {
                    Ok(name) => match answers.next() {
                        // Answered without the topic: why it was not created, if it was tried.
                        Some(t) if t.error_code == ErrorCode::UnknownTopicOrPartition => {
                            match not_created.iter().find(|(n, _)| *n == name) {
                                Some(&(_, code)) => failed(Some(topic_name(&name)), Uuid::nil(), code),
                                None => to_kafka(t),
                            }
                        }
                        answer => answer.map(to_kafka).unwrap_or_else(|| {
                            failed(Some(topic_name(&name)), Uuid::nil(), K::UnknownServerError.code())
                        }),
                    },
                    Err(id) => failed(None, id, K::UnknownTopicId.code()),
                })
                .collect()
        }
    };
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(str_bytes(node.host.clone()))
            .with_port(node.port)])
        .with_cluster_id(Some(StrBytes::from_static_str("keel")))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

/// Creates `name` with `default_partitions` partitions and default configs if it does not exist
/// (Kafka's auto-creation), through the native CreateTopic as CreateTopics does; a topic created
/// meanwhile by someone else counts as created. `__consumer_offsets` is never auto-created.
/// `Err`: the Kafka code for why not (INVALID_TOPIC_EXCEPTION for a name that cannot be a topic).
async fn auto_create_topic(state: &Rc<ShardState>, name: &str) -> Result<(), i16> {
    if state.metadata().topic(name).is_some() {
        return Ok(());
    }
    if name == OFFSETS_TOPIC {
        return Err(K::UnknownTopicOrPartition.code());
    }
    let partitions = state.config.default_partitions;
    let request = native::CreateTopicRequest { name: name.to_string(), partitions, configs: Vec::new() };
    match call(state, Request::CreateTopic(request)).await {
        Some(Ok(Response::CreateTopic(r)))
            if r.error_code == ErrorCode::None || r.error_code == ErrorCode::TopicAlreadyExists =>
        {
            Ok(())
        }
        Some(Ok(Response::CreateTopic(r))) => Err(kafka_code(r.error_code)),
        other => Err(unexpected(other).0),
    }
}

/// Checks that `records` is a run of whole RecordBatch v2 batches (the log validates the rest:
/// CRC, lengths, offsets); older message formats are refused here, before they reach a log.
fn check_batches(records: Option<Bytes>) -> Result<Bytes, Refusal> {
    let records = records.filter(|r| !r.is_empty()).ok_or_else(|| refusal(K::CorruptMessage, "no record batch"))?;
    let mut at = 0usize;
    while at < records.len() {
        // baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8.
        let header = &records[at..];
        if header.len() < 17 {
            return Err(refusal(K::CorruptMessage, "a record batch header is cut short"));
        }
        match header[16] as i8 {
            2 => {}
            magic @ (0 | 1) => {
                return Err(refusal(
                    K::UnsupportedForMessageFormat,
                    format!("message format v{magic} is not supported: send RecordBatch v2 (magic 2)"),
                ))
            }
            magic => return Err(refusal(K::CorruptMessage, format!("unknown record batch magic {magic}"))),
        }
        let len = i32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let len = usize::try_from(len).map_err(|_| refusal(K::CorruptMessage, "negative record batch length"))?;
        at += 12 + len;
    }
    if at != records.len() {
        return Err(refusal(K::CorruptMessage, "the last record batch is cut short"));
    }
    Ok(records)
}

/// Per topic of a request, in request order: each partition's index and, if the translation
/// answered it, its failure (`None`: it went into the native request).
type Verdicts<E> = Vec<(TopicName, Vec<(i32, Option<E>)>)>;

/// Puts a response back in request order: each partition's failure from `verdicts`, or the next
/// answer of its topic in `native` (the native response lists the forwarded partitions in request
/// order; `Err` = the whole native request failed). `missing` stands for an answer the native
/// response lacks.
fn merge<E: Clone, N, T>(
    verdicts: Verdicts<E>,
    native: Result<Vec<Vec<N>>, E>,
    missing: E,
    mut answer: impl FnMut(i32, Result<N, E>) -> T,
) -> Vec<(TopicName, Vec<T>)> {
    let mut native_topics = native.map(Vec::into_iter);
    let mut merged = Vec::with_capacity(verdicts.len());
    for (name, partitions) in verdicts {
        let mut answers = match &mut native_topics {
            Ok(topics) => Ok(topics.next().unwrap_or_default().into_iter()),
            Err(e) => Err(e.clone()),
        };
        let mut topic = Vec::with_capacity(partitions.len());
        for (index, refused) in partitions {
            let result = match (refused, &mut answers) {
                (Some(e), _) => Err(e),
                (None, Ok(answers)) => answers.next().ok_or_else(|| missing.clone()),
                (None, Err(e)) => Err(e.clone()),
            };
            topic.push(answer(index, result));
        }
        merged.push((name, topic));
    }
    merged
}

/// Whether any partition of a planned native request is left to send.
fn any_forwarded<E>(verdicts: &Verdicts<E>) -> bool {
    verdicts.iter().flat_map(|(_, partitions)| partitions).any(|(_, refused)| refused.is_none())
}

/// Sends the native request `request` builds, if any partition of `verdicts` goes to it, and
/// takes each topic's partition answers out of the response with `partitions` (which hands back
/// a response of the wrong kind). `Err` = the Kafka error code for the whole request.
async fn forward<V, N>(
    state: &Rc<ShardState>,
    verdicts: &Verdicts<V>,
    request: impl FnOnce() -> Request,
    partitions: impl FnOnce(Response) -> Result<Vec<Vec<N>>, Response>,
) -> Result<Vec<Vec<N>>, i16> {
    if !any_forwarded(verdicts) {
        return Ok(Vec::new());
    }
    match call(state, request()).await {
        Some(Ok(response)) => partitions(response).map_err(|other| unexpected(Some(Ok(other))).0),
        other => Err(unexpected(other).0),
    }
}

/// [`forward`] for a native ListOffsets (ListOffsets and OffsetForLeaderEpoch both ask it).
async fn forward_list_offsets<V>(
    state: &Rc<ShardState>,
    verdicts: &Verdicts<V>,
    topics: Vec<native::ListOffsetsTopic>,
) -> Result<Vec<Vec<native::ListOffsetsPartitionResponse>>, i16> {
    forward(
        state,
        verdicts,
        || Request::ListOffsets(native::ListOffsetsRequest { topics }),
        |r| match r {
            Response::ListOffsets(r) => Ok(r.topics.into_iter().map(|t| t.partitions).collect()),
            other => Err(other),
        },
    )
    .await
}

/// `None` for acks = 0: Kafka sends no response at all then.
pub(crate) async fn produce(state: &Rc<ShardState>, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = match req.acks {
        0 => Ok(Acks::None),
        1 => Ok(Acks::Leader),
        -1 => Ok(Acks::All),
        other => Err(refusal(K::InvalidRequiredAcks, format!("acks {other} is not 0, 1 or -1"))),
    };
    let whole_request = match (&acks, &req.transactional_id) {
        (Err(e), _) => Some(e.clone()),
        (Ok(_), Some(_)) => Some(refusal(K::InvalidRequest, "transactions are not supported")),
        (Ok(_), None) => None,
    };
    let mut verdicts: Verdicts<Refusal> = Vec::with_capacity(req.topic_data.len());
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let mut verdict = Vec::with_capacity(topic.partition_data.len());
        let mut partitions = Vec::new();
        for p in topic.partition_data {
            let checked = match (&whole_request, u32::try_from(p.index)) {
                (Some(e), _) => Err(e.clone()),
                (None, Err(_)) => Err(refusal(K::UnknownTopicOrPartition, "negative partition index")),
                (None, Ok(index)) => check_batches(p.records).map(|records| (index, records)),
            };
            match checked {
                Ok((index, records)) => {
                    partitions.push(native::ProducePartition { partition: PartitionId(index), records });
                    verdict.push((p.index, None));
                }
                Err(e) => verdict.push((p.index, Some(e))),
            }
        }
        topics.push(native::ProduceTopic { name: topic.name.0.to_string(), partitions });
        verdicts.push((topic.name, verdict));
    }
    let acks = acks.unwrap_or(Acks::All);
    let native = if any_forwarded(&verdicts) {
        let timeout_ms = u32::try_from(req.timeout_ms).unwrap_or(0);
        let response = call(state, Request::Produce(native::ProduceRequest { acks, timeout_ms, topics })).await;
        match response {
            _ if acks == Acks::None => return None,
            Some(Ok(Response::Produce(r))) => Ok(r.topics.into_iter().map(|t| t.partitions).collect()),
            other => Err(unexpected(other)),
        }
    } else if acks == Acks::None {
        return None;
    } else {
        Ok(Vec::new())
    };
    let missing = refusal(K::UnknownServerError, "no answer for this partition");
    let responses = merge(verdicts, native, missing, |index, result| {
        let response = PartitionProduceResponse::default().with_index(index);
        let failed = |(code, message): Refusal| {
            response.clone().with_error_code(code).with_base_offset(-1).with_error_message(Some(str_bytes(message)))
        };
        match result {
            Ok(p) if p.error_code == ErrorCode::None => response
                .with_base_offset(p.base_offset.map_or(-1, |o| o.0 as i64))
                .with_log_start_offset(p.log_start_offset.map_or(-1, |o| o.0 as i64)),
            Ok(p) => failed((kafka_code(p.error_code), p.error_message.unwrap_or_default())),
            Err(e) => failed(e),
        }
    })
    .into_iter()
    .map(|(name, partitions)| TopicProduceResponse::default().with_name(name).with_partition_responses(partitions))
    .collect();
    Some(ProduceResponse::default().with_responses(responses))
}

/// The native request for a Kafka fetch, and the partitions answered here.
pub(crate) struct FetchPlan {
    pub request: native::FetchRequest,
    verdicts: Verdicts<i16>,
}

/// Maps a Kafka fetch onto a native one: the same long poll (`max_wait_ms`, `min_bytes`), the
/// same limits (`max_bytes`, each partition's `partition_max_bytes`). No fetch sessions: the
/// answer's session id 0 tells clients to send full fetches; one that names a session anyway
/// gets FETCH_SESSION_ID_NOT_FOUND (`Err`).
pub(crate) fn plan_fetch(req: FetchRequest) -> Result<FetchPlan, FetchResponse> {
    if req.session_id != 0 {
        return Err(FetchResponse::default().with_error_code(K::FetchSessionIdNotFound.code()));
    }
    let non_negative = |v: i32| u32::try_from(v).unwrap_or(0);
    let mut verdicts = Vec::with_capacity(req.topics.len());
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let mut verdict = Vec::with_capacity(topic.partitions.len());
        let mut partitions = Vec::new();
        for p in topic.partitions {
            match (u32::try_from(p.partition), u64::try_from(p.fetch_offset)) {
                (Err(_), _) => verdict.push((p.partition, Some(K::UnknownTopicOrPartition.code()))),
                (Ok(_), Err(_)) => verdict.push((p.partition, Some(K::OffsetOutOfRange.code()))),
                (Ok(partition), Ok(offset)) => {
                    partitions.push(native::FetchPartition {
                        partition: PartitionId(partition),
                        fetch_offset: Offset(offset),
                        partition_max_bytes: non_negative(p.partition_max_bytes),
                    });
                    verdict.push((p.partition, None));
                }
            }
        }
        topics.push(native::FetchTopic { name: topic.topic.0.to_string(), partitions });
        verdicts.push((topic.topic, verdict));
    }
    let request = native::FetchRequest {
        max_wait_ms: non_negative(req.max_wait_ms),
        min_bytes: non_negative(req.min_bytes),
        max_bytes: non_negative(req.max_bytes),
        topics,
    };
    Ok(FetchPlan { request, verdicts })
}

pub(crate) async fn fetch(state: &Rc<ShardState>, plan: FetchPlan) -> FetchResponse {
    let native = if any_forwarded(&plan.verdicts) {
        match call(state, Request::Fetch(plan.request)).await {
            Some(Ok(Response::Fetch(r))) => Ok(r.topics.into_iter().map(|t| t.partitions).collect()),
            other => Err(unexpected(other).0),
        }
    } else {
        Ok(Vec::new())
    };
    let responses = merge(plan.verdicts, native, K::UnknownServerError.code(), |index, result| {
        let data = PartitionData::default().with_partition_index(index);
        match result {
            Ok(p) => {
                let high_watermark = p.high_watermark.0 as i64;
                data.with_error_code(kafka_code(p.error_code))
                    .with_high_watermark(high_watermark)
                    // No transactions: everything below the high watermark is stable.
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(p.log_start_offset.0 as i64)
                    .with_records(Some(p.records))
            }
            Err(code) => data.with_error_code(code).with_high_watermark(-1),
        }
    })
    .into_iter()
    .map(|(name, partitions)| FetchableTopicResponse::default().with_topic(name).with_partitions(partitions))
    .collect();
    FetchResponse::default().with_responses(responses)
}

pub(crate) async fn list_offsets(state: &Rc<ShardState>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut verdicts = Vec::with_capacity(req.topics.len());
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let mut verdict = Vec::with_capacity(topic.partitions.len());
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let query = match p.timestamp {
                -1 => Ok(OffsetQuery::Latest),
                -2 => Ok(OffsetQuery::Earliest),
                ms if ms >= 0 => Ok(OffsetQuery::Timestamp(ms)),
                // -3 (max timestamp, v7) and anything else negative.
                _ => Err(K::InvalidRequest.code()),
            };
            match (u32::try_from(p.partition_index), query) {
                (Err(_), _) => verdict.push((p.partition_index, Some(K::UnknownTopicOrPartition.code()))),
                (Ok(_), Err(code)) => verdict.push((p.partition_index, Some(code))),
                (Ok(partition), Ok(timestamp)) => {
                    partitions.push(native::ListOffsetsPartition { partition: PartitionId(partition), timestamp });
                    verdict.push((p.partition_index, None));
                }
            }
        }
        topics.push(native::ListOffsetsTopic { name: topic.name.0.to_string(), partitions });
        verdicts.push((topic.name, verdict));
    }
    let native = forward_list_offsets(state, &verdicts, topics).await;
    let topics = merge(verdicts, native, K::UnknownServerError.code(), |index, result| {
        let response = ListOffsetsPartitionResponse::default().with_partition_index(index).with_timestamp(-1);
        match result {
            Ok(p) => {
                let found = p.offset.is_some() && p.error_code == ErrorCode::None;
                let response = response
                    .with_error_code(kafka_code(p.error_code))
                    .with_offset(p.offset.map_or(-1, |o| o.0 as i64))
                    .with_timestamp(p.timestamp);
                // The partition's epoch (0 until replication) only where a version has it.
                if version >= 4 && found {
                    response.with_leader_epoch(0)
                } else {
                    response
                }
            }
            Err(code) => response.with_error_code(code).with_offset(-1),
        }
    })
    .into_iter()
    .map(|(name, partitions)| ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions))
    .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The leader epoch of every partition: a single node has one term (`SINGLE_NODE_TERM`), epoch 0.
const LEADER_EPOCH: i32 = crate::broker::SINGLE_NODE_TERM as i32;

/// Where each requested epoch ends. There is one epoch, 0, and it has not ended: its end offset
/// is the high watermark (the native ListOffsets Latest). An epoch newer than ours, or none (−1),
/// is UNDEFINED (−1, −1) as Kafka answers it; a client whose current leader epoch (v2+) is newer
/// than ours gets UNKNOWN_LEADER_EPOCH. `replica_id` (v3+) is ignored.
pub(crate) async fn offset_for_leader_epoch(
    state: &Rc<ShardState>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut verdicts: Verdicts<i16> = Vec::with_capacity(req.topics.len());
    let mut topics = Vec::with_capacity(req.topics.len());
    // The requested epochs, in request order, for the answers.
    let mut epochs = Vec::new();
    for topic in req.topics {
        let mut verdict = Vec::with_capacity(topic.partitions.len());
        let mut partitions = Vec::new();
        for p in topic.partitions {
            epochs.push(p.leader_epoch);
            match u32::try_from(p.partition) {
                Err(_) => verdict.push((p.partition, Some(K::UnknownTopicOrPartition.code()))),
                Ok(_) if p.current_leader_epoch > LEADER_EPOCH => {
                    verdict.push((p.partition, Some(K::UnknownLeaderEpoch.code())))
                }
                Ok(partition) => {
                    // Also for an epoch answered UNDEFINED: an unknown partition is still unknown.
                    partitions.push(native::ListOffsetsPartition {
                        partition: PartitionId(partition),
                        timestamp: OffsetQuery::Latest,
                    });
                    verdict.push((p.partition, None));
                }
            }
        }
        topics.push(native::ListOffsetsTopic { name: topic.topic.0.to_string(), partitions });
        verdicts.push((topic.topic, verdict));
    }
    let native = forward_list_offsets(state, &verdicts, topics).await;
    let mut epochs = epochs.into_iter();
    let topics = merge(verdicts, native, K::UnknownServerError.code(), |index, result| {
        let requested = epochs.next().unwrap_or(-1);
        let answer = EpochEndOffset::default().with_partition(index).with_leader_epoch(-1).with_end_offset(-1);
        match result {
            Ok(p) if p.error_code != ErrorCode::None => answer.with_error_code(kafka_code(p.error_code)),
            Ok(p) if requested == LEADER_EPOCH => {
                answer.with_leader_epoch(LEADER_EPOCH).with_end_offset(p.offset.map_or(-1, |o| o.0 as i64))
            }
            Ok(_) => answer,
            Err(code) => answer.with_error_code(code),
        }
    })
    .into_iter()
    .map(|(name, partitions)| OffsetForLeaderTopicResult::default().with_topic(name).with_partitions(partitions))
    .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// Creates the topics one by one on the controller, as the native CreateTopic does.
pub(crate) async fn create_topics(
    state: &Rc<ShardState>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let name = topic.name.0.to_string();
        // −1: the broker's default, as Kafka's `num.partitions` (also used by auto-creation).
        let partitions = if topic.num_partitions == -1 {
            Ok(state.config.default_partitions)
        } else {
            u32::try_from(topic.num_partitions)
                .map_err(|_| refusal(K::InvalidPartitions, format!("{} partitions", topic.num_partitions)))
        };
        let outcome = match partitions {
            _ if req.validate_only => Err(refusal(K::InvalidRequest, "validate_only is not supported")),
            _ if topic.replication_factor != -1 && topic.replication_factor != REPLICATION_FACTOR => Err(refusal(
                K::InvalidReplicationFactor,
                format!("replication factor {}: this broker keeps one replica", topic.replication_factor),
            )),
            _ if !topic.assignments.is_empty() => {
                Err(refusal(K::InvalidReplicaAssignment, "manual replica assignments are not supported"))
            }
            Err(e) => Err(e),
            Ok(partitions) => {
                // A null value means "the default": leave the key out.
                let configs = topic
                    .configs
                    .into_iter()
                    .filter_map(|c| {
                        c.value.map(|v| native::ConfigEntry { key: c.name.to_string(), value: v.to_string() })
                    })
                    .collect();
                let request = native::CreateTopicRequest { name: name.clone(), partitions, configs };
                match call(state, Request::CreateTopic(request)).await {
                    Some(Ok(Response::CreateTopic(r))) if r.error_code == ErrorCode::None => Ok(partitions),
                    Some(Ok(Response::CreateTopic(r))) => {
                        Err((kafka_code(r.error_code), r.error_message.unwrap_or_default()))
                    }
                    other => Err(unexpected(other)),
                }
            }
        };
        let result = CreatableTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(partitions) => {
                let result = result.with_num_partitions(partitions as i32).with_replication_factor(REPLICATION_FACTOR);
                if version >= 7 {
                    result.with_topic_id(topic_id(state, &name))
                } else {
                    result
                }
            }
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Deletes the topics one by one; v6 may name a topic by id alone.
pub(crate) async fn delete_topics(
    state: &Rc<ShardState>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => (Some(name.0.to_string()), t.topic_id),
                None => (resolve_id(state, t.topic_id), t.topic_id),
            })
            .collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let result = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
        let Some(name) = name else {
            responses.push(
                result
                    .with_topic_id(id)
                    .with_error_code(K::UnknownTopicId.code())
                    .with_error_message(Some(str_bytes(format!("no topic has id {id}")))),
            );
            continue;
        };
        let id = if version >= 6 { topic_id(state, &name) } else { Uuid::nil() };
        let outcome = match call(state, Request::DeleteTopic(native::DeleteTopicRequest { name })).await {
            Some(Ok(Response::DeleteTopic(r))) => (kafka_code(r.error_code), r.error_message),
            other => {
                let (code, message) = unexpected(other);
                (code, Some(message))
            }
        };
        responses
            .push(result.with_topic_id(id).with_error_code(outcome.0).with_error_message(outcome.1.map(str_bytes)));
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Kafka's resource types in DescribeConfigs/AlterConfigs.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config sources (DescribeConfigs v1+).
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// Every group's coordinator is node 0; transactions have none (no transactional producers).
pub(crate) fn find_coordinator(node: &Node, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let answer = |key_type: i8| -> Result<(), Refusal> {
        match key_type {
            0 => Ok(()),
            1 => Err(refusal(K::CoordinatorNotAvailable, "transactions are not supported")),
            other => Err(refusal(K::InvalidRequest, format!("unknown coordinator key type {other}"))),
        }
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key);
                match answer(req.key_type) {
                    Ok(()) => {
                        c.with_node_id(BrokerId(NODE_ID)).with_host(str_bytes(node.host.clone())).with_port(node.port)
                    }
                    Err((code, message)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default();
    match answer(req.key_type) {
        Ok(()) => response.with_node_id(BrokerId(NODE_ID)).with_host(str_bytes(node.host.clone())).with_port(node.port),
        Err((code, message)) => {
            let response = response.with_node_id(BrokerId(-1)).with_port(-1).with_error_code(code);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(message)))
            } else {
                response
            }
        }
    }
}

/// Commits as a "simple" consumer: Keel has no group membership, so a commit that claims one
/// (generation ≥ 0, a member id, a group instance id) gets ILLEGAL_GENERATION per partition, as
/// Kafka answers a generation that does not exist.
pub(crate) async fn offset_commit(state: &Rc<ShardState>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    // Checked by the group's coordinator: a member's commit must be of the current generation;
    // one without a generation only while the group has no members.
    let member = CommitMember {
        member_id: req.member_id.to_string(),
        generation: req.generation_id_or_member_epoch,
        has_instance_id: req.group_instance_id.is_some(),
    };
    let mut verdicts: Verdicts<i16> = Vec::with_capacity(req.topics.len());
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let mut verdict = Vec::with_capacity(topic.partitions.len());
        let mut partitions = Vec::new();
        for p in topic.partitions {
            match (u32::try_from(p.partition_index), u64::try_from(p.committed_offset)) {
                (Err(_), _) => verdict.push((p.partition_index, Some(K::UnknownTopicOrPartition.code()))),
                (Ok(_), Err(_)) => verdict.push((p.partition_index, Some(K::InvalidRequest.code()))),
                (Ok(partition), Ok(offset)) => {
                    partitions.push(native::CommitOffsetsPartition {
                        partition: PartitionId(partition),
                        offset: Offset(offset),
                        metadata: p.committed_metadata.map(|m| m.to_string()),
                    });
                    verdict.push((p.partition_index, None));
                }
            }
        }
        topics.push(native::CommitOffsetsTopic { name: topic.name.0.to_string(), partitions });
        verdicts.push((topic.name, verdict));
    }
    let group = req.group_id.0.to_string();
    let native = if !any_forwarded(&verdicts) {
        Ok(Vec::new())
    } else if state.shard.is_stopping() {
        Err(K::NotCoordinator.code())
    } else {
        let started = std::time::Instant::now();
        let request = native::CommitOffsetsRequest { group, topics };
        let response = connection::commit_offsets(state, request, member).await;
        state.stats().request_done(keel_protocol::ApiKey::CommitOffsets, started.elapsed(), false);
        Ok(response.topics.into_iter().map(|t| t.partitions).collect())
    };
    let topics = merge(verdicts, native, K::UnknownServerError.code(), |index, result| {
        let code = match result {
            Ok(p) => kafka_code(p.error_code),
            Err(code) => code,
        };
        OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
    })
    .into_iter()
    .map(|(name, partitions)| OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions))
    .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// A group's committed offsets; topics null (v2+) = every partition the group has committed.
/// No committed offset: offset −1 and metadata "", as Kafka answers.
pub(crate) async fn offset_fetch(state: &Rc<ShardState>, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let group = req.group_id.0.to_string();
    let partition = |index: i32, code: i16, offset: Option<Offset>, metadata: Option<String>| {
        OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(code)
            .with_committed_offset(offset.map_or(-1, |o| o.0 as i64))
            .with_metadata(Some(str_bytes(metadata.unwrap_or_default())))
    };
    let native_partition = |p: native::FetchCommittedPartitionResponse| {
        let offset = p.offset.filter(|_| p.error_code == ErrorCode::None);
        partition(p.partition.0 as i32, kafka_code(p.error_code), offset, p.metadata)
    };
    let (topics, error) = match req.topics {
        None => {
            let request = native::FetchCommittedRequest { group, topics: None };
            match call(state, Request::FetchCommitted(request)).await {
                Some(Ok(Response::FetchCommitted(r))) => {
                    let topics = r
                        .topics
                        .into_iter()
                        .map(|t| {
                            OffsetFetchResponseTopic::default()
                                .with_name(topic_name(&t.name))
                                .with_partitions(t.partitions.into_iter().map(native_partition).collect())
                        })
                        .collect();
                    (topics, NONE)
                }
                other => (Vec::new(), unexpected(other).0),
            }
        }
        Some(requested) => {
            let mut verdicts: Verdicts<i16> = Vec::with_capacity(requested.len());
            let mut topics = Vec::with_capacity(requested.len());
            for topic in requested {
                let mut verdict = Vec::with_capacity(topic.partition_indexes.len());
                let mut partitions = Vec::new();
                for index in topic.partition_indexes {
                    match u32::try_from(index) {
                        Ok(p) => {
                            partitions.push(PartitionId(p));
                            verdict.push((index, None));
                        }
                        Err(_) => verdict.push((index, Some(K::UnknownTopicOrPartition.code()))),
                    }
                }
                topics.push(native::FetchCommittedTopic { name: topic.name.0.to_string(), partitions });
                verdicts.push((topic.name, verdict));
            }
            let request = || Request::FetchCommitted(native::FetchCommittedRequest { group, topics: Some(topics) });
            let native = forward(state, &verdicts, request, |r| match r {
                Response::FetchCommitted(r) => Ok(r.topics.into_iter().map(|t| t.partitions).collect()),
                other => Err(other),
            })
            .await;
            let error = native.as_ref().err().copied().unwrap_or(NONE);
            let topics = merge(verdicts, native, K::UnknownServerError.code(), |index, result| match result {
                Ok(p) => native_partition(p),
                Err(code) => partition(index, code, None, None),
            })
            .into_iter()
            .map(|(name, partitions)| OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions))
            .collect();
            (topics, error)
        }
    };
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(error)
    } else {
        response
    }
}

/// One topic's configs through the native DescribeConfigs.
async fn topic_configs(state: &Rc<ShardState>, topic: &str) -> Result<Vec<native::DescribedConfig>, Refusal> {
    let request = native::DescribeConfigsRequest { topics: vec![topic.to_string()] };
    match call(state, Request::DescribeConfigs(request)).await {
        Some(Ok(Response::DescribeConfigs(r))) => match r.topics.into_iter().next() {
            Some(t) if t.error_code == ErrorCode::None => Ok(t.configs),
            Some(t) => Err((kafka_code(t.error_code), format!("topic {topic}: {}", t.error_code))),
            None => Err(refusal(K::UnknownServerError, "the native answer lists no topic")),
        },
        other => Err(unexpected(other)),
    }
}

/// Topic configs (resource type 2). A broker (type 4) has no configs of its own to show here:
/// it gets an empty successful answer, which admin clients listing broker configs accept; any
/// other resource type gets INVALID_REQUEST.
pub(crate) async fn describe_configs(
    state: &Rc<ShardState>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for resource in req.resources {
        let result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let configs = match resource.resource_type {
            RESOURCE_TOPIC => topic_configs(state, &resource.resource_name).await,
            RESOURCE_BROKER => Ok(Vec::new()),
            other => Err(refusal(K::InvalidRequest, format!("resource type {other}: only topics (2) have configs"))),
        };
        results.push(match configs {
            Ok(configs) => {
                let wanted = |key: &str| {
                    resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
                };
                let configs = configs
                    .into_iter()
                    .filter(|c| wanted(&c.key))
                    .map(|c| {
                        let source = if c.is_default { SOURCE_DEFAULT } else { SOURCE_DYNAMIC_TOPIC };
                        let entry = DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(c.key))
                            .with_value(Some(str_bytes(c.value)));
                        if version >= 1 {
                            entry.with_config_source(source)
                        } else {
                            entry
                        }
                    })
                    .collect();
                result.with_configs(configs)
            }
            Err((code, message)) => result.with_error_code(code).with_error_message(Some(str_bytes(message))),
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// One resource's native AlterConfigs, or why not.
async fn alter_topic(
    state: &Rc<ShardState>,
    topic: String,
    set: Vec<native::ConfigEntry>,
    remove: Vec<String>,
) -> Refusal {
    match call(state, Request::AlterConfigs(native::AlterConfigsRequest { topic, set, remove })).await {
        Some(Ok(Response::AlterConfigs(r))) => (kafka_code(r.error_code), r.error_message.unwrap_or_default()),
        other => unexpected(other),
    }
}

fn check_alterable(resource_type: i8, validate_only: bool) -> Result<(), Refusal> {
    if validate_only {
        return Err(refusal(K::InvalidRequest, "validate_only is not supported"));
    }
    if resource_type != RESOURCE_TOPIC {
        return Err(refusal(
            K::InvalidRequest,
            format!("resource type {resource_type}: only topic configs can be altered"),
        ));
    }
    Ok(())
}

/// Kafka's AlterConfigs replaces a topic's whole config: keys not listed return to their default.
/// Translated as a native set of the listed keys and a remove of every other key the topic
/// overrides now (read just before through the native DescribeConfigs).
pub(crate) async fn alter_configs(state: &Rc<ShardState>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for resource in req.resources {
        let topic = resource.resource_name.to_string();
        let outcome = match check_alterable(resource.resource_type, req.validate_only) {
            Err(e) => e,
            Ok(()) => match topic_configs(state, &topic).await {
                Err(e) => e,
                Ok(current) => {
                    let set: Vec<native::ConfigEntry> = resource
                        .configs
                        .into_iter()
                        .filter_map(|c| {
                            c.value.map(|v| native::ConfigEntry { key: c.name.to_string(), value: v.to_string() })
                        })
                        .collect();
                    let remove = current
                        .into_iter()
                        .filter(|c| !c.is_default && !set.iter().any(|s| s.key == c.key))
                        .map(|c| c.key)
                        .collect();
                    alter_topic(state, topic, set, remove).await
                }
            },
        };
        let (code, message) = outcome;
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message((code != NONE).then(|| str_bytes(message)))
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// SET (0) and DELETE (1) are the native set and remove; APPEND (2) and SUBTRACT (3) apply to
/// list configs only, and no topic config is a list: INVALID_REQUEST.
pub(crate) async fn incremental_alter_configs(
    state: &Rc<ShardState>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for resource in req.resources {
        let topic = resource.resource_name.to_string();
        let planned = check_alterable(resource.resource_type, req.validate_only).and_then(|()| {
            let mut set = Vec::new();
            let mut remove = Vec::new();
            for c in resource.configs {
                match (c.config_operation, c.value) {
                    (0, Some(value)) => {
                        set.push(native::ConfigEntry { key: c.name.to_string(), value: value.to_string() })
                    }
                    (0, None) => return Err(refusal(K::InvalidRequest, format!("SET {} without a value", c.name))),
                    (1, _) => remove.push(c.name.to_string()),
                    (op @ (2 | 3), _) => {
                        return Err(refusal(
                            K::InvalidRequest,
                            format!("operation {op} on {}: not a list config", c.name),
                        ))
                    }
                    (op, _) => return Err(refusal(K::InvalidRequest, format!("unknown config operation {op}"))),
                }
            }
            Ok((set, remove))
        });
        let (code, message) = match planned {
            Ok((set, remove)) => alter_topic(state, topic, set, remove).await,
            Err(e) => e,
        };
        responses.push(
            incremental::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message((code != NONE).then(|| str_bytes(message)))
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// An idempotent producer's id and epoch. A new producer (id −1) gets a new id from the
/// controller, epoch 0; a producer that names its id and epoch (v3+, after an error it cannot
/// recover from otherwise) gets the next epoch of the same id — or, with the epoch used up, a new
/// id. Each partition log then checks the producer's batches' epochs and sequences. Transactions
/// are not supported: a transactional id gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients
/// report at once rather than retry.
pub(crate) async fn init_producer_id(state: &Rc<ShardState>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let refused = |code: i16| InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(-1));
    match &req.transactional_id {
        None => {}
        // Kafka's answer to an empty one.
        Some(id) if id.is_empty() => return refused(K::InvalidRequest.code()),
        Some(_) => return refused(K::TransactionalIdAuthorizationFailed.code()),
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    if state.shard.is_stopping() {
        return refused(K::CoordinatorNotAvailable.code());
    }
    match state.shard.call(keel_shards::ShardId(0), crate::routing::ShardRequest::AllocateProducerId).await {
        Ok(crate::routing::ShardResponse::ProducerId(Ok(id))) => {
            InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0)
        }
        // Retriable: the client asks again.
        _ => refused(K::CoordinatorNotAvailable.code()),
    }
}

/// Moves each partition's log start (Kafka's DeleteRecords; −1 = the high watermark), on the
/// owning shards at once. `timeout_ms` is not needed: each move is one checkpoint write.
pub(crate) async fn delete_records(state: &Rc<ShardState>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let calls = topic.partitions.iter().map(|p| {
            let routed = u32::try_from(p.partition_index).ok().and_then(|i| state.route(&topic.name.0, i));
            let offset = p.offset;
            async move {
                let Some((key, shard)) = routed else { return Err(K::UnknownTopicOrPartition.code()) };
                if state.shard.is_stopping() {
                    return Err(K::NotLeaderOrFollower.code());
                }
                match state.shard.call(shard, crate::routing::ShardRequest::DeleteRecords { key, offset }).await {
                    Ok(crate::routing::ShardResponse::RecordsDeleted(Ok(low))) => Ok(low),
                    Ok(crate::routing::ShardResponse::RecordsDeleted(Err(f))) => Err(kafka_code(f.code)),
                    Ok(_) => Err(K::UnknownServerError.code()),
                    Err(_) => Err(K::NotLeaderOrFollower.code()),
                }
            }
        });
        let results = keel_storage::io::join_all(calls.collect()).await;
        let partitions = topic
            .partitions
            .iter()
            .zip(results)
            .map(|(p, result)| {
                let partition = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                match result {
                    Ok(low) => partition.with_low_watermark(low as i64),
                    Err(code) => partition.with_low_watermark(-1).with_error_code(code),
                }
            })
            .collect();
        topics.push(DeleteRecordsTopicResult::default().with_name(topic.name).with_partitions(partitions));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Every group: live ones with their state, the others known by their committed offsets as
/// Empty consumer groups. A states filter (v4+) keeps only groups in those states.
pub(crate) async fn list_groups(state: &Rc<ShardState>, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    if state.shard.is_stopping() {
        return ListGroupsResponse::default().with_error_code(K::CoordinatorNotAvailable.code());
    }
    let groups = connection::list_groups(state)
        .await
        .into_iter()
        .filter(|(_, group_state, _)| {
            req.states_filter.is_empty() || req.states_filter.iter().any(|s| s.eq_ignore_ascii_case(group_state.name()))
        })
        .map(|(id, group_state, protocol_type)| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            if version >= 4 {
                listed.with_group_state(StrBytes::from_static_str(group_state.name()))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_codes_map_to_kafka_codes_by_meaning() {
        let expected: &[(ErrorCode, i16)] = &[
            (ErrorCode::None, 0),
            (ErrorCode::UnknownServerError, -1),
            (ErrorCode::CorruptMessage, 2),
            (ErrorCode::UnknownTopicOrPartition, 3),
            (ErrorCode::OffsetOutOfRange, 1),
            (ErrorCode::MessageTooLarge, 10),
            (ErrorCode::TopicAlreadyExists, 36),
            (ErrorCode::InvalidPartitions, 37),
            (ErrorCode::InvalidConfig, 40),
            (ErrorCode::UnsupportedVersion, 35),
            (ErrorCode::UnknownApi, 35),
            (ErrorCode::InvalidRequest, 42),
            (ErrorCode::RequestTimedOut, 7),
            (ErrorCode::StorageError, 56),
            (ErrorCode::BrokerShuttingDown, 6),
            (ErrorCode::InvalidTopicName, 17),
            (ErrorCode::InvalidGroupId, 24),
            (ErrorCode::NotEnoughMemory, 7),
            (ErrorCode::PolicyViolation, 44),
            (ErrorCode::UnknownMemberId, 25),
            (ErrorCode::IllegalGeneration, 22),
            (ErrorCode::RebalanceInProgress, 27),
            (ErrorCode::OutOfOrderSequenceNumber, 45),
            (ErrorCode::InvalidProducerEpoch, 47),
            (ErrorCode::Unknown(999), -1),
        ];
        for known in ErrorCode::KNOWN {
            assert!(expected.iter().any(|(c, _)| *c == known), "{known} has no expected Kafka code");
        }
        for &(native, kafka) in expected {
            assert_eq!(kafka_code(native), kafka, "{native}");
        }
    }

    #[test]
    fn only_record_batch_v2_passes() {
        let batch = |magic: u8, len: i32, body: usize| {
            let mut b = vec![0u8; 12 + body];
            b[8..12].copy_from_slice(&len.to_be_bytes());
            if body >= 5 {
                b[16] = magic;
            }
            b
        };
        let two = [batch(2, 60, 60), batch(2, 50, 50)].concat();
        assert_eq!(check_batches(Some(Bytes::from(two.clone()))).unwrap().len(), two.len());
        let code = |records: Vec<u8>| check_batches(Some(Bytes::from(records))).unwrap_err().0;
        assert_eq!(code(batch(1, 60, 60)), K::UnsupportedForMessageFormat.code());
        assert_eq!(code(batch(0, 60, 60)), K::UnsupportedForMessageFormat.code());
        assert_eq!(code([batch(2, 60, 60), batch(1, 60, 60)].concat()), K::UnsupportedForMessageFormat.code());
        assert_eq!(code(batch(7, 60, 60)), K::CorruptMessage.code());
        assert_eq!(code(batch(2, 61, 60)), K::CorruptMessage.code(), "cut short");
        assert_eq!(code(batch(2, -5, 60)), K::CorruptMessage.code());
        assert_eq!(code(vec![0; 10]), K::CorruptMessage.code());
        assert_eq!(check_batches(None).unwrap_err().0, K::CorruptMessage.code());
    }

    #[test]
    fn served_versions() {
        assert!(served(ApiKey::Produce, 3) && served(ApiKey::Produce, 9) && !served(ApiKey::Produce, 10));
        assert!(served(ApiKey::Fetch, 4) && !served(ApiKey::Fetch, 3) && !served(ApiKey::Fetch, 13));
        // librdkafka 2.0 enables its group consumer only if every v0 here is served.
        for api in
            [ApiKey::FindCoordinator, ApiKey::JoinGroup, ApiKey::SyncGroup, ApiKey::Heartbeat, ApiKey::LeaveGroup]
        {
            assert!(served(api, 0), "{api:?} v0");
        }
        assert!(served(ApiKey::InitProducerId, 0) && served(ApiKey::InitProducerId, 5));
        let v = api_versions(0);
        assert_eq!(v.api_keys.len(), SERVED.len());
    }
}
