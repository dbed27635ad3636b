//! Email: the single-use tokens a message carries (a sign-in code or link, a password reset,
//! an address check), stored only as digests (S37, S43), and the outbox of messages waiting
//! to be sent. A message is written by the command that issues its token, so neither exists
//! without the other; the body is sealed under the tenant's data key, since it holds the token.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailPurpose {
    /// A six-digit sign-in code (`email-otp`).
    SignInCode,
    /// A sign-in link (`magic-link`).
    SignInLink,
    PasswordReset,
    /// Proves the user reads the address (`email/verify`).
    VerifyEmail,
}

impl EmailPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailPurpose::SignInCode => "sign_in_code",
            EmailPurpose::SignInLink => "sign_in_link",
            EmailPurpose::PasswordReset => "password_reset",
            EmailPurpose::VerifyEmail => "verify_email",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailTokenRecord {
    pub v: u8,
    pub tenant: String,
    /// The token's digest, lowercase hex: the table key. A link token is 256 random bits
    /// (SHA-256); a six-digit code is digested with its address under a key only the nodes
    /// hold, so a copy of the data cannot be searched for it.
    pub token_sha256: String,
    pub purpose: EmailPurpose,
    pub user_id: String,
    /// The address it was sent to: redeeming it proves the user reads this address.
    pub email: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

pub fn email_token_key(tenant: &str, token_sha256: &str) -> String {
    format!("{tenant}/{token_sha256}")
}

/// The prefix of a user's entries in the email-tokens-by-user index.
pub fn user_tokens_prefix(tenant: &str, user_id: &str) -> String {
    format!("{tenant}/{user_id}/")
}

impl Row for EmailTokenRecord {
    const TABLE: StrTable = tables::EMAIL_TOKENS;
    const NAME: &'static str = "email_tokens";
    const INDEX: Option<StrTable> = Some(tables::EMAIL_TOKENS_BY_USER);
    fn key(&self) -> String {
        email_token_key(&self.tenant, &self.token_sha256)
    }
    fn index_entries(&self) -> Vec<(String, Vec<u8>)> {
        let entry = format!("{}{}", user_tokens_prefix(&self.tenant, &self.user_id), self.token_sha256);
        vec![(entry, self.key().into_bytes())]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub v: u8,
    pub tenant: String,
    pub id: String,
    pub to: String,
    pub subject: String,
    /// The plain-text body, sealed under the tenant's data key.
    pub body: crate::model::Sealed,
    pub purpose: EmailPurpose,
    pub created_at_ms: i64,
    /// An undelivered message is dropped at this time (its token has expired by then).
    pub expires_at_ms: i64,
    /// Delivery attempts that failed, and when the next may start.
    pub attempts: u32,
    pub next_attempt_ms: i64,
}

pub fn outbox_key(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
}

impl Row for OutboxRecord {
    const TABLE: StrTable = tables::OUTBOX;
    const NAME: &'static str = "outbox";
    fn key(&self) -> String {
        outbox_key(&self.tenant, &self.id)
    }
}
