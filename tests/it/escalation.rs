//! No escalation (S57, the design's "Roles and permissions"): a caller grants only permissions
//! it holds, in the scope where it holds them; only an owner creates or removes owner
//! bindings; a tenant's last owner stays. Every path, for a tenant admin and a platform admin.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::admin::{bind, call, create_client, platform_token, token_basic, Answer};
use crate::support::{node::temp_data_dir, TestNode};

fn refused(a: &Answer, status: StatusCode, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert!(a.content_type().starts_with("application/problem+json"), "{what}");
}

/// A client of `tenant` bound to `role`, and an admin-audience token for it.
async fn holder(node: &TestNode, platform: &str, tenant: &str, role: &str) -> (String, String) {
    let (id, secret) = create_client(node, platform, tenant, &["gatehouse-admin"], &[]).await;
    bind(node, platform, tenant, &id, role).await;
    let t = token_basic(node, tenant, &id, &secret, &[("audience", "gatehouse-admin")]).await;
    assert_eq!(t.status, StatusCode::OK, "token for {role}: {}", t.body);
    (id, t.body["access_token"].as_str().unwrap().to_string())
}

async fn bind_as(node: &TestNode, token: &str, tenant: &str, subject: &str, role: &str) -> Answer {
    let body = json!({"subject": subject, "role": role});
    call(node, Method::POST, &format!("/admin/v1/tenants/{tenant}/bindings"), Some(token), Some(&body)).await
}

async fn role_as(node: &TestNode, token: &str, tenant: &str, body: Value) -> Answer {
    call(node, Method::POST, &format!("/admin/v1/tenants/{tenant}/roles"), Some(token), Some(&body)).await
}

