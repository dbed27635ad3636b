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
}
