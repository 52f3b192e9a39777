//! Responses: the request's correlation id, a top-level error code and message, then the API's
//! body — only when the top-level code is `NONE`.
//!
//! A top-level error (unknown API, unsupported version, malformed request, broker shutting down)
//! means the request was not executed at all; per-topic and per-partition codes inside a body
//! report what happened to each part of an executed request. A client reads the correlation id
//! with [`decode_response_header`] to find the request it answers, then decodes the whole payload
//! with [`decode_response`] and the API and version it asked for.

use std::fmt;

use bytes::Bytes;

use crate::api::ApiKey;
use crate::codec::{decode_exact, wire_struct, Reader, Wire};
use crate::error::DecodeError;
use crate::error_code::ErrorCode;
use crate::frame::{begin_frame, end_frame};
use crate::messages::*;

wire_struct! {
    /// What precedes every response body.
    pub struct ResponseHeader {
        /// The `correlation_id` of the request this answers.
        pub correlation_id: u32,
        /// `NONE` if a body follows; otherwise the top-level error and no body.
        pub error_code: ErrorCode,
        /// Details for humans with a top-level error; always null with `NONE`.
        pub error_message: Option<String>,
    }
}

/// A request that was not executed: the top-level code (never [`ErrorCode::None`]) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopLevelError {
    pub code: ErrorCode,
    pub message: Option<String>,
}

impl From<&DecodeError> for TopLevelError {
    /// The answer to a request that did not decode: its code, and the reason as the message.
    fn from(e: &DecodeError) -> Self {
        TopLevelError { code: e.error_code(), message: Some(e.to_string()) }
    }
}

impl fmt::Display for TopLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{}: {message}", self.code),
            None => write!(f, "{}: {}", self.code, self.code.description()),
        }
    }
}

impl std::error::Error for TopLevelError {}

/// A decoded response body, one variant per API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    CreateTopic(CreateTopicResponse),
    DeleteTopic(DeleteTopicResponse),
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    CommitOffsets(CommitOffsetsResponse),
    FetchCommitted(FetchCommittedResponse),
    DescribeConfigs(DescribeConfigsResponse),
    AlterConfigs(AlterConfigsResponse),
    ListGroups(ListGroupsResponse),
    BrokerStatus(BrokerStatusResponse),
}

impl Response {
    /// The API this body belongs to.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Response::ApiVersions(_) => ApiKey::ApiVersions,
            Response::Metadata(_) => ApiKey::Metadata,
            Response::CreateTopic(_) => ApiKey::CreateTopic,
            Response::DeleteTopic(_) => ApiKey::DeleteTopic,
            Response::Produce(_) => ApiKey::Produce,
            Response::Fetch(_) => ApiKey::Fetch,
            Response::ListOffsets(_) => ApiKey::ListOffsets,
            Response::CommitOffsets(_) => ApiKey::CommitOffsets,
            Response::FetchCommitted(_) => ApiKey::FetchCommitted,
            Response::DescribeConfigs(_) => ApiKey::DescribeConfigs,
            Response::AlterConfigs(_) => ApiKey::AlterConfigs,
            Response::ListGroups(_) => ApiKey::ListGroups,
            Response::BrokerStatus(_) => ApiKey::BrokerStatus,
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Response::ApiVersions(body) => body.encode(out),
            Response::Metadata(body) => body.encode(out),
            Response::CreateTopic(body) => body.encode(out),
            Response::DeleteTopic(body) => body.encode(out),
            Response::Produce(body) => body.encode(out),
            Response::Fetch(body) => body.encode(out),
            Response::ListOffsets(body) => body.encode(out),
            Response::CommitOffsets(body) => body.encode(out),
            Response::FetchCommitted(body) => body.encode(out),
            Response::DescribeConfigs(body) => body.encode(out),
            Response::AlterConfigs(body) => body.encode(out),
            Response::ListGroups(body) => body.encode(out),
            Response::BrokerStatus(body) => body.encode(out),
        }
    }

    /// Reads the body of `api` (whose `version` was checked) up to the end of the payload.
    fn decode_body(api: ApiKey, version: u16, r: &mut Reader<'_>) -> Result<Response, DecodeError> {
        fn body<T: Wire>(
            r: &mut Reader<'_>,
            ctx: (ApiKey, u16),
            wrap: fn(T) -> Response,
        ) -> Result<Response, DecodeError> {
            decode_exact(r, &format_args!("{} v{} response", ctx.0, ctx.1)).map(wrap)
        }
        let ctx = (api, version);
        match api {
            ApiKey::ApiVersions => body(r, ctx, Response::ApiVersions),
            ApiKey::Metadata => body(r, ctx, Response::Metadata),
            ApiKey::CreateTopic => body(r, ctx, Response::CreateTopic),
            ApiKey::DeleteTopic => body(r, ctx, Response::DeleteTopic),
            ApiKey::Produce => body(r, ctx, Response::Produce),
            ApiKey::Fetch => body(r, ctx, Response::Fetch),
            ApiKey::ListOffsets => body(r, ctx, Response::ListOffsets),
            ApiKey::CommitOffsets => body(r, ctx, Response::CommitOffsets),
            ApiKey::FetchCommitted => body(r, ctx, Response::FetchCommitted),
            ApiKey::DescribeConfigs => body(r, ctx, Response::DescribeConfigs),
            ApiKey::AlterConfigs => body(r, ctx, Response::AlterConfigs),
            ApiKey::ListGroups => body(r, ctx, Response::ListGroups),
            ApiKey::BrokerStatus => body(r, ctx, Response::BrokerStatus),
        }
    }
}

