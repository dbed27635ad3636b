//! End-user sign-in: self-registration, password login, the session behind the cookie, logout.
//!
//! Passwords follow SP 800-63B-4 (S38): NFKC-normalised, 15 to 256 characters (the password is
//! the only factor until MFA exists), no composition rules, and refused when zxcvbn scores them
//! below 3 with the product, the tenant and the parts of the email as context (S39). A login
//! for an unknown email costs the same argon2 verify as a wrong password and gets the same
//! answer (S41). Session ids are 256 random bits, stored only as their SHA-256 (S37, S49).

use std::sync::LazyLock;

use gatehouse_storage::model::{
    BindingRecord, MembershipRecord, OrganizationRecord, SessionRecord, TenantRecord, UserRecord, UserStatus,
};
use gatehouse_storage::{Applied, Command, OwnedOrganization, Registration, Rejection};

use crate::app::{AppState, NodeWriteError, ProposeError};
use crate::idm::users::{hash_password, verify_password};

pub use crate::idm::users::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
/// A session's use is written at most this often, in parts of its idle timeout (a touch is a
/// raft write), and never more than once a second, however short the timeout.
const TOUCHES_PER_IDLE_TIMEOUT: i64 = 8;
const MIN_TOUCH_INTERVAL_MS: i64 = 1000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("invalid input: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error("this tenant does not allow self-registration")]
    RegistrationClosed,
    #[error("an account with this email exists already")]
    EmailTaken,
    /// Unknown email, wrong password or disabled user: one answer for all three (S41).
    #[error("the email or the password is not right")]
    BadCredentials,
    /// A second factor that is not right, or was used already.
    #[error("the code is not right, or was used already")]
    BadCode,
    /// An email link that names nothing, has expired or was used already.
    #[error("the link is not valid, has expired or was used already")]
    BadLink,
    /// The tenant requires a second factor and the user's is a passkey: a password or an email
    /// alone does not sign them in.
    #[error("sign in with your passkey")]
    PasskeyRequired,
    /// A passkey ceremony that is not ours, has expired, is of another kind or was finished.
    #[error("the passkey ceremony is not valid, has expired or was finished already")]
    BadCeremony,
    /// The authenticator's answer failed a relying-party check (S46, S47).
    #[error("the passkey was refused: {0}")]
    PasskeyRefused(String),
    /// This node has no relying party (its public URL has an IP address).
    #[error("passkeys are off: {0}")]
    PasskeysOff(String),
    /// The record changed between its read and the write: read it again.
    #[error("the profile changed meanwhile; read it and try again")]
    ChangedMeanwhile,
    /// An upload larger than its endpoint takes.
    #[error("the upload is too large")]
    TooLarge,
    /// No sign-in (or no sign-in waiting for a code) behind the presented cookie.
    #[error("there is no session, or it has ended")]
    NotSignedIn,
    #[error(transparent)]
    Refused(Rejection),
    #[error(transparent)]
    Write(#[from] NodeWriteError),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// Every password hashing slot is busy and the queue is full: 503 at once (R19).
    #[error("the node is busy; try again shortly")]
    Busy,
    /// This source or this account spent its budget of failed sign-ins.
    #[error("too many failed sign-ins; retry after {} s", .0.secs())]
    RateLimited(crate::app::limits::RetryAfter),
}

impl From<ProposeError> for AuthError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Refused(Rejection::UsernameTaken { .. }) => AuthError::EmailTaken,
            ProposeError::Refused(Rejection::RegistrationClosed { .. }) => AuthError::RegistrationClosed,
            ProposeError::Refused(r) => AuthError::Refused(r),
            ProposeError::Write(w) => AuthError::Write(w),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> AuthError {
    AuthError::Invalid(vec![(field.into(), message.into())])
}

fn hashing_error(e: crate::idm::users::UserError) -> AuthError {
    match e {
        crate::idm::users::UserError::Busy => AuthError::Busy,
        other => AuthError::Hashing(other.to_string()),
    }
}

/// A signed-in browser: the cookie's value (shown only here) and what it stands for.
pub struct SignedIn {
    pub session_id: String,
    pub session: SessionRecord,
    pub user: UserRecord,
}

/// The email as the account's name: trimmed and lowercased; a plausible address or refused.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let plausible = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && email.matches('@').count() == 1
        && !email.chars().any(crate::idm::is_blank_or_control);
    if plausible {
        Ok(email)
    } else {
        Err(invalid("email", "must be an email address"))
    }
}

