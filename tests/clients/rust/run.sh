#!/usr/bin/env bash
# Builds the Rust admin client that progenitor generates from openapi/gatehouse.json (pinned by
# this folder's Cargo.lock, so no global install) and runs its flow against a node.
#
#   BASE_URL=https://127.0.0.1:PORT ADMIN_TOKEN=<platform admin bearer> CA_FILE=<test CA> \
#   tests/clients/rust/run.sh
#
# GATEHOUSE_OPENAPI overrides the document. The build uses CARGO_TARGET_DIR when set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${BASE_URL:?set BASE_URL, e.g. https://127.0.0.1:8443}"
: "${ADMIN_TOKEN:?set ADMIN_TOKEN to a platform admin bearer token}"
: "${CA_FILE:?set CA_FILE to the test CA}"
command -v cargo >/dev/null || { echo "missing tool: cargo (install a Rust toolchain)" >&2; exit 1; }
cargo run --quiet --locked --manifest-path "$here/Cargo.toml"
