//! A deterministic, in-memory simulated disk for tests: [`SimDisk`], its directories ([`SimDir`])
//! and files ([`SimFile`]), plus a settable clock ([`SimClock`]).
//!
//! # Model of durability
//!
//! It mirrors Linux/ext4 with O_DIRECT files, and is deliberately adversarial about what a power
//! loss keeps:
//!
//! - Every file (inode) has a *visible* image, which reads see, and a *durable* image, which is
//!   what is on the platter. Each successful `write_at` or `set_len` changes the visible image at
//!   once and is appended to the file's *pending* list. A successful `sync_data` (through any
//!   handle of the file) applies the pending list, in order, to the durable image and clears it.
//! - A failed `sync_data` behaves like Linux after a writeback error: the pending writes are
//!   dropped, stay visible until a crash, and are never made durable by a later sync (which then
//!   succeeds with nothing to do).
//! - Every directory has a visible name table and a durable one. `open(.., create)` of a new name,
//!   `rename` and `remove` change the visible table at once and are appended to the directory's
//!   pending list; [`Dir::sync`] applies them to the durable table. Files are inodes: a removed
//!   or renamed file stays reachable through the handles already open on it.
//! - [`SimDisk::crash`] is a power loss. For each file, its pending operations are shuffled and
//!   each is, by a seeded random choice, lost, applied whole, or torn (a random proper subset of
//!   its 512-byte sectors applied; the file's length then extends either to the end of the last
//!   sector applied or, like an extent whose size was journaled but whose data was not, to the
//!   end of the write, with zeros where sectors are missing). A pending `set_len` is applied or
//!   lost. For each directory, a random-length prefix of its pending operations survives, in
//!   order (journaled metadata). Afterwards visible = durable everywhere, and every handle
//!   ([`SimDir`] and [`SimFile`]) opened before the crash is stale: each operation on it returns
//!   an io error ("stale handle after crash"). Take a new one with [`SimDisk::dir`].
//! - Directories themselves always exist and are always durable.
//! - Capacity ([`SimDisk::set_capacity`]) counts, over files that are linked or open,
//!   `max(len, allocated)`. `allocate` reserves and grows the length (a pending operation, like a
//!   growing `set_len`) but never shrinks it; like ext4, shrinking
//!   a file with `set_len` also frees the reservation past the new length. An operation that would
//!   grow the total past the capacity fails with ENOSPC and changes nothing.
//! - Injected faults ([`SimDisk::fail_next`], [`SimDisk::fail_randomly`]) are checked after the
//!   stale-handle check and before anything else (so an injected `Open` fault wins over NotFound),
//!   and a failed operation changes nothing (except the dropped pending writes of a failed sync).
//! - Determinism: everything random comes from a SplitMix64 seeded by [`SimDisk::new`]; crash
//!   outcomes and random faults use separate streams, so turning random faults on does not change
//!   which crash outcome a seed gives for the same sequence of disk operations.
//!
//! All async methods complete immediately, so tests drive them with
//! `futures_lite::future::block_on`. Everything is single-threaded (`Rc<RefCell<..>>`).
//!
//! # Use in tests
//!
//! ```ignore
//! let disk = SimDisk::new(seed);
//! let log = Log::open(disk.dir("p0"), ...);       // real log logic against the simulated disk
//! ... random operations, checked against a model ...
//! disk.fail_next(FaultKind::Sync, 1, libc::EIO);  // the next fsync fails
//! disk.crash();                                   // power loss: every handle goes stale
//! let log = Log::open(disk.dir("p0"), ...);       // recovery must keep all that was acknowledged
//! ```

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    io,
    rc::Rc,
};

use super::{Clock, Dir, File, IoBuf, ALIGN};

const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ENOSPC: i32 = 28;
/// Granularity of torn writes.
const SECTOR: usize = 512;

/// SplitMix64: tiny, seedable, good enough for test choices.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Counters for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// `sync_data` calls that succeeded.
    pub syncs: u64,
    /// `write_at` calls that succeeded.
    pub writes: u64,
    /// Bytes written by the successful `write_at` calls.
    pub bytes_written: u64,
}

/// An operation that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// [`Dir::open`].
    Open,
    /// [`File::write_at`].
    Write,
    /// [`File::read_at`].
    Read,
    /// [`File::sync_data`].
    Sync,
    /// [`File::set_len`].
    SetLen,
    /// [`File::allocate`].
    Allocate,
    /// [`Dir::remove`].
    Remove,
    /// [`Dir::rename`].
    Rename,
    /// [`Dir::sync`].
    DirSync,
}

impl FaultKind {
    /// Every kind, for tests that loop over them.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Open,
        FaultKind::Write,
        FaultKind::Read,
        FaultKind::Sync,
        FaultKind::SetLen,
        FaultKind::Allocate,
        FaultKind::Remove,
        FaultKind::Rename,
        FaultKind::DirSync,
    ];
}

type Ino = u64;

enum FileOp {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a crash for certain.
    durable: Vec<u8>,
    /// Writes and set_lens since the last successful sync_data, in order.
    pending: Vec<FileOp>,
    /// Bytes reserved by `allocate`.
    allocated: u64,
    /// Handles open in the current epoch.
    open: u32,
}

impl Inode {
    fn new() -> Self {
        Inode { data: Vec::new(), durable: Vec::new(), pending: Vec::new(), allocated: 0, open: 0 }
    }

    fn footprint(&self) -> u64 {
        (self.data.len() as u64).max(self.allocated)
    }
}

enum DirOp {
    Create { name: String, ino: Ino },
    Rename { from: String, to: String, ino: Ino },
    Remove { name: String, ino: Ino },
}

impl DirOp {
    fn ino(&self) -> Ino {
        match self {
            DirOp::Create { ino, .. } | DirOp::Rename { ino, .. } | DirOp::Remove { ino, .. } => *ino,
        }
    }

    fn apply(&self, table: &mut BTreeMap<String, Ino>) {
        match self {
            DirOp::Create { name, ino } => {
                table.insert(name.clone(), *ino);
            }
            DirOp::Rename { from, to, ino } => {
                if table.get(from) == Some(ino) {
                    table.remove(from);
                }
                table.insert(to.clone(), *ino);
            }
            DirOp::Remove { name, ino } => {
                if table.get(name) == Some(ino) {
                    table.remove(name);
                }
            }
        }
    }
}

