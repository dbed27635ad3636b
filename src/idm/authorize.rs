//! The authorization request (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1), checked before
//! anything is shown or issued. The client and its redirect URI are verified first: until
//! they are, a refusal is a page for the user and never a redirect (S3, S4); after, it goes
//! back to the client with `state` and `iss` (S20).

use gatehouse_storage::model::{ClientRecord, ClientStatus};

use crate::app::AppState;
use crate::idm::protocol::OAuthErrorCode;

/// The parameters of an authorization request, as given (each at most once).
#[derive(Debug, Default, Clone)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub response_mode: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub request: Option<String>,
    pub request_uri: Option<String>,
    /// The names of the parameters given more than once (RFC 6749 §3.1 forbids it).
    pub repeated: Vec<String>,
}

/// The parameters read; others are ignored (OpenID Connect Core §3.1.2.1), repeated or not.
const KNOWN: [&str; 13] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "prompt",
    "max_age",
    "request",
    "request_uri",
];

/// The longest `state`, `nonce` and `scope` taken (each is echoed or stored).
const MAX_STATE_CHARS: usize = 1024;
const MAX_NONCE_CHARS: usize = 512;
const MAX_SCOPE_CHARS: usize = 1024;
/// As at registration.
const MAX_REDIRECT_URI_CHARS: usize = 2048;

/// What `prompt` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// A request whose client and redirect URI are verified and whose parameters make sense.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    pub client: ClientRecord,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// The S256 challenge (PKCE is required of every client, S7, S9).
    pub code_challenge: String,
    pub prompt: Prompt,
    pub max_age_secs: Option<u64>,
}

/// Why a request is refused, and where the refusal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Shown to the user, never redirected: the client or its redirect URI is not verified.
    Page { error: OAuthErrorCode, description: String },
    /// Sent back to the verified redirect URI.
    Redirect(ErrorRedirect),
}

/// An error authorization response (RFC 6749 §4.1.2.1) to a verified redirect URI, in the
/// query (the one response mode served so far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub error: OAuthErrorCode,
    pub description: String,
    pub state: Option<String>,
}

