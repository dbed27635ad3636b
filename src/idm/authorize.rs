//! The authorization request (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1), checked before
//! anything is shown or issued. The client and its redirect URI are verified first: until
//! they are, a refusal is a page for the user and never a redirect (S3, S4); after, it goes
//! back to the client with `state` and `iss` (S20).

use gatehouse_storage::model::{AuthorizationCodeRecord, ClientRecord, ClientStatus, SessionRecord};
use gatehouse_storage::{Applied, Command, Rejection};

use crate::app::{AppState, ProposeError};
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
    /// A hint at who signs in (an email address), to fill in the sign-in page.
    pub login_hint: Option<String>,
    /// An ID token of ours naming who the client expects to be signed in.
    pub id_token_hint: Option<String>,
    /// The names of the parameters given more than once (RFC 6749 §3.1 forbids it).
    pub repeated: Vec<String>,
}

impl AuthorizeParams {
    /// The parameters of a query string (or an urlencoded body): the known ones, each taken
    /// the first time, with the names given more than once.
    pub fn parse(query: &str) -> AuthorizeParams {
        let mut p = AuthorizeParams::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "response_type" => &mut p.response_type,
                "client_id" => &mut p.client_id,
                "redirect_uri" => &mut p.redirect_uri,
                "scope" => &mut p.scope,
                "state" => &mut p.state,
                "nonce" => &mut p.nonce,
                "code_challenge" => &mut p.code_challenge,
                "code_challenge_method" => &mut p.code_challenge_method,
                "response_mode" => &mut p.response_mode,
                "prompt" => &mut p.prompt,
                "max_age" => &mut p.max_age,
                "request" => &mut p.request,
                "request_uri" => &mut p.request_uri,
                "login_hint" => &mut p.login_hint,
                "id_token_hint" => &mut p.id_token_hint,
                _ => continue,
            };
            if slot.is_some() {
                if !p.repeated.iter().any(|n| n == name.as_ref()) {
                    p.repeated.push(name.to_string());
                }
                continue;
            }
            *slot = Some(value.into_owned());
        }
        p
    }
}

/// The parameters read; others are ignored (OpenID Connect Core §3.1.2.1), repeated or not.
const KNOWN: [&str; 15] = [
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
    "login_hint",
    "id_token_hint",
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
    pub response_mode: ResponseMode,
    /// `login_hint`, when it could be an email address (it only fills in the sign-in page).
    pub login_hint: Option<String>,
    /// The user an `id_token_hint` names (its `sub`): a session of anyone else does not count.
    pub hinted_subject: Option<String>,
}

/// How the authorization response reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseMode {
    /// A redirect with the response in the query (RFC 6749 §4.1.2).
    #[default]
    Query,
    /// A page that posts the response to the redirect URI (OAuth 2.0 Form Post Response Mode).
    FormPost,
}

/// Why a request is refused, and where the refusal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Shown to the user, never redirected: the client or its redirect URI is not verified.
    Page { error: OAuthErrorCode, description: String },
    /// Sent back to the verified redirect URI.
    Redirect(ErrorRedirect),
}

/// An error authorization response (RFC 6749 §4.1.2.1) to a verified redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub error: OAuthErrorCode,
    pub description: String,
    pub state: Option<String>,
    pub mode: ResponseMode,
}

/// The scopes every client may ask for beside its own: OpenID Connect's, and `roles` (the
/// user's roles in the tenant, at UserInfo).
pub const OIDC_SCOPES: [&str; 5] = ["openid", "profile", "email", "offline_access", "roles"];

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

    // From here on the client is verified: refusals go back to it, in the mode asked for
    // when it is one we serve.
    let response_mode = match p.response_mode.as_deref() {
        Some("form_post") => ResponseMode::FormPost,
        _ => ResponseMode::Query,
    };
    let refuse = |error, description: &str| {
        Refusal::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description: description.to_string(),
            state: p.state.clone(),
            mode: response_mode,
        })
    };
    if let Some(name) = p.repeated.iter().find(|n| KNOWN.contains(&n.as_str())) {
        return Err(refuse(OAuthErrorCode::InvalidRequest, &format!("{name} is given more than once")));
    }
    if !matches!(p.response_mode.as_deref(), None | Some("query") | Some("form_post")) {
        return Err(refuse(OAuthErrorCode::InvalidRequest, "response_mode must be query or form_post"));
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
    // OpenID Connect Core §3.1.2.1: the hint names who the client expects; expired is fine.
    let hinted_subject = match p.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
        None => None,
        Some(h) if h.len() > 8192 => return Err(refuse(OAuthErrorCode::InvalidRequest, "id_token_hint is too long")),
        Some(h) => match crate::idm::tokens::id_token::read_hint(app, tenant, h) {
            Ok(hint) => Some(hint.sub),
            Err(crate::idm::tokens::id_token::HintError::Unavailable) => {
                return Err(refuse(OAuthErrorCode::TemporarilyUnavailable, "this node cannot serve the request now"))
            }
            Err(_) => {
                return Err(refuse(OAuthErrorCode::InvalidRequest, "id_token_hint is not an ID token of this issuer"))
            }
        },
    };
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
        response_mode,
        login_hint: p.login_hint.clone().filter(|h| h.chars().count() <= 320 && !h.chars().any(char::is_control)),
        hinted_subject,
    })
}

