//! The raft state machine: applies committed entries through `gatehouse_storage::apply`,
//! builds and installs full snapshots.
//!
//! A batch of entries is applied in one redb write transaction (group commit) together with
//! the last applied id, so state and applied id never disagree. That transaction commits
//! without its own fsync: the next durable log append persists it, and after a crash openraft
//! re-applies the durable log from the last applied id that survived.
//!
//! A snapshot is a file in `snapshots/` beside the database, streamed from one read
//! transaction (`gatehouse_storage::snapshot`, checksummed) and never held in memory. Its meta
//! is a small record in `raft_snapshot`. Installing one copies the received stream to a file,
//! imports it in one write transaction (which fails, changing nothing, on a damaged stream),
//! and only then names it current, so a crash during an install leaves the old state whole.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use gatehouse_storage::tables::{meta_keys, META, RAFT_SNAPSHOT};
use gatehouse_storage::{snapshot, Applied, Changes, Outcome};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::types::{read_err, write_err, Entry, LogId, StorageError, StoredMembership, TypeConfig};

/// The record naming the current snapshot file in `raft_snapshot`.
const CURRENT_SNAPSHOT: &str = "current_file";
/// Where earlier versions kept the whole snapshot inside the database (removed at start).
const OLD_INLINE_SNAPSHOT: &str = "current";

/// Tells apart the files of snapshots being received at the same time.
static RECEIVING: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    changes: Arc<Changes>,
    /// `snapshots/` beside the database file.
    dir: PathBuf,
    /// Raised from the first chunk of a snapshot received until its install ends, for the log
    /// store's purge (see `LogStore`).
    installing: Arc<std::sync::atomic::AtomicBool>,
}

/// The current snapshot: its meta and its file in the snapshot dir.
#[derive(Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    file: String,
    bytes: u64,
    sha256: String,
}

/// Runs blocking file and database work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| write_err(std::io::Error::other(e.to_string())))?
}

/// The checksum a snapshot file ends with, in hex.
fn trailer_of(path: &Path) -> Result<String, StorageError> {
    use std::io::{Read, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::End(-32)).map_err(read_err)?;
    let mut sum = [0u8; 32];
    file.read_exact(&mut sum).map_err(read_err)?;
    Ok(hex::encode(sum))
}

/// Creates the snapshot dir, 0700: a snapshot holds the whole state.
fn private_dir(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(write_err)
}

