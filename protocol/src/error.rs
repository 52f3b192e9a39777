//! Why bytes could not be decoded: [`FrameError`] for the size prefix, [`DecodeError`] for what
//! is inside a frame.
//!
//! There is no "incomplete" decode error: only framing waits for more bytes
//! ([`decode_frame`](crate::decode_frame) returns `Ok(None)`). Once a frame is complete, a body
//! that ends early is malformed, not incomplete.

use std::fmt;

use crate::api::ApiKey;
use crate::error_code::ErrorCode;

/// A frame's size prefix is unacceptable. The connection cannot continue: the reader would have
/// to buffer the whole frame to skip it, so the broker closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The prefix announces `size` payload bytes, more than the `max` the reader accepts.
    TooLarge { size: u32, max: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the limit of {max} bytes (max_frame_bytes)")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A complete payload is not a valid request or response. The broker answers a request with
/// [`DecodeError::error_code`] and the correlation id from
/// [`decode_request_header`](crate::decode_request_header) (if the header itself was readable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are malformed. The reason names the API and version, the field path and the
    /// problem: `Produce v1: topics[0].partitions: count 4000000000 exceeds the 12 bytes left
    /// (each element takes at least 8)`.
    Invalid(String),
    /// The API key is not one this crate knows.
    UnknownApi(u16),
    /// The API is known but not in this version.
    UnsupportedVersion { api_key: ApiKey, version: u16, min: u16, max: u16 },
}

impl DecodeError {
    /// The top-level error code a broker answers this error with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::Invalid(_) => ErrorCode::InvalidRequest,
            DecodeError::UnknownApi(_) => ErrorCode::UnknownApi,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Invalid(reason) => write!(f, "malformed message: {reason}"),
            DecodeError::UnknownApi(key) => write!(f, "unknown api key {key}"),
            DecodeError::UnsupportedVersion { api_key, version, min, max } => {
                write!(f, "{api_key} v{version} is not supported (supported: v{min} to v{max})")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_codes() {
        let e = DecodeError::UnsupportedVersion { api_key: ApiKey::Fetch, version: 7, min: 1, max: 1 };
        assert_eq!(e.to_string(), "Fetch v7 is not supported (supported: v1 to v1)");
        assert_eq!(e.error_code(), ErrorCode::UnsupportedVersion);
        assert_eq!(DecodeError::UnknownApi(99).to_string(), "unknown api key 99");
        assert_eq!(DecodeError::UnknownApi(99).error_code(), ErrorCode::UnknownApi);
        assert_eq!(DecodeError::Invalid("x".into()).error_code(), ErrorCode::InvalidRequest);
        assert_eq!(DecodeError::Invalid("x".into()).to_string(), "malformed message: x");
        let f = FrameError::TooLarge { size: 10, max: 5 };
        assert_eq!(f.to_string(), "frame of 10 bytes exceeds the limit of 5 bytes (max_frame_bytes)");
    }
}
