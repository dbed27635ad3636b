//! Tenant roles and role bindings, and the rule that a tenant with an owner keeps one.

use super::{clients, plan, tenants, users, writes, Planned, Stop, Tables};
use crate::command::{Applied, Command, HeldRoles, Rejection};
use crate::model::binding::{binding_key, role_key, subject_prefix};
use crate::model::{BindingRecord, ClientStatus, RoleRecord, UserStatus, ROLE_TEMPLATES};
use crate::table::{tenant_prefix, Row};
use crate::StoreError;

pub(super) fn create_role<'c>(t: &Tables<'_>, r: &'c RoleRecord) -> Planned<'c> {
    tenants::active(t, &r.tenant)?;
    if !ROLE_TEMPLATES.contains(&r.template.as_str()) {
        return Err(Rejection::UnknownRole { role: r.template.clone() }.into());
    }
    if ROLE_TEMPLATES.contains(&r.name.as_str()) || t.roles.contains(&r.key())? {
        return Err(Rejection::AlreadyExists { what: "role".into(), id: r.name.clone() }.into());
    }
    writes(move |t| {
        t.roles.put(r)?;
        Ok(Applied::RoleCreated { name: r.name.clone() })
    })
}

/// Deletes a tenant role that no binding uses.
pub(super) fn delete_role<'c>(t: &Tables<'_>, tenant: &'c str, name: &'c str) -> Planned<'c> {
    if !t.roles.contains(&role_key(tenant, name))? {
        return Err(Rejection::UnknownRole { role: name.to_string() }.into());
    }
    if !t.bindings.under(&tenant_prefix(tenant), |b| b.role == name)?.is_empty() {
        return Err(Rejection::RoleInUse { name: name.to_string() }.into());
    }
    writes(move |t| {
        t.roles.delete(&role_key(tenant, name))?;
        Ok(Applied::RoleDeleted { name: name.to_string() })
    })
}

/// Binds an existing role to an existing subject, optionally within an existing organization.
pub(super) fn create_binding<'c>(t: &Tables<'_>, b: &'c BindingRecord) -> Planned<'c> {
    tenants::active(t, &b.tenant)?;
    if !ROLE_TEMPLATES.contains(&b.role.as_str()) && !t.roles.contains(&role_key(&b.tenant, &b.role))? {
        return Err(Rejection::UnknownRole { role: b.role.clone() }.into());
    }
    if t.bindings.contains(&b.key())? {
        return Err(Rejection::BindingExists { id: b.id.clone() }.into());
    }
    if let Some(org) = b.scope.as_deref().and_then(|s| s.strip_prefix("org:")) {
        users::existing_organization(t, &b.tenant, org)?;
    }
    // The subject index is keyed `{tenant}/{subject}/{id}`: a `/` would blur its ranges.
    if b.subject.contains('/') || b.id.contains('/') {
        let what = format!("a binding's subject and id hold no '/': {:?}", b.subject);
        return Err(Rejection::Inconsistent { what }.into());
    }
    if let Some(client_id) = b.subject.strip_prefix("client:") {
        clients::existing(t, &b.tenant, client_id)?;
    } else if let Some(user_id) = b.subject.strip_prefix("user:") {
        users::existing(t, &b.tenant, user_id)?;
    } else {
        return Err(Rejection::Inconsistent { what: format!("unknown subject kind {:?}", b.subject) }.into());
    }
    writes(move |t| {
        t.bindings.put(b)?;
        Ok(Applied::BindingCreated { id: b.id.clone() })
    })
}

pub(super) fn delete_binding<'c>(t: &Tables<'_>, tenant: &'c str, id: &'c str) -> Planned<'c> {
    if !t.bindings.contains(&binding_key(tenant, id))? {
        return Err(Rejection::UnknownBinding { tenant: tenant.to_string(), id: id.to_string() }.into());
    }
    keeps_an_owner(t, tenant, |b| b.id == id)?;
    writes(move |t| {
        t.bindings.delete(&binding_key(tenant, id))?;
        Ok(Applied::BindingDeleted { id: id.to_string() })
    })
}

