//! Second factors for end users: an authenticator app (TOTP with totp-rs: SHA-1, 6 digits,
//! 30 s steps, one step either side) and one-time recovery codes.
//!
//! The seed is sealed under the tenant's data key (S58) and shown once, as an `otpauth://`
//! URI, at enrolment. A code is checked here; the step it belongs to (or the recovery code's
//! digest) is spent in `apply`, so each is accepted once across the cluster (S45). A sign-in
//! of a user with a confirmed authenticator starts a pending session, which serves nothing but
//! the challenge; the challenge ends it and starts a full session with a new id (S49).

use gatehouse_storage::model::{SessionRecord, TenantRecord, UserRecord};
use gatehouse_storage::{Applied, Command, MfaFactor};
use totp_rs::{Algorithm, TOTP};

use crate::app::AppState;
use crate::idm::auth::{AuthError, SignedIn};

/// Recovery codes given at confirmation, each good once.
pub const RECOVERY_CODES: usize = 10;
const STEP_SECS: u64 = 30;

/// What enrolment shows, once.
pub struct Enrolment {
    pub otpauth_uri: String,
    pub secret_base32: String,
    /// The URI as a QR code, a PNG image in base64.
    pub qr_png_base64: String,
}

/// The seed's sealing context: bound to the user, so it opens for nobody else.
fn seed_context(tenant: &str, user_id: &str) -> String {
    format!("totp-seed:{tenant}/{user_id}")
}

fn unavailable(e: impl std::fmt::Display) -> AuthError {
    AuthError::Write(crate::app::NodeWriteError::Unavailable(e.to_string()))
}

fn authenticator(seed: Vec<u8>, tenant: &str, account: &str) -> Result<TOTP, AuthError> {
    // The otpauth label may not hold ':'; an email never needs one.
    let account = account.replace(':', "");
    TOTP::new(Algorithm::SHA1, 6, 1, STEP_SECS, seed, Some(format!("Gatehouse {tenant}")), account)
        .map_err(|e| AuthError::Hashing(format!("authenticator: {e}")))
}

fn totp_of(app: &AppState, user: &UserRecord) -> Result<TOTP, AuthError> {
    let state = user.totp.as_ref().ok_or(AuthError::Refused(gatehouse_storage::Rejection::TotpNotEnrolled))?;
    let seed = app.cipher.open(&state.seed, &seed_context(&user.tenant, &user.id)).map_err(unavailable)?;
    authenticator(seed.to_vec(), &user.tenant, &user.username)
}

/// The step (of the current one and one either side) whose code `code` is, if any.
fn step_of(totp: &TOTP, code: &str, now_ms: i64) -> Option<u64> {
    let now = u64::try_from(now_ms).ok()? / 1000;
    let current = now / STEP_SECS;
    let code = code.trim();
    (current.saturating_sub(1)..=current + 1).find(|step| {
        let expected = totp.generate(step * STEP_SECS);
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), code.as_bytes()).is_ok()
    })
}

fn recovery_digest(code: &str) -> String {
    let normalized: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, normalized.as_bytes()))
}

fn refused_as_bad_code(e: crate::app::ProposeError) -> AuthError {
    match e {
        crate::app::ProposeError::Refused(gatehouse_storage::Rejection::MfaFactorUsed) => AuthError::BadCode,
        other => other.into(),
    }
}

