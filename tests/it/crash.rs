//! `kill -9` during a stream of writes loses no acknowledged write (R3/R4, single node).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse::control::{self, ControlRequest};
use serde_json::Value;

use crate::support::{node::temp_data_dir, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_tenant_creates_survive_kill_9() {
    let (_tmp, dir) = temp_data_dir();
    let node = tokio::task::block_in_place(|| TestNode::start(&dir));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (dir, acked) = (dir.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..500 {
                let id = format!("crash-{w}-{i}");
                let req = ControlRequest::TenantCreate { id: id.clone(), display_name: None };
                match control::call(&dir, &req).await {
                    Ok(answer) if answer.ok => acked.lock().unwrap().push(id),
                    _ => return,
                }
            }
        }));
    }
    // Kill in the middle of the stream, once some creates were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 12 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| node.kill9());
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 12, "the stream should have been acknowledged before the kill: {}", acked.len());

    let node = tokio::task::block_in_place(|| TestNode::start(&dir));
    let list = node.cli(&["tenant", "list"]);
    assert!(list.status.success());
    let tenants: Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<String> = tenants.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged creates lost after kill -9: {lost:?}");
    let verify = node.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "audit verify after crash: {}", String::from_utf8_lossy(&verify.stderr));
    assert!(node.stop().success());
    let offline = crate::support::cli(&dir, &["audit", "verify"]);
    assert!(offline.status.success(), "offline audit verify: {}", String::from_utf8_lossy(&offline.stderr));

    // Replay after the crash applied nothing twice: one successful create entry per tenant.
    let db = gatehouse_storage::store::open_read_only(&dir.join("gatehouse.redb")).unwrap();
    let entries = gatehouse_storage::Reader::begin(&db).unwrap().audit_entries(1, usize::MAX).unwrap();
    for id in &acked {
        let target = format!("tenant:{id}");
        let n =
            entries.iter().filter(|e| e.action == "tenant.create" && e.target == target && e.outcome == "ok").count();
        assert_eq!(n, 1, "{id} has {n} successful create entries");
    }
}

/// `kill -9` during a stream of admin creates and token requests: every acknowledged create
/// exists after restart, every token that was returned has its `token.issue` audit entry, and
/// the chain verifies (A10, R4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_admin_creates_and_returned_tokens_survive_kill_9() {
    use crate::support::admin::{create_client, into_answer, jwt_parts, platform_token};

    let (_tmp, dir) = temp_data_dir();
    let node = tokio::task::block_in_place(|| TestNode::start(&dir));
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let (id, secret) = create_client(&node, &admin, "default", &["https://api.test"], &[]).await;
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let jtis = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, url, admin, id, secret) =
            (node.client(), node.url.clone(), admin.clone(), id.clone(), secret.clone());
        let (created, jtis) = (created.clone(), jtis.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..2000 {
                if w % 2 == 0 {
                    let body = serde_json::json!({"username": format!("user-{w}-{i}")});
                    let sent = client
                        .post(format!("{url}/admin/v1/tenants/default/users"))
                        .bearer_auth(&admin)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(resp) = sent else { return };
                    let a = into_answer(resp).await;
                    if a.status != 201 {
                        return;
                    }
                    created.lock().unwrap().push(a.body["id"].as_str().unwrap().to_string());
                } else {
                    let sent = client
                        .post(format!("{url}/oauth2/token"))
                        .basic_auth(&id, Some(&secret))
                        .form(&[("grant_type", "client_credentials")])
                        .send()
                        .await;
                    let Ok(resp) = sent else { return };
                    let a = into_answer(resp).await;
                    if a.status != 200 {
                        return;
                    }
                    let token = a.body["access_token"].as_str().unwrap();
                    jtis.lock().unwrap().push(jwt_parts(token).1["jti"].as_str().unwrap().to_string());
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (created.lock().unwrap().len() < 10 || jtis.lock().unwrap().len() < 10) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| node.kill9());
    for w in workers {
        let _ = w.await;
    }
    let (created, jtis) = (created.lock().unwrap().clone(), jtis.lock().unwrap().clone());
    assert!(
        created.len() >= 10 && jtis.len() >= 10,
        "acknowledged before the kill: {} users, {} tokens",
        created.len(),
        jtis.len()
    );

    let node = tokio::task::block_in_place(|| TestNode::start(&dir));
    let verify = node.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "audit verify after crash: {}", String::from_utf8_lossy(&verify.stderr));
    assert!(node.stop().success());
    let db = gatehouse_storage::store::open_read_only(&dir.join("gatehouse.redb")).unwrap();
    let reader = gatehouse_storage::Reader::begin(&db).unwrap();
    let lost: Vec<&String> = created.iter().filter(|u| reader.user("default", u).unwrap().is_none()).collect();
    assert!(lost.is_empty(), "acknowledged user creates lost after kill -9: {lost:?}");
    let entries = reader.audit_entries(1, usize::MAX).unwrap();
    for jti in &jtis {
        let prefix = format!("token:{jti} ");
        let n = entries
            .iter()
            .filter(|e| e.action == "token.issue" && e.target.starts_with(&prefix) && e.outcome == "ok")
            .count();
        assert_eq!(n, 1, "token {jti} was returned, so it has exactly one audit entry");
    }
}

