//! What nodes send each other on the cluster port: raft's own messages, and the requests a
//! node makes of the leader (forwarded writes, read indexes, membership changes, status).
//! Every body is JSON but a snapshot chunk's, which is framed so its bytes stay bytes.

use gatehouse_storage::{Outcome, Proposal};
use openraft::raft::InstallSnapshotRequest;
use openraft::{SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, TypeConfig};

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
pub const LEADER_PATH: &str = "/raft/leader";

/// A request only the leader can serve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderOp {
    /// Propose this and answer its outcome.
    Write(Proposal),
    /// Confirm leadership with a quorum and answer the index a linearizable read must wait for.
    ReadIndex,
    /// Add a node as a learner (it starts receiving the log).
    AddLearner { node_id: NodeId, addr: String },
    /// Make a learner that has caught up a voter.
    Promote { node_id: NodeId },
    /// Take a node out of the cluster.
    Remove { node_id: NodeId },
    /// The leader's view of the cluster.
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderAnswer {
    Written { outcome: Outcome, index: u64 },
    ReadIndex { index: u64 },
    Done,
    Status(ClusterView),
}

/// Why the node asked did not serve a [`LeaderOp`].
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderRefusal {
    /// It is not the leader (so it did nothing): ask the one named, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The learner to promote has not caught up yet.
    #[error("node {node_id:016x} has not caught up with the log yet")]
    NotCaughtUp { node_id: NodeId },
    #[error("{0}")]
    Refused(String),
    /// It tried; the effect is unknown (for a write: it may still commit).
    #[error("{0}")]
    Failed(String),
}

/// A member of the cluster as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub node_id: NodeId,
    pub addr: String,
    /// `voter` or `learner`.
    pub role: String,
    /// The last log index the leader knows this member holds.
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader's log.
    pub lag: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub leader: NodeId,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub members: Vec<MemberView>,
}

/// The fields of a snapshot chunk but its data.
#[derive(Serialize, Deserialize)]
pub struct SnapshotChunkHead {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    pub offset: u64,
    pub done: bool,
}

/// A chunk as sent: a 4-byte big-endian length, the JSON head, then the data.
pub fn frame_snapshot_chunk(req: &InstallSnapshotRequest<TypeConfig>) -> Vec<u8> {
    let head = SnapshotChunkHead { vote: req.vote, meta: req.meta.clone(), offset: req.offset, done: req.done };
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + head.len() + req.data.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&req.data);
    out
}

/// Reads a framed chunk back; `None` when it is malformed.
pub fn unframe_snapshot_chunk(body: &[u8]) -> Option<InstallSnapshotRequest<TypeConfig>> {
    let len = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let head: SnapshotChunkHead = serde_json::from_slice(body.get(4..4 + len)?).ok()?;
    let data = body.get(4 + len..)?.to_vec();
    Some(InstallSnapshotRequest { vote: head.vote, meta: head.meta, offset: head.offset, data, done: head.done })
}
