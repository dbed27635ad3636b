//! Roles and permissions: the system templates, tenant roles (a template with permissions
//! added and removed), and the one list of permissions.

use std::collections::BTreeSet;

use gatehouse_storage::model::{RoleRecord, ROLE_TEMPLATES};
use gatehouse_storage::{Applied, Command, Outcome, Proposal, Rejection};

use crate::node::{AppState, NodeWriteError};

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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    #[error("invalid role: {0}: {1}")]
    Invalid(String, String),
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
}

pub async fn create(
    app: &AppState,
    tenant: &str,
    name: &str,
    template: &str,
    add: &[String],
    remove: &[String],
    actor: &str,
) -> Result<RoleRecord, RoleError> {
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
    let out =
        app.write(Proposal { at_ms: now_ms, actor: actor.into(), command: Command::CreateRole(role.clone()) }).await?;
    match out {
        Outcome::Applied(Applied::RoleCreated { .. }) => Ok(role),
        Outcome::Refused(r) => Err(RoleError::Refused(r)),
        other => Err(RoleError::Write(NodeWriteError::Unavailable(format!("unexpected outcome {other:?}")))),
    }
}

pub async fn delete(app: &AppState, tenant: &str, name: &str, actor: &str) -> Result<(), RoleError> {
    let command = Command::DeleteRole { tenant: tenant.into(), name: name.into() };
    match app.write(Proposal { at_ms: app.clock.now_ms(), actor: actor.into(), command }).await? {
        Outcome::Applied(Applied::RoleDeleted { .. }) => Ok(()),
        Outcome::Refused(r) => Err(RoleError::Refused(r)),
        other => Err(RoleError::Write(NodeWriteError::Unavailable(format!("unexpected outcome {other:?}")))),
    }
}
