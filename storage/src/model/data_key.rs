//! Data keys: per-scope keys that seal secrets, themselves wrapped by the KEK.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

use super::Sealed;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyRecord {
    pub v: u8,
    pub id: String,
    /// What the key protects (`tenant:{id}`); shredding a scope destroys this record.
    pub scope: String,
    /// The key wrapped under the KEK.
    pub wrapped: Sealed,
    pub created_at_ms: i64,
}

impl Row for DataKeyRecord {
    const TABLE: StrTable = tables::DATA_KEYS;
    const NAME: &'static str = "data_keys";
    fn key(&self) -> String {
        self.id.clone()
    }
}
