#!/usr/bin/env bash
# Password sign-in throughput against the raw argon2id rate, in one run on this machine: the
# release binary with production defaults (TLS, durable raft log, audit on; argon2id with
# m=19456 KiB, t=2, p=1).
#
# 1. The raw rate: `cargo bench --bench core -- passwords/argon2id_hash` (criterion, one thread,
#    the same parameters through the same argon2 crate); raw rate = cores / time per hash.
# 2. Capacity: a registered user signs in (`POST /v1/auth/login`, the right password, a new
#    session each time) from oha at concurrency = cores, then twice that, for BENCH_DURATION
#    each: sign-ins per second, latency, and the ratio to the raw rate (goal: at least 90 %).
# 3. Overload: oha offers 4× the raw rate (`-q`, 64 connections) for BENCH_DURATION while curl
#    probes sign in one at a time: the share of answers refused (503 busy or 429), how fast a
#    refusal comes (goal: within 50 ms), and the node's RSS before and after (goal: bounded).
#
# Usage: benches/signin.sh
# Environment:
#   GATEHOUSE_BIN        the gatehouse binary (default ${CARGO_TARGET_DIR:-target}/release/gatehouse)
#   GATEHOUSE_TOOLS_DIR  where oha 1.16.0 is cached (default /var/cache/gatehouse-tools; see token_peer.sh)
#   BENCH_RESULTS_DIR    where the raw results and the report go
#   BENCH_DURATION       length of each load run (default 10s)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${GATEHOUSE_TOOLS_DIR:-/var/cache/gatehouse-tools}"
DURATION="${BENCH_DURATION:-10s}"
RESULTS="${BENCH_RESULTS_DIR:-${TMPDIR:-/tmp}/gatehouse-bench/signin-$(date +%Y%m%dT%H%M%S)}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"

die() { echo "signin.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[[ "$DURATION" =~ ^[0-9]+s$ ]] || die "BENCH_DURATION must be whole seconds such as 10s"
for tool in node curl timeout cargo; do command -v "$tool" >/dev/null || die "missing tool: $tool"; done
OHA="$TOOLS/bin/oha"
[ -x "$OHA" ] || die "missing tool: oha 1.16.0 in $TOOLS/bin (benches/token_peer.sh installs it)"
BIN="${GATEHOUSE_BIN:-$TARGET/release/gatehouse}"
[ -x "$BIN" ] || die "no gatehouse binary at $BIN (cargo build --release)"
CORES="$(nproc)"
mkdir -p "$RESULTS"
WORK="$(mktemp -d)"
PID=""
cleanup() {
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

jget() { node -e '
  let v = JSON.parse(require("fs").readFileSync(0, "utf8"));
  for (const k of process.argv[1].split(".")) v = v?.[k];
  if (v === undefined) process.exit(1);
  process.stdout.write(typeof v === "string" ? v : JSON.stringify(v));' "$1"; }

# 1. The raw argon2id rate.
say "raw argon2id rate (criterion)"
(cd "$REPO" && cargo bench --bench core -- passwords/argon2id_hash >"$RESULTS/criterion.txt" 2>&1) ||
  { cat "$RESULTS/criterion.txt" >&2; die "cargo bench failed"; }
estimates="$(find "$TARGET/criterion" -path '*argon2id_hash/new/estimates.json' | head -1)"
[ -n "$estimates" ] || die "criterion wrote no estimates for passwords/argon2id_hash"
HASH_NS="$(jget median.point_estimate <"$estimates")"
RAW="$(node -e "console.log((${CORES} * 1e9 / ${HASH_NS}).toFixed(1))")"
say "one hash: $(node -e "console.log((${HASH_NS} / 1e6).toFixed(2))") ms; raw rate on $CORES cores: $RAW/s"

# 2. A node and a user.
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
BODY='{"email":"bench@example.com","password":"bench-sign-in-password"}'
code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" -H 'Content-Type: application/json' -d "$BODY" "$URL/v1/auth/register")"
[ "$code" = 201 ] || die "registering the bench user answered $code"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }

summary() { # summary NAME: rps, p50/p99 ms and status counts of an oha JSON
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1]));
    const p = r.latencyPercentiles, codes = r.statusCodeDistribution || {};
    const ok = codes["200"] || 0;
    console.log(JSON.stringify({ ok_per_s: +(ok / r.summary.total).toFixed(1), p50_ms: +(p.p50 * 1000).toFixed(1),
      p99_ms: +(p.p99 * 1000).toFixed(1), codes }));' "$RESULTS/$1.json"
}

