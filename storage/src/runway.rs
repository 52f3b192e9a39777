//! The zeroed runway: under `fsync=always`, zeros written ahead of the active segment's end, so
//! appends overwrite written blocks instead of growing the file.
//!
//! Why: on ext4 an O_DIRECT write past a file's size, or into space reserved with `fallocate`
//! (unwritten extents), changes metadata (the size, the extents' written state). Every such
//! append's fdatasync then writes that metadata too (a journal commit, or without a journal the
//! inode's block and the extent's blocks, one after the other), before the cache flush;
//! and io_uring cannot issue the write inline (ext4 refuses the non-blocking attempt), so a
//! kernel worker thread takes it, with the context switches that go with it. A write that
//! overwrites written blocks inside the file's size changes only data: its fdatasync is the data
//! and one cache flush. Measured on this project's disk: write + fdatasync of 16 KiB, p50 0.38 ms
//! and p99 1.5-2.9 ms appending, against p50 0.24 ms and p99 0.6-1.2 ms overwriting
//! (`keel-bench baseline log --zeroed` measures the same at a log's load).
//!
//! How: [`Log::extend_runway`] (run by the owner of the log, away from appends, when
//! [`Log::wants_runway`] says the runway is low) reserves the space, extends the file's size over
//! it, writes zeros in `ZERO_WRITE_BYTES` (128 KiB) writes and fdatasyncs them (the metadata is written
//! there, once per refill, instead of in appends). The broker paces the zero writes
//! ([`Log::extend_runway_paced`]): one after each of the log's fdatasyncs, so appends do not
//! queue behind a burst of them on the device. An append never writes a page of a zero write
//! in flight (it waits for it). Nothing else changes on disk: recovery already cuts zeros found
//! after the last batch (`DiskState::ZeroFilledTail`), and sealing a segment trims it to its data.
//!
//! The price is that the runway's bytes are written twice, zeros then data: worth it only where
//! every append is fdatasync'ed, so other policies never zero. And a quiet partition costs
//! nothing: a segment gets a runway only once it holds `MIN_SEGMENT_BYTES` (1 MiB), and at most as far
//! ahead as it already holds.
//!
//! `LogConfig::runway_bytes` is 0 (off) unless set; the broker sets 8 MiB (`--runway-bytes`).
//! Written back to back, the zero writes raised p99 on the disk it was first measured on, so it
//! was off by default (docs/benchmarks.md, "The zeroed runway"). Paced, it lowered the broker's
//! CPU per request, the median and p99 at 50 MB/s of acks=all appends ("Paced runway refills",
//! "The runway on by default"); the bytes written twice are the lasting price.

use std::{ops::Range, rc::Rc};

use crate::{
    config::FsyncPolicy,
    error::{Result, StorageError},
    io::{align_down, align_up, Clock, Dir, File, IoBuf},
    log::Log,
};

/// Largest single zero write. Small, because an append's write queued behind one on the device
/// waits for it, and so does the cache flush of the append's fdatasync (128 KiB is about 0.3 ms
/// at 450 MB/s, the slowest this project's disk was measured at); large enough that a paced
/// refill keeps well ahead of appends (one per fdatasync of the log).
pub(crate) const ZERO_WRITE_BYTES: u64 = 128 << 10;
/// A segment smaller than this (or than the runway, if smaller) gets no runway: appends grow the
/// file as they would anyway.
pub(crate) const MIN_SEGMENT_BYTES: u64 = 1 << 20;
/// When the runway must start from the segment's end (none yet, or appends ran past it), it
/// starts this far ahead (at most a quarter of the runway), so the appends arriving meanwhile do
/// not wait for the first zero write.
pub(crate) const GAP_BYTES: u64 = 256 << 10;

/// The runway a segment holding `size` bytes should have: file positions `[from, to)` to zero,
/// given zeros are written up to `zeroed`. `None` when the runway is long enough: it is refilled
/// once less than half of it is left, so a steady stream of appends causes one refill per half
/// runway, not a zero write per append.
pub(crate) fn plan(size: u64, zeroed: u64, runway_bytes: u64, segment_bytes: u64) -> Option<Range<u64>> {
    // Both scale down with a small runway (tests use 64 KiB ones on small segments).
    let min_size = MIN_SEGMENT_BYTES.min(runway_bytes);
    let gap = align_down(GAP_BYTES.min(runway_bytes / 4));
    if runway_bytes == 0 || size < min_size {
        return None;
    }
    let end = align_up(size);
    let target = align_up(end + size.min(runway_bytes)).min(align_up(segment_bytes));
    let left = zeroed.saturating_sub(end);
    if left * 2 >= target.saturating_sub(end) {
        return None;
    }
    let from = if zeroed > end { zeroed } else { end + gap };
    (from < target).then_some(from..target)
}

