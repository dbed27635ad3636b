//! A running raft node: start (bootstrap a one-voter cluster or wait to join), write (here
//! or forwarded to the leader), linearizable reads, membership changes and status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_storage::{Outcome, Proposal, Store};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};

use crate::network::NetworkFactory;
use crate::rpc::{self, ClusterView, LeaderAnswer, LeaderOp, LeaderRefusal, MemberView};
use crate::transport::{CallError, Transport, TransportSlot};
use crate::types::{NodeId, TypeConfig};
use crate::{LogStore, StateMachine};

/// How a node with an empty log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Found a one-voter cluster of this node.
    Bootstrap,
    /// Bootstrap nothing and wait for a cluster to add this node.
    Join,
}

/// What the operator tunes about a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeOptions {
    /// How long a write or a linearizable read may wait for a leader (and for the leader's
    /// quorum) before it fails: a node without a leader answers within this, never hangs.
    pub leader_wait: Duration,
    /// A snapshot is built after this many log entries; the log before it is purged but for
    /// a tail of a tenth of that (at most 2,000 entries).
    pub snapshot_every_entries: u64,
    /// Whether a restarted leader may go on leading its term at once. Only sound for a node
    /// that is the only voter (its commits then need its own fsync); a cluster member that led
    /// campaigns again (see `LogStore::read_vote`).
    pub sole_voter: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions { leader_wait: Duration::from_secs(5), snapshot_every_entries: 20_000, sole_voter: false }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("raft configuration is invalid: {0}")]
    Config(String),
    #[error("raft failed to start: {0}")]
    Start(String),
    #[error("no raft leader within {0:?}")]
    NoLeader(Duration),
}

/// Why a write was not applied. A refusal by the state is not an error: it is an
/// [`Outcome::Refused`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// No leader answered within the bound; nothing was proposed.
    #[error("no raft leader within {0:?}")]
    NoLeader(Duration),
    /// It was proposed but no outcome came back in time: it may still commit.
    #[error("the write's outcome is unknown: {0}")]
    Unknown(String),
    #[error("the raft node has stopped: {0}")]
    Fatal(String),
    #[error("the write was not committed: {0}")]
    Other(String),
}

/// What metrics and readiness need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: NodeId,
    pub term: u64,
    pub is_leader: bool,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// Voter and learner ids with their cluster addresses.
    pub voters: Vec<(NodeId, String)>,
    pub learners: Vec<(NodeId, String)>,
}

/// A learner is promoted once it is at most this many entries behind the leader.
const CATCH_UP_SLACK: u64 = 64;
/// Voters a cluster has at most; more members stay learners (they receive the log and serve
/// reads but do not vote). With three, a write refused as "not the leader" was never committed
/// through another node, so forwarding may retry it; with five it could be.
pub const MAX_VOTERS: usize = 3;

#[derive(Clone)]
pub struct RaftNode {
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    committed_index: Arc<AtomicU64>,
    transport: TransportSlot,
    options: NodeOptions,
    /// When this node last heard from a leader, in ms since `started`.
    leader_contact_ms: Arc<AtomicU64>,
    /// Whether this node has applied what the cluster had committed when it started (R12).
    recovered: Arc<AtomicBool>,
    started: Instant,
}

/// A raft message sent by one node in another's name.
#[derive(Debug, thiserror::Error)]
#[error("node {caller:016x} cannot speak for {claimed:x?}")]
pub struct Impersonation {
    pub caller: NodeId,
    pub claimed: Option<NodeId>,
}

fn speaks_for(caller: NodeId, vote: &openraft::Vote<NodeId>) -> Result<(), Impersonation> {
    match vote.leader_id().voted_for() {
        Some(id) if id == caller => Ok(()),
        claimed => Err(Impersonation { caller, claimed }),
    }
}

enum Target {
    Here,
    Peer(NodeId, String),
    Unknown,
}

