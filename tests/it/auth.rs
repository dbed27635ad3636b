//! End-user sign-in against the real server: the source documents' smoke test, cookie
//! hardening (S49), CSRF (S52), password rules (S38, S39), no enumeration on login (S41),
//! sessions that end with their user (S14), and tenants kept apart.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{call, platform_token};
use crate::support::{node::temp_data_dir, TestNode};

struct Answer {
    status: StatusCode,
    cookie: Option<String>,
    body: Value,
}

/// One request to `{issuer}{path}` with an optional cookie and extra headers.
async fn auth(
    node: &TestNode,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = node.client().request(method, format!("{}{path}", node.url));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let cookie = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = resp.text().await.unwrap();
    Answer { status, cookie, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
}

/// The `name=value` part of a `Set-Cookie` header.
fn jar(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_smoke_test_registers_signs_in_and_out_with_a_cookie() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let body = json!({"email":"smoke@example.com","password":"smoke-test-password","organization_name":"Smoke"});
    let r = auth(&node, Method::POST, "/v1/auth/register", None, Some(body.clone()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let set = r.cookie.expect("a session cookie");
    for attribute in ["__Host-gh_session_default=", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.to_lowercase().contains("domain"), "{set}");
    let cookie = jar(&set);

    let s = auth(&node, Method::GET, "/v1/auth/session", Some(&cookie), None, &[]).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    assert_eq!(s.body["user"]["email"], "smoke@example.com");
    let o = auth(&node, Method::POST, "/v1/auth/logout", Some(&cookie), None, &[]).await;
    assert_eq!(o.status, StatusCode::NO_CONTENT);
    assert!(o.cookie.unwrap().contains("Max-Age=0"), "the cookie is cleared");
    let s = auth(&node, Method::GET, "/v1/auth/session", Some(&cookie), None, &[]).await;
    assert_eq!(s.status, StatusCode::UNAUTHORIZED, "the session ended on the server");

    // The same email again: 409; the organization belongs to its creator.
    let again = auth(&node, Method::POST, "/v1/auth/register", None, Some(body), &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let orgs = call(&node, Method::GET, "/admin/v1/tenants/default/organizations", Some(&admin), None).await;
    assert_eq!(orgs.body["items"].as_array().unwrap().len(), 1, "one organization, not two");
    let bindings = call(&node, Method::GET, "/admin/v1/tenants/default/bindings", Some(&admin), None).await;
    let owner = bindings.body["items"].as_array().unwrap().iter().find(|b| b["role"] == "owner").cloned();
    assert!(owner.is_some_and(|b| b["scope"].as_str().unwrap().starts_with("org:")), "{}", bindings.body);

    // Login gives a new session id each time (anti-fixation); a truncated id is nobody's.
    let login = json!({"email": "SMOKE@example.com", "password": "smoke-test-password"});
    let a = auth(
        &node,
        Method::POST,
        "/v1/auth/login",
        Some("__Host-gh_session_default=planted"),
        Some(login.clone()),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let first = jar(&a.cookie.unwrap());
    assert!(!first.ends_with("=planted"));
    let b = auth(&node, Method::POST, "/v1/auth/login", None, Some(login), &[]).await;
    assert_ne!(jar(&b.cookie.unwrap()), first);
    let truncated = &first[..first.len() - 1];
    let s = auth(&node, Method::GET, "/v1/auth/session", Some(truncated), None, &[]).await;
    assert_eq!(s.status, StatusCode::UNAUTHORIZED);

    // Sign-ins are counted by tenant, method and result, and timed.
    let metrics = reqwest::get(format!("{}/metrics", node.management_url)).await.unwrap().text().await.unwrap();
    for line in [
        r#"gatehouse_logins_total{tenant="default",method="register",result="ok"} 1"#,
        r#"gatehouse_logins_total{tenant="default",method="register",result="email_taken"} 1"#,
        r#"gatehouse_logins_total{tenant="default",method="password",result="ok"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains("gatehouse_login_duration_seconds_count 4"), "{metrics}");

    // Disabling the user ends their sessions at once.
    let users = call(&node, Method::GET, "/admin/v1/tenants/default/users", Some(&admin), None).await;
    let user = users.body["items"][0].clone();
    let id = user["id"].as_str().unwrap();
    let put = json!({"username": user["username"], "email": user["email"], "display_name": user["display_name"], "disabled": true});
    let d = call(&node, Method::PUT, &format!("/admin/v1/tenants/default/users/{id}"), Some(&admin), Some(&put)).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    let s = auth(&node, Method::GET, "/v1/auth/session", Some(&first), None, &[]).await;
    assert_eq!(s.status, StatusCode::UNAUTHORIZED, "a disabled user's session is over");
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_refuses_bad_input_cross_site_requests_and_tells_no_one_who_exists() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let register = |email: &str, password: &str| json!({"email": email, "password": password});
    let users = || async {
        call(&node, Method::GET, "/admin/v1/tenants/default/users", Some(&admin), None).await.body["items"]
            .as_array()
            .unwrap()
            .len()
    };

    // Bad input: a 4xx problem naming the field, and nothing stored.
    for (email, password, field) in [
        ("not-an-email", "plenty long enough passphrase", "email"),
        ("a@example.com", &"x".repeat(257) as &str, "password"),
        ("a@example.com", &"y".repeat(10_000), "password"),
        ("a@example.com", "short", "password"),
        ("a@example.com", "gatehousegatehouse", "password"),
        ("a@example.com", "qwertyuiop123456", "password"),
    ] {
        let r = auth(&node, Method::POST, "/v1/auth/register", None, Some(register(email, password)), &[]).await;
        assert!(r.status.is_client_error(), "{email} / {} chars: {}", password.len(), r.status);
        let named = r.body["errors"].as_array().into_iter().flatten().any(|e| e["field"] == field);
        assert!(named || r.status == StatusCode::BAD_REQUEST, "{field}: {}", r.body);
        assert!(r.cookie.is_none());
    }
    let bad = node.client().post(format!("{}/v1/auth/register", node.url)).header("content-type", "application/json");
    let r = bad.body("{\"email\":").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "malformed JSON");
    assert_eq!(users().await, 0, "nothing was stored");

    // CSRF: a foreign Origin, a cross-site fetch, or a form body changes nothing.
    let ok = register("csrf@example.com", "plenty long enough passphrase");
    let r =
        auth(&node, Method::POST, "/v1/auth/register", None, Some(ok.clone()), &[("origin", "https://evil.example")])
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = auth(&node, Method::POST, "/v1/auth/register", None, Some(ok.clone()), &[("sec-fetch-site", "cross-site")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let form = node
        .client()
        .post(format!("{}/v1/auth/register", node.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=csrf%40example.com&password=plenty+long+enough+passphrase")
        .send()
        .await
        .unwrap();
    assert!(form.status().is_client_error(), "a form body: {}", form.status());
    assert_eq!(users().await, 0, "no cross-site request created anyone");
    let own_origin = node.url.clone();
    let r = auth(&node, Method::POST, "/v1/auth/register", None, Some(ok), &[("origin", &own_origin)]).await;
    assert_eq!(r.status, StatusCode::CREATED, "our own origin: {}", r.body);

    // Login: a wrong password and an unknown email get the same answer.
    let wrong = auth(
        &node,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(register("csrf@example.com", "not the right passphrase")),
        &[],
    )
    .await;
    let unknown = auth(
        &node,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(register("nobody@example.com", "not the right passphrase")),
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!((wrong.status, &wrong.body, &wrong.cookie), (unknown.status, &unknown.body, &unknown.cookie));

    // Tenants are apart: a session of `default` is nothing to `acme`, which has no
    // self-registration.
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let login = auth(
        &node,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(register("csrf@example.com", "plenty long enough passphrase")),
        &[],
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let default_cookie = jar(&login.cookie.unwrap());
    let as_acme = default_cookie.replace("gh_session_default", "gh_session_acme");
    let s = auth(&node, Method::GET, "/t/acme/v1/auth/session", Some(&as_acme), None, &[]).await;
    assert_eq!(s.status, StatusCode::UNAUTHORIZED, "another tenant's session id is nobody's here");
    let r = auth(
        &node,
        Method::POST,
        "/t/acme/v1/auth/register",
        None,
        Some(register("a@acme.example", "plenty long enough passphrase")),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "self-registration is off for acme: {}", r.body);
    let r = auth(
        &node,
        Method::POST,
        "/t/nobody/v1/auth/login",
        None,
        Some(register("a@b.example", "whatever it is here")),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registration_is_rate_limited_per_source() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start_with(&dir, &["--set", "rate_limits.registrations_per_source_per_min=2"], &[]).unwrap();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let body = json!({"email": format!("r{i}@example.com"), "password": "plenty long enough passphrase"});
        let resp = node.client().post(format!("{}/v1/auth/register", node.url)).json(&body).send().await.unwrap();
        statuses.push((resp.status(), resp.headers().get("retry-after").is_some()));
    }
    assert_eq!(statuses[0].0, StatusCode::CREATED);
    assert_eq!(statuses[1].0, StatusCode::CREATED);
    assert_eq!(statuses[2], (StatusCode::TOO_MANY_REQUESTS, true), "the third within a minute: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_cookies_cost_no_write_and_system_has_no_sign_in() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let audit_count = || async {
        let a = call(&node, Method::GET, "/admin/v1/tenants/default/audit?limit=500", Some(&admin), None).await;
        a.body["items"].as_array().unwrap().len()
    };
    let before = audit_count().await;
    for i in 0..20 {
        let cookie = format!("__Host-gh_session_default=made-up-{i}");
        let o = auth(&node, Method::POST, "/v1/auth/logout", Some(&cookie), None, &[]).await;
        assert_eq!(o.status, StatusCode::NO_CONTENT);
        let s = auth(&node, Method::GET, "/v1/auth/session", Some(&cookie), None, &[]).await;
        assert_eq!(s.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(audit_count().await, before, "no entry, so no write, for sessions that do not exist");

    let body = json!({"email": "root@example.com", "password": "plenty long enough passphrase"});
    for path in ["/t/system/v1/auth/login", "/t/system/v1/auth/register"] {
        let r = auth(&node, Method::POST, path, None, Some(body.clone()), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_lists_and_ends_their_own_sessions_and_no_one_elses() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let account = |email: &str| json!({"email": email, "password": "plenty long enough passphrase"});
    let r = auth(&node, Method::POST, "/v1/auth/register", None, Some(account("ada@example.com")), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let first = jar(&r.cookie.unwrap());
    let second = jar(&auth(&node, Method::POST, "/v1/auth/login", None, Some(account("ada@example.com")), &[])
        .await
        .cookie
        .unwrap());
    let third = jar(&auth(&node, Method::POST, "/v1/auth/login", None, Some(account("ada@example.com")), &[])
        .await
        .cookie
        .unwrap());
    let other = auth(&node, Method::POST, "/v1/auth/register", None, Some(account("bob@example.com")), &[]).await;
    let bobs = jar(&other.cookie.unwrap());

    let list = auth(&node, Method::GET, "/v1/auth/sessions", Some(&first), None, &[]).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let items = list.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{}", list.body);
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    let bob_list = auth(&node, Method::GET, "/v1/auth/sessions", Some(&bobs), None, &[]).await;
    let bob_session = bob_list.body["items"][0]["id"].as_str().unwrap().to_string();

    // Another user's session is none of theirs: 404, and it lives on.
    let d = auth(&node, Method::DELETE, &format!("/v1/auth/sessions/{bob_session}"), Some(&first), None, &[]).await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
    assert_eq!(auth(&node, Method::GET, "/v1/auth/session", Some(&bobs), None, &[]).await.status, StatusCode::OK);

    // Ending one: the second session is over, the others live.
    let second_id = {
        let l = auth(&node, Method::GET, "/v1/auth/sessions", Some(&second), None, &[]).await;
        l.body["items"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let d = auth(&node, Method::DELETE, &format!("/v1/auth/sessions/{second_id}"), Some(&first), None, &[]).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    assert_eq!(
        auth(&node, Method::GET, "/v1/auth/session", Some(&second), None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(auth(&node, Method::GET, "/v1/auth/session", Some(&third), None, &[]).await.status, StatusCode::OK);

    // Ending the others needs the password again.
    let wrong = json!({"password": "not the right passphrase"});
    let e = auth(&node, Method::POST, "/v1/auth/sessions/end-others", Some(&first), Some(wrong), &[]).await;
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(auth(&node, Method::GET, "/v1/auth/session", Some(&third), None, &[]).await.status, StatusCode::OK);
    let right = json!({"password": "plenty long enough passphrase"});
    let e = auth(&node, Method::POST, "/v1/auth/sessions/end-others", Some(&first), Some(right), &[]).await;
    assert_eq!(e.status, StatusCode::NO_CONTENT, "{}", e.body);
    assert_eq!(
        auth(&node, Method::GET, "/v1/auth/session", Some(&third), None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        auth(&node, Method::GET, "/v1/auth/session", Some(&first), None, &[]).await.status,
        StatusCode::OK,
        "its own lives"
    );
    assert_eq!(
        auth(&node, Method::GET, "/v1/auth/session", Some(&bobs), None, &[]).await.status,
        StatusCode::OK,
        "and bob's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_and_an_unknown_email_take_the_same_time_to_refuse() {
    let (_tmp, dir) = temp_data_dir();
    // The budgets are raised here only so that the 100 failures measured are not cut by 429s.
    let args = [
        "--set",
        "rate_limits.failures_per_source_per_min=10000",
        "--set",
        "rate_limits.failures_per_client_per_min=10000",
        "--set",
        "rate_limits.lockout_after_failures=1000",
    ];
    let node = TestNode::start_with(&dir, &args, &[]).unwrap();
    let body = json!({"email": "known@example.com", "password": "plenty long enough passphrase"});
    assert_eq!(auth(&node, Method::POST, "/v1/auth/register", None, Some(body), &[]).await.status, StatusCode::CREATED);
    let attempt = |email: &'static str| {
        let node = &node;
        async move {
            let body = json!({"email": email, "password": "not the right passphrase"});
            let started = std::time::Instant::now();
            let a = auth(node, Method::POST, "/v1/auth/login", None, Some(body), &[]).await;
            (started.elapsed(), a)
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    let mut first: Option<(StatusCode, Value)> = None;
    // Alternating, so drift on the machine falls on both alike.
    for _ in 0..50 {
        for (email, times) in [("known@example.com", &mut known), ("unknown@example.com", &mut unknown)] {
            let (took, a) = attempt(email).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED);
            assert!(a.cookie.is_none());
            match &first {
                None => first = Some((a.status, a.body.clone())),
                Some(f) => assert_eq!(f, &(a.status, a.body.clone()), "the same answer for {email}"),
            }
            times.push(took);
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (k, u) = (median(&mut known), median(&mut unknown));
    let ratio = k.max(u) / k.min(u);
    assert!(ratio < 1.2, "median {k:.4} s for a known email, {u:.4} s for an unknown one (ratio {ratio:.2})");
}

/// The stored password hash of `username` in a stopped data dir.
fn stored_hash(dir: &std::path::Path, username: &str) -> String {
    let db = gatehouse_storage::store::open_read_only(&dir.join("gatehouse.redb")).unwrap();
    let reader = gatehouse_storage::Reader::begin(&db).unwrap();
    reader.user_by_username("default", username).unwrap().unwrap().password_hash.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hash_made_with_old_parameters_is_upgraded_at_the_next_sign_in() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let account = json!({"email": "ada@example.com", "password": "plenty long enough passphrase"});
    assert_eq!(
        auth(&node, Method::POST, "/v1/auth/register", None, Some(account.clone()), &[]).await.status,
        StatusCode::CREATED
    );
    assert!(node.stop().success());
    let before = stored_hash(&dir, "ada@example.com");
    assert!(before.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{before}");

    let node = TestNode::start_with(
        &dir,
        &["--set", "passwords.argon2_memory_kib=20480", "--set", "passwords.argon2_iterations=3"],
        &[],
    )
    .unwrap();
    let wrong = json!({"email": "ada@example.com", "password": "not the right passphrase"});
    assert_eq!(
        auth(&node, Method::POST, "/v1/auth/login", None, Some(wrong), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let login = auth(&node, Method::POST, "/v1/auth/login", None, Some(account.clone()), &[]).await;
    assert_eq!(login.status, StatusCode::OK, "the old hash still verifies");
    let session = jar(&login.cookie.unwrap());
    assert!(node.stop().success());
    let after = stored_hash(&dir, "ada@example.com");
    assert!(after.starts_with("$argon2id$v=19$m=20480,t=3,p=1$"), "upgraded at sign-in: {after}");

    let node = TestNode::start_with(
        &dir,
        &["--set", "passwords.argon2_memory_kib=20480", "--set", "passwords.argon2_iterations=3"],
        &[],
    )
    .unwrap();
    let s = auth(&node, Method::GET, "/v1/auth/session", Some(&session), None, &[]).await;
    assert_eq!(s.status, StatusCode::OK, "an upgrade ends no session");
    assert_eq!(auth(&node, Method::POST, "/v1/auth/login", None, Some(account), &[]).await.status, StatusCode::OK);
}

/// Fires `n` wrong-password logins for `email` at once; the statuses and `Retry-After`s.
async fn parallel_wrong_logins(node: &TestNode, email: &str, n: usize) -> Vec<(StatusCode, Option<u64>)> {
    let body = json!({"email": email, "password": "not the right passphrase"});
    let attempts = (0..n).map(|_| {
        let req = node.client().post(format!("{}/v1/auth/login", node.url)).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
            (resp.status(), wait)
        }
    });
    futures_util::future::join_all(attempts).await
}

async fn login_status(node: &TestNode, email: &str, password: &str) -> (StatusCode, Option<u64>) {
    let body = json!({"email": email, "password": password});
    let resp = node.client().post(format!("{}/v1/auth/login", node.url)).json(&body).send().await.unwrap();
    let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (resp.status(), wait)
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_wrong_passwords_never_count_past_the_limit_and_the_hold_survives_a_restart() {
    let (_tmp, dir) = temp_data_dir();
    // The per-source budget is raised so that only the per-account count is measured.
    let args = |first_hold: &'static str| {
        [
            "--set",
            "rate_limits.lockout_after_failures=5",
            "--set",
            first_hold,
            "--set",
            "rate_limits.failures_per_source_per_min=10000",
        ]
    };
    let node = TestNode::start_with(&dir, &args("rate_limits.lockout_first_hold_secs=300"), &[]).unwrap();
    let password = "plenty long enough passphrase";
    let body = json!({"email": "known@example.com", "password": password});
    assert_eq!(auth(&node, Method::POST, "/v1/auth/register", None, Some(body), &[]).await.status, StatusCode::CREATED);

    for email in ["known@example.com", "unknown@example.com"] {
        let answers = parallel_wrong_logins(&node, email, 50).await;
        let checked = answers.iter().filter(|(s, _)| *s == StatusCode::UNAUTHORIZED).count();
        assert!((1..=5).contains(&checked), "{email}: {checked} passwords checked, the limit is 5: {answers:?}");
        for (status, wait) in &answers {
            match *status {
                StatusCode::UNAUTHORIZED => {}
                StatusCode::TOO_MANY_REQUESTS => assert!(wait.is_some(), "429 without Retry-After"),
                // The hashing queue may be full for a moment; that counts nothing.
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => panic!("{email}: {other}"),
            }
        }
    }
    // Let the attempts that fill the budget (if fewer than five were checked) fail too.
    for email in ["known@example.com", "unknown@example.com"] {
        for _ in 0..5 {
            if login_status(&node, email, "not the right passphrase").await.0 == StatusCode::TOO_MANY_REQUESTS {
                break;
            }
        }
    }
    let (status, wait) = login_status(&node, "known@example.com", password).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the right password waits out the hold too");
    assert!(wait.is_some_and(|w| (200..=300).contains(&w)), "Retry-After {wait:?}");
    let (unknown, _) = login_status(&node, "unknown@example.com", password).await;
    assert_eq!(unknown, StatusCode::TOO_MANY_REQUESTS, "an unknown email is held like a known one");

    // The count is raft state: it is there after a crash.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    node.kill9();
    let node = TestNode::start_with(&dir, &args("rate_limits.lockout_first_hold_secs=1"), &[]).unwrap();
    let (status, wait) = login_status(&node, "known@example.com", password).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "still held after a restart");
    assert!(wait.is_some_and(|w| w >= 200), "Retry-After {wait:?}");

    // Holds end, and the next one is twice as long (here 1 s, then 2 s).
    let body = json!({"email": "bob@example.com", "password": password});
    assert_eq!(auth(&node, Method::POST, "/v1/auth/register", None, Some(body), &[]).await.status, StatusCode::CREATED);
    let mut holds = Vec::new();
    for _ in 0..2 {
        for _ in 0..5 {
            let (status, _) = login_status(&node, "bob@example.com", "not the right passphrase").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (status, wait) = login_status(&node, "bob@example.com", password).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        holds.push(wait.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    }
    assert_eq!(holds, [1, 2], "the second hold is twice the first");
    let (status, _) = login_status(&node, "bob@example.com", password).await;
    assert_eq!(status, StatusCode::OK, "a hold ends; it never locks for good");
}

#[tokio::test(flavor = "multi_thread")]
async fn passkeys_are_off_without_a_host_name_and_a_wrong_rp_id_stops_the_start() {
    let (_tmp, dir) = temp_data_dir();
    // The default public URL here is https://127.0.0.1:…, which WebAuthn refuses.
    let node = TestNode::start(&dir);
    let r = auth(&node, Method::POST, "/v1/auth/passkeys/login/begin", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["type"], "urn:gatehouse:problem:passkeys_off", "{}", r.body);
    node.stop();
    let refused = TestNode::start_with(&dir, &["--set", "webauthn.rp_id=example.com"], &[]).err();
    assert!(refused.as_deref().is_some_and(|e| e.contains("webauthn")), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_that_requires_mfa_takes_shorter_passwords_and_has_a_factor_added_first() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&admin), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let settings = json!({"self_registration": true, "require_mfa": true});
    let u = call(&node, Method::PATCH, "/admin/v1/tenants/acme", Some(&admin), Some(&settings)).await;
    assert_eq!((u.status, &u.body["require_mfa"]), (StatusCode::OK, &json!(true)), "{}", u.body);

    // 8 characters where a second factor is required (not 7); 15 elsewhere.
    let account = |password: &str| json!({"email": "ada@acme.example", "password": password});
    let r = auth(&node, Method::POST, "/t/acme/v1/auth/register", None, Some(account("k7#Qp2!")), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let elsewhere = json!({"email": "ada@default.example", "password": "k7#Qp2!zW"});
    let r = auth(&node, Method::POST, "/v1/auth/register", None, Some(elsewhere), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "the default tenant asks for 15");
    let r = auth(&node, Method::POST, "/t/acme/v1/auth/register", None, Some(account("k7#Qp2!zW")), &[]).await;
    assert_eq!((r.status, &r.body["mfa_setup_required"]), (StatusCode::CREATED, &json!(true)), "{}", r.body);
    let setup = jar(&r.cookie.unwrap());

    // The setup-only session serves nothing but adding a factor.
    for path in ["/t/acme/v1/auth/session", "/t/acme/v1/auth/me", "/t/acme/v1/auth/sessions"] {
        let s = auth(&node, Method::GET, path, Some(&setup), None, &[]).await;
        assert_eq!(s.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let enrolled = auth(&node, Method::POST, "/t/acme/v1/auth/mfa/totp/enroll", Some(&setup), None, &[]).await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
    let totp = totp_rs::TOTP::from_url(enrolled.body["otpauth_uri"].as_str().unwrap()).unwrap();
    // The node checks codes against the wall clock, and so does this test.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let confirm = json!({"code": totp.generate(now)});
    let r = auth(&node, Method::POST, "/t/acme/v1/auth/mfa/totp/confirm", Some(&setup), Some(confirm), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Signing in again now asks for the code, which completes it.
    let r = auth(&node, Method::POST, "/t/acme/v1/auth/login", None, Some(account("k7#Qp2!zW")), &[]).await;
    assert_eq!((r.status, &r.body["mfa_required"]), (StatusCode::OK, &json!(true)), "{}", r.body);
    let pending = jar(&r.cookie.unwrap());
    let code = json!({"code": totp.generate(now + 30)});
    let r = auth(&node, Method::POST, "/t/acme/v1/auth/mfa/totp/challenge", Some(&pending), Some(code), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let full = jar(&r.cookie.unwrap());
    assert_eq!(
        auth(&node, Method::GET, "/t/acme/v1/auth/session", Some(&full), None, &[]).await.status,
        StatusCode::OK
    );

    // The spent step is raft state: after a restart the same code still does not work.
    node.stop();
    let node = TestNode::start(&dir);
    let r = auth(&node, Method::POST, "/t/acme/v1/auth/login", None, Some(account("k7#Qp2!zW")), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let pending = jar(&r.cookie.unwrap());
    let same = json!({"code": totp.generate(now + 30)});
    let r = auth(&node, Method::POST, "/t/acme/v1/auth/mfa/totp/challenge", Some(&pending), Some(same), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a step is accepted once, also after a restart");

    // Wrong codes spend the account's budget like wrong passwords: 429 with Retry-After.
    let mut throttled = None;
    for _ in 0..12 {
        let resp = node
            .client()
            .post(format!("{}/t/acme/v1/auth/mfa/totp/challenge", node.url))
            .header("cookie", &pending)
            .json(&json!({"code": "000000"}))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            break;
        }
    }
    assert!(throttled.is_some(), "the MFA challenge answers 429 with Retry-After once the budget is spent");

    // The second step is counted by method and result (this run of the node: a code refused
    // as spent, wrong codes, then the throttled one), and the 429s by route.
    let metrics = reqwest::get(format!("{}/metrics", node.management_url)).await.unwrap().text().await.unwrap();
    for line in [
        r#"gatehouse_logins_total{tenant="acme",method="totp",result="invalid_credentials"}"#,
        r#"gatehouse_logins_total{tenant="acme",method="totp",result="rate_limited"}"#,
        r#"route="{issuer}/v1/auth/mfa/totp/challenge",method="POST",status="429""#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_end_when_unused_or_old_and_factors_change_only_soon_after_a_sign_in() {
    use std::time::{Duration, Instant};
    let (_tmp, dir) = temp_data_dir();
    let port = crate::support::free_port();
    let public_url = format!("https://localhost:{port}");
    let timeouts =
        ["sessions.absolute_timeout_secs=6", "sessions.idle_timeout_secs=3", "sessions.recent_sign_in_secs=2"];
    let mut args: Vec<&str> = timeouts.iter().flat_map(|t| ["--set", t]).collect();
    args.extend(["--public-url", &public_url]);
    let node = TestNode::start_listening(&dir, &format!("127.0.0.1:{port}"), &args).unwrap();
    let credentials = json!({"email": "ada@example.com", "password": "plenty long enough passphrase"});
    let r = auth(&node, Method::POST, "/v1/auth/register", None, Some(credentials.clone()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let signed_in = Instant::now();
    let used = jar(&r.cookie.unwrap());
    let session = |cookie: String| {
        let node = &node;
        async move { auth(node, Method::GET, "/v1/auth/session", Some(&cookie), None, &[]).await.status }
    };
    let wait_until = |since: Instant, ms: u64| async move {
        while since.elapsed() < Duration::from_millis(ms) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // S48: an authenticator is added only within 2 s of the sign-in here, and a passkey
    // removed on the hosted page likewise.
    let enroll = auth(&node, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&used), Some(json!({})), &[]).await;
    assert_eq!(enroll.status, StatusCode::OK, "{}", enroll.body);
    let page = node.client().get(format!("{}/v1/auth/passkeys", node.local_url)).header("cookie", &used);
    let page = page.send().await.unwrap().text().await.unwrap();
    let marker = "name=\"form_token\" value=\"";
    let token = page[page.find(marker).expect("a form token") + marker.len()..].split('"').next().unwrap().to_string();
    wait_until(signed_in, 2500).await;
    let late = auth(&node, Method::POST, "/v1/auth/mfa/totp/enroll", Some(&used), Some(json!({})), &[]).await;
    let reauthenticate = json!("urn:gatehouse:problem:reauthentication_required");
    assert_eq!((late.status, &late.body["type"]), (StatusCode::UNAUTHORIZED, &reauthenticate), "{}", late.body);
    let form = [("form_token", token.as_str()), ("action", "remove"), ("credential", "c29tZS1wYXNza2V5")];
    let remove = node.client().post(format!("{}/v1/auth/passkeys", node.local_url)).header("cookie", &used).form(&form);
    let remove = remove.send().await.unwrap();
    assert_eq!(
        remove.status(),
        StatusCode::UNAUTHORIZED,
        "a late removal on the page: {}",
        remove.text().await.unwrap()
    );
    assert_eq!(session(used.clone()).await, StatusCode::OK, "a late factor change leaves the session signed in");

    // S50: a session used every 300 ms outlives its idle timeout (3 s) but not its absolute
    // one (6 s); one left unused ends after its idle timeout.
    let r = auth(&node, Method::POST, "/v1/auth/login", None, Some(credentials), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let unused = jar(&r.cookie.unwrap());
    let unused_since = Instant::now();
    while signed_in.elapsed() < Duration::from_millis(5000) {
        assert_eq!(session(used.clone()).await, StatusCode::OK, "used, {:?} after sign-in", signed_in.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until(unused_since, 3500).await;
    assert_eq!(session(unused).await, StatusCode::UNAUTHORIZED, "unused for 3.5 s with a 3 s idle timeout");
    // Used until 5 s (and its use written at least once a second), so its idle timeout has
    // not passed: only the absolute one ends it.
    wait_until(signed_in, 6400).await;
    assert_eq!(session(used).await, StatusCode::UNAUTHORIZED, "6.4 s after sign-in with a 6 s absolute timeout");
}
