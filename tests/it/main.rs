//! Integration tests: the real `gatehouse` binary, real redb files in temp dirs, real TLS
//! through the CA the node generates.

mod support;

mod abuse;
mod admin_api;
mod architecture;
mod audit_tamper;
mod auth;
mod authorize;
mod backup;
mod cluster;
mod code_flow;
mod crash;
mod discovery;
mod email;
mod escalation;
mod http_edges;
mod keys;
mod oauth;
mod openapi_doc;
mod packaging;
mod pages;
mod profile;
mod real_clients;
mod refusals;
mod restart;