/// Appends one whole response frame to `out`: the header with `correlation_id`, then either the
/// body of `response` in `api_version` or, for `Err`, the top-level error and no body.
///
/// # Panics
/// If a body's `api_version` is outside its API's supported range, a [`TopLevelError`] has code
/// [`ErrorCode::None`], or a string or array is too long for its length prefix: all programmer
/// errors. (A top-level error has no body, so `api_version` is not checked for it: a broker
/// answers `UNSUPPORTED_VERSION` to any version.)
pub fn encode_response(
    correlation_id: u32,
    api_version: u16,
    response: &Result<Response, TopLevelError>,
    out: &mut Vec<u8>,
) {
    let start = begin_frame(out);
    match response {
        Ok(body) => {
            if let Err(e) = body.api_key().check_version(api_version) {
                panic!("cannot encode a response: {e}");
            }
            ResponseHeader { correlation_id, error_code: ErrorCode::None, error_message: None }.encode(out);
            body.encode_body(out);
        }
        Err(TopLevelError { code, message }) => {
            assert_ne!(*code, ErrorCode::None, "a top-level error needs an error code");
            ResponseHeader { correlation_id, error_code: *code, error_message: message.clone() }.encode(out);
        }
    }
    end_frame(out, start);
}

/// Reads the header at the start of a response payload; returns it and the offset of the body
/// (which is present only if `error_code` is `NONE`).
pub fn decode_response_header(payload: &[u8]) -> Result<(ResponseHeader, usize), DecodeError> {
    let mut r = Reader::new(payload, 0);
    let header = ResponseHeader::decode(&mut r).map_err(|e| DecodeError::Invalid(format!("response header: {e}")))?;
    if header.error_code == ErrorCode::None && header.error_message.is_some() {
        return Err(DecodeError::Invalid("response header: error_message is set but error_code is NONE".into()));
    }
    Ok((header, r.position()))
}

