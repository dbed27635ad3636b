//! Users and organizations of a tenant: validation, password hashing (argon2id, bounded
//! concurrency), and the commands that change them.

use std::sync::LazyLock;

use gatehouse_storage::model::{MembershipRecord, OrganizationRecord, UserRecord, UserStatus};
use gatehouse_storage::{Applied, Command, HeldRoles, Rejection};
use tokio::sync::Semaphore;

use crate::app::{AppState, NodeWriteError};

/// Passwords are at most this long (the design's limit), and at least this short.
pub const MAX_PASSWORD_CHARS: usize = 256;
pub const MIN_PASSWORD_CHARS: usize = 15;
/// The shortest password where the tenant requires a second factor (SP 800-63B-4).
pub const MIN_PASSWORD_CHARS_WITH_MFA: usize = 8;

/// One argon2 hash holds 19 MiB; at most this many run at once (one per core), so a flood of
/// sign-ins or password changes cannot exhaust memory or starve the async workers.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(hashing_slots()));
fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Requests waiting for a hashing slot; past this many, one is refused at once (R19).
static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How many may wait per slot, and how long one waits before it is refused.
const WAITING_PER_SLOT: usize = 4;
const WAIT_AT_MOST: std::time::Duration = std::time::Duration::from_secs(2);

/// A hashing slot, or `Busy` at once when too many wait already (or after waiting too long).
async fn hashing_slot() -> Result<tokio::sync::SemaphorePermit<'static>, UserError> {
    use std::sync::atomic::Ordering;
    if WAITING.fetch_add(1, Ordering::AcqRel) >= WAITING_PER_SLOT * hashing_slots() {
        WAITING.fetch_sub(1, Ordering::AcqRel);
        return Err(UserError::Busy);
    }
    let permit = tokio::time::timeout(WAIT_AT_MOST, HASHING.acquire()).await;
    WAITING.fetch_sub(1, Ordering::AcqRel);
    match permit {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(UserError::Hashing(e.to_string())),
        Err(_) => Err(UserError::Busy),
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    #[error("invalid input: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// Every hashing slot is taken and the queue is full: try again shortly.
    #[error("the node is busy hashing passwords; try again shortly")]
    Busy,
}

/// What a caller may set on a user.
#[derive(Debug, Clone)]
pub struct UserSpec {
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub disabled: bool,
}

fn validate(spec: &UserSpec) -> Result<(), UserError> {
    let mut errors = Vec::new();
    let u = &spec.username;
    if u.is_empty() || u.chars().count() > 128 || u.chars().any(super::is_blank_or_control) {
        errors.push(("username".to_string(), "must be 1 to 128 characters without spaces".to_string()));
    }
    if let Some(e) = &spec.email {
        let ok = e.chars().count() <= 254
            && e.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !e.chars().any(super::is_blank_or_control);
        if !ok {
            errors.push(("email".to_string(), "must be an e-mail address of at most 254 characters".to_string()));
        }
    }
    if let Some(d) = &spec.display_name {
        if d.chars().count() > 200 || d.chars().any(char::is_control) {
            errors.push(("display_name".to_string(), "must be at most 200 characters".to_string()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(UserError::Invalid(errors))
    }
}

/// The one rule for a new password, on every path (S38, S39): 15 to 256 code points after
/// NFKC where the password may be the only factor (8 where the tenant requires a second one),
/// no composition rules, and refused when zxcvbn scores it below 3 with the product, the
/// tenant and the account's name (and email) as context.
pub fn check_password(password: &str, tenant: &str, names: &[&str], with_mfa: bool) -> Result<(), UserError> {
    let password = normalize_password(password);
    let n = password.chars().count();
    let refuse = |m: String| Err(UserError::Invalid(vec![("password".into(), m)]));
    let min = if with_mfa { MIN_PASSWORD_CHARS_WITH_MFA } else { MIN_PASSWORD_CHARS };
    if !(min..=MAX_PASSWORD_CHARS).contains(&n) {
        return refuse(format!("must be {min} to {MAX_PASSWORD_CHARS} characters (any characters, spaces too)"));
    }
    let mut context = vec!["gatehouse", tenant];
    for name in names {
        context.push(name);
        if let Some((local, domain)) = name.split_once('@') {
            context.extend([local, domain]);
        }
    }
    // zxcvbn's cost grows faster than the length: the first 100 characters tell enough.
    let scored: String = password.chars().take(100).collect();
    let estimate = zxcvbn::zxcvbn(&scored, &context);
    if u8::from(estimate.score()) < 3 {
        let why = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .unwrap_or_else(|| "it is too easy to guess".to_string());
        return refuse(format!("too easy to guess ({why}): try a few unrelated words"));
    }
    Ok(())
}

/// NFKC, as every password is stored and compared (S38): the precomposed and decomposed forms
/// of a character are one password.
pub fn normalize_password(password: &str) -> zeroize::Zeroizing<String> {
    use unicode_normalization::UnicodeNormalization;
    zeroize::Zeroizing::new(password.nfkc().collect())
}

/// The argon2id parameters of new hashes, from `passwords.*`.
pub fn argon2_params(config: &crate::config::PasswordConfig) -> Result<argon2::Params, UserError> {
    argon2::Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
        .map_err(|e| UserError::Hashing(e.to_string()))
}

/// Whether a stored PHC hash was made with other parameters than `params` (so it is upgraded).
pub fn needs_rehash(hash: &str, params: &argon2::Params) -> bool {
    let Ok(parsed) = argon2::password_hash::PasswordHash::new(hash) else { return false };
    let stored = argon2::Params::try_from(&parsed);
    parsed.algorithm.as_str() != "argon2id"
        || stored
            .is_ok_and(|s| (s.m_cost(), s.t_cost(), s.p_cost()) != (params.m_cost(), params.t_cost(), params.p_cost()))
}

/// argon2id with `params` (OWASP's by default), a fresh 16-byte salt, off the async workers.
pub async fn hash_password(params: argon2::Params, password: &str) -> Result<String, UserError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let _permit = hashing_slot().await?;
    let password = normalize_password(password);
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        crate::clock::random_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| UserError::Hashing(e.to_string()))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| UserError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| UserError::Hashing(e.to_string()))?
}

