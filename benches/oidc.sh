#!/usr/bin/env bash
# OpenID Connect throughput on one node, the release binary with production defaults (TLS,
# durable raft log, audit on): full authorization-code exchanges per second (authorize with an
# existing session → code → token, with an RS256 ID token) and refresh rotations per second
# (each one a raft write, no new ID token). Goal: at least 5,000 rotations/s on 2 cores.
#
# Usage: benches/oidc.sh
# Environment:
#   GATEHOUSE_BIN      the gatehouse binary (default ${CARGO_TARGET_DIR:-target}/release/gatehouse)
#   BENCH_RESULTS_DIR  where the report goes
#   BENCH_DURATION     length of each phase (default 10s)
#   BENCH_CONCURRENCY  requests in flight (default 32)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${BENCH_DURATION:-10s}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
RESULTS="${BENCH_RESULTS_DIR:-${TMPDIR:-/tmp}/gatehouse-bench/oidc-$(date +%Y%m%dT%H%M%S)}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"

die() { echo "oidc.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[[ "$DURATION" =~ ^[0-9]+s$ ]] || die "BENCH_DURATION must be whole seconds such as 10s"
for tool in node curl; do command -v "$tool" >/dev/null || die "missing tool: $tool"; done
BIN="${GATEHOUSE_BIN:-$TARGET/release/gatehouse}"
[ -x "$BIN" ] || die "no gatehouse binary at $BIN (cargo build --release)"
mkdir -p "$RESULTS"
WORK="$(mktemp -d)"
PID=""
cleanup() {
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

env $(compgen -e | grep '^GATEHOUSE_' | sed 's/^/-u /') "$BIN" --data-dir "$WORK/d" serve --listen 127.0.0.1:0 \
  --set log.level=error >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 600); do
  grep -q '^  issuer:' "$WORK/out" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/err" >&2; die "the node exited during startup"; }
  sleep 0.05
done
URL="$(awk '/^  issuer:/ {print $2; exit}' "$WORK/out")"
CA="$WORK/d/tls/ca.pem"
ADMIN="$("$BIN" --data-dir "$WORK/d" admin token)" || die "admin token failed"
CLIENT='{"name":"bench","client_type":"public","first_party":true,"grant_types":["authorization_code","refresh_token"],
         "audiences":["https://api.bench"],"redirect_uris":["https://app.bench/cb"]}'
CLIENT_ID="$(curl -sf --cacert "$CA" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d "$CLIENT" "$URL/admin/v1/tenants/default/clients" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).client_id)')" ||
  die "creating the client failed"
EMAIL=bench@example.com
PASSWORD=bench-sign-in-password
code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" "$URL/v1/auth/register")"
[ "$code" = 201 ] || die "registering the bench user answered $code"

say "exchanges, then rotations: concurrency $CONCURRENCY, $DURATION each"
URL="$URL" CLIENT_ID="$CLIENT_ID" EMAIL="$EMAIL" PASSWORD="$PASSWORD" CONCURRENCY="$CONCURRENCY" \
  DURATION_S="${DURATION%s}" NODE_EXTRA_CA_CERTS="$CA" node "$REPO/benches/oidc_load.mjs" >"$RESULTS/load.json" ||
  die "the load failed"
RSS="$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")"
{
  echo "cores: $(nproc); $(cat "$RESULTS/load.json")"
  echo "RSS after: ${RSS} kB"
} | tee "$RESULTS/report.txt"
echo "results: $RESULTS"
