//! openraft's network over the cluster transport. Until the node has cluster credentials
//! every RPC fails as unreachable, so a misconfigured membership shows up as an error rather
//! than as silent success.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;

use crate::rpc;
use crate::transport::{CallError, TransportSlot};
use crate::types::{NodeId, TypeConfig};

#[derive(Debug, thiserror::Error)]
#[error("node {target:016x} is not reachable: this node has no cluster credentials (run `gatehouse cluster init`)")]
struct NoTransport {
    target: NodeId,
}

#[derive(Clone, Default)]
pub struct NetworkFactory {
    pub(crate) transport: TransportSlot,
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    transport: TransportSlot,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), transport: self.transport.clone() }
    }
}

impl PeerClient {
    async fn send<A: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<A, RPCError<NodeId, BasicNode, E>> {
        let Some(transport) = self.transport.get() else {
            return Err(RPCError::Unreachable(Unreachable::new(&NoTransport { target: self.target })));
        };
        let answer: Result<A, E> = transport
            .call_bytes(self.target, &self.addr, path, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
            CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(rpc::APPEND_PATH, json(&rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.send(rpc::SNAPSHOT_PATH, rpc::frame_snapshot_chunk(&rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(rpc::VOTE_PATH, json(&rpc), &option).await
    }
}
