//! End-user sign-in under each issuer, `{issuer}/v1/auth/…`, with cookie sessions: register,
//! login, logout and the current session. Thin adapters over `idm::auth`.
//!
//! The cookie (S49) is `__Host-gh_session_{tenant}`: `Secure`, `HttpOnly`, `SameSite=Lax`,
//! `Path=/`, no `Domain`, so one browser holds the sessions of several tenants apart. State
//! changes (S52) take only JSON bodies and are refused when `Origin` is present and not the
//! public origin, or `Sec-Fetch-Site` says `cross-site`; clients that send neither (curl with
//! a cookie jar) work.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::api::oidc::{resolve_scope, Resolved};
use crate::http::issuer::IssuerScope;
use crate::http::problem::{FieldError, Problem};
use crate::idm::auth::{self, AuthError, NewAccount, SignedIn};
use crate::idm::mfa;
use gatehouse_storage::Rejection;

#[derive(Tags)]
enum AuthTag {
    /// End-user sign-in with cookie sessions.
    Auth,
}

pub struct AuthApi;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RegisterInput {
    #[oai(validator(max_length = 254))]
    pub email: String,
    /// 15 to 256 characters, any characters; refused when easy to guess.
    #[oai(validator(max_length = 1024))]
    pub password: String,
    #[oai(validator(max_length = 200))]
    pub display_name: Option<String>,
    /// When given, an organization is created with the new user as its owner.
    #[oai(validator(max_length = 200))]
    pub organization_name: Option<String>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct LoginInput {
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 1024))]
    pub password: String,
}

/// The signed-in user and their session.
#[derive(Debug, Object)]
pub struct SessionView {
    pub user: SessionUser,
    /// How this session signed in: `register`, `password`, `password+totp` or
    /// `password+recovery_code`.
    pub method: String,
    /// The password was right and the user has an authenticator: the session serves only
    /// `mfa/totp/challenge` (and logout) until a code completes the sign-in.
    pub mfa_required: bool,
    /// The tenant requires a second factor and the user has none: the session serves only
    /// adding one (`mfa/totp/enroll` and `confirm`, or a passkey); then the user signs in again.
    pub mfa_setup_required: bool,
    pub created_at_ms: i64,
    /// The session ends by then at the latest.
    pub expires_at_ms: i64,
}

#[derive(Debug, Object)]
pub struct SessionList {
    pub items: Vec<SessionItem>,
}

/// One session of the user.
#[derive(Debug, Object)]
pub struct SessionItem {
    /// The session's digest: names it to end it (the session id itself is only in its cookie).
    pub id: String,
    pub method: String,
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
    pub expires_at_ms: i64,
    /// Whether this is the session of the request.
    pub current: bool,
}

/// The password again, to end the other sessions.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct Reauthenticate {
    #[oai(validator(max_length = 1024))]
    pub password: String,
}

/// A code from the authenticator app.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct TotpCode {
    #[oai(validator(max_length = 16))]
    pub code: String,
}

/// A second factor: a code from the authenticator app, or one of the recovery codes.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SecondFactor {
    #[oai(validator(max_length = 16))]
    pub code: Option<String>,
    #[oai(validator(max_length = 64))]
    pub recovery_code: Option<String>,
}

/// A new authenticator secret, shown this once: add it to an authenticator app, then confirm
/// it with a code.
#[derive(Debug, Object)]
pub struct TotpEnrolment {
    /// `otpauth://totp/…` (SHA-1, 6 digits, 30 s), for a QR code or a link.
    pub otpauth_uri: String,
    /// The same secret in base32, to type in.
    pub secret: String,
    /// The URI as a QR code: a PNG image, base64 (for `data:image/png;base64,…`).
    pub qr_png_base64: String,
}

/// One-time recovery codes, shown this once: each completes one sign-in without the app.
#[derive(Debug, Object)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Object)]
pub struct SessionUser {
    pub id: String,
    pub email: Option<String>,
    pub display_name: String,
}

