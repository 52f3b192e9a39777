//! One client connection: read a frame, answer it, repeat — one request at a time, so responses
//! leave in request order and a connection holds at most one request (≤ `max_frame_bytes`) in
//! memory, as Kafka does by muting a connection while its request is served. A request's parts
//! for other shards go to them over the shard runtime's bounded queues, one call per shard; a
//! native connection whose requests keep going to one other shard moves to it (`Affinity`).
//!
//! Bad input: a length prefix over `max_frame_bytes` closes the connection before anything is
//! allocated; a frame whose header decodes but whose body does not gets a top-level error; a
//! frame without a readable header closes the connection. Nothing a client sends panics the
//! broker.

use std::{
    io,
    os::fd::AsRawFd,
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::{net::TcpStream, sync::StaticPermit};
use keel_protocol::{
    decode_frame, decode_request, decode_request_header, encode_response,
    messages::{
        Acks, AlterConfigsResponse, ApiVersionRange, ApiVersionsResponse, BrokerStatusResponse,
        CommitOffsetsPartitionResponse, CommitOffsetsRequest, CommitOffsetsResponse, CommitOffsetsTopicResponse,
        CreateTopicResponse, DeleteTopicResponse, DescribeConfigsResponse, DescribeConfigsTopic,
        DescribedConfig as WireConfigValue, FetchCommittedPartitionResponse, FetchCommittedRequest,
        FetchCommittedResponse, FetchCommittedTopicResponse, FetchPartitionResponse, FetchRequest, FetchResponse,
        FetchTopicResponse, ListGroupsResponse, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
        ListOffsetsTopicResponse, MetadataPartition, MetadataResponse, MetadataTopic, OffsetQuery,
        ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse, ShardStatus,
    },
    ApiKey, ErrorCode, Offset, PartitionId, Request, Response, TopLevelError,
};
use keel_shards::ShardId;
use keel_storage::{batch::BatchView, io::join_all, AppendWait};
use tracing::debug;

use crate::{
    broker::{ShardState, SINGLE_NODE_TERM},
    gather::{self, Splices},
    metadata::Metadata,
    offsets,
    partitions::PartitionKey,
    routing::{Appended, Failure, FetchPart, PartitionOffsets, ShardRequest, ShardResponse},
};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 << 10;

/// Request and response bytes charged to the shard's memory budget
/// ([`ShardState::request_memory`]); released, and the in-flight gauge lowered, when dropped.
/// The Kafka listener's connections (`crate::kafka`) share it.
pub(crate) struct MemoryCharge {
    _permit: StaticPermit,
    bytes: u64,
    state: Rc<ShardState>,
}

impl MemoryCharge {
    /// Waits until `bytes` fit in the shard's budget (the caller stops reading its socket
    /// meanwhile: back-pressure); `None` if the broker stops first.
    pub(crate) async fn acquire(state: &Rc<ShardState>, bytes: u64) -> Option<MemoryCharge> {
        let permit =
            futures_lite::future::or(async { state.request_memory.acquire_static_permit(bytes).await.ok() }, async {
                state.shard.stopping().await;
                None
            })
            .await?;
        state.stats().in_flight_bytes.fetch_add(bytes, Relaxed);
        Some(MemoryCharge { _permit: permit, bytes, state: state.clone() })
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.state.stats().in_flight_bytes.fetch_sub(self.bytes, Relaxed);
    }
}

/// Serves a native-protocol connection; `leftover`: bytes already read from it (by the shard
/// it moved from, see `Affinity`).
pub async fn run(stream: TcpStream, state: &Rc<ShardState>, leftover: BytesMut) {
    let max_frame = state.config.max_frame_bytes;
    serve_frames(stream, state, max_frame, "native", leftover, async |payload, out, answer_charge| {
        answer(state, &payload, out, answer_charge).await
    })
    .await
}

/// What answering one request tells the frame loop.
pub(crate) struct Answered {
    /// False: close the connection.
    pub(crate) keep_open: bool,
    /// Which shards own the request's partitions.
    pub(crate) touched: Touched,
    /// Records to send in the middle of the answer, at these positions of the answer buffer
    /// (a Fetch answer's records, not copied into it: `gather`).
    pub(crate) splices: Splices,
}

impl Answered {
    pub(crate) fn closing() -> Answered {
        Answered { keep_open: false, touched: Touched::Nothing, splices: Splices::new() }
    }

    pub(crate) fn open() -> Answered {
        Answered { keep_open: true, touched: Touched::Nothing, splices: Splices::new() }
    }
}

/// The shards owning a request's partitions: `Nothing` for requests without partitions to
/// route (and for the Kafka listener's, whose connections never move).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Touched {
    Nothing,
    One(ShardId),
    Several,
}

/// After this many Produce or Fetch requests in a row whose partitions all belong to one other
/// shard, a native connection moves to that shard ([`Affinity`]).
pub(crate) const MOVE_AFTER: u32 = 8;

/// Where a native connection would be served best. Connections land on a shard at random
/// (SO_REUSEPORT), and every request part for another shard costs a call there and back, and
/// usually a wake-up of each shard. A connection whose requests all go to one other shard (a
/// consumer of that shard's partitions, or a client that keeps one connection per shard) is
/// handed to that shard after [`MOVE_AFTER`] such requests in a row: its socket and the bytes
/// already read travel to it between two requests, so the client sees nothing but faster
/// answers. A connection whose requests span shards stays where it is.
#[derive(Default)]
struct Affinity {
    /// The other shard the last requests all went to, and how many in a row.
    streak: Option<(ShardId, u32)>,
}

