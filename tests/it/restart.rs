//! Restarts keep the CA, the keys and the tenants; the data dir holds no secret in clear.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use gatehouse::crypto::kek::LocalKek;
use gatehouse::crypto::keys::signing_key_context;
use gatehouse::crypto::{KeyProvider, SecretCipher};
use gatehouse::datadir::DataDir;
use serde_json::Value;

use crate::support::{node::temp_data_dir, TestNode};

async fn kids(node: &TestNode, issuer: &str) -> Vec<String> {
    let jwks: Value =
        node.client().get(format!("{issuer}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let mut kids: Vec<String> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
    kids.sort();
    kids
}

#[tokio::test]
async fn a_restart_keeps_the_ca_the_kids_and_the_tenants() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    assert!(node.cli(&["tenant", "create", "acme"]).status.success());
    let ca_before = node.ca_pem.clone();
    let default_kids = kids(&node, &node.url).await;
    let acme_kids = kids(&node, &format!("{}/t/acme", node.url)).await;
    let status = node.stop();
    assert!(status.success(), "SIGTERM must shut down cleanly, got {status}");
    assert!(!dir.join("control.sock").exists(), "the control socket is removed at shutdown");

    let node = TestNode::start(&dir);
    assert_eq!(node.ca_pem, ca_before, "the CA certificate changed across a restart");
    assert_eq!(kids(&node, &node.url).await, default_kids);
    assert_eq!(kids(&node, &format!("{}/t/acme", node.url)).await, acme_kids);
    let list = node.cli(&["tenant", "list"]);
    let tenants: Value = serde_json::from_slice(&list.stdout).expect("tenant list JSON");
    let ids: Vec<&str> = tenants.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    for id in ["acme", "default", "system"] {
        assert!(ids.contains(&id), "{id} missing after restart: {ids:?}");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() >= 16 && haystack.windows(needle.len()).any(|w| w == needle)
}

fn files(root: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The EC private scalar inside a PKCS#8 document (ECPrivateKey: version 1, then a 32-byte
/// OCTET STRING).
fn ec_scalar(pkcs8: &[u8]) -> Vec<u8> {
    let pos = pkcs8.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("ECPrivateKey");
    pkcs8[pos + 5..pos + 37].to_vec()
}

#[tokio::test]
async fn no_private_key_or_kek_protected_secret_is_stored_in_clear() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    assert!(node.cli(&["tenant", "create", "acme"]).status.success());
    assert!(node.stop().success());

    // Recover every secret with the KEK, as the node does, then look for it in the files.
    let data_dir = DataDir::open_existing(&dir).unwrap();
    let kek = LocalKek::load(&data_dir, None, false).unwrap();
    let kek_bytes = base64::engine::general_purpose::STANDARD
        .decode(std::fs::read_to_string(data_dir.kek_path()).unwrap().trim())
        .unwrap();
    let kek: Arc<dyn KeyProvider> = Arc::new(kek);
    let store = gatehouse_storage::Store::open(&data_dir.db_path()).unwrap();
    let reader = store.read().unwrap();
    let cipher = SecretCipher::new(kek.clone(), Some(store.clone()));
    let mut secrets: Vec<(String, Vec<u8>)> = vec![("kek".into(), kek_bytes)];
    for tenant in reader.tenants().unwrap() {
        let dk = reader.data_key(&tenant.data_key_id).unwrap().unwrap();
        let raw = kek.unwrap(&dk.wrapped, &gatehouse::crypto::envelope::data_key_context(&dk.id, &dk.scope)).unwrap();
        secrets.push((format!("data key of {}", tenant.id), raw.to_vec()));
        for key in reader.signing_keys(&tenant.id).unwrap() {
            let pkcs8 = cipher.open(&key.private, &signing_key_context(&key.tenant, &key.kid)).unwrap().to_vec();
            let label = format!("{} key {}", tenant.id, key.kid);
            match key.alg {
                gatehouse_storage::model::SigningAlg::ES256 => {
                    secrets.push((format!("{label} scalar"), ec_scalar(&pkcs8)))
                }
                gatehouse_storage::model::SigningAlg::RS256 => {
                    let pkcs1 = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_slice()).unwrap().private_key.to_vec();
                    // Past the modulus and exponent: inside the private exponent d; and the CRT
                    // coefficient at the end. Both are secret.
                    secrets.push((format!("{label} private exponent"), pkcs1[300..364].to_vec()));
                    secrets.push((format!("{label} crt coefficient"), pkcs1[pkcs1.len() - 64..].to_vec()));
                }
            }
            secrets.push((
                format!("{label} pkcs8 base64"),
                base64::engine::general_purpose::STANDARD.encode(&pkcs8).into_bytes()[..40].to_vec(),
            ));
            secrets.push((
                format!("{label} pkcs8 base64url"),
                gatehouse::crypto::b64url(&pkcs8).into_bytes()[..40].to_vec(),
            ));
            secrets.push((format!("{label} pkcs8"), pkcs8));
        }
    }
    let cluster = reader.cluster().unwrap().unwrap();
    let ca_key = cipher.open(&cluster.ca.key, "cluster-ca-key").unwrap().to_vec();
    secrets.push(("CA key scalar".into(), ec_scalar(&ca_key)));
    secrets.push(("CA key scalar base64url".into(), gatehouse::crypto::b64url(&ec_scalar(&ca_key)).into_bytes()));
    secrets.push(("CA key pkcs8".into(), ca_key.clone()));
    let node_id = u64::from_str_radix(std::fs::read_to_string(data_dir.node_id_path()).unwrap().trim(), 16).unwrap();
    let sealed: gatehouse_storage::model::Sealed =
        serde_json::from_slice(&std::fs::read(data_dir.server_key_path()).unwrap()).unwrap();
    let server_key = cipher.open(&sealed, &format!("tls-server-key/{node_id:016x}")).unwrap().to_vec();
    secrets.push(("TLS server key scalar".into(), ec_scalar(&server_key)));
    secrets.push(("TLS server key pkcs8".into(), server_key));
    assert!(secrets.len() > 3 * 8, "expected every tenant's secrets, got {}", secrets.len());
    drop(reader);
    drop(store);

    let mut all = Vec::new();
    files(&dir, &mut all);
    for file in all {
        if file.file_name().is_some_and(|n| n == "kek") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        for (label, secret) in &secrets {
            assert!(!contains(&bytes, secret), "{label} appears in clear in {}", file.display());
        }
    }
}