pub use crate::idm::users::normalize_password;

/// Checks a new password by the one rule every path shares (`users::check_password`).
pub fn check_new_password(password: &str, tenant: &TenantRecord, email: &str) -> Result<(), AuthError> {
    crate::idm::users::check_password(password, &tenant.id, &[email], tenant.require_mfa).map_err(|e| match e {
        crate::idm::users::UserError::Invalid(errors) => AuthError::Invalid(errors),
        other => AuthError::Hashing(other.to_string()),
    })
}

/// What a sign-in without a passkey must still do (S44): with an authenticator, wait for its
/// code; in a tenant that requires a second factor, without one, serve only adding one.
pub(crate) fn second_step(tenant: &TenantRecord, user: &UserRecord, session: &mut SessionRecord) {
    session.pending_mfa = user.totp.as_ref().is_some_and(|t| t.confirmed);
    session.setup_only = !session.pending_mfa && tenant.require_mfa;
}

/// `apply` refused the session for its second step (its state differed from this node's read):
/// the session takes the step `apply` asked for; whether to propose it again.
pub(crate) fn retry_second_step(refusal: &Rejection, session: &mut SessionRecord) -> bool {
    match refusal {
        Rejection::MfaRequired => {
            (session.pending_mfa, session.setup_only) = (true, false);
            true
        }
        Rejection::MfaSetupRequired if !session.pending_mfa => {
            session.setup_only = true;
            true
        }
        _ => false,
    }
}

/// A new session id (the cookie value) and the digest it is stored under.
pub(crate) fn new_session_id() -> (String, String) {
    let mut raw = [0u8; 32];
    crate::clock::random_bytes(&mut raw);
    let id = crate::crypto::b64url(&raw);
    let digest = session_digest(&id);
    (id, digest)
}

/// The SHA-256 of a presented session id: a truncated or altered id digests to nothing stored.
pub fn session_digest(id: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes()))
}

/// A new session record with the configured timeouts, starting now.
pub(crate) fn session_for(
    app: &AppState,
    tenant: &str,
    user_id: &str,
    method: &str,
    id_sha256: String,
) -> SessionRecord {
    let now_ms = app.clock.now_ms();
    let secs_ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    SessionRecord {
        v: 1,
        tenant: tenant.to_string(),
        id_sha256,
        user_id: user_id.to_string(),
        method: method.to_string(),
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(secs_ms(app.config.sessions.absolute_timeout_secs)),
        idle_timeout_ms: secs_ms(app.config.sessions.idle_timeout_secs),
        last_seen_ms: now_ms,
        pending_mfa: false,
        setup_only: false,
    }
}

/// What `register` is given.
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub display_name: Option<&'a str>,
    pub organization_name: Option<&'a str>,
}

/// Creates the user, an organization they own when named, and their first session.
pub async fn register(app: &AppState, tenant: &TenantRecord, account: NewAccount<'_>) -> Result<SignedIn, AuthError> {
    let started = std::time::Instant::now();
    let result = create_account(app, tenant, account).await;
    record_attempt(app, &tenant.id, "register", started, &result);
    result
}

