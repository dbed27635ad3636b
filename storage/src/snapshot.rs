//! Snapshot export and import of the replicated tables (never the raft tables, never the
//! derived indexes: those are rebuilt from the rows after an import).
//!
//! Layout: `"GHSNAP1\0"`, then per table in [`tables::STATE_STR_TABLES`] then
//! [`tables::STATE_U64_TABLES`] order: `count u64`, then each row as `key | value`, where a
//! string key and every value are `len u32 | bytes` and an integer key is `u64`.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::{tables, StoreError};

const MAGIC: &[u8; 8] = b"GHSNAP1\0";

pub fn export(txn: &ReadTransaction) -> Result<Vec<u8>, StoreError> {
    let mut out = MAGIC.to_vec();
    for def in tables::STATE_STR_TABLES {
        let t = txn.open_table(def)?;
        out.extend_from_slice(&t.len()?.to_be_bytes());
        for item in t.iter()? {
            let (k, v) = item?;
            put_bytes(&mut out, k.value().as_bytes());
            put_bytes(&mut out, v.value());
        }
    }
    for def in tables::STATE_U64_TABLES {
        let t = txn.open_table(def)?;
        out.extend_from_slice(&t.len()?.to_be_bytes());
        for item in t.iter()? {
            let (k, v) = item?;
            out.extend_from_slice(&k.value().to_be_bytes());
            put_bytes(&mut out, v.value());
        }
    }
    Ok(out)
}

/// Replaces every replicated table with the snapshot's rows, inside `txn`.
pub fn import(txn: &WriteTransaction, data: &[u8]) -> Result<(), StoreError> {
    let mut r = Cursor { rest: data };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(StoreError::Snapshot("unknown snapshot format".into()));
    }
    for def in tables::STATE_STR_TABLES {
        let mut t = txn.open_table(def)?;
        t.retain(|_, _| false)?;
        for _ in 0..r.u64()? {
            let k = String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| StoreError::Snapshot("a key is not UTF-8".into()))?;
            let v = r.bytes()?;
            t.insert(k.as_str(), v)?;
        }
    }
    for def in tables::STATE_U64_TABLES {
        let mut t = txn.open_table(def)?;
        t.retain(|_, _| false)?;
        for _ in 0..r.u64()? {
            let k = r.u64()?;
            let v = r.bytes()?;
            t.insert(k, v)?;
        }
    }
    if !r.rest.is_empty() {
        return Err(StoreError::Snapshot("trailing bytes".into()));
    }
    crate::table::rebuild_derived(txn)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(StoreError::Snapshot("truncated".into()));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| StoreError::Snapshot("truncated".into()))?;
        Ok(u64::from_be_bytes(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| StoreError::Snapshot("truncated".into()))?;
        self.take(u32::from_be_bytes(b) as usize)
    }
}