/// A new secret for the signed-in user, not asked for at sign-in until confirmed.
pub async fn enroll(app: &AppState, user: &UserRecord) -> Result<Enrolment, AuthError> {
    let tenant: TenantRecord = app
        .store
        .read()
        .and_then(|r| r.tenant(&user.tenant))
        .map_err(unavailable)?
        .ok_or_else(|| unavailable("the tenant is gone"))?;
    let mut seed = [0u8; 20];
    crate::clock::random_bytes(&mut seed);
    let totp = authenticator(seed.to_vec(), &user.tenant, &user.username)?;
    let sealed =
        app.cipher.seal(&tenant.data_key_id, &seed_context(&user.tenant, &user.id), &seed).map_err(unavailable)?;
    let command = Command::EnrollTotp { tenant: user.tenant.clone(), user_id: user.id.clone(), seed: sealed };
    match app.propose(&format!("user:{}", user.id), command).await? {
        Applied::TotpEnrolled => Ok(Enrolment {
            otpauth_uri: totp.get_url(),
            secret_base32: totp.get_secret_base32(),
            qr_png_base64: totp.get_qr_base64().map_err(|e| AuthError::Hashing(format!("QR code: {e}")))?,
        }),
        other => Err(super::unexpected(other).into()),
    }
}

/// Confirms the enrolled secret with a code it made; the recovery codes, shown once.
pub async fn confirm(app: &AppState, user: &UserRecord, code: &str) -> Result<Vec<String>, AuthError> {
    let budget = admitted(app, user).await?;
    let Some(state) = user.totp.as_ref() else {
        return Err(AuthError::Refused(gatehouse_storage::Rejection::TotpNotEnrolled));
    };
    if state.confirmed {
        return Err(AuthError::Refused(gatehouse_storage::Rejection::TotpAlreadyConfirmed));
    }
    let totp = totp_of(app, user)?;
    let Some(step) = step_of(&totp, code, app.clock.now_ms()) else {
        note_failure(app, user, &budget);
        return Err(AuthError::BadCode);
    };
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let mut raw = [0u8; 10];
            crate::clock::random_bytes(&mut raw);
            let text = hex::encode(raw);
            format!("{}-{}-{}-{}", &text[..5], &text[5..10], &text[10..15], &text[15..])
        })
        .collect();
    let command = Command::ConfirmTotp {
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        seed_nonce: state.seed.nonce.clone(),
        step,
        recovery_sha256: codes.iter().map(|c| recovery_digest(c)).collect(),
    };
    match app.propose(&format!("user:{}", user.id), command).await? {
        Applied::TotpConfirmed => Ok(codes),
        other => Err(super::unexpected(other).into()),
    }
}

/// The factor a presented code or recovery code stands for, checked against the user's seed.
fn factor(
    app: &AppState,
    user: &UserRecord,
    code: Option<&str>,
    recovery: Option<&str>,
) -> Result<MfaFactor, AuthError> {
    match (code, recovery) {
        (Some(code), None) => {
            let totp = totp_of(app, user)?;
            step_of(&totp, code, app.clock.now_ms()).map(MfaFactor::TotpStep).ok_or(AuthError::BadCode)
        }
        (None, Some(recovery)) => Ok(MfaFactor::RecoveryCode(recovery_digest(recovery))),
        _ => Err(AuthError::Invalid(vec![("code".into(), "give either code or recovery_code".into())])),
    }
}

/// Completes a pending sign-in with a code or a recovery code: a full session, with a new id.
pub async fn challenge(
    app: &AppState,
    pending: &SessionRecord,
    user: &UserRecord,
    code: Option<&str>,
    recovery: Option<&str>,
) -> Result<SignedIn, AuthError> {
    let started = std::time::Instant::now();
    let result = complete(app, pending, user, code, recovery).await;
    let method = if recovery.is_some() { "recovery_code" } else { "totp" };
    crate::idm::auth::record_attempt(app, &user.tenant, method, started, &result);
    result
}

