//! Admin API conventions against the real server: validation that names the field and stores
//! nothing, ETag/If-Match, cursor pagination, and forged or foreign tokens refused (S32–S34).

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{call, create_client, jwt_parts, platform_token, Answer};
use crate::support::{node::temp_data_dir, TestNode};

fn assert_problem(a: &Answer, status: StatusCode, field: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(a.content_type().starts_with("application/problem+json"), "{}", a.content_type());
    assert!(a.body["type"].as_str().unwrap().starts_with("urn:gatehouse:problem:"), "{}", a.body);
    if let Some(f) = field {
        let fields: Vec<&str> = a.body["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(fields.contains(&f), "errors name {f}: {}", a.body);
    }
}

fn valid_client() -> Value {
    json!({"name": "svc", "client_type": "confidential", "grant_types": ["client_credentials"], "audiences": ["https://api.test"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let audit_before = call(&node, Method::GET, "/admin/v1/tenants/default/audit?limit=500", Some(&admin), None).await;
    let path = "/admin/v1/tenants/default/clients";

    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut wrong_type = valid_client();
    wrong_type["name"] = json!(5);
    cases.push((wrong_type, "name"));
    let mut missing = valid_client();
    missing.as_object_mut().unwrap().remove("grant_types");
    cases.push((missing, "grant_types"));
    let mut unknown = valid_client();
    unknown["colour"] = json!("blue");
    cases.push((unknown, "colour"));
    let mut long = valid_client();
    long["name"] = json!("n".repeat(201));
    cases.push((long, "name"));
    let mut bad_grant = valid_client();
    bad_grant["grant_types"] = json!(["password"]);
    cases.push((bad_grant, "grant_types"));
    let mut public_cc = valid_client();
    public_cc["client_type"] = json!("public");
    cases.push((public_cc, "grant_types"));
    let mut bad_scope = valid_client();
    bad_scope["scopes"] = json!(["two words"]);
    cases.push((bad_scope, "scopes"));
    let mut bad_redirect = valid_client();
    bad_redirect["redirect_uris"] = json!(["http://evil.test/cb"]);
    cases.push((bad_redirect, "redirect_uris"));
    for (body, field) in cases {
        let a = call(&node, Method::POST, path, Some(&admin), Some(&body)).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, Some(field));
    }
    // Not JSON at all.
    let resp = node
        .client()
        .post(format!("{}{path}", node.url))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(&crate::support::admin::into_answer(resp).await, StatusCode::BAD_REQUEST, None);
    // Over the body limit: 413 before parsing.
    let mut huge = valid_client();
    huge["name"] = json!("x".repeat(70 * 1024));
    let a = call(&node, Method::POST, path, Some(&admin), Some(&huge)).await;
    assert_problem(&a, StatusCode::PAYLOAD_TOO_LARGE, None);
    // Tenants: invalid, reserved, duplicate.
    let a = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "Not Valid"}))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("id"));
    let a = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "admin"}))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("id"));
    let a = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "system"}))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("id"));
    // Bindings: unknown role, subject that is no client of this tenant.
    let a = call(
        &node,
        Method::POST,
        "/admin/v1/tenants/default/bindings",
        Some(&admin),
        Some(&json!({"subject": "client:c-nobody", "role": "admin"})),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("subject"));
    let a = call(
        &node,
        Method::POST,
        "/admin/v1/tenants/default/bindings",
        Some(&admin),
        Some(&json!({"subject": "client:c-nobody", "role": "superuser"})),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("role"));

    // Nothing was stored and nothing but the admin's own reads were audited.
    let list = call(&node, Method::GET, path, Some(&admin), None).await;
    assert_eq!(list.body["items"], json!([]), "no client was created");
    let tenants = call(&node, Method::GET, "/admin/v1/tenants", Some(&admin), None).await;
    assert_eq!(tenants.body["items"].as_array().unwrap().len(), 2, "no tenant was created");
    let audit_after = call(&node, Method::GET, "/admin/v1/tenants/default/audit?limit=500", Some(&admin), None).await;
    assert_eq!(audit_before.body, audit_after.body, "no audit entry for refused input");

    // Unknown paths and methods are problem documents too.
    let a = call(&node, Method::PATCH, "/admin/v1/tenants", Some(&admin), Some(&json!({}))).await;
    assert_problem(&a, StatusCode::METHOD_NOT_ALLOWED, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn etags_guard_updates_and_lists_page_by_cursor() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let (id, secret) = create_client(&node, &admin, "default", &["https://api.test"], &[]).await;
    let path = format!("/admin/v1/tenants/default/clients/{id}");
    let got = call(&node, Method::GET, &path, Some(&admin), None).await;
    assert_eq!(got.header("etag").as_deref(), Some("\"r1\""));
    assert!(got.body.get("client_secret").is_none(), "the secret is shown once only");
    assert!(!got.body.to_string().contains(&secret));

    let mut body = valid_client();
    body["name"] = json!("renamed");
    let put = |if_match: &'static str, body: Value| {
        let node = &node;
        let (path, admin) = (path.clone(), admin.clone());
        async move {
            let resp = node
                .client()
                .put(format!("{}{path}", node.url))
                .bearer_auth(admin)
                .header("If-Match", if_match)
                .json(&body)
                .send()
                .await
                .unwrap();
            crate::support::admin::into_answer(resp).await
        }
    };
    let a = put("\"r1\"", body.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.header("etag").as_deref(), Some("\"r2\""));
    assert_eq!(a.body["name"], "renamed");
    let mut stale = body.clone();
    stale["name"] = json!("lost update");
    let a = put("\"r1\"", stale).await;
    assert_problem(&a, StatusCode::PRECONDITION_FAILED, None);
    let now = call(&node, Method::GET, &path, Some(&admin), None).await;
    assert_eq!(now.body["name"], "renamed", "the stale update changed nothing");

    // Pagination: 3 clients, pages of 2.
    create_client(&node, &admin, "default", &["https://api.test"], &[]).await;
    create_client(&node, &admin, "default", &["https://api.test"], &[]).await;
    let first = call(&node, Method::GET, "/admin/v1/tenants/default/clients?limit=2", Some(&admin), None).await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let cursor = first.body["next_cursor"].as_str().expect("a next cursor").to_string();
    let second = call(
        &node,
        Method::GET,
        &format!("/admin/v1/tenants/default/clients?limit=2&cursor={cursor}"),
        Some(&admin),
        None,
    )
    .await;
    let items = second.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(second.body.get("next_cursor").is_none());
    let ids: Vec<&str> =
        first.body["items"].as_array().unwrap().iter().chain(items).map(|c| c["client_id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3, "pages do not overlap: {ids:?}");
    for bad in ["limit=0", "limit=501", "cursor=%%%"] {
        let a = call(&node, Method::GET, &format!("/admin/v1/tenants/default/clients?{bad}"), Some(&admin), None).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, None);
    }

    // Delete: 204, then 404.
    let a = call(&node, Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = call(&node, Method::GET, &path, Some(&admin), None).await;
    assert_problem(&a, StatusCode::NOT_FOUND, None);
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_foreign_tokens_are_refused() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let ok = call(&node, Method::GET, "/admin/v1/tenants", Some(&admin), None).await;
    assert_eq!(ok.status, StatusCode::OK);
    let (header, claims) = jwt_parts(&admin);
    let signature = admin.rsplit('.').next().unwrap();

    let mut forged: Vec<(&str, String)> = Vec::new();
    // alg none with our kid.
    let mut none = header.clone();
    none["alg"] = json!("none");
    forged.push(("alg none", format!("{}.{}.", b64(&none), b64(&claims))));
    // HS256 keyed with the public key (the SPKI PEM of the EC key from JWKS).
    let jwks: Value = node
        .client()
        .get(format!("{}/t/system/.well-known/jwks.json", node.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ec = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).unwrap().clone();
    let coord = |n: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(ec[n].as_str().unwrap()).unwrap();
    let mut spki = hex_decode("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.push(4);
    spki.extend(coord("x"));
    spki.extend(coord("y"));
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = header["kid"].as_str().map(str::to_string);
    hs.typ = Some("at+jwt".into());
    let hs_token = jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes())).unwrap();
    forged.push(("HS256 with the public key", hs_token));
    // Claims changed after signing (roles escalated), same signature.
    let mut escalated = claims.clone();
    escalated["roles"] = json!(["owner", "admin"]);
    escalated["sub"] = json!("someone-else");
    forged.push(("tampered claims", format!("{}.{}.{signature}", b64(&header), b64(&escalated))));
    // Unknown kid.
    let mut unknown = header.clone();
    unknown["kid"] = json!("not-a-key");
    forged.push(("unknown kid", format!("{}.{}.{signature}", b64(&unknown), b64(&claims))));
    // An issuer that is not ours.
    let mut foreign = claims.clone();
    foreign["iss"] = json!("https://evil.test");
    forged.push(("foreign issuer", format!("{}.{}.{signature}", b64(&header), b64(&foreign))));
    // The same token presented as another tenant's (signature then fails for that tenant's keys).
    let mut other = claims.clone();
    other["iss"] = json!(node.url.clone());
    forged.push(("another tenant's issuer", format!("{}.{}.{signature}", b64(&header), b64(&other))));
    // Not a JWT; the wrong typ.
    forged.push(("garbage", "not.a.jwt".into()));
    let mut jwt_typ = header.clone();
    jwt_typ["typ"] = json!("JWT");
    forged.push((
        "typ JWT (an ID token is not an access token)",
        format!("{}.{}.{signature}", b64(&jwt_typ), b64(&claims)),
    ));

    // A genuine admin token that has expired: a client whose tokens live one second.
    let body = json!({"name": "brief", "client_type": "confidential", "grant_types": ["client_credentials"],
                      "audiences": ["gatehouse-admin"], "access_token_lifetime_secs": 1});
    let c = call(&node, Method::POST, "/admin/v1/tenants/system/clients", Some(&admin), Some(&body)).await;
    let (id, secret) =
        (c.body["client_id"].as_str().unwrap().to_string(), c.body["client_secret"].as_str().unwrap().to_string());
    crate::support::admin::bind(&node, &admin, "system", &id, "owner").await;
    let brief = crate::support::admin::token_basic(&node, "system", &id, &secret, &[]).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let fresh = call(&node, Method::GET, "/admin/v1/tenants", Some(&brief), None).await;
    assert_eq!(fresh.status, StatusCode::OK, "the brief token works while it lasts: {}", fresh.body);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    forged.push(("expired", brief));

    for (what, token) in forged {
        let a = call(&node, Method::GET, "/admin/v1/tenants", Some(&token), None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {}", a.body);
        assert!(a.content_type().starts_with("application/problem+json"), "{what}");
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
