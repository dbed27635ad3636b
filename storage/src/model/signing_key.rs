//! Token signing keys of a tenant: public part in clear, private part sealed.

use serde::{Deserialize, Serialize};

use super::Sealed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    ES256,
    RS256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::ES256 => "ES256",
            SigningAlg::RS256 => "RS256",
        }
    }
}

/// The public key as JWK members (base64url without padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum PublicJwk {
    EC { crv: String, x: String, y: String },
    RSA { n: String, e: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub v: u8,
    pub tenant: String,
    pub kid: String,
    pub alg: SigningAlg,
    pub public: PublicJwk,
    /// SubjectPublicKeyInfo DER, base64url, for verifiers.
    pub public_spki: String,
    /// PKCS#8 DER of the private key, sealed under the tenant's data key.
    pub private: Sealed,
    pub created_at_ms: i64,
    /// The key may sign from this time on; it is published in JWKS from creation.
    pub active_from_ms: i64,
}

impl SigningKeyRecord {
    pub fn table_key(&self) -> String {
        signing_key_id(&self.tenant, &self.kid)
    }
}

pub fn signing_key_id(tenant: &str, kid: &str) -> String {
    format!("{tenant}/{kid}")
}
