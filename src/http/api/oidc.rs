//! OpenID Connect discovery, JWKS, and the OAuth 2.0 authorization and token endpoints, for
//! every tenant: the `default` tenant at the root, every other under `/t/{tenant}`.
//!
//! The authorization endpoint checks every request (`idm::authorize`): a request it cannot
//! trust gets an error page, a wrong one an error back at the client's redirect URI. A valid
//! one from a signed-in browser gets a code (query or form_post response mode); otherwise the
//! sign-in page, whose form (`auth_pages`) signs in and then issues the code. The token,
//! introspection and revocation endpoints are in `oauth.rs`.

use std::sync::Arc;

use gatehouse_storage::model::{TenantRecord, TenantStatus};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::app::AppState;
use crate::http::issuer::IssuerScope;
use crate::http::problem::Problem;
use crate::idm::protocol::OAuthErrorCode;

#[derive(Tags)]
pub(crate) enum OidcTag {
    /// OpenID Connect discovery and keys.
    Discovery,
    /// OAuth 2.0 endpoints.
    OAuth2,
}

pub struct OidcApi;

const CLIENT_AUTH_METHODS: [&str; 3] = crate::idm::clients::CONFIDENTIAL_AUTH_METHODS;
/// The claims of ID tokens and of UserInfo.
const CLAIMS: [&str; 18] = [
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "amr",
    "sid",
    "at_hash",
    "name",
    "preferred_username",
    "locale",
    "updated_at",
    "email",
    "email_verified",
    "roles",
];

/// The confidential methods and `none` (public clients).
fn with_none(methods: &[&str]) -> Vec<String> {
    methods.iter().chain(&["none"]).map(|s| s.to_string()).collect()
}

/// OpenID Connect Discovery 1.0 / RFC 8414 metadata.
#[derive(Debug, Object)]
pub struct DiscoveryDocument {
    /// Equals the URL this document was fetched under, without `/.well-known/...`.
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: String,
    /// RP-Initiated Logout 1.0.
    pub end_session_endpoint: String,
    /// RFC 7662.
    pub introspection_endpoint: String,
    /// RFC 7009.
    pub revocation_endpoint: String,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// For `private_key_jwt` client assertions.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    /// The claims of ID tokens and UserInfo.
    pub claims_supported: Vec<String>,
    pub request_parameter_supported: bool,
    pub request_uri_parameter_supported: bool,
    /// RFC 9207: `iss` is in every authorization response.
    pub authorization_response_iss_parameter_supported: bool,
}

/// A public JSON Web Key.
#[derive(Debug, Object)]
pub struct Jwk {
    pub kty: String,
    pub kid: String,
    pub alg: String,
    #[oai(rename = "use")]
    pub use_: String,
    #[oai(skip_serializing_if_is_none)]
    pub crv: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub x: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub y: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub n: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub e: Option<String>,
}

