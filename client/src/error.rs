//! [`ClientError`]: every way a client call can fail, as variants a caller can act on.

use std::fmt;

use keel_protocol::{ApiKey, ErrorCode};

/// Why a client call failed.
///
/// What a caller usually does: [`ClientError::Io`] and [`ClientError::Timeout`] mean the
/// connection was dropped (the next call reconnects; a request in flight may or may not have been
/// executed); [`ClientError::Broker`] carries the broker's code, whose
/// [`is_retriable`](ErrorCode::is_retriable) says whether trying again can help;
/// [`ClientError::OffsetOutOfRange`] asks a consumer to reset its position
/// ([`Consumer::seek`](crate::Consumer::seek)); the others are permanent for the same input.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting, writing or reading failed (including the broker closing the connection).
    Io(std::io::Error),
    /// The broker did not answer within the configured time (connect timeout, or the request
    /// timeout plus the time the request itself allows the broker to wait).
    Timeout,
    /// The broker refused the request or part of it: a top-level error (the request was not
    /// executed) or a per-topic / per-partition error code. `message` is the broker's message for
    /// a top-level error; for a per-partition error it names the partition, then gives the
    /// broker's message if it sent one.
    Broker { code: ErrorCode, message: Option<String> },
    /// A Fetch's offset is outside the partition's `[log_start_offset, high_watermark]`
    /// (e.g. retention deleted it): reset the position (to `log_start_offset`, the high
    /// watermark, or via [`Consumer::seek`](crate::Consumer::seek)) and poll again.
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        /// The offset that was asked for.
        offset: u64,
        /// First offset that can be fetched (looked up right after the failed Fetch).
        log_start_offset: u64,
        /// One past the last committed record (looked up right after the failed Fetch).
        high_watermark: u64,
    },
    /// The response could not be decoded or does not answer the request (wrong correlation id,
    /// missing partitions, an invalid record batch). The connection is dropped.
    Protocol(String),
    /// The broker does not support any version of this API that this client speaks; decided
    /// locally from the broker's ApiVersions answer, nothing was sent.
    Unsupported { api: ApiKey },
    /// The topic does not exist (or a partition number is beyond its partition count).
    UnknownTopic(String),
    /// The call's arguments are invalid; nothing was sent.
    InvalidArgument(String),
}

impl ClientError {
    /// Whether the same call, made again after a backoff, may succeed: connection failures,
    /// timeouts and retriable broker codes. A retried produce may append its records twice.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::Timeout => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::OffsetOutOfRange { .. }
            | ClientError::Protocol(_)
            | ClientError::Unsupported { .. }
            | ClientError::UnknownTopic(_)
            | ClientError::InvalidArgument(_) => false,
        }
    }

    /// The error for a per-topic or per-partition `code` (not `NONE`) about `topic`; `what`
    /// says which part of the request it concerns ("partition 3").
    pub(crate) fn from_code(code: ErrorCode, topic: &str, what: &str, message: Option<String>) -> ClientError {
        assert_ne!(code, ErrorCode::None, "from_code needs an error code");
        if code == ErrorCode::UnknownTopicOrPartition {
            return ClientError::UnknownTopic(topic.to_owned());
        }
        let context = format!("topic {topic}{}{what}", if what.is_empty() { "" } else { " " });
        let message = match message {
            Some(m) => format!("{context}: {m}"),
            None => context,
        };
        ClientError::Broker { code, message: Some(message) }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "connection error: {e}"),
            ClientError::Timeout => f.write_str("timed out waiting for the broker"),
            ClientError::Broker { code, message: Some(m) } => write!(f, "broker error {code}: {m}"),
            ClientError::Broker { code, message: None } => write!(f, "broker error {code}: {}", code.description()),
            ClientError::OffsetOutOfRange { topic, partition, offset, log_start_offset, high_watermark } => write!(
                f,
                "offset {offset} is out of range for topic {topic} partition {partition} \
                 (log start {log_start_offset}, high watermark {high_watermark})"
            ),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Unsupported { api } => {
                write!(f, "the broker does not support {api} in a version this client speaks")
            }
            ClientError::UnknownTopic(t) => write!(f, "unknown topic or partition: {t}"),
            ClientError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ClientError {
    /// Read and write timeouts (`WouldBlock` / `TimedOut`) become [`ClientError::Timeout`].
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout,
            _ => ClientError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_variants() {
        assert!(matches!(
            ClientError::from_code(ErrorCode::UnknownTopicOrPartition, "t", "partition 3", None),
            ClientError::UnknownTopic(t) if t == "t"
        ));
        let e = ClientError::from_code(ErrorCode::CorruptMessage, "t", "partition 3", Some("bad crc".into()));
        assert_eq!(e.to_string(), "broker error CORRUPT_MESSAGE (2): topic t partition 3: bad crc");
        assert!(!e.is_retriable());
        let e = ClientError::from_code(ErrorCode::InvalidConfig, "t", "", None);
        assert_eq!(e.to_string(), "broker error INVALID_CONFIG (8): topic t");
        assert!(ClientError::Broker { code: ErrorCode::NotEnoughMemory, message: None }.is_retriable());
        let timeout = std::io::Error::new(std::io::ErrorKind::WouldBlock, "x");
        assert!(matches!(ClientError::from(timeout), ClientError::Timeout));
    }
}
