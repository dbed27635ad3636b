//! Edges of the HTTP surface: problem documents, limits, plain HTTP on the TLS port, metrics.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

use crate::support::{node::temp_data_dir, TestNode};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn assert_problem(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("application/problem+json"), "content type {ct}");
    let body: Value = resp.json().await.expect("problem JSON");
    assert_eq!(body["type"], format!("urn:gatehouse:problem:{code}"));
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn the_http_surface_answers_errors_in_its_formats() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let c = node.client();
    let url = &node.url;

    // Unknown tenant and unknown path: 404 problem documents.
    assert_problem(
        c.get(format!("{url}/t/nobody/.well-known/openid-configuration")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(c.get(format!("{url}/t/nobody/.well-known/jwks.json")).send().await.unwrap(), 404, "not_found")
        .await;
    assert_problem(c.get(format!("{url}/no/such/path")).send().await.unwrap(), 404, "not_found").await;
    // An undeclared method: 405 problem document.
    let resp = c.delete(format!("{url}/health")).send().await.unwrap();
    assert_eq!(resp.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET"), "405 names the allowed methods");
    assert_problem(resp, 405, "method_not_allowed").await;
    let resp = c.request(reqwest::Method::TRACE, format!("{url}/admin/v1/tenants/acme/clients")).send().await.unwrap();
    assert_eq!(resp.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"));
    assert_problem(resp, 405, "method_not_allowed").await;

    // Over 64 KiB: 413 before parsing (the same body under the limit would be a 400).
    let big = "a".repeat(64 * 1024 + 1);
    let resp = c
        .post(format!("{url}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 413, "payload_too_large").await;
    // The same without a Content-Length (chunked): counted while read, still 413.
    let chunks = (0..17).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 4096]));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = c
        .post(format!("{url}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 413, "payload_too_large").await;
    let small = "a".repeat(1000);
    let resp = c
        .post(format!("{url}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(small)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // OAuth endpoints: RFC 6749 errors, no-store.
    let resp = c.post(format!("{url}/oauth2/token")).form(&[("grant_type", "password")]).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
    let resp =
        c.post(format!("{url}/oauth2/token")).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    assert_eq!(resp.status(), 401, "client_credentials without client authentication");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    let body: Value =
        c.post(format!("{url}/oauth2/token")).form(&[("scope", "x")]).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    let resp = c
        .post(format!("{url}/oauth2/token"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "a wrong content type is an OAuth error too");
    let resp = c.get(format!("{url}/oauth2/authorize?response_type=code&client_id=x")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("invalid_request"), "an unknown client gets an error page");

    // The default tenant under /t/default is a permanent redirect to the root.
    let resp = c.get(format!("{url}/t/default/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], format!("{url}/.well-known/openid-configuration"));

    // The served document is the committed one.
    let served = c.get(format!("{url}/openapi.json")).send().await.unwrap().text().await.unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/gatehouse.json")).unwrap();
    assert!(served.trim() == committed.trim(), "the served document differs from openapi/gatehouse.json");
    assert_eq!(c.get(format!("{url}/docs")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_without_harming_the_server() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let addr = node.addr();
    let junk = std::thread::spawn(move || {
        let mut answers = Vec::new();
        for _ in 0..20 {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            answers.push(String::from_utf8_lossy(&buf).to_string());
        }
        answers
    });
    // Meanwhile, and afterwards, TLS clients are served.
    let c = node.client();
    assert_eq!(c.get(format!("{}/health", node.url)).send().await.unwrap().status(), 200);
    let answers = junk.join().unwrap();
    assert!(answers.iter().all(|a| !a.contains("200 OK")), "plain HTTP must not be served");
    for _ in 0..5 {
        assert_eq!(c.get(format!("{}/health", node.url)).send().await.unwrap().status(), 200);
    }
    // A silent client that never starts the handshake does not block others.
    let _silent = std::net::TcpStream::connect(node.addr()).unwrap();
    assert_eq!(c.get(format!("{}/ready", node.url)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn request_counters_and_raft_gauges_move() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let c = node.client();
    // Metrics are served on the management listener (plain HTTP), never on the public port.
    let plain = reqwest::Client::new();
    let scrape =
        || async { plain.get(format!("{}/metrics", node.management_url)).send().await.unwrap().text().await.unwrap() };
    assert!(node.management_url.starts_with("http://127.0.0.1:"), "{}", node.banner);
    assert_eq!(c.get(format!("{}/metrics", node.url)).send().await.unwrap().status(), 404);
    for probe in ["health", "ready"] {
        let r = plain.get(format!("{}/{probe}", node.management_url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "management {probe}");
        assert_eq!(c.get(format!("{}/{probe}", node.url)).send().await.unwrap().status(), 200, "public {probe}");
    }
    c.get(format!("{}/health", node.url)).send().await.unwrap();
    let before = scrape().await;
    for name in [
        "gatehouse_http_request_duration_seconds",
        "gatehouse_raft_term",
        "gatehouse_raft_is_leader",
        "gatehouse_raft_commit_index",
        "gatehouse_raft_applied_index",
        "gatehouse_db_size_bytes",
        "gatehouse_audit_entries_total",
    ] {
        assert!(before.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(metric(&before, "gatehouse_raft_is_leader"), 1.0);
    assert!(metric(&before, "gatehouse_raft_term") >= 1.0);
    for _ in 0..3 {
        c.get(format!("{}/.well-known/jwks.json", node.url)).send().await.unwrap();
    }
    assert!(node.cli(&["tenant", "create", "metered"]).status.success());
    // Raft publishes its metrics just after acknowledging a write: allow it a moment.
    let applied_before = metric(&before, "gatehouse_raft_applied_index");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = scrape().await;
    while metric(&after, "gatehouse_raft_applied_index") <= applied_before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = scrape().await;
    }
    // The three JWKS requests (scrapes on the management port are not public requests).
    assert!(metric(&after, "gatehouse_http_requests_total") >= metric(&before, "gatehouse_http_requests_total") + 3.0);
    assert!(after.contains(r#"route="{issuer}/.well-known/jwks.json",method="GET",status="200""#));
    assert!(metric(&after, "gatehouse_raft_applied_index") > metric(&before, "gatehouse_raft_applied_index"));
    assert!(metric(&after, "gatehouse_raft_commit_index") > metric(&before, "gatehouse_raft_commit_index"));
    assert!(metric(&after, "gatehouse_raft_commit_index") >= metric(&after, "gatehouse_raft_applied_index"));
    assert!(metric(&after, "gatehouse_audit_entries_total") > metric(&before, "gatehouse_audit_entries_total"));
}

/// Reads until the server closes the connection or `within` passes: what arrived, and whether
/// the connection was closed by then.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn slow_silent_and_oversized_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let (_tmp, dir) = temp_data_dir();
    let args = [
        "--set",
        "http.header_read_timeout_secs=2",
        "--set",
        "http.body_read_timeout_secs=2",
        "--set",
        "http.idle_timeout_secs=4",
    ];
    let node = TestNode::start_with(&dir, &args, &[]).expect("node");
    // Generous margins: each limit is 2-4 s, every check allows 10.
    let within = Duration::from_secs(10);

    // A partial head followed by silence.
    let mut s = crate::support::node::raw_tls(&node).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let (_, closed) = read_until_closed(&mut s, within).await;
    assert!(closed, "a partial head followed by silence is closed");

    // A head trickled a byte at a time: the head deadline counts from its start.
    let mut s = crate::support::node::raw_tls(&node).await;
    s.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").await.unwrap();
    let started = std::time::Instant::now();
    let mut cut = false;
    while started.elapsed() < within {
        if s.write_all(b"a").await.is_err() || s.flush().await.is_err() {
            cut = true;
            break;
        }
        let (_, closed) = read_until_closed(&mut s, Duration::from_millis(500)).await;
        if closed {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickled head is cut off at the head deadline");

    // A body shorter than announced: 408 at the body deadline, then closed.
    let mut s = crate::support::node::raw_tls(&node).await;
    s.write_all(
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
    )
    .await
    .unwrap();
    let (got, closed) = read_until_closed(&mut s, within).await;
    assert!(status_line(&got).starts_with("HTTP/1.1 408"), "short body: {:?}", status_line(&got));
    assert!(closed, "the connection of a short body is closed");

    // A connection that says nothing after the handshake.
    let mut s = crate::support::node::raw_tls(&node).await;
    let (_, closed) = read_until_closed(&mut s, within).await;
    assert!(closed, "a silent connection is closed");

    // Heads over the size or count bounds: 431.
    let mut s = crate::support::node::raw_tls(&node).await;
    let big = format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    let (got, _) = read_until_closed(&mut s, within).await;
    assert!(status_line(&got).starts_with("HTTP/1.1 431"), "a 20 KiB header: {:?}", status_line(&got));
    let mut s = crate::support::node::raw_tls(&node).await;
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let _ = s.write_all(format!("GET /health HTTP/1.1\r\nHost: localhost\r\n{many}\r\n").as_bytes()).await;
    let (got, _) = read_until_closed(&mut s, within).await;
    assert!(status_line(&got).starts_with("HTTP/1.1 431"), "100 headers: {:?}", status_line(&got));
    // The same over HTTP/2 (reqwest negotiates h2): never served.
    let resp = node.client().get(format!("{}/health", node.url)).header("x-big", "a".repeat(420 * 1024)).send().await;
    if let Ok(r) = resp {
        assert_eq!(r.status(), 431, "an HTTP/2 header list over the bound");
    }

    // Still serving.
    let ok = node.client().get(format!("{}/health", node.url)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_flood_of_unterminated_heads_leaves_no_memory_behind() {
    use tokio::io::AsyncWriteExt;
    let (_tmp, dir) = temp_data_dir();
    let mut node = TestNode::start_release(&dir, &[]);
    let client = node.client();
    for _ in 0..20 {
        assert_eq!(client.get(format!("{}/health", node.url)).send().await.unwrap().status(), 200);
    }
    let before = node.rss_kib();
    let chunk = vec![b'a'; 64 * 1024];
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut s = crate::support::node::raw_tls(&node).await;
        let chunk = chunk.clone();
        tasks.push(tokio::spawn(async move {
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Flood: ").await;
            for _ in 0..7 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = read_until_closed(&mut s, Duration::from_secs(15)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = node.rss_kib();
    assert!(node.is_running());
    assert!(after < before + 8 * 1024, "100 unterminated 400 KB heads grew RSS from {before} to {after} KiB");
    assert_eq!(client.get(format!("{}/health", node.url)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let c = node.client();
    let url = &node.url;
    let h = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string).unwrap_or_default()
    };
    let big = "a".repeat(64 * 1024 + 1);
    let answers = vec![
        ("413 on the token endpoint", c.post(format!("{url}/oauth2/token")).body(big).send().await.unwrap()),
        ("400 on the token endpoint", c.post(format!("{url}/oauth2/token")).form(&[("a", "b")]).send().await.unwrap()),
        ("401 on the admin API", c.get(format!("{url}/admin/v1/tenants")).send().await.unwrap()),
        ("404", c.get(format!("{url}/no/such/path")).send().await.unwrap()),
        ("health", c.get(format!("{url}/health")).send().await.unwrap()),
    ];
    let mut ids = std::collections::HashSet::new();
    for (what, r) in &answers {
        assert_eq!(h(r, "x-content-type-options"), "nosniff", "{what}");
        assert_eq!(h(r, "referrer-policy"), "no-referrer", "{what}");
        assert_eq!(h(r, "cache-control"), "no-store", "{what}");
        assert!(h(r, "content-security-policy").contains("frame-ancestors 'none'"), "{what}");
        assert!(h(r, "content-type").contains("json") || r.status() == 200, "{what}");
        assert!(h(r, "strict-transport-security").is_empty(), "{what}: no HSTS on a loopback public URL");
        assert!(ids.insert(h(r, "x-request-id")), "{what}: a request id of its own");
    }
    // Public documents stay cacheable but are never sniffed.
    let jwks = c.get(format!("{url}/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(h(&jwks, "x-content-type-options"), "nosniff");
    assert_ne!(h(&jwks, "cache-control"), "no-store");
    // HTML: a CSP that forbids framing and plugins.
    let docs = c.get(format!("{url}/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let csp = h(&docs, "content-security-policy");
    for directive in ["frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "script-src 'self'"] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    assert_eq!(h(&docs, "x-frame-options"), "DENY");
    assert!(h(&docs, "content-type").contains("charset=utf-8"));
    let page = docs.text().await.unwrap();
    assert!(!page.contains("fonts.googleapis.com"), "the docs page loads nothing from elsewhere");
    let script = c.get(format!("{url}/docs/redoc.standalone.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().len() > 100_000, "the viewer's script is served from here");
    drop(node);

    // HSTS when asked for (the default sends it for public host names).
    let (_tmp2, dir2) = temp_data_dir();
    let node = TestNode::start_with(&dir2, &["--set", "http.hsts=always"], &[]).expect("node");
    let r = node.client().get(format!("{}/health", node.url)).send().await.unwrap();
    assert_eq!(h(&r, "strict-transport-security"), "max-age=31536000; includeSubDomains");
}

#[tokio::test]
async fn connections_over_the_bounds_are_closed_at_once_and_idle_ones_are_cut() {
    let (_tmp, dir) = temp_data_dir();
    let args = ["--set", "http.max_connections_per_source=4", "--set", "http.idle_timeout_secs=2"];
    let node = TestNode::start_with(&dir, &args, &[]).expect("node");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(crate::support::node::raw_tls(&node).await);
    }
    // The fifth from the same source is dropped before its handshake.
    let tcp = tokio::net::TcpStream::connect(node.addr()).await.expect("connect");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut node.ca_pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let fifth = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await;
    assert!(matches!(fifth, Ok(Err(_))), "a fifth connection from one source is refused");
    // Another source is not affected.
    let cert = reqwest::Certificate::from_pem(&node.ca_pem).unwrap();
    let other = reqwest::Client::builder()
        .tls_certs_only([cert])
        .local_address(std::net::IpAddr::from([127, 0, 0, 9]))
        .build()
        .unwrap();
    assert_eq!(other.get(format!("{}/health", node.url)).send().await.unwrap().status(), 200);
    // Idle connections (no request in progress) close after the idle period, freeing slots.
    for mut s in held {
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(closed, "an idle connection is closed");
    }
    assert!(crate::support::node::raw_tls_checked(&node).await.is_ok(), "slots are given back");
}

#[tokio::test]
async fn the_management_listener_keeps_the_same_edge_bounds() {
    use tokio::io::AsyncWriteExt;
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start_with(&dir, &["--set", "http.header_read_timeout_secs=2"], &[]).expect("node");
    let addr = node.management_url.trim_start_matches("http://").to_string();
    let within = Duration::from_secs(10);

    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let (_, closed) = read_until_closed(&mut s, within).await;
    assert!(closed, "a partial head followed by silence is closed on the management port too");

    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let big = format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    let (got, _) = read_until_closed(&mut s, within).await;
    assert!(status_line(&got).starts_with("HTTP/1.1 431"), "a 20 KiB header: {:?}", status_line(&got));

    let metrics = reqwest::get(format!("{}/metrics", node.management_url)).await.unwrap();
    assert_eq!(metrics.status(), 200, "still serving");
}

#[tokio::test]
async fn a_read_or_a_delete_with_a_body_is_refused_before_the_body_is_read() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let admin = crate::support::admin::platform_token(&node);
    let c = node.client();
    let big = "a".repeat(100 * 1024);
    for (method, path) in [
        (reqwest::Method::GET, "/admin/v1/tenants/default/clients"),
        (reqwest::Method::DELETE, "/admin/v1/tenants/default/clients/c-unknown"),
    ] {
        let resp = c
            .request(method.clone(), format!("{}{path}", node.url))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        // 400, which every operation declares; never the 413 a read does not declare.
        let body = assert_problem(resp, 400, "bad_request").await;
        assert!(body["detail"].as_str().unwrap().contains("takes no body"), "{method}: {body}");
    }
    let resp = c.get(format!("{}/.well-known/openid-configuration", node.url)).body("x").send().await.unwrap();
    assert_problem(resp, 400, "bad_request").await;
    // A method the path does not have is still the router's 405, body or not.
    let resp = c.delete(format!("{}/admin/v1/tenants/default/clients", node.url)).bearer_auth(&admin).body("x").send();
    assert_problem(resp.await.unwrap(), 405, "method_not_allowed").await;
    let ok = c.get(format!("{}/.well-known/openid-configuration", node.url)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}
