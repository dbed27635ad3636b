//! Tenants: creating one (its data key and first ES256 and RS256 keys) and listing them.

use gatehouse_storage::model::tenant::{is_valid_tenant_id, RESERVED_TENANT_IDS};
use gatehouse_storage::model::{SigningAlg, TenantRecord, TenantStatus};
use gatehouse_storage::{Applied, Command, NewTenant, Outcome, Proposal, Rejection};

use crate::app::{AppState, NodeWriteError};
use crate::crypto::keys::{KeyError, KeyMaterial};
use crate::crypto::SecretCipher;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    #[error("{0}")]
    Invalid(String),
    /// A well-formed id that is reserved for the appliance.
    #[error("{0}")]
    Reserved(String),
    /// A change the tenant's own rules forbid (the `system` tenant's).
    #[error("{0}")]
    Protected(String),
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
}

/// Builds everything a new tenant needs; nothing is stored until the command is applied.
pub fn new_tenant(
    cipher: &SecretCipher,
    id: &str,
    display_name: &str,
    self_registration: bool,
    now_ms: i64,
) -> Result<NewTenant, KeyError> {
    let data_key_id = crate::clock::random_id("dk-");
    let data_key = cipher.new_data_key(&data_key_id, &format!("tenant:{id}"), now_ms);
    let mut signing_keys = Vec::new();
    for alg in [SigningAlg::ES256, SigningAlg::RS256] {
        signing_keys.push(KeyMaterial::generate(alg)?.into_record(cipher, id, &data_key_id, now_ms, now_ms)?);
    }
    Ok(NewTenant {
        tenant: TenantRecord {
            v: 1,
            id: id.to_string(),
            display_name: display_name.to_string(),
            status: TenantStatus::Active,
            self_registration,
            data_key_id,
            created_at_ms: now_ms,
        },
        data_key,
        signing_keys,
    })
}

/// Checks a tenant id before anything is generated or proposed.
pub fn validate_new_id(id: &str) -> Result<(), TenantError> {
    if !is_valid_tenant_id(id) {
        return Err(TenantError::Invalid(Rejection::InvalidTenantId { id: id.into() }.to_string()));
    }
    if RESERVED_TENANT_IDS.contains(&id) {
        return Err(TenantError::Reserved(Rejection::ReservedTenantId { id: id.into() }.to_string()));
    }
    Ok(())
}

fn display_name_ok(name: &str) -> Result<(), TenantError> {
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(TenantError::Invalid(
            "display name must be at most 200 characters without control characters".into(),
        ));
    }
    Ok(())
}

/// Creates a tenant through raft. Invalid input is refused before anything is proposed.
pub async fn create(
    app: &AppState,
    actor: &str,
    id: &str,
    display_name: Option<&str>,
) -> Result<TenantRecord, TenantError> {
    validate_new_id(id)?;
    let display_name = display_name.unwrap_or(id);
    display_name_ok(display_name)?;
    let now = app.clock.now_ms();
    let cipher = app.cipher.clone();
    let (id_owned, name_owned) = (id.to_string(), display_name.to_string());
    // Key generation is CPU-bound (RSA takes a noticeable time); keep it off the async workers.
    let new = tokio::task::spawn_blocking(move || new_tenant(&cipher, &id_owned, &name_owned, false, now))
        .await
        .map_err(|e| TenantError::Invalid(format!("key generation task failed: {e}")))??;
    let tenant = new.tenant.clone();
    let proposal = Proposal { origin: None, at_ms: now, actor: actor.to_string(), command: Command::CreateTenant(new) };
    match app.write(proposal).await? {
        Outcome::Applied(Applied::TenantCreated { .. }) => Ok(tenant),
        Outcome::Applied(other) => Err(TenantError::Invalid(format!("unexpected outcome {other:?}"))),
        Outcome::Refused(r) => Err(TenantError::Refused(r)),
    }
}

/// Changes a tenant's display name, status or self-registration. The `system` tenant cannot
/// be disabled: its issuer is how platform admins sign in.
pub async fn update(
    app: &AppState,
    actor: &str,
    current: &TenantRecord,
    display_name: Option<&str>,
    disabled: Option<bool>,
    self_registration: Option<bool>,
) -> Result<TenantRecord, TenantError> {
    let display_name = display_name.unwrap_or(&current.display_name).to_string();
    display_name_ok(&display_name)?;
    let status = match disabled {
        Some(true) => TenantStatus::Disabled,
        Some(false) => TenantStatus::Active,
        None => current.status,
    };
    if current.id == "system" && status == TenantStatus::Disabled {
        return Err(TenantError::Protected("the system tenant cannot be disabled".into()));
    }
    if current.id == "system" && self_registration == Some(true) {
        return Err(TenantError::Protected("the system tenant never allows self-registration".into()));
    }
    let self_registration = self_registration.unwrap_or(current.self_registration);
    let command =
        Command::UpdateTenant { id: current.id.clone(), display_name: display_name.clone(), status, self_registration };
    match app.write(Proposal { origin: None, at_ms: app.clock.now_ms(), actor: actor.to_string(), command }).await? {
        Outcome::Applied(Applied::TenantUpdated { .. }) => {
            Ok(TenantRecord { display_name, status, self_registration, ..current.clone() })
        }
        Outcome::Applied(other) => Err(TenantError::Invalid(format!("unexpected outcome {other:?}"))),
        Outcome::Refused(r) => Err(TenantError::Refused(r)),
    }
}

/// Deletes a tenant with everything it holds; `system` and `default` are refused.
pub async fn delete(app: &AppState, actor: &str, id: &str) -> Result<(), TenantError> {
    let command = Command::DeleteTenant { id: id.to_string() };
    match app.write(Proposal { origin: None, at_ms: app.clock.now_ms(), actor: actor.to_string(), command }).await? {
        Outcome::Applied(Applied::TenantDeleted { .. }) => Ok(()),
        Outcome::Applied(other) => Err(TenantError::Invalid(format!("unexpected outcome {other:?}"))),
        Outcome::Refused(Rejection::TenantProtected { id }) => {
            Err(TenantError::Protected(format!("tenant {id:?} belongs to the appliance and cannot be deleted")))
        }
        Outcome::Refused(r) => Err(TenantError::Refused(r)),
    }
}