async fn create_account(app: &AppState, tenant: &TenantRecord, account: NewAccount<'_>) -> Result<SignedIn, AuthError> {
    if !tenant.self_registration || tenant.id == "system" {
        return Err(AuthError::RegistrationClosed);
    }
    let source = crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip());
    app.limits.admit_registration(source).map_err(AuthError::RateLimited)?;
    let email = normalize_email(account.email)?;
    let password = normalize_password(account.password);
    check_new_password(&password, tenant, &email)?;
    let display_name = crate::idm::trim_ascii(account.display_name.unwrap_or(&email)).to_string();
    if display_name.is_empty() || display_name.chars().count() > 200 || display_name.chars().any(char::is_control) {
        return Err(invalid("display_name", "must be 1 to 200 characters without control characters"));
    }
    let org_name = account.organization_name.map(crate::idm::trim_ascii);
    if org_name.is_some_and(|n| n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control)) {
        return Err(invalid("organization_name", "must be 1 to 200 characters without control characters"));
    }
    let password_hash = hash_new_password(app, &password).await?;
    let now_ms = app.clock.now_ms();
    let user = UserRecord {
        v: 1,
        tenant: tenant.id.clone(),
        id: crate::clock::random_id("u-"),
        username: email.clone(),
        email: Some(email),
        display_name,
        status: UserStatus::Active,
        password_hash: Some(password_hash),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        revision: 1,
        totp: None,
        email_verified: false,
        locale: None,
        avatar_sha256: None,
    };
    let organization = org_name.map(|name| {
        let id = crate::clock::random_id("o-");
        OwnedOrganization {
            organization: OrganizationRecord {
                v: 1,
                tenant: tenant.id.clone(),
                id: id.clone(),
                name: name.to_string(),
                created_at_ms: now_ms,
            },
            membership: MembershipRecord {
                v: 1,
                tenant: tenant.id.clone(),
                organization_id: id.clone(),
                user_id: user.id.clone(),
                created_at_ms: now_ms,
            },
            binding: BindingRecord {
                v: 1,
                tenant: tenant.id.clone(),
                id: crate::clock::random_id("b-"),
                subject: format!("user:{}", user.id),
                role: "owner".into(),
                scope: Some(format!("org:{id}")),
                created_at_ms: now_ms,
            },
        }
    });
    let (session_id, digest) = new_session_id();
    let mut session = session_for(app, &tenant.id, &user.id, "register", digest);
    second_step(tenant, &user, &mut session);
    let registration = Registration { user: user.clone(), session: session.clone(), organization };
    match app.propose(&format!("user:{}", user.id), Command::Register(Box::new(registration))).await? {
        Applied::Registered { .. } => {
            if let Some(email) = &user.email {
                app.mail.request_verification(&tenant.id, email);
            }
            Ok(SignedIn { session_id, session, user })
        }
        other => Err(super::unexpected(other).into()),
    }
}

/// An argon2id hash of a new (checked) password with the configured parameters, on the
/// bounded hashing pool.
pub(crate) async fn hash_new_password(app: &AppState, password: &str) -> Result<String, AuthError> {
    let params = crate::idm::users::argon2_params(&app.config.passwords).map_err(hashing_error)?;
    hash_password(params, password).await.map_err(hashing_error)
}

