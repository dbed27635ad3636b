//! Record encoding: versioned JSON documents, decoded with the table and key named on failure.

use serde::{de::DeserializeOwned, Serialize};

use crate::StoreError;

/// Encodes a record. Records are plain data, so encoding cannot fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a record read from `table` under `key`.
pub fn decode<T: DeserializeOwned>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode { table, key: key.to_string(), reason: e.to_string() })
}
