//! The group coordinator on a shard: runs `crate::groups`' state machine for the groups whose
//! `__consumer_offsets` partition this shard owns, so membership checks and offset commits of a
//! group happen on one thread with no locks.
//!
//! A JoinGroup or SyncGroup that must wait (for the other members, for the leader's assignment)
//! parks under a token; the answer arrives on a one-slot channel when a later call or the timer
//! completes it. Parked calls hold a serving slot of this shard (bounded by
//! `max_concurrent_requests` and the members' rebalance timeouts). The timer advances the state
//! machine's clock every [`groups::TICK_MS`] while any group is live and sleeps otherwise.
//!
//! Group membership is kept in memory only: after a restart every member's id is unknown, its
//! heartbeat says so, and it rejoins (committed offsets are durable in the offsets log).

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::{
    broker::ShardState,
    groups::{
        self, Completion, Coordinator, GroupConfig, GroupDescription, GroupError, GroupState, JoinRequest,
        JoinResponse, Reply, SyncRequest, SyncResponse, Waiter,
    },
};

/// A group operation, sent to the shard that coordinates the group.
#[derive(Debug)]
pub enum GroupOp {
    Join {
        group: String,
        request: JoinRequest,
    },
    Sync {
        group: String,
        request: SyncRequest,
    },
    Heartbeat {
        group: String,
        member_id: String,
        generation: i32,
    },
    /// Members leaving: (member id, group instance id).
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    Describe {
        group: String,
    },
    /// Refused while the group has members; otherwise its committed offsets are deleted.
    Delete {
        group: String,
    },
}

#[derive(Debug)]
pub enum GroupAnswer {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(Result<(), GroupError>),
    Leave(Vec<Result<(), GroupError>>),
    Describe(GroupDescription),
    Delete(Result<(), GroupError>),
    /// The operation failed for a reason outside the group protocol (the offsets log).
    Failed(crate::routing::Failure),
}

/// One shard's coordinator with its parked callers and clock.
pub struct GroupService {
    coordinator: RefCell<Coordinator>,
    waiters: RefCell<HashMap<Waiter, LocalSender<Completion>>>,
    next_waiter: Cell<Waiter>,
    started: Instant,
    /// Rung when the coordinator may have gone from idle to busy, to wake the idle timer.
    bell: (LocalSender<()>, LocalReceiver<()>),
}

impl GroupService {
    pub fn new(config: GroupConfig, member_prefix: String) -> Self {
        GroupService {
            coordinator: RefCell::new(Coordinator::new(config, member_prefix)),
            waiters: RefCell::default(),
            next_waiter: Cell::new(0),
            started: Instant::now(),
            bell: local_channel::new_bounded(1),
        }
    }

    /// The state machine's clock: milliseconds since this shard started (monotonic).
    fn now(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    fn park(&self) -> (Waiter, LocalReceiver<Completion>) {
        let waiter = self.next_waiter.get();
        self.next_waiter.set(waiter + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiters.borrow_mut().insert(waiter, tx);
        (waiter, rx)
    }

    /// Hands the coordinator's answers to their parked callers.
    fn deliver(&self) {
        let completions = self.coordinator.borrow_mut().take_completions();
        let mut waiters = self.waiters.borrow_mut();
        for completion in completions {
            let waiter = match &completion {
                Completion::Join(w, _) | Completion::Sync(w, _) => *w,
            };
            // Every token is answered once: a second answer would be a coordinator bug.
            let tx = waiters.remove(&waiter);
            debug_assert!(tx.is_some(), "token {waiter} answered twice or never handed out");
            if let Some(tx) = tx {
                let _ = tx.try_send(completion); // the one slot is free
            }
        }
    }

    /// After an operation that may have made a group live: wakes the timer if it sleeps idle.
    /// (Only operations ring, never the timer itself, or an idle timer would spin.)
    fn wake_timer(&self) {
        let _ = self.bell.0.try_send(()); // full: a ring is already pending
    }

    /// Runs `op` with a fresh waiter token: its answer now, or once a later call or the timer
    /// completes the token (`None`: the coordinator went away first, at shutdown).
    async fn call_parking<T>(
        &self,
        op: impl FnOnce(&mut Coordinator, Waiter, i64) -> Reply<T>,
    ) -> Result<T, Option<Completion>> {
        let (waiter, rx) = self.park();
        let reply = op(&mut self.coordinator.borrow_mut(), waiter, self.now());
        self.deliver();
        self.wake_timer();
        match reply {
            Reply::Now(response) => {
                self.waiters.borrow_mut().remove(&waiter);
                Ok(response)
            }
            Reply::Parked => Err(rx.recv().await),
        }
    }

    async fn join(&self, group: &str, request: JoinRequest) -> JoinResponse {
        let member_id = request.member_id.clone();
        match self.call_parking(|c, waiter, now| c.join(group, request, waiter, now)).await {
            Ok(response) | Err(Some(Completion::Join(_, response))) => response,
            Err(Some(other)) => unreachable!("a join parked under a token answered as {other:?}"),
            Err(None) => JoinResponse::refused(GroupError::NotCoordinator, member_id),
        }
    }

    async fn sync(&self, group: &str, request: SyncRequest) -> SyncResponse {
        match self.call_parking(|c, waiter, now| c.sync(group, request, waiter, now)).await {
            Ok(response) | Err(Some(Completion::Sync(_, response))) => response,
            Err(Some(other)) => unreachable!("a sync parked under a token answered as {other:?}"),
            Err(None) => SyncResponse::refused(GroupError::NotCoordinator),
        }
    }

    fn heartbeat(&self, group: &str, member_id: &str, generation: i32) -> Result<(), GroupError> {
        let result = self.coordinator.borrow_mut().heartbeat(group, member_id, generation, self.now());
        self.deliver();
        result
    }

    fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<Result<(), GroupError>> {
        let now = self.now();
        let results = members
            .iter()
            .map(|(member, instance)| self.coordinator.borrow_mut().leave(group, member, instance.as_deref(), now))
            .collect();
        self.deliver();
        results
    }

    /// Checks a commit against the group's membership (see [`Coordinator::validate_commit`]).
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        has_instance_id: bool,
    ) -> Result<(), GroupError> {
        self.coordinator.borrow_mut().validate_commit(group, member_id, generation, has_instance_id, self.now())
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        self.coordinator.borrow().describe(group)
    }

    /// Live groups: (id, state, protocol type).
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        self.coordinator.borrow().list()
    }

