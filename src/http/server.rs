//! The route tree and the OpenAPI document.

use std::sync::{Arc, LazyLock};

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;

use crate::app::AppState;
use crate::http::api::admin::{BindingsApi, ClientsApi, KeysApi, OrganizationsApi, RolesApi, TenantsApi, UsersApi};
use crate::http::api::{
    AuthApi, ClusterApi, EmailAuthApi, OAuthApi, OidcApi, OpsApi, PagesApi, PasskeysApi, ProfileApi,
};
use crate::http::middleware;

const DESCRIPTION: &str = "Identity and access management appliance: OpenID Connect, OAuth 2.0 and admin REST API.\n\n\
Admin API conventions: a bearer access token with the admin audience on every call. Every POST \
takes an optional `Idempotency-Key` header (1 to 255 visible ASCII characters): the first \
successful answer is remembered for 24 h and replayed, with secrets removed and \
`Idempotent-Replayed: true`, to the same caller on the same route; the same key with another \
body gets 422. Resources with an `ETag` take `If-Match` on update; a stale or foreign one gets \
412. Lists take `limit` and `cursor` and answer `next_cursor` until the last page. Errors are \
RFC 7807 problem documents; invalid input names the field in `errors`.";

type Apis = (
    OpsApi,
    OidcApi,
    OAuthApi,
    AuthApi,
    EmailAuthApi,
    PasskeysApi,
    PagesApi,
    ProfileApi,
    TenantsApi,
    UsersApi,
    OrganizationsApi,
    ClientsApi,
    RolesApi,
    BindingsApi,
    KeysApi,
    ClusterApi,
);

fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            OpsApi,
            OidcApi,
            OAuthApi,
            AuthApi,
            EmailAuthApi,
            PasskeysApi,
            PagesApi,
            ProfileApi,
            TenantsApi,
            UsersApi,
            OrganizationsApi,
            ClientsApi,
            RolesApi,
            BindingsApi,
            KeysApi,
            ClusterApi,
        ),
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
/// The viewer's script, taken from the page poem-openapi builds (it inlines the script, which
/// the pages' CSP does not allow, and links web fonts, which a closed network cannot load).
static REDOC_JS: LazyLock<String> = LazyLock::new(|| {
    let page = service().redoc_html();
    let start = page.find("<script charset=\"UTF-8\">").map(|i| i + "<script charset=\"UTF-8\">".len());
    let script = start.and_then(|s| page[s..].find("</script>").map(|e| page[s..s + e].to_string()));
    script.unwrap_or_default()
});

/// The docs page: the viewer's script and its start-up from this origin, nothing inline.
const DOCS_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Gatehouse API</title>
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <div id="redoc-container"></div>
    <script src="/docs/redoc.standalone.js"></script>
    <script src="/docs/init.js"></script>
  </body>
</html>
"#;

const DOCS_INIT_JS: &str =
    "Redoc.init('/openapi.json', { scrollYOffset: 50 }, document.getElementById('redoc-container'));\n";

/// A fixed document of the node's own (built on first use where it is lazy).
fn document(content_type: &'static str, body: fn() -> &'static str) -> impl Endpoint {
    poem::endpoint::make_sync(move |_| poem::Response::builder().content_type(content_type).body(body()))
}

/// Every route of the HTTPS server with its middleware.
pub fn routes(app: Arc<AppState>) -> impl Endpoint {
    let api = service();
    let limit = app.config.max_body_bytes;
    let body_deadline = std::time::Duration::from_secs(app.config.http.body_read_timeout_secs);
    let hsts = app.config.sends_hsts(&app.public_url);
    let metrics = app.metrics.clone();
    Route::new()
        .at("/openapi.json", document("application/json", || SPEC.as_str()))
        .at("/docs", document("text/html; charset=utf-8", || DOCS_HTML))
        .at("/docs/redoc.standalone.js", document("text/javascript; charset=utf-8", || REDOC_JS.as_str()))
        .at("/docs/init.js", document("text/javascript; charset=utf-8", || DOCS_INIT_JS))
        .at("/v1/auth/avatars/:user/:digest", poem::get(crate::http::api::auth_profile::avatar))
        .at(crate::http::pages::SCRIPT_PATH, document("text/javascript; charset=utf-8", || crate::http::pages::SCRIPT))
        .nest("/", api)
        .around(|ep, req| async move { crate::http::issuer::scope(&ep, req).await })
        .data(app.clone())
        .around({
            let app = app.clone();
            move |ep, req| {
                let app = app.clone();
                async move { crate::http::idempotency::idempotent(&ep, req, app).await }
            }
        })
        .around(move |ep, req| async move { middleware::limit_body(&ep, req, limit, body_deadline).await })
        .around({
            let app = app.clone();
            move |ep, req| {
                let app = app.clone();
                async move { crate::http::cors::cors(&ep, req, &app).await }
            }
        })
        .around({
            let app = app.clone();
            move |ep, req| {
                let app = app.clone();
                async move { crate::http::api::admin::gate(&ep, req, &app).await }
            }
        })
        .around({
            let app = app.clone();
            move |ep, req| {
                let app = app.clone();
                async move { crate::http::api::cluster::gate(&ep, req, &app).await }
            }
        })
        .around({
            let app = app.clone();
            move |ep, req| {
                let app = app.clone();
                async move { middleware::rate_limit(&ep, req, &app).await }
            }
        })
        .around(move |ep, req| {
            let metrics = metrics.clone();
            async move { middleware::observe(&ep, req, metrics, hsts).await }
        })
}
