//! Role bindings: a subject holds a role template in a tenant, optionally scoped.

use gatehouse_storage::model::{BindingRecord, ROLE_TEMPLATES};
use gatehouse_storage::{Applied, Command, Outcome, Proposal, Rejection};

use crate::app::{AppState, NodeWriteError};
use crate::idm::roles::Grantor;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    #[error("invalid binding: {0}: {1}")]
    Invalid(String, String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
}

/// Checks the input before anything is proposed. Subjects are `client:{id}` or `user:{id}`.
pub fn validate(subject: &str, role: &str, scope: Option<&str>) -> Result<(), BindingError> {
    let invalid = |f: &str, m: &str| Err(BindingError::Invalid(f.into(), m.into()));
    match subject.strip_prefix("client:").or_else(|| subject.strip_prefix("user:")) {
        Some(id) if !id.is_empty() && id.len() <= 128 => {}
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
            let client_id = client_id.into();
            return Err(BindingError::Refused(Rejection::UnknownClient { tenant: tenant.into(), client_id }));
        }
    } else if let Some(user_id) = subject.strip_prefix("user:") {
        if reader.user(tenant, user_id).map_err(unavailable)?.is_none() {
            return Err(BindingError::Refused(Rejection::UnknownUser { tenant: tenant.into(), id: user_id.into() }));
        }
    }
    if !ROLE_TEMPLATES.contains(&role) && reader.role(tenant, role).map_err(unavailable)?.is_none() {
        return Err(BindingError::Refused(Rejection::UnknownRole { role: role.into() }));
    }
    grantor.may_grant(app, tenant, role).map_err(unavailable)?.map_err(BindingError::Forbidden)?;
    if let Some(org) = scope.and_then(|s| s.strip_prefix("org:")) {
        if reader.organization(tenant, org).map_err(unavailable)?.is_none() {
            return Err(BindingError::Refused(Rejection::UnknownOrganization {
                tenant: tenant.into(),
                id: org.into(),
            }));
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
    let proposal = Proposal {
        origin: None,
        at_ms: now_ms,
        actor: actor.to_string(),
        command: Command::CreateBinding(binding.clone()),
    };
    match app.write(proposal).await? {
        Outcome::Applied(Applied::BindingCreated { .. }) => Ok(binding),
        Outcome::Refused(r) => Err(BindingError::Refused(r)),
        other => Err(BindingError::Write(NodeWriteError::Unavailable(format!("unexpected outcome {other:?}")))),
    }
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
    match app.write(Proposal { origin: None, at_ms: app.clock.now_ms(), actor: actor.to_string(), command }).await? {
        Outcome::Applied(Applied::BindingDeleted { .. }) => Ok(()),
        Outcome::Refused(r) => Err(BindingError::Refused(r)),
        other => Err(BindingError::Write(NodeWriteError::Unavailable(format!("unexpected outcome {other:?}")))),
    }
}