#[derive(Default)]
struct DirState {
    names: BTreeMap<String, Ino>,
    durable: BTreeMap<String, Ino>,
    pending: Vec<DirOp>,
}

#[derive(Default, Clone, Copy)]
struct Fault {
    next: u32,
    next_errno: i32,
    p: f64,
    p_errno: i32,
}

struct Inner {
    crash_rng: Rng,
    fault_rng: Rng,
    /// Bumped by every crash; handles of an older epoch are stale.
    epoch: u64,
    next_ino: Ino,
    inodes: BTreeMap<Ino, Inode>,
    dirs: BTreeMap<String, DirState>,
    capacity: Option<u64>,
    faults: [Fault; 9],
    stats: SimStats,
}

fn write_into(buf: &mut Vec<u8>, pos: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let pos = pos as usize;
    let end = pos + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[pos..end].copy_from_slice(data);
}

fn apply_file_op(buf: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { pos, data } => write_into(buf, *pos, data),
        FileOp::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(ENOENT)
}

impl Inner {
    fn check_fault(&mut self, kind: FaultKind) -> io::Result<()> {
        let f = &mut self.faults[kind as usize];
        if f.next > 0 {
            f.next -= 1;
            return Err(io::Error::from_raw_os_error(f.next_errno));
        }
        if f.p > 0.0 && self.fault_rng.chance(f.p) {
            return Err(io::Error::from_raw_os_error(f.p_errno));
        }
        Ok(())
    }

    fn linked(&self) -> BTreeSet<Ino> {
        self.dirs.values().flat_map(|d| d.names.values().copied()).collect()
    }

    /// Bytes in use: over files linked in a directory or open, `max(len, allocated)`.
    fn usage(&self) -> u64 {
        let linked = self.linked();
        self.inodes
            .iter()
            .filter(|(ino, node)| node.open > 0 || linked.contains(ino))
            .map(|(_, node)| node.footprint())
            .sum()
    }

    /// Ok if `ino` may grow to `max(new_len, new_alloc)` bytes.
    fn check_space(&self, ino: Ino, new_len: u64, new_alloc: u64) -> io::Result<()> {
        let Some(cap) = self.capacity else {
            return Ok(());
        };
        let old = self.inodes[&ino].footprint();
        let new = new_len.max(new_alloc);
        if new <= old || self.usage() - old + new <= cap {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(ENOSPC))
        }
    }

    /// Drops inodes no handle, name (visible or durable) or pending directory op refers to.
    fn gc(&mut self) {
        let mut referenced = BTreeSet::new();
        for d in self.dirs.values() {
            referenced.extend(d.names.values().copied());
            referenced.extend(d.durable.values().copied());
            referenced.extend(d.pending.iter().map(DirOp::ino));
        }
        self.inodes.retain(|ino, node| node.open > 0 || referenced.contains(ino));
    }

    fn new_inode(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new());
        ino
    }

    /// The inode named `name` in `dir`, created (durably, bypassing the model) if missing.
    fn raw_inode(&mut self, dir: &str, name: &str) -> Ino {
        if let Some(&ino) = self.dirs.get(dir).and_then(|d| d.names.get(name)) {
            return ino;
        }
        let ino = self.new_inode();
        let d = self.dirs.entry(dir.to_string()).or_default();
        d.names.insert(name.to_string(), ino);
        d.durable.insert(name.to_string(), ino);
        ino
    }

    /// Applies one pending operation to `buf` at a crash: a write is lost, applied whole or torn
    /// (one chance in three each); a set_len is applied or lost (even chances).
    fn crash_apply(rng: &mut Rng, buf: &mut Vec<u8>, op: &FileOp) {
        let (pos, data) = match op {
            FileOp::SetLen(_) => {
                if rng.below(2) == 0 {
                    apply_file_op(buf, op);
                }
                return;
            }
            FileOp::Write { pos, data } => (*pos, data),
        };
        match rng.below(3) {
            0 => {}
            1 => apply_file_op(buf, op),
            _ => {
                let sectors = data.len() / SECTOR;
                let mut keep: Vec<bool> = (0..sectors).map(|_| rng.below(2) == 0).collect();
                if sectors >= 2 && keep.iter().all(|&k| k == keep[0]) {
                    // Make it a proper, non-empty subset: really torn.
                    let i = rng.below(sectors as u64) as usize;
                    keep[i] = !keep[i];
                }
                let extend_to_end = rng.below(2) == 0;
                for (i, _) in keep.iter().enumerate().filter(|(_, &k)| k) {
                    let at = i * SECTOR;
                    write_into(buf, pos + at as u64, &data[at..at + SECTOR]);
                }
                let end = pos as usize + data.len();
                if extend_to_end && buf.len() < end {
                    buf.resize(end, 0);
                }
            }
        }
    }

    fn crash(&mut self) {
        self.epoch += 1;
        let rng = &mut self.crash_rng;
        for node in self.inodes.values_mut() {
            let mut ops = std::mem::take(&mut node.pending);
            for i in (1..ops.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                ops.swap(i, j);
            }
            for op in &ops {
                Self::crash_apply(rng, &mut node.durable, op);
            }
            node.data = node.durable.clone();
            node.open = 0;
        }
        for d in self.dirs.values_mut() {
            let ops = std::mem::take(&mut d.pending);
            let keep = rng.below(ops.len() as u64 + 1) as usize;
            for op in &ops[..keep] {
                op.apply(&mut d.durable);
            }
            d.names = d.durable.clone();
        }
        self.gc();
    }
}

fn stale(what: &str) -> io::Error {
    io::Error::other(format!("{what}: stale handle after crash"))
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::from_raw_os_error(EINVAL));
    }
    Ok(())
}

/// The whole simulated machine's disk, holding many directories. Cloning shares it.
#[derive(Clone)]
pub struct SimDisk {
    inner: Rc<RefCell<Inner>>,
}

