//! Passkeys (WebAuthn discoverable credentials) of end users. The credential itself, as the
//! WebAuthn library keeps it, is an opaque JSON document here; its signature counter is kept
//! beside it so `apply` can compare-and-set it (S47).

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyRecord {
    pub v: u8,
    pub tenant: String,
    /// The credential id, base64url: the table key, unique in the tenant.
    pub credential_id: String,
    pub user_id: String,
    /// A name the user gave it.
    pub name: String,
    /// The credential (public key, counter, flags) as the WebAuthn library serialises it.
    pub passkey: String,
    /// The signature counter the credential last presented.
    pub sign_count: u32,
    pub created_at_ms: i64,
    pub last_used_ms: i64,
}

/// Passkeys one user may hold.
pub const MAX_PER_USER: usize = 32;

pub fn passkey_key(tenant: &str, credential_id: &str) -> String {
    format!("{tenant}/{credential_id}")
}

/// The prefix of a user's entries in the passkeys-by-user index.
pub fn user_passkeys_prefix(tenant: &str, user_id: &str) -> String {
    format!("{tenant}/{user_id}/")
}

impl Row for PasskeyRecord {
    const TABLE: StrTable = tables::PASSKEYS;
    const NAME: &'static str = "passkeys";
    const INDEX: Option<StrTable> = Some(tables::PASSKEYS_BY_USER);
    fn key(&self) -> String {
        passkey_key(&self.tenant, &self.credential_id)
    }
    fn index_entries(&self) -> Vec<(String, Vec<u8>)> {
        let entry = format!("{}{}", user_passkeys_prefix(&self.tenant, &self.user_id), self.credential_id);
        vec![(entry, self.key().into_bytes())]
    }
}
