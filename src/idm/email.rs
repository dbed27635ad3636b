//! Email for end users: sign-in codes (email OTP) and links (magic links), password resets and
//! address checks.
//!
//! A request is answered at once and alike whether its address names an account or not (S41):
//! it is queued (`app::mail`), and `request_job` makes the message only for an active account,
//! within the account's hourly budget. The token and the message are written by one command;
//! the token is stored only as a digest, works once and expires (S37, S43): a link token is 256
//! random bits (SHA-256), a six-digit code is digested with its address under a key derived
//! from the KEK. Wrong codes count against the account's lockout like wrong passwords (S40).
//! Messages are sent by `delivery_job` over SMTP when `email.smtp_url` is set; otherwise they
//! stay in the dev mailbox that admins read.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_storage::model::{EmailPurpose, EmailTokenRecord, OutboxRecord, TenantRecord, UserStatus};
use gatehouse_storage::{Applied, Command, Redemption, Rejection};

use crate::app::mail::EmailRequest;
use crate::app::{AppState, NodeWriteError, ProposeError};
use crate::idm::auth::{self, AuthError, SignedIn};

/// Messages a delivery round sends at most.
const DELIVERY_BATCH: usize = 32;
/// How often the delivery job looks for due messages when nothing wakes it.
const DELIVERY_EVERY: Duration = Duration::from_secs(2);
/// The longest wait between two attempts at one message.
const MAX_RETRY_MS: i64 = 15 * 60 * 1000;

fn unavailable(e: impl std::fmt::Display) -> AuthError {
    AuthError::Write(NodeWriteError::Unavailable(e.to_string()))
}

fn source() -> Option<std::net::IpAddr> {
    crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip())
}

/// Queues a message of `purpose` to `email`: the same answer for every address (S41).
pub fn request(app: &AppState, tenant: &TenantRecord, email: &str, purpose: EmailPurpose) -> Result<(), AuthError> {
    app.limits.admit_email_request(source()).map_err(AuthError::RateLimited)?;
    let email = auth::normalize_email(email)?;
    if app.mail.offer(EmailRequest { tenant: tenant.id.clone(), email, purpose }) {
        Ok(())
    } else {
        Err(AuthError::Busy)
    }
}

/// The digest a sign-in code is stored under: keyed, and bound to its tenant and address, so
/// neither a copy of the data nor another account's code finds it.
fn code_digest(app: &AppState, tenant: &str, email: &str, code: &str) -> String {
    app.cipher.keyed_digest("email-sign-in-code", format!("{tenant}/{email}/{code}").as_bytes())
}

