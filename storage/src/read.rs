//! Typed reads over one redb read transaction: a consistent view of the state.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use crate::audit::{self, AuditEntry, AuditHead, VerifyReport};
use crate::model::{ClusterRecord, DataKeyRecord, SigningKeyRecord, TenantRecord};
use crate::{codec, tables, StoreError};

pub struct Reader {
    txn: ReadTransaction,
}

impl Reader {
    pub fn begin(db: &impl ReadableDatabase) -> Result<Reader, StoreError> {
        Ok(Reader { txn: db.begin_read()? })
    }

    pub fn cluster(&self) -> Result<Option<ClusterRecord>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        let key = tables::meta_keys::CLUSTER;
        meta.get(key)?.map(|v| codec::decode("meta", key, v.value())).transpose()
    }

    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let t = self.txn.open_table(tables::TENANTS)?;
        t.get(id)?.map(|v| codec::decode("tenants", id, v.value())).transpose()
    }

    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let t = self.txn.open_table(tables::TENANTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push(codec::decode("tenants", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The signing keys of one tenant, in kid order.
    pub fn signing_keys(&self, tenant: &str) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let t = self.txn.open_table(tables::SIGNING_KEYS)?;
        let start = format!("{tenant}/");
        let end = format!("{tenant}0"); // '0' sorts right after '/'
        let mut out = Vec::new();
        for item in t.range(start.as_str()..end.as_str())? {
            let (k, v) = item?;
            out.push(codec::decode("signing_keys", k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn data_key(&self, id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        let t = self.txn.open_table(tables::DATA_KEYS)?;
        t.get(id)?.map(|v| codec::decode("data_keys", id, v.value())).transpose()
    }

    pub fn audit_head(&self) -> Result<AuditHead, StoreError> {
        audit::read_head(&self.txn.open_table(tables::META)?)
    }

    /// Up to `limit` audit entries from sequence number `from` on.
    pub fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let t = self.txn.open_table(tables::AUDIT)?;
        let mut out = Vec::new();
        for item in t.range(from..)?.take(limit) {
            let (k, v) = item?;
            let entry = AuditEntry::from_bytes(v.value()).ok_or_else(|| StoreError::Decode {
                table: "audit",
                key: k.value().to_string(),
                reason: "not a well-formed audit entry".into(),
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    pub fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        audit::verify(&self.txn.open_table(tables::META)?, &self.txn.open_table(tables::AUDIT)?)
    }

    /// A raw singleton from the meta table (used by the raft crate for its own records).
    pub fn meta_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        Ok(meta.get(key)?.map(|v| v.value().to_vec()))
    }
}
