//! Role bindings: a subject holds a role template in a tenant, optionally scoped.

use gatehouse_storage::model::{BindingRecord, ROLE_TEMPLATES};
use gatehouse_storage::{Applied, Command, Rejection};

use crate::app::{AppState, NodeWriteError};
use crate::idm::roles::Grantor;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    #[error("invalid binding: {0}: {1}")]
    Invalid(String, String),
    #[error("{0}")]
    Forbidden(String),
    /// The body names a subject, role or organization that is not there.
    #[error("{field}: {detail}")]
    UnknownReference { field: &'static str, detail: String },
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
}

/// Checks the input before anything is proposed. Subjects are `client:{id}` or `user:{id}`.
pub fn validate(subject: &str, role: &str, scope: Option<&str>) -> Result<(), BindingError> {
    let invalid = |f: &str, m: &str| Err(BindingError::Invalid(f.into(), m.into()));
    match subject.strip_prefix("client:").or_else(|| subject.strip_prefix("user:")) {
        Some(id) if !id.is_empty() && id.len() <= 128 && !id.contains('/') => {}
        _ => return invalid("subject", "must be client:{client_id} or user:{user_id}"),
    }
    let name_ok = role.len() <= 63
        && role.starts_with(|c: char| c.is_ascii_lowercase())
        && role.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !name_ok {
        return invalid("role", "must be a role name: a template (owner, admin, member, viewer) or a tenant role");
    }
    if let Some(s) = scope {
        let ok = s.split_once(':').is_some_and(|(kind, id)| {
            !kind.is_empty() && !id.is_empty() && s.len() <= 200 && !s.chars().any(super::is_blank_or_control)
        });
        if !ok {
            return invalid("scope", "must look like kind:id, such as org:42");
        }
    }
    Ok(())
}

pub async fn create(
    app: &AppState,
    tenant: &str,
    subject: &str,
    role: &str,
    scope: Option<&str>,
    grantor: &Grantor,
    actor: &str,
) -> Result<BindingRecord, BindingError> {
    validate(subject, role, scope)?;
    // Refused before proposing when the subject is plainly absent; `apply` checks again.
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let reader = app.store.read().map_err(unavailable)?;
    if let Some(client_id) = subject.strip_prefix("client:") {
        if reader.client(tenant, client_id).map_err(unavailable)?.is_none() {
            return Err(unknown_reference(Rejection::UnknownClient {
                tenant: tenant.into(),
                client_id: client_id.into(),
            }));
        }
    } else if let Some(user_id) = subject.strip_prefix("user:") {
        if reader.user(tenant, user_id).map_err(unavailable)?.is_none() {
            return Err(unknown_reference(Rejection::UnknownUser { tenant: tenant.into(), id: user_id.into() }));
        }
    }
    if !ROLE_TEMPLATES.contains(&role) && reader.role(tenant, role).map_err(unavailable)?.is_none() {
        return Err(unknown_reference(Rejection::UnknownRole { role: role.into() }));
    }
    grantor.may_grant(app, tenant, role).map_err(unavailable)?.map_err(BindingError::Forbidden)?;
    if let Some(org) = scope.and_then(|s| s.strip_prefix("org:")) {
        if reader.organization(tenant, org).map_err(unavailable)?.is_none() {
            return Err(unknown_reference(Rejection::UnknownOrganization { tenant: tenant.into(), id: org.into() }));
        }
    }
    drop(reader);
    let now_ms = app.clock.now_ms();
    let binding = BindingRecord {
        v: 1,
        tenant: tenant.to_string(),
        id: crate::clock::random_id("b-"),
        subject: subject.to_string(),
        role: role.to_string(),
        scope: scope.map(str::to_string),
        created_at_ms: now_ms,
    };
    match app.propose(actor, Command::CreateBinding(binding.clone())).await {
        Ok(Applied::BindingCreated { .. }) => Ok(binding),
        Ok(other) => Err(super::unexpected(other).into()),
        // Gone between the check above and the apply: still a reference to something absent.
        Err(crate::app::ProposeError::Refused(r)) => Err(unknown_reference(r)),
        Err(e) => Err(e.into()),
    }
}

/// A refusal naming something the body referred to becomes an unknown reference, with its
/// field; any other refusal stays one.
fn unknown_reference(r: Rejection) -> BindingError {
    let (field, detail) = match &r {
        Rejection::UnknownClient { client_id, .. } => {
            ("subject", format!("there is no client {client_id:?} in this tenant"))
        }
        Rejection::UnknownUser { id, .. } => ("subject", format!("there is no user {id:?} in this tenant")),
        Rejection::UnknownRole { role } => ("role", format!("there is no role {role:?} in this tenant")),
        Rejection::UnknownOrganization { id, .. } => {
            ("scope", format!("there is no organization {id:?} in this tenant"))
        }
        _ => return BindingError::Refused(r),
    };
    BindingError::UnknownReference { field, detail }
}

/// Removes a binding; the caller must be able to grant its role (so only an owner removes an
/// owner's binding), and `apply` refuses to remove a tenant's last owner.
pub async fn delete(
    app: &AppState,
    tenant: &str,
    id: &str,
    grantor: &Grantor,
    actor: &str,
) -> Result<(), BindingError> {
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let binding = app.store.read().and_then(|r| r.binding(tenant, id)).map_err(unavailable)?;
    let Some(binding) = binding else {
        return Err(BindingError::Refused(Rejection::UnknownBinding { tenant: tenant.into(), id: id.into() }));
    };
    grantor.may_grant(app, tenant, &binding.role).map_err(unavailable)?.map_err(BindingError::Forbidden)?;
    let command = Command::DeleteBinding { tenant: tenant.to_string(), id: id.to_string() };
    match app.propose(actor, command).await? {
        Applied::BindingDeleted { .. } => Ok(()),
        other => Err(super::unexpected(other).into()),
    }
}
