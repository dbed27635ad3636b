//! `/admin/v1/tenants`: list and create (platform admins), get (the tenant's own admins too).

use std::sync::Arc;

use gatehouse_storage::model::{TenantRecord, TenantStatus};
use gatehouse_storage::Rejection;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::{authorize, require_platform, AdminBearer, Permission};
use super::responses::{
    conflict, invalid, next_cursor, page_params, refusal, storage, write_failed, Created, Deleted, Fetched, Page,
    Updated,
};
use super::AdminTag;
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::api::text::Text;
use crate::http::problem::Problem;
use crate::idm::tenants::{self, TenantError};

pub struct TenantsApi;

#[derive(Debug, Object)]
pub struct Tenant {
    /// `[a-z0-9][a-z0-9-]{1,62}`.
    #[oai(validator(max_length = 63))]
    pub id: String,
    #[oai(validator(max_length = 200))]
    pub display_name: String,
    /// `active` or `disabled`.
    pub status: String,
    /// The tenant's OIDC issuer.
    pub issuer: String,
    /// Whether end users may register themselves.
    pub self_registration: bool,
    /// Browser front ends on other origins that may call the sign-in API with credentials.
    pub cors_origins: Vec<String>,
    /// Every end-user sign-in needs a second factor.
    pub require_mfa: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// A new tenant.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateTenant {
    /// `[a-z0-9][a-z0-9-]{1,62}`; the reserved ids (`system`, `default`, `t`, `admin`, `v1`,
    /// `oauth2`, `docs`, `health`, `ready`, `metrics`, `openapi`) are taken (409).
    #[oai(validator(max_length = 63, min_length = 2, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))]
    pub id: Text,
    #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub display_name: Option<Text>,
}

/// Changes to a tenant; absent members stay as they are.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateTenant {
    #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub display_name: Option<Text>,
    /// A disabled tenant's issuer answers 404 and its tokens stop working. `system` cannot be
    /// disabled.
    pub disabled: Option<bool>,
    pub self_registration: Option<bool>,
    /// Replaces the list of CORS origins: exact origins such as `https://app.example.com`
    /// (`http://localhost:…` for development), never `*`; at most 32.
    #[oai(validator(
        max_items = 32,
        max_length = 200,
        pattern = r"^(https://[a-z0-9.-]+|http://localhost)(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$"
    ))]
    pub cors_origins: Option<Vec<String>>,
    /// Every end-user sign-in needs a second factor: a password or email sign-in of a user
    /// without an authenticator gets a session that serves only adding one (then they sign in
    /// again), and passwords may be 8 characters rather than 15.
    pub require_mfa: Option<bool>,
}

impl poem_openapi::types::Example for CreateTenant {
    fn example() -> Self {
        CreateTenant { id: "acme".into(), display_name: Some("Acme Corp".into()) }
    }
}

pub(crate) fn view(app: &AppState, t: TenantRecord) -> Tenant {
    Tenant {
        issuer: app.issuer_of(&t.id),
        status: match t.status {
            TenantStatus::Active => "active".into(),
            TenantStatus::Disabled => "disabled".into(),
        },
        self_registration: t.self_registration,
        cors_origins: t.cors_origins,
        require_mfa: t.require_mfa,
        id: t.id,
        display_name: t.display_name,
        created_at_ms: t.created_at_ms,
    }
}

/// The tenant named in the path, as the caller may see it.
pub(crate) fn visible_tenant(app: &AppState, id: &str) -> Result<TenantRecord, Problem> {
    match app.store.read().and_then(|r| r.tenant(id)).map_err(storage)? {
        Some(t) => Ok(t),
        None => Err(Problem::not_found(format!("there is no tenant {id:?}"))),
    }
}

fn problem_of(e: TenantError) -> Problem {
    match e {
        TenantError::Invalid { field, why } => invalid(vec![(field.into(), why)]),
        TenantError::Reserved(why) => conflict("reserved_tenant_id", why),
        TenantError::Protected(why) => conflict("protected_tenant", why),
        TenantError::Refused(Rejection::TenantExists { id }) => {
            conflict("tenant_exists", format!("tenant {id:?} already exists"))
        }
        TenantError::Refused(r) => refusal(r),
        TenantError::Write(e) => write_failed(e),
        other => super::responses::unavailable(other),
    }
}

