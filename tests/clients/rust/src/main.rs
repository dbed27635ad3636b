//! The admin API driven through a Rust client that progenitor generated (in `build.rs`) from
//! the OpenAPI document. Env: BASE_URL, ADMIN_TOKEN (platform admin bearer), CA_FILE (the test
//! CA). Creates a tenant, a client (replayed under an `Idempotency-Key`) and a user, and checks
//! that a stale `If-Match` is refused. Prints `ok …` lines; exits non-zero on the first failure.

#![allow(clippy::all, unused)]
include!(concat!(env!("OUT_DIR"), "/gatehouse_client.rs"));

use serde_json::json;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name}"))
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("a body the generated types refuse: {e}"))
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn run() -> Result<(), String> {
    let base = env("BASE_URL")?;
    let token = env("ADMIN_TOKEN")?;
    let ca = std::fs::read(env("CA_FILE")?).map_err(|e| format!("reading CA_FILE: {e}"))?;
    let cert = reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?;
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {token}").parse().map_err(|_| "ADMIN_TOKEN is not a header value")?;
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let http = reqwest::Client::builder()
        .tls_certs_only([cert])
        .default_headers(headers)
        .build()
        .map_err(|e| e.to_string())?;
    let api = Client::new_with_client(&base, http);
    let suffix = std::process::id();

    let tenant_id = format!("rust-{suffix}");
    let tenant = api
        .create_tenant()
        .body(typed::<types::CreateTenant>(json!({"id": tenant_id}))?)
        .send()
        .await
        .map_err(|e| format!("createTenant: {e}"))?;
    let created_id = serde_json::to_value(&tenant.id).map_err(|e| e.to_string())?;
    if tenant.status().as_u16() != 201 || created_id != json!(tenant_id) {
        return Err(format!("createTenant answered {} {created_id}", tenant.status()));
    }
    println!("ok createTenant {tenant_id}");

    let key = format!("rust-client-{suffix}");
    let client_body = json!({"name": "rust service", "client_type": "confidential",
                             "grant_types": ["client_credentials"], "audiences": ["https://api.example.test"]});
    let first = api
        .create_client()
        .tenant(tenant_id.as_str())
        .idempotency_key(key.as_str())
        .body(typed::<types::ClientInput>(client_body.clone())?)
        .send()
        .await
        .map_err(|e| format!("createClient: {e}"))?;
    if first.status().as_u16() != 201 || first.client_secret.is_none() {
        return Err(format!("createClient answered {} without a secret", first.status()));
    }
    println!("ok createClient {}", first.client_id);
    let replay = api
        .create_client()
        .tenant(tenant_id.as_str())
        .idempotency_key(key.as_str())
        .body(typed::<types::ClientInput>(client_body)?)
        .send()
        .await
        .map_err(|e| format!("createClient replay: {e}"))?;
    if replay.status().as_u16() != 201
        || replay.client_id != first.client_id
        || replay.client_secret.is_some()
        || header(replay.headers(), "idempotent-replayed").as_deref() != Some("true")
    {
        return Err(format!(
            "the replay answered {} for {} (secret shown: {})",
            replay.status(),
            replay.client_id,
            replay.client_secret.is_some()
        ));
    }
    println!("ok createClient replayed under Idempotency-Key, same client, no secret");

    let user = api
        .create_user()
        .tenant(tenant_id.as_str())
        .body(typed::<types::CreateUser>(json!({"username": "rusty"}))?)
        .send()
        .await
        .map_err(|e| format!("createUser: {e}"))?;
    let user_id = user.id.clone();
    println!("ok createUser {user_id}");
    let got = api
        .get_user()
        .tenant(tenant_id.as_str())
        .user_id(user_id.as_str())
        .send()
        .await
        .map_err(|e| format!("getUser: {e}"))?;
    let etag = header(got.headers(), "etag").ok_or("getUser answered no ETag")?;
    let update = json!({"username": "rusty", "display_name": "Rusty"});
    let applied = api
        .update_user()
        .tenant(tenant_id.as_str())
        .user_id(user_id.as_str())
        .if_match(etag.as_str())
        .body(typed::<types::UpdateUser>(update.clone())?)
        .send()
        .await
        .map_err(|e| format!("updateUser with the current ETag: {e}"))?;
    println!("ok updateUser with If-Match {etag}");
    let stale = api
        .update_user()
        .tenant(tenant_id.as_str())
        .user_id(user_id.as_str())
        .if_match(etag.as_str())
        .body(typed::<types::UpdateUser>(update)?)
        .send()
        .await;
    match stale {
        Err(Error::ErrorResponse(rv)) if rv.status().as_u16() == 412 => {
            println!("ok updateUser with a stale If-Match: 412")
        }
        Err(e) if e.status().map(|s| s.as_u16()) == Some(412) => println!("ok updateUser with a stale If-Match: 412"),
        Err(e) => return Err(format!("a stale If-Match got {e}")),
        Ok(rv) => return Err(format!("a stale If-Match was accepted: {}", rv.status())),
    }
    let _ = applied;
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(why) = run().await {
        eprintln!("FAILED {why}");
        std::process::exit(1);
    }
}