/// Declares a sign-in answer: its success, the problems every sign-in operation can give
/// (400, 404, 429, 503) and the ones listed, each with its description.
macro_rules! auth_answer {
    ($(#[$meta:meta])* $name:ident { $($success:tt)* } $($status:literal $variant:ident $doc:literal,)*) => {
        $(#[$meta])*
        #[derive(ApiResponse)]
        #[oai(bad_request_handler = "bad_request")]
        pub enum $name {
            $($success)*
            /// Invalid input; `errors` names the fields.
            #[oai(status = 400, content_type = "application/problem+json")]
            BadRequest(Json<Problem>),
            /// No such tenant (or, where a session is named, no such session of this user).
            #[oai(status = 404, content_type = "application/problem+json")]
            NotFound(Json<Problem>),
            $(
                #[doc = $doc]
                #[oai(status = $status, content_type = "application/problem+json")]
                $variant(Json<Problem>),
            )*
            /// Too many requests from this source; retry after `Retry-After` seconds.
            #[oai(status = 429, content_type = "application/problem+json")]
            TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] String),
            /// This node cannot serve the request now.
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(Json<Problem>),
        }

        impl FromProblem for $name {
            fn problem(p: Problem) -> Self {
                match p.status {
                    400 => Self::BadRequest(Json(p)),
                    404 => Self::NotFound(Json(p)),
                    $($status => Self::$variant(Json(p)),)*
                    503 => Self::Unavailable(Json(p)),
                    other => {
                        tracing::error!("sign-in: a {other} this operation does not declare: {}", p.detail);
                        Self::Unavailable(Json(Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "this node cannot serve the request now",
                        )))
                    }
                }
            }
        }
    };
}

pub(super) use auth_answer;

/// An answer built from a problem document.
pub trait FromProblem {
    fn problem(p: Problem) -> Self;
}

