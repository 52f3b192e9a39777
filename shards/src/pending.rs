//! `PendingCalls`: the calls of one shard that have been sent and await their response.
//!
//! An entry is created right after the request entered its queue (in the same poll, so no response
//! can overtake it) and removed by the caller's `Reply` when it completes or is dropped. So the table
//! holds only requests in flight, which the queues and the targets' serving slots bound.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::error::RouteError;
use crate::id::ShardId;
use crate::mesh::CallId;

pub(crate) struct PendingCalls<Resp> {
    next_call: Cell<CallId>,
    calls: RefCell<HashMap<CallId, Entry<Resp>>>,
    /// `[peer]`: the peer has stopped, so no call to it can be answered any more.
    peer_stopped: Vec<Cell<bool>>,
    /// This shard is shutting down: no call can be made or answered any more.
    closed: Cell<bool>,
}

struct Entry<Resp> {
    peer: ShardId,
    state: State<Resp>,
}

enum State<Resp> {
    Waiting(Option<Waker>),
    Done(Result<Resp, RouteError>),
}

impl<Resp> PendingCalls<Resp> {
    pub(crate) fn new(shards: usize) -> Self {
        PendingCalls {
            next_call: Cell::new(0),
            calls: RefCell::new(HashMap::new()),
            peer_stopped: (0..shards).map(|_| Cell::new(false)).collect(),
            closed: Cell::new(false),
        }
    }

    pub(crate) fn next_call(&self) -> CallId {
        let call = self.next_call.get();
        self.next_call.set(call + 1);
        call
    }

    /// Whether a call to `peer` could still be answered.
    pub(crate) fn check(&self, peer: ShardId) -> Result<(), RouteError> {
        if self.closed.get() {
            Err(RouteError::Stopping)
        } else if self.peer_stopped[peer.index()].get() {
            Err(RouteError::ShardStopped(peer))
        } else {
            Ok(())
        }
    }

    /// Records that `call` was sent to `peer`; the returned `Reply` resolves with its outcome.
    pub(crate) fn register(&self, call: CallId, peer: ShardId) -> Result<Reply<'_, Resp>, RouteError> {
        self.check(peer)?;
        let previous = self.calls.borrow_mut().insert(call, Entry { peer, state: State::Waiting(None) });
        assert!(previous.is_none(), "call id {call} registered twice");
        Ok(Reply { table: self, call, finished: false })
    }

    /// Delivers the outcome of `call`. A call whose caller gave up (dropped its `Reply`) is ignored,
    /// and so is a second outcome (the first one, e.g. "stopped", stands).
    pub(crate) fn complete(&self, call: CallId, outcome: Result<Resp, RouteError>) {
        let waker = {
            let mut calls = self.calls.borrow_mut();
            match calls.get_mut(&call) {
                Some(entry) => match &mut entry.state {
                    State::Waiting(waker) => {
                        let waker = waker.take();
                        entry.state = State::Done(outcome);
                        waker
                    }
                    State::Done(_) => None,
                },
                None => {
                    tracing::trace!(call, "response for a call nobody awaits any more");
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// `peer` has stopped: fails its outstanding calls and every later one.
    pub(crate) fn stop_peer(&self, peer: ShardId) {
        self.peer_stopped[peer.index()].set(true);
        self.fail_where(|entry_peer| entry_peer == peer, || RouteError::ShardStopped(peer));
    }

    /// This shard shuts down: fails every outstanding call and every later one.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.fail_where(|_| true, || RouteError::Stopping);
    }

    /// Calls sent and not yet answered (or answered and not yet picked up by their caller).
    pub(crate) fn len(&self) -> usize {
        self.calls.borrow().len()
    }

    fn fail_where(&self, matches: impl Fn(ShardId) -> bool, error: impl Fn() -> RouteError) {
        let mut wakers = Vec::new();
        for entry in self.calls.borrow_mut().values_mut() {
            if let (true, State::Waiting(waker)) = (matches(entry.peer), &mut entry.state) {
                wakers.extend(waker.take());
                entry.state = State::Done(Err(error()));
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// The response to one call, as a future. Dropping it abandons the call: a late response is dropped.
pub(crate) struct Reply<'a, Resp> {
    table: &'a PendingCalls<Resp>,
    call: CallId,
    finished: bool,
}

impl<Resp> Future for Reply<'_, Resp> {
    type Output = Result<Resp, RouteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.finished, "Reply polled after completion");
        let (table, call) = (self.table, self.call);
        let mut calls = table.calls.borrow_mut();
        let entry = calls.get_mut(&call).expect("a pending call's entry lives as long as its Reply");
        match &mut entry.state {
            State::Waiting(waker) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Done(_) => {
                let Some(Entry { state: State::Done(outcome), .. }) = calls.remove(&call) else {
                    unreachable!("entry checked to be done just above");
                };
                drop(calls);
                self.finished = true;
                Poll::Ready(outcome)
            }
        }
    }
}

impl<Resp> Drop for Reply<'_, Resp> {
    fn drop(&mut self) {
        if !self.finished {
            self.table.calls.borrow_mut().remove(&self.call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn delivers_outcomes_and_failures() {
        let table = PendingCalls::<u32>::new(3);
        let a = table.next_call();
        let b = table.next_call();
        let c = table.next_call();
        let mut reply_a = table.register(a, ShardId(1)).expect("peer alive");
        let mut reply_b = table.register(b, ShardId(2)).expect("peer alive");
        let reply_c = table.register(c, ShardId(2)).expect("peer alive");
        assert_eq!(block_on(poll_once(&mut reply_a)), None);
        table.complete(a, Ok(7));
        table.complete(a, Ok(8));
        assert_eq!(block_on(&mut reply_a), Ok(7));
        drop(reply_c);
        assert_eq!(table.len(), 1, "only b is left");
        table.stop_peer(ShardId(2));
        assert_eq!(block_on(&mut reply_b), Err(RouteError::ShardStopped(ShardId(2))));
        assert_eq!(table.register(table.next_call(), ShardId(2)).err(), Some(RouteError::ShardStopped(ShardId(2))));
        table.close();
        assert_eq!(table.register(table.next_call(), ShardId(1)).err(), Some(RouteError::Stopping));
        assert_eq!(table.len(), 0);
    }
}