/// Whether the user must sign in (again) before a code is issued: nobody is signed in, or
/// someone other than the `id_token_hint` names, `prompt=login` asks for it, or the sign-in is
/// older than `max_age` (Core §3.1.2.1).
pub fn needs_sign_in(request: &CheckedRequest, session: Option<&SessionRecord>, now_ms: i64) -> bool {
    let Some(session) = session else { return true };
    if request.hinted_subject.as_ref().is_some_and(|sub| *sub != session.user_id) {
        return true;
    }
    let too_old = request.max_age_secs.is_some_and(|max| {
        now_ms - session.created_at_ms > i64::try_from(max.saturating_mul(1000)).unwrap_or(i64::MAX)
    });
    request.prompt.login || too_old
}

/// Whether the user must be asked before `request`'s client gets a code: never for a
/// first-party client; with `prompt=consent`, always; otherwise when they have not allowed it
/// every scope asked for.
pub fn needs_consent(
    app: &AppState,
    request: &CheckedRequest,
    session: &SessionRecord,
) -> Result<bool, gatehouse_storage::StoreError> {
    if request.client.first_party {
        return Ok(false);
    }
    if request.prompt.consent {
        return Ok(true);
    }
    let given = app.store.read()?.consent(&request.client.tenant, &session.user_id, &request.client.client_id)?;
    Ok(given.is_none_or(|c| !c.covers(&request.scopes)))
}

/// Remembers that the signed-in user allowed `request`'s client its scopes.
pub async fn grant_consent(
    app: &AppState,
    request: &CheckedRequest,
    session: &SessionRecord,
) -> Result<(), CodeRefusal> {
    let consent = gatehouse_storage::model::ConsentRecord {
        v: 1,
        tenant: request.client.tenant.clone(),
        user_id: session.user_id.clone(),
        client_id: request.client.client_id.clone(),
        scopes: request.scopes.clone(),
        granted_at_ms: app.clock.now_ms(),
    };
    match app.propose(&format!("user:{}", session.user_id), Command::GrantConsent(consent)).await {
        Ok(_) => Ok(()),
        Err(ProposeError::Refused(r)) => Err(CodeRefusal::SignInAgain(r)),
        Err(ProposeError::Write(e)) => Err(CodeRefusal::Unavailable(e.to_string())),
    }
}

/// Why no code was issued.
#[derive(Debug, thiserror::Error)]
pub enum CodeRefusal {
    /// The session ended, or its user or the client was disabled, since it was read.
    #[error("the sign-in is no longer valid: {0}")]
    SignInAgain(Rejection),
    #[error("the code could not be recorded: {0}")]
    Unavailable(String),
}

/// Issues an authorization code for `request` in the signed-in `session` (S5: it lives
/// `oauth.authorization_code_lifetime_secs`, bound to the client, the redirect URI and the
/// PKCE challenge). Only its digest is stored.
pub async fn issue_code(
    app: &AppState,
    request: &CheckedRequest,
    session: &SessionRecord,
) -> Result<String, CodeRefusal> {
    let mut bytes = [0u8; 32];
    crate::clock::random_bytes(&mut bytes);
    let code = crate::crypto::b64url(&bytes);
    let now_ms = app.clock.now_ms();
    let lifetime_ms = i64::try_from(app.config.oauth.authorization_code_lifetime_secs.saturating_mul(1000))
        .unwrap_or(gatehouse_storage::model::MAX_CODE_LIFETIME_MS);
    let record = AuthorizationCodeRecord {
        v: 1,
        tenant: request.client.tenant.clone(),
        code_sha256: crate::idm::tokens::code_digest(&code),
        client_id: request.client.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        user_id: session.user_id.clone(),
        session_sha256: session.id_sha256.clone(),
        scopes: request.scopes.clone(),
        nonce: request.nonce.clone(),
        code_challenge: request.code_challenge.clone(),
        auth_time_ms: session.created_at_ms,
        amr: crate::idm::tokens::id_token::amr_of(&session.method),
        created_at_ms: now_ms,
        expires_at_ms: now_ms + lifetime_ms,
        redeemed: None,
    };
    match app.propose(&format!("user:{}", session.user_id), Command::IssueAuthorizationCode(record)).await {
        Ok(Applied::AuthorizationCodeIssued) => Ok(code),
        Ok(other) => Err(CodeRefusal::Unavailable(format!("unexpected outcome {other:?}"))),
        Err(ProposeError::Refused(r)) => Err(CodeRefusal::SignInAgain(r)),
        Err(ProposeError::Write(e)) => Err(CodeRefusal::Unavailable(e.to_string())),
    }
}

/// The parameters of a successful authorization response (RFC 6749 §4.1.2, RFC 9207).
pub fn success_params(code: &str, state: Option<&str>, issuer: &str) -> Vec<(&'static str, String)> {
    let mut params = vec![("code", code.to_string())];
    if let Some(state) = state {
        params.push(("state", state.to_string()));
    }
    params.push(("iss", issuer.to_string()));
    params
}

/// The parameters of an error authorization response.
pub fn error_params(e: &ErrorRedirect, issuer: &str) -> Vec<(&'static str, String)> {
    let mut params = vec![("error", e.error.as_str().to_string()), ("error_description", e.description.clone())];
    if let Some(state) = &e.state {
        params.push(("state", state.clone()));
    }
    params.push(("iss", issuer.to_string()));
    params
}

/// The redirect URI with `params` added to its own query (query response mode).
pub fn query_location(redirect_uri: &str, params: &[(&str, String)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    format!("{redirect_uri}{separator}{}", query.finish())
}
