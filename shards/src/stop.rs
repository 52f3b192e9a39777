//! `StopHandle`: a one-way latch that any thread can set and any shard can await.
//!
//! The latch must wake executors that sleep in io_uring, from threads that are not shards (a
//! signal-handling thread, the thread that called `start`). It is a flume channel that nobody ever
//! sends on: setting the latch drops the only sender, which disconnects the channel and wakes
//! every task waiting in `recv_async`. Those wakers are glommio's, which wake a parked executor
//! through its eventfd when invoked from another thread.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Requests a graceful stop of every shard of a runtime: each shard's
/// [`stopping()`](crate::Shard::stopping) completes, and each `shard_main` decides how to wind down
/// and return. Cloneable, `Send + Sync`; `stop()` may be called from any thread, any number of times.
#[derive(Clone, Debug)]
pub struct StopHandle {
    latch: Arc<Latch>,
}

impl StopHandle {
    pub(crate) fn new() -> Self {
        StopHandle { latch: Arc::new(Latch::new()) }
    }

    /// Requests the stop. Idempotent.
    pub fn stop(&self) {
        self.latch.set();
    }

    /// Whether the stop has been requested.
    pub fn is_stopped(&self) -> bool {
        self.latch.is_set()
    }

    /// Completes once the stop has been requested (at once if it already was). Works on any
    /// executor: shards use it through `Shard::stopping`.
    pub async fn stopped(&self) {
        self.latch.wait().await;
    }
}

/// A flag that goes from unset to set once, with async waiting.
#[derive(Debug)]
pub(crate) struct Latch {
    set: AtomicBool,
    /// The only sender; dropped when the latch is set. Never used to send.
    sender: Mutex<Option<flume::Sender<Infallible>>>,
    receiver: flume::Receiver<Infallible>,
}

impl Latch {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = flume::bounded(1);
        Latch { set: AtomicBool::new(false), sender: Mutex::new(Some(sender)), receiver }
    }

    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::Release);
        // A panic while holding this lock cannot leave the Option half-changed: ignore poisoning.
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(sender);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
        if self.is_set() {
            return;
        }
        // Nobody sends, so this only returns once the sender is dropped, i.e. the latch is set.
        match self.receiver.recv_async().await {
            Err(flume::RecvError::Disconnected) => {}
            Ok(never) => match never {},
        }
        assert!(self.is_set(), "latch channel disconnected while the latch is unset");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wakes_a_waiter_on_another_thread() {
        let handle = StopHandle::new();
        let waiter = handle.clone();
        let thread = std::thread::spawn(move || futures_lite::future::block_on(waiter.stopped()));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!handle.is_stopped());
        handle.stop();
        handle.stop();
        thread.join().expect("waiter thread");
        assert!(handle.is_stopped());
        futures_lite::future::block_on(handle.stopped());
    }
}