/// Reads a whole response payload to a request of `api_key` in `api_version`: the correlation id
/// and either the body or the top-level error. `bytes` fields (Fetch records) are slices of
/// `payload`, not copies.
pub fn decode_response(
    api_key: ApiKey,
    api_version: u16,
    payload: &Bytes,
) -> Result<(u32, Result<Response, TopLevelError>), DecodeError> {
    api_key.check_version(api_version)?;
    let (header, body_at) = decode_response_header(payload)?;
    let ResponseHeader { correlation_id, error_code, error_message } = header;
    if error_code != ErrorCode::None {
        let left = payload.len() - body_at;
        if left != 0 {
            return Err(DecodeError::Invalid(format!(
                "{api_key} v{api_version} response: {left} bytes of body after the top-level error {error_code}"
            )));
        }
        return Ok((correlation_id, Err(TopLevelError { code: error_code, message: error_message })));
    }
    let body = Response::decode_body(api_key, api_version, &mut Reader::shared(payload, body_at))?;
    Ok((correlation_id, Ok(body)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::SUPPORTED;
    use crate::arb::{sample_response, Arb, KAFKA_BATCH};
    use crate::frame::{decode_frame, read_frames};
    use crate::ids::{Offset, PartitionId};

    fn frame_of(correlation_id: u32, response: &Result<Response, TopLevelError>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_response(correlation_id, 1, response, &mut out);
        out
    }

    fn payload_of(response: &Response) -> Vec<u8> {
        frame_of(7, &Ok(response.clone()))[4..].to_vec()
    }

    fn invalid(api: ApiKey, payload: &[u8]) -> String {
        match decode_response(api, 1, &Bytes::copy_from_slice(payload)) {
            Err(DecodeError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn check_round_trip(
        api: ApiKey,
        correlation_id: u32,
        response: &Result<Response, TopLevelError>,
    ) -> Result<(), TestCaseError> {
        let mut out = vec![0xee]; // encoding appends
        encode_response(correlation_id, 1, response, &mut out);
        let frame = decode_frame(&out[1..], u32::MAX).unwrap().expect("a whole frame");
        prop_assert_eq!(frame.consumed, out.len() - 1);
        let payload = Bytes::copy_from_slice(&out[1..][frame.payload]);
        prop_assert_eq!(decode_response(api, 1, &payload).unwrap(), (correlation_id, response.clone()));
        prop_assert_eq!(decode_response_header(&payload).unwrap().0.correlation_id, correlation_id);
        crate::fuzz_check_decode(&out[1..]);
        Ok(())
    }

    macro_rules! round_trip_tests {
        ($($test:ident: $body:ty => $variant:ident,)*) => {
            proptest! {
                $(
                    #[test]
                    fn $test(body in <$body as Arb>::arb(), correlation_id in any::<u32>()) {
                        let response = Response::$variant(body);
                        check_round_trip(response.api_key(), correlation_id, &Ok(response))?;
                    }
                )*
            }
        };
    }

    round_trip_tests! {
        prop_round_trip_api_versions: ApiVersionsResponse => ApiVersions,
        prop_round_trip_metadata: MetadataResponse => Metadata,
        prop_round_trip_create_topic: CreateTopicResponse => CreateTopic,
        prop_round_trip_delete_topic: DeleteTopicResponse => DeleteTopic,
        prop_round_trip_produce: ProduceResponse => Produce,
        prop_round_trip_fetch: FetchResponse => Fetch,
        prop_round_trip_list_offsets: ListOffsetsResponse => ListOffsets,
        prop_round_trip_commit_offsets: CommitOffsetsResponse => CommitOffsets,
        prop_round_trip_fetch_committed: FetchCommittedResponse => FetchCommitted,
        prop_round_trip_describe_configs: DescribeConfigsResponse => DescribeConfigs,
        prop_round_trip_alter_configs: AlterConfigsResponse => AlterConfigs,
        prop_round_trip_list_groups: ListGroupsResponse => ListGroups,
        prop_round_trip_broker_status: BrokerStatusResponse => BrokerStatus,
    }

    proptest! {
        #[test]
        fn prop_round_trip_top_level_errors(
            api in proptest::sample::select(SUPPORTED.iter().map(|s| s.0).collect::<Vec<_>>()),
            code in ErrorCode::arb().prop_filter("not NONE", |c| *c != ErrorCode::None),
            message in Option::<String>::arb(),
            correlation_id in any::<u32>(),
        ) {
            check_round_trip(api, correlation_id, &Err(TopLevelError { code, message }))?;
        }

        #[test]
        fn prop_frames_split_at_every_point(responses in proptest::collection::vec(Response::arb(), 1..3)) {
            let mut stream = Vec::new();
            for (i, response) in responses.iter().enumerate() {
                encode_response(i as u32, 1, &Ok(response.clone()), &mut stream);
            }
            for split in 0..=stream.len() {
                let payloads = read_frames(&stream, &[split], u32::MAX).unwrap();
                prop_assert_eq!(payloads.len(), responses.len());
                for (i, (payload, response)) in payloads.iter().zip(&responses).enumerate() {
                    let decoded = decode_response(response.api_key(), 1, &Bytes::copy_from_slice(payload)).unwrap();
                    prop_assert_eq!(decoded, (i as u32, Ok(response.clone())));
                }
            }
        }

        #[test]
        fn prop_random_payloads_never_panic(
            api in proptest::sample::select(SUPPORTED.iter().map(|s| s.0).collect::<Vec<_>>()),
            payload in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let payload = Bytes::from(payload);
            let _ = decode_response_header(&payload);
            if let Err(e) = decode_response(api, 1, &payload) {
                let _ = e.to_string();
            }
        }

        #[test]
        fn prop_random_bodies_behind_a_valid_header_never_panic(
            api in proptest::sample::select(SUPPORTED.iter().map(|s| s.0).collect::<Vec<_>>()),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut payload = vec![0, 0, 0, 9, 0, 0, 0xff, 0xff];
            payload.extend_from_slice(&body);
            match decode_response(api, 1, &Bytes::from(payload.clone())) {
                Ok((correlation_id, _)) => prop_assert_eq!(correlation_id, 9),
                Err(DecodeError::Invalid(reason)) => prop_assert!(reason.contains(" v1 response: "), "{}", reason),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
            crate::fuzz_check_decode(&payload);
        }
    }

    #[test]
    fn truncated_bodies_are_invalid_with_the_field_named() {
        for &(api, _, _) in SUPPORTED {
            let payload = payload_of(&sample_response(api));
            let (_, body_at) = decode_response_header(&payload).unwrap();
            assert!(body_at < payload.len(), "{api}: every sample response has a body");
            for cut in body_at..payload.len() {
                let reason = invalid(api, &payload[..cut]);
                let prefix = format!("{api} v1 response: ");
                assert!(reason.starts_with(&prefix), "{reason}");
                let detail = &reason[prefix.len()..];
                assert!(detail.contains(": ") && detail.contains("left"), "{reason}");
            }
            for cut in 0..body_at {
                assert!(invalid(api, &payload[..cut]).starts_with("response header: "));
            }
        }
    }

    #[test]
    fn trailing_bytes_are_invalid() {
        for &(api, _, _) in SUPPORTED {
            let mut payload = payload_of(&sample_response(api));
            payload.push(0);
            assert_eq!(invalid(api, &payload), format!("{api} v1 response: 1 bytes left after the body"));
        }
        let mut payload =
            frame_of(3, &Err(TopLevelError { code: ErrorCode::InvalidRequest, message: None }))[4..].to_vec();
        payload.extend_from_slice(&[0, 0]);
        assert_eq!(
            invalid(ApiKey::Fetch, &payload),
            "Fetch v1 response: 2 bytes of body after the top-level error INVALID_REQUEST (11)"
        );
    }

    #[test]
    fn a_message_without_an_error_is_invalid() {
        let payload = [0, 0, 0, 1, 0, 0, 0, 1, b'x'];
        assert_eq!(
            invalid(ApiKey::ListGroups, &payload),
            "response header: error_message is set but error_code is NONE"
        );
    }

    #[test]
    fn unknown_error_codes_are_kept() {
        let payload = Bytes::from_static(&[0, 0, 0, 5, 0x01, 0x00, 0xff, 0xff]);
        let (correlation_id, result) = decode_response(ApiKey::Metadata, 1, &payload).unwrap();
        assert_eq!(correlation_id, 5);
        assert_eq!(result, Err(TopLevelError { code: ErrorCode::Unknown(256), message: None }));
    }

    #[test]
    fn decoding_in_an_unsupported_version_fails() {
        let payload = Bytes::from(payload_of(&sample_response(ApiKey::Fetch)));
        assert_eq!(
            decode_response(ApiKey::Fetch, 3, &payload),
            Err(DecodeError::UnsupportedVersion { api_key: ApiKey::Fetch, version: 3, min: 1, max: 1 })
        );
    }

    #[test]
    fn top_level_error_bytes() {
        let e = DecodeError::UnsupportedVersion { api_key: ApiKey::Fetch, version: 9, min: 1, max: 1 };
        let error = TopLevelError::from(&e);
        assert_eq!(error.code, ErrorCode::UnsupportedVersion);
        let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 42, 0, 9];
        let message = "Fetch v9 is not supported (supported: v1 to v1)";
        expected.extend_from_slice(&(message.len() as u16).to_be_bytes());
        expected.extend_from_slice(message.as_bytes());
        expected[3] = (expected.len() - 4) as u8;
        // Any version may be answered with a top-level error.
        let mut out = Vec::new();
        encode_response(42, 9, &Err(error.clone()), &mut out);
        assert_eq!(out, expected);
        assert_eq!(error.to_string(), format!("UNSUPPORTED_VERSION (9): {message}"));
        let bare = TopLevelError { code: ErrorCode::BrokerShuttingDown, message: None };
        assert_eq!(bare.to_string(), "BROKER_SHUTTING_DOWN (14): the broker is shutting down");
    }

    #[test]
    #[should_panic(expected = "a top-level error needs an error code")]
    fn encoding_a_top_level_none_panics() {
        frame_of(1, &Err(TopLevelError { code: ErrorCode::None, message: None }));
    }

    #[test]
    #[should_panic(expected = "Fetch v0 is not supported")]
    fn encoding_a_body_in_an_unsupported_version_panics() {
        encode_response(1, 0, &Ok(sample_response(ApiKey::Fetch)), &mut Vec::new());
    }

    #[test]
    fn fetch_records_share_the_frame() {
        let payload = Bytes::from(payload_of(&sample_response(ApiKey::Fetch)));
        let (_, result) = decode_response(ApiKey::Fetch, 1, &payload).unwrap();
        let Ok(Response::Fetch(fetch)) = result else { panic!("not a fetch response") };
        let records = &fetch.topics[0].partitions[0].records;
        assert_eq!(records.as_ptr(), payload[payload.len() - records.len()..].as_ptr());
    }

    #[test]
    fn api_versions_lists_the_supported_table() {
        let response = ApiVersionsResponse::supported("0.1.0");
        assert_eq!(response.apis.len(), SUPPORTED.len());
        assert_eq!(response.range(ApiKey::BrokerStatus), Some((1, 1)));
        let older = ApiVersionsResponse { apis: vec![], broker_version: "0.0.1".into() };
        assert_eq!(older.range(ApiKey::Fetch), None);
    }

    /// The worked example of docs/protocol.md: keep the two in sync.
    #[test]
    fn golden_fetch_response() {
        let response = Response::Fetch(FetchResponse {
            topics: vec![FetchTopicResponse {
                name: "events".into(),
                partitions: vec![FetchPartitionResponse {
                    partition: PartitionId(0),
                    error_code: ErrorCode::None,
                    high_watermark: Offset(1),
                    log_start_offset: Offset(0),
                    records: Bytes::from_static(&KAFKA_BATCH),
                }],
            }],
        });
        let mut expected = vec![
            0x00, 0x00, 0x00, 0x79, // frame size 121
            0x00, 0x00, 0x00, 0x07, // correlation_id 7
            0x00, 0x00, // error_code 0 (NONE)
            0xff, 0xff, // error_message null
            0x00, 0x00, 0x00, 0x01, // topics: 1
            0x00, 0x06, b'e', b'v', b'e', b'n', b't', b's', // name "events"
            0x00, 0x00, 0x00, 0x01, // partitions: 1
            0x00, 0x00, 0x00, 0x00, // partition 0
            0x00, 0x00, // error_code 0 (NONE)
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // high_watermark 1
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // log_start_offset 0
            0x00, 0x00, 0x00, 0x47, // records: 71 bytes
        ];
        expected.extend_from_slice(&KAFKA_BATCH);
        assert_eq!(frame_of(7, &Ok(response.clone())), expected);
        let payload = Bytes::copy_from_slice(&expected[4..]);
        assert_eq!(decode_response(ApiKey::Fetch, 1, &payload), Ok((7, Ok(response))));
    }
}
