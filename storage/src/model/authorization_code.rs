//! OAuth authorization codes (RFC 6749 §4.1.2), stored only as digests (S37). A code is
//! spent once (S5) and kept, spent, until the tokens it issued expire, so a second use is
//! recognised and revokes them; it is bound to its client and redirect URI (S6)
//! and carries the PKCE challenge it must be redeemed with (S7).

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

/// The longest an authorization code may live (RFC 9700 §4.2.4 and S5: at most 10 minutes).
pub const MAX_CODE_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// An access token a redemption issued: what revoking it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeToken {
    pub jti: String,
    pub exp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRedemption {
    pub at_ms: i64,
    pub tokens: Vec<CodeToken>,
    /// The refresh token family the redemption started, revoked with the tokens on a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_family: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationCodeRecord {
    pub v: u8,
    pub tenant: String,
    /// SHA-256 of the code (256 random bits), lowercase hex: the table key.
    pub code_sha256: String,
    pub client_id: String,
    /// The redirect URI of the authorization request, which the token request must repeat.
    pub redirect_uri: String,
    pub user_id: String,
    /// The session it was issued in (the ID token's `sid`).
    pub session_sha256: String,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    /// BASE64URL(SHA-256(code_verifier)).
    pub code_challenge: String,
    /// When the user signed in (the ID token's `auth_time`).
    pub auth_time_ms: i64,
    /// How they signed in (the ID token's `amr`).
    pub amr: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// Set by the one redemption.
    pub redeemed: Option<CodeRedemption>,
}

impl AuthorizationCodeRecord {
    /// When the record may go: at its expiry, or, once spent, when the last token it issued
    /// expires (until then a second use must still be recognised, to revoke them).
    pub fn forget_at_ms(&self) -> i64 {
        let tokens = self.redeemed.iter().flat_map(|r| r.tokens.iter().map(|t| t.exp_ms));
        tokens.fold(self.expires_at_ms, i64::max)
    }
}

pub fn authorization_code_key(tenant: &str, code_sha256: &str) -> String {
    format!("{tenant}/{code_sha256}")
}

impl Row for AuthorizationCodeRecord {
    const TABLE: StrTable = tables::AUTHORIZATION_CODES;
    const NAME: &'static str = "authorization_codes";
    fn key(&self) -> String {
        authorization_code_key(&self.tenant, &self.code_sha256)
    }
}
