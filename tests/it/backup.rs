//! Backup while serving and restore into a new one-node cluster (issue: three-node cluster,
//! "Backup and restore"): every write acknowledged before the backup began is there after a
//! restore, the audit chain verifies, and a restore without the right KEK changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::admin::{call, platform_token};
use crate::support::node::{command, temp_data_dir};
use crate::support::TestNode;

fn kek_of(data_dir: &std::path::Path) -> String {
    std::fs::read_to_string(data_dir.join("kek")).expect("the test node's kek file").trim().to_string()
}

fn restore(into: &std::path::Path, file: &std::path::Path, kek: Option<&str>) -> std::process::Output {
    let mut c = command(into);
    c.arg("restore").arg(file);
    if let Some(k) = kek {
        c.env("GATEHOUSE_KEK", k);
    }
    c.output().expect("run gatehouse restore")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_writes_restores_every_acknowledged_write_and_verifies() {
    let (tmp, dir) = temp_data_dir();
    let node = Arc::new(TestNode::start(&dir));
    let admin = tokio::task::block_in_place(|| platform_token(&node));

    // Several writers create organizations without pause; each remembers what was
    // acknowledged, and when.
    let acked: Arc<Mutex<Vec<(std::time::Instant, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (node, admin, acked, stop) = (node.clone(), admin.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("org-{w}-{i}");
                let path = "/admin/v1/tenants/default/organizations";
                let a = call(&node, Method::POST, path, Some(&admin), Some(&json!({"name": name}))).await;
                if a.status == StatusCode::CREATED {
                    let id = a.body["id"].as_str().unwrap().to_string();
                    acked.lock().unwrap().push((std::time::Instant::now(), id));
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let file = tmp.path().join("gatehouse.backup");
    let began = std::time::Instant::now();
    let out = tokio::task::block_in_place(|| node.cli(&["backup", file.to_str().unwrap()]));
    assert!(out.status.success(), "backup: {}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let before: Vec<String> =
        acked.lock().unwrap().iter().filter(|(at, _)| *at < began).map(|(_, id)| id.clone()).collect();
    assert!(before.len() > 10, "the writers got going before the backup: {}", before.len());
    let meta = std::fs::metadata(&file).expect("the backup file");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
    assert!(!tmp.path().join("gatehouse.backup.part").exists(), "no partial file is left");
    let again = tokio::task::block_in_place(|| node.cli(&["backup", file.to_str().unwrap()]));
    assert!(!again.status.success(), "a backup never overwrites a file");
    let kek = kek_of(&dir);
    let node = Arc::try_unwrap(node).ok().expect("the writers are done");
    assert!(node.stop().success());
    // A stopped data dir backs up too (read-only, with its own KEK).
    let stopped = tmp.path().join("stopped.backup");
    let out = command(&dir).arg("backup").arg(&stopped).output().unwrap();
    assert!(out.status.success(), "backup of a stopped dir: {}", String::from_utf8_lossy(&out.stderr));
    let from_stopped = tmp.path().join("from-stopped");
    assert!(restore(&from_stopped, &stopped, Some(&kek)).status.success());

    // Without the KEK, or with another one, or into a used dir: refused, and nothing is made.
    let target = tmp.path().join("restored");
    let out = restore(&target, &file, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEHOUSE_KEK"), "{}", String::from_utf8_lossy(&out.stderr));
    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let out = restore(&target, &file, Some(other));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open"), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(&target).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "a refused restore leaves nothing: {left:?}");
    let out = restore(&dir, &file, Some(&kek));
    assert!(!out.status.success(), "a restore never writes into an initialised data dir");

    let out = restore(&target, &file, Some(&kek));
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    let verify = {
        let mut c = command(&target);
        c.args(["audit", "verify"]).env("GATEHOUSE_KEK", &kek);
        c.output().unwrap()
    };
    assert!(verify.status.success(), "audit verify: {}", String::from_utf8_lossy(&verify.stderr));

    let restored = TestNode::start_with(&target, &[], &[("GATEHOUSE_KEK", &kek)]).expect("the restored node serves");
    let admin = tokio::task::block_in_place(|| platform_token(&restored));
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/admin/v1/tenants/default/organizations?limit=500".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = call(&restored, Method::GET, &path, Some(&admin), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            seen.insert(item["id"].as_str().unwrap().to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let missing: Vec<&String> = before.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged writes missing after restore: {missing:?}", missing.len());
    // It is a cluster of its own: it takes writes.
    let a = call(
        &restored,
        Method::POST,
        "/admin/v1/tenants/default/organizations",
        Some(&admin),
        Some(&json!({"name": "after"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}
