//! Typed tables: each record type knows its table, its key and its derived index, so key
//! encodings, key ranges and index upkeep are written here once and nowhere else.
//!
//! A derived index is kept in the same write transaction as its rows by [`Rows::put`] and
//! [`Rows::delete`]. Indexes that are not part of a snapshot ([`tables::DERIVED_TABLES`]) are
//! rebuilt from their rows by [`rebuild_derived`] after a snapshot is installed or a migration.

use std::marker::PhantomData;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};

use crate::{codec, StoreError};

pub type StrTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// A record stored in one string-keyed table.
pub trait Row: Serialize + DeserializeOwned {
    /// The table holding the rows.
    const TABLE: StrTable;
    /// The table's name, for decode errors.
    const NAME: &'static str;
    /// The derived index, if the record has one.
    const INDEX: Option<StrTable> = None;

    /// The row's key in [`Row::TABLE`].
    fn key(&self) -> String;

    /// The row's entries in [`Row::INDEX`], each as key and value.
    fn index_entries(&self) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
}

/// The rows of one tenant: keys of `{tenant}/…` tables start with this.
pub fn tenant_prefix(tenant: &str) -> String {
    format!("{tenant}/")
}

/// Decodes the row stored under `key`, if any.
pub fn get<R: Row>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<R>, StoreError> {
    table.get(key)?.map(|v| codec::decode(R::NAME, key, v.value())).transpose()
}

/// Every `(key, row)` whose key starts with `prefix`, in key order, until `visit` says stop.
pub fn scan<R: Row>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    visit: impl FnMut(&str, R) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    scan_from(table, prefix, prefix, visit)
}

/// Like [`scan`], starting at key `from` (at or after `prefix`).
fn scan_from<R: Row>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    from: &str,
    mut visit: impl FnMut(&str, R) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    // Keys under a prefix are contiguous from it on: stop at the first that is not.
    for item in table.range(from..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        let row: R = codec::decode(R::NAME, k.value(), v.value())?;
        if !visit(k.value(), row)? {
            break;
        }
    }
    Ok(())
}

/// Every row whose key starts with `prefix` that `keep` accepts, in key order.
pub fn rows_under<R: Row>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    keep: impl Fn(&R) -> bool,
) -> Result<Vec<R>, StoreError> {
    let mut out = Vec::new();
    scan(table, prefix, |_, row: R| {
        if keep(&row) {
            out.push(row);
        }
        Ok(true)
    })?;
    Ok(out)
}

/// One page of rows under `prefix` (a tenant's, an organization's) in key order: up to `limit`
/// rows that `keep` accepts, after the one with key `{prefix}{after}` when given.
pub fn page<R: Row>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    keep: impl Fn(&R) -> bool,
) -> Result<Vec<R>, StoreError> {
    let from = match after {
        Some(id) => format!("{prefix}{id}"),
        None => prefix.to_string(),
    };
    let mut out = Vec::new();
    scan_from(table, prefix, &from, |key, row: R| {
        if after.is_some() && key == from {
            return Ok(true);
        }
        if out.len() >= limit {
            return Ok(false);
        }
        if keep(&row) {
            out.push(row);
        }
        Ok(true)
    })?;
    Ok(out)
}

/// The values of the index entries whose key starts with `prefix`.
pub fn index_values(
    index: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    for item in index.range(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(v.value().to_vec());
    }
    Ok(out)
}

/// A record table open for writing, with its derived index.
pub struct Rows<'t, R: Row> {
    table: Table<'t, &'static str, &'static [u8]>,
    index: Option<Table<'t, &'static str, &'static [u8]>>,
    _row: PhantomData<R>,
}

