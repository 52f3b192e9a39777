//! A single-threaded "something changed" signal: tasks waiting for a write, a sync or the end of a
//! roll park here and re-check their condition when woken. No runtime dependency, so the log
//! logic runs the same under glommio and under a plain `block_on` in tests.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

#[derive(Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Wakes every task parked in [`Notify::changed`].
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Resolves at the next [`Notify::notify_all`] after this call. Create it before checking the
    /// condition you wait for, and no wake-up can be lost.
    pub(crate) fn changed(&self) -> Changed<'_> {
        Changed { notify: self, seen: self.generation.get() }
    }
}

pub(crate) struct Changed<'a> {
    notify: &'a Notify,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
