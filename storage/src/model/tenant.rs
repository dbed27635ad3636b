//! Tenants: isolation boundaries, each its own OIDC issuer.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub v: u8,
    pub id: String,
    pub display_name: String,
    pub status: TenantStatus,
    pub self_registration: bool,
    /// The data key that seals this tenant's secrets.
    pub data_key_id: String,
    pub created_at_ms: i64,
    /// Origins of browser front ends that may call the tenant's sign-in API with credentials
    /// (CORS), each `scheme://host[:port]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// Every sign-in needs a second factor (S44): a password or email sign-in of a user without
    /// an authenticator gets a setup-only session, and passwords may be 8 characters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_mfa: bool,
}

/// Ids that name routes or the appliance itself and can never be tenants created by users.
pub const RESERVED_TENANT_IDS: [&str; 11] =
    ["system", "default", "t", "admin", "v1", "oauth2", "docs", "health", "ready", "metrics", "openapi"];

/// `[a-z0-9][a-z0-9-]{1,62}`.
pub fn is_valid_tenant_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (2..=63).contains(&bytes.len())
        && bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

impl Row for TenantRecord {
    const TABLE: StrTable = tables::TENANTS;
    const NAME: &'static str = "tenants";
    fn key(&self) -> String {
        self.id.clone()
    }
}
