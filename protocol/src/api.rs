//! API keys and the version range the broker supports for each.
//!
//! Versioning rule: every API has a range `[min, max]`; a new version may only append fields to
//! the end of a request or response body (or of an array element), never remove or reorder them;
//! the broker answers in the request's version; a request in a version outside the range gets a
//! top-level `UNSUPPORTED_VERSION` error with no body. Clients send ApiVersions first to learn the
//! ranges. All APIs are at version 1 today.

use std::fmt;

use crate::error::DecodeError;

/// Which operation a request asks for. The discriminant is the key sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ApiKey {
    ApiVersions = 0,
    Metadata = 1,
    CreateTopic = 2,
    DeleteTopic = 3,
    Produce = 4,
    Fetch = 5,
    ListOffsets = 6,
    CommitOffsets = 7,
    FetchCommitted = 8,
    DescribeConfigs = 9,
    AlterConfigs = 10,
    ListGroups = 11,
    BrokerStatus = 12,
}

/// Every API with its `(min, max)` supported versions, indexed by key (entry `i` is key `i`,
/// checked at compile time). ApiVersions answers with this table and the request decoder checks
/// versions against it.
pub const SUPPORTED: &[(ApiKey, u16, u16)] = &[
    (ApiKey::ApiVersions, 1, 1),
    (ApiKey::Metadata, 1, 1),
    (ApiKey::CreateTopic, 1, 1),
    (ApiKey::DeleteTopic, 1, 1),
    (ApiKey::Produce, 1, 1),
    (ApiKey::Fetch, 1, 1),
    (ApiKey::ListOffsets, 1, 1),
    (ApiKey::CommitOffsets, 1, 1),
    (ApiKey::FetchCommitted, 1, 1),
    (ApiKey::DescribeConfigs, 1, 1),
    (ApiKey::AlterConfigs, 1, 1),
    (ApiKey::ListGroups, 1, 1),
    (ApiKey::BrokerStatus, 1, 1),
];

const _: () = {
    let mut i = 0;
    while i < SUPPORTED.len() {
        let (key, min, max) = SUPPORTED[i];
        assert!(key as usize == i, "SUPPORTED must be indexed by api key");
        assert!(0 < min && min <= max, "versions start at 1 and min <= max");
        i += 1;
    }
    assert!(SUPPORTED.len() == ApiKey::BrokerStatus as usize + 1, "every api key is in SUPPORTED");
};

impl ApiKey {
    /// The API with wire key `key`, if there is one.
    pub fn from_u16(key: u16) -> Option<ApiKey> {
        SUPPORTED.get(usize::from(key)).map(|&(api, _, _)| api)
    }

    /// The key sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The API's name as written in the protocol document (`ListOffsets`).
    pub fn name(self) -> &'static str {
        match self {
            ApiKey::ApiVersions => "ApiVersions",
            ApiKey::Metadata => "Metadata",
            ApiKey::CreateTopic => "CreateTopic",
            ApiKey::DeleteTopic => "DeleteTopic",
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::CommitOffsets => "CommitOffsets",
            ApiKey::FetchCommitted => "FetchCommitted",
            ApiKey::DescribeConfigs => "DescribeConfigs",
            ApiKey::AlterConfigs => "AlterConfigs",
            ApiKey::ListGroups => "ListGroups",
            ApiKey::BrokerStatus => "BrokerStatus",
        }
    }

    /// The `(min, max)` versions this crate encodes and decodes.
    pub fn versions(self) -> (u16, u16) {
        let (_, min, max) = SUPPORTED[self as usize];
        (min, max)
    }

    /// `Ok` if `version` is in [`ApiKey::versions`], else [`DecodeError::UnsupportedVersion`].
    pub fn check_version(self, version: u16) -> Result<(), DecodeError> {
        let (min, max) = self.versions();
        if (min..=max).contains(&version) {
            Ok(())
        } else {
            Err(DecodeError::UnsupportedVersion { api_key: self, version, min, max })
        }
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for &(key, _, _) in SUPPORTED {
            assert_eq!(ApiKey::from_u16(key.code()), Some(key));
            assert_eq!(key.versions(), (1, 1));
        }
        assert_eq!(ApiKey::from_u16(13), None);
        assert_eq!(ApiKey::from_u16(u16::MAX), None);
        assert_eq!(ApiKey::ListOffsets.to_string(), "ListOffsets");
    }

    #[test]
    fn version_check() {
        assert_eq!(ApiKey::Fetch.check_version(1), Ok(()));
        assert_eq!(
            ApiKey::Fetch.check_version(2),
            Err(DecodeError::UnsupportedVersion { api_key: ApiKey::Fetch, version: 2, min: 1, max: 1 })
        );
        assert!(ApiKey::Fetch.check_version(0).is_err());
    }
}
