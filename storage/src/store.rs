//! Opening the database file: lock, format check, schema preparation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadOnlyDatabase};

use crate::schema::{self, SchemaAction};
use crate::{tables, Reader, StoreError};

/// The first bytes of every redb file.
const REDB_MAGIC: &[u8] = b"redb";

/// An open, schema-checked database, shared by the raft log, the state machine and readers.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    schema_action: SchemaAction,
    changes: Arc<Changes>,
}

/// Counters the state machine moves after it commits changes that caches outside storage keep
/// copies of, so a cache compares one number instead of re-reading records on every use.
#[derive(Debug, Default)]
pub struct Changes {
    signing_keys: std::sync::atomic::AtomicU64,
}

impl Changes {
    /// Moves after every committed change of any tenant's signing keys (and of the tenants
    /// themselves, which create or remove key sets).
    pub fn signing_keys(&self) -> u64 {
        self.signing_keys.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called by the state machine after the commit that changed keys, never before it.
    pub fn note_signing_keys(&self) {
        self.signing_keys.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Memory redb may use for its page cache and write buffer together, unless told otherwise
/// (redb's own default is 1 GiB, which a large import or snapshot install would fill).
pub const DEFAULT_CACHE_BYTES: usize = 24 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the database at `path`, taking redb's exclusive lock, and brings its
    /// schema to the current version. A file that is not a redb database, or is damaged, is
    /// refused before redb writes to it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, true, DEFAULT_CACHE_BYTES)
    }

    /// Opens an existing database only: an absent or empty file is refused rather than
    /// initialised, so a data dir that lost its database never silently becomes a new cluster.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, false, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] (or, without `may_create`, [`Store::open_existing`]) with a cache of
    /// `cache_bytes`.
    pub fn open_with(path: &Path, may_create: bool, cache_bytes: usize) -> Result<Store, StoreError> {
        let empty = precheck(path)?;
        if empty && !may_create {
            return Err(StoreError::NotADatabase {
                path: path.display().to_string(),
                reason: "the file is missing or empty, but the data dir was initialised before".into(),
            });
        }
        if !empty {
            refuse_newer_schema(path)?;
        }
        // An existing file is checked whole (every page's checksum) before it is trusted: a
        // file altered outside redb is refused, never served, voted with or replicated (R20).
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(!empty)
            .create(path)
            .map_err(|e| map_open_error(path, e))?;
        let txn = db.begin_write()?;
        let schema_action = schema::prepare(&txn)?;
        txn.commit()?;
        Ok(Store { db: Arc::new(db), path: path.to_path_buf(), schema_action, changes: Arc::default() })
    }

    /// Makes a new database at `path` (which must not exist) from a snapshot stream: the state
    /// of the cluster it was taken from, as the first node of a new cluster holds it, with no
    /// raft log and no applied position (its own log starts afresh). On any error the file is
    /// removed.
    pub fn restore(path: &Path, input: impl std::io::Read) -> Result<Store, StoreError> {
        if path.exists() {
            return Err(StoreError::Snapshot(format!("{} exists already", path.display())));
        }
        let made = (|| {
            let store = Self::open_with(path, true, DEFAULT_CACHE_BYTES)?;
            let txn = store.db.begin_write()?;
            crate::snapshot::import(&txn, input)?;
            {
                let mut meta = txn.open_table(tables::META)?;
                meta.remove(tables::meta_keys::SM_APPLIED)?;
                meta.remove(tables::meta_keys::SM_MEMBERSHIP)?;
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        // Opened again as any database is (the stream holds the current schema only).
        Self::open_existing(path).inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
    }

    /// One empty durable commit: what was applied without an fsync of its own becomes durable,
    /// so a stopped node's file opens read-only without recovery.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.begin_write()?.commit()?;
        Ok(())
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_action(&self) -> SchemaAction {
        self.schema_action
    }

    pub fn read(&self) -> Result<Reader, StoreError> {
        Reader::begin(self.db.as_ref())
    }

    /// Bytes the file takes on disk.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Opens a stopped node's database without writing to it (for `audit verify` and friends).
pub fn open_read_only(path: &Path) -> Result<ReadOnlyDatabase, StoreError> {
    if !path.exists() {
        return Err(StoreError::NotADatabase {
            path: path.display().to_string(),
            reason: "the file does not exist".into(),
        });
    }
    if precheck(path)? {
        return Err(StoreError::NotADatabase { path: path.display().to_string(), reason: "the file is empty".into() });
    }
    ReadOnlyDatabase::open(path).map_err(|e| match map_open_error(path, e) {
        StoreError::NotADatabase { path, reason } => StoreError::NotADatabase {
            path,
            reason: format!(
                "{reason} (if the node was killed, start it once so the database recovers, or verify a copy of the data dir)"
            ),
        },
        other => other,
    })
}

/// Checks redb's header without opening the database. Returns whether the file is absent or
/// empty (a new database).
fn precheck(path: &Path) -> Result<bool, StoreError> {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(true);
    };
    let mut head = [0u8; 4];
    let read = file.read(&mut head).map_err(|e| StoreError::Database(e.to_string()))?;
    if read == 0 {
        return Ok(true);
    }
    if read < head.len() || head != REDB_MAGIC {
        return Err(StoreError::NotADatabase {
            path: path.display().to_string(),
            reason: "the file does not start with redb's header".into(),
        });
    }
    Ok(false)
}

/// Reads the schema version through a read-only open, so that a database written by a newer
/// gatehouse is refused before this binary opens it for writing (which could change it). A file
/// that needs crash recovery cannot be opened read-only; it is checked after recovery instead.
///
/// redb's read-only open trusts the file, and panics on some files altered outside it: such a
/// panic is caught (quietly) and the file left to the integrity-checked open that follows,
/// which refuses it as corrupted.
fn refuse_newer_schema(path: &Path) -> Result<(), StoreError> {
    // The hook is process-wide: two opens at once must not restore each other's.
    static PEEKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = PEEKING.lock().unwrap_or_else(|p| p.into_inner());
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let peeked = std::panic::catch_unwind(|| peek_schema(path));
    std::panic::set_hook(quiet);
    peeked.unwrap_or(Ok(()))
}

fn peek_schema(path: &Path) -> Result<(), StoreError> {
    let Ok(db) = ReadOnlyDatabase::open(path) else { return Ok(()) };
    // A file that cannot be read here is judged by the checked open that follows.
    let Ok(reader) = Reader::begin(&db) else { return Ok(()) };
    let Ok(Some(raw)) = reader.meta_raw(crate::tables::meta_keys::SCHEMA_VERSION) else { return Ok(()) };
    let found = <[u8; 4]>::try_from(raw.as_slice()).map(u32::from_be_bytes).unwrap_or(0);
    if found > schema::CURRENT_VERSION {
        return Err(StoreError::SchemaTooNew { found, supported: schema::CURRENT_VERSION });
    }
    Ok(())
}

fn map_open_error(path: &Path, e: DatabaseError) -> StoreError {
    let path_text = path.display().to_string();
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path_text },
        DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => {
            StoreError::Locked { path: path_text }
        }
        DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            StoreError::Corrupted { path: path_text, reason }
        }
        other => StoreError::NotADatabase { path: path_text, reason: other.to_string() },
    }
}
