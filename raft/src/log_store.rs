//! The raft log and vote in redb. The vote, truncation and purges commit with
//! `Durability::Immediate`; the committed index is not persisted (openraft re-derives it).
//!
//! Appends are group-committed (R4 still holds): `append` only queues its entries (readable at
//! once from memory) for the flusher thread, which writes every queued append in one durable
//! redb transaction and then reports each append flushed, in order. Under concurrent writes one
//! fsync covers many entries, and neither openraft's core nor the async workers wait on an
//! fsync. openraft never learns an entry is flushed before it is on disk. Truncation and purge
//! go through the same queue, so log changes reach redb in the order openraft made them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use gatehouse_storage::tables::{RAFT_LOG, RAFT_STATE};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::{de::DeserializeOwned, Serialize};

use crate::types::{read_err, write_err, Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &str = "vote";
const LAST_PURGED: &str = "last_purged";

fn stopped() -> std::io::Error {
    std::io::Error::other("the log flusher has stopped")
}

/// A change of the log, applied to redb by the flusher thread in queue order.
enum LogOp {
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    Truncate(u64, Done),
    Purge(LogId, Done),
}

/// Told when a truncate or purge is durable (awaited, so no async worker blocks on it).
type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Entries appended but not yet in redb, by index.
type Unflushed = Arc<Mutex<BTreeMap<u64, Entry>>>;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The last committed index openraft reported, for metrics.
    committed_index: Arc<AtomicU64>,
    queue: mpsc::Sender<LogOp>,
    unflushed: Unflushed,
    /// Set by the state machine while it receives or installs a snapshot (see the purge).
    installing: Arc<AtomicBool>,
    /// Set on a member of a cluster of several voters: the node whose led term ended with a
    /// restart, which then campaigns instead of leading on (see `read_vote`).
    campaigns_after_restart: Option<u64>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        let (queue, ops) = mpsc::channel();
        let unflushed: Unflushed = Arc::default();
        // A weak handle: the database must close (cleanly) when the node drops it, whatever
        // this thread is doing; it holds a strong one only while it writes.
        let (flush_db, flush_unflushed) = (Arc::downgrade(&db), unflushed.clone());
        let installing = Arc::new(AtomicBool::new(false));
        let flush_installing = installing.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flush_loop(&flush_db, &ops, &flush_unflushed, &flush_installing))
            .expect("spawning the raft log flusher");
        LogStore {
            db,
            committed_index: Arc::new(AtomicU64::new(0)),
            queue,
            unflushed,
            installing,
            campaigns_after_restart: None,
        }
    }

    /// The flag the state machine raises while it receives or installs a snapshot.
    pub fn installing(&self) -> Arc<AtomicBool> {
        self.installing.clone()
    }

    /// Makes `node_id`, if its stored vote says it was the leader, restart as a candidate of
    /// that term rather than as its leader.
    pub fn campaigning_after_restart(mut self, node_id: u64) -> Self {
        self.campaigns_after_restart = Some(node_id);
        self
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.unflushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a truncate or purge and waits, without blocking the async worker, until the
    /// flusher has made it durable.
    async fn run_in_order(&self, op: impl FnOnce(Done) -> LogOp) -> Result<(), StorageError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.queue.send(op(done)).map_err(|_| write_err(stopped()))?;
        wait.await.map_err(|_| write_err(stopped()))?.map_err(|e| write_err(std::io::Error::other(e)))
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
        // Snapshot the unflushed entries first: an entry leaves that map only after it is in
        // redb, so every entry is found in one place or the other.
        let pending: Vec<Entry> = self.unflushed().range(range.clone()).map(|(_, e)| e.clone()).collect();
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(RAFT_LOG).map_err(read_err)?;
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        for item in t.range(range).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            out.insert(k.value(), serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        for e in pending {
            out.insert(e.log_id.index, e);
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_state(LAST_PURGED)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(RAFT_LOG).map_err(read_err)?;
        let stored = match t.last().map_err(read_err)? {
            Some((_, v)) => {
                let entry: Entry = serde_json::from_slice(v.value()).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => None,
        };
        let pending = self.unflushed().values().next_back().map(|e| e.log_id);
        let last = pending.max(stored).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_state(VOTE, vote, Durability::Immediate)
    }

    /// openraft (0.9) resumes a restarted node whose committed vote names it as the leader of
    /// that term at once, without a new entry of its own. Among several voters that leader is
    /// wrong twice: its commit index is what its state machine had made durable, so the read
    /// index it gives can miss writes it acknowledged; and an entry the followers committed
    /// before its own fsync finished is missing from its log, so its next entry would reuse
    /// that log id with other content (openraft issue 1511). Handing back the vote
    /// uncommitted makes it a candidate that waits for an election, whose new leader commits an
    /// entry of its own term before it serves anything.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote: Option<Vote> = self.get_state(VOTE)?;
        Ok(match (vote, self.campaigns_after_restart) {
            (Some(v), Some(me)) if v.is_committed() && v.leader_id().voted_for() == Some(me) => {
                tracing::info!("this node led term {} before it restarted: it campaigns again", v.leader_id().term);
                Some(Vote::new(v.leader_id().term, me))
            }
            (vote, _) => vote,
        })
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut unflushed = self.unflushed();
            for e in &entries {
                unflushed.insert(e.log_id.index, e.clone());
            }
        }
        // Reported flushed by the flusher once a durable commit holds these entries.
        if let Err(mpsc::SendError(op)) = self.queue.send(LogOp::Append(entries, callback)) {
            if let LogOp::Append(_, callback) = op {
                callback.log_io_completed(Err(std::io::Error::other("the log flusher has stopped")));
            }
            return Err(write_err(stopped()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.unflushed().retain(|index, _| *index < log_id.index);
        self.run_in_order(|done| LogOp::Truncate(log_id.index, done)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.run_in_order(|done| LogOp::Purge(log_id, done)).await
    }
}

/// Applies queued log changes to redb in order. Consecutive appends share one durable
/// transaction; each is reported flushed only after it commits. Ends when every `LogStore`
/// handle is gone.
fn flush_loop(
    db: &std::sync::Weak<Database>,
    ops: &mpsc::Receiver<LogOp>,
    unflushed: &Unflushed,
    installing: &AtomicBool,
) {
    let mut next = None;
    // After a failed write or fsync the kernel may have dropped the pages it could not write,
    // so a later commit that succeeds proves nothing (R7): every later operation fails too,
    // until the node restarts and redb recovers from its last good commit.
    let mut broken: Option<String> = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match ops.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        if let Some(why) = &broken {
            fail(op, why);
            continue;
        }
        let Some(db) = db.upgrade() else {
            fail(op, "the database is closed");
            return;
        };
        let db = db.as_ref();
        match op {
            LogOp::Append(entries, callback) => {
                let mut batch = vec![(entries, callback)];
                // Take every append already queued; stop at anything else, which runs next.
                while let Ok(op) = ops.try_recv() {
                    match op {
                        LogOp::Append(e, c) => batch.push((e, c)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                crate::crash::point("raft-log-before-flush");
                let result = write_entries(db, batch.iter().flat_map(|(e, _)| e.iter()));
                crate::crash::point("raft-log-after-flush");
                if let Err(e) = &result {
                    tracing::error!("a raft log write failed; this node writes nothing more until restarted: {e}");
                    broken = Some(format!("an earlier raft log write failed ({e}); restart the node"));
                }
                if result.is_ok() {
                    let mut map = unflushed.lock().unwrap_or_else(|p| p.into_inner());
                    for e in batch.iter().flat_map(|(e, _)| e.iter()) {
                        if map.get(&e.log_id.index).is_some_and(|m| m.log_id == e.log_id) {
                            map.remove(&e.log_id.index);
                        }
                    }
                }
                for (_, callback) in batch {
                    match &result {
                        Ok(()) => callback.log_io_completed(Ok(())),
                        Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.clone()))),
                    }
                }
            }
            LogOp::Truncate(from, done) => {
                crate::crash::point("raft-log-truncate");
                let result = durably(db, |txn| {
                    txn.open_table(RAFT_LOG)?.retain_in(from.., |_, _| false)?;
                    Ok(())
                });
                if let Err(e) = &result {
                    broken = Some(format!("an earlier raft log truncation failed ({e}); restart the node"));
                }
                let _ = done.send(result);
            }
            LogOp::Purge(log_id, done) => {
                crate::crash::point("raft-log-purge");
                let result = durably(db, |txn| {
                    // openraft (0.9) purges the log a received snapshot covers as soon as it
                    // hands the snapshot to the state machine, before the install commits; a
                    // crash between them would leave the log purged past every snapshot this
                    // node holds, a state openraft refuses to start from. So while a snapshot
                    // is received or installed the log is purged no further than the snapshot
                    // named current; the install purges the rest in its own commit (openraft
                    // reads nothing it believes purged meanwhile).
                    let upto = if installing.load(Ordering::Acquire) {
                        match crate::state_machine::StateMachine::current_last_log_id(txn)? {
                            Some(covered) if covered.index < log_id.index => covered,
                            Some(_) => log_id,
                            None => return Ok(()),
                        }
                    } else {
                        log_id
                    };
                    purge_through(txn, upto)
                });
                if let Err(e) = &result {
                    broken = Some(format!("an earlier raft log purge failed ({e}); restart the node"));
                }
                let _ = done.send(result);
            }
        }
    }
}

/// Deletes the log up to `upto` and records it as purged, inside `txn`; the purged id never
/// moves back. The flusher's purges and a snapshot's install (in its own transaction) use it.
pub(crate) fn purge_through(txn: &redb::WriteTransaction, upto: LogId) -> Result<(), redb::Error> {
    let before: Option<LogId> = match txn.open_table(RAFT_STATE)?.get(LAST_PURGED)? {
        Some(v) => serde_json::from_slice(v.value()).unwrap_or(None),
        None => None,
    };
    if before.is_some_and(|b| b.index >= upto.index) {
        return Ok(());
    }
    txn.open_table(RAFT_LOG)?.retain_in(..=upto.index, |_, _| false)?;
    let bytes = serde_json::to_vec(&Some(upto)).unwrap_or_default();
    txn.open_table(RAFT_STATE)?.insert(LAST_PURGED, bytes.as_slice())?;
    Ok(())
}

/// Reports an operation that can no longer be carried out.
fn fail(op: LogOp, why: &str) {
    match op {
        LogOp::Append(_, callback) => callback.log_io_completed(Err(std::io::Error::other(why.to_string()))),
        LogOp::Truncate(_, done) | LogOp::Purge(_, done) => {
            let _ = done.send(Err(why.to_string()));
        }
    }
}

fn write_entries<'a>(db: &Database, entries: impl Iterator<Item = &'a Entry>) -> Result<(), String> {
    durably(db, |txn| {
        let mut t = txn.open_table(RAFT_LOG)?;
        for entry in entries {
            let bytes = serde_json::to_vec(entry).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            t.insert(entry.log_id.index, bytes.as_slice())?;
        }
        Ok(())
    })
}

/// One write transaction committed with `Durability::Immediate`.
fn durably(db: &Database, work: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>) -> Result<(), String> {
    let run = || -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        work(&txn)?;
        txn.commit()?;
        Ok(())
    };
    run().map_err(|e| e.to_string())
}
