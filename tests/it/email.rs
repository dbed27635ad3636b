//! Email sign-in against the real server: sign-in codes, sign-in links, password reset and
//! address checks, end to end through the dev mailbox and, in a second run, through SMTP to a
//! Python `aiosmtpd` sink (pinned in tests/clients/python). Each code or link works once, and a
//! request for a message answers alike for known and unknown addresses (S37, S41, S43).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{call, platform_token};
use crate::support::{node::temp_data_dir, TestNode};

const PASSWORD: &str = "plenty long enough passphrase";

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    cookie: Option<String>,
    body: Value,
}

async fn post(node: &TestNode, path: &str, cookie: Option<&str>, body: Value) -> Reply {
    let mut req = node.client().post(format!("{}{path}", node.url)).json(&body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let cookie =
        headers.get("set-cookie").and_then(|v| v.to_str().ok()).map(|s| s.split(';').next().unwrap().to_string());
    let body = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
    Reply { status, headers, cookie, body }
}

async fn session_status(node: &TestNode, cookie: &str) -> StatusCode {
    let resp = node.client().get(format!("{}/v1/auth/session", node.url)).header("cookie", cookie).send().await;
    resp.unwrap().status()
}

/// Where the test reads messages: the dev mailbox, or the SMTP sink's Maildir.
enum Inbox<'a> {
    Mailbox { node: &'a TestNode, admin: String },
    Maildir(std::path::PathBuf),
}

/// A message's recipient and text.
struct Mail {
    to: String,
    subject: String,
    body: String,
}

impl Inbox<'_> {
    async fn all(&self) -> Vec<Mail> {
        match self {
            Inbox::Mailbox { node, admin } => {
                let r = call(node, Method::GET, "/admin/v1/tenants/default/mailbox", Some(admin), None).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                r.body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| Mail {
                        to: m["to"].as_str().unwrap().into(),
                        subject: m["subject"].as_str().unwrap().into(),
                        body: m["body"].as_str().unwrap().into(),
                    })
                    .collect()
            }
            Inbox::Maildir(dir) => {
                let mut out = Vec::new();
                for sub in ["new", "cur"] {
                    let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
                    for e in entries.flatten() {
                        out.push(parse_mail(&std::fs::read_to_string(e.path()).unwrap()));
                    }
                }
                out
            }
        }
    }

    /// The one message to `to` whose subject is `subject` and that `seen` did not hold, within 10 s.
    async fn next(&self, to: &str, subject: &str, seen: &mut Vec<String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh: Vec<Mail> = self
                .all()
                .await
                .into_iter()
                .filter(|m| m.to.contains(to) && m.subject == subject && !seen.contains(&m.body))
                .collect();
            if let Some(m) = fresh.into_iter().next() {
                seen.push(m.body.clone());
                return m.body;
            }
            assert!(Instant::now() < deadline, "no message {subject:?} to {to} within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Headers and a quoted-printable (or 7-bit) body of one message as the sink stored it.
fn parse_mail(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    let header = |name: &str| {
        head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string)).unwrap_or_default()
    };
    let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("quoted-printable") {
        let joined = body.replace("=\n", "");
        let mut out = Vec::new();
        let bytes = joined.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    } else {
        body.to_string()
    };
    Mail { to: header("To"), subject: header("Subject"), body }
}

/// The `token` of the link in a message, and the link's path.
fn link_of(body: &str) -> (String, String) {
    let url = body.split_whitespace().find(|w| w.starts_with("https://")).expect("a link");
    let (path, token) = url.split_once("?token=").unwrap();
    let path = path.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    (path, token.to_string())
}

fn code_of(body: &str) -> String {
    body.split_whitespace().find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit())).expect("a code").into()
}

