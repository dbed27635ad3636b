//! Access tokens: `client_credentials` issuance (every token audited through raft before it is
//! returned, A10), verification for the admin API and introspection, and revocation.
//!
//! Access tokens are RFC 9068 JWTs (`typ: at+jwt`) signed ES256 with the tenant's active key.
//! Verification takes the key from our records by `kid` with the algorithm pinned to it, then
//! checks `typ`, `iss`, `aud`, `exp`, `nbf` and the tenant's revocation deny-list.

use std::sync::Arc;

use gatehouse_storage::model::{ClientRecord, ClientStatus, SigningAlg};
use gatehouse_storage::{Applied, Command, IssuedToken, Outcome, Proposal};
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::app::signers::SignerError;
use crate::app::token_audit::AuditRefusal;
use crate::app::{AppState, NodeWriteError};
use crate::crypto::signer::TokenError;
use crate::idm::clients::{secret_matches, GRANT_CLIENT_CREDENTIALS, PRIVATE_KEY_JWT};

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Clock skew allowed on `nbf` between the nodes of a cluster. `exp` has none: a retired key's
/// tokens must all have expired by the time `keys prune` may remove it.
const NBF_LEEWAY_SECS: i64 = 5;

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
    Request { error: &'static str, description: String },
    /// 401 `invalid_client`; `basic` when the client used HTTP Basic (a challenge is sent).
    InvalidClient { basic: bool },
    /// Too many failures from this source or for this client: 429.
    RateLimited(crate::app::limits::RetryAfter),
    /// The node cannot read or write right now: 503.
    Unavailable,
}

impl TokenFailure {
    fn request(error: &'static str, description: impl Into<String>) -> TokenFailure {
        TokenFailure::Request { error, description: description.into() }
    }

    fn storage(e: impl std::fmt::Display) -> TokenFailure {
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

/// The client credentials a request presented.
#[derive(Debug, Clone)]
pub struct PresentedClient {
    pub client_id: String,
    pub secret: Option<String>,
    /// Sent as HTTP Basic (`client_secret_basic`) rather than in the form.
    pub basic: bool,
    /// A `private_key_jwt` client assertion (RFC 7523).
    pub assertion: Option<String>,
}

pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A client assertion may live at most this long from now (S16).
const ASSERTION_MAX_LIFETIME_SECS: i64 = 300;

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    jti: String,
    exp: i64,
}

/// Checks a `private_key_jwt` assertion in full (S16): signed by one of the client's keys with
/// the algorithm pinned to the key, `iss` = `sub` = client id, `aud` this issuer or the endpoint,
/// a short `exp`, and a `jti` used nowhere before in the cluster (consumed through raft).
async fn assertion_is_valid(
    app: &AppState,
    client: &ClientRecord,
    assertion: &str,
    endpoint: &str,
) -> Result<bool, TokenFailure> {
    let Ok(header) = jsonwebtoken::decode_header(assertion) else { return Ok(false) };
    let alg = match header.alg {
        jsonwebtoken::Algorithm::ES256 => "ES256",
        jsonwebtoken::Algorithm::RS256 => "RS256",
        _ => return Ok(false),
    };
    let Some(jwks) = client.jwks.as_deref().and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()) else {
        return Ok(false);
    };
    let issuer = app.issuer_of(&client.tenant);
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[client.client_id.as_str()]);
    validation.sub = Some(client.client_id.clone());
    validation.set_audience(&[issuer.clone(), format!("{issuer}/oauth2/{endpoint}")]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.validate_exp = false; // checked below against the node's clock
    let keys = jwks.get("keys").and_then(|k| k.as_array()).cloned().unwrap_or_default();
    let field = |k: &serde_json::Value, m: &str| k.get(m).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    let mut claims = None;
    for key in keys.iter().filter(|k| field(k, "alg") == alg) {
        if header.kid.as_ref().is_some_and(|kid| *kid != field(key, "kid")) {
            continue;
        }
        let decoding = match alg {
            "ES256" => DecodingKey::from_ec_components(&field(key, "x"), &field(key, "y")),
            _ => DecodingKey::from_rsa_components(&field(key, "n"), &field(key, "e")),
        };
        let Ok(decoding) = decoding else { continue };
        if let Ok(data) = jsonwebtoken::decode::<AssertionClaims>(assertion, &decoding, &validation) {
            claims = Some(data.claims);
            break;
        }
    }
    let Some(claims) = claims else { return Ok(false) };
    let now = app.clock.now_ms() / 1000;
    if claims.exp <= now
        || claims.exp > now + ASSERTION_MAX_LIFETIME_SECS
        || claims.jti.is_empty()
        || claims.jti.len() > 256
    {
        return Ok(false);
    }
    let command = Command::ConsumeAssertion {
        tenant: client.tenant.clone(),
        client_id: client.client_id.clone(),
        jti: claims.jti,
        exp_ms: claims.exp.saturating_mul(1000),
    };
    let proposal =
        Proposal { origin: None, at_ms: app.clock.now_ms(), actor: format!("client:{}", client.client_id), command };
    match app.write(proposal).await? {
        Outcome::Applied(_) => Ok(true),
        Outcome::Refused(_) => Ok(false),
    }
}

