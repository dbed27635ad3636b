//! The authorization endpoint against the real server: every request is checked before
//! anything is redirected. Exact redirect URIs and the loopback exception (S1, S2), no redirect
//! for an unverified client or URI (S3, S4), PKCE with S256 only (S7, S9), the code response
//! type only (S10), `iss` in every error response (S20), request objects refused (S31).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::admin::{call, platform_token};
use crate::support::{node::temp_data_dir, TestNode};

/// An authorization request's query parameters.
type Params<'a> = Vec<(&'a str, &'a str)>;

struct Answer {
    status: StatusCode,
    location: Option<String>,
    content_type: String,
    body: String,
}

async fn authorize(node: &TestNode, params: &[(&str, &str)]) -> Answer {
    let url = reqwest::Url::parse_with_params(&format!("{}/oauth2/authorize", node.local_url), params).unwrap();
    let resp = node.client().get(url).send().await.unwrap();
    let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (location, content_type) = (header("location"), header("content-type").unwrap_or_default());
    Answer { status: resp.status(), location, content_type, body: resp.text().await.unwrap() }
}

/// `params` with `changes` applied: a value replaces the parameter's, an empty one drops it.
fn with<'a>(params: &[(&'a str, &'a str)], changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> =
        params.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).copied().collect();
    out.extend(changes.iter().filter(|(_, v)| !v.is_empty()).copied());
    out
}