    /// Shutdown: parked callers are answered NOT_COORDINATOR (their clients look the coordinator
    /// up again and retry once the broker is back).
    pub fn shutdown(&self) {
        self.coordinator.borrow_mut().abandon_all();
        self.deliver();
        self.waiters.borrow_mut().clear();
    }

    /// Advances the clock until the shard stops: every tick while a group is live, else asleep
    /// until a group operation rings.
    pub async fn run_timer(&self, state: &ShardState) {
        while !state.shard.is_stopping() {
            let idle = self.coordinator.borrow().is_idle();
            let go_on = future::or(
                async {
                    if idle {
                        self.bell.1.recv().await.is_some()
                    } else {
                        glommio::timer::sleep(Duration::from_millis(groups::TICK_MS)).await;
                        true
                    }
                },
                async {
                    state.shard.stopping().await;
                    false
                },
            )
            .await;
            if !go_on {
                return;
            }
            self.coordinator.borrow_mut().tick(self.now());
            self.deliver();
        }
    }
}

/// Serves a group operation routed to this shard.
pub async fn handle(state: &ShardState, op: GroupOp) -> GroupAnswer {
    let groups = &state.groups;
    match op {
        GroupOp::Join { group, request } => GroupAnswer::Join(groups.join(&group, request).await),
        GroupOp::Sync { group, request } => GroupAnswer::Sync(groups.sync(&group, request).await),
        GroupOp::Heartbeat { group, member_id, generation } => {
            GroupAnswer::Heartbeat(groups.heartbeat(&group, &member_id, generation))
        }
        GroupOp::Leave { group, members } => GroupAnswer::Leave(groups.leave(&group, &members)),
        GroupOp::Describe { group } => GroupAnswer::Describe(describe(state, &group)),
        GroupOp::Delete { group } => {
            if let Err(e) = groups.coordinator.borrow_mut().delete(&group) {
                return GroupAnswer::Delete(Err(e));
            }
            match crate::broker::delete_group_offsets(state, &group).await {
                Ok(0) => GroupAnswer::Delete(Err(GroupError::GroupIdNotFound)),
                Ok(_) => GroupAnswer::Delete(Ok(())),
                Err(failure) => GroupAnswer::Failed(failure),
            }
        }
    }
}

/// A live group as it is; a group known only by its committed offsets is an Empty consumer
/// group; anything else is Dead.
fn describe(state: &ShardState, group: &str) -> GroupDescription {
    if let Some(described) = state.groups.describe(group) {
        return described;
    }
    let partition = crate::offsets::partition_for_group(group);
    let has_commits = !state.offsets.borrow().group(partition, group).is_empty();
    GroupDescription {
        state: if has_commits { GroupState::Empty } else { GroupState::Dead },
        protocol_type: if has_commits { "consumer".into() } else { String::new() },
        protocol: String::new(),
        members: Vec::new(),
    }
}
