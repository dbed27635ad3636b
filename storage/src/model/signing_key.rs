//! Token signing keys of a tenant: public part in clear, private part sealed.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

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

impl Row for SigningKeyRecord {
    const TABLE: StrTable = tables::SIGNING_KEYS;
    const NAME: &'static str = "signing_keys";
    fn key(&self) -> String {
        signing_key_id(&self.tenant, &self.kid)
    }
}

pub fn signing_key_id(tenant: &str, kid: &str) -> String {
    format!("{tenant}/{kid}")
}

/// Where a key is in its life, derived from times alone (so every node agrees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// In JWKS, not signing yet: verifiers get to cache it before its first token.
    Published,
    /// The key that signs new tokens of its algorithm.
    Active,
    /// Superseded, but tokens it signed may still be valid: stays in JWKS.
    Retiring,
    /// Every token it signed has expired: may be pruned.
    Retired,
}

/// The state of each key of one tenant at `now_ms`, given the longest token lifetime.
///
/// Per algorithm, the active key is the newest whose `active_from_ms` has passed. A key that
/// was active until a newer one took over at time `t` is retiring until `t + max_token_lifetime_ms`.
pub fn key_states(keys: &[SigningKeyRecord], now_ms: i64, max_token_lifetime_ms: i64) -> Vec<(String, KeyState)> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let state = if key.active_from_ms > now_ms {
            KeyState::Published
        } else {
            // The earliest later activation of the same algorithm that has already happened.
            let superseded_at = keys
                .iter()
                .filter(|k| k.alg == key.alg && k.kid != key.kid && k.active_from_ms <= now_ms)
                .filter(|k| (k.active_from_ms, &k.kid) > (key.active_from_ms, &key.kid))
                .map(|k| k.active_from_ms)
                .min();
            match superseded_at {
                None => KeyState::Active,
                Some(t) if now_ms < t.saturating_add(max_token_lifetime_ms) => KeyState::Retiring,
                Some(_) => KeyState::Retired,
            }
        };
        out.push((key.kid.clone(), state));
    }
    out
}
