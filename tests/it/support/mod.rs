//! Test helpers: start the real binary, talk to it over TLS, inspect its data dir.

pub mod admin;
pub mod netns;
pub mod node;
pub mod snapshot;

pub use node::{cli, TestNode};
pub use snapshot::DirSnapshot;
