//! The hosted pages: small, server-rendered, one shared script from this origin (the pages'
//! CSP runs nothing inline), no framework. Their forms post back to the page with a
//! synchronizer token bound to the session. The email link pages, the passkey page and the
//! sign-in pages of an authorization request live here.

/// The pages' script, served at [`SCRIPT_PATH`].
pub const SCRIPT: &str = include_str!("auth.js");
pub const SCRIPT_PATH: &str = "/assets/auth.js";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A page: `main` is markup; `notice` is text for the status line (a step's outcome).
fn page(kind: &str, title: &str, main: &str, notice: &str) -> String {
    let (title, notice) = (escape(title), escape(notice));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}\
         button,input{{font-size:1rem;padding:.5rem;margin:.25rem 0}}label{{display:block}}</style></head>\n\
         <body data-page=\"{kind}\"><main><h1>{title}</h1>\n{main}\n<p id=\"status\" role=\"status\" aria-live=\"polite\">{notice}</p>\
         </main>\n<script src=\"{SCRIPT_PATH}\"></script></body></html>\n"
    )
}

/// The page a link in a message opens: a button that posts its token (and, for a reset, a new
/// password) as JSON to the same path. Nothing is spent until the button is pressed.
pub fn link(title: &str, action: &str, with_password: bool) -> String {
    let password = if with_password {
        "<label>New password <input id=\"password\" type=\"password\" autocomplete=\"new-password\" \
         minlength=\"15\" maxlength=\"256\" required></label>"
    } else {
        ""
    };
    page(
        "link",
        title,
        &format!("<form id=\"form\">{password}<button type=\"submit\">{}</button></form>", escape(action)),
        "",
    )
}

/// The signed-in user as the passkey page shows them.
pub struct SignedInView {
    /// Their email address or name.
    pub who: String,
    /// The synchronizer token every form of the page carries ([`form_token`]).
    pub form_token: String,
    /// Their passkeys: credential id and name.
    pub passkeys: Vec<(String, String)>,
}

/// A form that posts `action` (and `fields`) back to the page's own URL with the token.
fn form(token: &str, action: &str, fields: &[(&str, &str)], button: &str, button_id: &str) -> String {
    let hidden: String = fields
        .iter()
        .map(|(name, value)| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value)))
        .collect();
    let id = if button_id.is_empty() { String::new() } else { format!(" id=\"{button_id}\"") };
    format!(
        "<form method=\"post\"><input type=\"hidden\" name=\"form_token\" value=\"{}\">\
         <input type=\"hidden\" name=\"action\" value=\"{action}\">{hidden}<button type=\"submit\"{id}>{}</button></form>",
        escape(token),
        escape(button)
    )
}

/// The passkey page: a signed-in user adds a passkey (script), removes one or signs out
/// (forms); a signed-out one signs in with one (script). `notice` is the outcome of the last
/// step, shown in the status line.
pub fn passkeys(signed_in: Option<&SignedInView>, notice: &str) -> String {
    let main = match signed_in {
        Some(view) => {
            let items: String = view
                .passkeys
                .iter()
                .map(|(id, name)| {
                    let remove = form(&view.form_token, "remove", &[("credential", id)], "Remove", "");
                    format!("<li>{} {remove}</li>", escape(name))
                })
                .collect();
            format!(
                "<p id=\"who\">Signed in as {}.</p>\n<button id=\"add\" type=\"button\">Add a passkey</button>\n\
                 <ul id=\"list\">{items}</ul>\n{}",
                escape(&view.who),
                form(&view.form_token, "sign_out", &[], "Sign out", "signout")
            )
        }
        None => {
            "<p id=\"who\">Not signed in.</p>\n<button id=\"signin\" type=\"button\">Sign in with a passkey</button>"
                .to_string()
        }
    };
    page("passkeys", "Passkeys", &main, notice)
}

/// Where a sign-in page's form goes, and what it carries back: the authorization request.
pub struct SignInForm<'a> {
    /// The client's name, as the page names it.
    pub client_name: &'a str,
    /// The form's action: the issuer's `/v1/auth/sign-in`.
    pub action: &'a str,
    /// The authorization request's query, which the form posts back.
    pub request: &'a str,
    /// The form's synchronizer token ([`sign_in_token`]; [`form_token`] on the consent page).
    pub form_token: &'a str,
}

fn sign_in_form(form: &SignInForm<'_>, step: &str, fields: &str, button: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"request\" value=\"{}\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{}\">\
         <input type=\"hidden\" name=\"step\" value=\"{step}\">{fields}<button type=\"submit\">{button}</button></form>",
        escape(form.action),
        escape(form.request),
        escape(form.form_token),
    )
}

/// The sign-in page of an authorization request: email and password.
pub fn sign_in(form: &SignInForm<'_>, email: &str, notice: &str) -> String {
    let fields = format!(
        "<label>Email <input name=\"email\" type=\"email\" autocomplete=\"username\" maxlength=\"320\" \
         required autofocus value=\"{}\"></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" \
         maxlength=\"256\" required></label>",
        escape(email)
    );
    let title = format!("Sign in to {}", form.client_name);
    page("sign-in", &title, &sign_in_form(form, "password", &fields, "Sign in"), notice)
}

