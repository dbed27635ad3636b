//! The OAuth 2.0 error vocabulary: every error code an OAuth or OIDC endpoint answers, with
//! its HTTP status, in one place. Handlers render these; nothing compares error strings.

/// An error code of RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1 and RFC 8707 §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    /// A parameter is missing, repeated, malformed or not allowed together with another.
    InvalidRequest,
    /// Client authentication failed (401).
    InvalidClient,
    /// The grant (a code, a refresh token) is invalid, expired or was issued to another client.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    /// A requested scope is unknown or not allowed for the client.
    InvalidScope,
    /// RFC 8707: a requested resource or audience is not one this client may use.
    InvalidTarget,
    /// RFC 7009: the server does not revoke this kind of token.
    UnsupportedTokenType,
    /// RFC 6750: a bearer token is missing, expired, revoked or malformed (401).
    InvalidToken,
    /// RFC 6750: the token lacks a scope the resource needs (403).
    InsufficientScope,
    /// Too many requests, or the node cannot serve now (429 or 503 by context).
    TemporarilyUnavailable,
    ServerError,
    /// OpenID Connect Core §3.1.2.6: `prompt=none` and nobody signed in.
    LoginRequired,
    /// OpenID Connect Core §3.1.2.6: `prompt=none` and the user has not allowed the client.
    ConsentRequired,
    /// RFC 6749 §4.1.2.1: the user did not allow the request.
    AccessDenied,
    /// OpenID Connect Core §3.1.2.6: request objects (`request`) are not supported.
    RequestNotSupported,
    /// OpenID Connect Core §3.1.2.6: `request_uri` is not supported.
    RequestUriNotSupported,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::InvalidTarget => "invalid_target",
            OAuthErrorCode::UnsupportedTokenType => "unsupported_token_type",
            OAuthErrorCode::InvalidToken => "invalid_token",
            OAuthErrorCode::InsufficientScope => "insufficient_scope",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::LoginRequired => "login_required",
            OAuthErrorCode::ConsentRequired => "consent_required",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::RequestNotSupported => "request_not_supported",
            OAuthErrorCode::RequestUriNotSupported => "request_uri_not_supported",
        }
    }
}

impl std::fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