async fn binding_of(node: &TestNode, platform: &str, tenant: &str, subject: &str, role: &str) -> String {
    let list = call(node, Method::GET, &format!("/admin/v1/tenants/{tenant}/bindings"), Some(platform), None).await;
    let items = list.body["items"].as_array().unwrap();
    let found = items.iter().find(|b| b["subject"] == subject && b["role"] == role).expect("binding");
    found["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_admin_cannot_make_itself_or_anyone_an_owner() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let platform = tokio::task::block_in_place(|| platform_token(&node));
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&platform), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let (owner_id, owner) = holder(&node, &platform, "acme", "owner").await;
    let (admin_id, admin) = holder(&node, &platform, "acme", "admin").await;
    let (other, _) = create_client(&node, &platform, "acme", &["gatehouse-admin"], &[]).await;
    let me = format!("client:{admin_id}");

    // Binding owner, to itself or another: 403, and nothing is bound.
    refused(&bind_as(&node, &admin, "acme", &me, "owner").await, StatusCode::FORBIDDEN, "admin binds itself owner");
    let to_other = bind_as(&node, &admin, "acme", &format!("client:{other}"), "owner").await;
    refused(&to_other, StatusCode::FORBIDDEN, "admin binds another owner");
    // A tenant role with more than it holds, or from the owner template: 403.
    let wider =
        role_as(&node, &admin, "acme", json!({"name": "deleter", "template": "admin", "add": ["tenant:delete"]}));
    refused(&wider.await, StatusCode::FORBIDDEN, "admin + tenant:delete");
    let from_owner =
        role_as(&node, &admin, "acme", json!({"name": "lesser", "template": "owner", "remove": ["tenant:delete"]}));
    refused(&from_owner.await, StatusCode::FORBIDDEN, "a role from the owner template");
    // Removing an owner's binding: 403.
    let owner_binding = binding_of(&node, &platform, "acme", &format!("client:{owner_id}"), "owner").await;
    let path = format!("/admin/v1/tenants/acme/bindings/{owner_binding}");
    refused(&call(&node, Method::DELETE, &path, Some(&admin), None).await, StatusCode::FORBIDDEN, "remove owner");
    // Still no way to delete the tenant.
    let del = call(&node, Method::DELETE, "/admin/v1/tenants/acme", Some(&admin), None).await;
    refused(&del, StatusCode::FORBIDDEN, "admin deletes the tenant");
    let bindings = call(&node, Method::GET, "/admin/v1/tenants/acme/bindings", Some(&platform), None).await;
    let owners = bindings.body["items"].as_array().unwrap().iter().filter(|b| b["role"] == "owner").count();
    assert_eq!(owners, 1, "no owner binding was added: {}", bindings.body);

    // What it does hold, it may grant.
    let viewer = bind_as(&node, &admin, "acme", &format!("client:{other}"), "viewer").await;
    assert_eq!(viewer.status, StatusCode::CREATED, "{}", viewer.body);
    let narrower =
        role_as(&node, &admin, "acme", json!({"name": "auditor", "template": "viewer", "add": ["keys:rotate"]}));
    assert_eq!(narrower.await.status, StatusCode::CREATED);
    let same = bind_as(&node, &admin, "acme", &format!("client:{other}"), "admin").await;
    assert_eq!(same.status, StatusCode::CREATED, "{}", same.body);

    // An owner may hand out owner, and may leave once another owner remains; the last may not.
    let last = call(&node, Method::DELETE, &path, Some(&owner), None).await;
    refused(&last, StatusCode::CONFLICT, "the last owner removes itself");
    assert_eq!(last.body["type"], "urn:gatehouse:problem:last_owner");
    let client_path = format!("/admin/v1/tenants/acme/clients/{owner_id}");
    let del_client = call(&node, Method::DELETE, &client_path, Some(&owner), None).await;
    refused(&del_client, StatusCode::CONFLICT, "deleting the last owner's client");
    let second = bind_as(&node, &owner, "acme", &format!("client:{other}"), "owner").await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    let leave = call(&node, Method::DELETE, &path, Some(&owner), None).await;
    assert_eq!(leave.status, StatusCode::NO_CONTENT, "{}", leave.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_admin_cannot_make_itself_or_anyone_an_owner() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let platform = tokio::task::block_in_place(|| platform_token(&node));
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&platform), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let (acme_owner, _) = holder(&node, &platform, "acme", "owner").await;
    let (admin_id, admin) = holder(&node, &platform, "system", "admin").await;
    let me = format!("client:{admin_id}");
    let (acme_client, _) = create_client(&node, &platform, "acme", &["gatehouse-admin"], &[]).await;

    for (tenant, subject) in [("system", me.clone()), ("acme", format!("client:{acme_client}"))] {
        let a = bind_as(&node, &admin, tenant, &subject, "owner").await;
        refused(&a, StatusCode::FORBIDDEN, &format!("platform admin binds {subject} owner of {tenant}"));
        let wider =
            role_as(&node, &admin, tenant, json!({"name": "deleter", "template": "admin", "add": ["tenant:delete"]}));
        refused(&wider.await, StatusCode::FORBIDDEN, &format!("admin + tenant:delete in {tenant}"));
    }
    let owner_binding = binding_of(&node, &platform, "acme", &format!("client:{acme_owner}"), "owner").await;
    let path = format!("/admin/v1/tenants/acme/bindings/{owner_binding}");
    refused(&call(&node, Method::DELETE, &path, Some(&admin), None).await, StatusCode::FORBIDDEN, "remove owner");
    let del = call(&node, Method::DELETE, "/admin/v1/tenants/acme", Some(&admin), None).await;
    refused(&del, StatusCode::FORBIDDEN, "platform admin deletes a tenant");
    // A platform owner may.
    let by_owner = bind_as(&node, &platform, "system", &me, "owner").await;
    assert_eq!(by_owner.status, StatusCode::CREATED, "{}", by_owner.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_admin_cannot_take_over_or_remove_an_owner_and_the_last_owner_stays_usable() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let platform = tokio::task::block_in_place(|| platform_token(&node));
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&platform), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let (owner_id, owner) = holder(&node, &platform, "acme", "owner").await;
    let (_, admin) = holder(&node, &platform, "acme", "admin").await;
    let client_path = format!("/admin/v1/tenants/acme/clients/{owner_id}");
    // Rewriting the owner client's settings (its auth method and keys, say) would hand the
    // caller the owner's tokens: 403, nothing changed.
    let takeover = json!({"name": "mine now", "client_type": "confidential", "grant_types": ["client_credentials"],
                          "audiences": ["gatehouse-admin"]});
    let put = call(&node, Method::PUT, &client_path, Some(&admin), Some(&takeover)).await;
    refused(&put, StatusCode::FORBIDDEN, "admin rewrites the owner's client");
    let del = call(&node, Method::DELETE, &client_path, Some(&admin), None).await;
    refused(&del, StatusCode::FORBIDDEN, "admin deletes the owner's client");
    let still = call(&node, Method::GET, &client_path, Some(&platform), None).await;
    assert_eq!(still.status, StatusCode::OK);
    assert_ne!(still.body["name"], "mine now");

    // The same for a user holding owner: no new password, no deletion.
    let u =
        call(&node, Method::POST, "/admin/v1/tenants/acme/users", Some(&platform), Some(&json!({"username": "olga"})))
            .await;
    let user_id = u.body["id"].as_str().unwrap().to_string();
    let b = bind_as(&node, &platform, "acme", &format!("user:{user_id}"), "owner").await;
    assert_eq!(b.status, StatusCode::CREATED);
    let user_path = format!("/admin/v1/tenants/acme/users/{user_id}");
    let pw = json!({"password": "a long enough password for olga"});
    let set = call(&node, Method::POST, &format!("{user_path}/password"), Some(&admin), Some(&pw)).await;
    refused(&set, StatusCode::FORBIDDEN, "admin sets the owner's password");
    refused(
        &call(&node, Method::DELETE, &user_path, Some(&admin), None).await,
        StatusCode::FORBIDDEN,
        "admin deletes an owner",
    );

    // An owner is there to act: the owner client may disable the owner user (another owner
    // remains), but not itself when no other active owner is left.
    let disable_user = json!({"username": "olga", "disabled": true});
    let put = call(&node, Method::PUT, &user_path, Some(&owner), Some(&disable_user)).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let disable_self = json!({"name": "owner", "client_type": "confidential", "grant_types": ["client_credentials"],
                              "audiences": ["gatehouse-admin"], "disabled": true});
    let put = call(&node, Method::PUT, &client_path, Some(&owner), Some(&disable_self)).await;
    refused(&put, StatusCode::CONFLICT, "the last active owner disables itself");
    assert_eq!(put.body["type"], "urn:gatehouse:problem:last_owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_admin_cannot_remove_owner_bindings_by_deleting_their_organization() {
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let platform = tokio::task::block_in_place(|| platform_token(&node));
    let c = call(&node, Method::POST, "/admin/v1/tenants", Some(&platform), Some(&json!({"id": "acme"}))).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let (_, admin) = holder(&node, &platform, "acme", "admin").await;
    let (held, _) = create_client(&node, &platform, "acme", &["gatehouse-admin"], &[]).await;
    let orgs = "/admin/v1/tenants/acme/organizations";
    let org = call(&node, Method::POST, orgs, Some(&platform), Some(&json!({"name": "Board"}))).await;
    assert_eq!(org.status, StatusCode::CREATED, "{}", org.body);
    let org_id = org.body["id"].as_str().unwrap().to_string();
    let scoped = json!({"subject": format!("client:{held}"), "role": "owner", "scope": format!("org:{org_id}")});
    let b = call(&node, Method::POST, "/admin/v1/tenants/acme/bindings", Some(&platform), Some(&scoped)).await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);

    let d = call(&node, Method::DELETE, &format!("{orgs}/{org_id}"), Some(&admin), None).await;
    refused(&d, StatusCode::FORBIDDEN, "admin deletes an organization holding an owner binding");
    let still = call(&node, Method::GET, &format!("{orgs}/{org_id}"), Some(&platform), None).await;
    assert_eq!(still.status, StatusCode::OK, "the organization is still there");
    let bindings = call(&node, Method::GET, "/admin/v1/tenants/acme/bindings", Some(&platform), None).await;
    assert!(bindings.body["items"].as_array().unwrap().iter().any(|b| b["role"] == "owner" && b["scope"].is_string()));
    // An owner may.
    let d = call(&node, Method::DELETE, &format!("{orgs}/{org_id}"), Some(&platform), None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT, "{}", d.body);
}
