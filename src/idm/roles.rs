//! Roles and permissions: the system templates, tenant roles (a template with permissions
//! added and removed), and the one list of permissions.

use std::collections::BTreeSet;

use gatehouse_storage::model::{RoleRecord, ROLE_TEMPLATES};
use gatehouse_storage::{Applied, Command, Rejection};

use crate::app::{AppState, NodeWriteError};

/// A permission is `resource:action`. The one list, also in the OpenAPI document's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    TenantsRead,
    TenantsWrite,
    ClientsRead,
    ClientsWrite,
    BindingsRead,
    BindingsWrite,
    KeysRead,
    KeysRotate,
    AuditRead,
    UsersRead,
    UsersWrite,
    OrganizationsRead,
    OrganizationsWrite,
    TenantDelete,
}

pub const PERMISSIONS: [(Permission, &str); 14] = [
    (Permission::TenantDelete, "tenant:delete"),
    (Permission::UsersRead, "users:read"),
    (Permission::UsersWrite, "users:write"),
    (Permission::OrganizationsRead, "organizations:read"),
    (Permission::OrganizationsWrite, "organizations:write"),
    (Permission::TenantsRead, "tenant:read"),
    (Permission::TenantsWrite, "tenant:admin"),
    (Permission::ClientsRead, "clients:read"),
    (Permission::ClientsWrite, "clients:write"),
    (Permission::BindingsRead, "roles:read"),
    (Permission::BindingsWrite, "roles:write"),
    (Permission::KeysRead, "keys:read"),
    (Permission::KeysRotate, "keys:rotate"),
    (Permission::AuditRead, "audit:read"),
];

impl Permission {
    pub fn name(self) -> &'static str {
        PERMISSIONS.iter().find(|(p, _)| *p == self).map_or("unknown", |(_, n)| n)
    }

    pub fn read_only(self) -> bool {
        matches!(
            self,
            Permission::TenantsRead
                | Permission::ClientsRead
                | Permission::BindingsRead
                | Permission::KeysRead
                | Permission::AuditRead
                | Permission::UsersRead
                | Permission::OrganizationsRead
        )
    }
}

/// Whether the role templates grant `p`: `owner` everything, `admin` everything but deleting
/// the tenant, `viewer` reads, `member` nothing of the admin API.
pub fn template_grants(role: &str, p: Permission) -> bool {
    match role {
        "owner" => true,
        "admin" => p != Permission::TenantDelete,
        "viewer" => p.read_only(),
        _ => false,
    }
}

impl Permission {
    pub fn from_name(name: &str) -> Option<Permission> {
        PERMISSIONS.iter().find(|(_, n)| *n == name).map(|(p, _)| *p)
    }
}

/// The permissions of a template, by name.
pub fn template_permissions(template: &str) -> BTreeSet<&'static str> {
    PERMISSIONS.iter().filter(|(p, _)| template_grants(template, *p)).map(|(_, n)| *n).collect()
}

/// The permissions of a tenant role: its template's, plus `add`, minus `remove`.
pub fn role_permissions(role: &RoleRecord) -> BTreeSet<&'static str> {
    let mut set = template_permissions(&role.template);
    for name in &role.add {
        if let Some(p) = Permission::from_name(name) {
            set.insert(p.name());
        }
    }
    for name in &role.remove {
        set.remove(name.as_str());
    }
    set
}

