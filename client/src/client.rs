//! [`Client`]: one blocking connection to a broker, with version negotiation and a method per
//! operation (admin, produce, list offsets). [`Producer`](crate::Producer) and
//! [`Consumer`](crate::Consumer) are built on it.

use std::time::Duration;

use bytes::Bytes;
use keel_protocol::{
    decode_response, encode_request,
    messages::{
        Acks, AlterConfigsRequest, AlterConfigsResponse, ApiVersionRange, ApiVersionsRequest, ApiVersionsResponse,
        BrokerStatusRequest, BrokerStatusResponse, CommitOffsetsPartition, CommitOffsetsRequest, CommitOffsetsResponse,
        CommitOffsetsTopic, ConfigEntry, CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest,
        DeleteTopicResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchCommittedRequest,
        FetchCommittedResponse, FetchCommittedTopic, FetchRequest, FetchResponse, ListGroupsRequest,
        ListGroupsResponse, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopic,
        MetadataRequest, MetadataResponse, OffsetQuery, ProducePartition, ProduceRequest, ProduceResponse,
        ProduceTopic,
    },
    ApiKey, ErrorCode, Offset, PartitionId, Request, RequestHeader, Response, TopicId, SUPPORTED,
};

use crate::{connection::Connection, error::ClientError, gather};

/// Connection settings. The defaults suit a broker on the same network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest wait for the TCP connection to be established.
    pub connect_timeout: Duration,
    /// Longest wait for a response, on top of the time the request itself lets the broker wait
    /// (a Fetch's `max_wait`, a Produce's `produce_timeout`). Also bounds writing a request.
    pub request_timeout: Duration,
    /// How long a Produce may wait for its acks in the broker (sent as `timeout_ms`); after it
    /// the broker answers `REQUEST_TIMED_OUT` (and the records may still be appended).
    pub produce_timeout: Duration,
    /// Largest response payload accepted; a Fetch response is bounded by its `max_bytes` plus
    /// about one batch, so keep this well above the consumer's `max_bytes`.
    pub max_response_bytes: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            produce_timeout: Duration::from_secs(10),
            max_response_bytes: 64 << 20,
        }
    }
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// Unique id assigned at creation; a topic re-created under the same name gets a new one.
    pub id: TopicId,
    /// Every partition, in partition order (`partitions[i].partition == i`).
    pub partitions: Vec<PartitionInfo>,
}

/// A partition as Metadata describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The shard (core) that owns the partition.
    pub shard: u32,
    /// Grows by one at each leadership change.
    pub leader_epoch: u32,
    /// First offset that can be fetched; grows with retention, never moves back.
    pub log_start_offset: u64,
    /// One past the last committed record (where a caught-up consumer fetches next); never
    /// moves back, `>= log_start_offset`.
    pub high_watermark: u64,
}

