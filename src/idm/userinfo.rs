//! The UserInfo endpoint's use case (OpenID Connect Core §5.3): the claims of the user an
//! access token names, by the scopes it was issued with (S29).

use gatehouse_storage::model::UserStatus;

use crate::app::AppState;
use crate::idm::tokens::{verify_access_token, InvalidToken};

/// The claims returned: `sub` always; the rest by scope (`profile`, `email`, `roles`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub sub: String,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub locale: Option<String>,
    pub updated_at: Option<i64>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub roles: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserInfoError {
    /// RFC 6750 `invalid_token`: not ours, expired, revoked, or its user is gone or disabled.
    #[error("{0}")]
    InvalidToken(String),
    /// RFC 6750 `insufficient_scope`: issued without `openid`.
    #[error("the token was not issued for the openid scope")]
    InsufficientScope,
    #[error("storage is not readable on this node")]
    Unavailable,
}

/// The claims of the user `token` (an access token of `tenant`) names.
pub fn userinfo(app: &AppState, tenant: &str, token: &str) -> Result<UserInfo, UserInfoError> {
    let claims = verify_access_token(app, tenant, token, None).map_err(|e| match e {
        InvalidToken::Unavailable => UserInfoError::Unavailable,
        other => UserInfoError::InvalidToken(other.to_string()),
    })?;
    let scopes: Vec<&str> = claims.scope.split(' ').collect();
    if !scopes.contains(&"openid") {
        return Err(UserInfoError::InsufficientScope);
    }
    let reader = app.store.read().map_err(|_| UserInfoError::Unavailable)?;
    let user = reader
        .user(tenant, &claims.sub)
        .map_err(|_| UserInfoError::Unavailable)?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or_else(|| UserInfoError::InvalidToken("the token's user is not an active user".into()))?;
    let mut info = UserInfo { sub: user.id.clone(), ..UserInfo::default() };
    if scopes.contains(&"profile") {
        info.name = Some(user.display_name.clone()).filter(|n| !n.is_empty());
        info.preferred_username = Some(user.username.clone());
        info.locale = user.locale.clone();
        info.updated_at = Some(user.updated_at_ms / 1000);
    }
    if scopes.contains(&"email") {
        info.email = user.email.clone();
        info.email_verified = user.email.as_ref().map(|_| user.email_verified);
    }
    if scopes.contains(&"roles") {
        let roles = reader.roles_of(tenant, &format!("user:{}", user.id)).map_err(|_| UserInfoError::Unavailable)?;
        info.roles = Some(roles);
    }
    Ok(info)
}
