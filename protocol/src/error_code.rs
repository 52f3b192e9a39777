//! Error codes: the u16 a response carries, at the top level or per topic/partition.
//!
//! Codes are stable: a code's number and meaning never change, and new codes are only appended.
//! A decoder keeps a code it does not know as [`ErrorCode::Unknown`] rather than failing, so an
//! older client can talk to a newer broker; it should treat such a code like
//! [`ErrorCode::UnknownServerError`] (as Kafka's clients do).

use std::fmt;

use crate::codec::{Malformed, Reader, Wire};

/// Why an operation failed, or [`ErrorCode::None`] when it did not. `docs/protocol.md` lists when
/// each occurs and the Kafka error it corresponds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: success.
    None,
    /// 1: an unexpected failure in the broker (a bug); the message says what.
    UnknownServerError,
    /// 2: a record batch failed validation (bad CRC, length, magic, ...).
    CorruptMessage,
    /// 3: the topic or partition does not exist.
    UnknownTopicOrPartition,
    /// 4: the requested offset is outside the partition's `[log_start_offset, high_watermark]`.
    OffsetOutOfRange,
    /// 5: a batch or request is larger than the broker accepts.
    MessageTooLarge,
    /// 6: CreateTopic for a name that exists.
    TopicAlreadyExists,
    /// 7: a partition count of 0 or above the broker's limit.
    InvalidPartitions,
    /// 8: an unknown config key or an invalid value.
    InvalidConfig,
    /// 9: the API version is outside the broker's supported range.
    UnsupportedVersion,
    /// 10: the broker does not know the API key.
    UnknownApi,
    /// 11: the request could not be decoded (malformed).
    InvalidRequest,
    /// 12: the request's timeout expired before it completed.
    RequestTimedOut,
    /// 13: a disk error; the partition refuses writes until the broker restarts.
    StorageError,
    /// 14: the broker is shutting down and accepts no new work.
    BrokerShuttingDown,
    /// 15: the topic name is empty, too long or has characters outside `[a-zA-Z0-9._-]`.
    InvalidTopicName,
    /// 16: the consumer group id is empty or too long.
    InvalidGroupId,
    /// 17: a memory or queue bound was reached and the request could not be queued.
    NotEnoughMemory,
    /// 18: the operation is not allowed (e.g. deleting an internal topic).
    PolicyViolation,
    /// 19: a commit or group operation names a member the group does not have (e.g. a commit
    /// without a member id while the group has members that manage its partitions).
    UnknownMemberId,
    /// 20: a commit names a generation of the group that is not the current one.
    IllegalGeneration,
    /// 21: the group is rebalancing; commit again after rejoining.
    RebalanceInProgress,
    /// 22: an idempotent producer's batch whose sequence number does not follow the last one
    /// the partition has from that producer (a batch was lost in between).
    OutOfOrderSequenceNumber,
    /// 23: an idempotent producer's batch with an epoch older than the partition has seen from
    /// that producer id: a newer instance of the producer took over.
    InvalidProducerEpoch,
    /// A code this version of the crate does not know (from a newer broker). Never holds a code
    /// listed above: [`ErrorCode::from_u16`] maps those to their variants.
    Unknown(u16),
}

impl ErrorCode {
    /// Every known code, in numeric order (the variant at index `i` has code `i`).
    pub const KNOWN: [ErrorCode; 24] = [
        ErrorCode::None,
        ErrorCode::UnknownServerError,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::MessageTooLarge,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidConfig,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownApi,
        ErrorCode::InvalidRequest,
        ErrorCode::RequestTimedOut,
        ErrorCode::StorageError,
        ErrorCode::BrokerShuttingDown,
        ErrorCode::InvalidTopicName,
        ErrorCode::InvalidGroupId,
        ErrorCode::NotEnoughMemory,
        ErrorCode::PolicyViolation,
        ErrorCode::UnknownMemberId,
        ErrorCode::IllegalGeneration,
        ErrorCode::RebalanceInProgress,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
    ];

    /// The code for `code`: a known variant, or [`ErrorCode::Unknown`].
    pub fn from_u16(code: u16) -> ErrorCode {
        ErrorCode::KNOWN.get(usize::from(code)).copied().unwrap_or(ErrorCode::Unknown(code))
    }

