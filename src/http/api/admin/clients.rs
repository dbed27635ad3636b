//! `/admin/v1/tenants/{tenant}/clients`: OAuth clients. The secret is in the create answer
//! only; every other answer omits it.

use std::sync::Arc;

use gatehouse_storage::model::{ClientKind, ClientRecord, ClientStatus};
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::auth::{authorize, may_act_on, AdminBearer, Permission};
use super::responses::{
    conflict, invalid, next_cursor, page_params, parse_etag, refusal, storage, write_failed, Created, Deleted, Fetched,
    Page, Replaced,
};
use super::tenants::visible_tenant;
use super::AdminTag;
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::api::text::{strings, Text};
use crate::http::problem::Problem;
use crate::idm::clients::{self, ClientError, ClientSpec};

pub struct ClientsApi;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ClientType {
    /// Holds a secret and authenticates at the token endpoint.
    Confidential,
    /// Cannot keep a secret (browser or native apps).
    Public,
}

/// A grant type a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
#[oai(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
    AuthorizationCode,
    RefreshToken,
}

impl GrantType {
    fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
        }
    }
}

/// How a confidential client authenticates at the token endpoint: `client_secret_basic` (the
/// default) or `client_secret_post`. Public clients authenticate with nothing (`none`), whatever
/// they ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523: a JWT signed with one of the client's `jwks` keys; no secret is issued.
    PrivateKeyJwt,
}

/// The algorithm of the ID tokens a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum IdTokenAlg {
    RS256,
    ES256,
}

/// An EC P-256 public key (ES256), as JWK members.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct EcPublicKey {
    #[oai(skip_serializing_if_is_none, validator(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    pub kid: Option<Text>,
    /// The x coordinate, 32 bytes base64url.
    #[oai(validator(pattern = r"^[A-Za-z0-9_-]{43}$"))]
    pub x: Text,
    /// The y coordinate, 32 bytes base64url.
    #[oai(validator(pattern = r"^[A-Za-z0-9_-]{43}$"))]
    pub y: Text,
}

/// An RSA public key (RS256), as JWK members.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct RsaPublicKey {
    #[oai(skip_serializing_if_is_none, validator(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    pub kid: Option<Text>,
    /// The modulus, 2048 to 8192 bits, base64url.
    #[oai(validator(pattern = r"^[A-Za-z0-9_-]{342,1366}$"))]
    pub n: Text,
    /// The public exponent, base64url.
    #[oai(validator(pattern = r"^[A-Za-z0-9_-]{1,8}$"))]
    pub e: Text,
}

/// A client's public keys for `private_key_jwt`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct ClientKeys {
    #[oai(default, validator(max_items = 8))]
    pub ec: Vec<EcPublicKey>,
    #[oai(default, validator(max_items = 8))]
    pub rsa: Vec<RsaPublicKey>,
}

impl ClientKeys {
    /// As a JWK Set, the form stored and used to verify assertions.
    fn to_jwks(&self) -> String {
        let mut keys = Vec::new();
        for k in &self.ec {
            let mut jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "x": k.x.0, "y": k.y.0});
            if let Some(kid) = &k.kid {
                jwk["kid"] = kid.0.clone().into();
            }
            keys.push(jwk);
        }
        for k in &self.rsa {
            let mut jwk = serde_json::json!({"kty": "RSA", "alg": "RS256", "n": k.n.0, "e": k.e.0});
            if let Some(kid) = &k.kid {
                jwk["kid"] = kid.0.clone().into();
            }
            keys.push(jwk);
        }
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn from_jwks(jwks: &str) -> Option<ClientKeys> {
        let v: serde_json::Value = serde_json::from_str(jwks).ok()?;
        let text = |k: &serde_json::Value, m: &str| k.get(m).and_then(|x| x.as_str()).map(Text::from);
        let mut keys = ClientKeys { ec: Vec::new(), rsa: Vec::new() };
        for k in v.get("keys")?.as_array()? {
            match k.get("kty").and_then(|x| x.as_str()) {
                Some("EC") => keys.ec.push(EcPublicKey { kid: text(k, "kid"), x: text(k, "x")?, y: text(k, "y")? }),
                Some("RSA") => keys.rsa.push(RsaPublicKey { kid: text(k, "kid"), n: text(k, "n")?, e: text(k, "e")? }),
                _ => {}
            }
        }
        Some(keys)
    }
}