/// A six-digit code, uniform.
fn new_code() -> String {
    loop {
        let mut b = [0u8; 4];
        crate::clock::random_bytes(&mut b);
        let n = u32::from_be_bytes(b);
        // Rejection sampling: the last partial block of a million would favour small codes.
        if n < u32::MAX - u32::MAX % 1_000_000 {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

fn body_context(tenant: &str, id: &str) -> String {
    format!("outbox-body:{tenant}/{id}")
}

/// The message a request becomes, when its address names an active account.
async fn issue(app: &AppState, request: &EmailRequest) -> Result<(), AuthError> {
    let reader = app.store.read().map_err(unavailable)?;
    let Some(tenant) = reader.tenant(&request.tenant).map_err(unavailable)? else { return Ok(()) };
    let user = reader.user_by_username(&request.tenant, &request.email).map_err(unavailable)?;
    drop(reader);
    let Some(user) = user.filter(|u| u.status == UserStatus::Active && u.email.as_deref() == Some(&request.email))
    else {
        return Ok(());
    };
    if !app.limits.admit_email_to(&format!("{}/{}", tenant.id, request.email)) {
        tracing::debug!("an account of {} spent its hourly email budget; nothing was sent", tenant.id);
        return Ok(());
    }
    let config = &app.config.email;
    let now_ms = app.clock.now_ms();
    let issuer = app.issuer_of(&tenant.id);
    let (secret, token_sha256, lifetime_secs) = match request.purpose {
        EmailPurpose::SignInCode => {
            let code = new_code();
            let digest = code_digest(app, &tenant.id, &request.email, &code);
            (code, digest, config.code_lifetime_secs)
        }
        _ => {
            let (token, digest) = auth::new_session_id();
            (token, digest, config.link_lifetime_secs)
        }
    };
    let minutes = lifetime_secs / 60;
    let link = |path: &str| format!("{issuer}{path}?token={secret}");
    let ignore = "If you did not ask for this, ignore this message.";
    let (subject, body) = match request.purpose {
        EmailPurpose::SignInCode => (
            "Your sign-in code",
            format!("Your sign-in code is {secret}\n\nIt works once, within {minutes} minutes. {ignore}\n"),
        ),
        EmailPurpose::SignInLink => (
            "Your sign-in link",
            format!(
                "Sign in with this link:\n\n{}\n\nIt works once, within {minutes} minutes. {ignore}\n",
                link("/v1/auth/magic-link/consume")
            ),
        ),
        EmailPurpose::PasswordReset => (
            "Reset your password",
            format!(
                "Choose a new password here:\n\n{}\n\nIt works once, within {minutes} minutes; it signs you out \
                 everywhere. {ignore}\n",
                link("/v1/auth/password/reset")
            ),
        ),
        EmailPurpose::VerifyEmail => (
            "Confirm your email address",
            format!(
                "Confirm that this address is yours:\n\n{}\n\nIt works once, within {minutes} minutes. {ignore}\n",
                link("/v1/auth/email/verify")
            ),
        ),
    };
    let id = crate::clock::random_id("m-");
    let sealed =
        app.cipher.seal(&tenant.data_key_id, &body_context(&tenant.id, &id), body.as_bytes()).map_err(unavailable)?;
    let expires_at_ms = now_ms + i64::try_from(lifetime_secs * 1000).unwrap_or(i64::MAX / 2);
    let token = EmailTokenRecord {
        v: 1,
        tenant: tenant.id.clone(),
        token_sha256,
        purpose: request.purpose,
        user_id: user.id.clone(),
        email: request.email.clone(),
        created_at_ms: now_ms,
        expires_at_ms,
    };
    let message = OutboxRecord {
        v: 1,
        tenant: tenant.id.clone(),
        id: id.clone(),
        to: request.email.clone(),
        subject: subject.to_string(),
        body: sealed,
        purpose: request.purpose,
        created_at_ms: now_ms,
        expires_at_ms,
        attempts: 0,
        next_attempt_ms: now_ms,
    };
    app.propose(&format!("user:{}", user.id), Command::SendEmailToken { token, message }).await?;
    if config.smtp_url.is_some() {
        app.mail.written.notify_one();
    } else {
        tracing::info!(
            "dev mailbox: {subject:?} to an account of {} waits at /admin/v1/tenants/{}/mailbox (message {id})",
            tenant.id,
            tenant.id
        );
    }
    Ok(())
}

/// Turns queued requests into messages, one at a time, until `stop`.
pub async fn request_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut requests) = app.mail.take_receiver() else { return };
    loop {
        let request = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        if let Err(e) = issue(&app, &request).await {
            tracing::warn!("an email request of {} was not handled: {e}", request.tenant);
        }
    }
}

/// A message as the dev mailbox shows it.
pub struct MailboxMessage {
    pub record: OutboxRecord,
    pub body: String,
}

/// The newest messages of a tenant's outbox, bodies opened (for admins: the dev mailbox).
pub fn mailbox(app: &AppState, tenant: &str, limit: usize) -> Result<Vec<MailboxMessage>, AuthError> {
    let messages = app.store.read().and_then(|r| r.outbox(tenant, limit)).map_err(unavailable)?;
    messages
        .into_iter()
        .map(|record| {
            let body = app.cipher.open(&record.body, &body_context(&record.tenant, &record.id)).map_err(unavailable)?;
            Ok(MailboxMessage { body: String::from_utf8_lossy(&body).into_owned(), record })
        })
        .collect()
}

/// The live token of `purpose` stored under `digest`, if any.
fn token_of(
    app: &AppState,
    tenant: &str,
    digest: &str,
    purpose: EmailPurpose,
) -> Result<Option<EmailTokenRecord>, AuthError> {
    let token = app.store.read().and_then(|r| r.email_token(tenant, digest)).map_err(unavailable)?;
    Ok(token.filter(|t| t.purpose == purpose && t.expires_at_ms > app.clock.now_ms()))
}

/// Spends a sign-in token and starts a session (pending its second factor when the user has
/// an authenticator: S44).
async fn redeem_sign_in(
    app: &AppState,
    tenant: &TenantRecord,
    token: &EmailTokenRecord,
    method: &str,
) -> Result<SignedIn, AuthError> {
    let user = app
        .store
        .read()
        .and_then(|r| r.user(&token.tenant, &token.user_id))
        .map_err(unavailable)?
        .ok_or(AuthError::BadCode)?;
    let (session_id, digest) = auth::new_session_id();
    let mut session = auth::session_for(app, &token.tenant, &user.id, method, digest);
    auth::second_step(tenant, &user, &mut session);
    let redeem = |session: gatehouse_storage::model::SessionRecord| Command::RedeemEmailToken {
        tenant: token.tenant.clone(),
        token_sha256: token.token_sha256.clone(),
        purpose: token.purpose,
        effect: Redemption::SignIn(session),
    };
    let actor = format!("user:{}", user.id);
    let mut outcome = app.propose(&actor, redeem(session.clone())).await;
    if let Err(ProposeError::Refused(r)) = &outcome {
        if auth::retry_second_step(r, &mut session) {
            outcome = app.propose(&actor, redeem(session.clone())).await;
        }
    }
    match outcome {
        Ok(Applied::EmailTokenRedeemed { .. }) => Ok(SignedIn { session_id, session, user }),
        Ok(other) => Err(super::unexpected(other).into()),
        Err(ProposeError::Refused(Rejection::EmailTokenInvalid | Rejection::UserDisabled { .. })) => {
            Err(AuthError::BadCode)
        }
        Err(ProposeError::Refused(Rejection::PasskeyRequired)) => Err(AuthError::PasskeyRequired),
        Err(e) => Err(e.into()),
    }
}

/// Signs in with a code sent to `email`: each code once, wrong ones counted like wrong
/// passwords against the account (S40).
pub async fn sign_in_with_code(
    app: &AppState,
    tenant: &TenantRecord,
    email: &str,
    code: &str,
) -> Result<SignedIn, AuthError> {
    let started = std::time::Instant::now();
    let result = code_sign_in(app, tenant, email, code).await;
    auth::record_attempt(app, &tenant.id, "email_code", started, &result);
    result
}

async fn code_sign_in(app: &AppState, tenant: &TenantRecord, email: &str, code: &str) -> Result<SignedIn, AuthError> {
    let email = auth::normalize_email(email).map_err(|_| AuthError::BadCode)?;
    let attempt = auth::admit_attempt(app, &tenant.id, &email).await?;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
    let token = if well_formed {
        token_of(app, &tenant.id, &code_digest(app, &tenant.id, &email, &code), EmailPurpose::SignInCode)?
    } else {
        None
    };
    let Some(token) = token else {
        attempt.failed(app.clock.now_ms());
        app.limits.failed(source(), None);
        app.auth_failures.record(app.clock.now_ms(), &tenant.id, "email-otp", "", source(), "invalid_code");
        return Err(AuthError::BadCode);
    };
    let signed_in = redeem_sign_in(app, tenant, &token, "email_code").await?;
    // As for a password: a sign-in still waiting for its code forgets nothing yet.
    if !signed_in.session.pending_mfa {
        auth::forget_failures(app, attempt, &tenant.id, &email).await;
    }
    Ok(signed_in)
}

/// The link token of `purpose`, or `BadLink` (a made-up one costs a read and the source's
/// failure budget, never a write).
fn link_token(app: &AppState, tenant: &str, token: &str, purpose: EmailPurpose) -> Result<EmailTokenRecord, AuthError> {
    let found = if token.len() <= 128 { token_of(app, tenant, &auth::session_digest(token), purpose)? } else { None };
    found.ok_or_else(|| {
        app.limits.failed(source(), None);
        app.auth_failures.record(app.clock.now_ms(), tenant, "email-link", "", source(), "invalid_token");
        AuthError::BadLink
    })
}

/// Signs in with a link's token, once.
pub async fn sign_in_with_link(app: &AppState, tenant: &TenantRecord, token: &str) -> Result<SignedIn, AuthError> {
    let started = std::time::Instant::now();
    let result = match link_token(app, &tenant.id, token, EmailPurpose::SignInLink) {
        Ok(token) => redeem_sign_in(app, tenant, &token, "email_link").await.map_err(|e| match e {
            AuthError::BadCode => AuthError::BadLink,
            other => other,
        }),
        Err(e) => Err(e),
    };
    auth::record_attempt(app, &tenant.id, "email_link", started, &result);
    result
}

/// Sets a new password with a reset link's token, once; every session of the user ends.
pub async fn reset_password(
    app: &AppState,
    tenant: &TenantRecord,
    token: &str,
    password: &str,
) -> Result<(), AuthError> {
    let token = link_token(app, &tenant.id, token, EmailPurpose::PasswordReset)?;
    let password = auth::normalize_password(password);
    auth::check_new_password(&password, tenant, &token.email)?;
    let password_hash = auth::hash_new_password(app, &password).await?;
    let command = Command::RedeemEmailToken {
        tenant: tenant.id.clone(),
        token_sha256: token.token_sha256.clone(),
        purpose: EmailPurpose::PasswordReset,
        effect: Redemption::SetPassword { password_hash },
    };
    match app.propose(&format!("user:{}", token.user_id), command).await {
        Ok(_) => Ok(()),
        Err(ProposeError::Refused(Rejection::EmailTokenInvalid | Rejection::UserDisabled { .. })) => {
            Err(AuthError::BadLink)
        }
        Err(e) => Err(e.into()),
    }
}

/// Proves the user reads their address, with a verification link's token, once.
pub async fn verify(app: &AppState, tenant: &TenantRecord, token: &str) -> Result<(), AuthError> {
    let token = link_token(app, &tenant.id, token, EmailPurpose::VerifyEmail)?;
    let command = Command::RedeemEmailToken {
        tenant: tenant.id.clone(),
        token_sha256: token.token_sha256.clone(),
        purpose: EmailPurpose::VerifyEmail,
        effect: Redemption::Verify,
    };
    match app.propose(&format!("user:{}", token.user_id), command).await {
        Ok(_) => Ok(()),
        Err(ProposeError::Refused(Rejection::EmailTokenInvalid | Rejection::UserDisabled { .. })) => {
            Err(AuthError::BadLink)
        }
        Err(e) => Err(e.into()),
    }
}

/// The SMTP transport for `url` (see `email.smtp_url`).
pub fn transport(url: &str) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, String> {
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
        .map(|b| b.timeout(Some(Duration::from_secs(20))).build())
        .map_err(|e| e.to_string())
}

/// Sends one message; the error says why not.
async fn send(
    app: &AppState,
    smtp: &lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    record: &OutboxRecord,
) -> Result<(), String> {
    use lettre::AsyncTransport;
    let body = app.cipher.open(&record.body, &body_context(&record.tenant, &record.id)).map_err(|e| e.to_string())?;
    let from: lettre::message::Mailbox = app.config.email.from.parse().map_err(|e| format!("email.from: {e}"))?;
    let to: lettre::message::Mailbox = record.to.parse().map_err(|e| format!("recipient: {e}"))?;
    let message = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(record.subject.clone())
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(String::from_utf8_lossy(&body).into_owned())
        .map_err(|e| e.to_string())?;
    smtp.send(message).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Sends due messages over SMTP while this node leads (one sender for the cluster), until
/// `stop`. A message that fails is tried again later, waiting twice as long each time; one
/// that expires unsent is pruned with its token. Without `email.smtp_url` it does nothing.
pub async fn delivery_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(url) = app.config.email.smtp_url.clone() else { return };
    let smtp = match transport(&url) {
        Ok(t) => t,
        Err(e) => return tracing::error!("email.smtp_url: {e}; no email will be sent"),
    };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = app.mail.written.notified() => {}
            _ = tokio::time::sleep(DELIVERY_EVERY) => {}
        }
        if !app.raft.status().is_leader {
            continue;
        }
        let now_ms = app.clock.now_ms();
        let due = match app.store.read().and_then(|r| r.outbox_due(now_ms, DELIVERY_BATCH)) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("outbox: {e}");
                continue;
            }
        };
        for record in due {
            let command = match send(&app, &smtp, &record).await {
                Ok(()) => Command::EmailDelivered { tenant: record.tenant.clone(), id: record.id.clone() },
                Err(why) => {
                    let wait = (5_000i64 << record.attempts.min(16)).min(MAX_RETRY_MS);
                    tracing::warn!("message {} was not delivered (attempt {}): {why}", record.id, record.attempts + 1);
                    Command::EmailDeferred {
                        tenant: record.tenant.clone(),
                        id: record.id.clone(),
                        next_attempt_ms: app.clock.now_ms() + wait,
                    }
                }
            };
            if let Err(e) = app.propose("policy:email", command).await {
                tracing::warn!("outbox: {e}");
            }
        }
    }
}
