//! A running raft node: start (bootstrap a one-voter cluster or wait to join), write, status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_storage::{Outcome, Proposal, Store};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};

use crate::network::NetworkFactory;
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
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
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
}

#[derive(Clone)]
pub struct RaftNode {
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    committed_index: Arc<AtomicU64>,
}

impl RaftNode {
    pub async fn start(
        store: &Store,
        node_id: NodeId,
        advertise: &str,
        mode: StartMode,
    ) -> Result<RaftNode, NodeError> {
        let config = Config {
            cluster_name: "gatehouse".into(),
            heartbeat_interval: 150,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
            max_in_snapshot_log_to_keep: 2_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let log_store = LogStore::new(store.db().clone());
        let committed_index = log_store.committed_index();
        let state_machine = StateMachine::new(store.db().clone(), store.changes().clone(), store.path())
            .map_err(|e| NodeError::Start(e.to_string()))?;
        let raft = Raft::new(node_id, Arc::new(config), NetworkFactory, log_store, state_machine)
            .await
            .map_err(|e| NodeError::Start(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| NodeError::Start(e.to_string()))?;
        if mode == StartMode::Bootstrap && !initialized {
            let members = BTreeMap::from([(node_id, BasicNode::new(advertise))]);
            raft.initialize(members).await.map_err(|e| NodeError::Start(e.to_string()))?;
        }
        Ok(RaftNode { raft, node_id, committed_index })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Proposes a command and waits until it is committed and applied here.
    pub async fn write(&self, proposal: Proposal) -> Result<Outcome, WriteError> {
        match self.raft.client_write(proposal).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader { leader: f.leader_id })
            }
            Err(RaftError::APIError(e)) => Err(WriteError::Other(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(WriteError::Fatal(f.to_string())),
        }
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

    /// Waits until the state machine has applied everything committed when this is called:
    /// after it returns, local reads see every acknowledged write (openraft's read index).
    pub async fn ensure_linearizable(&self) -> Result<(), WriteError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(e)) => Err(WriteError::Other(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(WriteError::Fatal(f.to_string())),
        }
    }

    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        RaftStatus {
            node_id: self.node_id,
            term: m.current_term,
            is_leader: m.state == ServerState::Leader,
            leader: m.current_leader,
            commit_index: self.committed_index.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
