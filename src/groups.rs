//! Consumer group membership (Kafka's classic group protocol): who is in a group, which
//! generation it is in, who leads it, and the assignment the leader handed out.
//!
//! This is the state machine only — no I/O, no clock, no executor: every call takes the time
//! (`now`, milliseconds) and answers at once, or *parks* the caller under a [`Waiter`] token and
//! answers later through [`Coordinator::take_completions`]. `crate::coordinator` runs it on the
//! shard that owns the group's `__consumer_offsets` partition (so commits and membership are
//! checked on one thread) and turns tokens into wakeups; a simulator can drive it with its own
//! clock.
//!
//! States, as in Kafka (`GroupMetadata.scala`):
//! - **Empty**: no members. Kept in memory only while someone is pending; an Empty group without
//!   members is forgotten (its committed offsets stay in the offsets log).
//! - **PreparingRebalance**: a member joined, left, failed or changed its protocols; everyone
//!   must send JoinGroup again. Completes when every member has rejoined (and no member id handed
//!   out by MEMBER_ID_REQUIRED is outstanding), or at the rebalance timeout, dropping those who did
//!   not rejoin. A group formed from Empty first waits `initial_rebalance_delay_ms` (extended
//!   while new members keep arriving, up to the rebalance timeout) so a fleet of consumers
//!   starting together forms one generation, not one per arrival.
//! - **CompletingRebalance**: the join answers went out (the leader got the member list); waiting
//!   for the leader's SyncGroup with the assignment. Members that do not sync within the rebalance
//!   timeout are dropped and the group rebalances again.
//! - **Stable**: assignment handed out; members heartbeat within their session timeout or are
//!   dropped (which starts a rebalance).
//!
//! Member ids are `<client id>-<prefix>-<sequence>`: unique for the life of the process (the
//! prefix differs per start and per shard), so a member id from before a restart is unknown after
//! it and its owner rejoins. Static membership (`group.instance.id`) is recorded and reported but
//! members are treated as dynamic: a restarted static member joins as a new member.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Token for a parked JoinGroup or SyncGroup caller.
pub type Waiter = u64;

/// Limits and delays of the coordinator (Kafka's `group.*` broker settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub min_session_timeout_ms: i32,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub max_session_timeout_ms: i32,
    /// How long a group formed from Empty waits for more members (`group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: i64,
    /// Most members (and pending member ids) in one group (`group.max.size`).
    pub max_group_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_group_size: 1_000,
        }
    }
}

/// Why a group operation was refused (each is a Kafka error code of the same name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupError {
    InvalidGroupId,
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    /// Not a failure: the member id to send JoinGroup again with.
    MemberIdRequired,
    GroupMaxSizeReached,
    NonEmptyGroup,
    GroupIdNotFound,
    /// The coordinator is going away (shutdown); the client finds it again and retries.
    NotCoordinator,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    /// A group that does not exist (DescribeGroups' answer for an unknown id).
    Dead,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    /// The answer to a join that is refused (or told MEMBER_ID_REQUIRED with `member_id`).
    pub fn refused(error: GroupError, member_id: String) -> Self {
        JoinResponse {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub generation: i32,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment per member (others send none).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn refused(error: GroupError) -> Self {
        SyncResponse { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// An answer now, or later under the caller's [`Waiter`].
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<T> {
    Now(T),
    Parked,
}

/// A parked caller's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    Join(Waiter, JoinResponse),
    Sync(Waiter, SyncResponse),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the group's protocol (empty while none is chosen).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Last sign of life: a join, sync, heartbeat or commit.
    last_seen: i64,
    /// Order of arrival, to pick a leader when the old one is gone.
    arrival: u64,
    join_waiter: Option<Waiter>,
    sync_waiter: Option<Waiter>,
}

impl Member {
    fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(name, _)| name == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// While a group formed from Empty waits for more members.
#[derive(Debug)]
struct InitialDelay {
    /// Rebalance time left after the current delay.
    remaining_ms: i64,
    new_member_added: bool,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when they expire.
    pending: HashMap<String, i64>,
    /// End of the current phase: the join deadline (PreparingRebalance) or the sync deadline
    /// (CompletingRebalance).
    deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            deadline: None,
            initial_delay: None,
        }
    }

    fn forgettable(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// Protocols every member supports, in the first member's order.
    fn candidates(&self) -> Vec<&str> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return Vec::new() };
        let rest: Vec<&Member> = members.collect();
        first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| rest.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
            .collect()
    }

    /// Whether a member with these protocols may be in the group (Kafka's `supportsProtocols`).
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self.candidates().iter().any(|c| protocols.iter().any(|(n, _)| n == c))
    }

    /// Each member votes for its most preferred candidate; most votes wins (ties: candidate order).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes = vec![0usize; candidates.len()];
        for member in self.members.values() {
            if let Some(i) = member.protocols.iter().find_map(|(name, _)| candidates.iter().position(|c| c == name)) {
                votes[i] += 1;
            }
        }
        let best = votes.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?.0;
        candidates.get(best).map(|s| s.to_string())
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn join_response(&self, member_id: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata_for(self.protocol.as_deref()),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }
}

