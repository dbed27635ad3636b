//! What a joining node and a member say to each other on the public port
//! (`POST /cluster/v1/join`), and the join token's format: `ghjoin1.{CA fingerprint}.{id}.{secret}`.

use serde::{Deserialize, Serialize};

use crate::crypto::b64url_decode;
use crate::crypto::kek_transfer::SealedKek;

/// The join endpoint on a member's public port.
pub const JOIN_PATH: &str = "/cluster/v1/join";

const TOKEN_PREFIX: &str = "ghjoin1";

#[derive(Debug, thiserror::Error)]
#[error("the join token is malformed: copy it whole from `cluster join-token`")]
pub struct Malformed;

/// The parts of a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: String,
    pub id: String,
    pub secret: String,
}

impl JoinToken {
    pub fn parse(text: &str) -> Result<JoinToken, Malformed> {
        let bad = || Malformed;
        let mut parts = text.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(fp), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex64(fp) || id.is_empty() || id.len() > 64 || b64url_decode(secret).is_none_or(|s| s.len() != 32) {
            return Err(bad());
        }
        Ok(JoinToken { ca_fingerprint: fp.to_ascii_lowercase(), id: id.into(), secret: secret.into() })
    }

    pub fn render(&self) -> String {
        format!("{TOKEN_PREFIX}.{}.{}.{}", self.ca_fingerprint, self.id, self.secret)
    }
}

/// What a joining node sends (over TLS pinned to the cluster CA), with its token in the
/// `Authorization` header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner's node id, in hex.
    pub node_id: String,
    /// Its certificate signing request (PEM): its own key, its names.
    pub csr_pem: String,
    /// The `host:port` of its cluster port.
    pub cluster_address: String,
    /// Its one-time X25519 public key (base64url), which the KEK is sealed to.
    pub kek_public_key: String,
}

/// What it gets back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAnswer {
    pub cluster_id: String,
    /// Its node certificate, then the node intermediate (PEM).
    pub node_chain_pem: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    pub kek: SealedKek,
}

/// The context a KEK handed to a joiner is sealed for: one token, one node.
pub fn kek_context(token_id: &str, node_id: u64) -> String {
    format!("join/{token_id}/{node_id:016x}")
}
