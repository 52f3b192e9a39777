//! The in-memory tail of the active segment: bytes appended but not yet written, plus recently
//! written bytes kept as a read cache (O_DIRECT bypasses the page cache, so the log keeps its own).
//!
//! Stored as fixed-size chunks covering file positions `[start, end)`; `start` is always a
//! multiple of [`ALIGN`] because the next write re-writes the partly filled page it begins in.

use std::collections::VecDeque;

use crate::io::{align_down, ALIGN};

const CHUNK: usize = 256 << 10;
const _: () = assert!(CHUNK.is_multiple_of(ALIGN));

#[derive(Debug)]
pub(crate) struct Tail {
    /// File position of the first byte held (a multiple of ALIGN).
    start: u64,
    /// File position one past the last byte appended: the active segment's logical size.
    end: u64,
    chunks: VecDeque<Box<[u8]>>,
    /// Evicted chunks kept for reuse: allocating fresh ones costs page faults and zeroing on
    /// every 256 KiB appended.
    spare: Vec<Box<[u8]>>,
}

/// Spare chunks kept per tail (bounded: 1 MiB).
const MAX_SPARE: usize = 4;

impl Tail {
    /// A tail whose file holds `page_prefix` at `[align_down(end), end)`: the partly written last
    /// page, which the next write must rewrite.
    pub(crate) fn new(end: u64, page_prefix: &[u8]) -> Self {
        let start = align_down(end);
        assert_eq!(page_prefix.len() as u64, end - start, "tail must start with the partial last page");
        let mut tail = Tail { start, end: start, chunks: VecDeque::new(), spare: Vec::new() };
        tail.push(page_prefix);
        tail
    }

    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Appends bytes at the end.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = ((self.end - self.start) as usize) % CHUNK;
            if used == 0 && (self.end - self.start) as usize == self.chunks.len() * CHUNK {
                let chunk = self.spare.pop().unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice());
                self.chunks.push_back(chunk);
            }
            let chunk = self.chunks.back_mut().expect("a chunk with room");
            let n = bytes.len().min(CHUNK - used);
            chunk[used..used + n].copy_from_slice(&bytes[..n]);
            self.end += n as u64;
            bytes = &bytes[n..];
        }
    }

    /// Copies `[pos, pos + out.len())` into `out`. The range must be held.
    pub(crate) fn copy_to(&self, pos: u64, out: &mut [u8]) {
        assert!(pos >= self.start && pos + out.len() as u64 <= self.end, "tail range not held");
        let mut rel = (pos - self.start) as usize;
        let mut done = 0;
        while done < out.len() {
            let chunk = &self.chunks[rel / CHUNK];
            let at = rel % CHUNK;
            let n = (out.len() - done).min(CHUNK - at);
            out[done..done + n].copy_from_slice(&chunk[at..at + n]);
            done += n;
            rel += n;
        }
    }

    /// `[pos, pos + len)` as a new vector. The range must be held.
    pub(crate) fn copy_out(&self, pos: u64, len: usize) -> Vec<u8> {
        assert!(pos >= self.start && pos + len as u64 <= self.end, "tail range not held");
        let mut out = Vec::with_capacity(len);
        let mut rel = (pos - self.start) as usize;
        while out.len() < len {
            let at = rel % CHUNK;
            let n = (len - out.len()).min(CHUNK - at);
            out.extend_from_slice(&self.chunks[rel / CHUNK][at..at + n]);
            rel += n;
        }
        out
    }

    /// Bytes held in memory.
    pub(crate) fn held_bytes(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// [`Tail::evict`], then drops buffers kept for reuse that do not fit in `budget` beside the
    /// chunks still held.
    pub(crate) fn trim(&mut self, keep_from: u64, budget: usize) {
        self.evict(keep_from, budget);
        let room = budget.saturating_sub(self.held_bytes()) / CHUNK;
        self.spare.truncate(room.min(MAX_SPARE));
    }

    /// Chunks held plus buffers kept for reuse, in bytes.
    pub(crate) fn allocated_bytes(&self) -> usize {
        (self.chunks.len() + self.spare.len()) * CHUNK
    }

    /// Drops whole chunks from the front while more than `budget` bytes are held, never dropping
    /// anything at or after `keep_from` (bytes still to be written).
    pub(crate) fn evict(&mut self, keep_from: u64, budget: usize) {
        while self.held_bytes() > budget && self.chunks.len() > 1 && self.start + CHUNK as u64 <= align_down(keep_from)
        {
            let chunk = self.chunks.pop_front().expect("more than one chunk");
            if self.spare.len() < MAX_SPARE {
                self.spare.push(chunk);
            }
            self.start += CHUNK as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_copy_evict() {
        let mut tail = Tail::new(4096 + 10, &[7u8; 10]);
        assert_eq!(tail.start(), 4096);
        let data: Vec<u8> = (0..(3 * CHUNK)).map(|i| (i % 251) as u8).collect();
        tail.push(&data);
        assert_eq!(tail.end(), 4096 + 10 + data.len() as u64);
        let mut out = vec![0u8; 1000];
        tail.copy_to(4096 + 10 + CHUNK as u64 - 500, &mut out);
        assert_eq!(&out[..], &data[CHUNK - 500..CHUNK + 500]);
        tail.evict(tail.end(), CHUNK);
        assert!(tail.held_bytes() <= 2 * CHUNK);
        let spare = tail.spare.len();
        assert!(spare > 0, "evicted chunks are kept for reuse");
        tail.trim(tail.end(), tail.held_bytes());
        assert_eq!(tail.spare.len(), 0, "a budget with no room drops the kept buffers");
        assert_eq!(tail.allocated_bytes(), tail.held_bytes());
        let mut last = vec![0u8; 10];
        tail.copy_to(tail.end() - 10, &mut last);
        assert_eq!(&last[..], &data[data.len() - 10..]);
        // Nothing at or after keep_from is ever evicted.
        let before = tail.start();
        tail.evict(before + 100, 0);
        assert_eq!(tail.start(), before);
    }
}