/// Whether `password` matches the PHC string `hash` (its own parameters), on the same bounded
/// pool as hashing.
pub async fn verify_password(password: &str, hash: &str) -> Result<bool, UserError> {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let _permit = hashing_slot().await?;
    let (password, hash) = (normalize_password(password), hash.to_string());
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| UserError::Hashing(e.to_string()))?;
        Ok(argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| UserError::Hashing(e.to_string()))?
}

/// `value` when `applied` is what the command was expected to apply.
fn outcome<T>(applied: Applied, expected: impl FnOnce(&Applied) -> bool, value: T) -> Result<T, UserError> {
    if expected(&applied) {
        Ok(value)
    } else {
        Err(super::unexpected(applied).into())
    }
}

/// Whether `tenant` requires a second factor at every sign-in.
fn requires_mfa(app: &AppState, tenant: &str) -> Result<bool, UserError> {
    Ok(app.store.read().and_then(|r| r.tenant(tenant)).map_err(storage)?.is_some_and(|t| t.require_mfa))
}

pub async fn create(
    app: &AppState,
    tenant: &str,
    spec: UserSpec,
    password: Option<&str>,
    actor: &str,
) -> Result<UserRecord, UserError> {
    validate(&spec)?;
    if let Some(p) = password {
        let names: Vec<&str> = [Some(spec.username.as_str()), spec.email.as_deref()].into_iter().flatten().collect();
        check_password(p, tenant, &names, requires_mfa(app, tenant)?)?;
    }
    if app.store.read().and_then(|r| r.user_by_username(tenant, &spec.username)).map_err(storage)?.is_some() {
        return Err(UserError::Refused(Rejection::UsernameTaken { tenant: tenant.into(), username: spec.username }));
    }
    let password_hash = match password {
        Some(p) => Some(hash_password(argon2_params(&app.config.passwords)?, p).await?),
        None => None,
    };
    let now_ms = app.clock.now_ms();
    let user = UserRecord {
        v: 1,
        tenant: tenant.to_string(),
        id: crate::clock::random_id("u-"),
        display_name: spec.display_name.clone().unwrap_or_else(|| spec.username.clone()),
        username: spec.username,
        email: spec.email,
        status: if spec.disabled { UserStatus::Disabled } else { UserStatus::Active },
        password_hash,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        revision: 1,
        totp: None,
        email_verified: false,
        locale: None,
        avatar_sha256: None,
    };
    let command = Command::CreateUser(user.clone());
    let out = app.propose(actor, command).await?;
    outcome(out, |a| matches!(a, Applied::UserCreated { .. }), user)
}

