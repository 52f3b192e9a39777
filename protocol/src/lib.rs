//! # keel-protocol — Keel's native binary protocol
//!
//! Pure codecs between bytes and typed messages: no I/O, no runtime. A connection loop moves
//! bytes; this crate says where a frame ends ([`decode_frame`]), what a request asks
//! ([`decode_request`]) and how to write the answer ([`encode_response`]). Clients use the mirror
//! functions ([`encode_request`], [`decode_response`]). The wire format is specified for
//! implementers in other languages in `docs/protocol.md`.
//!
//! ## Map
//! - [`frame`]: the u32 size prefix; finding whole frames in a growing read buffer, with the size
//!   bound (`max_frame_bytes`) checked from the prefix alone.
//! - [`request`] / [`response`]: headers (API key, version, correlation id; top-level error),
//!   the [`Request`] and [`Response`] enums and their encode/decode entry points.
//! - [`messages`]: the body of every API, one struct per wire structure, fields in wire order.
//! - [`api`]: [`ApiKey`] and the [`SUPPORTED`] version table behind ApiVersions and the decoder's
//!   version check.
//! - [`error_code`]: [`ErrorCode`], the u16 codes responses carry.
//! - [`ids`]: newtypes that must not be mixed up ([`PartitionId`], [`ShardId`], [`Offset`],
//!   [`TopicId`]).
//! - [`error`]: [`FrameError`] and [`DecodeError`].
//! - `codec` (private): the primitive wire types, the bounds-checked reader and the
//!   `wire_struct!` macro that gives each message struct its encoder and decoder.
//!
//! ## Why it is shaped this way
//! - **Decoders are pure functions of complete bytes.** Only framing can say "not yet"
//!   (`Ok(None)`); inside a frame every length is known, so a short body is malformed, never
//!   incomplete, and decoding needs no state across reads.
//! - **Untrusted input cannot make the broker allocate.** A frame's size is bounded before it is
//!   buffered, and every count and length is checked against the bytes actually left before
//!   anything is allocated for it. Errors say exactly where the bytes went wrong
//!   (`Produce v1: topics[0].partitions: count 4000000000 exceeds the 12 bytes left ...`), which a
//!   broker sends back as the `INVALID_REQUEST` message.
//! - **The header decodes on its own** ([`decode_request_header`]), so a broker can answer an
//!   unknown API, an unsupported version or a malformed body to the right correlation id.
//! - **Record data is not copied.** Produce and Fetch carry Kafka RecordBatch v2 bytes as
//!   [`bytes::Bytes`] slices of the frame: a produced batch reaches the log, and a fetched one the
//!   socket, without passing through an intermediate buffer. The protocol does not look inside
//!   them; the log validates them.
//! - **One schema, written once.** A message struct's field list is its wire layout; encoder,
//!   decoder, minimum size and test generators all come from it, so they cannot disagree.
//! - **Encoding is canonical.** Every value has exactly one encoding and decoding is strict
//!   (bools are 0 or 1, −1 is the only null), so decode → encode gives back the input bytes; the
//!   fuzz target ([`fuzz_check_decode`]) checks exactly that.

pub mod api;
mod codec;
pub mod error;
pub mod error_code;
pub mod frame;
pub mod ids;
pub mod messages;
pub mod request;
pub mod response;

#[cfg(test)]
mod arb;

use bytes::Bytes;

pub use api::{ApiKey, SUPPORTED};
pub use codec::{MAX_NULLABLE_STRING_BYTES, MAX_STRING_BYTES};
pub use error::{DecodeError, FrameError};
pub use error_code::ErrorCode;
pub use frame::{decode_frame, interleave, Frame, SkeletonBuf, FRAME_PREFIX_BYTES, SPLICE_MIN_BYTES};
pub use ids::{Offset, PartitionId, ShardId, TopicId};
pub use request::{decode_request, decode_request_header, encode_request, Request, RequestHeader};
pub use response::{decode_response, decode_response_header, encode_response, Response, ResponseHeader, TopLevelError};

