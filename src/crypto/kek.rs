//! The key-encryption key (KEK): from `GATEHOUSE_KEK` or the data dir's `kek` file.
//! It wraps data keys and never leaves this process.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use gatehouse_storage::model::Sealed;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::kek_transfer::{SealedKek, TransferError};
use crate::crypto::{b64url, b64url_decode};
use crate::datadir::{self, DataDir, DataDirError};

/// Wraps and unwraps data keys. The local KEK implements it now; a KMS or HSM later.
pub trait KeyProvider: Send + Sync {
    fn kek_id(&self) -> &str;
    fn wrap(&self, data_key: &[u8; 32], context: &str) -> Sealed;
    fn unwrap(&self, sealed: &Sealed, context: &str) -> Result<Zeroizing<[u8; 32]>, KekError>;
    /// A key for `purpose` derived from the KEK (the same on every node of the cluster), for
    /// keyed digests of values that must not be guessable offline from a copy of the data.
    fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]>;
    /// The KEK sealed to a joining node's one-time key (see `kek_transfer`).
    fn seal_to(&self, recipient_public: &str, context: &str) -> Result<SealedKek, TransferError>;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    #[error("GATEHOUSE_KEK must be 32 bytes in base64")]
    BadEnv,
    #[error("the kek file {0} must hold 32 bytes in base64")]
    BadFile(String),
    #[error("GATEHOUSE_KEK differs from the kek file {0}; refusing to start with two different keys")]
    Mismatch(String),
    #[error("no KEK: set GATEHOUSE_KEK or restore the kek file of this data dir ({0})")]
    Missing(String),
    #[error("a value could not be unwrapped with this KEK (wrong KEK, or the data was altered)")]
    Unwrap,
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

/// A 256-bit KEK held in memory.
pub struct LocalKek {
    key: Zeroizing<[u8; 32]>,
    id: String,
    /// Where it came from, for `doctor` and the banner.
    pub source: KekSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekSource {
    Environment,
    DataDirFile,
}

impl LocalKek {
    pub fn from_bytes(key: [u8; 32], source: KekSource) -> LocalKek {
        let digest = Sha256::digest(key);
        let id = format!("kek-{}", hex::encode(&digest[..6]));
        LocalKek { key: Zeroizing::new(key), id, source }
    }

    /// Loads the KEK for `dir`. When neither the environment nor the file has one, a new KEK
    /// is written to the file, but only if `may_create` (a data dir with no database yet).
    pub fn load(dir: &DataDir, env_value: Option<&str>, may_create: bool) -> Result<LocalKek, KekError> {
        let from_env = env_value.map(|v| decode_key(v).ok_or(KekError::BadEnv)).transpose()?;
        let path = dir.kek_path();
        let from_file = if path.exists() {
            let bytes = Zeroizing::new(datadir::read_private(&path)?);
            let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
            Some(decode_key(&text).ok_or_else(|| KekError::BadFile(path.display().to_string()))?)
        } else {
            None
        };
        match (from_env, from_file) {
            (Some(e), Some(f)) if *e != *f => Err(KekError::Mismatch(path.display().to_string())),
            (Some(e), _) => Ok(LocalKek::from_bytes(*e, KekSource::Environment)),
            (None, Some(f)) => Ok(LocalKek::from_bytes(*f, KekSource::DataDirFile)),
            (None, None) if may_create => {
                let mut key = Zeroizing::new([0u8; 32]);
                crate::clock::random_bytes(key.as_mut());
                let text = Zeroizing::new(format!("{}\n", base64::engine::general_purpose::STANDARD.encode(*key)));
                datadir::write_private(&path, text.as_bytes())?;
                Ok(LocalKek::from_bytes(*key, KekSource::DataDirFile))
            }
            (None, None) => Err(KekError::Missing(path.display().to_string())),
        }
    }
}

/// Checks a KEK received at join against `GATEHOUSE_KEK`, when that is set.
pub fn check_received(key: &[u8; 32], env_value: Option<&str>) -> Result<(), KekError> {
    if let Some(value) = env_value {
        let ours = decode_key(value).ok_or(KekError::BadEnv)?;
        if *ours != *key {
            return Err(KekError::Mismatch("the cluster's KEK".into()));
        }
    }
    Ok(())
}

/// Writes a KEK received at join into a new data dir's `kek` file; when `GATEHOUSE_KEK` is
/// set it must be the same key, and then no file is written.
pub fn install_received(dir: &DataDir, key: &[u8; 32], env_value: Option<&str>) -> Result<KekSource, KekError> {
    check_received(key, env_value)?;
    if env_value.is_some() {
        return Ok(KekSource::Environment);
    }
    let text = Zeroizing::new(format!("{}\n", base64::engine::general_purpose::STANDARD.encode(key)));
    datadir::write_private(&dir.kek_path(), text.as_bytes())?;
    Ok(KekSource::DataDirFile)
}

/// Checks `GATEHOUSE_KEK` before anything is created.
pub fn check_env_format(value: &str) -> Result<(), KekError> {
    decode_key(value).map(|_| ()).ok_or(KekError::BadEnv)
}

/// The 32 key bytes of a base64 KEK; every buffer is wiped when dropped.
fn decode_key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

fn aad(kek_id: &str, context: &str) -> Vec<u8> {
    format!("gatehouse/kek-wrap/v1/{kek_id}/{context}").into_bytes()
}

impl KeyProvider for LocalKek {
    fn kek_id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, data_key: &[u8; 32], context: &str) -> Sealed {
        let cipher = XChaCha20Poly1305::new(&(*self.key).into());
        let mut nonce = [0u8; 24];
        crate::clock::random_bytes(&mut nonce);
        let aad = aad(&self.id, context);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ct = cipher.encrypt(&XNonce::from(nonce), Payload { msg: data_key, aad: &aad }).unwrap_or_default();
        Sealed { key_id: self.id.clone(), nonce: b64url(&nonce), ciphertext: b64url(&ct) }
    }

    fn seal_to(&self, recipient_public: &str, context: &str) -> Result<SealedKek, TransferError> {
        crate::crypto::kek_transfer::seal_to(&self.key, recipient_public, context)
    }

    fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.key.as_ref());
        let tag = aws_lc_rs::hmac::sign(&key, format!("gatehouse/derive/v1/{purpose}").as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn unwrap(&self, sealed: &Sealed, context: &str) -> Result<Zeroizing<[u8; 32]>, KekError> {
        if sealed.key_id != self.id {
            return Err(KekError::Unwrap);
        }
        let nonce: [u8; 24] = b64url_decode(&sealed.nonce).and_then(|n| n.try_into().ok()).ok_or(KekError::Unwrap)?;
        let ct = b64url_decode(&sealed.ciphertext).ok_or(KekError::Unwrap)?;
        let cipher = XChaCha20Poly1305::new(&(*self.key).into());
        let aad = aad(&self.id, context);
        let plain = Zeroizing::new(
            cipher.decrypt(&XNonce::from(nonce), Payload { msg: &ct, aad: &aad }).map_err(|_| KekError::Unwrap)?,
        );
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| KekError::Unwrap)?;
        Ok(Zeroizing::new(key))
    }
}