/// A hash to verify against when the email names nobody, so both cost one argon2 verify
/// with the configured parameters (which the process never changes).
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn dummy_hash(config: &crate::config::PasswordConfig) -> String {
    DUMMY_HASH
        .get_or_init(|| {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let salt = SaltString::encode_b64(&[7u8; 16]).expect("a valid salt");
            let params = crate::idm::users::argon2_params(config)
                .unwrap_or_else(|_| argon2::Params::new(19 * 1024, 2, 1, None).expect("valid parameters"));
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"no such account, no such password", &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// After a good password, a hash made with other parameters is replaced by one with the
/// configured ones (S42). A failure here costs the sign-in nothing: it is tried again next time.
async fn upgrade_hash(app: &AppState, user: &UserRecord, password: &str) {
    let Some(previous) = user.password_hash.clone() else { return };
    let Ok(params) = crate::idm::users::argon2_params(&app.config.passwords) else { return };
    if !crate::idm::users::needs_rehash(&previous, &params) {
        return;
    }
    let password_hash = match hash_password(params, password).await {
        Ok(h) => h,
        Err(e) => return tracing::debug!("a password hash was not upgraded: {e}"),
    };
    let command =
        Command::RehashPassword { tenant: user.tenant.clone(), user_id: user.id.clone(), previous, password_hash };
    if let Err(e) = app.propose(&format!("user:{}", user.id), command).await {
        tracing::debug!("a password hash was not upgraded: {e}");
    }
}

/// Counts a sign-in attempt by tenant, method and result, and how long it took.
pub(crate) fn record_attempt<T>(
    app: &AppState,
    tenant: &str,
    method: &str,
    started: std::time::Instant,
    r: &Result<T, AuthError>,
) {
    let result = match r {
        Ok(_) => "ok",
        Err(AuthError::BadCredentials | AuthError::BadCode | AuthError::BadLink | AuthError::PasskeyRefused(_)) => {
            "invalid_credentials"
        }
        Err(AuthError::RateLimited(_)) => "rate_limited",
        Err(AuthError::Busy) => "busy",
        Err(AuthError::Invalid(_)) => "invalid_input",
        Err(AuthError::EmailTaken) => "email_taken",
        Err(AuthError::RegistrationClosed) => "closed",
        Err(_) => "error",
    };
    let labels =
        crate::metrics::LoginLabels { tenant: tenant.to_string(), method: method.to_string(), result: result.into() };
    app.metrics.logins.get_or_create(&labels).inc();
    app.metrics.login_duration.observe(started.elapsed().as_secs_f64());
}

/// The signed-in user gives their password again (S48, S50), within the account's lockout
/// budget: `BadCredentials` when it is not right.
pub(crate) async fn reauthenticate(app: &AppState, user: &UserRecord, password: &str) -> Result<(), AuthError> {
    let attempt = admit_attempt(app, &user.tenant, &user.username).await?;
    let password = normalize_password(password);
    let hash = user.password_hash.clone().unwrap_or_else(|| dummy_hash(&app.config.passwords));
    let long = password.chars().count() > MAX_PASSWORD_CHARS;
    let matches = !long && verify_password(&password, &hash).await.map_err(hashing_error)?;
    if !matches || user.password_hash.is_none() {
        let source = crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip());
        attempt.failed(app.clock.now_ms());
        app.limits.failed(source, None);
        return Err(AuthError::BadCredentials);
    }
    forget_failures(app, attempt, &user.tenant, &user.username).await;
    Ok(())
}

/// Admits one password check of account `name` (a normalized email) within its lockout budget.
pub(crate) async fn admit_attempt<'a>(
    app: &'a AppState,
    tenant: &str,
    name: &str,
) -> Result<crate::app::lockout::Attempt<'a>, AuthError> {
    use crate::app::lockout::{account_digest, Refusal};
    // Each node checks its share of the account's budget (see `app::lockout`).
    let voters = || app.raft.status().voters.len();
    let now = || app.clock.now_ms();
    match app.lockout.admit_waiting(&app.store, tenant, &account_digest(name), &now, &voters).await {
        Ok(attempt) => Ok(attempt),
        Err(Refusal::Held(wait)) => Err(AuthError::RateLimited(wait)),
        Err(Refusal::ShareInUse) => {
            Err(AuthError::RateLimited(crate::app::limits::RetryAfter(std::time::Duration::from_secs(1))))
        }
        Err(Refusal::Busy) => Err(AuthError::Busy),
        Err(Refusal::Store(e)) => Err(NodeWriteError::Unavailable(e.to_string()).into()),
    }
}

/// After a right password, the account's stored failures (if it has any) are forgotten. A
/// failure here costs the sign-in nothing: the failures then age out of their window.
pub(crate) async fn forget_failures(
    app: &AppState,
    attempt: crate::app::lockout::Attempt<'_>,
    tenant: &str,
    name: &str,
) {
    if attempt.succeeded() {
        let account_sha256 = crate::app::lockout::account_digest(name);
        let command = Command::ClearLoginFailures { tenant: tenant.to_string(), account_sha256 };
        if let Err(e) = app.propose("anonymous", command).await {
            tracing::debug!("failed sign-ins were not cleared: {e}");
        }
    }
}

