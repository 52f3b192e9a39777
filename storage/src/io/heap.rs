//! How the process's allocator hands freed memory back to the kernel: as little as possible.
//!
//! Why: a broker frees and allocates large buffers all the time (a Fetch answer of a few MiB, a
//! Produce frame of up to a MiB, the aligned buffers of segment reads and writes). glibc's
//! malloc, left to itself, serves such a buffer with a fresh `mmap` and unmaps it when it is
//! freed, or trims the top of a thread's heap with `madvise(MADV_DONTNEED)` once more than a few
//! MiB are free there. Either way the next buffer is fresh memory: a page fault and a zeroed page
//! per 4 KiB, and on a virtual machine that reports free memory to its host (virtio-balloon free
//! page reporting, as on the machine Keel is measured on) possibly a fault in the host too.
//! Measured there (docs/benchmarks.md, "Freed memory kept for reuse"): reading 4 GB back with
//! `keel-bench consume` cost the broker 2.5 to 3.5 times the CPU it costs with the memory kept:
//! 1.9 million page faults, against none.
//!
//! How: glibc's `mallopt` fixes the mmap threshold at its maximum (32 MiB; only larger
//! allocations get an `mmap` of their own) and the trim threshold at 1 GiB, so freed memory
//! stays in malloc's free lists for the next allocation. The process's resident memory then
//! does not shrink after a peak; the peak itself is unchanged (it is what the broker's memory
//! budget bounds). A user who sets malloc's own tunables (`GLIBC_TUNABLES=glibc.malloc.…`)
//! keeps them: this then changes nothing. Other C libraries are left alone.

/// Largest allocation malloc serves from its heaps rather than with an `mmap` of its own: glibc's
/// maximum on 64-bit systems (half its 64 MiB thread heap).
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// Free memory at the top of a heap that malloc keeps before it gives any back to the kernel.
/// Above a thread heap's 64 MiB, so thread heaps are never trimmed.
pub const TRIM_THRESHOLD_BYTES: i32 = 1 << 30;

/// What [`retain_freed_memory`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreedMemory {
    /// Freed memory is now kept for reuse.
    Retained,
    /// `GLIBC_TUNABLES` sets malloc tunables: they stay as the user set them.
    LeftToTunables,
    /// Not glibc, or glibc refused a setting: the allocator's own behaviour stays.
    Unchanged,
}

/// Makes malloc keep the memory the process frees for its next allocations (see the module
/// docs). Call it once, early in `main`, before the threads that allocate start.
pub fn retain_freed_memory() -> FreedMemory {
    if std::env::var_os("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("glibc.malloc.")) {
        return FreedMemory::LeftToTunables;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> FreedMemory {
    // SAFETY: mallopt only changes malloc's parameters; both values are in glibc's ranges.
    let set = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    };
    if set {
        FreedMemory::Retained
    } else {
        FreedMemory::Unchanged
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> FreedMemory {
    FreedMemory::Unchanged
}
