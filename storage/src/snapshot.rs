//! Snapshot export and import of the replicated tables (never the raft tables, never the
//! derived indexes: those are rebuilt from the rows after an import).
//!
//! A snapshot is a stream, written row by row from one read transaction and read row by row
//! into one write transaction, so neither side holds the state in memory. Layout:
//! `"GHSNAP2\0"`, the schema version (`u32`, which fixes the list of tables), then per table in [`tables::STATE_STR_TABLES`] then
//! [`tables::STATE_U64_TABLES`] order: `count u64`, then each row as `key | value`, where a
//! string key and every value are `len u32 | bytes` and an integer key is `u64`; then the
//! SHA-256 of everything before it. An import that finds a short, long or altered stream fails
//! before its transaction can commit, so a damaged snapshot changes nothing.

use std::io::{BufReader, BufWriter, Read, Write};

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use sha2::{Digest, Sha256};

use crate::{tables, StoreError};

const MAGIC: &[u8; 8] = b"GHSNAP2\0";

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub bytes: u64,
    /// SHA-256 of the stream before the trailer, lowercase hex (the trailer holds it too).
    pub sha256: String,
}

/// Writes the replicated state seen by `txn` to `out`.
pub fn export(txn: &ReadTransaction, out: impl Write) -> Result<Exported, StoreError> {
    let mut w = Hashing { inner: BufWriter::with_capacity(64 * 1024, out), hash: Sha256::new(), bytes: 0 };
    w.put(MAGIC)?;
    w.put(&crate::schema::CURRENT_VERSION.to_be_bytes())?;
    for def in tables::STATE_STR_TABLES {
        let t = txn.open_table(def)?;
        w.put(&t.len()?.to_be_bytes())?;
        for item in t.iter()? {
            let (k, v) = item?;
            w.put_bytes(k.value().as_bytes())?;
            w.put_bytes(v.value())?;
        }
    }
    for def in tables::STATE_U64_TABLES {
        let t = txn.open_table(def)?;
        w.put(&t.len()?.to_be_bytes())?;
        for item in t.iter()? {
            let (k, v) = item?;
            w.put(&k.value().to_be_bytes())?;
            w.put_bytes(v.value())?;
        }
    }
    let digest = w.hash.clone().finalize();
    w.inner.write_all(&digest).map_err(io)?;
    w.inner.flush().map_err(io)?;
    Ok(Exported { bytes: w.bytes + digest.len() as u64, sha256: hex::encode(digest) })
}

/// A digest of the replicated state and the raft index it was applied up to, both from one
/// read transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDigest {
    pub sha256: String,
    pub bytes: u64,
    pub applied_index: Option<u64>,
}

/// [`StateDigest`] of what one read transaction of `db` sees (the stream goes nowhere).
pub fn digest(db: &impl ReadableDatabase) -> Result<StateDigest, StoreError> {
    let txn = db.begin_read()?;
    let applied_index = {
        let meta = txn.open_table(tables::META)?;
        let raw = meta.get(tables::meta_keys::SM_APPLIED)?.map(|v| v.value().to_vec());
        raw.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("index").and_then(serde_json::Value::as_u64))
    };
    let exported = export(&txn, std::io::sink())?;
    Ok(StateDigest { sha256: exported.sha256, bytes: exported.bytes, applied_index })
}

/// Writes what one read transaction of `db` sees to `out` (a running node's database, or a
/// stopped one opened read-only).
pub fn export_database(db: &impl ReadableDatabase, out: impl Write) -> Result<Exported, StoreError> {
    export(&db.begin_read()?, out)
}

/// Replaces every replicated table with the snapshot's rows, inside `txn`, and rebuilds the
/// derived tables. On any error the caller must drop `txn` uncommitted.
pub fn import(txn: &WriteTransaction, input: impl Read) -> Result<(), StoreError> {
    let mut r = Checked { inner: BufReader::with_capacity(64 * 1024, input), hash: Sha256::new() };
    let mut magic = [0u8; 8];
    r.take(&mut magic)?;
    if &magic != MAGIC {
        return Err(StoreError::Snapshot("unknown snapshot format".into()));
    }
    let mut version = [0u8; 4];
    r.take(&mut version)?;
    let version = u32::from_be_bytes(version);
    if version != crate::schema::CURRENT_VERSION {
        let supported = crate::schema::CURRENT_VERSION;
        return Err(StoreError::Snapshot(format!(
            "the snapshot holds schema {version}; this binary reads schema {supported} only (use the same version on both sides)"
        )));
    }
    let mut buf = Vec::new();
    for def in tables::STATE_STR_TABLES {
        let mut t = txn.open_table(def)?;
        t.retain(|_, _| false)?;
        for _ in 0..r.u64()? {
            let key = String::from_utf8(r.bytes(&mut buf)?.to_vec())
                .map_err(|_| StoreError::Snapshot("a key is not UTF-8".into()))?;
            t.insert(key.as_str(), r.bytes(&mut buf)?)?;
        }
    }
    for def in tables::STATE_U64_TABLES {
        let mut t = txn.open_table(def)?;
        t.retain(|_, _| false)?;
        for _ in 0..r.u64()? {
            let key = r.u64()?;
            t.insert(key, r.bytes(&mut buf)?)?;
        }
    }
    let expected = r.hash.clone().finalize();
    let mut trailer = [0u8; 32];
    r.inner.read_exact(&mut trailer).map_err(|_| StoreError::Snapshot("truncated".into()))?;
    if trailer[..] != expected[..] {
        return Err(StoreError::Snapshot("the checksum does not match: the snapshot is damaged".into()));
    }
    if r.inner.read(&mut [0u8; 1]).map_err(io)? != 0 {
        return Err(StoreError::Snapshot("trailing bytes".into()));
    }
    crate::table::rebuild_derived(txn)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Snapshot(e.to_string())
}

/// A writer that hashes and counts what it writes.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.inner.write_all(b).map_err(io)
    }

    fn put_bytes(&mut self, b: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(b.len()).map_err(|_| StoreError::Snapshot("a row is over 4 GiB".into()))?;
        self.put(&len.to_be_bytes())?;
        self.put(b)
    }
}

/// A reader that hashes what it reads.
struct Checked<R: Read> {
    inner: R,
    hash: Sha256,
}

/// No row of ours comes near this; a length beyond it is damage, not a row to allocate for.
const MAX_ROW_BYTES: usize = 64 * 1024 * 1024;

impl<R: Read> Checked<R> {
    fn take(&mut self, out: &mut [u8]) -> Result<(), StoreError> {
        self.inner.read_exact(out).map_err(|_| StoreError::Snapshot("truncated".into()))?;
        self.hash.update(&*out);
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn bytes<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<&'b [u8], StoreError> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        let len = u32::from_be_bytes(b) as usize;
        if len > MAX_ROW_BYTES {
            return Err(StoreError::Snapshot(format!("a row of {len} bytes: the snapshot is damaged")));
        }
        buf.resize(len, 0);
        self.take(buf)?;
        Ok(buf)
    }
}
