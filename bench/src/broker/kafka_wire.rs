//! `--kafka-producer wire`: keel-bench's own Kafka-protocol producer connection, so the native and
//! the Kafka listener can be compared with requests of the same shape.
//!
//! librdkafka puts one partition in each Produce request and spends several microseconds of CPU
//! per record; on a small machine where the client and the broker share the cores, a librdkafka run
//! measures librdkafka as much as the broker. This connection sends exactly what the native
//! producer sends — the same RecordBatch v2 bytes, one batch per partition, every partition of the
//! request in one Produce, one request in flight — encoded with the `kafka-protocol` crate (the
//! codecs the broker's listener uses, client half), its batches written from where they are, as
//! the native client writes its own ([`encode_frame`]). It talks to one broker: the cluster must have a
//! single broker (Keel single-node, a one-broker Kafka or Redpanda), checked at connect.

use std::{io::Read, net::TcpStream, time::Duration};

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiKey, ApiVersionsRequest, MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
    },
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};
use keel_client::Acks;

use super::args::{Target, Topics};

/// Produce versions this connection speaks: v3 is the first with RecordBatch v2, v12 the last
/// that names topics (v13 uses topic ids).
const PRODUCE_VERSIONS: (i16, i16) = (3, 12);
/// Largest response accepted (a Produce answer is small; anything bigger is a broken stream).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// The broker's time limit for a Produce (`timeout_ms`); the socket waits this plus a margin.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct KafkaWire {
    stream: TcpStream,
    client_id: StrBytes,
    correlation: i32,
    produce_version: i16,
    target: String,
    out: Vec<u8>,
}

impl KafkaWire {
    /// Connects, picks the Produce version (ApiVersions) and checks that the cluster is one broker
    /// (Metadata).
    pub fn connect(target: &Target, client_id: &str) -> Result<KafkaWire, String> {
        let mut wire = KafkaWire::open(target, client_id)?;
        let versions = wire.call(0, &ApiVersionsRequest::default())?;
        if versions.error_code != 0 {
            return Err(format!("{target}: ApiVersions failed with error code {}", versions.error_code));
        }
        let produce = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .ok_or_else(|| format!("{target} does not serve Produce"))?;
        let version = produce.max_version.min(PRODUCE_VERSIONS.1);
        if version < PRODUCE_VERSIONS.0 || version < produce.min_version {
            return Err(format!(
                "{target} serves Produce v{}-v{}; the wire producer needs one of v{}-v{}",
                produce.min_version, produce.max_version, PRODUCE_VERSIONS.0, PRODUCE_VERSIONS.1
            ));
        }
        wire.produce_version = version;
        // Metadata v1: the brokers, without asking for (and so auto-creating) any topic.
        let metadata = wire.call(1, &MetadataRequest::default().with_topics(Some(Vec::new())))?;
        if metadata.brokers.len() != 1 {
            return Err(format!(
                "{target} is a cluster of {} brokers; --kafka-producer wire sends every partition to the \
                 broker it connects to, so it needs a single-broker cluster (use librdkafka)",
                metadata.brokers.len()
            ));
        }
        Ok(wire)
    }

    /// A connection, nothing asked yet.
    fn open(target: &Target, client_id: &str) -> Result<KafkaWire, String> {
        let unreachable = |e: std::io::Error| format!("cannot reach the broker at {target}: {e}");
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&target.addr)
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| format!("{target} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
        stream.set_nodelay(true).map_err(unreachable)?;
        stream.set_read_timeout(Some(PRODUCE_TIMEOUT + Duration::from_secs(10))).map_err(unreachable)?;
        Ok(KafkaWire {
            stream,
            client_id: StrBytes::from_string(client_id.to_owned()),
            correlation: 0,
            produce_version: 0,
            target: target.to_string(),
            out: Vec::new(),
        })
    }

