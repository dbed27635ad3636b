//! A remembered answer to an admin API request made with an `Idempotency-Key`.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentResponse {
    pub v: u8,
    /// SHA-256 (hex) of caller, method, route and key: the table key.
    pub scope: String,
    /// SHA-256 (hex) of the request body: a replay with another body is refused.
    pub request_sha256: String,
    pub status: u16,
    /// The answer's body with every secret removed (a secret is shown once).
    pub body: String,
    /// The `ETag` of the answer, if it had one.
    pub etag: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl Row for IdempotentResponse {
    const TABLE: StrTable = tables::IDEMPOTENCY;
    const NAME: &'static str = "idempotency";
    fn key(&self) -> String {
        self.scope.clone()
    }
}
