//! Hosts in network namespaces on one bridge, with faults set by nftables inside each host,
//! per direction: the partition tests (R9). Needs root, `ip` (iproute2) and `nft` (nftables),
//! which `tests/run-all.sh` installs when missing. The test process stays in the root
//! namespace and reaches every host through the bridge; a fault between two hosts never
//! touches that path. Everything is removed on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One host: a network namespace with one address on the bridge.
pub struct Host {
    pub ns: String,
    pub ip: String,
}

impl Host {
    /// `ip netns exec {ns}`: the wrapper that runs a program on this host.
    pub fn wrapper(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns.clone()]
    }
}

/// Hosts on a bridge of their own, in a /24 of their own.
pub struct Lan {
    bridge: String,
    pub hosts: Vec<Host>,
    /// No heavy test runs while a partition test measures timings.
    _heavy: super::Heavy,
}

/// Which way a fault drops packets, as seen from the host it is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets from the peer never arrive.
    Incoming,
    /// Packets to the peer never leave.
    Outgoing,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("missing tool: {program} ({e}); tests/run-all.sh installs iproute2 and nftables"));
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn ip(args: &[&str]) {
    run("ip", args)
}

static NEXT_LAN: AtomicU32 = AtomicU32::new(0);

impl Lan {
    /// `count` hosts (at most 250), each able to reach the others and the test process.
    pub fn new(count: usize) -> Lan {
        assert!(nix_is_root(), "the partition tests need root (network namespaces and nftables); CI runs as root");
        // Unique among test processes and among the tests of one process (names ≤ 15 bytes).
        let seq = NEXT_LAN.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:05x}", (std::process::id() * 8 + seq) & 0xfffff);
        let subnet = format!("10.{}.{}", 100 + std::process::id() % 100, (seq * 37 + std::process::id() / 100) % 250);
        let bridge = format!("ghb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut lan = Lan { bridge: bridge.clone(), hosts: Vec::new(), _heavy: super::heavy() };
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..count {
            let ns = format!("gh{tag}n{i}");
            let veth = format!("ghv{tag}{i}");
            let addr = format!("{subnet}.{}", i + 1);
            ip(&["netns", "add", &ns]);
            lan.hosts.push(Host { ns: ns.clone(), ip: addr.clone() });
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["link", "set", &veth, "master", &bridge, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &["netns", "exec", &ns, "nft", "add table inet faults; add chain inet faults input { type filter hook input priority 0; }; add chain inet faults output { type filter hook output priority 0; }"],
            );
        }
        lan
    }

    /// Drops the packets between `host` and `peer` that go `direction` (seen from `host`).
    pub fn drop(&self, host: usize, peer: usize, direction: Direction) {
        let (chain, side) = match direction {
            Direction::Incoming => ("input", "saddr"),
            Direction::Outgoing => ("output", "daddr"),
        };
        let rule = format!("add rule inet faults {chain} ip {side} {} drop", self.hosts[peer].ip);
        run("ip", &["netns", "exec", &self.hosts[host].ns, "nft", &rule]);
    }

    /// Cuts `host` off from `peer` both ways.
    pub fn cut(&self, host: usize, peer: usize) {
        self.drop(host, peer, Direction::Incoming);
        self.drop(host, peer, Direction::Outgoing);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        for h in &self.hosts {
            run(
                "ip",
                &["netns", "exec", &h.ns, "nft", "flush chain inet faults input; flush chain inet faults output"],
            );
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Best effort: a namespace still used by a process goes when that process exits.
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
