#!/usr/bin/env bash
# Runs every test: unit tests of each crate, openraft's storage suite, the integration tests
# against the real binary, and each benchmark once in test mode (so benchmarks never rot).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "missing tool: cargo (install a Rust toolchain)" >&2; exit 1; }

# The fsync fault test (R7) runs a node under libfiu's fiu-run: the Debian package fiu-utils,
# pinned to Debian 12's build, installed when missing and this runs as root.
if ! command -v fiu-run >/dev/null || ! command -v fiu-ctrl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing fiu-utils (fiu-run, fiu-ctrl) for the fsync fault test" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fiu-utils=1.1-3+b2; } >&2 ||
      { echo "missing tool: fiu-run (apt-get install fiu-utils failed; install the Debian package fiu-utils)" >&2; exit 1; }
  else
    echo "missing tool: fiu-run (install the Debian package fiu-utils, or run this as root to have it installed)" >&2
    exit 1
  fi
fi

# The partition tests (R9) run each node in a network namespace and drop packets with
# nftables: the Debian packages iproute2 and nftables, pinned to Debian 12's builds.
if ! command -v ip >/dev/null || ! command -v nft >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing iproute2 (ip) and nftables (nft) for the partition tests" >&2
    { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2=6.1.0-3 nftables=1.0.6-2+deb12u2; } >&2 ||
      { echo "missing tool: ip or nft (apt-get install iproute2 nftables failed; install them)" >&2; exit 1; }
  else
    echo "missing tool: ip or nft (install the Debian packages iproute2 and nftables, or run this as root)" >&2
    exit 1
  fi
fi

# The memory, disk and rate-limit tests measure the release binary (production build).
cargo build --release --locked
cargo test --workspace --all-targets --locked
# The crash-point test (R6) needs the binary built with the raft crate's crash points.
cargo test --locked --features failpoints --test it -- --exact cluster::a_crash_at_each_persistence_boundary_loses_and_doubles_nothing