/// The scopes every client may ask for beside its own: OpenID Connect's.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A PKCE code challenge: BASE64URL(SHA-256(verifier)), 43 characters (RFC 7636 §4.2).
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks an authorization request of `tenant` (S1–S4, S7, S9, S10, S20, S31).
pub fn check(app: &AppState, tenant: &str, p: &AuthorizeParams) -> Result<CheckedRequest, Refusal> {
    let page = |error, description: &str| Refusal::Page { error, description: description.to_string() };
    if let Some(name) = p.repeated.iter().find(|n| matches!(n.as_str(), "client_id" | "redirect_uri" | "state")) {
        return Err(page(OAuthErrorCode::InvalidRequest, &format!("{name} is given more than once")));
    }
    // A state too long to send back is not sent back (an error page, not a long redirect).
    if p.state.as_deref().is_some_and(|s| s.chars().count() > MAX_STATE_CHARS) {
        return Err(page(OAuthErrorCode::InvalidRequest, "state is longer than 1024 characters"));
    }
    let client_id =
        p.client_id.as_deref().ok_or_else(|| page(OAuthErrorCode::InvalidRequest, "client_id is missing"))?;
    let client = if client_id.len() <= 128 {
        app.store
            .read()
            .and_then(|r| r.client(tenant, client_id))
            .map_err(|_| page(OAuthErrorCode::TemporarilyUnavailable, "this node cannot serve the request now"))?
    } else {
        None
    };
    let client = client
        .filter(|c| c.status == ClientStatus::Active)
        .ok_or_else(|| page(OAuthErrorCode::InvalidRequest, "there is no such client"))?;
    let redirect_uri =
        p.redirect_uri.clone().ok_or_else(|| page(OAuthErrorCode::InvalidRequest, "redirect_uri is missing"))?;
    if redirect_uri.chars().count() > MAX_REDIRECT_URI_CHARS || !client.accepts_redirect_uri(&redirect_uri) {
        return Err(page(OAuthErrorCode::InvalidRequest, "redirect_uri is not one registered for this client"));
    }

    // From here on the client is verified: refusals go back to it.
    let refuse = |error, description: &str| {
        Refusal::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description: description.to_string(),
            state: p.state.clone(),
        })
    };
    if let Some(name) = p.repeated.iter().find(|n| KNOWN.contains(&n.as_str())) {
        return Err(refuse(OAuthErrorCode::InvalidRequest, &format!("{name} is given more than once")));
    }
    if !matches!(p.response_mode.as_deref(), None | Some("query")) {
        return Err(refuse(OAuthErrorCode::InvalidRequest, "the one response mode served is query"));
    }
    if p.request.is_some() {
        return Err(refuse(OAuthErrorCode::RequestNotSupported, "request objects are not supported"));
    }
    if p.request_uri.is_some() {
        return Err(refuse(OAuthErrorCode::RequestUriNotSupported, "request_uri is not supported"));
    }
    match p.response_type.as_deref() {
        None => return Err(refuse(OAuthErrorCode::InvalidRequest, "response_type is missing")),
        Some("code") => {}
        Some(_) => return Err(refuse(OAuthErrorCode::UnsupportedResponseType, "the one response type is code")),
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(refuse(OAuthErrorCode::UnauthorizedClient, "this client may not use the authorization code grant"));
    }
    // Without a method, RFC 7636 means `plain`, which is refused.
    if p.code_challenge_method.as_deref() != Some("S256") {
        return Err(refuse(OAuthErrorCode::InvalidRequest, "code_challenge_method must be S256"));
    }
    let code_challenge = match p.code_challenge.as_deref() {
        None => return Err(refuse(OAuthErrorCode::InvalidRequest, "code_challenge is required (PKCE, S256)")),
        Some(c) if !is_s256_challenge(c) => {
            return Err(refuse(OAuthErrorCode::InvalidRequest, "code_challenge must be 43 base64url characters"))
        }
        Some(c) => c.to_string(),
    };
    if p.scope.as_deref().is_some_and(|s| s.len() > MAX_SCOPE_CHARS) {
        return Err(refuse(OAuthErrorCode::InvalidScope, "scope is longer than 1024 characters"));
    }
    if p.nonce.as_deref().is_some_and(|n| n.chars().count() > MAX_NONCE_CHARS) {
        return Err(refuse(OAuthErrorCode::InvalidRequest, "nonce is longer than 512 characters"));
    }
    let scopes: Vec<String> =
        p.scope.as_deref().unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
    if let Some(bad) =
        scopes.iter().find(|s| !OIDC_SCOPES.contains(&s.as_str()) && !client.scopes.iter().any(|c| c == *s))
    {
        let shown: String = bad.chars().take(64).collect();
        return Err(refuse(
            OAuthErrorCode::InvalidScope,
            &format!("scope {shown:?} is not one this client may ask for"),
        ));
    }
    let mut prompt = Prompt::default();
    for value in p.prompt.as_deref().unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
        match value {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => {}
            _ => return Err(refuse(OAuthErrorCode::InvalidRequest, "prompt may hold none, login, consent")),
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(refuse(OAuthErrorCode::InvalidRequest, "prompt=none goes with no other value"));
    }
    let max_age_secs = match p.max_age.as_deref() {
        None => None,
        Some(m) => Some(
            m.parse::<u64>()
                .map_err(|_| refuse(OAuthErrorCode::InvalidRequest, "max_age must be a whole number of seconds"))?,
        ),
    };
    Ok(CheckedRequest {
        client,
        redirect_uri: redirect_uri.clone(),
        scopes,
        state: p.state.clone(),
        nonce: p.nonce.clone(),
        code_challenge,
        prompt,
        max_age_secs,
    })
}

/// The URL an error goes back to in query mode: `error`, `error_description`, `state` and
/// `iss` added to the redirect URI's own query (RFC 6749 §4.1.2.1, RFC 9207).
pub fn error_location(e: &ErrorRedirect, issuer: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("error", e.error.as_str());
    query.append_pair("error_description", &e.description);
    if let Some(state) = &e.state {
        query.append_pair("state", state);
    }
    query.append_pair("iss", issuer);
    let separator = if e.redirect_uri.contains('?') { '&' } else { '?' };
    format!("{}{separator}{}", e.redirect_uri, query.finish())
}