    /// What a Kafka-protocol broker says about itself. The protocol carries no software version,
    /// so this is the next best fingerprint: the API version ranges it serves (ApiVersions v3)
    /// and its finalized features (Apache Kafka's `metadata.version` level names its release).
    pub fn describe(target: &Target) -> Result<serde_json::Value, String> {
        let mut wire = KafkaWire::open(target, "keel-bench-describe")?;
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("keel-bench"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut r = wire.call(3, &request)?;
        if r.error_code == 35 {
            // UNSUPPORTED_VERSION: an older broker; v0 lists its APIs all the same.
            r = wire.call(0, &ApiVersionsRequest::default())?;
        }
        if r.error_code != 0 {
            return Err(format!("{target}: ApiVersions failed with error code {}", r.error_code));
        }
        let apis: serde_json::Map<String, serde_json::Value> = r
            .api_keys
            .iter()
            .map(|k| {
                let name =
                    ApiKey::try_from(k.api_key).map_or_else(|()| format!("api{}", k.api_key), |a| format!("{a:?}"));
                (name, serde_json::json!([k.min_version, k.max_version]))
            })
            .collect();
        let features: serde_json::Map<String, serde_json::Value> = r
            .finalized_features
            .iter()
            .map(|f| (f.name.as_str().to_owned(), serde_json::json!(f.max_version_level)))
            .collect();
        Ok(serde_json::json!({ "protocol": "kafka", "api_versions": apis, "finalized_features": features }))
    }

    /// Appends `batches` (global partition of `layout`, RecordBatch v2 bytes) in one Produce
    /// request and returns `(global partition, base offset)` per batch in order; empty with
    /// `acks=0` (no answer).
    pub fn produce_many(
        &mut self,
        layout: &Topics,
        batches: Vec<(u32, Bytes)>,
        acks: Acks,
    ) -> Result<Vec<(u32, u64)>, String> {
        let wanted: Vec<u32> = batches.iter().map(|b| b.0).collect();
        // Encoded in this order: `group` keeps a topic's batches in their order, topics in theirs.
        let grouped = layout.group(batches);
        let runs: Vec<Bytes> = grouped.iter().flat_map(|(_, batches)| batches.iter().map(|b| b.1.clone())).collect();
        let request = ProduceRequest::default()
            .with_acks(match acks {
                Acks::None => 0,
                Acks::Leader => 1,
                Acks::All => -1,
            })
            .with_timeout_ms(PRODUCE_TIMEOUT.as_millis() as i32)
            .with_topic_data(
                grouped
                    .into_iter()
                    .map(|(t, batches)| {
                        let partitions = batches
                            .into_iter()
                            .map(|(p, records)| {
                                PartitionProduceData::default().with_index(p as i32).with_records(Some(records))
                            })
                            .collect();
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(layout.names()[t].clone())))
                            .with_partition_data(partitions)
                    })
                    .collect(),
            );
        let version = self.produce_version;
        if acks == Acks::None {
            self.send(version, &request, runs)?;
            return Ok(Vec::new());
        }
        let response = self.call_with(version, &request, runs)?;
        let mut answered = Vec::with_capacity(wanted.len());
        for t in response.responses {
            let topic = t.name.0.as_str();
            let Some(ti) = layout.index_of(topic) else {
                return Err(format!("Produce answered topic {topic:?}, which it was not sent"));
            };
            for p in t.partition_responses {
                if p.error_code != 0 {
                    return Err(format!(
                        "Produce to {topic}/{} failed: Kafka error code {}{}",
                        p.index,
                        p.error_code,
                        p.error_message.map(|m| format!(" ({})", m.as_str())).unwrap_or_default()
                    ));
                }
                if p.index < 0 || p.index as u32 >= layout.partitions() {
                    return Err(format!("Produce answered partition {topic}/{}, which it was not sent", p.index));
                }
                answered.push((layout.global(ti, p.index as u32), p.base_offset as u64));
            }
        }
        // The answer's order may differ from the request's (Kafka keeps a map): put it back.
        let mut ordered = Vec::with_capacity(wanted.len());
        for g in wanted {
            let i = answered.iter().position(|a| a.0 == g).ok_or_else(|| {
                let (topic, p) = layout.name_of(g);
                format!("Produce answered no result for {topic}/{p}")
            })?;
            ordered.push(answered.swap_remove(i));
        }
        if !answered.is_empty() {
            return Err(format!("Produce answered partitions it was not sent: {answered:?}"));
        }
        Ok(ordered)
    }

    /// Sends one request frame. The byte runs of `runs` (record sets, in encoding order) are not
    /// copied into the frame but written from where they are ([`encode_frame`]).
    fn send<R: Request>(&mut self, version: i16, body: &R, runs: Vec<Bytes>) -> Result<i32, String> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(self.client_id.clone()));
        self.out.clear();
        let splices = encode_frame(&header, body, version, runs, &mut self.out)
            .map_err(|e| format!("cannot encode a request for {}: {e}", self.target))?;
        let pieces = keel_protocol::interleave(&self.out, splices.iter().map(|(point, run)| (*point, &run[..])));
        keel_client::write_all_gathered(&mut self.stream, &pieces)
            .map_err(|e| format!("sending to {}: {e}", self.target))?;
        Ok(self.correlation)
    }

    fn call<R: Request>(&mut self, version: i16, body: &R) -> Result<R::Response, String> {
        self.call_with(version, body, Vec::new())
    }

    /// [`KafkaWire::call`], with `runs` sent as [`KafkaWire::send`] does.
    fn call_with<R: Request>(&mut self, version: i16, body: &R, runs: Vec<Bytes>) -> Result<R::Response, String> {
        let correlation = self.send(version, body, runs)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(|e| format!("reading from {}: {e}", self.target))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RESPONSE_BYTES {
            return Err(format!("{} sent a {len}-byte response (limit {MAX_RESPONSE_BYTES})", self.target));
        }
        let mut frame = BytesMut::zeroed(len);
        self.stream.read_exact(&mut frame).map_err(|e| format!("reading from {}: {e}", self.target))?;
        let mut frame = frame.freeze();
        let target = &self.target;
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .map_err(|e| format!("undecodable response header from {target}: {e}"))?;
        if header.correlation_id != correlation {
            return Err(format!(
                "{} answered correlation id {}, expected {correlation}",
                self.target, header.correlation_id
            ));
        }
        R::Response::decode(&mut frame, version).map_err(|e| format!("undecodable response from {target}: {e}"))
    }
}

