//! Cryptography of the node: the KEK and envelope encryption, signing keys, the CA, tokens.

pub mod ca;
pub mod envelope;
pub mod kek;
pub mod kek_transfer;
pub mod keys;
pub mod sealed_stream;
pub mod signer;

pub use envelope::{SecretCipher, UnsealError};
pub use kek::{KeyProvider, LocalKek};
pub use signer::TokenSigner;

use base64::Engine;

/// Unpadded base64url, as JOSE uses.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}