impl SimDisk {
    pub fn new(seed: u64) -> Self {
        let inner = Inner {
            crash_rng: Rng(seed),
            fault_rng: Rng(seed ^ 0x5EED_FA17_0000_0001),
            epoch: 0,
            next_ino: 1,
            inodes: BTreeMap::new(),
            dirs: BTreeMap::new(),
            capacity: None,
            faults: [Fault::default(); 9],
            stats: SimStats::default(),
        };
        SimDisk { inner: Rc::new(RefCell::new(inner)) }
    }

    /// Opens (creating if needed) a directory handle. Directories themselves are always durable.
    pub fn dir(&self, name: &str) -> SimDir {
        let mut inner = self.inner.borrow_mut();
        inner.dirs.entry(name.to_string()).or_default();
        SimDir { inner: self.inner.clone(), name: Rc::from(name), epoch: inner.epoch }
    }

    /// Power loss. Afterwards every file holds its durable contents plus, for each write or
    /// set_len since its last successful sync_data, a seeded random choice: lost, applied whole,
    /// or torn (only a random subset of its 512-byte sectors applied); unsynced writes may be
    /// applied in any order. Directory operations (create, rename, remove) since the directory's
    /// last sync: a random-length prefix of them survives, in order (journaled metadata).
    /// Handles (directories and files) opened before the crash become stale: every operation on
    /// them returns an io error ("stale handle after crash").
    pub fn crash(&self) {
        self.inner.borrow_mut().crash();
    }

    /// Capacity in bytes over all files (sum over linked or open files of max(len, allocated));
    /// None = unlimited. Writes, set_len and allocate that would grow the total past it fail with
    /// raw OS error ENOSPC (28) and change nothing.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.inner.borrow_mut().capacity = bytes;
    }

    /// Bytes counted against the capacity now.
    pub fn usage(&self) -> u64 {
        self.inner.borrow().usage()
    }

    /// Fault injection: the next `count` operations of `kind` (in any directory) fail with
    /// `errno` and change nothing (for a failed Sync: like Linux, the unsynced writes of that
    /// file are NOT made durable and never will be by a later sync — they are dropped from the
    /// pending set but stay visible to reads until a crash). `count` 0 cancels.
    pub fn fail_next(&self, kind: FaultKind, count: u32, errno: i32) {
        let f = &mut self.inner.borrow_mut().faults[kind as usize];
        f.next = count;
        f.next_errno = errno;
    }

    /// Fail every operation of `kind` with probability `p` (0.0..=1.0), seeded; 0.0 turns it off.
    pub fn fail_randomly(&self, kind: FaultKind, p: f64, errno: i32) {
        assert!((0.0..=1.0).contains(&p), "probability {p} out of 0.0..=1.0");
        let f = &mut self.inner.borrow_mut().faults[kind as usize];
        f.p = p;
        f.p_errno = errno;
    }

    /// Turns off every injected fault.
    pub fn clear_faults(&self) {
        self.inner.borrow_mut().faults = [Fault::default(); 9];
    }

    /// Visible contents of `dir/name`, None if there is no such file.
    pub fn file_bytes(&self, dir: &str, name: &str) -> Option<Vec<u8>> {
        let inner = self.inner.borrow();
        let ino = inner.dirs.get(dir)?.names.get(name)?;
        Some(inner.inodes[ino].data.clone())
    }

    /// Bypassing the model, overwrites `bytes` at `pos` (any alignment, extending the file if
    /// needed) in both the visible and the durable contents, e.g. to corrupt a file; creates the
    /// file, durably, if missing. Pending (unsynced) writes are unaffected and may still land
    /// over it at a crash. Ignores capacity and faults.
    pub fn write_raw(&self, dir: &str, name: &str, pos: u64, bytes: &[u8]) {
        let mut inner = self.inner.borrow_mut();
        let ino = inner.raw_inode(dir, name);
        let node = inner.inodes.get_mut(&ino).unwrap();
        write_into(&mut node.data, pos, bytes);
        write_into(&mut node.durable, pos, bytes);
    }

    /// Like [`SimDisk::write_raw`], but sets the length (truncating or extending with zeros).
    pub fn set_len_raw(&self, dir: &str, name: &str, len: u64) {
        let mut inner = self.inner.borrow_mut();
        let ino = inner.raw_inode(dir, name);
        let node = inner.inodes.get_mut(&ino).unwrap();
        node.data.resize(len as usize, 0);
        node.durable.resize(len as usize, 0);
    }

    /// Bypassing the model, removes `dir/name` now and for good: no crash brings it back (nor
    /// the file a pending rename to `name` came from). Handles already open keep working.
    pub fn remove_raw(&self, dir: &str, name: &str) {
        let mut inner = self.inner.borrow_mut();
        let Some(d) = inner.dirs.get_mut(dir) else {
            return;
        };
        let doomed: BTreeSet<Ino> = d.names.get(name).into_iter().chain(d.durable.get(name)).copied().collect();
        d.names.retain(|_, ino| !doomed.contains(ino));
        d.durable.retain(|_, ino| !doomed.contains(ino));
        d.pending.retain(|op| !doomed.contains(&op.ino()));
        inner.gc();
    }

    /// Visible names in `dir`, sorted.
    pub fn list_raw(&self, dir: &str) -> Vec<String> {
        let inner = self.inner.borrow();
        inner.dirs.get(dir).map(|d| d.names.keys().cloned().collect()).unwrap_or_default()
    }

    /// Counters for assertions.
    pub fn stats(&self) -> SimStats {
        self.inner.borrow().stats
    }
}

/// A handle on one directory of a [`SimDisk`]. Stale after [`SimDisk::crash`].
#[derive(Clone)]
pub struct SimDir {
    inner: Rc<RefCell<Inner>>,
    name: Rc<str>,
    epoch: u64,
}

impl SimDir {
    fn state<'a>(&self, inner: &'a mut Inner) -> io::Result<&'a mut DirState> {
        if inner.epoch != self.epoch {
            return Err(stale(&format!("sim:{}", self.name)));
        }
        Ok(inner.dirs.get_mut(&*self.name).expect("directories are never removed"))
    }

    /// The stale check, then the fault check.
    fn begin(&self, inner: &mut Inner, kind: FaultKind) -> io::Result<()> {
        self.state(inner)?;
        inner.check_fault(kind)
    }
}

