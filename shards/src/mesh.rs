//! The mesh: one bounded request queue and one bounded response queue for every ordered pair of
//! distinct shards, built before the shard threads start and connected by each shard on its own
//! executor.
//!
//! glommio's `MeshBuilder` numbers peers by executor id, which is not the shard id. Here the matrix
//! is built explicitly, so index `i` of every per-peer vector *is* `ShardId(i)`; there is no mapping
//! to get wrong.

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use glommio::Task;

use crate::id::ShardId;

/// Names one outstanding call of the calling shard; unique per calling shard for its lifetime.
pub(crate) type CallId = u64;

/// What travels on a (from, to) request queue. The sender is implied by the queue.
pub(crate) struct Request<Req> {
    pub call: CallId,
    pub body: Req,
}

/// What travels back on the (to, from) response queue: the handler's answer, or the message of
/// the panic that stopped the handler.
pub(crate) struct Response<Resp> {
    pub call: CallId,
    pub outcome: Result<Resp, String>,
}

/// One shard's ends of the mesh, before its executor exists (this is what crosses to its thread).
/// Every vector has one entry per shard, indexed by peer id; the entry for the shard itself is `None`.
pub(crate) struct Endpoints<Req: Send, Resp: Send> {
    /// `[to]`: requests this shard sends.
    requests_out: Vec<Option<SharedSender<Request<Req>>>>,
    /// `[from]`: requests this shard receives.
    requests_in: Vec<Option<SharedReceiver<Request<Req>>>>,
    /// `[caller]`: responses this shard sends back.
    responses_out: Vec<Option<SharedSender<Response<Resp>>>>,
    /// `[target]`: responses this shard receives.
    responses_in: Vec<Option<SharedReceiver<Response<Resp>>>>,
}

/// One shard's connected ends of the mesh, usable on its executor only. Same layout as `Endpoints`.
pub(crate) struct Links<Req: Send, Resp: Send> {
    pub requests_out: Vec<Option<ConnectedSender<Request<Req>>>>,
    pub requests_in: Vec<Option<ConnectedReceiver<Request<Req>>>>,
    pub responses_out: Vec<Option<ConnectedSender<Response<Resp>>>>,
    pub responses_in: Vec<Option<ConnectedReceiver<Response<Resp>>>>,
}

/// Builds the full mesh for `shards` shards, queues of `capacity` messages each. Entry `i` of the
/// result belongs to `ShardId(i)`.
pub(crate) fn build<Req: Send, Resp: Send>(shards: usize, capacity: usize) -> Vec<Endpoints<Req, Resp>> {
    assert!(capacity.is_power_of_two(), "queue capacity {capacity} is not a power of two");
    let mut ends: Vec<Endpoints<Req, Resp>> = (0..shards)
        .map(|_| Endpoints {
            requests_out: none_vec(shards),
            requests_in: none_vec(shards),
            responses_out: none_vec(shards),
            responses_in: none_vec(shards),
        })
        .collect();
    for from in 0..shards {
        for to in (0..shards).filter(|&to| to != from) {
            let (sender, receiver) = shared_channel::new_bounded(capacity);
            ends[from].requests_out[to] = Some(sender);
            ends[to].requests_in[from] = Some(receiver);
            let (sender, receiver) = shared_channel::new_bounded(capacity);
            ends[to].responses_out[from] = Some(sender);
            ends[from].responses_in[to] = Some(receiver);
        }
    }
    ends
}

fn none_vec<T>(len: usize) -> Vec<Option<T>> {
    (0..len).map(|_| None).collect()
}

impl<Req: Send + 'static, Resp: Send + 'static> Endpoints<Req, Resp> {
    /// Connects every end. Completes once every peer has connected its side, that is once every
    /// shard's executor is up; it never completes if a peer never comes up, so the caller races it
    /// against an abort signal. Must run on this shard's executor.
    pub(crate) async fn connect(self, shard: ShardId) -> Links<Req, Resp> {
        // Connect all ends concurrently: connecting one end waits for the peer to connect the other,
        // and peers connect in their own order.
        let requests_out = spawn_each(self.requests_out, SharedSender::connect);
        let requests_in = spawn_each(self.requests_in, SharedReceiver::connect);
        let responses_out = spawn_each(self.responses_out, SharedSender::connect);
        let responses_in = spawn_each(self.responses_in, SharedReceiver::connect);
        let links = Links {
            requests_out: join_each(requests_out).await,
            requests_in: join_each(requests_in).await,
            responses_out: join_each(responses_out).await,
            responses_in: join_each(responses_in).await,
        };
        tracing::debug!(%shard, "mesh connected");
        links
    }
}

fn spawn_each<E, C, F>(ends: Vec<Option<E>>, connect: C) -> Vec<Option<Task<F::Output>>>
where
    C: Fn(E) -> F,
    F: std::future::Future + 'static,
{
    ends.into_iter().map(|end| end.map(|end| glommio::spawn_local(connect(end)))).collect()
}

async fn join_each<T>(tasks: Vec<Option<Task<T>>>) -> Vec<Option<T>> {
    let mut connected = Vec::with_capacity(tasks.len());
    for task in tasks {
        connected.push(match task {
            Some(task) => Some(task.await),
            None => None,
        });
    }
    connected
}
