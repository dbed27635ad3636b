//! Token signing keys: generation (ES256 with P-256, RS256 with 2048-bit RSA, both through
//! aws-lc-rs), their JWK form and `kid` (the RFC 7638 thumbprint).

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use gatehouse_storage::model::{PublicJwk, SigningAlg, SigningKeyRecord};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::b64url;
use crate::crypto::envelope::{SecretCipher, UnsealError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("a stored key is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Unseal(#[from] UnsealError),
}

/// A freshly generated key pair: the public parts and the PKCS#8 private key.
pub struct KeyMaterial {
    pub alg: SigningAlg,
    pub public: PublicJwk,
    pub public_spki: Vec<u8>,
    pub private_pkcs8: Zeroizing<Vec<u8>>,
}

impl KeyMaterial {
    pub fn generate(alg: SigningAlg) -> Result<KeyMaterial, KeyError> {
        match alg {
            SigningAlg::ES256 => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Generate)?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                    .map_err(|_| KeyError::Generate)?;
                let point = pair.public_key().as_ref();
                // An uncompressed P-256 point: 0x04 | x (32) | y (32).
                let (x, y) = match point {
                    [0x04, rest @ ..] if rest.len() == 64 => rest.split_at(32),
                    _ => return Err(KeyError::Generate),
                };
                let spki: PublicKeyX509Der = pair.public_key().as_der().map_err(|_| KeyError::Generate)?;
                Ok(KeyMaterial {
                    alg,
                    public: PublicJwk::EC { crv: "P-256".into(), x: b64url(x), y: b64url(y) },
                    public_spki: spki.as_ref().to_vec(),
                    private_pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
                })
            }
            SigningAlg::RS256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
                let pkcs8: Pkcs8V1Der = pair.as_der().map_err(|_| KeyError::Generate)?;
                let public = pair.public_key();
                let spki: PublicKeyX509Der = public.as_der().map_err(|_| KeyError::Generate)?;
                Ok(KeyMaterial {
                    alg,
                    public: PublicJwk::RSA {
                        n: b64url(public.modulus().big_endian_without_leading_zero()),
                        e: b64url(public.exponent().big_endian_without_leading_zero()),
                    },
                    public_spki: spki.as_ref().to_vec(),
                    private_pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
                })
            }
        }
    }

    /// The RFC 7638 JWK thumbprint, used as `kid`.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.public)
    }

    /// Seals the private key under the tenant's data key and returns the record to store.
    pub fn into_record(
        self,
        cipher: &SecretCipher,
        tenant: &str,
        data_key_id: &str,
        created_at_ms: i64,
        active_from_ms: i64,
    ) -> Result<SigningKeyRecord, KeyError> {
        let kid = self.thumbprint();
        let private = cipher.seal(data_key_id, &signing_key_context(tenant, &kid), &self.private_pkcs8)?;
        Ok(SigningKeyRecord {
            v: 1,
            tenant: tenant.to_string(),
            kid,
            alg: self.alg,
            public: self.public,
            public_spki: b64url(&self.public_spki),
            private,
            created_at_ms,
            active_from_ms,
        })
    }
}

pub fn signing_key_context(tenant: &str, kid: &str) -> String {
    format!("signing-key/{tenant}/{kid}")
}

pub fn thumbprint(jwk: &PublicJwk) -> String {
    // Members in lexicographic order, no whitespace (RFC 7638 section 3).
    let canonical = match jwk {
        PublicJwk::EC { crv, x, y } => {
            format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
        }
        PublicJwk::RSA { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
    };
    b64url(&Sha256::digest(canonical.as_bytes()))
}

/// The public JWK of a stored key, as JWKS publishes it.
pub fn public_jwk_json(record: &SigningKeyRecord) -> serde_json::Value {
    let mut v = match &record.public {
        PublicJwk::EC { crv, x, y } => serde_json::json!({"kty": "EC", "crv": crv, "x": x, "y": y}),
        PublicJwk::RSA { n, e } => serde_json::json!({"kty": "RSA", "n": n, "e": e}),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("kid".into(), record.kid.clone().into());
        obj.insert("alg".into(), record.alg.as_str().into());
        obj.insert("use".into(), "sig".into());
    }
    v
}
