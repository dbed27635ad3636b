//! The token endpoint (`client_credentials`), introspection and revocation against the real
//! server: RFC 9068 tokens signed by a key in the tenant's JWKS, every issued token audited
//! (A10), client authentication (S15), allowlists (S11, S22), response hygiene (S17).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{
    bind, call, create_client, issuer, jwt_parts, oauth_post, platform_token, token_basic, Answer,
};
use crate::support::{node::temp_data_dir, TestNode};

fn assert_no_store(a: &Answer) {
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"), "Cache-Control on {} {}", a.status, a.body);
    assert_eq!(a.header("pragma").as_deref(), Some("no-cache"));
    assert!(a.content_type().starts_with("application/json"), "content type {}", a.content_type());
}

fn assert_oauth_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error"], code, "{}", a.body);
    assert!(a.body["error_description"].is_string());
    assert_no_store(a);
}

async fn audit_targets(node: &TestNode, admin: &str, tenant: &str, action: &str) -> Vec<(String, String)> {
    let a = call(
        node,
        Method::GET,
        &format!("/admin/v1/tenants/{tenant}/audit?action={action}&limit=500"),
        Some(admin),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["target"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_tokens_verify_introspect_and_revoke() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let created = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "acme"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let (id, secret) = create_client(&node, &admin, "acme", &["https://api.acme.test"], &["read", "write"]).await;

    // HTTP Basic, scope narrowed.
    let a = token_basic(&node, "acme", &id, &secret, &[("scope", "read")]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_no_store(&a);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["scope"], "read");
    assert!(a.body["expires_in"].as_u64().unwrap() > 0);
    let token = a.body["access_token"].as_str().unwrap().to_string();
    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let jwks: Value = node
        .client()
        .get(format!("{}/.well-known/jwks.json", issuer(&node, "acme")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == header["kid"]), "kid is in the JWKS");
    assert_eq!(claims["iss"], issuer(&node, "acme"));
    assert_eq!(claims["aud"], "https://api.acme.test", "the client's first audience by default");
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["tenant"], "acme");
    for c in ["exp", "iat", "nbf", "jti"] {
        assert!(!claims[c].is_null(), "claim {c}");
    }

    // client_secret_post is refused for a client registered for client_secret_basic.
    let post = node
        .client()
        .post(format!("{}/oauth2/token", issuer(&node, "acme")))
        .form(&[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)])
        .send()
        .await
        .unwrap();
    let post = crate::support::admin::into_answer(post).await;
    assert_oauth_error(&post, StatusCode::UNAUTHORIZED, "invalid_client");

    // Introspection: active, with the token's claims.
    let i = oauth_post(&node, "acme", "introspect", Some((&id, &secret)), &[("token", &token)]).await;
    assert_eq!(i.status, StatusCode::OK, "{}", i.body);
    assert_no_store(&i);
    assert_eq!(i.body["active"], true);
    assert_eq!(i.body["scope"], "read");
    assert_eq!(i.body["client_id"], id.as_str());
    // Introspection needs client authentication (S15).
    let anonymous = oauth_post(&node, "acme", "introspect", None, &[("token", &token)]).await;
    assert_oauth_error(&anonymous, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(anonymous.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")));
    // Another tenant's endpoint does not know this token (S54).
    let (other_id, other_secret) = create_client(&node, &admin, "default", &["https://api.default.test"], &[]).await;
    let cross =
        oauth_post(&node, "default", "introspect", Some((&other_id, &other_secret)), &[("token", &token)]).await;
    assert_eq!(cross.body, json!({"active": false}));

    // Revocation: 200, then inactive; revoking again is still 200.
    let r = oauth_post(&node, "acme", "revoke", Some((&id, &secret)), &[("token", &token)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let i = oauth_post(&node, "acme", "introspect", Some((&id, &secret)), &[("token", &token)]).await;
    assert_eq!(i.body, json!({"active": false}));
    let again = oauth_post(&node, "acme", "revoke", Some((&id, &secret)), &[("token", &token)]).await;
    assert_eq!(again.status, StatusCode::OK);

    // Every returned token has its audit entry; the revocation too.
    let issued = audit_targets(&node, &admin, "acme", "token.issue").await;
    let jti = claims["jti"].as_str().unwrap();
    assert!(issued.iter().any(|(t, o)| t.starts_with(&format!("token:{jti} ")) && o == "ok"), "{issued:?}");
    let revoked = audit_targets(&node, &admin, "acme", "token.revoke").await;
    assert!(revoked.iter().any(|(t, _)| *t == format!("token:{jti}")));
    // The token itself never appears in the audit trail.
    let all = call(&node, Method::GET, "/admin/v1/tenants/acme/audit?limit=500", Some(&admin), None).await;
    assert!(!all.body.to_string().contains(&token));
    assert!(!all.body.to_string().contains(&secret));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_refusals_are_rfc_6749_errors() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start_with(&dir, &["--set", "rate_limits.failure_audit_window_secs=1"], &[]).expect("node");
    let admin = platform_token(&node);
    let (id, secret) = create_client(&node, &admin, "default", &["https://api.test", "orders"], &["read"]).await;

    // Wrong secret and unknown client look the same: 401 invalid_client with a Basic challenge.
    for (who, pass) in [(id.as_str(), "wrong"), ("c-nobody", secret.as_str())] {
        let a = token_basic(&node, "default", who, pass, &[]).await;
        assert_oauth_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(a.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")), "challenge for Basic");
    }
    // Failed authentications are audited, coalesced per client, source and reason within the
    // audit window (1 s here).
    let mut failures = Vec::new();
    for _ in 0..50 {
        failures = audit_targets(&node, &admin, "default", "authentication.failed").await;
        if failures.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures.iter().all(|(_, o)| o == "refused:invalid_client"));
    assert!(
        failures.iter().any(|(t, _)| t.contains(&format!("client:\"{id}\" ")) && t.contains("count=1")),
        "{failures:?}"
    );

    // Scope outside the allowlist (S11), audience outside it (S22), malformed resource.
    let a = token_basic(&node, "default", &id, &secret, &[("scope", "read admin")]).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "invalid_scope");
    let a = token_basic(&node, "default", &id, &secret, &[("resource", "https://elsewhere.test")]).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "invalid_target");
    let a = token_basic(&node, "default", &id, &secret, &[("resource", "not a uri")]).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "invalid_target");
    let a = token_basic(&node, "default", &id, &secret, &[("audience", "gatehouse-admin")]).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "invalid_target");
    // An allowed audience by name, and an allowed resource.
    let a = token_basic(&node, "default", &id, &secret, &[("audience", "orders")]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(jwt_parts(a.body["access_token"].as_str().unwrap()).1["aud"], "orders");
    let a = token_basic(&node, "default", &id, &secret, &[("resource", "https://api.test")]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // Unsupported and missing grant types.
    let a = oauth_post(&node, "default", "token", Some((&id, &secret)), &[("grant_type", "password")]).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    let a = oauth_post(&node, "default", "token", Some((&id, &secret)), &[]).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "invalid_request");

    // A client not registered for client_credentials (S11).
    let body = json!({"name": "web", "client_type": "confidential", "grant_types": ["authorization_code"],
                      "audiences": ["https://api.test"], "redirect_uris": ["https://app.test/cb"]});
    let web = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&body)).await;
    assert_eq!(web.status, StatusCode::CREATED, "{}", web.body);
    let (web_id, web_secret) = (web.body["client_id"].as_str().unwrap(), web.body["client_secret"].as_str().unwrap());
    let a = token_basic(&node, "default", web_id, web_secret, &[]).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "unauthorized_client");

    // A disabled client cannot authenticate.
    let path = format!("/admin/v1/tenants/default/clients/{id}");
    let current = call(&node, Method::GET, &path, Some(&admin), None).await;
    let mut update = current.body.clone();
    for k in ["client_id", "created_at_ms", "updated_at_ms"] {
        update.as_object_mut().unwrap().remove(k);
    }
    update["disabled"] = json!(true);
    let u = call(&node, Method::PUT, &path, Some(&admin), Some(&update)).await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    let a = token_basic(&node, "default", &id, &secret, &[]).await;
    assert_oauth_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");

    // Both Basic and a form secret: invalid_request.
    let resp = node
        .client()
        .post(format!("{}/oauth2/token", node.url))
        .basic_auth(web_id, Some(web_secret))
        .form(&[("grant_type", "client_credentials"), ("client_secret", web_secret)])
        .send()
        .await
        .unwrap();
    let a = crate::support::admin::into_answer(resp).await;
    assert_oauth_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_client_gets_admin_tokens_for_its_own_tenant_only() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let platform = platform_token(&node);
    for t in ["tenant-a", "tenant-b"] {
        let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&platform), Some(&json!({"id": t}))).await;
        assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    }
    // A platform admin client in the system tenant.
    let (sys_id, sys_secret) = create_client(&node, &platform, "system", &["gatehouse-admin"], &[]).await;
    bind(&node, &platform, "system", &sys_id, "admin").await;
    let t = token_basic(&node, "system", &sys_id, &sys_secret, &[]).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let sys_token = t.body["access_token"].as_str().unwrap().to_string();
    let list = call(&node, Method::GET, "/admin/v1/tenants", Some(&sys_token), None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 4);

    // Tenant A's admin: its own tenant only; B is 404 like a tenant that does not exist (S53).
    let (a_id, a_secret) = create_client(&node, &platform, "tenant-a", &["gatehouse-admin"], &[]).await;
    bind(&node, &platform, "tenant-a", &a_id, "admin").await;
    let a_token =
        token_basic(&node, "tenant-a", &a_id, &a_secret, &[]).await.body["access_token"].as_str().unwrap().to_string();
    let own = call(&node, Method::GET, "/admin/v1/tenants/tenant-a/clients", Some(&a_token), None).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let (b_client, _) = create_client(&node, &platform, "tenant-b", &["https://b.test"], &[]).await;
    for path in [
        "/admin/v1/tenants/tenant-b".to_string(),
        "/admin/v1/tenants/tenant-b/clients".to_string(),
        format!("/admin/v1/tenants/tenant-b/clients/{b_client}"),
        "/admin/v1/tenants/tenant-b/keys".to_string(),
        "/admin/v1/tenants/tenant-b/audit".to_string(),
        "/admin/v1/tenants/tenant-b/bindings".to_string(),
    ] {
        let a = call(&node, Method::GET, &path, Some(&a_token), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.body);
        assert!(a.content_type().starts_with("application/problem+json"));
    }
    let del =
        call(&node, Method::DELETE, &format!("/admin/v1/tenants/tenant-b/clients/{b_client}"), Some(&a_token), None)
            .await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    let still =
        call(&node, Method::GET, &format!("/admin/v1/tenants/tenant-b/clients/{b_client}"), Some(&platform), None)
            .await;
    assert_eq!(still.status, StatusCode::OK, "tenant A's delete changed nothing");
    // Platform-only operations are 403 for a tenant admin.
    let a = call(&node, Method::GET, "/admin/v1/tenants", Some(&a_token), None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);

    // A member or viewer token gets 403 on admin writes of its own tenant (S55).
    for role in ["member", "viewer"] {
        let (id, secret) = create_client(&node, &platform, "tenant-a", &["gatehouse-admin"], &[]).await;
        bind(&node, &platform, "tenant-a", &id, role).await;
        let tok =
            token_basic(&node, "tenant-a", &id, &secret, &[]).await.body["access_token"].as_str().unwrap().to_string();
        let body = json!({"name": "x", "client_type": "confidential", "grant_types": ["client_credentials"], "audiences": ["x"]});
        let a = call(&node, Method::POST, "/admin/v1/tenants/tenant-a/clients", Some(&tok), Some(&body)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{role}: {}", a.body);
        let rotate =
            call(&node, Method::POST, "/admin/v1/tenants/tenant-a/keys/rotate", Some(&tok), Some(&json!({}))).await;
        assert_eq!(rotate.status, StatusCode::FORBIDDEN, "{role}: {}", rotate.body);
    }

    // A token for another audience is refused by the admin API (S22), fail-closed.
    let (api_id, api_secret) = create_client(&node, &platform, "system", &["https://api.test"], &[]).await;
    bind(&node, &platform, "system", &api_id, "owner").await;
    let api_token = token_basic(&node, "system", &api_id, &api_secret, &[]).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = call(&node, Method::GET, "/admin/v1/tenants", Some(&api_token), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert!(a.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
}

/// `private_key_jwt` (RFC 7523, S16): an assertion signed by the client's registered key gets
/// a token once; a replay, a wrong audience, a long-lived assertion, another key, or another
/// algorithm get `invalid_client`.
#[tokio::test(flavor = "multi_thread")]
async fn private_key_jwt_assertions_are_checked_in_full_and_single_use() {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine;

    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let new_key = || {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec(); // 0x04 | x | y
        (pkcs8.as_ref().to_vec(), b64(&point[1..33]), b64(&point[33..65]))
    };
    let (pkcs8, x, y) = new_key();
    let body = json!({"name": "signer", "client_type": "confidential", "token_endpoint_auth_method": "private_key_jwt",
                      "grant_types": ["client_credentials"], "audiences": ["https://api.test"],
                      "jwks": {"ec": [{"kid": "k1", "x": x, "y": y}]}});
    let c = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&body)).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    assert!(c.body.get("client_secret").is_none(), "a private_key_jwt client gets no secret");
    assert_eq!(c.body["jwks"]["ec"][0]["x"], x.as_str());
    let id = c.body["client_id"].as_str().unwrap().to_string();
    let token_endpoint = format!("{}/oauth2/token", node.url);
    // The node reads the system clock; so does the test, through the same seam.
    let now = || gatehouse::clock::Clock::now_ms(&gatehouse::clock::SystemClock) / 1000;
    let sign = |pkcs8: &[u8], kid: &str, claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(pkcs8)).unwrap()
    };
    let claims = |aud: &str, exp_in: i64, jti: &str| json!({"iss": id, "sub": id, "aud": aud, "exp": now() + exp_in, "iat": now(), "jti": jti});
    let present = |assertion: String| {
        let node = &node;
        async move {
            let resp = node
                .client()
                .post(format!("{}/oauth2/token", node.url))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            crate::support::admin::into_answer(resp).await
        }
    };

    let good = sign(&pkcs8, "k1", claims(&token_endpoint, 60, "a-1"));
    let a = present(good.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_no_store(&a);
    assert_eq!(jwt_parts(a.body["access_token"].as_str().unwrap()).1["client_id"], id.as_str());
    // The issuer is an accepted audience too.
    let a = present(sign(&pkcs8, "k1", claims(&node.url, 60, "a-2"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let (other_pkcs8, _, _) = new_key();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(
        &hs_header,
        &claims(&token_endpoint, 60, "a-7"),
        &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
    )
    .unwrap();
    for (what, assertion) in [
        ("a replay", good),
        ("another audience", sign(&pkcs8, "k1", claims("https://elsewhere.test/token", 60, "a-3"))),
        ("exp more than 5 min ahead", sign(&pkcs8, "k1", claims(&token_endpoint, 900, "a-4"))),
        ("expired", sign(&pkcs8, "k1", claims(&token_endpoint, -10, "a-5"))),
        ("another key", sign(&other_pkcs8, "k1", claims(&token_endpoint, 60, "a-6"))),
        ("HS256 keyed with public data", hs),
        ("an unknown kid", sign(&pkcs8, "k9", claims(&token_endpoint, 60, "a-8"))),
    ] {
        let a = present(assertion).await;
        assert_oauth_error(&a, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(a.header("www-authenticate").is_none(), "{what}: no Basic challenge for an assertion");
    }
    // The replay is in the audit trail as a refused assertion.
    let used = audit_targets(&node, &admin, "default", "client.assertion").await;
    assert!(used.iter().any(|(t, o)| t.ends_with("assertion:a-1") && o == "refused:assertion_replayed"), "{used:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_entries_carry_the_request_id_and_the_peer_address() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = platform_token(&node);
    let body = serde_json::json!({"name": "traced", "client_type": "confidential",
                                  "grant_types": ["client_credentials"], "audiences": ["https://api.test"]});
    let created = call(&node, Method::POST, "/admin/v1/tenants/default/clients", Some(&admin), Some(&body)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let request_id = created.header("x-request-id").expect("X-Request-Id");
    let client_id = created.body["client_id"].as_str().unwrap().to_string();
    let secret = created.body["client_secret"].as_str().unwrap().to_string();
    let token = token_basic(&node, "default", &client_id, &secret, &[]).await;
    assert_eq!(token.status, StatusCode::OK);
    let token_request_id = token.header("x-request-id").expect("X-Request-Id");

    let audit = call(&node, Method::GET, "/admin/v1/tenants/default/audit?limit=500", Some(&admin), None).await;
    let items = audit.body["items"].as_array().unwrap();
    let create = items
        .iter()
        .find(|e| e["action"] == "client.create" && e["target"] == format!("client:{client_id}"))
        .expect("the create's entry");
    assert_eq!(create["request_id"].as_str(), Some(request_id.as_str()), "{create}");
    assert!(create["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{create}");
    let issue = items.iter().find(|e| e["action"] == "token.issue").expect("the token's entry");
    assert_eq!(issue["request_id"].as_str(), Some(token_request_id.as_str()), "{issue}");
    assert!(issue["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{issue}");
    // The chain, with entries of this layout, verifies.
    let verify = node.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}
