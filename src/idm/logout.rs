//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): what a logout request names
//! and where it may send the browser back. The session itself ends through `auth::logout`.

use gatehouse_storage::model::{ClientRecord, ClientStatus};

use crate::app::AppState;
use crate::idm::tokens::id_token::{read_hint, HintError, IdTokenHint};

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
    let hint = id_token_hint
        .filter(|h| !h.is_empty())
        .map(|h| {
            read_hint(app, tenant, h).map_err(|e| match e {
                HintError::Invalid => LogoutRefusal::BadHint,
                HintError::Unavailable => LogoutRefusal::Unavailable,
            })
        })
        .transpose()?;
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
