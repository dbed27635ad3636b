//! The OAuth 2.0 back-channel endpoints of every tenant: token (RFC 6749: `client_credentials`
//! and `authorization_code`),
//! introspection (RFC 7662) and revocation (RFC 7009). Errors are RFC 6749 JSON with
//! `Cache-Control: no-store` (S17); client authentication failures are 401 `invalid_client`,
//! with a `WWW-Authenticate` challenge when HTTP Basic was used (S15).

use std::sync::Arc;

use base64::Engine;
use poem::web::Data;
use poem_openapi::payload::{Form, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::app::AppState;
use crate::http::api::oidc::{resolve_scope, root_location, OidcTag, Resolved};
use crate::http::issuer::IssuerScope;
use crate::http::problem::{OAuthError, Problem};
use crate::idm::clients::GRANT_CLIENT_CREDENTIALS;
use crate::idm::protocol::OAuthErrorCode;
use crate::idm::tokens::{self, AccessClaims, PresentedClient, TokenFailure};

pub struct OAuthApi;

/// A token request (RFC 6749 section 4); which members apply depends on `grant_type`.
#[derive(Debug, Object, serde::Deserialize)]
pub struct TokenRequest {
    /// `client_credentials`, `authorization_code` or `refresh_token`.
    #[oai(validator(min_length = 1, max_length = 256))]
    pub grant_type: String,
    #[oai(validator(max_length = 256))]
    pub client_id: Option<String>,
    #[oai(validator(max_length = 512))]
    pub client_secret: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` for `private_key_jwt`.
    #[oai(validator(max_length = 256))]
    pub client_assertion_type: Option<String>,
    /// A JWT signed with one of the client's keys (RFC 7523).
    #[oai(validator(max_length = 8192))]
    pub client_assertion: Option<String>,
    #[oai(validator(max_length = 2048))]
    pub scope: Option<String>,
    /// RFC 8707 resource indicator: an absolute URI the client may use.
    #[oai(validator(max_length = 2048))]
    pub resource: Option<String>,
    /// The audience to put in the token, by name (instead of `resource`), such as the admin
    /// audience.
    #[oai(validator(max_length = 256))]
    pub audience: Option<String>,
    #[oai(validator(max_length = 2048))]
    pub code: Option<String>,
    #[oai(validator(max_length = 2048))]
    pub redirect_uri: Option<String>,
    #[oai(validator(max_length = 256))]
    pub code_verifier: Option<String>,
    #[oai(validator(max_length = 4096))]
    pub refresh_token: Option<String>,
}

/// An introspection or revocation request.
#[derive(Debug, Object, serde::Deserialize)]
pub struct TokenHintRequest {
    /// The access token to introspect or revoke.
    #[oai(validator(min_length = 1, max_length = 8192))]
    pub token: String,
    #[oai(validator(max_length = 64))]
    pub token_type_hint: Option<String>,
    #[oai(validator(max_length = 256))]
    pub client_id: Option<String>,
    #[oai(validator(max_length = 512))]
    pub client_secret: Option<String>,
    #[oai(validator(max_length = 256))]
    pub client_assertion_type: Option<String>,
    #[oai(validator(max_length = 8192))]
    pub client_assertion: Option<String>,
}

/// RFC 6749 section 5.1.
#[derive(Debug, Object)]
pub struct AccessTokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
    /// OpenID Connect: when the code was issued for the `openid` scope.
    #[oai(skip_serializing_if_is_none)]
    pub id_token: Option<String>,
    /// For `offline_access` (clients of the refresh grant): good once, replaced on each use.
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
}

/// RFC 7662 section 2.2. Only `active` is present for a token that is not active.
#[derive(Debug, Object, Default)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub client_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub exp: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub iat: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub nbf: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub sub: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub aud: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub iss: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub jti: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub tenant: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub roles: Option<Vec<String>>,
}

impl From<AccessClaims> for IntrospectionResponse {
    fn from(c: AccessClaims) -> Self {
        IntrospectionResponse {
            active: true,
            scope: Some(c.scope),
            client_id: Some(c.client_id),
            token_type: Some("Bearer".into()),
            exp: Some(c.exp),
            iat: Some(c.iat),
            nbf: Some(c.nbf),
            sub: Some(c.sub),
            aud: Some(c.aud),
            iss: Some(c.iss),
            jti: Some(c.jti),
            tenant: Some(c.tenant),
            roles: Some(c.roles),
        }
    }
}

const NO_STORE: &str = "no-store";
const NO_CACHE: &str = "no-cache";

/// The answers of the token, introspection and revocation endpoints.
#[derive(ApiResponse)]
pub enum OAuthResponse<T: poem_openapi::types::ToJSON + Send + Sync> {
    /// Success.
    #[oai(status = 200)]
    Ok(Json<T>, #[oai(header = "Cache-Control")] String, #[oai(header = "Pragma")] String),
    /// An RFC 6749 error.
    #[oai(status = 400)]
    BadRequest(Json<OAuthError>, #[oai(header = "Cache-Control")] String, #[oai(header = "Pragma")] String),
    /// Client authentication failed (`invalid_client`).
    #[oai(status = 401)]
    Unauthorized(
        Json<OAuthError>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
        #[oai(header = "WWW-Authenticate")] Option<String>,
    ),
    /// The `default` tenant lives at the root.
    #[oai(status = 308)]
    Moved(#[oai(header = "Location")] String),
    /// No such tenant.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The body is larger than `max_body_bytes` (refused before it is parsed).
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// Too many failed authentications from this source or for this client, or too many
    /// requests from this source (`temporarily_unavailable`); retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<OAuthError>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
        #[oai(header = "Retry-After")] String,
    ),
    /// This node cannot serve the request now (`temporarily_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<OAuthError>, #[oai(header = "Cache-Control")] String, #[oai(header = "Pragma")] String),
}

/// An empty JSON object (the revocation endpoint's answer).
#[derive(Debug, Object, Default)]
pub struct Empty {}

impl<T: poem_openapi::types::ToJSON + Send + Sync> OAuthResponse<T> {
    fn ok(body: T) -> Self {
        OAuthResponse::Ok(Json(body), NO_STORE.into(), NO_CACHE.into())
    }

    fn failure(f: TokenFailure) -> Self {
        match f {
            TokenFailure::Request { error, description } => {
                OAuthResponse::BadRequest(Json(OAuthError::new(error, description)), NO_STORE.into(), NO_CACHE.into())
            }
            TokenFailure::InvalidClient { basic } => OAuthResponse::Unauthorized(
                Json(OAuthError::new(OAuthErrorCode::InvalidClient, "client authentication failed")),
                NO_STORE.into(),
                NO_CACHE.into(),
                basic.then(|| "Basic realm=\"gatehouse\", charset=\"UTF-8\"".to_string()),
            ),
            TokenFailure::RateLimited(wait) => OAuthResponse::TooManyRequests(
                Json(OAuthError::new(
                    OAuthErrorCode::TemporarilyUnavailable,
                    format!("too many failed authentications; retry after {} s", wait.secs()),
                )),
                NO_STORE.into(),
                NO_CACHE.into(),
                wait.secs().to_string(),
            ),
            TokenFailure::Unavailable => OAuthResponse::Unavailable(
                Json(OAuthError::new(OAuthErrorCode::TemporarilyUnavailable, "this node cannot serve the request now")),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
        }
    }
}

fn invalid_request(description: impl Into<String>) -> TokenFailure {
    TokenFailure::Request { error: OAuthErrorCode::InvalidRequest, description: description.into() }
}

/// The tenant of a resolved path, or the response for a path that is not one.
fn tenant_or_answer<T: poem_openapi::types::ToJSON + Send + Sync>(
    app: &AppState,
    resolved: Resolved,
    suffix: &str,
) -> Result<String, OAuthResponse<T>> {
    match resolved {
        Resolved::Tenant { tenant, .. } => Ok(tenant.id),
        Resolved::DefaultAtRoot => Err(OAuthResponse::Moved(root_location(app, suffix))),
        Resolved::NotFound(p) => Err(OAuthResponse::NotFound(Json(p))),
        Resolved::Unavailable(_) => Err(OAuthResponse::failure(TokenFailure::Unavailable)),
    }
}

/// The client credentials of a request: HTTP Basic (RFC 6749 section 2.3.1, each part
/// form-urlencoded) or the form's `client_id` and `client_secret`, never both.
/// The client authentication of a request: HTTP Basic, form secret, or a client assertion;
/// exactly one of them.
struct FormClient<'a> {
    id: Option<&'a str>,
    secret: Option<&'a str>,
    assertion_type: Option<&'a str>,
    assertion: Option<&'a str>,
}

fn presented_client(req: &poem::Request, form: FormClient<'_>) -> Result<PresentedClient, TokenFailure> {
    let header = req.headers().get(poem::http::header::AUTHORIZATION);
    if form.assertion.is_some() || form.assertion_type.is_some() {
        if header.is_some() || form.secret.is_some() {
            return Err(invalid_request("use one client authentication method, not two"));
        }
        if form.assertion_type != Some(tokens::JWT_BEARER_ASSERTION) {
            return Err(invalid_request(format!("client_assertion_type must be {}", tokens::JWT_BEARER_ASSERTION)));
        }
        let assertion = form.assertion.ok_or_else(|| invalid_request("client_assertion is missing"))?;
        // The client is named by the assertion's issuer (checked against its keys later).
        let claimed = unverified_claim(assertion, "iss").ok_or(TokenFailure::InvalidClient { basic: false })?;
        if form.id.is_some_and(|id| id != claimed) {
            return Err(invalid_request("client_id differs from the assertion's issuer"));
        }
        return Ok(PresentedClient {
            client_id: claimed,
            secret: None,
            basic: false,
            assertion: Some(assertion.into()),
        });
    }
    let (form_id, form_secret) = (form.id, form.secret);
    if let Some(value) = header {
        if form_secret.is_some() {
            return Err(invalid_request("use one client authentication method, not two"));
        }
        let bad = TokenFailure::InvalidClient { basic: true };
        let value = value.to_str().map_err(|_| bad.clone())?;
        let (scheme, encoded) = value.split_once(' ').ok_or(bad.clone())?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad);
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad.clone())?;
        let text = String::from_utf8(decoded).map_err(|_| bad.clone())?;
        let (id, secret) = text.split_once(':').ok_or(bad.clone())?;
        let (id, secret) = (form_urldecode(id).ok_or(bad.clone())?, form_urldecode(secret).ok_or(bad.clone())?);
        if form_id.is_some_and(|f| f != id) {
            return Err(invalid_request("client_id differs from the authenticated client"));
        }
        return Ok(PresentedClient { client_id: id, secret: Some(secret), basic: true, assertion: None });
    }
    match (form_id, form_secret) {
        (Some(id), secret) => Ok(PresentedClient {
            client_id: id.to_string(),
            secret: secret.map(str::to_string),
            basic: false,
            assertion: None,
        }),
        _ => Err(TokenFailure::InvalidClient { basic: true }),
    }
}

