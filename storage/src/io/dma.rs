//! The production disk: glommio's O_DIRECT `DmaFile`s on io_uring. A thin layer: every decision
//! lives in the generic log code; this file only moves bytes.

use std::{
    io,
    path::{Path, PathBuf},
    rc::Rc,
};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{join_all, Dir, File, IoBuf, ALIGN};

/// Largest single DMA request. Reads and writes above the device's `max_sectors_kb` can hang on
/// some kernels (glommio issues #633/#635), so we split at a size every device accepts.
const MAX_IO_BYTES: usize = 1 << 20;

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        // Keep the OS error (ENOSPC, EIO) intact so callers can classify it.
        glommio::GlommioError::EnhancedIoError { source, .. } | glommio::GlommioError::IoError(source) => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Makes glommio's one-time "does this device support polled I/O?" probe see real data.
///
/// glommio 0.9 probes by reading block 0 of the first file it opens on a device, once per
/// device per thread (its device table is thread-local). If that file is empty (a new log's
/// first segment) the read succeeds with 0 bytes, glommio concludes the device is pollable, and
/// every later DMA read on that device from that thread fails with EOPNOTSUPP on devices without
/// poll queues (virtio here). Opening a non-empty file first gives the probe a real answer. Done
/// once per device per thread, so every shard's executor primes its own table.
pub async fn prime_poll_probe(dir: &Path) -> io::Result<()> {
    use std::{cell::RefCell, collections::HashSet, os::unix::fs::MetadataExt};
    thread_local!(static PROBED: RefCell<HashSet<u64>> = RefCell::new(HashSet::new()));
    let dev = std::fs::metadata(dir)?.dev();
    if PROBED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    // Unique per call: shards on other threads may be priming the same directory right now.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".keel-poll-probe-{}-{n}", std::process::id()));
    std::fs::write(&probe, vec![0u8; ALIGN])?;
    let opened = DmaFile::open(&probe).await.map_err(to_io);
    let _ = std::fs::remove_file(&probe);
    opened?.close().await.map_err(to_io)?;
    PROBED.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// A log directory on a real file system.
pub struct DmaDir {
    path: PathBuf,
}

impl DmaDir {
    /// Opens `path`, creating it (and its parents) if missing.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        std::fs::create_dir_all(path.as_ref())?;
        // Absolute: glommio's directory handle fails to fsync a relative path (EBADF).
        let path = std::fs::canonicalize(path.as_ref())?;
        prime_poll_probe(&path).await?;
        Ok(DmaDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Dir for DmaDir {
    type File = DmaSegmentFile;

    async fn open(&self, name: &str, create: bool) -> io::Result<DmaSegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(self.path.join(name))
            .await
            .map_err(to_io)?;
        Ok(DmaSegmentFile { file })
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        glommio::io::remove(self.path.join(name)).await.map_err(to_io)
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        glommio::io::rename(self.path.join(from), self.path.join(to)).await.map_err(to_io)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    async fn sync(&self) -> io::Result<()> {
        let dir = glommio::io::Directory::open(&self.path).await.map_err(to_io)?;
        let synced = dir.sync().await.map_err(to_io);
        let _ = dir.close().await;
        synced
    }

    fn describe(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

/// One O_DIRECT file.
pub struct DmaSegmentFile {
    file: DmaFile,
}

impl IoBuf for DmaBuffer {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
}

impl File for DmaSegmentFile {
    type Buf = DmaBuffer;

    fn alloc_buf(&self, len: usize) -> DmaBuffer {
        assert!(len.is_multiple_of(ALIGN), "DMA buffer length {len} not aligned");
        self.file.alloc_dma_buffer(len)
    }

    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        assert!(pos.is_multiple_of(ALIGN as u64), "DMA write position {pos} not aligned");
        let len = buf.as_slice().len();
        if len <= MAX_IO_BYTES {
            // Fast path: no copy, the shared buffer goes to the kernel as it is.
            let written = self.file.write_rc_at(buf, pos).await.map_err(to_io)?;
            return check_written(written, len);
        }
        for (i, piece) in buf.as_slice().chunks(MAX_IO_BYTES).enumerate() {
            let piece_buf = copy_buf(&self.file, piece);
            let written = self.file.write_at(piece_buf, pos + (i * MAX_IO_BYTES) as u64).await.map_err(to_io)?;
            check_written(written, piece.len())?;
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        if len == 0 {
            // glommio would submit a zero-length DMA read (its buffer allocation for 0 bytes
            // has no buffer to give); nothing to read, so do not ask.
            return Ok(Vec::new());
        }
        // Large reads go as MAX_IO_BYTES pieces, all in flight at once.
        let pieces: Vec<_> = (0..len.div_ceil(MAX_IO_BYTES).max(1))
            .map(|i| {
                let at = i * MAX_IO_BYTES;
                self.file.read_at(pos + at as u64, (len - at).min(MAX_IO_BYTES))
            })
            .collect();
        let mut out = Vec::with_capacity(len);
        for piece in join_all(pieces).await {
            let piece = piece.map_err(to_io)?;
            out.extend_from_slice(&piece);
            if out.len() % MAX_IO_BYTES != 0 {
                break; // end of file inside this piece: later pieces are empty
            }
        }
        out.truncate(len);
        Ok(out)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(to_io)
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(to_io)
    }

    async fn len(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(to_io)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.pre_allocate(len, false).await.map_err(to_io)
    }

    async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(to_io)
    }
}

fn copy_buf(file: &DmaFile, bytes: &[u8]) -> DmaBuffer {
    let mut buf = file.alloc_dma_buffer(bytes.len());
    buf.as_bytes_mut().copy_from_slice(bytes);
    buf
}

fn check_written(written: usize, expected: usize) -> io::Result<()> {
    if written == expected {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {written} of {expected} bytes")))
    }
}
