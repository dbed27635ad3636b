//! Issuance: claims, signing, and the audit entry committed before a token is returned.

use gatehouse_storage::model::{ClientRecord, SigningAlg};
use gatehouse_storage::{Applied, Command, IssuedToken};

use crate::app::token_audit::AuditRefusal;
use crate::app::{AppState, ProposeError};
use crate::idm::clients::GRANT_CLIENT_CREDENTIALS;

use super::*;

/// A token that was issued and audited.
#[derive(Debug, Clone)]
pub struct IssuedAccessToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// The `client_credentials` grant for an authenticated client.
pub async fn client_credentials(
    app: &AppState,
    client: &ClientRecord,
    requested_scope: Option<&str>,
    resource: Option<&str>,
    audience: Option<&str>,
) -> Result<IssuedAccessToken, TokenFailure> {
    // A public client holds no credentials: it can never act as itself.
    if client.kind == gatehouse_storage::model::ClientKind::Public
        || !client.grant_types.iter().any(|g| g == GRANT_CLIENT_CREDENTIALS)
    {
        return Err(TokenFailure::request(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use client_credentials",
        ));
    }
    let scope = match requested_scope.map(str::trim).filter(|s| !s.is_empty()) {
        None => client.scopes.join(" "),
        Some(s) => {
            let requested: Vec<&str> = s.split(' ').filter(|x| !x.is_empty()).collect();
            if let Some(bad) = requested.iter().find(|x| !client.scopes.iter().any(|c| c == *x)) {
                return Err(TokenFailure::request(
                    OAuthErrorCode::InvalidScope,
                    format!("scope {bad:?} is not allowed for this client"),
                ));
            }
            let mut unique: Vec<&str> = Vec::new();
            for x in requested {
                if !unique.contains(&x) {
                    unique.push(x);
                }
            }
            unique.join(" ")
        }
    };
    let aud = match (resource, audience) {
        (Some(_), Some(_)) => {
            return Err(TokenFailure::request(
                OAuthErrorCode::InvalidRequest,
                "give either resource or audience, not both",
            ))
        }
        (Some(r), None) => {
            // RFC 8707: an absolute URI without a fragment.
            let absolute = url::Url::parse(r).is_ok_and(|u| u.fragment().is_none());
            if !absolute {
                return Err(TokenFailure::request(
                    OAuthErrorCode::InvalidTarget,
                    "resource must be an absolute URI without a fragment",
                ));
            }
            r.to_string()
        }
        (None, Some(a)) => a.to_string(),
        (None, None) => client.audiences.first().cloned().unwrap_or_default(),
    };
    if !client.audiences.contains(&aud) {
        return Err(TokenFailure::request(
            OAuthErrorCode::InvalidTarget,
            format!("{aud:?} is not an audience this client may use"),
        ));
    }
    let roles = app
        .store
        .read()
        .and_then(|r| r.roles_of(&client.tenant, &format!("client:{}", client.client_id)))
        .map_err(TokenFailure::storage)?;
    let lifetime = u64::from(client.access_token_lifetime_secs).min(app.config.keys.max_token_lifetime_secs);
    let claims = new_claims(app, &client.tenant, &client.client_id, &client.client_id, aud, scope, roles, lifetime);
    let token = sign_and_record(app, &claims, Some(client.client_id.clone()), GRANT_CLIENT_CREDENTIALS).await?;
    app.metrics.count_token_issued(&client.tenant, GRANT_CLIENT_CREDENTIALS);
    Ok(IssuedAccessToken { access_token: token, expires_in: lifetime, scope: claims.scope })
}

/// A short-lived platform admin token for the `gatehouse admin token` command.
pub async fn mint_admin_token(app: &AppState, actor: &str) -> Result<(String, u64), TokenFailure> {
    let lifetime = app.config.oauth.admin_token_lifetime_secs;
    let aud = app.config.oauth.admin_audience.clone();
    let claims = new_claims(app, "system", actor, "gatehouse-cli", aud, String::new(), vec!["owner".into()], lifetime);
    let token = sign_and_record(app, &claims, None, "cli").await?;
    Ok((token, lifetime))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_claims(
    app: &AppState,
    tenant: &str,
    sub: &str,
    client_id: &str,
    aud: String,
    scope: String,
    roles: Vec<String>,
    lifetime_secs: u64,
) -> AccessClaims {
    let now = app.clock.now_ms() / 1000;
    let mut jti = [0u8; 16];
    crate::clock::random_bytes(&mut jti);
    AccessClaims {
        iss: app.issuer_of(tenant),
        sub: sub.to_string(),
        aud,
        exp: now + i64::try_from(lifetime_secs).unwrap_or(i64::MAX / 2),
        iat: now,
        nbf: now,
        jti: crate::crypto::b64url(&jti),
        client_id: client_id.to_string(),
        scope,
        tenant: tenant.to_string(),
        roles,
    }
}

/// Signs an access token (ES256, the tenant's active key).
pub(super) fn sign_access(app: &AppState, claims: &AccessClaims) -> Result<String, TokenFailure> {
    let signer = app.signers.for_tenant(app, &claims.tenant)?;
    signer.sign(SigningAlg::ES256, ACCESS_TOKEN_TYP, claims, app.clock.now_ms()).map_err(|e| {
        tracing::error!("signing an access token for tenant {}: {e}", claims.tenant);
        TokenFailure::Unavailable
    })
}

/// Signs the claims, then commits the issuance's audit entry through raft; the token is
/// returned only once that entry is committed.
async fn sign_and_record(
    app: &AppState,
    claims: &AccessClaims,
    client_id: Option<String>,
    grant: &str,
) -> Result<String, TokenFailure> {
    let token = sign_access(app, claims)?;
    let issued = IssuedToken {
        tenant: claims.tenant.clone(),
        client_id,
        subject: claims.sub.clone(),
        jti: claims.jti.clone(),
        grant: grant.to_string(),
        scope: claims.scope.clone(),
        audience: claims.aud.clone(),
        exp_ms: claims.exp.saturating_mul(1000),
        origin: crate::app::request::current_origin(),
    };
    if issued.client_id.is_some() {
        // The token endpoint's path: many requests share one raft entry (group commit).
        return match app.token_audit.record(issued).await {
            Ok(()) => Ok(token),
            Err(AuditRefusal::ClientGone) => Err(TokenFailure::InvalidClient { basic: false }),
            Err(AuditRefusal::Refused(why)) => Err(TokenFailure::request(OAuthErrorCode::InvalidRequest, why)),
            Err(AuditRefusal::Unavailable) => Err(TokenFailure::Unavailable),
        };
    }
    match app.propose(&claims.sub, Command::IssueToken(issued)).await {
        Ok(Applied::TokenIssued { .. }) => Ok(token),
        Err(ProposeError::Refused(r)) => Err(TokenFailure::request(OAuthErrorCode::InvalidRequest, r.to_string())),
        Err(ProposeError::Write(e)) => Err(e.into()),
        Ok(other) => {
            tracing::error!("unexpected outcome of a token issue: {other:?}");
            Err(TokenFailure::Unavailable)
        }
    }
}
