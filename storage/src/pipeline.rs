//! The write pipeline of the active segment: which byte ranges to write next so that several
//! O_DIRECT writes are in flight at once, yet no two in-flight writes touch the same page.
//!
//! Appends grow the segment at its end, which usually falls inside a page. O_DIRECT writes
//! whole pages, so the page holding the end is written again by the next write. Two in-flight
//! writes of one page may complete in either order, and the older content could win; so a write
//! may only start on a page no in-flight write touches. When the page at the frontier is busy,
//! the pipeline writes the pages after it at once and remembers the busy page for a rewrite as
//! soon as its writer completes. Under load this keeps up to `max_in_flight` large writes going;
//! at low load each append gets one write.
//!
//! Pure bookkeeping over byte positions, no I/O: the log copies the planned range out of its
//! tail and performs the write.

use std::collections::{BTreeMap, VecDeque};

use crate::io::{align_down, align_up, ALIGN};

const PAGE: u64 = ALIGN as u64;

/// A write to perform: file bytes `[start, end)`, `start` page-aligned; the buffer is zero-padded
/// to the next page boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlannedWrite {
    pub(crate) id: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

#[derive(Debug)]
struct InFlight {
    id: u64,
    start: u64,
    end: u64,
    /// Bytes this write makes durable-on-completion for the first time.
    covers: (u64, u64),
}

#[derive(Debug, Default)]
pub(crate) struct WritePipeline {
    /// Every byte below this has been handed to some write (except holes in `rewrites`).
    frontier: u64,
    /// Every byte below this is written (contiguous prefix of completed coverage).
    written: u64,
    in_flight: Vec<InFlight>,
    /// Pages skipped while busy: (page start, first byte of the page not yet covered).
    rewrites: VecDeque<(u64, u64)>,
    /// Completed coverage not yet contiguous with `written`: start -> end.
    completed: BTreeMap<u64, u64>,
    next_id: u64,
}

