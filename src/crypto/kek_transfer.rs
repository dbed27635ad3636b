//! Handing the KEK to a joining node: sealed to a key pair the joiner made for this one join
//! (X25519, HKDF-SHA256, XChaCha20-Poly1305), so it is never in clear on the wire, even
//! inside the TLS channel, and a recorded join cannot be replayed to learn it.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hkdf;
use gatehouse_storage::model::Sealed;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::crypto::{b64url, b64url_decode};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("the joiner's public key is not an X25519 key")]
    BadPublicKey,
    #[error("the key agreement failed")]
    Agreement,
    #[error("the sealed KEK does not open with this join's key (altered, or meant for another join)")]
    Open,
}

/// The KEK as sent: the sender's one-time public key and the sealed 32 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedKek {
    pub sender_public: String,
    pub sealed: Sealed,
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The symmetric key both sides derive; `context` binds it to one join (token id, node id).
fn derive(shared: &[u8], recipient: &[u8], sender: &[u8], context: &str) -> Result<Zeroizing<[u8; 32]>, TransferError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"gatehouse/kek-transfer/v1");
    let prk = salt.extract(shared);
    let info = [recipient, sender, context.as_bytes()];
    let okm = prk.expand(&info, Len32).map_err(|_| TransferError::Agreement)?;
    let mut key = Zeroizing::new([0u8; 32]);
    okm.fill(key.as_mut()).map_err(|_| TransferError::Agreement)?;
    Ok(key)
}

fn aad(context: &str) -> Vec<u8> {
    format!("gatehouse/kek-transfer/v1/{context}").into_bytes()
}

fn seal(key: &[u8; 32], context: &str, plaintext: &[u8]) -> Sealed {
    let mut nonce = [0u8; 24];
    crate::clock::random_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    let aad = aad(context);
    // Encryption with a valid key and nonce cannot fail for inputs of this size.
    let ct = cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad }).unwrap_or_default();
    Sealed { key_id: "kek-transfer".into(), nonce: b64url(&nonce), ciphertext: b64url(&ct) }
}

fn open(key: &[u8; 32], sealed: &Sealed, context: &str) -> Option<Zeroizing<Vec<u8>>> {
    let nonce: [u8; 24] = b64url_decode(&sealed.nonce)?.try_into().ok()?;
    let ct = b64url_decode(&sealed.ciphertext)?;
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    cipher.decrypt(&XNonce::from(nonce), Payload { msg: &ct, aad: &aad(context) }).ok().map(Zeroizing::new)
}

/// Seals `kek` to `recipient_public` (raw X25519, base64url) for the join named by `context`.
pub fn seal_to(kek: &[u8; 32], recipient_public: &str, context: &str) -> Result<SealedKek, TransferError> {
    let recipient = b64url_decode(recipient_public).filter(|k| k.len() == 32).ok_or(TransferError::BadPublicKey)?;
    let ours = PrivateKey::generate(&X25519).map_err(|_| TransferError::Agreement)?;
    let sender = ours.compute_public_key().map_err(|_| TransferError::Agreement)?.as_ref().to_vec();
    let key =
        agreement::agree(&ours, UnparsedPublicKey::new(&X25519, &recipient), TransferError::Agreement, |shared| {
            derive(shared, &recipient, &sender, context)
        })?;
    Ok(SealedKek { sender_public: b64url(&sender), sealed: seal(&key, context, kek) })
}

/// The joiner's side: a key pair for one join.
pub struct Recipient {
    key: PrivateKey,
    public: Vec<u8>,
}

impl Recipient {
    pub fn new() -> Result<Recipient, TransferError> {
        let key = PrivateKey::generate(&X25519).map_err(|_| TransferError::Agreement)?;
        let public = key.compute_public_key().map_err(|_| TransferError::Agreement)?.as_ref().to_vec();
        Ok(Recipient { key, public })
    }

    pub fn public_key(&self) -> String {
        b64url(&self.public)
    }

    pub fn open(&self, sealed: &SealedKek, context: &str) -> Result<Zeroizing<[u8; 32]>, TransferError> {
        let sender = b64url_decode(&sealed.sender_public).filter(|k| k.len() == 32).ok_or(TransferError::Open)?;
        let key =
            agreement::agree(&self.key, UnparsedPublicKey::new(&X25519, &sender), TransferError::Open, |shared| {
                derive(shared, &self.public, &sender, context)
            })?;
        let plain = open(&key, &sealed.sealed, context).ok_or(TransferError::Open)?;
        let kek: [u8; 32] = plain.as_slice().try_into().map_err(|_| TransferError::Open)?;
        Ok(Zeroizing::new(kek))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_of_this_join_opens_the_kek() {
        let kek = [7u8; 32];
        let joiner = Recipient::new().unwrap();
        let sealed = seal_to(&kek, &joiner.public_key(), "join/t1/node-a").unwrap();
        assert_eq!(*joiner.open(&sealed, "join/t1/node-a").unwrap(), kek);
        assert!(joiner.open(&sealed, "join/t1/node-b").is_err(), "bound to its join");
        let other = Recipient::new().unwrap();
        assert!(other.open(&sealed, "join/t1/node-a").is_err(), "bound to the joiner's key");
        assert!(seal_to(&kek, "not-a-key", "join").is_err());
    }
}
