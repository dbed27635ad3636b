//! The cluster: its id, the node that founded it, and its certificate authority.

use serde::{Deserialize, Serialize};

use super::Sealed;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    pub cert_pem: String,
    /// PKCS#8 private key, sealed under the `system` tenant's data key.
    pub key: Sealed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub v: u8,
    pub cluster_id: String,
    pub founding_node: u64,
    pub ca: CaRecord,
    pub created_at_ms: i64,
    /// The intermediate that signs node certificates (cluster port, and each node's HTTPS
    /// certificate). Absent until `cluster init`: a one-node deployment needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ca: Option<CaRecord>,
}

/// A one-time join token: only the digest of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub v: u8,
    pub id: String,
    /// SHA-256 of the token's secret, hex.
    pub secret_sha256: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    /// The node that joined with it; a token is used once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed_by: Option<u64>,
}

impl JoinTokenRecord {
    /// Whether the token may still admit a node at `now_ms`.
    pub fn usable_at(&self, now_ms: i64) -> bool {
        self.redeemed_by.is_none() && now_ms < self.expires_at_ms
    }
}

/// The key of a join token in the `meta` table.
pub fn join_token_key(id: &str) -> String {
    format!("{JOIN_TOKEN_PREFIX}{id}")
}

pub const JOIN_TOKEN_PREFIX: &str = "join_token/";

/// The key in `meta` that marks a node as removed from the cluster for good.
pub fn retired_node_key(node_id: u64) -> String {
    format!("retired_node/{node_id:016x}")
}