auth_answer! {
    /// The answer to a registration.
    Registered {
        /// Registered and signed in: the session cookie is set.
        #[oai(status = 201)]
        New(Json<SessionView>, #[oai(header = "Set-Cookie")] String),
    }
    403 Forbidden "A cross-site request, or self-registration is off for this tenant.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    409 Conflict "An account with this email exists already.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The answer to a login.
    LoggedIn {
        /// Signed in: a new session, and its cookie.
        #[oai(status = 200)]
        Ok(Json<SessionView>, #[oai(header = "Set-Cookie")] String),
    }
    401 Unauthorized "The email or the password is not right (one answer for both, and for unknown emails).",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The answer to a logout.
    LoggedOut {
        /// Signed out: the session ended on the server, and the cookie is cleared.
        #[oai(status = 204)]
        Done(#[oai(header = "Set-Cookie")] String),
    }
    403 Forbidden "A cross-site request.",
}

auth_answer! {
    /// The signed-in user's sessions.
    Listed {
        /// The live sessions, newest first; `current` marks the caller's.
        #[oai(status = 200)]
        Ok(Json<SessionList>),
    }
    401 Unauthorized "Not signed in, or the session has ended.",
}

auth_answer! {
    /// Sessions ended.
    Ended {
        /// Ended.
        #[oai(status = 204)]
        Done,
    }
    401 Unauthorized "Not signed in, or (ending the others) the password is not right.",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The current session.
    Current {
        /// The session and its user.
        #[oai(status = 200)]
        Ok(Json<SessionView>),
    }
    401 Unauthorized "Not signed in, or the session has ended.",
}

auth_answer! {
    /// The answer to a second factor.
    MfaChallenged {
        /// Signed in: a new session (the waiting one ended), and its cookie.
        #[oai(status = 200)]
        Ok(Json<SessionView>, #[oai(header = "Set-Cookie")] String),
    }
    401 Unauthorized "No sign-in waits for a second factor, or the code is not right (or was used already).",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// A new authenticator secret.
    TotpStarted {
        /// The secret, shown this once.
        #[oai(status = 200)]
        Ok(Json<TotpEnrolment>),
    }
    401 Unauthorized "Not signed in, or the session has ended.",
    403 Forbidden "A cross-site request.",
    409 Conflict "The user has a confirmed authenticator already (disable it first).",
}

auth_answer! {
    /// The authenticator confirmed.
    TotpConfirmed {
        /// Confirmed: sign-in asks for a code from now on. The recovery codes, shown this once.
        #[oai(status = 200)]
        Ok(Json<RecoveryCodes>),
    }
    401 Unauthorized "Not signed in, or the code is not right.",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    409 Conflict "No authenticator waits for confirmation, or one is confirmed already.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The authenticator removed.
    TotpRemoved {
        /// Removed: sign-in asks for the password only.
        #[oai(status = 204)]
        Done,
    }
    401 Unauthorized "Not signed in, or the code is not right (or was used already).",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    409 Conflict "The user has no confirmed authenticator.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

pub(super) fn bad_request<R: FromProblem>(err: poem::Error) -> R {
    let detail = err.to_string();
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail.clone());
    p.errors = Some(vec![FieldError { field: "body".into(), message: detail }]);
    R::problem(p)
}

pub(super) fn problem_of(e: AuthError) -> Problem {
    match e {
        AuthError::Invalid(errors) => {
            let detail = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; ");
            let mut p = Problem::new(StatusCode::BAD_REQUEST, "validation_failed", detail);
            p.errors = Some(errors.into_iter().map(|(field, message)| FieldError { field, message }).collect());
            p
        }
        AuthError::RegistrationClosed => {
            Problem::new(StatusCode::FORBIDDEN, "registration_closed", "this tenant does not allow self-registration")
        }
        AuthError::EmailTaken => Problem::new(StatusCode::CONFLICT, "email_taken", "an account with this email exists"),
        AuthError::Busy => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "every password hashing slot is busy; try again in a moment",
        ),
        AuthError::BadCredentials => {
            Problem::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "the email or the password is not right")
        }
        AuthError::BadCode => {
            Problem::new(StatusCode::UNAUTHORIZED, "invalid_code", "the code is not right, or was used already")
        }
        AuthError::PasskeyRequired => Problem::new(
            StatusCode::UNAUTHORIZED,
            "passkey_required",
            "this tenant requires a second factor, and yours is a passkey: sign in with it",
        ),
        AuthError::BadLink => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_link",
            "the link is not valid, has expired or was used already",
        ),
        AuthError::BadCeremony => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_ceremony",
            "the passkey ceremony is not valid, has expired or was finished already; begin again",
        ),
        AuthError::PasskeyRefused(why) => {
            Problem::new(StatusCode::BAD_REQUEST, "passkey_refused", format!("the passkey was refused: {why}"))
        }
        // Off on this node (its public URL has no host name): nothing to find here.
        AuthError::PasskeysOff(why) => Problem::new(StatusCode::NOT_FOUND, "passkeys_off", why),
        AuthError::Refused(r @ gatehouse_storage::Rejection::PasskeyExists) => {
            Problem::new(StatusCode::CONFLICT, r.code(), r.to_string())
        }
        AuthError::ChangedMeanwhile => Problem::new(
            StatusCode::CONFLICT,
            "changed_meanwhile",
            "the profile changed meanwhile; read it and try again",
        ),
        AuthError::TooLarge => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a picture may be at most {} bytes", crate::idm::profile::MAX_AVATAR_BYTES),
        ),
        AuthError::NotSignedIn => not_signed_in(),
        AuthError::Refused(r @ (Rejection::TotpAlreadyConfirmed | Rejection::TotpNotEnrolled)) => {
            Problem::new(StatusCode::CONFLICT, r.code(), r.to_string())
        }
        other => {
            tracing::warn!("sign-in: {other}");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this node cannot serve the request now")
        }
    }
}

