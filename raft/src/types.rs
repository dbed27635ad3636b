//! The openraft type configuration: log entries carry a storage `Proposal`, applying one
//! yields a storage `Outcome`.

use gatehouse_storage::{Outcome, Proposal};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type Entry = openraft::Entry<TypeConfig>;

pub(crate) fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::read(&e).into()
}

pub(crate) fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::write(&e).into()
}