impl Affinity {
    /// Notes a request's shards; the shard to move to, once the streak is long enough.
    fn note(&mut self, touched: Touched, here: ShardId) -> Option<ShardId> {
        match touched {
            Touched::Nothing => None,
            Touched::One(shard) if shard != here => {
                let n = match self.streak {
                    Some((s, n)) if s == shard => n + 1,
                    _ => 1,
                };
                self.streak = Some((shard, n));
                (n >= MOVE_AFTER).then_some(shard)
            }
            Touched::One(_) | Touched::Several => {
                self.streak = None;
                None
            }
        }
    }
}

/// The shards owning the partitions of a Produce or Fetch.
fn touched(state: &ShardState, request: &Request) -> Touched {
    let mut touched = Touched::Nothing;
    let mut note = |topic: &str, partition: u32| {
        if let Some((_, shard)) = state.route(topic, partition) {
            touched = match touched {
                Touched::Nothing => Touched::One(shard),
                Touched::One(s) if s == shard => touched,
                _ => Touched::Several,
            };
        }
    };
    match request {
        Request::Produce(r) => {
            r.topics.iter().for_each(|t| t.partitions.iter().for_each(|p| note(&t.name, p.partition.0)))
        }
        Request::Fetch(r) => {
            r.topics.iter().for_each(|t| t.partitions.iter().for_each(|p| note(&t.name, p.partition.0)))
        }
        _ => {}
    }
    touched
}

/// The frame loop both listeners share (the Kafka one in `crate::kafka`; both frame with a 4-byte
/// big-endian length): read a whole frame, hand its payload to `answer`, which appends the
/// response frame (if any) to `out` and returns false if the connection must close, write the
/// response, repeat. One request at a time, so responses leave in request order. A frame over
/// `max_frame` closes the connection before anything is allocated; a large frame's bytes are
/// charged to the shard's memory budget before its body is read (back-pressure), and `answer`
/// may charge its response's bytes to `answer_charge`; both are released once the response is
/// written. Between two requests the connection may move to another shard ([`Affinity`]);
/// `leftover` is what the shard it came from had read past its last request.
pub(crate) async fn serve_frames<A>(
    mut stream: TcpStream,
    state: &Rc<ShardState>,
    max_frame: u32,
    protocol: &'static str,
    leftover: BytesMut,
    mut answer: A,
) where
    A: AsyncFnMut(Bytes, &mut Vec<u8>, &mut Option<MemoryCharge>) -> Answered,
{
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut buf = leftover;
    buf.reserve(READ_CHUNK);
    let mut affinity = Affinity::default();
    let mut drained = false; // the last read emptied the socket
    let mut out = Vec::new();
    let mut frame_charge: Option<MemoryCharge> = None;
    let mut answer_charge: Option<MemoryCharge> = None;
    loop {
        let frame = match decode_frame(&buf, max_frame) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if state.shard.is_stopping() && buf.is_empty() {
                    return; // between requests at shutdown: close
                }
                // An idle connection closes when the broker stops; one mid-request is read on.
                let idle = buf.is_empty();
                // Read what the frame still lacks (its size passed the max_frame check in
                // decode_frame), at least a chunk.
                let (frame_len, missing) = match buf.first_chunk::<4>() {
                    Some(prefix) => {
                        let len = u32::from_be_bytes(*prefix) as usize + 4;
                        (len, len.saturating_sub(buf.len()))
                    }
                    None => (0, 0),
                };
                if frame_len > READ_CHUNK && frame_charge.is_none() {
                    // A large frame: charge it before reading (and allocating) its body.
                    let Some(charge) = MemoryCharge::acquire(state, frame_len as u64).await else { return };
                    frame_charge = Some(charge);
                }
                let want = missing.max(READ_CHUNK);
                let read = async { Some(read_into_spare(&stream, &mut buf, want, &mut drained).await) };
                let stop = async {
                    if idle {
                        state.shard.stopping().await;
                        None
                    } else {
                        std::future::pending().await
                    }
                };
                match futures_lite::future::or(read, stop).await {
                    None => return,
                    Some(Ok(0)) => return,
                    Some(Ok(n)) => {
                        state.stats().bytes_in.fetch_add(n as u64, Relaxed);
                    }
                    Some(Err(e)) => {
                        debug!(%peer, protocol, error = %e, "read failed; closing");
                        return;
                    }
                }
                continue;
            }
            Err(e) => {
                crate::client_warn!(state, %peer, protocol, error = %e, "closing connection");
                return;
            }
        };
        let payload: Bytes = buf.split_to(frame.consumed).freeze().slice(frame.payload);
        out.clear();
        let answered = answer(payload, &mut out, &mut answer_charge).await;
        if !answered.keep_open {
            return;
        }
        if !out.is_empty() {
            let written = if answered.splices.is_empty() {
                stream.write_all(&out).await
            } else {
                gather::write_gathered(&mut stream, &out, &answered.splices).await
            };
            if let Err(e) = written {
                debug!(%peer, protocol, error = %e, "write failed; closing");
                return;
            }
            let spliced: usize = answered.splices.iter().map(|(_, records)| records.len()).sum();
            state.stats().bytes_out.fetch_add((out.len() + spliced) as u64, Relaxed);
        }
        // Give back what a large request or answer took: a connection keeps one read chunk.
        if out.capacity() > READ_CHUNK {
            out = Vec::new();
        }
        if buf.is_empty() && buf.capacity() > 2 * READ_CHUNK {
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        frame_charge = None;
        answer_charge = None;
        if let Some(to) = affinity.note(answered.touched, state.id()) {
            if state.shard.is_stopping() {
                continue;
            }
            // AdoptConnection serves a native connection: only those name a `Touched` shard.
            debug_assert_eq!(protocol, "native", "only native connections move");
            match move_to(state, to, stream, &mut buf, &peer).await {
                Ok(()) => return,
                Err(kept) => {
                    stream = kept;
                    affinity = Affinity::default();
                }
            }
        }
    }
}

