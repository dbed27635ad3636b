//! Access tokens: `client_credentials` issuance (every token audited through raft before it is
//! returned, A10), verification for the admin API and introspection, and revocation.
//!
//! Access tokens are RFC 9068 JWTs (`typ: at+jwt`) signed ES256 with the tenant's active key.
//! Verification takes the key from our records by `kid` with the algorithm pinned to it, then
//! checks `typ`, `iss`, `aud`, `exp`, `nbf` and the tenant's revocation deny-list.

//!
//! By concern: `client_auth` (who is calling), `issue` (claims, signing and the audited
//! issuance), `code` (the authorization code grant), `id_token` (OpenID Connect ID tokens),
//! `refresh` (refresh token families: Ed25519-signed tokens, rotation, replay revocation),
//! `verify` (checking a presented token), `revoke` (the deny-list and its pruning).

mod client_auth;
mod code;
pub mod id_token;
mod issue;
mod refresh;
mod revoke;
mod verify;

use serde::{Deserialize, Serialize};

use crate::app::signers::SignerError;
use crate::app::NodeWriteError;
pub use crate::idm::protocol::OAuthErrorCode;

pub use client_auth::{authenticate_client, PresentedClient, JWT_BEARER_ASSERTION};
pub use code::{code_digest, redeem as redeem_code, CodeGrant, GRANT_AUTHORIZATION_CODE};
pub use issue::{client_credentials, mint_admin_token, IssuedAccessToken};
pub use refresh::{is_refresh_token, refresh, revoke as revoke_refresh, Refreshed, GRANT_REFRESH_TOKEN};
pub use revoke::{revocation_pruning_job, revoke, revoke_admin_token};
pub use verify::{tenant_of_issuer, unverified_issuer, verify_access_token, InvalidToken};

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The claims of an access token (RFC 9068 plus the tenant and the subject's roles).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Why a token request or a token check failed, in RFC 6749 terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFailure {
    /// 400 with an RFC 6749 error code.
    Request { error: OAuthErrorCode, description: String },
    /// 401 `invalid_client`; `basic` when the client used HTTP Basic (a challenge is sent).
    InvalidClient { basic: bool },
    /// Too many failures from this source or for this client: 429.
    RateLimited(crate::app::limits::RetryAfter),
    /// The node cannot read or write right now: 503.
    Unavailable,
}

impl TokenFailure {
    pub(crate) fn request(error: OAuthErrorCode, description: impl Into<String>) -> TokenFailure {
        TokenFailure::Request { error, description: description.into() }
    }

    pub(crate) fn storage(e: impl std::fmt::Display) -> TokenFailure {
        tracing::error!("storage: {e}");
        TokenFailure::Unavailable
    }
}

impl From<SignerError> for TokenFailure {
    fn from(_: SignerError) -> Self {
        TokenFailure::Unavailable
    }
}

impl From<NodeWriteError> for TokenFailure {
    fn from(e: NodeWriteError) -> Self {
        tracing::warn!("token write: {e}");
        TokenFailure::Unavailable
    }
}
