//! Verifying a presented access token.

use jsonwebtoken::Validation;

use crate::app::signers::SignerError;
use crate::app::AppState;
use crate::crypto::signer::TokenError;

use super::*;

/// Clock skew allowed on `nbf` between the nodes of a cluster. `exp` has none: a retired key's
/// tokens must all have expired by the time `keys prune` may remove it.
const NBF_LEEWAY_SECS: i64 = 5;

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
        TokenError::WrongIssuer => InvalidToken::WrongIssuer,
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