impl RaftNode {
    pub async fn start(
        store: &Store,
        node_id: NodeId,
        advertise: &str,
        mode: StartMode,
        options: NodeOptions,
    ) -> Result<RaftNode, NodeError> {
        let config = Config {
            cluster_name: "gatehouse".into(),
            // A follower waits out the leader's lease (the maximum timeout) and then its own
            // timeout before it campaigns: a new leader 0.9 to 1.2 s after the old one died.
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every_entries),
            max_in_snapshot_log_to_keep: (options.snapshot_every_entries / 10).min(2_000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let log_store = match options.sole_voter {
            true => LogStore::new(store.db().clone()),
            false => LogStore::new(store.db().clone()).campaigning_after_restart(node_id),
        };
        let committed_index = log_store.committed_index();
        let state_machine = StateMachine::new(store.db().clone(), store.changes().clone(), store.path())
            .map_err(|e| NodeError::Start(e.to_string()))?
            .reporting_installs_to(log_store.installing());
        let network = NetworkFactory::default();
        let transport = network.transport.clone();
        let raft = Raft::new(node_id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(|e| NodeError::Start(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| NodeError::Start(e.to_string()))?;
        if mode == StartMode::Bootstrap && !initialized {
            let members = BTreeMap::from([(node_id, BasicNode::new(advertise))]);
            raft.initialize(members).await.map_err(|e| NodeError::Start(e.to_string()))?;
        }
        if initialized || mode == StartMode::Bootstrap {
            // Callers decide on the membership (one voter or more): let the metrics show it.
            let loaded = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
                m.membership_config.membership().voter_ids().next().is_some()
            };
            let _ = raft.wait(Some(Duration::from_secs(5))).metrics(loaded, "membership loaded").await;
        }
        let node = RaftNode {
            raft,
            node_id,
            committed_index,
            transport,
            options,
            leader_contact_ms: Arc::new(AtomicU64::new(0)),
            recovered: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
        };
        // R12: after a restart the state machine is what was durable, which can be older than
        // what this node served before; local reads wait (see `leader_contact_age`) until it
        // has applied a read index taken after the start.
        let recovering = node.clone();
        tokio::spawn(async move {
            loop {
                if recovering.ensure_linearizable().await.is_ok() {
                    recovering.recovered.store(true, Ordering::Release);
                    return;
                }
                if recovering.raft.metrics().has_changed().is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Gives the node its cluster transport (at start, or when `cluster init` runs).
    pub fn set_transport(&self, transport: Transport) {
        self.transport.set(transport);
    }

    /// Proposes a command, here or through the leader, and waits until it is applied here:
    /// a read on this node after it returns sees the write.
    pub async fn write(&self, proposal: Proposal) -> Result<Outcome, WriteError> {
        match self.ask_leader(LeaderOp::Write(proposal)).await {
            Ok(LeaderAnswer::Written { outcome, index }) => {
                self.wait_applied(index).await;
                Ok(outcome)
            }
            Ok(other) => Err(WriteError::Other(format!("unexpected answer {other:?}"))),
            Err(refusal) => Err(self.write_error(refusal)),
        }
    }

    fn write_error(&self, refusal: LeaderRefusal) -> WriteError {
        match refusal {
            LeaderRefusal::NotLeader { .. } => WriteError::NoLeader(self.options.leader_wait),
            LeaderRefusal::Failed(e) => WriteError::Unknown(e),
            other => WriteError::Other(other.to_string()),
        }
    }

    /// Waits until the state machine here has applied everything committed when this is
    /// called: after it returns, local reads see every acknowledged write (openraft's read
    /// index, asked of the leader, which confirms its leadership with a quorum first).
    pub async fn ensure_linearizable(&self) -> Result<(), WriteError> {
        match self.ask_leader(LeaderOp::ReadIndex).await {
            Ok(LeaderAnswer::ReadIndex { index }) => {
                if self.wait_applied(index).await {
                    Ok(())
                } else {
                    Err(WriteError::Unknown(format!("this node did not apply index {index} in time")))
                }
            }
            Ok(other) => Err(WriteError::Other(format!("unexpected answer {other:?}"))),
            Err(refusal) => Err(self.write_error(refusal)),
        }
    }

    /// Adds a node as a learner: it starts receiving the log.
    pub async fn add_learner(&self, node_id: NodeId, addr: &str) -> Result<(), LeaderRefusal> {
        self.ask_leader(LeaderOp::AddLearner { node_id, addr: addr.to_string() }).await.map(|_| ())
    }

    /// Removes a voter or learner from the cluster.
    pub async fn remove(&self, node_id: NodeId) -> Result<(), LeaderRefusal> {
        self.ask_leader(LeaderOp::Remove { node_id }).await.map(|_| ())
    }

    /// The leader's view: members, their roles and how far behind each is.
    pub async fn cluster_view(&self) -> Result<ClusterView, LeaderRefusal> {
        match self.ask_leader(LeaderOp::Status).await? {
            LeaderAnswer::Status(view) => Ok(view),
            other => Err(LeaderRefusal::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// Asks the leader to make this learner a voter once it has caught up; returns when it is
    /// one (callers stop it with the node).
    pub async fn become_voter(&self) {
        loop {
            let status = self.status();
            if status.voters.iter().any(|(id, _)| *id == self.node_id) {
                return;
            }
            if status.learners.iter().any(|(id, _)| *id == self.node_id) {
                match self.ask_leader(LeaderOp::Promote { node_id: self.node_id }).await {
                    Ok(_) => {
                        tracing::info!("this node is now a voter");
                        return;
                    }
                    Err(LeaderRefusal::NotCaughtUp { .. }) | Err(LeaderRefusal::Refused(_)) => {}
                    Err(e) => tracing::debug!("promotion: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Records this node's cluster address in the membership (after `cluster init`).
    pub async fn set_own_address(&self, addr: &str) -> Result<(), LeaderRefusal> {
        let nodes = BTreeMap::from([(self.node_id, BasicNode::new(addr))]);
        self.raft
            .change_membership(ChangeMembers::SetNodes(nodes), true)
            .await
            .map(|_| ())
            .map_err(|e| LeaderRefusal::Refused(e.to_string()))
    }

    fn target(&self) -> Target {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(id) if id == self.node_id => Target::Here,
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(node) => Target::Peer(id, node.addr.clone()),
                None => Target::Unknown,
            },
            None => Target::Unknown,
        }
    }

    /// Serves `op` here when this node leads, or sends it to the leader. Retries (within the
    /// leader wait) only what was certainly not acted on: no leader known, an unreachable
    /// leader, or an answer that the peer asked is not the leader.
    async fn ask_leader(&self, op: LeaderOp) -> Result<LeaderAnswer, LeaderRefusal> {
        let deadline = Instant::now() + self.options.leader_wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(LeaderRefusal::NotLeader { leader: None });
            }
            match self.target() {
                Target::Here => match tokio::time::timeout(remaining, Box::pin(self.serve_leader_op(op.clone()))).await
                {
                    Err(_) => {
                        let waited = self.options.leader_wait;
                        return Err(LeaderRefusal::Failed(format!("no quorum answered within {waited:?}")));
                    }
                    Ok(Err(LeaderRefusal::NotLeader { .. })) => {}
                    Ok(answer) => return answer,
                },
                Target::Peer(leader, addr) => {
                    let Some(transport) = self.transport.get() else {
                        return Err(LeaderRefusal::Refused("this node has no cluster transport".into()));
                    };
                    let sent: Result<Result<LeaderAnswer, LeaderRefusal>, CallError> =
                        transport.call(leader, &addr, rpc::LEADER_PATH, &op, remaining).await;
                    match sent {
                        Ok(Err(LeaderRefusal::NotLeader { .. })) | Err(CallError::Unreachable { .. }) => {}
                        Ok(answer) => return answer,
                        Err(e @ CallError::Failed { .. }) => return Err(LeaderRefusal::Failed(e.to_string())),
                    }
                }
                Target::Unknown => {}
            }
            let mut rx = self.raft.metrics();
            let pause = remaining.min(Duration::from_millis(100));
            let _ = tokio::time::timeout(pause, rx.changed()).await;
        }
    }

    /// Serves a [`LeaderOp`] on this node, refusing with `NotLeader` when it does not lead.
    pub async fn serve_leader_op(&self, op: LeaderOp) -> Result<LeaderAnswer, LeaderRefusal> {
        fn forward(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> LeaderRefusal {
            match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    LeaderRefusal::NotLeader { leader: f.leader_id }
                }
                RaftError::APIError(e) => LeaderRefusal::Refused(e.to_string()),
                RaftError::Fatal(f) => LeaderRefusal::Failed(f.to_string()),
            }
        }
        let not_leader = || LeaderRefusal::NotLeader { leader: self.status().leader };
        match op {
            LeaderOp::Write(proposal) => {
                let resp = self.raft.client_write(proposal).await.map_err(forward)?;
                Ok(LeaderAnswer::Written { outcome: resp.data, index: resp.log_id.index })
            }
            LeaderOp::ReadIndex => match self.raft.get_read_log_id().await {
                Ok((read, _)) => Ok(LeaderAnswer::ReadIndex { index: read.map_or(0, |l| l.index) }),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    Err(LeaderRefusal::NotLeader { leader: f.leader_id })
                }
                Err(RaftError::APIError(e)) => Err(LeaderRefusal::Failed(e.to_string())),
                Err(RaftError::Fatal(f)) => Err(LeaderRefusal::Failed(f.to_string())),
            },
            LeaderOp::AddLearner { node_id, addr } => {
                if !self.status().is_leader {
                    return Err(not_leader());
                }
                self.raft.add_learner(node_id, BasicNode::new(addr), false).await.map_err(forward)?;
                Ok(LeaderAnswer::Done)
            }
            LeaderOp::Promote { node_id } => {
                let m = self.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    return Err(not_leader());
                }
                let membership = m.membership_config.membership();
                if membership.voter_ids().any(|id| id == node_id) {
                    return Ok(LeaderAnswer::Done);
                }
                if !membership.learner_ids().any(|id| id == node_id) {
                    return Err(LeaderRefusal::Refused(format!(
                        "node {node_id:016x} is not a learner of this cluster"
                    )));
                }
                if membership.voter_ids().count() >= MAX_VOTERS {
                    return Err(LeaderRefusal::Refused(format!(
                        "the cluster has {MAX_VOTERS} voters already: node {node_id:016x} stays a learner until one is removed"
                    )));
                }
                let last = m.last_log_index.unwrap_or(0);
                let matched = m.replication.as_ref().and_then(|r| r.get(&node_id).cloned().flatten());
                if matched.map_or(0, |l| l.index) + CATCH_UP_SLACK < last {
                    return Err(LeaderRefusal::NotCaughtUp { node_id });
                }
                let voters = BTreeSet::from([node_id]);
                self.raft.change_membership(ChangeMembers::AddVoterIds(voters), false).await.map_err(forward)?;
                Ok(LeaderAnswer::Done)
            }
            LeaderOp::Remove { node_id } => {
                let m = self.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    return Err(not_leader());
                }
                let membership = m.membership_config.membership();
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let change = if voters.contains(&node_id) {
                    if voters.len() == 1 {
                        return Err(LeaderRefusal::Refused("the last voter cannot be removed".into()));
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
                } else if membership.learner_ids().any(|id| id == node_id) {
                    ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
                } else {
                    return Err(LeaderRefusal::Refused(format!("node {node_id:016x} is not a member of this cluster")));
                };
                self.raft.change_membership(change, false).await.map_err(forward)?;
                Ok(LeaderAnswer::Done)
            }
            LeaderOp::Status => {
                let m = self.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    return Err(not_leader());
                }
                let last = m.last_log_index.unwrap_or(0);
                let membership = m.membership_config.membership();
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let members = membership
                    .nodes()
                    .map(|(id, node)| {
                        let matched = if *id == self.node_id {
                            Some(last)
                        } else {
                            m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index)
                        };
                        MemberView {
                            node_id: *id,
                            addr: node.addr.clone(),
                            role: if voters.contains(id) { "voter" } else { "learner" }.into(),
                            matched_index: matched,
                            lag: matched.map(|i| last.saturating_sub(i)),
                        }
                    })
                    .collect();
                Ok(LeaderAnswer::Status(ClusterView {
                    leader: self.node_id,
                    term: m.current_term,
                    last_log_index: last,
                    commit_index: self.committed_index.load(Ordering::Relaxed),
                    members,
                }))
            }
        }
    }

    /// Waits (within the leader wait) until this node applied `index`; false if it did not.
    async fn wait_applied(&self, index: u64) -> bool {
        if self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index) >= index {
            return true;
        }
        self.raft.wait(Some(self.options.leader_wait)).applied_index_at_least(Some(index), "read index").await.is_ok()
    }

    /// Waits until this node knows a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, NodeError> {
        let mut rx = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = rx.borrow().current_leader {
                    return Ok(leader);
                }
                if rx.changed().await.is_err() {
                    return Err(NodeError::Start("raft stopped".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| NodeError::NoLeader(timeout))?
    }

    /// How long ago this node last knew a leader to be in charge: for a leader, since a
    /// quorum last acknowledged it; for a follower, since the leader last reached it. `None`
    /// when it never has, or before this node has caught up with what the cluster had
    /// committed when it started.
    pub fn leader_contact_age(&self) -> Option<Duration> {
        if !self.recovered.load(Ordering::Acquire) {
            return None;
        }
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            if m.membership_config.membership().voter_ids().count() <= 1 {
                return Some(Duration::ZERO);
            }
            return m.millis_since_quorum_ack.map(Duration::from_millis);
        }
        match self.leader_contact_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.started.elapsed().saturating_sub(Duration::from_millis(at))),
        }
    }

    /// Whether `node` may speak to this one on the cluster port: a member (voter or learner),
    /// or anyone holding a node certificate while this node knows no membership yet (a
    /// learner before the leader's first append).
    pub fn admits_peer(&self, node: NodeId) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let mut members = membership.nodes().map(|(id, _)| *id).peekable();
        members.peek().is_none() || membership.get_node(&node).is_some()
    }

    /// Raft's append-entries, received from `caller` (the node its certificate names), which
    /// must be the leader the request names.
    pub async fn append_entries(
        &self,
        caller: NodeId,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, Impersonation> {
        speaks_for(caller, &req.vote)?;
        let answer = self.raft.append_entries(req).await;
        if matches!(answer, Ok(AppendEntriesResponse::Success)) {
            let now = self.started.elapsed().as_millis().max(1) as u64;
            self.leader_contact_ms.store(now, Ordering::Relaxed);
        }
        Ok(answer)
    }

    /// A vote request from `caller`, which must be the candidate it names.
    pub async fn vote(
        &self,
        caller: NodeId,
        req: VoteRequest<NodeId>,
    ) -> Result<Result<VoteResponse<NodeId>, RaftError<NodeId>>, Impersonation> {
        speaks_for(caller, &req.vote)?;
        Ok(self.raft.vote(req).await)
    }

    /// A snapshot chunk from `caller`, which must be the leader it names.
    pub async fn install_snapshot(
        &self,
        caller: NodeId,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>, Impersonation> {
        speaks_for(caller, &req.vote)?;
        Ok(self.raft.install_snapshot(req).await)
    }

    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let addr = |id: NodeId| membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
        RaftStatus {
            node_id: self.node_id,
            term: m.current_term,
            is_leader: m.state == ServerState::Leader,
            leader: m.current_leader,
            commit_index: self.committed_index.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            voters: membership.voter_ids().map(|id| (id, addr(id))).collect(),
            learners: membership.learner_ids().map(|id| (id, addr(id))).collect(),
        }
    }

    /// Resolves when raft has stopped: after `shutdown`, or on its own after a storage
    /// failure (a failed log write or fsync is fatal to openraft, which stops the node's raft).
    pub async fn stopped(&self) {
        let mut rx = self.raft.metrics();
        while rx.changed().await.is_ok() {}
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