async fn complete(
    app: &AppState,
    pending: &SessionRecord,
    user: &UserRecord,
    code: Option<&str>,
    recovery: Option<&str>,
) -> Result<SignedIn, AuthError> {
    let budget = admitted(app, user).await?;
    let factor = factor(app, user, code, recovery).map_err(|e| counted(app, user, &budget, e))?;
    let (session_id, digest) = crate::idm::auth::new_session_id();
    // The first factor as the pending sign-in recorded it (a password, an email code or link).
    let method = match factor {
        MfaFactor::TotpStep(_) => format!("{}+totp", pending.method),
        MfaFactor::RecoveryCode(_) => format!("{}+recovery_code", pending.method),
    };
    let session = crate::idm::auth::session_for(app, &user.tenant, &user.id, &method, digest);
    let command = Command::CompleteMfa {
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        factor,
        pending_sha256: pending.id_sha256.clone(),
        session: session.clone(),
    };
    match app.propose(&format!("user:{}", user.id), command).await {
        Ok(Applied::MfaCompleted { .. }) => {
            // The sign-in is complete: now its account's failures (passwords and codes) go.
            let attempt = budget.0.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(attempt) = attempt {
                crate::idm::auth::forget_failures(app, attempt, &user.tenant, &user.username).await;
            }
            Ok(SignedIn { session_id, session, user: user.clone() })
        }
        Ok(other) => Err(super::unexpected(other).into()),
        // The sign-in ended, the user or tenant was disabled, or the authenticator removed,
        // since the read: there is no sign-in to complete.
        Err(crate::app::ProposeError::Refused(
            gatehouse_storage::Rejection::SessionEnded
            | gatehouse_storage::Rejection::SessionNotPending
            | gatehouse_storage::Rejection::UserDisabled { .. }
            | gatehouse_storage::Rejection::TenantDisabled { .. }
            | gatehouse_storage::Rejection::TotpNotEnrolled,
        )) => Err(AuthError::NotSignedIn),
        Err(e) => Err(counted(app, user, &budget, refused_as_bad_code(e))),
    }
}

/// One check of a code against the account's lockout, which wrong passwords and wrong codes
/// share (S40: counted in raft state); dropped unspent, it counts for nothing.
struct Budget<'a>(std::sync::Mutex<Option<crate::app::lockout::Attempt<'a>>>);

/// Admits one code check for the user's account, if its budget is not spent.
async fn admitted<'a>(app: &'a AppState, user: &UserRecord) -> Result<Budget<'a>, AuthError> {
    let attempt = crate::idm::auth::admit_attempt(app, &user.tenant, &user.username).await?;
    Ok(Budget(std::sync::Mutex::new(Some(attempt))))
}

/// A wrong code, found here or by `apply`: counted against the budgets and audited, coalesced.
fn counted(app: &AppState, user: &UserRecord, budget: &Budget<'_>, e: AuthError) -> AuthError {
    if matches!(e, AuthError::BadCode) {
        note_failure(app, user, budget);
    }
    e
}

fn note_failure(app: &AppState, user: &UserRecord, budget: &Budget<'_>) {
    let source = crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip());
    if let Some(attempt) = budget.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
        attempt.failed(app.clock.now_ms());
    }
    app.limits.failed(source, None);
    app.auth_failures.record(app.clock.now_ms(), &user.tenant, "mfa", &user.username, source, "invalid_code");
}

/// Removes the signed-in user's authenticator, once a code (or a recovery code) proves they
/// hold it.
pub async fn disable(
    app: &AppState,
    user: &UserRecord,
    code: Option<&str>,
    recovery: Option<&str>,
) -> Result<(), AuthError> {
    let budget = admitted(app, user).await?;
    if !user.totp.as_ref().is_some_and(|s| s.confirmed) {
        return Err(AuthError::Refused(gatehouse_storage::Rejection::TotpNotEnrolled));
    }
    let factor = factor(app, user, code, recovery).map_err(|e| counted(app, user, &budget, e))?;
    let command = Command::DisableTotp { tenant: user.tenant.clone(), user_id: user.id.clone(), factor };
    match app.propose(&format!("user:{}", user.id), command).await {
        Ok(Applied::TotpDisabled) => Ok(()),
        Ok(other) => Err(super::unexpected(other).into()),
        Err(e) => Err(counted(app, user, &budget, refused_as_bad_code(e))),
    }
}