/// Signs a user in with their email and password: a new session on success.
pub async fn login(app: &AppState, tenant: &TenantRecord, email: &str, password: &str) -> Result<SignedIn, AuthError> {
    let started = std::time::Instant::now();
    let result = password_login(app, tenant, email, password).await;
    record_attempt(app, &tenant.id, "password", started, &result);
    result
}

async fn password_login(
    app: &AppState,
    tenant: &TenantRecord,
    email: &str,
    password: &str,
) -> Result<SignedIn, AuthError> {
    let email = normalize_email(email).map_err(|_| AuthError::BadCredentials)?;
    // The account's failures are counted in raft (S40), a known and an unknown email alike,
    // so a 429 tells nobody which exists (S41); the source's budget is the node's own.
    let attempt = admit_attempt(app, &tenant.id, &email).await?;
    let password = normalize_password(password);
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let user = app.store.read().and_then(|r| r.user_by_username(&tenant.id, &email)).map_err(unavailable)?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone()).unwrap_or_else(|| dummy_hash(&app.config.passwords));
    let long = password.chars().count() > MAX_PASSWORD_CHARS;
    let known = user.is_some();
    let matches = !long && verify_password(&password, &hash).await.map_err(hashing_error)?;
    let user = match user {
        Some(u) if matches && u.status == UserStatus::Active && u.password_hash.is_some() => u,
        _ => {
            let source = crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip());
            attempt.failed(app.clock.now_ms());
            app.limits.failed(source, None);
            // Made-up emails fold into one audit entry, as made-up client ids do.
            let named = if known { email.as_str() } else { "(unknown)" };
            app.auth_failures.record(app.clock.now_ms(), &tenant.id, "login", named, source, "invalid_credentials");
            return Err(AuthError::BadCredentials);
        }
    };
    upgrade_hash(app, &user, &password).await;
    let (session_id, digest) = new_session_id();
    let mut session = session_for(app, &tenant.id, &user.id, "password", digest);
    second_step(tenant, &user, &mut session);
    let mut started = app.propose(&format!("user:{}", user.id), Command::StartSession(session.clone())).await;
    if let Err(ProposeError::Refused(r)) = &started {
        // Decided again by `apply` on the state it applies to; once more with its answer.
        if retry_second_step(r, &mut session) {
            started = app.propose(&format!("user:{}", user.id), Command::StartSession(session.clone())).await;
        }
    }
    match started {
        Ok(Applied::SessionStarted { .. }) => {
            // A sign-in still waiting for its code forgets nothing yet: the failures it shares
            // with wrong codes go only once the code completes it (`mfa::challenge`).
            if !session.pending_mfa {
                forget_failures(app, attempt, &tenant.id, &email).await;
            }
            Ok(SignedIn { session_id, session, user })
        }
        Err(ProposeError::Refused(Rejection::PasskeyRequired)) => Err(AuthError::PasskeyRequired),
        // Disabled between the read and the apply: the same answer as a wrong password.
        Err(ProposeError::Refused(Rejection::UserDisabled { .. } | Rejection::UnknownUser { .. })) => {
            Err(AuthError::BadCredentials)
        }
        Ok(other) => Err(super::unexpected(other).into()),
        Err(e) => Err(e.into()),
    }
}

/// The live session behind a presented id, and its user; its use is recorded now and then.
pub async fn current(
    app: &AppState,
    tenant: &str,
    session_id: &str,
) -> Result<Option<(SessionRecord, UserRecord)>, AuthError> {
    let digest = session_digest(session_id);
    let now_ms = app.clock.now_ms();
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let reader = app.store.read().map_err(unavailable)?;
    let Some(session) = reader.session(tenant, &digest).map_err(unavailable)? else { return Ok(None) };
    // A sign-in waiting for its second factor, or one that may only add one, is not signed in.
    if !session.live_at(now_ms) || session.pending_mfa || session.setup_only {
        return Ok(None);
    }
    let user = match reader.user(tenant, &session.user_id).map_err(unavailable)? {
        Some(u) if u.status == UserStatus::Active => u,
        _ => return Ok(None),
    };
    drop(reader);
    let touch_every_ms = (session.idle_timeout_ms / TOUCHES_PER_IDLE_TIMEOUT).max(MIN_TOUCH_INTERVAL_MS);
    if now_ms - session.last_seen_ms >= touch_every_ms {
        if let Some(_touching) = Touching::begin(&digest) {
            let command = Command::TouchSession { tenant: tenant.to_string(), id_sha256: digest.clone() };
            if let Err(e) = app.propose(&format!("user:{}", user.id), command).await {
                tracing::debug!("a session touch was not recorded: {e}");
            }
        }
    }
    Ok(Some((session, user)))
}

