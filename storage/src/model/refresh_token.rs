//! Refresh token families (RFC 9700 §4.14): one per grant, rotated on every use. Only the
//! digest of the family's current token is stored; presenting any other token of the family
//! (an old one: a replay, S12) revokes the whole family.

use serde::{Deserialize, Serialize};

use crate::model::CodeToken;
use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFamilyRecord {
    pub v: u8,
    pub tenant: String,
    /// Random, chosen by the issuer: the table key with the tenant.
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
    /// SHA-256 of the one token of the family that is good now, lowercase hex.
    pub current_sha256: String,
    /// How many times the family was rotated.
    pub generation: u64,
    /// When the user signed in, and how (the grant's `auth_time` and `amr`).
    pub auth_time_ms: i64,
    pub amr: Vec<String>,
    pub created_at_ms: i64,
    pub last_used_ms: i64,
    /// Unused this long, the family ends.
    pub idle_ms: i64,
    /// The family ends at this time whatever happens.
    pub expires_at_ms: i64,
    /// The access token the last rotation issued: revoked with the family.
    pub last_access: Option<CodeToken>,
    /// Revoked (a replay, a revocation, its user disabled or given a new password): kept until
    /// it would have expired, so a replay is still recognised.
    pub revoked: bool,
}

impl RefreshFamilyRecord {
    /// Whether a token of the family may still be redeemed at `now_ms`.
    pub fn live_at(&self, now_ms: i64) -> bool {
        !self.revoked && now_ms < self.expires_at_ms && now_ms < self.last_used_ms.saturating_add(self.idle_ms)
    }

    /// When the record may go: once no token of it can be good, and no access token it issued.
    pub fn forget_at_ms(&self) -> i64 {
        let idle_end = self.last_used_ms.saturating_add(self.idle_ms).min(self.expires_at_ms);
        self.last_access.as_ref().map_or(idle_end, |a| idle_end.max(a.exp_ms))
    }
}

pub fn refresh_family_key(tenant: &str, family_id: &str) -> String {
    format!("{tenant}/{family_id}")
}

impl Row for RefreshFamilyRecord {
    const TABLE: StrTable = tables::REFRESH_FAMILIES;
    const NAME: &'static str = "refresh_families";
    fn key(&self) -> String {
        refresh_family_key(&self.tenant, &self.family_id)
    }
}