/// Creates (or truncates) a snapshot file, 0600.
fn private_file(path: &Path) -> Result<std::fs::File, StorageError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(write_err)
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(write_err)
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
        crate::crash::point("raft-apply-before-commit");
        txn.commit().map_err(write_err)?;
        crate::crash::point("raft-apply-after-commit");
        if keys_changed {
            changes.note_signing_keys();
        }
        Ok(outcomes)
    }

    /// The state machine over `db`, keeping snapshot files in `snapshots/` beside `db_path`.
    pub fn new(db: Arc<Database>, changes: Arc<Changes>, db_path: &Path) -> Result<Self, StorageError> {
        let dir = db_path.parent().unwrap_or(Path::new(".")).join("snapshots");
        let sm = StateMachine { db, changes, dir, installing: Arc::default() };
        sm.forget_inline_snapshot()?;
        sm.remove_partial_files();
        Ok(sm)
    }

    /// Partial files (a snapshot being built, received or installed) left by a crash: nothing
    /// is in progress before the node starts, and each was either renamed into place or is
    /// worthless (R11).
    fn remove_partial_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Earlier versions stored the snapshot inside the database; that copy is dropped (a new
    /// snapshot is built when one is needed).
    fn forget_inline_snapshot(&self) -> Result<(), StorageError> {
        let present = {
            let txn = self.db.begin_read().map_err(read_err)?;
            let t = txn.open_table(RAFT_SNAPSHOT).map_err(read_err)?;
            t.get(OLD_INLINE_SNAPSHOT).map_err(read_err)?.is_some()
        };
        if present {
            let txn = self.db.begin_write().map_err(write_err)?;
            txn.open_table(RAFT_SNAPSHOT).map_err(write_err)?.remove(OLD_INLINE_SNAPSHOT).map_err(write_err)?;
            txn.commit().map_err(write_err)?;
        }
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<CurrentSnapshot>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(RAFT_SNAPSHOT).map_err(read_err)?;
        let Some(v) = t.get(CURRENT_SNAPSHOT).map_err(read_err)? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(read_err)
    }

    /// Raises `flag` (the log store's) while a snapshot is received or installed.
    pub fn reporting_installs_to(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.installing = flag;
        self
    }

    /// The last log id the snapshot named current covers, as `txn` sees it (for the log
    /// store, which purges no further).
    pub(crate) fn current_last_log_id(txn: &redb::WriteTransaction) -> Result<Option<LogId>, redb::Error> {
        let t = txn.open_table(RAFT_SNAPSHOT)?;
        let Some(v) = t.get(CURRENT_SNAPSHOT)? else { return Ok(None) };
        let current: CurrentSnapshot =
            serde_json::from_slice(v.value()).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        Ok(current.meta.last_log_id)
    }

    fn name_current(&self, txn: &redb::WriteTransaction, current: &CurrentSnapshot) -> Result<(), StorageError> {
        let record = serde_json::to_vec(current).map_err(write_err)?;
        txn.open_table(RAFT_SNAPSHOT)
            .map_err(write_err)?
            .insert(CURRENT_SNAPSHOT, record.as_slice())
            .map_err(write_err)?;
        Ok(())
    }

    /// Removes every snapshot file but `keep` (files still open for sending stay readable),
    /// and the received streams too when `received` (a transfer has ended).
    fn remove_other_files(&self, keep: &str, received: bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.ends_with(".snap") || name.ends_with(".part");
            // A file still being received belongs to a transfer in progress.
            if ours && name != keep && (received || !name.starts_with("receiving-")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Streams the state to a new file, names it current and removes the older ones.
    fn build_snapshot_file(&self) -> Result<(SnapshotMeta<u64, openraft::BasicNode>, PathBuf), StorageError> {
        private_dir(&self.dir)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let (last_applied, membership) = Self::read_applied(&txn)?;
        let id = match &last_applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "none".to_string(),
        };
        let part = self.dir.join(format!("{id}.snap.part"));
        let mut file = private_file(&part)?;
        let exported = snapshot::export(&txn, &mut file).map_err(read_err)?;
        file.sync_all().map_err(write_err)?;
        crate::crash::point("raft-snapshot-built");
        drop(txn);
        let snapshot_id = format!("{id}-{}", &exported.sha256[..16]);
        let name = format!("{snapshot_id}.snap");
        std::fs::rename(&part, self.dir.join(&name)).map_err(write_err)?;
        sync_dir(&self.dir)?;
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let current =
            CurrentSnapshot { meta: meta.clone(), file: name.clone(), bytes: exported.bytes, sha256: exported.sha256 };
        let txn = self.db.begin_write().map_err(write_err)?;
        self.name_current(&txn, &current)?;
        txn.commit().map_err(write_err)?;
        self.remove_other_files(&name, false);
        Ok((meta, self.dir.join(name)))
    }

    /// Copies a received snapshot to its own file, imports it in one write transaction with
    /// its applied id and membership, and names it current in that same transaction.
    fn install_snapshot_file(
        &self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        mut source: std::fs::File,
    ) -> Result<(), StorageError> {
        private_dir(&self.dir)?;
        let name = format!("{}.snap", meta.snapshot_id);
        if name.contains('/') || name.starts_with('.') {
            return Err(write_err(std::io::Error::other(format!("a snapshot id that names no file: {name:?}"))));
        }
        let part = self.dir.join(format!("{name}.part"));
        let mut copy = private_file(&part)?;
        source.rewind().map_err(read_err)?;
        let bytes = std::io::copy(&mut source, &mut copy).map_err(write_err)?;
        copy.flush().map_err(write_err)?;
        copy.sync_all().map_err(write_err)?;
        drop(source);
        let input = std::fs::File::open(&part).map_err(read_err)?;
        let txn = self.db.begin_write().map_err(write_err)?;
        if let Err(e) = snapshot::import(&txn, input) {
            drop(txn);
            let _ = std::fs::remove_file(&part);
            return Err(write_err(e));
        }
        Self::write_applied(&txn, &meta.last_log_id, &meta.last_membership)?;
        // The log the snapshot covers goes in the same commit: openraft's own purge may be
        // held back while the install runs (see `LogStore`), and a log left with entries
        // below the snapshot and a gap above them would not load at the next start.
        if let Some(last) = meta.last_log_id {
            crate::log_store::purge_through(&txn, last).map_err(write_err)?;
        }
        std::fs::rename(&part, self.dir.join(&name)).map_err(write_err)?;
        sync_dir(&self.dir)?;
        let sha256 = trailer_of(&self.dir.join(&name))?;
        let current = CurrentSnapshot { meta: meta.clone(), file: name.clone(), bytes, sha256 };
        self.name_current(&txn, &current)?;
        crate::crash::point("raft-snapshot-install-before-commit");
        txn.commit().map_err(write_err)?;
        crate::crash::point("raft-snapshot-install-after-commit");
        self.remove_other_files(&name, true);
        Ok(())
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
        let this = self.clone();
        let (meta, path) = blocking(move || this.build_snapshot_file()).await?;
        let file = tokio::fs::File::open(&path).await.map_err(read_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(file) })
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        // Before openraft can purge the log the snapshot will cover (a transfer given up
        // leaves it raised, which only makes purges wait for the next snapshot).
        self.installing.store(true, std::sync::atomic::Ordering::Release);
        private_dir(&self.dir)?;
        let n = RECEIVING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("receiving-{}-{n}.part", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(write_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let source = snapshot.into_std().await;
        let (this, meta) = (self.clone(), meta.clone());
        let installed = blocking(move || this.install_snapshot_file(&meta, source)).await;
        self.installing.store(false, std::sync::atomic::Ordering::Release);
        installed?;
        self.changes.note_signing_keys();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(current) = self.current_snapshot()? else { return Ok(None) };
        match tokio::fs::File::open(self.dir.join(&current.file)).await {
            Ok(file) => Ok(Some(Snapshot { meta: current.meta, snapshot: Box::new(file) })),
            // Named but gone (removed by hand): openraft builds a new one when it needs one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(read_err(e)),
        }
    }
}
