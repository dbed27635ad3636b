//! openraft's storage conformance suite, run against the real redb-backed stores.

use gatehouse_storage::Store;
use openraft::testing::{StoreBuilder, Suite};

use crate::types::{StorageError, TypeConfig};
use crate::{LogStore, StateMachine};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(crate::types::write_err)?;
        let store = Store::open(&dir.path().join("gatehouse.redb")).map_err(crate::types::write_err)?;
        let sm = StateMachine::new(store.db().clone(), store.changes().clone(), store.path())?;
        Ok((dir, LogStore::new(store.db().clone()), sm))
    }
}

#[test]
fn openraft_storage_suite_passes() -> Result<(), StorageError> {
    Suite::test_all(RedbBuilder)
}