/// A 429 problem and its `Retry-After`.
pub(super) fn too_many(wait: crate::app::limits::RetryAfter, what: &str) -> (Problem, String) {
    let detail = format!("{what}; retry after {} s", wait.secs());
    (Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail), wait.secs().to_string())
}

pub(super) fn not_signed_in() -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "not_signed_in", "there is no session, or it has ended")
}

/// The session cookie's name: one per tenant, so the sessions of several tenants stay apart.
fn cookie_name(tenant: &str) -> String {
    format!("__Host-gh_session_{tenant}")
}

/// The `Set-Cookie` that clears the tenant's session cookie.
pub(super) fn clear_cookie(tenant: &str) -> String {
    set_cookie(tenant, "", 0)
}

fn set_cookie(tenant: &str, session_id: &str, max_age_secs: i64) -> String {
    format!("{}={session_id}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}", cookie_name(tenant))
}

/// The presented session id of `tenant`, if any.
pub(super) fn presented(req: &poem::Request, tenant: &str) -> Option<String> {
    cookie_value(req, &cookie_name(tenant))
}

/// The sign-in page's cookie (see `pages::sign_in_token`): one per tenant, for a quarter hour.
fn sign_in_cookie_name(tenant: &str) -> String {
    format!("__Host-gh_signin_{tenant}")
}

/// The presented sign-in page cookie of `tenant`, if any.
pub(super) fn presented_sign_in(req: &poem::Request, tenant: &str) -> Option<String> {
    cookie_value(req, &sign_in_cookie_name(tenant)).filter(|v| v.len() <= 64)
}

/// A new sign-in page cookie value, and its `Set-Cookie`.
pub(super) fn new_sign_in_cookie(tenant: &str) -> (String, String) {
    let mut bytes = [0u8; 16];
    crate::clock::random_bytes(&mut bytes);
    let value = crate::crypto::b64url(&bytes);
    let header =
        format!("{}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=900", sign_in_cookie_name(tenant));
    (value, header)
}

fn cookie_value(req: &poem::Request, name: &str) -> Option<String> {
    req.headers().get_all(poem::http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|header| {
        header.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name && !v.is_empty() && v.len() <= 128).then(|| v.to_string())
        })
    })
}

/// S52: a cookie-authenticated change must come from our own pages, a front end the tenant
/// lists for CORS, or a non-browser.
fn same_site(
    app: &AppState,
    tenant: &gatehouse_storage::model::TenantRecord,
    req: &poem::Request,
) -> Result<(), Problem> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let refused = |why: &str| Problem::new(StatusCode::FORBIDDEN, "cross_site_request", why.to_string());
    if header("origin").is_some_and(|o| tenant.cors_origins.contains(&o.to_ascii_lowercase())) {
        return Ok(());
    }
    if header("sec-fetch-site").as_deref() == Some("cross-site") {
        return Err(refused("a cross-site request cannot change a session"));
    }
    if let Some(origin) = header("origin") {
        if !origin.eq_ignore_ascii_case(&public_origin(&app.public_url)) {
            return Err(refused("the request's Origin is not this server's"));
        }
    }
    Ok(())
}

/// `scheme://host[:port]` of the public URL.
pub(crate) fn public_origin(public_url: &str) -> String {
    match public_url.parse::<poem::http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => public_url.trim_end_matches('/').to_string(),
        },
        Err(_) => public_url.trim_end_matches('/').to_string(),
    }
}

fn view(session: &gatehouse_storage::model::SessionRecord, user: &gatehouse_storage::model::UserRecord) -> SessionView {
    SessionView {
        user: SessionUser { id: user.id.clone(), email: user.email.clone(), display_name: user.display_name.clone() },
        method: session.method.clone(),
        mfa_required: session.pending_mfa,
        mfa_setup_required: session.setup_only,
        created_at_ms: session.created_at_ms,
        expires_at_ms: session.expires_at_ms,
    }
}

