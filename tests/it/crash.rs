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