/// The second step of a sign-in: a code from the user's authenticator app, or a recovery code.
pub fn second_step(form: &SignInForm<'_>, notice: &str) -> String {
    let fields = "<label>Code from your authenticator app <input name=\"code\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" maxlength=\"64\" autofocus></label>\
         <label>Or one of your recovery codes <input name=\"recovery_code\" autocomplete=\"off\" maxlength=\"64\"></label>";
    let title = format!("Sign in to {}", form.client_name);
    page("second-step", &title, &sign_in_form(form, "totp", fields, "Continue"), notice)
}

/// What a scope lets a client see, as the consent page says it.
fn scope_text(scope: &str) -> String {
    match scope {
        "openid" => "Know who you are (your account's identifier)".into(),
        "profile" => "See your name, username and language".into(),
        "email" => "See your email address".into(),
        "roles" => "See your roles here".into(),
        "offline_access" => "Keep access while you are away".into(),
        other => format!("Use “{other}” on your behalf"),
    }
}

/// The consent page: what `form.client_name` asks for, and two buttons. Its form carries the
/// request and this session's synchronizer token.
pub fn consent(form: &SignInForm<'_>, scopes: &[String]) -> String {
    let items: String = scopes.iter().map(|s| format!("<li>{}</li>", escape(&scope_text(s)))).collect();
    let main = format!(
        "<p>{} would like to:</p><ul>{items}</ul>\
         <form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"request\" value=\"{}\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        escape(form.client_name),
        escape(form.action),
        escape(form.request),
        escape(form.form_token),
    );
    page("consent", &format!("Allow {}?", form.client_name), &main, "")
}

/// The form-post response mode's page: it posts `params` to the client's `redirect_uri` (the
/// script submits it; without script, the button does).
pub fn form_post(redirect_uri: &str, params: &[(&str, String)]) -> String {
    let hidden: String = params
        .iter()
        .map(|(name, value)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(name), escape(value)))
        .collect();
    let main = format!(
        "<form id=\"response\" method=\"post\" action=\"{}\">{hidden}<button type=\"submit\">Continue</button></form>",
        escape(redirect_uri)
    );
    page("form-post", "Signing you in", &main, "")
}

/// The sign-out confirmation of a logout request that did not prove who asked: a form (the
/// session's synchronizer token, and the request's own fields) that posts to `action`.
pub fn sign_out(action: &str, form_token: &str, fields: &[(&str, &str)], who: &str) -> String {
    let hidden: String = fields
        .iter()
        .map(|(name, value)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(name), escape(value)))
        .collect();
    let main = format!(
        "<p>You are signed in as {}.</p><form method=\"post\" action=\"{}\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{}\">{hidden}\
         <button type=\"submit\" name=\"confirm\" value=\"yes\">Sign out</button></form>",
        escape(who),
        escape(action),
        escape(form_token)
    );
    page("sign-out", "Sign out?", &main, "")
}

/// The page after a logout with nowhere to go back to.
pub fn signed_out() -> String {
    page("signed-out", "Signed out", "<p>You are signed out.</p>", "")
}

/// An error page: what went wrong and a way back.
pub fn error(title: &str, detail: &str) -> String {
    page("error", title, &format!("<p>{}</p>\n<p><a href=\"\">Back</a></p>", escape(detail)), "")
}

/// The synchronizer token of a hosted page's forms for one session (S52): a keyed digest of
/// the session, so a page of this session on any node makes it, and no other page can.
pub fn form_token(cipher: &crate::crypto::SecretCipher, tenant: &str, session_id: &str) -> String {
    let session = crate::idm::auth::session_digest(session_id);
    let mut token = cipher.keyed_digest("hosted-form-token", format!("{tenant}\n{session}").as_bytes());
    token.truncate(32);
    token
}

/// The synchronizer token of the sign-in page's forms, before anyone is signed in (S52): a
/// keyed digest of the page's own cookie, so a form only posts with the cookie the page set,
/// which another site can neither read nor set (`__Host-`). Nothing is stored.
pub fn sign_in_token(cipher: &crate::crypto::SecretCipher, tenant: &str, cookie: &str) -> String {
    let mut token = cipher.keyed_digest("sign-in-form-token", format!("{tenant}\n{cookie}").as_bytes());
    token.truncate(32);
    token
}

/// Whether `presented` is the sign-in form token for `cookie` (compared in constant time).
pub fn sign_in_token_matches(
    cipher: &crate::crypto::SecretCipher,
    tenant: &str,
    cookie: &str,
    presented: &str,
) -> bool {
    let expected = sign_in_token(cipher, tenant, cookie);
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), presented.as_bytes()).is_ok()
}

/// Whether `presented` is the form token of this session (compared in constant time).
pub fn form_token_matches(
    cipher: &crate::crypto::SecretCipher,
    tenant: &str,
    session_id: &str,
    presented: &str,
) -> bool {
    let expected = form_token(cipher, tenant, session_id);
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), presented.as_bytes()).is_ok()
}