impl Dir for SimDir {
    type File = SimFile;

    async fn open(&self, name: &str, create: bool) -> io::Result<SimFile> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        self.begin(inner, FaultKind::Open)?;
        check_name(name)?;
        let ino = match inner.dirs[&*self.name].names.get(name) {
            Some(&ino) => ino,
            None if create => {
                let ino = inner.new_inode();
                let d = self.state(inner)?;
                d.names.insert(name.to_string(), ino);
                d.pending.push(DirOp::Create { name: name.to_string(), ino });
                ino
            }
            None => return Err(not_found()),
        };
        inner.inodes.get_mut(&ino).unwrap().open += 1;
        Ok(SimFile { inner: self.inner.clone(), ino, epoch: self.epoch, desc: self.describe(name) })
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        self.begin(inner, FaultKind::Remove)?;
        let d = self.state(inner)?;
        let ino = d.names.remove(name).ok_or_else(not_found)?;
        d.pending.push(DirOp::Remove { name: name.to_string(), ino });
        inner.gc();
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        self.begin(inner, FaultKind::Rename)?;
        check_name(to)?;
        let d = self.state(inner)?;
        let ino = *d.names.get(from).ok_or_else(not_found)?;
        if from == to {
            return Ok(());
        }
        d.names.remove(from);
        d.names.insert(to.to_string(), ino);
        d.pending.push(DirOp::Rename { from: from.to_string(), to: to.to_string(), ino });
        inner.gc();
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut inner = self.inner.borrow_mut();
        Ok(self.state(&mut inner)?.names.keys().cloned().collect())
    }

    async fn sync(&self) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        self.begin(inner, FaultKind::DirSync)?;
        let d = self.state(inner)?;
        for op in std::mem::take(&mut d.pending) {
            op.apply(&mut d.durable);
        }
        inner.gc();
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{}/{}", self.name, name)
    }
}

/// An open file of a [`SimDisk`]. Stale after [`SimDisk::crash`].
pub struct SimFile {
    inner: Rc<RefCell<Inner>>,
    ino: Ino,
    epoch: u64,
    desc: String,
}

impl SimFile {
    /// Runs `f` on the disk and this file's inode after the stale check and, if `kind` is given,
    /// the fault check.
    fn with<R>(&self, kind: Option<FaultKind>, f: impl FnOnce(&mut Inner, Ino) -> io::Result<R>) -> io::Result<R> {
        let mut inner = self.inner.borrow_mut();
        if inner.epoch != self.epoch {
            return Err(stale(&self.desc));
        }
        if let Some(kind) = kind {
            inner.check_fault(kind)?;
        }
        f(&mut inner, self.ino)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            if inner.epoch == self.epoch {
                if let Some(node) = inner.inodes.get_mut(&self.ino) {
                    node.open -= 1;
                }
                inner.gc();
            }
        }
    }
}

/// A buffer of a [`SimFile`]. Filled with garbage (0xA5) when allocated.
pub struct SimBuf(Vec<u8>);

impl IoBuf for SimBuf {
    fn as_slice(&self) -> &[u8] {
        &self.0
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl File for SimFile {
    type Buf = SimBuf;

    fn alloc_buf(&self, len: usize) -> SimBuf {
        assert!(len.is_multiple_of(ALIGN), "buffer length {len} is not a multiple of {ALIGN}");
        SimBuf(vec![0xA5; len])
    }

    async fn write_at(&self, buf: Rc<SimBuf>, pos: u64) -> io::Result<()> {
        let data = buf.as_slice();
        assert!(pos.is_multiple_of(ALIGN as u64), "{}: write position {pos} is not a multiple of {ALIGN}", self.desc);
        assert!(
            data.len().is_multiple_of(ALIGN),
            "{}: write length {} is not a multiple of {ALIGN}",
            self.desc,
            data.len()
        );
        self.with(Some(FaultKind::Write), |inner, ino| {
            let node = &inner.inodes[&ino];
            let new_len = (node.data.len() as u64).max(pos + data.len() as u64);
            inner.check_space(ino, new_len, node.allocated)?;
            if !data.is_empty() {
                let node = inner.inodes.get_mut(&ino).unwrap();
                write_into(&mut node.data, pos, data);
                node.pending.push(FileOp::Write { pos, data: data.to_vec() });
            }
            inner.stats.writes += 1;
            inner.stats.bytes_written += data.len() as u64;
            Ok(())
        })
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.with(Some(FaultKind::Read), |inner, ino| {
            let data = &inner.inodes[&ino].data;
            let start = (pos.min(data.len() as u64)) as usize;
            let end = start.saturating_add(len).min(data.len());
            Ok(data[start..end].to_vec())
        })
    }

    async fn sync_data(&self) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if inner.epoch != self.epoch {
            return Err(stale(&self.desc));
        }
        let failed = inner.check_fault(FaultKind::Sync);
        let node = inner.inodes.get_mut(&self.ino).unwrap();
        let ops = std::mem::take(&mut node.pending);
        failed?; // a failed sync drops the pending writes for good (they stay visible)
        for op in &ops {
            apply_file_op(&mut node.durable, op);
        }
        inner.stats.syncs += 1;
        Ok(())
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(Some(FaultKind::SetLen), |inner, ino| {
            let alloc = inner.inodes[&ino].allocated.min(len);
            inner.check_space(ino, len, alloc)?;
            let node = inner.inodes.get_mut(&ino).unwrap();
            node.data.resize(len as usize, 0);
            node.allocated = alloc;
            node.pending.push(FileOp::SetLen(len));
            Ok(())
        })
    }

    async fn len(&self) -> io::Result<u64> {
        self.with(None, |inner, ino| Ok(inner.inodes[&ino].data.len() as u64))
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.with(Some(FaultKind::Allocate), |inner, ino| {
            let node = &inner.inodes[&ino];
            let alloc = node.allocated.max(len);
            let new_len = (node.data.len() as u64).max(len);
            inner.check_space(ino, new_len, alloc)?;
            let node = inner.inodes.get_mut(&ino).unwrap();
            node.allocated = alloc;
            if new_len > node.data.len() as u64 {
                // A longer file, like set_len: visible now, durable (or lost) with the next sync.
                node.data.resize(new_len as usize, 0);
                node.pending.push(FileOp::SetLen(new_len));
            }
            Ok(())
        })
    }
}

/// A clock tests set and advance by hand. Cloning shares it.
#[derive(Clone, Debug)]
pub struct SimClock(Rc<Cell<i64>>);

impl SimClock {
    pub fn new(start_ms: i64) -> Self {
        SimClock(Rc::new(Cell::new(start_ms)))
    }

