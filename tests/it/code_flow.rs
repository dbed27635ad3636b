//! The authorization code flow against the real server, end to end: the hosted sign-in page
//! (password, then the authenticator app's code), a code in the query or posted by a page
//! (form_post), its redemption with PKCE (S5–S9), ID tokens (S25, S26), `prompt=login` and
//! `max_age` forcing a new sign-in, and every refusal at the token endpoint changing nothing
//! but what it must.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{call, platform_token};
use crate::support::{node::temp_data_dir, TestNode};

const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9a6qaTPsP5d5-Vg3xsWylnpPs";
/// BASE64URL(SHA-256(VERIFIER)).
const CHALLENGE: &str = "gznVzFkAdC9mShLVj8mE8j_PCzja6uTBOsQL-ZvtLt4";
const PASSWORD: &str = "a long enough passphrase";

struct Page {
    status: StatusCode,
    location: Option<String>,
    cookie: Option<String>,
    csp: String,
    body: String,
}

async fn page_of(resp: reqwest::Response) -> Page {
    let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (location, csp) = (header("location"), header("content-security-policy").unwrap_or_default());
    let cookie = header("set-cookie").map(|c| c.split(';').next().unwrap().to_string());
    Page { status: resp.status(), location, cookie, csp, body: resp.text().await.unwrap() }
}

async fn authorize(node: &TestNode, params: &[(&str, &str)], cookie: Option<&str>) -> Page {
    let url = reqwest::Url::parse_with_params(&format!("{}/oauth2/authorize", node.local_url), params).unwrap();
    let mut req = node.client().get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    page_of(req.send().await.unwrap()).await
}

/// The value of a hidden field of a page's form.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no field {name} in {body}")) + marker.len();
    let value = &body[start..start + body[start..].find('"').unwrap()];
    value.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// A sign-in page as the browser holds it: the request its form carries, the form's token and
/// the page's cookie that token is bound to.
struct SignIn {
    request: String,
    token: String,
    cookie: String,
}

impl SignIn {
    fn of(p: &Page) -> SignIn {
        assert_eq!(p.status, StatusCode::OK, "the sign-in page: {}", p.body);
        let cookie = p.cookie.clone().expect("the sign-in page's cookie");
        assert!(cookie.starts_with("__Host-gh_signin_"), "{cookie}");
        SignIn { request: hidden(&p.body, "request"), token: hidden(&p.body, "form_token"), cookie }
    }
}

/// Posts the sign-in page's form as a browser on that page would, with `session` too.
async fn sign_in_form(node: &TestNode, page: &SignIn, fields: &[(&str, &str)], session: Option<&str>) -> Page {
    let mut form = vec![("request", page.request.as_str()), ("form_token", page.token.as_str())];
    form.extend_from_slice(fields);
    let cookie = match session {
        Some(s) => format!("{}; {s}", page.cookie),
        None => page.cookie.clone(),
    };
    let req = node
        .client()
        .post(format!("{}/v1/auth/sign-in", node.local_url))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", cookie)
        .form(&form);
    page_of(req.send().await.unwrap()).await
}

/// The authorization response's parameters from a 303 to `https://app.test/cb`.
fn response_of(p: &Page) -> std::collections::BTreeMap<String, String> {
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let location = reqwest::Url::parse(p.location.as_deref().unwrap()).unwrap();
    assert_eq!(
        format!("{}://{}{}", location.scheme(), location.host_str().unwrap(), location.path()),
        "https://app.test/cb"
    );
    location.query_pairs().into_owned().collect()
}

