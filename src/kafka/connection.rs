//! One Kafka client connection: read a frame, answer it, repeat — one request at a time, so
//! responses leave in request order (Kafka's own guarantee) and a connection holds at most one
//! request in memory, as on the native listener (`crate::connection`), whose memory budget and
//! shutdown behaviour this loop shares.
//!
//! Framing is Kafka's: a 4-byte big-endian length, then the request header (its version chosen by
//! the API key and version) and body. A length over `max_frame_bytes` closes the connection before
//! anything is allocated; a header or body that does not decode closes it too (a Kafka broker does
//! the same); an API or version not served is answered UNSUPPORTED_VERSION.

use std::{net::SocketAddr, rc::Rc};

use bytes::{Bytes, BytesMut};
use glommio::net::TcpStream;
use kafka_protocol::{
    messages::{
        AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
        DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
        FetchResponse, FindCoordinatorRequest, HeartbeatRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest,
        JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
        OffsetCommitRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader,
        ResponseHeader, SyncGroupRequest,
    },
    protocol::{buf::ByteBufMut, Decodable, Encodable, HeaderVersion},
    ResponseError,
};
use tracing::debug;

use super::{
    groups, guard,
    translate::{self, Node},
};
use crate::{
    broker::ShardState,
    connection::{serve_frames, Answered, MemoryCharge},
    gather::{self, Splices},
};

pub async fn run(stream: TcpStream, state: &Rc<ShardState>) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
    // DescribeGroups names members' hosts as Kafka does: "/" and the address.
    let host = peer_addr.map(|a| format!("/{}", a.ip())).unwrap_or_default();
    let node = advertised(state, stream.local_addr().ok());
    // Kafka's length is an i32: a prefix above i32::MAX is negative, never a size.
    let max_frame = state.config.max_frame_bytes.min(i32::MAX as u32);
    // Kafka connections never move between shards (their answers name no `Touched` shard):
    // a Kafka client multiplexes every partition of the broker over one connection.
    serve_frames(stream, state, max_frame, "kafka", BytesMut::new(), async |payload, out, answer_charge| {
        let mut splices = Splices::new();
        let Err(reason) = answer(state, &node, &host, payload, out, &mut splices, answer_charge).await else {
            return Answered { splices, ..Answered::open() };
        };
        crate::client_warn!(state, %peer, reason, "closing Kafka connection");
        Answered::closing()
    })
    .await
}

/// The address Metadata names for node 0: the configured advertised address, else the Kafka
/// listener's, or, if it listens on every interface (0.0.0.0 or ::), the one this client reached.
fn advertised(state: &ShardState, local: Option<SocketAddr>) -> Node {
    if let Some(a) = &state.config.kafka_advertise {
        return Node { host: a.host.clone(), port: i32::from(a.port) };
    }
    let configured = state.config.kafka_listen;
    let addr = match (configured, local) {
        (Some(c), Some(l)) if c.ip().is_unspecified() => SocketAddr::new(l.ip(), c.port()),
        (Some(c), _) => c,
        (None, Some(l)) => l,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 9092)),
    };
    Node { host: addr.ip().to_string(), port: i32::from(addr.port()) }
}