/// A blocking client: one TCP connection, one request at a time.
///
/// On connecting it sends ApiVersions and remembers, per API, the highest version both sides
/// speak; a call for an API the broker does not support fails with
/// [`ClientError::Unsupported`] without sending anything. After a connection failure, a timeout
/// or an undecodable response the connection is dropped (a late response could otherwise be
/// taken for the next request's); the next call reconnects and negotiates again.
pub struct Client {
    /// `HOST:PORT` as given to [`Client::connect`], for reconnecting.
    addr: String,
    client_id: String,
    config: ClientConfig,
    /// `None` after a failure that leaves the connection's state unknown.
    conn: Option<Connection>,
    /// Version to use per API, indexed by key; `None` if the broker supports none we speak.
    versions: Vec<Option<u16>>,
    broker_version: String,
    next_correlation_id: u32,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`) with the default [`ClientConfig`].
    pub fn connect(addr: &str, client_id: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, client_id, ClientConfig::default())
    }

    /// Connects to `addr` (`HOST:PORT`) and negotiates API versions.
    pub fn connect_with(addr: &str, client_id: &str, config: ClientConfig) -> Result<Client, ClientError> {
        if client_id.len() > keel_protocol::MAX_STRING_BYTES {
            return Err(ClientError::InvalidArgument(format!("client id of {} bytes is too long", client_id.len())));
        }
        let mut client = Client {
            addr: addr.to_owned(),
            client_id: client_id.to_owned(),
            config,
            conn: None,
            versions: Vec::new(),
            broker_version: String::new(),
            next_correlation_id: 0,
        };
        client.reconnect()?;
        Ok(client)
    }

    /// The broker's software version, from ApiVersions.
    pub fn broker_version(&self) -> &str {
        &self.broker_version
    }

    /// The version this client uses for `api`, or `None` if the broker supports none it speaks.
    pub fn api_version(&self, api: ApiKey) -> Option<u16> {
        self.versions.get(usize::from(api.code())).copied().flatten()
    }

    /// The connection settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Creates topic `name` with `partitions` partitions and the given config overrides.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let configs = configs.iter().map(|(key, value)| ConfigEntry { key: key.clone(), value: value.clone() });
        let request = CreateTopicRequest { name: name.to_owned(), partitions, configs: configs.collect() };
        // The broker answers once every partition's log exists: allow for thousands of them.
        let r = self.exchange(request, Duration::from_millis(2 * u64::from(partitions)))?;
        check_code(r.error_code, name, r.error_message)
    }

    /// Deletes topic `name` ([`ClientError::UnknownTopic`] if it does not exist).
    pub fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        // Deleting thousands of partitions' files takes the broker a while.
        let r = self.exchange(DeleteTopicRequest { name: name.to_owned() }, Duration::from_secs(30))?;
        check_code(r.error_code, name, r.error_message)
    }

    /// Describes `topics` (`None` = every topic). A requested topic that does not exist fails
    /// the call with [`ClientError::UnknownTopic`].
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<Vec<TopicInfo>, ClientError> {
        let r = self.exchange(MetadataRequest { topics: topics.map(<[String]>::to_vec) }, Duration::ZERO)?;
        r.topics.into_iter().map(topic_info).collect()
    }

    /// Metadata of one topic.
    pub fn topic(&mut self, name: &str) -> Result<TopicInfo, ClientError> {
        let mut topics = self.metadata(Some(&[name.to_owned()]))?;
        match (topics.pop(), topics.is_empty()) {
            (Some(t), true) if t.name == name => Ok(t),
            _ => Err(ClientError::Protocol(format!("Metadata for {name:?} did not answer with that one topic"))),
        }
    }

    /// Every config of topic `name` with its effective value: `(key, value, is_default)`.
    pub fn describe_configs(&mut self, name: &str) -> Result<Vec<(String, String, bool)>, ClientError> {
        let r = self.exchange(DescribeConfigsRequest { topics: vec![name.to_owned()] }, Duration::ZERO)?;
        let [topic] = <[_; 1]>::try_from(r.topics)
            .map_err(|t| ClientError::Protocol(format!("DescribeConfigs answered {} topics for 1", t.len())))?;
        check_code(topic.error_code, name, None)?;
        Ok(topic.configs.into_iter().map(|c| (c.key, c.value, c.is_default)).collect())
    }

    /// Sets the configs in `set` and resets the keys in `remove` to the broker's defaults, all
    /// or nothing.
    pub fn alter_configs(
        &mut self,
        name: &str,
        set: &[(String, String)],
        remove: &[String],
    ) -> Result<(), ClientError> {
        let request = AlterConfigsRequest {
            topic: name.to_owned(),
            set: set.iter().map(|(key, value)| ConfigEntry { key: key.clone(), value: value.clone() }).collect(),
            remove: remove.to_vec(),
        };
        let r = self.exchange(request, Duration::ZERO)?;
        check_code(r.error_code, name, r.error_message)
    }

    /// The broker's version, data directory and shards.
    pub fn broker_status(&mut self) -> Result<BrokerStatusResponse, ClientError> {
        self.exchange(BrokerStatusRequest {}, Duration::ZERO)
    }

    /// Stores `group`'s position in partitions of `topic`: `(partition, next offset to read)`.
    /// All are written in one record batch; any partition's error fails the call.
    pub fn commit_offsets(&mut self, group: &str, topic: &str, offsets: &[(u32, u64)]) -> Result<(), ClientError> {
        let partitions = offsets
            .iter()
            .map(|&(p, offset)| CommitOffsetsPartition {
                partition: PartitionId(p),
                offset: Offset(offset),
                metadata: None,
            })
            .collect();
        let request = CommitOffsetsRequest {
            group: group.to_owned(),
            topics: vec![CommitOffsetsTopic { name: topic.to_owned(), partitions }],
        };
        let r = self.exchange(request, Duration::ZERO)?;
        for t in r.topics {
            for p in t.partitions {
                check_partition_code(p.error_code, &t.name, p.partition.0, None)?;
            }
        }
        Ok(())
    }

    /// `group`'s committed positions: `(topic, partition, offset)`, for `topic` only or, with
    /// `None`, for every topic the group committed.
    pub fn fetch_committed(
        &mut self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<(String, u32, u64)>, ClientError> {
        let topics = match topic {
            Some(name) => {
                let partitions = self.topic(name)?.partitions.iter().map(|p| PartitionId(p.partition)).collect();
                Some(vec![FetchCommittedTopic { name: name.to_owned(), partitions }])
            }
            None => None,
        };
        let r = self.exchange(FetchCommittedRequest { group: group.to_owned(), topics }, Duration::ZERO)?;
        let mut out = Vec::new();
        for t in r.topics {
            for p in t.partitions {
                check_partition_code(p.error_code, &t.name, p.partition.0, None)?;
                if let Some(offset) = p.offset {
                    out.push((t.name.clone(), p.partition.0, offset.0));
                }
            }
        }
        Ok(out)
    }

    /// Every group with committed offsets.
    pub fn list_groups(&mut self) -> Result<Vec<String>, ClientError> {
        Ok(self.exchange(ListGroupsRequest {}, Duration::ZERO)?.groups)
    }

    /// Looks up offsets in `topic`: for each `(partition, query)`, the offset found, or `None`
    /// when no record has a timestamp at or after a [`OffsetQuery::Timestamp`]. Results are
    /// in the order of `queries`.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        queries: &[(u32, OffsetQuery)],
    ) -> Result<Vec<(u32, Option<u64>)>, ClientError> {
        for (_, query) in queries {
            if let OffsetQuery::Timestamp(ms @ ..0) = query {
                return Err(ClientError::InvalidArgument(format!("timestamp {ms} is negative")));
            }
        }
        let partitions = queries
            .iter()
            .map(|&(p, timestamp)| ListOffsetsPartition { partition: PartitionId(p), timestamp })
            .collect();
        let request = ListOffsetsRequest { topics: vec![ListOffsetsTopic { name: topic.to_owned(), partitions }] };
        let r = self.exchange(request, Duration::ZERO)?;
        let answered = sole_topic(r.topics.into_iter().map(|t| (t.name, t.partitions)), topic, "ListOffsets")?;
        check_partitions(answered.iter().map(|p| p.partition.0), queries.iter().map(|q| q.0), "ListOffsets")?;
        answered
            .into_iter()
            .map(|p| {
                check_partition_code(p.error_code, topic, p.partition.0, None)?;
                Ok((p.partition.0, p.offset.map(|o| o.0)))
            })
            .collect()
    }

    /// Appends one or more RecordBatch v2 batches (back to back in `records`) to a partition
    /// and returns the offset of the first record. `acks` must not be [`Acks::None`] (there is
    /// no answer to take an offset from); use [`Client::produce_many`] for that.
    pub fn produce(&mut self, topic: &str, partition: u32, records: Bytes, acks: Acks) -> Result<u64, ClientError> {
        if acks == Acks::None {
            return Err(ClientError::InvalidArgument("acks = 0 gets no base offset; use produce_many".into()));
        }
        let offsets = self.produce_many(topic, vec![(partition, records)], acks)?;
        Ok(offsets[0].1)
    }

    /// Appends batches to several partitions of `topic` in one Produce request and returns
    /// `(partition, base offset)` for each, in order; empty with [`Acks::None`], which gets no
    /// answer. The first partition the broker refused fails the call (the others may have been
    /// appended).
    pub fn produce_many(
        &mut self,
        topic: &str,
        batches: Vec<(u32, Bytes)>,
        acks: Acks,
    ) -> Result<Vec<(u32, u64)>, ClientError> {
        let mut answered = self.produce_topics(vec![(topic.to_owned(), batches)], acks)?;
        Ok(answered.pop().unwrap_or_default())
    }

    /// Like [`Client::produce_many`] over several topics in one request: `(topic, batches)` in,
    /// `(partition, base offset)` per batch out, topic by topic in request order.
    pub fn produce_topics(
        &mut self,
        topics: Vec<(String, Vec<(u32, Bytes)>)>,
        acks: Acks,
    ) -> Result<Vec<Vec<(u32, u64)>>, ClientError> {
        let wanted: Vec<(String, Vec<u32>)> =
            topics.iter().map(|(name, batches)| (name.clone(), batches.iter().map(|b| b.0).collect())).collect();
        let topics = topics
            .into_iter()
            .map(|(name, batches)| ProduceTopic {
                name,
                partitions: batches
                    .into_iter()
                    .map(|(p, records)| ProducePartition { partition: PartitionId(p), records })
                    .collect(),
            })
            .collect();
        let timeout_ms = u32::try_from(self.config.produce_timeout.as_millis()).unwrap_or(u32::MAX);
        let request = ProduceRequest { acks, timeout_ms, topics };
        let Some(r) = self.call(Request::Produce(request), self.config.produce_timeout)? else {
            return Ok(Vec::new());
        };
        let r = ProduceRequest::unwrap(r)?;
        let names = wanted.iter().map(|w| w.0.as_str());
        let answered = the_topics(r.topics.into_iter().map(|t| (t.name, t.partitions)), names, "Produce")?;
        answered
            .into_iter()
            .zip(wanted)
            .map(|(partitions, (topic, asked))| {
                check_partitions(partitions.iter().map(|p| p.partition.0), asked.into_iter(), "Produce")?;
                partitions
                    .into_iter()
                    .map(|p| {
                        let partition = p.partition.0;
                        check_partition_code(p.error_code, &topic, partition, p.error_message)?;
                        let base = p.base_offset.ok_or_else(|| {
                            ClientError::Protocol(format!(
                                "Produce: {topic}/{partition} succeeded without a base offset"
                            ))
                        })?;
                        Ok((partition, base.0))
                    })
                    .collect()
            })
            .collect()
    }

    /// Sends a Fetch and returns the broker's answer as is; the caller checks the per-partition
    /// codes. The broker may hold it for `max_wait`.
    pub(crate) fn fetch(&mut self, request: FetchRequest, max_wait: Duration) -> Result<FetchResponse, ClientError> {
        self.exchange(request, max_wait)
    }

    /// Sends `request` and returns its typed response; `extra_wait` is how long the request
    /// itself lets the broker wait, added to the request timeout.
    fn exchange<R: Exchange>(&mut self, request: R, extra_wait: Duration) -> Result<R::Response, ClientError> {
        let response = self.call(request.wrap(), extra_wait)?;
        R::unwrap(response.expect("every request but Produce with acks = 0 gets a response"))
    }

    /// Sends `request` and reads its response (`None` for a request that gets none). Drops the
    /// connection on any failure that leaves its state unknown.
    fn call(&mut self, request: Request, extra_wait: Duration) -> Result<Option<Response>, ClientError> {
        let api = request.api_key();
        let version = self.api_version(api).ok_or(ClientError::Unsupported { api })?;
        if self.conn.is_none() {
            self.reconnect()?;
        }
        let result = self.round_trip(&request, version, extra_wait);
        if matches!(result, Err(ClientError::Io(_) | ClientError::Timeout | ClientError::Protocol(_))) {
            self.conn = None;
        }
        result
    }

    fn round_trip(
        &mut self,
        request: &Request,
        version: u16,
        extra_wait: Duration,
    ) -> Result<Option<Response>, ClientError> {
        let api = request.api_key();
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader {
            api_key: api.code(),
            api_version: version,
            correlation_id,
            client_id: self.client_id.clone(),
        };
        let mut frame = Vec::new();
        // A Produce with enough record bytes leaves its batches out of the frame and has them
        // written from where they are (same bytes on the wire; see `gather`).
        let gathered = match request {
            Request::Produce(produce)
                if produce.topics.iter().flat_map(|t| &t.partitions).map(|p| p.records.len()).sum::<usize>()
                    >= gather::GATHER_MIN_RECORD_BYTES =>
            {
                gather::encode_produce_skeleton(&header, produce, &mut frame).map(|points| (produce, points))
            }
            _ => None,
        };
        if gathered.is_none() {
            frame.clear();
            encode_request(&header, request, &mut frame);
        }
        let timeout = self.config.request_timeout;
        let conn = self.conn.as_mut().expect("call() connects first");
        match &gathered {
            Some((produce, points)) => conn.send_gathered(&gather::pieces(&frame, points, produce), timeout)?,
            None => conn.send(&frame, timeout)?,
        }
        if !request.expects_response() {
            return Ok(None);
        }
        let payload = conn.receive(timeout.saturating_add(extra_wait))?;
        let (answered, response) = decode_response(api, version, &payload)
            .map_err(|e| ClientError::Protocol(format!("undecodable {api} response: {e}")))?;
        if answered != correlation_id {
            return Err(ClientError::Protocol(format!(
                "{api} response has correlation id {answered}, expected {correlation_id}"
            )));
        }
        match response {
            Ok(body) => Ok(Some(body)),
            Err(top) => Err(ClientError::Broker { code: top.code, message: top.message }),
        }
    }

    /// Opens a new connection and negotiates versions on it.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        self.conn = None;
        let conn = Connection::open(&self.addr, self.config.connect_timeout, self.config.max_response_bytes)?;
        self.conn = Some(conn);
        // ApiVersions v1 is always accepted (docs/protocol.md, Versioning).
        self.versions = vec![None; SUPPORTED.len()];
        self.versions[usize::from(ApiKey::ApiVersions.code())] = Some(1);
        let result = self.call(Request::ApiVersions(ApiVersionsRequest {}), Duration::ZERO);
        let r = ApiVersionsRequest::unwrap(result?.expect("ApiVersions gets a response"))?;
        self.versions = negotiate(&r.apis);
        self.broker_version = r.broker_version;
        Ok(())
    }
}

/// The version to use for each API (indexed by key): the highest version both this client
/// ([`SUPPORTED`]) and the broker (`broker`) speak, `None` if the ranges do not overlap or the
/// broker does not list the API.
pub(crate) fn negotiate(broker: &[ApiVersionRange]) -> Vec<Option<u16>> {
    SUPPORTED
        .iter()
        .map(|&(api, min, max)| {
            let theirs = broker.iter().find(|r| r.api_key == api.code())?;
            let version = max.min(theirs.max_version);
            (version >= min.max(theirs.min_version)).then_some(version)
        })
        .collect()
}

/// A request body and the response body that answers it.
trait Exchange {
    type Response;
    fn wrap(self) -> Request;
    fn unwrap(response: Response) -> Result<Self::Response, ClientError>;
}

macro_rules! exchange {
    ($($request:ident => $response:ident as $variant:ident,)*) => {$(
        impl Exchange for $request {
            type Response = $response;

            fn wrap(self) -> Request {
                Request::$variant(self)
            }

            fn unwrap(response: Response) -> Result<$response, ClientError> {
                match response {
                    Response::$variant(body) => Ok(body),
                    other => Err(ClientError::Protocol(format!(
                        "expected a {} response, got {}",
                        ApiKey::$variant,
                        other.api_key()
                    ))),
                }
            }
        }
    )*};
}

exchange! {
    ApiVersionsRequest => ApiVersionsResponse as ApiVersions,
    MetadataRequest => MetadataResponse as Metadata,
    CreateTopicRequest => CreateTopicResponse as CreateTopic,
    DeleteTopicRequest => DeleteTopicResponse as DeleteTopic,
    ProduceRequest => ProduceResponse as Produce,
    FetchRequest => FetchResponse as Fetch,
    ListOffsetsRequest => ListOffsetsResponse as ListOffsets,
    DescribeConfigsRequest => DescribeConfigsResponse as DescribeConfigs,
    AlterConfigsRequest => AlterConfigsResponse as AlterConfigs,
    BrokerStatusRequest => BrokerStatusResponse as BrokerStatus,
    CommitOffsetsRequest => CommitOffsetsResponse as CommitOffsets,
    FetchCommittedRequest => FetchCommittedResponse as FetchCommitted,
    ListGroupsRequest => ListGroupsResponse as ListGroups,
}

/// `Ok` for `NONE`, else the error for a code about `topic`.
fn check_code(code: ErrorCode, topic: &str, message: Option<String>) -> Result<(), ClientError> {
    match code {
        ErrorCode::None => Ok(()),
        code => Err(ClientError::from_code(code, topic, "", message)),
    }
}

/// `Ok` for `NONE`, else the error for a code about one partition of `topic`.
pub(crate) fn check_partition_code(
    code: ErrorCode,
    topic: &str,
    partition: u32,
    message: Option<String>,
) -> Result<(), ClientError> {
    match code {
        ErrorCode::None => Ok(()),
        code => Err(ClientError::from_code(code, topic, &format!("partition {partition}"), message)),
    }
}

/// The partitions answered for `topic`, which must be the only topic in the response.
pub(crate) fn sole_topic<P>(
    topics: impl Iterator<Item = (String, Vec<P>)>,
    topic: &str,
    api: &str,
) -> Result<Vec<P>, ClientError> {
    let mut answered = the_topics(topics, std::iter::once(topic), api)?;
    Ok(answered.pop().unwrap_or_default())
}

/// The partitions answered per topic; the response must list exactly the requested topics, in
/// request order.
pub(crate) fn the_topics<'a, P>(
    topics: impl Iterator<Item = (String, Vec<P>)>,
    mut asked: impl Iterator<Item = &'a str>,
    api: &str,
) -> Result<Vec<Vec<P>>, ClientError> {
    let mut answered = Vec::new();
    for (name, partitions) in topics {
        match asked.next() {
            Some(want) if want == name => answered.push(partitions),
            Some(want) => {
                return Err(ClientError::Protocol(format!(
                    "{api} response answers topic {name:?} where {want:?} was asked"
                )))
            }
            None => return Err(ClientError::Protocol(format!("{api} response answers topic {name:?}, not asked"))),
        }
    }
    match asked.next() {
        Some(want) => Err(ClientError::Protocol(format!("{api} response does not answer for topic {want:?}"))),
        None => Ok(answered),
    }
}

/// The response must list exactly the requested partitions, in request order.
pub(crate) fn check_partitions(
    answered: impl Iterator<Item = u32>,
    asked: impl Iterator<Item = u32>,
    api: &str,
) -> Result<(), ClientError> {
    if answered.eq(asked) {
        Ok(())
    } else {
        Err(ClientError::Protocol(format!("{api} response does not list the requested partitions in order")))
    }
}

fn topic_info(t: keel_protocol::messages::MetadataTopic) -> Result<TopicInfo, ClientError> {
    check_code(t.error_code, &t.name, None)?;
    let partitions: Vec<PartitionInfo> = t
        .partitions
        .iter()
        .map(|p| PartitionInfo {
            partition: p.partition.0,
            shard: p.shard.0,
            leader_epoch: p.leader_epoch,
            log_start_offset: p.log_start_offset.0,
            high_watermark: p.high_watermark.0,
        })
        .collect();
    if partitions.iter().enumerate().any(|(i, p)| p.partition as usize != i) {
        return Err(ClientError::Protocol(format!("Metadata lists the partitions of {:?} out of order", t.name)));
    }
    Ok(TopicInfo { name: t.name, id: t.topic_id, partitions })
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpListener,
    };

    use keel_protocol::{decode_frame, decode_request, encode_response};

    use super::*;

    fn range(api: ApiKey, min: u16, max: u16) -> ApiVersionRange {
        ApiVersionRange { api_key: api.code(), min_version: min, max_version: max }
    }

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        let v = negotiate(&[range(ApiKey::Metadata, 1, 5), range(ApiKey::Fetch, 2, 3), range(ApiKey::Produce, 1, 1)]);
        assert_eq!(v.len(), SUPPORTED.len());
        assert_eq!(v[ApiKey::Metadata as usize], Some(1));
        assert_eq!(v[ApiKey::Fetch as usize], None, "no overlap");
        assert_eq!(v[ApiKey::Produce as usize], Some(1));
        assert_eq!(v[ApiKey::ListGroups as usize], None, "not listed");
    }

    /// A one-connection fake broker: answers ApiVersions with `apis`, then each further request
    /// with `answer(correlation_id, request)`.
    fn fake_broker(
        apis: Vec<ApiVersionRange>,
        answer: fn(u32, Request) -> Vec<u8>,
    ) -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut served = 0;
            loop {
                while let Some(frame) = decode_frame(&buf, u32::MAX).unwrap() {
                    let payload = Bytes::copy_from_slice(&buf[frame.payload.clone()]);
                    buf.drain(..frame.consumed);
                    let (header, request) = decode_request(&payload).unwrap();
                    let out = if let Request::ApiVersions(_) = request {
                        let body = ApiVersionsResponse { apis: apis.clone(), broker_version: "fake".into() };
                        let mut out = Vec::new();
                        encode_response(header.correlation_id, 1, &Ok(Response::ApiVersions(body)), &mut out);
                        out
                    } else {
                        served += 1;
                        answer(header.correlation_id, request)
                    };
                    stream.write_all(&out).unwrap();
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return served,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        (addr, handle)
    }

    fn status_response(correlation_id: u32) -> Vec<u8> {
        let body = BrokerStatusResponse { broker_version: "fake".into(), data_dir: "/d".into(), shards: vec![] };
        let mut out = Vec::new();
        encode_response(correlation_id, 1, &Ok(Response::BrokerStatus(body)), &mut out);
        out
    }

    #[test]
    fn unsupported_apis_fail_locally() {
        let apis = vec![range(ApiKey::ApiVersions, 1, 1), range(ApiKey::BrokerStatus, 1, 1)];
        let (addr, broker) = fake_broker(apis, |id, _| status_response(id));
        let mut client = Client::connect(&addr, "unit").unwrap();
        assert_eq!(client.broker_version(), "fake");
        assert_eq!(client.api_version(ApiKey::Metadata), None);
        assert!(matches!(client.metadata(None), Err(ClientError::Unsupported { api: ApiKey::Metadata })));
        assert!(matches!(client.create_topic("t", 1, &[]), Err(ClientError::Unsupported { api: ApiKey::CreateTopic })));
        assert_eq!(client.broker_status().unwrap().data_dir, "/d");
        drop(client);
        assert_eq!(broker.join().unwrap(), 1, "only BrokerStatus reached the broker");
    }

    #[test]
    fn a_wrong_correlation_id_is_a_protocol_error_and_drops_the_connection() {
        let apis = SUPPORTED.iter().map(|&(api, min, max)| range(api, min, max)).collect();
        let (addr, broker) = fake_broker(apis, |id, _| status_response(id.wrapping_add(7)));
        let mut client = Client::connect(&addr, "unit").unwrap();
        let e = client.broker_status().unwrap_err();
        assert!(matches!(&e, ClientError::Protocol(m) if m.contains("correlation id")), "{e}");
        assert!(client.conn.is_none());
        broker.join().unwrap();
        // The fake broker is gone: reconnecting fails with an I/O error, not a hang.
        assert!(matches!(client.broker_status(), Err(ClientError::Io(_))));
    }

    #[test]
    fn top_level_errors_are_broker_errors() {
        let apis = SUPPORTED.iter().map(|&(api, min, max)| range(api, min, max)).collect();
        let (addr, broker) = fake_broker(apis, |id, _| {
            let mut out = Vec::new();
            let top = keel_protocol::TopLevelError { code: ErrorCode::BrokerShuttingDown, message: Some("bye".into()) };
            encode_response(id, 1, &Err(top), &mut out);
            out
        });
        let mut client = Client::connect(&addr, "unit").unwrap();
        let e = client.broker_status().unwrap_err();
        assert!(
            matches!(&e, ClientError::Broker { code: ErrorCode::BrokerShuttingDown, message: Some(m) } if m == "bye"),
            "{e}"
        );
        assert!(e.is_retriable());
        assert!(client.conn.is_some(), "a top-level error leaves the connection usable");
        drop(client);
        broker.join().unwrap();
    }

    #[test]
    fn unresolvable_addresses_are_invalid_arguments() {
        assert!(matches!(Client::connect("no-port", "unit"), Err(ClientError::InvalidArgument(_))));
    }
}