async fn token(node: &TestNode, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = node.client().post(format!("{}/oauth2/token", node.local_url)).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn claims(jwt: &str) -> (Value, Value) {
    let part = |i: usize| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    (part(0), part(1))
}

async fn introspect(node: &TestNode, client: (&str, &str), token: &str) -> Value {
    let resp = node
        .client()
        .post(format!("{}/oauth2/introspect", node.local_url))
        .basic_auth(client.0, Some(client.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// UserInfo with the token in the header and/or the form: status, body, `WWW-Authenticate`.
async fn userinfo(
    node: &TestNode,
    method: Method,
    header: Option<&str>,
    form: Option<&str>,
) -> (StatusCode, Value, String) {
    let mut req = node.client().request(method, format!("{}/oauth2/userinfo", node.local_url));
    if let Some(t) = header {
        req = req.bearer_auth(t);
    }
    if let Some(t) = form {
        req = req.form(&[("access_token", t)]);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, resp.json().await.unwrap_or(Value::Null), challenge)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_signs_in_on_the_hosted_page_and_the_client_redeems_its_code_once() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    // The tenant's own applications: their users are never asked for consent.
    let app = json!({"name": "The App", "client_type": "public", "grant_types": ["authorization_code"], "first_party": true,
                     "audiences": ["https://api.test"], "scopes": ["read"], "redirect_uris": ["https://app.test/cb"]});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&app)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let app_id = c.body["client_id"].as_str().unwrap().to_string();
    let web = json!({"name": "Web", "client_type": "confidential", "grant_types": ["authorization_code"], "first_party": true,
                     "audiences": ["https://api.test"], "redirect_uris": ["https://app.test/cb"], "scopes": ["read"],
                     "id_token_signed_response_alg": "ES256"});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&web)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let web =
        (c.body["client_id"].as_str().unwrap().to_string(), c.body["client_secret"].as_str().unwrap().to_string());
    let web = (web.0.as_str(), web.1.as_str());
    let r = node
        .client()
        .post(format!("{}/v1/auth/register", node.local_url))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let request = [
        ("response_type", "code"),
        ("client_id", app_id.as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("scope", "openid read"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];

    // No session: the sign-in page, naming the client, with the request in its form.
    let p = authorize(&node, &request, None).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("Sign in to The App") && p.body.contains("action=\"/v1/auth/sign-in\""), "{}", p.body);
    assert!(p.csp.contains("frame-ancestors 'none'") && p.csp.contains("form-action 'self'"), "{}", p.csp);
    let page = SignIn::of(&p);
    // login_hint fills in the email (escaped like everything the page shows).
    let hinted = [request.as_slice(), &[("login_hint", "ada@example.com\"><b>")]].concat();
    let body = authorize(&node, &hinted, None).await.body;
    assert!(body.contains("value=\"ada@example.com&quot;&gt;&lt;b&gt;\"") && !body.contains("<b>"), "{body}");
    // A wrong password: the page again, saying so, and no session.
    let wrong = [("step", "password"), ("email", "ada@example.com"), ("password", "not it at all, no")];
    let p = sign_in_form(&node, &page, &wrong, None).await;
    assert_eq!((p.status, p.cookie.is_none()), (StatusCode::UNAUTHORIZED, true), "{}", p.body);
    assert!(p.body.contains("do not match"), "{}", p.body);
    // A form from another site changes nothing.
    let right = [("step", "password"), ("email", "ada@example.com"), ("password", PASSWORD)];
    let cross = node
        .client()
        .post(format!("{}/v1/auth/sign-in", node.local_url))
        .header("origin", "https://evil.test")
        .form(&right)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // Nor does one that another site made to look like ours (S52, login CSRF): without the
    // page's cookie, or with another page's token, it is refused before any password check.
    let forged = SignIn {
        cookie: "__Host-gh_signin_default=made-up".into(),
        ..SignIn::of(&authorize(&node, &request, None).await)
    };
    assert_eq!(sign_in_form(&node, &forged, &right, None).await.status, StatusCode::FORBIDDEN);
    let other_page = SignIn::of(&authorize(&node, &request, None).await);
    let mixed = SignIn { token: other_page.token.clone(), ..SignIn::of(&authorize(&node, &request, None).await) };
    assert_eq!(sign_in_form(&node, &mixed, &right, None).await.status, StatusCode::FORBIDDEN);
    // The right one: a session, and back to the client with a code, the state and iss (S20).
    let p = sign_in_form(&node, &page, &right, None).await;
    let q = response_of(&p);
    let cookie = p.cookie.clone().expect("a session cookie");
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("st-1", node.url.as_str()), "{q:?}");
    let code = q["code"].clone();

    // Refusals that spend nothing: a wrong redirect URI, no verifier, a wrong one (S6–S8).
    let redeem = |code: &str, verifier: &str, redirect: &str| {
        let mut f = vec![("grant_type", "authorization_code".to_string()), ("client_id", app_id.clone())];
        f.push(("code", code.to_string()));
        if !redirect.is_empty() {
            f.push(("redirect_uri", redirect.to_string()));
        }
        if !verifier.is_empty() {
            f.push(("code_verifier", verifier.to_string()));
        }
        f
    };
    let form = |f: &Vec<(&'static str, String)>| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    for (what, f) in [
        ("another redirect URI", redeem(&code, VERIFIER, "https://app.test/other")),
        ("no verifier", redeem(&code, "", "https://app.test/cb")),
        ("no redirect URI", redeem(&code, VERIFIER, "")),
        ("a wrong verifier", redeem(&code, &"x".repeat(43), "https://app.test/cb")),
        ("a made-up code", redeem("made-up", VERIFIER, "https://app.test/cb")),
    ] {
        let pairs = form(&f);
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = token(&node, None, &refs).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{what}: {body}"
        );
    }
    // Another client cannot redeem it either.
    let (status, body) = token(
        &node,
        Some(web),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.test/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");

    // The code, with its verifier and redirect URI, by its client.
    let good = form(&redeem(&code, VERIFIER, "https://app.test/cb"));
    let refs: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, tokens) = token(&node, None, &refs).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!((tokens["token_type"].as_str(), tokens["scope"].as_str()), (Some("Bearer"), Some("openid read")));
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let (header, id) = claims(tokens["id_token"].as_str().unwrap());
    // S25, S26: RS256 by default, with a kid from JWKS, and the sign-in's claims.
    assert_eq!(header["alg"], "RS256");
    let jwks: Value = node
        .client()
        .get(format!("{}/.well-known/jwks.json", node.local_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == header["kid"] && k["alg"] == "RS256"),
        "{header}"
    );
    assert_eq!(
        (id["iss"].as_str(), id["aud"].as_str(), id["nonce"].as_str()),
        (Some(node.url.as_str()), Some(app_id.as_str()), Some("n-1"))
    );
    assert_eq!(id["amr"], json!(["pwd"]));
    for claim in ["sub", "exp", "iat", "auth_time", "sid", "at_hash"] {
        assert!(!id[claim].is_null(), "{claim} in {id}");
    }
    let (_, at) = claims(&access);
    assert_eq!((at["sub"].clone(), at["client_id"].as_str()), (id["sub"].clone(), Some(app_id.as_str())));
    assert_eq!(introspect(&node, web, &access).await["active"], true);
    // UserInfo (S29): the user's subject, and nothing the scopes did not ask for; by GET with
    // the header, by POST with the form; never with the token twice, never without one.
    let info = userinfo(&node, Method::GET, Some(&access), None).await;
    assert_eq!((info.0, info.1.clone()), (StatusCode::OK, json!({"sub": id["sub"]})), "{}", info.1);
    let info = userinfo(&node, Method::POST, None, Some(&access)).await;
    assert_eq!((info.0, &info.1["sub"]), (StatusCode::OK, &id["sub"]));
    assert_eq!(userinfo(&node, Method::POST, Some(&access), Some(&access)).await.0, StatusCode::BAD_REQUEST);
    let none = userinfo(&node, Method::GET, None, None).await;
    assert_eq!((none.0, none.2.as_str()), (StatusCode::UNAUTHORIZED, "Bearer"), "no error without credentials");
    let header_only = userinfo(&node, Method::POST, Some(&access), None).await;
    assert_eq!((header_only.0, &header_only.1["sub"]), (StatusCode::OK, &id["sub"]), "a POST with the header alone");
    let bad = userinfo(&node, Method::GET, Some("not.a.token"), None).await;
    assert_eq!((bad.0, bad.2.starts_with("Bearer error=\"invalid_token\"")), (StatusCode::UNAUTHORIZED, true));

    // The code again: refused, and the tokens its first use issued are revoked (S5).
    let (status, body) = token(&node, None, &refs).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    assert_eq!(introspect(&node, web, &access).await["active"], false, "the first use's access token");
    assert_eq!(userinfo(&node, Method::GET, Some(&access), None).await.0, StatusCode::UNAUTHORIZED);

    // Signed in, the next request gets a code at once. Redeemed ten times at once, on one
    // node: exactly one succeeds (S5), and the others, replays, revoke what it got.
    let q = response_of(&authorize(&node, &request, Some(&cookie)).await);
    let raced = form(&redeem(&q["code"], VERIFIER, "https://app.test/cb"));
    let refs: Vec<(&str, &str)> = raced.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answers = futures_util::future::join_all((0..10).map(|_| token(&node, None, &refs))).await;
    let won: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(s, b)| *s == StatusCode::OK || b["error"] == "invalid_grant"), "{answers:?}");
    let winner = won[0]["access_token"].as_str().unwrap();
    assert_eq!(introspect(&node, web, winner).await["active"], false, "revoked by the replays");
    // prompt=none with an id_token_hint naming the signed-in user: a code at once, for the same
    // sub; a hint that is not ours goes back as invalid_request.
    let id_token = tokens["id_token"].as_str().unwrap();
    let hinted = [request.as_slice(), &[("prompt", "none"), ("id_token_hint", id_token)]].concat();
    let q = response_of(&authorize(&node, &hinted, Some(&cookie)).await);
    let f = form(&redeem(&q["code"], VERIFIER, "https://app.test/cb"));
    let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = token(&node, None, &refs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(claims(body["id_token"].as_str().unwrap()).1["sub"], id["sub"], "the same user");
    let mut bad = id_token.to_string();
    bad.replace_range(bad.len() - 4.., "AAAA");
    let forged = [request.as_slice(), &[("id_token_hint", bad.as_str())]].concat();
    assert_eq!(response_of(&authorize(&node, &forged, Some(&cookie)).await)["error"], "invalid_request");
    // The request may come by POST too (OpenID Connect Core §3.1.2.1).
    let posted = node
        .client()
        .post(format!("{}/oauth2/authorize", node.local_url))
        .header("cookie", &cookie)
        .form(&request)
        .send()
        .await
        .unwrap();
    let q = response_of(&page_of(posted).await);
    assert!(q.contains_key("code") && q["state"] == "st-1", "{q:?}");

    // In the form_post mode, the code comes on a page that posts it to the client, and may
    // post nowhere else.
    let form_post = [request.as_slice(), &[("response_mode", "form_post")]].concat();
    let p = authorize(&node, &form_post, Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("action=\"https://app.test/cb\""), "{}", p.body);
    assert!(p.csp.contains("form-action https://app.test") && !p.csp.contains("form-action 'self'"), "{}", p.csp);
    assert_eq!((hidden(&p.body, "state"), hidden(&p.body, "iss")), ("st-1".to_string(), node.url.clone()));
    let posted_code = hidden(&p.body, "code");
    // The confidential client's code, redeemed with its secret: an ES256 ID token (S26).
    let web_request: Vec<(&str, &str)> = request
        .iter()
        .map(|(k, v)| match *k {
            "client_id" => (*k, web.0),
            "scope" => (*k, "openid profile email roles"),
            _ => (*k, *v),
        })
        .collect();
    let q = response_of(&authorize(&node, &web_request, Some(&cookie)).await);
    let (status, body) = token(
        &node,
        Some(web),
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", "https://app.test/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(claims(body["id_token"].as_str().unwrap()).0["alg"], "ES256");
    let info = userinfo(&node, Method::GET, body["access_token"].as_str(), None).await.1;
    assert_eq!((info["email"].as_str(), &info["email_verified"]), (Some("ada@example.com"), &json!(false)), "{info}");
    assert_eq!((info["preferred_username"].as_str(), &info["roles"]), (Some("ada@example.com"), &json!([])), "{info}");
    // A public client's code is not the confidential one's to redeem, even with its verifier.
    let (status, _) = token(
        &node,
        Some(web),
        &[
            ("grant_type", "authorization_code"),
            ("code", &posted_code),
            ("redirect_uri", "https://app.test/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // prompt=login and max_age=0 show the sign-in page even to a signed-in browser; signing in
    // again gives a later auth_time.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let forced = [request.as_slice(), &[extra]].concat();
        let p = authorize(&node, &forced, Some(&cookie)).await;
        assert_eq!(p.status, StatusCode::OK, "{extra:?}");
        assert!(p.body.contains("Sign in to The App"), "{extra:?}: {}", p.body);
    }
    let forced = [request.as_slice(), &[("prompt", "login")]].concat();
    let page = SignIn::of(&authorize(&node, &forced, Some(&cookie)).await);
    let again = [("step", "password"), ("email", "ada@example.com"), ("password", PASSWORD)];
    let p = sign_in_form(&node, &page, &again, Some(&cookie)).await;
    let q = response_of(&p);
    let f = form(&redeem(&q["code"], VERIFIER, "https://app.test/cb"));
    let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = token(&node, None, &refs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let later = claims(body["id_token"].as_str().unwrap()).1;
    assert!(later["auth_time"].as_i64() > id["auth_time"].as_i64(), "{later} after {id}");
    // The old session ended with the new sign-in: it gets the sign-in page now.
    let p = authorize(&node, &request, Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("Sign in to The App"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_with_an_authenticator_signs_in_with_its_code_and_an_expired_code_is_refused() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start_with(&dir, &[], &[("GATEHOUSE_OAUTH__AUTHORIZATION_CODE_LIFETIME_SECS", "1")]).unwrap();
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let app = json!({"name": "App", "client_type": "public", "grant_types": ["authorization_code"], "first_party": true,
                     "audiences": ["https://api.test"], "redirect_uris": ["https://app.test/cb"]});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&app)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let app_id = c.body["client_id"].as_str().unwrap().to_string();
    let registered = node
        .client()
        .post(format!("{}/v1/auth/register", node.local_url))
        .json(&json!({"email": "bob@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let session = registered.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let post = |path: &str, body: Value| {
        node.client().post(format!("{}{path}", node.local_url)).header("cookie", session.clone()).json(&body).send()
    };
    let enrolled: Value = post("/v1/auth/mfa/totp/enroll", json!({})).await.unwrap().json().await.unwrap();
    let totp = totp_rs::TOTP::from_url(enrolled["otpauth_uri"].as_str().unwrap()).unwrap();
    // The node checks codes against the wall clock, and so does this test.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let confirmed = post("/v1/auth/mfa/totp/confirm", json!({"code": totp.generate(now)})).await.unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    let recovery: Value = confirmed.json().await.unwrap();
    let recovery = recovery["recovery_codes"][0].as_str().unwrap().to_string();

    let request = [
        ("response_type", "code"),
        ("client_id", app_id.as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("scope", "openid"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let page = SignIn::of(&authorize(&node, &request, None).await);
    let password = [("step", "password"), ("email", "bob@example.com"), ("password", PASSWORD)];
    // The password is right: the page asks for the code, in a sign-in that is not one yet.
    let p = sign_in_form(&node, &page, &password, None).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("authenticator app") && p.location.is_none(), "{}", p.body);
    let pending = p.cookie.expect("the pending sign-in's cookie");
    assert_eq!(authorize(&node, &request, Some(&pending)).await.status, StatusCode::OK, "no code while pending");
    let wrong = [("step", "totp"), ("code", "000000")];
    let p = sign_in_form(&node, &page, &wrong, Some(&pending)).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{}", p.body);
    let good_code = totp.generate(now + 30);
    let right = [("step", "totp"), ("code", good_code.as_str())];
    let q = response_of(&sign_in_form(&node, &page, &right, Some(&pending)).await);
    let redeem = [
        ("grant_type", "authorization_code"),
        ("client_id", app_id.as_str()),
        ("code", q["code"].as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(&node, None, &redeem).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(claims(body["id_token"].as_str().unwrap()).1["amr"], json!(["pwd", "otp", "mfa"]));
    // A recovery code instead of the app's code completes the sign-in as well, once.
    let page = SignIn::of(&authorize(&node, &request, None).await);
    let p = sign_in_form(&node, &page, &password, None).await;
    let pending = p.cookie.expect("the pending sign-in's cookie");
    let with_recovery = [("step", "totp"), ("recovery_code", recovery.as_str())];
    let q = response_of(&sign_in_form(&node, &page, &with_recovery, Some(&pending)).await);
    assert!(q.contains_key("code"), "{q:?}");

    // A code past its lifetime (1 s here) is refused.
    let registered = node
        .client()
        .post(format!("{}/v1/auth/register", node.local_url))
        .json(&json!({"email": "cy@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let page = SignIn::of(&authorize(&node, &request, None).await);
    let password = [("step", "password"), ("email", "cy@example.com"), ("password", PASSWORD)];
    let q = response_of(&sign_in_form(&node, &page, &password, None).await);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let redeem = [
        ("grant_type", "authorization_code"),
        ("client_id", app_id.as_str()),
        ("code", q["code"].as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(&node, None, &redeem).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("expired"), "{body}");
}

/// Posts the consent page's form as a browser on that page would.
async fn consent_form(node: &TestNode, fields: &[(&str, &str)], cookie: &str) -> Page {
    let req = node
        .client()
        .post(format!("{}/v1/auth/consent", node.local_url))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", cookie)
        .form(fields);
    page_of(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_party_client_is_allowed_once_by_the_user_and_denied_without_a_code() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let app = json!({"name": "Elsewhere", "client_type": "public", "grant_types": ["authorization_code"],
                     "audiences": ["https://api.test"], "redirect_uris": ["https://app.test/cb"]});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&app)).await;
    assert_eq!((c.status, &c.body["first_party"]), (StatusCode::CREATED, &json!(false)), "{}", c.body);
    let app_id = c.body["client_id"].as_str().unwrap().to_string();
    let registered = node
        .client()
        .post(format!("{}/v1/auth/register", node.local_url))
        .json(&json!({"email": "dee@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let request = [
        ("response_type", "code"),
        ("client_id", app_id.as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("scope", "openid email"),
        ("state", "st-9"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    // Signing in on the page leads to the consent page, which names the client and the scopes.
    let page = SignIn::of(&authorize(&node, &request, None).await);
    let signing_in = [("step", "password"), ("email", "dee@example.com"), ("password", PASSWORD)];
    let p = sign_in_form(&node, &page, &signing_in, None).await;
    assert_eq!((p.status, p.location.is_none()), (StatusCode::OK, true), "{}", p.body);
    assert!(p.body.contains("Allow Elsewhere?") && p.body.contains("See your email address"), "{}", p.body);
    let cookie = p.cookie.clone().expect("the new session");
    let (token, carried) = (hidden(&p.body, "form_token"), hidden(&p.body, "request"));

    // A form without this session's token, or from another site, changes nothing.
    let forged =
        consent_form(&node, &[("request", &carried), ("form_token", "x"), ("decision", "allow")], &cookie).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let cross = node
        .client()
        .post(format!("{}/v1/auth/consent", node.local_url))
        .header("origin", "https://evil.test")
        .header("cookie", &cookie)
        .form(&[("form_token", token.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // Denied: back to the client with access_denied, its state and iss, and no code; and the
    // next request asks again.
    let q = response_of(
        &consent_form(&node, &[("request", &carried), ("form_token", &token), ("decision", "deny")], &cookie).await,
    );
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str(), q["iss"].as_str()),
        ("access_denied", "st-9", node.url.as_str())
    );
    assert!(!q.contains_key("code"));
    let p = authorize(&node, &request, Some(&cookie)).await;
    assert!(p.body.contains("Allow Elsewhere?"), "asked again after a denial: {}", p.body);
    // prompt=none cannot ask: consent_required.
    let none = [request.as_slice(), &[("prompt", "none")]].concat();
    assert_eq!(response_of(&authorize(&node, &none, Some(&cookie)).await)["error"], "consent_required");

    // Allowed: a code, and the next request for the same scopes is not asked again.
    let q = response_of(
        &consent_form(&node, &[("request", &carried), ("form_token", &token), ("decision", "allow")], &cookie).await,
    );
    assert!(q.contains_key("code") && q["state"] == "st-9", "{q:?}");
    let q = response_of(&authorize(&node, &request, Some(&cookie)).await);
    assert!(q.contains_key("code"), "remembered: {q:?}");
    let q = response_of(&authorize(&node, &none, Some(&cookie)).await);
    assert!(q.contains_key("code"), "remembered, so prompt=none gets a code: {q:?}");
    // prompt=consent asks again; a scope not allowed yet is asked for.
    let again = [request.as_slice(), &[("prompt", "consent")]].concat();
    assert!(authorize(&node, &again, Some(&cookie)).await.body.contains("Allow Elsewhere?"));
    let wider: Vec<(&str, &str)> =
        request.iter().map(|(k, v)| if *k == "scope" { (*k, "openid email profile") } else { (*k, *v) }).collect();
    let p = authorize(&node, &wider, Some(&cookie)).await;
    assert!(p.body.contains("See your name"), "{}", p.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_with_the_id_token_ends_the_session_and_goes_back_only_to_a_registered_uri() {
    let (_tmp, dir) = temp_data_dir();
    // A reference, so the helpers below can each capture it.
    let node = &TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(node));
    let app = json!({"name": "App", "client_type": "public", "grant_types": ["authorization_code"], "first_party": true,
                     "audiences": ["https://api.test"], "redirect_uris": ["https://app.test/cb"],
                     "post_logout_redirect_uris": ["https://app.test/bye"]});
    let c = call(node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&app)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    assert_eq!(c.body["post_logout_redirect_uris"], json!(["https://app.test/bye"]));
    let app_id = c.body["client_id"].as_str().unwrap().to_string();
    let registered = node
        .client()
        .post(format!("{}/v1/auth/register", node.local_url))
        .json(&json!({"email": "eve@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let request = [
        ("response_type", "code"),
        ("client_id", app_id.as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("scope", "openid"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    // Signs in on the page: the session cookie and the ID token.
    let sign_in = || async {
        let page = SignIn::of(&authorize(node, &request, None).await);
        let fields = [("step", "password"), ("email", "eve@example.com"), ("password", PASSWORD)];
        let p = sign_in_form(node, &page, &fields, None).await;
        let cookie = p.cookie.clone().unwrap();
        let q = response_of(&p);
        let redeem = [
            ("grant_type", "authorization_code"),
            ("client_id", app_id.as_str()),
            ("code", q["code"].as_str()),
            ("redirect_uri", "https://app.test/cb"),
            ("code_verifier", VERIFIER),
        ];
        let (status, body) = token(node, None, &redeem).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (cookie, body["id_token"].as_str().unwrap().to_string())
    };
    let logout = |params: Vec<(&'static str, String)>, cookie: String| async move {
        let url = reqwest::Url::parse_with_params(&format!("{}/oauth2/logout", node.local_url), &params).unwrap();
        page_of(node.client().get(url).header("cookie", cookie).send().await.unwrap()).await
    };
    let signed_in = |cookie: String| async move {
        let r = node.client().get(format!("{}/v1/auth/session", node.local_url)).header("cookie", cookie);
        r.send().await.unwrap().status() == StatusCode::OK
    };
    let (cookie, id_token) = sign_in().await;

    // Never back to a URI the client did not register, nor with a hint that is not ours: a
    // page, no redirect, and the session stays.
    let mut forged = id_token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    for (what, params) in [
        (
            "an unregistered URI",
            vec![("id_token_hint", id_token.clone()), ("post_logout_redirect_uri", "https://evil.test/".into())],
        ),
        ("a URI without its client", vec![("post_logout_redirect_uri", "https://app.test/bye".to_string())]),
        ("a forged hint", vec![("id_token_hint", forged), ("post_logout_redirect_uri", "https://app.test/bye".into())]),
        ("another client", vec![("id_token_hint", id_token.clone()), ("client_id", "c-other".into())]),
    ] {
        let p = logout(params, cookie.clone()).await;
        assert_eq!((p.status, p.location.is_none()), (StatusCode::BAD_REQUEST, true), "{what}: {}", p.body);
        assert!(signed_in(cookie.clone()).await, "{what}: the session stays");
    }
    // The hint names the signed-in user: signed out at once, and back with the state.
    let p = logout(
        vec![
            ("id_token_hint", id_token.clone()),
            ("post_logout_redirect_uri", "https://app.test/bye".into()),
            ("state", "s-7".into()),
        ],
        cookie.clone(),
    )
    .await;
    assert_eq!(
        (p.status, p.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("https://app.test/bye?state=s-7")),
        "{}",
        p.body
    );
    assert!(p.cookie.as_deref().is_some_and(|c| c.ends_with('=')), "the cookie is cleared: {:?}", p.cookie);
    assert!(!signed_in(cookie.clone()).await, "the session ended on the server");

    // Without a hint, the user confirms on a page of ours; a form without its token does not
    // sign them out.
    let (cookie, _) = sign_in().await;
    let p = logout(
        vec![("client_id", app_id.clone()), ("post_logout_redirect_uri", "https://app.test/bye".into())],
        cookie.clone(),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("Sign out?") && signed_in(cookie.clone()).await, "{}", p.body);
    // Its form leads back to the client, so its policy allows that (browsers check form-action
    // on the redirect after a submission).
    assert!(p.csp.contains("form-action 'self' https://app.test"), "{}", p.csp);
    let form_token = hidden(&p.body, "form_token");
    let confirm = |token: String| {
        let cookie = cookie.clone();
        let fields = vec![
            ("client_id", app_id.clone()),
            ("post_logout_redirect_uri", "https://app.test/bye".to_string()),
            ("form_token", token),
            ("confirm", "yes".to_string()),
        ];
        async move {
            page_of(
                node.client()
                    .post(format!("{}/oauth2/logout", node.local_url))
                    .header("cookie", cookie)
                    .form(&fields)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(confirm("not-it".into()).await.status, StatusCode::FORBIDDEN);
    assert!(signed_in(cookie.clone()).await);
    let p = confirm(form_token).await;
    assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("https://app.test/bye")));
    assert!(!signed_in(cookie.clone()).await);

    // A logout posted from the client's site comes without the session cookie (SameSite=Lax):
    // it is sent on as a GET, which the browser makes with the cookie.
    let posted = node
        .client()
        .post(format!("{}/oauth2/logout", node.local_url))
        .form(&[("id_token_hint", id_token.as_str()), ("state", "s-8")])
        .send()
        .await
        .unwrap();
    let p = page_of(posted).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let location = p.location.unwrap();
    assert!(
        location.starts_with(&format!("{}/oauth2/logout?id_token_hint=", node.url)) && location.ends_with("&state=s-8"),
        "{location}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_rotate_and_a_replayed_one_revokes_its_whole_family() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let mut ids = Vec::new();
    for name in ["App", "Other"] {
        let app = json!({"name": name, "client_type": "public", "grant_types": ["authorization_code", "refresh_token"],
                         "first_party": true, "audiences": ["https://api.test"], "scopes": ["read", "write"],
                         "redirect_uris": ["https://app.test/cb"]});
        let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&app)).await;
        assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
        ids.push(c.body["client_id"].as_str().unwrap().to_string());
    }
    let web = json!({"name": "Web", "client_type": "confidential", "grant_types": ["authorization_code"],
                     "audiences": ["https://api.test"], "redirect_uris": ["https://app.test/cb"]});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&web)).await;
    let web =
        (c.body["client_id"].as_str().unwrap().to_string(), c.body["client_secret"].as_str().unwrap().to_string());
    let web = (web.0.as_str(), web.1.as_str());
    // 'static, for the helper closure below (a test's few bytes).
    let (app_id, other_id): (&'static str, &'static str) = (ids[0].clone().leak(), ids[1].clone().leak());
    let registered = node
        .client()
        .post(format!("{}/v1/auth/register", node.local_url))
        .json(&json!({"email": "fay@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let mut cookie = None;
    let first = grant(&node, app_id, "openid offline_access read write", &mut cookie).await;
    let refresh_0 = first["refresh_token"].as_str().expect("a refresh token for offline_access").to_string();
    let no_offline = grant(&node, app_id, "openid read", &mut cookie).await;
    assert!(no_offline["refresh_token"].is_null(), "none without offline_access: {no_offline}");
    let refresh = |client: &'static str, token: String, scope: Option<&'static str>| {
        let node = &node;
        async move {
            let mut form =
                vec![("grant_type", "refresh_token"), ("client_id", client), ("refresh_token", token.as_str())];
            if let Some(s) = scope {
                form.push(("scope", s));
            }
            token_call(node, &form).await
        }
    };

    // Rotation: a new refresh token each time, an access token, no ID token (Core §12.2); the
    // scopes may narrow (S11) but never widen.
    let (status, r1) = refresh(app_id, refresh_0.clone(), Some("read")).await;
    assert_eq!(status, StatusCode::OK, "{r1}");
    assert_eq!((r1["scope"].as_str(), r1["id_token"].is_null()), (Some("read"), true), "{r1}");
    let refresh_1 = r1["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh_1, refresh_0);
    let (status, wider) = refresh(app_id, refresh_1.clone(), Some("read admin")).await;
    assert_eq!((status, wider["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")), "{wider}");
    // Bound to its client (S13), and a forged or cut one is refused before any lookup.
    let (status, body) = refresh(other_id, refresh_1.clone(), None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    let mut forged = refresh_1.clone();
    forged.replace_range(forged.len() - 3.., "AAA");
    for bad in [forged, refresh_1[..refresh_1.len() - 10].to_string(), "rt1.e30.AAAA".into()] {
        let (status, body) = refresh(app_id, bad, None).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    }
    let (status, r2) = refresh(app_id, refresh_1.clone(), None).await;
    assert_eq!((status, r2["scope"].as_str()), (StatusCode::OK, Some("openid offline_access read write")), "{r2}");
    let refresh_2 = r2["refresh_token"].as_str().unwrap().to_string();
    let access_2 = r2["access_token"].as_str().unwrap().to_string();
    assert_eq!(introspect(&node, web, &access_2).await["active"], true);

    // S12: an old token again: refused, and the whole family is revoked with it, the current
    // token and the last access token included.
    let (status, body) = refresh(app_id, refresh_0.clone(), None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
    let (status, _) = refresh(app_id, refresh_2.clone(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the current token went with its family");
    assert_eq!(introspect(&node, web, &access_2).await["active"], false, "the family's last access token");

    // Two refreshes with the same token at once: one rotates, the other is a replay.
    let fresh = grant(&node, app_id, "openid offline_access", &mut cookie).await;
    let token = fresh["refresh_token"].as_str().unwrap().to_string();
    let answers = futures_util::future::join_all((0..5).map(|_| refresh(app_id, token.clone(), None))).await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == StatusCode::OK).count(), 1, "{answers:?}");

    // Revocation (RFC 7009) by its client ends the family.
    let fresh = grant(&node, app_id, "openid offline_access", &mut cookie).await;
    let token = fresh["refresh_token"].as_str().unwrap().to_string();
    let revoked = node
        .client()
        .post(format!("{}/oauth2/revoke", node.local_url))
        .form(&[("client_id", app_id), ("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(refresh(app_id, token, None).await.0, StatusCode::BAD_REQUEST);
}

async fn token_call(node: &TestNode, form: &[(&str, &str)]) -> (StatusCode, Value) {
    token(node, None, form).await
}

/// A grant for `scope` through the sign-in page (the first time; then with the session in
/// `cookie`), redeemed by the public client `app_id`: the token response.
async fn grant(node: &TestNode, app_id: &str, scope: &str, cookie: &mut Option<String>) -> Value {
    let request = [
        ("response_type", "code"),
        ("client_id", app_id),
        ("redirect_uri", "https://app.test/cb"),
        ("scope", scope),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let p = match cookie.as_deref() {
        Some(c) => authorize(node, &request, Some(c)).await,
        None => {
            let page = SignIn::of(&authorize(node, &request, None).await);
            let fields = [("step", "password"), ("email", "fay@example.com"), ("password", PASSWORD)];
            let p = sign_in_form(node, &page, &fields, None).await;
            *cookie = p.cookie.clone();
            p
        }
    };
    let q = response_of(&p);
    let redeem = [
        ("grant_type", "authorization_code"),
        ("client_id", app_id),
        ("code", q["code"].as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(node, None, &redeem).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}
