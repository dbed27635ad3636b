//! A user's consent to a client (OpenID Connect Core §3.1.2.4): the scopes they allowed it,
//! remembered so it is asked once, not on every sign-in.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub v: u8,
    pub tenant: String,
    pub user_id: String,
    pub client_id: String,
    /// Every scope allowed so far, sorted.
    pub scopes: Vec<String>,
    pub granted_at_ms: i64,
}

impl ConsentRecord {
    /// Whether every one of `scopes` is allowed.
    pub fn covers(&self, scopes: &[String]) -> bool {
        scopes.iter().all(|s| self.scopes.contains(s))
    }
}

pub fn consent_key(tenant: &str, user_id: &str, client_id: &str) -> String {
    format!("{tenant}/{user_id}/{client_id}")
}

impl Row for ConsentRecord {
    const TABLE: StrTable = tables::CONSENTS;
    const NAME: &'static str = "consents";
    fn key(&self) -> String {
        consent_key(&self.tenant, &self.user_id, &self.client_id)
    }
}
