//! Email under each issuer, `{issuer}/v1/auth/…`: sign-in codes and links, password reset and
//! address checks. Thin adapters over `idm::email`. A request for a message answers 202 alike
//! for every address (S41); the links in messages lead to small pages here that send the
//! token with a click (so a mail scanner that fetches links spends nothing).

use std::sync::Arc;

use gatehouse_storage::model::EmailPurpose;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::auth::{
    auth_answer, bad_request, problem_of, signed_in, tenant_for_change, tenant_of, too_many, FromProblem, SessionView,
};
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::issuer::IssuerScope;
use crate::http::problem::Problem;
use crate::idm::auth::AuthError;
use crate::idm::email;

#[derive(Tags)]
enum EmailTag {
    /// Sign-in codes and links by email, password reset and address checks.
    Email,
}

pub struct EmailAuthApi;

/// Whom to send a message to.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct EmailAddress {
    #[oai(validator(max_length = 254))]
    pub email: String,
}

/// The request was taken: a message is on its way if the address belongs to an account.
#[derive(Debug, Object)]
pub struct Accepted {
    pub detail: String,
}

/// A sign-in code from a message.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct EmailCode {
    #[oai(validator(max_length = 254))]
    pub email: String,
    #[oai(validator(max_length = 16))]
    pub code: String,
}

/// The token of a link from a message.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct LinkToken {
    #[oai(validator(max_length = 128))]
    pub token: String,
}

/// A new password, with the token of a reset link.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct NewPassword {
    #[oai(validator(max_length = 128))]
    pub token: String,
    #[oai(validator(max_length = 1024))]
    pub password: String,
}