/// An OAuth client.
#[derive(Debug, Object)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub client_type: ClientType,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub access_token_lifetime_secs: u32,
    pub disabled: bool,
    #[oai(skip_serializing_if_is_none)]
    pub jwks: Option<ClientKeys>,
    #[oai(skip_serializing_if_is_none)]
    pub id_token_signed_response_alg: Option<IdTokenAlg>,
    /// The tenant's own application: its users are not asked for consent.
    pub first_party: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Shown once, in the answer that created the client; never again.
    #[oai(skip_serializing_if_is_none)]
    pub client_secret: Option<String>,
}

/// A client's settings, for create and for update (an update replaces them all).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct ClientInput {
    /// Visible text, at most 200 characters.
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: Text,
    pub client_type: ClientType,
    pub token_endpoint_auth_method: Option<AuthMethod>,
    /// The grants the client may use. A public client cannot authenticate, so
    /// `client_credentials` never works for one.
    #[oai(validator(min_items = 1, max_items = 3, unique_items))]
    pub grant_types: Vec<GrantType>,
    /// The scopes the client may ask for (RFC 6749 scope tokens).
    #[oai(default, validator(max_items = 64, max_length = 128, pattern = r"^[\x21\x23-\x5b\x5d-\x7e]+$"))]
    pub scopes: Vec<Text>,
    /// Audiences its tokens may carry (RFC 8707 resources or names); the first is the default.
    #[oai(validator(min_items = 1, max_items = 16, max_length = 256, pattern = r"^[^\x00-\x20\x7f-\x9f]+$"))]
    pub audiences: Vec<Text>,
    /// `https://…`, `http://` on localhost, 127.0.0.1 or [::1], or a reverse-domain private
    /// scheme (`com.example.app:/callback`); no fragment.
    #[oai(
        default,
        validator(
            max_items = 16,
            max_length = 2048,
            pattern = r"^(https://[^\x00-\x20\x7f-\x9f#/?@]+|http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?|[a-z][a-z0-9]*(\.[a-z0-9]+)+:)(/[^\x00-\x20\x7f-\x9f#]*)?$"
        )
    )]
    pub redirect_uris: Vec<Text>,
    /// Where RP-initiated logout may send the browser back to (`post_logout_redirect_uri`, exact
    /// match); the same forms as `redirect_uris`.
    #[oai(
        default,
        validator(
            max_items = 16,
            max_length = 2048,
            pattern = r"^(https://[^\x00-\x20\x7f-\x9f#/?@]+|http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?|[a-z][a-z0-9]*(\.[a-z0-9]+)+:)(/[^\x00-\x20\x7f-\x9f#]*)?$"
        )
    )]
    pub post_logout_redirect_uris: Vec<Text>,
    /// Defaults to `oauth.access_token_lifetime_secs`; tokens never outlive
    /// `keys.max_token_lifetime_secs`, whatever this says.
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub access_token_lifetime_secs: Option<u32>,
    #[oai(default)]
    pub disabled: bool,
    /// Public keys for `private_key_jwt`; a client using it authenticates with none until it
    /// has one.
    pub jwks: Option<ClientKeys>,
    pub id_token_signed_response_alg: Option<IdTokenAlg>,
    /// The tenant's own application: its users are not asked for consent at sign-in (a
    /// third-party one, the default, asks once per user for the scopes it wants).
    #[oai(default)]
    pub first_party: bool,
}

