//! The hosted pages under each issuer: `GET` renders one for the browser's session, `POST`
//! takes its forms (a synchronizer token bound to the session, S52) and answers 303 back to
//! the page, or an error page. Thin adapters over `idm`.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::{Form, Html};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::auth::{clear_cookie, factor_changer, not_signed_in, presented, public_origin, tenant_of};
use super::auth_passkeys::PasskeyTag;
use crate::app::AppState;
use crate::http::issuer::IssuerScope;
use crate::http::pages;
use crate::http::problem::Problem;
use crate::idm::{auth, passkeys};

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
}
