//! End-user sessions: a signed-in browser of one tenant. The session id lives only in the
//! cookie; the record holds its SHA-256, so a copy of the data signs nobody in.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub v: u8,
    pub tenant: String,
    /// SHA-256 of the session id, lowercase hex: the table key.
    pub id_sha256: String,
    pub user_id: String,
    /// How the user signed in (`password`, `register`).
    pub method: String,
    pub created_at_ms: i64,
    /// The session ends at this time whatever happens (the absolute timeout).
    pub expires_at_ms: i64,
    /// The session ends when unused for this long (the idle timeout).
    pub idle_timeout_ms: i64,
    /// When it was last seen in use (kept coarsely: a touch is written only now and then).
    pub last_seen_ms: i64,
    /// A password was right but the user's second factor is still to come: the session
    /// serves only the MFA challenge (and logout) until then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_mfa: bool,
    /// The tenant requires a second factor and the user has none yet: the session serves only
    /// adding one (an authenticator or a passkey), then the user signs in again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setup_only: bool,
}

impl SessionRecord {
    /// Whether the session is still good at `now_ms`.
    pub fn live_at(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at_ms && now_ms < self.last_seen_ms.saturating_add(self.idle_timeout_ms)
    }
}

pub fn session_key(tenant: &str, id_sha256: &str) -> String {
    format!("{tenant}/{id_sha256}")
}

/// The prefix of a user's entries in the sessions-by-user index.
pub fn user_sessions_prefix(tenant: &str, user_id: &str) -> String {
    format!("{tenant}/{user_id}/")
}

impl Row for SessionRecord {
    const TABLE: StrTable = tables::SESSIONS;
    const NAME: &'static str = "sessions";
    const INDEX: Option<StrTable> = Some(tables::SESSIONS_BY_USER);
    fn key(&self) -> String {
        session_key(&self.tenant, &self.id_sha256)
    }
    fn index_entries(&self) -> Vec<(String, Vec<u8>)> {
        let entry = format!("{}{}", user_sessions_prefix(&self.tenant, &self.user_id), self.id_sha256);
        vec![(entry, self.key().into_bytes())]
    }
}
