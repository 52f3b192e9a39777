//! `Shard`: one shard's handle on the runtime — who it is, calling other shards, serving their
//! calls, learning that a stop was requested.
//!
//! Data path of one call from shard A to shard B:
//!
//! ```text
//!  A: call() ──Request──▶ (A,B) request queue ──▶ B: intake task ──slot──▶ handler task
//!  A: Reply ◀── PendingCalls ◀── A: response pump ◀── (B,A) response queue ◀──Response──┘
//! ```
//!
//! A call to the shard itself takes a local queue instead of the mesh and its response completes
//! the pending call directly; it is otherwise served like any other (same slots, same order).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::sync::{Semaphore, StaticPermit};
use glommio::Task;

use crate::config::RuntimeConfig;
use crate::error::{panic_message, RouteError};
use crate::id::ShardId;
use crate::mesh::{CallId, Links, Request, Response};
use crate::pending::PendingCalls;
use crate::stop::{Latch, StopHandle};

/// One shard's handle on the runtime, given to `shard_main`. Cheap to clone (an `Rc`), and bound
/// to the shard's thread (not `Send`).
///
/// Ordering: each (from, to) queue is FIFO, and the target starts handlers (creates and first polls
/// their futures) in the order it takes requests off a queue. So calls that entered one queue in
/// some order — in particular the successive calls of one task — start their handlers in that
/// order; handlers then run concurrently and may finish in any order. Calls that wait for room in a
/// full queue enter it in no particular order among themselves.
pub struct Shard<Req: Send + 'static, Resp: Send + 'static> {
    router: Rc<Router<Req, Resp>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Clone for Shard<Req, Resp> {
    fn clone(&self) -> Self {
        Shard { router: Rc::clone(&self.router) }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> fmt::Debug for Shard<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard").field("id", &self.router.id).field("count", &self.router.count).finish()
    }
}

/// The state behind a `Shard`. Queue ends sit in `Option`s so that `shutdown` can close them while
/// the executor is still alive (peers are notified through it), whoever still holds a `Shard`.
struct Router<Req: Send + 'static, Resp: Send + 'static> {
    id: ShardId,
    count: usize,
    stop: StopHandle,
    /// `[to]`: where requests to each shard go. `None` once shut down.
    outboxes: RefCell<Option<Vec<Outbox<Req>>>>,
    /// `[caller]`: where responses to each shard go (`None` at our own index: local responses
    /// complete `pending` directly). The whole table is `None` once shut down.
    reply_senders: RefCell<Option<Vec<Option<ReplySender<Resp>>>>>,
    /// Request queues waiting for `serve` to be called. Requests queue up meanwhile.
    inboxes: RefCell<Option<Vec<SourcedInbox<Req>>>>,
    /// Whether `serve` was called.
    served: Cell<bool>,
    /// Our calls in flight.
    pending: PendingCalls<Resp>,
    /// Serving slots, `max_concurrent_requests` of them; closed at shutdown.
    slots: Rc<Semaphore>,
    /// Handlers running now (each holds a slot).
    in_service: Cell<usize>,
    /// Intake and response-pump tasks; cancelled at shutdown.
    tasks: RefCell<Vec<Task<()>>>,
}

/// Where responses to one calling shard go.
type ReplySender<Resp> = Rc<ConnectedSender<Response<Resp>>>;

/// A request queue and the shard that sends on it.
type SourcedInbox<Req> = (ShardId, Inbox<Req>);

enum Outbox<Req: Send> {
    Remote(Rc<ConnectedSender<Request<Req>>>),
    Local(Rc<LocalSender<Request<Req>>>),
}

impl<Req: Send> Clone for Outbox<Req> {
    fn clone(&self) -> Self {
        match self {
            Outbox::Remote(sender) => Outbox::Remote(Rc::clone(sender)),
            Outbox::Local(sender) => Outbox::Local(Rc::clone(sender)),
        }
    }
}

enum Inbox<Req: Send> {
    Remote(ConnectedReceiver<Request<Req>>),
    Local(LocalReceiver<Request<Req>>),
}

impl<Req: Send> Inbox<Req> {
    /// The next request, or `None` once the sending side is closed and the queue drained.
    async fn recv(&self) -> Option<Request<Req>> {
        match self {
            Inbox::Remote(receiver) => receiver.recv().await,
            Inbox::Local(receiver) => receiver.recv().await,
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Shard<Req, Resp> {
    /// Wraps this shard's connected mesh ends and starts collecting responses. Runs on the shard's
    /// executor, before `shard_main`.
    pub(crate) fn new(
        id: ShardId,
        config: &RuntimeConfig,
        links: Links<Req, Resp>,
        stop: StopHandle,
        ended: Arc<[Latch]>,
    ) -> Self {
        let Links { requests_out, requests_in, responses_out, responses_in } = links;
        let count = config.shards;
        assert!(id.index() < count, "{id} is outside a runtime of {count} shards");
        let (local_sender, local_receiver) = local_channel::new_bounded(config.queue_capacity);
        let mut local_sender = Some(Rc::new(local_sender));
        let outboxes = requests_out
            .into_iter()
            .zip(ShardId::all(count))
            .map(|(sender, to)| match sender {
                Some(sender) => Outbox::Remote(Rc::new(sender)),
                None => {
                    assert_eq!(to, id, "only a shard's own entry has no request queue");
                    Outbox::Local(local_sender.take().expect("one local queue per shard"))
                }
            })
            .collect();
        let mut inboxes: Vec<SourcedInbox<Req>> = requests_in
            .into_iter()
            .zip(ShardId::all(count))
            .filter_map(|(receiver, from)| receiver.map(|receiver| (from, Inbox::Remote(receiver))))
            .collect();
        inboxes.insert(id.index(), (id, Inbox::Local(local_receiver)));
        let router = Rc::new(Router {
            id,
            count,
            stop,
            outboxes: RefCell::new(Some(outboxes)),
            reply_senders: RefCell::new(Some(responses_out.into_iter().map(|sender| sender.map(Rc::new)).collect())),
            inboxes: RefCell::new(Some(inboxes)),
            served: Cell::new(false),
            pending: PendingCalls::new(count),
            slots: Rc::new(Semaphore::new(config.max_concurrent_requests as u64)),
            in_service: Cell::new(0),
            tasks: RefCell::new(Vec::new()),
        });
        let pumps = responses_in
            .into_iter()
            .zip(ShardId::all(count))
            .filter_map(|(receiver, target)| receiver.map(|receiver| (target, receiver)))
            .map(|(target, receiver)| glommio::spawn_local(collect_responses(Rc::clone(&router), target, receiver)));
        router.tasks.borrow_mut().extend(pumps);
        let watchers = ShardId::all(count)
            .filter(|&peer| peer != id)
            .map(|peer| glommio::spawn_local(watch_peer(Rc::clone(&router), peer, Arc::clone(&ended))));
        router.tasks.borrow_mut().extend(watchers);
        Shard { router }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.router.id
    }

    /// Number of shards in the runtime.
    pub fn count(&self) -> usize {
        self.router.count
    }

    /// Every shard of the runtime, this one included, in id order.
    pub fn all(&self) -> impl Iterator<Item = ShardId> + Clone {
        ShardId::all(self.router.count)
    }

    /// Sends `request` to shard `to` (this shard included) and waits for its handler's response.
    ///
    /// Waits while the (this shard, `to`) queue is full; waits, queued, if `to` has not called
    /// [`serve`](Self::serve) yet. Never hangs because `to` went away: if `to` stops before
    /// answering the result is `ShardStopped`, if its handler panics `HandlerFailed`. Dropping the
    /// future abandons the call (the request may still be handled; its response is dropped).
    ///
    /// Panics if `to` is not a shard of this runtime (a programmer error).
    pub async fn call(&self, to: ShardId, request: Req) -> Result<Resp, RouteError> {
        let router = &*self.router;
        assert!(to.index() < router.count, "{to} does not exist: the runtime has {} shards", router.count);
        router.pending.check(to)?;
        let outbox = router.outbox(to).ok_or(RouteError::Stopping)?;
        let call = router.pending.next_call();
        let message = Request { call, body: request };
        let sent = match &outbox {
            Outbox::Remote(sender) => sender.send(message).await.is_ok(),
            Outbox::Local(sender) => sender.send(message).await.is_ok(),
        };
        if !sent {
            // The queue is closed: by our own shutdown (then `check` says `Stopping`), or by `to`.
            router.pending.check(to)?;
            return Err(RouteError::ShardStopped(to));
        }
        // Registered in the same poll as the send: no response can arrive before its entry.
        router.pending.register(call, to)?.await
    }

    /// Starts serving requests sent to this shard with `handler(from, request)`. Each request is
    /// handled in its own task, at most `max_concurrent_requests` at once; when all slots are busy
    /// the shard stops taking requests off its queues and the callers' queues fill up. A handler that
    /// panics answers its caller with `RouteError::HandlerFailed` and the shard goes on serving
    /// (the panic is logged; state the handler shares must tolerate an interrupted update).
    ///
    /// Handlers that call other shards must not form a cycle under load: two shards whose slots are
    /// all taken by handlers waiting on each other wait forever, as with any bounded resources.
    ///
    /// Panics if called twice on the same shard.
    pub fn serve<H, HFut>(&self, handler: H)
    where
        H: Fn(ShardId, Req) -> HFut + 'static,
        HFut: Future<Output = Resp> + 'static,
    {
        let router = &self.router;
        assert!(!router.served.replace(true), "{}: serve() called twice", router.id);
        let Some(inboxes) = router.inboxes.borrow_mut().take() else {
            tracing::warn!(shard = %router.id, "serve() called after the shard shut down");
            return;
        };
        let handler = Rc::new(handler);
        let intakes = inboxes
            .into_iter()
            .map(|(from, inbox)| glommio::spawn_local(intake(Rc::clone(router), from, inbox, Rc::clone(&handler))));
        router.tasks.borrow_mut().extend(intakes);
    }

    /// Completes once a stop of the runtime was requested: by a [`StopHandle`], or because a shard
    /// failed. Serving goes on until `shard_main` returns; `shard_main` decides how to wind down.
    pub async fn stopping(&self) {
        self.router.stop.stopped().await;
    }

    /// Whether a stop of the runtime was requested.
    pub fn is_stopping(&self) -> bool {
        self.router.stop.is_stopped()
    }

    /// A handle to request the stop of the whole runtime from this shard (or to pass elsewhere).
    pub fn stop_handle(&self) -> StopHandle {
        self.router.stop.clone()
    }

    /// Calls of this shard whose request is queued or being served elsewhere (a gauge).
    pub fn calls_in_flight(&self) -> usize {
        self.router.pending.len()
    }

    /// Requests this shard is serving now, at most `max_concurrent_requests` (a gauge).
    pub fn requests_in_service(&self) -> usize {
        self.router.in_service.get()
    }

    /// Closes this shard's side of the mesh, once `shard_main` has returned: our calls in flight
    /// fail with `Stopping`; peers see our queues close, so their calls to us fail with
    /// `ShardStopped` instead of hanging. Runs on the executor, so peers are woken.
    pub(crate) async fn shutdown(&self) {
        let router = &*self.router;
        router.pending.close();
        let outboxes = router.outboxes.borrow_mut().take();
        for outbox in outboxes.iter().flatten() {
            if let Outbox::Remote(sender) = outbox {
                sender.close();
            }
        }
        let reply_senders = router.reply_senders.borrow_mut().take();
        reply_senders.iter().flatten().flatten().for_each(|sender| sender.close());
        router.slots.close();
        drop(router.inboxes.borrow_mut().take());
        let tasks = std::mem::take(&mut *router.tasks.borrow_mut());
        for task in tasks {
            // Waits until the task is dropped, and with it the queue end it owns.
            task.cancel().await;
        }
        tracing::debug!(shard = %router.id, "routing shut down");
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Router<Req, Resp> {
    fn outbox(&self, to: ShardId) -> Option<Outbox<Req>> {
        self.outboxes.borrow().as_ref().map(|outboxes| outboxes[to.index()].clone())
    }

    fn reply_sender(&self, caller: ShardId) -> Option<ReplySender<Resp>> {
        self.reply_senders.borrow().as_ref().and_then(|senders| senders[caller.index()].clone())
    }

    /// Sends a handler's outcome back to the shard that called.
    async fn respond(&self, caller: ShardId, call: CallId, outcome: Result<Resp, String>) {
        if caller == self.id {
            let outcome = outcome.map_err(|reason| RouteError::HandlerFailed { shard: self.id, reason });
            self.pending.complete(call, outcome);
            return;
        }
        // After shutdown the caller learns from our closed queue that no answer will come.
        let Some(sender) = self.reply_sender(caller) else { return };
        if sender.send(Response { call, outcome }).await.is_err() {
            tracing::debug!(shard = %self.id, %caller, call, "caller stopped before its response was sent");
        }
    }
}

/// Takes requests off one queue, one serving slot each, and starts a handler task per request.
async fn intake<Req, Resp, H, HFut>(router: Rc<Router<Req, Resp>>, from: ShardId, inbox: Inbox<Req>, handler: Rc<H>)
where
    Req: Send + 'static,
    Resp: Send + 'static,
    H: Fn(ShardId, Req) -> HFut + 'static,
    HFut: Future<Output = Resp> + 'static,
{
    while let Some(request) = inbox.recv().await {
        let Ok(slot) = router.slots.acquire_static_permit(1).await else { break };
        glommio::spawn_local(serve_one(Rc::clone(&router), from, request, slot, Rc::clone(&handler))).detach();
    }
    tracing::debug!(shard = %router.id, %from, "request queue closed");
}

/// Runs one handler, catching its panic, and sends the outcome back. Holds its serving slot until
/// the response is queued, so slots also bound responses waiting for room.
async fn serve_one<Req, Resp, H, HFut>(
    router: Rc<Router<Req, Resp>>,
    from: ShardId,
    request: Request<Req>,
    slot: StaticPermit,
    handler: Rc<H>,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
    H: Fn(ShardId, Req) -> HFut + 'static,
    HFut: Future<Output = Resp> + 'static,
{
    let Request { call, body } = request;
    let outcome = {
        let _in_service = InService::enter(&router.in_service);
        AssertUnwindSafe(async { (*handler)(from, body).await }).catch_unwind().await
    };
    let outcome = outcome.map_err(|payload| panic_message(&*payload));
    if let Err(reason) = &outcome {
        tracing::error!(shard = %router.id, %from, call, %reason, "request handler panicked; its caller gets an error");
    }
    router.respond(from, call, outcome).await;
    drop(slot);
}

/// Completes our pending calls to `target` with the responses it sends; when its response queue
/// closes (it stopped), fails whatever it left unanswered.
async fn collect_responses<Req: Send + 'static, Resp: Send + 'static>(
    router: Rc<Router<Req, Resp>>,
    target: ShardId,
    responses: ConnectedReceiver<Response<Resp>>,
) {
    while let Some(Response { call, outcome }) = responses.recv().await {
        let outcome = outcome.map_err(|reason| RouteError::HandlerFailed { shard: target, reason });
        router.pending.complete(call, outcome);
    }
    tracing::debug!(shard = %router.id, %target, "response queue closed: target stopped");
    router.pending.stop_peer(target);
}

/// Waits for `peer`'s thread to end, then gives up on it: fails our calls to it, and closes our
/// queues to it so that tasks waiting for room in them wake up. Normally the peer closed its side
/// already (see `Shard::shutdown`); this covers a peer whose thread unwound without closing.
async fn watch_peer<Req: Send + 'static, Resp: Send + 'static>(
    router: Rc<Router<Req, Resp>>,
    peer: ShardId,
    ended: Arc<[Latch]>,
) {
    ended[peer.index()].wait().await;
    tracing::debug!(shard = %router.id, %peer, "peer thread ended");
    router.pending.stop_peer(peer);
    if let Some(Outbox::Remote(sender)) = router.outbox(peer) {
        sender.close();
    }
    if let Some(sender) = router.reply_sender(peer) {
        sender.close();
    }
}

/// Counts a running handler while alive.
struct InService<'a>(&'a Cell<usize>);

impl<'a> InService<'a> {
    fn enter(counter: &'a Cell<usize>) -> Self {
        counter.set(counter.get() + 1);
        InService(counter)
    }
}

impl Drop for InService<'_> {
    fn drop(&mut self) {
        let now = self.0.get();
        assert!(now > 0, "in-service counter underflow");
        self.0.set(now - 1);
    }
}
