//! Backup and restore. A backup is one read transaction's view of the replicated state (the
//! snapshot stream, checksummed), sealed under a key derived from the KEK, written while the
//! node serves. A restore makes a new one-node cluster from it, in a fresh data dir; joins can
//! grow it. Both run in constant memory.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use gatehouse_storage::snapshot::Exported;
use gatehouse_storage::{Store, StoreError};

use crate::crypto::kek::KekError;
use crate::crypto::sealed_stream::{OpeningReader, SealingWriter, StreamError};
use crate::crypto::{KeyProvider, LocalKek};
use crate::datadir::{DataDir, DataDirError};

/// What the backup key is derived for: the same KEK opens it on every node of the cluster.
const KEY_PURPOSE: &str = "backup/v1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{0} exists already: a backup never overwrites a file")]
    Exists(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("restore makes a new node, and {0} holds one already: give an empty or absent data dir")]
    Initialised(String),
    #[error("restore needs the KEK of the cluster the backup was taken from: set GATEHOUSE_KEK")]
    NoKek,
    #[error(transparent)]
    Sealed(#[from] StreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::File { path: path.display().to_string(), reason: e.to_string() }
}

/// The file a backup is written to until it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// What a backup wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
    /// The SHA-256 of the state stream inside (its own trailer holds it too).
    pub state_sha256: String,
}

/// Writes a backup to `path` (0600, never over an existing file): `export` streams the state
/// into the sealing writer; the file appears under its name only once complete and synced.
pub fn write(
    path: &Path,
    kek: &dyn KeyProvider,
    export: impl FnOnce(&mut dyn Write) -> Result<Exported, StoreError>,
) -> Result<Written, BackupError> {
    if path.exists() {
        return Err(BackupError::Exists(path.display().to_string()));
    }
    let part = partial_path(path);
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&part).map_err(|e| match e
        .kind()
    {
        std::io::ErrorKind::AlreadyExists => BackupError::File {
            path: part.display().to_string(),
            reason: "exists: another backup to this file is running, or one was cut short (remove it)".into(),
        },
        _ => file_err(&part, e),
    })?;
    let result = (|| {
        let key = kek.derive(KEY_PURPOSE);
        let mut sealing =
            SealingWriter::new(BufWriter::with_capacity(256 * 1024, file), &key).map_err(|e| file_err(&part, e))?;
        let exported = export(&mut sealing)?;
        let (bytes, out) = sealing.finish().map_err(|e| file_err(&part, e))?;
        let file = out.into_inner().map_err(|e| file_err(&part, e.error()))?;
        file.sync_all().map_err(|e| file_err(&part, e))?;
        Ok((bytes, exported))
    })();
    let (bytes, exported) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    // A hard link never replaces a file that appeared meanwhile; then the partial name goes.
    let linked = std::fs::hard_link(&part, path);
    let _ = std::fs::remove_file(&part);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => BackupError::Exists(path.display().to_string()),
        _ => file_err(path, e),
    })?;
    sync_parent(path)?;
    Ok(Written { path: path.display().to_string(), bytes, state_sha256: exported.sha256 })
}

/// What a restore made.
#[derive(Debug, Clone)]
pub struct Restored {
    pub tenants: usize,
    pub audit_entries: u64,
}

/// Makes a new one-node cluster's data dir at `data_dir` (absent or empty) from the backup
/// `file`, opened with the KEK from `kek_env` (or a `kek` file already placed in the dir).
/// Nothing is left in the dir when it fails, but the dir itself and a placed `kek` file.
pub fn restore(file: &Path, data_dir: &Path, kek_env: Option<&str>) -> Result<Restored, BackupError> {
    let dir = DataDir::open_or_create(data_dir)?;
    if dir.is_initialised() {
        return Err(BackupError::Initialised(data_dir.display().to_string()));
    }
    let kek = match LocalKek::load(&dir, kek_env, false) {
        Err(KekError::Missing(_)) => return Err(BackupError::NoKek),
        other => other?,
    };
    let input = std::fs::File::open(file).map_err(|e| file_err(file, e))?;
    let state = OpeningReader::new(BufReader::with_capacity(256 * 1024, input), &kek.derive(KEY_PURPOSE))?;
    let restoring = dir.root().join("gatehouse.redb.restoring");
    let _ = std::fs::remove_file(&restoring);
    let store = Store::restore(&restoring, state)?;
    let summary =
        store.read().and_then(|r| Ok(Restored { tenants: r.tenants()?.len(), audit_entries: r.audit_head()?.count }));
    drop(store);
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&restoring);
            return Err(e.into());
        }
    };
    std::fs::rename(&restoring, dir.db_path()).map_err(|e| file_err(&dir.db_path(), e))?;
    crate::datadir::make_private(&dir.db_path())?;
    sync_parent(&dir.db_path())?;
    Ok(summary)
}

fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| file_err(parent, e))
}
