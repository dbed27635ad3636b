//! The hosted pages against the real server: the passkey page renders the browser's session,
//! and its forms change something only with that session's synchronizer token (S52), answering
//! 303 back to the page or an error page.

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{call, platform_token};
use crate::support::soft_passkey::SoftPasskey;
use crate::support::{free_port, node::temp_data_dir, TestNode};

struct Page {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    set_cookie: Option<String>,
    text: String,
}

async fn page_of(resp: reqwest::Response) -> Page {
    let h = |n: header::HeaderName| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (content_type, location, set_cookie) = (h(header::CONTENT_TYPE), h(header::LOCATION), h(header::SET_COOKIE));
    Page {
        status: resp.status(),
        content_type: content_type.unwrap_or_default(),
        location,
        set_cookie,
        text: resp.text().await.unwrap(),
    }
}

const PAGE: &str = "/v1/auth/passkeys";

async fn get_page(node: &TestNode, query: &str, cookie: Option<&str>) -> Page {
    let mut req = node.client().get(format!("{}{PAGE}{query}", node.local_url));
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    page_of(req.send().await.unwrap()).await
}

async fn post_form(node: &TestNode, cookie: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
    let mut req = node.client().post(format!("{}{PAGE}", node.local_url)).header(header::COOKIE, cookie).form(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    page_of(req.send().await.unwrap()).await
}

/// The value of the page's first hidden `form_token` field.
fn form_token(page: &Page) -> String {
    let marker = "name=\"form_token\" value=\"";
    let start = page.text.find(marker).unwrap_or_else(|| panic!("no form token in {}", page.text)) + marker.len();
    page.text[start..].split('"').next().unwrap().to_string()
}

async fn json_post(
    node: &TestNode,
    path: &str,
    cookie: Option<&str>,
    body: &Value,
) -> (StatusCode, Value, Option<String>) {
    let mut req = node.client().post(format!("{}{path}", node.local_url)).json(body);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let resp = req.send().await.unwrap();
    let cookie =
        resp.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
    (resp.status(), resp.json().await.unwrap_or(Value::Null), cookie)
}

async fn session_status(node: &TestNode, cookie: &str) -> StatusCode {
    let url = format!("{}/v1/auth/session", node.local_url);
    node.client().get(url).header(header::COOKIE, cookie).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_passkey_page_forms_change_something_only_with_this_sessions_token() {
    let (_tmp, dir) = temp_data_dir();
    let port = free_port();
    let public_url = format!("https://localhost:{port}");
    let node = TestNode::start_listening(&dir, &format!("127.0.0.1:{port}"), &["--public-url", &public_url]).unwrap();
    let credentials = json!({"email": "ada@example.com", "password": "plenty long enough passphrase"});
    let (status, body, cookie) = json_post(&node, "/v1/auth/register", None, &credentials).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ours = cookie.unwrap();

    // Signed out, the page offers a passkey sign-in and no form.
    let anonymous = get_page(&node, "", None).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert!(anonymous.content_type.starts_with("text/html"), "{}", anonymous.content_type);
    assert!(anonymous.text.contains("Not signed in.") && !anonymous.text.contains("form_token"), "{}", anonymous.text);

    // Signed in, with a passkey: the page lists it, each form carrying the session's token.
    let mut passkey = SoftPasskey::new(&public_url);
    let (status, begun, _) = json_post(&node, "/v1/auth/passkeys/register/begin", Some(&ours), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{begun}");
    let answer =
        json!({"ceremony": begun["ceremony"], "credential": passkey.register(&begun["options"]), "name": "Laptop <b>"});
    let (status, added, _) = json_post(&node, "/v1/auth/passkeys/register/finish", Some(&ours), &answer).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let credential = added["id"].as_str().unwrap().to_string();
    let page = get_page(&node, "", Some(&ours)).await;
    assert!(page.text.contains("Signed in as ada@example.com."), "{}", page.text);
    assert!(page.text.contains("Laptop &lt;b&gt;") && !page.text.contains("<b>"), "names are escaped: {}", page.text);
    let token = form_token(&page);
    assert_eq!(token.len(), 32);
    // Another session of the same user has another token.
    let (status, _, other) = json_post(&node, "/v1/auth/login", None, &credentials).await;
    assert_eq!(status, StatusCode::OK);
    let other = other.unwrap();
    let other_token = form_token(&get_page(&node, "", Some(&other)).await);
    assert_ne!(token, other_token);

    // Refused, each with an error page, and nothing changes: no token, another session's,
    // a foreign Origin, a cross-site fetch, no cookie, an unknown action, a body not a form.
    let (mine, leaked) = (token.as_str(), other_token.as_str());
    let cases: Vec<(&str, Page)> = vec![
        ("no token", post_form(&node, &ours, &[("action", "sign_out")], &[]).await),
        (
            "another session's token",
            post_form(&node, &ours, &[("form_token", leaked), ("action", "sign_out")], &[]).await,
        ),
        (
            "a foreign Origin",
            post_form(
                &node,
                &ours,
                &[("form_token", mine), ("action", "sign_out")],
                &[("origin", "https://evil.test")],
            )
            .await,
        ),
        (
            "a cross-site fetch",
            post_form(
                &node,
                &ours,
                &[("form_token", mine), ("action", "sign_out")],
                &[("sec-fetch-site", "cross-site")],
            )
            .await,
        ),
        (
            "a sibling site's form",
            post_form(
                &node,
                &ours,
                &[("form_token", mine), ("action", "sign_out")],
                &[("sec-fetch-site", "same-site")],
            )
            .await,
        ),
        ("an unknown action", post_form(&node, &ours, &[("form_token", mine), ("action", "make_admin")], &[]).await),
        (
            "remove without a credential",
            post_form(&node, &ours, &[("form_token", mine), ("action", "remove")], &[]).await,
        ),
    ];
    let no_cookie =
        node.client().post(format!("{}{PAGE}", node.local_url)).form(&[("form_token", mine), ("action", "sign_out")]);
    let json_body = node
        .client()
        .post(format!("{}{PAGE}", node.local_url))
        .header(header::COOKIE, &ours)
        .json(&json!({"action": "sign_out"}));
    let mut cases = cases;
    cases.push(("no cookie", page_of(no_cookie.send().await.unwrap()).await));
    cases.push(("a JSON body", page_of(json_body.send().await.unwrap()).await));
    let expected = [403, 403, 403, 403, 403, 400, 400, 401, 400];
    for ((what, page), status) in cases.iter().zip(expected) {
        assert_eq!(page.status.as_u16(), status, "{what}: {}", page.text);
        assert!(page.content_type.starts_with("text/html"), "{what}: an error page, not {}", page.content_type);
        assert!(page.set_cookie.is_none(), "{what}: no cookie change");
    }
    assert_eq!(session_status(&node, &ours).await, StatusCode::OK, "still signed in");
    assert!(get_page(&node, "", Some(&ours)).await.text.contains("Laptop"), "the passkey is still there");

    // With the token: remove the passkey, then sign out, each 303 back to the page.
    // (As a browser posts a form from a page with `Referrer-Policy: no-referrer`: `Origin: null`.)
    let as_browser = [("origin", "null"), ("sec-fetch-site", "same-origin")];
    let form = [("form_token", mine), ("action", "remove"), ("credential", &credential)];
    let removed = post_form(&node, &ours, &form, &as_browser).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.text);
    assert_eq!(removed.location.as_deref(), Some("/v1/auth/passkeys?done=removed"));
    let page = get_page(&node, "?done=removed", Some(&ours)).await;
    assert!(page.text.contains("Passkey removed.") && !page.text.contains("Laptop"), "{}", page.text);
    let out = post_form(&node, &ours, &[("form_token", mine), ("action", "sign_out")], &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    assert_eq!(out.location.as_deref(), Some("/v1/auth/passkeys?done=signed-out"));
    let cleared = out.set_cookie.unwrap();
    assert!(cleared.starts_with("__Host-gh_session_default=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(session_status(&node, &ours).await, StatusCode::UNAUTHORIZED);
    assert_eq!(session_status(&node, &other).await, StatusCode::OK, "the other session is not this form's");
    let page = get_page(&node, "?done=signed-out", None).await;
    assert!(page.text.contains("Signed out.") && page.text.contains("Not signed in."), "{}", page.text);

    // Another tenant's page sends its forms back to that tenant's page.
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let u =
        call(&node, Method::PATCH, "/admin/v1/tenants/acme", Some(&admin), Some(&json!({"self_registration": true})))
            .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    let (status, body, cookie) = json_post(&node, "/t/acme/v1/auth/register", None, &credentials).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let theirs = cookie.unwrap();
    let url = format!("{}/t/acme{PAGE}", node.local_url);
    let page = page_of(node.client().get(&url).header(header::COOKIE, &theirs).send().await.unwrap()).await;
    let token = form_token(&page);
    let out = node
        .client()
        .post(&url)
        .header(header::COOKIE, &theirs)
        .form(&[("form_token", token.as_str()), ("action", "sign_out")]);
    let out = page_of(out.send().await.unwrap()).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    assert_eq!(out.location.as_deref(), Some("/t/acme/v1/auth/passkeys?done=signed-out"));
}