/// The frame size limit [`fuzz_check_decode`] decodes with.
const FUZZ_MAX_FRAME_BYTES: u32 = 1 << 20;

/// The checks of the `request_decode` fuzz target (kept here so unit and property tests run the
/// same code). Panics if any fails:
/// - [`decode_frame`] on `data` never panics, and a frame it finds lies within `data`;
/// - the frame's payload, and `data` itself taken as a payload (so that mutations reach the
///   message decoders without having to keep a size prefix right), go through
///   [`decode_request`] and, for every API and version, [`decode_response`]: whatever decodes is
///   re-encoded, the new frame must decode to one frame holding exactly the original payload bytes
///   (encoding is canonical), and decoding that must give the same value again;
/// - [`decode_request_header`] succeeds whenever [`decode_request`] does or fails for the API key
///   or version, and agrees with it.
pub fn fuzz_check_decode(data: &[u8]) {
    match decode_frame(data, FUZZ_MAX_FRAME_BYTES) {
        Ok(Some(frame)) => {
            assert_eq!(frame.payload.start, FRAME_PREFIX_BYTES);
            assert!(frame.payload.end == frame.consumed && frame.consumed <= data.len());
            check_payload(&data[frame.payload]);
        }
        Ok(None) => assert!(data.len() < FRAME_PREFIX_BYTES || frame_size(data) > data.len() - FRAME_PREFIX_BYTES),
        Err(FrameError::TooLarge { size, max }) => assert!(size > max && max == FUZZ_MAX_FRAME_BYTES),
    }
    check_payload(data);
}

fn frame_size(data: &[u8]) -> usize {
    u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize
}

fn check_payload(payload: &[u8]) {
    let payload = Bytes::copy_from_slice(payload);
    check_request(&payload);
    for &(api, min, max) in SUPPORTED {
        for version in min..=max {
            check_response(api, version, &payload);
        }
    }
}

/// The payload of the one frame in `encoded`, which must hold nothing else.
fn sole_payload(encoded: &[u8]) -> Bytes {
    let frame = decode_frame(encoded, u32::MAX).expect("no limit").expect("a whole frame");
    assert_eq!(frame.consumed, encoded.len(), "one frame, nothing after it");
    Bytes::copy_from_slice(&encoded[frame.payload])
}

fn check_request(payload: &Bytes) {
    let header = decode_request_header(payload);
    if let Ok((_, body_at)) = &header {
        assert!(*body_at <= payload.len());
    }
    let (h, request) = match decode_request(payload) {
        Ok(decoded) => decoded,
        Err(e) => {
            let _ = e.to_string();
            if !matches!(e, DecodeError::Invalid(_)) {
                assert!(header.is_ok(), "{e} but the header does not decode");
            }
            return;
        }
    };
    assert_eq!(header.expect("decode_request accepted the payload").0, h);
    let mut encoded = Vec::new();
    encode_request(&h, &request, &mut encoded);
    let again = sole_payload(&encoded);
    assert_eq!(again, payload, "re-encoding a decoded request gives other bytes");
    assert_eq!(decode_request(&again), Ok((h, request)));
}

fn check_response(api: ApiKey, version: u16, payload: &Bytes) {
    let (correlation_id, response) = match decode_response(api, version, payload) {
        Ok(decoded) => decoded,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let header = decode_response_header(payload).expect("decode_response accepted the payload").0;
    assert_eq!(header.correlation_id, correlation_id);
    let mut encoded = Vec::new();
    encode_response(correlation_id, version, &response, &mut encoded);
    let again = sole_payload(&encoded);
    assert_eq!(again, payload, "re-encoding a decoded {api} response gives other bytes");
    assert_eq!(decode_response(api, version, &again), Ok((correlation_id, response)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_check_accepts_edge_inputs() {
        for data in [&[][..], &[0], &[0, 0, 0, 0], &[0xff; 4], &[0, 0, 0, 1, 0], &[0; 64], &[0xff; 64]] {
            fuzz_check_decode(data);
        }
    }
}