/// Reads at most `max` bytes from `stream` onto the end of `buf`, straight into its spare
/// capacity: no zero-fill first, which for a 512 KiB Produce frame cost as much as a copy of it
/// (a tenth of the broker's CPU under a closed-loop produce load). Waits, without reading, until
/// there is something to read. 0: the peer closed the connection. `drained`: whether the last
/// read emptied the socket (it returned less than it asked for); the next read then waits for
/// more before it tries, rather than spend a `recv` that finds nothing (as glommio's reads do).
async fn read_into_spare(stream: &TcpStream, buf: &mut BytesMut, max: usize, drained: &mut bool) -> io::Result<usize> {
    buf.reserve(max);
    loop {
        if *drained {
            stream.readable().await?;
            *drained = false;
        }
        let spare = buf.spare_capacity_mut();
        debug_assert!(spare.len() >= max);
        // SAFETY: recv writes at most `max` bytes at the start of `buf`'s spare capacity, which
        // holds at least `max`, through a raw pointer (no reference to uninitialized bytes);
        // the descriptor is the stream's, open while it lives.
        let n = unsafe { libc::recv(stream.as_raw_fd(), spare.as_mut_ptr().cast(), max, libc::MSG_DONTWAIT) };
        if let Ok(n) = usize::try_from(n) {
            // SAFETY: recv initialized these `n` bytes, right after the buffer's contents.
            unsafe { buf.set_len(buf.len() + n) };
            *drained = n < max;
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            // Nothing yet: wait until there is (or the peer closed), without reading it.
            io::ErrorKind::WouldBlock => *drained = true,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// Hands the connection to shard `to`, between two requests: a duplicate of its socket and
/// the bytes read past the last request (`buf`). From then on it is that shard's, or closed if
/// that shard refused it. Gives the stream back, untouched, if its socket cannot be duplicated:
/// the connection then stays here.
async fn move_to(
    state: &ShardState,
    to: ShardId,
    stream: TcpStream,
    buf: &mut BytesMut,
    peer: &str,
) -> Result<(), TcpStream> {
    // SAFETY: the descriptor is the stream's, open while `stream` lives.
    let socket = match unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned() {
        Ok(socket) => socket,
        Err(e) => {
            debug!(%peer, error = %e, "cannot duplicate the socket; the connection stays");
            return Err(stream);
        }
    };
    drop(stream); // the duplicate keeps the socket open
    let request = ShardRequest::AdoptConnection { socket, leftover: buf.split() };
    match state.shard.call(to, request).await {
        Ok(ShardResponse::Done(Ok(()))) => {
            debug!(%peer, from = %state.id(), %to, "connection moved to the shard owning its partitions")
        }
        other => debug!(%peer, %to, answer = ?other, "could not move the connection; closed"),
    }
    Ok(())
}

/// Decodes and serves one request payload, appending the response frame (if any) to `out`.
/// A fetch's answer is charged to the shard's memory budget in `answer_charge` (its `max_bytes`
/// capped at `max_frame_bytes`).
async fn answer(
    state: &Rc<ShardState>,
    payload: &Bytes,
    out: &mut Vec<u8>,
    answer_charge: &mut Option<MemoryCharge>,
) -> Answered {
    let (header, mut request) = match decode_request(payload) {
        Ok(decoded) => decoded,
        Err(e) => {
            let Ok((header, _)) = decode_request_header(payload) else {
                crate::client_warn!(state, error = %e, "unreadable request header; closing connection");
                return Answered::closing();
            };
            encode_response(header.correlation_id, header.api_version, &Err(TopLevelError::from(&e)), out);
            return Answered::open();
        }
    };
    let started = Instant::now();
    let api = request.api_key();
    let touched = touched(state, &request);
    if let Request::Fetch(req) = &mut request {
        req.max_bytes = req.max_bytes.min(state.config.max_frame_bytes);
        let Some(charge) = MemoryCharge::acquire(state, req.max_bytes as u64).await else {
            return Answered::closing();
        };
        *answer_charge = Some(charge);
    }
    let response = if state.shard.is_stopping() {
        Some(Err(TopLevelError {
            code: ErrorCode::BrokerShuttingDown,
            message: Some("the broker is shutting down".into()),
        }))
    } else {
        handle(state, request).await
    };
    state.stats().request_done(api, started.elapsed(), matches!(response, Some(Err(_))));
    let splices = match response {
        Some(response) => gather::encode_answer(header.correlation_id, header.api_version, &response, out),
        None => Splices::new(),
    };
    Answered { keep_open: true, touched, splices }
}

/// APIs this broker answers (ApiVersions lists only these).
/// In key order, as ApiVersions lists them (docs/protocol.md).
const SERVED: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::CreateTopic,
    ApiKey::DeleteTopic,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::CommitOffsets,
    ApiKey::FetchCommitted,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::ListGroups,
    ApiKey::BrokerStatus,
];

fn top_level(code: ErrorCode, message: impl Into<String>) -> Result<Response, TopLevelError> {
    Err(TopLevelError { code, message: Some(message.into()) })
}

/// Serves one decoded request; `None` for a request that gets no response (Produce with
/// acks = none). The Kafka listener (`crate::kafka`) translates its requests into these.
pub(crate) async fn handle(state: &Rc<ShardState>, request: Request) -> Option<Result<Response, TopLevelError>> {
    let response = match request {
        Request::ApiVersions(_) => Ok(Response::ApiVersions(ApiVersionsResponse {
            apis: SERVED
                .iter()
                .map(|api| {
                    let (min_version, max_version) = api.versions();
                    ApiVersionRange { api_key: api.code(), min_version, max_version }
                })
                .collect(),
            broker_version: env!("CARGO_PKG_VERSION").to_string(),
        })),
        Request::Metadata(req) => Ok(Response::Metadata(metadata(state, req.topics).await)),
        Request::CreateTopic(req) => {
            let configs = req.configs.into_iter().map(|c| (c.key, c.value)).collect();
            let result =
                controller(state, ShardRequest::CreateTopic { name: req.name, partitions: req.partitions, configs })
                    .await;
            let (error_code, error_message) = split(result);
            Ok(Response::CreateTopic(CreateTopicResponse { error_code, error_message }))
        }
        Request::DeleteTopic(req) => {
            let (error_code, error_message) =
                split(controller(state, ShardRequest::DeleteTopic { name: req.name }).await);
            Ok(Response::DeleteTopic(DeleteTopicResponse { error_code, error_message }))
        }
        Request::AlterConfigs(req) => {
            let set = req.set.into_iter().map(|c| (c.key, c.value)).collect();
            let result =
                controller(state, ShardRequest::AlterConfigs { topic: req.topic, set, remove: req.remove }).await;
            let (error_code, error_message) = split(result);
            Ok(Response::AlterConfigs(AlterConfigsResponse { error_code, error_message }))
        }
        Request::DescribeConfigs(req) => Ok(Response::DescribeConfigs(describe_configs(&state.metadata(), req.topics))),
        Request::Produce(req) => {
            let acks = req.acks;
            let response = produce(state, req).await;
            if acks == Acks::None {
                return None;
            }
            Ok(Response::Produce(response))
        }
        Request::Fetch(req) => Ok(Response::Fetch(fetch(state, req).await)),
        Request::ListOffsets(req) => Ok(Response::ListOffsets(list_offsets(state, req).await)),
        Request::BrokerStatus(_) => Ok(Response::BrokerStatus(status(state).await)),
        Request::CommitOffsets(req) => {
            Ok(Response::CommitOffsets(commit_offsets(state, req, crate::routing::CommitMember::standalone()).await))
        }
        Request::FetchCommitted(req) => match fetch_committed(state, req).await {
            Ok(response) => Ok(Response::FetchCommitted(response)),
            Err(f) => top_level(f.code, f.message),
        },
        Request::ListGroups(_) => Ok(Response::ListGroups(ListGroupsResponse {
            groups: list_groups(state).await.into_iter().map(|(name, _, _)| name).collect(),
        })),
    };
    Some(response)
}

fn split(result: Result<(), Failure>) -> (ErrorCode, Option<String>) {
    match result {
        Ok(()) => (ErrorCode::None, None),
        Err(f) => (f.code, Some(f.message)),
    }
}

/// Sends a metadata change to the controller (shard 0).
async fn controller(state: &ShardState, request: ShardRequest) -> Result<(), Failure> {
    match state.shard.call(ShardId(0), request).await {
        Ok(ShardResponse::Done(result)) => result,
        Ok(other) => Err(Failure::new(ErrorCode::UnknownServerError, format!("unexpected answer {other:?}"))),
        Err(e) => Err(Failure::new(ErrorCode::BrokerShuttingDown, e.to_string())),
    }
}

async fn call(state: &ShardState, to: ShardId, request: ShardRequest) -> Result<ShardResponse, Failure> {
    state.shard.call(to, request).await.map_err(|e| Failure::new(ErrorCode::BrokerShuttingDown, e.to_string()))
}

async fn metadata(state: &ShardState, names: Option<Vec<String>>) -> MetadataResponse {
    let metadata: Arc<Metadata> = state.metadata();
    let names: Vec<String> = match names {
        Some(names) => names,
        None => metadata.topics().map(|t| t.name.clone()).collect(),
    };
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let Some(topic) = metadata.topic(&name) else {
            topics.push(MetadataTopic {
                error_code: ErrorCode::UnknownTopicOrPartition,
                name,
                topic_id: keel_protocol::TopicId([0; 16]),
                partitions: Vec::new(),
            });
            continue;
        };
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        // One Offsets call per owning shard.
        for shard in state.shard.all() {
            let mine: Vec<u32> = topic.partitions.iter().filter(|p| p.shard == shard.0).map(|p| p.partition).collect();
            if mine.is_empty() {
                continue;
            }
            let keys =
                mine.iter().map(|&partition| crate::partitions::PartitionKey { topic: topic.id, partition }).collect();
            let offsets = match call(state, shard, ShardRequest::Offsets { keys }).await {
                Ok(ShardResponse::Offsets(offsets)) => offsets,
                _ => mine.iter().map(|_| Err(Failure::new(ErrorCode::BrokerShuttingDown, ""))).collect(),
            };
            for (partition, offsets) in mine.into_iter().zip(offsets) {
                let o = offsets.unwrap_or(PartitionOffsets { log_start: 0, high_watermark: 0 });
                partitions.push(MetadataPartition {
                    partition: PartitionId(partition),
                    shard: keel_protocol::ShardId(shard.0 as u32),
                    leader_epoch: 0,
                    log_start_offset: Offset(o.log_start),
                    high_watermark: Offset(o.high_watermark),
                });
            }
        }
        partitions.sort_by_key(|p| p.partition);
        topics.push(MetadataTopic {
            error_code: ErrorCode::None,
            name,
            topic_id: keel_protocol::TopicId(topic.id.0),
            partitions,
        });
    }
    MetadataResponse { shard_count: state.shard.count() as u32, topics }
}

fn describe_configs(metadata: &Metadata, names: Vec<String>) -> DescribeConfigsResponse {
    let topics = names
        .into_iter()
        .map(|name| match metadata.topic(&name) {
            Some(topic) => DescribeConfigsTopic {
                error_code: ErrorCode::None,
                configs: topic
                    .config()
                    .describe()
                    .into_iter()
                    .map(|v| WireConfigValue { key: v.key.to_string(), value: v.value, is_default: v.is_default })
                    .collect(),
                name,
            },
            None => DescribeConfigsTopic { name, error_code: ErrorCode::UnknownTopicOrPartition, configs: Vec::new() },
        })
        .collect();
    DescribeConfigsResponse { topics }
}

/// Appends each partition's batches on its owning shard, every partition of every topic at once:
/// one message to each shard the request touches, carrying all of that shard's partitions.
/// A partition whose shard has not answered within the request's `timeout_ms` (0: no limit) is
/// answered `REQUEST_TIMED_OUT` (a shard answers for all its partitions at once, when the last is
/// done); its append goes on and may still succeed (as in Kafka, a retry may then append it
/// twice).
async fn produce(state: &ShardState, req: ProduceRequest) -> ProduceResponse {
    // acks=1 waits until the leader has the batches (written to the segment file), acks=all
    // until they are durable under the topic's fsync policy; acks=0 waits for nothing, but this
    // connection reads its next request only when this one is done, so it waits as acks=1 does.
    let wait = match req.acks {
        Acks::All => AppendWait::Durable,
        Acks::Leader | Acks::None => AppendWait::Written,
    };
    let timeout = std::time::Duration::from_millis(u64::from(req.timeout_ms));
    let mut shape = Vec::with_capacity(req.topics.len());
    let mut partitions = Vec::new();
    // Each partition's answer lands in its slot as its shard answers; a slot still empty when
    // the timer fires is a partition that timed out. An unknown partition is answered at once.
    let mut slots: Vec<std::cell::Cell<Option<Appended>>> = Vec::new();
    let mut by_shard = ByShard::default();
    for topic in req.topics {
        shape.push((topic.name.clone(), topic.partitions.len()));
        for p in topic.partitions {
            let slot = slots.len();
            partitions.push(p.partition);
            match state.route(&topic.name, p.partition.0) {
                None => slots.push(Some(Err(unknown_partition())).into()),
                Some((key, shard)) => {
                    slots.push(None.into());
                    by_shard.push(shard, slot, (key, p.records));
                }
            }
        }
    }
    // One message per shard, with all of its partitions; one timer for the whole request, not
    // one per partition (a request may carry hundreds of partitions).
    let slots = &slots;
    let calls = by_shard.0.into_iter().map(|(shard, places, parts)| async move {
        let n = parts.len();
        let request = ShardRequest::Produce { parts, term: SINGLE_NODE_TERM, wait };
        let unpack = |r| match r {
            ShardResponse::Produced(answers) => Ok(answers),
            other => Err(format!("{other:?}")),
        };
        let answers = call_each(state, shard, request, n, unpack, Err).await;
        for (slot, answer) in places.into_iter().zip(answers) {
            slots[slot].set(Some(answer));
        }
    });
    let all = async {
        join_all(calls.collect()).await;
    };
    if timeout.is_zero() {
        all.await; // 0: no limit
    } else {
        futures_lite::future::or(all, glommio::timer::sleep(timeout)).await;
    }
    let mut answers = partitions.into_iter().zip(slots).map(|(partition, slot)| {
        let result = slot.take().unwrap_or_else(|| {
            Err(Failure::new(
                ErrorCode::RequestTimedOut,
                format!("not appended within the request's timeout_ms ({} ms); it may still be", timeout.as_millis()),
            ))
        });
        match result {
            Ok((base, offsets)) => ProducePartitionResponse {
                partition,
                error_code: ErrorCode::None,
                error_message: None,
                base_offset: Some(Offset(base)),
                log_start_offset: Some(Offset(offsets.log_start)),
            },
            Err(f) => ProducePartitionResponse {
                partition,
                error_code: f.code,
                error_message: Some(f.message),
                base_offset: None,
                log_start_offset: None,
            },
        }
    });
    let topics = shape
        .into_iter()
        .map(|(name, n)| ProduceTopicResponse { name, partitions: answers.by_ref().take(n).collect() })
        .collect();
    ProduceResponse { topics }
}

/// One partition's part of a fetch: (partition, records or failure, offsets if known).
type PartitionFetch = (PartitionId, Result<Bytes, Failure>, Option<PartitionOffsets>);

/// A Fetch's partitions routed to their shards once per request (a long poll reads and waits
/// several times): grouped by shard, with each partition's (topic, partition) index in the
/// request; `unknown`: the partitions no shard owns.
struct RoutedFetch {
    by_shard: ByShard<(usize, usize), PartitionKey>,
    unknown: Vec<(usize, usize)>,
}

fn route_fetch(state: &ShardState, req: &FetchRequest) -> RoutedFetch {
    let mut routed = RoutedFetch { by_shard: ByShard::default(), unknown: Vec::new() };
    for (t, topic) in req.topics.iter().enumerate() {
        for (j, p) in topic.partitions.iter().enumerate() {
            match state.route(&topic.name, p.partition.0) {
                None => routed.unknown.push((t, j)),
                Some((key, shard)) => routed.by_shard.push(shard, (t, j), key),
            }
        }
    }
    routed
}

/// Reads every partition of the request on its shard, all at once, without waiting: one
/// message per shard, with all of its partitions.
async fn fetch_once(state: &ShardState, req: &FetchRequest, routed: &RoutedFetch) -> Vec<Vec<PartitionFetch>> {
    let mut results: Vec<Vec<Option<PartitionFetch>>> =
        req.topics.iter().map(|t| t.partitions.iter().map(|_| None).collect()).collect();
    for &(t, j) in &routed.unknown {
        results[t][j] = Some((req.topics[t].partitions[j].partition, Err(unknown_partition()), None));
    }
    let calls = routed.by_shard.0.iter().map(|(shard, places, keys)| async move {
        let parts = places
            .iter()
            .zip(keys)
            .map(|(&(t, j), &key)| {
                let p = &req.topics[t].partitions[j];
                FetchPart { key, offset: p.fetch_offset.0, max_bytes: p.partition_max_bytes }
            })
            .collect();
        let unpack = |r| match r {
            ShardResponse::Fetched(answers) => Ok(answers),
            other => Err(format!("{other:?}")),
        };
        (places, call_each(state, *shard, ShardRequest::Fetch { parts }, keys.len(), unpack, |f| (Err(f), None)).await)
    });
    for (places, answers) in join_all(calls.collect()).await {
        for (&(t, j), (result, offsets)) in places.iter().zip(answers) {
            results[t][j] = Some((req.topics[t].partitions[j].partition, result, offsets));
        }
    }
    results.into_iter().map(|t| t.into_iter().map(|r| r.expect("every partition answered")).collect()).collect()
}

/// Sends `shard` a request of `n` parts and returns one answer per part, in order: the answers
/// `unpack` takes out of the expected response (else it describes the response it got), or
/// `failed` of the failure for every part if the call failed or was answered otherwise.
async fn call_each<T: Clone>(
    state: &ShardState,
    shard: ShardId,
    request: ShardRequest,
    n: usize,
    unpack: impl FnOnce(ShardResponse) -> Result<Vec<T>, String>,
    failed: impl FnOnce(Failure) -> T,
) -> Vec<T> {
    let failure = match call(state, shard, request).await.map(unpack) {
        Ok(Ok(answers)) if answers.len() == n => return answers,
        Ok(Ok(answers)) => {
            Failure::new(ErrorCode::UnknownServerError, format!("{} answers to {n} parts", answers.len()))
        }
        Ok(Err(other)) => Failure::new(ErrorCode::UnknownServerError, other),
        Err(f) => f,
    };
    vec![failed(failure); n]
}

fn unknown_partition() -> Failure {
    Failure::new(ErrorCode::UnknownTopicOrPartition, "unknown topic or partition")
}

/// A request's parts grouped by the shard that owns them: (shard, where each part's answer
/// goes, the parts), shards in the order first met.
struct ByShard<P, T>(Vec<(ShardId, Vec<P>, Vec<T>)>);

impl<P, T> Default for ByShard<P, T> {
    fn default() -> Self {
        ByShard(Vec::new())
    }
}

impl<P, T> ByShard<P, T> {
    fn push(&mut self, shard: ShardId, place: P, part: T) {
        // A node has a few shards: a scan beats a map.
        match self.0.iter_mut().find(|(s, _, _)| *s == shard) {
            Some((_, places, parts)) => {
                places.push(place);
                parts.push(part);
            }
            None => self.0.push((shard, vec![place], vec![part])),
        }
    }
}

/// Longest a Fetch waits, whatever its `max_wait_ms` says: a waiting fetch holds a serving slot
/// on each partition's shard, so a client must not be able to hold them for days. Answering
/// early with what there is (possibly nothing) is allowed by the protocol; clients fetch again.
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;

/// Fetch with long poll: read everything at once; while that is less than `min_bytes` (taken as
/// at least one byte) and `max_wait_ms` has not passed, wait on every partition's shard until the first of them
/// has an append past what this answer already holds (or the wait ends), then read everything
/// again. The response stays within `max_bytes`, except that the first partition with data
/// always returns its first batch (so a consumer never stalls on a batch larger than its limits).
async fn fetch(state: &ShardState, req: FetchRequest) -> FetchResponse {
    let min_bytes = req.min_bytes.max(1) as usize;
    let max_wait_ms = req.max_wait_ms.min(MAX_FETCH_WAIT_MS);
    let deadline = Instant::now() + std::time::Duration::from_millis(u64::from(max_wait_ms));
    let routed = route_fetch(state, &req);
    let mut results = fetch_once(state, &req, &routed).await;
    loop {
        let bytes: usize = results.iter().flatten().map(|(_, r, _)| r.as_ref().map_or(0, Bytes::len)).sum();
        let remaining = deadline.saturating_duration_since(Instant::now());
        if bytes >= min_bytes || remaining.is_zero() {
            break;
        }
        let remaining_ms = u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX).max(1);
        // Wait for data past each partition's high watermark as just read: a wait at the
        // requested offset would end at once where data already is. One wait per shard.
        let read = &results;
        let waits = routed.by_shard.0.iter().map(|(shard, places, keys)| {
            let parts = places
                .iter()
                .zip(keys)
                .map(|(&(t, j), &key)| {
                    let requested = req.topics[t].partitions[j].fetch_offset.0;
                    let (_, _, offsets) = &read[t][j];
                    (key, offsets.map_or(requested, |o| o.high_watermark.max(requested)))
                })
                .collect();
            async move {
                let request = ShardRequest::AwaitData { parts, max_wait_ms: remaining_ms };
                matches!(call(state, *shard, request).await, Ok(ShardResponse::DataArrived(true)))
            }
        });
        if !first_true(waits.collect()).await {
            break; // every wait ended without data: timed out, or errors that will not change
        }
        results = fetch_once(state, &req, &routed).await;
    }
    let mut budget = req.max_bytes as usize;
    let mut first = true;
    let topics = req
        .topics
        .iter()
        .zip(results)
        .map(|(topic, partitions)| FetchTopicResponse {
            name: topic.name.clone(),
            partitions: partitions
                .into_iter()
                .zip(&topic.partitions)
                .map(|((partition, result, offsets), asked)| {
                    let o = offsets.unwrap_or(PartitionOffsets { log_start: 0, high_watermark: 0 });
                    let (error_code, records) = match result {
                        Ok(records) => {
                            // The log read returns at least one batch whatever its limit: only the
                            // first partition with data may keep one over the limits.
                            let limit = budget.min(asked.partition_max_bytes as usize);
                            let records = whole_batches_within(records, limit, first);
                            first &= records.is_empty();
                            budget = budget.saturating_sub(records.len());
                            (ErrorCode::None, records)
                        }
                        Err(f) => (f.code, Bytes::new()),
                    };
                    FetchPartitionResponse {
                        partition,
                        error_code,
                        high_watermark: Offset(o.high_watermark),
                        log_start_offset: Offset(o.log_start),
                        records,
                    }
                })
                .collect(),
        })
        .collect();
    FetchResponse { topics }
}

