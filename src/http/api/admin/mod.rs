//! The admin REST API under `/admin/v1`, nested by tenant.
//!
//! Conventions (the design's "Admin API conventions"): bearer tokens only, audience-pinned to
//! the admin audience and fail-closed; platform admins hold tokens of the `system` issuer, a
//! tenant admin holds one of its own tenant's issuer and sees only that tenant (anything else
//! is 404, never 403); errors are RFC 7807 problem documents; lists are cursor-paginated.

mod auth;
mod bindings;
mod clients;
mod keys;
mod organizations;
mod responses;
mod roles;
mod tenants;
mod users;

pub use auth::{gate, Caller, Permission, PERMISSIONS};
pub use bindings::BindingsApi;
pub use clients::ClientsApi;
pub use keys::KeysApi;
pub use organizations::OrganizationsApi;
pub use roles::RolesApi;
pub use tenants::TenantsApi;
pub use users::UsersApi;

/// What an admin create, key rotation or prune answers, rendered from its command (the views of
/// each noun's module): the idempotency layer carries it in the command, so the action and
/// its remembered answer are applied together. `None` for commands whose answer is not a
/// function of the command alone.
pub fn remembered_answer(
    app: &crate::app::AppState,
    command: &gatehouse_storage::Command,
) -> Option<crate::app::idempotency::RenderedAnswer> {
    use gatehouse_storage::Command;
    use poem_openapi::types::ToJSON;
    let created =
        |body: String, etag: Option<String>| crate::app::idempotency::RenderedAnswer { status: 201, etag, body };
    let ok = |body: String| crate::app::idempotency::RenderedAnswer { status: 200, etag: None, body };
    Some(match command {
        // The answer is the guarded action's.
        Command::Guarded { inner, .. } => return remembered_answer(app, inner),
        Command::CreateTenant(n) => created(tenants::view(app, n.tenant.clone()).to_json_string(), None),
        Command::CreateClient(c) => created(clients::view(c.clone(), None).to_json_string(), Some(clients::etag(c))),
        Command::CreateUser(u) => created(users::view(u.clone()).to_json_string(), Some(users::etag(u))),
        Command::CreateOrganization(o) => created(organizations::view(o.clone()).to_json_string(), None),
        Command::AddMember(m) => created(organizations::member_view(m.clone()).to_json_string(), None),
        Command::CreateRole(r) => created(roles::view(r).to_json_string(), None),
        Command::CreateBinding(b) => created(bindings::view(b.clone()).to_json_string(), None),
        Command::SetPassword { .. } => {
            crate::app::idempotency::RenderedAnswer { status: 204, etag: None, body: String::new() }
        }
        Command::AddSigningKeys { keys: added, .. } => ok(keys::list_json(crate::idm::keys::added_views(app, added))),
        Command::PruneSigningKeys { tenant, kids, .. } => {
            ok(keys::list_json(crate::idm::keys::pruned_views(app, tenant, kids).ok()?))
        }
        _ => return None,
    })
}

/// The admin API's OpenAPI tags.
#[derive(poem_openapi::Tags)]
pub(crate) enum AdminTag {
    /// Tenants: isolation boundaries, each its own issuer.
    Tenants,
    /// OAuth clients of a tenant.
    Clients,
    /// Users of a tenant.
    Users,
    /// Organizations of a tenant and their members.
    Organizations,
    /// Role bindings: a user or a client holds a role in a tenant, optionally scoped.
    Bindings,
    /// Signing keys and the tenant's audit trail.
    Keys,
}
