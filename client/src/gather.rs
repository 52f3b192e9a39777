//! Produce requests sent without copying their record batches into the frame.
//!
//! [`encode_request`] copies every batch into the one frame buffer; for a Produce request that
//! copy is most of the client's work. Instead the request is encoded with every partition's
//! records left empty (a "skeleton"), the length fields and the frame size are fixed up, and the
//! socket gets the skeleton's pieces and the batches alternately in one vectored write. The bytes
//! on the wire are exactly [`encode_request`]'s (checked by the tests below); if the skeleton does
//! not have the expected layout, the caller falls back to [`encode_request`].

use bytes::Bytes;
use keel_protocol::{
    encode_request,
    messages::{ProducePartition, ProduceRequest, ProduceTopic},
    Request, RequestHeader, FRAME_PREFIX_BYTES,
};

/// Below this many bytes of records, copying them is cheaper than a vectored write.
pub(crate) const GATHER_MIN_RECORD_BYTES: usize = 16 << 10;

/// Appends to `out` (empty) the frame of `request` without its records, with lengths and frame
/// size as if they were there, and returns where each partition's records belong in `out`, in
/// request order. `None` if the layout is not the expected one (`out` is then unspecified).
pub(crate) fn encode_produce_skeleton(
    header: &RequestHeader,
    request: &ProduceRequest,
    out: &mut Vec<u8>,
) -> Option<Vec<usize>> {
    debug_assert!(out.is_empty());
    let skeleton = ProduceRequest {
        acks: request.acks,
        timeout_ms: request.timeout_ms,
        topics: request
            .topics
            .iter()
            .map(|t| ProduceTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| ProducePartition { partition: p.partition, records: Bytes::new() })
                    .collect(),
            })
            .collect(),
    };
    encode_request(header, &Request::Produce(skeleton), out);
    // Frame prefix; header: api key u16, version u16, correlation id u32, client id (u16 length +
    // bytes); body: acks i8, timeout u32, topic count u32; per topic: name (u16 length + bytes),
    // partition count u32; per partition: partition u32, records (u32 length + bytes).
    let mut pos = FRAME_PREFIX_BYTES + 2 + 2 + 4 + 2 + header.client_id.len() + 1 + 4 + 4;
    let mut points = Vec::new();
    let mut records = 0usize;
    for t in &request.topics {
        pos += 2 + t.name.len() + 4;
        for p in &t.partitions {
            if out.get(pos..pos + 4)? != p.partition.0.to_be_bytes() || out.get(pos + 4..pos + 8)? != [0; 4] {
                return None;
            }
            let len = u32::try_from(p.records.len()).ok()?;
            out[pos + 4..pos + 8].copy_from_slice(&len.to_be_bytes());
            pos += 8;
            points.push(pos);
            records += p.records.len();
        }
    }
    if pos != out.len() {
        return None;
    }
    let prefix: [u8; FRAME_PREFIX_BYTES] = out[..FRAME_PREFIX_BYTES].try_into().ok()?;
    let size = u32::try_from(u32::from_be_bytes(prefix) as usize + records).ok()?;
    out[..FRAME_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Some(points)
}

/// The pieces to write, in order: the skeleton up to each partition's records, the records, ...,
/// the rest of the skeleton.
pub(crate) fn pieces<'a>(skeleton: &'a [u8], points: &[usize], request: &'a ProduceRequest) -> Vec<&'a [u8]> {
    let records = request.topics.iter().flat_map(|t| &t.partitions).map(|p| &p.records[..]);
    keel_protocol::interleave(skeleton, points.iter().copied().zip(records))
}

#[cfg(test)]
mod tests {
    use keel_protocol::{messages::Acks, PartitionId};

    use super::*;

    /// Topics by name, each with its partitions as (partition, bytes of records).
    type Shape<'a> = &'a [(&'a str, &'a [(u32, usize)])];

    fn request(shape: Shape<'_>) -> ProduceRequest {
        ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 1234,
            topics: shape
                .iter()
                .map(|(name, parts)| ProduceTopic {
                    name: (*name).into(),
                    partitions: parts
                        .iter()
                        .map(|&(p, len)| ProducePartition {
                            partition: PartitionId(p),
                            records: Bytes::from((0..len).map(|i| (i * 7 + p as usize) as u8).collect::<Vec<_>>()),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn gathered_bytes_are_encode_requests_bytes() {
        let shapes: &[Shape<'_>] = &[
            &[("t", &[(0, 100)])],
            &[("events", &[(3, 70_000), (0, 0), (9, 5)])],
            &[("a", &[(1, 10), (2, 20)]), ("longer-topic-name", &[(0, 30_000)]), ("empty", &[])],
            &[],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            let request = request(shape);
            for client_id in ["", "keel-bench-producer-12"] {
                let header = RequestHeader {
                    api_key: keel_protocol::ApiKey::Produce.code(),
                    api_version: 1,
                    correlation_id: 77 + i as u32,
                    client_id: client_id.into(),
                };
                let mut want = Vec::new();
                encode_request(&header, &Request::Produce(request.clone()), &mut want);
                let mut skeleton = Vec::new();
                let points = encode_produce_skeleton(&header, &request, &mut skeleton).expect("the expected layout");
                let got: Vec<u8> = pieces(&skeleton, &points, &request).concat();
                assert_eq!(got, want, "shape {i}, client id {client_id:?}");
            }
        }
    }
}