auth_answer! {
    /// A message requested.
    Requested {
        /// Taken; the same answer whether the address belongs to an account or not.
        #[oai(status = 202)]
        Accepted(Json<Accepted>),
    }
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The answer to a sign-in by code or link.
    EmailSignedIn {
        /// Signed in: a new session, and its cookie (`mfa_required` when a second factor is
        /// still to come).
        #[oai(status = 200)]
        Ok(Json<SessionView>, #[oai(header = "Set-Cookie")] String),
    }
    401 Unauthorized "The code is not right, has expired or was used already.",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The answer to a link's token.
    Redeemed {
        /// Done.
        #[oai(status = 204)]
        Done,
    }
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

/// A page a link in a message leads to.
#[derive(ApiResponse)]
pub enum LinkPage {
    /// A page that sends the link's token with a click.
    #[oai(status = 200)]
    Ok(Html<String>, #[oai(header = "Cache-Control")] String, #[oai(header = "Referrer-Policy")] String),
    /// No such tenant.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// This node cannot serve the request now.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

fn accepted() -> Requested {
    Requested::Accepted(Json(Accepted {
        detail: "if the address belongs to an account, a message is on its way".into(),
    }))
}

async fn requested(
    app: &AppState,
    scope: &IssuerScope,
    req: &poem::Request,
    email: &str,
    purpose: EmailPurpose,
) -> Requested {
    let tenant = match tenant_for_change(app, scope, req) {
        Ok(t) => t,
        Err(p) => return Requested::problem(p),
    };
    match email::request(app, &tenant, email, purpose) {
        Ok(()) => accepted(),
        Err(AuthError::RateLimited(wait)) => {
            let (p, after) = too_many(wait, "too many email requests from this source");
            Requested::TooManyRequests(Json(p), after)
        }
        Err(e) => Requested::problem(problem_of(e)),
    }
}

fn redeemed(result: Result<(), AuthError>) -> Redeemed {
    match result {
        Ok(()) => Redeemed::Done,
        Err(AuthError::RateLimited(wait)) => {
            let (p, after) = too_many(wait, "too many attempts");
            Redeemed::TooManyRequests(Json(p), after)
        }
        Err(e) => Redeemed::problem(problem_of(e)),
    }
}

/// The page behind a link (`pages::link`), for an issuer that exists.
fn link_page(app: &AppState, scope: &IssuerScope, title: &str, action: &str, with_password: bool) -> LinkPage {
    match tenant_of(app, scope) {
        Ok(_) => LinkPage::Ok(
            Html(crate::http::pages::link(title, action, with_password)),
            "no-store".into(),
            "no-referrer".into(),
        ),
        Err(p) if p.status == 404 => LinkPage::NotFound(Json(p)),
        Err(p) => LinkPage::Unavailable(Json(p)),
    }
}

#[OpenApi(tag = "EmailTag::Email")]
impl EmailAuthApi {
    /// Ask for a password reset link by email. The answer is the same for every address.
    #[oai(path = "/v1/auth/password/forgot", method = "post", operation_id = "forgotPassword")]
    async fn forgot(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<EmailAddress>>,
    ) -> Requested {
        requested(&app, &scope, req, &body.email, EmailPurpose::PasswordReset).await
    }

    /// Set a new password with the token of a reset link; every session of the user ends.
    #[oai(path = "/v1/auth/password/reset", method = "post", operation_id = "resetPassword")]
    async fn reset(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<NewPassword>>,
    ) -> Redeemed {
        match tenant_for_change(&app, &scope, req) {
            Ok(tenant) => redeemed(email::reset_password(&app, &tenant, &body.token, &body.password).await),
            Err(p) => Redeemed::problem(p),
        }
    }

    /// The page a reset link opens.
    #[oai(path = "/v1/auth/password/reset", method = "get", operation_id = "resetPasswordPage")]
    async fn reset_page(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>) -> LinkPage {
        link_page(&app, &scope, "Choose a new password", "Set the password", true)
    }

    /// Confirm the address with the token of a verification link.
    #[oai(path = "/v1/auth/email/verify", method = "post", operation_id = "verifyEmail")]
    async fn verify(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<LinkToken>>,
    ) -> Redeemed {
        match tenant_for_change(&app, &scope, req) {
            Ok(tenant) => redeemed(email::verify(&app, &tenant, &body.token).await),
            Err(p) => Redeemed::problem(p),
        }
    }

    /// The page a verification link opens.
    #[oai(path = "/v1/auth/email/verify", method = "get", operation_id = "verifyEmailPage")]
    async fn verify_page(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>) -> LinkPage {
        link_page(&app, &scope, "Confirm your email address", "Confirm", false)
    }

    /// Ask for a six-digit sign-in code by email. The answer is the same for every address.
    #[oai(path = "/v1/auth/email-otp/request", method = "post", operation_id = "requestEmailCode")]
    async fn request_code(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<EmailAddress>>,
    ) -> Requested {
        requested(&app, &scope, req, &body.email, EmailPurpose::SignInCode).await
    }

    /// Sign in with a code from a message; each code works once. Wrong codes count against
    /// the account like wrong passwords.
    #[oai(path = "/v1/auth/email-otp/verify", method = "post", operation_id = "signInWithEmailCode")]
    async fn verify_code(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<EmailCode>>,
    ) -> EmailSignedIn {
        let tenant = match tenant_for_change(&app, &scope, req) {
            Ok(t) => t,
            Err(p) => return EmailSignedIn::problem(p),
        };
        signed_in_answer(email::sign_in_with_code(&app, &tenant, &body.email, &body.code).await)
    }

    /// Ask for a sign-in link by email. The answer is the same for every address.
    #[oai(path = "/v1/auth/magic-link/request", method = "post", operation_id = "requestSignInLink")]
    async fn request_link(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<EmailAddress>>,
    ) -> Requested {
        requested(&app, &scope, req, &body.email, EmailPurpose::SignInLink).await
    }

    /// Sign in with the token of a sign-in link; each link works once.
    #[oai(path = "/v1/auth/magic-link/consume", method = "post", operation_id = "signInWithLink")]
    async fn consume_link(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<LinkToken>>,
    ) -> EmailSignedIn {
        let tenant = match tenant_for_change(&app, &scope, req) {
            Ok(t) => t,
            Err(p) => return EmailSignedIn::problem(p),
        };
        signed_in_answer(email::sign_in_with_link(&app, &tenant, &body.token).await)
    }

    /// The page a sign-in link opens.
    #[oai(path = "/v1/auth/magic-link/consume", method = "get", operation_id = "signInWithLinkPage")]
    async fn consume_page(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>) -> LinkPage {
        link_page(&app, &scope, "Sign in", "Sign in", false)
    }
}

fn signed_in_answer(result: Result<crate::idm::auth::SignedIn, AuthError>) -> EmailSignedIn {
    match result {
        Ok(s) => {
            let (view, cookie) = signed_in(&s);
            EmailSignedIn::Ok(view, cookie)
        }
        Err(AuthError::RateLimited(wait)) => {
            let (p, after) = too_many(wait, "too many failed sign-ins");
            EmailSignedIn::TooManyRequests(Json(p), after)
        }
        Err(e) => EmailSignedIn::problem(problem_of(e)),
    }
}
