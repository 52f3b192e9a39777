//! Consumer group membership over the Kafka protocol: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, DeleteGroups, and OffsetCommit by group members. Each request is
//! sent to the shard coordinating its group (the owner of the group's `__consumer_offsets`
//! partition), where `crate::coordinator` runs the state machine; this module only translates.

use std::rc::Rc;

use kafka_protocol::{
    messages::{
        delete_groups_response::DeletableGroupResult,
        describe_groups_response::{DescribedGroup, DescribedGroupMember},
        join_group_response::JoinGroupResponseMember,
        leave_group_response::MemberResponse,
        DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
        HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
        LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
    },
    protocol::StrBytes,
    ResponseError as K,
};
use keel_protocol::ErrorCode;

use crate::{
    broker::ShardState,
    connection::group_shard,
    coordinator::{GroupAnswer, GroupOp},
    groups::{GroupError, GroupState, JoinRequest, SyncRequest},
    routing::{Failure, ShardRequest, ShardResponse},
};

/// Who sent the request, for DescribeGroups' member list.
pub(crate) struct Client {
    pub id: String,
    /// As Kafka writes it: `/` and the peer's address.
    pub host: String,
}

pub(crate) fn code(error: GroupError) -> i16 {
    match error {
        GroupError::InvalidGroupId => K::InvalidGroupId.code(),
        GroupError::UnknownMemberId => K::UnknownMemberId.code(),
        GroupError::IllegalGeneration => K::IllegalGeneration.code(),
        GroupError::RebalanceInProgress => K::RebalanceInProgress.code(),
        GroupError::InconsistentGroupProtocol => K::InconsistentGroupProtocol.code(),
        GroupError::InvalidSessionTimeout => K::InvalidSessionTimeout.code(),
        GroupError::MemberIdRequired => K::MemberIdRequired.code(),
        GroupError::GroupMaxSizeReached => K::GroupMaxSizeReached.code(),
        GroupError::NonEmptyGroup => K::NonEmptyGroup.code(),
        GroupError::GroupIdNotFound => K::GroupIdNotFound.code(),
        GroupError::NotCoordinator => K::NotCoordinator.code(),
    }
}

/// Kafka's code for a failure to reach the coordinator or its log: an invalid group id as such,
/// anything else as "coordinator not available" (clients look it up again and retry).
fn failure_code(f: &Failure) -> i16 {
    match f.code {
        ErrorCode::InvalidGroupId => K::InvalidGroupId.code(),
        ErrorCode::BrokerShuttingDown => K::NotCoordinator.code(),
        _ => K::CoordinatorNotAvailable.code(),
    }
}

/// Runs `op` on the group's coordinating shard.
async fn on_coordinator(state: &ShardState, group: &str, op: GroupOp) -> Result<GroupAnswer, Failure> {
    let shard = group_shard(state, group)?;
    if state.shard.is_stopping() {
        return Err(Failure::new(ErrorCode::BrokerShuttingDown, "the broker is shutting down"));
    }
    match state.shard.call(shard, ShardRequest::Group(op)).await {
        Ok(ShardResponse::Group(GroupAnswer::Failed(f))) => Err(f),
        Ok(ShardResponse::Group(answer)) => Ok(answer),
        Ok(other) => Err(Failure::new(ErrorCode::UnknownServerError, format!("unexpected answer {other:?}"))),
        Err(e) => Err(Failure::new(ErrorCode::BrokerShuttingDown, e.to_string())),
    }
}

fn s(value: String) -> StrBytes {
    StrBytes::from_string(value)
}

