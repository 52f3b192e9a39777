//! Requests: a header naming the API, its version and a correlation id, then the API's body.
//!
//! A broker decodes a frame's payload with [`decode_request`]. If that fails, it reads the header
//! alone with [`decode_request_header`] to answer the right correlation id with the error's code
//! ([`DecodeError::error_code`]); if even the header is unreadable it closes the connection.

use bytes::Bytes;

use crate::api::ApiKey;
use crate::codec::{decode_exact, wire_struct, Reader, Wire};
use crate::error::DecodeError;
use crate::frame::{begin_frame, end_frame};
use crate::messages::*;

wire_struct! {
    /// What precedes every request body.
    pub struct RequestHeader {
        /// The API's key. Raw, because a header must stay readable for an unknown key (the
        /// broker answers `UNKNOWN_API` to its correlation id); see [`ApiKey::from_u16`].
        pub api_key: u16,
        /// The body's version; the response is in the same version.
        pub api_version: u16,
        /// Chosen by the client and echoed in the response, so a client can have several requests
        /// in flight on one connection; match responses by it, not by their order.
        pub correlation_id: u32,
        /// The client's name, for the broker's logs and metrics.
        pub client_id: String,
    }
}

/// A decoded request body, one variant per API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic(DeleteTopicRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    CommitOffsets(CommitOffsetsRequest),
    FetchCommitted(FetchCommittedRequest),
    DescribeConfigs(DescribeConfigsRequest),
    AlterConfigs(AlterConfigsRequest),
    ListGroups(ListGroupsRequest),
    BrokerStatus(BrokerStatusRequest),
}

impl Request {
    /// The API this body belongs to.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::ApiVersions(_) => ApiKey::ApiVersions,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::CreateTopic(_) => ApiKey::CreateTopic,
            Request::DeleteTopic(_) => ApiKey::DeleteTopic,
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::CommitOffsets(_) => ApiKey::CommitOffsets,
            Request::FetchCommitted(_) => ApiKey::FetchCommitted,
            Request::DescribeConfigs(_) => ApiKey::DescribeConfigs,
            Request::AlterConfigs(_) => ApiKey::AlterConfigs,
            Request::ListGroups(_) => ApiKey::ListGroups,
            Request::BrokerStatus(_) => ApiKey::BrokerStatus,
        }
    }

    /// False only for a Produce request with `acks` = [`Acks::None`], which gets no response.
    pub fn expects_response(&self) -> bool {
        !matches!(self, Request::Produce(ProduceRequest { acks: Acks::None, .. }))
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Request::ApiVersions(body) => body.encode(out),
            Request::Metadata(body) => body.encode(out),
            Request::CreateTopic(body) => body.encode(out),
            Request::DeleteTopic(body) => body.encode(out),
            Request::Produce(body) => body.encode(out),
            Request::Fetch(body) => body.encode(out),
            Request::ListOffsets(body) => body.encode(out),
            Request::CommitOffsets(body) => body.encode(out),
            Request::FetchCommitted(body) => body.encode(out),
            Request::DescribeConfigs(body) => body.encode(out),
            Request::AlterConfigs(body) => body.encode(out),
            Request::ListGroups(body) => body.encode(out),
            Request::BrokerStatus(body) => body.encode(out),
        }
    }

    /// Reads the body of `api` (whose `version` was checked) up to the end of the payload.
    fn decode_body(api: ApiKey, version: u16, r: &mut Reader<'_>) -> Result<Request, DecodeError> {
        fn body<T: Wire>(
            r: &mut Reader<'_>,
            ctx: (ApiKey, u16),
            wrap: fn(T) -> Request,
        ) -> Result<Request, DecodeError> {
            decode_exact(r, &format_args!("{} v{}", ctx.0, ctx.1)).map(wrap)
        }
        let ctx = (api, version);
        match api {
            ApiKey::ApiVersions => body(r, ctx, Request::ApiVersions),
            ApiKey::Metadata => body(r, ctx, Request::Metadata),
            ApiKey::CreateTopic => body(r, ctx, Request::CreateTopic),
            ApiKey::DeleteTopic => body(r, ctx, Request::DeleteTopic),
            ApiKey::Produce => body(r, ctx, Request::Produce),
            ApiKey::Fetch => body(r, ctx, Request::Fetch),
            ApiKey::ListOffsets => body(r, ctx, Request::ListOffsets),
            ApiKey::CommitOffsets => body(r, ctx, Request::CommitOffsets),
            ApiKey::FetchCommitted => body(r, ctx, Request::FetchCommitted),
            ApiKey::DescribeConfigs => body(r, ctx, Request::DescribeConfigs),
            ApiKey::AlterConfigs => body(r, ctx, Request::AlterConfigs),
            ApiKey::ListGroups => body(r, ctx, Request::ListGroups),
            ApiKey::BrokerStatus => body(r, ctx, Request::BrokerStatus),
        }
    }
}