pub(super) fn signed_in(s: &SignedIn) -> (Json<SessionView>, String) {
    let max_age = (s.session.expires_at_ms - s.session.created_at_ms) / 1000;
    (Json(view(&s.session, &s.user)), set_cookie(&s.session.tenant, &s.session_id, max_age))
}

/// The tenant of a request that changes a session: its issuer's, from our own pages or a
/// non-browser (S52).
pub(super) fn tenant_for_change(
    app: &AppState,
    scope: &IssuerScope,
    req: &poem::Request,
) -> Result<gatehouse_storage::model::TenantRecord, Problem> {
    let tenant = tenant_of(app, scope)?;
    same_site(app, &tenant, req)?;
    Ok(tenant)
}

/// The presented session id of `tenant`, or 401.
fn session_of(
    req: &poem::Request,
    tenant: gatehouse_storage::model::TenantRecord,
) -> Result<(gatehouse_storage::model::TenantRecord, String), Problem> {
    let id = presented(req, &tenant.id).ok_or_else(not_signed_in)?;
    Ok((tenant, id))
}

/// The signed-in user behind a cookie-authenticated change (S52), or the problem to answer.
pub(super) async fn user_for_change(
    app: &AppState,
    scope: &IssuerScope,
    req: &poem::Request,
) -> Result<gatehouse_storage::model::UserRecord, Problem> {
    let (tenant, id) = tenant_for_change(app, scope, req).and_then(|t| session_of(req, t))?;
    match auth::current(app, &tenant.id, &id).await {
        Ok(Some((_, user))) => Ok(user),
        Ok(None) => Err(not_signed_in()),
        Err(e) => Err(problem_of(e)),
    }
}

/// The signed-in user behind a change of their sign-in factors (an authenticator, a passkey):
/// the session must be a recent sign-in (S48), so a stolen older cookie cannot add one.
pub(super) async fn user_for_factor_change(
    app: &AppState,
    scope: &IssuerScope,
    req: &poem::Request,
) -> Result<gatehouse_storage::model::UserRecord, Problem> {
    user_for_factor(app, scope, req, true).await
}

/// As [`user_for_factor_change`], for removing a factor: never from a setup-only session (it
/// may only add one).
pub(super) async fn user_for_factor_removal(
    app: &AppState,
    scope: &IssuerScope,
    req: &poem::Request,
) -> Result<gatehouse_storage::model::UserRecord, Problem> {
    user_for_factor(app, scope, req, false).await
}

async fn user_for_factor(
    app: &AppState,
    scope: &IssuerScope,
    req: &poem::Request,
    setup_may: bool,
) -> Result<gatehouse_storage::model::UserRecord, Problem> {
    let (tenant, id) = tenant_for_change(app, scope, req).and_then(|t| session_of(req, t))?;
    factor_changer(app, &tenant.id, &id, setup_may)
}

/// The user of session `id` of `tenant` if it may change their sign-in factors now: a recent
/// sign-in (S48), and never a setup-only session when `setup_may` is false.
pub(super) fn factor_changer(
    app: &AppState,
    tenant: &str,
    id: &str,
    setup_may: bool,
) -> Result<gatehouse_storage::model::UserRecord, Problem> {
    let within_secs = app.config.sessions.recent_sign_in_secs;
    let within_ms = i64::try_from(within_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let recent = |s: &gatehouse_storage::model::SessionRecord| {
        app.clock.now_ms() - s.created_at_ms <= within_ms && (setup_may || !s.setup_only)
    };
    match auth::for_factor_change(app, tenant, id) {
        Ok(Some((session, _))) if session.setup_only && !setup_may => Err(not_signed_in()),
        Ok(Some((session, user))) if recent(&session) => Ok(user),
        Ok(Some(_)) => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "reauthentication_required",
            format!("sign in again: sign-in factors change only within {within_secs} s of a sign-in"),
        )),
        Ok(None) => Err(not_signed_in()),
        Err(e) => Err(problem_of(e)),
    }
}

