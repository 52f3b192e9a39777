//! `ShardId`: which shard, as a number that cannot be mixed up with a CPU id or a peer index.

use std::fmt;

/// Identifies one shard of a runtime: shards are numbered `0..count`, in the order of
/// [`RuntimeConfig::pin`](crate::RuntimeConfig::pin)'s cores. It is *not* a CPU id (shard 0 may run
/// on CPU 3) and not glommio's executor id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The position of this shard in `0..count`, for indexing per-shard tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Every shard of a runtime with `count` shards, in order.
    ///
    /// Panics if `count` exceeds the id space (a configuration that `RuntimeConfig::validate` rejects).
    pub fn all(count: usize) -> impl Iterator<Item = ShardId> + Clone {
        assert!(count <= usize::from(u16::MAX) + 1, "{count} shards do not fit a ShardId");
        (0..count).map(|index| ShardId(index as u16))
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_enumerates() {
        assert_eq!(ShardId(3).to_string(), "shard 3");
        assert_eq!(ShardId::all(3).collect::<Vec<_>>(), vec![ShardId(0), ShardId(1), ShardId(2)]);
        assert_eq!(ShardId(7).index(), 7);
    }
}
