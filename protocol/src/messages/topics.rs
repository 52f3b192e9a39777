//! Topic administration: CreateTopic, DeleteTopic, DescribeConfigs, AlterConfigs.
//!
//! Config keys and values are strings named after Kafka's topic configs (`retention.ms`,
//! `cleanup.policy`, ...); the broker validates them and answers `INVALID_CONFIG` for an unknown
//! key or a bad value.

use crate::codec::wire_struct;
use crate::error_code::ErrorCode;

wire_struct! {
    /// A topic config setting.
    pub struct ConfigEntry {
        pub key: String,
        pub value: String,
    }
}

wire_struct! {
    /// CreateTopic (key 2) request.
    pub struct CreateTopicRequest {
        /// 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..` (else `INVALID_TOPIC_NAME`).
        pub name: String,
        /// Number of partitions, at least 1 (else `INVALID_PARTITIONS`).
        pub partitions: u32,
        /// Settings that differ from the broker's defaults; a key may appear once.
        pub configs: Vec<ConfigEntry>,
    }
}

wire_struct! {
    /// CreateTopic response.
    pub struct CreateTopicResponse {
        pub error_code: ErrorCode,
        /// Details for humans when `error_code` is not `NONE`; null otherwise.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// DeleteTopic (key 3) request.
    pub struct DeleteTopicRequest {
        pub name: String,
    }
}

wire_struct! {
    /// DeleteTopic response.
    pub struct DeleteTopicResponse {
        pub error_code: ErrorCode,
        /// Details for humans when `error_code` is not `NONE`; null otherwise.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// DescribeConfigs (key 9) request.
    pub struct DescribeConfigsRequest {
        /// Topics whose configs to return.
        pub topics: Vec<String>,
    }
}

wire_struct! {
    /// DescribeConfigs response.
    pub struct DescribeConfigsResponse {
        /// One entry per requested topic, in request order.
        pub topics: Vec<DescribeConfigsTopic>,
    }
}

wire_struct! {
    /// One topic's configs in a DescribeConfigs response.
    pub struct DescribeConfigsTopic {
        pub name: String,
        /// `UNKNOWN_TOPIC_OR_PARTITION` if the topic does not exist (`configs` is then empty).
        pub error_code: ErrorCode,
        /// Every config key the broker knows, with its effective value.
        pub configs: Vec<DescribedConfig>,
    }
}

wire_struct! {
    /// One config of a topic, as DescribeConfigs reports it.
    pub struct DescribedConfig {
        pub key: String,
        /// The effective value.
        pub value: String,
        /// True if the topic does not override the broker's default.
        pub is_default: bool,
    }
}

wire_struct! {
    /// AlterConfigs (key 10) request: applied atomically (all of it or, on error, nothing).
    pub struct AlterConfigsRequest {
        pub topic: String,
        /// Settings to add or change.
        pub set: Vec<ConfigEntry>,
        /// Keys to reset to the broker's default. A key may not be both set and removed.
        pub remove: Vec<String>,
    }
}

wire_struct! {
    /// AlterConfigs response.
    pub struct AlterConfigsResponse {
        pub error_code: ErrorCode,
        /// Details for humans when `error_code` is not `NONE`; null otherwise.
        pub error_message: Option<String>,
    }
}