    /// The number sent on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::UnknownServerError => 1,
            ErrorCode::CorruptMessage => 2,
            ErrorCode::UnknownTopicOrPartition => 3,
            ErrorCode::OffsetOutOfRange => 4,
            ErrorCode::MessageTooLarge => 5,
            ErrorCode::TopicAlreadyExists => 6,
            ErrorCode::InvalidPartitions => 7,
            ErrorCode::InvalidConfig => 8,
            ErrorCode::UnsupportedVersion => 9,
            ErrorCode::UnknownApi => 10,
            ErrorCode::InvalidRequest => 11,
            ErrorCode::RequestTimedOut => 12,
            ErrorCode::StorageError => 13,
            ErrorCode::BrokerShuttingDown => 14,
            ErrorCode::InvalidTopicName => 15,
            ErrorCode::InvalidGroupId => 16,
            ErrorCode::NotEnoughMemory => 17,
            ErrorCode::PolicyViolation => 18,
            ErrorCode::UnknownMemberId => 19,
            ErrorCode::IllegalGeneration => 20,
            ErrorCode::RebalanceInProgress => 21,
            ErrorCode::OutOfOrderSequenceNumber => 22,
            ErrorCode::InvalidProducerEpoch => 23,
            ErrorCode::Unknown(code) => code,
        }
    }

    /// The code's name as written in the protocol document (`UNKNOWN_TOPIC_OR_PARTITION`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::UnknownServerError => "UNKNOWN_SERVER_ERROR",
            ErrorCode::CorruptMessage => "CORRUPT_MESSAGE",
            ErrorCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::UnknownApi => "UNKNOWN_API",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::RequestTimedOut => "REQUEST_TIMED_OUT",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::BrokerShuttingDown => "BROKER_SHUTTING_DOWN",
            ErrorCode::InvalidTopicName => "INVALID_TOPIC_NAME",
            ErrorCode::InvalidGroupId => "INVALID_GROUP_ID",
            ErrorCode::NotEnoughMemory => "NOT_ENOUGH_MEMORY",
            ErrorCode::PolicyViolation => "POLICY_VIOLATION",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::IllegalGeneration => "ILLEGAL_GENERATION",
            ErrorCode::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            ErrorCode::OutOfOrderSequenceNumber => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            ErrorCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            ErrorCode::Unknown(_) => "UNKNOWN",
        }
    }

    /// One line saying what the code means.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::None => "no error",
            ErrorCode::UnknownServerError => "unexpected error in the broker",
            ErrorCode::CorruptMessage => "a record batch is invalid (bad CRC, length or format)",
            ErrorCode::UnknownTopicOrPartition => "the topic or partition does not exist",
            ErrorCode::OffsetOutOfRange => "the offset is outside the partition's log",
            ErrorCode::MessageTooLarge => "the batch or request is larger than the broker accepts",
            ErrorCode::TopicAlreadyExists => "a topic with this name already exists",
            ErrorCode::InvalidPartitions => "the partition count is invalid",
            ErrorCode::InvalidConfig => "a config key is unknown or its value is invalid",
            ErrorCode::UnsupportedVersion => "the broker does not support this API version",
            ErrorCode::UnknownApi => "the broker does not know this API key",
            ErrorCode::InvalidRequest => "the request is malformed",
            ErrorCode::RequestTimedOut => "the request timed out",
            ErrorCode::StorageError => "a disk error; the partition refuses writes",
            ErrorCode::BrokerShuttingDown => "the broker is shutting down",
            ErrorCode::InvalidTopicName => "the topic name is invalid",
            ErrorCode::InvalidGroupId => "the group id is invalid",
            ErrorCode::NotEnoughMemory => "a memory or queue bound was reached; the request was not queued",
            ErrorCode::PolicyViolation => "the operation is not allowed by the broker's policy",
            ErrorCode::UnknownMemberId => "the group does not have this member",
            ErrorCode::IllegalGeneration => "not the group's current generation",
            ErrorCode::RebalanceInProgress => "the group is rebalancing",
            ErrorCode::OutOfOrderSequenceNumber => "the producer's sequence number is not the next one",
            ErrorCode::InvalidProducerEpoch => "the producer's epoch is older than the partition's (fenced)",
            ErrorCode::Unknown(_) => "an error code this client does not know",
        }
    }

    /// Whether sending the same request again (after a backoff) may succeed.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::UnknownTopicOrPartition
                | ErrorCode::RequestTimedOut
                | ErrorCode::BrokerShuttingDown
                | ErrorCode::NotEnoughMemory
        )
    }
}

impl fmt::Display for ErrorCode {
    /// `UNKNOWN_TOPIC_OR_PARTITION (3)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl Wire for ErrorCode {
    const MIN_LEN: usize = 2;

    fn encode(&self, out: &mut Vec<u8>) {
        self.code().encode(out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        u16::decode(r).map(ErrorCode::from_u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_numbered_by_position() {
        for (i, code) in ErrorCode::KNOWN.iter().enumerate() {
            assert_eq!(usize::from(code.code()), i);
            assert_eq!(ErrorCode::from_u16(code.code()), *code);
            assert_ne!(code.name(), "UNKNOWN");
        }
        let next = ErrorCode::KNOWN.len() as u16;
        assert_eq!(ErrorCode::from_u16(next), ErrorCode::Unknown(next));
        assert_eq!(ErrorCode::Unknown(700).code(), 700);
        assert_eq!(ErrorCode::UnknownTopicOrPartition.to_string(), "UNKNOWN_TOPIC_OR_PARTITION (3)");
        assert!(ErrorCode::BrokerShuttingDown.is_retriable());
        assert!(!ErrorCode::CorruptMessage.is_retriable());
    }

    #[test]
    fn names_and_descriptions_are_distinct() {
        let mut names: Vec<_> = ErrorCode::KNOWN.iter().map(|c| c.name()).collect();
        let mut descriptions: Vec<_> = ErrorCode::KNOWN.iter().map(|c| c.description()).collect();
        names.sort_unstable();
        names.dedup();
        descriptions.sort_unstable();
        descriptions.dedup();
        assert_eq!(names.len(), ErrorCode::KNOWN.len());
        assert_eq!(descriptions.len(), ErrorCode::KNOWN.len());
    }
}