#[derive(Debug, Object)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(ApiResponse)]
pub enum DiscoveryResponse {
    /// The issuer's metadata.
    #[oai(status = 200)]
    Ok(Json<DiscoveryDocument>),
    /// The `default` tenant lives at the root.
    #[oai(status = 308)]
    Moved(#[oai(header = "Location")] String),
    /// No such tenant.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Storage is not readable on this node.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The issuer's public signing keys, including keys published ahead of use and retired
    /// keys whose tokens may still be valid.
    #[oai(status = 200)]
    Ok(Json<JwkSet>),
    /// The `default` tenant lives at the root.
    #[oai(status = 308)]
    Moved(#[oai(header = "Location")] String),
    /// No such tenant.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Storage is not readable on this node.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

/// An authorization request by POST: the parameters of the GET form (each at most once).
#[derive(Debug, Object, serde::Deserialize)]
pub struct AuthorizeForm {
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
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
}

impl AuthorizeForm {
    /// The parameters given, urlencoded as a query would carry them.
    fn urlencoded(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("nonce", &self.nonce),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("response_mode", &self.response_mode),
            ("prompt", &self.prompt),
            ("max_age", &self.max_age),
            ("request", &self.request),
            ("request_uri", &self.request_uri),
            ("login_hint", &self.login_hint),
            ("id_token_hint", &self.id_token_hint),
        ] {
            if let Some(v) = value {
                out.append_pair(name, v);
            }
        }
        out.finish()
    }
}

fn bad_authorize_form(err: poem::Error) -> AuthorizeResponse {
    AuthorizeResponse::ErrorPage(Html(error_page(
        OAuthErrorCode::InvalidRequest,
        &format!("the form is not valid: {err}"),
    )))
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_authorize_form")]
pub enum AuthorizeResponse {
    /// The sign-in page, the consent page; or, in the form_post response mode, the page that
    /// posts the response to the client (its policy allows that form's target).
    #[oai(status = 200)]
    Page(
        Html<String>,
        #[oai(header = "Content-Security-Policy")] Option<String>,
        /// The sign-in page's cookie, which its form's token is bound to.
        #[oai(header = "Set-Cookie")]
        Option<String>,
    ),
    /// An error page: the request cannot be redirected back to a verified client (an unknown
    /// client, a redirect URI not registered for it).
    #[oai(status = 400)]
    ErrorPage(Html<String>),
    /// The response at the client's registered redirect URI: `code`, `state` and `iss`, or
    /// `error`, `error_description`, `state` and `iss`, in the query.
    #[oai(status = 303)]
    Redirect(#[oai(header = "Location")] String),
    /// The `default` tenant lives at the root.
    #[oai(status = 308)]
    Moved(#[oai(header = "Location")] String),
    /// No such tenant.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Storage is not readable on this node.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

/// The UserInfo claims (OpenID Connect Core §5.1), by the token's scopes.
#[derive(Debug, Object)]
pub struct UserInfoClaims {
    pub sub: String,
    /// `profile`.
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub preferred_username: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub locale: Option<String>,
    /// Seconds since the epoch.
    #[oai(skip_serializing_if_is_none)]
    pub updated_at: Option<i64>,
    /// `email`.
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub email_verified: Option<bool>,
    /// `roles`: the user's roles in the tenant.
    #[oai(skip_serializing_if_is_none)]
    pub roles: Option<Vec<String>>,
}

/// A UserInfo request by POST: the token in the body (RFC 6750 §2.2) or the header.
#[derive(Debug, Object, serde::Deserialize)]
pub struct UserInfoForm {
    pub access_token: Option<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_userinfo_form")]
pub enum UserInfoResponse {
    /// The user's claims.
    #[oai(status = 200)]
    Ok(Json<UserInfoClaims>, #[oai(header = "Cache-Control")] String),
    /// The token was given twice (header and body), or the body is not a form.
    #[oai(status = 400)]
    BadRequest(Json<crate::http::problem::OAuthError>, #[oai(header = "WWW-Authenticate")] String),
    /// No token, or not a valid one of this issuer (RFC 6750 `invalid_token`).
    #[oai(status = 401)]
    Unauthorized(Json<crate::http::problem::OAuthError>, #[oai(header = "WWW-Authenticate")] String),
    /// The token was not issued for the `openid` scope (`insufficient_scope`).
    #[oai(status = 403)]
    Forbidden(Json<crate::http::problem::OAuthError>, #[oai(header = "WWW-Authenticate")] String),
    /// The `default` tenant lives at the root.
    #[oai(status = 308)]
    Moved(#[oai(header = "Location")] String),
    /// No such tenant.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Storage is not readable on this node.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

impl UserInfoResponse {
    /// `description` is our own text (never the caller's), so it is quoted as is.
    fn refused(code: OAuthErrorCode, description: &'static str) -> Self {
        let body = Json(crate::http::problem::OAuthError::new(code, description));
        let challenge = format!("Bearer error=\"{code}\", error_description=\"{description}\"");
        match code {
            OAuthErrorCode::InvalidRequest => UserInfoResponse::BadRequest(body, challenge),
            OAuthErrorCode::InsufficientScope => UserInfoResponse::Forbidden(body, challenge),
            _ => UserInfoResponse::Unauthorized(body, challenge),
        }
    }
}

fn bad_userinfo_form(err: poem::Error) -> UserInfoResponse {
    tracing::debug!("userinfo: {err}");
    UserInfoResponse::refused(OAuthErrorCode::InvalidRequest, "the body is not an urlencoded form")
}

fn userinfo(app: &AppState, resolved: Resolved, req: &poem::Request, in_body: Option<&str>) -> UserInfoResponse {
    use crate::idm::userinfo::{self, UserInfoError};
    let tenant = match resolved {
        Resolved::DefaultAtRoot => return UserInfoResponse::Moved(root_location(app, "/oauth2/userinfo")),
        Resolved::NotFound(p) => return UserInfoResponse::NotFound(Json(p)),
        Resolved::Unavailable(p) => return UserInfoResponse::Unavailable(Json(p)),
        Resolved::Tenant { tenant, .. } => tenant,
    };
    let header = req.headers().get(poem::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let in_header = header.and_then(|h| h.split_once(' ')).filter(|(s, _)| s.eq_ignore_ascii_case("bearer"));
    let token = match (in_header.map(|(_, t)| t.trim()), in_body) {
        (Some(_), Some(_)) => {
            return UserInfoResponse::refused(OAuthErrorCode::InvalidRequest, "give the token once, not twice")
        }
        (Some(t), None) | (None, Some(t)) if !t.is_empty() && t.len() <= 8192 => t,
        (None, None) => {
            // No credentials at all: the challenge names the scheme only (RFC 6750 §3.1).
            let body =
                crate::http::problem::OAuthError::new(OAuthErrorCode::InvalidToken, "a bearer token is required");
            return UserInfoResponse::Unauthorized(Json(body), "Bearer".into());
        }
        _ => return UserInfoResponse::refused(OAuthErrorCode::InvalidToken, "the access token is not valid"),
    };
    match userinfo::userinfo(app, &tenant.id, token) {
        Ok(u) => UserInfoResponse::Ok(
            Json(UserInfoClaims {
                sub: u.sub,
                name: u.name,
                preferred_username: u.preferred_username,
                locale: u.locale,
                updated_at: u.updated_at,
                email: u.email,
                email_verified: u.email_verified,
                roles: u.roles,
            }),
            "no-store".into(),
        ),
        Err(UserInfoError::InvalidToken(_)) => {
            UserInfoResponse::refused(OAuthErrorCode::InvalidToken, "the access token is not valid")
        }
        Err(UserInfoError::InsufficientScope) => {
            UserInfoResponse::refused(OAuthErrorCode::InsufficientScope, "the token was not issued for openid")
        }
        Err(UserInfoError::Unavailable) => UserInfoResponse::Unavailable(Json(unavailable())),
    }
}

/// An RP-initiated logout request (its parameters; by GET in the query, by POST in the form).
#[derive(Debug, Default, Object, serde::Deserialize)]
pub struct EndSessionForm {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    /// The confirmation page's synchronizer token, and its `confirm=yes`.
    pub form_token: Option<String>,
    pub confirm: Option<String>,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_end_session")]
pub enum EndSessionResponse {
    /// Signed out and sent back to the client's registered `post_logout_redirect_uri` (with
    /// `state`).
    #[oai(status = 303)]
    Redirect(#[oai(header = "Location")] String, #[oai(header = "Set-Cookie")] Option<String>),
    /// Signed out (nowhere to go back to), or the confirmation page of a request that did not
    /// prove who asked (its policy lets its form lead back to the client).
    #[oai(status = 200)]
    Page(
        Html<String>,
        #[oai(header = "Set-Cookie")] Option<String>,
        #[oai(header = "Content-Security-Policy")] Option<String>,
    ),
    /// An ID token hint that is not ours, a client that does not match it, or a
    /// `post_logout_redirect_uri` the client did not register: never redirected.
    #[oai(status = 400)]
    ErrorPage(Html<String>),
    /// A confirmation without this session's token.
    #[oai(status = 403)]
    Forbidden(Html<String>),
    /// The `default` tenant lives at the root.
    #[oai(status = 308)]
    Moved(#[oai(header = "Location")] String),
    /// No such tenant.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Storage is not readable on this node.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

fn bad_end_session(err: poem::Error) -> EndSessionResponse {
    EndSessionResponse::ErrorPage(Html(crate::http::pages::error(
        "This sign-out cannot be completed",
        &err.to_string(),
    )))
}

/// RP-initiated logout: a hint naming the signed-in user (or a confirmed form) ends the
/// session; the browser goes back only to a URI the client registered.
async fn end_session(
    app: &AppState,
    resolved: Resolved,
    scope: &IssuerScope,
    req: &poem::Request,
    form: &EndSessionForm,
    posted: bool,
) -> EndSessionResponse {
    use crate::idm::logout::{self, LogoutRefusal};
    let tenant = match resolved {
        Resolved::DefaultAtRoot => return EndSessionResponse::Moved(root_location(app, "/oauth2/logout")),
        Resolved::NotFound(p) => return EndSessionResponse::NotFound(Json(p)),
        Resolved::Unavailable(p) => return EndSessionResponse::Unavailable(Json(p)),
        Resolved::Tenant { tenant, .. } => tenant,
    };
    let too_long = [&form.id_token_hint, &form.client_id, &form.post_logout_redirect_uri, &form.form_token]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.len() > 8192));
    let checked = if too_long {
        Err(LogoutRefusal::TooLong)
    } else {
        logout::check(
            app,
            &tenant.id,
            form.id_token_hint.as_deref(),
            form.client_id.as_deref(),
            form.post_logout_redirect_uri.as_deref(),
            form.state.as_deref(),
        )
    };
    let checked = match checked {
        Ok(c) => c,
        Err(LogoutRefusal::Unavailable) => return EndSessionResponse::Unavailable(Json(unavailable())),
        Err(e) => {
            return EndSessionResponse::ErrorPage(Html(crate::http::pages::error(
                "This sign-out cannot be completed",
                &e.to_string(),
            )))
        }
    };
    let done = |cookie: Option<String>| match &checked.back_to {
        Some(uri) => EndSessionResponse::Redirect(uri.clone(), cookie),
        None => EndSessionResponse::Page(Html(crate::http::pages::signed_out()), cookie, None),
    };
    let Some(id) = super::auth::presented(req, &tenant.id) else {
        // A logout posted from the client's site arrives without the session cookie
        // (SameSite=Lax): the same request as a top-level GET carries it.
        if posted && form.confirm.is_none() {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in [
                ("id_token_hint", &form.id_token_hint),
                ("client_id", &form.client_id),
                ("post_logout_redirect_uri", &form.post_logout_redirect_uri),
                ("state", &form.state),
            ] {
                if let Some(v) = value {
                    query.append_pair(name, v);
                }
            }
            let location = format!("{}/oauth2/logout?{}", app.issuer_of(&tenant.id), query.finish());
            return EndSessionResponse::Redirect(location, None);
        }
        return done(None);
    };
    let (session, user) = match crate::idm::auth::current(app, &tenant.id, &id).await {
        Ok(Some(found)) => found,
        Ok(None) => return done(Some(super::auth::clear_cookie(&tenant.id))),
        Err(e) => {
            tracing::warn!("end_session: {e}");
            return EndSessionResponse::Unavailable(Json(unavailable()));
        }
    };
    let hinted = checked.hint.as_ref().is_some_and(|h| h.sub == session.user_id);
    let confirmed = posted
        && form.confirm.as_deref() == Some("yes")
        && crate::http::pages::form_token_matches(
            &app.cipher,
            &tenant.id,
            &id,
            form.form_token.as_deref().unwrap_or(""),
        );
    if !hinted && !confirmed {
        if posted && form.confirm.is_some() {
            return EndSessionResponse::Forbidden(Html(crate::http::pages::error(
                "This sign-out cannot be completed",
                "this form is not from your current page: start again",
            )));
        }
        // Nothing proves the signed-in user asked: they confirm on a page of ours.
        let mut fields = Vec::new();
        for (name, value) in [
            ("id_token_hint", &form.id_token_hint),
            ("client_id", &form.client_id),
            ("post_logout_redirect_uri", &form.post_logout_redirect_uri),
            ("state", &form.state),
        ] {
            if let Some(v) = value {
                fields.push((name, v.as_str()));
            }
        }
        let action = format!("{}/oauth2/logout", scope.path_prefix());
        let token = crate::http::pages::form_token(&app.cipher, &tenant.id, &id);
        let who = user.email.clone().unwrap_or_else(|| user.display_name.clone());
        let page = crate::http::pages::sign_out(&action, &token, &fields, &who);
        let policy = checked.back_to.as_deref().map(sign_in_policy);
        return EndSessionResponse::Page(Html(page), None, policy);
    }
    match crate::idm::auth::logout(app, &tenant.id, &id).await {
        Ok(()) => done(Some(super::auth::clear_cookie(&tenant.id))),
        Err(e) => {
            tracing::warn!("end_session: {e}");
            EndSessionResponse::Unavailable(Json(unavailable()))
        }
    }
}

/// Where a tenant path leads.
pub(crate) enum Resolved {
    Tenant {
        tenant: TenantRecord,
        issuer: String,
    },
    /// `/t/default/...`: answered with 308 to the same path at the root.
    DefaultAtRoot,
    NotFound(Problem),
    Unavailable(Problem),
}

fn unavailable() -> Problem {
    Problem::new(
        poem::http::StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "storage is not readable on this node",
    )
}

pub(crate) fn resolve(app: &AppState, tenant_id: &str) -> Resolved {
    let reader = match app.store.read() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("storage read failed: {e}");
            return Resolved::Unavailable(unavailable());
        }
    };
    match reader.tenant(tenant_id) {
        Ok(Some(t)) if t.status == TenantStatus::Active => Resolved::Tenant { issuer: app.issuer_of(&t.id), tenant: t },
        Ok(_) => Resolved::NotFound(Problem::not_found(format!("there is no tenant {tenant_id:?}"))),
        Err(e) => {
            tracing::error!("reading tenant {tenant_id:?}: {e}");
            Resolved::Unavailable(unavailable())
        }
    }
}

pub(crate) fn resolve_path(app: &AppState, tenant_id: &str) -> Resolved {
    if tenant_id == "default" {
        return Resolved::DefaultAtRoot;
    }
    resolve(app, tenant_id)
}

pub(crate) fn root_location(app: &AppState, suffix: &str) -> String {
    format!("{}{suffix}", app.public_url)
}

fn discovery(app: &AppState, resolved: Resolved, suffix: &str) -> DiscoveryResponse {
    match resolved {
        Resolved::DefaultAtRoot => DiscoveryResponse::Moved(root_location(app, suffix)),
        Resolved::NotFound(p) => DiscoveryResponse::NotFound(Json(p)),
        Resolved::Unavailable(p) => DiscoveryResponse::Unavailable(Json(p)),
        Resolved::Tenant { issuer, .. } => {
            let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            DiscoveryResponse::Ok(Json(DiscoveryDocument {
                authorization_endpoint: format!("{issuer}/oauth2/authorize"),
                token_endpoint: format!("{issuer}/oauth2/token"),
                jwks_uri: format!("{issuer}/.well-known/jwks.json"),
                userinfo_endpoint: format!("{issuer}/oauth2/userinfo"),
                end_session_endpoint: format!("{issuer}/oauth2/logout"),
                introspection_endpoint: format!("{issuer}/oauth2/introspect"),
                revocation_endpoint: format!("{issuer}/oauth2/revoke"),
                token_endpoint_auth_methods_supported: with_none(&CLIENT_AUTH_METHODS),
                token_endpoint_auth_signing_alg_values_supported: strings(&["ES256", "RS256"]),
                introspection_endpoint_auth_methods_supported: strings(&CLIENT_AUTH_METHODS),
                // Public clients may revoke their own tokens (RFC 7009 §5).
                revocation_endpoint_auth_methods_supported: with_none(&CLIENT_AUTH_METHODS),
                issuer,
                // Only what is served.
                scopes_supported: strings(&["openid", "profile", "email", "roles", "offline_access"]),
                response_types_supported: strings(&["code"]),
                response_modes_supported: strings(&["query", "form_post"]),
                grant_types_supported: strings(&["client_credentials", "authorization_code", "refresh_token"]),
                subject_types_supported: strings(&["public"]),
                id_token_signing_alg_values_supported: strings(&["RS256", "ES256"]),
                code_challenge_methods_supported: strings(&["S256"]),
                claims_supported: strings(&CLAIMS),
                request_parameter_supported: false,
                request_uri_parameter_supported: false,
                authorization_response_iss_parameter_supported: true,
            }))
        }
    }
}

fn jwks(app: &AppState, resolved: Resolved) -> JwksResponse {
    match resolved {
        Resolved::DefaultAtRoot => JwksResponse::Moved(root_location(app, "/.well-known/jwks.json")),
        Resolved::NotFound(p) => JwksResponse::NotFound(Json(p)),
        Resolved::Unavailable(p) => JwksResponse::Unavailable(Json(p)),
        Resolved::Tenant { tenant, .. } => {
            let records = match app.store.read().and_then(|r| r.signing_keys(&tenant.id)) {
                Ok(r) => r,
                Err(e) => {
                    // Never an empty key set: clients would cache it and reject every token.
                    tracing::error!("reading signing keys: {e}");
                    return JwksResponse::Unavailable(Json(unavailable()));
                }
            };
            let keys = records
                .iter()
                .map(|r| {
                    let jwk = crate::crypto::keys::public_jwk_json(r);
                    let field = |name: &str| jwk.get(name).and_then(|v| v.as_str()).map(str::to_string);
                    Jwk {
                        kty: field("kty").unwrap_or_default(),
                        kid: r.kid.clone(),
                        alg: r.alg.as_str().to_string(),
                        use_: "sig".into(),
                        crv: field("crv"),
                        x: field("x"),
                        y: field("y"),
                        n: field("n"),
                        e: field("e"),
                    }
                })
                .collect();
            JwksResponse::Ok(Json(JwkSet { keys }))
        }
    }
}

/// An authorization request, from the query (GET) or the form (POST): `query` is its
/// parameters urlencoded, which the sign-in page carries.
async fn authorize(
    app: &AppState,
    resolved: Resolved,
    scope: &IssuerScope,
    req: &poem::Request,
    query: &str,
) -> AuthorizeResponse {
    use crate::idm::authorize::{self, Refusal};
    let params = &authorize::AuthorizeParams::parse(query);
    let (tenant, issuer) = match resolved {
        Resolved::DefaultAtRoot => {
            let suffix = if req.method() == poem::http::Method::GET { query_suffix(req) } else { String::new() };
            return AuthorizeResponse::Moved(root_location(app, &format!("/oauth2/authorize{suffix}")));
        }
        Resolved::NotFound(p) => return AuthorizeResponse::NotFound(Json(p)),
        Resolved::Unavailable(p) => return AuthorizeResponse::Unavailable(Json(p)),
        Resolved::Tenant { tenant, issuer } => (tenant, issuer),
    };
    let checked = match authorize::check(app, &tenant.id, params) {
        Ok(c) => c,
        Err(Refusal::Page { error, description }) => {
            return AuthorizeResponse::ErrorPage(Html(error_page(error, &description)))
        }
        Err(Refusal::Redirect(e)) => return deliver_error(&e, &issuer).into(),
    };
    let back = |error, description: &str| deliver_error(&checked_error(&checked, error, description), &issuer).into();
    let presented = super::auth::presented(req, &tenant.id);
    let session = match &presented {
        Some(id) => match crate::idm::auth::current(app, &tenant.id, id).await {
            Ok(found) => found.map(|(session, _)| (session, id.clone())),
            Err(e) => {
                tracing::warn!("authorize: {e}");
                return back(OAuthErrorCode::TemporarilyUnavailable, "this node cannot serve the request now");
            }
        },
        None => None,
    };
    let signed_in = session.filter(|(s, _)| !authorize::needs_sign_in(&checked, Some(s), app.clock.now_ms()));
    let Some((session, session_id)) = signed_in else {
        if checked.prompt.none {
            return back(
                OAuthErrorCode::LoginRequired,
                "the user must sign in, and prompt=none asks not to show a sign-in",
            );
        }
        let (page, cookie) = sign_in_page(app, &checked, scope, query, req);
        return AuthorizeResponse::Page(Html(page), Some(sign_in_policy(&checked.redirect_uri)), cookie);
    };
    match answer_signed_in(app, &checked, &session, &session_id, scope, query, &issuer).await {
        SignedInAnswer::Deliver(delivery) => delivery.into(),
        SignedInAnswer::Consent(page) => {
            AuthorizeResponse::Page(Html(page), Some(sign_in_policy(&checked.redirect_uri)), None)
        }
        // The session ended since it was read: sign in again.
        SignedInAnswer::SignInAgain => {
            let (page, cookie) = sign_in_page(app, &checked, scope, query, req);
            AuthorizeResponse::Page(Html(page), Some(sign_in_policy(&checked.redirect_uri)), cookie)
        }
    }
}

/// What a signed-in browser gets for a checked request.
pub(crate) enum SignedInAnswer {
    /// The authorization response.
    Deliver(Delivery),
    /// The consent page: the user is asked first.
    Consent(String),
    /// The session can no longer issue a code (it ended meanwhile).
    SignInAgain,
}

/// Asks for consent when the client needs it (`consent_required` under `prompt=none`), and
/// otherwise issues the code.
pub(crate) async fn answer_signed_in(
    app: &AppState,
    checked: &crate::idm::authorize::CheckedRequest,
    session: &gatehouse_storage::model::SessionRecord,
    session_id: &str,
    scope: &IssuerScope,
    request: &str,
    issuer: &str,
) -> SignedInAnswer {
    let back = |error, description: &str| {
        SignedInAnswer::Deliver(deliver_error(&checked_error(checked, error, description), issuer))
    };
    match crate::idm::authorize::needs_consent(app, checked, session) {
        Err(e) => {
            tracing::warn!("authorize: {e}");
            back(OAuthErrorCode::TemporarilyUnavailable, "this node cannot serve the request now")
        }
        Ok(true) if checked.prompt.none => back(
            OAuthErrorCode::ConsentRequired,
            "the user has not allowed this client, and prompt=none asks not to ask",
        ),
        Ok(true) => {
            let action = format!("{}/v1/auth/consent", scope.path_prefix());
            let token = crate::http::pages::form_token(&app.cipher, &checked.client.tenant, session_id);
            let form = crate::http::pages::SignInForm {
                client_name: &checked.client.name,
                action: &action,
                request,
                form_token: &token,
            };
            SignedInAnswer::Consent(crate::http::pages::consent(&form, &checked.scopes))
        }
        Ok(false) => match code_response(app, checked, session, issuer).await {
            Some(delivery) => SignedInAnswer::Deliver(delivery),
            None => SignedInAnswer::SignInAgain,
        },
    }
}

/// The sign-in page of a checked request, whose form carries the request back, and the
/// `Set-Cookie` of the page's cookie when the browser has none yet (its form token is bound to
/// it).
fn sign_in_page(
    app: &AppState,
    checked: &crate::idm::authorize::CheckedRequest,
    scope: &IssuerScope,
    request: &str,
    req: &poem::Request,
) -> (String, Option<String>) {
    let tenant = &checked.client.tenant;
    let (cookie, set_cookie) = match super::auth::presented_sign_in(req, tenant) {
        Some(value) => (value, None),
        None => {
            let (value, header) = super::auth::new_sign_in_cookie(tenant);
            (value, Some(header))
        }
    };
    let token = crate::http::pages::sign_in_token(&app.cipher, tenant, &cookie);
    let action = format!("{}/v1/auth/sign-in", scope.path_prefix());
    let form = crate::http::pages::SignInForm {
        client_name: &checked.client.name,
        action: &action,
        request,
        form_token: &token,
    };
    let email = checked.login_hint.as_deref().unwrap_or("");
    (crate::http::pages::sign_in(&form, email, ""), set_cookie)
}

/// An error of a checked request, back to its client.
pub(crate) fn checked_error(
    checked: &crate::idm::authorize::CheckedRequest,
    error: OAuthErrorCode,
    description: &str,
) -> crate::idm::authorize::ErrorRedirect {
    crate::idm::authorize::ErrorRedirect {
        redirect_uri: checked.redirect_uri.clone(),
        error,
        description: description.to_string(),
        state: checked.state.clone(),
        mode: checked.response_mode,
    }
}

/// Issues a code in `session` and says how it reaches the client; `None` when the session can
/// no longer issue one (it ended, or its user was disabled, meanwhile).
pub(crate) async fn code_response(
    app: &AppState,
    checked: &crate::idm::authorize::CheckedRequest,
    session: &gatehouse_storage::model::SessionRecord,
    issuer: &str,
) -> Option<Delivery> {
    use crate::idm::authorize::{self, CodeRefusal};
    match authorize::issue_code(app, checked, session).await {
        Ok(code) => {
            let params = authorize::success_params(&code, checked.state.as_deref(), issuer);
            Some(deliver(checked.response_mode, &checked.redirect_uri, &params))
        }
        Err(CodeRefusal::SignInAgain(r)) => {
            tracing::debug!("authorize: no code in this session: {r}");
            match r {
                gatehouse_storage::Rejection::SessionEnded | gatehouse_storage::Rejection::UserDisabled { .. } => None,
                _ => Some(deliver_error(
                    &checked_error(checked, OAuthErrorCode::UnauthorizedClient, "this client may not get a code now"),
                    issuer,
                )),
            }
        }
        Err(CodeRefusal::Unavailable(e)) => {
            tracing::warn!("authorize: {e}");
            Some(deliver_error(
                &checked_error(
                    checked,
                    OAuthErrorCode::TemporarilyUnavailable,
                    "this node cannot serve the request now",
                ),
                issuer,
            ))
        }
    }
}

/// How an authorization response reaches the client.
pub(crate) enum Delivery {
    /// 303 to this location (query response mode).
    Redirect(String),
    /// A page that posts the response, with the policy that allows its target.
    FormPost { html: String, csp: String },
}

impl From<Delivery> for AuthorizeResponse {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::Redirect(location) => AuthorizeResponse::Redirect(location),
            Delivery::FormPost { html, csp } => AuthorizeResponse::Page(Html(html), Some(csp), None),
        }
    }
}

pub(crate) fn deliver(
    mode: crate::idm::authorize::ResponseMode,
    redirect_uri: &str,
    params: &[(&str, String)],
) -> Delivery {
    use crate::idm::authorize::ResponseMode;
    match mode {
        ResponseMode::Query => Delivery::Redirect(crate::idm::authorize::query_location(redirect_uri, params)),
        ResponseMode::FormPost => Delivery::FormPost {
            html: crate::http::pages::form_post(redirect_uri, params),
            csp: form_post_policy(redirect_uri),
        },
    }
}

pub(crate) fn deliver_error(e: &crate::idm::authorize::ErrorRedirect, issuer: &str) -> Delivery {
    deliver(e.mode, &e.redirect_uri, &crate::idm::authorize::error_params(e, issuer))
}

/// Where a form may lead for `redirect_uri`: its origin (a web URI) or scheme (a native
/// app's). Registered URIs parse as URLs, so neither can carry a `;`.
fn form_target(redirect_uri: &str) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u.origin().ascii_serialization(),
        Ok(u) => format!("{}:", u.scheme()),
        Err(_) => "'none'".to_string(),
    }
}

/// The policy of the sign-in and consent pages: the pages' own, with `form-action` opened to
/// the client's redirect URI too, since their forms end in a redirect there (browsers check
/// `form-action` on the redirects after a submission as well).
pub(crate) fn sign_in_policy(redirect_uri: &str) -> String {
    let policy = crate::http::middleware::HTML_CSP.replace("form-action 'self'", "");
    format!("{policy}form-action 'self' {}", form_target(redirect_uri))
}

/// The form_post page's policy: its one form posts to the redirect URI's origin alone.
fn form_post_policy(redirect_uri: &str) -> String {
    let target = form_target(redirect_uri);
    format!(
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; \
         base-uri 'none'; object-src 'none'; form-action {target}"
    )
}

fn error_page(code: OAuthErrorCode, why: &str) -> String {
    crate::http::pages::error("This sign-in request cannot be completed", &format!("{why} (error code: {code})."))
}

fn query_suffix(req: &poem::Request) -> String {
    req.uri().query().map(|q| format!("?{q}")).unwrap_or_default()
}

/// The tenant whose issuer the request addresses (`http::issuer::scope` set it).
pub(crate) fn resolve_scope(app: &AppState, scope: &IssuerScope) -> Resolved {
    match scope {
        IssuerScope::Default => resolve(app, "default"),
        IssuerScope::Tenant(id) => resolve_path(app, id),
    }
}

/// Every operation here is served for each tenant's issuer: at the root for `default`, and
/// under `/t/{tenant}` for the others (the document lists both forms).
#[OpenApi]
impl OidcApi {
    /// OpenID Connect discovery of the issuer.
    #[oai(
        path = "/.well-known/openid-configuration",
        method = "get",
        tag = "OidcTag::Discovery",
        operation_id = "getDiscovery"
    )]
    async fn discovery(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>) -> DiscoveryResponse {
        discovery(&app, resolve_scope(&app, &scope), "/.well-known/openid-configuration")
    }

    /// RFC 8414 metadata of the issuer (same content as discovery).
    #[oai(
        path = "/.well-known/oauth-authorization-server",
        method = "get",
        tag = "OidcTag::Discovery",
        operation_id = "getAuthorizationServerMetadata"
    )]
    async fn as_metadata(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>) -> DiscoveryResponse {
        discovery(&app, resolve_scope(&app, &scope), "/.well-known/oauth-authorization-server")
    }

    /// RFC 8414 metadata of a tenant at the well-known URL its issuer's path is inserted
    /// into (RFC 8414 section 3.1), as RFC 8414 clients look for it.
    #[oai(
        path = "/.well-known/oauth-authorization-server/t/:tenant",
        method = "get",
        tag = "OidcTag::Discovery",
        operation_id = "getTenantAuthorizationServerMetadataInserted"
    )]
    async fn as_metadata_inserted(&self, app: Data<&Arc<AppState>>, tenant: Path<String>) -> DiscoveryResponse {
        discovery(&app, resolve_path(&app, &tenant), "/.well-known/oauth-authorization-server")
    }

    /// Public signing keys of the issuer.
    #[oai(path = "/.well-known/jwks.json", method = "get", tag = "OidcTag::Discovery", operation_id = "getJwks")]
    async fn jwks(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>) -> JwksResponse {
        jwks(&app, resolve_scope(&app, &scope))
    }

    /// UserInfo endpoint of the issuer (OpenID Connect Core §5.3): the claims of the user a
    /// bearer access token names.
    #[oai(path = "/oauth2/userinfo", method = "get", tag = "OidcTag::OAuth2", operation_id = "userinfo")]
    async fn userinfo(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
    ) -> UserInfoResponse {
        userinfo(&app, resolve_scope(&app, &scope), req, None)
    }

    /// UserInfo by POST: the token in the `Authorization` header or the form's `access_token`.
    #[oai(path = "/oauth2/userinfo", method = "post", tag = "OidcTag::OAuth2", operation_id = "userinfoPost")]
    async fn userinfo_post(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        form: poem_openapi::payload::Form<UserInfoForm>,
    ) -> UserInfoResponse {
        userinfo(&app, resolve_scope(&app, &scope), req, form.access_token.as_deref())
    }

    /// Authorization endpoint of the issuer (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1).
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/oauth2/authorize", method = "get", tag = "OidcTag::OAuth2", operation_id = "authorize")]
    async fn authorize(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        /// `code`, the one response type.
        response_type: Query<Option<String>>,
        client_id: Query<Option<String>>,
        /// Exactly one of the client's registered redirect URIs.
        redirect_uri: Query<Option<String>>,
        #[oai(name = "scope")] requested_scope: Query<Option<String>>,
        state: Query<Option<String>>,
        nonce: Query<Option<String>>,
        /// BASE64URL(SHA-256(code_verifier)); required of every client.
        code_challenge: Query<Option<String>>,
        /// `S256`, the one method (`plain` is refused).
        code_challenge_method: Query<Option<String>>,
        /// `query` (the default) or `form_post`.
        response_mode: Query<Option<String>>,
        /// `none`, `login`, `consent` (space-separated).
        prompt: Query<Option<String>>,
        /// Seconds since the last sign-in beyond which the user signs in again.
        max_age: Query<Option<String>>,
        /// Request objects are refused (`request_not_supported`).
        request: Query<Option<String>>,
        /// Refused (`request_uri_not_supported`).
        request_uri: Query<Option<String>>,
        /// An email address to fill in on the sign-in page.
        login_hint: Query<Option<String>>,
        /// An ID token of this issuer (expired or not) naming who should be signed in.
        id_token_hint: Query<Option<String>>,
    ) -> AuthorizeResponse {
        // The parameters are declared above for the document; they are read from the query
        // itself, which also tells which were given twice.
        let _ = (response_type, client_id, redirect_uri, requested_scope, state, nonce);
        let _ =
            (code_challenge, code_challenge_method, response_mode, prompt, max_age, request, request_uri, login_hint);
        let _ = id_token_hint;
        authorize(&app, resolve_scope(&app, &scope), &scope, req, req.uri().query().unwrap_or("")).await
    }

    /// RP-initiated logout (end_session_endpoint): ends the browser's session when the
    /// `id_token_hint` names its user, and otherwise asks the user to confirm; then back to a
    /// registered `post_logout_redirect_uri` (with `state`), or a signed-out page.
    #[allow(clippy::too_many_arguments)]
    #[oai(path = "/oauth2/logout", method = "get", tag = "OidcTag::OAuth2", operation_id = "rpLogout")]
    async fn end_session(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        id_token_hint: Query<Option<String>>,
        client_id: Query<Option<String>>,
        post_logout_redirect_uri: Query<Option<String>>,
        state: Query<Option<String>>,
    ) -> EndSessionResponse {
        let form = EndSessionForm {
            id_token_hint: id_token_hint.0,
            client_id: client_id.0,
            post_logout_redirect_uri: post_logout_redirect_uri.0,
            state: state.0,
            ..EndSessionForm::default()
        };
        end_session(&app, resolve_scope(&app, &scope), &scope, req, &form, false).await
    }

    /// RP-initiated logout by POST, and the confirmation page's form (`confirm=yes` with its
    /// synchronizer token).
    #[oai(path = "/oauth2/logout", method = "post", tag = "OidcTag::OAuth2", operation_id = "rpLogoutPost")]
    async fn end_session_post(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        form: poem_openapi::payload::Form<EndSessionForm>,
    ) -> EndSessionResponse {
        end_session(&app, resolve_scope(&app, &scope), &scope, req, &form, true).await
    }

    /// The authorization endpoint by POST (OpenID Connect Core §3.1.2.1): the same parameters
    /// as an urlencoded form.
    #[oai(path = "/oauth2/authorize", method = "post", tag = "OidcTag::OAuth2", operation_id = "authorizePost")]
    async fn authorize_post(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        form: poem_openapi::payload::Form<AuthorizeForm>,
    ) -> AuthorizeResponse {
        authorize(&app, resolve_scope(&app, &scope), &scope, req, &form.urlencoded()).await
    }
}
