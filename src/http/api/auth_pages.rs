//! The hosted pages under each issuer: `GET` renders one for the browser's session, `POST`
//! takes its forms (a synchronizer token bound to the session, S52) and answers 303 back to
//! the page, or an error page. The sign-in page of an authorization request (rendered by the
//! authorization endpoint) posts here too: its form carries the request, and a sign-in ends
//! with the code for it. Thin adapters over `idm`.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::{Form, Html};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::{clear_cookie, factor_changer, not_signed_in, presented, public_origin, tenant_of};
use super::auth_passkeys::PasskeyTag;
use crate::app::AppState;
use crate::http::api::oidc::{
    answer_signed_in, checked_error, code_response, deliver_error, sign_in_policy, Delivery, SignedInAnswer,
};
use crate::http::issuer::IssuerScope;
use crate::http::pages;
use crate::http::problem::Problem;
use crate::idm::auth::AuthError;
use crate::idm::protocol::OAuthErrorCode;
use crate::idm::{auth, mfa, passkeys};

pub struct PagesApi;

/// The hosted passkey page.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_page_request")]
pub enum PasskeyPage {
    /// The page.
    #[oai(status = 200)]
    Ok(Html<String>),
    /// A malformed query.
    #[oai(status = 400)]
    BadRequest(Html<String>),
    /// No such tenant.
    #[oai(status = 404)]
    NotFound(Html<String>),
    /// This node cannot serve the request now.
    #[oai(status = 503)]
    Unavailable(Html<String>),
}

/// A form of the passkey page (urlencoded: the field limits are checked by the handler).
#[derive(Debug, Object, serde::Deserialize)]
pub struct PasskeyPageForm {
    /// The page's synchronizer token (a hidden field of every form).
    pub form_token: Option<String>,
    /// `sign_out`, or `remove` with `credential`.
    pub action: Option<String>,
    /// The passkey to remove: its id from the list (base64url, at most 1400 characters).
    pub credential: Option<String>,
}

/// The answer to a form of a hosted page.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_form")]
pub enum PageFormAnswer {
    /// Done: back to the page, which says so (signing out also clears the cookie).
    #[oai(status = 303)]
    Done(#[oai(header = "Location")] String, #[oai(header = "Set-Cookie")] Option<String>),
    /// Not a form of this page.
    #[oai(status = 400)]
    BadRequest(Html<String>),
    /// Not signed in, or not recently enough to remove a passkey.
    #[oai(status = 401)]
    Unauthorized(Html<String>),
    /// A cross-site request, or a form without this session's token (an old page, or another
    /// site's).
    #[oai(status = 403)]
    Forbidden(Html<String>),
    /// No such tenant, or no such passkey of yours.
    #[oai(status = 404)]
    NotFound(Html<String>),
    /// This node cannot serve the request now.
    #[oai(status = 503)]
    Unavailable(Html<String>),
}

fn bad_page_request(err: poem::Error) -> PasskeyPage {
    PasskeyPage::BadRequest(Html(pages::error("Not a page", &err.to_string())))
}

fn bad_form(err: poem::Error) -> PageFormAnswer {
    PageFormAnswer::BadRequest(Html(pages::error("Not a form of this page", &err.to_string())))
}

impl PageFormAnswer {
    fn problem(p: Problem) -> Self {
        let page = Html(pages::error("That did not work", &p.detail));
        match p.status {
            400 => Self::BadRequest(page),
            401 => Self::Unauthorized(page),
            403 => Self::Forbidden(page),
            404 => Self::NotFound(page),
            _ => Self::Unavailable(page),
        }
    }
}

/// A hosted page's form comes from the page itself: `Sec-Fetch-Site` same-origin (or absent:
/// not a browser), `Origin` ours, absent or `null` (browsers send `null` for a form posted from
/// a page with `Referrer-Policy: no-referrer`, as ours are). The token does the rest.
fn same_origin_form(app: &AppState, req: &poem::Request) -> Result<(), Problem> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let refused = |why: &str| Problem::new(StatusCode::FORBIDDEN, "cross_site_request", why.to_string());
    if header("sec-fetch-site").is_some_and(|s| !matches!(s, "same-origin" | "none")) {
        return Err(refused("a form of this page must come from this page"));
    }
    match header("origin") {
        None | Some("null") => Ok(()),
        Some(o) if o.eq_ignore_ascii_case(&public_origin(&app.public_url)) => Ok(()),
        Some(_) => Err(refused("the request's Origin is not this server's")),
    }
}