/// The longest prefix of `records` (whole RecordBatches, as a log read returns them) that fits
/// in `budget` bytes; with `at_least_one`, the first batch even if it alone does not fit, so a
/// consumer never stalls on a batch larger than its limits.
fn whole_batches_within(records: Bytes, budget: usize, at_least_one: bool) -> Bytes {
    let mut end = 0;
    // The log's own batches: their CRCs were checked on the way in.
    while let Ok(batch) = BatchView::parse_unchecked_crc(&records[end..]) {
        let next = end + batch.total_len();
        if next > budget && !(at_least_one && end == 0) {
            break;
        }
        end = next;
    }
    records.slice(..end)
}

/// Completes with true as soon as one of `waits` does, or with false once all have completed
/// without. The others are dropped: a wait on another shard finishes there on its own (bounded
/// by its max_wait) and its answer is discarded.
pub(crate) async fn first_true<F: std::future::Future<Output = bool>>(waits: Vec<F>) -> bool {
    let mut waits: Vec<_> = waits.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in waits.iter_mut() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(true) => return std::task::Poll::Ready(true),
                    std::task::Poll::Ready(false) => *slot = None,
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(false)
        }
    })
    .await
}

async fn list_offsets(state: &ShardState, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let timestamp = match p.timestamp {
                OffsetQuery::Latest => -1,
                OffsetQuery::Earliest => -2,
                OffsetQuery::Timestamp(ms) => ms,
            };
            let result = match state.route(&topic.name, p.partition.0) {
                None => Err(Failure::new(ErrorCode::UnknownTopicOrPartition, "unknown topic or partition")),
                Some((key, shard)) => match call(state, shard, ShardRequest::ListOffset { key, timestamp }).await {
                    Ok(ShardResponse::Offset(result)) => result,
                    Ok(other) => Err(Failure::new(ErrorCode::UnknownServerError, format!("{other:?}"))),
                    Err(f) => Err(f),
                },
            };
            partitions.push(match result {
                Ok((offset, ts)) => ListOffsetsPartitionResponse {
                    partition: p.partition,
                    error_code: ErrorCode::None,
                    offset: offset.map(Offset),
                    timestamp: ts,
                },
                Err(f) => ListOffsetsPartitionResponse {
                    partition: p.partition,
                    error_code: f.code,
                    offset: None,
                    timestamp: -1,
                },
            });
        }
        topics.push(ListOffsetsTopicResponse { name: topic.name, partitions });
    }
    ListOffsetsResponse { topics }
}

