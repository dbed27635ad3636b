//! A value encrypted before it reached storage. Storage never sees the plaintext.

use serde::{Deserialize, Serialize};

/// Ciphertext with what is needed to find its key; the AAD is rebuilt from context by the
/// reader, so a sealed value copied to another record does not decrypt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Id of the data key (or `kek` for values wrapped by the KEK itself).
    pub key_id: String,
    /// Nonce, base64url.
    pub nonce: String,
    /// Ciphertext with its tag, base64url.
    pub ciphertext: String,
}
