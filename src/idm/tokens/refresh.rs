//! Refresh tokens: `rt1.{payload}.{signature}`, the payload naming the tenant and the token's
//! family, signed Ed25519 with the tenant's refresh key, so a forged or truncated token is
//! refused before any lookup. The family's server-side record (only the current token's
//! digest) decides whether it is still good; every use rotates it, and an older token of the
//! family coming back revokes the whole family (S12). Bound to its client (S13); a refresh
//! can only narrow the scopes (S11), and gives no new ID token (OpenID Connect Core §12.2).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use gatehouse_storage::model::{ClientRecord, CodeToken, RefreshFamilyRecord};
use gatehouse_storage::{Applied, Command, Rejection};
use serde::{Deserialize, Serialize};

use crate::app::{AppState, ProposeError};

use super::issue::{new_claims, sign_access};
use super::*;

pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
const PREFIX: &str = "rt1.";

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// The tenant.
    t: String,
    /// The family.
    f: String,
    /// 128 random bits: each token of a family differs.
    n: String,
}

/// The tenant's refresh signing key: derived from the cluster's key-encryption key, so every
/// node holds the same one and none is stored.
fn key_of(app: &AppState, tenant: &str) -> SigningKey {
    let seed = app.cipher.keyed_digest("refresh-token-signing-key", tenant.as_bytes());
    let mut bytes = [0u8; 32];
    if let Ok(raw) = hex::decode(seed) {
        bytes.copy_from_slice(&raw[..32]);
    }
    SigningKey::from_bytes(&bytes)
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    crate::clock::random_bytes(&mut bytes);
    crate::crypto::b64url(&bytes)
}

/// A new token of `family_id`, and its digest (what the family stores).
fn new_token(app: &AppState, tenant: &str, family_id: &str) -> (String, String) {
    let payload = Payload { t: tenant.to_string(), f: family_id.to_string(), n: random_b64(16) };
    let body = crate::crypto::b64url(&serde_json::to_vec(&payload).unwrap_or_default());
    let message = format!("{PREFIX}{body}");
    let signature = key_of(app, tenant).sign(message.as_bytes());
    let token = format!("{message}.{}", crate::crypto::b64url(&signature.to_bytes()));
    let digest = token_digest(&token);
    (token, digest)
}

pub fn token_digest(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()))
}

/// Whether `token` looks like one of ours (the revocation endpoint's question).
pub fn is_refresh_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The family a token of `tenant` names, once its signature verifies.
pub fn verified_family(app: &AppState, tenant: &str, token: &str) -> Option<String> {
    let rest = token.strip_prefix(PREFIX)?;
    let (body, signature) = rest.split_once('.')?;
    let signature = Signature::from_slice(&crate::crypto::b64url_decode(signature)?).ok()?;
    key_of(app, tenant).verifying_key().verify(format!("{PREFIX}{body}").as_bytes(), &signature).ok()?;
    let payload: Payload = serde_json::from_slice(&crate::crypto::b64url_decode(body)?).ok()?;
    (payload.t == tenant).then_some(payload.f)
}

/// A family for a grant with `offline_access`, and its first token.
pub fn new_family(
    app: &AppState,
    client: &ClientRecord,
    user_id: &str,
    scopes: &[String],
    auth_time_ms: i64,
    amr: &[String],
) -> (RefreshFamilyRecord, String) {
    let family_id = random_b64(16);
    let (token, digest) = new_token(app, &client.tenant, &family_id);
    let now_ms = app.clock.now_ms();
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    let record = RefreshFamilyRecord {
        v: 1,
        tenant: client.tenant.clone(),
        family_id,
        client_id: client.client_id.clone(),
        user_id: user_id.to_string(),
        scopes: scopes.to_vec(),
        current_sha256: digest,
        generation: 0,
        auth_time_ms,
        amr: amr.to_vec(),
        created_at_ms: now_ms,
        last_used_ms: now_ms,
        idle_ms: ms(app.config.oauth.refresh_token_idle_secs),
        expires_at_ms: now_ms.saturating_add(ms(app.config.oauth.refresh_token_lifetime_secs)),
        last_access: None,
        revoked: false,
    };
    (record, token)
}

/// What a refresh returns.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
    pub refresh_token: String,
}

fn invalid_grant() -> TokenFailure {
    TokenFailure::request(OAuthErrorCode::InvalidGrant, "the refresh token is not valid")
}