impl<'t, R: Row> Rows<'t, R> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let index = R::INDEX.map(|def| txn.open_table(def)).transpose()?;
        Ok(Rows { table: txn.open_table(R::TABLE)?, index, _row: PhantomData })
    }

    pub fn get(&self, key: &str) -> Result<Option<R>, StoreError> {
        get(&self.table, key)
    }

    pub fn contains(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.table.get(key)?.is_some())
    }

    /// Rows under `prefix` that `keep` accepts.
    pub fn under(&self, prefix: &str, keep: impl Fn(&R) -> bool) -> Result<Vec<R>, StoreError> {
        rows_under(&self.table, prefix, keep)
    }

    /// The rows whose index entries start with `prefix` (the index's values are row keys).
    pub fn by_index(&self, prefix: &str) -> Result<Vec<R>, StoreError> {
        let Some(index) = &self.index else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for key in index_values(index, prefix)? {
            let key = String::from_utf8_lossy(&key);
            if let Some(row) = self.get(&key)? {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The value of one entry of the derived index, if present.
    pub fn index_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(index) = &self.index else { return Ok(None) };
        Ok(index.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Writes `row` under its key, replacing the row there and its index entries.
    pub fn put(&mut self, row: &R) -> Result<(), StoreError> {
        let key = row.key();
        // Only an indexed row needs the old one read back: its entries may differ.
        if self.index.is_some() {
            if let Some(old) = self.get(&key)? {
                self.unindex(&old)?;
            }
        }
        self.table.insert(key.as_str(), codec::encode(row).as_slice())?;
        if let Some(index) = &mut self.index {
            for (k, v) in row.index_entries() {
                index.insert(k.as_str(), v.as_slice())?;
            }
        }
        Ok(())
    }

    /// Removes the row under `key` and its index entries; whether there was one.
    pub fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        if self.index.is_some() {
            let Some(old) = self.get(key)? else { return Ok(false) };
            self.unindex(&old)?;
        }
        Ok(self.table.remove(key)?.is_some())
    }

    /// Removes every row under `prefix` that `doomed` accepts; returns how many.
    pub fn delete_under(&mut self, prefix: &str, doomed: impl Fn(&R) -> bool) -> Result<usize, StoreError> {
        let mut rows = Vec::new();
        scan(&self.table, prefix, |key, row: R| {
            if doomed(&row) {
                rows.push((key.to_string(), row));
            }
            Ok(true)
        })?;
        // The rows are decoded already: unindex them as they are, not read back one by one.
        for (key, row) in &rows {
            self.unindex(row)?;
            self.table.remove(key.as_str())?;
        }
        Ok(rows.len())
    }

    fn unindex(&mut self, row: &R) -> Result<(), StoreError> {
        if let Some(index) = &mut self.index {
            for (k, _) in row.index_entries() {
                index.remove(k.as_str())?;
            }
        }
        Ok(())
    }
}

/// A set of keys that each expire (revoked tokens, used client assertions): the value is the
/// expiry in ms since the epoch, big-endian, after which the entry may be pruned.
pub struct Expiring<'t> {
    table: Table<'t, &'static str, &'static [u8]>,
}

/// The expiry stored in an [`Expiring`] value (unreadable values never expire).
pub fn expiry_of(value: &[u8]) -> i64 {
    <[u8; 8]>::try_from(value).map(i64::from_be_bytes).unwrap_or(i64::MAX)
}

impl<'t> Expiring<'t> {
    pub fn open(txn: &'t WriteTransaction, def: StrTable) -> Result<Self, StoreError> {
        Ok(Expiring { table: txn.open_table(def)? })
    }

    pub fn contains(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.table.get(key)?.is_some())
    }

    pub fn insert(&mut self, key: &str, expires_at_ms: i64) -> Result<(), StoreError> {
        self.table.insert(key, expires_at_ms.to_be_bytes().as_slice())?;
        Ok(())
    }

    /// Removes the entries that expired before `now_ms`; returns how many.
    pub fn prune(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        self.table.retain(|_, v| {
            let keep = expiry_of(v) >= now_ms;
            removed += u64::from(!keep);
            keep
        })?;
        Ok(removed)
    }

    /// Removes every entry under `prefix` (a non-empty one: this never clears the table).
    pub fn clear_under(&mut self, prefix: &str) -> Result<(), StoreError> {
        if prefix.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::new();
        for item in self.table.range(prefix..)? {
            let (k, _) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            keys.push(k.value().to_string());
        }
        for key in keys {
            self.table.remove(key.as_str())?;
        }
        Ok(())
    }
}

/// Rebuilds every derived table that snapshots leave out, from the rows it indexes.
pub fn rebuild_derived(txn: &WriteTransaction) -> Result<(), StoreError> {
    rebuild::<crate::model::BindingRecord>(txn)?;
    rebuild::<crate::model::SessionRecord>(txn)?;
    rebuild::<crate::model::PasskeyRecord>(txn)?;
    rebuild::<crate::model::EmailTokenRecord>(txn)
}

fn rebuild<R: Row>(txn: &WriteTransaction) -> Result<(), StoreError> {
    let Some(def) = R::INDEX else { return Ok(()) };
    let rows = txn.open_table(R::TABLE)?;
    let mut index = txn.open_table(def)?;
    index.retain(|_, _| false)?;
    for item in rows.iter()? {
        let (k, v) = item?;
        let row: R = codec::decode(R::NAME, k.value(), v.value())?;
        for (ik, iv) in row.index_entries() {
            index.insert(ik.as_str(), iv.as_slice())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;
    use crate::model::RoleRecord;

    fn role(tenant: &str, name: &str) -> RoleRecord {
        RoleRecord {
            v: 1,
            tenant: tenant.into(),
            name: name.into(),
            template: "viewer".into(),
            add: vec![],
            remove: vec![],
            created_at_ms: 1,
        }
    }

    #[test]
    fn rows_under_a_prefix_are_exactly_the_keys_that_start_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rows: Rows<'_, RoleRecord> = Rows::open(&txn).unwrap();
            for (tenant, name) in [("acme", "a"), ("acme", "zz"), ("acme-2", "x"), ("acm", "e"), ("acmf", "a")] {
                rows.put(&role(tenant, name)).unwrap();
            }
            // `acme0` sorts right after every `acme/…` key, `acme-2/` right before.
            rows.put(&RoleRecord { tenant: "acme0".into(), ..role("acme0", "q") }).unwrap();
            let names = |rows: &Rows<'_, RoleRecord>, prefix: &str| -> Vec<String> {
                rows.under(prefix, |_| true).unwrap().into_iter().map(|r| format!("{}/{}", r.tenant, r.name)).collect()
            };
            assert_eq!(names(&rows, "acme/"), vec!["acme/a", "acme/zz"]);
            assert_eq!(names(&rows, "acme-2/"), vec!["acme-2/x"]);
            assert!(names(&rows, "\u{10FFFF}").is_empty(), "a prefix with no successor matches nothing");
            assert_eq!(rows.delete_under("acme/", |_| true).unwrap(), 2);
            assert_eq!(names(&rows, "").len(), 4, "the other tenants' rows are untouched");
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let t = read.open_table(crate::tables::ROLES).unwrap();
        let first: Vec<RoleRecord> = page(&t, "acm/", None, 10, |_| true).unwrap();
        assert_eq!(first, vec![role("acm", "e")]);
        let after: Vec<RoleRecord> = page(&t, "acm/", Some("e"), 10, |_| true).unwrap();
        assert!(after.is_empty(), "after the last row of its prefix a page is empty, not the next tenant's");
    }
}
