//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): what a logout request names
//! and where it may send the browser back. The session itself ends through `auth::logout`.

use gatehouse_storage::model::{ClientRecord, ClientStatus};
use jsonwebtoken::Validation;
use serde::Deserialize;

use crate::app::AppState;
use crate::idm::tokens::id_token::ID_TOKEN_TYP;

/// What an `id_token_hint` of ours says (its expiry does not matter: it only names things).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    pub sub: String,
    pub client_id: String,
}

#[derive(Debug, Deserialize)]
struct HintClaims {
    sub: String,
    aud: String,
}

/// A logout request, checked: the client it names (by the hint or `client_id`), the user the
/// hint names, and the verified URI to go back to.
#[derive(Debug, Clone, Default)]
pub struct CheckedLogout {
    pub client: Option<ClientRecord>,
    pub hint: Option<IdTokenHint>,
    /// `post_logout_redirect_uri` with `state`, once it is one the client registered.
    pub back_to: Option<String>,
}

/// Why a logout request is refused: shown on a page, never redirected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogoutRefusal {
    #[error("id_token_hint is not an ID token this issuer signed")]
    BadHint,
    #[error("client_id is not the client the id_token_hint was issued to")]
    ClientMismatch,
    #[error("there is no such client")]
    UnknownClient,
    #[error("post_logout_redirect_uri needs the client (id_token_hint or client_id) and must be one it registered")]
    UnregisteredUri,
    #[error("state is longer than 1024 characters")]
    StateTooLong,
    #[error("a parameter is longer than 8192 characters")]
    TooLong,
    #[error("this node cannot serve the request now")]
    Unavailable,
}

/// Reads an ID token of `tenant`: signed by one of its keys (algorithm pinned to the key),
/// `typ` JWT, our issuer.
pub fn read_hint(app: &AppState, tenant: &str, token: &str) -> Result<IdTokenHint, LogoutRefusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| LogoutRefusal::BadHint)?;
    if header.typ.as_deref() != Some(ID_TOKEN_TYP) {
        return Err(LogoutRefusal::BadHint);
    }
    let signer = app.signers.for_tenant(app, tenant).map_err(|_| LogoutRefusal::Unavailable)?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[app.issuer_of(tenant)]);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    let claims: HintClaims = signer.verify(token, &validation).map_err(|_| LogoutRefusal::BadHint)?;
    Ok(IdTokenHint { sub: claims.sub, client_id: claims.aud })
}

/// Checks a logout request of `tenant` (its parameters as given).
pub fn check(
    app: &AppState,
    tenant: &str,
    id_token_hint: Option<&str>,
    client_id: Option<&str>,
    post_logout_redirect_uri: Option<&str>,
    state: Option<&str>,
) -> Result<CheckedLogout, LogoutRefusal> {
    if state.is_some_and(|s| s.chars().count() > 1024) {
        return Err(LogoutRefusal::StateTooLong);
    }
    let hint = id_token_hint.filter(|h| !h.is_empty()).map(|h| read_hint(app, tenant, h)).transpose()?;
    let named = match (&hint, client_id.filter(|c| !c.is_empty())) {
        (Some(h), Some(c)) if h.client_id != c => return Err(LogoutRefusal::ClientMismatch),
        (Some(h), _) => Some(h.client_id.clone()),
        (None, c) => c.map(str::to_string),
    };
    let client = match named {
        Some(id) if id.len() <= 128 => {
            let found = app.store.read().and_then(|r| r.client(tenant, &id)).map_err(|_| LogoutRefusal::Unavailable)?;
            Some(found.filter(|c| c.status == ClientStatus::Active).ok_or(LogoutRefusal::UnknownClient)?)
        }
        Some(_) => return Err(LogoutRefusal::UnknownClient),
        None => None,
    };
    let back_to = match post_logout_redirect_uri.filter(|u| !u.is_empty()) {
        None => None,
        Some(uri) => {
            let registered = client.as_ref().is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
            if !registered {
                return Err(LogoutRefusal::UnregisteredUri);
            }
            let params: Vec<(&str, String)> = state.map(|s| vec![("state", s.to_string())]).unwrap_or_default();
            Some(if params.is_empty() { uri.to_string() } else { crate::idm::authorize::query_location(uri, &params) })
        }
    };
    Ok(CheckedLogout { client, hint, back_to })
}