/// `kill -9` under a stream of creates sent with `Idempotency-Key`, each retried after the
/// restart: exactly one resource per key, and a retry of an acknowledged create answers the
/// same resource (the answer is applied with the action, never after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_idempotent_creates_make_one_resource_per_key_across_kill_9() {
    use crate::support::admin::{call, into_answer, platform_token};

    let (_tmp, dir) = temp_data_dir();
    let node = tokio::task::block_in_place(|| TestNode::start(&dir));
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    let body = |key: &str| {
        serde_json::json!({"name": key, "client_type": "confidential", "grant_types": ["client_credentials"],
                           "audiences": ["https://api.test"]})
    };
    // key -> the client id its acknowledged answer named (None: sent, answer unknown).
    let sent = Arc::new(Mutex::new(std::collections::BTreeMap::<String, Option<String>>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, url, admin, sent) = (node.client(), node.url.clone(), admin.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..300 {
                let key = format!("idem-{w}-{i}");
                sent.lock().unwrap().insert(key.clone(), None);
                let resp = client
                    .post(format!("{url}/admin/v1/tenants/default/clients"))
                    .bearer_auth(&admin)
                    .header("Idempotency-Key", &key)
                    .json(&body(&key))
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                let a = into_answer(resp).await;
                if a.status != 201 {
                    return;
                }
                let id = a.body["client_id"].as_str().unwrap().to_string();
                sent.lock().unwrap().insert(key, Some(id));
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.lock().unwrap().values().filter(|v| v.is_some()).count() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::block_in_place(|| node.kill9());
    for w in workers {
        let _ = w.await;
    }
    let sent = sent.lock().unwrap().clone();
    assert!(sent.values().filter(|v| v.is_some()).count() >= 20);

    let node = tokio::task::block_in_place(|| TestNode::start(&dir));
    // The restarted node listens on another port, so its issuer differs: a new token for the
    // same caller (the key's scope is the caller's tenant and subject, not the token).
    let admin = tokio::task::block_in_place(|| platform_token(&node));
    for (key, acked) in &sent {
        let resp = node
            .client()
            .post(format!("{}/admin/v1/tenants/default/clients", node.url))
            .bearer_auth(&admin)
            .header("Idempotency-Key", key)
            .json(&body(key))
            .send()
            .await
            .unwrap();
        let a = into_answer(resp).await;
        assert_eq!(a.status, 201, "retry of {key}: {}", a.body);
        if let Some(id) = acked {
            assert_eq!(a.body["client_id"].as_str(), Some(id.as_str()), "{key} answers the resource it made");
            assert_eq!(a.header("idempotent-replayed").as_deref(), Some("true"), "{key} is a replay");
            assert!(a.body.get("client_secret").is_none(), "a replay shows no secret");
        }
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/tenants/default/clients?limit=500&cursor={c}"),
            None => "/admin/v1/tenants/default/clients?limit=500".to_string(),
        };
        let page = call(&node, reqwest::Method::GET, &path, Some(&admin), None).await;
        for c in page.body["items"].as_array().unwrap() {
            names.push(c["name"].as_str().unwrap().to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    for key in sent.keys() {
        let n = names.iter().filter(|n| *n == key).count();
        assert_eq!(n, 1, "{key} made {n} clients");
    }
}