# At concurrency = cores a hashing slot idles while its sign-in writes the session and
# answers; at twice that, another sign-in's hash fills the gap.
capacity() { # capacity CONCURRENCY NAME
  say "capacity: concurrency $1, $DURATION"
  timeout --kill-after=5 $((${DURATION%s} + 30)) "$OHA" -z "$DURATION" -c "$1" --no-tui --output-format json \
    --cacert "$CA" -m POST -T application/json -d "$BODY" "$URL/v1/auth/login" >"$RESULTS/$2.json" || die "oha failed"
  summary "$2"
}
CAPACITY="$(capacity "$CORES" capacity)"
CAPACITY2="$(capacity $((2 * CORES)) capacity2)"

# 3. Overload: 4x the raw rate offered, and probes timing each answer.
OFFER="$(node -e "console.log(Math.round(4 * ${RAW}))")"
RSS_BEFORE="$(rss)"
say "overload: $OFFER sign-ins/s offered over 64 connections, $DURATION"
timeout --kill-after=5 $((${DURATION%s} + 30)) "$OHA" -z "$DURATION" -c 64 -q "$OFFER" --no-tui --output-format json \
  --cacert "$CA" -m POST -T application/json -d "$BODY" "$URL/v1/auth/login" >"$RESULTS/overload.json" &
LOAD=$!
sleep 2
: >"$RESULTS/probes.tsv"
for _ in $(seq 40); do
  curl -s -o /dev/null -w '%{http_code}\t%{time_total}\n' --cacert "$CA" -H 'Content-Type: application/json' \
    -d "$BODY" "$URL/v1/auth/login" >>"$RESULTS/probes.tsv" || true
  sleep 0.1
done
wait "$LOAD" || die "oha failed under overload"
RSS_AFTER="$(rss)"
OVERLOAD="$(summary overload)"
PROBES="$(node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t"));
  const refused = rows.filter(([c]) => c === "503" || c === "429").map(([, t]) => +t * 1000).sort((a, b) => a - b);
  const ok = rows.filter(([c]) => c === "200").length;
  const q = (p) => refused.length ? refused[Math.min(refused.length - 1, Math.ceil(p * refused.length) - 1)].toFixed(1) : null;
  console.log(JSON.stringify({ probes: rows.length, ok, refused: refused.length, refused_p50_ms: q(0.5), refused_max_ms: q(1) }));
' "$RESULTS/probes.tsv")"

ratio() { node -e "console.log((JSON.parse(process.argv[1]).ok_per_s / ${RAW} * 100).toFixed(0))" "$1"; }
{
  echo "raw argon2id: $(node -e "console.log((${HASH_NS} / 1e6).toFixed(2))") ms per hash, $RAW/s on $CORES cores"
  echo "capacity (c=$CORES): $CAPACITY; $(ratio "$CAPACITY") % of the raw rate"
  echo "capacity (c=$((2 * CORES))): $CAPACITY2; $(ratio "$CAPACITY2") % of the raw rate"
  echo "overload ($OFFER/s offered, c=64): $OVERLOAD"
  echo "probes during the overload: $PROBES"
  echo "RSS: ${RSS_BEFORE} kB before the overload, ${RSS_AFTER} kB after"
} | tee "$RESULTS/report.txt"
echo "results: $RESULTS"
