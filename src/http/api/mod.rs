//! The OpenAPI-described endpoints, one module per tag.

pub mod admin;
pub mod auth;
pub mod auth_email;
pub mod auth_pages;
pub mod auth_passkeys;
pub mod auth_profile;
pub mod checked;
pub mod cluster;
pub mod oauth;
pub mod oidc;
pub mod ops;
pub mod text;

pub use auth::AuthApi;
pub use auth_email::EmailAuthApi;
pub use auth_pages::PagesApi;
pub use auth_passkeys::PasskeysApi;
pub use auth_profile::ProfileApi;
pub use cluster::ClusterApi;
pub use oauth::OAuthApi;
pub use oidc::OidcApi;
pub use ops::OpsApi;
