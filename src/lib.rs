//! gatehouse: the identity and access management appliance (binary and library).
//!
//! Reads come from local redb read transactions; every write is a storage `Command` proposed
//! through `gatehouse-raft`. Nothing in this crate writes to redb directly.

pub mod app;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod crypto;
pub mod datadir;
pub mod http;
pub mod idm;
pub mod jobs;
pub mod metrics;
pub mod node;
