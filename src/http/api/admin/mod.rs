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
mod responses;
mod tenants;

pub use auth::{Permission, PERMISSIONS};
pub use bindings::BindingsApi;
pub use clients::ClientsApi;
pub use keys::KeysApi;
pub use tenants::TenantsApi;

/// The admin API's OpenAPI tags.
#[derive(poem_openapi::Tags)]
pub(crate) enum AdminTag {
    /// Tenants: isolation boundaries, each its own issuer.
    Tenants,
    /// OAuth clients of a tenant.
    Clients,
    /// Role bindings: a client (or later a user) holds a role in a tenant.
    Bindings,
    /// Signing keys and the tenant's audit trail.
    Keys,
}
