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
    let mut no_audience = valid_client();
    no_audience["audiences"] = json!([]);
    cases.push((no_audience, "audiences"));
    let mut null_member = valid_client();
    null_member["token_endpoint_auth_method"] = Value::Null;
    cases.push((null_member, "token_endpoint_auth_method"));
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
    assert_problem(&a, StatusCode::CONFLICT, None);
    let a = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "system"}))).await;
    assert_problem(&a, StatusCode::CONFLICT, None);
    // Bindings: unknown role, subject that is no client of this tenant.
    let a = call(
        &node,
        Method::POST,
        "/admin/v1/tenants/default/bindings",
        Some(&admin),
        Some(&json!({"subject": "client:c-nobody", "role": "admin"})),
    )
    .await;
    assert_problem(&a, StatusCode::CONFLICT, Some("subject"));
    let a = call(
        &node,
        Method::POST,
        "/admin/v1/tenants/default/bindings",
        Some(&admin),
        Some(&json!({"subject": "client:c-nobody", "role": "Super User!"})),
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
    let a = put("\"r1\"", stale.clone()).await;
    assert_problem(&a, StatusCode::PRECONDITION_FAILED, None);
    // The largest revision a counter could name: a clear 412, never a wrap or a panic.
    let a = put("\"r18446744073709551615\"", stale).await;
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
    // S33: ECDSA is strict: a DER signature with r = s = 0, an all-zero raw signature.
    forged.push(("DER r=s=0", format!("{}.{}.MAYCAQACAQA", b64(&header), b64(&claims))));
    let zeros = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 64]);
    forged.push(("all-zero signature", format!("{}.{}.{zeros}", b64(&header), b64(&claims))));
    // S32: an RS256 header on the EC key's kid; a stripped signature.
    let mut rs = header.clone();
    rs["alg"] = json!("RS256");
    forged.push(("RS256 on an EC kid", format!("{}.{}.{signature}", b64(&rs), b64(&claims))));
    forged.push(("stripped signature", format!("{}.{}.", b64(&header), b64(&claims))));
    // S34: kid is a lookup only; jku and jwk headers are ignored.
    for kid in ["../../dev/null", "' OR 1=1--"] {
        let mut h = header.clone();
        h["kid"] = json!(kid);
        forged.push(("a hostile kid", format!("{}.{}.{signature}", b64(&h), b64(&claims))));
    }
    let mut jku = header.clone();
    jku["jku"] = json!("http://127.0.0.1:9/x");
    forged.push(("a jku header", format!("{}.{}.{signature}", b64(&jku), b64(&claims))));
    // S37: a truncated token and one with a character appended.
    forged.push(("truncated", admin[..admin.len() - 2].to_string()));
    forged.push(("appended", format!("{admin}A")));
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