pub async fn update(
    app: &AppState,
    current: &UserRecord,
    spec: UserSpec,
    expected_revision: u64,
    actor: &str,
    guard: Option<HeldRoles>,
) -> Result<UserRecord, UserError> {
    validate(&spec)?;
    let now_ms = app.clock.now_ms();
    let user = UserRecord {
        display_name: spec.display_name.clone().unwrap_or_else(|| spec.username.clone()),
        username: spec.username,
        email: spec.email,
        status: if spec.disabled { UserStatus::Disabled } else { UserStatus::Active },
        updated_at_ms: now_ms,
        revision: expected_revision + 1,
        ..current.clone()
    };
    let command = super::guarded(Command::UpdateUser { user: user.clone(), expected_revision }, guard);
    let out = app.propose(actor, command).await?;
    outcome(out, |a| matches!(a, Applied::UserUpdated { .. }), user)
}

pub async fn set_password(
    app: &AppState,
    tenant: &str,
    user_id: &str,
    password: &str,
    actor: &str,
    guard: Option<HeldRoles>,
) -> Result<(), UserError> {
    let user = app.store.read().and_then(|r| r.user(tenant, user_id)).map_err(storage)?;
    let names: Vec<String> =
        user.map(|u| [Some(u.username), u.email].into_iter().flatten().collect()).unwrap_or_default();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    check_password(password, tenant, &names, requires_mfa(app, tenant)?)?;
    let password_hash = hash_password(argon2_params(&app.config.passwords)?, password).await?;
    let command = Command::SetPassword { tenant: tenant.into(), user_id: user_id.into(), password_hash };
    let command = super::guarded(command, guard);
    let out = app.propose(actor, command).await?;
    outcome(out, |a| matches!(a, Applied::PasswordSet { .. }), ())
}

pub async fn delete(
    app: &AppState,
    tenant: &str,
    user_id: &str,
    actor: &str,
    guard: Option<HeldRoles>,
) -> Result<(), UserError> {
    let command = super::guarded(Command::DeleteUser { tenant: tenant.into(), user_id: user_id.into() }, guard);
    let out = app.propose(actor, command).await?;
    outcome(out, |a| matches!(a, Applied::UserDeleted { .. }), ())
}

pub async fn create_organization(
    app: &AppState,
    tenant: &str,
    name: &str,
    actor: &str,
) -> Result<OrganizationRecord, UserError> {
    let name = super::trim_ascii(name);
    if !name.chars().any(|c| !super::is_blank_or_control(c))
        || name.chars().count() > 200
        || name.chars().any(char::is_control)
    {
        return Err(UserError::Invalid(vec![("name".into(), "must be 1 to 200 characters".into())]));
    }
    let now_ms = app.clock.now_ms();
    let org = OrganizationRecord {
        v: 1,
        tenant: tenant.into(),
        id: crate::clock::random_id("o-"),
        name: name.into(),
        created_at_ms: now_ms,
    };
    let command = Command::CreateOrganization(org.clone());
    let out = app.propose(actor, command).await?;
    outcome(out, |a| matches!(a, Applied::OrganizationCreated { .. }), org)
}

pub async fn delete_organization(app: &AppState, tenant: &str, id: &str, actor: &str) -> Result<(), UserError> {
    let command = Command::DeleteOrganization { tenant: tenant.into(), id: id.into() };
    let out = app.propose(actor, command).await?;
    outcome(out, |a| matches!(a, Applied::OrganizationDeleted { .. }), ())
}

pub async fn add_member(
    app: &AppState,
    tenant: &str,
    organization_id: &str,
    user_id: &str,
    actor: &str,
) -> Result<MembershipRecord, UserError> {
    let now_ms = app.clock.now_ms();
    let m = MembershipRecord {
        v: 1,
        tenant: tenant.into(),
        organization_id: organization_id.into(),
        user_id: user_id.into(),
        created_at_ms: now_ms,
    };
    let out = app.propose(actor, Command::AddMember(m.clone())).await?;
    outcome(out, |a| matches!(a, Applied::MemberAdded { .. }), m)
}

pub async fn remove_member(
    app: &AppState,
    tenant: &str,
    organization_id: &str,
    user_id: &str,
    actor: &str,
) -> Result<(), UserError> {
    let command = Command::RemoveMember {
        tenant: tenant.into(),
        organization_id: organization_id.into(),
        user_id: user_id.into(),
    };
    let out = app.propose(actor, command).await?;
    outcome(out, |a| matches!(a, Applied::MemberRemoved { .. }), ())
}

fn storage(e: gatehouse_storage::StoreError) -> UserError {
    UserError::Write(NodeWriteError::Unavailable(e.to_string()))
}
