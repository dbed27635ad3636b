//! Client authentication at the token, introspection and revocation endpoints.

use gatehouse_storage::model::{ClientKind, ClientRecord, ClientStatus};
use gatehouse_storage::Command;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use crate::app::{AppState, ProposeError};
use crate::idm::clients::{secret_matches, PRIVATE_KEY_JWT};

use super::*;

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
    match app.propose(&format!("client:{}", client.client_id), command).await {
        Ok(_) => Ok(true),
        Err(ProposeError::Refused(_)) => Ok(false),
        Err(ProposeError::Write(e)) => Err(e.into()),
    }
}

/// Authenticates a client of `tenant` (S15): a confidential one by its secret or key, a public
/// one (`none`) by its id alone, and only at the token and revocation endpoints. Unknown clients and wrong secrets
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
        (Some(c), None) => {
            c.auth_method == "none"
                && c.kind == ClientKind::Public
                && c.status == ClientStatus::Active
                && matches!(endpoint, "token" | "revoke")
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
            app.auth_failures.record(
                app.clock.now_ms(),
                tenant,
                endpoint,
                named,
                source,
                OAuthErrorCode::InvalidClient.as_str(),
            );
            // No credentials at all: the challenge says which to send.
            let bare = presented.secret.is_none() && presented.assertion.is_none();
            Err(TokenFailure::InvalidClient { basic: presented.basic || bare })
        }
    }
}
