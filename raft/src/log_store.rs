//! The raft log and vote in redb. Appends, truncation, purges and the vote commit with
//! `Durability::Immediate` before openraft is told they are done (R4); the committed index is
//! not persisted (openraft re-derives it). openraft serialises calls, so log IO is ordered.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_storage::tables::{RAFT_LOG, RAFT_STATE};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::{de::DeserializeOwned, Serialize};

use crate::types::{read_err, write_err, Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &str = "vote";
const LAST_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The last committed index openraft reported, for metrics.
    committed_index: Arc<AtomicU64>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db, committed_index: Arc::new(AtomicU64::new(0)) }
    }

    /// Shared view of the committed index, updated as openraft saves it.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    fn get_state<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(RAFT_STATE).map_err(read_err)?;
        let Some(v) = t.get(key).map_err(read_err)? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value()).map(Some).map_err(read_err)
    }

    fn put_state<T: Serialize>(&self, key: &str, value: &T, durability: Durability) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(durability).map_err(write_err)?;
        {
            let mut t = txn.open_table(RAFT_STATE).map_err(write_err)?;
            t.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(RAFT_LOG).map_err(read_err)?;
        let mut out = Vec::new();
        for item in t.range(range).map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_state(LAST_PURGED)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(RAFT_LOG).map_err(read_err)?;
        let last = match t.last().map_err(read_err)? {
            Some((_, v)) => {
                let entry: Entry = serde_json::from_slice(v.value()).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_state(VOTE, vote, Durability::Immediate)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_state(VOTE)
    }

    /// The committed id is kept in memory only (for metrics). Persisting it is optional in
    /// openraft and would cost a redb write transaction per write; after a restart the leader
    /// commits the durable log again and the state machine catches up from its applied id.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed_index.store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(None)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = (|| -> Result<(), StorageError> {
            let mut txn = self.db.begin_write().map_err(write_err)?;
            txn.set_durability(Durability::Immediate).map_err(write_err)?;
            {
                let mut t = txn.open_table(RAFT_LOG).map_err(write_err)?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
                    t.insert(entry.log_id.index, bytes.as_slice()).map_err(write_err)?;
                }
            }
            txn.commit().map_err(write_err)
        })();
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::Immediate).map_err(write_err)?;
        {
            let mut t = txn.open_table(RAFT_LOG).map_err(write_err)?;
            t.retain_in(log_id.index.., |_, _| false).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(write_err)?;
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::Immediate).map_err(write_err)?;
        {
            let mut t = txn.open_table(RAFT_LOG).map_err(write_err)?;
            t.retain_in(..=log_id.index, |_, _| false).map_err(write_err)?;
            let mut s = txn.open_table(RAFT_STATE).map_err(write_err)?;
            s.insert(LAST_PURGED, bytes.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }
}
