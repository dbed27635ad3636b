#!/usr/bin/env bash
# Runs every test: unit tests of each crate, openraft's storage suite, the integration tests
# against the real binary, and each benchmark once in test mode (so benchmarks never rot).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "missing tool: cargo (install a Rust toolchain)" >&2; exit 1; }

# The memory, disk and rate-limit tests measure the release binary (production build).
cargo build --release --locked
cargo test --workspace --all-targets --locked
