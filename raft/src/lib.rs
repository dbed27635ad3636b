//! gatehouse-raft: replication of Gatehouse state with openraft, persisted in redb.
//!
//! The only crate that names openraft. The log, the vote and the state machine share the
//! node's redb file (`gatehouse.redb`); log writes are durable before they are acknowledged.

pub mod crash;
pub mod identity;
pub mod log_store;
pub mod network;
pub mod node;
pub mod rpc;
pub mod state_machine;
pub mod transport;
pub mod types;

pub use log_store::LogStore;
pub use node::{NodeError, NodeOptions, RaftNode, RaftStatus, StartMode, WriteError};
pub use rpc::{ClusterView, LeaderRefusal, MemberView};
pub use state_machine::StateMachine;
pub use transport::Transport;
pub use types::TypeConfig;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod snapshot_memory;
