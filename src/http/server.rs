//! The route tree and the OpenAPI document.

use std::sync::{Arc, LazyLock};

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;

use crate::http::api::admin::{BindingsApi, ClientsApi, KeysApi, OrganizationsApi, RolesApi, TenantsApi, UsersApi};
use crate::http::api::{OAuthApi, OidcApi, OpsApi};
use crate::http::middleware;
use crate::node::AppState;

const DESCRIPTION: &str = "Identity and access management appliance: OpenID Connect, OAuth 2.0 and admin REST API.\n\n\
Admin API conventions: a bearer access token with the admin audience on every call. Every POST \
takes an optional `Idempotency-Key` header (1 to 255 visible ASCII characters): the first \
successful answer is remembered for 24 h and replayed, with secrets removed and \
`Idempotent-Replayed: true`, to the same caller on the same route; the same key with another \
body gets 422. Resources with an `ETag` take `If-Match` on update; a stale or foreign one gets \
412. Lists take `limit` and `cursor` and answer `next_cursor` until the last page. Errors are \
RFC 7807 problem documents; invalid input names the field in `errors`.";

type Apis =
    (OpsApi, OidcApi, OAuthApi, TenantsApi, UsersApi, OrganizationsApi, ClientsApi, RolesApi, BindingsApi, KeysApi);

fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (OpsApi, OidcApi, OAuthApi, TenantsApi, UsersApi, OrganizationsApi, ClientsApi, RolesApi, BindingsApi, KeysApi),
        "Gatehouse",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}

/// The OpenAPI document, as committed in `openapi/gatehouse.json` and served at `/openapi.json`.
pub fn openapi_document() -> String {
    crate::http::spec::finish(&service().spec())
}

/// The document and its viewer are built on first request, not at start: generating them
/// touches most of the schema code, which would otherwise sit in an idle node's memory.
static SPEC: LazyLock<String> = LazyLock::new(openapi_document);
static DOCS: LazyLock<String> = LazyLock::new(|| service().redoc_html());

/// Every route of the HTTPS server with its middleware.
pub fn routes(app: Arc<AppState>) -> impl Endpoint {
    let api = service();
    let limit = app.config.max_body_bytes;
    let metrics = app.metrics.clone();
    Route::new()
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(|_| {
                poem::Response::builder().content_type("application/json").body(SPEC.as_str())
            }),
        )
        .at(
            "/docs",
            poem::endpoint::make_sync(|_| {
                poem::Response::builder().content_type("text/html; charset=utf-8").body(DOCS.as_str())
            }),
        )
        .nest("/", api)
        .data(app.clone())
        .around(move |ep, req| {
            let app = app.clone();
            async move { crate::http::idempotency::idempotent(&ep, req, app).await }
        })
        .around(move |ep, req| async move { middleware::limit_body(&ep, req, limit).await })
        .around(move |ep, req| {
            let metrics = metrics.clone();
            async move { middleware::observe(&ep, req, metrics).await }
        })
}