#[OpenApi(prefix_path = "/admin/v1", tag = "AdminTag::Tenants")]
impl TenantsApi {
    /// List tenants (platform admins).
    #[oai(path = "/tenants", method = "get", operation_id = "listTenants")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 256, pattern = r"^[A-Za-z0-9_-]*$"))]
        cursor: Query<Option<String>>,
    ) -> Fetched<Page<Tenant>> {
        let result = (|| {
            let caller = authorize(&app, &auth, None, Permission::TenantsRead)?;
            require_platform(&caller)?;
            let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
            let all = app.store.read().and_then(|r| r.tenants()).map_err(storage)?;
            let items: Vec<TenantRecord> =
                all.into_iter().filter(|t| after.as_deref().is_none_or(|a| t.id.as_str() > a)).take(limit).collect();
            let next = next_cursor(items.len(), limit, items.last().map(|t| t.id.as_str()));
            Ok(Page { items: items.into_iter().map(|t| view(&app, t)).collect(), next_cursor: next })
        })();
        match result {
            Ok(page) => Fetched::Ok(Json(page), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Create a tenant (platform admins): its issuer, data key and first signing keys.
    #[oai(path = "/tenants", method = "post", operation_id = "createTenant")]
    async fn create(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        body: Json<Checked<CreateTenant>>,
    ) -> Created<Tenant> {
        let caller = match authorize(&app, &auth, None, Permission::TenantsWrite).and_then(|c| {
            require_platform(&c)?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(p) => return Created::problem(p),
        };
        match tenants::create(&app, &caller.actor(), &body.id, body.display_name.as_deref()).await {
            Ok(t) => Created::New(Json(view(&app, t)), None),
            Err(e) => Created::problem(problem_of(e)),
        }
    }

    /// Update a tenant: rename, disable or enable it, or change self-registration.
    #[oai(path = "/tenants/:tenant", method = "patch", operation_id = "updateTenant")]
    async fn update(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<UpdateTenant>>,
    ) -> Updated<Tenant> {
        let (caller, current) = match authorize(&app, &auth, Some(&tenant), Permission::TenantsWrite)
            .and_then(|c| visible_tenant(&app, &tenant).map(|t| (c, t)))
        {
            Ok(v) => v,
            Err(p) => return Updated::problem(p),
        };
        let b = &body.0 .0;
        if b.disabled.is_some() {
            // Enabling or disabling a tenant is the platform's decision, not the tenant's own.
            if let Err(p) = require_platform(&caller) {
                return Updated::problem(p);
            }
        }
        let change = tenants::TenantChange {
            display_name: b.display_name.as_deref(),
            disabled: b.disabled,
            self_registration: b.self_registration,
            cors_origins: b.cors_origins.as_deref(),
            require_mfa: b.require_mfa,
        };
        match tenants::update(&app, &caller.actor(), &current, change).await {
            Ok(t) => Updated::Ok(Json(view(&app, t)), None),
            Err(e) => Updated::problem(problem_of(e)),
        }
    }

    /// Delete a tenant with its users, organizations, clients, bindings and keys (its data key
    /// too, so nothing sealed under it can be recovered). Its audit entries stay. Needs the
    /// `owner` role; `system` and `default` cannot be deleted.
    #[oai(path = "/tenants/:tenant", method = "delete", operation_id = "deleteTenant")]
    async fn delete(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
    ) -> Deleted {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::TenantDelete)
            .and_then(|c| visible_tenant(&app, &tenant).map(|_| c))
        {
            Ok(c) => c,
            Err(p) => return Deleted::problem(p),
        };
        match tenants::delete(&app, &caller.actor(), &tenant).await {
            Ok(()) => Deleted::NoContent,
            Err(e) => Deleted::problem(problem_of(e)),
        }
    }

    /// Get a tenant.
    #[oai(path = "/tenants/:tenant", method = "get", operation_id = "getTenant")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
    ) -> Fetched<Tenant> {
        let result =
            authorize(&app, &auth, Some(&tenant), Permission::TenantsRead).and_then(|_| visible_tenant(&app, &tenant));
        match result {
            Ok(t) => Fetched::Ok(Json(view(&app, t)), None),
            Err(p) => Fetched::problem(p),
        }
    }
}