impl poem_openapi::types::Example for ClientInput {
    fn example() -> Self {
        ClientInput {
            name: "billing-service".into(),
            client_type: ClientType::Confidential,
            token_endpoint_auth_method: Some(AuthMethod::ClientSecretBasic),
            grant_types: vec![GrantType::ClientCredentials],
            scopes: vec!["invoices:read".into()],
            audiences: vec!["https://billing.example.com".into()],
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            access_token_lifetime_secs: Some(600),
            disabled: false,
            jwks: None,
            id_token_signed_response_alg: None,
            first_party: false,
        }
    }
}

fn spec(input: &ClientInput) -> ClientSpec {
    let kind = match input.client_type {
        ClientType::Confidential => ClientKind::Confidential,
        ClientType::Public => ClientKind::Public,
    };
    let auth_method = match (kind, input.token_endpoint_auth_method) {
        (ClientKind::Public, _) => "none",
        (_, Some(AuthMethod::ClientSecretPost)) => "client_secret_post",
        (_, Some(AuthMethod::PrivateKeyJwt)) => "private_key_jwt",
        _ => "client_secret_basic",
    };
    ClientSpec {
        name: input.name.0.clone(),
        kind,
        auth_method: auth_method.into(),
        grant_types: input.grant_types.iter().map(|g| g.as_str().to_string()).collect(),
        scopes: strings(&input.scopes),
        audiences: strings(&input.audiences),
        redirect_uris: strings(&input.redirect_uris),
        post_logout_redirect_uris: strings(&input.post_logout_redirect_uris),
        access_token_lifetime_secs: input.access_token_lifetime_secs,
        disabled: input.disabled,
        jwks: input.jwks.as_ref().map(ClientKeys::to_jwks),
        id_token_signed_response_alg: input.id_token_signed_response_alg.map(|a| match a {
            IdTokenAlg::RS256 => "RS256".to_string(),
            IdTokenAlg::ES256 => "ES256".to_string(),
        }),
        first_party: input.first_party,
    }
}

pub(crate) fn view(c: ClientRecord, secret: Option<String>) -> Client {
    Client {
        client_type: match c.kind {
            ClientKind::Confidential => ClientType::Confidential,
            ClientKind::Public => ClientType::Public,
        },
        disabled: c.status != ClientStatus::Active,
        client_id: c.client_id,
        name: c.name,
        token_endpoint_auth_method: c.auth_method,
        grant_types: c.grant_types,
        scopes: c.scopes,
        audiences: c.audiences,
        redirect_uris: c.redirect_uris,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        access_token_lifetime_secs: c.access_token_lifetime_secs,
        jwks: c.jwks.as_deref().and_then(ClientKeys::from_jwks),
        id_token_signed_response_alg: match c.id_token_signed_response_alg.as_deref() {
            Some("ES256") => Some(IdTokenAlg::ES256),
            Some(_) => Some(IdTokenAlg::RS256),
            None => None,
        },
        first_party: c.first_party,
        created_at_ms: c.created_at_ms,
        updated_at_ms: c.updated_at_ms,
        client_secret: secret,
    }
}

pub(crate) fn etag(c: &ClientRecord) -> String {
    format!("\"r{}\"", c.revision)
}

fn problem_of(e: ClientError) -> Problem {
    match e {
        ClientError::Invalid(errors) => invalid(errors),
        ClientError::KindFixed => conflict("client_type_fixed", "a client's type cannot change; register a new client"),
        ClientError::Refused(r) => refusal(r),
        ClientError::Write(e) => write_failed(e),
    }
}

fn find(app: &AppState, tenant: &str, client_id: &str) -> Result<ClientRecord, Problem> {
    app.store
        .read()
        .and_then(|r| r.client(tenant, client_id))
        .map_err(storage)?
        .ok_or_else(|| Problem::not_found(format!("there is no client {client_id:?}")))
}

