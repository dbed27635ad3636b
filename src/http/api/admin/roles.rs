//! `/admin/v1/tenants/{tenant}/roles`: the system templates and the tenant's own roles (a
//! template with permissions added and removed), each with its effective permissions.

use std::sync::Arc;

use gatehouse_storage::model::{RoleRecord, ROLE_TEMPLATES};
use poem::web::Data;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::auth::{authorize, escalation, grantor, AdminBearer, Permission};
use super::responses::{invalid, refusal, storage, write_failed, Created, Deleted, Fetched};
use super::tenants::visible_tenant;
use super::AdminTag;
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::api::text::Text;
use crate::http::problem::Problem;
use crate::idm::roles::{self, RoleError};

pub struct RolesApi;

/// A system role template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Template {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Template {
    fn as_str(self) -> &'static str {
        match self {
            Template::Owner => "owner",
            Template::Admin => "admin",
            Template::Member => "member",
            Template::Viewer => "viewer",
        }
    }
}

/// A permission, `resource:action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
pub enum PermissionName {
    #[oai(rename = "tenant:read")]
    TenantRead,
    #[oai(rename = "tenant:admin")]
    TenantAdmin,
    #[oai(rename = "tenant:delete")]
    TenantDelete,
    #[oai(rename = "users:read")]
    UsersRead,
    #[oai(rename = "users:write")]
    UsersWrite,
    #[oai(rename = "organizations:read")]
    OrganizationsRead,
    #[oai(rename = "organizations:write")]
    OrganizationsWrite,
    #[oai(rename = "clients:read")]
    ClientsRead,
    #[oai(rename = "clients:write")]
    ClientsWrite,
    #[oai(rename = "roles:read")]
    RolesRead,
    #[oai(rename = "roles:write")]
    RolesWrite,
    #[oai(rename = "keys:read")]
    KeysRead,
    #[oai(rename = "keys:rotate")]
    KeysRotate,
    #[oai(rename = "audit:read")]
    AuditRead,
}

impl PermissionName {
    fn name(self) -> String {
        poem_openapi::types::ToJSON::to_json(&self).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

#[derive(Debug, Object)]
pub struct Role {
    pub name: String,
    /// The template it starts from (itself, for a template).
    pub template: String,
    /// Whether it is a system template (not deletable).
    pub system: bool,
    /// The permissions it grants.
    pub permissions: Vec<String>,
}

#[derive(Debug, Object)]
pub struct RoleList {
    pub roles: Vec<Role>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateRole {
    /// Lowercase letters, digits, `_` and `-`; not a template's name.
    #[oai(validator(max_length = 63, pattern = r"^[a-z][a-z0-9_-]{1,62}$"))]
    pub name: Text,
    pub template: Template,
    /// Permissions added to the template's.
    #[oai(default, validator(max_items = 14, unique_items))]
    pub add: Vec<PermissionName>,
    /// Permissions taken away from the template's.
    #[oai(default, validator(max_items = 14, unique_items))]
    pub remove: Vec<PermissionName>,
}

pub(crate) fn view(r: &RoleRecord) -> Role {
    Role {
        name: r.name.clone(),
        template: r.template.clone(),
        system: false,
        permissions: roles::role_permissions(r).into_iter().map(str::to_string).collect(),
    }
}

fn problem_of(e: RoleError) -> Problem {
    match e {
        RoleError::Invalid(field, message) => invalid(vec![(field, message)]),
        RoleError::Forbidden(why) => escalation(why),
        RoleError::Refused(r) => refusal(r),
        RoleError::Write(e) => write_failed(e),
    }
}

#[OpenApi(tag = "AdminTag::Bindings")]
impl RolesApi {
    /// List the role templates and the tenant's roles with their permissions.
    #[oai(path = "/admin/v1/tenants/:tenant/roles", method = "get", operation_id = "listRoles")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
    ) -> Fetched<RoleList> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::BindingsRead)?;
            visible_tenant(&app, &tenant)?;
            let mut list: Vec<Role> = ROLE_TEMPLATES
                .iter()
                .map(|t| Role {
                    name: t.to_string(),
                    template: t.to_string(),
                    system: true,
                    permissions: roles::template_permissions(t).into_iter().map(str::to_string).collect(),
                })
                .collect();
            let own = app.store.read().and_then(|r| r.roles(&tenant, None, 500)).map_err(storage)?;
            list.extend(own.iter().map(view));
            Ok(RoleList { roles: list })
        })();
        match result {
            Ok(l) => Fetched::Ok(Json(l), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Create a tenant role: a template with permissions added and removed.
    #[oai(path = "/admin/v1/tenants/:tenant/roles", method = "post", operation_id = "createRole")]
    async fn create(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<CreateRole>>,
    ) -> Created<Role> {
        let (caller, grantor) = match authorize(&app, &auth, Some(&tenant), Permission::BindingsWrite)
            .and_then(|c| visible_tenant(&app, &tenant).map(|_| c))
            .and_then(|c| grantor(&app, &c).map(|g| (c, g)))
        {
            Ok(c) => c,
            Err(p) => return Created::problem(p),
        };
        let b = &body.0 .0;
        let add: Vec<String> = b.add.iter().map(|p| p.name()).collect();
        let remove: Vec<String> = b.remove.iter().map(|p| p.name()).collect();
        let spec = roles::RoleSpec { name: &b.name, template: b.template.as_str(), add: &add, remove: &remove };
        match roles::create(&app, &tenant, spec, &grantor, &caller.actor()).await {
            Ok(r) => Created::New(Json(view(&r)), None),
            Err(e) => Created::problem(problem_of(e)),
        }
    }

    /// Delete a tenant role that nobody is bound to.
    #[oai(path = "/admin/v1/tenants/:tenant/roles/:name", method = "delete", operation_id = "deleteRole")]
    async fn delete(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z][a-z0-9_-]{1,62}$"))] name: Path<String>,
    ) -> Deleted {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::BindingsWrite) {
            Ok(c) => c,
            Err(p) => return Deleted::problem(p),
        };
        match roles::delete(&app, &tenant, &name, &caller.actor()).await {
            Ok(()) => Deleted::NoContent,
            Err(e) => Deleted::problem(problem_of(e)),
        }
    }
}
