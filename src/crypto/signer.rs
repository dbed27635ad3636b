//! `TokenSigner`: signs and verifies JWTs with a tenant's keys, the algorithm pinned per key.
//!
//! Private keys are decrypted and parsed into aws-lc key pairs once and kept: jsonwebtoken's
//! `encode` re-parses its `EncodingKey` on every call, which costs more than the signature
//! itself (about 1 ms per RS256 token here). So signing is the JWS compact serialization over
//! jsonwebtoken's own `Header`, signed by the kept key pair; verification is jsonwebtoken's.
//! Verification takes the key only from our own records by `kid`; `jku`, `x5u`, `jwk` and
//! `x5c` headers are never consulted.

use std::collections::HashMap;

use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use gatehouse_storage::model::{PublicJwk, SigningAlg, SigningKeyRecord};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::crypto::b64url;
use crate::crypto::envelope::SecretCipher;
use crate::crypto::keys::{signing_key_context, KeyError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("no active {0:?} key")]
    NoActiveKey(SigningAlg),
    #[error("the token names no known key")]
    UnknownKey,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is malformed or its signature, algorithm or claims do not verify: {0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A private key parsed once.
enum KeyPairOf {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

impl KeyPairOf {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let failed = |_| TokenError::Invalid("signing failed".into());
        match self {
            // The FIXED encoding is JWS's R || S, 64 bytes.
            KeyPairOf::Es256(k) => Ok(k.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            KeyPairOf::Rs256(k) => {
                let mut signature = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature).map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

struct LoadedKey {
    kid: String,
    alg: SigningAlg,
    active_from_ms: i64,
    key_pair: Option<KeyPairOf>,
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
            let key_pair = match cipher {
                None => None,
                Some(c) => {
                    let pkcs8 = c.open(&r.private, &signing_key_context(&r.tenant, &r.kid))?;
                    let malformed = |e: aws_lc_rs::error::KeyRejected| KeyError::Malformed(e.to_string());
                    Some(match r.alg {
                        SigningAlg::ES256 => KeyPairOf::Es256(
                            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).map_err(malformed)?,
                        ),
                        SigningAlg::RS256 => KeyPairOf::Rs256(RsaKeyPair::from_pkcs8(&pkcs8).map_err(malformed)?),
                    })
                }
            };
            keys.push(LoadedKey {
                kid: r.kid.clone(),
                alg: r.alg,
                active_from_ms: r.active_from_ms,
                key_pair,
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
            .filter(|k| k.alg == alg && k.active_from_ms <= now_ms && k.key_pair.is_some())
            .max_by_key(|k| k.active_from_ms)
            .ok_or(TokenError::NoActiveKey(alg))?;
        let mut header = Header::new(jwt_alg(alg));
        header.typ = Some(typ.to_string());
        header.kid = Some(key.kid.clone());
        let key_pair = key.key_pair.as_ref().ok_or(TokenError::NoActiveKey(alg))?;
        let json = |v: &dyn erased::Json| v.to_json().map_err(|e| TokenError::Invalid(e.to_string()));
        let message = format!("{}.{}", b64url(&json(&header)?), b64url(&json(claims)?));
        let signature = key_pair.sign(message.as_bytes())?;
        Ok(format!("{message}.{}", b64url(&signature)))
    }

    /// Verifies a token: the `kid` must be ours and the algorithm is the key's, whatever the
    /// header says. `validation` carries issuer, audience and leeway; its algorithms are replaced.
    pub fn verify<T: DeserializeOwned>(&self, token: &str, validation: &Validation) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let idx = header.kid.as_ref().and_then(|kid| self.by_kid.get(kid)).ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(*idx).ok_or(TokenError::UnknownKey)?;
        let mut validation = validation.clone();
        validation.algorithms = vec![jwt_alg(key.alg)];
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation).map(|d| d.claims).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            _ => TokenError::Invalid(e.to_string()),
        })
    }
}

mod erased {
    /// Serializes header and claims alike without making `sign` generic over both.
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }

    impl<T: serde::Serialize + ?Sized> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gatehouse_storage::model::SigningAlg;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::crypto::kek::{KekSource, LocalKek};
    use crate::crypto::keys::KeyMaterial;
    use crate::crypto::KeyProvider;

    #[derive(Serialize, Deserialize)]
    struct Claims {
        iss: String,
        aud: String,
        exp: i64,
        sub: String,
    }

    fn cipher() -> SecretCipher {
        let kek: Arc<dyn KeyProvider> = Arc::new(LocalKek::from_bytes([3; 32], KekSource::Environment));
        let c = SecretCipher::new(kek, None);
        c.new_data_key("dk", "tenant:t", 0);
        c
    }

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["api"]);
        v.set_issuer(&["https://issuer"]);
        v.validate_exp = false;
        v
    }

    #[test]
    fn a_rotated_key_signs_only_after_its_publish_delay_and_old_tokens_keep_verifying() {
        let c = cipher();
        let claims = Claims { iss: "https://issuer".into(), aud: "api".into(), exp: 4_000_000_000, sub: "s".into() };
        let old = KeyMaterial::generate(SigningAlg::ES256).unwrap().into_record(&c, "t", "dk", 0, 0).unwrap();
        let before = TokenSigner::load(std::slice::from_ref(&old), Some(&c)).unwrap();
        let old_token = before.sign(SigningAlg::ES256, "at+jwt", &claims, 1_000).unwrap();

        // Rotation at t=1000 with a publish delay of 500.
        let new = KeyMaterial::generate(SigningAlg::ES256).unwrap().into_record(&c, "t", "dk", 1_000, 1_500).unwrap();
        let after = TokenSigner::load(&[old.clone(), new.clone()], Some(&c)).unwrap();
        let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        assert_eq!(kid(&after.sign(SigningAlg::ES256, "at+jwt", &claims, 1_200).unwrap()), old.kid, "not yet");
        assert_eq!(kid(&after.sign(SigningAlg::ES256, "at+jwt", &claims, 1_500).unwrap()), new.kid, "after the delay");
        assert!(after.verify::<Claims>(&old_token, &validation()).is_ok(), "a token of the old key still verifies");
    }

    #[test]
    fn verification_pins_the_algorithm_to_the_key_and_refuses_strangers() {
        let c = cipher();
        let es = KeyMaterial::generate(SigningAlg::ES256).unwrap().into_record(&c, "t", "dk", 0, 0).unwrap();
        let signer = TokenSigner::load(std::slice::from_ref(&es), Some(&c)).unwrap();
        let claims = Claims { iss: "https://issuer".into(), aud: "api".into(), exp: 4_000_000_000, sub: "s".into() };
        let good = signer.sign(SigningAlg::ES256, "at+jwt", &claims, 0).unwrap();
        assert!(signer.verify::<Claims>(&good, &validation()).is_ok());
        let parts: Vec<&str> = good.split('.').collect();
        let b64 = |v: serde_json::Value| crate::crypto::b64url(v.to_string().as_bytes());
        // alg none with our kid.
        let none = format!("{}.{}.", b64(serde_json::json!({"alg": "none", "kid": es.kid})), parts[1]);
        assert!(signer.verify::<Claims>(&none, &validation()).is_err());
        // HS256 keyed with the public key, claiming our kid.
        let hs_header =
            jsonwebtoken::Header { kid: Some(es.kid.clone()), ..jsonwebtoken::Header::new(Algorithm::HS256) };
        let hs = jsonwebtoken::encode(
            &hs_header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(es.public_spki.as_bytes()),
        )
        .unwrap();
        assert!(signer.verify::<Claims>(&hs, &validation()).is_err());
        // An unknown kid, a wrong audience, a wrong issuer.
        let other = KeyMaterial::generate(SigningAlg::ES256).unwrap().into_record(&c, "t", "dk", 0, 0).unwrap();
        let stranger =
            TokenSigner::load(&[other], Some(&c)).unwrap().sign(SigningAlg::ES256, "at+jwt", &claims, 0).unwrap();
        assert!(matches!(signer.verify::<Claims>(&stranger, &validation()), Err(TokenError::UnknownKey)));
        let mut wrong_aud = validation();
        wrong_aud.set_audience(&["other"]);
        assert!(signer.verify::<Claims>(&good, &wrong_aud).is_err());
        let mut wrong_iss = validation();
        wrong_iss.set_issuer(&["https://elsewhere"]);
        assert!(matches!(signer.verify::<Claims>(&good, &wrong_iss), Err(TokenError::WrongIssuer)));
        assert!(matches!(signer.verify::<Claims>(&good, &wrong_aud), Err(TokenError::Invalid(_))));
    }
}
