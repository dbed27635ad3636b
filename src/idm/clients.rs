//! OAuth clients: registration, updates and deletion. The client id and secret are generated
//! here (callers never choose them, S23); the secret is returned once and stored only as its
//! SHA-256 digest, compared in constant time (S15).

use gatehouse_storage::model::{ClientKind, ClientRecord, ClientStatus};
use gatehouse_storage::{Applied, Command, HeldRoles, Rejection};

use crate::app::{AppState, NodeWriteError};

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// Grant types a client may register. Only `client_credentials` is served at the token
/// endpoint so far; the others answer `unsupported_grant_type` until the code flow exists.
pub const KNOWN_GRANTS: [&str; 3] = [GRANT_CLIENT_CREDENTIALS, "authorization_code", "refresh_token"];
pub const CONFIDENTIAL_AUTH_METHODS: [&str; 3] = ["client_secret_basic", "client_secret_post", "private_key_jwt"];
pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";

/// What a caller may set on a client.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub name: String,
    pub kind: ClientKind,
    pub auth_method: String,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser back to (exact match).
    pub post_logout_redirect_uris: Vec<String>,
    pub access_token_lifetime_secs: Option<u32>,
    pub disabled: bool,
    /// For `private_key_jwt`: the client's public keys, a JWK Set as JSON.
    pub jwks: Option<String>,
    pub id_token_signed_response_alg: Option<String>,
    /// The tenant's own application: no consent is asked for it.
    pub first_party: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("invalid client: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error("a client's type cannot change")]
    KindFixed,
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
}

/// A created client and its secret, which is never shown again.
pub struct CreatedClient {
    pub client: ClientRecord,
    pub secret: Option<String>,
}

/// Checks a spec against the rules of the design; returns every problem with its field.
pub fn validate(spec: &ClientSpec) -> Result<(), ClientError> {
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut err = |field: &str, message: String| errors.push((field.to_string(), message));
    let name = super::trim_ascii(&spec.name);
    if !name.chars().any(|c| !super::is_blank_or_control(c))
        || spec.name.chars().count() > 200
        || spec.name.chars().any(char::is_control)
    {
        err("name", "must be 1 to 200 characters".into());
    }
    match spec.kind {
        ClientKind::Confidential if !CONFIDENTIAL_AUTH_METHODS.contains(&spec.auth_method.as_str()) => err(
            "token_endpoint_auth_method",
            format!("a confidential client uses one of {}", CONFIDENTIAL_AUTH_METHODS.join(", ")),
        ),
        ClientKind::Public if spec.auth_method != "none" => {
            err("token_endpoint_auth_method", "a public client uses \"none\"".into())
        }
        _ => {}
    }
    if spec.grant_types.is_empty() {
        err("grant_types", "at least one grant type is required".into());
    }
    for g in &spec.grant_types {
        if !KNOWN_GRANTS.contains(&g.as_str()) {
            err("grant_types", format!("unknown grant type {g:?}; known: {}", KNOWN_GRANTS.join(", ")));
        }
    }
    // A public client may list client_credentials, but can never use it: it has no secret.
    if spec.audiences.is_empty() {
        err("audiences", "at least one audience is required".into());
    }
    if spec.scopes.len() > 64 {
        err("scopes", "at most 64 scopes".into());
    }
    for s in &spec.scopes {
        if !is_scope_token(s) || s.len() > 128 {
            err("scopes", format!("{s:?} is not a scope token (RFC 6749 section 3.3, at most 128 characters)"));
        }
    }
    if spec.audiences.len() > 16 {
        err("audiences", "at most 16 audiences".into());
    }
    for a in &spec.audiences {
        if a.is_empty() || a.chars().count() > 256 || a.chars().any(super::is_blank_or_control) {
            err("audiences", format!("{a:?} must be 1 to 256 characters without spaces"));
        }
    }
    if spec.redirect_uris.len() > 16 {
        err("redirect_uris", "at most 16 redirect URIs".into());
    }
    if spec.post_logout_redirect_uris.len() > 16 {
        err("post_logout_redirect_uris", "at most 16 URIs".into());
    }
    for u in &spec.post_logout_redirect_uris {
        if let Err(why) = check_redirect_uri(u) {
            err("post_logout_redirect_uris", format!("{u:?}: {why}"));
        }
    }
    for u in &spec.redirect_uris {
        if let Err(why) = check_redirect_uri(u) {
            err("redirect_uris", format!("{u:?}: {why}"));
        }
    }
    // Longer lifetimes are capped at issuance to `keys.max_token_lifetime_secs`.
    if spec.access_token_lifetime_secs == Some(0) || spec.access_token_lifetime_secs.is_some_and(|s| s > 86_400) {
        err("access_token_lifetime_secs", "must be between 1 and 86400".into());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ClientError::Invalid(errors))
    }
}

/// RFC 6749 section 3.3: `1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// The redirect URIs the admin API's schema admits: `https://`, `http://` on a loopback host, or a
/// reverse-domain private scheme of a native app (RFC 8252); no fragment.
pub const REDIRECT_URI_PATTERN: &str = r"^(https://[^\x00-\x20\x7f-\x9f#/?@]+|http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?|[a-z][a-z0-9]*(\.[a-z0-9]+)+:)(/[^\x00-\x20\x7f-\x9f#]*)?$";