/// The live session behind a presented id that `wanted` accepts, and its active user.
fn live_session(
    app: &AppState,
    tenant: &str,
    session_id: &str,
    wanted: impl Fn(&SessionRecord) -> bool,
) -> Result<Option<(SessionRecord, UserRecord)>, AuthError> {
    let digest = session_digest(session_id);
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let reader = app.store.read().map_err(unavailable)?;
    let Some(session) = reader.session(tenant, &digest).map_err(unavailable)? else { return Ok(None) };
    if !session.live_at(app.clock.now_ms()) || !wanted(&session) {
        return Ok(None);
    }
    match reader.user(tenant, &session.user_id).map_err(unavailable)? {
        Some(u) if u.status == UserStatus::Active => Ok(Some((session, u))),
        _ => Ok(None),
    }
}

/// The live session behind a presented id that may add a sign-in factor (a full one, or a
/// setup-only one), and its user; never one still waiting for its code.
pub fn for_factor_change(
    app: &AppState,
    tenant: &str,
    session_id: &str,
) -> Result<Option<(SessionRecord, UserRecord)>, AuthError> {
    live_session(app, tenant, session_id, |s| !s.pending_mfa)
}

/// The live sign-in behind a presented id that waits for its second factor, and its user.
pub fn pending(
    app: &AppState,
    tenant: &str,
    session_id: &str,
) -> Result<Option<(SessionRecord, UserRecord)>, AuthError> {
    live_session(app, tenant, session_id, |s| s.pending_mfa)
}

/// Sessions whose touch is being written: one at a time each, and a bounded set, so parallel
/// requests with one cookie make one write.
static TOUCHING: LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> = LazyLock::new(Default::default);
const MAX_TOUCHING: usize = 4096;

struct Touching(String);

impl Touching {
    fn begin(digest: &str) -> Option<Touching> {
        let mut set = TOUCHING.lock().unwrap_or_else(|p| p.into_inner());
        (set.len() < MAX_TOUCHING && set.insert(digest.to_string())).then(|| Touching(digest.to_string()))
    }
}