/// Appends to `out` (empty) the frame of `body` (length prefix, header, body) with the runs of
/// `runs` (in the order the encoder puts them) left out, and returns where they go: the frame is
/// `keel_protocol::interleave(out, splices)`. The batches of a Produce request are most of its
/// bytes; copying them into the frame was a fifth of this producer's CPU, which the native client
/// does not spend (it writes its batches the same way).
fn encode_frame<R: Request>(
    header: &RequestHeader,
    body: &R,
    version: i16,
    runs: Vec<Bytes>,
    out: &mut Vec<u8>,
) -> Result<Vec<(usize, Bytes)>, String> {
    debug_assert!(out.is_empty());
    let mut buf = keel_protocol::SkeletonBuf::frame(out, runs);
    header.encode(&mut buf, R::header_version(version)).map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    buf.finish_frame().ok_or_else(|| "a request over 4 GiB".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topics by name, each with its partitions as (partition, bytes of records).
    type Shape<'a> = &'a [(&'a str, &'a [(i32, usize)])];

    fn produce(shape: Shape<'_>) -> (ProduceRequest, Vec<Bytes>) {
        let mut runs = Vec::new();
        let topics = shape
            .iter()
            .map(|(name, parts)| {
                let partitions = parts
                    .iter()
                    .map(|&(p, len)| {
                        let records = Bytes::from((0..len).map(|i| (i * 7 + p as usize) as u8).collect::<Vec<_>>());
                        runs.push(records.clone());
                        PartitionProduceData::default().with_index(p).with_records(Some(records))
                    })
                    .collect();
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string((*name).to_owned())))
                    .with_partition_data(partitions)
            })
            .collect();
        (ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(topics), runs)
    }

    #[test]
    fn a_gathered_produce_request_has_the_bytes_of_a_whole_one_in_every_version() {
        let shapes: &[Shape<'_>] = &[
            &[("t", &[(0, 70_000)])],
            &[("events", &[(0, 20_000), (1, 0), (2, 5), (3, 1 << 20)]), ("other", &[(7, 65_536)])],
            &[("small", &[(0, 100), (1, 1023)])],
            &[],
        ];
        for version in PRODUCE_VERSIONS.0..=PRODUCE_VERSIONS.1 {
            for shape in shapes {
                let (request, runs) = produce(shape);
                let header = RequestHeader::default()
                    .with_request_api_key(ApiKey::Produce as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(77)
                    .with_client_id(Some(StrBytes::from_static_str("keel-bench-producer-3")));
                let mut whole = vec![0; 4];
                header.encode(&mut whole, ProduceRequest::header_version(version)).unwrap();
                request.encode(&mut whole, version).unwrap();
                let len = (whole.len() - 4) as u32;
                whole[..4].copy_from_slice(&len.to_be_bytes());

                let mut out = Vec::new();
                let splices = encode_frame(&header, &request, version, runs.clone(), &mut out).unwrap();
                let gathered = keel_protocol::interleave(&out, splices.iter().map(|(p, r)| (*p, &r[..]))).concat();
                assert_eq!(gathered, whole, "v{version} {shape:?}");
                // Every run of 1 KiB or more is left out of the skeleton, the others copied.
                let big: usize = runs.iter().map(Bytes::len).filter(|&n| n >= keel_protocol::SPLICE_MIN_BYTES).sum();
                assert_eq!(splices.iter().map(|(_, r)| r.len()).sum::<usize>(), big, "v{version} {shape:?}");
                assert_eq!(out.len() + big, whole.len());
            }
        }
    }
}
