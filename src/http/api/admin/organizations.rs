//! `/admin/v1/tenants/{tenant}/organizations`: named groups of users with memberships.

use std::sync::Arc;

use gatehouse_storage::model::{MembershipRecord, OrganizationRecord};
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::{authorize, may_remove_scope, AdminBearer, Permission};
use super::responses::{next_cursor, page_params, storage, Created, Fetched, Page, Removed};
use super::tenants::visible_tenant;
use super::users::problem_of;
use super::AdminTag;
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::api::text::Text;
use crate::http::problem::Problem;
use crate::idm::users;

pub struct OrganizationsApi;

#[derive(Debug, Object)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateOrganization {
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: Text,
}

impl poem_openapi::types::Example for CreateOrganization {
    fn example() -> Self {
        CreateOrganization { name: "Analytical Engines Ltd".into() }
    }
}

#[derive(Debug, Object)]
pub struct Membership {
    pub organization_id: String,
    pub user_id: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct AddMember {
    #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))]
    pub user_id: Text,
}

pub(crate) fn view(o: OrganizationRecord) -> Organization {
    Organization { id: o.id, name: o.name, created_at_ms: o.created_at_ms }
}

pub(crate) fn member_view(m: MembershipRecord) -> Membership {
    Membership { organization_id: m.organization_id, user_id: m.user_id, created_at_ms: m.created_at_ms }
}

fn find(app: &AppState, tenant: &str, id: &str) -> Result<OrganizationRecord, Problem> {
    app.store
        .read()
        .and_then(|r| r.organization(tenant, id))
        .map_err(storage)?
        .ok_or_else(|| Problem::not_found(format!("there is no organization {id:?}")))
}

#[OpenApi(tag = "AdminTag::Organizations")]
impl OrganizationsApi {
    /// List a tenant's organizations.
    #[oai(path = "/admin/v1/tenants/:tenant/organizations", method = "get", operation_id = "listOrganizations")]
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
    ) -> Fetched<Page<Organization>> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::OrganizationsRead)?;
            visible_tenant(&app, &tenant)?;
            let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
            let items =
                app.store.read().and_then(|r| r.organizations(&tenant, after.as_deref(), limit)).map_err(storage)?;
            let next = next_cursor(items.len(), limit, items.last().map(|o| o.id.as_str()));
            Ok(Page { items: items.into_iter().map(view).collect(), next_cursor: next })
        })();
        match result {
            Ok(page) => Fetched::Ok(Json(page), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Create an organization.
    #[oai(path = "/admin/v1/tenants/:tenant/organizations", method = "post", operation_id = "createOrganization")]
    async fn create(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<CreateOrganization>>,
    ) -> Created<Organization> {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::OrganizationsWrite)
            .and_then(|c| visible_tenant(&app, &tenant).map(|_| c))
        {
            Ok(c) => c,
            Err(p) => return Created::problem(p),
        };
        match users::create_organization(&app, &tenant, &body.0 .0.name, &caller.actor()).await {
            Ok(o) => Created::New(Json(view(o)), None),
            Err(e) => Created::problem(problem_of(e)),
        }
    }

    /// Get an organization.
    #[oai(
        path = "/admin/v1/tenants/:tenant/organizations/:organization_id",
        method = "get",
        operation_id = "getOrganization"
    )]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] organization_id: Path<String>,
    ) -> Fetched<Organization> {
        match authorize(&app, &auth, Some(&tenant), Permission::OrganizationsRead)
            .and_then(|_| find(&app, &tenant, &organization_id))
        {
            Ok(o) => Fetched::Ok(Json(view(o)), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Delete an organization with its memberships and the role bindings scoped to it.
    #[oai(
        path = "/admin/v1/tenants/:tenant/organizations/:organization_id",
        method = "delete",
        operation_id = "deleteOrganization"
    )]
    async fn delete(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] organization_id: Path<String>,
    ) -> Removed {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::OrganizationsWrite)
            .and_then(|c| find(&app, &tenant, &organization_id).map(|_| c))
            .and_then(|c| may_remove_scope(&app, &c, &tenant, &format!("org:{}", organization_id.0)).map(|_| c))
        {
            Ok(c) => c,
            Err(p) => return Removed::problem(p),
        };
        match users::delete_organization(&app, &tenant, &organization_id, &caller.actor()).await {
            Ok(()) => Removed::NoContent,
            Err(e) => Removed::problem(problem_of(e)),
        }
    }

    /// List an organization's members.
    #[oai(
        path = "/admin/v1/tenants/:tenant/organizations/:organization_id/members",
        method = "get",
        operation_id = "listMembers"
    )]
    async fn members(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] organization_id: Path<String>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 256, pattern = r"^[A-Za-z0-9_-]*$"))]
        cursor: Query<Option<String>>,
    ) -> Fetched<Page<Membership>> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::OrganizationsRead)?;
            find(&app, &tenant, &organization_id)?;
            let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
            let items = app
                .store
                .read()
                .and_then(|r| r.members(&tenant, &organization_id, after.as_deref(), limit))
                .map_err(storage)?;
            let next = next_cursor(items.len(), limit, items.last().map(|m| m.user_id.as_str()));
            Ok(Page { items: items.into_iter().map(member_view).collect(), next_cursor: next })
        })();
        match result {
            Ok(page) => Fetched::Ok(Json(page), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Add a user of the tenant to an organization.
    #[oai(
        path = "/admin/v1/tenants/:tenant/organizations/:organization_id/members",
        method = "post",
        operation_id = "addMember"
    )]
    async fn add_member(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] organization_id: Path<String>,
        body: Json<Checked<AddMember>>,
    ) -> Created<Membership> {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::OrganizationsWrite)
            .and_then(|c| find(&app, &tenant, &organization_id).map(|_| c))
        {
            Ok(c) => c,
            Err(p) => return Created::problem(p),
        };
        let user_id = &body.0 .0.user_id;
        let exists = app.store.read().and_then(|r| r.user(&tenant, user_id)).map_err(storage);
        match exists {
            Ok(Some(_)) => {}
            Ok(None) => {
                let p = super::responses::missing("user_id", format!("there is no user {:?}", &**user_id));
                return Created::problem(p);
            }
            Err(p) => return Created::problem(p),
        }
        match users::add_member(&app, &tenant, &organization_id, user_id, &caller.actor()).await {
            Ok(m) => Created::New(Json(member_view(m)), None),
            Err(e) => Created::problem(problem_of(e)),
        }
    }

    /// Remove a user from an organization.
    #[oai(
        path = "/admin/v1/tenants/:tenant/organizations/:organization_id/members/:user_id",
        method = "delete",
        operation_id = "removeMember"
    )]
    async fn remove_member(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] organization_id: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] user_id: Path<String>,
    ) -> Removed {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::OrganizationsWrite) {
            Ok(c) => c,
            Err(p) => return Removed::problem(p),
        };
        match users::remove_member(&app, &tenant, &organization_id, &user_id, &caller.actor()).await {
            Ok(()) => Removed::NoContent,
            Err(e) => Removed::problem(problem_of(e)),
        }
    }
}
