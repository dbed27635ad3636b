//! The `authorization_code` grant (RFC 6749 §4.1.3, RFC 7636, OpenID Connect Core §3.1.3):
//! a code spent once, by its own client, with its redirect URI and the PKCE verifier of its
//! challenge (S5–S9). The tokens are signed first and then recorded in the one write that
//! spends the code, so two redemptions racing on two nodes succeed once, and a code presented
//! again revokes what its first use issued.

use gatehouse_storage::model::{AuthorizationCodeRecord, ClientRecord, CodeToken};
use gatehouse_storage::{Applied, Command, Rejection};

use crate::app::{AppState, ProposeError};

use super::id_token::{self, SignIn};
use super::issue::{new_claims, sign_access};
use super::*;

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";

/// What a redemption returns.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
    /// When `openid` was asked for.
    pub id_token: Option<String>,
    /// When `offline_access` was asked for by a client of the refresh grant.
    pub refresh_token: Option<String>,
}

/// The digest a code is stored under.
pub fn code_digest(code: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, code.as_bytes()))
}

/// A PKCE verifier: 43 to 128 unreserved characters (RFC 7636 §4.1).
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn invalid_grant(why: &str) -> TokenFailure {
    TokenFailure::request(OAuthErrorCode::InvalidGrant, why)
}

