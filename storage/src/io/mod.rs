//! The storage engine's view of a disk: a directory of files, written with aligned buffers.
//!
//! The log's decisions (what to write where, when to sync, what recovery keeps) are generic over
//! these traits, so the same code runs on glommio's O_DIRECT files in production ([`dma`]) and on
//! a seeded in-memory disk with injected faults and crashes in tests ([`sim`]).
//!
//! Contract, which both implementations keep:
//! - `write_at` positions and buffer lengths are multiples of [`ALIGN`]; a write either completes
//!   whole or returns an error (a short write is an error).
//! - Data written is durable only after `sync_data` returns Ok; directory changes (create, rename,
//!   remove) only after [`Dir::sync`] returns Ok.
//! - `read_at` takes any position and length and returns fewer bytes only at end of file.

pub mod dma;
pub mod heap;
pub mod sim;

use std::{io, rc::Rc};

/// Alignment of every position and length handed to [`File::write_at`]: the page size, which is
/// also a multiple of every logical block size O_DIRECT may require.
pub const ALIGN: usize = 4096;
const _: () = assert!(ALIGN.is_power_of_two() && ALIGN.is_multiple_of(512));

/// Rounds `v` down to a multiple of [`ALIGN`].
pub const fn align_down(v: u64) -> u64 {
    v & !(ALIGN as u64 - 1)
}

/// Rounds `v` up to a multiple of [`ALIGN`].
pub const fn align_up(v: u64) -> u64 {
    (v + ALIGN as u64 - 1) & !(ALIGN as u64 - 1)
}

/// A buffer suitable for direct I/O (aligned address, length a multiple of [`ALIGN`]).
/// Its contents are not zeroed on allocation.
pub trait IoBuf: 'static {
    fn as_slice(&self) -> &[u8];
    fn as_mut_slice(&mut self) -> &mut [u8];
}

/// A directory holding one log's files. File names are plain names, no paths.
#[allow(async_fn_in_trait)]
pub trait Dir: 'static {
    type File: File;

    /// Opens `name` for reading and writing, creating it (empty) if `create` and it does not exist.
    async fn open(&self, name: &str, create: bool) -> io::Result<Self::File>;
    /// Removes `name`. Durable after [`Dir::sync`].
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists. Durable after [`Dir::sync`].
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Makes every earlier create, rename and remove in this directory durable.
    async fn sync(&self) -> io::Result<()>;
    /// A human-readable location, for error messages.
    fn describe(&self, name: &str) -> String;
}

/// One open file.
#[allow(async_fn_in_trait, clippy::len_without_is_empty)]
pub trait File: 'static {
    type Buf: IoBuf;

    /// Allocates an aligned buffer of `len` bytes (`len` a multiple of [`ALIGN`]).
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Writes the whole of `buf` at `pos` (a multiple of [`ALIGN`]). The buffer is shared so the
    /// caller may keep serving reads from it while the write is in flight.
    async fn write_at(&self, buf: Rc<Self::Buf>, pos: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos` (any alignment); fewer only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    /// fdatasync: everything written before this call is durable when it returns Ok.
    async fn sync_data(&self) -> io::Result<()>;
    /// Sets the file's length (truncates or extends with zeros). Durable after `sync_data`.
    async fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    async fn len(&self) -> io::Result<u64>;
    /// Reserves disk blocks for `[0, len)`, so later writes inside it cannot fail with ENOSPC,
    /// and extends the file's length to `len` (with zeros) if it is shorter, like `fallocate`
    /// without `FALLOC_FL_KEEP_SIZE`; never shrinks it. The length is durable after `sync_data`.
    ///
    /// Why the length: on ext4 an O_DIRECT write that ends past the file's size is an extending
    /// write, done synchronously under the inode's exclusive lock (io_uring hands it to a worker
    /// that sleeps until the device completes it). Inside the size, the worker only submits it.
    async fn allocate(&self, len: u64) -> io::Result<()>;
    /// Closes the file now. Dropping a file also closes it, but the runtime may only get to it
    /// at its next I/O cycle (glommio queues the close), so short-lived executors and code that
    /// opens many files close explicitly.
    async fn close(self) -> io::Result<()>
    where
        Self: Sized,
    {
        drop(self);
        Ok(())
    }
}

/// Closes a shared file if this is its last handle (otherwise the other holders keep it open).
pub async fn close_shared<F: File>(file: std::rc::Rc<F>) -> io::Result<()> {
    match std::rc::Rc::try_unwrap(file) {
        Ok(file) => file.close().await,
        Err(_) => Ok(()),
    }
}

/// Polls every future until all are done; results in order. Runtime-agnostic (no spawning), so
/// core logic and the broker's request fan-out can share it.
///
/// Each future is polled only when its own waker fired (`FuturesUnordered`), not every time any
/// of them makes progress: a produce or fetch may fan out to a thousand partitions, and polling
/// all of them on each completion would cost a million polls per request.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pending: FuturesUnordered<_> =
        futures.into_iter().enumerate().map(|(i, f)| async move { (i, f.await) }).collect();
    while let Some((i, output)) = pending.next().await {
        outputs[i] = Some(output);
    }
    outputs.into_iter().map(|o| o.expect("every future completed")).collect()
}

/// Wall-clock milliseconds since the Unix epoch, injectable so retention, segment age and
/// tombstone expiry can be tested deterministically.
pub trait Clock: 'static {
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::{Cell, RefCell},
        future::Future,
        pin::Pin,
        rc::Rc,
        task::{Context, Poll, Waker},
    };

    use super::join_all;

    /// A future that completes once `open` is set, counting how often it was polled and keeping
    /// the waker so the test decides when it is woken.
    struct Gate {
        open: Rc<Cell<bool>>,
        polls: Rc<Cell<u32>>,
        waker: Rc<RefCell<Option<Waker>>>,
        value: usize,
    }

    impl Future for Gate {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls.set(self.polls.get() + 1);
            if self.open.get() {
                Poll::Ready(self.value)
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    #[test]
    fn join_all_keeps_order_and_polls_only_the_woken_future() {
        const N: usize = 100;
        let gates: Vec<_> = (0..N)
            .map(|i| Gate {
                open: Rc::new(Cell::new(false)),
                polls: Rc::new(Cell::new(0)),
                waker: Rc::new(RefCell::new(None)),
                value: i * 10,
            })
            .collect();
        let handles: Vec<_> = gates.iter().map(|g| (g.open.clone(), g.polls.clone(), g.waker.clone())).collect();
        let mut joined = Box::pin(join_all(gates));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(joined.as_mut().poll(&mut cx).is_pending());
        assert!(handles.iter().all(|(_, polls, _)| polls.get() == 1));
        // Complete them last to first: the output keeps the input's order anyway.
        for (i, (open, polls, waker)) in handles.iter().enumerate().rev() {
            open.set(true);
            waker.borrow_mut().take().expect("pending gate left its waker").wake();
            let ready = joined.as_mut().poll(&mut cx);
            assert_eq!(polls.get(), 2, "gate {i}: polled once more, after its own wake");
            if i > 0 {
                assert!(ready.is_pending());
            } else {
                assert_eq!(ready, Poll::Ready((0..N).map(|i| i * 10).collect()));
            }
        }
        // Each gate was polled twice in all: the gates not woken were never polled again.
        assert!(handles.iter().all(|(_, polls, _)| polls.get() == 2));
    }
}