    pub fn advance(&self, ms: i64) {
        self.0.set(self.0.get() + ms);
    }

    pub fn set(&self, ms: i64) {
        self.0.set(ms);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    const EIO: i32 = 5;

    fn buf(f: &SimFile, blocks: usize, byte: u8) -> Rc<SimBuf> {
        let mut b = f.alloc_buf(blocks * ALIGN);
        b.as_mut_slice().fill(byte);
        Rc::new(b)
    }

    fn open(d: &SimDir, name: &str) -> SimFile {
        block_on(d.open(name, true)).unwrap()
    }

    fn durable_file(disk: &SimDisk, dir: &str, name: &str) -> (SimDir, SimFile) {
        let d = disk.dir(dir);
        let f = open(&d, name);
        block_on(d.sync()).unwrap();
        (d, f)
    }

    #[test]
    fn basic_reads_writes_and_eof() {
        let disk = SimDisk::new(1);
        let (_d, f) = durable_file(&disk, "p", "a");
        assert!(f.alloc_buf(ALIGN).as_slice().iter().all(|&b| b == 0xA5));
        block_on(f.write_at(buf(&f, 1, 7), ALIGN as u64)).unwrap();
        assert_eq!(block_on(f.len()).unwrap(), 2 * ALIGN as u64);
        let all = block_on(f.read_at(0, 3 * ALIGN)).unwrap();
        assert_eq!(all.len(), 2 * ALIGN);
        assert!(all[..ALIGN].iter().all(|&b| b == 0));
        assert!(all[ALIGN..].iter().all(|&b| b == 7));
        assert_eq!(block_on(f.read_at(ALIGN as u64 + 10, 5)).unwrap(), vec![7; 5]);
        assert_eq!(block_on(f.read_at(2 * ALIGN as u64 - 3, 10)).unwrap(), vec![7; 3]);
        assert!(block_on(f.read_at(5 * ALIGN as u64, 10)).unwrap().is_empty());
        block_on(f.set_len(100)).unwrap();
        assert_eq!(block_on(f.read_at(0, 1000)).unwrap(), vec![0; 100]);
        block_on(f.set_len(200)).unwrap();
        assert_eq!(block_on(f.len()).unwrap(), 200);
        assert_eq!(disk.stats(), SimStats { syncs: 0, writes: 1, bytes_written: ALIGN as u64 });
        block_on(f.sync_data()).unwrap();
        assert_eq!(disk.stats().syncs, 1);
        assert_eq!(disk.file_bytes("p", "a").unwrap(), vec![0; 200]);
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn unaligned_write_panics() {
        let disk = SimDisk::new(1);
        let (_d, f) = durable_file(&disk, "p", "a");
        let _ = block_on(f.write_at(buf(&f, 1, 1), 512));
    }

    #[test]
    fn directory_semantics_and_errors() {
        let disk = SimDisk::new(1);
        let d = disk.dir("p");
        let e = block_on(d.open("missing", false)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(block_on(d.remove("missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(block_on(d.rename("missing", "x")).unwrap_err().kind(), io::ErrorKind::NotFound);
        let a = open(&d, "a");
        block_on(a.write_at(buf(&a, 1, 1), 0)).unwrap();
        let b = open(&d, "b");
        block_on(b.write_at(buf(&b, 1, 2), 0)).unwrap();
        let mut names = d.list().unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        // rename replaces the target; the replaced file stays readable through its handle
        block_on(d.rename("a", "b")).unwrap();
        assert_eq!(disk.list_raw("p"), ["b"]);
        assert_eq!(disk.file_bytes("p", "b").unwrap(), vec![1; ALIGN]);
        assert_eq!(block_on(b.read_at(0, 1)).unwrap(), [2]);
        // a removed file stays readable and writable through an open handle
        block_on(d.remove("b")).unwrap();
        assert!(d.list().unwrap().is_empty());
        assert!(block_on(d.open("b", false)).is_err());
        block_on(a.write_at(buf(&a, 1, 3), ALIGN as u64)).unwrap();
        assert_eq!(block_on(a.read_at(0, 2 * ALIGN)).unwrap().len(), 2 * ALIGN);
        assert_eq!(d.describe("x"), "sim:p/x");
        // same name in two dirs: different files
        let q = disk.dir("q");
        let qa = open(&q, "a");
        assert_eq!(block_on(qa.len()).unwrap(), 0);
        // two handles of one file see each other's writes; sync on either makes them durable
        let q1 = open(&q, "f");
        let q2 = open(&q, "f");
        block_on(q1.write_at(buf(&q1, 1, 9), 0)).unwrap();
        assert_eq!(block_on(q2.read_at(0, 1)).unwrap(), [9]);
        block_on(q2.sync_data()).unwrap();
        block_on(q.sync()).unwrap();
        disk.crash();
        assert_eq!(disk.file_bytes("q", "f").unwrap(), vec![9; ALIGN]);
    }

    #[test]
    fn synced_data_survives_every_crash() {
        for seed in 0..300 {
            let disk = SimDisk::new(seed);
            let (d, f) = durable_file(&disk, "p", "seg");
            block_on(f.write_at(buf(&f, 2, 0x11), 0)).unwrap();
            block_on(f.write_at(buf(&f, 1, 0x22), 2 * ALIGN as u64)).unwrap();
            block_on(f.sync_data()).unwrap();
            // unsynced: a write past the synced data, and a new file, a rename of another
            block_on(f.write_at(buf(&f, 2, 0x33), 3 * ALIGN as u64)).unwrap();
            let g = open(&d, "new");
            block_on(g.write_at(buf(&g, 1, 0x44), 0)).unwrap();
            block_on(g.sync_data()).unwrap();
            disk.crash();
            let bytes = disk.file_bytes("p", "seg").expect("synced file exists");
            assert!(bytes.len() >= 3 * ALIGN, "seed {seed}");
            assert!(bytes[..2 * ALIGN].iter().all(|&b| b == 0x11), "seed {seed}");
            assert!(bytes[2 * ALIGN..3 * ALIGN].iter().all(|&b| b == 0x22), "seed {seed}");
            assert!(bytes[3 * ALIGN..].iter().all(|&b| b == 0x33 || b == 0), "seed {seed}");
            // "new" may or may not exist (its creation was not synced), but if so it is whole
            if let Some(nb) = disk.file_bytes("p", "new") {
                assert_eq!(nb, vec![0x44; ALIGN], "seed {seed}");
            }
            // a second crash with nothing pending changes nothing
            let before = disk.file_bytes("p", "seg");
            disk.crash();
            assert_eq!(disk.file_bytes("p", "seg"), before);
        }
    }

    #[test]
    fn unsynced_writes_are_lost_whole_or_torn() {
        let (mut lost, mut whole, mut torn) = (0, 0, 0);
        for seed in 0..200 {
            let disk = SimDisk::new(seed);
            let (_d, f) = durable_file(&disk, "p", "seg");
            block_on(f.write_at(buf(&f, 1, 0x11), 0)).unwrap();
            block_on(f.sync_data()).unwrap();
            block_on(f.write_at(buf(&f, 1, 0x22), ALIGN as u64)).unwrap();
            assert_eq!(disk.file_bytes("p", "seg").unwrap().len(), 2 * ALIGN);
            disk.crash();
            let bytes = disk.file_bytes("p", "seg").unwrap();
            assert!(bytes[..ALIGN].iter().all(|&b| b == 0x11));
            let tail = &bytes[ALIGN..];
            assert!(tail.len() <= ALIGN && tail.len().is_multiple_of(SECTOR), "seed {seed}");
            if tail.is_empty() {
                lost += 1;
            } else if tail.len() == ALIGN && tail.iter().all(|&b| b == 0x22) {
                whole += 1;
            } else {
                // each sector is either the new data or zeros (never garbage)
                for s in tail.chunks(SECTOR) {
                    assert!(s.iter().all(|&b| b == 0x22) || s.iter().all(|&b| b == 0), "seed {seed}");
                }
                torn += 1;
            }
        }
        assert!(lost > 0 && whole > 0 && torn > 0, "lost {lost} whole {whole} torn {torn}");
    }

    #[test]
    fn unsynced_overwrites_land_in_any_order_and_set_len_is_all_or_nothing() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..300 {
            let disk = SimDisk::new(seed);
            let (_d, f) = durable_file(&disk, "p", "seg");
            block_on(f.write_at(buf(&f, 2, 1), 0)).unwrap();
            block_on(f.sync_data()).unwrap();
            block_on(f.set_len(ALIGN as u64)).unwrap();
            block_on(f.write_at(buf(&f, 1, 2), 0)).unwrap();
            block_on(f.write_at(buf(&f, 1, 3), 0)).unwrap();
            disk.crash();
            let bytes = disk.file_bytes("p", "seg").unwrap();
            assert!(bytes.len() == ALIGN || bytes.len() == 2 * ALIGN, "seed {seed}");
            if bytes.len() == 2 * ALIGN {
                assert!(bytes[ALIGN..].iter().all(|&b| b == 1));
            }
            if bytes[..ALIGN].iter().all(|&b| b == bytes[0]) {
                outcomes.insert(bytes[0]);
            }
        }
        // old data kept, either overwrite last
        assert_eq!(outcomes, BTreeSet::from([1, 2, 3]));
    }

    /// The visible names after each prefix of the pending directory ops.
    #[test]
    fn directory_ops_survive_as_a_prefix() {
        let states: [&[&str]; 5] = [
            &["a", "old"],      // nothing survived
            &["a", "b", "old"], // create b
            &["b", "c", "old"], // rename a -> c
            &["b", "c"],        // remove old
            &["b", "old"],      // rename c -> old (replacing it again)
        ];
        let mut seen = [0u32; 5];
        for seed in 0..300 {
            let disk = SimDisk::new(seed);
            let d = disk.dir("p");
            for (name, byte) in [("a", 0xA), ("old", 0x0)] {
                let f = open(&d, name);
                block_on(f.write_at(buf(&f, 1, byte), 0)).unwrap();
                block_on(f.sync_data()).unwrap();
            }
            block_on(d.sync()).unwrap();
            let b = open(&d, "b");
            block_on(b.write_at(buf(&b, 1, 0xB), 0)).unwrap();
            block_on(b.sync_data()).unwrap();
            block_on(d.rename("a", "c")).unwrap();
            block_on(d.remove("old")).unwrap();
            block_on(d.rename("c", "old")).unwrap();
            assert_eq!(d.list().unwrap().len(), 2);
            disk.crash();
            let names = disk.list_raw("p");
            let i = states.iter().position(|s| *s == names).unwrap_or_else(|| panic!("seed {seed}: {names:?}"));
            seen[i] += 1;
            // contents follow the inode: a's data under a, c or (in the last state) old
            let a_name = ["a", "a", "c", "c", "old"][i];
            assert_eq!(disk.file_bytes("p", a_name).unwrap(), vec![0xA; ALIGN]);
            if i < 3 {
                assert_eq!(disk.file_bytes("p", "old").unwrap(), vec![0; ALIGN]);
            }
            if i >= 1 {
                assert_eq!(disk.file_bytes("p", "b").unwrap(), vec![0xB; ALIGN]);
            }
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }

    #[test]
    fn dir_sync_makes_ops_durable_and_unlinked_data_is_freed() {
        for seed in 0..50 {
            let disk = SimDisk::new(seed);
            let d = disk.dir("p");
            let f = open(&d, "a");
            block_on(f.write_at(buf(&f, 1, 5), 0)).unwrap();
            block_on(f.sync_data()).unwrap();
            block_on(d.rename("a", "b")).unwrap();
            open(&d, "gone");
            block_on(d.remove("gone")).unwrap();
            block_on(d.sync()).unwrap();
            drop(f);
            disk.crash();
            assert_eq!(disk.list_raw("p"), ["b"]);
            assert_eq!(disk.file_bytes("p", "b").unwrap(), vec![5; ALIGN]);
            assert_eq!(disk.inner.borrow().inodes.len(), 1);
        }
    }

    #[test]
    fn handles_are_stale_after_crash() {
        let disk = SimDisk::new(3);
        let (d, f) = durable_file(&disk, "p", "a");
        block_on(f.write_at(buf(&f, 1, 1), 0)).unwrap();
        block_on(f.sync_data()).unwrap();
        disk.crash();
        let errs = [
            block_on(f.write_at(buf(&f, 1, 1), 0)).unwrap_err(),
            block_on(f.read_at(0, 1)).unwrap_err(),
            block_on(f.sync_data()).unwrap_err(),
            block_on(f.set_len(0)).unwrap_err(),
            block_on(f.len()).unwrap_err(),
            block_on(f.allocate(0)).unwrap_err(),
            block_on(d.open("a", true)).err().unwrap(),
            block_on(d.remove("a")).unwrap_err(),
            block_on(d.rename("a", "b")).unwrap_err(),
            block_on(d.sync()).unwrap_err(),
            d.list().unwrap_err(),
        ];
        for e in errs {
            assert!(e.to_string().contains("stale handle after crash"), "{e}");
        }
        // the disk itself is fine; new handles work
        let d = disk.dir("p");
        let f = block_on(d.open("a", false)).unwrap();
        assert_eq!(block_on(f.read_at(0, 1)).unwrap(), [1]);
        assert_eq!(disk.file_bytes("p", "a").unwrap(), vec![1; ALIGN]);
    }

    /// Runs one operation of `kind`.
    fn run_kind(kind: FaultKind, disk: &SimDisk, d: &SimDir, f: &SimFile) -> io::Result<()> {
        match kind {
            FaultKind::Open => block_on(d.open("new", true)).map(drop),
            FaultKind::Write => block_on(f.write_at(buf(f, 1, 0xEE), 0)),
            FaultKind::Read => block_on(f.read_at(0, 10)).map(drop),
            FaultKind::Sync => block_on(f.sync_data()),
            FaultKind::SetLen => block_on(f.set_len(1)),
            FaultKind::Allocate => block_on(f.allocate(1 << 20)).map(|_| assert!(disk.usage() >= 1 << 20)),
            FaultKind::Remove => block_on(d.remove("a")),
            FaultKind::Rename => block_on(d.rename("a", "z")),
            FaultKind::DirSync => block_on(d.sync()),
        }
    }

    fn snapshot(disk: &SimDisk) -> (Vec<String>, Option<Vec<u8>>, u64, SimStats) {
        (disk.list_raw("p"), disk.file_bytes("p", "a"), disk.usage(), disk.stats())
    }

    #[test]
    fn fail_next_each_kind() {
        for kind in FaultKind::ALL {
            let disk = SimDisk::new(9);
            let (d, f) = durable_file(&disk, "p", "a");
            block_on(f.write_at(buf(&f, 2, 0x11), 0)).unwrap();
            let before = snapshot(&disk);
            disk.fail_next(kind, 2, EIO);
            // other kinds are unaffected
            if kind != FaultKind::Read {
                block_on(f.read_at(0, 1)).unwrap();
            }
            for _ in 0..2 {
                let e = run_kind(kind, &disk, &d, &f).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(EIO), "{kind:?}");
                assert_eq!(snapshot(&disk), before, "{kind:?}");
            }
            // the third call succeeds
            run_kind(kind, &disk, &d, &f).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            // a different errno
            disk.fail_next(kind, 1, ENOSPC);
            assert_eq!(run_kind(kind, &disk, &d, &f).unwrap_err().raw_os_error(), Some(ENOSPC));
        }
    }

    #[test]
    fn fail_next_open_does_not_create_and_beats_not_found() {
        let disk = SimDisk::new(2);
        let d = disk.dir("p");
        disk.fail_next(FaultKind::Open, 1, EIO);
        assert_eq!(block_on(d.open("x", false)).err().unwrap().raw_os_error(), Some(EIO));
        disk.fail_next(FaultKind::Open, 1, EIO);
        assert!(block_on(d.open("x", true)).is_err());
        assert!(disk.list_raw("p").is_empty());
        disk.crash();
        assert!(disk.list_raw("p").is_empty());
    }

    #[test]
    fn failed_sync_makes_pending_writes_never_durable() {
        for seed in 0..200 {
            let disk = SimDisk::new(seed);
            let (_d, f) = durable_file(&disk, "p", "a");
            block_on(f.write_at(buf(&f, 1, 0x11), 0)).unwrap();
            block_on(f.sync_data()).unwrap();
            block_on(f.write_at(buf(&f, 1, 0x22), ALIGN as u64)).unwrap();
            disk.fail_next(FaultKind::Sync, 1, EIO);
            assert_eq!(block_on(f.sync_data()).unwrap_err().raw_os_error(), Some(EIO));
            // still visible
            assert_eq!(block_on(f.read_at(ALIGN as u64, 1)).unwrap(), [0x22]);
            // a later sync succeeds but does not make them durable
            block_on(f.sync_data()).unwrap();
            disk.crash();
            assert_eq!(disk.file_bytes("p", "a").unwrap(), vec![0x11; ALIGN], "seed {seed}");
        }
    }

    #[test]
    fn random_faults() {
        let disk = SimDisk::new(4);
        let (_d, f) = durable_file(&disk, "p", "a");
        disk.fail_randomly(FaultKind::Read, 1.0, EIO);
        for _ in 0..10 {
            assert_eq!(block_on(f.read_at(0, 1)).unwrap_err().raw_os_error(), Some(EIO));
        }
        disk.fail_randomly(FaultKind::Read, 0.5, 61);
        let fails = (0..1000).filter(|_| block_on(f.read_at(0, 1)).is_err()).count();
        assert!((350..650).contains(&fails), "{fails}");
        disk.fail_randomly(FaultKind::Read, 0.0, EIO);
        assert!((0..100).all(|_| block_on(f.read_at(0, 1)).is_ok()));
        disk.fail_randomly(FaultKind::Write, 1.0, EIO);
        disk.fail_next(FaultKind::Read, 5, EIO);
        disk.clear_faults();
        block_on(f.read_at(0, 1)).unwrap();
        block_on(f.write_at(buf(&f, 1, 1), 0)).unwrap();
    }

    #[test]
    fn capacity_enospc() {
        let disk = SimDisk::new(5);
        let (d, f) = durable_file(&disk, "p", "a");
        disk.set_capacity(Some(4 * ALIGN as u64));
        block_on(f.write_at(buf(&f, 3, 1), 0)).unwrap();
        let g = open(&d, "b");
        let before = (disk.file_bytes("p", "a"), disk.file_bytes("p", "b"), disk.usage(), disk.stats());
        let enospc = |r: io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(ENOSPC));
        enospc(block_on(g.write_at(buf(&g, 2, 2), 0)));
        enospc(block_on(f.write_at(buf(&f, 1, 2), 4 * ALIGN as u64)));
        enospc(block_on(g.set_len(2 * ALIGN as u64)));
        enospc(block_on(g.allocate(2 * ALIGN as u64)));
        assert_eq!((disk.file_bytes("p", "a"), disk.file_bytes("p", "b"), disk.usage(), disk.stats()), before);
        // overwrites and the last block fit
        block_on(f.write_at(buf(&f, 3, 3), 0)).unwrap();
        block_on(g.allocate(ALIGN as u64)).unwrap();
        assert_eq!(block_on(g.len()).unwrap(), ALIGN as u64, "allocate grows the length");
        assert_eq!(disk.usage(), 4 * ALIGN as u64);
        // writes inside the reservation cannot fail
        block_on(g.write_at(buf(&g, 1, 4), 0)).unwrap();
        enospc(block_on(g.write_at(buf(&g, 1, 4), ALIGN as u64)));
        // removing a file frees its space once no handle holds it
        block_on(d.remove("a")).unwrap();
        enospc(block_on(g.write_at(buf(&g, 1, 4), ALIGN as u64)));
        drop(f);
        block_on(g.write_at(buf(&g, 1, 4), ALIGN as u64)).unwrap();
        // shrinking always works, and frees the reservation past the new length
        block_on(g.allocate(3 * ALIGN as u64)).unwrap();
        block_on(g.set_len(0)).unwrap();
        assert_eq!(disk.usage(), 0);
        disk.set_capacity(None);
        block_on(g.write_at(buf(&g, 16, 4), 0)).unwrap();
    }

    fn scenario(seed: u64) -> (Vec<String>, Vec<Option<Vec<u8>>>) {
        let disk = SimDisk::new(seed);
        let d = disk.dir("p");
        let mut files = Vec::new();
        for i in 0..4u8 {
            let f = open(&d, &format!("f{i}"));
            for j in 0..6u8 {
                block_on(f.write_at(buf(&f, 1 + (j as usize % 3), i * 16 + j), (j as u64 % 4) * ALIGN as u64)).unwrap();
                if j == 2 {
                    block_on(f.sync_data()).unwrap();
                }
            }
            files.push(f);
        }
        block_on(d.rename("f0", "f9")).unwrap();
        disk.fail_randomly(FaultKind::Sync, 0.5, EIO);
        for f in &files {
            let _ = block_on(f.sync_data());
        }
        disk.crash();
        let names = disk.list_raw("p");
        let contents = ["f0", "f1", "f2", "f3", "f9"].iter().map(|n| disk.file_bytes("p", n)).collect();
        (names, contents)
    }

    #[test]
    fn determinism() {
        for seed in 0..20 {
            assert!(scenario(seed) == scenario(seed), "seed {seed}");
        }
        assert!((1..20).any(|seed| scenario(seed) != scenario(0)));
    }

    #[test]
    fn raw_helpers() {
        let disk = SimDisk::new(6);
        assert!(disk.list_raw("p").is_empty());
        assert_eq!(disk.file_bytes("p", "a"), None);
        disk.write_raw("p", "a", 3, b"xyz");
        assert_eq!(disk.file_bytes("p", "a").unwrap(), b"\0\0\0xyz");
        let d = disk.dir("p");
        let f = block_on(d.open("a", false)).unwrap();
        block_on(f.write_at(buf(&f, 1, 1), 0)).unwrap();
        block_on(f.sync_data()).unwrap();
        disk.write_raw("p", "a", 1, b"!");
        assert_eq!(block_on(f.read_at(0, 3)).unwrap(), [1, b'!', 1]);
        disk.set_len_raw("p", "a", 2);
        disk.set_len_raw("p", "b", 5);
        disk.crash(); // raw changes are durable
        assert_eq!(disk.file_bytes("p", "a").unwrap(), [1, b'!']);
        assert_eq!(disk.file_bytes("p", "b").unwrap(), [0; 5]);
        assert_eq!(disk.list_raw("p"), ["a", "b"]);
        // remove_raw: gone now and after a crash, even with pending ops naming it
        let d = disk.dir("p");
        open(&d, "c");
        block_on(d.rename("c", "a")).unwrap();
        disk.remove_raw("p", "a");
        disk.remove_raw("p", "nope");
        assert_eq!(disk.list_raw("p"), ["b"]);
        for seed in 0..20 {
            let disk2 = SimDisk::new(seed);
            disk2.write_raw("p", "a", 0, b"1");
            let d2 = disk2.dir("p");
            open(&d2, "c");
            block_on(d2.rename("c", "a")).unwrap();
            disk2.remove_raw("p", "a");
            disk2.crash();
            assert!(disk2.list_raw("p").is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn clock() {
        let c = SimClock::new(1000);
        let c2 = c.clone();
        c.advance(5);
        assert_eq!(c2.now_ms(), 1005);
        c2.set(7);
        assert_eq!(c.now_ms(), 7);
    }
}