/// What the page says after a step, by the `done` its form or script sent it back with.
fn notice(done: Option<&str>, signed_in: Option<&pages::SignedInView>) -> String {
    match (done, signed_in) {
        (Some("added"), _) => "Passkey added.".into(),
        (Some("removed"), _) => "Passkey removed.".into(),
        (Some("signed-out"), None) => "Signed out.".into(),
        (Some("signed-in"), Some(view)) => format!("Signed in as {}.", view.who),
        _ => String::new(),
    }
}

#[OpenApi(tag = "PasskeyTag::Passkeys")]
impl PagesApi {
    /// The hosted passkey page: a signed-in user adds a passkey, removes one or signs out; a
    /// signed-out one signs in with one.
    #[oai(path = "/v1/auth/passkeys", method = "get", operation_id = "passkeyPage")]
    async fn passkey_page(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        /// The step just done (`added`, `removed`, `signed-in`, `signed-out`), for the status line.
        #[oai(validator(max_length = 32))]
        done: Query<Option<String>>,
    ) -> PasskeyPage {
        let tenant = match tenant_of(&app, &scope) {
            Ok(t) => t,
            Err(p) if p.status == 404 => return PasskeyPage::NotFound(Html(pages::error("Not found", &p.detail))),
            Err(p) => return PasskeyPage::Unavailable(Html(pages::error("Unavailable", &p.detail))),
        };
        let mut signed_in = None;
        if let Some(id) = presented(req, &tenant.id) {
            if let Ok(Some((_, user))) = auth::current(&app, &tenant.id, &id).await {
                let held = match passkeys::list(&app, &user) {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!("the passkey page: {e}");
                        return PasskeyPage::Unavailable(Html(pages::error(
                            "Unavailable",
                            "this node cannot serve the request now",
                        )));
                    }
                };
                signed_in = Some(pages::SignedInView {
                    who: user.email.clone().unwrap_or_else(|| user.display_name.clone()),
                    form_token: pages::form_token(&app.cipher, &tenant.id, &id),
                    passkeys: held.into_iter().map(|p| (p.credential_id, p.name)).collect(),
                });
            }
        }
        let notice = notice(done.0.as_deref(), signed_in.as_ref());
        PasskeyPage::Ok(Html(pages::passkeys(signed_in.as_ref(), &notice)))
    }

    /// The passkey page's forms: sign out, or remove a passkey (which needs a recent sign-in).
    /// Each carries the page's synchronizer token; without this session's, nothing changes.
    #[oai(path = "/v1/auth/passkeys", method = "post", operation_id = "passkeyPageForm")]
    async fn passkey_page_form(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        form: Form<PasskeyPageForm>,
    ) -> PageFormAnswer {
        let tenant = match tenant_of(&app, &scope).and_then(|t| same_origin_form(&app, req).map(|()| t)) {
            Ok(t) => t,
            Err(p) => return PageFormAnswer::problem(p),
        };
        let Some(id) = presented(req, &tenant.id) else { return PageFormAnswer::problem(not_signed_in()) };
        let token = form.form_token.as_deref().unwrap_or("");
        if !pages::form_token_matches(&app.cipher, &tenant.id, &id, token) {
            return PageFormAnswer::problem(Problem::new(
                StatusCode::FORBIDDEN,
                "stale_form",
                "this form is not from your current page: reload the page and try again",
            ));
        }
        // The request path has lost the tenant's `/t/{tenant}` (issuer::scope); put it back.
        let back = |done: &str| format!("{}{}?done={done}", scope.path_prefix(), req.uri().path());
        match (form.action.as_deref(), form.credential.as_deref()) {
            (Some("sign_out"), _) => match auth::logout(&app, &tenant.id, &id).await {
                Ok(()) => PageFormAnswer::Done(back("signed-out"), Some(clear_cookie(&tenant.id))),
                Err(e) => PageFormAnswer::problem(super::auth::problem_of(e)),
            },
            (Some("remove"), Some(credential))
                if credential.len() <= 1400
                    && credential.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                let user = match factor_changer(&app, &tenant.id, &id, false) {
                    Ok(u) => u,
                    Err(p) => return PageFormAnswer::problem(p),
                };
                match passkeys::delete(&app, &user, credential).await {
                    Ok(true) => PageFormAnswer::Done(back("removed"), None),
                    Ok(false) => PageFormAnswer::problem(Problem::not_found("there is no such passkey of yours")),
                    Err(e) => PageFormAnswer::problem(super::auth::problem_of(e)),
                }
            }
            _ => PageFormAnswer::problem(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "action must be sign_out, or remove with credential",
            )),
        }
    }

    /// The sign-in page's form: signs in (password, then the authenticator app's code when the
    /// account has one) and then answers the authorization request it carries, with a code.
    #[oai(
        path = "/v1/auth/sign-in",
        method = "post",
        operation_id = "signInPageForm",
        tag = "crate::http::api::oidc::OidcTag::OAuth2"
    )]
    async fn sign_in_form(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        form: Form<SignInPageForm>,
    ) -> SignInAnswer {
        use crate::idm::authorize::{self, AuthorizeParams, Refusal};
        let tenant = match tenant_of(&app, &scope).and_then(|t| same_origin_form(&app, req).map(|()| t)) {
            Ok(t) => t,
            Err(p) => return SignInAnswer::problem(p),
        };
        let too_long = |v: &Option<String>, max: usize| v.as_ref().is_some_and(|v| v.chars().count() > max);
        if too_long(&form.request, MAX_REQUEST_CHARS)
            || too_long(&form.email, 320)
            || too_long(&form.password, 1024)
            || too_long(&form.code, 64)
            || too_long(&form.recovery_code, 64)
            || too_long(&form.form_token, 64)
        {
            return SignInAnswer::problem(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a field is too long",
            ));
        }
        // Login CSRF (S52): the form must carry the token of the page's own cookie.
        let token = form.form_token.clone().unwrap_or_default();
        let page_cookie = super::auth::presented_sign_in(req, &tenant.id);
        if !page_cookie.is_some_and(|c| pages::sign_in_token_matches(&app.cipher, &tenant.id, &c, &token)) {
            return SignInAnswer::problem(Problem::new(
                StatusCode::FORBIDDEN,
                "stale_form",
                "this form is not from your sign-in page: go back to the application and sign in again",
            ));
        }
        let request = form.request.clone().unwrap_or_default();
        let issuer = app.issuer_of(&tenant.id);
        let checked = match authorize::check(&app, &tenant.id, &AuthorizeParams::parse(&request)) {
            Ok(c) => c,
            Err(Refusal::Page { error, description }) => {
                return SignInAnswer::BadRequest(Html(pages::error(
                    "This sign-in request cannot be completed",
                    &format!("{description} (error code: {error})."),
                )))
            }
            Err(Refusal::Redirect(e)) => return SignInAnswer::delivered(deliver_error(&e, &issuer), None),
        };
        let action = format!("{}/v1/auth/sign-in", scope.path_prefix());
        let view = pages::SignInForm {
            client_name: &checked.client.name,
            action: &action,
            request: &request,
            form_token: &token,
        };
        let policy = sign_in_policy(&checked.redirect_uri);
        let signed_in = match form.step.as_deref() {
            Some("password") => {
                let email = form.email.as_deref().unwrap_or("");
                match auth::login(&app, &tenant, email, form.password.as_deref().unwrap_or("")).await {
                    Ok(s) => {
                        // The browser's previous session, if any, ends here: it has a new one.
                        if let Some(old) = presented(req, &tenant.id) {
                            if let Err(e) = auth::logout(&app, &tenant.id, &old).await {
                                tracing::debug!("the previous session was not ended: {e}");
                            }
                        }
                        s
                    }
                    Err(AuthError::BadCredentials) => {
                        let notice = "That email and password do not match an account.";
                        return SignInAnswer::Unauthorized(
                            Html(pages::sign_in(&view, email, notice)),
                            Some(policy.clone()),
                        );
                    }
                    Err(AuthError::RateLimited(wait)) => {
                        let notice = format!("Too many failed sign-ins: try again in {} s.", wait.secs());
                        let page = Html(pages::sign_in(&view, email, &notice));
                        return SignInAnswer::TooManyRequests(page, wait.secs().to_string(), Some(policy.clone()));
                    }
                    Err(e) => return SignInAnswer::problem(super::auth::problem_of(e)),
                }
            }
            Some("totp") => {
                let pending = presented(req, &tenant.id).map(|id| auth::pending(&app, &tenant.id, &id));
                let (pending, user) = match pending {
                    Some(Ok(Some(p))) => p,
                    Some(Err(e)) => return SignInAnswer::problem(super::auth::problem_of(e)),
                    _ => {
                        let notice = "The sign-in has ended: sign in again.";
                        return SignInAnswer::Unauthorized(
                            Html(pages::sign_in(&view, "", notice)),
                            Some(policy.clone()),
                        );
                    }
                };
                let (code, recovery) = match form.recovery_code.as_deref().filter(|r| !r.trim().is_empty()) {
                    Some(recovery) => (None, Some(recovery)),
                    None => (form.code.as_deref(), None),
                };
                match mfa::challenge(&app, &pending, &user, code, recovery).await {
                    Ok(s) => s,
                    Err(AuthError::BadCode | AuthError::Invalid(_)) => {
                        let notice = "That code is not right, or was used already.";
                        return SignInAnswer::Unauthorized(
                            Html(pages::second_step(&view, notice)),
                            Some(policy.clone()),
                        );
                    }
                    Err(AuthError::RateLimited(wait)) => {
                        let notice = format!("Too many wrong codes: try again in {} s.", wait.secs());
                        let page = Html(pages::second_step(&view, &notice));
                        return SignInAnswer::TooManyRequests(page, wait.secs().to_string(), Some(policy.clone()));
                    }
                    Err(e) => return SignInAnswer::problem(super::auth::problem_of(e)),
                }
            }
            _ => {
                return SignInAnswer::problem(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "step must be password or totp",
                ))
            }
        };
        let (_, cookie) = super::auth::signed_in(&signed_in);
        if signed_in.session.pending_mfa {
            return SignInAnswer::Page(Html(pages::second_step(&view, "")), Some(cookie), Some(policy));
        }
        if signed_in.session.setup_only {
            return SignInAnswer::Forbidden(Html(pages::error(
                "Add a second factor first",
                "This account must have a second factor before it signs in to applications: add an \
                 authenticator app or a passkey, then sign in again.",
            )));
        }
        let next =
            answer_signed_in(&app, &checked, &signed_in.session, &signed_in.session_id, &scope, &request, &issuer)
                .await;
        match next {
            SignedInAnswer::Deliver(delivery) => SignInAnswer::delivered(delivery, Some(cookie)),
            SignedInAnswer::Consent(page) => SignInAnswer::Page(Html(page), Some(cookie), Some(policy)),
            SignedInAnswer::SignInAgain => SignInAnswer::Unauthorized(
                Html(pages::sign_in(&view, "", "The sign-in has ended: sign in again.")),
                Some(policy.clone()),
            ),
        }
    }

    /// The consent page's form: the signed-in user allows the client what it asked for (then
    /// it gets its code, and is not asked again for those scopes) or denies it
    /// (`access_denied`). It carries the request and this session's synchronizer token.
    #[oai(
        path = "/v1/auth/consent",
        method = "post",
        operation_id = "consentPageForm",
        tag = "crate::http::api::oidc::OidcTag::OAuth2"
    )]
    async fn consent_form(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        form: Form<ConsentPageForm>,
    ) -> SignInAnswer {
        use crate::idm::authorize::{self, AuthorizeParams, CodeRefusal, Refusal};
        let tenant = match tenant_of(&app, &scope).and_then(|t| same_origin_form(&app, req).map(|()| t)) {
            Ok(t) => t,
            Err(p) => return SignInAnswer::problem(p),
        };
        let request = form.request.clone().unwrap_or_default();
        if request.chars().count() > MAX_REQUEST_CHARS || form.form_token.as_ref().is_some_and(|t| t.len() > 64) {
            return SignInAnswer::problem(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a field is too long",
            ));
        }
        let Some(id) = presented(req, &tenant.id) else { return SignInAnswer::problem(not_signed_in()) };
        let session = match auth::current(&app, &tenant.id, &id).await {
            Ok(Some((session, _))) => session,
            Ok(None) => return SignInAnswer::problem(not_signed_in()),
            Err(e) => return SignInAnswer::problem(super::auth::problem_of(e)),
        };
        if !pages::form_token_matches(&app.cipher, &tenant.id, &id, form.form_token.as_deref().unwrap_or("")) {
            return SignInAnswer::problem(Problem::new(
                StatusCode::FORBIDDEN,
                "stale_form",
                "this form is not from your current page: start the sign-in again",
            ));
        }
        let issuer = app.issuer_of(&tenant.id);
        let checked = match authorize::check(&app, &tenant.id, &AuthorizeParams::parse(&request)) {
            Ok(c) => c,
            Err(Refusal::Page { error, description }) => {
                return SignInAnswer::BadRequest(Html(pages::error(
                    "This sign-in request cannot be completed",
                    &format!("{description} (error code: {error})."),
                )))
            }
            Err(Refusal::Redirect(e)) => return SignInAnswer::delivered(deliver_error(&e, &issuer), None),
        };
        let back = |error, why: &str| {
            SignInAnswer::delivered(deliver_error(&checked_error(&checked, error, why), &issuer), None)
        };
        match form.decision.as_deref() {
            Some("deny") => return back(OAuthErrorCode::AccessDenied, "the user did not allow the request"),
            Some("allow") => {}
            _ => {
                return SignInAnswer::problem(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "decision must be allow or deny",
                ))
            }
        }
        match authorize::grant_consent(&app, &checked, &session).await {
            Ok(()) => {}
            Err(CodeRefusal::SignInAgain(_)) => return SignInAnswer::problem(not_signed_in()),
            Err(CodeRefusal::Unavailable(e)) => {
                tracing::warn!("consent: {e}");
                return back(OAuthErrorCode::TemporarilyUnavailable, "this node cannot serve the request now");
            }
        }
        match code_response(&app, &checked, &session, &issuer).await {
            Some(delivery) => SignInAnswer::delivered(delivery, None),
            None => SignInAnswer::problem(not_signed_in()),
        }
    }
}

