//! `SecretCipher`: envelope encryption of secrets under per-scope data keys.
//!
//! Each tenant has a data key, wrapped by the KEK and stored in its `DataKeyRecord`. Secrets
//! are sealed with XChaCha20-Poly1305 under that data key, with associated data naming what the
//! secret is, so a ciphertext moved to another record does not open. Destroying a scope's data
//! key (crypto-shredding, a later feature) makes every secret of that scope unrecoverable.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use gatehouse_storage::model::{DataKeyRecord, Sealed};
use gatehouse_storage::Store;
use zeroize::Zeroizing;

use crate::crypto::kek::KeyProvider;
use crate::crypto::{b64url, b64url_decode};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    #[error("data key {0:?} does not exist")]
    UnknownDataKey(String),
    #[error("data key {0:?} cannot be unwrapped with this KEK")]
    DataKeyUnwrap(String),
    #[error("a secret does not decrypt (wrong key or altered data)")]
    Decrypt,
    #[error("storage: {0}")]
    Storage(#[from] gatehouse_storage::StoreError),
}

/// The context string a data key is wrapped under.
pub fn data_key_context(record_id: &str, scope: &str) -> String {
    format!("data-key/{scope}/{record_id}")
}

/// Seals and opens secrets; caches unwrapped data keys in memory.
pub struct SecretCipher {
    kek: Arc<dyn KeyProvider>,
    store: Option<Store>,
    cache: RwLock<HashMap<String, Zeroizing<[u8; 32]>>>,
}

impl SecretCipher {
    pub fn new(kek: Arc<dyn KeyProvider>, store: Option<Store>) -> Self {
        SecretCipher { kek, store, cache: RwLock::new(HashMap::new()) }
    }

    /// The KEK (to derive keys from it, as backups do).
    pub fn key_provider(&self) -> &dyn KeyProvider {
        self.kek.as_ref()
    }

    /// Makes a new data key for `scope`, returning the record to store (through raft).
    /// HMAC-SHA-256 of `data` under a key derived from the KEK for `purpose`, hex: a digest that
    /// cannot be brute-forced from a copy of the database (which holds no KEK).
    pub fn keyed_digest(&self, purpose: &str, data: &[u8]) -> String {
        let derived = self.kek.derive(purpose);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, derived.as_ref());
        hex::encode(aws_lc_rs::hmac::sign(&key, data).as_ref())
    }

    pub fn new_data_key(&self, id: &str, scope: &str, at_ms: i64) -> DataKeyRecord {
        let mut key = Zeroizing::new([0u8; 32]);
        crate::clock::random_bytes(key.as_mut());
        let wrapped = self.kek.wrap(&key, &data_key_context(id, scope));
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(id.to_string(), key);
        }
        DataKeyRecord { v: 1, id: id.to_string(), scope: scope.to_string(), wrapped, created_at_ms: at_ms }
    }

    /// Remembers a data key whose record is at hand but not yet stored.
    pub fn learn(&self, record: &DataKeyRecord) -> Result<(), UnsealError> {
        let key = self
            .kek
            .unwrap(&record.wrapped, &data_key_context(&record.id, &record.scope))
            .map_err(|_| UnsealError::DataKeyUnwrap(record.id.clone()))?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(record.id.clone(), key);
        }
        Ok(())
    }

    fn data_key(&self, id: &str) -> Result<Zeroizing<[u8; 32]>, UnsealError> {
        if let Some(k) = self.cache.read().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(k);
        }
        let store = self.store.as_ref().ok_or_else(|| UnsealError::UnknownDataKey(id.to_string()))?;
        let record = store.read()?.data_key(id)?.ok_or_else(|| UnsealError::UnknownDataKey(id.to_string()))?;
        self.learn(&record)?;
        self.cache
            .read()
            .ok()
            .and_then(|c| c.get(id).cloned())
            .ok_or_else(|| UnsealError::UnknownDataKey(id.to_string()))
    }

    /// Seals `plaintext` under data key `data_key_id`, bound to `context`.
    pub fn seal(&self, data_key_id: &str, context: &str, plaintext: &[u8]) -> Result<Sealed, UnsealError> {
        let key = self.data_key(data_key_id)?;
        Ok(seal_with(&key, data_key_id, context, plaintext))
    }

    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        let key = self.data_key(&sealed.key_id)?;
        open_with(&key, sealed, context)
    }
}

fn aad(context: &str) -> Vec<u8> {
    format!("gatehouse/secret/v1/{context}").into_bytes()
}

/// Seals with a raw key (also used for node-local files sealed directly under the KEK).
pub fn seal_with(key: &[u8; 32], key_id: &str, context: &str, plaintext: &[u8]) -> Sealed {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let mut nonce = [0u8; 24];
    crate::clock::random_bytes(&mut nonce);
    let aad = aad(context);
    let ct = cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad }).unwrap_or_default();
    Sealed { key_id: key_id.to_string(), nonce: b64url(&nonce), ciphertext: b64url(&ct) }
}

pub fn open_with(key: &[u8; 32], sealed: &Sealed, context: &str) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
    let nonce: [u8; 24] = b64url_decode(&sealed.nonce).and_then(|n| n.try_into().ok()).ok_or(UnsealError::Decrypt)?;
    let ct = b64url_decode(&sealed.ciphertext).ok_or(UnsealError::Decrypt)?;
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let aad = aad(context);
    cipher
        .decrypt(&XNonce::from(nonce), Payload { msg: &ct, aad: &aad })
        .map(Zeroizing::new)
        .map_err(|_| UnsealError::Decrypt)
}
