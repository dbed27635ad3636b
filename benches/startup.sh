#!/usr/bin/env bash
# Startup to /ready on an existing data dir, and idle RSS, of the release binary with
# production defaults (TLS on, durable raft log, audit on). Usage: benches/startup.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-10}"
BIN="${CARGO_TARGET_DIR:-target}/release/gatehouse"
[ -x "$BIN" ] || cargo build --release --locked
command -v curl >/dev/null || { echo "missing tool: curl" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
DATA="$WORK/data"
PORT=$((20000 + RANDOM % 20000))

start() {
  "$BIN" --data-dir "$DATA" --set log.level=warn serve --listen "127.0.0.1:$PORT" >"$WORK/out" 2>"$WORK/err" &
  PID=$!
}
wait_ready() {
  until curl -fs --cacert "$DATA/tls/ca.pem" "https://127.0.0.1:$PORT/ready" >/dev/null 2>&1; do sleep 0.002; done
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }

# First start creates the data dir, keys and CA (not measured).
start; wait_ready; stop

times=()
for _ in $(seq "$RUNS"); do
  t0=$(date +%s%N); start; wait_ready; t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000000 )))
  stop
done
start; wait_ready
for _ in $(seq 20); do curl -fs --cacert "$DATA/tls/ca.pem" "https://127.0.0.1:$PORT/.well-known/jwks.json" >/dev/null; done
sleep 3
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
stop
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "startup_to_ready_ms runs=$RUNS median=$median min=$(echo "$sorted" | head -1) max=$(echo "$sorted" | tail -1)"
echo "idle_rss_mb $(awk -v k="$rss_kb" 'BEGIN {printf "%.1f", k/1024}')"