/// Whether any of `roles` (role names held in `tenant`) grants `p`.
pub fn grants(
    app: &AppState,
    tenant: &str,
    roles: &[String],
    p: Permission,
) -> Result<bool, gatehouse_storage::StoreError> {
    for role in roles {
        if ROLE_TEMPLATES.contains(&role.as_str()) {
            if template_grants(role, p) {
                return Ok(true);
            }
        } else if let Some(record) = app.store.read()?.role(tenant, role)? {
            if role_permissions(&record).contains(p.name()) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// What a caller holds, so it can grant no more (S57, the design's "No escalation"): the
/// permissions of its roles where it holds them, and whether it is an owner there.
#[derive(Debug, Clone)]
pub struct Grantor {
    permissions: BTreeSet<&'static str>,
    owner: bool,
}

impl Grantor {
    /// The holder of `roles` in `tenant` (a platform admin's are in `system`, and count in
    /// every tenant it acts on).
    pub fn of(app: &AppState, tenant: &str, roles: &[String]) -> Result<Grantor, gatehouse_storage::StoreError> {
        let mut permissions = BTreeSet::new();
        for role in roles {
            permissions.extend(permissions_of_role(app, tenant, role)?);
        }
        Ok(Grantor { permissions, owner: roles.iter().any(|r| r == "owner") })
    }

    /// Whether this caller may give someone `role` of `tenant`, or take it away: it must hold
    /// every permission the role grants, and only an owner hands out or removes `owner`.
    pub fn may_grant(
        &self,
        app: &AppState,
        tenant: &str,
        role: &str,
    ) -> Result<Result<(), String>, gatehouse_storage::StoreError> {
        if role == "owner" && !self.owner {
            return Ok(Err("only an owner may create or remove owner bindings".into()));
        }
        let wanted = permissions_of_role(app, tenant, role)?;
        Ok(self.holds(&wanted))
    }

    /// Whether this caller may define a role with these permissions.
    pub fn may_define(&self, template: &str, permissions: &BTreeSet<&'static str>) -> Result<(), String> {
        if template == "owner" && !self.owner {
            return Err("only an owner may define roles from the owner template".into());
        }
        self.holds(permissions)
    }

    fn holds(&self, wanted: &BTreeSet<&'static str>) -> Result<(), String> {
        let missing: Vec<&str> = wanted.difference(&self.permissions).copied().collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("a caller grants only permissions it holds; this one lacks {}", missing.join(", ")))
        }
    }
}

/// The permissions `role` grants in `tenant`: a template's, or a tenant role's; none for an
/// unknown name.
fn permissions_of_role(
    app: &AppState,
    tenant: &str,
    role: &str,
) -> Result<BTreeSet<&'static str>, gatehouse_storage::StoreError> {
    if ROLE_TEMPLATES.contains(&role) {
        return Ok(template_permissions(role));
    }
    Ok(app.store.read()?.role(tenant, role)?.map(|r| role_permissions(&r)).unwrap_or_default())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    #[error("invalid role: {0}: {1}")]
    Invalid(String, String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
}

/// A tenant role to define: a template with permissions added and removed.
#[derive(Debug, Clone, Copy)]
pub struct RoleSpec<'a> {
    pub name: &'a str,
    pub template: &'a str,
    pub add: &'a [String],
    pub remove: &'a [String],
}

pub async fn create(
    app: &AppState,
    tenant: &str,
    spec: RoleSpec<'_>,
    grantor: &Grantor,
    actor: &str,
) -> Result<RoleRecord, RoleError> {
    let RoleSpec { name, template, add, remove } = spec;
    for (field, list) in [("add", add), ("remove", remove)] {
        if let Some(bad) = list.iter().find(|n| Permission::from_name(n).is_none()) {
            return Err(RoleError::Invalid(field.into(), format!("{bad:?} is not a permission")));
        }
    }
    let now_ms = app.clock.now_ms();
    let role = RoleRecord {
        v: 1,
        tenant: tenant.into(),
        name: name.into(),
        template: template.into(),
        add: add.to_vec(),
        remove: remove.to_vec(),
        created_at_ms: now_ms,
    };
    grantor.may_define(template, &role_permissions(&role)).map_err(RoleError::Forbidden)?;
    match app.propose(actor, Command::CreateRole(role.clone())).await? {
        Applied::RoleCreated { .. } => Ok(role),
        other => Err(super::unexpected(other).into()),
    }
}

pub async fn delete(app: &AppState, tenant: &str, name: &str, actor: &str) -> Result<(), RoleError> {
    let command = Command::DeleteRole { tenant: tenant.into(), name: name.into() };
    match app.propose(actor, command).await? {
        Applied::RoleDeleted { .. } => Ok(()),
        other => Err(super::unexpected(other).into()),
    }
}