/// Plans `inner` while the guarded subject holds no role beyond those the caller was checked
/// against.
pub(super) fn guarded<'c>(t: &Tables<'_>, inner: &'c Command, held: &HeldRoles, now_ms: i64) -> Planned<'c> {
    let target = match inner {
        Command::UpdateClient { client, .. } => Some((client.tenant.as_str(), format!("client:{}", client.client_id))),
        Command::DeleteClient { tenant, client_id } => Some((tenant.as_str(), format!("client:{client_id}"))),
        Command::UpdateUser { user, .. } => Some((user.tenant.as_str(), format!("user:{}", user.id))),
        Command::DeleteUser { tenant, user_id } | Command::SetPassword { tenant, user_id, .. } => {
            Some((tenant.as_str(), format!("user:{user_id}")))
        }
        _ => None,
    };
    if target != Some((held.tenant.as_str(), held.subject.clone())) {
        let what = format!("a guard on {} cannot cover this command", held.subject);
        return Err(Rejection::Inconsistent { what }.into());
    }
    let now = bindings_of(t, &held.tenant, &held.subject)?;
    if now.iter().any(|b| !held.roles.contains(&b.role)) {
        return Err(Rejection::RolesChanged { subject: held.subject.clone() }.into());
    }
    plan(t, inner, now_ms)
}

/// The bindings of `subject`, through the subject index (the rows decide, not the entries).
fn bindings_of(t: &Tables<'_>, tenant: &str, subject: &str) -> Result<Vec<BindingRecord>, StoreError> {
    let mut found = t.bindings.by_index(&subject_prefix(tenant, subject))?;
    found.retain(|b| b.subject == subject);
    Ok(found)
}

/// Removes every binding of `subject` (a deleted client or user).
pub(super) fn remove_bindings_of(t: &mut Tables<'_>, tenant: &str, subject: &str) -> Result<(), StoreError> {
    for b in bindings_of(t, tenant, subject)? {
        t.bindings.delete(&b.key())?;
    }
    Ok(())
}

/// Refuses a change that takes away every usable owner of a tenant: removing (or disabling the
/// subject of) the bindings `removed` picks, when they are all of the tenant's whole-tenant
/// owner bindings whose subject is active. A tenant that has an owner keeps one.
pub(super) fn keeps_an_owner(
    t: &Tables<'_>,
    tenant: &str,
    removed: impl Fn(&BindingRecord) -> bool,
) -> Result<(), Stop> {
    let owners = t.bindings.under(&tenant_prefix(tenant), |b| b.role == "owner" && b.scope.is_none())?;
    let (mut active, mut removed_active) = (0usize, 0usize);
    for b in &owners {
        if !subject_is_active(t, tenant, &b.subject)? {
            continue;
        }
        active += 1;
        if removed(b) {
            removed_active += 1;
        }
    }
    if active > 0 && removed_active == active {
        return Err(Rejection::LastOwner { tenant: tenant.to_string() }.into());
    }
    Ok(())
}

/// Whether a binding's subject (`client:{id}` or `user:{id}`) exists and is not disabled.
fn subject_is_active(t: &Tables<'_>, tenant: &str, subject: &str) -> Result<bool, StoreError> {
    if let Some(id) = subject.strip_prefix("client:") {
        let client = t.clients.get(&crate::model::client::client_key(tenant, id))?;
        return Ok(client.is_some_and(|c| c.status == ClientStatus::Active));
    }
    if let Some(id) = subject.strip_prefix("user:") {
        let user = t.users.get(&crate::model::user::user_key(tenant, id))?;
        return Ok(user.is_some_and(|u| u.status == UserStatus::Active));
    }
    Ok(false)
}