pub(crate) async fn join_group(
    state: &Rc<ShardState>,
    client: &Client,
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    let request = JoinRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout stands for it, as in Kafka.
        rebalance_timeout_ms: if version == 0 { req.session_timeout_ms } else { req.rebalance_timeout_ms },
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = request.member_id.clone();
    let answer = on_coordinator(state, &group, GroupOp::Join { group: group.clone(), request }).await;
    let response = match answer {
        Ok(GroupAnswer::Join(r)) => r,
        Ok(_) => return join_failed(K::CoordinatorNotAvailable.code(), member_id),
        Err(f) => return join_failed(failure_code(&f), member_id),
    };
    let members = response
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(s(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(s).filter(|_| version >= 5))
                .with_metadata(m.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(response.error.map_or(0, code))
        .with_generation_id(response.generation)
        .with_protocol_type(response.protocol_type.map(s).filter(|_| version >= 7))
        // Nullable only from v7: before, "" stands for none.
        .with_protocol_name(Some(s(response.protocol_name.unwrap_or_default())))
        .with_leader(s(response.leader))
        .with_member_id(s(response.member_id))
        .with_members(members)
}

fn join_failed(code: i16, member_id: String) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_protocol_name(Some(StrBytes::default()))
        .with_member_id(s(member_id))
}

pub(crate) async fn sync_group(state: &Rc<ShardState>, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    let request = SyncRequest {
        member_id: req.member_id.to_string(),
        generation: req.generation_id,
        protocol_type: req.protocol_type.map(|p| p.to_string()),
        protocol_name: req.protocol_name.map(|p| p.to_string()),
        assignments: req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
    };
    match on_coordinator(state, &group, GroupOp::Sync { group: group.clone(), request }).await {
        Ok(GroupAnswer::Sync(r)) => {
            let response =
                SyncGroupResponse::default().with_error_code(r.error.map_or(0, code)).with_assignment(r.assignment);
            if version >= 5 {
                response.with_protocol_type(r.protocol_type.map(s)).with_protocol_name(r.protocol_name.map(s))
            } else {
                response
            }
        }
        Ok(_) => SyncGroupResponse::default().with_error_code(K::UnknownServerError.code()),
        Err(f) => SyncGroupResponse::default().with_error_code(failure_code(&f)),
    }
}

pub(crate) async fn heartbeat(state: &Rc<ShardState>, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let op = GroupOp::Heartbeat {
        group: group.clone(),
        member_id: req.member_id.to_string(),
        generation: req.generation_id,
    };
    let error = match on_coordinator(state, &group, op).await {
        Ok(GroupAnswer::Heartbeat(result)) => result.err().map_or(0, code),
        Ok(_) => K::UnknownServerError.code(),
        Err(f) => failure_code(&f),
    };
    HeartbeatResponse::default().with_error_code(error)
}

/// v0–v2 name one member; v3+ a list, each answered on its own.
pub(crate) async fn leave_group(state: &Rc<ShardState>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let results: Vec<i16> =
        match on_coordinator(state, &group, GroupOp::Leave { group: group.clone(), members: members.clone() }).await {
            Ok(GroupAnswer::Leave(results)) => results.into_iter().map(|r| r.err().map_or(0, code)).collect(),
            Ok(_) => return LeaveGroupResponse::default().with_error_code(K::UnknownServerError.code()),
            Err(f) => return LeaveGroupResponse::default().with_error_code(failure_code(&f)),
        };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(results.first().copied().unwrap_or(0));
    }
    let members = members
        .into_iter()
        .zip(results)
        .map(|((member_id, instance), error)| {
            MemberResponse::default()
                .with_member_id(s(member_id))
                .with_group_instance_id(instance.map(s))
                .with_error_code(error)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// An unknown group is described as Dead (v0–v5) or GROUP_ID_NOT_FOUND (v6+), as Kafka does.
pub(crate) async fn describe_groups(
    state: &Rc<ShardState>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let group = id.0.to_string();
        let described = DescribedGroup::default().with_group_id(id.clone()).with_authorized_operations(i32::MIN);
        let described = match on_coordinator(state, &group, GroupOp::Describe { group: group.clone() }).await {
            Ok(GroupAnswer::Describe(d)) if d.state == GroupState::Dead && version >= 6 => described
                .with_error_code(K::GroupIdNotFound.code())
                .with_error_message(Some(s(format!("group {group} does not exist"))))
                .with_group_state(StrBytes::from_static_str("Dead")),
            Ok(GroupAnswer::Describe(d)) => described
                .with_group_state(StrBytes::from_static_str(d.state.name()))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(s).filter(|_| version >= 4))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
            Ok(_) => described.with_error_code(K::UnknownServerError.code()),
            Err(f) => described.with_error_code(failure_code(&f)),
        };
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

/// Deletes groups without members, with their committed offsets.
pub(crate) async fn delete_groups(state: &Rc<ShardState>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let group = id.0.to_string();
        let error = match on_coordinator(state, &group, GroupOp::Delete { group: group.clone() }).await {
            Ok(GroupAnswer::Delete(result)) => result.err().map_or(0, code),
            Ok(_) => K::UnknownServerError.code(),
            Err(f) => failure_code(&f),
        };
        results.push(DeletableGroupResult::default().with_group_id(GroupId(id.0)).with_error_code(error));
    }
    DeleteGroupsResponse::default().with_results(results)
}