/// Appends one whole request frame (size prefix, header, body) to `out`.
///
/// # Panics
/// If `header.api_key` is not `request`'s API or `header.api_version` is outside its supported
/// range, or a string or array is too long for its length prefix (see [`crate::MAX_STRING_BYTES`]):
/// all programmer errors.
pub fn encode_request(header: &RequestHeader, request: &Request, out: &mut Vec<u8>) {
    let api = request.api_key();
    assert_eq!(header.api_key, api.code(), "header api_key {} does not match a {api} body", header.api_key);
    if let Err(e) = api.check_version(header.api_version) {
        panic!("cannot encode a request: {e}");
    }
    let start = begin_frame(out);
    header.encode(out);
    request.encode_body(out);
    end_frame(out, start);
}

/// Reads the header at the start of a request payload, without checking the API key or version.
/// Returns the header and the offset of the body in `payload`.
pub fn decode_request_header(payload: &[u8]) -> Result<(RequestHeader, usize), DecodeError> {
    let mut r = Reader::new(payload, 0);
    let header = RequestHeader::decode(&mut r).map_err(|e| DecodeError::Invalid(format!("request header: {e}")))?;
    Ok((header, r.position()))
}

/// Reads a whole request payload (a frame without its size prefix): the header, then the body of
/// its API and version, which must end exactly at the end of the payload. `bytes` fields (Produce
/// records) are slices of `payload`, not copies.
pub fn decode_request(payload: &Bytes) -> Result<(RequestHeader, Request), DecodeError> {
    let (header, body_at) = decode_request_header(payload)?;
    let api = ApiKey::from_u16(header.api_key).ok_or(DecodeError::UnknownApi(header.api_key))?;
    api.check_version(header.api_version)?;
    let request = Request::decode_body(api, header.api_version, &mut Reader::shared(payload, body_at))?;
    Ok((header, request))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::SUPPORTED;
    use crate::arb::{sample_request, Arb, KAFKA_BATCH};
    use crate::frame::{decode_frame, read_frames};
    use crate::ids::PartitionId;

    fn header_for(request: &Request, correlation_id: u32) -> RequestHeader {
        RequestHeader {
            api_key: request.api_key().code(),
            api_version: 1,
            correlation_id,
            client_id: "test-client".into(),
        }
    }

    fn frame_of(header: &RequestHeader, request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(header, request, &mut out);
        out
    }

    /// The payload of a request (its frame without the prefix).
    fn payload_of(request: &Request) -> Vec<u8> {
        frame_of(&header_for(request, 7), request)[4..].to_vec()
    }

    fn invalid(payload: &[u8]) -> String {
        match decode_request(&Bytes::copy_from_slice(payload)) {
            Err(DecodeError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn check_round_trip(header: &RequestHeader, request: &Request) -> Result<(), TestCaseError> {
        let mut out = vec![0xee]; // encoding appends
        encode_request(header, request, &mut out);
        let frame = decode_frame(&out[1..], u32::MAX).unwrap().expect("a whole frame");
        prop_assert_eq!(frame.consumed, out.len() - 1);
        let payload = Bytes::copy_from_slice(&out[1..][frame.payload]);
        let (h, r) = decode_request(&payload).unwrap();
        prop_assert_eq!(&h, header);
        prop_assert_eq!(&r, request);
        prop_assert_eq!(decode_request_header(&payload).unwrap().0, h);
        crate::fuzz_check_decode(&out[1..]);
        Ok(())
    }

    macro_rules! round_trip_tests {
        ($($test:ident: $body:ty => $variant:ident,)*) => {
            proptest! {
                $(
                    #[test]
                    fn $test(body in <$body as Arb>::arb(), correlation_id in any::<u32>(), client_id in String::arb()) {
                        let request = Request::$variant(body);
                        let header = RequestHeader { client_id, ..header_for(&request, correlation_id) };
                        check_round_trip(&header, &request)?;
                    }
                )*
            }
        };
    }

    round_trip_tests! {
        prop_round_trip_api_versions: ApiVersionsRequest => ApiVersions,
        prop_round_trip_metadata: MetadataRequest => Metadata,
        prop_round_trip_create_topic: CreateTopicRequest => CreateTopic,
        prop_round_trip_delete_topic: DeleteTopicRequest => DeleteTopic,
        prop_round_trip_produce: ProduceRequest => Produce,
        prop_round_trip_fetch: FetchRequest => Fetch,
        prop_round_trip_list_offsets: ListOffsetsRequest => ListOffsets,
        prop_round_trip_commit_offsets: CommitOffsetsRequest => CommitOffsets,
        prop_round_trip_fetch_committed: FetchCommittedRequest => FetchCommitted,
        prop_round_trip_describe_configs: DescribeConfigsRequest => DescribeConfigs,
        prop_round_trip_alter_configs: AlterConfigsRequest => AlterConfigs,
        prop_round_trip_list_groups: ListGroupsRequest => ListGroups,
        prop_round_trip_broker_status: BrokerStatusRequest => BrokerStatus,
    }

    proptest! {
        #[test]
        fn prop_frames_split_at_every_point(requests in proptest::collection::vec(Request::arb(), 1..3)) {
            let mut stream = Vec::new();
            for (i, request) in requests.iter().enumerate() {
                encode_request(&header_for(request, i as u32), request, &mut stream);
            }
            for split in 0..=stream.len() {
                let payloads = read_frames(&stream, &[split], u32::MAX).unwrap();
                prop_assert_eq!(payloads.len(), requests.len());
                for (i, (payload, request)) in payloads.iter().zip(&requests).enumerate() {
                    let (header, decoded) = decode_request(&Bytes::copy_from_slice(payload)).unwrap();
                    prop_assert_eq!(header.correlation_id, i as u32);
                    prop_assert_eq!(&decoded, request);
                }
            }
        }

        #[test]
        fn prop_random_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..96)) {
            let payload = Bytes::from(payload);
            let _ = decode_request_header(&payload);
            if let Err(e) = decode_request(&payload) {
                let _ = e.to_string();
            }
            crate::fuzz_check_decode(&payload);
        }

        #[test]
        fn prop_random_bodies_behind_a_valid_header_never_panic(
            key in 0u16..14,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut payload = Vec::new();
            RequestHeader { api_key: key, api_version: 1, correlation_id: 9, client_id: "c".into() }.encode(&mut payload);
            payload.extend_from_slice(&body);
            match decode_request(&Bytes::from(payload.clone())) {
                Ok((header, _)) => prop_assert_eq!(header.correlation_id, 9),
                Err(DecodeError::UnknownApi(k)) => prop_assert_eq!(k, 13),
                Err(DecodeError::Invalid(reason)) => prop_assert!(reason.contains(" v1: "), "{}", reason),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
            crate::fuzz_check_decode(&payload);
        }

        #[test]
        fn prop_mutated_requests_never_panic(
            request in Request::arb(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut payload = payload_of(&request);
            for (at, byte) in edits {
                let i = at.index(payload.len());
                payload[i] = byte;
            }
            crate::fuzz_check_decode(&payload);
        }
    }

    #[test]
    fn produce_records_share_the_frame() {
        let request = sample_request(ApiKey::Produce);
        let payload = Bytes::from(payload_of(&request));
        let (_, decoded) = decode_request(&payload).unwrap();
        let Request::Produce(produce) = decoded else { panic!("not a produce request") };
        let records = &produce.topics[0].partitions[0].records;
        let at = payload.len() - records.len();
        assert_eq!(records.as_ptr(), payload[at..].as_ptr());
    }

    #[test]
    fn truncated_bodies_are_invalid_with_the_field_named() {
        for &(api, _, _) in SUPPORTED {
            let request = sample_request(api);
            let payload = payload_of(&request);
            let (_, body_at) = decode_request_header(&payload).unwrap();
            for cut in body_at..payload.len() {
                let reason = invalid(&payload[..cut]);
                let prefix = format!("{api} v1: ");
                assert!(reason.starts_with(&prefix), "{reason}");
                // Names the field, e.g. "Fetch v1: topics[0].partitions[0].fetch_offset: needs 8 bytes ..."
                let detail = &reason[prefix.len()..];
                assert!(detail.contains(": ") && detail.contains("left"), "{reason}");
            }
            // Cutting into the header: the header is what is reported.
            for cut in 0..body_at {
                assert!(invalid(&payload[..cut]).starts_with("request header: "));
            }
        }
    }

    #[test]
    fn truncation_reasons_are_precise() {
        let payload = payload_of(&sample_request(ApiKey::Fetch));
        let (_, body_at) = decode_request_header(&payload).unwrap();
        assert_eq!(invalid(&payload[..body_at + 2]), "Fetch v1: max_wait_ms: needs 4 bytes but only 2 are left");
        // max_wait_ms, min_bytes, max_bytes (12), topics count (4), name (2 + 6), partitions count (4),
        // then 7 of the 16 bytes of the one partition: refused from the count.
        assert_eq!(
            invalid(&payload[..body_at + 12 + 4 + 8 + 4 + 7]),
            "Fetch v1: topics[0].partitions: count 1 exceeds the 7 bytes left (each element takes at least 16)"
        );
        // The last 6 of the 11 record bytes are missing.
        let payload = payload_of(&sample_request(ApiKey::Produce));
        assert_eq!(
            invalid(&payload[..payload.len() - 6]),
            "Produce v1: topics[0].partitions[0].records: length 11 exceeds the 5 bytes left"
        );
    }

    #[test]
    fn trailing_bytes_are_invalid() {
        for &(api, _, _) in SUPPORTED {
            let mut payload = payload_of(&sample_request(api));
            payload.extend_from_slice(&[0, 0, 0]);
            assert_eq!(invalid(&payload), format!("{api} v1: 3 bytes left after the body"));
        }
    }

    #[test]
    fn huge_counts_fail_before_allocating() {
        let header = RequestHeader { api_key: 4, api_version: 1, correlation_id: 1, client_id: String::new() };
        let mut payload = Vec::new();
        header.encode(&mut payload);
        let body_at = payload.len();
        // acks, timeout, then 4 billion topics in what is left of a 20-byte payload.
        payload.extend_from_slice(&[0xff, 0, 0, 0, 10, 0xee, 0x6b, 0x28, 0x00]);
        payload.truncate(20);
        assert_eq!(payload.len() - body_at, 9);
        assert_eq!(
            invalid(&payload),
            "Produce v1: topics: count 4000000000 exceeds the 0 bytes left (each element takes at least 6)"
        );
        // One topic whose partition count is 4 billion, with 12 bytes after it.
        payload.truncate(body_at + 5);
        payload.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't', 0xee, 0x6b, 0x28, 0x00]);
        payload.extend_from_slice(&[0; 12]);
        assert_eq!(
            invalid(&payload),
            "Produce v1: topics[0].partitions: count 4000000000 exceeds the 12 bytes left (each element takes at \
             least 8)"
        );
        // A null-able array at i32::MAX (FetchCommitted topics).
        let mut payload = Vec::new();
        RequestHeader { api_key: 8, ..header }.encode(&mut payload);
        payload.extend_from_slice(&[0, 1, b'g', 0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(
            invalid(&payload),
            "FetchCommitted v1: topics: count 2147483647 exceeds the 0 bytes left (each element takes at least 6)"
        );
    }

    #[test]
    fn unknown_api_and_unsupported_version_keep_the_correlation_id_readable() {
        let mut payload = Vec::new();
        RequestHeader { api_key: 99, api_version: 1, correlation_id: 0xabcd, client_id: "c".into() }
            .encode(&mut payload);
        payload.extend_from_slice(&[1, 2, 3]); // a body this broker cannot know
        assert_eq!(decode_request(&Bytes::from(payload.clone())), Err(DecodeError::UnknownApi(99)));
        let (header, body_at) = decode_request_header(&payload).unwrap();
        assert_eq!((header.correlation_id, body_at), (0xabcd, payload.len() - 3));

        for version in [0, 2, u16::MAX] {
            let mut payload = Vec::new();
            RequestHeader { api_key: 5, api_version: version, correlation_id: 77, client_id: "c".into() }
                .encode(&mut payload);
            assert_eq!(
                decode_request(&Bytes::from(payload.clone())),
                Err(DecodeError::UnsupportedVersion { api_key: ApiKey::Fetch, version, min: 1, max: 1 })
            );
            assert_eq!(decode_request_header(&payload).unwrap().0.correlation_id, 77);
        }
    }

    #[test]
    fn malformed_headers() {
        assert_eq!(invalid(&[]), "request header: api_key: needs 2 bytes but only 0 are left");
        assert_eq!(
            invalid(&[0, 4, 0, 1, 0, 0, 0, 1, 0, 9, b'x']),
            "request header: client_id: length 9 exceeds the 1 bytes left"
        );
        assert_eq!(
            invalid(&[0, 4, 0, 1, 0, 0, 0, 1, 0, 1, 0xc3]),
            "request header: client_id: invalid UTF-8 after 0 of 1 bytes"
        );
    }

    #[test]
    fn invalid_enum_values() {
        let mut payload = payload_of(&sample_request(ApiKey::Produce));
        let (_, body_at) = decode_request_header(&payload).unwrap();
        payload[body_at] = 2;
        assert_eq!(invalid(&payload), "Produce v1: acks: acks 2 is not 0 (none), 1 (leader) or -1 (all)");

        let mut payload = payload_of(&sample_request(ApiKey::ListOffsets));
        let at = payload.len() - 8;
        payload[at..].copy_from_slice(&(-3i64).to_be_bytes());
        assert_eq!(
            invalid(&payload),
            "ListOffsets v1: topics[0].partitions[0].timestamp: timestamp -3 is not -1 (latest), -2 (earliest) or a \
             time >= 0"
        );
    }

    #[test]
    fn acks_none_expects_no_response() {
        let Request::Produce(mut produce) = sample_request(ApiKey::Produce) else { unreachable!() };
        assert!(Request::Produce(produce.clone()).expects_response());
        produce.acks = Acks::None;
        assert!(!Request::Produce(produce).expects_response());
        assert!(sample_request(ApiKey::Fetch).expects_response());
    }

    #[test]
    #[should_panic(expected = "does not match a Fetch body")]
    fn encoding_with_a_mismatched_header_panics() {
        let request = sample_request(ApiKey::Fetch);
        frame_of(&RequestHeader { api_key: 4, ..header_for(&request, 1) }, &request);
    }

    #[test]
    #[should_panic(expected = "Fetch v2 is not supported")]
    fn encoding_an_unsupported_version_panics() {
        let request = sample_request(ApiKey::Fetch);
        frame_of(&RequestHeader { api_version: 2, ..header_for(&request, 1) }, &request);
    }

    /// The worked example of docs/protocol.md: keep the two in sync.
    #[test]
    fn golden_produce_request() {
        let header = RequestHeader { api_key: 4, api_version: 1, correlation_id: 7, client_id: "demo".into() };
        let request = Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 30_000,
            topics: vec![ProduceTopic {
                name: "events".into(),
                partitions: vec![ProducePartition {
                    partition: PartitionId(0),
                    records: Bytes::from_static(&KAFKA_BATCH),
                }],
            }],
        });
        let mut expected = vec![
            0x00, 0x00, 0x00, 0x72, // frame size 114
            0x00, 0x04, // api_key 4 (Produce)
            0x00, 0x01, // api_version 1
            0x00, 0x00, 0x00, 0x07, // correlation_id 7
            0x00, 0x04, b'd', b'e', b'm', b'o', // client_id "demo"
            0xff, // acks -1 (all)
            0x00, 0x00, 0x75, 0x30, // timeout_ms 30000
            0x00, 0x00, 0x00, 0x01, // topics: 1
            0x00, 0x06, b'e', b'v', b'e', b'n', b't', b's', // name "events"
            0x00, 0x00, 0x00, 0x01, // partitions: 1
            0x00, 0x00, 0x00, 0x00, // partition 0
            0x00, 0x00, 0x00, 0x47, // records: 71 bytes
        ];
        expected.extend_from_slice(&KAFKA_BATCH);
        assert_eq!(frame_of(&header, &request), expected);
        let payload = Bytes::copy_from_slice(&expected[4..]);
        assert_eq!(decode_request(&payload), Ok((header, request)));
    }
}
