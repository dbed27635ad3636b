//! The signing-key lifecycle through the CLI: rotate publishes first, signs after the publish
//! delay, and prune keeps every key whose tokens may still be valid (S36); tokens signed before
//! a rotation verify until they expire.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::admin::{create_client, jwt_parts, oauth_post, platform_token, token_basic};
use crate::support::{node::temp_data_dir, TestNode};

fn json(out: std::process::Output) -> Value {
    assert!(out.status.success(), "command failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn states(node: &TestNode) -> Vec<(String, String)> {
    let list = json(node.cli(&["keys", "list"]));
    list.as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap().into(), k["state"].as_str().unwrap().into()))
        .collect()
}

fn kids_in_state(node: &TestNode, state: &str) -> Vec<String> {
    let mut kids: Vec<String> = states(node).into_iter().filter(|(_, s)| s == state).map(|(k, _)| k).collect();
    kids.sort();
    kids
}

fn kids_of(v: &Value) -> Vec<String> {
    let mut kids: Vec<String> = v.as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
    kids.sort();
    kids
}

async fn jwks_kids(node: &TestNode) -> Vec<String> {
    let jwks: Value =
        node.client().get(format!("{}/.well-known/jwks.json", node.url)).send().await.unwrap().json().await.unwrap();
    kids_of(&jwks["keys"])
}

/// Polls until `done` holds, for at most `limit` (state changes with time, not with an event).
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_publishes_before_signing_and_prune_keeps_keys_whose_tokens_may_be_valid() {
    let (_tmp, dir) = temp_data_dir();
    // Wide enough that the checks between two transitions fit on a loaded machine.
    let args = [
        "--set",
        "keys.publish_delay_secs=5",
        "--set",
        "keys.max_token_lifetime_secs=10",
        "--set",
        "oauth.access_token_lifetime_secs=10",
        "--set",
        "oauth.admin_token_lifetime_secs=10",
    ];
    let node = TestNode::start_with(&dir, &args, &[]).unwrap();
    let original = kids_in_state(&node, "active");
    assert_eq!(original.len(), 2, "one ES256 and one RS256 key");
    assert_eq!(jwks_kids(&node).await, original);
    let admin = platform_token(&node);
    let (id, secret) = create_client(&node, &admin, "default", &["https://api.test"], &[]).await;
    let token_kid = |t: &str| jwt_parts(t).0["kid"].as_str().unwrap().to_string();
    let new_token = || async {
        token_basic(&node, "default", &id, &secret, &[]).await.body["access_token"].as_str().unwrap().to_string()
    };
    let active = |t: String| {
        let (node, id, secret) = (&node, id.clone(), secret.clone());
        async move {
            oauth_post(node, "default", "introspect", Some((&id, &secret)), &[("token", &t)]).await.body["active"]
                == true
        }
    };
    let before_rotation = new_token().await;
    assert!(original.contains(&token_kid(&before_rotation)));

    let rotated = json(node.cli(&["keys", "rotate"]));
    let new_kids = kids_of(&rotated);
    assert_eq!(new_kids.len(), 2);
    assert!(rotated.as_array().unwrap().iter().all(|k| k["state"] == "published"), "{rotated}");
    let mut all = [original.clone(), new_kids.clone()].concat();
    all.sort();
    assert_eq!(jwks_kids(&node).await, all, "new keys are in JWKS at once");
    assert_eq!(kids_in_state(&node, "active"), original, "but do not sign yet");
    assert_eq!(json(node.cli(&["keys", "prune", "--dry-run"])), Value::Array(vec![]));
    assert!(original.contains(&token_kid(&new_token().await)), "published keys do not sign");

    wait_until(Duration::from_secs(20), "the new keys are active", || kids_in_state(&node, "active") == new_kids);
    assert!(new_kids.contains(&token_kid(&new_token().await)), "after the publish delay new tokens carry the new kid");
    assert!(active(before_rotation.clone()).await, "a token signed before the rotation still verifies");
    assert_eq!(kids_in_state(&node, "retiring"), original, "superseded keys stay while their tokens may be valid");
    assert_eq!(json(node.cli(&["keys", "prune"])), Value::Array(vec![]), "prune keeps retiring keys");
    assert_eq!(jwks_kids(&node).await, all);

    wait_until(Duration::from_secs(30), "the old keys are retired", || kids_in_state(&node, "retired") == original);
    assert!(!active(before_rotation.clone()).await, "by now every token of the old keys has expired");
    assert_eq!(kids_of(&json(node.cli(&["keys", "prune", "--dry-run"]))), original);
    assert_eq!(jwks_kids(&node).await, all, "a dry run removes nothing");
    assert_eq!(kids_of(&json(node.cli(&["keys", "prune"]))), original);
    assert_eq!(jwks_kids(&node).await, new_kids);

    let emergency = json(node.cli(&["keys", "rotate", "--now"]));
    assert!(emergency.as_array().unwrap().iter().all(|k| k["state"] == "active"), "{emergency}");

    let unknown = node.cli(&["keys", "rotate", "--tenant", "nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("does not exist"));

    // `keys list` works on a stopped data dir too.
    assert!(node.stop().success());
    let offline = json(crate::support::cli(&dir, &["keys", "list"]));
    assert_eq!(offline.as_array().unwrap().len(), 4);
}

#[test]
fn the_rotation_policy_rotates_keys_that_are_due() {
    let (_tmp, dir) = temp_data_dir();
    let args = [
        "--set",
        "keys.rotation_interval_secs=3",
        "--set",
        "keys.publish_delay_secs=1",
        "--set",
        "keys.rotation_check_secs=1",
    ];
    let node = TestNode::start_with(&dir, &args, &[]).unwrap();
    assert_eq!(states(&node).len(), 2);
    wait_until(Duration::from_secs(30), "the policy rotated the keys", || states(&node).len() >= 4);
    wait_until(Duration::from_secs(30), "the policy rotated the system tenant too", || {
        json(node.cli(&["keys", "list", "--tenant", "system"])).as_array().map_or(0, Vec::len) >= 4
    });
}
