//! The data dir: its permissions, the node id, and the paths of everything in it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    #[error("data dir {path} is accessible by other users (mode {mode:o}); run `chmod 700 {path}`")]
    NotPrivate { path: String, mode: u32 },
    #[error("{path} must be readable by its owner only (mode {mode:o}); run `chmod 600 {path}`")]
    FileNotPrivate { path: String, mode: u32 },
    #[error("data dir {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path} does not hold a node id")]
    BadNodeId { path: String },
    #[error("data dir {path} is already initialised")]
    AlreadyInitialised { path: String },
}

/// A checked data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

fn io_err(path: &Path, e: std::io::Error) -> DataDirError {
    DataDirError::Io { path: path.display().to_string(), reason: e.to_string() }
}

impl DataDir {
    /// Opens the dir, creating it (0700) when absent; refuses one that others can enter.
    pub fn open_or_create(root: &Path) -> Result<DataDir, DataDirError> {
        if !root.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(|e| io_err(root, e))?;
        }
        DataDir::open_existing(root)
    }

    /// Opens an existing dir without creating anything.
    pub fn open_existing(root: &Path) -> Result<DataDir, DataDirError> {
        let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(DataDirError::NotPrivate { path: root.display().to_string(), mode });
        }
        Ok(DataDir { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join("gatehouse.redb")
    }
    pub fn kek_path(&self) -> PathBuf {
        self.root.join("kek")
    }
    pub fn node_id_path(&self) -> PathBuf {
        self.root.join("node.id")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn ca_cert_path(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }
    pub fn server_cert_path(&self) -> PathBuf {
        self.tls_dir().join("server.pem")
    }
    pub fn server_key_path(&self) -> PathBuf {
        self.tls_dir().join("server.key.sealed")
    }
    /// This member's node certificate and the node intermediate (PEM).
    pub fn node_cert_path(&self) -> PathBuf {
        self.tls_dir().join("node.pem")
    }
    pub fn node_key_path(&self) -> PathBuf {
        self.tls_dir().join("node.key.sealed")
    }
    /// Written by `cluster join` before anything else: this dir belongs to a cluster it
    /// joined, so it never founds one of its own, even after a crash mid-join.
    pub fn joined_marker(&self) -> PathBuf {
        self.root.join("cluster.joined")
    }

    /// True when this dir has held a node: its database or its node id exists. (The node id is
    /// written only after the database was created.)
    pub fn is_initialised(&self) -> bool {
        self.db_path().exists() || self.node_id_path().exists()
    }

    /// Creates `tls/` (0700) if needed; called only after every start-up check has passed.
    pub fn ensure_tls_dir(&self) -> Result<(), DataDirError> {
        let tls = self.tls_dir();
        if !tls.exists() {
            std::fs::DirBuilder::new().mode(0o700).create(&tls).map_err(|e| io_err(&tls, e))?;
        }
        Ok(())
    }

    /// Reads the node id, creating a random one on first start.
    pub fn node_id(&self) -> Result<u64, DataDirError> {
        let path = self.node_id_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => u64::from_str_radix(text.trim(), 16)
                .map_err(|_| DataDirError::BadNodeId { path: path.display().to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = new_node_id();
                self.write_node_id(id)?;
                Ok(id)
            }
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

impl DataDir {
    pub fn write_node_id(&self, id: u64) -> Result<(), DataDirError> {
        write_private(&self.node_id_path(), format!("{id:016x}\n").as_bytes())
    }
}

/// A random node id, never 0 so that 0 can mean "none" in metrics.
pub fn new_node_id() -> u64 {
    let mut b = [0u8; 8];
    crate::clock::random_bytes(&mut b);
    (u64::from_be_bytes(b) >> 1).max(1)
}

/// Restricts an existing file to its owner (no-op when it already is).
pub fn make_private(path: &Path) -> Result<(), DataDirError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| io_err(path, e))?;
    }
    Ok(())
}

/// Writes a new file readable by its owner only, fsyncs it, then renames it into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes a file that others may read (certificates), atomically: temp file, fsync, rename.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads a secret file, refusing one that others can read.
pub fn read_private(path: &Path) -> Result<Vec<u8>, DataDirError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::FileNotPrivate { path: path.display().to_string(), mode });
    }
    std::fs::read(path).map_err(|e| io_err(path, e))
}