impl WritePipeline {
    /// A pipeline for a segment whose first `written` bytes are on disk.
    pub(crate) fn new(written: u64) -> Self {
        WritePipeline { frontier: written, written, ..Default::default() }
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    fn page_busy(&self, page: u64) -> bool {
        self.in_flight.iter().any(|w| w.start <= page && page < align_up(w.end))
    }

    /// The next write to issue for a segment whose logical end is `end`, if one may be issued.
    pub(crate) fn plan(&mut self, end: u64, write_bytes: u64, max_in_flight: usize) -> Option<PlannedWrite> {
        debug_assert!(write_bytes.is_multiple_of(PAGE) && write_bytes >= PAGE);
        if self.in_flight.len() >= max_in_flight {
            return None;
        }
        // 1. A skipped page whose writer has finished: rewrite it whole (the frontier is past it).
        if let Some(i) = self.rewrites.iter().position(|&(page, _)| !self.page_busy(page)) {
            let (page, hole) = self.rewrites.remove(i).expect("index found");
            debug_assert!(self.frontier >= page + PAGE);
            return Some(self.issue(page, page + PAGE, (hole, page + PAGE)));
        }
        // 2. New bytes at the frontier. While other writes are in flight, write only whole pages
        // and only once enough has gathered for a large write: the device does far better with
        // few large writes than with many small ones, the waiting appenders' bytes ride together
        // (group commit), and a partly filled last page is written once, when the pipeline
        // drains, instead of after every write.
        let from = self.frontier;
        let busy = !self.in_flight.is_empty();
        let page = align_down(from);
        let (start, covers_from) =
            if from != page && self.page_busy(page) { (page + PAGE, page + PAGE) } else { (page, from) };
        let mut stop = end.min(start + write_bytes);
        if busy {
            stop = align_down(stop);
            if stop < start + (write_bytes / 4).max(PAGE) {
                return None;
            }
        }
        if stop <= start || stop <= from {
            return None; // nothing new outside a busy page: wait for its writer
        }
        if start != page {
            self.rewrites.push_back((page, from));
        }
        self.frontier = stop;
        Some(self.issue(start, stop, (covers_from, stop)))
    }

    fn issue(&mut self, start: u64, end: u64, covers: (u64, u64)) -> PlannedWrite {
        debug_assert!(
            !self.in_flight.iter().any(|w| w.start < align_up(end) && start < align_up(w.end)),
            "overlapping writes"
        );
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.push(InFlight { id, start, end, covers });
        PlannedWrite { id, start, end }
    }

    /// Records that write `id` completed; returns the new written prefix. A write issued before
    /// the pipeline was reset (after a failure) is ignored.
    pub(crate) fn complete(&mut self, id: u64) -> u64 {
        let Some(i) = self.in_flight.iter().position(|w| w.id == id) else { return self.written };
        let done = self.in_flight.swap_remove(i);
        let (from, to) = done.covers;
        let slot = self.completed.entry(from).or_insert(to);
        *slot = (*slot).max(to);
        while let Some((&from, &to)) = self.completed.first_key_value() {
            if from > self.written {
                break;
            }
            self.written = self.written.max(to);
            self.completed.remove(&from);
        }
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Simulates appends, plans and out-of-order completions against a byte-exact model of the
    /// file: at every step, `written` must only cover bytes whose latest content is on disk.
    fn run(ops: Vec<(u8, u16)>, write_bytes: u64, max_in_flight: usize) -> Result<(), TestCaseError> {
        let mut p = WritePipeline::new(0);
        let mut end = 0u64;
        let mut version = Vec::<u32>::new(); // per byte: the append that wrote it
        let mut disk = Vec::<u32>::new(); // per byte: version on disk
        let mut pending: Vec<(PlannedWrite, Vec<u32>)> = Vec::new();
        let mut append_no = 0u32;
        for (kind, arg) in ops {
            match kind % 3 {
                0 => {
                    append_no += 1;
                    let len = 1 + u64::from(arg) % 9000;
                    end += len;
                    version.resize(end as usize, append_no);
                }
                1 => {
                    if let Some(w) = p.plan(end, write_bytes, max_in_flight) {
                        prop_assert_eq!(w.start % PAGE, 0);
                        prop_assert!(w.end <= end && w.end > w.start);
                        for other in &pending {
                            prop_assert!(
                                w.start >= align_up(other.0.end) || other.0.start >= align_up(w.end),
                                "page overlap"
                            );
                        }
                        let snapshot = version[w.start as usize..w.end as usize].to_vec();
                        pending.push((w, snapshot));
                    }
                }
                _ => {
                    if !pending.is_empty() {
                        let (w, data) = pending.remove(arg as usize % pending.len());
                        let padded = align_up(w.end) as usize;
                        if disk.len() < padded {
                            disk.resize(padded, 0);
                        }
                        disk[w.start as usize..w.end as usize].copy_from_slice(&data);
                        // The zero padding to the page end lands on disk too.
                        disk[w.end as usize..padded].fill(0);
                        let written = p.complete(w.id);
                        prop_assert!(written <= end);
                        for b in 0..written as usize {
                            prop_assert_eq!(disk[b], version[b], "byte {} claimed written but stale", b);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn written_prefix_is_really_on_disk(ops in proptest::collection::vec((any::<u8>(), any::<u16>()), 1..400),
                                             pages in 1u64..8, max in 1usize..6) {
            run(ops, pages * PAGE, max)?;
        }
    }

    #[test]
    fn busy_frontier_page_is_skipped_then_rewritten() {
        const W: u64 = 16 << 10;
        let mut p = WritePipeline::new(0);
        let a = p.plan(100, W, 4).unwrap();
        assert_eq!((a.start, a.end), (0, 100), "idle: the partial page goes at once");
        assert!(p.plan(2_000, W, 4).is_none(), "busy: wait until a quarter of a write has gathered");
        let b = p.plan(10_000, W, 4).unwrap();
        assert_eq!((b.start, b.end), (4096, 8192), "busy: whole pages after the busy page 0");
        assert!(p.plan(10_000, W, 4).is_none(), "only a partial page left while busy");
        assert_eq!(p.complete(a.id), 100);
        let c = p.plan(10_000, W, 4).unwrap();
        assert_eq!((c.start, c.end), (0, 4096), "rewrite of page 0 once its writer is done");
        assert_eq!(p.complete(b.id), 100, "bytes 100..4096 not yet covered");
        assert_eq!(p.complete(c.id), 8192);
        let d = p.plan(10_000, W, 4).unwrap();
        assert_eq!((d.start, d.end), (8192, 10_000), "idle again: the partial tail");
        assert_eq!(p.complete(d.id), 10_000);
    }
}