/// The shard owning a group's offsets partition.
/// Every group of every shard: (id, state, protocol type), by id.
pub(crate) async fn list_groups(state: &ShardState) -> Vec<(String, crate::groups::GroupState, String)> {
    let mut groups = Vec::new();
    for shard in state.shard.all() {
        if let Ok(ShardResponse::Groups(g)) = call(state, shard, ShardRequest::ListGroups).await {
            groups.extend(g);
        }
    }
    groups.sort();
    groups
}

/// The shard that coordinates `group` (owner of its offsets partition).
pub(crate) fn group_shard(state: &ShardState, group: &str) -> Result<ShardId, Failure> {
    if !offsets::valid_group(group) {
        return Err(Failure::new(ErrorCode::InvalidGroupId, "a group id is 1 to 255 bytes"));
    }
    state
        .route(offsets::OFFSETS_TOPIC, offsets::partition_for_group(group))
        .map(|(_, shard)| shard)
        .ok_or_else(|| Failure::new(ErrorCode::UnknownTopicOrPartition, "the offsets topic is not ready yet"))
}

/// Commits for partitions that exist go to the group's shard in one batch, checked there against
/// the group's membership (`member`); the others get UNKNOWN_TOPIC_OR_PARTITION.
pub(crate) async fn commit_offsets(
    state: &ShardState,
    req: CommitOffsetsRequest,
    member: crate::routing::CommitMember,
) -> CommitOffsetsResponse {
    let shard = group_shard(state, &req.group);
    let mut commits = Vec::new();
    let mut codes: Vec<Vec<ErrorCode>> = Vec::new();
    for topic in &req.topics {
        codes.push(
            topic
                .partitions
                .iter()
                .map(|p| match (&shard, state.route(&topic.name, p.partition.0)) {
                    (Err(f), _) => f.code,
                    (Ok(_), None) => ErrorCode::UnknownTopicOrPartition,
                    (Ok(_), Some(_)) => {
                        commits.push((topic.name.clone(), p.partition.0, p.offset.0, p.metadata.clone()));
                        ErrorCode::None
                    }
                })
                .collect(),
        );
    }
    if let (Ok(shard), false) = (&shard, commits.is_empty()) {
        let result = match call(
            state,
            *shard,
            ShardRequest::CommitOffsets { group: req.group.clone(), commits, member },
        )
        .await
        {
            Ok(ShardResponse::Done(result)) => result,
            Ok(other) => Err(Failure::new(ErrorCode::UnknownServerError, format!("{other:?}"))),
            Err(f) => Err(f),
        };
        if let Err(f) = result {
            for code in codes.iter_mut().flatten().filter(|c| **c == ErrorCode::None) {
                *code = f.code;
            }
        }
    }
    let topics = req
        .topics
        .into_iter()
        .zip(codes)
        .map(|(topic, codes)| CommitOffsetsTopicResponse {
            name: topic.name,
            partitions: topic
                .partitions
                .iter()
                .zip(codes)
                .map(|(p, error_code)| CommitOffsetsPartitionResponse { partition: p.partition, error_code })
                .collect(),
        })
        .collect();
    CommitOffsetsResponse { topics }
}

