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
}

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

/// Whether `candidate` is one of the client's redirect URIs: the same string (S1), or, for a
/// registered loopback IP literal URI without a port, the same with any port (RFC 8252 §7.3,
/// S2). `localhost` gets no such latitude.
pub fn redirect_uri_registered(client: &ClientRecord, candidate: &str) -> bool {
    client.redirect_uris.iter().any(|r| r == candidate || same_but_loopback_port(r, candidate))
}

fn same_but_loopback_port(registered: &str, candidate: &str) -> bool {
    ["http://127.0.0.1", "http://[::1]"].iter().any(|host| {
        let (Some(reg_path), Some(rest)) = (registered.strip_prefix(host), candidate.strip_prefix(host)) else {
            return false;
        };
        // The registered one names no port; the candidate names one, then the same path.
        let Some(after_colon) = rest.strip_prefix(':') else { return false };
        let digits = after_colon.bytes().take_while(u8::is_ascii_digit).count();
        let port_ok = (1..=5).contains(&digits) && after_colon[..digits].parse::<u16>().is_ok_and(|p| p > 0);
        (reg_path.is_empty() || reg_path.starts_with('/')) && port_ok && &after_colon[digits..] == reg_path
    })
}

/// Checks an authorization request of `tenant` (S1–S4, S7, S9, S10, S20, S31).
pub fn check(app: &AppState, tenant: &str, p: &AuthorizeParams) -> Result<CheckedRequest, Refusal> {
    let page = |error, description: &str| Refusal::Page { error, description: description.to_string() };
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
    if !redirect_uri_registered(&client, &redirect_uri) {
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
    match p.code_challenge_method.as_deref() {
        None | Some("S256") => {}
        Some(_) => return Err(refuse(OAuthErrorCode::InvalidRequest, "code_challenge_method must be S256")),
    }
    let code_challenge = match p.code_challenge.as_deref() {
        None => return Err(refuse(OAuthErrorCode::InvalidRequest, "code_challenge is required (PKCE, S256)")),
        Some(c) if !is_s256_challenge(c) => {
            return Err(refuse(OAuthErrorCode::InvalidRequest, "code_challenge must be 43 base64url characters"))
        }
        Some(c) => c.to_string(),
    };
    let scopes: Vec<String> =
        p.scope.as_deref().unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
    if let Some(bad) =
        scopes.iter().find(|s| !OIDC_SCOPES.contains(&s.as_str()) && !client.scopes.iter().any(|c| c == *s))
    {
        return Err(refuse(OAuthErrorCode::InvalidScope, &format!("scope {bad:?} is not one this client may ask for")));
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

#[cfg(test)]
mod tests {
    use super::same_but_loopback_port;

    #[test]
    fn only_a_loopback_ip_literal_registered_without_a_port_takes_any_port() {
        assert!(same_but_loopback_port("http://127.0.0.1/cb", "http://127.0.0.1:53121/cb"));
        assert!(same_but_loopback_port("http://[::1]/cb", "http://[::1]:8080/cb"));
        for (registered, candidate) in [
            ("http://127.0.0.1/cb", "http://127.0.0.1.evil.test/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:53121/cb/x"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:0/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:99999/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:80@evil.test/cb"),
            ("http://127.0.0.1:8080/cb", "http://127.0.0.1:9090/cb"),
            ("http://localhost/cb", "http://localhost:1/cb"),
            ("https://app.test/cb", "https://app.test:443/cb"),
        ] {
            assert!(!same_but_loopback_port(registered, candidate), "{registered} took {candidate}");
        }
    }
}