/// The signed-in user behind a read, or the problem to answer.
pub(super) async fn user_signed_in(
    app: &AppState,
    scope: &IssuerScope,
    req: &poem::Request,
) -> Result<gatehouse_storage::model::UserRecord, Problem> {
    let (tenant, id) = tenant_of(app, scope).and_then(|t| session_of(req, t))?;
    match auth::current(app, &tenant.id, &id).await {
        Ok(Some((_, user))) => Ok(user),
        Ok(None) => Err(not_signed_in()),
        Err(e) => Err(problem_of(e)),
    }
}

/// The tenant of the request's issuer; `/t/default/…` is not a second address for `default`.
pub(super) fn tenant_of(
    app: &AppState,
    scope: &IssuerScope,
) -> Result<gatehouse_storage::model::TenantRecord, Problem> {
    match resolve_scope(app, scope) {
        // Platform admins sign in with admin tokens, never with a session of `system`.
        Resolved::Tenant { tenant, .. } if tenant.id == "system" => {
            Err(Problem::not_found("the system tenant has no end-user sign-in"))
        }
        Resolved::Tenant { tenant, .. } => Ok(tenant),
        Resolved::DefaultAtRoot => Err(Problem::not_found("the default tenant signs in at the root: /v1/auth/")),
        Resolved::NotFound(p) | Resolved::Unavailable(p) => Err(p),
    }
}

