//! The hosted pages: small, server-rendered, one shared script from this origin (the pages'
//! CSP runs nothing inline), no framework. The email link pages and the passkey page live
//! here; the OIDC sign-in pages will build on them.

/// The pages' script, served at [`SCRIPT_PATH`].
pub const SCRIPT: &str = include_str!("auth.js");
pub const SCRIPT_PATH: &str = "/assets/auth.js";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(kind: &str, title: &str, main: &str) -> String {
    let title = escape(title);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}\
         button,input{{font-size:1rem;padding:.5rem;margin:.25rem 0}}label{{display:block}}</style></head>\n\
         <body data-page=\"{kind}\"><main><h1>{title}</h1>\n{main}\n<p id=\"status\" role=\"status\" aria-live=\"polite\"></p>\
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
    )
}

/// The passkey page: a signed-in user adds a passkey, a signed-out one signs in with one.
pub fn passkeys() -> String {
    page(
        "passkeys",
        "Passkeys",
        "<p id=\"who\"></p>\n<button id=\"add\" type=\"button\" hidden>Add a passkey</button>\n\
         <button id=\"signin\" type=\"button\" hidden>Sign in with a passkey</button>\n\
         <button id=\"signout\" type=\"button\" hidden>Sign out</button>\n<ul id=\"list\"></ul>",
    )
}