/// The `refresh_token` grant for an authenticated `client`.
pub async fn refresh(
    app: &AppState,
    client: &ClientRecord,
    token: Option<&str>,
    requested_scope: Option<&str>,
) -> Result<Refreshed, TokenFailure> {
    if !client.grant_types.iter().any(|g| g == GRANT_REFRESH_TOKEN) {
        return Err(TokenFailure::request(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use refresh tokens",
        ));
    }
    let token =
        token.ok_or_else(|| TokenFailure::request(OAuthErrorCode::InvalidRequest, "refresh_token is missing"))?;
    // A forged or damaged token costs a signature check and nothing else.
    let family_id = verified_family(app, &client.tenant, token).ok_or_else(invalid_grant)?;
    let family = app
        .store
        .read()
        .and_then(|r| r.refresh_family(&client.tenant, &family_id))
        .map_err(TokenFailure::storage)?
        .ok_or_else(invalid_grant)?;
    if family.client_id != client.client_id || !family.live_at(app.clock.now_ms()) {
        return Err(invalid_grant());
    }
    // A disabled user's families are revoked; this read spares the write of a refusal.
    let active = app
        .store
        .read()
        .and_then(|r| r.user(&client.tenant, &family.user_id))
        .map_err(TokenFailure::storage)?
        .is_some_and(|u| u.status == gatehouse_storage::model::UserStatus::Active);
    if !active {
        return Err(invalid_grant());
    }
    // The grant's scopes that the client may still ask for (an admin may have taken some away).
    let allowed: Vec<&String> = family
        .scopes
        .iter()
        .filter(|s| crate::idm::authorize::OIDC_SCOPES.contains(&s.as_str()) || client.scopes.contains(s))
        .collect();
    let scopes: Vec<String> = match requested_scope.map(str::trim).filter(|s| !s.is_empty()) {
        None => allowed.iter().map(|s| s.to_string()).collect(),
        Some(s) => {
            let mut asked: Vec<String> = Vec::new();
            for x in s.split(' ').filter(|x| !x.is_empty()) {
                if !allowed.iter().any(|f| *f == x) {
                    return Err(TokenFailure::request(
                        OAuthErrorCode::InvalidScope,
                        "a refresh may only ask for scopes the grant has",
                    ));
                }
                if !asked.iter().any(|a| a == x) {
                    asked.push(x.to_string());
                }
            }
            asked
        }
    };
    let roles = app
        .store
        .read()
        .and_then(|r| r.roles_of(&client.tenant, &format!("user:{}", family.user_id)))
        .map_err(TokenFailure::storage)?;
    let lifetime = u64::from(client.access_token_lifetime_secs).min(app.config.keys.max_token_lifetime_secs);
    let audience = client.audiences.first().cloned().unwrap_or_else(|| client.client_id.clone());
    let claims = new_claims(
        app,
        &client.tenant,
        &family.user_id,
        &client.client_id,
        audience,
        scopes.join(" "),
        roles,
        lifetime,
    );
    let access_token = sign_access(app, &claims)?;
    let (next, next_sha256) = new_token(app, &client.tenant, &family_id);
    let command = Command::RotateRefreshToken {
        tenant: client.tenant.clone(),
        family_id,
        client_id: client.client_id.clone(),
        presented_sha256: token_digest(token),
        next_sha256,
        access: CodeToken { jti: claims.jti.clone(), exp_ms: claims.exp.saturating_mul(1000) },
    };
    match app.propose(&format!("client:{}", client.client_id), command).await {
        Ok(Applied::RefreshTokenRotated { .. }) => {
            app.metrics.count_token_issued(&client.tenant, GRANT_REFRESH_TOKEN);
            Ok(Refreshed { access_token, expires_in: lifetime, scope: claims.scope, refresh_token: next })
        }
        Ok(Applied::RefreshTokenReused) => {
            tracing::warn!("a refresh token of client {} was presented again; its family is revoked", client.client_id);
            Err(invalid_grant())
        }
        Ok(other) => {
            tracing::error!("unexpected outcome of a refresh: {other:?}");
            Err(TokenFailure::Unavailable)
        }
        Err(ProposeError::Refused(Rejection::ClientDisabled { .. })) => {
            Err(TokenFailure::InvalidClient { basic: false })
        }
        Err(ProposeError::Refused(_)) => Err(invalid_grant()),
        Err(ProposeError::Write(e)) => Err(e.into()),
    }
}

/// RFC 7009 for a refresh token: its family is revoked, if it is `client`'s (the answer is the
/// same either way).
pub async fn revoke(app: &AppState, client: &ClientRecord, token: &str) -> Result<(), TokenFailure> {
    let Some(family_id) = verified_family(app, &client.tenant, token) else { return Ok(()) };
    let family =
        app.store.read().and_then(|r| r.refresh_family(&client.tenant, &family_id)).map_err(TokenFailure::storage)?;
    if !family.is_some_and(|f| f.client_id == client.client_id && !f.revoked) {
        return Ok(());
    }
    let command =
        Command::RevokeRefreshFamily { tenant: client.tenant.clone(), family_id, client_id: client.client_id.clone() };
    match app.propose(&format!("client:{}", client.client_id), command).await {
        Ok(_) | Err(ProposeError::Refused(_)) => Ok(()),
        Err(ProposeError::Write(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_tells_refresh_tokens_from_access_tokens() {
        assert!(is_refresh_token("rt1.abc.def"));
        assert!(!is_refresh_token("eyJhbGciOiJFUzI1NiJ9.e30.sig"));
    }
}
