//! The HTTPS surface: TLS acceptor, routes, middleware, and the OpenAPI-described endpoints.

pub mod acceptor;
pub mod api;
pub mod cors;
pub mod edge;
pub mod idempotency;
pub mod issuer;
pub mod middleware;
pub mod pages;
pub mod problem;
pub mod server;
pub mod spec;

pub use server::{openapi_document, routes};