#[OpenApi(tag = "AuthTag::Auth")]
impl AuthApi {
    /// Create an account and sign in (when the tenant allows self-registration); with
    /// `organization_name`, also an organization the new user owns.
    #[oai(path = "/v1/auth/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<RegisterInput>>,
    ) -> Registered {
        let tenant = match tenant_for_change(&app, &scope, req) {
            Ok(t) => t,
            Err(p) => return Registered::problem(p),
        };
        let b = &body.0 .0;
        let account = NewAccount {
            email: &b.email,
            password: &b.password,
            display_name: b.display_name.as_deref(),
            organization_name: b.organization_name.as_deref(),
        };
        match auth::register(&app, &tenant, account).await {
            Ok(s) => {
                let (view, cookie) = signed_in(&s);
                Registered::New(view, cookie)
            }
            Err(AuthError::RateLimited(wait)) => {
                let (p, after) = too_many(wait, "too many registrations from this source");
                Registered::TooManyRequests(Json(p), after)
            }
            Err(e) => Registered::problem(problem_of(e)),
        }
    }

    /// Sign in with email and password; a new session (and cookie) every time.
    #[oai(path = "/v1/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<LoginInput>>,
    ) -> LoggedIn {
        let tenant = match tenant_for_change(&app, &scope, req) {
            Ok(t) => t,
            Err(p) => return LoggedIn::problem(p),
        };
        match auth::login(&app, &tenant, &body.email, &body.password).await {
            Ok(s) => {
                // The browser's previous session, if any, ends here: it has a new one.
                if let Some(old) = presented(req, &tenant.id) {
                    if let Err(e) = auth::logout(&app, &tenant.id, &old).await {
                        tracing::debug!("the previous session was not ended: {e}");
                    }
                }
                let (view, cookie) = signed_in(&s);
                LoggedIn::Ok(view, cookie)
            }
            Err(AuthError::RateLimited(wait)) => {
                let (p, after) = too_many(wait, "too many failed sign-ins");
                LoggedIn::TooManyRequests(Json(p), after)
            }
            Err(e) => LoggedIn::problem(problem_of(e)),
        }
    }

    /// Sign out: the session ends on the server, and the cookie is cleared.
    #[oai(path = "/v1/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>, req: &poem::Request) -> LoggedOut {
        let tenant = match tenant_for_change(&app, &scope, req) {
            Ok(t) => t,
            Err(p) => return LoggedOut::problem(p),
        };
        if let Some(id) = presented(req, &tenant.id) {
            if let Err(e) = auth::logout(&app, &tenant.id, &id).await {
                return LoggedOut::problem(problem_of(e));
            }
        }
        LoggedOut::Done(set_cookie(&tenant.id, "", 0))
    }

    /// The current session and its user, or 401.
    #[oai(path = "/v1/auth/session", method = "get", operation_id = "session")]
    async fn session(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>, req: &poem::Request) -> Current {
        let (tenant, id) = match tenant_of(&app, &scope).and_then(|t| session_of(req, t)) {
            Ok(v) => v,
            Err(p) => return Current::problem(p),
        };
        match auth::current(&app, &tenant.id, &id).await {
            Ok(Some((session, user))) => Current::Ok(Json(view(&session, &user))),
            Ok(None) => Current::problem(not_signed_in()),
            Err(e) => Current::problem(problem_of(e)),
        }
    }

    /// The signed-in user's live sessions, newest first.
    #[oai(path = "/v1/auth/sessions", method = "get", operation_id = "listSessions")]
    async fn sessions(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>, req: &poem::Request) -> Listed {
        let (tenant, id) = match tenant_of(&app, &scope).and_then(|t| session_of(req, t)) {
            Ok(v) => v,
            Err(p) => return Listed::problem(p),
        };
        match auth::sessions(&app, &tenant.id, &id).await {
            Ok(Some((current, all))) => Listed::Ok(Json(SessionList {
                items: all
                    .into_iter()
                    .map(|s| SessionItem {
                        current: s.id_sha256 == current.id_sha256,
                        id: s.id_sha256,
                        method: s.method,
                        created_at_ms: s.created_at_ms,
                        last_seen_ms: s.last_seen_ms,
                        expires_at_ms: s.expires_at_ms,
                    })
                    .collect(),
            })),
            Ok(None) => Listed::problem(not_signed_in()),
            Err(e) => Listed::problem(problem_of(e)),
        }
    }

    /// End one of the signed-in user's sessions (another device, say).
    #[oai(path = "/v1/auth/sessions/:session", method = "delete", operation_id = "endSession")]
    async fn end_session(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        /// The session's `id` from the list.
        #[oai(validator(pattern = r"^[0-9a-f]{64}$"))]
        session: poem_openapi::param::Path<String>,
    ) -> Ended {
        let (tenant, id) = match tenant_for_change(&app, &scope, req).and_then(|t| session_of(req, t)) {
            Ok(v) => v,
            Err(p) => return Ended::problem(p),
        };
        match auth::end_one(&app, &tenant.id, &id, &session).await {
            Ok(Some(true)) => Ended::Done,
            Ok(Some(false)) => Ended::problem(Problem::not_found("there is no such session of yours")),
            Ok(None) => Ended::problem(not_signed_in()),
            Err(e) => Ended::problem(problem_of(e)),
        }
    }

    /// Start adding an authenticator app: a new secret, shown once (not asked for at sign-in
    /// until confirmed).
    #[oai(path = "/v1/auth/mfa/totp/enroll", method = "post", operation_id = "enrollTotp")]
    async fn enroll_totp(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
    ) -> TotpStarted {
        let user = match user_for_factor_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return TotpStarted::problem(p),
        };
        match mfa::enroll(&app, &user).await {
            Ok(e) => TotpStarted::Ok(Json(TotpEnrolment {
                otpauth_uri: e.otpauth_uri,
                secret: e.secret_base32,
                qr_png_base64: e.qr_png_base64,
            })),
            Err(e) => TotpStarted::problem(problem_of(e)),
        }
    }

    /// Confirm the new authenticator with a code from it; gives the recovery codes, once.
    #[oai(path = "/v1/auth/mfa/totp/confirm", method = "post", operation_id = "confirmTotp")]
    async fn confirm_totp(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<TotpCode>>,
    ) -> TotpConfirmed {
        let user = match user_for_factor_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return TotpConfirmed::problem(p),
        };
        match mfa::confirm(&app, &user, &body.code).await {
            Ok(codes) => TotpConfirmed::Ok(Json(RecoveryCodes { recovery_codes: codes })),
            Err(e) => TotpConfirmed::problem(problem_of(e)),
        }
    }

    /// Complete a sign-in that waits for a second factor (`mfa_required`): a code from the
    /// authenticator app or a recovery code, each good once. A new session (and cookie).
    #[oai(path = "/v1/auth/mfa/totp/challenge", method = "post", operation_id = "totpChallenge")]
    async fn totp_challenge(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<SecondFactor>>,
    ) -> MfaChallenged {
        let (tenant, id) = match tenant_for_change(&app, &scope, req).and_then(|t| session_of(req, t)) {
            Ok(v) => v,
            Err(p) => return MfaChallenged::problem(p),
        };
        let (pending, user) = match auth::pending(&app, &tenant.id, &id) {
            Ok(Some(p)) => p,
            Ok(None) => return MfaChallenged::problem(not_signed_in()),
            Err(e) => return MfaChallenged::problem(problem_of(e)),
        };
        match mfa::challenge(&app, &pending, &user, body.code.as_deref(), body.recovery_code.as_deref()).await {
            Ok(s) => {
                let (view, cookie) = signed_in(&s);
                MfaChallenged::Ok(view, cookie)
            }
            Err(AuthError::RateLimited(wait)) => {
                let (p, after) = too_many(wait, "too many wrong codes");
                MfaChallenged::TooManyRequests(Json(p), after)
            }
            Err(e) => MfaChallenged::problem(problem_of(e)),
        }
    }

    /// Remove the authenticator app; a code from it (or a recovery code) proves it is yours.
    #[oai(path = "/v1/auth/mfa/totp/disable", method = "post", operation_id = "disableTotp")]
    async fn disable_totp(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<SecondFactor>>,
    ) -> TotpRemoved {
        let user = match user_for_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return TotpRemoved::problem(p),
        };
        match mfa::disable(&app, &user, body.code.as_deref(), body.recovery_code.as_deref()).await {
            Ok(()) => TotpRemoved::Done,
            Err(AuthError::RateLimited(wait)) => {
                let (p, after) = too_many(wait, "too many wrong codes");
                TotpRemoved::TooManyRequests(Json(p), after)
            }
            Err(e) => TotpRemoved::problem(problem_of(e)),
        }
    }

    /// End every other session of the signed-in user; the password is asked again.
    #[oai(path = "/v1/auth/sessions/end-others", method = "post", operation_id = "endOtherSessions")]
    async fn end_others(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<Reauthenticate>>,
    ) -> Ended {
        let (tenant, id) = match tenant_for_change(&app, &scope, req).and_then(|t| session_of(req, t)) {
            Ok(v) => v,
            Err(p) => return Ended::problem(p),
        };
        match auth::end_others(&app, &tenant.id, &id, &body.password).await {
            Ok(Some(_)) => Ended::Done,
            Ok(None) => Ended::problem(not_signed_in()),
            Err(AuthError::RateLimited(wait)) => {
                let (p, after) = too_many(wait, "too many failed sign-ins");
                Ended::TooManyRequests(Json(p), after)
            }
            Err(e) => Ended::problem(problem_of(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_origin_is_scheme_host_and_port() {
        assert_eq!(public_origin("https://id.example.com/"), "https://id.example.com");
        assert_eq!(public_origin("https://localhost:8443"), "https://localhost:8443");
    }

    #[test]
    fn a_cookie_is_read_only_under_its_tenants_name() {
        let req = poem::Request::builder()
            .header("cookie", "a=1; __Host-gh_session_acme=xyz; __Host-gh_session_beta=abc")
            .finish();
        assert_eq!(presented(&req, "acme").as_deref(), Some("xyz"));
        assert_eq!(presented(&req, "beta").as_deref(), Some("abc"));
        assert_eq!(presented(&req, "default"), None);
        let cookie = set_cookie("acme", "xyz", 60);
        for attribute in ["__Host-gh_session_acme=xyz", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!cookie.contains("Domain"));
    }
}
