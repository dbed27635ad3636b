//! Use cases of identity management, one module per domain noun.

pub mod bindings;
pub mod clients;
pub mod keys;
pub mod tenants;
pub mod tokens;
pub mod users;
