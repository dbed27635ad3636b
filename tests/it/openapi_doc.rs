//! The committed OpenAPI document is what the code generates.

use crate::support::node::BIN;

#[test]
fn committed_openapi_document_matches_the_generated_one() {
    let out = std::process::Command::new(BIN).arg("openapi").output().expect("run gatehouse openapi");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/gatehouse.json"))
        .expect("openapi/gatehouse.json is committed");
    assert!(
        generated.trim() == committed.trim(),
        "openapi/gatehouse.json is stale: run `cargo run -- openapi > openapi/gatehouse.json` and commit it"
    );
    let doc: serde_json::Value = serde_json::from_str(&committed).expect("valid JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.0")), "OpenAPI 3.0 for client generators");
}