/// The query of a redirect's `Location`, which must go to `expected_base`.
fn error_query(a: &Answer, expected_base: &str) -> std::collections::BTreeMap<String, String> {
    assert_eq!(a.status, StatusCode::SEE_OTHER, "a redirect back: {}", a.body);
    let location = reqwest::Url::parse(a.location.as_deref().unwrap()).unwrap();
    let base = format!(
        "{}://{}{}",
        location.scheme(),
        location.host_str().unwrap(),
        location.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    assert_eq!(format!("{base}{}", location.path()), expected_base, "{location}");
    location.query_pairs().into_owned().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_requests_are_checked_before_anything_is_redirected() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let app = json!({"name": "app", "client_type": "public",
                     "grant_types": ["authorization_code"], "audiences": ["https://api.test"], "scopes": ["read"],
                     "redirect_uris": ["https://app.test/cb", "http://127.0.0.1/cb", "https://app.test/cb2?tenant=a"]});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&app)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let client_id = c.body["client_id"].as_str().unwrap().to_string();
    let service = json!({"name": "service", "client_type": "confidential", "grant_types": ["client_credentials"],
                         "audiences": ["https://api.test"], "redirect_uris": ["https://svc.test/cb"]});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&service)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let service_id = c.body["client_id"].as_str().unwrap().to_string();
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let good = [
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", "https://app.test/cb"),
        ("scope", "openid read"),
        ("state", "the-state-42"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    let issuer = node.url.clone();

    // S1, S3: an unverified client or redirect URI gets an error page: no redirect, and
    // nothing of the request (no state, no code) in it.
    let variants = [
        "https://app.test/cb/",
        "https://APP.test/cb",
        "https://app.test/CB",
        "https://app.test/cb?x=1",
        "https://app.test/cb#f",
        "https://app.test@evil.test/cb",
        "https://app.test/cb/..;/x",
        "https://app.test/%2e%2e/cb",
        "https://app.test:443/cb",
        "https://app.test.evil.test/cb",
        "http://app.test/cb",
        "JaVaScRiPt:alert(1)//https://app.test/cb",
        // S2: a loopback literal takes any port; a look-alike host and localhost do not.
        "http://127.0.0.1.evil.test/cb",
        "http://localhost:1/cb",
        "http://127.0.0.1:53121/cb/x",
        "//evil.test/cb",
        // (No redirect_uri at all.)
        "",
    ];
    let mut pages = Vec::new();
    for v in variants {
        pages.push((v.to_string(), authorize(&node, &with(&good, &[("redirect_uri", v)])).await));
    }
    pages.push(("an unknown client".into(), authorize(&node, &with(&good, &[("client_id", "c-unknown")])).await));
    pages.push(("no client".into(), authorize(&node, &with(&good, &[("client_id", "")])).await));
    let mut twice = good.to_vec();
    twice.push(("client_id", "c-other"));
    pages.push(("client_id twice".into(), authorize(&node, &twice).await));
    let long_state = "s".repeat(1025);
    pages
        .push(("a state over 1024 characters".into(), authorize(&node, &with(&good, &[("state", &long_state)])).await));
    for (what, a) in &pages {
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{what}: {}", a.body);
        assert!(a.location.is_none(), "{what}: no Location, got {:?}", a.location);
        assert!(a.content_type.starts_with("text/html"), "{what}: an error page, not {}", a.content_type);
        assert!(!a.body.contains("the-state-42") && !a.body.contains("code="), "{what}: {}", a.body);
        assert!(a.body.contains("invalid_request"), "{what}: {}", a.body);
    }

    // A verified request whose user must sign in, with prompt=none, goes back with
    // login_required (S20: with iss and state), also to a loopback URI on another port.
    let none = with(&good, &[("prompt", "none")]);
    let q = error_query(&authorize(&node, &none).await, "https://app.test/cb");
    assert_eq!(q["error"], "login_required", "{q:?}");
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("the-state-42", issuer.as_str()));
    let loopback = with(&none, &[("redirect_uri", "http://127.0.0.1:53121/cb")]);
    let q = error_query(&authorize(&node, &loopback).await, "http://127.0.0.1:53121/cb");
    assert_eq!(q["error"], "login_required", "{q:?}");
    // A registered URI's own query is kept.
    let with_query = with(&none, &[("redirect_uri", "https://app.test/cb2?tenant=a")]);
    let q = error_query(&authorize(&node, &with_query).await, "https://app.test/cb2");
    assert_eq!((q["tenant"].as_str(), q["error"].as_str()), ("a", "login_required"), "{q:?}");

    // Wrong requests of a verified client go back with their error (S7, S9, S10, S31).
    let mut scope_twice = good.to_vec();
    scope_twice.push(("scope", "openid"));
    let cases: [(&str, Params, &str); 13] = [
        ("a challenge without its method (plain)", with(&good, &[("code_challenge_method", "")]), "invalid_request"),
        ("scope twice", scope_twice, "invalid_request"),
        ("no PKCE", with(&good, &[("code_challenge", ""), ("code_challenge_method", "")]), "invalid_request"),
        ("plain PKCE", with(&good, &[("code_challenge_method", "plain")]), "invalid_request"),
        ("a short challenge", with(&good, &[("code_challenge", "abc")]), "invalid_request"),
        ("implicit", with(&good, &[("response_type", "token")]), "unsupported_response_type"),
        ("hybrid", with(&good, &[("response_type", "code id_token")]), "unsupported_response_type"),
        ("no response type", with(&good, &[("response_type", "")]), "invalid_request"),
        ("a request object", with(&good, &[("request", "eyJhbGciOiJub25lIn0.e30.")]), "request_not_supported"),
        ("a request URI", with(&good, &[("request_uri", "https://evil.test/r")]), "request_uri_not_supported"),
        ("a scope not the client's", with(&good, &[("scope", "openid admin")]), "invalid_scope"),
        ("prompt=none with login", with(&good, &[("prompt", "none login")]), "invalid_request"),
        ("max_age not a number", with(&good, &[("max_age", "soon")]), "invalid_request"),
    ];
    for (what, params, error) in cases {
        let q = error_query(&authorize(&node, &params).await, "https://app.test/cb");
        assert_eq!(q["error"], error, "{what}: {q:?}");
        assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("the-state-42", issuer.as_str()), "{what}");
        assert!(!q.contains_key("code"), "{what}");
    }
    let fragment = with(&good, &[("response_mode", "fragment")]);
    let q = error_query(&authorize(&node, &fragment).await, "https://app.test/cb");
    let expected = ("invalid_request", "the-state-42", issuer.as_str());
    assert_eq!((q["error"].as_str(), q["state"].as_str(), q["iss"].as_str()), expected);
    // A client without the code grant.
    let service =
        with(&good, &[("client_id", service_id.as_str()), ("redirect_uri", "https://svc.test/cb"), ("scope", "")]);
    let q = error_query(&authorize(&node, &service).await, "https://svc.test/cb");
    let expected = ("unauthorized_client", "the-state-42", issuer.as_str());
    assert_eq!((q["error"].as_str(), q["state"].as_str(), q["iss"].as_str()), expected);
    // Unknown parameters are ignored, repeated or not.
    let mut unknown = none.clone();
    unknown.extend([("ui_hint", "a"), ("ui_hint", "b")]);
    assert_eq!(error_query(&authorize(&node, &unknown).await, "https://app.test/cb")["error"], "login_required");
}
