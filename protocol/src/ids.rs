//! Identifiers and positions that must not be mixed up: a partition number, a shard (core) number,
//! an offset in a partition's log, a topic's unique id.

use std::fmt;

use crate::codec::{Malformed, Reader, Wire};

/// A partition's number within its topic, from 0 to the topic's partition count − 1. Wire: u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub u32);

/// A shard: one core's executor, which owns a set of partitions. Wire: u32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u32);

/// A record's position in a partition's log: the first record ever appended has offset 0 and
/// offsets only grow. Wire: u64 where an offset is always present; i64 with −1 for "none" where
/// it may be absent (`Option<Offset>`), so an offset in such a field is at most `i64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Offset(pub u64);

/// A topic's unique id, assigned at creation and never reused (unlike its name, which a topic
/// created after a deletion can take again). Wire: 16 raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; 16]);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for TopicId {
    /// 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

macro_rules! wire_newtype {
    ($($name:ident($inner:ty)),*) => {$(
        impl Wire for $name {
            const MIN_LEN: usize = <$inner as Wire>::MIN_LEN;

            fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out);
            }

            fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
                <$inner>::decode(r).map($name)
            }
        }
    )*};
}

wire_newtype!(PartitionId(u32), ShardId(u32), TopicId([u8; 16]));

/// Largest offset: offsets are Kafka's, an i64 that is never negative.
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// A u64 on the wire, at most [`MAX_OFFSET`]: larger values are invalid, so every offset also
/// fits the i64 of an optional offset (and of Kafka's protocol).
impl Wire for Offset {
    const MIN_LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match u64::decode(r)? {
            o if o <= MAX_OFFSET => Ok(Offset(o)),
            o => Err(Malformed::new(format!("offset {o} is above the largest offset, 2^63 - 1"))),
        }
    }
}

/// An offset that may be absent: i64, −1 = none; other negative values are invalid.
impl Wire for Option<Offset> {
    const MIN_LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        let raw = match self {
            None => -1,
            Some(Offset(o)) => {
                i64::try_from(*o).unwrap_or_else(|_| panic!("offset {o} does not fit the i64 of an optional offset"))
            }
        };
        raw.encode(out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match i64::decode(r)? {
            -1 => Ok(None),
            raw => match u64::try_from(raw) {
                Ok(o) => Ok(Some(Offset(o))),
                Err(_) => Err(Malformed::new(format!("offset {raw} is negative (only -1, none, is allowed)"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn optional_offsets() {
        let decode = |raw: i64| {
            let payload = Bytes::copy_from_slice(&raw.to_be_bytes());
            Reader::shared(&payload, 0).field::<Option<Offset>>("offset").map_err(|e| e.to_string())
        };
        assert_eq!(decode(-1), Ok(None));
        assert_eq!(decode(0), Ok(Some(Offset(0))));
        assert_eq!(decode(i64::MAX), Ok(Some(Offset(i64::MAX as u64))));
        assert_eq!(decode(-2), Err("offset: offset -2 is negative (only -1, none, is allowed)".into()));
        let mut out = Vec::new();
        None::<Offset>.encode(&mut out);
        Some(Offset(7)).encode(&mut out);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn offsets_above_i64_max_are_invalid() {
        let decode = |raw: u64| {
            let payload = Bytes::copy_from_slice(&raw.to_be_bytes());
            Reader::shared(&payload, 0).field::<Offset>("offset").map_err(|e| e.to_string())
        };
        assert_eq!(decode(0), Ok(Offset(0)));
        assert_eq!(decode(MAX_OFFSET), Ok(Offset(MAX_OFFSET)));
        assert_eq!(
            decode(MAX_OFFSET + 1),
            Err("offset: offset 9223372036854775808 is above the largest offset, 2^63 - 1".into())
        );
        assert!(decode(u64::MAX).is_err());
    }

    #[test]
    #[should_panic(expected = "does not fit the i64")]
    fn encoding_an_optional_offset_above_i64_max_panics() {
        Some(Offset(u64::MAX)).encode(&mut Vec::new());
    }

    #[test]
    fn display() {
        assert_eq!(TopicId([0xab; 16]).to_string(), "ab".repeat(16));
        assert_eq!(format!("{} {} {}", PartitionId(3), ShardId(1), Offset(9)), "3 1 9");
    }
}
