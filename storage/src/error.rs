//! Storage failures: the node cannot go on with this request (business refusals are
//! [`crate::Rejection`] values instead).

/// A failure of the database or of a record's encoding. Never a business refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "the database {path} is in use by another process (is a gatehouse node already running on this data dir?)"
    )]
    Locked { path: String },
    #[error("{path} is not a usable Gatehouse database: {reason}")]
    NotADatabase { path: String, reason: String },
    #[error(
        "{path} is corrupted ({reason}); this node does not serve or vote with it. On a cluster member, remove the data dir and join again with a new token (it gets the state from the others); on a single node, restore the latest backup"
    )]
    Corrupted { path: String, reason: String },
    #[error(
        "the database schema version is {found}, newer than this binary supports ({supported}); run a newer gatehouse"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("the database schema version {found} is unknown; it cannot be migrated")]
    SchemaUnknown { found: u32 },
    #[error("record {table}/{key} cannot be decoded: {reason}")]
    Decode { table: &'static str, key: String, reason: String },
    #[error("snapshot data is malformed: {0}")]
    Snapshot(String),
    #[error("database failure: {0}")]
    Database(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