/// Every group coordinated by one shard.
#[derive(Debug)]
pub struct Coordinator {
    config: GroupConfig,
    groups: HashMap<String, Group>,
    member_prefix: String,
    next_member: u64,
    completions: Vec<Completion>,
}

impl Coordinator {
    /// `member_prefix` makes member ids unique across shards and restarts.
    pub fn new(config: GroupConfig, member_prefix: impl Into<String>) -> Self {
        Coordinator {
            config,
            groups: HashMap::new(),
            member_prefix: member_prefix.into(),
            next_member: 0,
            completions: Vec::new(),
        }
    }

    /// Whether any group is held (the shard's timer has nothing to do otherwise).
    pub fn is_idle(&self) -> bool {
        self.groups.is_empty()
    }

    /// Answers for parked callers produced by the last calls.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    pub fn join(&mut self, group_id: &str, req: JoinRequest, waiter: Waiter, now: i64) -> Reply<JoinResponse> {
        if !crate::offsets::valid_group(group_id) {
            return Reply::Now(JoinResponse::refused(GroupError::InvalidGroupId, req.member_id));
        }
        let session = req.session_timeout_ms;
        if session < self.config.min_session_timeout_ms || session > self.config.max_session_timeout_ms {
            return Reply::Now(JoinResponse::refused(GroupError::InvalidSessionTimeout, req.member_id));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Reply::Now(JoinResponse::refused(GroupError::InconsistentGroupProtocol, req.member_id));
        }
        let reply = self.join_group(group_id, req, waiter, now);
        self.forget_if_empty(group_id);
        reply
    }

    fn join_group(&mut self, group_id: &str, req: JoinRequest, waiter: Waiter, now: i64) -> Reply<JoinResponse> {
        let group = self.groups.entry(group_id.to_string()).or_insert_with(Group::new);
        if !group.supports(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinResponse::refused(GroupError::InconsistentGroupProtocol, req.member_id));
        }
        if req.member_id.is_empty() {
            if group.members.len() + group.pending.len() >= self.config.max_group_size {
                return Reply::Now(JoinResponse::refused(GroupError::GroupMaxSizeReached, String::new()));
            }
            self.next_member += 1;
            let client = if req.client_id.is_empty() { "member" } else { req.client_id.as_str() };
            let id = format!("{client}-{}-{}", self.member_prefix, self.next_member);
            if req.require_known_member_id {
                group.pending.insert(id.clone(), now + i64::from(req.session_timeout_ms));
                return Reply::Now(JoinResponse::refused(GroupError::MemberIdRequired, id));
            }
            return Self::add_member(&self.config, &mut self.completions, group, id, req, waiter, now);
        }
        let id = req.member_id.clone();
        if group.pending.remove(&id).is_some() {
            return Self::add_member(&self.config, &mut self.completions, group, id, req, waiter, now);
        }
        let Some(member) = group.members.get_mut(&id) else {
            return Reply::Now(JoinResponse::refused(GroupError::UnknownMemberId, id));
        };
        member.last_seen = now;
        let unchanged = member.protocols == req.protocols;
        let is_leader = group.leader.as_deref() == Some(id.as_str());
        match group.state {
            GroupState::CompletingRebalance if unchanged => Reply::Now(group.join_response(&id)),
            GroupState::Stable if unchanged && !is_leader => Reply::Now(group.join_response(&id)),
            GroupState::PreparingRebalance | GroupState::CompletingRebalance | GroupState::Stable => {
                let member = group.members.get_mut(&id).expect("looked up above");
                member.protocols = req.protocols;
                member.protocol_type = req.protocol_type;
                member.session_timeout_ms = i64::from(req.session_timeout_ms);
                member.rebalance_timeout_ms = i64::from(req.rebalance_timeout_ms.max(req.session_timeout_ms));
                if let Some(old) = member.join_waiter.replace(waiter) {
                    let error = JoinResponse::refused(GroupError::RebalanceInProgress, id.clone());
                    self.completions.push(Completion::Join(old, error));
                }
                if group.state != GroupState::PreparingRebalance {
                    Self::prepare_rebalance(&self.config, &mut self.completions, group, now);
                }
                Self::try_complete_join(&mut self.completions, group, now);
                Reply::Parked
            }
            GroupState::Empty | GroupState::Dead => Reply::Now(JoinResponse::refused(GroupError::UnknownMemberId, id)),
        }
    }

    fn add_member(
        config: &GroupConfig,
        completions: &mut Vec<Completion>,
        group: &mut Group,
        id: String,
        req: JoinRequest,
        waiter: Waiter,
        now: i64,
    ) -> Reply<JoinResponse> {
        let arrival = group.members.values().map(|m| m.arrival + 1).max().unwrap_or(0);
        group.members.insert(
            id,
            Member {
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: i64::from(req.session_timeout_ms),
                // v0 has no rebalance timeout: the session timeout stands for it, as in Kafka.
                rebalance_timeout_ms: i64::from(req.rebalance_timeout_ms.max(req.session_timeout_ms)),
                protocol_type: req.protocol_type.clone(),
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                arrival,
                join_waiter: Some(waiter),
                sync_waiter: None,
            },
        );
        if group.protocol_type.is_none() {
            group.protocol_type = Some(req.protocol_type);
        }
        if let Some(delay) = &mut group.initial_delay {
            delay.new_member_added = true;
        }
        if group.state != GroupState::PreparingRebalance {
            Self::prepare_rebalance(config, completions, group, now);
        }
        Self::try_complete_join(completions, group, now);
        Reply::Parked
    }

    /// Everyone must rejoin: parked syncs are told so, assignments are dropped, and the join
    /// phase gets its deadline.
    fn prepare_rebalance(config: &GroupConfig, completions: &mut Vec<Completion>, group: &mut Group, now: i64) {
        if group.state == GroupState::CompletingRebalance {
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(w) = member.sync_waiter.take() {
                    completions.push(Completion::Sync(w, SyncResponse::refused(GroupError::RebalanceInProgress)));
                }
            }
        }
        let rebalance = group.max_rebalance_timeout();
        if group.state == GroupState::Empty {
            let delay = config.initial_rebalance_delay_ms.min(rebalance);
            group.initial_delay = Some(InitialDelay { remaining_ms: rebalance - delay, new_member_added: false });
            group.deadline = Some(now + delay);
        } else {
            group.initial_delay = None;
            group.deadline = Some(now + rebalance);
        }
        group.state = GroupState::PreparingRebalance;
    }

    fn try_complete_join(completions: &mut Vec<Completion>, group: &mut Group, now: i64) {
        if group.state == GroupState::PreparingRebalance && group.initial_delay.is_none() && group.all_joined() {
            Self::complete_join(completions, group, now);
        }
    }

    /// The join phase ends: members that did not rejoin are dropped, the next generation starts
    /// and every rejoined member gets its answer (the leader with the member list).
    fn complete_join(completions: &mut Vec<Completion>, group: &mut Group, now: i64) {
        group.members.retain(|_, m| m.join_waiter.is_some());
        group.generation += 1;
        group.initial_delay = None;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol = None;
            group.protocol_type = None;
            group.leader = None;
            group.deadline = None;
            return;
        }
        group.protocol = group.select_protocol();
        if !group.leader.as_ref().is_some_and(|l| group.members.contains_key(l)) {
            group.leader = group.members.iter().min_by_key(|(_, m)| m.arrival).map(|(id, _)| id.clone());
        }
        group.state = GroupState::CompletingRebalance;
        group.deadline = Some(now + group.max_rebalance_timeout());
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let response = group.join_response(&id);
            let member = group.members.get_mut(&id).expect("listed above");
            member.last_seen = now;
            if let Some(w) = member.join_waiter.take() {
                completions.push(Completion::Join(w, response));
            }
        }
    }

    pub fn sync(&mut self, group_id: &str, req: SyncRequest, waiter: Waiter, now: i64) -> Reply<SyncResponse> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Reply::Now(SyncResponse::refused(GroupError::UnknownMemberId));
        };
        let Some(member) = group.members.get_mut(&req.member_id) else {
            return Reply::Now(SyncResponse::refused(GroupError::UnknownMemberId));
        };
        if req.generation != group.generation {
            return Reply::Now(SyncResponse::refused(GroupError::IllegalGeneration));
        }
        let mismatch = |given: &Option<String>, ours: &Option<String>| given.is_some() && given != ours;
        if mismatch(&req.protocol_type, &group.protocol_type) || mismatch(&req.protocol_name, &group.protocol) {
            return Reply::Now(SyncResponse::refused(GroupError::InconsistentGroupProtocol));
        }
        member.last_seen = now;
        match group.state {
            GroupState::Empty | GroupState::Dead => Reply::Now(SyncResponse::refused(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Now(SyncResponse::refused(GroupError::RebalanceInProgress)),
            GroupState::Stable => Reply::Now(SyncResponse {
                error: None,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol.clone(),
                assignment: member.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                if let Some(old) = member.sync_waiter.replace(waiter) {
                    self.completions
                        .push(Completion::Sync(old, SyncResponse::refused(GroupError::RebalanceInProgress)));
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    let assignments: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    group.state = GroupState::Stable;
                    group.deadline = None;
                    for (id, member) in &mut group.members {
                        member.assignment = assignments.get(id).cloned().unwrap_or_default();
                        member.last_seen = now;
                        if let Some(w) = member.sync_waiter.take() {
                            self.completions.push(Completion::Sync(
                                w,
                                SyncResponse {
                                    error: None,
                                    protocol_type: group.protocol_type.clone(),
                                    protocol_name: group.protocol.clone(),
                                    assignment: member.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
                Reply::Parked
            }
        }
    }

    pub fn heartbeat(&mut self, group_id: &str, member_id: &str, generation: i32, now: i64) -> Result<(), GroupError> {
        let group = self.groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        let member = group.members.get_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
        if generation != group.generation {
            return Err(GroupError::IllegalGeneration);
        }
        member.last_seen = now;
        match group.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// A member leaves (by id, or by its `group.instance.id` when the id is empty).
    pub fn leave(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        now: i64,
    ) -> Result<(), GroupError> {
        let group = self.groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        let id = match (member_id, group_instance_id) {
            ("", Some(instance)) => group
                .members
                .iter()
                .find(|(_, m)| m.group_instance_id.as_deref() == Some(instance))
                .map(|(id, _)| id.clone())
                .ok_or(GroupError::UnknownMemberId)?,
            (id, _) => id.to_string(),
        };
        if group.pending.remove(&id).is_some() {
            Self::try_complete_join(&mut self.completions, group, now);
        } else {
            Self::remove_member(&self.config, &mut self.completions, group, &id, now)?;
        }
        self.forget_if_empty(group_id);
        Ok(())
    }

    fn remove_member(
        config: &GroupConfig,
        completions: &mut Vec<Completion>,
        group: &mut Group,
        id: &str,
        now: i64,
    ) -> Result<(), GroupError> {
        let member = group.members.remove(id).ok_or(GroupError::UnknownMemberId)?;
        if let Some(w) = member.join_waiter {
            completions.push(Completion::Join(w, JoinResponse::refused(GroupError::UnknownMemberId, id.to_string())));
        }
        if let Some(w) = member.sync_waiter {
            completions.push(Completion::Sync(w, SyncResponse::refused(GroupError::UnknownMemberId)));
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                Self::prepare_rebalance(config, completions, group, now);
                Self::try_complete_join(completions, group, now);
            }
            GroupState::PreparingRebalance => Self::try_complete_join(completions, group, now),
            GroupState::Empty | GroupState::Dead => {}
        }
        Ok(())
    }

    /// Checks an offset commit against the group (Kafka's `validateOffsetCommit`); a member's
    /// commit counts as a sign of life. `generation < 0` with no member: a commit by a client
    /// that manages its own partitions, allowed while the group has no members.
    pub fn validate_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        has_instance_id: bool,
        now: i64,
    ) -> Result<(), GroupError> {
        let Some(group) = self.groups.get_mut(group_id) else {
            // No live group: a member of an old generation (or of a coordinator before a restart)
            // must rejoin first.
            return if generation < 0 { Ok(()) } else { Err(GroupError::IllegalGeneration) };
        };
        if generation >= 0 || !member_id.is_empty() || has_instance_id {
            let member = group.members.get_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
            if generation != group.generation {
                return Err(GroupError::IllegalGeneration);
            }
            if group.state == GroupState::CompletingRebalance {
                return Err(GroupError::RebalanceInProgress);
            }
            member.last_seen = now;
            Ok(())
        } else if group.members.is_empty() {
            Ok(())
        } else {
            // Only members commit for a group with members.
            Err(GroupError::UnknownMemberId)
        }
    }

    /// The group's state and members; `None` if no live group has this id.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.groups.get(group_id)?;
        let protocol = group.protocol.as_deref();
        Some(GroupDescription {
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: group.protocol.clone().unwrap_or_default(),
            members: group
                .members
                .iter()
                .map(|(id, m)| DescribedMember {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Live groups: (id, state, protocol type).
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let mut groups: Vec<_> = self
            .groups
            .iter()
            .map(|(id, g)| (id.clone(), g.state, g.protocol_type.clone().unwrap_or_default()))
            .collect();
        groups.sort();
        groups
    }

    /// Refuses to delete a group with members (NON_EMPTY_GROUP); otherwise forgets it.
    pub fn delete(&mut self, group_id: &str) -> Result<(), GroupError> {
        match self.groups.get(group_id) {
            Some(g) if !g.members.is_empty() || !g.pending.is_empty() => Err(GroupError::NonEmptyGroup),
            _ => {
                self.groups.remove(group_id);
                Ok(())
            }
        }
    }

    /// Advances time: expired sessions and pending ids are dropped, phases past their deadline
    /// end. Call it regularly (the shard does, every [`TICK_MS`]).
    pub fn tick(&mut self, now: i64) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let group = self.groups.get_mut(&id).expect("listed above");
            let before = group.pending.len();
            group.pending.retain(|_, expiry| *expiry > now);
            if group.pending.len() != before {
                Self::try_complete_join(&mut self.completions, group, now);
            }
            // A member parked in JoinGroup or SyncGroup is alive: it is waiting on us.
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none() && m.sync_waiter.is_none() && m.last_seen + m.session_timeout_ms <= now
                })
                .map(|(id, _)| id.clone())
                .collect();
            for member in expired {
                let _ = Self::remove_member(&self.config, &mut self.completions, group, &member, now);
            }
            if group.deadline.is_some_and(|d| d <= now) {
                match group.state {
                    GroupState::PreparingRebalance => match &mut group.initial_delay {
                        Some(delay) if delay.new_member_added && delay.remaining_ms > 0 => {
                            let extension = self.config.initial_rebalance_delay_ms.min(delay.remaining_ms);
                            delay.remaining_ms -= extension;
                            delay.new_member_added = false;
                            group.deadline = Some(now + extension);
                        }
                        _ => Self::complete_join(&mut self.completions, group, now),
                    },
                    GroupState::CompletingRebalance => {
                        // The leader's assignment never came: drop who did not sync, start over.
                        let silent: Vec<String> = group
                            .members
                            .iter()
                            .filter(|(_, m)| m.sync_waiter.is_none())
                            .map(|(id, _)| id.clone())
                            .collect();
                        for member in &silent {
                            group.members.remove(member);
                        }
                        Self::prepare_rebalance(&self.config, &mut self.completions, group, now);
                        Self::try_complete_join(&mut self.completions, group, now);
                    }
                    _ => group.deadline = None,
                }
            }
            self.forget_if_empty(&id);
        }
    }

    /// Shutdown: every parked caller is told to find the coordinator again.
    pub fn abandon_all(&mut self) {
        for group in self.groups.values_mut() {
            for (id, member) in &mut group.members {
                if let Some(w) = member.join_waiter.take() {
                    self.completions
                        .push(Completion::Join(w, JoinResponse::refused(GroupError::NotCoordinator, id.clone())));
                }
                if let Some(w) = member.sync_waiter.take() {
                    self.completions.push(Completion::Sync(w, SyncResponse::refused(GroupError::NotCoordinator)));
                }
            }
        }
    }

    fn forget_if_empty(&mut self, group_id: &str) {
        if self.groups.get(group_id).is_some_and(Group::forgettable) {
            self.groups.remove(group_id);
        }
    }
}

/// How often the shard advances the coordinator's clock (session timeouts are seconds).
pub const TICK_MS: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    fn config() -> GroupConfig {
        GroupConfig { initial_rebalance_delay_ms: 500, max_group_size: 4, ..GroupConfig::default() }
    }

    fn join_req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
            require_known_member_id: true,
        }
    }

    /// The MEMBER_ID_REQUIRED round trip: the id to join with.
    fn new_member(c: &mut Coordinator, now: i64) -> String {
        match c.join("g", join_req("", &["range"]), 0, now) {
            Reply::Now(JoinResponse { error: Some(GroupError::MemberIdRequired), member_id, .. }) => member_id,
            other => panic!("{other:?}"),
        }
    }

    fn joins(c: &mut Coordinator) -> HashMap<Waiter, JoinResponse> {
        c.take_completions()
            .into_iter()
            .map(|done| match done {
                Completion::Join(w, r) => (w, r),
                other => panic!("expected a join answer, got {other:?}"),
            })
            .collect()
    }

    fn syncs(c: &mut Coordinator) -> HashMap<Waiter, SyncResponse> {
        c.take_completions()
            .into_iter()
            .map(|done| match done {
                Completion::Sync(w, r) => (w, r),
                other => panic!("expected a sync answer, got {other:?}"),
            })
            .collect()
    }

    fn sync_req(member: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
        SyncRequest {
            member_id: member.into(),
            generation,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        }
    }

    /// Two members form generation 1 and get their assignments; returns (leader, follower).
    fn stable_pair(c: &mut Coordinator) -> (String, String) {
        let a = new_member(c, 0);
        let b = new_member(c, 0);
        assert_ne!(a, b);
        assert_eq!(c.join("g", join_req(&a, &["range"]), 1, 10), Reply::Parked);
        assert_eq!(c.join("g", join_req(&b, &["range"]), 2, 20), Reply::Parked);
        c.tick(400);
        assert!(c.take_completions().is_empty(), "the initial delay holds the join");
        c.tick(510);
        assert!(c.take_completions().is_empty(), "b arrived during the delay: it is extended once");
        c.tick(1010);
        let answers = joins(c);
        let (leader, follower) = (&answers[&1], &answers[&2]);
        assert_eq!((leader.generation, follower.generation), (1, 1));
        assert_eq!(leader.leader, a, "the first to arrive leads");
        assert_eq!(leader.members.len(), 2);
        assert_eq!(leader.members[0].metadata, Bytes::from("meta-range"));
        assert!(follower.members.is_empty(), "only the leader gets the member list");
        assert_eq!(follower.protocol_name.as_deref(), Some("range"));
        assert_eq!(c.describe("g").unwrap().state, GroupState::CompletingRebalance);

        assert_eq!(c.sync("g", sync_req(&b, 1, &[]), 3, 1100), Reply::Parked);
        assert_eq!(c.heartbeat("g", &b, 1, 1100), Ok(()), "heartbeats while completing are fine");
        assert_eq!(c.sync("g", sync_req(&a, 1, &[(&a, "A"), (&b, "B")]), 4, 1110), Reply::Parked);
        let answers = syncs(c);
        assert_eq!(answers[&3].assignment, Bytes::from("B"));
        assert_eq!(answers[&4].assignment, Bytes::from("A"));
        assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
        (a, b)
    }

    #[test]
    fn members_join_sync_and_heartbeat() {
        let mut c = Coordinator::new(config(), "t");
        let (a, b) = stable_pair(&mut c);
        assert_eq!(c.heartbeat("g", &a, 1, 1700), Ok(()));
        assert_eq!(c.heartbeat("g", &a, 0, 1700), Err(GroupError::IllegalGeneration));
        assert_eq!(c.heartbeat("g", "stranger", 1, 1700), Err(GroupError::UnknownMemberId));
        assert_eq!(c.heartbeat("other", &a, 1, 1700), Err(GroupError::UnknownMemberId));
        // A late sync in Stable gets the stored assignment at once.
        match c.sync("g", sync_req(&b, 1, &[]), 9, 1800) {
            Reply::Now(r) => assert_eq!((r.error, r.assignment), (None, Bytes::from("B"))),
            other => panic!("{other:?}"),
        }
        // A follower rejoining unchanged in Stable gets the current generation at once.
        match c.join("g", join_req(&b, &["range"]), 10, 1900) {
            Reply::Now(r) => assert_eq!((r.error, r.generation, r.leader), (None, 1, a.clone())),
            other => panic!("{other:?}"),
        }
        let described = c.describe("g").unwrap();
        assert_eq!((described.protocol_type.as_str(), described.protocol.as_str()), ("consumer", "range"));
        assert_eq!(described.members.len(), 2);
        assert_eq!(c.list(), vec![("g".to_string(), GroupState::Stable, "consumer".to_string())]);
    }

    #[test]
    fn a_new_member_makes_everyone_rejoin_and_old_generations_cannot_commit() {
        let mut c = Coordinator::new(config(), "t");
        let (a, b) = stable_pair(&mut c);
        assert_eq!(c.validate_commit("g", &b, 1, false, 2000), Ok(()));
        let n = new_member(&mut c, 2000);
        assert_eq!(c.join("g", join_req(&n, &["range"]), 20, 2000), Reply::Parked);
        assert_eq!(c.describe("g").unwrap().state, GroupState::PreparingRebalance);
        assert_eq!(c.heartbeat("g", &a, 1, 2100), Err(GroupError::RebalanceInProgress));
        // Commits of the current generation are still accepted while preparing (a consumer commits
        // what it processed before giving its partitions up).
        assert_eq!(c.validate_commit("g", &a, 1, false, 2100), Ok(()));
        assert_eq!(c.validate_commit("g", "", -1, false, 2100), Err(GroupError::UnknownMemberId));
        assert_eq!(c.join("g", join_req(&a, &["range"]), 21, 2200), Reply::Parked);
        assert!(c.take_completions().is_empty(), "b has not rejoined yet");
        assert_eq!(c.join("g", join_req(&b, &["range"]), 22, 2300), Reply::Parked);
        let answers = joins(&mut c);
        assert_eq!(answers.len(), 3, "all three rejoined: the join completes at once");
        assert!(answers.values().all(|r| r.generation == 2 && r.leader == a));
        assert_eq!(answers[&21].members.len(), 3);
        assert_eq!(c.validate_commit("g", &b, 1, false, 2400), Err(GroupError::IllegalGeneration));
        assert_eq!(c.validate_commit("g", &b, 2, false, 2400), Err(GroupError::RebalanceInProgress));
        assert_eq!(c.sync("g", sync_req(&a, 2, &[]), 23, 2500), Reply::Parked);
        assert_eq!(c.validate_commit("g", &b, 1, false, 2600), Err(GroupError::IllegalGeneration));
        assert_eq!(c.validate_commit("g", &b, 2, false, 2600), Ok(()));
    }

    #[test]
    fn silent_members_are_dropped_by_session_and_rebalance_timeouts() {
        let mut c = Coordinator::new(config(), "t");
        let (a, b) = stable_pair(&mut c);
        // The leader's sync at 1110 counted for everyone; then a keeps heartbeating and b goes
        // silent: b's session ends 10 s after 1110.
        for t in (2_000..=11_000).step_by(1_000) {
            assert_eq!(c.heartbeat("g", &a, 1, t), Ok(()));
            c.tick(t);
        }
        assert_eq!(c.describe("g").unwrap().members.len(), 2);
        c.tick(11_110);
        assert_eq!(c.heartbeat("g", &a, 1, 11_200), Err(GroupError::RebalanceInProgress));
        assert_eq!(c.heartbeat("g", &b, 1, 11_200), Err(GroupError::UnknownMemberId), "b is gone");
        assert_eq!(c.join("g", join_req(&a, &["range"]), 30, 11_300), Reply::Parked);
        let answers = joins(&mut c);
        assert_eq!((answers[&30].generation, answers[&30].members.len()), (2, 1));

        // A new member joins; a keeps heartbeating (so its session lives) but never rejoins:
        // the rebalance timeout drops it.
        assert_eq!(c.sync("g", sync_req(&a, 2, &[(&a, "A")]), 31, 11_400), Reply::Parked);
        syncs(&mut c);
        let n = new_member(&mut c, 12_000);
        assert_eq!(c.join("g", join_req(&n, &["range"]), 32, 12_000), Reply::Parked);
        let deadline = 12_000 + i64::from(REBALANCE);
        for t in (13_000..deadline).step_by(5_000) {
            assert_eq!(c.heartbeat("g", &a, 2, t), Err(GroupError::RebalanceInProgress));
            c.tick(t);
        }
        c.tick(deadline - 1);
        assert!(c.take_completions().is_empty());
        c.tick(deadline);
        let answers = joins(&mut c);
        assert_eq!((answers[&32].generation, answers[&32].leader.as_str()), (3, n.as_str()));
        assert_eq!(c.heartbeat("g", &a, 2, deadline + 1), Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn leaving_rebalances_and_the_last_one_out_ends_the_group() {
        let mut c = Coordinator::new(config(), "t");
        let (a, b) = stable_pair(&mut c);
        assert_eq!(c.leave("g", &b, None, 2000), Ok(()));
        assert_eq!(c.leave("g", &b, None, 2000), Err(GroupError::UnknownMemberId));
        assert_eq!(c.delete("g"), Err(GroupError::NonEmptyGroup));
        assert_eq!(c.join("g", join_req(&a, &["range"]), 40, 2100), Reply::Parked);
        assert_eq!(joins(&mut c)[&40].generation, 2);
        assert_eq!(c.leave("g", &a, None, 2200), Ok(()));
        assert!(c.describe("g").is_none(), "an empty group is forgotten");
        assert!(c.is_idle());
        // With no live group, only commits without a generation are accepted.
        assert_eq!(c.validate_commit("g", "", -1, false, 2300), Ok(()));
        assert_eq!(c.validate_commit("g", &a, 2, false, 2300), Err(GroupError::IllegalGeneration));
        assert_eq!(c.delete("g"), Ok(()));
    }

    #[test]
    fn a_member_that_leaves_while_others_wait_in_join_completes_the_rebalance() {
        let mut c = Coordinator::new(config(), "t");
        let (a, b) = stable_pair(&mut c);
        let n = new_member(&mut c, 2000);
        assert_eq!(c.join("g", join_req(&n, &["range"]), 50, 2000), Reply::Parked);
        assert_eq!(c.join("g", join_req(&a, &["range"]), 51, 2000), Reply::Parked);
        assert!(c.take_completions().is_empty());
        assert_eq!(c.leave("g", &b, None, 2100), Ok(()));
        let answers = joins(&mut c);
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[&51].members.iter().map(|m| m.member_id.clone()).collect::<Vec<_>>().len(), 2);
    }

    #[test]
    fn requests_that_do_not_fit_are_refused() {
        let mut c = Coordinator::new(config(), "t");
        let mut short = join_req("", &["range"]);
        short.session_timeout_ms = 10;
        assert!(
            matches!(c.join("g", short, 0, 0), Reply::Now(r) if r.error == Some(GroupError::InvalidSessionTimeout))
        );
        assert!(matches!(c.join("", join_req("", &["range"]), 0, 0),
            Reply::Now(r) if r.error == Some(GroupError::InvalidGroupId)));
        assert!(matches!(c.join("g", join_req("", &[]), 0, 0),
            Reply::Now(r) if r.error == Some(GroupError::InconsistentGroupProtocol)));
        assert!(matches!(c.join("g", join_req("ghost", &["range"]), 0, 0),
            Reply::Now(r) if r.error == Some(GroupError::UnknownMemberId)));
        assert!(c.is_idle(), "refused joins leave nothing behind");

        let (_a, _b) = stable_pair(&mut c);
        assert!(matches!(c.join("g", join_req("", &["roundrobin"]), 0, 1700),
            Reply::Now(r) if r.error == Some(GroupError::InconsistentGroupProtocol)));
        let mut other_type = join_req("", &["range"]);
        other_type.protocol_type = "connect".into();
        assert!(matches!(c.join("g", other_type, 0, 1700),
            Reply::Now(r) if r.error == Some(GroupError::InconsistentGroupProtocol)));
        new_member(&mut c, 1700);
        new_member(&mut c, 1700);
        assert!(matches!(c.join("g", join_req("", &["range"]), 0, 1700),
            Reply::Now(r) if r.error == Some(GroupError::GroupMaxSizeReached)));
        // Pending ids expire after a session timeout (the members stay alive meanwhile).
        let (a, b) = (&_a, &_b);
        assert_eq!(c.heartbeat("g", a, 1, 11_000), Ok(()));
        assert_eq!(c.heartbeat("g", b, 1, 11_000), Ok(()));
        c.tick(1700 + i64::from(SESSION) - 1);
        assert!(matches!(c.join("g", join_req("", &["range"]), 0, 11_699),
            Reply::Now(r) if r.error == Some(GroupError::GroupMaxSizeReached)));
        c.tick(1700 + i64::from(SESSION));
        assert!(matches!(c.join("g", join_req("", &["range"]), 0, 11_700),
            Reply::Now(r) if r.error == Some(GroupError::MemberIdRequired)));
    }

    #[test]
    fn a_leader_that_never_syncs_sends_the_group_back_to_rebalance() {
        let mut c = Coordinator::new(config(), "t");
        let a = new_member(&mut c, 0);
        let b = new_member(&mut c, 0);
        c.join("g", join_req(&a, &["range"]), 1, 0);
        c.join("g", join_req(&b, &["range"]), 2, 0);
        c.tick(500);
        c.tick(1000);
        joins(&mut c);
        assert_eq!(c.sync("g", sync_req(&b, 1, &[]), 3, 1100), Reply::Parked);
        c.tick(1000 + i64::from(REBALANCE));
        let answers = syncs(&mut c);
        assert_eq!(answers[&3].error, Some(GroupError::RebalanceInProgress));
        let described = c.describe("g").unwrap();
        assert_eq!(described.state, GroupState::PreparingRebalance);
        assert_eq!(described.members.iter().map(|m| m.member_id.as_str()).collect::<Vec<_>>(), vec![b.as_str()]);
    }

    #[test]
    fn the_protocol_most_members_prefer_wins_among_those_all_support() {
        let mut c = Coordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..config() }, "t");
        let req = |p: &[&str]| JoinRequest { require_known_member_id: false, ..join_req("", p) };
        assert_eq!(c.join("g", req(&["range", "roundrobin", "sticky"]), 1, 0), Reply::Parked);
        c.tick(0);
        assert_eq!(joins(&mut c)[&1].protocol_name.as_deref(), Some("range"));
        // Two more members preferring sticky; "roundrobin" is not supported by the last.
        c.join("g", req(&["sticky", "range", "roundrobin"]), 2, 1);
        c.join("g", req(&["sticky", "range"]), 3, 1);
        let first = c.describe("g").unwrap().members[0].member_id.clone();
        c.join("g", JoinRequest { member_id: first, ..req(&["range", "roundrobin", "sticky"]) }, 4, 2);
        let answers = joins(&mut c);
        assert!(answers.values().all(|r| r.protocol_name.as_deref() == Some("sticky")), "{answers:?}");
    }

    #[test]
    fn shutdown_answers_every_parked_caller() {
        let mut c = Coordinator::new(config(), "t");
        let a = new_member(&mut c, 0);
        c.join("g", join_req(&a, &["range"]), 7, 0);
        c.abandon_all();
        assert_eq!(joins(&mut c)[&7].error, Some(GroupError::NotCoordinator));
    }
}
