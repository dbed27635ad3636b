//! Discovery and JWKS: complete, issuer equal to the URL fetched, every endpoint alive (S21).

use serde_json::Value;

use crate::support::{node::temp_data_dir, TestNode};

const REQUIRED: [&str; 6] = [
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
];

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[tokio::test]
async fn discovery_is_complete_and_its_issuer_is_the_url_it_was_fetched_under() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let ca_path = dir.join("tls/ca.pem").display().to_string();
    assert!(node.banner.contains(&ca_path), "the banner names the CA file: {}", node.banner);
    assert!(node.banner.contains("tenant create"), "the banner says what to do next");
    let out = node.cli(&["tenant", "create", "acme"]);
    assert!(out.status.success(), "tenant create failed: {}", String::from_utf8_lossy(&out.stderr));
    let client = node.client();
    let issuers = [node.url.clone(), format!("{}/t/acme", node.url), format!("{}/t/system", node.url)];
    for issuer in issuers {
        for well_known in ["openid-configuration", "oauth-authorization-server"] {
            let url = format!("{issuer}/.well-known/{well_known}");
            let resp = client.get(&url).send().await.expect("discovery request");
            assert_eq!(resp.status(), 200, "{url}");
            let doc: Value = resp.json().await.expect("discovery JSON");
            for field in REQUIRED {
                let v = &doc[field];
                assert!(!v.is_null(), "{url} lacks {field}");
                assert!(v.as_str().is_none_or(|s| !s.is_empty()), "{url}: {field} is empty");
                assert!(v.as_array().is_none_or(|a| !a.is_empty()), "{url}: {field} is empty");
            }
            assert_eq!(doc["issuer"], Value::String(issuer.clone()), "issuer must equal the URL prefix");
            let algs = strings(&doc["id_token_signing_alg_values_supported"]);
            assert!(algs.contains(&"RS256".into()) && algs.contains(&"ES256".into()), "algs: {algs:?}");
            // Only what is served: the client_credentials and code grants, the code response
            // type in the query and form_post modes, PKCE with S256 alone, iss in responses.
            let grants = strings(&doc["grant_types_supported"]);
            assert_eq!(grants, ["client_credentials", "authorization_code", "refresh_token"], "{url}");
            assert_eq!(strings(&doc["response_types_supported"]), ["code"], "{url}");
            assert_eq!(strings(&doc["response_modes_supported"]), ["query", "form_post"], "{url}");
            assert_eq!(strings(&doc["code_challenge_methods_supported"]), ["S256"], "{url}");
            assert_eq!(doc["authorization_response_iss_parameter_supported"], true, "{url}");
            assert_eq!(doc["request_parameter_supported"], false, "{url}");
            assert!(strings(&doc["token_endpoint_auth_methods_supported"]).contains(&"none".into()), "{url}");
            assert!(!strings(&doc["introspection_endpoint_auth_methods_supported"]).contains(&"none".into()));
            let listed: Vec<(String, String)> = doc
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.ends_with("_endpoint") || k.ends_with("_uri"))
                .map(|(k, v)| (k.clone(), v.as_str().expect("an endpoint is a string").to_string()))
                .collect();
            assert!(listed.len() >= 3, "{listed:?}");
            for (key, endpoint) in &listed {
                let endpoint = endpoint.as_str();
                assert!(endpoint.starts_with(&format!("{issuer}/")), "{key} {endpoint} is not under {issuer}");
                let get = client.get(endpoint).send().await.expect("endpoint GET").status();
                let post = client.post(endpoint).send().await.expect("endpoint POST").status();
                assert!(get != 404 && post != 404, "{endpoint} answered 404 (GET {get}, POST {post})");
            }
        }
    }
    // RFC 8414 section 3.1: the issuer's path inserted after the well-known name, as RFC 8414
    // clients (openid-client's `oauth2` discovery) build it.
    for tenant in ["acme", "system"] {
        let url = format!("{}/.well-known/oauth-authorization-server/t/{tenant}", node.url);
        let resp = client.get(&url).send().await.expect("RFC 8414 metadata");
        assert_eq!(resp.status(), 200, "{url}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["issuer"], format!("{}/t/{tenant}", node.url), "{url}");
        assert_eq!(doc["token_endpoint"], format!("{}/t/{tenant}/oauth2/token", node.url));
    }
    let missing = client
        .get(format!("{}/.well-known/oauth-authorization-server/t/nobody", node.url))
        .send()
        .await
        .expect("RFC 8414 metadata of no tenant");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn jwks_publishes_one_p256_and_one_rsa_key_without_private_members() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let client = node.client();
    for issuer in [node.url.clone(), format!("{}/t/system", node.url)] {
        let jwks: Value = client
            .get(format!("{issuer}/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks JSON");
        let keys = jwks["keys"].as_array().expect("keys array");
        assert_eq!(keys.len(), 2, "{jwks}");
        let mut kids = std::collections::HashSet::new();
        for key in keys {
            for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
                assert!(key.get(private).is_none(), "JWK carries private member {private}: {key}");
            }
            assert_eq!(key["use"], "sig");
            let kid = key["kid"].as_str().expect("kid");
            assert!(kids.insert(kid.to_string()), "duplicate kid {kid}");
            let decode = |s: &Value| gatehouse::crypto::b64url_decode(s.as_str().expect("member")).expect("base64url");
            match key["kty"].as_str() {
                Some("EC") => {
                    assert_eq!(key["crv"], "P-256");
                    assert_eq!(key["alg"], "ES256");
                    assert_eq!(decode(&key["x"]).len(), 32);
                    assert_eq!(decode(&key["y"]).len(), 32);
                }
                Some("RSA") => {
                    assert_eq!(key["alg"], "RS256");
                    assert_eq!(decode(&key["n"]).len(), 256, "a 2048-bit modulus");
                    assert_eq!(decode(&key["e"]), vec![1, 0, 1]);
                }
                other => panic!("unexpected kty {other:?}"),
            }
        }
        let ktys: Vec<_> = keys.iter().map(|k| k["kty"].as_str().unwrap_or_default().to_string()).collect();
        assert!(ktys.contains(&"EC".into()) && ktys.contains(&"RSA".into()), "{ktys:?}");
    }
    // Tenants have distinct keys.
    let default: Value =
        client.get(format!("{}/.well-known/jwks.json", node.url)).send().await.unwrap().json().await.unwrap();
    let system: Value =
        client.get(format!("{}/t/system/.well-known/jwks.json", node.url)).send().await.unwrap().json().await.unwrap();
    assert_ne!(default["keys"][0]["kid"], system["keys"][0]["kid"]);
}
