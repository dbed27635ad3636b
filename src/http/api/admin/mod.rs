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