static REDIRECT_URI: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(REDIRECT_URI_PATTERN).expect("a valid pattern"));

fn check_redirect_uri(raw: &str) -> Result<(), &'static str> {
    if raw.chars().count() > 2048 {
        return Err("longer than 2048 characters");
    }
    if !REDIRECT_URI.is_match(raw) {
        return Err("use https://, http:// on a loopback host, or a reverse-domain private scheme, without a fragment");
    }
    Ok(())
}

/// SHA-256 of a client secret, lowercase hex.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()))
}

/// Whether `presented` is the secret whose digest is stored, in constant time.
pub fn secret_matches(presented: &str, stored_digest: Option<&str>) -> bool {
    let presented = secret_digest(presented);
    // Compare against a digest of the same length even when there is none, so timing does
    // not tell whether the client exists or has a secret.
    let stored = stored_digest.unwrap_or("0000000000000000000000000000000000000000000000000000000000000000");
    let equal = aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), stored.as_bytes()).is_ok();
    equal && stored_digest.is_some()
}

fn lifetime(app: &AppState, spec: &ClientSpec) -> u32 {
    spec.access_token_lifetime_secs
        .unwrap_or_else(|| u32::try_from(app.config.oauth.access_token_lifetime_secs).unwrap_or(u32::MAX))
}

pub async fn create(app: &AppState, tenant: &str, spec: ClientSpec, actor: &str) -> Result<CreatedClient, ClientError> {
    validate(&spec)?;
    let now_ms = app.clock.now_ms();
    let secret = match spec.kind {
        ClientKind::Confidential if spec.auth_method != PRIVATE_KEY_JWT => {
            let mut bytes = [0u8; 32];
            crate::clock::random_bytes(&mut bytes);
            Some(crate::crypto::b64url(&bytes))
        }
        _ => None,
    };
    let client = ClientRecord {
        v: 1,
        tenant: tenant.to_string(),
        client_id: crate::clock::random_id("c-"),
        name: super::trim_ascii(&spec.name).to_string(),
        kind: spec.kind,
        auth_method: spec.auth_method.clone(),
        secret_sha256: secret.as_deref().map(secret_digest),
        access_token_lifetime_secs: lifetime(app, &spec),
        grant_types: spec.grant_types,
        scopes: spec.scopes,
        audiences: spec.audiences,
        redirect_uris: spec.redirect_uris,
        post_logout_redirect_uris: spec.post_logout_redirect_uris,
        jwks: spec.jwks,
        id_token_signed_response_alg: spec.id_token_signed_response_alg,
        first_party: spec.first_party,
        status: if spec.disabled { ClientStatus::Disabled } else { ClientStatus::Active },
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        revision: 1,
    };
    match app.propose(actor, Command::CreateClient(client.clone())).await? {
        Applied::ClientCreated { .. } => Ok(CreatedClient { client, secret }),
        other => Err(super::unexpected(other).into()),
    }
}

/// Replaces a client's settings; `expected_revision` is the revision the caller read (ETag).
pub async fn update(
    app: &AppState,
    current: &ClientRecord,
    spec: ClientSpec,
    expected_revision: u64,
    actor: &str,
    guard: Option<HeldRoles>,
) -> Result<ClientRecord, ClientError> {
    validate(&spec)?;
    if spec.kind != current.kind {
        return Err(ClientError::KindFixed);
    }
    let now_ms = app.clock.now_ms();
    let client = ClientRecord {
        name: super::trim_ascii(&spec.name).to_string(),
        auth_method: spec.auth_method.clone(),
        access_token_lifetime_secs: lifetime(app, &spec),
        grant_types: spec.grant_types,
        scopes: spec.scopes,
        audiences: spec.audiences,
        redirect_uris: spec.redirect_uris,
        post_logout_redirect_uris: spec.post_logout_redirect_uris,
        jwks: spec.jwks,
        id_token_signed_response_alg: spec.id_token_signed_response_alg,
        first_party: spec.first_party,
        status: if spec.disabled { ClientStatus::Disabled } else { ClientStatus::Active },
        updated_at_ms: now_ms,
        revision: expected_revision + 1,
        ..current.clone()
    };
    let command = super::guarded(Command::UpdateClient { client: client.clone(), expected_revision }, guard);
    match app.propose(actor, command).await? {
        Applied::ClientUpdated { .. } => Ok(client),
        other => Err(super::unexpected(other).into()),
    }
}

pub async fn delete(
    app: &AppState,
    tenant: &str,
    client_id: &str,
    actor: &str,
    guard: Option<HeldRoles>,
) -> Result<(), ClientError> {
    let command = super::guarded(Command::DeleteClient { tenant: tenant.into(), client_id: client_id.into() }, guard);
    match app.propose(actor, command).await? {
        Applied::ClientDeleted { .. } => Ok(()),
        other => Err(super::unexpected(other).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_digest_and_absent_digests_never_match() {
        let d = secret_digest("s3cret");
        assert!(secret_matches("s3cret", Some(&d)));
        assert!(!secret_matches("s3cret ", Some(&d)));
        assert!(!secret_matches("", None));
        assert!(!secret_matches("0000000000000000000000000000000000000000000000000000000000000000", None));
    }

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        assert!(is_scope_token("read:users"));
        assert!(!is_scope_token("two words"));
        assert!(!is_scope_token("quote\"d"));
        assert!(!is_scope_token(""));
    }
}