/// Serves one request payload, appending the response frame (if any) to `out`, and to
/// `splices` the records a Fetch answer sends from where they are (`crate::gather`); `Err` (the
/// reason) if the connection must close.
async fn answer(
    state: &Rc<ShardState>,
    node: &Node,
    host: &str,
    payload: Bytes,
    out: &mut Vec<u8>,
    splices: &mut Splices,
    answer_charge: &mut Option<MemoryCharge>,
) -> Result<(), String> {
    // api_key i16, api_version i16, correlation_id i32 begin every header version.
    let Some(fixed) = payload.first_chunk::<8>() else {
        return Err(format!("a {}-byte request has no header", payload.len()));
    };
    let key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let api = ApiKey::try_from(key).ok();
    let mut body = payload.clone();
    // An unknown key has no header version of its own: v1 (no tagged fields) reads the fields
    // every version shares.
    let header_version = api.map_or(1, |api| api.request_header_version(version));
    let header = RequestHeader::decode(&mut body, header_version).map_err(|e| format!("request header: {e}"))?;
    let correlation = header.correlation_id;
    let api = match api {
        Some(api) if translate::served(api, version) => api,
        _ => {
            // Kafka's answer to an ApiVersions it cannot read: a v0 body with the error and the
            // versions served, so the client can retry with one of them. Other APIs get the same
            // body: a client that skipped ApiVersions sees a clear error rather than a hang.
            if api == Some(ApiKey::ApiVersions) {
                // Normal negotiation: newer clients start with their own latest version.
                debug!(api_version = version, "ApiVersions above the served range; answering with the served list");
            } else {
                crate::client_warn!(
                    state,
                    api_key = key,
                    api_version = version,
                    "unsupported Kafka API or version; answering UNSUPPORTED_VERSION"
                );
            }
            return encode(correlation, 0, &translate::api_versions(ResponseError::UnsupportedVersion.code()), out);
        }
    };
    // Before the decoder reserves memory for any array count in it.
    guard::check(api, version, &body).map_err(|e| format!("{api:?} v{version}: {e}"))?;
    match api {
        ApiKey::ApiVersions => {
            decoded::<ApiVersionsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::api_versions(0), out)
        }
        ApiKey::Metadata => {
            let req = decoded::<MetadataRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::metadata(state, node, req, version).await, out)
        }
        ApiKey::Produce => {
            let req = decoded::<ProduceRequest>(&mut body, api, version)?;
            match translate::produce(state, req).await {
                Some(response) => encode(correlation, version, &response, out),
                None => Ok(()), // acks = 0: no response at all
            }
        }
        ApiKey::Fetch => {
            let req = decoded::<FetchRequest>(&mut body, api, version)?;
            let response = match translate::plan_fetch(req) {
                Ok(mut plan) => {
                    // As on the native listener: the answer's bytes are charged to the budget up
                    // front, its max_bytes capped at max_frame_bytes.
                    plan.request.max_bytes = plan.request.max_bytes.min(state.config.max_frame_bytes);
                    let Some(charge) = MemoryCharge::acquire(state, u64::from(plan.request.max_bytes)).await else {
                        return Err("the broker is stopping".into());
                    };
                    *answer_charge = Some(charge);
                    translate::fetch(state, plan).await
                }
                Err(refused) => refused,
            };
            *splices = encode_fetch(correlation, version, &response, out)?;
            Ok(())
        }
        ApiKey::ListOffsets => {
            let req = decoded::<ListOffsetsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::list_offsets(state, req, version).await, out)
        }
        ApiKey::CreateTopics => {
            let req = decoded::<CreateTopicsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::create_topics(state, req, version).await, out)
        }
        ApiKey::DeleteTopics => {
            let req = decoded::<DeleteTopicsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::delete_topics(state, req, version).await, out)
        }
        ApiKey::FindCoordinator => {
            let req = decoded::<FindCoordinatorRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::find_coordinator(node, req, version), out)
        }
        ApiKey::OffsetCommit => {
            let req = decoded::<OffsetCommitRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::offset_commit(state, req).await, out)
        }
        ApiKey::OffsetFetch => {
            let req = decoded::<OffsetFetchRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::offset_fetch(state, req, version).await, out)
        }
        ApiKey::DescribeConfigs => {
            let req = decoded::<DescribeConfigsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::describe_configs(state, req, version).await, out)
        }
        ApiKey::AlterConfigs => {
            let req = decoded::<AlterConfigsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::alter_configs(state, req).await, out)
        }
        ApiKey::IncrementalAlterConfigs => {
            let req = decoded::<IncrementalAlterConfigsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::incremental_alter_configs(state, req).await, out)
        }
        ApiKey::ListGroups => {
            let req = decoded::<ListGroupsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::list_groups(state, req, version).await, out)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let req = decoded::<OffsetForLeaderEpochRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::offset_for_leader_epoch(state, req).await, out)
        }
        ApiKey::JoinGroup => {
            let req = decoded::<JoinGroupRequest>(&mut body, api, version)?;
            let client = groups::Client {
                id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                host: host.to_string(),
            };
            encode(correlation, version, &groups::join_group(state, &client, req, version).await, out)
        }
        ApiKey::SyncGroup => {
            let req = decoded::<SyncGroupRequest>(&mut body, api, version)?;
            encode(correlation, version, &groups::sync_group(state, req, version).await, out)
        }
        ApiKey::Heartbeat => {
            let req = decoded::<HeartbeatRequest>(&mut body, api, version)?;
            encode(correlation, version, &groups::heartbeat(state, req).await, out)
        }
        ApiKey::LeaveGroup => {
            let req = decoded::<LeaveGroupRequest>(&mut body, api, version)?;
            encode(correlation, version, &groups::leave_group(state, req, version).await, out)
        }
        ApiKey::DescribeGroups => {
            let req = decoded::<DescribeGroupsRequest>(&mut body, api, version)?;
            encode(correlation, version, &groups::describe_groups(state, req, version).await, out)
        }
        ApiKey::InitProducerId => {
            let req = decoded::<InitProducerIdRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::init_producer_id(state, req).await, out)
        }
        ApiKey::DeleteRecords => {
            let req = decoded::<DeleteRecordsRequest>(&mut body, api, version)?;
            encode(correlation, version, &translate::delete_records(state, req).await, out)
        }
        ApiKey::DeleteGroups => {
            let req = decoded::<DeleteGroupsRequest>(&mut body, api, version)?;
            encode(correlation, version, &groups::delete_groups(state, req).await, out)
        }
        other => Err(format!("{other:?} is listed as served but has no handler")),
    }
}

