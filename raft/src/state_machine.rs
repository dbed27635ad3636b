//! The raft state machine: applies committed entries through `gatehouse_storage::apply`,
//! builds and installs full snapshots.
//!
//! A batch of entries is applied in one redb write transaction (group commit) together with
//! the last applied id, so state and applied id never disagree. That transaction commits
//! without its own fsync: the next durable log append persists it, and after a crash openraft
//! re-applies the durable log from the last applied id that survived.

use std::io::Cursor;
use std::sync::Arc;

use gatehouse_storage::tables::{meta_keys, META, RAFT_SNAPSHOT};
use gatehouse_storage::{snapshot, Applied, Changes, Outcome};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::types::{read_err, write_err, Entry, LogId, StorageError, StoredMembership, TypeConfig};

const CURRENT_SNAPSHOT: &str = "current";

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    changes: Arc<Changes>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    data: Vec<u8>,
}

impl StateMachine {
    /// Applies a batch of committed entries in one non-durable write transaction.
    fn apply_batch(db: &Database, changes: &Changes, entries: Vec<Entry>) -> Result<Vec<Outcome>, StorageError> {
        let mut txn = db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::None).map_err(write_err)?;
        let (mut applied, mut membership) = {
            let meta = txn.open_table(META).map_err(read_err)?;
            let applied: Option<LogId> = match meta.get(meta_keys::SM_APPLIED).map_err(read_err)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(read_err)?,
                None => None,
            };
            let membership: StoredMembership = match meta.get(meta_keys::SM_MEMBERSHIP).map_err(read_err)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(read_err)?,
                None => StoredMembership::default(),
            };
            (applied, membership)
        };
        let mut outcomes = Vec::new();
        let mut keys_changed = false;
        for entry in entries {
            applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Applied(Applied::Nothing),
                EntryPayload::Normal(proposal) => {
                    keys_changed |= proposal.command.changes_signing_keys();
                    gatehouse_storage::apply(&txn, &proposal).map_err(write_err)?
                }
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Applied(Applied::Nothing)
                }
            };
            outcomes.push(outcome);
        }
        Self::write_applied(&txn, &applied, &membership)?;
        txn.commit().map_err(write_err)?;
        if keys_changed {
            changes.note_signing_keys();
        }
        Ok(outcomes)
    }

    pub fn new(db: Arc<Database>, changes: Arc<Changes>) -> Self {
        StateMachine { db, changes }
    }

    fn read_applied(txn: &redb::ReadTransaction) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let meta = txn.open_table(META).map_err(read_err)?;
        let applied = match meta.get(meta_keys::SM_APPLIED).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(read_err)?,
            None => None,
        };
        let membership = match meta.get(meta_keys::SM_MEMBERSHIP).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(read_err)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn write_applied(
        txn: &redb::WriteTransaction,
        applied: &Option<LogId>,
        membership: &StoredMembership,
    ) -> Result<(), StorageError> {
        let mut meta = txn.open_table(META).map_err(write_err)?;
        let a = serde_json::to_vec(applied).map_err(write_err)?;
        let m = serde_json::to_vec(membership).map_err(write_err)?;
        meta.insert(meta_keys::SM_APPLIED, a.as_slice()).map_err(write_err)?;
        meta.insert(meta_keys::SM_MEMBERSHIP, m.as_slice()).map_err(write_err)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let txn = self.db.begin_read().map_err(read_err)?;
            let (last_applied, membership) = Self::read_applied(&txn)?;
            let data = snapshot::export(&txn).map_err(read_err)?;
            let snapshot_id = match &last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, data.len()),
                None => format!("none-{}", data.len()),
            };
            (SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id }, data)
        };
        let stored =
            serde_json::to_vec(&StoredSnapshot { meta: meta.clone(), data: data.clone() }).map_err(write_err)?;
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = txn.open_table(RAFT_SNAPSHOT).map_err(write_err)?;
            t.insert(CURRENT_SNAPSHOT, stored.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        Self::read_applied(&txn)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (db, changes) = (self.db.clone(), self.changes.clone());
        // redb blocks while another transaction (such as the log flusher's fsync) holds the
        // write lock; keep that off the async workers.
        tokio::task::spawn_blocking(move || Self::apply_batch(&db, &changes, entries))
            .await
            .map_err(|e| write_err(std::io::Error::other(e.to_string())))?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let stored =
            serde_json::to_vec(&StoredSnapshot { meta: meta.clone(), data: data.clone() }).map_err(write_err)?;
        let txn = self.db.begin_write().map_err(write_err)?;
        snapshot::import(&txn, &data).map_err(write_err)?;
        Self::write_applied(&txn, &meta.last_log_id, &meta.last_membership)?;
        {
            let mut t = txn.open_table(RAFT_SNAPSHOT).map_err(write_err)?;
            t.insert(CURRENT_SNAPSHOT, stored.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        self.changes.note_signing_keys();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(RAFT_SNAPSHOT).map_err(read_err)?;
        let Some(v) = t.get(CURRENT_SNAPSHOT).map_err(read_err)? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = serde_json::from_slice(v.value()).map_err(read_err)?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
