//! Use cases of identity management, one module per domain noun.

pub mod keys;
pub mod tenants;