fn decoded<T: Decodable>(body: &mut Bytes, api: ApiKey, version: i16) -> Result<T, String> {
    T::decode(body, version).map_err(|e| format!("{api:?} v{version}: {e}"))
}

/// Appends one response frame: length, the header in the version the API and version call for,
/// the body.
fn encode<R: Encodable + HeaderVersion>(
    correlation: i32,
    version: i16,
    body: &R,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    encode_header_and_body(correlation, version, body, out)?;
    let len = frame_length(out.len() - start)?;
    out[start..start + 4].copy_from_slice(&len);
    Ok(())
}

/// [`encode`] for a Fetch answer: one with many bytes of records is appended as a skeleton
/// without them, and the records go to the socket from where they are, in between its pieces
/// (`crate::gather`; the bytes on the wire are the same). Returns where they go.
fn encode_fetch(correlation: i32, version: i16, body: &FetchResponse, out: &mut Vec<u8>) -> Result<Splices, String> {
    let records = || body.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.as_ref());
    if !gather::worth_gathering(records()) {
        return encode(correlation, version, body, out).map(|()| Splices::new());
    }
    let mut buf = keel_protocol::SkeletonBuf::frame(out, records().cloned().collect());
    encode_header_and_body(correlation, version, body, &mut buf)?;
    buf.finish_frame().ok_or_else(|| "a response over 4 GiB".to_string())
}

fn encode_header_and_body<R: Encodable + HeaderVersion, B: ByteBufMut>(
    correlation: i32,
    version: i16,
    body: &R,
    buf: &mut B,
) -> Result<(), String> {
    ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(buf, R::header_version(version))
        .map_err(|e| format!("encoding a response header: {e}"))?;
    body.encode(buf, version).map_err(|e| format!("encoding a v{version} response: {e}"))
}

/// The length prefix of a frame of `frame_bytes` bytes, the prefix included.
fn frame_length(frame_bytes: usize) -> Result<[u8; 4], String> {
    let len = u32::try_from(frame_bytes - 4).map_err(|_| "a response over 4 GiB".to_string())?;
    Ok(len.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{
        fetch_response::{FetchableTopicResponse, PartitionData},
        TopicName,
    };

    use kafka_protocol::protocol::Message;

    use super::*;

    /// Topics by name, each with its partitions as the bytes of their records (`None`: an error,
    /// no records).
    type Shape<'a> = &'a [(&'a str, &'a [Option<usize>])];

    /// A Fetch answer of `shape`, each record set with its own bytes.
    fn response(topics: Shape<'_>) -> FetchResponse {
        let topics = topics.iter().map(|(name, parts)| {
            let partitions = parts.iter().enumerate().map(|(i, len)| {
                let records = len.map(|len| Bytes::from((0..len).map(|b| (b * 31 + i) as u8).collect::<Vec<_>>()));
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_error_code(if records.is_some() { 0 } else { 1 })
                    .with_high_watermark(1_000 + i as i64)
                    .with_records(records)
            });
            FetchableTopicResponse::default()
                .with_topic(TopicName(name.to_string().into()))
                .with_partitions(partitions.collect())
        });
        FetchResponse::default().with_responses(topics.collect())
    }

    #[test]
    fn a_gathered_fetch_answer_has_the_bytes_of_a_whole_one_in_every_served_version() {
        let shapes: &[Shape<'_>] = &[
            &[("t", &[Some(70_000)])],
            // Small record sets stay in the skeleton; errors have none; a length that needs a
            // longer varint in the flexible versions.
            &[("events", &[Some(20_000), None, Some(5), Some(300)]), ("other", &[Some(1 << 20), Some(2_000)])],
            &[("a", &[]), ("b", &[None])],
            &[],
        ];
        let versions: Vec<i16> =
            (0..=FetchResponse::VERSIONS.max).filter(|&v| translate::served(ApiKey::Fetch, v)).collect();
        assert!(versions.len() >= 9, "Fetch v4-v12 at least: {versions:?}");
        for version in versions {
            for shape in shapes {
                let response = response(shape);
                let mut whole = Vec::new();
                encode(41, version, &response, &mut whole).unwrap();
                let mut out = vec![]; // the connection's buffer is empty when an answer starts
                let splices = encode_fetch(41, version, &response, &mut out).unwrap();
                assert_eq!(gather::pieces(&out, &splices).concat(), whole, "v{version} {shape:?}");
                let records: Vec<&Bytes> =
                    response.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.as_ref()).collect();
                if gather::worth_gathering(records.iter().copied()) {
                    // Every record set of 1 KiB or more is left out, none copied.
                    let big: usize = records.iter().map(|r| r.len()).filter(|&n| n >= 1 << 10).sum();
                    assert_eq!(splices.iter().map(|(_, r)| r.len()).sum::<usize>(), big, "v{version} {shape:?}");
                    assert_eq!(out.len() + big, whole.len());
                } else {
                    assert!(splices.is_empty());
                }
            }
        }
    }
}