async fn fetch_committed(state: &ShardState, req: FetchCommittedRequest) -> Result<FetchCommittedResponse, Failure> {
    let shard = group_shard(state, &req.group)?;
    let filter = req
        .topics
        .map(|topics| topics.into_iter().map(|t| (t.name, t.partitions.into_iter().map(|p| p.0).collect())).collect());
    let committed = match call(state, shard, ShardRequest::FetchCommitted { group: req.group, filter }).await? {
        ShardResponse::Committed(committed) => committed,
        other => return Err(Failure::new(ErrorCode::UnknownServerError, format!("{other:?}"))),
    };
    let mut topics: Vec<FetchCommittedTopicResponse> = Vec::new();
    for (topic, partition, offset, metadata) in committed {
        let entry = FetchCommittedPartitionResponse {
            partition: PartitionId(partition),
            error_code: ErrorCode::None,
            offset: offset.map(Offset),
            metadata,
        };
        match topics.last_mut() {
            Some(t) if t.name == topic => t.partitions.push(entry),
            _ => topics.push(FetchCommittedTopicResponse { name: topic, partitions: vec![entry] }),
        }
    }
    Ok(FetchCommittedResponse { topics })
}

async fn status(state: &ShardState) -> BrokerStatusResponse {
    let mut shards = Vec::new();
    for shard in state.shard.all() {
        if let Ok(ShardResponse::Status { partitions, log_bytes }) = call(state, shard, ShardRequest::Status).await {
            let core = state.cores[shard.index()] as u32;
            shards.push(ShardStatus { shard: keel_protocol::ShardId(shard.0 as u32), core, partitions, log_bytes });
        }
    }
    BrokerStatusResponse {
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: state.config.data_dir.display().to_string(),
        shards,
    }
}