impl<D: Dir, C: Clock> Log<D, C> {
    fn runway_bytes(&self) -> u64 {
        match self.config().fsync {
            FsyncPolicy::Always => self.config().runway_bytes,
            FsyncPolicy::Interval { .. } | FsyncPolicy::Never => 0,
        }
    }

    /// Whether [`Log::extend_runway`] has work to do: the active segment's zeroed runway is
    /// below half its length (never under a policy other than `fsync=always`). Cheap; callers
    /// ask after appends.
    pub fn wants_runway(&self) -> bool {
        let st = self.state.borrow();
        !st.runway_held_off()
            && plan(st.active().size, st.zeroed, self.runway_bytes(), self.config().segment_bytes).is_some()
    }

    /// Refills the active segment's zeroed runway (see the module doc) if it is low, its zero
    /// writes one after another. Appends go on meanwhile; a roll, truncation or close waits for
    /// the refill to end. An error leaves the log usable without a runway until its next segment
    /// (appends grow the file as they would without one), except a failed fdatasync, which fails
    /// the log as any failed fdatasync does.
    pub async fn extend_runway(&self) -> Result<()> {
        self.extend_runway_paced(|| std::future::ready(())).await
    }

    /// [`Log::extend_runway`], its zero writes spread between the appends: after each, the
    /// refill waits for the log's next fdatasync to end, or for `pause()` (the caller's bound,
    /// such as a timer), whichever comes first. So each zero write goes to the device right after
    /// an append's cache flush, not in a burst that every append in the meantime queues behind
    /// (measured: docs/benchmarks.md, "Paced runway refills"). It stops pausing once the runway
    /// left is short, an append waits for the zeros, or a roll, truncation or close waits for
    /// the refill.
    pub async fn extend_runway_paced<P, F>(&self, mut pause: P) -> Result<()>
    where
        P: FnMut() -> F,
        F: std::future::Future<Output = ()>,
    {
        let (file, range) = {
            let mut st = self.state.borrow_mut();
            if st.runway_held_off() {
                return Ok(());
            }
            let Some(range) = plan(st.active().size, st.zeroed, self.runway_bytes(), self.config().segment_bytes)
            else {
                return Ok(());
            };
            // Zeros only past the page that holds the data's end (appends rewrite that one).
            debug_assert!(range.start >= align_up(st.active().size), "runway {range:?} over the data");
            let file = st.active().file.clone();
            st.zeroing = Some(range.start);
            (file, range)
        };
        let guard = ZeroingGuard { log: self };
        let what = || self.dir.describe(&crate::log::log_name(self.state.borrow().active().base));
        let zeroed = async {
            // Reserve first, so a full disk refuses here rather than in a write; that also makes
            // the file that long: a zero write past the file's size would hold ext4's inode lock
            // until done, and appends (overwrites, inside the size) would queue behind it.
            file.allocate(range.end).await.map_err(|e| StorageError::io("reserving the runway of", what(), e))?;
            {
                let mut st = self.state.borrow_mut();
                st.allocated = st.allocated.max(range.end);
            }
            // `zeroing` is `pos` throughout: set to `range.start` above, moved on after each write.
            let mut pos = range.start;
            while pos < range.end {
                let len = (range.end - pos).min(ZERO_WRITE_BYTES);
                let mut buf = file.alloc_buf(len as usize);
                buf.as_mut_slice().fill(0);
                let written = file.write_at(Rc::new(buf), pos).await;
                written.map_err(|e| StorageError::io("zeroing the runway of", what(), e))?;
                pos += len;
                // Appends may go up to the zeros written while the refill pauses.
                self.state.borrow_mut().zeroing = Some(pos);
                self.changed.notify_all();
                if pos < range.end && !self.refill_hurried(pos) {
                    futures_lite::future::or(pause(), self.next_sync_or_hurry(pos)).await;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = zeroed {
            // The zeros written so far are past the data, where recovery expects them anyway.
            self.state.borrow_mut().runway_refused = true;
            return Err(e);
        }
        // The zeros' metadata (size, written extents) is committed here, not by an append. The
        // guard holds a roll or truncation off until then, so the file is still the one zeroed,
        // and at its length, when the runway is counted; only appends past the zeros (`zeroing`
        // is `range.end` now) would wait.
        debug_assert_eq!(self.state.borrow().zeroing, Some(range.end));
        if let Err(e) = file.sync_data().await {
            let err = StorageError::io("fdatasync of the runway of", what(), e);
            self.fail(err.to_string());
            return Err(err);
        }
        self.state.borrow_mut().zeroed = range.end;
        drop(guard);
        Ok(())
    }

    /// Whether a refill zeroed up to `zeroed` must write the rest without pausing: less than a
    /// quarter of the runway is left ahead of the data, an append waits for the zeros, or the
    /// log wants the refill over (a roll, truncation or close waits for it; it failed).
    fn refill_hurried(&self, zeroed: u64) -> bool {
        let st = self.state.borrow();
        let left = zeroed.saturating_sub(align_up(st.active().size));
        left < self.runway_bytes() / 4 || st.refill_must_hurry()
    }

    /// Resolves once an fdatasync of the log has ended, or [`Log::refill_hurried`].
    async fn next_sync_or_hurry(&self, zeroed: u64) {
        let before = self.syncs();
        loop {
            let wait = self.changed.changed();
            if self.syncs() != before || self.refill_hurried(zeroed) {
                return;
            }
            wait.await;
        }
    }
}

/// Ends a runway refill (its zero writes and their fdatasync), however [`Log::extend_runway`]
/// returns (error or drop): appends waiting for it go on, and a roll or truncation may start.
struct ZeroingGuard<'a, D: Dir, C: Clock> {
    log: &'a Log<D, C>,
}

impl<D: Dir, C: Clock> Drop for ZeroingGuard<'_, D, C> {
    fn drop(&mut self) {
        let mut st = self.log.state.borrow_mut();
        st.zeroing = None;
        st.zeros_wanted = false;
        drop(st);
        self.log.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn no_runway_when_off_or_for_a_small_segment() {
        assert_eq!(plan(100 * MIB, 0, 0, GIB), None);
        assert_eq!(plan(MIN_SEGMENT_BYTES - 1, 0, 8 * MIB, GIB), None);
    }

    #[test]
    fn starts_a_gap_ahead_of_the_end_and_reaches_as_far_as_the_segment_holds() {
        // 1 MiB + 100 bytes: the end's page is rewritten by appends, zeros start a gap later and
        // reach 1 MiB (what the segment holds) past the end.
        let size = MIB + 100;
        let end = align_up(size);
        assert_eq!(plan(size, 0, 8 * MIB, GIB), Some(end + GAP_BYTES..align_up(end + size)));
        // A big segment: the whole runway.
        assert_eq!(plan(64 * MIB, 0, 8 * MIB, GIB), Some(64 * MIB + GAP_BYTES..72 * MIB));
    }

    #[test]
    fn refills_from_where_the_zeros_end_once_half_is_used() {
        let size = 64 * MIB;
        // 6 MiB of 8 left: enough.
        assert_eq!(plan(size, 70 * MIB, 8 * MIB, GIB), None);
        // Exactly half left: still enough.
        assert_eq!(plan(size, 68 * MIB, 8 * MIB, GIB), None);
        // Less than half: refill from the zeros' end to the full length.
        assert_eq!(plan(size, 68 * MIB - 4096, 8 * MIB, GIB), Some(68 * MIB - 4096..72 * MIB));
        // Appends ran past the zeros: start again a gap ahead.
        assert_eq!(plan(size, 60 * MIB, 8 * MIB, GIB), Some(64 * MIB + GAP_BYTES..72 * MIB));
    }

    #[test]
    fn a_small_runway_starts_on_small_segments_with_a_small_gap() {
        // 64 KiB runway: from 64 KiB of data, a 16 KiB gap.
        assert_eq!(plan(60 << 10, 0, 64 << 10, GIB), None);
        assert_eq!(plan(64 << 10, 0, 64 << 10, GIB), Some((80 << 10)..(128 << 10)));
    }

    #[test]
    fn never_past_the_segment_size_limit() {
        // 3 MiB left before a 100 MiB segment rolls: the runway stops there.
        assert_eq!(plan(97 * MIB, 0, 8 * MIB, 100 * MIB), Some(97 * MIB + GAP_BYTES..100 * MIB));
        // Less than the gap left: nothing.
        assert_eq!(plan(100 * MIB - 4096, 0, 8 * MIB, 100 * MIB), None);
    }
}