impl Drop for Touching {
    fn drop(&mut self) {
        TOUCHING.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// Ends the session behind a presented id. An id that names no session costs nothing: no
/// write is made for a made-up cookie.
pub async fn logout(app: &AppState, tenant: &str, session_id: &str) -> Result<(), AuthError> {
    let digest = session_digest(session_id);
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let Some(session) = app.store.read().and_then(|r| r.session(tenant, &digest)).map_err(unavailable)? else {
        return Ok(());
    };
    let command = Command::EndSession { tenant: tenant.to_string(), id_sha256: digest };
    app.propose(&format!("user:{}", session.user_id), command).await?;
    Ok(())
}

/// The signed-in user's live sessions, and which of them is the caller's.
pub async fn sessions(
    app: &AppState,
    tenant: &str,
    session_id: &str,
) -> Result<Option<(SessionRecord, Vec<SessionRecord>)>, AuthError> {
    let Some((current, user)) = current(app, tenant, session_id).await? else { return Ok(None) };
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let now_ms = app.clock.now_ms();
    let mut all = app.store.read().and_then(|r| r.sessions_of(tenant, &user.id)).map_err(unavailable)?;
    all.retain(|s| s.live_at(now_ms));
    all.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
    Ok(Some((current, all)))
}

/// Ends one of the signed-in user's sessions, named by its digest: false when the user has
/// no such session (another user's is none of theirs).
pub async fn end_one(app: &AppState, tenant: &str, session_id: &str, target: &str) -> Result<Option<bool>, AuthError> {
    let Some((_, user)) = current(app, tenant, session_id).await? else { return Ok(None) };
    let unavailable = |e: gatehouse_storage::StoreError| NodeWriteError::Unavailable(e.to_string());
    let theirs = app.store.read().and_then(|r| r.session(tenant, target)).map_err(unavailable)?;
    if theirs.is_none_or(|s| s.user_id != user.id) {
        return Ok(Some(false));
    }
    let command = Command::EndSession { tenant: tenant.to_string(), id_sha256: target.to_string() };
    app.propose(&format!("user:{}", user.id), command).await?;
    Ok(Some(true))
}

/// Ends every other session of the signed-in user, once they have given their password again
/// (S50: after re-authentication). `None` when not signed in.
pub async fn end_others(
    app: &AppState,
    tenant: &str,
    session_id: &str,
    password: &str,
) -> Result<Option<u64>, AuthError> {
    let Some((session, user)) = current(app, tenant, session_id).await? else { return Ok(None) };
    reauthenticate(app, &user, password).await?;
    let command = Command::EndSessionsOf {
        tenant: tenant.to_string(),
        user_id: user.id.clone(),
        except: Some(session.id_sha256),
    };
    match app.propose(&format!("user:{}", user.id), command).await? {
        Applied::SessionsEnded { count } => Ok(Some(count)),
        other => Err(super::unexpected(other).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_follow_800_63b_and_are_refused_when_guessable_in_context() {
        let tenant = |require_mfa: bool| TenantRecord {
            v: 1,
            id: "acme".into(),
            display_name: "Acme".into(),
            status: gatehouse_storage::model::TenantStatus::Active,
            self_registration: true,
            data_key_id: "dk".into(),
            created_at_ms: 0,
            cors_origins: Vec::new(),
            require_mfa,
        };
        let password_only = tenant(false);
        let ok = |p: &str| check_new_password(&normalize_password(p), &password_only, "ada@example.com").is_ok();
        let with_mfa = tenant(true);
        let ok_with_mfa = |p: &str| check_new_password(&normalize_password(p), &with_mfa, "ada@example.com").is_ok();
        assert!(ok_with_mfa("k7#Qp2!zW") && !ok("k7#Qp2!zW"), "8 characters do where a second factor is required");
        assert!(!ok_with_mfa("k7#Qp2!"), "7 do not");
        assert!(ok("correct horse battery staple"), "long words pass, spaces included");
        assert!(ok(&"λόγος-μελωδία-κλειδί ".repeat(3)), "any Unicode");
        assert!(!ok("short-Pass1!"), "under 15 characters");
        assert!(!ok(&"x".repeat(257)), "over 256");
        assert!(ok(&format!("{}A", "rainbow-trellis-quartz-".repeat(10)).chars().take(256).collect::<String>()));
        for weak in
            ["gatehousegatehouse", "qwertyuiop123456", "acmeacmeacme2026", "ada@example.com1", "passwordpassword"]
        {
            assert!(!ok(weak), "{weak} is guessable");
        }
        // NFKC: the precomposed and decomposed forms are one password.
        assert_eq!(*normalize_password("caf\u{e9}-garden-lantern"), *normalize_password("cafe\u{301}-garden-lantern"));
    }

    #[test]
    fn emails_are_names_when_plausible() {
        assert_eq!(normalize_email(" Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "a@b", "a b@example.com", "a@@example.com", "a@example."] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_session_id_is_long_random_and_stored_only_digested() {
        let (a, da) = new_session_id();
        let (b, _) = new_session_id();
        assert_ne!(a, b);
        assert!(a.len() >= 43, "256 bits");
        assert_eq!(da.len(), 64);
        assert_ne!(session_digest(&a[..a.len() - 1]), da, "a truncated id is another id");
    }
}
