//! ID tokens (OpenID Connect Core §2): RS256 unless the client registered ES256 (S26), with
//! the tenant's active key and its `kid`.

use gatehouse_storage::model::{ClientRecord, SigningAlg};
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

use crate::app::AppState;

use super::TokenFailure;

pub const ID_TOKEN_TYP: &str = "JWT";

#[derive(Debug, Clone, Serialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    /// The client the token was issued to (Core §2: present when it is the one audience too).
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub amr: Vec<String>,
    pub sid: String,
    pub at_hash: String,
}

/// What the ID token says about the sign-in it comes from.
pub struct SignIn<'a> {
    pub user_id: &'a str,
    pub session_sha256: &'a str,
    pub auth_time_ms: i64,
    pub amr: &'a [String],
    pub nonce: Option<&'a str>,
}

/// The algorithm a client's ID tokens are signed with.
pub fn alg_for(client: &ClientRecord) -> SigningAlg {
    match client.id_token_signed_response_alg.as_deref() {
        Some("ES256") => SigningAlg::ES256,
        _ => SigningAlg::RS256,
    }
}

/// `at_hash`: the left half of the SHA-256 of the access token, base64url (Core §3.1.3.6; both
/// RS256 and ES256 hash with SHA-256).
pub fn at_hash(access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    crate::crypto::b64url(&digest.as_ref()[..16])
}

/// The session's id as the ID token's `sid`: derived from the stored digest, so it names the
/// session without being usable as one.
pub fn sid_of(session_sha256: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("sid:{session_sha256}").as_bytes());
    crate::crypto::b64url(&digest.as_ref()[..18])
}

/// Authentication methods (RFC 8176) of a session's sign-in method (`password+totp`, ...).
pub fn amr_of(method: &str) -> Vec<String> {
    let mut amr = Vec::new();
    let mut push = |v: &str| {
        if !amr.iter().any(|a: &String| a == v) {
            amr.push(v.to_string());
        }
    };
    let parts: Vec<&str> = method.split('+').collect();
    for part in &parts {
        match *part {
            "password" | "register" => push("pwd"),
            "passkey" => {
                push("hwk");
                push("user");
            }
            // A code or link mailed to the user: something they hold, one time.
            "totp" | "recovery_code" | "email_code" | "email_link" => push("otp"),
            _ => {}
        }
    }
    if parts.len() > 1 {
        push("mfa");
    }
    amr
}

/// Signs an ID token for `client` about `sign_in`, alongside `access_token`.
pub fn sign(
    app: &AppState,
    client: &ClientRecord,
    sign_in: &SignIn<'_>,
    access_token: &str,
    lifetime_secs: u64,
) -> Result<String, TokenFailure> {
    let now = app.clock.now_ms() / 1000;
    let claims = IdClaims {
        iss: app.issuer_of(&client.tenant),
        sub: sign_in.user_id.to_string(),
        aud: client.client_id.clone(),
        azp: client.client_id.clone(),
        exp: now + i64::try_from(lifetime_secs).unwrap_or(i64::MAX / 2),
        iat: now,
        auth_time: sign_in.auth_time_ms / 1000,
        nonce: sign_in.nonce.map(str::to_string),
        amr: sign_in.amr.to_vec(),
        sid: sid_of(sign_in.session_sha256),
        at_hash: at_hash(access_token),
    };
    let signer = app.signers.for_tenant(app, &client.tenant)?;
    signer.sign(alg_for(client), ID_TOKEN_TYP, &claims, app.clock.now_ms()).map_err(|e| {
        tracing::error!("signing an ID token for tenant {}: {e}", client.tenant);
        TokenFailure::Unavailable
    })
}

/// What an `id_token_hint` of ours says (its expiry does not matter: it only names things).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    pub sub: String,
    pub client_id: String,
}

#[derive(Debug, Deserialize)]
struct HintClaims {
    sub: String,
    aud: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HintError {
    #[error("not an ID token this issuer signed")]
    Invalid,
    #[error("this node cannot read its keys now")]
    Unavailable,
}

/// Reads an ID token of `tenant` given back as a hint (at authorize and at logout): signed by
/// one of its keys (the algorithm pinned to the key), `typ` JWT, our issuer; expired or not.
pub fn read_hint(app: &AppState, tenant: &str, token: &str) -> Result<IdTokenHint, HintError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| HintError::Invalid)?;
    if header.typ.as_deref() != Some(ID_TOKEN_TYP) {
        return Err(HintError::Invalid);
    }
    let signer = app.signers.for_tenant(app, tenant).map_err(|_| HintError::Unavailable)?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[app.issuer_of(tenant)]);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    let claims: HintClaims = signer.verify(token, &validation).map_err(|_| HintError::Invalid)?;
    Ok(IdTokenHint { sub: claims.sub, client_id: claims.aud })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_methods_map_to_rfc_8176_values() {
        assert_eq!(amr_of("password"), ["pwd"]);
        assert_eq!(amr_of("password+totp"), ["pwd", "otp", "mfa"]);
        assert_eq!(amr_of("passkey"), ["hwk", "user"]);
        assert_eq!(amr_of("unknown"), Vec::<String>::new());
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_sha256() {
        // OpenID Connect Core's own example pair (§A.3 uses this access token and at_hash).
        assert_eq!(at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }
}