#[OpenApi(tag = "AdminTag::Clients")]
impl ClientsApi {
    /// List a tenant's clients.
    #[oai(path = "/admin/v1/tenants/:tenant/clients", method = "get", operation_id = "listClients")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 256, pattern = r"^[A-Za-z0-9_-]*$"))]
        cursor: Query<Option<String>>,
    ) -> Fetched<Page<Client>> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::ClientsRead)?;
            visible_tenant(&app, &tenant)?;
            let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
            let items = app.store.read().and_then(|r| r.clients(&tenant, after.as_deref(), limit)).map_err(storage)?;
            let next = next_cursor(items.len(), limit, items.last().map(|c| c.client_id.as_str()));
            Ok(Page { items: items.into_iter().map(|c| view(c, None)).collect(), next_cursor: next })
        })();
        match result {
            Ok(page) => Fetched::Ok(Json(page), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Register a client. A confidential client's secret is in this answer only.
    #[oai(path = "/admin/v1/tenants/:tenant/clients", method = "post", operation_id = "createClient")]
    async fn create(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<ClientInput>>,
    ) -> Created<Client> {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::ClientsWrite)
            .and_then(|c| visible_tenant(&app, &tenant).map(|_| c))
        {
            Ok(c) => c,
            Err(p) => return Created::problem(p),
        };
        match clients::create(&app, &tenant, spec(&body), &caller.actor()).await {
            Ok(created) => {
                let tag = etag(&created.client);
                Created::New(Json(view(created.client, created.secret)), Some(tag))
            }
            Err(e) => Created::problem(problem_of(e)),
        }
    }

    /// Get a client.
    #[oai(path = "/admin/v1/tenants/:tenant/clients/:client_id", method = "get", operation_id = "getClient")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] client_id: Path<String>,
    ) -> Fetched<Client> {
        let result = authorize(&app, &auth, Some(&tenant), Permission::ClientsRead)
            .and_then(|_| find(&app, &tenant, &client_id));
        match result {
            Ok(c) => {
                let tag = etag(&c);
                Fetched::Ok(Json(view(c, None)), Some(tag))
            }
            Err(p) => Fetched::problem(p),
        }
    }

    /// Replace a client's settings. With `If-Match`, a stale ETag gets 412.
    #[oai(path = "/admin/v1/tenants/:tenant/clients/:client_id", method = "put", operation_id = "updateClient")]
    async fn update(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] client_id: Path<String>,
        /// The `ETag` the update was based on; a stale one gets 412.
        #[oai(name = "If-Match", validator(max_length = 64))]
        if_match: Header<Option<String>>,
        body: Json<Checked<ClientInput>>,
    ) -> Replaced<Client> {
        let (caller, current, held) = match authorize(&app, &auth, Some(&tenant), Permission::ClientsWrite)
            .and_then(|c| find(&app, &tenant, &client_id).map(|cur| (c, cur)))
            .and_then(|(c, cur)| {
                may_act_on(&app, &c, &tenant, &format!("client:{}", client_id.0)).map(|held| (c, cur, held))
            }) {
            Ok(v) => v,
            Err(p) => return Replaced::problem(p),
        };
        let expected = match parse_etag(if_match.0.as_deref(), current.revision) {
            Ok(n) => n,
            Err(p) => return Replaced::problem(p),
        };
        match clients::update(&app, &current, spec(&body), expected, &caller.actor(), Some(held)).await {
            Ok(c) => {
                let tag = etag(&c);
                Replaced::Ok(Json(view(c, None)), Some(tag))
            }
            Err(e) => Replaced::problem(problem_of(e)),
        }
    }

    /// Delete a client and its role bindings.
    #[oai(path = "/admin/v1/tenants/:tenant/clients/:client_id", method = "delete", operation_id = "deleteClient")]
    async fn delete(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] client_id: Path<String>,
    ) -> Deleted {
        let (caller, held) = match authorize(&app, &auth, Some(&tenant), Permission::ClientsWrite)
            .and_then(|c| find(&app, &tenant, &client_id).map(|_| c))
            .and_then(|c| may_act_on(&app, &c, &tenant, &format!("client:{}", client_id.0)).map(|held| (c, held)))
        {
            Ok(v) => v,
            Err(p) => return Deleted::problem(p),
        };
        match clients::delete(&app, &tenant, &client_id, &caller.actor(), Some(held)).await {
            Ok(()) => Deleted::NoContent,
            Err(e) => Deleted::problem(problem_of(e)),
        }
    }
}