#[cfg(test)]
mod tests {
    use keel_storage::batch::BatchBuilder;

    use super::*;

    fn batch(value_bytes: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        b.push(1_700_000_000_000, None, Some(&vec![7u8; value_bytes]), &[]);
        b.build()
    }

    #[test]
    fn api_versions_lists_the_apis_in_key_order() {
        let codes: Vec<u16> = SERVED.iter().map(|api| api.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
    }

    #[test]
    fn a_fetch_budget_keeps_whole_batches_and_the_first_one_anyway() {
        let (a, b, c) = (batch(100), batch(300), batch(50));
        let all = Bytes::from([a.clone(), b.clone(), c.clone()].concat());
        let cut = |budget, first| whole_batches_within(all.clone(), budget, first).len();
        assert_eq!(cut(usize::MAX, false), all.len());
        assert_eq!(cut(all.len(), false), all.len());
        assert_eq!(cut(all.len() - 1, false), a.len() + b.len(), "stops before the batch that would exceed");
        assert_eq!(cut(a.len() + b.len() - 1, false), a.len());
        assert_eq!(cut(a.len() - 1, false), 0, "nothing fits");
        assert_eq!(cut(a.len() - 1, true), a.len(), "the first batch anyway");
        assert_eq!(cut(0, true), a.len());
        assert_eq!(cut(a.len() + 10, true), a.len(), "only the first beyond the budget");
        assert_eq!(whole_batches_within(Bytes::new(), 0, true).len(), 0);
    }
}