/// Every flow once, through `inbox`: verification, code, link, reset; each token once.
async fn every_flow_works_once(node: &TestNode, inbox: &Inbox<'_>) {
    let mut seen = Vec::new();
    let r = post(node, "/v1/auth/register", None, json!({"email": "ada@example.com", "password": PASSWORD})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // The address check sent at registration.
    let body = inbox.next("ada@example.com", "Confirm your email address", &mut seen).await;
    let (path, token) = link_of(&body);
    assert_eq!(path, "/v1/auth/email/verify");
    let page = node.client().get(format!("{}{path}?token={token}", node.url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page.text().await.unwrap().contains("<button"), "a page with a button, which spends nothing");
    assert_eq!(post(node, &path, None, json!({"token": token})).await.status, StatusCode::NO_CONTENT);
    let again = post(node, &path, None, json!({"token": token})).await;
    assert_eq!(
        (again.status, again.body["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("urn:gatehouse:problem:invalid_link"))
    );

    // A sign-in code: a wrong one is refused, the right one signs in once.
    let asked = post(node, "/v1/auth/email-otp/request", None, json!({"email": "Ada@Example.com"})).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let code = code_of(&inbox.next("ada@example.com", "Your sign-in code", &mut seen).await);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = post(node, "/v1/auth/email-otp/verify", None, json!({"email": "ada@example.com", "code": wrong})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post(node, "/v1/auth/email-otp/verify", None, json!({"email": "ada@example.com", "code": code})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["method"], "email_code");
    let by_code = r.cookie.expect("a session cookie");
    assert_eq!(session_status(node, &by_code).await, StatusCode::OK);
    let r = post(node, "/v1/auth/email-otp/verify", None, json!({"email": "ada@example.com", "code": code})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a code works once");

    // A sign-in link, once.
    assert_eq!(
        post(node, "/v1/auth/magic-link/request", None, json!({"email": "ada@example.com"})).await.status,
        StatusCode::ACCEPTED
    );
    let (path, token) = link_of(&inbox.next("ada@example.com", "Your sign-in link", &mut seen).await);
    assert_eq!(path, "/v1/auth/magic-link/consume");
    let r = post(node, &path, None, json!({"token": token})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let by_link = r.cookie.expect("a session cookie");
    assert_eq!(session_status(node, &by_link).await, StatusCode::OK);
    assert_eq!(
        post(node, &path, None, json!({"token": token})).await.status,
        StatusCode::BAD_REQUEST,
        "a link works once"
    );

    // A password reset: the new password works, the old one and every session end.
    assert_eq!(
        post(node, "/v1/auth/password/forgot", None, json!({"email": "ada@example.com"})).await.status,
        StatusCode::ACCEPTED
    );
    let (path, token) = link_of(&inbox.next("ada@example.com", "Reset your password", &mut seen).await);
    assert_eq!(path, "/v1/auth/password/reset");
    let weak = post(node, &path, None, json!({"token": token, "password": "gatehousegatehouse"})).await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST, "the password rules hold here too: {}", weak.body);
    let new_password = "a different long passphrase entirely";
    let r = post(node, &path, None, json!({"token": token, "password": new_password})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = post(node, &path, None, json!({"token": token, "password": "yet another long passphrase here"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a reset link works once");
    assert_eq!(session_status(node, &by_link).await, StatusCode::UNAUTHORIZED, "a reset ends every session");
    assert_eq!(session_status(node, &by_code).await, StatusCode::UNAUTHORIZED);
    let old = post(node, "/v1/auth/login", None, json!({"email": "ada@example.com", "password": PASSWORD})).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = post(node, "/v1/auth/login", None, json!({"email": "ada@example.com", "password": new_password})).await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_links_and_resets_work_once_through_the_dev_mailbox_and_tell_no_one_who_exists() {
    let (_tmp, dir) = temp_data_dir();
    let args = ["--set", "rate_limits.email_requests_per_source_per_min=1000"];
    let node = TestNode::start_with(&dir, &args, &[]).unwrap();
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let inbox = Inbox::Mailbox { node: &node, admin: admin.clone() };
    every_flow_works_once(&node, &inbox).await;

    // Known and unknown addresses get the same answer, and only the known one gets mail.
    for path in ["/v1/auth/password/forgot", "/v1/auth/email-otp/request", "/v1/auth/magic-link/request"] {
        let known = post(&node, path, None, json!({"email": "ada@example.com"})).await;
        let unknown = post(&node, path, None, json!({"email": "nobody@example.com"})).await;
        assert_eq!((known.status, &known.body), (unknown.status, &unknown.body), "{path}");
        let names = |h: &reqwest::header::HeaderMap| {
            let mut v: Vec<String> = h.keys().map(|k| k.to_string()).filter(|k| k != "date").collect();
            v.sort();
            v
        };
        assert_eq!(names(&known.headers), names(&unknown.headers), "{path}: the same headers");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = inbox.all().await;
    assert!(all.iter().all(|m| m.to != "nobody@example.com"), "no message for an address that names nobody");

    // Bad input: a clear 4xx, and nothing written.
    let before = all.len();
    let r = post(&node, "/v1/auth/magic-link/request", None, json!({"email": "not-an-email"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(&node, "/v1/auth/magic-link/consume", None, json!({"token": "made-up"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(&node, "/v1/auth/email-otp/verify", None, json!({"email": "ada@example.com", "code": "12"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post(&node, "/v1/auth/password/forgot", None, json!({"email": "ada@example.com", "extra": 1})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown fields are refused");
    let form = node
        .client()
        .post(format!("{}/v1/auth/password/forgot", node.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=ada%40example.com")
        .send()
        .await
        .unwrap();
    assert!(form.status().is_client_error(), "a form body: {}", form.status());
    let cross = node
        .client()
        .post(format!("{}/v1/auth/magic-link/request", node.url))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox.all().await.len(), before, "no refused request wrote a message");

    // Email sign-ins are counted by method and result.
    let metrics = reqwest::get(format!("{}/metrics", node.management_url)).await.unwrap().text().await.unwrap();
    for line in [
        r#"gatehouse_logins_total{tenant="default",method="email_code",result="ok"} 1"#,
        r#"gatehouse_logins_total{tenant="default",method="email_code",result="invalid_credentials"}"#,
        r#"gatehouse_logins_total{tenant="default",method="email_link",result="ok"} 1"#,
        r#"gatehouse_logins_total{tenant="default",method="email_link",result="invalid_credentials"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn email_requests_are_rate_limited_per_source() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start_with(&dir, &["--set", "rate_limits.email_requests_per_source_per_min=2"], &[]).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = post(&node, "/v1/auth/email-otp/request", None, json!({"email": "x@example.com"})).await;
        statuses.push((r.status, r.headers.contains_key("retry-after")));
    }
    assert_eq!(statuses[2], (StatusCode::TOO_MANY_REQUESTS, true), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_links_and_resets_work_once_through_smtp() {
    let tools = crate::real_clients::tools_dir();
    let tmp = tempfile::tempdir().unwrap();
    // aiosmtpd makes the Maildir (with its tmp/, new/ and cur/) only where nothing exists yet.
    let maildir = tmp.path().join("maildir");
    let port = crate::support::free_port();
    let sink = std::process::Command::new(tools.join("venv/bin/python"))
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python -m aiosmtpd (tests/clients/setup.sh installs it)");
    let _sink = KillOnDrop(sink);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_tmp, dir) = temp_data_dir();
    let url = format!("email.smtp_url=\"smtp://127.0.0.1:{port}\"");
    let args = ["--set", &url, "--set", "rate_limits.email_requests_per_source_per_min=1000"];
    let node = TestNode::start_with(&dir, &args, &[]).unwrap();
    every_flow_works_once(&node, &Inbox::Maildir(maildir.clone())).await;
    // Delivered messages leave the outbox.
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = call(&node, Method::GET, "/admin/v1/tenants/default/mailbox", Some(&admin), None).await;
        if r.body["items"].as_array().map(Vec::len) == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "messages still in the outbox: {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process that ends with the test, even one that panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn email_requests_for_known_and_unknown_addresses_take_the_same_time() {
    let (_tmp, dir) = temp_data_dir();
    let args = ["--set", "rate_limits.email_requests_per_source_per_min=100000"];
    let node = TestNode::start_with(&dir, &args, &[]).unwrap();
    let r = post(&node, "/v1/auth/register", None, json!({"email": "known@example.com", "password": PASSWORD})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    for path in ["/v1/auth/password/forgot", "/v1/auth/email-otp/request", "/v1/auth/magic-link/request"] {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        // Alternating, so drift on the machine falls on both alike.
        for _ in 0..50 {
            for (email, times) in [("known@example.com", &mut known), ("unknown@example.com", &mut unknown)] {
                let started = Instant::now();
                let r = post(&node, path, None, json!({"email": email})).await;
                times.push(started.elapsed());
                assert_eq!(r.status, StatusCode::ACCEPTED, "{path}: {}", r.body);
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64()
        };
        let (k, u) = (median(&mut known), median(&mut unknown));
        let ratio = k.max(u) / k.min(u);
        assert!(ratio < 1.2, "{path}: median {k:.5} s for a known address, {u:.5} s for an unknown one ({ratio:.2})");
    }
}
