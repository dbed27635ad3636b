//! Helpers for the admin API and the token endpoint of a running test node.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::TestNode;

/// A platform admin token minted through the control socket (`gatehouse admin token`).
pub fn platform_token(node: &TestNode) -> String {
    let out = node.cli(&["admin", "token"]);
    assert!(out.status.success(), "admin token: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An answer: status, headers, and the body as JSON (`Null` when empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    pub fn content_type(&self) -> String {
        self.header("content-type").unwrap_or_default()
    }
}

/// Calls `{node.url}{path}` with an optional bearer token and JSON body.
pub async fn call(node: &TestNode, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
    let mut req = node.client().request(method, format!("{}{path}", node.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    into_answer(req.send().await.expect("request")).await
}

pub async fn into_answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, headers, body }
}

/// A confidential client_credentials client; returns its id and secret.
pub async fn create_client(
    node: &TestNode,
    token: &str,
    tenant: &str,
    audiences: &[&str],
    scopes: &[&str],
) -> (String, String) {
    let body = json!({
        "name": "test service",
        "client_type": "confidential",
        "grant_types": ["client_credentials"],
        "audiences": audiences,
        "scopes": scopes,
    });
    let a = call(node, Method::POST, &format!("/admin/v1/tenants/{tenant}/clients"), Some(token), Some(&body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "create client: {}", a.body);
    (a.body["client_id"].as_str().unwrap().to_string(), a.body["client_secret"].as_str().unwrap().to_string())
}

/// Binds a client to a role in its tenant.
pub async fn bind(node: &TestNode, token: &str, tenant: &str, client_id: &str, role: &str) {
    let body = json!({"subject": format!("client:{client_id}"), "role": role});
    let a = call(node, Method::POST, &format!("/admin/v1/tenants/{tenant}/bindings"), Some(token), Some(&body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "bind: {}", a.body);
}

/// The issuer URL of a tenant on this node.
pub fn issuer(node: &TestNode, tenant: &str) -> String {
    if tenant == "default" {
        node.url.clone()
    } else {
        format!("{}/t/{tenant}", node.url)
    }
}

/// A `client_credentials` request with HTTP Basic and extra form fields.
pub async fn token_basic(node: &TestNode, tenant: &str, id: &str, secret: &str, form: &[(&str, &str)]) -> Answer {
    let mut fields = vec![("grant_type", "client_credentials")];
    fields.extend_from_slice(form);
    let resp = node
        .client()
        .post(format!("{}/oauth2/token", issuer(node, tenant)))
        .basic_auth(id, Some(secret))
        .form(&fields)
        .send()
        .await
        .expect("token request");
    into_answer(resp).await
}

/// A form POST to one of a tenant's OAuth endpoints, client authenticated by HTTP Basic.
pub async fn oauth_post(
    node: &TestNode,
    tenant: &str,
    endpoint: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> Answer {
    let mut req = node.client().post(format!("{}/oauth2/{endpoint}", issuer(node, tenant))).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    into_answer(req.send().await.expect("request")).await
}

/// Decodes a JWT's header and payload without verifying it.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine;
    let part = |i: usize| -> Value {
        let seg = token.split('.').nth(i).expect("JWT segment");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seg).expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (part(0), part(1))
}
