//! Opening the database file: lock, format check, schema preparation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadOnlyDatabase};

use crate::schema::{self, SchemaAction};
use crate::{Reader, StoreError};

/// The first bytes of every redb file.
const REDB_MAGIC: &[u8] = b"redb";

/// An open, schema-checked database, shared by the raft log, the state machine and readers.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    schema_action: SchemaAction,
}

impl Store {
    /// Opens (or creates) the database at `path`, taking redb's exclusive lock, and brings its
    /// schema to the current version. A file that is not a redb database, or is damaged, is
    /// refused before redb writes to it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        precheck(path)?;
        let db = Database::create(path).map_err(|e| map_open_error(path, e))?;
        let txn = db.begin_write()?;
        let schema_action = schema::prepare(&txn)?;
        txn.commit()?;
        Ok(Store { db: Arc::new(db), path: path.to_path_buf(), schema_action })
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
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
    precheck(path)?;
    ReadOnlyDatabase::open(path).map_err(|e| map_open_error(path, e))
}

fn precheck(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(()); // absent: redb creates it
    };
    let mut head = [0u8; 4];
    let read = file.read(&mut head).map_err(|e| StoreError::Database(e.to_string()))?;
    if read == 0 {
        return Ok(()); // empty: redb initialises it
    }
    if read < head.len() || head != REDB_MAGIC {
        return Err(StoreError::NotADatabase {
            path: path.display().to_string(),
            reason: "the file does not start with redb's header".into(),
        });
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
        other => StoreError::NotADatabase { path: path_text, reason: other.to_string() },
    }
}
