//! Test helpers: start the real binary, talk to it over TLS, inspect its data dir.

pub mod admin;
pub mod netns;
pub mod node;
pub mod snapshot;
pub mod soft_passkey;

pub use node::{cli, TestNode};
pub use snapshot::DirSnapshot;

/// A port free now, below the kernel's ephemeral range (32768 and up here), so a node that binds
/// port 0 or an outgoing connection never takes it while its owner is down for a restart.
pub fn free_port() -> u16 {
    loop {
        let mut b = [0u8; 2];
        getrandom_fill(&mut b);
        let port = 20_000 + u16::from_be_bytes(b) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).expect("/dev/urandom");
}

/// Held by the tests whose timing a busy machine can break (partitions in network namespaces,
/// liveness bounds after a kill or a pause) and by those that load it most (browsers, the
/// fuzzer, image decoding), so the two kinds never run at once on a small CI machine.
/// Each test runs on a thread of its own, so holding this across the test's awaits blocks
/// nothing but other heavy tests.
pub fn heavy() -> Heavy {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    Heavy(HEAVY.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The heavy tests' turn, until dropped.
pub struct Heavy(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);