#[tokio::test(flavor = "multi_thread")]
async fn users_organizations_and_their_bindings() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let users = "/admin/v1/tenants/default/users";
    let body = json!({"username": "Ada", "email": "ada@example.com", "display_name": "Ada Lovelace",
                      "password": "correct horse battery staple"});
    let ada = call(&node, Method::POST, users, Some(&admin), Some(&body)).await;
    assert_eq!(ada.status, StatusCode::CREATED, "{}", ada.body);
    assert_eq!(ada.body["has_password"], true);
    assert!(!ada.body.to_string().contains("correct horse"), "the password is write-only");
    let ada_id = ada.body["id"].as_str().unwrap().to_string();
    // Usernames are unique, case-insensitively; passwords have a length policy.
    let dup = call(&node, Method::POST, users, Some(&admin), Some(&json!({"username": "ADA"}))).await;
    assert_problem(&dup, StatusCode::CONFLICT, None);
    let short =
        call(&node, Method::POST, users, Some(&admin), Some(&json!({"username": "bob", "password": "short"}))).await;
    assert_problem(&short, StatusCode::BAD_REQUEST, Some("password"));
    let bob = call(&node, Method::POST, users, Some(&admin), Some(&json!({"username": "bob"}))).await;
    assert_eq!(bob.status, StatusCode::CREATED, "{}", bob.body);
    assert_eq!(bob.body["has_password"], false);
    let bob_id = bob.body["id"].as_str().unwrap().to_string();

    // Search matches username, e-mail and display name.
    let found = call(&node, Method::GET, &format!("{users}?search=lovelace"), Some(&admin), None).await;
    let ids: Vec<&str> = found.body["items"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![ada_id.as_str()]);
    let all = call(&node, Method::GET, users, Some(&admin), None).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);

    // Set a password; update the profile with If-Match.
    let pw = call(
        &node,
        Method::POST,
        &format!("{users}/{bob_id}/password"),
        Some(&admin),
        Some(&json!({"password": "another long passphrase"})),
    )
    .await;
    assert_eq!(pw.status, StatusCode::NO_CONTENT, "{}", pw.body);
    let got = call(&node, Method::GET, &format!("{users}/{bob_id}"), Some(&admin), None).await;
    assert_eq!(got.body["has_password"], true);
    let etag = got.header("etag").unwrap();
    let resp = node
        .client()
        .put(format!("{}{users}/{bob_id}", node.url))
        .bearer_auth(&admin)
        .header("If-Match", &etag)
        .json(&json!({"username": "robert", "disabled": true}))
        .send()
        .await
        .unwrap();
    let updated = crate::support::admin::into_answer(resp).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["username"], "robert");
    assert_eq!(updated.body["disabled"], true);
    assert_eq!(updated.body["has_password"], true, "an update keeps the password");
    let taken = call(&node, Method::POST, users, Some(&admin), Some(&json!({"username": "Robert"}))).await;
    assert_problem(&taken, StatusCode::CONFLICT, None);
    let freed = call(&node, Method::POST, users, Some(&admin), Some(&json!({"username": "bob"}))).await;
    assert_eq!(freed.status, StatusCode::CREATED, "the old username is free again: {}", freed.body);

    // Organizations, memberships, and a binding scoped to the organization.
    let orgs = "/admin/v1/tenants/default/organizations";
    let org = call(&node, Method::POST, orgs, Some(&admin), Some(&json!({"name": "Engines"}))).await;
    assert_eq!(org.status, StatusCode::CREATED, "{}", org.body);
    let org_id = org.body["id"].as_str().unwrap().to_string();
    let members = format!("{orgs}/{org_id}/members");
    let m = call(&node, Method::POST, &members, Some(&admin), Some(&json!({"user_id": ada_id}))).await;
    assert_eq!(m.status, StatusCode::CREATED, "{}", m.body);
    let again = call(&node, Method::POST, &members, Some(&admin), Some(&json!({"user_id": ada_id}))).await;
    assert_problem(&again, StatusCode::CONFLICT, None);
    let nobody = call(&node, Method::POST, &members, Some(&admin), Some(&json!({"user_id": "u-nobody"}))).await;
    assert_problem(&nobody, StatusCode::CONFLICT, Some("user_id"));
    let listed = call(&node, Method::GET, &members, Some(&admin), None).await;
    assert_eq!(listed.body["items"][0]["user_id"], ada_id.as_str());
    let bindings = "/admin/v1/tenants/default/bindings";
    let scoped = json!({"subject": format!("user:{ada_id}"), "role": "viewer", "scope": format!("org:{org_id}")});
    let b = call(&node, Method::POST, bindings, Some(&admin), Some(&scoped)).await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    let bad_scope = json!({"subject": format!("user:{ada_id}"), "role": "viewer", "scope": "org:o-nowhere"});
    let b = call(&node, Method::POST, bindings, Some(&admin), Some(&bad_scope)).await;
    assert_problem(&b, StatusCode::CONFLICT, Some("scope"));

    // Deleting the user takes its membership and bindings with it.
    let del = call(&node, Method::DELETE, &format!("{users}/{ada_id}"), Some(&admin), None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let listed = call(&node, Method::GET, &members, Some(&admin), None).await;
    assert_eq!(listed.body["items"], json!([]));
    let left = call(&node, Method::GET, bindings, Some(&admin), None).await;
    assert_eq!(left.body["items"], json!([]));
    let gone = call(&node, Method::DELETE, &format!("{orgs}/{org_id}"), Some(&admin), None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let gone = call(&node, Method::GET, &format!("{orgs}/{org_id}"), Some(&admin), None).await;
    assert_problem(&gone, StatusCode::NOT_FOUND, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_tenant_stops_serving_and_system_stays_enabled() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let (id, secret) = create_client(&node, &admin, "acme", &["gatehouse-admin"], &[]).await;
    crate::support::admin::bind(&node, &admin, "acme", &id, "admin").await;
    let tenant_token = crate::support::admin::token_basic(&node, "acme", &id, &secret, &[]).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let own = call(&node, Method::GET, "/admin/v1/tenants/acme", Some(&tenant_token), None).await;
    assert_eq!(own.status, StatusCode::OK);
    // A tenant admin may rename its tenant but not disable it.
    let a = call(&node, Method::PATCH, "/admin/v1/tenants/acme", Some(&tenant_token), Some(&json!({"disabled": true})))
        .await;
    assert_problem(&a, StatusCode::FORBIDDEN, None);
    let a = call(
        &node,
        Method::PATCH,
        "/admin/v1/tenants/acme",
        Some(&tenant_token),
        Some(&json!({"display_name": "Acme Inc"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["display_name"], "Acme Inc");

    let a = call(&node, Method::PATCH, "/admin/v1/tenants/acme", Some(&admin), Some(&json!({"disabled": true}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["status"], "disabled");
    let discovery =
        node.client().get(format!("{}/t/acme/.well-known/openid-configuration", node.url)).send().await.unwrap();
    assert_eq!(discovery.status(), 404, "a disabled tenant's issuer is gone");
    let t = crate::support::admin::token_basic(&node, "acme", &id, &secret, &[]).await;
    assert_eq!(t.status, StatusCode::NOT_FOUND);
    let a = call(&node, Method::GET, "/admin/v1/tenants/acme", Some(&tenant_token), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "its tokens stop working: {}", a.body);
    let a =
        call(&node, Method::PATCH, "/admin/v1/tenants/system", Some(&admin), Some(&json!({"disabled": true}))).await;
    assert_problem(&a, StatusCode::CONFLICT, None);
    let a = call(&node, Method::PATCH, "/admin/v1/tenants/acme", Some(&admin), Some(&json!({"disabled": false}))).await;
    assert_eq!(a.body["status"], "active");
    let discovery =
        node.client().get(format!("{}/t/acme/.well-known/openid-configuration", node.url)).send().await.unwrap();
    assert_eq!(discovery.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_replay_creates_nothing_twice_and_shows_no_secret() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let path = "/admin/v1/tenants/default/clients";
    let post = |key: &'static str, token: String, body: Value| {
        let node = &node;
        async move {
            let resp = node
                .client()
                .post(format!("{}{path}", node.url))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            crate::support::admin::into_answer(resp).await
        }
    };
    let first = post("k-1", admin.clone(), valid_client()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let secret = first.body["client_secret"].as_str().expect("the first answer shows the secret").to_string();
    let replay = post("k-1", admin.clone(), valid_client()).await;
    assert_eq!(replay.status, StatusCode::CREATED, "the first status again");
    assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(replay.body["client_id"], first.body["client_id"], "the same resource");
    assert!(replay.body.get("client_secret").is_none(), "no secret in a replay: {}", replay.body);
    assert!(!replay.body.to_string().contains(&secret));
    let list = call(&node, Method::GET, path, Some(&admin), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1, "created once");

    // The same key with another body: 422, nothing created.
    let mut other = valid_client();
    other["name"] = json!("other");
    let a = post("k-1", admin.clone(), other.clone()).await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, None);
    // Another caller's key space is its own: a platform admin client using the same key creates.
    let (c, s) = create_client(&node, &admin, "system", &["gatehouse-admin"], &[]).await;
    crate::support::admin::bind(&node, &admin, "system", &c, "admin").await;
    let other_caller = crate::support::admin::token_basic(&node, "system", &c, &s, &[]).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = post("k-1", other_caller, valid_client()).await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert!(theirs.header("idempotent-replayed").is_none());
    assert_ne!(theirs.body["client_id"], first.body["client_id"]);
    let list = call(&node, Method::GET, path, Some(&admin), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    // A key that is not visible ASCII is refused before anything happens.
    let a = post("bad key", admin.clone(), other).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("Idempotency-Key"));
    let list = call(&node, Method::GET, path, Some(&admin), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tenant_removes_everything_it_holds() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let owner = platform_token(&node);
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&owner), Some(&json!({"id": "gone"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let (id, secret) = create_client(&node, &owner, "gone", &["gatehouse-admin"], &[]).await;
    crate::support::admin::bind(&node, &owner, "gone", &id, "admin").await;
    let u = call(&node, Method::POST, "/admin/v1/tenants/gone/users", Some(&owner), Some(&json!({"username": "ann"})))
        .await;
    assert_eq!(u.status, StatusCode::CREATED);
    let tenant_admin = crate::support::admin::token_basic(&node, "gone", &id, &secret, &[]).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Deleting needs the owner role: a tenant admin gets 403; the appliance's tenants are kept.
    let a = call(&node, Method::DELETE, "/admin/v1/tenants/gone", Some(&tenant_admin), None).await;
    assert_problem(&a, StatusCode::FORBIDDEN, None);
    for kept in ["system", "default"] {
        let a = call(&node, Method::DELETE, &format!("/admin/v1/tenants/{kept}"), Some(&owner), None).await;
        assert_problem(&a, StatusCode::CONFLICT, None);
    }

    let a = call(&node, Method::DELETE, "/admin/v1/tenants/gone", Some(&owner), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = call(&node, Method::GET, "/admin/v1/tenants/gone", Some(&owner), None).await;
    assert_problem(&a, StatusCode::NOT_FOUND, None);
    let discovery =
        node.client().get(format!("{}/t/gone/.well-known/openid-configuration", node.url)).send().await.unwrap();
    assert_eq!(discovery.status(), 404);
    let a = call(&node, Method::GET, "/admin/v1/tenants/gone/clients", Some(&tenant_admin), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "the deleted tenant's tokens stop working: {}", a.body);
    // A new tenant with the same id starts empty.
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&owner), Some(&json!({"id": "gone"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    for list in ["clients", "users", "bindings", "organizations"] {
        let a = call(&node, Method::GET, &format!("/admin/v1/tenants/gone/{list}"), Some(&owner), None).await;
        assert_eq!(a.body["items"], json!([]), "{list} of the old tenant are gone");
    }
    let verify = node.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "the audit chain stays whole");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_role_is_a_template_with_permissions_added_and_removed() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let roles = "/admin/v1/tenants/default/roles";
    let body = json!({"name": "auditor", "template": "viewer", "add": ["keys:rotate"], "remove": ["clients:read"]});
    let r = call(&node, Method::POST, roles, Some(&admin), Some(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let perms: Vec<&str> = r.body["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(
        perms.contains(&"keys:rotate") && perms.contains(&"audit:read") && !perms.contains(&"clients:read"),
        "{perms:?}"
    );
    let list = call(&node, Method::GET, roles, Some(&admin), None).await;
    let names: Vec<&str> = list.body["roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["owner", "admin", "member", "viewer", "auditor"]);
    let dup =
        call(&node, Method::POST, roles, Some(&admin), Some(&json!({"name": "admin", "template": "owner"}))).await;
    assert_problem(&dup, StatusCode::CONFLICT, None);
    let unknown = call(
        &node,
        Method::POST,
        roles,
        Some(&admin),
        Some(&json!({"name": "x1", "template": "viewer", "add": ["root:all"]})),
    )
    .await;
    assert_problem(&unknown, StatusCode::BAD_REQUEST, Some("add"));

    // A client bound to the tenant role gets exactly its permissions.
    let (id, secret) = create_client(&node, &admin, "default", &["gatehouse-admin"], &[]).await;
    let b = call(
        &node,
        Method::POST,
        "/admin/v1/tenants/default/bindings",
        Some(&admin),
        Some(&json!({"subject": format!("client:{id}"), "role": "auditor"})),
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    let token = crate::support::admin::token_basic(&node, "default", &id, &secret, &[]).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(jwt_parts(&token).1["roles"], json!(["auditor"]));
    let a = call(&node, Method::GET, "/admin/v1/tenants/default/audit", Some(&token), None).await;
    assert_eq!(a.status, StatusCode::OK, "audit:read from the template: {}", a.body);
    let a = call(&node, Method::GET, "/admin/v1/tenants/default/clients", Some(&token), None).await;
    assert_problem(&a, StatusCode::FORBIDDEN, None);
    let a = call(&node, Method::POST, "/admin/v1/tenants/default/keys/rotate", Some(&token), Some(&json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "keys:rotate was added: {}", a.body);

    // A role in use cannot be deleted; a binding to an unknown role names the field.
    let d = call(&node, Method::DELETE, &format!("{roles}/auditor"), Some(&admin), None).await;
    assert_problem(&d, StatusCode::CONFLICT, None);
    let b2 = call(
        &node,
        Method::POST,
        "/admin/v1/tenants/default/bindings",
        Some(&admin),
        Some(&json!({"subject": format!("client:{id}"), "role": "nobody"})),
    )
    .await;
    assert_problem(&b2, StatusCode::CONFLICT, Some("role"));
    let binding_id = b.body["id"].as_str().unwrap();
    let u =
        call(&node, Method::DELETE, &format!("/admin/v1/tenants/default/bindings/{binding_id}"), Some(&admin), None)
            .await;
    assert_eq!(u.status, StatusCode::NO_CONTENT);
    let d = call(&node, Method::DELETE, &format!("{roles}/auditor"), Some(&admin), None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_json_member_given_twice_is_refused_and_creates_nothing() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let users = "/admin/v1/tenants/default/users";
    let resp = node
        .client()
        .post(format!("{}{users}", node.url))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"username":"a","username":"b"}"#)
        .send()
        .await
        .unwrap();
    let a = crate::support::admin::into_answer(resp).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("username"));
    let all = call(&node, Method::GET, users, Some(&admin), None).await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(0), "nothing was created: {}", all.body);
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_refused_before_its_body_is_parsed() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let users = format!("{}/admin/v1/tenants/default/users", node.url);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies = [r#"{"username": 5}"#.to_string(), "not json at all".to_string(), deep];
    let bad_token = format!("{}x", &admin[..admin.len() - 1]);
    for body in &bodies {
        for token in [None, Some(bad_token.as_str())] {
            let mut req = node.client().post(&users).header("content-type", "application/json").body(body.clone());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let a = crate::support::admin::into_answer(req.send().await.unwrap()).await;
            assert_problem(&a, StatusCode::UNAUTHORIZED, None);
            assert!(a.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{:?}", a.headers);
            assert!(a.body.get("errors").is_none(), "no field-level messages for an anonymous caller: {}", a.body);
        }
    }
    // With a valid token, the same bodies are validated and named.
    let a =
        call(&node, Method::POST, "/admin/v1/tenants/default/users", Some(&admin), Some(&json!({"username": 5}))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, Some("username"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_admin_token_from_the_cli_can_be_revoked_and_the_revocation_is_audited() {
    use std::io::Write;
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let other = platform_token(&node);
    let ok = call(&node, Method::GET, "/admin/v1/tenants", Some(&admin), None).await;
    assert_eq!(ok.status, StatusCode::OK);
    // The token is read from standard input, so it never shows in a process list.
    let mut child = crate::support::node::command(&dir)
        .args(["admin", "revoke"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(admin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "admin revoke: {}", String::from_utf8_lossy(&out.stderr));
    let refused = call(&node, Method::GET, "/admin/v1/tenants", Some(&admin), None).await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED, None);
    // Only that token: another one keeps working, and the revocation is in the audit trail.
    let audit =
        call(&node, Method::GET, "/admin/v1/tenants/system/audit?action=token.revoke", Some(&other), None).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    let (_, claims) = jwt_parts(&admin);
    let entries = audit.body["items"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["target"] == format!("token:{}", claims["jti"].as_str().unwrap())
            && e["actor"].as_str().unwrap_or_default().starts_with("cli:uid:")),
        "{}",
        audit.body
    );
    // Something that is not a platform admin token is refused with a reason.
    let mut child = crate::support::node::command(&dir)
        .args(["admin", "revoke"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"not-a-token").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid platform admin token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_and_a_prune_carry_their_idempotent_answer_in_their_own_command() {
    let (_tmp, dir) = temp_data_dir();
    // Short token lifetimes, so superseded keys retire (and can be pruned) within the test.
    let args = [
        "--set",
        "keys.max_token_lifetime_secs=2",
        "--set",
        "oauth.access_token_lifetime_secs=2",
        "--set",
        "oauth.admin_token_lifetime_secs=2",
    ];
    let node = TestNode::start_with(&dir, &args, &[]).unwrap();
    let post = |path: &'static str, key: &'static str, body: Value| {
        let node = &node;
        async move {
            let resp = node
                .client()
                .post(format!("{}{path}", node.url))
                .bearer_auth(platform_token(node))
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            crate::support::admin::into_answer(resp).await
        }
    };
    let node_ref = &node;
    let get = move |path: String| async move {
        let a = call(node_ref, Method::GET, &path, Some(&platform_token(node_ref)), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body
    };
    let remembered_apart = || async {
        let entries = get("/admin/v1/tenants/system/audit?action=idempotency.remember".into()).await;
        entries["items"].as_array().unwrap().len()
    };
    let keys = || get("/admin/v1/tenants/default/keys".into());
    let before = keys().await["keys"].as_array().unwrap().len();

    let first = post("/admin/v1/tenants/default/keys/rotate", "rotate-1", json!({"now": true})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let again = post("/admin/v1/tenants/default/keys/rotate", "rotate-1", json!({"now": true})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body, "the replay is the first answer");
    assert_eq!(keys().await["keys"].as_array().unwrap().len(), before + 2, "rotated once: a key per algorithm");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed = keys().await;
        let retired = listed["keys"].as_array().unwrap().iter().filter(|k| k["state"] == "retired").count();
        if retired == before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the superseded keys never retired: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let pruned = post("/admin/v1/tenants/default/keys/prune", "prune-1", json!({})).await;
    assert_eq!(pruned.status, StatusCode::OK, "{}", pruned.body);
    assert_eq!(pruned.body["keys"].as_array().unwrap().len(), before, "{}", pruned.body);
    let again = post("/admin/v1/tenants/default/keys/prune", "prune-1", json!({})).await;
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, pruned.body);
    assert_eq!(remembered_apart().await, 0, "both answers were written with their actions, not after them");

    // A dry run proposes no action, so its answer is remembered on its own: the audit query
    // above does see such entries.
    let dry = post("/admin/v1/tenants/default/keys/prune", "prune-dry", json!({"dry_run": true})).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(remembered_apart().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_set_password_follows_the_same_rule_as_sign_in() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let users = "/admin/v1/tenants/default/users";
    for weak in ["fourteen chars", "qwertyuiop123456", "gatehousegatehouse", "passwordpassword"] {
        let body = json!({"username": "lovelace", "password": weak});
        let a = call(&node, Method::POST, users, Some(&admin), Some(&body)).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, Some("password"));
    }
    let listed = call(&node, Method::GET, users, Some(&admin), None).await;
    assert!(listed.body["items"].as_array().unwrap().is_empty(), "nothing was created");
    // Precomposed or decomposed, one password: set one way, signed in the other.
    let body = json!({"username": "ada@example.com", "email": "ada@example.com", "password": "caf\u{e9} lantern orchard ribbon"});
    let a = call(&node, Method::POST, users, Some(&admin), Some(&body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let login = json!({"email": "ada@example.com", "password": "cafe\u{301} lantern orchard ribbon"});
    let resp = node.client().post(format!("{}/v1/auth/login", node.url)).json(&login).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "NFKC on both sides");
}
