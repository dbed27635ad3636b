//! `TokenSigner`: signs and verifies JWTs with a tenant's keys, the algorithm pinned per key.
//!
//! Keys are decrypted and parsed once and kept (building an `EncodingKey` per call would cost
//! more than the signature). Verification takes the key only from our own records by `kid`;
//! `jku`, `x5u`, `jwk` and `x5c` headers are never consulted.

use std::collections::HashMap;

use gatehouse_storage::model::{PublicJwk, SigningAlg, SigningKeyRecord};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::crypto::envelope::SecretCipher;
use crate::crypto::keys::{signing_key_context, KeyError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("no active {0:?} key")]
    NoActiveKey(SigningAlg),
    #[error("the token names no known key")]
    UnknownKey,
    #[error("the token is malformed or its signature, algorithm or claims do not verify: {0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

struct LoadedKey {
    kid: String,
    alg: SigningAlg,
    active_from_ms: i64,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
}

fn jwt_alg(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::ES256 => Algorithm::ES256,
        SigningAlg::RS256 => Algorithm::RS256,
    }
}

/// The keys of one tenant, ready to use.
pub struct TokenSigner {
    keys: Vec<LoadedKey>,
    by_kid: HashMap<String, usize>,
}

impl TokenSigner {
    /// Loads the tenant's keys; private parts are opened only when `cipher` is given.
    pub fn load(records: &[SigningKeyRecord], cipher: Option<&SecretCipher>) -> Result<TokenSigner, KeyError> {
        let mut keys = Vec::new();
        for r in records {
            let decoding = match &r.public {
                PublicJwk::EC { x, y, .. } => DecodingKey::from_ec_components(x, y),
                PublicJwk::RSA { n, e } => DecodingKey::from_rsa_components(n, e),
            }
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
            let encoding = match cipher {
                None => None,
                Some(c) => {
                    let pkcs8 = c.open(&r.private, &signing_key_context(&r.tenant, &r.kid))?;
                    Some(match r.alg {
                        SigningAlg::ES256 => EncodingKey::from_ec_der(&pkcs8),
                        SigningAlg::RS256 => {
                            let info = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_slice())
                                .map_err(|e| KeyError::Malformed(e.to_string()))?;
                            EncodingKey::from_rsa_der(info.private_key)
                        }
                    })
                }
            };
            keys.push(LoadedKey {
                kid: r.kid.clone(),
                alg: r.alg,
                active_from_ms: r.active_from_ms,
                encoding,
                decoding,
            });
        }
        let by_kid = keys.iter().enumerate().map(|(i, k)| (k.kid.clone(), i)).collect();
        Ok(TokenSigner { keys, by_kid })
    }

    /// Signs `claims` with the newest key of `alg` that may sign at `now_ms`.
    pub fn sign<T: Serialize>(
        &self,
        alg: SigningAlg,
        typ: &str,
        claims: &T,
        now_ms: i64,
    ) -> Result<String, TokenError> {
        let key = self
            .keys
            .iter()
            .filter(|k| k.alg == alg && k.active_from_ms <= now_ms && k.encoding.is_some())
            .max_by_key(|k| k.active_from_ms)
            .ok_or(TokenError::NoActiveKey(alg))?;
        let mut header = Header::new(jwt_alg(alg));
        header.typ = Some(typ.to_string());
        header.kid = Some(key.kid.clone());
        let encoding = key.encoding.as_ref().ok_or(TokenError::NoActiveKey(alg))?;
        jsonwebtoken::encode(&header, claims, encoding).map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies a token: the `kid` must be ours and the algorithm is the key's, whatever the
    /// header says. `validation` carries issuer, audience and leeway; its algorithms are replaced.
    pub fn verify<T: DeserializeOwned>(&self, token: &str, validation: &Validation) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let idx = header.kid.as_ref().and_then(|kid| self.by_kid.get(kid)).ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(*idx).ok_or(TokenError::UnknownKey)?;
        let mut validation = validation.clone();
        validation.algorithms = vec![jwt_alg(key.alg)];
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}
