//! What anonymous and hostile traffic costs the node, measured on the release binary with
//! production defaults: memory kept for made-up tokens, disk written for failed logins, and
//! the rate limits that answer a flood with 429 while other clients keep working.

use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::admin::{call, create_client, jwt_parts, platform_token};
use crate::support::{node::temp_data_dir, TestNode};

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// An HTTP/1.1 client trusting the node's CA (so an oversized head gets a plain 431).
fn http1_client(node: &TestNode) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(&node.ca_pem).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .http1_only()
        .pool_max_idle_per_host(32)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A client connecting from another loopback address, so the node sees another source.
fn client_from(node: &TestNode, ip: [u8; 4]) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(&node.ca_pem).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .local_address(std::net::IpAddr::from(ip))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_with_made_up_issuers_cost_no_lasting_memory() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start_release(&dir, &[]);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let (header, claims) = jwt_parts(&admin);
    let signature = admin.rsplit('.').next().unwrap().to_string();
    let client = http1_client(&node);
    // Warm up the paths the flood takes, so what remains is what the flood kept.
    for _ in 0..50 {
        let a = call(&node, reqwest::Method::GET, "/admin/v1/tenants", Some(&admin), None).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let before = node.rss_kib();
    // 1,000 tokens, 16 at a time (one client's worth of connections): half the issuers are
    // 60 KB strings under our URL, half look like tenant ids that do not exist. Neither may
    // leave anything behind.
    let tokens: Vec<String> = (0..1000u32)
        .map(|n| {
            let iss = if n % 2 == 0 {
                format!("{}/t/{n:08}{}", node.url, "x".repeat(60 * 1024))
            } else {
                format!("{}/t/no-such-tenant-{n:08}-{}", node.url, "q".repeat(30))
            };
            let mut c = claims.clone();
            c["iss"] = json!(iss);
            format!("{}.{}.{signature}", b64(&header), b64(&c))
        })
        .collect();
    let url = format!("{}/admin/v1/tenants", node.url);
    let statuses: Vec<Option<StatusCode>> = futures_util::stream::iter(tokens.into_iter().enumerate())
        .map(|(n, token)| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = json!({"id": format!("t{n:08}")});
                client.post(url).bearer_auth(token).json(&body).send().await.map(|r| r.status()).ok()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut refused = 0;
    for status in statuses {
        match status {
            // 401, then 429 once the source has spent its failure budget, or 431 for a head
            // over the size bound.
            Some(StatusCode::UNAUTHORIZED)
            | Some(StatusCode::TOO_MANY_REQUESTS)
            | Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) => refused += 1,
            Some(other) => panic!("a made-up token got {other}"),
            // A 60 KB head may be cut before the client finishes sending it.
            None => refused += 1,
        }
    }
    assert_eq!(refused, 1000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = node.rss_kib();
    assert!(after < before + 5 * 1024, "1,000 made-up issuers grew RSS from {before} to {after} KiB");
    // The flooding source is held for its failures by now; ask from another one.
    let other = client_from(&node, [127, 0, 0, 3]);
    let tenants = other.get(format!("{}/admin/v1/tenants", node.url)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(tenants.status(), StatusCode::OK);
    let tenants: serde_json::Value = tenants.json().await.unwrap();
    assert_eq!(tenants["items"].as_array().map(Vec::len), Some(2), "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_failed_logins_gets_429s_writes_almost_nothing_and_spares_other_clients() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start_release(&dir, &[]);
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let (id, secret) = create_client(&node, &admin, "default", &["https://api.example.test"], &[]).await;
    // The flood guesses the secret of another client (which its per-client budget then holds).
    let (victim, _) = create_client(&node, &admin, "default", &["https://api.example.test"], &[]).await;
    let token_url = format!("{}/oauth2/token", node.url);
    let form = [("grant_type", "client_credentials")];
    let attacker = http1_client(&node);
    // The valid client connects from another loopback address: another source.
    let healthy = client_from(&node, [127, 0, 0, 2]);
    let ok = healthy.post(&token_url).basic_auth(&id, Some(&secret)).form(&form).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "the healthy client gets a token before the flood");
    // Let the first window's audit land before measuring.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = node.db_bytes();

    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut healthy_tokens = 0;
    for round in 0..20 {
        let answers: Vec<(u16, Option<String>)> = futures_util::stream::iter(0..1000)
            .map(|i| {
                let (client, url, id) = (attacker.clone(), token_url.clone(), victim.clone());
                async move {
                    let wrong = format!("wrong-secret-{i}");
                    let r = client.post(url).basic_auth(&id, Some(&wrong)).form(&form).send().await.unwrap();
                    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                    (r.status().as_u16(), retry)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (status, retry) in answers {
            *statuses.entry(status).or_default() += 1;
            if status == 429 {
                let secs: u64 = retry.expect("429 carries Retry-After").parse().expect("seconds");
                assert!((1..=60).contains(&secs), "Retry-After {secs}");
            }
        }
        // Meanwhile the healthy client from another source keeps getting tokens.
        if round % 4 == 0 {
            let r = healthy.post(&token_url).basic_auth(&id, Some(&secret)).form(&form).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "round {round}: the healthy client is spared");
            healthy_tokens += 1;
        }
    }
    let total: u32 = statuses.values().sum();
    assert_eq!(total, 20_000);
    assert!(statuses.get(&429).copied().unwrap_or(0) > 19_000, "the flood is answered 429: {statuses:?}");
    assert!(statuses.keys().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    assert_eq!(healthy_tokens, 5);
    // The coalesced failures land within one audit window.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = node.db_bytes();
    assert!(
        after < before + 2 * 1024 * 1024,
        "20,000 failed authentications grew the database from {before} to {after} bytes"
    );
    // They are audited, coalesced, with a count.
    let audit = call(
        &node,
        reqwest::Method::GET,
        "/admin/v1/tenants/default/audit?limit=500&action=authentication.failed",
        Some(&admin),
        None,
    )
    .await;
    let failures: Vec<&serde_json::Value> =
        audit.body["items"].as_array().unwrap().iter().filter(|e| e["action"] == "authentication.failed").collect();
    assert!(!failures.is_empty(), "failures are audited: {}", audit.body);
    assert!(failures.len() < 50, "and coalesced: {} entries", failures.len());
    assert!(failures.iter().any(|e| e["target"].as_str().unwrap_or_default().contains("count=")), "{failures:?}");
}
