//! gatehouse-storage: the replicated state of a Gatehouse node, kept in redb.
//!
//! Everything here is synchronous and deterministic: no clocks, no randomness, no network,
//! and no key material in clear. The raft crate calls [`apply`] for every committed entry.

pub mod apply;
pub mod audit;
pub mod codec;
pub mod command;
pub mod error;
pub mod model;
pub mod read;
pub mod schema;
pub mod snapshot;
pub mod store;
pub mod table;
pub mod tables;

pub use apply::apply;
pub use audit::{AuditDraft, AuditEntry, AuditHead, VerifyFailure, VerifyReport};
pub use command::{
    Applied, AuthFailures, Command, HeldRoles, IssuedToken, LoginFailures, MfaFactor, NewTenant, Outcome,
    OwnedOrganization, Proposal, Redemption, Registration, Rejection, SpentChallenge,
};
pub use error::StoreError;
pub use read::Reader;
pub use store::{Changes, Store};

#[cfg(test)]
mod tests;