/// Redeems `code` for an authenticated `client`.
pub async fn redeem(
    app: &AppState,
    client: &ClientRecord,
    code: Option<&str>,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<CodeGrant, TokenFailure> {
    if !client.grant_types.iter().any(|g| g == GRANT_AUTHORIZATION_CODE) {
        return Err(TokenFailure::request(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the authorization code grant",
        ));
    }
    let code = code.ok_or_else(|| TokenFailure::request(OAuthErrorCode::InvalidRequest, "code is missing"))?;
    // Every authorization request names its redirect URI, so leaving it out here never
    // matches (S6: invalid_grant).
    let redirect_uri = redirect_uri.ok_or_else(|| invalid_grant("redirect_uri is missing"))?;
    let digest = code_digest(code);
    let record = app
        .store
        .read()
        .and_then(|r| r.authorization_code(&client.tenant, &digest))
        .map_err(TokenFailure::storage)?
        .ok_or_else(|| invalid_grant("the code is not valid"))?;
    if let Some(first) = &record.redeemed {
        // A replay, by whoever: what the first use issued is revoked (S5), in one write. Once
        // it is, a replay writes nothing more: a leaked spent code cannot fill the log.
        if !revoked_already(app, &client.tenant, first)? {
            spend(app, client, &record, redirect_uri, Vec::new(), None).await?;
        }
        return Err(invalid_grant("the code is not valid"));
    }
    if record.client_id != client.client_id || record.redirect_uri != redirect_uri {
        return Err(invalid_grant("the code was not issued to this client for this redirect_uri"));
    }
    if record.expires_at_ms <= app.clock.now_ms() {
        return Err(invalid_grant("the code has expired"));
    }
    let verifier = code_verifier.ok_or_else(|| invalid_grant("code_verifier is missing (PKCE)"))?;
    let challenge =
        crate::crypto::b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    if !is_verifier(verifier) || !constant_time_eq(challenge.as_bytes(), record.code_challenge.as_bytes()) {
        return Err(invalid_grant("code_verifier does not match the code_challenge"));
    }

    let roles = app
        .store
        .read()
        .and_then(|r| r.roles_of(&client.tenant, &format!("user:{}", record.user_id)))
        .map_err(TokenFailure::storage)?;
    let lifetime = u64::from(client.access_token_lifetime_secs).min(app.config.keys.max_token_lifetime_secs);
    let audience = client.audiences.first().cloned().unwrap_or_else(|| client.client_id.clone());
    let scope = record.scopes.join(" ");
    let claims = new_claims(app, &client.tenant, &record.user_id, &client.client_id, audience, scope, roles, lifetime);
    let access_token = sign_access(app, &claims)?;
    let id_token = if record.scopes.iter().any(|s| s == "openid") {
        let sign_in = SignIn {
            user_id: &record.user_id,
            session_sha256: &record.session_sha256,
            auth_time_ms: record.auth_time_ms,
            amr: &record.amr,
            nonce: record.nonce.as_deref(),
        };
        Some(id_token::sign(app, client, &sign_in, &access_token, lifetime)?)
    } else {
        None
    };
    let offline = record.scopes.iter().any(|s| s == "offline_access")
        && client.grant_types.iter().any(|g| g == super::GRANT_REFRESH_TOKEN);
    let (family, refresh_token) = if offline {
        let (mut family, token) =
            super::refresh::new_family(app, client, &record.user_id, &record.scopes, record.auth_time_ms, &record.amr);
        family.last_access = Some(CodeToken { jti: claims.jti.clone(), exp_ms: claims.exp.saturating_mul(1000) });
        (Some(family), Some(token))
    } else {
        (None, None)
    };
    let tokens = vec![CodeToken { jti: claims.jti.clone(), exp_ms: claims.exp.saturating_mul(1000) }];
    spend(app, client, &record, redirect_uri, tokens, family).await?;
    app.metrics.count_token_issued(&client.tenant, GRANT_AUTHORIZATION_CODE);
    Ok(CodeGrant { access_token, expires_in: lifetime, scope: claims.scope, id_token, refresh_token })
}

/// Whether everything a code's redemption issued is revoked already (its tokens on the
/// deny-list, its refresh family revoked or gone).
fn revoked_already(
    app: &AppState,
    tenant: &str,
    first: &gatehouse_storage::model::CodeRedemption,
) -> Result<bool, TokenFailure> {
    let reader = app.store.read().map_err(TokenFailure::storage)?;
    for token in &first.tokens {
        if !reader.is_revoked(tenant, &token.jti).map_err(TokenFailure::storage)? {
            return Ok(false);
        }
    }
    match &first.refresh_family {
        Some(id) => Ok(reader.refresh_family(tenant, id).map_err(TokenFailure::storage)?.is_none_or(|f| f.revoked)),
        None => Ok(true),
    }
}

/// The write that spends the code (and records `tokens`, its audit); a refusal is the grant's.
async fn spend(
    app: &AppState,
    client: &ClientRecord,
    record: &AuthorizationCodeRecord,
    redirect_uri: &str,
    tokens: Vec<CodeToken>,
    refresh: Option<gatehouse_storage::model::RefreshFamilyRecord>,
) -> Result<(), TokenFailure> {
    let command = Command::RedeemAuthorizationCode {
        tenant: client.tenant.clone(),
        code_sha256: record.code_sha256.clone(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        tokens,
        refresh,
    };
    match app.propose(&format!("client:{}", client.client_id), command).await {
        Ok(Applied::AuthorizationCodeRedeemed { .. }) => Ok(()),
        Ok(Applied::AuthorizationCodeReused { revoked }) => {
            tracing::warn!(
                "an authorization code of client {} was presented again; {revoked} tokens revoked",
                record.client_id
            );
            Err(invalid_grant("the code is not valid"))
        }
        Ok(other) => {
            tracing::error!("unexpected outcome of a code redemption: {other:?}");
            Err(TokenFailure::Unavailable)
        }
        Err(ProposeError::Refused(Rejection::ClientDisabled { .. })) => {
            Err(TokenFailure::InvalidClient { basic: false })
        }
        Err(ProposeError::Refused(Rejection::UnauthorizedGrant)) => Err(TokenFailure::request(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the authorization code grant",
        )),
        // Unknown, expired, another client's; the session ended or the user was disabled.
        Err(ProposeError::Refused(_)) => Err(invalid_grant("the code is not valid")),
        Err(ProposeError::Write(e)) => Err(e.into()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_are_43_to_128_unreserved_characters() {
        assert!(is_verifier(&"a".repeat(43)));
        assert!(is_verifier(&"-._~".repeat(32)));
        assert!(!is_verifier(&"a".repeat(42)));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}+", "a".repeat(42))));
    }
}