/// A string claim of an unverified JWT.
fn unverified_claim(token: &str, name: &str) -> Option<String> {
    let payload = crate::crypto::b64url_decode(token.split('.').nth(1)?)?;
    let value: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    value.get(name)?.as_str().map(str::to_string)
}

fn form_urldecode(s: &str) -> Option<String> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8().ok().map(|c| c.into_owned())
}

/// The form is parsed by serde, so the schema's `maxLength`s are enforced here.
fn overlong_field(fields: &[(&'static str, &Option<String>, usize)]) -> Option<&'static str> {
    fields.iter().find(|(_, v, max)| v.as_ref().is_some_and(|v| v.chars().count() > *max)).map(|(n, _, _)| *n)
}

async fn token(
    app: &AppState,
    resolved: Resolved,
    req: &poem::Request,
    body: &TokenRequest,
) -> OAuthResponse<AccessTokenResponse> {
    let tenant = match tenant_or_answer(app, resolved, "/oauth2/token") {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    if body.grant_type.is_empty() || body.grant_type.chars().count() > 256 {
        return OAuthResponse::failure(invalid_request("grant_type must be 1 to 256 characters"));
    }
    let limits = [
        ("client_id", &body.client_id, 256),
        ("client_secret", &body.client_secret, 512),
        ("client_assertion_type", &body.client_assertion_type, 256),
        ("client_assertion", &body.client_assertion, 8192),
        ("scope", &body.scope, 2048),
        ("resource", &body.resource, 2048),
        ("audience", &body.audience, 256),
        ("code", &body.code, 2048),
        ("redirect_uri", &body.redirect_uri, 2048),
        ("code_verifier", &body.code_verifier, 256),
        ("refresh_token", &body.refresh_token, 4096),
    ];
    if let Some(field) = overlong_field(&limits) {
        return OAuthResponse::failure(invalid_request(format!("{field} is too long")));
    }
    match body.grant_type.as_str() {
        GRANT_CLIENT_CREDENTIALS => {
            let result = async {
                let presented = presented_client(
                    req,
                    form_client(
                        &body.client_id,
                        &body.client_secret,
                        &body.client_assertion_type,
                        &body.client_assertion,
                    ),
                )?;
                let client = tokens::authenticate_client(app, &tenant, &presented, "token").await?;
                tokens::client_credentials(
                    app,
                    &client,
                    body.scope.as_deref(),
                    body.resource.as_deref(),
                    body.audience.as_deref(),
                )
                .await
            }
            .await;
            match result {
                Ok(t) => OAuthResponse::ok(AccessTokenResponse {
                    access_token: t.access_token,
                    token_type: "Bearer".into(),
                    expires_in: t.expires_in,
                    scope: t.scope,
                    id_token: None,
                    refresh_token: None,
                }),
                Err(f) => OAuthResponse::failure(f),
            }
        }
        tokens::GRANT_AUTHORIZATION_CODE => {
            let result = async {
                let form = form_client(
                    &body.client_id,
                    &body.client_secret,
                    &body.client_assertion_type,
                    &body.client_assertion,
                );
                let presented = presented_client(req, form)?;
                let client = tokens::authenticate_client(app, &tenant, &presented, "token").await?;
                tokens::redeem_code(
                    app,
                    &client,
                    body.code.as_deref(),
                    body.redirect_uri.as_deref(),
                    body.code_verifier.as_deref(),
                )
                .await
            }
            .await;
            match result {
                Ok(t) => OAuthResponse::ok(AccessTokenResponse {
                    access_token: t.access_token,
                    token_type: "Bearer".into(),
                    expires_in: t.expires_in,
                    scope: t.scope,
                    id_token: t.id_token,
                    refresh_token: t.refresh_token,
                }),
                Err(f) => OAuthResponse::failure(f),
            }
        }
        tokens::GRANT_REFRESH_TOKEN => {
            let result = async {
                let form = form_client(
                    &body.client_id,
                    &body.client_secret,
                    &body.client_assertion_type,
                    &body.client_assertion,
                );
                let presented = presented_client(req, form)?;
                let client = tokens::authenticate_client(app, &tenant, &presented, "token").await?;
                tokens::refresh(app, &client, body.refresh_token.as_deref(), body.scope.as_deref()).await
            }
            .await;
            match result {
                Ok(t) => OAuthResponse::ok(AccessTokenResponse {
                    access_token: t.access_token,
                    token_type: "Bearer".into(),
                    expires_in: t.expires_in,
                    scope: t.scope,
                    id_token: None,
                    refresh_token: Some(t.refresh_token),
                }),
                Err(f) => OAuthResponse::failure(f),
            }
        }
        other => OAuthResponse::failure(TokenFailure::Request {
            error: OAuthErrorCode::UnsupportedGrantType,
            description: format!("grant type {other:?} is not supported"),
        }),
    }
}

fn form_client<'a>(
    id: &'a Option<String>,
    secret: &'a Option<String>,
    assertion_type: &'a Option<String>,
    assertion: &'a Option<String>,
) -> FormClient<'a> {
    FormClient {
        id: id.as_deref(),
        secret: secret.as_deref(),
        assertion_type: assertion_type.as_deref(),
        assertion: assertion.as_deref(),
    }
}

fn hint_limits(body: &TokenHintRequest) -> Option<&'static str> {
    if body.token.is_empty() || body.token.chars().count() > 8192 {
        return Some("token");
    }
    overlong_field(&[
        ("token_type_hint", &body.token_type_hint, 64),
        ("client_id", &body.client_id, 256),
        ("client_secret", &body.client_secret, 512),
        ("client_assertion_type", &body.client_assertion_type, 256),
        ("client_assertion", &body.client_assertion, 8192),
    ])
}

async fn introspect(
    app: &AppState,
    resolved: Resolved,
    req: &poem::Request,
    body: &TokenHintRequest,
) -> OAuthResponse<IntrospectionResponse> {
    let tenant = match tenant_or_answer(app, resolved, "/oauth2/introspect") {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    if let Some(field) = hint_limits(body) {
        return OAuthResponse::failure(invalid_request(format!("{field} is empty or too long")));
    }
    let result = async {
        let presented = presented_client(
            req,
            form_client(&body.client_id, &body.client_secret, &body.client_assertion_type, &body.client_assertion),
        )?;
        tokens::authenticate_client(app, &tenant, &presented, "introspect").await?;
        let token = body.token.as_str();
        // The freshness rule (R18): cut off from the leader for longer than the staleness
        // bound, this node's deny-list may miss a revocation.
        if !app.is_fresh() {
            return Err(TokenFailure::Unavailable);
        }
        match tokens::verify_access_token(app, &tenant, token, None) {
            Ok(claims) => Ok(IntrospectionResponse::from(claims)),
            Err(tokens::InvalidToken::Unavailable) => Err(TokenFailure::Unavailable),
            Err(_) => Ok(IntrospectionResponse::default()),
        }
    }
    .await;
    match result {
        Ok(r) => OAuthResponse::ok(r),
        Err(f) => OAuthResponse::failure(f),
    }
}

async fn revoke(
    app: &AppState,
    resolved: Resolved,
    req: &poem::Request,
    body: &TokenHintRequest,
) -> OAuthResponse<Empty> {
    let tenant = match tenant_or_answer(app, resolved, "/oauth2/revoke") {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    if let Some(field) = hint_limits(body) {
        return OAuthResponse::failure(invalid_request(format!("{field} is empty or too long")));
    }
    let result = async {
        let presented = presented_client(
            req,
            form_client(&body.client_id, &body.client_secret, &body.client_assertion_type, &body.client_assertion),
        )?;
        let client = tokens::authenticate_client(app, &tenant, &presented, "revoke").await?;
        let token = body.token.as_str();
        if tokens::is_refresh_token(token) {
            return tokens::revoke_refresh(app, &client, token).await;
        }
        tokens::revoke(app, &client, token).await
    }
    .await;
    match result {
        Ok(()) => OAuthResponse::ok(Empty {}),
        Err(f) => OAuthResponse::failure(f),
    }
}

/// Served for each tenant's issuer: at the root for `default`, under `/t/{tenant}` for the
/// others (the document lists both forms).
#[OpenApi]
impl OAuthApi {
    /// Token endpoint of the issuer.
    #[oai(path = "/oauth2/token", method = "post", tag = "OidcTag::OAuth2", operation_id = "token")]
    async fn token(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Form<TokenRequest>,
    ) -> OAuthResponse<AccessTokenResponse> {
        token(&app, resolve_scope(&app, &scope), req, &body).await
    }

    /// Token introspection (RFC 7662); the caller authenticates as a confidential client of the
    /// issuer's tenant.
    #[oai(path = "/oauth2/introspect", method = "post", tag = "OidcTag::OAuth2", operation_id = "introspect")]
    async fn introspect(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Form<TokenHintRequest>,
    ) -> OAuthResponse<IntrospectionResponse> {
        introspect(&app, resolve_scope(&app, &scope), req, &body).await
    }

    /// Token revocation (RFC 7009): the token stays inactive until it expires. Answers 200
    /// whether or not the token was valid.
    #[oai(path = "/oauth2/revoke", method = "post", tag = "OidcTag::OAuth2", operation_id = "revoke")]
    async fn revoke(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Form<TokenHintRequest>,
    ) -> OAuthResponse<Empty> {
        revoke(&app, resolve_scope(&app, &scope), req, &body).await
    }
}
