//! OpenID Connect discovery, JWKS, and the OAuth 2.0 authorization and token endpoints, for
//! every tenant: the `default` tenant at the root, every other under `/t/{tenant}`.
//!
//! The authorization endpoint checks every request (`idm::authorize`): a request it cannot
//! trust gets an error page, a wrong one an error back at the client's redirect URI. Until
//! the code flow is built, a request that passes every check gets an error page saying
//! authorization codes are not issued yet. The token, introspection and revocation endpoints
//! are in `oauth.rs`.

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

/// OpenID Connect Discovery 1.0 / RFC 8414 metadata.
#[derive(Debug, Object)]
pub struct DiscoveryDocument {
    /// Equals the URL this document was fetched under, without `/.well-known/...`.
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
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
    pub request_parameter_supported: bool,
    pub request_uri_parameter_supported: bool,
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

#[derive(ApiResponse)]
pub enum AuthorizeResponse {
    /// An error page: the request cannot be redirected back to a verified client (an unknown
    /// client, a redirect URI not registered for it), or is not served yet.
    #[oai(status = 400)]
    ErrorPage(Html<String>),
    /// An error sent back to the client's registered redirect URI: `error`,
    /// `error_description`, `state` and `iss` in the query.
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
                introspection_endpoint: format!("{issuer}/oauth2/introspect"),
                revocation_endpoint: format!("{issuer}/oauth2/revoke"),
                token_endpoint_auth_methods_supported: strings(&CLIENT_AUTH_METHODS),
                token_endpoint_auth_signing_alg_values_supported: strings(&["ES256", "RS256"]),
                introspection_endpoint_auth_methods_supported: strings(&CLIENT_AUTH_METHODS),
                revocation_endpoint_auth_methods_supported: strings(&CLIENT_AUTH_METHODS),
                issuer,
                // Only what is served: the code flow (and with it `openid`, response types,
                // response modes and PKCE) comes with the OpenID Connect work.
                scopes_supported: Vec::new(),
                response_types_supported: Vec::new(),
                response_modes_supported: Vec::new(),
                grant_types_supported: strings(&["client_credentials"]),
                subject_types_supported: strings(&["public"]),
                id_token_signing_alg_values_supported: strings(&["RS256", "ES256"]),
                code_challenge_methods_supported: Vec::new(),
                request_parameter_supported: false,
                request_uri_parameter_supported: false,
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

async fn authorize(
    app: &AppState,
    resolved: Resolved,
    req: &poem::Request,
    params: &crate::idm::authorize::AuthorizeParams,
) -> AuthorizeResponse {
    use crate::idm::authorize::{self, Refusal};
    let (tenant, issuer) = match resolved {
        Resolved::DefaultAtRoot => {
            return AuthorizeResponse::Moved(root_location(app, &format!("/oauth2/authorize{}", query_suffix(req))))
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
        Err(Refusal::Redirect(e)) => return AuthorizeResponse::Redirect(authorize::error_location(&e, &issuer)),
    };
    let back = |error, description: &str| {
        let e = authorize::ErrorRedirect {
            redirect_uri: checked.redirect_uri.clone(),
            error,
            description: description.to_string(),
            state: checked.state.clone(),
        };
        AuthorizeResponse::Redirect(authorize::error_location(&e, &issuer))
    };
    let signed_in = match super::auth::presented(req, &tenant.id) {
        Some(id) => match crate::idm::auth::current(app, &tenant.id, &id).await {
            Ok(found) => found.is_some(),
            Err(e) => {
                tracing::warn!("authorize: {e}");
                return back(OAuthErrorCode::TemporarilyUnavailable, "this node cannot serve the request now");
            }
        },
        None => false,
    };
    if checked.prompt.none && !signed_in {
        return back(OAuthErrorCode::LoginRequired, "nobody is signed in, and prompt=none asks not to show a sign-in");
    }
    AuthorizeResponse::ErrorPage(Html(error_page(
        OAuthErrorCode::UnsupportedResponseType,
        "the request is valid, but this server does not issue authorization codes yet",
    )))
}

fn error_page(code: OAuthErrorCode, why: &str) -> String {
    crate::http::pages::error("This sign-in request cannot be completed", &format!("{why} (error code: {code})."))
}

/// The names given more than once in a query, each named once.
fn repeated_parameters(query: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut repeated = Vec::new();
    for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
        if !seen.insert(name.to_string()) && !repeated.contains(&name.to_string()) {
            repeated.push(name.to_string());
        }
    }
    repeated
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
        /// `query`, the one response mode served so far.
        response_mode: Query<Option<String>>,
        /// `none`, `login`, `consent` (space-separated).
        prompt: Query<Option<String>>,
        /// Seconds since the last sign-in beyond which the user signs in again.
        max_age: Query<Option<String>>,
        /// Request objects are refused (`request_not_supported`).
        request: Query<Option<String>>,
        /// Refused (`request_uri_not_supported`).
        request_uri: Query<Option<String>>,
    ) -> AuthorizeResponse {
        let params = crate::idm::authorize::AuthorizeParams {
            response_type: response_type.0,
            client_id: client_id.0,
            redirect_uri: redirect_uri.0,
            scope: requested_scope.0,
            state: state.0,
            nonce: nonce.0,
            code_challenge: code_challenge.0,
            code_challenge_method: code_challenge_method.0,
            response_mode: response_mode.0,
            prompt: prompt.0,
            max_age: max_age.0,
            request: request.0,
            request_uri: request_uri.0,
            repeated: repeated_parameters(req.uri().query().unwrap_or("")),
        };
        authorize(&app, resolve_scope(&app, &scope), req, &params).await
    }
}