/// The sign-in page's form (urlencoded: the field limits are checked by the handler).
#[derive(Debug, Object, serde::Deserialize)]
pub struct SignInPageForm {
    /// The authorization request's query, as the page carried it (at most 8192 characters).
    pub request: Option<String>,
    /// The page's synchronizer token, bound to the page's cookie.
    pub form_token: Option<String>,
    /// `password` (with `email` and `password`) or `totp` (with `code` or `recovery_code`,
    /// in the sign-in that waits for it).
    pub step: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub code: Option<String>,
    pub recovery_code: Option<String>,
}

/// The consent page's form.
#[derive(Debug, Object, serde::Deserialize)]
pub struct ConsentPageForm {
    /// The authorization request's query, as the page carried it (at most 8192 characters).
    pub request: Option<String>,
    /// The page's synchronizer token.
    pub form_token: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
}

/// The answer to the sign-in page's form.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_sign_in")]
pub enum SignInAnswer {
    /// Signed in: back to the client with a code (query response mode).
    #[oai(status = 303)]
    Redirect(#[oai(header = "Location")] String, #[oai(header = "Set-Cookie")] Option<String>),
    /// The next step's page (a code from the authenticator app, or the consent page), or the
    /// page that posts the response to the client (form_post response mode).
    #[oai(status = 200)]
    Page(
        Html<String>,
        #[oai(header = "Set-Cookie")] Option<String>,
        #[oai(header = "Content-Security-Policy")] Option<String>,
    ),
    /// Not a form of this page, or a request that cannot go back to its client.
    #[oai(status = 400)]
    BadRequest(Html<String>),
    /// The email, password or code is not right: the page again, saying so. Or (consent) not
    /// signed in.
    #[oai(status = 401)]
    Unauthorized(Html<String>, #[oai(header = "Content-Security-Policy")] Option<String>),
    /// A cross-site form, a consent form without this session's token, or an account that
    /// must add a second factor first.
    #[oai(status = 403)]
    Forbidden(Html<String>),
    /// No such tenant.
    #[oai(status = 404)]
    NotFound(Html<String>),
    /// Too many failed sign-ins: the page again; retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Html<String>,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Content-Security-Policy")] Option<String>,
    ),
    /// This node cannot serve the request now.
    #[oai(status = 503)]
    Unavailable(Html<String>),
}

fn bad_sign_in(err: poem::Error) -> SignInAnswer {
    SignInAnswer::BadRequest(Html(pages::error("Not a sign-in form", &err.to_string())))
}

impl SignInAnswer {
    fn problem(p: Problem) -> Self {
        let page = Html(pages::error("That did not work", &p.detail));
        match p.status {
            400 => Self::BadRequest(page),
            401 => Self::Unauthorized(page, None),
            403 => Self::Forbidden(page),
            404 => Self::NotFound(page),
            _ => Self::Unavailable(page),
        }
    }

    fn delivered(d: Delivery, cookie: Option<String>) -> Self {
        match d {
            Delivery::Redirect(location) => Self::Redirect(location, cookie),
            Delivery::FormPost { html, csp } => Self::Page(Html(html), cookie, Some(csp)),
        }
    }
}

/// The longest authorization request a sign-in form carries back.
const MAX_REQUEST_CHARS: usize = 8192;
