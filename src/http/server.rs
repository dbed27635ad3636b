//! The route tree and the OpenAPI document.

use std::sync::Arc;

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

/// Every route of the HTTPS server with its middleware.
pub fn routes(app: Arc<AppState>) -> impl Endpoint {
    let api = service();
    let spec = crate::http::spec::finish(&api.spec());
    let docs = api.redoc();
    let limit = app.config.max_body_bytes;
    let metrics = app.metrics.clone();
    Route::new()
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| {
                poem::Response::builder().content_type("application/json").body(spec.clone())
            }),
        )
        .nest("/docs", docs)
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
