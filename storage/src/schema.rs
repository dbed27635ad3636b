//! The stored schema version and the migrations between versions.
//!
//! Version history:
//! - 1: audit entries without a head record (the head was derived on every start).
//! - 2: the audit head record (count and last hash) is kept beside the chain, so a deleted
//!   last entry is visible to `audit verify`.
//! - 3: the `clients`, `bindings`, `revoked_tokens`, `users`, `usernames`, `organizations` and
//!   `memberships`, `idempotency`, `used_assertions` and `roles` tables (created empty).
//! - 4: the derived `bindings_by_subject` index (built from the bindings).
//! - 5: the `sessions` table (created empty) and its derived `sessions_by_user` index.
//! - 6: the `lockouts` table (created empty).
//! - 7: the `email_tokens` and `outbox` tables (created empty).
//! - 8: the `passkeys` and `used_challenges` tables and the derived `passkeys_by_user` index
//!   (created empty).
//! - 9: the `avatars` table (created empty).
//! - 10: the derived `email_tokens_by_user` index (built from the tokens).
//! - 11: the `authorization_codes` table (created empty).
//! - 12: the `consents` table (created empty).
//! - 13: the `refresh_families` table (created empty).
//!
//! Migrations run in one write transaction at open, before anything else reads the state.
//! They are local format changes that every node makes identically, so they are not raft
//! commands.

use redb::{ReadableTable, WriteTransaction};

use crate::audit::{AuditEntry, AuditHead, GENESIS_HASH};
use crate::{codec, tables, StoreError};

pub const CURRENT_VERSION: u32 = 13;

/// What opening found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaAction {
    Created,
    UpToDate,
    Migrated { from: u32 },
}

/// Creates every table, then checks or migrates the schema version, inside `txn`.
pub fn prepare(txn: &WriteTransaction) -> Result<SchemaAction, StoreError> {
    let found = {
        let meta = txn.open_table(tables::META)?;
        let raw = meta.get(tables::meta_keys::SCHEMA_VERSION)?.map(|v| v.value().to_vec());
        raw.map(|bytes| -> Result<u32, StoreError> {
            let arr: [u8; 4] = bytes.as_slice().try_into().map_err(|_| StoreError::Decode {
                table: "meta",
                key: tables::meta_keys::SCHEMA_VERSION.into(),
                reason: "not a 4-byte version".into(),
            })?;
            Ok(u32::from_be_bytes(arr))
        })
        .transpose()?
    };
    create_tables(txn)?;
    let action = match found {
        None => SchemaAction::Created,
        Some(v) if v == CURRENT_VERSION => return Ok(SchemaAction::UpToDate),
        Some(v) if v > CURRENT_VERSION => {
            return Err(StoreError::SchemaTooNew { found: v, supported: CURRENT_VERSION })
        }
        Some(v) => {
            let mut version = v;
            while version < CURRENT_VERSION {
                version = migrate_from(txn, version)?;
            }
            SchemaAction::Migrated { from: v }
        }
    };
    set_version(txn, CURRENT_VERSION)?;
    Ok(action)
}

fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    for def in tables::STATE_STR_TABLES {
        txn.open_table(def)?;
    }
    for def in tables::STATE_U64_TABLES {
        txn.open_table(def)?;
    }
    for def in tables::DERIVED_TABLES {
        txn.open_table(def)?;
    }
    txn.open_table(tables::RAFT_LOG)?;
    txn.open_table(tables::RAFT_STATE)?;
    txn.open_table(tables::RAFT_SNAPSHOT)?;
    Ok(())
}

/// Writes the version marker (also used by tests to build older fixtures).
pub fn set_version(txn: &WriteTransaction, version: u32) -> Result<(), StoreError> {
    let mut meta = txn.open_table(tables::META)?;
    meta.insert(tables::meta_keys::SCHEMA_VERSION, version.to_be_bytes().as_slice())?;
    Ok(())
}

/// Runs the one migration from `version` and returns the version it produced.
fn migrate_from(txn: &WriteTransaction, version: u32) -> Result<u32, StoreError> {
    match version {
        1 => {
            v1_to_v2(txn)?;
            Ok(2)
        }
        // The new tables are created by `create_tables` before migrations run.
        2 => Ok(3),
        3 => {
            crate::table::rebuild_derived(txn)?;
            Ok(4)
        }
        // The sessions table and its index are created empty by `create_tables`.
        4 => Ok(5),
        // The lockouts table is created empty by `create_tables`.
        5 => Ok(6),
        // So are the email tables.
        6 => Ok(7),
        // And the passkey tables.
        7 => Ok(8),
        // And the avatars table.
        8 => Ok(9),
        9 => {
            crate::table::rebuild_derived(txn)?;
            Ok(10)
        }
        // The authorization codes table is created empty by `create_tables`.
        10 => Ok(11),
        // The consents table is created empty by `create_tables`.
        11 => Ok(12),
        // The refresh families table is created empty by `create_tables`.
        12 => Ok(13),
        other => Err(StoreError::SchemaUnknown { found: other }),
    }
}

/// Derives the audit head from the chain as version 1 stored it. The chain itself is not
/// judged here; `audit verify` does that.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let audit = txn.open_table(tables::AUDIT)?;
    let head = match audit.last()? {
        None => AuditHead::empty(),
        Some((k, v)) => {
            let hash = AuditEntry::from_bytes(v.value()).map(|e| e.hash).unwrap_or(GENESIS_HASH);
            AuditHead { v: 1, count: k.value(), last_hash: hex::encode(hash) }
        }
    };
    let mut meta = txn.open_table(tables::META)?;
    meta.insert(tables::meta_keys::AUDIT_HEAD, codec::encode(&head).as_slice())?;
    Ok(())
}