/// Authenticates a confidential client of `tenant` (S15). Unknown clients and wrong secrets
/// look the same. A failure costs no write of its own: it is counted against the source's and
/// the client's failure budgets and audited coalesced (`auth_failures`); a source or client
/// that spent its budget gets 429 before its credentials are looked at.
pub async fn authenticate_client(
    app: &AppState,
    tenant: &str,
    presented: &PresentedClient,
    endpoint: &'static str,
) -> Result<ClientRecord, TokenFailure> {
    let client_key = format!("{tenant}/{}", presented.client_id);
    app.limits.admit_client(&client_key).map_err(TokenFailure::RateLimited)?;
    let client =
        app.store.read().and_then(|r| r.client(tenant, &presented.client_id)).map_err(TokenFailure::storage)?;
    let method = if presented.basic { "client_secret_basic" } else { "client_secret_post" };
    let ok = match (&client, &presented.secret) {
        (Some(c), _) if presented.assertion.is_some() => {
            let assertion = presented.assertion.as_deref().unwrap_or_default();
            c.auth_method == PRIVATE_KEY_JWT
                && c.status == ClientStatus::Active
                && assertion_is_valid(app, c, assertion, endpoint).await?
        }
        (Some(c), Some(secret)) => {
            let digest_ok = secret_matches(secret, c.secret_sha256.as_deref());
            digest_ok && c.auth_method == method && c.status == ClientStatus::Active
        }
        (None, Some(secret)) => {
            let _ = secret_matches(secret, None); // same work as a known client
            false
        }
        _ => false,
    };
    match (ok, client) {
        (true, Some(c)) => Ok(c),
        (_, client) => {
            let source = crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip());
            // Made-up client ids count against the source only, and are audited as one: they
            // must not fill the limiter or the audit with strings of the caller's choosing.
            let known = client.is_some();
            app.limits.failed(source, known.then_some(client_key.as_str()));
            let named = if known { presented.client_id.as_str() } else { "(unknown)" };
            app.auth_failures.record(app.clock.now_ms(), tenant, endpoint, named, source, "invalid_client");
            Err(TokenFailure::InvalidClient { basic: presented.basic })
        }
    }
}

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
    if !client.grant_types.iter().any(|g| g == GRANT_CLIENT_CREDENTIALS) {
        return Err(TokenFailure::request("unauthorized_client", "this client may not use client_credentials"));
    }
    let scope = match requested_scope.map(str::trim).filter(|s| !s.is_empty()) {
        None => client.scopes.join(" "),
        Some(s) => {
            let requested: Vec<&str> = s.split(' ').filter(|x| !x.is_empty()).collect();
            if let Some(bad) = requested.iter().find(|x| !client.scopes.iter().any(|c| c == *x)) {
                return Err(TokenFailure::request(
                    "invalid_scope",
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
            return Err(TokenFailure::request("invalid_request", "give either resource or audience, not both"))
        }
        (Some(r), None) => {
            // RFC 8707: an absolute URI without a fragment.
            let absolute = url::Url::parse(r).is_ok_and(|u| u.fragment().is_none());
            if !absolute {
                return Err(TokenFailure::request(
                    "invalid_target",
                    "resource must be an absolute URI without a fragment",
                ));
            }
            r.to_string()
        }
        (None, Some(a)) => a.to_string(),
        (None, None) => client.audiences.first().cloned().unwrap_or_default(),
    };
    if !client.audiences.contains(&aud) {
        return Err(TokenFailure::request("invalid_target", format!("{aud:?} is not an audience this client may use")));
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

/// Revokes a platform admin token (the `system` issuer, the admin audience): its `jti` goes on
/// the deny-list through raft, audited with the operator as actor. Answers the `jti`, or why
/// the token is not one that can be revoked here.
pub async fn revoke_admin_token(app: &AppState, actor: &str, token: &str) -> Result<String, String> {
    let claims = verify_access_token(app, "system", token.trim(), Some(&app.config.oauth.admin_audience))
        .map_err(|e| format!("not a valid platform admin token: {e}"))?;
    let command = Command::RevokeToken {
        tenant: "system".into(),
        jti: claims.jti.clone(),
        exp_ms: claims.exp.saturating_mul(1000),
    };
    let proposal = Proposal { origin: None, at_ms: app.clock.now_ms(), actor: actor.to_string(), command };
    match app.write(proposal).await.map_err(|e| e.to_string())? {
        Outcome::Applied(_) => Ok(claims.jti),
        Outcome::Refused(r) => Err(r.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn new_claims(
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

/// Signs the claims, then commits the issuance's audit entry through raft; the token is
/// returned only once that entry is committed.
async fn sign_and_record(
    app: &AppState,
    claims: &AccessClaims,
    client_id: Option<String>,
    grant: &str,
) -> Result<String, TokenFailure> {
    let signer = app.signers.for_tenant(app, &claims.tenant)?;
    let token = signer.sign(SigningAlg::ES256, ACCESS_TOKEN_TYP, claims, app.clock.now_ms()).map_err(|e| {
        tracing::error!("signing an access token for tenant {}: {e}", claims.tenant);
        TokenFailure::Unavailable
    })?;
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
            Err(AuditRefusal::Refused(why)) => Err(TokenFailure::request("invalid_request", why)),
            Err(AuditRefusal::Unavailable) => Err(TokenFailure::Unavailable),
        };
    }
    let proposal = Proposal {
        origin: None,
        at_ms: app.clock.now_ms(),
        actor: claims.sub.clone(),
        command: Command::IssueToken(issued),
    };
    match app.write(proposal).await? {
        Outcome::Applied(Applied::TokenIssued { .. }) => Ok(token),
        Outcome::Refused(r) => Err(TokenFailure::request("invalid_request", r.to_string())),
        other => {
            tracing::error!("unexpected outcome of a token issue: {other:?}");
            Err(TokenFailure::Unavailable)
        }
    }
}

/// Why a presented access token is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidToken {
    #[error("the token is not a well-formed JWT access token")]
    Malformed,
    #[error("the token was not issued by this server for this tenant")]
    WrongIssuer,
    #[error("the token names no known key")]
    UnknownKey,
    #[error("the token does not verify: {0}")]
    Rejected(String),
    #[error("the token has been revoked")]
    Revoked,
    #[error("storage is not readable on this node")]
    Unavailable,
}

/// The tenant whose issuer is `iss`, if any. Used only to pick the keys to verify with; the
/// signature then proves `iss`.
pub fn tenant_of_issuer(app: &AppState, iss: &str) -> Option<String> {
    let public = app.public_url.as_str();
    if iss == public {
        return Some("default".into());
    }
    let id = iss.strip_prefix(public)?.strip_prefix("/t/")?;
    (gatehouse_storage::model::tenant::is_valid_tenant_id(id) && id != "default").then(|| id.to_string())
}

/// Reads `iss` from an unverified token, to choose the tenant whose keys verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = crate::crypto::b64url_decode(payload)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_string)
}

/// Verifies an access token of `tenant`: signature by one of its keys (algorithm pinned to
/// the key), `typ: at+jwt`, its issuer, `audience` when given, times, and the deny-list.
pub fn verify_access_token(
    app: &AppState,
    tenant: &str,
    token: &str,
    audience: Option<&str>,
) -> Result<AccessClaims, InvalidToken> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| InvalidToken::Malformed)?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt"))
    {
        return Err(InvalidToken::Malformed);
    }
    let signer = app.signers.for_tenant(app, tenant).map_err(|e| match e {
        SignerError::UnknownTenant => InvalidToken::WrongIssuer,
        SignerError::Unavailable => InvalidToken::Unavailable,
    })?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[app.issuer_of(tenant)]);
    match audience {
        Some(a) => validation.set_audience(&[a]),
        None => validation.validate_aud = false,
    }
    // Times are checked below against the node's clock (injected, so tests can pin it).
    validation.validate_nbf = false;
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    let claims: AccessClaims = signer.verify(token, &validation).map_err(|e| match e {
        TokenError::UnknownKey => InvalidToken::UnknownKey,
        TokenError::Invalid(why) if why.contains("InvalidIssuer") => InvalidToken::WrongIssuer,
        other => InvalidToken::Rejected(other.to_string()),
    })?;
    if claims.tenant != tenant {
        return Err(InvalidToken::WrongIssuer);
    }
    check_times(claims.exp, claims.nbf, claims.iat, app.clock.now_ms() / 1000)?;
    let revoked =
        app.store.read().and_then(|r| r.is_revoked(tenant, &claims.jti)).map_err(|_| InvalidToken::Unavailable)?;
    if revoked {
        return Err(InvalidToken::Revoked);
    }
    Ok(claims)
}

/// `exp` without leeway (a retired key's tokens must all have expired when it is pruned);
/// `nbf` and `iat` with a little, for clock skew between nodes (S35); times in seconds.
fn check_times(exp: i64, nbf: i64, iat: i64, now: i64) -> Result<(), InvalidToken> {
    if exp <= now {
        return Err(InvalidToken::Rejected("the token has expired".into()));
    }
    if nbf > now + NBF_LEEWAY_SECS {
        return Err(InvalidToken::Rejected("the token is not valid yet".into()));
    }
    if iat > now + NBF_LEEWAY_SECS {
        return Err(InvalidToken::Rejected("the token was issued in the future".into()));
    }
    Ok(())
}

/// RFC 7009: revokes an access token of this tenant that was issued to `client`. Tokens that
/// do not verify, or belong to another client, are ignored (the answer is the same).
pub async fn revoke(app: &AppState, client: &ClientRecord, token: &str) -> Result<(), TokenFailure> {
    let claims = match verify_access_token(app, &client.tenant, token, None) {
        Ok(c) => c,
        Err(InvalidToken::Unavailable) => return Err(TokenFailure::Unavailable),
        Err(_) => return Ok(()),
    };
    if claims.client_id != client.client_id {
        return Ok(());
    }
    let command = Command::RevokeToken {
        tenant: client.tenant.clone(),
        jti: claims.jti,
        exp_ms: claims.exp.saturating_mul(1000),
    };
    let proposal =
        Proposal { origin: None, at_ms: app.clock.now_ms(), actor: format!("client:{}", client.client_id), command };
    match app.write(proposal).await? {
        Outcome::Applied(_) => Ok(()),
        Outcome::Refused(r) => {
            tracing::warn!("revocation refused: {r}");
            Ok(())
        }
    }
}

/// How often the leader drops deny-list entries of expired tokens.
const REVOCATION_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// On the leader, every few minutes, prunes the revocation deny-list of tokens that have
/// expired (they fail verification on `exp` anyway) and remembered idempotent answers older
/// than a day. Runs until `stop` turns true.
pub async fn revocation_pruning_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(REVOCATION_PRUNE_EVERY) => {}
        }
        if !app.raft.status().is_leader {
            continue;
        }
        let now_ms = app.clock.now_ms();
        let due = app.store.read().and_then(|r| Ok((r.expired_revocations(now_ms)?, r.expired_idempotency(now_ms)?)));
        let (revocations, answers) = match due {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!("pruning check: {e}");
                continue;
            }
        };
        let commands = [(revocations, Command::PruneRevocations), (answers, Command::PruneIdempotency)];
        for (_, command) in commands.into_iter().filter(|(n, _)| *n > 0) {
            let proposal = Proposal { origin: None, at_ms: now_ms, actor: "policy:pruning".into(), command };
            if let Err(e) = app.write(proposal).await {
                tracing::warn!("pruning: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let now = 1_000;
        assert!(check_times(now + 60, now, now, now).is_ok());
        assert!(check_times(now, now - 60, now - 60, now).is_err(), "expires at now: expired");
        assert!(check_times(now - 1, now - 60, now - 60, now).is_err());
        assert!(check_times(now + 60, now + NBF_LEEWAY_SECS, now, now).is_ok(), "within the skew allowance");
        assert!(check_times(now + 600, now + NBF_LEEWAY_SECS + 1, now, now).is_err(), "not valid yet");
        assert!(check_times(now + 600, now, now + NBF_LEEWAY_SECS, now).is_ok(), "issued within the skew");
        assert!(check_times(now + 600, now, now + NBF_LEEWAY_SECS + 1, now).is_err(), "issued in the future");
    }
}
