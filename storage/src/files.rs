//! Small whole files next to the segments: checkpoints (log start, truncation intent, clean
//! shutdown) and index files. Each is written whole, synced, and (checkpoints) renamed into
//! place, so a crash leaves either the old or the new version.

use std::rc::Rc;

use crate::{
    error::{Result, StorageError},
    io::{align_up, Dir, File, IoBuf, ALIGN},
};

const CHECKPOINT_MAGIC: u32 = 0x4b43_4b31; // "KCK1"

/// Reads a small file whole; `None` if it does not exist.
pub(crate) async fn read_small<D: Dir>(dir: &D, name: &str) -> Result<Option<Vec<u8>>> {
    match dir.open(name, false).await {
        Ok(file) => {
            let len = file.len().await.map_err(|e| StorageError::io("sizing", dir.describe(name), e))?;
            let bytes =
                file.read_at(0, len as usize).await.map_err(|e| StorageError::io("reading", dir.describe(name), e))?;
            file.close().await.map_err(|e| StorageError::io("closing", dir.describe(name), e))?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("opening", dir.describe(name), e)),
    }
}

/// Replaces the content of `name` with `bytes` and syncs it. Not atomic: callers rename a
/// temporary into place, or (index files) detect a torn file by its checksum.
pub(crate) async fn write_whole<D: Dir>(dir: &D, name: &str, bytes: &[u8]) -> Result<()> {
    let what = || dir.describe(name);
    let file = dir.open(name, true).await.map_err(|e| StorageError::io("creating", what(), e))?;
    let padded = align_up(bytes.len() as u64).max(ALIGN as u64) as usize;
    let mut buf = file.alloc_buf(padded);
    buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    buf.as_mut_slice()[bytes.len()..].fill(0);
    let done: std::io::Result<()> = async {
        file.set_len(0).await?;
        file.write_at(Rc::new(buf), 0).await?;
        file.set_len(bytes.len() as u64).await?;
        file.sync_data().await?;
        file.close().await
    }
    .await;
    done.map_err(|e| StorageError::io("writing", what(), e))
}

/// Removes `name`; a missing file is fine. Returns whether it existed.
pub(crate) async fn remove_if_exists<D: Dir>(dir: &D, name: &str) -> Result<bool> {
    match dir.remove(name).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io("removing", dir.describe(name), e)),
    }
}

pub(crate) async fn sync_dir<D: Dir>(dir: &D) -> Result<()> {
    dir.sync().await.map_err(|e| StorageError::io("syncing directory", dir.describe(""), e))
}

/// Atomically replaces checkpoint `name` with `value`: temporary file, sync, rename, sync dir.
pub(crate) async fn write_checkpoint<D: Dir>(dir: &D, name: &str, value: u64) -> Result<()> {
    let tmp = format!("{name}.tmp");
    write_whole(dir, &tmp, &encode_checkpoint(value)).await?;
    dir.rename(&tmp, name).await.map_err(|e| StorageError::io("renaming", dir.describe(&tmp), e))?;
    sync_dir(dir).await
}

/// The value of checkpoint `name`: `None` if absent, an error if damaged.
pub(crate) async fn read_checkpoint<D: Dir>(dir: &D, name: &str) -> Result<Option<u64>> {
    match read_small(dir, name).await? {
        None => Ok(None),
        Some(bytes) => decode_checkpoint(&bytes)
            .map(Some)
            .ok_or_else(|| StorageError::BadLayout(format!("checkpoint {} is damaged", dir.describe(name)))),
    }
}

pub(crate) fn encode_checkpoint(value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&CHECKPOINT_MAGIC.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 16 || bytes[0..4] != CHECKPOINT_MAGIC.to_be_bytes() {
        return None;
    }
    let crc = u32::from_be_bytes(bytes[12..16].try_into().ok()?);
    (crc32c::crc32c(&bytes[..12]) == crc).then(|| u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkpoint_roundtrip_and_damage() {
        let bytes = super::encode_checkpoint(12345);
        assert_eq!(super::decode_checkpoint(&bytes), Some(12345));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(super::decode_checkpoint(&bad), None, "flip at {i}");
        }
        assert_eq!(super::decode_checkpoint(&bytes[..10]), None);
    }
}
