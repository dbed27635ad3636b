//! Tenants: creating one (its data key and first ES256 and RS256 keys) and listing them.

use gatehouse_storage::model::tenant::{is_valid_tenant_id, RESERVED_TENANT_IDS};
use gatehouse_storage::model::{SigningAlg, TenantRecord, TenantStatus};
use gatehouse_storage::{Applied, Command, NewTenant, Rejection};

use crate::app::{AppState, NodeWriteError, ProposeError};
use crate::crypto::keys::{KeyError, KeyMaterial};
use crate::crypto::SecretCipher;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
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
    #[error("key generation failed: {0}")]
    Task(String),
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
            cors_origins: Vec::new(),
            require_mfa: false,
        },
        data_key,
        signing_keys,
    })
}

/// Checks a tenant id before anything is generated or proposed.
pub fn validate_new_id(id: &str) -> Result<(), TenantError> {
    if !is_valid_tenant_id(id) {
        return Err(TenantError::Invalid {
            field: "id",
            why: Rejection::InvalidTenantId { id: id.into() }.to_string(),
        });
    }
    if RESERVED_TENANT_IDS.contains(&id) {
        return Err(TenantError::Reserved(Rejection::ReservedTenantId { id: id.into() }.to_string()));
    }
    Ok(())
}

fn display_name_ok(name: &str) -> Result<(), TenantError> {
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        let why = "display name must be at most 200 characters without control characters".into();
        return Err(TenantError::Invalid { field: "display_name", why });
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
        .map_err(|e| TenantError::Task(e.to_string()))??;
    let tenant = new.tenant.clone();
    match app.propose(actor, Command::CreateTenant(new)).await? {
        Applied::TenantCreated { .. } => Ok(tenant),
        other => Err(super::unexpected(other).into()),
    }
}

/// Origins allowed to call a tenant's sign-in API with credentials: at most 32, each an exact
/// `https://host[:port]` (or `http://localhost[:port]` for development), never `*`. Lowercased.
pub fn cors_origins_ok(list: &[String]) -> Result<Vec<String>, TenantError> {
    if list.len() > 32 {
        return Err(TenantError::Invalid { field: "cors_origins", why: "at most 32".into() });
    }
    let mut out = Vec::new();
    for origin in list {
        let o = origin.trim().to_ascii_lowercase();
        let parsed = o.parse::<poem::http::Uri>().ok();
        let exact = parsed.as_ref().is_some_and(|u| {
            let secure =
                u.scheme_str() == Some("https") || (u.scheme_str() == Some("http") && u.host() == Some("localhost"));
            let bare =
                u.path_and_query().is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/") && !o.ends_with('/');
            secure && bare && u.host().is_some_and(|h| !h.is_empty() && !h.contains('*')) && !o.contains('@')
        });
        if !exact || o.len() > 200 {
            let why = format!("{origin:?} is not an origin such as https://app.example.com");
            return Err(TenantError::Invalid { field: "cors_origins", why });
        }
        if !out.contains(&o) {
            out.push(o);
        }
    }
    Ok(out)
}

/// What to change about a tenant; `None` keeps a setting.
#[derive(Debug, Default)]
pub struct TenantChange<'a> {
    pub display_name: Option<&'a str>,
    pub disabled: Option<bool>,
    pub self_registration: Option<bool>,
    pub cors_origins: Option<&'a [String]>,
    pub require_mfa: Option<bool>,
}

/// Changes a tenant's settings. The `system` tenant cannot be disabled: its issuer is how
/// platform admins sign in.
pub async fn update(
    app: &AppState,
    actor: &str,
    current: &TenantRecord,
    change: TenantChange<'_>,
) -> Result<TenantRecord, TenantError> {
    let TenantChange { display_name, disabled, self_registration, cors_origins, require_mfa } = change;
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
    let cors_origins = match cors_origins {
        Some(list) => Some(cors_origins_ok(list)?),
        None => None,
    };
    if current.id == "system" && cors_origins.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(TenantError::Protected("the system tenant has no end-user sign-in to share".into()));
    }
    let command = Command::UpdateTenant {
        id: current.id.clone(),
        display_name: display_name.clone(),
        status,
        self_registration,
        cors_origins: cors_origins.clone(),
        require_mfa,
    };
    match app.propose(actor, command).await? {
        Applied::TenantUpdated { .. } => Ok(TenantRecord {
            display_name,
            status,
            self_registration,
            cors_origins: cors_origins.unwrap_or_else(|| current.cors_origins.clone()),
            require_mfa: require_mfa.unwrap_or(current.require_mfa),
            ..current.clone()
        }),
        other => Err(super::unexpected(other).into()),
    }
}

/// Deletes a tenant with everything it holds; `system` and `default` are refused.
pub async fn delete(app: &AppState, actor: &str, id: &str) -> Result<(), TenantError> {
    let command = Command::DeleteTenant { id: id.to_string() };
    match app.propose(actor, command).await {
        Ok(Applied::TenantDeleted { .. }) => Ok(()),
        Ok(other) => Err(super::unexpected(other).into()),
        Err(ProposeError::Refused(Rejection::TenantProtected { id })) => {
            Err(TenantError::Protected(format!("tenant {id:?} belongs to the appliance and cannot be deleted")))
        }
        Err(e) => Err(e.into()),
    }
}
