//! The OpenAPI-described endpoints, one module per tag.

pub mod oidc;
pub mod ops;

pub use oidc::OidcApi;
pub use ops::OpsApi;
