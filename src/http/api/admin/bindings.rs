//! `/admin/v1/tenants/{tenant}/bindings`: who holds which role.

use std::sync::Arc;

use gatehouse_storage::model::BindingRecord;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::{authorize, escalation, grantor, AdminBearer, Permission};
use super::responses::{
    invalid, missing, next_cursor, page_params, refusal, storage, write_failed, Created, Deleted, Fetched, Page,
};
use super::tenants::visible_tenant;
use super::AdminTag;
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::api::text::Text;
use crate::http::problem::Problem;
use crate::idm::bindings::{self, BindingError};

pub struct BindingsApi;

#[derive(Debug, Object)]
pub struct Binding {
    pub id: String,
    /// `client:{client_id}` or `user:{user_id}`.
    pub subject: String,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
    /// `org:{id}`, `project:{id}`…; absent for the whole tenant.
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateBinding {
    /// `client:{client_id}` or `user:{user_id}`.
    #[oai(validator(max_length = 140, pattern = r"^(client|user):[A-Za-z0-9_-]{1,128}$"))]
    pub subject: Text,
    /// A template (`owner`, `admin`, `member`, `viewer`) or a tenant role.
    #[oai(validator(max_length = 63, pattern = r"^[a-z][a-z0-9_-]{1,62}$"))]
    pub role: Text,
    /// `kind:id`, such as `org:o-42`; absent for the whole tenant.
    #[oai(validator(max_length = 200, pattern = r"^[a-z]+:[A-Za-z0-9_-]{1,128}$"))]
    pub scope: Option<Text>,
}

impl poem_openapi::types::Example for CreateBinding {
    fn example() -> Self {
        CreateBinding { subject: "client:c-0123456789abcdef0123456789abcdef".into(), role: "admin".into(), scope: None }
    }
}

pub(crate) fn view(b: BindingRecord) -> Binding {
    Binding { id: b.id, subject: b.subject, role: b.role, scope: b.scope, created_at_ms: b.created_at_ms }
}

fn problem_of(e: BindingError) -> Problem {
    match e {
        BindingError::Invalid(field, message) => invalid(vec![(field, message)]),
        BindingError::Forbidden(why) => escalation(why),
        // A well-formed reference to something absent, naming the field.
        BindingError::UnknownReference { field, detail } => missing(field, detail),
        BindingError::Refused(r) => refusal(r),
        BindingError::Write(e) => write_failed(e),
    }
}

#[OpenApi(tag = "AdminTag::Bindings")]
impl BindingsApi {
    /// List a tenant's role bindings.
    #[oai(path = "/admin/v1/tenants/:tenant/bindings", method = "get", operation_id = "listBindings")]
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
    ) -> Fetched<Page<Binding>> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::BindingsRead)?;
            visible_tenant(&app, &tenant)?;
            let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
            let items = app.store.read().and_then(|r| r.bindings(&tenant, after.as_deref(), limit)).map_err(storage)?;
            let next = next_cursor(items.len(), limit, items.last().map(|b| b.id.as_str()));
            Ok(Page { items: items.into_iter().map(view).collect(), next_cursor: next })
        })();
        match result {
            Ok(page) => Fetched::Ok(Json(page), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Give a client a role in the tenant. Its next token carries the role.
    #[oai(path = "/admin/v1/tenants/:tenant/bindings", method = "post", operation_id = "createBinding")]
    async fn create(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<CreateBinding>>,
    ) -> Created<Binding> {
        let (caller, grantor) = match authorize(&app, &auth, Some(&tenant), Permission::BindingsWrite)
            .and_then(|c| visible_tenant(&app, &tenant).map(|_| c))
            .and_then(|c| grantor(&app, &c).map(|g| (c, g)))
        {
            Ok(c) => c,
            Err(p) => return Created::problem(p),
        };
        let (subject, role, scope) = (&body.subject, &body.role, body.scope.as_deref());
        match bindings::create(&app, &tenant, subject, role, scope, &grantor, &caller.actor()).await {
            Ok(b) => Created::New(Json(view(b)), None),
            Err(e) => Created::problem(problem_of(e)),
        }
    }

    /// Remove a role binding.
    #[oai(path = "/admin/v1/tenants/:tenant/bindings/:binding_id", method = "delete", operation_id = "deleteBinding")]
    async fn delete(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] binding_id: Path<String>,
    ) -> Deleted {
        let (caller, grantor) = match authorize(&app, &auth, Some(&tenant), Permission::BindingsWrite)
            .and_then(|c| grantor(&app, &c).map(|g| (c, g)))
        {
            Ok(c) => c,
            Err(p) => return Deleted::problem(p),
        };
        match bindings::delete(&app, &tenant, &binding_id, &grantor, &caller.actor()).await {
            Ok(()) => Deleted::NoContent,
            Err(e) => Deleted::problem(problem_of(e)),
        }
    }
}
